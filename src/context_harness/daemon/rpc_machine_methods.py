"""The RPC handlers of the logins without a person: a server's set up at `mcp.add` (client credentials, or an
identity provider's), its token fetched at once, and `chctl auth NAME` for it; and the identity providers:
`idp.add`, `idp.login`, `idp.list`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from context_harness.daemon.rpc_params import AddParams, AuthStartParams, IdpAddParams, IdpLoginParams, NoParams
from context_harness.daemon.services import Services
from context_harness.primitives.oauth import Credential, LoginKind
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.services.idp_service import idp_row
from context_harness.services.oauth_service import MachineSetup, machine_setup_problem


def machine_setup(p: AddParams) -> Result[MachineSetup | None]:
    """The login without a person that `chctl add` asks for, checked before anything is written; None: none."""
    if not p.client_credentials and p.idp is None:
        return Success(None)
    if p.client_credentials and p.idp is not None:
        return Failure("--client-credentials and --idp are two kinds of login", ErrorCode.INVALID_PARAMS, "pick one")
    if p.api_key is not None or p.command is not None:
        return Failure(
            "a login without a browser is for a remote OAuth server",
            ErrorCode.INVALID_PARAMS,
            f"run `chctl add {p.name} --url URL --client-id ID` with --client-credentials or --idp, without -k and "
            "--command",
        )
    if not p.client_id:
        return Failure(
            f"{p.name}'s client id at its authorization server is needed",
            ErrorCode.INVALID_PARAMS,
            f"run `chctl add {p.name} --url URL --client-id ID` again, with the client registered for you there",
        )
    login = LoginKind.IDP if p.idp is not None else LoginKind.CLIENT_CREDENTIALS
    setup = MachineSetup(login, p.client_id, p.client_secret, p.private_key, p.signing_alg, p.idp, p.scopes)
    problem = machine_setup_problem(setup, p.name, adding=True)
    return problem if problem is not None else Success(setup)


async def set_up_after_add(s: Services, name: str, setup: MachineSetup) -> dict[str, Any]:
    """After the entries are written: store the login and fetch its first token. What `chctl add` adds to its
    answer: the server's status, or why there is no token yet (the entry stays: `chctl auth NAME` tries again)."""
    url = await s.oauth.server_url_off_loop(name)
    stored = url if isinstance(url, Failure) else await s.oauth.set_up_machine(name, url.value, setup)
    got = stored if isinstance(stored, Failure) else await asyncio.shield(s.oauth.obtain(name))
    if isinstance(got, Failure):
        return {"login_error": {"error": got.error, "code": got.code.value, "hint": got.hint}}
    return {"login": s.status.server(name, expects_login=True).as_dict()}


async def obtain_now(s: Services, p: AuthStartParams, credential: Credential) -> Result[dict[str, Any]]:
    """`chctl auth NAME` of a login without a person: a token now, with the secret or key given, if any."""
    if p.port or p.token_auth_method:
        return Failure(
            f"{p.name} logs in without a browser: --port and --token-auth-method do not apply",
            ErrorCode.INVALID_PARAMS,
            f"run `chctl auth {p.name}` without them",
        )
    if p.private_key is None and p.client_secret is None and credential.login is LoginKind.IDP and credential.idp:
        if s.idps.waiting_for_sign_in(credential.idp):
            idp = credential.idp
            return Failure(
                f"{p.name}'s token comes from the identity provider {idp}, which has no sign-in",
                ErrorCode.AUTH_REQUIRED,
                f"run `chctl idp login {idp}`: every server that waits for it gets its token then",
            )
    setup = MachineSetup(None, p.client_id, p.client_secret, p.private_key, p.signing_alg, None, p.scopes)
    got = await asyncio.shield(s.oauth.obtain(p.name, setup))
    if isinstance(got, Failure):
        return got
    done = s.status.server(p.name, expects_login=True).as_dict()
    return Success({"flow_id": None, "authorization_url": None, "result": done})


async def idp_add(s: Services, p: IdpAddParams) -> Result[dict[str, Any]]:
    added = await s.idps.add(p.name, p.issuer, p.client_id, p.client_secret, p.scopes)
    return added if isinstance(added, Failure) else Success(idp_row(s.idps, p.name))


async def idp_login(s: Services, p: IdpLoginParams) -> Result[dict[str, Any]]:
    """With an ID token: signed in at once (the waiting servers get their tokens before this answers); else a
    sign-in in the browser, whose URL is returned and which `auth.wait` waits for."""
    usable = await s.idps.usable(p.name)  # added, and its client secret readable (the keychain asked again)
    if isinstance(usable, Failure):
        return usable
    if p.id_token is not None:
        done = await asyncio.shield(s.idps.sign_in_with_id_token(p.name, p.id_token.strip()))
        if isinstance(done, Failure):
            return done
        return Success({"flow_id": None, "authorization_url": None, "result": idp_row(s.idps, p.name)})

    def sign_in(show: Callable[[str], None], paste: asyncio.Queue[str]) -> Any:
        return s.idps.sign_in(p.name, show, paste, p.port, p.timeout_s)

    started = await s.flows.start_sign_in(p.name, sign_in, s.idps.states)
    return started if isinstance(started, Failure) else Success(dict(started.value))


async def idp_list(s: Services, _: NoParams) -> Result[dict[str, Any]]:
    return Success({"idps": [idp_row(s.idps, name) for name in s.idps.store.names()]})
