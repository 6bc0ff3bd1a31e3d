"""Whether a 401 is sent again: this module's rules, and only this module's.

The transports know no authentication rule (the shape of httpx's auth flow): each request they send gets an
`AuthFlow` from the session's `AuthPolicy`, and the one signed send (`session_base.send_signed`) asks it to
`sign` the headers before every send and hands it every answer's status; the flow says whether to send again.
The rules, all here:

- every send carries the credential current at that moment (read from the daemon at each `sign`);
- a refusal (401) renews the credential once, through `Credentials.renew` with the value refused (the daemon
  refreshes at most once at a time and no sooner than its minimum spacing), and the request is sent again;
- a second refusal is final: the client is told to log in (`RelayFailure`), or, for a stream nobody waits
  for, the stream just stops;
- a 403 whose Bearer challenge says `insufficient_scope` (step-up authorization) is final at once: no renewal
  brings a scope the login did not ask for; `Credentials.scope_refused` records what the server wants and
  says what a person must do;
- every other verdict goes back to the daemon (`Credentials.answered`): a success, another 403, or a final 401,
  so that `chctl status` shows a credential the server refuses until a request succeeds.
"""

from __future__ import annotations

from http import HTTPStatus

from context_harness.oauth.challenge import parse_www_authenticate
from context_harness.primitives.result import ErrorCode, Failure
from context_harness.upstream.contract import Counters, Credentials, RelayFailure

REFUSED = HTTPStatus.UNAUTHORIZED
FORBIDDEN = HTTPStatus.FORBIDDEN


class AuthPolicy:
    """One server's credential and its renew-once rule, shared by every request of one upstream session."""

    def __init__(self, name: str, credentials: Credentials, counters: Counters) -> None:
        self.name = name
        self.credentials = credentials
        self.counters = counters

    def flow(self, *, counted: bool = True) -> AuthFlow:
        """The authentication of one request (or one connection of the server's own stream: `counted=False`,
        since `chctl status` counts the renewals the client's requests needed)."""
        return AuthFlow(self, counted=counted)

    def refused(self) -> Failure:
        return Failure(
            f"{self.name} refused the credential even after a refresh",
            ErrorCode.AUTH_REQUIRED,
            f"run `chctl auth {self.name}`",
        )


class AuthFlow:
    """One request's way past the server's authentication, driven by the transport that sends it."""

    def __init__(self, policy: AuthPolicy, *, counted: bool) -> None:
        self.policy = policy
        self.counted = counted
        self._used: str | None = None  # the credential value the last send carried
        self._renewed = False

    def sign(self, headers: dict[str, str]) -> dict[str, str]:
        """`headers` with the credential current now (none when the daemon holds none)."""
        current = self.policy.credentials.header()
        self._used = current[1] if current is not None else None
        return headers if current is None else {**headers, current[0]: current[1]}

    async def retry(self, status: int, challenge: str | None = None) -> bool:
        """Whether an answer with `status` (and WWW-Authenticate `challenge`) is to be sent again, the credential
        renewed. A refusal after a renewal, a renewal that failed, or a lack of scope is final: RelayFailure
        saying what a person must do."""
        credentials = self.policy.credentials
        if status == FORBIDDEN:
            bearer = parse_www_authenticate(challenge)
            if bearer is not None and bearer.error == "insufficient_scope":
                raise RelayFailure(await credentials.scope_refused(bearer.scope))
            await credentials.answered(status, self._used)
            return False
        if status != REFUSED:
            if HTTPStatus.OK <= status < HTTPStatus.MULTIPLE_CHOICES:
                await credentials.answered(status, self._used)
            return False
        if self._renewed:
            await credentials.answered(status, self._used)
            raise RelayFailure(self.policy.refused())
        self._renewed = True
        if self.counted:
            self.policy.counters.renewals += 1
        renewed = await credentials.renew(self._used)
        if isinstance(renewed, Failure):
            await credentials.answered(status, self._used)
            raise RelayFailure(renewed)
        return True
