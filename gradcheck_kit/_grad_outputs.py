"""Checks of a user's ``grad_outputs`` (the vectors ``v`` given to backward) that hold whatever fn returns.

A NaN or inf in ``v`` makes every product ``v·J`` non-finite, and NaN is unequal to itself, so two
backward passes seem to disagree: the check would blame the function for the argument. Such a ``v`` is an
:class:`InvalidArgument` up front.
"""

from __future__ import annotations

from typing import Any

import torch

from gradcheck_kit.errors import InvalidArgument

__all__ = ["reject_nonfinite"]


def reject_nonfinite(grad_outputs: Any) -> None:
    """:class:`InvalidArgument` naming the first tensor of ``grad_outputs`` (a tensor or a sequence of them)
    that holds NaN or inf. Anything else (``None``, a non-tensor item, a meta or sparse tensor) is left to
    the callers' other checks."""
    if grad_outputs is None:
        return
    single = isinstance(grad_outputs, torch.Tensor)
    items = (grad_outputs,) if single else grad_outputs
    if not isinstance(items, (tuple, list)):
        return
    for k, g in enumerate(items):
        if not isinstance(g, torch.Tensor) or g.layout != torch.strided or g.device.type == "meta":
            continue
        if not (g.is_floating_point() or g.is_complex()):
            continue
        bad = ~torch.isfinite(g.detach())
        count = int(bad.sum())
        if count:
            where = tuple(int(i) for i in bad.nonzero()[0]) if g.dim() else ()
            value = g.detach()[where].item()
            name = "grad_outputs" if single else f"grad_outputs[{k}]"
            raise InvalidArgument(
                f"{name} holds {count} non-finite value(s) of {g.numel()} (first: {name}{list(where)}={value}); "
                "the vector given to backward must be finite"
            )
