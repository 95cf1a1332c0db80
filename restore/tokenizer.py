"""Our own subword vocabulary: a sentencepiece unigram model wrapped as a transformers fast tokenizer.

One vocabulary serves sources (lowercase stems) and targets (cased prose). Byte
fallback means no character is ever unknown, the normalizer is the identity and
``\\n`` is a piece of its own, so every target round-trips exactly:
``decode(encode(text)) == text``, headings and paragraph breaks included.

The result is a plain ``PreTrainedTokenizerFast`` (``tokenizer.json``), loadable
with ``AutoTokenizer.from_pretrained(dir)`` without our code.
"""

from __future__ import annotations

import io
from typing import Iterable

import sentencepiece as spm
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIAL_IDS = {PAD: 0, UNK: 1, BOS: 2, EOS: 3}


def train_sentencepiece(texts: Iterable[str], vocab_size: int = 16000, seed_sentences: int = 0) -> bytes:
    """Train a unigram sentencepiece model on ``texts``; returns the serialized model proto.

    ``seed_sentences`` caps how many texts sentencepiece samples (0 = all of them).
    """
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=buffer,
        vocab_size=vocab_size,
        model_type="unigram",
        hard_vocab_limit=False,  # tiny corpora (tests) get a smaller vocabulary, not an error
        byte_fallback=True,
        normalization_rule_name="identity",  # keep quotes, dashes, unicode exactly
        remove_extra_whitespaces=False,
        split_digits=True,  # numbers are copied digit by digit: no rare number pieces
        allow_whitespace_only_pieces=True,
        user_defined_symbols=["\n"],  # headings and paragraph breaks are lines in targets
        character_coverage=0.9995,
        max_sentence_length=1 << 16,
        input_sentence_size=seed_sentences,
        shuffle_input_sentence=True,
        pad_id=SPECIAL_IDS[PAD],
        unk_id=SPECIAL_IDS[UNK],
        bos_id=SPECIAL_IDS[BOS],
        eos_id=SPECIAL_IDS[EOS],
        num_threads=1,  # deterministic
        minloglevel=2,
    )
    return buffer.getvalue()


def fast_tokenizer_from_sentencepiece(model_proto: bytes, model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """Wrap a sentencepiece unigram model as a transformers fast tokenizer (same pieces and scores)."""
    sp = spm.SentencePieceProcessor(model_proto=model_proto)
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    backend = Tokenizer(models.Unigram(vocab, unk_id=SPECIAL_IDS[UNK], byte_fallback=True))
    # Like sentencepiece: spaces become "▁" with one added in front; no other normalization.
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    backend.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, SPECIAL_IDS[EOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )


def train_tokenizer(texts: Iterable[str], vocab_size: int = 16000, seed_sentences: int = 0) -> PreTrainedTokenizerFast:
    """Train our tokenizer on ``texts`` (sources and targets alike) and return it, ready to save.

    >>> tok = train_tokenizer(["The Party's will, 1879–1922.\\n\\n## Life"] * 50 + ["parti will"] * 50, 300)
    >>> text = "## Early life\\n\\nHe was born in “Kherson” — 1879."
    >>> tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text
    True
    """
    return fast_tokenizer_from_sentencepiece(train_sentencepiece(texts, vocab_size, seed_sentences))
