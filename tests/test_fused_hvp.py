"""The fused Hessian-vector product (sweeps.hvp_fast / hvp_fused) and value (value_fused): a
scalar loss that is one elementwise run summed, read straight from the inputs, gets H v in one
tiled pass (values, tangents, adjoints and adjoint tangents of a tile in a small scratch)
instead of four sweeps over the work buffers, and its value without a work buffer.

Checked against the op-by-op forward-over-reverse sweeps (fusing off) to 1e-13, against central
differences of the gradient, the Rosenbrock closed form, across tile lengths and builds; tapes
it does not take (ops before the tail or after the sum, guards, other dtypes) take the general
path and give the same numbers."""
import numpy as np
import pytest

import tapegrad as tg
from tapegrad._core import sweeps, _base_sweeps
from tapegrad.bench.workloads import rosenbrock_hvp_hand

from test_fusion import PROGRAMS, POST, prefix, rosen, chain, linear_mix, masked, mse, close

N = 10007
# the tapes it takes: a tail from the inputs, summed, then at most linear scalar ops (mse's 1/n)
DIRECT = (rosen, chain, linear_mix, masked, mse)


@pytest.fixture(autouse=True)
def _restore():
    prev = sweeps.set_fusing(True)
    yield
    sweeps.set_fusing(*prev)


def scalar_input(x):
    # a broadcast scalar read from the inputs: its H v element sums over the whole run
    return np.sum(np.sin(x[1:] * x[0]) + x[1:] * x[1:] * x[0] - np.exp(x[0] - x[1:]))


def divisions(x):
    # ops without a plain loop of their own (div, pow, tanh, expit-like chains)
    y = (x + 2.0) / (x * x + 1.5)
    return np.sum(y ** 3 + np.tanh(y) / 3.0 - np.sqrt(x + 3.0) * 0.25)


def shared_rows(x):
    # internal rows with several contributions on a tile (u read by four ops, u * u reading one
    # row twice), and a row no contribution reaches (e, read only by a comparison): the first
    # contribution writes a row, the later ones add, an unreached row is cleared
    u = np.sin(x) + 0.5
    e = np.exp(x)
    w = u * u
    return np.sum(np.where(e > 1.2, w * u, 2.0 * u) + w - u * 3.0)


EXTRA = [scalar_input, divisions, shared_rows]


def hvp_pair(f, x, v):
    r = tg.record(f, x)
    fast = sweeps.hvp_fast(r.tape, x, v, x.shape)
    h1 = r.hvp(x, v)
    sweeps.set_fusing(False)
    h0 = r.hvp(x, v)
    sweeps.set_fusing(True)
    return r, fast, h1, h0


@pytest.mark.parametrize("f", PROGRAMS + EXTRA, ids=lambda f: f.__name__)
@pytest.mark.parametrize("n", [N, 5000, 300, 1000])
def test_fused_equals_op_by_op(f, n):
    rng = np.random.default_rng(n)
    x = rng.uniform(-1.0, 1.5, n)
    v = rng.standard_normal(n)
    r, fast, h1, h0 = hvp_pair(f, x, v)
    # which tapes take the fused pass: the direct tails, never ops before the tail or after
    # the sum (so this test cannot pass by always taking the general path)
    assert (fast is not None) == (f in DIRECT or f in EXTRA), f.__name__
    assert f in DIRECT or f not in POST + (prefix,) or fast is None
    if fast is not None:
        assert np.array_equal(fast, h1)
    close(h1, h0)


@pytest.mark.parametrize("f", DIRECT + tuple(EXTRA), ids=lambda f: f.__name__)
def test_against_differences_of_the_gradient(f):
    n = 2000
    rng = np.random.default_rng(5)
    x = rng.uniform(-0.8, 1.2, n)
    v = rng.standard_normal(n)
    r = tg.record(f, x)
    h = r.hvp(x, v)
    assert sweeps.hvp_fast(r.tape, x, v, x.shape) is not None
    eps = 1e-5
    fd = (r.grad(x + eps * v) - r.grad(x - eps * v)) / (2 * eps)
    np.testing.assert_allclose(h, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())


def test_rosenbrock_closed_form():
    x = 1.0 + 0.1 * np.random.default_rng(0).standard_normal(N)
    v = np.random.default_rng(1).standard_normal(N)
    r = tg.record(rosen, x)
    assert sweeps.hvp_fast(r.tape, x, v, x.shape) is not None
    close(r.hvp(x, v), rosenbrock_hvp_hand(x, v, None), 1e-14)


@pytest.mark.parametrize("tile", [16, 64, 512, 4096])
def test_tile_lengths(tile):
    rng = np.random.default_rng(3)
    x = rng.uniform(-1.0, 1.5, N)
    v = rng.standard_normal(N)
    for f in DIRECT + tuple(EXTRA):
        r = tg.record(f, x)
        sweeps.set_fusing(False)
        ref = r.hvp(x, v)
        sweeps.set_fusing(True, tile)
        close(r.hvp(x, v), ref)


def test_arguments_that_do_not_qualify_take_the_general_path():
    x = np.random.default_rng(4).uniform(-1.0, 1.5, N)
    v = np.random.default_rng(5).standard_normal(N)
    r = tg.record(chain, x)
    ref = r.hvp(x, v)
    t = r.tape
    assert sweeps.hvp_fast(t, x[::-1][::-1].copy(), v, x.shape) is not None
    assert sweeps.hvp_fast(t, x.astype(np.float32), v, x.shape) is None
    assert sweeps.hvp_fast(t, x, v[:-1], x.shape) is None
    assert sweeps.hvp_fast(t, x, np.stack([v, v])[:, ::2].ravel()[:N], x.shape) is not None
    xs = np.empty(2 * N)
    xs[::2] = x
    assert sweeps.hvp_fast(t, xs[::2], v, x.shape) is None      # not contiguous
    close(r.hvp(xs[::2], v), ref)
    close(r.hvp(list(x), v), ref)
    with pytest.raises(Exception, match="hvp"):
        r.hvp(x, v[:-1])


def test_guarded_tape_is_not_fused():
    def f(x):
        y = np.sin(x) * x
        return np.sum(y * y) if np.sum(x) > 0 else np.sum(y)
    x = np.random.default_rng(6).uniform(-0.5, 1.5, N)
    v = np.random.default_rng(7).standard_normal(N)
    r = tg.record(f, x)
    assert sweeps.hvp_fast(r.tape, x, v, x.shape) is None
    h = r.hvp(x, v)
    fd = (r.grad(x + 1e-5 * v) - r.grad(x - 1e-5 * v)) / 2e-5
    np.testing.assert_allclose(h, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())


@pytest.mark.skipif(sweeps is _base_sweeps, reason="no AVX2 build of the sweeps here")
def test_avx2_build_bitwise_same_as_baseline():
    rng = np.random.default_rng(10)
    x = rng.uniform(-1.0, 1.5, N)
    v = rng.standard_normal(N)
    for f in DIRECT + tuple(EXTRA):
        t = tg.record(f, x).tape
        a = _base_sweeps.hvp_fast(t, x, v, x.shape)
        b = sweeps.hvp_fast(t, x, v, x.shape)
        assert a is not None and np.array_equal(a, b), f.__name__


@pytest.mark.parametrize("f", DIRECT + tuple(EXTRA), ids=lambda f: f.__name__)
@pytest.mark.parametrize("n", [N, 300, 4097])
def test_fused_value_bitwise_equal_to_the_forward_sweep(f, n):
    # tape(x) of the same tapes: the tail's forward in a scratch, folded into the sum
    x = np.random.default_rng(n + 1).uniform(-1.0, 1.5, n)
    r = tg.record(f, x)
    v1 = r(x)
    sweeps.set_fusing(False)
    v0 = r(x)
    sweeps.set_fusing(True)
    w = sweeps.forward(r.tape, x)
    assert v1 == v0 == w[r.tape.out_off]
    assert v1 == pytest.approx(f(x), rel=1e-12)
    for tile in (16, 64, 4096):
        sweeps.set_fusing(True, tile)
        assert r(x) == v0


def test_linear_ops_after_the_sum():
    # a mean, a sign flip and an offset after the sum: H scales by their product, the value
    # runs them as the forward sweep does; a nonlinear op after the sum is not fused
    x = np.random.default_rng(8).uniform(-1.0, 1.5, N)
    v = np.random.default_rng(9).standard_normal(N)
    f = lambda x: 3.0 - np.mean(np.sin(x) * x) / 2.0  # noqa: E731
    r = tg.record(f, x)
    assert sweeps.hvp_fast(r.tape, x, v, x.shape) is not None
    h = r.hvp(x, v)
    closed = -(2 * np.cos(x) - x * np.sin(x)) * v / (2.0 * N)     # H = diag(...) / (-2 N)
    close(h, closed, 1e-13)
    v1 = r(x)
    sweeps.set_fusing(False)
    assert v1 == r(x)
    close(h, r.hvp(x, v))
    sweeps.set_fusing(True)
    g = lambda x: np.log(np.sum(np.exp(-x * x)))  # noqa: E731
    assert sweeps.hvp_fast(tg.record(g, x).tape, x, v, x.shape) is None


def test_retraced_hvp_takes_the_fused_pass():
    # tg.hvp (re-traced every call) runs the fused pass on a tape it takes, as a recorded
    # tape's hvp does: the same bits; op-by-op (fusing off) agrees to rounding, and a tape it
    # does not take (an op after the sum that is not linear) gives the general path's numbers
    n = 5000
    rng = np.random.default_rng(11)
    x = rng.uniform(-0.8, 1.2, n)
    v = rng.standard_normal(n)
    h = tg.hvp(rosen, (x,), (v,))
    assert np.array_equal(h, tg.record(rosen, x).hvp(x, v))
    sweeps.set_fusing(False)
    h0 = tg.hvp(rosen, (x,), (v,))
    sweeps.set_fusing(True)
    close(h, h0)
    np.testing.assert_allclose(h, rosenbrock_hvp_hand(x, v, None), rtol=1e-12,
                               atol=1e-12 * np.abs(h).max())

    def squared(x):
        return np.sum(np.sin(x) * x) ** 2
    r = tg.record(squared, x)
    assert sweeps.hvp_fast(r.tape, x, v, x.shape) is None
    sweeps.set_fusing(False)
    expect = tg.hvp(squared, (x,), (v,))
    sweeps.set_fusing(True)
    assert np.array_equal(tg.hvp(squared, (x,), (v,)), expect)
