"""``kiwi-fhir serve``: gRPC API, MLLP listener and durable intake.

Layout (edges convert, the middle speaks core types)::

    settings.py   one validated settings model (config file < env < CLI)
    status.py     the one table: our errors -> gRPC status / HL7 ACK codes
    intake.py     request payload -> NewJob (validated, hashed, keyed) -> Documents
    store.py      SQLAlchemy 2 intake store; the only module that sees DB rows
    migrations/   Alembic scripts (packaged, run on start-up)
    worker.py     micro-batcher: queue -> one extractor call per batch, off the loop
    convert.py    stored results -> protobuf; the only module that builds messages
    grpc_server.py, mllp.py, metrics.py, app.py (wiring, start-up recovery, drain)

Protobuf code is generated from ``protos/kiwi_fhir/v1`` and committed under
``_generated/`` (see its docstring for why and how to regenerate).
"""
