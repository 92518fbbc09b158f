"""numpy.linalg as Python rules (one OP_CALL each): value, tangent and adjoint side by side.

Each rule's ``fwd`` is the NumPy function itself, ``tan`` and ``bwd`` are NumPy code that
tapegrad can trace (so hvp differentiates the adjoint; see ``calls.py``). Stacks of matrices
(``(..., n, n)``) work wherever NumPy's do.

Symmetric inputs: ``cholesky`` and ``eigh`` read one triangle only (the lower one by default),
exactly as LAPACK does. Their rules are the derivatives of *that* function: the tangent uses
the symmetric matrix built from the lower triangle of A_dot, and the adjoint is
tril(S + S^T, -1) + diag(S) for the symmetric gradient S, so finite differences in any entry of
A agree with them.

Rules assume what makes the function differentiable: det/slogdet/solve/inv a nonsingular
matrix, eigh distinct eigenvalues, svd distinct nonzero singular values, qr full column rank
(m >= n), pinv constant rank.
"""
import math
import operator

import numpy as np

from .calls import CallRule, register, call, Inv
from . import base as _rules, registry
from ..tracing.tracer import Tracer, value_of, _as_float_array
from ..errors import TapegradValueError, UnsupportedError

RULES = {}     # numpy function -> the rule class its registry entry names


def _T(x):
    return np.swapaxes(x, -1, -2)


def _shape(x):
    return tuple(np.shape(value_of(x)))


def _eye(n):
    return np.eye(n)


def _diag_embed(v):
    """(..., n) -> (..., n, n) diagonal matrices."""
    n = np.shape(value_of(v))[-1]
    return v[..., None] * _eye(n)


def _diagonal(X):
    return np.diagonal(X, 0, -2, -1)


def _sym_from_lower(X):
    """The symmetric matrix whose lower triangle is X's (what LAPACK reads with UPLO='L')."""
    return np.tril(X) + _T(np.tril(X, -1))


def _lower_adjoint(S):
    """Adjoint w.r.t. the entries of A that are read (lower triangle), from <S, A_dot_sym>."""
    n = _shape(S)[-1]
    return np.tril(S + _T(S), -1) + S * _eye(n)


def _rule(*funcs):
    def deco(cls):
        register(cls)
        for f in funcs:
            RULES[f] = cls
        return cls
    return deco


def _square(name, a):
    s = _shape(a)
    if len(s) < 2 or s[-1] != s[-2]:
        raise np.linalg.LinAlgError(f"{name}: last 2 dimensions of the array must be square")
    return s


# ------------------------------------------------------------------ det, slogdet
@_rule(np.linalg.det)
class Det(CallRule):
    """y = det A; y_dot = y tr(A^-1 A_dot); A_bar = y_bar y A^-T (Giles 2008, sec. 3.1)."""
    name = "det"

    def __init__(self, in_shapes, out_shapes=None):
        super().__init__(in_shapes, [tuple(in_shapes[0][:-2])])

    def fwd(self, A):
        return [np.linalg.det(A)]

    def tan(self, xs, ys, xdots):
        return [ys[0] * np.trace(np.linalg.solve(xs[0], xdots[0]), axis1=-2, axis2=-1)]

    def bwd(self, xs, ys, ybars):
        return [(ybars[0] * ys[0])[..., None, None] * _T(np.linalg.inv(xs[0]))]


@_rule(np.linalg.slogdet)
class LogAbsDet(CallRule):
    """y = log|det A|; y_dot = tr(A^-1 A_dot); A_bar = y_bar A^-T (Giles 2008, sec. 3.1)."""
    name = "logabsdet"

    def __init__(self, in_shapes, out_shapes=None):
        super().__init__(in_shapes, [tuple(in_shapes[0][:-2])])

    def fwd(self, A):
        return [np.linalg.slogdet(A)[1]]

    def tan(self, xs, ys, xdots):
        return [np.trace(np.linalg.solve(xs[0], xdots[0]), axis1=-2, axis2=-1)]

    def bwd(self, xs, ys, ybars):
        return [ybars[0][..., None, None] * _T(np.linalg.inv(xs[0]))]


_SlogdetResult = type(np.linalg.slogdet(np.eye(1)))


def _det(a):
    return call(Det([_square("det", a)]), a)


def _slogdet(a):
    s = _square("slogdet", a)
    sign = np.linalg.slogdet(value_of(a))[0]   # piecewise constant: no derivative
    return _SlogdetResult(sign, call(LogAbsDet([s]), a))


# ------------------------------------------------------------------ solve
@_rule(np.linalg.solve)
class Solve(CallRule):
    """X = A^-1 B; X_dot = A^-1 (B_dot - A_dot X); B_bar = A^-T X_bar, A_bar = -B_bar X^T
    (Giles 2008, sec. 3.1)."""
    name = "solve"

    def __init__(self, in_shapes, out_shapes=None):
        super().__init__(in_shapes, [in_shapes[1]])

    def fwd(self, A, B):
        return [np.linalg.solve(A, B)]

    def tan(self, xs, ys, xdots):
        A, X = xs[0], ys[0]
        rhs = 0.0
        if xdots[1] is not None:
            rhs = xdots[1]
        if xdots[0] is not None:
            rhs = rhs - xdots[0] @ X
        return [np.linalg.solve(A, rhs * np.ones(self.out_shapes[0]) if np.ndim(rhs) == 0 else rhs)]

    def bwd(self, xs, ys, ybars):
        Bbar = np.linalg.solve(_T(xs[0]), ybars[0])
        return [-(Bbar @ _T(ys[0])), Bbar]


def _solve(a, b):
    sa = _square("solve", a)
    sb = _shape(b)
    vec = len(sb) == 1
    if vec:
        b = _rules.reshape(b, sb + (1,))
        sb = sb + (1,)
    batch = np.broadcast_shapes(sa[:-2], sb[:-2])
    if sa[:-2] != batch:
        a = _rules.broadcast_to(a, batch + sa[-2:])
    if sb[:-2] != batch:
        b = _rules.broadcast_to(b, batch + sb[-2:])
    x = call(Solve([batch + sa[-2:], batch + sb[-2:]]), a, b)
    return _rules.reshape(x, _shape(x)[:-1]) if vec else x


# ------------------------------------------------------------------ cholesky
@_rule(np.linalg.cholesky)
class Cholesky(CallRule):
    """A = L L^T. With Phi(X) = tril(X) with halved diagonal (Murray 2016, "Differentiation of
    the Cholesky decomposition", eqs. 8-10): L_dot = L Phi(L^-1 A_dot L^-T);
    S = L^-T Phi(L^T L_bar) L^-1 and A_bar = sym(S) (here: on the lower triangle LAPACK reads)."""
    name = "cholesky"

    def __init__(self, in_shapes, out_shapes=None):
        super().__init__(in_shapes, in_shapes)

    def fwd(self, A):
        return [np.linalg.cholesky(A)]

    @staticmethod
    def _phi(X):
        n = _shape(X)[-1]
        return np.tril(X) - 0.5 * (X * _eye(n))

    def tan(self, xs, ys, xdots):
        L = ys[0]
        Li = np.linalg.inv(L)
        M = Li @ _sym_from_lower(xdots[0]) @ _T(Li)
        return [L @ self._phi(M)]

    def bwd(self, xs, ys, ybars):
        L = ys[0]
        Li = np.linalg.inv(L)
        S = _T(Li) @ self._phi(_T(L) @ ybars[0]) @ Li
        return [_lower_adjoint(0.5 * (S + _T(S)))]


def _cholesky(a, /, *, upper=False):
    s = _square("cholesky", a)
    if upper:  # LAPACK reads the upper triangle: the lower one of A^T
        return _T(call(Cholesky([s]), _T(a)))
    return call(Cholesky([s]), a)


# ------------------------------------------------------------------ eigh
@_rule(np.linalg.eigh, np.linalg.eigvalsh)
class Eigh(CallRule):
    """A = V diag(w) V^T, symmetric A (Giles 2008, sec. 3.1): with Ah = V^T A_dot V and
    F_ij = 1 / (w_j - w_i) (0 on the diagonal), w_dot = diag(Ah), V_dot = V (F o Ah);
    A_bar = V (diag(w_bar) + F o (V^T V_bar)) V^T, symmetrized onto the triangle LAPACK reads
    (``uplo`` "L" or "U", NumPy's UPLO: LAPACK is called with it, so the eigenvectors' signs
    are NumPy's)."""
    name = "eigh"

    def __init__(self, in_shapes, out_shapes=None, vectors=True, uplo="L"):
        s = tuple(in_shapes[0])
        uplo = str(uplo)
        if uplo not in ("L", "U"):
            raise TapegradValueError(f"eigh rule: uplo {uplo!r}")
        outs = [s[:-1], s] if vectors else [s[:-1]]
        super().__init__(in_shapes, outs, vectors=bool(vectors), uplo=uplo)
        self.vectors, self.uplo = bool(vectors), uplo

    def fwd(self, A):
        if self.vectors:
            w, V = np.linalg.eigh(A, UPLO=self.uplo)
            return [w, V]
        return [np.linalg.eigvalsh(A, UPLO=self.uplo)]

    @staticmethod
    def _F(w):
        n = _shape(w)[-1]
        I = _eye(n)
        E = w[..., None, :] - w[..., :, None]
        return (1.0 - I) / (E + I)

    def _wv(self, xs, ys):
        if self.vectors:
            return ys[0], ys[1]
        w, V = np.linalg.eigh(xs[0], UPLO=self.uplo)
        return w, V

    def _sym(self, X):
        return _sym_from_lower(X) if self.uplo == "L" else _sym_from_lower(_T(X))

    def tan(self, xs, ys, xdots):
        w, V = self._wv(xs, ys)
        Ah = _T(V) @ self._sym(xdots[0]) @ V
        wdot = _diagonal(Ah)
        if not self.vectors:
            return [wdot]
        return [wdot, V @ (self._F(w) * Ah)]

    def bwd(self, xs, ys, ybars):
        w, V = self._wv(xs, ys)
        inner = _diag_embed(ybars[0])
        if self.vectors:
            inner = inner + self._F(w) * (_T(V) @ ybars[1])
        S = V @ inner @ _T(V)
        G = _lower_adjoint(0.5 * (S + _T(S)))
        return [G if self.uplo == "L" else _T(G)]


_EighResult = type(np.linalg.eigh(np.eye(1)))


def _uplo(UPLO):
    if UPLO not in ("L", "U"):
        raise TapegradValueError("UPLO argument must be 'L' or 'U'")
    return UPLO


def _eigh(a, UPLO="L"):
    s = _square("eigh", a)
    w, V = call(Eigh([s], uplo=_uplo(UPLO)), a)
    return _EighResult(w, V)


def _eigvalsh(a, UPLO="L"):
    s = _square("eigvalsh", a)
    return call(Eigh([s], vectors=False, uplo=_uplo(UPLO)), a)


# ------------------------------------------------------------------ svd
@_rule(np.linalg.svd)
class SVD(CallRule):
    """Reduced A = U diag(s) V^T (Townsend 2016, "Differentiating the singular value
    decomposition"). dP = U^T A_dot V, F_ij = 1/(s_j^2 - s_i^2): s_dot = diag(dP),
    U_dot = U (F o (dP S + S dP^T)) + (I - U U^T) A_dot V S^-1,
    V_dot = V (F o (S dP + dP^T S)) + (I - V V^T) A_dot^T U S^-1;
    A_bar = U [(F o (U^T U_bar - U_bar^T U)) S + diag(s_bar) + S (F o (V^T V_bar - V_bar^T V))] V^T
            + (I - U U^T) U_bar S^-1 V^T + U S^-1 V_bar^T (I - V V^T)."""
    name = "svd"

    def __init__(self, in_shapes, out_shapes=None, uv=True):
        s = tuple(in_shapes[0])
        m, n = s[-2:]
        k = min(m, n)
        b = s[:-2]
        outs = [b + (m, k), b + (k,), b + (k, n)] if uv else [b + (k,)]
        super().__init__(in_shapes, outs, uv=bool(uv))
        self.uv = bool(uv)

    def fwd(self, A):
        if self.uv:
            U, s, Vh = np.linalg.svd(A, full_matrices=False)
            return [U, s, Vh]
        return [np.linalg.svd(A, compute_uv=False)]

    def _usv(self, xs, ys):
        if self.uv:
            return ys
        return list(np.linalg.svd(xs[0], full_matrices=False))

    @staticmethod
    def _F(s):
        k = _shape(s)[-1]
        I = _eye(k)
        s2 = s * s
        E = s2[..., None, :] - s2[..., :, None]
        return (1.0 - I) / (E + I)

    def tan(self, xs, ys, xdots):
        U, s, Vh = self._usv(xs, ys)
        V = _T(Vh)
        dA = xdots[0]
        dP = _T(U) @ dA @ V
        ds = _diagonal(dP)
        if not self.uv:
            return [ds]
        m, n = self.in_shapes[0][-2:]
        F = self._F(s)
        srow = s[..., None, :]          # multiplies column j by s_j (X S)
        scol = s[..., :, None]          # multiplies row i by s_i (S X)
        dPS = dP * srow
        SdP = dP * scol
        dU = U @ (F * (dPS + _T(dPS)))
        dV = V @ (F * (SdP + _T(SdP)))
        if m > k_(m, n):
            dAV = dA @ V
            dU = dU + (dAV - U @ (_T(U) @ dAV)) / srow
        if n > k_(m, n):
            dAtU = _T(dA) @ U
            dV = dV + (dAtU - V @ (_T(V) @ dAtU)) / srow
        return [dU, ds, _T(dV)]

    def bwd(self, xs, ys, ybars):
        U, s, Vh = self._usv(xs, ys)
        V = _T(Vh)
        if not self.uv:
            return [U @ (_diag_embed(ybars[0]) @ Vh)]
        Ub, sb, Vhb = ybars
        Vb = _T(Vhb)
        m, n = self.in_shapes[0][-2:]
        F = self._F(s)
        srow = s[..., None, :]
        scol = s[..., :, None]
        UtUb = _T(U) @ Ub
        VtVb = _T(V) @ Vb
        inner = ((F * (UtUb - _T(UtUb))) * srow + _diag_embed(sb)
                 + (F * (VtVb - _T(VtVb))) * scol)
        Ab = U @ inner @ Vh
        if m > k_(m, n):
            Ab = Ab + ((Ub - U @ UtUb) / srow) @ Vh
        if n > k_(m, n):
            Ab = Ab + U @ _T((Vb - V @ VtVb) / srow)
        return [Ab]


def k_(m, n):
    return min(m, n)


_SVDResult = type(np.linalg.svd(np.eye(1)))


def _svd(a, full_matrices=True, compute_uv=True, hermitian=False):
    s = _shape(a)
    if len(s) < 2:
        raise np.linalg.LinAlgError("svd: array must be at least two-dimensional")
    if not compute_uv:
        return call(SVD([s], uv=False), a)
    if full_matrices and s[-1] != s[-2]:
        raise UnsupportedError(
            "np.linalg.svd(full_matrices=True) of a non-square traced matrix: the extra singular "
            "vectors are not unique, so they have no derivative. Use full_matrices=False.")
    U, sv, Vh = call(SVD([s]), a)
    return _SVDResult(U, sv, Vh)


def _svdvals(x, /):
    return call(SVD([_shape(x)], uv=False), x)


# ------------------------------------------------------------------ qr
@_rule(np.linalg.qr)
class QR(CallRule):
    """Reduced A = Q R for m >= n (Walter & Lehmann 2018, "Algorithmic differentiation of linear
    algebra functions with application in optimum experimental design"; Liao et al. 2019,
    "Differentiable programming tensor networks", eq. for QR). C = Q^T A_dot R^-1,
    Omega = tril(C, -1) - tril(C, -1)^T: R_dot = (C - Omega) R, Q_dot = Q (Omega - C) + A_dot R^-1;
    M = R R_bar^T - Q_bar^T Q, A_bar = (Q_bar + Q copyltu(M)) R^-T, copyltu(M) = tril(M) + tril(M, -1)^T."""
    name = "qr"

    def __init__(self, in_shapes, out_shapes=None):
        s = tuple(in_shapes[0])
        m, n = s[-2:]
        super().__init__(in_shapes, [s[:-2] + (m, n), s[:-2] + (n, n)])

    def fwd(self, A):
        Q, R = np.linalg.qr(A)
        return [Q, R]

    def tan(self, xs, ys, xdots):
        Q, R = ys
        dARi = xdots[0] @ np.linalg.inv(R)
        C = _T(Q) @ dARi
        low = np.tril(C, -1)
        Om = low - _T(low)
        return [Q @ (Om - C) + dARi, (C - Om) @ R]

    def bwd(self, xs, ys, ybars):
        Q, R = ys
        Qb, Rb = ybars
        M = R @ _T(Rb) - _T(Qb) @ Q
        copyltu = np.tril(M) + _T(np.tril(M, -1))
        return [(Qb + Q @ copyltu) @ _T(np.linalg.inv(R))]


_QRResult = type(np.linalg.qr(np.eye(1)))


def qr_check(s, mode, what=""):
    """The shapes and modes the qr rules differentiate (what: "complex " for complex ones)."""
    if len(s) < 2:
        raise np.linalg.LinAlgError(f"np.linalg.qr: array must be at least two-dimensional, got "
                                    f"shape {s}")
    m, n = s[-2:]
    if m < n:
        raise UnsupportedError(f"np.linalg.qr of a traced wide {what}matrix (m < n): not "
                               "differentiable in this form; use qr of the "
                               f"{'conjugate ' if what else ''}transpose (an LQ factorization)")
    if mode not in ("reduced", "complete", "r"):
        raise UnsupportedError(f"np.linalg.qr(mode={mode!r}) on traced {what}arrays")
    if mode == "complete" and m != n:
        raise UnsupportedError("np.linalg.qr(mode='complete') of a tall traced matrix: the extra "
                               "columns of Q are not unique; use mode='reduced'")


def _qr(a, mode="reduced"):
    s = _shape(a)
    qr_check(s, mode)
    Q, R = call(QR([s]), a)
    return R if mode == "r" else _QRResult(Q, R)


# ------------------------------------------------------------------ pinv, lstsq
@_rule(np.linalg.pinv)
class Pinv(CallRule):
    """Y = A^+ at constant rank (Golub & Pereyra 1973, "The differentiation of pseudo-inverses",
    eq. 4.12): Y_dot = -Y A_dot Y + Y Y^T A_dot^T (I - A Y) + (I - Y A) A_dot^T Y^T Y;
    A_bar = -Y^T Y_bar Y^T + (I - A Y) Y_bar^T Y Y^T + Y^T Y Y_bar^T (I - Y A)."""
    name = "pinv"

    def __init__(self, in_shapes, out_shapes=None, rcond=None):
        s = tuple(in_shapes[0])
        super().__init__(in_shapes, [s[:-2] + (s[-1], s[-2])],
                         rcond=None if rcond is None else float(rcond))
        self.rcond = rcond

    def fwd(self, A):
        if self.rcond is None:
            return [np.linalg.pinv(A)]
        return [np.linalg.pinv(A, rcond=self.rcond)]

    def tan(self, xs, ys, xdots):
        A, Y, dA = xs[0], ys[0], xdots[0]
        m, n = self.in_shapes[0][-2:]
        dAt = _T(dA)
        return [-(Y @ dA @ Y) + Y @ (_T(Y) @ (dAt @ (_eye(m) - A @ Y)))
                + (_eye(n) - Y @ A) @ (dAt @ (_T(Y) @ Y))]

    def bwd(self, xs, ys, ybars):
        A, Y, Yb = xs[0], ys[0], ybars[0]
        m, n = self.in_shapes[0][-2:]
        Ybt = _T(Yb)
        return [-(_T(Y) @ Yb @ _T(Y)) + (_eye(m) - A @ Y) @ (Ybt @ (Y @ _T(Y)))
                + (_T(Y) @ Y) @ (Ybt @ (_eye(n) - Y @ A))]


def _pinv(a, rcond=None, hermitian=False, **kw):
    s = _shape(a)
    if len(s) < 2:
        raise np.linalg.LinAlgError("pinv: array must be at least two-dimensional")
    if kw.get("rtol") not in (None, np._NoValue) and rcond is None:
        rcond = kw["rtol"]
    return call(Pinv([s], rcond=value_of(rcond) if rcond is not None else None), a)


_LstsqResult = None


def _lstsq_rank(sv, shape, rcond):
    """(rank, cutoff ratio) of np.linalg.lstsq from the singular values sv of a: those above
    cutoff * max(sv) count (LAPACK's gelsd; rcond None: eps * max(m, n), negative: eps). With
    traced singular values the comparison is guarded, so a replay at a point of another rank
    records again (the rank, the residuals' presence and pinv's derivative change with it)."""
    eps = np.finfo(np.float64).eps
    cut = max(shape) * eps if rcond is None else float(value_of(rcond))
    cut = eps if cut < 0 else cut
    if not min(shape):
        return 0, cut
    kept = _rules._guarded_value(sv > cut * np.max(sv))
    return int(np.count_nonzero(kept)), cut


def _lstsq(a, b, rcond=None):
    """x = pinv(a) b at lstsq's cutoff (full column rank: the least-squares solution);
    residuals and rank as NumPy gives them."""
    for z in (a, b):    # a complex a or b raises ComplexOperand: the complex rule (complex_linalg.py)
        if type(z) is not Tracer:
            _as_float_array(z)
    av = value_of(a)
    m, n = np.shape(av)
    sv = np.linalg.svd(a, compute_uv=False)
    rank, cut = _lstsq_rank(sv, (m, n), rcond)
    x = _pinv(a, rcond=cut) @ b
    if rank == n and m > n:
        r = a @ x - b
        res = np.sum(r * r, axis=0)
        res = _rules.reshape(res, (1,)) if np.ndim(value_of(res)) == 0 else res
    else:
        res = np.zeros(0)
    return x, res, rank, sv


def _any_shape(x):
    """The shape of a real or complex traced value or of a constant."""
    return tuple(x.shape) if hasattr(x, "shape") else np.shape(x)


def _tensorsolve(a, b, axes=None):
    """np.linalg.tensorsolve as NumPy computes it (axes of a moved to the end, a reshaped to a
    square matrix, one solve), written with np.* calls so that real and complex traced values
    (rules/complex_linalg.py) share it."""
    sa, sb = _any_shape(a), _any_shape(b)
    if axes is not None:
        order = list(range(len(sa)))
        for k in axes:
            k = operator.index(k) % len(sa) if -len(sa) <= operator.index(k) < len(sa) else None
            if k is None or k not in order:
                raise TapegradValueError(f"np.linalg.tensorsolve: axes={tuple(axes)} are not distinct "
                                         f"axes of a with shape {sa}")
            order.remove(k)
            order.append(k)
        a, sa = np.transpose(a, order), tuple(sa[k] for k in order)
    xs = sa[len(sb):]
    nb, nx = math.prod(sb), math.prod(xs)
    if sa[:len(sb)] != sb or nb != nx:
        raise TapegradValueError(f"np.linalg.tensorsolve: a with shape {sa} does not fit b with shape "
                                 f"{sb} (a.shape must start with b.shape, and prod(a.shape[b.ndim:]) "
                                 "== prod(b.shape))")
    x = np.linalg.solve(np.reshape(a, (nb, nx)), np.reshape(b, (nb,)))
    return np.reshape(x, xs)


def _tensorinv(a, ind=2):
    """np.linalg.tensorinv: the inverse of a reshaped to a square matrix (real or complex)."""
    sa, ind = _any_shape(a), operator.index(ind)
    if ind <= 0:
        raise TapegradValueError(f"np.linalg.tensorinv: invalid ind argument {ind} (must be positive)")
    n = math.prod(sa[:ind])
    if n != math.prod(sa[ind:]):
        raise TapegradValueError(f"np.linalg.tensorinv: a with shape {sa} and ind={ind} is not square "
                                 f"(prod(a.shape[:ind]) = {n}, prod(a.shape[ind:]) = {math.prod(sa[ind:])})")
    return np.reshape(np.linalg.inv(np.reshape(a, (n, n))), sa[ind:] + sa[:ind])


def _cond(x, p=None):
    """np.linalg.cond: the ratio of extreme singular values (p None, 2, -2), else
    norm(x, p) * norm(inv(x), p), as NumPy computes it; real or complex x."""
    if p is None or p == 2 or p == -2:
        s = np.linalg.svd(x, compute_uv=False)
        r = np.max(s, axis=-1) / np.min(s, axis=-1)
        return r if p != -2 else 1.0 / r
    return np.linalg.norm(x, p, (-2, -1)) * np.linalg.norm(np.linalg.inv(x), p, (-2, -1))


_FUNCTIONS = [
    (np.linalg.det, _det), (np.linalg.slogdet, _slogdet), (np.linalg.solve, _solve),
    (np.linalg.cholesky, _cholesky), (np.linalg.eigh, _eigh), (np.linalg.eigvalsh, _eigvalsh),
    (np.linalg.svd, _svd), (np.linalg.qr, _qr), (np.linalg.pinv, _pinv), (np.linalg.lstsq, _lstsq),
    (np.linalg.tensorsolve, _tensorsolve), (np.linalg.tensorinv, _tensorinv),
]
if hasattr(np.linalg, "svdvals"):
    _FUNCTIONS.append((np.linalg.svdvals, _svdvals))
    RULES[np.linalg.svdvals] = SVD
RULES[np.linalg.lstsq] = Pinv
for _f, _fn in _FUNCTIONS:
    if _f in RULES:
        registry.register(_f, _fn, "rule", rule_class=RULES[_f])
    else:
        registry.register(_f, _fn, "composition")
