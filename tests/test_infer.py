"""restore.infer / restore.backends: chunk order, batching, limits, OOM splitting, the infer CLI, resume.

Model quality is never tested here. Order and reassembly are checked with stub
generators (an *echo* generator returns each chunk's own source ids, so a restored
document must equal its chunks joined exactly as inference joins them); batching is
checked against one-chunk-at-a-time generation with a small model whose random
weights are scaled up so that its outputs depend on the input and vary in length.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from restore.backends import BACKENDS, TorchGenerator
from restore.chunking import ChunkConfig, chunk_text, document_chunks
from restore.cli import main
from restore.corrupt import corrupt
from restore.errors import RestoreError
from restore.infer import NewTokens, Restorer, new_tokens_limit
from restore.textio import partial_path

EOS = 3


class EchoGenerator:
    """Returns each input's own ids (a perfect copy model), and records every batch it saw."""

    batch_tokens = 16384

    def __init__(self, fail_after_batches: int | None = None):
        self.batches: list[tuple[list[int], int]] = []  # (input lengths, max_new_tokens)
        self.fail_after_batches = fail_after_batches

    def generate(self, batch, max_new_tokens, num_beams=1, num_return_sequences=1, **_):
        if self.fail_after_batches is not None and len(self.batches) >= self.fail_after_batches:
            raise KeyboardInterrupt  # like Ctrl-C in the middle of a run
        self.batches.append(([len(ids) for ids in batch], max_new_tokens))
        return [ids[:-1][:max_new_tokens] for ids in batch for _ in range(num_return_sequences)]

    def describe(self):
        return "echo (test stub), cpu"


class LoopingGenerator:
    """A degenerate model: always generates as many tokens as it may."""

    batch_tokens = 16384

    def generate(self, batch, max_new_tokens, num_beams=1, num_return_sequences=1, **_):
        return [[7] * max_new_tokens for _ in batch for _ in range(num_return_sequences)]

    def describe(self):
        return "looping (test stub)"


class OutOfMemoryGenerator(EchoGenerator):
    """Echo, but raises CUDA's out-of-memory error for batches larger than ``max_rows``."""

    def __init__(self, max_rows: int):
        super().__init__()
        self.max_rows = max_rows

    def generate(self, batch, max_new_tokens, num_beams=1, num_return_sequences=1, **kw):
        if len(batch) > self.max_rows:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().generate(batch, max_new_tokens, num_beams, num_return_sequences)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def sources(wiki_texts) -> list[str]:
    return [corrupt(text) for text in wiki_texts]


def echo_restorer(tokenizer, generator=None, max_tokens: int = 16, **kw) -> Restorer:
    # Echoed sources are not faithful restorations: these tests check chunking and batching only.
    return Restorer(tokenizer, generator or EchoGenerator(), ChunkConfig(max_source_words=max_tokens), **{"faithful": False, **kw})


def joined_like_inference(document: str, config: ChunkConfig) -> str:
    """What an echo restoration of ``document`` must be: its chunks joined as inference joins them."""
    chunks, joiners = document_chunks(document, config)
    return "".join(j + c for j, c in zip(joiners, chunks))


# --- documents, chunks, order --------------------------------------------------------------------
def test_one_chunk_document(tokenizer):
    restorer = echo_restorer(tokenizer)
    assert restorer.restore("leon trotski born 1879 .") == "leon trotski born 1879 ."
    assert restorer.stats.chunks == 1 and restorer.stats.documents == 1


def test_many_chunks_keep_order(tokenizer, sources):
    config = ChunkConfig(max_source_words=16)
    document = sources[0].replace("# #", "").replace("#", "")  # no headings: chunks joined by spaces only
    assert len(chunk_text(document, config)) > 5
    restorer = echo_restorer(tokenizer, batch_tokens=200)
    assert restorer.restore(document) == " ".join(document.split())
    assert restorer.stats.batches > 1  # the document really went through several sorted batches


def test_headings_and_lines_are_chunk_boundaries(tokenizer):
    document = "born 1879 kherson . father farmer . # # earli life studi odessa .\nsecond document line ."
    restorer = echo_restorer(tokenizer, max_tokens=8)
    assert restorer.restore(document) == (
        "born 1879 kherson . father farmer .\n\n# # earli life studi odessa .\n\nsecond document line ."
    )


def test_restore_many_keeps_document_order_across_windows(tokenizer, sources):
    config = ChunkConfig(max_source_words=16)
    restorer = echo_restorer(tokenizer, batch_tokens=300, window_chunks=7)
    documents = sources + ["", "   ", sources[0]]
    assert list(restorer.restore_many(documents)) == [joined_like_inference(d, config) for d in documents]
    assert restorer.stats.documents == len(documents)


def test_batches_are_sorted_and_within_budget(tokenizer, sources):
    generator = EchoGenerator()
    restorer = echo_restorer(tokenizer, generator, batch_tokens=400)
    list(restorer.restore_many(sources[:6]))
    lengths = [n for batch, _ in generator.batches for n in batch]
    assert lengths == sorted(lengths, reverse=True)
    for batch, _ in generator.batches:
        longest = max(batch)
        expected_new = min(new_tokens_limit(longest, 511), 2 * longest + 8)
        assert len(batch) == 1 or len(batch) * (longest + expected_new) <= 400


def test_restore_many_is_lazy(tokenizer, sources):
    consumed = []

    def documents():
        for text in sources:
            consumed.append(text)
            yield text

    restorer = echo_restorer(tokenizer, window_chunks=10)
    first = next(restorer.restore_many(documents()))
    assert first == joined_like_inference(sources[0], restorer.chunking)
    assert len(consumed) < len(sources)


def test_empty_documents(tokenizer):
    restorer = echo_restorer(tokenizer)
    assert restorer.restore("") == "" and restorer.restore("\n \n") == ""
    assert list(restorer.restore_many([])) == []


# --- limits, long input, out of memory -------------------------------------------------------------
def test_generation_is_limited_by_source_length(tokenizer):
    restorer = echo_restorer(tokenizer, LoopingGenerator(), max_tokens=4, batch_tokens=10_000)
    chunks = ["a .", "much longer chunk here"]
    ids = restorer.encode(chunks)
    outputs = restorer.generate_ids(ids, num_beams=1)
    assert [len(out[0]) for out in outputs] == [math.ceil(4 * len(x)) + 16 for x in ids]
    assert new_tokens_limit(10_000, 511) == 511


def test_boundary_free_long_line_is_hard_split(tokenizer):
    words = [f"w{i % 97}" for i in range(5000)]  # no sentence boundary anywhere
    restorer = echo_restorer(tokenizer, batch_tokens=4000)
    assert restorer.restore(" ".join(words)) == " ".join(words)
    assert restorer.stats.chunks == math.ceil(5000 / 16)


def test_token_too_long_for_the_encoder_is_split(tokenizer):
    word = "kherson" * 400  # one whitespace token of thousands of subwords
    restorer = echo_restorer(tokenizer, max_positions=64)
    restored = restorer.restore(word)
    assert "".join(restored.split()) == word
    assert all(n <= 64 for batch, _ in restorer.generator.batches for n in batch)


def test_out_of_memory_splits_the_batch(tokenizer, sources):
    restorer = echo_restorer(tokenizer, OutOfMemoryGenerator(max_rows=2), batch_tokens=100_000)
    assert restorer.restore(sources[1]) == joined_like_inference(sources[1], restorer.chunking)
    assert restorer.stats.oom_splits > 0


def test_out_of_memory_on_one_chunk_is_a_clear_error(tokenizer):
    restorer = echo_restorer(tokenizer, OutOfMemoryGenerator(max_rows=0))
    with pytest.raises(RestoreError, match="out of memory"):
        restorer.restore("born 1879 .")


def test_candidates_per_chunk(tokenizer):
    restorer = echo_restorer(tokenizer)
    assert restorer.chunk_candidates(["a b .", "c ."], num_beams=3, num_return_sequences=2) == [
        ["a b .", "a b ."],
        ["c .", "c ."],
    ]


# --- a real (tiny) model: batched == one chunk at a time -----------------------------------------
@pytest.fixture(scope="module")
def varied_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with larger random weights and an </s> bias: outputs depend on the input and
    end at different lengths, so comparing batched with unbatched generation means something."""
    from restore.model import load_pretrained

    out = tmp_path_factory.mktemp("varied_model")
    for path in tiny_model_dir.iterdir():
        if path.is_file():  # not the CTranslate2 conversions other tests may have cached beside it
            shutil.copy(path, out / path.name)
    model = load_pretrained(tiny_model_dir)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
        model.final_logits_bias[0, EOS] = 5.0
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def model_chunks(sources) -> list[str]:
    return [chunk for text in sources[:2] for chunk in chunk_text(text, ChunkConfig(max_source_words=16))]


def test_batched_equals_one_chunk_at_a_time(varied_model_dir, model_chunks):
    batched = Restorer.from_pretrained(varied_model_dir, faithful=False, device="cpu", batch_tokens=4000)
    single = Restorer.from_pretrained(varied_model_dir, faithful=False, device="cpu", batch_tokens=1)
    outputs = batched.restore_chunks(model_chunks)
    assert outputs == single.restore_chunks(model_chunks)
    assert single.stats.batches == len(model_chunks) and batched.stats.batches < len(model_chunks) / 4
    lengths = {len(o) for o in outputs}
    assert len(lengths) > 5  # non-trivial: the outputs differ (and end at different lengths)


def test_generator_matches_plain_model_generate(varied_model_dir, model_chunks):
    restorer = Restorer.from_pretrained(varied_model_dir, faithful=False, device="cpu")
    model, tok = restorer.generator.model, restorer.tokenizer
    for chunk in model_chunks[:5]:
        ids = tok([chunk], return_tensors="pt")
        limit = new_tokens_limit(ids["input_ids"].shape[1], 511)
        plain = model.generate(**ids, max_new_tokens=limit, do_sample=False)[0].tolist()[1:]
        plain = plain[: plain.index(EOS)] if EOS in plain else plain
        assert restorer.restore_chunks([chunk]) == [tok.decode(plain, skip_special_tokens=True)]


def test_beam_search_and_new_token_limit(varied_model_dir):
    chunks = ["born 1879 .", "father farmer .", "# # career"]  # short: beams may run to the length limit
    restorer = Restorer.from_pretrained(varied_model_dir, faithful=False, device="cpu", num_beams=2)
    candidates = restorer.chunk_candidates(chunks, num_beams=3, num_return_sequences=3)
    assert [len(c) for c in candidates] == [3, 3, 3]
    assert len(restorer.restore_chunks(chunks)) == 3
    free = Restorer.from_pretrained(varied_model_dir, faithful=False, device="cpu")
    free.restore_chunks(chunks)
    capped = Restorer.from_pretrained(varied_model_dir, faithful=False, device="cpu", new_tokens=NewTokens(cap=1))
    capped.restore_chunks(chunks)
    assert capped.stats.generated_tokens <= 3 < free.stats.generated_tokens


def test_static_cache_gives_the_same_outputs_on_cpu(varied_model_dir, model_chunks):
    from restore.model import load_pretrained

    chunks = model_chunks[:5]
    cpu = torch.device("cpu")
    dynamic = Restorer.from_pretrained(varied_model_dir, faithful=False, device="cpu")
    static = Restorer.from_pretrained(varied_model_dir, faithful=False, device="cpu", static_cache=True)
    assert isinstance(static.generator, TorchGenerator) and static.generator.static_cache
    assert static.restore_chunks(chunks) == dynamic.restore_chunks(chunks)
    generator = TorchGenerator(load_pretrained(varied_model_dir), cpu, torch.float32, static_cache=True)
    steps = []
    generator.model.get_decoder().register_forward_hook(lambda *_: steps.append(1))
    out = generator.generate([[5, 6, EOS]], max_new_tokens=3, min_new_tokens=3)
    # The cache is sized for 64 new tokens (shape buckets), but generation stops at the 3 asked for.
    assert len(out[0]) == 3 and len(steps) == 3


def test_device_auto_falls_back_to_cpu(varied_model_dir, model_chunks, monkeypatch):
    """Without CUDA (simulated where there is one), ``auto`` restores on the CPU exactly as ``cpu`` does."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    auto = Restorer.from_pretrained(varied_model_dir, faithful=False, device="auto", backend="torch")
    cpu = Restorer.from_pretrained(varied_model_dir, faithful=False, device="cpu", backend="torch")
    assert auto.device == torch.device("cpu") and next(auto.generator.model.parameters()).device.type == "cpu"
    assert next(auto.generator.model.parameters()).dtype == torch.float32  # fp32 on the CPU, never half
    assert auto.restore_chunks(model_chunks[:4]) == cpu.restore_chunks(model_chunks[:4])
    with pytest.raises(RestoreError, match="no CUDA GPU"):  # asking for CUDA explicitly is an error instead
        Restorer.from_pretrained(varied_model_dir, device="cuda")


# --- the command line ------------------------------------------------------------------------------
@pytest.fixture
def echo_backend(monkeypatch):
    """Make the CLI's torch backend an echo generator (fast, and the expected output is known)."""
    generators: list[EchoGenerator] = []

    def factory(path, device, dtype, **options):
        generators.append(EchoGenerator())
        return generators[-1]

    monkeypatch.setitem(BACKENDS, "torch", factory)
    return generators


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    # The echo backend replaces torch's; its echoes are not faithful restorations.
    code = main(["infer", "--no-faithful", "--backend", "torch", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_text_files(tmp_path, capsys, tiny_model_dir, echo_backend, sources):
    files = []
    for k, text in enumerate(sources[:3]):
        files.append(tmp_path / f"doc{k}.txt")
        files[-1].write_text(text + "\n", encoding="utf-8")
    out = tmp_path / "restored.txt"
    code, stdout, err = run_cli(capsys, *map(str, files), "-o", str(out), "--model", str(tiny_model_dir))
    assert code == 0 and stdout == ""
    config = ChunkConfig(max_source_words=16)
    assert out.read_text(encoding="utf-8") == "\n\n".join(joined_like_inference(t, config) for t in sources[:3]) + "\n"
    assert len(err.splitlines()) == 1 and "3 documents" in err and "tokens/s" in err and "cpu" in err


def test_cli_stdin_to_stdout(capsys, monkeypatch, tiny_model_dir, echo_backend):
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"leon trotski born 1879 .\n")))
    code, stdout, err = run_cli(capsys, "--model", str(tiny_model_dir), "--device", "cpu")
    assert (code, stdout) == (0, "leon trotski born 1879 .\n")


def write_jsonl(path: Path, sources: list[str]) -> None:
    path.write_text("".join(json.dumps({"id": k, "source": s, "extra": [k]}) + "\n" for k, s in enumerate(sources)))


def test_cli_jsonl_keeps_fields(tmp_path, capsys, tiny_model_dir, echo_backend, sources):
    data, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(data, sources[:4])
    assert run_cli(capsys, str(data), "-o", str(out), "--model", str(tiny_model_dir))[0] == 0
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    config = ChunkConfig(max_source_words=16)
    assert records == [
        {"id": k, "source": s, "extra": [k], "restored": joined_like_inference(s, config)} for k, s in enumerate(sources[:4])
    ]
    assert not partial_path(out).exists()


def test_cli_jsonl_resume_after_interruption(tmp_path, capsys, monkeypatch, tiny_model_dir, sources, restorer_options):
    data = tmp_path / "in.jsonl"
    write_jsonl(data, sources)
    restorer_options(window_chunks=20)  # several windows, so records are written along the way
    generators = []

    def factory(path, device, dtype, **options):
        generators.append(EchoGenerator(fail_after_batches=20 if not generators else None))
        return generators[-1]

    monkeypatch.setitem(BACKENDS, "torch", factory)
    whole = tmp_path / "whole.jsonl"
    out = tmp_path / "out.jsonl"
    argv = ("--model", str(tiny_model_dir), "--batch-tokens", "400", "--quality", "fast")  # greedy: one batch a window part
    assert run_cli(capsys, str(data), "-o", str(out), *argv)[0] == 130  # interrupted
    assert not out.exists() and partial_path(out).exists()
    written = partial_path(out).read_text(encoding="utf-8")
    assert 0 < written.count("\n") < len(sources)
    with open(partial_path(out), "a", encoding="utf-8") as f:
        f.write('{"id": 99, "source": "torn')  # a record half written when the run died
    assert run_cli(capsys, str(data), "-o", str(out), *argv)[0] == 0
    assert run_cli(capsys, str(data), "-o", str(whole), *argv)[0] == 0
    assert out.read_bytes() == whole.read_bytes() and not partial_path(out).exists()
    resumed_chunks = sum(len(batch) for batch, _ in generators[1].batches)
    all_chunks = sum(len(batch) for batch, _ in generators[2].batches)
    assert resumed_chunks < all_chunks  # the records already written were not restored again


def test_cli_refuses_a_part_file_of_another_input(tmp_path, capsys, tiny_model_dir, echo_backend, sources):
    data, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(data, sources[:3])
    partial_path(out).write_text(json.dumps({"id": 0, "source": "other", "extra": [0], "restored": "x"}) + "\n")
    code, _, err = run_cli(capsys, str(data), "-o", str(out), "--model", str(tiny_model_dir))
    assert code == 1 and "does not match the input" in err and len(err.splitlines()) == 1


def test_cli_with_a_real_model(tmp_path, capsys, varied_model_dir, sources):
    data, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(data, ["leon trotski born 1879 kherson .", "", "father farmer . # # career join armi ."])
    code, _, err = run_cli(capsys, str(data), "-o", str(out), "--model", str(varied_model_dir), "--device", "cpu")
    assert code == 0, err
    assert [set(json.loads(line)) for line in out.read_text().splitlines()] == [{"id", "source", "extra", "restored"}] * 3
    assert err.count("\n") == 1 and err.startswith("restore infer: 3 documents, ")
    assert "; engine: torch float32, cpu (" in err and "(--backend torch)" in err


def test_cli_empty_input_gives_empty_output(tmp_path, capsys, tiny_model_dir):
    empty, out = tmp_path / "empty.txt", tmp_path / "out.txt"
    empty.write_text("")
    assert run_cli(capsys, str(empty), "-o", str(out), "--model", str(tiny_model_dir))[0] == 0
    assert out.read_text() == ""
    (tmp_path / "empty.jsonl").write_text("")
    assert run_cli(capsys, str(tmp_path / "empty.jsonl"), "--model", str(tiny_model_dir))[:2] == (0, "")


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "no such file"),
        ("binary", "binary"),
        ("latin1", "not valid UTF-8"),
        ("bad_jsonl", "expected a JSON object with a string field 'source'"),
        ("mixed", "cannot mix"),
        ("no_model_dir", "does not exist"),
        ("incomplete_model", "not a complete restore model"),
        ("not_our_model", "not a restore model description"),
        ("bad_batch_tokens", "--batch-tokens"),
        ("zero_batch_tokens", "--batch-tokens must be a positive integer, got 0"),
        ("zero_beams", "--num-beams must be a positive integer, got 0"),
    ],
)
def test_cli_bad_input_is_one_clear_line(tmp_path, capsys, tiny_model_dir, case, message):
    text = tmp_path / "in.txt"
    text.write_text("leon trotski .\n")
    model = tiny_model_dir
    argv = [str(text)]
    if case == "missing":
        argv = [str(tmp_path / "nope.txt")]
    elif case == "binary":
        text.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    elif case == "latin1":
        text.write_bytes("caf\xe9 .".encode("latin-1"))
    elif case == "bad_jsonl":
        (tmp_path / "in.jsonl").write_text('{"text": "x"}\n')
        argv = [str(tmp_path / "in.jsonl")]
    elif case == "mixed":
        (tmp_path / "in.jsonl").write_text('{"source": "x"}\n')
        argv = [str(text), str(tmp_path / "in.jsonl")]
    elif case == "no_model_dir":
        model = tmp_path / "no-model"
    elif case in ("incomplete_model", "not_our_model"):
        model = tmp_path / "model"
        shutil.copytree(tiny_model_dir, model)
        if case == "incomplete_model":
            (model / "model.safetensors").unlink()
        else:
            (model / "restore.json").write_text('{"format": "someone-else/3"}')
    elif case == "bad_batch_tokens":
        argv += ["--batch-tokens", "-5"]
    elif case == "zero_batch_tokens":
        argv += ["--batch-tokens", "0"]
    elif case == "zero_beams":
        argv += ["--num-beams", "0"]
    code, stdout, err = run_cli(capsys, *argv, "--model", str(model), "-o", str(tmp_path / "out.txt"))
    assert (code, stdout) == (1, "")
    assert len(err.splitlines()) == 1 and err.startswith("restore infer: error: ") and message in err, err
    assert not (tmp_path / "out.txt").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cli_cuda_without_a_gpu_is_one_clear_line(capsys, tmp_path, tiny_model_dir):
    (tmp_path / "in.txt").write_text("leon trotski .\n")
    code, _, err = run_cli(capsys, str(tmp_path / "in.txt"), "--model", str(tiny_model_dir), "--device", "cuda")
    assert code == 1 and len(err.splitlines()) == 1 and "no CUDA GPU" in err


def test_generators_describe_their_engine(tiny_model_dir):
    from restore.backends import load_torch_generator

    generator = load_torch_generator(tiny_model_dir, torch.device("cpu"), torch.float32)
    assert generator.describe().startswith("torch float32, cpu (")


# --- decoding: beams, the most probable faithful hypothesis, the length penalty ----------------------
class ScriptedBeams:
    """Beam hypotheses scripted per source (best first); records every call (rows, beams, returned, options)."""

    batch_tokens = 16384

    def __init__(self, tokenizer, hypotheses: dict[str, list[str]]):
        self.by_input = {
            tuple(tokenizer(source)["input_ids"]): [tokenizer(h, add_special_tokens=False)["input_ids"] for h in hyps]
            for source, hyps in hypotheses.items()
        }
        self.calls: list[tuple[int, int, int, dict]] = []

    def generate(self, batch, max_new_tokens, num_beams=1, num_return_sequences=1, **options):
        self.calls.append((len(batch), num_beams, num_return_sequences, options))
        return [self.by_input[tuple(ids)][j][:max_new_tokens] for ids in batch for j in range(num_return_sequences)]

    def describe(self):
        return "scripted beams (test stub)"


HYPOTHESES = {"receiv news .": ["He got the news.", "He received news.", "It received the news.", "News."]}


def test_a_beam_search_chooses_its_most_probable_faithful_hypothesis_without_a_second_decode(tokenizer):
    beams = ScriptedBeams(tokenizer, HYPOTHESES)
    restorer = Restorer(tokenizer, beams, ChunkConfig(16), num_beams=4, length_penalty=1.3, faithful_beams=4)
    assert restorer.restore("receiv news .") == "He received news."  # the first of the beam that corrupts back
    assert beams.calls == [(1, 4, 4, {"length_penalty": 1.3})]  # one decode, all hypotheses kept: no re-decode
    faithful = restorer.stats.faithful
    assert restorer.stats.redecoded == 0 and (faithful.failed_greedy, faithful.fixed_by_beam, faithful.repaired) == (1, 1, 0)

    greedy = ScriptedBeams(tokenizer, HYPOTHESES)  # greedy, then the failing chunk re-decoded with a beam of 4
    restorer = Restorer(tokenizer, greedy, ChunkConfig(16), num_beams=1, length_penalty=1.3, faithful_beams=4)
    assert restorer.restore("receiv news .") == "He received news."
    assert greedy.calls == [(1, 1, 1, {}), (1, 4, 4, {"length_penalty": 1.3})]  # greedy decoding has no length penalty
    assert restorer.stats.redecoded == 1

    unchecked = ScriptedBeams(tokenizer, HYPOTHESES)  # without faithfulness only the best hypothesis is needed
    restorer = Restorer(tokenizer, unchecked, ChunkConfig(16), num_beams=4, faithful=False)
    assert restorer.restore("receiv news .") == "He got the news." and unchecked.calls == [(1, 4, 1, {"length_penalty": 1.0})]


def test_quality_presets_and_explicit_options():
    from restore.cli import build_parser
    from restore.cli import _check_model_options
    from restore.settings import QUALITY, decoding_for

    def settings(*argv):
        args = build_parser().parse_args(["infer", *argv])
        _check_model_options(args)
        return args.quality, args.num_beams, args.length_penalty

    best = QUALITY["best"]
    assert settings() == ("best", best.num_beams, best.length_penalty)  # the default
    assert settings("--quality", "fast") == ("fast", 1, 1.0)
    assert settings("--quality", "fast", "--num-beams", "3") == ("fast", 3, 1.0)  # explicit options win
    assert settings("--length-penalty", "2") == ("best", best.num_beams, 2.0)
    with pytest.raises(RestoreError, match="--length-penalty must be positive"):
        decoding_for("best", length_penalty=0)
    import inspect

    from restore.api import load
    from restore.settings import DEFAULT_QUALITY, restorer_settings

    assert inspect.signature(load).parameters["quality"].default == DEFAULT_QUALITY  # the Python API decodes as the CLI
    assert inspect.signature(restorer_settings).parameters["quality"].default == DEFAULT_QUALITY
