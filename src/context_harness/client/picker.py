"""`chctl add` with no name, on a terminal: pick a server from the registry by number or name.

What the chosen server needs is asked for afterwards by `chctl add` itself: the key (hidden), or whether
to log in now. Standard library only.
"""

from __future__ import annotations

import sys

from context_harness.client.output import table, terminal_width
from context_harness.client.rpc_client import call

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing

if TYPE_CHECKING:
    from typing import Any

MAX_TRIES = 3  # then the picker gives up: a script that fed it a terminal is not a person


def interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def pick_server() -> str | None:
    """Show the registry, read a number, a name, or words to search the MCP registries with; the chosen name
    (NAMESPACE/NAME for a registry's server), or None (nothing chosen, EOF)."""
    servers: list[dict[str, Any]] = call("registry.list")["servers"]
    rows = [["#", "NAME", "AUTH", "DESCRIPTION"]]
    for number, server in enumerate(servers, start=1):
        rows.append([str(number), server["name"], _auth(server), server.get("description", "")])
    print(table(rows, width=terminal_width(), cut=3))
    names: list[str] = [str(s["name"]) for s in servers]
    for _ in range(MAX_TRIES):
        answer = _read(f"server to add (1-{len(servers)}, a name, or words to search the MCP registries): ")
        if not answer:
            return None
        if answer.isdigit() and 1 <= int(answer) <= len(servers):
            return names[int(answer) - 1]
        if answer in names:
            return answer
        found = _search(answer)
        if found is not None:
            return found or None
    return None


def _search(text: str) -> str | None:
    """`chctl search TEXT` as a numbered list; the name picked, "" for none, None when nothing matched."""
    result = call("registry.search", {"text": text})
    matches = [s for s in result["servers"] if s["status"] != "deleted"]
    if not matches:
        print(f"no server's name holds {text!r}; `chctl add NAME --url URL` adds one of your own")
        return None
    rows = [["#", "NAME", "AUTH", "DESCRIPTION"]]
    for number, server in enumerate(matches, start=1):
        rows.append([str(number), server["name"], server["auth"], server.get("description") or ""])
    print(table(rows, width=terminal_width(), cut=3))
    answer = _read(f"server to add (1-{len(matches)}): ")
    if answer.isdigit() and 1 <= int(answer) <= len(matches):
        return str(matches[int(answer) - 1]["name"])
    return ""


def _read(prompt: str) -> str:
    try:
        return input(prompt).strip()
    except EOFError:
        print()
        return ""


def ask_yes(question: str) -> bool:
    """A [Y/n] question; Enter means yes, EOF means no."""
    try:
        answer = input(f"{question} [Y/n] ").strip().lower()
    except EOFError:
        return False
    return answer in ("", "y", "yes")


def _auth(server: dict[str, Any]) -> str:
    if server.get("auth_type") == "api-key":
        return "API key"
    if server.get("auth_type") == "oauth":
        return "login" + (" (client id)" if server.get("needs_preregistered_client") else "")
    return "none"
