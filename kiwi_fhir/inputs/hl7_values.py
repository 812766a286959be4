"""HL7 v2 segment values: coded fields, ED payloads and structured results.

Split from :mod:`.hl7` (message structure) so each stays readable; field
values come from the raw ER7 text, see :mod:`.hl7_syntax` for why.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, replace
from typing import Final

from kiwi_fhir.errors import HL7Error, shown
from kiwi_fhir.inputs.hl7_syntax import Encoding, ts_to_fhir, unescape
from kiwi_fhir.inputs.textconv import to_plain_text
from kiwi_fhir.source import LabResult, ResultGroup

CODE_SYSTEMS: Final[dict[str, str]] = {
    "LN": "http://loinc.org",
    "SCT": "http://snomed.info/sct",
    "SNM": "http://snomed.info/sct",
    "CPT": "http://www.ama-assn.org/go/cpt",
    "C4": "http://www.ama-assn.org/go/cpt",
}
#: HL7 table 0270 (TXA-2 document type), the common codes.
DOC_TYPES: Final[dict[str, str]] = {
    "AR": "Autopsy report",
    "CD": "Cardiodiagnostics",
    "CN": "Consultation",
    "DI": "Diagnostic imaging",
    "DS": "Discharge summary",
    "ED": "Emergency department report",
    "HP": "History and physical examination",
    "OP": "Operative report",
    "PC": "Psychiatric consultation",
    "PN": "Procedure note",
    "PR": "Progress note",
    "SP": "Surgical pathology",
    "TS": "Transfer summary",
}
_ED_TYPES: Final[dict[str, str]] = {
    "PLAIN": "text/plain", "HTML": "text/html", "RTF": "text/rtf", "XML": "text/xml",
    "HL7-V3+XML": "application/hl7-v3+xml", "CDA+XML": "application/cda+xml",
}  # fmt: skip


_MIME_TEXT: Final[frozenset[str]] = frozenset(
    {"text/plain", "text/html", "text/rtf", "application/rtf", "text/xml", "application/xml",
     "application/hl7-v3+xml", "application/cda+xml"}
)  # fmt: skip


@dataclass(frozen=True)
class Segment:
    name: str
    fields: list[str]  # fields[n] is field n (MSH: fields[1] is MSH-1)
    label: str  # OBX[2] -- for error messages

    def get(self, n: int) -> str:
        return self.fields[n] if n < len(self.fields) else ""


def ed_text(obx: Segment, enc: Encoding, codec: str | None) -> str | None:
    """Text of an ED payload, or None when it is not text (a PDF, an image)."""
    comps = obx.get(5).split(enc.component)
    comps += [""] * (5 - len(comps))
    dtype_s, subtype_s, encoding_s = (comps[1].upper(), comps[2].upper(), comps[3].upper())
    ctype = _ED_TYPES.get(subtype_s) if dtype_s in ("TEXT", "TX", "APPLICATION") else None
    if "/" in subtype_s and subtype_s.lower() in _MIME_TEXT:  # "^Text^text/xml^Base64^"
        ctype = subtype_s.lower()
    if subtype_s == "RTF":
        ctype = "text/rtf"
    if ctype is None:
        return None
    payload = unescape(comps[4], enc, codec)
    seg, fld = obx.label, "5.5"
    if encoding_s in ("BASE64", "B64"):
        try:
            raw = base64.b64decode(re.sub(r"\s+", "", payload), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise HL7Error("ED data is not valid base64", segment=seg, field=fld) from exc
    elif encoding_s in ("A", "ASCII", ""):
        return payload
    elif encoding_s == "HEX":
        try:
            raw = bytes.fromhex(payload)
        except ValueError as exc:
            raise HL7Error("ED data is not valid hex", segment=seg, field=fld) from exc
    else:
        raise HL7Error(f"unknown ED encoding {shown(encoding_s)}", segment=obx.label, field="5.4")
    try:
        return to_plain_text(raw, ctype).text
    except (LookupError, ValueError) as exc:
        raise HL7Error(f"ED text does not decode ({exc})", segment=seg, field=fld) from exc


def lab_result(obx: Segment, vtype: str, enc: Encoding, codec: str | None) -> LabResult:
    def u(v: str) -> str:
        return unescape(v, enc, codec)

    ce = [*obx.get(3).split(enc.component), "", "", ""]
    unit = obx.get(6).split(enc.component)
    value = obx.get(5)
    lab = LabResult(
        set_id=obx.get(1),
        value_type=vtype,
        code=u(ce[0]),
        display=u(ce[1]),
        system=CODE_SYSTEMS.get(ce[2].upper(), ""),
        unit=u(unit[0]),
        range=u(obx.get(7)),
        flag=u(obx.get(8)),
        status=u(obx.get(11)),
        date=ts_to_fhir(obx.get(14)) or "",
    )
    if vtype == "SN":
        sn = [*value.split(enc.component), "", "", "", ""]
        return replace(lab, comparator=u(sn[0]), value=u(sn[1]), separator=u(sn[2]),
                       value2=u(sn[3]))  # fmt: skip
    if vtype in ("CWE", "CE", "CNE"):
        cv = [*value.split(enc.repetition)[0].split(enc.component), "", "", ""]
        return replace(lab, value_code=u(cv[0]), value_display=u(cv[1]),
                       value_system=CODE_SYSTEMS.get(cv[2].upper(), ""))  # fmt: skip
    if vtype in ("DT", "TS", "DTM"):
        when = ts_to_fhir(value.split(enc.component)[0]) or ""
        return replace(lab, value_datetime=when, value="" if when else u(value))
    return replace(lab, value=u(value))


def report_info(obr: Segment | None, enc: Encoding, codec: str | None) -> ResultGroup:
    """The OBR facts a DiagnosticReport of its results needs; no OBR (a TXA,
    results before any OBR): a group without ``set_id``, so no report."""
    if obr is None or obr.name != "OBR":
        return ResultGroup()
    ce = [*obr.get(4).split(enc.component), "", "", ""]
    return ResultGroup(
        set_id=obr.get(1) or obr.label,
        code=unescape(ce[0], enc, codec),
        display=unescape(ce[1], enc, codec),
        system=CODE_SYSTEMS.get(ce[2].upper(), ""),
        status=obr.get(25).split(enc.component)[0],
        date=ts_to_fhir(obr.get(7).split(enc.component)[0]) or "",
        id=unescape(obr.get(3).split(enc.component)[0], enc, codec),
    )
