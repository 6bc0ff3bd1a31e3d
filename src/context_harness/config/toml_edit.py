"""TOML member edits with tomlkit, for Codex's config.toml: every comment, blank line and key order outside the
edited member stays as it was, and the result is parsed back and compared before it is handed out."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import tomlkit
from tomlkit.container import Container
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import InlineTable, Table


class TomlError(ValueError):
    """The text is not TOML (or not a table at the root)."""


class TomlEditError(ValueError):
    """The edit cannot be made (a parent on the path is not a table) or did not produce the expected document."""


def parse_toml(text: str) -> dict[str, Any]:
    try:
        document = tomlkit.parse(text)
    except TOMLKitError as exc:
        raise TomlError(str(exc)) from exc
    plain: dict[str, Any] = document.unwrap()
    return plain


def _document(text: str) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(text)
    except TOMLKitError as exc:
        raise TomlError(str(exc)) from exc


def _item(value: Any, depth: int) -> Any:
    """A dict at the edited member becomes a `[table]`; dicts inside it become inline tables (`env = {...}`)."""
    if isinstance(value, dict):
        if depth == 0:
            table = tomlkit.table()
            for key, inner in value.items():
                table.add(key, _item(inner, depth + 1))
            table.add(tomlkit.nl())  # a blank line before whatever table follows
            return table
        inline = tomlkit.inline_table()
        for key, inner in value.items():
            inline.append(key, _item(inner, depth + 1))
        return inline
    return value


def _check_path(path: Sequence[str]) -> list[str]:
    keys = list(path)
    if isinstance(path, str) or not keys or not all(isinstance(k, str) for k in keys):
        raise TypeError("path must be a non-empty sequence of string keys")
    return keys


def set_member(text: str, path: Sequence[str], value: Any) -> str:
    """Set the member at `path`, creating missing parent tables (as `[a.b]` headers, no empty `[a]`)."""
    keys = _check_path(path)
    document = _document(text)
    node: Container | Table | InlineTable | tomlkit.TOMLDocument = document
    for depth, key in enumerate(keys[:-1]):
        if key not in node:
            # A parent of the entry is a super table (only `[mcp_servers.NAME]` is written); deeper, inline.
            node[key] = tomlkit.table(is_super_table=True) if depth == 0 else tomlkit.inline_table()
        child = node[key]
        if not isinstance(child, Table | InlineTable):
            raise TomlEditError(f"cannot set {'.'.join(keys)}: {'.'.join(keys[: depth + 1])} is not a table")
        node = child
    inline = isinstance(node, InlineTable)
    node[keys[-1]] = _item(value, 1 if inline or len(keys) > 2 else 0)
    expected = copy.deepcopy(parse_toml(text))
    target = expected
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = value
    return _verified(tomlkit.dumps(document), expected)


def remove_member(text: str, path: Sequence[str]) -> str:
    """Remove the member at `path`; a missing member leaves `text` unchanged. A parent that only existed as the
    prefix of `[a.b]` headers (a super table) goes too once empty: tomlkit would not write it anyway."""
    keys = _check_path(path)
    document = _document(text)
    nodes: list[Any] = [document]
    for key in keys[:-1]:
        node = nodes[-1].get(key) if hasattr(nodes[-1], "get") else None
        nodes.append(node)
    if not hasattr(nodes[-1], "get") or keys[-1] not in nodes[-1]:
        return text
    expected = copy.deepcopy(parse_toml(text))
    parents = [expected]
    for key in keys[:-1]:
        parents.append(parents[-1][key])
    del nodes[-1][keys[-1]]
    del parents[-1][keys[-1]]
    for depth in range(len(keys) - 1, 0, -1):
        emptied = nodes[depth]
        if isinstance(emptied, Table) and emptied.is_super_table() and not emptied:
            del nodes[depth - 1][keys[depth - 1]]
            del parents[depth - 1][keys[depth - 1]]
    return _verified(tomlkit.dumps(document), expected)


def _verified(edited: str, expected: Any) -> str:
    try:
        actual = parse_toml(edited)
    except TomlError as exc:
        raise TomlEditError("internal error: the edit produced text that does not parse") from exc
    if actual != expected:
        raise TomlEditError("internal error: the edit did not produce the expected document")
    return edited
