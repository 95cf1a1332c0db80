"""Training pairs: articles -> (corrupted source chunk, original text span), prepared in parallel and cached.

Each article is cut with the chunking rule of :mod:`restore.chunking`, restricted
to cuts that fall between two Punkt sentences, so every source chunk lines up with
an exact span of the original text:

1. Punkt sentences (:func:`restore.corrupt.sentence_spans`), each corrupted on its
   own (:func:`restore.corrupt.corrupt_sentence`, equal to whole-text corruption);
2. :func:`restore.chunking.unit_starts` on the article's whole token stream; only
   starts that coincide with a sentence start are kept, so sentences group into units;
3. units longer than ``max_source_words`` are dropped (counted): inference would
   hard-split them at arbitrary points, which has no aligned target;
4. :func:`restore.chunking.pack_units` packs the remaining runs of units into
   chunks (a heading always opens one; no chunk spans a dropped unit).

A pair is ``source = " ".join(chunk tokens)`` and ``target = text[first_start:last_end]``.

Preparation runs as ``datasets.map(batched=True, num_proc=N)`` and is saved with
``save_to_disk`` under ``cache_dir/pairs-<key>``, where the key covers the data files
(path, size, mtime), the selection, the chunking settings and the corruption spec.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from restore.attention import PAD_MULTIPLE, padded_length
from restore.batching import budget_batches
from restore.chunking import ChunkConfig, is_heading_start, pack_units, unit_starts
from restore.corrupt import SPEC_VERSION, corrupt_sentence, sentence_spans
from restore.device import available_cpus
from restore.errors import RestoreError

PAIRS_FORMAT = "pairs/1"  # bump when pairing changes: old caches are then ignored
IDS_FORMAT = "ids/1"  # bump when encoding changes
LEXICON_FORMAT = "lexicon/1"  # bump when the lexicon's rule changes
COMPRESSIONS = (".xz", ".gz", ".bz2", ".zst", ".lz4")
BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".txt": "text", ".text": "text", ".md": "text"}
IGNORE_INDEX = -100


# --- one article -----------------------------------------------------------------------------
def article_pairs(text: str, chunking: ChunkConfig) -> tuple[list[str], list[str], int, int]:
    """Pairs of one article: ``(sources, targets, units, dropped_units)``.

    >>> text = "## Early life\\n\\nHe was born in 1879. His father was a farmer. He left."
    >>> sources, targets, units, dropped = article_pairs(text, ChunkConfig(max_source_words=8))
    >>> sources
    ['# # earli life born 1879 .', 'father farmer . left .']
    >>> targets
    ['## Early life\\n\\nHe was born in 1879.', 'His father was a farmer. He left.']
    >>> units, dropped
    (3, 0)
    """
    spans = sentence_spans(text)
    tokens: list[str] = []
    offsets: list[int] = []  # token offset at which each sentence starts
    for s, e in spans:
        offsets.append(len(tokens))
        tokens.extend(corrupt_sentence(text[s:e]))
    cuts = set(unit_starts(tokens))
    # A sentence opens a unit when the token rule cuts exactly where it starts; a sentence
    # without tokens joins the unit it sits in.
    firsts = [i for i, off in enumerate(offsets) if i == 0 or (off != offsets[i - 1] and off in cuts)]
    bounds = [offsets[i] for i in firsts] + [len(tokens)]
    sources: list[str] = []
    targets: list[str] = []
    dropped = 0
    run: list[int] = []  # consecutive kept units (indices into firsts)
    for u in range(len(firsts) + 1):
        too_long = u < len(firsts) and bounds[u + 1] - bounds[u] > chunking.max_source_words
        if u < len(firsts) and not too_long:
            run.append(u)
            continue
        dropped += too_long
        lengths = [bounds[k + 1] - bounds[k] for k in run]
        headings = [is_heading_start(tokens, bounds[k]) for k in run]
        for group in pack_units(lengths, headings, chunking.max_source_words):
            first, last = run[group[0]], run[group[-1]]
            source = " ".join(tokens[bounds[first] : bounds[last + 1]])
            if source:
                last_sentence = (firsts[last + 1] if last + 1 < len(firsts) else len(spans)) - 1
                sources.append(source)
                targets.append(text[spans[firsts[first]][0] : spans[last_sentence][1]])
        run = []
    return sources, targets, len(firsts) if tokens else 0, dropped


def _pairs_batch(batch: dict, chunking: ChunkConfig) -> dict:
    out: dict[str, list] = {"sources": [], "targets": [], "units": [], "dropped_units": []}
    for text in batch["text"]:
        sources, targets, units, dropped = article_pairs(text or "", chunking)
        out["sources"].append(sources)
        out["targets"].append(targets)
        out["units"].append(units)
        out["dropped_units"].append(dropped)
    return out


def _flatten_batch(batch: dict) -> dict:
    return {
        "source": [s for sources in batch["sources"] for s in sources],
        "target": [t for targets in batch["targets"] for t in targets],
    }


# --- finding and loading articles ------------------------------------------------------------
def resolve_files(patterns: Sequence[str], key: str) -> list[str]:
    """Expand globs (sorted, in pattern order, no duplicates); a pattern matching nothing is an error."""
    files: list[str] = []
    for pattern in patterns:
        if any(c in pattern for c in "*?["):
            matches = sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(p))
            if not matches:
                raise RestoreError(f"{key}: no file matches {pattern}")
        elif os.path.isdir(pattern):
            raise RestoreError(f"{key}: {pattern} is a directory; name files or a glob such as {pattern}/*.jsonl.xz")
        elif not os.path.isfile(pattern):
            raise RestoreError(f"{key}: no such file: {pattern}")
        else:
            matches = [pattern]
        files.extend(m for m in matches if m not in files)
    return files


def builder_for(path: str) -> str:
    """The ``datasets`` builder that reads ``path`` (by extension, compression allowed).

    >>> builder_for("train-00.jsonl.xz"), builder_for("part.parquet"), builder_for("book.txt")
    ('json', 'parquet', 'text')
    """
    name = path.lower()
    for ext in COMPRESSIONS:
        name = name.removesuffix(ext)
    builder = BUILDERS.get(os.path.splitext(name)[1])
    if builder is None:
        raise RestoreError(f"{path}: unsupported data file type (use .jsonl/.json/.parquet/.txt, optionally compressed)")
    return builder


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Keep ``datasets`` from logging (its errors become one RestoreError line instead)."""
    import datasets

    from restore.progress import show_progress

    level = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(logging.CRITICAL)
    if not show_progress():
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(level)


@contextlib.contextmanager
def _interruptible_workers() -> Iterator[None]:
    """Ctrl-C during a multi-process ``datasets.map``: one ``KeyboardInterrupt`` in this process only.

    The terminal sends SIGINT to every process of the group: without this, each worker
    (and the pool's manager) prints its own traceback, and the pool's clean-up turns the
    interrupt into a ``TimeoutError``. Worker processes are forked with a SIGINT handler
    that ignores the signal (the pool terminates them when this process unwinds); here the
    signal raises ``KeyboardInterrupt``, whatever error the unwinding raises on top of it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    parent, interrupted = os.getpid(), []
    previous = signal.getsignal(signal.SIGINT)

    def on_interrupt(signum, frame):
        if os.getpid() != parent:
            return  # a forked worker: the parent stops it
        interrupted.append(signum)
        if callable(previous):
            previous(signum, frame)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    except BaseException:
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.signal(signal.SIGINT, previous)


def parallel_map(dataset, function, work: Path, name: str, num_proc: int | None, **options):
    """``dataset.map(function, batched=True, num_proc=...)`` with its cache files in ``work``.

    Quiet, interruptible (see :func:`_interruptible_workers`) and with a fixed fingerprint,
    so ``datasets`` neither hashes ``function``'s arguments (a tokenizer) nor caches
    anything outside ``work``.
    """
    with _quiet_datasets(), _interruptible_workers():
        return dataset.map(
            function,
            batched=True,
            num_proc=num_proc,
            cache_file_name=str(work / f"{name}.arrow"),
            new_fingerprint=hashlib.sha256(f"{work}/{name}".encode()).hexdigest()[:16],
            desc=name,
            **options,
        )


@contextlib.contextmanager
def _cache_entry(dest: Path) -> Iterator[Path]:
    """Build a cache entry in a temporary folder beside ``dest``, renamed to ``dest`` when complete.

    An interrupted or failed build leaves nothing behind (the temporary folder is removed).
    """
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _scratch(path: Path) -> Iterator[Path]:
    """A scratch folder (this process's own), removed afterwards whatever happens."""
    path = path.with_name(f"{path.name}-{os.getpid()}")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def load_file(path: str, text_field: str, cache_dir: str):
    """One local file as a ``datasets.Dataset`` with a single ``text`` column (None if it is empty)."""
    import datasets

    builder = builder_for(path)
    kwargs = {"sample_by": "document"} if builder == "text" else {}  # a text file is one article
    try:
        with _quiet_datasets():
            ds = datasets.load_dataset(builder, data_files=[path], split="train", cache_dir=cache_dir, **kwargs)
    except StopIteration:
        return None
    except ValueError as e:
        if "corresponds to no data" in str(e):
            return None
        raise RestoreError(f"{path}: cannot read ({_first_line(e)})") from None
    except Exception as e:  # datasets wraps parse errors of every kind; report the root cause
        raise RestoreError(f"{path}: cannot read ({_first_line(e.__cause__ or e)})") from None
    field_name = "text" if builder == "text" else text_field
    return _text_column(ds, field_name, path)


def load_hub(dataset_id: str, config_name: str | None, split: str, text_field: str, cache_dir: str):
    """A dataset from the Hugging Face hub (downloads; never used by tests)."""
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, config_name, split=split, cache_dir=cache_dir)
    except Exception as e:  # offline, unknown id, bad config: one line for the user
        raise RestoreError(f"data.hub_dataset {dataset_id}: cannot load ({_first_line(e)})") from None
    return _text_column(ds, text_field, dataset_id)


def _text_column(ds, field_name: str, name: str):
    if field_name not in ds.column_names:
        raise RestoreError(f"{name}: records have no {field_name!r} field (fields: {', '.join(ds.column_names)}; see data.text_field)")
    dtype = getattr(ds.features[field_name], "dtype", None)
    if dtype not in ("string", "large_string"):
        raise RestoreError(f"{name}: field {field_name!r} is not text (type {dtype})")
    ds = ds.select_columns([field_name])
    return ds.rename_column(field_name, "text") if field_name != "text" else ds


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


# --- the prepared pair sets ------------------------------------------------------------------
@dataclass
class PairSet:
    """Prepared pairs of one split: a ``datasets.Dataset`` (``source``, ``target``) and how it was made."""

    dataset: object
    stats: dict = field(default_factory=dict)
    key: str = ""  # cache key of the pairs (data, selection, chunking, spec): keys what is derived from them

    def __len__(self) -> int:
        return len(self.dataset)


@dataclass(frozen=True)
class ArticleSelection:
    """Which articles a split uses: files (or a hub dataset) and a ``[start, stop)`` range of them."""

    files: tuple[str, ...] = ()
    hub: tuple[str, str | None, str] | None = None  # (dataset id, config, split)
    text_field: str = "text"
    start: int = 0
    stop: int | None = None

    def key(self, chunking: ChunkConfig) -> str:
        """Cache key: file identities, selection, chunking and corruption spec."""
        files = [(os.path.abspath(f), os.path.getsize(f), os.stat(f).st_mtime_ns) for f in self.files]
        payload = [PAIRS_FORMAT, SPEC_VERSION, chunking.max_source_words, files, self.hub, self.text_field, self.start, self.stop]
        return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:20]

    def describe(self) -> list[str]:
        return list(self.files) if self.files else [f"hub:{'/'.join(str(x) for x in self.hub if x)}"]


def split_selections(data) -> tuple[ArticleSelection, ArticleSelection | None]:
    """Train and dev article selections of a :class:`restore.config.DataConfig` (checks that files exist)."""
    hub = (data.hub_dataset, data.hub_config, data.hub_split) if data.hub_dataset else None
    train_files = tuple(resolve_files(data.train_files, "data.train_files")) if data.train_files else ()
    stop = data.max_train_articles
    train = ArticleSelection(train_files, hub, data.text_field, 0, stop)
    if data.dev_files:
        dev_files = tuple(resolve_files(data.dev_files, "data.dev_files"))
        return train, ArticleSelection(dev_files, None, data.text_field, 0, data.max_dev_articles)
    if data.dev_holdout:
        # The last dev_holdout of the (possibly capped) training articles; negative = from the end.
        cut = -data.dev_holdout if stop is None else stop - data.dev_holdout
        held = ArticleSelection(train_files, hub, data.text_field, cut, stop)
        return ArticleSelection(train_files, hub, data.text_field, 0, cut), held
    return train, None


def load_articles(selection: ArticleSelection, cache_dir: str):
    """The selected articles as one ``datasets.Dataset`` with a ``text`` column."""
    import datasets

    hf_cache = os.path.join(cache_dir, "hf")
    if selection.hub:
        parts = [load_hub(*selection.hub, selection.text_field, hf_cache)]
    else:
        parts = [load_file(f, selection.text_field, hf_cache) for f in selection.files]
    parts = [p for p in parts if p is not None and len(p)]
    if not parts:
        raise RestoreError(f"{', '.join(selection.describe())}: no articles (the data is empty)")
    ds = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    n = len(ds)
    start = selection.start if selection.start >= 0 else n + selection.start
    stop = n if selection.stop is None else (selection.stop if selection.stop >= 0 else n + selection.stop)
    start, stop = max(0, min(start, n)), max(0, min(stop, n))
    if stop <= start:
        raise RestoreError(f"{', '.join(selection.describe())}: no articles selected ({n} available)")
    return ds.select(range(start, stop)) if (start, stop) != (0, n) else ds


def prepare_pairs(selection: ArticleSelection, chunking: ChunkConfig, cache_dir: str, num_proc: int = 0) -> PairSet:
    """Pairs of the selected articles, from the cache when they were prepared before.

    ``num_proc`` processes run the preparation (0 = all CPU cores).
    """
    import datasets

    key = selection.key(chunking)
    dest = Path(cache_dir) / f"pairs-{key}"
    if (dest / "stats.json").is_file():
        stats = json.loads((dest / "stats.json").read_text(encoding="utf-8"))
        return PairSet(datasets.load_from_disk(str(dest)), {**stats, "cached": True}, key)
    started = time.perf_counter()
    articles = load_articles(selection, cache_dir)
    procs = _num_proc(num_proc, len(articles))
    with _scratch(Path(cache_dir) / f"pairs-{key}.work") as work, _cache_entry(dest) as tmp:
        per_article = parallel_map(
            articles, _pairs_batch, work, "pairs", procs, batch_size=64,
            fn_kwargs={"chunking": chunking}, remove_columns=articles.column_names,
        )  # fmt: skip
        pairs = parallel_map(per_article, _flatten_batch, work, "flatten", None, batch_size=256, remove_columns=per_article.column_names)
        stats = {
            "articles": len(articles),
            "pairs": len(pairs),
            "units": int(sum(per_article["units"])),
            "dropped_units": int(sum(per_article["dropped_units"])),
            "files": selection.describe(),
            "num_proc": procs or 1,
            "seconds": round(time.perf_counter() - started, 3),
        }
        with _quiet_datasets(), _interruptible_workers():
            pairs.save_to_disk(str(tmp))
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return PairSet(datasets.load_from_disk(str(dest)), {**stats, "cached": False}, key)


def _num_proc(requested: int, rows: int) -> int | None:
    procs = min(requested or available_cpus(), max(1, rows // 8))  # tiny inputs are not worth a process pool
    return procs if procs > 1 else None


# --- the lexicon of a pair set -----------------------------------------------------------------
def build_lexicon(pairs: PairSet, sample_pairs: int, seed: int, min_count: int, max_entries: int, cache_dir: str, num_proc: int = 0):
    """:class:`restore.lexicon.Lexicon` of the targets of ``sample_pairs`` pairs drawn with ``seed``.

    Counted in parallel (``datasets.map``, one count per batch of targets, summed here: the
    same lexicon as ``Lexicon.build`` on the sample) and cached as ``cache_dir/lexicon-<key>``.
    """
    from restore.lexicon import LEXICON_FILE, Lexicon, merge_counts

    payload = [LEXICON_FORMAT, SPEC_VERSION, pairs.key, sample_pairs, seed, min_count, max_entries]
    dest = Path(cache_dir) / f"lexicon-{hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:20]}"
    if pairs.key and (dest / LEXICON_FILE).is_file():
        return Lexicon.load(dest)
    sample = pairs.dataset.select(sample_indices(len(pairs), sample_pairs, seed))
    with _scratch(dest.with_name(f"{dest.name}.work")) as work:
        counted = parallel_map(
            sample, _count_batch, work, "lexicon", _num_proc(num_proc, len(sample)), batch_size=1000,
            remove_columns=sample.column_names,
        )  # fmt: skip
        counts = merge_counts(json.loads(part) for part in counted["counts"])
    lexicon = Lexicon.from_counts(counts, min_count=min_count, max_entries=max_entries)
    if pairs.key:
        with _cache_entry(dest) as tmp:
            lexicon.save(tmp)
    return lexicon


def _count_batch(batch: dict) -> dict:
    from restore.lexicon import count_surface_forms

    return {"counts": [json.dumps(count_surface_forms(batch["target"]), ensure_ascii=False)]}


# --- token ids in memory ---------------------------------------------------------------------
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
    with _cache_entry(dest) as tmp:
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
                pairs, _encode_batch, Path(work), "encode", _num_proc(num_proc, len(pairs)), batch_size=1000,
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
        n = len(indices)
        src_len = padded_length(int(max(self.src_off[i + 1] - self.src_off[i] for i in indices)), pad_multiple)
        tgt_len = padded_length(int(max(self.tgt_off[i + 1] - self.tgt_off[i] for i in indices)), pad_multiple)
        input_ids = np.full((n, src_len), pad_id, dtype=np.int64)
        attention = np.zeros((n, src_len), dtype=np.int64)
        labels = np.full((n, tgt_len), IGNORE_INDEX, dtype=np.int64)
        decoder_in = np.full((n, tgt_len), pad_id, dtype=np.int64)
        for row, i in enumerate(indices):
            s = self.src[self.src_off[i] : self.src_off[i + 1]]
            t = self.tgt[self.tgt_off[i] : self.tgt_off[i + 1]]
            input_ids[row, : len(s)] = s
            attention[row, : len(s)] = 1
            labels[row, : len(t)] = t
            decoder_in[row, 0] = decoder_start_id  # teacher forcing: targets shifted right
            decoder_in[row, 1 : len(t)] = t[:-1]
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention),
            "decoder_input_ids": torch.from_numpy(decoder_in),
            "labels": torch.from_numpy(labels),
        }


def _offsets(lengths: np.ndarray) -> np.ndarray:
    """``[0, l0, l0 + l1, ...]``.

    >>> _offsets(np.array([2, 3])).tolist()
    [0, 2, 5]
    """
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


# --- batches ---------------------------------------------------------------------------------
def token_batches(lengths: np.ndarray, batch_tokens: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Length-grouped batches of at most ``batch_tokens`` padded tokens, shuffled per epoch.

    Pairs are shuffled, stably sorted by length (so equal lengths mix differently every
    epoch), cut greedily into batches (size x longest <= budget; a longer pair goes alone)
    and the batch order is shuffled. The same ``(seed, epoch)`` always gives the same batches.

    >>> bs = token_batches(np.array([5, 3, 8, 3, 2, 9]), 10, seed=0, epoch=0)
    >>> sorted(sorted(b.tolist()) for b in bs)
    [[0], [1, 3, 4], [2], [5]]
    >>> [b.tolist() for b in bs] == [b.tolist() for b in token_batches(np.array([5, 3, 8, 3, 2, 9]), 10, 0, 0)]
    True
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    order = order[np.argsort(lengths[order], kind="stable")]
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


def sample_indices(n: int, count: int, seed: int) -> np.ndarray:
    """A deterministic random sample of ``min(count, n)`` indices, in increasing order."""
    if count >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 7]).choice(n, size=count, replace=False))
