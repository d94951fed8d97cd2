"""Dictionary training: lmscope vs SAELens (ReLU + L1 SAE) and sparsify (TopK SAE, TopK transcoder).

Anchors go in their own venvs (CPU torch first; pins in benchmarks/requirements-dictionary.txt):
    python3.11 -m venv .venv-saelens && .venv-saelens/bin/pip install torch==2.13.0
    .venv-saelens/bin/pip install -e . sae-lens torch==2.13.0      (.venv-sparsify: the same, eai-sparsify)
    OMP_WAIT_POLICY=PASSIVE .venv-saelens/bin/python benchmarks/bench_dictionary.py --anchor saelens
    OMP_WAIT_POLICY=PASSIVE .venv-sparsify/bin/python benchmarks/bench_dictionary.py --anchor sparsify
    (--quick: d_sae 4096, 12 steps; --json; --profile relu|topk: cProfile + torch op profile of lmscope)

lmscope's `fit` calls back after each step and the anchor takes its step on the same global batch inside the
callback (interleaved, so drift hits both). Warm-up steps are dropped; tokens/s from the median step time,
ratios the median of per-round ratios. FVU (against the mean) and L0 of every tool on held-out rows come
from lmscope's `fvu`/`l0`. FLOP/s count 12·B·d·m per step (ANCHORS.md's dense convention) against a
[B×d_in]×[d_in×d_sae] matmul timed each round. lmscope's steps do less: TopK runs one dense encoder matmul
(2·B·d·m) plus sparse decoding and sparse backward products (2·B·k·d + 6·B·k·d_out); ReLU, once at most
10% of its codes fire (from the ~7th step here), the same dense encoder plus CSR products on the codes' nnz
(2·nnz·(3·d_out + d_in)). So the 12·B·d·m figure is dense-equivalent throughput, and the FLOP/s of the work
actually done is printed beside it.

Matched L0 (ReLU race): the same λ gives the two ReLU SAEs different L0s, and FVU falls as L0 rises, so after
the timed race lmscope is retrained (untimed, same data, steps and batch) at λs found by a secant search in
log λ / log L0 (geometric bisection once two runs straddle the target: L0(λ) is not monotone in runs this short)
until its L0 is within 5% of SAELens's; lmscope's FVU at SAELens's L0 is read off by linear interpolation in
log L0 between the two runs that bracket it. lmscope (all races) and SAELens decay the
learning rate linearly to zero over the last `--lr-decay` of the steps (their `lr_decay_steps`).
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.metadata as md
import itertools
import json
import math
import os
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lmscope.dictionary import SAE, DictConfig, Dictionary, Transcoder, fvu, l0, load_dictionary, save_dictionary
from lmscope.dictionary.kernels import SPARSE_MAX_DENSITY
from lmscope.dictionary.train import TensorSource

Recon = Callable[[Tensor], tuple[Tensor, Tensor]]  # rows -> (prediction, codes [n, d_sae])


@dataclass
class Anchor:
    """An anchor's training step on global batch `i`, and its reconstruction once trained."""

    name: str
    step: Callable[[int], None]
    recon: Callable[[], Recon]
    notes: str = ""


@dataclass
class Race:
    """The figures of one lmscope-vs-anchor comparison."""

    name: str
    shape: dict[str, int]
    tokens_per_s: dict[str, float] = field(default_factory=dict)
    round_ratios: list[float] = field(default_factory=list)
    ratio: float | None = None
    quality: dict[str, dict[str, float]] = field(default_factory=dict)
    gemm_gflops: float = 0.0
    lmscope_gflops: float = 0.0
    lmscope_gflops_done: float = 0.0  # the work actually done (TopK: sparse decoder and backward)
    notes: list[str] = field(default_factory=list)
    matched: dict[str, Any] = field(default_factory=dict)  # lmscope's λ search to the anchor's L0 (ReLU)


def planted(n: int, d: int, n_feat: int, per_row: int, seed: int) -> Tensor:
    """Rows that are sums of `per_row` of `n_feat` random unit directions, magnitudes in [0.5, 1.5), + noise."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n_feat, d, generator=g)
    feats /= feats.norm(dim=1, keepdim=True)
    out = torch.empty(n, d)
    for i in range(0, n, 16384):
        m = min(16384, n - i)
        idx = torch.randint(n_feat, (m, per_row), generator=g)
        vals = 0.5 + torch.rand(m, per_row, generator=g)
        out[i:i + m] = torch.nn.functional.embedding_bag(idx, feats, per_sample_weights=vals, mode="sum")
    return out + 0.01 * torch.randn(n, d, generator=g)


def zoo_activations(n_texts: int, seed: int) -> tuple[Tensor, Tensor]:
    """Rows of (blocks.1.ln2.hook_normalized, blocks.1.hook_mlp_out) of zoo:gpt2-tiny, pads and BOS left out."""
    from lmscope import HookedModel
    from lmscope.data.synthetic import generate_corpus

    m = HookedModel.from_pretrained("zoo:gpt2-tiny")
    texts = [s.text for s in generate_corpus(n_texts, seed=seed)]
    names = ["blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out"]
    xs, ys = [], []
    bos = m.tokenizer.bos_token_id
    with torch.inference_mode():
        for i in range(0, len(texts), 500):
            chunk = texts[i:i + 500]
            tb = m.to_tokens(chunk)
            keep = tb.attention_mask.bool() & (tb.input_ids != bos)
            _, cache = m.run_with_cache(chunk, names=names, return_logits=False)
            xs.append(cache[names[0]][keep])
            ys.append(cache[names[1]][keep])
    return torch.cat(xs).float(), torch.cat(ys).float()


def gemm_gflops(B: int, d: int, m: int, reps: int = 5) -> float:
    """Best-of-`reps` fp32 GFLOP/s of a [B×d]×[d×m] matmul into a preallocated output (after one warm call)."""
    a, b, c = torch.randn(B, d), torch.randn(d, m), torch.empty(B, m)
    torch.mm(a, b, out=c)
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b, out=c)
        best = min(best, time.perf_counter() - t)
    return 2 * B * d * m / best / 1e9


@torch.no_grad()
def quality(recon: Recon, X: Tensor, Y: Tensor) -> dict[str, float]:
    """FVU (against the mean) and L0 on held-out rows, by lmscope's metrics."""
    y_hat, z = recon(X)
    return {"fvu": fvu(Y, y_hat), "l0": l0(z)}


def race(name: str, est: SAE | Transcoder, X: Tensor, Y: Tensor | None, held: tuple[Tensor, Tensor],
         anchor: Anchor | None, warm: int, steps: int, round_len: int) -> Race:
    """Train lmscope's `est` for warm + steps steps, the anchor's step interleaved; figures of the race."""
    d_out = X.shape[1] if Y is None else Y.shape[1]
    res = Race(name, {"batch": est.batch_size, "d_in": X.shape[1], "d_sae": est.d_sae, "d_out": d_out,
                      "steps": steps, "warmup": warm})
    lm: list[float] = []
    an: list[float] = []
    gemm: list[float] = []
    last = [0.0]

    def progress(done: int, total: int, rec: dict[str, float]) -> None:
        now = time.perf_counter()
        lm.append(now - last[0])
        if anchor is not None:
            anchor.step(done - 1)
            an.append(time.perf_counter() - now)
        if done > warm and (done - warm) % round_len == 0:
            gemm.append(gemm_gflops(est.batch_size, X.shape[1], est.d_sae))
        last[0] = time.perf_counter()

    last[0] = time.perf_counter()
    est.fit(X, Y, progress=progress) if Y is not None else est.fit(X, progress=progress)
    B, d, m = est.batch_size, X.shape[1], est.d_sae
    lm_t = lm[warm:]
    res.tokens_per_s["lmscope"] = B / statistics.median(lm_t)
    res.gemm_gflops = statistics.median(gemm)
    res.lmscope_gflops = 12 * B * d * m / statistics.median(lm_t) / 1e9
    if est.activation == "topk":
        done = 2 * B * d * m + 2 * B * est.k * d + 6 * B * est.k * d_out
    else:  # ReLU: sparse products once at most SPARSE_MAX_DENSITY of the codes fire (the median timed step's L0)
        nnz = B * statistics.median(h["l0"] for h in est.history_[warm:])
        sparse = nnz <= SPARSE_MAX_DENSITY * B * m
        done = 2 * B * d * m + 2 * nnz * (3 * d_out + d) if sparse else 6 * B * d * m + 4 * B * m * d_out
    res.lmscope_gflops_done = done / statistics.median(lm_t) / 1e9
    res.quality["lmscope"] = quality(lambda x: est.dictionary_(x), *held)
    if anchor is not None:
        an_t = an[warm:]
        res.tokens_per_s[anchor.name] = B / statistics.median(an_t)
        rounds = [(lm_t[i:i + round_len], an_t[i:i + round_len]) for i in range(0, len(lm_t), round_len)]
        res.round_ratios = [statistics.median(a) / statistics.median(b) for b, a in rounds if b]
        res.ratio = statistics.median(res.round_ratios)
        res.quality[anchor.name] = quality(anchor.recon(), *held)
        res.notes.append(anchor.notes)
    return res


def match_l0(fit_at: Callable[[float], dict[str, float]], target: float, first: tuple[float, dict[str, float]],
             runs: int, tol: float = 0.05) -> dict[str, Any]:
    """Retrain at new λs (`fit_at(λ)`: a fresh training's held-out FVU and L0) until the runs bracket `target`
    with one within `tol` of it, at most `runs` times. L0(λ) need not be monotone in short runs, so the next λ
    is a geometric bisection between the two λ-neighbours whose L0s straddle the target, or, with no straddle
    yet, a secant step in (log λ, log L0) from the nearest run (first step L0 ∝ 1/λ; a step of at most 3x
    in λ) beyond the λs tried, or a 1.6x step when the slope has the wrong sign or is flat. FVU at `target`:
    linear interpolation in log L0 between the straddling pair."""
    pts = [first]

    def gap(p: tuple[float, dict[str, float]]) -> float:
        return abs(math.log(p[1]["l0"] / target))

    def straddle() -> tuple[tuple[float, dict[str, float]], tuple[float, dict[str, float]]] | None:
        by_lam = sorted(pts, key=lambda p: p[0])
        pairs = [(a, b) for a, b in itertools.pairwise(by_lam)
                 if (a[1]["l0"] - target) * (b[1]["l0"] - target) <= 0]
        return min(pairs, key=lambda ab: gap(ab[0]) + gap(ab[1])) if pairs else None

    for _ in range(runs):
        pair = straddle()
        if pair is not None and min(gap(pair[0]), gap(pair[1])) <= math.log1p(tol):
            break
        if pair is not None:
            new = math.sqrt(pair[0][0] * pair[1][0])
        else:
            lam, q = min(pts, key=gap)
            want_up = q["l0"] < target  # more L0: a smaller λ
            others = [p for p in pts if p[0] != lam]
            slope = -1.0 if not others else (
                (math.log(others[0][1]["l0"]) - math.log(q["l0"])) / (math.log(others[0][0]) - math.log(lam)))
            step = math.exp(abs(math.log(target / q["l0"]) / slope)) if slope < -0.05 else 1.6
            factor = min(max(step, 1.05), 3.0)
            edge = min(p[0] for p in pts) if want_up else max(p[0] for p in pts)
            new = edge / factor if want_up else edge * factor
        pts.append((new, fit_at(new)))
    out: dict[str, Any] = {"target_l0": target,
                           "runs": [{"l1": lam_, **q_} for lam_, q_ in sorted(pts, key=lambda p: p[0])]}
    pair = straddle()
    if pair is not None:
        a, b = pair[0][1], pair[1][1]
        t = 0.0 if a["l0"] == b["l0"] else math.log(target / a["l0"]) / math.log(b["l0"] / a["l0"])
        out["fvu_at_target"], out["bracketed"] = a["fvu"] + t * (b["fvu"] - a["fvu"]), True
    else:
        out["fvu_at_target"], out["bracketed"] = min(pts, key=gap)[1]["fvu"], False
    return out


# --- anchors -------------------------------------------------------------------------------------------
def saelens_anchor(src: TensorSource, d: int, m: int, lam: float, lr: float, n: int,
                   decay: int) -> tuple[Anchor, Any]:
    """SAELens 6 `SAETrainer.step` on a StandardTrainingSAE (ReLU + decoder-norm-weighted L1, Adam, clip 1.0),
    the learning rate decayed linearly to 0 over the last `decay` steps."""
    from sae_lens import SAETrainer, StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig

    torch.manual_seed(0)
    sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=d, d_sae=m, l1_coefficient=lam, dtype="float32"))
    tcfg = SAETrainerConfig(total_training_samples=n * src.B, train_batch_size_samples=src.B, lr=lr, lr_end=lr,
                            adam_beta1=0.9, adam_beta2=0.999, lr_decay_steps=decay)
    trainer = SAETrainer(tcfg, sae, data_provider=iter(()))

    def step(i: int) -> None:
        x, _ = src.batch(i)
        if i == 0:  # SAELens's b_dec_init_method="mean", as lmscope initialises b_dec
            sae.b_dec.data = x.mean(0)
        trainer.step(x)
        trainer.n_training_steps += 1

    def recon() -> Recon:
        return lambda x: (sae.decode(sae.encode(x)), sae.encode(x))

    notes = (f"SAELens {md.version('sae-lens')} SAETrainer.step: same loss (MSE summed over d_in, L1 weighted by "
             "||W_dec||, λ no warm-up), Adam betas (0.9, 0.999) as lmscope (SAELens's trainer default too), "
             f"clip 1.0, lr decayed to 0 over the last {decay} steps (both), b_dec := batch mean (its 'mean' "
             "init); init seeds differ")
    return Anchor("saelens", step, recon, notes), sae


def sparsify_anchor(src: TensorSource, d: int, m: int, k: int, transcode: bool) -> Anchor:
    """sparsify's SparseCoder + ScheduleFree(SignSGD) with its trainer's per-step work (fvu loss, no AuxK)."""
    from schedulefree import ScheduleFreeWrapper
    from sparsify import SparseCoder, SparseCoderConfig
    from sparsify.sign_sgd import SignSGD

    torch.manual_seed(0)
    sc = SparseCoder(d, SparseCoderConfig(num_latents=m, k=k, transcode=transcode), dtype=torch.float32)
    lr = 5e-3 / (m / 2**14) ** 0.5  # its default
    opt = ScheduleFreeWrapper(SignSGD([{"params": sc.parameters(), "lr": lr}]), momentum=0.95)
    opt.train()
    fired = torch.zeros(m, dtype=torch.bool)

    def step(i: int) -> None:
        x, y = src.batch(i)
        if i == 0:
            if transcode:
                sc.encoder.bias.data = -x.mean(0) @ sc.encoder.weight.data.T
            sc.b_dec.data = y.mean(0)
        if not transcode:
            sc.set_decoder_norm_to_unit_norm()
        out = sc(x, y if transcode else None)
        fired[out.latent_indices.flatten()] = True
        float(out.fvu.detach())
        out.fvu.backward()
        if not transcode:
            sc.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()

    def recon() -> Recon:
        opt.eval()  # ScheduleFree: evaluate at the averaged weights

        def run(x: Tensor) -> tuple[Tensor, Tensor]:
            out = sc(x)
            return out.sae_out, torch.zeros(x.shape[0], m).scatter_(1, out.latent_indices, out.latent_acts)
        return run

    notes = (f"sparsify {md.version('eai-sparsify')}: SparseCoder(k={k}, transcode={transcode}) + ScheduleFree "
             f"SignSGD lr {lr:.1e} (its default), FVU loss, {'free' if transcode else 'unit'} decoder rows, no AuxK "
             "(auxk_alpha 0), no clip; lmscope: Adam, MSE summed over d_out, clip 1.0, "
             f"{'free decoder rows from zero' if transcode else 'unit decoder rows'}, lr decayed to 0 over the "
             "last steps")
    return Anchor("sparsify", step, recon, notes)


# --- file compatibility --------------------------------------------------------------------------------
def _diff(a: Tensor, b: Tensor) -> str:
    d, close = float((a - b).abs().max()), torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    return "equal" if d == 0 else f"{'allclose' if close else 'MISMATCH'} (max |diff| {d:.1e})"


def file_checks(trained: Dictionary, saelens_sae: Any, X: Tensor) -> dict[str, str]:
    """lmscope files loaded by SAELens, and a SAELens file loaded by lmscope: encode/decode compared."""
    from sae_lens import SAE as SLSAE

    g = torch.Generator().manual_seed(3)
    d = X.shape[1]
    topk = Dictionary(DictConfig(kind="sae", d_in=d, d_sae=256, activation="topk", k=16, hook_name="h"), generator=g)
    tc = Dictionary(DictConfig(kind="transcoder", d_in=d, d_sae=256, hook_name="a", hook_name_out="b"), generator=g)
    with torch.no_grad():
        for mod in (topk, tc):
            mod.b_enc.normal_(0, 0.1, generator=g)
            mod.b_dec.normal_(0, 0.1, generator=g)
    out: dict[str, str] = {}
    x = X[:512]
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        for label, mod in (("lmscope ReLU SAE (trained)", trained), ("lmscope TopK SAE", topk),
                           ("lmscope ReLU transcoder", tc)):
            path = save_dictionary(mod, os.path.join(tmp, label.replace(" ", "_")))
            try:
                other = SLSAE.load_from_disk(path)
                z = mod.encode(x)
                out[f"{label} -> SAELens {type(other).__name__}"] = (
                    f"encode {_diff(other.encode(x), z)}; decode {_diff(other.decode(z), mod.decode(z))}")
            except Exception as err:  # a failure to load is a finding, not a crash
                out[f"{label} -> SAELens"] = f"FAILED: {type(err).__name__}: {str(err).splitlines()[0][:160]}"
        path = os.path.join(tmp, "saelens")
        saelens_sae.save_inference_model(path)
        mine = load_dictionary(path)
        z = saelens_sae.encode(x)
        out["SAELens StandardSAE (trained) -> lmscope load_dictionary"] = (
            f"encode {_diff(mine.encode(x), z)}; decode {_diff(mine.decode(z), saelens_sae.decode(z))}")
    return out


# --- output --------------------------------------------------------------------------------------------
def print_race(r: Race) -> None:
    s = r.shape
    print(f"\n== {r.name}: batch {s['batch']}, d_in {s['d_in']}, d_sae {s['d_sae']}, d_out {s['d_out']}, "
          f"{s['steps']} timed steps after {s['warmup']} warm-up")
    print(f"   {'tool':<10} {'tokens/s':>10} {'FVU':>8} {'L0':>7}")
    for tool, tps in r.tokens_per_s.items():
        q = r.quality.get(tool, {})
        print(f"   {tool:<10} {tps:>10,.0f} {q.get('fvu', math.nan):>8.4f} {q.get('l0', math.nan):>7.1f}")
    if r.ratio is not None:
        verdict = "met" if r.ratio >= 1.5 else "MISSED"
        print(f"   lmscope/anchor tokens/s: {r.ratio:.2f}x (goal >= 1.5: {verdict}); per round "
              + ", ".join(f"{v:.2f}" for v in r.round_ratios))
    pct = r.lmscope_gflops / r.gemm_gflops
    print(f"   lmscope {r.lmscope_gflops:.0f} GFLOP/s (12·B·d·m per step) = {pct:.0%} of the measured "
          f"[{s['batch']}x{s['d_in']}]x[{s['d_in']}x{s['d_sae']}] matmul {r.gemm_gflops:.0f} GFLOP/s "
          f"(goal >= 50%: {'met' if pct >= 0.5 else 'MISSED'})")
    if r.lmscope_gflops_done != r.lmscope_gflops:
        print(f"   (the work lmscope actually does, dense encoder + sparse decoder/backward, runs at "
              f"{r.lmscope_gflops_done:.0f} GFLOP/s = {r.lmscope_gflops_done / r.gemm_gflops:.0%} of that matmul)")
    if r.matched:
        mt, anchor_fvu = r.matched, r.quality[next(t for t in r.quality if t != "lmscope")]["fvu"]
        print(f"   matched L0 (lmscope retrained at other λ, same steps/batch/data): target L0 {mt['target_l0']:.1f}")
        for run in mt["runs"]:
            print(f"     lmscope λ {run['l1']:.4f}: FVU {run['fvu']:.4f} at L0 {run['l0']:.1f}")
        how = "interpolated in log L0 between bracketing runs" if mt["bracketed"] else "nearest run, NOT bracketed"
        verdict = "no worse: met" if mt["fvu_at_target"] <= anchor_fvu else "WORSE: missed"
        print(f"   lmscope FVU at the anchor's L0: {mt['fvu_at_target']:.4f} ({how}) vs anchor {anchor_fvu:.4f} "
              f"({verdict})")
    for note in r.notes:
        print(f"   {note}")


def profile(kind: str, X: Tensor, d_sae: int, steps: int) -> None:
    """cProfile (Python level) and torch's op profile of lmscope's fit."""
    est = SAE(d_sae, activation=kind, k=32, l1_coefficient=1.0, batch_size=4096, n_steps=steps)
    prof = cProfile.Profile()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as tp:
        prof.runcall(est.fit, X)
    pstats.Stats(prof).sort_stats("tottime").print_stats(12)
    print(tp.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--anchor", choices=("saelens", "sparsify", "none"), default="none")
    p.add_argument("--quick", action="store_true", help="d_sae 4096, 12 timed steps, fewer zoo texts")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--profile", choices=("relu", "topk"), help="profile lmscope's fit and exit")
    p.add_argument("--l1", type=float, default=0.5, help="L1 coefficient of both ReLU SAEs")
    p.add_argument("--lr", type=float, default=4e-3, help="lmscope's (and SAELens's) Adam learning rate")
    p.add_argument("--lr-transcoder", type=float, default=8e-3,
                   help="lmscope's transcoder learning rate (it starts from a zero decoder; sparsify's is 1e-2 here)")
    p.add_argument("--lr-decay", type=float, default=0.2,
                   help="fraction of the steps over which lmscope and SAELens decay the learning rate to 0")
    p.add_argument("--match-runs", type=int, default=3,
                   help="most extra lmscope ReLU trainings in the search for SAELens's L0 (0: no search)")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    B, d, k = 4096, 512, 32
    m, steps, warm, round_len, n_texts = (4096, 12, 2, 4, 2500) if args.quick else (8192, 50, 3, 10, 8000)
    n = B * min(16, steps + warm)
    X = planted(n + 8192, d, m, 16, seed=0)
    X, held = X[:n], (X[n:], X[n:])
    if args.profile:
        profile(args.profile, X, m, 6)
        return 0
    src = TensorSource(X, X, B, 0, 0, 1)  # lmscope's batch order: both tools see the same global batches
    races: list[Race] = []
    files: dict[str, str] = {}
    decay = round(args.lr_decay * (warm + steps))
    common = {"batch_size": B, "n_steps": warm + steps, "seed": 0, "lr_decay_steps": decay}
    if args.anchor in ("saelens", "none"):
        anchor, sl_sae = (saelens_anchor(src, d, m, args.l1, args.lr, warm + steps, decay)
                          if args.anchor == "saelens" else (None, None))
        est = SAE(m, activation="relu", l1_coefficient=args.l1, lr=args.lr, **common)
        r = race("ReLU + L1 SAE, planted features", est, X, None, held, anchor, warm, steps, round_len)
        races.append(r)
        if anchor is not None and args.match_runs > 0:
            def fit_at(lam: float) -> dict[str, float]:
                e = SAE(m, activation="relu", l1_coefficient=lam, lr=args.lr, **common).fit(X)
                return quality(lambda x: e.dictionary_(x), *held)
            r.matched = match_l0(fit_at, r.quality["saelens"]["l0"], (args.l1, r.quality["lmscope"]),
                                 args.match_runs)
        if sl_sae is not None:
            files = file_checks(est.dictionary_, sl_sae, held[0])
    if args.anchor in ("sparsify", "none"):
        anchor = sparsify_anchor(src, d, m, k, False) if args.anchor == "sparsify" else None
        est = SAE(m, activation="topk", k=k, lr=args.lr, **common)
        races.append(race(f"TopK-{k} SAE, planted features", est, X, None, held, anchor, warm, steps, round_len))
        Xz, Yz = zoo_activations(n_texts, seed=5)
        cut = int(0.9 * Xz.shape[0])
        tsrc = TensorSource(Xz[:cut], Yz[:cut], B, 0, 0, 1)
        anchor = sparsify_anchor(tsrc, Xz.shape[1], 4096, k, True) if args.anchor == "sparsify" else None
        est_t = Transcoder(4096, activation="topk", k=k, lr=args.lr_transcoder, **common)
        races.append(race(f"TopK-{k} transcoder, zoo:gpt2-tiny layer 1 ({cut} train rows)", est_t, Xz[:cut],
                          Yz[:cut], (Xz[cut:], Yz[cut:]), anchor, warm, steps, round_len))
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "anchor": args.anchor, "quick": args.quick,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""), "l1": args.l1, "lr": args.lr,
            "lr_transcoder": args.lr_transcoder,
            "lr_decay_steps": decay}
    if args.json:
        print(json.dumps({"meta": meta, "races": [vars(r) for r in races], "files": files}, indent=2))
        return 0
    print(" ".join(f"{k_}={v}" for k_, v in meta.items()))
    for r in races:
        print_race(r)
    if files:
        print("\n== files (SAELens layout)")
        for what, verdict in files.items():
            print(f"   {what}: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
