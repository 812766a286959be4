"""Core value types: what a note is and what we found in it.

Frozen dataclasses only. FHIR resources, protobuf messages and database
rows are built from these at the edges, never stored inside them.

Offsets: every ``start``/``end`` is a Python ``str`` index (code points) into
``Document.text`` -- the note *after* any decoding we did (base64, charset,
HL7 escapes, RTF/HTML to text). ``Extraction`` checks on construction that
each mention's ``text`` equals ``document.text[start:end]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kiwi_fhir.schema import ENTITY_TYPES, MODIFIER_TYPES, is_allowed
from kiwi_fhir.source import Source


@dataclass(frozen=True)
class Document:
    """One clinical note: its decoded text plus where it came from.

    ``source`` carries the facts the FHIR layer needs (patient, encounter,
    date, document type, status, structured results; :mod:`kiwi_fhir.source`).
    It takes no part in equality or hashing: a note is its id and text.
    """

    id: str
    text: str
    source: Source = field(default_factory=Source, compare=False, hash=False)


@dataclass(frozen=True)
class Mention:
    """A labelled character span of a note.

    ``fragments`` is empty for a contiguous span; for a discontinuous brat
    span it lists the pieces, and ``start``/``end`` is their overall extent.
    ``source`` names the backend that produced it (None for gold).
    """

    id: str
    label: str
    start: int
    end: int
    text: str
    confidence: float | None = None
    fragments: tuple[tuple[int, int], ...] = ()
    source: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ValueError(f"{self.id}: bad offsets {self.start}-{self.end}")
        if len(self.text) != self.end - self.start:
            raise ValueError(f"{self.id}: text length does not match offsets")

    @property
    def span(self) -> tuple[int, int]:
        return (self.start, self.end)

    def pieces(self) -> tuple[tuple[int, int], ...]:
        return self.fragments or ((self.start, self.end),)


@dataclass(frozen=True)
class Code:
    """A terminology code for a mention, with how sure the match is.

    ``method`` is how it was found (exact, normalised, abbreviation): receivers
    threshold on ``score`` or trust only some methods.
    """

    system: str  # the code system's URI, e.g. http://hl7.org/fhir/sid/icd-10-cm
    code: str
    display: str = ""
    score: float = 1.0
    method: str = "exact"
    version: str = ""


@dataclass(frozen=True)
class Entity(Mention):
    """A main clinical entity: problem, test, drug or treatment.

    ``codes`` are terminology codes for it (``kiwi_fhir.terminology``), best
    first within each system; empty until coded.
    """

    codes: tuple[Code, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.label not in ENTITY_TYPES:
            raise ValueError(f"{self.id}: {self.label!r} is not a main entity type")


@dataclass(frozen=True)
class Modifier(Mention):
    """One of the 16 modifier types; meaningful only through a Relation."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.label not in MODIFIER_TYPES:
            raise ValueError(f"{self.id}: {self.label!r} is not a modifier type")


@dataclass(frozen=True)
class Relation:
    """``hasAttr``: the modifier describes the entity."""

    entity_id: str
    modifier_id: str
    confidence: float | None = None
    id: str = ""


@dataclass(frozen=True)
class Extraction:
    """Everything found in one document, and by what."""

    document: Document
    entities: tuple[Entity, ...] = ()
    modifiers: tuple[Modifier, ...] = ()
    relations: tuple[Relation, ...] = ()
    model: str = ""
    backend: str = ""

    def __post_init__(self) -> None:
        text = self.document.text
        ids: dict[str, Mention] = {}
        for m in (*self.entities, *self.modifiers):
            if m.id in ids:
                raise ValueError(f"duplicate mention id {m.id}")
            if text[m.start : m.end] != m.text:
                raise ValueError(f"{m.id}: text does not match note[{m.start}:{m.end}]")
            ids[m.id] = m
        for r in self.relations:
            ent, mod = ids.get(r.entity_id), ids.get(r.modifier_id)
            if not isinstance(ent, Entity) or not isinstance(mod, Modifier):
                raise ValueError(f"relation {r.entity_id}->{r.modifier_id} names unknown mentions")

    def entity(self, mention_id: str) -> Entity:
        return next(e for e in self.entities if e.id == mention_id)

    def modifier(self, mention_id: str) -> Modifier:
        return next(m for m in self.modifiers if m.id == mention_id)

    def modifiers_of(self, entity_id: str) -> tuple[Modifier, ...]:
        wanted = {r.modifier_id for r in self.relations if r.entity_id == entity_id}
        return tuple(m for m in self.modifiers if m.id in wanted)

    def allowed_relations(self) -> tuple[Relation, ...]:
        """Relations whose type pair the guideline allows."""
        lab = {m.id: m.label for m in (*self.entities, *self.modifiers)}
        return tuple(r for r in self.relations if is_allowed(lab[r.entity_id], lab[r.modifier_id]))
