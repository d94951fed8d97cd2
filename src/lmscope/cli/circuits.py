"""`lmscope circuit`: the feature circuit of one prompt and target through a model's transcoders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lmscope.cli.common import (
    COUNT,
    INDEX,
    NONNEG_FLOAT,
    AllowMismatchOpt,
    JsonFlag,
    ModelArg,
    checked_out_dir,
    out,
    print_json,
    progress_bars,
)


def circuit(model: ModelArg,
            transcoders: Annotated[str, typer.Option(help="Directory of transcoders, one subdirectory per layer "
                                                     "(SAELens layout; e.g. from `lmscope dict train`).")],
            prompt: Annotated[str, typer.Option(help="The prompt to trace.")],
            target: Annotated[str, typer.Option(help="logit:A, logit:A-B, logit:A,B-C,D (mean logits), "
                                                "feature:LAYER:FEATURE or greater-than:YY; tokens as text or #ID.")],
            position: Annotated[int, typer.Option(callback=INDEX, help="Target position (negative: from the "
                                                  "end).")] = -1,
            iters: Annotated[int, typer.Option(callback=COUNT, help="Path search iterations (path length).")] = 3,
            branches: Annotated[int, typer.Option(callback=COUNT, help="Children followed from each node per "
                                                  "iteration.")] = 5,
            beam: Annotated[int | None, typer.Option(callback=COUNT, help="Paths kept per iteration (default: "
                                                     "--branches).")] = None,
            threshold: Annotated[float, typer.Option(callback=NONNEG_FLOAT, help="Prune paths below this fraction "
                                                     "of |target|.")] = 0.01,
            check: Annotated[bool, typer.Option(help="Re-run with only the graph's features kept.")] = True,
            heldout: Annotated[str | None, typer.Option(
                help="Score the graph on prompts the search never saw: a file (JSONL {\"prompt\", \"target\"}, or "
                     "one prompt per line, optionally PROMPT<TAB>TARGET; a missing target means --target) or a "
                     "built-in task made from --prompt by substitution: days, months, numbers, ioi, greater-than. "
                     "Reports the median fraction recovered, live and with norms and attention frozen.")] = None,
            heldout_n: Annotated[int, typer.Option(callback=COUNT, help="At most this many held-out prompts.")] = 20,
            out_dir: Annotated[str | None, typer.Option("--out", callback=checked_out_dir, help="Directory for "
                                                        "result.json, graph.json and report.html.")] = None,
            overwrite: Annotated[bool, typer.Option(help="Replace existing files in --out.")] = False,
            allow_mismatch: AllowMismatchOpt = False, as_json: JsonFlag = False) -> None:
    """Attribute a target to transcoder features, heads, embeddings and error terms; find the top paths;
    build the pruned graph; check how much of the target its features alone recover.

    Example: lmscope circuit zoo:gpt2-tiny --transcoders tcs/ --prompt "from the year 1732 to the year 17"
    --target "logit:40-20" --out circuit/
    """
    from lmscope import HookedModel
    from lmscope.circuits import parse_target, trace_circuit
    from lmscope.circuits.analysis import describe_missing
    from lmscope.circuits.faithfulness import HeldoutCase
    from lmscope.circuits.heldout import TASKS, builtin_cases, read_cases
    from lmscope.dictionary.io import check_dictionary_model
    from lmscope.dictionary.stack import load_transcoders_by_path
    from lmscope.errors import InputError
    from lmscope.fileio import check_output_dir, check_writable
    from lmscope.report import Report
    from lmscope.report.circuit_sections import circuit_section

    if out_dir is not None:
        check_output_dir(out_dir)
        for name in ("result.json", "graph.json", "report.html"):  # refuse before any work
            check_writable(Path(out_dir) / name, overwrite=overwrite)
    if heldout is not None and not Path(heldout).exists() and heldout not in TASKS:  # before loading anything
        raise InputError(f"--heldout: {heldout!r} is neither a file nor a built-in task ({', '.join(TASKS)})")
    tcs, names = load_transcoders_by_path(transcoders)  # a bad directory: one line before the model loads
    hooked = HookedModel.from_pretrained(model)
    check_dictionary_model(tcs, hooked, what=f"--transcoders {transcoders}", allow_mismatch=allow_mismatch)
    spec = parse_target(target, hooked, pos=position)
    cases: list[HeldoutCase] = []
    skipped: list[str] = []
    source = ""
    if heldout is not None:  # every held-out prompt and target is checked before the trace
        if Path(heldout).exists():
            cases, source = read_cases(heldout, hooked, target, position=position, limit=heldout_n), heldout
        else:
            cases, skipped = builtin_cases(hooked, prompt, spec, heldout, heldout_n)
            source = f"built-in task {heldout}: {len(cases)} prompts made from --prompt"
    with progress_bars(not as_json) as stage:
        result = trace_circuit(hooked, tcs, prompt, spec, n_iters=iters, branches=branches, beam=beam,
                               threshold=threshold, check=check, heldout=cases, heldout_source=source,
                               heldout_skipped=skipped, dictionaries=names, progress=stage)
    data = result.to_dict()
    if out_dir is not None:
        report = Report("Feature circuit", meta={"model": model, "transcoders": transcoders})
        report.add(circuit_section(data, hooked.cfg.n_layers))
        result.save(out_dir, overwrite=overwrite, html=report.render_html())
    if as_json:
        print_json(data)
        return
    rec = result.recovery
    out.print(f"target {spec.label} at position {data['options']['pos']}: {result.attribution.value:.4f} "
              f"(unexplained remainder {result.attribution.remainder:.1e}); graph {len(result.graph.nodes)} nodes, "
              f"{len(result.graph.edges)} edges, built in {result.seconds['build']:.3f} s", soft_wrap=True,
              markup=False)
    missing = describe_missing(data["options"]["layers_without_transcoder"], hooked.cfg.n_layers)
    if missing is not None:
        out.print(missing, soft_wrap=True, markup=False, highlight=False)
    if rec is not None and rec.recovered_frozen is not None:  # the headline: a share of the target
        out.print(f"only the graph's {rec.n_features} features kept, norm scales and attention frozen: "
                  f"{rec.circuit_frozen:.4f}; none: {rec.none_frozen:.4f}; recovered {_fmt(rec.recovered_frozen)} "
                  "of the target", soft_wrap=True)
    if rec is not None and rec.recovered is not None:
        out.print(f"live splice (the final LayerNorm rescales a thinned residual; can exceed 1): {rec.circuit:.4f}; "
                  f"none: {rec.none:.4f}; all but the graph's: {rec.without:.4f}; recovered {_fmt(rec.recovered)}",
                  soft_wrap=True)
    sc = result.scores
    if sc is not None:
        out.print(f"graph scores (circuit-tracer): replacement {_fmt(sc.replacement)}, completeness "
                  f"{_fmt(sc.completeness)}; counting what the graph leaves out as error: replacement "
                  f"{_fmt(sc.replacement_strict)}, completeness {_fmt(sc.completeness_strict)}", soft_wrap=True,
                  markup=False, highlight=False)
    held = result.heldout
    if held is not None:
        out.print(f"held-out ({held.source}): median recovered {_fmt(held.median)} live, {_fmt(held.median_frozen)} "
                  f"frozen over {len(held.rows)} prompts ({result.seconds['heldout']:.1f} s)", soft_wrap=True,
                  markup=False, highlight=False)
    for label in result.labels():
        out.print(f"LABEL: the graph {label}", soft_wrap=True, markup=False, highlight=False)
    for p in result.top_paths(5):
        out.print(f"  {p.value:8.4f}  {result.path_label(p)}", soft_wrap=True, markup=False, highlight=False)
    if out_dir is not None:
        out.print(f"wrote {Path(out_dir) / 'result.json'}, graph.json, report.html")


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{round(v, 3) + 0.0:.3f}"  # + 0.0: no "-0.000"
