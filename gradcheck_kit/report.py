"""What a gradient check found: the report and its parts.

Pure data: nothing here computes a derivative or raises a mismatch, and the text and the dict a report
reads as are built in ``gradcheck_kit._render`` (the methods below hand over to it).

A :class:`GradientReport` collects :class:`Mismatch` rows (capped), one :class:`CheckResult` per check
that ran or was skipped, per-group counts (:class:`GroupSummary`) so a message can say "2 of 144
entries", and :class:`Note` s. Statuses, check names, derivative kinds and note codes are the enums
:class:`Status`, :class:`CheckName`, :class:`DerivativeKind` and :class:`NoteCode`: each member is a
``str`` equal to its value (``Status.PASSED == "passed"``), so comparing with plain strings and the
report's dict are as before.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

from gradcheck_kit import _render
from gradcheck_kit._render import format_index

__all__ = [
    "ALL_INPUTS",
    "CheckName",
    "CheckResult",
    "DerivativeKind",
    "GradientReport",
    "GroupSummary",
    "InputInfo",
    "Mismatch",
    "Note",
    "NoteCode",
    "Status",
    "format_index",
    "unique_notes",
]

#: ``input_index`` of a directional derivative taken along all differentiated inputs at once (and of the
#: compiled check's comparison of the outputs themselves): no single input it is with respect to
ALL_INPUTS = -1


class _Code(str, enum.Enum):
    """A code that is its string: ``==``, hashing, ``str()``, formatting and JSON give the value."""

    __str__ = str.__str__
    __format__ = str.__format__

    @classmethod
    def coerce(cls, value: Any) -> Any:
        """The member whose value ``value`` is, or ``value`` itself where no member has it."""
        return cls._value2member_map_.get(value, value)


class Status(_Code):
    """The verdict of one check."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    ERROR = "error"


#: statuses that make a report fail
FAILING = frozenset({Status.FAILED, Status.ERROR})


class CheckName(_Code):
    """The checks of the first derivative and beside it. Checks of higher orders compose their names
    (``second_order``, ``second_order_forward``, ``third_order_reentrant``: ``gradcheck_kit._orders``);
    the second-order ones that have their own heading are members too."""

    BACKWARD = "backward"
    FORWARD_AD = "forward_ad"
    REENTRANT = "reentrant"
    ZERO_GRAD_OUTPUT = "zero_grad_output"
    LINEARITY = "linearity"
    COMPILED = "compiled"
    BATCHED = "batched"
    BIAS = "bias"
    SECOND_ORDER = "second_order"
    SECOND_ORDER_FORWARD = "second_order_forward"


class DerivativeKind(_Code):
    """What a :class:`Mismatch` (and a :class:`GroupSummary`) compared."""

    #: one Jacobian entry ``d out[j] / d x[i]``
    JACOBIAN = "jacobian"
    #: ``d(v·out) / d x[i]``
    PROJECTED = "projected"
    #: ``d(v·out) / dt`` along a random direction
    DIRECTIONAL = "directional"


class NoteCode(_Code):
    """Machine-readable kinds of :class:`Note`."""

    UNCHECKED_NONFINITE = "unchecked_nonfinite"
    UNCHECKED_JUMP = "unchecked_jump"
    UNCHECKED_UNDERFLOW = "unchecked_underflow"
    UNCHECKED_FLAT = "unchecked_flat"
    UNCHECKED_UNKNOWN = "unchecked_unknown"
    TIE = "tie"
    KINK_AT_POINT = "kink_at_point"
    APPROXIMATE = "approximate"
    COMPILED = "compiled"
    OUTPUT_NONE = "output_none"
    SECOND_OPINIONS = "second_opinions"
    COST_PLAN = "cost_plan"
    STAIRCASE = "staircase"
    REFERENCE_DIFFERS = "reference_differs"
    NO_GRADIENT_FLOW = "no_gradient_flow"
    BACKWARD_NOT_DIFFERENTIABLE = "backward_not_differentiable"
    KINK = "kink"
    KINK_IN_STENCIL = "kink_in_stencil"
    ONE_SIDED = "one_sided"
    SECOND_SAMPLE = "second_sample"
    OBSERVED_ROUNDING = "observed_rounding"
    REFINED = "refined"
    REESTIMATED = "reestimated"
    CONDITIONING = "conditioning"
    NARROWED = "narrowed"
    NOT_NARROWED = "not_narrowed"
    PINPOINTED = "pinpointed"
    LOW_PRECISION_OUTPUTS = "low_precision_outputs"
    INPUT_MODIFIED = "input_modified"
    GRAD_INSIDE = "grad_inside"
    NONFINITE_INPUTS = "nonfinite_inputs"
    FLOAT64_REFERENCE = "float64_reference"
    NO_FLOAT64 = "no_float64"
    FULL_COST = "full_cost"


class Note(str):
    """A report note: its text, with a machine-readable ``code`` (a :class:`NoteCode`, or a str for a code
    the kit does not list) and ``fields``, the values that tell two notes of one code apart (the input,
    the elements, the output). Two notes are the same note when their :attr:`key` is."""

    code: Any
    fields: Optional[tuple]

    def __new__(cls, text: str, code: Any, fields: Optional[Iterable] = None) -> "Note":
        note = super().__new__(cls, text)
        note.code = NoteCode.coerce(code)
        note.fields = None if fields is None else tuple(fields)
        return note

    @property
    def key(self) -> tuple:
        """``(code, fields)``; a note that declares no fields is told apart by its text as well."""
        return (self.code, self.fields if self.fields is not None else str(self))

    def __reduce__(self):
        return (Note, (str(self), self.code, self.fields))


def note_key(note: Any) -> tuple:
    """A note's identity: :attr:`Note.key`, or ``(None, text)`` for a note given as a plain str."""
    return note.key if isinstance(note, Note) else (None, str(note))


def unique_notes(notes: Iterable) -> list:
    """``notes`` without repeats (the same :func:`note_key`), first occurrence kept, order kept."""
    seen: set = set()
    kept = []
    for note in notes:
        key = note_key(note)
        if key not in seen:
            seen.add(key)
            kept.append(note)
    return kept


@dataclass(frozen=True)
class Mismatch:
    """One derivative that autograd got wrong (or could not produce).

    ``index`` is the element of input ``input_index`` (:data:`ALL_INPUTS` for a directional derivative
    along all differentiated inputs together); ``output_element`` the element of output ``output_index``
    (``None`` when the check compared a projection ``v·out`` instead of one entry). ``kind`` is a
    :class:`DerivativeKind`: ``"jacobian"`` (one entry), ``"projected"`` (``d(v·out)/dx[index]``) or
    ``"directional"`` (``d(v·out)/dt`` along a random direction; ``index`` is then ``(direction,)``).
    """

    check: str
    input_index: int
    output_index: int
    index: tuple
    analytic: float
    numerical: float
    abs_error: float
    allowed: float
    output_element: Optional[tuple] = None
    input_name: str = "x"
    input_value: Optional[float] = None
    kind: str = DerivativeKind.JACOBIAN
    note: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "check", CheckName.coerce(self.check))
        object.__setattr__(self, "kind", DerivativeKind.coerce(self.kind))

    @property
    def ratio(self) -> float:
        """``abs_error / allowed`` (inf where nothing was allowed but something differs)."""
        return _render.ratio(self.abs_error, self.allowed)

    @property
    def all_inputs(self) -> bool:
        """Taken along all differentiated inputs together (``input_index == ALL_INPUTS``)."""
        return self.input_index == ALL_INPUTS

    def describe_derivative(self, output_name: str = "out") -> str:
        return _render.describe_derivative(self, output_name)

    def to_dict(self) -> dict:
        return _render.mismatch_dict(self)


@dataclass(frozen=True)
class CheckResult:
    """One check of a report: ``status`` is a :class:`Status` (``passed``, ``failed``, ``skipped`` or
    ``error``), ``name`` a :class:`CheckName` where it is one."""

    name: str
    status: str
    detail: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", CheckName.coerce(self.name))
        object.__setattr__(self, "status", Status(self.status))

    @property
    def failing(self) -> bool:
        """The check failed or could not run: the report fails."""
        return self.status in FAILING

    def __str__(self) -> str:
        return _render.check_line(self)


@dataclass(frozen=True)
class InputInfo:
    """One input of the checked function: its position, name, shape, dtype, layout, and whether it is
    differentiated."""

    index: int
    name: str
    shape: tuple
    dtype: str
    differentiated: bool
    layout: str = "contiguous"

    def describe(self) -> str:
        return _render.describe_input(self)


@dataclass
class GroupSummary:
    """Counts for one (check, input, output) pair: how many derivatives were compared and failed."""

    check: str
    input_index: int
    output_index: int
    kind: str
    compared: int = 0
    failed: int = 0
    worst_ratio: float = 0.0
    unchecked: int = 0
    kinks: int = 0

    def __post_init__(self) -> None:
        self.check = CheckName.coerce(self.check)
        self.kind = DerivativeKind.coerce(self.kind)

    @property
    def all_inputs(self) -> bool:
        """Taken along all differentiated inputs together (``input_index == ALL_INPUTS``)."""
        return self.input_index == ALL_INPUTS

    def holds(self, m: Mismatch) -> bool:
        """``m`` belongs to this group: the same check, input and output."""
        return (m.check, m.input_index, m.output_index) == (self.check, self.input_index, self.output_index)


@dataclass
class GradientReport:
    """The result of a gradient check. ``bool(report)`` is ``report.ok``."""

    function: str = "fn"
    mode: str = "full"
    seed: int = 0
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    checks: list = field(default_factory=list)
    mismatches: list = field(default_factory=list)
    groups: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    evaluations: int = 0
    #: calls of fn spent on second opinions after a failed comparison (ties, kinks, smaller steps, a second
    #: noise sample, the staircase probe; a batch under vmap is one call): at most as many as the others
    extra_evaluations: int = 0
    elapsed: float = 0.0
    method: str = ""
    path: str = ""
    resolution: Optional[float] = None
    reproduce: str = field(default="", compare=False, repr=False)  # built on first read: see defer_reproduce
    options: dict = field(default_factory=dict)
    #: fn itself failed (raised, or returned no tensors), not its gradients: ``assert_*`` raise
    #: :class:`FunctionError` (chained to ``function_error``), the CLI exits with 3
    function_failed: bool = False
    #: the exception fn (or its backward) raised, where it raised; not printed nor serialised
    function_error: Optional[BaseException] = field(default=None, compare=False, repr=False)

    # -- derived -----------------------------------------------------------------------------
    @property
    def fn_failed(self) -> bool:
        """The same as :attr:`function_failed` (the CLI's JSON spells it so)."""
        return self.function_failed

    @property
    def ok(self) -> bool:
        return not self.errors and not any(c.status in FAILING for c in self.checks)

    def __bool__(self) -> bool:
        return self.ok

    def defer_reproduce(self, build: Callable[[], str]) -> None:
        """``build()`` gives ``reproduce`` when it is first read (building may save the inputs to a file)."""
        self.__dict__["_reproduce"] = ""
        self.__dict__["_reproduce_build"] = build

    @property
    def compared(self) -> int:
        return sum(g.compared for g in self.groups)

    @property
    def failed(self) -> int:
        return sum(g.failed for g in self.groups)

    @property
    def worst_ratio(self) -> float:
        """Largest ``|autograd - numerical| / allowed`` over everything compared (0 when nothing was)."""
        return max((g.worst_ratio for g in self.groups), default=0.0)

    @property
    def note_codes(self) -> list:
        """Each note's code (``None`` for a note given as plain text), in the notes' order."""
        return [getattr(n, "code", None) for n in self.notes]

    def check(self, name: str) -> Optional[CheckResult]:
        for result in self.checks:
            if result.name == name:
                return result
        return None

    def input_name(self, index: int) -> str:
        for info in self.inputs:
            if info.index == index:
                return info.name
        return f"input{index}"

    def output_name(self, index: int) -> str:
        return "out" if len(self.outputs) <= 1 else f"out{index}"

    def add_note(self, note: Any) -> None:
        """Append ``note`` unless the report holds the same note already (the same :func:`note_key`)."""
        if note_key(note) not in {note_key(n) for n in self.notes}:
            self.notes.append(note)

    # -- text and data (gradcheck_kit._render) ---------------------------------------------------
    @property
    def summary(self) -> str:
        """The verdict in one phrase: what failed and why (``"fn raised TypeError: ..."``,
        ``"autograd's value is non-finite ..."``), or how close a pass was."""
        return _render.summary(self)

    def __str__(self) -> str:
        return _render.short_text(self)

    def details(self) -> str:
        """Everything: the failures (up to 8 rows a group), every check with its detail, the numerical
        method, the evaluation path, the resolution and every note."""
        return _render.details(self)

    def to_dict(self) -> dict:
        """Plain data, JSON-serialisable (non-finite floats as strings)."""
        return _render.report_dict(self)


def _get_reproduce(report: GradientReport) -> str:
    text = report.__dict__.get("_reproduce", "")
    build = report.__dict__.pop("_reproduce_build", None)
    if not text and build is not None:
        text = report.__dict__["_reproduce"] = build()
    return text


def _set_reproduce(report: GradientReport, text: str) -> None:
    report.__dict__.pop("_reproduce_build", None)
    report.__dict__["_reproduce"] = text


# ``reproduce`` is a dataclass field read through this property: a deferred line is built on first read
GradientReport.reproduce = property(_get_reproduce, _set_reproduce)  # type: ignore[assignment]
