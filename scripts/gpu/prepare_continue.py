"""Prepare a continued-training GPU call: per corpus of the mix, the shards the model has not seen that fit the carry budget.

A device call carries the working tree (tracked files and untracked ones git does not ignore)
and the ignored folders it names, 64 MiB in all. The model to continue is tracked
(``models/restore-small``, 30 MB), so it travels anyway. This script measures the tree, the
wheels and the dev files of the config's corpora (``scripts/gpu/carry_data.py``'s measure), and
fills what is left (less a margin) with shards that the model's lineage (``restore.json``,
:mod:`restore.lineage`, matched by content hash) has not trained on: for each corpus of the
config (:func:`restore.mix.data_corpora`), the candidates are the ``train-*.jsonl.xz`` files in
the folder(s) of its configured train files (``../shared/data/wiki/``, ``../shared/data/prose/``),
and the budget is shared by the corpora's weights, whole shards only
(:func:`restore.lineage.pick_unseen_shards`: the corpus furthest below its share takes its next
unseen shard that fits). It prints what it picked, why and what did not fit, then lays the picks
out exactly as ``carry_data.py`` does (``.data/NAME/train/`` the picked shards, ``.data/NAME/dev/``
the corpus's dev files, stale files removed; its code copies) and copies the wheels into
``.whl/``, and measures what the call will carry::

    python scripts/gpu/prepare_continue.py                       # models/restore-small, configs/small.yaml
    python scripts/gpu/prepare_continue.py --dry-run             # say what it would pick, copy nothing
    python scripts/gpu/prepare_continue.py --from-scratch --config configs/medium.yaml   # MODE=scratch: every shard unseen

``scripts/gpu/continue_small.sh`` then trains on what ``.data/NAME/`` holds with the config's
weights. Exit status 1 with one line when a corpus gets no shard, or the carry is over the limit.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # carry_data, beside this script

from carry_data import check_carry_folder, copy_plan, fill_folder, report_carry, travelling_bytes  # noqa: E402

from restore.config import load_config  # noqa: E402
from restore.data import resolve_files  # noqa: E402
from restore.errors import RestoreError  # noqa: E402
from restore.lineage import local_shard, pick_unseen_shards, read_lineage  # noqa: E402
from restore.mix import data_corpora  # noqa: E402

MIB = 1 << 20
SHARDS = "train-*.jsonl.xz"  # a corpus folder's training shards


def candidate_files(train_patterns: list[str], key: str) -> list[str]:
    """The ``train-*.jsonl.xz`` files in the folders of a corpus's configured train files (which must exist)."""
    folders = dict.fromkeys(os.path.dirname(f) or "." for f in resolve_files(train_patterns, key))
    return [f for folder in folders for f in resolve_files([os.path.join(folder, SHARDS)], key)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(REPO / "configs" / "small.yaml"), help="the config whose corpora and weights to follow")
    p.add_argument("--model", type=Path, default=REPO / "models" / "restore-small", help="the model to continue")
    p.add_argument("--wheels", type=Path, default=REPO.parent / "shared" / "wheels", help="folder of wheels to carry")
    p.add_argument("--data-dir", type=Path, default=REPO / ".data")
    p.add_argument("--wheel-dir", type=Path, default=REPO / ".whl")
    p.add_argument("--limit-mib", type=float, default=64.0, help="what one device call carries")
    p.add_argument("--margin-mib", type=float, default=1.0, help="kept free for files added before the call")
    p.add_argument("--repo", type=Path, default=REPO, help="the checkout that makes the device call")
    p.add_argument("--from-scratch", action="store_true", help="for a model trained from scratch (MODE=scratch): every shard is unseen")
    p.add_argument("--dry-run", action="store_true", help="print the pick, copy nothing")
    p.add_argument("overrides", nargs="*", help="config overrides, as for restore train")
    args = p.parse_args(argv)
    try:
        return prepare(args)
    except (OSError, ValueError, RestoreError) as e:
        print(f"prepare_continue: error: {e}", file=sys.stderr)
        return 1


def prepare(args) -> int:
    corpora = data_corpora(load_config(args.config, args.overrides).data)
    if not corpora:
        raise RestoreError(f"{args.config}: names no data files (a hub dataset cannot be carried)")
    lineage = [] if args.from_scratch else read_lineage(args.model)
    candidates = {c.name: candidate_files(c.train_files, f"data.corpora.{c.name}.train_files") for c in corpora}
    devs = {c.name: resolve_files(c.dev_files, f"data.corpora.{c.name}.dev_files") for c in corpora}
    wheels = sorted(args.wheels.glob("*.whl")) if args.wheels.is_dir() else []
    limit = int(args.limit_mib * MIB)
    tree, _ = travelling_bytes([], args.repo)
    wheel_bytes = sum(w.stat().st_size for w in wheels)
    dev_bytes = sum(os.path.getsize(f) for files in devs.values() for f in files)
    budget = max(0, limit - tree - wheel_bytes - dev_bytes - int(args.margin_mib * MIB))
    print(f"carry budget: {args.limit_mib:g} MiB - tree {tree / MIB:.1f} MiB (tracked + untracked files of {args.repo}) "
          f"- wheels {wheel_bytes / MIB:.1f} MiB ({len(wheels)}) - dev {dev_bytes / MIB:.2f} MiB "
          f"({', '.join(f'{n} {len(f)}' for n, f in devs.items())}) - margin {args.margin_mib:g} MiB "
          f"= {budget / MIB:.1f} MiB for shards")  # fmt: skip
    print(f"model: {args.model} ({len(lineage)} run(s) in its lineage)" if not args.from_scratch else "model: from scratch (every shard unseen)")
    shards = {name: [local_shard(f) for f in files] for name, files in candidates.items()}  # named by their paths
    pick = pick_unseen_shards(shards, {c.name: c.weight for c in corpora}, lineage, budget)
    print("\n".join(pick.describe()))
    empty = [name for name, c in pick.corpora.items() if not c.picked]
    if empty:
        raise RestoreError(f"no unseen shard of {', '.join(empty)} fits the carry budget")
    if args.dry_run:
        return 0
    plan = {name: {"train": [s.name for s in c.picked], "dev": devs[name]} for name, c in pick.corpora.items()}
    check_carry_folder(args.data_dir, args.repo)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    copy_plan(plan, args.data_dir)
    folders = [args.data_dir]
    if wheels:
        check_carry_folder(args.wheel_dir, args.repo)
        fill_folder(args.wheel_dir, wheels)
        folders.append(args.wheel_dir)
    carry = ", ".join(f'"{d.name}"' for d in folders)
    print(f"copied into {' and '.join(map(str, folders))} (carry [{carry}]):")
    return report_carry(folders, args.repo, limit, prog="prepare_continue")


if __name__ == "__main__":
    raise SystemExit(main())
