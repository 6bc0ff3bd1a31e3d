"""Step-up authorization (MCP authorization spec, "scope challenge handling"): a server refuses a call with 403
and `WWW-Authenticate: Bearer error="insufficient_scope", scope="..."`. The call cannot succeed with the token
held; a new login that asks for the scopes held *and* the scopes wanted can.

The retry limit: a login is suggested only while it would ask for a scope no login has asked for yet. A server
that refuses even the scopes it named, once they were asked for, gets no login loop (each step-up login asks for
strictly more scopes, so there are at most as many as the server has scopes to name).
"""

from __future__ import annotations

import structlog

from context_harness.primitives.oauth import Credential
from context_harness.primitives.result import ErrorCode, Failure
from context_harness.primitives.text import SERVER_TEXT_LIMIT, printable
from context_harness.services.server_state import ServerStates
from context_harness.stores.token_store import TokenStore

log = structlog.get_logger(__name__)

# What a scope challenge may add, at most: it comes from the server and goes into a login URL and our messages.
MAX_SCOPES = 32


def asked_scopes(credential: Credential) -> list[str]:
    """The scopes the last login asked for, and those the token endpoint said it granted."""
    granted = credential.tokens.scope.split() if credential.tokens and credential.tokens.scope else []
    return list(dict.fromkeys([*(credential.scopes or []), *granted]))


def login_scopes(credential: Credential | None, wanted: tuple[str, ...]) -> list[str] | None:
    """The scopes a new login asks for: the ones held and the ones wanted; None when none is wanted (then the
    login chooses as usual)."""
    if not wanted:
        return None
    held = asked_scopes(credential) if credential is not None else []
    return list(dict.fromkeys([*held, *wanted]))


def challenge_scopes(scope: str | None) -> list[str]:
    words = [printable(word, SERVER_TEXT_LIMIT, ascii_only=True) for word in (scope or "").split()[:MAX_SCOPES]]
    return [word for word in words if word]


async def scope_refused(states: ServerStates, tokens: TokenStore, name: str, scope: str | None) -> Failure:
    """`name` refused a call with 403 `insufficient_scope` naming `scope`: record what it wants, tell a person once,
    and say what to do in the bridged request's error."""
    wanted = challenge_scopes(scope)
    credential = tokens.load(name)
    if credential is None or credential.kind != "oauth":
        return Failure(
            f"{name} refused the call: its credential lacks the permission{_naming(wanted)} (insufficient_scope)",
            ErrorCode.AUTH_REQUIRED,
            f"ask the server's operator for that permission, or set another key: `chctl add {name} -k KEY`",
        )
    if not wanted:
        return Failure(
            f"{name} refused the call for lack of a scope it does not name (insufficient_scope)",
            ErrorCode.AUTH_REQUIRED,
            f"log in with the scope the server's documentation names: `chctl auth {name} --scope SCOPE`",
        )
    new = [s for s in wanted if s not in asked_scopes(credential)]
    if not new:  # every scope it names was asked for already: another login would ask for the same
        log.warning("scope_refused_again", server=name, wanted=wanted)
        return Failure(
            f"{name} refused the call for lack of scope{_naming(wanted)} (insufficient_scope), although the last "
            "login asked for it: logging in again would not help",
            ErrorCode.AUTH_REQUIRED,
            f"the server's operator must grant it; `chctl auth {name} --scope SCOPE` asks for other scopes",
        )
    state = states.get(name)
    union = login_scopes(credential, (*state.scopes_wanted, *new)) or []
    message = f"{name} refused the call for lack of scope {' '.join(new)} (insufficient_scope)"
    change = state.want_scopes(new, f"{message}. Run `chctl auth {name}` to grant it.")
    if change is not None:
        log.info("scope_wanted", server=name, wanted=list(state.scopes_wanted))
    await states.announce(change)
    return Failure(
        message,
        ErrorCode.AUTH_REQUIRED,
        f"run `chctl auth {name}`: it asks for {' '.join(union)}, then send the request again",
    )


def _naming(scopes: list[str]) -> str:
    return f" {' '.join(scopes)}" if scopes else ""
