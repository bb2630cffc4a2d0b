"""A torch.compile'd function checked with gradcheck_kit: the check's time against the compile's.

The check runs the numerics on the eager function and compares compiled autograd with eager autograd
(one compile). Its target: the compile time plus at most 2 s. Each measurement runs in a fresh process
with its own empty inductor cache directory, so each includes one cold compile; the two kinds take
turns for ``--rounds`` rounds and the medians are compared.

    python benchmarks/compiled.py [--backend inductor|aot_eager] [--size 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

_CHILD = r"""
import sys, time
import torch
import gradcheck_kit as gk

backend, size, what = sys.argv[1], int(sys.argv[2]), sys.argv[3]
x = torch.randn(size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def f(t):
    return torch.sin(t) * t


start = time.perf_counter()
compiled = torch.compile(f, backend=backend)
if what == "compile":
    leaf = x.detach().requires_grad_(True)
    compiled(leaf).sum().backward()
    verdict = "-"
else:
    report = gk.check_gradients(compiled, x)
    verdict = f"ok={report.ok} {report.check('compiled')}"
print(f"{time.perf_counter() - start:.3f} {verdict}")
"""


def _run(backend: str, size: int, what: str) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, backend, str(size), what], capture_output=True, text=True, env=env, check=True
        ).stdout.strip().splitlines()[-1]
    seconds, verdict = out.split(" ", 1)
    return float(seconds), verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--size", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    compiles, checks, verdict = [], [], ""
    for _ in range(args.rounds):
        compiles.append(_run(args.backend, args.size, "compile")[0])
        seconds, verdict = _run(args.backend, args.size, "check")
        checks.append(seconds)
    c, k = statistics.median(compiles), statistics.median(checks)
    print(f"backend={args.backend} size={args.size} rounds={args.rounds} (fresh process and inductor cache each)")
    print(f"compile + one forward/backward: median {c:.2f} s  ({', '.join(f'{v:.2f}' for v in compiles)})")
    print(f"check_gradients(torch.compile(f), x): median {k:.2f} s  ({', '.join(f'{v:.2f}' for v in checks)})")
    print(f"  {verdict}")
    print(f"check - compile: {k - c:+.2f} s (target: at most +2 s)")


if __name__ == "__main__":
    main()
