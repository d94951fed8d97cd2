"""More reached refusals (see test_raises.py): plain calls, and those that need a model of a particular kind
(a soft-capped Gemma 2, a word-level tokenizer without the task words). One `InputError` line each."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from refusals import refused


def _word_level() -> Any:
    """A word-level tokenizer that splits on whitespace: a word of spaces gets no token."""
    from heads.tiny_tokenizers import word_level

    return word_level()


def _tensor_source() -> Any:
    from lmscope.dictionary.train import TensorSource

    x = torch.zeros(6, 4)
    return TensorSource(x, x, 3, 0, 0, 2)


def _zoo_build() -> Any:
    from lmscope.model.zoo import ZooSpec, build

    return build(ZooSpec("nothing", "abacus", {}), 61, 0)


PLAIN = [
    ("parse-layers-list-out-of-range", lambda: __import__("lmscope.dictionary.multi", fromlist=["x"]).parse_layers(
        [0, 7], 2), r"^layers: expected layers in 0\.\.1, got \[0, 7\]"),
    ("transcoder-score-no-Y", lambda: __import__("lmscope.dictionary.estimators", fromlist=["x"]).Transcoder(
        8).score(torch.zeros(4, 3)), r"^Y: a Transcoder is scored against targets Y"),
    ("tensor-source-world", _tensor_source, r"^batch_size:? 3 is not divisible by the 2 torchrun processes"),
    ("encode-words-no-token", lambda: __import__("lmscope.activations.align", fromlist=["x"]).encode_words(
        _word_level(), [["Monday", " ", "Tuesday"]]), r"^sentence 'Monday   Tuesday': some word got no token"),
    ("read-lines-name-too-long", lambda: __import__("lmscope.data.lines", fromlist=["x"]).read_lines("x" * 5000),
     r"^x+: cannot read \(File name too long\)"),
    ("zoo-family", _zoo_build, r"^zoo family 'abacus': not buildable"),
]


@pytest.mark.parametrize(("call", "words"), [pytest.param(f, w, id=i) for i, f, w in PLAIN])
def test_plain_refusals(call: Callable[[], Any], words: str) -> None:
    refused(call, words)


def test_succession_refuses_a_tokenizer_without_the_task_words() -> None:
    from heads.tiny_tokenizers import tiny_llama, word_level
    from lmscope import HookedModel
    from lmscope.data.synthetic import SUCCESSION_TASKS
    from lmscope.heads import succession_scores

    tok = word_level(missing=tuple(SUCCESSION_TASKS["days"]))
    model = HookedModel(tiny_llama(len(tok)), tok)
    refused(lambda: succession_scores(model, tasks=["days"]),
             r"^tasks: no item of days is a single token of this tokenizer \(\d+ map to its unknown token\)")


def test_heads_in_the_wild_refuses_soft_capped_logits(tmp_path: Path) -> None:
    from transformers import Gemma2Config, Gemma2ForCausalLM

    from lmscope import HookedModel
    from lmscope.heads.wild import heads_in_the_wild

    torch.manual_seed(0)
    cfg = Gemma2Config(vocab_size=61, hidden_size=32, intermediate_size=48, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=8, max_position_embeddings=64, num_hidden_layers=2,
                       final_logit_softcapping=3.0, bos_token_id=2, eos_token_id=1, pad_token_id=0)
    model = HookedModel(Gemma2ForCausalLM(cfg).eval(), None, name="tiny-gemma2")
    refused(lambda: heads_in_the_wild(model, ["a b"]),
             r"^model: tiny-gemma2 soft-caps its logits, so a head's direct effect is not linear")


@pytest.fixture(scope="module")
def hooked() -> Any:
    from tiny_models import tiny_hooked_with_tokenizer

    return tiny_hooked_with_tokenizer(300)


def test_vector_arithmetic_refuses_when_no_item_can_be_edited(hooked: Any) -> None:
    from types import SimpleNamespace

    from lmscope.heads.arithmetic import vector_arithmetic

    mod10 = SimpleNamespace(settings={}, directions=torch.zeros(10, 32), scales=torch.ones(10))
    refused(lambda: vector_arithmetic(hooked, mod10, layer=0, head=0, tasks=["days"], from_residue=8,  # type: ignore[arg-type]
                                       to_residue=9),
             r"^tasks: no valid edit \(no task item has the residue to edit and a successor after it\)")


def test_circuit_expand_refuses_a_leaf(hooked: Any) -> None:
    from lmscope.circuits.trace import CircuitTrace, Node
    from lmscope.dictionary import DictConfig, Dictionary

    tc = Dictionary(DictConfig(kind="transcoder", d_in=32, d_sae=8, d_out=32, hook_name="blocks.0.ln2.hook_normalized",
                               hook_name_out="blocks.0.hook_mlp_out"))
    trace = CircuitTrace(hooked, {0: tc}, "after Monday comes")
    refused(lambda: trace.expand(Node("embed", pos=1), None),  # type: ignore[arg-type]
             r"^node \S+: only features and heads have inputs to trace")


def test_add_bos_template_refuses_a_tokenizer_that_ignores_it() -> None:
    from lmscope.model.inputs import add_bos_template

    class Plain:
        """Has a BOS token but never adds it, whatever add_bos_token says (a slow tokenizer's shape)."""

        bos_token_id, eos_token_id, all_special_ids = 1, 2, [1, 2]

        def __call__(self, text: Any, **kwargs: Any) -> dict[str, Any]:
            return {"input_ids": [5] if isinstance(text, str) else [[5] for _ in text]}

    refused(lambda: add_bos_template(Plain()), r"^tokenizer: Plain did not take a BOS template")


@pytest.mark.parametrize("name", ["cfg.json", "sae_weights.safetensors"])
def test_dictionary_file_that_cannot_be_read(tmp_path: Path, name: str) -> None:
    from lmscope.dictionary import DictConfig, Dictionary, load_dictionary, save_dictionary

    out = save_dictionary(Dictionary(DictConfig(kind="sae", d_in=8, d_sae=4, hook_name="blocks.0.hook_resid_post")),
                          tmp_path / "sae")
    (out / name).unlink()
    (out / name).symlink_to("/proc/self/mem")  # a regular file whose read fails (EIO)
    refused(lambda: load_dictionary(out), rf"{name.replace('.', chr(92) + '.')}: cannot read \(")


def test_greedy_continuation_needs_a_key_value_cache(hooked: Any) -> None:
    from lmscope import HookedModel
    from lmscope.causal import patch_sweep
    from lmscope.causal.continuation import Continuation
    from lmscope.whitebox import CrateConfig, CrateForCausalLM

    torch.manual_seed(0)
    crate = CrateForCausalLM(CrateConfig(vocab_size=hooked.cfg.d_vocab, n_positions=128, n_embd=32, n_layer=1,
                                         n_head=4, ista_expansion=1))  # returns no key/value cache
    model = HookedModel(crate, hooked.tokenizer)
    refused(lambda: patch_sweep(model, ["after Monday comes"], ["after Friday comes"], ["blocks.0.hook_resid_post@-1"],
                                 Continuation(2, lambda tokens, index: tokens[:, 0].float())),
             r"^outcome: a greedy continuation needs a model that returns its key/value cache")


def test_site_mean_refuses_when_no_position_is_kept(hooked: Any) -> None:
    from lmscope.dictionary.splice import site_mean

    refused(lambda: site_mean(hooked, "blocks.0.hook_resid_post", ["a b"], exclude_first=40),
             r"^texts: no kept token to average")


def test_attached_transcoder_of_the_wrong_width_refuses_an_edit(hooked: Any) -> None:
    from lmscope.dictionary import DictConfig, Dictionary
    from lmscope.model.dictionaries import feature_hook

    tc = Dictionary(DictConfig(kind="transcoder", d_in=32, d_sae=8, d_out=16, hook_name="blocks.0.ln2.hook_normalized",
                               hook_name_out="blocks.0.hook_mlp_out"))  # writes 16 dims into a 32-wide point
    refused(lambda: hooked.attach_dictionary("narrow", tc),  # its cfg records d_out: refused when attached
            r"^dictionary 'narrow': its d_out is 16, but blocks\.0\.hook_mlp_out of this model is 32 wide; it was "
            r"made for another model$")
    from types import SimpleNamespace

    # a stand-in whose cfg records no widths is attached, and refused when an edit would write the wrong width
    bare = SimpleNamespace(cfg=SimpleNamespace(hook_name=tc.cfg.hook_name, hook_name_out=tc.cfg.hook_name_out,
                                               kind="transcoder", d_sae=8),
                           encode=tc.encode, decode=tc.decode, W_dec=tc.W_dec)
    hooked.attach_dictionary("narrow", bare)
    try:
        refused(lambda: hooked.run_with_hooks("a b", [(feature_hook("narrow"), lambda z, hook: z * 2)]),
                 r"^dictionary edit: its decoder writes shape \(1, \d+, 16\) but 'blocks\.0\.hook_mlp_out' has "
                 r"\(1, \d+, 32\); the dictionary does not fit this hook point")
    finally:
        hooked.detach_dictionary("narrow")


def _letters() -> Any:
    """A tokenizer of the 26 letters and no unknown token: it drops every digit."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    letters = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")}, merges=[]))
    letters.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=letters, eos_token="a", pad_token="a")


def test_simulator_refuses_a_tokenizer_without_digit_tokens() -> None:
    from lmscope.autointerp.local import LocalLM
    from tiny_models import tiny_hf_model

    lm = LocalLM((tiny_hf_model("gpt2"), _letters()), dtype="float32").load()
    refused(lambda: lm.digit_expectations([1, 2], [([1], [0])]),
             r"^model GPT2LMHeadModel: its tokenizer does not have one token per digit 0-9")


def test_words_the_tokenizer_drops() -> None:
    from lmscope import HookedModel
    from lmscope.causal.scorers import word_token_ids
    from lmscope.data.tokenizer import word_token_spans
    from tiny_models import tiny_hf_model

    refused(lambda: word_token_ids(HookedModel(tiny_hf_model("gpt2"), _letters()), ["7", "42"]),
             r"^word list: no word gave a token")
    refused(lambda: word_token_spans(_letters(), ["ab", "7"]), r"^words: some word got no token")
