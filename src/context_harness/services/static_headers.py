"""The headers the bridge (and `chctl check`, which goes the bridge's way) sends to a server besides the
credential: the static ones `chctl add` recorded with a binding (`--header`, and those a registry declares;
never a secret) and the more secret headers stored with an API key (a registry server may declare several).

A header-mode entry holds its static headers itself; a bridge entry holds only `chctl bridge NAME`, so they are
taken from the bindings: those of the last `chctl add` in bridge mode for the URL the credential goes to (else of
the last one in any mode). They pass the gate again before they are sent: the files they are read from are the
user's, but a header the daemon sets itself or a line break must never reach a request.
"""

from __future__ import annotations

import structlog

from context_harness.primitives.oauth import Credential
from context_harness.primitives.outside_values import header_value_problem, static_header_problem
from context_harness.stores.bindings import Binding

log = structlog.get_logger(__name__)


def recorded_headers(url: str, bindings: list[Binding]) -> dict[str, str]:
    """The static headers `chctl add` recorded for `url`: the last bridge binding's, else the last binding's."""
    at_url = [binding for binding in bindings if binding.url == url]
    bridged = [binding for binding in at_url if binding.mode == "bridge"]
    chosen = bridged or at_url
    return dict(chosen[-1].headers or {}) if chosen else {}


def static_headers(name: str, url: str, bindings: list[Binding], credential: Credential | None) -> dict[str, str]:
    """What goes with every request to `name` at `url`, beside the credential's header."""
    headers = recorded_headers(url, bindings)
    if credential is not None and credential.server_url == url:
        headers.update(credential.extra_headers or {})
    taken = credential.header_name.lower() if credential is not None and credential.secret else None
    sendable: dict[str, str] = {}
    for header, value in headers.items():
        problem = static_header_problem(header) or header_value_problem(value, {})
        if problem is None and header.lower() == taken:
            problem = "is the credential's own header"
        if problem is not None:
            log.warning("static_header_dropped", server=name, header=header[:64], problem=problem)
            continue
        sendable[header] = value
    return sendable
