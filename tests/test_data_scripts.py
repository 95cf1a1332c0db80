"""The scripts around the training mix: carrying a config's files to a GPU, and the tokenizer's fit per corpus."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def load_script(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def carry():
    return load_script(REPO / "scripts" / "gpu" / "carry_data.py")


@pytest.fixture
def mix_config(tmp_path, wiki_texts) -> Path:
    """A config of two corpora (files under tmp_path/shared), written as a repository's configs/ would hold it."""
    for name, texts in (("wiki", wiki_texts[:6]), ("prose", wiki_texts[6:12])):
        folder = tmp_path / "shared" / name
        folder.mkdir(parents=True)
        for split, part in (("train-00", texts[:3]), ("train-01", texts[3:5]), ("dev", texts[5:])):
            (folder / f"{split}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in part), encoding="utf-8")
    (tmp_path / "repo" / "configs").mkdir(parents=True)
    config = tmp_path / "repo" / "configs" / "mix.yaml"
    corpora = [
        {"name": "wiki", "train_files": ["../shared/wiki/train-*.jsonl"], "dev_files": ["../shared/wiki/dev.jsonl"], "weight": 0.6},
        {"name": "prose", "train_files": ["../shared/prose/train-01.jsonl"], "weight": 0.4},
    ]
    config.write_text(yaml.safe_dump({"data": {"corpora": corpora}}), encoding="utf-8")
    return config


def test_carry_copies_exactly_the_configs_files_per_corpus(tmp_path, carry, mix_config):
    files = carry.plan(str(mix_config), [])
    assert {name: {split: [Path(f).name for f in fs] for split, fs in splits.items()} for name, splits in files.items()} == {
        "wiki": {"train": ["train-00.jsonl", "train-01.jsonl"], "dev": ["dev.jsonl"]},
        "prose": {"train": ["train-01.jsonl"], "dev": []},
    }
    dest = tmp_path / "carried"
    (dest / "prose" / "train").mkdir(parents=True)
    (dest / "prose" / "train" / "train-00.jsonl").write_text("stale\n")  # left by an earlier, other mix
    (dest / "old").mkdir()  # a corpus the config no longer names
    copied = carry.copy_plan(files, dest)
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) == sorted(str(p.relative_to(dest)) for p in copied) == [
        "prose/train/train-01.jsonl", "wiki/dev/dev.jsonl", "wiki/train/train-00.jsonl", "wiki/train/train-01.jsonl",
    ]  # fmt: skip
    assert (dest / "wiki" / "train" / "train-00.jsonl").read_bytes() == (tmp_path / "shared" / "wiki" / "train-00.jsonl").read_bytes()


def test_carry_fills_only_a_git_ignored_folder_of_the_checkout(tmp_path, carry, mix_config, capsys):
    outside = tmp_path / "elsewhere"
    assert carry.main(["--config", str(mix_config), "--to", str(outside)]) == 1
    assert "not a git-ignored folder of the checkout" in capsys.readouterr().err and not outside.exists()


def test_carry_names_a_missing_file(tmp_path, carry, mix_config, capsys):
    assert carry.main(["--config", str(mix_config), "--to", str(tmp_path / "x"), "data.corpora.prose.train_files=[nope.jsonl]"]) == 1
    assert "data.corpora.prose.train_files: no such file:" in capsys.readouterr().err


def test_carried_files_read_back_as_overrides_for_the_configs_corpora(tmp_path, carry, mix_config):
    from restore.config import load_config
    from restore.lineage import local_shard

    dest = tmp_path / "carried"
    carry.copy_plan(carry.plan(str(mix_config), []), dest)
    (dest / "old").mkdir()  # a corpus another config names
    data = load_config(mix_config).data
    overrides, lines = carry.carried_overrides(data, dest)
    wiki = dest / "wiki"
    assert overrides == [
        f"data.corpora.wiki.train_files=[{wiki / 'train' / 'train-00.jsonl'},{wiki / 'train' / 'train-01.jsonl'}]",
        f"data.corpora.wiki.dev_files=[{wiki / 'dev' / 'dev.jsonl'}]",
        f"data.corpora.prose.train_files=[{dest / 'prose' / 'train' / 'train-01.jsonl'}]",
    ]  # prose has no dev files: its config's (none) stay
    assert lines[0].startswith("wiki (weight 0.6): 2 train file(s)") and lines[-1] == "not corpora of this config (not used): old"
    # The overrides load: the corpora read the carried files, with the config's weights.
    corpora = load_config(mix_config, overrides).data.corpora
    assert [(c.name, c.weight, [Path(f).parent.parent.name for f in c.train_files]) for c in corpora] == [
        ("wiki", 0.6, ["wiki", "wiki"]), ("prose", 0.4, ["prose"])]
    # A start model that saw wiki's train-00 (by content): left out and named; a corpus left with nothing is an error.
    seen = [{"shards": [local_shard(wiki / "train" / "train-00.jsonl").record()]}]
    overrides, lines = carry.carried_overrides(data, dest, seen)
    assert overrides[0] == f"data.corpora.wiki.train_files=[{wiki / 'train' / 'train-01.jsonl'}]"
    assert lines[0].endswith("; seen by the start model (not used): train-00.jsonl")
    seen.append({"shards": [local_shard(dest / "prose" / "train" / "train-01.jsonl").record()]})
    with pytest.raises(carry.RestoreError, match="prose/train: no training file the start model has not seen"):
        carry.carried_overrides(data, dest, seen)
    # A one-corpus config (data.train_files) gets data.train_files / dev_files; no folder: the config's own files.
    single = load_config(mix_config, [f"data.train_files=[{tmp_path / 'shared' / 'wiki' / 'train-00.jsonl'}]"]).data
    assert carry.carried_overrides(single, dest)[0][0] == f"data.train_files=[{wiki / 'train' / 'train-00.jsonl'},{wiki / 'train' / 'train-01.jsonl'}]"
    assert carry.carried_overrides(data, tmp_path / "none") == ([], [f"wiki: no {tmp_path / 'none' / 'wiki'}: the config's files",
                                                                     f"prose: no {tmp_path / 'none' / 'prose'}: the config's files"])


def test_tokenizer_stats_measures_sources_and_targets_per_corpus(tmp_path, wiki_texts, capsys):
    stats = load_script(REPO / "scripts" / "tokenizer_stats.py")
    articles = tmp_path / "a.jsonl"
    records = [{"text": t, "source": "news" if i % 2 else "books"} for i, t in enumerate(wiki_texts[:8])]
    articles.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    out_json = tmp_path / "rows.json"
    argv = ["--tokenizer", str(REPO / "models" / "tokenizer-16k"), f"wiki={articles}", "--group-by", "source", "--json", str(out_json)]
    assert stats.main(argv) == 0
    rows = {(r["corpus"], r["side"]): r for r in json.loads(out_json.read_text(encoding="utf-8"))}
    assert set(rows) == {(c, s) for c in ("wiki", "wiki: news", "wiki: books") for s in ("sources", "targets")}
    whole, news, books = rows[("wiki", "targets")], rows[("wiki: news", "targets")], rows[("wiki: books", "targets")]
    assert whole["texts"] == news["texts"] + books["texts"] and whole["words"] == news["words"] + books["words"]
    # Wikipedia text with the Wikipedia tokenizer: 1-3 pieces a word, nothing unknown, every text decodes back
    assert 1.0 < whole["pieces_per_word"] < 3.0 and whole["unk_per_1k_pieces"] == 0 and whole["roundtrip_exact"] == 100.0
    assert rows[("wiki", "sources")]["pieces_per_word"] < whole["pieces_per_word"]  # stems of common words are pieces
    out = capsys.readouterr().out
    assert "| wiki | targets |" in out and "pieces/word" in out


def test_tokenizer_stats_counts_characters_the_vocabulary_lacks():
    stats = load_script(REPO / "scripts" / "tokenizer_stats.py")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(REPO / "models" / "tokenizer-16k")
    covered = stats.vocabulary_characters(tokenizer)
    counts = stats.Counts()
    byte_ids = {i for p, i in tokenizer.get_vocab().items() if p.startswith("<0x")}
    stats.measure(["The cat sat.", "Ꝏ sat."], tokenizer, covered, tokenizer.unk_token_id, byte_ids, counts)
    assert "a" in covered and "Ꝏ" not in covered
    assert counts.uncovered == {"Ꝏ": 1} and counts.byte_pieces == len("Ꝏ".encode()) and counts.exact == 2 and counts.unk == 0
