"""How much of a directional check is fn and autograd, and how much is the kit's own work.

    python benchmarks/directional_floor.py                  # float32, 10^6 elements, 21 rounds
    python benchmarks/directional_floor.py --dtype float64 --rounds 41

The benchmark's directional case (sin(x)·x, non-scalar output) timed four ways, taking turns in one
process (one torch thread, medians):

- ``fwd+bwd``: one forward and one backward, the baseline of the issue's "within 6×" target;
- ``floor``: only the calls of fn and autograd that a default directional check makes, with nothing of
  the kit's own around them: the analytic forward, the backward and the re-entrancy backward, one
  forward-mode pass, and (float32 inputs) the two float64 forwards at x ± h·u of the sharp reference
  (float64 inputs: two forwards in float64);
- ``ours``: ``gk.check_gradients(fn, x, mode="directional")``;
- ``ours, forward_ad=False``.

It prints each time, each as a multiple of fwd+bwd, and ours minus the floor (the kit's own passes:
random vectors, points, dot products, sizes, comparisons). Run it with glibc's
``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_MMAP_THRESHOLD_`` raised to see the times without page faults.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torch.autograd.forward_ad as fwAD

import gradcheck_kit as gk


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    dtype = getattr(torch, args.dtype)
    g = torch.Generator().manual_seed(11)
    x = torch.randn(args.size, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    v = torch.randn(args.size, generator=g, dtype=torch.float64).to(dtype)
    u = torch.randn(args.size, generator=g, dtype=torch.float64).to(dtype)

    def fn(x):
        return torch.sin(x) * x

    def fwd_bwd():
        xx = x.detach().requires_grad_()
        torch.autograd.grad(fn(xx), xx, v)

    def floor():
        xx = x.detach().clone().requires_grad_()
        y = fn(xx)
        torch.autograd.grad(y, xx, v, retain_graph=True)
        torch.autograd.grad(y, xx, v, retain_graph=True)
        with fwAD.dual_level(), torch.no_grad():
            fwAD.unpack_dual(fn(fwAD.make_dual(x.detach(), u))).tangent
        x64 = x.detach().to(torch.float64)
        with torch.no_grad():
            for sign in (1.0, -1.0):
                out = fn(x64 + sign * 1e-6 * u)
                del out

    calls = {
        "fwd+bwd": fwd_bwd,
        "floor": floor,
        "ours": lambda: gk.check_gradients(fn, x, mode="directional"),
        "ours, forward_ad=False": lambda: gk.check_gradients(fn, x, mode="directional", forward_ad=False),
    }
    for call in calls.values():
        call()
    times: dict = {name: [] for name in calls}
    for _ in range(args.rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    print(f"sin(x)·x, {args.size:,} {args.dtype} elements, medians of {args.rounds} rounds")
    for name, ms in med.items():
        print(f"  {name:24s} {ms:7.1f} ms  {ms / med['fwd+bwd']:5.2f}× fwd+bwd")
    print(f"  the kit's own passes (ours - floor): {med['ours'] - med['floor']:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
