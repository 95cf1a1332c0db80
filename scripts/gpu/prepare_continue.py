"""Prepare a continued-training GPU call: pick the shards the model has not seen that fit the call's carry budget.

A device call carries the working tree (tracked files and untracked ones git does not ignore)
and the ignored folders it names, 64 MiB in all. The model to continue is tracked
(``models/restore-small``, 30 MB), so it travels anyway; this script measures the tree, the
wheels and the dev file, and fills what is left with shards that the model's lineage
(``restore.json``, :mod:`restore.lineage`) has not trained on, in name order, whole shards only.
It prints what it picked and why, then copies them into ``--data-dir`` (removing other
``train-*`` shards there) and the wheels into ``--wheel-dir``::

    python scripts/gpu/prepare_continue.py                       # models/restore-small, ../shared/data/wiki
    python scripts/gpu/prepare_continue.py --dry-run             # say what it would pick, copy nothing
    python scripts/gpu/prepare_continue.py --from-scratch        # for MODE=scratch: any shards that fit

Exit status 1 with one line when no unseen shard fits.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from restore.config_record import portable_path  # noqa: E402
from restore.lineage import local_shard, model_lineage, pick_unseen_shards  # noqa: E402

MIB = 1 << 20


def tree_bytes(repo: Path) -> int:
    """Bytes of what a device call sends of ``repo`` besides the carried folders: the files git
    tracks and the untracked ones it does not ignore, as they are in the working tree."""
    listed = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    files = {repo / name.decode() for name in listed.split(b"\0") if name}
    return sum(f.stat().st_size for f in files if f.is_file() and not f.is_symlink())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=REPO / "models" / "restore-small", help="the model to continue")
    p.add_argument("--shards", nargs="+", default=[str(REPO.parent / "shared" / "data" / "wiki" / "train-*.jsonl.xz")],
                   help="shard files or globs to choose from (default: the wiki corpus's)")  # fmt: skip
    p.add_argument("--dev", type=Path, default=REPO.parent / "shared" / "data" / "wiki" / "dev.jsonl.xz")
    p.add_argument("--wheels", type=Path, default=REPO.parent / "shared" / "wheels", help="folder of wheels to carry")
    p.add_argument("--data-dir", type=Path, default=REPO / ".data")
    p.add_argument("--wheel-dir", type=Path, default=REPO / ".whl")
    p.add_argument("--limit-mib", type=float, default=64.0, help="what one device call carries")
    p.add_argument("--margin-mib", type=float, default=1.0, help="kept free for files added before the call")
    p.add_argument("--repo", type=Path, default=REPO, help="the checkout that makes the device call")
    p.add_argument("--from-scratch", action="store_true", help="for a model trained from scratch (MODE=scratch): every shard is unseen")
    p.add_argument("--dry-run", action="store_true", help="print the pick, copy nothing")
    args = p.parse_args(argv)

    from restore.data import resolve_files
    from restore.errors import RestoreError

    try:
        restore_json = json.loads((args.model / "restore.json").read_text(encoding="utf-8"))
        files = resolve_files(args.shards, "--shards")
    except (OSError, ValueError, RestoreError) as e:
        print(f"prepare_continue: error: {e}", file=sys.stderr)
        return 1
    wheels = sorted(args.wheels.glob("*.whl")) if args.wheels.is_dir() else []
    tree = tree_bytes(args.repo)
    wheel_bytes = sum(w.stat().st_size for w in wheels)
    dev_bytes = args.dev.stat().st_size if args.dev.is_file() else 0
    budget = int(args.limit_mib * MIB) - tree - wheel_bytes - dev_bytes - int(args.margin_mib * MIB)
    print(f"carry budget: {args.limit_mib:.0f} MiB - tree {tree / MIB:.1f} MiB (tracked + untracked files of {args.repo}) "
          f"- wheels {wheel_bytes / MIB:.1f} MiB ({len(wheels)}) - dev {dev_bytes / MIB:.2f} MiB - margin {args.margin_mib:.1f} MiB "
          f"= {budget / MIB:.1f} MiB for shards")  # fmt: skip
    lineage = [] if args.from_scratch else model_lineage(restore_json)
    print(f"model: {args.model} ({len(lineage)} run(s) in its lineage)" if not args.from_scratch else "model: from scratch (every shard unseen)")
    pick = pick_unseen_shards([local_shard(f, portable_path(f)) for f in files], lineage, max(0, budget))
    print("\n".join(pick.describe()))
    if not pick.picked:
        print("prepare_continue: error: no unseen shard fits the carry budget", file=sys.stderr)
        return 1
    if args.dry_run:
        return 0
    keep = {Path(s.name).name for s in pick.picked}
    if len(keep) < len(pick.picked):
        print(f"prepare_continue: error: picked shards share a file name ({', '.join(s.name for s in pick.picked)})", file=sys.stderr)
        return 1
    args.data_dir.mkdir(parents=True, exist_ok=True)
    for stale in args.data_dir.glob("train-*"):
        if stale.name not in keep:
            stale.unlink()
    by_name = {portable_path(f): f for f in files}
    for shard in pick.picked:
        shutil.copy2(by_name[shard.name], args.data_dir / Path(shard.name).name)
    if dev_bytes:
        shutil.copy2(args.dev, args.data_dir / args.dev.name)
    if wheels:
        args.wheel_dir.mkdir(parents=True, exist_ok=True)
        for wheel in wheels:
            shutil.copy2(wheel, args.wheel_dir / wheel.name)
    total = tree + sum((args.data_dir / n).stat().st_size for n in keep) + dev_bytes + wheel_bytes
    carry = ", ".join(f'"{d.name}"' for d in (args.data_dir, args.wheel_dir) if d == args.data_dir or wheels)
    print(f"copied into {args.data_dir}{f' and {args.wheel_dir}' if wheels else ''}: the call carries {total / MIB:.1f} MiB "
          f"of {args.limit_mib:.0f} (carry [{carry}])")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
