"""`chctl add NAMESPACE/NAME[@VERSION]`: a server from an MCP registry. The daemon looks it up and decides
everything that matters (which remote, the URL, the headers, what is refused); this turns the flags into the
request, and on a terminal asks for the URL's variables the flags did not give. Standard library only.
"""

from __future__ import annotations

import os

from context_harness.client.rpc_client import RpcError, call
from context_harness.primitives.text import printable

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing

if TYPE_CHECKING:
    import argparse
    from typing import Any

MAX_NAME = 64  # primitives.names.MAX_SERVER_NAME_LENGTH (not imported: it brings `re` and pydantic)
NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
MAX_TRIES = 3


def is_registry_name(name: str) -> bool:
    """`io.github.acme/weather`: a registry's server (a local name has no slash)."""
    return "/" in name


def local_name(registry_name: str, chosen: str | None) -> str:
    """The name in the configs: `--as NAME`, else the registry name's last part (`weather`)."""
    name = chosen or registry_name.rsplit("/", 1)[-1]
    valid = 0 < len(name) <= MAX_NAME and name[0].isalnum() and set(name) <= NAME_CHARACTERS and ".." not in name
    if not valid:
        raise RpcError(
            "INVALID_PARAMS",
            f"{printable(name, 80)!r} cannot name a server here",
            f"choose one: `chctl add {printable(registry_name, 80)} --as NAME` (letters, digits, '.', '_' and '-', "
            "at most 64)",
        )
    return name


def registry_params(args: argparse.Namespace, params: dict[str, Any], variables: dict[str, str]) -> None:
    """Fill `params` (mcp.add's) for `args.name` = NAMESPACE/NAME[@VERSION]; on a terminal, ask for the
    variables the registry declares that `variables` (--var) does not hold."""
    from context_harness.client import picker

    registry_name, _, version = args.name.partition("@")
    params.update(name=local_name(registry_name, args.as_name), registry_name=registry_name)
    if version:
        params["version"] = version
    if picker.interactive():
        shown = call("registry.show", {"name": registry_name, "version": version or "latest"})
        variables = {**ask_variables(shown["variables"], variables), **variables}
    if variables:
        params["variables"] = variables
    secrets = header_values(args.header_env or [])
    if secrets:
        params["secret_headers"] = secrets


def header_values(items: list[str]) -> dict[str, str]:
    """--header-env HEADER=ENVVAR, each read from the environment (a value on the command line shows in `ps`)."""
    values: dict[str, str] = {}
    for item in items:
        header, sep, variable = item.partition("=")
        if not sep or not header or not variable:
            raise RpcError(
                "INVALID_PARAMS", f"--header-env expects HEADER=ENVVAR, got {item!r}", "e.g. X-Api-Key=MY_KEY"
            )
        value = os.environ.get(variable)
        if not value:
            raise RpcError(
                "AUTH_REQUIRED",
                f"environment variable {variable} is not set or empty",
                f"export {variable}=... first (it holds the value of {header})",
            )
        values[header] = value
    return values


def ask_variables(declared: list[dict[str, Any]], given: dict[str, str]) -> dict[str, str]:
    """The value of each declared variable `given` lacks, typed at the terminal (Enter takes the default)."""
    answers: dict[str, str] = {}
    for variable in declared:
        name = variable["name"]
        if name in given:
            continue
        answer = _ask(variable)
        if answer is not None:
            answers[name] = answer
    return answers


def _ask(variable: dict[str, Any]) -> str | None:
    about = f" ({printable(variable['description'])})" if variable.get("description") else ""
    choices = variable.get("choices") or []
    default = variable.get("default")
    prompt = f"{printable(variable['name'])}{about}"
    if choices:
        prompt += f", one of {', '.join(printable(c) for c in choices)}"
    prompt += f" [{printable(default)}]: " if default else ": "
    for _ in range(MAX_TRIES):
        try:
            answer = input(prompt).strip()
        except EOFError:
            return None
        if not answer and default:
            return None  # the daemon takes the default itself
        if answer and (not choices or answer in choices):
            return answer
    return None


def print_registry_outcome(result: dict[str, Any]) -> None:
    """What `chctl add` says about a registry server beyond where it was written: notes, and the next step."""
    import sys

    registry = result.get("registry") or {}
    for note in registry.get("notes") or []:
        print(f"warning: {printable(note)}", file=sys.stderr)
    if registry.get("may_need_login") and result.get("auth_type") == "none":  # the server did not say at add
        name = result["name"]
        print(f"next: `chctl check {name}` says whether it answers; if it asks for a login, `chctl auth {name}`")


def origin(result: dict[str, Any]) -> str:
    """` (io.github.acme/weather 1.2.0 from registry.modelcontextprotocol.io)`, or "" for another server."""
    registry = result.get("registry")
    if not registry:
        return ""
    version = f" {registry['version']}" if registry.get("version") else ""
    return printable(f" ({registry['name']}{version} from {registry['registry']})")
