"""Measure `restore.corrupt` throughput (words/s on one CPU core) on Wikipedia articles.

Usage: python scripts/bench_corrupt.py [FILE.jsonl(.xz)] [--articles N]

Reports a cold pass (empty per-word-type cache, as on a fresh process) and a warm pass
over the same articles; "words" are whitespace-separated words of the original text.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from restore.corrupt import corrupt, normalize_token
from restore.cpu import machine_line
from restore.textio import read_article_texts

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "wiki" / "train-00.jsonl.xz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--articles", type=int, default=2000)
    args = parser.parse_args()
    started = time.perf_counter()
    print(machine_line())
    texts = read_article_texts(args.file, args.articles)
    words = sum(len(t.split()) for t in texts)
    corrupt("Warm up the Punkt and WordNet resources.")
    normalize_token.cache_clear()
    for label in ("cold", "warm"):
        start = time.perf_counter()
        out_tokens = sum(len(corrupt(t).split()) for t in texts)
        seconds = time.perf_counter() - start
        print(f"{label}: {len(texts)} articles, {words:,} words -> {out_tokens:,} tokens in {seconds:.2f} s "
              f"= {words / seconds:,.0f} words/s (1 core)")
    print(f"bench_corrupt: total run time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
