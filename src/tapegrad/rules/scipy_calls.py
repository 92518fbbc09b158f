"""Python rules (one tape operation each) for the SciPy functions of tapegrad.scipy:
triangular solves (scipy.linalg.solve_triangular) and full convolutions along axes
(scipy.signal.convolve / fftconvolve / oaconvolve). They live with the other rules, and are
registered when tapegrad is imported, so that a tape that uses them loads from bytes in any
process (``calls.rule_from_spec`` finds rules by name); the functions with SciPy's signatures
are in tapegrad.scipy.linalg and tapegrad.scipy.signal. scipy.signal is imported on first use
(it takes about a second).
"""
import numpy as np
import scipy.linalg as _sl

from .calls import CallRule, register, call
from ..tracing.tracer import Tracer, value_of
from ..errors import TapegradValueError


def shape(x):
    return tuple(np.shape(value_of(x)))


# ------------------------------------------------------------------ scipy.linalg.solve_triangular
def _T(x):
    return np.swapaxes(x, -1, -2)


def _tri(X, lower, unit):
    """The part of X that a triangular solve reads (strictly, if the diagonal is unit)."""
    k = -1 if unit else 0
    return np.tril(X, k) if lower else np.triu(X, -k)


def _trsm(A, B, lower, unit):
    """A^-1 B for triangular (..., n, n) A, B (..., n, k), on values."""
    if A.ndim == 2 and B.ndim == 2:
        return _sl.solve_triangular(A, B, lower=lower, unit_diagonal=unit, check_finite=False)
    out = np.empty(np.broadcast_shapes(A.shape[:-2], B.shape[:-2]) + B.shape[-2:])
    A = np.broadcast_to(A, out.shape[:-2] + A.shape[-2:])
    B = np.broadcast_to(B, out.shape)
    for i in np.ndindex(out.shape[:-2]):
        out[i] = _sl.solve_triangular(A[i], B[i], lower=lower, unit_diagonal=unit, check_finite=False)
    return out


@register
class SolveTriangular(CallRule):
    """X = A^-1 B, A triangular (the triangle read: lower or upper, strict if unit_diagonal).
    X_dot = A^-1 (B_dot - tri(A_dot) X); B_bar = A^-T X_bar, A_bar = -tri(B_bar X^T)
    (the solve rule of Giles 2008, sec. 3.1, on the entries read)."""
    name = "solve_triangular"

    def __init__(self, in_shapes, out_shapes=None, lower=True, unit=False):
        super().__init__(in_shapes, [in_shapes[1]], lower=bool(lower), unit=bool(unit))
        self.lower, self.unit = bool(lower), bool(unit)

    def fwd(self, A, B):
        if type(A) is Tracer or type(B) is Tracer:
            return [_solve_tri(A, B, self.lower, self.unit)]
        return [_trsm(np.asarray(A), np.asarray(B), self.lower, self.unit)]

    def tan(self, xs, ys, xdots):
        A, X = xs[0], ys[0]
        rhs = 0.0
        if xdots[1] is not None:
            rhs = xdots[1]
        if xdots[0] is not None:
            rhs = rhs - _tri(xdots[0], self.lower, self.unit) @ X
        if np.ndim(value_of(rhs)) == 0:
            rhs = rhs * np.ones(self.out_shapes[0])
        return [_solve_tri(A, rhs, self.lower, self.unit)]

    def bwd(self, xs, ys, ybars):
        Bbar = _solve_tri(_T(xs[0]), ybars[0], not self.lower, self.unit)
        return [-_tri(Bbar @ _T(ys[0]), self.lower, self.unit), Bbar]


def _solve_tri(a, b, lower, unit):
    return call(SolveTriangular([shape(a), shape(b)], lower=lower, unit=unit), a, b)


# ------------------------------------------------------------------ scipy.signal convolutions
_METHODS = ("direct", "fft", "oa")


def _full_shape(sa, sb, axes):
    return tuple(sa[d] + sb[d] - 1 if d in axes else sa[d] for d in range(len(sa)))


@register
class Convolve(CallRule):
    """Y = A * B, the full convolution along ``axes`` (A and B agree on the other axes)."""
    name = "convolve"

    def __init__(self, in_shapes, out_shapes=None, axes=(), method="direct"):
        axes = tuple(int(d) for d in axes)
        sa, sb = [tuple(s) for s in in_shapes]
        if len(sa) != len(sb) or any(sa[d] != sb[d] for d in range(len(sa)) if d not in axes):
            raise TapegradValueError(f"convolve rule: shapes {sa} and {sb} disagree off the axes {axes}")
        if method not in _METHODS:
            raise TapegradValueError(f"convolve rule: unknown method {method!r}")
        super().__init__(in_shapes, [_full_shape(sa, sb, axes)], axes=list(axes), method=method)
        self.axes, self.method = axes, method

    def fwd(self, A, B):
        if type(A) is Tracer or type(B) is Tracer:
            return [_full(A, B, self.axes, self.method)]
        A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
        if min(A.size, B.size) == 0:
            return [np.zeros(self.out_shapes[0])]
        import scipy.signal as _ss
        if self.method == "direct":
            return [np.asarray(_ss.convolve(A, B, mode="full"), dtype=np.float64)]
        f = _ss.fftconvolve if self.method == "fft" else _ss.oaconvolve
        return [np.asarray(f(A, B, mode="full", axes=self.axes), dtype=np.float64)]

    def tan(self, xs, ys, xdots):
        A, B = xs
        out = 0.0
        if xdots[0] is not None:
            out = _full(xdots[0], B, self.axes, self.method)
        if xdots[1] is not None:
            out = out + _full(A, xdots[1], self.axes, self.method)
        return [out]

    def _adjoint(self, ybar, other, own_shape):
        c = _full(ybar, np.flip(other, self.axes), self.axes, self.method)
        so = shape(other)
        idx = tuple(slice(so[d] - 1, so[d] - 1 + own_shape[d]) if d in self.axes else slice(None)
                    for d in range(len(own_shape)))
        return c[idx]

    def bwd(self, xs, ys, ybars):
        A, B = xs
        sa, sb = self.in_shapes
        return [self._adjoint(ybars[0], B, sa), self._adjoint(ybars[0], A, sb)]


def _full(a, b, axes, method):
    return call(Convolve([shape(a), shape(b)], axes=axes, method=method), a, b)
