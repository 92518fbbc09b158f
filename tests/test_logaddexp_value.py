"""logaddexp: the recorded value (rules.base.logaddexp_value) and the replayed one (the sweeps'
max + log1p(exp(-|a - b|))) agree bit for bit, both are within roundoff of np.logaddexp,
including infinities, NaN and equal arguments, and the gradient matches finite differences."""
import numpy as np
import pytest

import tapegrad as tg
from tapegrad.rules.base import logaddexp_value

SPECIAL = np.array([0.0, -0.0, 1.0, -1.0, 700.0, -700.0, 1e-300, 40.0, -40.0, np.inf, -np.inf, np.nan])


def _pairs():
    a, b = np.meshgrid(SPECIAL, SPECIAL)
    return a.ravel(), b.ravel()


def test_value_matches_numpy_on_special_and_random_values():
    rng = np.random.default_rng(0)
    a, b = _pairs()
    a = np.concatenate([a, rng.normal(scale=30, size=2000)])
    b = np.concatenate([b, rng.normal(scale=30, size=2000)])
    with np.errstate(invalid="ignore"):
        ours, ref = logaddexp_value(a, b), np.logaddexp(a, b)
    assert np.array_equal(np.isnan(ours), np.isnan(ref))
    fin = np.isfinite(ref)
    assert np.array_equal(ours[~fin & ~np.isnan(ref)], ref[~fin & ~np.isnan(ref)])
    np.testing.assert_allclose(ours[fin], ref[fin], rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("broadcast", ["none", "left", "right"])
def test_replay_equals_recording_bitwise(broadcast):
    rng = np.random.default_rng(1)
    a0, b0 = _pairs()
    a0 = np.concatenate([a0, rng.normal(scale=5, size=300)])
    b0 = np.concatenate([b0, rng.normal(scale=5, size=300)])
    pick = {"none": lambda x, y: (x, y), "left": lambda x, y: (x[:1] * 1.0, y),
            "right": lambda x, y: (x, y[:1] * 1.0)}[broadcast]
    f = lambda x, y: np.logaddexp(*pick(x, y))                 # noqa: E731
    with np.errstate(all="ignore"):
        rec_val = logaddexp_value(*pick(a0, b0))
        tape = tg.record(f, a0, b0)
        # the value a fresh recording computes (vjp's primal output) is the replay's, bit for bit
        primal = np.asarray(tg.vjp(f, a0, b0)[0])
        assert np.array_equal(primal, np.asarray(tape(a0, b0)), equal_nan=True)
        out = np.asarray(tape(a0, b0))
        assert np.array_equal(out, rec_val, equal_nan=True)
        assert np.array_equal(out.view(np.int64)[~np.isnan(out)], rec_val.view(np.int64)[~np.isnan(out)])
        a1, b1 = a0[::-1].copy(), b0 * 0.5
        np.testing.assert_allclose(tape(a1, b1), np.logaddexp(*((a1[:1], b1) if broadcast == "left" else
                                                               (a1, b1[:1]) if broadcast == "right" else
                                                               (a1, b1))), rtol=1e-14)


def test_gradient_against_finite_differences_and_closed_form():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=50), rng.normal(size=50) * 3
    f = lambda x, y: np.sum(np.logaddexp(x, y) ** 2)           # noqa: E731
    gx, gy = tg.grad(f, argnums=(0, 1))(x, y)
    L = np.logaddexp(x, y)
    np.testing.assert_allclose(gx, 2 * L / (1 + np.exp(y - x)), rtol=1e-12)
    np.testing.assert_allclose(gy, 2 * L / (1 + np.exp(x - y)), rtol=1e-12)
    h, e = 1e-6, np.zeros(50)
    e[7] = h
    fd = (f(x + e, y) - f(x - e, y)) / (2 * h)
    assert abs(fd - gx[7]) < 1e-6 * max(1.0, abs(fd))
    tape = tg.record(f, x, y, argnums=0)
    np.testing.assert_allclose(tape.grad(x, y), gx, rtol=1e-13)


def test_broadcasting_and_strided_operands():
    # operands that broadcast beyond one value, or are not C-ordered, are materialized for the
    # sweeps' kernel (sweeps.logaddexp_values): a grid's values are the kernel's on the
    # broadcast arrays, with NumPy's shape and within roundoff of np.logaddexp
    from tapegrad._core import sweeps
    a0, b0 = _pairs()
    col = a0.reshape(-1, 1)[:40]            # (40, 1) against a row (1, 144): a 40 x 144 grid
    row = b0.reshape(1, -1)
    with np.errstate(invalid="ignore"):
        grid = logaddexp_value(col, row)
        kernel = np.empty(grid.size)
        sweeps.logaddexp_values(np.ascontiguousarray(np.broadcast_to(col, grid.shape)).ravel(),
                                np.ascontiguousarray(np.broadcast_to(row, grid.shape)).ravel(),
                                kernel)
        strided = logaddexp_value(a0[::2], b0[::2])          # not C-ordered
        ref = np.logaddexp(col, row)
    assert grid.shape == (40, 144)
    np.testing.assert_array_equal(grid.ravel(), kernel)
    with np.errstate(invalid="ignore"):
        contiguous = logaddexp_value(np.ascontiguousarray(a0[::2]), np.ascontiguousarray(b0[::2]))
    np.testing.assert_array_equal(strided, contiguous)
    fin = np.isfinite(ref)
    np.testing.assert_allclose(grid[fin], ref[fin], rtol=1e-14, atol=1e-300)
    with pytest.raises(ValueError, match="operands of 3 and 4 values for 4"):
        sweeps.logaddexp_values(np.zeros(3), np.zeros(4), np.empty(4))
