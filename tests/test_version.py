"""One version: pyproject.toml's is the package's, and the one we tell MCP servers."""

import tomllib
from pathlib import Path

from context_harness import __version__
from context_harness.oauth.discovery import initialize_request

REPO = Path(__file__).resolve().parents[1]


def test_the_package_version_is_the_one_pyproject_declares() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["version"] == __version__


def test_mcp_servers_are_told_the_package_version() -> None:
    assert initialize_request()["params"]["clientInfo"] == {"name": "context-harness", "version": __version__}
