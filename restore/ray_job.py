"""Restoring a corpus on Ray Data: ``restore infer SHARDS... -o OUTDIR --ray [ADDRESS]``.

The only module that imports Ray (``pip install 'restore[ray]'``). The shards are read with
``ray.data`` (:class:`ShardDatasource`: the same reader as the single-process path,
:func:`restore.shards.read_shard`), restored by ``map_batches`` with a pool of
:class:`RestoreActor` (each holds one :class:`~restore.infer.Restorer`: one GPU per actor on a
GPU cluster; on CPUs one actor per :data:`CPUS_PER_ACTOR` cores, or ``--ray-actors N``), and
come back to the driver in order, where :class:`restore.shards.ShardSink` writes them shard by
shard exactly like the single-process path (temporary name, renamed when complete; a rerun
skips complete shards). Input shards and the model must be at the same path on every node (a
shared filesystem); the output directory is the driver's.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pyarrow as pa
import ray
from ray.data.datasource import FileBasedDatasource

from restore.errors import RestoreError
from restore.shards import (
    BATCH_ROWS,
    CorpusPlan,
    ShardSink,
    SinkStats,
    open_shard,
    progress_bar,
    read_shard,
    restore_table,
)

# CPU cores per actor by default on a cluster without GPUs (one Restorer uses them all).
CPUS_PER_ACTOR = 4


class ShardDatasource(FileBasedDatasource):
    """The planned shards as a Ray dataset: blocks of at most ``batch_rows`` rows, per shard in order."""

    def __init__(self, plan: CorpusPlan, batch_rows: int | None = None):
        super().__init__([str(job.input.resolve()) for job in plan.jobs])
        self._jobs = {job.input.name: job for job in plan.jobs}  # shard names are unique in a plan
        self._source_field = plan.source_field
        self._batch_rows = batch_rows or BATCH_ROWS  # fixed here: workers do not see the driver's settings

    def _open_input_source(self, filesystem, path: str, **open_args):
        # A plain seekable file (parquet; two passes over .jsonl; our own .gz/.xz decoding):
        # shards are on a filesystem every node mounts.
        return open_shard(path)

    def _read_stream(self, f, path: str):
        yield from read_shard(self._jobs[os.path.basename(path)], self._source_field, self._batch_rows, file=f)


class RestoreActor:
    """One :class:`~restore.infer.Restorer` per actor; restores the tables Ray Data hands it."""

    def __init__(self, options: dict, source_field: str, cpus: int | None = None):
        from restore.device import prepare_model_run
        from restore.infer import Restorer

        options = dict(options)
        if cpus:  # this actor's share of the node's cores (torch threads, CTranslate2 workers)
            os.environ["OMP_NUM_THREADS"] = str(cpus)
        prepare_model_run()
        if cpus:
            import torch

            from restore.backend_choice import choose_backend

            torch.set_num_threads(cpus)
            if isinstance(options.get("backend"), str):
                choice = choose_backend(
                    options["backend"], "cpu", torch_only=bool(options.get("static_cache")),
                    compute_type=options.get("compute_type") or "auto",
                )  # fmt: skip
                if choice.name == "ctranslate2":
                    options["workers"] = cpus
        self.restorer = Restorer.from_pretrained(**options)
        self.source_field = source_field

    def __call__(self, table: pa.Table) -> pa.Table:
        return restore_table(self.restorer, table, self.source_field)


def actor_resources(resources: dict, device: str, actors: int | None) -> tuple[int, dict, int | None, str]:
    """``(actors, ray resources per actor, cores per CPU actor, device)`` for a cluster's resources.

    >>> actor_resources({"CPU": 16.0, "GPU": 4.0}, "auto", None)
    (4, {'num_gpus': 1, 'num_cpus': 1}, None, 'cuda')
    >>> actor_resources({"CPU": 16.0}, "auto", None), actor_resources({"CPU": 2.0}, "cpu", 2)
    ((4, {'num_cpus': 4}, 4, 'cpu'), (2, {'num_cpus': 1}, 1, 'cpu'))
    """
    gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
    if actors is not None and actors < 1:
        raise RestoreError(f"--ray-actors must be a positive integer, got {actors}")
    if device == "cuda" and not gpus:
        raise RestoreError("--device cuda: the Ray cluster has no GPUs (use --device auto or cpu)")
    if gpus and device in ("auto", "cuda"):
        return actors or gpus, {"num_gpus": 1, "num_cpus": 1}, None, "cuda"
    actors = actors or max(1, cpus // CPUS_PER_ACTOR)
    cores = max(1, cpus // actors)
    return actors, {"num_cpus": cores}, cores, "cpu"


def run_ray_job(plan: CorpusPlan, args, address: str | None) -> tuple[SinkStats, str]:
    """Restore ``plan``'s shards on Ray (see the module docstring) at ``address`` (None: a local Ray
    instance, or ``$RAY_ADDRESS``; see :func:`restore.corpus.ray_address`); returns the counts and the engine."""
    from restore.checkpoint import read_model_info
    from restore.settings import restorer_options

    options = restorer_options(args)
    options["path"] = str(Path(options["path"]).resolve())  # workers run in other directories
    read_model_info(options["path"])  # a missing or incomplete model: one clear line before Ray starts
    started_here = not ray.is_initialized()
    if started_here:
        _connect(address)
    try:
        return _run(plan, args, options)
    except Exception as error:  # noqa: BLE001 - a RestoreError raised on a worker is the user's one line
        cause = _restore_error_in(error)
        if cause is None:
            raise
        raise RestoreError(str(cause).splitlines()[0]) from None  # Ray appends its retry notes
    finally:
        if started_here:
            ray.shutdown()


def _connect(address: str | None) -> None:
    """Start a local Ray instance (``None``) or join the cluster at ``address``; no cluster there is one line."""
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, configure_logging=True)
    except ConnectionError as e:  # e.g. --ray auto with no cluster running
        shown = address or os.environ.get("RAY_ADDRESS", "")
        why = "" if shown == "auto" else f" ({str(e).splitlines()[0]})"  # Ray's own text for auto names its flags
        raise RestoreError(
            f"--ray {shown}: no running Ray cluster found{why}; start one first (ray start --head), "
            "or omit the address (--ray alone starts a local Ray instance)"
        ) from None


def _run(plan: CorpusPlan, args, options: dict) -> tuple[SinkStats, str]:
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # shards come back whole and in order: written one by one
    context.enable_progress_bars = False  # our own bar: rows and tokens/s
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled": ours show
    # A RestoreError on a worker (e.g. a shard that cannot be read) ends as the CLI's one line,
    # not also as the traceback Ray Data logs before it stops.
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) is sys.stderr:
            handler.addFilter(_not_a_restore_error)
    actors, resources, cores, device = actor_resources(ray.cluster_resources(), args.device, getattr(args, "ray_actors", None))
    options["device"] = device
    if device == "cuda":  # each GPU actor's faithfulness check workers: its share of the cluster's cores, not a whole node's
        from restore.faithful_window import check_workers

        options["check_workers"] = check_workers(max(1, int(ray.cluster_resources().get("CPU", 1))) // actors, 1)
    # Reading takes no CPU slot: the actors hold them all, and a read task waiting for a free
    # core would wait forever.
    dataset = ray.data.read_datasource(ShardDatasource(plan), **_no_cpu_slot(ray.data.read_datasource))
    dataset = dataset.map_batches(
        RestoreActor,
        fn_constructor_kwargs={"options": options, "source_field": plan.source_field, "cpus": cores},
        batch_size=None,  # one table per call, as read: the same batches as the single-process path
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        **resources,
    )
    bar, on_rows = progress_bar(plan)
    sink = ShardSink(plan, on_rows)
    try:
        for table in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            sink.write(table)
        for job in plan.jobs:  # Ray returns no rows for an empty shard: its output is written here
            if job.index not in sink.seen:
                sink.write_shard(job, (restore_table(None, t, plan.source_field) for t in read_shard(job, plan.source_field)))
        sink.close()
    except BaseException:
        sink.abort()
        raise
    finally:
        bar.close()
    per_actor = "1 GPU" if device == "cuda" else f"{cores} CPU{'s' if cores != 1 else ''}"
    return sink.stats, f"ray, {actors} actor{'s' if actors != 1 else ''} x {per_actor}"


def _no_cpu_slot(read) -> dict:
    """``num_cpus=0`` for a read (a named argument since Ray 2.4x, ``ray_remote_args`` before)."""
    import inspect

    return {"num_cpus": 0} if "num_cpus" in inspect.signature(read).parameters else {"ray_remote_args": {"num_cpus": 0}}


def _not_a_restore_error(record: logging.LogRecord) -> bool:
    # ray.data.exceptions logs every failure it re-raises: the CLI prints it (one line, or a traceback).
    return record.name != "ray.data.exceptions" and not (record.exc_info and _restore_error_in(record.exc_info[1]))


def _restore_error_in(error: BaseException) -> RestoreError | None:
    """The RestoreError a Ray worker raised, found in the chain of errors Ray wraps it in."""
    seen: set[int] = set()
    stack = [error]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        cause = getattr(e, "cause", None)
        if isinstance(cause, RestoreError):
            return cause
        if isinstance(e, RestoreError) and not isinstance(e, ray.exceptions.RayError):
            return e
        stack.extend([e.__cause__, e.__context__, cause if isinstance(cause, BaseException) else None])
    return None
