"""Generation backends: what turns encoder input ids into generated ids.

:class:`~restore.infer.Restorer` does everything around the model (chunking,
sorting, batching by a token budget, reassembly); a backend only runs the
model on one batch. Any object with this ``generate`` method is a backend
(:class:`Generator`); :class:`TorchGenerator` runs a transformers model with
PyTorch, on the CPU or a CUDA GPU. Other backends (e.g. CTranslate2) live in
their own modules and are listed in :data:`BACKENDS` by name; which one a run
uses, and what they share, is :mod:`restore.backend_choice`'s (it imports no torch).

Conventions every backend follows:

- input: one list of token ids per chunk, each ending with ``</s>``, unpadded;
- output: for each input, ``num_return_sequences`` id lists, grouped per input
  (``out[i * num_return_sequences + j]`` is candidate ``j`` of input ``i``, best
  first). Each holds only what the model generated: no decoder start token, cut
  before the first ``</s>``, no padding;
- at most ``max_new_tokens`` ids per output, greedy when ``num_beams == 1``;
- ``length_penalty`` (beam search only): hypotheses are ranked by their summed log-probability
  divided by ``length ** length_penalty`` (``</s>`` counted), as transformers and CTranslate2
  both define it: above 1 favours longer outputs;
- ``batch_tokens``: the token budget per call the engine is tuned for (the
  Restorer's default budget);
- optionally a keyword ``min_new_tokens`` (fixed-length benchmarks only; the
  Restorer never passes it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Protocol, Sequence

import torch
from transformers import GenerationConfig, PreTrainedModel, StoppingCriteria, StoppingCriteriaList

from restore.attention import configure_attention, padded_length, round_up
from restore.backend_choice import never_generated_ids
from restore.decode import compact_decoder_for

log = logging.getLogger(__name__)

# Shapes are rounded up to these multiples with a static cache, so that the compiled
# decode step is reused across batches instead of recompiled for every new shape.
STATIC_ROWS_MULTIPLE = 8
STATIC_SOURCE_MULTIPLE = 32
STATIC_NEW_TOKENS_MULTIPLE = 64
# Token budget per batch of the torch backend: rows x beams x (longest source + longest expected output).
DEFAULT_BATCH_TOKENS = {"cuda": 32768, "cpu": 16384}
# Compact decoder on CUDA: rows per captured graph (bigger batches run as several parts); the
# smallest cache length bucket (lengths are powers of two from here).
GRAPH_ROWS = 512
MIN_CACHE_LENGTH = 64
# CUDA batch sizing: share of free memory the decoding state may take, and an upper bound in
# padded tokens (beyond ~2,000 rows a 3-layer d=256 decoder step gains nothing; the CPU side is the limit).
CUDA_MEMORY_SHARE = 0.4
CUDA_MAX_BATCH_TOKENS = 1 << 18


class Generator(Protocol):
    """Anything that generates outputs for a batch of encoder inputs (see the module docstring)."""

    batch_tokens: int  # the engine's default token budget per generate call

    def generate(
        self, batch: list[list[int]], max_new_tokens: int, num_beams: int = 1, num_return_sequences: int = 1,
        *, length_penalty: float = 1.0,
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
    are reused.

    ``compact`` (default: on CUDA) decodes greedy batches with
    :class:`restore.decode.StaticGreedyDecoder` instead of ``generate``: a static cache
    and one CUDA graph per shape bucket (token for token the same outputs; beams keep
    using ``generate``). Batches are cut into :func:`compact_shapes` buckets so that a
    handful of graphs serve a whole corpus. On the CPU it gains nothing over
    ``generate`` (measured: 0.84-1.34x on a shared 2-core EPYC), so it is off there.
    ``buckets`` (default: on CUDA) pads compact batches to those shapes.
    On CUDA the generator also sizes the Restorer's batches from free GPU memory
    (:attr:`batch_tokens`, see :func:`cuda_batch_tokens`).

    >>> from restore.model import ModelConfig, build_model
    >>> model = build_model(ModelConfig(d_model=16, encoder_layers=1, decoder_layers=1, attention_heads=2, ffn_dim=32), 50)
    >>> out = TorchGenerator(model, torch.device("cpu"), torch.float32).generate([[5, 6, 3], [7, 3]], max_new_tokens=4)
    >>> len(out), all(len(ids) <= 4 and 3 not in ids for ids in out)
    (2, True)
    >>> compact = TorchGenerator(model, torch.device("cpu"), torch.float32, compact=True)
    >>> compact.generate([[5, 6, 3], [7, 3]], max_new_tokens=4) == out
    True
    """

    def __init__(
        self,
        model: PreTrainedModel,
        device: torch.device,
        dtype: torch.dtype,
        *,
        static_cache: bool = False,
        reason: str = "",
        compact: bool | None = None,
        cuda_graphs: bool = True,
        buckets: bool | None = None,
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
        self.buckets = device.type == "cuda" if buckets is None else buckets  # compact decoder shape buckets
        self.compact = None
        if compact if compact is not None else (device.type == "cuda" and not static_cache):
            self.compact, why_not = compact_decoder_for(self.model, cuda_graphs=cuda_graphs)
            if why_not:
                log.warning("restore: %s", why_not)
        if device.type == "cuda":  # the Restorer's default budget, from free GPU memory
            self.batch_tokens = cuda_batch_tokens(self.model, device)

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
        if self.compact is not None and num_beams == 1:
            return self._generate_compact(batch, max_new_tokens, min_new_tokens)
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
                length_penalty=length_penalty,
                do_sample=False,
                **options,
            )
        return strip_generated(sequences[: rows * num_return_sequences], self.eos_id, max_new_tokens)

    def _generate_compact(self, batch: list[list[int]], max_new_tokens: int, min_new_tokens: int) -> list[list[int]]:
        """Greedy outputs through the compact decoder, in shape buckets (extra rows repeat the last input)."""
        bucketed = self.buckets
        results: list[list[int]] = []
        start = torch.full((1, 1), self.model.config.decoder_start_token_id, dtype=torch.long)
        for part in compact_parts(len(batch), GRAPH_ROWS if bucketed else len(batch)):
            inputs = batch[part.start : part.stop]
            rows, source_length, cache_length = compact_shapes(
                len(inputs), max(map(len, inputs)), max_new_tokens, self.max_positions, bucketed=bucketed
            )
            inputs = inputs + [inputs[-1]] * (rows - len(inputs))
            input_ids, attention_mask = pad_batch(inputs, self.pad_id, source_length)
            out = self.compact.decode(input_ids, attention_mask, max_new_tokens, min_new_tokens, cache_length)
            sequences = torch.cat([start.to(out.device).expand(out.shape[0], 1), out], dim=1)
            results += strip_generated(sequences[: part.stop - part.start], self.eos_id, max_new_tokens)
        return results

    def describe(self) -> str:
        """The engine as the summary line shows it, e.g. ``torch float32, cpu, 2 threads``."""
        from restore.device import describe

        precision = str(self.dtype).removeprefix("torch.")
        engine = f", compact decoder ({self.compact.describe()})" if self.compact is not None else ""
        text = f"torch {precision}, {describe(self.device)}" + (", static cache" if self.static_cache else "") + engine
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


def compact_parts(rows: int, most: int) -> list[range]:
    """Row ranges of at most ``most`` rows that a batch of ``rows`` is decoded in.

    >>> compact_parts(1100, 512), compact_parts(3, 512)
    ([range(0, 512), range(512, 1024), range(1024, 1100)], [range(0, 3)])
    """
    return [range(start, min(start + most, rows)) for start in range(0, rows, most)]


def compact_shapes(rows: int, source_length: int, max_new_tokens: int, max_positions: int | None, *, bucketed: bool) -> tuple[int, int, int]:
    """(rows, source length, cache length) a compact-decoder batch runs at.

    Bucketed (CUDA, where every new shape is a new CUDA graph): rows to a power of two
    (8 at least), the source to a multiple of :data:`STATIC_SOURCE_MULTIPLE`
    (:func:`restore.attention.padded_length`) and the cache to a power of two
    (:data:`MIN_CACHE_LENGTH` at least), capped by the model's positions. A corpus
    then needs a handful of shapes. Unbucketed (CPU): the batch's own shape.

    >>> compact_shapes(300, 52, 232, 512, bucketed=True), compact_shapes(5, 52, 40, 512, bucketed=True)
    ((512, 64, 256), (8, 64, 64))
    >>> compact_shapes(300, 52, 232, 512, bucketed=False)
    (300, 52, 232)
    """
    if not bucketed:
        return rows, source_length, max_new_tokens
    cache = max(MIN_CACHE_LENGTH, 1 << (max_new_tokens - 1).bit_length())
    source = padded_length(source_length, STATIC_SOURCE_MULTIPLE)
    if max_positions:
        cache, source = max(min(cache, max_positions), max_new_tokens), max(min(source, max_positions), source_length)
    return max(8, 1 << (rows - 1).bit_length()), source, cache


def cuda_batch_tokens(model: PreTrainedModel, device: torch.device) -> int:
    """A token budget (rows x padded tokens) for batches on a CUDA device, from its free memory.

    Per padded token a batch holds its keys and values in every decoder layer (self-attention
    cache for new tokens, cross-attention for source tokens), and while encoding, one token's
    widest activations; buckets pad shapes up to 2x in each dimension, hence the factor 4.
    Capped at :data:`CUDA_MAX_BATCH_TOKENS` (bigger batches only delay the CPU work that follows).
    """
    config = model.config
    element = next(model.parameters()).element_size()
    d_model = config.d_model
    per_token = 4 * element * (2 * config.decoder_layers * d_model + 4 * d_model + config.encoder_ffn_dim)
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1024, min(CUDA_MAX_BATCH_TOKENS, free * CUDA_MEMORY_SHARE // per_token)))


BackendFactory = Callable[..., Generator]


def load_torch_generator(model_dir: str | Path, device: torch.device, dtype: torch.dtype, **options) -> TorchGenerator:
    """The PyTorch backend for a model directory (``options``: ``static_cache``, ``reason``, ``compact``, ``cuda_graphs``)."""
    from restore.model import load_pretrained

    return TorchGenerator(load_pretrained(model_dir, dtype=dtype), device, dtype, **options)


def load_ctranslate2_generator(model_dir: str | Path, device: torch.device, dtype: torch.dtype, **options) -> Generator:
    """The CTranslate2 backend (optional package; see :mod:`restore.backend_ct2`)."""
    from restore.backend_ct2 import load_ctranslate2_generator as load

    return load(model_dir, device, dtype, **options)


# Backends by name: ``factory(model_dir, device, dtype, **options) -> Generator``.
# The names are restore.backend_choice.BACKEND_NAMES; ``auto`` (see :func:`restore.backend_choice.choose_backend`):
# ctranslate2 on the CPU when installed, else torch.
BACKENDS: dict[str, BackendFactory] = {"torch": load_torch_generator, "ctranslate2": load_ctranslate2_generator}
