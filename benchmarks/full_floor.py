"""How much of a full-mode check is fn and autograd, and how much is the kit's own work.

    python benchmarks/full_floor.py                 # the MLP of speed.py, 41 rounds
    python benchmarks/full_floor.py --rounds 81 --clock perf

The MLP case of ``speed.py`` (``tanh(x @ a) @ b``, 8x16 -> 16 -> 4, float64, full mode) timed three ways,
taking turns in one process (one torch thread):

- ``floor``: only the calls of fn and autograd that the check makes, with nothing of the kit's own around
  them: autograd's forward, f at ±h of every coordinate (one vmap per input, the others held), the plain
  call that vets the first vmapped batch, the Jacobian's rows (the first through a plain backward, then all
  of them with the zero row and the two structural rows through one batched backward), f at ±2h of the
  coordinates of the entries the screen leaves open (one vmap over the inputs that have them) and one
  forward-mode pass;
- ``ours``: ``gk.check_gradients(fn, x, a, b, mode="full")``;
- ``gradcheck``: ``torch.autograd.gradcheck(fn, (x, a, b))``.

It prints the minimum and median of each (thread CPU time by default: on a shared machine it leaves out
the time the process waits for a core), each as a fraction of gradcheck's, and ours minus the floor.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.autograd.forward_ad as fwAD

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import gradcheck_kit as gk  # noqa: E402
from speed import _mlp  # noqa: E402

#: rows of the batched backward beyond the Jacobian's: the zero row and the two structural rows (c, -c)
EXTRA_ROWS = 3


def _open_points(fn, inputs) -> int:
    """How many points the check evaluates at ±2h for the entries its ±h screen leaves open: its
    evaluations less the screen's two per coordinate and its two single evaluations."""
    report = gk.check_gradients(fn, *inputs, mode="full")
    assert report.ok, str(report)
    return report.evaluations - 2 * sum(t.numel() for t in inputs) - 2


def _points(x: torch.Tensor, offsets: tuple) -> torch.Tensor:
    """x with one coordinate moved per point, by each offset in turn: ``(offsets x n, *x.shape)``."""
    n = x.numel()
    points = x.reshape(-1).repeat(len(offsets) * n, 1).view(len(offsets), n, n)
    for m, off in enumerate(offsets):
        points[m].diagonal().add_(off)
    return points.view(-1, *x.shape)


def floor_calls(fn, inputs, open_points: int, open_inputs: tuple = (0, 1), h: float = 1e-6):
    """The calls of fn and autograd a full check of ``fn`` makes, and nothing else. ``open_points``: the
    points at ±2h, each moving one coordinate of one of ``open_inputs`` (all batched in one vmap: the
    cost is that of the count, wherever the coordinates lie; the MLP's open entries lie on x and a)."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    fixed = [t.detach() for t in inputs]
    out = fn(*leaves)
    with torch.no_grad():
        for i, x in enumerate(fixed):
            batch = _points(x, (h, -h))
            torch.func.vmap(lambda p, i=i: fn(*[p if j == i else t for j, t in enumerate(fixed)]))(batch)
        fn(*fixed)
    rows = torch.eye(out.numel() + EXTRA_ROWS, out.numel(), dtype=out.dtype).view(-1, *out.shape)
    torch.autograd.grad(out, leaves, rows[0], retain_graph=True)
    torch.autograd.grad(out, leaves, rows, retain_graph=True, is_grads_batched=True)
    if open_points > 0:
        order = list(open_inputs)
        batches = [fixed[i].expand(open_points, *fixed[i].shape).clone() for i in order]
        for p, i in enumerate(order):
            cols = torch.arange(p, open_points, len(order)) % fixed[i].numel()
            batches[p].view(open_points, -1)[torch.arange(p, open_points, len(order)), cols] += 2 * h

        def at(*moved):
            args = list(fixed)
            for i, t in zip(order, moved):
                args[i] = t
            return fn(*args)

        with torch.no_grad():
            torch.func.vmap(at)(*batches)
    with fwAD.dual_level(), torch.no_grad():
        duals = [fwAD.make_dual(t, torch.randn_like(t)) for t in fixed]
        fwAD.unpack_dual(fn(*duals)).tangent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--clock", default="thread", choices=["thread", "perf"],
                        help="thread CPU time (default) or wall time")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    fn, inputs = _mlp(torch.float64)
    open_points = _open_points(fn, inputs)
    calls = {
        "floor": lambda: floor_calls(fn, inputs, open_points),
        "ours": lambda: gk.check_gradients(fn, *inputs, mode="full"),
        "gradcheck": lambda: torch.autograd.gradcheck(fn, inputs),
    }
    for call in calls.values():
        call()
    times: dict = {name: [] for name in calls}
    for _ in range(args.rounds):
        for name, call in calls.items():
            start = clock()
            call()
            times[name].append(clock() - start)
    gc_min, gc_med = min(times["gradcheck"]), statistics.median(times["gradcheck"])
    print(f"MLP 8x16-16-4 tanh, full, float64; {args.clock} time, {args.rounds} rounds; "
          f"{open_points} points at ±2h for the open entries")
    print(f"{'':<12} {'min ms':>8} {'median ms':>10} {'min/gc':>8} {'median/gc':>10}")
    for name, ts in times.items():
        lo, med = min(ts), statistics.median(ts)
        print(f"{name:<12} {lo * 1e3:8.2f} {med * 1e3:10.2f} {lo / gc_min:8.3f} {med / gc_med:10.3f}")
    own_min = min(times["ours"]) - min(times["floor"])
    print(f"ours - floor: {own_min * 1e3:.2f} ms (min); 10x gradcheck leaves {gc_min / 10 * 1e3:.2f} ms in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
