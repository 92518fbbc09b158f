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
"""
import numpy as np

from ..tracing.tracer import Tracer, value_of
from ..errors import TapegradTypeError, TapegradValueError, UnsupportedError
from . import registry as _registry
from .calls import CallRule, register as _register_rule, call as _call
from .complex import parts, _pack, _unpack, _mm, _matrix, FUNCTIONS as _COMPLEX_FUNCTIONS, CEigvals


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


def _phase_check(name, g, scale):
    """A loss that depends on the arbitrary phases of the columns has no derivative."""
    g, scale = np.abs(value_of(g)), np.max(np.abs(value_of(scale)), initial=0.0)
    if g.size and np.max(g) > 1e-6 * max(scale, 1e-300) and np.max(g) > 1e-12:
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


_COMPLEX_FUNCTIONS.update({
    np.linalg.det: _cdet, np.linalg.slogdet: _cslogdet,
})
