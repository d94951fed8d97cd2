"""Capture speed: bare HF forward vs lmscope vs TransformerLens 4.x bridge vs nnsight, every MLP's neurons.

The anchors are never lmscope dependencies; give them their own venv (the CPU torch wheel first, or
pip pulls a multi-GB CUDA build):

    python3.11 -m venv .venv-bench
    .venv-bench/bin/pip install torch==2.13.0
    .venv-bench/bin/pip install -e .
    .venv-bench/bin/pip install -r benchmarks/requirements-capture.txt torch==2.13.0

Run (an anchor that does not import is reported "not installed" and skipped):

    .venv-bench/bin/python benchmarks/bench_capture.py [--quick] [--json] [--sizes a,b]

Size (a): GPT-2 architecture, 6 layers, d_model 384, vocab 8192, random init, batch 16 x 128.
Size (b): the zoo's gpt2-tiny (a random-init model of its shape if it is not trained yet), batch 8 x 64.
fp32, 2 threads, SDPA attention; every variant runs under torch.inference_mode. Runs are interleaved
(order rotated each time) so drift hits all variants alike; tokens/s are medians of the round medians,
ratios the medians of the per-round ratios.

On a machine another job is using, run with OMP_WAIT_POLICY=PASSIVE: with libgomp's default spin-wait,
2 threads that share their cores with another process ran the size (b) forward 30x slower (0.7 s), which
swamps every difference this benchmark is about.
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib.metadata as md
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lmscope import HookedModel

Capture = Callable[[Tensor], list[Tensor]]
ANCHORS = ("transformer-lens", "nnsight")
LABELS = {"bare": "bare HF forward", "lmscope": "lmscope run_with_cache",
          "lmscope_stop": "lmscope run_with_cache(return_logits=False)",
          "tl": "TransformerLens bridge run_with_cache", "nnsight": "nnsight trace + save"}
TL_CANDIDATES = ("blocks.{l}.mlp.hook_post", "blocks.{l}.mlp.out.hook_in")


@dataclass
class Result:
    """The figures of one size."""

    size: str
    model: str
    batch: int
    pos: int
    tokens_per_s: dict[str, float] = field(default_factory=dict)
    round_spread: dict[str, list[float]] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    goals: dict[str, dict[str, Any]] = field(default_factory=dict)
    match: dict[str, str] = field(default_factory=dict)
    anchors: dict[str, str] = field(default_factory=dict)


def word_tokenizer(vocab_size: int) -> Any:
    """A word-level tokenizer `t0 .. tN`, saved and reloaded so it has a `name_or_path` (TL 4 needs one)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="t0", eos_token="t0", unk_token="t0",
                                  pad_token="t0")
    directory = tempfile.mkdtemp(prefix="bench-capture-tok-")
    tok.save_pretrained(directory)
    return PreTrainedTokenizerFast.from_pretrained(directory)


def random_gpt2(seed: int, **arch: Any) -> tuple[nn.Module, Any]:
    """A seeded random-init GPT-2 (SDPA attention) and a matching word-level tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(bos_token_id=0, eos_token_id=0, attn_implementation="sdpa", **arch)
    return GPT2LMHeadModel(cfg).eval(), word_tokenizer(arch["vocab_size"])


def load_size(size: str) -> tuple[nn.Module, Any, str, int, int]:
    """`(hf_model, tokenizer, description, batch, pos)` of size "a" or "b"."""
    if size == "a":
        hf, tok = random_gpt2(0, n_layer=6, n_embd=384, n_head=6, vocab_size=8192, n_positions=128)
        return hf, tok, "random-init GPT-2, 6 layers, d_model 384, vocab 8192", 16, 128
    from lmscope.model import zoo

    if zoo.locate("gpt2-tiny") is not None:
        m = HookedModel.from_pretrained("zoo:gpt2-tiny")
        return m.hf, m.tokenizer, f"zoo:gpt2-tiny ({zoo.locate('gpt2-tiny')})", 8, 64
    hf, tok = random_gpt2(1, n_layer=4, n_embd=128, n_head=4, n_inner=512, vocab_size=1820, n_positions=128)
    return hf, tok, "random-init stand-in for zoo:gpt2-tiny (not trained yet): 4 layers, d_model 128", 8, 64


def anchor_version(dist: str) -> str | None:
    try:
        __import__(dist.replace("-", "_"))
        return md.version(dist)
    except Exception:  # an anchor that does not import is simply absent
        return None


def make_bare(hf: nn.Module) -> Capture:
    def run(ids: Tensor) -> list[Tensor]:
        with torch.inference_mode():
            return [hf(input_ids=ids, use_cache=False).logits]

    return run


def make_lmscope(hf: nn.Module, tok: Any, n_layers: int, return_logits: bool = True) -> Capture:
    """lmscope's capture; with `return_logits=False` it stops once the last MLP's neurons are captured
    (skipping that MLP's output projection, the final norm and the unembedding: less work, as extraction does)."""
    m = HookedModel(hf, tok)
    names = [f"blocks.{layer}.mlp.hook_post" for layer in range(n_layers)]

    def run(ids: Tensor) -> list[Tensor]:
        with torch.inference_mode():
            _, cache = m.run_with_cache(ids, names=names, return_logits=return_logits)
        return [cache[n] for n in names]

    return run


def make_tl(hf: nn.Module, tok: Any, n_layers: int, ids: Tensor, want: Tensor) -> tuple[Capture, str]:
    """A TL bridge on its own copy of the model (booting rewires HF submodules in place) and its hook name."""
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers("gpt2", hf_model=copy.deepcopy(hf), tokenizer=tok, device="cpu")
    template = next((t for t in TL_CANDIDATES if _tl_matches(bridge, t.format(l=0), ids, want)), None)
    if template is None:
        raise RuntimeError(f"no TL hook among {TL_CANDIDATES} equals blocks.0.mlp.hook_post")
    names = [template.format(l=layer) for layer in range(n_layers)]

    def run(ids: Tensor) -> list[Tensor]:
        with torch.inference_mode():
            _, cache = bridge.run_with_cache(ids, names_filter=names)
        return [cache[n] for n in names]

    return run, template


def _tl_matches(bridge: Any, name: str, ids: Tensor, want: Tensor) -> bool:
    if name not in bridge.hook_dict:
        return False
    with torch.inference_mode():
        _, cache = bridge.run_with_cache(ids, names_filter=[name])
    got = cache[name]
    return got.shape == want.shape and torch.allclose(got, want, rtol=1e-4, atol=1e-5)


def make_nnsight(hf: nn.Module, tok: Any, n_layers: int) -> Capture:
    from nnsight import LanguageModel

    model = LanguageModel(copy.deepcopy(hf), tokenizer=tok)

    def run(ids: Tensor) -> list[Tensor]:
        outs: list[Any] = []  # made before the trace: a comprehension inside it raised NameError (nnsight 0.8)
        with torch.inference_mode(), model.trace(ids):
            for layer in range(n_layers):
                outs.append(model.transformer.h[layer].mlp.act.output.save())
        return [torch.as_tensor(o) for o in outs]

    return run


def compare(got: list[Tensor], want: list[Tensor]) -> str:
    """"equal", "allclose (max |diff| ...)" or "MISMATCH ..." of two lists of captured tensors."""
    if len(got) != len(want) or any(g.shape != w.shape for g, w in zip(got, want, strict=False)):
        return f"MISMATCH shapes {[tuple(g.shape) for g in got]} vs {[tuple(w.shape) for w in want]}"
    diff = max(float((g - w).abs().max()) for g, w in zip(got, want, strict=True))
    if diff == 0.0:
        return "equal"
    ok = all(torch.allclose(g, w, rtol=1e-4, atol=1e-5) for g, w in zip(got, want, strict=True))
    return f"{'allclose' if ok else 'MISMATCH'} (max |diff| {diff:.1e})"


def time_variants(runs: dict[str, Capture], ids: Tensor, rounds: int, reps: int) -> dict[str, list[float]]:
    """Seconds per call: per variant, the median of each round; variants interleaved, order rotated."""
    for fn in runs.values():  # warm-up
        fn(ids)
        fn(ids)
    names = list(runs)
    medians: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(rounds):
        gc.collect()
        samples: dict[str, list[float]] = {n: [] for n in names}
        for rep in range(reps):
            for name in names[rep % len(names):] + names[: rep % len(names)]:
                start = time.perf_counter()
                runs[name](ids)
                samples[name].append(time.perf_counter() - start)
        for name in names:
            medians[name].append(statistics.median(samples[name]))
    return medians


def bench_size(size: str, rounds: int, reps: int) -> Result:
    hf, tok, desc, batch, pos = load_size(size)
    n_layers = hf.config.n_layer
    ids = torch.randint(0, hf.config.vocab_size, (batch, pos), generator=torch.Generator().manual_seed(1234))
    res = Result(size, desc, batch, pos)
    runs: dict[str, Capture] = {"bare": make_bare(hf), "lmscope": make_lmscope(hf, tok, n_layers),
                                "lmscope_stop": make_lmscope(hf, tok, n_layers, return_logits=False)}
    want = runs["lmscope"](ids)
    res.match["lmscope return_logits=False vs lmscope"] = compare(runs["lmscope_stop"](ids), want)
    with torch.inference_mode():
        res.match["lmscope logits vs bare"] = compare(
            [HookedModel(hf, tok).run_with_cache(ids, names=[])[0]], runs["bare"](ids))
    for key, dist in (("tl", "transformer-lens"), ("nnsight", "nnsight")):
        version = anchor_version(dist)
        if version is None:
            res.anchors[dist] = "not installed"
            continue
        try:
            if key == "tl":
                runs[key], template = make_tl(hf, tok, n_layers, ids, want[0])
                res.anchors[dist] = f"{version} (hook {template})"
            else:
                runs[key] = make_nnsight(hf, tok, n_layers)
                res.anchors[dist] = version
            res.match[f"{key} vs lmscope"] = compare(runs[key](ids), want)
        except Exception as err:  # an anchor's failure is reported, never fatal
            runs.pop(key, None)
            res.anchors[dist] = f"{version}, failed: {type(err).__name__}: {str(err).splitlines()[0][:160]}"
    seconds = time_variants(runs, ids, rounds, reps)
    tokens = batch * pos
    for name, per_round in seconds.items():
        res.tokens_per_s[name] = tokens / statistics.median(per_round)
        res.round_spread[name] = sorted(tokens / s for s in per_round)
    pairs = (("lmscope", "bare"), ("tl", "bare"), ("nnsight", "bare"), ("lmscope", "tl"), ("lmscope", "nnsight"),
             ("lmscope_stop", "bare"), ("lmscope_stop", "tl"), ("lmscope_stop", "nnsight"))
    for a, b in pairs:
        if a in seconds and b in seconds:  # per-round ratios (same round, interleaved), then their median
            res.ratios[f"{a}/{b}"] = statistics.median(sb / sa for sa, sb in zip(seconds[a], seconds[b], strict=True))
    goals = {"a": {"lmscope/bare": 0.95}, "b": {"lmscope/tl": 1.5, "lmscope/nnsight": 1.5}}[size]
    for ratio, target in goals.items():
        got = res.ratios.get(ratio)
        res.goals[ratio] = {"target": target, "met": None if got is None else got >= target}
    return res


def print_table(res: Result) -> None:
    print(f"\n== size ({res.size}): {res.model}; batch {res.batch} x {res.pos}, fp32, "
          f"{torch.get_num_threads()} threads")
    for dist, state in res.anchors.items():
        print(f"   {dist}: {state}")
    print(f"   {'variant':<40} {'tokens/s':>10}   round medians (min..max)")
    for name, tps in res.tokens_per_s.items():
        lo, hi = res.round_spread[name][0], res.round_spread[name][-1]
        print(f"   {LABELS[name]:<40} {tps:>10,.0f}   {lo:,.0f}..{hi:,.0f}")
    for ratio, value in res.ratios.items():
        goal = res.goals.get(ratio)
        note = f"   goal >= {goal['target']}: {'met' if goal['met'] else 'MISSED'}" if goal else ""
        print(f"   {ratio:<40} {value:>10.3f}{note}")
    for ratio, goal in res.goals.items():
        if ratio not in res.ratios:
            print(f"   {ratio:<40} {'-':>10}   goal >= {goal['target']}: not measured (anchor missing)")
    for what, verdict in res.match.items():
        print(f"   outputs {what}: {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round of 3 runs (a smoke run)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--sizes", default="a,b", help="comma-separated: a, b (default a,b)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    rounds, reps = (1, 3) if args.quick else (args.rounds, args.reps)
    results = [bench_size(s.strip(), rounds, reps) for s in args.sizes.split(",") if s.strip()]
    if args.json:
        meta = {"torch": torch.__version__, "transformers": md.version("transformers"), "threads": 2,
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""), "rounds": rounds, "reps": reps}
        print(json.dumps({"meta": meta, "sizes": [vars(r) for r in results]}, indent=2))
    else:
        print(f"torch {torch.__version__}, transformers {md.version('transformers')}, OMP_WAIT_POLICY="
              f"{os.environ.get('OMP_WAIT_POLICY', '(unset)')}; {rounds} round(s) x {reps} runs, medians")
        for res in results:
            print_table(res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
