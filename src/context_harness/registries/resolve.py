"""A registry's server made into what `chctl add` writes: the remote (streamable-http over sse), its URL with
the `{variables}` filled in, its headers (the non-secret ones with their declared value or default, the secret
ones from the user), each through the gate for outside values (`primitives.outside_values`). Pure: no I/O.

What a registry declares is data, never syntax: a URL that still holds `{...}` once the variables are filled is
refused, as is one a client would substitute (`{env:`, `${`, `$`), plain `http://` to another machine (a
credential may follow the URL, and a registry could point an unsecured server at the user's key), a header name
that is not an RFC 9110 token, a header the daemon sets itself, and a value with a control character.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from context_harness.primitives.mcp import MCPAuthType, MCPServer
from context_harness.primitives.outside_values import (
    Markers,
    credential_problem,
    header_value_problem,
    static_header_problem,
    substitution_problem,
    url_problem,
)
from context_harness.primitives.result import ErrorCode, Failure, Result, Success
from context_harness.primitives.text import printable
from context_harness.registries.api import Entry, Header, Input, Remote, ServerDetail, Transport

TRANSPORTS: tuple[Transport, ...] = ("streamable-http", "sse")  # in order of preference
# `{name}` in a URL or value template; anything left in braces after filling is refused.
TEMPLATE_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# A secret header's value template chctl can fill with a key: `{token}`, or a scheme and it (`Bearer {token}`).
BARE_TEMPLATE = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")
SCHEME_TEMPLATE = re.compile(r"([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*) \{[A-Za-z_][A-Za-z0-9_]*\}")
NAME_SHOWN = 60  # a header or variable name quoted in a message


@dataclass(frozen=True, slots=True)
class Given:
    """What the user gave `chctl add` for a registry server."""

    variables: Mapping[str, str] = field(default_factory=dict)  # --var NAME=VALUE (or typed at a prompt)
    secrets: Mapping[str, str] = field(default_factory=dict)  # --header-env HEADER=VAR: header -> value
    api_key: str | None = None  # -k / --api-key-env: the one required secret header
    headers: Mapping[str, str] = field(default_factory=dict)  # --header NAME=VALUE


@dataclass(frozen=True, slots=True)
class Resolved:
    url: str
    transport: Transport
    auth_type: MCPAuthType | None  # None: neither the entry nor the curated list says (`chctl add` asks the server)
    headers: dict[str, str]  # not secret: written into a header-mode entry, carried by the bridge
    key_header: str | None = None  # the secret header the key goes in
    key_scheme: str | None = None  # its scheme as the registry's template says; None: the usual rule, "": none
    api_key: str | None = None
    extra_secrets: dict[str, str] = field(default_factory=dict)  # more secret headers, whole values
    notes: list[str] = field(default_factory=list)  # worth saying (deprecated)
    may_need_login: bool = False  # no key declared or known: OAuth or none (`chctl check` tells)


KnownAt = Callable[[str], MCPServer | None]  # the curated server at a URL, for the facts a registry lacks


def pick_remote(server: ServerDetail) -> Remote | None:
    """The streamable-http remote, else the sse one, else None."""
    for transport in TRANSPORTS:
        for remote in server.remotes:
            if remote.type == transport:
                return remote
    return None


def is_secret(header: Header) -> bool:
    """A secret header, or one whose value template holds a secret variable (`Bearer {token}`, token secret)."""
    return header.is_secret or any(spec.is_secret for spec in _template_variables(header))


def is_required(header: Header) -> bool:
    return header.is_required or any(spec.is_required and spec.is_secret for spec in _template_variables(header))


def _template_variables(header: Header) -> list[Input]:
    used = TEMPLATE_VARIABLE.findall(header.value or "")
    return [header.variables[name] for name in used if name in header.variables]


def transport_label(server: ServerDetail) -> str:
    remote = pick_remote(server)
    if remote is not None:
        return remote.type
    return "stdio only" if server.packages else "-"


def auth_label(server: ServerDetail, known_at: KnownAt) -> str:
    """What a search shows in AUTH: the key header(s), OAuth, none, or "OAuth or none" when nobody says."""
    remote = pick_remote(server)
    if remote is None:
        return "-"
    secrets = [printable(h.name, NAME_SHOWN) for h in remote.headers if is_secret(h)]
    if secrets:
        return "key: " + ", ".join(secrets)
    known = known_at(remote.url)
    if known is not None and known.auth_type is MCPAuthType.API_KEY:
        return f"key: {known.api_key_header}"
    if known is not None:
        return "OAuth" if known.auth_type is MCPAuthType.OAUTH else "none"
    return "OAuth or none"


def resolve(entry: Entry, given: Given, markers: Markers, known_at: KnownAt) -> Result[Resolved]:
    """What to add for `entry` with what the user gave, or why not."""
    server = entry.server
    if entry.official.status == "deleted":
        reason = f": {entry.official.status_message}" if entry.official.status_message else ""
        return Failure(f"{server.name} was deleted from the registry{reason}", ErrorCode.NOT_FOUND, "search again")
    remote = pick_remote(server)
    if remote is None:
        return _no_remote(server)
    unknown = _unknown_variables(remote, given)
    if unknown is not None:
        return unknown
    url = _url(server.name, remote, given.variables, markers)
    if isinstance(url, Failure):
        return url
    plain = _plain_headers(server.name, remote, given, markers)
    if isinstance(plain, Failure):
        return plain
    known = known_at(url.value)
    keys = _secret_headers(server.name, remote, given, known, markers)
    if isinstance(keys, Failure):
        return keys
    key, extra = keys.value
    clash = next((h for h in plain.value if key is not None and h.lower() == key.name.lower()), None)
    if clash is not None:
        return _bad(server.name, f"declares the header {_shown(clash)} both secret and not")
    notes = []
    if entry.official.status == "deprecated":
        reason = f": {entry.official.status_message}" if entry.official.status_message else ""
        notes.append(f"{server.name} is deprecated{reason}")
    if key is not None:
        auth: MCPAuthType | None = MCPAuthType.API_KEY
    else:
        auth = known.auth_type if known is not None else None
    return Success(
        Resolved(
            url=url.value,
            transport=remote.type,  # type: ignore[arg-type]  # pick_remote returns only TRANSPORTS
            auth_type=auth,
            headers=plain.value,
            key_header=key.name if key is not None else None,
            key_scheme=key.scheme if key is not None else None,
            api_key=key.value if key is not None else None,
            extra_secrets=extra,
            notes=notes,
            may_need_login=key is None and not extra and known is None,
        )
    )


# --- the URL --------------------------------------------------------------------------------------------------


def _url(name: str, remote: Remote, variables: Mapping[str, str], markers: Markers) -> Result[str]:
    syntax = substitution_problem(remote.url, markers)  # said as it is, before a `{...}` in it is taken for a variable
    if syntax is not None:
        return _bad(name, f"its URL {syntax}")
    filled = fill(remote.url, remote.variables, variables)
    if isinstance(filled, Failure):
        return Failure(f"{name}: {filled.error}", filled.code, filled.hint)
    # Every URL a registry gives gets a credential or could: plain http is for this machine only.
    problem = url_problem(filled.value, markers, carries_secret=True)
    if problem is None and ("{" in filled.value or "}" in filled.value):
        problem = "still holds substitution syntax ({...}) once its variables are filled"
    if problem is not None:
        return _bad(name, f"its URL {problem}")
    return filled


def fill(template: str, declared: Mapping[str, Input], given: Mapping[str, str]) -> Result[str]:
    """`template` with each `{name}` replaced: the user's value, else the variable's fixed value or default."""
    parts: list[str] = []
    end = 0
    for match in TEMPLATE_VARIABLE.finditer(template):
        variable = match.group(1)
        spec = declared.get(variable)
        value = given.get(variable)
        if value is None and spec is not None:
            value = spec.value if spec.value is not None else spec.default
        if value is None:
            about = f" ({spec.description})" if spec is not None and spec.description else ""
            return Failure(
                f"the variable {_shown(variable)}{about} has no value",
                ErrorCode.INVALID_PARAMS,
                f"pass `--var {_plain(variable)}=VALUE` to `chctl add` (on a terminal chctl asks for it)",
            )
        if spec is not None and spec.choices and value not in spec.choices:
            choices = ", ".join(printable(c, NAME_SHOWN) for c in spec.choices[:10])
            return Failure(
                f"{_shown(variable)} must be one of: {choices}",
                ErrorCode.INVALID_PARAMS,
                f"pass `--var {_plain(variable)}=ONE_OF_THEM` to `chctl add`",
            )
        parts += [template[end : match.start()], value]
        end = match.end()
    return Success("".join([*parts, template[end:]]))


def _unknown_variables(remote: Remote, given: Given) -> Failure | None:
    known = set(remote.variables) | set(TEMPLATE_VARIABLE.findall(remote.url))
    for header in remote.headers:
        known |= set(header.variables) | set(TEMPLATE_VARIABLE.findall(header.value or header.default or ""))
    unknown = sorted(set(given.variables) - known)
    if not unknown:
        return None
    declared = ", ".join(_shown(v) for v in sorted(known)) or "none"
    return Failure(
        f"no variable {', '.join(_shown(v) for v in unknown)} in this server (its variables: {declared})",
        ErrorCode.INVALID_PARAMS,
        "`chctl add` without that --var",
    )


# --- headers ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Key:
    name: str
    scheme: str | None
    value: str


def _plain_headers(name: str, remote: Remote, given: Given, markers: Markers) -> Result[dict[str, str]]:
    """The non-secret headers: the user's --header, else the declared value (filled) or default."""
    out: dict[str, str] = {}
    for header in remote.headers:
        if is_secret(header):
            continue
        mine = _get(given.headers, header.name)
        template = mine if mine is not None else header.value if header.value is not None else header.default
        if template is None:
            if header.is_required:
                about = f" ({header.description})" if header.description else ""
                return Failure(
                    f"{name} needs the header {_shown(header.name)}{about}",
                    ErrorCode.INVALID_PARAMS,
                    f"`chctl add {name} --header {_plain(header.name)}=VALUE`",
                )
            continue
        syntax = substitution_problem(template, markers)
        if syntax is not None:
            return _bad(name, f"header {_shown(header.name)} {syntax}")
        filled = Success(mine) if mine is not None else fill(template, header.variables, given.variables)
        if isinstance(filled, Failure):
            return Failure(f"{name}: header {_shown(header.name)}: {filled.error}", filled.code, filled.hint)
        if header.choices and filled.value not in header.choices:
            return _bad(name, f"the header {_shown(header.name)} must be one of its choices")
        out[header.name] = filled.value
    for header_name, value in given.headers.items():  # the user's own, not declared: as with --url
        if _get(out, header_name) is None:
            out[header_name] = value
    for header_name, value in out.items():
        problem = _header_problem(header_name, out) or header_value_problem(value, markers)
        if problem is None and TEMPLATE_VARIABLE.search(value):
            problem = "still holds substitution syntax ({...})"
        if problem is not None:
            return _bad(name, f"header {_shown(header_name)} {problem}")
    return Success(out)


def _secret_headers(
    name: str, remote: Remote, given: Given, known: MCPServer | None, markers: Markers
) -> Result[tuple[_Key | None, dict[str, str]]]:
    """The key (the secret header the key goes in) and any more secret headers, from what the user gave."""
    declared = [h for h in remote.headers if is_secret(h)]
    if not declared and known is not None and known.api_key_header:  # the curated list knows the header
        declared = [Header(name=known.api_key_header, is_secret=True, is_required=True)]
    values: dict[str, str] = {}
    for header_name, value in given.secrets.items():
        match = next((h for h in declared if h.name.lower() == header_name.lower()), None)
        if match is None:
            declared.append(match := Header(name=header_name, is_secret=True))
        values[match.name] = value
    primary = _key_header(name, declared, values, given.api_key)
    if isinstance(primary, Failure):
        return primary
    if given.api_key is not None:
        values[primary.value] = given.api_key
        if not declared:  # a key for a server that declares no header: `Authorization: Bearer KEY`
            declared.append(Header(name=primary.value, is_secret=True))
    missing = [h for h in declared if is_required(h) and h.name not in values]
    if missing:
        return _missing_secrets(name, missing)
    key_name = primary.value or next((h.name for h in declared if h.name in values), None)
    key: _Key | None = None
    extra: dict[str, str] = {}
    for header in (h for h in declared if h.name in values):
        value = values[header.name]
        problem = _header_problem(header.name, values) or credential_problem(value, markers)
        scheme = _scheme(header)
        if problem is None and isinstance(scheme, _Unfillable):
            problem = "has a value template chctl cannot fill (only `{x}` or `SCHEME {x}`)"
        if problem is not None or isinstance(scheme, _Unfillable):
            return _bad(name, f"the secret header {_shown(header.name)} {problem}")
        if header.name == key_name:
            key = _Key(header.name, scheme, value)
        else:
            usual = "Bearer" if header.name.lower() == "authorization" else ""
            prefix = usual if scheme is None else scheme
            extra[header.name] = f"{prefix} {value}" if prefix else value
    return Success((key, extra))


def _key_header(name: str, declared: list[Header], values: Mapping[str, str], api_key: str | None) -> Result[str]:
    """Which header -k's key goes in: the one required secret header without a value (else the one without)."""
    if api_key is None:
        return Success("")
    open_ = [h for h in declared if h.name not in values]
    required = [h for h in open_ if is_required(h)]
    candidates = required if len(required) == 1 else open_
    if not declared:
        return Success("Authorization")  # as with --url
    if len(candidates) == 1:
        return Success(candidates[0].name)
    headers = ", ".join(_shown(h.name) for h in open_) or "none left"
    return Failure(
        f"{name} has more than one secret header ({headers}): which one is the key?",
        ErrorCode.INVALID_PARAMS,
        f"pass each with `chctl add {name} --header-env HEADER=ENVVAR` instead of -k/--api-key-env",
    )


def _missing_secrets(name: str, missing: list[Header]) -> Failure:
    first = missing[0]
    about = f" ({first.description})" if first.description else ""
    if len(missing) == 1:
        hint = f"pass -k KEY or --api-key-env VAR to `chctl add {name}` (it goes in {_plain(first.name)})"
    else:
        hint = f"pass each with `chctl add {name} --header-env HEADER=ENVVAR`: " + ", ".join(
            _plain(h.name) for h in missing
        )
    return Failure(f"{name} needs a secret in the header {_shown(first.name)}{about}", ErrorCode.AUTH_REQUIRED, hint)


class _Unfillable:
    """A secret header's value template that is neither `{x}` nor `SCHEME {x}`."""


def _scheme(header: Header) -> str | None | _Unfillable:
    """The scheme a secret header's value template puts before the key: None when there is no template (the
    usual rule), "" for a bare `{x}`, `Bearer` for `Bearer {x}`."""
    template = header.value
    if template is None:
        return None
    if BARE_TEMPLATE.fullmatch(template):
        return ""
    scheme = SCHEME_TEMPLATE.fullmatch(template)
    return scheme.group(1) if scheme is not None else _Unfillable()


def _header_problem(header_name: str, headers: Mapping[str, str]) -> str | None:
    if sum(1 for other in headers if other.lower() == header_name.lower()) > 1:
        return "is given twice"
    return static_header_problem(header_name)


def _no_remote(server: ServerDetail) -> Failure:
    if server.packages:
        package = server.packages[0]
        what = f"a local package ({package.registry_type} {package.identifier})".replace("( ", "(")
        return Failure(
            f"{server.name} has no remote server: it is {what}, which chctl does not install",
            ErrorCode.INVALID_PARAMS,
            'install it yourself, then `chctl add NAME --command "..."` with the command that starts it',
        )
    return _bad(server.name, "has no streamable-http or sse remote")


def _get(headers: Mapping[str, str], name: str) -> str | None:
    return next((value for key, value in headers.items() if key.lower() == name.lower()), None)


def _bad(name: str, problem: str) -> Failure:
    return Failure(
        f"{name}: {problem}", ErrorCode.INVALID_PARAMS, "nothing was written; the registry's entry is unusable"
    )


def _shown(text: str) -> str:
    return repr(printable(text, NAME_SHOWN))


def _plain(text: str) -> str:
    return printable(text, NAME_SHOWN)
