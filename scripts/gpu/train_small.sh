#!/usr/bin/env bash
# Train the shipped model (configs/small.yaml: a mix of Wikipedia and other prose) and evaluate it
# per domain (`test`, `prose-test`), in one call of at most 10 minutes on a lent GPU machine; what
# comes back is written to $OUT (at most 8 files < 16 MiB).
#
# Prepare here (git-ignored folders, named in the device tool's `carry`; 64 MiB in all with the
# tracked files): the config's files, one folder per corpus, and the wheels:
#   mkdir -p .whl && cp ../shared/wheels/*.whl .whl/      # nltk 3.9.2, datasets 5.2.0, dill, multiprocess
#   python scripts/gpu/carry_data.py --config configs/small.yaml --to .data --also .whl   # copies, measures, fails over 64 MiB
# (.data/wiki/{train,dev}/ and .data/prose/{train,dev}/: the files of each corpus of the config.)
# Run there:   bash scripts/gpu/train_small.sh       (carry [".data", ".whl"], timeout_s 600)
# Dry run on the CPU (tiny model on the carried mix: its first articles; an 8-minute call, most of it
# for the evaluation: an untrained model fails every chunk, and each is re-decoded with beams and repaired):
#   rm -rf /tmp/restore-dry*; mkdir -p /tmp/out && OUT=/tmp/out RUN=/tmp/restore-dry WHEELS=/nonexistent \
#     CONFIG=configs/tiny.yaml BATCH_TOKENS=8192 TOTAL_SECONDS=480 EVAL_SECONDS=300 EVAL_LIMIT=30 \
#     COMPILE=false PYTHON=.venv/bin/python bash scripts/gpu/train_small.sh
#
# Data: every folder $DATA/NAME/ (default .data) replaces the files of the config's corpus NAME
# (data.corpora.NAME.train_files = $DATA/NAME/train/*, dev_files = $DATA/NAME/dev/*); the weights
# are the config's. Without $DATA the config's own paths are used (../shared beside the checkout).
#
# Time plan (TOTAL_SECONDS, default 600 less a 25 s margin): wheels and imports, then
# `restore train` with train.time_budget_minutes set to what is left after EVAL_SECONDS for the
# evaluation: the run measures its step rate after a warm-up and ends its LR schedule when the
# budget ends, then evaluates on dev and exports (bf16 weights, shards < 15 MB). A hard
# train.time_limit_minutes stops it (checkpoint + export) should it run late, and the latest
# export is copied to $OUT every minute, so even a cut-off call returns a model. Then
# `restore eval --data test --data prose-test --quality fast` (greedy, torch on the GPU, with and without
# faithfulness repair): each domain's scores and a table with a row per domain.
#
# $OUT gets: model-0000N-of-0000M.safetensors + model.safetensors.index.json (the weights),
# model-files.tar.gz (config, generation config, tokenizer, restore.json, lexicon.json.gz,
# train_config.yaml), train.log, eval-test.txt (scores with signatures and the per-domain tables,
# both settings) and, where matplotlib is installed, eval-test.tar.gz (the JSON reports, plots and outputs).
set -uo pipefail
: "${OUT:?set OUT to the folder whose files come back}"
started=$(date +%s)
CONFIG=${CONFIG:-configs/small.yaml}
DATA=${DATA:-.data}
WHEELS=${WHEELS:-.whl}
PYTHON=${PYTHON:-python3}
TOTAL_SECONDS=${TOTAL_SECONDS:-575}   # the device call's 600 s, less a margin for the copy back
EVAL_SECONDS=${EVAL_SECONDS:-75}      # kept after training for the two evaluations on test and prose-test
EVAL_LIMIT=${EVAL_LIMIT:-}            # evaluate the first N pairs of each domain only (dry runs)
RUN=${RUN:-/tmp/restore-run}            # the run's output; its reports go to $RUN-eval
CACHE=${CACHE:-/tmp/restore-cache}    # prepared pairs and ids
BATCH_TOKENS=${BATCH_TOKENS:-65536}   # per step; the setting measured on an H200 (2.94 steps/s before the attention fix)
COMPILE=${COMPILE:-true}              # torch.compile the training step (one log line and eager steps if it fails)
RATE_WARMUP_STEPS=${RATE_WARMUP_STEPS:-40}  # steps before the rate is timed: the compilation happens in them
deadline=$((started + TOTAL_SECONDS))

if compgen -G "$WHEELS/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
"$PYTHON" - <<'PY' 2>&1 | tee "$OUT/train.log"
import os, torch, transformers, pyarrow, datasets, nltk
dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
print(f"device {dev}, {os.cpu_count()} CPUs; torch {torch.__version__}, transformers {transformers.__version__}, "
      f"datasets {datasets.__version__}, pyarrow {pyarrow.__version__}, nltk {nltk.__version__}")
PY

pack() {  # copy the latest complete export into $OUT (restore.json is written last)
  [ -f "$RUN/restore.json" ] || return 0
  rm -f "$OUT"/model*.safetensors*
  cp "$RUN"/model*.safetensors* "$OUT"/ 2>/dev/null
  tar czf "$OUT/model-files.tar.gz.tmp" -C "$RUN" --exclude='model*.safetensors*' --exclude='checkpoint*' . \
    && mv "$OUT/model-files.tar.gz.tmp" "$OUT/model-files.tar.gz"
}
(while sleep 60; do pack; done) &
packer=$!

data_args=()
for folder in "$DATA"/*/; do  # one folder per corpus of the config (scripts/gpu/carry_data.py)
  [ -d "$folder" ] || continue
  name=$(basename "$folder")
  train=$(ls "$folder"train/* 2>/dev/null | paste -sd, -)
  dev=$(ls "$folder"dev/* 2>/dev/null | paste -sd, -)
  [ -n "$train" ] && data_args+=("data.corpora.$name.train_files=[$train]" "data.corpora.$name.dev_files=[$dev]")
done
echo "data: ${data_args[*]:-as the config names it}" | tee -a "$OUT/train.log"
# Seconds for training, setup included: what is left now, less the evaluation and ~10 s of imports.
budget=$(( deadline - $(date +%s) - EVAL_SECONDS - 10 ))
minutes=$(awk -v s="$budget" 'BEGIN { printf "%.2f", s / 60 }')
limit=$(awk -v s="$budget" 'BEGIN { printf "%.2f", (s + 15) / 60 }')
echo "time: $(( $(date +%s) - started ))s used; training budget ${minutes} min (hard limit ${limit} min)" | tee -a "$OUT/train.log"
"$PYTHON" -m restore train --config "$CONFIG" "${data_args[@]}" \
  "train.output_dir=$RUN" "train.time_budget_minutes=$minutes" "train.time_limit_minutes=$limit" "train.batch_tokens=$BATCH_TOKENS" \
  "train.compile=$COMPILE" "train.rate_warmup_steps=$RATE_WARMUP_STEPS" \
  train.max_shard_size=14MB "data.cache_dir=$CACHE" 2>&1 | tee -a "$OUT/train.log"
status=${PIPESTATUS[0]}
kill "$packer" 2>/dev/null
pack

if [ -f "$RUN/restore.json" ]; then
  limit_args=()
  [ -n "$EVAL_LIMIT" ] && limit_args=(--limit "$EVAL_LIMIT")
  mkdir -p "$RUN-eval"
  report=()
  "$PYTHON" -c "import matplotlib" 2>/dev/null && report=(--report "$RUN-eval/domains.json")
  domains=(--data test --data prose-test)
  left=$(( deadline - $(date +%s) ))
  {
    echo "== restore eval --data test --data prose-test --model RUN --backend torch --quality fast (greedy, faithfulness repair on)"
    timeout "$(( left * 2 / 3 ))" "$PYTHON" -m restore eval "${domains[@]}" --model "$RUN" --backend torch --quality fast "${limit_args[@]}" "${report[@]}" \
      || echo "(exit status $?; 124 = stopped by timeout after $(( left * 2 / 3 ))s)"
    echo "== restore eval --data test --data prose-test --model RUN --backend torch --quality fast --no-faithful (the model alone)"
    left=$(( deadline - $(date +%s) ))
    timeout "$(( left > 5 ? left - 5 : 1 ))" "$PYTHON" -m restore eval "${domains[@]}" --model "$RUN" --backend torch --quality fast --no-faithful "${limit_args[@]}" \
      || echo "(exit status $?; 124 = stopped by timeout)"
  } 2>&1 | tee "$OUT/eval-test.txt"
  [ ${#report[@]} -gt 0 ] && ls "$RUN-eval"/domains.* >/dev/null 2>&1 && tar czf "$OUT/eval-test.tar.gz" -C "$RUN-eval" .
fi
echo "time: $(( $(date +%s) - started ))s in all" | tee -a "$OUT/train.log"
ls -la "$OUT"
exit "$status"
