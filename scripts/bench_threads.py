"""PyTorch CPU threads under contention: ``restore infer --backend torch`` with 1 thread vs all cores.

Runs the real command line (``python -m restore infer``) once per variant and round, variants
interleaved, each with ``OMP_NUM_THREADS`` set to the variant's thread count, optionally while
``--load N`` busy processes (pure Python loops, one core each) compete for the cores like other
jobs on a shared machine. Reads generated tokens/s from each run's summary line and prints the
best and the worst round of each variant.

Usage::

    python scripts/bench_threads.py --model runs/tiny INPUT.txt --threads 1 2 --load 0 2 --rounds 2
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import subprocess
import sys
import time

from restore.cpu import machine_line
from restore.device import THREAD_ENV_VARS


def spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def run_infer(model: str, source: str, threads: int | None) -> tuple[float, float, str]:
    """(generated tokens/s, wall seconds, summary line) of one ``restore infer`` run."""
    env = dict(os.environ)
    for name in THREAD_ENV_VARS:
        env.pop(name, None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    argv = [sys.executable, "-m", "restore", "infer", source, "--model", model, "--backend", "torch",
            "--device", "cpu", "--no-faithful", "-o", os.devnull]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"bench_threads: {' '.join(argv)} failed:\n{result.stderr}")
    summary = result.stderr.strip().splitlines()[-1]
    rate = float(re.search(r"([\d.]+) tokens/s", summary).group(1))
    return rate, wall, summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", help="corrupted text file to restore")
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count() or 1],
                   help="OMP_NUM_THREADS values to compare (0 = unset: restore's default)")  # fmt: skip
    p.add_argument("--load", type=int, nargs="+", default=[0], help="busy processes competing for the cores")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    started = time.perf_counter()
    print(f"{machine_line()} (before the runs)\nmodel: {args.model}; input: {args.source}")
    results: dict[tuple[int, int], list[float]] = {}
    for load in args.load:
        spinners = [multiprocessing.Process(target=spin, args=(3600,), daemon=True) for _ in range(load)]
        for s in spinners:
            s.start()
        try:
            for round_ in range(args.rounds):
                for threads in args.threads:
                    rate, wall, summary = run_infer(args.model, args.source, threads or None)
                    results.setdefault((load, threads), []).append(rate)
                    print(f"  load {load}, threads {threads or 'default'}, round {round_ + 1}: {rate:.1f} tokens/s, "
                          f"wall {wall:.1f} s | {summary}", file=sys.stderr)  # fmt: skip
        finally:
            for s in spinners:
                s.terminate()
    print(f"{'extra load':>10} {'threads':>8} {'best tok/s':>11} {'worst tok/s':>12}")
    for (load, threads), rates in results.items():
        print(f"{load:>10} {threads or 'default':>8} {max(rates):>11.1f} {min(rates):>12.1f}")
    print(f"bench_threads: total run time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
