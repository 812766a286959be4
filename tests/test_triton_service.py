"""``kiwi-fhir serve`` with ``backend: triton`` against a real Triton on 127.0.0.1.

The service must outlive its inference server: while Triton is up a request
is answered from it; once it stops, callers get UNAVAILABLE, the job is kept
(not FAILED), the extraction service reports NOT_SERVING in gRPC health and
the process itself (health ``""``) stays SERVING.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kiwi_fhir.errors import ConfigError
from kiwi_fhir.extractors.onnx import default_model_dir
from kiwi_fhir.service import store
from kiwi_fhir.service._generated import extraction_pb2 as pb
from kiwi_fhir.service._generated import extraction_pb2_grpc as pb_grpc
from kiwi_fhir.service.app import Service
from kiwi_fhir.service.grpc_server import SERVICE
from kiwi_fhir.service.settings import load_settings

pytest.importorskip("tritonclient.grpc", reason="needs the triton extra")
from kiwi_fhir.extractors.triton import TritonExtractor
from kiwi_fhir.extractors.triton_local import LocalTritonServer, find_tritonserver
from kiwi_fhir.extractors.triton_repo import MODELS, assemble

SERVING = health_pb2.HealthCheckResponse.SERVING


async def _status(ch: grpc.aio.Channel, name: str) -> int:
    stub = health_pb2_grpc.HealthStub(ch)  # type: ignore[no-untyped-call]
    resp = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
    return int(resp.status)


@pytest.mark.slow
def test_service_on_triton_survives_a_triton_outage(tmp_path: Path) -> None:
    model = default_model_dir()
    if not (model / "config.json").is_file():
        pytest.skip(f"no model at {model}")
    try:
        find_tritonserver()
    except ConfigError as exc:
        pytest.skip(str(exc))
    server = LocalTritonServer(assemble(tmp_path / "repo", model_dir=model), models=MODELS)
    server.start()
    settings = load_settings(
        None,
        grpc_port=0,
        mllp_port=None,
        http_port=None,
        db=f"sqlite:///{tmp_path / 't.db'}",
        model_dir=model,
        backend="triton",
        triton_url=server.grpc_url,
        triton_retries=1,
        triton_timeout_s=5.0,
        backend_health_interval_s=0.2,
    )

    async def scenario() -> None:
        svc = Service(settings)
        from kiwi_fhir.terminology.extractor import CodingExtractor

        assert isinstance(svc.extractor, CodingExtractor)  # codes on by default, any backend
        assert isinstance(svc.extractor.inner, TritonExtractor)
        ports = await svc.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['grpc']}") as ch:
                stub = pb_grpc.ExtractionServiceStub(ch)  # type: ignore[no-untyped-call]
                ok = await stub.ExtractText(
                    pb.ExtractTextRequest(text="Denies chest pain. On aspirin 81 mg daily."),
                    timeout=60,
                )
                assert ok.status == pb.JOB_STATUS_DONE
                done = await svc.get(ok.job_id)
                assert done.backend == "triton"
                assert json.loads(done.result)["documents"][0]["entities"]
                assert await _status(ch, SERVICE) == SERVING

                await asyncio.to_thread(server.stop)
                for _ in range(100):  # the health watcher notices within its interval
                    if await _status(ch, SERVICE) != SERVING:
                        break
                    await asyncio.sleep(0.1)
                assert await _status(ch, SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
                assert await _status(ch, "") == SERVING

                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.ExtractText(pb.ExtractTextRequest(text="No fever."), timeout=60)
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "fever" not in (info.value.details() or "")
                job_id = dict(info.value.initial_metadata() or ())["kiwi-job-id"]
                assert (await svc.get(job_id)).status != store.FAILED
        finally:
            await svc.stop()

    try:
        asyncio.run(scenario())
    finally:
        server.stop()
