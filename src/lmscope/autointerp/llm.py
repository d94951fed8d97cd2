"""LLM explainers and simulators (the pluggable half of autointerp), after Bills et al. (2023).

An `LLMClient` turns a prompt into a completion: `OpenAIClient` talks to any OpenAI-compatible
`/chat/completions` endpoint the user configures (a local vLLM or llama.cpp server, or a hosted API; the
key is read from an environment variable, never stored), `HFClient` runs a local Hugging Face causal LM.
`LLMExplainer` shows the model records as "word<TAB>activation (0-10)" lines and asks what the neuron
does; `LLMSimulator` asks it to write, for each word of a record, the activation the explanation predicts.
Nothing here is used unless asked for: the offline pair is the default.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from lmscope.autointerp.explain import Explanation, normalized
from lmscope.autointerp.records import Record
from lmscope.errors import InputError

EXPLAIN_PROMPT = (
    "We're studying neurons in a neural network. Each neuron looks for some particular thing in a short "
    "document. Look at the parts of the document the neuron activates for and summarize in a single sentence "
    "what the neuron is looking for. Activations are given per word on a 0-10 scale.\n\n{records}\n"
    "Explanation of neuron behavior: the main thing this neuron does is find"
)
SIMULATE_PROMPT = (
    "We're studying neurons in a neural network. Each neuron looks for some particular thing in a short "
    "document. Given an explanation of what a neuron does, predict its activation on each word of the "
    "document on a 0-10 scale. Answer with exactly one line per word, in order, as 'word<TAB>activation'.\n\n"
    "Neuron explanation: {explanation}\n\nDocument (one word per line):\n{words}\n\nActivations:\n"
)
_LINE = re.compile(r"^(.*)\t\s*(-?\d+(?:\.\d+)?)\s*$")


class LLMClient(Protocol):
    """Anything that completes a prompt."""

    def complete(self, prompt: str) -> str: ...


class OpenAIClient:
    """An OpenAI-compatible chat endpoint, e.g. `http://localhost:8000/v1` (vLLM) or a hosted API."""

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", max_tokens: int = 512,
                 temperature: float = 0.0, timeout: float = 120.0) -> None:
        self.base_url = base_url
        self.model = model
        self.api_key_env = api_key_env
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.timeout = timeout
        self._api_key()  # checked now, before any work: a key is never sent in clear text to another host

    def _api_key(self) -> str | None:
        """The API key from `api_key_env`, if set, once the URL is known to be safe to send it to: over https,
        or plain http only to this machine (localhost, 127.0.0.1, ::1). Other schemes are refused outright."""
        parts = urllib.parse.urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputError(f"base_url: {self.base_url}: expected an http:// or https:// URL", arg="base_url")
        key = os.environ.get(self.api_key_env)
        if key and parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
            raise InputError(f"base_url: {self.base_url}: refusing to send the API key in ${self.api_key_env} "
                             "over plain http to another host; use https (or unset the variable)", arg="base_url")
        return key

    def complete(self, prompt: str) -> str:
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": prompt}],
                           "max_tokens": self.max_tokens, "temperature": self.temperature}).encode()
        headers = {"Content-Type": "application/json"}
        key = self._api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        url = self.base_url.rstrip("/") + "/chat/completions"
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload: dict[str, Any] = json.loads(response.read().decode())
            return str(payload["choices"][0]["message"]["content"])
        except (urllib.error.URLError, OSError) as err:
            raise InputError(f"base_url: {self.base_url}: request failed ({err})", arg="base_url") from None
        except (KeyError, IndexError, TypeError, json.JSONDecodeError) as err:
            raise InputError(f"base_url: {self.base_url}: not an OpenAI-compatible chat answer ({err})",
                             arg="base_url") from None


class HFClient:
    """A local Hugging Face causal LM as an `LLMClient`: greedy decoding with the KV cache (`LocalLM.generate`),
    its chat template when it has one. The fast hf pair is `HFExplainer`/`HFSimulator` (`lmscope.autointerp.local`);
    this client serves the generic prompts of `LLMExplainer`/`LLMSimulator`."""

    def __init__(self, model: str, max_new_tokens: int = 256, trust_remote_code: bool = False,
                 dtype: str = "float32") -> None:
        from lmscope.autointerp.local import LocalLM

        self.model = model
        self.max_new_tokens = max_new_tokens
        self.lm = LocalLM(model, dtype=dtype, trust_remote_code=trust_remote_code, batch_size=1)

    def complete(self, prompt: str) -> str:
        tok = self.lm.tokenizer
        ids = self.lm.prompt_ids(prompt) if getattr(tok, "chat_template", None) else tok(prompt)["input_ids"]
        return self.lm.generate([ids], self.max_new_tokens, stop_at_newline=False)[0]


def format_record(record: Record, max_activation: float) -> str:
    """A record as "<start>", one "word<TAB>activation" line per word (0-10 integers), "<end>"."""
    scaled = np.rint(normalized(record, max_activation) * 10).astype(int)
    return "\n".join(["<start>", *(f"{w}\t{a}" for w, a in zip(record.words, scaled, strict=True)), "<end>"])


def parse_simulation(text: str, n_words: int) -> np.ndarray:
    """Activations (0-1) from "word<TAB>activation" lines, in order; missing or unreadable lines are 0."""
    values = [float(m.group(2)) for line in text.splitlines() if (m := _LINE.match(line.strip("\r")))]
    out = np.zeros(n_words)
    out[: min(n_words, len(values))] = values[:n_words]
    return np.clip(out / 10.0, 0.0, 1.0)


class LLMExplainer:
    """Asks an LLM for a one-sentence explanation of a neuron from its records (at most `max_records`)."""

    name = "llm"

    def __init__(self, client: LLMClient, max_records: int = 10) -> None:
        self.client = client
        self.max_records = max_records

    def explain(self, records: Sequence[Record], max_activation: float) -> Explanation:
        if max_activation <= 0 or not records:
            return Explanation("never activates")
        shown = "\n\n".join(format_record(r, max_activation) for r in records[: self.max_records])
        answer = self.client.complete(EXPLAIN_PROMPT.format(records=shown)).strip()
        return Explanation(answer.splitlines()[0].strip() if answer else "")


class LLMSimulator:
    """Asks an LLM to predict each word's activation (0-10) from an explanation, one record per prompt."""

    name = "llm"

    def __init__(self, client: LLMClient) -> None:
        self.client = client

    def simulate(self, explanation: Explanation, records: Sequence[Record]) -> list[np.ndarray]:
        out = []
        for rec in records:
            prompt = SIMULATE_PROMPT.format(explanation=explanation.text, words="\n".join(rec.words))
            out.append(parse_simulation(self.client.complete(prompt), len(rec.words)))
        return out
