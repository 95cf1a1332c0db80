"""Per-stage timing of a short training run, from the run's own log lines.

    python scripts/bench_train_stages.py --runs 2 -- --config configs/small.yaml \
        data.train_files=[../shared/data/wiki/train-00.jsonl.xz] train.max_steps=1

Runs ``python -m restore train ARGS train.output_dir=TMP`` ``--runs`` times (each into a fresh
output directory; caches in the config's ``data.cache_dir`` persist, so the first run fills
them and later runs reuse them), timestamps every line the run prints and reports each stage
as the time between the lines that open and close it. Works for any version of ``restore
train`` that prints the usual lines; where the run prints its own ``setup:``/``stages:`` lines,
their finer split is shown too. Also times ``import`` of the training stack alone, and
reports each run's CPU time (all its processes): on a shared machine the wall times grow with
the load, the CPU time much less.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# (stage, prefix of the log line that ends it); a stage starts where the previous one ended.
STAGES = (
    ("start-up + imports", "attention:"),
    ("pairs (train + dev)", "train:"),
    ("tokenizer", "tokenizer:"),
    ("lexicon", "lexicon:"),
    ("model build + encoding", "model:"),
    ("first step", "step "),
    ("final eval (dev loss + BLEU)", "eval step"),
    ("export", "restore train:"),
)


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_run(command: list[str]) -> tuple[float, list[tuple[float, str]]]:
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    lines = [(time.perf_counter() - started, line.rstrip("\n")) for line in proc.stdout]
    err = proc.stderr.read()
    if proc.wait():
        tail = "\n".join(line for _, line in lines[-5:])
        sys.exit(f"bench_train_stages: the run failed (exit status {proc.returncode}):\n{tail}\n{err}")
    return time.perf_counter() - started, lines


def stage_times(lines: list[tuple[float, str]]) -> dict[str, float]:
    times, previous, k = {}, 0.0, 0
    for at, line in lines:
        if k < len(STAGES) and line.startswith(STAGES[k][1]):
            times[STAGES[k][0]] = at - previous
            previous, k = at, k + 1
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the arguments of restore train")
    args = parser.parse_args()
    train_args = [a for a in args.train_args if a != "--"]
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import restore.train, restore.cli, accelerate, datasets, sacrebleu"], check=True)
    imports = time.perf_counter() - started
    results = []
    for run in range(args.runs):
        cpu = children_cpu_seconds()
        with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
            wall, lines = timed_run([sys.executable, "-m", "restore", "train", *train_args, f"train.output_dir={Path(tmp) / 'run'}"])
        cpu = children_cpu_seconds() - cpu
        fine = [line.split(": ", 1)[1] for _, line in lines if line.startswith(("setup: ", "stages: "))]
        results.append((wall, stage_times(lines), "; ".join(fine), cpu))
        print(f"run {run + 1}: {wall:.1f}s", file=sys.stderr)
    from restore.cpu import machine_line

    print(machine_line())
    print(f"model: the config's, trained by: restore train {' '.join(train_args)}")
    print(f"python -c 'import restore.train, accelerate, datasets, sacrebleu' alone: {imports:.1f}s\n")
    print("| stage | " + " | ".join(f"run {i + 1} (s)" for i in range(len(results))) + " |")
    print("|---|" + "---:|" * len(results))
    for name, _ in STAGES:
        print(f"| {name} | " + " | ".join(f"{r[1][name]:.1f}" if name in r[1] else "-" for r in results) + " |")
    print("| **total wall** | " + " | ".join(f"**{r[0]:.1f}**" for r in results) + " |")
    print("| CPU time, all processes of the run | " + " | ".join(f"{r[3]:.1f}" for r in results) + " |")
    print(f"\nload average while measured (1, 5, 15 min): {', '.join(f'{x:.1f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs")
    for i, (_, _, fine, _) in enumerate(results):
        if fine:
            print(f"\nrun {i + 1}, the run's own split: {fine}")
    print(f"\nbench_train_stages: total run time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
