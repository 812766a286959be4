"""TLS for the listeners that are not gRPC (MLLP, HTTP): one ``SSLContext`` from
the same settings gRPC uses, so a deployment configures certificates once.

With ``tls_client_ca`` set, clients must present a certificate signed by it
(mutual TLS); the certificate's fingerprint then becomes the caller's
principal, which scopes de-duplication (``intake.owner_of``).
"""

from __future__ import annotations

import hashlib
import ssl
from typing import TYPE_CHECKING, Any

from kiwi_fhir.errors import ConfigError

if TYPE_CHECKING:
    from kiwi_fhir.service.settings import ServiceSettings


def server_tls_context(s: ServiceSettings) -> ssl.SSLContext | None:
    """None when TLS is not configured."""
    if s.tls_cert is None or s.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(s.tls_cert), str(s.tls_key))
        if s.tls_client_ca is not None:
            ctx.load_verify_locations(cafile=str(s.tls_client_ca))
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS certificate or key ({type(exc).__name__})") from exc
    return ctx


def peer_principal(transport_like: Any) -> str:
    """``cert:<fingerprint>`` of a verified client certificate, else ``""``."""
    ssl_obj = transport_like.get_extra_info("ssl_object")
    if ssl_obj is None:
        return ""
    der = ssl_obj.getpeercert(binary_form=True)
    return "cert:" + hashlib.sha256(der).hexdigest()[:24] if der else ""
