"""The Python API: load a model once, restore a string, a list or a stream of documents, get spans.

>>> import restore
>>> r = restore.load()                                   # doctest: +SKIP
>>> doc = r("influenti politician earli day soviet union .")  # doctest: +SKIP
>>> doc.text                                             # doctest: +SKIP
'He was an influential politician of the early days of the Soviet Union.'
>>> [(s.text, doc.tokens[s.source]) for s in doc.spans if not s.inserted][:2]  # doctest: +SKIP
[('influential', 'influenti'), ('politician', 'politician')]

:func:`load` resolves the model as ``restore infer`` does (a directory, else ``$RESTORE_MODEL``,
else the shipped ``restore-small``) and builds the same :class:`restore.infer.Restorer` with
the same engine choice, device choice and faithfulness checks. A :class:`Pipeline` restores one
document (``r(text)``), a list (``r(texts)``) or any iterable, lazily and batched by the
Restorer's token budget (``r.pipe(texts)``); every result is a :class:`Restoration`: ``.text``,
``.spans`` (:mod:`restore.spans`), ``.tokens``, ``.faithful``, ``.chunks``.

Importing this module (or ``restore``) loads no model and imports neither torch nor
transformers; :func:`load` does.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence, overload

from restore.spans import ChunkSpan, Span, chunk_spans, restored_spans

if TYPE_CHECKING:
    from restore.infer import InferStats, Restorer


@dataclass(frozen=True)
class Restoration:
    """One restored document: its ``source`` (the corrupted input) and restored ``text``.

    ``faithful``: whether every line of ``text`` corrupts back to its line of ``source``
    (``None`` when the checks were off); ``chunks``: the chunks the input was cut into and what
    the checks did to each (:class:`restore.spans.ChunkSpan`). ``spans`` (computed when first
    read) link every output word to the input token it realizes, ``None`` where it was inserted.

    >>> doc = Restoration("born 1879 .", "He was born in 1879.", True, (ChunkSpan(0, 3, "passed"),))
    >>> [(s.text, s.source) for s in doc.spans]
    [('He', None), ('was', None), ('born', 0), ('in', None), ('1879', 1), ('.', 2)]
    >>> doc.as_dict()["spans"][2]
    {'start': 7, 'end': 11, 'text': 'born', 'source': 0}
    """

    source: str
    text: str
    faithful: bool | None
    chunks: tuple[ChunkSpan, ...] = ()

    @property
    def tokens(self) -> list[str]:
        """The input tokens (``source.split()``) that spans point into."""
        return self.source.split()

    @cached_property
    def spans(self) -> list[Span]:
        return restored_spans(self.text, self.source)

    def as_dict(self) -> dict:
        """JSON-ready: ``restored``, ``faithful``, ``tokens``, ``spans``, ``chunks``."""
        return {
            "restored": self.text,
            "faithful": self.faithful,
            "tokens": self.tokens,
            "spans": [span.as_dict() for span in self.spans],
            "chunks": [chunk.as_dict() for chunk in self.chunks],
        }


class Pipeline:
    """A loaded model that restores documents (build it with :func:`load`).

    Not thread-safe: one call at a time (``restore serve`` queues its requests in front of one).
    """

    def __init__(self, restorer: Restorer, path: str | Path | None = None) -> None:
        self.restorer = restorer
        self.path = Path(path) if path is not None else None

    @property
    def engine(self) -> str:
        """The engine as ``restore infer``'s summary names it, e.g. ``ctranslate2 int8, cpu, 2 workers x 1 thread``."""
        return self.restorer.generator.describe()

    @property
    def stats(self) -> InferStats:
        """Counts of everything restored so far (documents, chunks, tokens, faithfulness)."""
        return self.restorer.stats

    @overload
    def __call__(self, text: str) -> Restoration: ...
    @overload
    def __call__(self, text: Sequence[str]) -> list[Restoration]: ...

    def __call__(self, text):
        """Restore one document (a string: one :class:`Restoration`) or a list of them (a list)."""
        if isinstance(text, str):
            return next(self.pipe([text]))
        return list(self.pipe(text))

    def pipe(self, texts: Iterable[str]) -> Iterator[Restoration]:
        """Restorations of ``texts``, in order, read lazily: chunks of many documents are batched
        together by the token budget, and results come out window by window (as ``restore
        infer`` writes them), so an endless iterator works."""
        pending: deque[str] = deque()

        def read() -> Iterator[str]:
            for text in texts:
                if not isinstance(text, str):
                    raise TypeError(f"documents must be str, not {type(text).__name__}")
                pending.append(text)
                yield text

        checked = self.restorer.faithful
        for restored in self.restorer.restore_many_checked(read()):
            source = pending.popleft()
            chunks = chunk_spans(source, self.restorer.chunking, restored.chunk_outcomes)
            yield Restoration(source, restored.text, restored.unfaithful_lines == 0 if checked else None, tuple(chunks))


def load(
    model: str | Path | None = None,
    *,
    device: str = "auto",
    backend: str = "auto",
    compute_type: str = "auto",
    batch_tokens: int | None = None,
    quality: str = "best",
    num_beams: int | None = None,
    length_penalty: float | None = None,
    faithful: bool = True,
) -> Pipeline:
    """Load a model once: ``model`` (a directory), else ``$RESTORE_MODEL``, else the shipped one.

    The options are ``restore infer``'s (``--device``, ``--backend``, ``--compute-type``,
    ``--batch-tokens``, ``--quality``, ``--num-beams``, ``--length-penalty``, ``--no-faithful``),
    with the same defaults (``quality="best"``: a beam of 6, see :data:`restore.settings.QUALITY`). Like the
    command, this sets up the process for a model (:func:`restore.device.prepare_model_run`:
    PyTorch on one CPU thread unless ``OMP_NUM_THREADS`` says otherwise, transformers quiet).
    A missing or broken model, or a bad option, raises :class:`restore.errors.RestoreError`.
    """
    from restore.checkpoint import resolve_model
    from restore.device import prepare_model_run
    from restore.infer import Restorer
    from restore.settings import restorer_settings

    info = resolve_model(model)  # a bad model directory is reported before torch loads
    prepare_model_run()
    settings = restorer_settings(
        info.path, device=device, backend=backend, compute_type=compute_type, batch_tokens=batch_tokens,
        quality=quality, num_beams=num_beams, length_penalty=length_penalty, faithful=faithful,
    )  # fmt: skip
    return Pipeline(Restorer.from_pretrained(**settings), info.path)
