"""More reached refusals (see test_raises.py): those that need an activation store, a saved dictionary, a
hand-built patchable module or a local HTTP endpoint. Each is one `InputError` line naming what is wrong."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from refusals import refused
from tiny_models import tiny_hooked_with_tokenizer


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A tiny model, a 30-sentence synthetic corpus (with UPOS labels) and its store of blocks.0.mlp.hook_post."""
    from lmscope.activations import ExtractConfig, extract
    from lmscope.data.labels import from_synthetic
    from lmscope.data.synthetic import generate_corpus

    root = tmp_path_factory.mktemp("raises-store")
    model = tiny_hooked_with_tokenizer(300)
    samples = [s for s in generate_corpus(60, seed=3) if s.pos][:30]
    corpus = from_synthetic(samples)
    extract(model, corpus.sentences, root / "store", ExtractConfig(("blocks.0.mlp.hook_post",)))
    return SimpleNamespace(model=model, corpus=corpus, store_dir=root / "store")


@pytest.fixture
def ctx(world: SimpleNamespace, tmp_path: Path) -> SimpleNamespace:
    from lmscope.activations import ActivationStore

    return SimpleNamespace(**vars(world), store=ActivationStore(world.store_dir), tmp=tmp_path)


def _store_copy(c: Any, edit: Callable[[Path], Any]) -> Any:
    from lmscope.activations import ActivationStore

    copy = c.tmp / "store"
    shutil.copytree(c.store_dir, copy)
    edit(copy)
    return ActivationStore(copy)


def _incomplete(p: Path) -> None:
    m = json.loads((p / "manifest.json").read_text())
    m["status"] = "incomplete"
    (p / "manifest.json").write_text(json.dumps(m))


def _shard_is_dir(p: Path) -> None:
    shard = sorted(p.glob("shard-*"))[0]
    shard.unlink()
    shard.mkdir()


def _ranking(c: Any) -> Any:
    from lmscope.neurons.analysis import rank_neurons
    from lmscope.neurons.dataset import load_dataset

    return rank_neurons(load_dataset(c.store, c.corpus), "random", top=3)


def _other_sentences(c: Any) -> Any:
    from lmscope.data.labels import LabeledCorpus

    sentences = [list(s) for s in c.corpus.sentences]
    sentences[1] = ["changed"] * len(sentences[1])
    return LabeledCorpus(sentences, c.corpus.labels, "other.jsonl")


def _neu(name: str) -> Any:
    import importlib

    return importlib.import_module(f"lmscope.neurons.{name}")


STORE_CASES = [
    ("store-incomplete", lambda c: _store_copy(c, _incomplete).load(), r"store: the extraction has not finished"),
    ("store-shard-unreadable", lambda c: _store_copy(c, _shard_is_dir).load(), r"shard-\S+: cannot read shard"),
    ("sae-points", lambda c: __import__("lmscope.dictionary.estimators", fromlist=["x"]).SAE(8, n_steps=1).fit(
        c.store, points=["blocks.0.mlp.hook_post", "blocks.0.mlp.hook_post"]),
     r"^points: a sae reads 1 hook point\(s\) from the store \(input\)"),
    ("ablate-k", lambda c: _neu("ablation").ablate_neurons(c.model, c.store, c.corpus, _ranking(c), 0),
     r"^k: expected 1\.\.128, got 0"),
    ("ranking-not-every-neuron", lambda c: _neu("analysis").ranking_indices(_ranking(c), c.store.neuron_units()),
     r"^ranking: it does not rank every neuron of this store"),
    ("top-examples-k", lambda c: _neu("analysis").top_examples(c.store, "blocks.0.mlp.hook_post:0", k=0),
     r"^k: expected a positive integer, got 0"),
    ("alignment-sentence", lambda c: _neu("dataset").check_alignment(c.store, _other_sentences(c)),
     r"^other\.jsonl: sentence 2 is 'changed.*', but the store has .*; label the corpus that was extracted"),
]


@pytest.mark.parametrize(("call", "words"), [pytest.param(f, w, id=i) for i, f, w in STORE_CASES])
def test_store_refusals(ctx: SimpleNamespace, call: Callable[[SimpleNamespace], Any], words: str) -> None:
    refused(lambda: call(ctx), words)


# ---------------------------------------------------------------- causal/ on a hand-built module

class _Readout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.h, self.unused = nn.Identity(), nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(torch.tanh(self.lin(x))).sum(-1)


def _toy() -> Any:
    from lmscope.causal.engine import prepare
    from lmscope.model.toy import HookedModule

    torch.manual_seed(0)
    module = _Readout()
    model = HookedModule(module, {"h": module.h, "unused": module.unused})
    x = torch.randn(3, 3)
    return model, prepare(model, x), prepare(model, x + 1)


def _sweep(components: list[str], method: str = "exact") -> Any:
    from lmscope.causal import patch_sweep

    model, base, source = _toy()
    return patch_sweep(model, base.x, source.x, components, lambda out, index: out, method=method)


def _attributed(grad_rows: int) -> Any:
    from lmscope.causal.attribution import attributed_effects
    from lmscope.causal.components import as_components

    model, base, source = _toy()
    return attributed_effects(model, base, source, torch.tensor([[0, 0]]), as_components(["h"]),
                              lambda out, index: out, grad_rows=grad_rows)


CAUSAL_CASES = [
    ("attribution-grad-rows", lambda: _attributed(0), r"^grad_rows: expected at least 1, got 0"),
    ("last-position-needs-tokens", lambda: _sweep(["h:0@-1"]),
     r"^component h:0@-1: position @-1 \(last token\) needs token inputs"),
    ("position-past-length", lambda: _sweep(["h:0@7"]), r"^component h:0@7: position 7 is past the inputs' length"),
]


@pytest.mark.parametrize(("call", "words"), [pytest.param(f, w, id=i) for i, f, w in CAUSAL_CASES])
def test_causal_refusals(call: Callable[[], Any], words: str) -> None:
    refused(call, words)


# ---------------------------------------------------------------- autointerp/ against a local endpoint

@pytest.fixture
def endpoint() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.dumps({"choices": []}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_openai_answer_without_choices_is_refused(endpoint: str) -> None:
    from lmscope.autointerp.llm import OpenAIClient

    refused(lambda: OpenAIClient(endpoint, "m").complete("hi"),
             rf"^base_url: {endpoint}: not an OpenAI-compatible chat answer")
