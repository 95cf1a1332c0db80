"""A model's lineage: the runs that made it, the shards each one saw, and what a continued run trains on next.

Every exported model's ``restore.json`` carries a ``lineage`` list, one entry per training run,
oldest first: the model it started from (``null`` for a run from scratch), the shards it trained
on (each by its portable name, size and content hash, so that two corpora's ``train-00.jsonl.xz``
are told apart), its steps, tokens, times, device and dev loss. A run that starts from a model
(``model.init_from``) appends its entry to that model's lineage. A model exported before
lineages existed gets one entry built from its ``training`` record (:func:`model_lineage`),
whose shards are known by name only.

Continued training on a lent GPU (``scripts/gpu/continue_small.sh``) trains on shards the model
has not seen: :func:`pick_unseen_shards` chooses them, for each corpus of the mix, within the bytes
a device call can carry, shared by the corpora's weights; :func:`verdict` says whether the new model
replaces the old one (mean BLEU over the domains higher, no domain down by more than 1).

>>> seen = [{"start_model": None, "shards": [{"name": ".data/train-00.jsonl.xz", "sha256": "aa", "bytes": 9}]}]
>>> available = [Shard("train-00.jsonl.xz", 9, "aa"), Shard("train-01.jsonl.xz", 9, "bb"), Shard("train-02.jsonl.xz", 9, "cc")]
>>> wiki = pick_unseen_shards({"wiki": available}, {"wiki": 1.0}, seen, budget_bytes=10).corpora["wiki"]
>>> [s.name for s in wiki.picked], [s.name for s in wiki.seen], [s.name for s in wiki.left]
(['train-01.jsonl.xz'], ['train-00.jsonl.xz'], ['train-02.jsonl.xz'])
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

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


def read_lineage(model_dir: str | os.PathLike, missing_ok: bool = False) -> list[dict]:
    """The lineage of the model in ``model_dir``, from its ``restore.json`` (:func:`model_lineage`);
    ``missing_ok``: ``[]`` for a directory without one (a plain transformers checkpoint). An
    unreadable or invalid file is one :class:`restore.errors.RestoreError`."""
    from restore.errors import RestoreError

    path = Path(model_dir) / "restore.json"
    if missing_ok and not path.is_file():
        return []
    try:
        return model_lineage(json.loads(path.read_text(encoding="utf-8")))
    except OSError as e:
        raise RestoreError(f"{path}: cannot read the model's lineage ({e.strerror or e}); expected a restore model directory") from None
    except ValueError as e:
        raise RestoreError(f"{path}: not valid JSON ({e})") from None


# --- what the next run trains on ------------------------------------------------------------------
@dataclass
class ShardPick:
    """One corpus's part of :func:`pick_unseen_shards`' answer: ``picked`` fit the budget; ``seen``
    were trained on before; ``left`` are unseen but did not fit (for a later run)."""

    name: str = ""
    weight: float = 1.0
    share_bytes: float = 0.0  # the corpus's share of the budget by weight (whole shards may take more or less)
    picked: list[Shard] = field(default_factory=list)
    seen: list[Shard] = field(default_factory=list)
    left: list[Shard] = field(default_factory=list)

    @property
    def picked_bytes(self) -> int:
        return sum(s.bytes or 0 for s in self.picked)

    def describe(self) -> str:
        """One line: what the corpus got against its share, what it had seen, what waits for a later run."""
        mib = 1 << 20
        names = lambda shards: ", ".join(Path(s.name).name for s in shards) or "none"  # noqa: E731
        return (
            f"{self.name} (weight {self.weight:g}, share {self.share_bytes / mib:.1f} MiB): picked {len(self.picked)} unseen "
            f"shard(s), {self.picked_bytes / mib:.1f} MiB: {names(self.picked)}; seen by the model (skipped): {names(self.seen)}; "
            f"unseen but over the budget (for a later run): {names(self.left)}"
        )


@dataclass
class MixPick:
    """:func:`pick_unseen_shards`' answer: a :class:`ShardPick` per corpus and the order the shards were taken in."""

    corpora: dict[str, ShardPick]
    budget_bytes: int
    order: list[tuple[str, Shard, float, bool]] = field(default_factory=list)  # (corpus, shard, its picked/share before, only taker)

    @property
    def picked_bytes(self) -> int:
        return sum(c.picked_bytes for c in self.corpora.values())

    def describe(self) -> list[str]:
        """Lines that say the rule, each corpus's pick, the order of the picks and what is left of the budget."""
        mib = 1 << 20
        steps = ", ".join(
            f"{name}/{Path(s.name).name} (at {had:.0%} of its share{'; no other corpus has an unseen shard that fits' if alone else ''})"
            for name, s, had, alone in self.order
        )
        split = ", ".join(f"{c.name} {c.picked_bytes / max(self.picked_bytes, 1):.0%}" for c in self.corpora.values())
        return [
            f"budget {self.budget_bytes / mib:.1f} MiB for shards, shared by weight; whole shards only, each taken by the corpus "
            "furthest below its share (its next unseen shard, in name order, that still fits)",
            *(c.describe() for c in self.corpora.values()),
            f"order: {steps or 'none'}",
            f"picked {self.picked_bytes / mib:.1f} MiB of {self.budget_bytes / mib:.1f} MiB ({split}; each epoch still draws the "
            f"corpora's pairs by their weights); {(self.budget_bytes - self.picked_bytes) / mib:.1f} MiB left: no unseen shard fits in it",
        ]


def pick_unseen_shards(
    candidates: Mapping[str, Sequence[Shard]], weights: Mapping[str, float], lineage: Sequence[dict], budget_bytes: int
) -> MixPick:
    """For each corpus (``candidates``: its shards), the shards that ``lineage`` has not trained on,
    whole shards within ``budget_bytes`` in all, shared by the corpora's ``weights``.

    The rule: the corpus whose picked bytes are furthest below its share (the least picked bytes per
    unit of weight; on a tie the heavier, then the one named first) takes its next unseen shard in
    name order that still fits (a shard that does not fit is passed over for a smaller one), until
    no unseen shard of any corpus fits. So the bytes follow the weights as closely as whole shards
    allow, and what one corpus cannot use (no unseen shard left, or none small enough) goes to the
    others. A shard the lineage has seen is never picked. One corpus of weight 1 is the plain case.

    >>> seen = [{"shards": [Shard("wiki/train-00", 10, "w0").record()]}]
    >>> pick = pick_unseen_shards({"wiki": [Shard("wiki/train-00", 10, "w0"), Shard("wiki/train-01", 10, "w1"),
    ...                                     Shard("wiki/train-02", 10, "w2")],
    ...                            "prose": [Shard("prose/train-00", 10, "p0"), Shard("prose/train-01", 3, "p1")]},
    ...                           {"wiki": 0.6, "prose": 0.4}, seen, budget_bytes=25)
    >>> [(n, [s.name for s in c.picked]) for n, c in pick.corpora.items()]
    [('wiki', ['wiki/train-01']), ('prose', ['prose/train-00', 'prose/train-01'])]
    >>> [s.name for s in pick.corpora["wiki"].seen], [s.name for s in pick.corpora["wiki"].left]
    (['wiki/train-00'], ['wiki/train-02'])
    """
    if set(weights) != set(candidates) or any(not w > 0 for w in weights.values()):
        raise ValueError(f"a weight > 0 for every corpus: candidates {sorted(candidates)}, weights {weights}")
    total = sum(weights.values())
    pick = MixPick({name: ShardPick(name, weights[name], budget_bytes * weights[name] / total) for name in candidates}, budget_bytes)
    pending: dict[str, list[Shard]] = {}
    for name, shards in candidates.items():
        pending[name] = []
        for shard in sorted(shards, key=lambda s: s.name):
            (pick.corpora[name].seen if has_seen(shard, lineage) else pending[name]).append(shard)
    rank = {name: i for i, name in enumerate(candidates)}
    used = 0
    while True:
        fits = {name: next((s for s in pending[name] if used + (s.bytes or 0) <= budget_bytes), None) for name in candidates}
        takers = [name for name, shard in fits.items() if shard is not None]
        if not takers:
            break
        name = min(takers, key=lambda n: (pick.corpora[n].picked_bytes / weights[n], -weights[n], rank[n]))
        corpus, shard = pick.corpora[name], fits[name]
        had = corpus.picked_bytes / corpus.share_bytes if corpus.share_bytes else 0.0
        pick.order.append((name, shard, had, len(takers) == 1 < len(candidates)))
        corpus.picked.append(shard)
        pending[name].remove(shard)
        used += shard.bytes or 0
    for name, rest in pending.items():
        pick.corpora[name].left = rest
    return pick


# --- which model to keep ---------------------------------------------------------------------------
MAX_DOMAIN_DROP = 1.0  # BLEU a domain may lose while the mean over the domains rises


def verdict(old: dict, new: dict, max_drop: float = MAX_DOMAIN_DROP) -> dict:
    """REPLACE or KEEP: whether the ``new`` model's scores beat the ``old`` one's on the same data.

    ``old`` and ``new`` map a setting (``"faithful"``: with faithfulness repair, as ``restore``
    runs by default; ``"no-faithful"``: the model alone) to ``{domain: scores}`` (each domain's
    ``restore eval`` report ``scores``, e.g. for ``test`` and ``prose-test``). The deciding setting
    is ``"faithful"`` when both models were scored with it on the same domains, else
    ``"no-faithful"``. The rule: the new model replaces the old one only if its mean cased corpus
    BLEU over the domains is higher (a tie keeps the old model) and no domain's BLEU drops by more
    than ``max_drop`` (1 BLEU): a gain on one domain does not buy a real loss on another.

    >>> score = lambda bleu: {"bleu": {"score": bleu}}
    >>> old = {"faithful": {"test": score(38.17), "prose-test": score(20.05)}, "no-faithful": {"test": score(37.35), "prose-test": score(19.5)}}
    >>> v = verdict(old, {"no-faithful": {"test": score(37.0), "prose-test": score(26.0)}})  # repair not scored for new
    >>> v["decision"], v["setting"]
    ('REPLACE', 'no-faithful')
    >>> v = verdict(old, {**old, "faithful": {"test": score(37.5), "prose-test": score(26.0)}})
    >>> v["decision"], v["setting"], round(v["new_mean_bleu"] - v["old_mean_bleu"], 2)
    ('REPLACE', 'faithful', 2.64)
    >>> verdict(old, {**old, "faithful": {"test": score(37.0), "prose-test": score(30.0)}})["reason"]
    'faithful: test drops 1.17 BLEU (37.00 new vs 38.17 old), more than the 1 allowed'
    """
    settings = [s for s in ("faithful", "no-faithful") if old.get(s) and new.get(s) and set(old[s]) == set(new[s])]
    if not settings:
        return {"decision": "KEEP", "setting": None, "reason": "the two models were not scored in a common setting on the same domains"}
    setting = settings[0]
    domains = list(old[setting])
    a = {d: old[setting][d]["bleu"]["score"] for d in domains}
    b = {d: new[setting][d]["bleu"]["score"] for d in domains}
    mean_a, mean_b = sum(a.values()) / len(a), sum(b.values()) / len(b)
    result = {"setting": setting, "max_drop": max_drop, "old_bleu": a, "new_bleu": b, "old_mean_bleu": mean_a, "new_mean_bleu": mean_b}
    drops = [d for d in domains if b[d] < a[d] - max_drop]
    if drops:
        d = drops[0]
        reason = f"{setting}: {d} drops {a[d] - b[d]:.2f} BLEU ({b[d]:.2f} new vs {a[d]:.2f} old), more than the {max_drop:g} allowed"
        return {"decision": "KEEP", "reason": reason, **result}
    per_domain = ", ".join(f"{d} {b[d]:.2f} vs {a[d]:.2f}" for d in domains)
    higher = mean_b > mean_a
    reason = (f"{setting}: mean BLEU {mean_b:.2f} (new) vs {mean_a:.2f} (old) over {len(domains)} domain(s), "
              f"{'higher' if higher else 'not higher'}; {per_domain}; no domain down more than {max_drop:g}")  # fmt: skip
    return {"decision": "REPLACE" if higher else "KEEP", "reason": reason, **result}
