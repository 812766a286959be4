"""The ``kiwi-fhir`` command line.

Errors we raise on purpose (``KiwiError``) print one line on stderr and exit
non-zero; ``--debug`` shows the traceback instead. Subcommands import their
heavy modules lazily so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from kiwi_fhir import __version__
from kiwi_fhir.errors import KiwiError
from kiwi_fhir.training.options import add_train_arguments


def _cmd_eval(args: argparse.Namespace) -> int:
    from kiwi_fhir.evaluation import evaluate_dirs, format_report

    result = evaluate_dirs(Path(args.gold), Path(args.pred), seed=args.seed)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(format_report(result))
    return 0


def _cmd_eval_codes(args: argparse.Namespace) -> int:
    from kiwi_fhir.terminology.evaluate import evaluate_codes, format_codes_report

    result = evaluate_codes(Path(args.gold), embedding=args.embedding)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(format_codes_report(result))
        if args.errors:
            for key, r in result.items():
                for line in r["errors"]:
                    print(f"{key}: {line}")
    return 0


def _cmd_extract(args: argparse.Namespace) -> int:
    from kiwi_fhir.extract_cli import run_extract

    return run_extract(args)


def _cmd_train(args: argparse.Namespace) -> int:
    from kiwi_fhir.training.train import run_train

    return run_train(args)


def _cmd_serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    try:
        from kiwi_fhir.service.app import serve
        from kiwi_fhir.service.settings import load_settings
    except ImportError as exc:
        from kiwi_fhir.errors import MissingExtraError

        raise MissingExtraError("kiwi-fhir serve", "serve") from exc

    settings = load_settings(
        Path(args.config) if args.config else None,
        host=args.host,
        grpc_port=args.grpc_port,
        mllp_port=args.mllp_port,
        http_port=args.http_port,
        db=args.db,
        model_dir=args.model,
        ready_file=args.ready_file,
        demo=args.demo,
    )
    logging.basicConfig(
        level=settings.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from kiwi_fhir.service.logs import install as install_log_filter

    install_log_filter()
    asyncio.run(serve(settings))
    return 0


def _positive(value: str) -> int:
    """An int of at least 1: 0 crashed (range step) and -1 silently found nothing."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value[:12]!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kiwi-fhir",
        description="Extract problems, tests, drugs, treatments, their modifiers and "
        "relations from clinical notes.",
    )
    p.add_argument("--version", action="version", version=f"kiwi-fhir {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    # Also accepted after the subcommand (`kiwi-fhir extract --debug ...`);
    # SUPPRESS keeps the subparser from resetting a --debug given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors"
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    ex = sub.add_parser(
        "extract", parents=[common], help="extract entities, modifiers and relations from notes"
    )
    ex.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="note files (.txt, FHIR .json, .hl7) or directories; '-' = stdin",
    )
    ex.add_argument(
        "--format",
        choices=["json", "brat", "fhir"],
        default="json",
        help="json: entities/modifiers/relations; brat: NAME.ann; fhir: a Bundle per document",
    )
    ex.add_argument(
        "--bundle-type",
        choices=["transaction", "collection"],
        default="transaction",
        help="FHIR Bundle type for --format fhir (default transaction)",
    )
    ex.add_argument(
        "--out",
        metavar="DIR",
        help="write NAME.json / NAME.ann / NAME.bundle.json here (NAME.N for the N-th "
        "document of a file; inputs from different folders keep those folders below "
        "DIR). Without it results go to stdout: one JSON value for one document, JSON "
        "Lines for several; stdin's result always goes to stdout",
    )
    ex.add_argument(
        "--no-codes",
        action="store_true",
        help="no terminology codes (default: ICD-10-CM for problems, UNII and DrugBank for "
        "drugs, LOINC for tests, from tables shipped in the package)",
    )
    ex.add_argument(
        "--fhir-base",
        metavar="URL",
        help="FHIR server whose Binary / attachment.url contents DocumentReferences point to: "
        "fetched with the service's FHIR client and auth (a bearer token or SMART client "
        "credentials from --fhir-config or KIWI_FHIR_FHIR_TOKEN, KIWI_FHIR_FHIR_TOKEN_URL, "
        "KIWI_FHIR_FHIR_CLIENT_ID ...); URLs on other hosts are never fetched. Needs the "
        "serve extra",
    )
    ex.add_argument(
        "--fhir-config",
        metavar="FILE",
        help="service settings file (YAML or JSON) holding the fhir_* auth settings",
    )
    ex.add_argument(
        "--code-embedding",
        action="store_true",
        help="also code mentions no table spells by MiniLM cosine to ICD-10-CM titles and "
        "LOINC names (method 'embedding', score = cosine; right about half the time; the "
        "first run embeds the titles, about a minute, cached in ~/.cache/kiwi-fhir)",
    )
    ex.add_argument(
        "--code-candidates",
        type=_positive,
        default=1,
        metavar="N",
        help="keep up to N ranked codes per system in JSON output (default 1); FHIR output "
        "keeps the best of each system",
    )
    ex.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars on stderr for several files and for notes over 16 KB "
        "(default: when stderr is a terminal)",
    )
    ex.add_argument(
        "--given-entities",
        action="store_true",
        help="keep the main entities of NAME.ann beside each NAME.txt; predict modifiers "
        "and relations only",
    )
    ex.add_argument("--model", metavar="DIR", help="model directory (default: the packaged one)")
    ex.add_argument("--threads", type=_positive, default=2, help="inference threads (default 2)")
    ex.add_argument("--batch-size", type=_positive, default=16,
                    help="windows per inference batch (default 16)")
    ex.set_defaults(func=_cmd_extract)

    ev = sub.add_parser(
        "eval",
        parents=[common],
        help="score predicted brat files against gold ones",
        description="Exact and relaxed precision / recall / F1 of entities, modifiers and "
        "relations (end to end), overall and per type, with 95% bootstrap CIs over "
        "documents -- the paper's metric.",
    )
    ev.add_argument(
        "gold", metavar="GOLD_DIR", help="annotated notes: NAME.txt with NAME.ann beside it"
    )
    ev.add_argument(
        "pred",
        metavar="PRED_DIR",
        help="predictions: NAME.ann per gold note (kiwi-fhir extract --format brat --out "
        "PRED_DIR GOLD_DIR); their text is PRED_DIR/NAME.txt if present, else the gold one",
    )
    ev.add_argument("--json", action="store_true", help="print one JSON object, not a table")
    ev.add_argument("--seed", type=int, default=13, help="bootstrap seed (default 13)")
    ev.set_defaults(func=_cmd_eval)

    ec = sub.add_parser(
        "eval-codes",
        parents=[common],
        help="coverage and precision of the terminology codes on a gold table",
        description="Codes each gold mention's text with the shipped coders and scores the "
        "best code per system against the annotator's: coverage, precision (overall and by "
        "match method) and recall, per entity type and system.",
    )
    ec.add_argument(
        "--gold",
        metavar="TSV",
        default="tests/data/terminology_gold.tsv",
        help="gold table: type, text and a column per system (icd10cm, unii, drugbank, "
        "loinc) holding the acceptable codes, '-' for none, '?' for not judged "
        "(default: tests/data/terminology_gold.tsv of a checkout)",
    )
    ec.add_argument("--json", action="store_true", help="print one JSON object, not a table")
    ec.add_argument(
        "--embedding", action="store_true", help="score with the embedding match on too"
    )
    ec.add_argument("--errors", action="store_true", help="also list every wrong code")
    ec.set_defaults(func=_cmd_eval_codes)

    tr = sub.add_parser(
        "train", parents=[common], help="fine-tune an encoder on brat-annotated notes"
    )
    add_train_arguments(tr, _positive)
    tr.set_defaults(func=_cmd_train)

    sv = sub.add_parser(
        "serve",
        parents=[common],
        help="run the gRPC / MLLP / HTTP (metrics, FHIR notify, demo) service",
        description="Settings: defaults < --config FILE < KIWI_FHIR_* environment < flags. "
        "Listening on a non-loopback --host needs auth_token (KIWI_FHIR_AUTH_TOKEN).",
    )
    sv.add_argument("--config", metavar="FILE", help="YAML or JSON settings file")
    sv.add_argument("--host", help="listen address (default 127.0.0.1)")
    sv.add_argument("--grpc-port", type=int, metavar="N", help="gRPC port (default 50051)")
    sv.add_argument("--mllp-port", type=int, metavar="N", help="MLLP port (default 2575)")
    sv.add_argument(
        "--http-port",
        type=int,
        metavar="N",
        help="HTTP port: /metrics, /fhir/notify, /jobs, /demo (default 9464)",
    )
    sv.add_argument("--db", metavar="URL", help="sqlite:///FILE (default) or postgresql://...")
    sv.add_argument("--model", metavar="DIR", help="model directory (default: the packaged one)")
    sv.add_argument(
        "--demo",
        action="store_true",
        default=None,
        help="serve the web demo (/demo, POST /api/extract; default off: it echoes note text)",
    )
    sv.add_argument(
        "--ready-file", metavar="FILE", help="write the bound ports as JSON here once listening"
    )
    sv.set_defaults(func=_cmd_serve)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KiwiError as exc:
        if args.debug:
            raise
        print(f"kiwi-fhir: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
