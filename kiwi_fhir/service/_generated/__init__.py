"""GENERATED protobuf/gRPC code -- do not edit; run ``make protos``.

Source: ``protos/kiwi_fhir/v1/*.proto``; generator: ``kiwi_fhir.service.protogen``
(grpcio-tools, version pinned in the ``dev`` extra). Committed so that a plain
``pip install`` works without grpcio-tools; a test fails when it is stale.
"""
