#!/usr/bin/env bash
# Continue training the shipped model on shards it has not seen, in one call of at most 10 minutes on a
# lent GPU; evaluate old and new model on `test` and write the verdict (REPLACE or KEEP). What comes back is
# written to $OUT: at most 8 files, each < 16 MiB.
#
# Prepare here, in the checkout that makes the device call (picks the shards the model's lineage has not
# seen that fit beside the working tree and the wheels in the call's 64 MiB, says which, copies them into
# .data/ with dev.jsonl.xz, and the wheels into .whl/):
#   python scripts/gpu/prepare_continue.py
# Run there:   bash scripts/gpu/continue_small.sh       (carry [".data", ".whl"], timeout_s 600)
# MODE=scratch trains CONFIG from scratch instead (e.g. CONFIG=configs/medium.yaml; prepare with
# `python scripts/gpu/prepare_continue.py --from-scratch`) and compares it with the shipped model the same way.
#
# Dry run on the CPU, in an activated virtualenv: a tiny start model trained here without dropout (so that
# its first-step loss equals its loss before training), 40 articles of a shard it has not seen, 50 test
# pairs, the step compiled with COMPILE_BACKEND=aot_eager (traced, no code generated: inductor takes ~3 min
# on 2 CPU cores):
#   rm -rf /tmp/tiny-start; python -m restore train --config configs/tiny.yaml model.dropout=0 train.max_steps=300 \
#     train.output_dir=/tmp/tiny-start data.cache_dir=/tmp/restore-cache
#   python scripts/gpu/prepare_continue.py --model /tmp/tiny-start --shards ../shared/data/wiki/train-10.jsonl.xz \
#     --data-dir /tmp/dry-data --wheels /nonexistent
#   OUT=/tmp/out MODEL=/tmp/tiny-start CONFIG=configs/tiny.yaml DATA=/tmp/dry-data WHEELS=/nonexistent TOTAL_SECONDS=360 \
#     EVAL_SECONDS=100 EVAL_LIMIT=50 PROBE_SECONDS=60 PROBE_CONFIG=configs/tiny.yaml COMPILE_BACKEND=aot_eager \
#     BATCH_TOKENS=4096 WARMUP_STEPS=10 RATE_WARMUP_STEPS=5 EXTRA="data.max_train_articles=40 train.rate_steps=5" PYTHON=python \
#     bash scripts/gpu/continue_small.sh
#
# Time plan (TOTAL_SECONDS, default 600 less a 25 s margin): wheels and imports; `restore train` from
# model.init_from=$MODEL (tokenizer kept) on the unseen shards, with train.time_budget_minutes set to what is
# left after EVAL_SECONDS and PROBE_SECONDS: the LR re-warms over WARMUP_STEPS to LR and decays to 0 when the
# budget ends (the step rate is measured after RATE_WARMUP_STEPS steps, which include the compilation); the
# log says the start model's loss on the first batches and the first step's loss (equal when the weights
# loaded), tokens/s and model FLOP/s. A hard train.time_limit_minutes stops it (checkpoint + export) should
# it run late, and the latest export is copied to $OUT every minute. Then scripts/gpu/compare_models.py:
# old and new model on `test` (torch on the GPU, greedy), without faithfulness repair, then with it while the
# time allows; verdict.json says REPLACE (the new model's BLEU is higher) or KEEP. Last, for PROBE_SECONDS
# (0: none), PROBE_CONFIG (configs/medium.yaml) trains from scratch on the same (cached) pairs, eager, to
# measure its rate (its log lines go to train.log; its weights stay there).
#
# $OUT gets: model-0000N-of-0000M.safetensors (the new model's bf16 weights: 2 files for small, 4 for medium;
# model.safetensors when one file holds them),
# model-files.tar.gz (model.safetensors.index.json, config, generation config, tokenizer, restore.json with the lineage,
# lexicon.json.gz, train_config.yaml), train.log, eval-test.txt (every evaluation's summary lines and the
# verdict), verdict.json and, while fewer than 8 files are there, eval-reports.tar.gz (the JSON reports).
# The call cannot commit: a session that reads REPLACE copies the new model into models/restore-small.
set -uo pipefail
: "${OUT:?set OUT to the folder whose files come back}"
started=$(date +%s)
MODE=${MODE:-continue}                 # continue: from MODEL's weights; scratch: CONFIG from scratch
CONFIG=${CONFIG:-configs/small.yaml}
MODEL=${MODEL:-models/restore-small}   # the shipped model: the start (continue) and the model to beat
DATA=${DATA:-.data}
WHEELS=${WHEELS:-.whl}
PYTHON=${PYTHON:-python3}
TOTAL_SECONDS=${TOTAL_SECONDS:-575}    # the device call's 600 s, less a margin for the copy back
EVAL_SECONDS=${EVAL_SECONDS:-75}       # kept after training for compare_models.py (old and new, both settings)
EVAL_LIMIT=${EVAL_LIMIT:-}             # evaluate the first N test pairs only (dry runs)
PROBE_SECONDS=${PROBE_SECONDS:-$([ "$MODE" = continue ] && echo 60 || echo 0)}  # a rate probe of PROBE_CONFIG at the end (0: none)
PROBE_CONFIG=${PROBE_CONFIG:-configs/medium.yaml}
PROBE_COMPILE=${PROBE_COMPILE:-false}  # eager: comparable with small's eager 1.457M tokens/s, and no compilation in 60 s
RUN=${RUN:-/tmp/restore-run}
BATCH_TOKENS=${BATCH_TOKENS:-65536}    # per step, as the shipped model was trained
LR=${LR:-4e-4}                         # continue: the peak of the re-warmed schedule (the first run's was 7e-4)
WARMUP_STEPS=${WARMUP_STEPS:-200}
RATE_WARMUP_STEPS=${RATE_WARMUP_STEPS:-40}  # steps before the rate is timed: the compilation happens in them
COMPILE=${COMPILE:-true}
COMPILE_BACKEND=${COMPILE_BACKEND:-inductor}
MAX_SHARD=${MAX_SHARD:-15MB}           # weight files under 16 MiB (small: 2, medium: 4)
EXTRA=${EXTRA:-}                       # more key=value overrides for restore train (dry runs)
deadline=$((started + TOTAL_SECONDS))
case "$RUN" in /tmp/*) rm -rf "$RUN" /tmp/restore-probe ;; esac  # a dry run's earlier run (a lent machine starts bare)
[ "$MODE" = continue ] || [ "$MODE" = scratch ] || { echo "continue_small.sh: MODE must be continue or scratch" >&2; exit 2; }

if compgen -G "$WHEELS/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TORCH_LOGS=${TORCH_LOGS:-recompiles}
log() { echo "$*" | tee -a "$OUT/train.log"; }
"$PYTHON" - <<'PY' 2>&1 | tee "$OUT/train.log"
import os, torch, transformers, pyarrow, datasets, nltk
dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
print(f"device {dev}, {os.cpu_count()} CPUs; torch {torch.__version__}, transformers {transformers.__version__}, "
      f"datasets {datasets.__version__}, pyarrow {pyarrow.__version__}, nltk {nltk.__version__}")
PY

# The shards to train on: those in $DATA that the start model's lineage has not seen (all of them from scratch).
lineage_of=$MODEL
[ "$MODE" = scratch ] && lineage_of=
picked=$("$PYTHON" - "$DATA" "$lineage_of" <<'PY' 2>&1
import glob, json, sys
from pathlib import Path
from restore.lineage import has_seen, local_shard, model_lineage
data, model = sys.argv[1], sys.argv[2]
lineage = model_lineage(json.loads((Path(model) / "restore.json").read_text())) if model else []
files = sorted(glob.glob(f"{data}/train-*.jsonl.xz"))
unseen = [f for f in files if not has_seen(local_shard(f), lineage)]
seen = sorted(set(files) - set(unseen))
print(f"shards in {data}: {len(files)}; unseen by {model or 'a model from scratch'}: {', '.join(unseen) or 'none'}"
      + (f"; seen (not used): {', '.join(seen)}" if seen else ""))
print("use: " + ",".join(unseen))
PY
)
log "$(grep -v '^use: ' <<<"$picked")"
shards=$(sed -n 's/^use: //p' <<<"$picked")
if [ -z "$shards" ]; then
  log "continue_small.sh: no unseen shard in $DATA (run scripts/gpu/prepare_continue.py first)"
  exit 1
fi

pack() {  # copy the latest complete export into $OUT (restore.json is written last)
  [ -f "$RUN/restore.json" ] || return 0
  rm -f "$OUT"/model*.safetensors
  cp "$RUN"/model*.safetensors "$OUT"/ 2>/dev/null
  tar czf "$OUT/model-files.tar.gz.tmp" -C "$RUN" --exclude='model*.safetensors' --exclude='checkpoint*' . \
    && mv "$OUT/model-files.tar.gz.tmp" "$OUT/model-files.tar.gz"
}
(while sleep 60; do pack; done) &
packer=$!

dev_args=()
[ -f "$DATA/dev.jsonl.xz" ] && dev_args=("data.dev_files=[$DATA/dev.jsonl.xz]")
start_args=()
[ "$MODE" = continue ] && start_args=("model.init_from=$MODEL" "tokenizer.path=$MODEL" "train.lr=$LR" "train.warmup_steps=$WARMUP_STEPS")
# Seconds for training, setup included: what is left now, less the evaluation, the probe and ~10 s of imports.
budget=$(( deadline - $(date +%s) - EVAL_SECONDS - PROBE_SECONDS - 10 ))
minutes=$(awk -v s="$budget" 'BEGIN { printf "%.2f", s / 60 }')
limit=$(awk -v s="$budget" 'BEGIN { printf "%.2f", (s + 15) / 60 }')
log "time: $(( $(date +%s) - started ))s used; training budget ${minutes} min (hard limit ${limit} min); mode $MODE"
# shellcheck disable=SC2086
"$PYTHON" -m restore train --config "$CONFIG" "data.train_files=[$shards]" "${dev_args[@]}" "${start_args[@]}" \
  "train.output_dir=$RUN" "train.time_budget_minutes=$minutes" "train.time_limit_minutes=$limit" "train.batch_tokens=$BATCH_TOKENS" \
  "train.compile=$COMPILE" "train.compile_backend=$COMPILE_BACKEND" "train.rate_warmup_steps=$RATE_WARMUP_STEPS" \
  train.eval_bleu_pairs=0 "train.max_shard_size=$MAX_SHARD" data.cache_dir=/tmp/restore-cache $EXTRA 2>&1 | tee -a "$OUT/train.log"
status=${PIPESTATUS[0]}
kill "$packer" 2>/dev/null
pack

if [ -f "$RUN/restore.json" ]; then
  limit_args=()
  [ -n "$EVAL_LIMIT" ] && limit_args=(--limit "$EVAL_LIMIT")
  rm -rf /tmp/restore-compare
  "$PYTHON" scripts/gpu/compare_models.py --old "$MODEL" --new "$RUN" --out /tmp/restore-compare --data test --backend torch \
    --deadline "$(( deadline - PROBE_SECONDS ))" "${limit_args[@]}" 2>&1 | tee "$OUT/eval-test.txt"
  cp /tmp/restore-compare/verdict.json "$OUT/" 2>/dev/null
  tail -n 1 "$OUT/eval-test.txt" >> "$OUT/train.log"
  if [ "$(ls "$OUT" | wc -l)" -lt 8 ] && ls /tmp/restore-compare/*.json >/dev/null 2>&1; then
    tar czf "$OUT/eval-reports.tar.gz" -C /tmp/restore-compare --exclude='*.outputs.jsonl' --exclude='*.png' .
  fi
fi

left=$(( deadline - $(date +%s) ))
if [ "$PROBE_SECONDS" -gt 0 ] && [ "$left" -gt 20 ]; then
  probe=$(( left < PROBE_SECONDS ? left : PROBE_SECONDS ))
  plimit=$(awk -v s="$probe" 'BEGIN { printf "%.2f", (s - 15) / 60 }')
  log "== rate probe: $PROBE_CONFIG from scratch on the same pairs for ${probe}s (train.time_limit_minutes=$plimit)"
  # shellcheck disable=SC2086
  timeout "$probe" "$PYTHON" -m restore train --config "$PROBE_CONFIG" "data.train_files=[$shards]" "${dev_args[@]}" \
    train.output_dir=/tmp/restore-probe "train.time_limit_minutes=$plimit" "train.batch_tokens=$BATCH_TOKENS" \
    "train.compile=$PROBE_COMPILE" "train.compile_backend=$COMPILE_BACKEND" train.max_steps=100000 train.log_every=20 \
    train.eval_every=0 train.export_every=0 train.eval_bleu_pairs=0 train.eval_pairs=64 data.cache_dir=/tmp/restore-cache $EXTRA \
    2>&1 | tee -a "$OUT/train.log"
fi
log "time: $(( $(date +%s) - started ))s in all"
ls -la "$OUT"
[ "$(ls "$OUT" | wc -l)" -le 8 ] || echo "continue_small.sh: more than 8 files in \$OUT: only 8 come back" >&2
exit "$status"
