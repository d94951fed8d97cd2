"""A small English grammar with a UPOS tag on every word it produces.

The vocabulary is small (about 200 word types) so that a tiny model can learn it, and every word is
emitted together with its Universal POS tag, which gives the neuron probes (NeuroX-style) exact labels.
Verbs are in the past tense or follow a modal, so no subject-verb agreement is needed except for the
copula (was/were), which follows the subject's number.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

Tagged = list[tuple[str, str]]
"""A sentence under construction: (word, UPOS tag) pairs."""

VOWELS = frozenset("aeiou")


@dataclass(frozen=True)
class Lexicon:
    """Content words of one register; the function words are shared module constants."""

    nouns: dict[str, str]  # singular -> plural
    adjectives: tuple[str, ...]
    transitive: dict[str, str]  # past -> base
    intransitive: dict[str, str]  # past -> base
    names: tuple[str, ...] = ()
    adverbs: tuple[str, ...] = field(default_factory=tuple)


DETERMINERS: tuple[str, ...] = ("the", "the", "the", "a", "this", "that", "every", "some", "no")
PLURAL_DETERMINERS: tuple[str, ...] = ("the", "some", "these", "those")
NUMBER_WORDS_FOR_NP: tuple[str, ...] = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
SUBJECT_PRONOUNS: dict[str, bool] = {"he": False, "she": False, "it": False, "we": True, "they": True, "you": True}
OBJECT_PRONOUNS: tuple[str, ...] = ("him", "her", "it", "us", "them", "you")
PREPOSITIONS: tuple[str, ...] = (
    "in", "on", "near", "under", "behind", "with", "from", "to", "at", "over", "across", "into",
)  # fmt: skip
MODALS: tuple[str, ...] = ("will", "can", "could", "should", "might", "must")
CONJUNCTIONS: tuple[str, ...] = ("and", "but", "or")
MANNER_ADVERBS: tuple[str, ...] = ("quickly", "slowly", "quietly", "happily", "loudly", "gently")
FREQUENCY_ADVERBS: tuple[str, ...] = ("often", "never", "always", "rarely")
TIME_ADVERBS: tuple[str, ...] = ("yesterday", "today", "soon", "later")

GENERAL = Lexicon(
    nouns={
        "dog": "dogs", "cat": "cats", "bird": "birds", "horse": "horses", "child": "children",
        "teacher": "teachers", "farmer": "farmers", "doctor": "doctors", "king": "kings",
        "queen": "queens", "river": "rivers", "house": "houses", "garden": "gardens", "tree": "trees",
        "book": "books", "car": "cars", "boat": "boats", "city": "cities", "village": "villages",
        "forest": "forests", "apple": "apples", "song": "songs", "window": "windows", "door": "doors",
        "table": "tables", "friend": "friends", "girl": "girls", "boy": "boys", "man": "men",
        "woman": "women", "student": "students", "artist": "artists",
    },
    adjectives=(
        "big", "small", "old", "young", "happy", "sad", "red", "blue", "green", "quiet", "loud", "tall",
        "short", "bright", "dark", "clever", "lazy", "brave", "gentle", "strange", "empty", "famous",
    ),
    transitive={
        "saw": "see", "liked": "like", "found": "find", "helped": "help", "followed": "follow",
        "painted": "paint", "visited": "visit", "carried": "carry", "watched": "watch", "called": "call",
        "met": "meet", "chased": "chase", "pushed": "push", "kept": "keep", "built": "build",
        "opened": "open", "forgot": "forget",
    },
    intransitive={
        "slept": "sleep", "ran": "run", "laughed": "laugh", "waited": "wait", "smiled": "smile",
        "walked": "walk", "sang": "sing", "fell": "fall", "arrived": "arrive", "left": "leave",
        "danced": "dance", "cried": "cry",
    },
    names=("Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Paris", "London", "Rome"),
)  # fmt: skip


def fix_articles(words: Tagged) -> Tagged:
    """Turn "a" into "an" before a vowel-initial word (and "an" back into "a" otherwise)."""
    out = list(words)
    for i in range(len(out) - 1):
        word, tag = out[i]
        if word in ("a", "an"):
            out[i] = ("an" if out[i + 1][0][0] in VOWELS else "a", tag)
    return out


def noun_phrase(
    rng: random.Random, lex: Lexicon, *, subject: bool, adj_prob: float = 0.35
) -> tuple[Tagged, bool]:
    """A noun phrase and whether it is plural: DET (ADJ) NOUN, NUM (ADJ) NOUNS, PROPN or PRON."""
    r = rng.random()
    if r < 0.55:
        np_: Tagged = [(rng.choice(DETERMINERS), "DET")]
        if rng.random() < adj_prob:
            np_.append((rng.choice(lex.adjectives), "ADJ"))
        np_.append((rng.choice(list(lex.nouns)), "NOUN"))
        return np_, False
    if r < 0.7:
        det = (rng.choice(NUMBER_WORDS_FOR_NP), "NUM") if rng.random() < 0.6 else (
            rng.choice(PLURAL_DETERMINERS), "DET"
        )
        np_ = [det]
        if rng.random() < adj_prob:
            np_.append((rng.choice(lex.adjectives), "ADJ"))
        np_.append((lex.nouns[rng.choice(list(lex.nouns))], "NOUN"))
        return np_, True
    names = lex.names or GENERAL.names
    if r < 0.85:
        return [(rng.choice(names), "PROPN")], False
    if subject:
        pron = rng.choice(list(SUBJECT_PRONOUNS))
        return [(pron, "PRON")], SUBJECT_PRONOUNS[pron]
    return [(rng.choice(OBJECT_PRONOUNS), "PRON")], False


def prep_phrase(rng: random.Random, lex: Lexicon) -> Tagged:
    """ADP followed by an object noun phrase."""
    obj, _ = noun_phrase(rng, lex, subject=False)
    return [(rng.choice(PREPOSITIONS), "ADP"), *obj]


def clause(rng: random.Random, lex: Lexicon) -> Tagged:
    """One clause: transitive, intransitive, modal + base verb, or copula + adjective."""
    subj, plural = noun_phrase(rng, lex, subject=True)
    r = rng.random()
    if r < 0.35:
        obj, _ = noun_phrase(rng, lex, subject=False)
        words = [*subj, (rng.choice(list(lex.transitive)), "VERB"), *obj]
        if rng.random() < 0.3:
            words += prep_phrase(rng, lex)
        return words
    if r < 0.6:
        words = [*subj, (rng.choice(list(lex.intransitive)), "VERB")]
        if rng.random() < 0.35:
            words.append((rng.choice(lex.adverbs or MANNER_ADVERBS), "ADV"))
        if rng.random() < 0.3:
            words += prep_phrase(rng, lex)
        return words
    if r < 0.8:
        words = [*subj, (rng.choice(MODALS), "AUX")]
        if rng.random() < 0.6:
            obj, _ = noun_phrase(rng, lex, subject=False)
            return [*words, (rng.choice(list(lex.transitive.values())), "VERB"), *obj]
        words.append((rng.choice(list(lex.intransitive.values())), "VERB"))
        if rng.random() < 0.4:
            words.append((rng.choice(lex.adverbs or MANNER_ADVERBS), "ADV"))
        return words
    words = [*subj, ("were" if plural else "was", "AUX")]
    if rng.random() < 0.25:
        words.append((rng.choice(FREQUENCY_ADVERBS), "ADV"))
    return [*words, (rng.choice(lex.adjectives), "ADJ")]


def sentence(rng: random.Random, lex: Lexicon = GENERAL) -> Tagged:
    """A sentence ending in " .": a clause, two joined by a conjunction, or with a time adverb."""
    r = rng.random()
    if r < 0.2:
        words = [*clause(rng, lex), (",", "PUNCT"), (rng.choice(CONJUNCTIONS), "CCONJ"), *clause(rng, lex)]
    elif r < 0.3:
        words = [(rng.choice(TIME_ADVERBS), "ADV"), (",", "PUNCT"), *clause(rng, lex)]
    elif r < 0.4:
        words = [*clause(rng, lex), (rng.choice(TIME_ADVERBS), "ADV")]
    else:
        words = clause(rng, lex)
    return fix_articles([*words, (".", "PUNCT")])


def vocabulary(lex: Lexicon = GENERAL) -> set[str]:
    """Every word type `sentence` can produce from `lex` (for tests and tokenizer checks)."""
    words = set(DETERMINERS) | set(PLURAL_DETERMINERS) | set(NUMBER_WORDS_FOR_NP) | {"an", ".", ","}
    words |= set(SUBJECT_PRONOUNS) | set(OBJECT_PRONOUNS) | set(PREPOSITIONS) | set(MODALS)
    words |= set(CONJUNCTIONS) | set(MANNER_ADVERBS) | set(FREQUENCY_ADVERBS) | set(TIME_ADVERBS)
    words |= {"was", "were"} | set(lex.nouns) | set(lex.nouns.values()) | set(lex.adjectives)
    words |= set(lex.transitive) | set(lex.transitive.values()) | set(lex.intransitive)
    words |= set(lex.intransitive.values()) | set(lex.names or GENERAL.names) | set(lex.adverbs)
    return words
