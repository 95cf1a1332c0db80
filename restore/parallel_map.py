"""``datasets.map`` as restore runs it, and the cache entries it fills.

Preparing training data (:mod:`restore.data`, :mod:`restore.token_ids`) maps functions over
datasets in parallel (:func:`parallel_map`: quiet, Ctrl-C stops it with one
``KeyboardInterrupt``, its cache files in a folder of ours) and keeps the results as cache
entries that appear whole or not at all (:func:`cache_entry`; :func:`scratch_folder` for the
work in between).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Iterator

from restore.device import available_cpus


@contextlib.contextmanager
def quiet_datasets() -> Iterator[None]:
    """Keep ``datasets`` from logging (its errors become one RestoreError line instead)."""
    import datasets

    from restore.progress import show_progress

    level = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(logging.CRITICAL)
    if not show_progress():
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(level)


@contextlib.contextmanager
def interruptible_workers() -> Iterator[None]:
    """Ctrl-C during a multi-process ``datasets.map``: one ``KeyboardInterrupt`` in this process only.

    The terminal sends SIGINT to every process of the group: without this, each worker
    (and the pool's manager) prints its own traceback, and the pool's clean-up turns the
    interrupt into a ``TimeoutError``. Worker processes are forked with a SIGINT handler
    that ignores the signal (the pool terminates them when this process unwinds); here the
    signal raises ``KeyboardInterrupt``, whatever error the unwinding raises on top of it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    parent, interrupted = os.getpid(), []
    previous = signal.getsignal(signal.SIGINT)

    def on_interrupt(signum, frame):
        if os.getpid() != parent:
            return  # a forked worker: the parent stops it
        interrupted.append(signum)
        if callable(previous):
            previous(signum, frame)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    except BaseException:
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.signal(signal.SIGINT, previous)


def parallel_map(dataset, function, work: Path, name: str, num_proc: int | None, **options):
    """``dataset.map(function, batched=True, num_proc=...)`` with its cache files in ``work``.

    Quiet, interruptible (see :func:`interruptible_workers`) and with a fixed fingerprint,
    so ``datasets`` neither hashes ``function``'s arguments (a tokenizer) nor caches
    anything outside ``work``.
    """
    with quiet_datasets(), interruptible_workers():
        return dataset.map(
            function,
            batched=True,
            num_proc=num_proc,
            cache_file_name=str(work / f"{name}.arrow"),
            new_fingerprint=hashlib.sha256(f"{work}/{name}".encode()).hexdigest()[:16],
            desc=name,
            **options,
        )


@contextlib.contextmanager
def cache_entry(dest: Path) -> Iterator[Path]:
    """Build a cache entry in a temporary folder beside ``dest``, renamed to ``dest`` when complete.

    An interrupted or failed build leaves nothing behind (the temporary folder is removed).
    """
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def scratch_folder(path: Path) -> Iterator[Path]:
    """A scratch folder (this process's own), removed afterwards whatever happens."""
    path = path.with_name(f"{path.name}-{os.getpid()}")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def num_proc_for(requested: int, rows: int) -> int | None:
    """``num_proc`` for :func:`parallel_map` over ``rows`` rows: ``requested`` processes (0 = all CPU
    cores), at most one per 8 rows; None (no pool) for one.

    >>> num_proc_for(4, 1000), num_proc_for(4, 20), num_proc_for(1, 1000)
    (4, 2, None)
    """
    procs = min(requested or available_cpus(), max(1, rows // 8))  # tiny inputs are not worth a process pool
    return procs if procs > 1 else None
