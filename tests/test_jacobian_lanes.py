"""Full Jacobians of recordings: the reverse one sweeps all output lanes at once
(sweeps.reverse_lanes, a fixed matrix times a vector as one product over the lanes), the forward
one knows its input lanes are unit vectors (a fixed matrix times the inputs copies its columns).
Checked against finite differences, each other, per-row vjp / per-column jvp, in lane chunks."""
import numpy as np
import pytest

import tapegrad as tg
from tapegrad import numdiff
from tapegrad._core import sweeps


def layers(A, B, c):
    def f(x):
        h = np.tanh(A @ x + c)                    # A x: matrix times the inputs
        return np.sin(h @ B) * (x[:B.shape[1]] + 1.0) + np.sum(x * x)   # x B, a broadcast sum
    return f


@pytest.mark.parametrize("n", [7, 60])
def test_jacobians_agree_with_differences_and_rows(n):
    rng = np.random.default_rng(n)
    A = rng.standard_normal((n + 3, n)) / np.sqrt(n)
    B = rng.standard_normal((n + 3, n - 2)) / np.sqrt(n)
    f = layers(A, B, rng.standard_normal(n + 3))
    x = rng.standard_normal(n)
    r = tg.record(f, x)
    Jr, Jf = r.jacobian(x, mode="rev"), r.jacobian(x, mode="fwd")
    fd = numdiff.jacobian(f, x).value
    np.testing.assert_allclose(Jr, fd, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(Jf, Jr, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(tg.jacobian(f, mode="rev")(x), Jr, rtol=1e-13, atol=1e-14)
    m = Jr.shape[0]
    for i in (0, m // 2, m - 1):                  # rows: one vjp each; columns: one jvp each
        np.testing.assert_allclose(r.vjp(x, np.eye(m)[i]), Jr[i], rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(r.jvp(x, np.eye(n)[i % n])[1], Jf[:, i % n], rtol=1e-13,
                                   atol=1e-14)


def test_lane_chunks_give_the_same_jacobian(monkeypatch):
    rng = np.random.default_rng(1)
    A = rng.standard_normal((50, 40)) / 7
    f = lambda x: np.tanh(A @ x) * x[:1] + np.exp(-x[:50:1].sum())  # noqa: E731
    x = rng.standard_normal(40)
    r = tg.record(f, x)
    J = r.jacobian(x, mode="rev")
    import tapegrad.operators.recorded as R
    monkeypatch.setattr(R, "_lane_chunk", lambda tr: 3)     # forward lanes in chunks of 3
    np.testing.assert_allclose(r.jacobian(x, mode="fwd"), J, rtol=1e-13, atol=1e-14)


def test_unit_seed_is_checked():
    A = np.arange(12.0).reshape(3, 4)
    r = tg.record(lambda x: A @ x, np.ones(4))
    t = r.tape
    w = sweeps.forward(t, np.ones(4))
    E = np.eye(4)
    np.testing.assert_array_equal(sweeps.tangent(t, w, E, unit=0)[:, t.out_off:t.out_off + 3],
                                  A.T)
    with pytest.raises(ValueError, match="unit vector"):
        sweeps.tangent(t, w, E[::-1].copy(), unit=0)
    with pytest.raises(ValueError, match="unit vector"):
        sweeps.tangent(t, w, E[1:], unit=0)


@pytest.mark.parametrize("n", [5, 300])
def test_reverse_lanes_of_called_derivatives_match_each_row(n):
    # unary ops whose derivative is a function call (sin, arctan, log1p, arcsinh, erf-like
    # chains) and binary ops without a cheap loop take their partials once per element for
    # all lanes (reverse_unary_lanes / reverse_binary_lanes, in chunks of 256 elements): each
    # row is bitwise the row's own reverse sweep (vjp)
    import scipy.special as sps
    rng = np.random.default_rng(n)
    p = rng.permutation(n)

    def f(x):
        u = np.sin(x) * np.arctan(x[p]) + np.log1p(x * x)
        # binary ops without a cheap loop (reverse_binary_lanes): a / b, power, arctan2,
        # hypot, maximum, where; with a constant operand on either side
        v = (u / (x * x + 1.0) + np.power(x * x + 0.5, u) + np.arctan2(u, x[p])
             + np.hypot(x, u) + np.maximum(u, x) + np.where(x > 0.1, u, x * 2.0)
             + np.power(p + 1.0, np.tanh(x)) + np.arctan2(x, p + 0.5))
        return np.arcsinh(u) + sps.erf(x) * np.cos(u) + np.exp(x) * 0.5 + v

    x = rng.uniform(-1.0, 1.0, n)
    r = tg.record(f, x)
    J = r.jacobian(x, mode="rev")
    for i in range(0, n, max(1, n // 7)):
        assert np.array_equal(J[i], r.vjp(x, np.eye(n)[i])), i
    np.testing.assert_allclose(J, numdiff.jacobian(f, x).value, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(r.jacobian(x, mode="fwd"), J, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("form", ["A @ x", "x @ B"])
def test_reverse_jacobian_of_one_product_is_the_scaled_matrix(form):
    # the cotangent lanes reach the product as one scaled diagonal (unit seeds through tanh):
    # each lane takes one row of the matrix (lanes_times_matrix), which is the closed form
    # diag(1 - t^2) A bit for bit
    rng = np.random.default_rng(4)
    A = rng.standard_normal((9, 6))
    if form == "A @ x":
        f = lambda x: np.tanh(A @ x)  # noqa: E731
    else:
        f = lambda x: np.tanh(x @ A.T)  # noqa: E731
    x = rng.standard_normal(6)
    r = tg.record(f, x)
    t = r(x)                        # (the tape's own product: BLAS's rounding, not NumPy's)
    J = r.jacobian(x, mode="rev")
    np.testing.assert_array_equal(J, (1.0 - t * t)[:, None] * A)


def test_reverse_jacobian_diagonal_lanes_in_chunks_and_dense_lanes():
    # 300 output rows over a work buffer large enough that the lanes go in chunks (a lane
    # diagonal at the chunk's offset), plus a broadcast term that makes other adjoints dense,
    # and a second product whose lanes are dense (one BLAS product): against the closed form
    # and each row's own vjp
    rng = np.random.default_rng(6)
    n = 300
    A = rng.standard_normal((n, n)) / np.sqrt(n)
    B = rng.standard_normal((n, n)) / np.sqrt(n)

    def f(x):
        return np.tanh(A @ x) + np.sum(np.sin(np.repeat(x, 60))) + np.cos(A @ np.tanh(B @ x))

    x = rng.standard_normal(n)
    r = tg.record(f, x)
    assert r.tape.nwork * n * 8 > 1 << 25          # (sweeps.JAC_REV_BYTES: several chunks)
    J = r.jacobian(x, mode="rev")
    t, u = np.tanh(A @ x), np.tanh(B @ x)
    v = A @ u
    closed = ((1.0 - t * t)[:, None] * A + (60.0 * np.cos(x))[None, :]
              - (np.sin(v)[:, None] * A) @ ((1.0 - u * u)[:, None] * B))
    np.testing.assert_allclose(J, closed, rtol=1e-12, atol=1e-12)
    for i in (0, 112, 113, 226, n - 1):
        np.testing.assert_allclose(r.vjp(x, np.eye(n)[i]), J[i], rtol=1e-13, atol=1e-13)
