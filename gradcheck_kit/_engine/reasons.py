"""Plain reasons for the paths a check could not take, from torch's exception messages.

torch explains why ``vmap`` or forward-mode AD cannot run a function in long messages written for its
own developers. A report says the cause in a few words instead (``"fn has a custom autograd.Function
without a vmap rule"``); the exception's type stays in the text where no known cause matches.
"""

from __future__ import annotations

__all__ = ["vmap_reason", "forward_ad_reason", "NO_JVP", "NO_VMAP_RULE"]

#: why vmap cannot run a graph holding a custom autograd.Function without a vmap rule
NO_VMAP_RULE = "fn has a custom autograd.Function without a vmap rule"

# (fragment of torch's message, lowercased) -> the cause in words; the first match wins
_VMAP_CAUSES = (
    ("autograd.function with functorch transforms", NO_VMAP_RULE),
    ("setup_context", NO_VMAP_RULE),
    ("requires_grad_()", "fn calls autograd inside (requires_grad_ or torch.autograd.grad)"),
    ("autograd.grad", "fn calls autograd inside (requires_grad_ or torch.autograd.grad)"),
    (".item()", "fn reads a tensor's value as a Python number (.item(), float(), bool())"),
    ("data-dependent control flow", "fn branches on a tensor's value (data-dependent control flow)"),
    ("data dependent", "fn branches on a tensor's value (data-dependent control flow)"),
    ("randomness", "fn draws random numbers"),
    ("random", "fn draws random numbers"),
    ("batching rule", "an operation in fn has no vmap batching rule"),
    ("not implemented for", "an operation in fn has no vmap batching rule"),
    ("in-place", "fn writes in place into a tensor that vmap does not batch"),
    ("inplace", "fn writes in place into a tensor that vmap does not batch"),
    ("out= ", "fn writes into a preallocated out= tensor"),
    ("returned a", "fn returns something other than tensors"),
)

#: why forward-mode AD cannot run a graph holding a custom autograd.Function without a jvp
NO_JVP = "fn has a custom autograd.Function without a jvp (forward-mode) rule"

_FORWARD_CAUSES = (
    ("jvp function for custom autograd.function", NO_JVP),
    ("autograd.function", NO_JVP),
    ("trying to use forward ad with", "an operation in fn has no forward-mode derivative in torch"),
    ("forward ad", "an operation in fn has no forward-mode derivative in torch"),
    ("forward-mode", "an operation in fn has no forward-mode derivative in torch"),
    ("not implemented", "an operation in fn has no forward-mode derivative in torch"),
)


def _exception_type(described: str) -> str:
    head = described.split(":", 1)[0].strip()
    return head if head.isidentifier() else "an exception"


def _operation(described: str) -> str:
    """The torch operation a forward-AD message names (``Trying to use forward AD with cumprod ...``)."""
    marker = "forward AD with "
    if marker in described:
        return described.split(marker, 1)[1].split()[0].strip("'\"`.,")
    return ""


def vmap_reason(described: str) -> str:
    """Why vmap could not run fn, from ``describe_exception``'s text (``"RuntimeError: In order to use an
    autograd.Function with functorch transforms ..."``)."""
    lowered = described.lower()
    for fragment, cause in _VMAP_CAUSES:
        if fragment in lowered:
            return cause
    return f"vmap raised {_exception_type(described)}"


def forward_ad_reason(described: str) -> str:
    """Why forward-mode AD could not run fn, in words."""
    lowered = described.lower()
    for fragment, cause in _FORWARD_CAUSES:
        if fragment in lowered:
            if cause.startswith("an operation") and _operation(described):
                return f"torch's {_operation(described)} has no forward-mode derivative"
            return cause
    return f"forward-mode AD raised {_exception_type(described)}"
