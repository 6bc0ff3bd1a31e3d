"""SecretVault: where each credential's secret values go (`CH_SECRET_STORE=auto|keyring|file`), and every
keychain call made off the event loop with a deadline.

- `auto` (the default) stores new values in the keychain when one answered (`stores/keychain.py`), in the
  token files otherwise, and says so (`summary()`: `chctl status` and `chctl doctor` repeat the warning).
- `keyring` refuses to store a new secret (a login, an API key) when no keychain answers: nothing is written in
  plain text.
- A value that must not be lost — a rotated refresh token the authorization server now considers current —
  is never refused: when the keychain fails as it is stored, it goes into the 0600 token file, marked
  pending, with an error in the log and in status; `heal` moves it back once the keychain answers.
- `file` keeps the values in the token files, as before.

A token file that names a keychain item is read at start (`start`), whatever the setting, and its values are
held in memory (`TokenStore.hold`); a keychain that does not answer then leaves that credential unreadable, and
`heal` (every wall-clock check) tries again. Each call runs through `blocking_io.run_blocking` under one key: a
hung Secret Service costs one thread, and later calls fail at once until it returns.

The write order makes a crash at any instant recoverable: the keychain item first, then the token file naming
it by its stamp. A crash between the two leaves an item whose stamp differs from the file's, and the keychain's
(newer) values are taken at the next start. Moves between stores (`migrate`) write the new copy, read it back,
switch the token file, and only then remove the old copy.

Callers that change a credential's values hold its server's lock (OAuthService) around these calls; the vault's
own per-server lock keeps its two writes together against everyone else.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import structlog
from pydantic import ValidationError

from context_harness.primitives.oauth import Credential, TokenState
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.services.blocking_io import StillRunning, run_blocking
from context_harness.stores.crash_points import (
    AFTER_SECRET_COPY,
    AFTER_SECRET_READBACK,
    AFTER_SECRET_SWITCH,
    AFTER_SECRET_WRITE,
    crash_point,
)
from context_harness.stores.keychain import KeyringSecretStore, open_keychain
from context_harness.stores.secret_store import SecretRef, Secrets, SecretsUnavailable, StoreKind, new_stamp
from context_harness.stores.token_store import FileSecretStore, TokenStore, is_pending, reference

log = structlog.get_logger(__name__)

T = TypeVar("T")

SecretStoreSetting = Literal["auto", "keyring", "file"]
# Every keychain call shares this key: once one is stuck past its deadline, the next fail at once.
KEYCHAIN_IO_KEY = "keychain"
KEYRING_HINT = "unlock the keychain (or start its service), or set CH_SECRET_STORE=auto to fall back to token files"


@dataclass(frozen=True, slots=True)
class SecretSettings:
    """What the vault uses of the daemon's settings (`Settings.secrets()`, which holds the defaults)."""

    store: SecretStoreSetting
    keychain_timeout_s: float  # each keychain call: a locked, slow or vanished keychain fails it, never waits on
    home: str  # CH_HOME: the keychain service is named after it


class SecretVault:
    def __init__(
        self,
        settings: SecretSettings,
        tokens: TokenStore,
        find_keychain: Callable[[str], KeyringSecretStore] = open_keychain,
    ) -> None:
        self.settings = settings
        self.tokens = tokens
        self.files = FileSecretStore(tokens)
        self._find_keychain = find_keychain
        self.keychain: KeyringSecretStore | None = None
        self.problem: str | None = None  # why the keychain is not answering now (None: it is, or was not asked)
        self.unread: dict[str, str] = {}  # credentials in the keychain whose values we could not read, and why
        self._locks: dict[str, asyncio.Lock] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def configure(self, settings: SecretSettings) -> None:
        self.settings = settings

    # --- start -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Find the keychain (unless `file` and nothing rests there), then read every referenced credential."""
        self._loop = asyncio.get_running_loop()
        refs = self._references()
        if self.settings.store != "file" or refs:
            await self._look_for_keychain()
        items = await self._read_all(refs)
        await asyncio.gather(*(self._read(name, ref, items) for name, ref in refs.items()))
        summary = self.summary()
        if summary["warning"]:
            log.warning("secret_store_fallback", store=summary["in_use"], reason=summary["warning"])
        else:
            log.info("secret_store_ready", store=summary["in_use"], keychain=summary["keychain"], held=len(refs))

    def target(self) -> StoreKind:
        """Where a new value goes now."""
        if self.settings.store == "auto":
            return "keyring" if self.keychain is not None else "file"
        return self.settings.store

    # --- storing -----------------------------------------------------------------------------------------

    async def store(self, credential: Credential, *, rotation: bool = False) -> Result[None]:
        """Store `credential` with new secret values. `rotation`: values the server already replaced the
        previous ones with (a refreshed token): never refused, kept in the token file if the keychain fails."""
        name = credential.name
        async with self._lock(name):
            previous = self._reference(name)
            if self.target() == "file":
                self.tokens.write_inline(credential)
                if previous is not None:
                    await self._remove_item(previous, "the values now rest in the token file")
                return Success(None)
            try:
                keychain = await self._keychain()
                stamp = new_stamp()
                await self._call(lambda: keychain.write(name, Secrets.of(credential, stamp)))
            except SecretsUnavailable as exc:
                return self._keep_in_file(credential, str(exc), rotation)
            crash_point(AFTER_SECRET_WRITE)
            self.tokens.write_ref(credential, SecretRef(service=keychain.service, key=name, stamp=stamp))
            self.unread.pop(name, None)
            return Success(None)

    def store_from_thread(self, credential: Credential) -> Result[None]:
        """`store` for code running in a worker thread (a config edit that stores an API key first)."""
        if self.target() == "file" and self._reference(credential.name) is None:
            self.tokens.write_inline(credential)
            return Success(None)
        assert self._loop is not None, "SecretVault.start() was not awaited"
        waiting = asyncio.run_coroutine_threadsafe(self.store(credential), self._loop)
        return waiting.result(timeout=3 * self.settings.keychain_timeout_s + 5)

    def _keep_in_file(self, credential: Credential, reason: str, rotation: bool) -> Result[None]:
        name = credential.name
        if self.settings.store == "keyring" and not rotation:
            log.error("secret_refused", server=name, reason=reason)
            return Failure(
                f"the keychain did not take {name}'s secret ({reason}); CH_SECRET_STORE=keyring, so nothing was stored",
                ErrorCode.KEYCHAIN_UNAVAILABLE,
                KEYRING_HINT,
            )
        self.tokens.write_inline(credential, pending=True)
        log.error(
            "secret_kept_in_token_file",
            server=name,
            reason=reason,
            path=str(self.tokens.path(name)),
            hint="moved into the keychain as soon as it answers; `chctl status` shows it",
        )
        return Success(None)

    async def can_store_new(self) -> Result[None]:
        """Whether a new secret (a login about to start) would be stored: with `keyring`, only when a keychain
        answers, so a login is refused before the browser opens, not after the server issued its tokens."""
        if self.settings.store != "keyring":
            return Success(None)
        try:
            await self._keychain()
        except SecretsUnavailable as exc:
            return Failure(
                f"no keychain answered ({exc}); CH_SECRET_STORE=keyring, so a login would not be stored",
                ErrorCode.KEYCHAIN_UNAVAILABLE,
                KEYRING_HINT,
            )
        return Success(None)

    async def delete(self, name: str) -> None:
        """Logout: the keychain item (if any, and if the keychain answers), then the token file."""
        async with self._lock(name):
            ref = self._reference(name)
            if ref is not None:
                await self._remove_item(ref, "logged out")
            self.tokens.delete(name)
            self.unread.pop(name, None)

    # --- moving ------------------------------------------------------------------------------------------

    async def migrate(self, name: str, to: StoreKind) -> Result[str]:
        """Move `name`'s values to `to`: the new copy written and read back before the old one goes. `moved`,
        or `already` when they rest there (a copy a crash left behind in the keychain is removed then)."""
        async with self._lock(name):
            record = self.tokens.record(name)
            if record is None:
                return Failure(f"no credential stored for {name}", ErrorCode.NOT_FOUND, "see `chctl status`")
            ref = reference(record)
            try:
                if to == "keyring":
                    if ref is not None and name not in self.unread:
                        return Success("already")
                    return await self._to_keychain(name)
                if ref is None:
                    await self._remove_item(self._ref_for(name), "the values rest in the token file", quiet=True)
                    return Success("already")
                return await self._to_file(name, ref)
            except SecretsUnavailable as exc:
                return Failure(
                    f"{name}: the keychain did not answer ({exc}); nothing was moved",
                    ErrorCode.KEYCHAIN_UNAVAILABLE,
                    "unlock the keychain (or start its service), then run `chctl secrets migrate` again",
                )

    async def _to_keychain(self, name: str) -> Result[str]:
        credential = self.tokens.load(name)
        if credential is None:
            return Failure(f"{name}'s values cannot be read: {self.unread.get(name)}", ErrorCode.KEYCHAIN_UNAVAILABLE)
        keychain = await self._keychain()
        copy = Secrets.of(credential, new_stamp())
        await self._call(lambda: keychain.write(name, copy))
        crash_point(AFTER_SECRET_COPY)
        back = await self._call(lambda: keychain.read(name))
        if back != copy:
            return Failure(f"{name}: the keychain gave back other values than were written; nothing was moved",
                           ErrorCode.KEYCHAIN_UNAVAILABLE, KEYRING_HINT)  # fmt: skip
        crash_point(AFTER_SECRET_READBACK)
        self.tokens.write_ref(credential, SecretRef(service=keychain.service, key=name, stamp=copy.stamp))
        self.unread.pop(name, None)
        log.info("secret_moved", server=name, to="keyring")
        return Success("moved")

    async def _to_file(self, name: str, ref: SecretRef) -> Result[str]:
        if name in self.unread or self.tokens.load(name) is None:
            await self._read(name, ref)
        credential = self.tokens.load(name)
        if credential is None:
            raise SecretsUnavailable(self.unread.get(name, "its values could not be read"))
        self.tokens.write_inline(credential)
        back = self.files.read(name)
        if back is None or not back.same_values(Secrets.of(credential)):  # pragma: no cover - a disk that lies
            return Failure(f"{name}: the token file did not read back", ErrorCode.PERMISSION_DENIED)
        crash_point(AFTER_SECRET_SWITCH)
        await self._remove_item(ref, "the values now rest in the token file")
        log.info("secret_moved", server=name, to="file")
        return Success("moved")

    # --- healing: what the keychain could not do earlier ------------------------------------------------

    def needs_healing(self) -> list[str]:
        """Servers whose values are pending a move into the keychain, or in it but not read yet."""
        if self.settings.store == "file":
            return sorted(self.unread)
        pending = [n for n in self.tokens.names() if is_pending(self.tokens.record(n) or {})]
        return sorted(set(self.unread) | set(pending))

    async def heal(self, name: str) -> bool:
        """Try once more (the caller holds the server's lock); True when `name`'s credential became readable."""
        async with self._lock(name):
            record = self.tokens.record(name)
            if record is None:
                self.unread.pop(name, None)
                return False
            ref = reference(record)
            if ref is not None:
                if name not in self.unread:
                    return False
                await self._read(name, ref)
                return name not in self.unread
        if is_pending(record) and self.settings.store != "file":
            moved = await self.migrate(name, "keyring")
            if isinstance(moved, Success):
                log.warning("secret_moved_back_to_keychain", server=name)
        return False

    async def look_again(self) -> None:
        """No keychain answered at start (or since): ask again (the wall-clock check does, every 30 s). Not
        before `start` (services built for a test without the daemon around them never ask)."""
        if self._loop is not None and self.keychain is None and self.settings.store != "file":
            await self._look_for_keychain()

    # --- what status and doctor say ----------------------------------------------------------------------

    def place(self, name: str) -> dict[str, Any] | None:
        """Where `name`'s stored values rest: `keychain` or `token_file`, with details; None without one."""
        record = self.tokens.record(name)
        if record is None:
            return None
        ref = reference(record)
        if ref is not None:
            backend = self.keychain.label if self.keychain is not None else "keychain"
            detail = f"{backend}: service {ref.service}, user {ref.key}"
            return {"where": "keychain", "detail": detail, "problem": self.unread.get(name)}
        problem = None
        if is_pending(record):
            problem = "the keychain failed as it was stored; moved into the keychain when it answers"
        return {"where": "token_file", "path": str(self.tokens.path(name)), "problem": problem}

    def summary(self) -> dict[str, Any]:
        """The setting, the store new values go to, the keychain in use, and the warning to repeat (if any)."""
        setting, in_use = self.settings.store, self.target()
        warning = None
        if setting == "auto" and in_use == "file":
            warning = f"no keychain answered ({self.problem or 'none found'}): new secrets are stored in token files"
        elif setting == "keyring" and self.keychain is None:
            warning = f"no keychain answered ({self.problem or 'none found'}): new logins and keys are refused"
        elif in_use == "keyring" and self.problem:
            warning = f"the keychain is not answering ({self.problem}): rotated tokens are kept in token files"
        return {
            "setting": setting,
            "in_use": in_use,
            "keychain": self.keychain.label if self.keychain is not None else None,
            "problem": self.problem,
            "warning": warning,
        }

    # --- helpers -----------------------------------------------------------------------------------------

    async def _read_all(self, refs: dict[str, SecretRef]) -> dict[tuple[str, str], Secrets]:
        """Every referenced item at once where the keychain allows (the Secret Service), by (service, key)."""
        found: dict[tuple[str, str], Secrets] = {}
        if self.keychain is None:
            return found
        for service in {ref.service for ref in refs.values()}:
            store = KeyringSecretStore(self.keychain.backend, service)
            try:
                items = await self._call(store.read_all)
            except SecretsUnavailable:
                continue  # each is read on its own then (and says why it could not be)
            found.update({(service, key): values for key, values in (items or {}).items()})
        return found

    async def _read(self, name: str, ref: SecretRef, items: dict[tuple[str, str], Secrets] | None = None) -> None:
        """Read `name`'s values from the keychain (or `items`, read at once) and hold them; a newer item than
        the file names is a crash between the two writes: its values are taken."""
        try:
            found = (items or {}).get((ref.service, ref.key))
            if found is None:
                keychain = await self._keychain()
                item = KeyringSecretStore(keychain.backend, ref.service)
                found = await self._call(lambda: item.read(ref.key))
        except SecretsUnavailable as exc:
            self.unread[name] = f"the keychain did not answer: {exc}"
            return
        if found is None:
            self.unread[name] = f"the keychain holds no secret for {name} (was it cleared?): run `chctl auth {name}`"
            log.error("secret_missing_in_keychain", server=name, service=ref.service)
            return
        self.unread.pop(name, None)
        if found.stamp == ref.stamp:
            self.tokens.hold(name, found)
            return
        self._recover(name, ref, found)

    def _recover(self, name: str, ref: SecretRef, found: Secrets) -> None:
        record = self.tokens.record(name) or {}
        update: dict[str, Any] = {"last_error": None}
        if record.get("kind") == "oauth":
            update["state"] = TokenState.ACTIVE.value  # the newer values came from a refresh or a login that worked
        try:
            credential = Credential.model_validate(found.fill({**record, **update}))
        except ValidationError:
            self.unread[name] = f"the keychain item for {name} does not fit its token file: run `chctl auth {name}`"
            return
        self.tokens.write_ref(credential, ref.model_copy(update={"stamp": found.stamp}))
        log.warning("secret_recovered_from_keychain", server=name, reason="a write was interrupted before")

    async def _remove_item(self, ref: SecretRef | None, why: str, quiet: bool = False) -> None:
        if ref is None or (quiet and self.keychain is None):
            return
        try:
            keychain = await self._keychain()
            item = KeyringSecretStore(keychain.backend, ref.service)
            await self._call(lambda: item.delete(ref.key))
        except SecretsUnavailable as exc:
            log.warning("keychain_item_left", server=ref.key, why=why, reason=str(exc))

    async def _keychain(self) -> KeyringSecretStore:
        if self.keychain is None:
            await self._look_for_keychain()
        if self.keychain is None:
            raise SecretsUnavailable(self.problem or "no keychain found")
        return self.keychain

    async def _look_for_keychain(self) -> None:
        home = self.settings.home
        try:
            self.keychain = await self._call(lambda: self._find_keychain(home))
        except SecretsUnavailable:
            return
        log.info("keychain_found", keychain=self.keychain.label)

    async def _call(self, work: Callable[[], T]) -> T:
        """`work()` in a thread with the keychain deadline; the reason it failed is kept for status."""
        timeout_s = self.settings.keychain_timeout_s
        try:
            value = await run_blocking(work, timeout_s, name="keychain", key=KEYCHAIN_IO_KEY)
        except StillRunning:
            self.problem = f"no answer within {timeout_s:g} s: locked, or its service hung"
            raise SecretsUnavailable(self.problem) from None
        except SecretsUnavailable as exc:
            self.problem = str(exc)
            raise
        self.problem = None
        return value

    def _references(self) -> dict[str, SecretRef]:
        refs = {}
        for name in self.tokens.names():
            ref = self._reference(name)
            if ref is not None:
                refs[name] = ref
        return refs

    def _reference(self, name: str) -> SecretRef | None:
        record = self.tokens.record(name)
        return reference(record) if record is not None else None

    def _ref_for(self, name: str) -> SecretRef | None:
        """The item a crash may have left for `name` in this home's keychain service."""
        if self.keychain is None:
            return None
        return SecretRef(service=self.keychain.service, key=name, stamp="")

    @asynccontextmanager
    async def _lock(self, name: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            yield
