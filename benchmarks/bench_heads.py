"""Succession scores of every head: lmscope's batched form vs a per-head loop over TransformerLens's OV matrices.

Issue 5's benchmark (goal: lmscope >= 10x). The anchor is never an lmscope dependency; it shares the
`.venv-bench` venv with bench_capture.py (the CPU torch wheel first, or pip pulls a multi-GB CUDA build):

    python3.11 -m venv .venv-bench
    .venv-bench/bin/pip install torch==2.13.0
    .venv-bench/bin/pip install -e .
    .venv-bench/bin/pip install -r benchmarks/requirements-heads.txt torch==2.13.0

Run (on a shared machine always with OMP_WAIT_POLICY=PASSIVE, or spinning threads swamp the timings):

    OMP_WAIT_POLICY=PASSIVE .venv-bench/bin/python benchmarks/bench_heads.py [--quick] [--json] [--sizes zoo,large]

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

Timing: fp32, 2 threads, under torch.inference_mode; rounds interleave the variants (order rotated);
seconds are medians of the round medians, ratios the medians of the per-round ratios. Each side's
tokenization of the tasks (about 600 tokenizer calls; lmscope also tokenizes the roman numerals) is timed
alone too, and the "compute" ratio leaves it out of both sides. Both sides do the same arithmetic
(`(x W_V)(W_O W_U[:, ids])` per head), so the batched form saves dispatch and Python overhead, not FLOPs:
where the matmuls dominate (the large size) the ratio is bounded by how badly small per-head matmuls use
the CPU.
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata as md
import json
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from bench_capture import anchor_version, time_variants
from lmscope import HookedModel
from lmscope.data.sequences import CYCLIC_TASKS, ROMAN_NUMERALS, ROMAN_TASK, SUCCESSION_TASKS
from lmscope.heads import succession_scores
from lmscope.heads.succession import task_tokens

GOAL = 10.0
Variant = tuple[str, Tensor, Tensor, Tensor]  # (task, ids [n], src [p], dst [p])
LABELS = {"lmscope": "lmscope succession_scores (batched)", "tl": "TL bridge per-head OV loop",
          "lmscope_tokenize": "its tokenization alone (lmscope)", "tokenize": "its tokenization alone (TL side)"}


@dataclass
class Result:
    """The figures of one size."""

    size: str
    model: str
    shape: str
    n_pairs: int = 0
    n_variants: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    round_seconds: dict[str, list[float]] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    goal: dict[str, Any] = field(default_factory=dict)
    match: dict[str, str] = field(default_factory=dict)
    best_head: dict[str, Any] = field(default_factory=dict)
    anchor: str = ""


def load_size(size: str) -> tuple[HookedModel, str]:
    """`(model, description)` of size "zoo" or "large"."""
    model = HookedModel.from_pretrained("zoo:gpt2-tiny")
    if size == "zoo":
        return model, "zoo:gpt2-tiny"
    if size != "large":
        raise SystemExit(f"--sizes: unknown size {size!r}; expected zoo or large")
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tok = model.tokenizer
    cfg = GPT2Config(n_layer=12, n_head=12, n_embd=768, n_inner=3072, vocab_size=len(tok), n_positions=128,
                     activation_function="gelu_new", bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return HookedModel(GPT2LMHeadModel(cfg), tok, name="random-gpt2-12x12"), "random-init GPT-2 (zoo tokenizer)"


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


def make_tl(model: HookedModel) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """A TL bridge on its own copy of the HF model (booting rewires submodules in place): (full run, tokenize)."""
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers("gpt2", hf_model=copy.deepcopy(model.hf),
                                                 tokenizer=model.tokenizer, device="cpu")
    for ours, theirs in ((model.W_E, bridge.W_E), (model.W_U, bridge.W_U), (model.W_V, bridge.W_V),
                         (model.W_O, bridge.W_O)):
        if not torch.equal(ours, theirs):
            raise RuntimeError("the TL bridge's weights differ from lmscope's")
    tasks = dict(SUCCESSION_TASKS)
    return (lambda _: tl_scores(bridge, tl_variants(bridge.tokenizer, tasks)),
            lambda _: tl_variants(bridge.tokenizer, tasks))


def compare(ours: Tensor, theirs: Tensor) -> str:
    diff = float((ours - theirs).abs().max())
    return "equal" if diff == 0.0 else f"MISMATCH (max |diff| {diff:.3g}: a float difference flipped a near-tie?)"


def bench_size(size: str, rounds: int, reps: int) -> Result:
    model, desc = load_size(size)
    cfg = model.cfg
    res = Result(size, desc, f"{cfg.n_layers} layers x {cfg.n_heads} heads, d_model {cfg.d_model}, "
                             f"vocab {cfg.d_vocab}")
    all_tasks = {**SUCCESSION_TASKS, ROMAN_TASK: ROMAN_NUMERALS}
    runs: dict[str, Callable[[Any], Any]] = {"lmscope": lambda _: succession_scores(model, mode="mlp0", fold_ln=False),
                                             "lmscope_tokenize": lambda _: task_tokens(model.tokenizer, all_tasks)}
    ours = runs["lmscope"](None)
    res.n_pairs = sum(v for k, v in ours.n_pairs.items() if not k.startswith("ood:"))
    layer, head = ours.best_head()
    res.best_head = {"layer": layer, "head": head, "score": float(ours.scores[layer, head])}
    version = anchor_version("transformer-lens")
    if version is None:
        res.anchor = "transformer-lens not installed"
    else:
        res.anchor = f"transformer-lens {version} (TransformerBridge.boot_transformers, no weight processing)"
        runs["tl"], runs["tokenize"] = make_tl(model)
        pooled, per_task = runs["tl"](None)
        res.n_variants = len(runs["tokenize"](None))
        task_mean = sum(per_task.values(), torch.zeros_like(pooled)) / len(per_task)
        res.match["scores [layer, head] (task mean)"] = compare(ours.scores, task_mean)
        res.match["scores_pooled [layer, head]"] = compare(ours.scores_pooled, pooled)
        for task, scores in per_task.items():
            res.match[f"per_task {task}"] = compare(ours.per_task[task], scores)
    seconds = time_variants(runs, None, rounds, reps)
    for name, per_round in seconds.items():
        res.seconds[name] = statistics.median(per_round)
        res.round_seconds[name] = sorted(per_round)
    if "tl" in seconds:
        res.ratios["tl/lmscope"] = statistics.median(b / a for a, b in zip(seconds["lmscope"], seconds["tl"],
                                                                           strict=True))
        res.ratios["compute (tokenization left out)"] = statistics.median(
            (b - tb) / (a - ta) for a, b, ta, tb in zip(seconds["lmscope"], seconds["tl"], seconds["lmscope_tokenize"],
                                                        seconds["tokenize"], strict=True))
        res.goal = {"ratio": "tl/lmscope", "target": GOAL, "met": res.ratios["tl/lmscope"] >= GOAL}
    return res


def print_table(res: Result) -> None:
    print(f"\n== size {res.size}: {res.model}, {res.shape}; {res.n_pairs} pairs in {res.n_variants} task variants")
    print(f"   anchor: {res.anchor}")
    print(f"   best head {res.best_head['layer']}.{res.best_head['head']} (score {res.best_head['score']:.3f})")
    print(f"   {'variant':<40} {'ms':>9}   round medians (min..max)")
    for name, sec in res.seconds.items():
        lo, hi = res.round_seconds[name][0], res.round_seconds[name][-1]
        print(f"   {LABELS[name]:<40} {sec * 1e3:>9.1f}   {lo * 1e3:.1f}..{hi * 1e3:.1f}")
    for ratio, value in res.ratios.items():
        note = ""
        if res.goal.get("ratio") == ratio:
            note = f"   goal >= {res.goal['target']:g}: {'met' if res.goal['met'] else 'MISSED'}"
        print(f"   {ratio:<40} {value:>9.1f}x{note}")
    for what, verdict in res.match.items():
        print(f"   lmscope vs TL {what}: {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round of 3 runs (a smoke run)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--sizes", default="zoo,large", help="comma-separated: zoo, large (default zoo,large)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    rounds, reps = (1, 3) if args.quick else (args.rounds, args.reps)
    results = [bench_size(s.strip(), rounds, reps) for s in args.sizes.split(",") if s.strip()]
    meta = {"torch": torch.__version__, "transformers": md.version("transformers"), "threads": 2,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"), "rounds": rounds, "reps": reps}
    if args.json:
        print(json.dumps({"meta": meta, "sizes": [vars(r) for r in results]}, indent=2))
    else:
        print(f"torch {meta['torch']}, transformers {meta['transformers']}, OMP_WAIT_POLICY="
              f"{meta['omp_wait_policy']}; {rounds} round(s) x {reps} runs, medians")
        for res in results:
            print_table(res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
