"""Attention kernels and padded shapes on CUDA: the one place that chooses them, for training and inference.

The model's attention runs through PyTorch's ``scaled_dot_product_attention``
(``attn_implementation="sdpa"``), which picks a kernel per call among the ones
enabled. On Hopper GPUs (torch 2.11, transformers 5.x) it prefers cuDNN's, and
cuDNN builds a new execution graph for every new tensor shape: on an H200 the
first ``generate`` on a 256x52 batch took 4.0 s and the same call again 0.31 s.
Token-budget batches and every decoding step bring new shapes, so cuDNN's kernels
are switched off here and the flash and memory-efficient kernels are used (math
stays as the fallback for masks or dtypes the fused kernels do not take).
:data:`SDPA_KERNELS` is the choice; measure on our shapes before changing it
(``scripts/bench_infer.py``).

Padded lengths are rounded up to :data:`PAD_MULTIPLE` (:func:`padded_length`):
shapes then repeat across batches, and the memory-efficient kernel gets aligned
attention masks.
"""

from __future__ import annotations

import torch

# Kernels enabled on CUDA, by name of the switch in torch.backends.cuda (cuDNN's is off: see above).
SDPA_KERNELS = {"flash": True, "mem_efficient": True, "math": True, "cudnn": False}
PAD_MULTIPLE = 8


def round_up(n: int, multiple: int) -> int:
    """``n`` rounded up to a multiple of ``multiple``.

    >>> round_up(1, 8), round_up(8, 8), round_up(9, 8)
    (8, 8, 16)
    """
    return -(-n // multiple) * multiple


def padded_length(n: int, multiple: int = PAD_MULTIPLE) -> int:
    """The length a batch whose longest row has ``n`` ids is padded to (so that shapes repeat).

    >>> [padded_length(n) for n in (1, 8, 9, 52)]
    [8, 8, 16, 56]
    """
    return round_up(max(n, 1), multiple)


def configure_attention(device: torch.device | str) -> str:
    """Enable exactly the :data:`SDPA_KERNELS` on CUDA (process-wide); returns what is in use, for logs.

    Nothing changes on the CPU, where PyTorch has one SDPA implementation.

    >>> configure_attention("cpu")
    'sdpa (cpu)'
    """
    if torch.device(device).type != "cuda":
        return "sdpa (cpu)"
    for name, enabled in SDPA_KERNELS.items():
        getattr(torch.backends.cuda, f"enable_{name}_sdp")(enabled)
    return "sdpa: " + ", ".join(name for name, enabled in SDPA_KERNELS.items() if enabled) + " (cuDNN off)"
