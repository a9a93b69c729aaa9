#!/usr/bin/env bash
# Reproduce the two bundled models from the corpora in data/, on a CPU, and publish them into
# checkpoints/ with their model cards. One thread per run, the two models in parallel: under an
# hour on a 2-core machine (each model card records the minutes each stage took here, measured
# while other jobs shared the cores).
#
#   scripts/train_bundled.sh [RUNS_DIR]      (default: runs/bundled)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-runs/bundled}"
py=.venv/bin/python
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

# The story model (preset story-cpu): 4 layers, 4 heads, 128 dims, 256-token context, a
# 16384-token BPE (2.9M parameters, 12 MB). So large a vocabulary makes ~97% of the corpus's word
# occurrences single tokens: the model writes whole words where a 2048 BPE glued pieces into words
# no one wrote; narrow, because the output layer over 16384 tokens is most of the compute. The
# Python assistant: 4 layers, 4 heads, 256 dims and a 4096-token BPE (4.3M parameters, 17 MB).
# Sized for an hour of CPU: bigger models learn less in that budget.
COMMON=(--n-layer 4 --n-head 4 --block-size 256 --tokenizer bpe --batch-size 16 --grad-accum 1
        --warmup-steps 50 --weight-decay 0.1 --dropout 0.0 --eval-every 200 --eval-batches 20
        --save-every 100 --log-every 10 --seed 1337 --no-progress)
STORY_SHAPE=(--n-layer 4 --n-head 4 --block-size 256 --tokenizer bpe --batch-size 16 --grad-accum 1
             --warmup-steps 50 --weight-decay 0.1 --dropout 0.0 --eval-every 200 --eval-batches 20
             --save-every 50 --log-every 10 --seed 1337 --no-progress --n-embd 128
             --vocab-size 16384 --lr 2e-3)
PYTHON_SHAPE=("${COMMON[@]}" --n-embd 256 --vocab-size 4096 --lr 1.5e-3)
GROUNDED_SFT=(--batch-size 16 --lr 1e-3 --min-lr-ratio 0.1 --warmup-steps 50 --max-steps 480
              --weight-decay 0.0 --eval-every 100 --eval-batches 10 --save-every 100
              --log-every 10 --seed 1337 --no-progress --sample-prompt "How do I reverse a list?")
GROUNDED_MORE=(--batch-size 16 --lr 6e-4 --min-lr-ratio 0.1 --warmup-steps 20 --max-steps 700
               --weight-decay 0.0 --eval-every 100 --eval-batches 10 --save-every 50
               --log-every 10 --seed 1338 --no-progress --sample-prompt "How do I reverse a list?")

story() {
  "$py" -m engine train --data data/stories/stories.txt --out "$runs/story" "${STORY_SHAPE[@]}" \
    --max-steps 1100 --sample-prompt "The king" --force
  "$py" scripts/publish_bundled.py story "$runs/story"
}

python_assistant() {
  "$py" -m engine train --data data/python/docs.txt --out "$runs/python-docs" "${PYTHON_SHAPE[@]}" \
    --max-steps 1200 --sample-prompt "A list is" --force
  "$py" -m engine train --data data/python/qa.jsonl --val-data data/python/qa_val.jsonl \
    --out "$runs/python-sft" --init-from "$runs/python-docs" --mode sft \
    --batch-size 16 --lr 1e-3 --min-lr-ratio 0.1 --warmup-steps 20 --max-steps 500 \
    --weight-decay 0.0 --eval-every 100 --eval-batches 10 --save-every 100 --log-every 10 \
    --seed 1337 --no-progress --sample-prompt "How do I reverse a list?" --force
  # Grounding: a 768-token window (three doc passages, the question, the previous exchange and
  # the answer), then instruction data whose prompts carry the passages the retriever finds.
  # data/python/index/ ships; scripts/build_docs_index.py rebuilds it from python3.11-doc.
  "$py" scripts/extend_context.py "$runs/python-sft" "$runs/python-ext768" --block-size 768
  "$py" scripts/build_grounded_sft.py --out "$runs/grounded"
  "$py" -m engine train --data "$runs/grounded/train.jsonl" --val-data "$runs/grounded/val.jsonl" \
    --out "$runs/python-grounded" --init-from "$runs/python-ext768" --mode sft \
    "${GROUNDED_SFT[@]}" --force
  # More of the same data (the first 480 steps left the validation loss still falling fast),
  # on a new learning-rate schedule.
  "$py" -m engine train --data "$runs/grounded/train.jsonl" --val-data "$runs/grounded/val.jsonl" \
    --out "$runs/python-grounded-more" --init-from "$runs/python-grounded" --mode sft \
    "${GROUNDED_MORE[@]}" --force
  "$py" -m engine eval-assistant --model "$runs/python-grounded-more" --grounding python-docs \
    --split test > "$runs/eval-assistant.json"
  "$py" scripts/publish_bundled.py python-assistant "$runs/python-grounded-more" \
    --pretrain-run "$runs/python-docs" --sft-run "$runs/python-sft" \
    --grounded-run "$runs/python-grounded" --eval "$runs/eval-assistant.json"
}

story &
python_assistant &
wait
