"""A stack of MLP transcoders at every layer, one model forward per batch: lmscope's `train_stack` vs EleutherAI
sparsify's `Trainer` (its multi-hookpoint training), on the same model, text, k, batch, tokens and d_sae.

    OMP_WAIT_POLICY=PASSIVE /work/bench-venvs/sparsify/bin/python benchmarks/bench_stack.py --model smollm2
    (--quick: 1 round, 4 layers, 2,048 tokens; --layers 0,5,29; --tokens N per run; --device cuda)

What both sides do (sparsify 1.3.3 supports transcoders with d_out = d_in, TopK only, so: TopK transcoders
from each MLP's input to its output, at every chosen layer):
- sparsify: `Trainer(TrainConfig(SparseCoderConfig(num_latents=d_sae, k=k, transcode=True), batch_size=B/ctx,
  hookpoints=["layers.{l}.mlp", ...], loss_fn="fvu", log_to_wandb=False), dataset, model.model)`: its CLI's
  setup (the base model without the LM head for the fvu loss; `chunk_and_tokenize` chunks of `ctx` tokens, one
  process; its defaults for everything else: SignSGD in ScheduleFree at lr 5e-3/sqrt(d_sae/2^14), FVU loss, no
  AuxK). One forward per batch trains every hookpoint inside forward hooks. Timed: `fit()`.
- lmscope: `train_stack(model, layers, kind="transcoder", activation="topk", k=k, d_sae=d_sae,
  batch_size=B, tokens=T, texts=same prose, buffer_tokens=min(T, 8192))`: one forward per fill, stopped after
  the last chosen layer, its defaults otherwise (Adam, lr 2e-3, MSE). Timed: the whole call (text selection and
  setup included). The fill is capped at T so a short timed run computes no more rows than it trains on (the
  default fill, 8,192 rows, made a 2,048-token run do 4x the forward work: 0.31x sparsify in a first run).
Both get the same prose (/work/real/prose.txt) and the same number of training tokens per layer
(T = steps x B; sparsify's batch is B/ctx sequences of ctx tokens). Each round trains both from scratch (order
rotated; benchmarks/_timing.py: min/median/max, ratio of medians); a one-step run of each side before the
rounds is the untimed warm-up. Quality: after the timed rounds, one longer run per side (--fvu-tokens), and
the FVU (against the mean) of every layer's transcoder on the same held-out prose (lines the training never
saw), computed by lmscope's `fvu` from each side's predictions (sparsify's after `opt.eval()`, ScheduleFree's
averaged weights); L0 is k on both.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from typing import Any

import torch

from _timing import Recorder, check_args, common_args, installed, interleaved, load_model, prose
from lmscope.dictionary import fvu
from lmscope.dictionary.multi import parse_layers, train_stack


def quiet(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call `fn` with stdout and stderr (sparsify's prints and tqdm bars) sent to a buffer."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn(*args, **kwargs)


def sparsify_dataset(tokenizer: Any, texts: list[str], ctx: int, n_seq: int) -> Any:
    """sparsify's own chunking of `texts` into `n_seq` sequences of `ctx` tokens (refused if too few)."""
    from datasets import Dataset
    from sparsify.data import chunk_and_tokenize

    ds = quiet(chunk_and_tokenize, Dataset.from_dict({"text": texts}), tokenizer, max_seq_len=ctx, num_proc=1,
               load_from_cache_file=False)
    if len(ds) < n_seq:
        raise SystemExit(f"prose: {len(ds)} chunks of {ctx} tokens, {n_seq} needed (fewer --tokens)")
    return ds.select(range(n_seq))


def run_sparsify(hf: Any, ds: Any, layers: list[int], d_sae: int, k: int, seqs_per_batch: int) -> Any:
    """Train sparsify's transcoders on every chosen MLP; the trainer (its sparse coders and optimizer)."""
    from sparsify import SparseCoderConfig, TrainConfig, Trainer

    cfg = TrainConfig(SparseCoderConfig(num_latents=d_sae, k=k, transcode=True), batch_size=seqs_per_batch,
                      hookpoints=[f"layers.{la}.mlp" for la in layers], loss_fn="fvu", log_to_wandb=False,
                      save_dir=tempfile.mkdtemp(prefix="bench-stack-sparsify-"), save_every=10**9)
    trainer = quiet(Trainer, cfg, ds, hf.model)
    quiet(trainer.fit)
    return trainer


def heldout_rows(m: Any, texts: list[str], layers: list[int]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """(MLP input, MLP output) rows of every chosen layer on held-out texts (every token; no BOS is added)."""
    names = [n for la in layers for n in (f"blocks.{la}.ln2.hook_normalized", f"blocks.{la}.hook_mlp_out")]
    out: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {la: ([], []) for la in layers}
    with torch.inference_mode():
        for i in range(0, len(texts), 8):
            chunk = texts[i:i + 8]
            keep = m.to_tokens(chunk).attention_mask.bool()
            _, cache = m.run_with_cache(chunk, names=names, return_logits=False)
            for la in layers:
                out[la][0].append(cache[f"blocks.{la}.ln2.hook_normalized"][keep].float())
                out[la][1].append(cache[f"blocks.{la}.hook_mlp_out"][keep].float())
    return {la: (torch.cat(x), torch.cat(y)) for la, (x, y) in out.items()}


@torch.no_grad()
def fvus(predict: dict[int, Any], rows: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> dict[int, float]:
    return {la: float(fvu(y, predict[la](x))) for la, (x, y) in rows.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(parser, models=("smollm2",))
    parser.add_argument("--layers", default="all", help="'all' or a list such as 0,5,29")
    parser.add_argument("--d-sae", type=int, default=2048)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1024, help="tokens per step on both sides")
    parser.add_argument("--ctx", type=int, default=64, help="sparsify's sequence length (batch / ctx sequences)")
    parser.add_argument("--tokens", type=int, default=4096, help="training tokens per timed run (x --batch)")
    parser.add_argument("--fvu-tokens", type=int, default=16384,
                        help="training tokens of one more run per side whose held-out FVU is reported (0: use the "
                             "last timed runs)")
    parser.add_argument("--heldout", type=int, default=24, help="held-out prose lines for FVU")
    args = parser.parse_args(argv)
    rounds = check_args(args)
    if not installed("eai-sparsify", "sparsify"):
        raise SystemExit("eai-sparsify is not installed in this venv (benchmarks/setup_venvs.sh sparsify)")
    if args.batch % args.ctx or args.tokens % args.batch or args.fvu_tokens % args.batch:
        raise SystemExit("--batch must be a multiple of --ctx and --tokens a multiple of --batch")
    m = load_model("smollm2", args.device)
    if args.quick:
        args.layers, args.tokens, args.fvu_tokens = "0,1,2,3", 2 * args.batch, 0
    layers = parse_layers(args.layers, m.cfg.n_layers)
    texts = prose(600)
    train, held = texts[: -args.heldout], texts[-args.heldout:]
    seqs = args.batch // args.ctx
    ds_all = sparsify_dataset(m.tokenizer, train, args.ctx, max(args.tokens, args.fvu_tokens) // args.ctx)
    ds = ds_all.select(range(args.tokens // args.ctx))
    common = {"layers": layers, "kind": "transcoder", "activation": "topk", "k": args.k, "d_sae": args.d_sae,
              "batch_size": args.batch, "texts": train}
    last: dict[str, Any] = {}

    def lm() -> None:  # a fill no larger than the run: its default 8,192-row fill would run up to 4x the forward
        last["lmscope"] = train_stack(m, tokens=args.tokens, buffer_tokens=min(args.tokens, 8192), **common)

    def sp() -> None:
        last["sparsify"] = run_sparsify(m.hf, ds, layers, args.d_sae, args.k, seqs)

    rec = Recorder("stack", args, ["eai-sparsify"])
    train_stack(m, tokens=args.batch, buffer_tokens=args.batch, **common)  # warm-up: one step of each side, untimed
    run_sparsify(m.hf, ds.select(range(seqs)), layers, args.d_sae, args.k, seqs)
    t = interleaved({"lmscope": lm, "sparsify": sp}, rounds, warmup=0)
    fvu_run: dict[str, float] = {}
    if args.fvu_tokens:  # one longer run per side for the quality figure (timed once, not a race)
        start = time.perf_counter()
        last["lmscope"] = train_stack(m, tokens=args.fvu_tokens, **common)
        fvu_run["lmscope_s"] = time.perf_counter() - start
        last["sparsify"] = run_sparsify(m.hf, ds_all.select(range(args.fvu_tokens // args.ctx)), layers, args.d_sae,
                                        args.k, seqs)
        fvu_run["sparsify_s"] = time.perf_counter() - start - fvu_run["lmscope_s"]
    rows = heldout_rows(m, held, layers)
    lm_dicts = last["lmscope"].dictionaries
    trainer = last["sparsify"]
    for opt in trainer.optimizers:
        if hasattr(opt, "eval"):
            opt.eval()  # ScheduleFree: evaluate at its averaged weights
    q = {"lmscope": fvus({la: (lambda x, d=lm_dicts[la]: d(x)[0]) for la in layers}, rows),
         "sparsify": fvus({la: (lambda x, s=trainer.saes[f"layers.{la}.mlp"]: s(x).sae_out) for la in layers}, rows)}
    n = args.tokens
    label = "SmolLM2-135M"
    n_fvu = args.fvu_tokens or n

    def summary(side: str) -> str:
        v = list(q[side].values())
        return f"mean {sum(v) / len(v):.3f}, max {max(v):.3f}"

    rec.timing_row(f"transcoder stack, {len(layers)} MLPs, d_sae {args.d_sae}, TopK-{args.k}, batch {args.batch}, "
                   f"{n:,} tokens per run", t, "sparsify", "lmscope", model=label, unit="tok/s", work=n,
                   quality=f"held-out FVU after {n_fvu:,} tokens: lmscope {summary('lmscope')}; sparsify "
                           f"{summary('sparsify')}",
                   note="each with its own default optimizer; L0 = k on both")
    rec.details = {"layers": layers, "tokens_per_run": n, "timing": t.to_dict(), "fvu": q, "fvu_tokens": n_fvu,
                   "fvu_run_seconds": fvu_run,
                   "heldout_rows": int(next(iter(rows.values()))[0].shape[0]),
                   "lmscope_timing": {"wall_s": last["lmscope"].wall_s, "forward_s": last["lmscope"].forward_s,
                                      "train_s": last["lmscope"].train_s},
                   "settings": {k: v for k, v in common.items() if k != "texts"} | {"ctx": args.ctx}}

    def text() -> None:
        for side in ("lmscope", "sparsify"):
            st = t.stats(side)
            print(f"{side:9s} {n / st['median']:8.1f} tok/s (median {st['median']:.1f} s, min {st['min']:.1f}, "
                  f"max {st['max']:.1f}); held-out FVU after {n_fvu:,} tokens {summary(side)}")
        print("per-layer FVU (lmscope / sparsify): " + ", ".join(
            f"{la}: {q['lmscope'][la]:.3f}/{q['sparsify'][la]:.3f}" for la in layers))

    rec.finish(args, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
