"""A shuffling buffer of activations computed on the fly from a model, filled by a background thread.

The thread runs `model.run_with_cache(batch, names=hook_names, return_logits=False)` over the texts in
batches of `batch_size` texts of similar length (cycling through them, epoch after epoch), keeps the rows of
`lmscope.dictionary.positions.kept_positions` (no padding, no BOS position, no position the user left out with
`exclude_first`), and queues them. The consumer keeps a pool of up to `buffer_tokens` rows: whenever the pool falls to
half, it tops it up from the queue and reshuffles it with its own seeded generator, then serves batches from
the shuffled half. Which rows are served depends only on the texts, the model and the seed, never on thread
timing. Under torchrun each rank reads texts[rank::world].
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from lmscope.dictionary.positions import PositionRule
from lmscope.errors import InputError, bad_argument

_DONE = object()


class ActivationBuffer:
    """Rows of activations at `hook_names` (one tensor per name, same rows), shuffled, from `model` on `texts`.

    `exclude_first`: leading text tokens of every text left out besides the BOS position (`positions`).
    `reuse`: every computed row enters the shuffled pool this many times, so the model runs `reuse` times
    less for the same number of served rows (where the model's forward pass, not the dictionary's step, is
    the cost: real LMs on CPU); the copies are shuffled apart like any rows.
    `corpus`: where the texts came from (`lmscope.dictionary.recipes.corpus_record`); a dictionary fitted on
    this buffer records it, and the position rule, in its cfg.json.
    """

    def __init__(self, model: Any, texts: Sequence[str], hook_names: Sequence[str], *,
                 buffer_tokens: int = 65536, batch_size: int = 16, seed: int = 0, prefetch: int = 4,
                 exclude_first: int = 0, corpus: dict[str, Any] | None = None, reuse: int = 1) -> None:
        if not texts:
            raise InputError("texts: the activation buffer needs at least one text")
        if not hook_names:
            raise InputError("hook_names: expected at least one hook name")
        if isinstance(reuse, bool) or not isinstance(reuse, int) or reuse < 1:
            raise bad_argument("reuse", "a positive number of times to serve each row", reuse)
        self.reuse = reuse
        self.model = model
        self.positions = PositionRule.for_model(model, exclude_first)
        self.corpus = corpus
        self.texts = list(texts)
        self.hook_names = list(model.check_names(list(hook_names)))
        self.buffer_tokens = buffer_tokens
        self.text_batch = batch_size
        self.seed = seed
        self.prefetch = prefetch
        self.rows_per_batch = 4096
        self.rank, self.world = 0, 1
        self._dims: list[int] | None = None

    def configure(self, *, batch_size: int, rank: int = 0, world: int = 1) -> None:
        """Set the number of rows per served batch and this process's share of the texts."""
        self.rows_per_batch, self.rank, self.world = batch_size, rank, world

    @property
    def dims(self) -> list[int]:
        """Width of each hook name's rows (runs the model once on the first text)."""
        if self._dims is None:
            rows = self._rows([self.texts[0]])
            self._dims = [r.shape[1] for r in rows]
        return self._dims

    @torch.inference_mode()
    def _rows(self, batch: list[str]) -> list[Tensor]:
        tokens = self.model.to_tokens(batch)
        _, cache = self.model.run_with_cache(tokens, names=self.hook_names, return_logits=False)
        mask = self.positions.kept(tokens)
        return [cache[n][mask].float().clone() for n in self.hook_names]

    def _producer(self, q: queue.Queue[Any], stop: threading.Event) -> None:
        texts = self.texts[self.rank::self.world] or self.texts
        try:
            while not stop.is_set():
                n_rows = 0
                for batch in _bucketed(texts, self.text_batch):
                    if stop.is_set():
                        return
                    rows = self._rows(batch)
                    n_rows += rows[0].shape[0]
                    q.put(rows)
                if n_rows == 0:  # an epoch with nothing to serve would loop for ever
                    raise InputError(f"texts: no token to train on: every text is at most "
                                     f"{self.positions.n_leading} token(s) long, and those are left out "
                                     f"({self.positions.describe()})")
        except BaseException as err:  # surfaced in the consumer
            q.put(err)

    def __iter__(self) -> Iterator[list[Tensor]]:
        """Batches of `rows_per_batch` shuffled rows: one `[rows, d]` tensor per hook name."""
        q: queue.Queue[Any] = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        thread = threading.Thread(target=self._producer, args=(q, stop), daemon=True)
        thread.start()
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.rank)
        pool: list[Tensor] | None = None
        capacity = max(self.buffer_tokens, 2 * self.rows_per_batch)
        try:
            while True:
                parts = [[p] for p in pool] if pool is not None else [[] for _ in self.hook_names]
                n = pool[0].shape[0] if pool is not None else 0
                while n < capacity:
                    item = q.get()
                    if isinstance(item, BaseException):
                        raise item
                    for lst, t in zip(parts, item, strict=True):
                        lst.extend([t] * self.reuse)
                    n += item[0].shape[0] * self.reuse
                perm = torch.randperm(n, generator=g)
                pool = [torch.cat(lst)[perm] for lst in parts]
                served = (n // 2 // self.rows_per_batch) * self.rows_per_batch or self.rows_per_batch
                for i in range(0, served, self.rows_per_batch):
                    yield [p[i:i + self.rows_per_batch] for p in pool]
                pool = [p[served:] for p in pool]
        finally:
            stop.set()
            while thread.is_alive():
                try:
                    q.get_nowait()
                except queue.Empty:
                    thread.join(timeout=0.05)

    def pairs(self) -> Iterator[tuple[Tensor, Tensor]]:
        """`(x, y)` batches: input and target (the same tensor when there is one hook name)."""
        for rows in self:
            yield rows[0], rows[-1]


BUCKET_BATCHES = 16
"""Texts are sorted by length within blocks of this many batches, so a batch holds little padding."""


def _bucketed(texts: list[str], batch_size: int) -> Iterator[list[str]]:
    """Batches of `batch_size` texts: each block of `BUCKET_BATCHES` batches sorted by length (stable), so
    the order depends only on the texts."""
    block = batch_size * BUCKET_BATCHES
    for start in range(0, len(texts), block):
        part = sorted(texts[start:start + block], key=len)
        for i in range(0, len(part), batch_size):
            yield part[i:i + batch_size]
