"""A stack of dictionaries, one per chosen layer, trained from ONE model forward per batch of text.

    result = train_stack(model, layers=[0, 3, 5], kind="transcoder", corpus="train.txt", tokens=500_000)
    result.save("tcs/")        # tcs/layer0/, tcs/layer3/, ... (SAELens layout) + tcs/result.json

The data path (`StackStream`) is a pure function of (texts, model, seed, fill size, step), so a stack can be
checkpointed and resumed to the same bytes as an uninterrupted run, and one layer trained alone equals the
same layer trained inside a stack:

- The rank's texts (`texts[rank::world]`) are read as an endless cyclic stream, cut into *fills* of
  `fill_texts` consecutive texts: fill f is texts `[f·F, (f+1)·F)` (mod n).
- A fill is run through the model in batches of `text_batch` texts sorted by length (one forward per batch,
  `run_with_cache(..., return_logits=False)`, which stops after the last chosen layer's hook), capturing every
  chosen layer's hooks at once into preallocated `[rows, d]` pools; rows are the kept positions of
  `PositionRule` (no padding, no BOS, no `exclude_first` leading tokens), the same for every layer.
- The fill's row indices (each `reuse` times) are permuted by a generator seeded with (seed, f, rank) and
  served in local batches of `batch_size / world` rows; the rows of every layer are gathered with the same
  indices, so each layer sees the same tokens in the same order whatever the other layers are. The last
  incomplete batch of a fill is dropped (a fill with fewer rows than one batch is tiled).
- The position of the next batch is `(fill, offset)`; a checkpoint stores it (per rank) next to every
  layer's trainer state, so a resumed run recomputes that one fill and continues exactly.

Memory: one fill's pools, `rows × Σ_layers (d_in + d_out) × 4` bytes, bounded by `buffer_tokens` (rows per
fill) and never growing with the number of training tokens. `buffer_tokens=None` picks
`max(8 · batch_size, 8192)` rows (at most the run's `tokens / reuse`), lowered to fit `memory_limit` bytes
(the fill then depends on the number of layers: pass `buffer_tokens` to compare a layer alone with the stack).

Each layer is trained by its own `lmscope.dictionary.train.Trainer` (same objective, init, resampling and,
under torchrun, gradient all_reduce as single-layer training), built by `recipe_estimator`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lmscope.data.corpus import Corpus
from lmscope.dictionary.buffer import _bucketed
from lmscope.dictionary.positions import PositionRule
from lmscope.dictionary.train import RunConfig, Trainer, latest_checkpoint, read_checkpoint, save_checkpoint
from lmscope.distributed import all_gather, barrier, dist_info
from lmscope.errors import InputError, bad_argument
from lmscope.model.hooked import HookedModel

log = logging.getLogger(__name__)

Stage = Callable[[str, int, int], None]
MEMORY_LIMIT = 2 << 30  # bytes of fill pools when buffer_tokens is not given


def parse_layers(spec: str | Sequence[int], n_layers: int | None, arg: str = "layers") -> list[int]:
    """`"all"`, `"0,3,5"`, `"2-5"` or a list of ints -> sorted distinct layers in 0..n_layers-1.

    `n_layers=None` checks the syntax only (before the model, and so its layer count, is known) and returns [];
    `arg` is the argument the message names."""
    if isinstance(spec, str):
        out: set[int] = set()
        if spec.strip().lower() == "all":
            return [] if n_layers is None else list(range(n_layers))
        for part in spec.split(","):
            a, _, b = part.strip().partition("-")
            try:
                lo, hi = int(a), int(b) if b else int(a)
            except ValueError:
                raise InputError(f"{arg}: expected 'all' or comma-separated layers such as 0,3,5 or 2-5, "
                                 f"got {spec!r}", arg=arg) from None
            if n_layers is None:
                if not 0 <= lo <= hi:
                    raise InputError(f"{arg}: expected ascending ranges of layers >= 0, got {spec!r}", arg=arg)
                continue
            if not 0 <= lo <= hi < n_layers:  # checked before any range is built: "0-10**12" is one line
                raise InputError(f"{arg}: expected layers in 0..{n_layers - 1}, got {spec!r}", arg=arg)
            out.update(range(lo, hi + 1))
        if n_layers is None:
            return []
        layers = sorted(out)
    else:
        layers = sorted(set(int(v) for v in spec))
        if n_layers is None:
            if not layers or min(layers) < 0:
                raise InputError(f"{arg}: expected layers >= 0, got {spec!r}", arg=arg)
            return []
    bad = [v for v in layers if not 0 <= v < n_layers]
    if not layers or bad:
        raise InputError(f"{arg}: expected layers in 0..{n_layers - 1}, got {spec!r}", arg=arg)
    return layers


def stack_hooks(model: HookedModel, kind: str, layers: Sequence[int],
                hook: str | None = None) -> dict[int, tuple[str, str]]:
    """`{layer: (input hook, target hook)}` (`dictionary_hooks` per layer). For an SAE over several layers,
    `hook` is a template with `{layer}` (e.g. `blocks.{layer}.hook_resid_mid`); default resid_post."""
    from lmscope.dictionary.recipes import dictionary_hooks

    if hook is not None and kind == "sae" and len(layers) > 1 and "{layer}" not in hook:
        raise InputError(f"hook: with several layers, give a template with {{layer}}, such as "
                         f"blocks.{{layer}}.hook_resid_mid; got {hook!r}", arg="hook")
    return {la: dictionary_hooks(model, kind, la, hook.replace("{layer}", str(la)) if hook else None)
            for la in layers}


# --- the data path ------------------------------------------------------------------------------------
class StackStream:
    """Shuffled batches of the same rows at several hook names, from one forward per text batch (see the
    module docstring); `batches(fill, offset)` starts at a saved position."""

    def __init__(self, model: HookedModel, texts: Sequence[str], names: Sequence[str], *, batch_size: int,
                 buffer_tokens: int, text_batch: int = 16, seed: int = 0, exclude_first: int = 0, reuse: int = 1,
                 rank: int = 0, world: int = 1) -> None:
        if not texts:
            raise InputError("texts: stack training needs at least one text")
        if batch_size % world:
            raise InputError(f"batch_size: {batch_size} is not divisible by the {world} torchrun processes",
                             arg="batch_size")
        if isinstance(reuse, bool) or not isinstance(reuse, int) or reuse < 1:
            raise bad_argument("reuse", "a positive number of times to serve each row", reuse)
        self.model, self.names = model, list(model.check_names(list(names)))
        self.positions = PositionRule.for_model(model, exclude_first)
        self.texts = list(texts)[rank::world] or list(texts)
        self.b, self.seed, self.reuse, self.rank = batch_size // world, seed, reuse, rank
        self.text_batch, self.buffer_tokens = text_batch, buffer_tokens
        sample = self.texts[:256]
        kept = int(self.positions.kept(model.to_tokens(sample)).sum())
        if kept == 0:
            raise InputError(f"texts: no token to train on: the texts are at most {self.positions.n_leading} "
                             f"token(s) long, and those are left out ({self.positions.describe()})")
        per_text = kept / len(sample)
        self.fill_texts = max(1, min(len(self.texts), round(buffer_tokens / per_text)))
        self.dims: list[int] = []
        self.forward_s = 0.0  # seconds spent in the model
        self.rows_computed = 0

    def fill_text_list(self, fill: int) -> list[str]:
        n, F = len(self.texts), self.fill_texts
        return [self.texts[(fill * F + i) % n] for i in range(F)]

    @torch.inference_mode()
    def fill(self, fill: int) -> list[Tensor]:
        """Fill `fill`'s rows: one `[rows, d]` float32 tensor per hook name (same rows in each)."""
        t0 = time.perf_counter()
        batches = [self.model.to_tokens(b) for b in _bucketed(self.fill_text_list(fill), self.text_batch)]
        masks = [self.positions.kept(b) for b in batches]
        n = sum(int(m.sum()) for m in masks)
        pools: list[Tensor] | None = None
        at = 0
        for tokens, mask in zip(batches, masks, strict=True):
            k = int(mask.sum())
            if k == 0:
                continue
            _, cache = self.model.run_with_cache(tokens, names=self.names, return_logits=False)
            if pools is None:
                pools = [torch.empty(n, cache[nm].shape[-1], dtype=torch.float32) for nm in self.names]
            for pool, nm in zip(pools, self.names, strict=True):
                pool[at:at + k] = cache[nm][mask]
            at += k
        self.forward_s += time.perf_counter() - t0
        self.rows_computed += n
        if pools is None:
            return [torch.empty(0, d) for d in self.dims] if self.dims else []
        self.dims = [p.shape[1] for p in pools]
        return pools

    def order(self, fill: int, n: int) -> Tensor:
        """The served row indices of a fill of `n` rows: each `reuse` times, permuted, whole batches only."""
        idx = torch.arange(n).repeat(self.reuse)
        if 0 < idx.numel() < self.b:
            idx = idx.repeat(-(-self.b // idx.numel()))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + fill * 7_919 + self.rank)
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        return idx[: idx.numel() // self.b * self.b]

    def batches(self, fill: int = 0, offset: int = 0) -> Iterator[tuple[list[Tensor], tuple[int, int]]]:
        """`(rows per hook name, position of the next batch)` for ever, from `(fill, offset)` on."""
        empty_run = 0
        while True:
            pools = self.fill(fill)
            n = pools[0].shape[0] if pools else 0
            order = self.order(fill, n)
            nb = order.numel() // self.b
            empty_run = empty_run + 1 if nb == 0 else 0
            if empty_run > len(self.texts):
                raise InputError(f"texts: no token to train on ({self.positions.describe()})")
            for j in range(offset, nb):
                idx = order[j * self.b:(j + 1) * self.b]
                nxt = (fill, j + 1) if j + 1 < nb else (fill + 1, 0)
                yield [p[idx] for p in pools], nxt
            fill, offset = fill + 1, 0


# --- training -----------------------------------------------------------------------------------------
@dataclass
class StackTraining:
    """What `train_stack` returns: a fitted estimator per layer and how the run went."""

    estimators: dict[int, Any]
    hooks: dict[int, tuple[str, str]]
    steps: int
    rows: int  # training rows per layer (steps x global batch)
    rows_computed: int  # rows taken from model forwards (rows / reuse, plus dropped ends of fills)
    wall_s: float
    forward_s: float
    resumed_from: int
    settings: dict[str, Any] = field(default_factory=dict)
    train_s: float = 0.0  # seconds in the dictionaries' steps

    @property
    def dictionaries(self) -> dict[int, Any]:
        return {la: est.dictionary_ for la, est in self.estimators.items()}


def _fingerprint(names: list[str], stream: StackStream, world: int, extra: dict[str, Any]) -> dict[str, Any]:
    return {"names": names, "fill_texts": stream.fill_texts, "text_batch": stream.text_batch, "world": world,
            "reuse": stream.reuse, "exclude_first": stream.positions.exclude_first, **extra}


def _differences(was: Any, now: dict[str, Any]) -> str:
    """The settings that differ between a checkpoint's fingerprint and this run's, in a few words."""
    if not isinstance(was, dict):
        return "not a stack checkpoint of this lmscope"
    flat_was = {**was, **(was.get("settings") or {})}
    flat_now = {**now, **now["settings"]}
    diff = [f"{k}: {flat_was.get(k)!r} -> {v!r}" for k, v in flat_now.items()
            if k != "settings" and flat_was.get(k) != v]
    return "; ".join(diff[:4]) or "unknown"


def train_stack(model: HookedModel, *, layers: Sequence[int], kind: str = "transcoder", hook: str | None = None,
                d_sae: int = 1024, activation: str = "relu", l1_coefficient: float = 1.0, k: int | None = None,
                tokens: int = 200_000, batch_size: int = 1024, lr: float = 2e-3,
                texts: Sequence[str] | None = None, corpus: Corpus | str | None = None, exclude_first: int = 0,
                reuse: int = 1, seed: int = 0, buffer_tokens: int | None = None, text_batch: int = 16,
                memory_limit: int = MEMORY_LIMIT, run: RunConfig | None = None,
                provenance: dict[str, Any] | None = None, progress: Stage | None = None) -> StackTraining:
    """Train a dictionary at every layer of `layers` from one forward per text batch (module docstring).

    Settings mean what they mean in `lmscope.dictionary.recipes.train_dictionary` (each layer gets the same
    recipe: `tokens` rows per layer, `batch_size` rows per step). `run` (`RunConfig`): with `out_dir` and
    `checkpoint_every`, one checkpoint for the whole stack goes to `out_dir/checkpoints/` every that many
    steps; `resume` continues from the newest one to the bytes an uninterrupted run would give.
    `progress(stage, i, n)` per step.
    `provenance`: the model record each dictionary keeps (`lmscope.model.provenance.provenance_record`;
    default `model`'s own; pass the float32 model's when `model` was cast to another dtype to stream).
    """
    from lmscope.dictionary.recipes import recipe_estimator, training_texts
    from lmscope.model.provenance import provenance_record

    rank, world = dist_info()
    run = run or RunConfig()
    hooks = stack_hooks(model, kind, list(layers), hook)
    texts, record = training_texts(model, texts, corpus, tokens=tokens, seed=seed, exclude_first=exclude_first,
                                   reuse=reuse)
    ests = {la: recipe_estimator(model, kind, i, o, d_sae=d_sae, activation=activation,
                                 l1_coefficient=l1_coefficient, k=k, tokens=tokens, batch_size=batch_size, lr=lr,
                                 seed=seed) for la, (i, o) in hooks.items()}
    names = list(dict.fromkeys(n for pair in hooks.values() for n in pair))
    with torch.inference_mode():
        _, probe = model.run_with_cache(model.to_tokens(list(texts[:1])), names=names, return_logits=False)
    dims = {n: int(probe[n].shape[-1]) for n in names}
    del probe
    if buffer_tokens is None:  # never more rows than the run will serve (a short run computes only its tokens)
        buffer_tokens = min(max(8 * batch_size, 8192), max(batch_size // world, -(-tokens // reuse)))
        fit = memory_limit // max(1, 4 * sum(dims.values()))
        if fit < buffer_tokens:
            buffer_tokens = max(2 * batch_size // world, fit)
            log.info("fill lowered to %d rows to stay within %d bytes", buffer_tokens, memory_limit)
    stream = StackStream(model, texts, names, batch_size=batch_size, buffer_tokens=buffer_tokens,
                         text_batch=text_batch, seed=seed, exclude_first=exclude_first, reuse=reuse, rank=rank,
                         world=world)
    pos_rule = stream.positions
    model_record = dict(provenance) if provenance is not None else provenance_record(model)
    provenance = {"prepend_bos": pos_rule.prepend_bos, "exclude_first": pos_rule.exclude_first, "corpus": record}
    trainers: dict[int, Trainer] = {}
    col = {n: i for i, n in enumerate(names)}
    for la, (i, o) in hooks.items():
        module, tc = ests[la].build(dims[i], dims[o], i, o, **provenance)
        module.provenance = model_record
        trainers[la] = Trainer(module, tc)
    n_steps = next(iter(trainers.values())).tc.n_steps
    settings = {"kind": kind, "d_sae": d_sae, "activation": activation, "l1_coefficient": l1_coefficient, "k": k,
                "tokens": tokens, "batch_size": batch_size, "lr": lr, "seed": seed, "reuse": reuse,
                "buffer_tokens": buffer_tokens, "fill_texts": stream.fill_texts, "text_batch": text_batch,
                "world": world, "corpus": record, "positions": pos_rule.to_dict()}
    extra = {"layers": list(hooks), "seed": seed, "model": model.name,
             "settings": {k_: v for k_, v in settings.items() if k_ != "corpus"},
             "texts": record.get("texts_sha256") or record.get("sha256")}
    fingerprint = _fingerprint(names, stream, world, extra)
    start, where = 0, (0, 0)
    ckpt_root = Path(run.out_dir) if run.out_dir is not None else None
    path = latest_checkpoint(ckpt_root) if (run.resume and ckpt_root is not None) else None
    if path is not None:
        state = read_checkpoint(path)
        if state.get("stack") != fingerprint:
            diff = _differences(state.get("stack"), fingerprint)
            raise InputError(f"{path}: a checkpoint of a run with other settings ({diff}); rerun with those "
                             "settings to resume, or pass --overwrite to start over")
        for la, tr in trainers.items():
            tr.load_state(state["layers"][str(la)], path)
        torch.set_rng_state(state["torch_rng"])
        start = int(state["step"])
        where = tuple(state["data"]["positions"][rank])  # type: ignore[assignment]
        log.info("resumed the stack from %s (step %d)", path, start)
    report = progress or (lambda stage, i, n: None)
    t0, train_s = time.perf_counter(), 0.0
    for tr in trainers.values():
        tr.m.train()
    it = stream.batches(*where)
    for step in range(start, n_steps):
        rows, nxt = next(it)
        t1 = time.perf_counter()
        for la, (i, o) in hooks.items():
            x, y = rows[col[i]], rows[col[o]]
            if step == 0:
                trainers[la].init_from_data(x, y)
            trainers[la].train_step(step, x, y)
        train_s += time.perf_counter() - t1
        done = step + 1
        every = run.checkpoint_every
        if ckpt_root is not None and every > 0 and (done % every == 0 or done == n_steps):
            positions = all_gather(torch.tensor([list(nxt)], dtype=torch.long), world).tolist()
            if rank == 0:
                save_checkpoint(ckpt_root, {"step": done, "layers": {str(la): tr.own_state()
                                                                      for la, tr in trainers.items()},
                                            "torch_rng": torch.get_rng_state(), "data": {"positions": positions},
                                            "stack": fingerprint}, run.keep_checkpoints)
            barrier(world)
        report("training", done, n_steps)
    wall = time.perf_counter() - t0
    for la, tr in trainers.items():
        ests[la].fitted(tr.m, tr.result(start))
    return StackTraining(ests, hooks, n_steps, n_steps * batch_size, stream.rows_computed, wall, stream.forward_s,
                         start, settings, train_s)


# --- the per-layer table and the output directory ------------------------------------------------------
def split_eval_texts(texts: Sequence[str], n: int) -> tuple[list[str], list[str], bool]:
    """(training texts, evaluation texts, held_out): the last `n` texts are held out of training when the
    corpus has more than `2n`; otherwise the evaluation reuses the first `n` training texts."""
    texts = list(texts)
    if n <= 0:
        return texts, [], False
    if len(texts) > 2 * n:
        return texts[:-n], texts[-n:], True
    return texts, texts[:n], False


@torch.inference_mode()
def stack_table(model: HookedModel, training: StackTraining, texts: Sequence[str], *, spliced: bool = True,
                batch_size: int = 16, progress: Stage | None = None) -> list[dict[str, Any]]:
    """One row per layer: L0, FVU and dead fraction on `texts` (every layer's rows from one forward per batch
    at the training positions), the training dead fraction (no firing in the last `dead_after` rows), and with
    `spliced` the LM loss with that layer's dictionary spliced in (`spliced_metrics`: 3 forwards per batch
    per layer)."""
    from lmscope.dictionary.metrics import evaluate
    from lmscope.dictionary.splice import spliced_metrics

    report = progress or (lambda stage, i, n: None)
    names = list(dict.fromkeys(n for pair in training.hooks.values() for n in pair))
    ex = training.settings["positions"]["exclude_first"]
    rule = PositionRule.for_model(model, ex)
    rows: dict[str, list[Tensor]] = {n: [] for n in names}
    ordered = sorted(texts, key=len)
    chunks = [ordered[i:i + batch_size] for i in range(0, len(ordered), batch_size)]
    for j, chunk in enumerate(chunks):
        report("evaluating", j, len(chunks))
        tokens = model.to_tokens(chunk)
        _, cache = model.run_with_cache(tokens, names=names, return_logits=False)
        mask = rule.kept(tokens)
        for n in names:
            rows[n].append(cache[n][mask].float())
    report("evaluating", len(chunks), len(chunks))
    table = []
    for la, (i, o) in training.hooks.items():
        est = training.estimators[la]
        row: dict[str, Any] = {"layer": la, "hook_name": i, "hook_name_out": o,
                               "dead_fraction_train": float(est.dead_mask_.float().mean()),
                               "final_train_l0": est.history_[-1]["l0"] if est.history_ else None}
        if texts:
            m = evaluate(est.dictionary_, torch.cat(rows[i]), torch.cat(rows[o])).to_dict()
            row.update(n_rows=m["n_rows"], l0=m["l0"], fvu=m["fvu"], dead_fraction=m["dead_fraction"],
                       dense_fraction=m["dense_fraction"])
        if spliced and texts:
            s = spliced_metrics(model, est.dictionary_, texts, exclude_first=ex, progress=progress).to_dict()
            row.update(clean_loss=s["clean_loss"], spliced_loss=s["spliced_loss"], ablated_loss=s["ablated_loss"],
                       loss_recovered=s["loss_recovered"], kl_div=s["kl_div"])
        table.append(row)
    return table


CURVE_POINTS = 200


def curves(training: StackTraining, points: int = CURVE_POINTS) -> dict[str, list[dict[str, float]]]:
    """Each layer's training curve (loss, mse, l0, n_dead, lr by step), thinned to about `points` steps
    (the last step always kept)."""
    out = {}
    for la, est in training.estimators.items():
        h = est.history_
        every = max(1, -(-len(h) // points))
        keep = [r for j, r in enumerate(h) if j % every == 0 or j == len(h) - 1]
        out[str(la)] = [{k: v for k, v in r.items() if k in ("step", "loss", "mse", "l0", "n_dead", "lr")}
                        for r in keep]
    return out


def save_stack(training: StackTraining, table: list[dict[str, Any]], directory: str | Path, *,
               overwrite: bool = False, meta: dict[str, Any] | None = None) -> Path:
    """Write `directory/layer<L>/` (SAELens layout, what `lmscope circuit --transcoders` reads) and
    `directory/result.json` (kind `dictionary_stack`: the per-layer table, curves, timing, settings; the
    CLI draws it as report.html with `lmscope.report.dictionary_sections.stack_section`), through the one
    result writer (`lmscope.results.write_result`: kind and version first). A result.json already there is
    refused before any layer is written, unless `overwrite`."""
    from lmscope.dictionary.io import save_dictionary
    from lmscope.fileio import check_writable
    from lmscope.results import RESULT_NAME, write_result

    root = Path(directory)
    check_writable(root / RESULT_NAME, overwrite=overwrite)
    for la, est in training.estimators.items():
        save_dictionary(est.dictionary_, root / f"layer{la}", overwrite=overwrite)
    result = {"kind": "dictionary_stack", **(meta or {}), "layers": list(training.hooks), "table": table,
              "curves": curves(training), "timing": timing(training), "settings": training.settings}
    write_result(root, result, overwrite=overwrite)
    return root


def timing(training: StackTraining) -> dict[str, Any]:
    """Wall time, model-forward and training seconds, and training rows per second (per layer and summed)."""
    wall = training.wall_s
    trained = (training.steps - training.resumed_from) * training.settings["batch_size"]
    return {"wall_s": wall, "forward_s": training.forward_s, "train_s": training.train_s,
            "steps": training.steps, "resumed_from": training.resumed_from, "rows_per_layer": training.rows,
            "rows_computed": training.rows_computed, "layers": len(training.hooks),
            "tokens_per_s": trained / wall if wall > 0 else None,
            "layer_tokens_per_s": trained * len(training.hooks) / wall if wall > 0 else None}
