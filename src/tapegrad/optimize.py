"""SciPy's optimizers with derivatives from one recorded tape.

``minimize(f, x0, method=...)`` records f once at x0 and hands ``scipy.optimize.minimize`` the
value and gradient in one replayed call (``jac=True``), Hessian-vector products (``hessp``) for
the methods that take them, and the Hessian (dense, or sparse from the tape's pattern for
``trust-constr``) for the methods that need it. ``least_squares(r, x0)`` gives
``scipy.optimize.least_squares`` the residuals' Jacobian, sparse when the tape's pattern is.
x0 may be a pytree (tuples, lists, dicts of arrays); the result's ``x`` is restored to it. What
SciPy returns comes back otherwise unchanged (an ``OptimizeResult``).
"""
import numpy as np
import scipy.optimize as so
import scipy.sparse as sp

from .operators.recorded import record
from .tracing import pytree as _tree
from .errors import TapegradTypeError, TapegradValueError

__all__ = ["minimize", "least_squares"]

_HESSP = {"newton-cg", "trust-ncg", "trust-krylov", "trust-constr"}
_HESS = {"dogleg", "trust-exact", "trust-constr"}
_NO_JAC = {"nelder-mead", "powell", "cobyla", "cobyqa"}


class _Flat:
    """f of a pytree as a function of one flat float64 vector, recorded once."""

    def __init__(self, f, x0, args, what):
        leaves, self.td = _tree.flatten(x0)
        arrs = [np.asarray(l, dtype=np.float64) for l in leaves]
        if not arrs:
            raise TapegradValueError(f"{what}: x0 has no arrays")
        self.shapes = [a.shape for a in arrs]
        self.sizes = [a.size for a in arrs]
        self.x0 = _tree.join(arrs)
        self.args = args

        def flat_f(x):
            return f(self.tree(x), *args)
        self.tape = record(flat_f, self.x0)

    def tree(self, x):
        return _tree.unflatten(self.td, _tree.split(x, self.shapes, self.sizes, copy=True))


def minimize(f, x0, args=(), method=None, hess=None, hessp=None, sparse="auto", **kwargs):
    """``scipy.optimize.minimize`` of f(x, *args) with the tape's derivatives.

    hess / hessp: leave None to get them from the tape when the method uses them (``hess="fd"``
    or a callable of your own is passed through). sparse: for ``trust-constr``, give the Hessian
    as a sparse matrix when its pattern fills at most 5% ("auto"), always (True) or never.
    Constraints and bounds are passed through (their functions see the flat vector).
    """
    if "jac" in kwargs:
        raise TapegradTypeError("minimize: jac comes from the tape; do not pass it")
    F = _Flat(f, x0, tuple(args), "minimize")
    tape = F.tape
    if tape.variants[0].nout != 1:
        raise TapegradValueError(f"minimize: f must return a scalar, got {tape.variants[0].nout} "
                                 "values")
    m = (method or ("BFGS" if not kwargs.get("constraints") and not kwargs.get("bounds")
                    else "SLSQP")).lower() if not callable(method) else None
    opts = dict(kwargs)
    if m in _NO_JAC:
        fun, jac = (lambda x: float(tape(x))), None
    else:
        def fun(x):
            v, g = tape.value_and_grad(np.asarray(x, dtype=np.float64))
            return float(v), np.array(g, dtype=np.float64)
        jac = True
    if m in _HESSP and hessp is None and hess is None and m != "trust-constr":
        hessp = lambda x, p: np.array(tape.hvp(np.asarray(x, float), np.asarray(p, float)))
    if m in _HESS and hess is None and hessp is None:
        pattern = tape.hessian_sparsity() if m == "trust-constr" and sparse is not False else None
        d = F.x0.size
        if pattern is not None and (sparse is True or pattern.nnz <= 0.05 * d * d):
            hess = lambda x: tape.sparse_hessian(np.asarray(x, float))   # pattern kept by the tape
        else:
            hess = lambda x: np.array(tape.hessian(np.asarray(x, float))).reshape(d, d)
    if m == "trust-constr" and hess is None and hessp is None:
        hessp = lambda x, p: np.array(tape.hvp(np.asarray(x, float), np.asarray(p, float)))
    res = so.minimize(fun, F.x0, method=method, jac=jac, hess=hess, hessp=hessp, **opts)
    res.x = F.tree(np.asarray(res.x, dtype=np.float64))
    if "jac" in res and np.ndim(res.jac) == 1 and np.size(res.jac) == F.x0.size:
        res.jac = F.tree(np.asarray(res.jac, dtype=np.float64))
    res.tape = tape
    return res


def least_squares(r, x0, args=(), sparse="auto", **kwargs):
    """``scipy.optimize.least_squares`` of the residuals r(x, *args) with their Jacobian from
    the tape: sparse (the tape's pattern, colored lanes) when it fills at most 5% ("auto"),
    always (True) or never (False). Not for method="lm" with a sparse Jacobian (scipy's rule)."""
    if "jac" in kwargs:
        raise TapegradTypeError("least_squares: jac comes from the tape; do not pass it")
    F = _Flat(r, x0, tuple(args), "least_squares")
    tape = F.tape
    pattern = tape.jacobian_sparsity()
    m, n = pattern.shape
    use_sparse = sparse is True or (sparse == "auto" and kwargs.get("method") != "lm"
                                    and pattern.nnz <= 0.05 * m * n)
    fun = lambda x: np.array(tape(np.asarray(x, float)), dtype=np.float64).reshape(-1)
    if use_sparse:
        jac = lambda x: tape.sparse_jacobian(np.asarray(x, float))   # pattern kept by the tape
    else:
        jac = lambda x: np.array(tape.jacobian(np.asarray(x, float))).reshape(m, n)
    res = so.least_squares(fun, F.x0, jac=jac, **kwargs)
    res.x = F.tree(np.asarray(res.x, dtype=np.float64))
    res.tape = tape
    return res
