"""The FHIR client against the medplum server: SMART backend services auth, retries, refusals."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from test_subscription_helpers import CLIENT_ID, FhirServer, start_fhir_server

from kiwi_fhir.errors import FhirServerError, FhirServerRejectedError
from kiwi_fhir.service.fhir_client import FhirClient
from kiwi_fhir.service.settings import load_settings

pytestmark = pytest.mark.slow


def _keypair(tmp_path: Path, name: str, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
             ) -> tuple[Path, Path]:  # fmt: skip
    priv, pub = tmp_path / f"{name}.key.pem", tmp_path / f"{name}.pub.pem"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))  # fmt: skip
    pub.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
    return priv, pub


@pytest.fixture(scope="module", params=["rsa", "ec"])
def keyed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[FhirServer, Path]]:  # fmt: skip
    tmp = tmp_path_factory.mktemp(f"smart-{request.param}")
    key = (rsa.generate_private_key(65537, 2048) if request.param == "rsa"
           else ec.generate_private_key(ec.SECP384R1()))  # fmt: skip
    priv, pub = _keypair(tmp, "client", key)
    srv = start_fhir_server(tmp, public_key=pub)
    yield srv, priv
    srv.stop()


def _client(srv: FhirServer, key: Path, attempts: int = 2) -> FhirClient:
    return FhirClient(load_settings(None, fhir_base_url=srv.base, fhir_token_url=srv.token_url,
                                    fhir_client_id=CLIENT_ID, fhir_private_key=key,
                                    fhir_attempts=attempts, fhir_retry_base_s=0.05))  # fmt: skip


def test_private_key_jwt_token_then_fhir_calls(keyed: tuple[FhirServer, Path]) -> None:
    srv, key = keyed

    async def run() -> None:
        client = _client(srv, key)
        try:
            reply = await client.transaction({"resourceType": "Bundle", "type": "transaction",
                "entry": [{"resource": {"resourceType": "Patient", "id": "smart1"},
                           "request": {"method": "PUT", "url": "Patient/smart1"}}]})  # fmt: skip
            assert reply["type"] == "transaction-response"
            assert (await client.read("Patient/smart1"))["id"] == "smart1"
            assert [p["id"] for p in await client.search("Patient?_id=smart1")] == ["smart1"]
        finally:
            await client.close()

    asyncio.run(run())


def test_wrong_key_is_refused_not_retried(keyed: tuple[FhirServer, Path], tmp_path: Path) -> None:
    srv, _ = keyed
    other, _pub = _keypair(tmp_path, "other", rsa.generate_private_key(65537, 2048))

    async def run() -> None:
        client = _client(srv, other)
        try:
            with pytest.raises(FhirServerRejectedError, match="token request: HTTP 401"):
                await client.search("Patient")
        finally:
            await client.close()

    asyncio.run(run())


def test_transient_failures_retry_then_surface(keyed: tuple[FhirServer, Path]) -> None:
    srv, key = keyed

    async def run() -> None:
        client = _client(srv, key, attempts=2)
        try:
            srv.fail("GET", 1)
            assert await client.search("Patient") is not None  # second try works
            srv.fail("GET", 2)
            with pytest.raises(FhirServerError) as exc:
                await client.search("Patient")
            assert exc.value.status == 503 and not isinstance(exc.value, FhirServerRejectedError)
            with pytest.raises(FhirServerRejectedError, match="HTTP 404"):
                await client.read("Patient/absent")
            with pytest.raises(FhirServerRejectedError, match="outside"):
                await client.read("http://elsewhere.invalid/fhir/Patient/1")
        finally:
            await client.close()

    asyncio.run(run())
