"""Copy the data files a config trains on into a git-ignored folder that travels to a lent GPU machine.

Each corpus of the config (:func:`restore.mix.data_files`; one corpus for ``data.train_files``)
gets ``DEST/<corpus>/train/`` and ``DEST/<corpus>/dev/`` holding exactly its files (others
there are removed, so the GPU script, which trains on whatever it finds there, cannot pick up a
stale shard). Then the size of everything that travels is measured like ``du -cb``: the
tracked files, ``DEST`` and the folders given with ``--also`` (the wheels), against the device
tool's 64 MiB; over it, the exit status is 1.

    python scripts/gpu/carry_data.py --config configs/small.yaml --to .data --also .whl
    python scripts/gpu/carry_data.py --config configs/small.yaml --to .data data.corpora.wiki.train_files=[../shared/data/wiki/train-05.jsonl.xz]

On the GPU machine, the scripts read the layout back (``scripts/gpu/common.sh``): ``--overrides-from
DEST`` prints, one a line, the ``restore train`` overrides that make each corpus of the config read
what ``DEST/<corpus>/`` holds (``data.corpora.NAME.train_files``/``dev_files``, or
``data.train_files``/``dev_files`` for a one-corpus config; the weights stay the config's), and on
stderr what it found; ``--unseen-by MODEL`` leaves out (and names) the shards MODEL's lineage has
trained on. ``scripts/gpu/prepare_continue.py`` copies and measures with the functions here.

    python scripts/gpu/carry_data.py --config configs/small.yaml --overrides-from .data --unseen-by models/restore-small
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # this checkout's restore, wherever the script runs from

from restore.config import DataConfig, load_config  # noqa: E402
from restore.data import resolve_files  # noqa: E402
from restore.errors import RestoreError  # noqa: E402
from restore.lineage import has_seen, local_shard, read_lineage  # noqa: E402
from restore.mix import data_corpora, data_files  # noqa: E402

LIMIT = 64 * 1024 * 1024  # the device tool's working tree (tracked files + carried folders)


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
            try:
                copied += fill_folder(dest / name / split, splits.get(split, []))
            except RestoreError as e:
                raise RestoreError(f"corpus {name}: {e}") from None
    for stale in dest.iterdir():  # corpora the config no longer names
        if stale.name not in files:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    return copied


def fill_folder(folder: Path, files: list[str] | list[Path]) -> list[Path]:
    """Make ``folder`` hold exactly ``files`` (by name; copied when missing or of another size, others removed)."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {Path(f).name: Path(f) for f in files}
    if len(wanted) < len(files):
        raise RestoreError(f"two files for {folder} share a name; rename one")
    for stale in folder.iterdir():
        if stale.name not in wanted:
            stale.unlink() if stale.is_file() or stale.is_symlink() else shutil.rmtree(stale)
    for base, source in wanted.items():
        target = folder / base
        if not (target.is_file() and target.stat().st_size == source.stat().st_size):
            shutil.copyfile(source, target)
    return [folder / base for base in wanted]


def check_carry_folder(dest: Path, repo: Path = REPO) -> None:
    """Refuse a folder that is not git-ignored inside ``repo``: filling it removes its other files."""
    ignored = subprocess.run(["git", "-C", str(repo), "check-ignore", "-q", str(dest.resolve() / "x")], capture_output=True).returncode == 0
    if not ignored or dest.resolve() == repo.resolve():
        raise RestoreError(f"{dest}: not a git-ignored folder of the checkout (it is emptied of other files: use .data)")


def travelling_bytes(folders: list[Path], repo: Path = REPO) -> tuple[int, int]:
    """(bytes of the files git sends, bytes of the files under ``folders``), as ``du -cb`` counts files."""
    # What the device tool sends: tracked files and untracked ones that git does not ignore.
    listed = ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    tracked = subprocess.run(listed, capture_output=True, check=True).stdout.split(b"\0")
    tracked_bytes = sum(os.path.getsize(repo / os.fsdecode(p)) for p in tracked if p and (repo / os.fsdecode(p)).is_file())
    carried = sum(p.stat().st_size for folder in folders if folder.is_dir() for p in folder.rglob("*") if p.is_file())
    return tracked_bytes, carried


def report_carry(folders: list[Path], repo: Path = REPO, limit: int = LIMIT, prog: str = "carry_data") -> int:
    """Print what travels (tracked files, ``folders``, the sum against ``limit``); 1 with one line on stderr when over it."""
    tracked, carried = travelling_bytes(folders, repo)
    total = tracked + carried
    print(f"{tracked:>12,}  tracked (and untracked, not ignored) files\n{carried:>12,}  {', '.join(map(str, folders))}\n"
          f"{total:>12,}  in all = {total / 2**20:.2f} MiB of the {limit / 2**20:.0f} MiB that may travel")  # fmt: skip
    if total > limit:
        print(f"{prog}: error: {total / 2**20:.2f} MiB is over the {limit / 2**20:.0f} MiB limit: carry fewer shards", file=sys.stderr)
        return 1
    return 0


def carried_overrides(data: DataConfig, dest: Path, lineage: list | None = None) -> tuple[list[str], list[str]]:
    """The ``restore train`` overrides that make each corpus of ``data`` read what ``dest/<corpus>/``
    holds (as :func:`copy_plan` lays it out), and lines that say what was found. A corpus without a
    folder keeps the config's files; a folder the config does not name is not used. With a
    ``lineage`` (continued training), train files it has seen are left out, and a corpus left with
    none is an error.
    """
    overrides: list[str] = []
    lines: list[str] = []
    corpora = data_corpora(data)
    for corpus in corpora:
        folder = dest / corpus.name
        if not folder.is_dir():
            lines.append(f"{corpus.name}: no {folder}: the config's files")
            continue
        train = sorted(p for p in (folder / "train").glob("*") if p.is_file())
        dev = sorted(p for p in (folder / "dev").glob("*") if p.is_file())
        seen = [p for p in train if lineage is not None and has_seen(local_shard(p), lineage)]
        train = [p for p in train if p not in seen]
        if not train:
            raise RestoreError(f"{folder}/train: no training file{' the start model has not seen' if seen else ''} "
                               "(run scripts/gpu/prepare_continue.py or carry_data.py)")  # fmt: skip
        key = f"data.corpora.{corpus.name}" if data.corpora else "data"
        overrides.append(f"{key}.train_files=[{','.join(map(str, train))}]")
        if dev:
            overrides.append(f"{key}.dev_files=[{','.join(map(str, dev))}]")
        mib = sum(p.stat().st_size for p in train) / 2**20
        lines.append(f"{corpus.name} (weight {corpus.weight:g}): {len(train)} train file(s), {mib:.1f} MiB: "
                     f"{', '.join(p.name for p in train)}; dev: {', '.join(p.name for p in dev) or 'none'}"
                     + (f"; seen by the start model (not used): {', '.join(p.name for p in seen)}" if seen else ""))  # fmt: skip
    names = {c.name for c in corpora}
    unused = sorted(p.name for p in dest.iterdir() if p.is_dir() and p.name not in names) if dest.is_dir() else []
    if unused:
        lines.append(f"not corpora of this config (not used): {', '.join(unused)}")
    return overrides, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--to", default=".data", help="the git-ignored folder to fill (default .data)")
    parser.add_argument("--also", action="append", default=[], help="another carried folder to count (e.g. .whl)")
    parser.add_argument("--overrides-from", metavar="DIR", help="copy nothing: print the restore train overrides for what DIR holds")
    parser.add_argument("--unseen-by", metavar="MODEL", help="with --overrides-from: leave out the shards MODEL's lineage has seen")
    parser.add_argument("overrides", nargs="*", help="config overrides, as for restore train")
    args = parser.parse_args(argv)
    try:
        if args.overrides_from:
            return print_overrides(args)
        files = plan(args.config, args.overrides)
        dest = Path(args.to)
        check_carry_folder(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for path in copy_plan(files, dest):
            print(f"{path.stat().st_size:>12,}  {path}")
    except RestoreError as e:
        print(f"carry_data: error: {e}", file=sys.stderr)
        return 1
    return report_carry([dest, *map(Path, args.also)])


def print_overrides(args) -> int:
    """``--overrides-from``: the overrides on stdout, one a line; what was found on stderr."""
    lineage = None
    if args.unseen_by:
        lineage = read_lineage(args.unseen_by)
    overrides, lines = carried_overrides(load_config(args.config, args.overrides).data, Path(args.overrides_from), lineage)
    for line in lines:
        print(f"data: {line}", file=sys.stderr)
    print("\n".join(overrides))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
