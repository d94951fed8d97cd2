"""`lmscope patch` and `lmscope mediate`: activation patching and causal mediation with a confounder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lmscope.cli.common import JsonFlag, ModelArg, app, checked_out_dir, out, print_json, progress_bars
from lmscope.errors import InputError

OUTCOMES = ("toxicity", "log-toxicity", "toxicity-hit", "toxicity-continuation", "logit-diff", "prob",
            "classifier:PATH", "py:MODULE:FUNCTION")
PLUGIN_HELP = ("py:MODULE:FUNCTION imports MODULE (from the current directory or the Python path) and runs its "
               "code: use only code you trust.")
Components = Annotated[str, typer.Option(help="Comma-separated groups: heads, mlp, attn, resid, neurons.")]
Target = Annotated[str | None, typer.Option(help="Target token (logit-diff, prob), e.g. ' Tuesday'.")]
Foil = Annotated[str | None, typer.Option(help="Foil token (logit-diff).")]
Lexicon = Annotated[str | None, typer.Option(help="Word list file (one per line) for the toxicity outcomes "
                                             "(default: the synthetic corpus's toxic words).")]
Neurons = Annotated[str | None, typer.Option(help="Comma-separated units for the 'neurons' group, e.g. "
                                             "blocks.1.mlp.hook_post:7.")]
OutDir = Annotated[str | None, typer.Option("--out", callback=checked_out_dir,
                                             help="Directory for result.json and report.html.")]
Overwrite = Annotated[bool, typer.Option(help="Replace result.json/report.html if they exist.")]
ContinuationTokens = Annotated[int, typer.Option(help="Greedy tokens decoded for toxicity-continuation and "
                                                 "classifier:PATH outcomes.")]


def read_texts(path: str, field: str = "text") -> list[str]:
    """Inputs from a text file (one per line) or a .jsonl file (the `field` of each row)."""
    from lmscope.data.lines import read_lines

    if Path(path).suffix == ".jsonl":
        return [str(row[field]) for row in read_rows(path, [field])]
    texts = [line for line in read_lines(path) if line.strip()]
    if not texts:
        raise InputError(f"{path}: no inputs (expected one per line)")
    return texts


def read_rows(path: str, fields: list[str]) -> list[dict[str, Any]]:
    """JSONL rows, each required to carry `fields`; errors name the file and line."""
    from lmscope.data.lines import json_lines

    rows = []
    for where, row in json_lines(path, f"expected an object with {', '.join(fields)}"):
        missing = [f for f in fields if not isinstance(row, dict) or f not in row]
        if missing:
            raise InputError(f"{where}: missing field {missing[0]!r} (expected {', '.join(fields)})")
        rows.append(row)
    if not rows:
        raise InputError(f"{path}: no rows")
    return rows


def check_outcome(outcome: str, target: str | None, foil: str | None) -> None:
    """Refuse an unknown outcome, or one missing its --target/--foil, before the model is loaded."""
    if outcome.startswith(("classifier:", "py:")):
        return
    if outcome not in OUTCOMES:
        raise InputError(f"--outcome/--metric: got {outcome!r}, expected one of {', '.join(OUTCOMES)}")
    if outcome in ("logit-diff", "prob") and target is None:
        raise InputError(f"--target: required for {outcome}")
    if outcome == "logit-diff" and foil is None:
        raise InputError("--foil: required for logit-diff")


def make_outcome(model: Any, outcome: str, target: str | None, foil: str | None, lexicon: str | None,
                 n_tokens: int = 8) -> Any:
    from lmscope.causal import continuation, scorers

    check_outcome(outcome, target, foil)
    if outcome.startswith("classifier:"):
        return continuation.continuation_classifier(model, outcome.removeprefix("classifier:"), n_tokens=n_tokens)
    if outcome.startswith("py:"):
        return scorers.callable_outcome(_plugin(outcome.removeprefix("py:")))
    if outcome == "logit-diff":
        return scorers.logit_diff(model, target, foil)  # type: ignore[arg-type]
    if outcome == "prob":
        return scorers.target_prob(model, target)  # type: ignore[arg-type]
    words = scorers.TOXIC_WORDS if lexicon is None else read_texts(lexicon)
    if outcome == "toxicity-hit":
        return scorers.lexicon_hit(model, words)
    if outcome == "toxicity-continuation":
        return continuation.continuation_lexicon_rate(model, words, n_tokens=n_tokens)
    return scorers.lexicon_mass(model, words, log=outcome == "log-toxicity")


def default_outcome(model: str, outcome: str | None) -> str:
    """`outcome`, or for a zoo model without one the synthetic corpus's toxicity; any other model must name one
    (on a real LM the synthetic insult lexicon gives effects near 1e-5, which would read as "no mediation")."""
    if outcome is not None:
        return outcome
    if model.startswith("zoo:"):
        return "toxicity"
    raise InputError(f"--outcome: {model} is not a zoo model, so name the outcome to measure: logit-diff "
                     "--target T --foil F, prob --target T, toxicity|log-toxicity|toxicity-hit|toxicity-continuation "
                     "--lexicon WORDS.txt, classifier:PATH (a local HF classifier on the continuation) or "
                     "py:MODULE:FUNCTION")


def _plugin(spec: str) -> Any:
    """`module:function` importable from the current directory or the Python path: `fn(logits, index)`.

    Importing runs the module's code (see PLUGIN_HELP). The current directory is on `sys.path` only while
    importing: `sys.path` is restored afterwards, so later imports cannot pick up files from it."""
    import importlib
    import os
    import sys

    module, _, name = spec.partition(":")
    if not module or not name:
        raise InputError(f"--outcome py:{spec}: expected py:MODULE:FUNCTION")
    saved = list(sys.path)
    sys.path.insert(0, os.getcwd())
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise InputError(f"--outcome py:{spec}: cannot load it ({e})") from None
    finally:
        sys.path[:] = saved
    if not callable(fn):
        raise InputError(f"--outcome py:{spec}: {name} is not callable")
    return fn


EACH = "each"


def _components(model: Any, groups: str, position: int | str | None, neurons: str | None,
                texts: list[str] | None = None) -> list[Any]:
    """The standard components at `position`; `EACH`: at every position up to the shortest of `texts`."""
    from lmscope.causal import standard_components

    units = [u.strip() for u in neurons.split(",") if u.strip()] if neurons else []
    if position != EACH:
        return standard_components(model.cfg.n_layers, model.cfg.n_heads, groups, position=position, neurons=units)
    n = int(model.to_tokens(texts or []).lengths.min())
    return [c for p in range(n) for c in standard_components(
        model.cfg.n_layers, model.cfg.n_heads, groups, position=p, neurons=[f"{u.split('@')[0]}@{p}" for u in units])]


def _position(text: str) -> int | str | None:
    if text == "last":
        return -1
    if text == "all":
        return None
    if text == EACH:
        return EACH
    if text.isdecimal():
        return int(text)
    raise InputError(f"--position: got {text!r}, expected last, all, each or a position index")


def _check_out(out_dir: str | None, overwrite: bool) -> None:
    """Refuse an --out that would be overwritten, before any work."""
    from lmscope.fileio import check_writable

    if out_dir:
        for name in ("result.json", "report.html"):
            check_writable(Path(out_dir) / name, overwrite=overwrite)


def _write(out_dir: str, overwrite: bool, result: Any, section: Any, model: str) -> None:
    from lmscope.fileio import atomic_write_text
    from lmscope.report import Report

    _check_out(out_dir, overwrite)  # again: refuse before writing anything
    result.save(out_dir, overwrite=overwrite)
    report = Report(section.title, meta={"model": model})
    report.add(section)
    atomic_write_text(Path(out_dir) / "report.html", report.render_html(), overwrite=overwrite)


PATCH_METHODS = ("exact", "atp", "atp+verify")
NOT_DIFFERENTIABLE = ("toxicity-hit", "toxicity-continuation", "classifier:")


def check_method(method: str, metric: str, verify_top: int) -> None:
    """Refuse an unknown --method, a metric attribution cannot differentiate, or a --verify-top below 1."""
    if method not in PATCH_METHODS:
        raise InputError(f"--method: got {method!r}, expected one of {', '.join(PATCH_METHODS)}")
    if method != "exact" and metric.startswith(NOT_DIFFERENTIABLE):
        raise InputError(f"--method {method}: the metric {metric} has no gradient (argmax or decoding); "
                         "use --method exact or a smooth metric (logit-diff, prob, toxicity, log-toxicity)")
    if verify_top < 1:
        raise InputError(f"--verify-top: expected a positive number of components, got {verify_top}")


@app.command()
def patch(model: ModelArg,
          base: Annotated[str, typer.Option(help="Base inputs: a text file (one per line) or .jsonl (field text).")],
          source: Annotated[str, typer.Option(help="Source inputs, one per base input.")],
          metric: Annotated[str, typer.Option(help=f"One of {', '.join(OUTCOMES)}. {PLUGIN_HELP}")] = "logit-diff",
          target: Target = None, foil: Foil = None, lexicon: Lexicon = None,
          components: Components = "heads,mlp,resid", neurons: Neurons = None,
          position: Annotated[str, typer.Option(help="last (each input's last token), all (every position at "
                                                "once), each (every position on its own, up to the shortest "
                                                "input), or an index.")] = "last",
          method: Annotated[str, typer.Option(help="exact (one patched forward per component and pair), atp "
                                              "(attribution patching: first-order estimates of every effect from "
                                              "one forward and one backward), or atp+verify (atp, then the "
                                              "--verify-top largest estimates re-run exactly, with the "
                                              "estimate's error).")] = "exact",
          verify_top: Annotated[int, typer.Option(help="Components re-run exactly by atp+verify.")] = 20,
          continuation_tokens: ContinuationTokens = 8, out_dir: OutDir = None, overwrite: Overwrite = False,
          as_json: JsonFlag = False) -> None:
    """Patch each component from the source run into the base run and measure the metric's change.

    Example: lmscope patch zoo:gpt2-tiny --base base.txt --source source.txt --metric logit-diff
    --target ' Tuesday' --foil ' Monday' --components heads,mlp --method atp+verify --out patch/
    """
    from lmscope import HookedModel
    from lmscope.causal import patch_sweep
    from lmscope.report.causal_sections import patching_section

    base_texts, source_texts, at = read_texts(base), read_texts(source), _position(position)
    check_outcome(metric, target, foil)
    check_method(method, metric, verify_top)
    _check_out(out_dir, overwrite)
    hooked = HookedModel.from_pretrained(model)
    score = make_outcome(hooked, metric, target, foil, lexicon, continuation_tokens)
    comps = _components(hooked, components, at, neurons, texts=[*base_texts, *source_texts])
    with progress_bars(not as_json) as stage:
        result = patch_sweep(hooked, base_texts, source_texts, comps, score, metric_name=metric,
                             method="exact" if method == "exact" else "attribution",
                             verify_top=verify_top if method == "atp+verify" else 0, progress=stage)
    if out_dir:
        _write(out_dir, overwrite, result, patching_section(result.to_dict(), model_name=model), model)
    if as_json:
        print_json(result.to_dict())
        return
    how = {"exact": "exact patching", "atp": "attribution patching (first-order estimates)",
           "atp+verify": "attribution patching (first-order estimates), top re-run exactly"}[method]
    out.print(f"{metric}: base {float(result.y_base.mean()):.4g}, source {float(result.y_source.mean()):.4g} "
              f"(mean over {len(base_texts)} pairs); {how}", markup=False, soft_wrap=True)
    verify = result.meta.get("verify")
    if verify is None:
        for label, effect in result.ranking(10):
            out.print(f"  {effect:+.4g}  {label}", markup=False)
        return
    out.print(verify_summary(verify), markup=False, soft_wrap=True)
    out.print("  estimate     exact  component", markup=False)
    for label, est, ex in zip(verify["components"], verify["estimate_mean_effect"], verify["exact_mean_effect"],
                              strict=True):
        out.print(f"  {est:+8.4g} {ex:+9.4g}  {label}", markup=False)


def verify_summary(verify: dict[str, Any]) -> str:
    """One line: the estimate's error against exact patching on the verified components."""
    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    w = verify["worst"]
    return (f"atp vs exact on the top {verify['top']}: Pearson r {num(verify['pearson'])}, top-{verify['k']} overlap "
            f"{round(verify['top_k_overlap'] * verify['k'])}/{verify['k']}, mean |error| "
            f"{verify['mean_abs_error']:.3g}, worst {w['component']} (estimate {w['estimate']:+.4g}, exact "
            f"{w['exact']:+.4g}, error {w['error']:+.4g})")


@app.command()
def mediate(model: ModelArg,
            data: Annotated[str, typer.Argument(help="JSONL rows: the text, a 0/1 treatment field, a confounder.")],
            treatment: Annotated[str, typer.Option(help="Field holding 0/1 (or true/false): the treatment.")],
            confounder: Annotated[str | None, typer.Option(help="Field holding the confounder label "
                                                           "(e.g. topic).")] = None,
            infer_topics: Annotated[str | None, typer.Option(help="Infer the confounder instead: kmeans "
                                                             "(model activations) or nmf (TF-IDF).")] = None,
            n_topics: Annotated[int, typer.Option(help="Topics to infer.")] = 4,
            text: Annotated[str, typer.Option(help="Field holding the text.")] = "text",
            outcome: Annotated[str | None, typer.Option(help=f"One of {', '.join(OUTCOMES)}. {PLUGIN_HELP} "
                                                        "Default: toxicity "
                                                        "(the synthetic corpus's insults) for zoo: models only; "
                                                        "any other model needs one.")] = None,
            target: Target = None, foil: Foil = None, lexicon: Lexicon = None,
            continuation_tokens: ContinuationTokens = 8,
            components: Components = "heads,mlp,resid", neurons: Neurons = None,
            n_boot: Annotated[int, typer.Option(help="Bootstrap replicates.")] = 500,
            max_pairs: Annotated[int, typer.Option(help="Most treated x control pairs to patch.")] = 2000,
            top_k: Annotated[int, typer.Option(help="k of the top-k share (localization).")] = 3,
            chunk_mb: Annotated[int, typer.Option(help="Working memory (MB) of each batched forward: rows, "
                                                  "pairs and components go in batches that fit it; more is faster "
                                                  "per forward, the results are the same.")] = 128,
            seed: int = 0, out_dir: OutDir = None, overwrite: Overwrite = False, as_json: JsonFlag = False) -> None:
    """TE, NDE and NIE of every component at the last token, unadjusted and adjusted for the confounder.

    Example: lmscope mediate zoo:gpt2-tiny rows.jsonl --treatment toxic_cue --confounder topic
    --outcome toxicity --components heads,mlp,resid --out mediation/
    """
    from lmscope import HookedModel
    from lmscope.causal import mediate as run_mediation
    from lmscope.causal.confounders import topics_kmeans, topics_nmf
    from lmscope.report.causal_sections import mediation_section

    if (confounder is None) == (infer_topics is None):
        raise InputError("--confounder/--infer-topics: give exactly one (a field name, or kmeans/nmf)")
    if infer_topics not in (None, "kmeans", "nmf"):
        raise InputError(f"--infer-topics: got {infer_topics!r}, expected kmeans or nmf")
    if chunk_mb < 1:
        raise InputError(f"--chunk-mb: got {chunk_mb}, expected at least 1 (megabytes per batched forward)")
    outcome = default_outcome(model, outcome)
    check_outcome(outcome, target, foil)
    _check_out(out_dir, overwrite)
    rows = read_rows(data, [text, treatment] + ([confounder] if confounder else []))
    texts = [str(r[text]) for r in rows]
    labels: list[Any] = [r[confounder] for r in rows] if confounder else []
    features = None
    hooked = HookedModel.from_pretrained(model)
    score = make_outcome(hooked, outcome, target, foil, lexicon, continuation_tokens)
    comps = _components(hooked, components, -1, neurons)
    with progress_bars(not as_json) as stage:
        if not confounder:  # topics of the rows' own texts
            stage(f"topics ({infer_topics})", 0, 1)
            topics = (topics_kmeans(hooked, texts, n_topics, seed=seed) if infer_topics == "kmeans"
                      else topics_nmf(texts, n_topics, seed=seed))
            labels, features = topics.labels, topics.features
            stage(f"topics ({infer_topics})", 1, 1)
        result = run_mediation(hooked, texts, [r[treatment] for r in rows], labels, comps, score, features=features,
                               n_boot=n_boot, max_pairs=max_pairs, top_k=top_k, seed=seed, outcome_name=outcome,
                               max_bytes=chunk_mb * 2**20, progress=stage)
    result.meta["confounder"] = confounder or f"inferred topics ({infer_topics}, {n_topics})"
    if out_dir:
        section = mediation_section(result.to_dict(), model_name=model, treatment=treatment,
                                    confounder=result.meta["confounder"])
        _write(out_dir, overwrite, result, section, model)
    if as_json:
        print_json(result.to_dict())
        return
    out.print(f"{result.n_treated} treated, {result.n_control} control; {result.meta['n_pairs']} pairs patched")
    for scheme in result.effects:
        loc = result.localization[scheme]
        top = ", ".join(f"{label} {v:+.3g}" for label, v in result.ranking(scheme, 3))
        out.print(f"[bold]{scheme}[/]: TE {result.te(scheme):+.4g}; top-{loc['top_k']} share {loc['top_k_share']:.3f}, "
                  f"Gini {loc['gini']:.3f}; top NIE: {top}", soft_wrap=True, highlight=False)
