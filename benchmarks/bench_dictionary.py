"""Dictionary training: lmscope vs SAELens (ReLU + L1 SAE) and sparsify (TopK SAE, TopK transcoder).

Each anchor runs in its own venv (benchmarks/setup_venvs.sh saelens / sparsify):
    OMP_WAIT_POLICY=PASSIVE /work/bench-venvs/saelens/bin/python benchmarks/bench_dictionary.py --anchor saelens
    OMP_WAIT_POLICY=PASSIVE /work/bench-venvs/sparsify/bin/python benchmarks/bench_dictionary.py --anchor sparsify
    (--quick: d_sae 4096, one round of 8 steps; --json; --out FILE; --profile relu|topk: profiles of lmscope)

lmscope's `fit` calls back after each step and the anchor takes its step on the same global batch inside the
callback (interleaved, so drift hits both). Warm-up steps are dropped; the timed steps are cut into >= 5
rounds, each side's figure per round its median step (benchmarks/_timing.py's Timing: min/median/max, ratio of
medians); tokens/s = batch / median step wall time. FVU (against the mean) and L0 of every tool on held-out
rows come from lmscope's `fvu`/`l0`. (An earlier version also printed a "percent of matmul" figure that counted
dense-equivalent work lmscope's sparse kernels do not do; only wall time is reported now.)

Speed at matched quality (ReLU race): the same λ gives the two ReLU SAEs different L0s, and FVU falls as L0
rises, so both tools are raced at every λ of --lambdas (a speed-quality curve), and lmscope's FVU and tokens/s
at each SAELens run's L0 are read off lmscope's curve by linear interpolation in log L0 between the two
lmscope runs that bracket it (not bracketed: said so, no ratio). The same-λ races are listed too, marked as
unequal quality. lmscope and SAELens decay the learning rate linearly to zero over the last `--lr-decay` of the
steps (their `lr_decay_steps`).
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.metadata as md
import itertools
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

from _timing import Recorder, Timing, check_args, common_args, installed
from lmscope.dictionary import SAE, DictConfig, Dictionary, Transcoder, fvu, l0, load_dictionary, save_dictionary
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
    timing: Timing | None = None  # per round: the median step time of each side
    tokens_per_s: dict[str, float] = field(default_factory=dict)
    quality: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    l1: float | None = None


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


@torch.no_grad()
def quality(recon: Recon, X: Tensor, Y: Tensor) -> dict[str, float]:
    """FVU (against the mean) and L0 on held-out rows, by lmscope's metrics."""
    y_hat, z = recon(X)
    return {"fvu": fvu(Y, y_hat), "l0": l0(z)}


def race(name: str, est: SAE | Transcoder, X: Tensor, Y: Tensor | None, held: tuple[Tensor, Tensor],
         anchor: Anchor | None, warm: int, steps: int, round_len: int) -> Race:
    """Train lmscope's `est` for warm + steps steps, the anchor's step on the same batch right after each of
    lmscope's (interleaved); rounds of `round_len` timed steps, each side's figure the median step of a round."""
    d_out = X.shape[1] if Y is None else Y.shape[1]
    res = Race(name, {"batch": est.batch_size, "d_in": X.shape[1], "d_sae": est.d_sae, "d_out": d_out,
                      "steps": steps, "warmup": warm, "round_len": round_len})
    lm: list[float] = []
    an: list[float] = []
    last = [0.0]

    def progress(done: int, total: int, rec: dict[str, float]) -> None:
        now = time.perf_counter()
        lm.append(now - last[0])
        if anchor is not None:
            anchor.step(done - 1)
            an.append(time.perf_counter() - now)
        last[0] = time.perf_counter()

    last[0] = time.perf_counter()
    est.fit(X, Y, progress=progress) if Y is not None else est.fit(X, progress=progress)
    B = est.batch_size
    rounds = {"lmscope": lm[warm:]} | ({anchor.name: an[warm:]} if anchor is not None else {})
    res.timing = Timing({side: [statistics.median(v[i:i + round_len]) for i in range(0, len(v), round_len)
                                if len(v[i:i + round_len]) == round_len] for side, v in rounds.items()})
    res.tokens_per_s = {side: B / res.timing.median(side) for side in rounds}
    res.quality["lmscope"] = quality(lambda x: est.dictionary_(x), *held)
    if anchor is not None:
        res.quality[anchor.name] = quality(anchor.recon(), *held)
        res.notes.append(anchor.notes)
    return res


def log_interp(points: list[tuple[float, float, float]], target: float) -> tuple[float, float] | None:
    """(FVU, tokens/s) at L0 `target` by linear interpolation in log L0 between the two runs of
    `points` [(L0, FVU, tokens/s)] whose L0s bracket it (the closest such pair); None if none brackets it."""
    pts = sorted(points)
    best = None
    for (a, fa, sa), (b, fb, sb) in itertools.pairwise(pts):
        if a <= target <= b:
            w = 0.0 if a == b else math.log(target / a) / math.log(b / a)
            cand = (fa + w * (fb - fa), sa + w * (sb - sa), math.log(b / a))
            if best is None or cand[2] < best[2]:
                best = cand
    return None if best is None else (best[0], best[1])


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
    lam = f", λ {r.l1:g}" if r.l1 is not None else ""
    print(f"\n== {r.name}{lam}: batch {s['batch']}, d_in {s['d_in']}, d_sae {s['d_sae']}, d_out {s['d_out']}, "
          f"{s['steps']} timed steps after {s['warmup']} warm-up, rounds of {s['round_len']}")
    print(f"   {'tool':<10} {'tokens/s':>10} {'ms/step (min..max)':>24} {'FVU':>8} {'L0':>7}")
    for tool, tps in r.tokens_per_s.items():
        q, st = r.quality.get(tool, {}), r.timing.stats(tool)
        span = f"{st['median'] * 1e3:.0f} ({st['min'] * 1e3:.0f}..{st['max'] * 1e3:.0f})"
        print(f"   {tool:<10} {tps:>10,.0f} {span:>24} {q.get('fvu', math.nan):>8.4f} {q.get('l0', math.nan):>7.1f}")
    for note in r.notes:
        print(f"   {note}")


def relu_curve(rec: Recorder, races: list[Race]) -> dict[str, Any]:
    """lmscope's (L0, FVU, tokens/s) curve over λ, read at each SAELens run's L0: speed at matched quality."""
    lm = [(r.quality["lmscope"]["l0"], r.quality["lmscope"]["fvu"], r.tokens_per_s["lmscope"]) for r in races]
    out = []
    for r in races:
        sl = r.quality["saelens"]
        at = log_interp(lm, sl["l0"])
        row = {"l1": r.l1, "saelens_l0": sl["l0"], "saelens_fvu": sl["fvu"],
               "saelens_tokens_per_s": r.tokens_per_s["saelens"], "bracketed": at is not None}
        if at is not None:
            row |= {"lmscope_fvu_at_l0": at[0], "lmscope_tokens_per_s_at_l0": at[1],
                    "speedup_at_matched_l0": at[1] / r.tokens_per_s["saelens"]}
        out.append(row)
    mid = min((o for o in out if o["bracketed"]), default=None,
              key=lambda o: abs(math.log(o["l1"] / races[len(races) // 2].l1)))
    if mid is not None:
        rec.row(f"ReLU+L1 SAE at matched L0 ({mid['saelens_l0']:.0f}): planted features, d_in 512, "
                f"d_sae {races[0].shape['d_sae']}, batch {races[0].shape['batch']}", model="synthetic",
                lmscope=f"{mid['lmscope_tokens_per_s_at_l0']:,.0f} tok/s, FVU {mid['lmscope_fvu_at_l0']:.4f}",
                anchor=f"{mid['saelens_tokens_per_s']:,.0f} tok/s, FVU {mid['saelens_fvu']:.4f} (λ {mid['l1']:g})",
                ratio=mid["speedup_at_matched_l0"],
                quality=f"lmscope's FVU {'no worse' if mid['lmscope_fvu_at_l0'] <= mid['saelens_fvu'] else 'WORSE'}"
                        " at SAELens's L0",
                note=f"lmscope read off its λ curve ({', '.join(f'{r.l1:g}' for r in races)}) in log L0")
    else:
        rec.row("ReLU+L1 SAE at matched L0", model="synthetic", lmscope="-", anchor="-", ratio=None,
                quality="no SAELens L0 inside lmscope's λ curve: widen --lambdas")
    for r in races:  # the same-λ races, with each side's quality (not matched: context only)
        rec.timing_row(f"ReLU+L1 SAE at the same λ {r.l1:g} (unequal quality)", r.timing, "saelens", "lmscope",
                       model="synthetic", unit="tok/s", work=r.shape["batch"],
                       quality=f"L0/FVU lmscope {r.quality['lmscope']['l0']:.0f}/{r.quality['lmscope']['fvu']:.4f}, "
                               f"SAELens {r.quality['saelens']['l0']:.0f}/{r.quality['saelens']['fvu']:.4f}")
    return {"points": out}


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
    common_args(p, models=("zoo",))
    p.add_argument("--anchor", choices=("saelens", "sparsify", "none"), default="none")
    p.add_argument("--profile", choices=("relu", "topk"), help="profile lmscope's fit and exit")
    p.add_argument("--lambdas", default="0.25,0.5,1",
                   help="L1 coefficients of the ReLU speed-quality curve (both tools run at each)")
    p.add_argument("--lr", type=float, default=4e-3, help="lmscope's (and SAELens's) Adam learning rate")
    p.add_argument("--lr-transcoder", type=float, default=8e-3,
                   help="lmscope's transcoder learning rate (it starts from a zero decoder; sparsify's is 1e-2 here)")
    p.add_argument("--lr-decay", type=float, default=0.2,
                   help="fraction of the steps over which lmscope and SAELens decay the learning rate to 0")
    args = p.parse_args(argv)
    rounds = check_args(args)
    if args.device != "cpu":
        raise SystemExit("--device cuda: this benchmark trains on CPU tensors only (not yet ported)")
    B, d, k = 4096, 512, 32
    round_len, warm = (8, 2) if args.quick else (6, 3)
    m, steps, n_texts = (4096, round_len * rounds, 2500) if args.quick else (8192, round_len * rounds, 8000)
    n = B * min(16, steps + warm)
    X = planted(n + 8192, d, m, 16, seed=0)
    X, held = X[:n], (X[n:], X[n:])
    if args.profile:
        profile(args.profile, X, m, 6)
        return 0
    src = TensorSource(X, X, B, 0, 0, 1)  # lmscope's batch order: both tools see the same global batches
    rec = Recorder("dictionary", args, {"saelens": ["sae-lens"], "sparsify": ["eai-sparsify"]}.get(args.anchor, []))
    races: list[Race] = []
    decay = round(args.lr_decay * (warm + steps))
    common = {"batch_size": B, "n_steps": warm + steps, "seed": 0, "lr_decay_steps": decay}
    if args.anchor == "saelens":
        if not installed("sae-lens", "sae_lens"):
            raise SystemExit("sae-lens is not installed in this venv (benchmarks/setup_venvs.sh saelens)")
        relu: list[Race] = []
        for lam in (float(x) for x in args.lambdas.split(",")):
            anchor, sl_sae = saelens_anchor(src, d, m, lam, args.lr, warm + steps, decay)
            est = SAE(m, activation="relu", l1_coefficient=lam, lr=args.lr, **common)
            r = race("ReLU + L1 SAE, planted features", est, X, None, held, anchor, warm, steps, round_len)
            r.l1 = lam
            relu.append(r)
        races += relu
        rec.details["relu_curve"] = relu_curve(rec, relu)
        rec.details["files"] = file_checks(est.dictionary_, sl_sae, held[0])
    if args.anchor in ("sparsify", "none"):
        if args.anchor == "sparsify" and not installed("eai-sparsify", "sparsify"):
            raise SystemExit("eai-sparsify is not installed in this venv (benchmarks/setup_venvs.sh sparsify)")
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
        if anchor is not None:
            for r, model in zip(races[-2:], ("synthetic", "zoo:gpt2-tiny"), strict=True):
                qa, qb = r.quality["lmscope"], r.quality["sparsify"]
                rec.timing_row(f"{r.name.split(',')[0]}: d_in {r.shape['d_in']}, d_sae {r.shape['d_sae']}, "
                               f"batch {B}", r.timing, "sparsify", "lmscope", model=model, unit="tok/s", work=B,
                               quality=f"held-out FVU lmscope {qa['fvu']:.4f}, sparsify {qb['fvu']:.4f} "
                                       f"(L0 {qa['l0']:.0f} / {qb['l0']:.0f})",
                               note="each with its own optimizer; same batches")
    rec.details["races"] = [{k_: (v.to_dict() if isinstance(v, Timing) else v) for k_, v in vars(r).items()}
                            for r in races]
    rec.details["settings"] = {"lr": args.lr, "lr_transcoder": args.lr_transcoder, "lr_decay_steps": decay}

    def text() -> None:
        for r in races:
            print_race(r)
        for pt in rec.details.get("relu_curve", {}).get("points", []):
            at = (f"lmscope at that L0: FVU {pt['lmscope_fvu_at_l0']:.4f}, {pt['lmscope_tokens_per_s_at_l0']:,.0f} "
                  f"tok/s ({pt['speedup_at_matched_l0']:.2f}x)" if pt["bracketed"] else "outside lmscope's curve")
            print(f"   SAELens λ {pt['l1']:g}: L0 {pt['saelens_l0']:.1f}, FVU {pt['saelens_fvu']:.4f}, "
                  f"{pt['saelens_tokens_per_s']:,.0f} tok/s; {at}")
        for what, verdict in rec.details.get("files", {}).items():
            print(f"   files: {what}: {verdict}")

    rec.finish(args, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
