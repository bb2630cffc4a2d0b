"""The options of a gradient check, in one place: their allowed values, their validation, their defaults.

``check_gradients``, the pytest plugin (options and marker keywords), the command line and
``gradcheck_kit._config.defaults`` all validate through :func:`check_option`, so a bad value gets the
same one-line :class:`~gradcheck_kit.errors.InvalidArgument` wherever it is given: it names
``arg=value`` (or ``--flag=value``) and what is allowed. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable, Mapping, Sequence

from gradcheck_kit.errors import InvalidArgument

__all__ = [
    "CheckOptions",
    "MODES",
    "FORWARD_AD",
    "ORDERS",
    "SEED_LIMIT",
    "OPTION_NAMES",
    "check_option",
    "parse_option",
    "argparse_type",
    "resolve_options",
    "check_input_names",
    "FLOAT_DTYPES",
    "COMPLEX_DTYPES",
    "FLOATING_DTYPES",
    "LAYOUTS",
    "check_choice",
    "choice_texts",
]

MODES = ("auto", "full", "directional")
FORWARD_AD = ("auto", True, False)
#: derivative orders a check can compose (each order checks the derivative of the one below)
ORDERS = (1, 2, 3, 4)
#: seeds are ints in [0, SEED_LIMIT)
SEED_LIMIT = 2**63
#: real floating dtypes by name: what the plugin casts inputs to (``--gradcheck-dtype``, ``dtype=``)
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
COMPLEX_DTYPES = ("complex64", "complex128")
#: dtypes whose inputs are differentiated
FLOATING_DTYPES = FLOAT_DTYPES + COMPLEX_DTYPES
#: memory layouts the tensor strategies draw (``gst.tensors(layout=...)``, ``gradcheck-kit fuzz --layout``)
LAYOUTS = ("any", "contiguous", "noncontiguous")


@dataclasses.dataclass(frozen=True)
class CheckOptions:
    """The options of one ``check_gradients`` call, validated when built.

    ``mode``: one of :data:`MODES`. ``order``: 1 or 2. ``forward_ad``: ``True``, ``False`` or ``"auto"``.
    ``atol``/``rtol``: finite numbers >= 0, or ``None`` (derived). ``seed``: an int in [0, 2**63).
    ``directions``: an int >= 1, or ``None`` (chosen by size). ``nondet_tol``: a finite number >= 0.
    ``strict``: a bool; entries that agree only approximately fail when it is ``True``.
    ``batched``: a bool; ``True`` also checks fn and its derivatives under ``vmap`` against one call per
    batch entry (the check ``batched``).
    """

    mode: str = "auto"
    order: int = 1
    forward_ad: bool | str = "auto"
    atol: float | None = None
    rtol: float | None = None
    seed: int = 0
    directions: int | None = None
    nondet_tol: float = 0.0
    strict: bool = False
    batched: bool = False

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None and field.name not in NULLABLE:
                raise InvalidArgument(f"{field.name}=None is invalid: {_ALLOWED[field.name]}")
            object.__setattr__(self, field.name, check_option(field.name, value))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def plain(self) -> dict[str, Any]:
        """The options as a new dict of their values (no deep copy: every value is a plain one)."""
        kept = self.__dict__.get("_plain")
        if kept is None:
            kept = {name: getattr(self, name) for name in OPTION_NAMES}
            object.__setattr__(self, "_plain", kept)  # (not a field: equality and as_dict ignore it)
        return dict(kept)

    def replace(self, **changes: Any) -> CheckOptions:
        return dataclasses.replace(self, **changes)


OPTION_NAMES = tuple(field.name for field in dataclasses.fields(CheckOptions))
#: options whose ``None`` is a value of its own (derived from the dtype, chosen by size)
NULLABLE = frozenset({"atol", "rtol", "directions"})

_ALLOWED = {
    "mode": f"must be one of {', '.join(map(repr, MODES))}",
    "order": "must be an int from 1 to 4 (each order checks the derivative of the one below it)",
    "forward_ad": "must be True, False or 'auto'",
    "atol": "must be a finite number >= 0, or None (derived from the dtype)",
    "rtol": "must be a finite number >= 0, or None (derived from the dtype)",
    "seed": "must be an int in [0, 2**63)",
    "directions": "must be an int >= 1, or None (chosen by size)",
    "nondet_tol": "must be a finite number >= 0",
    "strict": "must be True or False",
    "batched": "must be True or False",
}


def _label(name: str, value: Any) -> str:
    """``name=value`` as the user wrote it: ``atol=nan`` for a keyword, ``--seed=-5`` for a flag."""
    if name.startswith("-"):
        return f"{name}={value}"
    return f"{name}={value!r}"


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_option(key: str, value: Any, name: str | None = None, shown: Any = None) -> Any:
    """``value`` of option ``key``, normalized (ints as ``int``, tolerances as ``float``), or an error.

    ``None`` is returned as is (the option is left to its default). ``name`` is the argument as the
    user spelled it in messages (default ``key``; a keyword, a marker keyword or a ``--flag``), and
    ``shown`` the value as the user gave it (default ``value``).
    """
    if key not in _ALLOWED:
        raise InvalidArgument(f"{key!r} is not a check option; known: {', '.join(OPTION_NAMES)}")
    if value is None:
        return None
    name = key if name is None else name
    bad = f"{_label(name, value if shown is None else shown)} is invalid: {_ALLOWED[key]}"
    if key == "mode":
        if not isinstance(value, str) or value not in MODES:
            raise InvalidArgument(bad)
        return value
    if key == "forward_ad":
        if value == "auto" and isinstance(value, str):
            return value
        if not isinstance(value, bool):
            raise InvalidArgument(bad)
        return value
    if key in ("strict", "batched"):
        if not isinstance(value, bool):
            raise InvalidArgument(bad)
        return value
    if key in ("order", "seed", "directions"):
        if not _is_int(value):
            raise InvalidArgument(bad)
        value = int(value)
        if key == "order" and value not in ORDERS:
            raise InvalidArgument(bad)
        if key == "seed" and not 0 <= value < SEED_LIMIT:
            raise InvalidArgument(bad)
        if key == "directions" and value < 1:
            raise InvalidArgument(bad)
        return value
    # atol, rtol, nondet_tol
    if not _is_real(value) or not math.isfinite(value) or value < 0:
        raise InvalidArgument(bad)
    return float(value)


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def parse_option(key: str, text: str, flag: str) -> Any:
    """The value of option ``key`` given as the string ``text`` on a command line as ``flag``.

    For the command line and the pytest plugin: ``parse_option("seed", "-5", "--seed")`` raises
    ``InvalidArgument("--seed=-5 is invalid: must be an int in [0, 2**63)")``.
    """
    if key not in _ALLOWED:
        raise InvalidArgument(f"{key!r} is not a check option; known: {', '.join(OPTION_NAMES)}")
    raw = str(text).strip()
    bad = InvalidArgument(f"{_label(flag, text)} is invalid: {_ALLOWED[key]}")
    value: Any
    if key == "mode":
        value = raw
    elif key in ("forward_ad", "strict", "batched"):
        lowered = raw.lower()
        if key == "forward_ad" and lowered == "auto":
            value = "auto"
        elif lowered in _TRUE:
            value = True
        elif lowered in _FALSE:
            value = False
        else:
            raise bad
    elif key in ("order", "seed", "directions"):
        try:
            value = int(raw)
        except ValueError:
            raise bad from None
    else:
        if key in NULLABLE and raw.lower() == "none":
            return None
        try:
            value = float(raw)
        except ValueError:
            raise bad from None
    return check_option(key, value, flag, shown=text)


def choice_texts(key: str) -> tuple[str, ...]:
    """The values of option ``key`` as written on a command line, for help texts and ``choices``
    (``("auto", "true", "false")`` for ``forward_ad``); empty for an option that is not a choice."""
    if key == "mode":
        return MODES
    if key == "order":
        return tuple(str(order) for order in ORDERS)
    if key == "forward_ad":
        return tuple(str(value).lower() for value in FORWARD_AD)
    if key in ("strict", "batched"):
        return ("true", "false")
    return ()


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` when it is one of ``choices``, else ``InvalidArgument`` naming ``name=value``
    (``dtype='int64' is invalid: must be one of 'float16', ...``)."""
    if value in choices and type(value) in {type(choice) for choice in choices}:
        return value
    raise InvalidArgument(f"{_label(name, value)} is invalid: must be one of {', '.join(map(repr, choices))}")


def argparse_type(key: str, flag: str) -> Callable[[str], Any]:
    """An ``argparse`` ``type=`` for option ``key``: its message is :func:`parse_option`'s."""

    def convert(text: str) -> Any:
        import argparse

        try:
            return parse_option(key, text, flag)
        except InvalidArgument as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = key  # argparse names the type in some messages
    return convert


_RESOLVED: dict[tuple, CheckOptions] = {}  # options already validated, by their values and types
_RESOLVED_MOST = 256
_PLAIN = (bool, int, float, str, type(None))


def _options_key(given: Mapping[str, Any], defaults: Mapping[str, Any]) -> tuple | None:
    """A key for options made of plain values only (each with its type: ``True`` is not ``1``), else None."""
    items = []
    for source in (given, defaults):
        for key, value in source.items():
            if type(value) not in _PLAIN:
                return None
            items.append((key, type(value).__name__, value))
    return (len(given), *items)


def resolve_options(given: Mapping[str, Any], defaults: Mapping[str, Any]) -> CheckOptions:
    """The options of a check: each given value, or where it is ``None`` the default in force, or the
    built-in default. Every value is validated; a bad one raises naming the keyword. Options of plain
    values are validated once and the result (frozen) reused."""
    key = _options_key(given, defaults)
    found = _RESOLVED.get(key) if key is not None else None
    if found is not None:
        return found
    options = _resolve_options(given, defaults)
    if key is not None:
        if len(_RESOLVED) >= _RESOLVED_MOST:
            _RESOLVED.clear()
        _RESOLVED[key] = options
    return options


def _resolve_options(given: Mapping[str, Any], defaults: Mapping[str, Any]) -> CheckOptions:
    unknown = sorted(set(given) - set(OPTION_NAMES))
    if unknown:
        raise InvalidArgument(f"unknown option(s) {unknown}; known: {list(OPTION_NAMES)}")
    values: dict[str, Any] = {}
    for key in OPTION_NAMES:
        value = given.get(key)
        if value is None:
            value = defaults.get(key)
        if value is None and key not in NULLABLE:
            continue  # the dataclass default
        values[key] = check_option(key, value)
    return CheckOptions(**values)


def check_input_names(value: Any, count: int) -> list[str] | None:
    """``input_names``: None, or a sequence (not a str) of ``count`` non-empty strings."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidArgument(
            f"input_names={value!r} is a {type(value).__name__}: pass a sequence of names, one str per input"
        )
    names = list(value)
    if len(names) != count or not all(isinstance(name, str) and name for name in names):
        raise InvalidArgument(f"input_names={value!r} must hold {count} non-empty str(s), one per input")
    return names
