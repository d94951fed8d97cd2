"""`lmscope neurons rank | evaluate | top-examples | ablate`: NeuroX-style neuron analysis on a store."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from lmscope.cli.common import (
    COUNT,
    MAX_COUNT,
    AllowMismatchOpt,
    JsonFlag,
    ModelArg,
    SeedOpt,
    checked_out_dir,
    one_of,
    out,
    print_json,
    progress_bars,
)
from lmscope.errors import InputError

neurons_app = typer.Typer(help="Rank, evaluate and ablate neurons for a labelled concept (as in NeuroX).",
                          no_args_is_help=True)

StoreArg = Annotated[str, typer.Argument(help="Activation store directory (from `lmscope extract`).")]
LabelsOpt = Annotated[str, typer.Option(help="Token labels: .conllu, .jsonl ({tokens, labels} or the synthetic "
                                        "corpus), or a NeuroX label file parallel to the store's corpus.")]
ColumnOpt = Annotated[str, typer.Option(help="CoNLL-U column (upos, xpos, deprel or an index); synthetic corpus: "
                                        "pos, topic, toxic or task.")]
OutOpt = Annotated[str, typer.Option("--out", callback=checked_out_dir, help="Directory for result.json.")]
OverwriteOpt = Annotated[bool, typer.Option(help="Replace an existing result.json.")]
ABLATIONS = ("zero", "mean")
MinCountOpt = Annotated[int, typer.Option(callback=COUNT, help="Leave out classes with fewer words.")]


def _methods() -> list[str]:
    from lmscope.neurons.analysis import METHODS

    return list(METHODS)


def _corpus(store: Any, labels: str, column: str) -> Any:
    from lmscope.data.labels import read_label_file

    return read_label_file(labels, column, corpus_path=store.manifest.get("corpus", {}).get("path"))


def _ks(ks: str) -> list[int]:
    parts = [k.strip() for k in ks.split(",") if k.strip()]
    if not parts or not all(k.isdecimal() and 1 <= int(k) <= MAX_COUNT for k in parts):
        raise InputError(f"--ks: expected comma-separated integers >= 1, got {ks!r}")
    return [int(k) for k in parts]


@neurons_app.command("rank")
def rank(store: StoreArg, labels: LabelsOpt, out_dir: OutOpt,
         method: Annotated[str, typer.Option(help="lca, probeless, iou, gaussian or random.",
                                             callback=one_of(_methods))] = "lca",
         column: ColumnOpt = "upos", min_count: MinCountOpt = 1,
         balance: Annotated[bool, typer.Option(help="Undersample every class to the smallest.")] = False,
         fast: Annotated[bool, typer.Option(help="lca only: one epoch of minibatch Adam then 5 FISTA steps, "
                                            "not solved to convergence (as NeuroX's probe is not).")] = False,
         seed: SeedOpt = 0, overwrite: OverwriteOpt = False, as_json: JsonFlag = False) -> None:
    """Rank every neuron of a store for a labelled concept; writes the ranking (overall and per class).

    Example: lmscope neurons rank store/ --labels pos.conllu --method lca --out rank/
    """
    from lmscope.activations import ActivationStore
    from lmscope.neurons.analysis import rank_neurons
    from lmscope.neurons.dataset import load_dataset
    from lmscope.neurons.probe import FAST_SETTINGS

    if fast and method != "lca":
        raise InputError(f"--fast: only for --method lca (the probe), not {method}")
    st = ActivationStore(store)
    data = load_dataset(st, _corpus(st, labels, column), min_count=min_count, balance=balance, seed=seed,
                        control=False, split=(0.2, seed))
    with progress_bars(not as_json) as stage:
        stage(f"ranking ({method})", 0, 1)
        result = rank_neurons(data, method, seed=seed, **(FAST_SETTINGS if fast else {}))
    path = result.save(out_dir, overwrite=overwrite)
    if as_json:
        print_json({"result": str(path), "accuracy": result.accuracy, "top": result.overall[:10]})
        return
    acc = f", probe test accuracy {result.accuracy['test']:.3f}" if result.accuracy else ""
    out.print(f"{path}: {len(result.overall)} neurons ranked by {method} on {result.n_rows:,} words{acc}")
    for e in result.overall[:5]:
        out.print(f"  {e['point']}:{e['neuron']}  {e['score']:.4g}")


@neurons_app.command("evaluate")
def evaluate(store: StoreArg, labels: LabelsOpt, ranking: Annotated[str, typer.Option(
             help="A ranking's result.json (or its directory).")], out_dir: OutOpt,
             ks: Annotated[str, typer.Option(help="Comma-separated k values.")] = "10,50,100",
             column: ColumnOpt = "upos", min_count: MinCountOpt = 1, seed: SeedOpt = 0,
             overwrite: OverwriteOpt = False,
             as_json: JsonFlag = False) -> None:
    """Probe accuracy with the top / random / bottom k neurons, and selectivity against a control task.

    Example: lmscope neurons evaluate store/ --labels pos.conllu --ranking rank/ --ks 10,50 --out eval/
    """
    from lmscope.activations import ActivationStore
    from lmscope.neurons.analysis import NeuronRanking, evaluate_ranking
    from lmscope.neurons.dataset import load_dataset
    from lmscope.results import write_result

    k_values = _ks(ks)
    st = ActivationStore(store)
    found = NeuronRanking.load(ranking)
    data = load_dataset(st, _corpus(st, labels, column), min_count=min_count, seed=seed, split=(0.2, seed))
    with progress_bars(not as_json) as stage:
        result = evaluate_ranking(data, found, k_values, seed=seed, progress=stage)
    path = write_result(out_dir, result, overwrite=overwrite)["json"]
    if as_json:
        print_json(result)
        return
    out.print(f"{path}: all neurons {result['all_neurons']:.3f}, majority {result['majority']:.3f}")
    for k, t, r, b in zip(result["ks"], result["top"], result["random"], result["bottom"], strict=True):
        sel = result.get("selectivity", {}).get(str(k), {}).get("selectivity")
        out.print(f"  k={k}: top {t:.3f}  random {r:.3f}  bottom {b:.3f}" + (f"  selectivity {sel:.3f}" if sel
                                                                             is not None else ""))


@neurons_app.command("top-examples")
def top_examples_cmd(store: StoreArg, neuron: Annotated[str, typer.Option(help="e.g. blocks.1.mlp.hook_post:7")],
                     k: Annotated[int, typer.Option(callback=COUNT, help="How many examples.")] = 10,
                     as_json: JsonFlag = False) -> None:
    """The k words (in their sentences) where a neuron fires most.

    Example: lmscope neurons top-examples store/ --neuron blocks.1.mlp.hook_post:7 --k 5
    """
    from lmscope.activations import ActivationStore
    from lmscope.neurons.analysis import top_examples

    examples = [e.to_dict() for e in top_examples(ActivationStore(store), neuron, k)]
    if as_json:
        print_json({"neuron": neuron, "examples": examples})
        return
    for e in examples:
        words = e["sentence"].split(" ")
        words[e["word_index"]] = f"[bold]\\[{words[e['word_index']]}][/]"
        out.print(f"{e['activation']:8.3f}  {' '.join(words)}", soft_wrap=True)


@neurons_app.command("ablate")
def ablate(model: ModelArg, store: StoreArg, labels: LabelsOpt,
           ranking: Annotated[str, typer.Option(help="A ranking's result.json (or its directory).")],
           out_dir: OutOpt,
           k: Annotated[int, typer.Option(callback=COUNT, help="How many top neurons to ablate.")] = 50,
           mode: Annotated[str, typer.Option(help="zero or mean.")] = "zero", column: ColumnOpt = "upos",
           seed: SeedOpt = 0, overwrite: OverwriteOpt = False, allow_mismatch: AllowMismatchOpt = False,
           as_json: JsonFlag = False) -> None:
    """Ablate the top-k neurons inside the model; compare probe accuracy and LM loss with k random ones.

    Example: lmscope neurons ablate zoo:gpt2-tiny store/ --labels pos.conllu --ranking rank/ --k 50 --out abl/
    """
    from lmscope import HookedModel
    from lmscope.activations import ActivationStore
    from lmscope.dictionary.attach import attach_dictionaries
    from lmscope.neurons.ablation import ablate_neurons
    from lmscope.neurons.analysis import NeuronRanking

    if mode not in ABLATIONS:
        raise InputError(f"--mode: expected one of {', '.join(ABLATIONS)}, got {mode!r}")
    st = ActivationStore(store)
    found = NeuronRanking.load(ranking)  # a bad ranking file is one line before the model loads
    with progress_bars(not as_json) as stage:
        hooked = HookedModel.from_pretrained(model)
        attach_dictionaries(hooked, st.points, allow_mismatch=allow_mismatch)  # a store of dictionary features
        st.check_model(hooked, allow_mismatch=allow_mismatch)  # extracted from this model?
        result = ablate_neurons(hooked, st, _corpus(st, labels, column), found, k, mode=mode, seed=seed,
                                progress=stage)
    path = result.save(out_dir, overwrite=overwrite)
    if as_json:
        print_json(result.to_dict())
        return
    out.print(f"{path}: probe accuracy clean {result.clean_accuracy:.3f}, top-{k} ablated {result.top_accuracy:.3f}, "
              f"random-{k} {result.random_accuracy:.3f}; LM loss {result.clean_loss:.3f} / {result.top_loss:.3f} / "
              f"{result.random_loss:.3f}")
