"""torchrun (gloo) helpers shared by distributed extraction and dictionary training; no-ops in one process."""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from lmscope.errors import InputError

__all__ = ["all_gather", "all_reduce", "barrier", "dist_info", "on_rank0"]


def dist_info() -> tuple[int, int]:
    """(rank, world size), joining the torchrun process group (gloo) when launched under torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
        atexit.register(_shutdown)  # an undestroyed gloo group can abort the process at exit (SIGABRT)
    return dist.get_rank(), dist.get_world_size()


def _shutdown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce(t: Tensor, world: int) -> Tensor:
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t


def all_gather(t: Tensor, world: int) -> Tensor:
    if world == 1:
        return t
    import torch.distributed as dist

    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def on_rank0(world: int, fn: Callable[[], str]) -> str:
    """Run `fn` on rank 0 only and give every rank its result, or the same InputError (no rank hangs)."""
    if world == 1:
        return fn()
    import torch.distributed as dist

    box: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            box[0] = ("ok", fn())
        except InputError as err:
            box[0] = ("error", str(err))
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise InputError(value)
    return value
