"""Evaluation: sacreBLEU BLEU/chrF, round-trip faithfulness, baselines (``restore eval``: :mod:`restore.eval_run`).

What is scored
--------------
* **Data.** A ``.jsonl`` (or ``.jsonl.xz``) of ``{source, target}`` pairs (the fixed
  files under ``data/eval/``, made by ``scripts/make_eval_pairs.py``; a bare name such
  as ``test`` or ``test-300`` means ``data/eval/<name>.jsonl.xz``), an articles file
  (json lines with ``text``, e.g. the shared ``test.jsonl.xz``), which is cut into pairs
  exactly like training data (:func:`restore.data.article_pairs`, with the model's chunk
  size; sentences longer than a chunk are left out there too), or a text file of
  corrupted sources (one document per non-empty line, e.g. a seed file), cut into chunks
  like inference cuts them -> faithfulness only, per chunk.
* **BLEU and chrF** (sacreBLEU's object API, default settings: 13a tokenization,
  cased, one reference) are computed on *documents*: consecutive pairs of the same
  article (same ``doc`` and consecutive ``chunk`` numbers) are joined back into one
  hypothesis and one reference, the way inference reassembles chunks. Pairs without
  a ``doc`` are scored one by one. Lowercased BLEU is reported as a secondary line and
  chunk-level BLEU in the JSON report. (Whitespace between chunks does not matter:
  13a tokenization and chrF both ignore it.)
* **Faithfulness** (every run): each output is corrupted again with
  :func:`restore.corrupt.corrupt` and compared with its source: the share of pairs
  whose re-corruption equals the source exactly (:func:`roundtrip_exact`), and a
  micro-averaged content-token F1 over multisets of stems, punctuation excluded
  (:func:`content_f1`). A perfect restoration scores 100% on both.

>>> src = corrupt("Trotsky was born in Kherson province.")
>>> src
'trotski born kherson provinc .'
>>> roundtrip_exact("Trotsky was born in Kherson Province.", src)
True
>>> content_f1("Trotsky was born in the province.", src)
(1.0, 0.75, 0.8571428571428571)
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Protocol, Sequence

from restore.chunking import ChunkConfig, chunk_joiner, chunk_text
from restore.corrupt import SPEC_VERSION, corrupt, corrupt_tokens
from restore.errors import RestoreError
from restore.faithful_check import check, content_tokens  # the one definition of "content" (punctuation excluded)
from restore.spans import inserted_words
from restore.textio import atomic_output, plural, read_data_text

if TYPE_CHECKING:
    from restore.infer import InferStats

EVAL_DIR = Path(__file__).resolve().parents[1] / "data" / "eval"


# --- faithfulness metrics (pure) -----------------------------------------------------------------
# The exact round trip is the faithfulness check itself (one definition, in restore.faithful_check).
roundtrip_exact = check


def content_counts(output: str, source: str) -> tuple[int, int, int]:
    """(matched, output, source) content-stem counts; matches are a multiset intersection.

    >>> content_counts("Born, born and born again.", "born 1879 .")
    (1, 3, 2)
    """
    out = Counter(content_tokens(corrupt_tokens(output)))
    src = Counter(content_tokens(source.split()))
    return sum((out & src).values()), sum(out.values()), sum(src.values())


def prf(matched: int, n_output: int, n_source: int) -> tuple[float, float, float]:
    """Precision, recall and F1 from counts; nothing expected and nothing produced is perfect.

    >>> prf(3, 4, 6), prf(0, 0, 0)
    ((0.75, 0.5, 0.6), (1.0, 1.0, 1.0))
    """
    p = matched / n_output if n_output else float(n_source == 0)
    r = matched / n_source if n_source else float(n_output == 0)
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f1


def content_f1(output: str, source: str) -> tuple[float, float, float]:
    """Precision, recall, F1 of the content stems of ``output`` against those of ``source``."""
    return prf(*content_counts(output, source))


def faithfulness(outputs: Sequence[str], sources: Sequence[str]) -> dict:
    """Corpus faithfulness: exact round-trip share (%) and micro content P/R/F1 (%)."""
    _check_lengths(outputs, sources, "outputs", "sources")
    exact = [roundtrip_exact(o, s) for o, s in zip(outputs, sources)]
    counts = [content_counts(o, s) for o, s in zip(outputs, sources)]
    matched, n_out, n_src = (sum(c[i] for c in counts) for i in range(3))
    p, r, f1 = prf(matched, n_out, n_src)
    return {
        "roundtrip_exact": 100.0 * sum(exact) / len(exact),
        "roundtrip_exact_count": sum(exact),
        "count": len(exact),
        "content_precision": 100.0 * p,
        "content_recall": 100.0 * r,
        "content_f1": 100.0 * f1,
        "content_tokens_source": n_src,
        "content_tokens_output": n_out,
        "exact_per_item": exact,
    }


# --- sacreBLEU scores ----------------------------------------------------------------------------
def _check_lengths(hyps: Sequence[str], refs: Sequence[str], a: str = "hypotheses", b: str = "references") -> None:
    if len(hyps) == 0:
        raise RestoreError(f"nothing to score: the list of {a} is empty")
    if len(hyps) != len(refs):
        raise RestoreError(f"cannot score {len(hyps)} {a} against {len(refs)} {b}: the counts must match")


def _score(metric, hyps: Sequence[str], refs: Sequence[str]) -> dict:
    score = metric.corpus_score(list(hyps), [list(refs)])
    signature = str(metric.get_signature())
    return {"score": score.score, "signature": signature, "line": score.format(signature=signature)}


def corpus_scores(hyps: Sequence[str], refs: Sequence[str]) -> dict:
    """sacreBLEU corpus BLEU (cased), chrF and lowercased BLEU, each with its signature.

    >>> s = corpus_scores(["The cat sat on the mat."], ["The cat sat on the mat."])
    >>> round(s["bleu"]["score"], 6), round(s["chrf"]["score"], 6)
    (100.0, 100.0)
    >>> s["bleu"]["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    True
    """
    from sacrebleu.metrics import BLEU, CHRF

    _check_lengths(hyps, refs)
    # force=True only silences the "tokenized period" warning that the identity baseline
    # (tokenized by design) triggers; it is not part of the signature.
    return {
        "bleu": _score(BLEU(force=True), hyps, refs),
        "chrf": _score(CHRF(), hyps, refs),
        "bleu_lowercase": _score(BLEU(lowercase=True, force=True), hyps, refs),
    }


def corpus_bleu(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Cased corpus BLEU only (buckets, chunk level)."""
    from sacrebleu.metrics import BLEU

    _check_lengths(hyps, refs)
    return BLEU(force=True).corpus_score(list(hyps), [list(refs)]).score


# --- evaluation data -----------------------------------------------------------------------------
@dataclass
class EvalData:
    """Sources (always), targets (pairs only) and where each item comes from."""

    path: str
    kind: str  # "pairs" (from a pair file), "articles" (cut here) or "sources" (no targets)
    sources: list[str]
    targets: list[str] | None = None
    docs: list[str | None] = field(default_factory=list)
    chunks: list[int | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sources)


def resolve_data_path(name: str | os.PathLike) -> Path:
    """A file path, or the name of a fixed pair file in ``data/eval/`` (``test`` -> ``test.jsonl.xz``)."""
    path = Path(name)
    if path.exists() or os.sep in str(name) or "." in path.name:
        return path
    for candidate in (EVAL_DIR / f"{name}.jsonl.xz", EVAL_DIR / f"{name}.jsonl"):
        if candidate.is_file():
            return candidate
    known = sorted(p.name.split(".")[0] for p in EVAL_DIR.glob("*.jsonl*")) if EVAL_DIR.is_dir() else []
    raise RestoreError(f"{name}: no such file or eval split (splits in data/eval: {', '.join(known) or 'none'})")


def load_eval_data(name: str | os.PathLike, limit: int | None = None, config: ChunkConfig = ChunkConfig()) -> EvalData:
    """Read pairs, articles (cut into pairs with ``config``) or plain sources; keep the first ``limit`` items."""
    from restore.textio import parse_jsonl

    if limit is not None and limit < 1:
        raise RestoreError(f"--limit must be at least 1, got {limit}")
    path = resolve_data_path(name)
    text = read_data_text(path)
    base = path.name[:-3] if path.name.endswith(".xz") else path.name
    if base.endswith(".jsonl"):
        records: Iterable[dict] = parse_jsonl(text, str(path), required=_jsonl_field(text))
    else:  # corrupted documents, one per non-empty line
        records = ({"source": line, "doc": f"line{n}"} for n, line in enumerate(text.splitlines(), 1) if line.strip())
    data = _from_records(str(path), records, limit, config)
    if not data.sources:
        raise RestoreError(f"{path}: no data to evaluate (empty file?)")
    return data


def _jsonl_field(text: str) -> str:
    """``text`` for article files (also ``restore corrupt`` output, which adds ``source``),
    ``source`` for pair and source files; judged by the first record."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    try:
        record = json.loads(first) if first else {}
    except json.JSONDecodeError:
        return "source"  # parse_jsonl reports the bad line
    return "text" if isinstance(record, dict) and "text" in record and "target" not in record else "source"


def _from_records(path: str, records: Iterable[dict], limit: int | None, config: ChunkConfig) -> EvalData:
    from restore.data import article_pairs  # the training pairing, reused as is

    data = EvalData(path, "", [], [])
    for lineno, record in enumerate(records, 1):
        if limit is not None and len(data) >= limit:
            break
        doc = record.get("doc", record.get("id", f"record{lineno}"))
        if isinstance(record.get("text"), str) and "target" not in record:
            kind = "articles"
            sources, targets, _, _ = article_pairs(record["text"], config)
            items = [(s, t, doc, i) for i, (s, t) in enumerate(zip(sources, targets))]
        elif not isinstance(record.get("source"), str):
            raise RestoreError(f"{path}:{lineno}: expected a string field 'source' (pairs, sources) or 'text' (articles)")
        elif isinstance(record.get("target"), str):
            kind = "pairs"
            items = [(record["source"], record["target"], record.get("doc"), record.get("chunk"))]
        else:  # a corrupted document alone: cut into chunks like inference, faithfulness per chunk
            kind = "sources"
            items = [(c, None, doc, i) for i, c in enumerate(chunk_text(record["source"], config))]
        if data.kind and kind != data.kind:
            raise RestoreError(f"{path}: record {lineno} holds {kind}, earlier records {data.kind}: mixed files are not supported")
        data.kind = kind
        for source, target, doc, chunk in items[: None if limit is None else limit - len(data)]:
            data.sources.append(source)
            data.targets.append(target)
            data.docs.append(doc)
            data.chunks.append(chunk)
    if data.kind == "sources":
        data.targets = None
    return data


def group_documents(data: EvalData, outputs: Sequence[str]) -> tuple[list[str], list[str]]:
    """Join consecutive pairs of one article back into (hypothesis, reference) documents.

    A run continues while ``doc`` stays the same and ``chunk`` goes up by one; chunks are
    joined like inference joins them (``"\\n\\n"`` before a heading chunk, else ``" "``).

    >>> d = EvalData("x", "pairs", ["a .", "# # b .", "c ."], ["A.", "## B", "C."], ["d1", "d1", "d2"], [0, 1, 0])
    >>> group_documents(d, ["a.", "## b", "c."])
    (['a.\\n\\n## b', 'c.'], ['A.\\n\\n## B', 'C.'])
    """
    assert data.targets is not None
    hyps: list[str] = []
    refs: list[str] = []
    previous: tuple | None = None
    for source, target, output, doc, chunk in zip(data.sources, data.targets, outputs, data.docs, data.chunks):
        continues = (
            previous is not None and doc is not None and chunk is not None
            and previous[0] == doc and previous[1] is not None and chunk == previous[1] + 1
        )
        if continues:
            glue = chunk_joiner(source)
            hyps[-1] += glue + output
            refs[-1] += glue + target
        else:
            hyps.append(output)
            refs.append(target)
        previous = (doc, chunk)
    return hyps, refs


# --- length buckets and the plot -----------------------------------------------------------------
def length_bucket(n_tokens: int) -> str:
    """Source-length bucket in corrupted tokens: steps of 8 up to 48 (the chunk size), then doubling.

    >>> [length_bucket(n) for n in (0, 5, 8, 9, 33, 48, 49, 200)]
    ['1-8', '1-8', '1-8', '9-16', '33-40', '41-48', '49-96', '193-384']
    """
    lower, upper = 0, 8
    while n_tokens > upper:
        lower, upper = upper, upper + 8 if upper < 48 else upper * 2
    return f"{lower + 1}-{upper}"


def bucket_scores(data: EvalData, outputs: Sequence[str], exact: Sequence[bool]) -> list[dict]:
    """Per source-length bucket: items, chunk-level BLEU (pairs only), round-trip exact %, content F1 %."""
    groups: dict[str, list[int]] = {}
    for i, source in enumerate(data.sources):
        groups.setdefault(length_bucket(len(source.split())), []).append(i)
    rows = []
    for label in sorted(groups, key=lambda b: int(b.split("-")[0])):
        idx = groups[label]
        counts = [content_counts(outputs[i], data.sources[i]) for i in idx]
        row = {
            "bucket": label,
            "items": len(idx),
            "roundtrip_exact": 100.0 * sum(exact[i] for i in idx) / len(idx),
            "content_f1": 100.0 * prf(*(sum(c[k] for c in counts) for k in range(3)))[2],
        }
        if data.targets is not None:
            row["bleu"] = corpus_bleu([outputs[i] for i in idx], [data.targets[i] for i in idx])
        rows.append(row)
    return rows


def write_plot(path: str | os.PathLike, buckets: list[dict], title: str) -> None:
    """PNG of BLEU and faithfulness by source-length bucket, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{b['bucket']}\n(n={b['items']})" for b in buckets]
    x = range(len(buckets))
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    if all("bleu" in b for b in buckets):
        ax.bar(x, [b["bleu"] for b in buckets], color="#9ecae1", label="BLEU (chunk level)")
    ax.plot(x, [b["roundtrip_exact"] for b in buckets], "o-", color="#d95f02", label="round-trip exact %")
    ax.plot(x, [b["content_f1"] for b in buckets], "s--", color="#1b9e77", label="content F1 %")
    ax.set_xticks(list(x), labels)
    ax.set_ylim(0, 105)
    ax.set_xlabel("source length (corrupted tokens)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=3, fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    try:
        with atomic_output(path, binary=True) as f:
            fig.savefig(f, format="png")
    finally:
        plt.close(fig)


# --- running a system and reporting --------------------------------------------------------------
def score_outputs(data: EvalData, outputs: Sequence[str]) -> dict:
    """All scores of ``outputs`` on ``data``: documents BLEU/chrF (pairs only), faithfulness, buckets."""
    _check_lengths(outputs, data.sources, "outputs", "sources")
    faith = faithfulness(outputs, data.sources)
    exact = faith.pop("exact_per_item")
    scores: dict = {"faithfulness": faith}
    if data.targets is not None:
        hyp_docs, ref_docs = group_documents(data, outputs)
        scores.update(corpus_scores(hyp_docs, ref_docs))
        scores["documents"] = len(hyp_docs)
        scores["chunk_level_bleu"] = corpus_bleu(outputs, data.targets)
    scores["buckets"] = bucket_scores(data, outputs, exact)
    scores["inserted_words"] = inserted_words(outputs, data.sources, data.targets)  # restore.spans
    return scores


def run_system(system, sources: Sequence[str], desc: str) -> tuple[list[str], float]:
    """Outputs of ``system.restore_many`` (order kept) and the seconds it took, with progress."""
    from restore.progress import progress

    start = time.perf_counter()
    outputs = list(progress(system.restore_many(sources), total=len(sources), desc=desc, unit="item"))
    seconds = time.perf_counter() - start
    if len(outputs) != len(sources):
        raise RestoreError(f"{desc}: the system returned {len(outputs)} outputs for {len(sources)} inputs")
    return outputs, seconds


def format_summary(scores: dict, n_items: int, unit: str, documents: int | None = None) -> list[str]:
    """The lines ``restore eval`` prints: BLEU, chrF, lowercase BLEU with signatures, then faithfulness."""
    lines = [scores[k]["line"] for k in ("bleu", "chrf", "bleu_lowercase") if k in scores]
    f = scores["faithfulness"]
    of_docs = f" of {plural(documents, 'document')}" if documents is not None else ""
    lines.append(
        f"faithfulness|recorrupt:{SPEC_VERSION} = round-trip exact {f['roundtrip_exact']:.2f}% "
        f"({f['roundtrip_exact_count']}/{n_items} {unit}{of_docs}), content F1 {f['content_f1']:.2f} "
        f"(P {f['content_precision']:.2f}, R {f['content_recall']:.2f}; stems, punctuation excluded)"
    )
    return lines + ([scores["inserted_words"]["line"]] if "inserted_words" in scores else [])


def _stats_dict(stats: InferStats | None) -> dict | None:
    """A model's run counts (``restore.infer.InferStats``) as JSON-ready numbers."""
    if stats is None:
        return None
    return {**asdict(stats), "generated_tokens_per_s": stats.tokens_per_second}


class DocumentRestorer(Protocol):
    """What evaluation runs: a model's :class:`restore.infer.Restorer` or a baseline
    (:mod:`restore.baselines`); restored documents come back in input order."""

    def restore_many(self, documents: Iterable[str]) -> Iterator[str]: ...


# A baseline runs in this Python process, on one core.
BASELINE_ENGINE = {"backend": "python", "compute_type": None, "device": "cpu", "threads": 1,
                   "description": "python baseline, cpu, 1 thread"}  # fmt: skip


@dataclass
class System:
    """What is evaluated: a model's Restorer or a baseline, and what the report says about it."""

    restorer: DocumentRestorer
    name: str
    chunking: ChunkConfig  # how articles and plain sources are cut for it
    device: str = "cpu"
    model: dict | None = None
    stats: InferStats | None = None  # a model's generation and faithfulness counts (baselines: None)
    faithful: bool = False  # whether outputs were verified and repaired (restore.faithful)
    engine: dict = field(default_factory=lambda: dict(BASELINE_ENGINE))  # what generated (engine_record)


def engine_record(generator) -> dict:
    """The engine a model ran on, as ``restore infer``'s summary names it (``description``) and
    field by field for the report: backend, compute type, device, threads (CTranslate2 on the
    CPU: workers and threads per worker)."""
    from restore.backend_ct2 import CTranslate2Generator
    from restore.backends import TorchGenerator

    record: dict = {"backend": type(generator).__name__, "compute_type": None}
    if isinstance(generator, CTranslate2Generator):
        record = {"backend": "ctranslate2", "compute_type": generator.compute_type, "device": generator.device}
        if generator.device == "cpu":
            record.update(workers=generator.workers, threads_per_worker=generator.threads_per_worker,
                          threads=generator.workers * generator.threads_per_worker)  # fmt: skip
    elif isinstance(generator, TorchGenerator):
        import torch

        record = {"backend": "torch", "compute_type": str(generator.dtype).removeprefix("torch."), "device": generator.device.type}
        if generator.device.type == "cpu":
            record["threads"] = torch.get_num_threads()
    return {**record, "description": generator.describe()}


def load_system(
    *, model: str | os.PathLike | None = None, baseline: str | None = None, lexicon: str | os.PathLike | None = None, **settings
) -> System:
    """The ``baseline`` (``identity`` or ``dictionary``, whose lexicon is ``lexicon``, else the
    model's), or else the ``model`` directory (default: the shipped one) loaded by
    :func:`restore.load` with ``settings``, ``restore infer``'s options (``device``, ``backend``,
    ``compute_type``, ``batch_tokens``, ``quality``, ``num_beams``, ``length_penalty``, ``faithful``)."""
    from restore.checkpoint import RESTORE_JSON, default_model_dir, resolve_model

    if baseline:
        from restore.baselines import make_baseline

        lexicon_dir = lexicon or model
        if baseline == "dictionary" and lexicon_dir is None:
            try:  # the shipped model's lexicon, if there is one
                lexicon_dir = default_model_dir()
            except RestoreError:
                pass  # make_baseline says how to get a lexicon
        restorer = make_baseline(baseline, lexicon_dir)
        return System(restorer, f"baseline:{baseline}", ChunkConfig(), "cpu", {"lexicon": str(lexicon_dir)} if lexicon_dir else None)
    info = resolve_model(model)
    from restore.api import load
    from restore.device import describe

    restorer = load(info.path, **settings).restorer
    restore_json = json.loads((info.path / RESTORE_JSON).read_text(encoding="utf-8"))
    # The device alone (the threads are the engine's: CTranslate2 runs its own workers, not torch's threads).
    device = describe(restorer.device) if restorer.device.type == "cuda" else restorer.device.type
    return System(restorer, f"model:{info.path.name}", info.chunking, device,
                  {"path": str(info.path), "restore_json": restore_json}, restorer.stats, restorer.faithful,
                  engine_record(restorer.generator))  # fmt: skip


def build_report(
    system: System, data: EvalData, outputs: Sequence[str], scores: dict, lines: list[str], seconds: float, *, settings: dict
) -> dict:
    """The JSON report: ``settings`` (what was asked for), model, data, scores with signatures, buckets, timings."""
    from restore import __version__

    source_tokens = sum(len(s.split()) for s in data.sources)
    return {
        "restore_version": __version__,
        "system": system.name,
        "settings": settings,
        "model": system.model,
        "engine": system.engine,
        "data": {
            "path": data.path, "kind": data.kind, "items": len(data), "unit": unit_of(data),
            "documents": len(set(data.docs)) if data.kind == "sources" else scores.get("documents"),
            "source_tokens": source_tokens,
            "chunking": None if data.kind == "pairs" else {"max_source_words": system.chunking.max_source_words},
            "corruption_spec": SPEC_VERSION,
        },
        "scores": {k: v for k, v in scores.items() if k != "buckets"},
        "summary": lines,
        "buckets": scores["buckets"],
        "timings": {
            "seconds": round(seconds, 3),
            "device": system.device,
            "engine": system.engine["description"],
            "items_per_s": len(outputs) / max(seconds, 1e-9),
            "source_tokens_per_s": source_tokens / max(seconds, 1e-9),
            "output_words_per_s": sum(len(o.split()) for o in outputs) / max(seconds, 1e-9),
            "restorer_stats": _stats_dict(system.stats),
        },
    }


def unit_of(data: EvalData) -> str:
    return "chunks" if data.kind == "sources" else "pairs"


def write_report(path: str | os.PathLike, report: dict, data: EvalData, outputs: Sequence[str]) -> tuple[Path, Path, Path]:
    """Write ``report.json``, ``report.png`` and ``report.outputs.jsonl`` (each atomically)."""
    from restore.textio import dump_jsonl_line, write_text_atomic

    report_path = Path(path)
    plot_path, outputs_path = report_path.with_suffix(".png"), report_path.with_suffix(".outputs.jsonl")
    try:
        report_path.parent.mkdir(parents=True, exist_ok=True)  # e.g. runs/eval/ on a fresh clone
    except OSError as e:
        raise RestoreError(f"{report_path.parent}: cannot create the report directory ({e.strerror})") from None
    write_text_atomic(report_path, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    write_plot(plot_path, report["buckets"], f"{report['system']} on {Path(data.path).name}")
    targets = data.targets or [None] * len(data)
    records = (  # roundtrip_exact: the output corrupts back to exactly its source (the faithfulness score per item)
        {"doc": d, "chunk": c, "source": s, "output": o, "roundtrip_exact": roundtrip_exact(o, s), **({"target": t} if t is not None else {})}
        for d, c, s, o, t in zip(data.docs, data.chunks, data.sources, outputs, targets)
    )
    write_text_atomic(outputs_path, "".join(dump_jsonl_line(r) for r in records))
    return report_path, plot_path, outputs_path
