"""NeuroX 1.0.9 vs lmscope: extraction speed, linear-probe speed and accuracy, top-neuron overlap, peak RSS.

NeuroX is never an lmscope dependency; give it its own venv (the CPU torch wheel first):

    python3.11 -m venv .venv-neurox
    .venv-neurox/bin/pip install torch==2.13.0
    .venv-neurox/bin/pip install -e . torch==2.13.0
    .venv-neurox/bin/pip install --no-deps neurox==1.0.9
    .venv-neurox/bin/pip install -r benchmarks/requirements-neurox.txt torch==2.13.0

Run (on a shared machine OMP_WAIT_POLICY=PASSIVE keeps torch's idle threads from spinning):

    OMP_WAIT_POLICY=PASSIVE .venv-neurox/bin/python benchmarks/bench_neurox.py [--quick] [--json] [--profile]

Model: zoo:gpt2-tiny (4 layers, d_model 128, d_mlp 512); corpus: synthetic grammar+topic sentences
(seed 3) with their POS labels. Fairness notes:
- Extraction: NeuroX's "all layers" are HF `hidden_states` (embeddings, each block's output, and the
  last one after ln_f); lmscope extracts the same tensors (checked equal): `blocks.0.hook_resid_pre`,
  `blocks.{l}.hook_resid_post` for l < L-1 and `ln_final.hook_normalized`. Aggregation "last" for both.
  tokens/s counts the corpus's tokens without BOS for every variant (lmscope also feeds a BOS, 14% more
  tokens here; NeuroX does not); `lmscope_no_bos` runs the same extraction on a model without BOS, to show
  what the BOS costs. Each run starts from no output; deleting the previous run's files is not timed.
  The bare forward (the ceiling) gets pre-tokenized, pre-sorted ids and writes nothing.
- Both sides run the model in float32: NeuroX gets a float32 copy of the zoo model (the zoo stores float16,
  which transformers 5 would otherwise load as float16 for NeuroX only).
- NeuroX's API loads the model itself; the only patch here serves it the model and tokenizer that its own
  `get_model_and_tokenizer` loaded once, so that library timings exclude model loading on both sides
  (the `lmscope extract` CLI row includes interpreter start-up and model load). Its per-sentence prints
  go to an in-memory buffer. No transformers-5 shim was needed; `create_tensors` (np.int) is bypassed by
  building X, y directly.
- Probe: the same X (every layer's `mlp.hook_post`, 2048 neurons, extracted by lmscope) and the same
  train/test split by sentence for both. Timed: NeuroX `train_logistic_regression_probe` +
  `get_neuron_ordering`, lmscope `LinearProbe(...).fit` (which sets `ranking_`).
Variants run interleaved (order rotated per round); figures are medians, ratios medians of per-round ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import importlib.metadata as md
import io
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _timing import Recorder, Timing, check_args, common_args, installed, interleaved, load_model, prose
from lmscope import HookedModel
from lmscope.activations import ExtractConfig, extract
from lmscope.data.labels import LabeledCorpus, from_synthetic, train_test_split_sentences
from lmscope.data.synthetic import generate_corpus
from lmscope.neurons import LinearProbe
from lmscope.neurons.probe import FAST_SETTINGS

MODEL = "zoo:gpt2-tiny"
MIX = {"grammar": 0.7, "topic": 0.3}
Row = dict[str, Any]


def make_corpus(n: int) -> LabeledCorpus:
    """`n` synthetic grammar+topic sentences with POS labels (deterministic)."""
    return from_synthetic(generate_corpus(n, seed=3, mix=MIX))


def write_parallel(corpus: LabeledCorpus, directory: Path, name: str) -> Path:
    """NeuroX's parallel files: `name.txt` (words) and `name.label` (labels); returns the text file."""
    text = directory / f"{name}.txt"
    text.write_text("".join(" ".join(s) + "\n" for s in corpus.sentences))
    (directory / f"{name}.label").write_text("".join(" ".join(t) + "\n" for t in corpus.labels))
    return text


def resid_points(n_layers: int) -> tuple[str, ...]:
    """lmscope's names for the tensors of HF `output_hidden_states` (NeuroX's "all layers")."""
    return ("blocks.0.hook_resid_pre", *(f"blocks.{i}.hook_resid_post" for i in range(n_layers - 1)),
            "ln_final.hook_normalized")


def check_equivalence(m: HookedModel, points: tuple[str, ...]) -> str:
    ids = torch.tensor([m.tokenizer("the cat sat on the mat .", add_special_tokens=False)["input_ids"]],
                       device=m.device)
    with torch.inference_mode():
        _, cache = m.run_with_cache(ids, names=list(points), prepend_bos=False)
        hidden = m.hf.base_model(ids, output_hidden_states=True).hidden_states
    diff = max(float((cache[p] - h).abs().max()) for p, h in zip(points, hidden, strict=True))
    return f"lmscope points vs HF hidden_states: max |diff| {diff:.1e} over {len(points)} tensors"


def ratio(t: Timing, fast: str, slow: str) -> float:
    """median(slow) / median(fast): how many times faster `fast` is."""
    return t.ratio(slow, fast)


def quiet(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call `fn` with stdout and stderr (NeuroX's prints and tqdm bars) sent to a buffer."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn(*args, **kwargs)


def bench_extraction(m: HookedModel, work: Path, n_sentences: int, rounds: int, profile: bool,
                     real: bool = False, cli: bool = True) -> Row:
    """Extraction of NeuroX's "all layers" (hidden_states) with aggregation "last": NeuroX (hdf5, json), lmscope
    (library; with --model zoo also the CLIs end to end), and a bare batched forward (the ceiling)."""
    from neurox.data.extraction import transformers_extractor as te

    # real: prose, one line a sentence, cut to 30 words (NeuroX reads whitespace-split words)
    sentences = [ln.split()[:30] for ln in prose(n_sentences)] if real else make_corpus(n_sentences).sentences
    text = work / "extract.txt"
    text.write_text("".join(" ".join(s) + "\n" for s in sentences))
    # transformers 5 loads a checkpoint in its stored dtype (the zoo stores float16), so NeuroX would run
    # float16 on the CPU while lmscope runs float32: give NeuroX (library and CLI) a float32 copy
    f32 = work / "model-float32"
    m.hf.float().save_pretrained(f32)
    m.tokenizer.save_pretrained(f32)
    path = str(f32)
    loaded = quiet(te.get_model_and_tokenizer, path, device=m.device.type)
    if next(loaded[0].parameters()).dtype != torch.float32:
        raise RuntimeError(f"NeuroX loaded {path} as {next(loaded[0].parameters()).dtype}, expected float32")
    te.get_model_and_tokenizer = lambda *a, **k: loaded  # the one patch: serve NeuroX its preloaded model
    points = resid_points(m.cfg.n_layers)
    cfg = ExtractConfig(points=points, aggregate="last")
    small_batches = ExtractConfig(points=points, aggregate="last", batch_tokens=1024)  # less padding, see report
    n_tokens = sum(len(m.tokenizer(" ".join(s), add_special_tokens=False)["input_ids"]) for s in sentences)
    hf_body = m.hf.base_model
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    encoded = [m.tokenizer(" ".join(sentences[i]), add_special_tokens=False)["input_ids"] for i in order]

    def fresh(name: str) -> Path:
        target = work / name
        shutil.rmtree(target, ignore_errors=True)
        target.unlink(missing_ok=True)
        return target

    def bare() -> None:  # length-sorted batches of 32, right-padded (causal: no mask needed), no write
        with torch.inference_mode():
            for i in range(0, len(encoded), 32):
                rows = encoded[i: i + 32]
                ids = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
                for j, r in enumerate(rows):
                    ids[j, : len(r)] = torch.tensor(r)
                [h.cpu().numpy() for h in hf_body(ids.to(m.device), output_hidden_states=True).hidden_states]

    lm_cli = [sys.executable, "-m", "lmscope", "extract", MODEL, "--corpus", str(text), "--points", ",".join(points),
           "--out", str(work / "cli-store"), "--json"]
    nx_cli = [sys.executable, "-m", te.__name__, path, str(text), str(work / "nx-cli.hdf5"), "--aggregation", "last",
              "--output_type", "hdf5"]
    no_bos = HookedModel(m.hf, m.tokenizer, prepend_bos=False, name=m.name)
    variants: dict[str, Callable[[], Any]] = {
        "neurox_hdf5": lambda: quiet(te.extract_representations, path, str(text), str(work / "nx.hdf5"),
                                     aggregation="last", output_type="hdf5"),
        "neurox_json": lambda: quiet(te.extract_representations, path, str(text), str(work / "nx.json"),
                                     aggregation="last", output_type="json"),
        "lmscope": lambda: extract(m, sentences, work / "lm-store", cfg),
        "lmscope_bt1024": lambda: extract(m, sentences, work / "lm-store", small_batches),
        "lmscope_no_bos": lambda: extract(no_bos, sentences, work / "lm-store", cfg),
        "neurox_cli": lambda: subprocess.run(nx_cli, check=True, capture_output=True),
        "lmscope_cli": lambda: subprocess.run(lm_cli, check=True, capture_output=True),
        "bare_forward": bare,
    }
    if real:  # the CLIs would time loading a 135M model; SmolLM2 adds no BOS, so no_bos is lmscope itself; NeuroX's
        # json path ran at 9 tokens/s here (its hdf5 path is the one to beat), bt1024 is a zoo-only question
        for name in ("neurox_cli", "lmscope_cli", "lmscope_no_bos", "neurox_json", "lmscope_bt1024"):
            variants.pop(name)
    elif not cli:
        for name in ("neurox_cli", "lmscope_cli"):
            variants.pop(name)
    # each run starts from no output; removing the previous run's files is not timed (either side)
    outputs = {"neurox_hdf5": "nx.hdf5", "neurox_json": "nx.json", "lmscope": "lm-store", "lmscope_bt1024": "lm-store",
               "lmscope_no_bos": "lm-store", "neurox_cli": "nx-cli.hdf5", "lmscope_cli": "cli-store"}
    setup = {name: (lambda out=out: fresh(out)) for name, out in outputs.items() if name in variants}
    t = interleaved(variants, rounds, setup=setup)
    seconds = t.seconds
    row: Row = {"sentences": len(sentences), "words": sum(map(len, sentences)), "tokens": n_tokens, "rounds": rounds,
                "points": list(points), "equivalence": check_equivalence(m, points),
                "tokens_per_s": {k: n_tokens / statistics.median(v) for k, v in seconds.items()},
                "seconds": seconds, "ratios": {}}
    for fast, slow in (("lmscope", "neurox_hdf5"), ("lmscope", "neurox_json"), ("lmscope_cli", "neurox_cli"),
                       ("lmscope_bt1024", "neurox_hdf5"), ("lmscope_no_bos", "neurox_hdf5"),
                       ("lmscope", "bare_forward"), ("lmscope_no_bos", "bare_forward"),
                       ("bare_forward", "neurox_hdf5")):
        if fast in variants and slow in variants:
            row["ratios"][f"{fast}/{slow}"] = ratio(t, fast, slow)
    row["timing"] = t.to_dict()
    if profile:
        prof = cProfile.Profile()
        target = fresh("lm-store")
        prof.runcall(extract, m, sentences, target, cfg)
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(25)
        row["profile"] = buf.getvalue()
    return row


def jaccard(a: Any, b: Any) -> float:
    sa, sb = {int(i) for i in a}, {int(i) for i in b}
    return len(sa & sb) / len(sa | sb)


def bench_probe(m: HookedModel, work: Path, n_sentences: int, rounds: int, lambdas: list[float]) -> Row:
    from neurox.interpretation import linear_probe as lp

    corpus = make_corpus(n_sentences)
    points = tuple(f"blocks.{i}.mlp.hook_post" for i in range(m.cfg.n_layers))
    X = extract(m, corpus.sentences, work / "probe-store", ExtractConfig(points=points)).to_numpy()
    y, names = corpus.label_ids()
    train_s, test_s = train_test_split_sentences(corpus, 0.2, seed=0)
    tr, te_ = corpus.word_indices(train_s), corpus.word_indices(test_s)
    Xtr, Xte, ytr, yte = np.ascontiguousarray(X[tr]), np.ascontiguousarray(X[te_]), y[tr], y[te_]
    class_to_idx = {c: i for i, c in enumerate(names)}
    majority = float(np.mean(yte == np.bincount(ytr).argmax()))
    rows = []
    for lam in lambdas:
        out: dict[str, Any] = {}

        def neurox(lam: float = lam, out: dict[str, Any] = out) -> None:
            torch.manual_seed(0)
            probe = quiet(lp.train_logistic_regression_probe, Xtr, ytr, lambda_l1=lam, lambda_l2=lam,
                          num_epochs=10, batch_size=128)
            out["neurox"] = (probe, quiet(lp.get_neuron_ordering, probe, class_to_idx)[0])

        def lmscope(lam: float = lam, out: dict[str, Any] = out) -> None:
            out["lmscope"] = LinearProbe(l1=lam, l2=lam).fit(Xtr, ytr)

        def lmscope_exact(lam: float = lam, out: dict[str, Any] = out) -> None:
            out["lmscope_exact"] = LinearProbe(l1=lam, l2=lam, precision="float32").fit(Xtr, ytr)

        def lmscope_fast(lam: float = lam, out: dict[str, Any] = out) -> None:
            # one epoch of minibatch Adam, then 5 full-batch FISTA steps (not converged, like NeuroX's 10 epochs)
            out["lmscope_fast"] = LinearProbe(l1=lam, l2=lam, **FAST_SETTINGS).fit(Xtr, ytr)

        t = interleaved({"neurox": neurox, "lmscope": lmscope, "lmscope_exact": lmscope_exact,
                         "lmscope_fast": lmscope_fast}, rounds)
        seconds = t.seconds
        nx_probe, nx_order = out["neurox"]
        nx_acc = quiet(lp.evaluate_probe, nx_probe, Xte, yte)["__OVERALL__"]
        lm: LinearProbe = out["lmscope"]
        rows.append({"lambda_l1": lam, "lambda_l2": lam, "seconds": seconds,
                     "neurox_s": statistics.median(seconds["neurox"]),
                     "lmscope_s": statistics.median(seconds["lmscope"]),
                     "speedup": ratio(t, "lmscope", "neurox"), "neurox_acc": float(nx_acc),
                     "lmscope_acc": lm.score(Xte, yte), "lmscope_iters": lm.n_iter_,
                     "jaccard_top50": jaccard(nx_order[:50], lm.ranking_[:50]),
                     "exact_s": statistics.median(seconds["lmscope_exact"]),
                     "exact_speedup": ratio(t, "lmscope_exact", "neurox"),
                     "exact_acc": out["lmscope_exact"].score(Xte, yte),
                     "exact_jaccard_top50": jaccard(nx_order[:50], out["lmscope_exact"].ranking_[:50]),
                     "fast_s": statistics.median(seconds["lmscope_fast"]),
                     "fast_speedup": ratio(t, "lmscope_fast", "neurox"),
                     "fast_acc": out["lmscope_fast"].score(Xte, yte),
                     "fast_jaccard_top50": jaccard(nx_order[:50], out["lmscope_fast"].ranking_[:50])})
    return {"sentences": len(corpus), "train_words": len(tr), "test_words": len(te_), "neurons": X.shape[1],
            "classes": len(names), "majority_acc": majority, "rounds": rounds,
            "jaccard_random_expected": 50 / (2 * X.shape[1] - 50), "runs": rows}


def peak_rss(work: Path, sizes: list[int]) -> Row:
    """Peak RSS (os.wait4 of each child) of `lmscope extract ... --points mlp` at each corpus size."""
    out: Row = {"points": "mlp (every layer's mlp.hook_post)", "runs": []}
    for n in sizes:
        text = write_parallel(make_corpus(n), work, f"rss-{n}")
        cmd = [sys.executable, "-m", "lmscope", "extract", MODEL, "--corpus", str(text), "--points", "mlp",
               "--out", str(work / f"rss-store-{n}"), "--json"]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise RuntimeError(f"{cmd}: exit {proc.returncode}: {proc.stderr.read().decode()[-500:]}")
        wall = time.perf_counter() - start
        out["runs"].append({"sentences": n, "wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024})
        shutil.rmtree(work / f"rss-store-{n}")
    first, last = out["runs"][0]["peak_rss_mib"], out["runs"][-1]["peak_rss_mib"]
    out["ratio"] = last / first
    return out


def print_tables(res: Row) -> None:
    meta, ex, pr, rss = res["meta"], res["extraction"], res.get("probe"), res.get("rss")
    print(f"torch {meta['torch']}, transformers {meta['transformers']}, neurox {meta['neurox']}, "
          f"{meta['threads']} threads, OMP_WAIT_POLICY={meta['omp_wait_policy'] or '(unset)'}")
    print(f"\n== Extraction: {MODEL}, {ex['sentences']} sentences, {ex['words']:,} words, {ex['tokens']:,} tokens, "
          f"all layers, aggregation last; {ex['rounds']} rounds, medians\n   {ex['equivalence']}")
    labels = {"neurox_hdf5": "NeuroX extract_representations (hdf5)", "neurox_json": "NeuroX (json, its default)",
              "lmscope": "lmscope extract() (library, defaults)",
              "lmscope_bt1024": "lmscope extract(), batch_tokens=1024",
              "lmscope_no_bos": "lmscope extract(), model without BOS", "neurox_cli": "NeuroX CLI (hdf5, end to end)",
              "lmscope_cli": "lmscope extract (CLI, end to end)",
              "bare_forward": "bare batched forward (ceiling)"}
    print(f"   {'variant':<42} {'tokens/s':>10}   per round (s)")
    for key, label in labels.items():
        if key not in ex["seconds"]:
            continue
        per = ", ".join(f"{s:.2f}" for s in ex["seconds"][key])
        print(f"   {label:<42} {ex['tokens_per_s'][key]:>10,.0f}   {per}")
    goals = {"lmscope/neurox_hdf5": 10.0, "lmscope/neurox_json": 10.0}
    for name, value in ex["ratios"].items():
        note = f"   goal >= {goals[name]:.0f}x: {'met' if value >= goals[name] else 'MISSED'}" if name in goals else ""
        print(f"   {name:<42} {value:>9.2f}x{note}")
    print("   (bare_forward/neurox_hdf5 caps any extractor that runs the same forward pass; tokens/s counts the"
          "\n    corpus's tokens for every variant: lmscope also runs a BOS per sentence, NeuroX and bare do not)")
    if pr is None or rss is None:
        return
    print(f"\n== Linear probe: {pr['sentences']} sentences -> {pr['train_words']:,} train / {pr['test_words']:,} test "
          f"words (split by sentence), {pr['neurons']} neurons (all mlp.hook_post), {pr['classes']} POS classes; "
          f"majority baseline {pr['majority_acc']:.3f}; {pr['rounds']} rounds")
    print(f"   {'l1=l2':>7} {'NeuroX s':>9} {'lmscope s':>10} {'speedup':>8} {'NeuroX acc':>11} {'lmscope acc':>12} "
          f"{'iters':>6} {'Jaccard@50':>11}  goal >=5x, |dacc|<=1pt")
    for r in pr["runs"]:
        ok = r["speedup"] >= 5 and r["lmscope_acc"] >= r["neurox_acc"] - 0.01
        print(f"   {r['lambda_l1']:>7.0e} {r['neurox_s']:>9.2f} {r['lmscope_s']:>10.3f} {r['speedup']:>7.1f}x "
              f"{r['neurox_acc']:>11.4f} {r['lmscope_acc']:>12.4f} {r['lmscope_iters']:>6} {r['jaccard_top50']:>11.3f}"
              f"  {'met' if ok else 'MISSED'}")
        print(f"   {'  exact':>7} {'':>9} {r['exact_s']:>10.3f} {r['exact_speedup']:>7.1f}x {'':>11} "
              f"{r['exact_acc']:>12.4f} {'':>6} {r['exact_jaccard_top50']:>11.3f}")
        ok = r["fast_speedup"] >= 5 and r["fast_acc"] >= r["neurox_acc"] - 0.01
        print(f"   {'  fast':>7} {'':>9} {r['fast_s']:>10.3f} {r['fast_speedup']:>7.1f}x {'':>11} "
              f"{r['fast_acc']:>12.4f} "
              f"{'1ep+5':>6} {r['fast_jaccard_top50']:>11.3f}  {'met' if ok else 'MISSED'}")
    print("   (default = LinearProbe(), solved to tol 1e-4 on a bfloat16 copy of X; exact = precision='float32';"
          "\n    fast = LinearProbe(warm_start_epochs=1, max_iter=5): one Adam epoch + 5 FISTA steps)")
    print(f"   (Jaccard of two random top-50 sets: about {pr['jaccard_random_expected']:.3f})")
    print(f"\n== Peak RSS of `lmscope extract {MODEL} --points {rss['points']}` in a fresh process")
    for r in rss["runs"]:
        print(f"   {r['sentences']:>7,} sentences   {r['peak_rss_mib']:>8.0f} MiB   {r['wall_s']:>6.1f} s")
    print(f"   ratio {rss['ratio']:.3f}   goal within 10%: {'met' if rss['ratio'] <= 1.10 else 'MISSED'}")
    if "profile" in ex:
        print("\n== cProfile of one lmscope extract() call (cumulative)\n" + ex["profile"])


def headline(rec: Recorder, res: Row, label: str) -> None:
    """The rows run_all tabulates: extraction vs NeuroX (hdf5, json) and vs the bare forward; the probe."""
    ex = res["extraction"]
    t = Timing(ex["seconds"])
    n = ex["tokens"]
    eq = "same tensors (max |diff| " + ex["equivalence"].split("max |diff| ")[1].split(" ")[0] + ")"
    what = f"extract all layers, aggregation last ({ex['sentences']} sentences, {n:,} tokens)"
    rec.timing_row(f"{what} vs NeuroX hdf5", t, "neurox_hdf5", "lmscope", model=label, unit="tok/s", work=n,
                   quality=eq)
    if "neurox_json" in t.seconds:
        rec.timing_row(f"{what} vs NeuroX json (its default)", t, "neurox_json", "lmscope", model=label,
                       unit="tok/s", work=n, quality=eq)
    fair = "lmscope_no_bos" if "lmscope_no_bos" in ex["seconds"] else "lmscope"
    rec.timing_row(f"{what} vs bare batched forward, no write (ceiling)", t, "bare_forward", fair, model=label,
                   unit="tok/s", work=n, quality="same tokens (no BOS on either side)",
                   note="lmscope writes a store; bare writes nothing")
    for r in res.get("probe", {}).get("runs", []):
        pt = Timing(r["seconds"])
        for key, name in (("lmscope", "LinearProbe() (converged)"), ("lmscope_fast", "LinearProbe fast settings")):
            acc = r["lmscope_acc"] if key == "lmscope" else r["fast_acc"]
            rec.timing_row(f"linear probe + neuron ranking, l1=l2={r['lambda_l1']:g}: {name}", pt, "neurox", key,
                           model=label, quality=f"held-out acc {acc:.3f} vs NeuroX {r['neurox_acc']:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(parser)
    parser.add_argument("--profile", action="store_true", help="also cProfile one lmscope extraction")
    parser.add_argument("--sentences", type=int, default=None,
                        help="extraction sentences (default 300 zoo, 40 smollm2)")
    parser.add_argument("--probe-sentences", type=int, default=3000)
    parser.add_argument("--no-cli", action="store_true", help="leave out the two end-to-end CLI variants")
    parser.add_argument("--lambdas", default="1e-3", help="comma-separated l1=l2 values to run both probes with")
    args = parser.parse_args(argv)
    rounds = check_args(args)
    if not installed("neurox"):
        raise SystemExit("neurox is not installed in this venv (benchmarks/setup_venvs.sh neurox)")
    real = args.model == "smollm2"
    probe_n = 600 if args.quick else args.probe_sentences
    n_ex = args.sentences or ((12 if args.quick else 40) if real else 300)
    rec = Recorder("neurox", args, ["neurox"])
    with tempfile.TemporaryDirectory(prefix="bench-neurox-") as tmp:
        work = Path(tmp)
        res: Row = {"meta": {"torch": torch.__version__, "transformers": md.version("transformers"),
                             "neurox": md.version("neurox"), "threads": torch.get_num_threads(),
                             "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""), "quick": args.quick}}
        if real:
            m = load_model("smollm2", args.device)
            res["extraction"] = bench_extraction(m, work, n_ex, rounds, args.profile, real=True)
        else:
            m = HookedModel.from_pretrained(MODEL, device=args.device)
            res["extraction"] = bench_extraction(m, work, n_ex, rounds, args.profile, cli=not args.no_cli)
            res["probe"] = bench_probe(m, work, probe_n, rounds, [float(x) for x in args.lambdas.split(",")])
            res["rss"] = peak_rss(work, [probe_n, 10 * probe_n])
    rec.details.update(res)
    headline(rec, res, "SmolLM2-135M" if real else MODEL)
    rec.finish(args, lambda: print_tables(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
