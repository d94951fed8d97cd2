"""Token-label readers: exact values from CoNLL-U, parallel, JSONL and synthetic data; FILE:LINE errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lmscope.data.labels import (
    from_synthetic,
    read_conllu,
    read_jsonl_labels,
    read_labels,
    read_parallel,
)
from lmscope.data.synthetic import TOXIC_WORDS, Sample, generate_corpus, write_jsonl
from lmscope.errors import InputError

CONLLU = (
    "# sent_id = 1\n"
    "# text = The cat didn't sleep.\n"
    "1\tThe\tthe\tDET\tDT\tDefinite=Def\t2\tdet\t_\tX=a\n"
    "2\tcat\tcat\tNOUN\tNN\tNumber=Sing\t4\tnsubj\t_\tX=b\n"
    "3-4\tdidn't\t_\t_\t_\t_\t_\t_\t_\t_\n"
    "3\tdid\tdo\tAUX\tVBD\t_\t5\taux\t_\tX=c\n"
    "4\tn't\tnot\tPART\tRB\t_\t5\tadvmod\t_\tX=d\n"
    "5\tsleep\tsleep\tVERB\tVB\t_\t0\troot\t_\tX=e\n"
    "5.1\tslept\tsleep\tVERB\tVBD\t_\t_\t_\t0:root\tX=f\n"
    "6\t.\t.\tPUNCT\t.\t_\t5\tpunct\t_\tX=g\n"
    "\n"
    "# sent_id = 2\n"
    "1\tDogs\tdog\tNOUN\tNNS\tNumber=Plur\t2\tnsubj\t_\tX=h\n"
    "2\tbark\tbark\tVERB\tVBP\t_\t0\troot\t_\tX=i\n"
)


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def conllu(tmp_path: Path) -> Path:
    return write(tmp_path / "tiny.conllu", CONLLU)


def test_conllu_columns(conllu: Path) -> None:
    words = [["The", "cat", "did", "n't", "sleep", "."], ["Dogs", "bark"]]
    upos = read_conllu(conllu)
    assert upos.sentences == words
    assert upos.labels == [["DET", "NOUN", "AUX", "PART", "VERB", "PUNCT"], ["NOUN", "VERB"]]
    assert upos.source == str(conllu)
    assert read_conllu(conllu, "xpos").labels == [["DT", "NN", "VBD", "RB", "VB", "."], ["NNS", "VBP"]]
    assert read_conllu(conllu, "deprel").labels == [
        ["det", "nsubj", "aux", "advmod", "root", "punct"],
        ["nsubj", "root"],
    ]
    custom = read_conllu(conllu, 9)
    assert custom.sentences == words
    assert custom.labels == [["X=a", "X=b", "X=c", "X=d", "X=e", "X=g"], ["X=h", "X=i"]]
    assert read_conllu(conllu, 2).labels[0][2:4] == ["do", "not"]


def test_conllu_crlf_bom_and_no_trailing_blank(tmp_path: Path) -> None:
    text = "\ufeff" + CONLLU.replace("\n", "\r\n")
    corpus = read_conllu(write(tmp_path / "crlf.conllu", text))
    assert corpus.n_sentences == 2
    assert corpus.labels[1] == ["NOUN", "VERB"]


@pytest.mark.parametrize(("column", "message"), [
    ("lemmas", "column: got 'lemmas', expected one of id, form, lemma, upos"),
    (10, "column: got 10, expected an index from 0 to 9"),
    (-1, "column: got -1, expected an index from 0 to 9"),
    (True, "column: got True, expected a column name or an integer index 0-9"),
])
def test_conllu_bad_column_argument(conllu: Path, column: object, message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        read_conllu(conllu, column)  # type: ignore[arg-type]


def test_conllu_wrong_column_count(tmp_path: Path) -> None:
    lines = CONLLU.splitlines(keepends=True)
    lines[12] = "1\tDogs\tdog\tNOUN\tNNS\n"  # line 13: 5 columns
    path = write(tmp_path / "bad.conllu", "".join(lines))
    with pytest.raises(InputError) as info:
        read_conllu(path)
    assert str(info.value) == f"{path}:13: expected 10 tab-separated columns, found 5"


def test_conllu_spaces_instead_of_tabs(tmp_path: Path) -> None:
    path = write(tmp_path / "spaces.conllu", "1 The the DET DT _ 2 det _ _\n")
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}:1: expected 10 tab-separated columns, found 1$"):
        read_conllu(path)


def test_conllu_bad_id(tmp_path: Path) -> None:
    path = write(tmp_path / "id.conllu", "# c\nx\tThe\tthe\tDET\tDT\t_\t2\tdet\t_\t_\n")
    with pytest.raises(InputError, match=rf"{re.escape(str(path))}:2: ID column"):
        read_conllu(path)


def test_parallel(tmp_path: Path) -> None:
    text = write(tmp_path / "text.txt", "the cat sleeps\ndogs  bark .\n")
    tags = write(tmp_path / "tags.txt", "DET NOUN VERB\nNOUN VERB PUNCT\n")
    corpus = read_parallel(text, tags)
    assert corpus.sentences == [["the", "cat", "sleeps"], ["dogs", "bark", "."]]
    assert corpus.labels == [["DET", "NOUN", "VERB"], ["NOUN", "VERB", "PUNCT"]]
    assert read_labels(text, label_path=tags) == corpus


def test_parallel_count_mismatch_names_both_files_and_line(tmp_path: Path) -> None:
    text = write(tmp_path / "text.txt", "a b\nc d e\nf\n")
    tags = write(tmp_path / "tags.txt", "X Y\nX Y\nZ\n")
    with pytest.raises(InputError) as info:
        read_parallel(text, tags)
    msg = str(info.value)
    assert f"{text}:2" in msg and f"{tags}:2" in msg and "3 words but" in msg and "2 labels" in msg


def test_parallel_line_count_mismatch(tmp_path: Path) -> None:
    text = write(tmp_path / "text.txt", "a b\nc\n")
    tags = write(tmp_path / "tags.txt", "X Y\n")
    with pytest.raises(InputError) as info:
        read_parallel(text, tags)
    msg = str(info.value)
    assert str(text) in msg and str(tags) in msg and "2 lines" in msg


def test_parallel_empty_sentence(tmp_path: Path) -> None:
    text = write(tmp_path / "text.txt", "a b\n   \nc\n")
    tags = write(tmp_path / "tags.txt", "X Y\n\nZ\n")
    with pytest.raises(InputError, match=rf"^{re.escape(str(text))}:2: empty sentence"):
        read_parallel(text, tags)


def test_parallel_without_label_file(tmp_path: Path) -> None:
    text = write(tmp_path / "text.txt", "a b\n")
    with pytest.raises(InputError, match=r"text\.txt: a parallel text file needs its label file \(label_path\)"):
        read_labels(text)


def test_jsonl(tmp_path: Path) -> None:
    rows = [{"tokens": ["I", "run"], "labels": ["PRON", "VERB"], "id": 7}, {"tokens": ["Go"], "labels": ["VERB"]}]
    path = write(tmp_path / "data.jsonl", json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n")
    corpus = read_jsonl_labels(path)
    assert corpus.sentences == [["I", "run"], ["Go"]]
    assert corpus.labels == [["PRON", "VERB"], ["VERB"]]
    assert read_labels(path) == corpus


GOOD = '{"tokens": ["a"], "labels": ["X"]}'


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ('{"tokens": ["a", "b"], "labels": ["X"', "not valid JSON"),
        ('["a", "b"]', "found a JSON list"),
        ('{"tokens": ["a"]}', "missing key 'labels'"),
        ('{"tokens": ["a", 3], "labels": ["X", "Y"]}', "'tokens' item 1 is 3"),
        ('{"tokens": "a b", "labels": ["X", "Y"]}', "'tokens' is str"),
        ('{"tokens": ["a", "b"], "labels": ["X"]}', "2 tokens but 1 labels"),
        ('{"tokens": [], "labels": []}', "empty sentence"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path: Path, bad: str, needle: str) -> None:
    path = write(tmp_path / "data.jsonl", f"{GOOD}\n{GOOD}\n{bad}\n{GOOD}\n")
    with pytest.raises(InputError) as info:
        read_jsonl_labels(path)
    assert str(info.value).startswith(f"{path}:3: ")
    assert needle in str(info.value)


def test_bad_utf8_names_file_and_line(tmp_path: Path) -> None:
    data = CONLLU.encode("utf-8").replace(b"\tcat\tcat\t", b"\tc\xe4t\tcat\t")  # latin-1 byte, line 4
    path = write(tmp_path / "latin.conllu", data)
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}:4: byte 0xe4 at column 4 is not valid UTF-8"):
        read_conllu(path)
    text = write(tmp_path / "text.txt", b"ok\nbad \xff\n")
    tags = write(tmp_path / "tags.txt", "X\nX Y\n")
    with pytest.raises(InputError, match=rf"^{re.escape(str(text))}:2: "):
        read_parallel(text, tags)


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.conllu"
    for call in (
        lambda: read_conllu(missing),
        lambda: read_jsonl_labels(missing),
        lambda: read_labels(missing),
        lambda: read_parallel(missing, missing),
    ):
        with pytest.raises(InputError, match=rf"^{re.escape(str(missing))}: no such file$"):
            call()


def test_read_labels_dispatch(conllu: Path, tmp_path: Path) -> None:
    assert read_labels(conllu, column="deprel").labels[1] == ["nsubj", "root"]
    other = write(tmp_path / "tiny.txt", CONLLU)
    assert read_labels(other, format="conllu") == read_conllu(other)
    with pytest.raises(InputError, match="format: got 'csv', expected one of auto, conllu, parallel, jsonl"):
        read_labels(conllu, format="csv")


def test_synthetic_labels_line_up_with_words(tmp_path: Path) -> None:
    samples = generate_corpus(60, seed=3)
    pos = from_synthetic(samples)
    assert pos.n_sentences == 60
    for sample, words, tags in zip(samples, pos.sentences, pos.labels, strict=True):
        assert words == list(sample.words) == sample.text.split(" ")
        assert tags == list(sample.pos or ())
    topic = from_synthetic(samples, "topic")
    with_topic = [s for s in samples if s.topic is not None]
    assert 0 < topic.n_sentences == len(with_topic) < 60
    assert all(set(t) == {s.topic} for s, t in zip(with_topic, topic.labels, strict=True))
    toxic = from_synthetic(samples, "toxic")
    flat = toxic.flat_words()
    assert [w in TOXIC_WORDS for w in flat] == [t == "toxic" for t in toxic.flat_labels()]
    task = from_synthetic(samples, "task")
    for sample, tags in zip(samples, task.labels, strict=True):
        items = sample.item_positions or (-1,) * len(sample.words)
        assert tags == [sample.task if p >= 0 else "O" for p in items]
    assert {"O"} < set(task.label_set)
    with pytest.raises(InputError, match="label: got 'sentiment', expected one of pos, topic, toxic, task"):
        from_synthetic(samples, "sentiment")


def test_synthetic_hand_built_sample() -> None:
    sample = Sample.from_words(
        ["Monday", "then", "Tuesday"], "sequence", pos=["PROPN", "ADV", "PROPN"],
        task="days", item_positions=[0, -1, 1],
    )  # fmt: skip
    assert from_synthetic([sample], "task").labels == [["days", "O", "days"]]
    assert from_synthetic([sample], "pos").labels == [["PROPN", "ADV", "PROPN"]]
    assert from_synthetic([sample], "topic").n_sentences == 0


def test_synthetic_jsonl_file_is_detected(tmp_path: Path) -> None:
    samples = generate_corpus(10, seed=1)
    path = write_jsonl(samples, tmp_path / "corpus.jsonl")
    corpus = read_labels(path)
    assert corpus.sentences == from_synthetic(samples).sentences
    assert corpus.labels == from_synthetic(samples).labels
    assert set(read_labels(path, synthetic_label="toxic").label_set) <= {"clean", "toxic"}
