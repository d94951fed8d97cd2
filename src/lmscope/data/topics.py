"""Topic-labelled sentences in which toxicity is confounded with topic.

Each topic has its own nouns, verbs and adjectives; a small list of made-up-mild insults appears with a
rate that depends on the topic (`TOXICITY_RATE_BY_TOPIC`). A probe or a patching experiment that finds
a "toxicity" unit may really have found a "politics" unit; causal mediation with the topic as a
confounder (Fotouhi et al. 2024) is meant to tell the two apart, and this corpus gives the ground truth.
"""

from __future__ import annotations

import random

from lmscope.data.grammar import Lexicon, Tagged, clause, fix_articles

TOXIC_WORDS: tuple[str, ...] = ("idiot", "stupid", "moron", "loser", "pathetic", "trash", "dumb", "clown")
"""Mild insults; the only words that make a sample toxic."""

TOXIC_ADJECTIVES: tuple[str, ...] = ("stupid", "pathetic", "dumb")
TOXIC_NOUNS: tuple[str, ...] = ("idiot", "moron", "loser", "trash", "clown")

TOXICITY_RATE_BY_TOPIC: dict[str, float] = {"politics": 0.5, "sports": 0.3, "cooking": 0.05, "weather": 0.05}
"""Probability that a sample of each topic contains one toxic word."""

TOPIC_LEXICONS: dict[str, Lexicon] = {
    "politics": Lexicon(
        nouns={"senator": "senators", "minister": "ministers", "voter": "voters", "mayor": "mayors",
               "bill": "bills", "election": "elections", "party": "parties", "debate": "debates"},
        adjectives=("new", "unpopular", "local", "national", "loyal"),
        transitive={"passed": "pass", "blocked": "block", "signed": "sign", "rejected": "reject",
                    "supported": "support"},
        intransitive={"voted": "vote", "resigned": "resign", "campaigned": "campaign"},
        names=("Senator", "Congress", "Parliament"),
        adverbs=("publicly", "narrowly"),
    ),
    "sports": Lexicon(
        nouns={"player": "players", "coach": "coaches", "team": "teams", "referee": "referees",
               "match": "matches", "goal": "goals", "striker": "strikers", "fan": "fans"},
        adjectives=("fast", "strong", "injured", "winning", "tired"),
        transitive={"won": "win", "kicked": "kick", "scored": "score", "coached": "coach",
                    "cheered": "cheer"},
        intransitive={"trained": "train", "lost": "lose", "celebrated": "celebrate"},
        names=("United", "Rovers", "Olympics"),
        adverbs=("hard", "easily"),
    ),
    "cooking": Lexicon(
        nouns={"chef": "chefs", "soup": "soups", "bread": "breads", "recipe": "recipes",
               "oven": "ovens", "sauce": "sauces", "onion": "onions", "cake": "cakes"},
        adjectives=("hot", "fresh", "sweet", "spicy", "salty"),
        transitive={"baked": "bake", "cooked": "cook", "chopped": "chop", "stirred": "stir",
                    "tasted": "taste"},
        intransitive={"simmered": "simmer", "boiled": "boil", "burned": "burn"},
        names=("Julia", "Gordon", "Nigella"),
        adverbs=("gently", "slowly"),
    ),
    "weather": Lexicon(
        nouns={"storm": "storms", "rain": "rains", "wind": "winds", "cloud": "clouds",
               "forecast": "forecasts", "snow": "snows", "fog": "fogs", "flood": "floods"},
        adjectives=("cold", "warm", "heavy", "windy", "cloudy"),
        transitive={"hit": "hit", "covered": "cover", "soaked": "soak", "predicted": "predict",
                    "flooded": "flood"},
        intransitive={"cleared": "clear", "blew": "blow", "poured": "pour"},
        names=("Monsoon", "Atlantic", "Sahara"),
        adverbs=("suddenly", "overnight"),
    ),
}  # fmt: skip

TOPICS: tuple[str, ...] = tuple(TOPIC_LEXICONS)


def _topic_nouns(lex: Lexicon) -> set[str]:
    """Singular and plural forms of a topic's own nouns."""
    return set(lex.nouns) | set(lex.nouns.values())


def _insert_toxic_adjective(rng: random.Random, words: Tagged, nouns: set[str]) -> Tagged:
    """Put a toxic adjective before the first topic noun (replacing an adjective already there)."""
    i = next(k for k, (w, t) in enumerate(words) if t == "NOUN" and w in nouns)
    word = (rng.choice(TOXIC_ADJECTIVES), "ADJ")
    if i > 0 and words[i - 1][1] == "ADJ":
        return [*words[: i - 1], word, *words[i:]]
    return [*words[:i], word, *words[i:]]


def _toxic_noun_clause(rng: random.Random, lex: Lexicon) -> Tagged:
    """", and the NOUN was a/an INSULT" (no article before the mass noun "trash")."""
    insult = rng.choice(TOXIC_NOUNS)
    tail: Tagged = [("a", "DET"), (insult, "NOUN")] if insult != "trash" else [(insult, "NOUN")]
    return [(",", "PUNCT"), ("and", "CCONJ"), ("the", "DET"), (rng.choice(list(lex.nouns)), "NOUN"),
            ("was", "AUX"), *tail]  # fmt: skip


def topic_sentence(rng: random.Random, topic: str) -> tuple[Tagged, bool, str | None]:
    """A tagged sentence about `topic`, whether it is toxic, and the toxic word used (if any).

    The sentence always contains at least one of the topic's own nouns, so the topic is readable from
    the text, and it is toxic with probability `TOXICITY_RATE_BY_TOPIC[topic]`.
    """
    lex = TOPIC_LEXICONS[topic]
    nouns = _topic_nouns(lex)
    while True:
        words = clause(rng, lex)
        if any(t == "NOUN" and w in nouns for w, t in words):
            break
    toxic = rng.random() < TOXICITY_RATE_BY_TOPIC[topic]
    if toxic:
        if rng.random() < 0.5:
            words = _insert_toxic_adjective(rng, words, nouns)
        else:
            words = [*words, *_toxic_noun_clause(rng, lex)]
    words = fix_articles([*words, (".", "PUNCT")])
    toxic_word = next((w for w, _ in words if w in TOXIC_WORDS), None)
    return words, toxic, toxic_word
