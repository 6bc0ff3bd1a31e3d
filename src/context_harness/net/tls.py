"""The certificates the daemon trusts: the operating system's store (through `truststore`, as pip does; on
Linux that honours `SSL_CERT_FILE`/`SSL_CERT_DIR`), plus the certificates of `CH_CA_BUNDLE` added to it —
the company CA of a TLS-intercepting proxy, say (read and checked by `ca_bundle`). There is no way to turn
verification off.
"""

from __future__ import annotations

import ssl

import truststore

from context_harness.net.ca_bundle import CaBundle


def client_context(bundle: CaBundle | None) -> ssl.SSLContext:
    """A verifying client context; ValueError (naming the file) when `bundle` holds no usable certificate."""
    context = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if bundle is not None:
        try:
            context.load_verify_locations(cadata=bundle.certificates)
        except ssl.SSLError as exc:
            raise ValueError(f"CH_CA_BUNDLE {bundle.path}: no PEM certificates could be read ({exc})") from None
    return context
