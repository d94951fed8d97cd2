"""The fast local-LM pair: batched cached generation, the all-at-once simulator, the offline baseline beside it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from autointerp.local_lm import save_tiny, tiny_pair
from autointerp.planted import planted_corpus
from cli_runner import run
from lmscope.autointerp import (
    Explanation,
    HFExplainer,
    HFSimulator,
    LocalLM,
    Record,
    neuron_records,
    score_activations,
)
from lmscope.autointerp.local import clean_explanation, format_marked
from lmscope.errors import InputError


@pytest.fixture(scope="module")
def lm() -> LocalLM:
    return LocalLM(tiny_pair(), dtype="float32", batch_size=2)


def _records() -> list[Record]:
    words = [("the", "cat", "sat"), ("a", "dog"), ("w1", "w2", "cat", "w3", "w4", "w5"), ("x",),
             ("the", "cat", "ran", "to", "the", "cat"), ("7", "8", "9")]
    return [Record(i, w, np.zeros(len(w))) for i, w in enumerate(words)]


def _digit_ids(tok) -> list[int]:  # type: ignore[no-untyped-def]
    return [tok(str(d), add_special_tokens=False)["input_ids"][0] for d in range(10)]


@pytest.mark.parametrize("filler", ["\n", "unknown\n"])
def test_batched_simulation_equals_the_per_record_loop(lm: LocalLM, filler: str) -> None:
    sim = HFSimulator(lm, filler=filler, batch_size=4)  # 6 records: two batches of unequal, padded rows
    explanation = Explanation('The neuron fires on the word "cat".')
    records = _records()
    got = sim.simulate(explanation, records)
    prefix = sim.prefix(explanation)
    start = sim.shared_start()  # the prompt start shared by every explanation: its KV cache is reused
    assert len(start) > 100 and prefix[: len(start)] == start and list(lm._kv) == [tuple(start)]
    digits = _digit_ids(lm.tokenizer)
    for rec, pred in zip(records, got, strict=True):
        ids, read = sim.record_ids(rec)
        assert [lm.tokenizer.decode([ids[i]]) for i in read] == ["\t"] * len(rec.words)
        with torch.no_grad():  # the reference: one full forward of prefix + record, no cache, no batch
            logits = lm.hf(torch.tensor([prefix + ids])).logits[0, [len(prefix) + i for i in read]][:, digits]
        expected = (logits.double().softmax(-1) @ torch.arange(10.0, dtype=torch.float64)).numpy() / 9
        assert pred.shape == (len(rec.words),)
        np.testing.assert_allclose(pred, expected, rtol=0, atol=1e-5)


def test_uniform_digits_predict_one_half() -> None:
    model, tok = tiny_pair()
    with torch.no_grad():
        model.lm_head.weight[_digit_ids(tok)] = 0.0  # every digit the same logit: expected digit 4.5 of 9
    sims = HFSimulator(LocalLM((model, tok), dtype="float32")).simulate(Explanation("x"), _records())
    np.testing.assert_allclose(np.concatenate(sims), 0.5, atol=1e-6)


def _greedy_no_cache(model, prompt: list[int], n: int, stops: set[int]) -> list[int]:  # type: ignore[no-untyped-def]
    ids = list(prompt)
    for _ in range(n):
        with torch.no_grad():
            nxt = int(model(torch.tensor([ids]), use_cache=False).logits[0, -1].argmax())
        ids.append(nxt)
        if nxt in stops:
            break
    return ids[len(prompt):]


def test_generation_is_cached_batched_and_equal_to_a_plain_greedy_loop(lm: LocalLM) -> None:
    tok = lm.tokenizer
    prompts = [lm.prompt_ids(u, "The neuron fires on") for u in ("cat dog", "a much longer prompt about w1 w2 w3",
                                                                   "x")]
    lengths: list[int] = []
    handle = lm.hf.model.register_forward_pre_hook(lambda m, args, kw: lengths.append(kw["input_ids"].shape[1]),
                                                   with_kwargs=True)
    try:
        got = lm.generate(prompts, max_new_tokens=6, stop_at_newline=False)  # batch_size 2: a left-padded pair
    finally:
        handle.remove()
    want = [tok.decode(_greedy_no_cache(lm.hf, p, 6, {tok.eos_token_id}), skip_special_tokens=True) for p in prompts]
    assert got == want and all(len(w) > 1 for w in want)
    # with the KV cache only the two prefills (of the batches ["x", "cat dog"] left-padded, and the long one)
    # see more than one token; every decoding step feeds one
    assert [n for n in lengths if n > 1] == [len(prompts[0]), len(prompts[1])] and lengths.count(1) >= 2
    single = LocalLM(lm.model, dtype="float32", batch_size=1)
    assert single.generate(prompts, max_new_tokens=6, stop_at_newline=False) == got  # left padding changes nothing
    assert lm.generate(prompts, max_new_tokens=6) == [w[: w.index("\n") + 1] if "\n" in w else w for w in want]


def test_marked_records_and_their_window() -> None:
    rec = Record(0, ("the", "cat", "sat"), np.array([0.0, 2.0, 1.2]))
    assert format_marked(rec, 2.0) == "the [[cat:9]] [[sat:5]]"  # 0.6 * 9 = 5.4 -> 5
    long = Record(0, tuple(f"w{i}" for i in range(40)), np.where(np.arange(40) == 30, 1.0, 0.0))
    assert format_marked(long, 1.0, max_words=8) == " ".join([*(f"w{i}" for i in range(24, 30)), "[[w30:9]]",
                                                              "w31"])


def test_explanations_are_one_clean_sentence() -> None:
    assert clean_explanation('The neuron fires on the word "[[Mon:9]]". The sentence is\nmore') == \
        'The neuron fires on the word "Mon".'
    assert clean_explanation("The neuron fires on dates 3.5 and 10:30 times") == \
        "The neuron fires on dates 3.5 and 10:30 times"  # no sentence end: kept whole; 10:30 is not markup
    assert clean_explanation("The neuron fires on commas, 9:9 pairs!  Then") == "The neuron fires on commas, 9 pairs!"


def test_explain_many_batches_units_and_skips_dead_ones(lm: LocalLM) -> None:
    sentences, acts, units = planted_corpus(60)
    recs = list(neuron_records(acts[:, :4], sentences, units[:4]))  # cat, the-cat, dead, graded
    ex = HFExplainer(lm, max_new_tokens=5)
    calls: list[int] = []
    generate = lm.generate
    lm.generate = lambda prompts, *a, **k: (calls.append(len(prompts)), generate(prompts, *a, **k))[1]  # type: ignore[method-assign]
    try:
        many = ex.explain_many([(r.explanation_records(), r.max_activation) for r in recs])
    finally:
        del lm.generate
    assert calls == [3]  # one batched generation for the three live units; the dead one is not asked
    assert many[2] == Explanation("never activates")
    for i in (0, 1, 3):  # the answer's first line after the prefilled "The neuron fires on"
        answer = lm.generate([ex.prompt(recs[i].explanation_records(), recs[i].max_activation)], 5)[0].strip()
        assert many[i].text == clean_explanation(f"The neuron fires on {answer}")
    assert [ex.explain(r.explanation_records(), r.max_activation) for r in recs] == many


def test_scoring_with_the_hf_pair_keeps_the_offline_baseline_and_reports_progress(lm: LocalLM) -> None:
    sentences, acts, units = planted_corpus(60)
    seen: list[tuple[str, int, int]] = []
    hf = score_activations(acts[:, :5], sentences, units[:5], explainer=HFExplainer(lm, max_new_tokens=4),
                           simulator=HFSimulator(lm), progress=lambda i, n: seen.append(("unit", i, n)),
                           unit_batch=2, explain_progress=lambda i, n: seen.append(("explained", i, n)))
    offline = score_activations(acts[:, :5], sentences, units[:5])
    assert seen == [("explained", 2, 5), ("unit", 1, 5), ("unit", 2, 5), ("explained", 4, 5), ("unit", 3, 5),
                    ("unit", 4, 5), ("explained", 5, 5), ("unit", 5, 5)]
    rows, plain = hf.rows("p"), offline.rows("p")
    for row, base in zip(rows, plain, strict=True):
        for m in ("top_and_random", "random_only", "detection"):
            assert row[f"offline_{m}"] == pytest.approx(base[m], nan_ok=True)
        assert row["offline_explanation"] == base["explanation"]
        assert row["explanation"]["text"].startswith("The neuron fires on") or row["unit"] == "dead"
    assert np.isnan(rows[2]["top_and_random"]) and "offline_top_and_random" not in plain[0]


def test_bad_settings_are_input_errors() -> None:
    with pytest.raises(InputError, match=r"^dtype: expected bfloat16 or float32, got 'float16'"):
        LocalLM("x", dtype="float16")
    with pytest.raises(InputError, match=r"^batch_size: expected a positive integer, got 0"):
        LocalLM("x", batch_size=0)
    with pytest.raises(InputError, match="filler must not contain a tab"):
        HFSimulator(LocalLM("x"), filler="\t")
    with pytest.raises(InputError, match="batch_size must be a positive integer, got 0"):
        HFSimulator(LocalLM("x"), batch_size=0)
    with pytest.raises(InputError, match="expected positive max_records"):
        HFExplainer(LocalLM("x"), max_records=0)


def test_cli_hf_explainer_prints_progress_and_both_scores(capsys: pytest.CaptureFixture[str],
                                                          tmp_path: Path) -> None:
    from lmscope.data.tokenizer import save_tokenizer
    from tiny_models import tiny_hooked_with_tokenizer

    m = tiny_hooked_with_tokenizer(300)
    m.hf.save_pretrained(tmp_path / "m")
    save_tokenizer(m.tokenizer, tmp_path / "m")
    (tmp_path / "docs.txt").write_text("the shop was open on Monday\nit rained all day and the road was wet\n" * 8)
    llm = save_tiny(tmp_path / "llm")
    code, out, err = run(capsys, "autointerp", "score", "--model", str(tmp_path / "m"), "--corpus",
                         str(tmp_path / "docs.txt"), "--points", "blocks.0.mlp.hook_post", "--units-per-point", "3",
                         "--explainer", "hf", "--llm-model", str(llm), "--llm-dtype", "float32",
                         "--llm-batch-size", "2", "--out", str(tmp_path / "r"))
    assert code == 0, err
    assert "loading the explainer: 1/1" in err and "scoring blocks.0.mlp.hook_post: 3/3" in err
    assert "scoring blocks.0.mlp.hook_post, explanations: 3/3" in err
    assert "blocks.0.mlp.hook_post (hf): top_and_random" in out and "all (offline): top_and_random" in out
    saved = json.loads((tmp_path / "r" / "result.json").read_text())
    assert saved["explainer"] == saved["simulator"] == "hf"
    assert saved["config"]["llm_model"] == str(llm) and saved["config"]["llm_dtype"] == "float32"
    assert "offline_top_and_random" in saved["summary"]["all"] and len(saved["units"]) == 3
    assert all("offline_detection" in u for u in saved["units"])


def test_cli_hf_explainer_on_a_store(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from lmscope.activations import ExtractConfig, extract
    from lmscope.data.synthetic import generate_corpus
    from tiny_models import tiny_hooked_with_tokenizer

    samples = generate_corpus(40, seed=8)
    extract(tiny_hooked_with_tokenizer(300), [list(s.words) for s in samples], tmp_path / "store",
            ExtractConfig(("blocks.0.mlp.hook_post",)))
    code, out, err = run(capsys, "autointerp", "score", str(tmp_path / "store"), "--units-per-point", "2",
                         "--explainer", "hf", "--llm-model", str(save_tiny(tmp_path / "llm")), "--out",
                         str(tmp_path / "r"), "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["explainer"] == "hf" and shown["config"]["llm_dtype"] == "bfloat16"
    assert {"top_and_random", "offline_top_and_random", "offline_detection"} <= set(shown["summary"]["all"])
    units = json.loads((tmp_path / "r" / "result.json").read_text())["units"]
    assert len(units) == 2 and all(u["explanation"]["text"].startswith("The neuron fires on") for u in units)


@pytest.mark.parametrize(("extra", "message"), [
    (["--llm-dtype", "float16", "--explainer", "hf", "--llm-model", "m"], "--llm-dtype: expected bfloat16 or"),
    (["--llm-batch-size", "0", "--explainer", "hf", "--llm-model", "m"],
     "--llm-batch-size: expected an integer in 1..2147483647, got 0"),
    (["--llm-dtype", "float32"], "--llm-dtype: applies with --explainer hf"),
    (["--llm-model", "m"], "--llm-model: applies with --explainer openai or hf"),
    (["--explainer", "hf", "--llm-model", "m", "--llm-url", "http://localhost:1/v1"], "--llm-url: applies with"),
    (["--explainer", "hf", "--llm-model", "/no/such/dir"], "no such directory"),
])
def test_cli_bad_llm_flags(capsys: pytest.CaptureFixture[str], tmp_path: Path, extra: list[str], message: str) -> None:
    code, out, err = run(capsys, "autointerp", "score", "--model", "zoo:gpt2-tiny", "--points",
                         "blocks.0.mlp.hook_post", "--out", str(tmp_path / "r"), *extra)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and out == "", err
    assert not (tmp_path / "r").exists()
