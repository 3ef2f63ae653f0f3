"""The packages' layers, read from the source (ast, nothing imported): no import cycle among our
modules, and no lower layer importing an upper one (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "animecli"

# What each layer must never import (imports inside functions count too: a lazy import is
# still a dependency, and was how the old pipeline <-> ray_engine circle hid).
FORBIDDEN = {
    "models": ("weights", "io", "inference", "run", "cli", "training", "benchmark"),
    "weights": ("io", "inference", "run", "cli", "training", "benchmark"),
    "io": ("run", "cli", "training", "benchmark"),
    "inference": ("run", "cli", "training", "benchmark"),
    "run": ("cli", "training", "benchmark"),
    # The bottom: imported by everyone, imports none of the layers.
    "errors": ("models", "weights", "io", "inference", "run", "cli", "training", "benchmark"),
    "options": ("models", "weights", "io", "inference", "run", "cli", "training", "benchmark"),
    "dirs": ("models", "weights", "io", "inference", "run", "cli", "training", "benchmark"),
    "atomic": ("models", "weights", "io", "inference", "run", "cli", "training", "benchmark"),
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """The animecli modules ``path`` imports (``from animecli.x import y`` counts ``animecli.x.y``
    when that is a module, else ``animecli.x``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "animecli")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "animecli":
                continue
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in MODULES else node.module)
    return {m for m in found if m in MODULES}


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_graph_is_read() -> None:
    # A broken reader would pass every check below: the graph must hold edges we know of.
    assert "animecli.run.session" in GRAPH["animecli.run.ray"]
    assert "animecli.models.spec" in GRAPH["animecli.weights.resolve"]


def test_no_import_cycle() -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(GRAPH[node]):
            if dep == node or dep == "animecli":
                continue
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep):], dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_lower_layers_do_not_import_upper_ones(layer: str) -> None:
    wrong = sorted(f"{src} imports {dep}" for src, deps in GRAPH.items() if _layer(src) == layer
                   for dep in deps if _layer(dep) in FORBIDDEN[layer])
    assert not wrong, "\n".join(wrong)


def test_only_the_cli_imports_typer() -> None:
    users = set()
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(m.split(".")[0] == "typer" for m in mods):
                users.add(name)
    assert users and all(_layer(u) == "cli" for u in users), sorted(users)


def test_models_package_init_imports_nothing() -> None:
    # The torch-free CPU engine reads animecli.models.spec; importing it runs models/__init__.
    tree = ast.parse((PACKAGE / "models" / "__init__.py").read_text(encoding="utf-8"))
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
