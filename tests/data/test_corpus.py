"""The user's corpus: documents from text or JSONL, windows at token offsets, synthetic only for zoo models."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from lmscope.data.corpus import SYNTHETIC, load_corpus, read_documents, window_documents
from lmscope.errors import InputError


@pytest.fixture
def word_tokenizer() -> PreTrainedTokenizerFast:
    """One token per whitespace-separated word, so token counts and windows can be worked out by hand."""
    words = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["[UNK]", *words])}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def test_plain_text_is_one_document_per_nonblank_line(tmp_path: Path) -> None:
    path = tmp_path / "docs.txt"
    path.write_text("first doc\n\n  \nsecond  doc\n")
    assert read_documents(path) == ["first doc", "second  doc"]


def test_jsonl_reads_text_fields_and_names_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "one", "id": 1}\n{"text": "two"}\n')
    assert read_documents(path) == ["one", "two"]
    path.write_text('{"text": "one"}\n{"body": "two"}\n')
    with pytest.raises(InputError, match=r"docs\.jsonl:2: expected one JSON object per line with a string \"text\""):
        read_documents(path)


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("\n\n")
    with pytest.raises(InputError, match="no documents"):
        read_documents(path)


def test_windows_cover_the_document_with_the_stated_stride(word_tokenizer: PreTrainedTokenizerFast) -> None:
    doc = "a b c d e f g h i j"
    assert window_documents([doc], word_tokenizer, max_tokens=4, stride=3) == [
        "a b c d", "d e f g", "g h i j"]
    assert window_documents([doc], word_tokenizer, max_tokens=4) == ["a b c d", "e f g h", "i j"]
    assert window_documents(["a b", doc], word_tokenizer, max_tokens=10) == ["a b", doc]  # short: kept whole
    with pytest.raises(InputError, match=r"stride: expected 1\.\.4"):
        window_documents([doc], word_tokenizer, max_tokens=4, stride=5)


def test_load_corpus_windows_a_file_and_describes_it(tmp_path: Path,
                                                     word_tokenizer: PreTrainedTokenizerFast) -> None:
    path = tmp_path / "docs.txt"
    path.write_text("a b c d e f\nb c\n")
    corpus = load_corpus(str(path), model_name="/models/x", tokenizer=word_tokenizer, max_tokens=4, stride=2)
    assert corpus.texts == ["a b c d", "c d e f", "b c"]
    assert corpus.n_documents == 2 and not corpus.is_synthetic
    assert corpus.to_dict() == {"source": str(path), "n_documents": 2, "n_texts": 3, "max_tokens": 4, "stride": 2}
    assert "2 documents -> 3 windows of <= 4 tokens, stride 2" in corpus.describe()


def test_synthetic_is_the_default_only_for_zoo_models() -> None:
    corpus = load_corpus(None, model_name="zoo:gpt2-tiny", synthetic_texts=7, seed=3)
    assert corpus.is_synthetic and len(corpus.texts) == 7
    assert corpus.texts == load_corpus(SYNTHETIC, model_name="/any/model", synthetic_texts=7, seed=3).texts
    with pytest.raises(InputError, match=r"^corpus: real:smollm2-135m is not a zoo model, so give it your own"):
        load_corpus(None, model_name="real:smollm2-135m")
    with pytest.raises(InputError, match=r"^text: missing\.txt: no such file") as caught:
        load_corpus("missing.txt", model_name="zoo:gpt2-tiny", arg="text")
    assert caught.value.arg == "text"
