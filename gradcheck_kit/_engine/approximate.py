"""The approximate tier: derivatives that agree only to a small fraction of their Jacobian's scale.

Implicit differentiation through an iterative solver (a QP or conic layer, a fixed point, Newton or
bisection roots, an adaptive ODE solver with an adjoint, Sinkhorn) returns the derivative of the exact
solution; the function computed is the solver's iterate, whose derivative differs from it by about the
solver's accuracy. Such a derivative misses the rounding tolerance by orders of magnitude and is still
what its author meant. A derivative that fails the rounding tolerance passes as **approximate** when

    |autograd - numerical| <= allowed + rho(dtype) * scale

where ``scale`` is the largest magnitude in the entry's row or column of its block (the derivatives of that
output w.r.t. that input, autograd's or the numerical values, whichever is larger), or the block's 90th
percentile of nonzero magnitudes where larger; for a directional check the size of the projection,
``||(v·J) ∘ |u| ||``. Not the entry itself: an inactive constraint's derivative is exactly 0 numerically
and ~1e-9 by autograd, and so may be its whole row and column. Not the block's largest entry: a pole
(1/x at 1e-10) would forgive every other entry. ``strict=True`` fails these derivatives. One report note (code
``"approximate"``) counts and lists them with the worst relative disagreement. Explicit ``atol``/``rtol``
switch the tier off: the caller's tolerance is then the rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from gradcheck_kit._engine.compare import Verdict
from gradcheck_kit._inputs import coord_index
from gradcheck_kit.report import Note, format_index

__all__ = ["ACCURACY", "accuracy", "entry_scale", "apply", "entry_label", "Tally"]

#: the relative accuracy (of the scale) accepted as approximate, by the precision of the differentiated
#: inputs: float64 (eps <= 1e-15), and everything coarser (float32, float16, bfloat16); see docs/numerics.md
ACCURACY = {"float64": 3e-5, "low": 1e-4}
#: a directional check's tier, as a fraction of ACCURACY: a projection averages independent per-entry
#: errors, so a backward rounded through float16 projects to a fraction of its per-entry error, as small as
#: a float32 solver's: the projection cannot tell them apart, and its tier stays below the bugs it
#: resolves (docs/numerics.md). Auto mode narrows a failed projection down entry by entry, where the full
#: tier applies (``narrow.narrowed``)
DIRECTIONAL_FACTOR = 0.01
#: entries named in the note
LISTED = 4


def accuracy(dtype: torch.dtype, directional: bool = False) -> float:
    real = dtype.to_real() if dtype.is_complex else dtype
    rho = ACCURACY["float64"] if torch.finfo(real).eps <= 1e-15 else ACCURACY["low"]
    return rho * DIRECTIONAL_FACTOR if directional else rho


#: the block's typical large magnitude: this quantile of its nonzero magnitudes (one outlier, a pole, does
#: not raise it for the other entries)
QUANTILE = 0.9


def entry_scale(
    analytic_block: torch.Tensor, numerical: torch.Tensor, j_idx: torch.Tensor, r_idx: torch.Tensor, jacobian: bool
) -> torch.Tensor:
    """Per judged entry ``(j_idx[e], r_idx[e])`` of the ``(n_i, r)`` block: the largest magnitude in its
    row or column, or the block's ``QUANTILE`` of nonzero magnitudes where larger (autograd's values, or the
    numerical ones ``numerical`` where larger; non-finite values count as 0). ``jacobian`` False: the rows
    are projections ``v·out`` (one row mixing every output, where a pole's entry would be every entry's row
    maximum): the column alone."""
    m = analytic_block.abs().nan_to_num(0.0, posinf=0.0, neginf=0.0).clone()
    num = numerical.abs().nan_to_num(0.0, posinf=0.0, neginf=0.0)
    m[j_idx, r_idx] = torch.maximum(m[j_idx, r_idx], num)
    nonzero = m[m > 0]
    typical = float(torch.quantile(nonzero.float(), QUANTILE)) if 0 < nonzero.numel() <= 1 << 24 else 0.0
    scale = m.amax(dim=1)[j_idx]
    if jacobian:
        scale = torch.maximum(scale, m.amax(dim=0)[r_idx])
    return scale.clamp_min(typical)


def apply(
    verdict: Verdict, analytic: torch.Tensor, scale: torch.Tensor | float, rho: float, strict: bool,
    only: torch.Tensor | None = None,
) -> None:
    """Failed derivatives of ``verdict`` within ``rho * scale`` of passing: ``verdict.approximate`` gets their
    ``|autograd - numerical| / scale`` (0 elsewhere; those an earlier call found are kept) and, unless
    ``strict``, they pass (their allowance and ratio then include the tier). ``only``: the derivatives
    looked at (a mask), all where None."""
    scale = torch.as_tensor(scale, dtype=torch.float64).expand_as(verdict.numerical)
    diff = (analytic - verdict.numerical).abs()
    tier = verdict.allowed + rho * scale
    within = (
        verdict.failed & ~verdict.unchecked & ~verdict.sharp_kink & torch.isfinite(analytic)
        & torch.isfinite(verdict.numerical) & (scale > 0) & (diff <= tier)
    )
    if only is not None:
        within = within & only
    # within the tier: a positive relative disagreement (at least the smallest normal, never 0)
    relative = torch.where(within, (diff / scale.clamp_min(1e-300)).clamp_min(1e-307), torch.zeros_like(diff))
    if verdict.approximate is not None:
        relative = torch.maximum(relative, verdict.approximate)
    verdict.approximate = relative
    if strict or not bool(within.any()):
        return
    verdict.failed = verdict.failed & ~within
    verdict.allowed = torch.where(within, tier, verdict.allowed)
    verdict.ratio = torch.where(within, diff / tier, verdict.ratio)


def entry_label(out: torch.Tensor, lhs: str, kind: str, x: torch.Tensor, name: str, j: int, r: int) -> str:
    """The derivative of row ``r`` of output ``out`` (named ``lhs``) w.r.t. coordinate ``j`` of ``x`` (named
    ``name``) as the note lists it: ``d out[2] / d x[0, 1]``, ``d (v·out) / d x[..]`` for a projected row."""
    index, _ = coord_index(j, x.shape, x.is_complex())
    if kind == "jacobian":
        lhs += format_index(coord_index(r, out.shape, out.is_complex())[0])
    else:
        lhs = f"(v·{lhs})"
    return f"d {lhs} / d {name}{format_index(index)}"


@dataclass
class Tally:
    """Approximate derivatives found over one check run, for the one note."""

    count: int = 0
    worst: float = 0.0
    rho: float = 0.0
    dtype: str = ""
    directional: bool = False
    listed: list = field(default_factory=list)

    def add(self, relative: torch.Tensor, rho: float, dtype: torch.dtype, labels, directional: bool = False) -> None:
        """``relative``: ``Verdict.approximate``; ``labels(pos)`` names the derivative at its flat position."""
        within = relative > 0
        n = int(within.sum())
        if not n:
            return
        self.count += n
        self.directional |= directional
        self.worst = max(self.worst, float(relative[within].max()))
        self.rho = max(self.rho, rho)
        self.dtype = self.dtype or str(dtype).replace("torch.", "")
        flat = within.reshape(-1).nonzero().reshape(-1)
        order = torch.argsort(relative.reshape(-1)[flat], descending=True)
        for pos in flat[order][: LISTED - len(self.listed)].tolist():
            self.listed.append(labels(pos))

    def note(self, compared: int, strict: bool) -> Note | None:
        if not self.count:
            return None
        what = "the Jacobian's scale (the largest entry of their row or column" + (
            "; |v·J ∘ u| for a projection)" if self.directional else ")"
        )
        names = ", ".join(self.listed) + (f" and {self.count - len(self.listed)} more" if self.count > len(self.listed) else "")
        verdict = "strict=True: they fail" if strict else "strict=True fails them"
        text = (
            f"{self.count} of {max(compared, self.count)} derivatives agree only to {self.worst:.2g} of "
            f"{what} (approximate tier, {self.rho:g} allowed in {self.dtype}): expected from iterative "
            f"solvers (implicit differentiation, fixed points, adaptive ODE solvers), exact only to their "
            f"tolerance; a bug that small is not told apart (1% of an entry {0.01 / self.rho:.0f}x smaller than "
            f"the largest of its row and column); {verdict}: {names}"
        )
        return Note(text, "approximate")
