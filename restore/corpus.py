"""Restoring a corpus of shards: ``restore infer DIR_OR_GLOB ... -o OUTDIR [--ray [ADDRESS]]``.

The command: which ``restore infer`` runs are corpus runs (:func:`is_corpus_run`), the output
directory's lock, and the run itself, in this process (a :class:`~restore.infer.Restorer`
over the shards) or on Ray Data with ``--ray`` (:mod:`restore.ray_job`). Both read, restore
and write shards with :mod:`restore.shards`, so their outputs are the same; it ends with one
summary line on stderr.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Iterator

from restore.errors import RestoreError
from restore.textio import plural
from restore.shards import CorpusPlan, ShardSink, SinkStats, is_shard_input, plan_corpus, progress_bar, read_shard, restore_table

LOCK_NAME = ".restore.lock"


def is_corpus_run(args) -> bool:
    """Whether ``restore infer`` restores shards (this module) rather than files/stdin (restore.infer_files):
    any shard input, ``--ray``, or ``-o`` an existing directory (``.jsonl`` files as shards)."""
    inputs = list(args.inputs) or ["-"]
    return (
        any(is_shard_input(name) for name in inputs)
        or getattr(args, "ray", None) is not None
        or (args.output not in (None, "-") and Path(args.output).is_dir())
    )


@contextlib.contextmanager
def locked_output_dir(out_dir: Path) -> Iterator[None]:
    """Hold ``OUTDIR/.restore.lock`` for the run: two runs never write the same shards at once.

    A directory this run created is removed again if the run fails before writing anything in it
    (e.g. ``--ray auto`` with no cluster): a failed run leaves nothing behind.
    """
    from restore.textio import exclusive_lock

    created = [d for d in (out_dir, *out_dir.parents) if not d.exists()]
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with exclusive_lock(out_dir / LOCK_NAME, lambda who: f"{out_dir}: another restore run is writing to this directory"):
            for stale in out_dir.glob(".*.parquet.*.tmp"):  # temporary shards of a run that was killed
                stale.unlink()
            yield
    except BaseException:
        for directory in created:  # innermost first; rmdir removes only what is still empty
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise


def ray_address(value: str) -> str | None:
    """``--ray``'s ADDRESS: none (a local Ray instance, or ``$RAY_ADDRESS``), ``auto``, ``HOST:PORT``,
    ``ray://HOST:PORT`` or ``local``; anything else is most likely an input swallowed by ``--ray``.

    >>> ray_address(""), ray_address("auto"), ray_address("10.0.0.1:6379")
    (None, 'auto', '10.0.0.1:6379')
    """
    if not value:
        return None
    if value in ("auto", "local") or ":" in value:
        return value
    raise RestoreError(
        f"--ray {value}: not a Ray address (auto, HOST:PORT or ray://HOST:PORT); "
        "put --ray after the inputs, or write --ray=ADDRESS"
    )


# --- the command ----------------------------------------------------------------------------------
def run_corpus_cli(args) -> None:
    """``restore infer`` on shards (see the module docstring); ``--ray`` runs it on Ray Data."""
    started = time.perf_counter()
    if args.output in (None, "-"):
        raise RestoreError("shard inputs need -o DIRECTORY (one output shard per input shard)")
    if getattr(args, "ray", None) is not None:
        ray_address(args.ray)  # before the inputs: an input swallowed by --ray is the likelier mistake
    source_field = args.source_field or "source"
    plan = plan_corpus(args.inputs, args.output, source_field)
    skipped = f" ({len(plan.complete)} already complete, skipped)" if plan.complete else ""
    if not plan.jobs:
        print(f"restore infer: all {len(plan.complete)} output shards in {plan.out_dir} are complete; nothing to do", file=sys.stderr)
        return
    with locked_output_dir(plan.out_dir):
        if getattr(args, "ray", None) is not None:
            try:
                from restore.ray_job import run_ray_job
            except ImportError as e:
                if not (e.name or "").startswith("ray"):
                    raise
                raise RestoreError("--ray needs Ray Data: pip install 'restore[ray]'") from None
            stats, engine = run_ray_job(plan, args, ray_address(args.ray))
        else:
            stats, engine = _run_local(plan, args)
    wall = time.perf_counter() - started
    print(
        f"restore infer: {engine}: {plural(stats.shards, 'shard')}{skipped}, {plural(stats.rows, 'row')}, {plural(stats.errors, 'bad row')}, "
        f"{stats.generated_tokens} generated tokens, {stats.generated_tokens / wall:.1f} tokens/s, "
        f"{stats.rows / wall:.1f} rows/s; wall {wall:.1f} s",
        file=sys.stderr,
    )


def _run_local(plan: CorpusPlan, args) -> tuple[SinkStats, str]:
    from restore.checkpoint import resolve_model
    from restore.device import prepare_model_run
    from restore.infer import Restorer
    from restore.settings import restorer_options

    model = resolve_model(args.model).path  # checked before torch is imported
    prepare_model_run()
    restorer = Restorer.from_pretrained(**restorer_options(args, model))
    bar, on_rows = progress_bar(plan)
    sink = ShardSink(plan, on_rows)
    try:
        for job in plan.jobs:
            sink.write_shard(job, (restore_table(restorer, t, plan.source_field) for t in read_shard(job, plan.source_field)))
    except BaseException:
        sink.abort()
        raise
    finally:
        bar.close()
    faithful = restorer.stats.faithful.summary() if restorer.faithful else "faithful: off"
    return sink.stats, f"{restorer.generator.describe()}, {faithful}"
