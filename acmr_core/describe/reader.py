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
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from acmr_core.bundle.catalog import GROUP_SEPARATORS, attribute_group
from acmr_core.errors import UserClassError

#: Most example images read for one class (each is a backbone forward: about half a second on a CPU).
MAX_EXAMPLE_IMAGES = 10
#: Longest description accepted (a few paragraphs); longer texts are refused, not silently cut.
MAX_DESCRIPTION_CHARS = 2000
SET_VALUE = 1.0
HEDGED_VALUE = 0.5

# ---- the thesaurus: general English, concept -> words (the concept's own name is one of them) ------------

_COLOURS = {
    "red": "red crimson scarlet ruby maroon cherry vermilion carmine burgundy reddish",
    "orange": "orange tangerine apricot amber orangish orangey",
    "yellow": "yellow gold golden lemon mustard canary yellowish",
    "green": "green emerald lime jade mint verdant greenish",
    "olive": "olive khaki",
    "blue": "blue azure navy cobalt sapphire cyan turquoise teal cerulean bluish",
    "purple": "purple violet lilac lavender mauve magenta plum amethyst indigo purplish",
    "pink": "pink rose rosy salmon fuchsia pinkish",
    "brown": "brown chocolate coffee bronze umber sepia brownish",
    "buff": "buff beige tan cream fawn sandy",
    "rufous": "rufous chestnut rust rusty ginger russet cinnamon auburn",
    "grey": "grey gray silver silvery ash ashy slate charcoal greyish grayish",
    "white": "white snowy ivory whitish",
    "black": "black jet ebony inky blackish",
    "iridescent": "iridescent shimmering opalescent metallic",
    "multicolored": "multicolored multicoloured multicolor multicolour colorful colourful variegated motley",
}
_LIGHTNESS = {
    "dark": "dark darkened dim shadowy gloomy unlit",
    "light": "light pale bright lit pastel",
}
_PATTERNS = {
    "striped": "striped stripe stripy stripey streaked streak streaky banded band barred lined pinstriped",
    "spotted": "spotted spot spotty dotted dot dotty speckled speckle flecked fleck freckled dappled",
    "plain": "plain solid uniform unpatterned patternless unmarked",
}
_SIZES = {
    "small": "small little smaller smallest compact mini miniature petite",
    "tiny": "tiny minute minuscule teeny wee",
    "medium": "medium midsize midsized moderate",
    "large": "large big bigger biggest larger largest sizable sizeable",
    "huge": "huge enormous giant gigantic massive immense colossal",
    "long": "long longer elongated lengthy",
    "short": "short shorter stubby stumpy",
}
_COUNTS = {
    "one": "one single lone sole solo 1",
    "two": "two pair couple double twin 2",
    "three": "three trio triple triplet threesome 3",
    "four": "four quartet 4",
    "five": "five 5",
    "solitary": "solitary alone loner",
}
_SHAPES = {
    "circle": "circle circular round rounded ball disc disk sphere orb ring",
    "square": "square squared squarish box cube block rectangle rectangular",
    "triangle": "triangle triangular pyramid wedge",
}
_PARTS = {
    "bill": "bill beak",
    "leg": "leg foot feet",
    "breast": "breast chest",
    "belly": "belly stomach tummy abdomen",
    "underparts": "underparts underside underbody",
    "upperparts": "upperparts upperside",
    "forehead": "forehead brow",
    "background": "background backdrop",
}
#: Words for the whole object: a value bound to one of them describes the object, not a part of it.
WHOLE = "(whole)"
_WHOLE_WORDS = "body bird animal creature plumage feather object thing item figure shape"
#: Concept -> concepts tried, in order, when the group a value binds to has no attribute for the concept.
FALLBACKS: dict[str, tuple[str, ...]] = {
    "black": ("dark",),
    "white": ("light",),
    "tiny": ("small",),
    "huge": ("large",),
    "solitary": ("one",),
    "olive": ("green",),
    "rufous": ("brown",),
}
#: Adjectives: a value that can stand in a list before its noun ("red, black and white wings").
ADJECTIVES = frozenset({*_COLOURS, *_LIGHTNESS, *_PATTERNS, *_SIZES, *_COUNTS})
_CONCEPT_OF: dict[str, str] = {
    word: concept
    for table in (_COLOURS, _LIGHTNESS, _PATTERNS, _SIZES, _COUNTS, _SHAPES, _PARTS)
    for concept, words in table.items()
    for word in words.split()
} | dict.fromkeys(_WHOLE_WORDS.split(), WHOLE)

#: Multi-word expressions rewritten before tokenising (text and names alike).
_REWRITES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (
            r"\b(?:no|without(?: any)?|not any|free of)\s+(?:pattern|patterns|markings?|marks|design)\b",
            "plain",
        ),
        (r"\b(?:very|extremely|really|super)\s+(?:small|little)\b", "tiny"),
        (r"\b(?:very|extremely|really|super)\s+(?:large|big)\b", "huge"),
        (r"\b(?:a\s+)?trio\s+of\b", "three"),
        (r"\b(?:a\s+)?(?:pair|couple)\s+of\b", "two"),
        (r"\bmulti[\s_-]+", "multi"),
        (r"\bunder[\s_-]+parts\b", "underparts"),
        (r"\bupper[\s_-]+parts\b", "upperparts"),
        (r"\bunder[\s_-]*tail\b", "under tail"),
        (r"\bupper[\s_-]*tail\b", "upper tail"),
        (r"\bmedium[\s_-]+sized\b", "medium"),
    )
)
#: Dataset spellings that are not English words (AwA2's predicates), spelled out for both sides.
_DATASET_SPELLINGS = {
    "longleg": "long leg",
    "longneck": "long neck",
    "toughskin": "tough skin",
    "chewteeth": "chew teeth",
    "meatteeth": "meat teeth",
    "buckteeth": "buck teeth",
    "strainteeth": "strain teeth",
    "flys": "flies",
    "quadrapedal": "quadrupedal",
    "newworld": "new world",
    "oldworld": "old world",
    "nestspot": "nest spot",
}
_IRREGULAR_PLURALS = {"teeth": "tooth", "feet": "foot", "geese": "goose", "mice": "mouse", "people": "person"}


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


# ---- word classes used by the reader ---------------------------------------------------------------------

_ARTICLES = frozenset({"a", "an", "the", "its", "their", "his", "her", "some", "any"})
_NEGATORS = frozenset({"no", "not", "without", "never", "non", "nor", "neither", "lacking", "lacks"})
_HEDGES = frozenset({"slightly", "somewhat", "partly", "partially", "faintly", "mildly", "semi"})
_INTENSIFIERS = frozenset({"very", "really", "extremely", "quite", "rather", "fairly", "pretty", "so", "too"})
#: Words saying which facet a value is (skipped when binding: "light-coloured background", "wing colour red").
_FACET_WORDS = _word_set(
    "colour color coloured colored hue shade tone toned pattern patterned shape shaped size sized count "
    "number length like"
)
#: Words between a part and its value after it ("the wings are black", "wings: black").
_LINKERS = _word_set(
    "is are was were be been being that which look looks appear appears seem seems mostly mainly all "
    "entirely completely largely : -"
)
_CONJUNCTIONS = frozenset({"and", "or", "&", "/", ","})
_BREAKS = frozenset({".", ";", "!", "?", "(", ")", "but", "while", "whereas"})
_PRONOUN_BEFORE_ONE = frozenset({"each", "every", "which", "this", "that", "another", "other", "no"})
_PREPOSITIONS = _word_set(
    "on in at of with against over from by for to into onto inside near above below behind beside has have "
    "having it they them this these those there"
)
# Words dropped from attribute names when building value phrases ("about_the_same_as_head" -> "same").
_NAME_STOPWORDS = frozenset(
    {"the", "a", "an", "of", "and", "or", "in", "on", "to", "with", "as", "about", "has", "have", "is", "are"}
)
# Group words that mean the whole object (CUB's has_primary_color) or are structure, not a part.
_WHOLE_GROUP_WORDS = frozenset({"has", "primary", "main", "overall", "general"})
_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?|\d+|[.,;:!?()/&-]")
_PARENTHESISED = re.compile(r"\([^)]*\)")
_COMPARISON_TAIL = re.compile(r"[\s_-]+(?:than|as)[\s_-]+\w+$")


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
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
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
    concept = _CONCEPT_OF.get(word) or _CONCEPT_OF.get(singular)
    return Token(word, frozenset({concept}) if concept else _forms(word), concept)


def tokenize(text: str) -> list[Token]:
    """Normalise ``text`` (case, accents, separators, multi-word expressions) into tokens."""
    text = unicodedata.normalize("NFKC", text).casefold().replace("_", " ").replace("’", "'")
    text = re.sub(r"::", " : ", text)
    for pattern, replacement in _REWRITES:
        text = pattern.sub(replacement, text)
    tokens: list[Token] = []
    for raw in _TOKEN.findall(text):
        word = raw
        negated = word.endswith("n't")
        if negated:
            word = word[:-3]
        word = word.removesuffix("'s").replace("'", "")
        for piece in _DATASET_SPELLINGS.get(word, word).split():
            if piece not in _ARTICLES:
                tokens.append(_token(piece))
        if negated:
            tokens.append(_token("not"))
    return tokens


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


def _split_name(name: str) -> tuple[str, str]:
    """(group, value) of an attribute name; ("", name) for an ungrouped one."""
    group = attribute_group(name)
    if not group:
        return "", name
    separator = next(sep for sep in GROUP_SEPARATORS if sep in name)
    return group, name.split(separator, 1)[1]


def _part_of(group: str) -> tuple[tuple[frozenset[str], ...], str] | None:
    """The part a group is about (``has_wing_color`` -> wing), or None for the whole object."""
    words = [
        token
        for token in tokenize(group)
        if token.text not in _FACET_WORDS and token.text not in _WHOLE_GROUP_WORDS
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
            and token.text not in _NAME_STOPWORDS
            and token.text not in _FACET_WORDS
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
        group, value = _split_name(name)
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
        known_value = token.concept is not None and token.concept not in {WHOLE, *_PARTS}
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
            if token.text in _FACET_WORDS or token.text in _INTENSIFIERS or token.text == "-":
                position += 1
                continue
            if token.text in _CONJUNCTIONS:
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
                token.text in _LINKERS
                or token.text in _FACET_WORDS
                or token.text in _INTENSIFIERS
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
            if word in _BREAKS or word in {",", ":", "and"}:
                break
            if word in _NEGATORS:
                negated = True
            if word in _HEDGES and position == start - 1:  # "slightly striped", not the noun after
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
            if token.concept == "one" and position and tokens[position - 1].text in _PRONOUN_BEFORE_ONE:
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
            self.tokens[position].concept in _LIGHTNESS
            and following is not None
            and following.concept in _COLOURS
        )

    def _is_structure(self, token: Token) -> bool:
        return (
            token.text in _NEGATORS
            or token.text in _HEDGES
            or token.text in _INTENSIFIERS
            or token.text in _FACET_WORDS
            or token.text in _LINKERS
            or token.text in _NAME_STOPWORDS
            or token.text in _CONJUNCTIONS
            or token.text in _BREAKS
            or token.text in _PREPOSITIONS
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
        shown = f" (read: {text.strip()[:60]!r})" if text.strip() else ""
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


# ---- scoring descriptions (tests and benchmarks/bench_describe.py) -----------------------------------------


@dataclass(frozen=True)
class DescriptionScore:
    """Mentioned attribute groups read exactly right, and unmentioned groups where anything was set."""

    descriptions: int
    mentioned: int
    right: int
    unmentioned: int
    wrongly_set: int

    @property
    def right_share(self) -> float:
        return self.right / self.mentioned if self.mentioned else 1.0

    @property
    def wrongly_set_share(self) -> float:
        return self.wrongly_set / self.unmentioned if self.unmentioned else 0.0


def score_descriptions(
    cases: Sequence[Mapping[str, Any]], attribute_names: Sequence[str]
) -> DescriptionScore:
    """Score ``cases`` (``{"text", "groups": {group: [values meant]}}``, values as written after the group).

    A mentioned group is right only when the attributes set (≥ 0.5) in it are exactly the intended ones.
    """
    groups = sorted({attribute_group(name) for name in attribute_names})
    right = mentioned = wrong = unmentioned = 0
    for case in cases:
        try:
            values = read_description(case["text"], attribute_names).values
        except UserClassError:
            values = {}
        for group in groups:
            in_group = [name for name in attribute_names if attribute_group(name) == group]
            got = {name for name in in_group if values.get(name, 0.0) >= 0.5}
            meant = case["groups"].get(group)
            if meant:
                wanted = {name for name in in_group if _split_name(name)[1] in meant}
                mentioned, right = mentioned + 1, right + (got == wanted)
            else:
                unmentioned, wrong = unmentioned + 1, wrong + bool(got)
    return DescriptionScore(len(cases), mentioned, right, unmentioned, wrong)


# ---- attributes from example images ------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageReadings:
    """What the model reads in example images of a class: one row per image (values in [0, 1]), averaged."""

    attribute_names: tuple[str, ...]
    labels: tuple[str, ...]  # one per image read
    values: np.ndarray  # (images, attributes), each row the semantic decoder's reading of one image
    refused: tuple[tuple[str, str], ...] = ()  # (image, why) for the images that could not be read

    @property
    def average(self) -> dict[str, float]:
        mean = self.values.mean(axis=0)
        return {name: round(float(value), 4) for name, value in zip(self.attribute_names, mean, strict=True)}

    def rows(self, count: int | None = None) -> tuple[list[str], list[list[object]]]:
        """(header, rows) of the strongest average attributes with each image's reading and the spread
        (largest minus smallest reading: where the images disagree)."""
        mean = self.values.mean(axis=0)
        order = np.argsort(-mean, kind="stable")[: count or len(mean)]
        header = ["attribute", "average", "spread", *self.labels]
        rows = [
            [
                self.attribute_names[index],
                round(float(mean[index]), 2),
                round(float(np.ptp(self.values[:, index])), 2),
                *(round(float(value), 2) for value in self.values[:, index]),
            ]
            for index in order
        ]
        return header, rows
