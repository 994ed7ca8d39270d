"""Seeded generator of English-like text for the tiny profile, from a probabilistic grammar.

The tiny models must have features whose firing rates span orders of magnitude, as the
paper's C1 (rare features survive pruning better) is about exactly that spread. So every
level of the grammar is skewed: topics are drawn from a Zipf law, each topic's nouns, verbs,
adjectives and invented named entities from further Zipf laws, and sentence constructions
(declaratives down to spelled-out names) from weights spaced evenly in log space over
`construction_decades` decades. A document keeps one topic, protagonist, pronoun and place
across its sentences, so predicting it well needs attention over the context.

Nothing is copied from existing text: the words come from repro.inputs.tiny_lexicon and the names
are assembled from syllables. Each split name maps to its own stream through sha256 of
(seed, split), so output is identical across processes and Python versions.

    python -c "from repro.inputs.tiny_corpus import *; print(documents(CorpusParams(), 'train', 2))"
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from repro.inputs import tiny_lexicon as lexicon


@dataclass(frozen=True)
class CorpusParams:
    """Every knob of the tiny corpus grammar; saved beside the assets as corpus.json."""

    seed: int = 0
    """Root seed; each split's stream is derived from (seed, split name)."""
    n_topics: int = len(lexicon.TOPICS)
    """How many topics of repro.inputs.tiny_lexicon.TOPICS are used (taken in rank order)."""
    topic_zipf: float = 1.2
    """Zipf exponent of the topic distribution (higher: the first topics dominate more)."""
    word_zipf: float = 1.1
    """Zipf exponent over each topic's nouns, verbs and adjectives."""
    entities_per_topic: int = 12
    """Invented named entities (protagonists) per topic."""
    entity_zipf: float = 1.3
    """Zipf exponent over each topic's entities."""
    construction_decades: float = 3.3
    """log10 of the ratio between the most and the least likely sentence construction."""
    min_sentences: int = 4
    """Fewest sentences after a document's introduction."""
    max_sentences: int = 12
    """Most sentences after a document's introduction."""
    paragraph_prob: float = 0.12
    """Probability of a paragraph break between two sentences."""
    pronoun_prob: float = 0.45
    """Probability that a sentence refers to the protagonist by pronoun, not by name."""

    def __post_init__(self) -> None:
        if not 1 <= self.n_topics <= len(lexicon.TOPICS):
            raise ValueError(f"n_topics must be in [1, {len(lexicon.TOPICS)}]")
        for name in ("topic_zipf", "word_zipf", "entity_zipf", "construction_decades"):
            if not 0.0 <= getattr(self, name) <= 10.0:
                raise ValueError(f"{name} must be in [0, 10]")
        if self.entities_per_topic < 1:
            raise ValueError("entities_per_topic must be >= 1")
        if not 0 <= self.min_sentences <= self.max_sentences:
            raise ValueError("need 0 <= min_sentences <= max_sentences")
        for name in ("paragraph_prob", "pronoun_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CorpusParams:
        """Inverse of to_dict; unknown keys are an error so stale files fail loudly."""
        return cls(**data)


@dataclass(frozen=True)
class Document:
    """One generated document with the latent choices that produced it (for analyses)."""

    text: str
    topic: str
    entity: str
    constructions: tuple[str, ...]


class _Zipf:
    """Draws from a fixed list with Zipf weights 1/rank**s, by bisection on cumulative sums."""

    def __init__(self, items: Sequence[Any], exponent: float) -> None:
        self.items = list(items)
        self.cum = list(itertools.accumulate((r + 1) ** -exponent for r in range(len(items))))

    def __call__(self, rng: random.Random) -> Any:
        return self.items[bisect.bisect_right(self.cum, rng.random() * self.cum[-1])]


_IRREGULAR_PAST = {
    "dig": "dug", "fly": "flew", "feed": "fed", "sing": "sang", "build": "built",
    "freeze": "froze", "spread": "spread", "spin": "spun", "lend": "lent", "bend": "bent",
    "stir": "stirred", "hum": "hummed", "strum": "strummed", "trim": "trimmed",
    "debug": "debugged", "format": "formatted", "pin": "pinned",
}


def _past(verb: str) -> str:
    if verb in _IRREGULAR_PAST:
        return _IRREGULAR_PAST[verb]
    if verb.endswith("e"):
        return verb + "d"
    if verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ied"
    return verb + "ed"


def _s_form(word: str) -> str:
    """Plural of a noun or third person of a verb; the lexicon keeps to regular words."""
    if word == "tomato":
        return "tomatoes"
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


@dataclass(frozen=True)
class _Topic:
    name: str
    role: str
    noun: _Zipf
    verb: _Zipf
    adj: _Zipf
    entity: _Zipf


def _invent_name(rng: random.Random, syllables: int) -> str:
    parts = [rng.choice(lexicon.ONSETS) + rng.choice(lexicon.NUCLEI) for _ in range(syllables)]
    return ("".join(parts) + rng.choice(lexicon.CODAS)).capitalize()


def _build_topics(params: CorpusParams) -> list[_Topic]:
    """Topic lexicons and invented entities; depend on params only, shared by all splits."""
    rng = random.Random(_derive_seed(params.seed, "lexicon"))
    pronouns = (("he", "him", "his"), ("she", "her", "her"), ("they", "them", "their"))
    topics = []
    for i, (name, nouns, verbs, adjs) in enumerate(lexicon.TOPICS[: params.n_topics]):
        entities = [
            (_invent_name(rng, 1 + rng.randrange(2)), _invent_name(rng, 2),
             pronouns[rng.choices(range(3), weights=(4, 4, 1))[0]])
            for _ in range(params.entities_per_topic)
        ]
        topics.append(_Topic(
            name=name, role=lexicon.ROLES[i % len(lexicon.ROLES)],
            noun=_Zipf(nouns.split(), params.word_zipf),
            verb=_Zipf(verbs.split(), params.word_zipf),
            adj=_Zipf(adjs.split(), params.word_zipf),
            entity=_Zipf(entities, params.entity_zipf),
        ))
    return topics


class _Doc:
    """State that persists across one document's sentences (the long-range structure)."""

    def __init__(self, topic: _Topic, rng: random.Random, pronoun_prob: float) -> None:
        self.topic, self.rng, self.pronoun_prob = topic, rng, pronoun_prob
        self.first, self.last, (self.he, self.him, self.his) = topic.entity(rng)
        self.place = rng.choice(lexicon.PLACES)

    def noun(self) -> str:
        return self.topic.noun(self.rng)

    def verb(self) -> str:
        return self.topic.verb(self.rng)

    def adj(self) -> str:
        return self.topic.adj(self.rng)

    def subj(self) -> str:
        """The protagonist as subject: pronoun, first name, full name or role."""
        r = self.rng.random()
        if r < self.pronoun_prob:
            return self.he
        if r < self.pronoun_prob + 0.3:
            return self.first
        return f"{self.first} {self.last}" if r < 0.93 else f"the {self.topic.role}"


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def _declarative(d: _Doc) -> str:
    prep = d.rng.choice(lexicon.PREPOSITIONS)
    return f"{_cap(d.subj())} {_past(d.verb())} the {d.adj()} {d.noun()} {prep} the {d.noun()}."


def _description(d: _Doc) -> str:
    return f"The {d.noun()} {d.rng.choice(('was', 'looked', 'seemed'))} {d.adj()}."


def _habit(d: _Doc) -> str:
    verb = d.verb() if d.he == "they" else _s_form(d.verb())
    return f"Every day, {d.subj()} {verb} the {_s_form(d.noun())} in {d.place}."


def _question(d: _Doc) -> str:
    if d.rng.random() < 0.5:
        return f"Did {d.first} {d.verb()} the {d.noun()}?"
    return f"{d.rng.choice(lexicon.QUESTION_WORDS)} did {d.subj()} {d.verb()} the {d.noun()}?"


def _count(d: _Doc) -> str:
    n = d.rng.randrange(2, 100) if d.rng.random() < 0.6 else d.rng.randrange(2, 13)
    amount = str(n) if n > 12 else lexicon.NUMBER_WORDS[n]
    return f"{_cap(d.subj())} {_past(d.verb())} {amount} {_s_form(d.noun())}."


def _negation(d: _Doc) -> str:
    return f"{_cap(d.subj())} did not {d.verb()} the {d.noun()}, because it was not {d.adj()}."


def _comparison(d: _Doc) -> str:
    return f"The {d.noun()} was more {d.adj()} than the {d.noun()}."


def _quote(d: _Doc) -> str:
    return f'"The {d.noun()} is {d.adj()}," said {d.first}.'


def _date(d: _Doc) -> str:
    month, day = d.rng.choice(lexicon.MONTHS), d.rng.randrange(1, 29)
    year = d.rng.randrange(1850, 2030)
    return f"On {month} {day}, {year}, {d.subj()} {_past(d.verb())} the {d.noun()}."


def _listing(d: _Doc) -> str:
    a, b, c = d.noun(), d.noun(), d.noun()
    return f"{_cap(d.subj())} {_past(d.verb())} the {a}, the {b}, and the {c}."


def _conditional(d: _Doc) -> str:
    return f"If the {d.noun()} is {d.adj()}, {d.he} will {d.verb()} the {d.noun()}."


def _measurement(d: _Doc) -> str:
    value = f"{d.rng.randrange(1, 100)}.{d.rng.randrange(10)}"
    return f"The {d.noun()} measured {value} {d.rng.choice(lexicon.UNITS)}."


def _clock(d: _Doc) -> str:
    h, m = d.rng.randrange(1, 13), d.rng.randrange(0, 60, 5)
    return f"At {h}:{m:02d} {d.rng.choice(('am', 'pm'))}, {d.subj()} {_past(d.verb())} it."


def _code(d: _Doc) -> str:
    func, noun = d.rng.choice(lexicon.CODE_FUNCS), d.noun()
    return f"\n{noun}_total = {func}_{_s_form(noun)}({d.noun()}, {d.rng.randrange(100)})\n"


def _email(d: _Doc) -> str:
    address = f"{d.first.lower()}.{d.last.lower()}@{d.topic.name}.org"
    return f"Write to {address} about the {_s_form(d.noun())}."


def _arithmetic(d: _Doc) -> str:
    a, b = d.rng.randrange(1, 50), d.rng.randrange(1, 50)
    return f"{a} plus {b} makes {a + b}."


def _warning(d: _Doc) -> str:
    return f"WARNING: THE {d.noun().upper()} IS {d.adj().upper()}!"


def _spelling(d: _Doc) -> str:
    return f"{d.first} is spelled {'-'.join(d.first.upper())}."


# Ordered from most to least likely; weights fall geometrically down this list.
_CONSTRUCTIONS: tuple[tuple[str, Callable[[_Doc], str]], ...] = (
    ("declarative", _declarative), ("description", _description), ("habit", _habit),
    ("question", _question), ("count", _count), ("negation", _negation),
    ("comparison", _comparison), ("quote", _quote), ("date", _date), ("list", _listing),
    ("conditional", _conditional), ("measurement", _measurement), ("clock", _clock),
    ("code", _code), ("email", _email), ("arithmetic", _arithmetic),
    ("warning", _warning), ("spelling", _spelling),
)
CONSTRUCTIONS: tuple[str, ...] = tuple(name for name, _ in _CONSTRUCTIONS)


def construction_probabilities(params: CorpusParams) -> dict[str, float]:
    """Probability of each construction per sentence: log-evenly spaced, normalised."""
    k = len(_CONSTRUCTIONS)
    raw = [10.0 ** (-params.construction_decades * i / (k - 1)) for i in range(k)]
    return {name: w / sum(raw) for name, w in zip(CONSTRUCTIONS, raw, strict=True)}


def _derive_seed(seed: int, split: str) -> int:
    """Stable 64-bit seed from (seed, split); Python's hash() is salted per process."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{split}".encode()).digest()[:8], "big")


def _document(topic: _Topic, params: CorpusParams, rng: random.Random,
              sampler: _Zipf) -> Document:
    d = _Doc(topic, rng, params.pronoun_prob)
    parts = [f"{d.first} {d.last} was a {d.adj()} {topic.role} from {d.place}."]
    names = []
    for _ in range(rng.randint(params.min_sentences, params.max_sentences)):
        name, make = sampler(rng)
        names.append(name)
        parts.append("\n\n" if rng.random() < params.paragraph_prob else " ")
        parts.append(make(d))
    text = "".join(parts).replace(" \n", "\n").replace("\n ", "\n").strip()
    return Document(text, topic.name, f"{d.first} {d.last}", tuple(names))


def annotated_documents(params: CorpusParams, split: str, n: int) -> list[Document]:
    """n documents of `split` with their topic, protagonist and construction labels."""
    if n < 0:
        raise ValueError("n must be >= 0")
    topics = _build_topics(params)
    topic_of = _Zipf(topics, params.topic_zipf)
    probs = construction_probabilities(params)
    sampler = _Zipf(_CONSTRUCTIONS, 0.0)
    sampler.cum = list(itertools.accumulate(probs.values()))
    rng = random.Random(_derive_seed(params.seed, split))
    return [_document(topic_of(rng), params, rng, sampler) for _ in range(n)]


def documents(params: CorpusParams, split: str, n: int) -> list[str]:
    """n documents of the named split; same arguments give the same text in any process."""
    return [doc.text for doc in annotated_documents(params, split, n)]
