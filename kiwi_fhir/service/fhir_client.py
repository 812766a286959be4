"""Talking to the configured FHIR server: read, search, Binary and transaction.

Every call is bounded (``fhir_timeout_s``) and retried a few times in place
(``fhir_attempts``, exponential backoff, ``Retry-After`` honoured) for what a
retry can fix: network errors, timeouts, 408, 429, 5xx. What is still failing
leaves as ``FhirServerError`` and the caller parks the *job* for a later round,
so a server that is down for an hour costs no more than a few requests.
A 4xx that retrying cannot fix is ``FhirServerRejectedError``.

httpx errors are translated here and nowhere else. Messages carry the
operation, status code and error class -- never a response body, which may
echo clinical text.

Auth is a static bearer token or SMART backend services (OAuth2 client
credentials; a private key gives the asymmetric ``private_key_jwt`` client
authentication SMART requires, a secret gives ``client_secret_basic``). A 401
drops the cached token and retries once with a fresh one.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urljoin

import httpx

from kiwi_fhir.errors import (
    ConfigError,
    FhirServerError,
    FhirServerRejectedError,
    MissingExtraError,
)
from kiwi_fhir.service.settings import ServiceSettings

FHIR_JSON: Final = "application/fhir+json"
_RETRY_STATUS: Final = frozenset({408, 425, 429, 500, 502, 503, 504})
_MAX_RETRY_AFTER_S: Final = 30.0


@dataclass
class TokenSource:
    """SMART backend services: a cached access token from the token endpoint."""

    token_url: str
    client_id: str
    scope: str
    secret: str | None = None
    private_key: Path | None = None
    _token: str | None = field(default=None, repr=False)
    _expires: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    async def token(self, client: httpx.AsyncClient) -> str:
        async with self._lock:
            if self._token is None or time.monotonic() > self._expires:
                await self._refresh(client)
            assert self._token is not None
            return self._token

    def invalidate(self) -> None:
        self._token = None

    async def _refresh(self, client: httpx.AsyncClient) -> None:
        form = {"grant_type": "client_credentials", "scope": self.scope}
        auth: tuple[str, str] | None = None
        if self.private_key is not None:
            form["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            form["client_assertion"] = self._assertion()
        else:
            auth = (self.client_id, self.secret or "")
        try:
            resp = await client.post(self.token_url, data=form,
                                     auth=auth or httpx.USE_CLIENT_DEFAULT)  # fmt: skip
        except httpx.HTTPError as exc:
            raise FhirServerError("token request", type(exc).__name__) from exc
        if resp.status_code != 200:
            cls = FhirServerRejectedError if 400 <= resp.status_code < 500 else FhirServerError
            raise cls("token request", f"HTTP {resp.status_code}", status=resp.status_code)
        try:
            body = resp.json()
            self._token = str(body["access_token"])
            lifetime = float(body.get("expires_in", 300))
        except (ValueError, KeyError, TypeError) as exc:
            raise FhirServerError("token request", "malformed token response") from exc
        self._expires = time.monotonic() + max(lifetime - 30.0, 1.0)

    def _assertion(self) -> str:
        """The signed client assertion (RS384 / ES384 by key type, five minutes, unique jti)."""
        try:
            import jwt
            from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
            from cryptography.hazmat.primitives.serialization import load_pem_private_key
        except ImportError as exc:
            raise MissingExtraError("SMART private_key_jwt client auth", "serve") from exc
        assert self.private_key is not None
        try:
            key = load_pem_private_key(self.private_key.read_bytes(), password=None)
        except OSError as exc:
            raise ConfigError(f"{self.private_key}: cannot read ({exc.strerror})") from exc
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{self.private_key}: not an unencrypted PEM private key") from exc
        alg = "ES384" if isinstance(key, EllipticCurvePrivateKey) else "RS384"
        now = int(time.time())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": self.token_url,
                  "exp": now + 300, "jti": str(uuid.uuid4())}  # fmt: skip
        try:
            return str(jwt.encode(claims, key, algorithm=alg))  # type: ignore[arg-type]
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise ConfigError(f"{self.private_key}: key unusable for {alg}") from exc


class FhirClient:
    def __init__(
        self, settings: ServiceSettings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        if settings.fhir_base_url is None:
            raise ConfigError("fhir_base_url is not set")
        self.base = settings.fhir_base_url.rstrip("/") + "/"
        self.attempts = settings.fhir_attempts
        self.backoff_s = settings.fhir_retry_base_s
        self._static = settings.fhir_token.get_secret_value() if settings.fhir_token else None
        self._tokens: TokenSource | None = None
        if settings.fhir_token_url and settings.fhir_client_id:
            secret = settings.fhir_client_secret
            self._tokens = TokenSource(settings.fhir_token_url, settings.fhir_client_id,
                                       settings.fhir_scope,
                                       secret.get_secret_value() if secret else None,
                                       settings.fhir_private_key)  # fmt: skip
        for noisy in ("httpx", "httpcore"):  # request lines at INFO, wire events at DEBUG
            logging.getLogger(noisy).setLevel(logging.WARNING)
        self._http = httpx.AsyncClient(timeout=settings.fhir_timeout_s, transport=transport,
                                       follow_redirects=False)  # fmt: skip

    def url(self, reference: str) -> str:
        """Absolute URL of a reference; refuses anything outside the configured server."""
        full = urljoin(self.base, reference)
        if not full.startswith(self.base):
            raise FhirServerRejectedError("read", "reference outside the configured FHIR server")
        return full

    def owns(self, reference: str) -> bool:
        return not reference.startswith(("http://", "https://")) or reference.startswith(self.base)

    async def read(self, reference: str) -> dict[str, Any]:
        return await self._json("GET", self.url(reference), "read")

    async def search(self, query: str) -> list[dict[str, Any]]:
        """Resources of the first page of a search (``Type?params``)."""
        bundle = await self._json("GET", self.url(query), "search")
        entries = bundle.get("entry") or []
        return [e["resource"] for e in entries if isinstance(e.get("resource"), dict)
                and e.get("search", {}).get("mode", "match") == "match"]  # fmt: skip

    async def binary(self, reference: str, accept: str) -> tuple[bytes, str | None]:
        resp = await self._send("GET", self.url(reference), "binary", accept=accept)
        return resp.content, resp.headers.get("content-type")

    async def transaction(self, bundle: Mapping[str, Any]) -> dict[str, Any]:
        return await self._json("POST", self.base.rstrip("/"), "transaction", body=bundle)

    async def _json(self, method: str, url: str, op: str,
                    body: Mapping[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
        resp = await self._send(method, url, op, body=body)
        try:
            data = resp.json()
        except ValueError as exc:
            raise FhirServerError(op, "response is not JSON", status=resp.status_code) from exc
        if not isinstance(data, dict):
            raise FhirServerError(op, "response is not a JSON object", status=resp.status_code)
        return data

    async def _send(self, method: str, url: str, op: str, *, body: Mapping[str, Any] | None = None,
                    accept: str = FHIR_JSON) -> httpx.Response:  # fmt: skip
        refreshed = False
        attempt = 0
        while True:
            headers = {"Accept": accept}
            if body is not None:
                headers["Content-Type"] = FHIR_JSON
            auth = await self._auth_header()
            if auth:
                headers["Authorization"] = auth
            delay = self.backoff_s * 2**attempt
            try:
                resp = await self._http.request(method, url, json=body, headers=headers)
            except httpx.HTTPError as exc:
                last = FhirServerError(op, type(exc).__name__)
                last.__cause__ = exc
            else:
                if resp.status_code < 300:
                    return resp
                if resp.status_code == 401 and self._tokens is not None and not refreshed:
                    self._tokens.invalidate()  # expired or revoked: one fresh token, once
                    refreshed = True
                    continue  # not counted as an attempt
                status = resp.status_code
                if status not in _RETRY_STATUS:
                    raise FhirServerRejectedError(op, f"HTTP {status}{_issues(resp)}",
                                                  status=status)  # fmt: skip
                last = FhirServerError(op, f"HTTP {status}", status=status)
                delay = max(delay, _retry_after(resp.headers.get("retry-after")))
            attempt += 1
            if attempt >= self.attempts:
                raise last
            await asyncio.sleep(delay)

    async def _auth_header(self) -> str | None:
        if self._tokens is not None:
            return f"Bearer {await self._tokens.token(self._http)}"
        return f"Bearer {self._static}" if self._static else None

    async def close(self) -> None:
        await self._http.aclose()


def _issues(resp: httpx.Response) -> str:
    """OperationOutcome issue codes (``invalid``, ``not-found``): never diagnostics or
    details, which servers fill with echoes of the payload."""
    try:
        body = resp.json()
        codes = [str(i.get("code")) for i in body.get("issue", []) if isinstance(i, dict)]
    except (ValueError, AttributeError):
        return ""
    return f" ({', '.join(dict.fromkeys(codes))})" if codes else ""


def _retry_after(value: str | None) -> float:
    try:
        return min(float(value), _MAX_RETRY_AFTER_S) if value else 0.0
    except ValueError:
        return 0.0  # an HTTP-date: our own backoff is good enough
