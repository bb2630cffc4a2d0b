"""Where users spend their time: gradcheck_kit against torch.autograd.gradcheck, time and calls of fn.

    python benchmarks/speed.py                       # synthetic cases + the real-library suite (seed 0)
    python benchmarks/speed.py --no-realworld        # synthetic cases only (about a minute)
    python benchmarks/speed.py --libraries kornia,entmax --dtypes float64 --json /tmp/speed.json

Every case runs both checkers on the same inputs in one process, taking turns (kit, gradcheck, kit,
gradcheck, ...) after a warm-up, and reports the median time of each, their ratio (kit / gradcheck) and how
many times each called fn (a call under ``vmap`` counts once). Real-library cases come from
``benchmarks/realworld.py`` (its correct cases, seed 0, and with ``--failing`` its injected bugs too); the
summary gives the median and worst ratio over them per dtype. Verdicts are printed beside the times so that
a fast wrong answer cannot hide.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import gradcheck_kit as gk  # noqa: E402
from corpus import CubeDifferentiableBackward  # noqa: E402

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class Counted:
    """``fn`` with a count of its calls (the count a checker pays for an expensive fn)."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.calls = 0
        self.__name__ = getattr(fn, "__name__", "fn")
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)
        self.__module__ = getattr(fn, "__module__", __name__)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


def _fresh(inputs: tuple) -> tuple:
    return tuple(
        t.detach().clone().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t for t in inputs
    )


def _kit(fn: Callable, inputs: tuple, kwargs: dict) -> tuple[str, int]:
    counted = Counted(fn)
    try:
        report = gk.check_gradients(counted, *_fresh(inputs), **kwargs)
        verdict = "pass" if report.ok else "FAIL"
    except Exception as exc:  # noqa: BLE001 - a raise is a verdict here
        verdict = f"ERROR {type(exc).__name__}"
    return verdict, counted.calls


def _gradcheck(fn: Callable, inputs: tuple, kwargs: dict) -> tuple[str, int]:
    counted = Counted(fn)
    try:
        ok = torch.autograd.gradcheck(counted, _fresh(inputs), raise_exception=False, **kwargs)
        verdict = "pass" if ok else "FAIL"
    except Exception:  # noqa: BLE001 - gradcheck raising counts as FAIL
        verdict = "FAIL"
    return verdict, counted.calls


def measure(fn: Callable, inputs: tuple, *, kit: dict | None = None, gc: dict | None = None,
            budget: float = 3.0, context=None, sample_s: float = 0.02) -> dict:
    """Both checkers on ``fn(*inputs)`` taking turns; medians of up to 7 rounds within ``budget`` seconds.

    The first round is a warm-up that also sets how many checks one timed sample runs back to back, so
    that a sample of a sub-millisecond check lasts about ``sample_s`` (a single such check is at the
    timer's and the scheduler's noise).
    """
    kit, gc = kit or {}, gc or {}
    times: dict[str, list[float]] = {"kit": [], "gradcheck": []}
    result: dict = {}
    rounds = 0
    spent = 0.0
    repeats = 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        while rounds < 7 and (rounds < 2 or spent < budget):
            order = (("kit", _kit, kit), ("gradcheck", _gradcheck, gc))
            first: dict[str, float] = {}
            for name, runner, kw in order if rounds % 2 == 0 else order[::-1]:
                n = repeats if rounds > 0 else 1
                with (context() if context is not None else contextlib.nullcontext()):
                    start = time.perf_counter()
                    for _ in range(n):
                        verdict, calls = runner(fn, inputs, kw)
                    elapsed = time.perf_counter() - start
                if rounds > 0 or budget <= 0:
                    times[name].append(elapsed / n)
                first[name] = elapsed
                spent += elapsed
                result[name] = verdict
                result[f"{name}_calls"] = calls
            if rounds == 0:
                repeats = max(1, min(50, int(sample_s / max(min(first.values()), 1e-6))))
            rounds += 1
            if rounds == 1 and spent > budget:
                times = {"kit": [], "gradcheck": []}
                budget = 0.0
    result["repeats"] = repeats
    for name in ("kit", "gradcheck"):
        result[f"{name}_s"] = statistics.median(times[name]) if times[name] else float("nan")
    result["ratio"] = result["kit_s"] / result["gradcheck_s"]
    result["rounds"] = len(times["kit"])
    return result



# ---------------------------------------------------------------------------------------------------
# synthetic cases: tiny checks, a custom Function, full-mode vmappable, directional, a failing expensive one
def _mlp(dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 16, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
    w1 = torch.randn(16, 16, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
    w2 = torch.randn(16, 4, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
    return (lambda x, a, b: torch.tanh(x @ a) @ b), (x, w1, w2)


def _sinkhorn_loss(x, y):
    cost = torch.cdist(x, y) ** 2
    k = torch.exp(-cost / 0.5)
    u = torch.ones(x.shape[0], dtype=x.dtype) / x.shape[0]
    v = torch.ones(y.shape[0], dtype=x.dtype) / y.shape[0]
    a, b = u, v
    for _ in range(200):
        a = u / (k @ b)
        b = v / (k.T @ a)
    plan = a[:, None] * k * b[None, :]
    return (plan * cost).sum()


class _WrongSinkhorn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y):
        with torch.enable_grad():
            xx = x.detach().requires_grad_()
            loss = _sinkhorn_loss(xx, y.detach())
            (gx,) = torch.autograd.grad(loss, xx)
        ctx.save_for_backward(gx)
        return loss.detach()

    @staticmethod
    def backward(ctx, g):
        (gx,) = ctx.saved_tensors
        return 1.03 * g * gx, None


def synthetic(dtypes) -> list[tuple[str, Callable, tuple, dict, dict]]:
    cases = []
    for dname, dtype in dtypes.items():
        gen = torch.Generator().manual_seed(1)
        x10 = torch.randn(10, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
        cases.append((f"tiny sin, 10 ({dname})", torch.sin, (x10,), {}, {}))
        cases.append((f"tiny custom Function, 10 ({dname})", CubeDifferentiableBackward.apply, (x10,), {}, {}))
    x = torch.randn(24, 24, dtype=torch.float64, requires_grad=True)
    y = torch.randn(24, 24, dtype=torch.float64, requires_grad=True)
    cases.append(("matmul 24x24, full (float64)", torch.matmul, (x, y), {"mode": "full"}, {}))
    fn, inputs = _mlp(torch.float64)
    cases.append(("MLP 8x16-16-4 tanh, full (float64)", fn, inputs, {"mode": "full"}, {}))
    big = torch.randn(1 << 20, dtype=torch.float64, requires_grad=True)
    cases.append(("sin, 2^20, directional vs fast (float64)", torch.sin, (big,), {"mode": "directional"},
                  {"fast_mode": True}))
    gen = torch.Generator().manual_seed(2)
    p = torch.randn(5, 2, generator=gen, dtype=torch.float64).requires_grad_()
    q = torch.randn(6, 2, generator=gen, dtype=torch.float64)
    cases.append(("failing Sinkhorn custom Function, 10 coords (float64)", _WrongSinkhorn.apply, (p, q), {}, {}))
    return cases


def realworld(libraries, dtypes, failing: bool):
    from realworld import build_inputs, cases

    found, skipped = cases(libraries)
    out = []
    for case in found:
        if case.expected != "correct" and not failing:
            continue
        for dname, dtype in dtypes.items():
            out.append((case, dname, build_inputs(case, dtype, 0)))
    return out, skipped


def _row(name: str, r: dict) -> str:
    return (f"{name[:58]:<58} {r['kit_s'] * 1e3:9.1f} {r['gradcheck_s'] * 1e3:9.1f} {r['ratio']:7.2f}x "
            f"{r['kit_calls']:6d} {r['gradcheck_calls']:6d}  {r['kit']:<5} {r['gradcheck']}")


HEADER = (f"{'case':<58} {'kit ms':>9} {'gc ms':>9} {'ratio':>8} {'kit#':>6} {'gc#':>6}  verdicts kit/gc")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-realworld", action="store_true")
    parser.add_argument("--no-synthetic", action="store_true")
    parser.add_argument("--libraries", default=None, help="comma-separated subset of the real-library suite")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--failing", action="store_true", help="also time the injected bugs (failing checks)")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per case for repeats")
    parser.add_argument("--json", default=None)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: stable ratios on a shared machine)")
    args = parser.parse_args(argv)
    dtypes = {d: DTYPES[d] for d in args.dtypes.split(",")}
    torch.set_num_threads(args.threads)
    rows = []
    print(HEADER)
    if not args.no_synthetic:
        for name, fn, inputs, kit, gc in synthetic(dtypes):
            r = measure(fn, inputs, kit=kit, gc=gc, budget=args.budget)
            rows.append({"case": name, "suite": "synthetic", **r})
            print(_row(name, r), flush=True)
    if not args.no_realworld:
        libraries = args.libraries.split(",") if args.libraries else None
        found, skipped = realworld(libraries, dtypes, args.failing)
        for lib, why in skipped.items():
            print(f"skipped {lib}: {why}")
        for case, dname, inputs in found:
            name = f"{case.library}: {case.name} ({dname})" + ("" if case.expected == "correct" else " [bug]")
            r = measure(case.fn, inputs, budget=args.budget, context=case.patched)
            rows.append({"case": name, "suite": "realworld", "dtype": dname, "expected": case.expected, **r})
            print(_row(name, r), flush=True)
        for dname in dtypes:
            for expected in ("correct", "wrong"):
                sel = [r for r in rows if r["suite"] == "realworld" and r["dtype"] == dname
                       and r["expected"] == expected]
                if not sel:
                    continue
                ratios = sorted(r["ratio"] for r in sel)
                calls = [r["kit_calls"] / max(r["gradcheck_calls"], 1) for r in sel]
                print(f"real-library suite, {dname}, {expected} ({len(sel)} cases): time ratio median "
                      f"{statistics.median(ratios):.2f}x, worst {ratios[-1]:.2f}x; calls ratio median "
                      f"{statistics.median(calls):.2f}x, worst {max(calls):.2f}x; above 1.5x: "
                      f"{sum(r > 1.5 for r in ratios)}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
