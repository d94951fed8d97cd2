"""`lmscope demo --model MODEL --corpus FILE`: the spine on the user's own model and text, in about a minute.

The zoo demo (`lmscope.demo`) trains and analyses lmscope's tiny models on the synthetic corpus. This run
takes any supported model (a directory, a `.gguf` file, `real:NAME`, a hub id, or `zoo:NAME`) and the
user's corpus, and does only what stays cheap on a real LM on a laptop CPU:

- the model card (sizes, whether strings get a BOS, load time);
- hook parity: every hook point capturing, logits bit-identical to the bare HF model, exact decompositions;
- the LM loss on the corpus (mean next-token cross-entropy over its first `max_texts` windows);
- head detectors on repeated random tokens (previous-token, duplicate-token, induction; the OV copying score
  is left to `lmscope heads detect`, it costs a pass over the vocabulary per head), with the best induction
  head's attention pattern;
- MLP neuron statistics per layer on the corpus (the BOS position left out);
- offline autointerp of a sample of one middle layer's neurons on the corpus (token records, attention-sink
  positions left out as for dictionaries).

A model that is not a `zoo:` model needs `corpus` (the synthetic corpus is a zoo model's text): refused in one
line before the model loads.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmscope.errors import bad_argument
from lmscope.model.hooked import HookedModel
from lmscope.report import Report, Section
from lmscope.report.blocks import KeyValues, Table, Text
from lmscope.report.figures import heatmap

Stage = Callable[[str, int, int], None]
PARITY_TEXTS = 2
STATS_TEXTS = 8
HEAD_SEQ_LEN, HEAD_SEQS = 20, 4
AUTOINTERP_UNITS = 16


def run_real_demo(model: str, corpus: str | None, out_dir: str | Path, *, max_texts: int = 16,
                  context_tokens: int = 128, overwrite: bool = False, stage: Stage | None = None) -> dict[str, Any]:
    """Build the real-model report into `out_dir`; returns the paths written and a short summary.

    `corpus` is read with `lmscope.data.corpus.load_corpus` (documents cut into windows of `context_tokens`
    tokens); the first `max_texts` windows are used.
    """
    from lmscope.data.corpus import load_corpus
    from lmscope.fileio import check_writable
    from lmscope.results import HTML_NAME, RESULT_NAME

    for name in (HTML_NAME, RESULT_NAME):  # refuse before any work, not after
        check_writable(Path(out_dir) / name, overwrite=overwrite)
    if max_texts < 1:
        raise bad_argument("max_texts", "an integer >= 1", max_texts)
    if context_tokens < 8:
        raise bad_argument("context_tokens", "an integer >= 8", context_tokens)
    load_corpus(corpus, model_name=model)  # a real model with no corpus, or a missing file: refused now
    report_stage = stage or (lambda s, i, n: None)
    start = time.perf_counter()
    verb = "training" if model.startswith("zoo:") else "loading"
    # no "0/1" line first: a bad model path is then one line; training or converting reports its own steps
    m = HookedModel.from_pretrained(model, progress=lambda i, n: report_stage(f"{verb} {model}", i, n))
    load_s = time.perf_counter() - start
    report_stage(f"{verb} {model}", 1, 1)
    docs = load_corpus(corpus, model_name=model, tokenizer=m.tokenizer,
                       max_tokens=min(context_tokens, m.cfg.n_ctx - int(m.prepend_bos)))
    texts = docs.texts[:max_texts]
    extras: dict[str, Any] = {}
    steps: list[tuple[str, Callable[[], Section]]] = [
        ("hook parity", lambda: _parity(m, model, texts[:PARITY_TEXTS], extras)),
        ("loss on the corpus", lambda: _loss(m, texts, docs.describe(), extras)),
        ("head detectors", lambda: _heads(m, extras)),
        ("neuron statistics", lambda: _neurons(m, texts[:STATS_TEXTS])),
        ("autointerp", lambda: _autointerp(m, model, texts, docs.source, extras, report_stage)),
    ]
    report = Report(f"lmscope on {model}", meta={"model": model, "corpus": docs.to_dict(), "n_texts": len(texts)})
    report.add(_card(m, model, load_s))
    for i, (what, make) in enumerate(steps):
        report_stage("building report", i, len(steps))
        report_stage(what, 0, 1)
        report.add(make())
        report_stage(what, 1, 1)
    report_stage("building report", len(steps), len(steps))
    paths = report.write(out_dir, overwrite=overwrite)
    return {"report": str(paths["html"]), "result": str(paths["json"]), "model": model,
            "corpus": docs.describe(), "n_texts": len(texts), "seconds": time.perf_counter() - start,
            "load_seconds": load_s, **extras}


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """What `lmscope demo --model` prints: where the report is, parity, loss, best heads, time."""
    heads = summary["top_heads"]
    lines = [f"report  {summary['report']}", f"result  {summary['result']}",
             f"{summary['model']} on {summary['corpus']} (first {summary['n_texts']} texts)",
             f"hook parity {'ok' if summary['parity_ok'] else 'FAILED'} ({summary['n_hook_points']} hook points)",
             f"loss on the corpus {summary['loss']:.3f} nats/token over {summary['n_tokens']} tokens"]
    lines += [f"best {kind.replace('_', '-')} head {h['layer']}.{h['head']} ({h['score']:.2f})"
              for kind, h in heads.items()]
    lines.append(f"{summary['seconds']:.1f} s (model load {summary['load_seconds']:.1f} s)")
    return lines


def _card(m: HookedModel, name: str, load_s: float) -> Section:
    cfg = m.cfg.to_dict()
    shown = {k: cfg[k] for k in ("family", "n_layers", "n_heads", "n_kv_heads", "d_model", "d_head", "d_mlp",
                                 "d_vocab", "n_ctx") if k in cfg}
    facts = {"model": name, **shown, "parameters": f"{m.n_params():,}", "strings start with BOS": m.prepend_bos,
             "load time": f"{load_s:.1f} s"}
    text = Text("Not a zoo model: no training card. Strings are tokenized as the model's own tokenizer does; a BOS "
                "is added only where the tokenizer adds one.") if not name.startswith("zoo:") else Text(
                "A zoo model, run here on the given text (the zoo demo shows its card).")
    return Section("model_card", f"Model: {name}", [KeyValues(facts), text], {"model": name, "config": cfg,
                                                                               "load_seconds": load_s})


def _parity(m: HookedModel, name: str, texts: list[str], extras: dict[str, Any]) -> Section:
    from lmscope.model.parity import check_parity
    from lmscope.report.model_sections import parity_section

    report = check_parity(m, texts).to_dict()
    extras.update(parity_ok=bool(report["ok"]), n_hook_points=int(report["n_hook_points"]))
    return parity_section({name: report})


def _loss(m: HookedModel, texts: list[str], described: str, extras: dict[str, Any]) -> Section:
    from lmscope.model.stats import lm_loss

    n_tokens = sum(int(x) - 1 for x in m.to_tokens(texts).lengths.tolist())  # predictions scored
    loss = lm_loss(m, texts, batch_size=8)
    extras.update(loss=loss, n_tokens=n_tokens)
    facts = {"corpus": described, "texts used": len(texts), "next-token predictions": n_tokens,
             "mean loss": f"{loss:.4f} nats/token", "perplexity": f"{math.exp(loss):.2f}"}
    note = Text("Mean next-token cross-entropy over every real token of the texts as the model tokenizes them "
                "(a pretrained LM gives ~2-3 nats/token on ordinary English; lmscope's synthetic sentences cost "
                "a real LM ~9).")
    return Section("corpus_loss", "Loss on your text", [KeyValues(facts), note], {"loss": loss, "n_tokens": n_tokens,
                                                                                 "n_texts": len(texts)})


def _heads(m: HookedModel, extras: dict[str, Any]) -> Section:
    from lmscope.heads.detectors import (
        attention_patterns,
        duplicate_token_score,
        induction_score,
        previous_token_score,
        repeated_tokens,
    )

    ids = repeated_tokens(m, HEAD_SEQ_LEN, HEAD_SEQS)
    bos = ids.shape[1] == 2 * HEAD_SEQ_LEN + 1
    patterns = attention_patterns(m, ids)  # [layer, batch, head, q, k]
    scores = {"previous_token": previous_token_score(patterns),
              "duplicate_token": duplicate_token_score(patterns, HEAD_SEQ_LEN, bos=bos),
              "induction": induction_score(patterns, HEAD_SEQ_LEN, bos=bos)}
    top = {}
    for kind, s in scores.items():
        flat = int(s.flatten().argmax())
        top[kind] = {"layer": flat // s.shape[1], "head": flat % s.shape[1], "score": float(s.flatten()[flat])}
    extras["top_heads"] = top
    rows = [[kind.replace("_", "-"), f"{h['layer']}.{h['head']}", f"{h['score']:.3f}"] for kind, h in top.items()]
    ind = top["induction"]
    fig, fig_data = heatmap(scores["induction"].numpy(), x_labels=[str(h) for h in range(m.cfg.n_heads)],
                            y_labels=[str(layer) for layer in range(m.cfg.n_layers)], title="Induction score",
                            x_title="head", y_title="layer", colorscale="Blues")
    tokens = [m.tokenizer.decode([int(t)]) for t in ids[0]]
    labels = [f"{i}:{t}" for i, t in enumerate(tokens)]
    pattern, pattern_data = heatmap(patterns[ind["layer"], 0, ind["head"]].numpy(), x_labels=labels,
                                    y_labels=labels, title=f"Layer {ind['layer']}, head {ind['head']} on a "
                                    "repeated sequence", x_title="key", y_title="query", colorscale="Blues")
    text = Text(f"{HEAD_SEQS} sequences of {HEAD_SEQ_LEN} random tokens, each repeated once"
                f"{' after a BOS' if bos else ''}. Previous-token: mean attention to the position before; "
                "duplicate-token: to the earlier copy of the current token; induction: to the token after that "
                "copy (the head that lets the model continue a repeated sequence). The induction head's pattern "
                "shows the stripe one position right of the duplicate diagonal.")
    return Section("head_detectors", "Attention heads: previous-token, duplicate-token, induction",
                   [text, Table(["detector", "best head (layer.head)", "score"], rows), fig, pattern],
                   {"scores": {k: v.tolist() for k, v in scores.items()}, "top_heads": top, "seq_len": HEAD_SEQ_LEN,
                    "n_seqs": HEAD_SEQS, "induction_heatmap": fig_data, "induction_pattern": pattern_data})


def _neurons(m: HookedModel, texts: list[str]) -> Section:
    from lmscope.model.stats import neuron_stats
    from lmscope.report.model_sections import neuron_stats_section

    return neuron_stats_section([s.to_dict() for s in neuron_stats(m, texts)])


def _autointerp(m: HookedModel, name: str, texts: list[str], source: str, extras: dict[str, Any],
                stage: Stage) -> Section:
    from lmscope.autointerp import RecordConfig, score_texts

    point = f"blocks.{m.cfg.n_layers // 2}.mlp.hook_post"
    small = RecordConfig(n_top_explain=4, n_top_score=4, n_random=4, n_quantiles=2, n_per_quantile=1,
                         n_nonactivating=4)  # a few texts: few records per role
    result = score_texts(m, texts, points=[point], units_per_point=AUTOINTERP_UNITS, cfg=small, source=source,
                         model_name=name, progress=lambda p, i, n: stage(f"autointerp {p}", i, n))
    s = result.summary["all"]["top_and_random"]
    extras["autointerp_top_and_random"] = s["mean"]
    units = sorted(result.units, key=lambda u: -u["top_and_random"] if math.isfinite(u["top_and_random"]) else 2.0)
    rows = [[u["unit"], u["explanation"]["text"], u["top_and_random"], u["density"]] for u in units[:8]]
    positions = result.config["positions"]
    text = Text(f"{AUTOINTERP_UNITS} neurons of `{point}`, sampled, each explained offline from its top records on "
                f"your text (one record per text, one activation per token; {positions['rule']}) and scored on "
                "held-out records by the correlation of simulated and true activations (Bills et al.). "
                f"{len(texts)} texts is little data: treat the scores as a smoke test, and run "
                "`lmscope autointerp score --model ... --corpus ...` on more text for real figures.")
    mean = "n/a" if s["mean"] is None else f"{s['mean']:.3f} [{s['lo']:.3f}, {s['hi']:.3f}]"
    return Section("autointerp", f"Neuron explanations on your text ({point})",
                   [text, KeyValues({"top-and-random (mean, 95% CI)": mean, "neurons": AUTOINTERP_UNITS}),
                    Table(["neuron", "explanation", "top-and-random", "density"], rows,
                          caption="Best-explained neurons")],
                   {k: v for k, v in result.to_dict().items() if k != "kind"})
