"""Chunking: the one rule that cuts documents into model-sized pieces, at training and at restore time.

A corrupted document is one line of tokens; the only sentence boundaries still
visible in it are sentence-final ``.``/``?``/``!`` tokens (with closing quotes or
brackets that follow them) and the ``# #`` runs that headings leave. We cut
there into *units*, then pack consecutive units greedily into *chunks* of at most
``max_source_words`` tokens; a heading always starts a new chunk.

Training (``restore.data``) applies the very same rule to the token stream of an
article, keeping only the cuts that fall between two Punkt sentences, so that
every source chunk is aligned with the exact span of original text it came from.
At restore time :func:`document_chunks` cuts every line of a document so, and
:func:`assemble` joins the restored chunks back into the document.

>>> toks = "# # earli life born 1879 . father farmer . # # career join armi .".split()
>>> [" ".join(c) for c in chunk_tokens(toks, ChunkConfig(max_source_words=7))]
['# # earli life born 1879 .', 'father farmer .', '# # career join armi .']
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

TERMINATORS = frozenset({".", "?", "!"})
# Tokens that may follow a sentence-final terminator inside the same sentence
# (the tokenizer splits `."` into `. ''` and `.)` into `. )`).
CLOSERS = frozenset({"''", "'", ")", "]", "}", "”", "’", "»"})
HEADING_MARK = "#"
# Restored chunks are joined with a space, except before a heading, which opens a new paragraph
# (as in the training targets): see :func:`chunk_joiner`.
CHUNK_JOINER = " "
HEADING_JOINER = "\n\n"
# Restored lines of a document are joined with a blank line (each line is restored on its own).
LINE_JOINER = "\n\n"


@dataclass(frozen=True)
class ChunkConfig:
    """How documents are cut into chunks (saved with every model in ``restore.json``)."""

    # Corrupted words (whitespace-separated tokens of the corrupted text) per chunk; not subword
    # ids, which is what the ``batch_tokens`` budgets count. Older ``restore.json`` files call it
    # ``max_source_tokens`` (read by :mod:`restore.checkpoint`).
    max_source_words: int = 48

    def __post_init__(self) -> None:
        if not isinstance(self.max_source_words, int) or self.max_source_words < 4:
            raise ValueError(f"max_source_words must be an integer >= 4, got {self.max_source_words!r}")


def is_heading_start(tokens: Sequence[str], i: int) -> bool:
    """True where a run of two or more ``#`` tokens (a Markdown heading) starts at ``i``.

    >>> is_heading_start(["x", ".", "#", "#", "y"], 2), is_heading_start(["c", "#", "code"], 1)
    (True, False)
    """
    return (
        i + 1 < len(tokens)
        and tokens[i] == HEADING_MARK
        and tokens[i + 1] == HEADING_MARK
        and (i == 0 or tokens[i - 1] != HEADING_MARK)
    )


def unit_starts(tokens: Sequence[str]) -> list[int]:
    """Indices at which a new unit begins (always 0 for non-empty input).

    >>> unit_starts("born 1879 . '' father farmer ! # # career".split())
    [0, 4, 7]
    """
    starts = [0] if tokens else []
    i, n = 0, len(tokens)
    while i < n:
        if tokens[i] in TERMINATORS:
            j = i + 1
            while j < n and tokens[j] in CLOSERS:
                j += 1
            if j < n and j != starts[-1]:
                starts.append(j)
            i = j
            continue
        if i > 0 and is_heading_start(tokens, i) and starts[-1] != i:
            starts.append(i)
        i += 1
    return starts


def pack_units(lengths: Sequence[int], headings: Sequence[bool], max_tokens: int) -> list[list[int]]:
    """Group consecutive units (given their lengths) into chunks of at most ``max_tokens``.

    A unit longer than ``max_tokens`` becomes a chunk on its own; a heading unit
    always opens a new chunk. Returns the unit indices of each chunk.

    >>> pack_units([3, 2, 4, 9, 1], [False, False, True, False, False], 6)
    [[0, 1], [2], [3], [4]]
    """
    chunks: list[list[int]] = []
    size = 0
    for k, (length, heading) in enumerate(zip(lengths, headings)):
        if chunks and not heading and size + length <= max_tokens:
            chunks[-1].append(k)
            size += length
        else:
            chunks.append([k])
            size = length
    return chunks


def chunk_tokens(tokens: Sequence[str], config: ChunkConfig) -> list[list[str]]:
    """Cut one corrupted document (a token list) into chunks, in order, losing no token.

    A unit longer than the limit (e.g. a huge line with no sentence boundary) is
    hard-split into pieces of ``max_source_words``.

    >>> [len(c) for c in chunk_tokens(["w"] * 10, ChunkConfig(max_source_words=4))]
    [4, 4, 2]
    """
    limit = config.max_source_words
    starts = unit_starts(tokens)
    units: list[Sequence[str]] = []
    headings: list[bool] = []
    for a, b in zip(starts, starts[1:] + [len(tokens)]):
        for p in range(a, b, limit):
            units.append(tokens[p : min(p + limit, b)])
            headings.append(p == a and is_heading_start(tokens, a))
    groups = pack_units([len(u) for u in units], headings, limit)
    return [[tok for k in group for tok in units[k]] for group in groups]


def chunk_text(source: str, config: ChunkConfig) -> list[str]:
    """Chunks of a corrupted document given as text (any whitespace separates tokens).

    >>> chunk_text("a b . c d . e", ChunkConfig(max_source_words=4))
    ['a b .', 'c d . e']
    """
    return [" ".join(chunk) for chunk in chunk_tokens(source.split(), config)]


def starts_with_heading(chunk: str) -> bool:
    """True if a chunk (corrupted text) begins with a heading marker run.

    >>> starts_with_heading("# # career join armi ."), starts_with_heading("c # code")
    (True, False)
    """
    return chunk.startswith(HEADING_MARK + " " + HEADING_MARK)


def chunk_joiner(chunk: str) -> str:
    """What goes before the restoration of ``chunk`` when it follows another chunk of its line.

    >>> chunk_joiner("# # career join armi ."), chunk_joiner("father farmer .")
    ('\\n\\n', ' ')
    """
    return HEADING_JOINER if starts_with_heading(chunk) else CHUNK_JOINER


# --- documents <-> chunks (restore time) ---------------------------------------------------------
def document_chunks(document: str, config: ChunkConfig) -> tuple[list[str], list[str]]:
    """Chunks of a corrupted document, with the text that goes before each chunk's output.

    Every line is chunked on its own; blank lines are skipped.

    >>> document_chunks("# # life born 1879 . father farmer .\\n\\nsecond doc", ChunkConfig(max_source_words=6))
    (['# # life born 1879 .', 'father farmer .', 'second doc'], ['', ' ', '\\n\\n'])
    >>> document_chunks("  \\n", ChunkConfig())
    ([], [])
    """
    chunks: list[str] = []
    joiners: list[str] = []
    for line in document.splitlines():
        for k, chunk in enumerate(chunk_text(line, config)):
            if not chunks:
                joiners.append("")
            elif k == 0:
                joiners.append(LINE_JOINER)
            else:
                joiners.append(chunk_joiner(chunk))
            chunks.append(chunk)
    return chunks, joiners


def assemble(outputs: Sequence[str], joiners: Sequence[str]) -> str:
    """A restored document from its chunk outputs (see :func:`document_chunks`).

    Runs of spaces a model may emit are tidied to one (no token changes: whitespace only
    separates tokens), and each chunk's output is stripped before it is joined.

    >>> assemble(["He was born.", "## Career\\n\\nHe ran."], ["", "\\n\\n"])
    'He was born.\\n\\n## Career\\n\\nHe ran.'
    >>> assemble(["He  was   born. ", "He ran.  \\nOn."], ["", " "])
    'He was born. He ran.\\nOn.'
    """
    return "".join(joiner + tidy_spaces(output) for joiner, output in zip(joiners, outputs, strict=True))


def tidy_spaces(text: str) -> str:
    """A chunk's output stripped, spaces and tabs before a line break dropped, other runs of them made one.

    >>> tidy_spaces(" He  ran. \\nOn. ")
    'He ran.\\nOn.'
    """
    return _SPACE_RUN.sub(" ", _TRAILING_SPACE.sub("\n", text.strip()))


_SPACE_RUN = re.compile(r"[ \t]{2,}")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")


def split_in_half(chunk: str) -> list[str]:
    """Two halves of a chunk: at the middle token, or (one huge token) at the middle character.

    >>> split_in_half("a b c d e"), split_in_half("abcdef")
    (['a b', 'c d e'], ['abc', 'def'])
    """
    tokens = chunk.split()
    if len(tokens) > 1:
        half = len(tokens) // 2
        return [" ".join(tokens[:half]), " ".join(tokens[half:])]
    half = len(chunk) // 2
    return [chunk[:half], chunk[half:]]
