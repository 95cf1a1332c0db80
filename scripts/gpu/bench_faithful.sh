#!/usr/bin/env bash
# Issue 23: what faithfulness costs on one GPU with the shipped model (models/restore-small), in one
# call of at most 3 minutes; every result is written to $OUT as soon as it exists (7 files).
#
# Prepare here (git-ignored folders, named in the device tool's `carry`; 7.8 MB with the wheel):
#   mkdir -p .data .whl && cp ../shared/data/wiki/train-10.jsonl.xz .data/ && cp ../shared/wheels/nltk-3.9.2-py3-none-any.whl .whl/
# Run there:   bash scripts/gpu/bench_faithful.sh          (carry [".data", ".whl"], timeout_s 240)
# Dry run on the CPU (as it was run on the 2-core Intel VM, torch on the CPU, tiny counts: 71 s at a
# load average of 3, every step complete, and again after --quality fast was pinned, 2026-12-04: 45 s
# at a load average of 1, 7 files; with EVAL_LIMIT=60 GOAL_CHUNKS=120 it took 17 minutes at 10):
#   OUT=/tmp/w23/gpu-dry2/out DEVICE=cpu WHEELS=/nonexistent PYTHON=/work/main/.venv/bin/python EVAL_LIMIT=10 \
#     GOAL_CHUNKS=30 WARMUP_CHUNKS=8 NAIVE_CHUNKS=2 GENERATE_BATCH=8 IDENTITY_CHUNKS=4 TIME_BOX=30 INPUTS= ROUNDS=1 \
#     TOTAL_SECONDS=1200 EVAL_SECONDS=200 GOAL_SECONDS=400 FAITHFUL_SECONDS=300 bash scripts/gpu/bench_faithful.sh
#
# Steps (each with its own time limit, within TOTAL_SECONDS in all, so that a slow one cannot take
# the others' results):
# 1. eval-test.txt: `restore eval --data test --quality fast` (torch; bf16 on the GPU; greedy on the compact
#    decoder, as the issue measured it) without and with faithfulness (10.5 s vs 1.1 s before; target: within 2x);
# 2. goal.txt/.json: scripts/bench_infer.py --goal with the trained model at natural lengths on
#    10,000+ chunks of train-10 articles, the Restorer end to end with and without faithfulness
#    (target: 150,000 generated tokens/s or more with faithfulness on);
# 3. faithful.txt/.json: scripts/bench_faithful.py, the same pairs and examples/seed.txt in one process,
#    faithfulness off / on with the automatic pool of check workers / on with the checks inline,
#    and where a faithful run's time goes (generation, checks, beam re-decodes, repair, the rest);
# 4. summary.txt: the three targets, met or not.
set -uo pipefail
: "${OUT:?set OUT to the folder whose files come back}"
started=$(date +%s)
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
WHEELS=${WHEELS:-.whl}
DATA=${DATA:-.data}
EVAL_LIMIT=${EVAL_LIMIT:-}            # the first N test pairs only (dry runs)
GOAL_CHUNKS=${GOAL_CHUNKS:-10000}
WARMUP_CHUNKS=${WARMUP_CHUNKS:-1000}
NAIVE_CHUNKS=${NAIVE_CHUNKS:-16}
GENERATE_BATCH=${GENERATE_BATCH:-256}
IDENTITY_CHUNKS=${IDENTITY_CHUNKS:-64}
TIME_BOX=${TIME_BOX:-25}              # most seconds of each end-to-end goal row
INPUTS=${INPUTS-examples/seed.txt}    # text files bench_faithful.py restores as restore infer does
ROUNDS=${ROUNDS:-2}                   # bench_faithful.py's interleaved rounds (the first warms up)
TOTAL_SECONDS=${TOTAL_SECONDS:-175}   # the whole script (3 minutes, less a margin for the copy back)
EVAL_SECONDS=${EVAL_SECONDS:-35}      # most seconds of each restore eval run
GOAL_SECONDS=${GOAL_SECONDS:-70}      # ... of bench_infer.py --goal
FAITHFUL_SECONDS=${FAITHFUL_SECONDS:-60}  # ... of bench_faithful.py (whatever is left, at most this)
deadline=$((started + TOTAL_SECONDS))
mkdir -p "$OUT"
rm -rf /tmp/bench-goal /tmp/bench-faithful  # the scripts' own folders: results of this run only
# seconds for a step: at most $1, and no later than the deadline less $2 (kept for the steps after it)
budget() { local left=$(( deadline - $(date +%s) - $2 )); (( left < $1 )) && echo $(( left > 5 ? left : 5 )) || echo "$1"; }

if compgen -G "$WHEELS/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TQDM_DISABLE=1
goal_data=$DATA/train-10.jsonl.xz
[ -f "$goal_data" ] || goal_data=../shared/data/wiki/train-10.jsonl.xz
limit_args=()
[ -n "$EVAL_LIMIT" ] && limit_args=(--limit "$EVAL_LIMIT")
elapsed() { echo "time: $(( $(date +%s) - started )) s since the start" >&2; }

# 1. the command line, as the issue measured it
{
  "$PYTHON" -c "import os, torch, transformers, nltk; print(f'device {torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"cpu\"}, {os.cpu_count()} CPUs; torch {torch.__version__}, transformers {transformers.__version__}, nltk {nltk.__version__}')"
  for faithful in --no-faithful ""; do
    echo "== restore eval --data test --backend torch --device $DEVICE --quality fast ${faithful:-(faithful)}"
    timeout "$(budget "$EVAL_SECONDS" 100)" "$PYTHON" -m restore eval --data test --backend torch --device "$DEVICE" --quality fast ${faithful:+"$faithful"} "${limit_args[@]}"
  done
} > "$OUT/eval-test.txt" 2>&1
elapsed

# 2. the trained model end to end on 10,000+ chunks, natural lengths
timeout "$(budget "$GOAL_SECONDS" 25)" "$PYTHON" scripts/bench_infer.py --goal /tmp/bench-goal --model models/restore-small --device "$DEVICE" \
  --goal-data "$goal_data" --goal-chunks "$GOAL_CHUNKS" --warmup-chunks "$WARMUP_CHUNKS" --naive-chunks "$NAIVE_CHUNKS" \
  --generate-batch "$GENERATE_BATCH" --generate-batches 2 --identity-chunks "$IDENTITY_CHUNKS" --time-box "$TIME_BOX" \
  --only "restorer[compact, no-faithful]" "restorer[compact, faithful]" >> "$OUT/faithful.log" 2>&1
cp /tmp/bench-goal/results.txt "$OUT/goal.txt" 2>/dev/null
cp /tmp/bench-goal/results.json "$OUT/goal.json" 2>/dev/null
elapsed

# 3. stages, and the pool against inline checks
timeout "$(budget "$FAITHFUL_SECONDS" 3)" "$PYTHON" scripts/bench_faithful.py --out /tmp/bench-faithful --device "$DEVICE" --backend torch \
  --input $INPUTS --check-workers auto 0 --rounds "$ROUNDS" --quality fast "${limit_args[@]}" > "$OUT/faithful.log" 2>&1
cp /tmp/bench-faithful/results.txt "$OUT/faithful.txt" 2>/dev/null
cp /tmp/bench-faithful/results.json "$OUT/faithful.json" 2>/dev/null
elapsed

# 4. the targets
"$PYTHON" - "$OUT" <<'PY' > "$OUT/summary.txt" 2>&1
import json, re, sys
from pathlib import Path

out = Path(sys.argv[1])
lines = []
eval_text = (out / "eval-test.txt").read_text() if (out / "eval-test.txt").is_file() else ""
seconds = [float(s) for s in re.findall(r"^eval: .* in ([0-9.]+) s ", eval_text, re.M)]
if len(seconds) == 2:
    lines.append(f"restore eval --data test: {seconds[1]:.1f} s faithful vs {seconds[0]:.1f} s without: "
                 f"{seconds[1] / seconds[0]:.2f}x (target <= 2x: {'met' if seconds[1] <= 2 * seconds[0] else 'NOT met'})")
else:
    lines.append(f"restore eval --data test: incomplete ({len(seconds)} of 2 runs; see eval-test.txt)")
if (out / "faithful.txt").is_file():
    lines += [l for l in (out / "faithful.txt").read_text().splitlines() if re.match(r"^(eval|infer) .* +[0-9.]+ +[0-9.]+$", l)]
goal = json.loads((out / "goal.json").read_text()) if (out / "goal.json").is_file() else {}
for row in goal.get("results", []):
    if row["variant"].startswith("restorer"):
        lines.append(f"{row['variant']}: {row['tokens_per_second']:,.0f} tokens/s, {row['chunks']} chunks, {row['seconds']:.2f} s")
lines += [f"{k}: {v}" for k, v in goal.get("checks", {}).items() if "faithful" in k or "identical" in k]
print("\n".join(lines))
PY
cat "$OUT/summary.txt"
elapsed
