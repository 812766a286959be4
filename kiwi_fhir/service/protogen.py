"""Regenerate ``_generated/`` from ``protos/`` (``make protos``); ``--check`` diffs only.

Why committed code rather than a build step: a plain ``pip install`` (and a
wheel) then needs no grpcio-tools and no custom setuptools hook, and the
generated code is reviewed like any other change. The price is drift, which
``tests/test_service_protos.py`` catches by regenerating and comparing. The
``protoc`` import path ``kiwi_fhir.v1`` is rewritten to this package, because
``kiwi_fhir`` is already our Python package name.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parents[2] / "protos"
OUT = Path(__file__).resolve().parent / "_generated"
PROTOS = ("kiwi_fhir/v1/extraction.proto",)
NAMES = ("extraction_pb2.py", "extraction_pb2.pyi", "extraction_pb2_grpc.py")


def generate() -> dict[str, str]:
    """File name -> generated text, without touching the package."""
    from grpc_tools import protoc  # dev dependency: pip install '.[dev]'

    with tempfile.TemporaryDirectory() as tmp:
        args = ["protoc", f"-I{PROTO_ROOT}", f"--python_out={tmp}", f"--pyi_out={tmp}",
                f"--grpc_python_out={tmp}", *PROTOS]  # fmt: skip
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        gen = Path(tmp) / "kiwi_fhir" / "v1"
        return {
            name: (gen / name)
            .read_text(encoding="utf-8")
            .replace("from kiwi_fhir.v1 import", "from kiwi_fhir.service._generated import")
            for name in NAMES
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--check", action="store_true", help="exit 1 if _generated/ is stale")
    args = p.parse_args(argv)
    files = generate()
    stale = [
        n
        for n, text in files.items()
        if not (OUT / n).is_file() or (OUT / n).read_text(encoding="utf-8") != text
    ]
    if args.check:
        for n in stale:
            print(f"stale: {OUT / n}", file=sys.stderr)
        return 1 if stale else 0
    for n in stale:
        (OUT / n).write_text(files[n], encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
