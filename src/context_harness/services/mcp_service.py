"""MCPService: the seed's server operations — registry, add/remove in opencode's config, auth headers."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from context_harness.config import opencode
from context_harness.oauth.discovery import is_secure_endpoint
from context_harness.oauth.http import describe_url
from context_harness.primitives.header_text import header_name_problem, header_value_problem
from context_harness.primitives.mcp import MCPAuthType, MCPServer, MCPServerConfig, SecretMode, ServerType
from context_harness.primitives.names import SERVER_NAME_HINT, valid_server_name
from context_harness.primitives.oauth import Credential, TokenState
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.services.config_service import ConfigService, ConfigTarget
from context_harness.services.registry import close_names, load_registry
from context_harness.stores.bindings import Binding, BindingStore
from context_harness.stores.crash_points import AFTER_BINDING_WRITE, crash_point
from context_harness.stores.token_store import TokenStore

log = structlog.get_logger(__name__)

BEARER = "Bearer"


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


@dataclass(frozen=True, slots=True)
class AddOutcome:
    name: str
    path: Path
    entry: dict[str, Any]
    auth_type: MCPAuthType
    needs_auth: bool  # an OAuth server with no token yet: run `chctl auth NAME`


@dataclass(slots=True)
class PublishReport:
    """Which bound configs got the current header, and why the others did not."""

    written: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def bridge_command(name: str) -> list[str]:
    """The command a bridged entry runs: this installation's `chctl`, by absolute path, so it works whatever
    the agent's PATH is. Without a `chctl` script beside our interpreter, the interpreter runs the module
    (with -P: the agent's working directory must not shadow our modules)."""
    chctl = Path(sys.executable).parent / "chctl"
    if chctl.is_file() and os.access(chctl, os.X_OK):
        return [str(chctl), "bridge", name]
    return [sys.executable, "-P", "-m", "context_harness.client.chctl", "bridge", name]


def header_for(key_header: str | None) -> tuple[str, str | None]:
    """(header name, scheme) for an API key: `Authorization` means `Authorization: Bearer KEY`."""
    if key_header is None or key_header.lower() == "authorization":
        return "Authorization", BEARER
    return key_header, None


class MCPService:
    def __init__(self, config: ConfigService, tokens: TokenStore, bindings: BindingStore, user_registry: Path) -> None:
        self.config = config
        self.tokens = tokens
        self.bindings = bindings
        self.user_registry = user_registry
        self.registry: dict[str, MCPServer] = {}
        # Per server: bound configs whose last header write failed, and why (shown by `chctl status`).
        self.publish_errors: dict[str, dict[str, str]] = {}
        self.registry_warnings: list[str] = []
        self.reload_registry()

    def reload_registry(self) -> None:
        self.registry, self.registry_warnings = load_registry(self.user_registry)
        for warning in self.registry_warnings:
            log.warning("registry_entry_skipped", problem=warning)

    # --- the seed's API --------------------------------------------------------------------------------

    def list_available(self) -> Result[list[MCPServer]]:
        return Success(sorted(self.registry.values(), key=lambda s: s.name))

    def get_server_info(self, name: str) -> Result[MCPServer]:
        server = self.registry.get(name)
        if server is None:
            return self._unknown(name)
        return Success(server)

    def requires_auth(self, name: str) -> Result[MCPAuthType]:
        info = self.get_server_info(name)
        return info if isinstance(info, Failure) else Success(info.value.auth_type)

    def list_configured(self, target: ConfigTarget) -> Result[tuple[Path, dict[str, Any]]]:
        path = self.config.resolve(target)
        if isinstance(path, Failure):
            return path
        entries = self.config.entries(path.value)
        return entries if isinstance(entries, Failure) else Success((path.value, entries.value))

    def add(self, request: AddRequest) -> Result[AddOutcome]:
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
        entry, auth_type, credential = planned.value
        url = entry.get("url")
        if request.bridge:
            if url is None:
                return Failure(
                    f"{name} is a local server: it needs no bridge", ErrorCode.INVALID_PARAMS, "add it without --bridge"
                )
            if request.headers:
                return Failure(
                    "--header cannot be combined with --bridge yet", ErrorCode.INVALID_PARAMS, "drop --header"
                )
            entry = MCPServerConfig(type=ServerType.LOCAL, command=bridge_command(name)).to_opencode()

        path = self.config.resolve(request.target, for_create=True)
        if isinstance(path, Failure):
            return path
        if not path.value.exists():
            return Failure(
                f"no opencode config at {path.value}", ErrorCode.CONFIG_MISSING, "run `chctl init` to create one"
            )
        config_path = path.value.resolve()

        # The key is stored before any config mentions it: a config never points at a secret we do not have.
        if credential is not None:
            self.tokens.save(credential)
        else:
            # A login already made (also for a custom --url server) goes into the new entry at once.
            remote = url is not None  # (a bridged entry is local, but its server is remote)
            stored = self.tokens.load(name) if remote and auth_type is not MCPAuthType.API_KEY else None
            credential = stored if stored is not None and stored.kind == "oauth" else None
        binding = Binding(
            path=str(config_path),
            secret_mode=request.secret_mode,
            mode="bridge" if request.bridge else "header",
            url=url if request.bridge else None,
        )
        if credential is not None and credential.secret and not request.bridge:
            entry.setdefault("headers", {})[credential.header_name] = self._header_value(credential, binding)
            entry["oauth"] = False
            if request.secret_mode is SecretMode.FILE:
                self.tokens.write_secret_file(name, credential.secret)
        if "oauth" in entry:  # keep opencode's usual order: headers, then oauth
            entry["oauth"] = entry.pop("oauth")

        # Binding first: a crash before the entry is written leaves a binding without an entry, which the
        # next header write (at start at the latest) drops; the other order would leave an entry whose
        # header nobody keeps current.
        self.bindings.bind(name, binding)
        crash_point(AFTER_BINDING_WRITE)
        inline_secret = (
            request.secret_mode is SecretMode.INLINE
            and not request.bridge
            and bool(credential is not None and credential.secret)
        )
        written = self.config.put_entry(config_path, name, entry, private=inline_secret)
        if isinstance(written, Failure):
            self.bindings.unbind(name, config_path)
            return written
        log.info("server_added", server=name, path=str(config_path), auth_type=auth_type.value)
        needs_auth = auth_type is MCPAuthType.OAUTH and (credential is None or not credential.secret)
        return Success(AddOutcome(name, config_path, entry, auth_type, needs_auth))

    def remove(self, name: str, target: ConfigTarget) -> Result[bool]:
        path = self.config.resolve(target)
        if isinstance(path, Failure):
            return path
        removed = self.config.remove_entry(path.value, name)
        if isinstance(removed, Failure):
            return removed
        self.bindings.unbind(name, path.value.resolve())
        if not removed.value:
            return Failure(
                f"{path.value} has no mcp.{name} entry", ErrorCode.NOT_FOUND, "see `chctl list` for configured servers"
            )
        log.info("server_removed", server=name, path=str(path.value))
        return Success(True)

    def update_auth(self, name: str) -> Result[PublishReport]:
        """Write the stored credential's current header into every config bound to `name`."""
        credential = self.tokens.load(name)
        if credential is None or not credential.secret:
            return Failure(f"no credential stored for {name}", ErrorCode.AUTH_REQUIRED, f"run `chctl auth {name}`")
        report = PublishReport()
        bindings = self.prepare_publish(credential)
        for binding in bindings:
            self.add_to_report(report, name, binding.path, self.write_header(credential, binding))
        return Success(report)

    def prepare_publish(self, credential: Credential) -> list[Binding]:
        """The bindings to write `credential`'s header into; the `{file:}` secret file is brought up to date."""
        bindings = [b for b in self.bindings.for_server(credential.name) if b.mode == "header"]  # a bridge: none
        secret = credential.secret or ""
        if (
            any(b.secret_mode is SecretMode.FILE for b in bindings)
            and self.tokens.read_secret_file(credential.name) != secret
        ):
            self.tokens.write_secret_file(credential.name, secret)
        return bindings

    def write_header(self, credential: Credential, binding: Binding) -> Result[bool]:
        """Write the header into one bound config: True when written (or already right), False when the
        binding was dropped because the config no longer has the entry."""
        name = credential.name
        written = self.config.set_header(
            Path(binding.path),
            name,
            credential.header_name,
            self._header_value(credential, binding),
            private=binding.secret_mode is SecretMode.INLINE,
        )
        if isinstance(written, Failure) and written.code is ErrorCode.NOT_FOUND:
            # The entry is gone (removed by hand, or `chctl add` crashed before writing it): so is the binding.
            self.bindings.unbind(name, Path(binding.path))
            log.info("binding_dropped", server=name, path=binding.path, reason="the config has no entry for it")
            return Success(False)
        return written if isinstance(written, Failure) else Success(True)

    def add_to_report(self, report: PublishReport, name: str, path: str, outcome: Result[bool]) -> None:
        if isinstance(outcome, Success):
            if outcome.value:
                report.written.append(path)
            return
        report.failed[path] = outcome.error
        # Retried every wall-clock check: say it once, not every 30 s.
        again = self.publish_errors.get(name, {}).get(path) == outcome.error
        (log.debug if again else log.warning)(
            "config_write_failed", server=name, path=path, code=outcome.code.value, error=outcome.error
        )

    def expects_login(self, name: str) -> bool:
        """Whether `name` uses OAuth: the registry says so, or a bound entry hands its header to us
        (`"oauth": false`, written at login) although no API key is stored for it."""
        known = self.registry.get(name)
        if known is not None and known.auth_type is MCPAuthType.OAUTH:
            return True
        for binding in self.bindings.for_server(name):
            entries = self.config.entries(Path(binding.path))
            entry = entries.value.get(name) if isinstance(entries, Success) else None
            if isinstance(entry, dict) and entry.get("oauth") is False:
                stored = self.tokens.load(name)
                return stored is None or stored.kind == "oauth"
        return False

    def bound_servers(self) -> list[str]:
        return sorted(name for name, items in self.bindings.load().items() if items)

    def record_publish(self, name: str, report: PublishReport) -> None:
        if report.failed:
            self.publish_errors[name] = dict(report.failed)
        else:
            self.publish_errors.pop(name, None)

    def validate_config(self, name: str, target: ConfigTarget) -> Result[bool]:
        configured = self.list_configured(target)
        if isinstance(configured, Failure):
            return configured
        path, entries = configured.value
        if name not in entries:
            return Failure(f"{path} has no mcp.{name} entry", ErrorCode.NOT_FOUND, f"run `chctl add {name}`")
        problems = opencode.schema_problems(name, entries[name])
        if problems:
            return Failure("; ".join(problems), ErrorCode.CONFIG_INVALID, f"run `chctl add {name}` to rewrite it")
        return Success(True)

    # --- helpers --------------------------------------------------------------------------------------

    def _unknown(self, name: str) -> Failure:
        suggestions = close_names(name, self.registry)
        hint = f"did you mean: {', '.join(suggestions)}?" if suggestions else "see `chctl registry`"
        return Failure(
            f"unknown server {name!r}: not in the registry", ErrorCode.NOT_FOUND, hint + " (or pass --url / --command)"
        )

    def _plan_entry(self, request: AddRequest) -> Result[tuple[dict[str, Any], MCPAuthType, Credential | None]]:
        """The opencode entry to write, the server's auth type, and a new API-key credential if one was given."""
        known = self.registry.get(request.name)
        if known is None and request.url is None and request.command is None:
            return self._unknown(request.name)

        if request.command is not None or (
            known is not None and known.server_type is ServerType.LOCAL and request.url is None
        ):
            command = request.command or (known.command if known else None)
            if not command:
                return Failure("a local server needs a command", ErrorCode.INVALID_PARAMS, 'pass --command "CMD ARGS"')
            local = MCPServerConfig(type=ServerType.LOCAL, command=command, environment=request.environment or None)
            return Success((local.to_opencode(), MCPAuthType.NONE, None))

        bad_header = _header_problem(request)
        if bad_header is not None:
            return bad_header
        url = request.url or (known.url if known else None)
        if not url or not url.startswith(("http://", "https://")):
            return Failure(f"invalid url {url!r}", ErrorCode.INVALID_PARAMS, "pass --url http(s)://host/path")
        auth_type = known.auth_type if known is not None and request.url is None else MCPAuthType.NONE
        if request.api_key is not None:
            auth_type = MCPAuthType.API_KEY
        entry = MCPServerConfig(type=ServerType.REMOTE, url=url, headers=dict(request.headers) or None).to_opencode()

        credential = None
        if auth_type is MCPAuthType.API_KEY:
            key = request.api_key
            if key is None:
                stored = self.tokens.load(request.name)
                key = stored.api_key if stored is not None and stored.kind == "api_key" else None
            if not key:
                return Failure(
                    f"{request.name} needs an API key",
                    ErrorCode.AUTH_REQUIRED,
                    f"pass -k KEY or --api-key-env VAR (e.g. `chctl add {request.name} --api-key-env "
                    f"{request.name.upper().replace('-', '_')}_API_KEY`)",
                )
            if not is_secure_endpoint(url):
                return Failure(
                    f"refusing to send an API key to {describe_url(url)} in clear text",
                    ErrorCode.INVALID_PARAMS,
                    "use the server's https:// URL (plain http is accepted on loopback only)",
                )
            header_name, scheme = header_for(request.key_header or (known.api_key_header if known else None))
            credential = Credential(
                name=request.name,
                kind="api_key",
                state=TokenState.API_KEY,
                header_name=header_name,
                header_scheme=scheme,
                api_key=key,
            )
        if auth_type in (MCPAuthType.API_KEY, MCPAuthType.OAUTH):
            entry["oauth"] = False  # we manage this header: opencode must not start its own flow on a 401
        return Success((entry, auth_type, credential))

    def _header_value(self, credential: Credential, binding: Binding) -> str:
        if binding.secret_mode is SecretMode.FILE:
            secret = self.tokens.secret_reference(credential.name)
        else:
            secret = credential.secret or ""
        return f"{credential.header_scheme} {secret}" if credential.header_scheme else secret


def _header_problem(request: AddRequest) -> Failure | None:
    """An API key or `--header` that opencode would read as config syntax or that would break its request."""
    named = [(f"header {k!r}", v) for k, v in request.headers.items()]
    if request.api_key is not None:
        named.append(("the API key", request.api_key))
    for label, value in named:
        problem = header_value_problem(value)
        if problem is not None:
            return Failure(f"{label} {problem}", ErrorCode.INVALID_PARAMS, "nothing was written; check the value")
    for name in [*request.headers, *([request.key_header] if request.key_header else [])]:
        problem = header_name_problem(name)
        if problem is not None:
            return Failure(f"{name!r} {problem}", ErrorCode.INVALID_PARAMS, "nothing was written")
    return None
