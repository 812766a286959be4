"""TLS and mutual TLS on the gRPC port (certificates made with the openssl CLI)."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from test_service_helpers import ack_fields, frame, oru, read_acks, start_server

from kiwi_fhir.service._generated import extraction_pb2 as pb
from kiwi_fhir.service._generated import extraction_pb2_grpc as pb_grpc


def _pki(d: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=kiwi-test-ca",
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
        )
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        )


@pytest.mark.slow
def test_mutual_tls_requires_a_client_certificate(tmp_path: Path) -> None:
    _pki(tmp_path)
    srv = start_server(
        tmp_path,
        env={
            "KIWI_FHIR_TLS_CERT": str(tmp_path / "server.pem"),
            "KIWI_FHIR_TLS_KEY": str(tmp_path / "server.key"),
            "KIWI_FHIR_TLS_CLIENT_CA": str(tmp_path / "ca.pem"),
        },
    )
    target = f"127.0.0.1:{srv.ports['grpc']}"
    ca = (tmp_path / "ca.pem").read_bytes()
    req = pb.ExtractTextRequest(text="TLS probe: fever.")
    try:
        good = grpc.ssl_channel_credentials(
            ca, (tmp_path / "client.key").read_bytes(), (tmp_path / "client.pem").read_bytes()
        )
        with grpc.secure_channel(target, good) as ch:
            resp = pb_grpc.ExtractionServiceStub(ch).ExtractText(req, timeout=60)
        assert resp.status == pb.JOB_STATUS_DONE
        for creds in (grpc.ssl_channel_credentials(ca), None):  # no client cert / plaintext
            ch = grpc.secure_channel(target, creds) if creds else grpc.insecure_channel(target)
            with ch, pytest.raises(grpc.RpcError) as err:
                pb_grpc.ExtractionServiceStub(ch).ExtractText(req, timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        _check_mllp_and_http(srv.ports, tmp_path)
    finally:
        assert srv.stop() == 0
    assert "PLAINTEXT" not in srv.logs()


def _client_ctx(d: Path, *, cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
    if cert:
        ctx.load_cert_chain(str(d / "client.pem"), str(d / "client.key"))
    return ctx


def _check_mllp_and_http(ports: dict[str, int], d: Path) -> None:
    """Regression: MLLP ignored the TLS settings (plaintext AA, TLS handshake timed out)."""
    msg = oru("TLSMLLP1", "TLS probe: fever.")
    raw = socket.create_connection(("127.0.0.1", ports["mllp"]), timeout=30)
    with _client_ctx(d, cert=True).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(frame(msg))
        assert ack_fields(read_acks(tls, 1)[0])["code"] == "AA"
    with socket.create_connection(("127.0.0.1", ports["mllp"]), timeout=30) as plain:
        plain.sendall(frame(oru("TLSMLLP2")))  # plaintext: a failed handshake, no ACK
        plain.settimeout(30)
        try:
            got = plain.recv(65536)
        except (ConnectionError, TimeoutError):
            got = b""
        assert b"MSA" not in got
    acks: list[bytes] = []
    with socket.create_connection(("127.0.0.1", ports["mllp"]), timeout=30) as raw:
        try:  # without a client certificate: refused (TLS 1.3 says so on the first read)
            with _client_ctx(d, cert=False).wrap_socket(raw, server_hostname="127.0.0.1") as t:
                t.sendall(frame(oru("TLSMLLP3")))
                acks = read_acks(t, 1)
        except (ssl.SSLError, ConnectionError):
            pass
    assert acks == []
    url = f"https://127.0.0.1:{ports['http']}/metrics"
    body = urllib.request.urlopen(url, context=_client_ctx(d, cert=True), timeout=30).read()
    assert b"kiwi_fhir_requests_total" in body
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        urllib.request.urlopen(url, context=_client_ctx(d, cert=False), timeout=30).read()
