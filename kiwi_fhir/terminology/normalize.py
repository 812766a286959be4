"""One normal form for code titles and note mentions, so a lookup is a dict hit.

The same function runs when the tables are built and when a mention is
looked up: whatever it does (case, accents, punctuation, plurals, the
"unspecified / NOS" qualifiers of ICD-10-CM titles, parenthetical
non-essential modifiers) happens on both sides, so it can be crude without
being wrong -- "diabetes" becomes "diabete" on both.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

_PAREN = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")
_QUALIFIER = re.compile(
    r"\b(?:unspecified organism|site not specified|unspecified|not otherwise specified|nos|"
    r"not elsewhere classified|nec)\b"
)
_NON_WORD = re.compile(r"[^a-z0-9]+")
# Words a mention may start with that no code title has.
LEADING_WORDS: Final = frozenset(
    {"a", "an", "the", "his", "her", "their", "patient", "patients", "any", "some", "this"}
)
# Formulation and packaging words after a drug name ("metoprolol XL",
# "albuterol HFA inhaler"): stripped from the end before a second lookup.
DRUG_SUFFIXES: Final = frozenset(
    {
        "sr",
        "er",
        "xr",
        "xl",
        "cr",
        "la",
        "dr",
        "hfa",
        "odt",
        "ec",
        "ds",
        "cd",
        "xt",
        "mdi",
        "inhaler",
        "inh",
        "tablet",
        "tab",
        "capsule",
        "cap",
        "injection",
        "inj",
        "iv",
        "im",
        "po",
        "oral",
        "solution",
        "suspension",
        "syrup",
        "elixir",
        "cream",
        "ointment",
        "gel",
        "patch",
        "drop",
        "spray",
        "nebulizer",
        "neb",
        "chewable",
        "extended",
        "release",
        "delayed",
    }
)


def _singular(word: str) -> str:
    if len(word) <= 3 or word.endswith(("ss", "us", "is", "ous")):
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("shes", "xes", "sses")):  # not "ches": headaches, aches
        return word[:-2]
    if word.endswith("s"):
        return word[:-1]
    return word


def normalise(text: str, *, mention: bool = True) -> str:
    """Lower-case ASCII words, singular, without qualifiers or parentheticals.

    ``mention`` also drops the leading words of a note's phrase ("the",
    "his" ...); never for a source term ("Hers disease" is not "disease")."""
    t = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    t = _PAREN.sub(" ", t)
    t = _QUALIFIER.sub(" ", t)
    t = t.replace("'s ", " ")
    words = [_singular(w) for w in _NON_WORD.sub(" ", t).split()]
    while mention and words and words[0] in LEADING_WORDS:
        words = words[1:]
    return " ".join(words)


def strip_drug_suffixes(key: str) -> str:
    """A normalised drug key without trailing formulation words ("" if nothing is left)."""
    words = key.split()
    while len(words) > 1 and words[-1] in DRUG_SUFFIXES:
        words.pop()
    return " ".join(words)


def plain(text: str) -> str:
    """The mention as written, for telling an exact hit from a normalised one."""
    return " ".join(text.lower().split())


def plain_term(term: str) -> str:
    """A source term as a note would write it: without its parenthetical
    non-essential modifiers and "unspecified"/"NOS" ("Congestive heart
    failure NOS" -> "congestive heart failure")."""
    t = _QUALIFIER.sub(" ", _PAREN.sub(" ", term.lower()))
    return " ".join(t.replace(" ,", ",").strip(" ,").split()).rstrip(",")
