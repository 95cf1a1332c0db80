"""The one device/dtype resolver: cuda -> bf16, cpu -> fp32 (never fp16); CPU cores and threads.

torch is imported where it is used, so that commands report bad input before loading it.
:func:`prepare_model_run` sets up a process that runs a model (threads, quiet transformers).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from restore.errors import RestoreError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")
# PyTorch CPU threads by default (see default_cpu_threads): one, which does not collapse on a busy machine.
MAX_DEFAULT_THREADS = 1
# Environment variables by which a user chooses PyTorch's CPU thread count (then we leave it alone).
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCH_NUM_THREADS")


def threads_chosen_by_user() -> bool:
    """Whether one of :data:`THREAD_ENV_VARS` is set (non-empty)."""
    return any(os.environ.get(name) for name in THREAD_ENV_VARS)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; ``cuda`` without CUDA is an error.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RestoreError("--device cuda: no CUDA GPU is available on this machine (use --device auto or cpu)")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise RestoreError(f"unknown device {name!r}: choose one of {', '.join(DEVICE_CHOICES)}")


def dtype_for(device: torch.device) -> torch.dtype:
    """bf16 on CUDA (fast, no loss scaling), fp32 on the CPU.

    >>> import torch
    >>> dtype_for(torch.device("cpu"))
    torch.float32
    """
    import torch

    return torch.bfloat16 if device.type == "cuda" else torch.float32


def describe(device: torch.device) -> str:
    """A short human-readable name of the device, for summaries and reports."""
    import torch

    from restore.textio import plural

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({plural(torch.get_num_threads(), 'thread')})"


def available_cpus() -> int:
    """CPU cores this process may use (its affinity mask, else all of them)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_cpu_threads() -> int:
    """PyTorch's intra-op threads when the user set none: MAX_DEFAULT_THREADS at most.

    Decoding our small models runs many tiny matrix products per step; split across all cores
    they wait on each other, and on a machine shared with other jobs a descheduled thread stalls
    the rest (measured with ``scripts/bench_threads.py``: see the README, Performance).
    """
    return max(1, min(available_cpus(), MAX_DEFAULT_THREADS))


def prepare_model_run() -> None:
    """Threads and logging for a process that runs a model (call it once its inputs are checked).

    PyTorch gets :func:`default_cpu_threads` threads unless the user set a thread count
    (:func:`threads_chosen_by_user`); transformers shows no "Loading weights" bars or notices
    (a run shows its own progress and one summary line).
    """
    import torch
    from transformers.utils import logging as hf_logging

    if not threads_chosen_by_user():
        torch.set_num_threads(default_cpu_threads())
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
