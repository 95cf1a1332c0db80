"""Token ids of the training pairs: encoded in parallel and cached, held as flat arrays, batched by a token budget.

:func:`encode_pairs` tokenizes prepared pairs (:class:`restore.data.PairSet`) into
:class:`TokenizedPairs` (cached beside the pairs, keyed by the tokenizer's content);
:func:`token_batches` groups them into length-sorted batches of at most ``batch_tokens``
padded tokens, shuffled per epoch; :meth:`TokenizedPairs.collate` pads a batch into tensors
and :func:`to_device` moves it to the GPU.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from restore.attention import PAD_MULTIPLE, padded_length
from restore.batching import budget_batches
from restore.parallel_map import cache_entry, num_proc_for, parallel_map

IDS_FORMAT = "ids/1"  # bump when encoding changes
IGNORE_INDEX = -100  # label of padding: no loss


# --- encoding (parallel, cached) -------------------------------------------------------------
def tokenizer_fingerprint(tokenizer) -> str:
    """A short content hash of a fast tokenizer (vocabulary, pieces, special-token template).

    >>> from restore.tokenizer import train_tokenizer
    >>> a, b = (train_tokenizer(["the party will"] * 20, 300) for _ in range(2))
    >>> tokenizer_fingerprint(a) == tokenizer_fingerprint(b), len(tokenizer_fingerprint(a))
    (True, 16)
    """
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()[:16]


def encode_pairs(pairs: PairSet, tokenizer, max_length: int, cache_dir: str, num_proc: int = 0) -> "TokenizedPairs":
    """Token ids of prepared pairs, encoded in parallel and cached beside them.

    The cache entry ``cache_dir/ids-<pairs key>-<tokenizer fingerprint>-<max_length>`` holds
    flat ``.npy`` arrays; a later run with the same pairs, tokenizer and length loads it
    instead of encoding again. Pairs without a cache key (not prepared from files) are
    encoded every time.
    """
    if not pairs.key:
        return TokenizedPairs.encode(pairs.dataset, tokenizer, max_length, num_proc)
    dest = Path(cache_dir) / f"ids-{pairs.key}-{tokenizer_fingerprint(tokenizer)}-{max_length}"
    if (dest / "meta.json").is_file():
        return TokenizedPairs.load(dest)
    with cache_entry(dest) as tmp:
        encoded = TokenizedPairs.encode(pairs.dataset, tokenizer, max_length, num_proc)
        encoded.save(tmp)
    return encoded


def _encode_batch(batch: dict, tokenizer) -> dict:
    return {
        "src": tokenizer(list(batch["source"]), verbose=False)["input_ids"],
        "tgt": tokenizer(list(batch["target"]), verbose=False)["input_ids"],
    }


def _list_column(table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A ``list<int32>`` arrow column as (flat values, lengths) numpy arrays."""
    import pyarrow.compute as pc

    column = table.column(name).combine_chunks()
    return np.asarray(column.flatten(), dtype=np.int32), np.asarray(pc.list_value_length(column), dtype=np.int64)


@dataclass
class TokenizedPairs:
    """Token ids of all pairs as flat arrays (fast batching without Python lists per pair).

    Pair ``i`` has source ids ``src[src_off[i]:src_off[i + 1]]`` (ending in ``</s>``) and
    target ids likewise; pairs longer than ``max_length`` on either side are left out.
    """

    src: np.ndarray
    src_off: np.ndarray
    tgt: np.ndarray
    tgt_off: np.ndarray
    dropped: int = 0

    ARRAYS = ("src", "src_off", "tgt", "tgt_off")

    @classmethod
    def encode(cls, pairs, tokenizer, max_length: int, num_proc: int = 0) -> "TokenizedPairs":
        """Encode a pairs dataset (``source``, ``target`` columns) with ``datasets.map`` on ``num_proc`` processes.

        ``num_proc`` 0 = all CPU cores. Every worker runs the fast tokenizer on its share
        (``datasets`` turns the tokenizer's own threads off in forked workers).
        """
        import tempfile

        import datasets

        features = datasets.Features({"src": datasets.Sequence(datasets.Value("int32")), "tgt": datasets.Sequence(datasets.Value("int32"))})
        with tempfile.TemporaryDirectory(prefix="restore-encode-") as work:
            encoded = parallel_map(
                pairs, _encode_batch, Path(work), "encode", num_proc_for(num_proc, len(pairs)), batch_size=1000,
                fn_kwargs={"tokenizer": tokenizer}, remove_columns=pairs.column_names, features=features,
            )  # fmt: skip
            table = encoded.data.table
            src, src_lens = _list_column(table, "src")
            tgt, tgt_lens = _list_column(table, "tgt")
            del encoded, table
        keep = (src_lens <= max_length) & (tgt_lens <= max_length)
        return cls(
            src[np.repeat(keep, src_lens)], _offsets(src_lens[keep]),
            tgt[np.repeat(keep, tgt_lens)], _offsets(tgt_lens[keep]),
            dropped=int((~keep).sum()),
        )  # fmt: skip

    def save(self, folder: Path) -> None:
        for name in self.ARRAYS:
            np.save(folder / f"{name}.npy", getattr(self, name))
        (folder / "meta.json").write_text(json.dumps({"format": IDS_FORMAT, "dropped": self.dropped}) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> "TokenizedPairs":
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        arrays = [np.load(folder / f"{name}.npy", mmap_mode="r") for name in cls.ARRAYS]
        return cls(*arrays, dropped=meta["dropped"])

    def __len__(self) -> int:
        return len(self.src_off) - 1

    @classmethod
    def concat(cls, parts: Sequence["TokenizedPairs"]) -> "TokenizedPairs":
        """The pairs of ``parts``, one after the other (one part: itself).

        >>> a = TokenizedPairs(np.array([5, 1, 6, 7, 1]), np.array([0, 2, 5]), np.array([8, 1, 9, 1]), np.array([0, 2, 4]))
        >>> both = TokenizedPairs.concat([a, a.take([1])])
        >>> len(both), both.src[both.src_off[2] : both.src_off[3]].tolist()
        (3, [6, 7, 1])
        """
        if len(parts) == 1:
            return parts[0]
        arrays = {}
        for name, off in (("src", "src_off"), ("tgt", "tgt_off")):
            arrays[name] = np.concatenate([np.asarray(p.__dict__[name]) for p in parts])
            arrays[off] = _offsets(np.concatenate([np.diff(p.__dict__[off]) for p in parts]))
        return cls(**arrays, dropped=sum(p.dropped for p in parts))

    def take(self, indices: Sequence[int]) -> "TokenizedPairs":
        """The pairs at ``indices``, in that order (a dev subset)."""
        idx = np.asarray(indices, dtype=np.int64)
        arrays = {}
        for name, off in (("src", "src_off"), ("tgt", "tgt_off")):
            starts, lengths = self.__dict__[off][idx], np.diff(self.__dict__[off])[idx]
            flat = np.repeat(starts, lengths) + _ragged_positions(lengths)[1]
            arrays[name], arrays[off] = np.asarray(self.__dict__[name])[flat], _offsets(lengths)
        return TokenizedPairs(**arrays, dropped=0)

    @property
    def src_lens(self) -> np.ndarray:
        return np.diff(self.src_off)

    @property
    def tgt_lens(self) -> np.ndarray:
        return np.diff(self.tgt_off)

    def collate(self, indices: Sequence[int], pad_id: int, decoder_start_id: int, pad_multiple: int = PAD_MULTIPLE) -> dict[str, torch.Tensor]:
        """A padded batch: ``input_ids``, ``attention_mask``, ``decoder_input_ids``, ``labels`` (-100 = pad).

        Lengths are padded up to a multiple of ``pad_multiple`` (:func:`restore.attention.padded_length`),
        so that batch shapes repeat; the padding is masked (source) or ignored (labels).
        """
        idx = np.asarray(indices, dtype=np.int64)
        n = len(idx)
        s_start, s_len = self.src_off[idx], self.src_off[idx + 1] - self.src_off[idx]
        t_start, t_len = self.tgt_off[idx], self.tgt_off[idx + 1] - self.tgt_off[idx]
        src_len = padded_length(int(s_len.max()), pad_multiple)
        tgt_len = padded_length(int(t_len.max()), pad_multiple)
        input_ids = np.full((n, src_len), pad_id, dtype=np.int64)
        attention = np.zeros((n, src_len), dtype=np.int64)
        labels = np.full((n, tgt_len), IGNORE_INDEX, dtype=np.int64)
        decoder_in = np.full((n, tgt_len), pad_id, dtype=np.int64)
        # Every id at once (a Python loop over ~700 rows cost ~11 ms a step): row and column of each.
        rows, cols = _ragged_positions(s_len)
        input_ids[rows, cols] = self.src[np.repeat(s_start, s_len) + cols]
        attention[rows, cols] = 1
        rows, cols = _ragged_positions(t_len)
        labels[rows, cols] = self.tgt[np.repeat(t_start, t_len) + cols]
        decoder_in[:, 0] = decoder_start_id  # teacher forcing: targets shifted right
        shifted = cols + 1 < t_len[rows]
        decoder_in[rows[shifted], cols[shifted] + 1] = labels[rows[shifted], cols[shifted]]
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention),
            "decoder_input_ids": torch.from_numpy(decoder_in),
            "labels": torch.from_numpy(labels),
        }


def _ragged_positions(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of every item of ragged rows of ``lengths``.

    >>> [a.tolist() for a in _ragged_positions(np.array([2, 0, 3]))]
    [[0, 0, 2, 2, 2], [0, 1, 0, 1, 2]]
    """
    rows = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return rows, np.arange(int(lengths.sum())) - starts


def _offsets(lengths: np.ndarray) -> np.ndarray:
    """``[0, l0, l0 + l1, ...]``.

    >>> _offsets(np.array([2, 3])).tolist()
    [0, 2, 5]
    """
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


# --- batches ---------------------------------------------------------------------------------
def token_batches(lengths: np.ndarray, batch_tokens: int, seed: int, epoch: int, tiebreak: np.ndarray | None = None) -> list[np.ndarray]:
    """Length-grouped batches of at most ``batch_tokens`` padded tokens, shuffled per epoch.

    Pairs are shuffled, stably sorted by length (so equal lengths mix differently every
    epoch) and, among equal lengths, by ``tiebreak`` (the training loop passes source
    lengths: ``lengths`` is the longer side, mostly the target, and without it a batch's
    sources vary widely, a third of the encoder's positions padding), cut greedily into
    batches (size x longest <= budget; a longer pair goes alone) and the batch order is
    shuffled. The same ``(seed, epoch)`` always gives the same batches.

    >>> bs = token_batches(np.array([5, 3, 8, 3, 2, 9]), 10, seed=0, epoch=0)
    >>> sorted(sorted(b.tolist()) for b in bs)
    [[0], [1, 3, 4], [2], [5]]
    >>> [b.tolist() for b in bs] == [b.tolist() for b in token_batches(np.array([5, 3, 8, 3, 2, 9]), 10, 0, 0)]
    True
    >>> sorted(sorted(b.tolist()) for b in token_batches(np.array([8, 8, 8, 8]), 16, 0, 0, tiebreak=np.array([7, 1, 6, 2])))
    [[0, 2], [1, 3]]
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    if tiebreak is None:
        order = order[np.argsort(lengths[order], kind="stable")]
    else:
        order = order[np.lexsort((tiebreak[order], lengths[order]))]  # lexsort is stable too
    batches = [order[r.start : r.stop] for r in budget_batches(lengths[order], batch_tokens)]
    rng.shuffle(batches)
    return batches


def eval_indices(n: int, count: int) -> np.ndarray:
    """``count`` indices spread evenly over ``n`` pairs (a dev sample that covers every article).

    >>> eval_indices(10, 4).tolist(), eval_indices(3, 8).tolist()
    ([0, 3, 6, 9], [0, 1, 2])
    """
    if count >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, count).round().astype(np.int64))


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A collated batch on ``device`` (on CUDA pinned and copied without blocking: the copy
    does not wait for the GPU to drain the previous step)."""
    if device.type != "cuda":
        return batch
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
