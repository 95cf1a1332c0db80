"""A config as a run and its model record it: no path of the machine that trained it.

``train_config.yaml`` (in the run directory, read back by ``--resume``) and the ``config`` of a
model's ``restore.json`` are :func:`portable_config_dict`: data files relative to the repository
(or to the folder beside it, such as ``../shared``), else by name, and no output or cache folder
(:data:`MACHINE_KEYS`). :func:`config_differences` compares configs in that form.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import yaml

from restore.config import SECTIONS, ExperimentConfig, config_to_dict, load_config_dict, map_paths  # load_config_dict: doctests


def dump_config(config: ExperimentConfig | dict) -> str:
    """The config as a run and its model record it: YAML of :func:`portable_config_dict`."""
    return yaml.safe_dump(portable_config_dict(config), sort_keys=False, allow_unicode=True)


REPO_ROOT = Path(__file__).resolve().parents[1]
# Where one machine kept its files: never recorded in a run's or a model's config.
MACHINE_KEYS = ("data.cache_dir", "train.output_dir")


def portable_path(value: str, root: Path = REPO_ROOT) -> str:
    """A path as a model directory records it: relative to the repository ``root`` (or to the folder
    beside it, such as ``../shared``), else the file's name alone; never an absolute path of the
    machine that trained it. Relative paths, URLs and hub ids are kept as written.

    >>> portable_path("/srv/gpu/restore/.data/train-00.jsonl.xz", root=Path("/srv/gpu/restore"))
    '.data/train-00.jsonl.xz'
    >>> portable_path("/srv/gpu/shared/data/wiki/dev.jsonl.xz", root=Path("/srv/gpu/restore"))
    '../shared/data/wiki/dev.jsonl.xz'
    >>> portable_path("/home/ada/corpus/part-*.parquet", root=Path("/srv/gpu/restore"))
    'part-*.parquet'
    >>> portable_path("wikimedia/wikipedia"), portable_path("../shared/x.jsonl")
    ('wikimedia/wikipedia', '../shared/x.jsonl')
    """
    if not value or "://" in value or not os.path.isabs(value):
        return value
    path = Path(os.path.normpath(value))
    for base, prefix in ((root, ""), (root.parent, "..")):
        try:
            relative = path.relative_to(base)
        except ValueError:
            continue
        return os.path.join(prefix, relative) if prefix else str(relative)
    return path.name


def portable_config_dict(config: ExperimentConfig | dict, root: Path = REPO_ROOT) -> dict:
    """The config a run writes (``train_config.yaml``) and a model keeps (``restore.json``): paths
    made :func:`portable_path`, and no :data:`MACHINE_KEYS` (output and cache folders).

    >>> cfg = load_config_dict({"data": {"train_files": ["/r/.data/a.jsonl"], "cache_dir": "/tmp/c"}})
    >>> d = portable_config_dict(cfg, root=Path("/r"))
    >>> d["data"]["train_files"], "cache_dir" in d["data"], "output_dir" in d["train"]
    (['.data/a.jsonl'], False, False)
    >>> portable_config_dict(d, root=Path("/r")) == d
    True
    """
    tree = config_to_dict(config) if isinstance(config, ExperimentConfig) else {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    for key in MACHINE_KEYS:
        section, sub = key.split(".")
        if isinstance(tree.get(section), dict):
            tree[section].pop(sub, None)
    map_paths(tree, lambda v: portable_path(v, root))
    return tree


def config_differences(a: ExperimentConfig | dict, b: ExperimentConfig | dict, ignore: Iterable[str] = ()) -> list[str]:
    """Dotted keys whose values differ between two configs (``ignore`` lists keys to skip), compared
    as a run records them (:func:`portable_config_dict`), so a saved ``train_config.yaml`` compares
    with the config of its ``--resume``.

    >>> base = load_config_dict({"data": {"train_files": "a"}})
    >>> config_differences(base, load_config_dict({"data": {"train_files": "a"}, "train": {"lr": 0.1}}))
    ['train.lr']
    """
    da, db = portable_config_dict(a), portable_config_dict(b)
    skip = set(ignore)
    return [
        f"{section}.{key}"
        for section in sorted(set(da) | set(db), key=list(SECTIONS).index)
        for key in dict.fromkeys([*da.get(section, {}), *db.get(section, {})])
        if f"{section}.{key}" not in skip and da.get(section, {}).get(key) != db.get(section, {}).get(key)
    ]
