"""``restore eval``: score a model or a baseline on one evaluation set, or on several (domains).

One ``--data`` prints the scores (:func:`restore.evaluate.format_summary`) and, with ``--report``,
writes the JSON report, its plot and the outputs. Several (``--data test --data prose-test``)
load the model once and score each set in turn: a ``== NAME`` line before each set's lines, then
one Markdown table with a row per domain (:func:`domain_table`); ``--report out.json`` then
writes each set's report as ``out.NAME.json`` (with its plot and outputs) and ``out.json`` with
the table. Every data problem is reported before the model loads.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from restore.chunking import ChunkConfig
from restore.errors import RestoreError
from restore.evaluate import (
    EvalData,
    System,
    build_report,
    format_summary,
    load_eval_data,
    load_system,
    resolve_data_path,
    run_system,
    score_outputs,
    unit_of,
    write_report,
)


@dataclass
class DomainScores:
    """One evaluation set's results: what the report and the table need."""

    name: str
    data: EvalData
    outputs: list[str]
    scores: dict
    lines: list[str]
    seconds: float

    def row(self) -> dict:
        """The table row: items, documents, BLEU, chrF (pairs only), round-trip exact %, content F1."""
        f = self.scores["faithfulness"]
        documents = self.scores.get("documents") if self.data.targets is not None else len(set(self.data.docs))
        return {
            "domain": self.name, "items": len(self.data), "unit": unit_of(self.data), "documents": documents,
            "bleu": self.scores["bleu"]["score"] if "bleu" in self.scores else None,
            "chrf": self.scores["chrf"]["score"] if "chrf" in self.scores else None,
            "roundtrip_exact": f["roundtrip_exact"], "content_f1": f["content_f1"], "seconds": round(self.seconds, 1),
        }  # fmt: skip


def domain_names(specs: list[str]) -> list[str]:
    """A name per ``--data``: a fixed split's name as given, a file's name without its extensions;
    a name given twice is numbered.

    >>> domain_names(["test", "prose-test", "runs/dev.jsonl.xz", "other/dev.jsonl"])
    ['test', 'prose-test', 'dev', 'dev-2']
    """
    names: list[str] = []
    for spec in specs:
        base = Path(spec).name.split(".")[0] or "data"
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names


def domain_table(rows: list[dict]) -> list[str]:
    """A Markdown table with one row per domain (scores with two decimals; ``-`` where a set has no targets).

    >>> rows = [{"domain": "test", "items": 2264, "unit": "pairs", "documents": 150, "bleu": 38.031, "chrf": 74.02,
    ...          "roundtrip_exact": 99.78, "content_f1": 100.0}]
    >>> print("\\n".join(domain_table(rows)))
    | domain | items | documents | BLEU | chrF | round-trip exact | content F1 |
    |---|---:|---:|---:|---:|---:|---:|
    | test | 2,264 pairs | 150 | 38.03 | 74.02 | 99.78% | 100.00 |
    """

    def num(value) -> str:
        return "-" if value is None else f"{value:.2f}"

    lines = ["| domain | items | documents | BLEU | chrF | round-trip exact | content F1 |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['domain']} | {r['items']:,} {r['unit']} | {r['documents'] if r['documents'] is not None else '-'} | "
            f"{num(r['bleu'])} | {num(r['chrf'])} | {r['roundtrip_exact']:.2f}% | {r['content_f1']:.2f} |"
        )
    return lines


def score_domain(system: System, data: EvalData, name: str) -> DomainScores:
    """Run ``system`` on one set and score it; a model's counters start from zero for each set."""
    if system.stats is not None:
        from restore.infer import InferStats

        system.restorer.stats = system.stats = InferStats()  # type: ignore[attr-defined]
    outputs, seconds = run_system(system.restorer, data.sources, desc=f"eval {system.name}")
    scores = score_outputs(data, outputs)
    lines = format_summary(scores, len(data), unit_of(data), len(set(data.docs)) if data.kind == "sources" else None)
    if system.faithful and system.stats is not None:
        # Before repair: the share whose first decode (greedy or the beam's best) failed; after: the faithfulness line above.
        lines.append(system.stats.faithful.summary())
    return DomainScores(name, data, outputs, scores, lines, seconds)


def run_eval_cli(args) -> None:
    """``restore eval``: score a model or baseline on one or several sets, print the scores, write reports."""
    specs = [args.data] if isinstance(args.data, str) else list(args.data)
    if args.report:
        _check_output_path(args.report)
    if args.limit is not None and args.limit < 1:
        raise RestoreError(f"--limit must be at least 1, got {args.limit}")
    for spec in specs:  # a missing file or model is reported before a model is loaded
        data_path = resolve_data_path(spec)
        if not data_path.is_file():
            raise RestoreError(f"{data_path}: {'is a directory, expected a data file' if data_path.is_dir() else 'no such file'}")
    chunking = ChunkConfig()  # a baseline's; a model's comes from its restore.json
    if not args.baseline:
        from restore.checkpoint import resolve_model

        chunking = resolve_model(args.model).chunking
    # Every data problem (binary, not UTF-8, a bad line) is reported before a model is loaded.
    datasets = [load_eval_data(spec, args.limit, chunking) for spec in specs]
    system = load_system(  # a model's process is set up as restore infer's (restore.load)
        model=args.model, baseline=args.baseline, lexicon=args.lexicon, device=args.device, backend=args.backend,
        compute_type=args.compute_type, batch_tokens=args.batch_tokens, quality=args.quality, num_beams=args.num_beams,
        length_penalty=args.length_penalty, faithful=args.faithful,
    )  # fmt: skip
    settings = {
        "model": args.model, "baseline": args.baseline, "lexicon": args.lexicon, "data": specs[0] if len(specs) == 1 else specs,
        "limit": args.limit, "device": args.device, "backend": args.backend, "compute_type": args.compute_type,
        "quality": args.quality, "num_beams": args.num_beams, "length_penalty": args.length_penalty,
        "batch_tokens": args.batch_tokens, "faithful": args.faithful,
    }  # fmt: skip
    several = len(specs) > 1
    results = []
    for name, data in zip(domain_names(specs), datasets):
        if several:
            print(f"== {name}: {len(data):,} {unit_of(data)} of {data.path}", flush=True)
        result = score_domain(system, data, name)
        results.append(result)
        print("\n".join(result.lines), flush=True)
        rate = sum(len(s.split()) for s in data.sources) / max(result.seconds, 1e-9)
        print(f"eval: {system.name} on {len(data)} {unit_of(data)} of {data.path} in {result.seconds:.1f} s "
              f"({len(data) / max(result.seconds, 1e-9):.1f} {unit_of(data)}/s, {rate:.0f} source tokens/s); "
              f"engine: {system.engine['description']}", file=sys.stderr)  # fmt: skip
        if args.report:
            path = Path(args.report)
            path = path.with_name(f"{path.stem}.{name}{path.suffix or '.json'}") if several else path
            report = build_report(system, data, result.outputs, result.scores, result.lines, result.seconds, settings=settings)
            paths = write_report(path, report, data, result.outputs)
            print(f"eval: wrote {', '.join(map(str, paths))}", file=sys.stderr)
    if several:
        rows = [r.row() for r in results]
        table = domain_table(rows)
        print(f"== {system.name}, per domain ({system.engine['description']})")
        print("\n".join(table))
        if args.report:
            _write_domains_report(Path(args.report), system, settings, rows, table)


def _write_domains_report(path: Path, system: System, settings: dict, rows: list[dict], table: list[str]) -> None:
    from restore import __version__
    from restore.textio import write_text_atomic

    for row in rows:
        row["report"] = path.with_name(f"{path.stem}.{row['domain']}{path.suffix or '.json'}").name
    report = {
        "restore_version": __version__, "system": system.name, "settings": settings, "model": system.model,
        "engine": system.engine, "domains": rows, "table": table,
    }  # fmt: skip
    write_text_atomic(path, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"eval: wrote {path}", file=sys.stderr)


def _check_output_path(report: str) -> None:
    """A --report path that can be written: not a directory, and its missing parent directories
    can be created (they are, when the report is written) under a directory."""
    target = Path(report)
    if target.is_dir():
        raise RestoreError(f"{target}: --report is a directory, expected a .json file path")
    existing = next(p for p in target.absolute().parents if p.exists())
    if not existing.is_dir():
        raise RestoreError(f"{existing}: is not a directory, cannot hold the --report {target}")
