"""MLLP listener: ``0x0B message 0x1C 0x0D`` frames in, HL7 ACKs out.

Contract with interface engines: ``AA`` only after the message is durably
stored (processing continues afterwards); ``AE``/``AR`` per the one status
table. Each connection is served in order (MLLP is stop-and-wait); many
connections run concurrently. Bytes outside frames are dropped; a frame
over the limit is discarded up to its end marker and answered ``AR`` while
the connection stays up; a start block inside a frame abandons the
unfinished one (logged, counted in ``kiwi_fhir_mllp_truncated_frames``); a
frame with two MSH segments is refused ``AR``; a connection idle past the
timeout is closed. With TLS configured, MLLP speaks TLS (mutual TLS with a
client CA) unless ``mllp_plaintext`` is set.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import count
from typing import TYPE_CHECKING, Final

from kiwi_fhir.errors import HL7Error, PayloadTooLargeError
from kiwi_fhir.inputs.hl7_syntax import AckError, ack_text, message_count, read_msh
from kiwi_fhir.service import intake
from kiwi_fhir.service.status import error_field, outcome, public_message
from kiwi_fhir.service.tls import peer_principal, server_tls_context

if TYPE_CHECKING:
    from kiwi_fhir.service.app import Service

log = logging.getLogger(__name__)
SB: Final = b"\x0b"
EB: Final = b"\x1c\x0d"
_ids = count(1)


@dataclass(frozen=True)
class Oversized:
    """A frame cut off at the limit; ``head`` still holds its MSH for the ACK."""

    head: bytes
    size: int


class FrameReader:
    """Incremental MLLP de-framer: feed TCP reads, get whole frames back.

    A start block inside a frame means the sender gave up on that frame (a
    crash, a timeout) and started over: the unfinished bytes are discarded
    and counted in ``truncated``, never glued onto the next message, which
    would acknowledge one message for two.
    """

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._in_frame = False
        self._skipping: Oversized | None = None
        self.garbage = 0  # bytes dropped outside frames
        self.truncated = 0  # frames abandoned by a new start block

    @property
    def in_frame(self) -> bool:
        """A start block has arrived and its frame is not complete yet."""
        return self._in_frame

    def feed(self, data: bytes) -> list[bytes | Oversized]:
        self._buf += data
        out: list[bytes | Oversized] = []
        while True:
            if not self._in_frame:
                start = self._buf.find(SB)
                if start < 0:
                    self.garbage += len(self._buf)
                    self._buf.clear()
                    return out
                self.garbage += start
                del self._buf[: start + 1]
                self._in_frame = True
            end = self._buf.find(EB)
            restart = self._buf.find(SB, 0, end if end >= 0 else len(self._buf))
            if restart >= 0:  # the frame so far was abandoned: start again there
                self.truncated += 1
                self._skipping = None
                del self._buf[: restart + 1]
                continue
            if self._skipping is not None:
                if end < 0:
                    keep = 1 if self._buf.endswith(b"\x1c") else 0
                    n = len(self._buf) - keep
                    self._skipping = Oversized(self._skipping.head, self._skipping.size + n)
                    del self._buf[:n]
                    return out
                out.append(Oversized(self._skipping.head, self._skipping.size + end))
                self._skipping = None
            elif end < 0:
                if len(self._buf) > self.max_frame:
                    self._skipping = Oversized(bytes(self._buf[:1024]), len(self._buf))
                    self._buf.clear()
                return out
            elif end > self.max_frame:
                out.append(Oversized(bytes(self._buf[:1024]), end))
            else:
                out.append(bytes(self._buf[:end]))
            del self._buf[: end + 2]
            self._in_frame = False


def one_message(frame: bytes) -> bytes:
    """MLLP carries one message per frame: a second MSH is refused (AR), never
    half-acknowledged (an ACK names one control id)."""
    if message_count(frame) > 1:
        raise HL7Error("frame holds more than one message; send one message per MLLP frame",
                       segment="MSH", field="")  # fmt: skip
    return frame


def build_ack(raw: bytes, code: str, exc: BaseException | None = None,
              warnings: Sequence[str] = ()) -> bytes:  # fmt: skip
    """An MLLP-framed ACK for ``raw``; ``exc`` becomes its ERR segment, each
    warning an ERR of severity W (table 0357 code 0: the message was accepted)."""
    errors = [AckError(_location(w), "0", w, "W") for w in warnings]
    if exc is not None:
        errors.append(AckError(error_field(exc), outcome(exc).hl7_error, public_message(exc)))
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    text = ack_text(read_msh(raw), code, errors, now=now, message_id=f"KF{now}{next(_ids):06d}")
    return SB + text.encode("utf-8") + EB


def _location(warning: str) -> str:
    """``OBX-5`` for a warning that starts ``OBX[2]: ...`` (ERR-2 has no set-ID slot here)."""
    seg = warning[:3]
    return f"{seg}-5" if seg == "OBX" else ""


class MllpServer:
    def __init__(self, service: Service) -> None:
        self.svc = service
        self.settings = service.settings
        self.server: asyncio.Server | None = None
        self.port = 0
        self._conns: set[asyncio.Task[None]] = set()
        self._busy: set[asyncio.Task[None]] = set()  # between a frame and its ACK

    async def start(self) -> None:
        s = self.settings
        tls = server_tls_context(s) if not s.mllp_plaintext else None
        if s.mllp_plaintext and s.tls_cert is not None:
            log.warning("MLLP listens in PLAINTEXT although TLS is configured "
                        "(mllp_plaintext=true): messages cross the network unencrypted")
        self.server = await asyncio.start_server(self._serve, s.host, s.mllp_port, ssl=tls,
                                                 ssl_handshake_timeout=30 if tls else None)
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def stop(self, grace: float) -> None:
        """Stop accepting; idle connections close now, busy ones get ``grace`` to answer."""
        if self.server is not None:
            self.server.close()
        for t in self._conns - self._busy:
            t.cancel()
        if self._busy:
            await asyncio.wait(list(self._busy), timeout=grace)
        for t in list(self._conns):
            t.cancel()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._conns) >= self.settings.max_connections:
            self.svc.metrics.refused.labels("mllp").inc()
            log.warning("MLLP: connection refused, %d open (max_connections)", len(self._conns))
            writer.close()
            await asyncio.gather(writer.wait_closed(), return_exceptions=True)
            return
        if task is not None:
            self._conns.add(task)
        frames = FrameReader(self.settings.mllp_max_frame_bytes)
        loop = asyncio.get_running_loop()
        frame_deadline: float | None = None
        who = peer_principal(writer)
        try:
            while True:
                wait = self.settings.mllp_idle_timeout_s
                if frame_deadline is not None:
                    wait = min(wait, frame_deadline - loop.time())
                try:
                    data = await asyncio.wait_for(reader.read(65536), max(0.0, wait))
                except TimeoutError:
                    if frame_deadline is not None and loop.time() >= frame_deadline:
                        self.svc.metrics.refused.labels("mllp-frame-timeout").inc()
                        log.warning("MLLP: frame not complete within mllp_frame_timeout_s; "
                                    "connection closed")  # fmt: skip
                    break
                if not data:
                    break
                before = frames.truncated
                ready = frames.feed(data)
                if not frames.in_frame:
                    frame_deadline = None
                elif frame_deadline is None or ready or frames.truncated > before:
                    frame_deadline = loop.time() + self.settings.mllp_frame_timeout_s
                if frames.truncated > before:
                    self.svc.metrics.mllp_truncated.inc(frames.truncated - before)
                    log.warning("MLLP: %d unfinished frame(s) discarded (a new start block "
                                "arrived before the end block)", frames.truncated - before)
                if task is not None and ready:
                    self._busy.add(task)
                for frame in ready:
                    writer.write(await self._answer(frame, who))
                    await writer.drain()
                if task is not None:
                    self._busy.discard(task)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if task is not None:
                self._conns.discard(task)
                self._busy.discard(task)
            writer.close()
            await asyncio.gather(writer.wait_closed(), return_exceptions=True)

    async def _answer(self, frame: bytes | Oversized, who: str = "") -> bytes:
        m = self.svc.metrics
        m.requests.labels("mllp", "message").inc()
        t0 = time.perf_counter()
        raw = frame.head if isinstance(frame, Oversized) else frame
        try:
            if isinstance(frame, Oversized):
                raise PayloadTooLargeError(frame.size, self.settings.mllp_max_frame_bytes)
            new = await asyncio.to_thread(intake.hl7_job, one_message(frame), "mllp", who)
            await self.svc.submit(new)  # durable before we say AA
            return build_ack(raw, "AA", warnings=new.warnings)
        except Exception as exc:
            o = outcome(exc)
            m.errors.labels("mllp", "message", o.ack).inc()
            log.info("MLLP message refused with %s (%s)", o.ack, type(exc).__name__)
            return build_ack(raw, o.ack, exc)
        finally:
            m.latency.labels("mllp", "message").observe(time.perf_counter() - t0)
