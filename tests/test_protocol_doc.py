"""docs/protocol.md stays the daemon's contract: every method documented, with each of its parameters.

Methods are the level-3 headings that are nothing but a code span (### `mcp.add`); no other heading in the
file takes that form.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from context_harness.daemon.rpc_server import Method
from context_harness.daemon.rpc_table import METHODS, STREAMS, bind
from context_harness.daemon.services import build_services
from context_harness.daemon.settings import Settings
from context_harness.primitives.oauth import TokenState
from context_harness.primitives.result import ErrorCode

PROTOCOL_DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
METHOD_HEADING = re.compile(r"^### `([^`]+)`[ \t]*$", re.MULTILINE)


def documented_sections() -> dict[str, str]:
    """Method name -> the text of its section (up to the next heading of level 1-3)."""
    text = PROTOCOL_DOC.read_text(encoding="utf-8")
    sections: dict[str, str] = {}
    for match in METHOD_HEADING.finditer(text):
        rest = text[match.end() :]
        end = re.search(r"^#{1,3} ", rest, re.MULTILINE)
        assert match.group(1) not in sections, f"{match.group(1)} is documented twice"
        sections[match.group(1)] = rest[: end.start() if end else len(rest)]
    return sections


@pytest.fixture(scope="module")
def method_table(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Method]:
    # Built outside any event loop, as a test or a tool would; the daemon must allow that.
    home = tmp_path_factory.mktemp("home") / ".context-harness"
    services = build_services(Settings(home=home))
    return {**bind(METHODS, services), **bind(STREAMS, services)}


def test_the_documented_methods_are_exactly_the_daemons(method_table: dict[str, Method]) -> None:
    documented = set(documented_sections())
    assert documented == set(method_table), (
        f"undocumented: {sorted(set(method_table) - documented)}; "
        f"documented but not served: {sorted(documented - set(method_table))}"
    )


def test_each_method_section_names_every_parameter(method_table: dict[str, Method]) -> None:
    sections = documented_sections()
    missing = {}
    for name, method in method_table.items():
        wire_names = [field.alias or field_name for field_name, field in method.params.model_fields.items()]
        absent = [p for p in wire_names if f"`{p}`" not in sections.get(name, "")]
        if absent:
            missing[name] = absent
    assert not missing, f"parameters not mentioned in their method's section: {missing}"


def test_each_method_section_has_an_example_exchange() -> None:
    for name, section in documented_sections().items():
        assert f'"method": "{name}"' in section and "←" in section, f"{name} has no example request/response"


def test_every_error_code_and_token_state_is_explained() -> None:
    text = PROTOCOL_DOC.read_text(encoding="utf-8")
    for code in ErrorCode:
        assert f"| `{code.value}` |" in text, f"ErrorCode {code.value} missing from the table"
    for state in TokenState:
        assert f"| `{state.value}` |" in text, f"TokenState {state.value} missing from the table"
    for jsonrpc_code in (-32700, -32600, -32601, -32602, -32000):
        assert f"| {jsonrpc_code} |" in text
