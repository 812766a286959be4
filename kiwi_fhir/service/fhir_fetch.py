"""``attachment.url`` fetched through the service's authenticated FHIR client.

A DocumentReference whose note lives in a ``Binary`` on the FHIR server
(``"url": "Binary/5"`` or the absolute URL) needs the server's auth to read.
The subscription worker fetches such attachments with its :class:`FhirClient`;
``kiwi-fhir extract --fhir-base URL`` does the same through
:class:`FhirFetcher`, a blocking :data:`~kiwi_fhir.inputs.formats.Fetcher`
over that same client (same token settings, retries and error translation),
so a file saved from the server reads on the command line as it would in
the service.

Only URLs on the configured server are fetched: credentials never leave for
another host, and an outside URL is named in the document's error instead.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json

from kiwi_fhir.errors import FhirServerRejectedError, KiwiError
from kiwi_fhir.service.fhir_client import FhirClient
from kiwi_fhir.service.settings import ServiceSettings


def binary_content(data: bytes, content_type: str | None) -> tuple[bytes, str | None]:
    """The attachment's bytes from a Binary read: servers answer either the raw
    content or, when they cannot honour ``Accept``, the Binary resource itself
    (``application/fhir+json`` with base64 ``data`` and its ``contentType``)."""
    if not content_type or content_type.split(";")[0].strip() != "application/fhir+json":
        return data, content_type
    try:
        res = json.loads(data)
        inner = base64.b64decode(str(res.get("data", "")), validate=True)
    except (ValueError, binascii.Error, AttributeError) as exc:
        reason = "a Binary resource without readable base64 data"
        raise FhirServerRejectedError("binary", reason) from exc
    served = res.get("contentType")
    return inner, served if isinstance(served, str) else None


class FhirFetcher:
    """Blocking fetcher for the CLI: one private event loop for the client's
    lifetime (an ``httpx.AsyncClient`` must stay on the loop that opened it)."""

    def __init__(self, settings: ServiceSettings) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = FhirClient(settings)
        self.base = self._client.base

    def __call__(self, url: str) -> tuple[bytes, str | None]:
        if not self._client.owns(url):
            raise ValueError(
                f"not on the FHIR server {self.base} (--fhir-base); not fetched, so "
                "its credentials go nowhere else"
            )
        try:
            data, ctype = self._loop.run_until_complete(self._client.binary(url, "*/*"))
            return binary_content(data, ctype)
        except KiwiError as exc:  # already free of response bodies (fhir_client)
            raise ValueError(str(exc)) from exc

    def close(self) -> None:
        self._loop.run_until_complete(self._client.close())
        self._loop.close()
