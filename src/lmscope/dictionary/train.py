"""The training loop behind `SAE.fit` and `Transcoder.fit`.

Loss per global batch of B rows: `Σ_rows ||y - ŷ||² / B` (squared error summed over d_out, mean over rows,
as SAELens), plus for ReLU `λ_t · Σ_rows Σ_i z_i ||W_dec[i]|| / B` with λ warmed up linearly over
`l1_warmup_steps`, or for TopK the AuxK term `aux_coefficient · Σ_rows ||e - ê||² / B` (Gao et al. 2024: `e`
is the detached residual `y - ŷ`, `ê` its reconstruction from the `k_aux` largest pre-activations among dead
latents, no decoder bias). Adam with linear LR warm-up over `warmup_steps` and optional linear decay over the
last `lr_decay_steps`; gradients clipped to global norm `clip_grad`. TopK SAE decoder rows are renormalised
to unit norm after every step.

Initialisation from the first global batch: `b_dec` := the targets' mean. A TopK transcoder (as sparsify
trains one) also starts from a zero decoder with free row norms (its target lives in another space than its
input, so the code scale is not the decoder's to fix) and `b_enc := -(mean(x) - b_dec_in) @ W_enc`, which
centres its pre-activations on that batch. On zoo:gpt2-tiny's layer-1 MLP this took held-out FVU from 0.0074
(random unit-norm decoder rows kept by projection, uncentred encoder) to 0.0051 at 53 steps of 4096 rows.

Dead latents: a latent is dead once it has not fired for `dead_after` rows. With `resample=True`, every
`resample_every` steps up to 75% of training, dead latents are re-initialised toward high-loss rows of the
current global batch (Anthropic, 2023, simplified): rows are drawn with probability ∝ their squared error;
the decoder row becomes the unit residual `y - ŷ` of the drawn row (times the mean alive decoder norm), the
encoder column the unit centred input `x - b_dec_in` times 0.2 × the mean alive encoder norm, `b_enc` 0, and
their Adam moments are reset.

Determinism: the data order is a pure function of (seed, step) (one seeded permutation per epoch), the
initial weights come from a generator seeded with `seed`, and resampling draws from a generator seeded with
(seed, step). A checkpoint (model, optimizer, step, dead counters, history, torch's RNG state) therefore
lets a resumed run reproduce an uninterrupted one bit for bit.

Data parallel: under torchrun (WORLD_SIZE > 1) with gloo, rank r takes rows [r·B/W, (r+1)·B/W) of every
global batch; its loss is divided by the global B and gradients are summed with one all_reduce, so W ranks
follow the single-process trajectory up to floating-point summation order. Rank 0 writes checkpoints.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lmscope.dictionary.kernels import relu_dictionary, topk_decode
from lmscope.dictionary.modules import Dictionary
from lmscope.distributed import all_gather as _all_gather
from lmscope.distributed import all_reduce as _all_reduce
from lmscope.distributed import barrier as _barrier
from lmscope.distributed import dist_info
from lmscope.errors import InputError, bad_argument
from lmscope.fileio import atomic_write_bytes

log = logging.getLogger(__name__)

Progress = Callable[[int, int, dict[str, float]], None]
RESAMPLE_UNTIL = 0.75  # no resampling in the last quarter of training


@dataclass(kw_only=True, eq=False)
class TrainConfig:
    """The training hyperparameters (see the module docstring), declared once: `SAE` and `Transcoder` take
    them as `__init__` keywords (they inherit these fields), the `Trainer` reads them, and cfg.json records
    them under `train`. Where a run writes checkpoints is no hyperparameter: see `RunConfig`."""

    lr: float = 1e-3
    batch_size: int = 4096
    n_steps: int = 1000
    warmup_steps: int = 0
    lr_decay_steps: int = 0
    l1_warmup_steps: int = 0
    dead_after: int = 10_000_000
    resample: bool = True
    resample_every: int | None = None  # default: dead_after // batch_size
    k_aux: int | None = None  # default: d_in // 2
    aux_coefficient: float = 1.0 / 32
    clip_grad: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.999
    seed: int = 0

    @classmethod
    def of(cls, obj: Any) -> TrainConfig:
        """The training hyperparameters of `obj` (an estimator, or any object with these attributes)."""
        return cls(**{f.name: getattr(obj, f.name) for f in fields(cls)})

    def to_dict(self) -> dict[str, Any]:
        """The training hyperparameters only (what cfg.json's `train` holds), whatever subclass `self` is."""
        return {f.name: getattr(self, f.name) for f in fields(TrainConfig)}


@dataclass(frozen=True)
class RunConfig:
    """How a training run is carried out, not what it learns (so no part of cfg.json or a checkpoint's
    fingerprint): every `checkpoint_every` steps (0: never) a checkpoint goes to `out_dir/checkpoints/`,
    the newest `keep_checkpoints` are kept, and with `resume` a run continues from the newest one there.
    `remove_after`: the checkpoints were only a safety net (`plan_checkpoints`'s default), to be deleted
    with `remove_checkpoints` once the result is saved."""

    out_dir: str | Path | None = None
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    resume: bool = False
    remove_after: bool = False

    def __post_init__(self) -> None:
        for name, least in (("checkpoint_every", 0), ("keep_checkpoints", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise InputError(f"{name}: expected an integer >= {least}, got {value!r}")
        if self.out_dir is None and (self.checkpoint_every or self.resume):
            raise InputError("out_dir: checkpoints and resume need a directory to keep them in, got none")


# --- data ----------------------------------------------------------------------------------------------
class TensorSource:
    """Batches of in-memory rows in a seeded order: epoch e is `randperm(n)` from seed (seed, e)."""

    resumable = True

    def __init__(self, X: Tensor, Y: Tensor, batch_size: int, seed: int, rank: int, world: int) -> None:
        if batch_size % world:
            raise InputError(f"batch_size {batch_size} is not divisible by the {world} torchrun processes")
        self.X, self.Y, self.B, self.seed, self.rank, self.world = X, Y, batch_size, seed, rank, world
        self.n = X.shape[0]
        self._perms: dict[int, Tensor] = {}

    def _perm(self, epoch: int) -> Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.clear()
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms[epoch] = torch.randperm(self.n, generator=g)
        return self._perms[epoch]

    def global_indices(self, step: int) -> Tensor:
        flat = torch.arange(step * self.B, (step + 1) * self.B)
        epochs, pos = flat // self.n, flat % self.n
        out = torch.empty_like(flat)
        for e in epochs.unique().tolist():
            m = epochs == e
            out[m] = self._perm(int(e))[pos[m]]
        return out

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        b = self.B // self.world
        idx = self.global_indices(step)[self.rank * b:(self.rank + 1) * b]
        return self.X[idx], self.Y[idx]


class IteratorSource:
    """Batches from an iterator of `(x, y)` local batches (the on-the-fly ActivationBuffer)."""

    resumable = False

    def __init__(self, it: Iterator[tuple[Tensor, Tensor]]) -> None:
        self.it = it
        self._last: tuple[int, tuple[Tensor, Tensor]] | None = None

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        if self._last is None or self._last[0] != step:
            self._last = (step, next(self.it))
        return self._last[1]


# --- checkpoints -------------------------------------------------------------------------------------
_CKPT = re.compile(r"^step-(\d{8})\.pt$")


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint in `out_dir/checkpoints/`, if any."""
    d = checkpoint_dir(out_dir)
    found = sorted(p for p in d.glob("step-*.pt") if _CKPT.match(p.name)) if d.is_dir() else []
    return found[-1] if found else None


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's state dict (tensors only: `weights_only`), or an InputError naming the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise InputError(f"{path}: unreadable checkpoint ({err})") from None


def save_checkpoint(out_dir: Path, state: dict[str, Any], keep: int) -> None:
    d = checkpoint_dir(out_dir)
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(d / f"step-{state['step']:08d}.pt", buf.getvalue(), overwrite=True)
    old = sorted(p for p in d.glob("step-*.pt") if _CKPT.match(p.name))
    for p in old[:-max(1, keep)]:
        p.unlink(missing_ok=True)


def plan_checkpoints(out_dir: str | Path, n_steps: int, every: int | None, *, overwrite: bool) -> RunConfig:
    """The `RunConfig` of a command-line run: checkpoint and resume by default, so that a killed `dict train`
    rerun with the same command continues.

    `every=None`: about ten checkpoints a run (`ceil(n_steps / 10)` steps apart), removed when it ends
    (`remove_after`); 0: none (and nothing resumed); N: every N steps, kept. A checkpoint already in `out_dir`
    is resumed from (the run refuses one made with other settings), unless `overwrite`, which discards them
    and starts over.
    """
    if every is not None and every < 0:
        raise bad_argument("every", "0 (none) or a positive number of steps", every)
    d = checkpoint_dir(out_dir)
    if overwrite and d.is_dir():
        for p in d.glob("step-*.pt"):
            p.unlink()
    auto = every is None
    steps = max(1, -(-n_steps // 10)) if auto else int(every or 0)
    return RunConfig(out_dir=out_dir if steps else None, checkpoint_every=steps,
                     resume=steps > 0 and latest_checkpoint(out_dir) is not None, remove_after=auto)


def remove_checkpoints(out_dir: str | Path) -> None:
    """Delete `out_dir/checkpoints/` (lmscope's own files only) once the result they led to is saved."""
    d = checkpoint_dir(out_dir)
    if d.is_dir():
        for p in d.glob("step-*.pt"):
            if _CKPT.match(p.name):
                p.unlink()
        with contextlib.suppress(OSError):
            d.rmdir()


# --- the loop ----------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    history: list[dict[str, float]]
    n_steps: int
    dead_mask: Tensor  # [d_sae] bool: not fired in the last dead_after rows
    resumed_from: int


def _lr_factor(step: int, tc: TrainConfig) -> float:
    f = min(1.0, (step + 1) / tc.warmup_steps) if tc.warmup_steps > 0 else 1.0
    if tc.lr_decay_steps > 0 and step >= tc.n_steps - tc.lr_decay_steps:
        f *= (tc.n_steps - step) / tc.lr_decay_steps
    return f


class Trainer:
    """Trains one `Dictionary` on a data source; see the module docstring for the objective."""

    def __init__(self, module: Dictionary, tc: TrainConfig, *, run: RunConfig | None = None,
                 progress: Progress | None = None) -> None:
        self.m, self.tc, self.run_cfg = module, tc, run or RunConfig()
        self.out_dir = Path(self.run_cfg.out_dir) if self.run_cfg.out_dir is not None else None
        self.resume, self.progress = self.run_cfg.resume, progress
        self.rank, self.world = dist_info()
        self.params = [p for p in module.parameters() if p.requires_grad]
        fused = all(p.dtype in (torch.float32, torch.float64) for p in self.params)  # one fused kernel per step
        self.opt = torch.optim.Adam(self.params, lr=tc.lr, betas=(tc.beta1, tc.beta2), fused=fused)
        self.since_fired = torch.zeros(module.cfg.d_sae, dtype=torch.long)
        self.history: list[dict[str, float]] = []
        self.topk = module.cfg.activation == "topk"
        self.unit_decoder = self.topk and module.cfg.kind == "sae"  # TopK SAEs: decoder rows kept at unit norm
        self.k_aux = min(tc.k_aux or max(1, module.cfg.d_in // 2), module.cfg.d_sae)
        self.resample_every = tc.resample_every or max(1, tc.dead_after // tc.batch_size)

    # --- state ---
    def _state(self, step: int, data_state: dict[str, Any]) -> dict[str, Any]:
        return {"step": step, **self.own_state(), "torch_rng": torch.get_rng_state(), "data": data_state}

    def own_state(self) -> dict[str, Any]:
        """This dictionary's part of a checkpoint: module, optimizer, dead counters, history, settings."""
        return {"module": self.m.state_dict(), "optimizer": self.opt.state_dict(),
                "since_fired": self.since_fired.clone(), "history": list(self.history), "cfg": self._fingerprint()}

    def _fingerprint(self) -> dict[str, Any]:
        c = self.m.cfg.to_dict()
        c.pop("train", None)
        if c.get("corpus"):  # the same texts, wherever the file was read from
            c["corpus"] = c["corpus"].get("texts_sha256")
        return {"dictionary": c, "train": self.tc.to_dict()}

    def _try_resume(self) -> int:
        if not (self.resume and self.out_dir is not None):
            return 0
        path = latest_checkpoint(self.out_dir)
        if path is None:
            return 0
        state = read_checkpoint(path)
        self.load_state(state, path)
        torch.set_rng_state(state["torch_rng"])
        log.info("resumed from %s (step %d)", path, state["step"])
        return int(state["step"])

    def check_fingerprint(self, old: dict[str, Any], path: Path) -> None:
        """InputError unless the checkpoint at `path` (its fingerprint `old`) is of a run with these settings."""
        mine = self._fingerprint()
        for section in ("dictionary", "train"):
            for key, value in mine[section].items():
                was = old[section].get(key)
                if was != value:
                    raise InputError(f"{path}: a checkpoint of a different run ({key} was {was!r}, now {value!r}); "
                                     "use a new output directory or the same settings")

    def load_state(self, state: dict[str, Any], path: Path) -> None:
        """Restore the module, optimizer, dead counters and history from a `_state` dict (checked first)."""
        self.check_fingerprint(state["cfg"], path)
        self.m.load_state_dict(state["module"])
        self.opt.load_state_dict(state["optimizer"])
        self.since_fired = state["since_fired"]
        self.history = list(state["history"])

    # --- init & resampling ---
    @torch.no_grad()
    def init_from_data(self, x: Tensor, y: Tensor) -> None:
        """b_dec := mean of the first global batch's targets; a TopK transcoder also gets W_dec := 0 and
        b_enc := -(mean(x) - b_dec_in) @ W_enc (the module docstring says why; all ranks agree)."""
        m = self.m
        s = _all_reduce(y.double().sum(0), self.world)
        m.b_dec.copy_((s / self.tc.batch_size).to(m.b_dec.dtype))
        if self.topk and not self.unit_decoder:
            mean_x = (_all_reduce(x.double().sum(0), self.world) / self.tc.batch_size).to(m.W_enc.dtype)
            m.W_dec.zero_()
            m.b_enc.copy_(-(mean_x - m.b_dec_in) @ m.W_enc)

    @torch.no_grad()
    def _resample(self, step: int, x: Tensor, y: Tensor, dead: Tensor) -> int:
        xs, ys = _all_gather(x, self.world), _all_gather(y, self.world)
        m = self.m
        y_hat, _ = m(xs)
        resid = ys.to(y_hat.dtype) - y_hat
        err = (resid**2).sum(1).double()
        if float(err.sum()) <= 0:
            return 0
        idx_dead = dead.nonzero().squeeze(1)
        g = torch.Generator().manual_seed(self.tc.seed * 1_000_003 + 7 * step + 1)
        rows = torch.multinomial(err, idx_dead.numel(), replacement=idx_dead.numel() > err.numel(), generator=g)
        alive = ~dead
        dec_norm = m.W_dec[alive].norm(dim=1).mean() if alive.any() else torch.tensor(1.0)
        enc_norm = m.W_enc[:, alive].norm(dim=0).mean() if alive.any() else torch.tensor(1.0)
        d = resid[rows]
        d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
        e = xs[rows].to(m.W_enc.dtype) - m.b_dec_in
        e = e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)
        m.W_dec[idx_dead] = d * (1.0 if self.unit_decoder else dec_norm)
        m.W_enc[:, idx_dead] = (e * 0.2 * enc_norm).T
        m.b_enc[idx_dead] = 0.0
        for p, sl in ((m.W_dec, (idx_dead,)), (m.W_enc, (slice(None), idx_dead)), (m.b_enc, (idx_dead,))):
            st = self.opt.state.get(p)
            if st:
                st["exp_avg"][sl] = 0.0
                st["exp_avg_sq"][sl] = 0.0
        self.since_fired[idx_dead] = 0
        return int(idx_dead.numel())

    # --- one step ---
    def _step(self, step: int, x: Tensor, y: Tensor) -> dict[str, float]:
        m, tc = self.m, self.tc
        B = tc.batch_size
        lr = tc.lr * _lr_factor(step, tc)
        for group in self.opt.param_groups:
            group["lr"] = lr
        dead = self.since_fired > tc.dead_after
        if self.topk:
            vals, idx = m.encode_topk(x)
            y_hat = m.decode_topk(vals, idx)
        else:
            y_hat, z_sum, fires = relu_dictionary(x, m.W_enc, m.b_enc, m.b_dec_in, m.W_dec, m.b_dec)
        if m.W_skip is not None:
            y_hat = y_hat + x.to(m.W_skip.dtype) @ m.W_skip
        yt = y.to(y_hat.dtype)
        mse = ((y_hat - yt) ** 2).sum() / B
        loss = mse
        sparsity = torch.zeros((), dtype=mse.dtype)
        if not self.topk:
            lam = m.cfg.l1_coefficient * (min(1.0, (step + 1) / tc.l1_warmup_steps) if tc.l1_warmup_steps else 1.0)
            sparsity = (z_sum * m.W_dec.norm(dim=1)).sum() / B
            loss = loss + lam * sparsity
        elif bool(dead.any()):
            # AuxK: the k_aux largest pre-activations among dead latents, computed for dead columns only
            dead_idx = dead.nonzero().squeeze(1)
            k_aux = min(self.k_aux, int(dead_idx.numel()))
            pre_dead = torch.addmm(m._enc_bias()[dead_idx], x.to(m.W_enc.dtype), m.W_enc[:, dead_idx])
            a_vals, a_pos = pre_dead.topk(k_aux, dim=-1, sorted=False)
            e_hat = topk_decode(torch.relu(a_vals), dead_idx[a_pos], m.W_dec)
            sparsity = ((e_hat - (yt - y_hat).detach()) ** 2).sum() / B
            loss = loss + tc.aux_coefficient * sparsity
        self.opt.zero_grad(set_to_none=True)  # backward then hands its gradients over: no fill, no add
        loss.backward()
        for p in self.params:
            if p.grad is None:  # a parameter this step did not reach: zero, as Adam would have seen before
                p.grad = torch.zeros_like(p)
        if self.world > 1:
            flat = torch.cat([p.grad.reshape(-1) for p in self.params])  # type: ignore[union-attr]
            _all_reduce(flat, self.world)
            off = 0
            for p in self.params:
                n = p.numel()
                p.grad.copy_(flat[off:off + n].view_as(p))  # type: ignore[union-attr]
                off += n
        if tc.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(self.params, tc.clip_grad)
        self.opt.step()
        if self.unit_decoder:
            m.normalize_decoder()
        with torch.no_grad():
            if self.topk:
                on = vals.detach() > 0
                counts = torch.bincount(idx[on], minlength=m.cfg.d_sae)
            else:
                counts = fires.detach().float()  # rows that fired each latent (<= B: exact in float32)
            fired = (counts > 0).to(torch.int32)
            stats = torch.cat([torch.stack([mse.detach() * B, sparsity.detach() * B]).double(),
                               counts.double().sum().reshape(1)])
            _all_reduce(fired, self.world)
            _all_reduce(stats, self.world)
        self.since_fired += B
        self.since_fired[fired > 0] = 0
        mse_v, sp_v, nnz = (float(v) for v in stats)
        total = mse_v / B + (tc.aux_coefficient if self.topk else m.cfg.l1_coefficient) * sp_v / B
        return {"step": step, "loss": total, "mse": mse_v / B, ("aux" if self.topk else "l1"): sp_v / B,
                "l0": nnz / B, "lr": lr, "n_dead": int(dead.sum())}

    def train_step(self, step: int, x: Tensor, y: Tensor) -> dict[str, float]:
        """One optimisation step on this rank's rows `x`, `y` (resampling first when it is due); the step's
        record is appended to `history` and returned."""
        tc = self.tc
        x = x.to(self.m.W_enc.dtype)
        if (tc.resample and step > 0 and step % self.resample_every == 0
                and step <= RESAMPLE_UNTIL * tc.n_steps):
            dead = self.since_fired > tc.dead_after
            if bool(dead.any()):
                n = self._resample(step, x, y, dead)
                log.info("step %d: resampled %d dead latents", step, n)
        rec = self._step(step, x, y)
        self.history.append(rec)
        return rec

    def result(self, start: int = 0) -> TrainResult:
        """The `TrainResult` after training (the module is put in eval mode)."""
        self.m.eval()
        return TrainResult(self.history, self.tc.n_steps, (self.since_fired > self.tc.dead_after).clone(), start)

    def run(self, source: TensorSource | IteratorSource) -> TrainResult:
        tc = self.tc
        start = self._try_resume()
        if start and not getattr(source, "resumable", False):
            log.warning("resuming on-the-fly training: the data order after the checkpoint differs from an "
                        "uninterrupted run")
        if start == 0:
            self.init_from_data(*source.batch(0))
        self.m.train()
        for step in range(start, tc.n_steps):
            x, y = source.batch(step)
            rec = self.train_step(step, x, y)
            done = step + 1
            every = self.run_cfg.checkpoint_every
            if self.out_dir is not None and every > 0 and (done % every == 0 or done == tc.n_steps):
                if self.rank == 0:
                    save_checkpoint(self.out_dir, self._state(done, {"step": done}), self.run_cfg.keep_checkpoints)
                _barrier(self.world)
            if self.progress is not None:
                self.progress(done, tc.n_steps, rec)
        return self.result(start)
