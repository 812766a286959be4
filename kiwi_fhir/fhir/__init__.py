"""Extractions to FHIR R4 (validated with the fhir.resources R4B models).

:func:`to_bundle` is the one entry point; the mapping tables live as data in
``mappings/`` and are loaded once by :func:`load_mapping`. fhir.resources
models never leave this package: callers get plain JSON-able dicts.
"""

from kiwi_fhir.fhir.bundle import to_bundle, validate_bundle
from kiwi_fhir.fhir.mapping import load_mapping, mappings_dir
from kiwi_fhir.fhir.tables import FhirMapping

__all__ = ["FhirMapping", "load_mapping", "mappings_dir", "to_bundle", "validate_bundle"]
