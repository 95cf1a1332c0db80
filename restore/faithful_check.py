"""The faithfulness check: a restored chunk must corrupt back to exactly its source chunk.

We own the preprocessing (:mod:`restore.corrupt`), so faithfulness needs no reference:
``corrupt(restored_chunk) == source_chunk``. A restoration that reads well but changes a
name, a number or a claim fails this check. This module holds the check and what is chosen
by it; :mod:`restore.repair` edits a text until it passes, :mod:`restore.faithful` drives
both over a batch of chunks and a line of them.

- :func:`check` / :func:`check_content`: exact / content-token (all but punctuation) round trip;
- :func:`choose_faithful`: the first hypothesis (e.g. of a beam) that passes;
- :func:`closest`: the hypothesis cheapest to repair.

>>> src = "trotski born 1879 kherson ."
>>> check("Trotsky was born in 1879 in Kherson.", src), check("Trotsky was born in 1897 in Odessa.", src)
(True, False)
"""

from __future__ import annotations

import difflib
from typing import Iterable, Sequence

from restore.corrupt import corrupt_tokens


def content_tokens(tokens: Iterable[str]) -> list[str]:
    """Tokens that carry content: everything with a letter or digit (punctuation dropped).

    >>> content_tokens(["``", "lenin", "'s", "1917", "(", "o.", ".", "—", "''"])
    ['lenin', "'s", '1917', 'o.']
    """
    return [t for t in tokens if any(c.isalnum() for c in t)]


def check(output: str, source: str) -> bool:
    """True if ``output`` corrupts back to exactly ``source`` (whitespace-separated tokens).

    >>> check("He received the news.", "receiv news ."), check("He got the news.", "receiv news .")
    (True, False)
    """
    return corrupt_tokens(output) == source.split()


def check_content(output: str, source: str) -> bool:
    """True if the round trip agrees on every content token (punctuation may differ).

    >>> check_content("He received the news", "receiv news ."), check("He received the news", "receiv news .")
    (True, False)
    """
    return content_tokens(corrupt_tokens(output)) == content_tokens(source.split())


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
        return difflib.SequenceMatcher(None, corrupt_tokens(h), target, autojunk=False).ratio()

    return max(hypotheses, key=similarity)  # max keeps the first (best-ranked) on ties
