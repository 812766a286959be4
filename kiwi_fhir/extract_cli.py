"""``kiwi-fhir extract``: files in, one output file per document out.

Inputs: ``.txt`` notes, FHIR ``.json`` (DocumentReference or Bundle) and
``.hl7`` files (one or many messages). A document that fails is reported on
stderr in one line (file, where, reason -- never note text) and the others
are still written; the exit status is then 1. So is a part of a document
we could not use (an image or PDF ED beside the narrative), named in a
``warning:`` line.
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
from kiwi_fhir.fhir import to_bundle
from kiwi_fhir.inputs import formats, load_documents_lenient
from kiwi_fhir.serialize import to_dict

CHUNK = 8  # documents per extractor call: keeps batches full, memory flat


def expand(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            known = formats.suffixes()
            out.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in known))
        else:
            out.append(p)
    return out


def given_entities(doc: Document, txt_path: Path) -> tuple[Entity, ...]:
    ann = txt_path.with_suffix(".ann")
    if not ann.is_file():
        raise InputError(f"{txt_path}: --given-entities needs {ann.name} beside it")
    gold = parse_ann(read_text(ann), doc, path=str(ann), strict=False, report=ParseReport())
    return gold.entities


def render(ex: Extraction, fmt: str, bundle_type: str = "transaction", model_id: str = "") -> str:
    if fmt == "brat":
        return format_ann(ex)
    if fmt == "fhir":
        bundle = to_bundle(ex, bundle_type=bundle_type, model_id=model_id, backend=ex.backend)
        return json.dumps(bundle, indent=2, ensure_ascii=False) + "\n"
    return json.dumps(to_dict(ex), indent=2, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class Job:
    """One input file's readable documents and the problems found in it."""

    path: Path | None  # None = stdin
    docs: list[Document]
    given: list[tuple[Entity, ...] | None]
    errors: tuple[str, ...] = ()


def _jobs(files: list[Path], stdin: bool, given: bool) -> Iterator[Job]:
    if stdin:
        doc = Document(id="stdin", text=sys.stdin.read(), meta={"source": "stdin"})
        yield Job(None, [doc], [None])
    for f in files:
        try:
            docs, errs = load_documents_lenient(f)
        except Exception as exc:  # a parser bug must cost this file only, not the run
            yield Job(f, [], [], (f"{f}: could not be read ({type(exc).__name__})",))
            continue
        problems = [str(e) if str(f) in str(e) else f"{f}: {e}" for e in errs]
        ents: list[tuple[Entity, ...] | None] = []
        kept: list[Document] = []
        for d in docs:
            try:
                ents.append(given_entities(d, f) if given else None)
                kept.append(d)
            except KiwiError as exc:
                problems.append(str(exc))
        yield Job(f, kept, ents, tuple(problems))


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
    ext = {"json": ".json", "brat": ".ann", "fhir": ".bundle.json"}[args.format]
    many = len(files) + stdin >= 2
    bar = tqdm(
        total=len(files) + stdin,
        unit="file",
        file=sys.stderr,
        disable=not (many and sys.stderr.isatty()),
    )
    for job in _jobs(files, stdin, args.given_entities):
        bar.update(1)
        for problem in job.errors:
            bar.write(f"kiwi-fhir: {problem}", file=sys.stderr)
        failed += bool(job.errors)
        for d in job.docs:  # parts of a document we could not use (an image ED...)
            for warning in formats.warnings_of(d.meta):
                bar.write(f"kiwi-fhir: {job.path or 'stdin'}: {d.id}: warning: {warning}",
                          file=sys.stderr)  # fmt: skip
                failed += 1
        results: list[Extraction] = []
        for c in range(0, len(job.docs), CHUNK):
            given = job.given[c : c + CHUNK] if args.given_entities else None
            results.extend(extractor.extract(job.docs[c : c + CHUNK], given))
        for ex in results:
            try:
                text = render(ex, args.format, args.bundle_type, extractor.model_id)
            except KiwiError as exc:  # e.g. a resource failing R4B validation: the others go on
                where = job.path if job.path is not None else "stdin"
                bar.write(f"kiwi-fhir: {where}: {ex.document.id}: {exc}", file=sys.stderr)
                failed += 1
                continue
            if out_dir is None or job.path is None:
                sys.stdout.write(text)
                continue
            out_dir.mkdir(parents=True, exist_ok=True)
            # ids are NAME, or NAME.N for the N-th document of a multi-document file
            (out_dir / f"{ex.document.id}{ext}").write_text(text, encoding="utf-8")
    bar.close()
    return 1 if failed else 0
