"""Generation backends: what turns encoder input ids into generated ids.

:class:`~restore.infer.Restorer` does everything around the model (chunking,
sorting, batching by a token budget, reassembly); a backend only runs the
model on one batch. Any object with this ``generate`` method is a backend
(:class:`Generator`); :class:`TorchGenerator` runs a transformers model with
PyTorch, on the CPU or a CUDA GPU. Other backends (e.g. CTranslate2) live in
their own modules and are listed in :data:`BACKENDS` by name.

Conventions every backend follows:

- input: one list of token ids per chunk, each ending with ``</s>``, unpadded;
- output: for each input, ``num_return_sequences`` id lists, grouped per input
  (``out[i * num_return_sequences + j]`` is candidate ``j`` of input ``i``, best
  first). Each holds only what the model generated: no decoder start token, cut
  before the first ``</s>``, no padding;
- at most ``max_new_tokens`` ids per output, greedy when ``num_beams == 1``;
- ``batch_tokens``: the token budget per call the engine is tuned for (the
  Restorer's default budget);
- optionally a keyword ``min_new_tokens`` (fixed-length benchmarks only; the
  Restorer never passes it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import torch
from transformers import GenerationConfig, PreTrainedModel, StoppingCriteria, StoppingCriteriaList

from restore.attention import configure_attention, round_up
from restore.errors import RestoreError

# Shapes are rounded up to these multiples with a static cache, so that the compiled
# decode step is reused across batches instead of recompiled for every new shape.
STATIC_ROWS_MULTIPLE = 8
STATIC_SOURCE_MULTIPLE = 32
STATIC_NEW_TOKENS_MULTIPLE = 64
# Token budget per batch of the torch backend: rows x beams x (longest source + longest expected output).
DEFAULT_BATCH_TOKENS = {"cuda": 32768, "cpu": 16384}


class Generator(Protocol):
    """Anything that generates outputs for a batch of encoder inputs (see the module docstring)."""

    batch_tokens: int  # the engine's default token budget per generate call

    def generate(
        self, batch: list[list[int]], max_new_tokens: int, num_beams: int = 1, num_return_sequences: int = 1
    ) -> list[list[int]]: ...

    def describe(self) -> str:
        """The engine, its precision and threads, and why it was chosen (for the summary line)."""
        ...


def pad_batch(batch: Sequence[Sequence[int]], pad_id: int, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists into ``(input_ids, attention_mask)`` tensors.

    >>> ids, mask = pad_batch([[5, 6, 3], [7, 3]], pad_id=0)
    >>> ids.tolist(), mask.tolist()
    ([[5, 6, 3], [7, 3, 0]], [[1, 1, 1], [1, 1, 0]])
    """
    lengths = torch.tensor([len(x) for x in batch])
    width = max(int(lengths.max()), length or 0)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    for row, x in enumerate(batch):
        ids[row, : len(x)] = torch.tensor(x, dtype=torch.long)
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    return ids, mask


def strip_generated(sequences: torch.Tensor, eos_id: int, max_new_tokens: int) -> list[list[int]]:
    """Generated rows -> id lists: drop the decoder start token, cut before the first ``</s>``.

    >>> strip_generated(torch.tensor([[2, 8, 9, 3, 0], [2, 7, 7, 7, 7]]), eos_id=3, max_new_tokens=3)
    [[8, 9], [7, 7, 7]]
    """
    body = sequences[:, 1:]
    is_eos = body == eos_id
    # Index of the first </s> per row (the row length where there is none), found on the device.
    ends = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1), body.shape[1]).clamp(max=max_new_tokens)
    return [row[:end] for row, end in zip(body.tolist(), ends.tolist())]


def never_generated_ids(config) -> list[int]:
    """Special ids a restoration never contains: ``<pad>`` and ``<s>`` of a model config (every backend).

    >>> from types import SimpleNamespace
    >>> never_generated_ids(SimpleNamespace(pad_token_id=0, bos_token_id=2, eos_token_id=3))
    [0, 2]
    """
    return sorted({config.pad_token_id, config.bos_token_id} - {config.eos_token_id, None})


def restore_generation_config(config) -> GenerationConfig:
    """Generation settings for restoration from a model config: only its special tokens are kept.

    No ``forced_eos_token_id`` (an output cut at the limit keeps its last token, as with
    CTranslate2), no ``no_repeat_ngram_size`` or beam defaults of the checkpoint; ``<pad>``
    and ``<s>`` are never generated.
    """
    never = never_generated_ids(config)
    return GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        suppress_tokens=never or None,
        do_sample=False,
    )


class StopAtLength(StoppingCriteria):
    """Stop every row once the decoder sequence (start token included) has ``length`` tokens."""

    def __init__(self, length: int):
        self.length = length

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        done = input_ids.shape[-1] >= self.length
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class TorchGenerator:
    """Generate with a transformers encoder-decoder model in PyTorch (CPU or CUDA).

    The generator owns the model's generation settings: a checkpoint's own
    defaults (``no_repeat_ngram_size``, ``forced_eos_token_id``, beam counts, ...)
    are replaced, because restoration is copying with edits and must decode the
    same way whatever checkpoint it starts from. ``<pad>`` and ``<s>`` are never
    generated.

    ``static_cache=True`` uses ``cache_implementation="static"``: transformers then
    compiles the decode step with ``torch.compile`` on CUDA (on the CPU it only
    preallocates the cache). Batch shapes are rounded up so that compiled graphs
    are reused. GPU only in practice; not measured yet.

    >>> from restore.model import ModelConfig, build_model
    >>> model = build_model(ModelConfig(d_model=16, encoder_layers=1, decoder_layers=1, attention_heads=2, ffn_dim=32), 50)
    >>> out = TorchGenerator(model, torch.device("cpu"), torch.float32).generate([[5, 6, 3], [7, 3]], max_new_tokens=4)
    >>> len(out), all(len(ids) <= 4 and 3 not in ids for ids in out)
    (2, True)
    """

    def __init__(
        self, model: PreTrainedModel, device: torch.device, dtype: torch.dtype, *, static_cache: bool = False, reason: str = ""
    ):
        self.model = model.to(device=device, dtype=dtype).eval()
        self.device = device
        self.dtype = dtype
        self.batch_tokens = DEFAULT_BATCH_TOKENS.get(device.type, DEFAULT_BATCH_TOKENS["cpu"])
        self.attention = configure_attention(device)
        self.reason = reason  # why this engine was chosen (for the summary line)
        self.static_cache = static_cache
        config = model.config
        self.pad_id = config.pad_token_id
        self.eos_id = config.eos_token_id
        self.max_positions = getattr(config, "max_position_embeddings", None)
        self.model.generation_config = restore_generation_config(config)

    def generate(
        self,
        batch: list[list[int]],
        max_new_tokens: int,
        num_beams: int = 1,
        num_return_sequences: int = 1,
        *,
        min_new_tokens: int = 0,
    ) -> list[list[int]]:
        rows, source_length, new_tokens = len(batch), None, max_new_tokens
        if self.static_cache:
            batch, source_length, new_tokens = self._bucketed(batch, max_new_tokens)
        input_ids, attention_mask = pad_batch(batch, self.pad_id, source_length)
        options = {}
        if self.static_cache:
            # The cache is sized for the rounded-up length; generation still stops at the real one.
            stop = StoppingCriteriaList([StopAtLength(1 + max_new_tokens)])
            options = {"cache_implementation": "static", "stopping_criteria": stop}
        with torch.inference_mode():
            sequences = self.model.generate(
                input_ids=input_ids.to(self.device, non_blocking=True),
                attention_mask=attention_mask.to(self.device, non_blocking=True),
                max_new_tokens=new_tokens,
                min_new_tokens=min_new_tokens or None,
                num_beams=num_beams,
                num_return_sequences=num_return_sequences,
                do_sample=False,
                **options,
            )
        return strip_generated(sequences[: rows * num_return_sequences], self.eos_id, max_new_tokens)

    def describe(self) -> str:
        """The engine as the summary line shows it, e.g. ``torch float32, cpu, 2 threads``."""
        from restore.device import describe

        precision = str(self.dtype).removeprefix("torch.")
        text = f"torch {precision}, {describe(self.device)}" + (", static cache" if self.static_cache else "")
        return f"{text} ({self.reason})" if self.reason else text

    def _bucketed(self, batch: list[list[int]], max_new_tokens: int) -> tuple[list[list[int]], int, int]:
        """Round rows, source length and new tokens up (extra rows repeat the last input and are dropped)."""
        rows = round_up(len(batch), STATIC_ROWS_MULTIPLE)
        source_length = round_up(max(len(x) for x in batch), STATIC_SOURCE_MULTIPLE)
        new_tokens = round_up(max_new_tokens, STATIC_NEW_TOKENS_MULTIPLE)
        if self.max_positions:
            source_length = min(source_length, self.max_positions)
            new_tokens = min(new_tokens, self.max_positions - 1)
        return batch + [batch[-1]] * (rows - len(batch)), source_length, max(new_tokens, max_new_tokens)


BackendFactory = Callable[..., Generator]


def load_torch_generator(model_dir: str | Path, device: torch.device, dtype: torch.dtype, **options) -> TorchGenerator:
    """The PyTorch backend for a model directory (``options``: ``static_cache``, ``reason``)."""
    from restore.model import load_pretrained

    return TorchGenerator(load_pretrained(model_dir, dtype=dtype), device, dtype, **options)


def load_ctranslate2_generator(model_dir: str | Path, device: torch.device, dtype: torch.dtype, **options) -> Generator:
    """The CTranslate2 backend (optional package; see :mod:`restore.backend_ct2`)."""
    from restore.backend_ct2 import load_ctranslate2_generator as load

    return load(model_dir, device, dtype, **options)


# Backends by name: ``factory(model_dir, device, dtype, **options) -> Generator``.
# ``auto`` (see :func:`choose_backend`): ctranslate2 on the CPU when installed, else torch.
BACKENDS: dict[str, BackendFactory] = {"torch": load_torch_generator, "ctranslate2": load_ctranslate2_generator}
BACKEND_CHOICES = ("auto", *BACKENDS)


@dataclass(frozen=True)
class BackendChoice:
    """The engine to run, the options it gets (e.g. ``compute_type``) and why it was chosen."""

    name: str
    options: dict = field(default_factory=dict)
    reason: str = ""


def default_compute_type(device_type: str) -> tuple[str, str]:
    """CTranslate2's compute type for a device, and why: bf16 on CUDA; on the CPU int8 only where this
    CPU computes it accurately (VNNI, :mod:`restore.cpu`), else float32 (measured: without VNNI, int8
    log-probs drift 13x more and 39% of a test model's greedy outputs differ from fp32's, against 8%
    with VNNI; CTranslate2 float32 equals PyTorch's exactly).

    >>> default_compute_type("cuda")
    ('bfloat16', 'bf16 on CUDA')
    """
    if device_type == "cuda":
        return "bfloat16", "bf16 on CUDA"
    from restore.cpu import int8_support

    support = int8_support()
    if support.accurate:
        return "int8", f"int8: {support.reason}"
    return "float32", f"float32, not int8: {support.reason}"


def choose_backend(requested: str, device_type: str, *, torch_only: bool = False, compute_type: str = "auto") -> BackendChoice:
    """The engine for ``--backend`` (and ``--compute-type``) on a device, with the reason.

    ``auto``: CTranslate2 on the CPU when it is installed (the fastest CPU path), in int8 where
    this CPU computes int8 accurately, else float32; PyTorch on CUDA, without the package, or
    when a torch-only option such as ``--static-cache`` is asked for.

    >>> choose_backend("torch", "cpu").name, choose_backend("auto", "cuda").reason
    ('torch', 'auto: PyTorch on CUDA')
    >>> choose_backend("auto", "cpu", torch_only=True).reason
    'auto: --static-cache is a PyTorch option'
    """
    from restore.backend_ct2 import COMPUTE_TYPE_CHOICES, ctranslate2_available

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
    chosen, why = default_compute_type(device_type)
    return BackendChoice("ctranslate2", {"compute_type": chosen}, why)
