"""MCPService: the server operations — the registry, adding and removing servers in agents' configs, their URLs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from context_harness.config.format import CLIENTS, DEFAULT_CLIENT, ConfigFormat, get_format, substitutions
from context_harness.primitives.mcp import MCPAuthType, MCPServer, Mode, SecretMode, ServerType
from context_harness.primitives.names import SERVER_NAME_HINT, valid_server_name
from context_harness.primitives.oauth import Credential
from context_harness.primitives.outside_values import header_name_problem, header_value_problem, url_problem
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.services import recorded_urls
from context_harness.services.agent_commands import bridge_command, helper_command
from context_harness.services.api_keys import api_key_credential
from context_harness.services.blocking_io import run_config_io
from context_harness.services.config_service import ConfigService, ConfigTarget, init_command
from context_harness.services.local_commands import environment_sha256
from context_harness.services.publisher import Publisher
from context_harness.services.registry import close_names, load_registry
from context_harness.services.server_names import ServerNames, unknown_server
from context_harness.services.server_state import ServerStates
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
    command: list[str] | None = None
    environment: dict[str, str] = field(default_factory=dict)
    secret_mode: SecretMode = SecretMode.INLINE
    bridge: bool = False  # the entry runs `chctl bridge NAME`; the daemon carries the traffic
    mode: Mode | None = None  # header, bridge or helper; None: `bridge` if set, else each client's default
    clients: tuple[str, ...] = (DEFAULT_CLIENT,)
    # On a remote machine: the forwarded socket of the laptop's daemon, which holds the credential
    delegated_via: str | None = None


@dataclass(frozen=True, slots=True)
class Written:
    """One client's config that now carries the server."""

    client: str
    path: Path
    entry: dict[str, Any]
    mode: Mode


@dataclass(frozen=True, slots=True)
class AddOutcome:
    name: str
    path: Path  # the first client's (the only one, usually)
    entry: dict[str, Any]
    auth_type: MCPAuthType
    needs_auth: bool  # an OAuth server with no token yet: run `chctl auth NAME`
    written: tuple[Written, ...] = ()


@dataclass(frozen=True, slots=True)
class Planned:
    """What to add, before any client's shape: a remote URL (plus static headers) or a local command."""

    auth_type: MCPAuthType
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    command: list[str] | None = None
    environment: dict[str, str] = field(default_factory=dict)
    credential: Credential | None = None  # a new API key to store


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
    ) -> None:
        self.config = config
        self.tokens = tokens
        self.bindings = bindings
        self.publisher = publisher
        self.states = states  # the change channel: its publisher writes the header of an added server
        self.user_registry = user_registry
        self.registry: dict[str, MCPServer] = {}
        self.registry_warnings: list[str] = []
        self.names = ServerNames(lambda: self.registry, bindings, tokens)
        self.reload_registry()

    def reload_registry(self) -> None:
        self.registry, self.registry_warnings = load_registry(self.user_registry)
        for warning in self.registry_warnings:
            log.warning("registry_entry_skipped", problem=warning)

    def known(self, name: str) -> MCPServer | None:
        """`name`'s registry entry (built in, or the user's registry.json), or None."""
        return self.registry.get(name)

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
        cannot write is remembered there (status shows it) and written at the next check."""
        timeout_s = self.publisher.settings.io_timeout_s
        added = await run_config_io(lambda: self.write_entries(request), timeout_s, "mcp.add")
        if isinstance(added, Success):
            await self.states.changed(request.name, credential=True)
        return added

    def write_entries(self, request: AddRequest) -> Result[AddOutcome]:
        """Bind and write the entries `request` asks for, with every header but the credential's."""
        name = request.name
        if not valid_server_name(name):
            return Failure(
                f"invalid server name {name!r}",
                ErrorCode.INVALID_PARAMS,
                SERVER_NAME_HINT,
            )
        planned = self._plan_entry(request)
        if isinstance(planned, Failure):
            return planned
        plan = planned.value

        # Every client's file is found and checked before any is written: one bad target changes nothing.
        targets: list[tuple[ConfigFormat, Path, Mode]] = []
        for client in dict.fromkeys(request.clients):
            target = self._add_target(request, plan, client)
            if isinstance(target, Failure):
                return target
            targets.append(target.value)

        # The key is stored before any config mentions it: a config never points at a secret we do not have.
        credential = plan.credential
        if credential is not None:
            self.tokens.save(credential)
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
        for fmt, config_path, mode in targets:
            one = self._write_entry(request, plan, fmt, config_path, mode, managed=managed)
            if isinstance(one, Failure):
                return one
            written.append(one.value)
        needs_auth = plan.auth_type is MCPAuthType.OAUTH and (credential is None or not credential.secret)
        first = written[0]
        return Success(AddOutcome(name, first.path, first.entry, plan.auth_type, needs_auth, tuple(written)))

    def _write_entry(
        self, request: AddRequest, plan: Planned, fmt: ConfigFormat, config_path: Path, mode: Mode, *, managed: bool
    ) -> Result[Written]:
        """Bind one client's config and write the entry into it (creating the file where the client allows)."""
        name = request.name
        if creates_missing(fmt, request.target):
            created = self.config.create(config_path, fmt)
            if isinstance(created, Failure):
                return created
            config_path = config_path.resolve()  # bindings hold resolved paths
        local = plan.url is None  # what `chctl check` may start is what the user added, nothing else
        binding = Binding(
            path=str(config_path),
            client=fmt.name,
            secret_mode=request.secret_mode,
            mode=mode,
            url=plan.url,  # recorded in every mode: a header goes only where the entry still points here
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
        return Success(Written(fmt.name, config_path, entry, mode))

    def _add_target(self, request: AddRequest, plan: Planned, client: str) -> Result[tuple[ConfigFormat, Path, Mode]]:
        """Where `client` keeps the server, and in which mode; a Failure says why it cannot."""
        found = client_format(client)
        if isinstance(found, Failure):
            return found
        fmt = found.value
        delegated = request.delegated_via is not None
        mode: Mode = request.mode or ("bridge" if request.bridge or delegated else fmt.default_mode)
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
        if mode == "bridge" and request.headers:
            return Failure(
                "--header cannot be combined with --bridge yet",
                ErrorCode.INVALID_PARAMS,
                f"drop --header: `chctl add {request.name} --bridge`",
            )
        in_a_file = mode == "header" and request.secret_mode is SecretMode.FILE
        reference = fmt.secret_file_reference(self.tokens.secret_file(request.name))
        if in_a_file and plan.auth_type is not MCPAuthType.NONE and reference is None:
            return Failure(
                f"{fmt.label} cannot read a header from a file",
                ErrorCode.INVALID_PARAMS,
                f"`chctl add {request.name} --client {client} --bridge` (no secret in the file), "
                "or `--secret-mode inline`",
            )
        path = self.config.resolve(request.target, for_create=True, fmt=fmt)
        if isinstance(path, Failure):
            return path
        if not path.value.exists() and not creates_missing(fmt, request.target):
            target = request.target
            here = target.project is None and not target.global_  # the nearest: none up to the git root
            hint = f"`{init_command(target, fmt)}` creates it" + (
                f", or `chctl add {request.name} --global` writes your user-level one" if here else ""
            )
            return Failure(f"no {fmt.label} config at {path.value}", ErrorCode.CONFIG_MISSING, hint)
        if path.value.exists():
            readable = self.config.read(path.value, fmt)  # a file we cannot parse is never written
            if isinstance(readable, Failure):
                return readable
        return Success((fmt, path.value.resolve() if path.value.exists() else path.value, mode))  # not yet made

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
        if recorded is not None:
            return recorded
        if not self.names.is_known(name):
            return self._unknown(name)
        return Failure(f"{name} is not a remote server", ErrorCode.INVALID_PARAMS)

    def expects_login(self, name: str) -> bool:
        """Whether `name` uses OAuth: the registry says so, or a bound entry hands its header to us
        (`"oauth": false`, written at login) although no API key is stored for it."""
        known = self.known(name)
        if known is not None and known.auth_type is MCPAuthType.OAUTH:
            return True
        for binding in self.bindings.for_server(name):
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
            return Failure(
                f"the server's URL {bad_url}",
                ErrorCode.INVALID_PARAMS,
                f"`chctl add {request.name} --url https://host/path`",
            )
        stored = self.tokens.load(request.name)
        elsewhere = recorded_urls.belongs_elsewhere(request.name, stored, url) if request.api_key is None else None
        if elsewhere is not None:
            return elsewhere
        auth_type = MCPAuthType.NONE
        if known is not None and request.url is None and url == known.url:
            auth_type = known.auth_type
        if request.api_key is not None or (request.url is None and stored is not None and stored.kind == "api_key"):
            auth_type = MCPAuthType.API_KEY  # a new key, or the stored one kept for the recorded URL

        credential = None
        if auth_type is MCPAuthType.API_KEY:
            made = api_key_credential(
                request.name,
                url,
                new_key=request.api_key,
                key_header=request.key_header,
                registry_header=known.api_key_header if known else None,
                stored=stored,
            )
            if isinstance(made, Failure):
                return made
            credential = made.value
        return Success(Planned(auth_type, url=url, headers=dict(request.headers), credential=credential))

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


def _header_problem(request: AddRequest) -> Failure | None:
    """A `--header` that a client would read as config syntax or that would break its request."""
    for header, value in request.headers.items():
        problem = header_value_problem(value, substitutions())
        if problem is not None:
            return Failure(
                f"header {header!r} {problem}", ErrorCode.INVALID_PARAMS, "nothing was written; check the value"
            )
    for name in [*request.headers, *([request.key_header] if request.key_header else [])]:
        problem = header_name_problem(name)
        if problem is not None:
            return Failure(f"{name!r} {problem}", ErrorCode.INVALID_PARAMS, "nothing was written")
    return None
