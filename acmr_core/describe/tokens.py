"""Text -> tokens, the same normalisation for a description and for a bundle's attribute names: case,
accents, separators, multi-word expressions, plurals and -ing/-ed forms, and the thesaurus concept of each
word (:mod:`acmr_core.describe.vocabulary`)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from acmr_core.describe.vocabulary import (
    ADJECTIVES,
    ARTICLES,
    CONCEPT_OF,
    DATASET_SPELLINGS,
    FALLBACKS,
    IRREGULAR_PLURALS,
    REWRITES,
)

_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?|\d+|[.,;:!?()/&-]")


def _forms(word: str) -> frozenset[str]:
    """The word and its likely base forms: singular, and -ing / -ed stems (with a restored e, undoubled)."""
    forms = {word}
    singular = _singular(word)
    forms.add(singular)
    for suffix in ("ing", "ed"):
        if singular.endswith(suffix) and len(singular) - len(suffix) >= 3:
            stem = singular[: -len(suffix)]
            forms.update({stem, stem + "e"})
            if len(stem) > 3 and stem[-1] == stem[-2]:
                forms.add(stem[:-1])
            if suffix == "ed" and stem.endswith("i"):
                forms.add(stem[:-1] + "y")  # bellied -> belly
    return frozenset(forms)


def _singular(word: str) -> str:
    if word in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[word]
    if len(word) <= 3 or not word.endswith("s") or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith("ves"):
        return word[:-3] + "f"
    if word.endswith(("sses", "xes", "ches", "shes", "zes")):
        return word[:-2]
    return word[:-1]


@dataclass(frozen=True)
class Token:
    """One word of a normalised text: its surface form and the keys it matches on."""

    text: str
    keys: frozenset[str]  # {concept} when the thesaurus knows the word, else its forms
    concept: str | None = None

    @property
    def fallbacks(self) -> tuple[str, ...]:
        return FALLBACKS.get(self.concept or "", ())

    @property
    def adjective(self) -> bool:
        return self.concept in ADJECTIVES


def _token(word: str) -> Token:
    singular = _singular(word)
    concept = CONCEPT_OF.get(word) or CONCEPT_OF.get(singular)
    return Token(word, frozenset({concept}) if concept else _forms(word), concept)


def tokenize(text: str) -> list[Token]:
    """Normalise ``text`` (case, accents, separators, multi-word expressions) into tokens."""
    text = unicodedata.normalize("NFKC", text).casefold().replace("_", " ").replace("’", "'")
    text = re.sub(r"::", " : ", text)
    for pattern, replacement in REWRITES:
        text = pattern.sub(replacement, text)
    tokens: list[Token] = []
    for raw in _TOKEN.findall(text):
        word = raw
        negated = word.endswith("n't")
        if negated:
            word = word[:-3]
        word = word.removesuffix("'s").replace("'", "")
        for piece in DATASET_SPELLINGS.get(word, word).split():
            if piece not in ARTICLES:
                tokens.append(_token(piece))
        if negated:
            tokens.append(_token("not"))
    return tokens
