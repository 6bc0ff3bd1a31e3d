"""The `chctl service install|uninstall|status [--dry-run]` arguments, apart from the machinery in service.py.

chctl registers every command's arguments on each run; keeping these here lets it do that without importing
service.py (dataclasses, subprocess, the unit templates), which only `chctl service` needs. This module only
defines arguments: whoever registers them passes the handler, so nothing here imports service.py.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms of start-up)

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable


def add_service_arguments(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], func: Callable[[argparse.Namespace], int]
) -> None:
    """Register `service install|uninstall|status [--dry-run]`, to be carried out by `func`."""
    service = subparsers.add_parser("service", help="start the daemon at login (systemd or launchd)")
    actions = service.add_subparsers(dest="service_action", required=True, metavar="ACTION")
    for name, help_text in (
        ("install", "write the units for this platform and enable them"),
        ("uninstall", "stop and disable the daemon and remove its units"),
        ("status", "say whether the units are installed, enabled and running"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument(
            "--dry-run", action="store_true", help="print what would be written and run; change nothing"
        )
    service.set_defaults(func=func)
