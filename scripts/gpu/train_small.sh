#!/usr/bin/env bash
# Train the shipped model (configs/small.yaml) in one call on a lent GPU machine, returning it via $OUT.
#
# Prepare on the CPU side (git-ignored folders, named in the device tool's `carry`):
#   mkdir -p .data .whl && cp ../shared/data/wiki/{train-0[0-3],dev}.jsonl.xz .data/   # 4 shards, 44 MB
#   cp ../shared/wheels/*.whl .whl/          # nltk 3.9.2, datasets 5.2.0, dill, multiprocess
# Run there:  bash scripts/gpu/train_small.sh            (carry: .data .whl; timeout_s 600)
# Test here:  OUT=/tmp/out CONFIG=configs/tiny.yaml MINUTES=0.5 bash scripts/gpu/train_small.sh
#
# Training stops itself after $MINUTES (checkpoint + export); an interim model is exported every
# EXPORT_EVERY steps and packed into $OUT every minute, so even a hard timeout returns a usable
# model. $OUT gets: the bf16 weights in shards under 15 MB, model-files.tar.gz (tokenizer,
# config, restore.json, lexicon) and train.log.
set -uo pipefail
: "${OUT:?set OUT to the folder whose files come back}"
CONFIG=${CONFIG:-configs/small.yaml}
DATA=${DATA:-.data}
MINUTES=${MINUTES:-8.5}
EXPORT_EVERY=${EXPORT_EVERY:-1000}
RUN=${RUN:-/tmp/restore-run}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 - <<'PY' 2>&1 | tee "$OUT/train.log"
import torch, transformers, pyarrow, datasets, nltk
dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
print(f"device {dev}; torch {torch.__version__}, transformers {transformers.__version__}, "
      f"datasets {datasets.__version__}, pyarrow {pyarrow.__version__}, nltk {nltk.__version__}")
PY

pack() {  # copy the latest complete export into $OUT (restore.json is written last)
  [ -f "$RUN/restore.json" ] || return 0
  rm -f "$OUT"/model*.safetensors*
  cp "$RUN"/model*.safetensors* "$OUT"/ 2>/dev/null
  tar czf "$OUT/model-files.tar.gz.tmp" -C "$RUN" --exclude='model*.safetensors*' --exclude=checkpoint \
    --exclude='checkpoint.*' . && mv "$OUT/model-files.tar.gz.tmp" "$OUT/model-files.tar.gz"
}
(while sleep 60; do pack; done) &
packer=$!

shards=$(ls "$DATA"/train-*.jsonl.xz 2>/dev/null | paste -sd, -)
data_args=()
[ -n "$shards" ] && data_args=("data.train_files=[$shards]" "data.dev_files=[$DATA/dev.jsonl.xz]")
python3 -m restore train --config "$CONFIG" "${data_args[@]}" \
  "train.output_dir=$RUN" "train.time_limit_minutes=$MINUTES" "train.export_every=$EXPORT_EVERY" \
  train.max_shard_size=14MB data.cache_dir=/tmp/restore-cache 2>&1 | tee -a "$OUT/train.log"
status=${PIPESTATUS[0]}
kill "$packer" 2>/dev/null
pack
ls -la "$OUT"
exit "$status"
