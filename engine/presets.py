"""Training presets: named recipes for `python -m engine train --preset NAME` and the UIs.

A preset is a set of TrainConfig fields (engine.train_config); flags given on the command line
win over it. (Model shapes without a recipe, such as gpt2-medium, are engine.config.MODEL_SHAPES.)
"""

from __future__ import annotations

PRESETS: dict[str, dict] = {
    # The classic TinyStories run (Eldan & Li's small models): GPT-2 tokenizer, 4x256, 512 context.
    "tinystories-gpu": dict(
        n_layer=4, n_head=4, n_embd=256, block_size=512, tokenizer="gpt2", batch_size=52,
        grad_accum=1, lr=5e-4, min_lr_ratio=0.1, warmup_steps=1000, max_steps=30000,
        weight_decay=0.1, eval_every=1000, eval_batches=50, save_every=2000, log_every=50,
        compile=True, sample_prompt="Once upon a time"),
    # A few minutes on a laptop CPU: a tiny model on a small BPE, enough to see the loss fall.
    "cpu-demo": dict(
        n_layer=2, n_head=2, n_embd=128, block_size=128, tokenizer="bpe", vocab_size=2048,
        batch_size=16, grad_accum=1, lr=2e-3, warmup_steps=30, max_steps=300, eval_every=100,
        eval_batches=10, save_every=100, log_every=10, sample_tokens=48),
    # The bundled story model, as it was trained (checkpoints/story/README.md has the command):
    # 2.9M parameters (12 MB), 4.5M tokens seen (~3.2 passes over the 1.4M training tokens of the
    # Shakespeare and Milton corpus with its 16384 BPE, whose tokens are mostly whole words).
    "story-cpu": dict(
        n_layer=4, n_head=4, n_embd=128, block_size=256, tokenizer="bpe", vocab_size=16384,
        batch_size=16, grad_accum=1, lr=2e-3, min_lr_ratio=0.1, warmup_steps=50,
        max_steps=1100, weight_decay=0.1, dropout=0.0, eval_every=200, eval_batches=20,
        save_every=50, keep_last=2, log_every=10, sample_prompt="The king"),
    # The bundled Python assistant, stage 1 (~30 min): pretraining on the Python documentation
    # (0.9M tokens with a 4096 BPE; 4.9M tokens seen), 4.3M parameters.
    "python-cpu": dict(
        n_layer=4, n_head=4, n_embd=256, block_size=256, tokenizer="bpe", vocab_size=4096,
        batch_size=16, grad_accum=1, lr=1.5e-3, min_lr_ratio=0.1, warmup_steps=50,
        max_steps=1200, weight_decay=0.1, dropout=0.0, eval_every=200, eval_batches=20,
        save_every=100, keep_last=2, log_every=10, sample_prompt="A list is"),
    # Stage 2 (~8 min): instruction tuning on the Q/A pairs, loss on answers only; use with
    # --init-from <the python-cpu run> (its shape and tokenizer carry over). (The bundled model
    # then gets a longer context and a grounded SFT: scripts/train_bundled.sh.)
    "python-sft-cpu": dict(
        mode="sft", batch_size=16, grad_accum=1, lr=1e-3, min_lr_ratio=0.1, warmup_steps=20,
        max_steps=500, weight_decay=0.0, dropout=0.0, eval_every=100, eval_batches=10,
        save_every=100, keep_last=2, log_every=10, sample_prompt="How do I reverse a list?"),
}
