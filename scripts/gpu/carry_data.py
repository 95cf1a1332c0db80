"""Copy the data files a config trains on into a git-ignored folder that travels to a lent GPU machine.

Each corpus of the config (:func:`restore.mix.data_files`; one corpus for ``data.train_files``)
gets ``DEST/<corpus>/train/`` and ``DEST/<corpus>/dev/`` holding exactly its files (others
there are removed, so the GPU script, which trains on whatever it finds there, cannot pick up a
stale shard). Then the size of everything that travels is measured like ``du -cb``: the
tracked files, ``DEST`` and the folders given with ``--also`` (the wheels), against the device
tool's 64 MiB; over it, the exit status is 1.

    python scripts/gpu/carry_data.py --config configs/small.yaml --to .data --also .whl
    python scripts/gpu/carry_data.py --config configs/small.yaml --to .data data.corpora.wiki.train_files=[../shared/data/wiki/train-05.jsonl.xz]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from restore.config import load_config
from restore.data import resolve_files
from restore.errors import RestoreError
from restore.mix import data_files

LIMIT = 64 * 1024 * 1024  # the device tool's working tree (tracked files + carried folders)
REPO = Path(__file__).resolve().parents[2]


def plan(config_path: str, overrides: list[str]) -> dict[str, dict[str, list[str]]]:
    """``{corpus: {"train": [files], "dev": [files]}}`` of a config, globs expanded (files must exist)."""
    config = load_config(config_path, overrides)
    return {
        name: {split: resolve_files(patterns, f"data.corpora.{name}.{split}_files") for split, patterns in splits.items()}
        for name, splits in data_files(config.data).items()
    }


def copy_plan(files: dict[str, dict[str, list[str]]], dest: Path) -> list[Path]:
    """Make ``dest/<corpus>/<split>/`` hold exactly the planned files (copied when missing or of another size)."""
    copied: list[Path] = []
    for name, splits in files.items():
        for split in ("train", "dev"):
            folder = dest / name / split
            folder.mkdir(parents=True, exist_ok=True)
            wanted = {Path(f).name: Path(f) for f in splits.get(split, [])}
            if len(wanted) < len(splits.get(split, [])):
                raise RestoreError(f"corpus {name}: two {split} files share a name; rename one")
            for stale in folder.iterdir():
                if stale.name not in wanted:
                    stale.unlink() if stale.is_file() or stale.is_symlink() else shutil.rmtree(stale)
            for base, source in wanted.items():
                target = folder / base
                if not (target.is_file() and target.stat().st_size == source.stat().st_size):
                    shutil.copyfile(source, target)
                copied.append(target)
    for stale in dest.iterdir():  # corpora the config no longer names
        if stale.name not in files:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    return copied


def travelling_bytes(folders: list[Path]) -> tuple[int, int]:
    """(bytes of the files git sends, bytes of the files under ``folders``), as ``du -cb`` counts files."""
    # What the device tool sends: tracked files and untracked ones that git does not ignore.
    listed = ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    tracked = subprocess.run(listed, capture_output=True, check=True).stdout.split(b"\0")
    tracked_bytes = sum(os.path.getsize(REPO / os.fsdecode(p)) for p in tracked if p and (REPO / os.fsdecode(p)).is_file())
    carried = sum(p.stat().st_size for folder in folders if folder.is_dir() for p in folder.rglob("*") if p.is_file())
    return tracked_bytes, carried


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--to", default=".data", help="the git-ignored folder to fill (default .data)")
    parser.add_argument("--also", action="append", default=[], help="another carried folder to count (e.g. .whl)")
    parser.add_argument("overrides", nargs="*", help="config overrides, as for restore train")
    args = parser.parse_args(argv)
    try:
        files = plan(args.config, args.overrides)
        dest = Path(args.to)
        ignored = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", str(dest.resolve() / "x")], capture_output=True).returncode == 0
        if not ignored or dest.resolve() == REPO:
            raise RestoreError(f"{dest}: not a git-ignored folder of the checkout (it is emptied of other files: use .data)")
        dest.mkdir(parents=True, exist_ok=True)
        for path in copy_plan(files, dest):
            print(f"{path.stat().st_size:>12,}  {path}")
    except RestoreError as e:
        print(f"carry_data: error: {e}", file=sys.stderr)
        return 1
    tracked, carried = travelling_bytes([dest, *map(Path, args.also)])
    total = tracked + carried
    print(f"{tracked:>12,}  tracked (and untracked, not ignored) files\n{carried:>12,}  {', '.join([str(dest), *args.also])}\n"
          f"{total:>12,}  in all = {total / 2**20:.2f} MiB of the {LIMIT / 2**20:.0f} MiB that may travel")  # fmt: skip
    if total > LIMIT:
        print(f"carry_data: error: {total / 2**20:.2f} MiB is over the {LIMIT / 2**20:.0f} MiB limit: carry fewer shards", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
