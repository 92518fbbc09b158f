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
    r = tg.record(f, M0)
    M, V = M0 + 0.1 * rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
    np.testing.assert_allclose(r(M), f(M), rtol=1e-13)
    np.testing.assert_allclose(r.grad(M), tg.grad(f)(M), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(r.hvp(M, V), tg.hvp(f, (M,), (V,)), rtol=1e-11, atol=1e-11)
    np.testing.assert_array_equal(tg.load(r.to_bytes()).grad(M), r.grad(M))


def test_det_of_a_non_square_matrix_raises(rng):
    A = cplx(rng, 2, 3)
    with pytest.raises(np.linalg.LinAlgError, match="det.*square"):
        tg.grad(lambda A: np.abs(np.linalg.det(A)))(A)
