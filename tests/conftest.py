"""Shared fixtures: small, deterministic, offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
EOS = 3  # the tiny model's </s> id


@pytest.fixture(scope="session")
def corrupt_vectors() -> list[dict]:
    with open(DATA / "corrupt_vectors.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="session")
def wiki_texts(corrupt_vectors) -> list[str]:
    """A few hundred real Wikipedia sentences grouped into small articles with headings and paragraphs."""
    sentences = [v["original"] for v in corrupt_vectors]
    articles = []
    for a in range(0, len(sentences), 12):
        group = sentences[a : a + 12]
        paragraphs = [" ".join(group[i : i + 4]) for i in range(0, len(group), 4)]
        articles.append(f"{paragraphs[0]}\n\n## Section {a // 12}\n\n" + "\n\n".join(paragraphs[1:]))
    return articles


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, wiki_texts) -> Path:
    """A tiny restore model directory (tokenizer + 2-layer BART + restore.json + lexicon), random weights.

    Enough to test everything that must not depend on model quality: chunk order, batching,
    resume, CLI behaviour. Built once per session in a temporary directory.
    """
    import torch

    from restore.checkpoint import write_restore_json
    from restore.chunking import ChunkConfig
    from restore.corrupt import corrupt
    from restore.lexicon import Lexicon
    from restore.model import ModelConfig, build_model
    from restore.tokenizer import train_tokenizer

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny_model")
    tokenizer = train_tokenizer(wiki_texts + [corrupt(t) for t in wiki_texts], vocab_size=800)
    model = build_model(
        ModelConfig(d_model=32, encoder_layers=1, decoder_layers=1, attention_heads=2, ffn_dim=64, dropout=0.0),
        vocab_size=len(tokenizer),
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    Lexicon.build(wiki_texts).save(out)
    write_restore_json(out, ChunkConfig(max_source_words=16), training={"note": "random weights (test fixture)"})
    return out


@pytest.fixture(scope="session")
def quick_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model made to end every output at once (a large ``</s>`` bias): quick and
    deterministic, and every chunk goes through the faithfulness repair."""
    from restore.model import load_pretrained

    import torch

    out = tmp_path_factory.mktemp("quick_model")
    for path in tiny_model_dir.iterdir():
        if path.is_file():
            shutil.copy(path, out / path.name)
    model = load_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.final_logits_bias[0, EOS] = 50.0
    model.save_pretrained(out)
    return out


@pytest.fixture
def restorer_options(monkeypatch):
    """``restorer_options(window_chunks=20, ...)``: every Restorer built (e.g. by the command line)
    in this test takes these constructor options."""
    from restore.infer import Restorer

    init = Restorer.__init__

    def apply(**options) -> None:
        monkeypatch.setattr(Restorer, "__init__", lambda self, *args, **kw: init(self, *args, **{**kw, **options}))

    return apply


@pytest.fixture
def one_thread(monkeypatch):
    """One torch thread: on a busy 2-core machine a 2-thread pool makes tiny generations 100x slower."""
    import torch

    threads = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # keeps restore.infer from raising the thread count
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
