"""The faithfulness check: a restored chunk must corrupt back to exactly its source chunk.

We own the preprocessing (:mod:`restore.corrupt`), so faithfulness needs no reference:
``corrupt(restored_chunk) == source_chunk``. A restoration that reads well but changes a
name, a number or a claim fails this check. This module holds the check and what is chosen
by it; :mod:`restore.repair` edits a text until it passes, :mod:`restore.faithful` drives
both over a batch of chunks and a line of them.

- :func:`roundtrip`: the corrupted tokens of a text, memoized (per text, and per Punkt sentence
  inside it: a faithful run corrupts the same outputs and sentences many times);
- :func:`check` / :func:`check_content`: exact / content-token (all but punctuation) round trip;
- :func:`choose_faithful`: the first hypothesis (e.g. of a beam) that passes;
- :func:`closest`: the hypothesis cheapest to repair.

>>> src = "trotski born 1879 kherson ."
>>> check("Trotsky was born in 1879 in Kherson.", src), check("Trotsky was born in 1897 in Odessa.", src)
(True, False)
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from typing import Iterable, Sequence

from restore.corrupt import corrupt_sentence_cached, split_sentences

# Texts whose round trip is kept: a window's outputs, beam hypotheses and repair candidates are
# checked again within moments (a chunk, then its line; a hypothesis, then the closest one).
TEXT_CACHE = 1 << 12


def content_tokens(tokens: Iterable[str]) -> list[str]:
    """Tokens that carry content: everything with a letter or digit (punctuation dropped).

    >>> content_tokens(["``", "lenin", "'s", "1917", "(", "o.", ".", "—", "''"])
    ['lenin', "'s", '1917', 'o.']
    """
    return [t for t in tokens if any(c.isalnum() for c in t)]


@lru_cache(maxsize=TEXT_CACHE)
def roundtrip(text: str) -> tuple[str, ...]:
    """The corrupted tokens of ``text``: :func:`restore.corrupt.corrupt_tokens`, memoized.

    Punkt splits the whole text (a sentence boundary depends on its context), then each
    sentence's tokens come from the per-sentence cache; the result equals the uncached one
    (``tests/test_faithful_window.py`` checks it on the 339 test vectors and the test split).

    >>> roundtrip("He received the news. It was 1905.")
    ('receiv', 'news', '.', '1905', '.')
    """
    return tuple(tok for sentence in split_sentences(text) for tok in corrupt_sentence_cached(sentence))


def check(output: str, source: str) -> bool:
    """True if ``output`` corrupts back to exactly ``source`` (whitespace-separated tokens).

    >>> check("He received the news.", "receiv news ."), check("He got the news.", "receiv news .")
    (True, False)
    """
    return roundtrip(output) == tuple(source.split())


def check_content(output: str, source: str) -> bool:
    """True if the round trip agrees on every content token (punctuation may differ).

    >>> check_content("He received the news", "receiv news ."), check("He received the news", "receiv news .")
    (True, False)
    """
    return content_tokens(roundtrip(output)) == content_tokens(source.split())


def choose_faithful(hypotheses: Sequence[str], source: str) -> str | None:
    """The first hypothesis (best first, as a beam returns them) that passes :func:`check`.

    >>> choose_faithful(["He got the news.", "He received news.", "It received the news."], "receiv news .")
    'He received news.'
    >>> choose_faithful(["He got the news."], "receiv news .") is None
    True
    """
    return next((h for h in hypotheses if check(h, source)), None)


def closest(hypotheses: Sequence[str], source: str) -> str:
    """The hypothesis whose round trip is most similar to ``source`` (the cheapest to repair).

    >>> closest(["It rained.", "He got news.", "He received a letter."], "receiv news .")
    'He got news.'
    """
    target = source.split()

    def similarity(h: str) -> float:
        return difflib.SequenceMatcher(None, roundtrip(h), target, autojunk=False).ratio()

    return max(hypotheses, key=similarity)  # max keeps the first (best-ranked) on ties
