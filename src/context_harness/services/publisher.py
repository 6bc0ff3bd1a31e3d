"""Publisher: the one place that writes a server's current credential into the configs bound to it.

Everything it writes comes from disk (the token store and the bindings), never from memory, so running it
again after a crash or a failed write mends what was left behind: the daemon does at start and at every
wall-clock check. After a new credential is stored it publishes from the change channel (`on_change`).
Each config is written in a thread with a deadline, so one on a hung mount fails alone and is retried;
what failed, and why, is remembered for `chctl status` and returned to the caller. Writes to one file queue
behind each other (the start-up repair's and a `chctl add` right after it, say); only a write still stuck past
its deadline turns the next ones away.

A header goes only into an entry that points at the URL recorded with the credential (`recorded_urls`): an
entry whose URL was changed since loses our header in the same edit, keeps its binding, and is reported
(`config_errors`, status, doctor, the notify command once per change, also across restarts) until
`chctl add NAME` points it back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import structlog

from context_harness.config.format import ConfigFormat, get_format, substitutions
from context_harness.primitives.mcp import SecretMode
from context_harness.primitives.oauth import Credential
from context_harness.primitives.outside_values import credential_problem, describe_url, header_name_problem
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.services import recorded_urls
from context_harness.services.blocking_io import StillRunning, run_blocking
from context_harness.services.config_service import ConfigService, UrlChanged, target_flags
from context_harness.services.server_state import Change, ServerStates
from context_harness.stores.bindings import Binding, BindingStore
from context_harness.stores.token_store import TokenStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PublishSettings:
    """What the Publisher uses of the daemon's settings (`Settings.publishing()`, which holds the default)."""

    # A config that takes longer to write is on a hung mount (or is a FIFO): that write fails for now.
    io_timeout_s: float


@dataclass(frozen=True, slots=True)
class UrlChangedNotice:
    """No header was written: the entry points away from the recorded URL (and lost the header it had)."""

    message: str  # what is wrong and how to mend it, for `config_errors`, status, doctor and the notify command
    news: bool  # the entry's URL changed since the person was last told (then the notify command runs)


@dataclass(slots=True)
class PublishReport:
    """What one publish (or forget) did to each bound config."""

    written: list[str] = field(default_factory=list)  # carries the current header now (or already did)
    dropped: list[str] = field(default_factory=list)  # no entry left for the server: its binding went too
    failed: dict[str, str] = field(default_factory=dict)  # not written, and why; retried at the next check

    def as_dict(self) -> dict[str, Any]:
        return {"written": self.written, "dropped": self.dropped, "failed": self.failed}


def unwritable_problem(credential: Credential) -> str | None:
    """The gate every login, key and import passed, run again right before a write: why `credential`'s
    header must not go into a config; None when it may."""
    what = "API key" if credential.kind == "api_key" else "access token"
    bad_secret = credential_problem(credential.secret or "", substitutions())
    if bad_secret is not None:
        return f"the stored {what} {bad_secret}; not written (run `chctl auth {credential.name}` or add the key again)"
    bad_name = header_name_problem(credential.header_name)
    if bad_name is not None:
        return f"the stored header name {bad_name}; not written (add the server again)"
    return None


class Publisher:
    def __init__(
        self,
        config: ConfigService,
        tokens: TokenStore,
        bindings: BindingStore,
        settings: PublishSettings,
        states: ServerStates,
        registry_url: Callable[[str], str | None] = lambda _name: None,
    ) -> None:
        self.config = config
        self.tokens = tokens
        self.bindings = bindings
        self.settings = settings
        # Each server's `config_errors` (the bound configs whose last write failed, and why) and `url_changed`
        # (of those, the entries pointing away from the recorded URL) are kept in its state.
        self.states = states
        # One write per config file at a time: the next waits for the one in flight (at most its deadline).
        self._writing: dict[str, asyncio.Lock] = {}
        self.registry_url = registry_url  # a server's URL in the registry: it wins when an older file is migrated

    def configure(self, settings: PublishSettings) -> None:
        self.settings = settings

    def header_value(self, credential: Credential, binding: Binding) -> str:
        """The header's value as `binding`'s config holds it: the secret, or the client's reference to the
        secret file when the binding keeps the secret in a file."""
        reference = None
        if binding.secret_mode is SecretMode.FILE:
            reference = get_format(binding.client).secret_file_reference(self.tokens.secret_file(credential.name))
        return credential.header_value(reference)

    async def publish(self, name: str) -> PublishReport:
        """Write `name`'s stored credential into every config bound to it in header mode."""
        credential = self.tokens.load(name)
        report = PublishReport()
        if credential is None or not credential.secret:
            return report
        credential = await self._migrate(credential, report)
        unwritable = unwritable_problem(credential)
        if unwritable is not None:  # stored before the gate existed, or planted: never written, say so
            for binding in self.bindings.for_server(name):
                if binding.mode == "header":
                    await self._report_and_announce(
                        report, name, binding.path, Failure(unwritable, ErrorCode.INVALID_PARAMS)
                    )
            self.states.get(name).configs_written(report.failed)
            return report
        for binding in self._header_bindings(credential):
            if binding.path in report.failed:
                continue  # it did not answer even a read
            outcome = await self._off_loop(binding.path, partial(self._write, credential, binding))
            await self._report_and_announce(report, name, binding.path, outcome)
        self.states.get(name).configs_written(report.failed)
        return report

    async def forget(self, name: str, header: str) -> PublishReport:
        """Logout: take our header out of every config bound to `name` (the credential is gone already).
        A `{file:}` reference stays, with its file present: opencode stops working when the file is missing."""
        report = PublishReport()
        for binding in self.bindings.for_server(name):
            if binding.mode != "header":
                continue  # no header in the entry (a bridge, a headers helper)
            if binding.secret_mode is SecretMode.FILE:
                self.tokens.ensure_secret_file(name)
                continue
            remove = partial(self.config.remove_header, Path(binding.path), name, header, get_format(binding.client))
            outcome = await self._off_loop(binding.path, remove)
            if isinstance(outcome, Failure):
                report.failed[binding.path] = outcome.error
                log.warning("header_not_removed", server=name, path=binding.path, reason=outcome.error)
            else:
                report.written.append(binding.path)
        self.states.get(name).config_cleared()
        return report

    async def on_change(self, change: Change) -> None:
        """The change channel's first listener: a new credential was stored, its header goes into the configs
        now (before the refresher re-plans and before anyone is told)."""
        if change.credential:
            await self.publish(change.name)

    def clear(self, name: str, path: str) -> None:
        """`chctl add` or `chctl remove` dealt with this config: what went wrong there is history."""
        self.states.get(name).config_cleared(path)

    # --- helpers -------------------------------------------------------------------------------------

    def _header_bindings(self, credential: Credential) -> list[Binding]:
        """The bindings that carry a header (a bridge or a headers helper carries none); the `{file:}` secret
        file is brought up to date first, so every reference to it reads the current secret."""
        bindings = [b for b in self.bindings.for_server(credential.name) if b.mode == "header"]
        secret = credential.secret or ""
        if (
            any(b.secret_mode is SecretMode.FILE for b in bindings)
            and self.tokens.read_secret_file(credential.name) != secret
        ):
            self.tokens.write_secret_file(credential.name, secret)
        return bindings

    async def _migrate(self, credential: Credential, report: PublishReport) -> Credential:
        """Record the URLs a credential or binding from an older version lacks (`recorded_urls`), once. Each
        config is read in its own thread with a deadline; one that does not answer goes into `report`. The
        caller holds the server's refresh lock, so rewriting the token file races no refresh."""
        name = credential.name
        bindings = self.bindings.for_server(name)
        if not recorded_urls.needs_migration(credential, bindings):
            return credential
        current: dict[str, str] = {}
        for binding in bindings:
            if binding.url:
                continue
            url = await self._off_loop(binding.path, partial(_url_in, self.config, name, binding))
            if isinstance(url, Failure):
                await self._report_and_announce(report, name, binding.path, url)
            elif url.value:
                current[binding.path] = url.value
        migration = recorded_urls.plan(credential, bindings, current, self.registry_url(name))
        if not migration.empty:
            recorded_urls.apply(name, migration, self.tokens, self.bindings)
            log.info("server_url_migrated", server=name, credential=migration.credential_url is not None)
        return self.tokens.load(name) or credential

    def _write(self, credential: Credential, binding: Binding) -> Result[bool | UrlChangedNotice]:
        """True when written (or already right), False when the binding was dropped because the config no
        longer has the entry, UrlChangedNotice when the entry points away from the recorded URL."""
        name = credential.name
        fmt = get_format(binding.client)
        written = self.config.set_header(
            Path(binding.path),
            name,
            credential.header_name,
            self.header_value(credential, binding),
            fmt,
            url=credential.server_url,
            private=binding.secret_mode is SecretMode.INLINE,
        )
        if isinstance(written, Failure) and written.code is ErrorCode.NOT_FOUND:
            # The entry is gone (removed by hand, or `chctl add` crashed before writing it): so is the binding.
            self.bindings.unbind(name, Path(binding.path))
            log.info("binding_dropped", server=name, path=binding.path, reason="the config has no entry for it")
            return Success(False)
        if isinstance(written, Success) and isinstance(written.value, UrlChanged):
            if not credential.server_url:  # (config_errors keep the message alone: it holds the fix too)
                unrecorded = recorded_urls.unrecorded(name)
                return Failure(f"{binding.path}: {unrecorded.error}; {unrecorded.hint}", ErrorCode.CONFIG_INVALID)
            found = written.value.found or ""
            news = binding.withheld_for != found
            if news:
                self.bindings.note_url_changed(name, binding.path, found)
            message = _url_changed_message(name, binding, fmt, written.value, credential.server_url)
            return Success(UrlChangedNotice(message, news))
        if isinstance(written, Success) and binding.withheld_for is not None:
            self.bindings.note_url_changed(name, binding.path, None)  # pointed back by hand
        return written if isinstance(written, Failure) else Success(True)

    async def _off_loop(self, path: str, work: Callable[[], Result[Any]]) -> Result[Any]:
        """`work()` in a thread with a deadline, after the write to `path` in flight if there is one; a config
        whose earlier write is stuck past its deadline is not tried (its thread has not come back)."""
        timeout_s = self.settings.io_timeout_s
        async with self._writing.setdefault(path, asyncio.Lock()):
            try:
                return await run_blocking(work, timeout_s, name="config-write", key=f"config-write {path}")
            except StillRunning:  # this write, or an earlier one still stuck in its thread
                return Failure(
                    f"{path} did not answer within {timeout_s:g} s (a hung mount?); retried later", ErrorCode.TIMEOUT
                )

    async def _report_and_announce(
        self, report: PublishReport, name: str, path: str, outcome: Result[bool | UrlChangedNotice]
    ) -> None:
        """`outcome` of one config into `report`; an entry whose URL changed is told on the change channel (once
        per change)."""
        if isinstance(outcome, Success) and isinstance(outcome.value, UrlChangedNotice):
            report.failed[path] = outcome.value.message
            # Told once per change (kept in the binding), not at every refresh or restart.
            change = self.states.get(name).entry_url_changed(path, outcome.value.message, news=outcome.value.news)
            if change is not None:
                log.warning("header_withheld_url_changed", server=name, path=path)
            await self.states.announce(change)
            return
        if isinstance(outcome, Success):
            (report.written if outcome.value else report.dropped).append(path)
            return
        report.failed[path] = outcome.error
        # Retried every wall-clock check: say it once, not every 30 s.
        again = self.states.get(name).config_errors.get(path) == outcome.error
        (log.debug if again else log.warning)(
            "config_write_failed", server=name, path=path, code=outcome.code.value, error=outcome.error
        )


def _url_in(config: ConfigService, name: str, binding: Binding) -> Result[str | None]:
    return Success(recorded_urls.entry_url(config, name, binding))


def _url_changed_message(name: str, binding: Binding, fmt: ConfigFormat, found: UrlChanged, url: str) -> str:
    """What `chctl status` and doctor say about an entry that points away from the recorded URL, with the fix."""
    now = f"now points at {describe_url(found.found)}" if found.found else "no longer has a URL"
    target = target_flags(Path(binding.path), fmt)
    return (
        f"{binding.path}: its {name} entry {now}, not at {describe_url(url)} where {name}'s credential belongs; "
        f"the header was taken out of it. Run `chctl add {name}{target}` to point it back, or "
        f"`chctl remove {name}{target}`"
    )
