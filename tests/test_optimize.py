"""tapegrad.optimize: scipy.optimize with derivatives from one recorded tape."""
import numpy as np
import pytest
import scipy.optimize as so
import scipy.sparse as sp

from tapegrad import optimize as to


def rosen(x):
    return np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


X0 = np.full(40, 1.0)
X0[::2] = -1.2


@pytest.mark.parametrize("method", ["L-BFGS-B", "Newton-CG", "trust-ncg", "trust-krylov",
                                    "trust-exact", "trust-constr"])
def test_minimize_matches_scipy_with_exact_derivatives(method):
    res = to.minimize(rosen, X0, method=method, options={"maxiter": 5000})
    ref = so.minimize(so.rosen, X0, method=method, jac=so.rosen_der,
                      hess=so.rosen_hess if method in ("trust-exact", "trust-constr") else None,
                      hessp=so.rosen_hess_prod if method in ("Newton-CG", "trust-ncg", "trust-krylov") else None,
                      options={"maxiter": 5000})
    # the same problem with the same exact derivatives (the values differ in the last bits:
    # another summation order), so the same answer to the solver's tolerance
    # (Newton-CG's and trust-constr's paths are sensitive to those bits: the same iteration
    # counts and values to the solvers' tolerances, not the same points in flat valleys)
    assert res.success and ref.success
    assert abs(res.fun - ref.fun) < 1e-3 * max(1.0, ref.fun)
    assert abs(res.nit - ref.nit) <= max(3, ref.nit // 10)


def test_pytree_x0_and_args():
    f = lambda p, c: np.sum((p["a"] - c) ** 2) + (p["b"] + 2.0) ** 2
    res = to.minimize(f, {"a": np.array([3.0, -1.0]), "b": 0.5}, args=(1.5,), method="BFGS")
    np.testing.assert_allclose(res.x["a"], [1.5, 1.5], atol=1e-6)
    assert abs(res.x["b"] + 2.0) < 1e-6


def resid(x):
    return np.concatenate([10 * (x[1:] - x[:-1] ** 2), 1 - x[:-1]])


def test_least_squares_sparse_jacobian():
    res = to.least_squares(resid, X0)
    assert sp.issparse(res.jac) and res.success and res.cost < 1e-20
    dense = to.least_squares(resid, X0, sparse=False)
    np.testing.assert_allclose(res.x, dense.x, atol=1e-8)
    np.testing.assert_allclose(res.x, np.ones(40), atol=1e-8)


def test_errors():
    with pytest.raises(ValueError, match="scalar"):
        to.minimize(lambda x: x * 2, X0)
    with pytest.raises(TypeError, match="jac comes from the tape"):
        to.minimize(rosen, X0, jac=so.rosen_der)
