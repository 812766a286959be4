"""The one error tree of kiwi-fhir.

Every failure the package reports on purpose is a ``KiwiError``; library
errors are translated where they happen with ``raise ... from exc`` so the
cause stays on the chain but callers only catch our types::

    KiwiError
    ├── InputError                  bad input from a caller (never retried)
    │   ├── AnnotationFormatError   malformed brat .ann line (file, line)
    │   ├── DocumentError           unreadable note / document (path)
    │   │   ├── FhirInputError      bad FHIR JSON input (JSON path)
    │   │   │   └── UnsupportedContentTypeError  attachment we cannot read
    │   │   └── HL7Error            bad HL7 v2 message (segment and field)
    │   ├── ConfigError             invalid settings, mapping or model files
    │   ├── InvalidFieldError       a service request field is missing or bad
    │   └── IdentityConflictError   a sender's identity for an item reused with other content
    ├── ModelError                  no model installed, or it failed to load
    │   └── MissingExtraError       an optional dependency group is absent
    ├── BackendError                an inference backend failed at run time
    │   ├── BackendUnavailableError down or unreachable (retried with backoff)
    │   │   └── BackendTimeoutError no answer within the timeout
    │   └── BackendRejectedError    the server refused the request (4xx)
    ├── FhirOutputError             a resource we built fails R4B validation
    └── ServiceError                the service cannot take or finish a request
        ├── PayloadTooLargeError    a frame/message over the configured limit
        ├── OverloadedError         intake queue full: retry later
        ├── StoreError              the intake database is unavailable
        ├── JobNotFoundError        no stored job with that id
        ├── JobTimeoutError         result not ready before the caller's deadline
        ├── AuthenticationError     missing or wrong bearer token / notification header
        └── FhirServerError         the configured FHIR server failed (retried later)
            └── FhirServerRejectedError  it refused the request (4xx): no retry helps

``kiwi_fhir.service.status`` maps each class to a gRPC status code and an
HL7 ACK code in one table.

Messages name *where* (file and line, JSON path, segment and field) but
never quote clinical text: error strings end up in logs and ACKs.
"""

from __future__ import annotations

from typing import Final

_SHOWN_CHARS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._/+-"
)


def shown(value: object, limit: int = 12) -> str:
    """A sender-controlled value as it may appear in a message: quoted when it
    is one short code-like token (``'8859/1'``, ``'Patient'``), otherwise only
    described. Messages reach logs and ACKs, so a field cannot carry note text
    into them this way; 12 characters of one token is the most it can smuggle.
    """
    if value is None:
        return "(missing)"
    text = str(value)
    if 0 < len(text) <= limit and set(text) <= _SHOWN_CHARS:
        return repr(text)
    return f"(a value of {len(text)} characters, not shown)"


class KiwiError(Exception):
    """Base of every error kiwi-fhir raises deliberately."""


class InputError(KiwiError):
    """The caller handed us something we cannot use."""


class AnnotationFormatError(InputError):
    """A brat standoff line does not parse."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


class DocumentError(InputError):
    """A note cannot be read or decoded."""


class ConfigError(InputError):
    """Settings, mapping tables or model files are invalid."""


class ModelError(KiwiError):
    """No usable model: not installed, incomplete, or failed to load."""


class MissingExtraError(ModelError):
    """An optional backend was configured but its extra is not installed."""

    def __init__(self, feature: str, extra: str) -> None:
        super().__init__(f"{feature} needs the '{extra}' extra: pip install 'kiwi-fhir[{extra}]'")
        self.feature = feature
        self.extra = extra


class BackendError(KiwiError):
    """An inference backend failed while serving a request."""


class FhirInputError(DocumentError):
    """A FHIR document (DocumentReference / Bundle JSON) is unusable.

    ``path`` is a JSON path into the input (``entry[2].resource.content[0]
    .attachment.data``) so an operator can find the fault without us quoting
    the (clinical) payload.
    """

    def __init__(self, path: str, reason: str, *, source: str = "") -> None:
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{path or '$'}: {reason}")
        self.path = path
        self.reason = reason
        self.source = source


class UnsupportedContentTypeError(FhirInputError):
    """An attachment whose content type we do not turn into text (e.g. PDF)."""

    def __init__(self, path: str, content_type: str, *, source: str = "") -> None:
        super().__init__(path, f"unsupported content type {content_type!r}", source=source)
        self.content_type = content_type


class HL7Error(DocumentError):
    """An HL7 v2 message is unusable; ``segment``/``field`` say where (``OBX[2]-5``)."""

    def __init__(
        self, reason: str, *, segment: str = "", field: str = "", message: int = 0
    ) -> None:
        where = segment + (f"-{field}" if field else "")
        prefix = f"message {message}: " if message else ""
        super().__init__(f"{prefix}{where + ': ' if where else ''}{reason}")
        self.reason = reason
        self.segment = segment
        self.field = field
        self.message = message


class FhirOutputError(KiwiError):
    """A resource we built does not validate: a bug or a bad mapping table."""


class ServiceError(KiwiError):
    """The service could not accept or complete a request (not the input's fault)."""


class PayloadTooLargeError(ServiceError):
    """A message exceeds the configured size limit; nothing of it was stored."""

    def __init__(self, size: int, limit: int, what: str = "message") -> None:
        super().__init__(f"{what} of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class OverloadedError(ServiceError):
    """Too much work queued; the caller should back off and retry."""


class StoreError(ServiceError):
    """The intake database failed; nothing was acknowledged."""


class JobNotFoundError(ServiceError):
    """No job with the requested id is stored."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id[:64]!r}")
        self.job_id = job_id


class JobTimeoutError(ServiceError):
    """The job is stored and will finish, but not before the caller's deadline."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} not finished before the deadline; use GetResult")
        self.job_id = job_id


class AuthenticationError(ServiceError):
    """The request carries no valid bearer token."""


class InvalidFieldError(InputError):
    """A request field is missing or unusable; ``field`` names it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class IdentityConflictError(InputError):
    """The sender reused an identity (MSH-10 control id, resource id + versionId)
    for different content: neither a duplicate nor, by that identity's rules, a
    new version. ``where`` names the identifying field; its value is not quoted.
    """

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: identity reused with different content ({reason})")
        self.where = where
        self.reason = reason


class BackendUnavailableError(BackendError):
    """A remote inference server cannot be reached or is not ready; retry later.

    Raised after the client's own retries are spent, so the service answers
    UNAVAILABLE (gRPC) / AR (HL7) and keeps the job for a later attempt.
    ``url`` names the server; never the request payload.
    """

    def __init__(self, backend: str, url: str, reason: str) -> None:
        super().__init__(f"{backend} backend at {url} unavailable: {reason}")
        self.backend = backend
        self.url = url
        self.reason = reason


class BackendTimeoutError(BackendUnavailableError):
    """The remote inference server did not answer within the configured timeout."""


class BackendRejectedError(BackendError):
    """A remote server refused a request as invalid (HTTP 4xx), e.g. a prompt
    longer than the model's context: resending the same request cannot help.

    ``kind`` is the server's error type, never its message (which may quote
    the prompt).
    """

    def __init__(self, backend: str, url: str, status: int, kind: str) -> None:
        super().__init__(f"{backend} backend at {url} rejected the request: HTTP {status} {kind}")
        self.backend = backend
        self.url = url
        self.status = status
        self.kind = kind


class FhirServerError(ServiceError):
    """The FHIR server we fetch from / write to failed: network, timeout, 5xx, 429.

    The job keeps its place and is retried with backoff; ``status`` is the HTTP
    status (None for network failures), ``operation`` what we were doing.
    """

    def __init__(self, operation: str, reason: str, *, status: int | None = None) -> None:
        super().__init__(f"FHIR server {operation}: {reason}")
        self.operation = operation
        self.reason = reason
        self.status = status


class FhirServerRejectedError(FhirServerError):
    """The FHIR server answered 4xx (not 408/429): resending the same request cannot help."""
