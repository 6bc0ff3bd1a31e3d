"""JSONC parsing that remembers where things are: a small recursive-descent parser for JSON with `//` and
`/* */` comments and trailing commas, which records where each object member's key, value and comma sit.
config/jsonc.py edits files with those positions; `parse_jsonc` is the plain parse.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

MAX_NESTING = 256  # far beyond any real config; keeps a hostile file from exhausting the stack

_WHITESPACE = " \t\r\n"
_STRING_BODY = re.compile(r'(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*')
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
LINE_END = re.compile(r"[\r\n]")
_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None}


class JsoncError(ValueError):
    """The text is not valid JSONC; ``line`` and ``column`` (1-based) point at the first problem."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(f"{message} at line {line}, column {column}")
        self.message = message
        self.line = line
        self.column = column


@dataclass
class Node:
    start: int  # index of the value's first character
    end: int  # index just past its last character
    data: Any
    members: list[Member] | None = None  # objects only
    items: list[Node] = field(default_factory=list)  # arrays only; kept so nested objects are reachable


@dataclass
class Member:
    key: str
    key_start: int  # index of the key's opening quote
    value: Node
    comma: int | None = None  # index of the comma after the value, if any


class Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 1 if text.startswith("\ufeff") else 0

    def document(self) -> Node:
        self.skip_trivia()
        if self.pos >= len(self.text):
            self.fail("Expected a value")
        root = self.value(0)
        self.skip_trivia()
        if self.pos < len(self.text):
            self.fail("Unexpected content after the document")
        return root

    def fail(self, message: str, pos: int | None = None) -> None:
        pos = self.pos if pos is None else pos
        line_start = self.text.rfind("\n", 0, pos) + 1
        column = pos - line_start + 1
        if line_start == 0 and self.text.startswith("\ufeff"):
            column -= 1  # the BOM is not a visible column
        raise JsoncError(message, self.text.count("\n", 0, pos) + 1, max(column, 1))

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_trivia(self) -> None:
        text = self.text
        while self.pos < len(text):
            if text[self.pos] in _WHITESPACE:
                self.pos += 1
            elif text.startswith("//", self.pos):
                newline = LINE_END.search(text, self.pos)
                self.pos = newline.start() if newline else len(text)
            elif text.startswith("/*", self.pos):
                close = text.find("*/", self.pos + 2)
                if close < 0:
                    self.fail("Unterminated block comment")
                self.pos = close + 2
            else:
                return

    def value(self, depth: int) -> Node:
        if depth > MAX_NESTING:
            self.fail("Nesting too deep")
        char = self.peek()
        if char == "{":
            return self.object(depth)
        if char == "[":
            return self.array(depth)
        start = self.pos
        if char == '"':
            text = self.string()
            return Node(start, self.pos, text)
        for word, data in _LITERALS.items():
            if self.text.startswith(word, start):
                self.pos += len(word)
                return Node(start, self.pos, data)
        number = _NUMBER.match(self.text, start)
        if number is None:
            self.fail("Expected a value")
        assert number is not None
        self.pos = number.end()
        return Node(start, self.pos, json.loads(number.group()))

    def string(self) -> str:
        start = self.pos
        body_end = _STRING_BODY.match(self.text, start + 1)
        assert body_end is not None  # the pattern matches the empty string
        end = body_end.end()
        if end >= len(self.text):
            self.fail("Unterminated string", start)
        if self.text[end] == "\\":
            self.fail("Invalid escape in string", end)
        if self.text[end] != '"':
            self.fail("Control character in string", end)
        self.pos = end + 1
        decoded: str = json.loads(self.text[start : self.pos])
        return decoded

    def object(self, depth: int) -> Node:
        start = self.pos
        self.pos += 1
        members: list[Member] = []
        data: dict[str, Any] = {}
        self.skip_trivia()
        while self.peek() != "}":
            if self.peek() != '"':
                self.fail("Expected a string key or '}'")
            key_start = self.pos
            key = self.string()
            self.skip_trivia()
            if self.peek() != ":":
                self.fail("Expected ':'")
            self.pos += 1
            self.skip_trivia()
            member = Member(key, key_start, self.value(depth + 1))
            members.append(member)
            data[key] = member.value.data  # duplicate keys: the last one wins, as in JSON.parse
            self.skip_trivia()
            if self.peek() == ",":
                member.comma = self.pos
                self.pos += 1
                self.skip_trivia()
            elif self.peek() != "}":
                self.fail("Expected ',' or '}'")
        self.pos += 1
        return Node(start, self.pos, data, members=members)

    def array(self, depth: int) -> Node:
        start = self.pos
        self.pos += 1
        items: list[Node] = []
        self.skip_trivia()
        while self.peek() != "]":
            if self.peek() == ",":
                self.fail("Expected a value or ']'")
            items.append(self.value(depth + 1))
            self.skip_trivia()
            if self.peek() == ",":
                self.pos += 1
                self.skip_trivia()
            elif self.peek() != "]":
                self.fail("Expected ',' or ']'")
        self.pos += 1
        return Node(start, self.pos, [item.data for item in items], items=items)


def parse_tree(text: str) -> Node:
    return Parser(text).document()


def parse_jsonc(text: str) -> Any:
    """Parse JSON with comments and trailing commas; raise JsoncError at the first problem."""
    return parse_tree(text).data
