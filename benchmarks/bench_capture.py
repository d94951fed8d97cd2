"""Capture speed: bare HF forward vs lmscope vs TransformerLens 4.x bridge or nnsight, every MLP's neurons.

Each anchor runs in its own venv (benchmarks/setup_venvs.sh makes them); lmscope and the bare forward run in
the same process as the anchor, interleaved with it:

    OMP_WAIT_POLICY=PASSIVE /work/bench-venvs/tl/bin/python benchmarks/bench_capture.py --anchor tl
    OMP_WAIT_POLICY=PASSIVE /work/bench-venvs/nnsight/bin/python benchmarks/bench_capture.py --anchor nnsight
    ... --model smollm2         # SmolLM2-135M-Instruct (30 layers), batch 4 x 128 of real prose
    ... --device cuda           # the same on a GPU

--model zoo runs two sizes: (a) GPT-2 architecture, 6 layers, d_model 384, vocab 8192, random init, batch
16 x 128; (b) zoo:gpt2-tiny, batch 8 x 64. --model smollm2 runs SmolLM2 on 4 rows of 128 tokens of
/work/real/prose.txt. fp32, 2 threads, SDPA attention, torch.inference_mode on every side. What is captured
is every layer's `mlp.hook_post` (the input of the MLP's down projection: the neurons), checked equal across
sides before timing. Timing: benchmarks/_timing.py (>= 5 interleaved rounds, each the median of --reps calls,
order rotated; warm-up untimed; min/median/max, ratio of medians). Variants:
- bare: `hf(input_ids)` (logits, no capture: the ceiling);
- lmscope: `run_with_cache(ids, names=every mlp.hook_post)` (logits too, like the anchors);
- lmscope_stop: the same with `return_logits=False`, which stops after the last capture (less work than the
  others, as extraction does: reported separately, never as the like-for-like figure);
- tl: TransformerBridge.boot_transformers on a copy of the same HF model, `run_with_cache(names_filter=...)`;
- nnsight: `LanguageModel(copy of the model)`, one trace saving each down projection's input.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from _timing import Recorder, check_args, common_args, installed, interleaved, load_model, prose
from lmscope import HookedModel

Capture = Callable[[Tensor], list[Tensor]]
DISTS = {"tl": "transformer-lens", "nnsight": "nnsight"}
LABELS = {"bare": "bare HF forward", "lmscope": "lmscope run_with_cache",
          "lmscope_stop": "lmscope run_with_cache(return_logits=False)",
          "tl": "TransformerLens bridge run_with_cache", "nnsight": "nnsight trace + save"}


def word_tokenizer(vocab_size: int) -> Any:
    """A word-level tokenizer `t0 .. tN`, saved and reloaded so it has a `name_or_path` (TL 4 needs one)."""
    import tempfile

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="t0", eos_token="t0", unk_token="t0",
                                  pad_token="t0")
    directory = tempfile.mkdtemp(prefix="bench-capture-tok-")
    tok.save_pretrained(directory)
    return PreTrainedTokenizerFast.from_pretrained(directory)


def load_size(size: str, device: str) -> tuple[nn.Module, Any, str, Tensor]:
    """`(hf_model, tokenizer, description, ids)` of size "a", "b" or "smollm2"."""
    gen = torch.Generator().manual_seed(1234)
    if size == "smollm2":
        m = load_model("smollm2", device)
        rows = [m.tokenizer(t)["input_ids"] for t in prose(40)]
        stream = [i for r in rows for i in r]
        ids = torch.tensor(stream[: 4 * 128]).reshape(4, 128)
        return m.hf, m.tokenizer, "SmolLM2-135M-Instruct (30 layers, d_mlp 1536), real prose", ids.to(device)
    if size == "a":
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        cfg = GPT2Config(bos_token_id=0, eos_token_id=0, attn_implementation="sdpa", n_layer=6, n_embd=384,
                         n_head=6, vocab_size=8192, n_positions=128)
        hf = GPT2LMHeadModel(cfg).eval().to(device)
        ids = torch.randint(0, 8192, (16, 128), generator=gen)
        return hf, word_tokenizer(8192), "random-init GPT-2, 6 layers, d_model 384, vocab 8192", ids.to(device)
    m = load_model("zoo", device)
    ids = torch.randint(0, m.cfg.d_vocab, (8, 64), generator=gen)
    return m.hf, m.tokenizer, "zoo:gpt2-tiny", ids.to(device)


def down_proj(hf: nn.Module, layer: int) -> nn.Module:
    """The MLP's output projection of `layer` (its input is `mlp.hook_post`) on GPT-2 or Llama."""
    if hasattr(hf, "transformer"):
        return hf.transformer.h[layer].mlp.c_proj
    return hf.model.layers[layer].mlp.down_proj


def make_bare(hf: nn.Module) -> Capture:
    def run(ids: Tensor) -> list[Tensor]:
        with torch.inference_mode():
            return [hf(input_ids=ids, use_cache=False).logits]

    return run


def make_lmscope(hf: nn.Module, tok: Any, n_layers: int, return_logits: bool = True) -> Capture:
    m = HookedModel(hf, tok)
    names = [f"blocks.{layer}.mlp.hook_post" for layer in range(n_layers)]

    def run(ids: Tensor) -> list[Tensor]:
        with torch.inference_mode():
            _, cache = m.run_with_cache(ids, names=names, return_logits=return_logits, prepend_bos=False)
        return [cache[n] for n in names]

    return run


def make_tl(hf: nn.Module, tok: Any, n_layers: int, ids: Tensor, want: Tensor, device: str) -> tuple[Capture, str]:
    """A TL bridge on its own copy of the model (booting rewires HF submodules in place) and the hook whose
    value equals `blocks.0.mlp.hook_post` (found among the bridge's layer-0 MLP hooks, not assumed)."""
    from transformer_lens.model_bridge import TransformerBridge

    arch = "gpt2" if hasattr(hf, "transformer") else getattr(hf.config, "_name_or_path", "") or "llama"
    bridge = TransformerBridge.boot_transformers(arch, hf_model=copy.deepcopy(hf), tokenizer=tok, device=device)
    candidates = [n for n in bridge.hook_dict if n.startswith("blocks.0.mlp")]
    candidates.sort(key=lambda n: (n != "blocks.0.mlp.hook_post", n))
    with torch.inference_mode():
        _, cache = bridge.run_with_cache(ids, names_filter=candidates)
    found = next((n for n in candidates if cache[n].shape == want.shape
                  and not compare([cache[n]], [want]).startswith("MISMATCH")), None)
    if found is None:
        raise RuntimeError(f"no TL hook among {candidates} equals blocks.0.mlp.hook_post")
    names = [found.replace("blocks.0.", f"blocks.{layer}.", 1) for layer in range(n_layers)]

    def run(ids: Tensor) -> list[Tensor]:
        with torch.inference_mode():
            _, cache = bridge.run_with_cache(ids, names_filter=names)
        return [cache[n] for n in names]

    return run, found


def make_nnsight(hf: nn.Module, tok: Any, n_layers: int) -> Capture:
    from nnsight import LanguageModel

    model = LanguageModel(copy.deepcopy(hf), tokenizer=tok)
    gpt2 = hasattr(hf, "transformer")

    def run(ids: Tensor) -> list[Tensor]:
        outs: list[Any] = []  # made before the trace: a comprehension inside it raised NameError (nnsight 0.8)
        with torch.inference_mode(), model.trace(ids):
            for layer in range(n_layers):
                mlp = model.transformer.h[layer].mlp.c_proj if gpt2 else model.model.layers[layer].mlp.down_proj
                outs.append(mlp.input.save())
        return [torch.as_tensor(o) for o in outs]

    return run


def compare(got: list[Tensor], want: list[Tensor]) -> str:
    """"equal", "allclose (...)" or "MISMATCH (...)" of two lists of captured tensors: close means every
    |diff| within 1e-5 of each tensor's largest |value| (float32 reductions in another order differ that much)."""
    if len(got) != len(want) or any(g.shape != w.shape for g, w in zip(got, want, strict=False)):
        return f"MISMATCH shapes {[tuple(g.shape) for g in got]} vs {[tuple(w.shape) for w in want]}"
    diff = max(float((g - w).abs().max()) for g, w in zip(got, want, strict=True))
    if diff == 0.0:
        return "equal"
    rel = max(float((g - w).abs().max() / w.abs().max().clamp_min(1e-12)) for g, w in zip(got, want, strict=True))
    return f"{'allclose' if rel <= 1e-5 else 'MISMATCH'} (max |diff| {diff:.1e}, {rel:.1e} of the largest |value|)"


def bench_size(rec: Recorder, size: str, anchor: str, rounds: int, reps: int, device: str) -> None:
    hf, tok, desc, ids = load_size(size, device)
    n_layers = hf.config.num_hidden_layers
    runs: dict[str, Capture] = {"bare": make_bare(hf), "lmscope": make_lmscope(hf, tok, n_layers),
                                "lmscope_stop": make_lmscope(hf, tok, n_layers, return_logits=False)}
    want = runs["lmscope"](ids)
    detail: dict[str, Any] = {"model": desc, "batch": list(ids.shape), "match": {}, "anchor": anchor}
    detail["match"]["lmscope_stop vs lmscope"] = compare(runs["lmscope_stop"](ids), want)
    with torch.inference_mode():
        detail["match"]["lmscope logits vs bare"] = compare(
            [HookedModel(hf, tok).run_with_cache(ids, names=[], prepend_bos=False)[0]], runs["bare"](ids))
    if anchor != "none":
        if not installed(DISTS[anchor]):
            raise SystemExit(f"--anchor {anchor}: {DISTS[anchor]} is not installed in this venv "
                             "(benchmarks/setup_venvs.sh)")
        if anchor == "tl":
            runs["tl"], detail["tl_hook"] = make_tl(hf, tok, n_layers, ids, want[0], device)
        else:
            runs["nnsight"] = make_nnsight(hf, tok, n_layers)
        detail["match"][f"{anchor} vs lmscope"] = compare(runs[anchor](ids), want)
    t = interleaved({n: (lambda f=f: f(ids)) for n, f in runs.items()}, rounds, reps=reps, warmup=1)
    detail["timing"] = t.to_dict()
    tokens = ids.numel()
    detail["tokens_per_s"] = {n: tokens / t.median(n) for n in runs}
    label = {"a": "random GPT-2 6x384", "b": "zoo:gpt2-tiny", "smollm2": "SmolLM2-135M"}[size]
    shape = f"{ids.shape[0]}x{ids.shape[1]} tokens"
    rec.timing_row(f"capture all MLP neurons vs bare forward ({shape})", t, "bare", "lmscope", model=label,
                   unit="tok/s", work=tokens, quality=detail["match"]["lmscope logits vs bare"] + " logits",
                   note="bare captures nothing: the ceiling")
    if anchor != "none":
        rec.timing_row(f"capture all MLP neurons vs {LABELS[anchor]} ({shape})", t, anchor, "lmscope", model=label,
                       unit="tok/s", work=tokens, quality=f"captures {detail['match'][f'{anchor} vs lmscope']}")
    rec.details[size] = detail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(parser)
    parser.add_argument("--anchor", choices=("tl", "nnsight", "none"), default="none")
    parser.add_argument("--reps", type=int, default=3, help="calls per variant per round (their median)")
    args = parser.parse_args(argv)
    rounds = check_args(args)
    rec = Recorder("capture", args, [DISTS[args.anchor]] if args.anchor != "none" else [])
    sizes = ["smollm2"] if args.model == "smollm2" else (["b"] if args.quick else ["a", "b"])
    for size in sizes:
        bench_size(rec, size, args.anchor, rounds, 1 if args.quick else args.reps, args.device)

    def text() -> None:
        for size, d in rec.details.items():
            print(f"\n== {size}: {d['model']}, batch {d['batch']}")
            for name, tps in d["tokens_per_s"].items():
                s = d["timing"]["stats"][name]
                print(f"   {LABELS[name]:<44} {tps:>9,.0f} tok/s   median {s['median']:.4f} s "
                      f"(min {s['min']:.4f}, max {s['max']:.4f})")
            for what, verdict in d["match"].items():
                print(f"   outputs {what}: {verdict}")

    rec.finish(args, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
