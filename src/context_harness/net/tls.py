"""The certificates the daemon trusts: the operating system's store (through `truststore`, as pip does; on
Linux that honours `SSL_CERT_FILE`/`SSL_CERT_DIR`), plus the PEM certificates of `CH_CA_BUNDLE` added to it —
the company CA of a TLS-intercepting proxy, say. There is no way to turn verification off.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import truststore


def client_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """A verifying client context; ValueError (naming the file) when `ca_bundle` holds no usable certificate."""
    context = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_bundle is not None:
        try:
            context.load_verify_locations(cafile=str(ca_bundle))
        except (OSError, ssl.SSLError) as exc:
            why = exc.strerror or str(exc)
            raise ValueError(f"CH_CA_BUNDLE {ca_bundle}: no PEM certificates could be read ({why})") from None
    return context
