"""Score an old and a new model on the same domains, and say which one to keep: ``verdict.json``.

Runs ``restore eval --data test --data prose-test`` (in this process: one model load per run, a
table per domain) on both models, greedy (``--quality fast``: the compact decoder on the GPU),
first without faithfulness repair (the model alone: fast), then, while the time left allows, with
it (as ``restore`` runs by default); prints each run's lines as ``restore eval`` does; writes each
run's reports to ``OUT/{old,new}-{no-faithful,faithful}.json`` (the per-domain table) and
``.DOMAIN.json`` beside it, and ``OUT/verdict.json``.

The verdict (:func:`restore.lineage.verdict`), in the setting both models were scored in (with
repair when both have it, else without): **REPLACE** when the new model's mean BLEU over the domains
is higher than the old one's and no domain's BLEU drops by more than 1; otherwise **KEEP** (a tie
keeps the old model). Before it, the issue goals with their deltas (:data:`GOALS`): issue 22, a
continued model at BLEU >= 45 on ``test``; issue 26, ``prose-test`` BLEU up by 5 or more with
``test`` down by at most 1. The last line is the verdict::

    python scripts/gpu/compare_models.py --old models/restore-small --new /tmp/restore-run --out /tmp/compare \\
        --data test --data prose-test --backend torch --deadline "$(( $(date +%s) + 120 ))"

It decides nothing else: the session that reads ``verdict.json`` copies the new model over the
shipped one (REPLACE) or not (KEEP).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # this checkout's restore, wherever the script runs from

from restore.cli import main as restore_main  # noqa: E402
from restore.eval_run import domain_names  # noqa: E402
from restore.lineage import MAX_DOMAIN_DROP, read_lineage, verdict  # noqa: E402

# Greedy (--quality fast): the compact decoder on the GPU, and the model alone; the default beam search
# would run transformers' generate there, not measured on a GPU yet.
SETTINGS = {"no-faithful": ["--quality", "fast", "--no-faithful"], "faithful": ["--quality", "fast"]}
# Repair took about 10x the model alone on the H200 (test: 10.5 s vs 1.1 s), plus a model load.
REPAIR_FACTOR, LOAD_SECONDS = 10, 15
# The goals the next GPU call checks, per domain: (issue, what, test on (new, old) BLEU).
GOALS = {
    "test": [("issue 22", "new >= 45", lambda new, old: new >= 45),
             ("issue 26", f"new >= old - {MAX_DOMAIN_DROP:g}", lambda new, old: new >= old - MAX_DOMAIN_DROP)],
    "prose-test": [("issue 26", "new >= old + 5", lambda new, old: new >= old + 5)],
}  # fmt: skip


class OutOfTime(Exception):
    pass


def _alarm(signum, frame):
    raise OutOfTime


def evaluate(model: str, setting: str, args, report: Path, seconds: int | None) -> dict | None:
    """One ``restore eval`` run on every domain: ``{domain: {"scores", "seconds"}}`` (None if it failed or ran out of time)."""
    argv = ["eval", *(a for d in args.data for a in ("--data", d)), "--model", model, "--backend", args.backend,
            "--device", args.device, *SETTINGS[setting], "--report", str(report)]  # fmt: skip
    if args.limit:
        argv += ["--limit", str(args.limit)]
    print(f"== restore {' '.join(argv)}", flush=True)
    if seconds is not None:
        signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(max(1, seconds))
    try:
        code = restore_main(argv)
    except OutOfTime:
        print(f"(stopped: out of time after {seconds} s)", flush=True)
        return None
    finally:
        signal.alarm(0)
    sys.stdout.flush()
    names = domain_names(args.data)
    paths = {d: report.with_name(f"{report.stem}.{d}.json") if len(names) > 1 else report for d in names}
    if code != 0 or not all(p.is_file() for p in paths.values()):
        print(f"(exit status {code})", flush=True)
        return None
    payloads = {d: json.loads(p.read_text(encoding="utf-8")) for d, p in paths.items()}
    return {d: {"scores": p["scores"], "seconds": p["timings"]["seconds"]} for d, p in payloads.items()}


def goal_lines(summary: dict) -> tuple[list[str], list[dict]]:
    """The issue goals (:data:`GOALS`) against the old and new BLEU of each setting both models were scored in."""
    lines, records = [], []
    for setting, by_model in summary.items():
        if "old" not in by_model or "new" not in by_model:
            continue
        for domain, goals in GOALS.items():
            if domain not in by_model["old"] or domain not in by_model["new"]:
                continue
            old, new = by_model["old"][domain]["bleu"], by_model["new"][domain]["bleu"]
            delta = round(new - old, 2) + 0.0  # no -0.00
            checks = [(issue, what, bool(test(new, old))) for issue, what, test in goals]
            lines.append(f"goals, {setting}: {domain} BLEU {old:.2f} -> {new:.2f} ({delta:+.2f}); "
                         + "; ".join(f"{issue} ({what}): {'met' if ok else 'not met'}" for issue, what, ok in checks))  # fmt: skip
            records += [{"setting": setting, "domain": domain, "issue": issue, "goal": what, "old_bleu": old, "new_bleu": new,
                         "delta": delta, "met": ok} for issue, what, ok in checks]  # fmt: skip
    return lines, records


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", required=True, help="the shipped model directory")
    p.add_argument("--new", required=True, help="the candidate model directory")
    p.add_argument("--out", type=Path, required=True, help="folder for the reports and verdict.json")
    p.add_argument("--data", action="append", help="what restore eval --data takes, once per domain (default: test and prose-test)")
    p.add_argument("--limit", type=int, default=None, help="the first N pairs of each domain only (dry runs)")
    p.add_argument("--backend", default="torch")
    p.add_argument("--device", default="auto")
    p.add_argument("--deadline", type=float, default=None, help="Unix time by which the last evaluation must end")
    args = p.parse_args(argv)
    args.data = args.data or ["test", "prose-test"]
    args.out.mkdir(parents=True, exist_ok=True)
    left = lambda: None if args.deadline is None else int(args.deadline - time.time())  # noqa: E731
    results: dict[str, dict] = {"old": {}, "new": {}}
    for setting in SETTINGS:
        if setting == "faithful" and left() is not None:
            runs = [results[m]["no-faithful"] for m in results if "no-faithful" in results[m]]
            need = sum(REPAIR_FACTOR * sum(d["seconds"] for d in run.values()) + LOAD_SECONDS for run in runs)
            if len(runs) < 2 or left() < need:
                print(f"(no time for the evaluations with faithfulness repair: {left()} s left, about {need:.0f} s needed)")
                break
        for name, model in (("old", args.old), ("new", args.new)):
            seconds = left()
            if seconds is not None and seconds < 5:
                print(f"(no time left for {name} {setting})")
                continue
            result = evaluate(model, setting, args, args.out / f"{name}-{setting}.json", seconds)
            if result:
                results[name][setting] = result
    scores = {name: {s: {d: r["scores"] for d, r in run.items()} for s, run in runs.items()} for name, runs in results.items()}
    decision = verdict(scores["old"], scores["new"])
    summary = {
        s: {name: {d: {"bleu": sc["bleu"]["score"], "chrf": sc["chrf"]["score"], "roundtrip_exact": sc["faithfulness"]["roundtrip_exact"]}
                   for d, sc in by_setting[s].items()} for name, by_setting in scores.items() if s in by_setting}
        for s in SETTINGS
    }  # fmt: skip
    lines, goals = goal_lines(summary)
    payload = {
        **decision, "old_model": args.old, "new_model": args.new, "data": args.data, "limit": args.limit,
        "rule": f"REPLACE when the new model's mean BLEU over the domains is higher and no domain drops by more than {MAX_DOMAIN_DROP:g}",
        "scores": summary, "goals": goals, "new_lineage": read_lineage(args.new, missing_ok=True),
    }  # fmt: skip
    (args.out / "verdict.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(f"verdict: {decision['decision']} ({decision['reason']})")
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
