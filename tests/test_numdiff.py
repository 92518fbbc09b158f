"""Tests for tapegrad.numdiff: closed forms, convergence orders, step rules, errors.

Every expected value here is computed from a closed form (or a documented step rule
written out by hand), never by the code under test.
"""

import math

import numpy as np
import pytest

from tapegrad.numdiff import (
    NumDiffResult,
    default_step,
    derivative,
    directional,
    gradient,
    jacobian,
)



# --------------------------------------------------------------------------- step rules


def test_textbook_max_rule_forward():
    # (1 + max|x|) * sqrt(eps) = (1 + 3) * 1e-2
    h = default_step(np.array([1.0, -3.0]), method="forward", eps=1e-4, scale="max")
    np.testing.assert_allclose(h, [4e-2, 4e-2], rtol=1e-14)


def test_elementwise_rule_forward_and_backward():
    for method in ("forward", "backward"):
        h = default_step([1.0, -3.0], method=method, eps=1e-4)
        np.testing.assert_allclose(h, [2e-2, 4e-2], rtol=1e-14)


def test_central_rules():
    # eps**(1/3) = 1e-2 for eps = 1e-6
    h = default_step([0.0, 2.0], method="central", eps=1e-6)
    np.testing.assert_allclose(h, [1e-2, 3e-2], rtol=1e-12)
    h = default_step([0.0, 2.0], method="central", eps=1e-6, scale="max")
    np.testing.assert_allclose(h, [3e-2, 3e-2], rtol=1e-12)


def test_default_eps_is_float64_machine_epsilon():
    # eps = 2**-52, so sqrt(eps) = 2**-26 and eps**(1/3) = 2**(-52/3)
    np.testing.assert_allclose(default_step([0.0], method="forward"), [2.0**-26], rtol=1e-15)
    np.testing.assert_allclose(default_step([0.0], method="central"), [2.0 ** (-52 / 3)], rtol=1e-14)
    np.testing.assert_allclose(default_step([4.0], method="central"), [5 * 2.0 ** (-52 / 3)], rtol=1e-14)


def test_default_step_scalar_and_shape():
    h = default_step(2.0, method="forward", eps=1e-4)
    assert np.shape(h) == ()
    assert h == pytest.approx(3e-2, rel=1e-14)
    assert default_step(np.zeros((2, 3))).shape == (2, 3)


def test_gradient_reports_rule_step():
    r = gradient(lambda x: np.sum(x**2), [1.0, -3.0], method="forward", eps=1e-4, scale="max")
    np.testing.assert_allclose(r.step, [4e-2, 4e-2], rtol=1e-12)
    r = gradient(lambda x: np.sum(x**2), [1.0, -3.0], method="central", eps=1e-6)
    np.testing.assert_allclose(r.step, [2e-2, 4e-2], rtol=1e-12)


# --------------------------------------------------------------------------- closed forms


def test_polynomial_exact_truncation_errors():
    # With h = 2**-4 and x = 1.5 every operation below is exact in binary floating point,
    # so the Taylor remainders are seen exactly:
    #   forward  x**2: 2x + h;  backward x**2: 2x - h;  central x**3: 3x**2 + h**2.
    x, h = 1.5, 2.0**-4
    assert derivative(lambda t: t**2, x, method="forward", h=h).value == pytest.approx(2 * x + h, abs=1e-13)
    assert derivative(lambda t: t**2, x, method="backward", h=h).value == pytest.approx(2 * x - h, abs=1e-13)
    assert derivative(lambda t: t**3, x, method="central", h=h).value == pytest.approx(3 * x**2 + h**2, abs=1e-13)
    # central differences are exact for quadratics (up to rounding)
    assert derivative(lambda t: 5 * t**2 - t + 2, x, h=0.25).value == pytest.approx(10 * x - 1, abs=1e-13)


@pytest.mark.parametrize("x", [-2.0, -0.3, 0.0, 0.7, 3.0])
def test_exp_sin_default_steps(x):
    for fun, dfun in ((np.exp, np.exp), (np.sin, np.cos)):
        c = derivative(fun, x)
        assert c.value == pytest.approx(dfun(x), rel=1e-9, abs=1e-9)
        for method in ("forward", "backward"):
            r = derivative(fun, x, method=method)
            assert r.value == pytest.approx(dfun(x), rel=1e-6, abs=1e-7)


def test_gradient_matrix_input():
    X = np.arange(6.0).reshape(2, 3) - 2.5
    r = gradient(lambda A: np.sum(A**2) + np.sum(np.sin(A)), X)
    assert isinstance(r, NumDiffResult)
    assert r.value.shape == (2, 3) and r.step.shape == (2, 3)
    np.testing.assert_allclose(r.value, 2 * X + np.cos(X), rtol=1e-9, atol=1e-9)
    assert r.method == "central"
    assert r.evaluations == 12


def test_gradient_evaluation_counts():
    f = lambda x: np.sum(np.exp(x))  # noqa: E731
    x = np.ones(5)
    assert gradient(f, x, method="central").evaluations == 10
    assert gradient(f, x, method="forward").evaluations == 6
    assert gradient(f, x, method="backward").evaluations == 6


def test_gradient_python_float_and_int_inputs():
    r = gradient(np.sin, 0.3)
    assert np.shape(r.value) == () and np.shape(r.step) == ()
    assert r.value == pytest.approx(math.cos(0.3), rel=1e-9)
    r = gradient(lambda x: np.sum(x**2), [1, 2, 3])  # ints are converted to float64
    np.testing.assert_allclose(r.value, [2.0, 4.0, 6.0], rtol=1e-9)


def test_jacobian_known_vector_function():
    def f(x):
        return np.array([x[0] * x[1], np.sin(x[0]) + x[2] ** 2, np.exp(x[1]) * x[2]])

    x0, x1, x2 = 0.5, -1.2, 2.0
    expected = np.array(
        [
            [x1, x0, 0.0],
            [math.cos(x0), 0.0, 2 * x2],
            [0.0, math.exp(x1) * x2, math.exp(x1)],
        ]
    )
    r = jacobian(f, [x0, x1, x2])
    assert r.value.shape == (3, 3)
    np.testing.assert_allclose(r.value, expected, rtol=1e-9, atol=1e-9)
    assert r.evaluations == 6
    rf = jacobian(f, [x0, x1, x2], method="forward")
    np.testing.assert_allclose(rf.value, expected, rtol=1e-6, atol=1e-6)
    assert rf.evaluations == 4


def test_jacobian_layout_out_shape_plus_x_shape():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((4, 6))
    f = lambda X: (A @ X.ravel()).reshape(2, 2)  # noqa: E731
    r = jacobian(f, rng.standard_normal((2, 3)))
    assert r.value.shape == (2, 2, 2, 3)
    np.testing.assert_allclose(r.value, A.reshape(2, 2, 2, 3), rtol=1e-8, atol=1e-9)


def test_jacobian_scalar_output_matches_gradient_shape():
    x = np.array([[0.1, 0.2], [0.3, 0.4]])
    r = jacobian(lambda y: np.sum(y**3), x)
    assert r.value.shape == (2, 2)
    np.testing.assert_allclose(r.value, 3 * x**2, rtol=1e-8)


def test_derivative_vector_valued():
    r = derivative(lambda t: np.array([np.sin(t), t**2]), 0.4)
    np.testing.assert_allclose(r.value, [math.cos(0.4), 0.8], rtol=1e-9)


def test_empty_input():
    r = gradient(lambda x: 1.0, np.zeros(0))
    assert r.value.shape == (0,)
    r = jacobian(lambda x: np.ones(3), np.zeros(0))
    assert r.value.shape == (3, 0)


# --------------------------------------------------------------------------- worked example


def _worked_example(x):
    x1, x2, x3 = x
    with np.errstate(invalid="ignore"):
        return np.exp(x1 + x2**3) * x3 + np.sqrt(x3 * np.sin(np.pi / 2 * (x1 - x2)))


def test_worked_example_central_eps_1e4():
    # At (1, 1, 1), sin(pi/2 * (x1 - x2)) = sin(0) = 0 exactly, and it stays 0 when only
    # x3 moves, so the sqrt term is 0 at x3 +/- h. The first term is linear in x3, so the
    # central difference has no truncation error: dy/dx3 = e**2 up to rounding
    # (~ eps64 * e**2 / h with h = 2 * 1e-4**(1/3) ~ 0.093).
    r = gradient(_worked_example, [1.0, 1.0, 1.0], method="central", eps=1e-4)
    np.testing.assert_allclose(r.step, 2 * 1e-4 ** (1 / 3), rtol=1e-12)
    assert r.value[2] == pytest.approx(math.e**2, rel=1e-12)
    # In x1 and x2 the sqrt term has an infinite derivative and is undefined (sqrt of a
    # negative number) on one side, so a central difference cannot give a finite answer.
    assert np.isnan(r.value[0]) and np.isnan(r.value[1])
    # The textbook rule (1 + max|x|) * eps**(1/3) gives the same steps at (1, 1, 1).
    r_max = gradient(_worked_example, [1.0, 1.0, 1.0], eps=1e-4, scale="max")
    assert r_max.value[2] == pytest.approx(math.e**2, rel=1e-12)


def test_worked_example_forward_x1_blows_up_like_sqrt():
    # Forward difference in x1 with h = sqrt(1e-4) * (1 + 1) = 0.02 (closed form):
    #   (exp(2 + h) - exp(2)) / h + sqrt(sin(pi/2 * h)) / h,
    # the second part ~ sqrt(pi / (2 h)) grows without bound as h -> 0.
    h = 0.02
    expected = (math.exp(2 + h) - math.exp(2)) / h + math.sqrt(math.sin(math.pi / 2 * h)) / h
    r = gradient(_worked_example, [1.0, 1.0, 1.0], method="forward", eps=1e-4)
    assert r.value[0] == pytest.approx(expected, rel=1e-9)
    assert r.value[2] == pytest.approx(math.e**2, rel=1e-10)


# --------------------------------------------------------------------------- convergence orders


def _g(t):
    return np.exp(np.sin(t))


def _dg(t):
    return np.cos(t) * np.exp(np.sin(t))


@pytest.mark.parametrize(
    "method, h0, ratio",
    [("forward", 1e-3, 2.0), ("backward", 1e-3, 2.0), ("central", 1e-2, 4.0)],
)
def test_error_order_by_halving_h(method, h0, ratio):
    x = 0.7
    errors = [abs(derivative(_g, x, method=method, h=h0 / 2**k).value - _dg(x)) for k in range(3)]
    for k in range(2):
        assert errors[k] / errors[k + 1] == pytest.approx(ratio, rel=0.05)


def test_error_order_per_component_with_array_h():
    # f(x) = sum(exp(sin(x))), each component converges at the method's order.
    x = np.array([0.7, -0.4, 1.3])
    exact = _dg(x)
    f = lambda y: np.sum(_g(y))  # noqa: E731
    for method, h0, ratio in (("forward", 1e-3, 2.0), ("central", 1e-2, 4.0)):
        h = np.array([h0, h0 / 2, h0 / 4])
        e1 = np.abs(gradient(f, x, method=method, h=h).value - exact)
        e2 = np.abs(gradient(f, x, method=method, h=h / 2).value - exact)
        np.testing.assert_allclose(e1 / e2, ratio, rtol=0.05)


# --------------------------------------------------------------------------- directional


def test_directional_vector_function():
    def f(x):
        return np.array([x[0] ** 2 * x[1], np.sin(x[1])])

    x = np.array([0.3, 1.1])
    v = np.array([2.0, -0.5])
    jv = np.array([2 * x[0] * x[1] * v[0] + x[0] ** 2 * v[1], math.cos(x[1]) * v[1]])
    r = directional(f, x, v)
    np.testing.assert_allclose(r.value, jv, rtol=1e-9)
    assert r.evaluations == 2
    # default h: largest perturbation |h v_i| = eps**(1/3) * (1 + max|x|)
    assert r.step == pytest.approx(2.0 ** (-52 / 3) * 2.1 / 2.0, rel=1e-12)


def test_directional_explicit_h_is_central_difference():
    # central difference of t -> sum((x + t v)**3): exact derivative plus h**2 * sum(v**3)
    x = np.array([0.5, -1.0])
    v = np.array([1.0, 2.0])
    h = 2.0**-5
    r = directional(lambda y: np.sum(y**3), x, v, h=h)
    assert r.value == pytest.approx(np.sum(3 * x**2 * v) + h**2 * np.sum(v**3), abs=1e-12)


@pytest.mark.parametrize("order, h0, ratio", [(1, 1e-3, 2.0), (2, 1e-2, 4.0), (4, 1e-1, 16.0)])
def test_directional_orders(order, h0, ratio):
    x, v = np.array([0.7]), np.array([1.0])
    f = lambda y: _g(y[0])  # noqa: E731
    errors = [abs(directional(f, x, v, h=h0 / 2**k, order=order).value - _dg(0.7)) for k in range(3)]
    for k in range(2):
        assert errors[k] / errors[k + 1] == pytest.approx(ratio, rel=0.1)


def test_directional_zero_direction():
    r = directional(lambda y: np.sum(np.exp(y)), np.ones(3), np.zeros(3))
    assert r.value == 0.0


# --------------------------------------------------------------------------- input hygiene


def test_caller_array_untouched_and_fresh_arguments():
    x = np.array([[0.2, -0.7], [1.5, 0.1]])
    x_before = x.copy()
    seen = []

    def f(y):
        assert isinstance(y, np.ndarray) and y.shape == x.shape and y.dtype == np.float64
        assert y is not x
        seen.append(y)
        s = np.sum(y**2)
        y[...] = 1e6  # a hostile f that scribbles on its argument
        return s

    r = gradient(f, x)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_allclose(r.value, 2 * x_before, rtol=1e-9)
    assert len({id(y) for y in seen}) == len(seen)  # every call got its own array

    r = jacobian(lambda y: f(y) * np.ones(2), x, method="forward")
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_allclose(r.value[0], 2 * x_before, rtol=1e-6)

    v = np.ones_like(x)
    directional(f, x, v)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(v, np.ones_like(x))


def test_scalar_x_gets_a_float():
    seen = []
    derivative(lambda t: seen.append(t) or t**2, 1.0)
    assert all(isinstance(t, float) and np.shape(t) == () for t in seen)


# --------------------------------------------------------------------------- errors


def _sq(x):
    return np.sum(np.asarray(x) ** 2)


@pytest.mark.parametrize("func", [gradient, jacobian, derivative])
def test_bad_method(func):
    with pytest.raises(ValueError, match="method"):
        func(_sq, 1.0, method="centered")
    with pytest.raises(ValueError, match="method"):
        default_step(1.0, method="fwd")


def test_bad_scale_and_eps():
    with pytest.raises(ValueError, match="scale"):
        gradient(_sq, [1.0], scale="min")
    for eps in (0.0, -1e-4, np.nan, np.inf, 2.0):
        with pytest.raises(ValueError, match="eps"):
            gradient(_sq, [1.0], eps=eps)


@pytest.mark.parametrize("h", [np.nan, np.inf, -np.inf])
def test_non_finite_step(h):
    with pytest.raises(ValueError, match="h must be finite"):
        gradient(_sq, [1.0, 2.0], h=h)
    with pytest.raises(ValueError, match="h must be finite"):
        gradient(_sq, [1.0, 2.0], h=[1e-3, h])
    with pytest.raises(ValueError, match="h must be finite"):
        directional(_sq, [1.0, 2.0], [1.0, 0.0], h=h)


def test_non_positive_or_vanishing_step():
    for h in (0.0, -1e-3):
        with pytest.raises(ValueError, match="h must be positive"):
            gradient(_sq, [1.0], h=h)
        with pytest.raises(ValueError, match="h must be positive"):
            directional(_sq, [1.0], [1.0], h=h)
    with pytest.raises(ValueError, match="h is too small"):
        gradient(_sq, [1e20], h=1.0)  # 1e20 + 1 == 1e20


def test_h_wrong_shape():
    with pytest.raises(ValueError, match="h must be a scalar or have the shape of x"):
        gradient(_sq, np.zeros(3), h=[1e-3, 1e-3])
    with pytest.raises(ValueError, match="h must be a scalar or have the shape of x"):
        jacobian(_sq, np.zeros((2, 2)), h=np.full(4, 1e-3))
    with pytest.raises(ValueError, match="h must be a scalar"):
        directional(_sq, np.zeros(2), np.ones(2), h=[1e-3, 1e-3])


def test_gradient_requires_scalar_output():
    with pytest.raises(ValueError, match="f must return a scalar"):
        gradient(lambda x: 2 * x, np.ones(3))
    with pytest.raises(ValueError, match="f must return a scalar"):
        gradient(lambda x: np.ones(1), 1.0)


def test_output_shape_must_not_change():
    calls = []

    def f(x):
        calls.append(1)
        return np.ones(len(calls))

    with pytest.raises(ValueError, match="output of shape"):
        jacobian(f, np.zeros(2))


def test_bad_x_and_v():
    with pytest.raises(ValueError, match="x must be finite"):
        gradient(_sq, [1.0, np.nan])
    with pytest.raises(ValueError, match="x must be real"):
        gradient(_sq, [1.0 + 1j])
    with pytest.raises(ValueError, match="x must be a scalar"):
        derivative(np.sin, [1.0, 2.0])
    with pytest.raises(ValueError, match="v must have the shape of x"):
        directional(_sq, np.zeros(3), np.ones(2))
    with pytest.raises(ValueError, match="v must be finite"):
        directional(_sq, np.zeros(2), [1.0, np.inf])
    with pytest.raises(ValueError, match="order"):
        directional(_sq, np.zeros(2), np.ones(2), order=3)


def test_complex_output_rejected():
    with pytest.raises(ValueError, match="complex"):
        gradient(lambda x: np.sum(x) * 1j, np.ones(2))
