"""NumPy / SciPy breadth (issue 8): every registered function against central differences.

One row per case: (functions it covers, function, generator of arguments inside the domain).
Each row checks the traced value against NumPy's, then ``check_grads(modes=("fwd", "rev"),
order=2)`` on the function and on the scalar ``sum(w * sin(f))`` (so hvp runs for every row).
``test_every_registered_function_has_a_row`` fails when a function is registered (in
``tapegrad.registry``) without a row here or in the constant/refused lists.
"""
import math

import numpy as np
import pytest
import scipy.special as sps

import tapegrad as tg
from tapegrad.rules import special as _rules_special
from tapegrad import rules_numpy


def N(*s):
    return lambda r: r.standard_normal(s)


def U(lo, hi, *s):
    return lambda r: r.uniform(lo, hi, s)


def distinct(*s):
    def g(r):
        n = int(np.prod(s))
        return ((r.permutation(n) - n / 2) * 0.1 + r.uniform(-0.01, 0.01, n)).reshape(s)
    return g


def away_from_int(*s):
    return lambda r: r.integers(-3, 4, s) + r.uniform(0.2, 0.7, s)


def signed(*s):
    return lambda r: r.choice([-1.0, 1.0], s) * r.uniform(0.2, 1.0, s)


def spd(n, batch=()):
    def g(r):
        a = r.standard_normal(batch + (n, n))
        return a @ np.swapaxes(a, -1, -2) + n * np.eye(n)
    return g


def well(n, m=None, batch=()):
    """A well-conditioned (n, m) matrix with distinct singular values."""
    m = n if m is None else m
    def g(r):
        q1, _ = np.linalg.qr(r.standard_normal(batch + (n, n)))
        q2, _ = np.linalg.qr(r.standard_normal(batch + (m, m)))
        k = min(n, m)
        s = np.zeros(batch + (n, m))
        idx = np.arange(k)
        s[..., idx, idx] = 1.0 + np.arange(k)[::-1] * 0.7
        return q1 @ s @ q2
    return g


def args(*gens):
    return lambda r: tuple(g(r) for g in gens)


ROWS = []


COVERED = set()


def cov(covers, name, fn, gen, scalar=True):
    covers = covers if isinstance(covers, (list, tuple)) else [covers]
    COVERED.update(covers)
    ROWS.append(pytest.param(fn, gen, scalar, id=name))


def sh(op):
    """Nonlinearity on both sides so second derivatives flow through data movement."""
    return lambda x: np.sin(op(x * x + x))


# ------------------------------------------------------------------ elementwise
for f, g in [(np.exp, N(3)), (np.log, U(0.3, 3, 3)), (np.log1p, U(-0.5, 2, 3)), (np.expm1, N(3)),
             (np.sqrt, U(0.3, 3, 3)), (np.square, N(3)), (np.reciprocal, U(0.4, 2, 3)),
             (np.sin, N(3)), (np.cos, N(3)), (np.tan, U(-1, 1, 3)), (np.arcsin, U(-.8, .8, 3)),
             (np.arccos, U(-.8, .8, 3)), (np.arctan, N(3)), (np.sinh, N(3)), (np.cosh, N(3)),
             (np.tanh, N(3)), (np.arcsinh, N(3)), (np.arccosh, U(1.3, 3, 3)),
             (np.arctanh, U(-.8, .8, 3)), (np.exp2, N(3)), (np.log2, U(.3, 3, 3)),
             (np.log10, U(.3, 3, 3)), (np.cbrt, U(.3, 2, 3)), (np.negative, N(3)),
             (np.absolute, U(.3, 2, 3)), (np.fabs, U(-2, -.3, 3)), (np.positive, N(3)),
             (np.deg2rad, N(3)), (np.radians, N(3)), (np.rad2deg, N(3)), (np.degrees, N(3)),
             (np.conjugate, N(3)), (np.sinc, N(2, 3)), (np.real, N(3)), (np.real_if_close, N(3)), (np.angle, N(3)),
             (sps.expit, N(3)), (sps.erf, N(3)), (sps.erfc, N(3)), (sps.logit, U(.1, .9, 3)),
             (sps.ndtr, N(3)), (sps.log_ndtr, N(4)), (sps.log_expit, N(3)), (sps.exp10, U(-1, 1, 3)),
             (sps.exp2, N(3)), (sps.expm1, N(3)), (sps.log1p, U(-.5, 2, 3)), (sps.cbrt, U(.3, 2, 3)),
             (sps.gammaln, U(0.5, 4, 3)), (sps.loggamma, U(0.5, 4, 3)), (sps.psi, U(0.5, 4, 3)),
             (sps.gamma, U(0.5, 3, 3)), (sps.rgamma, U(0.5, 3, 3)), (sps.erfinv, U(-.8, .8, 3)),
             (sps.erfcinv, U(.2, 1.8, 3)), (sps.ndtri, U(.1, .9, 3)), (sps.erfcx, U(-1, 2, 3)),
             (sps.i0, N(3)), (sps.i0e, U(.2, 2, 3)), (sps.i1, N(3)), (sps.i1e, U(.2, 2, 3)),
             (sps.entr, U(.2, 2, 3)), (np.nan_to_num, N(3))]:
    cov(f, getattr(f, "__name__", str(f)), f, args(g))
cov(sps.log_ndtr, "log_ndtr_tail", sps.log_ndtr, args(U(-8, -4, 3)), scalar=False)
cov(np.sinc, "sinc_at_0", lambda x: np.sinc(x * np.array([0.0, 1.0])), args(N(2)))
if hasattr(sps, "softplus"):
    cov([], "scipy_softplus", sps.softplus, args(N(4)))

POS = U(0.5, 2.0, 3, 1)
for f, ga, gb in [(np.add, N(3, 1), N(4)), (np.subtract, N(3, 1), N(4)), (np.multiply, N(3, 1), N(4)),
                  (np.divide, N(3, 1), U(.5, 2, 4)), (np.power, POS, U(-1, 2, 4)),
                  (np.float_power, POS, U(-1, 2, 4)),
                  (np.maximum, distinct(3, 1), U(5, 6, 4)), (np.minimum, distinct(3, 1), U(5, 6, 4)),
                  (np.arctan2, U(.3, 2, 3, 1), U(.3, 2, 4)), (np.hypot, U(.3, 2, 3, 1), N(4)),
                  (np.logaddexp, N(3, 1), N(4)), (np.logaddexp2, N(3, 1), N(4)),
                  (np.fmod, away_from_int(3, 1), U(1.0, 1.01, 4)),
                  (np.remainder, away_from_int(3, 1), U(1.0, 1.01, 4)),
                  (np.copysign, N(3, 1), U(-1, 1, 4)), (sps.xlogy, N(3, 1), U(.3, 2, 4)),
                  (sps.xlog1py, N(3, 1), U(-.5, 2, 4)), (sps.rel_entr, U(.2, 2, 3, 1), U(.2, 2, 4)),
                  (sps.betaln, U(.5, 3, 3, 1), U(.5, 3, 4))]:
    cov(f, f.__name__ + "[bcast]", f, args(ga, gb))
    cov(f, f.__name__ + "[const_b]", lambda a, f=f, gb=gb: f(a, gb(np.random.default_rng(3))), args(ga))
cov([np.fmax, np.fmin], "fmax_fmin", lambda a, b: np.fmax(a, b) + np.fmin(a, 2.0 * b),
    args(distinct(3, 1), U(5, 6, 4)))
cov(np.fmod, "fmod_neg", np.fmod, args(lambda r: -away_from_int(4)(r), U(1.0, 1.01, 4)))
cov([np.floor_divide, np.remainder], "floordiv_mod_ops", lambda x: x // 0.5 + x % 0.5 + 2.0 % (x + 3), args(U(.1, .4, 3)))
cov(sps.xlogy, "xlogy_zero_x", lambda y: sps.xlogy(np.array([0.0, 1.0]), y), args(U(.3, 2, 2)))
cov(np.ldexp, "ldexp", lambda x: np.ldexp(x, np.array([1, -2, 3])), args(N(3)))
cov(np.power, "power_traced_exponent", lambda x, y: x ** y, args(U(.5, 2, 3), N(3)))

# ------------------------------------------------------------------ reductions and scans
for ax in (None, 0, 1, -1, (0, 2)):
    for kd in (False, True):
        cov(np.ptp, f"ptp[{ax},{kd}]", lambda x, ax=ax, kd=kd: np.ptp(x, axis=ax, keepdims=kd), args(distinct(2, 3, 4)))
        cov([np.std, np.var], f"std_ddof1[{ax},{kd}]",
            lambda x, ax=ax, kd=kd: np.std(x, axis=ax, keepdims=kd, ddof=1) + np.var(x, axis=ax, keepdims=kd),
            args(N(2, 3, 4)))
for f in (np.sum, np.mean, np.prod, np.max, np.min, np.amax, np.amin):
    cov(f, f.__name__ + "_tuple_axis", lambda x, f=f: f(x, axis=(0, 2), keepdims=True), args(distinct(2, 3, 4)))
for ax in (None, 0, 1, -1):
    cov(np.cumsum, f"cumsum[{ax}]", lambda x, ax=ax: np.cumsum(x, axis=ax), args(N(3, 5)))
    cov(np.cumprod, f"cumprod[{ax}]", lambda x, ax=ax: np.cumprod(x, axis=ax), args(U(.5, 1.5, 3, 5)))
cov(np.cumprod, "cumprod_with_zero", lambda x: np.cumprod(x * np.array([1.0, 0.0, 1.0, 1.0])), args(N(4)))
cov(np.cumsum, "cumsum_method", lambda x: x.cumsum(), args(N(7)))
cov(np.cumulative_sum, "cumulative_sum_initial", lambda x: np.cumulative_sum(x, axis=1, include_initial=True), args(N(2, 3)))
cov(np.cumulative_prod, "cumulative_prod", lambda x: np.cumulative_prod(x, axis=0), args(U(.5, 1.5, 3, 2)))
cov(np.average, "average", np.average, args(N(3, 4)))
cov(np.average, "average_weights", lambda x, w: np.average(x, axis=1, weights=w), args(N(3, 4), U(.5, 2, 4)))
cov(np.average, "average_full_weights", lambda x, w: np.average(x, weights=w), args(N(3, 4), U(.5, 2, 3, 4)))
cov(np.average, "average_returned", lambda x, w: np.average(x, axis=0, weights=w, returned=True), args(N(3, 4), U(.5, 2, 3, 4)))
cov(np.var, "var_correction_mean", lambda x: np.var(x, axis=0, correction=1), args(N(4, 3)))
for f in (np.nansum, np.nanprod, np.nanmax, np.nanmin, np.nanmean, np.nancumsum, np.nancumprod):
    cov(f, f.__name__, lambda x, f=f: f(np.where(np.array([False, True, False]), np.nan, x), axis=-1),
        args(distinct(2, 3) if f in (np.nanmax, np.nanmin) else U(.5, 1.5, 2, 3)))
cov(np.median, "median", lambda x: np.median(x, axis=0), args(distinct(5, 3)))
cov(np.median, "median_all", np.median, args(distinct(4, 3)))
cov(np.quantile, "quantile", lambda x: np.quantile(x, [0.25, 0.9], axis=1, keepdims=True), args(distinct(3, 6)))
cov(np.percentile, "percentile", lambda x: np.percentile(x, 30.0), args(distinct(7)))
cov(np.diff, "diff", lambda x: np.diff(x, n=2, axis=0), args(N(5, 3)))
cov(np.diff, "diff_prepend", lambda x: np.diff(x, prepend=0.5, append=x[-1:] * 2), args(N(5)))
cov(np.ediff1d, "ediff1d", lambda x: np.ediff1d(x, to_begin=np.array([1.0])), args(N(2, 3)))
cov(np.gradient, "gradient", lambda x: np.gradient(x, 0.5, axis=1), args(N(3, 5)))
cov(np.gradient, "gradient_all", lambda x: np.stack(np.gradient(x)), args(N(3, 4)))
cov(np.trapezoid, "trapezoid", lambda y: np.trapezoid(y, dx=0.3), args(N(2, 5)))
cov(np.trapezoid, "trapezoid_x", lambda y, x: np.trapezoid(y, x), args(N(5), N(5)))
cov([], "logaddexp.reduce", lambda x: np.logaddexp.reduce(x, axis=1), args(N(3, 4)))
for ax in (None, 0, (0, 1)):
    cov([], f"tg.logsumexp[{ax}]", lambda x, ax=ax: tg.logsumexp(x, axis=ax), args(N(2, 3, 4)))
cov([], "tg.logsumexp_b", lambda x, b: tg.logsumexp(x, axis=-1, b=b, keepdims=True), args(N(3, 4), U(.5, 2, 4)))

# ------------------------------------------------------------------ norms
for o in (None, 1, 2, np.inf, -np.inf, 3, 0.5):
    cov(np.linalg.norm, f"norm_vec[{o}]", lambda x, o=o: np.linalg.norm(x, o), args(distinct(5)))
for o in (None, "fro", 1, -1, np.inf, -np.inf, 2, -2, "nuc"):
    cov(np.linalg.norm, f"norm_mat[{o}]", lambda x, o=o: np.linalg.norm(x, o), args(well(3, 4)))
cov(np.linalg.norm, "norm_axis", lambda x: np.linalg.norm(x, axis=1, keepdims=True), args(N(3, 4)))
cov(np.linalg.norm, "norm_axes", lambda x: np.linalg.norm(x, 1, axis=(2, 0)), args(distinct(2, 3, 4)))
cov(np.linalg.vector_norm, "vector_norm", lambda x: np.linalg.vector_norm(x, ord=3, axis=0), args(N(3, 4)))
cov(np.linalg.matrix_norm, "matrix_norm", lambda x: np.linalg.matrix_norm(x, ord="nuc"), args(well(3, 3, batch=(2,))))
cov(np.linalg.cond, "cond", np.linalg.cond, args(well(3)))
cov(np.linalg.cond, "cond_fro", lambda x: np.linalg.cond(x, "fro"), args(well(3)))

# ------------------------------------------------------------------ shape and assembly
for covers, name, op, s in [
    (np.flip, "flip", np.flip, (2, 3)), (np.flip, "flip_axis", lambda x: np.flip(x, (0, 2)), (2, 3, 2)),
    (np.fliplr, "fliplr", np.fliplr, (2, 3)), (np.flipud, "flipud", np.flipud, (2, 3)),
    (np.roll, "roll", lambda x: np.roll(x, 2), (2, 3)), (np.roll, "roll_axis", lambda x: np.roll(x, (1, -1), (0, 1)), (2, 3)),
    (np.rot90, "rot90", np.rot90, (2, 3)), (np.rot90, "rot90_k", lambda x: np.rot90(x, -1, (1, 2)), (2, 3, 4)),
    (np.tile, "tile", lambda x: np.tile(x, (2, 1, 2)), (2, 3)), (np.resize, "resize", lambda x: np.resize(x, (4, 4)), (2, 3)),
    (np.repeat, "repeat", lambda x: np.repeat(x, 2), (2, 3)),
    (np.repeat, "repeat_axis", lambda x: np.repeat(x, [1, 0, 2], axis=1), (2, 3)),
    (np.diagonal, "diagonal", lambda x: np.diagonal(x, 1, 0, 2), (3, 2, 4)),
    (np.diag, "diag_of_matrix", lambda x: np.diag(x, -1), (3, 4)), (np.diag, "diag_of_vector", lambda x: np.diag(x, 1), (3,)),
    (np.diagflat, "diagflat", np.diagflat, (2, 2)), (np.tril, "tril", np.tril, (3, 4)),
    (np.triu, "triu", lambda x: np.triu(x, 1), (2, 3, 3)), (np.trace, "trace", np.trace, (3, 4)),
    (np.trace, "trace_axes", lambda x: np.trace(x, 1, 1, 2), (2, 3, 3)),
    (np.take, "take", lambda x: np.take(x, [[0, 5], [3, 3]]), (2, 3)),
    (np.take, "take_axis", lambda x: np.take(x, [2, 0], axis=1), (2, 3)),
    (np.take_along_axis, "take_along_axis", lambda x: np.take_along_axis(x, np.array([[0, 2], [1, 1]]), 1), (2, 3)),
    (np.pad, "pad", lambda x: np.pad(x, 1), (2, 3)),
    (np.pad, "pad_values", lambda x: np.pad(x, ((1, 0), (0, 2)), constant_values=((1.0, 2.0), (3.0, 4.0))), (2, 3)),
    (np.pad, "pad_reflect", lambda x: np.pad(x, 2, mode="reflect"), (3, 4)),
    (np.pad, "pad_edge", lambda x: np.pad(x, (1, 2), mode="edge"), (3,)),
    (np.pad, "pad_wrap", lambda x: np.pad(x, 1, mode="wrap"), (2, 3)),
    (np.pad, "pad_symmetric", lambda x: np.pad(x, ((0, 1), (2, 0)), mode="symmetric"), (2, 3)),
    (np.split, "split", lambda x: np.split(x, [1, 3], axis=1)[1], (2, 4)),
    (np.array_split, "array_split", lambda x: np.concatenate(np.array_split(x, 3)), (5, 2)),
    (np.hsplit, "hsplit", lambda x: np.hsplit(x, 2)[1], (2, 4)), (np.vsplit, "vsplit", lambda x: np.vsplit(x, 2)[0], (4, 2)),
    (np.dsplit, "dsplit", lambda x: np.dsplit(x, 2)[1], (2, 2, 4)),
    (np.delete, "delete", lambda x: np.delete(x, [0, 2], axis=1), (2, 4)),
    (np.compress, "compress", lambda x: np.compress([True, False, True], x, axis=1), (2, 3)),
    (np.extract, "extract", lambda x: np.extract(np.array([[1, 0, 1], [0, 1, 1]]), x), (2, 3)),
    (np.fft.fftshift, "fftshift", np.fft.fftshift, (2, 5)), (np.fft.ifftshift, "ifftshift", np.fft.ifftshift, (5,)),
    (np.swapaxes, "swapaxes", lambda x: np.swapaxes(x, 0, 2), (2, 3, 4)),
    (np.moveaxis, "moveaxis", lambda x: np.moveaxis(x, [0, 1], [2, 0]), (2, 3, 4)),
    (np.squeeze, "squeeze", np.squeeze, (1, 3, 1)), (np.expand_dims, "expand_dims", lambda x: np.expand_dims(x, (0, 3)), (2, 3)),
    (np.atleast_1d, "atleast_1d", np.atleast_1d, ()), (np.atleast_2d, "atleast_2d", np.atleast_2d, (3,)),
    (np.atleast_3d, "atleast_3d", np.atleast_3d, (2, 3)), (np.ravel, "ravel", np.ravel, (2, 3)),
    (np.reshape, "reshape", lambda x: np.reshape(x, (3, -1)), (2, 3)), (np.transpose, "transpose", np.transpose, (2, 3)),
    (np.broadcast_to, "broadcast_to", lambda x: np.broadcast_to(x, (2, 2, 3)), (3,)),
    (np.clip, "clip", lambda x: np.clip(x, -0.3, 0.35), (7,)),
]:
    cov(covers, name, sh(op), args(distinct(*s) if covers is np.clip else N(*s)))

cov(np.hstack, "hstack", lambda a, b: np.hstack([a, b, np.ones((2, 1))]), args(N(2, 3), N(2, 2)))


# np.fft (complex values inside a real function: rules/complex.py); each row is real to real
def _ri(z):
    return np.real(z) + 2.0 * np.imag(z)


for covers, name, op, s in [
    (np.fft.fft, "fft", lambda x: _ri(np.fft.fft(x, n=7)), (5,)),
    (np.fft.ifft, "ifft", lambda x: _ri(np.fft.ifft(x * (1 + 0.5j), norm="ortho")), (2, 4)),
    (np.fft.rfft, "rfft", lambda x: _ri(np.fft.rfft(x, axis=0)), (5, 2)),
    (np.fft.irfft, "irfft", lambda x: np.fft.irfft(x * (1 - 0.3j), n=6), (4,)),
    (np.fft.fft2, "fft2", lambda x: _ri(np.fft.fft2(x)), (3, 4)),
    (np.fft.ifft2, "ifft2", lambda x: _ri(np.fft.ifft2(x, s=(2, 5))), (3, 4)),
    (np.fft.rfft2, "rfft2", lambda x: _ri(np.fft.rfft2(x, norm="forward")), (3, 4)),
    (np.fft.irfft2, "irfft2", lambda x: np.fft.irfft2(x + 0.5j * x[::-1]), (3, 3)),
    (np.fft.fftn, "fftn", lambda x: _ri(np.fft.fftn(x, axes=(0, 2))), (2, 3, 4)),
    (np.fft.ifftn, "ifftn", lambda x: _ri(np.fft.ifftn(x)), (2, 3)),
    (np.fft.rfftn, "rfftn", lambda x: _ri(np.fft.rfftn(x, s=(4, 4), axes=(0, 1))), (3, 5)),
    (np.fft.irfftn, "irfftn", lambda x: np.fft.irfftn(x * 1j + x ** 2, s=(2, 5), axes=(0, 1)), (2, 3)),
    (np.fft.hfft, "hfft", lambda x: np.fft.hfft(x * (1 + 1j)), (4,)),
    (np.fft.ihfft, "ihfft", lambda x: _ri(np.fft.ihfft(x, n=5)), (4,)),
]:
    cov(covers, name, op, args(N(*s)), scalar=False)
COVERED.add(np.linalg.eigvals)   # tests/test_complex.py::test_eigvals
# eig of a real matrix (complex results); phase-invariant (dgeev's signs are arbitrary):
# more in tests/test_complex_linalg.py
cov(np.linalg.eig, "eig", lambda x: (lambda w, V: _ri(w) + np.sum(np.abs(V) ** 2 * np.real(w), axis=0))(
    *np.linalg.eig(x)), lambda r: (np.array([[0.0, -2, 0], [2, 0, 0], [0, 0, 3]]) + 0.3 * r.standard_normal((3, 3)),),
    scalar=False)   # a well separated complex pair and a real eigenvalue

cov(np.hstack, "hstack_1d", lambda a, b: np.hstack((a, b)), args(N(3), N(2)))
cov(np.vstack, "vstack", lambda a, b: np.vstack([a, b]), args(N(3), N(2, 3)))
cov(np.row_stack, "row_stack", lambda a, b: np.vstack([a, b]), args(N(3), N(2, 3)))
cov(np.dstack, "dstack", lambda a, b: np.dstack([a, b]), args(N(2, 3), N(2, 3)))
cov(np.column_stack, "column_stack", lambda a, b: np.column_stack([a, b]), args(N(3), N(3, 2)))
cov(np.block, "block", lambda a, b: np.block([[a, b], [b, a]]), args(N(2, 2), N(2, 2)))
cov(np.append, "append", lambda a, b: np.append(a, b, axis=0), args(N(2, 3), N(1, 3)))
cov(np.append, "append_flat", np.append, args(N(2, 3), N(2)))
cov(np.insert, "insert", lambda a, b: np.insert(a, 1, b, axis=1), args(N(2, 3), N(2)))
cov(np.concatenate, "concatenate_axis1", lambda a, b: np.concatenate([a, b], axis=1), args(N(2, 3), N(2, 1)))
cov(np.stack, "stack_scalars", lambda x: np.stack([x[0] * x[1], np.sin(x[2])]), args(N(3)))
cov(np.select, "select", lambda x, y: np.select([x < -0.5, x > 0.5], [x * y, y], default=x),
    args(lambda r: r.choice([-1.0, 0.0, 1.0], 4) + r.uniform(-.2, .2, 4), N(4)))
cov(np.piecewise, "piecewise", lambda x: np.piecewise(x, [x < 0, x >= 0], [lambda t: t ** 2, lambda t: np.sin(t)]),
    args(signed(5)))
cov(np.where, "where", lambda c, x: np.where(c > 0, x, c), args(signed(4), N(4)))
cov(np.full_like, "full_like", lambda x: np.full_like(x, x[0]) * x, args(N(3)))
cov(np.copy, "copy", lambda x: np.copy(x) * x, args(N(3)))
cov([np.zeros_like, np.ones_like, np.empty_like, np.shape, np.ndim, np.size],
    "shape_queries", lambda x: x * np.ones_like(x) + np.zeros_like(x) + 0 * np.empty_like(x) + np.ndim(x) + np.size(x) + np.shape(x)[0], args(N(3)))

# products
cov(np.kron, "kron", np.kron, args(N(2, 3), N(3, 2)))
cov(np.kron, "kron_1d_2d", np.kron, args(N(2), N(2, 3)))
cov(np.cross, "cross", np.cross, args(N(4, 3), N(4, 3)))
cov(np.cross, "cross_axis", lambda a, b: np.cross(a, b, axis=0), args(N(3, 2), N(3, 2)))
cov(np.cross, "cross_2d", np.cross, args(N(3, 2), N(3, 3)))
cov(np.linalg.cross, "linalg.cross", np.linalg.cross, args(N(2, 3), N(2, 3)))
cov(np.outer, "outer", np.outer, args(N(3), N(2, 2)))
cov(np.linalg.outer, "linalg.outer", np.linalg.outer, args(N(3), N(2)))
cov(np.inner, "inner", np.inner, args(N(2, 3), N(4, 3)))
cov(np.vdot, "vdot", np.vdot, args(N(2, 3), N(2, 3)))
cov(np.dot, "dot", np.dot, args(N(2, 3), N(3)))
cov(np.matmul, "matmul", np.matmul, args(N(2, 3), N(3, 2)))
cov(np.linalg.matmul, "linalg.matmul", np.linalg.matmul, args(N(2, 3), N(3, 2)))
cov([np.any, np.all], "any_all", lambda x: np.where(np.any(x > 0, axis=1, keepdims=True) & np.all(x < 5), x, -x),
    args(signed(3, 2)))
cov(np.matvec, "matvec", np.matvec, args(N(2, 3, 4), N(4)))
cov(np.vecmat, "vecmat", np.vecmat, args(N(3), N(3, 2)))
cov([np.vecdot, np.linalg.vecdot], "vecdot", lambda a, b: np.vecdot(a, b) + np.linalg.vecdot(a, b, axis=0).sum(), args(N(3, 4), N(3, 4)))
cov([np.tensordot, np.linalg.tensordot], "tensordot", lambda a, b: np.tensordot(a, b, axes=([0, 2], [1, 0])), args(N(3, 2, 4), N(4, 3)))
cov(np.linalg.multi_dot, "multi_dot", lambda a, b, c: np.linalg.multi_dot([a, b, c]), args(N(2, 3), N(3, 4), N(4)))
for spec, shapes in [("ij,jk->ik", [(2, 3), (3, 4)]), ("ij,kj", [(2, 3), (4, 3)]), ("ii->i", [(3, 3)]),
                     ("ii", [(3, 3)]), ("ij->", [(2, 3)]), ("ij->ji", [(2, 3)]), ("i,i->", [(3,), (3,)]),
                     ("i,j->ij", [(2,), (3,)]), ("bij,bjk->bik", [(2, 3, 4), (2, 4, 2)]),
                     ("...ij,...jk->...ik", [(2, 3, 4), (4, 2)]), ("ijk,kl,lm->im", [(2, 3, 4), (4, 2), (2, 3)]),
                     ("iij->j", [(2, 2, 3)]), ("ij,ij,ij->i", [(2, 3), (2, 3), (2, 3)]), ("i,i,i", [(3,), (3,), (3,)]),
                     ("ab,b->a", [(3, 1), (4,)])]:
    cov(np.einsum, f"einsum[{spec}]", lambda *a, spec=spec: np.einsum(spec, *a), args(*[N(*s) for s in shapes]))
cov(np.einsum, "einsum_const", lambda a: np.einsum("ij,jk->ik", a, np.arange(6.0).reshape(3, 2)), args(N(2, 3)))

# order statistics (values kept apart: no tie within an FD step)
cov(np.sort, "sort", np.sort, args(distinct(3, 4)))
cov(np.sort, "sort_axis0", lambda x: np.sort(x, axis=0), args(distinct(3, 4)))
cov(np.sort, "sort_None", lambda x: np.sort(x, axis=None), args(distinct(3, 4)))
cov(np.partition, "partition", lambda x: np.partition(x, 2)[..., 2:], args(distinct(3, 5)))
cov(np.partition, "partition_kths", lambda x: np.partition(x, (1, 3), axis=0)[[1, 3]], args(distinct(5, 2)))
cov(np.argsort, "argsort_gather", lambda x: x[np.argsort(x)], args(distinct(5)))
cov(np.argpartition, "argpartition_gather", lambda x: x[np.argpartition(x, 2)[:2]], args(distinct(5)))
cov(np.argmax, "argmax_gather", lambda x: x[np.argmax(x)] * x[0], args(distinct(5)))
cov(np.argmin, "argmin_axis", lambda x: np.take_along_axis(x, np.argmin(x, axis=1, keepdims=True), 1), args(distinct(3, 4)))

# ------------------------------------------------------------------ numpy.linalg
cov(np.linalg.inv, "inv", np.linalg.inv, args(well(3)))
cov(np.linalg.inv, "inv_batch", np.linalg.inv, args(well(3, batch=(2,))))
cov(np.linalg.det, "det", np.linalg.det, args(well(3)))
cov(np.linalg.det, "det_batch", np.linalg.det, args(well(2, batch=(3,))))
cov(np.linalg.slogdet, "slogdet", lambda a: np.linalg.slogdet(a)[1] * np.linalg.slogdet(a).sign, args(well(3)))
cov(np.linalg.solve, "solve_vec", np.linalg.solve, args(well(3), N(3)))
cov(np.linalg.solve, "solve_mat", np.linalg.solve, args(well(3), N(3, 2)))
cov(np.linalg.solve, "solve_batch", np.linalg.solve, args(well(3, batch=(2,)), N(3, 1)))
cov(np.linalg.solve, "solve_const_A", lambda b: np.linalg.solve(well(3)(np.random.default_rng(1)), b), args(N(3)))
cov(np.linalg.cholesky, "cholesky", np.linalg.cholesky, args(spd(3)))
cov(np.linalg.cholesky, "cholesky_of_product", lambda x: np.linalg.cholesky(x @ x.T + 3 * np.eye(3)), args(N(3, 4)))
cov(np.linalg.cholesky, "cholesky_upper", lambda a: np.linalg.cholesky(a, upper=True), args(spd(3)))
cov(np.linalg.cholesky, "cholesky_batch", np.linalg.cholesky, args(spd(2, (2,))))


def _fix_sign(V):
    """Eigen/singular vectors up to sign: make each column's largest entry positive (constant)."""
    v = V.value if isinstance(V, tg.Tracer) else V
    s = np.sign(np.take_along_axis(v, np.argmax(np.abs(v), axis=-2)[..., None, :], -2))
    return V * s


cov(np.linalg.eigh, "eigh_w", lambda a: np.linalg.eigh(a)[0], args(spd(4)))
cov(np.linalg.eigh, "eigh_V", lambda a: _fix_sign(np.linalg.eigh(a).eigenvectors), args(spd(3)))
cov(np.linalg.eigh, "eigh_V_upper", lambda a: _fix_sign(np.linalg.eigh(a, UPLO="U")[1]), args(spd(3)))
cov(np.linalg.eigh, "eigh_reconstruct", lambda x: (lambda w, V: V @ (w[:, None] ** 2 * V.T))(*np.linalg.eigh(x @ x.T)), args(N(3, 3)))
cov(np.linalg.eigvalsh, "eigvalsh", np.linalg.eigvalsh, args(spd(3, (2,))))
cov(np.linalg.svd, "svd_s", lambda a: np.linalg.svd(a, compute_uv=False), args(well(3, 4)))
for m, n in ((3, 3), (4, 2), (2, 4)):
    cov(np.linalg.svd, f"svd_usv[{m}x{n}]",
        lambda a: (lambda U, s, Vh: np.concatenate([_fix_sign(U).ravel(), s, _fix_sign(Vh.T).ravel()]))(
            *np.linalg.svd(a, full_matrices=False)), args(well(m, n)))
cov(np.linalg.svdvals, "svdvals", np.linalg.svdvals, args(well(2, 3)))
cov(np.linalg.qr, "qr", lambda a: np.concatenate([np.ravel(t) for t in np.linalg.qr(a)]), args(well(4, 3)))
cov(np.linalg.qr, "qr_square", lambda a: np.linalg.qr(a).Q, args(well(3)))
cov(np.linalg.qr, "qr_r", lambda a: np.linalg.qr(a, mode="r"), args(well(3, 2)))
cov(np.linalg.pinv, "pinv_tall", np.linalg.pinv, args(well(4, 2)))
cov(np.linalg.pinv, "pinv_wide", np.linalg.pinv, args(well(2, 3)))
cov(np.linalg.pinv, "pinv_square", np.linalg.pinv, args(well(3)))
cov(np.linalg.lstsq, "lstsq", lambda a, b: np.concatenate([np.linalg.lstsq(a, b)[0], np.linalg.lstsq(a, b)[1]]),
    args(well(4, 2), N(4)))
cov(np.linalg.matrix_power, "matrix_power", lambda a: np.linalg.matrix_power(a, 3), args(well(2)))
cov(np.linalg.matrix_power, "matrix_power_neg", lambda a: np.linalg.matrix_power(a, -2), args(well(2)))
cov(np.linalg.tensorsolve, "tensorsolve", lambda a, b: np.linalg.tensorsolve(a, b),
    args(lambda r: well(6)(r).reshape(2, 3, 6), N(2, 3)))
cov(np.linalg.tensorsolve, "tensorsolve_axes", lambda a, b: np.linalg.tensorsolve(a, b, axes=(0,)),
    args(lambda r: well(6)(r).reshape(6, 2, 3).transpose(2, 0, 1).copy(), N(6)))
cov(np.linalg.tensorinv, "tensorinv", lambda a: np.linalg.tensorinv(a, 1), args(lambda r: well(4)(r).reshape(4, 2, 2)))
cov([np.linalg.trace, np.linalg.diagonal], "linalg.trace", lambda a: np.linalg.trace(a) + np.linalg.diagonal(a).sum(-1), args(N(2, 3, 3)))


# ------------------------------------------------------------------ issue 15: NumPy gaps
GAP_ROWS = []


def gap(covers, name, fn, gen, scalar=True):
    cov(covers, name, fn, gen, scalar)
    GAP_ROWS.append(pytest.param(fn, gen, id=name))


def nan_at(*pos):
    """x with NaN at the given flat positions (a constant mask, so FD never crosses it)."""
    def op(x):
        m = np.zeros(x.size, dtype=bool)
        m[list(pos)] = True
        return np.where(m.reshape(x.shape), np.nan, x)
    return op


for spec, shapes, subs in [
        ("ij,jk->ik", [(2, 3), (3, 4)], ([0, 1], [1, 2], [0, 2])),
        ("ij,kj", [(2, 3), (4, 3)], ([0, 1], [2, 1])),
        ("ii->i", [(3, 3)], ([0, 0], [0])),
        ("...j,j->...", [(2, 3, 4), (4,)], ([Ellipsis, 1], [1], [Ellipsis]))]:
    def _ein(*a, subs=subs):
        ops = [v for pair in zip(a, subs) for v in pair]
        return np.einsum(*ops, *subs[len(a):])
    gap(np.einsum, f"einsum_interleaved[{spec}]", _ein, args(*[N(*s) for s in shapes]))
gap(np.linspace, "linspace", lambda a, b: np.linspace(a, b, 5), args(N(), N()))
gap(np.linspace, "linspace_arrays_axis", lambda a, b: np.linspace(a, b, 4, axis=1), args(N(2), N(3, 1)))
gap(np.linspace, "linspace_open_retstep", lambda a: np.concatenate(
    [np.linspace(a[0], a[1], 6, endpoint=False, retstep=True)[0],
     np.atleast_1d(np.linspace(a[0], a[1], 6, endpoint=False, retstep=True)[1])]), args(N(2)))
gap(np.linspace, "linspace_const_start", lambda b: np.linspace(1.0, b, 3), args(N(2)))
gap(np.geomspace, "geomspace", lambda a, b: np.geomspace(a, b, 5), args(U(.5, 2), U(3, 6)))
gap(np.geomspace, "geomspace_negative", lambda a: np.geomspace(-a, -2 * a, 4, endpoint=False), args(U(.5, 2, 2)))
gap(np.rollaxis, "rollaxis", sh(lambda x: np.rollaxis(x, 2, 1)), args(N(2, 3, 4)))
for mode in ("full", "same", "valid"):
    gap(np.convolve, f"convolve[{mode}]", lambda a, v, mode=mode: np.convolve(a, v, mode), args(N(5), N(3)))
    gap(np.convolve, f"convolve_long_v[{mode}]", lambda a, v, mode=mode: np.convolve(a, v, mode), args(N(2), N(4)))
    gap(np.correlate, f"correlate[{mode}]", lambda a, v, mode=mode: np.correlate(a, v, mode), args(N(5), N(3)))
    gap(np.correlate, f"correlate_long_v[{mode}]", lambda a, v, mode=mode: np.correlate(a, v, mode), args(N(3), N(4)))
gap(np.convolve, "convolve_const_kernel", lambda a: np.convolve(a, [0.25, 0.5, 0.25], "same"), args(N(6)))
XP = np.array([-1.0, 0.0, 0.5, 2.0])
gap(np.interp, "interp_fp", lambda fp: np.interp([-2.0, -0.3, 0.5, 1.1, 2.0, 3.0], XP, fp), args(N(4)))
gap(np.interp, "interp_x", lambda x: np.interp(x, XP, [1.0, -1.0, 2.0, 0.5]),
    args(lambda r: np.array([-1.5, -0.6, 0.2, 0.9, 1.7, 2.6]) + r.uniform(-.05, .05, 6)))
gap(np.interp, "interp_x_fp_left_right", lambda x, fp: np.interp(x, XP, fp, left=-5.0, right=fp[0] * 2),
    args(lambda r: np.array([[-1.5, 0.3], [1.2, 2.5]]) + r.uniform(-.05, .05, (2, 2)), N(4)))
gap(np.polyval, "polyval", np.polyval, args(N(4), N(5)))
gap(np.polyval, "polyval_const_p", lambda x: np.polyval([1.0, -2.0, 0.5], x), args(N(3)))
gap(np.polyval, "polyval_scalar_x", lambda p, x: np.polyval(p, x), args(N(3), N()))
gap(np.polyfit, "polyfit", lambda y: np.polyfit(np.linspace(0, 1, 6), y, 2), args(N(6)))
gap(np.polyfit, "polyfit_2d_w", lambda y: np.polyfit(np.arange(5.0), y, 1, w=np.arange(1.0, 6.0)), args(N(5, 2)))
for ax, kd in ((None, False), (1, True), (0, False)):
    gap([np.nanvar, np.nanstd], f"nanvar_nanstd[{ax},{kd}]",
        lambda x, ax=ax, kd=kd: np.nanvar(nan_at(1, 4)(x), axis=ax, keepdims=kd)
        + np.nanstd(nan_at(1, 4)(x), axis=ax, keepdims=kd, ddof=1), args(N(3, 4)))
    gap(np.nanmedian, f"nanmedian[{ax},{kd}]",
        lambda x, ax=ax, kd=kd: np.nanmedian(nan_at(0, 5)(x), axis=ax, keepdims=kd), args(distinct(3, 4)))
gap(np.nanquantile, "nanquantile", lambda x: np.nanquantile(nan_at(2)(x), [0.2, 0.7], axis=1), args(distinct(2, 5)))
gap(np.nanquantile, "nanquantile_all", lambda x: np.nanquantile(nan_at(2, 3)(x), 0.4), args(distinct(2, 4)))
gap(np.nanpercentile, "nanpercentile", lambda x: np.nanpercentile(nan_at(0)(x), 35.0, axis=0, keepdims=True), args(distinct(4, 3)))
gap(np.insert, "insert_traced_values", lambda a, b: np.insert(a, [0, 2], b), args(N(4), N(2)))
gap(np.delete, "delete_flat", sh(lambda x: np.delete(x, 3)), args(N(2, 3)))
gap(np.piecewise, "piecewise_default", lambda x: np.piecewise(x, [x < -0.5, x > 0.5], [lambda t: t ** 3, np.cos, lambda t: 2 * t]),
    args(lambda r: r.choice([-1.0, 0.0, 1.0], 6) + r.uniform(-.2, .2, 6)))
gap(np.select, "select_traced_choices_default", lambda x, y: np.select([x > 0.5, x < -0.5], [np.sin(y), y * x], default=y ** 2),
    args(lambda r: r.choice([-1.0, 0.0, 1.0], 5) + r.uniform(-.2, .2, 5), N(5)))
gap(np.apply_along_axis, "apply_along_axis_scalar", lambda x: np.apply_along_axis(lambda r: np.sum(r ** 2) * r[0], 1, x), args(N(3, 4)))
gap(np.apply_along_axis, "apply_along_axis_vector", lambda x: np.apply_along_axis(lambda r: np.cumsum(np.sin(r)), 0, x), args(N(3, 2)))
gap(np.apply_along_axis, "apply_along_axis_matrix_mid", lambda x: np.apply_along_axis(np.outer, 1, x, np.arange(1.0, 3.0)), args(N(2, 3, 2)))
gap(np.apply_along_axis, "apply_along_axis_np_array", lambda x: np.apply_along_axis(lambda r: np.array([r[0] * r[1], r[2]]), -1, x), args(N(2, 3)))


# ------------------------------------------------------------------ the test
def _scalarize(f, out):
    w = np.random.default_rng(7).uniform(0.5, 1.5, np.shape(out))

    def g(*a):
        o = f(*a)
        flat = np.concatenate([np.ravel(t) for t in o]) if isinstance(o, (tuple, list)) else np.ravel(o)
        return np.sum(w * np.sin(flat))
    return g


def _flat(out):
    if isinstance(out, (tuple, list)):
        return np.concatenate([np.ravel(np.asarray(o, dtype=np.float64)) for o in out])
    return np.ravel(np.asarray(out, dtype=np.float64))


@pytest.mark.parametrize("fn, gen, scalar", ROWS)
def test_breadth(fn, gen, scalar, rng):
    vals = gen(rng)
    plain = fn(*vals)
    traced, _ = tg.vjp(fn, *vals)
    np.testing.assert_allclose(_flat(traced), _flat(plain), rtol=1e-10, atol=1e-12)
    tg.check_grads(fn, *vals, modes=("fwd", "rev"), order=2)
    if scalar:
        tg.check_grads(_scalarize(fn, _flat(plain)), *vals, modes=("fwd", "rev"), order=2)


# functions with zero derivative: exercised in test_constant_functions
CONSTANT_CALLS = {
    np.floor: lambda x: np.floor(x), np.ceil: lambda x: np.ceil(x), np.rint: lambda x: np.rint(x),
    np.trunc: lambda x: np.trunc(x), np.fix: lambda x: np.fix(x), np.round: lambda x: np.round(x),
    np.around: lambda x: np.around(x), np.sign: lambda x: np.sign(x),
    np.floor_divide: lambda x: x // 0.7, np.heaviside: lambda x: np.heaviside(x, 0.5),
    np.signbit: lambda x: np.signbit(x), np.isnan: np.isnan, np.isinf: np.isinf,
    np.isfinite: np.isfinite, np.isneginf: np.isneginf, np.isposinf: np.isposinf,
    np.equal: lambda x: np.equal(x, 0.5), np.not_equal: lambda x: x != 0.5, np.less: lambda x: x < 0,
    np.less_equal: lambda x: x <= 0, np.greater: lambda x: x > 0, np.greater_equal: lambda x: x >= 0,
    np.logical_and: lambda x: (x > 0) & (x < 1), np.logical_or: lambda x: (x > 0) | (x < -1),
    np.logical_not: lambda x: ~(x > 0), np.logical_xor: lambda x: np.logical_xor(x > 0, x < 1),
    np.argmax: np.argmax, np.argmin: np.argmin, np.argsort: np.argsort,
    np.argpartition: lambda x: np.argpartition(x, 1), np.nonzero: lambda x: np.nonzero(x > 0)[0],
    np.argwhere: lambda x: np.argwhere(x > 0), np.flatnonzero: lambda x: np.flatnonzero(x > 0),
    np.count_nonzero: lambda x: np.count_nonzero(x > 0), np.isclose: lambda x: np.isclose(x, 0.3),
    np.allclose: lambda x: np.allclose(x, 0.3), np.array_equal: lambda x: np.array_equal(x, x),
    np.array_equiv: lambda x: np.array_equiv(x, x), np.searchsorted: lambda x: np.searchsorted(np.sort(x.value), x),
    np.digitize: lambda x: np.digitize(x, [0.0, 1.0]), np.unique: np.unique,
    np.bincount: lambda x: np.bincount(np.array([0, 1, 1]), weights=x[:3]),
    np.histogram: lambda x: np.histogram(x, 3)[0], np.lexsort: lambda x: np.lexsort((x, x)),
    np.isin: lambda x: np.isin(x, [0.3]), np.nanargmax: np.nanargmax, np.nanargmin: np.nanargmin,
    np.imag: np.imag, np.iscomplex: np.iscomplex, np.isreal: np.isreal,
    np.iscomplexobj: np.iscomplexobj, np.isrealobj: np.isrealobj,
    np.linalg.matrix_rank: lambda x: np.linalg.matrix_rank(x.reshape(2, 2)),
}
if hasattr(np, "in1d"):
    CONSTANT_CALLS[np.in1d] = lambda x: np.in1d(x, [0.3])
# the scipy.special ufuncs of tapegrad.rules.special have their rows in tests/test_scipy.py
# (test_every_special_rule_has_a_row there)
COVERED.update(_rules_special.REGISTERED)
ORDER_BASED = {np.argmax, np.argmin, np.argsort, np.argpartition}


def test_constant_functions():
    x = np.array([0.3, -1.2, 2.6, 0.9])
    for f, call in CONSTANT_CALLS.items():
        def g(x, call=call):
            c = call(x)
            c = np.asarray(c.value if isinstance(c, tg.Tracer) else c, dtype=np.float64)
            return np.sum(x * x) + 0.0 * np.sum(c)
        np.testing.assert_allclose(tg.grad(g)(x), 2 * x, err_msg=str(f))
        # and used directly as a value: zero derivative, not traced as an integer
        out = tg.vjp(lambda x, call=call: call(x), x)[0]
        assert np.asarray(out).dtype.kind in "biuf", f
    np.testing.assert_array_equal(tg.grad(lambda x: np.sum(np.floor(x) * x))(x), np.floor(x))


def test_every_registered_function_has_a_row():
    reg = rules_numpy.registry()
    covered = COVERED | set(CONSTANT_CALLS)
    # element-wise primitives also have their own table in test_ops; here they must appear too
    missing = [name for name, (f, how) in reg.items() if f not in covered]
    assert not missing, f"registered without a test row: {missing}"
    assert len(reg) >= 250


def test_coverage_table_has_every_mode(tmp_path):
    text = rules_numpy.coverage_table(tmp_path / "coverage.md")
    assert "MISSING" not in text
    reg = rules_numpy.registry()
    for name in reg:
        assert f"| `{name}` |" in text
    # the committed docs are the generated table
    import pathlib
    doc = pathlib.Path(__file__).resolve().parents[1] / "docs" / "coverage.md"
    assert doc.read_text() == text, "docs/coverage.md is stale: run tapegrad.rules_numpy.coverage_table('docs/coverage.md')"


# ------------------------------------------------------------------ clear errors and idioms
def test_out_on_traced_ufunc_raises():
    buf = np.zeros(3)
    with pytest.raises(TypeError, match="out="):
        tg.grad(lambda x: np.sum(np.sin(x, out=buf)))(np.ones(3))
    with pytest.raises(TypeError, match="out="):
        tg.grad(lambda x: np.sum(np.cumsum(x, out=buf)))(np.ones(3))
    with pytest.raises(TypeError, match="out="):
        tg.grad(lambda x: np.sum(np.logaddexp2(x, 1.0, out=buf)))(np.ones(3))


def test_np_array_of_tracers_is_traced_and_stack_works():
    # np.array of traced scalars: an object array whose elements are tracers (the derivative
    # flows through NumPy's object loops); with a float dtype it is refused, naming np.stack
    g = tg.grad(lambda x: np.sum(np.array([x[0], x[1] ** 2]) ** 2))(np.array([1.0, 2.0]))
    np.testing.assert_allclose(g, [2.0, 4 * 2.0 ** 3])
    with pytest.raises(TypeError, match="np.stack"):
        tg.grad(lambda x: np.sum(np.array([x[0], x[1] ** 2], dtype=float)))(np.ones(2))
    g = tg.grad(lambda x: np.sum(np.stack([x[0], x[1] ** 2]) ** 2))(np.array([1.0, 2.0]))
    np.testing.assert_allclose(g, [2.0, 4 * 2.0 ** 3])


def test_scipy_logsumexp_is_not_dispatched():
    """scipy.special.logsumexp converts with np.asarray: an object array of tracers, on which
    SciPy takes its complex branch and NumPy raises a TypeError (no wrong derivative);
    tg.logsumexp works."""
    x = np.array([0.5, -1.0, 2.0])
    with pytest.raises(TypeError, match="exp"):
        tg.grad(sps.logsumexp)(x)
    np.testing.assert_allclose(tg.grad(tg.logsumexp)(x), sps.softmax(x))
    np.testing.assert_allclose(tg.grad(lambda x: np.logaddexp.reduce(x))(x), sps.softmax(x))
    s, sign = tg.logsumexp(x, b=np.array([1.0, -1.0, 1.0]), return_sign=True)
    s0, sign0 = sps.logsumexp(x, b=np.array([1.0, -1.0, 1.0]), return_sign=True)
    assert np.isclose(s, s0) and sign == sign0


def test_non_unique_decompositions_are_refused():
    with pytest.raises(NotImplementedError, match="full_matrices"):
        tg.grad(lambda a: np.sum(np.linalg.svd(a)[0]))(np.ones((3, 2)))
    with pytest.raises(NotImplementedError, match="m < n"):
        tg.grad(lambda a: np.sum(np.linalg.qr(a)[1]))(np.ones((2, 3)))


def test_sort_replay_rerecords_when_the_order_changes():
    """The order guard: a recorded tape stays valid while the permutation holds, and
    re-records (never returns the wrong branch's derivative) when it changes."""
    w = np.array([1.0, 2.0, 3.0])

    def f(x):
        return np.sum(w * np.sort(x))
    rec = tg.record(f, np.array([0.1, 0.5, 0.9]))
    for x in (np.array([0.2, 0.6, 0.7]), np.array([0.9, 0.1, 0.5]), np.array([3.0, 2.0, 1.0])):
        np.testing.assert_allclose(rec.grad(x), tg.grad(f)(x))
    g = lambda x: x[np.argmax(x)] ** 2  # noqa: E731
    rec = tg.record(g, np.array([0.1, 0.5, 0.2]))
    for x in (np.array([0.2, 0.6, 0.1]), np.array([0.9, 0.1, 0.5])):
        np.testing.assert_allclose(rec.grad(x), tg.grad(g)(x))


def test_special_functions_values_and_high_order():
    """gammaln -> digamma -> polygamma: third derivatives through nested grads."""
    x = 1.7
    d3 = tg.grad(tg.grad(tg.grad(sps.gammaln)))(x)
    assert np.isclose(d3, sps.polygamma(2, x))
    assert np.isclose(tg.grad(sps.log_ndtr)(-30.0), math.exp(-450 - sps.log_ndtr(-30.0)) / math.sqrt(2 * math.pi))


@pytest.mark.parametrize("fn, gen", GAP_ROWS)
def test_gap_rows_on_recorded_tapes(fn, gen, rng):
    """The new rows on a recorded tape: replayed at a nearby point (no segment, order or NaN
    mask changes there), value, jvp, vjp and (scalarized) hvp against re-tracing there."""
    vals = gen(rng)
    step = np.random.default_rng(5)
    near = tuple(type(v)(np.asarray(v) + 1e-3 * step.standard_normal(np.shape(v)))
                 if not isinstance(v, np.ndarray) else np.asarray(v + 1e-3 * step.standard_normal(v.shape))
                 for v in vals)
    rec = tg.record(fn, *vals)
    np.testing.assert_allclose(_flat(rec(*near)), _flat(fn(*near)), rtol=1e-10, atol=1e-12)
    out, vjp_fn = tg.vjp(fn, *near)
    u = np.random.default_rng(6).standard_normal(_flat(out).shape)
    v = tuple(np.random.default_rng(7).standard_normal(np.shape(a)) for a in near)
    ct = _shaped(u, out)
    x = near[0] if len(near) == 1 else near
    vv = v[0] if len(v) == 1 else v
    got = rec.vjp(x, ct)
    want = vjp_fn(ct)
    np.testing.assert_allclose(_flat(got), _flat(want), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(_flat(rec.jvp(x, vv)[1]), _flat(tg.jvp(fn, near, v)[1]), rtol=1e-9, atol=1e-12)
    g = _scalarize(fn, _flat(out))
    rg = tg.record(g, *vals)
    np.testing.assert_allclose(_flat(rg.hvp(x, vv)), _flat(tg.hvp(g, near, v)), rtol=1e-8, atol=1e-10)


def _shaped(u, out):
    if isinstance(out, (tuple, list)):
        res, pos = [], 0
        for o in out:
            n = np.size(o)
            res.append(u[pos:pos + n].reshape(np.shape(o)))
            pos += n
        return type(out)(res)
    return u.reshape(np.shape(out))


def test_interp_and_nan_masks_rerecord_when_they_change():
    """interp's segments and nanmedian's NaN positions come from values and are guarded: a
    replay where they differ re-records (never the old segment's or mask's derivative)."""
    xp, fp = np.array([0.0, 1.0, 2.0]), np.array([1.0, 3.0, 2.0])
    f = lambda x: np.sum(np.interp(x, xp, fp) * x)  # noqa: E731
    rec = tg.record(f, np.array([0.5, 1.5]))
    for x in (np.array([0.6, 1.4]), np.array([1.5, 0.5]), np.array([-1.0, 3.0])):
        np.testing.assert_allclose(rec.grad(x), tg.grad(f)(x))
    assert rec.rerecords >= 2
    g = lambda x: np.nanmedian(x) ** 2  # noqa: E731
    rg = tg.record(g, np.array([1.0, np.nan, 2.0, 3.0]))
    for x, want in ((np.array([1.1, np.nan, 2.0, 3.0]), [0.0, 0.0, 4.0, 0.0]),
                    (np.array([np.nan, 1.0, 2.0, 3.0]), [0.0, 0.0, 4.0, 0.0]),
                    (np.array([np.nan, 1.0, 2.0, np.nan]), [0.0, 1.5, 1.5, 0.0])):
        np.testing.assert_allclose(rg.grad(x), want)
        np.testing.assert_allclose(tg.grad(g)(x), want)
    # nanvar's masks are traced: the same tape serves a new NaN position
    h = lambda x: np.nanvar(x)  # noqa: E731
    rh = tg.record(h, np.array([1.0, np.nan, 2.0, 4.0]))
    x = np.array([np.nan, 1.0, 2.0, 4.0])
    want = np.concatenate([[0.0], 2 * (x[1:] - x[1:].mean()) / 3])     # d/dx of the variance of x[1:]
    np.testing.assert_allclose(rh.grad(x), want)
    np.testing.assert_allclose(tg.grad(h)(x), want)
    assert rh.rerecords == 0


@pytest.mark.parametrize("fn, want", [
    (np.nansum, [0.0, 1.0, 1.0]), (np.nanmean, [0.0, 0.5, 0.5]), (np.nanmax, [0.0, 1.0, 0.0]),
    (np.nanmin, [0.0, 0.0, 1.0]), (np.nanprod, [0.0, 2.0, 3.0]),
    (lambda x: np.sum(np.nancumsum(x)), [0.0, 2.0, 1.0]),
    (lambda x: np.sum(np.nancumprod(x)), [0.0, 1.0 + 2.0, 3.0]),
])
def test_nan_functions_replay_at_other_nan_positions(fn, want):
    """The NaN masks are traced: a tape recorded with a NaN in one place gives NumPy's value
    and the right derivative at a point with the NaN elsewhere (values and masks replayed)."""
    rec = tg.record(fn, np.array([1.0, np.nan, 2.0]))
    x = np.array([np.nan, 3.0, 2.0])
    assert np.isclose(rec(x), fn(x))
    np.testing.assert_allclose(rec.grad(x), want)
    np.testing.assert_allclose(tg.grad(fn)(x), want)


@pytest.mark.parametrize("uplo", ["L", "U"])
def test_eigh_reads_the_triangle_numpy_reads(uplo):
    # a non-symmetric matrix: eigh uses one triangle; the traced eigenvectors carry NumPy's own
    # signs (LAPACK called with the same UPLO), so the derivatives match differences of NumPy's
    rng = np.random.default_rng(7)
    A = rng.standard_normal((5, 5))
    w, V = np.linalg.eigh(A, uplo)
    out = tg.vjp(lambda a: np.concatenate([np.linalg.eigh(a, uplo)[0], np.linalg.eigh(a, uplo)[1].ravel()]), A)[0]
    np.testing.assert_array_equal(out, np.concatenate([w, V.ravel()]))
    tg.check_grads(lambda a: tuple(np.linalg.eigh(a, UPLO=uplo)), A, modes=("fwd", "rev"), order=2, h=1e-6)
    tg.check_grads(lambda a: np.linalg.eigvalsh(a, UPLO=uplo), A, modes=("fwd", "rev"), order=2, h=1e-6)
    # the other triangle does not matter
    other = np.tril(A, -1) if uplo == "U" else np.triu(A, 1)
    g = tg.grad(lambda a: np.sum(np.linalg.eigh(a, uplo)[1] ** 3))(A)
    assert np.all(g[other != 0] == 0)
