"""Stack training (`lmscope.dictionary.multi`): one forward per batch for every layer, known answers.

A layer trained alone equals the same layer inside a stack (same seeds, same fills); a stopped and resumed
stack equals an uninterrupted one byte for byte; the forward stops after the last chosen layer; the stream
serves exactly the kept rows of a direct `run_with_cache`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from lmscope.dictionary.multi import StackStream, parse_layers, stack_hooks, train_stack
from lmscope.dictionary.train import RunConfig, latest_checkpoint
from lmscope.errors import InputError
from tiny_models import tiny_hooked_with_tokenizer

TEXTS = [f"the cat number {i} sat on the mat and saw {i % 7} birds" + " and more" * (i % 5) for i in range(48)]
KW = {"d_sae": 24, "tokens": 64 * 14, "batch_size": 64, "buffer_tokens": 200, "texts": TEXTS, "seed": 3,
      "text_batch": 8}


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    return tiny_hooked_with_tokenizer(300, n_layer=3)


def _states(run):  # type: ignore[no-untyped-def]
    return {la: d.state_dict() for la, d in run.dictionaries.items()}


def _equal(a, b) -> bool:  # type: ignore[no-untyped-def]
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_parse_layers_and_hooks(model) -> None:  # type: ignore[no-untyped-def]
    assert parse_layers("all", 3) == [0, 1, 2] and parse_layers("2,0", 3) == [0, 2] and parse_layers("1-2", 3) == [1, 2]
    assert parse_layers([2, 2, 1], 3) == [1, 2]
    form = "layers: expected 'all' or comma-separated layers such as 0,3,5 or 2-5, got "
    for bad, message in (("x", form + "'x'"), ("0,7", "layers: expected layers in 0..2, got '0,7'"),
                         ("", form + "''"), ("-1", form + "'-1'")):
        with pytest.raises(InputError, match="^" + re.escape(message) + "$"):
            parse_layers(bad, 3)
    assert stack_hooks(model, "transcoder", [0, 2])[2] == ("blocks.2.ln2.hook_normalized", "blocks.2.hook_mlp_out")
    assert stack_hooks(model, "sae", [0, 1], "blocks.{layer}.hook_resid_mid")[1] == ("blocks.1.hook_resid_mid",) * 2
    assert stack_hooks(model, "sae", [1])[1] == ("blocks.1.hook_resid_post",) * 2
    with pytest.raises(InputError, match=r"^hook: with several layers, give a template with \{layer\}, such as "
                                         r"blocks\.\{layer\}\.hook_resid_mid; got 'blocks\.0\.hook_resid_mid'$"):
        stack_hooks(model, "sae", [0, 1], "blocks.0.hook_resid_mid")
    with pytest.raises(InputError, match=r"^layers: expected layers in 0\.\.3, got '0-1000000000000'$"):
        parse_layers("0-1000000000000", 4)  # refused before any range is built


def test_stream_serves_the_kept_rows_of_one_forward(model) -> None:  # type: ignore[no-untyped-def]
    names = ["blocks.0.ln2.hook_normalized", "blocks.2.hook_mlp_out"]
    stream = StackStream(model, TEXTS, names, batch_size=32, buffer_tokens=10_000, seed=1)
    assert stream.fill_texts == len(TEXTS)  # the whole corpus fits in one fill
    pools = stream.fill(0)
    toks = model.to_tokens(TEXTS)
    _, cache = model.run_with_cache(TEXTS, names=names, return_logits=False)
    mask = toks.attention_mask.bool()
    mask[:, : int(model.prepend_bos)] = False
    for pool, name in zip(pools, names, strict=True):
        want = cache[name][mask]
        assert pool.shape == want.shape
        # the same multiset of rows (the fill batches texts by length: compare sorted by first coordinate)
        assert torch.allclose(pool[pool[:, 0].argsort()], want[want[:, 0].argsort()], atol=1e-5)
    n = pools[0].shape[0]
    order = stream.order(0, n)
    assert order.numel() == n // 32 * 32 and order.unique().numel() == order.numel()  # each row at most once
    served = [rows for rows, _ in _take(stream.batches(), n // 32)]
    assert torch.equal(torch.cat([r[0] for r in served]), pools[0][order])  # same indices for every name
    assert torch.equal(torch.cat([r[1] for r in served]), pools[1][order])
    twice = StackStream(model, TEXTS[:2], names, batch_size=64, buffer_tokens=10, reuse=2)
    small = twice.fill(0)[0].shape[0]
    assert small * 2 < 64 and twice.order(0, small).numel() == 64  # a fill smaller than a batch is tiled


def _take(it, n):  # type: ignore[no-untyped-def]
    return [next(it) for _ in range(n)]


def test_one_layer_alone_equals_that_layer_in_the_stack(model) -> None:  # type: ignore[no-untyped-def]
    stack = train_stack(model, layers=[0, 1, 2], **KW)
    assert stack.steps == 14 and sorted(stack.estimators) == [0, 1, 2]
    for layer in (0, 2):
        alone = train_stack(model, layers=[layer], **KW)
        assert _equal(alone.dictionaries[layer].state_dict(), stack.dictionaries[layer].state_dict())
        assert alone.estimators[layer].history_ == stack.estimators[layer].history_
    assert not torch.equal(stack.dictionaries[0].W_dec, stack.dictionaries[2].W_dec)
    topk = train_stack(model, layers=[1, 2], kind="sae", activation="topk", k=4, **KW)
    alone = train_stack(model, layers=[2], kind="sae", activation="topk", k=4, **KW)
    assert _equal(alone.dictionaries[2].state_dict(), topk.dictionaries[2].state_dict())
    assert topk.dictionaries[1].cfg.hook_name == "blocks.1.hook_resid_post"


class Stop(Exception):
    pass


def test_stopped_stack_resumes_to_the_same_bytes(model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    kw = {**KW, "kind": "sae", "activation": "topk", "k": 3}

    def run(name: str, resume: bool = False) -> RunConfig:
        return RunConfig(out_dir=tmp_path / name, checkpoint_every=4, resume=resume)

    whole = train_stack(model, layers=[0, 2], run=run("a"), **kw)

    def stop(stage: str, i: int, n: int) -> None:
        if i == 10:
            raise Stop

    with pytest.raises(Stop):
        train_stack(model, layers=[0, 2], run=run("b"), progress=stop, **kw)
    ckpt = latest_checkpoint(tmp_path / "b")
    assert ckpt is not None and ckpt.name == "step-00000008.pt"
    resumed = train_stack(model, layers=[0, 2], run=run("b", resume=True), **kw)
    assert resumed.resumed_from == 8
    for la in (0, 2):
        assert _equal(whole.dictionaries[la].state_dict(), resumed.dictionaries[la].state_dict())
        assert [h["step"] for h in resumed.estimators[la].history_] == list(range(14))
        assert resumed.estimators[la].history_ == whole.estimators[la].history_
    last = tmp_path / "b" / "checkpoints" / "step-00000014.pt"  # the resumed run checkpoints its last step
    other = re.escape(f"{last}: a checkpoint of a run with other settings (")
    with pytest.raises(InputError, match="^" + other + r".*; layers: \[0, 2\] -> \[0, 1\]\); rerun with those "
                                         r"settings to resume, or pass --overwrite to start over$"):
        train_stack(model, layers=[0, 1], run=run("b", resume=True), **kw)
    with pytest.raises(InputError, match="^" + other + r"lr: 0\.002 -> 0\.01\); rerun with those settings"):
        train_stack(model, layers=[0, 2], run=run("b", resume=True), **{**kw, "lr": 1e-2})


def test_forward_stops_after_the_last_chosen_layer(model) -> None:  # type: ignore[no-untyped-def]
    calls = [0, 0, 0]
    handles = [block.register_forward_pre_hook(lambda mod, args, i=i: calls.__setitem__(i, calls[i] + 1))
               for i, block in enumerate(model.hf.transformer.h)]
    try:
        train_stack(model, layers=[0, 1], **{**KW, "tokens": 64})
        assert calls[0] > 0 and calls[1] == calls[0] and calls[2] == 0
        head_calls: list[int] = []
        h = model.hf.lm_head.register_forward_hook(lambda *a: head_calls.append(1))
        try:
            train_stack(model, layers=[2], **{**KW, "tokens": 64})
        finally:
            h.remove()
        assert calls[2] > 0 and not head_calls  # the last block runs, the unembedding never
    finally:
        for h in handles:
            h.remove()


def test_torchrun_two_gloo_ranks_train_one_stack(tmp_path: Path) -> None:
    """Under torchrun each rank reads its share of the texts; gradients are summed, so both ranks end with the
    same weights bit for bit, and the one checkpoint records each rank's position in its stream."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = Path(__file__).with_name("stack_script.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           str(script), str(tmp_path)]
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert sorted(a) == [0, 2] and all(_equal(a[la], b[la]) for la in a)
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt is not None and ckpt.name == "step-00000010.pt"
    state = torch.load(ckpt, weights_only=True)
    assert len(state["data"]["positions"]) == 2 and state["stack"]["world"] == 2


def test_default_fill_is_no_larger_than_the_run(model) -> None:  # type: ignore[no-untyped-def]
    """A short run computes about its own tokens, not a default 8,192-row fill (4x the work for 2,048)."""
    kw = {k: v for k, v in KW.items() if k != "buffer_tokens"}
    run = train_stack(model, layers=[0, 2], **kw)
    assert run.settings["buffer_tokens"] == KW["tokens"]
    halved = train_stack(model, layers=[1], **{**kw, "reuse": 2})
    assert halved.settings["buffer_tokens"] == KW["tokens"] // 2
    assert halved.rows_computed < run.rows_computed
