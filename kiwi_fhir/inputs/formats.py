"""Input formats: the one seam every caller picks a format through.

The CLI (by file suffix), the service's gRPC, MLLP and HTTP intake (by
name, the job ``kind`` stored in the database), the demo page (by
sniffing what was pasted) and the Subscription worker all look formats up
here. A format is an object with the :class:`InputFormat` shape; adding one
is its module plus a line in :data:`FORMATS`. Formats are imported lazily,
like the extractor backends, so a format's own dependencies (defusedxml for
CDA, say) load only when it is used.

A format's ``parse`` returns documents *and* errors in item order (a file
may hold several messages or Bundle entries, and one bad item costs only
itself); :func:`parse_strict` is the service's view, where the first error
refuses the whole payload before anything is stored.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from kiwi_fhir.core import Document
from kiwi_fhir.errors import ConfigError, DocumentError
from kiwi_fhir.source import Source

#: Fetches what a document points to (``attachment.url``): (bytes, Content-Type or None).
Fetcher = Callable[[str], tuple[bytes, str | None]]


@dataclass(frozen=True)
class Identity:
    """The sender's own name for an item, for de-duplication and corrections.

    ``key`` is unique per sender (HL7: sending application, facility and
    MSH-10; FHIR: ``resourceType/id|versionId``); ``field`` is what the sender
    calls it, for error messages; ``versioned`` says whether the key names one
    version (edited content under it is a conflict) or only the item (edited
    content is a new version that supersedes the old result).
    """

    key: str
    field: str
    versioned: bool = True


class InputFormat(Protocol):
    #: The format's name: the ``kind`` of a stored job, the demo's ``kind``.
    name: str
    #: File suffixes the CLI reads as this format (lower case, with the dot).
    suffixes: tuple[str, ...]
    #: Media types (MIME) this format is sent as.
    media_types: tuple[str, ...]

    def sniff(self, raw: bytes) -> bool:
        """Whether the payload looks like this format (cheap: a prefix or a regex)."""
        ...

    def identity(self, raw: bytes) -> Identity | None:
        """The sender's identity of the payload's item, or None when it has none."""
        ...

    def parse(
        self, raw: bytes, *, fetcher: Fetcher | None = None, source: str = ""
    ) -> list[Document | DocumentError]:
        """Documents and errors in item order; ``source`` names the input in errors."""
        ...


@dataclass(frozen=True)
class _Spec:
    module: str
    cls: str


#: Every format, in the order :func:`sniff` tries them (plain text always
#: last). Names are stored in the job table: never rename one.
FORMATS: dict[str, _Spec] = {
    "docref": _Spec("kiwi_fhir.inputs.docref", "FhirDocumentFormat"),
    "hl7": _Spec("kiwi_fhir.inputs.hl7", "HL7v2Format"),
    "text": _Spec("kiwi_fhir.inputs.plaintext", "PlainTextFormat"),
}
_LOADED: dict[str, InputFormat] = {}


def names() -> tuple[str, ...]:
    return tuple(FORMATS)


def get(name: str) -> InputFormat:
    """The format called ``name``; a ConfigError lists the known ones."""
    fmt = _LOADED.get(name)
    if fmt is None:
        spec = FORMATS.get(name)
        if spec is None:
            raise ConfigError(f"unknown input format {name!r}; choose from {names()}")
        fmt = getattr(importlib.import_module(spec.module), spec.cls)()
        _LOADED[name] = fmt
    return fmt


def all_formats() -> tuple[InputFormat, ...]:
    return tuple(get(n) for n in FORMATS)


def suffixes() -> tuple[str, ...]:
    return tuple(s for f in all_formats() for s in f.suffixes)


def by_suffix(suffix: str) -> InputFormat | None:
    suffix = suffix.lower()
    return next((f for f in all_formats() if suffix in f.suffixes), None)


def by_media_type(media_type: str) -> InputFormat | None:
    base = media_type.split(";", 1)[0].strip().lower()
    return next((f for f in all_formats() if base in f.media_types), None)


#: What a payload no format recognises is read as.
FALLBACK = "text"


def sniff(raw: bytes) -> InputFormat:
    """The first format whose ``sniff`` accepts the payload; plain text, which
    takes anything, is tried last whatever the registry order."""
    order = sorted(all_formats(), key=lambda f: f.name == FALLBACK)
    return next((f for f in order if f.sniff(raw)), get(FALLBACK))


def parse_strict(
    fmt: InputFormat, raw: bytes, *, fetcher: Fetcher | None = None, source: str = ""
) -> list[Document]:
    """All documents of ``raw``, or the first error of any item."""
    items = fmt.parse(raw, fetcher=fetcher, source=source)
    errors = [i for i in items if isinstance(i, DocumentError)]
    if errors:
        raise errors[0]
    return [i for i in items if isinstance(i, Document)]


def warnings_of(source: Source) -> list[str]:
    """What a parser named as not turned into output (``Source.warnings``)."""
    return list(source.warnings)
