"""restore infer as a process: one writer per output, killed runs resume, SIGTERM like Ctrl-C, no litter.

Killed runs are real processes (SIGKILL cannot be simulated); the reruns and the uninterrupted
reference run in this process. The model is the tiny test model made to end every output at
once (a large ``</s>`` bias), so a run is quick and deterministic and every chunk goes through
the faithfulness repair, as a real run's unfaithful chunks do.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from restore.cli import main
from restore.corrupt import corrupt
from restore.textio import lock_path, output_lock, partial_path, stale_temp_files


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """The in-process runs use one torch thread, like the killed runs (OMP_NUM_THREADS=1)."""


@pytest.fixture(scope="module")
def records(wiki_texts) -> list[dict]:
    """232 records, ~3,700 chunks of 16 tokens: a run takes seconds, several windows."""
    return [{"id": f"{r}-{k}", "source": corrupt(text)} for r in range(8) for k, text in enumerate(wiki_texts)]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def infer_argv(model: Path, *argv: str) -> list[str]:
    return ["infer", *argv, "--model", str(model), "--backend", "torch", "--device", "cpu"]


def start_infer(model: Path, *argv: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "restore", *infer_argv(model, *argv)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_for(condition, process: subprocess.Popen, timeout: float = 120.0) -> None:
    """Poll ``condition`` while ``process`` runs; fail if it ends first (it must be killed mid-run)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the run ended (exit {process.returncode}) before it could be killed: {process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("timed out waiting for the run")
        time.sleep(0.02)


def complete_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def leftovers(directory: Path, name: str) -> list[str]:
    """Our files beside an output other than the output itself: .part, lock and temporary files."""
    return sorted(p.name for p in directory.iterdir() if p.name != name and name in p.name)


# --- killed runs resume, nothing lost or duplicated ------------------------------------------------
def test_sigkill_mid_run_then_rerun_equals_an_uninterrupted_run(tmp_path, capsys, quick_model_dir, records):
    data = write_jsonl(tmp_path / "in.jsonl", records)
    out, whole = tmp_path / "out.jsonl", tmp_path / "whole.jsonl"
    process = start_infer(quick_model_dir, str(data), "-o", str(out), "--no-faithful")
    wait_for(lambda: complete_lines(partial_path(out)) > 0, process)  # the first window's records
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = complete_lines(partial_path(out))
    assert 0 < saved < len(records) and not out.exists()
    assert main(infer_argv(quick_model_dir, str(data), "-o", str(out), "--no-faithful")) == 0
    assert main(infer_argv(quick_model_dir, str(data), "-o", str(whole), "--no-faithful")) == 0
    resumed = capsys.readouterr().err.splitlines()[0]
    assert f"{len(records) - saved} documents" in resumed  # the saved records were not restored again
    assert out.read_bytes() == whole.read_bytes()
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [r["id"] for r in records]
    assert leftovers(tmp_path, "out.jsonl") == []


def test_first_records_are_written_after_a_few_hundred_chunks(tmp_path, quick_model_dir, records, monkeypatch):
    """The .part file grows window by window (the first window is MIN_WINDOW_CHUNKS chunks)."""
    from restore import infer, textio

    data = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    seen: list[tuple[int, int]] = []  # (chunks restored so far, records in the .part file) at each window
    restore_window = infer.Restorer._restore_window

    def watched(self, plans):
        seen.append((self.stats.chunks, complete_lines(textio.partial_path(out))))
        return restore_window(self, plans)

    monkeypatch.setattr(infer.Restorer, "_restore_window", watched)
    assert main(infer_argv(quick_model_dir, str(data), "-o", str(out), "--no-faithful")) == 0
    assert len(seen) >= 2 and seen[0] == (0, 0)
    chunks_at_second, written_at_second = seen[1]
    assert infer.MIN_WINDOW_CHUNKS <= chunks_at_second < infer.MIN_WINDOW_CHUNKS + 200 and written_at_second > 0
    assert [n for _, n in seen] == sorted(n for _, n in seen)


# --- one writer per output -------------------------------------------------------------------------
HOLD_LOCK = """
import sys
from restore.textio import output_lock
with output_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_second_run_on_the_same_output_stops_and_names_the_first(tmp_path, capsys, quick_model_dir, records):
    data = write_jsonl(tmp_path / "in.jsonl", records[:20])
    out = tmp_path / "out.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline() == "locked\n"
        assert main(infer_argv(quick_model_dir, str(data), "-o", str(out))) == 1
        err = capsys.readouterr().err
        assert err == (
            f"restore infer: error: {out}: another restore run (pid {holder.pid}) is writing this output; "
            "wait for it or choose another -o\n"
        )
        assert not out.exists() and not partial_path(out).exists()
    finally:
        holder.stdin.close()
        holder.wait()
    assert main(infer_argv(quick_model_dir, str(data), "-o", str(out))) == 0
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [r["id"] for r in records[:20]]
    assert leftovers(tmp_path, "out.jsonl") == []


def test_a_killed_holder_does_not_block_the_next_run(tmp_path):
    out = tmp_path / "out.txt"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout.readline() == "locked\n"
    holder.kill()
    holder.wait()
    assert lock_path(out).read_text() == f"{holder.pid}\n"  # left behind by the killed holder
    with output_lock(out):
        assert lock_path(out).read_text() == f"{os.getpid()}\n"
    assert not lock_path(out).exists()


def test_output_lock_is_exclusive_within_a_process_too(tmp_path):
    from restore.errors import RestoreError

    with output_lock(tmp_path / "out.txt"):
        with pytest.raises(RestoreError, match=f"pid {os.getpid()}"):
            with output_lock(tmp_path / "out.txt"):
                pass
    with output_lock(tmp_path / "out.txt"):  # released at the end of the block
        pass


# --- SIGTERM like Ctrl-C; temporary files of killed runs are removed -------------------------------
@pytest.mark.parametrize("kind", ["txt", "jsonl"])
def test_sigterm_is_one_line_exit_143_and_cleans_up(tmp_path, capsys, quick_model_dir, records, monkeypatch, kind):
    from restore import infer

    if kind == "txt":  # one document per file
        inputs = [tmp_path / f"in{k}.txt" for k in range(40)]
        for path, record in zip(inputs, records):
            path.write_text(record["source"] + "\n", encoding="utf-8")
    else:
        inputs = [write_jsonl(tmp_path / "in.jsonl", records[:40])]
    out = tmp_path / f"out.{kind}"
    handler = signal.getsignal(signal.SIGTERM)
    restore_window = infer.Restorer._restore_window
    windows = []

    def terminated_in_second_window(self, plans):
        windows.append(len(plans))
        if len(windows) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # a real signal, delivered in the middle of the run
        return restore_window(self, plans)

    monkeypatch.setattr(infer.Restorer, "_restore_window", terminated_in_second_window)
    assert main(infer_argv(quick_model_dir, *map(str, inputs), "-o", str(out), "--no-faithful")) == 143
    assert capsys.readouterr().err == "restore infer: terminated\n"
    assert signal.getsignal(signal.SIGTERM) is handler  # ours is only installed for the run
    assert len(windows) == 2
    assert not out.exists()
    if kind == "txt":
        assert leftovers(tmp_path, out.name) == []  # the temporary file is gone
    else:
        assert leftovers(tmp_path, out.name) == [partial_path(out).name]  # kept to resume
        assert complete_lines(partial_path(out)) == windows[0]


def test_temporary_file_of_a_killed_text_run_is_removed_by_the_next_run(tmp_path, capsys, quick_model_dir, records):
    data = tmp_path / "in.txt"
    data.write_text("\n".join(r["source"] for r in records) + "\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    process = start_infer(quick_model_dir, str(data), "-o", str(out))
    wait_for(lambda: stale_temp_files(out), process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(stale_temp_files(out)) == 1 and lock_path(out).exists() and not out.exists()
    assert main(infer_argv(quick_model_dir, str(data), "-o", str(out), "--no-faithful")) == 0
    assert leftovers(tmp_path, "out.txt") == [] and out.is_file()


# --- a corrupt model file is one line naming it ------------------------------------------------------
@pytest.mark.parametrize("command", ["infer", "eval"])
@pytest.mark.parametrize(
    "name", ["model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json", "lexicon.json.gz"]
)
def test_truncated_model_file_is_one_line_naming_it(tmp_path, capsys, tiny_model_dir, command, name):
    model = tmp_path / "model"
    model.mkdir()
    for path in tiny_model_dir.iterdir():
        if path.is_file():
            shutil.copy(path, model / path.name)
    data = (model / name).read_bytes()
    (model / name).write_bytes(data[: len(data) // 2])  # a copy cut short
    (tmp_path / "in.txt").write_text("leon trotski born 1879 .\n")
    if command == "infer":
        argv = infer_argv(model, str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.txt"))
    else:
        argv = ["eval", "--data", str(tmp_path / "in.txt"), "--model", str(model), "--backend", "torch", "--device", "cpu"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(f"restore {command}: error: {model / name}: corrupt or truncated"), err


def test_a_config_json_transformers_cannot_use_is_blamed_on_config_json(tmp_path, capsys, tiny_model_dir):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model, ignore=shutil.ignore_patterns("ctranslate2-*"))
    (model / "config.json").write_text("{}")  # valid JSON, but no model type (the tokenizer reads it too)
    (tmp_path / "in.txt").write_text("leon trotski born 1879 .\n")
    assert main(infer_argv(model, str(tmp_path / "in.txt"))) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(f"restore infer: error: {model / 'config.json'}: cannot read the model config")


# --- the summary line ------------------------------------------------------------------------------------
def test_summary_counts_chunks_once_and_re_decodes_apart(tmp_path, capsys, quick_model_dir, records):
    from restore.chunking import chunk_text
    from restore.checkpoint import read_model_info

    source = records[0]["source"]
    chunks = len(chunk_text(source, read_model_info(quick_model_dir).chunking))
    (tmp_path / "in.txt").write_text(source + "\n")
    assert main(infer_argv(quick_model_dir, str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.txt"), "--quality", "fast")) == 0
    err = capsys.readouterr().err
    # Every (empty) greedy output fails the check, so every chunk is re-decoded once with beams, and so
    # are the chunks around a junction that fails once the repaired chunks are read as one line.
    found = re.match(r"restore infer: 1 document, (\d+) chunks, (\d+) re-decoded with beams; ", err)
    junctions = re.search(r", (\d+) failed junctions?", err)
    assert found and int(found[1]) == chunks, err
    assert chunks <= int(found[2]) <= chunks + (int(junctions[1]) if junctions else 0), err
    assert "; engine: torch float32, cpu (1 thread)" in err and f"faithful: {chunks} chunks, 100.0% failed first decode" in err


def test_summary_names_the_engine_the_backend_describes(tiny_model_dir):
    from transformers import AutoTokenizer

    from restore.chunking import ChunkConfig
    from restore.infer import Restorer
    from restore.infer_files import summary_line

    class Described:
        batch_tokens = 16384

        def describe(self):
            return "ctranslate2 int8, cpu, 2 workers x 1 thread"

    restorer = Restorer(AutoTokenizer.from_pretrained(tiny_model_dir), Described(), ChunkConfig(), faithful=False)
    line = summary_line(restorer, 1.0, 2.0)
    assert line == (
        "restore infer: 0 documents, 0 chunks, 0 re-decoded with beams; engine: ctranslate2 int8, cpu, 2 workers x 1 thread; "
        "0 generated tokens, 0.0 tokens/s; faithful: off; wall 2.0 s"
    )


# --- outputs that are not regular files (issue 27.1) -------------------------------------------------
def _read_fifo_in_background(fifo: Path):
    """Read everything written to ``fifo`` in a thread; returns a function that waits and gives it."""
    import threading

    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()

    def result() -> bytes:
        reader.join(timeout=60)
        if reader.is_alive():  # nothing ever opened the FIFO for writing: let the reader go
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            reader.join(timeout=10)
        return got[0] if got else b""

    return result


@pytest.mark.parametrize("kind", ["txt", "jsonl"])
def test_a_fifo_output_is_written_through_and_stays_a_fifo(tmp_path, capsys, quick_model_dir, records, kind):
    import stat

    data = tmp_path / f"in.{kind}"
    if kind == "txt":
        data.write_text("\n".join(r["source"] for r in records[:4]) + "\n", encoding="utf-8")
    else:
        write_jsonl(data, records[:4])
    regular = tmp_path / f"regular.{kind}"
    assert main(infer_argv(quick_model_dir, str(data), "-o", str(regular), "--no-faithful")) == 0
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    fifo = out_dir / "pipe"
    os.mkfifo(fifo)
    result = _read_fifo_in_background(fifo)
    assert main(infer_argv(quick_model_dir, str(data), "-o", str(fifo), "--no-faithful")) == 0, capsys.readouterr().err
    assert result() == regular.read_bytes()
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # not replaced by a regular file
    assert sorted(p.name for p in out_dir.iterdir()) == ["pipe"]  # no temporary, lock or .part file beside it


def test_a_symlink_output_replaces_the_file_it_names_and_stays_a_link(tmp_path, capsys, quick_model_dir, records):
    data = tmp_path / "in.txt"
    data.write_text("\n".join(r["source"] for r in records[:4]) + "\n", encoding="utf-8")
    regular = tmp_path / "regular.txt"
    assert main(infer_argv(quick_model_dir, str(data), "-o", str(regular), "--no-faithful")) == 0
    (tmp_path / "real").mkdir()
    (tmp_path / "links").mkdir()
    target = tmp_path / "real" / "restored.txt"
    target.write_text("old contents\n")
    link = tmp_path / "links" / "restored.txt"
    link.symlink_to(target)
    assert main(infer_argv(quick_model_dir, str(data), "-o", str(link), "--no-faithful")) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == regular.read_bytes()
    assert [p.name for p in (tmp_path / "links").iterdir()] == ["restored.txt"]
    assert [p.name for p in (tmp_path / "real").iterdir()] == ["restored.txt"]  # the lock and temporary file are gone


# --- bad input before anything loads (issue 27.5) ----------------------------------------------------
LOADED = (
    "import sys\nfrom restore.cli import main\ncode = main(sys.argv[1:])\n"
    "print(sorted(m for m in ('torch', 'transformers', 'ctranslate2') if m in sys.modules))\nsys.exit(code)\n"
)


@pytest.mark.parametrize(
    "command, where, data, message",
    [
        ("infer", "file", b"\x89PNG\r\n\x1a\n\x00\x00", "looks like a binary file"),
        ("infer", "stdin", "caf\xe9 .".encode("latin-1"), "<stdin>: not valid UTF-8"),
        ("infer", "second file", "caf\xe9 .".encode("latin-1"), "not valid UTF-8"),
        ("eval", "file", b"\x89PNG\r\n\x1a\n\x00\x00", "looks like a binary file"),
    ],
)
def test_binary_or_non_utf8_input_is_reported_before_the_model_loads(tmp_path, tiny_model_dir, command, where, data, message):
    bad = tmp_path / ("pairs.jsonl" if command == "eval" else "in.txt")
    good = tmp_path / "good.txt"
    good.write_text("born 1879 .\n")
    stdin = None
    if where == "stdin":
        argv, stdin = ["-"], data
    else:
        bad.write_bytes(data)
        argv = [str(good), str(bad)] if where == "second file" else [str(bad)]
    if command == "eval":
        argv = ["--data", *argv]
    done = subprocess.run(
        [sys.executable, "-c", LOADED, command, *argv, "--model", str(tiny_model_dir)],
        input=stdin or b"", capture_output=True, timeout=120,
    )  # fmt: skip
    err = done.stderr.decode()
    assert done.returncode == 1 and err.startswith(f"restore {command}: error: ") and message in err, err
    assert done.stdout.decode().strip() == "[]"  # nothing heavy was imported, no model loaded


# --- unfaithful lines are marked (issue 27.7) --------------------------------------------------------
def test_jsonl_records_say_whether_they_are_faithful(tmp_path, capsys, quick_model_dir):
    # No text corrupts back to an empty quote followed by a comma (the tokenizer reads '"",' as `` ``),
    # so the first record cannot be made exact; the second can.
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "source": "`` '' , yoda feel ."}, {"id": 2, "source": "born 1879 kherson ."}])
    out = tmp_path / "out.jsonl"
    assert main(infer_argv(quick_model_dir, str(data), "-o", str(out))) == 0
    err = capsys.readouterr().err
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["id"], r["faithful"]) for r in records] == [(1, False), (2, True)]
    assert corrupt(records[1]["restored"]) == "born 1879 kherson ."
    assert corrupt(records[0]["restored"]).split() != "`` '' , yoda feel .".split()
    assert "; 1 unfaithful line; wall" in err, err
    assert main(infer_argv(quick_model_dir, str(data))) == 0  # to stdout: the same records
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == records
    assert main(infer_argv(quick_model_dir, str(data), "--no-faithful")) == 0  # not checked: not claimed
    assert all("faithful" not in json.loads(line) for line in capsys.readouterr().out.splitlines())
