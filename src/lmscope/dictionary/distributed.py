"""torchrun (gloo) helpers for data-parallel dictionary training; no-ops in a single process."""

from __future__ import annotations

import os

import torch
from torch import Tensor

__all__ = ["_all_gather", "_all_reduce", "_barrier", "dist_info"]


def dist_info() -> tuple[int, int]:
    """(rank, world size), joining the torchrun process group (gloo) when launched under torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def _all_reduce(t: Tensor, world: int) -> Tensor:
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t


def _all_gather(t: Tensor, world: int) -> Tensor:
    if world == 1:
        return t
    import torch.distributed as dist

    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
