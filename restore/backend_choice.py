"""Which generation backend a run uses, and what every backend shares; light to import.

A backend (:mod:`restore.backends` for PyTorch, :mod:`restore.backend_ct2` for CTranslate2)
runs the model on one batch. This module names them (:data:`BACKEND_NAMES`), the compute
types CTranslate2 may use (:data:`COMPUTE_TYPE_CHOICES`), whether the optional ``ctranslate2``
package is installed, which engine and compute type ``--backend``/``--compute-type`` give on a
device (:func:`choose_backend`), and the special ids no backend ever generates
(:func:`never_generated_ids`). It imports neither torch nor ctranslate2, so the command line
can use it before anything heavy loads, and both backends build on it (the arrows run one way:
``backends`` and ``backend_ct2`` import this module, never each other at import time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from restore.errors import RestoreError

# Backends by name (restore.backends.BACKENDS maps each to its loader); ``auto`` picks one (choose_backend).
BACKEND_NAMES = ("torch", "ctranslate2")
BACKEND_CHOICES = ("auto", *BACKEND_NAMES)  # --backend
# Compute types a user may ask for; the default per device is choose_backend's.
QUANTIZATIONS = ("int8", "float32", "bfloat16", "int8_float32", "int8_bfloat16")
COMPUTE_TYPE_CHOICES = ("auto", *QUANTIZATIONS)  # --compute-type
INSTALL_HINT = "pip install 'restore[ctranslate2]' (or use --backend torch)"


def import_ctranslate2() -> Any:
    """The ``ctranslate2`` module, or a one-line :class:`RestoreError` saying how to install it."""
    try:
        import ctranslate2
    except ImportError as e:  # also when sys.modules["ctranslate2"] is None
        raise RestoreError(f"the ctranslate2 backend needs the optional package ctranslate2 ({e}); {INSTALL_HINT}") from None
    return ctranslate2


def ctranslate2_available() -> bool:
    """Whether the optional ``ctranslate2`` package can be imported."""
    try:
        import_ctranslate2()
    except RestoreError:
        return False
    return True


def never_generated_ids(config) -> list[int]:
    """Special ids a restoration never contains: ``<pad>`` and ``<s>`` of a model config (every backend).

    >>> from types import SimpleNamespace
    >>> never_generated_ids(SimpleNamespace(pad_token_id=0, bos_token_id=2, eos_token_id=3))
    [0, 2]
    """
    return sorted({config.pad_token_id, config.bos_token_id} - {config.eos_token_id, None})


@dataclass(frozen=True)
class BackendChoice:
    """The engine to run, the options it gets (e.g. ``compute_type``) and why it was chosen."""

    name: str
    options: dict = field(default_factory=dict)
    reason: str = ""


# int8 is used without VNNI only for a model whose int8 BLEU was measured this close to float32's there.
INT8_MAX_BLEU_DROP = 0.3


def int8_measured_without_vnni(int8_check: dict | None, library: str) -> bool:
    """Whether a model's ``restore.json`` ``int8_check`` (written by ``scripts/eval_matrix.py --preset
    int8 --record``) measured its CTranslate2 int8 within :data:`INT8_MAX_BLEU_DROP` BLEU of float32
    with ``library``'s kernels kept from VNNI (the AVX2 limits).

    >>> check = {"settings": [{"library": "MKL", "vnni": False, "float32_bleu": 37.29, "int8_bleu": 37.07}]}
    >>> int8_measured_without_vnni(check, "MKL"), int8_measured_without_vnni(check, "oneDNN")
    (True, False)
    >>> check["settings"][0]["int8_bleu"] = 36.9
    >>> int8_measured_without_vnni(check, "MKL"), int8_measured_without_vnni(None, "MKL")
    (False, False)
    """
    rows = [
        row for row in ((int8_check or {}).get("settings") or [])
        if isinstance(row, dict) and row.get("library") == library and row.get("vnni") is False
    ]  # fmt: skip
    try:
        return bool(rows) and all(row["float32_bleu"] - row["int8_bleu"] <= INT8_MAX_BLEU_DROP for row in rows)
    except (KeyError, TypeError):
        return False


def default_compute_type(device_type: str, int8_check: dict | None = None) -> tuple[str, str]:
    """CTranslate2's compute type for a device, and why: bf16 on CUDA; on the CPU int8 where this CPU
    computes it accurately (VNNI, :mod:`restore.cpu`), or where the model's own ``int8_check`` measured
    its int8 within 0.3 BLEU of float32 without VNNI; else float32. (Without VNNI int8 products
    saturate: on random test models log-probs drift 13x more and 39% of greedy outputs differ from
    fp32's, against 8% with VNNI; the trained restore-small lost 0.21-0.22 BLEU there, against
    0.09-0.11 with VNNI. CTranslate2 float32 equals PyTorch's exactly.)

    >>> default_compute_type("cuda")
    ('bfloat16', 'bf16 on CUDA')
    """
    if device_type == "cuda":
        return "bfloat16", "bf16 on CUDA"
    from restore.cpu import int8_support

    support = int8_support()
    if support.accurate:
        return "int8", f"int8: {support.reason}"
    if support.library and int8_measured_without_vnni(int8_check, support.library):
        return "int8", f"int8: {support.reason}, but this model's int8 was measured within {INT8_MAX_BLEU_DROP} BLEU of float32 there"
    return "float32", f"float32, not int8: {support.reason}"


def choose_backend(
    requested: str, device_type: str, *, torch_only: bool = False, compute_type: str = "auto", int8_check: dict | None = None
) -> BackendChoice:
    """The engine for ``--backend`` (and ``--compute-type``) on a device, with the reason.

    ``auto``: CTranslate2 on the CPU when it is installed (the fastest CPU path), in int8 where
    this CPU computes int8 accurately or the model's ``int8_check`` says it may (see
    :func:`default_compute_type`), else float32; PyTorch on CUDA, without the package, or
    when a torch-only option such as ``--static-cache`` is asked for.

    >>> choose_backend("torch", "cpu").name, choose_backend("auto", "cuda").reason
    ('torch', 'auto: PyTorch on CUDA')
    >>> choose_backend("auto", "cpu", torch_only=True).reason
    'auto: --static-cache is a PyTorch option'
    """
    if requested not in BACKEND_CHOICES:
        raise RestoreError(f"unknown backend {requested!r}: choose one of {', '.join(BACKEND_CHOICES)}")
    if compute_type not in COMPUTE_TYPE_CHOICES:
        raise RestoreError(f"unknown compute type {compute_type!r}: choose one of {', '.join(COMPUTE_TYPE_CHOICES)}")
    if requested == "auto":
        if device_type != "cpu":
            return BackendChoice("torch", reason="auto: PyTorch on CUDA")
        if torch_only:
            return BackendChoice("torch", reason="auto: --static-cache is a PyTorch option")
        if not ctranslate2_available():
            return BackendChoice("torch", reason="auto: ctranslate2 is not installed")
        requested = "ctranslate2"
    if requested == "torch":
        if compute_type != "auto":
            raise RestoreError("--compute-type is an option of the ctranslate2 backend (PyTorch runs fp32 on the CPU, bf16 on CUDA)")
        return BackendChoice("torch", reason="--backend torch")
    if compute_type != "auto":
        return BackendChoice("ctranslate2", {"compute_type": compute_type}, f"--compute-type {compute_type}")
    chosen, why = default_compute_type(device_type, int8_check)
    return BackendChoice("ctranslate2", {"compute_type": chosen}, why)
