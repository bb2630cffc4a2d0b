"""Targeted search for false alarms on derivatives that are sums cancelling far below their terms.

At ``y = 0`` the derivative ``d/dy mean(x·y) = mean(x)`` of an ``x`` that sums to about zero is a sum whose
terms (``x_i / n``) are far larger than their total: autograd and the finite differences both round it at
``eps·|x|``, while its own size is far below. Each case draws such an ``x`` (pairs ``±a`` that cancel
exactly, the same with one tiny entry left over, or ``x - mean(x)``), one function of ``x·y`` from
``FUNCTIONS`` and checks it at ``y = 0`` with default settings; every case is a correct gradient.

    python benchmarks/cancellation_search.py                    # 150 cases in float64 and in float32
    python benchmarks/cancellation_search.py --count 40 --dtypes float64 --verbose

Prints the failures per dtype (``0/150`` is the target) and, with ``--verbose``, each failing case."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import torch

import gradcheck_kit as gk

#: functions of (x, y) whose derivative in y at y = 0 is a (scaled) sum of x
FUNCTIONS = {
    "mean(x*y)": lambda x, y: torch.mean(x * y),
    "sum(x*y)": lambda x, y: torch.sum(x * y),
    "sum(2*x*y)": lambda x, y: torch.sum(2 * x * y),
    "3*mean(x*y)": lambda x, y: torch.mean(x * y) * 3,
    "sum(x*sin(y))": lambda x, y: torch.sum(x * torch.sin(y)),
    "sum(x*y)*(1+y)": lambda x, y: torch.sum(x * y) * (1 + y),
    "outer(x,y).sum(0)": lambda x, y: (x.unsqueeze(1) * y).sum(0),
}
#: how x sums to about zero
KINDS = ("pairs", "pairs+tiny", "centered")


@dataclass(frozen=True)
class Case:
    index: int
    function: str
    kind: str
    x: torch.Tensor
    y: torch.Tensor


def draw_x(gen: torch.Generator, kind: str, dtype: torch.dtype) -> torch.Tensor:
    """3 to 7 entries summing to about zero (drawn in float64, then rounded to ``dtype``)."""
    n = int(torch.randint(3, 8, (1,), generator=gen))
    if kind == "centered":
        x = torch.randn(n, generator=gen, dtype=torch.float64).to(dtype)
        return x - x.mean()
    a = torch.randn(n // 2, generator=gen, dtype=torch.float64)
    parts = [a, -a]
    if kind == "pairs+tiny" or n % 2:
        tiny = 1e-14 if kind == "pairs+tiny" else 0.0
        parts.append(torch.randn(1, generator=gen, dtype=torch.float64) * tiny)
    x = torch.cat(parts)
    return x[torch.randperm(x.numel(), generator=gen)].to(dtype)


def cases(count: int, dtype: torch.dtype, seed: int = 0) -> list[Case]:
    """``count`` cases, the same ones for a given seed (each dtype rounds the same float64 draws)."""
    gen = torch.Generator().manual_seed(seed)
    names = list(FUNCTIONS)
    out = []
    for index in range(count):
        name, kind = names[index % len(names)], KINDS[(index // len(names)) % len(KINDS)]
        y = torch.zeros(2 if name.startswith("outer") else (), dtype=dtype)
        out.append(Case(index, name, kind, draw_x(gen, kind, dtype), y))
    return out


def run_case(case: Case) -> gk.GradientReport:
    return gk.check_gradients(FUNCTIONS[case.function], case.x, case.y, seed=case.index)


def search(count: int, dtype: torch.dtype, seed: int = 0, verbose: bool = False) -> list[tuple[Case, list[str]]]:
    """The failing cases and, for each, the checks that failed."""
    failures = []
    for case in cases(count, dtype, seed):
        report = run_case(case)
        if not report.ok:
            failed = [str(c.name) for c in report.checks if c.status == "failed"]
            failures.append((case, failed))
            if verbose:
                print(f"  {case.index} {case.function} ({case.kind}) failed {failed} x={case.x.tolist()}")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=150, help="cases per dtype (default 150)")
    parser.add_argument("--dtypes", default="float64,float32", help="comma-separated (default float64,float32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="print each failing case")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    total = 0
    for name in args.dtypes.split(","):
        dtype = getattr(torch, name.strip())
        started = time.perf_counter()
        failures = search(args.count, dtype, args.seed, args.verbose)
        by_check: dict[str, int] = {}
        for _, failed in failures:
            for check in failed:
                by_check[check] = by_check.get(check, 0) + 1
        print(f"{name}: {len(failures)}/{args.count} false alarms ({time.perf_counter() - started:.1f} s); "
              f"failed checks: {by_check or 'none'}")
        total += len(failures)
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
