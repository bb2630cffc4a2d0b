"""What an autograd graph holds, read by walking ``grad_fn`` from its outputs (no backward runs).

A batched backward (``torch.autograd.grad(..., is_grads_batched=True)``) hands a custom
``autograd.Function``'s ``backward`` a batched tensor; one that reads ``grad_output.data`` (common in older
libraries that go through NumPy) crashes the process there instead of raising. The checker therefore
never runs that batched backward through a graph holding such a node (``python_function_nodes``) and
computes those rows one backward at a time.

Python hooks (``Tensor.register_hook``, ``Node.register_hook``/``register_prehook``, a module's
``register_backward_hook``) crash the same way, and no walk sees them: C++ nodes do not expose their hooks.
``PythonInBackward`` watches one plain backward for Python code that autograd's engine calls; where it
ran, the other rows come one backward at a time too. It watches the calling thread only, where autograd
runs a CPU graph's backward (a GPU graph's runs on the engine's device threads, unwatched).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch

__all__ = [
    "Facts", "facts", "python_function_nodes", "python_function_classes", "builtin_size", "lacks_jvp",
    "lacks_setup_context", "PythonInBackward",
]

#: nodes visited at most (a graph this large is treated as holding a Python node: one backward per row)
MAX_NODES = 1 << 16


def _walk(outputs: Iterable[torch.Tensor]) -> Iterator[Any]:
    """The nodes of the graph of ``outputs``, each once, from the outputs down; where the graph has more than
    ``MAX_NODES`` nodes, ``None`` after the first ``MAX_NODES`` and no more."""
    stack = [o.grad_fn for o in outputs if isinstance(o, torch.Tensor) and o.grad_fn is not None]
    seen: dict[int, object] = {}  # the nodes themselves held, so that no id is reused during the walk
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen[id(node)] = node
        if len(seen) > MAX_NODES:
            yield None
            return
        yield node
        stack.extend(child for child, _ in node.next_functions if child is not None)


@dataclass(frozen=True)
class Facts:
    """What one walk of a graph finds: the custom ``autograd.Function`` classes whose backward it runs (those
    whose class is known) and their names, in the order first met, and its number of built-in operations.
    Past ``MAX_NODES`` nodes the walk stops: ``names`` ends with ``"<graph too large to inspect>"`` and
    ``builtin_size`` is None."""

    classes: tuple[type, ...]
    names: tuple[str, ...]
    builtin_size: int | None  # operations other than the leaves' accumulators; None where a custom one is among them


def facts(outputs: Iterable[torch.Tensor]) -> Facts:
    """:class:`Facts` of the graph of ``outputs``, in one walk."""
    classes: list[type] = []
    names: list[str] = []
    operations: int | None = 0
    for node in _walk(outputs):
        if node is None:
            return Facts(tuple(classes), tuple(names) + ("<graph too large to inspect>",), None)
        if _is_python_node(node):
            operations = None
            name = _forward_name(node)
            if name not in names:
                names.append(name)
        elif operations is not None:
            operations += type(node).__name__ != "AccumulateGrad"
        forward_cls = getattr(node, "_forward_cls", None)
        if forward_cls is not None and forward_cls not in classes:
            classes.append(forward_cls)
    return Facts(tuple(classes), tuple(names), operations)


def python_function_nodes(outputs: Iterable[torch.Tensor]) -> list[str]:
    """Names of the custom ``autograd.Function`` classes whose backward the graph of ``outputs`` runs, in
    the order first met (``["<graph too large to inspect>"]`` past ``MAX_NODES`` nodes)."""
    return list(facts(outputs).names)


def python_function_classes(outputs: Iterable[torch.Tensor]) -> list[type]:
    """The custom ``autograd.Function`` classes whose backward the graph of ``outputs`` runs (those whose
    class is known; the walk stops after ``MAX_NODES`` nodes)."""
    return list(facts(outputs).classes)


def builtin_size(outputs: Iterable[torch.Tensor]) -> int | None:
    """The number of operations (nodes other than the leaves' gradient accumulators) in the graph of
    ``outputs`` where none is a custom ``autograd.Function``'s (torch's built-in operations only), else None
    (also past ``MAX_NODES`` nodes)."""
    return facts(outputs).builtin_size


def lacks_jvp(cls: type) -> bool:
    """Whether the custom ``autograd.Function`` class ``cls`` has no forward-mode rule of its own."""
    return _inherited(cls, "jvp")


def lacks_setup_context(cls: type) -> bool:
    """Whether the custom ``autograd.Function`` class ``cls`` defines its context in ``forward`` (no
    ``setup_context``): torch refuses such a Function under every functorch transform (vmap among them)."""
    return _inherited(cls, "setup_context")


def _inherited(cls: type, name: str) -> bool:
    # ``autograd.Function``'s own placeholder, not overridden by ``cls``
    return getattr(cls, name, None) is getattr(torch.autograd.Function, name, None)


def _is_python_node(node: object) -> bool:
    # a custom Function's node is an instance of its BackwardCFunction subclass (``_forward_cls`` set)
    return isinstance(node, torch.autograd.function.BackwardCFunction) or hasattr(node, "_forward_cls")


def _forward_name(node: object) -> str:
    forward_cls = getattr(node, "_forward_cls", None)
    if forward_cls is not None:
        return getattr(forward_cls, "__qualname__", forward_cls.__name__)
    return type(node).__name__


class PythonInBackward:
    """``with PythonInBackward() as probe: torch.autograd.grad(...)``: ``probe.ran`` tells whether autograd's
    engine called Python code (a hook, a custom Function's backward) during the block, on this thread.

    ``probe.watching`` is false (nothing is watched) where another profile function is installed
    (``sys.setprofile``: a profiler), which is left alone."""

    def __init__(self) -> None:
        self.ran = False
        self.watching = False
        self._inside = 0

    def __enter__(self) -> "PythonInBackward":
        if sys.getprofile() is None:
            self.watching = True
            sys.setprofile(self._event)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.watching:
            sys.setprofile(None)

    def _event(self, frame: Any, event: str, arg: Any) -> None:
        # the engine is entered through the builtin run_backward; a Python frame started while inside it
        # is Python code the engine called
        if event == "c_call" and getattr(arg, "__name__", "") == "run_backward":
            self._inside += 1
        elif event in ("c_return", "c_exception") and getattr(arg, "__name__", "") == "run_backward":
            self._inside -= 1
        elif event == "call" and self._inside > 0:
            self.ran = True
