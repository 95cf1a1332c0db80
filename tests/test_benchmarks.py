"""The benchmark scripts say what they measured (issue 27.8): machine, model, threads as they ran,
total run time, and no rate that the measurement cannot support."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from restore.device import THREAD_ENV_VARS

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str):
    sys.path.insert(0, str(SCRIPTS))
    try:
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(SCRIPTS))


@pytest.mark.parametrize(
    "small, large, expected",
    [
        ((6.0, 100, 2000), (14.0, 300, 6000), (25.0, 500.0)),  # 4 s of work per 100 rows, 2 s of start-up
        ((47.3, 100, 2000), (40.1, 300, 6000), (None, None)),  # the large run was faster: start-up noise
        ((20.0, 100, 2000), (20.5, 300, 6000), (None, None)),  # start-up far longer than the extra work
    ],
)
def test_corpus_marginal_rates_are_never_negative_or_inflated(small, large, expected):
    rows, tokens, _ = load_script("bench_corpus").marginal_rates(small, large)
    assert (rows, tokens) == expected


def test_machine_line_names_the_cpu_its_load_and_the_libraries():
    from restore.cpu import machine_line

    line = machine_line()
    assert line.startswith("machine: ") and " cores, " in line and "load average" in line and "torch " in line


def test_bench_infer_runs_torch_on_infers_threads_and_says_so(tmp_path, tiny_model_dir, wiki_texts):
    data = tmp_path / "articles.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in wiki_texts[:4]), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV_VARS}  # restore's default threads
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_infer.py"), "--random-config", "d_model=32,encoder_layers=1,decoder_layers=1,attention_heads=2,ffn_dim=64",
         "--tokenizer", str(tiny_model_dir), "--data", str(data), "--device", "cpu", "--chunks", "4", "--warmup-chunks", "1",
         "--fixed-new-tokens", "4", "--only", "batched", "--no-cpu-engines"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("machine: ") and "\nmodel: random " in out and "tokenizer)" in out
    batched = next(line for line in out.splitlines() if line.startswith("batched[bt="))
    assert batched.endswith("torch float32, cpu (1 thread)")  # the threads restore infer --backend torch runs on
    assert out.rstrip().splitlines()[-1].startswith("bench_infer: total run time ")


def test_bench_infer_measures_several_random_models_side_by_side(tmp_path, tiny_model_dir, wiki_texts):
    data = tmp_path / "articles.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in wiki_texts[:4]), encoding="utf-8")
    small = "d_model=32,encoder_layers=1,decoder_layers=1,attention_heads=2,ffn_dim=64"
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_infer.py"), "--random-config", small, small.replace("d_model=32", "d_model=64"),
         "--tokenizer", str(tiny_model_dir), "--data", str(data), "--device", "cpu", "--chunks", "4", "--warmup-chunks", "1",
         "--fixed-new-tokens", "4", "--only", "batched", "--no-cpu-engines", "--rounds", "2", "--json", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.count("\nmodel: random ") == 2 and "d_model=64" in out
    side = out[out.index("side by side (tokens/s; x the first model):") :].splitlines()
    row = next(line for line in side if line.strip().startswith("batched[bt="))
    assert "model 1 " in row and "(x1.00)" in row and "model 2 " in row
    assert done.stderr.count("(round 2)") == 2  # both models, every round
    payload = json.loads((tmp_path / "r.json").read_text())
    assert [len(m["results"]) for m in payload["models"]] == [1, 1]


def test_bench_faithful_splits_a_faithful_run_into_stages(tmp_path, tiny_model_dir):
    out = tmp_path / "bench"
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_faithful.py"), "--out", str(out), "--model", str(tiny_model_dir),
         "--device", "cpu", "--backend", "torch", "--data", "test", "--limit", "1", "--check-workers", "0", "--quality", "fast"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert " cores, " in results["machine"] and "load average" in results["machine"]
    assert results["engine"].startswith("torch float32, cpu") and results["total wall seconds"]
    off, on = results["rows"]
    assert (off["faithful"], on["faithful"]) == ("off", "on, 0 check workers") and off["stages"] == {}
    assert off["quality"] == on["quality"] == "fast"
    stages = on["stages"]
    assert set(stages) == set(load_script("bench_faithful").STAGES)
    assert all(v >= 0 for k, v in stages.items() if k != "other") and abs(sum(stages.values()) - on["seconds"]) < 1e-6
    assert on["summary"].startswith(off["summary"].split(" re-decoded")[0].split(",")[0])  # the same chunks
    assert "% failed first decode" in on["summary"] and "x off" in (out / "results.txt").read_text(encoding="utf-8")
