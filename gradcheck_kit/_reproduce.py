"""Reproduce lines: Python that re-runs a failed check in a fresh interpreter.

A line imports the checked function where it can be imported (``from mymod import fn``); otherwise it
says, in a trailing comment, which object the reader must supply (a lambda, a local function, a module
instance). Small inputs are written inline (``torch.tensor([...], dtype=torch.float32)``); larger ones, or
ones whose layout a literal would lose, are saved with ``torch.save`` to a file under the temporary
directory and loaded by the line. Nothing here checks gradients; the checkers and assertions build the line
when a check fails.
"""

from __future__ import annotations

import ast
import hashlib
import io
import keyword
import math
import os
import sys
import tempfile
from typing import Any, Sequence

import torch

__all__ = ["INLINE_ELEMENTS", "reproduce_line", "function_binding", "bind_values", "save_dir"]

#: a tensor with at most this many elements (contiguous, strided) is written inline
INLINE_ELEMENTS = 20
_RESERVED = {"torch", "gk", "inputs"}


def save_dir() -> str:
    """Where reproduce files go: ``$GRADCHECK_KIT_REPRO_DIR`` or ``<tempdir>/gradcheck_kit``."""
    return os.environ.get("GRADCHECK_KIT_REPRO_DIR") or os.path.join(tempfile.gettempdir(), "gradcheck_kit")


def _importable(fn: Any) -> tuple[str, str] | None:
    """``(module, qualname)`` when ``from module import qualname's head`` gives back ``fn``."""
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, type) and getattr(fn, "__name__", None):  # a classmethod (MyFunction.apply)
        found = _importable(owner)
        if found is None or getattr(owner, fn.__name__, None) != fn:
            return None
        return found[0], f"{found[1]}.{fn.__name__}"
    target = getattr(fn, "__func__", None) if hasattr(fn, "__self__") and not isinstance(fn.__self__, type) else fn
    if target is None:
        return None
    module = getattr(fn, "__module__", None)
    qual = getattr(fn, "__qualname__", None)
    if not module or not qual or "<" in qual or module == "__main__" or module.startswith("torch._C"):
        return None
    obj: Any = sys.modules.get(module)
    for part in qual.split("."):
        obj = getattr(obj, part, None)
    if obj is not fn and obj is not target:
        return None
    return module, qual


def _resolves(spelled: str, fn: Any) -> bool:
    import torch.nn.functional as F

    head, *rest = spelled.split(".")
    obj: Any = {"torch": torch, "F": F}[head]
    for part in rest:
        obj = getattr(obj, part, None)
    return obj is fn


def _where(fn: Any) -> str:
    code = getattr(fn, "__code__", None)
    if code is None:
        return ""
    return f" at {os.path.basename(code.co_filename)}:{code.co_firstlineno}"


def function_binding(fn: Any, subject: str, avoid: Sequence[str]) -> tuple[str, str, str]:
    """``(import statement or "", expression naming fn, comment or "")``."""
    found = _importable(fn)
    if found is not None:
        module, qual = found
        head, _, rest = qual.partition(".")
        alias = head if head not in avoid and head not in _RESERVED else f"{head}_"
        statement = f"from {module} import {head}" + (f" as {alias}" if alias != head else "")
        return statement, alias + (f".{rest}" if rest else ""), ""
    from gradcheck_kit._inputs import function_name

    spelled = function_name(fn)  # torch's builtins: torch.tanh, F.gelu, torch.linalg.det
    if spelled.startswith(("torch.", "F.")) and _resolves(spelled, fn):
        return ("import torch.nn.functional as F" if spelled.startswith("F.") else ""), spelled, ""
    qual = getattr(fn, "__qualname__", None) or ""
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, type):
        qual = f"{owner.__qualname__}.{getattr(fn, '__name__', '')}"
        if owner.__module__ == "__main__" or "<locals>" in qual:
            return "", subject, f"{subject}: {qual} (not importable: pass it yourself)"
    if getattr(fn, "__name__", "") == "<lambda>":
        what = f"the lambda{_where(fn)}"
    elif "<locals>" in qual:
        what = f"the local function {qual.rsplit('.', 1)[-1]}{_where(fn)}"
    elif getattr(fn, "__module__", None) == "__main__" and qual:
        what = f"{qual} from your script"
    elif qual and hasattr(fn, "__code__"):
        what = f"{qual}{_where(fn)}"
    elif callable(fn) and type(fn).__name__ == "builtin_function_or_method":
        what = spelled
    else:
        what = f"the {type(fn).__name__} object you checked"
    return "", subject, f"{subject}: {what} (not importable: pass it yourself)"


def _literal(value: float | complex) -> str:
    if isinstance(value, complex):
        return f"complex({_literal(value.real)}, {_literal(value.imag)})"
    if isinstance(value, float) and not math.isfinite(value):
        return "float('nan')" if math.isnan(value) else ("float('inf')" if value > 0 else "-float('inf')")
    return repr(value)


def _nested(values: Any) -> str:
    if isinstance(values, list):
        return "[" + ", ".join(_nested(v) for v in values) + "]"
    return _literal(values)


def _inline_tensor(t: torch.Tensor) -> str | None:
    if t.layout != torch.strided or t.numel() > INLINE_ELEMENTS or not t.is_contiguous() or t.storage_offset():
        return None
    if t.is_quantized or t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        return None
    data = t.detach().cpu()
    values = data.tolist()
    if t.numel() == 0:
        body = f"torch.empty({tuple(t.shape)!r}"
    elif t.dim() == 0:
        body = f"torch.tensor({_literal(values)}"
    else:
        body = f"torch.tensor({_nested(values)}"
    body += f", dtype={t.dtype}"
    if t.device.type != "cpu":
        body += f", device={str(t.device)!r}"
    if t.requires_grad:
        body += ", requires_grad=True"
    return body + ")"


def _inline(value: Any) -> str | None:
    if isinstance(value, torch.Tensor):
        return _inline_tensor(value)
    if isinstance(value, (tuple, list)):
        parts = [_inline(v) for v in value]
        if any(p is None for p in parts):
            return None
        if isinstance(value, tuple):
            return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
        return "[" + ", ".join(parts) + "]"
    if value is None or isinstance(value, (bool, int, float, complex, str)):
        text = _literal(value) if isinstance(value, (float, complex)) else repr(value)
        try:
            ast.literal_eval(repr(value))
        except (ValueError, SyntaxError):
            if not isinstance(value, (float, complex)):
                return None
        return text
    if isinstance(value, torch.dtype):
        return str(value)
    return None


def _savable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        saved = value.detach().clone() if value.is_contiguous() and not value.storage_offset() else value.detach()
        if value.requires_grad and (saved.is_floating_point() or saved.is_complex()):
            saved = saved.requires_grad_(True)
        return saved
    if isinstance(value, (tuple, list)):
        return type(value)(_savable(v) for v in value)
    return value


def bind_values(named: Sequence[tuple[str, Any]], label: str) -> tuple[list[str], list[str], str]:
    """Code binding each value to a name: ``(statements, names, unsupplied)``; ``unsupplied`` names the
    values neither a literal nor a saved file can carry (the reader passes them)."""
    names: list[str] = []
    for i, (name, _) in enumerate(named):
        names.append(_identifier(name, i, set(names), {n for n, _ in named}))
    inline = [_inline(v) for _, v in named]
    if all(code is not None for code in inline):
        return [f"{n} = {code}" for n, code in zip(names, inline)], names, ""
    payload = [_savable(v) for _, v in named]
    buffer = io.BytesIO()
    try:
        torch.save(payload, buffer)
        torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    except Exception:  # noqa: BLE001 - a value torch.save/weights-only load cannot carry: the reader supplies it
        statements = [f"{n} = {code}" for n, code in zip(names, inline) if code is not None]
        missing = [n for n, code in zip(names, inline) if code is None]
        return statements, names, ", ".join(missing) + ": the values you checked (pass them yourself)"
    data = buffer.getvalue()
    directory = save_dir()
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{label}-{hashlib.sha1(data).hexdigest()[:12]}.pt")
    with open(path, "wb") as handle:
        handle.write(data)
    target = ", ".join(names) + ("," if len(names) == 1 else "")
    return [f"{target} = torch.load({path!r})"], names, ""


def _identifier(name: str, i: int, used: set, avoid: set) -> str:
    if name.isidentifier() and not keyword.iskeyword(name) and name not in _RESERVED and name not in used:
        return name
    candidate = f"input{i}"
    while candidate in used or candidate in avoid:
        candidate += "_"
    return candidate


def reproduce_line(
    fn: Any,
    call: str,
    named: Sequence[tuple[str, Any]],
    arguments: Any,
    keywords: Sequence[str] = (),
    subject: str = "fn",
) -> str:
    """One line of Python that runs ``gk.<call>(fn, <arguments>, <keywords>)`` on the values in ``named``.

    ``arguments(names)`` returns the positional argument text from the bound names.
    """
    from gradcheck_kit._inputs import function_name

    label = "".join(c if c.isalnum() or c in "_-." else "_" for c in function_name(fn))
    statements, names, unsupplied = bind_values(named, label[:40] or subject)
    imported, expression, comment = function_binding(fn, subject, names)
    args = ", ".join(part for part in (arguments(names), *keywords) if part)
    code = ["import torch, gradcheck_kit as gk"]
    if imported:
        code.append(imported)
    code.extend(statements)
    code.append(f"gk.{call}({expression}, {args})")
    comments = [c for c in (comment, unsupplied) if c]
    return "; ".join(code) + ("  # " + "; ".join(comments) if comments else "")
