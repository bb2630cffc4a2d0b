"""Real third-party autograd code (``benchmarks/realworld.py``) through gradcheck_kit and torch's gradcheck.

    python benchmarks/run_realworld.py                 # every installed library, 3 seeds, both dtypes
    python benchmarks/run_realworld.py --quick         # 1 seed
    python benchmarks/run_realworld.py --libraries kornia,entmax --json /tmp/rw.json

Each case runs in float32 and float64 with ``--seeds`` seeds through ``gk.check_gradients(fn, *inputs)``
with default settings and ``torch.autograd.gradcheck(fn, inputs)`` with its defaults (a raise counts as
FAIL), on the same inputs, inside the case's patch (the injected bug for ``wrong`` cases). It prints, per
library and dtype, the functions, the false alarms (a correct case reported as failing) and the catches (a
wrong case reported as failing) of both, and the ratio of our time to gradcheck's per run (median and
worst). It writes a markdown table (``--out``, default ``benchmarks/realworld_results.md``) and, with
``--json``, every run. A library that is not installed is skipped with a line saying so. The exit status
is 1 when one of our verdicts disagrees with the expected one.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import gradcheck_kit as gk  # noqa: E402
from realworld import Case, build_inputs, cases  # noqa: E402

DTYPES = (torch.float32, torch.float64)


def _fresh(inputs: tuple) -> tuple:
    return tuple(
        t.detach().clone().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t for t in inputs
    )


def run_case(case: Case, dtype: torch.dtype, seed: int) -> dict:
    """One (case, dtype, seed): both verdicts, their times and our failing summary."""
    inputs = build_inputs(case, dtype, seed)
    row = {"case": case.name, "library": case.library, "dtype": str(dtype).replace("torch.", ""), "seed": seed,
           "expected": case.expected}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with case.patched():
            start = time.perf_counter()
            try:
                report = gk.check_gradients(case.fn, *_fresh(inputs))
                row["ours"] = "pass" if report.ok else "FAIL"
                row["ours_detail"] = "" if report.ok else str(report).splitlines()[0][:300]
                if not report.ok and report.mismatches:
                    worst = max(report.mismatches, key=lambda m: m.abs_error / max(m.allowed, 1e-300))
                    row["ours_worst"] = {"abs_error": worst.abs_error, "allowed": worst.allowed,
                                         "analytic": worst.analytic, "numerical": worst.numerical}
            except Exception as exc:  # noqa: BLE001 - the kit raising is a verdict too
                row["ours"] = "ERROR"
                row["ours_detail"] = f"{type(exc).__name__}: {exc}"[:300]
            row["ours_s"] = time.perf_counter() - start
            start = time.perf_counter()
            try:
                ok = torch.autograd.gradcheck(case.fn, _fresh(inputs), raise_exception=False)
                row["gradcheck"] = "pass" if ok else "FAIL"
            except Exception as exc:  # noqa: BLE001 - gradcheck raising counts as FAIL
                row["gradcheck"] = "FAIL"
                row["gradcheck_detail"] = f"{type(exc).__name__}: {exc}"[:200]
            row["gradcheck_s"] = time.perf_counter() - start
    return row


def _wrong(row: dict, key: str) -> bool:
    """Whether ``key``'s verdict disagrees with the expected one (an ERROR always does)."""
    if row[key] == "ERROR":
        return True
    return (row[key] == "pass") != (row["expected"] == "correct")


def summarize(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["library"], row["dtype"])].append(row)
    out = []
    for (library, dtype), group in sorted(groups.items()):
        correct = [r for r in group if r["expected"] == "correct"]
        wrong = [r for r in group if r["expected"] == "wrong"]
        ratios = [r["ours_s"] / max(r["gradcheck_s"], 1e-9) for r in group]
        out.append({
            "library": library, "dtype": dtype,
            "functions": len({r["case"] for r in correct}), "bugs": len({r["case"] for r in wrong}),
            "correct_runs": len(correct), "wrong_runs": len(wrong),
            "ours_false_alarms": sum(r["ours"] != "pass" for r in correct),
            "ours_errors": sum(r["ours"] == "ERROR" for r in group),
            "ours_catches": sum(r["ours"] == "FAIL" for r in wrong),
            "gc_false_alarms": sum(r["gradcheck"] != "pass" for r in correct),
            "gc_catches": sum(r["gradcheck"] == "FAIL" for r in wrong),
            "ratio_median": statistics.median(ratios), "ratio_worst": max(ratios),
        })
    return out


def _totals(summary: list[dict], rows: list[dict], dtype: str) -> dict:
    part = [s for s in summary if s["dtype"] == dtype]
    ratios = [r["ours_s"] / max(r["gradcheck_s"], 1e-9) for r in rows if r["dtype"] == dtype]
    keys = ("functions", "bugs", "correct_runs", "wrong_runs", "ours_false_alarms", "ours_errors", "ours_catches",
            "gc_false_alarms", "gc_catches")
    total = {k: sum(s[k] for s in part) for k in keys}
    total.update(library="**all**", dtype=dtype, ratio_median=statistics.median(ratios) if ratios else 0.0,
                 ratio_worst=max(ratios) if ratios else 0.0)
    return total


def _line(s: dict) -> str:
    return (f"| {s['library']} | {s['dtype']} | {s['functions']} | {s['ours_false_alarms']}/{s['correct_runs']} | "
            f"{s['gc_false_alarms']}/{s['correct_runs']} | {s['ours_catches']}/{s['wrong_runs']} | "
            f"{s['gc_catches']}/{s['wrong_runs']} | {s['ratio_median']:.2f} | {s['ratio_worst']:.1f} |")


def markdown(summary: list[dict], rows: list[dict], skipped: dict, args, elapsed: float) -> str:
    head = ("| library | dtype | functions | ours: false alarms | gradcheck: false alarms | ours: catches | "
            "gradcheck: catches | ours/gradcheck time, median | worst |\n|---|---|---|---|---|---|---|---|---|")
    lines = [
        "# Real-world suite: gradcheck_kit against `torch.autograd.gradcheck`",
        "",
        f"Generated by `python benchmarks/run_realworld.py{' --quick' if args.quick else ''}` "
        f"({args.seeds} seed(s) per case and dtype; torch {torch.__version__}, Python {platform.python_version()}, "
        f"{torch.get_num_threads()} thread(s); {elapsed:.0f} s). Counts are runs (case × seed): false alarms "
        "over the runs of correct cases, catches over the runs of wrong ones (injected bugs and library "
        "findings). Ours: `gk.check_gradients(fn, *inputs)` with default settings; gradcheck: "
        "`torch.autograd.gradcheck(fn, inputs)` with its defaults (a raise counts as FAIL; it is made for "
        "float64 and warns on float32 inputs). Time ratio: our time / gradcheck's, per run.",
        "",
        head,
    ]
    for dtype in ("float32", "float64"):
        lines += [_line(s) for s in summary if s["dtype"] == dtype]
        lines.append(_line(_totals(summary, rows, dtype)))
    if skipped:
        lines += ["", "Skipped libraries: " + "; ".join(f"{k}: {v}" for k, v in sorted(skipped.items()))]
    wrong = [r for r in rows if _wrong(r, "ours")]
    lines += ["", "## Our wrong verdicts", ""]
    if not wrong:
        lines.append("None.")
    else:
        lines += ["| case | dtype | seed | expected | ours | gradcheck | first line of our report |",
                  "|---|---|---|---|---|---|---|"]
        for r in wrong:
            detail = r.get("ours_detail", "").replace("|", "\\|")
            lines.append(f"| {r['case']} | {r['dtype']} | {r['seed']} | {r['expected']} | {r['ours']} | "
                         f"{r['gradcheck']} | {detail} |")
    lines += ["", "## Every case", "", "| case | expected | float32 ours | float32 gradcheck | float64 ours | "
              "float64 gradcheck |", "|---|---|---|---|---|---|"]
    by_case: dict[str, dict] = defaultdict(lambda: defaultdict(list))
    expected = {}
    for r in rows:
        by_case[r["case"]][r["dtype"]].append(r)
        expected[r["case"]] = r["expected"]

    def cell(rs, key):
        fails = sum(r[key] != "pass" for r in rs)
        return f"{len(rs) - fails} pass, {fails} FAIL" if fails else f"{len(rs)} pass"

    for name, per in by_case.items():
        lines.append(f"| {name} | {expected[name]} | {cell(per['float32'], 'ours')} | "
                     f"{cell(per['float32'], 'gradcheck')} | {cell(per['float64'], 'ours')} | "
                     f"{cell(per['float64'], 'gradcheck')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one seed per case and dtype")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per case and dtype (default 3, --quick 1)")
    parser.add_argument("--libraries", default=None, help="comma-separated import names (default: all)")
    parser.add_argument("--out", default=str(HERE / "realworld_results.md"), help="markdown output")
    parser.add_argument("--json", default=None, help="write every run as JSON here")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args(argv)
    if args.seeds is None:
        args.seeds = 1 if args.quick else 3
    torch.set_num_threads(args.threads)
    libraries = args.libraries.split(",") if args.libraries else None
    suite, skipped = cases(libraries)
    for library, why in sorted(skipped.items()):
        print(f"skipped {library}: {why}", flush=True)
    rows = []
    start = time.perf_counter()
    for case in suite:
        for dtype in DTYPES:
            for seed in range(args.seeds):
                row = run_case(case, dtype, seed)
                rows.append(row)
                flag = "  <-- ours disagrees with expected" if _wrong(row, "ours") else ""
                print(f"{case.name:64s} {row['dtype']:8s} seed {seed} {case.expected:7s} ours {row['ours']:5s} "
                      f"gradcheck {row['gradcheck']:5s} {row['ours_s']:6.2f}s {row['gradcheck_s']:6.2f}s{flag}",
                      flush=True)
    elapsed = time.perf_counter() - start
    summary = summarize(rows)
    print()
    print("library          dtype    funcs  ours FA   gc FA    ours catch  gc catch   time ratio med/worst")
    for dtype in ("float32", "float64"):
        for s in [s for s in summary if s["dtype"] == dtype] + [_totals(summary, rows, dtype)]:
            print(f"{s['library']:16s} {s['dtype']:8s} {s['functions']:5d}  "
                  f"{s['ours_false_alarms']:3d}/{s['correct_runs']:<4d} "
                  f"{s['gc_false_alarms']:3d}/{s['correct_runs']:<4d} "
                  f"{s['ours_catches']:3d}/{s['wrong_runs']:<4d}    {s['gc_catches']:3d}/{s['wrong_runs']:<4d}   "
                  f"{s['ratio_median']:.2f} / {s['ratio_worst']:.1f}")
    print(f"\n{len(rows)} runs in {elapsed:.0f} s")
    Path(args.out).write_text(markdown(summary, rows, skipped, args, elapsed))
    print(f"wrote {args.out}")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "rows": rows, "skipped": skipped}, indent=1))
        print(f"wrote {args.json}")
    return 1 if any(_wrong(r, "ours") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
