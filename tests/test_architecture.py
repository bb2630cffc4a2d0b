"""The package's shape, checked on its source: imports go one way (no cycle, also counting imports inside
functions), no module outside the engine imports a private name of another module, and no class or
function outgrows what one reader can hold (300 and 80 lines)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gradcheck_kit"
ENGINE = "gradcheck_kit._engine"
MAX_CLASS_LINES = 300
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST):
    """Every import statement that runs (module level or inside functions; not under ``TYPE_CHECKING``)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in skipped:
            yield node


def _targets(node, modules: dict[str, Path], here: str) -> list[tuple[str, str | None]]:
    """``(module, name)`` pairs an import statement takes from the package (``name`` None: the module)."""
    if isinstance(node, ast.Import):
        return [(a.name, None) for a in node.names if a.name in modules]
    base = node.module or ""
    if node.level:  # relative import
        package = here if modules[here].name == "__init__.py" else here.rsplit(".", 1)[0]
        for _ in range(node.level - 1):
            package = package.rsplit(".", 1)[0]
        base = f"{package}.{base}" if base else package
    if base not in modules:
        return []
    return [(f"{base}.{a.name}", None) if f"{base}.{a.name}" in modules else (base, a.name) for a in node.names]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        deps = {target for node in _imports(tree) for target, _ in _targets(node, modules, name)} - {name}
        graph[name] = set(deps)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def test_no_import_cycle_counting_imports_inside_functions():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_sees_imports_inside_functions():
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    tree = ast.parse("def f():\n    from gradcheck_kit import check\n")
    modules = _modules()
    assert [_targets(n, modules, "gradcheck_kit.errors") for n in _imports(tree)] == [[("gradcheck_kit.check", None)]]


def test_the_library_does_not_import_the_command_line():
    graph = _graph()
    assert not [m for m, deps in graph.items() if "gradcheck_kit.cli" in deps and m != "gradcheck_kit.__main__"]


def test_no_module_outside_the_engine_imports_a_private_name_of_another_module():
    modules = _modules()
    offenders = []
    for name, path in modules.items():
        if name == ENGINE or name.startswith(ENGINE + "."):
            continue
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            for module, imported in _targets(node, modules, name):
                if imported is not None and imported.startswith("_") and not imported.startswith("__"):
                    offenders.append(f"{name} imports {imported} from {module}")
    assert not offenders, "\n".join(offenders)


def _too_long(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        lines = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
        if isinstance(node, ast.ClassDef) and lines > MAX_CLASS_LINES:
            found.append(f"class {node.name}: {lines} lines")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and lines > MAX_FUNCTION_LINES:
            found.append(f"function {node.name}: {lines} lines")
    return found




def test_no_class_over_300_lines_and_no_function_over_80():
    offenders = [
        f"{name}: {what}"
        for name, path in _modules().items()
        for what in _too_long(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert not offenders, "\n".join(offenders)


def test_the_size_rule_sees_long_functions():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    assert _too_long(ast.parse(f"def f():\n{body}\n")) == [f"function f: {MAX_FUNCTION_LINES + 1} lines"]


def test_every_module_is_named_once_in_the_architecture_table():
    """docs/architecture.md's module table names each module by its path under gradcheck_kit/, once, and
    names no module that is gone."""
    import re

    text = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    rows = [line for line in text[text.index("## Modules"):].splitlines() if line.startswith("| `")]
    named = [name for row in rows for name in re.findall(r"`([\w/]+\.py)`", row.split(" | ")[0])]
    modules = sorted(path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py"))
    missing = [m for m in modules if m not in named]
    repeated = sorted({m for m in named if named.count(m) > 1})
    gone = sorted(set(named) - set(modules))
    assert not missing and not repeated and not gone, (missing, repeated, gone)


def test_the_engine_layers_in_the_architecture_doc_hold():
    """The line of engine layers in docs/architecture.md names every engine module once, and each module
    imports only modules of earlier layers."""
    import re

    text = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    start = text.index("Inside the engine each module imports only")
    line = text[text.index(":", start) + 1:text.index(".\n", start)]
    layers = [re.findall(r"`(\w+)`", part) for part in line.split("→")]
    layer_of = {m: n for n, names in enumerate(layers) for m in names}
    engine = sorted(p.stem for p in (PACKAGE / "_engine").glob("*.py") if p.stem != "__init__")
    assert sorted(m for names in layers for m in names) == engine
    graph = _graph()
    wrong = [
        (m, d) for m in engine for d in graph[f"{ENGINE}.{m}"]
        if d.startswith(ENGINE + ".") and layer_of[d.split(".")[2]] >= layer_of[m]
    ]
    assert not wrong, wrong
