"""Build the fixed evaluation pair files in ``data/eval/`` from the shared held-out articles.

Every score in the project is computed on these files, so they are made once, with
a fixed seed, and committed. Each line is one pair::

    {"doc": article id, "title": article title, "chunk": i, "source": corrupted chunk, "target": original span}

cut exactly like training pairs (:func:`restore.data.article_pairs`, default chunking
``max_source_words=48``; a sentence longer than that is left out, as in training). Outputs: ``<split>.jsonl.xz`` with all pairs of the split and
``<split>-<n>.jsonl.xz`` with ``n`` pairs sampled with ``--seed`` (kept in file order). With
``--per-doc K``, ``<split>.jsonl.xz`` holds an excerpt of every article instead: K consecutive
pairs (all of a shorter one) from an offset drawn with ``--seed``, for splits of long documents
(books) that would take too long to score whole.

    python scripts/make_eval_pairs.py --articles /work/shared/data/wiki/test.jsonl.xz \\
        --split test --subset 300 --seed 20260517 --out data/eval
    python scripts/make_eval_pairs.py --articles /work/shared/data/prose/test.jsonl.xz \\
        --split prose-test --per-doc 20 --subset 0 --seed 20260601 --out data/eval
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import random
import sys
from pathlib import Path

from restore.chunking import ChunkConfig
from restore.errors import RestoreError
from restore.data import article_pairs
from restore.textio import read_data_text
from restore.textio import atomic_output, dump_jsonl_line, parse_jsonl


def make_pairs(articles_path: str, config: ChunkConfig) -> tuple[list[dict], int, int]:
    """All pairs of all articles, in file order, with the unit counts (all, dropped as too long)."""
    pairs = []
    units = dropped = 0
    for record in parse_jsonl(read_data_text(articles_path), articles_path, required="text"):
        sources, targets, n_units, n_dropped = article_pairs(record["text"], config)
        units, dropped = units + n_units, dropped + n_dropped
        for i, (source, target) in enumerate(zip(sources, targets)):
            pairs.append({"doc": record.get("id"), "title": record.get("title"), "chunk": i,
                          "source": source, "target": target})
    return pairs, units, dropped


def sample_pairs(pairs: list[dict], n: int, seed: int) -> list[dict]:
    """``n`` pairs drawn with ``seed``, in their original order (all of them if fewer)."""
    if n >= len(pairs):
        return list(pairs)
    keep = sorted(random.Random(seed).sample(range(len(pairs)), n))
    return [pairs[i] for i in keep]


def excerpt_pairs(pairs: list[dict], per_doc: int, seed: int) -> list[dict]:
    """Up to ``per_doc`` consecutive pairs of each article (its ``chunk`` numbers kept), from an
    offset drawn with ``seed``; articles in file order.

    >>> pairs = [{"doc": d, "chunk": i} for d, n in (("a", 9), ("b", 2)) for i in range(n)]
    >>> got = excerpt_pairs(pairs, 3, seed=1)
    >>> [p["doc"] for p in got], [p["chunk"] for p in got[3:]]  # b is shorter than 3: all of it
    (['a', 'a', 'a', 'b', 'b'], [0, 1])
    >>> first = got[0]["chunk"]; [p["chunk"] for p in got[:3]] == [first, first + 1, first + 2]
    True
    """
    rng = random.Random(seed)
    docs: dict = {}
    for pair in pairs:
        docs.setdefault(pair["doc"], []).append(pair)
    out = []
    for doc_pairs in docs.values():
        start = rng.randrange(len(doc_pairs) - per_doc + 1) if len(doc_pairs) > per_doc else 0
        out.extend(doc_pairs[start : start + per_doc])
    return out


def write_xz_jsonl(path: Path, records: list[dict]) -> str:
    """Write records as xz-compressed JSON lines, atomically; return the sha256 of the uncompressed text."""
    text = "".join(dump_jsonl_line(r) for r in records)
    with atomic_output(path, binary=True) as f:
        f.write(lzma.compress(text.encode("utf-8"), preset=9))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", required=True, help="held-out articles (.jsonl or .jsonl.xz with 'text')")
    parser.add_argument("--split", required=True, help="name of the output files, e.g. test")
    parser.add_argument("--subset", type=int, default=300, help="size of the sampled subset (0: none)")
    parser.add_argument("--per-doc", type=int, default=0, help="K: <split> holds K consecutive pairs per article (0: all pairs)")
    parser.add_argument("--seed", type=int, default=20260517)
    parser.add_argument("--max-source-words", type=int, default=ChunkConfig().max_source_words)
    parser.add_argument("--out", default="data/eval", help="output directory")
    args = parser.parse_args(argv)
    try:
        out = Path(args.out)
        if not out.is_dir():
            raise RestoreError(f"{out}: output directory does not exist")
        pairs, units, dropped = make_pairs(args.articles, ChunkConfig(max_source_words=args.max_source_words))
        if not pairs:
            raise RestoreError(f"{args.articles}: no pairs (no articles?)")
        print(json.dumps({"articles_file": args.articles, "units": units, "dropped_too_long": dropped}))
        files = {f"{args.split}.jsonl.xz": excerpt_pairs(pairs, args.per_doc, args.seed) if args.per_doc else pairs}
        if args.subset:
            files[f"{args.split}-{args.subset}.jsonl.xz"] = sample_pairs(pairs, args.subset, args.seed)
        for name, records in files.items():
            digest = write_xz_jsonl(out / name, records)
            docs = len({r["doc"] for r in records})
            tokens = sum(len(r["source"].split()) for r in records)
            print(json.dumps({"file": str(out / name), "pairs": len(records), "articles": docs,
                              "source_tokens": tokens, "bytes": (out / name).stat().st_size,
                              "sha256_uncompressed": digest}))
    except RestoreError as e:
        print(f"make_eval_pairs: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
