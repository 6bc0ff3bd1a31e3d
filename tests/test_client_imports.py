"""chctl's modules depend on each other one way only (no import cycle, not even through a lazy import), and
what they copy from the daemon instead of importing it stays equal to the daemon's."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from context_harness import api
from context_harness import service_units as units
from context_harness.client import arguments, logs, token_cmd
from context_harness.config.format import CLIENTS, DEFAULT_CLIENT
from context_harness.daemon.rpc_params import TokenParams
from context_harness.services import token_access

CLIENT = Path(__file__).resolve().parents[1] / "src" / "context_harness" / "client"
PACKAGE = "context_harness.client"


def imported_client_modules(path: Path) -> set[str]:
    """The client modules `path` imports anywhere in it: at the top, in a function, under TYPE_CHECKING."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module == PACKAGE:
            found |= {f"{PACKAGE}.{alias.name}" for alias in node.names}  # from context_harness.client import x
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return {name.removeprefix(PACKAGE + ".") for name in found if name.startswith(PACKAGE + ".")}


def import_graph() -> dict[str, set[str]]:
    return {path.stem: imported_client_modules(path) - {path.stem} for path in sorted(CLIENT.glob("*.py"))}


def cycle_in(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module) :] + [module]
        if module in done:
            return None
        for imported in sorted(graph.get(module, ())):
            if found := visit(imported, [*path, module]):
                return found
        done.add(module)
        return None

    for module in graph:
        if found := visit(module, []):
            return found
    return None


def test_the_graph_sees_lazy_imports() -> None:
    graph = import_graph()
    assert "service" in graph["chctl"]  # imported only inside cmd_service
    assert {"arguments", "output", "rpc_client"} <= graph["import_cmd"]


def test_client_modules_import_each_other_without_a_cycle() -> None:
    assert cycle_in(import_graph()) is None


def test_a_cycle_is_found() -> None:
    assert cycle_in({"chctl": {"service"}, "service": {"service_args"}, "service_args": {"service"}}) == [
        "service",
        "service_args",
        "service",
    ]


def client_modules_loaded_by(statement: str) -> set[str]:
    """The context_harness modules loaded after `from context_harness.client import chctl` and `statement`,
    client ones without their package prefix."""
    probe = (
        "import sys\n"
        "from context_harness.client import chctl\n"
        f"{statement}\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('context_harness.'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return {name.removeprefix(PACKAGE + ".") for name in done.stdout.split()}


# Besides the client, only the printable-text rule it shares with the daemon (standard library only).
SHARED = {"context_harness.primitives", "context_harness.primitives.text"}
STATUS_MODULES = {PACKAGE, "chctl", "output", "rpc_client", "states", "wire"} | SHARED


def test_chctl_status_loads_only_the_client_modules_it_needs() -> None:
    assert client_modules_loaded_by("chctl.parse_fast(['status'])") == STATUS_MODULES


def test_chctl_token_loads_only_what_chctl_status_does_and_its_own_module() -> None:
    loaded = client_modules_loaded_by("assert chctl.parse_fast(['token', 'linear', '--json']) is not None")
    assert loaded == STATUS_MODULES | {"token_cmd"}


def test_chctl_token_says_the_same_defaults_as_the_daemon() -> None:
    assert token_cmd.DEFAULT_MIN_VALID_S == token_access.DEFAULT_MIN_VALID_S == api.DEFAULT_MIN_VALID_S
    limit = TokenParams.model_fields["min_valid_s"]
    assert limit.default == token_cmd.DEFAULT_MIN_VALID_S
    assert any(getattr(m, "le", None) == token_cmd.MAX_MIN_VALID_S for m in limit.metadata)


def test_chctl_offers_exactly_the_clients_the_daemon_knows_the_default_first() -> None:
    assert arguments.CLIENTS == tuple(CLIENTS)
    assert arguments.CLIENTS[0] == DEFAULT_CLIENT


def test_chctl_logs_looks_for_the_units_the_service_installs() -> None:
    assert logs.SYSTEMD_UNIT == units.SYSTEMD_SERVICE
    assert logs.LAUNCHD_PLIST[-1] == units.LAUNCHD_PLIST
