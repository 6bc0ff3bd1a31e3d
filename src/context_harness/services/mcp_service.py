"""MCPService: the server operations — the registry, adding and removing servers in agents' configs, their URLs.

A server added again keeps what was recorded for it — its configs (clients and files), each config's mode and
secret mode, its URL, its key header and how it authenticates — unless a flag names another; `add` says what
changed. How a server authenticates is the registry's word, the key it is given, or, for a URL of the user's,
its answer to a call without credentials (`oauth.auth_probe`), recorded in its bindings: a server that wants an
OAuth login shows `needs login` until one is stored, and again after a logout.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from context_harness.config.format import CLIENTS, DEFAULT_CLIENT, ConfigFormat, get_format, substitutions
from context_harness.primitives.mcp import MCPAuthType, MCPServer, Mode, SecretMode, ServerType
from context_harness.primitives.names import SERVER_NAME_HINT, valid_server_name
from context_harness.primitives.oauth import Credential
from context_harness.primitives.outside_values import (
    USER_INFO_PROBLEM,
    describe_url,
    has_user_info,
    header_name_problem,
    header_value_problem,
    static_header_problem,
    url_problem,
)
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.services import recorded_urls
from context_harness.services.agent_commands import bridge_command, helper_command
from context_harness.services.api_keys import api_key_credential
from context_harness.services.blocking_io import run_config_io
from context_harness.services.config_service import ConfigService, ConfigTarget, init_command
from context_harness.services.local_commands import environment_sha256
from context_harness.services.publisher import Publisher
from context_harness.services.registry import close_names, load_registry
from context_harness.services.secret_vault import SecretVault
from context_harness.services.server_names import ServerNames, unknown_server
from context_harness.services.server_state import ServerStates
from context_harness.services.static_headers import recorded_headers
from context_harness.stores.bindings import Binding, BindingStore
from context_harness.stores.crash_points import AFTER_BINDING_WRITE, crash_point
from context_harness.stores.token_store import TokenStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class AddRequest:
    name: str
    target: ConfigTarget
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    api_key: str | None = None
    key_header: str | None = None  # where a key for a custom --url goes; default `Authorization: Bearer`
    # The key's scheme as a registry's value template names it (`Bearer {token}`); None: the usual rule (Bearer
    # for Authorization only), "": none.
    key_scheme: str | None = None
    # More secret headers than the key's (a registry server may declare several): stored with the key, carried
    # by the bridge only (header mode writes one secret, the credential's).
    secret_headers: dict[str, str] = field(default_factory=dict)
    auth_type: MCPAuthType | None = None  # what a registry server needs, when chctl knows (else from the flags)
    command: list[str] | None = None
    environment: dict[str, str] = field(default_factory=dict)
    secret_mode: SecretMode | None = None  # None: as recorded for the config, else inline
    bridge: bool = False  # the entry runs `chctl bridge NAME`; the daemon carries the traffic
    # header, bridge or helper; None: `bridge` if set, else as recorded for the config, else the client's default
    mode: Mode | None = None
    # None: the configs recorded for the server (with --project/--global: the clients recorded), else opencode's
    clients: tuple[str, ...] | None = None
    # On a remote machine: the forwarded socket of the laptop's daemon, which holds the credential
    delegated_via: str | None = None
    oauth: bool = False  # an OAuth server whatever the registry says (a login without a person is set up next)


@dataclass(frozen=True, slots=True)
class Written:
    """One client's config that now carries the server."""

    client: str
    path: Path
    entry: dict[str, Any]
    mode: Mode
    new: bool = True  # False: the config carried the server already (its entry was rewritten)


@dataclass(frozen=True, slots=True)
class AddOutcome:
    name: str
    path: Path  # the first client's (the only one, usually)
    entry: dict[str, Any]
    auth_type: MCPAuthType
    needs_auth: bool  # an OAuth server with no token yet: run `chctl auth NAME`
    written: tuple[Written, ...] = ()
    changes: tuple[str, ...] = ()  # what this add changed of what was recorded, one short line each
    key_stored: bool = False  # an API key other than the stored one (or in another header, for another URL)
    needs_key: bool = False  # it answered 401 without OAuth and no key was given: `chctl add NAME -k KEY`
    not_written: dict[str, str] = field(default_factory=dict)  # header-mode configs the header is not in yet, why


@dataclass(frozen=True, slots=True)
class Planned:
    """What to add, before any client's shape: a remote URL (plus static headers) or a local command."""

    auth_type: MCPAuthType
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    command: list[str] | None = None
    environment: dict[str, str] = field(default_factory=dict)
    credential: Credential | None = None  # a new API key to store
    ask_server: bool = False  # nothing says how it authenticates: ask it (`oauth.auth_probe`) before writing


@dataclass(frozen=True, slots=True)
class Target:
    """One config to write, checked: its client's format, its path, the entry's mode and secret mode, and the
    binding it had (None: a config new to the server)."""

    fmt: ConfigFormat
    path: Path
    mode: Mode
    secret_mode: SecretMode
    before: Binding | None


def creates_missing(fmt: ConfigFormat, target: ConfigTarget) -> bool:
    """Whether `chctl add` creates a missing config: every client's user-level one (`--global` for opencode,
    whose default is the nearest project's), and other clients' project files. A project's opencode.json is
    `chctl init`'s to create: which directory is the project is the user's call."""
    return fmt.may_create() or target.global_


def client_format(client: str) -> Result[ConfigFormat]:
    if client not in CLIENTS:
        return Failure(f"unknown client {client!r}", ErrorCode.INVALID_PARAMS, f"choose one of: {', '.join(CLIENTS)}")
    return Success(get_format(client))


class MCPService:
    def __init__(
        self,
        config: ConfigService,
        tokens: TokenStore,
        bindings: BindingStore,
        publisher: Publisher,
        states: ServerStates,
        user_registry: Path,
        *,
        vault: SecretVault,
        ask_server: Callable[[str], Awaitable[MCPAuthType | None]] | None = None,
    ) -> None:
        self.config = config
        self.tokens = tokens
        self.vault = vault  # an API key is stored through it (in the keychain when one answers)
        self.bindings = bindings
        self.publisher = publisher
        self.states = states  # the change channel: its publisher writes the header of an added server
        self.user_registry = user_registry
        self.registry: dict[str, MCPServer] = {}
        self.registry_warnings: list[str] = []
        self.names = ServerNames(lambda: self.registry, bindings, tokens)
        # Asks a server added by URL what it wants (`oauth.auth_probe.auth_wanted`); None: nothing is asked.
        self.ask_server = ask_server
        self.reload_registry()

    def reload_registry(self) -> None:
        self.registry, self.registry_warnings = load_registry(self.user_registry)
        for warning in self.registry_warnings:
            log.warning("registry_entry_skipped", problem=warning)

    def known(self, name: str) -> MCPServer | None:
        """`name`'s registry entry (built in, or the user's registry.json), or None."""
        return self.registry.get(name)

    def known_at(self, url: str) -> MCPServer | None:
        """The registry entry for the server at `url`, or None: what the curated list knows that an MCP
        registry's entry for the same server may not (which header a key goes in, whether it wants a login)."""
        return next((server for server in self.registry.values() if server.url == url), None)

    # --- the registry and the configs' servers -------------------------------------------------------

    def list_available(self) -> Result[list[MCPServer]]:
        return Success(sorted(self.registry.values(), key=lambda s: s.name))

    def get_server_info(self, name: str) -> Result[MCPServer]:
        server = self.known(name)
        if server is None:
            return self._unknown(name)
        return Success(server)

    def list_configured(
        self, target: ConfigTarget, client: str = DEFAULT_CLIENT
    ) -> Result[tuple[Path, dict[str, Any]]]:
        found = self._config_of(target, client)
        if isinstance(found, Failure):
            return found
        fmt, path = found.value
        entries = self.config.entries(path, fmt)
        return entries if isinstance(entries, Failure) else Success((path, entries.value))

    def _config_of(self, target: ConfigTarget, client: str) -> Result[tuple[ConfigFormat, Path]]:
        """`client`'s format and the config file `target` names."""
        fmt = client_format(client)
        if isinstance(fmt, Failure):
            return fmt
        path = self.config.resolve(target, fmt=fmt.value)
        return path if isinstance(path, Failure) else Success((fmt.value, path.value))

    async def add(self, request: AddRequest) -> Result[AddOutcome]:
        """Write the server's entries (in a thread with a deadline: a config may be on a hung mount), then
        announce the change: the channel's publisher writes the header into those in header mode, as at every
        refresh (it is the one writer of secrets into configs), and the refresh plan follows. A header it
        cannot write is remembered there (status shows it) and written at the next check.

        The add returns when the header is written (after a write to the same file in flight, such as the
        start-up repair's), or says in `not_written` which configs it is not in yet, and why."""
        if not valid_server_name(request.name):
            return Failure(f"invalid server name {request.name!r}", ErrorCode.INVALID_PARAMS, SERVER_NAME_HINT)
        timeout_s = self.publisher.settings.io_timeout_s
        planned = await run_config_io(lambda: self._plan_entry(request), timeout_s, "mcp.add")
        if isinstance(planned, Failure):
            return planned
        plan = await self._asked(planned.value)
        added = await run_config_io(lambda: self.write_entries(request, plan), timeout_s, "mcp.add")
        if isinstance(added, Failure):
            return added
        if added.value.key_stored:  # a new key: what was said of the old one (refused, ...) is history
            await self.states.announce(self.states.get(request.name).stored())
        else:
            await self.states.changed(request.name, credential=True)
        errors = self.states.get(request.name).config_errors
        headers = [str(w.path) for w in added.value.written if w.mode == "header"]
        return Success(replace(added.value, not_written={p: errors[p] for p in headers if p in errors}))

    async def _asked(self, plan: Planned) -> Planned:
        """`plan`, with the auth the server asks for when nothing else says (a URL of the user's)."""
        if not plan.ask_server or plan.url is None or self.ask_server is None:
            return plan
        wanted = await self.ask_server(plan.url)
        if wanted in (MCPAuthType.OAUTH, MCPAuthType.API_KEY):
            log.info("server_wants_credential", url=describe_url(plan.url), auth_type=wanted.value)
            return replace(plan, auth_type=wanted)
        return plan

    def write_entries(self, request: AddRequest, plan: Planned) -> Result[AddOutcome]:
        """Bind and write the entries `request` asks for, planned as `plan`, with every header but the
        credential's."""
        name = request.name
        if not valid_server_name(name):
            return Failure(f"invalid server name {name!r}", ErrorCode.INVALID_PARAMS, SERVER_NAME_HINT)
        recorded = {b.path: b for b in self.bindings.for_server(name)}
        # Every client's file is found and checked before any is written: one bad target changes nothing.
        targets: list[Target] = []
        for client, path in self._targets(request, recorded):
            checked = self._add_target(request, plan, client, path, recorded)
            if isinstance(checked, Failure):
                return checked
            targets.append(checked.value)

        # The key is stored before any config mentions it: a config never points at a secret we do not have.
        stored_before = self.tokens.load(name)
        changes = _changes(plan, stored_before, targets)
        credential = plan.credential
        if credential is not None:
            kept = self.vault.store_from_thread(credential)
            if isinstance(kept, Failure):
                return kept
        else:
            # A login already made (also for a custom --url server) counts, if it was made for this URL: the
            # publisher writes it into the new entry at once (one from before URLs were recorded waits until
            # the publisher records one).
            remote = plan.url is not None  # (a bridged entry is local, but its server is remote)
            stored = self.tokens.load(name) if remote and plan.auth_type is not MCPAuthType.API_KEY else None
            usable = stored is not None and stored.kind == "oauth" and stored.server_url == plan.url
            credential = stored if usable else None
        managed = plan.auth_type in (MCPAuthType.API_KEY, MCPAuthType.OAUTH) or bool(
            credential is not None and credential.secret
        )
        written: list[Written] = []
        for target in targets:
            one = self._write_entry(request, plan, target, managed=managed)
            if isinstance(one, Failure):
                return one
            written.append(one.value)
        has_secret = credential is not None and bool(credential.secret)
        first = written[0]
        return Success(
            AddOutcome(
                name,
                first.path,
                first.entry,
                plan.auth_type,
                needs_auth=plan.auth_type is MCPAuthType.OAUTH and not has_secret,
                written=tuple(written),
                changes=changes,
                key_stored=plan.credential is not None and plan.credential != stored_before,
                needs_key=plan.auth_type is MCPAuthType.API_KEY and not has_secret,
            )
        )

    def _write_entry(self, request: AddRequest, plan: Planned, target: Target, *, managed: bool) -> Result[Written]:
        """Bind one client's config and write the entry into it (creating the file where the client allows)."""
        name = request.name
        fmt, config_path, mode = target.fmt, target.path, target.mode
        if creates_missing(fmt, request.target):
            created = self.config.create(config_path, fmt)
            if isinstance(created, Failure):
                return created
            config_path = config_path.resolve()  # bindings hold resolved paths
        local = plan.url is None  # what `chctl check` may start is what the user added, nothing else
        binding = Binding(
            path=str(config_path),
            client=fmt.name,
            secret_mode=target.secret_mode,
            mode=mode,
            url=plan.url,  # recorded in every mode: a header goes only where the entry still points here
            headers=dict(plan.headers) or None,  # not secret; what a bridge (and `chctl check`) sends with it
            auth=plan.auth_type,  # a server that wants a login shows `needs login` until it has one
            command=plan.command if local else None,
            environment_sha256=environment_sha256(plan.environment) if local else None,
        )
        entry = self._entry(fmt, name, plan, mode, managed=managed)
        # Binding first: a crash before the entry is written leaves a binding without an entry, which the next
        # header write (at start at the latest) drops; the other order would leave an entry whose header
        # nobody keeps current.
        self.bindings.bind(name, binding)
        crash_point(AFTER_BINDING_WRITE)
        put = self.config.put_entry(config_path, name, entry, fmt)
        if isinstance(put, Failure):
            self.bindings.unbind(name, config_path)
            return put
        self.publisher.clear(name, str(config_path))  # pointed back: no longer an error
        log.info(
            "server_added",
            server=name,
            path=str(config_path),
            client=fmt.name,
            mode=mode,
            auth_type=plan.auth_type.value,
        )
        return Success(Written(fmt.name, config_path, entry, mode, new=target.before is None))

    @staticmethod
    def _targets(request: AddRequest, recorded: dict[str, Binding]) -> list[tuple[str, Path | None]]:
        """The clients to write for, each with the config recorded for it, or None: the one the request's
        target names. Added again without --client, a server goes where it was recorded."""
        if request.clients is not None:
            return [(client, None) for client in dict.fromkeys(request.clients)]
        if not recorded:
            return [(DEFAULT_CLIENT, None)]
        if request.target.project is not None or request.target.global_:
            return [(client, None) for client in dict.fromkeys(b.client for b in recorded.values())]
        return [(b.client, Path(b.path)) for b in recorded.values()]

    def _add_target(
        self, request: AddRequest, plan: Planned, client: str, recorded_path: Path | None, recorded: dict[str, Binding]
    ) -> Result[Target]:
        """Where `client` keeps the server, and in which mode; a Failure says why it cannot."""
        found = client_format(client)
        if isinstance(found, Failure):
            return found
        fmt = found.value
        where = recorded_path
        if where is None:
            resolved = self.config.resolve(request.target, fmt=fmt, for_create=True)
            if isinstance(resolved, Failure):
                return resolved
            where = resolved.value
        before = recorded.get(str(where.resolve()))
        before = before if before is not None and before.client == fmt.name else None
        delegated = request.delegated_via is not None
        kept: Mode | None = before.mode if before is not None else None
        mode: Mode = request.mode or ("bridge" if request.bridge or delegated else kept or fmt.default_mode)
        secret_mode = request.secret_mode or (before.secret_mode if before is not None else SecretMode.INLINE)
        if mode == "helper" and not fmt.runs_headers_helper:
            return Failure(
                f"--mode helper is for Claude Code only: {fmt.label} cannot run a command for its headers",
                ErrorCode.INVALID_PARAMS,
                f"`chctl add {request.name} --client {client} --mode bridge` (no secret in the file), "
                "or `--mode header`",
            )
        if plan.url is None:
            if request.bridge or request.mode in ("bridge", "helper"):
                return Failure(
                    f"{request.name} is a local server: it needs no {request.mode or 'bridge'}",
                    ErrorCode.INVALID_PARAMS,
                    f"add it without --{'mode' if request.mode else 'bridge'}",
                )
            mode = "header"  # a local entry: nothing to carry, nothing to refresh
        secret_headers = plan.credential.extra_headers if plan.credential is not None else None
        if mode != "bridge" and secret_headers:
            return Failure(
                f"{request.name} has more than one secret header: only the bridge carries them (the {mode} "
                f"entry of {fmt.label} holds one secret, the key's)",
                ErrorCode.INVALID_PARAMS,
                f"add `--bridge` (or `--mode bridge`) to the same `chctl add` for --client {client}",
            )
        in_a_file = mode == "header" and secret_mode is SecretMode.FILE
        reference = fmt.secret_file_reference(self.tokens.secret_file(request.name))
        if in_a_file and plan.auth_type is not MCPAuthType.NONE and reference is None:
            return Failure(
                f"{fmt.label} cannot read a header from a file",
                ErrorCode.INVALID_PARAMS,
                f"`chctl add {request.name} --client {client} --bridge` (no secret in the file), "
                "or `--secret-mode inline`",
            )
        if not where.exists() and not creates_missing(fmt, request.target):
            return _missing_config(request, fmt, where)
        if where.exists():
            readable = self.config.read(where, fmt)  # a file we cannot parse is never written
            if isinstance(readable, Failure):
                return readable
        # Not yet made: resolved once it is.
        return Success(Target(fmt, where.resolve() if where.exists() else where, mode, secret_mode, before))

    def _entry(self, fmt: ConfigFormat, name: str, plan: Planned, mode: Mode, *, managed: bool) -> dict[str, Any]:
        if plan.url is None:
            return fmt.local_entry(plan.command or [], plan.environment)
        if mode == "bridge":
            return fmt.bridge_entry(bridge_command(name))
        if mode == "helper":
            return fmt.helper_entry(plan.url, dict(plan.headers), helper_command(name))
        return fmt.remote_entry(plan.url, dict(plan.headers), managed)  # the publisher adds the credential's

    def remove(self, name: str, target: ConfigTarget, client: str = DEFAULT_CLIENT) -> Result[Path]:
        """Remove `name` from `client`'s config; the path it was removed from."""
        found = self._config_of(target, client)
        if isinstance(found, Failure):
            return found
        fmt, path = found.value
        removed = self.config.remove_entry(path, name, fmt)
        if isinstance(removed, Failure):
            return removed
        self.bindings.unbind(name, path.resolve())
        self.publisher.clear(name, str(path.resolve()))
        if not removed.value:
            entries = self.config.entries(path, fmt)
            close = close_names(name, entries.value if isinstance(entries, Success) else ())
            guess = f"did you mean {' or '.join(f'`{n}`' for n in close)}? " if close else ""
            return Failure(
                f"{path} has no {fmt.where(name)} entry", ErrorCode.NOT_FOUND, guess + "`chctl list` shows its servers"
            )
        log.info("server_removed", server=name, path=str(path), client=client)
        return Success(path)

    def server_url(self, name: str, *, login: bool = False) -> Result[str]:
        """The URL recorded for `name` (with its credential, else by `chctl add`), else the registry's. Never
        what a config says now: a config is input, not a destination (`recorded_urls`). `login`: for a new
        login, which records its own URL (an older credential without one does not stand in its way)."""
        known = self.known(name)
        recorded = recorded_urls.recorded_url(
            name, self.config, self.tokens, self.bindings, known.url if known is not None else None, login=login
        )
        if isinstance(recorded, Success) and has_user_info(recorded.value):  # recorded before the gate refused it
            return Failure(
                f"{name}'s recorded URL holds a user name or password, and chctl never sends one in a URL",
                ErrorCode.INVALID_PARAMS,
                f"record its URL without `user:password@`: `chctl add {name} --url https://HOST/PATH`",
            )
        if recorded is not None:
            return recorded
        if not self.names.is_known(name):
            return self._unknown(name)
        return Failure(f"{name} is not a remote server", ErrorCode.INVALID_PARAMS)

    def expects_login(self, name: str) -> bool:
        """Whether `name` uses OAuth: the registry says so, `chctl add` recorded it (the server asked for a
        login), or, for a binding from before that was recorded, a bound entry hands its header to us
        (`"oauth": false`) although no API key is stored for it."""
        known = self.known(name)
        if known is not None and known.auth_type is MCPAuthType.OAUTH:
            return True
        bindings = self.bindings.for_server(name)
        recorded = recorded_auth(bindings)
        if recorded is not None or all(b.auth is not None for b in bindings):
            return recorded is MCPAuthType.OAUTH
        for binding in bindings:
            fmt = get_format(binding.client)
            entries = self.config.entries(Path(binding.path), fmt)
            entry = entries.value.get(name) if isinstance(entries, Success) else None
            if isinstance(entry, dict) and fmt.declines_own_oauth(entry):
                stored = self.tokens.load(name)
                return stored is None or stored.kind == "oauth"
        return False

    def bound_servers(self) -> list[str]:
        return sorted(name for name, items in self.bindings.load().items() if items)

    def validate_config(self, name: str, target: ConfigTarget, client: str = DEFAULT_CLIENT) -> Result[bool]:
        configured = self.list_configured(target, client)
        if isinstance(configured, Failure):
            return configured
        path, entries = configured.value
        fmt = get_format(client)
        if name not in entries:
            return Failure(f"{path} has no {fmt.where(name)} entry", ErrorCode.NOT_FOUND, f"run `chctl add {name}`")
        problems = fmt.schema_problems(name, entries[name])
        if problems:
            return Failure("; ".join(problems), ErrorCode.CONFIG_INVALID, f"run `chctl add {name}` to rewrite it")
        return Success(True)

    # --- helpers --------------------------------------------------------------------------------------

    def _unknown(self, name: str) -> Failure:
        unknown = unknown_server(name, self.names.yours(), self.registry)
        hint = f"{unknown.hint}; a server of your own: `chctl add {name} --url URL`"
        return Failure(f"{unknown.error}: not in the registry", unknown.code, hint)

    def _plan_entry(self, request: AddRequest) -> Result[Planned]:
        """The server to add (URL or command), its auth type, and a new API-key credential if one was given."""
        if request.delegated_via is not None:
            return _planned_through_laptop(request, request.delegated_via)
        known = self.known(request.name)
        recorded = self._recorded_url(request)
        if isinstance(recorded, Failure):
            return recorded
        if known is None and request.url is None and request.command is None and recorded is None:
            return self._unknown(request.name)

        if request.command is not None or (
            known is not None and known.server_type is ServerType.LOCAL and request.url is None
        ):
            command = request.command or (known.command if known else None)
            if not command:
                return Failure(
                    "a local server needs a command",
                    ErrorCode.INVALID_PARAMS,
                    f'`chctl add {request.name} --command "CMD ARGS"`',
                )
            return Success(Planned(MCPAuthType.NONE, command=command, environment=dict(request.environment)))

        bad_header = _header_problem(request)
        if bad_header is not None:
            return bad_header
        url = request.url or recorded or (known.url if known else None)
        bad_url = url_problem(url, substitutions(), carries_secret=False) if url else "is missing"
        if bad_url is not None or url is None:
            hint = f"`chctl add {request.name} --url https://host/path`"
            if bad_url == USER_INFO_PROBLEM:
                hint += " without `user:password@`, and a key with --api-key-env VAR (or --header K=V)"
            return Failure(f"the server's URL {bad_url}", ErrorCode.INVALID_PARAMS, hint)
        stored = self.tokens.load(request.name)
        elsewhere = recorded_urls.belongs_elsewhere(request.name, stored, url) if request.api_key is None else None
        if elsewhere is not None:
            return elsewhere
        auth_type, described = self._auth_type(request, known, stored, url)
        credential = None
        if auth_type is MCPAuthType.API_KEY:
            made = _key_credential(request, known, stored, url)
            if isinstance(made, Failure):
                return made
            credential = made.value
        headers = dict(request.headers)
        if not headers and request.url is None and recorded is not None:  # added again: the static headers stay
            headers = recorded_headers(recorded, self.bindings.for_server(request.name))
        ask = not described  # a URL of the user's that nothing describes: ask the server before writing
        return Success(Planned(auth_type, url=url, headers=headers, credential=credential, ask_server=ask))

    def _auth_type(
        self, request: AddRequest, known: MCPServer | None, stored: Credential | None, url: str
    ) -> tuple[MCPAuthType, bool]:
        """How the server at `url` authenticates, and whether anything says so: a key given (or a key header,
        which needs its key), the stored key kept, what an MCP registry's entry says, the curated list, a login
        stored for it, or what `add` recorded."""
        if request.oauth:  # a login without a person is set up next
            return MCPAuthType.OAUTH, True
        kept_key = request.url is None and stored is not None and stored.kind == "api_key"
        if request.api_key is not None or request.key_header is not None or kept_key:
            return MCPAuthType.API_KEY, True
        if request.auth_type is not None:
            return request.auth_type, True
        if known is not None and request.url is None and url == known.url:
            return known.auth_type, True
        if stored is not None and stored.kind == "oauth" and stored.server_url == url:
            return MCPAuthType.OAUTH, True
        recorded = recorded_auth(self.bindings.for_server(request.name), url)
        return (recorded, True) if recorded in (MCPAuthType.OAUTH, MCPAuthType.API_KEY) else (MCPAuthType.NONE, False)

    def _recorded_url(self, request: AddRequest) -> str | Failure | None:
        """The URL recorded for a server added again without --url (or --command), e.g. to switch its mode."""
        known = self.known(request.name)
        if request.url or request.command or (known is not None and known.server_type is ServerType.LOCAL):
            return None
        recorded = self.server_url(request.name)
        if isinstance(recorded, Failure):
            return None if recorded.code is ErrorCode.NOT_FOUND else recorded  # nothing recorded: unknown
        return recorded.value


def _planned_through_laptop(request: AddRequest, via: str) -> Result[Planned]:
    """A server the laptop's daemon carries (`via`): a bridge entry only, since no token may land on this machine."""
    if request.mode == "header" or request.api_key is not None or request.headers:
        return Failure(
            f"{request.name} is used through the laptop's daemon: no header or key can be written here",
            ErrorCode.INVALID_PARAMS,
            f"drop --mode header / -k / --header: `chctl add {request.name}` writes a bridge entry",
        )
    return Success(Planned(MCPAuthType.NONE, url=via))


def _missing_config(request: AddRequest, fmt: ConfigFormat, where: Path) -> Failure:
    """No config at `where` and `chctl add` does not create it: the `chctl init` that does."""
    target = request.target
    here = target.project is None and not target.global_  # the nearest: none up to the git root
    hint = f"`{init_command(target, fmt)}` creates it" + (
        f", or `chctl add {request.name} --global` writes your user-level one" if here else ""
    )
    return Failure(f"no {fmt.label} config at {where}", ErrorCode.CONFIG_MISSING, hint)


def recorded_auth(bindings: list[Binding], url: str | None = None) -> MCPAuthType | None:
    """How the server authenticates as `chctl add` recorded it (for `url` only, when given): a login or a key
    wins over none; None when nothing was recorded."""
    found = {b.auth for b in bindings if b.auth is not None and (url is None or b.url == url)}
    for auth in (MCPAuthType.OAUTH, MCPAuthType.API_KEY, MCPAuthType.NONE):
        if auth in found:
            return auth
    return None


def _changes(plan: Planned, stored: Credential | None, targets: list[Target]) -> tuple[str, ...]:
    """What an add changes of what was recorded for the server, one short line each (`chctl add` prints them)."""
    changes: list[str] = []
    key = plan.credential
    old_key = stored if stored is not None and stored.kind == "api_key" else None
    if key is not None and old_key is None:
        changes.append("API key stored")
    elif key is not None and old_key is not None:
        if key.api_key != old_key.api_key:
            changes.append("API key replaced")
        if _key_header(key) != _key_header(old_key):
            changes.append(f"key header: {_key_header(old_key)} → {_key_header(key)}")
    if key is not None and key.extra_headers != (old_key.extra_headers if old_key is not None else None):
        changes.append(f"secret headers: {', '.join(sorted(key.extra_headers or {})) or 'none'}")
    urls = {t.before.url for t in targets if t.before is not None and t.before.url} or (
        {stored.server_url} if stored is not None and stored.server_url else set()
    )
    if plan.url is not None and urls and plan.url not in urls:
        was = ", ".join(describe_url(u) for u in sorted(urls))
        changes.append(f"URL: {was} → {describe_url(plan.url)}")
    for target in targets:
        before = target.before
        if before is None:
            continue
        if before.mode != target.mode:
            changes.append(f"mode: {before.mode} → {target.mode} ({target.path})")
        if before.secret_mode is not target.secret_mode and target.mode == "header":
            changes.append(f"secret mode: {before.secret_mode.value} → {target.secret_mode.value} ({target.path})")
        if (before.headers or {}) != plan.headers and plan.url is not None:
            changes.append(f"static headers: {', '.join(sorted(plan.headers)) or 'none'} ({target.path})")
        if before.auth is not None and before.auth is not plan.auth_type:
            changes.append(f"auth: {before.auth.value} → {plan.auth_type.value} ({target.path})")
    return tuple(dict.fromkeys(changes))


def _key_credential(
    request: AddRequest, known: MCPServer | None, stored: Credential | None, url: str
) -> Result[Credential]:
    """The API key to store for `url`: the new one (its header, scheme and secret headers as given), else the
    stored one with what it had."""
    return api_key_credential(
        request.name,
        url,
        new_key=request.api_key,
        key_header=request.key_header,
        registry_header=known.api_key_header if known else None,
        stored=stored,
        scheme=request.key_scheme,
        extra_headers=request.secret_headers or None,
    )


def _key_header(credential: Credential) -> str:
    """`Authorization: Bearer` or `X-API-Key`: where a key goes, as `chctl add` says it."""
    scheme = credential.header_scheme
    return f"{credential.header_name}: {scheme}" if scheme else credential.header_name


def _header_problem(request: AddRequest) -> Failure | None:
    """A `--header` that a client would read as config syntax or that would break its request."""
    for header, value in request.headers.items():
        problem = header_value_problem(value, substitutions())
        if problem is not None:
            return Failure(
                f"header {header!r} {problem}", ErrorCode.INVALID_PARAMS, "nothing was written; check the value"
            )
    for name in request.headers:
        problem = static_header_problem(name)
        if problem is not None:
            return Failure(f"{name!r} {problem}", ErrorCode.INVALID_PARAMS, "nothing was written")
    for name in [request.key_header] if request.key_header else []:
        problem = header_name_problem(name)
        if problem is not None:
            return Failure(f"{name!r} {problem}", ErrorCode.INVALID_PARAMS, "nothing was written")
    return None
