"""CTranslate2 backend: the fast CPU path (int8 weights, one decoding worker per core).

CTranslate2 is a dependency of ``restore`` wherever it publishes wheels (Linux
x86_64/aarch64, macOS, 64-bit Windows). Without the package, asking for this
backend is one clear :class:`RestoreError`; ``--backend auto`` then uses PyTorch (see :func:`restore.backend_choice.choose_backend`, which also picks the
compute type: int8 only where this CPU computes it accurately, :mod:`restore.cpu`).

How a model directory becomes a CTranslate2 model:

- CTranslate2's own converter (``ctranslate2.converters.TransformersConverter``)
  converts the checkpoint once; the result is cached next to the model
  (``MODEL/ctranslate2-int8/``), or, where the model directory is read-only or
  installed with the package (``site-packages``: uninstalling must not leave
  files there), under ``~/.cache/restore/ctranslate2/HASH-int8/`` (``HASH``: the
  model files' content). A stale conversion (the model was retrained in place) is redone.
  Conversion writes a temporary directory and renames it, so a crash or a
  concurrent run never leaves a half-written model behind.
- Shim: CTranslate2's BART loader (4.x) reads ``config.normalize_before``, a
  fairseq setting that transformers 5 no longer puts in ``BartConfig``; the
  converter fails with ``AttributeError: 'BartConfig' object has no attribute
  'normalize_before'``. transformers' BART is post-LayerNorm, so the shim sets
  it to ``False`` (what old ``BartConfig`` files said) before the loader runs.

Decoding is mapped to what :class:`~restore.backends.TorchGenerator` does:
at most ``max_new_tokens`` generated ids, stop at ``</s>`` (not returned), no
forced ``</s>``, no input truncation. Greedy: ``<pad>`` and ``<s>`` are never
generated, and fp32 outputs equal PyTorch's exactly. Beam search: the length
penalty with ``</s>`` counted in the length (as transformers does); tokens are
not suppressed there, because CTranslate2 would renormalise the log-probabilities
without them while transformers masks them after the softmax (a trained model
never predicts them anyway). transformers' beam stopping heuristic has no
CTranslate2 equivalent, so beam outputs agree on most, not all, inputs
(:data:`BEAM_PATIENCE`). int8 weights agree with fp32 on most outputs.

Threads: CTranslate2 runs ``inter_threads`` batches at once, each on
``intra_threads`` cores. For our small models one worker per core
(``inter_threads=cores, intra_threads=1``) is about twice as fast as one worker
on all cores, CTranslate2's usual setting (measured on 2 cores, 13-15M BART,
256 chunks x 64 tokens, int8: 13.5k vs 6.5k tokens/s; see
``scripts/bench_infer.py``): the matrices of one decoding step are too small to
split well across cores. So every batch is split into equal sub-batches, a
multiple of the workers (at most :data:`MAX_ROWS_PER_WORKER` rows each).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

from restore.backend_choice import QUANTIZATIONS, default_compute_type, import_ctranslate2, never_generated_ids
from restore.errors import RestoreError

# Rows per sub-batch: tokens/s is flat from 8 to 64 rows per worker and drops at 128 (measured, int8).
MAX_ROWS_PER_WORKER = 64
# Default --batch-tokens with this backend: room for one full sub-batch per worker.
BATCH_TOKENS_PER_WORKER = 12288
# Beam search keeps collecting finished hypotheses until beams * patience have ended: closest
# to transformers' default stopping (measured on a random tiny model: 95% identical outputs
# at 2 vs 82% at 1; transformers' stopping rule itself has no CTranslate2 equivalent).
BEAM_PATIENCE = 2.0
MARKER = "restore-conversion.json"


# --- conversion (cached) ---------------------------------------------------------------------------
def model_fingerprint(model_dir: str | Path) -> str:
    """SHA-256 of the files a conversion depends on (config, generation config, tokenizer, weights)."""
    path = Path(model_dir)
    files = [path / n for n in ("config.json", "generation_config.json", "tokenizer.json")] + sorted(path.glob("*.safetensors"))
    digest = hashlib.sha256()
    for file in files:
        if file.is_file():
            digest.update(file.name.encode() + b"\0")
            with open(file, "rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
    return digest.hexdigest()


def cache_root() -> Path:
    """Where conversions of read-only model directories go (``$XDG_CACHE_HOME/restore/ctranslate2``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "restore" / "ctranslate2"


def converted_model_dir(model_dir: str | Path, quantization: str = "int8") -> Path:
    """A CTranslate2 conversion of ``model_dir`` with ``quantization`` weights, converting on first use.

    Looks for an up-to-date conversion next to the model, then in :func:`cache_root`;
    converts into the model directory when it is writable, else into the cache.
    """
    if quantization not in QUANTIZATIONS:
        raise RestoreError(f"unknown CTranslate2 quantization {quantization!r}: choose one of {', '.join(QUANTIZATIONS)}")
    model_dir = Path(model_dir)
    fingerprint = model_fingerprint(model_dir)
    beside = model_dir / f"ctranslate2-{quantization}"
    cached = cache_root() / f"{fingerprint[:16]}-{quantization}"
    for candidate in (beside, cached):
        if _is_conversion_of(candidate, fingerprint, quantization):
            return candidate
    for target in (cached,) if installed_with_package(model_dir) else (beside, cached):
        try:
            return _convert_atomically(model_dir, target, quantization, fingerprint)
        except PermissionError:  # read-only model directory: fall back to the user cache
            continue
        except OSError as e:
            if e.errno != 30:  # EROFS (read-only file system) falls back too
                raise RestoreError(f"cannot write the CTranslate2 conversion to {target.parent} ({e})") from None
    raise RestoreError(f"cannot write a CTranslate2 conversion of {model_dir} (tried {beside} and {cached})")


def installed_with_package(model_dir: str | Path) -> bool:
    """Whether ``model_dir`` lies in an installation's ``site-packages`` (pip owns those files)."""
    import sysconfig

    path = Path(model_dir).resolve()
    roots = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
    return any(path.is_relative_to(root) for root in roots)


def _is_conversion_of(directory: Path, fingerprint: str, quantization: str) -> bool:
    try:
        marker = json.loads((directory / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return marker.get("source_sha256") == fingerprint and marker.get("quantization") == quantization


def _convert_atomically(model_dir: Path, target: Path, quantization: str, fingerprint: str) -> Path:
    """Convert into a temporary sibling of ``target``, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        convert_model(model_dir, scratch / "model", quantization)
        marker = {"source_sha256": fingerprint, "quantization": quantization, "ctranslate2": import_ctranslate2().__version__}
        (scratch / "model" / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        if target.exists():  # stale (the model changed): move it aside, it is removed below
            target.rename(scratch / "stale")
        try:
            (scratch / "model").rename(target)
        except OSError:  # a concurrent run put its conversion there first: use that one
            if not _is_conversion_of(target, fingerprint, quantization):
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def convert_model(model_dir: str | Path, output_dir: str | Path, quantization: str = "int8") -> Path:
    """Convert a transformers seq2seq checkpoint with CTranslate2's own converter (plus the BART shim)."""
    ctranslate2 = import_ctranslate2()

    class _Converter(ctranslate2.converters.TransformersConverter):
        def load_model(self, model_class, model_name_or_path, **kwargs):
            model = super().load_model(model_class, model_name_or_path, **kwargs)
            _add_bart_normalize_before(model.config)
            return model

    try:
        return Path(_Converter(str(model_dir)).convert(str(output_dir), quantization=quantization, force=True))
    except (ValueError, KeyError, AttributeError, NotImplementedError, RuntimeError) as e:
        raise RestoreError(f"{model_dir}: CTranslate2 cannot convert this model ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def _add_bart_normalize_before(config: Any) -> None:
    """transformers 5 dropped fairseq's ``normalize_before`` from ``BartConfig``; BART is post-LayerNorm."""
    if getattr(config, "model_type", None) == "bart" and not hasattr(config, "normalize_before"):
        config.normalize_before = False


# --- the generator ---------------------------------------------------------------------------------
def sub_batch_rows(rows: int, workers: int, max_rows: int) -> int:
    """Rows per sub-batch: equal sub-batches, as many as a multiple of ``workers``, at most ``max_rows`` each
    (so that no worker idles while another finishes an extra one).

    >>> sub_batch_rows(190, 2, 64), sub_batch_rows(100, 2, 64), sub_batch_rows(3, 2, 64), sub_batch_rows(1, 4, 64)
    (48, 50, 2, 1)
    """
    rounds = math.ceil(rows / (workers * max_rows))
    return max(1, math.ceil(rows / (workers * rounds)))


def read_vocabulary(ct2_dir: str | Path) -> list[str]:
    """The target vocabulary of a converted model, in id order (``shared`` or ``target`` file, JSON or text)."""
    path = Path(ct2_dir)
    for name in ("shared_vocabulary", "target_vocabulary"):
        if (path / f"{name}.json").is_file():
            return json.loads((path / f"{name}.json").read_text(encoding="utf-8"))
        if (path / f"{name}.txt").is_file():
            return (path / f"{name}.txt").read_text(encoding="utf-8").split("\n")[:-1]
    raise RestoreError(f"{path}: not a CTranslate2 model (no vocabulary file)")


class CTranslate2Generator:
    """Generate with a CTranslate2 model (a :class:`~restore.backends.Generator`).

    Ids go in and come out (the model's vocabulary maps them to CTranslate2's
    tokens and back); conventions as in :mod:`restore.backends`. ``eos_id`` and
    ``never_ids`` (ids never generated) come from the model's config.

    ``workers`` batches run at once on ``threads_per_worker`` cores each
    (defaults: one worker per available core, one core each, on the CPU).
    """

    def __init__(
        self,
        ct2_dir: str | Path,
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        eos_id: int,
        never_ids: Sequence[int],
        workers: int | None = None,
        threads_per_worker: int | None = None,
        max_rows_per_worker: int = MAX_ROWS_PER_WORKER,
        reason: str = "",
    ):
        ctranslate2 = import_ctranslate2()
        self.reason = reason  # why this engine and compute type were chosen (for the summary line)
        self.vocabulary = read_vocabulary(ct2_dir)
        self.index = {token: i for i, token in enumerate(self.vocabulary)}
        if len(self.index) != len(self.vocabulary):
            raise RestoreError(f"{ct2_dir}: the vocabulary has duplicate tokens; ids cannot be mapped")
        self.eos_token = self.vocabulary[eos_id]
        self.never = [[self.vocabulary[i]] for i in never_ids if i != eos_id]
        from restore.device import available_cpus

        cpu = device == "cpu"
        self.workers = workers or (available_cpus() if cpu else 1)
        threads = threads_per_worker or (1 if cpu else 0)
        self.threads_per_worker = threads
        self.max_rows_per_worker = max_rows_per_worker
        try:
            self.translator = ctranslate2.Translator(
                str(ct2_dir), device=device, compute_type=compute_type, inter_threads=self.workers, intra_threads=threads
            )
        except (RuntimeError, ValueError) as e:
            raise RestoreError(f"{ct2_dir}: CTranslate2 cannot load the model on {device} ({str(e).splitlines()[0]})") from None
        self.compute_type = compute_type
        self.device = device

    def describe(self) -> str:
        """The engine as the summary line shows it, e.g. ``ctranslate2 int8, cpu, 2 workers x 1 thread``."""
        if self.device != "cpu":
            text = f"ctranslate2 {self.compute_type}, {self.device}"
        else:
            from restore.textio import plural

            text = f"ctranslate2 {self.compute_type}, cpu, {plural(self.workers, 'worker')} x {plural(self.threads_per_worker, 'thread')}"
        return f"{text} ({self.reason})" if self.reason else text

    @property
    def batch_tokens(self) -> int:
        """A token budget per :meth:`generate` call that gives every worker a full sub-batch."""
        return BATCH_TOKENS_PER_WORKER * self.workers

    def generate(
        self,
        batch: list[list[int]],
        max_new_tokens: int,
        num_beams: int = 1,
        num_return_sequences: int = 1,
        *,
        length_penalty: float = 1.0,
        min_new_tokens: int = 0,
    ) -> list[list[int]]:
        if not batch:
            return []
        if num_return_sequences > num_beams:
            raise RestoreError(f"num_return_sequences ({num_return_sequences}) must not exceed num_beams ({num_beams})")
        greedy = num_beams == 1
        rows = sub_batch_rows(len(batch), self.workers, self.max_rows_per_worker)
        results = self.translator.translate_batch(
            [[self.vocabulary[i] for i in ids] for ids in batch],
            max_batch_size=rows,  # CTranslate2 sorts by length, splits, and runs the sub-batches on its workers
            batch_type="examples",
            beam_size=num_beams,
            num_hypotheses=num_return_sequences,
            patience=1.0 if greedy else BEAM_PATIENCE,
            length_penalty=length_penalty,
            max_decoding_length=max_new_tokens,
            min_decoding_length=min_new_tokens,
            max_input_length=0,  # no truncation: the Restorer fits inputs to the encoder
            end_token=self.eos_token,
            # Beam scores are divided by the length with </s> counted, as in transformers.
            return_end_token=not greedy,
            suppress_sequences=self.never if greedy else None,
        )
        index, eos = self.index, self.eos_token
        outputs = []
        for result in results:
            for hypothesis in result.hypotheses:
                if hypothesis and hypothesis[-1] == eos:
                    hypothesis = hypothesis[:-1]
                outputs.append([index[t] for t in hypothesis[:max_new_tokens]])
        return outputs


def load_ctranslate2_generator(
    model_dir: str | Path,
    device: Any,
    dtype: Any = None,
    *,
    compute_type: str | None = None,
    static_cache: bool = False,
    **options,
) -> CTranslate2Generator:
    """The CTranslate2 backend for a model directory: convert (cached) and load.

    ``device``: a ``torch.device`` or ``"cpu"``/``"cuda"``; ``compute_type``: weights
    (default: :func:`restore.backend_choice.default_compute_type` for the device and CPU); ``dtype``
    is ignored (the torch backend's). ``options`` go to :class:`CTranslate2Generator`
    (``workers``, ``reason``, ...).
    """
    from transformers import AutoConfig

    ctranslate2 = import_ctranslate2()
    if static_cache:
        raise RestoreError("--static-cache is an option of the torch backend (use --backend torch)")
    device_type = getattr(device, "type", str(device)).split(":")[0]
    if device_type == "cuda" and ctranslate2.get_cuda_device_count() == 0:
        raise RestoreError("this ctranslate2 build cannot use CUDA; use --backend torch on the GPU")
    if not compute_type:
        compute_type, why = default_compute_type(device_type)
        options.setdefault("reason", why)
    ct2_dir = converted_model_dir(model_dir, compute_type)
    config = AutoConfig.from_pretrained(model_dir)
    return CTranslate2Generator(
        ct2_dir, device=device_type, compute_type=compute_type, eos_id=config.eos_token_id,
        never_ids=never_generated_ids(config), **options,
    )  # fmt: skip
