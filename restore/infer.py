"""Restoring documents: chunk, batch by a token budget, generate, reassemble in order.

How a document is restored:

1. every input line is restored on its own (a text file may hold several
   corrupted documents or paragraphs, one per line); restored lines are joined
   with a blank line (``"\\n\\n"``);
2. a line is cut into chunks with :func:`restore.chunking.chunk_text`, the same
   rule the model was trained with (settings from the model's ``restore.json``);
3. chunks of all documents in flight are sorted by length, grouped into batches
   by a token budget and generated (like CTranslate2's ``translate_batch``), then
   put back in order; a batch that runs out of GPU memory is split in half and
   retried;
4. chunk outputs are joined with ``" "``, except ``"\\n\\n"`` before a chunk whose
   source starts with a heading (``# #``), matching the training targets.

Each chunk may generate at most ``ceil(4 * source ids) + 16`` tokens (capped by
the model's positions), so a degenerate model cannot loop forever.

>>> chunks, joiners = document_chunks("a b . c d .\\n# # e f . g", ChunkConfig(max_source_words=5))
>>> chunks, joiners
(['a b .', 'c d .', '# # e f .', 'g'], ['', ' ', '\\n\\n', ' '])
>>> assemble(["A b.", "C d.", "## E\\n\\nF.", "G"], joiners)
'A b. C d.\\n\\n## E\\n\\nF. G'
"""

from __future__ import annotations

import math
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

from restore.batching import budget_batches
from restore.chunking import CHUNK_JOINER, ChunkConfig, chunk_joiner, chunk_text, starts_with_heading
from restore.errors import RestoreError
from restore.faithful import FaithfulStats, SurfaceForms, join_faithful, make_faithful

if TYPE_CHECKING:  # torch, transformers and the backends load only when a model does (fast errors)
    import torch

    from restore.backends import BackendFactory, Generator

LINE_JOINER = "\n\n"
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


# --- documents <-> chunks --------------------------------------------------------------------------
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
    return "".join(joiner + _tidy_spaces(output) for joiner, output in zip(joiners, outputs, strict=True))


def _tidy_spaces(text: str) -> str:
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
        max_positions: int = 512,
        window_chunks: int = WINDOW_CHUNKS,
        faithful_beams: int = FAITHFUL_BEAMS,
        new_tokens: NewTokens | None = None,
        progress: Callable[[InferStats], None] | None = None,
        faithful: bool = True,
        lexicon=None,
        overlap: bool | None = None,
    ):
        import torch

        self.tokenizer = tokenizer
        self.generator = generator
        self.chunking = chunking
        self.device = torch.device(device)
        self.batch_tokens = generator.batch_tokens if batch_tokens is None else batch_tokens
        check_positive("--batch-tokens", self.batch_tokens)
        check_positive("--num-beams", num_beams)
        self.num_beams = num_beams
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

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str = "auto",
        batch_tokens: int | None = None,
        num_beams: int = 1,
        backend: str | BackendFactory = "torch",
        **options,
    ) -> "Restorer":
        """Load a model directory (validated first) onto ``device`` (``auto``: CUDA if available).

        ``options`` go to the backend (``static_cache=True`` for the torch backend,
        ``compute_type`` for ctranslate2: default ``auto``, see :func:`restore.backends.choose_backend`),
        except the Restorer's own keywords (``window_chunks``, ``faithful_beams``, ``new_tokens``,
        ``progress``, ``faithful``). ``backend="auto"``: ctranslate2 on the CPU when it is installed
        (the fastest CPU path; int8 only where the CPU computes it accurately), else torch.
        Threads and logging are the caller's (the command line sets them up).
        """
        from restore.checkpoint import read_model_info

        info = read_model_info(path)  # a bad model directory is reported before anything heavy loads
        from transformers import AutoConfig

        from restore.backends import choose_backend
        from restore.device import dtype_for, resolve_device

        resolved = resolve_device(device)
        own = {k: options.pop(k) for k in ("window_chunks", "faithful_beams", "new_tokens", "progress", "faithful", "overlap") if k in options}
        if isinstance(backend, str):
            compute_type = options.pop("compute_type", None) or "auto"
            choice = choose_backend(backend, resolved.type, torch_only=bool(options.get("static_cache")), compute_type=compute_type)
            backend = choice.name
            options = {**options, **choice.options, "reason": choice.reason}
        factory = _backend_factory(backend)
        try:  # config.json first: the tokenizer reads it too, and would take the blame for it
            max_positions = AutoConfig.from_pretrained(info.path).max_position_embeddings
        except (OSError, ValueError, KeyError, AttributeError) as e:
            raise RestoreError(f"{info.path / 'config.json'}: cannot read the model config ({str(e).splitlines()[0]})") from None
        tokenizer = _load_tokenizer(info.path)
        own["lexicon"] = _load_lexicon(info.path)
        generator = factory(info.path, resolved, dtype_for(resolved), **options)
        return cls(
            tokenizer, generator, info.chunking, device=resolved, batch_tokens=batch_tokens,
            num_beams=num_beams, max_positions=max_positions, **own,
        )  # fmt: skip

    # documents ------------------------------------------------------------------------------------
    def restore(self, document: str) -> str:
        """One restored document (``""`` for an empty one)."""
        return next(self.restore_many([document]))

    def restore_many(self, documents: Iterable[str]) -> Iterator[str]:
        """Restored documents, in order (see :meth:`restore_many_checked`)."""
        return (text for text, _ in self.restore_many_checked(documents))

    def restore_many_checked(self, documents: Iterable[str]) -> Iterator[tuple[str, int]]:
        """Restored documents, in order, consuming the input lazily in windows of chunks, each with
        the number of its lines that are still not faithful after repair (0 without ``faithful``).

        Windows are sized to take about :data:`FLUSH_SECONDS` each (see :func:`next_window`),
        so finished documents come out at least every few seconds or few hundred chunks.
        With ``overlap``, window k+1's chunks are generated (:meth:`draft`) in a worker thread
        while this thread checks, repairs and assembles window k: on a GPU the device then never
        waits for that Python work (one window is read ahead). The outputs are the same.
        """
        size = _WindowSize(self.window_chunks)
        windows = self._windows(documents, size)
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

    def _finish_drafted(self, drafted: tuple, size: "_WindowSize") -> list[tuple[str, int]]:
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

    def _restore_window(self, plans: list[tuple[list[str], list[str]]], drafts: list[str] | None = None) -> list[tuple[str, int]]:
        outputs = iter(self.restore_chunks(_window_chunks(plans), drafts=drafts))
        restored = []
        for chunks, joiners in plans:
            self.stats.documents += 1
            document = [next(outputs) for _ in chunks]
            if not self.faithful:
                restored.append((assemble(document, joiners), 0))
                continue
            before = self.stats.faithful.unfaithful_lines
            restored.append((self.join_lines(chunks, document, joiners), self.stats.faithful.unfaithful_lines - before))
        return restored

    def join_lines(self, chunks: list[str], outputs: list[str], joiners: list[str]) -> str:
        """A document from its chunk outputs, each line faithful as a whole (restore.faithful.join_faithful).

        A line is what a user corrupts as one text: the chunks between line breaks (a chunk
        that starts a heading stays with the line before it).
        """
        lines: list[list[int]] = []
        for k, (chunk, joiner) in enumerate(zip(chunks, joiners)):
            if k == 0 or (joiner == LINE_JOINER and not starts_with_heading(chunk)):
                lines.append([])
            lines[-1].append(k)
        tidy = [_tidy_spaces(output) for output in outputs]
        return "".join(
            joiners[line[0]]
            + join_faithful(
                [chunks[k] for k in line], [tidy[k] for k in line], [""] + [joiners[k] for k in line[1:]],
                self._beam_candidates, self.surface_forms, self.stats.faithful,
            )
            for line in lines
        )  # fmt: skip

    # chunks ---------------------------------------------------------------------------------------
    def restore_chunks(self, chunks: list[str], num_beams: int | None = None, drafts: list[str] | None = None) -> list[str]:
        """Restored text of each chunk, in order (the one place chunks become text).

        With ``faithful`` (the default) every output is checked to corrupt back to its chunk;
        the failing ones are re-decoded together with a beam of ``faithful_beams`` and the
        first passing hypothesis is taken, else the closest one is repaired (restore.faithful).
        ``drafts``: the model outputs of :meth:`draft`, when already generated.
        """
        outputs = drafts if drafts is not None else self.draft(chunks, num_beams)
        if not self.faithful:
            return outputs
        return make_faithful(chunks, outputs, self._beam_candidates, self.surface_forms, self.stats.faithful)

    def draft(self, chunks: list[str], num_beams: int | None = None) -> list[str]:
        """The model's output for each chunk, before faithfulness (the part that runs on the device)."""
        return [candidates[0] for candidates in self.chunk_candidates(chunks, num_beams or self.num_beams, 1)]

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
            flat = self.generator.generate(batch, max(limits), num_beams, num_return_sequences)
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


def check_positive(option: str, value: int) -> None:
    """An option that counts something (a budget, beams) must be at least 1: one clear error.

    >>> check_positive("--num-beams", 0)
    Traceback (most recent call last):
    restore.errors.RestoreError: --num-beams must be a positive integer, got 0
    """
    if value < 1:
        raise RestoreError(f"{option} must be a positive integer, got {value}")


def _window_chunks(plans: list[tuple[list[str], list[str]]]) -> list[str]:
    return [chunk for chunks, _ in plans for chunk in chunks]


def _backend_factory(backend: str | BackendFactory) -> BackendFactory:
    from restore.backends import BACKENDS

    if callable(backend):
        return backend
    if backend not in BACKENDS:
        raise RestoreError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    return BACKENDS[backend]


def _load_lexicon(path: Path):
    """The model's surface-form lexicon (for faithfulness repair), or None if it has none."""
    from restore.lexicon import LEXICON_FILE, Lexicon

    return Lexicon.load(path) if (Path(path) / LEXICON_FILE).is_file() else None


def _load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise RestoreError(f"{path}: cannot load the tokenizer ({str(e).splitlines()[0]})") from None


# --- command line ----------------------------------------------------------------------------------
def run_infer_cli(args) -> None:
    """``restore infer``: restore text files, stdin or ``.jsonl`` records (``source`` -> ``restored``).

    - text inputs: each file (or stdin, ``-``) is one document; the restored documents
      are written one after another, separated by a blank line (an empty one writes nothing);
    - ``.jsonl`` inputs: every record's ``source`` is restored into ``restored``, other
      fields kept. Finished records are appended to ``OUTPUT.part`` after every window of
      chunks (a few seconds or a few hundred chunks of work, see :meth:`Restorer.restore_many`)
      and it is renamed to ``OUTPUT`` at the end; an interrupted (even killed) run leaves the
      ``.part``, and the same command continues from it (to stdout there is nothing to resume).

    A file output is locked (:func:`restore.textio.output_lock`): a second run on it stops
    with one line naming the first.

    Ends with one summary line on stderr.
    """
    from restore.checkpoint import default_model_dir, read_model_info
    from restore.cli import prepare_model_run
    from restore.textio import is_jsonl, output_lock

    started = time.perf_counter()
    inputs = list(args.inputs) or ["-"]
    _check_inputs(inputs)
    jsonl = [is_jsonl(p) for p in inputs]
    if any(jsonl) and not all(jsonl):
        raise RestoreError("cannot mix .jsonl and text inputs in one run")
    records = _read_records(inputs) if all(jsonl) else None  # validate every record before loading the model
    read_ahead = _check_text_inputs(inputs) if records is None else {}  # binary or non-UTF-8: before the model too
    model = read_model_info(args.model or default_model_dir()).path  # checked before torch is imported
    with output_lock(args.output):  # one run per output file (before the model loads: fail fast)
        prepare_model_run()
        restorer = Restorer.from_pretrained(**restorer_options(args, model))
        loaded = time.perf_counter()
        with _ProgressBar(restorer, total=len(records) if records is not None else len(inputs)) as bar:
            if records is not None:
                _infer_jsonl(restorer, records, args.output, bar)
            else:
                _infer_text(restorer, inputs, args.output, bar, read_ahead)
    print(summary_line(restorer, time.perf_counter() - loaded, time.perf_counter() - started), file=sys.stderr)


def restorer_options(args, model: str | Path | None = None) -> dict:
    """Keyword arguments of :meth:`Restorer.from_pretrained` from ``restore infer``'s options
    (a plain dict: Ray actors build their own Restorer from it)."""
    from restore.checkpoint import default_model_dir

    return dict(
        path=str(model or args.model or default_model_dir()),
        device=args.device,
        batch_tokens=args.batch_tokens,
        num_beams=args.num_beams,
        backend=args.backend,
        compute_type=args.compute_type,
        static_cache=args.static_cache,
        faithful=args.faithful,
    )


def summary_line(restorer: Restorer, restore_seconds: float, wall_seconds: float) -> str:
    """The one line printed at the end of a run: work done, the engine, speed, faithfulness.

    ``chunks`` counts each chunk once; chunks generated again with beams (to make them
    faithful) are counted apart, as ``re-decoded``.
    """
    from restore.textio import plural

    s = restorer.stats
    rate = s.generated_tokens / restore_seconds if restore_seconds > 0 else 0.0
    oom = f", {s.oom_splits} out-of-memory splits" if s.oom_splits else ""
    return (
        f"restore infer: {plural(s.documents, 'document')}, {plural(s.chunks, 'chunk')}, {s.redecoded} re-decoded with beams; "
        f"engine: {restorer.generator.describe()}; {s.generated_tokens} generated tokens, {rate:.1f} tokens/s{oom}; "
        f"{s.faithful.summary() if restorer.faithful else 'faithful: off'}; wall {wall_seconds:.1f} s"
    )


def _check_inputs(inputs: list[str]) -> None:
    """Fail early (before loading a model) on inputs that cannot be read."""
    if inputs.count("-") > 1:
        raise RestoreError("stdin (-) can be given only once")
    for name in inputs:
        path = Path(name)
        if name != "-" and not path.exists():
            raise RestoreError(f"{path}: no such file")
        if name != "-" and path.is_dir():
            raise RestoreError(f"{path}: is a directory, expected a text or .jsonl file")


def _read_records(inputs: list[str]) -> list[dict]:
    from restore.textio import parse_jsonl, read_text

    return [record for name in inputs for record in parse_jsonl(read_text(name), name, required="source")]


def _check_text_inputs(inputs: list[str]) -> dict[str, str]:
    """Check that every text input is UTF-8 text before the model loads (a binary file is one line
    at once, not after seconds of loading); files are read one at a time and not kept. Returns
    stdin's text (``{"-": text}``), which cannot be read twice."""
    from restore.textio import STDIO, read_text

    kept = {}
    for name in inputs:
        text = read_text(name)
        if name == STDIO:
            kept[name] = text
    return kept


def _infer_text(restorer: Restorer, inputs: list[str], output: str, bar, read: dict[str, str] | None = None) -> None:
    from restore.textio import atomic_output, read_text

    read = read or {}
    documents = (read[name] if name in read else read_text(name) for name in inputs)  # one file in memory at a time
    with atomic_output(output) as out:
        written = False
        for restored in restorer.restore_many(documents):
            bar.update(1)
            if restored:
                out.write(("\n\n" if written else "") + restored)
                written = True
        if written:
            out.write("\n")


def _infer_jsonl(restorer: Restorer, records: list[dict], output: str, bar) -> None:
    from restore.textio import STDIO, dump_jsonl_line, partial_path, resumable_jsonl_output

    if output in (None, STDIO):
        for record, restored in zip(records, restorer.restore_many_checked(r["source"] for r in records), strict=True):
            sys.stdout.write(dump_jsonl_line(_restored_record(record, *restored, restorer.faithful)))
            sys.stdout.flush()
            bar.update(1)
        return
    with resumable_jsonl_output(output) as (out, done):
        _check_resumable(done, records, partial_path(output))
        bar.update(len(done))
        todo = records[len(done) :]
        for record, restored in zip(todo, restorer.restore_many_checked(r["source"] for r in todo), strict=True):
            out.write(dump_jsonl_line(_restored_record(record, *restored, restorer.faithful)))
            out.flush()  # a record is either whole in the .part file or missing
            bar.update(1)


# Fields a .jsonl run adds to each record: the restoration and, with faithfulness on, whether it is faithful.
ADDED_FIELDS = ("restored", "faithful")


def _restored_record(record: dict, restored: str, unfaithful_lines: int, checked: bool) -> dict:
    """An output record: the input's fields, ``restored`` and, when faithfulness was checked,
    ``faithful``: whether every line of ``restored`` corrupts back to its line of ``source``.

    >>> _restored_record({"id": 7, "source": "born 1879 ."}, "Born in 1879.", 0, True)
    {'id': 7, 'source': 'born 1879 .', 'restored': 'Born in 1879.', 'faithful': True}
    """
    return {**record, "restored": restored, **({"faithful": unfaithful_lines == 0} if checked else {})}


def _check_resumable(done: list[dict], records: list[dict], part: Path) -> None:
    """The records of an interrupted run must be the first inputs, restored (else refuse to mix)."""
    if len(done) > len(records):
        raise RestoreError(f"{part}: has more records than the input; delete it to start over")
    for k, (old, new) in enumerate(zip(done, records), 1):
        if {key: value for key, value in old.items() if key not in ADDED_FIELDS} != {
            key: value for key, value in new.items() if key not in ADDED_FIELDS
        } or not isinstance(old.get("restored"), str):
            raise RestoreError(f"{part}: record {k} does not match the input; delete it to start over")


class _ProgressBar:
    """A tqdm bar (on a terminal only) of documents, with chunks and tokens/s, fed by the Restorer."""

    def __init__(self, restorer: Restorer, total: int):
        from restore.progress import progress

        self.restorer = restorer
        self.started = time.perf_counter()
        self.bar = progress(total=total, desc="restore", unit="doc")
        restorer.progress = self.on_batch

    def on_batch(self, stats: InferStats) -> None:
        rate = stats.generated_tokens / max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix_str(f"{stats.chunks} chunks, {rate:.0f} tok/s", refresh=False)
        self.bar.refresh()

    def update(self, n: int) -> None:
        self.bar.update(n)

    def __enter__(self) -> "_ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()
        self.restorer.progress = None
