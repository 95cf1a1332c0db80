"""Self-describing model directories: ``save_pretrained`` files plus our ``restore.json``.

A restore model directory holds:

- ``config.json`` + ``model.safetensors`` (``save_pretrained``, loadable with
  ``AutoModelForSeq2SeqLM.from_pretrained``);
- ``tokenizer.json`` + ``tokenizer_config.json`` (``AutoTokenizer.from_pretrained``);
- ``restore.json``: the corruption spec version and chunking settings the model
  was trained with, plus how it was trained (data, steps, tokens, time, device,
  dev metrics) and its lineage (every run that made it, :mod:`restore.lineage`);
- ``lexicon.json.gz`` (optional): surface forms per stem, see :mod:`restore.lexicon`.

:func:`read_model_info` validates a directory (:func:`resolve_model`: the one a run uses);
:func:`read_max_positions`, :func:`load_tokenizer` and :func:`load_lexicon` load what a
:class:`~restore.infer.Restorer` needs besides the weights (those are the backend's).

Training also writes ``checkpoint/`` into the run directory (:func:`save_checkpoint`):
model, optimizer and scheduler states, where the run stands, and every rank's RNG
states, so that ``--resume`` continues exactly (:func:`load_checkpoint`). torch is
imported only by these functions (reading a model directory needs none of it).
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from restore.chunking import ChunkConfig
from restore.corrupt import SPEC_VERSION
from restore.errors import RestoreError
from restore.textio import usual_permissions, write_text_atomic

RESTORE_JSON = "restore.json"
CHECKPOINT = "checkpoint"
FORMAT = "restore-model/1"
DEFAULT_MODEL_NAME = "restore-small"
REQUIRED_FILES = ("config.json", "tokenizer.json", RESTORE_JSON)


@dataclass
class ModelInfo:
    """What ``restore.json`` says about a model directory."""

    path: Path
    chunking: ChunkConfig
    spec_version: str = SPEC_VERSION
    training: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


def write_restore_json(directory: str | Path, chunking: ChunkConfig, training: dict, **extra) -> None:
    """Write ``restore.json`` into a model directory (atomically)."""
    payload = {
        "format": FORMAT,
        "corruption": {"spec_version": SPEC_VERSION},
        "chunking": {"max_source_words": chunking.max_source_words},
        "training": training,
        **extra,
    }
    write_text_atomic(Path(directory) / RESTORE_JSON, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def read_model_info(directory: str | Path) -> ModelInfo:
    """Validate a model directory and read its ``restore.json`` (one clear error if it is not ours)."""
    path = Path(directory)
    if not path.exists():
        raise RestoreError(f"{path}: model directory does not exist")
    if not path.is_dir():
        raise RestoreError(f"{path}: is not a model directory")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise RestoreError(f"{path}: not a complete restore model (missing {', '.join(missing)})")
    if not any(path.glob("*.safetensors")):
        raise RestoreError(f"{path}: not a complete restore model (no *.safetensors weights)")
    check_model_files(path)
    try:
        payload = json.loads((path / RESTORE_JSON).read_text(encoding="utf-8"))
        if payload.get("format") != FORMAT:
            raise ValueError(f"format is {payload.get('format')!r}, expected {FORMAT!r}")
        chunking = ChunkConfig(**_chunking_fields(payload["chunking"]))
        spec = payload["corruption"]["spec_version"]
    except (ValueError, KeyError, TypeError) as e:
        raise RestoreError(f"{path}/{RESTORE_JSON}: not a restore model description ({e})") from None
    if spec != SPEC_VERSION:
        raise RestoreError(f"{path}: trained for corruption spec {spec!r}, this restore implements {SPEC_VERSION!r}")
    known = {"format", "corruption", "chunking", "training"}
    return ModelInfo(path, chunking, spec, payload.get("training", {}), {k: v for k, v in payload.items() if k not in known})


def _chunking_fields(raw: dict) -> dict:
    """The chunking settings of ``restore.json``, older files' ``max_source_tokens`` included.

    >>> _chunking_fields({"max_source_tokens": 48})
    {'max_source_words': 48}
    """
    if not isinstance(raw, dict):
        raise TypeError(f"chunking must be a mapping, got {raw!r}")
    return {LEGACY_CHUNKING_KEYS.get(key, key): value for key, value in raw.items()}


LEGACY_CHUNKING_KEYS = {"max_source_tokens": "max_source_words"}


# JSON files transformers reads from a model directory (each checked when present).
JSON_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def check_model_files(directory: str | Path) -> None:
    """One clear error naming the file if a model file is truncated or corrupt.

    Every JSON file must parse and every ``*.safetensors`` header must match the file's size
    (what a copy cut short breaks), before transformers reads them with long tracebacks or
    messages that blame another file.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "config.json").write_text('{"d_model": 2')
    >>> check_model_files(d)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    restore.errors.RestoreError: .../config.json: corrupt or truncated JSON (Expecting ',' delimiter: line 1 column 14 (char 13))
    """
    from safetensors import SafetensorError, safe_open

    path = Path(directory)
    for name in JSON_FILES:
        file = path / name
        if not file.is_file():
            continue
        try:
            json.loads(file.read_bytes())
        except (ValueError, OSError) as e:  # UnicodeDecodeError is a ValueError
            raise RestoreError(f"{file}: corrupt or truncated JSON ({str(e).splitlines()[0]})") from None
    for file in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(file, framework="numpy"):  # reads the header only; no torch import
                pass
        except (SafetensorError, OSError) as e:
            raise RestoreError(f"{file}: corrupt or truncated weights ({str(e).splitlines()[0]})") from None


def default_model_dir() -> Path:
    """The model used when none is given: ``$RESTORE_MODEL``, else the shipped ``restore-small``.

    The shipped model is the repository's ``models/restore-small``; ``pip install`` installs it
    with the package as ``restore.models`` (see ``pyproject.toml``), so it is found from any
    working directory, whether restore runs from a checkout or from an installed package.
    """
    if os.environ.get("RESTORE_MODEL"):
        return Path(os.environ["RESTORE_MODEL"])
    candidates = [Path(__file__).resolve().parents[1] / "models" / DEFAULT_MODEL_NAME]  # a checkout
    from importlib.util import find_spec

    try:  # the package data folder(s) of restore.models, without importing anything
        spec = find_spec("restore.models")
    except (ImportError, ValueError):
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidates.append(Path(folder) / DEFAULT_MODEL_NAME)
    for candidate in candidates:
        if (candidate / RESTORE_JSON).is_file():
            return candidate
    looked = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise RestoreError(
        f"no model given and the shipped model {DEFAULT_MODEL_NAME} is not installed (looked in {looked}); "
        "pass --model DIR or set RESTORE_MODEL"
    )


def resolve_model(model: str | Path | None = None) -> ModelInfo:
    """The model a run uses, validated (:func:`read_model_info`): ``model``, else :func:`default_model_dir`.

    Commands call it before torch is imported, so a missing or incomplete model is one line at once.
    """
    return read_model_info(model or default_model_dir())


# --- the parts a Restorer loads --------------------------------------------------------------------
def read_max_positions(directory: str | Path) -> int:
    """The model's positions (``max_position_embeddings`` of ``config.json``; one clear error if unreadable)."""
    from transformers import AutoConfig

    path = Path(directory)
    try:
        return AutoConfig.from_pretrained(path).max_position_embeddings
    except (OSError, ValueError, KeyError, AttributeError) as e:
        raise RestoreError(f"{path / 'config.json'}: cannot read the model config ({str(e).splitlines()[0]})") from None


def load_tokenizer(directory: str | Path):
    """The model's tokenizer (``AutoTokenizer``; one clear error if it cannot be loaded)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(directory)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise RestoreError(f"{directory}: cannot load the tokenizer ({str(e).splitlines()[0]})") from None


def load_lexicon(directory: str | Path):
    """The model's surface-form lexicon (:mod:`restore.lexicon`, for faithfulness repair), or None if it has none."""
    from restore.lexicon import LEXICON_FILE, Lexicon

    return Lexicon.load(directory) if (Path(directory) / LEXICON_FILE).is_file() else None

# --- training checkpoints and export ---------------------------------------------------------
def save_checkpoint(out: Path, accelerator, model, optimizer, scheduler, state: dict) -> Path:
    """``out/checkpoint/``: state.pt (main process) + rng-RANK.pt (every rank), swapped in atomically."""
    import torch

    acc, tmp, final = accelerator, out / f"{CHECKPOINT}.tmp", out / CHECKPOINT
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    torch.save(rng_state(), tmp / f"rng-{acc.process_index}.pt")
    if acc.is_main_process:
        payload = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "state": state,
        }
        torch.save(payload, tmp / "state.pt")
    acc.wait_for_everyone()
    if acc.is_main_process:
        old = out / f"{CHECKPOINT}.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()
    return final


def load_checkpoint(out: Path, model, optimizer, scheduler, process_index: int, device) -> dict:
    """Restore model, optimizer, scheduler and this rank's RNG states from ``out/checkpoint``; returns the run state."""
    import torch

    folder = out / CHECKPOINT
    payload = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    set_rng_state(torch.load(folder / f"rng-{process_index}.pt", map_location="cpu", weights_only=True), device)
    return payload["state"]


def rng_state() -> dict:
    """Python's and torch's RNG states (CUDA's too once CUDA is in use)."""
    import torch

    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict, device) -> None:
    import torch

    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"])


def export_model(
    out: Path, model, tokenizer, chunking: ChunkConfig, training: dict, config: dict, save_dtype: str = "bf16",
    max_shard_size: str | None = None, lineage: list | None = None,
) -> None:
    """Write the self-describing model directory: weights (``save_dtype``), tokenizer, then ``restore.json``
    (with the run's ``config`` and, when given, the model's ``lineage``: :mod:`restore.lineage`).

    ``restore.json`` is written last, so a directory that has one holds a complete model.
    """
    import torch

    for stale in list(out.glob("model*.safetensors")) + list(out.glob("model.safetensors.index.json")):
        stale.unlink()  # an earlier export may have been sharded differently
    if save_dtype == "bf16":
        model = copy.deepcopy(model).to(torch.bfloat16)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(out, **kwargs)
    for weights in out.glob("model*.safetensors"):  # safetensors writes them 0600: a shared model must be readable
        usual_permissions(weights)
    tokenizer.save_pretrained(out)
    write_restore_json(out, chunking, training, config=config, **({"lineage": lineage} if lineage is not None else {}))
