"""Succession scores of every head: lmscope's batched form vs a per-head loop over TransformerLens's OV matrices.

The anchor runs in its own venv (benchmarks/setup_venvs.sh tl):

    OMP_WAIT_POLICY=PASSIVE /work/bench-venvs/tl/bin/python benchmarks/bench_heads.py \\
        [--quick] [--json] [--sizes zoo,large]

Sizes: "zoo" is zoo:gpt2-tiny (4 layers x 4 heads, d_model 128); "large" a seeded random-init GPT-2 of
12 layers x 12 heads, d_model 768, d_mlp 3072, with the zoo tokenizer's vocabulary (scores near 0; it is
there so the loop over 144 heads is timed).

Both sides go from a loaded model to the `[layer, head]` score matrix, tokenizing the tasks included:
- lmscope: `lmscope.heads.succession_scores(model, mode="mlp0", fold_ln=False)`, the paper's input for every
  head and TL's unprocessed weights, which is what the TL loop computes (lmscope's default "auto" gives layer-0
  heads the raw embedding instead); it also
  scores the held-out roman numerals and each layer's input baseline, work the TL side does not do.
- TransformerLens 4.3 has no `HookedTransformer`/`HookedTransformerConfig` nor the GPT-2 weight converters
  any more; its replacement, `TransformerBridge.boot_transformers("gpt2", hf_model=..., tokenizer=...)`, is
  booted on a copy of the SAME HF model with no weight processing (no LN folding, no centering), so the
  OV math is the same. The loop is what a TL user writes: effective embeddings from `model.W_E`,
  `model.blocks[0].ln2` and `model.blocks[0].mlp` per task variant, then for each layer and head
  `(model.blocks[layer].ln1(emb) @ OV[layer, head] @ model.W_U[:, ids]).AB` (FactoredMatrix) and that
  head's pairs scored with a top-2 (the successor must be strictly highest). `OV = model.OV` is read once
  outside the loop (the bridge re-stacks every layer's W_V/W_O on each `model.OV` access).
Task items, variants (" Monday" / "Monday", identical variants once), single-token filter and cyclic wrap
pairs follow lmscope's stated rules, re-implemented here on the TL side. The score matrices (pooled and
per task) must be equal; a nonzero difference would mean a float difference flipped a near-tie.

Timing: benchmarks/_timing.py (>= 5 interleaved rounds, each the median of --reps calls; min/median/max;
ratio of medians), fp32, 2 threads. Equal state, two ways: "cold", lmscope's per-tokenizer task caches
cleared (untimed) before each call while the TL side re-tokenizes each call; "warm", lmscope's caches kept and
the TL side given its task variants tokenized once. (An earlier version timed lmscope warm against TL cold.)
Both sides do the same arithmetic
(`(x W_V)(W_O W_U[:, ids])` per head), so the batched form saves dispatch and Python overhead, not FLOPs:
where the matmuls dominate (the large size) the ratio is bounded by how badly small per-head matmuls use
the CPU.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from _timing import Recorder, check_args, common_args, installed, interleaved
from lmscope import HookedModel
from lmscope.data.sequences import CYCLIC_TASKS, SUCCESSION_TASKS
from lmscope.heads import succession_scores

Variant = tuple[str, Tensor, Tensor, Tensor]  # (task, ids [n], src [p], dst [p])


def load_size(size: str, device: str = "cpu") -> tuple[HookedModel, str]:
    """`(model, description)` of size "zoo" or "large"."""
    model = HookedModel.from_pretrained("zoo:gpt2-tiny", device=device)
    if size == "zoo":
        return model, "zoo:gpt2-tiny"
    if size != "large":
        raise SystemExit(f"--sizes: unknown size {size!r}; expected zoo or large")
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tok = model.tokenizer
    cfg = GPT2Config(n_layer=12, n_head=12, n_embd=768, n_inner=3072, vocab_size=len(tok), n_positions=128,
                     activation_function="gelu_new", bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return (HookedModel(GPT2LMHeadModel(cfg).to(device), tok, name="random-gpt2-12x12"),
            "random-init GPT-2 (zoo tokenizer)")


# --- the TransformerLens user's loop --------------------------------------------------------------
def tl_variants(tokenizer: Any, tasks: dict[str, list[str]]) -> list[Variant]:
    """Each task's spaced and bare variants: single-token items, and (src, dst) of consecutive kept items."""
    out: list[Variant] = []
    for task, words in tasks.items():
        seen: list[list[int]] = []
        for prefix in (" ", ""):
            kept = {}  # item index -> token id
            for k, word in enumerate(words):
                toks = tokenizer(prefix + word, add_special_tokens=False)["input_ids"]
                if len(toks) == 1:
                    kept[k] = toks[0]
            ids = list(kept.values())
            if not ids or ids in seen:
                continue
            seen.append(ids)
            pos = {k: i for i, k in enumerate(kept)}
            succ = {k: (k + 1) % len(words) if task in CYCLIC_TASKS else k + 1 for k in kept}
            pairs = [(pos[k], pos[s]) for k, s in succ.items() if s in pos and s != k]
            if pairs:
                src, dst = zip(*pairs, strict=True)
                out.append((task, torch.tensor(ids), torch.tensor(src), torch.tensor(dst)))
    return out


def tl_scores(model: Any, variants: list[Variant]) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-head loop: pair-pooled scores `[layer, head]` and the same per task (the caller averages tasks)."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    hits: dict[str, Tensor] = {}
    counts: dict[str, int] = {}
    with torch.inference_mode():
        OV = model.OV  # FactoredMatrix [layer, head, d_model, d_model]
        for task, ids, src, dst in variants:
            x = model.W_E[ids]
            emb = x + model.blocks[0].mlp(model.blocks[0].ln2(x))  # effective embeddings, no W_pos
            W_U = model.W_U[:, ids]
            task_hits = hits.setdefault(task, torch.zeros(n_layers, n_heads))
            counts[task] = counts.get(task, 0) + len(src)
            for layer in range(n_layers):
                resid = model.blocks[layer].ln1(emb)
                for head in range(n_heads):
                    logits = (resid @ OV[layer, head] @ W_U).AB  # [n, n]
                    top = logits[src].topk(2, dim=-1)
                    ok = (top.indices[:, 0] == dst) & (top.values[:, 0] > top.values[:, 1])
                    task_hits[layer, head] += int(ok.sum())
    pooled = sum(hits.values(), torch.zeros(n_layers, n_heads)) / sum(counts.values())
    return pooled, {t: hits[t] / counts[t] for t in hits}


def make_bridge(model: HookedModel) -> Any:
    """A TL bridge on its own copy of the HF model (booting rewires submodules in place), weights checked equal."""
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers("gpt2", hf_model=copy.deepcopy(model.hf),
                                                 tokenizer=model.tokenizer, device=model.device.type)
    for ours, theirs in ((model.W_E, bridge.W_E), (model.W_U, bridge.W_U), (model.W_V, bridge.W_V),
                         (model.W_O, bridge.W_O)):
        if not torch.equal(ours, theirs):
            raise RuntimeError("the TL bridge's weights differ from lmscope's")
    return bridge


def clear_lmscope_caches() -> None:
    """Forget lmscope's per-tokenizer task caches, so its next call tokenizes as the TL side does (cold)."""
    from lmscope.heads import succession

    succession._TASK_CACHE.clear()
    succession._PLAN_CACHE.clear()


def compare(ours: Tensor, theirs: Tensor) -> str:
    diff = float((ours - theirs).abs().max())
    return "equal" if diff == 0.0 else f"MISMATCH (max |diff| {diff:.3g}: a float difference flipped a near-tie?)"



def bench_size(rec: Recorder, size: str, rounds: int, reps: int, device: str) -> None:
    model, desc = load_size(size, device)
    cfg = model.cfg
    detail: dict[str, Any] = {"model": desc, "shape": f"{cfg.n_layers} layers x {cfg.n_heads} heads, d_model "
                                                       f"{cfg.d_model}, vocab {cfg.d_vocab}", "match": {}}
    tasks = dict(SUCCESSION_TASKS)
    ours = succession_scores(model, mode="mlp0", fold_ln=False)
    detail["n_pairs"] = sum(v for k, v in ours.n_pairs.items() if not k.startswith("ood:"))
    layer, head = ours.best_head()
    detail["best_head"] = {"layer": layer, "head": head, "score": float(ours.scores[layer, head])}
    if not installed("transformer-lens"):
        raise SystemExit("transformer-lens is not installed in this venv (benchmarks/setup_venvs.sh tl)")
    bridge = make_bridge(model)
    pre = tl_variants(bridge.tokenizer, tasks)  # the TL side's tokenization, done once (warm state)
    pooled, per_task = tl_scores(bridge, pre)
    detail["n_variants"] = len(pre)
    task_mean = sum(per_task.values(), torch.zeros_like(pooled)) / len(per_task)
    detail["match"]["scores [layer, head] (task mean)"] = compare(ours.scores, task_mean)
    detail["match"]["scores_pooled [layer, head]"] = compare(ours.scores_pooled, pooled)
    for task, scores in per_task.items():
        detail["match"][f"per_task {task}"] = compare(ours.per_task[task], scores)
    lm: Callable[[], Any] = lambda: succession_scores(model, mode="mlp0", fold_ln=False)  # noqa: E731
    runs: dict[str, Callable[[], Any]] = {
        "lmscope_cold": lm, "tl_cold": lambda: tl_scores(bridge, tl_variants(bridge.tokenizer, tasks)),
        "lmscope_warm": lm, "tl_warm": lambda: tl_scores(bridge, pre)}
    t = interleaved(runs, rounds, reps=reps, setup={"lmscope_cold": clear_lmscope_caches})
    detail["timing"] = t.to_dict()
    matched = "scores equal" if all(v == "equal" for v in detail["match"].values()) else "scores MISMATCH"
    label = {"zoo": "zoo:gpt2-tiny", "large": "random GPT-2 12x12 heads"}[size]
    rec.timing_row("succession scores, every head; both tokenize each call (cold)", t, "tl_cold", "lmscope_cold",
                   model=label, quality=matched, note="TL: per-head OV loop on the bridge")
    rec.timing_row("succession scores, every head; tasks tokenized once on both sides (warm)", t, "tl_warm",
                   "lmscope_warm", model=label, quality=matched)
    rec.details[size] = detail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(parser, models=("zoo",))
    parser.add_argument("--sizes", default="zoo,large", help="comma-separated: zoo, large (default zoo,large)")
    parser.add_argument("--reps", type=int, default=5, help="calls per variant per round (their median)")
    args = parser.parse_args(argv)
    rounds = check_args(args)
    rec = Recorder("heads", args, ["transformer-lens"])
    sizes = ["zoo"] if args.quick else [s.strip() for s in args.sizes.split(",") if s.strip()]
    for size in sizes:
        bench_size(rec, size, rounds, 1 if args.quick else args.reps, args.device)

    def text() -> None:
        for size, d in rec.details.items():
            print(f"\n== {size}: {d['model']}, {d['shape']}; {d['n_pairs']} pairs in {d['n_variants']} TL variants; "
                  f"best head {d['best_head']}")
            for name, s in d["timing"]["stats"].items():
                print(f"   {name:<14} median {s['median'] * 1e3:8.1f} ms (min {s['min'] * 1e3:.1f}, "
                      f"max {s['max'] * 1e3:.1f})")
            bad = {k: v for k, v in d["match"].items() if v != "equal"}
            print(f"   lmscope vs TL scores: {bad or 'all equal'}")

    rec.finish(args, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
