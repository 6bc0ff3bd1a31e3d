"""`chctl doctor`: checks a person would otherwise do by hand, each with a plain verdict."""

from __future__ import annotations

import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from context_harness.config.format import DEFAULT_CLIENT, ConfigFormat, get_format
from context_harness.primitives.mcp import SecretMode
from context_harness.primitives.result import Failure
from context_harness.services import recorded_urls
from context_harness.services.config_service import ConfigService
from context_harness.services.status import ServerStatus
from context_harness.stores.bindings import BindingStore
from context_harness.stores.token_store import TokenStore

GIT_TIMEOUT_S = 5


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    level: Literal["ok", "warn", "error"]
    message: str
    hint: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mode_check(name: str, path: Path, expected: int) -> Check | None:
    if not path.exists():
        return None
    mode = path.stat().st_mode & 0o777
    if mode & ~expected:
        return Check(name, "error", f"{path} is {mode:o}, should be {expected:o}", f"chmod {expected:o} {path}")
    return Check(name, "ok", f"{path} is {mode:o}")


def permission_checks(home: Path, tokens: TokenStore) -> list[Check]:
    checks = [
        _mode_check("state_dir_mode", home, 0o700),
        _mode_check("tokens_dir_mode", tokens.tokens_dir, 0o700),
        _mode_check("secrets_dir_mode", tokens.secrets_dir, 0o700),
    ]
    for directory in (tokens.tokens_dir, tokens.secrets_dir):
        if directory.is_dir():
            checks += [_mode_check("secret_file_mode", p, 0o600) for p in sorted(directory.iterdir()) if p.is_file()]
    return [c for c in checks if c is not None]


# A repository's own config must not run commands in the daemon: `git ls-files` runs core.fsmonitor, and
# hooks or a pager could be next. Options given with -c override the repository's config.
GIT_SAFE_OPTIONS = (
    "-c", "core.fsmonitor=false",
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.pager=cat",
    "-c", "core.untrackedCache=false",
)  # fmt: skip


def is_tracked_by_git(path: Path) -> bool:
    try:
        done = subprocess.run(
            ["git", *GIT_SAFE_OPTIONS, "-C", str(path.parent), "ls-files", "--error-unmatch", path.name],
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def config_checks(config: ConfigService, bindings: BindingStore, tokens: TokenStore, extra: list[Path]) -> list[Check]:
    checks: list[Check] = []
    by_path: dict[str, list[tuple[str, SecretMode]]] = {}
    clients: dict[str, str] = {}  # path -> the client whose format it is
    for name, items in bindings.load().items():
        for binding in items:
            # A bridged entry holds no secret: count it as a `{file:}` one for the inline-secret check.
            mode = binding.secret_mode if binding.mode == "header" else SecretMode.FILE
            by_path.setdefault(binding.path, []).append((name, mode))
            clients[binding.path] = binding.client
    for path in extra:
        by_path.setdefault(str(path.resolve()), [])
    for path_str, servers in sorted(by_path.items()):
        path = Path(path_str)
        fmt = get_format(clients.get(path_str, DEFAULT_CLIENT))
        entries = config.entries(path, fmt)
        if isinstance(entries, Failure):
            checks.append(Check("config_parses", "error", entries.error, entries.hint))
            continue
        checks.append(Check("config_parses", "ok", f"{path} parses"))
        for name, entry in sorted(entries.value.items()):
            problems = fmt.schema_problems(name, entry)
            if problems:
                checks.append(
                    Check(
                        "entry_schema",
                        "error",
                        f"{fmt.label}: " + "; ".join(problems),
                        f"run `chctl add {name} --client {fmt.name}` again",
                    )
                )
        for name, _mode in servers:
            if name not in entries.value:
                checks.append(
                    Check(
                        "entry_present",
                        "warn",
                        f"{path} no longer has {fmt.where(name)}",
                        f"run `chctl add {name}` to restore it",
                    )
                )
        checks += _inline_secret_checks(path, fmt, servers, tokens)
    return checks


def _inline_secret_checks(
    path: Path, fmt: ConfigFormat, servers: list[tuple[str, SecretMode]], tokens: TokenStore
) -> list[Check]:
    """Warnings for a config that holds inline secrets where others can read them: the file's mode, git."""
    checks: list[Check] = []
    inline = [name for name, mode in servers if mode is SecretMode.INLINE and _has_secret(tokens, name)]
    readable = _group_or_other_readable(path)
    if inline and readable:
        checks.append(
            Check(
                "inline_secret_readable",
                "warn",
                f"{path} is readable by others ({readable}) and holds inline secrets for: {', '.join(sorted(inline))}",
                f"chmod 600 {path}, or re-add them with `chctl add NAME --secret-mode file`",
            )
        )
    if inline and is_tracked_by_git(path):
        checks.append(
            Check(
                "inline_secret_in_git",
                "warn",
                f"{path} is tracked by git and holds inline secrets for: {', '.join(sorted(inline))}",
                "re-add them with `chctl add NAME --secret-mode file` (or `--global`) so no secret gets committed"
                if fmt.name == DEFAULT_CLIENT
                else f"re-add them with `chctl add NAME --client {fmt.name} --mode bridge` so no secret gets committed",
            )
        )
    return checks


def _group_or_other_readable(path: Path) -> str | None:
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return None
    return f"mode {mode:o}" if mode & 0o044 else None


def _has_secret(tokens: TokenStore, name: str) -> bool:
    credential = tokens.load(name)
    return credential is not None and bool(credential.secret)


# --- servers added without auth that turn out to need it --------------------------------------------------

PROBE_TIMEOUT_S = 5.0


def probe_targets(config: ConfigService, bindings: BindingStore, tokens: TokenStore) -> list[str]:
    """Bound remote servers we hold no credential for, whose header entry sends no header of its own: a probe
    without credentials (`chctl check`'s) tells whether they need one after all. Reads configs: call it off
    the event loop."""
    targets = []
    for name, items in bindings.load().items():
        if tokens.load(name) is not None:
            continue
        for binding in items:
            if binding.mode != "header":
                continue
            fmt = get_format(binding.client)
            entries = config.entries(Path(binding.path), fmt)
            entry = entries.value.get(name) if not isinstance(entries, Failure) else None
            if isinstance(entry, dict) and fmt.entry_url(entry):
                if not fmt.entry_headers(entry):  # one with headers of its own is answered as its client is
                    targets.append(name)
                break
    return targets


def needs_auth_checks(names: list[str]) -> list[Check]:
    """The servers (of `probe_targets`) that a probe found answering 401 without credentials."""
    return [
        Check(
            "server_needs_auth",
            "warn",
            f"{name} answers 401 Unauthorized without credentials",
            f"run `chctl auth {name}` (OAuth) or `chctl add {name} -k KEY` (API key)",
        )
        for name in names
    ]


# --- every server's credential state ------------------------------------------------------------------------


def server_checks(servers: list[ServerStatus], now: float | None = None) -> list[Check]:
    """One check per server: each state a person may have to act on, and what to do; and one per config whose
    entry now points away from the URL recorded for the server (its message says how to mend it)."""
    now = time.time() if now is None else now
    checks = [_server_check(server, now) for server in servers]
    for server in servers:
        checks += [Check("config_url", "error", server.config_errors.get(p, p)) for p in server.url_changed]
        if server.url_unrecorded:
            unrecorded = recorded_urls.unrecorded(server.name)
            checks.append(Check("credential_url", "error", unrecorded.error, unrecorded.hint))
    return checks


def _server_check(server: ServerStatus, now: float) -> Check:
    name, state, error = server.name, server.state, server.last_error
    login = f"run `chctl auth {name}`"
    match state:
        case "pending_auth":
            return Check("server_state", "warn", f"{name}: not logged in yet" + _because(error), login)
        case "needs_reauth":
            return Check("server_state", "error", f"{name} needs a new login" + _because(error), login)
        case "retrying":
            return Check(
                "server_state",
                "warn",
                f"{name}: refresh failing, retrying" + _because(error),
                "the daemon keeps retrying with backoff; `chctl logs` has the details",
            )
        case "active" if server.expires_at and not server.has_refresh_token:
            minutes = max(0, round((server.expires_at - now) / 60))
            return Check(
                "server_state",
                "warn",
                f"{name}: no refresh token was issued; the token expires in {minutes} min, then a new login is due",
                f"{login} then (the daemon notifies you)",
            )
        case "api_key":
            return Check("server_state", "ok", f"{name}: API key stored")
        case "no_auth":
            return Check("server_state", "ok", f"{name}: needs no credential")
        case _:
            return Check("server_state", "ok", f"{name}: logged in, refreshed ahead of expiry")


def _because(error: str | None) -> str:
    return f" ({error})" if error else ""
