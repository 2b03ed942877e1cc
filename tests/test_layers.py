"""The layers of the code, checked from its imports: core (ligoenv.oci) < store (ligoenv.store)
< client (ligoenv.client) < command (ligoenv.cli), and the server (ligoenv_server) on the store;
imports point down only, and no module imports itself back through others."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = {"ligoenv": REPO / "ligoenv", "ligoenv_server": REPO / "server"}
# (prefix, rank): a module may import modules of a lower rank, or of its own layer.
LAYERS = (("ligoenv.oci", 0), ("ligoenv.store", 1), ("ligoenv.client", 2), ("ligoenv.cli", 3),
          ("ligoenv_server", 2))


def modules() -> dict[str, Path]:
    found = {}
    for package, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ours that `name` imports, anywhere in it (lazy imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".")[: len(name.split(".")) - (path.name != "__init__.py")]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, *([node.module] if node.module else [])])
            subs = [f"{base}.{alias.name}" for alias in node.names]
            targets = [t for t in subs if t in known] or [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def layer(name: str) -> tuple[str, int]:
    for prefix, rank in LAYERS:
        if name == prefix or name.startswith(prefix + "."):
            return prefix, rank
    return name, -1  # the package root `ligoenv`: only the version


GRAPH = {name: imports(name, path, modules()) for name, path in modules().items()}


def test_imports_point_down() -> None:
    # The graph is read as meant: relative and lazy imports count.
    assert "ligoenv_server.publishers.base" in GRAPH["ligoenv_server.publishers.directory"]
    assert "ligoenv.client.lockpins" in GRAPH["ligoenv.client.launch"]
    wrong = []
    for name, targets in GRAPH.items():
        if name == "ligoenv":  # the package root names the version, from the core
            continue
        prefix, rank = layer(name)
        for target in targets:
            other, other_rank = layer(target)
            if other_rank > rank or (other_rank == rank and other != prefix) or other_rank < 0:
                wrong.append(f"{name} -> {target}")
    assert wrong == []


def test_the_core_imports_nothing_above_it() -> None:
    assert {target for name, targets in GRAPH.items() if name.startswith("ligoenv.oci")
            for target in targets if not target.startswith("ligoenv.oci")} == set()


def test_no_import_cycles() -> None:
    cycles = []
    for start in GRAPH:
        seen, stack = set(), [(start, [start])]
        while stack:
            name, trail = stack.pop()
            for target in GRAPH[name]:
                if target == start:
                    cycles.append(" -> ".join([*trail, start]))
                elif target not in seen:
                    seen.add(target)
                    stack.append((target, [*trail, target]))
    assert cycles == []
