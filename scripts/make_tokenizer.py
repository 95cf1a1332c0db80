"""Train the shared subword tokenizer once, from a config's training data, and save it (e.g. models/tokenizer-16k).

A training run whose config sets ``tokenizer.path`` reuses this directory instead of training
sentencepiece again (44 s on the GPU machine, every run). The tokenizer is exactly the one
``restore train`` would train for the same config: the same pairs, the same sample
(``tokenizer.sample_pairs`` pairs drawn with ``train.seed``), the same settings.

    python scripts/make_tokenizer.py --config configs/small.yaml --out models/tokenizer-16k

The prepared pairs are cached in the config's ``data.cache_dir`` (and reused by later runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import time
from pathlib import Path

from restore.config import load_config
from restore.data import combine_pairs, corpus_selections, prepare_pairs
from restore.train import train_tokenizer_on_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True, help="directory for tokenizer.json + tokenizer_config.json")
    parser.add_argument("overrides", nargs="*", help="config overrides, as for restore train")
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    config = dataclasses.replace(config, tokenizer=dataclasses.replace(config.tokenizer, path=None))
    selections = corpus_selections(config.data)
    started = time.perf_counter()
    parts = [prepare_pairs(s.train, config.chunking, config.data.cache_dir, config.data.num_proc) for s in selections]
    pairs = combine_pairs(parts, [s.weight for s in selections])  # a mix: the sample follows the weights
    print(f"pairs: {len(pairs):,} from {pairs.stats['articles']:,} articles in {time.perf_counter() - started:.1f}s")
    started = time.perf_counter()
    tokenizer, sampled = train_tokenizer_on_pairs(pairs, config.tokenizer, config.train.seed)
    out = Path(args.out)
    tokenizer.save_pretrained(out)
    digest = hashlib.sha256((out / "tokenizer.json").read_bytes()).hexdigest()[:16]
    print(
        f"tokenizer: {len(tokenizer):,} pieces from {sampled:,} pairs in {time.perf_counter() - started:.1f}s -> {out} "
        f"(tokenizer.json sha256 {digest}; files: {', '.join(Path(f).name for s in selections for f in s.train.files)})"
    )


if __name__ == "__main__":
    main()
