"""kiwi-fhir: clinical information extraction to FHIR R4.

The core types live at the top of the package; plug-in families (extractors)
have a subpackage each.
"""

from kiwi_fhir.core import Code, Document, Entity, Extraction, Mention, Modifier, Relation
from kiwi_fhir.errors import KiwiError

__version__ = "0.1.0"

__all__ = [
    "Code",
    "Document",
    "Entity",
    "Extraction",
    "KiwiError",
    "Mention",
    "Modifier",
    "Relation",
    "__version__",
]
