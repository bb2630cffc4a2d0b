"""A suite of real third-party autograd code: custom ``autograd.Function``s and differentiable algorithms
from libraries that users of the kit would check (issue 18, item 4).

Each :class:`Case` names a library (its import name), a function, an input builder taking
``(dtype, generator)`` and the expected verdict. ``expected="correct"`` cases are the libraries' code as
shipped; ``expected="wrong"`` cases inject a backward bug while they run: ``bug`` is a context-manager
factory that patches the library (a few % in one gradient, or a dropped term) and restores it on exit.

Inputs come from a private ``torch.Generator`` seeded per (case, dtype, seed) (:func:`build_inputs`); the
global RNG is never touched. Functions that draw random numbers themselves (a reparameterised sample,
random projections) do it under ``torch.random.fork_rng`` with a fixed seed, so that every call of the
function is the same function and the caller's RNG is left alone.

A library that is not installed is reported by :func:`cases` in ``skipped`` with the reason; its cases
are left out. Install the libraries with ``pip install -e ".[realworld]"`` after torch's CPU build.
"""

from __future__ import annotations

import contextlib
import zlib
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import torch

__all__ = ["Case", "LIBRARIES", "build_inputs", "cases", "seed_for"]

LIBRARIES = (
    "kornia", "gpytorch", "pyro", "geoopt", "zuko", "normflows", "ot", "torchode", "torchlie",
    "torchopt", "entmax", "torchdiffeq", "cvxpylayers",
    "roma", "geomloss", "sparsemax", "diffsort", "e3nn", "monai", "pytorch_metric_learning",
)


@dataclass(frozen=True)
class Case:
    name: str
    library: str
    fn: Callable
    build: Callable[[torch.dtype, torch.Generator], tuple]
    expected: str = "correct"  # "correct" | "wrong"
    bug: Callable[[], ContextManager] | None = None
    note: str = ""
    setting: Callable[[], ContextManager] | None = None

    @contextlib.contextmanager
    def patched(self):
        """The context in which the case runs: its ``setting`` (a library switch that selects the code path
        under test), then the injected bug for ``wrong`` cases; both are undone on exit."""
        with contextlib.ExitStack() as stack:
            if self.setting is not None:
                stack.enter_context(self.setting())
            if self.bug is not None:
                stack.enter_context(self.bug())
            yield


def seed_for(case: Case, dtype: torch.dtype, seed: int) -> int:
    return zlib.crc32(f"{case.name}|{dtype}|{seed}".encode())


def build_inputs(case: Case, dtype: torch.dtype, seed: int) -> tuple:
    gen = torch.Generator().manual_seed(seed_for(case, dtype, seed))
    return case.build(dtype, gen)


# ---------------------------------------------------------------------------------------------------
# input helpers: drawn in float64 from the private generator, then cast
def _u(gen, dtype, lo, hi, *shape, grad=True):
    t = (torch.rand(*shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo).to(dtype)
    return t.requires_grad_(grad)


def _n(gen, dtype, *shape, scale=1.0, grad=True):
    t = (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)
    return t.requires_grad_(grad)


def _spd_factor(gen, dtype, n):
    """A lower-triangular factor L with a dominant diagonal: L Lᵀ + I is well conditioned."""
    a = torch.randn(n, n, generator=gen, dtype=torch.float64) * 0.3
    a = a.tril() + torch.eye(n, dtype=torch.float64) * 1.2
    return a.to(dtype).requires_grad_(True)


def _fixed_rng(fn, seed=0):
    """``fn`` made deterministic: its own random draws come from a fixed seed; the caller's RNG is kept."""

    def wrapped(*args):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return fn(*args)

    wrapped.__name__ = getattr(fn, "__name__", "fn")
    return wrapped


# ---------------------------------------------------------------------------------------------------
# bug injection helpers: each returns a context manager that patches and restores
@contextlib.contextmanager
def _patch(owner, name, make):
    """Replace ``owner.name`` by ``make(original)`` while the context runs; restore it after."""
    saved = owner.__dict__[name] if isinstance(owner, type) and name in owner.__dict__ else getattr(owner, name)
    original = getattr(owner, name)
    replacement = make(original)
    if isinstance(owner, type) and isinstance(saved, (staticmethod, classmethod)):
        replacement = staticmethod(replacement)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, saved)


def _scale_backward(cls, index, factor=1.03):
    """``cls.backward`` with the gradient of input ``index`` multiplied by ``factor``."""

    def make(original):
        def backward(ctx, *grads):
            out = original(ctx, *grads)
            out = list(out) if isinstance(out, (tuple, list)) else [out]
            if out[index] is not None:
                out[index] = out[index] * factor
            return tuple(out)

        return backward

    return lambda: _patch(cls, "backward", make)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``factor`` (injected bugs only)."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


def _scale_arg(owner, name, index, factor=1.03, key=None):
    """``owner.name`` with the gradient of its positional argument ``index`` (or keyword ``key``) scaled."""

    def make(original):
        def patched(*args, **kwargs):
            args = list(args)
            if key is not None:
                kwargs[key] = _ScaleGrad.apply(kwargs[key], factor)
            else:
                args[index] = _ScaleGrad.apply(args[index], factor)
            return original(*args, **kwargs)

        return patched

    return lambda: _patch(owner, name, make)


# ---------------------------------------------------------------------------------------------------
# kornia: geometry, filters, colour, losses
def _kornia() -> list[Case]:
    import kornia
    from kornia.geometry import conversions as kc
    from kornia.losses import focal as kfocal

    def img(c=1, h=8, w=8, lo=0.1, hi=0.9):
        return lambda dtype, gen: (_u(gen, dtype, lo, hi, 1, c, h, w),)

    def blur(x):
        return kornia.filters.gaussian_blur2d(x, (5, 5), (1.5, 1.5))

    def sobel(x):
        return kornia.filters.sobel(x)

    def aa_to_rotmat(aa):
        return kc.axis_angle_to_rotation_matrix(aa)

    def aa_roundtrip(aa):
        return kc.rotation_matrix_to_axis_angle(kc.axis_angle_to_rotation_matrix(aa))

    def quat_to_rotmat(q):
        return kc.quaternion_to_rotation_matrix(q)

    def b_aa(dtype, gen):
        return (_u(gen, dtype, 0.2, 1.0, 4, 3),)

    def b_quat(dtype, gen):
        return (_n(gen, dtype, 4, 4),)

    def rgb_to_lab(x):
        return kornia.color.rgb_to_lab(x)

    def rgb_to_hsv(x):
        return kornia.color.rgb_to_hsv(x)

    def warp(x, m):
        return kornia.geometry.transform.warp_affine(x, m, (6, 6))

    def b_warp(dtype, gen):
        x = _u(gen, dtype, 0.1, 0.9, 1, 1, 6, 6)
        base = torch.tensor([[[0.95, 0.05, 0.3], [-0.04, 1.02, 0.2]]], dtype=torch.float64)
        m = (base + torch.randn(1, 2, 3, generator=gen, dtype=torch.float64) * 0.02).to(dtype)
        return x, m.requires_grad_(True)

    def focal(pred, target):
        return kornia.losses.focal_loss(pred, target, alpha=0.5, gamma=2.0, reduction="mean")

    def b_focal(dtype, gen):
        pred = _n(gen, dtype, 6, 4)
        target = torch.randint(0, 4, (6,), generator=gen)
        return pred, target

    def ssim(a, b):
        return kornia.metrics.ssim(a, b, 3)

    def b_ssim(dtype, gen):
        return _u(gen, dtype, 0.1, 0.9, 1, 1, 6, 6), _u(gen, dtype, 0.1, 0.9, 1, 1, 6, 6)

    def soft_argmax(x):
        return kornia.geometry.subpix.spatial_soft_argmax2d(x)

    def b_heat(dtype, gen):
        return (_n(gen, dtype, 1, 2, 5, 5),)

    return [
        Case("kornia.filters.gaussian_blur2d", "kornia", blur, img()),
        Case("kornia.filters.sobel", "kornia", sobel, img()),
        Case("kornia.axis_angle_to_rotation_matrix", "kornia", aa_to_rotmat, b_aa),
        Case("kornia.rotation_matrix_to_axis_angle(roundtrip)", "kornia", aa_roundtrip, b_aa),
        Case("kornia.quaternion_to_rotation_matrix", "kornia", quat_to_rotmat, b_quat),
        Case("kornia.color.rgb_to_lab", "kornia", rgb_to_lab, img(3, 3, 3)),
        Case("kornia.color.rgb_to_hsv", "kornia", rgb_to_hsv, img(3, 3, 3)),
        Case("kornia.warp_affine", "kornia", warp, b_warp),
        Case("kornia.losses.focal_loss", "kornia", focal, b_focal, note="custom Function _TargetLogSoftmax",
             setting=lambda: _patch(kfocal, "_CPU_MIN_NUMEL", lambda n: 0)),
        Case("kornia.metrics.ssim", "kornia", ssim, b_ssim),
        Case("kornia.spatial_soft_argmax2d", "kornia", soft_argmax, b_heat),
        Case("kornia.losses.focal_loss [bug: logits grad +3%]", "kornia", focal, b_focal, "wrong",
             _scale_backward(kfocal._TargetLogSoftmax, 0),
             setting=lambda: _patch(kfocal, "_CPU_MIN_NUMEL", lambda n: 0)),
        Case("kornia.axis_angle_to_rotation_matrix [bug: dropped term]", "kornia", aa_to_rotmat, b_aa, "wrong",
             lambda: _patch(kc, "axis_angle_to_rotation_matrix", _kornia_dropped_angle)),
    ]


def _kornia_dropped_angle(original):
    """Rodrigues' formula with the angle's dependence on the axis-angle vector detached in sin/cos."""

    def patched(aa):
        theta = aa.norm(dim=-1, keepdim=True)
        k = aa / theta
        kx, ky, kz = k.unbind(-1)
        zero = torch.zeros_like(kx)
        kmat = torch.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], -1).reshape(*aa.shape[:-1], 3, 3)
        th = theta.detach()[..., None]
        eye = torch.eye(3, dtype=aa.dtype)
        return eye + torch.sin(th) * kmat + (1 - torch.cos(th)) * (kmat @ kmat)

    return patched


# ---------------------------------------------------------------------------------------------------
# gpytorch (and linear_operator, its linear-algebra engine): custom Functions
def _gpytorch() -> list[Case]:
    import gpytorch
    import linear_operator
    from gpytorch.functions import MaternCovariance, RBFCovariance
    from gpytorch.kernels.kernel import Distance

    dist = Distance()

    def sq_dist(a, b):
        return dist._sq_dist(a, b, x1_eq_x2=False, postprocess=False)

    def plain_dist(a, b):
        return dist._dist(a, b, x1_eq_x2=False, postprocess=False)

    def b_points_ls(dtype, gen):
        x1 = _n(gen, dtype, 5, 2, grad=False)
        x2 = _n(gen, dtype, 4, 2, grad=False)
        return x1, x2, _u(gen, dtype, 0.6, 1.5, 1, 1)

    def rbf(x1, x2, ls):
        return RBFCovariance.apply(x1, x2, ls, sq_dist)

    def matern(x1, x2, ls):
        return MaternCovariance.apply(x1, x2, ls, 2.5, plain_dist)

    def log_ncdf(z):
        return gpytorch.functions.log_normal_cdf(z)

    def b_z(dtype, gen):
        return (_u(gen, dtype, -0.95, 4.0, 12),)

    def b_z_small(dtype, gen):
        return (_u(gen, dtype, -2.5, -1.05, 6),)

    def _op(l_factor):
        a = l_factor @ l_factor.mT + torch.eye(l_factor.shape[-1], dtype=l_factor.dtype)
        return linear_operator.to_linear_operator(a)

    def inv_quad_logdet(l_factor, b):
        return linear_operator.inv_quad_logdet(_op(l_factor), b, logdet=True)

    def solve(l_factor, b):
        return linear_operator.solve(_op(l_factor), b)

    def b_lb(dtype, gen):
        return _spd_factor(gen, dtype, 5), _n(gen, dtype, 5, 2)

    def mvn_log_prob(mean, l_factor, y):
        cov = l_factor @ l_factor.mT + torch.eye(l_factor.shape[-1], dtype=l_factor.dtype)
        return gpytorch.distributions.MultivariateNormal(mean, cov).log_prob(y)

    def b_mvn(dtype, gen):
        return _n(gen, dtype, 5), _spd_factor(gen, dtype, 5), _n(gen, dtype, 5, grad=False)

    def kron_logdet(la, lb):
        from linear_operator.operators import KroneckerProductLinearOperator

        a = la @ la.mT + torch.eye(3, dtype=la.dtype)
        b = lb @ lb.mT + torch.eye(2, dtype=lb.dtype)
        return KroneckerProductLinearOperator(a, b).logdet()

    def b_kron(dtype, gen):
        return _spd_factor(gen, dtype, 3), _spd_factor(gen, dtype, 2)

    return [
        Case("gpytorch.RBFCovariance", "gpytorch", rbf, b_points_ls, note="custom Function"),
        Case("gpytorch.MaternCovariance(nu=2.5)", "gpytorch", matern, b_points_ls, note="custom Function"),
        Case("gpytorch.log_normal_cdf(z > -1)", "gpytorch", log_ncdf, b_z, note="custom Function, piecewise"),
        Case("gpytorch.log_normal_cdf(z < -1) [finding]", "gpytorch", log_ncdf, b_z_small, "wrong",
             note="library finding: backward is not the forward's derivative (up to 0.55%), see README"),
        Case("linear_operator.inv_quad_logdet", "gpytorch", inv_quad_logdet, b_lb, note="Cholesky path"),
        Case("linear_operator.solve", "gpytorch", solve, b_lb),
        Case("gpytorch.MultivariateNormal.log_prob", "gpytorch", mvn_log_prob, b_mvn),
        Case("linear_operator.KroneckerProduct.logdet", "gpytorch", kron_logdet, b_kron),
        Case("gpytorch.RBFCovariance [bug: lengthscale grad -3%]", "gpytorch", rbf, b_points_ls, "wrong",
             _scale_backward(RBFCovariance, 2, 0.97)),
        Case("gpytorch.MaternCovariance [bug: dropped term]", "gpytorch", matern, b_points_ls, "wrong",
             lambda: _patch(MaternCovariance, "forward", _gpytorch_matern_dropped)),
    ]


def _gpytorch_matern_dropped(original):
    """MaternCovariance (ν = 2.5) saving ∂k/∂ℓ without the polynomial's term of the product rule:
    k = p(s)·e^{-s}, s = √5·d/ℓ; saved p(s)·e^{-s}·s/ℓ instead of adding e^{-s}·p'(s)·(-s/ℓ)."""
    import math

    def forward(ctx, x1, x2, lengthscale, nu, dist_func):
        covar = original(ctx, x1, x2, lengthscale, nu, dist_func)
        mean = x1.mean(dim=-2, keepdim=True)
        s = dist_func((x1 - mean) / lengthscale, (x2 - mean) / lengthscale) * math.sqrt(2 * nu)
        ctx.save_for_backward((1 + s + s ** 2 / 3) * torch.exp(-s) * s / lengthscale)
        return covar

    return forward


# ---------------------------------------------------------------------------------------------------
# pyro: special functions and distributions with custom or implicit gradients
def _pyro() -> list[Case]:
    import pyro.distributions as dist
    from pyro.ops import special

    def safe_log(x):
        return special.safe_log(x)

    def b_pos(dtype, gen):
        return (_u(gen, dtype, 0.3, 3.0, 10),)

    def log_beta(x, y):
        return special.log_beta(x, y)

    def log_beta_stirling(x, y):
        return special.log_beta(x, y, tol=0.02)

    def b_xy(dtype, gen):
        return _u(gen, dtype, 0.5, 5.0, 8), _u(gen, dtype, 0.5, 5.0, 8)

    def log_i1(x):
        return special.log_I1(3, x)

    def vonmises_log_prob(loc, conc, x):
        return dist.VonMises(loc, conc).log_prob(x)

    def b_vm(dtype, gen):
        return _u(gen, dtype, -1.0, 1.0, 6), _u(gen, dtype, 0.5, 5.0, 6), _u(gen, dtype, -3.0, 3.0, 6)

    def projected_normal_log_prob(conc, x):
        return dist.ProjectedNormal(conc, validate_args=False).log_prob(x)

    def b_pn(dtype, gen):
        x = torch.randn(4, 3, generator=gen, dtype=torch.float64)
        x = x / x.norm(dim=-1, keepdim=True)
        return _n(gen, dtype, 4, 3), x.to(dtype).requires_grad_(True)

    def stable_log_prob(alpha, beta, x):
        return dist.Stable(alpha, beta).log_prob(x)

    def b_stable(dtype, gen):
        return _u(gen, dtype, 1.3, 1.8, 3), _u(gen, dtype, -0.5, 0.5, 3), _u(gen, dtype, -2.0, 2.0, 3)

    def spline_transform(x, w, h, d):
        from pyro.distributions.transforms.spline import _monotonic_rational_spline

        import torch.nn.functional as F

        y, logdet = _monotonic_rational_spline(
            x, w.softmax(-1), h.softmax(-1), F.softplus(d), bound=3.0)
        return y, logdet

    def b_spline(dtype, gen):
        x = _u(gen, dtype, -2.5, 2.5, 5)
        return x, _n(gen, dtype, 5, 4), _n(gen, dtype, 5, 4), _n(gen, dtype, 5, 3)

    return [
        Case("pyro.ops.special.safe_log", "pyro", safe_log, b_pos, note="custom Function"),
        Case("pyro.ops.special.log_beta", "pyro", log_beta, b_xy),
        Case("pyro.ops.special.log_beta(tol=0.02)", "pyro", log_beta_stirling, b_xy, note="Stirling series"),
        Case("pyro.ops.special.log_I1", "pyro", log_i1, b_pos),
        Case("pyro.VonMises.log_prob", "pyro", vonmises_log_prob, b_vm),
        Case("pyro.ProjectedNormal.log_prob", "pyro", projected_normal_log_prob, b_pn),
        Case("pyro.Stable.log_prob", "pyro", stable_log_prob, b_stable, note="numerical integration"),
        Case("pyro.transforms.Spline(monotonic RQS)", "pyro", spline_transform, b_spline),
        Case("pyro.ops.special.safe_log [bug: grad +3%]", "pyro", safe_log, b_pos, "wrong",
             _scale_backward(special._SafeLog, 0)),
        Case("pyro.ops.special.log_beta [bug: dropped y term]", "pyro", log_beta, b_xy, "wrong",
             lambda: _patch(special, "log_beta", lambda orig: lambda x, y, tol=0.0: orig(x, y.detach(), tol))),
    ]


# ---------------------------------------------------------------------------------------------------
# geoopt: manifold maps
def _geoopt() -> list[Case]:
    import geoopt
    from geoopt.manifolds.stereographic import math as smath

    ball = geoopt.PoincareBall(c=1.0)
    sphere = geoopt.Sphere()
    lorentz = geoopt.Lorentz()
    stiefel = geoopt.Stiefel()

    def in_ball(gen, dtype, n, d, radius=0.7):
        v = torch.randn(n, d, generator=gen, dtype=torch.float64)
        r = torch.rand(n, 1, generator=gen, dtype=torch.float64) * radius + 0.05
        return (v / v.norm(dim=-1, keepdim=True) * r).to(dtype).requires_grad_(True)

    def b_xu(dtype, gen):
        return in_ball(gen, dtype, 4, 3), _n(gen, dtype, 4, 3, scale=0.5)

    def b_xy(dtype, gen):
        return in_ball(gen, dtype, 4, 3), in_ball(gen, dtype, 4, 3)

    def expmap(x, u):
        return ball.expmap(x, u)

    def logmap(x, y):
        return ball.logmap(x, y)

    def ball_dist(x, y):
        return ball.dist(x, y)

    def mobius_add(x, y):
        return ball.mobius_add(x, y)

    def dist_k(x, y, k):
        return smath.dist(x, y, k=k)

    def b_dist_k(dtype, gen):
        x, y = in_ball(gen, dtype, 4, 3, 0.6), in_ball(gen, dtype, 4, 3, 0.6)
        return x, y, _u(gen, dtype, -0.8, -0.3, ())

    def b_dist_k_pos(dtype, gen):
        x, y = in_ball(gen, dtype, 4, 3, 0.6), in_ball(gen, dtype, 4, 3, 0.6)
        return x, y, _u(gen, dtype, 0.3, 0.8, ())

    def sphere_expmap(x, u):
        return sphere.expmap(sphere.projx(x), sphere.proju(sphere.projx(x), u))

    def b_sphere(dtype, gen):
        return _n(gen, dtype, 4, 3), _n(gen, dtype, 4, 3, scale=0.5)

    def lorentz_dist(u, v):
        return lorentz.dist(lorentz.expmap0(u), lorentz.expmap0(v))

    def b_lorentz(dtype, gen):
        def tangent():
            t = torch.randn(4, 3, generator=gen, dtype=torch.float64) * 0.7
            return torch.cat([torch.zeros(4, 1, dtype=torch.float64), t], -1).to(dtype).requires_grad_(True)

        return tangent(), tangent()

    def stiefel_retr(x, u):
        p = stiefel.projx(x)
        return stiefel.retr(p, stiefel.proju(p, u))

    def b_stiefel(dtype, gen):
        return _n(gen, dtype, 4, 2), _n(gen, dtype, 4, 2, scale=0.3)

    return [
        Case("geoopt.PoincareBall.expmap", "geoopt", expmap, b_xu),
        Case("geoopt.PoincareBall.logmap", "geoopt", logmap, b_xy),
        Case("geoopt.PoincareBall.dist", "geoopt", ball_dist, b_xy),
        Case("geoopt.PoincareBall.mobius_add", "geoopt", mobius_add, b_xy),
        Case("geoopt.stereographic.dist(k<0)", "geoopt", dist_k, b_dist_k, note="curvature k differentiated"),
        Case("geoopt.stereographic.dist(k>0)", "geoopt", dist_k, b_dist_k_pos, note="curvature k differentiated"),
        Case("geoopt.Sphere.expmap", "geoopt", sphere_expmap, b_sphere),
        Case("geoopt.Lorentz.dist", "geoopt", lorentz_dist, b_lorentz),
        Case("geoopt.Stiefel.retr", "geoopt", stiefel_retr, b_stiefel),
        Case("geoopt.PoincareBall.expmap [bug: u grad +3%]", "geoopt", expmap, b_xu, "wrong",
             _scale_arg(smath, "expmap", 1)),
        Case("geoopt.PoincareBall.expmap [bug: dropped lambda_x term]", "geoopt", expmap, b_xu, "wrong",
             lambda: _patch(smath, "expmap", _geoopt_dropped_lambda)),
    ]


def _geoopt_dropped_lambda(original):
    """expmap_x(u) = x ⊕ tan_k(λ_x‖u‖/2)·u/‖u‖ with λ_x's dependence on x detached."""
    from geoopt.manifolds.stereographic import math as smath

    def patched(x, u, *, k, dim=-1):
        u_norm = u.norm(dim=dim, keepdim=True).clamp_min(1e-15)
        lam = smath.lambda_x(x.detach(), k=k, keepdim=True, dim=dim)
        second = smath.tan_k(lam / 2.0 * u_norm, k) * (u / u_norm)
        return smath.mobius_add(x, second, k=k, dim=dim)

    return patched


# ---------------------------------------------------------------------------------------------------
# zuko: splines, bisection and quadrature with implicit backwards, an adaptive ODE adjoint
def _zuko() -> list[Case]:
    from zuko import utils as zutils
    from zuko.transforms import BernsteinTransform, MonotonicRQSTransform, SOSPolynomialTransform

    def rqs(x, w, h, d):
        t = MonotonicRQSTransform(w, h, d, bound=3.0)
        y = t(x)
        return y, t.log_abs_det_jacobian(x, y)

    def rqs_inv(y, w, h, d):
        return MonotonicRQSTransform(w, h, d, bound=3.0).inv(y)

    def b_rqs(dtype, gen):
        return _u(gen, dtype, -2.5, 2.5, 5), _n(gen, dtype, 5, 6), _n(gen, dtype, 5, 6), _n(gen, dtype, 5, 5)

    def bernstein(x, theta):
        return BernsteinTransform(theta, bound=3.0)(x)

    def b_bern(dtype, gen):
        return _u(gen, dtype, -2.5, 2.5, 4), _n(gen, dtype, 4, 8)

    def sos(x, a):
        return SOSPolynomialTransform(a)(x)

    def b_sos(dtype, gen):
        return _u(gen, dtype, -2.0, 2.0, 3), _n(gen, dtype, 3, 2, 3, scale=0.5)

    def sos_inv(y, a):
        return SOSPolynomialTransform(a).inv(y)

    def _cubic(x, p):
        return x + p * x ** 3

    def bisection(y, p):
        return zutils.bisection(lambda x: _cubic(x, p), y, -4.0, 4.0, n=40, phi=(p,))

    def b_bisect(dtype, gen):
        return _u(gen, dtype, -3.0, 3.0, 5), _u(gen, dtype, 0.2, 1.0, 5)

    def quadrature(a, b, p):
        return zutils.gauss_legendre(lambda x: torch.exp(-p * x ** 2), a, b, n=16, phi=(p,))

    def b_quad(dtype, gen):
        return _u(gen, dtype, -1.5, -0.2, 4), _u(gen, dtype, 0.2, 1.5, 4), _u(gen, dtype, 0.3, 1.5, 4)

    def ode(x0, p):
        return zutils.odeint(lambda t, x: -p * x + torch.sin(t), x0, 0.0, 1.0, phi=(p,))

    def b_ode(dtype, gen):
        return _n(gen, dtype, 4), _u(gen, dtype, 0.5, 1.5, 4)

    return [
        Case("zuko.MonotonicRQSTransform", "zuko", rqs, b_rqs),
        Case("zuko.MonotonicRQSTransform.inv", "zuko", rqs_inv, b_rqs),
        Case("zuko.BernsteinTransform", "zuko", bernstein, b_bern),
        Case("zuko.SOSPolynomialTransform", "zuko", sos, b_sos, note="Gauss-Legendre integral, custom Function"),
        Case("zuko.SOSPolynomialTransform.inv", "zuko", sos_inv, b_sos, note="bisection, implicit backward"),
        Case("zuko.utils.bisection", "zuko", bisection, b_bisect, note="custom Function, implicit backward"),
        Case("zuko.utils.gauss_legendre", "zuko", quadrature, b_quad, note="custom Function"),
        Case("zuko.utils.odeint", "zuko", ode, b_ode, note="adaptive checkpoint adjoint"),
        Case("zuko.utils.bisection [bug: y grad +3%]", "zuko", bisection, b_bisect, "wrong",
             _scale_backward(zutils.Bisection, 1)),
        Case("zuko.utils.gauss_legendre [bug: dropped f(a) term]", "zuko", quadrature, b_quad, "wrong",
             lambda: _patch(zutils.GaussLegendre, "backward", _zuko_drop_lower)),
    ]


def _zuko_drop_lower(original):
    def backward(ctx, grad_area):
        out = list(original(ctx, grad_area))
        if out[1] is not None:
            out[1] = torch.zeros_like(out[1])
        return tuple(out)

    return backward


# ---------------------------------------------------------------------------------------------------
# normflows: rational-quadratic splines, planar and radial flows
def _normflows() -> list[Case]:
    import normflows as nf
    from normflows.utils import splines

    def rqs(x, w, h, d):
        return splines.unconstrained_rational_quadratic_spline(x, w, h, d, tails="linear", tail_bound=3.0)

    def rqs_inv(x, w, h, d):
        return splines.unconstrained_rational_quadratic_spline(
            x, w, h, d, inverse=True, tails="linear", tail_bound=3.0)

    def b_rqs(dtype, gen):
        return _u(gen, dtype, -2.5, 2.5, 5), _n(gen, dtype, 5, 6), _n(gen, dtype, 5, 6), _n(gen, dtype, 5, 5)

    def rqs_bounded(x, w, h, d):
        import torch.nn.functional as F

        return splines.rational_quadratic_spline(
            x, w, h, F.softplus(d) + 1e-3, left=-3.0, right=3.0, bottom=-3.0, top=3.0)

    def b_rqs_bounded(dtype, gen):
        return _u(gen, dtype, -2.5, 2.5, 5), _n(gen, dtype, 5, 6), _n(gen, dtype, 5, 6), _n(gen, dtype, 5, 7)

    with torch.random.fork_rng(devices=[]):  # their initialisation draws from the global RNG
        flows = {"planar": nf.flows.Planar((3,)), "radial": nf.flows.Radial((3,))}

    def _flow(name, z, *params):
        module = flows[name]
        names = [n for n, _ in module.named_parameters()]
        return torch.func.functional_call(module, dict(zip(names, params)), (z,))

    def planar(z, u, w, b):
        return _flow("planar", z, u, w, b)

    def b_planar(dtype, gen):
        return _n(gen, dtype, 4, 3), _n(gen, dtype, 3, scale=0.5), _n(gen, dtype, 3, scale=0.5), _n(gen, dtype, 1)

    def b_radial(dtype, gen):
        shapes = [p.shape for _, p in flows["radial"].named_parameters()]
        return (_n(gen, dtype, 4, 3),) + tuple(_n(gen, dtype, *shape, scale=0.5) for shape in shapes)

    def radial(z, *params):
        return _flow("radial", z, *params)

    return [
        Case("normflows.unconstrained_rational_quadratic_spline", "normflows", rqs, b_rqs),
        Case("normflows.unconstrained_rational_quadratic_spline(inverse)", "normflows", rqs_inv, b_rqs),
        Case("normflows.rational_quadratic_spline", "normflows", rqs_bounded, b_rqs_bounded),
        Case("normflows.flows.Planar", "normflows", planar, b_planar),
        Case("normflows.flows.Radial", "normflows", radial, b_radial),
        Case("normflows.unconstrained_rqs [bug: inputs grad +3%]", "normflows", rqs, b_rqs, "wrong",
             _scale_arg(splines, "rational_quadratic_spline", 0, key="inputs")),
        Case("normflows.unconstrained_rqs [bug: dropped logdet input term]", "normflows", rqs, b_rqs, "wrong",
             lambda: _patch(splines, "rational_quadratic_spline", _normflows_dropped_logdet)),
    ]


def _normflows_dropped_logdet(original):
    """The spline's log|det| loses its dependence on the inputs (d log|det| / dx dropped)."""

    def patched(inputs, *args, **kwargs):
        out, _ = original(inputs, *args, **kwargs)
        _, logdet = original(inputs.detach(), *args, **kwargs)
        return out, logdet

    return patched


# ---------------------------------------------------------------------------------------------------
# POT: exact and entropic optimal transport
def _ot() -> list[Case]:
    import ot
    from ot import backend as otb

    def b_m(dtype, gen, n=4, m=5):
        return (_u(gen, dtype, 0.1, 2.0, n, m),)

    def emd2(m):
        n, k = m.shape
        a = torch.full((n,), 1.0 / n, dtype=m.dtype)
        b = torch.full((k,), 1.0 / k, dtype=m.dtype)
        return ot.emd2(a, b, m)

    def b_ab_m(dtype, gen):
        a = torch.rand(3, generator=gen, dtype=torch.float64) + 0.5
        b = torch.rand(4, generator=gen, dtype=torch.float64) + 0.5
        a, b = a / a.sum(), b / b.sum()
        return a.to(dtype).requires_grad_(True), b.to(dtype).requires_grad_(True), _u(gen, dtype, 0.1, 2.0, 3, 4)

    def sinkhorn2(a, b, m):
        return ot.sinkhorn2(a, b, m, 1.0, numItermax=200)

    def sinkhorn2_log(a, b, m):
        return ot.sinkhorn2(a, b, m, 0.5, method="sinkhorn_log", numItermax=200)

    def unbalanced(a, b, m):
        return ot.unbalanced.sinkhorn_unbalanced2(a, b, m, 1.0, 1.0)

    def b_xs_xt(dtype, gen):
        return _n(gen, dtype, 6, 2), _n(gen, dtype, 5, 2)

    def sliced(xs, xt):
        return ot.sliced_wasserstein_distance(xs, xt, n_projections=16, seed=0)

    def w1d(u, v):
        return ot.wasserstein_1d(u, v, p=2)

    def b_uv(dtype, gen):
        return _n(gen, dtype, 7), _n(gen, dtype, 6)

    def bures(ms, mt, ls, lt):
        cs = ls @ ls.mT + 0.5 * torch.eye(3, dtype=ls.dtype)
        ct = lt @ lt.mT + 0.5 * torch.eye(3, dtype=lt.dtype)
        return ot.gaussian.bures_wasserstein_distance(ms, mt, cs, ct)

    def b_bures(dtype, gen):
        return _n(gen, dtype, 3), _n(gen, dtype, 3), _spd_factor(gen, dtype, 3), _spd_factor(gen, dtype, 3)

    def emd2_sq(xs, xt):
        return emd2(ot.dist(xs, xt))

    return [
        Case("ot.emd2", "ot", emd2, b_m, note="LP; gradient = the optimal plan"),
        Case("ot.emd2(ot.dist(xs, xt))", "ot", emd2_sq, b_xs_xt),
        Case("ot.sinkhorn2", "ot", sinkhorn2, b_ab_m),
        Case("ot.sinkhorn2(sinkhorn_log)", "ot", sinkhorn2_log, b_ab_m),
        Case("ot.sinkhorn_unbalanced2", "ot", unbalanced, b_ab_m),
        Case("ot.sliced_wasserstein_distance", "ot", sliced, b_xs_xt, note="projections drawn in the input dtype"),
        Case("ot.wasserstein_1d", "ot", w1d, b_uv),
        Case("ot.gaussian.bures_wasserstein_distance", "ot", bures, b_bures),
        Case("ot.emd2 [bug: M grad +3%]", "ot", emd2, b_m, "wrong",
             lambda: _patch(otb.TorchBackend, "set_gradients", _ot_scaled_gradients)),
        Case("ot.sinkhorn2 [bug: dropped M·dP/dM term]", "ot", sinkhorn2, b_ab_m, "wrong",
             lambda: _patch(ot.bregman._sinkhorn, "sinkhorn_knopp", _ot_plan_detached_cost)),
    ]


def _ot_scaled_gradients(original):
    def set_gradients(self, val, inputs, grads):
        grads = tuple(g * 1.03 if i == len(grads) - 1 else g for i, g in enumerate(grads))
        return original(self, val, inputs, grads)

    return set_gradients


def _ot_plan_detached_cost(original):
    """The Sinkhorn plan computed from a detached cost: sinkhorn2's gradient keeps only the plan."""

    def patched(a, b, M, reg, *args, **kwargs):
        return original(a, b, M.detach(), reg, *args, **kwargs)

    return patched


# ---------------------------------------------------------------------------------------------------
# torchode: adaptive solvers, autodiff through the solver and a backsolve adjoint
def _torchode() -> list[Case]:
    import torchode as to

    def f(t, y, args):
        return -args * y + torch.sin(t)[:, None] * y.tanh()

    def _solve(y0, k, adjoint, method):
        term = to.ODETerm(f, with_args=True)
        step = method(term=term)
        atol, rtol = (1e-6, 1e-5) if y0.dtype == torch.float32 else (1e-9, 1e-7)
        controller = to.IntegralController(atol=atol, rtol=rtol, term=term)
        solver = adjoint(step, controller)
        t_eval = torch.tensor([[0.0, 1.0]], dtype=y0.dtype).expand(y0.shape[0], 2)
        return solver.solve(to.InitialValueProblem(y0=y0, t_eval=t_eval), args=k).ys

    def dopri5(y0, k):
        return _solve(y0, k, to.AutoDiffAdjoint, to.Dopri5)

    def tsit5(y0, k):
        return _solve(y0, k, to.AutoDiffAdjoint, to.Tsit5)

    def b(dtype, gen):
        return _n(gen, dtype, 1, 2), _u(gen, dtype, 0.5, 1.5, 1, 2)

    return [
        Case("torchode.Dopri5(AutoDiffAdjoint)", "torchode", dopri5, b, note="tolerance by dtype"),
        Case("torchode.Tsit5(AutoDiffAdjoint)", "torchode", tsit5, b, note="tolerance by dtype"),
        Case("torchode.Dopri5 [bug: dy term of the vector field +3%]", "torchode", dopri5, b, "wrong",
             _scale_arg(to.ODETerm, "vf", 2)),
        Case("torchode.Dopri5 [bug: dropped y term of the vector field]", "torchode", dopri5, b, "wrong",
             lambda: _patch(to.ODETerm, "vf", _torchode_dropped_y)),
    ]


def _scaled_all(factor):
    def make(original):
        def backward(ctx, *grads):
            out = original(ctx, *grads)
            if isinstance(out, torch.Tensor):
                return out * factor
            return tuple(g * factor if isinstance(g, torch.Tensor) else g for g in out)

        return backward

    return make


def _torchode_dropped_y(original):
    """The vector field evaluated at a detached state: the ∂f/∂y term of the chain rule is dropped."""

    def vf(self, t, y, stats, args):
        return original(self, t, y.detach(), stats, args)

    return vf


# ---------------------------------------------------------------------------------------------------
# torchlie (theseus' Lie-group library): SO(3)/SE(3) exp and log with custom backwards
def _torchlie() -> list[Case]:
    from torchlie.functional import SE3, SO3
    from torchlie.functional import so3_impl

    def so3_exp(v):
        return SO3.exp(v)

    def so3_log_exp(v):
        return SO3.log(SO3.exp(v))

    def b_v(dtype, gen):
        return (_u(gen, dtype, -1.0, 1.0, 4, 3),)

    def se3_exp(v):
        return SE3.exp(v)

    def se3_log_exp(v):
        return SE3.log(SE3.exp(v))

    def b_v6(dtype, gen):
        return (_u(gen, dtype, -1.0, 1.0, 3, 6),)

    def so3_compose(v, w):
        return SO3.compose(SO3.exp(v), SO3.exp(w))

    def b_vw(dtype, gen):
        return _u(gen, dtype, -1.0, 1.0, 3, 3), _u(gen, dtype, -1.0, 1.0, 3, 3)

    def so3_transform(v, p):
        return SO3.transform(SO3.exp(v), p)

    def b_vp(dtype, gen):
        return _u(gen, dtype, -1.0, 1.0, 3, 3), _n(gen, dtype, 3, 3)

    return [
        Case("torchlie.SO3.exp", "torchlie", so3_exp, b_v, note="custom Function"),
        Case("torchlie.SO3.log(exp)", "torchlie", so3_log_exp, b_v, note="custom Function"),
        Case("torchlie.SE3.exp", "torchlie", se3_exp, b_v6, note="custom Function"),
        Case("torchlie.SE3.log(exp)", "torchlie", se3_log_exp, b_v6, note="custom Function"),
        Case("torchlie.SO3.compose", "torchlie", so3_compose, b_vw, note="custom Function"),
        Case("torchlie.SO3.transform", "torchlie", so3_transform, b_vp, note="custom Function"),
        Case("torchlie.SO3.exp [bug: grad +3%]", "torchlie", so3_exp, b_v, "wrong",
             _scale_backward(so3_impl.Exp, 0)),
        Case("torchlie.SO3.log(exp) [bug: dropped group factor]", "torchlie", so3_log_exp, b_v, "wrong",
             lambda: _patch(so3_impl.Log, "backward", _torchlie_log_dropped)),
    ]


def _torchlie_log_dropped(original):
    """Log.backward without its left factor: ``lift(Jᵀ g)`` returned instead of ``R · lift(Jᵀ g)``."""

    def backward(ctx, grad):
        group = ctx.saved_tensors[1]
        return group.mT @ original(ctx, grad)

    return backward


# ---------------------------------------------------------------------------------------------------
# torchopt: implicit differentiation of an inner solve, differentiable optimiser steps
def _torchopt() -> list[Case]:
    import torchopt
    from torchopt.diff.implicit import decorator as impl

    def ridge_optimality(w, x, y, lam):
        return x.mT @ (x @ w - y) + lam * w

    def _ridge_solver(solve_fn):
        @torchopt.diff.implicit.custom_root(ridge_optimality, argnums=(1, 2, 3), solve=solve_fn)
        def ridge(w_init, x, y, lam):
            a = x.mT @ x + lam * torch.eye(x.shape[-1], dtype=x.dtype)
            return torch.linalg.solve(a, x.mT @ y)

        return ridge

    ridge_cg = _ridge_solver(torchopt.linear_solve.solve_normal_cg(maxiter=50))
    ridge_inv = _ridge_solver(torchopt.linear_solve.solve_inv())

    def b_ridge(dtype, gen):
        x = _n(gen, dtype, 8, 3)
        y = _n(gen, dtype, 8)
        lam = _u(gen, dtype, 0.5, 2.0, ())
        return torch.zeros(3, dtype=dtype), x, y, lam

    @torchopt.diff.implicit.custom_root(
        lambda w, x, y: x.mT @ (torch.sigmoid(x @ w) - y) + 0.5 * w, argnums=(1, 2),
        solve=torchopt.linear_solve.solve_normal_cg(maxiter=50))
    def logreg(w_init, x, y):
        w = w_init
        for _ in range(25):
            g = x.mT @ (torch.sigmoid(x @ w) - y) + 0.5 * w
            h = x.mT @ (x * (torch.sigmoid(x @ w) * (1 - torch.sigmoid(x @ w)))[:, None]) + 0.5 * torch.eye(
                x.shape[-1], dtype=x.dtype)
            w = w - torch.linalg.solve(h, g)
        return w

    def b_logreg(dtype, gen):
        x = _n(gen, dtype, 8, 3)
        y = _u(gen, dtype, 0.1, 0.9, 8)
        return torch.zeros(3, dtype=dtype), x, y

    def adam_steps(w, x, y):
        opt = torchopt.adam(lr=0.1)
        params = (w,)
        state = opt.init(params)
        for _ in range(3):
            loss = ((x @ params[0] - y) ** 2).mean()
            grads = torch.autograd.grad(loss, params, create_graph=True)
            updates, state = opt.update(grads, state, inplace=False)
            params = torchopt.apply_updates(params, updates, inplace=False)
        return ((x @ params[0] - y) ** 2).mean()

    def b_adam(dtype, gen):
        return _n(gen, dtype, 3), _n(gen, dtype, 6, 3), _n(gen, dtype, 6)

    def sgd_steps(w, x, y):
        opt = torchopt.sgd(lr=0.1, momentum=0.9, nesterov=True)
        params = (w,)
        state = opt.init(params)
        for _ in range(3):
            loss = ((x @ params[0] - y) ** 2).mean()
            grads = torch.autograd.grad(loss, params, create_graph=True)
            updates, state = opt.update(grads, state, inplace=False)
            params = torchopt.apply_updates(params, updates, inplace=False)
        return params[0]

    return [
        Case("torchopt.custom_root(ridge, normal CG)", "torchopt", ridge_cg, b_ridge, note="implicit backward"),
        Case("torchopt.custom_root(ridge, inv)", "torchopt", ridge_inv, b_ridge, note="implicit backward"),
        Case("torchopt.custom_root(logistic, Newton)", "torchopt", logreg, b_logreg, note="implicit backward"),
        Case("torchopt.adam (3 differentiable steps)", "torchopt", adam_steps, b_adam),
        Case("torchopt.sgd nesterov (3 differentiable steps)", "torchopt", sgd_steps, b_adam),
        Case("torchopt.custom_root(ridge) [bug: implicit vjp +3%]", "torchopt", ridge_inv, b_ridge, "wrong",
             lambda: _patch(impl, "_root_vjp", _torchopt_scaled_vjp)),
        Case("torchopt.custom_root(ridge) [bug: dropped lam term]", "torchopt", ridge_inv, b_ridge, "wrong",
             lambda: _patch(impl, "_root_vjp", _torchopt_dropped_last)),
    ]


def _torchopt_scaled_vjp(original):
    def root_vjp(*args, **kwargs):
        return tuple(g * 1.03 if isinstance(g, torch.Tensor) else g for g in original(*args, **kwargs))

    return root_vjp


def _torchopt_dropped_last(original):
    def root_vjp(*args, **kwargs):
        out = list(original(*args, **kwargs))
        out[-1] = torch.zeros_like(out[-1]) if isinstance(out[-1], torch.Tensor) else out[-1]
        return tuple(out)

    return root_vjp


# ---------------------------------------------------------------------------------------------------
# entmax: sparse probability mappings with custom backwards
def _entmax() -> list[Case]:
    import entmax
    from entmax import activations as act

    def b_x(dtype, gen):
        return (_n(gen, dtype, 4, 6),)

    def b_x_alpha(dtype, gen):
        return _n(gen, dtype, 4, 6), _u(gen, dtype, 1.2, 1.8, 4, 1)

    def entmax15(x):
        return entmax.entmax15(x, dim=-1)

    def sparsemax(x):
        return entmax.sparsemax(x, dim=-1)

    def entmax_bisect(x):
        return entmax.entmax_bisect(x, alpha=1.5, dim=-1)

    def entmax_bisect_alpha(x, alpha):
        return entmax.entmax_bisect(x, alpha=alpha, dim=-1)

    def entmax15_loss(x, target):
        return entmax.entmax15_loss(x, target)

    def sparsemax_loss(x, target):
        return entmax.sparsemax_loss(x, target)

    def b_loss(dtype, gen):
        return _n(gen, dtype, 4, 6), torch.randint(0, 6, (4,), generator=gen)

    return [
        Case("entmax.entmax15", "entmax", entmax15, b_x, note="custom Function"),
        Case("entmax.sparsemax", "entmax", sparsemax, b_x, note="custom Function"),
        Case("entmax.entmax_bisect(alpha=1.5)", "entmax", entmax_bisect, b_x, note="bisection, custom Function"),
        Case("entmax.entmax_bisect(alpha tensor)", "entmax", entmax_bisect_alpha, b_x_alpha,
             note="alpha differentiated"),
        Case("entmax.entmax15_loss", "entmax", entmax15_loss, b_loss, note="custom Function"),
        Case("entmax.sparsemax_loss", "entmax", sparsemax_loss, b_loss, note="custom Function"),
        Case("entmax.entmax15 [bug: grad +3%]", "entmax", entmax15, b_x, "wrong",
             _scale_backward(act.Entmax15Function, 0)),
        Case("entmax.sparsemax [bug: dropped mean term]", "entmax", sparsemax, b_x, "wrong",
             lambda: _patch(act.SparsemaxFunction, "backward", _entmax_sparsemax_dropped)),
    ]


def _entmax_sparsemax_dropped(original):
    def backward(ctx, grad_output):
        supp_size, output = ctx.saved_tensors
        grad_input = grad_output.clone()
        grad_input[output == 0] = 0
        return grad_input, None, None

    return backward


# ---------------------------------------------------------------------------------------------------
# torchdiffeq: adaptive and fixed-step solvers, the adjoint method
def _torchdiffeq() -> list[Case]:
    import torchdiffeq
    from torchdiffeq._impl import adjoint as tdadj
    from torchdiffeq._impl import fixed_grid

    class Field(torch.nn.Module):
        def __init__(self, k):
            super().__init__()
            self.k = k

        def forward(self, t, y):
            return -self.k * y + torch.sin(t) * y.tanh()

    def _t(dtype):
        return torch.tensor([0.0, 1.0], dtype=dtype)

    def dopri5(y0, k):
        return torchdiffeq.odeint(Field(k), y0, _t(y0.dtype), method="dopri5")

    def dopri5_tol_by_dtype(y0, k):
        rtol, atol = (1e-5, 1e-7) if y0.dtype == torch.float32 else (1e-9, 1e-11)
        return torchdiffeq.odeint(Field(k), y0, _t(y0.dtype), rtol=rtol, atol=atol, method="dopri5")

    def rk4(y0, k):
        return torchdiffeq.odeint(Field(k), y0, _t(y0.dtype), method="rk4", options={"step_size": 0.1})

    def midpoint(y0, k):
        return torchdiffeq.odeint(Field(k), y0, _t(y0.dtype), method="midpoint", options={"step_size": 0.1})

    def adjoint(y0, k):
        return torchdiffeq.odeint_adjoint(Field(k), y0, _t(y0.dtype), method="dopri5", adjoint_params=(k,))

    def b(dtype, gen):
        return _n(gen, dtype, 2), _u(gen, dtype, 0.5, 1.5, 2)

    return [
        Case("torchdiffeq.odeint(dopri5)", "torchdiffeq", dopri5, b),
        Case("torchdiffeq.odeint(rk4)", "torchdiffeq", rk4, b),
        Case("torchdiffeq.odeint(dopri5, tolerance by dtype)", "torchdiffeq", dopri5_tol_by_dtype, b),
        Case("torchdiffeq.odeint(midpoint)", "torchdiffeq", midpoint, b),
        Case("torchdiffeq.odeint_adjoint(dopri5)", "torchdiffeq", adjoint, b, note="adjoint ODE solved backwards"),
        Case("torchdiffeq.odeint_adjoint [bug: grads +3%]", "torchdiffeq", adjoint, b, "wrong",
             lambda: _patch(tdadj.OdeintAdjointMethod, "backward", _scaled_all(1.03))),
        Case("torchdiffeq.odeint(rk4) [bug: dropped k1 term]", "torchdiffeq", rk4, b, "wrong",
             lambda: _patch(fixed_grid, "rk4_alt_step_func", _torchdiffeq_dropped_k1)),
    ]


def _torchdiffeq_dropped_k1(original):
    def step(func, t0, dt, t1, y0, f0=None, perturb=False):
        k1 = func(t0, y0) if f0 is None else f0
        return original(func, t0, dt, t1, y0, f0=k1.detach(), perturb=perturb)

    return step


# ---------------------------------------------------------------------------------------------------
# cvxpylayers: a differentiable convex-optimisation layer (diffcp)
def _cvxpylayers() -> list[Case]:
    import cvxpy as cp
    from cvxpylayers.torch import CvxpyLayer
    from cvxpylayers.torch import cvxpylayer as cvl

    n, m = 3, 4
    a_par, b_par = cp.Parameter((m, n)), cp.Parameter(m)
    x = cp.Variable(n)
    nnls = cp.Problem(cp.Minimize(cp.sum_squares(a_par @ x - b_par) + 0.5 * cp.sum_squares(x)), [x >= 0])
    nnls_layer = CvxpyLayer(nnls, parameters=[a_par, b_par], variables=[x])

    q_par = cp.Parameter(n)
    z = cp.Variable(n)
    proj = cp.Problem(cp.Minimize(cp.sum_squares(z - q_par)), [cp.sum(z) == 1, z >= 0])
    proj_layer = CvxpyLayer(proj, parameters=[q_par], variables=[z])

    def solver_args(dtype):
        return {"eps": 1e-10} if dtype == torch.float64 else {"eps": 1e-7}

    def nonneg_ridge(a, b):
        (sol,) = nnls_layer(a, b, solver_args=solver_args(a.dtype))
        return sol

    def b_nnls(dtype, gen):
        """b near A·x_true with x_true = (0.8, 0.5, -0.5): two components positive, one at its bound."""
        a = torch.randn(m, n, generator=gen, dtype=torch.float64)
        b = a @ torch.tensor([0.8, 0.5, -0.5], dtype=torch.float64) + 0.05 * torch.randn(
            m, generator=gen, dtype=torch.float64)
        return a.to(dtype).requires_grad_(True), b.to(dtype).requires_grad_(True)

    def simplex_projection(q):
        (sol,) = proj_layer(q, solver_args=solver_args(q.dtype))
        return sol

    def b_q(dtype, gen):
        return (_n(gen, dtype, n, scale=0.5),)

    return [
        Case("cvxpylayers.nonneg_ridge", "cvxpylayers", nonneg_ridge, b_nnls, note="conic solve, implicit backward"),
        Case("cvxpylayers.simplex_projection", "cvxpylayers", simplex_projection, b_q,
             note="conic solve, implicit backward"),
        Case("cvxpylayers.nonneg_ridge [bug: param grad +3%]", "cvxpylayers", nonneg_ridge, b_nnls, "wrong",
             _scale_backward(cvl._ScipySparseMatmul, 1)),
        Case("cvxpylayers.nonneg_ridge [bug: dropped A term]", "cvxpylayers", nonneg_ridge, b_nnls, "wrong",
             _scale_arg(nnls_layer, "forward", 0, factor=0.0)),
    ]


# ---------------------------------------------------------------------------------------------------
# roma: rotation mappings, the Procrustes problem through an SVD and through Horn's closed form
def _roma() -> list[Case]:
    import roma
    from roma import mappings as rm

    def b_m3(dtype, gen):
        return (_n(gen, dtype, 2, 3, 3),)

    def svd_procrustes(m):
        return roma.special_procrustes(m, method="svd")

    def horn_procrustes(m):
        return roma.special_procrustes(m, method="horn")

    def procrustes_4d(m):
        return roma.procrustes(m)

    def b_m4(dtype, gen):
        return (_n(gen, dtype, 2, 4, 4),)

    def procrustes_sv(m):
        r, sv = roma.special_procrustes(m, method="svd", return_singular_values=True)
        return r, sv

    def regularized(m):
        return roma.special_procrustes(m, regularization=0.1, method="svd")

    def unitquat(m):
        return roma.special_procrustes_unitquat(m)

    def symmatrixvec(x):
        return roma.symmatrixvec_to_unitquat(x)

    def b_10(dtype, gen):
        return (_n(gen, dtype, 3, 10),)

    def rotvec_roundtrip(v):
        return roma.rotmat_to_rotvec(roma.rotvec_to_rotmat(v))

    def b_rotvec(dtype, gen):
        return (_u(gen, dtype, -1.5, 1.5, 4, 3),)

    def geodesic(v1, v2):
        return roma.rotmat_geodesic_distance(roma.rotvec_to_rotmat(v1), roma.rotvec_to_rotmat(v2))

    def b_two_rotvecs(dtype, gen):
        return _u(gen, dtype, -1.0, 1.0, 4, 3), _u(gen, dtype, -1.0, 1.0, 4, 3)

    def registration(x, y):
        r, t = roma.rigid_points_registration(x, y)
        return r, t

    def b_points(dtype, gen):
        return _n(gen, dtype, 6, 3), _n(gen, dtype, 6, 3)

    return [
        Case("roma.special_procrustes(svd)", "roma", svd_procrustes, b_m3, note="custom Function, damped SVD"),
        Case("roma.special_procrustes(horn)", "roma", horn_procrustes, b_m3,
             note="custom Function, closed-form eigenvector in float64"),
        Case("roma.procrustes(4x4)", "roma", procrustes_4d, b_m4, note="custom Function, SVD"),
        Case("roma.special_procrustes(singular values)", "roma", procrustes_sv, b_m3, note="custom Function"),
        Case("roma.special_procrustes_unitquat", "roma", unitquat, b_m3, note="custom Function"),
        Case("roma.symmatrixvec_to_unitquat", "roma", symmatrixvec, b_10, note="custom Function, smallest eigenvector"),
        Case("roma.rotmat_to_rotvec(rotvec_to_rotmat)", "roma", rotvec_roundtrip, b_rotvec,
             note="branches on the largest diagonal entry; Taylor switches"),
        Case("roma.rotmat_geodesic_distance", "roma", geodesic, b_two_rotvecs),
        Case("roma.rigid_points_registration", "roma", registration, b_points),
        Case("roma.special_procrustes(regularization=0.1) [finding]", "roma", regularized, b_m3, "wrong",
             note="documented: the regularization term is added to the gradient and is no derivative"),
        Case("roma.special_procrustes(horn) [bug: grad +3%]", "roma", horn_procrustes, b_m3, "wrong",
             _scale_backward(rm._HornEigenvectorManualDerivatives, 0)),
        Case("roma.special_procrustes [bug: dropped singular-value term]", "roma", procrustes_sv, b_m3, "wrong",
             lambda: _patch(rm._ProcrustesManualDerivatives, "backward", _roma_dropped_sv)),
    ]


def _roma_dropped_sv(original):
    """The Procrustes backward without the singular values' contribution ``US·diag(grad_DS)·Vᵀ``."""

    def backward(ctx, grad_r, grad_ds, grad_us, grad_v):
        return original(ctx, grad_r, torch.zeros_like(grad_ds), grad_us, grad_v)

    return backward


# ---------------------------------------------------------------------------------------------------
# geomloss: Sinkhorn divergences with envelope-theorem gradients, kernel norms with a doubled gradient
def _geomloss() -> list[Case]:
    from geomloss import SamplesLoss
    from geomloss._legacy import kernel_samples

    def b_clouds(dtype, gen):
        y = _n(gen, dtype, 5, 2, scale=0.8, grad=False) + 0.3
        return _n(gen, dtype, 6, 2), y.requires_grad_(True)

    def b_weighted(dtype, gen):
        a = _u(gen, dtype, 0.5, 1.5, 6)
        b = _u(gen, dtype, 0.5, 1.5, 5)
        x, y = b_clouds(dtype, gen)
        return a, x, b, y

    def loss(name, **kw):
        def fn(*args):
            return SamplesLoss(name, backend="tensorized", **kw)(*args)

        fn.__name__ = name
        return fn

    sinkhorn = loss("sinkhorn", p=2, blur=0.5, scaling=0.9)
    unbalanced = loss("sinkhorn", p=2, blur=0.5, scaling=0.9, reach=1.0)
    gaussian = loss("gaussian", blur=0.7)
    laplacian = loss("laplacian", blur=0.7)
    energy = loss("energy")
    return [
        Case("geomloss.gaussian MMD", "geomloss", gaussian, b_clouds, note="DoubleGrad custom Function"),
        Case("geomloss.laplacian MMD", "geomloss", laplacian, b_clouds, note="DoubleGrad custom Function"),
        Case("geomloss.energy distance", "geomloss", energy, b_clouds, note="DoubleGrad custom Function"),
        Case("geomloss.sinkhorn(blur=0.5, scaling=0.9) [finding]", "geomloss", sinkhorn, b_clouds, "wrong",
             note="approximate by design: the envelope gradient of an annealing loop that stops before "
                  "convergence (9% at scaling 0.9, 0.3% at 0.999, 2e-5 at blur 10)"),
        Case("geomloss.sinkhorn(reach=1, weights) [finding]", "geomloss", unbalanced, b_weighted, "wrong",
             note="UnbalancedWeight.backward (rho + eps) is an nn.Module method autograd never calls: the "
                  "weights' gradient is (rho + eps/2)/(rho + eps) = 0.9 of the derivative at convergence"),
        Case("geomloss.gaussian MMD [bug: DoubleGrad +3%]", "geomloss", gaussian, b_clouds, "wrong",
             lambda: _patch(kernel_samples.DoubleGrad, "backward", lambda original: lambda ctx, g: 2.06 * g)),
        Case("geomloss.energy distance [bug: dropped self-interaction term]", "geomloss", energy, b_clouds, "wrong",
             lambda: _patch(kernel_samples, "double_grad", lambda original: lambda x: x)),
    ]


# ---------------------------------------------------------------------------------------------------
# sparsemax (the package): a custom Function built on a sort
def _sparsemax() -> list[Case]:
    from sparsemax import Sparsemax
    from sparsemax.sparsemax import SparsemaxFunction

    last, middle = Sparsemax(dim=-1), Sparsemax(dim=1)

    def sparsemax_last(x):
        return last(x)

    def sparsemax_3d(x):
        return middle(x)

    def b_x(dtype, gen):
        return (_n(gen, dtype, 4, 6),)

    def b_3d(dtype, gen):
        return (_n(gen, dtype, 2, 5, 3),)

    def b_ties(dtype, gen):
        """Rows with repeated entries inside the support and outside it: the sort meets exact ties."""
        base = torch.randn(4, 3, generator=gen, dtype=torch.float64)
        return (torch.cat([base, base], dim=1).to(dtype).requires_grad_(True),)

    return [
        Case("sparsemax.Sparsemax", "sparsemax", sparsemax_last, b_x, note="custom Function, sort"),
        Case("sparsemax.Sparsemax(dim=1, 3-d)", "sparsemax", sparsemax_3d, b_3d, note="reshaping path"),
        Case("sparsemax.Sparsemax(tied entries)", "sparsemax", sparsemax_last, b_ties, note="sort with ties"),
        Case("sparsemax.Sparsemax [bug: grad +3%]", "sparsemax", sparsemax_last, b_x, "wrong",
             _scale_backward(SparsemaxFunction, 0)),
        Case("sparsemax.Sparsemax [bug: dropped mean term]", "sparsemax", sparsemax_last, b_x, "wrong",
             lambda: _patch(SparsemaxFunction, "backward", _sparsemax_dropped_mean)),
    ]


def _sparsemax_dropped_mean(original):
    def backward(ctx, grad_output):
        (output,) = ctx.saved_tensors
        return (output != 0) * grad_output, None

    return backward


# ---------------------------------------------------------------------------------------------------
# diffsort: differentiable sorting networks (relaxed swaps; a custom Function for the Gaussian CDF)
def _diffsort() -> list[Case]:
    from diffsort import DiffSortNet
    from diffsort import functional as dsf

    def net(kind, size, distribution, steepness=10.0):
        sorter = DiffSortNet(kind, size, steepness=steepness, distribution=distribution)

        def fn(x):
            return sorter(x)

        fn.__name__ = f"{kind}_{distribution}"
        return fn

    def b(size):
        return lambda dtype, gen: (_n(gen, dtype, 2, size, scale=0.5),)

    cauchy = net("odd_even", 5, "cauchy")
    gaussian = net("odd_even", 5, "gaussian")
    optimal = net("bitonic", 4, "optimal", steepness=5.0)
    return [
        Case("diffsort.odd_even(cauchy)", "diffsort", cauchy, b(5)),
        Case("diffsort.odd_even(gaussian)", "diffsort", gaussian, b(5), note="NormalCDF custom Function"),
        Case("diffsort.bitonic(logistic)", "diffsort", net("bitonic", 8, "logistic"), b(8)),
        Case("diffsort.bitonic(optimal)", "diffsort", optimal, b(4), note="piecewise monotonic relaxation"),
        Case("diffsort.odd_even(reciprocal)", "diffsort", net("odd_even", 5, "reciprocal"), b(5)),
        Case("diffsort.odd_even(gaussian) [bug: grad +3%]", "diffsort", gaussian, b(5), "wrong",
             _scale_backward(dsf.NormalCDF, 0)),
        Case("diffsort.bitonic(optimal) [bug: dropped swap-weight term]", "diffsort", optimal, b(4), "wrong",
             lambda: _patch(dsf, "s_best", lambda original: lambda v: original(v.detach()))),
    ]


# ---------------------------------------------------------------------------------------------------
# e3nn: spherical harmonics, smooth radial bases (a custom Function), rotations from angles
def _e3nn() -> list[Case]:
    from e3nn import o3
    from e3nn.math import _soft_unit_step, soft_one_hot_linspace, soft_unit_step

    def sh(x):
        return o3.spherical_harmonics([0, 1, 2, 3], x, normalize=True)

    def sh_raw(x):
        return o3.spherical_harmonics(2, x, normalize=False, normalization="component")

    def b_vec(dtype, gen):
        return (_n(gen, dtype, 5, 3),)

    def step(x):
        return soft_unit_step(x)

    def b_step(dtype, gen):
        return (_u(gen, dtype, 0.2, 2.0, 8),)

    def radial(r):
        return soft_one_hot_linspace(r, 0.0, 2.0, 6, basis="smooth_finite", cutoff=True)

    def b_r(dtype, gen):
        return (_u(gen, dtype, 0.1, 1.9, 5),)

    def wigner(alpha, beta, gamma):
        return o3.wigner_D(2, alpha, beta, gamma)

    def b_angles(dtype, gen):
        return tuple(_u(gen, dtype, 0.2, 2.5, 3) for _ in range(3))

    def angles_roundtrip(alpha, beta, gamma):
        return o3.matrix_to_angles(o3.angles_to_matrix(alpha, beta, gamma))

    return [
        Case("e3nn.spherical_harmonics(l<=3, normalize)", "e3nn", sh, b_vec),
        Case("e3nn.spherical_harmonics(l=2, raw)", "e3nn", sh_raw, b_vec),
        Case("e3nn.soft_unit_step", "e3nn", step, b_step, note="custom Function"),
        Case("e3nn.soft_one_hot_linspace(smooth_finite)", "e3nn", radial, b_r, note="soft_unit_step inside"),
        Case("e3nn.wigner_D(l=2)", "e3nn", wigner, b_angles, note="matrix exponentials"),
        Case("e3nn.matrix_to_angles(angles_to_matrix)", "e3nn", angles_roundtrip, b_angles, note="atan2, acos"),
        Case("e3nn.soft_unit_step [bug: grad +3%]", "e3nn", step, b_step, "wrong",
             _scale_backward(_soft_unit_step._SoftUnitStep, 0)),
        Case("e3nn.spherical_harmonics [bug: dropped normalization term]", "e3nn", sh, b_vec, "wrong",
             lambda: _patch(torch.nn.functional, "normalize", _e3nn_detached_norm)),
    ]


def _e3nn_detached_norm(original):
    """``x / ‖x‖`` with the norm detached: the projection term of the normalization's derivative is dropped."""

    def normalize(x, p=2.0, dim=1, eps=1e-12, out=None):
        return x / x.detach().norm(p=p, dim=dim, keepdim=True).clamp_min(eps)

    return normalize


# ---------------------------------------------------------------------------------------------------
# monai: segmentation losses (soft Dice variants, focal, a distance-transform loss computed in numpy)
def _monai() -> list[Case]:
    from monai import losses
    from monai.losses import focal_loss

    def b_seg(dtype, gen):
        logits = _n(gen, dtype, 2, 3, 5, 5)
        labels = torch.randint(0, 3, (2, 1, 5, 5), generator=gen)
        target = torch.nn.functional.one_hot(labels[:, 0], 3).permute(0, 3, 1, 2).to(dtype)
        return logits, target

    def b_binary(dtype, gen):
        logits = _n(gen, dtype, 2, 1, 6, 6, scale=2.0)
        target = (torch.rand(2, 1, 6, 6, generator=gen, dtype=torch.float64) > 0.5).to(dtype)
        return logits, target

    def bound(loss):
        def fn(x, t):
            return loss(x, t)

        fn.__name__ = type(loss).__name__
        return fn

    dice = bound(losses.DiceLoss(softmax=True))
    gdice = bound(losses.GeneralizedDiceLoss(softmax=True))
    tversky = bound(losses.TverskyLoss(sigmoid=True, alpha=0.3, beta=0.7))
    focal = bound(losses.FocalLoss(gamma=2.0, use_softmax=False))
    dice_focal = bound(losses.DiceFocalLoss(sigmoid=True))
    hausdorff = bound(losses.HausdorffDTLoss(sigmoid=True))
    return [
        Case("monai.DiceLoss(softmax)", "monai", dice, b_seg),
        Case("monai.GeneralizedDiceLoss(softmax)", "monai", gdice, b_seg, note="weights from the target"),
        Case("monai.TverskyLoss(sigmoid)", "monai", tversky, b_binary),
        Case("monai.FocalLoss(sigmoid, gamma=2)", "monai", focal, b_binary),
        Case("monai.DiceFocalLoss(sigmoid)", "monai", dice_focal, b_binary),
        Case("monai.HausdorffDTLoss(sigmoid)", "monai", hausdorff, b_binary,
             note="distance transforms in numpy (scipy) on the thresholded prediction"),
        Case("monai.DiceLoss [bug: input grad +3%]", "monai", dice, b_seg, "wrong",
             _scale_arg(losses.DiceLoss, "forward", 1)),
        Case("monai.FocalLoss [bug: dropped modulating-factor term]", "monai", focal, b_binary, "wrong",
             lambda: _patch(focal_loss, "sigmoid_focal_loss", _monai_detached_factor)),
    ]


def _monai_detached_factor(original):
    """Sigmoid focal loss with (1 - p_t)^γ detached: the derivative of the modulating factor is dropped."""
    import torch.nn.functional as F

    def sigmoid_focal_loss(x, target, gamma=2.0, alpha=None):
        loss = x - x * target - F.logsigmoid(x)
        factor = (F.logsigmoid(-x * (target * 2 - 1)) * gamma).exp().detach()
        return factor * loss

    return sigmoid_focal_loss


# ---------------------------------------------------------------------------------------------------
# pytorch_metric_learning: metric losses with miners, hinges and pair selections
def _pytorch_metric_learning() -> list[Case]:
    from pytorch_metric_learning import distances, losses, miners

    def b_emb(dtype, gen):
        emb = _n(gen, dtype, 8, 4)
        labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
        return emb, labels

    def b_tied(dtype, gen):
        """Rows 6, 7 repeat rows 4, 5 under other labels: anchors meet exactly tied hardest negatives."""
        emb = torch.randn(6, 4, generator=gen, dtype=torch.float64)
        return torch.cat([emb, emb[4:]]).to(dtype).requires_grad_(True), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])

    def bound(loss, miner=None):
        def fn(emb, labels):
            if miner is None:
                return loss(emb, labels)
            return loss(emb, labels, miner(emb, labels))

        fn.__name__ = type(loss).__name__
        return fn

    triplet = bound(losses.TripletMarginLoss(margin=0.5))
    hard = bound(losses.TripletMarginLoss(margin=0.5), miners.BatchHardMiner())
    contrastive = bound(losses.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0))
    ntxent = bound(losses.NTXentLoss(temperature=0.5))
    multisim = bound(losses.MultiSimilarityLoss())
    lifted = bound(losses.GeneralizedLiftedStructureLoss(neg_margin=1.0, distance=distances.LpDistance()))
    return [
        Case("pml.TripletMarginLoss", "pytorch_metric_learning", triplet, b_emb, note="hinge, normalized embeddings"),
        Case("pml.TripletMarginLoss(BatchHardMiner)", "pytorch_metric_learning", hard, b_emb,
             note="miner picks arg-max/arg-min pairs"),
        Case("pml.TripletMarginLoss(BatchHardMiner, tied negatives)", "pytorch_metric_learning", hard, b_tied,
             note="arg-min over exactly tied distances"),
        Case("pml.ContrastiveLoss", "pytorch_metric_learning", contrastive, b_emb),
        Case("pml.NTXentLoss", "pytorch_metric_learning", ntxent, b_emb),
        Case("pml.MultiSimilarityLoss", "pytorch_metric_learning", multisim, b_emb),
        Case("pml.GeneralizedLiftedStructureLoss", "pytorch_metric_learning", lifted, b_emb, note="logsumexp"),
        Case("pml.NTXentLoss [bug: embedding grad +3%]", "pytorch_metric_learning", ntxent, b_emb, "wrong",
             _scale_arg(losses.NTXentLoss, "forward", 1)),
        Case("pml.TripletMarginLoss [bug: dropped normalization term]", "pytorch_metric_learning", triplet, b_emb,
             "wrong", lambda: _patch(distances.LpDistance, "normalize", _pml_detached_norm)),
    ]


def _pml_detached_norm(original):
    def normalize(self, embeddings, dim=1, **kwargs):
        return embeddings / embeddings.detach().norm(p=self.p, dim=dim, keepdim=True)

    return normalize


_BUILDERS: dict[str, Callable[[], list[Case]]] = {
    "kornia": _kornia, "gpytorch": _gpytorch, "pyro": _pyro, "geoopt": _geoopt, "zuko": _zuko,
    "normflows": _normflows, "ot": _ot, "torchode": _torchode, "torchlie": _torchlie, "torchopt": _torchopt,
    "entmax": _entmax, "torchdiffeq": _torchdiffeq, "cvxpylayers": _cvxpylayers,
    "roma": _roma, "geomloss": _geomloss, "sparsemax": _sparsemax, "diffsort": _diffsort, "e3nn": _e3nn,
    "monai": _monai, "pytorch_metric_learning": _pytorch_metric_learning,
}


def cases(libraries: Any = None) -> tuple[list[Case], dict[str, str]]:
    """The suite's cases for ``libraries`` (default: all), and ``{library: why skipped}`` for the missing."""
    names = LIBRARIES if libraries is None else tuple(libraries)
    out: list[Case] = []
    skipped: dict[str, str] = {}
    for name in names:
        try:
            out.extend(_BUILDERS[name]())
        except ImportError as exc:
            skipped[name] = f"not installed ({exc})"
    return out, skipped
