"""The Kiwi label set and which modifiers may attach to which main entity.

Kept as plain data in one place so that the model, the evaluator, the LLM
prompts and the FHIR mapping all agree on one vocabulary; the guideline
(v1.1, tables 2-5) is the source.
"""

from __future__ import annotations

from typing import Final

ENTITY_TYPES: Final[tuple[str, ...]] = ("problem", "test", "drug", "treatment")

MODIFIER_TYPES: Final[tuple[str, ...]] = (
    "negation",
    "temporal",
    "severity",
    "condition",
    "uncertain",
    "subject",
    "bodyloc",
    "course",
    "labvalue",
    "reference_range",
    "strength",
    "dosage",
    "duration",
    "form",
    "frequency",
    "route",
)

ALLOWED_MODIFIERS: Final[dict[str, frozenset[str]]] = {
    "problem": frozenset(
        {
            "negation",
            "temporal",
            "severity",
            "condition",
            "uncertain",
            "subject",
            "bodyloc",
            "course",
        }
    ),
    "test": frozenset({"negation", "temporal", "labvalue", "reference_range"}),
    "drug": frozenset(
        {"negation", "temporal", "strength", "dosage", "duration", "form", "frequency", "route"}
    ),
    "treatment": frozenset({"negation", "temporal"}),
}

#: Modifiers that the guideline (3.1.3) lets overlap their entity's span.
NESTABLE_MODIFIERS: Final[frozenset[str]] = frozenset({"bodyloc", "course", "severity"})

RELATION_TYPE: Final[str] = "hasAttr"


def is_entity_type(label: str) -> bool:
    return label in ENTITY_TYPES


def is_modifier_type(label: str) -> bool:
    return label in MODIFIER_TYPES


def is_allowed(entity_type: str, modifier_type: str) -> bool:
    """Whether the guideline allows a ``hasAttr`` link between these two types."""
    return modifier_type in ALLOWED_MODIFIERS.get(entity_type, frozenset())
