"""A failing check against its passing twin: calls of fn of the check of each injected bug of the real-library
suite (``realworld.py``) and of the same fn with the bug undone (its right gradient), on the same inputs.

    python benchmarks/twins.py --dtypes float64
    python benchmarks/twins.py --libraries zuko,torchdiffeq --mode full

Prints per case the calls of the passing twin and of the failing check, their ratio, the failing check's
``extra_evaluations`` (its failing path: the whole stencil of the failed inputs, the second opinions, the
directions given up, or the rest of the failed directions' stencil and the bisection that named a wrong
element instead of the full check), the passing path's calls the second opinions' note gives and the
failing check's cost plan (``pinpointed``, ``full_after_directional``; ``-``: none); then the median and the
worst ratio, and how many cases exceed twice their twin.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import gradcheck_kit as gk  # noqa: E402
from realworld import build_inputs, cases  # noqa: E402
from speed import Counted  # noqa: E402


def calls(fn, inputs, context, options) -> tuple[int, gk.GradientReport]:
    counted = Counted(fn)
    with context():
        report = gk.check_gradients(counted, *inputs, **options)
    return counted.calls, report


def passing_path(report) -> int | None:
    noted = [n for n in report.notes if getattr(n, "code", None) == gk.report.NoteCode.SECOND_OPINIONS]
    return noted[0].fields[4] if noted and len(noted[0].fields) > 4 else None


def plan(report) -> str:
    """The failing check's cost plan (``pinpointed``, ``full_after_directional``, ...), ``-`` where none."""
    noted = [n for n in report.notes if getattr(n, "code", None) == gk.report.NoteCode.COST_PLAN]
    return noted[0].fields[0] if noted else "-"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--libraries", default=None, help="comma-separated subset of the real-library suite")
    parser.add_argument("--dtypes", default="float64")
    parser.add_argument("--mode", default="auto")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    found, skipped = cases(args.libraries.split(",") if args.libraries else None)
    for lib, why in skipped.items():
        print(f"skipped {lib}: {why}")
    print(f"{'case':<64} {'pass#':>6} {'fail#':>6} {'ratio':>6} {'extra':>6} {'path':>6}  verdicts  plan")
    ratios = []
    for case in (c for c in found if c.expected != "correct"):
        for dname in args.dtypes.split(","):
            dtype = getattr(torch, dname)
            options = {"mode": args.mode}
            good_calls, good = calls(case.fn, build_inputs(case, dtype, 0), case.setting or contextlib.nullcontext,
                                     options)
            bad_calls, bad = calls(case.fn, build_inputs(case, dtype, 0), case.patched, options)
            ratio = bad_calls / max(good_calls, 1)
            ratios.append(ratio)
            path = passing_path(bad)
            verdicts = f"{'pass' if good.ok else 'FAIL'}/{'pass' if bad.ok else 'FAIL'}"
            print(f"{case.name[:55] + ' (' + dname + ')':<64} {good_calls:6d} {bad_calls:6d} {ratio:6.2f} "
                  f"{bad.extra_evaluations:6d} {path if path is not None else '-':>6}  {verdicts} {plan(bad)}", flush=True)
    if ratios:
        print(f"{len(ratios)} cases: failing / passing calls median {statistics.median(ratios):.2f}x, worst "
              f"{max(ratios):.2f}x, above 2x: {sum(r > 2 for r in ratios)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
