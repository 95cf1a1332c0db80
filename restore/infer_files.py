"""``restore infer`` on files and stdin: text documents and ``.jsonl`` records, one output.

- text inputs: each file (or stdin, ``-``) is one document; the restored documents are
  written one after another, separated by a blank line, atomically;
- ``.jsonl`` inputs: every record's ``source`` is restored into ``restored``, other fields
  kept; finished records go to ``OUTPUT.part`` as they come, so an interrupted run resumes.

The inputs are checked (``.jsonl`` records read and validated) and the model directory
validated before torch is imported; the output is locked for the run. A :class:`~restore.infer.Restorer` does the restoring; this
module reads, writes, shows progress and prints the summary line (:func:`summary_line`).
Shard inputs (directories, globs, parquet) are :mod:`restore.corpus`'s.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from restore.errors import RestoreError
from restore.infer import InferStats, RestoredDocument, Restorer
from restore.settings import restorer_options


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
    from restore.checkpoint import resolve_model
    from restore.device import prepare_model_run
    from restore.textio import is_jsonl, output_lock

    started = time.perf_counter()
    inputs = list(args.inputs) or ["-"]
    _check_inputs(inputs)
    jsonl = [is_jsonl(p) for p in inputs]
    if any(jsonl) and not all(jsonl):
        raise RestoreError("cannot mix .jsonl and text inputs in one run")
    if args.spans and not all(jsonl):
        raise RestoreError("--spans needs .jsonl inputs (the spans go into each output record)")
    records = _read_records(inputs) if all(jsonl) else None  # validate every record before loading the model
    read_ahead = _check_text_inputs(inputs) if records is None else {}  # binary or non-UTF-8: before the model too
    model = resolve_model(args.model).path  # checked before torch is imported
    with output_lock(args.output):  # one run per output file (before the model loads: fail fast)
        prepare_model_run()
        restorer = Restorer.from_pretrained(**restorer_options(args, model))
        loaded = time.perf_counter()
        with _ProgressBar(restorer, total=len(records) if records is not None else len(inputs)) as bar:
            if records is not None:
                _infer_jsonl(restorer, records, args.output, bar, args.spans)
            else:
                _infer_text(restorer, inputs, args.output, bar, read_ahead)
    print(summary_line(restorer, time.perf_counter() - loaded, time.perf_counter() - started), file=sys.stderr)


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


def _infer_jsonl(restorer: Restorer, records: list[dict], output: str, bar, spans: bool = False) -> None:
    from restore.textio import STDIO, dump_jsonl_line, partial_path, resumable_jsonl_output

    chunking = restorer.chunking if spans else None
    if output in (None, STDIO):
        for record, restored in zip(records, restorer.restore_many_checked(r["source"] for r in records), strict=True):
            sys.stdout.write(dump_jsonl_line(_restored_record(record, restored, restorer.faithful, chunking)))
            sys.stdout.flush()
            bar.update(1)
        return
    with resumable_jsonl_output(output) as (out, done):
        _check_resumable(done, records, partial_path(output), spans)
        bar.update(len(done))
        todo = records[len(done) :]
        for record, restored in zip(todo, restorer.restore_many_checked(r["source"] for r in todo), strict=True):
            out.write(dump_jsonl_line(_restored_record(record, restored, restorer.faithful, chunking)))
            out.flush()  # a record is either whole in the .part file or missing
            bar.update(1)


# Fields a .jsonl run adds to each record: the restoration, with faithfulness on whether it is
# faithful, and with --spans its words' spans and its chunks' outcomes (restore.spans).
ADDED_FIELDS = ("restored", "faithful", "spans", "chunks")


def _restored_record(record: dict, restored: RestoredDocument, checked: bool, chunking=None) -> dict:
    """An output record: the input's fields, ``restored`` and, when faithfulness was checked,
    ``faithful``: whether every line of ``restored`` corrupts back to its line of ``source``;
    with ``chunking`` (``--spans``), ``spans`` and ``chunks`` (:mod:`restore.spans`).

    >>> _restored_record({"id": 7, "source": "born 1879 ."}, RestoredDocument("Born in 1879.", 0), True)
    {'id': 7, 'source': 'born 1879 .', 'restored': 'Born in 1879.', 'faithful': True}
    """
    result = {**record, "restored": restored.text, **({"faithful": restored.unfaithful_lines == 0} if checked else {})}
    if chunking is not None:
        from restore.spans import chunk_spans, restored_spans

        result["spans"] = [span.as_dict() for span in restored_spans(restored.text, record["source"])]
        result["chunks"] = [chunk.as_dict() for chunk in chunk_spans(record["source"], chunking, restored.chunk_outcomes)]
    return result


def _check_resumable(done: list[dict], records: list[dict], part: Path, spans: bool = False) -> None:
    """The records of an interrupted run must be the first inputs, restored the same way (else refuse to mix)."""
    if len(done) > len(records):
        raise RestoreError(f"{part}: has more records than the input; delete it to start over")
    if done and ("spans" in done[0]) != spans:
        raise RestoreError(f"{part}: was written {'without' if spans else 'with'} --spans; rerun it as it was, or delete it to start over")
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
