"""Sparsity patterns from the tape and sparse Jacobians / Hessians by coloring."""
import numpy as np
import pytest

import tapegrad as tg
from tapegrad.operators.sparse import color_columns

A = np.random.default_rng(1).standard_normal((3, 5))


def chain(x):
    return np.concatenate([np.sin(x[1:]) * x[:-1], np.exp(x[:2]) + x[-2:] ** 2])


def mixed(x):
    X = np.reshape(x[:6], (2, 3))
    y = np.sum(X * X, axis=1)                    # a reduction per row
    z = np.prod(x[6:9])                          # a product of three
    w = A @ x[:5]                                # matmul: dense rows
    s = np.where(x[9:] > 0, x[9:] ** 3, np.floor(x[9:]))
    return np.concatenate([y, np.stack([z]), w, s, tg.stop_gradient(x[:1]) * 0 + x[1:2]])


def solved(x):
    M = np.reshape(x[:4], (2, 2)) + 3 * np.eye(2)
    return np.concatenate([np.linalg.solve(M, x[4:6]), x[6:] * 2.0])    # a Python-rule op


FUNS = [chain, mixed, solved]
X0 = np.random.default_rng(0).uniform(0.2, 1.2, 11)


@pytest.mark.parametrize("f", FUNS, ids=lambda f: f.__name__)
def test_jacobian_pattern_and_values(f):
    r = tg.record(f, X0)
    J = r.jacobian(X0)
    P = r.jacobian_sparsity().toarray()
    assert np.all(P[J != 0]), "the pattern misses a nonzero"
    if f is not solved:
        np.testing.assert_array_equal(P, J != 0)          # exact for these ops
    for mode in ("fwd", "rev", "auto"):
        np.testing.assert_allclose(r.sparse_jacobian(X0, mode=mode).toarray(), J,
                                   rtol=1e-14, atol=1e-15)
    x1 = X0[::-1].copy()
    np.testing.assert_allclose(r.sparse_jacobian(x1).toarray(), r.jacobian(x1), rtol=1e-14,
                               atol=1e-15)


def rosen(x):
    return np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def couple(x):
    return np.sum(x[:3] * x[3:6]) + np.sum(np.sin(x[6:])) + np.prod(x[:2])


@pytest.mark.parametrize("f", [rosen, couple, lambda x: np.sum(mixed(x) ** 2)],
                         ids=["rosen", "couple", "mixed"])
def test_hessian_pattern_and_values(f):
    x = X0[:9] if f is couple else X0
    r = tg.record(f, x)
    H = r.hessian(x)
    P = r.hessian_sparsity().toarray()
    assert np.all(P[np.abs(H) > 0]) and np.array_equal(P, P.T)
    np.testing.assert_allclose(r.sparse_hessian(x).toarray(), H, rtol=1e-13, atol=1e-12)
    if f is rosen:
        np.testing.assert_array_equal(P, np.abs(np.subtract.outer(np.arange(11), np.arange(11))) <= 1)
    if f is couple:   # x_i * x_{i+3}: no diagonal terms; sin: diagonal only; prod(x0, x1): (0, 1)
        assert not P[0, 0] and P[0, 3] and P[6, 6] and not P[6, 7] and P[0, 1]


def test_coloring_is_valid_and_small_for_banded_patterns():
    n = 5000
    x = np.linspace(-1, 1, n)
    r = tg.record(rosen, x)
    P = r.hessian_sparsity()
    c = color_columns(P)
    assert c.max() + 1 == 3
    Pc = P.tocsr()
    for i in range(0, n, 97):
        cols = Pc.indices[Pc.indptr[i]:Pc.indptr[i + 1]]
        assert len(set(c[cols])) == len(cols)
    H = r.sparse_hessian(x)
    v = np.cos(np.arange(n))
    np.testing.assert_allclose(H @ v, r.hvp(x, v), rtol=1e-12, atol=1e-9)


def test_hessian_sparsity_needs_a_scalar():
    with pytest.raises(ValueError, match="scalar"):
        tg.record(chain, X0).hessian_sparsity()


def test_patterns_and_colorings_are_made_once_per_variant(monkeypatch):
    from tapegrad.operators import sparse
    calls = []
    real = sparse.color_columns
    monkeypatch.setattr(sparse, "color_columns", lambda P: calls.append(1) or real(P))
    r = tg.record(rosen, X0)
    H1, H2 = r.sparse_hessian(X0), r.sparse_hessian(X0 * 0.5)
    rj = tg.record(chain, X0)
    rj.sparse_jacobian(X0)
    rj.sparse_jacobian(X0[::-1].copy())
    assert len(calls) == 1 + 2          # the Hessian's columns; the Jacobian's columns and rows
    np.testing.assert_allclose(H2.toarray(), r.hessian(X0 * 0.5), rtol=1e-13, atol=1e-12)
