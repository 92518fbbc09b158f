"""numpy.linalg on complex matrices (rules/complex_linalg.py; docs/complex.md).

Each rule runs through ``check_grads`` (fwd and rev, order 2) of its real-pair form
F(x, y) = (Re f(x + iy), Im f(x + iy)), so real and imaginary parts are perturbed separately by
central differences; values are compared with NumPy's own; closed forms and the operators'
convention (grad = df/dx - i df/dy) are checked against independent formulas. Factors with
arbitrary phases (eigh, svd) are checked through phase-invariant losses.
"""
import numpy as np
import pytest

import tapegrad as tg


@pytest.fixture
def rng():
    return np.random.default_rng(11)


def cplx(rng, *shape, scale=1.0):
    return scale * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))


def split(*zs):
    """Real and imaginary parts of the outputs, stacked (a real function of the pair)."""
    return np.concatenate([np.ravel(np.real(z)) for z in zs] + [np.ravel(np.imag(z)) for z in zs])


def pair_form(f):
    return lambda x, y: split(*f(x + 1j * y))


def check_pair(f, z, want, order=2):
    """f(z) returns a tuple of arrays; compare with NumPy's want, then check the derivatives."""
    F = pair_form(f)
    np.testing.assert_allclose(tg.vjp(F, z.real, z.imag)[0], split(*want), rtol=1e-12, atol=1e-12)
    tg.check_grads(F, z.real, z.imag, modes=("fwd", "rev"), order=order)


def replay_checks(f, M0, rng, tol, hvp_tol, step=0.1):
    """A recording of f at M0 replayed at a nearby M: value, gradient and hvp against
    re-tracing, and a bytes round trip; returns M."""
    r = tg.record(f, M0)
    M = M0 + step * rng.standard_normal(M0.shape)
    D = rng.standard_normal(M0.shape)
    np.testing.assert_allclose(r(M), f(M), rtol=1e-13)
    np.testing.assert_allclose(r.grad(M), tg.grad(f)(M), rtol=tol, atol=tol)
    np.testing.assert_allclose(r.hvp(M, D), tg.hvp(f, (M,), (D,)), rtol=hvp_tol, atol=hvp_tol)
    np.testing.assert_array_equal(tg.load(r.to_bytes()).grad(M), r.grad(M))
    return M


def _fd(f, z, dz, h=1e-6):
    return (f(z + h * dz) - f(z - h * dz)) / (2 * h)


# ------------------------------------------------------------------ det, slogdet
@pytest.mark.parametrize("shape", [(3, 3), (2, 3, 3), (1, 1)])
def test_det_and_slogdet(shape, rng):
    A = cplx(rng, *shape)
    check_pair(lambda A: (np.linalg.det(A),), A, (np.linalg.det(A),))
    s, la = np.linalg.slogdet(A)
    check_pair(lambda A: tuple(np.linalg.slogdet(A)), A, (s, la))
    out = tg.vjp(lambda x, y: np.linalg.slogdet(x + 1j * y)[1], A.real, A.imag)[0]
    assert np.isrealobj(out)


def test_det_closed_forms(rng):
    A = cplx(rng, 4, 4)
    # d log|det A| = Re tr(A^-1 dA): the gradient (df/dx - i df/dy) is A^-T
    np.testing.assert_allclose(tg.grad(lambda A: np.linalg.slogdet(A)[1])(A), np.linalg.inv(A).T, rtol=1e-12)
    # det is holomorphic with derivative det(A) A^-T (the cofactor matrix)
    np.testing.assert_allclose(tg.grad(np.linalg.det, holomorphic=True)(A),
                               np.linalg.det(A) * np.linalg.inv(A).T, rtol=1e-12)
    # the phase of det: d arg det = Im tr(A^-1 dA), along random complex directions
    f = lambda A: np.angle(np.linalg.slogdet(A)[0])   # noqa: E731
    g = tg.grad(f)(A)
    for _ in range(3):
        dA = cplx(rng, 4, 4)
        np.testing.assert_allclose(np.real(np.sum(g * dA)), _fd(f, A, dA), rtol=1e-7, atol=1e-8)
        np.testing.assert_allclose(np.real(np.sum(g * dA)), np.imag(np.trace(np.linalg.solve(A, dA))), rtol=1e-12)


def test_det_of_a_real_matrix_made_complex_and_recorded(rng):
    # a real argument: a real gradient; the recording replays and round-trips
    N = rng.standard_normal((3, 3))
    f = lambda M: np.abs(np.linalg.det(M + 1j * N)) + np.real(np.linalg.slogdet(M - 1j * N)[0])  # noqa: E731
    M0 = rng.standard_normal((3, 3)) + 3 * np.eye(3)
    tg.check_grads(f, M0, modes=("fwd", "rev"), order=2)
    replay_checks(f, M0, rng, 1e-13, 1e-11)


def test_det_of_a_non_square_matrix_raises(rng):
    A = cplx(rng, 2, 3)
    with pytest.raises(np.linalg.LinAlgError, match="det.*square"):
        tg.grad(lambda A: np.abs(np.linalg.det(A)))(A)


# ------------------------------------------------------------------ cholesky, eigh (Hermitian)
def hpd(rng, *shape):
    """A Hermitian positive definite matrix (or a stack of them) with distinct eigenvalues."""
    B = cplx(rng, *shape)
    return B @ np.conj(np.swapaxes(B, -1, -2)) + np.eye(shape[-1])


@pytest.mark.parametrize("shape", [(3, 3), (2, 3, 3)])
def test_cholesky(shape, rng):
    # finite differences perturb every entry: the rule must see only what LAPACK reads (the
    # lower triangle and the real part of the diagonal)
    H = hpd(rng, *shape)
    check_pair(lambda A: (np.linalg.cholesky(A),), H, (np.linalg.cholesky(H),))
    check_pair(lambda A: (np.linalg.cholesky(A, upper=True),), H, (np.linalg.cholesky(H, upper=True),))


def test_cholesky_log_det_closed_form(rng):
    # 2 sum log Re diag(L) = log det(B B^H + I), whose gradient in B is 2 (B B^H + I)^-T conj(B)
    B = cplx(rng, 4, 4)
    f = lambda B: 2 * np.sum(np.log(np.real(np.diagonal(np.linalg.cholesky(B @ np.conj(B.T) + np.eye(4))))))  # noqa: E731
    H = B @ np.conj(B.T) + np.eye(4)
    np.testing.assert_allclose(f(B), np.linalg.slogdet(H)[1], rtol=1e-13)
    np.testing.assert_allclose(tg.grad(f)(B), 2 * np.linalg.inv(H).T @ np.conj(B), rtol=1e-11)


@pytest.mark.parametrize("shape", [(3, 3), (2, 3, 3)])
def test_eigvalsh_and_phase_invariant_eigh_losses(shape, rng):
    H = hpd(rng, *shape)
    w, V = np.linalg.eigh(H)
    for UPLO in ("L", "U"):
        check_pair(lambda A: (np.linalg.eigvalsh(A, UPLO=UPLO),), H, (np.linalg.eigvalsh(H, UPLO=UPLO),))
        # the values are NumPy's, eigenvectors (phases) included
        out = tg.vjp(lambda x, y: split(*np.linalg.eigh(x + 1j * y, UPLO=UPLO)), H.real, H.imag)[0]
        np.testing.assert_allclose(out, split(*np.linalg.eigh(H, UPLO=UPLO)), rtol=1e-12, atol=1e-12)
        g = lambda A: (lambda w, V: (np.abs(V) ** 2 * w[..., None, :],))(*np.linalg.eigh(A, UPLO=UPLO))  # noqa: E731
        check_pair(g, H, g(H))
    # |V|^2 weighted by w, and V diag(exp(w)) V^H: independent of the phases of the columns
    f = lambda A: (lambda w, V: (np.abs(V) ** 2 * w[..., None, :], (V * np.exp(w)[..., None, :]) @ np.conj(np.swapaxes(V, -1, -2)), w))(*np.linalg.eigh(A))  # noqa: E731
    check_pair(f, H, (np.abs(V) ** 2 * w[..., None, :], (V * np.exp(w)[..., None, :]) @ np.conj(np.swapaxes(V, -1, -2)), w))


def test_eigh_closed_form_and_phase_dependent_loss(rng):
    # w_k of B + B^H: d w_k = 2 Re(v_k^H dB v_k), so the gradient is 2 conj(v_k) v_k^T
    B = cplx(rng, 4, 4)
    w, V = np.linalg.eigh(B + np.conj(B.T))
    g = tg.grad(lambda B: np.linalg.eigh(B + np.conj(B.T))[0][2])(B)
    np.testing.assert_allclose(g, 2 * np.outer(np.conj(V[:, 2]), V[:, 2]), atol=1e-12)
    with pytest.raises(TypeError, match="phases"):
        tg.grad(lambda B: np.sum(np.real(np.linalg.eigh(B + np.conj(B.T))[1])))(B)


def test_recorded_hermitian_rules_replay(rng):
    N = rng.standard_normal((3, 3))
    def f(M):
        H = M @ M.T + 1j * (N - N.T) + 3 * np.eye(3)
        w, V = np.linalg.eigh(H)
        L = np.linalg.cholesky(H)     # (|L|^2 as L conj(L): abs has no derivative at L's zeros)
        return np.sum(np.real(L * np.conj(L)) * np.arange(9.0).reshape(3, 3)) + np.sum(np.abs(V) ** 2 * w ** 2)
    M0 = rng.standard_normal((3, 3))
    tg.check_grads(f, M0, modes=("fwd", "rev"), order=2)
    replay_checks(f, M0, rng, 1e-12, 1e-10)


# ------------------------------------------------------------------ qr, svd
@pytest.mark.parametrize("shape", [(4, 3), (3, 3), (2, 4, 2)])
def test_qr(shape, rng):
    # LAPACK's R has a real diagonal: Q and R are unique, their derivatives checked directly
    A = cplx(rng, *shape)
    Q, R = np.linalg.qr(A)
    check_pair(lambda A: tuple(np.linalg.qr(A)), A, (Q, R))
    check_pair(lambda A: (np.linalg.qr(A, mode="r"),), A, (R,))


def test_qr_modes_and_wide_matrices(rng):
    A = cplx(rng, 3, 3)
    check_pair(lambda A: tuple(np.linalg.qr(A, mode="complete")), A, tuple(np.linalg.qr(A, mode="complete")))
    with pytest.raises(NotImplementedError, match="wide"):
        tg.grad(lambda A: np.sum(np.abs(np.linalg.qr(A)[1])))(cplx(rng, 2, 3))
    with pytest.raises(NotImplementedError, match="complete"):
        tg.grad(lambda A: np.sum(np.abs(np.linalg.qr(A, mode="complete")[1])))(cplx(rng, 3, 2))


@pytest.mark.parametrize("shape", [(4, 3), (3, 3), (3, 5), (2, 4, 3)])
def test_svd_values_and_phase_invariant_losses(shape, rng):
    A = cplx(rng, *shape)
    U, s, Vh = np.linalg.svd(A, full_matrices=False)
    check_pair(lambda A: (np.linalg.svd(A, compute_uv=False),), A, (s,))

    def f(A):
        U, s, Vh = np.linalg.svd(A, full_matrices=False)
        return np.abs(U) ** 2, s, (U * np.sin(s)[..., None, :]) @ Vh, np.abs(Vh) ** 2 * s[..., :, None]
    check_pair(f, A, (np.abs(U) ** 2, s, (U * np.sin(s)[..., None, :]) @ Vh, np.abs(Vh) ** 2 * s[..., :, None]))


def test_svd_closed_form_and_errors(rng):
    A = cplx(rng, 4, 3)
    U, s, Vh = np.linalg.svd(A, full_matrices=False)
    # d sum(s) = Re tr(V U^H dA): the gradient of the nuclear norm is conj(U V^H)
    np.testing.assert_allclose(tg.grad(lambda A: np.sum(np.linalg.svd(A, compute_uv=False)))(A),
                               np.conj(U @ Vh), rtol=1e-12)
    if hasattr(np.linalg, "svdvals"):
        # sum(s^3): the gradient is conj(U diag(3 s^2) V^H)
        np.testing.assert_allclose(tg.grad(lambda A: np.sum(np.linalg.svdvals(A) ** 3))(A),
                                   np.conj((U * 3 * s ** 2) @ Vh), rtol=1e-12)
    with pytest.raises(TypeError, match="phases"):
        tg.grad(lambda A: np.sum(np.real(np.linalg.svd(A, full_matrices=False)[0])))(A)
    with pytest.raises(TypeError, match="phases"):
        tg.grad(lambda A: np.sum(np.imag(np.linalg.svd(A, full_matrices=False)[2])))(A)
    # a loss of one factor only, phase-invariant: no false alarm (U_bar = 0 here)
    f = lambda A: np.sum(np.abs(np.linalg.svd(A, full_matrices=False)[2]) ** 2 * np.arange(3.0))  # noqa: E731
    tg.check_grads(lambda x, y: f(x + 1j * y), A.real, A.imag, modes=("fwd", "rev"), order=2)
    with pytest.raises(NotImplementedError, match="full_matrices"):
        tg.grad(lambda A: np.sum(np.abs(np.linalg.svd(A)[0])))(A)


# ------------------------------------------------------------------ eig (non-symmetric)
def test_eig_of_a_complex_matrix_follows_lapacks_normalization(rng):
    # ?geev: unit 2-norm, largest component of each column real and positive; the rule is the
    # derivative of exactly that, so w and V themselves are checked against differences
    A = cplx(rng, 4, 4)
    w, V = np.linalg.eig(A)
    check_pair(lambda A: tuple(np.linalg.eig(A)), A, (w, V))
    # |V|^2 sums to 1 in every column: zero gradient (the normalization term of the rule)
    np.testing.assert_allclose(tg.grad(lambda A: np.sum(np.abs(np.linalg.eig(A)[1]) ** 2))(A), 0, atol=1e-12)


def test_eig_of_a_real_matrix_phase_invariant_losses(rng):
    # dgeev's eigenvectors of a real matrix have arbitrary signs (they flip between nearby
    # matrices), so only phase-invariant losses are compared with differences
    R = rng.standard_normal((4, 4))
    w, V = np.linalg.eig(R)
    assert np.any(np.imag(w) != 0)        # a complex pair and real eigenvalues

    def f(R):
        w, V = np.linalg.eig(R)
        return split(w, np.abs(V) ** 2 * np.exp(w), (V * np.sin(w)) @ np.linalg.inv(V))
    np.testing.assert_allclose(tg.vjp(f, R)[0], split(w, np.abs(V) ** 2 * np.exp(w), (V * np.sin(w)) @ np.linalg.inv(V)),
                               rtol=1e-12, atol=1e-12)
    tg.check_grads(f, R, modes=("fwd", "rev"), order=2)
    # V diag(w) V^-1 is R itself: its derivative is the identity map
    _, t = tg.jvp(lambda R: (lambda w, V: np.real((V * w) @ np.linalg.inv(V)))(*np.linalg.eig(R)), (R,), (V.real,))
    np.testing.assert_allclose(t, V.real, atol=1e-12)


def test_eig_recorded_and_errors(rng):
    def f(A):
        w, V = np.linalg.eig(A + 0.5j * A.T)
        return np.sum(np.abs(V[0]) ** 2 * np.real(w)) + np.sum(np.abs(w) ** 2)
    A0 = rng.standard_normal((3, 3))
    r = tg.record(f, A0)
    A, D = A0 + 0.01 * rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
    np.testing.assert_allclose(r(A), f(A), rtol=1e-13)
    np.testing.assert_allclose(r.grad(A), tg.grad(f)(A), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(r.hvp(A, D), tg.hvp(f, (A,), (D,)), rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(tg.load(r.to_bytes()).grad(A), r.grad(A))
    with pytest.raises(np.linalg.LinAlgError, match="square"):
        tg.grad(lambda A: np.sum(np.abs(np.linalg.eig(A)[0])))(rng.standard_normal((2, 3)))


def test_eig_and_eigvals_of_stacks(rng):
    A = cplx(rng, 2, 3, 3)
    w, V = np.linalg.eig(A)
    check_pair(lambda A: tuple(np.linalg.eig(A)), A, (w, V))
    check_pair(lambda A: (np.linalg.eigvals(A),), A, (w,))
    R = rng.standard_normal((2, 3, 3))
    f = lambda R: split(np.linalg.eigvals(R))   # noqa: E731
    np.testing.assert_allclose(tg.vjp(f, R)[0], split(np.linalg.eigvals(R) + 0j), rtol=1e-12, atol=1e-12)
    tg.check_grads(f, R, modes=("fwd", "rev"), order=2)


def test_recorded_complex_linalg_program_round_trips(rng):
    # every rule of the module on one tape: replay == retrace, and the bytes reload the rules by name
    N = rng.standard_normal((3, 3))

    def f(M):
        A = M + 1j * N
        H = A @ np.conj(A.T) + np.eye(3)
        Q, R = np.linalg.qr(A)
        U, s, Vh = np.linalg.svd(A)
        w, V = np.linalg.eig(A)
        L = np.linalg.cholesky(H)
        return (np.abs(np.linalg.det(A)) + np.real(np.linalg.slogdet(A)[0]) + np.sum(np.real(Q * R))
                + np.sum(s ** 2 + np.abs(U[0]) ** 2) + np.sum(np.abs(V[1]) * np.real(w))
                + np.sum(np.real(L * np.conj(L))[1:]) + np.sum(np.linalg.eigvalsh(H) ** 0.5)
                + np.sum(np.abs(np.linalg.eigh(H)[1][0]) ** 2 * np.arange(3.0)))
    M = replay_checks(f, rng.standard_normal((3, 3)), rng, 1e-12, 1e-9, step=0.05)
    tg.check_grads(f, M, modes=("fwd", "rev"), order=2)


def test_complex64_in_complex64_out(rng):
    A = cplx(rng, 3, 3).astype(np.complex64)
    g = tg.grad(lambda A: np.linalg.slogdet(A)[1])(A)
    assert g.dtype == np.complex64
    np.testing.assert_allclose(g, np.linalg.inv(A.astype(np.complex128)).T, rtol=1e-5)


LOSSES = {   # phase-invariant real losses of complex matrices, written once for both NumPys
    "det": lambda np, A: np.abs(np.linalg.det(A)) ** 2,
    "eigh": lambda np, A: (np.sum(np.abs(np.linalg.eigh(A + np.conj(A.T))[1]) ** 2 * np.arange(4.0)[:, None])
                           + np.sum(np.linalg.eigh(A + np.conj(A.T))[0] ** 2)),
    "svd": lambda np, A: np.sum(np.linalg.svd(A, full_matrices=False)[1] ** 3),
    "svd_U": lambda np, A: np.sum(np.abs(np.linalg.svd(A[:, :3], full_matrices=False)[0]) ** 2
                                  * np.arange(3.0) * np.arange(4.0)[:, None]),
    "eig": lambda np, A: (np.sum(np.abs(np.linalg.eig(A)[1]) ** 2 * np.arange(4.0)[:, None])
                          + np.real(np.sum(np.linalg.eig(A)[0] ** 2))),
    "norm": lambda np, A: (np.linalg.norm(A) + np.linalg.norm(A, "nuc") + np.linalg.norm(A[:, 0], 3)
                           + np.sum(np.linalg.norm(A, axis=0)) + np.linalg.norm(A[1], 2.5)),
    # (autograd's pinv rule transposes without conjugating: the formula (A^H A)^-1 A^H instead)
    "pinv": lambda np, A: np.sum(np.abs(np.linalg.pinv(A[:, :3]) if np.__name__ == "numpy" else
                                        np.dot(np.linalg.inv(np.dot(np.conj(A[:, :3].T), A[:, :3])),
                                               np.conj(A[:, :3].T))) ** 2 * np.arange(4.0)),
}


@pytest.mark.parametrize("name", list(LOSSES))
def test_gradients_agree_with_autograd(name, rng):
    # autograd's own complex rules (same convention): an independent implementation
    autograd = pytest.importorskip("autograd")
    import autograd.numpy as anp
    A = cplx(rng, 4, 4)
    want = autograd.grad(lambda A: LOSSES[name](anp, A))(A)
    np.testing.assert_allclose(tg.grad(lambda A: LOSSES[name](np, A))(A), want, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ pinv, lstsq
@pytest.mark.parametrize("shape", [(4, 3), (3, 5), (3, 3), (2, 4, 3)])
def test_pinv(shape, rng):
    # tall, wide, square and a stack: NumPy's values, derivatives against differences
    A = cplx(rng, *shape)
    check_pair(lambda A: (np.linalg.pinv(A),), A, (np.linalg.pinv(A),))
    # a real loss, Re sum(Y C) + sum |Y|^2, along random complex directions
    C = cplx(rng, *shape[:-2], shape[-1], shape[-2])
    f = lambda A: np.real(np.sum(np.linalg.pinv(A) * C)) + np.sum(np.abs(np.linalg.pinv(A)) ** 2)  # noqa: E731
    g = tg.grad(f)(A)
    for _ in range(2):
        dA = cplx(rng, *shape)
        np.testing.assert_allclose(np.real(np.sum(g * dA)), _fd(f, A, dA), rtol=1e-7, atol=1e-8)


def test_pinv_closed_forms_and_options(rng):
    # full column rank: pinv(A) = (A^H A)^-1 A^H, and its derivative is that of the formula
    A = cplx(rng, 5, 3)
    C = cplx(rng, 3, 5)
    loss = lambda Y: np.real(np.sum(Y * C)) + np.sum(np.abs(Y) ** 2)   # noqa: E731
    Ah = np.conj(A.T)
    np.testing.assert_allclose(np.linalg.pinv(A), np.linalg.solve(Ah @ A, Ah), atol=1e-13)
    want = tg.grad(lambda A: loss(np.linalg.solve(np.conj(A.T) @ A, np.conj(A.T))))(A)
    np.testing.assert_allclose(tg.grad(lambda A: loss(np.linalg.pinv(A)))(A), want, rtol=1e-10, atol=1e-12)
    # rcond / rtol reach NumPy's pinv: a rank-2 matrix with a tiny third singular value
    U, _, Vh = np.linalg.svd(cplx(rng, 4, 3), full_matrices=False)
    B = (U * np.array([3.0, 1.0, 1e-9])) @ Vh
    for kw in ({}, {"rcond": 1e-6}, {"rtol": 1e-6}, {"rtol": None}):
        out = tg.vjp(lambda x, y: split(np.linalg.pinv(x + 1j * y, **kw)), B.real, B.imag)[0]
        np.testing.assert_allclose(out, split(np.linalg.pinv(B, **kw)), rtol=1e-12, atol=1e-12)
    # hermitian=True: LAPACK's eigh reads the lower triangle and the real diagonal only
    H = hpd(rng, 3, 3)
    out = tg.vjp(lambda x, y: split(np.linalg.pinv(x + 1j * y, hermitian=True)), H.real, H.imag)[0]
    np.testing.assert_allclose(out, split(np.linalg.pinv(H, hermitian=True)), rtol=1e-10, atol=1e-12)
    tg.check_grads(lambda x, y: split(np.linalg.pinv(x + 1j * y, hermitian=True)), H.real, H.imag,
                   modes=("fwd", "rev"), order=1)


def lstsq_pair(a_complex=True, b_complex=True):
    """lstsq as a real function of the parts of a and b; x, residuals and singular values."""
    def F(ar, ai, br, bi):
        a = ar + 1j * ai if a_complex else ar
        b = br + 1j * bi if b_complex else br
        x, res, rank, s = np.linalg.lstsq(a, b, rcond=None)
        return split(x, res, s)
    return F


@pytest.mark.parametrize("kind", ["both", "a", "b"])
@pytest.mark.parametrize("bshape", [(6,), (6, 2)])
def test_lstsq_tall_full_rank(kind, bshape, rng):
    a, b = cplx(rng, 6, 3), cplx(rng, *bshape)
    if kind == "a":
        b = b.real
    if kind == "b":
        a = a.real
    x, res, rank, s = np.linalg.lstsq(a, b, rcond=None)
    assert rank == 3 and res.shape == ((1,) if len(bshape) == 1 else (2,))
    # residuals: sum |a x - b|^2 over axis 0
    np.testing.assert_allclose(res, np.sum(np.abs(a @ x - b) ** 2, axis=0), rtol=1e-10)
    F = lstsq_pair(kind != "b", kind != "a")
    args = (a.real, np.imag(a) + 0.0, b.real, np.imag(b) + 0.0)
    np.testing.assert_allclose(tg.vjp(F, *args)[0], split(x, res, s), rtol=1e-12, atol=1e-12)
    tg.check_grads(F, *args, modes=("fwd", "rev"), order=2)
    out = tg.vjp(lambda *p: np.linalg.lstsq(p[0] + 1j * p[1], p[2] + 1j * p[3], rcond=None)[2], *args)[0]
    assert out == rank


def test_lstsq_wide_and_rank_deficient(rng):
    # no residuals unless full column rank with m > n; the minimum-norm solution
    for a in (cplx(rng, 3, 5), cplx(rng, 5, 2) @ cplx(rng, 2, 3)):
        b = cplx(rng, a.shape[0])
        x, res, rank, s = np.linalg.lstsq(a, b, rcond=None)
        assert res.size == 0
        got = tg.vjp(lambda *p: np.linalg.lstsq(p[0] + 1j * p[1], p[2] + 1j * p[3], rcond=None), a.real, a.imag, b.real, b.imag)[0]
        np.testing.assert_allclose(got[0], x, rtol=1e-10, atol=1e-12)
        assert got[1].size == 0 and got[2] == rank
        np.testing.assert_allclose(got[3], s, rtol=1e-12, atol=1e-12)
    a = cplx(rng, 3, 5)
    b = cplx(rng, 3)
    tg.check_grads(lambda *p: split(np.linalg.lstsq(p[0] + 1j * p[1], p[2] + 1j * p[3], rcond=None)[0]),
                   a.real, a.imag, b.real, b.imag, modes=("fwd", "rev"), order=2)


# ------------------------------------------------------------------ norm
VECTOR_ORDS = [None, 2, 1, np.inf, -np.inf, 0, 3, 0.5, -1]
MATRIX_ORDS = [None, "fro", 1, -1, np.inf, -np.inf, "nuc", 2, -2]


@pytest.mark.parametrize("ord", VECTOR_ORDS, ids=str)
def test_norm_of_vectors(ord, rng):
    z = cplx(rng, 5)
    check_pair(lambda z: (np.linalg.norm(z, ord),), z, (np.linalg.norm(z, ord),))
    Z = cplx(rng, 3, 4)
    for axis, keepdims in ((0, False), (-1, True), (1, False)):
        want = np.linalg.norm(Z, ord, axis=axis, keepdims=keepdims)
        check_pair(lambda Z: (np.linalg.norm(Z, ord, axis=axis, keepdims=keepdims),), Z, (want,))


@pytest.mark.parametrize("ord", MATRIX_ORDS, ids=str)
def test_norm_of_matrices(ord, rng):
    M = cplx(rng, 3, 4)
    check_pair(lambda M: (np.linalg.norm(M, ord),), M, (np.linalg.norm(M, ord),))
    S = cplx(rng, 2, 3, 4)
    for axis, keepdims in (((1, 2), False), ((2, 0), True), ((-1, -3), False)):
        want = np.linalg.norm(S, ord, axis=axis, keepdims=keepdims)
        check_pair(lambda S: (np.linalg.norm(S, ord, axis=axis, keepdims=keepdims),), S, (want,))


def test_norm_closed_forms_keepdims_and_errors(rng):
    M = cplx(rng, 3, 4)
    U, s, Vh = np.linalg.svd(M, full_matrices=False)
    # grad |M|_F = conj(M) / |M|_F; grad |M|_2 = conj(u_1 v_1^H); grad |M|_* = conj(U V^H)
    np.testing.assert_allclose(tg.grad(np.linalg.norm)(M), np.conj(M) / np.linalg.norm(M), rtol=1e-13)
    np.testing.assert_allclose(tg.grad(lambda M: np.linalg.norm(M, 2))(M), np.conj(np.outer(U[:, 0], Vh[0])), rtol=1e-11)
    np.testing.assert_allclose(tg.grad(lambda M: np.linalg.norm(M, "nuc"))(M), np.conj(U @ Vh), rtol=1e-11)
    # the 1-norm of a matrix: the largest column sum of |M|, gradient conj(M) / |M| on that column
    j = np.argmax(np.sum(np.abs(M), axis=0))
    want = np.zeros_like(M)
    want[:, j] = np.conj(M[:, j]) / np.abs(M[:, j])
    np.testing.assert_allclose(tg.grad(lambda M: np.linalg.norm(M, 1))(M), want, rtol=1e-13)
    # axis=None with keepdims, and a 3-d array (the 2-norm of all entries)
    T = cplx(rng, 2, 3, 2)
    for ord, x in ((None, T), (None, M), ("fro", M), (2, M[0]), ("nuc", M), (np.inf, M)):
        want = np.linalg.norm(x, ord, keepdims=True)
        out = tg.vjp(lambda a, b: np.linalg.norm(a + 1j * b, ord, keepdims=True), x.real, x.imag)[0]
        assert out.shape == want.shape
        np.testing.assert_allclose(out, want, rtol=1e-13)
    if hasattr(np.linalg, "vector_norm"):
        for kw in ({}, {"ord": 1, "axis": (0, 2), "keepdims": True}, {"ord": np.inf, "axis": 1}):
            check_pair(lambda T: (np.linalg.vector_norm(T, **kw),), T, (np.linalg.vector_norm(T, **kw),))
        for kw in ({}, {"ord": "nuc", "keepdims": True}, {"ord": -1}):
            check_pair(lambda T: (np.linalg.matrix_norm(T, **kw),), T, (np.linalg.matrix_norm(T, **kw),))
    with pytest.raises(ValueError, match="Invalid norm order"):
        tg.grad(lambda M: np.linalg.norm(M, 3))(M)
    with pytest.raises(ValueError, match="Improper number of dimensions"):
        tg.grad(lambda T: np.linalg.norm(T, 1))(T)


# ------------------------------------------------------------------ matrix_power
@pytest.mark.parametrize("n", [0, 1, 3, -2])
def test_matrix_power(n, rng):
    A = cplx(rng, 3, 3)
    check_pair(lambda A: (np.linalg.matrix_power(A, n),), A, (np.linalg.matrix_power(A, n),))
    S = cplx(rng, 2, 3, 3)
    check_pair(lambda S: (np.linalg.matrix_power(S, n),), S, (np.linalg.matrix_power(S, n),))
    # Re sum(A^n C): the gradient is sum_k (A^k C A^(n-1-k))^T for n > 0
    C = cplx(rng, 3, 3)
    g = tg.grad(lambda A: np.real(np.sum(np.linalg.matrix_power(A, n) * C)))(A)
    if n > 0:
        P = np.linalg.matrix_power
        want = sum(P(A, k).T @ C @ P(A, n - 1 - k).T for k in range(n))
    else:
        want = np.zeros((3, 3)) if n == 0 else None
    if want is not None:
        np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-12)
    with pytest.raises(np.linalg.LinAlgError, match="square"):
        tg.grad(lambda A: np.sum(np.abs(np.linalg.matrix_power(A, n))))(cplx(rng, 2, 3))


# ------------------------------------------------------------------ recorded
def test_recorded_pinv_program_replays(rng):
    N = rng.standard_normal((4, 3))
    C = cplx(rng, 3, 4)

    def f(M):
        A = M + 1j * N
        Y = np.linalg.pinv(A)
        x = np.linalg.lstsq(A, C[0], rcond=None)[0]
        return (np.real(np.sum(Y * C)) + np.sum(np.abs(Y) ** 2) + np.linalg.norm(A, "nuc")
                + np.linalg.norm(x, 1) + np.sum(np.abs(np.linalg.matrix_power(A[:3], 3)) ** 2))
    M = replay_checks(f, rng.standard_normal((4, 3)), rng, 1e-12, 1e-9)
    tg.check_grads(f, M, modes=("fwd", "rev"), order=2)
    # a complex argument: a ComplexRecorded, replayed at a new point against re-tracing
    g = lambda A: np.real(np.sum(np.linalg.pinv(A) * C)) + np.sum(np.abs(np.linalg.pinv(A)) ** 2)  # noqa: E731
    A0 = cplx(rng, 4, 3)
    r = tg.record(g, A0)
    A = A0 + 0.1 * cplx(rng, 4, 3)
    np.testing.assert_allclose(r(A), g(A), rtol=1e-12)
    np.testing.assert_allclose(r.grad(A), tg.grad(g)(A), rtol=1e-12, atol=1e-12)
    V = cplx(rng, 4, 3)
    np.testing.assert_allclose(r.hvp(A, V), tg.hvp(g, (A,), (V,)), rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(tg.load(r.to_bytes()).grad(A), r.grad(A))


# ------------------------------------------------------------------ tensorsolve, tensorinv, cond
@pytest.mark.parametrize("axes", [None, (0,), (2, 0)])
def test_tensorsolve(axes, rng):
    a, b = cplx(rng, 2, 3, 6), cplx(rng, 2, 3)
    if axes == (0,):
        a = cplx(rng, 3, 2, 3, 2)          # b-shaped axes 1, 2, then 3, moved axis 0: (2, 3, 2, 3)
    if axes == (2, 0):
        a = cplx(rng, 6, 2, 1, 3)          # axes 1, 3, then 2, 0: (2, 3, 1, 6)
    want = np.linalg.tensorsolve(a, b, axes=axes)
    check_pair(lambda a: (np.linalg.tensorsolve(a, b, axes=axes),), a, (want,))
    check_pair(lambda b: (np.linalg.tensorsolve(a, b, axes=axes),), b, (want,))
    # closed form: x solves the reshaped system, so its tensordot with a gives back b
    x = tg.vjp(lambda p, q: split(np.linalg.tensorsolve(p + 1j * q, b, axes=axes)), a.real, a.imag)[0]
    np.testing.assert_allclose(x, split(want), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="tensorsolve.*does not fit"):
        tg.grad(lambda a: np.sum(np.abs(np.linalg.tensorsolve(a, b[:, :2])) ** 2))(cplx(rng, 2, 3, 6))


@pytest.mark.parametrize("shape,ind", [((6, 2, 3), 1), ((2, 3, 3, 2), 2)])
def test_tensorinv(shape, ind, rng):
    a = cplx(rng, *shape)
    check_pair(lambda a: (np.linalg.tensorinv(a, ind=ind),), a, (np.linalg.tensorinv(a, ind=ind),))
    # closed form: tensordot(tensorinv(a), a, ind) is the identity over a.shape[ind:]
    Y = tg.vjp(lambda p, q: np.linalg.tensorinv(p + 1j * q, ind=ind), a.real, a.imag)[0]
    n = int(np.prod(shape[ind:]))
    np.testing.assert_allclose(np.tensordot(Y, a, ind).reshape(n, n), np.eye(n), atol=1e-12)
    with pytest.raises(ValueError, match="tensorinv.*not square"):
        tg.grad(lambda a: np.sum(np.abs(np.linalg.tensorinv(a, ind=1)) ** 2))(cplx(rng, 2, 3))


@pytest.mark.parametrize("p", [None, 2, -2, "fro", 1, -1, np.inf, "nuc"])
def test_cond(p, rng):
    A = cplx(rng, 3, 3) + 2 * np.eye(3)
    check_pair(lambda A: (np.linalg.cond(A, p),), A, (np.linalg.cond(A, p),))
    # the 2-norm condition number from the singular values, an independent formula
    if p in (None, 2):
        s = np.linalg.svd(A, compute_uv=False)
        assert np.isclose(tg.vjp(lambda x, y: np.linalg.cond(x + 1j * y), A.real, A.imag)[0], s[0] / s[-1])


def test_piecewise(rng):
    z = cplx(rng, 6)
    fs = [lambda v: v ** 2, lambda v: np.exp(v) * 1j, 0.5 - 1j]   # the last: the rest of z

    def f(z):
        return np.piecewise(z, [np.real(z) > 0.3, np.imag(z) > 0], fs)
    want = np.piecewise(z, [np.real(z) > 0.3, np.imag(z) > 0], fs)
    check_pair(lambda z: (f(z),), z, (want,))
    # the gradient of a real loss against the same loss written with np.where (NumPy: where
    # several conditions hold, the last one's piece is taken)
    g = tg.grad(lambda z: np.sum(np.abs(f(z)) ** 2))(z)
    h = tg.grad(lambda z: np.sum(np.abs(np.where(np.imag(z) > 0, np.exp(z) * 1j, np.where(
        np.real(z) > 0.3, z ** 2, 0.5 - 1j))) ** 2))(z)
    np.testing.assert_allclose(g, h, rtol=1e-14)
    # a recording guards the traced conditions: replayed where the pieces change, it re-records
    r = tg.record(lambda z: np.sum(np.abs(f(z)) ** 2), z)
    z2 = -z
    np.testing.assert_allclose(r.grad(z2), tg.grad(lambda z: np.sum(np.abs(f(z)) ** 2))(z2), rtol=1e-13)
    with pytest.raises(ValueError, match="piecewise: 2 conditions"):
        tg.grad(lambda z: np.sum(np.abs(np.piecewise(z, [np.real(z) > 0, np.imag(z) > 0], [1.0]))))(z)
    with pytest.raises(TypeError, match="piecewise: the condition is a complex traced value"):
        tg.grad(lambda z: np.sum(np.abs(np.piecewise(z, [z], [np.sin]))))(z)


@pytest.mark.parametrize("kind", ["real", "complex"])
def test_lstsq_rank_is_guarded_in_recordings(kind, rng):
    # the rank decides the residuals and is returned: a recording replayed where the rank
    # differs records again (strict=True raises) instead of giving the recorded rank
    a, b = rng.standard_normal((5, 3)), rng.standard_normal(5)
    if kind == "complex":
        a = a + 1j * rng.standard_normal((5, 3))
    f = lambda a: (np.sum(np.abs(np.linalg.lstsq(a, b, rcond=None)[0]))   # noqa: E731
                   + np.linalg.lstsq(a, b, rcond=None)[2])
    a2 = a.copy()
    a2[:, 2] = a2[:, 0] + a2[:, 1]                      # rank 2
    assert np.linalg.lstsq(a2, b, rcond=None)[2] == 2
    r = tg.record(f, a)
    assert abs(r(a2) - f(a2)) < 1e-12 and r.rerecords == 1
    np.testing.assert_allclose(r(a), f(a), rtol=1e-13)
    with pytest.raises(tg.GuardError, match="guard"):
        tg.record(f, a, strict=True)(a2)
    # rcond reaches the cutoff: a singular value of 1e-6 (relative) is dropped at rcond=1e-4
    U, _, Vh = np.linalg.svd(a, full_matrices=False)
    a3 = (U * np.array([2.0, 1.0, 2e-6])) @ Vh
    for rc in (None, 1e-4):
        got = tg.vjp(lambda a: np.linalg.lstsq(a, b, rcond=rc)[0], a3)[0]
        np.testing.assert_allclose(got, np.linalg.lstsq(a3, b, rcond=rc)[0], rtol=1e-8, atol=1e-10)
        assert tg.vjp(lambda a: np.linalg.lstsq(a, b, rcond=rc)[2] * 1.0, a3)[0] == \
            np.linalg.lstsq(a3, b, rcond=rc)[2]


def test_eig_of_a_real_matrix_is_its_own_operand(rng):
    # a real traced matrix is the eig rule's operand as it is (no packed zero imaginary part):
    # values, derivatives against differences, the adjoint's real part, replay and bytes
    A = rng.standard_normal((4, 4))
    f = lambda A: (np.sum(np.abs(np.linalg.eig(A)[1]) ** 2 * np.arange(4.0)[:, None])   # noqa: E731
                   + np.real(np.sum(np.linalg.eig(A)[0] ** 2)))
    r = tg.record(f, A)
    ops = [row for row in r.tape.callbacks if row.name == "ceig"]
    assert ops and all(op.real and op.in_shapes == [(4, 4)] for op in ops)
    tg.check_grads(f, A, modes=("fwd", "rev"), order=2)
    w, V = np.linalg.eig(A)
    out = tg.vjp(lambda A: split(*np.linalg.eig(A)), A)[0]
    np.testing.assert_allclose(out, split(w + 0j, V + 0j), rtol=1e-12, atol=1e-12)
    A2 = A + 0.05 * rng.standard_normal((4, 4))
    np.testing.assert_allclose(r.grad(A2), tg.grad(f)(A2), rtol=1e-11, atol=1e-12)
    np.testing.assert_array_equal(tg.load(r.to_bytes()).grad(A2), r.grad(A2))
    autograd = pytest.importorskip("autograd")
    import autograd.numpy as anp
    fa = lambda A: (anp.sum(anp.abs(anp.linalg.eig(A)[1]) ** 2 * anp.arange(4.0)[:, None])  # noqa: E731
                    + anp.real(anp.sum(anp.linalg.eig(A)[0] ** 2)))
    np.testing.assert_allclose(tg.grad(f)(A), autograd.grad(fa)(A), rtol=1e-9, atol=1e-11)


def test_eigvals_adjoint_matches_eigenvectors_to_the_recorded_order():
    # CEigvals' adjoint takes eig's vectors and puts them in the order of the recorded
    # eigenvalues (the nearest for each): with the recorded values in another order than
    # eig's, each vector must follow its eigenvalue, so V diag(w) V^-1 is the matrix again
    from tapegrad.rules.complex import CEigvals
    rng = np.random.default_rng(4)
    A = rng.standard_normal((6, 6))
    rule = CEigvals([A.shape])
    w = np.linalg.eigvals(A)
    perm = rng.permutation(6)
    for order in (np.arange(6), perm):
        wr = w[order]
        V, Vi = rule._vectors([A], [np.stack([wr.real, wr.imag])])
        np.testing.assert_allclose(V @ np.diag(wr) @ Vi, A, atol=1e-10)
        np.testing.assert_allclose(A @ V, V * wr, atol=1e-10)
