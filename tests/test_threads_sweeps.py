"""Threaded sweeps (_core/sweep_threads.pxi): long elementwise runs split into fixed chunks
over an OpenMP team. Every thread count must give the same bits: grad, value_and_grad, hvp,
forward values and vjp at 1, 2 and 3 threads on programs above the chunk threshold (shifted
slices, scalar broadcasts, masks, post ops, vector outputs); the numbers are checked against
the op-by-op sweeps (fusing and tiling off: the value bitwise, derivatives to rounding) and
closed forms. Also: the thread-count setting and its validation, TAPEGRAD_NUM_THREADS, one
tape replayed from several Python threads while the sweeps use a team, the batched replay."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import tapegrad as tg
from tapegrad._core import sweeps, _base_sweeps
from tapegrad.bench.workloads import rosenbrock_hand, rosenbrock_hvp_hand

from test_fusion import PROGRAMS, rosen, chain, close
from test_fused_hvp import EXTRA

CHUNK = 32768
N = 2 * CHUNK + 17          # the smallest kind of run that is cut: two chunks, a remainder
N_BIG = 5 * CHUNK + 1003    # several chunks


@pytest.fixture(autouse=True)
def _restore():
    prev_t = tg.set_num_threads(1)
    prev_f = sweeps.set_fusing(True)
    prev_s = sweeps.set_tiling(True)
    yield
    tg.set_num_threads(prev_t)
    sweeps.set_fusing(*prev_f)
    sweeps.set_tiling(*prev_s)


def scalar_param(x):
    # a scalar read from the inputs and broadcast over the run: its adjoint sums every chunk
    return np.sum((x[0] * x[1:] - 0.5) ** 2 + np.sin(x[1:]) * x[1])


def wide_shift(x):
    # a shift longer than a tile: the chunks of this tail run serially
    return np.sum(x[:-700] * x[700:] + np.cos(x[700:]))


def three_shifts(x):
    # three reads of x at offsets 0, 1 and 2 (a second difference)
    d2 = x[2:] - 2.0 * x[1:-1] + x[:-2]
    return np.sum(d2 * d2 + 0.1 * np.exp(-x[1:-1] ** 2))


def not_a_sum(x):
    # no fused tail (a max): the tiled segment's forward and reverse do the work
    return np.max(np.sin(x) * x + np.tanh(x) * 0.5)


def shifted_max(x):
    # a tiled segment with shifted reads: its reverse stays serial
    return np.max(x[1:] * x[:-1] + np.sin(x[1:]))


SCALAR = PROGRAMS + EXTRA + [scalar_param, wide_shift, three_shifts, not_a_sum, shifted_max]


def vector_out(x):
    y = np.exp(np.sin(x) * 0.3) * x - x * x
    return y * np.cos(x)


def vector_shifted(x):
    return x[1:] * x[:-1] - np.tanh(x[:-1])


def at_threads(nt, fn):
    tg.set_num_threads(nt)
    try:
        return fn()
    finally:
        tg.set_num_threads(1)


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and np.array_equal(a.view(np.int64), b.view(np.int64))


def scalar_results(r, x, v):
    val, g2 = r.value_and_grad(x)
    return [r.grad(x), val, g2, r.hvp(x, v), r(x)]


@pytest.mark.skipif(not sweeps.OPENMP, reason="built without OpenMP: the sweeps are serial")
def test_openmp_build_takes_the_count():
    assert tg.set_num_threads(3) == 1
    assert tg.get_num_threads() == 3
    assert _base_sweeps.get_num_threads() == 3 and sweeps.get_num_threads() == 3
    assert tg.set_num_threads(1) == 3


@pytest.mark.parametrize("f", SCALAR, ids=lambda f: f.__name__)
@pytest.mark.parametrize("n", [N, N_BIG])
def test_scalar_programs_same_bits_for_every_thread_count(f, n):
    rng = np.random.default_rng(n)
    x = rng.uniform(-1.0, 1.5, n)
    v = rng.standard_normal(n)
    r = tg.record(f, x)
    ref = at_threads(1, lambda: scalar_results(r, x, v))
    for nt in (2, 3):
        got = at_threads(nt, lambda: scalar_results(r, x, v))
        for name, a, b in zip(("grad", "value", "value_and_grad", "hvp", "forward"), got, ref):
            assert same_bits(a, b), (f.__name__, n, nt, name)
    g, val, _, h, fx = ref
    # the value is the op-by-op sum's bits (blocked sums everywhere), the derivatives agree
    # with the op-by-op sweeps to rounding
    sweeps.set_fusing(False)
    sweeps.set_tiling(False)
    assert val == r(x) == fx
    close(g, r.grad(x))
    close(h, r.hvp(x, v))


@pytest.mark.parametrize("tile", [16, 4096])
def test_tile_lengths(tile):
    rng = np.random.default_rng(tile)
    x = rng.uniform(-1.0, 1.5, N_BIG)
    v = rng.standard_normal(N_BIG)
    prev = sweeps.set_fusing(True, tile)
    prev_t = sweeps.set_tiling(True, tile)
    try:
        for f in (rosen, chain, three_shifts, wide_shift, not_a_sum):
            r = tg.record(f, x)
            ref = at_threads(1, lambda: scalar_results(r, x, v))
            got = at_threads(2, lambda: scalar_results(r, x, v))
            assert all(same_bits(a, b) for a, b in zip(got, ref)), f.__name__
    finally:
        sweeps.set_fusing(*prev)
        sweeps.set_tiling(*prev_t)


@pytest.mark.parametrize("f", [vector_out, vector_shifted], ids=lambda f: f.__name__)
def test_vector_programs_forward_and_vjp(f):
    rng = np.random.default_rng(1)
    x = rng.uniform(-1.0, 1.5, N_BIG)
    r = tg.record(f, x)
    u = rng.standard_normal(r(x).shape)
    ref = at_threads(1, lambda: (r(x), r.vjp(x, u)))
    for nt in (2, 3):
        got = at_threads(nt, lambda: (r(x), r.vjp(x, u)))
        assert same_bits(got[0], ref[0]) and same_bits(got[1], ref[1]), nt
    # tiled segments promise the op-by-op sweep's bits, threads or not
    sweeps.set_tiling(False)
    assert same_bits(r(x), ref[0])
    assert same_bits(r.vjp(x, u), ref[1])


def test_rosenbrock_closed_forms_at_two_threads():
    x = 1.0 + 0.1 * np.random.default_rng(0).standard_normal(N_BIG)
    v = np.random.default_rng(1).standard_normal(N_BIG)
    r = tg.record(rosen, x)
    tg.set_num_threads(2)
    close(r.grad(x), rosenbrock_hand(x, N_BIG), 1e-14)
    close(r.hvp(x, v), rosenbrock_hvp_hand(x, v, None), 1e-14)
    close(r.value_and_grad(x)[0], rosen(x), 1e-13)


def test_gradient_against_central_differences_at_two_threads():
    rng = np.random.default_rng(2)
    x = rng.uniform(-0.8, 1.2, N)
    d = rng.standard_normal(N)
    tg.set_num_threads(2)
    for f in (three_shifts, scalar_param, chain):
        r = tg.record(f, x)
        eps = 1e-6
        fd = (r(x + eps * d) - r(x - eps * d)) / (2 * eps)
        np.testing.assert_allclose(r.grad(x) @ d, fd, rtol=1e-6)


def test_shared_tape_from_python_threads_with_a_team():
    x = np.random.default_rng(8).uniform(-1.0, 1.5, N)
    v = np.random.default_rng(9).standard_normal(N)
    r = tg.record(rosen, x)
    want = scalar_results(r, x, v)
    tg.set_num_threads(2)
    got = [None] * 3
    errors = []

    def run(i):
        try:
            for _ in range(5):
                res = scalar_results(r, x, v)
            got[i] = res
        except BaseException as e:   # reported below, not lost in the thread
            errors.append(e)
    ts = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
        assert not t.is_alive()
    assert not errors
    for res in got:
        assert all(same_bits(a, b) for a, b in zip(res, want))


def test_batch_with_a_team_equals_a_loop():
    rng = np.random.default_rng(3)
    X = rng.uniform(-1.0, 1.5, (3, N))
    r = tg.record(rosen, X[0])
    loop = np.stack([r.grad(xi) for xi in X])
    tg.set_num_threads(2)
    assert same_bits(r.grad_batch(X, threads=2), loop)


@pytest.mark.parametrize("bad", [0, -1, -8])
def test_set_num_threads_rejects_counts_below_one(bad):
    with pytest.raises(ValueError, match="set_num_threads.*at least 1"):
        tg.set_num_threads(bad)
    assert tg.get_num_threads() == 1


@pytest.mark.parametrize("bad", [1.5, 2.0, "2", None, True, [2]])
def test_set_num_threads_rejects_non_integers(bad):
    with pytest.raises(TypeError, match="set_num_threads.*integer"):
        tg.set_num_threads(bad)
    assert tg.get_num_threads() == 1


def test_set_num_threads_takes_numpy_integers():
    tg.set_num_threads(np.int64(2))
    assert tg.get_num_threads() == (2 if sweeps.OPENMP else 1)


def _import_with(value):
    env = dict(os.environ, TAPEGRAD_NUM_THREADS=value)
    code = "import tapegrad as tg; print(tg.get_num_threads())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


@pytest.mark.skipif(not sweeps.OPENMP, reason="built without OpenMP: the count is always 1")
def test_environment_variable():
    p = _import_with("2")
    assert p.returncode == 0 and p.stdout.strip() == "2", p.stderr
    p = _import_with("auto")
    assert p.returncode == 0 and int(p.stdout) == sweeps.usable_cores(), p.stderr
    p = _import_with("0")
    assert p.returncode != 0 and "TAPEGRAD_NUM_THREADS" in p.stderr


@pytest.mark.parametrize("f", [rosen, chain, three_shifts, scalar_param],
                         ids=lambda f: f.__name__)
def test_gradient_into_a_dirty_buffer(f):
    # the chunks clear their own part of the gradient array: every element, whatever it held
    x = np.random.default_rng(4).uniform(-1.0, 1.5, N_BIG)
    r = tg.record(f, x)
    want = r.grad(x)
    for nt in (1, 2, 3):
        g = np.full(N_BIG, np.nan)
        g[::7] = 1e300
        out = at_threads(nt, lambda: r.grad(x, out=g))
        assert same_bits(out, want) and same_bits(g, want), (f.__name__, nt)


# ---- one large op of the op-by-op sweeps in chunks over the team (broadcasts, row sums,
# transposes, the elementwise ops between products): the serial sweep's bits for every count
ROWS, K, P = 307, 25, 10          # (ROWS, K, P) arrays: 76750 elements, above 2 chunks
DATA = np.random.default_rng(11).standard_normal((ROWS, P))


def mixture(w):
    # the GMM's shapes: a broadcast difference, a scaled row, an einsum (transposes and a
    # batched product), row sums, a log-sum-exp over K
    means, q, L = w[:K * P].reshape(K, P), w[K * P:2 * K * P].reshape(K, P), w[2 * K * P:]
    xc = DATA.reshape(ROWS, 1, P) - means.reshape(1, K, P)
    Lx = np.exp(q).reshape(1, K, P) * xc + np.einsum("kij,nkj->nki", L.reshape(K, P, P), xc)
    inner = -0.5 * np.sum(Lx * Lx, axis=2)
    mx = np.max(inner, axis=1, keepdims=True)
    return np.sum(np.log(np.sum(np.exp(inner - mx), axis=1)) + mx.reshape(ROWS))


def bias_and_alias(w):
    # a traced row repeated over the rows (its adjoint a sum over them: serial), x * x (one
    # region read twice at one offset), a traced scalar broadcast, a mask
    b, s, x = w[:250], w[250], w[251:].reshape(-1, 250)
    y = x * x + b - s * x
    z = np.where(x > 0.2, y, np.sin(x))
    return np.sum(np.sum(z, axis=1) ** 2) + np.sum(x.T @ np.ones(x.shape[0]))


def shifted_by_one(w):
    # x[1:] and x[:-1]: two chunks would add into one element, the reverse stays serial
    return np.sum(np.cos(w[1:] * w[:-1]) + w[1:])


@pytest.mark.parametrize("tiling", [False, True])
@pytest.mark.parametrize("f, n", [(mixture, 2 * K * P + K * P * P), (bias_and_alias, 251 + 250 * 300),
                                  (shifted_by_one, N)], ids=lambda v: getattr(v, "__name__", str(v)))
def test_large_ops_op_by_op_same_bits_for_every_thread_count(f, n, tiling):
    rng = np.random.default_rng(n)
    x = 0.3 * rng.standard_normal(n)
    v = rng.standard_normal(n)
    sweeps.set_fusing(False)
    sweeps.set_tiling(tiling)
    r = tg.record(f, x)
    u = rng.standard_normal(())

    def results():
        val, g = r.value_and_grad(x)
        return [r.grad(x), val, g, r.hvp(x, v), r(x), r.vjp(x, u)]
    ref = at_threads(1, results)
    for nt in (2, 3):
        got = at_threads(nt, results)
        for name, a, b in zip(("grad", "value", "value_and_grad", "hvp", "forward", "vjp"),
                              got, ref):
            assert same_bits(a, b), (f.__name__, nt, name)
    # and the numbers: the re-traced gradient (the NumPy-valued recording) and differences
    close(ref[0], tg.grad(f)(x))
    e = rng.standard_normal(n) * 1e-6
    assert float(ref[0] @ e) == pytest.approx((f(x + e) - f(x - e)) / 2, rel=1e-5, abs=1e-12)

