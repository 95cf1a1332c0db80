"""Reading user input safely and writing outputs atomically (shared by every CLI command).

Every problem a user can cause (missing file, directory, binary or non-UTF-8
data, a bad ``.jsonl`` line) raises :class:`~restore.errors.RestoreError` with one
clear line; outputs are written to a temporary file beside the target and renamed
into place, so a failed run never leaves a half-written file. An output that exists
and is not a regular file (``/dev/null``, a FIFO, a terminal) is written directly
instead: a rename would replace the device or pipe with a plain file. A symlink is
followed: the file it names is replaced, the link stays (:func:`resolve_output`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import lzma
import os
import re
import stat
import sys
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator

from restore.errors import RestoreError

STDIO = "-"
TEMP_SUFFIX = ".tmp"  # atomic_output writes ".NAME.<8 random characters>.tmp" beside NAME


def _check_text(data: bytes, name: str) -> str:
    if b"\x00" in data:
        raise RestoreError(f"{name}: looks like a binary file (it contains NUL bytes), expected UTF-8 text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RestoreError(f"{name}: not valid UTF-8 (byte {e.start}): expected UTF-8 text") from None


def read_text(path: str | os.PathLike | None) -> str:
    """The whole text of ``path`` (``None`` or ``-`` reads stdin), validated as UTF-8 text."""
    if path is None or str(path) == STDIO:
        return _check_text(sys.stdin.buffer.read(), "<stdin>")
    p = Path(path)
    if not p.exists():
        raise RestoreError(f"{p}: no such file")
    if p.is_dir():
        raise RestoreError(f"{p}: is a directory, expected a text or .jsonl file")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise RestoreError(f"{p}: cannot read ({e.strerror})") from None
    return _check_text(data, str(p))


def read_data_text(path: str | os.PathLike) -> str:
    """The text of a data file; ``.xz`` files are decompressed. Problems raise RestoreError."""
    p = Path(path)
    if not p.name.endswith(".xz"):
        return read_text(p)
    if not p.is_file():
        raise RestoreError(f"{p}: {'is a directory' if p.is_dir() else 'no such file'}")
    try:
        data = lzma.decompress(p.read_bytes())
    except (lzma.LZMAError, OSError) as e:
        raise RestoreError(f"{p}: cannot decompress ({e})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RestoreError(f"{p}: not valid UTF-8 after decompression (byte {e.start})") from None


def read_article_texts(path: str | os.PathLike, limit: int | None = None) -> list[str]:
    """The ``text`` fields of an articles file (``.jsonl`` or ``.jsonl.xz``), the first ``limit`` only."""
    texts = []
    for record in parse_jsonl(read_data_text(path), str(path), required="text"):
        if limit is not None and len(texts) >= limit:
            break
        texts.append(record["text"])
    return texts


def is_jsonl(path: str | os.PathLike | None) -> bool:
    return path is not None and str(path).endswith(".jsonl")


def parse_jsonl(text: str, name: str, required: str) -> Iterator[dict]:
    """Records of a ``.jsonl`` text; each must be a JSON object with a string field ``required``."""
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = parse_jsonl_record(line)
        except ValueError as e:
            raise RestoreError(f"{name}:{lineno}: {e}") from None
        if not isinstance(record.get(required), str):
            raise RestoreError(f"{name}:{lineno}: expected a JSON object with a string field {required!r}")
        yield record


def parse_jsonl_record(line: str) -> dict:
    """One ``.jsonl`` line as a JSON object; ``ValueError`` with a short reason if it is not one.

    >>> parse_jsonl_record('{"source": "born 1879 ."}')
    {'source': 'born 1879 .'}
    >>> parse_jsonl_record('[1, 2]')
    Traceback (most recent call last):
    ValueError: expected a JSON object
    """
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON ({e.msg})") from None
    if not isinstance(record, dict):
        raise ValueError("expected a JSON object")
    return record


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """``n`` and a noun in the number it takes, for summary lines (``nouns``: an irregular plural).

    >>> plural(1, "document"), plural(2, "thread"), plural(0, "bad row"), plural(3, "batch", "batches")
    ('1 document', '2 threads', '0 bad rows', '3 batches')
    """
    return f"{n} {noun if n == 1 else nouns or noun + 's'}"


def dump_jsonl_line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


def resolve_output(path: str | os.PathLike) -> tuple[Path, bool]:
    """Where an output file is really written, and whether it is written directly.

    A symlink is followed to the file it names (that file is replaced atomically; the link
    stays a link). An existing output that is not a regular file (a character device such as
    ``/dev/null``, a FIFO, a socket) is written directly (``True``): no temporary file, no
    rename, no lock file beside it.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> (d / "link.txt").symlink_to("real.txt")
    >>> resolve_output(d / "link.txt") == (d.resolve() / "real.txt", False)
    True
    >>> os.mkfifo(d / "fifo")
    >>> resolve_output(d / "fifo")[1]
    True
    """
    try:
        mode = os.stat(path).st_mode  # through symlinks: /dev/stdout may name a pipe
    except OSError:  # not there yet (or unreadable: the write reports it)
        mode = None
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return Path(path), True  # opened by its own name: /proc/self/fd/1 -> "pipe:[...]" is no path
    return Path(os.path.realpath(path)), False


def _shown_parent(path: str | os.PathLike, target: Path) -> Path:
    """The output's directory as the user wrote it (a symlink's: the directory it points into)."""
    return target.parent if Path(path).is_symlink() else Path(path).parent


def _output_target(path: str | os.PathLike) -> tuple[Path, bool]:
    """:func:`resolve_output`, and for a file written through a temporary one, the checks that it
    can be: not a directory, in a directory that exists."""
    target, direct = resolve_output(path)
    if not direct:
        if target.is_dir():
            raise RestoreError(f"{path}: output is a directory")
        if not target.parent.exists():
            raise RestoreError(f"{_shown_parent(path, target)}: output directory does not exist")
    return target, direct


@contextlib.contextmanager
def _direct_output(target: Path, binary: bool) -> Iterator[IO]:
    """Write to an existing device or FIFO as it is (see :func:`resolve_output`)."""
    try:
        f = open(target, "wb") if binary else open(target, "w", encoding="utf-8", newline="")
    except OSError as e:
        raise RestoreError(f"{target}: cannot write ({e.strerror})") from None
    with f:
        yield f


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike | None, binary: bool = False) -> Iterator[IO]:
    """Open an output for writing; a file appears at ``path`` only if the block succeeds.

    ``None`` or ``-`` writes to stdout. ``binary=True`` yields a bytes stream (e.g. a PNG).
    A symlink's target is replaced; a device or FIFO is written directly (:func:`resolve_output`).
    """
    if path is None or str(path) == STDIO:
        stream = sys.stdout.buffer if binary else sys.stdout
        yield stream
        stream.flush()
        return
    target, direct = _output_target(path)
    if direct:
        with _direct_output(target, binary) as f:
            yield f
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
    usual_permissions(tmp)  # mkstemp makes 0600 files
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def usual_permissions(path: str | os.PathLike) -> None:
    """Give a file the permissions a new file gets (``0666`` less the umask: ``0644`` usually),
    e.g. one written through a private temporary file, so that other users can read it."""
    os.chmod(path, 0o666 & ~_umask())


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a whole text file atomically."""
    with atomic_output(path) as f:
        f.write(text)


# --- resumable .jsonl output ---------------------------------------------------------------------
PARTIAL_SUFFIX = ".part"


def partial_path(path: str | os.PathLike) -> Path:
    """Where a resumable output is written until it is complete: ``OUTPUT.part`` beside it.

    >>> partial_path("out/restored.jsonl").as_posix()
    'out/restored.jsonl.part'
    """
    return Path(str(path) + PARTIAL_SUFFIX)


def read_partial_jsonl(path: str | os.PathLike) -> tuple[list[dict], int]:
    """The complete records of a partial ``.jsonl`` file and how many bytes they take.

    A last line cut off by an interruption (no newline, or not valid JSON) is not a record.
    """
    data = Path(path).read_bytes()
    records: list[dict] = []
    size = 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            break
        if not isinstance(record, dict):
            break
        records.append(record)
        size += len(line)
    return records, size


@contextlib.contextmanager
def resumable_jsonl_output(path: str | os.PathLike) -> Iterator[tuple[IO, list[dict]]]:
    """Append records to ``OUTPUT.part``; rename it to ``OUTPUT`` when the block succeeds.

    Yields the open file and the records a previous, interrupted run already wrote
    (the caller skips those and must check they belong to the same input). On any
    error the ``.part`` file stays, so a rerun continues where this one stopped; a
    half-written last line is dropped. The caller should flush after each record.
    A device or FIFO (``/dev/null``) is written directly, with nothing to resume.
    """
    target, direct = _output_target(path)
    if direct:
        with _direct_output(target, binary=False) as f:
            yield f, []
        return
    part = partial_path(target)
    done: list[dict] = []
    if part.exists():
        done, size = read_partial_jsonl(part)
        with open(part, "r+b") as f:  # drop a torn last line before appending
            f.truncate(size)
    with open(part, "a", encoding="utf-8", newline="") as f:
        yield f, done
        f.flush()
        os.fsync(f.fileno())
    os.replace(part, target)


# --- one writer per output --------------------------------------------------------------------------
def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of an output: ``.NAME.lock`` beside it (holds the writer's pid).

    >>> lock_path("out/restored.jsonl").as_posix()
    'out/.restored.jsonl.lock'
    """
    target = Path(path)
    return target.with_name(f".{target.name}.lock")


def stale_temp_files(path: str | os.PathLike) -> list[Path]:
    """Temporary files :func:`atomic_output` left beside ``path`` (a run killed before its rename).

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> for name in (".out.txt.k2j_9xqa.tmp", ".out.txt.lock", ".other.txt.k2j_9xqa.tmp", "out.txt"):
    ...     _ = (d / name).write_text("")
    >>> [p.name for p in stale_temp_files(d / "out.txt")]
    ['.out.txt.k2j_9xqa.tmp']
    """
    target = Path(path)
    pattern = re.compile(rf"\.{re.escape(target.name)}\.[a-z0-9_]{{8}}{re.escape(TEMP_SUFFIX)}")
    return sorted(p for p in target.parent.glob(f".{target.name}.*{TEMP_SUFFIX}") if pattern.fullmatch(p.name))


@contextlib.contextmanager
def exclusive_lock(lock: Path, busy: Callable[[str], str]) -> Iterator[None]:
    """Hold an exclusive, non-blocking ``flock`` on the file ``lock`` for the block (one writer).

    The file holds the holder's pid and is deleted at the end. If another process holds it,
    :class:`RestoreError` with ``busy(who)`` (``who``: ``"pid N"``). The kernel drops the lock when
    its holder dies, even by SIGKILL, so a stale lock file never blocks.
    """
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise RestoreError(f"{lock}: cannot create the lock file ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            raise RestoreError(busy(f"pid {holder}" if holder.isdigit() else "another process")) from None
        # The previous holder deletes the file when it is done; a lock on a deleted file guards nothing.
        try:
            current = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


@contextlib.contextmanager
def output_lock(path: str | os.PathLike | None) -> Iterator[None]:
    """Be the only run writing ``path`` for the duration of the block (nothing to do for stdout).

    An :func:`exclusive_lock` on :func:`lock_path`: a second run on the same output stops at
    once with one line naming the running one's pid, instead of writing every record twice.
    Holding the lock, the run also removes the temporary files a killed earlier run left
    (:func:`stale_temp_files`). A device or FIFO output (``/dev/null``) is not locked: it is
    written directly, and nothing may be created beside it. A symlink's target is locked.
    """
    if path is None or str(path) == STDIO:
        yield
        return
    target, direct = resolve_output(path)
    if direct:
        yield
        return
    if not target.parent.is_dir():
        raise RestoreError(f"{_shown_parent(path, target)}: output directory does not exist")

    def busy(who: str) -> str:
        return f"{path}: another restore run ({who}) is writing this output; wait for it or choose another -o"

    with exclusive_lock(lock_path(target), busy):
        for stale in stale_temp_files(target):
            with contextlib.suppress(OSError):
                stale.unlink()
        yield
