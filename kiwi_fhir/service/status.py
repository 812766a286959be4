"""The one table from our error tree to gRPC status codes, HL7 ACK codes and HTTP statuses.

Lookup walks the exception's MRO, so the most specific row wins and a new
subclass inherits its parent's answer. HL7 acknowledgment semantics (v2.x,
original mode): ``AE`` = the content is wrong, do not resend as is; ``AR`` =
rejected for reasons outside the content (bad header/type, or we are down or
full), the engine may resend later. Messages of unknown exceptions are
replaced: they might quote payload text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import grpc

from kiwi_fhir import errors as e


@dataclass(frozen=True)
class Outcome:
    grpc_code: grpc.StatusCode
    ack: str  # AE or AR
    hl7_error: str  # HL7 table 0357 code for ERR-3
    http: int = 500  # the HTTP port's answer (FHIR notifications, demo, /jobs)


TABLE: Final[dict[type[BaseException], Outcome]] = {
    e.HL7Error: Outcome(grpc.StatusCode.INVALID_ARGUMENT, "AE", "102", 400),
    e.DocumentError: Outcome(grpc.StatusCode.INVALID_ARGUMENT, "AE", "102", 400),
    e.InvalidFieldError: Outcome(grpc.StatusCode.INVALID_ARGUMENT, "AE", "101", 400),
    e.IdentityConflictError: Outcome(grpc.StatusCode.ALREADY_EXISTS, "AE", "205", 409),
    e.InputError: Outcome(grpc.StatusCode.INVALID_ARGUMENT, "AE", "207", 400),
    e.PayloadTooLargeError: Outcome(grpc.StatusCode.RESOURCE_EXHAUSTED, "AR", "207", 413),
    e.OverloadedError: Outcome(grpc.StatusCode.RESOURCE_EXHAUSTED, "AR", "207", 429),
    e.StoreError: Outcome(grpc.StatusCode.UNAVAILABLE, "AR", "207", 503),
    e.JobNotFoundError: Outcome(grpc.StatusCode.NOT_FOUND, "AE", "204", 404),
    e.JobTimeoutError: Outcome(grpc.StatusCode.DEADLINE_EXCEEDED, "AE", "207", 504),
    e.AuthenticationError: Outcome(grpc.StatusCode.UNAUTHENTICATED, "AR", "207", 401),
    e.ServiceError: Outcome(grpc.StatusCode.UNAVAILABLE, "AR", "207", 503),
    e.ModelError: Outcome(grpc.StatusCode.UNAVAILABLE, "AR", "207", 503),
    # A remote server down or slow is never the message's fault: AR, resend later.
    e.BackendTimeoutError: Outcome(grpc.StatusCode.UNAVAILABLE, "AR", "207", 503),
    e.BackendUnavailableError: Outcome(grpc.StatusCode.UNAVAILABLE, "AR", "207", 503),
    e.BackendError: Outcome(grpc.StatusCode.UNAVAILABLE, "AR", "207", 503),
    e.FhirOutputError: Outcome(grpc.StatusCode.INTERNAL, "AE", "207", 500),
    e.KiwiError: Outcome(grpc.StatusCode.INTERNAL, "AE", "207", 500),
}
_INTERNAL: Final = Outcome(grpc.StatusCode.INTERNAL, "AE", "207")
#: HL7Error in the header or framing means we could not read the message at all.
_HL7_REJECT: Final = {"9": "200", "12": "203", "": "100", "2": "100"}


def outcome(exc: BaseException) -> Outcome:
    row = next((TABLE[k] for k in type(exc).__mro__ if k in TABLE), _INTERNAL)
    if isinstance(exc, e.HL7Error) and (exc.segment == "MSH" or exc.segment.startswith("line")):
        return Outcome(row.grpc_code, "AR", _HL7_REJECT.get(exc.field, "100"), row.http)
    return row


def public_message(exc: BaseException) -> str:
    """Text safe for clients, logs and ACKs: ours name places, others say nothing."""
    return str(exc) if isinstance(exc, e.KiwiError) else "internal error"


def error_field(exc: BaseException) -> str:
    """Where in the input the fault is, for INVALID_ARGUMENT details and ERR-2."""
    if isinstance(exc, e.HL7Error):
        return exc.segment + (f"-{exc.field}" if exc.field else "")
    if isinstance(exc, e.FhirInputError):
        return exc.path or "$"
    if isinstance(exc, e.InvalidFieldError):
        return exc.field
    if isinstance(exc, e.IdentityConflictError):
        return exc.where
    return ""
