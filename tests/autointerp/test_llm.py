"""The pluggable LLM explainer/simulator, against a local OpenAI-compatible endpoint and a local HF model."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest

from autointerp.planted import planted_corpus
from lmscope.autointerp import HFClient, LLMExplainer, LLMSimulator, OpenAIClient, neuron_records, score_neuron
from lmscope.autointerp.llm import format_record, parse_simulation
from lmscope.errors import InputError


def fake_llm(prompt: str) -> str:
    """A deterministic stand-in for an LLM that follows the prompts: names the most active word, then marks it."""
    if "Explanation of neuron behavior" in prompt:
        totals: dict[str, int] = {}
        for word, act in re.findall(r"^(\S+)\t(\d+)$", prompt, flags=re.M):
            totals[word] = totals.get(word, 0) + int(act)
        return f" the word {max(totals, key=lambda w: totals[w])}\nand nothing else"
    target = re.search(r"Neuron explanation: .*the word (\S+)", prompt).group(1)  # type: ignore[union-attr]
    words = prompt.split("Document (one word per line):\n")[1].split("\n\nActivations:")[0].split("\n")
    return "\n".join(f"{w}\t{10 if w == target else 0}" for w in words)


@pytest.fixture
def endpoint() -> Iterator[tuple[str, list[dict[str, object]]]]:
    seen: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            answer = {"choices": [{"message": {"role": "assistant",
                                               "content": fake_llm(body["messages"][0]["content"])}}]}
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    server.shutdown()


def test_llm_pair_through_an_openai_compatible_endpoint(endpoint, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    url, seen = endpoint
    monkeypatch.setenv("LMSCOPE_TEST_KEY", "sk-test")
    client = OpenAIClient(url, "fake-model", api_key_env="LMSCOPE_TEST_KEY")
    sentences, acts, units = planted_corpus(120)
    records = next(neuron_records(acts[:, :1], sentences, units[:1]))
    score = score_neuron(records, LLMExplainer(client), LLMSimulator(client))
    assert score.explanation.text == "the word cat"
    assert score.top_and_random == pytest.approx(1.0) and score.detection == 1.0
    assert seen[0]["path"] == "/v1/chat/completions" and seen[0]["auth"] == "Bearer sk-test"
    assert seen[0]["body"]["model"] == "fake-model"  # type: ignore[index]
    n_held = len(records.top_score) + len(records.random) + len(records.nonactivating)
    assert len(seen) == 1 + n_held  # one explanation, one simulation per held-out record


def test_unreachable_endpoint_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"^base_url: http://127\.0\.0\.1:9"):
        OpenAIClient("http://127.0.0.1:9/v1", "m", timeout=2).complete("hi")


def test_record_format_and_parsing() -> None:
    from lmscope.autointerp import Record

    rec = Record(0, ("a", "b", "c"), np.array([0.0, 2.0, 1.0]))
    assert format_record(rec, 2.0) == "<start>\na\t0\nb\t10\nc\t5\n<end>"
    np.testing.assert_allclose(parse_simulation("a\t0\nnoise\nb\t10\nc\t15", 4), [0.0, 1.0, 1.0, 0.0])


def test_hf_client_greedy_completion() -> None:
    from lmscope import HookedModel

    client = HFClient("zoo:gpt2-tiny", max_new_tokens=1)
    model = HookedModel.from_pretrained("zoo:gpt2-tiny")
    prompt = "Monday Tuesday Wednesday"
    logits = model(prompt, prepend_bos=False)
    assert client.complete(prompt) == model.tokenizer.decode([int(logits[0, -1].argmax())])


def test_api_key_only_over_https_or_to_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LMSCOPE_TEST_KEY", raising=False)
    OpenAIClient("http://llm.example.com/v1", "m", api_key_env="LMSCOPE_TEST_KEY")  # no key: nothing to leak
    monkeypatch.setenv("LMSCOPE_TEST_KEY", "sk-test")
    with pytest.raises(InputError, match=r"^base_url: http://llm\.example\.com/v1: refusing to send the API key in "
                                         r"\$LMSCOPE_TEST_KEY over plain http to another host; use https"):
        OpenAIClient("http://llm.example.com/v1", "m", api_key_env="LMSCOPE_TEST_KEY")  # refused before any request
    for ok in ("https://llm.example.com/v1", "http://localhost:8000/v1", "http://127.0.0.1:8000/v1",
               "http://[::1]:8000/v1"):
        assert OpenAIClient(ok, "m", api_key_env="LMSCOPE_TEST_KEY")._api_key() == "sk-test"
    with pytest.raises(InputError, match=r"^base_url: file:///etc/passwd: expected an http:// or https:// URL"):
        OpenAIClient("file:///etc/passwd", "m")
