"""tg.vmap (re-traced): JAX's in_axes/out_axes, composed with the derivative operators."""
import numpy as np
import pytest

import tapegrad as tg


def loss(w, x, y):
    z = np.dot(x, w)
    return np.log1p(np.exp(-y * z)) + 0.01 * np.sum(w * w)


R = np.random.default_rng(0)
X = R.standard_normal((7, 4))
Y = np.sign(R.standard_normal(7))
W = R.standard_normal(4)


def test_per_example_gradients_equal_a_loop():
    G = tg.vmap(tg.grad(loss), in_axes=(None, 0, 0))(W, X, Y)
    assert G.shape == (7, 4)
    for i in range(7):
        np.testing.assert_allclose(G[i], tg.grad(loss)(W, X[i], Y[i]), rtol=1e-14, atol=0)


def test_values_axes_and_pytrees():
    f = lambda p, x: {"s": np.sum(p["a"] * x), "v": p["b"] * x}
    p = {"a": np.arange(3.0), "b": 2.0}
    Xc = R.standard_normal((3, 5))                      # batch along axis 1
    out = tg.vmap(f, in_axes=({"a": None, "b": None}, 1), out_axes={"s": 0, "v": 1})(p, Xc)
    np.testing.assert_allclose(out["s"], p["a"] @ Xc, rtol=1e-14)
    np.testing.assert_allclose(out["v"], 2.0 * Xc, rtol=1e-14)
    np.testing.assert_allclose(tg.vmap(np.sin)(X), np.sin(X))
    np.testing.assert_allclose(tg.vmap(lambda x: x * 2, in_axes=-1, out_axes=-1)(X), 2 * X)


def test_composition_with_operators():
    f = lambda w, x: np.tanh(np.dot(x, w))
    fv = tg.vmap(f, in_axes=(None, 0))
    J = tg.jacobian(fv)(W, X)                           # d/dw of the batch of outputs
    want = (1 - np.tanh(X @ W) ** 2)[:, None] * X
    np.testing.assert_allclose(J, want, rtol=1e-13)
    g = tg.grad(lambda w: np.sum(fv(w, X) ** 2))(W)
    np.testing.assert_allclose(g, 2 * (np.tanh(X @ W) * (1 - np.tanh(X @ W) ** 2)) @ X, rtol=1e-13)
    # vmap of vmap: a (7, 4) grid of scalars
    grid = tg.vmap(tg.vmap(lambda a, b: a * np.sin(b), in_axes=(0, None)), in_axes=(None, 0))(
        X[:, 0], W)
    np.testing.assert_allclose(grid, np.sin(W)[:, None] * X[:, 0][None, :], rtol=1e-15)
    # hvp per example
    H = tg.vmap(lambda x, y: tg.hvp(lambda w: loss(w, x, y), (W,), (np.ones(4),)))(X, Y)
    for i in range(7):
        np.testing.assert_allclose(H[i], tg.hvp(lambda w: loss(w, X[i], Y[i]), (W,),
                                                (np.ones(4),)), rtol=1e-14)


def test_control_flow_is_per_member():
    f = lambda x: x * 2.0 if float(np.sum(x)) > 0 else -x
    Xs = np.array([[1.0, 2.0], [-3.0, 1.0]])
    with pytest.warns(tg.TracerConversionWarning):
        g = tg.vmap(tg.grad(lambda x: np.sum(f(x))))(Xs)
    np.testing.assert_array_equal(g, [[2.0, 2.0], [-1.0, -1.0]])


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="argument 2 has 5 batch members.*7"):
        tg.vmap(loss, in_axes=(None, 0, 0))(W, X, Y[:5])
    with pytest.raises(ValueError, match="one entry per positional argument"):
        tg.vmap(loss, in_axes=(None, 0))(W, X, Y)
    with pytest.raises(ValueError, match="no argument is batched"):
        tg.vmap(loss, in_axes=None)(W, X, Y)
    with pytest.raises(ValueError, match="in_axes\\[0\\] = 3"):
        tg.vmap(np.sin, in_axes=3)(X)
