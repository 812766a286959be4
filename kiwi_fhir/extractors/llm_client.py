"""HTTP client for an OpenAI-compatible ``/v1/completions`` server (vLLM).

Plain HTTP rather than the ``vllm`` or ``openai`` packages: the service must
not pull a GPU stack or a second SDK, and one small client is the one place
where transport failures become our error types. Retries cover what a
restarting or overloaded server does (connection refused, 429, 5xx,
timeouts) with exponential backoff; a 4xx is the request's fault and is
raised at once as ``BackendRejectedError``. Error messages carry the URL
and status, never the prompt (it is clinical text).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from kiwi_fhir.errors import (
    BackendError,
    BackendRejectedError,
    BackendTimeoutError,
    BackendUnavailableError,
    MissingExtraError,
)

log = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
BACKEND = "vllm"


def api_root(base_url: str) -> str:
    """``http://host:8000`` and ``http://host:8000/v1`` both name the same API."""
    url = base_url.rstrip("/")
    return url if url.endswith("/v1") else f"{url}/v1"


class CompletionsClient:
    """One pooled, thread-safe connection set to one server."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        timeout_s: float = 120.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_connections: int = 8,
        api_key: str | None = None,
        transport: Any = None,
    ) -> None:
        """``transport`` (an ``httpx.BaseTransport``) replaces the network: tests."""
        try:
            import httpx
        except ImportError as exc:
            raise MissingExtraError("the vLLM backend", "llm") from exc
        self._httpx = httpx
        self.url = api_root(base_url)
        self.model = model
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=self.url,
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            limits=httpx.Limits(max_connections=max_connections),
            headers=headers,
            transport=transport,
        )

    def models(self, *, retries: int | None = None, timeout_s: float | None = None) -> list[str]:
        """Model names the server serves (``GET /models``)."""
        body = self._request("GET", "/models", None, retries, timeout_s)
        data = body.get("data")
        if not isinstance(data, list):
            raise BackendError(f"{BACKEND} backend at {self.url}: malformed /models response")
        return [str(m.get("id")) for m in data if isinstance(m, dict)]

    def complete(
        self,
        prompts: Sequence[str],
        *,
        max_tokens: int,
        stop: Sequence[str] = (),
        grammar: str | None = None,
    ) -> list[str]:
        """Greedy completions, one per prompt, in prompt order.

        ``grammar`` (EBNF) asks vLLM's structured outputs to constrain
        generation; a list of prompts shares it, so callers send one prompt
        per grammar.
        """
        payload: dict[str, Any] = {
            "model": self.model,
            "prompt": list(prompts),
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "n": 1,
        }
        if stop:
            payload["stop"] = list(stop)
        if grammar is not None:
            payload["structured_outputs"] = {"grammar": grammar}
        body = self._request("POST", "/completions", payload)
        choices = body.get("choices")
        if not isinstance(choices, list) or len(choices) != len(prompts):
            raise BackendError(f"{BACKEND} backend at {self.url}: wrong number of completions")
        out = [""] * len(prompts)
        for pos, ch in enumerate(choices):
            if not isinstance(ch, dict) or not isinstance(ch.get("text"), str):
                raise BackendError(f"{BACKEND} backend at {self.url}: malformed completion")
            idx = ch.get("index", pos)
            if not isinstance(idx, int) or not 0 <= idx < len(prompts):
                raise BackendError(f"{BACKEND} backend at {self.url}: bad completion index")
            out[idx] = ch["text"]
        return out

    def _request(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None,
        retries: int | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """The one place where httpx failures become kiwi-fhir errors."""
        httpx = self._httpx
        attempts = 1 + (self.retries if retries is None else retries)
        last: BackendUnavailableError | None = None
        cause: Exception | None = None
        for attempt in range(attempts):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                if timeout_s is None:
                    resp = self._http.request(method, path, json=payload)
                else:
                    resp = self._http.request(method, path, json=payload, timeout=timeout_s)
            except httpx.TimeoutException as exc:
                wait = self.timeout_s if timeout_s is None else timeout_s
                last = BackendTimeoutError(BACKEND, self.url, f"no answer in {wait}s")
                cause = exc
            except httpx.HTTPError as exc:  # connection refused/reset, protocol errors
                last = BackendUnavailableError(BACKEND, self.url, type(exc).__name__)
                cause = exc
            else:
                if resp.status_code in _RETRY_STATUS:
                    last = BackendUnavailableError(BACKEND, self.url, f"HTTP {resp.status_code}")
                    cause = None
                elif resp.status_code >= 400:
                    raise BackendRejectedError(BACKEND, self.url, resp.status_code, _kind(resp))
                else:
                    try:
                        body = resp.json()
                    except ValueError as exc:
                        raise BackendError(f"{BACKEND} backend at {self.url}: not JSON") from exc
                    if not isinstance(body, dict):
                        raise BackendError(f"{BACKEND} backend at {self.url}: not a JSON object")
                    return body
            log.warning("%s %s failed (attempt %d/%d): %s", method, path, attempt + 1,
                        attempts, last.reason)  # fmt: skip
        assert last is not None
        raise last from cause

    def close(self) -> None:
        self._http.close()


def _kind(resp: Any) -> str:
    """The error *type* the server reports; its message may quote the prompt."""
    try:
        err = resp.json().get("error", {})
        kind = err.get("type") if isinstance(err, dict) else None
    except (ValueError, AttributeError):
        kind = None
    return str(kind or "error")[:80]
