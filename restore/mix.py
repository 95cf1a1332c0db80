"""The training mix: named corpora with weights, and which pairs each epoch draws from them.

A config names its training data either as one corpus (``data.train_files``/``dev_files``) or as
a list of named corpora with weights (``data.corpora``, :class:`restore.config.CorpusConfig`)::

    data:
      corpora:
        - {name: wiki,  train_files: [../shared/data/wiki/train-04.jsonl.xz], dev_files: [../shared/data/wiki/dev.jsonl.xz], weight: 0.6}
        - {name: prose, train_files: [../shared/data/prose/train-00.jsonl.xz], dev_files: [../shared/data/prose/dev.jsonl.xz], weight: 0.4}

Each corpus is cut into pairs on its own, exactly as a single corpus is (:mod:`restore.data`,
cached per corpus), so changing a weight prepares nothing again.

**What a weight means.** An epoch has as many training pairs as all corpora hold together
(``N``, the pairs encoded). A corpus of weight ``w`` (weights normalised to sum to 1) provides
``round(w * N)`` of them (:func:`epoch_shares`): fewer than it holds (down-sampled) or more
(up-sampled, its pairs repeated). A corpus of ``n`` pairs whose share is ``s`` gives every
epoch ``s // n`` copies of each of its pairs and ``s % n`` more, the next ones of a cycle
through it in an order drawn with the run's seed (:func:`corpus_draw`): a down-sampled corpus shows
different pairs every epoch, every pair once before any twice, and an up-sampled one each pair
``s // n`` or one more times per epoch. A single corpus (or a mix whose shares equal the
corpora's sizes) uses every pair once per epoch. The same (seed, epoch) always gives the same
pairs, so ``--resume`` continues exactly.

The lexicon's and the tokenizer's samples follow the weights too (:func:`weighted_sample`), and
the dev set used during training takes from each corpus's dev pairs in the same proportions
(:func:`dev_shares`). :func:`data_corpora` and :func:`data_files` say which corpora and files a
config uses (pure: the configured paths and globs, no file-system access), e.g. to pick shards
or to record a model's lineage.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from restore.config import CorpusConfig, DataConfig


# --- what a config uses (pure) ---------------------------------------------------------------
def data_corpora(data: DataConfig) -> list[CorpusConfig]:
    """The corpora of a data config: ``data.corpora``, or the single corpus of ``data.train_files``
    (weight 1, named after the folder of its first file, e.g. ``wiki`` for
    ``../shared/data/wiki/train-00.jsonl.xz``). A hub dataset is no files: an empty list.

    >>> from restore.config import load_config_dict
    >>> data = load_config_dict({"data": {"train_files": ["/d/wiki/train-00.jsonl.xz"], "dev_files": "/d/wiki/dev.jsonl.xz"}}).data
    >>> data_corpora(data)
    [CorpusConfig(name='wiki', train_files=['/d/wiki/train-00.jsonl.xz'], dev_files=['/d/wiki/dev.jsonl.xz'], weight=1.0, max_train_articles=None)]
    """
    if data.corpora:
        return list(data.corpora)
    if not data.train_files:
        return []
    return [CorpusConfig(single_corpus_name(data.train_files), list(data.train_files), list(data.dev_files))]


def single_corpus_name(files: Sequence[str]) -> str:
    """The name of a corpus given as files alone: the folder of the first file, made a valid name.

    >>> single_corpus_name(["../shared/data/wiki/train-*.jsonl.xz"]), single_corpus_name(["train.jsonl"])
    ('wiki', 'data')
    """
    folder = os.path.basename(os.path.dirname(os.path.normpath(files[0]))) if files else ""
    name = "".join(c if c.isalnum() or c in "_-" else "_" for c in folder).lstrip("_-")
    return name or "data"


def data_files(data: DataConfig) -> dict[str, dict[str, list[str]]]:
    """``{corpus name: {"train": [...], "dev": [...]}}``: the files (or globs) a data config
    names, as configured (absolute once loaded from a file), in order; pure, no file-system access
    (:func:`restore.data.resolve_files` expands globs).

    >>> from restore.config import load_config_dict
    >>> raw = {"data": {"corpora": [{"name": "wiki", "train_files": ["/d/w0.xz", "/d/w1.xz"], "weight": 0.6},
    ...                            {"name": "prose", "train_files": "/d/p0.xz", "dev_files": "/d/pdev.xz", "weight": 0.4}]}}
    >>> data_files(load_config_dict(raw).data)
    {'wiki': {'train': ['/d/w0.xz', '/d/w1.xz'], 'dev': []}, 'prose': {'train': ['/d/p0.xz'], 'dev': ['/d/pdev.xz']}}
    """
    return {c.name: {"train": list(c.train_files), "dev": list(c.dev_files)} for c in data_corpora(data)}


# --- shares (pure) ---------------------------------------------------------------------------
def epoch_shares(sizes: Sequence[int], weights: Sequence[float], total: int | None = None) -> list[int]:
    """``total`` pairs (default: all, ``sum(sizes)``) split by the normalised ``weights``, rounded by
    largest remainder so that the shares add up to ``total`` exactly.

    >>> epoch_shares([1000, 3000], [0.6, 0.4])
    [2400, 1600]
    >>> epoch_shares([10, 10, 10], [1, 1, 1], total=10)
    [4, 3, 3]
    """
    total = sum(sizes) if total is None else total
    weight_sum = float(sum(weights))
    exact = [total * w / weight_sum for w in weights]
    shares = [int(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: (shares[i] - exact[i], i))[: total - sum(shares)]:
        shares[i] += 1
    return shares


def dev_shares(sizes: Sequence[int], weights: Sequence[float]) -> list[int]:
    """Dev pairs to take from each corpus so that the dev set holds the corpora in the proportions
    of the weights, as many as possible (corpora without dev pairs are left out).

    >>> dev_shares([1821, 15000], [0.6, 0.4]), dev_shares([100, 0], [0.5, 0.5])
    ([1821, 1214], [100, 0])
    """
    have = [i for i, n in enumerate(sizes) if n]
    if not have:
        return [0] * len(sizes)
    total = int(min(sizes[i] * sum(weights[j] for j in have) / weights[i] for i in have))
    shares = epoch_shares([sizes[i] for i in have], [weights[i] for i in have], total)
    out = [0] * len(sizes)
    for i, share in zip(have, shares):
        out[i] = min(share, sizes[i])
    return out


# --- draws (pure, deterministic) -------------------------------------------------------------
def corpus_draw(n: int, share: int, seed: int, stream: int, epoch: int) -> np.ndarray:
    """The ``share`` pairs that a corpus of ``n`` pairs gives to ``epoch``: ``share // n`` copies of
    every pair, and ``share % n`` more, the next ones of a cycle through the corpus in an order
    drawn with ``(seed, stream)``: epoch ``e`` takes positions ``e * r`` to ``(e + 1) * r``
    (modulo ``n``) of the cycle, so no pair comes twice in those and each once before any twice.

    >>> epochs = [corpus_draw(5, 3, seed=0, stream=0, epoch=e) for e in range(2)]
    >>> sorted(np.concatenate(epochs)[:5].tolist())  # down-sampled: every pair once before any twice
    [0, 1, 2, 3, 4]
    >>> sorted(np.bincount(corpus_draw(4, 10, 0, 0, epoch=3), minlength=4).tolist())  # up-sampled: 2 or 3 times each
    [2, 2, 3, 3]
    """
    full, rest = divmod(share, n)
    order = np.random.default_rng([seed, 17, stream]).permutation(n)
    more = order[(epoch * rest + np.arange(rest, dtype=np.int64)) % n]
    return np.concatenate([np.tile(np.arange(n, dtype=np.int64), full), more])


def weighted_sample(sizes: Sequence[int], weights: Sequence[float], count: int, seed: int) -> np.ndarray:
    """``count`` indices into the concatenated corpora (fewer if they hold fewer), taken from each
    corpus in the proportions of the weights (at most all of a corpus), in increasing order.

    >>> s = weighted_sample([1000, 10], [0.5, 0.5], 10, seed=0)
    >>> int((s < 1000).sum()), int((s >= 1000).sum()), bool((s[1:] > s[:-1]).all())
    (5, 5, True)
    """
    shares = epoch_shares(sizes, weights, min(count, sum(sizes)))
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    parts = [offsets[i] + sample_indices(n, min(share, n), seed) for i, (n, share) in enumerate(zip(sizes, shares))]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def sample_indices(n: int, count: int, seed: int) -> np.ndarray:
    """A deterministic random sample of ``min(count, n)`` indices of ``n``, in increasing order."""
    if count >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 7]).choice(n, size=count, replace=False))


# --- a run's mix -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Mix:
    """The corpora of a run's training set, concatenated in this order, and what each epoch draws.

    >>> mix = Mix(("wiki", "prose"), (0.6, 0.4), (1000, 3000))
    >>> mix.shares
    [2400, 1600]
    >>> idx = mix.epoch_indices(seed=0, epoch=0)
    >>> len(idx), int((idx < 1000).sum()), len(np.unique(idx[idx >= 1000]))  # wiki up-sampled, prose down
    (4000, 2400, 1600)
    >>> Mix(("wiki",), (1.0,), (1000,)).epoch_indices(0, 0) is None  # one corpus: every pair, once
    True
    """

    names: tuple[str, ...]
    weights: tuple[float, ...]
    sizes: tuple[int, ...]  # training pairs of each corpus (encoded: those that fit the model)
    info: tuple[dict, ...] = field(default=(), compare=False)  # what restore.json records of each corpus

    @property
    def shares(self) -> list[int]:
        """Pairs per epoch of each corpus."""
        return epoch_shares(self.sizes, self.weights)

    def epoch_indices(self, seed: int, epoch: int) -> np.ndarray | None:
        """Indices into the concatenated training set of the pairs of ``epoch`` (None: all, once each)."""
        shares = self.shares
        if list(shares) == list(self.sizes):
            return None
        offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        return np.concatenate([
            offsets[i] + corpus_draw(n, share, seed, i, epoch) for i, (n, share) in enumerate(zip(self.sizes, shares)) if share
        ])  # fmt: skip

    def record(self) -> list[dict]:
        """Per corpus: name, weight (as configured and normalised), pairs, pairs per epoch and ``info``."""
        total = sum(self.weights)
        return [
            {"name": name, "weight": weight, "share": round(weight / total, 6), **info, "pairs_encoded": n, "pairs_per_epoch": share}
            for name, weight, n, share, info in zip(self.names, self.weights, self.sizes, self.shares, self.info or [{}] * len(self.names))
        ]


def epoch_batches(
    lengths: np.ndarray, batch_tokens: int, seed: int, epoch: int, mix: Mix | None = None, tiebreak: np.ndarray | None = None
) -> list[np.ndarray]:
    """The batches of one epoch (:func:`restore.token_ids.token_batches`, equal lengths ordered by
    ``tiebreak``) over the pairs the mix draws for it, as indices into the whole training set (all
    pairs without a mix)."""
    from restore.token_ids import token_batches

    chosen = mix.epoch_indices(seed, epoch) if mix is not None else None
    if chosen is None:
        return token_batches(lengths, batch_tokens, seed, epoch, tiebreak=tiebreak)
    return [chosen[b] for b in token_batches(lengths[chosen], batch_tokens, seed, epoch, tiebreak=None if tiebreak is None else tiebreak[chosen])]
