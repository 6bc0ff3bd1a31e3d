"""`chctl import opencode|mcp-remote`: adopt the logins another tool holds, so nobody logs in again.

Each login becomes a stored credential whose client registration is bound to the issuer discovery finds
for the server; the config entry gets our header and `"oauth": false` (an mcp-remote entry becomes a remote
entry); an expired token is refreshed at once, and one that cannot be is `needs_reauth`. A login is skipped,
with the reason, when its name is not a server name, when it records no server URL (the config's is not trusted
with its tokens), or when its URL or token fails the gate every login passes. The source files are only read.
A dry run reads and matches, and changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import structlog

from context_harness.config.format import DEFAULT_CLIENT, ConfigFormat, get_format, substitutions
from context_harness.oauth.discovery import discover
from context_harness.primitives.mcp import SecretMode
from context_harness.primitives.names import SERVER_NAME_HINT, valid_server_name
from context_harness.primitives.oauth import ClientRegistration, Credential, TokenState
from context_harness.primitives.outside_values import credential_problem, url_problem
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.services import login_sources
from context_harness.services.blocking_io import run_config_io
from context_harness.services.client_vault import ClientVault
from context_harness.services.config_service import ConfigService, ConfigTarget
from context_harness.services.login_sources import HeldLogin
from context_harness.services.oauth_service import VALIDITY_MARGIN_S, OAuthService
from context_harness.services.publisher import Publisher
from context_harness.services.refresh_outcomes import RefreshImpossible, RefreshRetry, refresh_result
from context_harness.stores.bindings import Binding, BindingStore
from context_harness.stores.token_store import TokenStore

log = structlog.get_logger(__name__)

Source = Literal["opencode", "mcp-remote"]

# What an import reads is input (anyone who could write the file, or the file the user names with --from):
# login files are a few KiB; a file this large or this many files are not another tool's logins.
MAX_IMPORT_FILE_BYTES = 1024 * 1024
MAX_IMPORT_FILES = 1000


@dataclass(frozen=True, slots=True)
class Adoption:
    """What became (or, in a dry run, would become) of one login."""

    name: str
    server_url: str | None
    outcome: str  # adopted | refreshed | needs_reauth | retrying | would_adopt | skipped
    reason: str | None = None
    expires_at: float | None = None
    has_refresh_token: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "server_url": self.server_url,
            "outcome": self.outcome,
            "reason": self.reason,
            "expires_at": self.expires_at,
            "has_refresh_token": self.has_refresh_token,
        }


def read_source(source: Source, path: Path) -> Result[tuple[list[HeldLogin], list[login_sources.Unusable]]]:
    """The logins in `path`: opencode's mcp-auth.json, or mcp-remote's config dir (`~/.mcp-auth`)."""
    try:
        if source == "opencode":
            return Success(login_sources.opencode_logins(json.loads(_read_small(path))))
        store = path / login_sources.MCP_REMOTE_STORE
        files: dict[str, Any] = {}
        mtimes: dict[str, float] = {}
        for file in sorted(store.glob("*.json"))[:MAX_IMPORT_FILES]:
            files[file.name] = json.loads(_read_small(file))
            mtimes[file.name] = file.stat().st_mtime
        if not files and not store.is_dir():
            raise FileNotFoundError(store)
        return Success(login_sources.mcp_remote_logins(files, mtimes))
    except FileNotFoundError:
        return Failure(
            f"no {source} logins at {path}",
            ErrorCode.NOT_FOUND,
            f"log in with {source} first, or say where its files are: `chctl import {source} --from PATH`",
        )
    except (OSError, ValueError) as exc:
        return Failure(
            f"cannot read {path}: {exc if isinstance(exc, _TooLarge) else type(exc).__name__}",
            ErrorCode.CONFIG_INVALID,
            "nothing was imported; the file was not changed",
        )


def _read_small(file: Path) -> bytes:
    """The file's bytes; one larger than any login file is refused unread."""
    with file.open("rb") as stream:
        data = stream.read(MAX_IMPORT_FILE_BYTES + 1)
    if len(data) > MAX_IMPORT_FILE_BYTES:
        raise _TooLarge(f"{file.name} is over {MAX_IMPORT_FILE_BYTES // 1024} KiB, larger than any login file")
    return data


class _TooLarge(ValueError):
    """A file an import refuses to read whole: its message says which and why."""


@dataclass
class ImportService:
    config: ConfigService
    tokens: TokenStore
    bindings: BindingStore
    publisher: Publisher
    oauth: OAuthService
    clients: ClientVault
    session: Callable[[], aiohttp.ClientSession]
    fmt: ConfigFormat = field(default_factory=lambda: get_format(DEFAULT_CLIENT))  # logins go into opencode's config

    async def import_logins(
        self, source: Source, path: Path, target: ConfigTarget, *, dry_run: bool
    ) -> Result[dict[str, Any]]:
        # In a thread with a deadline: the path may be a FIFO or on a hung mount.
        timeout_s = self.oauth.settings.config_io_timeout_s
        read = await run_config_io(lambda: read_source(source, path), timeout_s, f"reading {path}")
        if isinstance(read, Failure):
            return read
        held, unusable = read.value
        resolved = self.config.resolve(target, fmt=self.fmt)
        if isinstance(resolved, Failure):
            return resolved
        config_path = resolved.value
        read_entries = self.config.entries(config_path, self.fmt)
        if isinstance(read_entries, Failure):
            return read_entries
        entries = read_entries.value
        results = [Adoption(u.where, None, "skipped", u.reason) for u in unusable]
        for login in held:
            placed = _place(login, entries)
            if not isinstance(placed, Adoption):
                placed = _refused(placed[0], placed[1], login) or placed
            if isinstance(placed, Adoption):
                results.append(placed)
            elif self._holds_usable_login(placed[0]):
                reason = f"chctl already holds a login for {placed[0]}; left as it is"
                results.append(_adoption(placed[0], placed[1], login, "skipped", reason))
            elif dry_run:
                results.append(_adoption(placed[0], placed[1], login, "would_adopt"))
            else:
                results.append(await self._adopt(placed[0], placed[1], login, config_path, entries))
        return Success({"path": str(config_path), "source": str(path), "servers": [r.as_dict() for r in results]})

    async def _adopt(
        self, name: str, url: str, login: HeldLogin, config_path: Path, entries: dict[str, Any]
    ) -> Adoption:
        found = await discover(self.session(), url, self.oauth.settings.http_timeout_s)
        if isinstance(found, Failure):
            return _adoption(name, url, login, "skipped", f"{found.error} (run the import again later)")
        auth_server = found.value.auth_server
        if login.issuer and login.issuer.rstrip("/") != auth_server.issuer.rstrip("/"):
            reason = f"the login is from {login.issuer}, but {url} now uses {auth_server.issuer}"
            return _adoption(name, url, login, "skipped", reason)
        method = login.token_endpoint_auth_method or ("client_secret_post" if login.client_secret else "none")
        if login.client_id:
            registration = ClientRegistration(
                issuer=auth_server.issuer,
                client_id=login.client_id,
                client_secret=login.client_secret,
                token_endpoint_auth_method=method,
                client_secret_expires_at=login.client_secret_expires_at,
            )
            kept = await self.clients.keep(name, registration)  # its secret where secrets go, like the tokens'
            if isinstance(kept, Failure):
                return _adoption(name, url, login, "skipped", kept.error)
        credential = Credential(
            name=name,
            kind="oauth",
            state=TokenState.ACTIVE,
            tokens=login.tokens,
            issuer=auth_server.issuer,
            token_endpoint=auth_server.token_endpoint,
            revocation_endpoint=auth_server.revocation_endpoint,
            client_id=login.client_id,
            client_secret=login.client_secret,
            token_endpoint_auth_method=method,
            resource=found.value.resource,
            scopes=login.tokens.scope.split() if login.tokens.scope else None,
            server_url=url,
        )
        stored = await self.oauth.vault.store(credential)  # stored before any config mentions it
        if isinstance(stored, Failure):
            return _adoption(name, url, login, "skipped", stored.error)
        change = self.oauth.states.get(name).stored()
        placed = self._write_entry(name, url, config_path, entries)
        if isinstance(placed, Failure):
            return _adoption(name, url, login, "skipped", placed.error)
        log.info("login_imported", server=name, issuer=auth_server.issuer)
        if not login.tokens.is_expired(VALIDITY_MARGIN_S):
            await self.oauth.states.announce(change)  # the publisher writes it into the configs
            return _adoption(name, url, login, "adopted")
        return await self._refresh_now(name, url, login)

    async def _refresh_now(self, name: str, url: str, login: HeldLogin) -> Adoption:
        """A login about to expire, refreshed at once; the refresh tells the change channel itself."""
        attempt = await self.oauth.refresh_once(name, force=True)
        refreshed = refresh_result(name, attempt, "asked")
        if isinstance(refreshed, Success):
            tokens = refreshed.value.tokens
            expires_at = tokens.expires_at if tokens else None
            return Adoption(name, url, "refreshed", None, expires_at, bool(tokens and tokens.refresh_token))
        if isinstance(attempt, RefreshImpossible):  # still valid for a moment: adopted, and the login is due
            await self.oauth.states.changed(name, credential=True)  # the publisher writes it into the configs
            return _adoption(name, url, login, "adopted", refreshed.error)
        outcome = "retrying" if isinstance(attempt, RefreshRetry) else "needs_reauth"
        return _adoption(name, url, login, outcome, f"{refreshed.error}; {refreshed.hint}")

    def _holds_usable_login(self, name: str) -> bool:
        """An API key, or an OAuth login that still works: an import must not replace it."""
        held = self.tokens.load(name)
        return held is not None and (held.kind == "api_key" or self.oauth.state_of(held) is not TokenState.NEEDS_REAUTH)

    def _write_entry(self, name: str, url: str, config_path: Path, entries: dict[str, Any]) -> Result[None]:
        """Bind a remote entry that has this URL; write one (replacing an mcp-remote entry) otherwise. The
        header is the publisher's to write."""
        entry = entries.get(name)
        if isinstance(entry, dict) and self.fmt.entry_url(entry) == url:
            self.bindings.bind(name, Binding(path=str(config_path), secret_mode=SecretMode.INLINE, url=url))
            return Success(None)
        config_path = config_path.resolve()  # bindings hold resolved paths
        binding = Binding(path=str(config_path), client=self.fmt.name, secret_mode=SecretMode.INLINE, url=url)
        # Binding first, as `chctl add` does: a crash before the entry leaves a binding the next write drops.
        self.bindings.bind(name, binding)
        put = self.config.put_entry(config_path, name, self.fmt.remote_entry(url, {}, managed=True), self.fmt)
        if isinstance(put, Failure):
            self.bindings.unbind(name, config_path)
            return put
        self.publisher.clear(name, str(config_path))
        log.info("server_added", server=name, path=str(config_path), client=self.fmt.name, mode="header")
        return Success(None)


def _refused(name: str, url: str, login: HeldLogin) -> Adoption | None:
    """Why a placed login is not adopted: the same gate as a login's (an imported file is input)."""
    if not valid_server_name(name):
        return _adoption(name, None, login, "skipped", f"not a server name: {SERVER_NAME_HINT}")
    markers = substitutions()
    bad_url = url_problem(url, markers, carries_secret=True)
    if bad_url is not None:
        return _adoption(name, None, login, "skipped", f"its server URL {bad_url}")
    bad_token = credential_problem(login.tokens.access_token, markers)
    if bad_token is not None:
        return _adoption(name, url, login, "skipped", f"its access token {bad_token}")
    return None


def _adoption(name: str, url: str | None, login: HeldLogin, outcome: str, reason: str | None = None) -> Adoption:
    return Adoption(name, url, outcome, reason, login.tokens.expires_at, login.tokens.refresh_token is not None)


def _place(login: HeldLogin, entries: dict[str, Any]) -> tuple[str, str] | Adoption:
    """(name, server URL) for a login, from its source and the config's entries; or why it cannot be placed."""
    if login.name is not None:  # opencode: the name is the config's, the URL is recorded with it
        url = login.server_url
        if url is None:
            # The config's URL is no substitute: a pulled config could send the refresh token anywhere.
            reason = f"opencode recorded no serverUrl with this login; log in with `chctl auth {login.name}`"
            return _adoption(login.name, None, login, "skipped", reason)
        entry_urls = login_sources.entry_urls(entries.get(login.name))
        if entry_urls and entry_urls[0] != url:
            reason = f"the config's {login.name} points at {entry_urls[0]}, the login is for {url}"
            return _adoption(login.name, url, login, "skipped", reason)
        return login.name, url
    for name, entry in entries.items():  # mcp-remote: find the entry whose URL hashes to the file's name
        for url in login_sources.entry_urls(entry):
            if login_sources.mcp_remote_hash(url) == login.url_hash:
                return str(name), url
    reason = "no entry in the config has the URL this login is for (mcp-remote stores only a hash of it)"
    return _adoption(f"{login.url_hash}{login_sources.TOKENS_SUFFIX}", None, login, "skipped", reason)
