"""HL7 v2 syntax, in one place: messages and segments, MSH, escapes, charsets,
timestamps, and the text of an ACK.

Everything that reads or writes ER7 bytes below the level of "what does
this message mean" lives here: the parser (:mod:`.hl7`), the service's
intake (identity, message count) and the MLLP listener (ACKs) share it.

Written by hand because hl7apy re-escapes the sequences it does not model
(``\\.br\\`` comes back as ``\\E\\.br\\E\\`` and ``\\Xhh\\`` likewise), which
would put backslashes into the note and shift every offset after them. The
escape character is the message's own (MSH-2), not assumed to be ``\\``.

``\\Xhh..\\`` escapes are raw bytes in the message charset (MSH-18); bytes of
consecutive hex escapes are collected before decoding so a UTF-8 character
split over two escapes still decodes.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from kiwi_fhir.errors import shown

#: HL7 table 0211 (MSH-18) to Python codecs.
_CHARSETS: Final[dict[str, str]] = {
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "UNICODE UTF-16": "utf-16",
    "UNICODE": "utf-16",
    "ISO IR192": "utf-8",
    "ISO IR6": "ascii",
    "ISO IR100": "latin-1",
    "CP1252": "cp1252",
    "WINDOWS-1252": "cp1252",
}
_ALIASES: Final[dict[str, str]] = {
    **{re.sub(r"[\s_\-]+", "", k): v for k, v in _CHARSETS.items()},
    "8859": "latin-1",
    "ISO8859": "latin-1",
    "ISO88591": "latin-1",
    "ISOIR100": "latin-1",
    "LATIN1": "latin-1",
    "UNICODEUTF8": "utf-8",
    "UTF8": "utf-8",
    "ISOIR192": "utf-8",
    "USASCII": "ascii",
}
_TS_RE = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(?:(\d{2})(\d{2})?(\d{2})?(?:\.\d+)?)?([+-]\d{4})?$")


@dataclass(frozen=True)
class Encoding:
    """The delimiters of one message (MSH-1 and MSH-2)."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @classmethod
    def from_msh(cls, msh: str) -> Encoding:
        if len(msh) < 5 or not msh[3].strip():
            raise ValueError("MSH lacks its field separator / encoding characters")
        f = msh[3]
        enc = msh[4:].split(f, 1)[0]
        if len(enc) < 3:
            raise ValueError("MSH-2 needs at least three encoding characters")
        return cls(f, enc[0], enc[1], enc[2], enc[3] if len(enc) > 3 else "&")


def codec_for(msh18: str) -> str | None:
    """Python codec for an MSH-18 value; None when absent (callers assume UTF-8)."""
    name = msh18.split("~")[0].split("^")[0].strip().upper()
    if not name:
        return None
    # Senders spell these many ways: "8859", "8859/1", "ISO-8859-1", "ISO_IR 100",
    # "ISO IR100", "UNICODE UTF8"... compare without separators.
    key = re.sub(r"[\s_\-]+", "", name)
    if key in _ALIASES:
        return _ALIASES[key]
    try:
        info = codecs.lookup(name)  # a Python codec name ("latin-1", "cp1250")
    except LookupError:
        info = None
    if info is None or not getattr(info, "_is_text_encoding", True):
        raise ValueError(f"unknown character set {shown(name)}")
    return info.name


def unescape(value: str, enc: Encoding, codec: str | None = None) -> str:
    """Decode HL7 escape sequences in one field, component or repetition."""
    e = enc.escape
    if e not in value:
        return value
    out: list[str] = []
    pending = bytearray()  # bytes of consecutive \X..\ escapes

    def flush() -> None:
        if pending:
            out.append(_decode_hex(bytes(pending), codec))
            pending.clear()

    i = 0
    while i < len(value):
        ch = value[i]
        end = value.find(e, i + 1) if ch == e else -1
        if ch != e or end < 0:
            flush()
            out.append(ch)
            i += 1
            continue
        seq = value[i + 1 : end]
        i = end + 1
        if seq[:1] == "X" and re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", seq[1:]):
            pending.extend(bytes.fromhex(seq[1:]))
            continue
        flush()
        out.append(_named(seq, enc))
    flush()
    return "".join(out)


def _named(seq: str, enc: Encoding) -> str:
    simple = {
        "F": enc.field,
        "S": enc.component,
        "T": enc.subcomponent,
        "R": enc.repetition,
        "E": enc.escape,
        ".br": "\n",
    }
    if seq in simple:
        return simple[seq]
    if seq.startswith(".sp"):
        n = seq[3:].strip().lstrip("+")
        return "\n" * (int(n) if n.isdigit() else 1)
    # \H\ \N\ highlighting, \.in\ \.ti\ \.ce\ \.fi\ \.nf\ \.sk\ layout, \C..\ \M..\ \Z..\
    # charset switches and locally defined escapes carry no text.
    return ""


def _decode_hex(data: bytes, codec: str | None) -> str:
    for name in (codec or "utf-8", "latin-1"):
        try:
            return data.decode(name)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")  # pragma: no cover - latin-1 decodes anything


def ts_to_fhir(ts: str) -> str | None:
    """HL7 TS/DTM to a valid FHIR dateTime (time kept only with a zone, as FHIR needs)."""
    m = _TS_RE.match(ts.split("^")[0].strip())
    if not m:
        return None
    year, month, day, hh, mi, ss, tz = m.groups()
    if month is None:
        return year
    if day is None:
        return f"{year}-{month}"
    date = f"{year}-{month}-{day}"
    if hh is None or tz is None:
        return date
    return f"{date}T{hh}:{mi or '00'}:{ss or '00'}{tz[:3]}:{tz[3:]}"


# -- messages and segments ---------------------------------------------------

BOM: Final = "\ufeff"
BATCH_SEGMENTS: Final = ("FHS", "BHS", "BTS", "FTS")
_LINE_SPLIT = re.compile(r"\r\n|\r|\n")
_LINE_SPLIT_B = re.compile(rb"\r\n|\r|\n")
#: A UTF-8 BOM may precede the first MSH (it did on a real feed: the ACK lost MSA-2).
_MSH_AT_LINE_START = re.compile(rb"(?:^|[\r\n\x0b]|\xef\xbb\xbf)(MSH[^\r\n]{5})")
#: A line that is an HL7 segment of the kinds a pasted note would never hold.
SEGMENT_LINE: Final = re.compile(r"(?m)^(?:MSH|PID|PV1|OBR|OBX|TXA|EVN|ORC|NTE)\|")


def segment_lines(text: str) -> list[str]:
    """Non-blank lines; segments may end in CR, LF or CRLF on real feeds."""
    return [ln for ln in _LINE_SPLIT.split(text) if ln.strip()]


def split_messages(raw: str | bytes) -> list[str | bytes]:
    """One chunk per MSH; MLLP framing, a BOM and batch-only chunks (FHS/BHS...) dropped."""
    if isinstance(raw, bytes):
        raw = raw.replace(b"\x0b", b"").replace(b"\x1c", b"").lstrip()
        raw = raw.removeprefix(BOM.encode()).lstrip()
        parts_b = re.split(rb"(?:\r\n|\r|\n)(?=MSH)", raw)
        return [p for p in parts_b if not _only_batch(p.decode("latin-1"))]
    raw = raw.replace("\x0b", "").replace("\x1c", "").lstrip().removeprefix(BOM).lstrip()
    parts = re.split(r"(?:\r\n|\r|\n)(?=MSH)", raw)
    return [p for p in parts if not _only_batch(p)]


def _only_batch(chunk: str) -> bool:
    return all(ln[:3] in BATCH_SEGMENTS for ln in segment_lines(chunk))


def message_count(raw: bytes) -> int:
    """MSH segments at line starts: how many messages ``raw`` holds."""
    return len(_MSH_AT_LINE_START.findall(raw))


def looks_like_hl7(head: str) -> bool:
    """An MSH first, or HL7 segment lines anywhere (a message pasted after prose)."""
    return head.lstrip(BOM + "\x0b \t\r\n").startswith("MSH") or bool(SEGMENT_LINE.search(head))


@dataclass(frozen=True)
class MshHeader:
    """The MSH fields an ACK and the sender identity need; read leniently so even
    a message the parser refuses gets an ACK naming it."""

    field_sep: str
    encoding: str
    sending_app: str
    sending_facility: str
    receiving_app: str
    receiving_facility: str
    control_id: str
    processing_id: str
    version: str
    event: str


def read_msh(raw: bytes) -> MshHeader | None:
    """MSH of the first message in ``raw``; None when there is no usable MSH."""
    m = _MSH_AT_LINE_START.search(raw)
    if m is None:
        return None
    start = m.start(1)
    line = _LINE_SPLIT_B.split(raw[start:], maxsplit=1)[0].decode("latin-1")
    sep = line[3]
    f = line.split(sep)
    f.insert(1, sep)  # so f[n] is MSH-n

    def get(n: int, limit: int = 180) -> str:
        return f[n][:limit] if n < len(f) else ""

    comp = get(2)[:1] or "^"
    mtype = get(9).split(comp)
    return MshHeader(sep, get(2, 4) or "^~\\&", get(3), get(4), get(5), get(6), get(10, 199),
                     get(11, 3) or "P", get(12, 20) or "2.5",
                     mtype[1][:3] if len(mtype) > 1 else "")  # fmt: skip


# -- acknowledgements --------------------------------------------------------


@dataclass(frozen=True)
class AckError:
    """One ERR segment: where (``OBX-5``, or empty), HL7 table 0357 code, text,
    and severity (``E`` error, ``W`` warning: the message was still accepted)."""

    location: str
    code: str
    text: str
    severity: str = "E"


def ack_text(h: MshHeader | None, code: str, errors: Sequence[AckError], *, now: str,
             message_id: str) -> str:  # fmt: skip
    """The ER7 of an ACK for the message whose header is ``h`` (sender and
    receiver swapped, MSA-2 = its MSH-10); our own text cannot break the
    structure, since delimiters in it are blanked."""
    fs, enc = (h.field_sep, h.encoding) if h else ("|", "^~\\&")
    comp = enc[:1] or "^"

    def clean(value: str) -> str:
        for ch in (fs, *enc, "\r", "\n"):
            value = value.replace(ch, " ")
        return value

    event = h.event if h else ""
    msh = fs.join(["MSH", enc, h.receiving_app if h else "KIWI-FHIR",
                   h.receiving_facility if h else "", h.sending_app if h else "",
                   h.sending_facility if h else "", now, "",
                   f"ACK{comp}{event}{comp}ACK" if event else "ACK",
                   message_id, h.processing_id if h else "P",
                   h.version if h else "2.5"])  # fmt: skip
    segs = [msh, fs.join(["MSA", code, h.control_id if h else ""])]
    for e in errors:
        where = e.location.split("-")
        loc = comp.join([where[0], "1", where[1]]) if len(where) == 2 else ""
        text = clean(e.text)[:200]
        err_code = f"{e.code}{comp}{text}{comp}HL70357"
        segs.append(fs.join(["ERR", "", loc, err_code, e.severity, "", "", "", text]))
    return "\r".join(segs) + "\r"
