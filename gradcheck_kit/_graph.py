"""What an autograd graph holds, read by walking ``grad_fn`` from its outputs (no backward runs).

A batched backward (``torch.autograd.grad(..., is_grads_batched=True)``) hands a custom
``autograd.Function``'s ``backward`` a batched tensor; one that reads ``grad_output.data`` (common in older
libraries that go through NumPy) crashes the process there instead of raising. The checker therefore
never runs that batched backward through a graph holding such a node (``python_function_nodes``) and
computes those rows one backward at a time.
"""

from __future__ import annotations

from typing import Iterable

import torch

__all__ = ["python_function_nodes"]

#: nodes visited at most (a graph this large is treated as holding a Python node: one backward per row)
MAX_NODES = 1 << 16


def python_function_nodes(outputs: Iterable[torch.Tensor]) -> list[str]:
    """Names of the custom ``autograd.Function`` classes whose backward the graph of ``outputs`` runs, in
    the order first met (``["<graph too large to inspect>"]`` past ``MAX_NODES`` nodes)."""
    stack = [o.grad_fn for o in outputs if isinstance(o, torch.Tensor) and o.grad_fn is not None]
    seen: dict[int, object] = {}  # the nodes themselves held, so that no id is reused during the walk
    names: list[str] = []
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen[id(node)] = node
        if len(seen) > MAX_NODES:
            return names + ["<graph too large to inspect>"]
        if _is_python_node(node):
            name = _forward_name(node)
            if name not in names:
                names.append(name)
        stack.extend(child for child, _ in node.next_functions if child is not None)
    return names


def _is_python_node(node: object) -> bool:
    # a custom Function's node is an instance of its BackwardCFunction subclass (``_forward_cls`` set)
    return isinstance(node, torch.autograd.function.BackwardCFunction) or hasattr(node, "_forward_cls")


def _forward_name(node: object) -> str:
    forward_cls = getattr(node, "_forward_cls", None)
    if forward_cls is not None:
        return getattr(forward_cls, "__qualname__", forward_cls.__name__)
    return type(node).__name__
