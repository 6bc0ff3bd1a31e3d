"""The shape docs/design.md promises, checked over src/: short functions, no import cycle, and each layer
importing only the layers below it. Every import counts, also one inside a function or under TYPE_CHECKING."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "context_harness"
MAX_FUNCTION_LINES = 60

# What each package may import besides itself (docs/design.md, "The parts"). The client is standard library
# only and talks to the daemon over its socket; `api` is the client's Python face.
BELOW: dict[str, set[str]] = {
    "primitives": set(),
    "net": {"primitives"},
    "stores": {"primitives"},
    "config": {"primitives"},
    "oauth": {"primitives", "net"},
    "upstream": {"primitives", "net", "oauth"},
    "registries": {"primitives", "net"},
    "services": {"primitives", "net", "stores", "config", "oauth", "upstream", "registries"},
    "workers": {"primitives", "net", "stores", "config", "oauth", "upstream", "registries", "services"},
    "daemon": {"primitives", "net", "stores", "config", "oauth", "upstream", "registries", "services", "workers"},
    "service_units": set(),
    "client": {"primitives", "stores", "service_units"},
    "api": {"primitives", "client"},
}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """The project's modules `path` imports (a name imported from a package counts as its module if it is one),
    with the line."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                if name in known:
                    yield name, node.lineno
                elif node.module in known:
                    yield node.module, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield alias.name, node.lineno


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_function_is_longer_than_60_lines() -> None:
    long = []
    for module, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{module}.{node.name}: {lines} lines")
    assert not long, "split these functions:\n" + "\n".join(long)


def test_no_module_imports_itself_through_others() -> None:
    known = modules()
    graph = {
        module: {target for target, _line in imported(path, known) if target != module}
        for module, path in known.items()
    }
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_each_layer_imports_only_the_layers_below_it() -> None:
    known = modules()
    wrong = []
    for module, path in known.items():
        package = package_of(module)
        if package not in BELOW:
            continue  # the package's own __init__ and __main__-like top modules
        for target, line in imported(path, known):
            other = package_of(target)
            if other and other != package and other not in BELOW[package]:
                wrong.append(f"{path.relative_to(SRC)}:{line} imports {target} ({package} may not import {other})")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("package", sorted(BELOW))
def test_every_package_has_its_place_in_the_layers(package: str) -> None:
    assert (SRC / PACKAGE / package).is_dir() or (SRC / PACKAGE / f"{package}.py").is_file()


def test_every_package_is_in_the_layers() -> None:
    here = {p.name for p in (SRC / PACKAGE).iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    here |= {p.stem for p in (SRC / PACKAGE).glob("*.py") if p.stem != "__init__"}
    assert here == set(BELOW)
