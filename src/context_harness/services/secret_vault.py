"""SecretVault: where each server's secret values go (`CH_SECRET_STORE=auto|keyring|file`), and every
keychain call made off the event loop with a deadline.

A server's secrets rest in its records (stores/secret_records.py): its credential's token file, and its OAuth
client registration (a confidential client's secret) — each with a keychain item of its own, since a
registration outlives logouts and failed logins and is dropped when the server forgets the client, while the
credential changes at every refresh. The rules are the same for every record:

- `auto` (the default) stores new values in the keychain when one answered (`stores/keychain.py`), in the
  record's file otherwise, and says so (`summary()`: `chctl status` and `chctl doctor` repeat the warning).
- `keyring` refuses to store a new secret (a login, an API key, a client registration) when no keychain
  answers: nothing is written in plain text.
- A value that must not be lost — a rotated refresh token the authorization server now considers current —
  is never refused: when the keychain fails as it is stored, it goes into the 0600 file, marked pending, with an
  error in the log and in status; `heal` moves it back once the keychain answers.
- `file` keeps the values in the files, as before.

A record that names a keychain item is read at start (`start`), whatever the setting, and its values are held in
memory (`SecretRecords.hold`); a keychain that does not answer then leaves that record unreadable, and `heal`
(every wall-clock check) tries again. Each call runs through `blocking_io.run_blocking` under one key: a hung
Secret Service costs one thread, and later calls fail at once until it returns.

The write order makes a crash at any instant recoverable: the keychain item first, then the record naming it by
its stamp. A crash between the two leaves an item whose stamp differs from the file's, and the keychain's
(newer) values are taken at the next start — unless the item says it belongs to another record (a new client
registration's), which is then dropped whole. Moves between stores (`migrate`) write the new copy, read it
back, switch the record, and only then remove the old copy.

Callers that change a server's values hold its server's lock (OAuthService) around these calls; the vault's
own per-item lock keeps its two writes together against everyone else.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

import structlog

from context_harness.primitives.oauth import ClientRegistration, Credential
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.services.blocking_io import StillRunning, run_blocking
from context_harness.stores import client_store, token_store
from context_harness.stores.client_store import ClientStore
from context_harness.stores.crash_points import (
    AFTER_SECRET_COPY,
    AFTER_SECRET_READBACK,
    AFTER_SECRET_SWITCH,
    AFTER_SECRET_WRITE,
    crash_point,
)
from context_harness.stores.keychain import KeyringSecretStore, open_keychain
from context_harness.stores.secret_records import FileSecretStore, SecretRecords, is_pending, reference
from context_harness.stores.secret_store import SecretRef, Secrets, SecretsUnavailable, StoreKind, new_stamp
from context_harness.stores.token_store import TokenStore

log = structlog.get_logger(__name__)

T = TypeVar("T")

SecretStoreSetting = Literal["auto", "keyring", "file"]
# Every keychain call shares this key: once one is stuck past its deadline, the next fail at once.
KEYCHAIN_IO_KEY = "keychain"
KEYRING_HINT = "unlock the keychain (or start its service), or set CH_SECRET_STORE=auto to fall back to token files"
MIGRATE_HINT = "unlock the keychain (or start its service), then run `chctl secrets migrate` again"


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
        clients: ClientStore,
        find_keychain: Callable[[str], KeyringSecretStore] = open_keychain,
        others: Sequence[SecretRecords] = (),
    ) -> None:
        self.settings = settings
        self.tokens = tokens
        self.clients = clients
        # Every kind of record that holds secrets: read at start, healed, moved by `migrate`. `others`: more kinds
        # (written with `keep`, forgotten with `forget`, shown with `place_of`).
        self.records: tuple[SecretRecords, ...] = (tokens.records, clients.records, *others)
        self._find_keychain = find_keychain
        self.keychain: KeyringSecretStore | None = None
        self.problem: str | None = None  # why the keychain is not answering now (None: it is, or was not asked)
        self.unread: dict[str, str] = {}  # keychain items (by key) whose values we could not read, and why
        self._locks: dict[str, asyncio.Lock] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def configure(self, settings: SecretSettings) -> None:
        self.settings = settings

    # --- start -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Find the keychain (unless `file` and nothing rests there), then read every referenced record."""
        self._loop = asyncio.get_running_loop()
        refs = self._references()
        if self.settings.store != "file" or refs:
            await self._look_for_keychain()
        items = await self._read_all([ref for _records, _name, ref in refs])
        await asyncio.gather(*(self._read(records, name, ref, items) for records, name, ref in refs))
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
        return await self.keep(self.tokens.records, credential.name, token_store.dump(credential), rotation=rotation)

    async def keep_client(self, name: str, registration: ClientRegistration) -> Result[None]:
        """Store a new client registration of `name`, its secret (if it has one) where secrets go. Never a
        rotation: a registration refused with `keyring` is made again at the next login."""
        return await self.keep(self.clients.records, name, client_store.dump(registration))

    async def keep(
        self, records: SecretRecords, name: str, data: Mapping[str, Any], *, rotation: bool = False
    ) -> Result[None]:
        """Store `name`'s record `data`, values included: the keychain item first, then the record naming it.
        A record without values (a public client's registration) is written as it is."""
        key = records.item_key(name)
        async with self._lock(key):
            previous = records.reference(name)
            values = records.fields.take(data)
            if self.target() == "file" or not values.values:
                records.write_inline(name, data)
                if previous is not None:
                    await self._remove_item(previous, f"the values now rest in its {records.kind} file")
                return Success(None)
            try:
                keychain = await self._keychain()
                stamp = new_stamp()
                await self._call(lambda: keychain.write(key, replace(values, stamp=stamp)))
            except SecretsUnavailable as exc:
                return self._keep_in_file(records, name, data, str(exc), rotation)
            crash_point(AFTER_SECRET_WRITE, key)
            records.write_ref(name, data, SecretRef(service=keychain.service, key=key, stamp=stamp))
            self.unread.pop(key, None)
            return Success(None)

    def store_from_thread(self, credential: Credential) -> Result[None]:
        """`store` for code running in a worker thread (a config edit that stores an API key first)."""
        if self.target() == "file" and self.tokens.records.reference(credential.name) is None:
            self.tokens.write_inline(credential)
            return Success(None)
        assert self._loop is not None, "SecretVault.start() was not awaited"
        waiting = asyncio.run_coroutine_threadsafe(self.store(credential), self._loop)
        return waiting.result(timeout=3 * self.settings.keychain_timeout_s + 5)

    def _keep_in_file(
        self, records: SecretRecords, name: str, data: Mapping[str, Any], reason: str, rotation: bool
    ) -> Result[None]:
        if self.settings.store == "keyring" and not rotation:
            log.error("secret_refused", server=name, record=records.kind, reason=reason)
            return Failure(
                f"the keychain did not take {name}'s {records.what} ({reason}); CH_SECRET_STORE=keyring, so nothing "
                "was stored",
                ErrorCode.KEYCHAIN_UNAVAILABLE,
                KEYRING_HINT,
            )
        records.write_inline(name, data, pending=True)
        log.error(
            f"secret_kept_in_{records.kind}_file",
            server=name,
            reason=reason,
            path=str(records.path(name)),
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

    async def unreadable(self, records: SecretRecords, name: str) -> str | None:
        """Why `name`'s record cannot be read now, after asking the keychain once more; None when it can (or
        there is none)."""
        key = records.item_key(name)
        async with self._lock(key):
            ref = records.reference(name)
            if ref is None:
                return None
            if key in self.unread:
                await self._read(records, name, ref)
            return self.unread.get(key)

    # --- forgetting --------------------------------------------------------------------------------------

    async def delete(self, name: str) -> None:
        """Logout: the keychain item (if any, and if the keychain answers), then the token file."""
        async with self._lock(self.tokens.records.item_key(name)):
            await self._forget_locked(self.tokens.records, name, "logged out")
            self.tokens.delete(name)  # the `{file:}` secret file too

    async def drop_client(self, name: str, client_id: str) -> bool:
        """Forget `name`'s client registration if it is `client_id`'s (the server no longer knows that client):
        its keychain item, then its file. Whether one was forgotten."""
        async with self._lock(self.clients.records.item_key(name)):
            if not self.clients.is_for(name, client_id):
                return False
            await self._forget_locked(self.clients.records, name, "the client registration was dropped")
            return True

    async def forget(self, records: SecretRecords, name: str, why: str) -> None:
        """Forget `name`'s record: its keychain item (if the keychain answers), then its file."""
        async with self._lock(records.item_key(name)):
            await self._forget_locked(records, name, why)

    async def _forget_locked(self, records: SecretRecords, name: str, why: str) -> None:
        await self._remove_item(records.reference(name), why)
        records.delete(name)
        self.unread.pop(records.item_key(name), None)

    # --- moving ------------------------------------------------------------------------------------------

    async def before_migration(self) -> None:
        """A move looks for the keychain whatever the setting: to take the values out of it, or the copies a crash
        left behind there."""
        if self.keychain is None:
            await self._look_for_keychain()

    def names(self) -> list[str]:
        """Every name some record is stored under."""
        return sorted({name for records in self.records for name in records.names()})

    async def migrate(self, name: str, to: StoreKind) -> Result[str]:
        """Move every secret value of `name` (its credential's, its client registration's) to `to`: each new copy
        written and read back before the old one goes. `moved`, `already` when they rest there (a copy a crash
        left behind in the keychain is removed then), `none` when `name` has no secret."""
        outcomes: list[str] = []
        failures: list[Failure] = []
        for records in self.records:
            if records.record(name) is None:
                continue
            moved = await self._migrate(records, name, to)
            if isinstance(moved, Failure):
                failures.append(moved)
            else:
                outcomes.append(moved.value)
        if failures:
            return Failure("; ".join(f.error for f in failures), failures[0].code, failures[0].hint)
        if not outcomes:
            return Failure(f"no credential stored for {name}", ErrorCode.NOT_FOUND, "see `chctl status`")
        return Success("moved" if "moved" in outcomes else "already" if "already" in outcomes else "none")

    async def _migrate(self, records: SecretRecords, name: str, to: StoreKind) -> Result[str]:
        key = records.item_key(name)
        async with self._lock(key):
            record = records.record(name)
            if record is None:
                return Success("none")
            ref = reference(record)
            nothing = ref is None and not records.fields.take(record).values  # a public client's registration
            try:
                if to == "keyring":
                    if nothing:
                        return Success("none")
                    if ref is not None and key not in self.unread:
                        return Success("already")
                    return await self._to_keychain(records, name)
                if ref is None:
                    left = self._ref_for(key)  # a copy a crash left behind in the keychain
                    await self._remove_item(left, f"the values rest in the {records.kind} file", quiet=True)
                    return Success("none" if nothing else "already")
                return await self._to_file(records, name, ref)
            except SecretsUnavailable as exc:
                what = f"{name}'s {records.what}"
                error = f"{what}: the keychain did not answer ({exc}); nothing was moved"
                return Failure(error, ErrorCode.KEYCHAIN_UNAVAILABLE, MIGRATE_HINT)

    async def _to_keychain(self, records: SecretRecords, name: str) -> Result[str]:
        key = records.item_key(name)
        data = records.filled(name)
        if data is None:
            return Failure(
                f"{name}'s {records.what} cannot be read: {self.unread.get(key)}", ErrorCode.KEYCHAIN_UNAVAILABLE
            )
        keychain = await self._keychain()
        copy = records.fields.take(data, new_stamp())
        await self._call(lambda: keychain.write(key, copy))
        crash_point(AFTER_SECRET_COPY, key)
        back = await self._call(lambda: keychain.read(key))
        if back != copy:
            return Failure(f"{name}: the keychain gave back other values than were written; nothing was moved",
                           ErrorCode.KEYCHAIN_UNAVAILABLE, KEYRING_HINT)  # fmt: skip
        crash_point(AFTER_SECRET_READBACK, key)
        records.write_ref(name, data, SecretRef(service=keychain.service, key=key, stamp=copy.stamp))
        self.unread.pop(key, None)
        log.info("secret_moved", server=name, record=records.kind, to="keyring")
        return Success("moved")

    async def _to_file(self, records: SecretRecords, name: str, ref: SecretRef) -> Result[str]:
        key = records.item_key(name)
        if key in self.unread or records.filled(name) is None:
            await self._read(records, name, ref)
        data = records.filled(name)
        if data is None:
            raise SecretsUnavailable(self.unread.get(key, "its values could not be read"))
        records.write_inline(name, data)
        back = FileSecretStore(records).read(name)
        if back is None or not back.same_values(records.fields.take(data)):  # pragma: no cover - a disk that lies
            return Failure(f"{name}: the {records.kind} file did not read back", ErrorCode.PERMISSION_DENIED)
        crash_point(AFTER_SECRET_SWITCH, key)
        await self._remove_item(ref, f"the values now rest in the {records.kind} file")
        log.info("secret_moved", server=name, record=records.kind, to="file")
        return Success("moved")

    # --- healing: what the keychain could not do earlier ------------------------------------------------

    def needs_healing(self) -> list[str]:
        """Names with values pending a move into the keychain, or in it but not read yet."""
        found = set()
        for records in self.records:
            for name in records.names():
                if records.item_key(name) in self.unread:
                    found.add(name)
                elif self.settings.store != "file" and is_pending(records.record(name) or {}):
                    found.add(name)
        return sorted(found)

    async def heal(self, name: str) -> bool:
        """Try once more for each of `name`'s records (the caller holds the server's lock); True when its
        credential became readable (then it is announced)."""
        readable = False
        for records in self.records:
            healed = await self._heal(records, name)
            readable = readable or (healed and records is self.tokens.records)
        return readable

    async def _heal(self, records: SecretRecords, name: str) -> bool:
        key = records.item_key(name)
        async with self._lock(key):
            record = records.record(name)
            if record is None:
                self.unread.pop(key, None)
                return False
            ref = reference(record)
            if ref is not None:
                if key not in self.unread:
                    return False
                await self._read(records, name, ref)
                return key not in self.unread
        if is_pending(record) and self.settings.store != "file":
            moved = await self._migrate(records, name, "keyring")
            if isinstance(moved, Success):
                log.warning("secret_moved_back_to_keychain", server=name, record=records.kind)
        return False

    async def look_again(self) -> None:
        """No keychain answered at start (or since): ask again (the wall-clock check does, every 30 s). Not
        before `start` (services built for a test without the daemon around them never ask)."""
        if self._loop is not None and self.keychain is None and self.settings.store != "file":
            await self._look_for_keychain()

    # --- what status and doctor say ----------------------------------------------------------------------

    def place(self, name: str) -> dict[str, Any] | None:
        """Where `name`'s credential's values rest: `keychain` or `token_file`, with details; None without one.
        The names (never the values) of the secret headers stored with a key are listed too: they rest there."""
        place = self.place_of(self.tokens.records, name)
        credential = self.tokens.load(name) if place is not None else None
        if place is not None and credential is not None and credential.extra_headers:
            place["secret_headers"] = sorted(credential.extra_headers)
        return place

    def client_place(self, name: str) -> dict[str, Any] | None:
        """Where `name`'s client secret rests: `keychain` or `client_file`; None without one."""
        return self.place_of(self.clients.records, name)

    def place_of(self, records: SecretRecords, name: str) -> dict[str, Any] | None:
        """Where `name`'s record's values rest: `keychain` or its file (`<kind>_file`), with details and the
        problem there is, if any; None without a record or a value in it."""
        record = records.record(name)
        if record is None:
            return None
        ref = reference(record)
        if ref is not None:
            backend = self.keychain.label if self.keychain is not None else "keychain"
            detail = f"{backend}: service {ref.service}, user {ref.key}"
            return {"where": "keychain", "detail": detail, "problem": self.unread.get(ref.key)}
        if not records.fields.take(record).values:
            return None
        problem = None
        if is_pending(record):
            problem = "the keychain failed as it was stored; moved into the keychain when it answers"
        return {"where": f"{records.kind}_file", "path": str(records.path(name)), "problem": problem}

    def summary(self) -> dict[str, Any]:
        """The setting, the store new values go to, the keychain in use, and the warning to repeat (if any)."""
        setting, in_use = self.settings.store, self.target()
        warning = None
        if setting == "auto" and in_use == "file":
            found = self.problem or "none found"
            warning = f"no keychain answered ({found}): new secrets are stored in token and client files"
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

    async def _read_all(self, refs: list[SecretRef]) -> dict[tuple[str, str], Secrets]:
        """Every referenced item at once where the keychain allows (the Secret Service), by (service, key)."""
        found: dict[tuple[str, str], Secrets] = {}
        if self.keychain is None:
            return found
        for service in {ref.service for ref in refs}:
            store = KeyringSecretStore(self.keychain.backend, service)
            try:
                items = await self._call(store.read_all)
            except SecretsUnavailable:
                continue  # each is read on its own then (and says why it could not be)
            found.update({(service, key): values for key, values in (items or {}).items()})
        return found

    async def _read(
        self,
        records: SecretRecords,
        name: str,
        ref: SecretRef,
        items: dict[tuple[str, str], Secrets] | None = None,
    ) -> None:
        """Read `name`'s values from the keychain (or `items`, read at once) and hold them; a newer item than
        the file names is a crash between the two writes: its values are taken."""
        key = records.item_key(name)
        try:
            found = (items or {}).get((ref.service, ref.key))
            if found is None:
                keychain = await self._keychain()
                item = KeyringSecretStore(keychain.backend, ref.service)
                found = await self._call(lambda: item.read(ref.key))
        except SecretsUnavailable as exc:
            self.unread[key] = f"the keychain did not answer: {exc}"
            return
        if found is None:
            if records.disposable:
                await self._drop(records, name, None, "its keychain item is gone")
                return
            cleared = f"the keychain holds no {records.what} for {name} (was it cleared?)"
            self.unread[key] = f"{cleared}: run `chctl auth {name}`"
            log.error("secret_missing_in_keychain", server=name, record=records.kind, service=ref.service)
            return
        self.unread.pop(key, None)
        if found.stamp == ref.stamp:
            records.hold(name, found)
            return
        await self._recover(records, name, ref, found)

    async def _recover(self, records: SecretRecords, name: str, ref: SecretRef, found: Secrets) -> None:
        """The item is newer than the record: a crash came between the two writes. Its values are taken, unless
        it was written for another record (a new registration, then the crash): neither half is whole then."""
        record = records.record(name) or {}
        identity = records.fields.identity
        if identity is not None and found.identity != record.get(identity):
            if records.disposable:
                await self._drop(records, name, ref, "a write was interrupted: its keychain item is another's")
            else:
                another = f"the keychain item of {name} was written for another record"
                self.unread[records.item_key(name)] = f"{another}: run `chctl auth {name}`"
            return
        filled = records.recovered(records.fields.fill(record, found))
        records.write_ref(name, filled, ref.model_copy(update={"stamp": found.stamp}))
        reason = "a write was interrupted"
        log.warning("secret_recovered_from_keychain", server=name, record=records.kind, reason=reason)

    async def _drop(self, records: SecretRecords, name: str, ref: SecretRef | None, reason: str) -> None:
        """A disposable record whose values are lost: gone whole (a client registration is made again)."""
        await self._remove_item(ref, reason)
        records.delete(name)
        self.unread.pop(records.item_key(name), None)
        log.warning("secret_record_dropped", server=name, record=records.kind, reason=reason)

    async def _remove_item(self, ref: SecretRef | None, why: str, quiet: bool = False) -> None:
        if ref is None or (quiet and self.keychain is None):
            return
        try:
            keychain = await self._keychain()
            item = KeyringSecretStore(keychain.backend, ref.service)
            await self._call(lambda: item.delete(ref.key))
        except SecretsUnavailable as exc:
            log.warning("keychain_item_left", item=ref.key, why=why, reason=str(exc))

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

    def _references(self) -> list[tuple[SecretRecords, str, SecretRef]]:
        """Every record that names a keychain item, with it."""
        refs = []
        for records in self.records:
            for name in records.names():
                ref = records.reference(name)
                if ref is not None:
                    refs.append((records, name, ref))
        return refs

    def _ref_for(self, key: str) -> SecretRef | None:
        """The item a crash may have left under `key` in this home's keychain service."""
        if self.keychain is None:
            return None
        return SecretRef(service=self.keychain.service, key=key, stamp="")

    @asynccontextmanager
    async def _lock(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            yield
