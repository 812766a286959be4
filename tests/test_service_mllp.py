"""MLLP listener: framing edge cases, ACK codes, and the third-party ``mllp_send`` client."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from test_service_helpers import (
    HL7_DIR,
    Server,
    ack_fields,
    frame,
    jobs,
    oru,
    read_acks,
    start_server,
)  # fmt: skip

from kiwi_fhir.service.mllp import EB, SB, FrameReader, Oversized

MAX_FRAME = 4096
KEY = "mllp:anonymous|hl7:KIWITEST|WARD7|"  # dedup keys are scoped to the caller
SECRET_NOTE = "WOMBATQUINCE-4410"  # sent in good, bad and oversized messages; never logged


def test_frame_reader_split_reads_multiple_frames_garbage_and_oversize() -> None:
    r = FrameReader(max_frame=64)
    msg = b"MSH|^~\\&|A|B|C|D|1||ORU^R01|X1|P|2.5\r"
    data = b"junk" + frame(msg) + b"\r\n" + frame(b"MSH|2") + frame(b"MSH|3")
    got: list[bytes | Oversized] = []
    for i in range(len(data)):  # one byte per TCP read
        got += r.feed(data[i : i + 1])
    assert got == [msg, b"MSH|2", b"MSH|3"]
    assert r.garbage == len(b"junk\r\n")
    assert r.feed(data) == [msg, b"MSH|2", b"MSH|3"]  # all in one read
    big = frame(b"MSH|" + b"x" * 500)
    out = r.feed(big[:100]) + r.feed(big[100:]) + r.feed(frame(b"MSH|after"))
    assert isinstance(out[0], Oversized) and out[0].size == 504
    assert out[1] == b"MSH|after"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("mllp")
    srv = start_server(tmp, env={"KIWI_FHIR_MLLP_MAX_FRAME_BYTES": str(MAX_FRAME),
                                 "KIWI_FHIR_MLLP_IDLE_TIMEOUT_S": "1.5"})  # fmt: skip
    yield srv
    assert srv.stop() == 0
    assert SECRET_NOTE not in srv.logs()


def _connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.ports["mllp"]), timeout=30)


def test_mllp_send_gets_aa_ae_ar(server: Server, tmp_path: Path) -> None:
    # The venv's scripts dir need not be on PATH (CI runs .venv/bin/python -m pytest).
    exe = shutil.which("mllp_send") or shutil.which(
        "mllp_send", path=str(Path(sys.executable).parent)
    )
    if exe is None:
        pytest.fail("mllp_send (package 'hl7') is not installed: make test installs it")
    out = subprocess.run([exe, "--loose", "-p", str(server.ports["mllp"]), "-f",
                          str(HL7_DIR / "svc_mixed_three.hl7"), "127.0.0.1"],
                         capture_output=True, timeout=60, check=True)  # fmt: skip
    acks = [ack_fields(a.strip(b"\x0b\x1c\r\n") + b"\r")
            for a in out.stdout.split(b"\n") if a.strip()]  # fmt: skip
    assert [(a["code"], a["control_id"]) for a in acks] == [
        ("AA", "SVCMIX1"),
        ("AE", "SVCMIX2"),
        ("AR", "SVCMIX3"),
    ]
    assert acks[1]["err"][2] == "OBX^1^5" and acks[1]["err"][3].startswith("102^")
    assert acks[2]["err"][3].startswith("200^")
    assert acks[0]["msh"][2:6] == ["KIWI", "HOSP", "KIWITEST", "WARD7"]  # sender/receiver swapped
    stored = {j["dedup_key"] for j in jobs(server.db)}
    assert KEY + "SVCMIX1" in stored
    assert not {KEY + "SVCMIX2", KEY + "SVCMIX3"} & stored


def test_split_reads_batched_frames_garbage_and_resend(server: Server) -> None:
    with _connect(server) as s:
        s.sendall(b"\x00\xffnoise")
        data = frame(oru("SPLIT1"))
        for i in range(0, len(data), 7):
            s.sendall(data[i : i + 7])
            time.sleep(0.002)
        s.sendall(frame(oru("SPLIT2")) + frame(oru("SPLIT3")) + frame(oru("SPLIT1")))
        acks = [ack_fields(a) for a in read_acks(s, 4)]
    assert [(a["code"], a["control_id"]) for a in acks] == [
        ("AA", "SPLIT1"),
        ("AA", "SPLIT2"),
        ("AA", "SPLIT3"),
        ("AA", "SPLIT1"),
    ]
    keys = [j["dedup_key"] for j in jobs(server.db)]
    assert keys.count(KEY + "SPLIT1") == 1  # the resend was not stored twice


def test_oversized_frame_is_rejected_and_connection_survives(server: Server) -> None:
    with _connect(server) as s:
        s.sendall(frame(oru("BIG1", f"{SECRET_NOTE} fever " * 300)))
        s.sendall(frame(oru("AFTERBIG")))
        acks = [ack_fields(a) for a in read_acks(s, 2)]
    assert (acks[0]["code"], acks[0]["control_id"]) == ("AR", "BIG1")
    assert "exceeds the limit" in acks[0]["err"][8]
    assert (acks[1]["code"], acks[1]["control_id"]) == ("AA", "AFTERBIG")


def test_garbage_frame_gets_ar_without_control_id(server: Server) -> None:
    with _connect(server) as s:
        s.sendall(frame(b"\x00\x01 this is not HL7 at all " + SECRET_NOTE.encode()))
        wrong = oru("SECRET1", f"{SECRET_NOTE} has fever.").replace(b"ORU^R01", b"ORU^R99")
        s.sendall(frame(wrong))
        s.sendall(frame(oru("SECRET2", f"{SECRET_NOTE} has fever.")))
        ack, wrong_type, good = (ack_fields(a) for a in read_acks(s, 3))
    assert ack["code"] == "AR" and ack["control_id"] == ""
    assert (wrong_type["code"], good["code"]) == ("AR", "AA")
    assert SECRET_NOTE not in wrong_type["err"][8]


def test_idle_connection_is_closed(server: Server) -> None:
    with _connect(server) as s:
        s.settimeout(10)
        t0 = time.monotonic()
        assert s.recv(10) == b""  # server closed it
        assert 1.0 < time.monotonic() - t0 < 8


def test_many_concurrent_connections(server: Server) -> None:
    def one(i: int) -> list[str]:
        with _connect(server) as s:
            for k in range(3):
                s.sendall(frame(oru(f"C{i}-{k}")))
            return [ack_fields(a)["code"] + ack_fields(a)["control_id"] for a in read_acks(s, 3)]

    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(one, range(24)))
    assert results == [[f"AAC{i}-{k}" for k in range(3)] for i in range(24)]


def test_frame_reader_start_block_inside_a_frame_abandons_it() -> None:
    """Regression: an unterminated frame was glued onto the next one (one ACK for two)."""
    r = FrameReader(max_frame=4096)
    first, second = b"MSH|^~\\&|A|B|C|D|1||ORU^R01|NOEB1|P|2.5\r", b"MSH|second|NOEB2\r"
    got = r.feed(SB + first) + r.feed(frame(second))
    assert got == [second] and r.truncated == 1
    assert r.feed(SB + first + SB + second + EB) == [second] and r.truncated == 2


def test_truncated_frame_and_two_message_frame_on_one_connection(server: Server) -> None:
    with _connect(server) as s:
        s.sendall(SB + oru("NOEB1"))  # no end block: the sender gave up on it
        s.sendall(frame(oru("NOEB2")))
        acks = [ack_fields(a) for a in read_acks(s, 1)]
        assert [(a["code"], a["control_id"]) for a in acks] == [("AA", "NOEB2")]
        s.sendall(frame(oru("NOEB2")))  # the sender's resend is a duplicate, not a new job
        s.sendall(frame(oru("TWO1") + oru("TWO2")))
        acks = [ack_fields(a) for a in read_acks(s, 2)]
        assert [(a["code"], a["control_id"]) for a in acks] == [("AA", "NOEB2"), ("AR", "TWO1")]
        assert "one message per MLLP frame" in acks[1]["err"][8]
    keys = [j["dedup_key"] for j in jobs(server.db)]
    assert keys.count(KEY + "NOEB2") == 1
    assert not {KEY + "NOEB1", KEY + "TWO1", KEY + "TWO2"} & set(keys)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.ports['http']}/metrics",
                                     timeout=10).read().decode()  # fmt: skip
    count = next(float(line.split()[1]) for line in metrics.splitlines()
                 if line.startswith("kiwi_fhir_mllp_truncated_frames_total"))  # fmt: skip
    assert count >= 1


def test_accepted_message_names_what_was_not_extracted_in_a_warning_err(server: Server) -> None:
    # narrative plus a PDF: AA, and an ERR of severity W names the skipped OBX
    pdf = b"OBX|2|ED|18748-4^Report^LN||^application^pdf^Base64^JVBERi0xLjQK||||||F\r"
    msg = oru("WARN1") + pdf
    bom = b"\xef\xbb\xbf" + oru("BOM1")  # a BOM before MSH still gives MSA-2
    with _connect(server) as s:
        s.sendall(frame(msg) + frame(bom))
        warned, plain = (ack_fields(a) for a in read_acks(s, 2))
    assert (warned["code"], warned["control_id"]) == ("AA", "WARN1")
    err = warned["err"]
    assert err[2] == "OBX^1^5" and err[3].startswith("0^") and err[4] == "W"
    assert "OBX[2]: ED payload is not text; not extracted" in err[8]
    assert (plain["code"], plain["control_id"], plain["err"]) == ("AA", "BOM1", None)
    assert KEY + "BOM1" in {j["dedup_key"] for j in jobs(server.db)}
