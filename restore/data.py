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

Preparation runs as ``datasets.map(batched=True, num_proc=N)`` (:mod:`restore.parallel_map`) and
is saved with ``save_to_disk`` under ``cache_dir/pairs-<key>``, where the key covers the data
files (path, size, mtime), the selection, the chunking settings and the corruption spec. A mix
of corpora (:mod:`restore.mix`) prepares each corpus on its own (:func:`corpus_selections`) and
combines them (:func:`combine_pairs`). The lexicon of a pair set is counted the same way
(:func:`build_lexicon`); the pairs' token ids are :mod:`restore.token_ids`'s.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from restore.chunking import ChunkConfig, is_heading_start, pack_units, unit_starts
from restore.corrupt import SPEC_VERSION, corrupt_sentence, sentence_spans
from restore.errors import RestoreError
from restore.mix import data_corpora, sample_indices, weighted_sample
from restore.parallel_map import cache_entry, interruptible_workers, num_proc_for, parallel_map, quiet_datasets, scratch_folder

PAIRS_FORMAT = "pairs/1"  # bump when pairing changes: old caches are then ignored
LEXICON_FORMAT = "lexicon/1"  # bump when the lexicon's rule changes
COMPRESSIONS = (".xz", ".gz", ".bz2", ".zst", ".lz4")
BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".txt": "text", ".text": "text", ".md": "text"}


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


def load_file(path: str, text_field: str, cache_dir: str):
    """One local file as a ``datasets.Dataset`` with a single ``text`` column (None if it is empty)."""
    import datasets

    builder = builder_for(path)
    kwargs = {"sample_by": "document"} if builder == "text" else {}  # a text file is one article
    try:
        with quiet_datasets():
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
    parts: tuple[tuple[int, float], ...] = ()  # (pairs, weight) of each corpus of a mix (:func:`combine_pairs`)

    def __len__(self) -> int:
        return len(self.dataset)

    def sample(self, count: int, seed: int) -> np.ndarray:
        """Indices of ``count`` pairs drawn with ``seed`` (a mix: from each corpus by its weight)."""
        if not self.parts:
            return sample_indices(len(self), count, seed)
        return weighted_sample([n for n, _ in self.parts], [w for _, w in self.parts], count, seed)


def combine_pairs(parts: Sequence[PairSet], weights: Sequence[float]) -> PairSet:
    """The pairs of several corpora as one set (concatenated in order; one corpus: itself), whose
    samples follow the weights; its cache key covers the corpora's keys and the weights."""
    import datasets

    if len(parts) == 1:
        return parts[0]
    key = hashlib.sha256(json.dumps(["mix", [p.key for p in parts], list(weights)]).encode()).hexdigest()[:20]
    stats = {
        "articles": sum(p.stats["articles"] for p in parts), "pairs": sum(len(p) for p in parts),
        "units": sum(p.stats["units"] for p in parts), "dropped_units": sum(p.stats["dropped_units"] for p in parts),
        "files": [f for p in parts for f in p.stats["files"]], "num_proc": max(p.stats["num_proc"] for p in parts),
        "seconds": round(sum(p.stats["seconds"] for p in parts), 3), "cached": all(p.stats.get("cached") for p in parts),
    }  # fmt: skip
    dataset = datasets.concatenate_datasets([p.dataset for p in parts])
    return PairSet(dataset, stats, key if all(p.key for p in parts) else "", tuple((len(p), float(w)) for p, w in zip(parts, weights)))


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


@dataclass(frozen=True)
class CorpusSelection:
    """One corpus of a run: its name, its weight in the mix and its train (and dev) articles."""

    name: str
    weight: float
    train: ArticleSelection
    dev: ArticleSelection | None


def corpus_selections(data) -> list[CorpusSelection]:
    """The corpora of a :class:`restore.config.DataConfig` (:func:`restore.mix.data_corpora`; a hub
    dataset is one corpus), each with its train and dev article selections; checks that files exist."""
    if data.hub_dataset:
        hub = (data.hub_dataset, data.hub_config, data.hub_split)
        dev_files = tuple(resolve_files(data.dev_files, "data.dev_files")) if data.dev_files else None
        train, dev = _split(data, (), hub, data.max_train_articles, dev_files)
        return [CorpusSelection(data.hub_dataset.rsplit("/", 1)[-1] or "hub", 1.0, train, dev)]
    selections = []
    for corpus in data_corpora(data):
        key = f"data.corpora.{corpus.name}" if data.corpora else "data"
        files = tuple(resolve_files(corpus.train_files, f"{key}.train_files"))
        dev_files = tuple(resolve_files(corpus.dev_files, f"{key}.dev_files")) if corpus.dev_files else None
        train, dev = _split(data, files, None, corpus.max_train_articles or data.max_train_articles, dev_files)
        selections.append(CorpusSelection(corpus.name, corpus.weight, train, dev))
    return selections


def _split(data, files: tuple[str, ...], hub, stop: int | None, dev_files) -> tuple[ArticleSelection, ArticleSelection | None]:
    """Train and dev selections of one corpus: dev files, else the last ``dev_holdout`` training articles, else none."""
    if dev_files:
        return ArticleSelection(files, hub, data.text_field, 0, stop), ArticleSelection(dev_files, None, data.text_field, 0, data.max_dev_articles)
    if data.dev_holdout:
        # The last dev_holdout of the (possibly capped) training articles; negative = from the end.
        cut = -data.dev_holdout if stop is None else stop - data.dev_holdout
        return ArticleSelection(files, hub, data.text_field, 0, cut), ArticleSelection(files, hub, data.text_field, cut, stop)
    return ArticleSelection(files, hub, data.text_field, 0, stop), None


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
    procs = num_proc_for(num_proc, len(articles))
    with scratch_folder(Path(cache_dir) / f"pairs-{key}.work") as work, cache_entry(dest) as tmp:
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
        with quiet_datasets(), interruptible_workers():
            pairs.save_to_disk(str(tmp))
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return PairSet(datasets.load_from_disk(str(dest)), {**stats, "cached": False}, key)


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
    sample = pairs.dataset.select(pairs.sample(sample_pairs, seed))
    with scratch_folder(dest.with_name(f"{dest.name}.work")) as work:
        counted = parallel_map(
            sample, _count_batch, work, "lexicon", num_proc_for(num_proc, len(sample)), batch_size=1000,
            remove_columns=sample.column_names,
        )  # fmt: skip
        counts = merge_counts(json.loads(part) for part in counted["counts"])
    lexicon = Lexicon.from_counts(counts, min_count=min_count, max_entries=max_entries)
    if pairs.key:
        with cache_entry(dest) as tmp:
            lexicon.save(tmp)
    return lexicon


def _count_batch(batch: dict) -> dict:
    from restore.lexicon import count_surface_forms

    return {"counts": [json.dumps(count_surface_forms(batch["target"]), ensure_ascii=False)]}
