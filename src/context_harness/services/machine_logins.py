"""The logins with no person at the browser, for one server: OAuth client credentials (SEP-1046) and
enterprise-managed authorization through an identity provider (SEP-990). There is no refresh token in either: a
token is renewed by asking again, which `OAuthService` does on the same plan and under the same lock as a refresh.

`discover` finds the authorization server as a login does (protected-resource metadata, then its metadata; no
authorization endpoint or PKCE needed); `renew` makes the grant: client credentials, or the token exchange at the
IdP for an ID-JAG followed by the JWT-bearer grant with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeAlias

import aiohttp
import structlog

from context_harness.config.format import substitutions
from context_harness.oauth.discovery import OFFLINE_ACCESS, discover
from context_harness.oauth.flow_client import explicit_auth_method
from context_harness.oauth.machine_grants import (
    PRIVATE_KEY_JWT,
    MachineClient,
    classify_token_answer,
    client_credentials_form,
    jwt_bearer_form,
    request_token,
)
from context_harness.oauth.token_client import PermanentError, Refreshed, TransientError
from context_harness.oauth.token_exchange import IdJag, exchange_for_id_jag, exchange_form
from context_harness.primitives.oauth import Credential, LoginKind
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.services.idp_service import IdpService, IdToken, SignInNeeded, login_fix, not_added
from context_harness.services.refresh_outcomes import env_prefix

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Refused:
    """Only a person can mend it: `fix` is the command; `told`: they were told already (through the IdP)."""

    code: ErrorCode
    reason: str
    fix: str
    told: bool = False


Renewal: TypeAlias = Refreshed | TransientError | Refused


def secret_fix(credential: Credential) -> str:
    """What mends a refused client: a new key, or a new secret (typed at a hidden prompt, or from the env)."""
    if credential.private_key is not None:
        return f"chctl auth {credential.name} --private-key FILE"
    return f"chctl auth {credential.name} --client-secret -"


def machine_client(credential: Credential) -> MachineClient:
    assert credential.client_id is not None and credential.token_endpoint is not None
    return MachineClient(
        client_id=credential.client_id,
        client_secret=credential.client_secret,
        auth_method=credential.token_endpoint_auth_method,
        private_key=credential.private_key,
        signing_alg=credential.signing_alg,
        issuer=credential.issuer or "",
        token_endpoint=credential.token_endpoint,
        audience=credential.assertion_audience,
    )


class MachineLogins:
    def __init__(
        self, session: Callable[[], aiohttp.ClientSession], idps: IdpService, http_timeout_s: Callable[[], float]
    ) -> None:
        self._session = session
        self.idps = idps
        self._timeout = http_timeout_s

    async def discover(self, credential: Credential) -> Result[Credential]:
        """`credential` with its authorization server (issuer, token endpoint), resource and the way its client
        authenticates, found as a login finds them."""
        assert credential.server_url is not None
        found = await discover(self._session(), credential.server_url, self._timeout(), browser=False)
        if isinstance(found, Failure):
            return found
        auth_server = found.value.auth_server
        method = credential.token_endpoint_auth_method
        if credential.private_key is not None:
            method = PRIVATE_KEY_JWT
        elif method not in ("client_secret_basic", "client_secret_post"):
            method = explicit_auth_method(credential.client_secret, auth_server)
        if credential.login is LoginKind.IDP and self.idps.store.metadata(credential.idp or "") is None:
            return not_added(credential.idp or "")
        # The scopes a login would ask for (the 401's, else the resource's), without offline_access: nothing to renew.
        scopes = credential.scopes or [s for s in found.value.scopes() if s != OFFLINE_ACCESS] or None
        log.info("machine_login_discovered", server=credential.name, issuer=auth_server.issuer, auth_method=method)
        return Success(
            credential.model_copy(
                update={
                    "issuer": auth_server.issuer,
                    "token_endpoint": auth_server.token_endpoint,
                    "revocation_endpoint": auth_server.revocation_endpoint,
                    "resource": found.value.resource,
                    "token_endpoint_auth_method": method,
                    "scopes": scopes,
                }
            )
        )

    async def renew(self, credential: Credential) -> tuple[Renewal, Credential]:
        """A new token for `credential`, and the credential as its client turned out to authenticate."""
        if credential.login is LoginKind.IDP:
            assertion = await self._id_jag(credential)
            if not isinstance(assertion, IdJag):
                return assertion, credential
            form = jwt_bearer_form(assertion.assertion, credential.resource, credential.scopes)
        else:
            form = client_credentials_form(credential.resource, credential.scopes)
        classify = partial(classify_token_answer, markers=substitutions())
        granted = await request_token(self._session(), machine_client(credential), form, self._timeout(), classify)
        used = credential.model_copy(
            update={
                "token_endpoint_auth_method": granted.client.auth_method,
                "assertion_audience": granted.client.audience,
            }
        )
        outcome = granted.outcome
        if isinstance(outcome, PermanentError):
            return self._refused(used, outcome), used
        return outcome, used

    def _refused(self, credential: Credential, error: PermanentError) -> Refused:
        name = credential.name
        if error.code is ErrorCode.INVALID_CLIENT:
            where = "authorization server" if credential.login is LoginKind.IDP else "token endpoint"
            reason = f"the {where} refused the client {credential.client_id!r}: {error.reason}"
            if credential.private_key is None:
                reason += f" (is {env_prefix(name)}_CLIENT_SECRET current?)"
            return Refused(error.code, reason, secret_fix(credential))
        return Refused(error.code, error.reason, f"chctl auth {name}")

    async def _id_jag(self, credential: Credential) -> IdJag | TransientError | Refused:
        """The IdP's grant for this server, from the user's ID token (SEP-990 §4)."""
        idp_name, name = credential.idp or "", credential.name
        token = await self.idps.id_token(idp_name)
        if isinstance(token, SignInNeeded):
            return Refused(ErrorCode.AUTH_REQUIRED, f"{idp_name}: {token.reason}", token.fix, token.told)
        if isinstance(token, TransientError):
            return TransientError(f"the identity provider {idp_name}: {token.reason}", token.retry_after)
        assert isinstance(token, IdToken)
        idp = self.idps.store.load(idp_name)
        if idp is None or idp.token_endpoint is None:
            return Refused(ErrorCode.NOT_FOUND, f"no identity provider named {idp_name}", f"chctl idp add {idp_name}")
        client = MachineClient(
            client_id=idp.client_id,
            client_secret=idp.client_secret,
            auth_method=idp.token_endpoint_auth_method,
            issuer=idp.issuer,
            token_endpoint=idp.token_endpoint,
        )
        assert credential.issuer is not None and credential.resource is not None
        form = exchange_form(token.token, credential.issuer, credential.resource, credential.scopes)
        outcome = await exchange_for_id_jag(self._session(), client, form, self._timeout())
        if isinstance(outcome, PermanentError):
            reason = f"the identity provider {idp_name} refused to vouch for {name}: {outcome.reason}"
            log.warning("id_jag_refused", server=name, idp=idp_name, code=outcome.code.value)
            return Refused(outcome.code, reason, login_fix(idp_name))
        if isinstance(outcome, TransientError):
            return TransientError(f"the identity provider {idp_name}: {outcome.reason}", outcome.retry_after)
        return outcome
