"""Faithfulness of a window of documents: checks in worker processes, re-decodes in two batches.

The Restorer (:mod:`restore.infer`) drafts a window of chunks on the device and hands the window
here. :func:`faithful_documents` gives the same texts and counts as :func:`restore.faithful.make_faithful`
on the window's chunks followed by :func:`restore.faithful.join_faithful` on each line, in this order:

1. every line's chunks are checked, and the lines whose chunks all pass are read as one text
   (:func:`restore.faithful.draft_line`);
2. the failing chunks of the whole window are re-decoded with beams in ONE call;
3. the lines with failing chunks settle them (:func:`restore.faithful.settle_chunk`: the first
   passing hypothesis, else repair) and are read as one text;
4. the spans around the failing junctions of the whole window are re-decoded in ONE call;
5. those lines are finished (:func:`restore.faithful.finish_line`) and the documents assembled.

Steps 1, 3 and 5 are pure functions of a line (a document's chunks between line breaks: what a
user corrupts as one text), which corrupt text back (Punkt, the Treebank tokenizer, the
lemmatizer and the stemmer, all in Python); lines go to a pool of worker processes
when the generator leaves cores free (:func:`check_workers`); with overlap (on CUDA) the device
generates the next window meanwhile. Without a pool they run here, in this process.

>>> beams = lambda sources: [["Born in 1879."] for _ in sources]
>>> plans = [(["born 1879 ."], [""]), (["born 1880 .", "die 1940 ."], ["", " "])]
>>> [d.text for d in faithful_documents(plans, ["Born 1899.", "Born 1880.", "Died in 1940."], beams)]
['Born in 1879.', 'Born 1880. Died in 1940.']
"""

from __future__ import annotations

import math
import os
import pickle
import signal
import tempfile
import weakref
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

from restore.chunking import LINE_JOINER, starts_with_heading, tidy_spaces
from restore.faithful import (
    PASSED,
    REPAIRED,
    ChunkOutcome,
    FaithfulStats,
    FinishedLine,
    LineDraft,
    Redecoder,
    draft_line,
    finish_line,
    settle_chunk,
)
from restore.faithful_check import check
from restore.lexicon import Lexicon
from restore.surface_forms import SurfaceForms, as_surface_forms

Plan = tuple[list[str], list[str]]  # a document's chunks and joiners (restore.chunking.document_chunks)
# Tasks per worker and step: enough to even out documents of different sizes, few enough to keep
# the cost of sending them (pickling a few hundred short strings) small.
TASKS_PER_WORKER = 4


# --- how many worker processes -------------------------------------------------------------------
def check_workers(cpus: int, generator_cores: int) -> int:
    """Worker processes for the checks: the cores the generator leaves free, less one for this
    process (it drives the generator and gathers the results); 0 (checks in this process) when
    that leaves fewer than 2, since one worker only moves the work elsewhere and adds the sending.

    On the CPU, CTranslate2 runs one decoding worker per core, so the checks run inline; PyTorch
    runs on its threads (one by default), so a 2-core machine checks inline too. On a GPU the
    generator takes one core (the thread that drives the device): 16 cores give 14 workers.

    >>> check_workers(2, 2), check_workers(2, 1), check_workers(16, 1), check_workers(4, 1)
    (0, 0, 14, 2)
    """
    free = cpus - generator_cores - 1
    return free if free >= 2 else 0


def generator_cores(generator, device_type: str) -> int:
    """Cores a generator keeps busy: one on a GPU (the thread that drives it), else its CPU threads."""
    if device_type != "cpu":
        return 1
    workers = getattr(generator, "workers", None)
    if workers:  # CTranslate2: workers x threads each
        return workers * max(1, getattr(generator, "threads_per_worker", 1) or 1)
    import torch

    return torch.get_num_threads()


_worker_forms: SurfaceForms | None = None


def _start_worker(lexicon_file: str | None) -> None:
    global _worker_forms
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (one line, no tracebacks)
    lexicon = None
    if lexicon_file:
        with open(lexicon_file, "rb") as f:
            lexicon = pickle.load(f)
    _worker_forms = SurfaceForms(lexicon)


def _in_worker(step: Callable, tasks: list) -> list:
    return step(tasks, _worker_forms)


def start_pool(workers: int | None, generator_cores: int, lexicon: Lexicon | None) -> CheckPool | None:
    """The check workers of a run: ``workers`` processes, or (None) :func:`check_workers` of this
    machine's cores beside a generator that keeps ``generator_cores`` busy; None for none."""
    if workers is None:
        from restore.device import available_cpus

        workers = check_workers(available_cpus(), generator_cores)
    return CheckPool(workers, lexicon) if workers > 0 else None


class CheckPool:
    """``workers`` processes that check and repair (``spawn``: safe beside CUDA and threads), each
    with its own surface forms of ``lexicon``; started at once, so that they are ready when the
    first window has been generated (``started``: one future per worker). :meth:`close` when done
    (or at exit).

    The lexicon reaches the workers through a temporary file: handed over at their start, its
    megabytes would fill the pipe, and starting each worker would wait for the one before.
    """

    def __init__(self, workers: int, lexicon: Lexicon | None) -> None:
        import multiprocessing

        self.workers = workers
        lexicon_file = None
        if lexicon is not None:
            fd, lexicon_file = tempfile.mkstemp(prefix="restore-lexicon-", suffix=".pickle")
            with os.fdopen(fd, "wb") as f:
                pickle.dump(lexicon, f, protocol=pickle.HIGHEST_PROTOCOL)
        self._remove = weakref.finalize(self, _remove_file, lexicon_file)
        self.executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_start_worker, initargs=(lexicon_file,))  # fmt: skip
        self.started = [self.executor.submit(_in_worker, _noop, []) for _ in range(workers)]

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        self._remove()


def _remove_file(path: str | None) -> None:
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _noop(tasks: list, forms) -> list:
    return tasks


# --- the pure steps (each maps a list of documents to a list of results) --------------------------
def document_lines(chunks: Sequence[str], joiners: Sequence[str]) -> list[list[int]]:
    """A document's lines as chunk indices: what a user corrupts as one text (a line break starts
    one; a chunk that starts a heading stays with the line before it).

    >>> document_lines(["a .", "b .", "# # c", "d ."], ["", " ", "\\n\\n", "\\n\\n"])
    [[0, 1, 2], [3]]
    """
    lines: list[list[int]] = []
    for k, (chunk, joiner) in enumerate(zip(chunks, joiners)):
        if k == 0 or (joiner == LINE_JOINER and not starts_with_heading(chunk)):
            lines.append([])
        lines[-1].append(k)
    return lines


@dataclass
class _Line:
    """One line of a document (the unit of work: what a user corrupts as one text)."""

    chunks: list[str]
    outputs: list[str]  # the model's, then the settled ones
    joiners: list[str]  # "" before the first chunk
    failing: list[int] = field(default_factory=list)
    outcomes: dict[int, ChunkOutcome] = field(default_factory=dict)  # of the failing chunks
    draft: LineDraft | None = None  # once every chunk passes alone

    def draft_line(self) -> None:
        self.draft = draft_line(self.chunks, [tidy_spaces(output) for output in self.outputs], self.joiners)


def _check_step(lines: list[_Line], forms: SurfaceForms) -> list[tuple[list[int], LineDraft | None]]:
    """Step 1: each line's failing chunks, and the draft of the line if there are none."""
    results = []
    for line in lines:
        line.failing = [k for k, (out, src) in enumerate(zip(line.outputs, line.chunks)) if not check(out, src)]
        if not line.failing:
            line.draft_line()
        results.append((line.failing, line.draft))
    return results


def _settle_step(tasks: list[tuple[_Line, list[list[str]]]], forms: SurfaceForms) -> list[tuple[dict, LineDraft]]:
    """Step 3: a line's failing chunks settled with their hypotheses, then the line drafted."""
    results = []
    for line, beams in tasks:
        for k, hypotheses in zip(line.failing, beams):
            line.outcomes[k] = settle_chunk(line.chunks[k], line.outputs[k], hypotheses, forms)
            line.outputs[k] = line.outcomes[k].text
        line.draft_line()
        results.append((line.outcomes, line.draft))
    return results


def _finish_step(tasks: list[tuple[LineDraft, list[list[str]]]], forms: SurfaceForms) -> list[FinishedLine]:
    """Step 5: lines finished with the hypotheses of their spans."""
    return [finish_line(draft, beams, forms) for draft, beams in tasks]


# --- the driver --------------------------------------------------------------------------------------
@dataclass
class FaithfulDocument:
    """A faithful document: its text, its lines still unfaithful after repair, and what became
    of each chunk (:class:`restore.faithful.ChunkOutcome`, in chunk order; ``how`` also says
    where a failing junction re-decoded or repaired it). The Restorer hands it on as a
    :class:`restore.infer.RestoredDocument` (the outcomes alone)."""

    text: str
    unfaithful_lines: int
    chunks: list[ChunkOutcome]


def _run(step: Callable, tasks: list, forms: SurfaceForms, pool: CheckPool | None, weights: Sequence[int]) -> list:
    """``step(tasks, forms)`` in order: here, or in the pool in slices of about equal weight."""
    if pool is None or len(tasks) < 2:
        return step(tasks, forms)
    share = max(1, math.ceil(sum(weights) / (pool.workers * TASKS_PER_WORKER)))
    slices, current, load = [], [], 0
    for task, weight in zip(tasks, weights):
        current.append(task)
        load += weight
        if load >= share:
            slices.append(current)
            current, load = [], 0
    if current:
        slices.append(current)
    futures = [pool.executor.submit(_in_worker, step, part) for part in slices]
    return [result for future in futures for result in future.result()]


def faithful_documents(
    plans: Sequence[Plan],
    outputs: Sequence[str],
    redecode: Redecoder | None = None,
    lexicon: Lexicon | SurfaceForms | None = None,
    stats: FaithfulStats | None = None,
    pool: CheckPool | None = None,
    chunk_redecode: Redecoder | None = None,
) -> list[FaithfulDocument]:
    """The faithful documents of a window: ``plans`` (chunks and joiners of each document) and the
    model's ``outputs`` for all their chunks in order; ``redecode`` as in :func:`restore.faithful.make_faithful`
    (called at most twice: the failing chunks, then the failing junctions' spans); ``pool``: worker
    processes (:class:`CheckPool`, with the same lexicon), or None to work here; ``chunk_redecode``:
    the hypotheses of the failing chunks instead of ``redecode`` (e.g. those of the beam search
    that drafted them, see :meth:`restore.infer.Restorer.restore_chunks`)."""
    stats = stats if stats is not None else FaithfulStats()
    forms = as_surface_forms(lexicon)
    if sum(len(chunks) for chunks, _ in plans) != len(outputs):
        raise ValueError(f"{len(outputs)} outputs for {sum(len(chunks) for chunks, _ in plans)} chunks")
    documents, lines, at = [], [], 0  # documents: the joiner before each line, and the lines' indices
    for chunks, joiners in plans:
        indices = document_lines(chunks, joiners)
        documents.append(([joiners[line[0]] for line in indices], range(len(lines), len(lines) + len(indices))))
        for line in indices:
            lines.append(_Line([chunks[k] for k in line], [outputs[at + k] for k in line], [""] + [joiners[k] for k in line[1:]]))
        at += len(chunks)
    # 1. checks
    for line, (failing, draft) in zip(lines, _run(_check_step, lines, forms, pool, [len(line.chunks) for line in lines])):
        line.failing, line.draft = failing, draft
    stats.chunks += at
    pending = [line for line in lines if line.failing]
    sources = [line.chunks[k] for line in pending for k in line.failing]
    stats.failed_greedy += len(sources)
    # 2. the failing chunks of the window, re-decoded in one call
    redecode_chunks = chunk_redecode or redecode
    beams = iter(redecode_chunks(sources) if redecode_chunks and sources else [[] for _ in sources])
    # 3. settled, and their lines drafted
    tasks = [(line, [next(beams) for _ in line.failing]) for line in pending]
    for line, (outcomes, draft) in zip(pending, _run(_settle_step, tasks, forms, pool, [len(line.failing) for line in pending])):
        line.outcomes, line.draft = outcomes, draft
        for k, outcome in outcomes.items():
            line.outputs[k] = outcome.text
            outcome.count(stats)
    # 4. the spans of the failing junctions of the window, re-decoded in one call
    spans = [source for line in lines for source in line.draft.span_sources]
    span_beams = iter(redecode(spans) if redecode and spans else [[] for _ in spans])
    # 5. lines finished (those that passed as a whole cost nothing), documents assembled
    broken = [line.draft for line in lines if line.draft.text is None]
    tasks = [(draft, [next(span_beams) for _ in draft.span_sources]) for draft in broken]
    finished = iter(_run(_finish_step, tasks, forms, pool, [len(draft.sources) for draft in broken]))
    texts = []
    for line in lines:
        text, counts, changed = next(finished) if line.draft.text is None else (line.draft.text, FaithfulStats(), {})
        stats.merge(counts)
        texts.append((text, counts.unfaithful_lines))
        for k, how in changed.items():  # junctions: a repair outranks a re-decode
            outcome = line.outcomes.get(k) or ChunkOutcome(line.outputs[k], PASSED)
            line.outcomes[k] = outcome if outcome.how == REPAIRED else replace(outcome, how=how)
    restored = []
    for heads, mine in documents:
        outcomes = [lines[n].outcomes.get(k) or ChunkOutcome(lines[n].outputs[k], PASSED) for n in mine for k in range(len(lines[n].chunks))]
        restored.append(FaithfulDocument(
            "".join(head + texts[n][0] for head, n in zip(heads, mine)), sum(texts[n][1] for n in mine), outcomes,
        ))  # fmt: skip
    return restored
