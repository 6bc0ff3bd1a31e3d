"""Valid JSON that is not the shape opencode expects: a clear CONFIG_INVALID naming the file, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from context_harness.config.opencode import FORMAT as OPENCODE
from context_harness.primitives.result import ErrorCode, Failure
from context_harness.services.config_service import ConfigService
from tests.support.daemon import DaemonProcess, chctl
from tests.support.env import UserEnv

SHAPES = ["[]", '"a string"', '{"mcp": []}', '{"mcp": "servers go here"}', '{"mcp": null}']


@pytest.mark.parametrize("text", SHAPES)
def test_a_config_whose_root_or_mcp_is_not_an_object_is_config_invalid(tmp_path: Path, text: str) -> None:
    path = tmp_path / "opencode.json"
    path.write_text(text)
    config = ConfigService()
    for result in (
        config.entries(path, OPENCODE),
        config.put_entry(path, "srv", {"type": "remote", "url": "https://example.com/mcp"}, OPENCODE),
        config.set_header(path, "srv", "Authorization", "Bearer x", OPENCODE, url="https://example.com/mcp"),
    ):
        assert isinstance(result, Failure) and result.code is ErrorCode.CONFIG_INVALID, result
        assert str(path) in result.error and "not an object" in result.error
    assert path.read_text() == text


def test_list_and_add_say_what_is_wrong_instead_of_no_servers(daemon: DaemonProcess, user_env: UserEnv) -> None:
    config = user_env.project / "opencode.json"
    config.write_text('{"mcp": ["context7"]}\n')
    listed = chctl(user_env, "list")
    assert (
        listed.returncode != 0
        and "error[CONFIG_INVALID]" in listed.stderr
        and "`mcp` is not an object" in listed.stderr
    )
    # The daemon's log says why, with the error code readable (not masked as if it were an authorization code).
    failed = [e for e in daemon.log_events() if e.get("event") == "rpc_method_failed" and e["method"] == "mcp.list"]
    assert failed and failed[0]["code"] == "CONFIG_INVALID" and "not an object" in failed[0]["error"]
    added = chctl(user_env, "add", "srv", "--url", "https://example.com/mcp")
    assert added.returncode != 0 and "error[CONFIG_INVALID]" in added.stderr and "error[INTERNAL]" not in added.stderr
    assert config.read_text() == '{"mcp": ["context7"]}\n'
