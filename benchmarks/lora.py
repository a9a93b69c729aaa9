"""LoRA against full fine-tuning, side by side in one process: trainable parameters, optimizer
state, and the time of a training step (forward, backward, AdamW) on the same batches.

    python benchmarks/lora.py                           # the bundled python-assistant, CPU
    python benchmarks/lora.py --model story --steps 10 --rank 8 --targets c_attn,c_proj

Both variants run the trainer's own pieces (engine.train.make_optimizer and the training view
engine.chunked_loss.training_module), alternating step by step so that a busy machine slows both
alike; the median step time is reported. Prints one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.chunked_loss import training_module  # noqa: E402
from engine.loading import load_model  # noqa: E402
from engine.lora import LoRASpec, add_adapters  # noqa: E402
from engine.train import make_optimizer  # noqa: E402
from engine.train_config import TrainConfig  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="python-assistant")
    p.add_argument("--steps", type=int, default=8, help="timed steps per variant (default 8)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16.0)
    p.add_argument("--targets", default="c_attn")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    base = load_model(args.model, device="cpu").model.float().train()
    block = min(args.block_size, base.config.block_size)
    cfg = TrainConfig(data="-", out="-")
    variants = {"full": copy.deepcopy(base), "lora": copy.deepcopy(base)}
    spec = LoRASpec(args.rank, args.alpha, args.targets)
    add_adapters(variants["lora"], spec)
    runs = {name: (training_module(m, device), make_optimizer(m, cfg, device))
            for name, m in variants.items()}
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, base.config.vocab_size, (args.batch_size, block + 1), generator=g)
               for _ in range(args.steps + 2)]
    times = {name: [] for name in runs}
    for i, batch in enumerate(batches):
        x, y = batch[:, :-1], batch[:, 1:]
        for name, (module, opt) in runs.items():
            t0 = time.perf_counter()
            _, loss = module(x, y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i >= 2:  # the first two steps warm up allocators and kernels
                times[name].append(time.perf_counter() - t0)
    result = {"model": args.model, "device": "cpu", "threads": torch.get_num_threads(),
              "batch": [args.batch_size, block], "steps": args.steps,
              "adapter": {"rank": spec.rank, "alpha": spec.alpha, "targets": list(spec.targets)}}
    for name, m in variants.items():
        trainable = sum(p_.numel() for p_ in m.parameters() if p_.requires_grad)
        step = statistics.median(times[name])
        result[name] = {"trainable_params": trainable,
                        "total_params": sum(p_.numel() for p_ in m.parameters()),
                        "adam_state_mb": round(2 * 4 * trainable / 2**20, 2),
                        "median_step_s": round(step, 4),
                        "tokens_per_s": round(args.batch_size * block / step)}
    result["speedup"] = round(result["full"]["median_step_s"] / result["lora"]["median_step_s"], 2)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
