"""Fuzzing the text readers: lines, CoNLL-U, NeuroX parallel files, token-label JSONL, synthetic samples and
the --corpus loader. Each returns a valid value or raises InputError; what is written reads back equal."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from fuzz.fuzz_helpers import json_values, valid_or_input_error
from lmscope.data.corpus import Corpus, load_corpus, read_documents, window_documents
from lmscope.data.formats import CONLLU_COLUMNS
from lmscope.data.labels import LabeledCorpus, read_conllu, read_jsonl_labels, read_labels, read_parallel
from lmscope.data.lines import json_lines, read_lines
from lmscope.data.samples import KINDS, Sample, read_jsonl, write_jsonl

# a word: no whitespace (parallel files split on it), no tab/newline (CoNLL-U columns and lines)
words = st.text(st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1, max_size=8)
sentences = st.lists(st.lists(words, min_size=1, max_size=6), min_size=1, max_size=5)
raw_bytes = st.binary(max_size=300)
# text made of the bytes that matter to line- and column-based formats
format_text = st.text(st.sampled_from(list("\t\n\r #-.0123456789ab_\ufeff{}[]\":,é")) | st.characters(), max_size=200)


def _write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    return path


def _check_corpus(c: LabeledCorpus) -> None:
    assert len(c.sentences) == len(c.labels)
    for ws, ls in zip(c.sentences, c.labels, strict=True):
        assert ws and len(ws) == len(ls)
        assert all(isinstance(x, str) for x in [*ws, *ls])


# ------------------------------------------------------------------------- lines


@settings(max_examples=150)
@given(data=raw_bytes | format_text)
@example(data=b"a\xffb\n")
def test_read_lines_and_json_lines(scratch: Path, data: bytes | str) -> None:
    path = _write(scratch / "lines.txt", data)
    ok, lines = valid_or_input_error(lambda: read_lines(path))
    if ok:
        assert all(isinstance(x, str) and "\n" not in x for x in lines)
    valid_or_input_error(lambda: list(json_lines(path, "expected JSON")))


@settings(max_examples=50)
@given(lines=st.lists(st.text(st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), max_size=20),
                      max_size=8))
def test_read_lines_round_trip(scratch: Path, lines: list[str]) -> None:
    path = _write(scratch / "rt.txt", "".join(x + "\n" for x in lines))
    expected = [x.removesuffix("\r") for x in lines]
    if expected:
        expected[0] = expected[0].removeprefix("\ufeff")
    assert read_lines(path) == expected


def test_read_lines_odd_paths(scratch: Path) -> None:
    for bad in ("a\0b", str(scratch), str(scratch / "missing")):
        ok, _ = valid_or_input_error(lambda bad=bad: read_lines(bad))
        assert not ok


@settings(max_examples=30)
@given(depth=st.integers(1000, 200_000))
def test_deeply_nested_json_line(scratch: Path, depth: int) -> None:
    path = _write(scratch / "deep.jsonl", "[" * depth + "]" * depth + "\n")
    valid_or_input_error(lambda: list(json_lines(path, "expected JSON")))
    valid_or_input_error(lambda: read_labels(path))
    valid_or_input_error(lambda: read_documents(path))


# ------------------------------------------------------------------------- CoNLL-U

conllu_ids = st.sampled_from(["1", "2", "10", "3-4", "5.1", "x", "", "٣", "-", "1.", "0"])
conllu_field = st.text(st.characters(blacklist_characters="\t\n", blacklist_categories=("Cs",)), max_size=5)
conllu_line = st.one_of(
    st.tuples(conllu_ids, st.lists(conllu_field, min_size=9, max_size=9)).map(lambda t: "\t".join([t[0], *t[1]])),
    st.lists(conllu_field, min_size=0, max_size=12).map("\t".join),
    st.sampled_from(["", "# sent_id = 1", "   ", "\r"]))


@settings(max_examples=200)
@given(lines=st.lists(conllu_line, max_size=12), column=st.sampled_from([*CONLLU_COLUMNS, 0, 9, 3]))
def test_conllu_fuzz(scratch: Path, lines: list[str], column: str | int) -> None:
    path = _write(scratch / "f.conllu", "\n".join(lines))
    ok, corpus = valid_or_input_error(lambda: read_conllu(path, column))
    if ok:
        _check_corpus(corpus)


@settings(max_examples=60)
@given(sents=sentences, data=st.data())
def test_conllu_round_trip(scratch: Path, sents: list[list[str]], data: st.DataObject) -> None:
    tags = [data.draw(st.lists(words, min_size=len(s), max_size=len(s))) for s in sents]
    text = "".join("# comment\n" + "".join(f"{i}\t{w}\t_\t{t}\t_\t_\t0\t_\t_\t_\n"
                                           for i, (w, t) in enumerate(zip(s, ts, strict=True), 1)) + "\n"
                   for s, ts in zip(sents, tags, strict=True))
    corpus = read_labels(_write(scratch / "rt.conllu", text), column="upos")
    assert corpus.sentences == sents and corpus.labels == tags


# ------------------------------------------------------------------------- NeuroX parallel files


@settings(max_examples=100)
@given(text=format_text | raw_bytes, labels=format_text | raw_bytes)
def test_parallel_fuzz(scratch: Path, text: str | bytes, labels: str | bytes) -> None:
    t, lab = _write(scratch / "p.txt", text), _write(scratch / "p.labels", labels)
    ok, corpus = valid_or_input_error(lambda: read_parallel(t, lab))
    if ok:
        _check_corpus(corpus)


@settings(max_examples=50)
@given(sents=sentences, data=st.data())
def test_parallel_round_trip(scratch: Path, sents: list[list[str]], data: st.DataObject) -> None:
    tags = [data.draw(st.lists(words, min_size=len(s), max_size=len(s))) for s in sents]
    t = _write(scratch / "rt.txt", "".join(" ".join(s) + "\n" for s in sents))
    lab = _write(scratch / "rt.labels", "".join("\t".join(x) + "\n" for x in tags))
    corpus = read_labels(t, label_path=lab)
    assert corpus.sentences == sents and corpus.labels == tags


# ------------------------------------------------------------------------- token-label JSONL


@settings(max_examples=150)
@given(rows=st.lists(json_values | st.fixed_dictionaries({"tokens": json_values, "labels": json_values}),
                     max_size=4))
def test_jsonl_labels_fuzz(scratch: Path, rows: list[object]) -> None:
    path = _write(scratch / "l.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    ok, corpus = valid_or_input_error(lambda: read_jsonl_labels(path))
    if ok:
        _check_corpus(corpus)
    ok, corpus = valid_or_input_error(lambda: read_labels(path))  # auto: may sniff it as synthetic samples
    if ok:
        _check_corpus(corpus)


@settings(max_examples=50)
@given(sents=sentences, data=st.data())
def test_jsonl_labels_round_trip(scratch: Path, sents: list[list[str]], data: st.DataObject) -> None:
    tags = [data.draw(st.lists(words, min_size=len(s), max_size=len(s))) for s in sents]
    path = _write(scratch / "rt.jsonl", "".join(json.dumps({"tokens": s, "labels": t}) + "\n"
                                                for s, t in zip(sents, tags, strict=True)))
    corpus = read_labels(path)
    assert corpus.sentences == sents and corpus.labels == tags


# ------------------------------------------------------------------------- synthetic samples

sample_dicts = st.fixed_dictionaries(
    {"text": st.text(max_size=20) | json_values, "kind": st.sampled_from(KINDS) | json_values},
    optional={"pos": json_values | st.lists(st.text(max_size=3), max_size=4),
              "item_positions": json_values | st.lists(st.integers(-2, 5), max_size=4),
              "task": json_values, "topic": json_values, "toxic": json_values, "meta": json_values,
              "words": json_values})


@settings(max_examples=200)
@given(rows=st.lists(sample_dicts | json_values, max_size=3), label=st.sampled_from(["pos", "topic", "toxic", "task"]))
def test_samples_fuzz(scratch: Path, rows: list[object], label: str) -> None:
    path = _write(scratch / "s.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    ok, samples = valid_or_input_error(lambda: read_jsonl(path))
    if ok:
        assert all(isinstance(s, Sample) for s in samples)
    ok, corpus = valid_or_input_error(lambda: read_labels(path, format="synthetic", synthetic_label=label))
    if ok:
        _check_corpus(corpus)


space_free = st.text(st.characters(blacklist_characters=" \n", blacklist_categories=("Cs",)), max_size=6)


@settings(max_examples=50)
@given(data=st.data(), n=st.integers(0, 4))
def test_samples_round_trip(scratch: Path, data: st.DataObject, n: int) -> None:
    samples = []
    for _ in range(n):
        ws = data.draw(st.lists(space_free, min_size=1, max_size=5))
        k = len(ws)
        samples.append(Sample.from_words(
            ws, data.draw(st.sampled_from(KINDS)), pos=data.draw(st.none() | st.lists(words, min_size=k, max_size=k)),
            task=data.draw(st.none() | words), topic=data.draw(st.none() | words), toxic=data.draw(st.booleans()),
            item_positions=data.draw(st.none() | st.lists(st.integers(-1, 9), min_size=k, max_size=k).map(tuple)),
            meta=data.draw(st.dictionaries(words, st.integers() | words, max_size=2))))
    path = scratch / "rt-samples.jsonl"
    write_jsonl(samples, path, overwrite=True)
    assert read_jsonl(path) == samples


# ------------------------------------------------------------------------- --corpus


@settings(max_examples=100)
@given(data=raw_bytes | format_text, suffix=st.sampled_from([".txt", ".jsonl"]))
def test_corpus_fuzz(scratch: Path, data: bytes | str, suffix: str) -> None:
    path = _write(scratch / f"c{suffix}", data)
    ok, corpus = valid_or_input_error(lambda: load_corpus(str(path), model_name="x"))
    if ok:
        assert isinstance(corpus, Corpus) and corpus.texts and all(isinstance(t, str) and t.strip()
                                                                   for t in corpus.texts)


@settings(max_examples=50)
@given(docs=st.lists(st.text(st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)), max_size=30)
                     .filter(str.strip), min_size=1, max_size=5), suffix=st.sampled_from([".txt", ".jsonl"]))
def test_corpus_round_trip(scratch: Path, docs: list[str], suffix: str) -> None:
    body = "".join((json.dumps({"text": d}) if suffix == ".jsonl" else d) + "\n" for d in docs)
    path = _write(scratch / f"rt{suffix}", body)
    expected = docs if suffix == ".jsonl" else [d.removesuffix("\r") for d in docs]
    if suffix == ".txt":
        expected[0] = expected[0].removeprefix("\ufeff")
        expected = [d for d in expected if d.strip()]
    assert read_documents(path) == expected


class _WordTokenizer:
    """A tokenizer with character offsets: one token per run of non-space characters."""

    def __call__(self, text: str, **_: object) -> dict[str, list[tuple[int, int]]]:
        import re

        return {"offset_mapping": [m.span() for m in re.finditer(r"\S+", text)]}


@settings(max_examples=100)
@given(doc=st.text(max_size=60), max_tokens=st.integers(-1, 6), stride=st.none() | st.integers(-1, 7))
def test_window_documents(doc: str, max_tokens: int, stride: int | None) -> None:
    ok, texts = valid_or_input_error(lambda: window_documents([doc], _WordTokenizer(), max_tokens, stride))
    if ok:
        assert all(t in doc for t in texts)
        assert all(len(_WordTokenizer()(t)["offset_mapping"]) <= max(max_tokens, len(doc.split()))
                   for t in texts)


@settings(max_examples=100)
@given(data=raw_bytes | format_text, suffix=st.sampled_from([".txt", ".conllu", ".jsonl"]))
def test_extract_sentences_fuzz(scratch: Path, data: bytes | str, suffix: str) -> None:
    """`lmscope extract`'s corpus reader (plain text, CoNLL-U or JSONL words)."""
    from lmscope.activations.corpus import read_sentences

    path = _write(scratch / f"sents{suffix}", data)
    ok, sents = valid_or_input_error(lambda: read_sentences(path))
    if ok:
        assert sents and all(s and all(isinstance(w, str) and w for w in s) for s in sents)
