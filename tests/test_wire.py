"""chctl's JSON (the `_json` accelerator, without importing `json`) agrees with the `json` module."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from context_harness.client import wire

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=30,
)


@given(json_values)
def test_what_wire_writes_json_reads_back(value: object) -> None:
    assert json.loads(wire.dumps(value)) == value


@given(json_values, st.sampled_from([None, 2]))
def test_what_json_writes_wire_reads_back(value: object, indent: int | None) -> None:
    assert wire.loads(json.dumps(value, indent=indent) + "\n") == value


def test_constants_like_json() -> None:
    assert math.isinf(wire.loads("Infinity"))


@pytest.mark.parametrize("bad", ["", "{", "[1,]", "{} x", "nul", '{"a" 1}'])
def test_malformed_input_is_a_value_error(bad: str) -> None:
    with pytest.raises(ValueError):
        wire.loads(bad)


def test_chctl_status_imports_neither_json_nor_socket_nor_argparse() -> None:
    probe = (
        "import sys\n"
        "from context_harness.client import chctl\n"
        "chctl.parse_fast(['status'])\n"
        "heavy = ('json', 'socket', 'argparse', 're', 'enum', 'types', 'pydantic')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
