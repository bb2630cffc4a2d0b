"""The fixtures: ``gradcheck`` (the kit's checks with the options in force), ``gradcheck_seed``,
``gradcheck_dtype`` and ``gradcheck_device``. None is function-scoped, so they are safe in ``@given`` tests."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

import pytest

from gradcheck_kit.pytest_plugin._marker import marker_options, options_in_force
from gradcheck_kit.pytest_plugin._records import record_of_equals
from gradcheck_kit.pytest_plugin._state import RunState, generator_seed, state_of

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from gradcheck_kit.report import GradientReport

__all__ = ["GradcheckFixture", "gradcheck", "gradcheck_seed", "gradcheck_dtype", "gradcheck_device"]


class GradcheckFixture:
    """The ``gradcheck`` fixture: the kit's checks with the options in force for the running test.

    Options come, most specific first, from the call's keywords, the test's ``gradcheck`` marker,
    the command line (``--gradcheck-seed``, ``--gradcheck-mode``) and the kit's defaults.
    With ``--gradcheck-dtype`` (or the marker's ``dtype=``), floating tensor inputs are cast to that
    dtype first, keeping their strides and storage offset; ``dtype=None`` on the marker keeps inputs
    as given.
    """

    def __init__(self, state: RunState) -> None:
        self._state = state

    def __repr__(self) -> str:
        return f"<gradcheck fixture {self.options!r} dtype={self._dtype_name()}>"

    @property
    def options(self) -> dict[str, Any]:
        """The ``check_gradients`` keywords in force for the running test."""
        return options_in_force(self._state, marker_options(self._state.item))

    @property
    def seed(self) -> int:
        """The seed the running test's checks use (the marker's, else the run's)."""
        return int(self.options["seed"])

    @property
    def dtype(self) -> torch.dtype | None:
        """The dtype floating inputs are cast to, or ``None`` to keep them as given."""
        name = self._dtype_name()
        if name is None:
            return None
        import torch

        return getattr(torch, name)

    def _dtype_name(self) -> str | None:
        marker = marker_options(self._state.item)
        return marker["dtype"] if "dtype" in marker else self._state.options.dtype

    def generator(self, device: Any = "cpu") -> torch.Generator:
        """A fresh ``torch.Generator`` to draw inputs reproducibly; each call in a test gives another one.

        The n-th call in a test is seeded from :attr:`seed`, the test's id and n, so two inputs drawn
        from separate calls differ, and every run (also under xdist, in any order) draws the same
        values. Inside a Hypothesis ``@given`` test the count restarts with each example, so a
        replayed example draws what it drew the first time.
        """
        import torch

        item = self._state.item
        return torch.Generator(device=device).manual_seed(
            generator_seed(self.seed, item.nodeid if item is not None else "", self._state.generators.next())
        )

    def cast(self, *inputs: Any) -> tuple[Any, ...]:
        """``inputs`` with floating tensors cast to :attr:`dtype` (same layout and ``requires_grad``)."""
        dtype = self.dtype
        if dtype is None:
            return inputs
        return tuple(_cast(value, dtype) for value in inputs)

    def check(self, fn: Callable[..., Any], *inputs: Any, **options: Any) -> GradientReport:
        """``gk.check_gradients`` with the options in force; returns the report."""
        from gradcheck_kit.checkers import check_gradients

        return check_gradients(fn, *self.cast(*inputs), **{**self.options, **options})

    def assert_close(self, fn: Callable[..., Any], *inputs: Any, **options: Any) -> GradientReport:
        """``gk.assert_gradients_close`` with the options in force; raises ``gk.GradientMismatch``."""
        __tracebackhide__ = True
        from gradcheck_kit.assertions import assert_gradients_close

        return assert_gradients_close(fn, *self.cast(*inputs), **{**self.options, **options})

    def assert_equals(self, fn: Callable[..., Any], inputs: Any, expected: Any, **options: Any) -> Any:
        """``gk.assert_grad_equals`` with the marker's ``atol``/``rtol``; inputs cast as for :meth:`check`."""
        __tracebackhide__ = True
        import torch

        from gradcheck_kit.assertions import assert_grad_equals

        single = isinstance(inputs, torch.Tensor)
        cast = self.cast(*((inputs,) if single else tuple(inputs)))
        if self.dtype is not None and not callable(expected):
            if isinstance(expected, torch.Tensor):
                expected = _cast(expected, self.dtype)
            else:
                expected = tuple(_cast(value, self.dtype) for value in expected)
        in_force = self.options
        for name in ("atol", "rtol"):
            if name in in_force:
                options.setdefault(name, in_force[name])
        state = self._state
        before = len(state.incoming)
        start = time.perf_counter()
        try:
            result = assert_grad_equals(fn, cast[0] if single else cast, expected, **options)
        except AssertionError:
            if len(state.incoming) == before:
                state.add(record_of_equals(state.nodeid, fn, cast, False, time.perf_counter() - start))
            raise
        if len(state.incoming) == before:
            state.add(record_of_equals(state.nodeid, fn, cast, True, time.perf_counter() - start))
        return result


def _cast(value: Any, dtype: torch.dtype) -> Any:
    """A real floating tensor cast to ``dtype`` with the same shape, strides and storage offset."""
    import torch

    if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.dtype == dtype:
        return value
    with torch.no_grad():
        source = value.detach()
        if source.layout != torch.strided or source.numel() == 0:
            cast = source.to(dtype)
        else:
            # copy the storage span the tensor covers, then view it exactly as the input was viewed
            offset = source.storage_offset()
            span = 1 + sum((size - 1) * stride for size, stride in zip(source.shape, source.stride()))
            flat = source.as_strided((span,), (1,), offset)
            storage = torch.zeros(offset + span, dtype=dtype, device=source.device)
            storage[offset:].copy_(flat)
            cast = storage.as_strided(source.shape, source.stride(), offset)
    return cast.requires_grad_(value.requires_grad)


@pytest.fixture(scope="session")
def gradcheck(pytestconfig: pytest.Config) -> GradcheckFixture:
    """A checker using the options in force for the running test: ``.check``, ``.assert_close``,
    ``.assert_equals``, ``.seed``, ``.dtype``, ``.cast``, ``.generator``."""
    return GradcheckFixture(state_of(pytestconfig))


@pytest.fixture(scope="session")
def gradcheck_seed(pytestconfig: pytest.Config) -> int:
    """The run's seed (``--gradcheck-seed``, as the report header prints it)."""
    return state_of(pytestconfig).seed


@pytest.fixture(scope="session")
def gradcheck_dtype(request: pytest.FixtureRequest) -> torch.dtype:
    """Parametrised over float32 and float64, the marker's ``dtypes=``, or ``--gradcheck-dtype``."""
    import torch

    return getattr(torch, request.param)


@pytest.fixture(scope="session")
def gradcheck_device(request: pytest.FixtureRequest) -> torch.device:
    """Parametrised over ``cpu`` and ``cuda`` (or the marker's ``devices=``); skipped where absent."""
    import torch

    device = torch.device(request.param)
    backend = getattr(torch, device.type, None) if device.type != "cpu" else None
    if device.type != "cpu" and not (backend is not None and backend.is_available()):
        pytest.skip(f"device {request.param!r} is not available")
    return device
