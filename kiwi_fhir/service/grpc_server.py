"""The gRPC API (``kiwi_fhir.v1.ExtractionService``) plus health and reflection.

Every RPC stores its payload durably first (the job id goes out as initial
metadata ``kiwi-job-id`` at once, so a caller whose deadline expires can
still ``GetResult`` it), then waits for the micro-batcher. Errors leave
through ``convert.rich_status`` -- the one status table -- never with a
payload quote. Auth, when configured, is a constant-time bearer-token check
on every API call; health and reflection stay open for probes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from kiwi_fhir.errors import AuthenticationError, InvalidFieldError
from kiwi_fhir.service import convert, intake
from kiwi_fhir.service._generated import extraction_pb2 as pb
from kiwi_fhir.service.status import outcome

if TYPE_CHECKING:
    from kiwi_fhir.service.app import Service

log = logging.getLogger(__name__)
SERVICE = "kiwi_fhir.v1.ExtractionService"
_MARGIN_S = 0.05  # answer DEADLINE_EXCEEDED ourselves, with the job id, just before gRPC would


class _Api:
    def __init__(self, service: Service) -> None:
        self.svc = service
        token = service.settings.auth_token
        self._token = f"Bearer {token.get_secret_value()}".encode() if token else None

    def _auth(self, ctx: Any) -> str:
        """Check the token; returns the caller's principal (the de-duplication scope)."""
        if self._token is not None:
            got = dict(ctx.invocation_metadata() or ()).get("authorization", "")
            if not hmac.compare_digest(str(got).encode(), self._token):
                raise AuthenticationError("missing or invalid bearer token")
        return principal(ctx, token=self._token is not None)

    async def _unary(
        self, method: str, ctx: Any, build: Callable[[str], Any]
    ) -> pb.ExtractResponse:
        m = self.svc.metrics
        m.requests.labels("grpc", method).inc()
        t0 = time.perf_counter()
        try:
            who = self._auth(ctx)
            sub = await self.svc.submit(await asyncio.to_thread(build, who))
            await ctx.send_initial_metadata((("kiwi-job-id", sub.job.id),))
            remaining = ctx.time_remaining()
            timeout = None if remaining is None else max(0.0, remaining - _MARGIN_S)
            job = await self.svc.result(sub, timeout)
            return convert.response(job, duplicate=sub.duplicate)
        except Exception as exc:
            await self._abort(method, ctx, exc)
            raise  # unreachable: abort raises
        finally:
            m.latency.labels("grpc", method).observe(time.perf_counter() - t0)

    async def _abort(self, method: str, ctx: Any, exc: Exception) -> None:
        code, message, trailers = convert.rich_status(exc)
        self.svc.metrics.errors.labels("grpc", method, code.name).inc()
        if code == grpc.StatusCode.INTERNAL:
            log.error("%s failed: %s", method, type(exc).__name__)
        await ctx.abort(code, message, trailers)

    async def ExtractText(self, req: pb.ExtractTextRequest, ctx: Any) -> pb.ExtractResponse:
        return await self._unary("ExtractText", ctx, lambda who: intake.text_job(
            req.text, req.patient, req.encounter, req.document_id, "grpc", who))  # fmt: skip

    async def ExtractDocumentReference(
        self, req: pb.ExtractDocumentReferenceRequest, ctx: Any
    ) -> pb.ExtractResponse:
        return await self._unary("ExtractDocumentReference", ctx,
                                 lambda who: intake.docref_job(req.resource_json, "grpc",
                                                               who))  # fmt: skip

    async def ExtractHL7(self, req: pb.ExtractHL7Request, ctx: Any) -> pb.ExtractResponse:
        return await self._unary("ExtractHL7", ctx,
                                 lambda who: intake.hl7_job(req.message, "grpc", who))

    async def GetResult(self, req: pb.GetResultRequest, ctx: Any) -> pb.ExtractResponse:
        self.svc.metrics.requests.labels("grpc", "GetResult").inc()
        try:
            who = self._auth(ctx)
            return convert.response(await self.svc.get(req.job_id,
                                                       owner=intake.owner_of("grpc", who)))
        except Exception as exc:
            await self._abort("GetResult", ctx, exc)
            raise

    async def ExtractStream(
        self, requests: AsyncIterator[pb.StreamRequest], ctx: Any
    ) -> AsyncIterator[pb.StreamResponse]:
        """Completion order; at most ``stream_max_in_flight`` items accepted but not yet
        written, so a slow reader stalls our reads of its requests (HTTP/2 flow
        control then stalls the client) instead of growing a buffer."""
        who = ""
        try:
            who = self._auth(ctx)
        except AuthenticationError as exc:
            await self._abort("ExtractStream", ctx, exc)
        slots = asyncio.Semaphore(self.svc.settings.stream_max_in_flight)
        done: asyncio.Queue[pb.StreamResponse | None] = asyncio.Queue()
        tasks: set[asyncio.Task[None]] = set()

        async def one(req: pb.StreamRequest) -> None:
            t0 = time.perf_counter()
            self.svc.metrics.requests.labels("grpc", "ExtractStream").inc()
            try:
                sub = await self.svc.submit(await asyncio.to_thread(_builder(req), who))
                job = await self.svc.result(sub, None)
                out = convert.stream_result(req.item_id, job, duplicate=sub.duplicate)
            except Exception as exc:
                code = outcome(exc).grpc_code.name
                self.svc.metrics.errors.labels("grpc", "ExtractStream", code).inc()
                out = convert.stream_error(req.item_id, exc)
            self.svc.metrics.latency.labels("grpc", "ExtractStream").observe(
                time.perf_counter() - t0)  # fmt: skip
            await done.put(out)

        async def read() -> None:
            async for req in requests:
                await slots.acquire()
                task = asyncio.create_task(one(req))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            while tasks:
                await asyncio.gather(*list(tasks))
            await done.put(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await done.get()) is not None:
                yield item
                slots.release()
            await reader
        finally:
            reader.cancel()
            for t in list(tasks):
                t.cancel()


def _builder(req: pb.StreamRequest) -> Callable[[str], Any]:
    kind = req.WhichOneof("input")
    if kind == "text":
        t = req.text
        return lambda who: intake.text_job(t.text, t.patient, t.encounter, t.document_id,
                                           "grpc", who)  # fmt: skip
    if kind == "document_reference":
        return lambda who: intake.docref_job(req.document_reference.resource_json, "grpc", who)
    if kind == "hl7":
        return lambda who: intake.hl7_job(req.hl7.message, "grpc", who)

    def missing(_who: str) -> Any:
        from kiwi_fhir.errors import InvalidFieldError

        raise InvalidFieldError("input", "one of text, document_reference, hl7 is required")

    return missing


def principal(ctx: Any, *, token: bool) -> str:
    """Who is calling, as far as authentication tells: a client certificate
    (mutual TLS) by its fingerprint, else the bearer-token holder, else nobody."""
    try:
        pem = (ctx.auth_context() or {}).get("x509_pem_cert") or []
    except (AttributeError, ValueError):  # an insecure channel has no auth context
        pem = []
    if pem:
        return "cert:" + hashlib.sha256(pem[0]).hexdigest()[:24]
    return "token" if token else ""


def _parsed(api: _Api, fn: Any, msg: Any) -> Any:
    """Deserialize inside the handler, not in gRPC's: a corrupt message or bad
    UTF-8 in a string field is then our INVALID_ARGUMENT, not an UNKNOWN with a
    traceback in the log."""

    async def call(raw: bytes, ctx: Any) -> Any:
        try:
            req = msg.FromString(raw)
        except DecodeError as exc:
            err = InvalidFieldError("request", f"not a valid {msg.DESCRIPTOR.name} message")
            await api._abort(msg.DESCRIPTOR.name, ctx, err)
            raise err from exc  # unreachable: abort raises
        return await fn(req, ctx)

    return call


async def _stream_requests(raw: AsyncIterator[bytes]) -> AsyncIterator[pb.StreamRequest]:
    async for chunk in raw:
        try:
            yield pb.StreamRequest.FromString(chunk)
        except DecodeError:
            yield pb.StreamRequest(item_id="")  # answered with INVALID_ARGUMENT by _builder


def _handlers(api: _Api) -> Any:
    def unary(fn: Any, req: Any) -> Any:
        return grpc.unary_unary_rpc_method_handler(
            _parsed(api, fn, req), request_deserializer=None,
            response_serializer=pb.ExtractResponse.SerializeToString)  # fmt: skip

    async def stream(raw: AsyncIterator[bytes], ctx: Any) -> AsyncIterator[pb.StreamResponse]:
        async for item in api.ExtractStream(_stream_requests(raw), ctx):
            yield item

    return grpc.method_handlers_generic_handler(SERVICE, {
        "ExtractText": unary(api.ExtractText, pb.ExtractTextRequest),
        "ExtractDocumentReference": unary(api.ExtractDocumentReference,
                                          pb.ExtractDocumentReferenceRequest),
        "ExtractHL7": unary(api.ExtractHL7, pb.ExtractHL7Request),
        "GetResult": unary(api.GetResult, pb.GetResultRequest),
        "ExtractStream": grpc.stream_stream_rpc_method_handler(
            stream, request_deserializer=None,
            response_serializer=pb.StreamResponse.SerializeToString),
    })  # fmt: skip


def _credentials(service: Service) -> Any:
    s = service.settings
    if s.tls_cert is None or s.tls_key is None:
        return None
    ca = s.tls_client_ca.read_bytes() if s.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(s.tls_key.read_bytes(), s.tls_cert.read_bytes())],
        root_certificates=ca, require_client_auth=ca is not None)  # fmt: skip


class GrpcServer:
    def __init__(self, service: Service) -> None:
        s = service.settings
        opts = [("grpc.max_receive_message_length", s.max_message_bytes),
                ("grpc.max_send_message_length", s.max_response_bytes)]  # fmt: skip
        self.server: Any = grpc.aio.server(options=opts,
                                           maximum_concurrent_rpcs=s.max_connections)
        self.server.add_generic_rpc_handlers((_handlers(_Api(service)),))
        self.health: Any = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self.server)
        addr = f"{s.host}:{s.grpc_port}"
        creds = _credentials(service)
        add = self.server.add_secure_port if creds else self.server.add_insecure_port
        self.port = int(add(addr, creds) if creds else add(addr))

    async def start(self) -> None:
        await self.server.start()
        for name in ("", SERVICE):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float) -> None:
        """NOT_SERVING first so balancers move away, then let in-flight calls finish."""
        for name in ("", SERVICE):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace)
