"""Helpers for the subscription tests: the medplum FHIR server process and notifications.

(Named ``test_subscription_*`` to sit with those tests; it holds no tests.)
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

FHIR_DIR = Path(__file__).resolve().parent / "fhir_server"
CLIENT_ID, CLIENT_SECRET = "kiwi-backend", "client-secret-1"


@dataclass
class FhirServer:
    """The in-memory FHIR server (tests/fhir_server/server.mjs), seen as a FHIR client."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    _token: str = field(default="", repr=False)

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base(self) -> str:
        return f"{self.root}/fhir/R4"

    @property
    def token_url(self) -> str:
        return f"{self.root}/oauth2/token"

    def _headers(self) -> dict[str, str]:
        if not self._token:
            r = httpx.post(self.token_url, data={"grant_type": "client_credentials"},
                           auth=(CLIENT_ID, CLIENT_SECRET), timeout=10)  # fmt: skip
            r.raise_for_status()
            self._token = r.json()["access_token"]
        return {"Authorization": f"Bearer {self._token}", "Content-Type": "application/fhir+json"}

    def create(self, res: dict[str, Any]) -> dict[str, Any]:
        r = httpx.post(f"{self.base}/{res['resourceType']}", json=res, headers=self._headers(),
                       timeout=10)  # fmt: skip
        assert r.status_code == 201, r.text
        return dict(r.json())

    def update(self, res: dict[str, Any]) -> dict[str, Any]:
        r = httpx.put(f"{self.base}/{res['resourceType']}/{res['id']}", json=res,
                      headers=self._headers(), timeout=10)  # fmt: skip
        assert r.status_code == 200, r.text
        return dict(r.json())

    def read(self, ref: str) -> dict[str, Any]:
        r = httpx.get(f"{self.base}/{ref}", headers=self._headers(), timeout=10)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def search(self, query: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.base}/{query}", headers=self._headers(), timeout=30)
        assert r.status_code == 200, r.text
        return [e["resource"] for e in r.json().get("entry", [])]

    def fail(self, method: str, count: int) -> None:
        """The next ``count`` FHIR requests of ``method`` (from anyone) get 503."""
        httpx.post(f"{self.root}/_fail", params={"method": method, "count": count}, timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def start_fhir_server(tmp_path: Path, *, public_key: Path | None = None,
                      timeout: float = 60) -> FhirServer:  # fmt: skip
    """With ``public_key`` the token endpoint wants SMART private_key_jwt, else the secret."""
    node = shutil.which("node")
    if node is None or not (FHIR_DIR / "node_modules" / "@medplum" / "fhir-router").is_dir():
        pytest.fail("the medplum FHIR server is not installed: `make test` runs "
                    "`npm ci` in tests/fhir_server (needs node)")  # fmt: skip
    ready, log = tmp_path / "fhir.ready.json", tmp_path / "fhir.log"
    with log.open("ab") as fh:
        auth = (["--client-public-key", str(public_key)] if public_key else
                ["--client-secret", CLIENT_SECRET])  # fmt: skip
        proc = subprocess.Popen([node, "server.mjs", "--ready-file", str(ready), "--client-id",
                                 CLIENT_ID, *auth],
                                cwd=FHIR_DIR, stdout=fh, stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + timeout
    while not ready.is_file():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"FHIR server did not start:\n{log.read_text()}")
        time.sleep(0.1)
    return FhirServer(proc, json.loads(ready.read_text())["port"], log)


def backport_bundle(kind: str, refs: list[str], *, event: int | None = None,
                    resources: list[dict[str, Any]] | None = None,
                    subscription: str = "Subscription/kiwi") -> dict[str, Any]:  # fmt: skip
    """An R4 Subscriptions Backport notification (``history`` Bundle, Parameters status)."""
    params: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": subscription}},
        {"name": "topic", "valueCanonical": "http://example.org/topic/docref-create"},
        {"name": "status", "valueCode": "active"},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(event or 0)},
    ]
    entries: list[dict[str, Any]] = []
    for ref in refs or ([""] if kind == "event-notification" else []):
        part: list[dict[str, Any]] = [{"name": "event-number", "valueString": str(event)}]
        if ref:
            part.append({"name": "focus", "valueReference": {"reference": ref}})
            entries.append({"fullUrl": ref, "request": {"method": "PUT", "url": ref},
                            "response": {"status": "200"}})  # fmt: skip
        params.append({"name": "notification-event", "part": part})
    for res in resources or []:
        entries.append({"fullUrl": f"DocumentReference/{res['id']}", "resource": res})
    status = {"fullUrl": f"urn:uuid:{uuid.uuid4()}",
              "resource": {"resourceType": "Parameters", "parameter": params}}  # fmt: skip
    return {"resourceType": "Bundle", "type": "history", "timestamp": "2026-11-30T10:00:00Z",
            "entry": [status, *entries]}  # fmt: skip
