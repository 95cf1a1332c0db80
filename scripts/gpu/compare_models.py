"""Score an old and a new model on the same data, and say which one to keep: ``verdict.json``.

Runs ``restore eval`` (in this process, one model load each) on both models, first without
faithfulness repair (the model alone: fast), then, while the time left allows, with it (as
``restore`` runs by default); prints each run's summary lines as ``restore eval`` does; writes
each report to ``OUT/{old,new}-{no-faithful,faithful}.json`` and ``OUT/verdict.json``
(:func:`restore.lineage.verdict`: REPLACE only if the new model's BLEU is higher, with repair
when both were scored with it). The last line is the verdict::

    python scripts/gpu/compare_models.py --old models/restore-small --new /tmp/restore-run --out /tmp/compare \\
        --data test --backend torch --deadline "$(( $(date +%s) + 120 ))"

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
from restore.lineage import verdict  # noqa: E402

# Greedy (--quality fast): the compact decoder on the GPU, and the model alone; the default beam search
# would run transformers' generate there, not measured on a GPU yet.
SETTINGS = {"no-faithful": ["--quality", "fast", "--no-faithful"], "faithful": ["--quality", "fast"]}


class OutOfTime(Exception):
    pass


def _alarm(signum, frame):
    raise OutOfTime


def evaluate(model: str, setting: str, args, report: Path, seconds: int | None) -> dict | None:
    """One ``restore eval`` run; its report's scores and seconds (None if it failed or ran out of time)."""
    argv = ["eval", "--data", args.data, "--model", model, "--backend", args.backend, "--device", args.device,
            *SETTINGS[setting], "--report", str(report)]  # fmt: skip
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
    if code != 0 or not report.is_file():
        print(f"(exit status {code})", flush=True)
        return None
    payload = json.loads(report.read_text(encoding="utf-8"))
    return {"scores": payload["scores"], "seconds": payload["timings"]["seconds"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", required=True, help="the shipped model directory")
    p.add_argument("--new", required=True, help="the candidate model directory")
    p.add_argument("--out", type=Path, required=True, help="folder for the reports and verdict.json")
    p.add_argument("--data", default="test", help="what restore eval --data takes (default: the test split)")
    p.add_argument("--limit", type=int, default=None, help="the first N pairs only (dry runs)")
    p.add_argument("--backend", default="torch")
    p.add_argument("--device", default="auto")
    p.add_argument("--deadline", type=float, default=None, help="Unix time by which the last evaluation must end")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    left = lambda: None if args.deadline is None else int(args.deadline - time.time())  # noqa: E731
    results: dict[str, dict] = {"old": {}, "new": {}}
    for setting in SETTINGS:
        if setting == "faithful" and left() is not None:
            # Repair took about 10x the model alone on the H200 (10.5 s vs 1.1 s on test): both must fit.
            need = sum(10 * results[m]["no-faithful"]["seconds"] + 15 for m in results if "no-faithful" in results[m])
            if not need or left() < need:
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
    scores = {name: {s: r["scores"] for s, r in runs.items()} for name, runs in results.items()}
    decision = verdict(scores["old"], scores["new"])
    summary = {
        s: {name: {"bleu": sc[s]["bleu"]["score"], "chrf": sc[s]["chrf"]["score"],
                   "roundtrip_exact": sc[s]["faithfulness"]["roundtrip_exact"]} for name, sc in scores.items() if s in sc}
        for s in SETTINGS
    }  # fmt: skip
    payload = {
        **decision, "old_model": args.old, "new_model": args.new, "data": args.data, "limit": args.limit,
        "scores": summary, "new_lineage": _lineage(args.new),
    }  # fmt: skip
    (args.out / "verdict.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"verdict: {decision['decision']} ({decision['reason']})")
    return 0


def _lineage(model: str) -> list | None:
    path = Path(model) / "restore.json"
    return json.loads(path.read_text(encoding="utf-8")).get("lineage") if path.is_file() else None


if __name__ == "__main__":
    raise SystemExit(main())
