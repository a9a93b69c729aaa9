"""One process or many: the training loop's view of torch.distributed.

Under torchrun (RANK / WORLD_SIZE / LOCAL_RANK set) each process joins the process group (NCCL
on GPUs, gloo on CPUs); otherwise Dist is a single process and every call is a no-op. Rank 0
(`main`) alone writes files. batch_plan() says how a step's sequences are shared among the
processes, for any preset and any number of processes.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from .device import pick_device


def is_main_process() -> bool:
    """Rank 0 under torchrun, or a single process (before any process group exists)."""
    return os.environ.get("RANK", "0") == "0"


@dataclass(frozen=True)
class BatchPlan:
    """How one optimizer step's sequences are shared: each of `world` processes runs `accum`
    micro-batches of `micro` sequences. `note` says what that means for a person ("" for one
    process)."""

    micro: int
    accum: int
    world: int
    note: str = ""

    @property
    def sequences(self) -> int:
        """Sequences per optimizer step, all processes together."""
        return self.micro * self.accum * self.world


def batch_plan(batch_size: int, grad_accum: int, world: int) -> BatchPlan:
    """Share a step's batch_size x grad_accum sequences among `world` processes.

    The batch of one process is kept when it can be shared equally: whole micro-batches when
    grad_accum is a multiple of world, else each process takes an equal part of them in
    micro-batches of at most batch_size (for text, a step then computes the same update as one
    process, up to float rounding).
    When the sequences cannot be shared equally (52 among 8), each process keeps the whole
    per-process batch and a step grows world-fold; the note says so, and how to keep it."""
    total = batch_size * grad_accum
    if world == 1:
        return BatchPlan(batch_size, grad_accum, 1)
    if grad_accum % world == 0:
        micro, accum = batch_size, grad_accum // world
    elif total % world == 0:
        share = total // world
        accum = math.ceil(share / batch_size)
        while share % accum:  # equal micro-batches, none larger than batch_size
            accum += 1
        micro = share // accum
    else:
        return BatchPlan(batch_size, grad_accum, world, (
            f"{world} processes cannot share the {total} sequences of a step (--batch-size "
            f"{batch_size} x --grad-accum {grad_accum}) equally, so each process keeps them: "
            f"a step is {total * world} sequences, {world}x the batch of one process, with the "
            f"same --lr and --max-steps. To keep the batch of one process, make batch-size x "
            f"grad-accum a multiple of {world}"))
    each = f"{accum} micro-batch{'es' if accum > 1 else ''} of {micro}"
    return BatchPlan(micro, accum, world, (
        f"{world} processes share each step's {total} sequences ({each} per process), the same "
        f"batch as one process"))


class Dist:
    """torch.distributed when launched by torchrun (RANK/WORLD_SIZE set), else one process."""

    def __init__(self, device_name: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        if self.enabled:
            import torch.distributed as dist

            cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
            if cuda:
                torch.cuda.set_device(self.local_rank)
                self.device = torch.device("cuda", self.local_rank)
            else:
                self.device = torch.device("cpu")
            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if cuda else "gloo")
        else:
            self.device = pick_device(device_name)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def all_sum(self, values: list[float]) -> list[float]:
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def close(self, clean: bool = True) -> None:
        """Leave the process group. Whatever still holds it (a DDP module left in a reference
        cycle) is collected first: freed at interpreter exit instead, gloo's threads can abort
        the process ("terminate called without an active exception") after a finished run.
        clean: every process got here, so wait for all of them before tearing connections down;
        after an error, leave at once (a peer may never come)."""
        if self.enabled and torch.distributed.is_initialized():
            import gc

            gc.collect()
            if clean:
                torch.distributed.barrier()
            torch.distributed.destroy_process_group()
