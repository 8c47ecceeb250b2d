"""Attributes from words: read a free description against a bundle's own attribute vocabulary.

People describe a class in words ("a small red bird with black wings and a hooked bill"); a bundle knows it as
attribute names (``colour: red``, ``has_wing_color::black``, ``furry``, ``sailing/ boating``). This module
bridges the two without a language model:

1. **A vocabulary from the names.** Each attribute name is parsed into a *part* (what it is about:
   ``wing``, ``bill``, ``background``; none for the whole object) and a *value phrase* (``black``,
   ``hooked``, ``small``). Group words that only say which facet it is (colour, pattern, shape, size…) are
   dropped; a ``primary``/``main`` group is the whole object.
2. **General English on both sides.** Text and names go through the same normalisation: lower case, plurals,
   ``-ing``/``-ed`` forms, and a curated thesaurus of general words mapped to shared concepts (``violet`` →
   purple, ``spotty``/``speckled``/``dots`` → spotted, ``big`` → large, ``trio`` → three, ``beak`` → bill…).
   Some concepts have fallbacks, tried only when the group has no better value (``black`` → dark, ``tiny``
   → small, ``solitary`` → one).
3. **Part-aware reading.** A value binds to the part it describes: the part after it (``black wings``,
   ``red and white wings``, ``black spotted wings``) or before it (``the wings are black``,
   ``has_wing_color::black``). A value bound to nothing, or to the whole (``a red bird``), sets a group
   without a part; failing that, a group of the one part that has that value (``on dark`` → background,
   ``crested`` → head pattern).

Only what the text mentions is set (1, or 0.5 when hedged: "slightly striped"); negated values ("no stripes",
"not striped") are not set. Nothing recognised raises :class:`~acmr_core.errors.UserClassError`, as does a
text longer than :data:`MAX_DESCRIPTION_CHARS`.

The thesaurus and word classes are data tables in :mod:`acmr_core.describe.vocabulary`; the normalisation
shared by texts and names is :mod:`acmr_core.describe.tokens`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from acmr_core.data.classes import attribute_group, split_attribute_name
from acmr_core.describe.tokens import Token, tokenize
from acmr_core.describe.vocabulary import (
    ADJECTIVES,
    BREAKS,
    COLOURS,
    CONJUNCTIONS,
    FACET_WORDS,
    HEDGES,
    INTENSIFIERS,
    LIGHTNESS,
    LINKERS,
    NAME_STOPWORDS,
    NEGATORS,
    PARTS,
    PREPOSITIONS,
    PRONOUN_BEFORE_ONE,
    WHOLE,
    WHOLE_GROUP_WORDS,
)
from acmr_core.errors import UserClassError, quote_value

#: Longest description accepted (a few paragraphs); longer texts are refused, not silently cut.
MAX_DESCRIPTION_CHARS = 2000
SET_VALUE = 1.0
HEDGED_VALUE = 0.5

_PARENTHESISED = re.compile(r"\([^)]*\)")
_COMPARISON_TAIL = re.compile(r"[\s_-]+(?:than|as)[\s_-]+\w+$")


# ---- the vocabulary ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """One attribute as the reader sees it: its part (None: the whole object) and one value phrase."""

    attribute: str
    part: tuple[frozenset[str], ...] | None
    part_label: str
    phrase: tuple[frozenset[str], ...]


@dataclass(frozen=True)
class Vocabulary:
    """Every attribute of a bundle parsed into (part, value phrase) terms; see the module docstring."""

    attribute_names: tuple[str, ...]
    terms: tuple[Term, ...]
    parts: tuple[tuple[tuple[frozenset[str], ...], str], ...]  # (part phrase, label), longest first
    by_first_key: dict[str, tuple[Term, ...]] = field(default_factory=dict, compare=False)

    def starting_with(self, token: Token) -> list[Term]:
        """Terms whose phrase can start with ``token`` (an index: CUB has over 300 terms)."""
        found: dict[int, Term] = {}
        for key in token.keys:
            for term in self.by_first_key.get(key, ()):
                found[id(term)] = term
        return list(found.values())

    @classmethod
    def from_names(cls, names: Iterable[str]) -> Vocabulary:
        return _vocabulary(tuple(str(name) for name in names))


def _phrase(text: str) -> tuple[frozenset[str], ...]:
    return tuple(token.keys for token in tokenize(text))


#: (group, value) of an attribute name; ("", name) for an ungrouped one (the rule is data.classes's).
split_name = split_attribute_name


def _part_of(group: str) -> tuple[tuple[frozenset[str], ...], str] | None:
    """The part a group is about (``has_wing_color`` -> wing), or None for the whole object."""
    words = [
        token
        for token in tokenize(group)
        if token.text not in FACET_WORDS and token.text not in WHOLE_GROUP_WORDS
    ]
    if not words:
        return None
    return tuple(token.keys for token in words), " ".join(token.text for token in words)


def _value_phrases(value: str, part: tuple[frozenset[str], ...] | None) -> list[tuple[frozenset[str], ...]]:
    """Value phrases of a name's value: alternatives split on '/', notes in brackets and comparisons cut."""
    phrases = []
    for alternative in value.split("/"):
        text = _COMPARISON_TAIL.sub("", _PARENTHESISED.sub(" ", alternative).strip(" _-"))
        part_keys = set().union(*part) if part else set()
        phrase = tuple(
            token.keys
            for token in tokenize(text)
            if token.text.isalnum()
            and token.text not in NAME_STOPWORDS
            and token.text not in FACET_WORDS
            and not (token.keys & part_keys)  # "forked_tail" in the tail group is "forked"
        )
        if phrase:
            phrases.append(phrase)
    return phrases


@functools.lru_cache(maxsize=16)
def _vocabulary(names: tuple[str, ...]) -> Vocabulary:
    terms: list[Term] = []
    parts: dict[tuple[frozenset[str], ...], str] = {}
    for name in names:
        group, value = split_name(name)
        part = _part_of(group) if group else None
        if part is not None:
            parts.setdefault(*part)
        for phrase in _value_phrases(value, part[0] if part else None):
            terms.append(Term(name, part[0] if part else None, part[1] if part else "", phrase))
    ordered_parts = tuple(sorted(parts.items(), key=lambda item: -len(item[0])))
    by_first_key: dict[str, list[Term]] = {}
    for term in terms:
        for key in term.phrase[0]:
            by_first_key.setdefault(key, []).append(term)
    index = {key: tuple(found) for key, found in by_first_key.items()}
    return Vocabulary(names, tuple(terms), ordered_parts, index)


# ---- reading a description ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """One recognised value: the words it came from, and the attribute(s) it set."""

    words: str
    attributes: tuple[str, ...]
    value: float


@dataclass(frozen=True)
class Reading:
    """What a description sets: ``values`` {attribute: value in [0, 1]} and how each was recognised."""

    values: dict[str, float]
    matches: tuple[Match, ...]
    unknown_words: tuple[str, ...]

    def summary(self) -> str:
        """One line per recognised phrase: ``"black wings" -> has_wing_color::black``."""
        return "\n".join(
            f'"{match.words}" -> {", ".join(match.attributes)}'
            + (f" ({match.value:g})" if match.value != SET_VALUE else "")
            for match in self.matches
        )


def _phrase_at(tokens: Sequence[Token], start: int, phrase: Sequence[frozenset[str]]) -> bool:
    if start + len(phrase) > len(tokens):
        return False
    return all(tokens[start + offset].keys & keys for offset, keys in enumerate(phrase))


class _Reader:
    """Reads one tokenised text against one vocabulary (see the module docstring for the rules)."""

    def __init__(self, tokens: list[Token], vocabulary: Vocabulary) -> None:
        self.tokens = tokens
        self.vocabulary = vocabulary
        self.used = [False] * len(tokens)

    # -- parts
    def part_at(self, position: int) -> tuple[int, str | None] | None:
        """(length, part label) of a part mention starting at ``position``; label None for the whole."""
        if self.tokens[position].concept == WHOLE:
            return 1, None
        for phrase, label in self.vocabulary.parts:
            if _phrase_at(self.tokens, position, phrase):
                return len(phrase), label
        return None

    def part_ending_at(self, position: int) -> tuple[int, str | None] | None:
        if self.tokens[position].concept == WHOLE:
            return 1, None
        for phrase, label in self.vocabulary.parts:
            start = position - len(phrase) + 1
            if start >= 0 and _phrase_at(self.tokens, start, phrase):
                return len(phrase), label
        return None

    def terms_at(self, position: int) -> list[Term]:
        """Terms whose whole phrase starts at ``position``, longest phrase first."""
        found = [
            term
            for term in self.vocabulary.starting_with(self.tokens[position])
            if _phrase_at(self.tokens, position, term.phrase)
        ]
        return sorted(found, key=lambda term: -len(term.phrase))

    def fallback_terms(self, token: Token) -> list[Term]:
        return [
            term
            for concept in token.fallbacks
            for term in self.vocabulary.by_first_key.get(concept, ())
            if len(term.phrase) == 1
        ]

    def is_value(self, token: Token) -> bool:
        known_value = token.concept is not None and token.concept not in {WHOLE, *PARTS}
        return known_value or bool(self.vocabulary.starting_with(token))

    # -- binding a value to a part
    def bind_forward(self, end: int) -> tuple[bool, str | None, bool]:
        """(found, part, through a list) of the noun after a value: ``black wings``, ``red, white wings``."""
        tokens, position, unknown_budget, through_list = self.tokens, end, 1, False
        previous_adjective = tokens[end - 1].adjective
        while position < len(tokens) and position < end + 8:
            token = tokens[position]
            part = self.part_at(position)
            if part is not None:
                return True, part[1], through_list
            if token.text in FACET_WORDS or token.text in INTENSIFIERS or token.text == "-":
                position += 1
                continue
            if token.text in CONJUNCTIONS:
                following = tokens[position + 1] if position + 1 < len(tokens) else None
                if previous_adjective and following is not None and following.adjective:
                    position, through_list = position + 1, True
                    continue
                break
            if self.is_value(token):
                owner = self.single_part_owner(token)
                if owner is not None:  # "black eyeline": a value only one part has names that part
                    return True, owner, through_list
                previous_adjective = token.adjective
                position += 1
                continue
            if unknown_budget and token.text.isalpha() and not self._is_structure(token):
                unknown_budget -= 1  # one unknown word: "black glossy wings"
                position += 1
                continue
            break
        return False, None, False

    def bind_backward(self, start: int) -> tuple[bool, str | None]:
        """(found, part) for a part named before its value: ``the wings are black``, ``wing_color::black``."""
        tokens, position = self.tokens, start - 1
        while position >= 0 and position >= start - 8:
            token = tokens[position]
            part = self.part_ending_at(position)
            if part is not None:
                return True, part[1]
            before = tokens[position - 1] if position > 0 else None
            skippable = (
                token.text in LINKERS
                or token.text in FACET_WORDS
                or token.text in INTENSIFIERS
                or token.adjective
                # a list of values ("wings are red, black and white"), never across a noun phrase
                or (token.text in {"and", "or", ","} and before is not None and before.adjective)
            )
            if not skippable:
                break
            position -= 1
        return False, None

    def single_part_owner(self, token: Token) -> str | None:
        labels = {term.part_label for term in self.vocabulary.starting_with(token)}
        if len(labels) == 1 and "" not in labels and not token.adjective:
            return next(iter(labels))
        return None

    # -- resolving a mention
    @staticmethod
    def resolve(terms: list[Term], fallback: list[Term], part: str | None) -> list[Term]:
        """The terms a value sets once bound to ``part`` (None: the whole object, or nothing named)."""
        if part is not None:
            return [term for term in terms if term.part_label == part] or [
                term for term in fallback if term.part_label == part
            ]
        wholes = [term for term in terms if term.part is None] or [
            term for term in fallback if term.part is None
        ]
        if wholes:
            return wholes
        owners = {term.part_label for term in terms}
        return terms if len(owners) == 1 else []  # "on dark" -> the one part that has it; never a fallback

    def modifier(self, start: int) -> tuple[bool, float]:
        """(negated, value) from the words just before a value: "no stripes", "slightly striped"."""
        negated, value = False, SET_VALUE
        for position in range(start - 1, max(-1, start - 4), -1):
            word = self.tokens[position].text
            if word in BREAKS or word in {",", ":", "and"}:
                break
            if word in NEGATORS:
                negated = True
            if word in HEDGES and position == start - 1:  # "slightly striped", not the noun after
                value = HEDGED_VALUE
        return negated, value

    def read(self) -> Reading:
        values: dict[str, float] = {}
        matches: list[Match] = []
        tokens, position = self.tokens, 0
        while position < len(tokens):
            token = tokens[position]
            if token.concept in ADJECTIVES and self._colour_modifier(position):
                self.used[position] = True  # "dark blue", "light green": a shade, not a lightness
                position += 1
                continue
            if token.concept == "one" and position and tokens[position - 1].text in PRONOUN_BEFORE_ONE:
                position += 1  # "each one", "which one": a pronoun, not a count
                continue
            chosen, length = self._recognise(position)
            if not chosen:
                position += 1
                continue
            negated, value = self.modifier(position)
            for offset in range(length):
                self.used[position + offset] = True
            if not negated:
                names = tuple(dict.fromkeys(term.attribute for term in chosen))
                for name in names:
                    values[name] = max(values.get(name, 0.0), value)
                words = " ".join(token.text for token in tokens[position : position + length])
                matches.append(Match(words, names, value))
            position += length
        unknown = tuple(
            dict.fromkeys(
                token.text
                for position, (token, used) in enumerate(zip(tokens, self.used, strict=True))
                if not used
                and self.part_at(position) is None
                and token.text.isalpha()
                and len(token.text) > 2
                and token.concept is None
                and not self._is_structure(token)
            )
        )
        return Reading(values, tuple(matches), unknown)

    def _recognise(self, position: int) -> tuple[list[Term], int]:
        """The attributes a value starting at ``position`` sets, and how many tokens it spans."""
        candidates = self.terms_at(position)
        by_length: dict[int, list[Term]] = {}
        for term in candidates:
            by_length.setdefault(len(term.phrase), []).append(term)
        fallback = self.fallback_terms(self.tokens[position])
        for length, terms in sorted(by_length.items(), reverse=True):
            chosen = self._bind_and_resolve(position, length, terms, fallback if length == 1 else [])
            if chosen:
                return chosen, length
        if fallback and 1 not in by_length:
            chosen = self._bind_and_resolve(position, 1, [], fallback)
            if chosen:
                return chosen, 1
        return [], 0

    def _bind_and_resolve(
        self, position: int, length: int, terms: list[Term], fallback: list[Term]
    ) -> list[Term]:
        bound, part, through_list = self.bind_forward(position + length)
        if bound:
            chosen = self.resolve(terms, fallback, part)
            if chosen or not through_list:
                return chosen
            # "squares, coloured blue, dark background": the list was a run of separate values, not one noun's
        return self.resolve(terms, fallback, self.bind_backward(position)[1])

    def _colour_modifier(self, position: int) -> bool:
        following = self.tokens[position + 1] if position + 1 < len(self.tokens) else None
        return (
            self.tokens[position].concept in LIGHTNESS
            and following is not None
            and following.concept in COLOURS
        )

    def _is_structure(self, token: Token) -> bool:
        return (
            token.text in NEGATORS
            or token.text in HEDGES
            or token.text in INTENSIFIERS
            or token.text in FACET_WORDS
            or token.text in LINKERS
            or token.text in NAME_STOPWORDS
            or token.text in CONJUNCTIONS
            or token.text in BREAKS
            or token.text in PREPOSITIONS
        )


def read_description(text: object, attribute_names: Sequence[str]) -> Reading:
    """Read ``text`` against ``attribute_names``; refuses non-text, over-long and unrecognised texts."""
    if not isinstance(text, str):
        raise UserClassError(f"a description must be text, got {type(text).__name__}")
    if len(text) > MAX_DESCRIPTION_CHARS:
        raise UserClassError(
            f"the description is {len(text)} characters long; use at most {MAX_DESCRIPTION_CHARS} "
            "(a few sentences about colours, patterns, shapes, sizes…)"
        )
    vocabulary = Vocabulary.from_names(attribute_names)
    reading = _Reader(tokenize(text), vocabulary).read()
    if not reading.values:
        shown = f" (read: {quote_value(text.strip())})" if text.strip() else ""
        raise UserClassError(
            f"nothing recognised in the description{shown}; describe it with this model's attributes, "
            f"e.g. {_examples(attribute_names)}"
        )
    return reading


def _examples(attribute_names: Sequence[str], count: int = 3) -> str:
    """A few attribute names from different groups, to show what a description can mention."""
    seen_groups: dict[str, str] = {}
    for name in attribute_names:
        seen_groups.setdefault(attribute_group(name), name)
    chosen = list(seen_groups.values())[:count] or list(attribute_names[:count])
    return ", ".join(repr(name) for name in chosen)
