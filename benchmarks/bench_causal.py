"""lmscope.causal vs pyvene (activation-patching sweep) and vs DoWhy (mediation on a linear SCM), in one run.

Both anchors share one venv (benchmarks/setup_venvs.sh pyvene); on a shared machine OMP_WAIT_POLICY=PASSIVE
keeps torch's idle threads from spinning:

    OMP_WAIT_POLICY=PASSIVE /work/bench-venvs/pyvene/bin/python benchmarks/bench_causal.py [--quick] [--json]
    ... --model smollm2   # SmolLM2-135M: 4 pairs of 12 prose tokens, every head and MLP at the last position
                          # of layers 0, 15, 29 (pyvene's fast form only)

1. Patching sweep on zoo:gpt2-tiny (4 layers, 4 heads): 32 base/source pairs of 16 tokens (BOS + a window
   of held-out corpus text), every head's `hook_z` and every MLP's output at every position patched from
   source into base, one at a time (4 x 16 x 5 = 320 components); metric: change in a logit difference
   at the last token.
   - lmscope: `patch_sweep` (stacked on the batch; each patched forward starts at the patched layer and
     position from the base's cached residual and keys/values, runs the patched block at the patched
     position alone, and the later blocks from that position on), and the same with `skip_layers=False`
     (stacked full forwards: the floor of exact patching that computes everything).
   - pyvene 0.1.8: one `IntervenableModel` per (layer, component type) reused for every head and
     position (`head_attention_value_output` with unit h.pos, `mlp_output` with unit pos,
     `VanillaIntervention`), both as documented (sources run each call) and in its fastest form (the
     source representation passed in, so each call is one forward).
   Effects must agree (max |difference| printed). Timing: benchmarks/_timing.py (>= 5 interleaved rounds
   after an untimed warm-up; min/median/max; ratio of medians).
2. Linear SCM (`lmscope.causal.scm`: C -> T, C -> M, C -> Y, T -> M -> Y, T -> Y; NIE = a b, NDE = d):
   lmscope's unadjusted / stratified / entropy-balanced NDE and NIE (with bootstrap CIs) next to DoWhy's
   `mediation.two_stage_regression` (linear first and second stages, back-door set {C}): accuracy against
   the known truth, not a speed race (lmscope also bootstraps CIs for three schemes).
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from _timing import Recorder, check_args, common_args, installed, interleaved, load_model, prose
from lmscope import HookedModel
from lmscope.causal import Component, mediate, patch_sweep
from lmscope.causal.scm import A, B, D, delta_c, scm_data, scm_model


def pairs_of_texts(model: HookedModel, n: int, seq: int, real: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` base and `n` source rows of `seq` tokens: (zoo) BOS + held-out synthetic corpus text, (real) windows of
    /work/real/prose.txt (SmolLM2 adds no BOS), joined and cut into windows."""
    if real:
        stream = torch.cat([model.to_tokens(t, prepend_bos=False).input_ids[0] for t in prose(40)])
        x = stream[: 2 * n * seq].reshape(2 * n, seq)
        return x[:n].to(model.device), x[n:].to(model.device)
    from lmscope.data.synthetic import generate_corpus

    texts = [s.text for s in generate_corpus(40 * n, seed=4242, split="heldout")]
    stream = torch.cat([model.to_tokens(t, prepend_bos=False).input_ids[0] for t in texts])  # each within n_ctx
    bos = torch.full((2 * n, 1), model.tokenizer.bos_token_id)
    x = torch.cat([bos, stream[: 2 * n * (seq - 1)].reshape(2 * n, seq - 1)], dim=1)
    return x[:n].to(model.device), x[n:].to(model.device)


def components(n_layers: int, n_heads: int, positions: list[int]) -> list[tuple[int, str, int, int]]:
    """(layer, kind, head, position) for every head and MLP at every position in `positions`."""
    return [(layer, kind, h, p) for layer in range(n_layers) for p in positions
            for kind, h in [*(("head", h) for h in range(n_heads)), ("mlp", -1)]]


def lmscope_sweep(model: HookedModel, base: torch.Tensor, source: torch.Tensor, comps: list, metric: Any,
                  skip: bool) -> torch.Tensor:
    units = [Component.of(f"blocks.{layer}.attn:{h}@{p}" if kind == "head" else f"blocks.{layer}.hook_mlp_out@{p}")
             for layer, kind, h, p in comps]
    return patch_sweep(model, base, source, units, metric, skip_layers=skip).effects


def pyvene_sweep(model: HookedModel, base: torch.Tensor, source: torch.Tensor, comps: list, metric: Any,
                 fast: bool) -> torch.Tensor:
    import pyvene as pv

    hf, n = model.hf, len(base)
    models: dict[tuple[int, str], Any] = {}
    for layer, kind, _, _ in comps:
        if (layer, kind) not in models:
            component, unit = ("head_attention_value_output", "h.pos") if kind == "head" else ("mlp_output", "pos")
            cfg = pv.IntervenableConfig([{"layer": layer, "component": component, "unit": unit,
                                          "intervention_type": pv.VanillaIntervention}])
            models[(layer, kind)] = pv.IntervenableModel(cfg, hf)
    effects = torch.empty(n, len(comps), device=base.device)
    with torch.no_grad():
        clean = metric(hf(input_ids=base).logits[:, -1], None)
        cache: dict[str, torch.Tensor] = {}
        if fast:  # the source representations, captured once (pyvene then runs one forward per call)
            names = sorted({f"blocks.{layer}.{'attn.hook_z' if k == 'head' else 'hook_mlp_out'}"
                            for layer, k, _, _ in comps})
            _, cache = model.run_with_cache(source, names=names, return_logits=False)
        for j, (layer, kind, h, p) in enumerate(comps):
            loc = [[[h]] * n, [[p]] * n] if kind == "head" else [[p]] * n
            ivm = models[(layer, kind)]
            if fast:
                rep = (cache[f"blocks.{layer}.attn.hook_z"][:, p, h][:, None, None] if kind == "head"
                       else cache[f"blocks.{layer}.hook_mlp_out"][:, p][:, None])
                _, out = ivm({"input_ids": base}, unit_locations={"sources->base": (None, [loc])},
                             source_representations=rep)
            else:
                _, out = ivm({"input_ids": base}, [{"input_ids": source}], {"sources->base": ([loc], [loc])})
            effects[:, j] = metric(out.logits[:, -1], None) - clean
    return effects


def bench_patching(rec: Recorder, rounds: int, real: bool, device: str, pairs: int | None) -> dict[str, Any]:
    model = load_model("smollm2" if real else "zoo", device)
    n, seq = (pairs or 4, 12) if real else (pairs or 32, 16)
    base, source = pairs_of_texts(model, n, seq, real)
    with torch.no_grad():
        last = model(source)[:, -1]
    t_id, f_id = int(last.mean(0).argmax()), int(last.mean(0).argmin())

    def metric(logits: torch.Tensor, index: Any) -> torch.Tensor:
        return logits[:, t_id] - logits[:, f_id]

    # real: the last position of the first, middle and last layers (one pyvene forward per component makes all of
    # them slow here), and pyvene's documented form (each call runs its source too: twice its fast form) left out
    positions = [seq - 1] if real else list(range(seq))
    comps = components(model.cfg.n_layers, model.cfg.n_heads, positions)
    if real:
        comps = [c for c in comps if c[0] in (0, model.cfg.n_layers // 2, model.cfg.n_layers - 1)]
    effects: dict[str, torch.Tensor] = {}

    def keep(name: str, fn: Any) -> Any:
        def run() -> None:
            effects[name] = fn()
        return run

    variants = {
        "lmscope": keep("lmscope", lambda: lmscope_sweep(model, base, source, comps, metric, True)),
        "lmscope_full": keep("lmscope_full", lambda: lmscope_sweep(model, base, source, comps, metric, False)),
        "pyvene_fast": keep("pyvene_fast", lambda: pyvene_sweep(model, base, source, comps, metric, True)),
        "pyvene_documented": keep("pyvene_documented",
                                  lambda: pyvene_sweep(model, base, source, comps, metric, False)),
    }
    if real:
        del variants["pyvene_documented"]
    t = interleaved(variants, rounds)
    one = interleaved({"forward": lambda: model(base)}, 5)
    ref = effects["lmscope"]
    label = "SmolLM2-135M" if real else "zoo:gpt2-tiny"
    diffs = {k: float((v - ref).abs().max()) for k, v in effects.items()}
    where = "the last position of layers " + ",".join(sorted({str(c[0]) for c in comps}, key=int)) if real else \
        "every position"
    what = f"patching sweep, {len(comps)} components (every head and MLP at {where}) x {n} pairs of {seq} tokens"
    q = f"effects max |diff| {max(diffs.values()):.1e} (max |effect| {float(ref.abs().max()):.2f})"
    rec.timing_row(f"{what} vs pyvene, source representations passed in", t, "pyvene_fast", "lmscope",
                   model=label, quality=q)
    if "pyvene_documented" in t.seconds:
        rec.timing_row(f"{what} vs pyvene, sources run per call (as documented)", t, "pyvene_documented",
                       "lmscope", model=label, quality=q)
    rec.timing_row(f"{what} vs lmscope's own full forwards (skip_layers=False)", t, "lmscope_full", "lmscope",
                   model=label, quality=q, note="what starting at the patched layer saves")
    return {"setup": {"pairs": n, "tokens": seq, "components": len(comps), "positions": positions,
                      "rounds": rounds}, "timing": t.to_dict(),
            "one_forward_of_the_pairs_s": one.median("forward"), "max_abs_effect": float(ref.abs().max()),
            "max_abs_difference_vs_lmscope": diffs}


def bench_scm(rec: Recorder, rounds: int, n: int = 1000, seed: int = 0) -> dict[str, Any]:
    import warnings

    import pandas as pd
    from dowhy import CausalModel
    from dowhy.causal_estimators.linear_regression_estimator import LinearRegressionEstimator

    x, t, c = scm_data(n, seed=seed)
    model = scm_model()
    out: dict[str, Any] = {}

    def lm() -> None:
        out["lmscope"] = mediate(model, x, t, c, ["m"], lambda o, idx: o, n_boot=500, max_pairs=50_000, seed=seed)

    with torch.no_grad():
        _, cache = model.run_with_cache(x, names=["m"])
        y = model.run_with_hooks(x)
    df = pd.DataFrame({"t": t, "c": c, "m": cache["m"][:, 0].numpy(), "y": y.numpy()})  # type: ignore[union-attr]
    graph = "digraph {c -> t; c -> m; c -> y; t -> m; m -> y; t -> y;}"

    def dw() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cm = CausalModel(data=df, treatment="t", outcome="y", graph=graph)
            res = {}
            for effect in ("nde", "nie"):
                estimand = cm.identify_effect(estimand_type=f"nonparametric-{effect}",
                                              proceed_when_unidentifiable=True)
                est = cm.estimate_effect(estimand, method_name="mediation.two_stage_regression",
                                         confidence_intervals=False, test_significance=False,
                                         method_params={"first_stage_model": LinearRegressionEstimator,
                                                        "second_stage_model": LinearRegressionEstimator})
                res[effect] = float(est.value)
            out["dowhy"] = res

    timing = interleaved({"lmscope": lm, "dowhy": dw}, rounds)
    result, dowhy = out["lmscope"], out["dowhy"]
    rows = {"truth": {"nde": D, "nie": A * B}, "dowhy two-stage regression": dowhy}
    for scheme in ("unadjusted", "stratified", "entropy_balancing"):
        rows[f"lmscope {scheme}"] = {
            e: float(result.effects[scheme][e]["estimate"][0]) for e in ("nde", "nie")} | {
            f"{e}_ci": [float(result.effects[scheme][e]["ci_low"][0]), float(result.effects[scheme][e]["ci_high"][0])]
            for e in ("nde", "nie")}
    eb, err = rows["lmscope entropy_balancing"], {}
    for name in ("dowhy two-stage regression", "lmscope entropy_balancing", "lmscope unadjusted"):
        err[name] = max(abs(rows[name]["nde"] - D), abs(rows[name]["nie"] - A * B))
    rec.row("mediation on a linear SCM with a confounder (n 1000): NDE, NIE", model="linear SCM",
            lmscope=f"NDE {eb['nde']:.3f}, NIE {eb['nie']:.3f} (entropy balancing, with CIs)",
            anchor=f"NDE {dowhy['nde']:.3f}, NIE {dowhy['nie']:.3f} (DoWhy two-stage regression)", ratio=None,
            quality=f"truth NDE {D:.3f}, NIE {A * B:.3f}; max error lmscope {err['lmscope entropy_balancing']:.3f}, "
                    f"DoWhy {err['dowhy two-stage regression']:.3f}, unadjusted {err['lmscope unadjusted']:.3f}",
            note="not a speed race: lmscope also runs 3 schemes x 500 bootstrap replicates")
    return {"n": n, "delta_c": delta_c(t, c), "estimates": rows, "max_error_vs_truth": err,
            "timing": timing.to_dict()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common_args(parser)
    parser.add_argument("--pairs", type=int, help="base/source pairs (default 32 zoo, 4 smollm2)")
    args = parser.parse_args(argv)
    rounds = check_args(args)
    if not installed("pyvene") or not installed("dowhy"):
        raise SystemExit("pyvene and dowhy must be installed in this venv (benchmarks/setup_venvs.sh pyvene)")
    torch.set_grad_enabled(False)
    rec = Recorder("causal", args, ["pyvene", "dowhy"])
    rec.details["patching"] = bench_patching(rec, rounds, args.model == "smollm2", args.device, args.pairs)
    rec.details["scm"] = bench_scm(rec, rounds)

    def text() -> None:
        p = rec.details["patching"]
        print(f"Patching sweep: {p['setup']['components']} components x {p['setup']['pairs']} pairs of "
              f"{p['setup']['tokens']} tokens ({p['setup']['rounds']} rounds)")
        for name, st in p["timing"]["stats"].items():
            print(f"  {name:20s} median {st['median']:8.3f} s (min {st['min']:.3f}, max {st['max']:.3f})   "
                  f"max |effect - lmscope| {p['max_abs_difference_vs_lmscope'][name]:.2e}")
        print(f"  one forward of the pairs: {p['one_forward_of_the_pairs_s'] * 1000:.1f} ms; "
              f"max |effect| {p['max_abs_effect']:.3f}")
        s = rec.details["scm"]
        print(f"\nLinear SCM, n = {s['n']}, E[C|T=1] - E[C|T=0] = {s['delta_c']:.3f}")
        for name, row in s["estimates"].items():
            ci = (f"   CIs NDE [{row['nde_ci'][0]:.3f}, {row['nde_ci'][1]:.3f}] NIE [{row['nie_ci'][0]:.3f}, "
                  f"{row['nie_ci'][1]:.3f}]" if "nde_ci" in row else "")
            print(f"  {name:32s} NDE {row['nde']:7.3f}  NIE {row['nie']:7.3f}{ci}")
        for name, st in s["timing"]["stats"].items():
            print(f"  {name}: median {st['median']:.3f} s")

    rec.finish(args, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
