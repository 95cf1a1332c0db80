"""Spans: which words of a restoration realize an input token, and which the model inserted.

A restored text mixes two kinds of words: those that realize a token of the corrupted input (a
stem such as ``influenti`` written ``influential``, a number, a punctuation mark) and those the
model inserted (stopwords: function words that the corruption dropped). Every output word, a
token as :func:`restore.corrupt.corrupt` reads the text (Punkt sentences, Treebank words, so
``Lenin's`` is ``Lenin`` + ``'s``), located in the text (:func:`restore.repair.located_words`),
gets the index of the input token it realizes in the whole document's input tokens
(``source.split()``), or ``None`` where it was inserted.

Spans are computed after the fact, from the restored text and its source alone. Where the
output corrupts back to exactly its source (a faithful restoration, checked as
:mod:`restore.faithful_check` does), every input token is realized by exactly one output word,
in order, and ``corrupt(word) == source_tokens[span.source]``; elsewhere the words whose stems
match the source in order (:class:`difflib.SequenceMatcher`) are linked and the rest are
``None``. Punctuation tokens of the input are input tokens like the others.

>>> source = "influenti politician earli day soviet union ."
>>> restored = "He was an influential politician of the early days of the Soviet Union."
>>> [(s.text, s.source) for s in restored_spans(restored, source)][:5]
[('He', None), ('was', None), ('an', None), ('influential', 0), ('politician', 1)]
>>> inserted_share(restored_spans(restored, source))
(7, 13)
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass
from typing import Sequence

from restore.chunking import ChunkConfig, document_chunks
from restore.repair import located_words

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")


@dataclass(frozen=True)
class Span:
    """One output word: ``text == restored[start:end]``; ``source``: the index of the input token
    it realizes (into ``source.split()``), ``None`` where the model inserted it."""

    start: int
    end: int
    text: str
    source: int | None

    @property
    def inserted(self) -> bool:
        return self.source is None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ChunkSpan:
    """One chunk of the input (input tokens ``start:end``) and what faithfulness did to it:
    ``passed`` (the model's output corrupted back as generated), ``redecoded`` (a beam re-decode
    passed), ``repaired`` (the text was edited), or ``None`` (faithfulness was off)."""

    start: int
    end: int
    outcome: str | None

    def as_dict(self) -> dict:
        return asdict(self)


def restored_spans(restored: str, source: str) -> list[Span]:
    """The spans of every word of ``restored`` (see the module docstring), in text order.

    The text is read as one document, as the faithfulness check of a line reads it; where that
    does not give back the source exactly (a document of several lines, each corrupted on its
    own), paragraph by paragraph (blank lines end sentences), whichever links more tokens.

    >>> [(s.text, s.source) for s in restored_spans("Born in 1879.\\n\\n## Career\\n\\nHe left.", "born 1879 .\\n# # career left .")]
    [('Born', 0), ('in', None), ('1879', 1), ('.', 2), ('#', 3), ('#', 4), ('Career', 5), ('He', None), ('left', 6), ('.', 7)]
    """
    tokens = source.split()
    best: list[Span] = []
    best_linked = -1
    for words in (located_words(restored), _paragraph_words(restored)):
        if words is None:
            continue
        spans = _linked(restored, words, tokens)
        linked = sum(span.source is not None for span in spans)
        if linked > best_linked:
            best, best_linked = spans, linked
        if linked == len(tokens) == sum(stem is not None for *_, stem in words):
            break  # the whole text corrupts back to the source exactly: nothing to compare
    if best_linked < 0:  # a token that cannot be located (never seen): whitespace-separated words
        best = [Span(m.start(), m.end(), m.group(), None) for m in re.finditer(r"\S+", restored)]
    return best


def _linked(restored: str, words: list[tuple[int, int, str | None]], tokens: list[str]) -> list[Span]:
    kept = [k for k, (_, _, stem) in enumerate(words) if stem is not None]
    sources: dict[int, int] = {}
    if [words[k][2] for k in kept] == tokens:
        sources = {k: j for j, k in enumerate(kept)}
    else:
        matcher = difflib.SequenceMatcher(None, [words[k][2] for k in kept], tokens, autojunk=False)
        for a, b, size in matcher.get_matching_blocks():
            sources.update((kept[a + i], b + i) for i in range(size))
    return [Span(start, end, restored[start:end], sources.get(k)) for k, (start, end, _) in enumerate(words)]


def _paragraph_words(text: str) -> list[tuple[int, int, str | None]] | None:
    """:func:`located_words` of every paragraph (text between blank lines) on its own."""
    words: list[tuple[int, int, str | None]] = []
    start = 0
    for paragraph_break in [*_PARAGRAPH_BREAK.finditer(text), None]:
        end = paragraph_break.start() if paragraph_break else len(text)
        located = located_words(text[start:end])
        if located is None:
            return None
        words.extend((start + a, start + b, stem) for a, b, stem in located)
        start = paragraph_break.end() if paragraph_break else end
    return words


def chunk_spans(source: str, chunking: ChunkConfig, outcomes: Sequence[str] = ()) -> list[ChunkSpan]:
    """The chunks the Restorer cut ``source`` into (:func:`restore.chunking.document_chunks`), as
    ranges of input tokens, with each one's outcome (``outcomes``, one per chunk; none: ``None``).

    >>> chunk_spans("a b . c d .\\n\\ne f", ChunkConfig(max_source_words=4), ["passed", "repaired", "passed"])
    [ChunkSpan(start=0, end=3, outcome='passed'), ChunkSpan(start=3, end=6, outcome='repaired'), ChunkSpan(start=6, end=8, outcome='passed')]
    """
    chunks, _ = document_chunks(source, chunking)
    if outcomes and len(outcomes) != len(chunks):
        raise ValueError(f"{len(outcomes)} outcomes for {len(chunks)} chunks")
    result, start = [], 0
    for k, chunk in enumerate(chunks):
        end = start + len(chunk.split())
        result.append(ChunkSpan(start, end, outcomes[k] if outcomes else None))
        start = end
    return result


def is_word(text: str) -> bool:
    """A span that is a word: it has a letter or a digit (punctuation is not counted as words).

    >>> is_word("1879"), is_word("n't"), is_word(",")
    (True, True, False)
    """
    return any(c.isalnum() for c in text)


def inserted_share(spans: Sequence[Span]) -> tuple[int, int]:
    """(inserted words, words) among ``spans``, punctuation left out (:func:`is_word`)."""
    words = [span for span in spans if is_word(span.text)]
    return sum(span.inserted for span in words), len(words)


def inserted_words(outputs: Sequence[str], sources: Sequence[str], references: Sequence[str] | None = None) -> dict:
    """The share of inserted words (%) in ``outputs`` and, given the ``references`` (the original
    texts), in them: what ``restore eval`` reports beside BLEU, with its line.

    >>> inserted_words(["He was born in 1879."], ["born 1879 ."], ["He was born in 1879."])["line"]
    'inserted words: 60.00% of 5 output words (reference 60.00% of 5; punctuation excluded)'
    """
    inserted, words = _inserted_totals(outputs, sources)
    result: dict = {"output": 100.0 * inserted / words if words else 0.0, "output_words": words}
    reference = ""
    if references is not None:
        ref_inserted, ref_words = _inserted_totals(references, sources)
        result.update(reference=100.0 * ref_inserted / ref_words if ref_words else 0.0, reference_words=ref_words)
        reference = f" (reference {result['reference']:.2f}% of {ref_words:,}; punctuation excluded)"
    result["line"] = f"inserted words: {result['output']:.2f}% of {words:,} output words" + (reference or " (punctuation excluded)")
    return result


def _inserted_totals(texts: Sequence[str], sources: Sequence[str]) -> tuple[int, int]:
    counts = [inserted_share(restored_spans(text, source)) for text, source in zip(texts, sources, strict=True)]
    return sum(inserted for inserted, _ in counts), sum(words for _, words in counts)
