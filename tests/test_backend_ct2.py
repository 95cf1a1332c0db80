"""The CTranslate2 backend: same outputs as PyTorch (fp32), close int8, cached conversion, clear errors.

CI installs no ``ctranslate2``: the tests that run it skip there; the tests of a missing
backend simulate the package being absent and run everywhere.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from restore.errors import RestoreError

DOCUMENT = (
    "# # earli life\n\nborn 1879 kherson , father farmer . studi law univers odessa . "
    "the parti 's will , 1879–1922 . move pari 1905 , met lenin . return 1917 revolut ."
)


@pytest.fixture(autouse=True)
def one_torch_thread(monkeypatch):
    """PyTorch on one thread: tiny models gain nothing from more, and on a busy machine (other
    jobs on the same cores) multi-threaded decoding steps can be 100x slower (measured)."""
    threads = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the Restorer then leaves the thread count alone
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("ctranslate2-*"))
    return target


@pytest.fixture
def model_dir(tiny_model_dir, tmp_path) -> Path:
    """A private copy of the tiny model (conversions are written next to it)."""
    return _copy_model(tiny_model_dir, tmp_path / "model")


def _randomized_copy(source: Path, target: Path, std: float, eos_bias: float) -> Path:
    """A copy of a model with weights drawn at ``std`` and a bias towards ``</s>``."""
    from restore.model import load_pretrained

    out = _copy_model(source, target)
    model = load_pretrained(out)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
        model.final_logits_bias[0, model.config.eos_token_id] = eos_bias
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def varied_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with large random weights and a ``</s>`` bias: outputs differ per input
    and end at many different lengths (the fixture model repeats one token to the limit).
    Its decisions hang on small logit differences, so int8 changes many outputs here."""
    return _randomized_copy(tiny_model_dir, tmp_path_factory.mktemp("varied") / "model", std=0.3, eos_bias=5.0)


@pytest.fixture(scope="module")
def calmer_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """Smaller random weights: still several distinct outputs, clearer decisions."""
    return _randomized_copy(tiny_model_dir, tmp_path_factory.mktemp("calmer") / "model", std=0.15, eos_bias=3.0)


@pytest.fixture(scope="module")
def varied_inputs(varied_model_dir, wiki_texts) -> list[list[int]]:
    """Encoder inputs of real corrupted chunks."""
    from transformers import AutoTokenizer

    from restore.chunking import ChunkConfig, chunk_text
    from restore.corrupt import corrupt

    tokenizer = AutoTokenizer.from_pretrained(varied_model_dir)
    chunks = [c for text in wiki_texts[:12] for c in chunk_text(corrupt(text), ChunkConfig(max_source_words=16))]
    return tokenizer(chunks)["input_ids"]


def _torch_generator(path: Path):
    from restore.backends import load_torch_generator

    return load_torch_generator(path, torch.device("cpu"), torch.float32)


def _ct2_generator(path: Path, compute_type: str, **options):
    from restore.backend_ct2 import load_ctranslate2_generator

    return load_ctranslate2_generator(path, torch.device("cpu"), compute_type=compute_type, **options)


# --- without ctranslate2 (runs everywhere) ----------------------------------------------------------
@pytest.fixture
def no_ctranslate2(monkeypatch):
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # `import ctranslate2` now raises ImportError


def test_missing_package_is_one_clear_line(no_ctranslate2):
    from restore.backend_ct2 import ctranslate2_available, import_ctranslate2

    assert not ctranslate2_available()
    with pytest.raises(RestoreError) as error:
        import_ctranslate2()
    message = str(error.value)
    assert "\n" not in message
    assert "pip install 'restore[ctranslate2]'" in message and "--backend torch" in message


def test_auto_without_package_is_torch(no_ctranslate2):
    from restore.backend_ct2 import choose_backend

    assert choose_backend("auto", "cpu") == "torch"
    assert choose_backend("auto", "cuda") == "torch"
    assert choose_backend("ctranslate2", "cpu") == "ctranslate2"  # explicit: loading it then fails clearly


def test_loading_without_package_is_restore_error(no_ctranslate2, model_dir):
    with pytest.raises(RestoreError, match="optional package ctranslate2"):
        _ct2_generator(model_dir, "int8")
    assert not any(model_dir.glob("ctranslate2-*"))


def test_bart_config_shim():
    from transformers import BartConfig

    from restore.backend_ct2 import _add_bart_normalize_before

    config = BartConfig(vocab_size=10, d_model=8, encoder_layers=1, decoder_layers=1)
    _add_bart_normalize_before(config)
    assert config.normalize_before is False


# --- with ctranslate2 -------------------------------------------------------------------------------
def test_auto_with_package_is_ctranslate2_on_cpu_only():
    pytest.importorskip("ctranslate2")
    from restore.backend_ct2 import choose_backend

    assert choose_backend("auto", "cpu") == "ctranslate2"
    assert choose_backend("auto", "cuda") == "torch"


def test_fp32_greedy_equals_torch(varied_model_dir, varied_inputs):
    pytest.importorskip("ctranslate2")
    expected = _torch_generator(varied_model_dir).generate(varied_inputs, 40)
    assert len({len(ids) for ids in expected}) > 5  # the outputs end at many lengths: EOS handling is exercised
    generator = _ct2_generator(varied_model_dir, "float32")
    assert generator.generate(varied_inputs, 40) == expected
    # max_new_tokens cuts, min_new_tokens delays </s>, exactly like transformers
    torch_generator = _torch_generator(varied_model_dir)
    short = torch_generator.generate(varied_inputs, 12, min_new_tokens=6)
    assert generator.generate(varied_inputs, 12, min_new_tokens=6) == short
    assert all(6 <= len(ids) <= 12 for ids in short)


def test_fp32_beams_mostly_equal_torch(varied_model_dir, varied_inputs):
    pytest.importorskip("ctranslate2")
    expected = _torch_generator(varied_model_dir).generate(varied_inputs, 40, num_beams=4, num_return_sequences=2)
    got = _ct2_generator(varied_model_dir, "float32").generate(varied_inputs, 40, num_beams=4, num_return_sequences=2)
    assert len(got) == len(expected) == 2 * len(varied_inputs)
    same = sum(a == b for a, b in zip(expected, got)) / len(expected)
    assert same >= 0.85, f"only {same:.0%} of beam outputs equal transformers'"


def test_int8_log_probs_close_to_torch(varied_model_dir, varied_inputs):
    """int8 weights change each token's log-probability by little (teacher-forced on torch's outputs)."""
    pytest.importorskip("ctranslate2")
    from restore.model import load_pretrained

    targets = _torch_generator(varied_model_dir).generate(varied_inputs, 24)
    model = load_pretrained(varied_model_dir).eval()
    per_type = {}
    for compute_type in ("float32", "int8"):
        generator = _ct2_generator(varied_model_dir, compute_type)
        vocab = generator.vocabulary
        scored = generator.translator.score_batch(
            [[vocab[i] for i in ids] for ids in varied_inputs], [[vocab[i] for i in ids] for ids in targets]
        )
        diffs = []
        for source, target, result in zip(varied_inputs, targets, scored):
            with torch.no_grad():
                logits = model(
                    input_ids=torch.tensor([source]), labels=torch.tensor([target + [model.config.eos_token_id]])
                ).logits
            reference = logits.log_softmax(-1)[0, torch.arange(len(target) + 1), target + [model.config.eos_token_id]]
            diffs.append((reference - torch.tensor(result.log_probs)).abs())
        per_type[compute_type] = torch.cat(diffs)
    assert per_type["float32"].max() < 1e-3
    assert per_type["int8"].mean() < 0.05, f"int8 changes log-probs by {per_type['int8'].mean():.3f} on average"


def test_int8_agrees_with_fp32(calmer_model_dir, varied_inputs):
    pytest.importorskip("ctranslate2")
    expected = _torch_generator(calmer_model_dir).generate(varied_inputs, 32)
    assert len(set(map(tuple, expected))) > 3
    got = _ct2_generator(calmer_model_dir, "int8").generate(varied_inputs, 32)
    same = sum(a == b for a, b in zip(expected, got)) / len(expected)
    assert same >= 0.9, f"only {same:.0%} of int8 outputs equal fp32 torch's"


def test_restorer_outputs_equal_across_backends(varied_model_dir):
    pytest.importorskip("ctranslate2")
    from restore.backend_ct2 import load_ctranslate2_generator
    from restore.infer import Restorer

    expected = Restorer.from_pretrained(varied_model_dir, device="cpu", backend="torch", faithful=False).restore(DOCUMENT)
    restorer = Restorer.from_pretrained(
        varied_model_dir, device="cpu", backend=load_ctranslate2_generator, compute_type="float32", faithful=False
    )
    assert restorer.restore(DOCUMENT) == expected
    assert expected.count("\n\n") >= 1  # the heading's chunk was reassembled


@pytest.mark.parametrize("backend", ["torch", "ctranslate2"])
def test_every_backend_restores_faithfully(varied_model_dir, backend):
    """Verify-and-repair holds whatever the engine (int8 included): every chunk corrupts back."""
    if backend == "ctranslate2":
        pytest.importorskip("ctranslate2")
    from restore.chunking import chunk_text
    from restore.faithful import check_content
    from restore.infer import Restorer

    restorer = Restorer.from_pretrained(varied_model_dir, device="cpu", backend=backend)
    chunks = [c for line in DOCUMENT.splitlines() for c in chunk_text(line, restorer.chunking)]
    outputs = restorer.restore_chunks(chunks)
    assert all(check_content(output, chunk) for output, chunk in zip(outputs, chunks))
    assert restorer.stats.faithful.chunks == len(chunks) and restorer.stats.faithful.still_unfaithful_content == 0


def test_conversion_is_cached_beside_the_model(model_dir):
    pytest.importorskip("ctranslate2")
    from restore.backend_ct2 import MARKER, converted_model_dir

    first = converted_model_dir(model_dir, "int8")
    assert first == model_dir / "ctranslate2-int8"
    assert (first / "model.bin").is_file()
    marker = json.loads((first / MARKER).read_text())
    assert marker["quantization"] == "int8"
    stamp = (first / "model.bin").stat().st_mtime_ns
    assert converted_model_dir(model_dir, "int8") == first
    assert (first / "model.bin").stat().st_mtime_ns == stamp  # reused, not converted again
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".")]  # no temporary directory left


def test_stale_conversion_is_redone(model_dir):
    pytest.importorskip("ctranslate2")
    from restore.backend_ct2 import MARKER, converted_model_dir, model_fingerprint

    target = converted_model_dir(model_dir, "float32")
    (target / MARKER).write_text(json.dumps({"source_sha256": "0" * 64, "quantization": "float32"}))
    assert converted_model_dir(model_dir, "float32") == target
    assert json.loads((target / MARKER).read_text())["source_sha256"] == model_fingerprint(model_dir)


def test_read_only_model_dir_converts_into_the_user_cache(model_dir, tmp_path, monkeypatch):
    pytest.importorskip("ctranslate2")
    import restore.backend_ct2 as backend_ct2

    real = backend_ct2._convert_atomically

    def read_only_model_dir(source, target, *args):
        if target.parent == model_dir:  # chmod does not stop root: simulate the refusal
            raise PermissionError(13, "Permission denied", str(target))
        return real(source, target, *args)

    monkeypatch.setattr(backend_ct2, "_convert_atomically", read_only_model_dir)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    target = backend_ct2.converted_model_dir(model_dir, "int8")
    assert target.parent == tmp_path / "cache" / "restore" / "ctranslate2"
    assert target.name == backend_ct2.model_fingerprint(model_dir)[:16] + "-int8"
    assert not (model_dir / "ctranslate2-int8").exists()
    assert backend_ct2.converted_model_dir(model_dir, "int8") == target  # found again without converting


def test_unconvertible_model_is_restore_error(model_dir):
    pytest.importorskip("ctranslate2")
    from restore.backend_ct2 import converted_model_dir

    config = json.loads((model_dir / "config.json").read_text())
    config["activation_function"] = "no-such-activation"
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(RestoreError, match="CTranslate2 cannot convert"):
        converted_model_dir(model_dir, "int8")
    assert not [p for p in model_dir.iterdir() if p.name.startswith((".ctranslate2", "ctranslate2"))]


# --- choosing the backend (Restorer and CLI) ---------------------------------------------------------
def _infer_cli(capsys, *argv: str) -> tuple[int, str, str]:
    from restore.cli import main

    code = main(["infer", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_auto_without_package_restores_with_torch(no_ctranslate2, model_dir):
    from restore.backends import TorchGenerator
    from restore.infer import Restorer

    restorer = Restorer.from_pretrained(model_dir, device="cpu", backend="auto")
    assert isinstance(restorer.generator, TorchGenerator)
    assert restorer.restore(DOCUMENT)


def test_cli_explicit_ctranslate2_without_package_is_one_line(no_ctranslate2, model_dir, tmp_path, capsys):
    source = tmp_path / "doc.txt"
    source.write_text(DOCUMENT, encoding="utf-8")
    code, out, err = _infer_cli(capsys, str(source), "--model", str(model_dir), "--backend", "ctranslate2")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("restore infer: error: the ctranslate2 backend needs")
    assert "Traceback" not in err


def test_cli_auto_without_package_uses_torch(no_ctranslate2, model_dir, tmp_path, capsys):
    source = tmp_path / "doc.txt"
    source.write_text(DOCUMENT, encoding="utf-8")
    code, out, err = _infer_cli(capsys, str(source), "--model", str(model_dir))
    assert code == 0 and out.strip()
    assert not any(model_dir.glob("ctranslate2-*"))


def test_cli_auto_with_package_uses_ctranslate2_int8(model_dir, tmp_path, capsys):
    pytest.importorskip("ctranslate2")
    source = tmp_path / "doc.txt"
    source.write_text(DOCUMENT, encoding="utf-8")
    code, auto_out, _ = _infer_cli(capsys, str(source), "--model", str(model_dir), "--device", "cpu")
    assert code == 0 and (model_dir / "ctranslate2-int8" / "model.bin").is_file()
    code, torch_out, _ = _infer_cli(capsys, str(source), "--model", str(model_dir), "--backend", "torch")
    assert code == 0 and auto_out == torch_out


def test_restorer_takes_the_backends_batch_budget(model_dir):
    pytest.importorskip("ctranslate2")
    from restore.backend_ct2 import CTranslate2Generator
    from restore.infer import Restorer

    restorer = Restorer.from_pretrained(model_dir, device="cpu", backend="ctranslate2")
    assert isinstance(restorer.generator, CTranslate2Generator) and restorer.generator.compute_type == "int8"
    assert restorer.batch_tokens == restorer.generator.batch_tokens
    assert Restorer.from_pretrained(model_dir, device="cpu", backend="ctranslate2", batch_tokens=999).batch_tokens == 999
    with pytest.raises(RestoreError, match="static-cache"):
        Restorer.from_pretrained(model_dir, device="cpu", backend="ctranslate2", static_cache=True)
    # auto with a torch-only option stays on torch
    assert not isinstance(Restorer.from_pretrained(model_dir, device="cpu", backend="auto", static_cache=True).generator, CTranslate2Generator)
