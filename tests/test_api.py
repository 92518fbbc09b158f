"""The derivative operators of api.py, against closed forms and against each other.

Every expected number here comes from a closed form, from an identity between operators that
use different sweeps (<u, J v> = <J^T u, v>; jvp-of-grad vs the tangent-of-reverse sweep), or
from the known matrix of a quadratic.
"""
import math

import numpy as np
import pytest

import tapegrad as tg
import tapegrad.tracing.tracer

from _programs import random_program

E3 = math.exp(3.0)


def rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


# ------------------------------------------------------------------ worked example (issue 2)
def worked(x1, x2, x3):
    return np.exp(x1 + x2 ** 3) * x3 + np.sqrt(x3 * np.sin(np.pi / 2 * (x1 - x2)))


def test_worked_example_argnums():
    g1, g2, g3 = tg.grad(worked, argnums=(0, 1, 2))(2.0, 1.0, 1.0)
    assert rel(g1, E3) < 1e-12
    assert rel(g2, 3 * E3) < 1e-12
    assert rel(g3, E3 + 0.5) < 1e-12           # e^3 + sin(pi/2) / (2 sqrt(1))
    assert rel(tg.grad(worked)(2.0, 1.0, 1.0), E3) < 1e-12
    assert rel(tg.grad(worked, argnums=1)(2.0, 1.0, 1.0), 3 * E3) < 1e-12
    assert rel(tg.grad(worked, argnums=-1)(2.0, 1.0, 1.0), E3 + 0.5) < 1e-12
    v, g = tg.value_and_grad(worked)(2.0, 1.0, 1.0)
    assert rel(v, E3 + 1.0) < 1e-14


def test_worked_example_vector_input():
    g = tg.grad(lambda x: worked(x[0], x[1], x[2]))(np.array([2.0, 1.0, 1.0]))
    assert g.shape == (3,)
    assert rel(g[0], E3) < 1e-12 and rel(g[1], 3 * E3) < 1e-12 and rel(g[2], E3 + 0.5) < 1e-12


def test_integer_inputs_are_promoted():
    g = tg.grad(worked, argnums=(0, 1, 2))(2, 1, 1)
    assert rel(g[0], E3) < 1e-12 and rel(g[1], 3 * E3) < 1e-12
    g = tg.grad(lambda x: np.sum(x ** 3))(np.array([1, 2, 3]))
    assert g.dtype == np.float64
    np.testing.assert_array_equal(g, [3.0, 12.0, 27.0])


@pytest.mark.parametrize("bad", [1 + 2j, np.array([1.0 + 1j, 2.0]), True, np.array([True, False]),
                                 "abc", np.array(["a"]), None])
def test_non_real_inputs_raise_type_error(bad):
    with pytest.raises(TypeError):
        tg.grad(lambda x: np.sum(x * 2.0))(bad)
    assert tapegrad.tracing.tracer._stack() == []


def test_complex_constant_in_traced_op_raises():
    with pytest.raises(TypeError, match="complex"):
        tg.grad(lambda x: np.sum(x * (1 + 2j)))(np.ones(2))
    assert tapegrad.tracing.tracer._stack() == []


# ------------------------------------------------------------------ pytrees, aux, vjp, jvp
def test_pytree_inputs_give_same_structure():
    def f(p):
        return np.sum(p["w"] ** 2) * p["b"] + p["pair"][0] * np.sum(p["pair"][1]) + p["lst"][0]

    p = {"w": np.array([1.0, 2.0]), "b": 3.0, "pair": (2.0, np.array([1.0, -1.0, 4.0])),
         "lst": [5.0, np.ones(2)]}
    g = tg.grad(f)(p)
    assert isinstance(g, dict) and set(g) == set(p)
    assert isinstance(g["pair"], tuple) and isinstance(g["lst"], list) and len(g["lst"]) == 2
    np.testing.assert_allclose(g["w"], 2 * p["w"] * 3.0, rtol=1e-15)
    assert g["b"] == 5.0
    assert g["pair"][0] == 4.0
    np.testing.assert_allclose(g["pair"][1], [2.0, 2.0, 2.0], rtol=1e-15)
    assert g["lst"][0] == 1.0
    np.testing.assert_array_equal(g["lst"][1], np.zeros(2))
    assert np.shape(g["lst"][1]) == (2,)


def test_tuple_and_list_inputs_and_argnums_tuple():
    f = lambda a, b: np.sum(a[0] * a[1]) + b[0] ** 2 * b[1]  # noqa: E731
    a = (np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    b = [2.0, 5.0]
    ga, gb = tg.grad(f, argnums=(0, 1))(a, b)
    assert isinstance(ga, tuple) and isinstance(gb, list)
    np.testing.assert_array_equal(ga[0], a[1])
    np.testing.assert_array_equal(ga[1], a[0])
    np.testing.assert_array_equal(gb, [20.0, 4.0])


def test_has_aux():
    def f(x):
        y = np.sin(x)
        return np.sum(y), {"y": y, "n": 3}
    x = np.array([0.3, 1.2])
    g, aux = tg.grad(f, has_aux=True)(x)
    np.testing.assert_allclose(g, np.cos(x), rtol=1e-15)
    np.testing.assert_allclose(aux["y"], np.sin(x), rtol=1e-15)
    assert type(aux["y"]) is np.ndarray and aux["n"] == 3
    (v, aux2), g2 = tg.value_and_grad(f, has_aux=True)(x)
    assert rel(v, np.sum(np.sin(x))) < 1e-15
    np.testing.assert_allclose(g2, np.cos(x), rtol=1e-15)
    with pytest.raises(TypeError, match="pair"):
        tg.grad(lambda x: np.sum(x), has_aux=True)(x)


def test_vjp_returns_tuple_per_primal():
    x, y = np.array([1.0, 2.0, 3.0]), 0.5
    out, fn = tg.vjp(lambda x, y: np.sin(x) * y, x, y)
    np.testing.assert_allclose(out, np.sin(x) * y, rtol=1e-15)
    u = np.array([1.0, -2.0, 0.5])
    ct = fn(u)
    assert isinstance(ct, tuple) and len(ct) == 2
    np.testing.assert_allclose(ct[0], u * np.cos(x) * y, rtol=1e-15)
    assert rel(ct[1], np.sum(u * np.sin(x))) < 1e-14
    (ct1,) = tg.vjp(np.tanh, x)[1](np.ones(3))
    np.testing.assert_allclose(ct1, 1 - np.tanh(x) ** 2, rtol=1e-14)
    with pytest.raises(ValueError):
        fn(np.ones(4))


def test_vjp_tuple_output():
    out, fn = tg.vjp(lambda x: (x * 2.0, np.sum(x ** 2)), np.array([1.0, 3.0]))
    assert isinstance(out, tuple)
    (ct,) = fn((np.array([1.0, 1.0]), 2.0))
    np.testing.assert_allclose(ct, [2.0 + 4.0, 2.0 + 12.0], rtol=1e-15)


def test_jvp():
    x = np.array([0.1, 0.7])
    v = np.array([1.0, -2.0])
    out, od = tg.jvp(lambda x: np.exp(x) * x, (x,), (v,))
    np.testing.assert_allclose(out, np.exp(x) * x, rtol=1e-15)
    np.testing.assert_allclose(od, np.exp(x) * (1 + x) * v, rtol=1e-14)
    out, od = tg.jvp(lambda a, b: a * b, (2.0, 3.0), (1.0, 10.0))
    assert out == 6.0 and od == 3.0 + 20.0
    with pytest.raises(ValueError):
        tg.jvp(np.sin, (x,), (np.ones(3),))
    with pytest.raises(TypeError):
        tg.jvp(np.sin, x, v)


# ------------------------------------------------------------------ consistency on random programs
@pytest.mark.parametrize("seed", range(20))
def test_adjoint_identity_random_programs(seed):
    """<u, J v> (tangent sweep) == <J^T u, v> (reverse sweep) to 1e-12 relative."""
    f, args = random_program(seed)
    r = np.random.default_rng(100 + seed)
    v = tuple(r.standard_normal(np.shape(a)) for a in args)
    out, od = tg.jvp(f, args, v)
    u = tuple(r.standard_normal(np.shape(o)) for o in out)
    _, fn = tg.vjp(f, *args)
    ct = fn(u)
    lhs = sum(float(np.sum(a * b)) for a, b in zip(u, od))
    rhs = sum(float(np.sum(a * b)) for a, b in zip(ct, v))
    scale = (sum(float(np.sum(np.abs(a * b))) for a, b in zip(u, od))
             + sum(float(np.sum(np.abs(a * b))) for a, b in zip(ct, v)))
    assert abs(lhs - rhs) <= 1e-12 * scale


# ------------------------------------------------------------------ quadratic: exact Hessian
def test_quadratic_hessian_and_hvp():
    r = np.random.default_rng(0)
    n = 7
    B = r.standard_normal((n, n))
    H = B + B.T
    f = lambda w: 0.5 * w @ H @ w  # noqa: E731
    w = r.standard_normal(n)
    Hd = tg.hessian(f)(w)
    assert Hd.shape == (n, n)
    assert rel(Hd, H) < 1e-12
    v = r.standard_normal(n)
    assert rel(tg.hvp(f, (w,), (v,)), H @ v) < 1e-12
    assert rel(tg.grad(f)(w), H @ w) < 1e-12
    # the same quadratic written elementwise (sum of products) and with a matrix argument
    f2 = lambda w: 0.5 * np.sum(w[:, None] * H * w[None, :])  # noqa: E731
    assert rel(tg.hessian(f2)(w), H) < 1e-12
    W = w.reshape(1, n)
    f3 = lambda W: 0.5 * np.sum((W @ H) * W)  # noqa: E731
    assert tg.hessian(f3)(W).shape == (1, n, 1, n)
    assert rel(tg.hessian(f3)(W).reshape(n, n), H) < 1e-12


def test_hvp_several_primals():
    f = lambda a, b: np.sum(a ** 2 * b) + b[0] ** 3  # noqa: E731
    a, b = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    va, vb = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    ha, hb = tg.hvp(f, (a, b), (va, vb))
    # H = [[diag(2b), diag(2a)], [diag(2a), diag(6 b0 e0)]]
    np.testing.assert_allclose(ha, 2 * b * va + 2 * a * vb, rtol=1e-15)
    np.testing.assert_allclose(hb, 2 * a * va + np.array([6 * b[0] * vb[0], 0.0]), rtol=1e-15)


# ------------------------------------------------------------------ dual numbers: chain rule
CHAINS = [  # (f, f', g, g', h, h')
    (np.sin, np.cos, np.exp, np.exp, lambda x: x ** 2, lambda x: 2 * x),
    (np.log, lambda u: 1 / u, lambda u: 1 + u ** 2, lambda u: 2 * u, np.tanh, lambda x: 1 - np.tanh(x) ** 2),
    (np.sqrt, lambda u: 0.5 / np.sqrt(u), np.cosh, np.sinh, lambda x: 3 * x - 1, lambda x: 3.0),
    (np.arctan, lambda u: 1 / (1 + u ** 2), lambda u: u ** 3, lambda u: 3 * u ** 2, np.sin, np.cos),
]


@pytest.mark.parametrize("k", range(len(CHAINS)))
def test_dual_number_chain_rule(k):
    f, df, g, dg, h, dh = CHAINS[k]
    for x in (0.3, 0.9, 1.7):
        want = df(g(h(x))) * dg(h(x)) * dh(x)
        comp = lambda x: f(g(h(x)))  # noqa: E731
        assert rel(tg.derivative(comp)(x), want) < 1e-13
        _, d = tg.jvp(comp, (x,), (1.0,))
        assert rel(d, want) < 1e-13
        _, d = tg.jvp(comp, (np.array([x, x]),), (np.array([1.0, 2.0]),))
        assert rel(d, [want, 2 * want]) < 1e-13


# ------------------------------------------------------------------ nesting
def test_grad_of_grad_closed_form():
    f = lambda x: np.sin(x) * x ** 2  # noqa: E731
    for x in (0.4, 1.3):
        d2 = tg.grad(tg.grad(f))(x)
        want = 2 * np.sin(x) + 4 * x * np.cos(x) - x ** 2 * np.sin(x)
        assert rel(d2, want) < 1e-13
        d3 = tg.grad(tg.grad(tg.grad(f)))(x)
        want3 = 6 * np.cos(x) - 6 * x * np.sin(x) - x ** 2 * np.cos(x)
        assert rel(d3, want3) < 1e-12
    assert tapegrad.tracing.tracer._stack() == []


def test_jacobian_of_grad_equals_hessian():
    f = lambda x: np.sum(np.exp(x[:-1] * x[1:])) + np.prod(x) + np.sum(np.sin(x) ** 2)  # noqa: E731
    x = np.array([0.3, -0.2, 0.8, 0.5])
    H = tg.hessian(f)(x)
    for mode in ("fwd", "rev", "auto"):
        assert rel(tg.jacobian(tg.grad(f), mode=mode)(x), H) < 1e-12
    np.testing.assert_allclose(H, H.T, rtol=1e-13)
    # and the Hessian against its closed form for the first term's diagonal pattern
    e = np.exp(x[:-1] * x[1:])
    Hc = np.diag(2 * np.cos(2 * x))
    for i in range(3):
        Hc[i, i] += e[i] * x[i + 1] ** 2
        Hc[i + 1, i + 1] += e[i] * x[i] ** 2
        Hc[i, i + 1] += e[i] * (1 + x[i] * x[i + 1])
        Hc[i + 1, i] += e[i] * (1 + x[i] * x[i + 1])
    for i in range(4):
        for j in range(4):
            if i != j:
                Hc[i, j] += np.prod(np.delete(x, [i, j]))
    assert rel(H, Hc) < 1e-12


def test_grad_of_function_calling_grad():
    inner = lambda x, a: np.sum(a * x ** 3)  # noqa: E731

    def outer(a):
        g = tg.grad(inner)(np.array([1.0, 2.0]), a)   # 3 a x^2
        return np.sum(g * g)                           # 9 a^2 sum x^4

    a = 0.7
    assert rel(tg.grad(outer)(a), 2 * 9 * a * (1 + 16)) < 1e-13

    def outer2(x):
        return np.sum(tg.grad(lambda y: np.sum(np.sin(y) * x))(x))  # sum cos(x) x

    x = np.array([0.2, 1.1])
    assert rel(tg.grad(outer2)(x), np.cos(x) - x * np.sin(x)) < 1e-13
    assert tapegrad.tracing.tracer._stack() == []


def test_jvp_of_grad_equals_hvp():
    r = np.random.default_rng(1)
    A = r.standard_normal((5, 5))
    f = lambda x: np.sum(np.tanh(A @ x) ** 2) + np.sum(np.log1p(x ** 2))  # noqa: E731
    x, v = r.standard_normal(5), r.standard_normal(5)
    _, hv = tg.jvp(tg.grad(f), (x,), (v,))
    assert rel(hv, tg.hvp(f, (x,), (v,))) < 1e-12
    assert rel(tg.hessian(f)(x) @ v, hv) < 1e-12


def test_vjp_and_hvp_inside_grad():
    def outer(x):
        _, fn = tg.vjp(np.sin, x)
        (c,) = fn(np.ones_like(x))
        return np.sum(c * x)            # sum x cos x
    x = np.array([0.5, 1.5])
    assert rel(tg.grad(outer)(x), np.cos(x) - x * np.sin(x)) < 1e-13
    h = tg.grad(lambda x: np.sum(tg.hvp(lambda y: np.sum(y ** 3), (x,), (np.ones(2),))))(x)
    np.testing.assert_allclose(h, 6.0 * np.ones(2), rtol=1e-14)     # d/dx sum 6 x = 6


# ------------------------------------------------------------------ jacobian modes
def test_jacobian_modes_agree_and_closed_form():
    A = np.arange(12.0).reshape(3, 4) / 10
    f = lambda x: np.sin(A @ x) * x[0]  # noqa: E731
    x = np.array([0.2, -0.4, 0.6, 1.0])
    want = np.cos(A @ x)[:, None] * A * x[0]
    want[:, 0] += np.sin(A @ x)
    for mode in ("fwd", "rev", "auto"):
        J = tg.jacobian(f, mode=mode)(x)
        assert J.shape == (3, 4)
        assert rel(J, want) < 1e-13
    assert rel(tg.jacfwd(f)(x), want) < 1e-13 and rel(tg.jacrev(f)(x), want) < 1e-13
    # shapes: out.shape + in.shape, and argnums picks the input
    g = lambda X, y: X * y  # noqa: E731
    X = np.ones((2, 3))
    y = np.array([1.0, 2.0, 3.0])
    for mode in ("fwd", "rev"):
        Jy = tg.jacobian(g, argnums=1, mode=mode)(X, y)
        assert Jy.shape == (2, 3, 3)
        np.testing.assert_array_equal(Jy, np.broadcast_to(np.eye(3), (2, 3, 3)))
    with pytest.raises(ValueError):
        tg.jacobian(f, mode="sideways")


# ------------------------------------------------------------------ errors leave no state behind
def test_missing_rule_names_the_function():
    with pytest.raises(NotImplementedError, match="unwrap"):
        tg.grad(lambda x: np.sum(np.unwrap(x)))(np.ones(2))
    with pytest.raises(NotImplementedError, match="corrcoef"):
        tg.grad(lambda x: np.sum(np.corrcoef(x, x)))(np.ones(2))
    assert tapegrad.tracing.tracer._stack() == []
    assert tg.grad(lambda x: np.sum(x ** 2))(np.ones(2)).tolist() == [2.0, 2.0]


def test_grad_of_non_scalar_says_so():
    with pytest.raises((TypeError, ValueError), match="scalar"):
        tg.grad(np.sin)(np.ones(3))
    with pytest.raises((TypeError, ValueError), match="scalar"):
        tg.hvp(np.sin, (np.ones(3),), (np.ones(3),))
    with pytest.raises((TypeError, ValueError), match="scalar"):
        tg.hessian(np.sin)(np.ones(3))
    # a size-1 array output is a scalar
    g = tg.grad(lambda x: x[:1] ** 2)(np.array([3.0, 1.0]))
    np.testing.assert_array_equal(g, [6.0, 0.0])


def test_item_assignment_into_plain_arrays_raises_clearly():
    # assignment into a traced array is a functional update (tests/test_assignment.py)
    def f(x):
        x[0] = 1.0
        return np.sum(x)
    np.testing.assert_array_equal(tg.grad(f)(np.ones(3)), [0.0, 1.0, 1.0])

    def g(x):
        y = np.zeros(3)
        y[:2] = x[:2]
        return np.sum(y)
    with pytest.raises(TypeError, match="tapegrad"):
        tg.grad(g)(np.ones(3))

    def h(x):   # a size-1 value: NumPy converts it with float(), which would drop its derivative
        y = np.zeros(3)
        y[0] = x[0]
        return np.sum(y) + np.sum(x)
    with pytest.raises(ValueError) as e:     # NumPy wraps our TypeError in its ValueError
        tg.grad(h)(np.ones(3))
    assert isinstance(e.value.__cause__, TypeError) and "zeros_like" in str(e.value.__cause__)

    def k(x):   # an explicit float() is a decision: a guarded constant, with a warning
        y = np.zeros(3)
        y[0] = float(x[0])
        return np.sum(y) + np.sum(x)
    with pytest.warns(tg.TracerConversionWarning):
        np.testing.assert_array_equal(tg.grad(k)(np.ones(3)), np.ones(3))
    assert tapegrad.tracing.tracer._stack() == []


def test_asarray_of_tracer_is_traced_and_a_float_dtype_raises_clearly():
    # np.asarray / np.array of a tracer: an object array of traced elements (Tracer.__array__)
    x = np.array([0.5, -2.0])
    for conv in (np.asarray, np.array):
        np.testing.assert_allclose(tg.grad(lambda x: np.sum(conv(x) ** 3))(x), 3 * x ** 2)
    # a float dtype would keep the values only: refused, naming the idiom
    for conv in (lambda t: np.asarray(t, dtype=float), lambda t: np.array(t, dtype=np.float32)):
        with pytest.raises(TypeError, match="tapegrad.*np.stack"):
            tg.grad(lambda x: np.sum(conv(x)))(np.ones(2))
    assert tapegrad.tracing.tracer._stack() == []


def test_exception_inside_f_leaves_no_state():
    calls = []

    def f(x):
        calls.append(1)
        y = np.sin(x)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return np.sum(y)
    with pytest.raises(RuntimeError, match="boom"):
        tg.grad(f)(np.ones(2))
    assert tapegrad.tracing.tracer._stack() == []
    np.testing.assert_allclose(tg.grad(f)(np.ones(2)), np.cos(np.ones(2)), rtol=1e-15)
    # also when it happens inside a nested operator
    calls.clear()
    with pytest.raises(RuntimeError, match="boom"):
        tg.grad(lambda x: np.sum(tg.grad(f)(x)))(np.ones(2))
    assert tapegrad.tracing.tracer._stack() == []
    np.testing.assert_allclose(tg.grad(lambda x: np.sum(tg.grad(f)(x)))(np.ones(2)), -np.sin(np.ones(2)),
                               rtol=1e-15)
    assert tapegrad.tracing.tracer._stack() == []


@pytest.mark.parametrize("op", [lambda x, a: x + a, lambda x, a: a - x, lambda x, a: x - a,
                                lambda x, a: a * x, lambda x, a: x / a, lambda x, a: a / x,
                                lambda x, a: x ** a, lambda x, a: a ** x, np.maximum],
                         ids=["x+a", "a-x", "x-a", "a*x", "x/a", "a/x", "x**a", "a**x", "maximum"])
def test_outer_scalar_in_inner_grad_keeps_its_derivative(op):
    """Regression: a scalar tracer of an outer recording, used as a constant operand of an inner
    recording, was folded into the inner op's parameter (x + c -> addc(c)) and lost its derivative:
    grad of a function calling grad(inner)(x, a) returned 0."""
    x = np.array([0.6, 1.4])

    def outer(a):
        g = tg.grad(lambda x, a: np.sum(np.sin(op(x, a)) * x))(x, a)
        return np.sum(g * g)
    tg.check_grads(outer, 1.3, modes=("fwd", "rev"), order=1)
    assert tg.grad(outer)(1.3) != 0.0


def test_closed_over_array_modified_between_uses():
    """Regression: big constants were cached by id(), so an array changed in place between two
    uses inside f was recorded with its first contents (wrong value and gradient, silently)."""
    def f(x):
        A = np.ones(10)
        out = 0.0
        for k in range(3):
            out = out + np.sum(x * A) * (k + 1)
            A *= 2.0
            A[0] = -1.0
        return out
    x = np.linspace(0.5, 1.5, 10)
    v, g = tg.value_and_grad(f)(x)
    # A_k for k = 0, 1, 2 and the closed-form gradient sum_k (k + 1) A_k
    A = [np.ones(10), np.r_[-1.0, 2 * np.ones(9)], np.r_[-1.0, 4 * np.ones(9)]]
    want_g = sum((k + 1) * a for k, a in enumerate(A))
    np.testing.assert_array_equal(g, want_g)
    assert rel(v, want_g @ x) < 1e-14
    assert rel(v, f(x)) < 1e-14
