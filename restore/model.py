"""The seq2seq model: a from-scratch BART encoder-decoder, or any existing seq2seq checkpoint.

Why BART (``BartForConditionalGeneration``):
- its attention runs through PyTorch SDPA (``attn_implementation="sdpa"``) and it
  supports a static KV cache and a compilable decode step in transformers, which
  the GPU inference path relies on;
- it is a plain pre-LN-free Transformer with learned absolute positions, no
  relative position bias (T5's bias blocks fused SDPA kernels and is not
  bf16-friendly), so every fast engine understands it: CTranslate2 converts
  BART checkpoints natively, which the CPU path uses;
- encoder and decoder depths are set independently: restoration is mostly
  copying with local edits, so a deep encoder and a shallow decoder keep quality
  while making decoding (the slow, sequential part) cheap.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSeq2SeqLM, BartConfig, BartForConditionalGeneration, PreTrainedModel

from restore.config import ModelConfig
from restore.errors import RestoreError
from restore.tokenizer import SPECIAL_IDS


def build_model(config: ModelConfig, vocab_size: int) -> PreTrainedModel:
    """A freshly initialised BART of the configured size for our tokenizer's vocabulary.

    >>> m = build_model(ModelConfig(d_model=32, encoder_layers=1, decoder_layers=1, attention_heads=2, ffn_dim=64), 100)
    >>> m.config.model_type, m.config.decoder_start_token_id, m.config._attn_implementation
    ('bart', 2, 'sdpa')
    """
    if config.init_from:
        return load_pretrained(config.init_from)
    bart = BartConfig(
        vocab_size=vocab_size,
        d_model=config.d_model,
        encoder_layers=config.encoder_layers,
        decoder_layers=config.decoder_layers,
        encoder_attention_heads=config.attention_heads,
        decoder_attention_heads=config.attention_heads,
        encoder_ffn_dim=config.ffn_dim,
        decoder_ffn_dim=config.ffn_dim,
        dropout=config.dropout,
        attention_dropout=0.0,
        activation_dropout=0.0,
        max_position_embeddings=config.max_position_embeddings,
        scale_embedding=True,
        tie_word_embeddings=True,
        pad_token_id=SPECIAL_IDS["<pad>"],
        bos_token_id=SPECIAL_IDS["<s>"],
        eos_token_id=SPECIAL_IDS["</s>"],
        decoder_start_token_id=SPECIAL_IDS["<s>"],
        forced_bos_token_id=None,
        forced_eos_token_id=SPECIAL_IDS["</s>"],
    )
    bart._attn_implementation = "sdpa"
    return BartForConditionalGeneration(bart)


def load_pretrained(path: str | Path, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """Load any seq2seq checkpoint directory (ours or another) with SDPA attention."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise RestoreError(f"{path}: not a model directory (no config.json)")
    try:
        AutoConfig.from_pretrained(path)
        return AutoModelForSeq2SeqLM.from_pretrained(path, attn_implementation="sdpa", dtype=dtype)
    except (OSError, ValueError, KeyError) as e:
        raise RestoreError(f"{path}: cannot load the model ({str(e).splitlines()[0]})") from None


def count_parameters(model: torch.nn.Module) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
