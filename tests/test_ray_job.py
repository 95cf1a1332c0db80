"""restore.ray_job: ``restore infer SHARDS -o OUTDIR --ray`` on a local Ray instance (2 CPUs).

Ray starts once for the module. The actors load a real tiny model (test_infer's
``varied_model_dir``: outputs depend on the input), so the Ray output can be compared row for row
with the single-process run and with restoring each record alone.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")

from test_corpus import write_jsonl  # noqa: E402
from test_infer import varied_model_dir  # noqa: E402,F401 (fixture)

from restore.cli import main  # noqa: E402
from restore.infer import Restorer  # noqa: E402

# faithful repair: slow on a random model; greedy, as the Restorer alone below decodes
MODEL_ARGS = ("--backend", "torch", "--device", "cpu", "--no-faithful", "--quality", "fast")


@pytest.fixture(scope="module")
def ray_address():
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def sentences(corrupt_vectors) -> list[str]:
    return [v["corrupted"] for v in corrupt_vectors if 4 <= len(v["corrupted"].split()) <= 14]


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(["infer", *argv])
    return code, capsys.readouterr().err


def make_corpus(directory: Path, sentences: list[str], shards: int, rows: int) -> None:
    """``shards`` shards of ``rows`` rows, alternating parquet, .jsonl.xz and .jsonl (with bad rows)."""
    directory.mkdir()
    for s in range(shards):
        records = [{"id": s * 1000 + k, "source": sentences[(s * rows + k) % len(sentences)]} for k in range(rows)]
        if s % 3 == 0:
            pq.write_table(pa.Table.from_pylist(records), directory / f"shard-{s:02d}.parquet", row_group_size=3)
        elif s % 3 == 1:
            write_jsonl(directory / f"shard-{s:02d}.jsonl.xz", records)
        else:
            records[1] = {"id": records[1]["id"], "source": None}
            write_jsonl(directory / f"shard-{s:02d}.jsonl", records + [{"id": -1}])


def read_outputs(directory: Path) -> dict[str, list[dict]]:
    return {p.name: pq.read_table(p).to_pylist() for p in sorted(directory.glob("*.parquet"))}


def test_ray_output_equals_single_process_and_each_record_alone(tmp_path, capsys, ray_address, varied_model_dir, sentences):
    make_corpus(tmp_path / "in", sentences, shards=3, rows=5)
    model = ("--model", str(varied_model_dir), *MODEL_ARGS)
    code, err = run(capsys, str(tmp_path / "in"), "-o", str(tmp_path / "single"), *model)
    assert code == 0, err
    code, err = run(capsys, str(tmp_path / "in"), "-o", str(tmp_path / "ray"), *model, "--ray", "--ray-actors", "2")
    assert code == 0, err
    single, on_ray = read_outputs(tmp_path / "single"), read_outputs(tmp_path / "ray")
    assert list(on_ray) == ["shard-00.parquet", "shard-01.parquet", "shard-02.parquet"]
    assert on_ray == single
    for name in on_ray:
        assert pq.read_schema(tmp_path / "ray" / name).metadata == pq.read_schema(tmp_path / "single" / name).metadata
    assert len(err.splitlines()) == 1, err
    assert "ray, 2 actors x 1 CPU: 3 shards, 16 rows, 2 bad rows" in err and "tokens/s" in err
    alone = Restorer.from_pretrained(varied_model_dir, backend="torch", device="cpu", faithful=False)
    rows = [row for shard in on_ray.values() for row in shard]
    assert [r["error"] for r in rows].count(None) == 14
    outputs = {r["restored"] for r in rows if r["error"] is None}
    assert len(outputs) > 8  # most rows restore differently: a mix-up of rows would show
    for row in rows:
        assert row["restored"] == (alone.restore(row["source"]) if row["error"] is None else ""), row["id"]


def test_killed_ray_job_reruns_to_the_same_output(tmp_path, capsys, ray_address, varied_model_dir, sentences):
    make_corpus(tmp_path / "in", sentences, shards=8, rows=4)
    model = ("--model", str(varied_model_dir), *MODEL_ARGS)
    out = tmp_path / "out"
    job = subprocess.Popen(
        [sys.executable, "-m", "restore", "infer", str(tmp_path / "in"), "-o", str(out), *model,
         f"--ray={ray_address}", "--ray-actors", "1"],
        start_new_session=True, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not list(out.glob("*.parquet")) and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(job.pid, signal.SIGKILL)  # the driver dies midway: no cleanup of its own
    job.wait()
    assert job.returncode == -signal.SIGKILL, job.stderr.read().decode()
    done = len(list(out.glob("*.parquet")))
    assert 0 < done < 8
    code, err = run(capsys, str(tmp_path / "in"), "-o", str(out), *model, "--ray", "--ray-actors", "1")
    assert code == 0, err
    assert f"({done} already complete, skipped)" in err
    code, err = run(capsys, str(tmp_path / "in"), "-o", str(tmp_path / "whole"), *model)
    assert code == 0, err
    outputs = read_outputs(out)
    assert outputs == read_outputs(tmp_path / "whole") and len(outputs) == 8
    ids = [row["id"] for rows in outputs.values() for row in rows]
    assert len(ids) == 8 * 4 + 2 and len(set(ids) - {-1}) == 8 * 4  # no duplicate, no lost row
    assert not list(out.glob(".*.tmp"))


def test_a_worker_error_is_one_clear_line(tmp_path, capsys, ray_address, varied_model_dir):
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "m.jsonl", [{"source": "a", "x": 1}, {"source": "b", "x": "text"}])
    code, err = run(capsys, str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(varied_model_dir), *MODEL_ARGS, "--ray")
    # One line of ours (Ray's own raylet/worker logs may come before it on a busy machine), no traceback.
    assert code == 1 and err.strip().splitlines()[-1].startswith("restore infer: error: "), err
    assert "cannot share one column type" in err and "Traceback" not in err and err.count("restore infer") == 1, err
    assert not list((tmp_path / "out").glob("*.parquet"))


def test_ray_address_that_looks_like_an_input(tmp_path, capsys, varied_model_dir):
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"source": "a"}])
    code, err = run(capsys, "--ray", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(varied_model_dir))
    assert code == 1 and "not a Ray address" in err, err


NO_CLUSTER = """
import sys
import ray._private.services, ray._private.utils
# No Ray cluster anywhere, whatever else runs on this machine: nothing found by process or address file.
def no_gcs():
    return []
no_gcs.cache_clear = lambda: None  # Ray clears its cache of this function
ray._private.services.find_gcs_addresses = no_gcs
ray._private.utils.read_ray_address = lambda temp_dir=None: None
from restore.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_ray_auto_without_a_cluster_is_one_line_and_leaves_nothing(tmp_path, varied_model_dir):
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"source": "a"}])
    out = tmp_path / "new" / "out"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "-c", NO_CLUSTER, "infer", str(tmp_path / "in"), "-o", str(out), "--model", str(varied_model_dir), "--ray", "auto"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [
        "restore infer: error: --ray auto: no running Ray cluster found; start one first (ray start --head), "
        "or omit the address (--ray alone starts a local Ray instance)"
    ]
    assert not (tmp_path / "new").exists()  # no empty output directory left behind
