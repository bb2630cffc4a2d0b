"""gradcheck_kit against torch.autograd.gradcheck, side by side in one process.

    python benchmarks/run_benchmark.py                      # full run, writes benchmarks/results.md
    python benchmarks/run_benchmark.py --quick              # a subset, under a minute
    python benchmarks/run_benchmark.py --out results.md --json results.json

Part 1 (verdicts): every corpus entry (``benchmarks/corpus.py``) in float32 and float64 through
``gk.check_gradients`` with default settings (``order=2`` / ``forward_ad=True`` /
``gk.check_module_gradients`` for the issue-3 entries) and through ``torch.autograd.gradcheck``
(defaults, ``raise_exception=False``; ``gradgradcheck`` / ``check_forward_ad=True`` for the issue-3
entries), slow and fast mode.

Part 2 (speed): medians of several repeats after a warm-up, the compared calls taking turns, as ratios.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import gradcheck_kit as gk  # noqa: E402
from corpus import Entry, build_inputs, entries  # noqa: E402

DTYPES = (torch.float32, torch.float64)


# ---------------------------------------------------------------------------------------------------
# part 1: verdicts
def _module_functional(module, x):
    names = [n for n, p in module.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for _, p in module.named_parameters())

    def fn(x, *ps):
        return torch.func.functional_call(module, dict(zip(names, ps)), (x,))

    return fn, (x.detach().clone().requires_grad_(True), *params)


def run_ours(entry: Entry, inputs: tuple):
    if entry.kind == "module":
        module, x = inputs
        return gk.check_module_gradients(module, x)
    if entry.kind == "order2":
        return gk.check_gradients(entry.fn, *inputs, order=2)
    if entry.kind == "forward_ad":
        return gk.check_gradients(entry.fn, *inputs, forward_ad=True)
    return gk.check_gradients(entry.fn, *inputs)


def run_torch(entry: Entry, inputs: tuple, fast: bool) -> tuple[str, float, str]:
    """('pass' | 'FAIL' | 'ERROR', seconds, detail)."""
    if entry.kind == "module":
        fn, args = _module_functional(*inputs)
    else:
        fn, args = entry.fn, inputs
    start = time.perf_counter()
    detail = ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if entry.kind == "order2":
                ok = gradgradcheck(fn, args, raise_exception=False, fast_mode=fast)
            elif entry.kind == "forward_ad":
                ok = gradcheck(fn, args, raise_exception=False, fast_mode=fast, check_forward_ad=True)
            else:
                ok = gradcheck(fn, args, raise_exception=False, fast_mode=fast)
            verdict = "pass" if ok else "FAIL"
        except Exception as exc:  # noqa: BLE001 - gradcheck raises for some problems even without raise_exception
            verdict = "FAIL"
            detail = f"raised {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
    return verdict, time.perf_counter() - start, detail


def _torch_label(entry: Entry) -> str:
    return {"order2": "gradgradcheck", "forward_ad": "gradcheck(check_forward_ad=True)"}.get(entry.kind, "gradcheck")


def _ours_label(entry: Entry) -> str:
    return {"order2": "order=2", "forward_ad": "forward_ad=True", "module": "check_module_gradients"}.get(
        entry.kind, "defaults"
    )


def verdict_rows(quick: bool, log) -> list[dict]:
    rows = []
    for entry in entries(quick):
        for dtype in DTYPES:
            dname = str(dtype).replace("torch.", "")
            row = {"function": entry.name, "dtype": dname, "expected": entry.expected, "kind": entry.kind,
                   "ours_call": _ours_label(entry), "torch_call": _torch_label(entry)}
            inputs = build_inputs(entry, dtype)
            start = time.perf_counter()
            try:
                report = run_ours(entry, inputs)
                row["ours"] = "pass" if report.ok else "FAIL"
                row["ours_mode"] = report.mode
                row["ours_evaluations"] = report.evaluations
                row["ours_worst_ratio"] = report.worst_ratio
                row["ours_failed_checks"] = [str(c) for c in report.checks if c.status in ("failed", "error")]
                row["ours_errors"] = list(report.errors)
            except Exception as exc:  # noqa: BLE001 - an exception of ours is a wrong verdict, kept in the table
                row["ours"] = "ERROR"
                row["ours_mode"] = "-"
                row["ours_errors"] = [f"{type(exc).__name__}: {exc}"]
            row["ours_time"] = time.perf_counter() - start
            for fast in (False, True):
                key = "torch_fast" if fast else "torch"
                verdict, seconds, detail = run_torch(entry, build_inputs(entry, dtype), fast)
                row[key], row[key + "_time"], row[key + "_detail"] = verdict, seconds, detail
            row["ours_right"] = _right(row["ours"], entry.expected)
            log(
                f"  {entry.name[:48]:48s} {dname:7s} {entry.expected:7s} ours={row['ours']:5s} "
                f"({row['ours_mode']}, {row['ours_time']:.2f}s) gradcheck={row['torch']:4s} fast={row['torch_fast']}"
                + ("" if row["ours_right"] else "   <-- WRONG VERDICT (ours)")
            )
            rows.append(row)
    return rows


def _right(verdict: str, expected: str) -> bool:
    return (verdict == "pass") == (expected == "correct")


def totals(rows: list[dict]) -> list[dict]:
    out = []
    for dname in ("float32", "float64"):
        sub = [r for r in rows if r["dtype"] == dname]
        correct = [r for r in sub if r["expected"] == "correct"]
        wrong = [r for r in sub if r["expected"] == "wrong"]
        for key, label in (("ours", "gradcheck_kit (ours)"), ("torch", "torch gradcheck"),
                           ("torch_fast", "torch gradcheck fast_mode")):
            out.append({
                "dtype": dname, "checker": label,
                "false_alarms": sum(r[key] != "pass" for r in correct), "correct": len(correct),
                "misses": sum(r[key] == "pass" for r in wrong), "wrong": len(wrong),
            })
    return out


# ---------------------------------------------------------------------------------------------------
# part 2: speed
def _interleaved_medians(calls: dict, repeats: int) -> dict:
    """Median seconds and last result per call, the calls taking turns (one warm-up each first), so that
    a slower or faster spell of a shared machine falls on every side of a ratio alike. ``times`` keeps
    every round's seconds per call (for ``_round_ratios``)."""
    results = {name: call() for name, call in calls.items()}
    times: dict = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            results[name] = call()
            times[name].append(time.perf_counter() - start)
    out = {name: (statistics.median(times[name]), results[name]) for name in calls}
    out["times"] = times
    return out


def _round_ratios(times: dict, baseline: str, ours: str = "ours") -> tuple[float, float]:
    """The lower and upper quartile of the per-round ratios baseline / ours (each round's two calls ran
    back to back): how much a ratio moves with the machine's load within one run."""
    ratios = sorted(b / o for b, o in zip(times[baseline], times[ours]))
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    return q[0], q[2]


def _speed_cases():
    def gen():
        return torch.Generator().manual_seed(7)

    def matmul():
        g = gen()
        return (lambda a, b: a @ b), tuple(
            torch.randn(24, 24, generator=g, dtype=torch.float64).requires_grad_() for _ in range(2)
        )

    def conv():
        g = gen()
        x = torch.randn(2, 3, 16, generator=g, dtype=torch.float64).requires_grad_()
        w = torch.randn(4, 3, 3, generator=g, dtype=torch.float64).requires_grad_()
        return (lambda x, w: F.conv1d(x, w)), (x, w)

    def mlp():
        g = gen()
        shapes = [(4, 8), (16, 8), (16,), (4, 16), (4,)]
        args = tuple((torch.randn(*s, generator=g, dtype=torch.float64) * 0.5).requires_grad_() for s in shapes)
        return (lambda x, w1, b1, w2, b2: torch.tanh(x @ w1.T + b1) @ w2.T + b2), args

    return [("matmul 24×24 (both inputs)", matmul), ("conv1d x(2,3,16) w(4,3,3)", conv),
            ("MLP 8→16→4 tanh (x + weights)", mlp)]


def _gc(fn, args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return bool(gradcheck(fn, args, raise_exception=False, **kw))
        except Exception:  # noqa: BLE001
            return False


def speed_rows(repeats: int, big_n: int, log) -> list[dict]:
    rows = []
    for name, make in _speed_cases():
        fn, args = make()
        timed = _interleaved_medians({
            "ours": lambda: gk.check_gradients(fn, *args, mode="full"),
            "gc": lambda: _gc(fn, args, fast_mode=False),
            "nofwd": lambda: gk.check_gradients(fn, *args, mode="full", forward_ad=False),
        }, repeats)
        (t_ours, rep), (t_gc, gc_ok), (t_nofwd, _) = timed["ours"], timed["gc"], timed["nofwd"]
        row = {"case": name, "dtype": "float64", "ours": f"mode=\"full\" ({'pass' if rep.ok else 'FAIL'})",
               "ours_time": t_ours, "baseline": f"gradcheck(fast_mode=False) ({'pass' if gc_ok else 'FAIL'})",
               "baseline_time": t_gc, "ratio": t_gc / t_ours, "target": "≥ 10× faster",
               "met": t_gc / t_ours >= 10 and rep.ok == gc_ok, "evaluations": rep.evaluations,
               "ours_time_nofwd": t_nofwd, "round_ratios": _round_ratios(timed["times"], "gc")}
        rows.append(row)
        log(f"  {name}: ours {t_ours*1e3:.1f} ms, gradcheck {t_gc*1e3:.1f} ms, {row['ratio']:.1f}×")
    for dtype in (torch.float64, torch.float32):
        dname = str(dtype).replace("torch.", "")
        g = torch.Generator().manual_seed(11)
        x = torch.randn(big_n, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
        v = torch.randn(big_n, generator=g, dtype=torch.float64).to(dtype)

        def fn(x):
            return torch.sin(x) * x

        def fwd_bwd():
            xx = x.detach().requires_grad_()
            y = fn(xx)
            (gx,) = torch.autograd.grad(y, xx, v)
            return gx

        timed = _interleaved_medians({
            "fb": fwd_bwd,
            "ours": lambda: gk.check_gradients(fn, x, mode="directional"),
            "fast": lambda: _gc(fn, (x,), fast_mode=True),
            "nofwd": lambda: gk.check_gradients(fn, x, mode="directional", forward_ad=False),
        }, repeats)
        (t_fb, _), (t_ours, rep), (t_fast, fast_ok), (t_nofwd, _) = (
            timed["fb"], timed["ours"], timed["fast"], timed["nofwd"]
        )
        label = f"sin(x)·x, {big_n:,} elements, non-scalar output"
        ours = f"mode=\"directional\" ({'pass' if rep.ok else 'FAIL'}, {rep.evaluations} evals)"
        rows.append({"case": label, "dtype": dname, "ours": ours, "ours_time": t_ours,
                     "baseline": f"gradcheck(fast_mode=True) ({'pass' if fast_ok else 'FAIL'})",
                     "baseline_time": t_fast, "ratio": t_fast / t_ours, "target": "≥ 1× (no slower)",
                     "met": t_fast / t_ours >= 1.0, "evaluations": rep.evaluations,
                     "ours_time_nofwd": t_nofwd, "round_ratios": _round_ratios(timed["times"], "fast")})
        rows.append({"case": label, "dtype": dname, "ours": ours, "ours_time": t_ours,
                     "baseline": "one forward + one backward", "baseline_time": t_fb,
                     "ratio": t_fb / t_ours, "target": "≥ 1/6 (within 6×)", "met": t_ours <= 6 * t_fb,
                     "evaluations": rep.evaluations, "ours_time_nofwd": t_nofwd,
                     "round_ratios": _round_ratios(timed["times"], "fb")})
        log(f"  {label} {dname}: ours {t_ours*1e3:.1f} ms, gradcheck fast {t_fast*1e3:.1f} ms "
            f"({'pass' if fast_ok else 'FAIL'}), fwd+bwd {t_fb*1e3:.1f} ms; ours/fwd+bwd = {t_ours/t_fb:.2f}")
    return rows


# ---------------------------------------------------------------------------------------------------
# output
def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def render(rows, tot, speed, meta) -> str:
    lines = ["# gradcheck_kit vs torch.autograd.gradcheck", ""]
    lines.append(
        f"Generated by `python benchmarks/run_benchmark.py{' --quick' if meta['quick'] else ''}` on "
        f"{meta['date']}: torch {meta['torch']}, Python {meta['python']}, {meta['cpus']} CPU(s), "
        f"{meta['threads']} torch thread(s) (`--threads`), {meta['machine']}; gradcheck_kit at {meta['git']}. "
        f"Whole run: {meta['elapsed']:.0f} s."
    )
    lines += ["", "## 1. Verdicts", ""]
    lines.append(
        "Ours: `gk.check_gradients(fn, *inputs)` with default settings (`mode=\"auto\"`, `order=1`, "
        "`forward_ad=\"auto\"`, `seed=0`); the issue-3 rows use `order=2`, `forward_ad=True` or "
        "`gk.check_module_gradients(module, x)`. Torch: `gradcheck(fn, inputs, raise_exception=False)` with "
        "its defaults (`gradgradcheck` for the order-2 rows, `check_forward_ad=True` for the forward-AD rows, "
        "the module's parameters passed as inputs through `functional_call` for the module rows), and the "
        "same with `fast_mode=True`. A verdict that disagrees with *expected* is in **bold**."
    )
    lines += ["", "### Totals", "", "| dtype | checker | false alarms (of correct) | misses (of wrong) |",
              "|---|---|---|---|"]
    for t in tot:
        lines.append(f"| {t['dtype']} | {t['checker']} | {t['false_alarms']} / {t['correct']} | "
                     f"{t['misses']} / {t['wrong']} |")
    lines += ["", "### Every case", "",
              "| function | dtype | expected | ours verdict | ours mode | ours time | ours call | gradcheck verdict "
              "| gradcheck time | gradcheck fast-mode verdict | torch call |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]

    def cell(verdict, expected):
        return verdict if _right(verdict, expected) else f"**{verdict}**"

    for r in rows:
        lines.append(
            f"| {r['function']} | {r['dtype']} | {r['expected']} | {cell(r['ours'], r['expected'])} | "
            f"{r['ours_mode']} | {_ms(r['ours_time'])} | {r['ours_call']} | {cell(r['torch'], r['expected'])} | "
            f"{_ms(r['torch_time'])} | {cell(r['torch_fast'], r['expected'])} | {r['torch_call']} |"
        )
    wrong_ours = [r for r in rows if not r["ours_right"]]
    lines += ["", "### Wrong verdicts of ours", ""]
    if not wrong_ours:
        lines.append("None.")
    for r in wrong_ours:
        why = "; ".join(r.get("ours_failed_checks", []) + r.get("ours_errors", []))[:400]
        lines.append(f"- {r['function']} ({r['dtype']}): expected {r['expected']}, got {r['ours']}. {why}")
    lines += ["", "## 2. Speed (same run, medians)", ""]
    lines.append(
        f"Median of {meta['repeats']} repeats after one warm-up call each, the compared calls taking turns. "
        "*ratio* = baseline time / our time (above 1: ours is faster). Full mode and gradcheck both check "
        "every Jacobian entry here."
    )
    lines.append(
        "Ours runs with its defaults apart from `mode`, so it also checks forward-mode AD "
        "(`forward_ad=\"auto\"`) and a zero grad_output; gradcheck checks neither by default (both check "
        "re-entrancy). The last two columns "
        "are for information: our time and ratio with `forward_ad=False`. The target and *met* use the "
        "default call."
    )
    lines.append(
        "*per-round ratio* is the spread (lower to upper quartile) of the ratios of the two calls of each "
        "round, which ran back to back: how far a ratio moves with the machine's load within one run."
    )
    lines += ["", "| case | dtype | ours | ours time | baseline | baseline time | ratio | per-round ratio | target | met "
              "| ours time, forward_ad=False | ratio, forward_ad=False |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in speed:
        lo, hi = s["round_ratios"]
        lines.append(
            f"| {s['case']} | {s['dtype']} | {s['ours']} | {s['ours_time']*1e3:.1f} ms | {s['baseline']} | "
            f"{s['baseline_time']*1e3:.1f} ms | {s['ratio']:.2f}× | {lo:.2f}–{hi:.2f}× | {s['target']} | "
            f"{'yes' if s['met'] else '**no**'} | "
            f"{s['ours_time_nofwd']*1e3:.1f} ms | {s['baseline_time'] / s['ours_time_nofwd']:.2f}× |"
        )
    lines.append("")
    return "\n".join(lines)


def _git_state() -> str:
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "gradcheck_kit"], cwd=HERE.parent,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001
        return "unknown commit"
    return f"commit {head}" + (" with uncommitted changes in gradcheck_kit/" if dirty else "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a subset of the corpus and fewer repeats (< 1 min)")
    parser.add_argument("--out", default=str(HERE / "results.md"), help="markdown output (default benchmarks/results.md)")
    parser.add_argument("--json", default=None, help="also write every row as JSON here")
    parser.add_argument("--repeats", type=int, default=None, help="timing rounds (default 21, --quick 3)")
    parser.add_argument("--size", type=int, default=None, help="elements of the directional case (default 1,000,000)")
    parser.add_argument("--no-speed", action="store_true", help="skip part 2")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: stable timings on a shared 2-core machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 21)
    big_n = args.size or 1_000_000
    t0 = time.perf_counter()

    def log(msg):
        print(msg, flush=True)

    log("part 1: verdicts")
    rows = verdict_rows(args.quick, log)
    tot = totals(rows)
    speed = []
    if not args.no_speed:
        log("part 2: speed")
        speed = speed_rows(repeats, big_n, log)
    meta = {
        "quick": args.quick, "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
        "python": platform.python_version(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
        "machine": platform.machine(), "elapsed": time.perf_counter() - t0, "repeats": repeats, "git": _git_state(),
    }
    text = render(rows, tot, speed, meta)
    Path(args.out).write_text(text, encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "verdicts": rows, "totals": tot, "speed": speed},
                                              indent=1, default=str), encoding="utf-8")
    log("")
    for t in tot:
        log(f"{t['dtype']} {t['checker']:28s} false alarms {t['false_alarms']}/{t['correct']}, "
            f"misses {t['misses']}/{t['wrong']}")
    log(f"wrote {args.out} in {meta['elapsed']:.0f} s")
    return 0 if all(r["ours_right"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
