"""scipy.linalg on tracers: ``solve_triangular`` (a Python rule, one tape operation, in
tapegrad.rules.scipy_calls),
``cholesky``, ``cho_factor``, ``cho_solve`` (on the Cholesky rule of tapegrad.rules.linalg and
solve_triangular), and the functions SciPy shares with numpy.linalg (``solve``, ``inv``,
``det``), with SciPy's signatures.

Like LAPACK, each function reads one triangle of its matrix argument only (the one named by
``lower``), and its derivative is the derivative of *that* function: finite differences in an
entry that is not read are zero, and so is its derivative. ``cho_factor`` returns the factor
with zeros (not SciPy's leftover entries of a) in the other triangle.
"""
import numpy as np
import scipy.linalg as _sl

from ._common import active, values, as_float, shape
from ..rules.scipy_calls import SolveTriangular, _solve_tri, _T  # noqa: F401
from ..tracing.tracer import Tracer, value_of
from ..errors import TapegradValueError

__all__ = ["solve_triangular", "cholesky", "cho_factor", "cho_solve", "solve", "inv", "det",
           "covered"]


_TRANS = {0: 0, "N": 0, "n": 0, 1: 1, "T": 1, "t": 1, 2: 1, "C": 1, "c": 1}


def solve_triangular(a, b, trans=0, lower=False, unit_diagonal=False, overwrite_b=False,
                     check_finite=True):
    """scipy.linalg.solve_triangular on tracers: x with op(a) x = b, op(a) = a or a^T
    (trans 0/'N', 1/'T', 2/'C'; real arrays, so 'C' is 'T'); b of shape (n,) or (n, k)."""
    if not active(a, b):
        return _sl.solve_triangular(values(a), values(b), trans=trans, lower=lower,
                                    unit_diagonal=unit_diagonal, check_finite=check_finite)
    if trans not in _TRANS:
        raise TapegradValueError(f"tapegrad.scipy.linalg.solve_triangular: trans={trans!r} is not "
                                 "one of 0, 1, 2, 'N', 'T', 'C'")
    a, b = as_float(a), as_float(b)
    sa, sb = shape(a), shape(b)
    if len(sa) != 2 or sa[0] != sa[1]:
        raise ValueError(f"tapegrad.scipy.linalg.solve_triangular: expected a square matrix a, "
                         f"got shape {sa}")
    if len(sb) not in (1, 2) or sb[0] != sa[0]:
        raise ValueError(f"tapegrad.scipy.linalg.solve_triangular: shapes of a {sa} and b {sb} "
                         "are incompatible")
    if check_finite and not (np.all(np.isfinite(value_of(a))) and np.all(np.isfinite(value_of(b)))):
        raise ValueError("tapegrad.scipy.linalg.solve_triangular: array must not contain infs or NaNs")
    if _TRANS[trans]:
        a, lower = _T(a), not lower
    vec = len(sb) == 1
    if vec:
        b = np.reshape(b, sb + (1,))
    if type(a) is not Tracer:
        a = np.ascontiguousarray(a)
    if type(b) is not Tracer:
        b = np.ascontiguousarray(b)
    x = _solve_tri(a, b, bool(lower), bool(unit_diagonal))
    return np.reshape(x, sb) if vec else x


def cholesky(a, lower=False, overwrite_a=False, check_finite=True):
    """scipy.linalg.cholesky on tracers: upper U with a = U^T U (lower=False, the default, reads
    a's upper triangle) or lower L with a = L L^T; the other triangle is zero."""
    if not active(a):
        return _sl.cholesky(values(a), lower=lower, check_finite=check_finite)
    a = as_float(a)
    sa = shape(a)
    if len(sa) < 2 or sa[-1] != sa[-2]:
        raise ValueError(f"tapegrad.scipy.linalg.cholesky: expected square matrix, got shape {sa}")
    try:
        if lower:
            return np.linalg.cholesky(a)
        return _T(np.linalg.cholesky(_T(a)))     # LAPACK's upper: the lower factor of a^T
    except np.linalg.LinAlgError as e:
        raise _sl.LinAlgError(f"tapegrad.scipy.linalg.cholesky: {e}") from None


def cho_factor(a, lower=False, overwrite_a=False, check_finite=True):
    """scipy.linalg.cho_factor on tracers: (c, lower), c the factor (zeros in the other triangle)."""
    if not active(a):
        return _sl.cho_factor(values(a), lower=lower, check_finite=check_finite)
    return cholesky(a, lower=lower, check_finite=check_finite), lower


def cho_solve(c_and_lower, b, overwrite_b=False, check_finite=True):
    """scipy.linalg.cho_solve on tracers: x with a x = b from cho_factor(a); reads c's
    ``lower`` triangle only."""
    try:
        c, lower = c_and_lower
    except (TypeError, ValueError):
        raise TapegradValueError("tapegrad.scipy.linalg.cho_solve: c_and_lower must be the pair "
                                 "(c, lower) that cho_factor returns") from None
    if not active(c, b):
        return _sl.cho_solve((values(c), lower), values(b), check_finite=check_finite)
    sc, sb = shape(c), shape(b)
    if len(sc) != 2 or sc[0] != sc[1]:
        raise ValueError(f"tapegrad.scipy.linalg.cho_solve: the factor must be a square matrix, "
                         f"got shape {sc}")
    if len(sb) == 0 or sb[0] != sc[0]:
        raise ValueError(f"tapegrad.scipy.linalg.cho_solve: incompatible dimensions ({sc} and {sb})")
    y = solve_triangular(c, b, trans=0 if lower else 1, lower=lower, check_finite=check_finite)
    return solve_triangular(c, y, trans=1 if lower else 0, lower=lower, check_finite=check_finite)


def solve(a, b, lower=False, overwrite_a=False, overwrite_b=False, check_finite=True,
          assume_a=None, transposed=False):
    """scipy.linalg.solve on tracers (general, 'sym'/'pos' as general: the same solution)."""
    if not active(a, b):
        kw = {} if assume_a is None else {"assume_a": assume_a}
        return _sl.solve(values(a), values(b), lower=lower, check_finite=check_finite,
                         transposed=transposed, **kw)
    a, b = as_float(a), as_float(b)
    if assume_a in ("sym", "symmetric", "her", "hermitian", "pos", "positive definite"):
        a = np.tril(a) + _T(np.tril(a, -1)) if lower else np.triu(a) + _T(np.triu(a, 1))
    if transposed:
        a = _T(a)
    return np.linalg.solve(a, b)


def inv(a, overwrite_a=False, check_finite=True):
    """scipy.linalg.inv on tracers."""
    if not active(a):
        return _sl.inv(values(a), check_finite=check_finite)
    return np.linalg.inv(a)


def det(a, overwrite_a=False, check_finite=True):
    """scipy.linalg.det on tracers."""
    if not active(a):
        return _sl.det(values(a), check_finite=check_finite)
    return np.linalg.det(a)


def covered():
    return list(__all__[:-1])
