"""What `chctl auth` and `chctl refresh` say when they cannot help: which server, and the command that can.

Pure functions over what the daemon already knows (the stored credential, the registry entry, the URL
in the config), so `chctl auth` of a server that needs no login answers without any network discovery.
"""

from __future__ import annotations

from dataclasses import replace

from context_harness.primitives.mcp import MCPAuthType, MCPServer, ServerType
from context_harness.primitives.oauth import Credential
from context_harness.primitives.result import ErrorCode, Failure


def no_login_needed(
    name: str, credential: Credential | None, known: MCPServer | None, config_url: str | None
) -> Failure | None:
    """A Failure saying why `chctl auth name` has nothing to do, or None when a login may be needed.

    `config_url` is the URL the config holds for `name`: a registry server re-added with another --url is
    a different server, which may well need a login.
    """
    if credential is not None and credential.kind == "api_key":
        return Failure(
            f"{name} uses an API key: there is no login",
            ErrorCode.INVALID_PARAMS,
            f"to change the key: `chctl add {name} --api-key-env VAR` (or -k KEY); its key header, mode and "
            "configs stay as they are",
        )
    if credential is not None or known is None or (config_url is not None and config_url != known.url):
        return None
    if known.server_type is ServerType.LOCAL:
        return Failure(
            f"{name} is a local (stdio) server: there is no login",
            ErrorCode.INVALID_PARAMS,
            f"`chctl add {name}` is all it takes",
        )
    if known.auth_type is MCPAuthType.API_KEY:
        docs = f" (get one at {known.docs_url})" if known.docs_url else ""
        return Failure(
            f"{name} takes an API key, not a login",
            ErrorCode.INVALID_PARAMS,
            f"`chctl add {name} --api-key-env VAR`, with the key in VAR{docs}",
        )
    if known.auth_type is MCPAuthType.NONE:
        return Failure(
            f"{name} needs no login",
            ErrorCode.INVALID_PARAMS,
            f"`chctl add {name}` is all it takes",
        )
    return None


def login_failure_hint(name: str, failure: Failure) -> Failure:
    """A failed login with a hint that names the server and the flags that help.

    Network failures and timeouts always get this one (theirs cannot name the server); others keep theirs.
    """
    if failure.hint and failure.code not in (ErrorCode.NETWORK, ErrorCode.TIMEOUT):
        # The OAuth layer does not know the server's name: "run `chctl auth` again" gets it here.
        return replace(failure, hint=failure.hint.replace("`chctl auth`", f"`chctl auth {name}`"))
    hints = {
        ErrorCode.NETWORK: f"check that {name}'s server and its login server are reachable (proxy, VPN), "
        f"then `chctl auth {name}` again",
        ErrorCode.TIMEOUT: f"`chctl auth {name} --timeout 600` waits longer; "
        f"`chctl auth {name} --no-browser` lets you paste the redirect URL",
        ErrorCode.INVALID_PARAMS: f"see `chctl auth --help`, then `chctl auth {name}` again",
    }
    return replace(failure, hint=hints.get(failure.code, f"`chctl logs` has the details; then `chctl auth {name}`"))


def refresh_without_login(name: str) -> Failure:
    """`chctl refresh name` of a server that is known but has never logged in."""
    return Failure(
        f"{name} has not logged in yet: there is no token to refresh",
        ErrorCode.NOT_FOUND,
        f"run `chctl auth {name}` to log in first",
    )
