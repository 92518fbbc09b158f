"""tg.stop_gradient: a value with no derivative at every level, recomputed on replay."""
import numpy as np

import tapegrad as tg


def f(x):
    return np.sum(x ** 2 * tg.stop_gradient(x))


def test_gradient_treats_it_as_a_constant():
    x = np.array([0.5, -1.5, 2.0])
    # d/dx sum(x^2 * c) = 2 x c with c = x
    np.testing.assert_allclose(tg.grad(f)(x), 2 * x * x, rtol=1e-15)


def test_replay_recomputes_the_value_at_the_new_point():
    x0, x1 = np.array([0.5, -1.5, 2.0]), np.array([1.0, 2.0, -3.0])
    rec = tg.record(f, x0)
    assert rec(x1) == f(x1)
    np.testing.assert_allclose(rec.grad(x1), 2 * x1 * x1, rtol=1e-15)
    # hvp: d/dx (2 x c) = 2 c, c held constant
    v = np.array([1.0, 0.5, -2.0])
    np.testing.assert_allclose(rec.hvp(x1, v), 2 * x1 * v, rtol=1e-15)


def test_nested_gradients_stop_at_every_level():
    g = tg.grad(lambda x: tg.grad(lambda y: y ** 3 * tg.stop_gradient(y))(x))
    # inner: 3 y^2 c; outer: 6 x c with c = x (not 6 x c + 3 x^2, which an inner-only stop gives)
    for x in (0.7, -1.3, 2.0):
        np.testing.assert_allclose(g(x), 6 * x * x, rtol=1e-14)


def test_pytrees_and_constants_pass_through():
    def h(p):
        q = tg.stop_gradient({"a": p["a"], "b": (p["b"], 2.0)})
        return np.sum(p["a"] * q["a"]) + p["b"] * q["b"][0] * q["b"][1]
    p = {"a": np.array([1.0, 2.0]), "b": 3.0}
    g = tg.grad(h)(p)
    np.testing.assert_allclose(g["a"], p["a"])
    assert g["b"] == 6.0
    assert tg.stop_gradient(np.ones(2)).tolist() == [1.0, 1.0]


def test_forward_mode_and_wengert_list():
    x = np.array([0.5, 2.0])
    _, t = tg.jvp(lambda x: x * tg.stop_gradient(x), (x,), (np.ones(2),))
    np.testing.assert_allclose(t, x)
    assert "stop_gradient(" in str(tg.trace(lambda x: np.sum(x * tg.stop_gradient(x)), x))
