"""The subword tokenizer trained on sources and targets: exact round trips, plain transformers loading."""

from __future__ import annotations

import json
import lzma
from itertools import islice
from pathlib import Path

import pytest

from restore.chunking import ChunkConfig
from restore.corrupt import corrupt
from restore.data import article_pairs
from restore.tokenizer import SPECIAL_IDS, train_tokenizer

SHARED_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "wiki" / "dev.jsonl.xz"


@pytest.fixture(scope="module")
def pairs(wiki_texts) -> tuple[list[str], list[str]]:
    sources, targets = [], []
    for text in wiki_texts:
        s, t, _, _ = article_pairs(text, ChunkConfig(max_source_words=48))
        sources += s
        targets += t
    return sources, targets


@pytest.fixture(scope="module")
def tokenizer(pairs):
    sources, targets = pairs
    return train_tokenizer(sources + targets, vocab_size=800)


def round_trips(tokenizer, text: str) -> bool:
    return tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == text


def test_targets_and_sources_round_trip_exactly(tokenizer, pairs, wiki_texts):
    sources, targets = pairs
    assert all(round_trips(tokenizer, t) for t in targets)
    assert all(round_trips(tokenizer, s) for s in sources)
    assert all(round_trips(tokenizer, t) for t in wiki_texts)  # headings, paragraph breaks


def test_unseen_characters_round_trip_through_byte_fallback(tokenizer):
    text = "Zhōu Ēnlái — “quoted” 1879–1940 ½ 東京 ✓\n\n## Notes\n\n  two  spaces."
    assert round_trips(tokenizer, text)


@pytest.mark.skipif(
    not SHARED_DEV.is_file(),
    reason=f"needs the shared corpus: {SHARED_DEV} not found (../shared/data/wiki beside the checkout); "
    "the fixture-based round-trip tests above still ran",
)
def test_real_corpus_articles_round_trip(tokenizer):
    with lzma.open(SHARED_DEV, "rt", encoding="utf-8") as f:
        articles = [json.loads(line)["text"] for line in islice(f, 5)]
    for text in articles:
        assert round_trips(tokenizer, text)
        assert round_trips(tokenizer, corrupt(text))


def test_special_tokens_and_eos(tokenizer):
    assert {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_IDS} == SPECIAL_IDS
    ids = tokenizer("born 1879 .")["input_ids"]
    assert ids[-1] == SPECIAL_IDS["</s>"] and SPECIAL_IDS["<s>"] not in ids
    assert "\n" in tokenizer.get_vocab()


def test_training_is_deterministic_and_saves_for_auto_tokenizer(tmp_path, tokenizer, pairs):
    from transformers import AutoTokenizer

    sources, targets = pairs
    assert train_tokenizer(sources + targets, vocab_size=800).get_vocab() == tokenizer.get_vocab()
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = targets[3]
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert round_trips(loaded, text)
