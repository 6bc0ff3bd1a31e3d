"""The authorization request we send the browser to, and the checks on its answer (OAuth 2.1 §4.1, RFC 9207)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from context_harness.oauth.discovery import OFFLINE_ACCESS
from context_harness.oauth.pkce import states_match
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.primitives.text import SERVER_TEXT_LIMIT, printable


def build_authorization_url(
    endpoint: str,
    client_id: str,
    redirect_uri: str,
    scopes: Sequence[str],
    state: str,
    challenge: str,
    resource: str | None,
) -> str:
    """The authorization URL (OAuth 2.1 §4.1.1), keeping any query the endpoint already has.

    With `offline_access` we also send `prompt=consent`: OpenID Connect servers issue a refresh
    token for it only then (OIDC Core §11).
    """
    params: list[tuple[str, str]] = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("state", state),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ]
    if scopes:
        params.append(("scope", " ".join(scopes)))
    if resource:
        params.append(("resource", resource))
    if OFFLINE_ACCESS in scopes:
        params.append(("prompt", "consent"))
    parts = urlsplit(endpoint)
    existing = parse_qsl(parts.query, keep_blank_values=True)
    ours = {name for name, _ in params}
    query = urlencode([(k, v) for k, v in existing if k not in ours] + params, quote_via=quote)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def parse_callback(
    query: Mapping[str, str], expected_state: str, expected_issuer: str, iss_required: bool
) -> Result[str]:
    """The authorization code from the redirect's query, after the checks that must come first.

    Order: `state` (else anyone could feed us a code or an error), then `iss` (RFC 9207: present and
    different, or absent although the server promised it → a mix-up), then `error`, then `code`.
    """
    if not states_match(query.get("state"), expected_state):
        return Failure(
            "the authorization response does not belong to this login (state mismatch)",
            ErrorCode.STATE_MISMATCH,
            "start the login again from `chctl auth`; do not reuse old login links",
        )
    iss = query.get("iss")
    if iss is not None and iss != expected_issuer:
        shown = printable(iss, SERVER_TEXT_LIMIT, ascii_only=True)
        return Failure(
            f"the authorization response came from issuer {shown!r}, expected {expected_issuer!r}",
            ErrorCode.STATE_MISMATCH,
            "possible authorization server mix-up; not redeeming the code",
        )
    if iss is None and iss_required:
        return Failure(
            "the authorization response lacks the `iss` its server promised (RFC 9207)",
            ErrorCode.STATE_MISMATCH,
            "possible authorization server mix-up; not redeeming the code",
        )
    error = query.get("error")
    if error is not None:
        description = query.get("error_description")
        detail = f": {printable(description, SERVER_TEXT_LIMIT, ascii_only=True)}" if description else ""
        if error == "access_denied":
            return Failure(
                f"authorization was declined{detail}",
                ErrorCode.ACCESS_DENIED,
                "run `chctl auth` again and approve the request to connect",
            )
        return Failure(
            f"the authorization server answered {printable(error, 64, ascii_only=True)}{detail}", ErrorCode.OAUTH_ERROR
        )
    code = query.get("code")
    if not code:
        return Failure("the authorization response has no code", ErrorCode.OAUTH_ERROR)
    return Success(code)
