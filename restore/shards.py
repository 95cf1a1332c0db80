"""Shards: ``.parquet`` / ``.jsonl(.gz|.xz)`` files in, parquet shards out (what every corpus run shares).

``restore infer DIR_OR_GLOB ... -o OUTDIR`` (:mod:`restore.corpus`) restores the
``--source-field`` (default ``source``) of every row into a ``restored`` field, other fields
kept, one output shard per input shard with the same name (``train-00.jsonl.xz`` ->
``OUTDIR/train-00.parquet``), in one process or on a Ray cluster (:mod:`restore.ray_job`).
This module is everything both paths share:

- :func:`find_shards` / :func:`plan_corpus`: the inputs, their outputs, which are complete;
- :func:`read_shard`: a shard as pyarrow tables of at most ``batch_rows`` rows (streamed:
  memory does not grow with the shard), with hidden columns saying where each row came from;
- :func:`restore_table`: restores one such table; a bad row (not a JSON object, no string
  field, NUL bytes) gets an ``error`` and an empty ``restored``, and the run goes on;
- :class:`ShardSink`: writes restored tables, shard after shard, each under a temporary name
  renamed when the shard is complete, so an output shard is either whole or absent and a
  rerun skips the complete ones; :func:`progress_bar` shows its rows.

Every output shard has the input's columns, then ``restored`` and ``error`` (null on rows
that were restored), and records its input in the parquet metadata (key ``restore``).

>>> shard_stem("data/train-00.jsonl.xz"), shard_stem("part-0001.parquet")
('train-00', 'part-0001')
>>> is_shard_input("corpus/*.parquet"), is_shard_input("notes.txt")
(True, False)
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import json
import lzma
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from restore.errors import RestoreError

SHARD_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".jsonl.xz")
RESTORED = "restored"
ERROR = "error"
# Hidden columns a table carries from the reader to the writer (never written).
SHARD = "__restore_shard"  # index of the shard in the plan
ROW = "__restore_row"  # row number in the shard (checks order: no duplicate, no lost row)
READ_ERROR = "__restore_read_error"  # a .jsonl line that is not a record
TOKENS = "__restore_tokens"  # generated tokens of the table (on its first row), for the summary
HIDDEN = (SHARD, ROW, READ_ERROR, TOKENS)
# Rows per table read from a shard (one Restorer call restores them together: sorted, batched).
BATCH_ROWS = 1024
METADATA_KEY = b"restore"
GLOB_CHARS = "*?["


# --- the plan: shards in, shards out --------------------------------------------------------------
def shard_stem(path: str | os.PathLike) -> str:
    """The name an output shard takes from its input (without the shard suffix)."""
    name = Path(path).name
    for suffix in sorted(SHARD_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_shard_file(path: str | os.PathLike) -> bool:
    return str(path).endswith(SHARD_SUFFIXES)


def is_shard_input(name: str) -> bool:
    """An input only the corpus path reads: a directory, a glob, or a .parquet/.jsonl.gz/.jsonl.xz file."""
    if name == "-":
        return False
    if any(c in name for c in GLOB_CHARS) and not Path(name).exists():
        return True
    return Path(name).is_dir() or (is_shard_file(name) and not name.endswith(".jsonl"))


def find_shards(inputs: Iterable[str]) -> list[Path]:
    """The shard files named by ``inputs`` (directories: their shard files; globs: expanded), in order."""
    shards: list[Path] = []
    for name in inputs:
        path = Path(name)
        if name == "-":
            raise RestoreError("a corpus is read from shard files, not stdin")
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and is_shard_file(p) and not p.name.startswith((".", "_")))
            if not found:
                raise RestoreError(f"{path}: no shard files ({', '.join(SHARD_SUFFIXES)}) in this directory")
        elif path.is_file():
            found = [path]
        elif any(c in name for c in GLOB_CHARS):
            found = sorted(Path(p) for p in glob.glob(name, recursive=True) if Path(p).is_file() and is_shard_file(p))
            if not found:
                raise RestoreError(f"{name}: no shard files ({', '.join(SHARD_SUFFIXES)}) match this pattern")
        else:
            raise RestoreError(f"{path}: no such file or directory")
        for shard in found:
            if not is_shard_file(shard):
                raise RestoreError(f"{shard}: not a shard ({', '.join(SHARD_SUFFIXES)})")
        shards.extend(found)
    return shards


@dataclass(frozen=True)
class ShardJob:
    """One input shard and its output."""

    index: int
    input: Path
    output: Path
    input_bytes: int
    rows: int | None  # known up front for parquet (its metadata), else None

    def metadata(self, source_field: str) -> dict:
        """What the output records about its input (checked when a rerun finds the output complete)."""
        return {"input": self.input.name, "input_bytes": self.input_bytes, "source_field": source_field}


@dataclass
class CorpusPlan:
    jobs: list[ShardJob]  # shards still to restore
    complete: list[ShardJob]  # shards whose output exists (skipped)
    out_dir: Path
    source_field: str


def plan_corpus(inputs: Iterable[str], out_dir: str | os.PathLike, source_field: str) -> CorpusPlan:
    """Shards to restore and shards already complete; checks names and parquet schemas first."""
    shards = find_shards(inputs)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RestoreError(f"{out}: output must be a directory for shard inputs")
    by_name: dict[str, Path] = {}
    jobs, complete = [], []
    for shard in shards:
        stem = shard_stem(shard)
        if stem in by_name:
            raise RestoreError(f"{by_name[stem]} and {shard} would both be written to {out / (stem + '.parquet')}")
        by_name[stem] = shard
        rows = _check_parquet_schema(shard, source_field) if shard.name.endswith(".parquet") else None
        job = ShardJob(len(jobs) + len(complete), shard, out / f"{stem}.parquet", shard.stat().st_size, rows)
        if job.output.exists():
            _check_complete_output(job, source_field)
            complete.append(job)
        else:
            jobs.append(job)
    jobs = [ShardJob(k, j.input, j.output, j.input_bytes, j.rows) for k, j in enumerate(jobs)]
    return CorpusPlan(jobs, complete, out, source_field)


def _check_parquet_schema(path: Path, source_field: str) -> int:
    """Row count of a parquet shard whose columns suit the run (else one clear error)."""
    try:
        meta = pq.ParquetFile(path).metadata
    except (OSError, pa.ArrowException) as e:
        raise RestoreError(f"{path}: not a readable parquet file ({str(e).splitlines()[0]})") from None
    schema = meta.schema.to_arrow_schema()
    _check_columns(path, schema.names)
    if source_field not in schema.names:
        raise RestoreError(f"{path}: no column {source_field!r} (columns: {', '.join(schema.names)}); use --source-field")
    kind = schema.field(source_field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)):
        raise RestoreError(f"{path}: column {source_field!r} is {kind}, expected text (string)")
    return meta.num_rows


def _check_columns(path: Path, names: Iterable[str]) -> None:
    for name in names:
        if name in (RESTORED, ERROR) or name in HIDDEN:
            raise RestoreError(f"{path}: already has a column {name!r}, which the output adds; rename it first")


def _check_complete_output(job: ShardJob, source_field: str) -> None:
    try:
        stored = (pq.read_schema(job.output).metadata or {}).get(METADATA_KEY)
        made_from = json.loads(stored) if stored else None
    except (OSError, pa.ArrowException, ValueError):
        made_from = None
    if made_from != job.metadata(source_field):
        raise RestoreError(f"{job.output}: exists but was not made from {job.input} with this --source-field; delete it to redo")


# --- reading --------------------------------------------------------------------------------------
def open_shard(path: str | os.PathLike) -> IO[bytes]:
    return open(path, "rb")


def read_shard(
    job: ShardJob, source_field: str, batch_rows: int | None = None, file: IO[bytes] | None = None
) -> Iterator[pa.Table]:
    """The rows of a shard in tables of at most ``batch_rows`` rows (at least one table, maybe empty).

    ``file``: the shard opened as a binary file (default: opened from ``job.input``; Ray passes
    its own). A ``.jsonl`` shard is read twice, both times streamed: once for a schema that
    fits every record (a field null in the first records and text later is text), once for
    the rows. A line that is not a JSON object becomes a row of nulls with its reason.
    """
    batch_rows = batch_rows or BATCH_ROWS
    with contextlib.ExitStack() as stack:
        f = file if file is not None else stack.enter_context(open_shard(job.input))
        if job.input.name.endswith(".parquet"):
            tables = _read_parquet(f, job, batch_rows)
        else:
            schema = _jsonl_schema(_jsonl_rows(f, job.input, source_field), job.input, source_field, batch_rows)
            f.seek(0)
            tables = _read_jsonl(_jsonl_rows(f, job.input, source_field), schema, job, batch_rows)
        yield from tables


def _with_position(table: pa.Table, job: ShardJob, first_row: int) -> pa.Table:
    n = table.num_rows
    table = table.append_column(SHARD, pa.array([job.index] * n, pa.int32()))
    return table.append_column(ROW, pa.array(range(first_row, first_row + n), pa.int64()))


def _read_parquet(f: IO[bytes], job: ShardJob, batch_rows: int) -> Iterator[pa.Table]:
    parquet = pq.ParquetFile(f)
    schema = parquet.schema_arrow.remove_metadata()
    row = 0
    for batch in parquet.iter_batches(batch_size=batch_rows):
        yield _with_position(pa.Table.from_batches([batch], schema), job, row)
        row += batch.num_rows
    if row == 0:
        yield _with_position(schema.empty_table(), job, 0)


def _decompressed(f: IO[bytes], path: Path) -> IO[bytes]:
    if path.name.endswith(".gz"):
        return gzip.GzipFile(fileobj=f)
    if path.name.endswith(".xz"):
        return lzma.LZMAFile(f)
    return f


def _jsonl_rows(f: IO[bytes], path: Path, source_field: str) -> Iterator[tuple[dict, str | None]]:
    """``(record, problem)`` per non-blank line; a line that is not a JSON object is ``({}, reason)``."""
    from restore.textio import parse_jsonl_record

    for lineno, raw in enumerate(iter(_decompressed(f, path).readline, b""), 1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
            record = parse_jsonl_record(line)
            if "\\ud" in line.lower():  # a lone surrogate escape cannot be written as UTF-8
                json.dumps(record, ensure_ascii=False).encode("utf-8")
        except UnicodeError:
            yield {}, f"line {lineno}: not valid UTF-8 text"
            continue
        except ValueError as e:
            yield {}, f"line {lineno}: {e}"
            continue
        _check_columns(path, record)
        if source_field in record and not isinstance(record[source_field], str):
            # Kept out of the text column; the row's error says what it was.
            value = record.pop(source_field)
            yield record, f"field {source_field!r} is not text ({type(value).__name__})"
            continue
        yield record, None


def _jsonl_schema(rows: Iterator[tuple[dict, str | None]], path: Path, source_field: str, batch_rows: int) -> pa.Schema:
    schema = pa.schema([])
    for records in _batched((record for record, _ in rows), batch_rows):
        try:
            schema = pa.unify_schemas([schema, pa.Table.from_pylist(records).schema], promote_options="permissive")
        except (pa.ArrowException, UnicodeError) as e:
            raise RestoreError(f"{path}: records whose fields cannot share one column type ({str(e).splitlines()[0]})") from None
    # The source column is text even where every value is missing (non-text values were taken out).
    if source_field in schema.names:
        return schema.set(schema.get_field_index(source_field), pa.field(source_field, pa.string()))
    return schema.append(pa.field(source_field, pa.string()))


def _read_jsonl(rows: Iterator[tuple[dict, str | None]], schema: pa.Schema, job: ShardJob, batch_rows: int) -> Iterator[pa.Table]:
    row = 0
    for batch in _batched(rows, batch_rows):
        records, problems = zip(*batch)
        table = pa.Table.from_pylist(list(records), schema=schema).append_column(READ_ERROR, pa.array(problems, pa.string()))
        yield _with_position(table, job, row)
        row += len(batch)
    if row == 0:
        yield _with_position(schema.empty_table().append_column(READ_ERROR, pa.array([], pa.string())), job, 0)


def _batched(items: Iterable, n: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


# --- restoring ------------------------------------------------------------------------------------
def row_problem(value, source_field: str) -> str | None:
    """Why a row's source cannot be restored, or None.

    >>> row_problem("born 1879 .", "source"), row_problem(None, "source"), row_problem("a\\x00b", "text")
    (None, "missing field 'source'", "field 'text' is not valid text (NUL byte)")
    """
    if value is None:
        return f"missing field {source_field!r}"
    if not isinstance(value, str):
        return f"field {source_field!r} is not text ({type(value).__name__})"
    if "\x00" in value:
        return f"field {source_field!r} is not valid text (NUL byte)"
    return None


def restore_table(restorer, table: pa.Table, source_field: str) -> pa.Table:
    """``table`` with ``restored`` and ``error`` columns (and the generated tokens, hidden).

    Rows with a problem (:func:`row_problem`, or a read error) are not restored: ``restored``
    is empty and ``error`` says why. ``restorer`` may be None for a table with nothing to restore.
    """
    n = table.num_rows
    sources = table.column(source_field).to_pylist() if source_field in table.column_names else [None] * n
    read_errors = table.column(READ_ERROR).to_pylist() if READ_ERROR in table.column_names else [None] * n
    errors = [read_error or row_problem(source, source_field) for source, read_error in zip(sources, read_errors)]
    todo = [k for k, error in enumerate(errors) if error is None]
    restored = [""] * n
    tokens = 0
    if todo:
        if restorer is None:
            raise RuntimeError("restore_table: rows to restore but no Restorer")
        before = restorer.stats.generated_tokens
        for k, text in zip(todo, restorer.restore_many(sources[k] for k in todo), strict=True):
            restored[k] = text
        tokens = restorer.stats.generated_tokens - before
    if READ_ERROR in table.column_names:
        table = table.drop_columns([READ_ERROR])
    table = table.append_column(RESTORED, pa.array(restored, pa.string()))
    table = table.append_column(ERROR, pa.array(errors, pa.string()))
    return table.append_column(TOKENS, pa.array([tokens] + [0] * (n - 1) if n else [], pa.int64()))


# --- writing --------------------------------------------------------------------------------------
@dataclass
class SinkStats:
    """What a :class:`ShardSink` wrote (the corpus summary line; Ray actors' counts come in the tables)."""

    shards: int = 0
    rows: int = 0
    errors: int = 0
    generated_tokens: int = 0


class ShardSink:
    """Writes restored tables (of shards in plan order, rows in order) to the output shards.

    A shard is written to a temporary file beside its output (:func:`restore.textio.atomic_output`)
    and renamed when the next shard starts or :meth:`close` is called; rows arriving out of
    order (a duplicate or a lost row) stop the run before anything wrong is renamed into place.
    """

    def __init__(self, plan: CorpusPlan, on_rows=None):
        self.plan = plan
        self.stats = SinkStats()
        self.on_rows = on_rows
        self._job: ShardJob | None = None
        self._next_row = 0
        self._stack: contextlib.ExitStack | None = None
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self.seen: set[int] = set()

    def write(self, table: pa.Table) -> None:
        """Write a table of restored rows (runs of consecutive shards; rows in order)."""
        shards = table.column(SHARD).to_pylist()
        start = 0
        for k in range(1, len(shards) + 1):
            if k == len(shards) or shards[k] != shards[start]:
                self._write_rows(self.plan.jobs[shards[start]], table.slice(start, k - start))
                start = k

    def write_shard(self, job: ShardJob, tables: Iterable[pa.Table]) -> None:
        """Write one whole shard; an empty shard (one empty table) gets an empty output."""
        for table in tables:
            self._write_rows(job, table)
        self._commit()

    def _write_rows(self, job: ShardJob, table: pa.Table) -> None:
        if self._job is None or job.index != self._job.index:
            if job.index in self.seen:
                raise RuntimeError(f"rows of {job.input} arrived after its output shard was written")
            self._commit()
            self._open(job, table.schema)
        if table.num_rows == 0:
            return
        rows = table.column(ROW)
        if rows[0].as_py() != self._next_row or rows[-1].as_py() != self._next_row + table.num_rows - 1:
            raise RuntimeError(f"{job.input}: rows out of order (expected row {self._next_row}, got {rows[0].as_py()})")
        self._next_row += table.num_rows
        self.stats.rows += table.num_rows
        self.stats.errors += table.num_rows - table.column(ERROR).null_count
        self.stats.generated_tokens += pc.sum(table.column(TOKENS)).as_py() or 0
        self._writer.write_table(table.select(self._schema.names).cast(self._schema))
        if self.on_rows:
            self.on_rows(table.num_rows, self.stats)

    def _open(self, job: ShardJob, schema: pa.Schema) -> None:
        from restore.textio import atomic_output

        names = [name for name in schema.names if name not in HIDDEN]
        fields = [schema.field(name) for name in names]
        metadata = {METADATA_KEY: json.dumps(job.metadata(self.plan.source_field)).encode()}
        self._schema = pa.schema(fields, metadata=metadata)
        self._stack = contextlib.ExitStack()
        f = self._stack.enter_context(atomic_output(job.output, binary=True))
        self._writer = pq.ParquetWriter(f, self._schema)
        self._job, self._next_row = job, 0
        self.seen.add(job.index)

    def _commit(self) -> None:
        if self._job is None:
            return
        job, self._job = self._job, None
        if job.rows is not None and self._next_row != job.rows:
            self._abort_open(RuntimeError(f"{job.input}: {self._next_row} rows written, the shard has {job.rows}"))
        self._writer.close()
        self._stack.close()  # renames the temporary file to the output shard
        self.stats.shards += 1

    def _abort_open(self, error: BaseException) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()
        self._stack.__exit__(type(error), error, error.__traceback__)  # removes the temporary file
        raise error

    def close(self) -> None:
        self._commit()

    def abort(self) -> None:
        """Drop the shard being written (an interrupted run); complete shards stay."""
        if self._job is not None:
            self._job = None
            with contextlib.suppress(BaseException):
                self._abort_open(KeyboardInterrupt())


# --- progress ------------------------------------------------------------------------------------
def progress_bar(plan: CorpusPlan):
    """A tqdm bar of rows (on a terminal only); the total is known when every shard is parquet."""
    from restore.progress import progress

    rows = [job.rows for job in plan.jobs]
    total = sum(rows) if None not in rows else None
    bar = progress(total=total, desc="restore", unit="row")
    started = time.perf_counter()

    def on_rows(n: int, stats: SinkStats) -> None:
        rate = stats.generated_tokens / max(time.perf_counter() - started, 1e-9)
        bar.set_postfix_str(f"{stats.shards}/{len(plan.jobs)} shards, {rate:.0f} tok/s", refresh=False)
        bar.update(n)

    return bar, on_rows
