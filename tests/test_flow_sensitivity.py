"""Sensitivities of the gradient flow (flow.gradient_flow_jvp: forward; gradient_flow_grad:
adjoint), against three independent references: closed forms on quadratics (w(T) is a matrix
exponential), central differences of the flow itself (solved by scipy at tight tolerances), and
differentiating through many small gradient-descent steps with nested ``tg.grad`` (explicit
Euler, so the error must fall like the step size)."""
import numpy as np
import pytest
import scipy.linalg as sl
from scipy.integrate import solve_ivp

import tapegrad as tg
from tapegrad import flow

rng = np.random.default_rng(0)
D = 4
_M = rng.standard_normal((D, D))
Q = _M @ _M.T / D + 0.5 * np.eye(D)
W0 = rng.standard_normal(D)
TH = 0.3 * rng.standard_normal(D)
C = rng.standard_normal(D)
T = 1.3
ADIAG = np.array([1.0, 0.5, 2.0, 1.5])


def quad(w):
    return 0.5 * w @ (Q @ w)


def quad_th(w, th):
    return 0.5 * w @ (Q @ w) - th @ w


def nonlin(w, th):
    return 0.5 * w @ (Q @ w) + 0.25 * np.sum(w ** 4) + th @ np.cos(w)


def grad_nonlin(w, th):                                   # by hand, for the reference solves
    return Q @ w + w ** 3 - th * np.sin(w)


def loss(w):
    return C @ w + 0.5 * np.sum(w ** 2)


def flow_end(w0, th, A=None):
    a = np.ones(D) if A is None else A
    sol = solve_ivp(lambda t, w: -a * grad_nonlin(w, th), (0, T), w0, method="DOP853",
                    rtol=1e-13, atol=1e-14)
    return sol.y[:, -1]


def central(fun, x, h=1e-5):
    cols = []
    for i in range(x.size):
        e = np.zeros(x.size)
        e[i] = h
        cols.append((fun(x + e) - fun(x - e)) / (2 * h))
    return np.array(cols).T


# ------------------------------------------------------------------ closed forms (quadratics)
@pytest.mark.parametrize("method", ["RK45", "DOP853", "BDF", "Radau"])
def test_forward_sensitivity_is_the_matrix_exponential(method):
    E = sl.expm(-Q * T)
    V = rng.standard_normal((D, 3))
    res = flow.gradient_flow_jvp(quad, W0, T, V, method=method)
    assert res.success
    np.testing.assert_allclose(res.w, E @ W0, atol=1e-8)
    np.testing.assert_allclose(res.tangent, E @ V, atol=1e-8)
    one = flow.gradient_flow_jvp(quad, W0, T, V[:, 0], method=method)
    assert one.tangent.shape == (D,)
    np.testing.assert_allclose(one.tangent, E @ V[:, 0], atol=1e-8)


@pytest.mark.parametrize("method", ["RK45", "BDF"])
def test_sensitivities_in_theta_closed_form(method):
    # w(T) = Q^-1 th + expm(-Q T) (w0 - Q^-1 th): d w(T)/d th = (I - expm(-QT)) Q^-1
    E, Qi = sl.expm(-Q * T), np.linalg.inv(Q)
    wT = Qi @ TH + E @ (W0 - Qi @ TH)
    Dth = (np.eye(D) - E) @ Qi
    V, Vt = rng.standard_normal((D, 2)), rng.standard_normal((D, 2))
    res = flow.gradient_flow_jvp(quad_th, W0, T, V, theta=TH, v_theta=Vt, method=method)
    np.testing.assert_allclose(res.w, wT, atol=1e-8)
    np.testing.assert_allclose(res.tangent, E @ V + Dth @ Vt, atol=1e-8)
    g = flow.gradient_flow_grad(quad_th, W0, T, loss=lambda w: 0.5 * w @ w, theta=TH, method=method)
    assert g.success and g.loss == pytest.approx(0.5 * wT @ wT, rel=1e-8)
    np.testing.assert_allclose(g.grad_w0, E.T @ wT, atol=1e-8)
    np.testing.assert_allclose(g.grad_theta, Dth.T @ wT, atol=1e-8)


def test_adjoint_with_a_diagonal_preconditioner_closed_form():
    # dw/dt = -A Q w: w(T) = expm(-A Q T) w0, dL/dw0 = expm(-AQT)^T grad L
    E = sl.expm(-np.diag(ADIAG) @ Q * T)
    g = flow.gradient_flow_grad(quad, W0, T, loss=loss, A=ADIAG)
    wT = E @ W0
    np.testing.assert_allclose(g.w, wT, atol=1e-9)
    np.testing.assert_allclose(g.grad_w0, E.T @ (C + wT), atol=1e-8)


# ------------------------------------------------------------------ central differences
@pytest.mark.parametrize("method", ["RK45", "Radau"])
def test_nonlinear_sensitivities_match_central_differences(method):
    J_w0 = central(lambda x: flow_end(x, TH), W0)
    J_th = central(lambda x: flow_end(W0, x), TH)
    V, Vt = rng.standard_normal((D, 2)), rng.standard_normal((D, 2))
    res = flow.gradient_flow_jvp(nonlin, W0, T, V, theta=TH, v_theta=Vt, method=method)
    np.testing.assert_allclose(res.tangent, J_w0 @ V + J_th @ Vt, atol=1e-6)

    g = flow.gradient_flow_grad(nonlin, W0, T, loss=loss, theta=TH, method=method)
    np.testing.assert_allclose(g.grad_w0, central(lambda x: loss(flow_end(x, TH)), W0), atol=1e-6)
    np.testing.assert_allclose(g.grad_theta, central(lambda x: loss(flow_end(W0, x)), TH), atol=1e-6)


def test_default_loss_is_f_at_the_end_with_its_direct_theta_term():
    g = flow.gradient_flow_grad(nonlin, W0, T, theta=TH)
    assert g.loss == pytest.approx(nonlin(flow_end(W0, TH), TH), rel=1e-9)
    fd_w0 = central(lambda x: nonlin(flow_end(x, TH), TH), W0)
    fd_th = central(lambda x: nonlin(flow_end(W0, x), x), TH)
    np.testing.assert_allclose(g.grad_w0, fd_w0, atol=1e-6)
    np.testing.assert_allclose(g.grad_theta, fd_th, atol=1e-6)


def test_adjoint_and_forward_agree_and_take_a_recorded_tape():
    f_w = lambda w: nonlin(w, TH)                                   # noqa: E731
    tape = tg.record(f_w, W0)
    J = flow.gradient_flow_jvp(tape, W0, T, np.eye(D)).tangent       # all of d w(T)/d w0
    g = flow.gradient_flow_grad(tape, W0, T, loss=loss)
    np.testing.assert_allclose(g.grad_w0, J.T @ (C + g.w), atol=1e-8)


# ------------------------------------------------------------------ through many small GD steps
def unrolled_loss(w0, th, n):
    eta = T / n
    df = tg.grad(nonlin)
    w = w0
    for _ in range(n):
        w = w - eta * df(w, th)
    return loss(w)


def test_gd_derivatives_converge_to_the_flow_sensitivity_at_first_order():
    g = flow.gradient_flow_grad(nonlin, W0, T, loss=loss, theta=TH)
    errs = []
    for n in (50, 100, 200):
        gw, gt = tg.grad(unrolled_loss, argnums=(0, 1))(W0, TH, n)
        errs.append(max(np.abs(gw - g.grad_w0).max(), np.abs(gt - g.grad_theta).max()))
    # explicit Euler: the error halves when the step halves (the adjoint is far more accurate)
    assert errs[2] < 0.02
    for a, b in zip(errs, errs[1:]):
        assert 0.4 < b / a < 0.6, errs


# ------------------------------------------------------------------ bad input
def test_bad_input_is_named():
    with pytest.raises(ValueError, match="t_final"):
        flow.gradient_flow_jvp(quad, W0, -1.0, W0)
    with pytest.raises(ValueError, match=r"v must have shape \(4,\)"):
        flow.gradient_flow_jvp(quad, W0, T, np.ones(3))
    with pytest.raises(ValueError, match="v_theta needs theta"):
        flow.gradient_flow_jvp(quad, W0, T, W0, v_theta=W0)
    with pytest.raises(ValueError, match="v_theta must have theta's shape"):
        flow.gradient_flow_jvp(quad_th, W0, T, W0, theta=TH, v_theta=np.ones(3))
    with pytest.raises(TypeError, match="plain function"):
        flow.gradient_flow_grad(tg.record(quad, W0), W0, T, theta=TH)
    with pytest.raises(ValueError, match="w0 must be a 1-D"):
        flow.gradient_flow_grad(quad, np.ones((2, 2)), T)
