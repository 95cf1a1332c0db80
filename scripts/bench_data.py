"""Measure training-pair preparation speed (articles -> corrupted chunk pairs) on a subset of a shard.

    python scripts/bench_data.py ../shared/data/wiki/train-00.jsonl.xz --articles 2000 --num-proc 1 2

The first ``--articles`` records are copied into a temporary .jsonl, then prepared with
``restore.data.prepare_pairs`` (load + parallel ``datasets.map`` + save_to_disk) into a fresh
temporary cache once per ``--num-proc`` value; a second call shows the cached reload time.
Prints one line per setting: articles/s, words/s and pairs/s over the whole preparation.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

from restore.chunking import ChunkConfig
from restore.cpu import machine_line
from restore.data import ArticleSelection, load_articles, prepare_pairs


def copy_subset(source: Path, count: int, dest: Path) -> tuple[int, int]:
    """The first ``count`` records of a (possibly .xz) .jsonl shard; returns (articles, words)."""
    opener = lzma.open if source.suffix == ".xz" else open
    words = 0
    with opener(source, "rt", encoding="utf-8") as f, open(dest, "w", encoding="utf-8") as out:
        lines = list(islice(f, count))
        for line in lines:
            words += len(json.loads(line)["text"].split())
            out.write(line)
    return len(lines), words


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shard", type=Path, help="a .jsonl or .jsonl.xz file of articles")
    parser.add_argument("--articles", type=int, default=2000, help="how many articles to prepare")
    parser.add_argument("--num-proc", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    parser.add_argument("--max-source-words", type=int, default=ChunkConfig().max_source_words)
    args = parser.parse_args(argv)
    if not args.shard.is_file():
        print(f"bench_data: error: {args.shard}: no such file", file=sys.stderr)
        return 1
    chunking = ChunkConfig(args.max_source_words)
    begun = time.perf_counter()
    print(machine_line())
    with tempfile.TemporaryDirectory() as tmp:
        subset = Path(tmp) / "subset.jsonl"
        articles, words = copy_subset(args.shard, args.articles, subset)
        selection = ArticleSelection((str(subset),))
        started = time.perf_counter()
        load_articles(selection, str(Path(tmp) / "load-only"))
        load = time.perf_counter() - started
        print(f"{articles:,} articles, {words:,} words from {args.shard.name}; loading alone: {load:.2f}s; {os.cpu_count()} CPU cores")
        for procs in args.num_proc:
            cache = str(Path(tmp) / f"cache-{procs}")
            started = time.perf_counter()
            pairs = prepare_pairs(selection, chunking, cache, num_proc=procs)
            seconds = time.perf_counter() - started
            started = time.perf_counter()
            prepare_pairs(selection, chunking, cache, num_proc=procs)
            cached = time.perf_counter() - started
            print(
                f"num_proc={procs}: {len(pairs):,} pairs in {seconds:.2f}s = {len(pairs) / seconds:,.0f} pairs/s, "
                f"{articles / seconds:,.0f} articles/s, {words / seconds:,.0f} words/s "
                f"({pairs.stats['dropped_units']:,} over-long units dropped); cached reload {cached:.3f}s"
            )
    print(f"bench_data: total run time {time.perf_counter() - begun:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
