"""The words the description reader knows: a curated thesaurus of general English and the word classes of its
grammar (data tables only; the reading itself is :mod:`acmr_core.describe.reader`).

Thesaurus tables map a concept to the words that mean it (the concept's own name is one of them); both the
text and the bundle's attribute names are read through them, so ``violet`` in a description meets
``purple`` in an attribute name.
"""

from __future__ import annotations

import re

# ---- the thesaurus: general English, concept -> words (the concept's own name is one of them) ------------

COLOURS = {
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
LIGHTNESS = {
    "dark": "dark darkened dim shadowy gloomy unlit",
    "light": "light pale bright lit pastel",
}
PATTERNS = {
    "striped": "striped stripe stripy stripey streaked streak streaky banded band barred lined pinstriped",
    "spotted": "spotted spot spotty dotted dot dotty speckled speckle flecked fleck freckled dappled",
    "plain": "plain solid uniform unpatterned patternless unmarked",
}
SIZES = {
    "small": "small little smaller smallest compact mini miniature petite",
    "tiny": "tiny minute minuscule teeny wee",
    "medium": "medium midsize midsized moderate",
    "large": "large big bigger biggest larger largest sizable sizeable",
    "huge": "huge enormous giant gigantic massive immense colossal",
    "long": "long longer elongated lengthy",
    "short": "short shorter stubby stumpy",
}
COUNTS = {
    "one": "one single lone sole solo 1",
    "two": "two pair couple double twin 2",
    "three": "three trio triple triplet threesome 3",
    "four": "four quartet 4",
    "five": "five 5",
    "solitary": "solitary alone loner",
}
SHAPES = {
    "circle": "circle circular round rounded ball disc disk sphere orb ring",
    "square": "square squared squarish box cube block rectangle rectangular",
    "triangle": "triangle triangular pyramid wedge",
}
PARTS = {
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
WHOLE_WORDS = "body bird animal creature plumage feather object thing item figure shape"
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
ADJECTIVES = frozenset({*COLOURS, *LIGHTNESS, *PATTERNS, *SIZES, *COUNTS})
CONCEPT_OF: dict[str, str] = {
    word: concept
    for table in (COLOURS, LIGHTNESS, PATTERNS, SIZES, COUNTS, SHAPES, PARTS)
    for concept, words in table.items()
    for word in words.split()
} | dict.fromkeys(WHOLE_WORDS.split(), WHOLE)

#: Multi-word expressions rewritten before tokenising (text and names alike).
REWRITES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
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
DATASET_SPELLINGS = {
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
IRREGULAR_PLURALS = {"teeth": "tooth", "feet": "foot", "geese": "goose", "mice": "mouse", "people": "person"}


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


# ---- word classes used by the reader ---------------------------------------------------------------------

ARTICLES = frozenset({"a", "an", "the", "its", "their", "his", "her", "some", "any"})
NEGATORS = frozenset({"no", "not", "without", "never", "non", "nor", "neither", "lacking", "lacks"})
HEDGES = frozenset({"slightly", "somewhat", "partly", "partially", "faintly", "mildly", "semi"})
INTENSIFIERS = frozenset({"very", "really", "extremely", "quite", "rather", "fairly", "pretty", "so", "too"})
#: Words saying which facet a value is (skipped when binding: "light-coloured background", "wing colour red").
FACET_WORDS = _word_set(
    "colour color coloured colored hue shade tone toned pattern patterned shape shaped size sized count "
    "number length like"
)
#: Words between a part and its value after it ("the wings are black", "wings: black").
LINKERS = _word_set(
    "is are was were be been being that which look looks appear appears seem seems mostly mainly all "
    "entirely completely largely : -"
)
CONJUNCTIONS = frozenset({"and", "or", "&", "/", ","})
BREAKS = frozenset({".", ";", "!", "?", "(", ")", "but", "while", "whereas"})
PRONOUN_BEFORE_ONE = frozenset({"each", "every", "which", "this", "that", "another", "other", "no"})
PREPOSITIONS = _word_set(
    "on in at of with against over from by for to into onto inside near above below behind beside has have "
    "having it they them this these those there"
)
# Words dropped from attribute names when building value phrases ("about_the_same_as_head" -> "same").
NAME_STOPWORDS = frozenset(
    {"the", "a", "an", "of", "and", "or", "in", "on", "to", "with", "as", "about", "has", "have", "is", "are"}
)
# Group words that mean the whole object (CUB's has_primary_color) or are structure, not a part.
WHOLE_GROUP_WORDS = frozenset({"has", "primary", "main", "overall", "general"})
