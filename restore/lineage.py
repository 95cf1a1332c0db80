"""A model's lineage: the runs that made it, the shards each one saw, and what a continued run trains on next.

Every exported model's ``restore.json`` carries a ``lineage`` list, one entry per training run,
oldest first: the model it started from (``null`` for a run from scratch), the shards it trained
on (each by its portable name, size and content hash, so that two corpora's ``train-00.jsonl.xz``
are told apart), its steps, tokens, times, device and dev loss. A run that starts from a model
(``model.init_from``) appends its entry to that model's lineage. A model exported before
lineages existed gets one entry built from its ``training`` record (:func:`model_lineage`),
whose shards are known by name only.

Continued training on a lent GPU (``scripts/gpu/continue_small.sh``) trains on shards the model
has not seen: :func:`pick_unseen_shards` chooses them within the bytes a device call can carry,
and :func:`verdict` says whether the new model replaces the old one.

>>> seen = [{"start_model": None, "shards": [{"name": ".data/train-00.jsonl.xz", "sha256": "aa", "bytes": 9}]}]
>>> available = [Shard("train-00.jsonl.xz", 9, "aa"), Shard("train-01.jsonl.xz", 9, "bb"), Shard("train-02.jsonl.xz", 9, "cc")]
>>> pick = pick_unseen_shards(available, seen, budget_bytes=10)
>>> [s.name for s in pick.picked], [s.name for s in pick.seen], [s.name for s in pick.left]
(['train-01.jsonl.xz'], ['train-00.jsonl.xz'], ['train-02.jsonl.xz'])
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

HASH_CHARS = 16  # of a shard's sha256: enough to tell shards apart, short enough to read


@dataclass(frozen=True)
class Shard:
    """A data file as a lineage records it: its name, size in bytes and content hash (``None``: unknown)."""

    name: str
    bytes: int | None  # None: unknown (a hub dataset, a shard recorded by name only)
    sha256: str | None = None

    def record(self) -> dict:
        return {"name": self.name, "bytes": self.bytes, "sha256": self.sha256}


def file_sha256(path: str | os.PathLike) -> str:
    """The first :data:`HASH_CHARS` hex digits of a file's sha256.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile(delete=False) as f:
    ...     _ = f.write(b"abc")
    >>> file_sha256(f.name)
    'ba7816bf8f01cfea'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:HASH_CHARS]


def local_shard(path: str | os.PathLike, name: str | None = None) -> Shard:
    """A local file as a :class:`Shard` (``name``: how to record it, default the path as given)."""
    return Shard(name or str(path), os.path.getsize(path), file_sha256(path))


# --- a model's lineage -------------------------------------------------------------------------------
def run_entry(
    *, start_model: str | None, shards: Iterable[Shard], training: dict, start_loss: float | None = None,
    first_step_loss: float | None = None,
) -> dict:
    """One run's lineage entry, from the ``training`` record a run writes into ``restore.json``.

    ``start_loss``: the start model's loss on the run's first batches before any update (and
    ``first_step_loss`` the loss of the first step itself): the two agree when the weights loaded.
    """
    dev = training.get("dev") or (training.get("history") or [{}])[-1]
    return {
        "start_model": start_model,
        "shards": [s.record() for s in shards],
        "steps": training.get("steps"),
        "tokens": training.get("tokens_seen"),
        "train_seconds": training.get("train_seconds"),
        "wall_seconds": training.get("wall_seconds"),
        "device": training.get("device"),
        "dev_loss": dev.get("loss"),
        "completed": training.get("completed"),
        "start_loss": start_loss,
        "first_step_loss": first_step_loss,
    }


def model_lineage(restore_json: dict) -> list[dict]:
    """The lineage of a model from its ``restore.json`` payload: its own list, or for a model
    exported before lineages existed, one entry built from its ``training`` record (shards by
    name only; ``[]`` when it has no record at all).

    >>> model_lineage({"training": {"steps": 5, "data": {"train": {"files": [".data/a.jsonl"]}}, "dev": {"loss": 1.5}}})[0]["shards"]
    [{'name': '.data/a.jsonl', 'bytes': None, 'sha256': None}]
    >>> model_lineage({"lineage": [{"steps": 1}]}), model_lineage({})
    ([{'steps': 1}], [])
    """
    if isinstance(restore_json.get("lineage"), list):
        return list(restore_json["lineage"])
    training = restore_json.get("training") or {}
    if not training.get("steps"):
        return []
    files = ((training.get("data") or {}).get("train") or {}).get("files") or []
    start = ((restore_json.get("config") or {}).get("model") or {}).get("init_from")
    return [run_entry(start_model=start, shards=[Shard(f, None) for f in files], training=training)]


def seen_shards(lineage: Sequence[dict]) -> tuple[set[str], set[str]]:
    """(content hashes, names) of the shards a lineage trained on; names only of those recorded without a hash.

    >>> seen_shards([{"shards": [{"name": "x/a.jsonl", "sha256": "01"}, {"name": ".data/b.jsonl", "sha256": None}]}])
    ({'01'}, {'b.jsonl'})
    """
    hashes, names = set(), set()
    for entry in lineage:
        for shard in entry.get("shards") or []:
            if shard.get("sha256"):
                hashes.add(shard["sha256"])
            else:
                names.add(Path(shard["name"]).name)
    return hashes, names


def has_seen(shard: Shard, lineage: Sequence[dict]) -> bool:
    """Whether a lineage trained on ``shard``: the same content, or (for shards it recorded
    without a hash) the same file name."""
    hashes, names = seen_shards(lineage)
    return (shard.sha256 is not None and shard.sha256 in hashes) or Path(shard.name).name in names


# --- what the next run trains on ------------------------------------------------------------------
@dataclass
class ShardPick:
    """:func:`pick_unseen_shards`'s answer: ``picked`` fit the budget; ``left`` are unseen but did not fit."""

    picked: list[Shard] = field(default_factory=list)
    seen: list[Shard] = field(default_factory=list)
    left: list[Shard] = field(default_factory=list)
    budget_bytes: int = 0

    @property
    def picked_bytes(self) -> int:
        return sum(s.bytes for s in self.picked)

    def describe(self) -> list[str]:
        """Lines that say which shards were picked, which were seen and which wait for a later run."""
        mib = 1 << 20
        names = lambda shards: ", ".join(Path(s.name).name for s in shards) or "none"  # noqa: E731
        return [
            f"picked {len(self.picked)} unseen shard(s), {self.picked_bytes / mib:.1f} MiB of a {self.budget_bytes / mib:.1f} MiB budget: {names(self.picked)}",
            f"seen by the model (skipped): {names(self.seen)}",
            f"unseen but over the budget (for a later run): {names(self.left)}",
        ]


def pick_unseen_shards(available: Sequence[Shard], lineage: Sequence[dict], budget_bytes: int) -> ShardPick:
    """The shards of ``available`` that ``lineage`` has not trained on, in name order, as many as fit
    in ``budget_bytes`` (one that does not fit is passed over for later, smaller ones).

    This is the one place where a continued run's data is chosen: a mix of corpora plugs in by
    passing their shards as ``available``.

    >>> pick = pick_unseen_shards([Shard("b", 6, "2"), Shard("a", 5, "1"), Shard("c", 4, "3")], [], budget_bytes=10)
    >>> [s.name for s in pick.picked], [s.name for s in pick.left]
    (['a', 'c'], ['b'])
    """
    pick = ShardPick(budget_bytes=budget_bytes)
    for shard in sorted(available, key=lambda s: s.name):
        if has_seen(shard, lineage):
            pick.seen.append(shard)
        elif pick.picked_bytes + shard.bytes <= budget_bytes:
            pick.picked.append(shard)
        else:
            pick.left.append(shard)
    return pick


# --- which model to keep ---------------------------------------------------------------------------
def verdict(old: dict, new: dict) -> dict:
    """REPLACE or KEEP: whether the ``new`` model's scores beat the ``old`` one's on the same data.

    ``old`` and ``new`` map a setting (``"faithful"``: with faithfulness repair, as ``restore``
    runs by default; ``"no-faithful"``: the model alone) to that setting's ``restore eval``
    scores (the report's ``scores``). The deciding setting is ``"faithful"`` when both models were
    scored with it, else ``"no-faithful"``; the new model replaces the old one only if its cased
    corpus BLEU there is higher (a tie keeps the old model).

    >>> score = lambda bleu: {"bleu": {"score": bleu}, "chrf": {"score": 70.0}}
    >>> verdict({"no-faithful": score(37.35)}, {"no-faithful": score(38.0)})["decision"]
    'REPLACE'
    >>> v = verdict({"faithful": score(38.17), "no-faithful": score(37.35)}, {"faithful": score(38.1), "no-faithful": score(39.0)})
    >>> v["decision"], v["setting"]
    ('KEEP', 'faithful')
    """
    settings = [s for s in ("faithful", "no-faithful") if s in old and s in new]
    if not settings:
        return {"decision": "KEEP", "setting": None, "reason": "the two models were not scored in a common setting"}
    setting = settings[0]
    a, b = old[setting]["bleu"]["score"], new[setting]["bleu"]["score"]
    decision = "REPLACE" if b > a else "KEEP"
    reason = f"BLEU {b:.2f} (new) vs {a:.2f} (old), {setting}: " + ("higher" if b > a else "not higher")
    return {"decision": decision, "setting": setting, "reason": reason, "old_bleu": a, "new_bleu": b}
