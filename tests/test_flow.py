"""Gradient flow, gradient descent, step-size bounds and the flow CLI (tapegrad.flow).

Oracles are independent of tapegrad: the quadratic flow is ``expm(-t A H) w0``, step bounds are
eigenvalues from ``numpy.linalg.eigvalsh``, Newton's minimizer is ``solve(H, b)``.
"""
import sys

import numpy as np
import pytest
import scipy.linalg

import tapegrad as tg
from tapegrad import cli, flow


def rotated(eigs, seed=0):
    d = len(eigs)
    Q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return (Q * np.asarray(eigs, dtype=float)) @ Q.T


def quadratic(H, b=None):
    H = np.asarray(H, dtype=float)
    if b is None:
        def f(w):
            return 0.5 * (w @ (H @ w))
    else:
        b = np.asarray(b, dtype=float)

        def f(w):
            return 0.5 * (w @ (H @ w)) - b @ w
    return f


def spd(d, seed):
    M = np.random.default_rng(seed).standard_normal((d, d))
    return M @ M.T / d + 0.5 * np.eye(d)


D = 4
H4 = rotated([0.5, 1.0, 2.0, 4.0], seed=1)
W0 = np.array([1.0, -0.5, 0.25, 2.0])
A_MAT = spd(D, 2)
A_VEC = np.array([0.5, 1.0, 1.5, 2.0])
A_FORMS = {
    "none": (None, np.eye(D)),
    "matrix": (A_MAT, A_MAT),
    "vector": (A_VEC, np.diag(A_VEC)),
    "callable": (lambda v: A_MAT @ v, A_MAT),
}


# --- gradient flow ----------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["RK45", "BDF", "Radau", "LSODA"])
@pytest.mark.parametrize("form", sorted(A_FORMS))
def test_quadratic_flow_matches_matrix_exponential(method, form):
    A, A_dense = A_FORMS[form]
    times = [0.1, 0.5, 1.0, 3.0]
    res = flow.gradient_flow(quadratic(H4), W0, (0.0, 3.0), A=A, method=method, t_eval=times,
                             rtol=1e-10, atol=1e-12)
    exact = np.array([scipy.linalg.expm(-t * A_dense @ H4) @ W0 for t in times])
    assert res.success, res.message
    np.testing.assert_allclose(res.t, times)
    np.testing.assert_allclose(res.w, exact, rtol=0, atol=1e-6)
    np.testing.assert_allclose(res.f, [0.5 * w @ H4 @ w for w in exact], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(res.grad_norm, np.linalg.norm(exact @ H4, axis=1), atol=1e-5)
    if method in ("BDF", "Radau"):  # LSODA stays in its non-stiff (Adams) mode here
        assert res.njev > 0


def test_flow_loss_decreases_and_reports_steps():
    res = flow.gradient_flow(quadratic(H4), W0, (0.0, 2.0))
    assert res.success and res.n_steps > 0 and res.nfev >= res.n_steps
    assert np.all(np.diff(res.f) <= 1e-12)
    assert res.w.shape == (len(res.t), D)


def stiff_problem(d=8):
    """Condition 1e6: eigenvalues 1e-3 .. 1e3."""
    return rotated(np.logspace(-3, 3, d), seed=3), np.linspace(1.0, -1.0, d)


def test_stiff_flow_implicit_uses_exact_jacobian_and_far_fewer_steps():
    H, w0 = stiff_problem()
    f = quadratic(H)
    times = np.array([0.01, 1.0, 5.0, 20.0])
    exact = np.array([scipy.linalg.expm(-t * H) @ w0 for t in times])
    rk = flow.gradient_flow(f, w0, (0.0, 20.0), method="RK45", t_eval=times)
    bdf = flow.gradient_flow(f, w0, (0.0, 20.0), method="BDF", t_eval=times)
    lsoda = flow.gradient_flow(f, w0, (0.0, 20.0), method="LSODA", t_eval=times)
    for res in (rk, bdf, lsoda):
        assert res.success, res.message
        np.testing.assert_allclose(res.w, exact, rtol=0, atol=1e-6)
    # RK45 is held to ~3/lambda_max per step by stability; BDF follows the slow modes.
    assert bdf.n_steps * 10 < rk.n_steps, (bdf.n_steps, rk.n_steps)
    assert lsoda.n_steps * 10 < rk.n_steps, (lsoda.n_steps, rk.n_steps)
    assert rk.njev == 0 and bdf.njev > 0 and lsoda.njev > 0  # LSODA switched to BDF mode
    # Every Jacobian came from the tape, none from finite differences of the rhs ...
    assert bdf.n_jac == bdf.njev and bdf.n_rhs == bdf.nfev
    # ... which without it cost d extra right-hand sides per Jacobian.
    fd = flow.gradient_flow(f, w0, (0.0, 20.0), method="BDF", t_eval=times, jac=False)
    assert fd.n_jac == 0 and fd.n_rhs >= fd.nfev + fd.njev * len(w0)


def test_flow_accepts_a_recorded_tape():
    f = quadratic(H4)
    tape = tg.record(f, W0)
    a = flow.gradient_flow(tape, W0, (0.0, 1.0), t_eval=[1.0])
    b = flow.gradient_flow(f, W0, (0.0, 1.0), t_eval=[1.0])
    np.testing.assert_allclose(a.w, b.w, rtol=1e-12)


def test_flow_rejects_bad_preconditioners():
    f = quadratic(H4)
    with pytest.raises(ValueError, match="symmetric"):
        flow.gradient_flow(f, W0, (0, 1), A=np.triu(A_MAT))
    with pytest.raises(ValueError, match="positive"):
        flow.gradient_flow(f, W0, (0, 1), A=-A_VEC)
    with pytest.raises(ValueError, match="gradient_descent"):
        flow.gradient_flow(f, W0, (0, 1), A="newton")


# --- step-size theory -------------------------------------------------------------------------
def test_smoothness_lanczos_matches_dense_eigenvalue():
    H = rotated(np.linspace(0.1, 7.0, 30), seed=4)
    w = np.random.default_rng(5).standard_normal(30)
    beta, vec = flow.smoothness(quadratic(H), w, return_vector=True)
    assert beta == pytest.approx(np.linalg.eigvalsh(H)[-1], rel=1e-9)
    np.testing.assert_allclose(H @ vec, beta * vec, atol=1e-7)


def test_smoothness_on_nonquadratic_uses_local_hessian():
    def f(w):
        return 0.25 * np.sum(w ** 4) + 0.5 * np.sum(w * w)

    w = np.linspace(-2.0, 1.0, 12)
    assert flow.smoothness(f, w) == pytest.approx(1.0 + 3.0 * 4.0, rel=1e-9)


@pytest.mark.parametrize("d", [5, 20])
def test_gd_converges_just_below_and_diverges_just_above_the_bound(d):
    H = rotated(np.linspace(1.0, 10.0, d), seed=d)
    f = quadratic(H)
    w0 = np.ones(d)
    bound = flow.stable_step(f, w0)
    assert bound.eta_max == pytest.approx(2.0 / 10.0, rel=1e-9)
    assert bound.eta_sharp == pytest.approx(bound.eta_max) == pytest.approx(bound.eta_descent)
    below = flow.gradient_descent(f, w0, 0.99 * bound.eta_max, 5000, tol=1e-8)
    above = flow.gradient_descent(f, w0, 1.01 * bound.eta_max, 5000, tol=1e-8)
    assert below.reason == "converged", below.reason
    assert above.reason == "diverged", above.reason
    assert below.f[-1] < 1e-15 and above.f[-1] > 1e6 * above.f[0]


def test_stable_step_with_preconditioner():
    h = np.array([1.0, 4.0, 10.0, 2.0])
    a = np.array([2.0, 1.0, 0.25, 1.0])
    f = quadratic(np.diag(h))
    w0 = np.ones(4)
    b = flow.stable_step(f, w0, A=a)
    assert b.beta == pytest.approx(10.0, rel=1e-9)
    assert (b.lambda_min_A, b.lambda_max_A) == (0.25, 2.0)
    assert b.eta_max == pytest.approx(2.0 / (10.0 * 2.0))
    assert b.eta_descent == pytest.approx(2.0 * 0.25 / (10.0 * 4.0))
    assert b.eta_sharp == pytest.approx(2.0 / np.max(a * h), rel=1e-9)  # 2 / 4
    assert b.eta_descent <= b.eta_max <= b.eta_sharp
    ok = flow.gradient_descent(f, w0, 0.99 * b.eta_sharp, 3000, A=a, tol=1e-8)
    bad = flow.gradient_descent(f, w0, 1.01 * b.eta_sharp, 3000, A=a, tol=1e-8)
    assert (ok.reason, bad.reason) == ("converged", "diverged")


def test_stable_step_sharp_bound_for_a_dense_preconditioner_by_arnoldi():
    d = 12
    H, A = rotated(np.linspace(1.0, 6.0, d), seed=6), spd(d, 7)
    b = flow.stable_step(quadratic(H), np.ones(d), A=lambda v: A @ v)
    lam = np.max(np.linalg.eigvals(A @ H).real)
    assert b.eta_sharp == pytest.approx(2.0 / lam, rel=1e-8)
    assert b.lambda_max_A == pytest.approx(np.linalg.eigvalsh(A)[-1], rel=1e-10)


# --- gradient descent -------------------------------------------------------------------------
def test_gd_preconditioner_forms_agree():
    f = quadratic(H4)
    runs = [flow.gradient_descent(f, W0, 0.1, 25, A=A) for A in
            (A_MAT, lambda v: A_MAT @ v)]
    np.testing.assert_allclose(runs[0].w, runs[1].w, rtol=1e-12)
    diag = flow.gradient_descent(f, W0, 0.1, 25, A=A_VEC)
    w = W0.copy()
    for _ in range(25):
        w = w - 0.1 * A_VEC * (H4 @ w)
    np.testing.assert_allclose(diag.w[-1], w, rtol=1e-10)
    assert runs[0].reason == "max_steps" and runs[0].n_steps == 25


def test_newton_is_one_step_on_a_quadratic():
    d = 6
    H = rotated(np.logspace(-2, 3, d), seed=8)
    b = np.arange(1.0, d + 1.0)
    res = flow.gradient_descent(quadratic(H, b), np.zeros(d), 1.0, 10, A="newton", tol=1e-8)
    np.testing.assert_allclose(res.w[1], np.linalg.solve(H, b), rtol=1e-8)
    assert res.reason == "converged" and res.n_steps == 1


def test_newton_reports_singular_hessian():
    f = quadratic(np.diag([1.0, 0.0]))
    res = flow.gradient_descent(f, np.ones(2), 1.0, 5, A="newton")
    assert res.reason == "singular"


def badly_scaled(d, seed=9):
    """A well-conditioned problem in badly scaled coordinates: H = S M S, S spanning 1e-2 .. 1."""
    S = np.logspace(-2, 0, d)
    M = spd(d, seed) + 2.0 * np.eye(d)
    M = M / np.sqrt(np.outer(np.diag(M), np.diag(M)))  # unit diagonal
    return S[:, None] * M * S[None, :]


def test_jacobi_beats_plain_gd_on_a_badly_scaled_problem():
    d = 10
    H = badly_scaled(d)
    f = quadratic(H)
    w0 = np.ones(d)
    plain = flow.gradient_descent(f, w0, 0.9 * flow.stable_step(f, w0).eta_max, 200)
    jac = flow.gradient_descent(f, w0, 0.9 * flow.stable_step(f, w0, A=1.0 / np.diag(H)).eta_sharp,
                                200, A="jacobi")
    assert jac.preconditioner == "jacobi"
    assert jac.f[-1] < 1e-10 * plain.f[-1], (jac.f[-1], plain.f[-1])
    assert plain.f[-1] > 1e-6  # plain GD is stuck on the small-curvature directions


def test_hessian_diagonal_exact_and_estimated():
    d = 300  # above JACOBI_EXACT_MAX_DIM: the estimate from hvps is used
    h = np.logspace(0, 3, d)

    def f(w):
        return 0.5 * np.sum(h * w * w) + 0.1 * np.sum(w[1:] * w[:-1])

    w = np.zeros(d)
    exact = flow.hessian_diagonal(f, w, exact=True)
    np.testing.assert_allclose(exact, h, rtol=1e-12)
    est = flow.hessian_diagonal(f, w, n_samples=64)
    # Off-diagonal entries are 0.1 per neighbour: the estimate errs by O(0.1 * 2 / sqrt(64)).
    assert np.max(np.abs(est - h)) < 0.2
    diag_only = flow.hessian_diagonal(lambda w: 0.5 * np.sum(h * w * w), w, n_samples=4)
    np.testing.assert_allclose(diag_only, h, rtol=1e-12)  # exact for a diagonal Hessian


def test_jacobi_with_estimated_diagonal_in_high_dimension():
    d = 300
    h = np.logspace(0, 4, d)

    def f(w):
        return 0.5 * np.sum(h * w * w) + 0.01 * np.sum(w[1:] * w[:-1])

    w0 = np.ones(d)
    res = flow.gradient_descent(f, w0, 0.5, 60, A="jacobi", refresh=1000)
    plain = flow.gradient_descent(f, w0, 1.0 / h.max(), 60)
    assert res.f[-1] < 1e-8 * res.f[0] and plain.f[-1] > 1e-3 * plain.f[0]


def test_gd_rejects_unknown_named_preconditioner():
    with pytest.raises(ValueError, match="unknown preconditioner"):
        flow.gradient_descent(quadratic(H4), W0, 0.1, 3, A="adam")


# --- flow vs GD -------------------------------------------------------------------------------
def test_compare_flow_gd_deviation_shrinks_like_eta():
    f = quadratic(H4)
    cmp = flow.compare_flow_gd(f, W0, t_final=2.0)
    assert np.all(np.diff(cmp.deviation) > 0)  # etas ascend, deviations too
    assert 0.8 < cmp.order < 1.2, cmp.order
    np.testing.assert_allclose(cmp.etas / cmp.bound.eta_max, [0.05, 0.1, 0.2, 0.4])
    for eta, gd in zip(cmp.etas, cmp.gd):
        assert gd.n_steps == int(np.floor(2.0 / eta + 1e-9))


def test_compare_flow_gd_with_preconditioner():
    cmp = flow.compare_flow_gd(quadratic(H4), W0, etas=[0.01, 0.02, 0.04], t_final=1.0,
                               A=A_VEC)
    assert 0.8 < cmp.order < 1.2


def test_compare_picture(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "flow.png"
    cmp = flow.compare_flow_gd(quadratic(np.diag([1.0, 8.0])), np.array([1.0, 1.0]),
                               t_final=1.0, out=str(out))
    assert out.stat().st_size > 1000
    assert len(cmp.figure.axes) >= 2  # loss panel + contour panel for a 2-D problem


def test_picture_without_matplotlib_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match="optional extra"):
        flow.compare_flow_gd(quadratic(H4), W0, t_final=0.5, plot=True)


# --- CLI --------------------------------------------------------------------------------------
@pytest.mark.parametrize("problem", ["quadratic", "rosenbrock", "logistic"])
def test_cli_prints_table(problem, capsys):
    assert cli.flow_main(["--problem", problem]) == 0
    text = capsys.readouterr().out
    assert "eta_max" in text and "max|gd-flow|" in text
    assert text.count("max_steps") == 4


def test_cli_options_and_picture(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "p.png"
    code = cli.flow_main(["--problem", "quadratic", "--eta", "0.01", "0.02", "--method", "BDF",
                          "--out", str(out)])
    assert code == 0 and out.exists()
    text = capsys.readouterr().out
    assert "BDF" in text and text.count("max_steps") == 2


def test_cli_rejects_unknown_problem(capsys):
    assert cli.flow_main(["--problem", "nope"]) == 2


def test_gd_follows_a_python_branch_that_flips_mid_run():
    # Huber-like in the norm: the branch taken changes as w enters the unit ball, so the
    # recorded tape must be re-recorded on replay, never differentiate the stale branch.
    def f(w):
        s = w @ w
        if s > 1.0:
            return np.sqrt(s) - 0.5
        return 0.5 * s

    def grad_np(w):
        n = np.linalg.norm(w)
        return w / n if n * n > 1.0 else w

    w0 = np.array([3.0, -2.0, 1.0])
    res = flow.gradient_descent(f, w0, 0.5, 30)
    w = w0.copy()
    for k in range(30):
        w = w - 0.5 * grad_np(w)
        np.testing.assert_allclose(res.w[k + 1], w, rtol=1e-12, atol=1e-15)
    assert np.linalg.norm(res.w[5]) > 1.0 > np.linalg.norm(res.w[-1])
