"""JSONC parsing and surgical member edits for opencode.json / opencode.jsonc.

opencode accepts JSON plus ``//`` and ``/* */`` comments and trailing commas in both file kinds. We must
change only the entries we manage, so edits here are string splices: the parser in jsonc_parser.py
records where each object member's key, value and comma sit, and ``set_member`` / ``remove_member``
replace or insert exactly one span. Every byte outside it — comments, order, whitespace, trailing commas
elsewhere — stays as it was. Each edit is checked by re-parsing before it is returned.

json5kit (evaluated as issue 2 asked): it does not fit. 0.4.0 (2023, no release since) rejects
``/* */`` block comments ("Expected to find '/', found '*'"), and its CST offers node replacement
through a visitor but no member insertion or removal with the file's layout, so we keep this editor.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from context_harness.config.jsonc_parser import LINE_END, JsoncError, Member, Node, parse_jsonc, parse_tree

__all__ = ["JsoncEditError", "JsoncError", "parse_jsonc", "remove_member", "set_member"]

DEFAULT_INDENT_UNIT = "  "  # what `chctl init` writes and what most opencode.json files use


class JsoncEditError(ValueError):
    """The edit cannot be made: the root or an intermediate member is not an object, or a value not JSON."""


# --- layout of the existing file -------------------------------------------------------------------


def _line_start(text: str, pos: int) -> int:
    return text.rfind("\n", 0, pos) + 1


def _own_line_indent(text: str, pos: int) -> str | None:
    """The indentation before ``pos`` if only whitespace precedes it on its line, else None."""
    prefix = text[_line_start(text, pos) : pos]
    return prefix if prefix.strip(" \t") == "" else None


def _leading_whitespace(text: str, pos: int) -> str:
    line = text[_line_start(text, pos) : pos]
    return line[: len(line) - len(line.lstrip(" \t"))]


def _walk_members(node: Node, depth: int = 1) -> list[tuple[int, Member]]:
    found: list[tuple[int, Member]] = []
    for member in node.members or []:
        found.append((depth, member))
        found.extend(_walk_members(member.value, depth + 1))
    for item in node.items:
        found.extend(_walk_members(item, depth + 1))
    return found


def _indent_unit(text: str, root: Node) -> str:
    """The file's indent step: from top-level members on their own lines, else inferred from deeper ones."""
    top_level: Counter[str] = Counter()
    inferred: Counter[str] = Counter()
    for depth, member in _walk_members(root):
        indent = _own_line_indent(text, member.key_start)
        if not indent:
            continue
        if depth == 1:
            top_level[indent] += 1
        elif indent.startswith("\t"):
            inferred["\t"] += 1
        elif indent.strip(" ") == "" and len(indent) % depth == 0:
            inferred[" " * (len(indent) // depth)] += 1
    for votes in (top_level, inferred):
        if votes:
            return votes.most_common(1)[0][0]
    return DEFAULT_INDENT_UNIT


@dataclass(frozen=True)
class _Layout:
    unit: str
    newline: str

    @classmethod
    def of(cls, text: str, root: Node) -> _Layout:
        return cls(_indent_unit(text, root), "\r\n" if "\r\n" in text else "\n")

    def render(self, value: Any, indent: str | None) -> str:
        """``value`` as JSON: multi-line at ``indent``'s depth, or on one line when indent is None."""
        try:
            if indent is None:
                return json.dumps(value, ensure_ascii=False, allow_nan=False)
            rendered = json.dumps(value, indent=self.unit, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise JsoncEditError(f"value of type {type(value).__name__} is not JSON-serialisable") from exc
        return rendered.replace("\n", self.newline + indent)

    def entry(self, key: str, value: Any, indent: str | None) -> str:
        return f"{json.dumps(key, ensure_ascii=False)}: {self.render(value, indent)}"


# --- edits -----------------------------------------------------------------------------------------

_Splice = tuple[int, int, str]  # replace text[start:end] with the string


def _apply(text: str, splices: list[_Splice]) -> str:
    """Apply non-overlapping splices back to front; two at one position land in the order given."""
    ordered = sorted(enumerate(splices), key=lambda item: (item[1][0], item[0]), reverse=True)
    for _, (start, end, replacement) in ordered:
        text = text[:start] + replacement + text[end:]
    return text


def _check_path(path: Sequence[str]) -> list[str]:
    if isinstance(path, str):
        raise TypeError("path must be a sequence of keys, not a string")
    keys = list(path)
    if not keys or not all(isinstance(key, str) for key in keys):
        raise TypeError("path must be a non-empty sequence of string keys")
    return keys


def _find(node: Node, key: str) -> Member | None:
    matches = [member for member in node.members or [] if member.key == key]
    return matches[-1] if matches else None  # the last duplicate is the one that counts


def _root_object(text: str) -> Node:
    root = parse_tree(text)
    if root.members is None:
        raise JsoncEditError("the document's root is not an object")
    return root


def _before_close(text: str, obj: Node, anchor: int, entry: str, parent_indent: str, nl: str) -> _Splice:
    """Put ``entry`` (already indented) on its own line just before the object's closing brace."""
    close = obj.end - 1
    line_start = _line_start(text, close)
    if line_start > anchor and text[line_start:close].strip(" \t") == "":
        return (line_start, line_start, entry + nl)
    # The brace shares a line with earlier content: give the entry and the brace their own lines.
    spaces_start = close
    while spaces_start > anchor and text[spaces_start - 1] in " \t":
        spaces_start -= 1
    return (spaces_start, close, nl + entry + nl + parent_indent)


def _insert(text: str, obj: Node, owner: Member | None, key: str, value: Any, layout: _Layout) -> list[_Splice]:
    """Splices adding ``key: value`` as the last member of ``obj``; ``owner`` holds obj (None: the root)."""
    members = obj.members or []
    parent_indent = _leading_whitespace(text, obj.start)
    if not members and owner is not None and _own_line_indent(text, owner.key_start) is None:
        return [(obj.start + 1, obj.start + 1, layout.entry(key, value, None))]  # an inline `{}` stays inline
    if not members:
        indent = parent_indent + layout.unit
        entry = indent + layout.entry(key, value, indent)
        return [_before_close(text, obj, obj.start + 1, entry, parent_indent, layout.newline)]
    last = members[-1]
    sibling_indent = _own_line_indent(text, last.key_start)
    if sibling_indent is None:  # siblings share a line: stay on it, compactly
        entry = layout.entry(key, value, None)
        if last.comma is not None:
            return [(last.comma + 1, last.comma + 1, f" {entry},")]
        return [(last.value.end, last.value.end, f", {entry}")]
    indent = sibling_indent
    if last.comma is not None:  # the file ends members with a comma: so does the new one
        entry = indent + layout.entry(key, value, indent) + ","
        return [_before_close(text, obj, last.comma + 1, entry, parent_indent, layout.newline)]
    entry = indent + layout.entry(key, value, indent)
    return [
        (last.value.end, last.value.end, ","),
        _before_close(text, obj, last.value.end, entry, parent_indent, layout.newline),
    ]


def _rest_of_line(text: str, pos: int) -> int:
    """Skip spaces, one-line block comments and a line comment after ``pos``; stop at what is left."""
    while True:
        while pos < len(text) and text[pos] in " \t":
            pos += 1
        if text.startswith("/*", pos):
            close = text.find("*/", pos + 2)
            if "\n" in text[pos:close]:
                return pos
            pos = close + 2
            continue
        if text.startswith("//", pos):
            newline = LINE_END.search(text, pos)
            return newline.start() if newline else len(text)
        return pos


def _removal(text: str, obj: Node, index: int) -> list[_Splice]:
    members = obj.members or []
    member = members[index]
    previous = members[index - 1] if index > 0 else None
    splices: list[_Splice] = []
    end = member.value.end if member.comma is None else member.comma + 1
    if member.comma is None and previous is not None and previous.comma is not None:
        # Removing the last member: drop the comma before it too, keeping the file's no-trailing-comma style.
        splices.append((previous.comma, previous.comma + 1, ""))
    line_end = _rest_of_line(text, end)
    own_line = _own_line_indent(text, member.key_start) is not None
    if own_line and (line_end == len(text) or text[line_end] in "\r\n"):
        newline_length = 2 if text.startswith("\r\n", line_end) else 1 if line_end < len(text) else 0
        splices.append((_line_start(text, member.key_start), line_end + newline_length, ""))
        return splices
    if member.comma is None and previous is not None and previous.comma is not None:
        return [(previous.comma, member.value.end, "")]  # inline: `, "key": value` goes as one piece
    stop = end
    while member.comma is not None and stop < len(text) and text[stop] in " \t":
        stop += 1
    splices.append((member.key_start, stop, ""))
    return splices


def _verified(edited: str, expected: Any) -> str:
    """Re-parse the result so a bug here can never hand back a broken or wrongly changed config."""
    try:
        actual = parse_jsonc(edited)
    except JsoncError as exc:
        raise JsoncEditError("internal error: the edit produced text that does not parse") from exc
    if actual != expected:
        raise JsoncEditError("internal error: the edit did not produce the expected document")
    return edited


def set_member(text: str, path: Sequence[str], value: Any) -> str:
    """Set the member at ``path`` to ``value``, creating it and missing parent objects as needed.

    An existing member has only its value span replaced; a new one becomes the last member of its parent,
    indented like its siblings. Raises JsoncError if ``text`` does not parse, JsoncEditError if the root
    or an existing intermediate member is not an object.
    """
    keys = _check_path(path)
    root = _root_object(text)
    layout = _Layout.of(text, root)
    normalised = json.loads(layout.render(value, None))
    node, owner = root, None
    for depth, key in enumerate(keys):
        member = _find(node, key)
        if member is None:
            nested = normalised
            for inner in reversed(keys[depth + 1 :]):
                nested = {inner: nested}
            splices = _insert(text, node, owner, key, nested, layout)
            break
        if depth == len(keys) - 1:
            rendered = layout.render(value, _own_line_indent(text, member.key_start))
            splices = [(member.value.start, member.value.end, rendered)]
            break
        if member.value.members is None:
            where = ".".join(keys[: depth + 1])
            raise JsoncEditError(f"cannot set {'.'.join(keys)}: {where} is not an object")
        node, owner = member.value, member
    expected = copy.deepcopy(root.data)
    target = expected
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = normalised
    return _verified(_apply(text, splices), expected)


def remove_member(text: str, path: Sequence[str]) -> str:
    """Remove the member at ``path`` with its comma and, when it has lines of its own, those lines.

    A comment on the same line after the member goes with it. A missing member leaves ``text`` unchanged.
    Raises JsoncError if ``text`` does not parse.
    """
    keys = _check_path(path)
    expected = copy.deepcopy(parse_tree(text).data)
    parent = expected
    for key in keys[:-1]:
        parent = parent.get(key) if isinstance(parent, dict) else None
    if not isinstance(parent, dict) or keys[-1] not in parent:
        return text
    del parent[keys[-1]]
    while True:  # once per duplicate of the key, so no earlier duplicate becomes visible
        node = parse_tree(text)
        for key in keys[:-1]:
            member = _find(node, key)
            assert member is not None
            node = member.value
        indexes = [i for i, member in enumerate(node.members or []) if member.key == keys[-1]]
        if not indexes:
            return _verified(text, expected)
        text = _apply(text, _removal(text, node, indexes[-1]))
