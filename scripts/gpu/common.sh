# shellcheck shell=bash
# What scripts/gpu/train_small.sh and scripts/gpu/continue_small.sh share; sourced by both, never run on its own:
#   setup_python        the carried wheels installed, this checkout on PYTHONPATH, a line of versions starting train.log
#   data_overrides C M  data_args=(the restore train overrides that make config C's corpora read what $DATA/NAME/ holds,
#                       laid out by carry_data.py or prepare_continue.py; the weights stay C's); M: leave out the shards
#                       model M's lineage has seen (scripts/gpu/carry_data.py --overrides-from)
#   pack                the latest complete export of $RUN into $OUT (weight files + model-files.tar.gz)
#   train_in_budget S … `restore train --config $CONFIG "${data_args[@]}"` within what is left of the call less S
#                       seconds (kept for what follows), the LR schedule ending with the budget, a hard limit 15 s
#                       later, the export packed into $OUT every minute and at the end; more overrides after S
#   finish              the total time, the files of $OUT (8 come back), exit with the training's status
# The caller sets OUT, PYTHON, WHEELS, DATA, CONFIG, RUN, CACHE, BATCH_TOKENS, COMPILE, COMPILE_BACKEND,
# RATE_WARMUP_STEPS, MAX_SHARD, EVAL_LIMIT, started and deadline (Unix seconds).

DOMAINS=(--data test --data prose-test)  # the evaluation sets: Wikipedia (2,264 pairs) and other prose (2,401 pairs)
train_status=1

log() { echo "$*" | tee -a "$OUT/train.log"; }

setup_python() {
  if compgen -G "$WHEELS/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$WHEELS"/*.whl || return 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
  "$PYTHON" - <<'PY' 2>&1 | tee "$OUT/train.log"
import os, torch, transformers, pyarrow, datasets, nltk
dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
print(f"device {dev}, {os.cpu_count()} CPUs; torch {torch.__version__}, transformers {transformers.__version__}, "
      f"datasets {datasets.__version__}, pyarrow {pyarrow.__version__}, nltk {nltk.__version__}")
PY
}

data_overrides() {
  local found status
  mkdir -p "$(dirname "$RUN")"
  found=$("$PYTHON" scripts/gpu/carry_data.py --config "$1" --overrides-from "$DATA" ${2:+--unseen-by "$2"} 2>"$RUN-data.txt")
  status=$?
  tee -a "$OUT/train.log" <"$RUN-data.txt"
  data_args=()
  [ -n "$found" ] && mapfile -t data_args <<<"$found"
  return "$status"
}

pack() {  # restore.json is written last: its presence marks a complete export
  [ -f "$RUN/restore.json" ] || return 0
  rm -f "$OUT"/model*.safetensors
  cp "$RUN"/model*.safetensors "$OUT"/ 2>/dev/null
  tar czf "$OUT/model-files.tar.gz.tmp" -C "$RUN" --exclude='model*.safetensors' --exclude='checkpoint*' . \
    && mv "$OUT/model-files.tar.gz.tmp" "$OUT/model-files.tar.gz"
}

train_in_budget() {
  local reserved=$1 budget minutes limit packer
  shift
  budget=$(( deadline - $(date +%s) - reserved - 10 ))  # ~10 s of imports
  minutes=$(awk -v s="$budget" 'BEGIN { printf "%.2f", s / 60 }')
  limit=$(awk -v s="$budget" 'BEGIN { printf "%.2f", (s + 15) / 60 }')
  log "time: $(( $(date +%s) - started ))s used; training budget ${minutes} min (hard limit ${limit} min); ${reserved}s kept for what follows"
  (while sleep 60; do pack; done) &
  packer=$!
  "$PYTHON" -m restore train --config "$CONFIG" "${data_args[@]}" "train.output_dir=$RUN" "train.time_budget_minutes=$minutes" \
    "train.time_limit_minutes=$limit" "train.batch_tokens=$BATCH_TOKENS" "train.compile=$COMPILE" "train.compile_backend=$COMPILE_BACKEND" \
    "train.rate_warmup_steps=$RATE_WARMUP_STEPS" "train.max_shard_size=$MAX_SHARD" "data.cache_dir=$CACHE" "$@" 2>&1 | tee -a "$OUT/train.log"
  train_status=${PIPESTATUS[0]}
  kill "$packer" 2>/dev/null
  pack
  limit_args=()  # for the evaluations that follow: the first EVAL_LIMIT pairs of each set (dry runs)
  [ -n "$EVAL_LIMIT" ] && limit_args=(--limit "$EVAL_LIMIT")
  [ -f "$RUN/restore.json" ]  # true when there is a model to evaluate
}

finish() {
  log "time: $(( $(date +%s) - started ))s in all"
  ls -la "$OUT"
  [ "$(ls "$OUT" | wc -l)" -le 8 ] || echo "$(basename "$0"): more than 8 files in \$OUT: only 8 come back" >&2
  exit "$train_status"
}
