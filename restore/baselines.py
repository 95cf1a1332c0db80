"""Baselines: the floor a trained model must clear, scored by ``restore eval --baseline``.

- :class:`IdentityRestorer` returns the corrupted text itself;
- :class:`DictionaryRestorer` replaces each stem by its most frequent surface form
  (a :class:`~restore.lexicon.Lexicon` built from training text), capitalizes the
  first word of each sentence, turns ``# #`` heading runs into ``## `` lines and
  detokenizes with NLTK's ``TreebankWordDetokenizer``.

Both have the interface of :class:`restore.infer.Restorer` that evaluation uses:
``restore(text) -> str`` and ``restore_many(texts) -> iterator`` (order kept).

>>> lex = Lexicon({"trotski": "Trotsky", "born": "born", "kherson": "Kherson", "provinc": "province",
...                "1917": "1917", "revolut": "revolution"})
>>> print(DictionaryRestorer(lex).restore("# # 1917 revolut trotski born kherson provinc . `` born '' ."))
## 1917 Revolution Trotsky born Kherson province.
<BLANKLINE>
"Born".

A lexicon for the dictionary baseline is built once from training articles and cached::

    restore lexicon --articles ../shared/data/wiki/train-00.jsonl.xz --limit 2000 --out cache/lexicon-train00-2000
"""

from __future__ import annotations

import json
import re
import time
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator

from restore.chunking import HEADING_MARK, is_heading_start, unit_starts
from restore.errors import RestoreError
from restore.lexicon import LEXICON_FILE, Lexicon
from restore.textio import plural, read_article_texts

BASELINES = ("identity", "dictionary")

# Placeholders for Treebank quotes: NLTK's detokenizer drops a `` that opens a quote,
# so we pass private-use characters (which no text contains) through it instead and
# turn them into '"' afterwards.
_OPEN, _CLOSE = "\ue000", "\ue001"
_QUOTES = {"``": _OPEN, "''": _CLOSE}
_QUOTE_FIXES = (
    (re.compile(_OPEN + r"\s*"), '"'),
    (re.compile(r"\s*" + _CLOSE), '"'),
    # the detokenizer only attaches a period at the very end; inside a unit ("b . 1944") too
    (re.compile(r" ([.?!])(?= |$)"), r"\1"),
)


class IdentityRestorer:
    """The corrupted text as the "restoration" (whitespace normalized).

    >>> list(IdentityRestorer().restore_many(["leon  trotski .", ""]))
    ['leon trotski .', '']
    """

    name = "identity"

    def restore(self, text: str) -> str:
        return " ".join(text.split())

    def restore_many(self, texts: Iterable[str]) -> Iterator[str]:
        return (self.restore(t) for t in texts)


class DictionaryRestorer:
    """Stem -> most frequent surface form, sentence-initial capitals, Treebank detokenization."""

    name = "dictionary"

    def __init__(self, lexicon: Lexicon) -> None:
        self.lexicon = lexicon

    def restore(self, text: str) -> str:
        tokens = text.split()
        starts = unit_starts(tokens)
        paragraphs: list[list[str]] = [[]]
        for a, b in zip(starts, starts[1:] + [len(tokens)]):
            unit = tokens[a:b]
            if not is_heading_start(tokens, a):
                paragraphs[-1].append(self._sentence(unit))
                continue
            # the heading is glued to the sentence after it; it gets a line of its own
            k = next((i for i, t in enumerate(unit) if t != HEADING_MARK), len(unit))
            body = self._sentence(unit[k:])
            paragraphs += [["#" * k + (" " + body if body else "")], []]
        return "\n\n".join(" ".join(p) for p in paragraphs if p)

    def restore_many(self, texts: Iterable[str]) -> Iterator[str]:
        return (self.restore(t) for t in texts)

    def _sentence(self, unit: list[str]) -> str:
        words = [t if t in _QUOTES else self.lexicon.surface(t) for t in unit]
        first = next((i for i, w in enumerate(words) if any(ch.isalpha() for ch in w)), None)
        if first is not None:
            words[first] = words[first][:1].upper() + words[first][1:]
        return detokenize(words)


@lru_cache(maxsize=1)
def _detokenizer():
    from nltk.tokenize.treebank import TreebankWordDetokenizer

    return TreebankWordDetokenizer()


def detokenize(words: list[str]) -> str:
    """NLTK's Treebank detokenizer on Treebank tokens, with quotes and inner periods fixed.

    >>> detokenize(["He", "said", "``", "hello", ",", "world", "''", "(", "b", ".", "1944", ")", "."])
    'He said "hello, world" (b. 1944).'
    """
    text = _detokenizer().detokenize([_QUOTES.get(w, w) for w in words])
    for pattern, replacement in _QUOTE_FIXES:
        text = pattern.sub(replacement, text)
    return text


# --- choosing and loading a baseline ------------------------------------------------------------
def load_lexicon(directory: str | Path) -> Lexicon:
    """The lexicon in ``directory`` (a model directory or a cache made by :func:`main`)."""
    path = Path(directory)
    if not path.is_dir():
        raise RestoreError(f"{path}: lexicon directory does not exist (build one: restore lexicon --articles FILE --out DIR)")
    return Lexicon.load(path)


def make_baseline(name: str, lexicon_dir: str | Path | None = None):
    """``identity`` or ``dictionary`` (which needs a directory holding ``lexicon.json.gz``)."""
    if name == "identity":
        return IdentityRestorer()
    if name == "dictionary":
        if lexicon_dir is None:
            raise RestoreError(
                "the dictionary baseline needs a lexicon: pass --lexicon DIR (a model directory or one built with "
                "`restore lexicon --articles TRAIN.jsonl.xz --out DIR`)"
            )
        return DictionaryRestorer(load_lexicon(lexicon_dir))
    raise RestoreError(f"unknown baseline {name!r}: choose one of {', '.join(BASELINES)}")


# --- building a lexicon from training articles (run once, cache outside the repo) ---------------
def build_lexicon(articles: str | Path, out: str | Path, limit: int | None = None) -> str:
    """Build the dictionary baseline's lexicon from an articles file into ``out`` (created);
    returns the summary line (``restore lexicon``)."""
    start = time.perf_counter()
    texts = read_article_texts(articles, limit)
    lexicon = Lexicon.build(_progress(texts))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lexicon.save(out)
    words = sum(len(t.split()) for t in texts)
    seconds = time.perf_counter() - start
    info = {"articles": str(articles), "limit": limit, "n_articles": len(texts), "words": words,
            "entries": len(lexicon.forms), "seconds": round(seconds, 1)}  # fmt: skip
    (out / "lexicon-info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return (f"lexicon: {plural(len(lexicon.forms), 'stem')} from {plural(len(texts), 'article')} ({plural(words, 'word')}) in {seconds:.0f} s "
            f"({words / max(seconds, 1e-9):.0f} words/s, cpu) -> {out / LEXICON_FILE}")  # fmt: skip


def _progress(texts: list[str]) -> Iterator[str]:
    from restore.progress import progress

    return iter(progress(texts, desc="lexicon", unit="article"))

