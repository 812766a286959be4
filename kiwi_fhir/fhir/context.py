"""Sentence and section context that decides which resource a mention becomes.

The model links modifiers to entities, but two facts a receiving system
cares most about are often carried by the sentence rather than by a linked
modifier: *whose* finding it is ("His mother had breast cancer" -- subject
was annotated in 7 of 1,146 dev mentions and the model finds about a third),
and whether a test or treatment *happened* or is only planned
("Echocardiogram in the morning", "catheterization if the troponin rises").
A patient Condition for the mother's cancer, or a ``final`` Observation for
an echo nobody has done yet, is a clinical error, so these ConText-style
rules back the model up:

- **Family history.** A problem in a FAMILY HISTORY section, or in a
  sentence whose subject is a relative ("His mother had ...", "Family
  history of X in his father"), gets a ``subject`` modifier on the
  relative's words when the model gave it none, so the mapping's ``route``
  makes it a FamilyMemberHistory. Not when the relative only reports
  ("His mother states he had a fever").
- **Planned.** A test, treatment or drug in a sentence that plans or
  hypothesises it (will, plan, schedule, recommend, consider, pending, if,
  tomorrow, in the morning, start ...) or in a PLAN / RECOMMENDATIONS
  section, and with no result in the sentence (showed, was negative, a
  linked lab value), uses the entity mapping's ``planned`` mapping
  (ServiceRequest; MedicationStatement ``intended``).

The rules only read the note; the modifiers they add exist in the FHIR
output alone (the JSON, brat and gRPC results stay the model's), and their
``source`` says ``rule:...``.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Final

from kiwi_fhir.core import Entity, Extraction, Modifier
from kiwi_fhir.segment import sentences

# A section heading: a line starting with a capitalised phrase and a colon
# ("ASSESSMENT AND PLAN:", "Family history:").
_HEADING = re.compile(r"^[ \t]*([A-Z][A-Za-z0-9 /&,()'-]{1,60}?)[ \t]*:", re.MULTILINE)
_FAMILY_HEADING = re.compile(r"\b(?i:family)\b|\bFH\b")
_PLAN_HEADING = re.compile(r"\b(?:plans?|recommendations?|disposition|orders)\b", re.IGNORECASE)

_RELATIVE = re.compile(
    r"\b(?:grand(?:mother|father|parent)s?|mother|father|mom|dad|brothers?|sisters?|"
    r"sons?|daughters?|aunts?|uncles?|cousins?|siblings?|parents?|children|child|"
    r"family(?: members?)?)\b",
    re.IGNORECASE,
)
# Words that may come before a relative who is the sentence's subject.
_LEAD: Final = frozenset(
    [
        "his",
        "her",
        "their",
        "the",
        "patient's",
        "patients",
        "a",
        "an",
        "both",
        "maternal",
        "paternal",
        "and",
        "also",
        "family",
        "history",
        "fh",
        "of",
        "is",
        "positive",
        "significant",
        "notable",
        "for",
        "remarkable",
    ]
)
# A relative followed by one of these is the informant, not the subject.
_INFORMANT: Final = frozenset(
    [
        "reports",
        "reported",
        "states",
        "stated",
        "says",
        "said",
        "notes",
        "noted",
        "brought",
        "brings",
        "accompanied",
        "accompanies",
        "called",
        "denies",
        "denied",
        "gives",
        "gave",
        "provides",
        "provided",
        "thinks",
        "believes",
        "feels",
        "felt",
        "wants",
        "requests",
        "asked",
        "is_here",
        "present",
        "presents",
        "who",
    ]
)
_FAMILY_PHRASE = re.compile(r"\bfamily\s+(?:medical\s+)?history\b|^\s*FH\b", re.IGNORECASE)
_AFTER_ENTITY = re.compile(
    r"^\s*,?\s*(?:in|of|on)\s+(?:(?:his|her|their|the|a|both|patient's)\s+)?"
    r"(?:(?:maternal|paternal)\s+)?$",
    re.IGNORECASE,
)

_PLAN_CUE = re.compile(
    r"\b(?:will|plan(?:s|ned)?|to be (?:done|obtained|performed|scheduled)|schedul(?:e|ed)|"
    r"recommend(?:s|ed)?|consider(?:ing)?|pending|obtain|if|tomorrow|"
    r"in the (?:morning|a\.?m\.?)|next (?:week|month|visit)|follow[- ]up|"
    r"(?:re)?start|begin|initiate)\b",
    re.IGNORECASE,
)
# Drugs: only starting one is a plan ("Tylenol if needed" is PRN, "will
# continue aspirin" a current medication).
_DRUG_CUE = re.compile(
    r"\b(?:(?:re)?start(?:ing)?|begin|initiat(?:e|ing)|add|prescrib(?:e|ing)|"
    r"will (?:start|begin|give|add|prescribe|try)|plan(?:s|ned)? to (?:start|begin|give|add))\b",
    re.IGNORECASE,
)
_RESULT_CUE = re.compile(
    r"\b(?:show(?:s|ed)|reveal(?:s|ed)|demonstrat(?:es|ed)|reviewed|"
    r"(?:was|were|is|are)\s+(?:normal|negative|positive|unremarkable|elevated|abnormal|"
    r"within normal limits))\b",
    re.IGNORECASE,
)
_PLANNABLE: Final = frozenset({"test", "treatment", "drug"})


@dataclass(frozen=True)
class Context:
    """What the rules add to one entity: extra modifiers, planned or not."""

    modifiers: tuple[Modifier, ...] = ()
    planned: bool = False


class ContextFinder:
    """Sentences and section headings of one note, found once for all its entities."""

    def __init__(self, extraction: Extraction) -> None:
        self._ex = extraction
        self._text = extraction.document.text
        self._sentences = sentences(self._text)
        self._headings = [(m.start(), m.start(1), m.end(1)) for m in _HEADING.finditer(self._text)]
        # bisect keys: a long note has thousands of entities, sentences and headings
        self._starts = [a for a, _ in self._sentences]
        self._heading_starts = [h[0] for h in self._headings]

    def of(self, entity: Entity) -> Context:
        sent = self._sentence(entity.start)
        heading = self._heading(entity.start)
        linked = self._ex.modifiers_of(entity.id)
        mods: tuple[Modifier, ...] = ()
        if entity.label == "problem" and not any(m.label == "subject" for m in linked):
            rel = self._relative(entity, sent, heading)
            if rel is not None:
                a, b = rel
                mods = (
                    Modifier(f"{entity.id}.subject", "subject", a, b, self._text[a:b],
                             source="rule:family-context"),
                )  # fmt: skip
        planned = entity.label in _PLANNABLE and self._planned(entity, sent, heading, linked)
        return Context(mods, planned)

    def _sentence(self, pos: int) -> tuple[int, int]:
        k = bisect.bisect_right(self._starts, pos) - 1  # sentences are sorted, disjoint
        if k >= 0 and pos < self._sentences[k][1]:
            return self._sentences[k]
        return pos, pos

    def _heading(self, pos: int) -> tuple[int, int] | None:
        k = bisect.bisect_right(self._heading_starts, pos) - 1
        return None if k < 0 else self._headings[k][1:]

    def _relative(
        self, entity: Entity, sent: tuple[int, int], heading: tuple[int, int] | None
    ) -> tuple[int, int] | None:
        text = self._text
        s, e = sent
        body = s
        generic: tuple[int, int] | None = None
        if heading is not None and s <= heading[0] < e:  # "FAMILY HISTORY: Mother had ..."
            body = text.index(":", heading[1]) + 1
        for m in _RELATIVE.finditer(text, body, entity.start):
            lead = re.findall(r"[\w']+", text[body : m.start()].lower())
            nxt = re.match(r"\s*(?:'s\s+)?([\w']+)(?:\s+(here))?", text[m.end() : e])
            follow = "" if nxt is None else nxt.group(1).lower() + ("_here" if nxt.group(2) else "")
            if all(w in _LEAD for w in lead) and follow not in _INFORMANT:
                if not m.group().lower().startswith("family"):
                    return m.start(), m.end()
                generic = generic or (m.start(), m.end())
        after = _RELATIVE.search(text, entity.end, e)
        if after is not None and _AFTER_ENTITY.match(text[entity.end : after.start()]):
            return after.start(), after.end()  # "... of diabetes in his father"
        if generic is not None:  # "Family history of ...": no one named
            return generic
        if heading is not None and _RELATIVE.fullmatch(text, *heading):  # "Mother: ..."
            return heading
        if heading is not None and _FAMILY_HEADING.search(text[heading[0] : heading[1]]):
            fam = re.search(r"(?i:family)|FH", text[heading[0] : heading[1]])
            if fam is not None:
                return heading[0] + fam.start(), heading[0] + fam.end()
        phrase = _FAMILY_PHRASE.search(text, body, entity.start)
        if phrase is not None:
            word = re.search(r"family|FH", text[phrase.start() : phrase.end()], re.IGNORECASE)
            if word is not None:
                return phrase.start() + word.start(), phrase.start() + word.end()
        return None

    def _planned(
        self,
        entity: Entity,
        sent: tuple[int, int],
        heading: tuple[int, int] | None,
        linked: tuple[Modifier, ...],
    ) -> bool:
        if any(m.label == "labvalue" for m in linked):
            return False  # it has a result
        s, e = sent
        if heading is not None and s <= heading[0] < e:
            s = self._text.index(":", heading[1]) + 1
        clause = self._text[s:e]
        if _RESULT_CUE.search(clause):
            return False
        if (_DRUG_CUE if entity.label == "drug" else _PLAN_CUE).search(clause):
            return True
        if entity.label == "drug":
            return False  # a medication list under PLAN is what the patient takes
        return heading is not None and bool(
            _PLAN_HEADING.search(self._text[heading[0] : heading[1]])
        )
