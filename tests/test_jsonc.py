"""JSONC parsing and surgical edits of opencode.json: comments, order and layout outside an edit survive."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from context_harness.config.jsonc import (
    JsoncEditError,
    JsoncError,
    parse_jsonc,
    remove_member,
    set_member,
)


def assert_spliced(before: str, after: str, start: int, end: int) -> None:
    """``after`` is ``before`` with only ``before[start:end]`` replaced: bytes around it are identical."""
    kept_tail = len(before) - end
    assert after[:start] == before[:start]
    assert after[len(after) - kept_tail :] == before[end:]
    assert len(after) - kept_tail >= start


# --- parsing -------------------------------------------------------------------------------------


def test_comments_and_trailing_commas_are_accepted() -> None:
    text = """
    // leading comment
    {
      /* block
         comment */ "a": 1, // after a
      "b": [1, 2, 3,], /* inline */
      "c": {"d": true, "e": null,},
    } // trailing comment
    """
    assert parse_jsonc(text) == {"a": 1, "b": [1, 2, 3], "c": {"d": True, "e": None}}


def test_comment_markers_inside_strings_are_string_content() -> None:
    text = '{"url": "https://mcp.example.com/mcp", "glob": "src/*.py", "end": "*/", "x": "a // b"}'
    assert parse_jsonc(text) == {
        "url": "https://mcp.example.com/mcp",
        "glob": "src/*.py",
        "end": "*/",
        "x": "a // b",
    }


def test_escapes_are_decoded() -> None:
    text = r'{"q": "say \"hi\"", "nl": "a\nb", "slash": "\/", "e": "\u00e9", "emoji": "\ud83d\ude00", "bs": "\\"}'
    assert parse_jsonc(text) == {"q": 'say "hi"', "nl": "a\nb", "slash": "/", "e": "é", "emoji": "😀", "bs": "\\"}


def test_scalars_and_nesting() -> None:
    text = '{"n": -0.5e3, "i": 10, "z": 0, "t": true, "f": false, "nil": null, "deep": [[{"x": [{}]}], []]}'
    assert parse_jsonc(text) == json.loads(text)


def test_duplicate_keys_last_one_wins() -> None:
    assert parse_jsonc('{"a": 1, "b": 2, "a": 3}') == {"a": 3, "b": 2}


def test_leading_bom_is_tolerated() -> None:
    assert parse_jsonc('\ufeff{"a": 1}') == {"a": 1}


def test_non_object_documents_parse() -> None:
    assert parse_jsonc("[1, 2,]") == [1, 2]
    assert parse_jsonc(' "s" // c') == "s"


@pytest.mark.parametrize(
    ("text", "message", "line", "column"),
    [
        ("", "Expected a value", 1, 1),
        ("  \n  // only a comment\n ", "Expected a value", 3, 2),
        ('{\n  "a": 1\n  "b": 2\n}', "Expected ',' or '}'", 3, 3),
        ('{"a": [1, 2 3]}', "Expected ',' or ']'", 1, 13),
        ("{\n  \"a\": 'x'\n}", "Expected a value", 2, 8),
        ('{"a": 1 /* open', "Unterminated block comment", 1, 9),
        ('{\n  "a": "never closed\n}', "Control character in string", 2, 21),
        ('{"a": "never closed', "Unterminated string", 1, 7),
        ('{"a": "\\q"}', "Invalid escape in string", 1, 8),
        ('{"a": 1,,}', "Expected a string key or '}'", 1, 9),
        ("{,}", "Expected a string key or '}'", 1, 2),
        ("[,]", "Expected a value or ']'", 1, 2),
        ("{a: 1}", "Expected a string key or '}'", 1, 2),
        ('{"a" 1}', "Expected ':'", 1, 6),
        ('{"a": 01}', "Expected ',' or '}'", 1, 8),
        ('{"a": 1}\n{"b": 2}', "Unexpected content after the document", 2, 1),
        ("\ufeff{]", "Expected a string key or '}'", 1, 2),
    ],
)
def test_malformed_input_reports_the_first_problem(text: str, message: str, line: int, column: int) -> None:
    with pytest.raises(JsoncError) as caught:
        parse_jsonc(text)
    assert (caught.value.message, caught.value.line, caught.value.column) == (message, line, column)
    assert str(caught.value) == f"{message} at line {line}, column {column}"
    assert isinstance(caught.value, ValueError)


def test_hostile_nesting_is_a_parse_error_not_a_crash() -> None:
    with pytest.raises(JsoncError, match="Nesting too deep"):
        parse_jsonc("[" * 100_000)


# --- edits on realistic opencode configs -----------------------------------------------------------

OPENCODE = """\
{
  // Project config, shared with the team
  "$schema": "https://opencode.ai/config.json",
  "model": "anthropic/claude-sonnet-4", /* pinned */
  "mcp": {
    // docs lookup
    "context7": {
      "type": "remote",
      "url": "https://mcp.context7.com/mcp", // the public endpoint
      "headers": { "CONTEXT7_API_KEY": "old-key" },
      "oauth": false,
    },
    /* local tools */
    "fs": {
      "type": "local",
      "command": ["npx", "-y", "@modelcontextprotocol/server-filesystem", "."],
    },
    "linear": { "type": "remote", "url": "https://mcp.linear.app/mcp" }, // last entry
  },
  "theme": "opencode",
}
"""

EXA = {"type": "remote", "url": "https://mcp.exa.ai/mcp", "headers": {"x-api-key": "k"}, "oauth": False}


def opencode_value() -> dict[str, Any]:
    return {
        "$schema": "https://opencode.ai/config.json",
        "model": "anthropic/claude-sonnet-4",
        "mcp": {
            "context7": {
                "type": "remote",
                "url": "https://mcp.context7.com/mcp",
                "headers": {"CONTEXT7_API_KEY": "old-key"},
                "oauth": False,
            },
            "fs": {"type": "local", "command": ["npx", "-y", "@modelcontextprotocol/server-filesystem", "."]},
            "linear": {"type": "remote", "url": "https://mcp.linear.app/mcp"},
        },
        "theme": "opencode",
    }


def test_fixture_parses_to_its_value() -> None:
    assert parse_jsonc(OPENCODE) == opencode_value()


def test_replacing_an_entry_replaces_only_its_value_span() -> None:
    new = {"type": "remote", "url": "https://mcp.context7.com/mcp", "headers": {"CONTEXT7_API_KEY": "new"}}
    edited = set_member(OPENCODE, ["mcp", "context7"], new)

    start = OPENCODE.index('"context7": ') + len('"context7": ')
    end = OPENCODE.index("    },\n    /* local tools */") + len("    }")
    assert_spliced(OPENCODE, edited, start, end)
    assert edited[start:].startswith(
        "{\n"
        '      "type": "remote",\n'
        '      "url": "https://mcp.context7.com/mcp",\n'
        '      "headers": {\n'
        '        "CONTEXT7_API_KEY": "new"\n'
        "      }\n"
        "    },\n    /* local tools */"
    )
    expected = opencode_value()
    expected["mcp"]["context7"] = new
    assert parse_jsonc(edited) == expected


def test_replacing_one_header_value_touches_nothing_else() -> None:
    edited = set_member(OPENCODE, ["mcp", "context7", "headers", "CONTEXT7_API_KEY"], "new-key")
    assert edited == OPENCODE.replace('"old-key"', '"new-key"')


def test_adding_an_entry_after_a_trailing_comma_keeps_trailing_commas() -> None:
    edited = set_member(OPENCODE, ["mcp", "exa"], EXA)

    at = OPENCODE.index('  },\n  "theme"')
    added = (
        '    "exa": {\n'
        '      "type": "remote",\n'
        '      "url": "https://mcp.exa.ai/mcp",\n'
        '      "headers": {\n'
        '        "x-api-key": "k"\n'
        "      },\n"
        '      "oauth": false\n'
        "    },\n"
    )
    assert edited == OPENCODE[:at] + added + OPENCODE[at:]
    expected = opencode_value()
    expected["mcp"]["exa"] = EXA
    assert parse_jsonc(edited) == expected


def test_adding_an_entry_to_an_empty_mcp() -> None:
    before = '{\n  "$schema": "https://opencode.ai/config.json",\n  "mcp": {}\n}\n'
    edited = set_member(before, ["mcp", "local"], {"type": "local", "command": ["srv", "--stdio"]})
    assert edited == (
        "{\n"
        '  "$schema": "https://opencode.ai/config.json",\n'
        '  "mcp": {\n'
        '    "local": {\n'
        '      "type": "local",\n'
        '      "command": [\n'
        '        "srv",\n'
        '        "--stdio"\n'
        "      ]\n"
        "    }\n"
        "  }\n"
        "}\n"
    )


def test_adding_to_an_empty_mcp_holding_only_a_comment_keeps_the_comment() -> None:
    before = '{\n  "mcp": {\n    // servers go here\n  },\n}\n'
    edited = set_member(before, ["mcp", "a"], {"type": "remote", "url": "https://a.example"})
    assert edited == (
        '{\n  "mcp": {\n    // servers go here\n'
        '    "a": {\n      "type": "remote",\n      "url": "https://a.example"\n    }\n'
        "  },\n}\n"
    )


def test_adding_mcp_to_a_file_without_it() -> None:
    before = (
        '{\n  "$schema": "https://opencode.ai/config.json",\n  // keep the theme\n  "theme": "opencode" // dark\n}\n'
    )
    edited = set_member(before, ["mcp", "exa"], {"type": "remote", "url": "https://mcp.exa.ai/mcp"})
    assert edited == (
        "{\n"
        '  "$schema": "https://opencode.ai/config.json",\n'
        "  // keep the theme\n"
        '  "theme": "opencode", // dark\n'
        '  "mcp": {\n'
        '    "exa": {\n'
        '      "type": "remote",\n'
        '      "url": "https://mcp.exa.ai/mcp"\n'
        "    }\n"
        "  }\n"
        "}\n"
    )


def test_tab_indented_files_get_tabs() -> None:
    before = '{\n\t"$schema": "https://opencode.ai/config.json",\n\t"mcp": {\n\t\t"a": {"type": "local"}\n\t}\n}\n'
    edited = set_member(before, ["mcp", "b"], {"type": "remote", "url": "https://b"})
    assert edited == (
        '{\n\t"$schema": "https://opencode.ai/config.json",\n\t"mcp": {\n\t\t"a": {"type": "local"},\n'
        '\t\t"b": {\n\t\t\t"type": "remote",\n\t\t\t"url": "https://b"\n\t\t}\n'
        "\t}\n}\n"
    )


def test_four_space_indent_is_detected() -> None:
    before = '{\n    "mcp": {}\n}'
    assert (
        set_member(before, ["mcp", "a"], {"x": 1})
        == '{\n    "mcp": {\n        "a": {\n            "x": 1\n        }\n    }\n}'
    )


def test_inline_objects_stay_inline() -> None:
    assert set_member('{"a": 1, "b": 2}', ["c"], [1, 2]) == '{"a": 1, "b": 2, "c": [1, 2]}'
    assert set_member('{"a": 1,}', ["c"], 3) == '{"a": 1, "c": 3,}'
    before = '{"$schema": "s", "mcp": {}}'
    assert set_member(before, ["mcp", "n"], {"type": "local"}) == '{"$schema": "s", "mcp": {"n": {"type": "local"}}}'


def test_crlf_files_get_crlf_and_bom_survives() -> None:
    before = '\ufeff{\r\n  "a": 1\r\n}\r\n'
    assert set_member(before, ["b"], {"c": 1}) == '\ufeff{\r\n  "a": 1,\r\n  "b": {\r\n    "c": 1\r\n  }\r\n}\r\n'


def test_setting_a_duplicated_key_edits_the_effective_last_one() -> None:
    assert set_member('{"a": 1, "a": 2}', ["a"], 3) == '{"a": 1, "a": 3}'


def test_setting_through_a_non_object_member_is_refused() -> None:
    with pytest.raises(JsoncEditError, match=r"mcp\.x\.y: mcp is not an object"):
        set_member('{"mcp": []}', ["mcp", "x", "y"], 1)
    with pytest.raises(JsoncEditError, match="root is not an object"):
        set_member("[1]", ["mcp"], 1)


def test_malformed_text_is_never_edited() -> None:
    with pytest.raises(JsoncError) as caught:
        set_member('{\n  "mcp": {\n    "a": 1\n    "b": 2\n  }\n}', ["mcp", "c"], 1)
    assert (caught.value.line, caught.value.column) == (4, 5)
    with pytest.raises(JsoncError):
        set_member("   ", ["mcp"], {})
    with pytest.raises(JsoncError):
        remove_member('{"a": 1', ["a"])


def test_values_and_paths_are_checked() -> None:
    with pytest.raises(JsoncEditError, match="not JSON-serialisable"):
        set_member("{}", ["a"], object())
    with pytest.raises(JsoncEditError):
        set_member("{}", ["a"], float("nan"))
    with pytest.raises(TypeError):
        set_member("{}", "mcp", 1)
    with pytest.raises(TypeError):
        set_member("{}", [], 1)


def test_remove_first_entry_keeps_the_comment_above_it() -> None:
    edited = remove_member(OPENCODE, ["mcp", "context7"])
    start = OPENCODE.index('    "context7"')
    end = OPENCODE.index("    /* local tools */")
    assert edited == OPENCODE[:start] + OPENCODE[end:]
    expected = opencode_value()
    del expected["mcp"]["context7"]
    assert parse_jsonc(edited) == expected


def test_remove_middle_entry() -> None:
    edited = remove_member(OPENCODE, ["mcp", "fs"])
    start = OPENCODE.index('    "fs"')
    end = OPENCODE.index('    "linear"')
    assert edited == OPENCODE[:start] + OPENCODE[end:]


def test_remove_last_entry_takes_its_line_and_comment() -> None:
    edited = remove_member(OPENCODE, ["mcp", "linear"])
    start = OPENCODE.index('    "linear"')
    end = OPENCODE.index('  },\n  "theme"')
    assert edited == OPENCODE[:start] + OPENCODE[end:]


def test_remove_last_entry_without_trailing_comma_drops_the_previous_comma() -> None:
    before = '{\n  "mcp": {\n    "a": 1, // first\n    "b": 2\n  }\n}\n'
    assert remove_member(before, ["mcp", "b"]) == '{\n  "mcp": {\n    "a": 1 // first\n  }\n}\n'


def test_remove_only_entry_leaves_an_empty_object() -> None:
    before = '{\n  "mcp": {\n    "a": {\n      "type": "local"\n    }\n  }\n}\n'
    edited = remove_member(before, ["mcp", "a"])
    assert edited == '{\n  "mcp": {\n  }\n}\n'
    assert parse_jsonc(edited) == {"mcp": {}}


def test_remove_inline_members() -> None:
    assert remove_member('{"a": 1, "b": 2, "c": 3}', ["b"]) == '{"a": 1, "c": 3}'
    assert remove_member('{"a": 1, "b": 2}', ["b"]) == '{"a": 1}'
    assert remove_member('{"a": 1}', ["a"]) == "{}"


def test_remove_drops_every_duplicate() -> None:
    assert parse_jsonc(remove_member('{"a": 1, "b": 2, "a": 3}', ["a"])) == {"b": 2}


def test_remove_missing_member_returns_text_unchanged() -> None:
    assert remove_member(OPENCODE, ["mcp", "nope"]) is OPENCODE
    assert remove_member(OPENCODE, ["nope", "x"]) is OPENCODE
    assert remove_member(OPENCODE, ["theme", "x"]) is OPENCODE


# --- property: an edit touches its member's span and nothing else ---------------------------------

TRIVIA = st.lists(
    st.sampled_from(["", " ", "\n", "\n  ", "\t", "  // note, {x}: [y]\n", "/* c */", " /* two\n lines */ "]),
    max_size=3,
).map("".join)
KEYS = st.text(alphabet='abcxyz_-/*" \\é', min_size=1, max_size=6)  # no "m": never collides with "mcp"
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet='ab /*\\"\n', max_size=8),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)),
    max_leaves=8,
)
NEW_KEY = "new_server"


@dataclass
class ObjectSpans:
    open: int = 0
    close: int = 0
    members: list[tuple[str, int, int, int]] = field(default_factory=list)  # key, key start, value start, end


PRETTY_BEFORE_MEMBER = st.sampled_from(["", "", "// about the next one\n", "/* block */\n"])
PRETTY_AFTER_COMMA = st.sampled_from(["", "", " // note", " /* c */"])


class JsoncWriter:
    """Renders a value as JSONC with drawn comments, whitespace and trailing commas, noting spans.

    ``pretty`` documents look hand-written (a member per line, comments on their own lines or after a
    comma); the others put arbitrary trivia between every pair of tokens.
    """

    def __init__(self, draw: st.DrawFn, pretty: bool) -> None:
        self.draw = draw
        self.pretty = pretty
        self.depth = 0
        self.text = ""
        self.spans: dict[str, ObjectSpans] = {}

    def before_member(self) -> str:
        if not self.pretty:
            return self.draw(TRIVIA)
        indent = "  " * self.depth
        return f"\n{indent}" + self.draw(PRETTY_BEFORE_MEMBER).replace("\n", f"\n{indent}")

    def between(self) -> str:
        return " " if self.pretty else self.draw(TRIVIA)

    def value(self, value: Any, name: str | None = None) -> None:
        if isinstance(value, dict):
            self.object(value, name)
        elif isinstance(value, list):
            self.text += "["
            for i, item in enumerate(value):
                self.text += self.draw(TRIVIA)
                self.value(item)
                self.text += self.draw(TRIVIA)
                if i < len(value) - 1 or self.draw(st.booleans()):
                    self.text += ","
            self.text += self.draw(TRIVIA) + "]"
        else:
            self.text += json.dumps(value)

    def object(self, value: dict[str, Any], name: str | None) -> None:
        spans = ObjectSpans(open=len(self.text))
        self.text += "{"
        self.depth += 1
        for i, (key, item) in enumerate(value.items()):
            self.text += self.before_member()
            key_start = len(self.text)
            self.text += json.dumps(key) + ("" if self.pretty else self.draw(TRIVIA)) + ":" + self.between()
            value_start = len(self.text)
            self.value(item, "mcp" if name == "root" and key == "mcp" else None)
            spans.members.append((key, key_start, value_start, len(self.text)))
            self.text += "" if self.pretty else self.draw(TRIVIA)
            if i < len(value) - 1 or self.draw(st.booleans()):
                self.text += "," + (self.draw(PRETTY_AFTER_COMMA) if self.pretty else "")
        self.depth -= 1
        self.text += f"\n{'  ' * self.depth}" if self.pretty else self.draw(TRIVIA)
        spans.close = len(self.text)
        self.text += "}"
        if name is not None:
            self.spans[name] = spans


@st.composite
def opencode_documents(draw: st.DrawFn) -> tuple[str, dict[str, Any], dict[str, ObjectSpans]]:
    top = draw(st.dictionaries(KEYS, VALUES, max_size=4))
    if draw(st.booleans()):
        items = list(top.items())
        items.insert(draw(st.integers(0, len(items))), ("mcp", draw(st.dictionaries(KEYS, VALUES, max_size=4))))
        top = dict(items)
    writer = JsoncWriter(draw, pretty=draw(st.booleans()))
    writer.text = draw(TRIVIA)
    writer.object(top, "root")
    writer.text += draw(TRIVIA)
    return writer.text, top, writer.spans


def choose_target(data: st.DataObject, spans: dict[str, ObjectSpans], *, allow_new: bool) -> list[str] | None:
    candidates = [[key] for key, *_ in spans["root"].members]
    candidates += [["mcp", key] for key, *_ in spans["mcp"].members] if "mcp" in spans else []
    if allow_new:
        candidates += [[NEW_KEY], ["mcp", NEW_KEY]]
    return data.draw(st.sampled_from(candidates)) if candidates else None


def insertion_region(spans: ObjectSpans) -> tuple[int, int]:
    """Where a new member may go: after the last member's value (or the brace), before the close."""
    after = spans.members[-1][3] if spans.members else spans.open + 1
    return after, spans.close


@settings(max_examples=200, deadline=None)
@given(document=opencode_documents(), new_value=VALUES, data=st.data())
def test_set_member_changes_only_the_target_span(
    document: tuple[str, dict[str, Any], dict[str, ObjectSpans]], new_value: Any, data: st.DataObject
) -> None:
    text, value, spans = document
    path = choose_target(data, spans, allow_new=True)
    assert path is not None

    edited = set_member(text, path, new_value)

    parent_name = "root" if len(path) == 1 else "mcp"
    parent = spans.get(parent_name)
    existing = [m for m in parent.members if m[0] == path[-1]] if parent else []
    if existing:
        _, _, start, end = existing[0]
    else:
        start, end = insertion_region(parent if parent else spans["root"])
    assert_spliced(text, edited, start, end)
    expected = json.loads(json.dumps(value))
    target = expected if len(path) == 1 else expected.setdefault("mcp", {})
    target[path[-1]] = new_value
    assert parse_jsonc(edited) == json.loads(json.dumps(expected))


@settings(max_examples=200, deadline=None)
@given(document=opencode_documents(), data=st.data())
def test_remove_member_deletes_only_around_the_target(
    document: tuple[str, dict[str, Any], dict[str, ObjectSpans]], data: st.DataObject
) -> None:
    text, value, spans = document
    path = choose_target(data, spans, allow_new=False)
    if path is None:
        assert remove_member(text, ["mcp", NEW_KEY]) == text
        return

    edited = remove_member(text, path)

    parent = spans["root" if len(path) == 1 else "mcp"]
    index = [m[0] for m in parent.members].index(path[-1])
    start = parent.members[index - 1][3] if index > 0 else parent.open + 1
    end = parent.members[index + 1][1] if index + 1 < len(parent.members) else parent.close
    assert_spliced(text, edited, start, end)
    assert len(edited) < len(text)
    expected = json.loads(json.dumps(value))
    del (expected if len(path) == 1 else expected["mcp"])[path[-1]]
    assert parse_jsonc(edited) == expected
