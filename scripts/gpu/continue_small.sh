#!/usr/bin/env bash
# Continue training the shipped model on the mix of its config (configs/small.yaml: Wikipedia 0.6, other prose
# 0.4) with shards its lineage has not seen, in one call of at most 10 minutes on a lent GPU; evaluate old and new
# model on `test` (Wikipedia) and `prose-test` and write the verdict (REPLACE or KEEP). What comes back is written
# to $OUT: at most 8 files, each < 16 MiB. One call checks issue 22's goal (a continued model at BLEU >= 45 on
# test) and issue 26's (prose-test BLEU up by 5 or more, test down by at most 1): compare_models.py prints both.
#
# Prepare here, in the checkout that makes the device call (for each corpus of the config, the shards the
# model's lineage has not seen, sharing what fits beside the tree and the wheels in the call's 64 MiB by the
# corpora's weights; says which and why; lays them out as .data/NAME/{train,dev}/, wheels in .whl/):
#   python scripts/gpu/prepare_continue.py
# Run there:   bash scripts/gpu/continue_small.sh       (carry [".data", ".whl"], timeout_s 600)
# MODE=scratch trains CONFIG from scratch instead (e.g. CONFIG=configs/medium.yaml; prepare with
# `python scripts/gpu/prepare_continue.py --from-scratch --config configs/medium.yaml`) and compares it with the
# shipped model the same way.
#
# Dry run on the CPU, in an activated virtualenv (about 7 minutes on 2 cores): a tiny start model trained here
# on the tiny mix without dropout (so that its first-step loss equals its loss before training), the shards it
# has not seen picked for both corpora of configs/tiny.yaml (the real carry budget, no wheels) into .data, 40
# articles of each corpus, 30 pairs of each test set, the step compiled with COMPILE_BACKEND=aot_eager (traced,
# no code generated: inductor takes ~3 min on 2 CPU cores); everything else under one folder of /tmp:
#   D=/tmp/continue-dry; rm -rf $D; mkdir -p $D/out; python -m restore train --config configs/tiny.yaml model.dropout=0 \
#     train.max_steps=300 train.output_dir=$D/start data.cache_dir=$D/cache
#   python scripts/gpu/prepare_continue.py --config configs/tiny.yaml --model $D/start --wheels /nonexistent
#   OUT=$D/out RUN=$D/run CACHE=$D/cache MODEL=$D/start CONFIG=configs/tiny.yaml WHEELS=/nonexistent TOTAL_SECONDS=540 \
#     EVAL_SECONDS=200 EVAL_LIMIT=30 PROBE_SECONDS=60 PROBE_CONFIG=configs/tiny.yaml COMPILE_BACKEND=aot_eager \
#     BATCH_TOKENS=4096 WARMUP_STEPS=10 RATE_WARMUP_STEPS=5 EXTRA="data.max_train_articles=40 train.rate_steps=5" \
#     PYTHON=python bash scripts/gpu/continue_small.sh
# (then `python scripts/gpu/prepare_continue.py` again: the real call's .data is the shipped model's pick)
#
# Data: every corpus NAME of CONFIG reads $DATA/NAME/train/* and $DATA/NAME/dev/* (data.corpora.NAME.train_files
# and dev_files overrides; the weights stay the config's), less (and naming) any shard MODEL's lineage has seen.
#
# Time plan (TOTAL_SECONDS, default 600 less a 25 s margin for the copy back): wheels, imports and the carried
# shards' hashes (~15 s); `restore train` from model.init_from=$MODEL (tokenizer kept) with
# train.time_budget_minutes set to what is left after EVAL_SECONDS and PROBE_SECONDS (~390 s, of which ~40 s
# prepare the pairs of the 3 shards and ~30-60 s compile): the LR re-warms over WARMUP_STEPS to LR and decays to
# 0 when the budget ends (the step rate is measured after RATE_WARMUP_STEPS steps, which include the
# compilation); the log says the start model's loss on the first batches and the first step's loss (equal when
# the weights loaded), tokens/s and model FLOP/s. A hard train.time_limit_minutes stops it (checkpoint + export)
# should it run late, and the latest export is copied to $OUT every minute. Then scripts/gpu/compare_models.py
# (EVAL_SECONDS, default 100): old and new model on test and prose-test in one `restore eval` each (torch on the
# GPU, greedy `--quality fast`), first without faithfulness repair (H200: ~1.1 s on test, ~1.3 s on prose-test,
# plus a model load of ~5-10 s: ~25 s for both models), then with it while the time allows (~10.5 s on test and
# ~13 s on prose-test: ~60 s for both models with their loads); verdict.json says REPLACE (mean BLEU over the two
# domains higher, neither down by more than 1; with repair when both models were scored with it) or KEEP, and
# the issue goals are printed with their deltas. Last, for PROBE_SECONDS (0: none), PROBE_CONFIG
# (configs/medium.yaml) trains from scratch on the same (cached) Wikipedia pairs, eager, to measure its rate (its
# log lines go to train.log; its weights stay there).
#
# $OUT gets (7 files): model-0000N-of-0000M.safetensors (the new model's bf16 weights: 2 files for small, 4 for
# medium; model.safetensors when one file holds them), model-files.tar.gz (model.safetensors.index.json, config,
# generation config, tokenizer, restore.json with the lineage, lexicon.json.gz, train_config.yaml), train.log,
# eval-test.txt (every evaluation's summary lines and per-domain tables, the goals and the verdict), verdict.json
# and, while fewer than 8 files are there, eval-reports.tar.gz (the JSON reports).
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
EVAL_SECONDS=${EVAL_SECONDS:-100}      # kept after training for compare_models.py (old and new, two domains, both settings)
EVAL_LIMIT=${EVAL_LIMIT:-}             # evaluate the first N pairs of each set only (dry runs)
PROBE_SECONDS=${PROBE_SECONDS:-$([ "$MODE" = continue ] && echo 60 || echo 0)}  # a rate probe of PROBE_CONFIG at the end (0: none)
PROBE_CONFIG=${PROBE_CONFIG:-configs/medium.yaml}
PROBE_COMPILE=${PROBE_COMPILE:-false}  # eager: comparable with small's eager 1.457M tokens/s, and no compilation in 60 s
RUN=${RUN:-/tmp/restore-run}         # the new model; the comparison goes to $RUN-compare, the probe to $RUN-probe
CACHE=${CACHE:-/tmp/restore-cache}     # prepared pairs and ids (the probe reuses them)
BATCH_TOKENS=${BATCH_TOKENS:-65536}    # per step, as the shipped model was trained
LR=${LR:-4e-4}                         # continue: the peak of the re-warmed schedule (the first run's was 7e-4)
WARMUP_STEPS=${WARMUP_STEPS:-200}
RATE_WARMUP_STEPS=${RATE_WARMUP_STEPS:-40}  # steps before the rate is timed: the compilation happens in them
COMPILE=${COMPILE:-true}
COMPILE_BACKEND=${COMPILE_BACKEND:-inductor}
MAX_SHARD=${MAX_SHARD:-15MB}           # weight files under 16 MiB (small: 2, medium: 4)
EXTRA=${EXTRA:-}                       # more key=value overrides for restore train (dry runs)
deadline=$((started + TOTAL_SECONDS))
case "$RUN" in /tmp/*) rm -rf "$RUN" "$RUN-compare" "$RUN-probe" ;; esac  # a dry run's earlier run (a lent machine starts bare)
[ "$MODE" = continue ] || [ "$MODE" = scratch ] || { echo "continue_small.sh: MODE must be continue or scratch" >&2; exit 2; }
# shellcheck source=scripts/gpu/common.sh
. "$(dirname "$0")/common.sh"
export TORCH_LOGS=${TORCH_LOGS:-recompiles}

setup_python || exit 1
# The data: what $DATA/NAME/ holds for each corpus, less the shards the start model has seen (none from scratch).
start_args=()
[ "$MODE" = continue ] && start_args=("model.init_from=$MODEL" "tokenizer.path=$MODEL" "train.lr=$LR" "train.warmup_steps=$WARMUP_STEPS")
seen_by=
[ "$MODE" = continue ] && seen_by=$MODEL
data_overrides "$CONFIG" "$seen_by" || { log "continue_small.sh: no data to train on (run scripts/gpu/prepare_continue.py first)"; exit 1; }
[ ${#data_args[@]} -gt 0 ] || { log "continue_small.sh: nothing in $DATA/NAME/ for $CONFIG (run scripts/gpu/prepare_continue.py first)"; exit 1; }
log "data: ${data_args[*]}; mode $MODE"

# shellcheck disable=SC2086
if train_in_budget $((EVAL_SECONDS + PROBE_SECONDS)) "${start_args[@]}" train.eval_bleu_pairs=0 $EXTRA; then
  "$PYTHON" scripts/gpu/compare_models.py --old "$MODEL" --new "$RUN" --out "$RUN-compare" "${DOMAINS[@]}" --backend torch \
    --deadline "$(( deadline - PROBE_SECONDS ))" "${limit_args[@]}" 2>&1 | tee "$OUT/eval-test.txt"
  cp "$RUN-compare/verdict.json" "$OUT/" 2>/dev/null
  tail -n 1 "$OUT/eval-test.txt" >> "$OUT/train.log"
  if [ "$(ls "$OUT" | wc -l)" -lt 8 ] && ls "$RUN-compare"/*.json >/dev/null 2>&1; then
    tar czf "$OUT/eval-reports.tar.gz" -C "$RUN-compare" --exclude='*.outputs.jsonl' --exclude='*.png' .
  fi
fi

left=$(( deadline - $(date +%s) ))
if [ "$PROBE_SECONDS" -gt 0 ] && [ "$left" -gt 20 ] && data_overrides "$PROBE_CONFIG"; then
  probe=$(( left < PROBE_SECONDS ? left : PROBE_SECONDS ))
  plimit=$(awk -v s="$probe" 'BEGIN { printf "%.2f", (s - 15) / 60 }')
  log "== rate probe: $PROBE_CONFIG from scratch on ${data_args[*]} for ${probe}s (train.time_limit_minutes=$plimit)"
  # shellcheck disable=SC2086
  timeout "$probe" "$PYTHON" -m restore train --config "$PROBE_CONFIG" "${data_args[@]}" \
    "train.output_dir=$RUN-probe" "train.time_limit_minutes=$plimit" "train.batch_tokens=$BATCH_TOKENS" \
    "train.compile=$PROBE_COMPILE" "train.compile_backend=$COMPILE_BACKEND" train.max_steps=100000 train.log_every=20 \
    train.eval_every=0 train.export_every=0 train.eval_bleu_pairs=0 train.eval_pairs=64 "data.cache_dir=$CACHE" $EXTRA \
    2>&1 | tee -a "$OUT/train.log"
fi
finish
