"""Where a note came from: the typed facts a parser read beside the text.

Every input format (HL7 v2, FHIR DocumentReference, CDA in either, a text
file, a gRPC text job) fills one :class:`Source`; the FHIR layer, the
service's de-duplication and the extractor routing read it. Typed fields
rather than a ``dict[str, str]`` so a misspelt key is a type error, not a
silently missing subject, and so structured results stay structured
(they once travelled as JSON inside a string).

Values are kept as the sender gave them (status codes from HL7 tables or
FHIR value sets, dates already turned into FHIR dateTime strings): the
FHIR layer decides what they mean (:mod:`kiwi_fhir.fhir.status`).

:func:`to_json` / :func:`from_json` are the one serialized form (the
``--format json`` output and the stored job results), so a Source read
back equals the one written.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from enum import StrEnum
from typing import Any


class DocumentEvent(StrEnum):
    """What an MDM event (T05-T11) or a FHIR ``relatesTo`` says the note does."""

    ADDENDUM = "addendum"  # T05/T06, relatesTo appends: adds to the parent
    EDIT = "edit"  # T07/T08: the parent's text corrected
    REPLACE = "replace"  # T09/T10, relatesTo replaces: a new version of the parent
    CANCEL = "cancel"  # T11: the parent withdrawn


@dataclass(frozen=True)
class Identifier:
    """A business identifier; ``assigner`` names the assigning authority."""

    value: str
    system: str = ""
    assigner: str = ""

    @property
    def token(self) -> str:
        """``system|value``, the FHIR search token (``|value`` without a system)."""
        return f"{self.system}|{self.value}"


@dataclass(frozen=True)
class Ref:
    """Whom or what a note is about: a literal reference the sender's server
    resolves (``Patient/1``) or an identifier."""

    reference: str = ""
    identifier: Identifier | None = None


@dataclass(frozen=True)
class Coding:
    """A coded value with its label (the document type)."""

    code: str = ""
    system: str = ""
    text: str = ""


@dataclass(frozen=True)
class LabResult:
    """One structured OBX (NM, SN, CWE/CE/CNE, DT/TS/DTM), values as sent."""

    set_id: str = ""
    value_type: str = ""
    code: str = ""
    display: str = ""
    system: str = ""
    unit: str = ""
    range: str = ""
    flag: str = ""
    status: str = ""  # OBX-11
    date: str = ""  # OBX-14
    value: str = ""
    comparator: str = ""  # SN
    separator: str = ""
    value2: str = ""
    value_code: str = ""  # CWE
    value_display: str = ""
    value_system: str = ""
    value_datetime: str = ""
    notes: tuple[str, ...] = ()  # NTE segments after this OBX


@dataclass(frozen=True)
class ResultGroup:
    """Structured results of one OBR (a DiagnosticReport) or of none
    (``set_id`` empty: results without a report, e.g. under a TXA)."""

    results: tuple[LabResult, ...] = ()
    set_id: str = ""  # OBR-1, or the OBR's position when OBR-1 is empty
    code: str = ""
    display: str = ""
    system: str = ""
    status: str = ""  # OBR-25
    date: str = ""  # OBR-7
    id: str = ""  # OBR-3 filler order number
    notes: tuple[str, ...] = ()  # NTE segments after the OBR, before its first OBX


@dataclass(frozen=True)
class Source:
    """Everything known about a note besides its text (all optional)."""

    channel: str = ""  # how it came: hl7, fhir, file, grpc; extractor routing keys on it
    path: str = ""  # the file it was read from (brat corpora)
    source_id: str = ""  # the sender's own id for the note
    source_ref: str = ""  # where the sender's copy lives on a server, "" when nowhere
    identifier: Identifier | None = None  # the document's business identifier
    control_id: str = ""  # MSH-10
    message_type: str = ""  # MSH-9, e.g. MDM^T02
    hl7_version: str = ""
    patient: Ref | None = None
    encounter: Ref | None = None
    encounter_class: str = ""  # PV1-2 patient class (table 0004: I, O, E, ...)
    author: str = ""  # who wrote the note, as a name (TXA-9, DocumentReference.author.display)
    date: str = ""  # FHIR dateTime
    doc_type: Coding | None = None
    content_type: str = "text/plain"  # of the original, before conversion to text
    charset: str = ""
    content_index: int = 0  # DocumentReference.content[n] read
    document_status: str = ""  # TXA-17 (table 0271) or docStatus
    result_status: str = ""  # OBR-25 (table 0123)
    reference_status: str = ""  # DocumentReference.status superseded / entered-in-error
    event: DocumentEvent | None = None
    parent: Identifier | None = None  # the note this one appends to or replaces
    parent_ref: str = ""  # the same as a FHIR reference, when the sender gave one
    structured_only: bool = False  # results and no narrative: nothing for NER
    results: tuple[ResultGroup, ...] = ()
    warnings: tuple[str, ...] = ()  # what was not turned into output, by segment/path

    @property
    def lab_results(self) -> tuple[LabResult, ...]:
        """Every structured result in message order."""
        return tuple(r for g in self.results for r in g.results)

    @property
    def status_stated(self) -> bool:
        """Whether the sender said anything about the document's status."""
        return bool(
            self.document_status or self.result_status or self.reference_status or self.event
        )


def parse_ref(text: str) -> Ref | None:
    """A caller's reference string: ``Patient/1`` or an identifier ``system|value``."""
    if not text:
        return None
    if "|" in text:
        system, _, value = text.rpartition("|")
        return Ref(identifier=Identifier(value, system))
    return Ref(reference=text)


def to_json(obj: Any) -> Any:
    """A Source (or any value in one) as JSON; empty values are left out."""
    if is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in fields(obj):
            value = getattr(obj, f.name)
            if value != f.default and value not in ((), None, ""):
                out[f.name] = to_json(value)
        return out
    if isinstance(obj, tuple):
        return [to_json(v) for v in obj]
    return str(obj) if isinstance(obj, StrEnum) else obj


def from_json(data: dict[str, Any] | None) -> Source:
    """The inverse of :func:`to_json`; a key Source does not have is a ValueError."""
    d = dict(data or {})
    nested: dict[str, Any] = {
        "identifier": Identifier(**d["identifier"]) if d.get("identifier") else None,
        "parent": Identifier(**d["parent"]) if d.get("parent") else None,
        "patient": _ref(d["patient"]) if d.get("patient") else None,
        "encounter": _ref(d["encounter"]) if d.get("encounter") else None,
        "doc_type": Coding(**d["doc_type"]) if d.get("doc_type") else None,
        "event": DocumentEvent(d["event"]) if d.get("event") else None,
        "results": tuple(_group(g) for g in d.get("results", ())),
        "warnings": tuple(str(w) for w in d.get("warnings", ())),
    }
    try:
        return Source(**{**d, **nested})
    except TypeError as exc:
        raise ValueError(f"not a serialized Source ({exc})") from exc


def _ref(d: dict[str, Any]) -> Ref:
    ident = d.get("identifier")
    return Ref(d.get("reference", ""), Identifier(**ident) if ident else None)


def _group(d: dict[str, Any]) -> ResultGroup:
    results = tuple(
        LabResult(**{**r, "notes": tuple(r.get("notes", ()))}) for r in d.get("results", ())
    )
    return ResultGroup(**{**d, "results": results, "notes": tuple(d.get("notes", ()))})
