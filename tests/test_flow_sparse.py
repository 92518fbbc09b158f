"""Gradient flows with sparse Jacobians (the Hessian's pattern from the tape, its values from
colored hvp lanes) for scipy's BDF and Radau."""
import numpy as np
import pytest
import scipy.sparse as sp

import tapegrad as tg
from tapegrad import flow


def make(d):
    lam = np.logspace(0, 3, d)         # stiff: rates 1 .. 1000

    def f(w):
        return (0.5 * np.sum(lam * w * w) + 0.25 * np.sum((w[1:] - w[:-1]) ** 2)
                + 0.05 * np.sum(w ** 4))
    return f


@pytest.mark.parametrize("method", ["BDF", "Radau"])
def test_sparse_and_dense_jacobians_give_the_same_flow(method):
    d = 150
    f = make(d)
    w0 = np.linspace(1.0, 2.0, d)
    kw = dict(method=method, rtol=1e-8, atol=1e-11)
    dense = flow.gradient_flow(f, w0, (0.0, 0.5), sparse=False, **kw)
    sparse = flow.gradient_flow(f, w0, (0.0, 0.5), sparse=True, **kw)
    auto = flow.gradient_flow(f, w0, (0.0, 0.5), **kw)
    assert dense.success and sparse.success and sparse.n_jac >= 1
    np.testing.assert_allclose(sparse.w[-1], dense.w[-1], rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(auto.w[-1], sparse.w[-1])        # auto picks sparse here
    # with jac=False scipy estimates the Jacobian, grouped by the tape's pattern
    est = flow.gradient_flow(f, w0, (0.0, 0.5), jac=False, sparse=True, **kw)
    np.testing.assert_allclose(est.w[-1], dense.w[-1], rtol=1e-6, atol=1e-9)


def test_diagonal_and_sparse_preconditioners():
    d = 120
    f = make(d)
    w0 = np.ones(d)
    a = np.linspace(0.5, 2.0, d)
    for A in (a, sp.diags(a).tocsr()):
        s = flow.gradient_flow(f, w0, (0.0, 0.3), A=A, method="BDF", sparse=True)
        ref = flow.gradient_flow(f, w0, (0.0, 0.3), A=a, method="BDF", sparse=False)
        np.testing.assert_allclose(s.w[-1], ref.w[-1], rtol=1e-7, atol=1e-10)


def test_a_large_stiff_banded_flow_runs():
    d = 20000
    res = flow.gradient_flow(make(d), np.ones(d), (0.0, 0.2), method="BDF", rtol=1e-5, atol=1e-8)
    assert res.success and res.f[-1] < res.f[0] and res.n_jac >= 1


def test_sparse_option_errors():
    f = make(150)
    with pytest.raises(ValueError, match="BDF"):
        flow.gradient_flow(f, np.ones(150), (0.0, 0.1), method="LSODA", sparse=True)
    with pytest.raises(ValueError, match="scipy.sparse"):
        flow.gradient_flow(f, np.ones(150), (0.0, 0.1), method="BDF", sparse=True,
                           A=np.eye(150) * 2.0)


def test_sparse_equals_dense_at_d_1000():
    d = 1000
    f = make(d)
    w0 = np.linspace(1.0, 2.0, d)
    kw = dict(method="BDF", rtol=1e-6, atol=1e-9)
    dense = flow.gradient_flow(f, w0, (0.0, 0.05), sparse=False, **kw)
    sparse = flow.gradient_flow(f, w0, (0.0, 0.05), sparse=True, **kw)
    assert dense.success and sparse.success and sparse.n_jac >= 1
    # the same Jacobians (to rounding) give the same steps and the same solution
    assert sparse.n_steps == dense.n_steps
    np.testing.assert_allclose(sparse.w[-1], dense.w[-1], rtol=1e-9, atol=1e-12)
