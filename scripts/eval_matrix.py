"""Score one model under several decoding settings, side by side: the model card's tables.

Each setting is one ``restore eval`` run in its own process (instruction-set limits such as
``MKL_ENABLE_INSTRUCTIONS`` are read once per process), with its JSON report kept in
``--out``; the script prints a Markdown table of BLEU, chrF, round-trip exact, content F1,
brevity penalty, generated tokens/s and wall time, plus the CPU, the load average around
each run and the whole run time, and writes the same rows to ``OUT/matrix.json`` as it goes.

    # the model card of models/restore-small (12 settings: 3 engines x repair on/off x --quality fast/best)
    python scripts/eval_matrix.py --preset card --out runs/eval-matrix/card
    # CTranslate2 int8 against float32 per instruction-set limit (the 0.3 BLEU rule of --compute-type auto)
    python scripts/eval_matrix.py --preset int8 --record --out runs/eval-matrix/int8   # --record: into restore.json
    python scripts/eval_matrix.py --preset decoding --out runs/eval-matrix/decoding     # beams x length penalty (int8)
    # any settings: LABEL=EVAL ARGS, optionally prefixed by environment assignments
    python scripts/eval_matrix.py --setting "beams 6=--backend ctranslate2 --num-beams 6" --out /tmp/m

A setting reuses its report when ``OUT/<slug>.json`` exists (delete it to measure again).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from restore.cpu import cpu_line  # noqa: E402
from restore.settings import QUALITY  # noqa: E402

ENGINES = {
    "torch fp32": "--backend torch",
    "CTranslate2 int8": "--backend ctranslate2 --compute-type int8",
    "CTranslate2 float32": "--backend ctranslate2 --compute-type float32",
}
AVX2 = "ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 CT2_FORCE_CPU_ISA=AVX2"
# The int8 preset's CPU settings: (label, environment, the library running int8 products, VNNI available to it).
# On an AMD CPU CTranslate2 uses oneDNN whatever CT2_USE_MKL=0 says, so the "MKL" rows are then oneDNN too.
INT8_SETTINGS = (
    ("VNNI (MKL)", "", "MKL", True),
    ("VNNI (oneDNN)", "CT2_USE_MKL=0", "oneDNN", True),
    ("AVX2 limits (MKL)", AVX2, "MKL", False),
    ("AVX2 limits (oneDNN)", f"CT2_USE_MKL=0 {AVX2}", "oneDNN", False),
)
def decoding_label(quality: str) -> str:
    """What a ``--quality`` preset decodes with: ``"greedy"``, ``"beams 6, lp 2.0"``."""
    decoding = QUALITY[quality]
    if decoding.num_beams == 1:
        return "greedy"
    return f"beams {decoding.num_beams}" + (f", lp {decoding.length_penalty}" if decoding.length_penalty != 1.0 else "")


PRESETS = {
    "card": [
        (f"{engine}, {quality} ({decoding_label(quality)}), {faithful}", f"{args} --quality {quality}{'' if faithful == 'repair' else ' --no-faithful'}")
        for engine, args in ENGINES.items()
        for quality in ("fast", "best")
        for faithful in ("repair", "no repair")
    ],
    # Beams and length penalties on the engine --backend auto picks here (int8 on a VNNI CPU): the
    # README's decoding table, from which the --quality presets were chosen.
    "decoding": [
        (f"{label}, {faithful}", f"--backend ctranslate2 --compute-type int8 {args}{'' if faithful == 'repair' else ' --no-faithful'}")
        for label, args in (
            ("greedy", "--num-beams 1"), ("beams 2", "--num-beams 2"), ("beams 4", "--num-beams 4 --length-penalty 1.0"),
            ("beams 4, lp 2.0", "--num-beams 4 --length-penalty 2.0"), ("beams 6", "--num-beams 6 --length-penalty 1.0"),
            ("beams 6, lp 2.0", "--num-beams 6 --length-penalty 2.0"), ("beams 8, lp 2.0", "--num-beams 8 --length-penalty 2.0"),
        )
        for faithful in ("repair", "no repair")
    ],
    "int8": [
        (f"{isa}, {ct}, no repair", f"{env} --backend ctranslate2 --compute-type {ct} --no-faithful --quality fast".strip())
        for isa, env, _, _ in INT8_SETTINGS
        for ct in ("float32", "int8")
    ],
}


def parse_setting(text: str) -> tuple[str, dict, list[str]]:
    """``"label=ENV=1 --flag x"`` -> label, environment, eval arguments.

    >>> parse_setting("int8 avx2=MKL_ENABLE_INSTRUCTIONS=AVX2 --compute-type int8")
    ('int8 avx2', {'MKL_ENABLE_INSTRUCTIONS': 'AVX2'}, ['--compute-type', 'int8'])
    """
    label, sep, rest = text.partition("=")
    if not sep or not label.strip():
        raise SystemExit(f"eval_matrix: setting {text!r}: expected LABEL=ARGS")
    env, args = {}, []
    for word in shlex.split(rest):
        if not args and re.fullmatch(r"[A-Z][A-Z0-9_]*=.*", word):
            key, _, value = word.partition("=")
            env[key] = value
        else:
            args.append(word)
    return label.strip(), env, args


def slug(label: str) -> str:
    """``"torch fp32, beams 4"`` -> ``"torch-fp32-beams-4"``."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def load() -> float:
    return os.getloadavg()[0]


def run_setting(label: str, env: dict, args: list[str], common: list[str], out: Path) -> dict:
    report = out / f"{slug(label)}.json"
    if not report.is_file():
        command = [sys.executable, "-m", "restore", "eval", *common, *args, "--report", str(report)]
        print(f"== {label}: {' '.join(f'{k}={v}' for k, v in env.items())} {shlex.join(command[1:])}", flush=True)
        before = load()
        started = time.perf_counter()
        done = subprocess.run(command, env={**os.environ, **env}, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            print(f"   failed (exit {done.returncode}): {tail}", flush=True)
            return {"label": label, "error": tail}
        summary = [line for line in done.stdout.splitlines() if line.startswith(("eval:", "faithful:", "engine"))]
        extra = {"wall_seconds": round(wall, 1), "load_before": before, "load_after": load(), "env": env, "args": args, "stdout_summary": summary}
        payload = json.loads(report.read_text(encoding="utf-8"))
        payload["matrix"] = extra
        report.write_text(json.dumps(payload, indent=1, ensure_ascii=False), encoding="utf-8")
    payload = json.loads(report.read_text(encoding="utf-8"))
    scores, timings = payload["scores"], payload.get("timings", {})
    stats = timings.get("restorer_stats") or {}
    bleu_line = scores["bleu"]["line"]
    bp = re.search(r"BP = ([0-9.]+)", bleu_line)
    return {
        "label": label,
        "bleu": round(scores["bleu"]["score"], 2),
        "chrf": round(scores["chrf"]["score"], 2),
        "exact": round(scores["faithfulness"]["roundtrip_exact"], 2),
        "content_f1": round(scores["faithfulness"]["content_f1"], 2),
        "bp": float(bp.group(1)) if bp else None,
        "tokens_per_s": round(stats.get("generated_tokens_per_s", 0.0)),
        "seconds": round(timings.get("seconds", 0.0), 1),
        "engine": timings.get("engine") or timings.get("device"),
        "load": [round(payload["matrix"]["load_before"], 2), round(payload["matrix"]["load_after"], 2)],
        "env": payload["matrix"]["env"],
        "args": payload["matrix"]["args"],
    }


def int8_check(rows: list[dict], data: str) -> dict:
    """The ``int8_check`` record of ``restore.json`` from the int8 preset's rows (see
    :func:`restore.backend_choice.int8_measured_without_vnni`, which reads it)."""
    import ctranslate2

    by_label = {r["label"]: r for r in rows if "error" not in r}
    settings = []
    for isa, env, library, vnni in INT8_SETTINGS:
        f32, i8 = by_label.get(f"{isa}, float32, no repair"), by_label.get(f"{isa}, int8, no repair")
        if f32 and i8:
            settings.append({"label": isa, "env": env, "library": library, "vnni": vnni,
                             "float32_bleu": f32["bleu"], "int8_bleu": i8["bleu"], "float32_chrf": f32["chrf"], "int8_chrf": i8["chrf"]})  # fmt: skip
    if not settings:
        raise SystemExit("eval_matrix: --record needs the int8 preset's rows")
    return {
        "criterion": "CTranslate2 int8 BLEU within 0.3 of float32 (greedy, no repair)",
        "data": data, "cpu": cpu_line(), "ctranslate2": ctranslate2.__version__,
        "command": "python scripts/eval_matrix.py --preset int8 --record", "settings": settings,
    }  # fmt: skip


def record_int8_check(model: Path, check: dict) -> None:
    """Write ``check`` into the model's ``restore.json`` (atomically; the weights are not touched)."""
    from restore.textio import write_text_atomic

    path = model / "restore.json"
    payload = json.loads(path.read_text(encoding="utf-8"))
    payload["int8_check"] = check
    write_text_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def table(rows: list[dict]) -> str:
    lines = [
        "| setting | BLEU | chrF | round-trip exact | content F1 | BP | generated tokens/s | eval seconds | load 1-min (before, after) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['label']} | failed: {r['error']} |||||||")
            continue
        lines.append(
            f"| {r['label']} | {r['bleu']:.2f} | {r['chrf']:.2f} | {r['exact']:.2f}% | {r['content_f1']:.2f} | {r['bp']:.3f} "
            f"| {r['tokens_per_s']:,} | {r['seconds']:.1f} | {r['load'][0]:.1f}, {r['load'][1]:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), action="append", default=[])
    parser.add_argument("--setting", action="append", default=[], help='"LABEL=[ENV=VALUE ...] EVAL ARGS" (repeatable)')
    parser.add_argument("--model", default=str(REPO / "models" / "restore-small"))
    parser.add_argument("--data", default="test")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", required=True, help="folder for the reports, matrix.json and matrix.md")
    parser.add_argument("--record", action="store_true",
                        help="with --preset int8: write the result into the model's restore.json (int8_check), which --compute-type auto follows")
    args = parser.parse_args(argv)
    settings = [parse_setting(f"{label}={text}") for preset in args.preset for label, text in PRESETS[preset]]
    settings += [parse_setting(text) for text in args.setting]
    if not settings:
        parser.error("give --preset or --setting")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    common = ["--model", str(Path(args.model).resolve()), "--data", args.data]
    if args.limit:
        common += ["--limit", str(args.limit)]
    started = time.perf_counter()
    rows = []
    for label, env, eval_args in settings:
        rows.append(run_setting(label, env, eval_args, common, out))
        (out / "matrix.json").write_text(json.dumps({"cpu": cpu_line(), "data": args.data, "model": args.model, "rows": rows}, indent=1), encoding="utf-8")
    text = f"CPU: {cpu_line()}; model {args.model}; data {args.data}{f' (first {args.limit})' if args.limit else ''}\n\n{table(rows)}\n"
    text += f"\nscripts/eval_matrix.py ran {len(rows)} settings in {time.perf_counter() - started:.0f} s (reused reports count 0 s)\n"
    (out / "matrix.md").write_text(text, encoding="utf-8")
    print(text)
    if args.record:
        check = int8_check(rows, args.data)
        record_int8_check(Path(args.model), check)
        print(f"eval_matrix: recorded int8_check in {Path(args.model) / 'restore.json'}: "
              + "; ".join(f"{s['label']} {s['int8_bleu'] - s['float32_bleu']:+.2f} BLEU" for s in check["settings"]))


if __name__ == "__main__":
    main()
