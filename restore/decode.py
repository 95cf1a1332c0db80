"""A compact greedy decode loop for BART with a static KV cache, whose step a CUDA graph can capture.

Why it exists (GPU): ``model.generate`` spends most of a decoding step in Python on a
small model (logits processors, stopping criteria, cache bookkeeping, a growing
self-attention cache whose every new shape is a new kernel configuration). On an
H200 plain ``generate`` on a 256x52 batch ran at ~52,000 tokens/s, about 10 us of GPU
work per kernel drowned in launch overhead. Here a step is one fixed-shape function of
preallocated tensors:

- the self-attention cache is allocated once at its bucket length (a padded query of
  ``arange(L) <= step`` masks the positions not written yet); cross-attention keys and
  values are computed once per batch from the encoder output;
- the step number, the fed token, the finished flags and the output live in device
  tensors and the step updates them itself (argmax, ``</s>`` suppression before
  ``min_new_tokens``, ``<pad>`` after ``</s>``), so no value goes back to the host
  within a step;
- on CUDA the whole step is captured once per shape bucket in a CUDA graph
  (:class:`torch.cuda.CUDAGraph`) and replayed: one launch per step instead of ~60.
  Whether every row has finished is read every :data:`FINISHED_CHECK_EVERY` steps only.

It runs the model's own modules (the BART encoder as a whole; the decoder's embeddings,
attention projections, layer norms and feed-forward layers) with PyTorch's
``scaled_dot_product_attention``, and is tested token for token against
``model.generate`` on the CPU (``tests/test_decode.py``). It does not use transformers'
``StaticCache``/``EncoderDecoderCache``: their constructors and the decoder's cache
keyword changed between the transformers versions we run (5.17 on the GPU machine,
``past_key_values`` -> ``cache`` by 5.24), and the decoder's forward rebuilds masks
with Python logic each step; our step is a pure tensor function of fixed shapes.

Only BART (``model_type == "bart"``, post-layer-norm, learned positions) is supported;
:func:`compact_decoder_for` says why another model is not, and the caller then keeps
using ``generate``. Beam search keeps using ``generate``.

>>> from restore.backends import restore_generation_config
>>> from restore.model import ModelConfig, build_model
>>> model = build_model(ModelConfig(d_model=16, encoder_layers=1, decoder_layers=1, attention_heads=2, ffn_dim=32), 50).eval()
>>> model.generation_config = restore_generation_config(model.config)
>>> decoder = StaticGreedyDecoder(model)
>>> ids = torch.tensor([[5, 6, 3], [7, 3, 0]]); mask = (ids != 0).long()
>>> out = decoder.decode(ids, mask, max_new_tokens=5)
>>> with torch.inference_mode():
...     plain = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False)
>>> out.shape, torch.equal(out[:, : plain.shape[1] - 1], plain[:, 1:])  # generate stops when all rows end
(torch.Size([2, 5]), True)
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

# On CUDA, whether all rows are done is read (a device -> host sync) every this many steps.
FINISHED_CHECK_EVERY = 8
# Captured graphs kept (least recently used dropped): each holds its bucket's cache tensors.
MAX_GRAPHS = 24
# BART's learned position embeddings are offset by 2 (a fairseq convention kept by transformers).
POSITION_OFFSET = 2


class Unsupported(Exception):
    """The model cannot be decoded by :class:`StaticGreedyDecoder` (the message says why)."""


def compact_decoder_for(model, *, cuda_graphs: bool = True) -> tuple["StaticGreedyDecoder | None", str]:
    """The compact decoder for ``model``, or ``None`` and the one-line reason it cannot be used.

    >>> compact_decoder_for(torch.nn.Linear(2, 2))
    (None, 'compact decoder: Linear is not a BART seq2seq model; using generate')
    """
    try:
        return StaticGreedyDecoder(model, cuda_graphs=cuda_graphs), ""
    except Unsupported as e:
        return None, f"compact decoder: {e}; using generate"


@dataclass
class _Bucket:
    """The static tensors of one shape (rows, source length, cache length), and its graph."""

    tokens: torch.Tensor  # [rows] the token fed at this step
    step: torch.Tensor  # [1] long: the step number (= position of the fed token)
    min_new: torch.Tensor  # [1] long: </s> is suppressed while step < min_new
    finished: torch.Tensor  # [rows] bool
    out: torch.Tensor  # [rows, cache length] generated ids
    self_k: list[torch.Tensor]  # per layer [rows, heads, cache length, head dim]
    self_v: list[torch.Tensor]
    cross_k: list[torch.Tensor]  # per layer [rows, heads, source length, head dim]
    cross_v: list[torch.Tensor]
    cross_mask: torch.Tensor  # [rows, 1, 1, source length] bool: True = attend
    graph: "torch.cuda.CUDAGraph | None" = None


class StaticGreedyDecoder:
    """Greedy decoding of a BART model with a static cache (see the module docstring).

    ``decode`` takes padded ``(input_ids, attention_mask)`` of any shape and returns the
    ``[rows, max_new_tokens]`` generated ids, ``<pad>`` after a row's ``</s>``: exactly
    ``model.generate(..., do_sample=False)[:, 1:]`` with the settings of
    :func:`restore.backends.restore_generation_config` (``suppress_tokens`` of the
    model's ``generation_config`` are never generated). The caller pads inputs to
    shape buckets; ``cache_length`` (default ``max_new_tokens``) sizes the cache.
    Not thread-safe: one decode at a time per decoder.
    """

    def __init__(self, model, *, cuda_graphs: bool = True):
        config = getattr(model, "config", None)
        if getattr(config, "model_type", None) != "bart" or not hasattr(model, "get_decoder"):
            raise Unsupported(f"{type(model).__name__} is not a BART seq2seq model")
        decoder = model.get_decoder()
        layers = list(decoder.layers)
        if getattr(decoder, "layer_norm", None) is not None or not layers:
            raise Unsupported("decoder has a final layer norm (not plain BART)")
        self.model = model
        self.encoder = model.get_encoder()
        self.embed_tokens = decoder.embed_tokens
        self.positions = decoder.embed_positions
        if getattr(self.positions, "offset", POSITION_OFFSET) != POSITION_OFFSET:
            raise Unsupported("unexpected position embedding offset")
        self.layernorm_embedding = decoder.layernorm_embedding
        self.layers = layers
        self.heads = layers[0].self_attn.num_heads
        self.head_dim = layers[0].self_attn.head_dim
        self.max_positions = config.max_position_embeddings
        self.start_id = config.decoder_start_token_id
        self.eos_id = config.eos_token_id
        self.pad_id = config.pad_token_id
        self.cuda_graphs = cuda_graphs
        self.graph_failure: str | None = None  # set (and logged once) when capture failed
        self._buckets: OrderedDict[tuple, _Bucket] = OrderedDict()
        self._never: torch.Tensor | None = None

    # public -----------------------------------------------------------------------------------------
    def decode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        max_new_tokens: int,
        min_new_tokens: int = 0,
        cache_length: int | None = None,
    ) -> torch.Tensor:
        """Generated ids ``[rows, max_new_tokens]`` (``<pad>`` after ``</s>``), on the model's device."""
        cache_length = max(cache_length or max_new_tokens, max_new_tokens)
        if max_new_tokens > self.max_positions:
            raise ValueError(f"max_new_tokens {max_new_tokens} > the model's {self.max_positions} positions")
        device = self.embed_tokens.weight.device
        with torch.inference_mode():
            input_ids = input_ids.to(device, non_blocking=True)
            attention_mask = attention_mask.to(device, non_blocking=True)
            encoded = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            bucket = self._bucket(input_ids.shape[0], input_ids.shape[1], cache_length, device, self._cache_dtype(device))
            self._start(bucket, encoded, attention_mask, min_new_tokens)
            step = self._step_function(bucket)
            check_every = FINISHED_CHECK_EVERY if device.type == "cuda" else 1
            for n in range(1, max_new_tokens + 1):
                step()
                if n % check_every == 0 and n < max_new_tokens and bool(bucket.finished.all()):
                    break
            return bucket.out[:, :max_new_tokens].clone()

    def describe(self) -> str:
        """How steps run, for logs: ``cuda graphs``, ``eager`` or why graphs are off."""
        if self.graph_failure:
            return f"eager ({self.graph_failure})"
        return "cuda graphs" if self.cuda_graphs and self.embed_tokens.weight.device.type == "cuda" else "eager"

    # buckets ----------------------------------------------------------------------------------------
    def _cache_dtype(self, device: torch.device) -> torch.dtype:
        """The dtype the attention projections produce: autocast's where it is on, else the weights'.

        Training evaluates dev BLEU under ``torch.autocast`` (bf16 on CUDA) with float32 weights;
        a cache of the weights' dtype would then refuse the projections' bf16 keys.
        """
        if torch.is_autocast_enabled(device.type):
            return torch.get_autocast_dtype(device.type)
        return self.embed_tokens.weight.dtype

    def _bucket(self, rows: int, source_length: int, cache_length: int, device: torch.device, dtype: torch.dtype) -> _Bucket:
        key = (rows, source_length, cache_length, dtype)
        if key in self._buckets:
            self._buckets.move_to_end(key)
            return self._buckets[key]
        while len(self._buckets) >= MAX_GRAPHS:
            self._buckets.popitem(last=False)
        heads, dim, layers = self.heads, self.head_dim, len(self.layers)

        def zeros(length: int) -> list[torch.Tensor]:
            # Zeros, not empty: masked positions still enter the attention product (0 x NaN would be NaN).
            return [torch.zeros(rows, heads, length, dim, dtype=dtype, device=device) for _ in range(layers)]

        bucket = _Bucket(
            tokens=torch.full((rows,), self.start_id, dtype=torch.long, device=device),
            step=torch.zeros(1, dtype=torch.long, device=device),
            min_new=torch.zeros(1, dtype=torch.long, device=device),
            finished=torch.zeros(rows, dtype=torch.bool, device=device),
            out=torch.full((rows, cache_length), self.pad_id, dtype=torch.long, device=device),
            self_k=zeros(cache_length), self_v=zeros(cache_length),
            cross_k=zeros(source_length), cross_v=zeros(source_length),
            cross_mask=torch.ones(rows, 1, 1, source_length, dtype=torch.bool, device=device),
        )  # fmt: skip
        if self._never is None:
            never = getattr(getattr(self.model, "generation_config", None), "suppress_tokens", None) or []
            self._never = torch.zeros(self.model.config.vocab_size, dtype=torch.bool, device=device)
            self._never[list(never)] = True
        self._buckets[key] = bucket
        return bucket

    def _start(self, bucket: _Bucket, encoded: torch.Tensor, attention_mask: torch.Tensor, min_new_tokens: int) -> None:
        """Reset the bucket's state for a new batch; compute the cross-attention keys and values once."""
        bucket.tokens.fill_(self.start_id)
        bucket.step.zero_()
        bucket.min_new.fill_(min_new_tokens)
        bucket.finished.zero_()
        bucket.out.fill_(self.pad_id)
        bucket.cross_mask.copy_(attention_mask.bool()[:, None, None, :])
        rows, length = encoded.shape[:2]
        for layer, k, v in zip(self.layers, bucket.cross_k, bucket.cross_v):
            attention = layer.encoder_attn
            k.copy_(attention.k_proj(encoded).view(rows, length, self.heads, self.head_dim).transpose(1, 2))
            v.copy_(attention.v_proj(encoded).view(rows, length, self.heads, self.head_dim).transpose(1, 2))

    def _step_function(self, bucket: _Bucket):
        """The step to run: the bucket's CUDA graph replay when it can be captured, else eager."""
        if not (self.cuda_graphs and bucket.tokens.device.type == "cuda" and self.graph_failure is None):
            return lambda: self._step(bucket)
        if bucket.graph is None:
            try:
                bucket.graph = self._capture(bucket)
            except Exception as error:  # noqa: BLE001 - any capture failure falls back to eager steps
                self.graph_failure = f"CUDA graph capture failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
                log.warning("restore.decode: %s; decoding with eager steps", self.graph_failure)
                torch.cuda.synchronize()
                return lambda: self._step(bucket)
        return bucket.graph.replay

    def _capture(self, bucket: _Bucket) -> "torch.cuda.CUDAGraph":
        """Capture one step of ``bucket`` (after warm-up steps on a side stream, as PyTorch requires).

        Warm-up steps change the bucket's state, so it is saved and restored around them.
        """
        saved = [t.clone() for t in (bucket.tokens, bucket.step, bucket.finished, bucket.out)]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._step(bucket)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        # Each graph keeps its own memory pool (a step's temporaries: ~ rows x vocabulary logits), so
        # graphs may replay in any order. "thread_local": CUDA calls of other threads (the caller's
        # faithfulness work while generation runs in a worker) cannot invalidate this capture.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self._step(bucket)
        for target, value in zip((bucket.tokens, bucket.step, bucket.finished, bucket.out), saved):
            target.copy_(value)
        # The self-attention cache written by the warm-up steps is overwritten before it is read
        # (position t is written at step t, and positions > t are masked).
        return graph

    # the step ---------------------------------------------------------------------------------------
    def _step(self, b: _Bucket) -> None:
        """One greedy step on fixed-shape tensors: feed ``b.tokens`` at position ``b.step``, write the next ones."""
        rows, cache_length = b.out.shape
        step = b.step
        hidden = self.embed_tokens(b.tokens[:, None])  # [rows, 1, d], scaled as in the model
        hidden = hidden + F.embedding(step + POSITION_OFFSET, self.positions.weight)[None]
        hidden = self.layernorm_embedding(hidden)
        # Positions written so far (this one included) are attended to; later ones are not.
        self_mask = (torch.arange(cache_length, device=step.device) <= step)[None, None, None, :]
        for layer, k_cache, v_cache, cross_k, cross_v in zip(self.layers, b.self_k, b.self_v, b.cross_k, b.cross_v):
            attention = layer.self_attn
            k_cache.index_copy_(2, step, self._heads(attention.k_proj(hidden)))
            v_cache.index_copy_(2, step, self._heads(attention.v_proj(hidden)))
            out = self._attend(attention, hidden, k_cache, v_cache, self_mask)
            hidden = layer.self_attn_layer_norm(hidden + out)
            out = self._attend(layer.encoder_attn, hidden, cross_k, cross_v, b.cross_mask)
            hidden = layer.encoder_attn_layer_norm(hidden + out)
            out = layer.fc2(layer.activation_fn(layer.fc1(hidden)))
            hidden = layer.final_layer_norm(hidden + out)
        logits = self.model.lm_head(hidden[:, 0]) + self.model.final_logits_bias.to(hidden.dtype)
        logits = logits.masked_fill(self._never, -math.inf)
        eos_blocked = step < b.min_new  # [1]: </s> may not come before min_new_tokens
        logits[:, self.eos_id] = torch.where(eos_blocked, -math.inf, logits[:, self.eos_id])
        chosen = torch.where(b.finished, self.pad_id, logits.argmax(dim=-1))
        b.out.index_copy_(1, step, chosen[:, None])
        b.finished.logical_or_(chosen == self.eos_id)
        b.tokens.copy_(chosen)
        step.add_(1)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """[rows, q, d] -> [rows, heads, q, head dim]."""
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def _attend(self, attention, hidden: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor):
        """The attention block's output for one query position (as transformers' SDPA path computes it)."""
        query = self._heads(attention.q_proj(hidden))
        out = F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=attention.scaling)
        return attention.out_proj(out.transpose(1, 2).reshape(hidden.shape[0], 1, -1))
