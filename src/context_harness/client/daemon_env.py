"""The environment a daemon is started with, by `chctl`, `chctl bridge` and the Python API alike.

The daemon serves every later caller, so whatever it is started with stays in force for all of them: a
script's proxy would carry the user's next refresh, a script's event command would run at every refresh. Its
settings therefore come from two places only: `CH_HOME/daemon.env`, and the documented settings of the command
that starts it — the `CH_*` variables of docs/guide.md's Settings table, the proxy variables and the trust store's
`SSL_CERT_FILE`/`SSL_CERT_DIR`. The Python API passes none of those (`settings=False`): a daemon it starts, when
asked to, has daemon.env alone. Besides settings, the daemon gets what tells it where the user's files and
desktop are (HOME, PATH, the XDG directories, the clients' config variables, the session bus for
notifications, the locale); nothing else of the caller's environment reaches it.

Standard library only: chctl imports this when it starts a daemon.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Mapping

# docs/guide.md's Settings table: daemon/settings.py's fields, one `CH_` variable each (a test keeps the two in step).
DAEMON_SETTINGS = (
    "CH_HOME",
    "CH_SOCKET",
    "CH_LOG_LEVEL",
    "CH_LOG_FORMAT",
    "CH_RPC_IDLE_TIMEOUT_S",
    "CH_REMOTE_SOCKET",
    "CH_DELEGATE_SOCKET",
    "CH_SECRET_STORE",
    "CH_KEYCHAIN_TIMEOUT_S",
    "CH_REFRESH_FRACTION",
    "CH_REFRESH_JITTER",
    "CH_MAX_CONCURRENT_REFRESHES",
    "CH_WALLCLOCK_CHECK_S",
    "CH_MIN_REFRESH_SPACING_S",
    "CH_HTTP_TIMEOUT_S",
    "CH_CONFIG_IO_TIMEOUT_S",
    "CH_BACKOFF_BASE_S",
    "CH_BACKOFF_MAX_S",
    "CH_CLIENT_METADATA_URL",
    "CH_NOTIFY_COMMAND",
    "CH_EVENT_COMMAND",
    "CH_CA_BUNDLE",
    "CH_REGISTRY_URL",
    "CH_REGISTRY_CACHE_TTL_S",
)
NETWORK_VARIABLES = (
    *(f"{name}_PROXY" for name in ("HTTPS", "HTTP", "ALL", "NO")),
    *(f"{name}_proxy" for name in ("https", "http", "all", "no")),
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
# Where the daemon is: the socket it binds and the home it keeps; a daemon started elsewhere is another one.
LOCATION = ("CH_HOME", "CH_SOCKET")
# Not settings: where the user's files and desktop are, for the daemon and the commands it runs.
PROCESS_VARIABLES = (
    "HOME",
    "PATH",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "DBUS_SESSION_BUS_ADDRESS",
    "CODEX_HOME",
    "CLAUDE_CONFIG_DIR",
    "APPDATA",
)
PROCESS_PREFIXES = ("XDG_", "LC_")


def daemon_environment(environ: Mapping[str, str], *, settings: bool) -> dict[str, str]:
    """What a daemon started from `environ` gets: the process variables, where the daemon is (relative CH_HOME and
    CH_SOCKET made absolute: it runs in `/`), and with `settings` the caller's documented settings."""
    names = [*DAEMON_SETTINGS, *NETWORK_VARIABLES] if settings else list(LOCATION)
    env = {
        name: value
        for name, value in environ.items()
        if name in PROCESS_VARIABLES or name.startswith(PROCESS_PREFIXES) or name in names
    }
    for name in LOCATION:
        if env.get(name):
            env[name] = os.path.abspath(env[name])
    return env
