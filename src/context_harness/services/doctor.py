"""`chctl doctor`: checks a person would otherwise do by hand, each with a plain verdict."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from context_harness.config.format import DEFAULT_CLIENT, ConfigFormat, get_format
from context_harness.primitives.mcp import SecretMode
from context_harness.primitives.result import Failure
from context_harness.services import recorded_urls
from context_harness.services.config_service import ConfigService
from context_harness.services.status import ServerStatus, refusal_hint
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


def probe_targets(
    config: ConfigService, bindings: BindingStore, names: set[str]
) -> dict[str, tuple[str, dict[str, str]]]:
    """Of `names` (bound servers that hold no credential and, as far as we know, need none), where to ask each
    without credentials (its URL and the headers its entry sends) whether it needs one after all: a probe
    (`chctl check`'s) answering 401 means a login or a key is due (`server_checks` says so). Reads configs:
    call it off the event loop."""
    targets: dict[str, tuple[str, dict[str, str]]] = {}
    for name, items in bindings.load().items():
        if name not in names:
            continue
        for binding in items:
            if binding.mode != "header":  # a bridge or a helper entry holds no URL: the recorded one is asked
                if binding.url:
                    targets[name] = (binding.url, {})
                    break
                continue
            fmt = get_format(binding.client)
            entries = config.entries(Path(binding.path), fmt)
            entry = entries.value.get(name) if not isinstance(entries, Failure) else None
            url = fmt.entry_url(entry) if isinstance(entry, dict) else None
            if isinstance(entry, dict) and url:
                headers: dict[str, Any] = fmt.entry_headers(entry)
                # Headers with substitutions cannot be sent as written; such entries are managed elsewhere.
                if not any("{" in str(v) or "$" in str(v) for v in headers.values()):
                    targets[name] = (url, {str(k): str(v) for k, v in headers.items()})
                break
    return targets


# --- where the daemon's settings came from ---------------------------------------------------------------------

SOURCE_WORDS = {
    "environment": "the environment of the command that started the daemon",
    "daemon.env": "daemon.env",
}


def setting_checks(sources: Mapping[str, str], names: Sequence[str]) -> list[Check]:
    """One line per setting that is set, saying where from (never its value: a command may hold a secret), and
    one for those of `names` (the `CH_` settings) that have their defaults."""
    checks = [
        Check("setting_source", "ok", f"{name} is set by {SOURCE_WORDS.get(origin, origin)}")
        for name, origin in sorted(sources.items())
    ]
    defaults = [name for name in names if name not in sources]
    return [*checks, Check("setting_source", "ok", f"default: {', '.join(defaults)}" if defaults else "no defaults")]


# --- where secrets rest ------------------------------------------------------------------------------------


def secret_checks(
    summary: dict[str, Any], servers: list[ServerStatus], idps: Sequence[dict[str, Any]] = ()
) -> list[Check]:
    """The store new secrets go to (a warning when `auto` found no keychain, or the keychain fails), then one
    line per server and per identity provider (`idp.list`'s rows) saying every place its secret rests."""
    store = f"CH_SECRET_STORE={summary['setting']}"
    if summary["warning"]:
        checks = [Check("secret_store", "warn", f"secrets ({store}): {summary['warning']}", SECRET_STORE_HINT)]
    elif summary["in_use"] == "keyring":
        checks = [Check("secret_store", "ok", f"secrets rest in the keychain ({summary['keychain']}, {store})")]
    else:
        checks = [Check("secret_store", "ok", f"secrets rest in token files ({store})")]
    owners = [(server.name, server.secret_at) for server in servers]
    owners += [(f"identity provider {idp['name']}", idp["secret_at"]) for idp in idps]
    for owner, places in owners:
        if not places:
            continue
        problems = [p["problem"] for p in places if p.get("problem")]
        where = secret_places(places)
        if problems:
            message = f"{owner}: secret in {where}: " + "; ".join(problems)
            checks.append(Check("secret_at", "warn", message, SECRET_STORE_HINT))
        else:
            checks.append(Check("secret_at", "ok", f"{owner}: secret in {where}"))
    return checks


SECRET_STORE_HINT = (
    "unlock the keychain or start its service (on Linux a Secret Service: GNOME Keyring, KWallet); "
    "`chctl secrets migrate --to file` moves every secret into the token and client files; see README, Secrets at rest"
)


def secret_places(places: list[dict[str, Any]]) -> str:
    """`the keychain (...) only: no file holds it`, `the token file ~/.context-harness/tokens/x.json and inline in
    /p/opencode.json`, `the keychain (...), its client secret in the keychain (...) only: ...`: every place in
    words."""
    words = []
    for place in places:
        match place["where"]:
            case "keychain" if place.get("of") == "client":
                words.append(f"its client secret in the keychain ({place['detail']})")
            case "keychain" if place.get("of") == "idp":
                words.append(f"its sign-in at {place['idp']} in the keychain ({place['detail']})")
            case "keychain":
                words.append(f"the keychain ({place['detail']}{_with_headers(place)})")
            case "token_file":
                words.append(f"the token file {place['path']}{_with_headers(place)}")
            case "config":
                words.append(f"inline in {place['path']} (header mode)")
            case "secret_file":
                words.append(f"the {{file:}} secret file {place['path']}")
            case "client_file":
                words.append(f"the client registration {place['path']} (its client secret)")
            case "idp_file" if place.get("of") == "idp":
                words.append(f"its sign-in at {place['idp']} in {place['path']}")
            case "idp_file":
                words.append(f"the IdP file {place['path']}")
    if all(p["where"] == "keychain" for p in places):
        return ", ".join(words) + " only: no file holds it"
    return ", ".join(words)


def _with_headers(place: dict[str, Any]) -> str:
    """`, with the secret headers X-Tenant-Key`: those stored with the key rest in the same place."""
    headers = place.get("secret_headers")
    return f", with the secret headers {', '.join(headers)}" if headers else ""


# --- every server's credential state ------------------------------------------------------------------------


def server_checks(
    servers: list[ServerStatus], now: float | None = None, answer_401: frozenset[str] | set[str] = frozenset()
) -> list[Check]:
    """One check per server: each state a person may have to act on, and what to do (`answer_401`: servers
    that need no credential as far as we know, yet answer 401 without one); and one per config whose entry
    now points away from the URL recorded for the server (its message says how to mend it)."""
    now = time.time() if now is None else now
    checks = [_server_check(server, now, server.name in answer_401) for server in servers]
    for server in servers:
        checks += [Check("config_url", "error", server.config_errors.get(p, p)) for p in server.url_changed]
        if server.url_unrecorded:
            unrecorded = recorded_urls.unrecorded(server.name)
            checks.append(Check("credential_url", "error", unrecorded.error, unrecorded.hint))
    return checks


# Logins without a person: no refresh token, and none needed (a new token is asked for).
MACHINE_LOGINS = ("client_credentials", "idp")


def _server_check(server: ServerStatus, now: float, answers_401: bool = False) -> Check:
    name, state, error = server.name, server.state, server.last_error
    login = f"run `{server.fix or f'chctl auth {name}'}`"
    if server.refused is not None and state not in ("pending_auth", "needs_reauth", "retrying", "refreshing"):
        hint = refusal_hint(name, server.refused, server.auth_type)
        return Check("server_state", "error", f"{name}: {error or f'refused ({server.refused})'}", hint)
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
        case "active" if server.expires_at and not server.has_refresh_token and server.login not in MACHINE_LOGINS:
            minutes = max(0, round((server.expires_at - now) / 60))
            return Check(
                "server_state",
                "warn",
                f"{name}: no refresh token was issued; the token expires in {minutes} min, then a new login is due",
                f"{login} then (the daemon notifies you)",
            )
        case "secret_unreadable":
            return Check(
                "server_state",
                "error",
                f"{name}: its secret is in the keychain, which did not give it" + _because(error),
                SECRET_STORE_HINT,
            )
        case "api_key":
            return Check("server_state", "ok", f"{name}: API key stored")
        case "needs_key":
            return Check("server_state", "warn", f"{name}: no API key stored", f"`chctl add {name} -k KEY`")
        case "no_auth" if answers_401:
            return Check(
                "server_needs_auth",
                "warn",
                f"{name} answers 401 Unauthorized without credentials",
                f"run `chctl auth {name}` (OAuth) or `chctl add {name} -k KEY` (API key)",
            )
        case "no_auth":
            return Check("server_state", "ok", f"{name}: needs no credential")
        case _:
            return Check("server_state", "ok", f"{name}: logged in, refreshed ahead of expiry")


def _because(error: str | None) -> str:
    return f" ({error})" if error else ""
