"""De-duplication never crosses callers; a reused identity is never silently the old result.

Regression tests for the service-hardening issue, items 1 (a duplicate returned
someone else's note) and 4 (corrections silently ignored), against a real
``kiwi-fhir serve`` process: MLLP, gRPC and the HTTP demo API on loopback.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from test_service_helpers import Server, ack_fields, frame, jobs, read_acks, start_server

from kiwi_fhir.service._generated import extraction_pb2 as pb
from kiwi_fhir.service._generated import extraction_pb2_grpc as pb_grpc

CONFIDENTIAL = "KOALAMANGO-5521 has metastatic pancreatic cancer and takes morphine."
HEADER = "MSH|^~\\&|EPIC|MAIN|KIWI|HOSP|20261202101500||ORU^R01^ORU_R01|000123|P|2.5.1\r"


def _oru(text: str, header: str = HEADER) -> bytes:
    return (header + "PID|1||MRN77^^^HOSP^MR||Doe^Jane\r"
            "OBR|1|ORD1|FIL1|11506-3^Progress note^LN\r"
            f"OBX|1|TX|11506-3^Progress note^LN||{text}||||||F\r").encode()  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("dedup"), env={"KIWI_FHIR_DEMO": "true"})
    yield srv
    assert srv.stop() == 0
    assert "KOALAMANGO" not in srv.logs()


def _mllp(server: Server, msg: bytes) -> dict[str, Any]:
    with socket.create_connection(("127.0.0.1", server.ports["mllp"]), timeout=30) as s:
        s.sendall(frame(msg))
        return ack_fields(read_acks(s, 1)[0])


def _wait_done(server: Server, n: int) -> None:
    deadline = time.monotonic() + 60
    while sum(j["status"] == "done" for j in jobs(server.db)) < n:
        assert time.monotonic() < deadline, jobs(server.db)
        time.sleep(0.2)


def _demo(server: Server, content: str) -> dict[str, Any]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{server.ports['http']}/api/extract",
        data=json.dumps({"kind": "hl7", "content": content}).encode(),
        headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=60) as resp:
        return dict(json.loads(resp.read()))


def test_same_msh_identity_from_another_caller_never_returns_the_stored_note(
    server: Server,
) -> None:
    assert _mllp(server, _oru(CONFIDENTIAL))["code"] == "AA"
    _wait_done(server, 1)
    # The reported leak: HTTP demo, same MSH-3/4/10, other content -> the original note.
    got = _demo(server, _oru("anything").decode())
    assert got["duplicate"] is False
    assert "KOALAMANGO" not in json.dumps(got)
    assert got["documents"][0]["text"] == "anything"
    # ... and the same over gRPC ExtractHL7 (entities of the original).
    with grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as ch:
        stub = pb_grpc.ExtractionServiceStub(ch)
        resp = stub.ExtractHL7(pb.ExtractHL7Request(message=_oru("Fever today.")), timeout=60)
        assert not resp.duplicate
        texts = [e.text for d in resp.documents for e in d.entities]
        assert "morphine" not in texts and "metastatic pancreatic cancer" not in texts
        # Identical content from a caller that already has it is still a duplicate.
        again = stub.ExtractHL7(pb.ExtractHL7Request(message=_oru("Fever today.")), timeout=60)
        assert again.duplicate and again.job_id == resp.job_id
        # GetResult is scoped too: the MLLP job's id does not open it to gRPC callers.
        mllp_job = next(j["id"] for j in jobs(server.db) if j["source"] == "mllp")
        with pytest.raises(grpc.RpcError) as err:
            stub.GetResult(pb.GetResultRequest(job_id=mllp_job), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_reused_control_id_with_edited_text_is_refused_not_silently_old(
    server: Server,
) -> None:
    header = HEADER.replace("000123", "EDIT77")
    assert _mllp(server, _oru("Cough for two days.", header))["code"] == "AA"
    resent = _mllp(server, _oru("Cough for two days.", header))
    assert resent["code"] == "AA"  # the same message again: a duplicate, acknowledged
    edited = _mllp(server, _oru("Cough for five days.", header))
    assert edited["code"] == "AE" and edited["control_id"] == "EDIT77"
    assert edited["err"][2] == "MSH^1^10" and edited["err"][3].startswith("205^")
    assert "identity reused with different content" in edited["err"][8]
    assert sum((j["dedup_key"] or "").endswith("|EDIT77") for j in jobs(server.db)) == 1


def test_an_unversioned_document_reference_edit_is_processed_and_supersedes(
    server: Server, tmp_path: Path
) -> None:
    import base64

    def docref(text: str) -> str:
        data = base64.b64encode(text.encode()).decode()
        return json.dumps({"resourceType": "DocumentReference", "id": "note-9",
                           "status": "current", "content": [{"attachment": {
                               "contentType": "text/plain", "data": data}}]})  # fmt: skip

    with grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as ch:
        stub = pb_grpc.ExtractionServiceStub(ch)
        first = stub.ExtractDocumentReference(
            pb.ExtractDocumentReferenceRequest(resource_json=docref("No chest pain.")), timeout=60)
        second = stub.ExtractDocumentReference(
            pb.ExtractDocumentReferenceRequest(resource_json=docref("Severe chest pain.")),
            timeout=60)  # fmt: skip
    assert not second.duplicate and second.job_id != first.job_id
    mentions = [e.text for d in second.documents for e in d.entities]
    assert "chest pain" in " ".join(mentions).lower()
    from sqlalchemy import create_engine, text

    eng = create_engine(server.db)
    with eng.connect() as c:
        row = c.execute(text("SELECT superseded_by FROM jobs WHERE id = :i"),
                        {"i": first.job_id}).one()  # fmt: skip
    eng.dispose()
    assert row[0] == second.job_id


def test_one_note_size_limit_on_every_channel(server: Server) -> None:
    """A note longer than max_note_bytes (64 KiB) is refused before it is stored."""
    long_text = "Fever and cough. " * 4200  # ~71 KB of note text
    with grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as ch:
        stub = pb_grpc.ExtractionServiceStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.ExtractText(pb.ExtractTextRequest(text=long_text), timeout=30)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "note of" in str(err.value.details())
    ack = _mllp(server, _oru(long_text, HEADER.replace("000123", "LONG1")))
    assert ack["code"] == "AR" and "limit of 65536 bytes" in ack["err"][8]
    assert not any(str(j["dedup_key"]).endswith("LONG1") for j in jobs(server.db))
