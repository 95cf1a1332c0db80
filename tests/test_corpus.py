"""restore.corpus: shard directories/globs in, parquet shards out, bad rows, skip-complete reruns,
interruption, bounded memory (single process; the Ray path is tested in test_ray_job.py).

The CLI runs with the echo backend of test_infer (each chunk comes back as its own source), so
every restored row is known exactly: its source's chunks joined as inference joins them.
"""

from __future__ import annotations

import gzip
import json
import lzma
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_infer import EchoGenerator, echo_backend, joined_like_inference, run_cli  # noqa: F401 (fixture)

from restore import corpus, shards
from restore.backends import BACKENDS
from restore.chunking import ChunkConfig
from restore.corrupt import corrupt

CONFIG = ChunkConfig(max_source_words=16)


@pytest.fixture(scope="module")
def sources(wiki_texts) -> list[str]:
    return [corrupt(text) for text in wiki_texts]


def write_jsonl(path: Path, records: list[dict]) -> None:
    lines = "".join(json.dumps(r) + "\n" for r in records).encode()
    opener = {".gz": gzip.open, ".xz": lzma.open}.get(path.suffix, open)
    with opener(path, "wb") as f:
        f.write(lines)


def make_corpus(directory: Path, sources: list[str]) -> dict[str, list[dict]]:
    """Four shards of every kind (one empty); returns the rows of each output shard's name."""
    directory.mkdir()
    rows = {
        "a": [{"id": k, "source": s, "tags": [k, k + 1]} for k, s in enumerate(sources[:9])],
        "b": [{"source": s, "id": k} for k, s in enumerate(sources[9:14])],
        "c": [{"id": k, "source": s, "note": None if k < 4 else f"n{k}"} for k, s in enumerate(sources[14:20])],
        "d": [],
    }
    pq.write_table(pa.Table.from_pylist(rows["a"]), directory / "a.parquet", row_group_size=4)
    write_jsonl(directory / "b.jsonl.xz", rows["b"])
    write_jsonl(directory / "c.jsonl.gz", rows["c"])  # "note" is null in the first batch, text later
    write_jsonl(directory / "d.jsonl", rows["d"])
    (directory / "notes.txt").write_text("not a shard\n")
    return rows


def expected(rows: list[dict]) -> list[dict]:
    return [{**r, "restored": joined_like_inference(r["source"], CONFIG), "error": None} for r in rows]


def read_rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


@pytest.fixture
def small_batches(monkeypatch):
    monkeypatch.setattr(shards, "BATCH_ROWS", 3)  # several tables per shard


def test_directory_of_shards_to_parquet_shards(tmp_path, capsys, tiny_model_dir, echo_backend, sources, small_batches):
    rows = make_corpus(tmp_path / "in", sources)
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, str(tmp_path / "in"), "-o", str(out), "--model", str(tiny_model_dir))
    assert (code, stdout) == (0, ""), err
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["a.parquet", "b.parquet", "c.parquet", "d.parquet"]
    for name, shard_rows in rows.items():
        assert read_rows(out / f"{name}.parquet") == expected(shard_rows), name
    assert pq.read_schema(out / "d.parquet").names == ["source", "restored", "error"]
    assert pq.read_schema(out / "c.parquet").field("note").type == pa.string()
    assert len(err.splitlines()) == 1 and "4 shards, 20 rows, 0 bad rows" in err and "tokens/s" in err
    assert not list(out.glob(".*.tmp"))


def test_glob_and_source_field(tmp_path, capsys, tiny_model_dir, echo_backend, sources):
    (tmp_path / "in").mkdir()
    records = [{"text": s, "k": k} for k, s in enumerate(sources[:3])]
    write_jsonl(tmp_path / "in" / "x-0.jsonl", records)
    write_jsonl(tmp_path / "in" / "x-1.jsonl", records[:1])
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, str(tmp_path / "in" / "x-*.jsonl"), "-o", str(out), "--source-field", "text", "--model", str(tiny_model_dir))
    assert code == 0, err
    assert read_rows(out / "x-0.parquet") == [
        {**r, "restored": joined_like_inference(r["text"], CONFIG), "error": None} for r in records
    ]
    assert len(read_rows(out / "x-1.parquet")) == 1


def test_a_jsonl_file_with_an_output_directory_is_a_shard(tmp_path, capsys, tiny_model_dir, echo_backend, sources):
    records = [{"source": s} for s in sources[:2]]
    write_jsonl(tmp_path / "one.jsonl", records)
    (tmp_path / "out").mkdir()
    assert run_cli(capsys, str(tmp_path / "one.jsonl"), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir))[0] == 0
    assert read_rows(tmp_path / "out" / "one.parquet") == expected(records)


def test_bad_rows_get_an_error_and_the_run_goes_on(tmp_path, capsys, tiny_model_dir, echo_backend, sources):
    (tmp_path / "in").mkdir()
    lines = [
        json.dumps({"id": 0, "source": sources[0]}),
        "{not json",
        "[1, 2]",
        json.dumps({"id": 3}),
        json.dumps({"id": 4, "source": 5}),
        json.dumps({"id": 5, "source": "a\u0000b"}),
        json.dumps({"id": 6, "source": "lone \ud800 surrog"}),
        json.dumps({"id": 7, "source": sources[1]}),
    ]
    (tmp_path / "in" / "bad.jsonl").write_bytes(("\n".join(lines) + "\n").encode() + b'{"id": 8, "source": "caf\xe9"}\n')
    code, _, err = run_cli(capsys, str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir))
    assert code == 0, err
    out = read_rows(tmp_path / "out" / "bad.parquet")
    assert [(r["id"], r["error"]) for r in out] == [
        (0, None),
        (None, "line 2: invalid JSON (Expecting property name enclosed in double quotes)"),
        (None, "line 3: expected a JSON object"),
        (3, "missing field 'source'"),
        (4, "field 'source' is not text (int)"),
        (5, "field 'source' is not valid text (NUL byte)"),
        (None, "line 7: not valid UTF-8 text"),
        (7, None),
        (None, "line 9: not valid UTF-8 text"),
    ]
    assert [r["restored"] for r in out] == [joined_like_inference(sources[0], CONFIG)] + [""] * 6 + [
        joined_like_inference(sources[1], CONFIG), ""
    ]
    assert "9 rows, 7 bad rows" in err


def test_rerun_skips_complete_shards(tmp_path, capsys, tiny_model_dir, echo_backend, sources):
    make_corpus(tmp_path / "in", sources)
    out = tmp_path / "out"
    argv = (str(tmp_path / "in"), "-o", str(out), "--model", str(tiny_model_dir))
    assert run_cli(capsys, *argv)[0] == 0
    first = {p.name: p.read_bytes() for p in out.glob("*.parquet")}
    code, _, err = run_cli(capsys, *argv)
    assert code == 0 and "all 4 output shards" in err and "nothing to do" in err
    assert len(echo_backend) == 1  # the model was not even loaded
    (out / "b.parquet").unlink()
    code, _, err = run_cli(capsys, *argv)
    assert code == 0 and "1 shard (3 already complete, skipped), 5 rows" in err
    assert {p.name: p.read_bytes() for p in out.glob("*.parquet")} == first


def test_interrupted_run_leaves_only_whole_shards_and_resumes(tmp_path, capsys, monkeypatch, tiny_model_dir, sources, small_batches):
    make_corpus(tmp_path / "in", sources)
    fail_after: list[int | None] = [None]
    generators = []

    def factory(path, device, dtype, **options):
        generators.append(EchoGenerator(fail_after_batches=fail_after[0]))
        return generators[-1]

    monkeypatch.setitem(BACKENDS, "torch", factory)
    out, whole = tmp_path / "out", tmp_path / "whole"
    argv = ("--model", str(tiny_model_dir), "--batch-tokens", "200")
    assert run_cli(capsys, str(tmp_path / "in"), "-o", str(whole), *argv)[0] == 0
    fail_after[0] = len(generators[0].batches) * 2 // 3  # in the second of three non-empty shards
    assert run_cli(capsys, str(tmp_path / "in"), "-o", str(out), *argv)[0] == 130  # interrupted
    done = sorted(p.name for p in out.glob("*.parquet"))
    assert 0 < len(done) < 4 and not list(out.glob(".*.tmp"))  # whole shards only, no temporary file left
    fail_after[0] = None
    code, _, err = run_cli(capsys, str(tmp_path / "in"), "-o", str(out), *argv)
    assert code == 0 and f"({len(done)} already complete, skipped)" in err
    for name in ("a", "b", "c", "d"):
        assert read_rows(out / f"{name}.parquet") == read_rows(whole / f"{name}.parquet")


def test_a_killed_run_leaves_a_temporary_file_that_the_rerun_removes(tmp_path, capsys, tiny_model_dir, echo_backend, sources):
    make_corpus(tmp_path / "in", sources)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".a.parquet.x1y2.tmp").write_bytes(b"PAR1 half a shard")
    assert run_cli(capsys, str(tmp_path / "in"), "-o", str(out), "--model", str(tiny_model_dir))[0] == 0
    assert not list(out.glob(".*.tmp")) and len(read_rows(out / "a.parquet")) == 9


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_output", "need -o DIRECTORY"),
        ("no_shards", "no shard files"),
        ("missing_column", "no column 'source' (columns: text); use --source-field"),
        ("not_text_column", "column 'source' is int64, expected text"),
        ("same_names", "would both be written to"),
        ("has_restored", "already has a column 'restored'"),
        ("mixed_types", "cannot share one column type"),
        ("other_input", "was not made from"),
        ("source_field_on_a_file", "--source-field and --ray-actors apply to shard inputs"),
    ],
)
def test_bad_corpus_is_one_clear_line(tmp_path, capsys, tiny_model_dir, echo_backend, case, message):
    shards = tmp_path / "in"
    shards.mkdir()
    argv = [str(shards), "-o", str(tmp_path / "out")]
    write_jsonl(shards / "ok.jsonl", [{"source": "born 1879 ."}])
    if case == "no_output":
        argv = [str(shards)]
    elif case == "no_shards":
        argv = [str(tmp_path / "nothing-*.parquet"), "-o", str(tmp_path / "out")]
    elif case == "missing_column":
        pq.write_table(pa.table({"text": ["a"]}), shards / "p.parquet")
    elif case == "not_text_column":
        pq.write_table(pa.table({"source": [1]}), shards / "p.parquet")
    elif case == "same_names":
        pq.write_table(pa.table({"source": ["a"]}), shards / "ok.parquet")
    elif case == "has_restored":
        write_jsonl(shards / "r.jsonl", [{"source": "a", "restored": "A"}])
    elif case == "mixed_types":
        write_jsonl(shards / "m.jsonl", [{"source": "a", "x": 1}, {"source": "b", "x": "text"}])
    elif case == "other_input":
        (tmp_path / "out").mkdir()
        pq.write_table(pa.table({"source": ["a"]}), tmp_path / "out" / "ok.parquet")
    elif case == "source_field_on_a_file":
        argv = [str(shards / "ok.jsonl"), "--source-field", "text"]
    code, _, err = run_cli(capsys, *argv, "--model", str(tiny_model_dir))
    assert code == 1 and message in err and len(err.splitlines()) == 1, err


def test_another_run_on_the_same_output_is_refused(tmp_path, capsys, tiny_model_dir, echo_backend):
    import fcntl

    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "ok.jsonl", [{"source": "born 1879 ."}])
    (tmp_path / "out").mkdir()
    with open(tmp_path / "out" / corpus.LOCK_NAME, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        code, _, err = run_cli(capsys, str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir))
    assert code == 1 and "another restore run is writing to this directory" in err


# --- bounded memory -------------------------------------------------------------------------------
CHILD = textwrap.dedent(
    """
    import sys
    from restore.backends import BACKENDS
    from restore.cli import main

    class Echo:
        batch_tokens = 16384

        def describe(self):
            return "echo"

        def generate(self, batch, max_new_tokens, num_beams=1, num_return_sequences=1, **_):
            return [ids[:-1][:max_new_tokens] for ids in batch for _ in range(num_return_sequences)]

    BACKENDS["torch"] = lambda *a, **k: Echo()
    sys.exit(main(["infer", "--no-faithful", "--backend", "torch", *sys.argv[1:]]))
    """
)


def peak_rss_mib(argv: list[str]) -> float:
    """Run ``restore infer argv`` (echo backend) in a child process; its peak resident memory."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, *argv], env=env, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    err = child.stderr.read().decode()
    child.returncode = os.waitstatus_to_exitcode(status)
    assert child.returncode == 0, err
    return usage.ru_maxrss / 1024


def write_big_shard(path: Path, rows: int) -> None:
    """``rows`` rows of a short source and a 2 KB payload each, in row groups of 5,000 rows."""
    payload = "x" * 2000
    with pq.ParquetWriter(path, pa.schema([("id", pa.int64()), ("source", pa.string()), ("payload", pa.string())])) as w:
        for start in range(0, rows, 5000):
            n = min(5000, rows - start)
            w.write_table(pa.table({"id": range(start, start + n), "source": ["born 1879 ."] * n, "payload": [payload] * n}))


def test_50000_rows_run_in_bounded_memory(tmp_path, tiny_model_dir):
    """10x the rows (about 100 MB of row data at 50,000) must not take more memory than a little."""
    rss = {}
    for rows in (5_000, 50_000):
        (tmp_path / str(rows)).mkdir()
        write_big_shard(tmp_path / str(rows) / "big.parquet", rows)
        out = tmp_path / f"out-{rows}"
        rss[rows] = peak_rss_mib([str(tmp_path / str(rows)), "-o", str(out), "--model", str(tiny_model_dir)])
        assert pq.ParquetFile(out / "big.parquet").metadata.num_rows == rows
    print(f"peak RSS: {rss[5_000]:.0f} MiB for 5,000 rows, {rss[50_000]:.0f} MiB for 50,000 rows")
    assert rss[50_000] < rss[5_000] + 40  # the whole input would add about 90 MiB
