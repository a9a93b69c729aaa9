#!/usr/bin/env bash
# Reproduce the two bundled models from the corpora in data/, on a CPU, and publish them into
# checkpoints/ with their model cards. One thread per run, the two models in parallel: about
# 20-30 minutes on an idle 2-core machine (each run's card records the time it took here).
#
#   scripts/train_bundled.sh [RUNS_DIR]      (default: runs/bundled)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-runs/bundled}"
py=.venv/bin/python
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

# The shape both models share: 4 layers, 4 heads, 192 dims, 256-token context, 2048-token BPE
# (2.2M parameters, 9 MB). Sized for an hour of CPU: bigger models learn less in that budget.
SHAPE=(--n-layer 4 --n-head 4 --n-embd 192 --block-size 256 --tokenizer bpe --vocab-size 2048
       --batch-size 16 --grad-accum 1 --lr 2e-3 --warmup-steps 50 --weight-decay 0.1
       --dropout 0.0 --eval-every 200 --eval-batches 20 --save-every 100 --log-every 10
       --seed 1337 --no-progress)

story() {
  "$py" -m engine train --data data/stories/stories.txt --out "$runs/story" "${SHAPE[@]}" \
    --max-steps 1200 --sample-prompt "The king" --force
  "$py" scripts/publish_bundled.py story "$runs/story"
}

python_assistant() {
  "$py" -m engine train --data data/python/docs.txt --out "$runs/python-docs" "${SHAPE[@]}" \
    --max-steps 800 --sample-prompt "A list is" --force
  "$py" -m engine train --data data/python/qa.jsonl --val-data data/python/qa_val.jsonl \
    --out "$runs/python-assistant" --init-from "$runs/python-docs" --mode sft \
    --batch-size 16 --lr 1e-3 --min-lr-ratio 0.1 --warmup-steps 20 --max-steps 500 \
    --weight-decay 0.0 --eval-every 100 --eval-batches 10 --save-every 100 --log-every 10 \
    --seed 1337 --no-progress --sample-prompt "How do I reverse a list?" --force
  "$py" scripts/publish_bundled.py python-assistant "$runs/python-assistant" \
    --pretrain-run "$runs/python-docs"
}

story &
python_assistant &
wait
