"""The public surface of gradcheck_kit.strategies: honest __all__, lazy pieces, cheap imports, and
strategies built from Hypothesis's public API only."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import gradcheck_kit
from gradcheck_kit import strategies as gst

EXPRESSION_NAMES = {"expressions", "Expression", "Op"}


def test_all_is_sorted_and_every_name_resolves():
    assert gst.__all__ == sorted(gst.__all__)
    for name in set(gst.__all__) - EXPRESSION_NAMES:
        assert getattr(gst, name) is not None, name
    assert set(gst.__all__) <= set(dir(gst))


def test_expression_names_are_reexported_lazily():
    assert EXPRESSION_NAMES <= set(gst.__all__)
    code = (
        "import sys; from gradcheck_kit import strategies as gst; "
        "assert 'sympy' not in sys.modules, 'sympy imported'; "
        "assert callable(gst.expressions) and 'sympy' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    for name in EXPRESSION_NAMES:
        value = getattr(gst, name)
        assert value.__module__.startswith("gradcheck_kit.strategies.symbolic."), name
        assert getattr(importlib.import_module(value.__module__), name) is value


def test_a_submodule_import_does_not_shadow_a_strategy():
    for module in ("gradcheck_kit.strategies.symbolic.builder", "gradcheck_kit.strategies.tensor_strategies"):
        importlib.import_module(module)
    assert callable(gst.expressions) and callable(gst.tensors) and callable(gst.shapes)


def test_no_class_subclasses_hypothesis_search_strategy():
    """Strategies are built with ``@st.composite`` and public combinators, never by subclassing
    Hypothesis's non-public ``SearchStrategy`` (its ``do_draw`` is internal API)."""
    package = Path(gst.__file__).resolve().parents[1]
    offenders = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(base) for base in node.bases]
                if any(base.split(".")[-1] == "SearchStrategy" for base in bases):
                    offenders.append(f"{path.relative_to(package)}:{node.lineno} {node.name}({', '.join(bases)})")
            if isinstance(node, ast.FunctionDef) and node.name == "do_draw":
                offenders.append(f"{path.relative_to(package)}:{node.lineno} do_draw")
    assert not offenders


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="module 'gradcheck_kit.strategies' has no attribute 'nope'"):
        gst.nope


def test_reachable_from_the_package():
    assert gradcheck_kit.strategies is gst
    assert gradcheck_kit.fuzz_gradients.__module__ == "gradcheck_kit.fuzz"
    assert gradcheck_kit.FuzzReport.__module__ == "gradcheck_kit.fuzz"


def test_importing_the_package_and_fuzz_does_not_import_hypothesis():
    code = (
        "import sys, gradcheck_kit as gk; gk.fuzz_gradients; gk.FuzzReport; "
        "assert 'hypothesis' not in sys.modules, 'hypothesis imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_hypothesis_hook_imports_neither_hypothesis_nor_torch():
    """The pytest plugin and Hypothesis's entry point import it: it must stay cheap."""
    code = (
        "import sys, gradcheck_kit._hypothesis_hook; "
        "print(sorted(m for m in ('hypothesis', 'torch', 'sympy', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _strategies_import_graph() -> dict[str, set[str]]:
    """Module -> the modules of gradcheck_kit.strategies it imports, at any level (inside functions too)."""
    root = Path(gst.__file__).resolve().parent
    names = {}
    for path in root.rglob("*.py"):
        parts = ("gradcheck_kit", "strategies", *path.relative_to(root).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in names.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module in names:
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in names}
        graph[name] = deps - {name}
    return graph


def test_the_strategies_modules_import_each_other_in_one_direction():
    graph = _strategies_import_graph()
    assert "gradcheck_kit.strategies.symbolic.ops" in graph
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(module):] + (module,)))
        if module not in done:
            for dep in sorted(graph[module]):
                visit(dep, path + (module,))
            done.add(module)

    for module in sorted(graph):
        visit(module, ())
