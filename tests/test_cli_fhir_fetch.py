"""``kiwi-fhir extract --fhir-base``: a DocumentReference whose note is a
Binary on an authenticated FHIR server (the real medplum test server) is
fetched with the service's FHIR client and auth, and only from that server."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_subscription_helpers import CLIENT_ID, CLIENT_SECRET, FhirServer, start_fhir_server

from kiwi_fhir.errors import FhirServerRejectedError
from kiwi_fhir.service.fhir_fetch import binary_content

pytestmark = pytest.mark.slow
NOTE = "Patient denies chest pain.\nTakes aspirin 81 mg daily."


@pytest.fixture(scope="module")
def fhir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirServer]:
    srv = start_fhir_server(tmp_path_factory.mktemp("medplum-cli"))
    yield srv
    srv.stop()


def _docref(url: str) -> dict[str, object]:
    return {"resourceType": "DocumentReference", "id": "cli-1", "status": "current",
            "subject": {"reference": "Patient/p1"},
            "content": [{"attachment": {"contentType": "text/plain", "url": url}}]}  # fmt: skip


def _run(args: list[str], cwd: Path, secret: str = CLIENT_SECRET,
         token_url: str = "") -> subprocess.CompletedProcess[str]:  # fmt: skip
    env = {**os.environ, "KIWI_FHIR_FHIR_TOKEN_URL": token_url,
           "KIWI_FHIR_FHIR_CLIENT_ID": CLIENT_ID, "KIWI_FHIR_FHIR_CLIENT_SECRET": secret,
           "KIWI_FHIR_FHIR_ATTEMPTS": "1"}  # fmt: skip
    res = subprocess.run([sys.executable, "-m", "kiwi_fhir.cli", "extract", *args],
                         capture_output=True, cwd=cwd, env=env, timeout=300)  # fmt: skip
    return subprocess.CompletedProcess(res.args, res.returncode, res.stdout.decode(),
                                       res.stderr.decode())  # fmt: skip


@pytest.fixture(scope="module")
def binary_id(fhir: FhirServer) -> str:
    data = base64.b64encode(NOTE.encode()).decode()
    return str(fhir.create({"resourceType": "Binary", "contentType": "text/plain",
                            "data": data})["id"])  # fmt: skip


@pytest.mark.parametrize("relative", [False, True])
def test_attachment_url_is_fetched_with_the_services_auth(
    fhir: FhirServer, binary_id: str, tmp_path: Path, relative: bool
) -> None:
    url = f"Binary/{binary_id}" if relative else f"{fhir.base}/Binary/{binary_id}"
    doc = tmp_path / "docref.json"
    doc.write_text(json.dumps(_docref(url)), encoding="utf-8")
    res = _run([str(doc), "--fhir-base", fhir.base], tmp_path, token_url=fhir.token_url)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["document"]["length"] == len(NOTE)  # offsets index the fetched, decoded text
    spans = {(e["text"], e["type"]) for e in out["entities"]}
    assert ("chest pain", "problem") in spans and ("aspirin", "drug") in spans
    assert all(NOTE[e["start"] : e["end"]] == e["text"] for e in out["entities"])
    assert NOTE not in res.stderr


def test_without_fhir_base_the_url_is_named(binary_id: str, fhir: FhirServer,
                                            tmp_path: Path) -> None:  # fmt: skip
    doc = tmp_path / "docref.json"
    doc.write_text(json.dumps(_docref(f"{fhir.base}/Binary/{binary_id}")), encoding="utf-8")
    res = _run([str(doc)], tmp_path)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "content[0].attachment.url" in res.stderr


def test_urls_on_other_hosts_are_never_fetched(fhir: FhirServer, tmp_path: Path) -> None:
    with httpx.Client() as http:  # a second server that would see any credentials sent
        seen_before = http.get(f"{fhir.root}/_requests", timeout=10).json()
    doc = tmp_path / "docref.json"
    other = fhir.base.replace("127.0.0.1", "localhost")  # same port, another origin
    doc.write_text(json.dumps(_docref(f"{other}/Binary/x")), encoding="utf-8")
    res = _run([str(doc), "--fhir-base", fhir.base], tmp_path, token_url=fhir.token_url)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "content[0].attachment.url" in res.stderr and "not on the FHIR server" in res.stderr
    with httpx.Client() as http:
        assert http.get(f"{fhir.root}/_requests", timeout=10).json() == seen_before


def test_bad_credentials_are_one_clear_line(fhir: FhirServer, binary_id: str,
                                            tmp_path: Path) -> None:  # fmt: skip
    doc = tmp_path / "docref.json"
    doc.write_text(json.dumps(_docref(f"Binary/{binary_id}")), encoding="utf-8")
    res = _run([str(doc), "--fhir-base", fhir.base], tmp_path, secret="wrong",
               token_url=fhir.token_url)  # fmt: skip
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "content[0].attachment.url" in res.stderr and "wrong" not in res.stderr


def test_binary_resource_bodies_are_unwrapped() -> None:
    body = json.dumps({"resourceType": "Binary", "contentType": "text/rtf",
                       "data": base64.b64encode(b"{\\rtf1 hi}").decode()}).encode()  # fmt: skip
    assert binary_content(body, "application/fhir+json; charset=utf-8") == (b"{\\rtf1 hi}",
                                                                            "text/rtf")  # fmt: skip
    assert binary_content(b"plain", "text/plain") == (b"plain", "text/plain")
    with pytest.raises(FhirServerRejectedError, match="base64"):
        binary_content(b'{"data": "%%%"}', "application/fhir+json")
