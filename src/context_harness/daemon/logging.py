"""structlog to stderr: JSON lines for journald/launchd, readable lines on a terminal, secrets masked."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

MASK = "***"

# Keys whose values are secret whatever they look like...
_SECRET_KEY = re.compile(
    r"(token|secret|password|passwd|api[_-]?key|authorization|verifier|cookie|credential|(^|_)code$)", re.I
)
# ...unless the name says the value is about a secret, not the secret: `has_refresh_token`, `token_endpoint`,
# `token_type`, `token_hint`, `auth_method`, `expires_at`, counts and states.
_ABOUT_A_SECRET_KEY = re.compile(
    r"(^(has|is|n|num)_|_(endpoint|type|hint|method|url|uri|at|in|s|count|state|kind|name|path|file|dir)$)", re.I
)
# A `code` that is an error code (`CONFIG_INVALID`) or a status (404, an exit code) is not an authorization code.
_NOT_A_SECRET_CODE = re.compile(r"^[A-Z]+(_[A-Z]+)*$")
# Values that look like secrets wherever they appear: bearer headers, JWTs, long opaque random strings.
_SECRET_VALUE = re.compile(
    r"(?i:bearer)\s+\S+"
    r"|eyJ[\w-]+\.[\w-]+\.[\w-]*"
    r"|(?<![\w/.-])(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[\w-]{32,}(?![\w/.-])"
)


def redact_text(text: str) -> str:
    """Mask secret-looking substrings (bearer values, JWTs, long opaque tokens) in free text."""
    return _SECRET_VALUE.sub(lambda m: "Bearer " + MASK if m.group(0)[:6].lower() == "bearer" else MASK, text)


def _secret_key(key: str, value: Any) -> bool:
    if not key or not _SECRET_KEY.search(key) or _ABOUT_A_SECRET_KEY.search(key):
        return False
    if key.lower() == "code" and (isinstance(value, int) or _NOT_A_SECRET_CODE.match(str(value))):
        return False
    return value not in (None, "", False)


def _redact(value: Any, key: str = "") -> Any:
    if _secret_key(key, value):
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: _redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def redact_processor(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Runs last-but-one, so nothing secret reaches the renderer."""
    for key in list(event_dict):
        event_dict[key] = _redact(event_dict[key], "" if key == "event" else key)
    return event_dict


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
