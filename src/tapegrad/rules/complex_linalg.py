"""numpy.linalg on complex matrices: Python rules on packed (re, im) pairs (see docs/complex.md).

Each rule takes and returns real arrays of shape (2, ...) holding (Re, Im) (``complex._pack``),
so it is one OP_CALL on the float64 tape like the real rules of ``linalg.py``. Inside, ``fwd`` is
NumPy's own complex function; ``tan`` and ``bwd`` are written with complex NumPy calls that
tapegrad traces (``complex._unpack`` gives a ComplexTracer when the pair is traced), so the
tangent of the adjoint (hvp, forward over reverse) and nested derivatives are traced as in
``calls.CallRule.tor``. Adjoints are under the real inner product of the pairs,
<U, V> = Re sum conj(U) V: the adjoint of a complex-linear map is its conjugate transpose.

Hermitian inputs (cholesky, eigh): LAPACK reads the lower triangle and the real part of the
diagonal, so the rules differentiate exactly that function (``_herm_lower``), as the real rules
do for the lower triangle.

Phases: the eigenvectors of ``eigh`` and the singular vectors of ``svd`` are fixed only up to a
phase per column (LAPACK documents none). A loss that depends on those phases has no derivative;
it shows as a nonzero imaginary diagonal of V^H V_bar (for svd: of U^H U_bar + V^H V_bar), and
the adjoint raises a TypeError then instead of returning a number. ``eig`` follows LAPACK's
documented normalization (unit 2-norm, largest component real: ?geev), so its rule is the
derivative of exactly what NumPy returns, phases included.

``pinv`` is a rule as well (``CPinv``); ``lstsq``, ``norm`` and ``matrix_power`` are
compositions of traced complex operations (pinv, svd, inv, matrix products, |z|) and of the
real rules (the real norm of |z|).
"""
import operator

import numpy as np

from ..tracing.tracer import Tracer, value_of
from ..errors import TapegradTypeError, TapegradValueError, UnsupportedError
from . import registry as _registry
from .calls import CallRule, register as _register_rule, call as _call
from .complex import parts, _pack, _unpack, _mm, _matrix, FUNCTIONS as _COMPLEX_FUNCTIONS
from . import linalg as _linalg


def _outs(out):
    return list(out) if isinstance(out, tuple) else [out]


def _H(X):
    """Conjugate transpose of the last two axes."""
    return np.conj(np.swapaxes(X, -1, -2))


def _diagonal(X):
    return np.diagonal(X, 0, -2, -1)


def _diag_embed(v):
    n = np.shape(value_of(parts(v)[0]))[-1]
    return v[..., None] * np.eye(n)


def _col(v):
    """(..., n) -> (..., 1, n): multiplies column j by v_j."""
    return v[..., None, :]


def _row(v):
    """(..., n) -> (..., n, 1): multiplies row i by v_i."""
    return v[..., :, None]


def _herm_lower(X):
    """The Hermitian matrix LAPACK reads from X: its strict lower triangle, mirrored and
    conjugated, and the real part of its diagonal."""
    L = np.tril(X, -1)
    return L + _H(L) + _diag_embed(np.real(_diagonal(X)))


def _herm_lower_adjoint(S):
    """The adjoint of _herm_lower: Re<S, _herm_lower(dX)> = Re<result, dX> for every dX."""
    return np.tril(S + _H(S), -1) + _diag_embed(np.real(_diagonal(S)))


def _shape(x):
    return tuple(np.shape(value_of(parts(x)[0])))


def _square(name, a):
    s = _shape(a)
    if len(s) < 2 or s[-1] != s[-2]:
        raise np.linalg.LinAlgError(f"np.linalg.{name}: last 2 dimensions of the array must be square, "
                                    f"got shape {s}")
    return s


def _pair_shape(name, in_shapes, square=True, n_in=1):
    s = tuple(int(k) for k in in_shapes[0])
    if len(in_shapes) != n_in or len(s) < 3 or s[0] != 2 or (square and s[-1] != s[-2]):
        raise TapegradValueError(f"{name} rule: shapes {in_shapes}")
    return s


def _apply(rule, *ps):
    return _outs(_call(rule, *ps))


def _value(z):
    re, im = parts(z)
    return value_of(re) + (0.0 if im is None else 1j * value_of(im))


def _phase_check(name, g, *Xs):
    """A loss that depends on the arbitrary phases of the columns has no derivative: g, the
    imaginary diagonal of V^H V_bar, must vanish relative to the size of the Xs (V^H V_bar and
    the cotangents of the values), and above roundoff: nested derivatives can send these rules
    cotangents that are zero up to rounding (1e-16), whose phase part is rounding too."""
    g = np.abs(value_of(g))
    scale = max(np.max(np.abs(_value(X)), initial=0.0) for X in Xs)
    if g.size and np.max(g) > 1e-6 * scale and np.max(g) > 1e-12:
        raise TapegradTypeError(
            f"np.linalg.{name}: the loss depends on the phases of the complex {name} vectors, which "
            "are arbitrary (each column is defined only up to a factor e^{i phi}), so it has no "
            f"derivative (imaginary diagonal of V^H V_bar up to {np.max(g):.3g}); use a phase-invariant "
            "loss (|V|^2, V diag(f(w)) V^H, ...)")


# ------------------------------------------------------------------ det, slogdet
@_register_rule
class CDet(CallRule):
    """det A (kind "det") or slogdet A (kind "slogdet": the complex sign and the real log|det A|)
    of complex n x n matrices (..., n, n), on packed pairs. With t = tr(A^-1 A_dot) (Giles 2008,
    sec. 3.1): det_dot = det t; logabsdet_dot = Re t, sign_dot = i sign Im t. Adjoint: A_bar =
    t_bar A^-H, t_bar = det_bar conj(det), resp. logabsdet_bar + i Re(conj(sign_bar) i sign)."""

    name = "cdet"

    def __init__(self, in_shapes, out_shapes=None, kind="det"):
        s = _pair_shape("cdet", in_shapes)
        kind = str(kind)
        if kind not in ("det", "slogdet"):
            raise TapegradValueError(f"cdet rule: kind {kind!r}")
        b = s[1:-2]
        super().__init__(in_shapes, [(2,) + b] if kind == "det" else [(2,) + b, b], kind=kind)
        self.kind = kind

    def fwd(self, Ap):
        if type(Ap) is Tracer:
            return _apply(self, Ap)
        A = _matrix(Ap)
        if self.kind == "det":
            d = np.asarray(np.linalg.det(A)) + 0j
            return [np.stack([d.real, d.imag])]
        sign, la = np.linalg.slogdet(A)
        sign = np.asarray(sign) + 0j
        return [np.stack([sign.real, sign.imag]), np.asarray(la, dtype=np.float64)]

    def tan(self, xs, ys, xdots):
        t = np.trace(np.linalg.solve(_unpack(xs[0]), _unpack(xdots[0])), axis1=-2, axis2=-1)
        if self.kind == "det":
            return [_pack(_unpack(ys[0]) * t)]
        return [_pack(1j * _unpack(ys[0]) * np.imag(t)), np.real(t)]

    def bwd(self, xs, ys, ybars):
        y = _unpack(ys[0])
        if self.kind == "det":
            tb = _unpack(ybars[0]) * np.conj(y)
        else:
            # Re(conj(sb) i sign Im t) + lb Re t = Re(conj(tb) t) with tb = lb - i Im(conj(sb) sign)
            tb = ybars[1] - 1j * np.imag(np.conj(_unpack(ybars[0])) * y)
        return [_pack(tb[..., None, None] * _H(np.linalg.inv(_unpack(xs[0]))))]


_SlogdetResult = type(np.linalg.slogdet(np.eye(1)))


def _cdet(a):
    _square("det", a)
    Ap = _pack(a)
    return _unpack(_apply(CDet([np.shape(value_of(Ap))]), Ap)[0])


def _cslogdet(a):
    _square("slogdet", a)
    Ap = _pack(a)
    sign, la = _apply(CDet([np.shape(value_of(Ap))], kind="slogdet"), Ap)
    return _SlogdetResult(_unpack(sign), la)


# ------------------------------------------------------------------ cholesky
def _phi(X):
    """tril(X) with the diagonal halved (Murray 2016, eq. 9)."""
    return np.tril(X) - 0.5 * _diag_embed(_diagonal(X))


@_register_rule
class CCholesky(CallRule):
    """A = L L^H for Hermitian positive definite A (read from its lower triangle). With
    Phi(X) = tril(X) with halved diagonal (Murray 2016, "Differentiation of the Cholesky
    decomposition", eqs. 8-10, with conjugate transposes): L_dot = L Phi(L^-1 H(A_dot) L^-H);
    S = L^-H herm(Phi(L^H L_bar)) L^-1 and A_bar = the adjoint of H at S (herm(X) = (X + X^H)/2,
    H(X) the Hermitian matrix of X's lower triangle and real diagonal, as LAPACK reads it)."""

    name = "ccholesky"

    def __init__(self, in_shapes, out_shapes=None):
        _pair_shape("ccholesky", in_shapes)
        super().__init__(in_shapes, in_shapes)

    def fwd(self, Ap):
        if type(Ap) is Tracer:
            return _apply(self, Ap)
        L = np.linalg.cholesky(Ap[0] + 1j * Ap[1])
        return [np.stack([L.real, L.imag])]

    def tan(self, xs, ys, xdots):
        L = _unpack(ys[0])
        Li = np.linalg.inv(L)
        X = _mm(_mm(Li, _herm_lower(_unpack(xdots[0]))), _H(Li))
        # the diagonal of X is real (X is Hermitian): drop its rounding
        X = X - 1j * _diag_embed(np.imag(_diagonal(X)))
        return [_pack(_mm(L, _phi(X)))]

    def bwd(self, xs, ys, ybars):
        L = _unpack(ys[0])
        Li = np.linalg.inv(L)
        P = _phi(_mm(_H(L), _unpack(ybars[0])))
        S = _mm(_mm(_H(Li), 0.5 * (P + _H(P))), Li)
        return [_pack(_herm_lower_adjoint(S))]


def _ccholesky(a, /, *, upper=False):
    _square("cholesky", a)
    if upper:   # LAPACK reads the upper triangle of A: the lower one of A^H; U = L^H
        return _H(_ccholesky(_H(a)))
    Ap = _pack(a)
    return _unpack(_apply(CCholesky([np.shape(value_of(Ap))]), Ap)[0])


# ------------------------------------------------------------------ eigh, eigvalsh
def _gap_inverse(w):
    """F_ij = 1 / (w_j - w_i), 0 on the diagonal."""
    n = np.shape(value_of(parts(w)[0]))[-1]
    I = np.eye(n)
    return (1.0 - I) / (_col(w) - _row(w) + I)


@_register_rule
class CEigh(CallRule):
    """A = V diag(w) V^H for Hermitian A (read from its lower triangle; Giles 2008, sec. 3.1 with
    conjugate transposes): with Ah = V^H H(A_dot) V and F_ij = 1 / (w_j - w_i), w_dot = Re diag(Ah),
    V_dot = V (F o Ah) (the phase gauge diag(V^H V_dot) = 0); A_bar = adjoint of H at
    V (diag(w_bar) + F o (V^H V_bar)) V^H. The phase-dependent part of a loss is the imaginary
    diagonal of V^H V_bar: it must vanish (else a TypeError). ``uplo`` "U": H reads the upper
    triangle (H_U(X) = H(X^H)), as NumPy's UPLO="U"."""

    name = "ceigh"

    def __init__(self, in_shapes, out_shapes=None, vectors=True, uplo="L"):
        s = _pair_shape("ceigh", in_shapes)
        uplo = str(uplo)
        if uplo not in ("L", "U"):
            raise TapegradValueError(f"ceigh rule: uplo {uplo!r}")
        super().__init__(in_shapes, [s[1:-1], s] if vectors else [s[1:-1]], vectors=bool(vectors),
                         uplo=uplo)
        self.vectors, self.uplo = bool(vectors), uplo

    def fwd(self, Ap):
        if type(Ap) is Tracer:
            return _apply(self, Ap)
        A = Ap[0] + 1j * Ap[1]
        if not self.vectors:
            return [np.linalg.eigvalsh(A, UPLO=self.uplo)]
        w, V = np.linalg.eigh(A, UPLO=self.uplo)
        return [w, np.stack([V.real, V.imag])]

    def _wv(self, xs, ys):
        if self.vectors:
            return ys[0], _unpack(ys[1])
        w, V = np.linalg.eigh(_unpack(xs[0]), UPLO=self.uplo)     # traced when xs are: the vectors rule
        return w, V

    def _herm(self, X):
        return _herm_lower(X if self.uplo == "L" else _H(X))

    def tan(self, xs, ys, xdots):
        w, V = self._wv(xs, ys)
        Ah = _mm(_mm(_H(V), self._herm(_unpack(xdots[0]))), V)
        wdot = np.real(_diagonal(Ah))
        if not self.vectors:
            return [wdot]
        return [wdot, _pack(_mm(V, _gap_inverse(w) * Ah))]

    def bwd(self, xs, ys, ybars):
        w, V = self._wv(xs, ys)
        inner = _diag_embed(ybars[0])
        if self.vectors:
            VhVb = _mm(_H(V), _unpack(ybars[1]))
            _phase_check("eigh", np.imag(_diagonal(VhVb)), VhVb, ybars[0])
            inner = inner + _gap_inverse(w) * VhVb
        G = _herm_lower_adjoint(_mm(_mm(V, inner), _H(V)))
        return [_pack(G if self.uplo == "L" else _H(G))]


_EighResult = type(np.linalg.eigh(np.eye(1)))


_uplo = _linalg._uplo     # (NumPy's UPLO, checked)


def _ceigh(a, UPLO="L"):
    _square("eigh", a)
    Ap = _pack(a)
    w, V = _apply(CEigh([np.shape(value_of(Ap))], uplo=_uplo(UPLO)), Ap)
    return _EighResult(w, _unpack(V))


def _ceigvalsh(a, UPLO="L"):
    _square("eigvalsh", a)
    Ap = _pack(a)
    return _apply(CEigh([np.shape(value_of(Ap))], vectors=False, uplo=_uplo(UPLO)), Ap)[0]


# ------------------------------------------------------------------ qr
@_register_rule
class CQR(CallRule):
    """Reduced A = Q R of a complex m x n matrix, m >= n, full column rank. LAPACK's R has a
    real diagonal (?geqrf's Householder betas are real), which fixes Q's phases. With
    C = Q^H A_dot R^-1, Q^H Q_dot = Omega is anti-Hermitian and R_dot R^-1 upper triangular with a
    real diagonal, so Omega = tril(C, -1) - tril(C, -1)^H + i Im diag(C): R_dot = (C - Omega) R,
    Q_dot = A_dot R^-1 - Q (C - Omega) (the real rule of Walter & Lehmann 2018 with conjugate
    transposes and the imaginary diagonal). Adjoint (its transpose): M = R R_bar^H - Q_bar^H Q,
    A_bar = (Q_bar + Q hl(M)) R^-H, hl(M) = tril(M, -1) + tril(M, -1)^H + Re diag(M)."""

    name = "cqr"

    def __init__(self, in_shapes, out_shapes=None):
        s = _pair_shape("cqr", in_shapes, square=False)
        m, n = s[-2:]
        if m < n:
            raise TapegradValueError(f"cqr rule: a wide matrix {s}")
        super().__init__(in_shapes, [s, s[:-2] + (n, n)])

    def fwd(self, Ap):
        if type(Ap) is Tracer:
            return _apply(self, Ap)
        Q, R = np.linalg.qr(Ap[0] + 1j * Ap[1])
        return [np.stack([Q.real, Q.imag]), np.stack([R.real, R.imag])]

    def tan(self, xs, ys, xdots):
        Q, R = _unpack(ys[0]), _unpack(ys[1])
        dARi = _H(np.linalg.solve(_H(R), _H(_unpack(xdots[0]))))     # A_dot R^-1
        C = _mm(_H(Q), dARi)
        low = np.tril(C, -1)
        CmOm = C - (low - _H(low)) - 1j * _diag_embed(np.imag(_diagonal(C)))
        return [_pack(dARi - _mm(Q, CmOm)), _pack(_mm(CmOm, R))]

    def bwd(self, xs, ys, ybars):
        Q, R = _unpack(ys[0]), _unpack(ys[1])
        Qb, Rb = _unpack(ybars[0]), _unpack(ybars[1])
        M = _mm(R, _H(Rb)) - _mm(_H(Qb), Q)
        low = np.tril(M, -1)
        hl = low + _H(low) + _diag_embed(np.real(_diagonal(M)))
        # (Q_bar + Q hl) R^-H = (R^-1 (Q_bar + Q hl)^H)^H
        return [_pack(_H(np.linalg.solve(R, _H(Qb + _mm(Q, hl)))))]


_QRResult = type(np.linalg.qr(np.eye(1)))


def _cqr(a, mode="reduced"):
    _linalg.qr_check(_shape(a), mode, "complex ")
    Ap = _pack(a)
    Q, R = _apply(CQR([np.shape(value_of(Ap))]), Ap)
    return _unpack(R) if mode == "r" else _QRResult(_unpack(Q), _unpack(R))


# ------------------------------------------------------------------ svd
@_register_rule
class CSVD(CallRule):
    """Reduced A = U diag(s) V^H of a complex m x n matrix, k = min(m, n), distinct nonzero
    singular values. dP = U^H A_dot V, F_ij = 1 / (s_j^2 - s_i^2) (0 on the diagonal): s_dot =
    Re diag(dP), U_dot = U (F o (dP S + S dP^H) + i Im diag(dP) S^-1) + (I - U U^H) A_dot V S^-1,
    V_dot = V (F o (S dP + dP^H S)) + (I - V V^H) A_dot^H U S^-1 (Townsend 2016, "Differentiating
    the singular value decomposition", with conjugate transposes; the imaginary diagonal term, the
    phase gauge, is JAX's svd_jvp rule and Wan & Zhang 2019, "Automatic differentiation for
    complex valued SVD"). Adjoint (its transpose), J = U^H U_bar, K = V^H V_bar:
    A_bar = U [(F o (J - J^H)) S + S (F o (K - K^H)) + diag(s_bar) + i Im diag(J) S^-1] V^H
            + (I - U U^H) U_bar S^-1 V^H + U S^-1 V_bar^H (I - V V^H).
    A loss that depends on the phases (U, V) -> (U e^{i phi}, V e^{i phi}) shows as a nonzero
    Im diag(J + K): a TypeError then."""

    name = "csvd"

    def __init__(self, in_shapes, out_shapes=None, uv=True):
        s = _pair_shape("csvd", in_shapes, square=False)
        b, (m, n) = s[1:-2], s[-2:]
        k = min(m, n)
        outs = [(2,) + b + (m, k), b + (k,), (2,) + b + (k, n)] if uv else [b + (k,)]
        super().__init__(in_shapes, outs, uv=bool(uv))
        self.uv, self.m, self.n, self.k = bool(uv), m, n, k

    def fwd(self, Ap):
        if type(Ap) is Tracer:
            return _apply(self, Ap)
        A = Ap[0] + 1j * Ap[1]
        if not self.uv:
            return [np.linalg.svd(A, compute_uv=False)]
        U, s, Vh = np.linalg.svd(A, full_matrices=False)
        return [np.stack([U.real, U.imag]), s, np.stack([Vh.real, Vh.imag])]

    def _usv(self, xs, ys):
        if self.uv:
            return _unpack(ys[0]), ys[1], _H(_unpack(ys[2]))
        U, s, Vh = np.linalg.svd(_unpack(xs[0]), full_matrices=False)    # traced when xs are
        return U, s, _H(Vh)

    @staticmethod
    def _F(s):
        k = np.shape(value_of(s))[-1]
        I = np.eye(k)
        s2 = s * s
        return (1.0 - I) / (_col(s2) - _row(s2) + I)

    def tan(self, xs, ys, xdots):
        U, s, V = self._usv(xs, ys)
        dA = _unpack(xdots[0])
        dP = _mm(_mm(_H(U), dA), V)
        ds = np.real(_diagonal(dP))
        if not self.uv:
            return [ds]
        F = self._F(s)
        dPS, SdP = dP * _col(s), dP * _row(s)
        dU = _mm(U, F * (dPS + _H(dPS)) + 1j * _diag_embed(np.imag(_diagonal(dP)) / s))
        dV = _mm(V, F * (SdP + _H(SdP)))
        if self.m > self.k:
            dAV = _mm(dA, V)
            dU = dU + (dAV - _mm(U, _mm(_H(U), dAV))) / _col(s)
        if self.n > self.k:
            dAhU = _mm(_H(dA), U)
            dV = dV + (dAhU - _mm(V, _mm(_H(V), dAhU))) / _col(s)
        return [_pack(dU), ds, _pack(_H(dV))]

    def bwd(self, xs, ys, ybars):
        U, s, V = self._usv(xs, ys)
        if not self.uv:
            return [_pack(_mm(U * _col(ybars[0]), _H(V)))]
        Ub, sb, Vb = _unpack(ybars[0]), ybars[1], _H(_unpack(ybars[2]))
        F = self._F(s)
        J, K = _mm(_H(U), Ub), _mm(_H(V), Vb)
        _phase_check("svd", np.imag(_diagonal(J)) + np.imag(_diagonal(K)), J, K, sb)
        inner = ((F * (J - _H(J))) * _col(s) + (F * (K - _H(K))) * _row(s) + _diag_embed(sb)
                 + 1j * _diag_embed(np.imag(_diagonal(J)) / s))
        Ab = _mm(_mm(U, inner), _H(V))
        if self.m > self.k:
            Ab = Ab + _mm((Ub - _mm(U, J)) / _col(s), _H(V))
        if self.n > self.k:
            Ab = Ab + _mm(U, _H((Vb - _mm(V, K)) / _col(s)))
        return [_pack(Ab)]


_SVDResult = type(np.linalg.svd(np.eye(1)))


def _csvd(a, full_matrices=True, compute_uv=True, hermitian=False):
    s = _shape(a)
    if len(s) < 2:
        raise np.linalg.LinAlgError(f"np.linalg.svd: array must be at least two-dimensional, got shape {s}")
    Ap = _pack(a)
    if not compute_uv:
        return _apply(CSVD([np.shape(value_of(Ap))], uv=False), Ap)[0]
    if full_matrices and s[-1] != s[-2]:
        raise UnsupportedError(
            "np.linalg.svd(full_matrices=True) of a non-square traced complex matrix: the extra "
            "singular vectors are not unique, so they have no derivative. Use full_matrices=False.")
    U, sv, Vh = _apply(CSVD([np.shape(value_of(Ap))]), Ap)
    return _SVDResult(_unpack(U), sv, _unpack(Vh))


def _csvdvals(x, /):
    return _csvd(x, compute_uv=False)


# ------------------------------------------------------------------ eig
def _largest(V):
    """The 0/1 matrix marking, in each column of V, its largest component (the one LAPACK's
    ?geev makes real): a decision on values, constant for the derivatives."""
    a = np.abs(_value(V))
    return (a == np.max(a, axis=-2, keepdims=True)) & (np.cumsum(a == np.max(a, axis=-2, keepdims=True), axis=-2) == 1)


@_register_rule
class CEig(CallRule):
    """Eigenvalues w and right eigenvectors V of (real or complex) n x n matrices (..., n, n),
    A V = V diag(w), distinct eigenvalues, V normalized as LAPACK's ?geev does: unit 2-norm and
    the largest component of each column real. With Ah = V^-1 A_dot V and F_ij = 1/(w_j - w_i)
    (0 on the diagonal): w_dot = diag(Ah), and U_dot = V (F o Ah) is the eigenvector tangent with
    diag(V^-1 U_dot) = 0 (Boeddeker et al. 2017, "On the computation of complex-valued gradients
    with application to statistically optimum beamforming", sec. 4; JAX's eig_jvp_rule). The
    normalization adds V diag(d): V_dot = U_dot + V diag(d) with
    d_j = -Re(v_j^H u_j) - i Im(u_kj / V_kj) (k the largest component of column j), which keeps
    the 2-norm and the phase of V_kj. The adjoint is its transpose:
    g = diag(V^H V_bar), U_bar = V_bar - V diag(Re g) + E (E_kj = -i Im(g_j) / conj(V_kj)),
    A_bar = V^-H (diag(w_bar) + conj(F) o (V^H U_bar)) V^H."""

    name = "ceig"

    def __init__(self, in_shapes, out_shapes=None, real=False):
        # real: the operand is a real matrix (..., n, n), not the pair (2, ..., n, n)
        self.real = bool(real)
        if self.real:
            s = tuple(int(k) for k in in_shapes[0])
            if len(in_shapes) != 1 or len(s) < 2 or s[-1] != s[-2]:
                raise TapegradValueError(f"ceig rule: shapes {in_shapes}")
            s = (2,) + s
        else:
            s = _pair_shape("ceig", in_shapes)
        super().__init__(in_shapes, [s[:-1], s], real=self.real)

    def fwd(self, Ap):
        if type(Ap) is Tracer:
            return _apply(self, Ap)
        w, V = np.linalg.eig(Ap if self.real else _matrix(Ap))
        w, V = w + 0j, V + 0j
        return [np.stack([w.real, w.imag]), np.stack([V.real, V.imag])]

    def _parts(self, ys):
        w, V = _unpack(ys[0]), _unpack(ys[1])
        return w, V, _gap_inverse(w), _largest(V) * 1.0

    def tan(self, xs, ys, xdots):
        w, V, F, P = self._parts(ys)
        Ah = _mm(np.linalg.solve(V, xdots[0] if self.real else _unpack(xdots[0])), V)
        U = _mm(V, F * Ah)
        d = (-np.real(np.sum(np.conj(V) * U, axis=-2))
             - 1j * np.imag(np.sum(P * U, axis=-2) / np.sum(P * V, axis=-2)))
        return [_pack(_diagonal(Ah)), _pack(U + V * _col(d))]

    def bwd(self, xs, ys, ybars):
        w, V, F, P = self._parts(ys)
        wb, Vb = _unpack(ybars[0]), _unpack(ybars[1])
        g = np.sum(np.conj(V) * Vb, axis=-2)
        Ub = Vb - V * _col(np.real(g)) + P * _col(-1j * np.imag(g) / np.conj(np.sum(P * V, axis=-2)))
        inner = _diag_embed(wb) + np.conj(F) * _mm(_H(V), Ub)
        # V^-H inner V^H = solve(V^H, inner V^H); a real matrix: the real part (the adjoint of
        # its embedding in the complex ones)
        G = np.linalg.solve(_H(V), _mm(inner, _H(V)))
        return [np.real(G) if self.real else _pack(G)]


_EigResult = type(np.linalg.eig(np.eye(1)))


def _eig(a):
    _square("eig", a)
    re, im = parts(a)
    if im is None and type(re) is Tracer:     # a real traced matrix: its own operand
        w, V = _apply(CEig([np.shape(value_of(re))], real=True), re)
        return _EigResult(_unpack(w), _unpack(V))
    Ap = _pack(a)
    w, V = _apply(CEig([np.shape(value_of(Ap))]), Ap)
    # always complex, also for a real matrix (NumPy returns real arrays when every eigenvalue is
    # real: a decision on values that a replay could not keep)
    return _EigResult(_unpack(w), _unpack(V))


# ------------------------------------------------------------------ pinv, lstsq
@_register_rule
class CPinv(CallRule):
    """Y = A^+ of complex m x n matrices (..., m, n) at constant rank, on packed pairs (Golub &
    Pereyra 1973, "The differentiation of pseudo-inverses and nonlinear least squares problems
    whose variables separate", eq. 4.12, with conjugate transposes; the real rule ``linalg.Pinv``):
    Y_dot = -Y A_dot Y + Y Y^H A_dot^H (I - A Y) + (I - Y A) A_dot^H Y^H Y. Adjoint under
    Re<U, V>: A_bar = -Y^H Y_bar Y^H + (I - A Y) Y_bar^H Y Y^H + Y^H Y Y_bar^H (I - Y A).
    ``rcond``: NumPy's cutoff (None: NumPy's default), passed to np.linalg.pinv as given."""

    name = "cpinv"

    def __init__(self, in_shapes, out_shapes=None, rcond=None):
        s = _pair_shape("cpinv", in_shapes, square=False)
        super().__init__(in_shapes, [s[:-2] + (s[-1], s[-2])],
                         rcond=None if rcond is None else float(rcond))
        self.rcond = None if rcond is None else float(rcond)
        self.m, self.n = s[-2:]

    def fwd(self, Ap):
        if type(Ap) is Tracer:
            return _apply(self, Ap)
        A = Ap[0] + 1j * Ap[1]
        Y = np.linalg.pinv(A) if self.rcond is None else np.linalg.pinv(A, rcond=self.rcond)
        return [np.stack([Y.real, Y.imag])]

    def tan(self, xs, ys, xdots):
        A, Y, dA = _unpack(xs[0]), _unpack(ys[0]), _unpack(xdots[0])
        dAh = _H(dA)
        return [_pack(-_mm(_mm(Y, dA), Y)
                      + _mm(Y, _mm(_H(Y), _mm(dAh, np.eye(self.m) - _mm(A, Y))))
                      + _mm(np.eye(self.n) - _mm(Y, A), _mm(dAh, _mm(_H(Y), Y))))]

    def bwd(self, xs, ys, ybars):
        A, Y, Yb = _unpack(xs[0]), _unpack(ys[0]), _unpack(ybars[0])
        Ybh, Yh = _H(Yb), _H(Y)
        return [_pack(-_mm(_mm(Yh, Yb), Yh)
                      + _mm(np.eye(self.m) - _mm(A, Y), _mm(Ybh, _mm(Y, Yh)))
                      + _mm(_mm(Yh, Y), _mm(Ybh, np.eye(self.n) - _mm(Y, A))))]


def _rcond(name, shape, rcond, rtol):
    """NumPy's cutoff of pinv from rcond and rtol (numpy.linalg.pinv): None for NumPy's default."""
    if rcond is not None:
        if rtol is not np._NoValue:
            raise TapegradValueError("`rtol` and `rcond` can't be both set.")
        return float(value_of(rcond))
    if rtol is np._NoValue:
        return None
    if rtol is None:
        return max(shape[-2:]) * np.finfo(np.float64).eps
    return float(value_of(rtol))


def _cpinv(a, rcond=None, hermitian=False, *, rtol=np._NoValue):
    s = _shape(a)
    if len(s) < 2:
        raise np.linalg.LinAlgError(f"np.linalg.pinv: array must be at least two-dimensional, got shape {s}")
    if hermitian:     # LAPACK's eigh reads the lower triangle and the real diagonal: that function
        _square("pinv", a)
        a = _herm_lower(a)
    Ap = _pack(a)
    rule = CPinv([np.shape(value_of(Ap))], rcond=_rcond("pinv", s, rcond, rtol))
    return _unpack(_apply(rule, Ap)[0])


def _abs2(z):
    """|z|^2 as a real value (Re^2 + Im^2: smooth at zero, unlike |z|)."""
    re, im = parts(z)
    return re * re if im is None else re * re + im * im


def _clstsq(a, b, rcond=None):
    """x = pinv(a) b (the least-squares solution of least norm at constant rank, as the real
    ``linalg._lstsq``); residuals sum |a x - b|^2 over axis 0 when rank = n < m (else empty);
    rank and the (real) singular values as NumPy returns them."""
    sa, sb = _shape(a), _shape(b)
    if len(sa) != 2 or len(sb) not in (1, 2) or sb[0] != sa[0]:
        raise np.linalg.LinAlgError(f"np.linalg.lstsq: a of shape (m, n) and b of shape (m,) or (m, k), "
                                    f"got {sa} and {sb}")
    m, n = sa
    re, im = parts(a)
    sv = np.linalg.svd(a if im is not None else re, compute_uv=False)
    rank, cut = _linalg._lstsq_rank(sv, sa, rcond)      # (guarded: see there)
    if type(re) is not Tracer and type(im) is not Tracer:      # a constant (b traced)
        ai = np.linalg.pinv(_value(a), rcond=cut)
    elif im is None:                                           # a real traced matrix: the real rule
        ai = np.linalg.pinv(re, rcond=cut)
    else:
        ai = _cpinv(a, rcond=cut)
    x = ai @ b
    if rank == n and m > n:
        res = np.sum(_abs2(a @ x - b), axis=0)
        if len(sb) == 1:
            res = np.reshape(res, (1,))
    else:
        res = np.zeros(0)
    return x, res, rank, sv


# ------------------------------------------------------------------ norm
def _cnorm(x, ord=None, axis=None, keepdims=False):
    """np.linalg.norm of a complex traced array: the 2-norm and the Frobenius norm from |x|^2,
    the spectral ones (2, -2, nuc) from the singular values of the complex matrices (real traced
    values, ``CSVD``), the other entry-wise ones as the real norm of |x| (np.abs, real)."""
    nd = len(_shape(x))
    if axis is None:
        if ord is None or (nd == 2 and ord in ("f", "fro")) or (nd == 1 and ord == 2):
            r = np.sqrt(np.sum(_abs2(x)))
            return np.reshape(r, (1,) * nd) if keepdims else r
        axis = tuple(range(nd))
    elif not isinstance(axis, tuple):
        axis = (operator.index(axis),)
    axis = tuple(operator.index(k) for k in axis)
    if len(axis) == 1 and (ord is None or (not isinstance(ord, str) and ord == 2)):
        return np.sqrt(np.sum(_abs2(x), axis=axis[0], keepdims=keepdims))
    if len(axis) == 2:
        r, c = (k % nd for k in axis)
        if r == c:
            raise TapegradValueError("Duplicate axes given.")
        if ord is None or (isinstance(ord, str) and ord in ("f", "fro")):
            return np.sqrt(np.sum(_abs2(x), axis=(r, c), keepdims=keepdims))
        if (isinstance(ord, str) and ord == "nuc") or (not isinstance(ord, str) and ord in (2, -2)):
            s = np.linalg.svd(np.moveaxis(x, (r, c), (-2, -1)), compute_uv=False)
            out = np.sum(s, axis=-1) if isinstance(ord, str) else s[..., 0] if ord == 2 else s[..., -1]
            if keepdims:
                shp = list(_shape(x))
                shp[r] = shp[c] = 1
                out = np.reshape(out, tuple(shp))
            return out
    # the real norm of |x| (rules/breadth.py), which raises NumPy's errors for bad orders and axes
    return np.linalg.norm(np.abs(x), ord=ord, axis=axis, keepdims=keepdims)


def _cvector_norm(x, /, *, axis=None, keepdims=False, ord=2):
    """A vector norm over the axes taken together (NumPy's vector_norm; a tuple of axes is not a
    matrix norm here)."""
    shp = _shape(x)
    nd = len(shp)
    axes = tuple(range(nd)) if axis is None else axis if isinstance(axis, tuple) else (axis,)
    axes = tuple(operator.index(k) % nd for k in axes)
    rest = [k for k in range(nd) if k not in axes]
    y = np.reshape(np.transpose(x, rest + list(axes)), tuple(shp[k] for k in rest) + (-1,))
    r = _cnorm(y, ord, -1)
    return np.reshape(r, tuple(1 if k in axes else shp[k] for k in range(nd))) if keepdims else r


def _cmatrix_norm(x, /, *, keepdims=False, ord="fro"):
    return _cnorm(x, ord, (-2, -1), keepdims)


# ------------------------------------------------------------------ matrix_power
def _cmatrix_power(a, n):
    """a^n by repeated squaring with complex matrix products; n < 0: of inv(a); n = 0: the
    identity (a complex constant)."""
    n = operator.index(n)
    s = _square("matrix_power", a)
    if n == 0:
        return np.broadcast_to(np.eye(s[-1], dtype=np.complex128), s).copy()
    if n < 0:
        a, n = np.linalg.inv(a), -n
    result, base = None, a
    while n:
        if n & 1:
            result = base if result is None else _mm(result, base)
        n >>= 1
        if n:
            base = _mm(base, base)
    return result


_COMPLEX_FUNCTIONS.update({
    np.linalg.det: _cdet, np.linalg.slogdet: _cslogdet, np.linalg.cholesky: _ccholesky,
    np.linalg.eigh: _ceigh, np.linalg.eigvalsh: _ceigvalsh, np.linalg.qr: _cqr, np.linalg.svd: _csvd,
    np.linalg.eig: _eig, np.linalg.pinv: _cpinv, np.linalg.lstsq: _clstsq, np.linalg.norm: _cnorm,
    np.linalg.matrix_power: _cmatrix_power,
    # compositions of the rules above, shared with the real ones
    np.linalg.tensorsolve: _linalg._tensorsolve, np.linalg.tensorinv: _linalg._tensorinv,
    np.linalg.cond: _linalg._cond,
})
_registry.register(np.linalg.eig, _eig, "rule", rule_class=CEig)   # real matrices too (complex results)
if hasattr(np.linalg, "svdvals"):
    _COMPLEX_FUNCTIONS[np.linalg.svdvals] = _csvdvals
if hasattr(np.linalg, "vector_norm"):
    _COMPLEX_FUNCTIONS[np.linalg.vector_norm] = _cvector_norm
    _COMPLEX_FUNCTIONS[np.linalg.matrix_norm] = _cmatrix_norm
