"""Faithful restoration: every restored chunk, and every line as a whole, corrupts back to its source.

The Restorer (:mod:`restore.infer`) hands its outputs here; what passes is decided by
:mod:`restore.faithful_check` (``corrupt(output) == source``), how a text is edited until it
passes by :mod:`restore.repair`. This module decides what to do with a failing output:

- :func:`make_faithful`: the batch driver: outputs that pass are kept; the failing chunks are
  re-decoded together with a beam (one call), the first passing hypothesis wins, else the
  closest one is repaired (:func:`settle_chunk`, whose :class:`ChunkOutcome` says which);
  :class:`FaithfulStats` counts what happened (the end-of-run summary and ``restore eval``);
- :func:`join_faithful`: chunks that pass alone can fail together (Punkt reads across a
  junction: ``1346.`` + ``, probably`` is one token ``1346.``), so a line's joined text is
  checked as the user will corrupt it (:func:`draft_line`), and failing junctions are
  re-decoded or repaired there (:func:`finish_line`).

The pieces around a re-decode are pure functions, so that :mod:`restore.faithful_window` (what
the Restorer runs) can check a whole window in worker processes and re-decode its failing
chunks, and then its failing junctions, in one call each.

>>> beams = lambda sources: [["Born in 1879."] for _ in sources]
>>> make_faithful(["born 1879 .", "born 1880 ."], ["Born in 1879.", "Born in 1899."], beams)
['Born in 1879.', 'Born in 1880.']
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, NamedTuple, Sequence

from restore.chunking import TERMINATORS
from restore.corrupt import corrupt_tokens
from restore.faithful_check import check, check_content, choose_faithful, closest
from restore.lexicon import Lexicon
from restore.repair import attaches_left, repair
from restore.surface_forms import SurfaceForms, as_surface_forms


# --- batch driver and statistics -------------------------------------------------------------
@dataclass
class FaithfulStats:
    """How many chunks needed help to be faithful (end-of-run summary, ``restore eval``)."""

    chunks: int = 0
    failed_greedy: int = 0  # the first (greedy) output did not corrupt back to its source
    fixed_by_beam: int = 0  # ... and a beam hypothesis did
    repaired: int = 0  # ... and none did: the closest one was repaired
    still_unfaithful_exact: int = 0  # after repair, the round trip still differs (punctuation)
    still_unfaithful_content: int = 0  # after repair, even content tokens differ (should be 0)
    # Junctions: every chunk passes alone, but the text read as a whole (Punkt sees across chunks) may not.
    failed_junctions: int = 0  # junctions of two faithful chunks whose joined text is not faithful
    junctions_fixed_by_beam: int = 0  # ... fixed by a beam re-decode of the chunks around them together
    junctions_repaired: int = 0  # ... fixed by editing the joined text
    unfaithful_lines: int = 0  # lines (what a user corrupts as one text) still unfaithful as a whole

    def merge(self, other: "FaithfulStats") -> "FaithfulStats":
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)
        return self

    def as_dict(self) -> dict[str, float]:
        """Counts plus shares of all chunks (for JSON reports).

        >>> FaithfulStats(chunks=4, failed_greedy=2, fixed_by_beam=1, repaired=1).as_dict()["repaired_share"]
        0.25
        """
        counts = asdict(self)
        shares = {f"{k}_share": (v / self.chunks if self.chunks else 0.0) for k, v in counts.items() if k != "chunks"}
        return {**counts, **shares}

    def summary(self) -> str:
        """One line for the end-of-run summary; it ends with the lines that are still not faithful
        (the output's own round trip differs from its input there; ``.jsonl`` records say
        ``"faithful": false``).

        >>> FaithfulStats(chunks=200, failed_greedy=30, fixed_by_beam=20, repaired=10).summary()
        'faithful: 200 chunks, 15.0% failed first decode, 10.0% fixed by beam, 5.0% repaired, 0 inexact, 0 content-unfaithful; 0 unfaithful lines'
        """
        from restore.textio import plural

        def pct(v: int) -> str:
            return f"{100 * v / self.chunks:.1f}%" if self.chunks else "0.0%"

        junctions = (
            f", {plural(self.failed_junctions, 'failed junction')} ({self.junctions_fixed_by_beam} fixed by beam, "
            f"{self.junctions_repaired} repaired)"
            if self.failed_junctions
            else ""
        )
        return (
            f"faithful: {plural(self.chunks, 'chunk')}, {pct(self.failed_greedy)} failed first decode, "
            f"{pct(self.fixed_by_beam)} fixed by beam, {pct(self.repaired)} repaired, "
            f"{self.still_unfaithful_exact} inexact, {self.still_unfaithful_content} content-unfaithful{junctions}; "
            f"{plural(self.unfaithful_lines, 'unfaithful line')}"
        )


Redecoder = Callable[[list[str]], list[list[str]]]
# What happened to a chunk (ChunkOutcome.how; the ``outcomes`` of make_faithful and join_faithful;
# restore.spans reports them):
PASSED = "passed"  # its output corrupted back to its source as generated
REDECODED = "redecoded"  # a beam re-decode (of it, or of a failing junction around it) passed
REPAIRED = "repaired"  # none passed: the text was edited (restore.repair)


@dataclass(frozen=True)
class ChunkOutcome:
    """A chunk's faithful text and how it came about (:data:`PASSED`, :data:`REDECODED`,
    :data:`REPAIRED`); ``exact``/``content``: whether a repaired text passes the exact / the
    content-token round trip (repair can fall short on punctuation)."""

    text: str
    how: str = PASSED
    exact: bool = True
    content: bool = True

    def count(self, stats: FaithfulStats) -> None:
        """Add this chunk's fate to ``stats`` (its failed first output is counted by the caller)."""
        stats.fixed_by_beam += self.how == REDECODED
        stats.repaired += self.how == REPAIRED
        stats.still_unfaithful_exact += not self.exact
        stats.still_unfaithful_content += not self.content


def settle_chunk(source: str, output: str, hypotheses: Sequence[str], forms: SurfaceForms) -> ChunkOutcome:
    """The faithful text of a chunk whose ``output`` failed: the first passing hypothesis, else the
    closest of the output and the hypotheses, repaired (a pure function: it may run in a worker process).

    >>> settle_chunk("born 1880 .", "Born 1899.", ["Born in 1879.", "Born in 1880."], SurfaceForms())
    ChunkOutcome(text='Born in 1880.', how='redecoded', exact=True, content=True)
    >>> settle_chunk("born 1881 .", "Born.", [], SurfaceForms()).text
    'Born 1881.'
    """
    chosen = choose_faithful(hypotheses, source)
    if chosen is not None:
        return ChunkOutcome(chosen, REDECODED)
    text = repair(closest([output, *hypotheses], source), source, forms)
    exact = check(text, source)
    return ChunkOutcome(text, REPAIRED, exact, exact or check_content(text, source))


def make_faithful(
    sources: Sequence[str],
    outputs: Sequence[str],
    redecode: Redecoder | None = None,
    lexicon: Lexicon | SurfaceForms | None = None,
    stats: FaithfulStats | None = None,
    outcomes: list[str] | None = None,
) -> list[str]:
    """Faithful versions of ``outputs`` (one per source chunk, same order).

    Passing outputs are kept. The failing chunks are re-decoded in ONE call,
    ``redecode(failing_sources) -> [hypotheses per source, best first]`` (e.g. a beam of 4),
    and the first passing hypothesis is taken; if none passes, the closest of the output and
    the hypotheses is repaired (:func:`settle_chunk`). ``stats`` (if given) is updated; ``outcomes``
    (if given) is extended with each chunk's outcome (:data:`PASSED`, :data:`REDECODED` or :data:`REPAIRED`).
    (:mod:`restore.faithful_window` does the same for a window of documents, in worker processes.)

    >>> stats = FaithfulStats()
    >>> beams = lambda srcs: [["Born in 1879.", "Born in 1880."] for _ in srcs]
    >>> make_faithful(["born 1879 .", "born 1880 .", "born 1881 ."], ["Born in 1879.", "Born 1899.", "Born."],
    ...               beams, stats=stats)
    ['Born in 1879.', 'Born in 1880.', 'Born 1881.']
    >>> stats.summary()
    'faithful: 3 chunks, 66.7% failed first decode, 33.3% fixed by beam, 33.3% repaired, 0 inexact, 0 content-unfaithful; 0 unfaithful lines'
    """
    stats = stats if stats is not None else FaithfulStats()
    forms = as_surface_forms(lexicon)
    result = list(outputs)
    failing = [i for i, (out, src) in enumerate(zip(outputs, sources)) if not check(out, src)]
    stats.chunks += len(outputs)
    stats.failed_greedy += len(failing)
    beams = redecode([sources[i] for i in failing]) if redecode and failing else [[] for _ in failing]
    decided = [PASSED] * len(outputs)
    for i, hypotheses in zip(failing, beams):
        outcome = settle_chunk(sources[i], outputs[i], hypotheses, forms)
        outcome.count(stats)
        result[i], decided[i] = outcome.text, outcome.how
    if outcomes is not None:
        outcomes.extend(decided)
    return result


# --- junctions: a line read as a whole -------------------------------------------------------------
# A sentence that starts with punctuation (its stopwords were dropped: "From there, ...") needs a
# word before it, or Punkt reads on past the period ("1346. , probably" keeps "1346." whole).
SENTENCE_OPENER = "Then"  # a stopword: it leaves the corrupted tokens as they are


@dataclass
class LineDraft:
    """A line whose chunks each pass alone, read as one text (:func:`draft_line`): ``text`` when it
    passes as a whole, else the runs of chunks joined by failing junctions (``spans``, chunk indices)
    and the source of each run (``span_sources``, what is re-decoded with beams)."""

    sources: list[str]
    outputs: list[str]
    joiners: list[str]
    text: str | None = None
    failing_junctions: int = 0
    spans: list[list[int]] = field(default_factory=list)
    span_sources: list[str] = field(default_factory=list)


def draft_line(sources: Sequence[str], outputs: Sequence[str], joiners: Sequence[str]) -> LineDraft:
    """Check a line's joined text; where it fails, find the junctions that fail (pure).

    >>> draft_line(["born 1879 .", "die 1940 ."], ["Born in 1879.", "Died in 1940."], ["", " "]).text
    'Born in 1879. Died in 1940.'
    >>> draft = draft_line(["plagu reach crimea 1346 .", ", probabl carri flea"],
    ...                    ["The plague reached Crimea in 1346.", ", Probably carried by fleas"], ["", " "])
    >>> draft.text, draft.spans, draft.span_sources
    (None, [[0, 1]], ['plagu reach crimea 1346 . , probabl carri flea'])
    """
    draft = LineDraft(list(sources), list(outputs), list(joiners))
    text = "".join(j + o for j, o in zip(joiners, outputs, strict=True))
    if check(text, " ".join(sources)):
        draft.text = text
        return draft
    failing = [
        k for k in range(1, len(outputs))
        if not check(outputs[k - 1] + joiners[k] + outputs[k], sources[k - 1] + " " + sources[k])
    ]  # fmt: skip
    draft.failing_junctions = len(failing)
    for k in failing:  # runs of chunks joined by failing junctions
        if draft.spans and draft.spans[-1][-1] == k - 1:
            draft.spans[-1].append(k)
        else:
            draft.spans.append([k - 1, k])
    draft.span_sources = [" ".join(sources[i] for i in span) for span in draft.spans]
    return draft


class FinishedLine(NamedTuple):
    """A line's faithful text, its counts, and the chunks changed while joining them (chunk index
    in the line -> :data:`REDECODED` or :data:`REPAIRED`; see :func:`mark`)."""

    text: str
    stats: FaithfulStats
    changed: dict[int, str]


def finish_line(draft: LineDraft, beams: Sequence[Sequence[str]], forms: SurfaceForms) -> FinishedLine:
    """The faithful text of a drafted line, given the beam hypotheses of its spans, its counts and
    the chunks changed (pure).

    Each span takes its first passing hypothesis, else a sentence opener is put in where a
    sentence starts with punctuation, else the joined text of the span is repaired; a line still
    unfaithful is repaired as a whole (last resort).
    """
    stats = FaithfulStats(failed_junctions=draft.failing_junctions)
    changed: dict[int, str] = {}
    if draft.text is not None:
        return FinishedLine(draft.text, stats, changed)
    sources, outputs, joiners = draft.sources, draft.outputs, draft.joiners
    units: list[str | None] = list(outputs)  # the text of each chunk, or of a whole span at its first chunk
    for span, span_source, hypotheses in zip(draft.spans, draft.span_sources, beams):
        joined = units[span[0]] + "".join(joiners[i] + outputs[i] for i in span[1:])
        chosen = choose_faithful(hypotheses, span_source)
        junctions = len(span) - 1
        mark(changed, span, REDECODED if chosen is not None else REPAIRED)
        if chosen is not None:
            stats.junctions_fixed_by_beam += junctions
        else:
            stats.junctions_repaired += junctions
            chosen = _open_sentences(joined, [sources[i] for i in span], [outputs[i] for i in span],
                                     [joiners[i] for i in span], span_source, forms)  # fmt: skip
        units[span[0]] = chosen
        for i in span[1:]:
            units[i] = None
    source = " ".join(sources)
    text = "".join(j + u for j, u in zip(joiners, units) if u is not None)
    if not check(text, source):
        repaired = repair(text, source, forms)
        if repaired != text:
            mark(changed, range(len(outputs)), REPAIRED)
        text = repaired
        stats.unfaithful_lines += not check(text, source)
    return FinishedLine(text, stats, changed)


def mark(changed: dict[int, str], chunks: Iterable[int], outcome: str) -> None:
    """Record ``outcome`` for ``chunks`` (a repair outranks a re-decode).

    >>> changed = {0: REPAIRED}
    >>> mark(changed, [0, 1], REDECODED)
    >>> changed
    {0: 'repaired', 1: 'redecoded'}
    """
    for k in chunks:
        if changed.get(k) != REPAIRED:
            changed[k] = outcome


def join_faithful(
    sources: Sequence[str],
    outputs: Sequence[str],
    joiners: Sequence[str],
    redecode: Redecoder | None = None,
    lexicon: Lexicon | SurfaceForms | None = None,
    stats: FaithfulStats | None = None,
    outcomes: list[str] | None = None,
) -> str:
    """One line's text from its chunk outputs (each faithful alone), faithful as a whole.

    The joined text must corrupt back to the joined sources, as when the user corrupts the
    line as one text. Where two neighbours fail together, the chunks around the junction are
    re-decoded together (``redecode``, one call; the first passing hypothesis wins), else a
    sentence opener is put in where a sentence starts with punctuation, else the joined text
    of the two is repaired. A line still unfaithful is repaired as a whole (last resort).
    (:func:`draft_line` and :func:`finish_line`, the two halves around the re-decode.)
    ``outcomes`` (if given: one per chunk of the line) marks the chunks changed here.

    >>> sources = ["plagu reach crimea 1346 .", ", probabl carri flea"]
    >>> outputs = ["The plague reached Crimea in 1346.", ", Probably carried by fleas"]
    >>> check(" ".join(outputs), " ".join(sources))
    False
    >>> join_faithful(sources, outputs, ["", " "], lexicon=Lexicon({"probabl": "probably"}))
    'The plague reached Crimea in 1346. Then, probably carried by fleas'
    """
    stats = stats if stats is not None else FaithfulStats()
    draft = draft_line(sources, outputs, joiners)
    spans = draft.span_sources
    beams = redecode(spans) if redecode and spans else [[] for _ in spans]
    text, counts, changed = finish_line(draft, beams, as_surface_forms(lexicon))
    stats.merge(counts)
    for k, outcome in changed.items() if outcomes is not None else ():
        if outcomes[k] != REPAIRED:
            outcomes[k] = outcome
    return text


def _open_sentences(
    joined: str, sources: list[str], outputs: list[str], joiners: list[str], source: str, forms: SurfaceForms
) -> str:
    """Faithful text of a span: put :data:`SENTENCE_OPENER` before a chunk that opens a sentence
    with punctuation (lowering the word after it where that corrupts the same), else repair.

    >>> _open_sentences("", ["born 1879 .", "; left"], ["Born in 1879.", "; He left"], ["", " "],
    ...                 "born 1879 . ; left", SurfaceForms())
    'Born in 1879. Then; he left'
    """
    parts = [outputs[0]]
    for k in range(1, len(outputs)):
        first, last = sources[k].split()[:1], sources[k - 1].split()[-1:]
        right = outputs[k]
        if first and last and last[0] in TERMINATORS and attaches_left(first[0]) and right.startswith(first[0]):
            rest = right[len(first[0]) :]
            word = rest.lstrip()
            head = word.split(" ", 1)[0]
            stems = corrupt_tokens(head)
            # a common word (a stopword, or lower case in the lexicon) no longer starts the sentence
            common = not stems or bool(forms.lexicon and forms.lexicon.forms.get(stems[0], "")[:1].islower())
            lowered = word[:1].lower() + word[1:]
            if word[:1].isupper() and common and corrupt_tokens(lowered.split(" ", 1)[0]) == stems:
                rest = rest[: len(rest) - len(word)] + lowered
            right = SENTENCE_OPENER + first[0] + rest
        parts.append(joiners[k] + right)
    opened = "".join(parts)
    return opened if check(opened, source) else repair(joined, source, forms)
