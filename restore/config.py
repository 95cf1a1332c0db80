"""Experiment configs: typed dataclasses loaded from YAML, with ``key.sub=value`` overrides.

One YAML file per model size (``configs/tiny.yaml``, ``small.yaml``, ``base.yaml``) with
the sections ``data``, ``chunking``, ``tokenizer``, ``model``, ``lexicon`` and
``train``. Every key is checked: an unknown key, a value of the wrong type or an
out-of-range value is a :class:`~restore.errors.RestoreError` with one line that
names the key.

Training data is either one corpus (``data.train_files`` and ``data.dev_files``, or a hub
dataset) or a mix of named corpora with weights (``data.corpora``, see :class:`CorpusConfig`
and :mod:`restore.mix`); :func:`data_corpora` and :func:`data_files` say what a config uses.

Relative paths (data files, also each corpus's, ``cache_dir``, ``output_dir``, ``init_from``,
``tokenizer.path``) written *in a YAML file* resolve against the parent of the
folder holding that file, i.e. the repository root for ``configs/*.yaml``, so a
run does not depend on the current directory; paths given as command-line
overrides resolve against the current directory, like any shell argument.

>>> raw = {"data": {"train_files": ["wiki.jsonl"]}, "train": {"max_steps": 10}}
>>> cfg = load_config_dict(raw, overrides=["train.lr=3e-4", "model.d_model=64"])
>>> cfg.train.max_steps, cfg.train.lr, cfg.model.d_model
(10, 0.0003, 64)
>>> load_config_dict({**raw, "train": {"max_step": 10}})
Traceback (most recent call last):
restore.errors.RestoreError: <config>: unknown key 'train.max_step' (did you mean 'train.max_steps'?)
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Union, get_args, get_origin, get_type_hints

import yaml

from restore.chunking import ChunkConfig
from restore.errors import RestoreError

SCHEDULES = ("linear", "cosine", "constant")
SAVE_DTYPES = ("bf16", "fp32")
DEVICES = ("auto", "cpu", "cuda")


CORPUS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class CorpusConfig:
    """One named corpus of a training mix (``data.corpora``): its files and its weight, the
    corpus's share of the training pairs of every epoch (normalised; see :mod:`restore.mix`).
    ``max_train_articles`` caps this corpus alone (default: the data section's); the other data
    settings (``max_dev_articles``, ``dev_holdout``, ``text_field``) apply to every corpus."""

    name: str = ""
    train_files: list[str] = field(default_factory=list)  # json/jsonl(.xz/.gz)/parquet/txt; globs ok
    dev_files: list[str] = field(default_factory=list)
    weight: float = 1.0
    max_train_articles: int | None = None  # None: data.max_train_articles

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name is missing (each corpus needs a name, e.g. wiki)")
        if not CORPUS_NAME.fullmatch(self.name):
            raise ValueError(f"name must be letters, digits, '_' or '-' (a folder name), got {self.name!r}")
        if not self.train_files:
            raise ValueError("train_files is empty: give the corpus's training files")
        if not (self.weight > 0 and math.isfinite(self.weight)):
            raise ValueError(f"weight must be a number > 0, got {self.weight!r}")
        if self.max_train_articles is not None and self.max_train_articles < 1:
            raise ValueError(f"max_train_articles must be >= 1, got {self.max_train_articles!r}")


@dataclass(frozen=True)
class DataConfig:
    """Where articles come from: local files (globs), a mix of named corpora, or, for online users, a hub dataset id."""

    train_files: list[str] = field(default_factory=list)  # json/jsonl(.xz/.gz)/parquet/txt; globs ok
    dev_files: list[str] = field(default_factory=list)
    corpora: list[CorpusConfig] = field(default_factory=list)  # a mix instead of train_files/dev_files
    hub_dataset: str | None = None  # e.g. wikimedia/wikipedia (downloads: never used by tests)
    hub_config: str | None = None  # e.g. 20231101.en
    hub_split: str = "train"
    text_field: str = "text"
    max_train_articles: int | None = None  # first N articles only (None = all); per corpus in a mix
    max_dev_articles: int | None = None
    dev_holdout: int = 0  # without dev_files: hold out the last N training articles as dev (per corpus)
    num_proc: int = 0  # processes for data preparation (0 = all CPU cores)
    cache_dir: str = "cache"  # prepared pairs, keyed by data + chunking + corruption spec

    def __post_init__(self) -> None:
        if self.corpora:
            given = [k for k in ("train_files", "dev_files", "hub_dataset") if getattr(self, k)]
            if given:
                raise ValueError(f"data.corpora and data.{given[0]} are both set: name the data one way (each corpus has its own train_files and dev_files)")
            names = [c.name for c in self.corpora]
            twice = next((n for n in names if names.count(n) > 1), None)
            if twice:
                raise ValueError(f"data.corpora: the name {twice!r} is used twice")
        elif not self.train_files and not self.hub_dataset:
            raise ValueError("data.train_files is empty and no data.hub_dataset is set: give training data (or data.corpora)")
        if self.train_files and self.hub_dataset:
            raise ValueError("data.train_files and data.hub_dataset are both set: choose one")
        for cap in [c.max_train_articles or self.max_train_articles for c in self.corpora] or [self.max_train_articles]:
            if self.dev_holdout and cap is not None and self.dev_holdout >= cap:
                raise ValueError(f"data.dev_holdout ({self.dev_holdout}) must be smaller than data.max_train_articles ({cap})")
        _check_min(self, "data", ("max_train_articles", 1), ("max_dev_articles", 1), ("dev_holdout", 0), ("num_proc", 0))


@dataclass(frozen=True)
class ModelConfig:
    """Size of a from-scratch model, or ``init_from`` an existing seq2seq checkpoint directory."""

    d_model: int = 256
    encoder_layers: int = 6
    decoder_layers: int = 4
    attention_heads: int = 4
    ffn_dim: int = 1024
    dropout: float = 0.1
    max_position_embeddings: int = 512
    init_from: str | None = None

    def __post_init__(self) -> None:
        for name in ("d_model", "encoder_layers", "decoder_layers", "attention_heads", "ffn_dim", "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"model.{name} must be a positive integer, got {value!r}")
        if self.d_model % self.attention_heads:
            raise ValueError(f"model.d_model ({self.d_model}) must be divisible by model.attention_heads ({self.attention_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout!r}")


@dataclass(frozen=True)
class TokenizerConfig:
    """The subword vocabulary, trained on sources and targets of a sample of pairs (or reused)."""

    vocab_size: int = 16000
    sample_pairs: int = 50000  # pairs whose source and target go into sentencepiece
    path: str | None = None  # reuse the tokenizer of this directory instead of training one

    def __post_init__(self) -> None:
        _check_min(self, "tokenizer", ("vocab_size", 64), ("sample_pairs", 1))


@dataclass(frozen=True)
class LexiconConfig:
    """``lexicon.json.gz`` beside the model: surface forms per stem, from a sample of targets."""

    sample_pairs: int = 50000
    min_count: int = 2
    max_entries: int = 100000

    def __post_init__(self) -> None:
        _check_min(self, "lexicon", ("sample_pairs", 1), ("min_count", 1), ("max_entries", 1))


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation loop, evaluation, checkpoints and the exported model."""

    output_dir: str = "runs/model"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    cpu_threads: int = 0  # torch CPU threads (0 = torch's default); 1 is fastest on a busy machine
    max_steps: int = 1000  # optimizer steps; the LR schedule spans exactly these (derived instead under time_budget_minutes)
    stop_after_steps: int | None = None  # stop early (checkpoint + export), resume later with --resume
    time_limit_minutes: float | None = None  # likewise stop once this session has run this long
    # Train for this long (setup included): once the step rate is measured (steps rate_warmup_steps
    # to rate_warmup_steps + rate_steps), max_steps is derived so that the LR schedule ends when the
    # budget ends, less budget_reserve_minutes for the final evaluation and export.
    time_budget_minutes: float | None = None
    budget_reserve_minutes: float = 0.5
    rate_warmup_steps: int = 20  # steps not timed (compilation, allocator and cache warm-up)
    rate_steps: int = 30  # steps timed to measure the step rate
    batch_tokens: int = 8192  # per device and micro-batch: batch size x longest (source or target) length
    grad_accum: int = 1
    lr: float = 1e-3
    schedule: str = "linear"  # linear | cosine | constant (after warmup)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0  # decay ends at lr * min_lr_ratio
    weight_decay: float = 0.01
    adam_beta2: float = 0.98
    grad_clip: float = 1.0  # 0 = no clipping
    label_smoothing: float = 0.0
    eval_every: int = 0  # steps (0 = only at the end)
    eval_pairs: int = 512  # dev pairs for the loss
    eval_bleu_pairs: int = 64  # dev pairs translated greedily for BLEU (0 = none)
    save_every: int = 0  # checkpoint every N steps (0 = only when stopping)
    export_every: int = 0  # also export a usable model directory every N steps (0 = only at the end)
    log_every: int = 50
    keep_checkpoint: bool = False  # keep the resumable checkpoint after the run completes
    save_dtype: str = "bf16"  # bf16 | fp32 weights in the exported model
    max_shard_size: str | None = None  # e.g. "20MB": split model.safetensors into shards
    # torch.compile the training step (forward + loss; backward through AOTAutograd), dynamic shapes;
    # a failed compilation falls back to eager steps with one log line. compile_backend: any
    # torch.compile backend ("aot_eager" traces without generating code: seconds on the CPU).
    compile: bool = False
    compile_backend: str = "inductor"

    def __post_init__(self) -> None:
        _check_min(
            self, "train",
            ("seed", 0), ("cpu_threads", 0), ("max_steps", 1), ("stop_after_steps", 1), ("batch_tokens", 16), ("grad_accum", 1),
            ("rate_warmup_steps", 0), ("rate_steps", 1),
            ("warmup_steps", 0), ("eval_every", 0), ("eval_pairs", 1), ("eval_bleu_pairs", 0),
            ("save_every", 0), ("export_every", 0), ("log_every", 1),
        )  # fmt: skip
        _check_choice("train.device", self.device, DEVICES)
        _check_choice("train.schedule", self.schedule, SCHEDULES)
        _check_choice("train.save_dtype", self.save_dtype, SAVE_DTYPES)
        for name in ("time_limit_minutes", "time_budget_minutes"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ValueError(f"train.{name} must be > 0, got {getattr(self, name)!r}")
        if not self.budget_reserve_minutes >= 0:
            raise ValueError(f"train.budget_reserve_minutes must be >= 0, got {self.budget_reserve_minutes!r}")
        if not self.lr > 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        for name in ("label_smoothing", "adam_beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"train.{name} must be in [0, 1), got {getattr(self, name)!r}")
        for name in ("weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole training run."""

    data: DataConfig
    chunking: ChunkConfig = field(default_factory=ChunkConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lexicon: LexiconConfig = field(default_factory=LexiconConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


SECTIONS: dict[str, type] = get_type_hints(ExperimentConfig)
# Keys whose values are file-system paths (resolved as described in the module docstring).
PATH_KEYS = frozenset(
    {"data.train_files", "data.dev_files", "data.cache_dir", "train.output_dir", "model.init_from", "tokenizer.path"}
)
CORPUS_PATH_KEYS = ("train_files", "dev_files")  # the path keys of each data.corpora entry
# An override of one of these replaces the training data that the config file names the other way.
SINGLE_DATA_KEYS = ("data.train_files", "data.dev_files", "data.hub_dataset")


# --- loading ---------------------------------------------------------------------------------
def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Read a YAML config file and apply ``key.sub=value`` overrides (values are YAML scalars)."""
    p = Path(path)
    if not p.is_file():
        raise RestoreError(f"{p}: no such config file" if not p.exists() else f"{p}: not a config file")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise RestoreError(f"{p}: invalid YAML ({' '.join(str(e).split())})") from None
    if raw is None:
        raw = {}
    return load_config_dict(raw, overrides, name=str(p), root=p.resolve().parent.parent)


def load_config_dict(
    raw: dict, overrides: Iterable[str] = (), name: str = "<config>", root: str | os.PathLike | None = None
) -> ExperimentConfig:
    """Build and validate an :class:`ExperimentConfig` from a nested dict (as read from YAML).

    Relative paths in ``raw`` resolve against ``root`` (kept as written when None);
    relative paths in ``overrides`` against the current directory. ``data.corpora.NAME.KEY=value``
    sets a key of the corpus NAME. An override naming the training data one way (``data.corpora``,
    or ``data.train_files``/``dev_files``/``hub_dataset``) drops what the file names the other way.

    >>> raw = {"data": {"corpora": [{"name": "wiki", "train_files": "w.jsonl"}, {"name": "prose", "train_files": "p.jsonl"}]}}
    >>> [(c.name, c.weight) for c in load_config_dict(raw, ["data.corpora.prose.weight=0.4"]).data.corpora]
    [('wiki', 1.0), ('prose', 0.4)]
    >>> load_config_dict(raw, ["data.train_files=a.jsonl"]).data.corpora
    []
    """
    if not isinstance(raw, dict):
        raise RestoreError(f"{name}: expected a mapping of sections ({', '.join(SECTIONS)}), got {type(raw).__name__}")
    tree = {section: dict(values) if isinstance(values, dict) else values for section, values in raw.items()}
    tree.setdefault("data", {})
    if root is not None:
        map_paths(tree, lambda v: _resolve(v, Path(root)))
    origin: dict[str, str] = {}
    for item in overrides:
        key, value = _parse_override(item)
        section, _, sub = key.partition(".")
        if not isinstance(tree.get(section, {}), dict):
            raise RestoreError(f"{name}: section '{section}' must be a mapping")
        if sub.startswith("corpora."):
            _set_corpus_key(tree, sub.split(".")[1:], value, item)
        else:
            tree.setdefault(section, {})[sub] = value
            map_paths({section: {sub: value}}, lambda v: _resolve(v, Path.cwd()), into=tree)
        origin[key] = f"override {item}"
    data = tree.get("data")
    if isinstance(data, dict):
        if "data.corpora" in origin and not any(k in origin for k in SINGLE_DATA_KEYS):
            for key in SINGLE_DATA_KEYS:
                data.pop(key.split(".")[1], None)
        elif any(k in origin for k in SINGLE_DATA_KEYS) and "data.corpora" not in origin:
            data.pop("corpora", None)
    return _build(tree, name, origin)


def _set_corpus_key(tree: dict, parts: list[str], value: Any, item: str) -> None:
    """``data.corpora.NAME.KEY=value``: set KEY of the corpus named NAME (a copy of its mapping)."""
    corpora = tree["data"].get("corpora")
    if not isinstance(corpora, list):
        raise RestoreError(f"override {item!r}: the config names no data.corpora")
    name, key = parts
    names = [c.get("name") if isinstance(c, dict) else None for c in corpora]
    if name not in names:
        raise RestoreError(f"override {item!r}: no corpus named {name!r} in data.corpora ({', '.join(map(str, names))})")
    i = names.index(name)
    if key in CORPUS_PATH_KEYS:
        value = _map_value(value, lambda v: _resolve(v, Path.cwd()))
    tree["data"]["corpora"] = [*corpora[:i], {**corpora[i], key: value}, *corpora[i + 1 :]]


def _parse_override(item: str) -> tuple[str, Any]:
    """``"train.lr=3e-4"`` -> ``("train.lr", 0.0003)``; the value is read as YAML.

    >>> _parse_override("data.train_files=[a.jsonl, b.jsonl]")
    ('data.train_files', ['a.jsonl', 'b.jsonl'])
    >>> _parse_override("data.corpora.prose.weight=0.4")
    ('data.corpora.prose.weight', 0.4)
    """
    key, sep, text = item.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not sep or not all(parts) or not (len(parts) == 2 or (len(parts) == 4 and parts[:2] == ["data", "corpora"])):
        raise RestoreError(f"override {item!r}: expected section.key=value, e.g. train.max_steps=100 (or data.corpora.NAME.key=value)")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text  # not YAML: keep the text as a string
    if isinstance(value, str) and _looks_like_number(value):
        value = float(value)  # YAML 1.1 reads "3e-4" as a string
    return key, value


def _looks_like_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity")


def map_paths(tree: dict, fn, into: dict | None = None) -> None:
    """Apply ``fn`` to every path value of a config tree (:data:`PATH_KEYS` and each corpus's
    files), in place, or writing the results into ``into``."""
    target = tree if into is None else into
    for key in PATH_KEYS:
        section, sub = key.split(".")
        values = tree.get(section)
        if isinstance(values, dict) and sub in values:
            target[section][sub] = _map_value(values[sub], fn)
    data = tree.get("data")
    corpora = data.get("corpora") if isinstance(data, dict) else None
    if isinstance(corpora, list):
        target["data"]["corpora"] = [
            {**c, **{k: _map_value(c[k], fn) for k in CORPUS_PATH_KEYS if k in c}} if isinstance(c, dict) else c for c in corpora
        ]


def _map_value(value: Any, fn) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [fn(v) if isinstance(v, str) else v for v in value]
    return value


def _resolve(value: str, root: Path) -> str:
    if "://" in value or not value:
        return value
    p = Path(value).expanduser()
    return str(p) if p.is_absolute() else os.path.normpath(root / p)


def _build(tree: dict, name: str, origin: dict[str, str]) -> ExperimentConfig:
    unknown = [s for s in tree if s not in SECTIONS]
    if unknown:
        raise RestoreError(f"{name}: unknown section '{unknown[0]}'{_suggest(unknown[0], SECTIONS)}")
    sections = {}
    for section, cls in SECTIONS.items():
        values = tree.get(section, {})
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise RestoreError(f"{name}: section '{section}' must be a mapping, got {values!r}")
        sections[section] = _build_section(section, cls, values, name, origin)
    return ExperimentConfig(**sections)


def _build_section(section: str, cls: type, values: dict, name: str, origin: dict[str, str]) -> Any:
    hints = get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        full = f"{section}.{key}"
        where = origin.get(full, name)
        if key not in hints:
            raise RestoreError(f"{where}: unknown key '{full}'{_suggest(key, hints, section)}")
        try:
            kwargs[key] = _coerce(value, hints[key], full)
        except ValueError as e:
            raise RestoreError(f"{where}: {e}") from None
    try:
        return cls(**kwargs)
    except ValueError as e:
        message = str(e)
        if not message.startswith(section + "."):
            message = f"{section}.{message}"
        key = message.split()[0].rstrip(":")
        raise RestoreError(f"{origin.get(key, name)}: {message}") from None


def _suggest(word: str, choices: Iterable[str], section: str | None = None) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    if not close:
        return ""
    return f" (did you mean '{section + '.' if section else ''}{close[0]}'?)"


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against a field's type hint (int, float, str, bool, ``X | None``, ``list[str]``).

    >>> _coerce(3, float, "train.lr"), _coerce("a.jsonl", list[str], "data.train_files")
    (3.0, ['a.jsonl'])
    >>> _coerce("fast", int, "train.max_steps")
    Traceback (most recent call last):
    ValueError: train.max_steps must be an integer, got 'fast'
    """
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if value is None and len(args) < len(get_args(hint)):
            return None
        return _coerce(value, args[0], key)
    if get_origin(hint) is list:
        (item,) = get_args(hint)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # a single file is a list of one
        if not isinstance(value, list):
            raise ValueError(f"{key} must be a list, got {value!r}")
        if dataclasses.is_dataclass(item):  # entries are named by their name (data.corpora.wiki), else by position
            keys = [f"{key}.{v['name']}" if isinstance(v, dict) and isinstance(v.get("name"), str) else f"{key}[{i}]" for i, v in enumerate(value)]
            return [_coerce(v, item, k) for v, k in zip(value, keys)]
        return [_coerce(v, item, key) for v in value]
    if dataclasses.is_dataclass(hint):
        return _build_entry(hint, value, key)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{key} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"{key} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, str) and _looks_like_number(value):
            return float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"{key} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"{key} must be a string, got {value!r}")
    raise TypeError(f"{key}: unsupported config type {hint!r}")  # a bug in a dataclass, not user input


def _build_entry(cls: type, value: Any, key: str) -> Any:
    """A mapping as a nested config dataclass (an entry of ``data.corpora``); errors name ``key.field``.

    >>> _build_entry(CorpusConfig, {"name": "wiki", "train_files": "w.jsonl", "weigth": 2}, "data.corpora.wiki")
    Traceback (most recent call last):
    ValueError: unknown key 'data.corpora.wiki.weigth' (did you mean 'data.corpora.wiki.weight'?)
    """
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be a mapping of {', '.join(f.name for f in dataclasses.fields(cls))}, got {value!r}")
    hints = get_type_hints(cls)
    unknown = [k for k in value if k not in hints]
    if unknown:
        raise ValueError(f"unknown key '{key}.{unknown[0]}'{_suggest(str(unknown[0]), hints, key)}")
    kwargs = {k: _coerce(v, hints[k], f"{key}.{k}") for k, v in value.items()}
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise ValueError(f"{key}.{e}") from None


def _check_min(obj: Any, section: str, *limits: tuple[str, int]) -> None:
    for name, low in limits:
        value = getattr(obj, name)
        if value is not None and value < low:
            raise ValueError(f"{section}.{name} must be >= {low}, got {value!r}")


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{key} must be one of {', '.join(choices)}; got {value!r}")


# --- writing ---------------------------------------------------------------------------------
def config_to_dict(config: ExperimentConfig) -> dict:
    """Plain nested dict of a config (for YAML/JSON; loads back with :func:`load_config_dict`).

    >>> cfg = load_config_dict({"data": {"train_files": ["a.jsonl"]}})
    >>> load_config_dict(config_to_dict(cfg)) == cfg
    True
    """
    return dataclasses.asdict(config)
