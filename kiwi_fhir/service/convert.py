"""Stored jobs and our errors to protobuf messages: the only place that builds them.

Results come from the store's JSON (the ``serialize.to_dict`` form), so a
fresh answer and a ``GetResult`` replay are built by the same code.
"""

from __future__ import annotations

import json
from typing import Any, Final

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from kiwi_fhir.serialize import document_source
from kiwi_fhir.service import store
from kiwi_fhir.service._generated import extraction_pb2 as pb
from kiwi_fhir.service.status import error_field, outcome, public_message

_STATUS: Final = {
    store.RECEIVED: pb.JOB_STATUS_RECEIVED,
    store.PROCESSING: pb.JOB_STATUS_PROCESSING,
    store.DONE: pb.JOB_STATUS_DONE,
    store.FAILED: pb.JOB_STATUS_FAILED,
}


def _mention(d: dict[str, Any]) -> pb.Mention:
    frags = [pb.Span(start=a, end=b) for a, b in d.get("fragments", ())]
    codes = [pb.Coding(**c) for c in d.get("codes", ())]
    m = pb.Mention(id=d["id"], type=d["type"], start=d["start"], end=d["end"], text=d["text"],
                   fragments=frags, codes=codes)  # fmt: skip
    if d.get("confidence") is not None:
        m.confidence = d["confidence"]
    return m


def _relation(d: dict[str, Any]) -> pb.Relation:
    r = pb.Relation(entity_id=d["entity"], modifier_id=d["modifier"])
    if d.get("confidence") is not None:
        r.confidence = d["confidence"]
    return r


def response(job: store.Job, *, duplicate: bool = False) -> pb.ExtractResponse:
    status = _STATUS.get(job.status, pb.JOB_STATUS_UNSPECIFIED)
    out = pb.ExtractResponse(job_id=job.id, status=status, duplicate=duplicate,
                             error=job.error or "", model=job.model_id or "",
                             backend=job.backend or "")  # fmt: skip
    if job.result:
        data = json.loads(job.result)
        out.bundle_json = json.dumps(data["bundle"], ensure_ascii=False)
        for d in data["documents"]:
            out.documents.append(pb.DocumentResult(
                document_id=d["document"]["id"],
                entities=[_mention(m) for m in d["entities"]],
                modifiers=[_mention(m) for m in d["modifiers"]],
                relations=[_relation(r) for r in d["relations"]],
                warnings=list(document_source(d["document"]).warnings),
            ))  # fmt: skip
    return out


def stream_result(item_id: str, job: store.Job, *, duplicate: bool) -> pb.StreamResponse:
    return pb.StreamResponse(item_id=item_id, result=response(job, duplicate=duplicate))


def stream_error(item_id: str, exc: BaseException) -> pb.StreamResponse:
    code: tuple[int, str] = outcome(exc).grpc_code.value
    err = pb.ItemError(code=code[0], message=public_message(exc), field=error_field(exc))
    return pb.StreamResponse(item_id=item_id, error=err)


def rich_status(exc: BaseException) -> tuple[grpc.StatusCode, str, tuple[tuple[str, bytes], ...]]:
    """(code, message, trailing metadata) with google.rpc details for bad input."""
    code = outcome(exc).grpc_code
    message = public_message(exc)
    st = status_pb2.Status(code=code.value[0], message=message)
    field = error_field(exc)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field or "request",
                                                        description=message)]))  # fmt: skip
        st.details.append(detail)
    return code, message, (("grpc-status-details-bin", st.SerializeToString()),)
