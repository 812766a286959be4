"""The one error tree of kiwi-fhir.

Every failure the package reports on purpose is a ``KiwiError``; library
errors are translated where they happen with ``raise ... from exc`` so the
cause stays on the chain but callers only catch our types::

    KiwiError
    ├── InputError                  bad input from a caller (never retried)
    │   ├── AnnotationFormatError   malformed brat .ann line (file, line)
    │   ├── DocumentError           unreadable note / document (path)
    │   └── ConfigError             invalid settings, mapping or model files
    ├── ModelError                  no model installed, or it failed to load
    │   └── MissingExtraError       an optional dependency group is absent
    └── BackendError                an inference backend failed at run time

Messages name *where* (file and line, JSON path, segment and field) but
never quote clinical text: error strings end up in logs and ACKs.
"""

from __future__ import annotations


class KiwiError(Exception):
    """Base of every error kiwi-fhir raises deliberately."""


class InputError(KiwiError):
    """The caller handed us something we cannot use."""


class AnnotationFormatError(InputError):
    """A brat standoff line does not parse."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


class DocumentError(InputError):
    """A note cannot be read or decoded."""


class ConfigError(InputError):
    """Settings, mapping tables or model files are invalid."""


class ModelError(KiwiError):
    """No usable model: not installed, incomplete, or failed to load."""


class MissingExtraError(ModelError):
    """An optional backend was configured but its extra is not installed."""

    def __init__(self, feature: str, extra: str) -> None:
        super().__init__(f"{feature} needs the '{extra}' extra: pip install 'kiwi-fhir[{extra}]'")
        self.feature = feature
        self.extra = extra


class BackendError(KiwiError):
    """An inference backend failed while serving a request."""
