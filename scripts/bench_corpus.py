"""Measure corpus restoration: single process vs ``--ray`` with 1 and 2 actors, side by side.

Every variant runs ``restore infer SHARDS -o OUT`` as a child process on the same parquet shards
(one corrupted sentence of ``--data`` per row) with the same random-weights model, twice: on
``--rows`` and on ``3 x --rows`` rows. The throughput reported is the *marginal* one,
``(3R - R) rows / (t(3R) - t(R))``, so the start-up (Ray, actors loading the model, the
CTranslate2 conversion) cancels out; tokens/s likewise from the summary lines' token counts.
The peak RSS is the driver's (``wait4``; Ray actors are other processes). On a shared machine
the start-up varies by more than small runs' work; then compare the summary lines' whole-run
rows/s (printed for every run) instead, or use a larger ``--rows``.

Usage::

    python scripts/bench_corpus.py --random-config encoder_layers=6,decoder_layers=4 --rows 100
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_infer import DEFAULT_DATA, REPO, bench_tokenizer, random_model_config  # noqa: E402

from restore.baselines import read_article_texts  # noqa: E402

SUMMARY = re.compile(r"(\d+) rows, (\d+) bad rows, (\d+) generated tokens")


def make_model(directory: Path, spec: str, tokenizer_dir: Path) -> Path:
    import torch

    from restore.checkpoint import write_restore_json
    from restore.model import build_model

    model_config, chunking = random_model_config(spec)
    tokenizer = bench_tokenizer(tokenizer_dir, 16000)
    torch.manual_seed(0)
    build_model(model_config, len(tokenizer)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    write_restore_json(directory, chunking, training={"note": "bench_corpus.py random weights"})
    return directory


def make_corpus(directory: Path, sentences: list[str], rows: int, shards: int) -> None:
    directory.mkdir(parents=True)
    per = -(-rows // shards)
    for s in range(shards):
        part = [sentences[k % len(sentences)] for k in range(s * per, min(rows, (s + 1) * per))]
        pq.write_table(pa.table({"id": range(s * per, s * per + len(part)), "source": part}), directory / f"part-{s:03d}.parquet")


def run(argv: list[str]) -> tuple[float, int, int, float]:
    """(seconds, rows, generated tokens, peak RSS MiB) of one ``restore infer`` child."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "restore", "infer", *argv], stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    err = child.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"restore infer {' '.join(argv)} failed:\n{err}")
    summary = [line for line in err.splitlines() if line.startswith("restore infer:")][-1]
    print(f"  {summary}", file=sys.stderr)
    rows, _, tokens = map(int, SUMMARY.search(summary).groups())
    return seconds, rows, tokens, usage.ru_maxrss / 1024


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--random-config", default="encoder_layers=6,decoder_layers=4")
    p.add_argument("--tokenizer", type=Path, default=REPO / "runs" / "bench-tokenizer-16k")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--rows", type=int, default=200, help="rows of the small run (the large one has 3x)")
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--backend", default="auto")
    p.add_argument("--only", nargs="*", default=None, help="variants: single ray-1 ray-2")
    args = p.parse_args()

    from restore.corrupt import corrupt

    work = Path(tempfile.mkdtemp(prefix="bench-corpus-"))
    try:
        texts = read_article_texts(args.data)[:60]
        sentences = [s for t in texts for s in corrupt(t).split(" . ") if 6 <= len(s.split()) <= 30]
        model = make_model(work / "model", args.random_config, args.tokenizer)
        for rows in (args.rows, 3 * args.rows):
            make_corpus(work / f"in-{rows}", [s + " ." for s in sentences], rows, args.shards)
        variants = {"single": [], "ray-1": ["--ray", "--ray-actors", "1"], "ray-2": ["--ray", "--ray-actors", "2"]}
        common = ["--model", str(model), "--device", "cpu", "--backend", args.backend, "--no-faithful"]
        run([str(work / f"in-{args.rows}"), "-o", str(work / "warm"), *common])  # converts the model (cached)
        results = {}
        for name, extra in variants.items():
            if args.only and name not in args.only:
                continue
            small = run([str(work / f"in-{args.rows}"), "-o", str(work / f"out-{name}-s"), *common, *extra])
            large = run([str(work / f"in-{3 * args.rows}"), "-o", str(work / f"out-{name}-l"), *common, *extra])
            seconds = large[0] - small[0]
            results[name] = ((large[1] - small[1]) / seconds, (large[2] - small[2]) / seconds, large[0], max(small[3], large[3]))
        print(f"CPU: {os.cpu_count()} cores; {3 * args.rows} vs {args.rows} rows in {args.shards} parquet shards, {args.random_config}")
        print("| variant | rows/s | tokens/s | x single | wall (large run) | driver peak RSS |")
        print("|---|---:|---:|---:|---:|---:|")
        base = results.get("single", next(iter(results.values())))[0]
        for name, (rps, tps, wall, rss) in results.items():
            print(f"| {name} | {rps:.1f} | {tps:.0f} | {rps / base:.2f} | {wall:.1f} s | {rss:.0f} MiB |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
