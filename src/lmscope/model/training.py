"""A plain AdamW loop for training small causal LMs on token streams, and the zoo's evaluations.

Used by the model zoo; deterministic from its seed on a fixed thread count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

Progress = Callable[[int, int], None]


@dataclass
class TrainConfig:
    """Hyperparameters of `train_causal_lm`."""

    steps: int = 1000
    batch_size: int = 32
    seq_len: int = 64
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 25


@dataclass
class TrainLog:
    """Loss curve of a run: `steps[i]` and the mean training loss since the previous entry."""

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "losses": self.losses, "seconds": self.seconds, "tokens": self.tokens}


def pack_tokens(docs: Sequence[Sequence[int]], sep_id: int) -> Tensor:
    """Concatenate documents into one stream, each preceded by `sep_id` (it doubles as BOS)."""
    flat: list[int] = []
    for doc in docs:
        flat.append(sep_id)
        flat.extend(doc)
    return torch.tensor(flat, dtype=torch.long)


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def train_causal_lm(model: nn.Module, stream: Tensor, cfg: TrainConfig, *,
                    progress: Progress | None = None) -> TrainLog:
    """Train `model` on random windows of `stream` with AdamW, warm-up and cosine decay."""
    gen = torch.Generator().manual_seed(cfg.seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "norm" not in n.lower()]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "norm" not in n.lower())]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    model.train()
    log, window, start = TrainLog(), [], time.perf_counter()
    n_windows = stream.numel() - cfg.seq_len - 1
    offsets = torch.arange(cfg.seq_len + 1)
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        starts = torch.randint(0, n_windows, (cfg.batch_size,), generator=gen)
        chunk = stream[starts[:, None] + offsets]
        logits = model(input_ids=chunk[:, :-1], use_cache=False).logits
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        window.append(loss.item())
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            log.steps.append(step + 1)
            log.losses.append(sum(window) / len(window))
            window = []
        if progress is not None:
            progress(step + 1, cfg.steps)
    model.eval()
    log.seconds = time.perf_counter() - start
    log.tokens = cfg.steps * cfg.batch_size * cfg.seq_len
    return log


@torch.inference_mode()
def heldout_loss(model: nn.Module, stream: Tensor, seq_len: int, batch_size: int = 64) -> float:
    """Mean next-token cross-entropy (nats) over non-overlapping windows of `stream`."""
    n = (stream.numel() - 1) // seq_len
    inputs = stream[: n * seq_len].view(n, seq_len)
    targets = stream[1 : n * seq_len + 1].view(n, seq_len)
    total, count = 0.0, 0
    for i in range(0, n, batch_size):
        logits = model(input_ids=inputs[i : i + batch_size], use_cache=False).logits
        total += nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             targets[i : i + batch_size].reshape(-1), reduction="sum").item()
        count += targets[i : i + batch_size].numel()
    return total / count


def unigram_loss(train_stream: Tensor, eval_stream: Tensor, vocab_size: int) -> float:
    """Cross-entropy (nats) of a add-one-smoothed unigram model of `train_stream` on `eval_stream`."""
    counts = torch.bincount(train_stream, minlength=vocab_size).double() + 1.0
    logp = (counts / counts.sum()).log()
    return float(-logp[eval_stream[1:]].mean())
