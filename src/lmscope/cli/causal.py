"""`lmscope patch` and `lmscope mediate`: activation patching and causal mediation with a confounder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lmscope.causal.inputs import (
    OUTCOMES,
    PLUGIN_HELP,
    check_components,
    check_differentiable,
    check_outcome,
    check_outcome_files,
    default_outcome,
    make_outcome,
    model_components,
    parse_position,
    read_rows,
    read_texts,
    split_units,
)
from lmscope.cli.common import (
    COUNT,
    AllowMismatchOpt,
    JsonFlag,
    ModelArg,
    SeedOpt,
    checked_out_dir,
    out,
    print_json,
    progress_bars,
)
from lmscope.errors import InputError

__all__ = ["check_outcome", "default_outcome", "mediate", "patch", "read_rows", "read_texts"]

Components = Annotated[str, typer.Option(help="Comma-separated groups: heads, mlp, attn, resid, neurons.")]
Target = Annotated[str | None, typer.Option(help="Target token (logit-diff, prob), e.g. ' Tuesday'.")]
Foil = Annotated[str | None, typer.Option(help="Foil token (logit-diff).")]
Lexicon = Annotated[str | None, typer.Option(help="Word list file (one per line) for the toxicity outcomes "
                                             "(default: the synthetic corpus's toxic words).")]
Neurons = Annotated[str | None, typer.Option(help="Comma-separated units for the 'neurons' group, e.g. "
                                             "blocks.1.mlp.hook_post:7, or a dictionary's features, "
                                             "dict:PATH:3 (its dictionary is loaded and attached to the model).")]
OutDir = Annotated[str | None, typer.Option("--out", callback=checked_out_dir,
                                             help="Directory for result.json and report.html.")]
Overwrite = Annotated[bool, typer.Option(help="Replace result.json/report.html if they exist.")]
ContinuationTokens = Annotated[int, typer.Option(callback=COUNT, help="Greedy tokens decoded for "
                                                 "toxicity-continuation and classifier:PATH outcomes.")]


def _check_out(out_dir: str | None, overwrite: bool) -> None:
    """Refuse an --out that would be overwritten, before any work."""
    from lmscope.fileio import check_writable

    if out_dir:
        for name in ("result.json", "report.html"):
            check_writable(Path(out_dir) / name, overwrite=overwrite)


def _write(out_dir: str, overwrite: bool, result: Any, section: Any, model: str) -> None:
    """result.json and report.html through the one writer (both checked before either is written)."""
    from lmscope.report import Report

    report = Report(section.title, meta={"model": model})
    report.add(section)
    result.save(out_dir, overwrite=overwrite, html=report.render_html())


PATCH_METHODS = ("exact", "atp", "atp+verify")


def check_method(method: str, metric: str) -> None:
    """Refuse an unknown --method, or a metric attribution patching cannot differentiate."""
    if method not in PATCH_METHODS:
        raise InputError(f"--method: got {method!r}, expected one of {', '.join(PATCH_METHODS)}")
    if method != "exact":
        check_differentiable(metric, arg="metric")


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
          verify_top: Annotated[int, typer.Option(callback=COUNT, help="Components re-run exactly by "
                                                  "atp+verify.")] = 20,
          continuation_tokens: ContinuationTokens = 8, out_dir: OutDir = None, overwrite: Overwrite = False,
          allow_mismatch: AllowMismatchOpt = False, as_json: JsonFlag = False) -> None:
    """Patch each component from the source run into the base run and measure the metric's change.

    Example: lmscope patch zoo:gpt2-tiny --base base.txt --source source.txt --metric logit-diff
    --target ' Tuesday' --foil ' Monday' --components heads,mlp --method atp+verify --out patch/
    """
    from lmscope import HookedModel
    from lmscope.causal import patch_sweep
    from lmscope.report.causal_sections import patching_section

    at = parse_position(position)
    check_outcome(metric, target, foil, arg="metric")
    check_method(method, metric)
    units = split_units(neurons)
    check_components(components, units)
    _check_out(out_dir, overwrite)
    base_texts, source_texts = read_texts(base), read_texts(source)
    if len(source_texts) != len(base_texts):
        raise InputError(f"--source: expected {len(base_texts)} inputs (one per --base input), got {len(source_texts)}")
    check_outcome_files(metric, lexicon, arg="metric")
    hooked = HookedModel.from_pretrained(model)
    score = make_outcome(hooked, metric, target, foil, lexicon, continuation_tokens, arg="metric")
    comps = model_components(hooked, components, at, units, texts=[*base_texts, *source_texts],
                             allow_mismatch=allow_mismatch)
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


def mediate(model: ModelArg,
            data: Annotated[str, typer.Argument(help="JSONL rows: the text, a 0/1 treatment field, a confounder.")],
            treatment: Annotated[str, typer.Option(help="Field holding 0/1 (or true/false): the treatment.")],
            confounder: Annotated[str | None, typer.Option(help="Field holding the confounder label "
                                                           "(e.g. topic).")] = None,
            infer_topics: Annotated[str | None, typer.Option(help="Infer the confounder instead: kmeans "
                                                             "(model activations) or nmf (TF-IDF).")] = None,
            n_topics: Annotated[int, typer.Option(callback=COUNT, help="Topics to infer.")] = 4,
            text: Annotated[str, typer.Option(help="Field holding the text.")] = "text",
            outcome: Annotated[str | None, typer.Option(help=f"One of {', '.join(OUTCOMES)}. {PLUGIN_HELP} "
                                                        "Default: toxicity "
                                                        "(the synthetic corpus's insults) for zoo: models only; "
                                                        "any other model needs one.")] = None,
            target: Target = None, foil: Foil = None, lexicon: Lexicon = None,
            continuation_tokens: ContinuationTokens = 8,
            components: Components = "heads,mlp,resid", neurons: Neurons = None,
            n_boot: Annotated[int, typer.Option(callback=COUNT, help="Bootstrap replicates.")] = 500,
            max_pairs: Annotated[int, typer.Option(callback=COUNT, help="Most treated x control pairs to "
                                                   "patch.")] = 2000,
            top_k: Annotated[int, typer.Option(callback=COUNT, help="k of the top-k share (localization).")] = 3,
            chunk_mb: Annotated[int, typer.Option(callback=COUNT, help="Working memory (MB) of each batched "
                                                  "forward: rows, pairs and components go in batches that fit it; "
                                                  "more is faster per forward, the results are the same.")] = 128,
            seed: SeedOpt = 0, out_dir: OutDir = None, overwrite: Overwrite = False,
            allow_mismatch: AllowMismatchOpt = False, as_json: JsonFlag = False) -> None:
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
    outcome = default_outcome(model, outcome)
    check_outcome(outcome, target, foil)
    units = split_units(neurons)
    check_components(components, units)
    _check_out(out_dir, overwrite)
    rows = read_rows(data, [text, treatment] + ([confounder] if confounder else []))
    check_outcome_files(outcome, lexicon)
    texts = [str(r[text]) for r in rows]
    labels: list[Any] = [r[confounder] for r in rows] if confounder else []
    features = None
    hooked = HookedModel.from_pretrained(model)
    score = make_outcome(hooked, outcome, target, foil, lexicon, continuation_tokens)
    comps = model_components(hooked, components, -1, units, allow_mismatch=allow_mismatch)
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
