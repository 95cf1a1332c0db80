"""Restoring documents: chunk, batch by a token budget, generate, reassemble in order.

How a document is restored:

1. every input line is restored on its own (a text file may hold several
   corrupted documents or paragraphs, one per line); restored lines are joined
   with a blank line (``"\\n\\n"``);
2. a line is cut into chunks with :func:`restore.chunking.document_chunks`, the same
   rule the model was trained with (settings from the model's ``restore.json``);
3. chunks of all documents in flight are sorted by length, grouped into batches
   by a token budget and generated (like CTranslate2's ``translate_batch``), then
   put back in order; a batch that runs out of GPU memory is split in half and
   retried;
4. chunk outputs are joined with ``" "``, except ``"\\n\\n"`` before a chunk whose
   source starts with a heading (``# #``), matching the training targets.

Each chunk may generate at most ``ceil(4 * source ids) + 16`` tokens (capped by
the model's positions), so a degenerate model cannot loop forever. With ``faithful``
(the default) every output is made to corrupt back to its source (:mod:`restore.faithful`).

This module is the :class:`Restorer` (built from :func:`restore.settings.restorer_settings`);
``restore infer`` runs it on files (:mod:`restore.infer_files`)
or on shards (:mod:`restore.corpus`).

>>> chunks, joiners = document_chunks("a b . c d .\\n# # e f . g", ChunkConfig(max_source_words=5))
>>> chunks, joiners
(['a b .', 'c d .', '# # e f .', 'g'], ['', ' ', '\\n\\n', ' '])
>>> assemble(["A b.", "C d.", "## E\\n\\nF.", "G"], joiners)
'A b. C d.\\n\\n## E\\n\\nF. G'
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, NamedTuple

from restore.batching import budget_batches
from restore.chunking import CHUNK_JOINER, ChunkConfig, assemble, document_chunks, split_in_half
from restore.errors import RestoreError
from restore.faithful import FaithfulStats, make_faithful
from restore.faithful_window import CheckPool, faithful_documents, generator_cores, start_pool
from restore.settings import check_length_penalty, check_positive
from restore.surface_forms import SurfaceForms

if TYPE_CHECKING:  # torch, transformers and the backends load only when a model does (fast errors)
    import torch

    from restore.backends import BackendFactory, Generator

# Generation limit per chunk: NEW_TOKENS_PER_SOURCE * source ids + NEW_TOKENS_EXTRA.
NEW_TOKENS_PER_SOURCE = 4
NEW_TOKENS_EXTRA = 16
# Budgeting estimate of the output length (targets are ~1.5-2x the stemmed source in subwords).
EXPECTED_NEW_PER_SOURCE = 2
EXPECTED_NEW_EXTRA = 8
# Chunks gathered from the input before a round of sorting and batching (bounds memory on huge corpora).
WINDOW_CHUNKS = 4096
# Finished documents are handed out (and written) after every window: the first window holds
# MIN_WINDOW_CHUNKS chunks, later ones as many as took about FLUSH_SECONDS to restore so far
# (between the two limits), so an interrupted run loses at most that much work.
MIN_WINDOW_CHUNKS = 256
FLUSH_SECONDS = 5.0
# Faithfulness (restore.faithful): chunks that do not corrupt back are re-decoded with this beam
# (all its hypotheses returned, best first) before the closest one is repaired.
FAITHFUL_BEAMS = 4


# --- batching --------------------------------------------------------------------------------------
def new_tokens_limit(source_ids: int, cap: int) -> int:
    """Most tokens a chunk of ``source_ids`` encoder ids may generate.

    >>> new_tokens_limit(10, 511), new_tokens_limit(300, 511)
    (56, 511)
    """
    return min(math.ceil(NEW_TOKENS_PER_SOURCE * source_ids) + NEW_TOKENS_EXTRA, cap)


@dataclass(frozen=True)
class NewTokens:
    """How many tokens a chunk may generate (:func:`new_tokens_limit`) and how many it is
    expected to (the output length the batch budget plans for), given its source ids.

    >>> lengths = NewTokens(cap=511)
    >>> lengths.limit(10), lengths.expected(10), lengths.expected(300)
    (56, 28, 511)
    """

    cap: int  # the decoder's positions less its start token

    def limit(self, source_ids: int) -> int:
        return new_tokens_limit(source_ids, self.cap)

    def expected(self, source_ids: int) -> int:
        return min(self.limit(source_ids), EXPECTED_NEW_PER_SOURCE * source_ids + EXPECTED_NEW_EXTRA)


def is_out_of_memory(error: BaseException) -> bool:
    """A GPU out-of-memory error (PyTorch's, or a backend's RuntimeError saying so)."""
    import torch

    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


@dataclass
class InferStats:
    """Counters of a restoration run (for progress and the summary line)."""

    documents: int = 0
    chunks: int = 0  # chunks restored (each once)
    redecoded: int = 0  # chunks (or junction spans) generated again with beams to make them faithful
    batches: int = 0
    generated_tokens: int = 0
    generate_seconds: float = 0.0
    oom_splits: int = 0
    faithful: FaithfulStats = field(default_factory=FaithfulStats)  # verify-and-repair counts

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.generate_seconds if self.generate_seconds else 0.0


class RestoredDocument(NamedTuple):
    """A restored document, the number of its lines still not faithful after repair (0 without
    ``faithful``) and what faithfulness did to each of its chunks (``restore.faithful.PASSED``,
    ``REDECODED`` or ``REPAIRED``; empty without ``faithful``)."""

    text: str
    unfaithful_lines: int
    chunk_outcomes: tuple[str, ...] = ()


def next_window(chunks: int, seconds: float, largest: int = WINDOW_CHUNKS) -> int:
    """Chunks in the next window, given that the last ``chunks`` took ``seconds``: about
    :data:`FLUSH_SECONDS` of work, at least :data:`MIN_WINDOW_CHUNKS`, at most ``largest``.

    >>> next_window(256, 0.5), next_window(256, 10.0), next_window(256, 0.0), next_window(256, 0.5, largest=20)
    (2560, 256, 4096, 20)
    """
    rate = chunks / seconds if seconds > 0 else math.inf
    return int(max(min(MIN_WINDOW_CHUNKS, largest), min(rate * FLUSH_SECONDS, largest)))


class _WindowSize:
    """Chunks per window of a run: :data:`MIN_WINDOW_CHUNKS` first, then :func:`next_window` of the last."""

    def __init__(self, largest: int) -> None:
        self.largest = largest
        self.limit = min(MIN_WINDOW_CHUNKS, largest)

    def took(self, plans: list[tuple[list[str], list[str]]], seconds: float) -> None:
        self.limit = next_window(sum(len(chunks) for chunks, _ in plans), seconds, self.largest)


# --- the restorer ----------------------------------------------------------------------------------
class Restorer:
    """Restores corrupted documents with a model (see the module docstring for how).

    Build one with :meth:`from_pretrained`; ``Restorer(tokenizer, generator, chunking)``
    takes any :class:`~restore.backends.Generator` (tests use stubs). Without
    ``batch_tokens`` the generator's own budget (``generator.batch_tokens``) is used.
    """

    def __init__(
        self,
        tokenizer,
        generator: Generator,
        chunking: ChunkConfig,
        *,
        device: torch.device | str = "cpu",
        batch_tokens: int | None = None,
        num_beams: int = 1,
        length_penalty: float = 1.0,
        max_positions: int = 512,
        window_chunks: int = WINDOW_CHUNKS,
        faithful_beams: int = FAITHFUL_BEAMS,
        new_tokens: NewTokens | None = None,
        progress: Callable[[InferStats], None] | None = None,
        faithful: bool = True,
        lexicon=None,
        overlap: bool | None = None,
        check_workers: int | None = None,
    ):
        import torch

        self.tokenizer = tokenizer
        self.generator = generator
        self.chunking = chunking
        self.device = torch.device(device)
        self.batch_tokens = generator.batch_tokens if batch_tokens is None else batch_tokens
        check_positive("--batch-tokens", self.batch_tokens)
        check_positive("--num-beams", num_beams)
        check_length_penalty(length_penalty)
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.max_source_ids = max_positions
        # The decoder start token takes one position.
        self.new_tokens = new_tokens or NewTokens(cap=max_positions - 1)
        self.window_chunks = window_chunks
        self.faithful_beams = faithful_beams
        self.progress = progress
        self.stats = InferStats()
        # Faithfulness: every chunk output must corrupt back to its source (restore.faithful);
        # the lexicon (restore.lexicon.Lexicon, from the model dir) gives repaired words their surface form.
        self.faithful = faithful
        self.surface_forms = SurfaceForms(lexicon)
        # Overlap (default on CUDA): the next window's generation runs in a worker thread while this
        # thread checks, repairs and assembles the current one (see restore_many).
        self.overlap = self.device.type == "cuda" if overlap is None else overlap
        self._generating = threading.Lock()  # one batch on the generator at a time (worker vs beam repair)
        # Checks and repairs of a window run in this many worker processes (restore.faithful_window;
        # None: the cores the generator leaves free, see check_workers; 0: in this process).
        self.check_workers = check_workers
        self._pool: CheckPool | None = None
        self._pool_checked = False  # the pool's size was decided (0: none)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str = "auto",
        batch_tokens: int | None = None,
        num_beams: int = 1,
        backend: str | BackendFactory = "torch",
        length_penalty: float = 1.0,
        **options,
    ) -> "Restorer":
        """Load a model directory (validated first) onto ``device`` (``auto``: CUDA if available).

        ``options`` go to the backend (``static_cache=True`` for the torch backend,
        ``compute_type`` for ctranslate2: default ``auto``, see :func:`restore.backend_choice.choose_backend`),
        except the Restorer's own keywords (``window_chunks``, ``faithful_beams``, ``new_tokens``,
        ``progress``, ``faithful``, ``overlap``, ``check_workers``). ``backend="auto"``: ctranslate2 on the CPU when it is installed
        (the fastest CPU path; int8 only where the CPU computes it accurately), else torch.
        Threads and logging are the caller's (the command line sets them up).
        """
        from restore.checkpoint import load_lexicon, load_tokenizer, read_max_positions, read_model_info

        info = read_model_info(path)  # a bad model directory is reported before anything heavy loads
        from restore.backend_choice import choose_backend
        from restore.device import dtype_for, resolve_device

        resolved = resolve_device(device)
        own = {k: options.pop(k) for k in ("window_chunks", "faithful_beams", "new_tokens", "progress", "faithful", "overlap", "check_workers") if k in options}
        if isinstance(backend, str):
            compute_type = options.pop("compute_type", None) or "auto"
            choice = choose_backend(
                backend, resolved.type, torch_only=bool(options.get("static_cache")), compute_type=compute_type,
                int8_check=info.extra.get("int8_check"),
            )  # fmt: skip
            backend = choice.name
            options = {**options, **choice.options, "reason": choice.reason}
        factory = _backend_factory(backend)
        max_positions = read_max_positions(info.path)  # config.json first: the tokenizer reads it too, and would take the blame
        tokenizer = load_tokenizer(info.path)
        own["lexicon"] = load_lexicon(info.path)
        # On a GPU the generator takes one core whatever it is: the check workers start while it loads.
        pool = _early_pool(own, resolved.type)
        try:
            generator = factory(info.path, resolved, dtype_for(resolved), **options)
        except BaseException:
            if pool is not None:
                pool.close()
            raise
        restorer = cls(
            tokenizer, generator, info.chunking, device=resolved, batch_tokens=batch_tokens,
            num_beams=num_beams, length_penalty=length_penalty, max_positions=max_positions, **own,
        )  # fmt: skip
        restorer._pool = pool
        return restorer

    # documents ------------------------------------------------------------------------------------
    def restore(self, document: str) -> str:
        """One restored document (``""`` for an empty one)."""
        return next(self.restore_many([document]))

    def restore_many(self, documents: Iterable[str]) -> Iterator[str]:
        """Restored documents, in order (see :meth:`restore_many_checked`)."""
        return (restored.text for restored in self.restore_many_checked(documents))

    def restore_many_checked(self, documents: Iterable[str]) -> Iterator[RestoredDocument]:
        """Restored documents, in order, consuming the input lazily in windows of chunks, each with
        the number of its lines that are still not faithful after repair (0 without ``faithful``)
        and its chunks' outcomes (:class:`RestoredDocument`).

        Windows are sized to take about :data:`FLUSH_SECONDS` each (see :func:`next_window`),
        so finished documents come out at least every few seconds or few hundred chunks.
        With ``overlap``, window k+1's chunks are generated (:meth:`draft`) in a worker thread
        while this thread checks, repairs and assembles window k: on a GPU the device then never
        waits for that Python work (one window is read ahead). The outputs are the same.
        """
        size = _WindowSize(self.window_chunks)
        windows = self._windows(documents, size)
        self.check_pool()  # check workers (if any) start while the first window is generated
        if not self.overlap:
            for plans in windows:
                start = time.perf_counter()
                restored = self._restore_window(plans)
                size.took(plans, time.perf_counter() - start)
                yield from restored
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="restore-generate") as worker:
            ahead = None
            for plans in windows:
                submitted = (plans, worker.submit(self.draft, _window_chunks(plans)), time.perf_counter())
                if ahead is not None:
                    yield from self._finish_drafted(ahead, size)
                ahead = submitted
            if ahead is not None:
                yield from self._finish_drafted(ahead, size)

    def _finish_drafted(self, drafted: tuple, size: "_WindowSize") -> list[RestoredDocument]:
        plans, future, started = drafted
        restored = self._restore_window(plans, future.result())
        size.took(plans, time.perf_counter() - started)
        return restored

    def _windows(self, documents: Iterable[str], size: "_WindowSize") -> Iterator[list[tuple[list[str], list[str]]]]:
        window: list[tuple[list[str], list[str]]] = []
        chunks = 0
        for document in documents:
            plan = document_chunks(document, self.chunking)
            window.append(plan)
            chunks += len(plan[0])
            if chunks >= size.limit:
                yield window
                window, chunks = [], 0
        yield window

    def _restore_window(self, plans: list[tuple[list[str], list[str]]], drafts: list[list[str]] | None = None) -> list[RestoredDocument]:
        chunks = _window_chunks(plans)
        candidates = drafts if drafts is not None else self.draft(chunks)
        self.stats.documents += len(plans)
        if not self.faithful:
            outputs = iter(hypotheses[0] for hypotheses in candidates)
            return [RestoredDocument(assemble([next(outputs) for _ in cs], joiners), 0) for cs, joiners in plans]
        documents = faithful_documents(
            plans, [hypotheses[0] for hypotheses in candidates], self._beam_candidates, self.surface_forms,
            self.stats.faithful, self.check_pool(), self._known_hypotheses(chunks, candidates),
        )  # fmt: skip
        return [RestoredDocument(d.text, d.unfaithful_lines, tuple(c.how for c in d.chunks)) for d in documents]

    def check_pool(self) -> CheckPool | None:
        """The worker processes of the faithfulness checks, started on first use (None: check here).

        Their number is ``check_workers``, else :func:`restore.faithful_window.check_workers`: the
        cores the generator leaves free, less one for this process; 0 below 2 (on a CPU where the
        generator takes every core, as CTranslate2 does, always 0).
        """
        if self._pool is None and self.faithful and not self._pool_checked:
            cores = generator_cores(self.generator, self.device.type)
            self._pool = start_pool(self.check_workers, cores, self.surface_forms.lexicon)
            self._pool_checked = True
        return self._pool

    def close(self) -> None:
        """Stop the check workers, if any were started (they also stop when the process exits)."""
        if self._pool is not None:
            self._pool.close()
        self._pool, self._pool_checked = None, False

    # chunks ---------------------------------------------------------------------------------------
    def restore_chunks(self, chunks: list[str], num_beams: int | None = None, drafts: list[list[str]] | None = None) -> list[str]:
        """Restored text of each chunk, in order (the one place chunks become text).

        With ``faithful`` (the default) every output is checked to corrupt back to its chunk,
        and the most probable faithful hypothesis is taken: a beam search of at least
        ``faithful_beams`` keeps all its hypotheses and the first that passes wins; after a
        smaller one (greedy), the failing chunks are re-decoded together with a beam of
        ``faithful_beams``. Where none passes, the closest one is repaired (restore.faithful).
        ``drafts``: the candidates of :meth:`draft`, when already generated. (Documents go through
        :func:`restore.faithful_window.faithful_documents` instead, which also joins lines.)
        """
        candidates = drafts if drafts is not None else self.draft(chunks, num_beams)
        outputs = [hypotheses[0] for hypotheses in candidates]
        if not self.faithful:
            return outputs
        redecode = self._known_hypotheses(chunks, candidates) or self._beam_candidates
        return make_faithful(chunks, outputs, redecode, self.surface_forms, self.stats.faithful)

    def _known_hypotheses(self, chunks: list[str], candidates: list[list[str]]) -> Callable[[list[str]], list[list[str]]] | None:
        """After a beam search of at least ``faithful_beams``, the failing chunks' "re-decode": the
        hypotheses it already has (no second decode); None after a smaller one."""
        if not candidates or len(candidates[0]) < self.faithful_beams:
            return None
        known = dict(zip(chunks, candidates))
        return lambda failing: [known[chunk] for chunk in failing]

    def draft(self, chunks: list[str], num_beams: int | None = None) -> list[list[str]]:
        """The model's candidates for each chunk, best first, before faithfulness (the part that
        runs on the device): every hypothesis of a beam search when faithfulness will choose among
        them, else the best one alone."""
        beams = num_beams or self.num_beams
        return self.chunk_candidates(chunks, beams, beams if self.faithful else 1)

    def _beam_candidates(self, chunks: list[str]) -> list[list[str]]:
        return self.chunk_candidates(chunks, self.faithful_beams, self.faithful_beams, redecode=True)

    def chunk_candidates(
        self, chunks: list[str], num_beams: int, num_return_sequences: int, *, redecode: bool = False
    ) -> list[list[str]]:
        """``num_return_sequences`` restorations of each chunk (best first), e.g. to repair with beams.

        ``redecode``: these chunks were restored before (counted as re-decoded, not as chunks).
        """
        if not chunks:
            return []
        pieces, owners = self._fit_to_encoder(chunks)
        generated = self.generate_ids(pieces, num_beams, num_return_sequences, redecode=redecode)
        texts = self.tokenizer.batch_decode([ids for per_piece in generated for ids in per_piece], skip_special_tokens=True)
        result: list[list[list[str]]] = [[] for _ in chunks]
        for k, owner in enumerate(owners):
            result[owner].append(texts[k * num_return_sequences : (k + 1) * num_return_sequences])
        # A chunk split into pieces (too long for the encoder): candidate j joins the pieces' candidates j.
        return [[CHUNK_JOINER.join(parts) for parts in zip(*per_piece)] for per_piece in result]

    def encode(self, chunks: list[str]) -> list[list[int]]:
        """Encoder input ids of each chunk (ending with ``</s>``), tokenized in one call."""
        return self.tokenizer(chunks, add_special_tokens=True)["input_ids"]

    def _fit_to_encoder(self, chunks: list[str]) -> tuple[list[list[int]], list[int]]:
        """Input ids of each chunk, pieces of a chunk too long for the encoder split in halves.

        Returns the ids of every piece and the index of the chunk each piece belongs to.
        """
        pieces: list[list[int]] = []
        owners: list[int] = []
        for k, ids in enumerate(self.encode(chunks)):
            parts = [ids] if len(ids) <= self.max_source_ids else self._split_to_fit(chunks[k])
            pieces.extend(parts)
            owners.extend([k] * len(parts))
        return pieces, owners

    def _split_to_fit(self, chunk: str) -> list[list[int]]:
        result: list[list[int]] = []
        for half, ids in zip(halves := split_in_half(chunk), self.encode(halves)):
            result.extend([ids] if len(ids) <= self.max_source_ids else self._split_to_fit(half))
        return result

    # generation -----------------------------------------------------------------------------------
    def generate_ids(
        self, inputs: list[list[int]], num_beams: int, num_return_sequences: int = 1, *, redecode: bool = False
    ) -> list[list[list[int]]]:
        """Generated ids per input (``num_return_sequences`` each): sorted, batched by budget, back in order."""
        order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]), reverse=True)
        limits = [self.new_tokens.limit(len(inputs[i])) for i in order]
        expected = [self.new_tokens.expected(len(inputs[i])) for i in order]
        # Every beam holds its own copy of the encoder states (cross-attention) and of the decoder cache.
        widths = [num_beams * (len(inputs[i]) + new) for i, new in zip(order, expected)]
        results: list[list[list[int]]] = [[] for _ in inputs]
        for batch in budget_batches(widths, self.batch_tokens):
            rows = [order[b] for b in batch]
            with self._generating:  # the stats too: the worker thread and beam repair both count
                outputs = self._generate_splitting([inputs[i] for i in rows], [limits[b] for b in batch], num_beams, num_return_sequences)
                for i, limit, per_input in zip(rows, (limits[b] for b in batch), outputs):
                    # The batch ran to its longest limit; greedy output cut at each chunk's own limit
                    # equals generating that chunk alone.
                    results[i] = [ids[:limit] for ids in per_input]
                if redecode:
                    self.stats.redecoded += len(rows)
                else:
                    self.stats.chunks += len(rows)
                self.stats.batches += 1
                if self.progress:
                    self.progress(self.stats)
        return results

    def _generate_splitting(
        self, batch: list[list[int]], limits: list[int], num_beams: int, num_return_sequences: int
    ) -> list[list[list[int]]]:
        """Generate one batch; out of GPU memory, split it in half and retry each half."""
        try:
            start = time.perf_counter()
            penalty = {"length_penalty": self.length_penalty} if num_beams > 1 else {}  # greedy has no length ranking
            flat = self.generator.generate(batch, max(limits), num_beams, num_return_sequences, **penalty)
        except Exception as error:  # noqa: BLE001 - only out-of-memory errors are handled, the rest re-raised
            if not is_out_of_memory(error):
                raise
            if len(batch) == 1:
                raise RestoreError(
                    "out of memory generating a single chunk; use a smaller --num-beams or the CPU (--device cpu)"
                ) from None
            del error  # drop the traceback's references to the failed batch's tensors before retrying
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.stats.oom_splits += 1
            half = len(batch) // 2
            first = self._generate_splitting(batch[:half], limits[:half], num_beams, num_return_sequences)
            return first + self._generate_splitting(batch[half:], limits[half:], num_beams, num_return_sequences)
        self.stats.generate_seconds += time.perf_counter() - start
        self.stats.generated_tokens += sum(map(len, flat))
        n = num_return_sequences
        return [flat[k * n : (k + 1) * n] for k in range(len(batch))]


def _early_pool(own: dict, device_type: str) -> CheckPool | None:
    if device_type == "cpu" or not own.get("faithful", True):
        return None
    return start_pool(own.get("check_workers"), 1, own.get("lexicon"))  # on a GPU the generator takes one core


def _window_chunks(plans: list[tuple[list[str], list[str]]]) -> list[str]:
    return [chunk for chunks, _ in plans for chunk in chunks]


def _backend_factory(backend: str | BackendFactory) -> BackendFactory:
    from restore.backends import BACKENDS

    if callable(backend):
        return backend
    if backend not in BACKENDS:
        raise RestoreError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    return BACKENDS[backend]
