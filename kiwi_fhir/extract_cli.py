"""``kiwi-fhir extract``: files in, one output file per document out.

A file that fails is reported on stderr in one line (file + reason, never
note text) and the rest are still written; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from kiwi_fhir.brat import ParseReport, format_ann, parse_ann, read_text
from kiwi_fhir.core import Document, Entity, Extraction
from kiwi_fhir.errors import InputError, KiwiError
from kiwi_fhir.extractors.onnx import OnnxExtractor
from kiwi_fhir.inputs import load_documents
from kiwi_fhir.serialize import to_dict

INPUT_SUFFIXES = (".txt", ".json", ".hl7")
CHUNK = 8  # documents per extractor call: keeps batches full, memory flat


def expand(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in INPUT_SUFFIXES))
        else:
            out.append(p)
    return out


def given_entities(doc: Document, txt_path: Path) -> tuple[Entity, ...]:
    ann = txt_path.with_suffix(".ann")
    if not ann.is_file():
        raise InputError(f"{txt_path}: --given-entities needs {ann.name} beside it")
    gold = parse_ann(read_text(ann), doc, path=str(ann), strict=False, report=ParseReport())
    return gold.entities


def render(ex: Extraction, fmt: str) -> str:
    if fmt == "brat":
        return format_ann(ex)
    return json.dumps(to_dict(ex), indent=2, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class Job:
    """One input file's documents, or the reason it could not be read."""

    path: Path | None  # None = stdin
    docs: list[Document]
    given: list[tuple[Entity, ...] | None]
    error: str = ""


def _jobs(files: list[Path], stdin: bool, given: bool) -> Iterator[Job]:
    if stdin:
        doc = Document(id="stdin", text=sys.stdin.read(), meta={"source": "stdin"})
        yield Job(None, [doc], [None])
    for f in files:
        try:
            docs = load_documents(f)
            ents = [given_entities(d, f) if given else None for d in docs]
        except KiwiError as exc:
            msg = str(exc)
            yield Job(f, [], [], msg if str(f) in msg else f"{f}: {msg}")
            continue
        yield Job(f, docs, ents)


def run_extract(args: argparse.Namespace) -> int:
    stdin = "-" in args.paths
    files = expand([p for p in args.paths if p != "-"])
    if args.given_entities and stdin:
        raise InputError("--given-entities needs files (NAME.txt with NAME.ann), not stdin")
    out_dir = Path(args.out) if args.out else None
    extractor = OnnxExtractor(
        Path(args.model) if args.model else None, threads=args.threads, batch_size=args.batch_size
    )
    extractor.load()
    failed = 0
    ext = {"json": ".json", "brat": ".ann"}[args.format]
    many = len(files) + stdin >= 2
    bar = tqdm(
        total=len(files) + stdin,
        unit="file",
        file=sys.stderr,
        disable=not (many and sys.stderr.isatty()),
    )
    for job in _jobs(files, stdin, args.given_entities):
        bar.update(1)
        if job.error:
            failed += 1
            bar.write(f"kiwi-fhir: {job.error}", file=sys.stderr)
            continue
        results: list[Extraction] = []
        for c in range(0, len(job.docs), CHUNK):
            given = job.given[c : c + CHUNK] if args.given_entities else None
            results.extend(extractor.extract(job.docs[c : c + CHUNK], given))
        for n, ex in enumerate(results):
            text = render(ex, args.format)
            if out_dir is None or job.path is None:
                sys.stdout.write(text)
                continue
            out_dir.mkdir(parents=True, exist_ok=True)
            stem = job.path.stem if len(results) == 1 else f"{job.path.stem}.{n + 1}"
            (out_dir / f"{stem}{ext}").write_text(text, encoding="utf-8")
    bar.close()
    return 1 if failed else 0
