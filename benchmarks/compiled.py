"""A torch.compile'd function checked with gradcheck_kit: the check against the compile itself.

The check runs the numerics on the eager function and compares compiled autograd with eager autograd
(one compile). Its target is the compile time plus at most 2 s. Run:

    python benchmarks/compiled.py [--backend inductor|aot_eager] [--size 5]

Each measurement resets dynamo and compiles again, so both include one compile (inductor's on-disk
caches may make later compiles faster: the script times compile-only first, then the check, then
compile-only again, and reports the check against the mean of the two).
"""

from __future__ import annotations

import argparse
import time

import torch

import gradcheck_kit as gk


def _fresh(backend: str):
    torch._dynamo.reset()  # forget earlier compiles of f: every measurement compiles it again

    def f(x):
        return torch.sin(x) * x

    return torch.compile(f, backend=backend)


def _compile_only(backend: str, x: torch.Tensor) -> float:
    start = time.perf_counter()
    compiled = _fresh(backend)
    leaf = x.detach().requires_grad_(True)
    compiled(leaf).sum().backward()
    return time.perf_counter() - start


def _check(backend: str, x: torch.Tensor) -> tuple[float, gk.GradientReport]:
    start = time.perf_counter()
    report = gk.check_gradients(_fresh(backend), x)
    return time.perf_counter() - start, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--size", type=int, default=5)
    args = parser.parse_args()
    x = torch.randn(args.size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    first = _compile_only(args.backend, x)
    check, report = _check(args.backend, x)
    second = _compile_only(args.backend, x)
    compile_time = (first + second) / 2
    print(f"backend={args.backend} size={args.size}")
    print(f"compile + one forward/backward: {first:.2f} s, {second:.2f} s")
    print(f"check_gradients(torch.compile(f), x): {check:.2f} s, ok={report.ok}, compiled check: {report.check('compiled')}")
    print(f"check - compile: {check - compile_time:+.2f} s (target: at most +2 s)")


if __name__ == "__main__":
    main()
