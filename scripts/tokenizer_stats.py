"""How well a tokenizer fits each corpus: pieces per word, unknown pieces and characters it does not cover.

Each corpus (``NAME=FILE``, articles as json lines with ``text``) is cut into (source, target)
pairs exactly like training data (:func:`restore.data.article_pairs`); its corrupted sources and
its original targets are measured apart, with the tokenizer as training uses it (no special
tokens):

- pieces per word (words: whitespace-separated tokens) and characters per piece;
- ``<unk>`` pieces per 1,000 pieces (0 with byte fallback, which spells an uncovered character
  as its UTF-8 bytes);
- byte-fallback pieces per 1,000 pieces, and characters not covered by the vocabulary (no piece
  contains them, so they are spelt in bytes) per 100,000 characters, with the most frequent;
- the share of texts that decode back to exactly themselves.

``--group-by FIELD`` adds a row per value of an article field (e.g. ``source``: fiction,
non-fiction, news in the prose corpus).

    python scripts/tokenizer_stats.py --tokenizer models/tokenizer-16k \\
        wiki=../shared/data/wiki/dev.jsonl.xz prose=../shared/data/prose/dev.jsonl.xz --group-by source
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from restore.chunking import ChunkConfig
from restore.data import article_pairs
from restore.errors import RestoreError
from restore.textio import parse_jsonl, read_data_text


@dataclass
class Counts:
    """Totals of one side (sources or targets) of one corpus or group."""

    texts: int = 0
    words: int = 0
    chars: int = 0
    pieces: int = 0
    unk: int = 0
    byte_pieces: int = 0
    uncovered: Counter = field(default_factory=Counter)  # characters spelt in bytes
    exact: int = 0  # texts that decode back to themselves

    def row(self) -> dict:
        return {
            "texts": self.texts, "words": self.words, "pieces": self.pieces,
            "pieces_per_word": self.pieces / max(1, self.words), "chars_per_piece": self.chars / max(1, self.pieces),
            "unk_per_1k_pieces": 1000 * self.unk / max(1, self.pieces),
            "byte_pieces_per_1k_pieces": 1000 * self.byte_pieces / max(1, self.pieces),
            "uncovered_chars_per_100k": 100_000 * sum(self.uncovered.values()) / max(1, self.chars),
            "uncovered_top": [f"{c} U+{ord(c):04X} x{n}" for c, n in self.uncovered.most_common(8)],
            "roundtrip_exact": 100 * self.exact / max(1, self.texts),
        }  # fmt: skip


def vocabulary_characters(tokenizer) -> set[str]:
    """Characters that some (non-byte, non-special) piece contains; '▁' stands for a space."""
    chars: set[str] = set()
    for piece in tokenizer.get_vocab():
        if not (piece.startswith("<") and piece.endswith(">")):
            chars.update(piece.replace("▁", " "))
    return chars


def measure(texts: list[str], tokenizer, covered: set[str], unk_id: int, byte_ids: set[int], into: Counts, batch: int = 1000) -> None:
    """Add the counts of ``texts`` to ``into``."""
    for start in range(0, len(texts), batch):
        part = texts[start : start + batch]
        ids = tokenizer(part, add_special_tokens=False)["input_ids"]
        decoded = tokenizer.batch_decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        for text, row, back in zip(part, ids, decoded):
            into.texts += 1
            into.words += len(text.split())
            into.chars += len(text)
            into.pieces += len(row)
            into.unk += sum(i == unk_id for i in row)
            into.byte_pieces += sum(i in byte_ids for i in row)
            into.uncovered.update(c for c in text if c not in covered and not c.isspace())
            into.exact += back == text


def table(rows: list[tuple[str, str, dict]]) -> list[str]:
    lines = [
        "| corpus | side | texts | words | pieces/word | chars/piece | `<unk>` per 1k pieces | byte pieces per 1k | uncovered chars per 100k | round-trip exact |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, side, r in rows:
        lines.append(
            f"| {name} | {side} | {r['texts']:,} | {r['words']:,} | {r['pieces_per_word']:.3f} | {r['chars_per_piece']:.2f} | "
            f"{r['unk_per_1k_pieces']:.3f} | {r['byte_pieces_per_1k_pieces']:.3f} | {r['uncovered_chars_per_100k']:.2f} | {r['roundtrip_exact']:.2f}% |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpora", nargs="+", metavar="NAME=FILE", help="articles (.jsonl or .jsonl.xz with 'text')")
    parser.add_argument("--tokenizer", default="models/tokenizer-16k", help="tokenizer directory (AutoTokenizer)")
    parser.add_argument("--group-by", default=None, metavar="FIELD", help="also a row per value of this article field")
    parser.add_argument("--max-articles", type=int, default=None, help="the first N articles of each file only")
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        vocab = tokenizer.get_vocab()
        byte_ids = {i for p, i in vocab.items() if p.startswith("<0x") and p.endswith(">")}
        covered = vocabulary_characters(tokenizer)
        rows: list[tuple[str, str, dict]] = []
        for spec in args.corpora:
            name, sep, path = spec.partition("=")
            if not sep:
                raise RestoreError(f"{spec}: expected NAME=FILE")
            groups: dict[str, dict[str, Counts]] = {}
            records = parse_jsonl(read_data_text(path), path, required="text")
            for n, record in enumerate(records):
                if args.max_articles is not None and n >= args.max_articles:
                    break
                sources, targets, _, _ = article_pairs(record["text"], ChunkConfig())
                keys = [name] + ([f"{name}: {record.get(args.group_by)}"] if args.group_by else [])
                for key in keys:
                    sides = groups.setdefault(key, {"sources": Counts(), "targets": Counts()})
                    measure(sources, tokenizer, covered, tokenizer.unk_token_id, byte_ids, sides["sources"])
                    measure(targets, tokenizer, covered, tokenizer.unk_token_id, byte_ids, sides["targets"])
            rows += [(key, side, counts.row()) for key, sides in groups.items() for side, counts in sides.items()]
    except RestoreError as e:
        print(f"tokenizer_stats: error: {e}", file=sys.stderr)
        return 1
    import tokenizers
    import transformers

    print(f"tokenizer {args.tokenizer} ({len(vocab):,} pieces, {len(covered):,} characters covered); "
          f"python {platform.python_version()}, tokenizers {tokenizers.__version__}, transformers {transformers.__version__}")  # fmt: skip
    print("\n".join(table(rows)))
    for key, side, r in rows:
        if r["uncovered_top"]:
            print(f"{key}, {side}: most frequent uncovered characters: {', '.join(r['uncovered_top'])}")
    print(f"run time {time.perf_counter() - started:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps([{"corpus": k, "side": s, **r} for k, s, r in rows], indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
