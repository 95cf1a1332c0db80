"""Measure corpus restoration: single process vs ``--ray`` with 1 and 2 actors, side by side.

Every variant runs ``restore infer SHARDS -o OUT`` as a child process on the same parquet shards
(one corrupted sentence of ``--data`` per row) with the same random-weights model, twice: on
``--rows`` and on ``3 x --rows`` rows. The throughput reported is the *marginal* one,
``(3R - R) rows / (t(3R) - t(R))``, so the start-up (Ray, actors loading the model, the
CTranslate2 conversion) cancels out; tokens/s likewise from the summary lines' token counts.
That difference only means something when it outweighs the start-up and its variation: where
the estimated start-up (``t(R)`` less the small run's share of the work) is longer than the
difference itself, or the large run was not even slower, the marginal rates are reported as
not measurable (``n/m``; use a larger ``--rows``), never as a negative or inflated rate
(:func:`marginal_rates`). The whole-run
rows/s (start-up included, always measurable) is printed beside them. The peak RSS is the
driver's (``wait4``; Ray actors are other processes).

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

from restore.cpu import machine_line  # noqa: E402
from restore.textio import read_article_texts  # noqa: E402

SUMMARY = re.compile(r"(\d+) rows?, (\d+) bad rows?, (\d+) generated tokens")


def marginal_rates(small: tuple[float, int, int], large: tuple[float, int, int]) -> tuple[float | None, float | None, float]:
    """(rows/s, tokens/s, estimated start-up seconds) of the extra work of ``large`` over ``small``,
    each given as (seconds, rows, generated tokens). The rates are ``None`` (not measurable) when
    the estimated start-up is longer than the extra time itself: its variation then swamps it.

    >>> marginal_rates((6.0, 100, 2000), (14.0, 300, 6000))  # 4 s of work per 100 rows, 2 s start-up
    (25.0, 500.0, 2.0)
    >>> marginal_rates((40.0, 100, 2000), (35.0, 300, 6000))  # the large run was faster: start-up noise
    (None, None, 40.0)
    >>> marginal_rates((10.0, 100, 2000), (11.0, 300, 6000))  # 1 s of extra work against 9.5 s of start-up
    (None, None, 9.5)
    """
    extra = large[0] - small[0]
    work = extra * small[1] / (large[1] - small[1]) if extra > 0 else 0.0  # the small run's share of it
    startup = small[0] - work
    if extra <= 0 or startup > extra:
        return None, None, startup
    return (large[1] - small[1]) / extra, (large[2] - small[2]) / extra, startup


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
    started = time.perf_counter()
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
            rps, tps, startup = marginal_rates(small[:3], large[:3])
            results[name] = (large[1] / large[0], rps, tps, startup, large[0], max(small[3], large[3]))
        print(machine_line())
        print(f"model: random {args.random_config} BART ({args.tokenizer.name} tokenizer), --backend {args.backend}, --no-faithful; "
              f"{3 * args.rows} vs {args.rows} rows in {args.shards} parquet shards")  # fmt: skip
        print("| variant | rows/s (whole large run) | marginal rows/s | marginal tokens/s | start-up (est.) | wall (large run) | driver peak RSS |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, (whole, rps, tps, startup, wall, rss) in results.items():
            marginal = f"{rps:.1f} | {tps:.0f}" if rps is not None else "n/m | n/m"
            print(f"| {name} | {whole:.1f} | {marginal} | {startup:.1f} s | {wall:.1f} s | {rss:.0f} MiB |")
        if any(r[1] is None for r in results.values()):
            print("n/m: not measurable: the start-up outweighed the small run's work (use a larger --rows)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"bench_corpus: total run time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
