"""One process or many: the training loop's view of torch.distributed.

Under torchrun (RANK / WORLD_SIZE / LOCAL_RANK set) each process joins the process group (NCCL
on GPUs, gloo on CPUs); otherwise Dist is a single process and every call is a no-op. Rank 0
(`main`) alone writes files.
"""

from __future__ import annotations

import os

import torch

from .device import pick_device


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

    def close(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
