"""The validated mapping as frozen values (what :mod:`.mapping` builds from YAML).

Kept apart from the loader so the builder and parsers depend on plain types,
not on YAML or file locations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

#: parser name -> FHIR types it can produce (``Components``/``TimingRepeat`` are ours).
PARSER_TYPES: Final[dict[str, frozenset[str]]] = {
    "coded": frozenset({"CodeableConcept"}),
    "text": frozenset({"string"}),
    "flag": frozenset({"boolean"}),
    "temporal": frozenset({"dateTime", "Period", "Age", "string"}),
    "labvalue": frozenset({"Quantity", "string", "Components"}),
    "reference_range": frozenset({"ReferenceRange"}),
    "strength": frozenset({"Ratio"}),
    "dose": frozenset({"Quantity", "Range"}),
    "frequency": frozenset({"TimingRepeat"}),
    "duration": frozenset({"Duration"}),
}


@dataclass(frozen=True)
class Coding:
    system: str
    code: str
    display: str


@dataclass(frozen=True)
class Rule:
    """How one modifier type lands on one resource (see resources.yaml header)."""

    modifier: str
    kind: str
    target: str = ""  # path for set/path, extension url for extension, mapping for route
    value: Any = None
    value_type: str = ""
    parse: str = ""
    table: str = ""
    types: tuple[str, ...] = ()
    on: str = ""
    components: str = ""
    as_needed: str = ""
    also: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Contained:
    resource: str
    reference: str
    code: str


@dataclass(frozen=True)
class EntityMapping:
    key: str
    resource: str
    code: str
    subject: str
    defaults: Mapping[str, Any]
    rules: tuple[Rule, ...]
    contained: Contained | None = None
    encounter: str = ""
    planned: str = ""  # mapping for a planned / hypothetical mention (fhir/context.py)
    entity: str = ""  # the entity type it serves; a derived mapping names it with `for`

    def rule(self, modifier: str) -> Rule | None:
        return next((r for r in self.rules if r.modifier == modifier), None)


@dataclass(frozen=True)
class Codes:
    coded: Mapping[str, Mapping[str, Coding]]
    relationship_prefixes: tuple[str, ...]
    frequency: Mapping[str, Mapping[str, Any]]
    units: Mapping[str, str]
    time_units: Mapping[str, str]
    blood_pressure: Mapping[str, Coding]
    number_words: Mapping[str, int]
    ucum: str


@dataclass(frozen=True)
class FhirMapping:
    extensions: Mapping[str, str]
    identifier_system: str
    document_identifier_system: str
    entities: Mapping[str, EntityMapping]
    codes: Codes
    source: str
