"""Attribution patching (AtP) against the exact patching sweep: speed, and how close the estimates come.

Not a test. On IOI-style pairs (base "When A and B went to the store, B gave a drink to" -> A; source the
same with "A gave" -> B; metric: logit(A) - logit(B) of each base row), every head (`hook_z`), MLP output
and residual stream (`hook_resid_pre`) at every position is patched from source into base:

- exact: `patch_sweep(method="exact")`, lmscope's batched sweep (one partial forward per component and
  pair, started at the patched layer and position from the base's cached state);
- atp: `patch_sweep(method="attribution")`, one source forward and one base forward + backward.

Printed: wall time of each (min / median / max over interleaved rounds), the speed ratio, the Pearson
correlation of the mean effects and over every (pair, component) cell, the top-10 overlap (of the 10
largest |estimates|, how many are among the 10 largest |exact| effects), the worst component, the same per
group (heads, MLPs, residual streams), and the load average before and after (the machine may be shared:
timings move with it).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_atp.py --model zoo --pairs 8
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_atp.py --model smollm2 --pairs 4 --exact-every 4

Timing: benchmarks/_timing.py (>= 5 interleaved rounds of exact and atp after a small untimed warm-up of
both; min/median/max; ratio of medians). No anchor: lmscope's main venv.

`--exact-every N` times the exact sweep on every N-th position only (all layers and components there) and
scales its time by the number of positions (printed as such), for when the whole exact sweep is too slow;
the estimate's error is then measured on those positions. `--device cuda` runs both on a GPU.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from _timing import Recorder, check_args, common_args, interleaved, load_model
from lmscope import HookedModel
from lmscope.causal import compare_estimates, patch_sweep, standard_components
from lmscope.causal.scorers import logit_diff

NAMES = [" Mary", " John", " Tom", " Anna", " James", " Sarah", " David", " Emma", " Paul", " Lucy"]
NOUNS = [" senator", " chef", " player", " teacher", " doctor", " farmer", " coach", " mayor"]
PLACES = [" store", " park", " school", " beach", " city", " house", " garden", " shop"]
OBJECTS = [" drink", " book", " cake", " ball", " letter", " gift"]


def single_tokens(model: HookedModel, words: list[str]) -> list[str]:
    return [w for w in words if len(model.tokenizer(w, add_special_tokens=False)["input_ids"]) == 1]


def ioi_pairs(model: HookedModel, n: int) -> tuple[list[str], list[str], list[str], list[str]]:
    """`n` base and source prompts of one token length, with each base row's answer (A) and foil (B).

    Real models get names ("When Mary and John went to the store, John gave a drink to"); the zoo's
    synthetic vocabulary has no names, so its prompts use role nouns ("when the senator and the chef went
    to the market , the chef gave a book to the")."""
    names = single_tokens(model, NAMES)
    article = "" if len(names) >= 3 else " the"
    if len(names) < 3:
        names = single_tokens(model, NOUNS)
    places, objects = single_tokens(model, PLACES), single_tokens(model, OBJECTS)
    if len(names) < 3 or not places or not objects:
        raise SystemExit(f"{model.name}: too few single-token words for IOI prompts")
    lead, comma, end = ("When", ",", "") if not article else ("when", " ,", " the")
    base, source, answer, foil = [], [], [], []
    for i in range(n):
        a, b = names[i % len(names)], names[(i + 1 + i // len(names)) % len(names)]
        place, obj = places[i % len(places)], objects[(i // 2) % len(objects)]
        head = f"{lead}{article}{a} and{article}{b} went to the{place}{comma}{article}"
        base.append(f"{head}{b} gave a{obj} to{end}")
        source.append(f"{head}{a} gave a{obj} to{end}")
        answer.append(a)
        foil.append(b)
    return base, source, answer, foil


def components(model: HookedModel, positions: list[int]) -> list:
    c = model.cfg
    return [comp for p in positions for comp in standard_components(c.n_layers, c.n_heads, "heads,mlp,resid",
                                                                      position=p)]


def timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common_args(parser, models=None)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--exact-every", type=int, default=1, help="exact sweep on every N-th position only")
    parser.add_argument("--save", help="torch.save the exact and estimated effects here (for a closer look)")
    args = parser.parse_args(argv)
    rounds = check_args(args)
    rec = Recorder("atp", args)
    model = load_model(args.model, args.device)
    base, source, answer, foil = ioi_pairs(model, args.pairs)
    lengths = model.to_tokens(base + source).lengths
    if int(lengths.min()) != int(lengths.max()):
        raise SystemExit(f"prompts of unequal token lengths {lengths.tolist()}")
    n_pos = int(lengths[0])
    every = list(range(n_pos))
    subset = every[:: args.exact_every] if args.exact_every > 1 else every
    if args.exact_every > 1 and n_pos - 1 not in subset:
        subset.append(n_pos - 1)  # the last position, where most of the effect is
    comps, exact_comps = components(model, every), components(model, subset)
    metric = logit_diff(model, answer, foil)

    def exact() -> Any:
        return patch_sweep(model, base, source, exact_comps, metric)

    def atp() -> Any:
        return patch_sweep(model, base, source, comps, metric, method="attribution")

    atp()  # warm-up (allocator, first-call costs), untimed, for both sides
    patch_sweep(model, base[:2], source[:2], exact_comps[:50], metric)
    out: dict[str, Any] = {}
    t = interleaved({"exact": lambda: out.__setitem__("exact", exact()),
                     "atp": lambda: out.__setitem__("atp", atp())}, rounds, warmup=0)
    ex, est = out["exact"], out["atp"]
    scale = len(comps) / len(exact_comps)
    idx = [est.components.index(c.label) for c in exact_comps]
    stats = compare_estimates(est.effects[:, idx], ex.effects, ex.components, k=10)
    groups = {}
    for group, test in (("heads", lambda c: ".attn:" in c), ("mlp", lambda c: "hook_mlp_out" in c),
                        ("resid", lambda c: "hook_resid_pre" in c)):
        cols = [i for i, c in enumerate(ex.components) if test(c)]
        if cols:
            groups[group] = compare_estimates(est.effects[:, [idx[i] for i in cols]], ex.effects[:, cols],
                                              [ex.components[i] for i in cols], k=10)
    if args.save:
        torch.save({"components": ex.components, "exact": ex.effects, "estimate": est.effects[:, idx],
                    "y_base": ex.y_base, "y_source": ex.y_source}, args.save)
    label = {"zoo": "zoo:gpt2-tiny", "smollm2": "SmolLM2-135M"}.get(args.model, args.model)
    record = {
        "model": label, "device": args.device, "pairs": args.pairs, "positions": n_pos,
        "components": len(comps), "exact_components": len(exact_comps), "exact_positions": subset,
        "timing": t.to_dict(), "exact_seconds_all_components": t.median("exact") * scale,
        "exact_extrapolated": scale != 1, "speed_ratio": t.median("exact") * scale / t.median("atp"),
        "gap": float((ex.y_source - ex.y_base).mean()), **stats, "by_group": groups,
        "example": {"base": base[0], "source": source[0]},
    }
    rec.details = record
    spread = [r * scale for r in t.round_ratios("exact", "atp")]
    how = f" (exact timed on {len(exact_comps)}, scaled x{scale:.2f})" if scale != 1 else ""
    heads = groups.get("heads", {})
    rec.row(f"attribution patching vs exact sweep, {len(comps)} head/MLP/resid x position components, "
            f"{args.pairs} IOI pairs", model=label, lmscope=f"{t.median('atp'):.3g} s (AtP)",
            anchor=f"{t.median('exact') * scale:.3g} s (lmscope exact sweep){how}",
            ratio=record["speed_ratio"], spread=spread,
            quality=f"Pearson r {stats['pearson']:.2f}, top-10 overlap {round(stats['top_k_overlap'] * 10)}/10"
                    + (f"; heads r {heads['pearson']:.2f}" if heads.get("pearson") is not None else ""),
            note="no anchor: lmscope's estimate against its own exact sweep")

    def text() -> None:
        w = stats["worst"]
        print(f"{label} on {args.device}: {args.pairs} IOI pairs of {n_pos} tokens, e.g. {base[0]!r} -> "
              f"{answer[0]!r}; {len(comps)} components; mean logit-diff gap {record['gap']:+.3f}")
        for name in ("exact", "atp"):
            st = t.stats(name)
            print(f"{name:5s}: median {st['median']:.3f} s (min {st['min']:.3f}, max {st['max']:.3f}, "
                  f"{st['rounds']} rounds)")
        pc = "n/a" if stats["pearson_cells"] is None else f"{stats['pearson_cells']:.3f}"
        print(f"Pearson r of mean effects {stats['pearson']:.3f} (every pair x component: {pc}); top-10 overlap "
              f"{round(stats['top_k_overlap'] * 10)}/10; worst {w['component']}: estimate {w['estimate']:+.3f}, "
              f"exact {w['exact']:+.3f}; mean |error| {stats['mean_abs_error']:.4f}")
        for group, g in groups.items():
            gw, gp = g["worst"], "n/a" if g["pearson"] is None else f"{g['pearson']:.3f}"
            print(f"  {group:5s} ({g['n_components']} components): Pearson r {gp}, top-{g['k']} overlap "
                  f"{round(g['top_k_overlap'] * g['k'])}/{g['k']}, worst {gw['component']} (estimate "
                  f"{gw['estimate']:+.3f}, exact {gw['exact']:+.3f})")

    rec.finish(args, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
