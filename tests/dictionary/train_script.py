"""Trains a small TopK SAE on planted data; run directly, under torchrun, or killed and resumed by the tests.

usage: python train_script.py OUT_WEIGHTS [CHECKPOINT_DIR [resume]]
With HOLD_AT=N in the environment it writes OUT_WEIGHTS.held after step N and then waits to be killed, so a
test can kill -9 it mid-run however fast training is.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

from lmscope.dictionary import SAE
from lmscope.dictionary.train import RunConfig


def data() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    D = torch.randn(48, 16, generator=g)
    D /= D.norm(dim=1, keepdim=True)
    a = torch.rand(4096, 48, generator=g) * (torch.rand(4096, 48, generator=g) < 0.06)
    return a @ D


def estimator(n_steps: int = 300) -> SAE:
    """TopK with AuxK and resampling both active (tiny dead_after), warm-up and decay."""
    return SAE(d_sae=64, activation="topk", k=3, lr=3e-3, batch_size=64, n_steps=n_steps, warmup_steps=20,
               lr_decay_steps=50, dead_after=64 * 10, resample_every=40, seed=5)


def run(out_dir: str | None = None, resume: bool = False) -> RunConfig:
    """Checkpoints every 25 steps into `out_dir` (none without one), resuming from them with `resume`."""
    return RunConfig(out_dir=out_dir, checkpoint_every=25 if out_dir else 0, resume=resume)


if __name__ == "__main__":
    torch.set_num_threads(1)
    est = estimator()
    settings = run(sys.argv[2] if len(sys.argv) > 2 else None, resume=len(sys.argv) > 3)
    hold_at = int(os.environ.get("HOLD_AT", "0"))

    def hold(done: int, total: int, record: dict[str, float]) -> None:
        if done == hold_at:
            Path(sys.argv[1] + ".held").touch()
            time.sleep(600)

    est.fit(data(), run=settings, progress=hold if hold_at else None)
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save(est.dictionary_.state_dict(), sys.argv[1])
    if torch.distributed.is_initialized():  # a live gloo group at exit can abort the process
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
