"""A local Hugging Face LM as a fast explainer and an "all at once" simulator (Bills et al. 2023), on CPU.

Running SmolLM2-135M-Instruct the naive way (one unbatched `generate` of hundreds of tokens per explanation
and per record) did not finish 4 units in 10 minutes on 2 cores. Here the same model scores 64 units of
zoo:gpt2-tiny with 216 CPU-seconds in all (8.6 minutes wall on 2 cores shared at load 12), with three changes:

- `LocalLM.generate`: greedy decoding with the KV cache (`use_cache=True`), prompts of several units batched
  with left padding, a short `max_new_tokens`, and a stop at the first newline (an explanation is one line).
- `HFExplainer`: a compact prompt. Each record is one line of words with the words the unit fires on marked
  `[[word:N]]` (N its activation on a 0-9 scale), cut to a window of `max_words` around its peak; the
  assistant's answer is prefilled ("The neuron fires on") so the model writes only the explanation, of
  which the first sentence is kept.
- `HFSimulator`: Bills et al.'s all-at-once simulator. Every record is written as one line per word,
  `word<TAB>` and a newline (Bills et al. put "unknown" between them); one forward pass over all records
  (batched; the prompt with the explanation computed once and its KV cache repeated over the batch, and the
  prompt's start, the same for every unit, computed once for all units) gives at the TAB of every word the
  model's distribution over the next token; restricted to the digit tokens 0-9 and renormalised, its
  expected value / 9 is the predicted activation (0 to 1). No token is generated.

Positions are read in the same places as a per-record loop over `prefix + record` would read them, so the
batched forward equals that loop to float tolerance (tested).
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from lmscope.autointerp.explain import Explanation, normalized
from lmscope.autointerp.records import Record
from lmscope.errors import InputError, bad_argument

DIGITS = tuple(str(d) for d in range(10))
EXPLAIN_SYSTEM = (
    "We're studying neurons in a neural network. Each neuron looks for one particular thing in a short document. "
    "You see documents, one per line, where the neuron fires; each word it fires on is in double brackets with the "
    "neuron's activation from 1 to 9. Say in one short phrase what the neuron is looking for."
)
EXPLAIN_ANSWER = "The neuron fires on"
SIMULATE_PROMPT = (
    "We're studying neurons in a neural network. A neuron's behaviour is explained as: \"{explanation}\" "
    "For each word of a document, predict the neuron's activation from 0 (none) to 9 (strongest), one line "
    "per word as 'word<TAB>activation'."
)
SIMULATE_EXAMPLE = (SIMULATE_PROMPT.format(explanation=f'{EXPLAIN_ANSWER} the word "dog".'),
                    "the\t0\nbig\t0\ndog\t9\nran\t0\nto\t0\na\t0\ndog\t9\n")
"""A one-shot example (a user turn and the assistant's answer) before the real explanation: with it a 135M
model's simulation follows the explanation (on a planted "cat" neuron: r 0.68 with the right explanation, 0.46
with a wrong one; without it 0.28 and 0.29, the explanation ignored; with the instructions in a system turn
instead of each user turn, 0.45 and 0.34). The explainer has no example: the same model copies the example's
answer for every unit."""
Progress = Callable[[str, int, int], None]


class LocalLM:
    """A local HF causal LM, loaded once (`model`: what `load_hf` reads, or an `(hf_model, tokenizer)` pair).

    `dtype` "bfloat16" halves memory traffic and runs the matmuls ~2.5x faster on CPUs with AVX-512 BF16;
    "float32" gives reference numbers. With a chat template, prompts are user turns and the answer is the
    assistant's turn; without one they are plain text.
    """

    def __init__(self, model: str | tuple[Any, Any], *, dtype: str = "bfloat16", trust_remote_code: bool = False,
                 batch_size: int = 8) -> None:
        if dtype not in ("bfloat16", "float32"):  # the CLI names it --llm-dtype (its FLAGS table)
            raise bad_argument("dtype", "bfloat16 or float32", dtype)
        if not isinstance(batch_size, int) or batch_size < 1:  # no `arg`: the CLI checks --llm-batch-size itself
            raise InputError(f"batch_size: expected a positive integer, got {batch_size!r}")
        self.model = model
        self.dtype = dtype
        self.trust_remote_code = trust_remote_code
        self.batch_size = batch_size
        self._hf: Any = None
        self._tok: Any = None
        self._kv: dict[tuple[int, ...], Any] = {}  # the KV cache of one shared prompt start, computed once

    @property
    def name(self) -> str:
        return self.model if isinstance(self.model, str) else type(self.model[0]).__name__

    def load(self, progress: Progress | None = None) -> LocalLM:
        """Load the model now (the CLI does so before any scoring, so a bad model fails first)."""
        if self._hf is not None:
            return self
        if isinstance(self.model, str):
            from lmscope.model.loading import load_hf

            hf, tok, _ = load_hf(self.model, dtype=getattr(torch, self.dtype), trust_remote_code=self.trust_remote_code,
                                 progress=(lambda i, n: progress(f"loading {self.model}", i, n)) if progress else None)
        else:
            hf, tok = self.model
        self._hf, self._tok = hf.eval(), tok
        return self

    @property
    def hf(self) -> Any:
        return self.load()._hf

    @property
    def tokenizer(self) -> Any:
        return self.load()._tok

    def _pad_id(self) -> int:
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return int(pad) if pad is not None else 0

    def prompt_ids(self, user: str, answer: str = "", example: tuple[str, str] | None = None,
                   system: str | None = None) -> list[int]:
        """Token ids of an optional `system` turn (the instructions), an optional one-shot `example` (user turn,
        answer), a user turn and the start of the assistant's answer: in the chat template when the tokenizer
        has one, else as plain lines."""
        tok = self.tokenizer
        turns = [*(({"role": "system", "content": system},) if system else ()),
                 *(({"role": "user", "content": example[0]}, {"role": "assistant", "content": example[1]})
                   if example else ()), {"role": "user", "content": user}]
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
            return [*tok(text, add_special_tokens=False)["input_ids"], *self.piece(answer)]
        return list(tok("\n".join(t["content"].rstrip("\n") for t in turns) + "\n" + answer)["input_ids"])

    def piece(self, text: str) -> list[int]:
        """Ids of a piece of text on its own (no special tokens), for prompts built piece by piece."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int = 24,
                 stop_at_newline: bool = True) -> list[str]:
        """Greedy completions of token-id prompts: batched (`batch_size`, similar lengths together, left padding),
        with the KV cache, at most `max_new_tokens` each, stopping at EOS (and at a newline if asked)."""
        hf, tok = self.hf, self.tokenizer
        pad = self._pad_id()
        eos = hf.generation_config.eos_token_id if hf.generation_config.eos_token_id is not None else tok.eos_token_id
        stops = [int(t) for t in ([] if eos is None else [eos] if isinstance(eos, int) else eos)]
        if stop_at_newline:
            stops += [t for t in self.piece("\n")[-1:] if t not in stops]
        order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
        out: list[str] = [""] * len(prompts)
        device = next(hf.parameters()).device
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            width = max(len(prompts[i]) for i in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                n = len(prompts[i])
                ids[row, width - n:] = torch.as_tensor(list(prompts[i]), dtype=torch.long)
                mask[row, width - n:] = 1
            with torch.inference_mode():
                gen = hf.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                  max_new_tokens=max_new_tokens, use_cache=True, pad_token_id=pad,
                                  eos_token_id=stops or None, num_beams=1)
            for row, i in enumerate(chunk):
                out[i] = str(tok.decode(gen[row, width:], skip_special_tokens=True))
        return out

    def _digit_head(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Rows of the unembedding (and bias) for the digit tokens 0-9, each of which must be one token."""
        ids = [self.piece(d) for d in DIGITS]
        if any(len(i) != 1 for i in ids):
            raise InputError(f"model {self.name}: its tokenizer does not have one token per digit 0-9, which "
                             "the all-at-once simulator reads")
        head = self.hf.get_output_embeddings()
        index = torch.as_tensor([i[0] for i in ids], device=head.weight.device)
        bias = getattr(head, "bias", None)
        return head.weight[index], (bias[index] if bias is not None else None)

    def _prefix_cache(self, prefix: Sequence[int], shared: int, forward: Callable[..., Any]) -> Any:
        """The KV cache of `prefix`, reusing the cached one of its first `shared` tokens (computed once)."""
        shared = min(shared, len(prefix) - 1)
        cache = None
        if shared > 0:
            key = tuple(prefix[:shared])
            if key not in self._kv:
                self._kv = {key: forward(list(key), None, 0)}
            cache = copy.deepcopy(self._kv[key])
        return forward(list(prefix[max(shared, 0):]), cache, max(shared, 0))

    def digit_expectations(self, prefix: Sequence[int], rows: Sequence[tuple[Sequence[int], Sequence[int]]],
                           batch_size: int = 16, shared: int = 0) -> list[np.ndarray]:
        """For each row `(ids, read)`: the expected digit (0-9) of the model's next-token distribution, restricted
        to the digit tokens, at positions `read` of `prefix + ids`. The prefix runs once (its first `shared`
        tokens, a prompt start common to many calls, once for all of them); its KV cache is repeated over each
        batch of rows (rows of similar length together, right-padded: causal attention keeps padding out of
        every read)."""
        hf = self.hf
        device = next(hf.parameters()).device
        weight, bias = self._digit_head()
        base = hf.base_model
        cache_arg = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        cap = getattr(hf.config, "final_logit_softcapping", None)
        scale = torch.arange(10, dtype=torch.float32, device=device)
        with torch.inference_mode():
            def forward(ids: list[int], cache: Any, start: int) -> Any:
                pos = torch.arange(start, start + len(ids), device=device)[None]
                out = base(input_ids=torch.as_tensor([ids], dtype=torch.long, device=device), position_ids=pos,
                           use_cache=True, **({cache_arg: cache} if cache is not None else {}))
                return out.cache if getattr(out, "cache", None) is not None else out.past_key_values

            prefix_cache = self._prefix_cache(prefix, shared, forward)
            out: list[np.ndarray] = [np.zeros(0)] * len(rows)
            order = sorted(range(len(rows)), key=lambda i: (len(rows[i][0]), i))
            for start in range(0, len(order), batch_size):
                chunk = [rows[i] for i in order[start:start + batch_size]]
                width = max(len(ids) for ids, _ in chunk)
                ids = torch.full((len(chunk), width), self._pad_id(), dtype=torch.long, device=device)
                for r, (row_ids, _) in enumerate(chunk):
                    ids[r, :len(row_ids)] = torch.as_tensor(list(row_ids), dtype=torch.long)
                cache = copy.deepcopy(prefix_cache)
                cache.batch_repeat_interleave(len(chunk))
                positions = torch.arange(len(prefix), len(prefix) + width, device=device).expand(len(chunk), -1)
                mask = torch.ones((len(chunk), len(prefix) + width), dtype=torch.long, device=device)
                hidden = base(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                              **{cache_arg: cache}).last_hidden_state
                for r, (i, (_, read)) in enumerate(zip(order[start:start + batch_size], chunk, strict=True)):
                    h = hidden[r, torch.as_tensor(list(read), dtype=torch.long, device=device)]
                    logits = torch.nn.functional.linear(h, weight, bias).float()
                    if cap:
                        logits = torch.tanh(logits / cap) * cap
                    out[i] = (logits.softmax(-1) @ scale).cpu().numpy().astype(np.float64)
        return out


def _scaled(record: Record, max_activation: float) -> np.ndarray:
    return np.rint(normalized(record, max_activation) * 9).astype(int)


def format_marked(record: Record, max_activation: float, max_words: int = 32) -> str:
    """A record as one line: words joined by spaces, each word the unit fires on (0-9 scale >= 1) marked
    `[[word:N]]`; records longer than `max_words` are cut to a window around their peak."""
    scaled = _scaled(record, max_activation)
    words = list(record.words)
    if len(words) > max_words:
        peak = int(np.argmax(record.activations))
        start = min(max(0, peak - (3 * max_words) // 4), len(words) - max_words)
        words, scaled = words[start:start + max_words], scaled[start:start + max_words]
    return " ".join(f"[[{w}:{a}]]" if a > 0 else w for w, a in zip(words, scaled, strict=True))


def clean_explanation(text: str) -> str:
    """An answer's first line and first sentence, with the record markup (`[[`, `]]`, `:N`) it copied removed:
    small models go on after the phrase asked for, and the simulator should read "Mon", not "[[Mon:9]]"."""
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    line = re.sub(r"(\S):\d\b", r"\1", line.replace("[[", "").replace("]]", ""))
    end = re.search(r"[.!?](\s|$)", line)
    return line[: end.start() + 1] if end else line


class HFExplainer:
    """Explanations from a local LM: marked records (at most `max_records`) in, one phrase out (see module doc).

    `explain_many` explains several units in one batched generation; `explain` is it for one unit.
    """

    name = "hf"

    def __init__(self, lm: LocalLM, max_records: int = 6, max_words: int = 24, max_new_tokens: int = 16) -> None:
        if max_records < 1 or max_words < 1 or max_new_tokens < 1:
            raise InputError(f"HFExplainer: expected positive max_records, max_words and max_new_tokens, got "
                             f"{max_records}, {max_words}, {max_new_tokens}")
        self.lm = lm
        self.max_records = max_records
        self.max_words = max_words
        self.max_new_tokens = max_new_tokens

    def prompt(self, records: Sequence[Record], max_activation: float) -> list[int]:
        """The prompt's token ids: the instructions (system turn), the marked records, and the prefilled answer."""
        shown = "\n".join(format_marked(r, max_activation, self.max_words) for r in records[: self.max_records])
        return self.lm.prompt_ids(shown, EXPLAIN_ANSWER, system=EXPLAIN_SYSTEM)

    def explain_many(self, units: Sequence[tuple[Sequence[Record], float]]) -> list[Explanation]:
        """One explanation per `(records, max_activation)`; units that never activate are not asked about."""
        asked = [i for i, (recs, peak) in enumerate(units) if peak > 0 and recs]
        answers = self.lm.generate([self.prompt(*units[i]) for i in asked], self.max_new_tokens)
        out = [Explanation("never activates") for _ in units]
        for i, answer in zip(asked, answers, strict=True):
            out[i] = Explanation(clean_explanation(f"{EXPLAIN_ANSWER} {answer.strip()}"))
        return out

    def explain(self, records: Sequence[Record], max_activation: float) -> Explanation:
        return self.explain_many([(records, max_activation)])[0]


class HFSimulator:
    """Bills et al.'s all-at-once simulator on a local LM: one batched forward per set of records, no generation.

    Each record is written after the shared prompt (a one-shot example, the instructions, the explanation) as
    `word<TAB>{filler}` per word: `filler` "\n" by default (3 tokens a word for one-token words; Bills et al.
    wrote "unknown\n", 4 tokens and no better on a planted neuron); the prediction for a word is read at its
    TAB. Words are tokenized piece by piece, so a read position never depends on its neighbours.
    """

    name = "hf"

    def __init__(self, lm: LocalLM, filler: str = "\n", batch_size: int = 8) -> None:
        if "\t" in filler:
            raise InputError(f"HFSimulator: filler must not contain a tab, got {filler!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"HFSimulator: batch_size must be a positive integer, got {batch_size!r}")
        self.lm = lm
        self.filler = filler
        self.batch_size = batch_size
        self._start: list[int] | None = None

    def shared_start(self) -> list[int]:
        """The prompt tokens every explanation's prefix starts with (the common start of two prefixes, less one
        token in case the explanation's first characters merge with it); its KV cache is computed once."""
        if self._start is None:
            a, b = self.prefix(Explanation("a")), self.prefix(Explanation("b"))
            n = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
            self._start = a[: max(n - 1, 0)]
        return self._start

    def prefix(self, explanation: Explanation) -> list[int]:
        """The shared prompt: the one-shot example, then the instructions with the explanation."""
        return self.lm.prompt_ids(SIMULATE_PROMPT.format(explanation=explanation.text), example=SIMULATE_EXAMPLE)

    def record_ids(self, record: Record) -> tuple[list[int], list[int]]:
        """A record's token ids after the prefix, and the position of every word's TAB in them."""
        ids: list[int] = []
        read: list[int] = []
        tail = self.lm.piece(self.filler)
        for word in record.words:
            ids += self.lm.piece(f"{word}\t")
            read.append(len(ids) - 1)
            ids += tail
        return ids, read

    def simulate(self, explanation: Explanation, records: Sequence[Record]) -> list[np.ndarray]:
        if not records:
            return []
        rows = [self.record_ids(r) for r in records]
        prefix, start = self.prefix(explanation), self.shared_start()
        shared = len(start) if prefix[: len(start)] == start else 0
        expected = self.lm.digit_expectations(prefix, rows, self.batch_size, shared)
        return [e / 9.0 for e in expected]
