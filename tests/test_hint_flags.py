"""Every hint the code can print names only flags that exist: a flag in a hint stands inside a spelled-out
`chctl COMMAND ...` (in backticks), and that command's argparse parser has it. So a hint printed under one
command can never send the user to a flag that command does not have (`chctl token x` once hinted
`pass --url / --command`, flags of `add` only).

The hints are found in the source (ast): the hint argument of `Failure`, `RpcError`, `print_error`,
`print_hint`, doctor's `Check`, every `hint=` keyword, variables and constants named like a hint, and the
values of the hint tables. f-string parts that are computed read as `{}`.
"""

from __future__ import annotations

import argparse
import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from context_harness.client.chctl import build_parser

SOURCE = Path(__file__).resolve().parent.parent / "src" / "context_harness"
HINT_POSITION = {"Failure": 2, "RpcError": 2, "print_error": 2, "print_hint": 0, "Check": 3}
HINT_TABLES = re.compile(r"HINT|NEXT_ACTION", re.I)
BACKTICKED = re.compile(r"`([^`]*)`")
FLAG = re.compile(r"(?<![\w{}.-])(--[A-Za-z][\w-]*|-[A-Za-z])(?![\w-])")


def texts(node: ast.expr | None) -> list[str]:
    """The strings `node` can evaluate to, computed parts as `{}` (a conditional gives each branch)."""
    match node:
        case ast.Constant(value=str() as value):
            return [value]
        case ast.JoinedStr(values=parts):
            out = [""]
            for part in parts:
                pieces = texts(part) if isinstance(part, ast.Constant) else ["{}"]
                out = [a + b for a in out for b in pieces]
            return out
        case ast.BinOp(left=left, op=ast.Add(), right=right):
            return [a + b for a in texts(left) or ["{}"] for b in texts(right) or ["{}"]]
        case ast.IfExp(body=body, orelse=orelse):
            return texts(body) + texts(orelse)
        case ast.BoolOp(values=values):
            return [t for v in values for t in texts(v)]
    return []


def hint_nodes(tree: ast.AST) -> Iterator[ast.expr]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            position = HINT_POSITION.get(name or "")
            if position is not None and len(node.args) > position:
                yield node.args[position]
            yield from (k.value for k in node.keywords if k.arg == "hint")
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            if node.value is not None and any("hint" in n.lower() or HINT_TABLES.search(n) for n in names):
                if isinstance(node.value, ast.Dict):
                    yield from (v for v in node.value.values if v is not None)
                else:
                    yield node.value


def all_hints() -> list[tuple[str, str]]:
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        for node in hint_nodes(ast.parse(path.read_text(), str(path))):
            for text in texts(node):
                found.append((f"{path.relative_to(SOURCE)}:{node.lineno}", text))
    return found


def command_parser(words: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The (sub)parser that `chctl WORDS...` reaches, and the words left for it."""
    parser = build_parser()
    rest = words
    while rest:
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subparsers or rest[0] not in subparsers[0].choices:
            break
        parser, rest = subparsers[0].choices[rest[0]], rest[1:]
    return parser, rest


def problems_of(text: str) -> list[str]:
    problems = []
    spelled: list[argparse.ArgumentParser] = []  # the chctl commands the hint spells out
    for span in BACKTICKED.findall(text):
        words = span.split()
        if words[:1] != ["chctl"]:
            continue  # another program's command line (`kill PID`, `systemctl --user ...`): its flags are its own
        parser, rest = command_parser(words[1:])
        if parser.prog == "chctl" and words[1:]:
            problems.append(f"`chctl {words[1]}` is not a chctl command")
            continue
        spelled.append(parser)
        problems += [f"`{parser.prog}` has no {flag}" for flag in FLAG.findall(" ".join(rest)) if not has(parser, flag)]
    # A flag outside those commands (`or -k KEY`, a backticked `--secret-mode file`) is one of theirs.
    loose = BACKTICKED.sub(
        lambda m: " " if m.group(1).startswith("chctl ") else m.group(1).startswith("-") and m.group(1) or " ", text
    )
    for flag in FLAG.findall(loose):
        if not spelled:
            problems.append(f"{flag} without the `chctl COMMAND` it belongs to")
        elif not any(has(parser, flag) for parser in spelled):
            problems.append(f"{flag} is no flag of {', '.join(f'`{p.prog}`' for p in spelled)}")
    return problems


def has(parser: argparse.ArgumentParser, flag: str) -> bool:
    return flag in parser._option_string_actions


def test_the_scanner_sees_the_hints_and_catches_a_wrong_flag() -> None:
    hints = all_hints()
    assert len(hints) > 120  # the scanner finds them: a broken one would pass everything
    assert any("`chctl auth " in text for _, text in hints)
    assert problems_of("did you mean `peer`? (or pass --url / --command)") == [
        "--url without the `chctl COMMAND` it belongs to",
        "--command without the `chctl COMMAND` it belongs to",
    ]
    assert problems_of("`chctl token x` (or pass --url)") == ["--url is no flag of `chctl token`"]
    assert problems_of("to change it: `chctl add x --api-key-env VAR` (or -k KEY)") == []
    assert problems_of("`chctl token x --url URL`") == ["`chctl token` has no --url"]
    assert problems_of("`chctl add x --url URL -k KEY`, then `chctl daemon stop`") == []
    assert problems_of("`chctl remote ssh-config HOST --user U`") == []


@pytest.mark.parametrize(("where", "text"), all_hints(), ids=lambda v: v if ":" in v else "")
def test_every_hint_names_only_flags_of_the_command_it_spells_out(where: str, text: str) -> None:
    assert problems_of(text) == [], f"{where}: {text!r}"
