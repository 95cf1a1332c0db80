"""The CTranslate2 backend: same outputs as PyTorch (fp32), int8 where the CPU computes it accurately,
cached conversion, clear errors.

CI installs ``ctranslate2`` (the ``restore[ctranslate2]`` extra, see ``.ci/run``), so these tests
run there; without the package they skip. The tests of a missing package simulate its absence
and run everywhere. CI machines differ (AVX-512 VNNI on some, AVX2 only on others): tests whose
expectation depends on the CPU read :func:`restore.cpu.int8_support` and assert what holds
for that CPU, and one test also runs a child process under an AVX2 limit
(``ONEDNN_MAX_CPU_ISA``/``MKL_ENABLE_INSTRUCTIONS``/``CT2_FORCE_CPU_ISA``), so both kinds are
exercised on a VNNI machine.
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
def one_thread(monkeypatch):
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
    from restore.backend_choice import ctranslate2_available, import_ctranslate2

    assert not ctranslate2_available()
    with pytest.raises(RestoreError) as error:
        import_ctranslate2()
    message = str(error.value)
    assert "\n" not in message
    assert "pip install 'restore[ctranslate2]'" in message and "--backend torch" in message


def test_auto_without_package_is_torch(no_ctranslate2):
    from restore.backend_choice import choose_backend

    assert choose_backend("auto", "cpu").name == "torch"
    assert choose_backend("auto", "cpu").reason == "auto: ctranslate2 is not installed"
    assert choose_backend("auto", "cuda").name == "torch"
    assert choose_backend("ctranslate2", "cpu").name == "ctranslate2"  # explicit: loading it then fails clearly


def test_every_backend_name_has_a_loader():
    from restore.backend_choice import BACKEND_NAMES
    from restore.backends import BACKENDS

    assert tuple(BACKENDS) == BACKEND_NAMES  # --backend's choices (backend_choice) are the loaders (backends)


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
    from restore.backend_choice import choose_backend

    assert choose_backend("auto", "cpu").name == "ctranslate2"
    assert choose_backend("auto", "cuda").name == "torch"


def test_auto_compute_type_follows_the_cpus_int8_accuracy():
    """int8 where the CPU has VNNI for the int8 library, float32 elsewhere; the reason says which."""
    pytest.importorskip("ctranslate2")
    from restore.backend_choice import choose_backend
    from restore.cpu import int8_support

    support = int8_support()
    choice = choose_backend("auto", "cpu")
    assert choice.options == {"compute_type": "int8" if support.accurate else "float32"}
    assert support.reason in choice.reason
    assert choose_backend("auto", "cpu", compute_type="int8").options == {"compute_type": "int8"}  # the user's choice wins
    assert choose_backend("ctranslate2", "cuda").options == {"compute_type": "bfloat16"}
    with pytest.raises(RestoreError, match="option of the ctranslate2 backend"):
        choose_backend("torch", "cpu", compute_type="int8")


@pytest.mark.parametrize(
    "flags, vendor, env, accurate",
    [
        ({"avx2", "avx512f", "avx512_vnni"}, "AuthenticAMD", {}, True),
        ({"avx2", "avx512f", "avx512_vnni"}, "AuthenticAMD", {"ONEDNN_MAX_CPU_ISA": "AVX2"}, False),
        ({"avx2", "avx512f", "avx512_vnni"}, "AuthenticAMD", {"ONEDNN_MAX_CPU_ISA": "avx512_core"}, False),
        ({"avx2", "avx512f", "avx512_vnni"}, "AuthenticAMD", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"}, True),
        ({"avx2", "avx512f", "avx512_vnni"}, "AuthenticAMD", {"MKL_ENABLE_INSTRUCTIONS": "AVX2"}, True),  # MKL not used
        ({"avx2", "avx512f", "avx512_vnni"}, "AuthenticAMD", {"CT2_FORCE_CPU_ISA": "AVX2"}, True),  # own kernels only
        ({"avx2", "avx512f", "avx512_vnni"}, "AuthenticAMD", {"CT2_USE_MKL": "1", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}, False),
        ({"avx2", "avx512f", "avx512_vnni"}, "GenuineIntel", {"MKL_ENABLE_INSTRUCTIONS": "AVX512"}, False),
        ({"avx2", "avx512f", "avx512_vnni"}, "GenuineIntel", {"CT2_USE_MKL": "0", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}, True),
        ({"avx2", "avx_vnni"}, "GenuineIntel", {}, True),
        ({"avx2", "avx512f"}, "GenuineIntel", {}, False),
        ({"avx2"}, "AuthenticAMD", {}, False),
        (set(), "", {}, False),
    ],
)
def test_int8_support_rule(flags, vendor, env, accurate):
    from restore.cpu import int8_support

    assert int8_support(flags=flags, vendor=vendor, env=env).accurate is accurate


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
    """float32 log-probabilities equal PyTorch's everywhere; int8 ones are close where the CPU has
    VNNI, and elsewhere ``--backend auto`` does not use int8 (teacher-forced on torch's outputs)."""
    pytest.importorskip("ctranslate2")
    from restore.backend_choice import choose_backend
    from restore.cpu import int8_support
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
    assert per_type["float32"].max() < 1e-3  # on every CPU
    if int8_support().accurate:  # VNNI: int8 products summed in 32 bits
        assert per_type["int8"].mean() < 0.05, f"int8 changes log-probs by {per_type['int8'].mean():.3f} on average"
    else:  # no VNNI: int8 drifts (0.42 measured with ONEDNN_MAX_CPU_ISA=AVX2), so auto must not use it
        assert choose_backend("auto", "cpu").options == {"compute_type": "float32"}


def test_int8_agrees_with_fp32_where_the_cpu_allows_int8(calmer_model_dir, varied_inputs):
    """What ``--backend auto`` runs on this CPU agrees with fp32 PyTorch: int8 with VNNI, float32 without."""
    pytest.importorskip("ctranslate2")
    from restore.backend_choice import choose_backend

    expected = _torch_generator(calmer_model_dir).generate(varied_inputs, 32)
    assert len(set(map(tuple, expected))) > 3
    compute_type = choose_backend("auto", "cpu").options["compute_type"]
    got = _ct2_generator(calmer_model_dir, compute_type).generate(varied_inputs, 32)
    same = sum(a == b for a, b in zip(expected, got)) / len(expected)
    if compute_type == "float32":
        assert same == 1.0, f"only {same:.0%} of float32 outputs equal fp32 torch's"
    else:
        assert same >= 0.9, f"only {same:.0%} of int8 outputs equal fp32 torch's"


# A child process limited to AVX2 (each library reads its limit once, so it cannot be set here).
AVX2_LIMITS = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "CT2_FORCE_CPU_ISA": "AVX2"}
AVX2_CHILD = """
import json, sys, torch
from restore.backend_choice import choose_backend
from restore.backends import load_torch_generator
from restore.backend_ct2 import load_ctranslate2_generator
from restore.cpu import int8_support
path, inputs = sys.argv[1], json.loads(sys.argv[2])
torch.set_num_threads(1)
choice = choose_backend("auto", "cpu")
expected = load_torch_generator(path, torch.device("cpu"), torch.float32).generate(inputs, 32)
got = load_ctranslate2_generator(path, torch.device("cpu"), **choice.options).generate(inputs, 32)
print(json.dumps({"accurate": int8_support().accurate, "options": choice.options, "reason": choice.reason,
                  "same": sum(a == b for a, b in zip(expected, got)) / len(expected)}))
"""


def test_under_an_avx2_limit_auto_uses_float32_and_equals_torch(calmer_model_dir, varied_inputs):
    """On any CPU: with the int8 libraries limited to AVX2, auto picks float32, whose outputs equal PyTorch's."""
    pytest.importorskip("ctranslate2")
    import os
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", AVX2_CHILD, str(calmer_model_dir), json.dumps(varied_inputs)],
        env={**os.environ, **AVX2_LIMITS, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["accurate"] is False and result["options"] == {"compute_type": "float32"}
    assert "ONEDNN_MAX_CPU_ISA=AVX2" in result["reason"] or "MKL_ENABLE_INSTRUCTIONS=AVX2" in result["reason"] or "no VNNI" in result["reason"]
    assert result["same"] == 1.0


INT8_CHECK_CHILD = """
import sys
from restore.cpu import int8_support
from restore.infer import Restorer
restorer = Restorer.from_pretrained(sys.argv[1], device="cpu", backend="auto")
print(int8_support().library + "|" + restorer.generator.describe())
"""


@pytest.mark.parametrize("int8_drop, expected", [(0.21, "int8"), (0.45, "float32")])
def test_without_vnni_auto_follows_the_models_own_int8_measurement(model_dir, tmp_path, int8_drop, expected):
    """Under the AVX2 limits int8 is chosen only for a model whose restore.json records its int8 BLEU
    within 0.3 of float32 without VNNI (scripts/eval_matrix.py --preset int8 --record)."""
    pytest.importorskip("ctranslate2")
    import os
    import shutil
    import subprocess

    model = tmp_path / "checked"
    shutil.copytree(model_dir, model, ignore=shutil.ignore_patterns("ctranslate2-*"))
    payload = json.loads((model / "restore.json").read_text())
    payload["int8_check"] = {"settings": [
        {"library": library, "vnni": False, "float32_bleu": 37.29, "int8_bleu": round(37.29 - int8_drop, 2)}
        for library in ("MKL", "oneDNN")
    ]}  # fmt: skip
    (model / "restore.json").write_text(json.dumps(payload))
    done = subprocess.run(
        [sys.executable, "-c", INT8_CHECK_CHILD, str(model)],
        env={**os.environ, **AVX2_LIMITS, "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(tmp_path / "cache")},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    library, engine = done.stdout.strip().splitlines()[-1].split("|", 1)
    if not library:  # not an x86 CPU with AVX2: int8 is never chosen there
        expected = "float32"
    assert engine.startswith(f"ctranslate2 {expected}, cpu"), engine
    assert ("measured within 0.3 BLEU of float32" in engine) == (expected == "int8"), engine


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
    from restore.faithful_check import check_content
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


def test_cli_auto_with_package_uses_ctranslate2_as_the_cpu_allows(model_dir, tmp_path, capsys):
    pytest.importorskip("ctranslate2")
    source = tmp_path / "doc.txt"
    source.write_text(DOCUMENT, encoding="utf-8")
    from restore.cpu import int8_support

    code, auto_out, err = _infer_cli(capsys, str(source), "--model", str(model_dir), "--device", "cpu")
    compute_type = "int8" if int8_support().accurate else "float32"
    assert code == 0 and (model_dir / f"ctranslate2-{compute_type}" / "model.bin").is_file()
    assert f"ctranslate2 {compute_type}, cpu" in err and int8_support().reason in err  # the summary says what ran and why
    code, torch_out, _ = _infer_cli(capsys, str(source), "--model", str(model_dir), "--backend", "torch")
    assert code == 0 and auto_out == torch_out


def test_restorer_takes_the_backends_batch_budget(model_dir):
    pytest.importorskip("ctranslate2")
    from restore.backend_ct2 import CTranslate2Generator
    from restore.infer import Restorer

    from restore.backend_choice import default_compute_type

    restorer = Restorer.from_pretrained(model_dir, device="cpu", backend="ctranslate2")
    assert isinstance(restorer.generator, CTranslate2Generator)
    assert restorer.generator.compute_type == default_compute_type("cpu")[0]
    assert restorer.batch_tokens == restorer.generator.batch_tokens
    assert Restorer.from_pretrained(model_dir, device="cpu", backend="ctranslate2", batch_tokens=999).batch_tokens == 999
    with pytest.raises(RestoreError, match="static-cache"):
        Restorer.from_pretrained(model_dir, device="cpu", backend="ctranslate2", static_cache=True)
    # auto with a torch-only option stays on torch
    assert not isinstance(Restorer.from_pretrained(model_dir, device="cpu", backend="auto", static_cache=True).generator, CTranslate2Generator)


def test_eval_names_the_ctranslate2_engine_it_ran_on(model_dir, tmp_path, capsys):
    pytest.importorskip("ctranslate2")
    from restore.cli import main
    from restore.cpu import int8_support

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"source": "born 1879 kherson .", "target": "Born in 1879 in Kherson."}) + "\n", encoding="utf-8")
    report = tmp_path / "r.json"
    code = main(["eval", "--model", str(model_dir), "--data", str(pairs), "--device", "cpu", "--no-faithful", "--report", str(report)])
    err = capsys.readouterr().err
    assert code == 0, err
    engine = json.loads(report.read_text(encoding="utf-8"))["engine"]
    compute_type = "int8" if int8_support().accurate else "float32"
    assert (engine["backend"], engine["compute_type"], engine["device"]) == ("ctranslate2", compute_type, "cpu")
    assert engine["threads"] == engine["workers"] * engine["threads_per_worker"] and engine["workers"] >= 1
    assert f"; engine: ctranslate2 {compute_type}, cpu, {engine['workers']} worker" in err and "threads)" not in err, err
