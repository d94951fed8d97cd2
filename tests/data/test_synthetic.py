"""The synthetic corpus: determinism, ground-truth labels, held-out items, toxicity rates, JSONL files."""

from __future__ import annotations

import json
import re
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest

from lmscope.data.grammar import GENERAL, vocabulary
from lmscope.data.sequences import CENTURIES, COMPACT_SEPARATORS, FRAME_POS, RUN_LENGTHS, TASK_POS, TEMPLATE_FRAMES
from lmscope.data.synthetic import (
    ALL_TASKS,
    CYCLIC_TASKS,
    HELDOUT_TEMPLATE_ITEMS,
    KINDS,
    ROMAN_NUMERALS,
    ROMAN_TASK,
    SUCCESSION_TASKS,
    TOPICS,
    TOXIC_WORDS,
    TOXICITY_RATE_BY_TOPIC,
    UPOS_TAGS,
    Sample,
    generate_corpus,
    greater_than_prompts,
    read_jsonl,
    successor,
    successor_eval_prompts,
    write_jsonl,
)
from lmscope.errors import InputError


@pytest.fixture(scope="module")
def corpus() -> list[Sample]:
    return generate_corpus(6000, seed=0)


def by_kind(samples: list[Sample], kind: str) -> list[Sample]:
    return [s for s in samples if s.kind == kind]


def test_same_seed_same_corpus_other_seed_other_corpus() -> None:
    a = generate_corpus(300, seed=5)
    assert a == generate_corpus(300, seed=5)
    assert [s.text for s in a] != [s.text for s in generate_corpus(300, seed=6)]
    assert generate_corpus(100, seed=5) == a[:100]  # a shorter corpus is a prefix


def test_task_lists_are_the_known_sequences() -> None:
    assert SUCCESSION_TASKS["numbers"][:3] == ["0", "1", "2"] and SUCCESSION_TASKS["numbers"][-1] == "199"
    assert SUCCESSION_TASKS["days"][0] == "Monday" and SUCCESSION_TASKS["days"][-1] == "Sunday"
    assert SUCCESSION_TASKS["months"][2] == "March" and len(SUCCESSION_TASKS["month_abbrevs"]) == 12
    assert SUCCESSION_TASKS["letters"] == [chr(c) for c in range(65, 91)]
    assert ROMAN_NUMERALS[:4] == ["I", "II", "III", "IV"] and ROMAN_NUMERALS[-1] == "XII"
    assert successor("days", "Sunday") == "Monday"
    assert successor("months", "December") == "January"
    assert successor("numbers", "199") is None and successor("numbers", "41") == "42"
    assert successor("ordinals", "first") == "second"


def test_default_mix_gives_every_kind(corpus: list[Sample]) -> None:
    counts = Counter(s.kind for s in corpus)
    assert set(counts) == set(KINDS)
    assert 0.2 < counts["template"] / len(corpus) < 0.4


def test_mix_restricts_kinds() -> None:
    assert {s.kind for s in generate_corpus(200, seed=1, mix={"grammar": 2.0, "topic": 0})} == {"grammar"}


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"split": "test"}, "split"),
        ({"mix": {"grammar": 1, "poetry": 1}}, "mix"),
        ({"mix": {"grammar": -1.0}}, "mix"),
        ({"mix": {"grammar": 0}}, "mix"),
        ({"mix": {"grammar": float("nan")}}, "mix"),
    ],
)
def test_bad_arguments_raise_input_error_naming_them(kwargs: dict, argument: str) -> None:
    with pytest.raises(InputError, match=argument):
        generate_corpus(10, **kwargs)


def test_bad_sample_count_raises() -> None:
    with pytest.raises(InputError, match="n_samples"):
        generate_corpus(-1)


def test_words_are_the_text_split_on_spaces(corpus: list[Sample]) -> None:
    for s in corpus:
        assert s.words == tuple(s.text.split(" "))
        assert all(s.words) and s.words[-1] == "."


def test_every_sample_has_one_known_pos_tag_per_word(corpus: list[Sample]) -> None:
    for s in corpus:
        assert s.pos is not None and len(s.pos) == len(s.words), s.text
        assert set(s.pos) <= set(UPOS_TAGS)
        for word, tag in zip(s.words, s.pos, strict=True):
            if word in (".", ","):
                assert tag == "PUNCT"
    grammar = by_kind(corpus, "grammar")
    assert {t for s in grammar for t in s.pos or ()} == set(UPOS_TAGS)
    vocab = vocabulary(GENERAL)
    assert {w for s in grammar for w in s.words} <= vocab
    assert 150 <= len(vocab) <= 300


def test_grammar_pos_tags_match_the_lexicon(corpus: list[Sample]) -> None:
    for s in by_kind(corpus, "grammar"):
        for word, tag in zip(s.words, s.pos or (), strict=True):
            if word in GENERAL.nouns or word in GENERAL.nouns.values():
                assert tag == "NOUN"
            if word in GENERAL.transitive or word in GENERAL.intransitive:
                assert tag == "VERB"
            if word in ("was", "were", "will", "can"):
                assert tag == "AUX"
        for i, word in enumerate(s.words[:-1]):
            vowel = s.words[i + 1][0] in "aeiou"
            assert not (word == "a" and vowel) and not (word == "an" and not vowel), s.text


def test_sequence_runs_increment_by_one(corpus: list[Sample]) -> None:
    seqs = by_kind(corpus, "sequence")
    assert len(seqs) > 500
    wrapped = compacts = 0
    for s in seqs:
        assert s.task in ALL_TASKS and s.item_positions is not None
        items = ALL_TASKS[s.task]
        idx = [p for p in s.item_positions if p >= 0]
        if s.meta["compact"]:  # "Monday,Tuesday,Wednesday": one word, its items bare after the first
            compact = [w for w, p in zip(s.words, s.item_positions, strict=True) if p < 0 and w[-1] not in ".,"]
            word = next(w for w in compact if any(sep in w for sep in COMPACT_SEPARATORS))
            idx = [items.index(part) for part in re.split(r"[,/-]", word)]
            compacts += 1
        assert RUN_LENGTHS[0] <= len(idx) <= RUN_LENGTHS[1]
        for w, p, tag in zip(s.words, s.item_positions, s.pos or (), strict=True):
            if p >= 0:
                assert items[p] == w and tag == TASK_POS[s.task]
        for a, b in pairwise(idx):
            if s.task in CYCLIC_TASKS:
                assert b == (a + 1) % len(items)
                wrapped += b < a
            else:
                assert b == a + 1
    assert wrapped > 0 and 0.15 * len(seqs) < compacts < 0.35 * len(seqs)
    roman = sum(s.task == ROMAN_TASK for s in seqs)
    assert 0 < roman < 0.04 * len(seqs)


def test_template_answers_are_true_successors(corpus: list[Sample]) -> None:
    temps = by_kind(corpus, "template")
    assert {s.task for s in temps} == set(SUCCESSION_TASKS)  # never roman numerals
    quoted = 0
    for s in temps:
        query, answer = s.meta["query"], s.meta["answer"]
        assert answer == successor(s.task, query)
        assert s.item_positions is not None
        marked = [(i, s.words[i]) for i, p in enumerate(s.item_positions) if p >= 0]
        word = s.meta["answer_word"]
        left, right = ('"', '"') if word.startswith('"') else ("(", ")") if word.startswith("(") else \
            ("[", "]") if word.startswith("[") else ("", "")
        assert s.meta["quoted"] == bool(left) and word == f"{left}{answer}{right}"
        assert [w for _, w in marked] == [f"{left}{query}{right}", word]
        (qi, _), (ai, _) = marked
        assert ai > qi + 1  # the answer comes after other words, away from its item
        assert s.words.count(word) == 1 and word not in s.words[:ai]
        quoted += bool(left)
    assert 0.25 * len(temps) < quoted < 0.45 * len(temps)  # QUOTED_TEMPLATE_RATE: bare items for the heads


def test_templates_have_several_frames_per_task() -> None:
    for task, frames in TEMPLATE_FRAMES.items():
        assert len(frames) >= 2, task
        for frame in frames:
            words = frame.split(" ")
            assert words.index("{q}") < words.index("{a}")
            assert {w for w in words if not w.startswith("{")} <= set(FRAME_POS)


def test_heldout_items_never_queried_in_train_templates() -> None:
    for task, held in HELDOUT_TEMPLATE_ITEMS.items():
        n = len(ALL_TASKS[task])
        assert 1 <= len(held) <= max(1, round(0.12 * n)), task
    train = by_kind(generate_corpus(8000, seed=3, mix={"template": 1}), "template")
    assert not any(s.meta["query"] in HELDOUT_TEMPLATE_ITEMS[s.task] for s in train)
    assert not any(s.meta["heldout_item"] for s in train)
    held = generate_corpus(3000, seed=3, split="heldout", mix={"template": 1})
    flagged = [s for s in held if s.meta["heldout_item"]]
    assert flagged and all(s.meta["query"] in HELDOUT_TEMPLATE_ITEMS[s.task] for s in flagged)


def test_heldout_items_still_appear_in_training_runs() -> None:
    seqs = generate_corpus(4000, seed=4, mix={"sequence": 1})
    words_by_task: dict[str, set[str]] = {}
    for s in seqs:
        words_by_task.setdefault(s.task or "", set()).update(s.words)
    for task in ("days", "months", "letters"):
        assert HELDOUT_TEMPLATE_ITEMS[task] <= words_by_task[task]


def test_greater_than_end_year_is_later_in_the_same_century(corpus: list[Sample]) -> None:
    gts = by_kind(corpus, "greater_than")
    assert len(gts) > 200
    for s in gts:
        c, start, end = s.meta["century"], s.meta["start_yy"], s.meta["end_yy"]
        assert c in CENTURIES and 0 <= start < end <= 99
        years = [w for w in s.words if len(w) == 4 and w.isdigit()]
        assert years == [f"{c}{start:02d}", f"{c}{end:02d}"]


def test_toxicity_rate_per_topic_matches_the_table() -> None:
    topics = generate_corpus(8000, seed=7, mix={"topic": 1})
    assert set(TOPICS) == set(TOXICITY_RATE_BY_TOPIC) and len(TOPICS) >= 4
    for topic in TOPICS:
        group = [s for s in topics if s.topic == topic]
        assert len(group) > 1500
        rate = sum(s.toxic for s in group) / len(group)
        assert abs(rate - TOXICITY_RATE_BY_TOPIC[topic]) < 0.05, (topic, rate)
    for s in topics:
        toxic_words = [w for w in s.words if w in TOXIC_WORDS]
        assert s.toxic == bool(toxic_words) and len(toxic_words) <= 1
        assert s.meta["toxic_word"] == (toxic_words[0] if toxic_words else None)
        assert s.pos is not None and len(s.pos) == len(s.words)


def test_only_topic_samples_are_toxic(corpus: list[Sample]) -> None:
    for s in corpus:
        if s.kind != "topic":
            assert not s.toxic and not set(s.words) & set(TOXIC_WORDS)


def test_sample_dict_roundtrip(corpus: list[Sample]) -> None:
    for s in corpus[:200]:
        d = json.loads(json.dumps(s.to_dict()))
        assert Sample.from_dict(d) == s


def test_jsonl_roundtrip_and_no_clobber(tmp_path: Path, corpus: list[Sample]) -> None:
    path = tmp_path / "corpus.jsonl"
    write_jsonl(corpus[:300], path)
    assert read_jsonl(path) == corpus[:300]
    with pytest.raises(InputError, match="already exists"):
        write_jsonl(corpus[:1], path)
    write_jsonl(corpus[:1], path, overwrite=True)
    assert read_jsonl(path) == corpus[:1]


def test_malformed_jsonl_line_names_file_and_line(tmp_path: Path, corpus: list[Sample]) -> None:
    path = tmp_path / "bad.jsonl"
    good = [json.dumps(s.to_dict()) for s in corpus[:2]]
    path.write_text("\n".join([*good, "{not json"]) + "\n")
    with pytest.raises(InputError, match=r"bad\.jsonl:3: not valid JSON"):
        read_jsonl(path)
    path.write_text("\n".join([good[0], json.dumps({"text": "a b", "kind": "grammar", "pos": ["DET"]})]))
    with pytest.raises(InputError, match=r"bad\.jsonl:2: pos"):
        read_jsonl(path)
    path.write_text(json.dumps({"kind": "grammar"}) + "\n")
    with pytest.raises(InputError, match=r"bad\.jsonl:1: field 'text'"):
        read_jsonl(path)
    with pytest.raises(InputError, match="no such file"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_successor_eval_prompts_have_true_answers() -> None:
    prompts = successor_eval_prompts(20)
    assert prompts == successor_eval_prompts(20)
    tasks = [*SUCCESSION_TASKS, ROMAN_TASK]
    assert Counter((p.task, p.kind) for p in prompts) == {(t, k): 20 for t in tasks for k in ("sequence", "template")}
    for p in prompts:
        assert p.answer == successor(p.task, p.query)
        words = p.prompt.split(" ")
        if p.kind == "sequence":
            items = ALL_TASKS[p.task]
            run = [w for w in words if w in items]
            tail = words[-1] if words[-1] != "and" else words[-2]
            assert tail == p.query and len(run) >= 3
        else:
            assert p.query in words and p.answer not in words
        assert p.heldout_item == (p.task == ROMAN_TASK or p.query in HELDOUT_TEMPLATE_ITEMS.get(p.task, set()))
    templ_held = {(p.task, p.query) for p in prompts if p.kind == "template" and p.heldout_item}
    assert {(t, q) for t, held in HELDOUT_TEMPLATE_ITEMS.items() for q in held} <= templ_held


def test_greater_than_prompts_end_with_the_century() -> None:
    prompts = greater_than_prompts(50)
    assert prompts == greater_than_prompts(50) and prompts != greater_than_prompts(50, seed=3)
    for p in prompts:
        assert p.prompt.endswith(f" {p.century}")
        assert f"{p.century}{p.start_yy:02d}" in p.prompt.split(" ")
        assert all(int(a) > p.start_yy for a in p.good_answers)
        assert len(p.good_answers) + len(p.bad_answers) == 100


def test_export_round_trips_through_lmscopes_readers(tmp_path: Path) -> None:
    from lmscope.activations import read_sentences
    from lmscope.data.corpus import load_corpus, read_documents
    from lmscope.data.export import export_synthetic
    from lmscope.data.labels import read_conllu, read_labels

    paths = export_synthetic(tmp_path / "a", n_samples=120, seed=3, split="train")
    samples = generate_corpus(120, seed=3, split="train")
    assert sorted(p.name for p in paths.values()) == ["corpus.txt", "labels.conllu", "samples.jsonl"]
    assert read_documents(paths["corpus.txt"]) == [s.text for s in samples]
    assert read_sentences(paths["corpus.txt"]) == [list(s.words) for s in samples]
    pos = read_labels(paths["labels.conllu"])
    assert pos.sentences == [list(s.words) for s in samples] and pos.labels == [list(s.pos) for s in samples]
    assert read_jsonl(paths["samples.jsonl"]) == samples
    assert read_sentences(paths["samples.jsonl"]) == [list(s.words) for s in samples]
    tasks = read_labels(paths["samples.jsonl"], synthetic_label="task")
    misc = read_conllu(paths["labels.conllu"], column="misc")  # Item=N on exactly the task items
    for s, tags, notes in zip(samples, tasks.labels, misc.labels, strict=True):
        items = s.item_positions or (-1,) * len(s.words)
        assert [t != "O" for t in tags] == [p >= 0 for p in items]
        assert [f"Item={p}" in n for p, n in zip(items, notes, strict=True)] == [p >= 0 for p in items]
        assert [("Toxic=Yes" in n) for n in notes] == [w in TOXIC_WORDS for w in s.words]
    text = paths["labels.conllu"].read_text()
    assert text.count("# kind = ") == 120 and text.count("# toxic = yes") == sum(s.toxic for s in samples)
    # the defaults are exactly `--corpus synthetic`; the same seed gives the same bytes
    default = export_synthetic(tmp_path / "b")
    assert read_documents(default["corpus.txt"]) == load_corpus("synthetic", model_name="x").texts
    again = export_synthetic(tmp_path / "c")
    assert all(default[k].read_bytes() == again[k].read_bytes() for k in default)
    other = export_synthetic(tmp_path / "d", seed=1000)
    assert default["corpus.txt"].read_bytes() != other["corpus.txt"].read_bytes()


def test_export_refuses_to_overwrite_before_writing_anything(tmp_path: Path) -> None:
    from lmscope.data.export import export_synthetic

    (tmp_path / "labels.conllu").write_text("mine\n")
    with pytest.raises(InputError, match="already exists"):
        export_synthetic(tmp_path, n_samples=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.conllu"]
    assert (tmp_path / "labels.conllu").read_text() == "mine\n"
    export_synthetic(tmp_path, n_samples=5, overwrite=True)
    assert len((tmp_path / "corpus.txt").read_text().splitlines()) == 5
    for kwargs, message in (({"n_samples": 0}, "^n_samples: expected a positive number of samples, got 0$"),
                            ({"split": "test"}, "^split: expected train or heldout, got 'test'$")):
        with pytest.raises(InputError, match=message):
            export_synthetic(tmp_path / "x", **kwargs)
