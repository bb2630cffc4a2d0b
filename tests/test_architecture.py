"""The package's modules import each other in one direction: no module-level import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gradcheck_kit"


def _module_imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        deps: set[str] = set()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gradcheck_kit"):
                if node.module == "gradcheck_kit":
                    deps |= {a.name for a in node.names if (PACKAGE / f"{a.name}.py").exists()}
                else:
                    deps.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[1] for a in node.names if a.name.startswith("gradcheck_kit.")}
        graph[path.stem] = deps - {path.stem}
    return graph


def test_no_module_level_import_cycle():
    graph = _module_imports()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_the_library_does_not_import_the_command_line():
    graph = _module_imports()
    assert not [m for m, deps in graph.items() if "cli" in deps and m not in ("__main__",)]
