"""The HTTP port of ``kiwi-fhir serve``: metrics, FHIR notifications, job status, demo.

One Starlette app on uvicorn, inside the service's own event loop (so it
shares the store, the batcher and the drain with gRPC and MLLP)::

    GET  /metrics                         Prometheus (was prometheus_client's server)
    POST /fhir/notify                     rest-hook notifications (R4 core, Backport)
    PUT  /fhir/notify/DocumentReference/{id}   R4 core with the resource
    GET  /jobs/{id}                       job status incl. fetch / write-back state
    GET  /demo, /demo/assets/*            the web demo; POST /api/extract behind it

Errors leave as JSON ``{"error": ..., "type": ...}`` (an OperationOutcome on
the FHIR routes) with the HTTP status of ``kiwi_fhir.service.status``'s table; messages come from
``public_message``, so no clinical text reaches a response or a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from kiwi_fhir import errors as e
from kiwi_fhir.service import demo_api, store, subscriptions
from kiwi_fhir.service.status import outcome, public_message

if TYPE_CHECKING:
    import uvicorn

    from kiwi_fhir.service.app import Service

log = logging.getLogger(__name__)
Handler = Callable[[Request], Awaitable[Response]]


def http_status(exc: BaseException) -> int:
    return outcome(exc).http


def _json_errors(fhir: bool = False) -> Callable[[Handler], Handler]:
    """Our errors -> HTTP answers, in one place for every route."""

    def wrap(fn: Handler) -> Handler:
        async def run(request: Request) -> Response:
            try:
                return await fn(request)
            except Exception as exc:
                code, msg = http_status(exc), public_message(exc)
                if code >= 500:
                    log.warning("%s %s -> %d: %s", request.method, request.url.path, code, msg)
                if fhir:
                    issue = {"severity": "error", "code": "processing", "diagnostics": msg}
                    return JSONResponse({"resourceType": "OperationOutcome", "issue": [issue]},
                                        code, media_type="application/fhir+json")  # fmt: skip
                return JSONResponse({"error": msg, "type": type(exc).__name__}, code)

        return run

    return wrap


def build_app(service: Service) -> Starlette:
    s = service.settings

    async def read_body(request: Request) -> bytes:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > s.max_message_bytes:
                raise e.PayloadTooLargeError(len(body), s.max_message_bytes)
        return body

    def bearer(request: Request) -> None:
        """The service's ``auth_token`` (same as gRPC) guards job status and the demo API."""
        if s.auth_token is None:
            return
        got = request.headers.get("authorization", "")
        if not hmac.compare_digest(got.encode(), f"Bearer {s.auth_token.get_secret_value()}"
                                   .encode()):  # fmt: skip
            raise e.AuthenticationError("missing or wrong bearer token")

    async def metrics(request: Request) -> Response:
        if s.metrics == "token":
            bearer(request)
        data = await asyncio.to_thread(generate_latest, service.metrics.registry)
        return Response(data, media_type=CONTENT_TYPE_LATEST)

    @_json_errors(fhir=True)
    async def notify(request: Request) -> Response:
        t0 = time.perf_counter()
        service.metrics.requests.labels("http", "Notify").inc()
        if s.subscription_header_value is None:
            raise e.ServiceError("subscriptions are not configured (subscription_header_value)")
        got = request.headers.get(s.subscription_header_name, "")
        want = s.subscription_header_value.get_secret_value()
        if not hmac.compare_digest(got.encode(), want.encode()):
            raise e.AuthenticationError(f"missing or wrong {s.subscription_header_name} header")
        tail = request.path_params.get("tail", "")
        note = subscriptions.parse(request.method, tail, await read_body(request))
        new_jobs = subscriptions.jobs(note, s.subscription_criteria)
        if new_jobs and service.subscription_worker is None:
            raise e.ServiceError("fhir_base_url is not configured: cannot fetch or write back")
        accepted: list[dict[str, Any]] = []
        for new in new_jobs:
            accepted.append(await service.submit_subscription(new))
        service.metrics.latency.labels("http", "Notify").observe(time.perf_counter() - t0)
        log.info("notification %s: %d job(s)", note.type, len(accepted))
        return JSONResponse({"type": note.type, "jobs": accepted})

    @_json_errors()
    async def job_status(request: Request) -> Response:
        bearer(request)
        job = await service.get(request.path_params["job_id"])
        return JSONResponse(job_view(job))

    @_json_errors()
    async def extract(request: Request) -> Response:
        bearer(request)
        who = "token" if s.auth_token is not None else ""
        return JSONResponse(await demo_api.extract(service, await read_body(request), who))

    routes: list[Route | Mount] = [
        *([Route("/metrics", _json_errors()(metrics))] if s.metrics != "off" else []),
        Route("/fhir/notify", notify, methods=["POST"]),
        Route("/fhir/notify/{tail:path}", notify, methods=["POST", "PUT"]),
        Route("/jobs/{job_id}", job_status),
    ]
    if s.demo:
        routes += demo_api.routes(extract)
    return Starlette(routes=routes)


def job_view(job: store.Job) -> dict[str, Any]:
    """What a caller may see of a job: state and errors, never payload or results."""
    when = job.next_attempt_at.isoformat() if job.next_attempt_at else None
    return {"id": job.id, "source": job.source, "kind": job.kind, "status": job.status,
            "error": job.error, "attempts": job.attempts, "model": job.model_id,
            "backend": job.backend, "received_at": job.received_at.isoformat(),
            "writeback": job.writeback, "writeback_attempts": job.writeback_attempts,
            "writeback_error": job.writeback_error, "next_attempt_at": when}  # fmt: skip


class HttpServer:
    """uvicorn inside our loop; our SIGTERM handling (drain) stays in charge."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        import uvicorn

        class _Quiet(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield  # the service owns SIGTERM/SIGINT and drains

        s = self.service.settings
        sock = socket.create_server((s.host, s.http_port or 0), reuse_port=False)
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(build_app(self.service), log_level="warning", access_log=False,
                                lifespan="off", limit_concurrency=s.max_connections,
                                ssl_certfile=_s(s.tls_cert),
                                ssl_keyfile=_s(s.tls_key), ssl_ca_certs=_s(s.tls_client_ca),
                                ssl_cert_reqs=ssl.CERT_REQUIRED if s.tls_client_ca
                                else ssl.CERT_NONE)  # fmt: skip
        self._server = _Quiet(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="kiwi-http")
        while not self._server.started:
            if self._task.done():
                await self._task  # raises what went wrong
            await asyncio.sleep(0.01)

    async def stop(self, grace: float) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace + 1)
        except TimeoutError:
            self._server.force_exit = True
            await asyncio.gather(self._task, return_exceptions=True)


def _s(path: Any) -> str | None:
    return str(path) if path is not None else None
