"""The credential an API-key server is added with: a new key, or the stored one, kept for the recorded URL."""

from __future__ import annotations

from context_harness.config.format import substitutions
from context_harness.primitives.oauth import Credential, TokenState
from context_harness.primitives.outside_values import (
    credential_problem,
    describe_url,
    header_name_problem,
    header_value_problem,
    is_secure_endpoint,
)
from context_harness.primitives.result import ErrorCode, Failure, Result, Success

BEARER = "Bearer"


def header_for(key_header: str | None) -> tuple[str, str | None]:
    """(header name, scheme) for an API key: `Authorization` means `Authorization: Bearer KEY`."""
    if key_header is None or key_header.lower() == "authorization":
        return "Authorization", BEARER
    return key_header, None


def api_key_credential(
    name: str,
    url: str,
    *,
    new_key: str | None,
    key_header: str | None,
    registry_header: str | None,
    stored: Credential | None,
    scheme: str | None = None,
    extra_headers: dict[str, str] | None = None,
) -> Result[Credential]:
    """The key to store for `name` at `url`: the new one, else the stored one. Either goes in the header the
    stored key went in unless `key_header` names another: a new key never quietly moves to `Authorization`.
    `scheme`: as a registry's value template names it ("" for none; None: the usual rule), for a key in a new
    header. `extra_headers`: more secret headers, kept with the key (checked like it); the stored ones when None."""
    previous = stored if stored is not None and stored.kind == "api_key" else None
    key = new_key if new_key is not None else (previous.api_key if previous is not None else None)
    if not key:
        return Failure(
            f"{name} needs an API key",
            ErrorCode.AUTH_REQUIRED,
            f"pass -k KEY or --api-key-env VAR (e.g. `chctl add {name} --api-key-env "
            f"{name.upper().replace('-', '_')}_API_KEY`)",
        )
    bad_key = credential_problem(key, substitutions())  # a key stored before this check existed, too
    if bad_key is not None:
        return Failure(f"the API key {bad_key}", ErrorCode.INVALID_PARAMS, "nothing was written; check the key")
    for header, value in (extra_headers or {}).items():
        bad = header_name_problem(header) or header_value_problem(value, substitutions())
        if bad is not None:
            return Failure(f"the secret header {header!r} {bad}", ErrorCode.INVALID_PARAMS, "nothing was written")
    if not is_secure_endpoint(url):
        return Failure(
            f"refusing to send an API key to {describe_url(url)} in clear text",
            ErrorCode.INVALID_PARAMS,
            "use the server's https:// URL (plain http is accepted on loopback only)",
        )
    header_name, usual_scheme = header_for(key_header or registry_header)
    scheme = usual_scheme if scheme is None else scheme
    if key_header is None and previous is not None:
        header_name, scheme = previous.header_name, previous.header_scheme
    if extra_headers is None and previous is not None:
        extra_headers = previous.extra_headers
    return Success(
        Credential(
            name=name,
            kind="api_key",
            state=TokenState.API_KEY,
            header_name=header_name,
            header_scheme=scheme or None,
            api_key=key,
            extra_headers=dict(extra_headers) if extra_headers else None,
            server_url=url,
        )
    )
