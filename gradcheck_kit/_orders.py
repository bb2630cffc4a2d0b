"""Names and wording of the checks of each derivative order (order 2 and up compose: the check of the
first derivative ``G`` names its checks one order higher). Pure string building."""

from __future__ import annotations

__all__ = ["chain", "check_name", "check_title", "second_order_name"]

_ORDINALS = {2: "second", 3: "third", 4: "fourth"}


def _prefix(order: int) -> str:
    return f"{_ORDINALS.get(order, f'order{order}')}_order"


def _order_and_base(check: str) -> tuple[int, str]:
    """A check's derivative order and what it checks: ``second_order`` is (2, ``"backward"``),
    ``third_order_forward`` (3, ``"forward"``), ``second_order_reentrant`` (2, ``"reentrant"``),
    ``forward_ad`` (1, ``"forward"``), ``reentrant`` (1, ``"reentrant"``)."""
    for order in sorted(_ORDINALS, reverse=True):
        prefix = _prefix(order)
        if check == prefix:
            return order, "backward"
        if check.startswith(prefix + "_"):
            rest = check[len(prefix) + 1:]
            return order, "forward" if rest == "forward" else rest
    return 1, {"forward_ad": "forward"}.get(check, check)


def check_name(order: int, base: str) -> str:
    """The name of a check of derivative ``order``: ``backward``/``forward_ad`` at order 1, then
    ``second_order``, ``second_order_forward``, ``second_order_<base>``, ``third_order``, ..."""
    if order == 1:
        return {"forward": "forward_ad"}.get(base, base)
    prefix = _prefix(order)
    if base == "backward":
        return prefix
    return f"{prefix}_{base}"


def second_order_name(check: str) -> str:
    """The name in the outer report of a check of the first derivative ``G``: one order higher
    (``backward`` -> ``second_order``, ``forward_ad`` -> ``second_order_forward``, ``second_order`` ->
    ``third_order``, any other ``name`` -> ``second_order_<name>``)."""
    order, base = _order_and_base(check)
    return check_name(order + 1, base)


def chain(order: int) -> str:
    """``backward of backward of ...`` for a derivative of this order (the messages' wording)."""
    return " of ".join(["backward"] * order)


def check_title(check: str) -> str | None:
    """The heading of a failed check of order 2 and above (``Third derivatives (backward of backward
    of backward) are not close``); None for first-order checks."""
    order, base = _order_and_base(check)
    if order == 1:
        return None
    what = f"{_ORDINALS.get(order, f'Order-{order}').capitalize()} derivatives"
    if base == "backward":
        return f"{what} ({chain(order)}) are not close"
    if base == "forward":
        return f"{what} (forward over {chain(order - 1)}) are not close"
    return f"{what}: {base} is not close"
