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
# Data: the folder $DATA/NAME/ (default .data) replaces the files of the config's corpus NAME
# (data.corpora.NAME.train_files = $DATA/NAME/train/*, dev_files = $DATA/NAME/dev/*); the weights
# are the config's. A corpus without a folder keeps the config's own paths (../shared beside the checkout).
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
# $OUT gets: model-0000N-of-0000M.safetensors (the weights, shards < 14 MB),
# model-files.tar.gz (model.safetensors.index.json, config, generation config, tokenizer, restore.json,
# lexicon.json.gz, train_config.yaml), train.log, eval-test.txt (scores with signatures and the
# per-domain tables, both settings) and, where matplotlib is installed, eval-test.tar.gz (the JSON
# reports, plots and outputs). What it shares with continue_small.sh is in scripts/gpu/common.sh.
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
COMPILE_BACKEND=${COMPILE_BACKEND:-inductor}
RATE_WARMUP_STEPS=${RATE_WARMUP_STEPS:-40}  # steps before the rate is timed: the compilation happens in them
MAX_SHARD=${MAX_SHARD:-14MB}          # weight files under 16 MiB (the shipped model's 3)
deadline=$((started + TOTAL_SECONDS))
# shellcheck source=scripts/gpu/common.sh
. "$(dirname "$0")/common.sh"

setup_python || exit 1
data_overrides "$CONFIG" || exit 1
log "data: ${data_args[*]:-as the config names it}"
if train_in_budget "$EVAL_SECONDS"; then
  mkdir -p "$RUN-eval"
  report=()
  "$PYTHON" -c "import matplotlib" 2>/dev/null && report=(--report "$RUN-eval/domains.json")
  left=$(( deadline - $(date +%s) ))
  {
    echo "== restore eval ${DOMAINS[*]} --model RUN --backend torch --quality fast (greedy, faithfulness repair on)"
    timeout "$(( left * 2 / 3 ))" "$PYTHON" -m restore eval "${DOMAINS[@]}" --model "$RUN" --backend torch --quality fast "${limit_args[@]}" "${report[@]}" \
      || echo "(exit status $?; 124 = stopped by timeout after $(( left * 2 / 3 ))s)"
    echo "== restore eval ${DOMAINS[*]} --model RUN --backend torch --quality fast --no-faithful (the model alone)"
    left=$(( deadline - $(date +%s) ))
    timeout "$(( left > 5 ? left - 5 : 1 ))" "$PYTHON" -m restore eval "${DOMAINS[@]}" --model "$RUN" --backend torch --quality fast --no-faithful "${limit_args[@]}" \
      || echo "(exit status $?; 124 = stopped by timeout)"
  } 2>&1 | tee "$OUT/eval-test.txt"
  [ ${#report[@]} -gt 0 ] && ls "$RUN-eval"/domains.* >/dev/null 2>&1 && tar czf "$OUT/eval-test.tar.gz" -C "$RUN-eval" .
fi
finish
