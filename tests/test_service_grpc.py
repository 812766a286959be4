"""The gRPC API against a real server process on loopback."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from test_service_helpers import HL7_DIR, Server, jobs, start_server

from kiwi_fhir.service._generated import extraction_pb2 as pb
from kiwi_fhir.service._generated import extraction_pb2_grpc as pb_grpc

TOKEN = "s3cret-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
SECRET_NOTE = "QUOKKAZEBRA-7731"  # must never reach logs or metrics
NOTE = f"{SECRET_NOTE} presents with fever and productive cough. Denies chest pain."
MAX_MSG = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("grpc"),
        env={
            "KIWI_FHIR_AUTH_TOKEN": TOKEN,
            "KIWI_FHIR_STREAM_MAX_IN_FLIGHT": "4",
            "KIWI_FHIR_MAX_MESSAGE_BYTES": str(MAX_MSG),
            "KIWI_FHIR_BATCH_MAX_WAIT_MS": "20",
        },
    )
    yield srv
    assert srv.stop() == 0
    assert SECRET_NOTE not in srv.logs()  # every test's traffic has gone through by now


@pytest.fixture(scope="module")
def channel(server: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> Any:
    return pb_grpc.ExtractionServiceStub(channel)


def _details(err: grpc.RpcError) -> status_pb2.Status:
    raw = dict(err.trailing_metadata())["grpc-status-details-bin"]
    return status_pb2.Status.FromString(raw)


def test_extract_text_returns_bundle_and_offsets(stub: Any) -> None:
    resp, call = stub.ExtractText.with_call(
        pb.ExtractTextRequest(text=NOTE, patient="Patient/p1", encounter="Encounter/e1"),
        metadata=AUTH, timeout=60)  # fmt: skip
    assert resp.status == pb.JOB_STATUS_DONE and not resp.duplicate
    assert dict(call.initial_metadata())["kiwi-job-id"] == resp.job_id
    bundle = json.loads(resp.bundle_json)
    assert bundle["resourceType"] == "Bundle" and bundle["entry"]
    (doc,) = resp.documents
    for m in [*doc.entities, *doc.modifiers]:
        assert NOTE[m.start : m.end] == m.text
    again = stub.ExtractText(pb.ExtractTextRequest(text=NOTE, patient="Patient/p1",
                                                   encounter="Encounter/e1"),
                             metadata=AUTH, timeout=60)  # fmt: skip
    assert again.duplicate and again.job_id == resp.job_id and again.bundle_json == resp.bundle_json
    stored = stub.GetResult(pb.GetResultRequest(job_id=resp.job_id), metadata=AUTH, timeout=10)
    assert stored.bundle_json == resp.bundle_json and stored.documents == resp.documents


def test_extract_hl7_and_document_reference(stub: Any) -> None:
    hl7 = stub.ExtractHL7(
        pb.ExtractHL7Request(message=(HL7_DIR / "svc_oru_progress.hl7").read_bytes()),
        metadata=AUTH,
        timeout=60,
    )
    assert hl7.status == pb.JOB_STATUS_DONE and len(hl7.documents) == 1
    assert list(hl7.documents[0].warnings) == []
    # an ED that is not text is named (OBX[n]: the n-th OBX) in the warnings, not dropped
    pdf = b"OBX|9|ED|18748-4^Report^LN||^application^pdf^Base64^JVBERi0xLjQK||||||F\r"
    msg = (HL7_DIR / "svc_oru_progress.hl7").read_bytes().rstrip(b"\r\n") + b"\r" + pdf
    msg = msg.replace(b"|P|2.5", b"1|P|2.5", 1)  # another control id: not a correction
    warned = stub.ExtractHL7(pb.ExtractHL7Request(message=msg), metadata=AUTH, timeout=60)
    assert warned.status == pb.JOB_STATUS_DONE
    assert list(warned.documents[0].warnings) == ["OBX[3]: ED payload is not text; not extracted"]
    dr = {"resourceType": "DocumentReference", "id": "dr-svc-1", "meta": {"versionId": "1"},
          "status": "current", "subject": {"reference": "Patient/p1"},
          "content": [{"attachment": {"contentType": "text/plain",
                                      "data": "UGF0aWVudCBoYXMgZmV2ZXIu"}}]}  # fmt: skip
    resp = stub.ExtractDocumentReference(
        pb.ExtractDocumentReferenceRequest(resource_json=json.dumps(dr)), metadata=AUTH, timeout=60
    )
    assert resp.status == pb.JOB_STATUS_DONE and json.loads(resp.bundle_json)["entry"]


def test_bad_input_is_invalid_argument_with_field(stub: Any) -> None:
    bad = (HL7_DIR / "svc_oru_no_narrative.hl7").read_bytes()
    with pytest.raises(grpc.RpcError) as err:
        stub.ExtractHL7(pb.ExtractHL7Request(message=bad), metadata=AUTH, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    br = error_details_pb2.BadRequest()
    assert _details(err.value).details[0].Unpack(br)
    assert br.field_violations[0].field == "OBX-5"
    with pytest.raises(grpc.RpcError) as err2:
        stub.ExtractDocumentReference(pb.ExtractDocumentReferenceRequest(
            resource_json='{"resourceType": "Patient", "note": "' + SECRET_NOTE + '"}'),
            metadata=AUTH, timeout=30)  # fmt: skip
    assert err2.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert SECRET_NOTE not in (err2.value.details() or "")
    with pytest.raises(grpc.RpcError) as err3:
        stub.GetResult(pb.GetResultRequest(job_id="nope"), metadata=AUTH, timeout=10)
    assert err3.value.code() == grpc.StatusCode.NOT_FOUND


def test_auth_token_required_but_health_open(stub: Any, channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.ExtractText(pb.ExtractTextRequest(text="Fever."), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as err2:
        stub.ExtractText(
            pb.ExtractTextRequest(text="Fever."),
            timeout=10,
            metadata=(("authorization", "Bearer wrong"),),
        )
    assert err2.value.code() == grpc.StatusCode.UNAUTHENTICATED
    h = health_pb2_grpc.HealthStub(channel)
    for name in ("", "kiwi_fhir.v1.ExtractionService"):
        got = h.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
        assert got.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_services(channel: grpc.Channel) -> None:
    r = reflection_pb2_grpc.ServerReflectionStub(channel)
    (resp,) = r.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
    )
    names = {s.name for s in resp.list_services_response.service}
    assert {"kiwi_fhir.v1.ExtractionService", "grpc.health.v1.Health"} <= names


def test_max_message_size_is_enforced(stub: Any) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.ExtractText(pb.ExtractTextRequest(text="fever " * (MAX_MSG // 5)), metadata=AUTH,
                         timeout=30)  # fmt: skip
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_deadline_exceeded_names_job_that_still_finishes(stub: Any) -> None:
    # Regression: this note's result (~2.1 MB) is larger than the 2 MB request
    # limit; GetResult used to fail RESOURCE_EXHAUSTED (max_response_bytes now).
    long_note = " ".join(f"Day {i}: fever, cough and dyspnea; started ceftriaxone."
                         for i in range(400))  # fmt: skip
    with pytest.raises(grpc.RpcError) as err:
        stub.ExtractText(pb.ExtractTextRequest(text=long_note), metadata=AUTH, timeout=0.4)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    job_id = dict(err.value.initial_metadata())["kiwi-job-id"]
    deadline = time.monotonic() + 120
    while True:
        got = stub.GetResult(pb.GetResultRequest(job_id=job_id), metadata=AUTH, timeout=10)
        if got.status == pb.JOB_STATUS_DONE or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert got.status == pb.JOB_STATUS_DONE and got.bundle_json


def test_stream_tags_results_and_keeps_going_after_item_errors(stub: Any) -> None:
    def items() -> Iterator[pb.StreamRequest]:
        for i in range(12):
            yield pb.StreamRequest(
                item_id=f"ok-{i}",
                text=pb.ExtractTextRequest(
                    text=f"Stream item {i}: {SECRET_NOTE} reports headache and nausea."
                ),
            )
            if i == 3:
                yield pb.StreamRequest(item_id="bad-empty", text=pb.ExtractTextRequest(text=""))
                yield pb.StreamRequest(item_id="bad-none")

    out = {r.item_id: r for r in stub.ExtractStream(items(), metadata=AUTH, timeout=120)}
    assert set(out) == {f"ok-{i}" for i in range(12)} | {"bad-empty", "bad-none"}
    assert out["bad-empty"].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert out["bad-empty"].error.field == "text" and out["bad-none"].error.field == "input"
    assert all(out[f"ok-{i}"].result.status == pb.JOB_STATUS_DONE for i in range(12))


def test_stream_slow_reader_bounds_server_intake(server: Server) -> None:
    n = 150
    before = len(jobs(server.db))
    reqs = (
        pb.StreamRequest(
            item_id=str(i), text=pb.ExtractTextRequest(text=f"Flow item {i}: mild fever.")
        )
        for i in range(n)
    )
    # A fixed 64 KiB HTTP/2 window (no BDP growth): what a slow client really offers.
    opts = [("grpc.http2.bdp_probe", 0)]
    with grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}", options=opts) as ch:
        call = pb_grpc.ExtractionServiceStub(ch).ExtractStream(reqs, metadata=AUTH, timeout=300)
        time.sleep(6)  # read nothing: the server may only take what it can hand back
        accepted = len(jobs(server.db)) - before
        assert accepted < 60, f"server took {accepted} of {n} items though nothing was read"
        ids = [r.item_id for r in call]
    print(f"accepted while unread: {accepted}")
    assert sorted(ids, key=int) == [str(i) for i in range(n)]


def _scrape(server: Server) -> str:
    url = f"http://127.0.0.1:{server.ports['http']}/metrics"
    return str(urllib.request.urlopen(url, timeout=10).read().decode())


def _batches(text: str) -> tuple[float, float]:
    """(batches of one job, all batches) from the batch-size histogram."""
    get = {ln.split(" ")[0]: float(ln.split(" ")[1]) for ln in text.splitlines()
           if ln.startswith("kiwi_fhir_batch_size_")}  # fmt: skip
    return get['kiwi_fhir_batch_size_bucket{le="1.0"}'], get["kiwi_fhir_batch_size_count"]


def test_concurrent_requests_share_extractor_batches(server: Server, stub: Any) -> None:
    singles0, total0 = _batches(_scrape(server))
    futs = [stub.ExtractText.future(pb.ExtractTextRequest(text=f"Batch probe {i}: chills."),
                                    metadata=AUTH, timeout=120) for i in range(12)]  # fmt: skip
    assert all(f.result().status == pb.JOB_STATUS_DONE for f in futs)
    singles, total = _batches(_scrape(server))
    assert total - total0 < 12, "12 concurrent requests ran as 12 separate extractor calls"
    assert total - total0 > singles - singles0  # at least one batch held several jobs


def test_metrics_endpoint(server: Server, stub: Any) -> None:
    stub.ExtractText(pb.ExtractTextRequest(text="Metrics probe: fever."), metadata=AUTH, timeout=60)
    text = _scrape(server)
    for name in ("kiwi_fhir_requests_total", "kiwi_fhir_errors_total",
                 "kiwi_fhir_request_seconds_bucket", "kiwi_fhir_batch_size_bucket",
                 "kiwi_fhir_queue_depth", 'kiwi_fhir_jobs{status="done"}'):  # fmt: skip
        assert name in text
    assert SECRET_NOTE not in text


def test_graceful_shutdown_drains_and_restart_serves_stored_result(tmp_path: Path) -> None:
    srv = start_server(tmp_path, tag="drain")
    idle = socket.create_connection(("127.0.0.1", srv.ports["mllp"]), timeout=10)
    with grpc.insecure_channel(f"127.0.0.1:{srv.ports['grpc']}") as ch:
        s = pb_grpc.ExtractionServiceStub(ch)
        fut = s.ExtractText.future(pb.ExtractTextRequest(text="Drain test: chills."), timeout=60)
        time.sleep(0.3)
        t0 = time.monotonic()
        srv.proc.send_signal(15)
        resp = fut.result()
    assert resp.status == pb.JOB_STATUS_DONE  # the in-flight call was answered, not dropped
    assert srv.proc.wait(60) == 0
    assert time.monotonic() - t0 < 15, "an idle MLLP connection held up shutdown"
    assert idle.recv(10) == b""
    idle.close()
    again = start_server(tmp_path, srv.db, tag="drain2")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{again.ports['grpc']}") as ch:
            got = pb_grpc.ExtractionServiceStub(ch).GetResult(
                pb.GetResultRequest(job_id=resp.job_id), timeout=10
            )
        assert got.bundle_json == resp.bundle_json
    finally:
        again.stop()


def test_corrupt_protobuf_and_bad_utf8_are_invalid_argument(server: Server,
                                                            channel: grpc.Channel) -> None:
    """Regression: these were UNKNOWN with a traceback in the server log."""
    call = channel.unary_unary("/kiwi_fhir.v1.ExtractionService/ExtractText",
                               request_serializer=None,
                               response_deserializer=pb.ExtractResponse.FromString)  # fmt: skip
    bad_utf8 = b"\x0a\x03\xff\xfe\xfd"  # field 1 (text), 3 bytes that are not UTF-8
    corrupt = b"\x0a\xff\xff\xff\xff\x0f"  # a length far past the end
    for raw in (bad_utf8, corrupt):
        with pytest.raises(grpc.RpcError) as err:
            call(raw, metadata=AUTH, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid ExtractTextRequest message" in str(err.value.details())
    stream = channel.stream_stream("/kiwi_fhir.v1.ExtractionService/ExtractStream",
                                   request_serializer=None,
                                   response_deserializer=pb.StreamResponse.FromString)  # fmt: skip
    (item,) = list(stream(iter([corrupt]), metadata=AUTH, timeout=30))
    assert item.WhichOneof("outcome") == "error"
    assert "Traceback" not in server.logs()
