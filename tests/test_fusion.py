"""The fused gradient tail: a scalar loss ending in a run of elementwise ops and a full sum has
its forward and reverse run tile by tile in a small scratch (sweeps.grad_fused), with uniform
adjoints folded into constants and values the adjoints never read left uncomputed.

Checked against the op-by-op sweeps (fusing off): the value bitwise, the gradient up to the
order in which an input's adjoint adds its contributions; against closed forms; across tile
lengths, threads, guards, aliasing of out= with the input, and the AVX2 and baseline builds."""
import threading

import numpy as np
import pytest

import tapegrad as tg
from tapegrad._core import sweeps, _base_sweeps
from tapegrad._core.tape import OPCODES
from tapegrad.bench.workloads import rosenbrock_hand

N = 10007


@pytest.fixture(autouse=True)
def _restore():
    prev = sweeps.set_fusing(True)
    prev_t = sweeps.set_tiling(True)
    yield
    sweeps.set_fusing(*prev)
    sweeps.set_tiling(*prev_t)


def rosen(x):
    return np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def chain(x):
    y = np.exp(np.sin(x) * 0.5) + np.tanh(x) * x
    y = np.log1p(y * y) - np.sqrt(np.abs(y) + 1.0)
    return np.sum(np.logaddexp(y, -y) + np.maximum(y, 0.1) * np.minimum(x, 0.3))


def linear_mix(x):
    # uniform adjoints: add/sub/neg/mulc/addc/rsubc only pass constants on; y gets a uniform
    # part (2 y) and a row part (y * y) at once
    y = np.exp(x * 0.3)
    z = 2.0 * y + y * y - (3.0 - y) + (-y) * 0.5 + (y + 1.0)
    return np.sum(z - np.sin(x))


def prefix(x):
    # ops before the tail (a sum and a scalar broadcast): the tail does not start at op 0
    s = np.sum(x[:7] ** 2)
    return np.sum(np.cos(x * s) + x * x)


def masked(x):
    y = np.where(x > 0.2, x ** 2, -x)
    return np.sum(y * (x >= 0.5) + np.floor(x * 3.0) * y)


def mse(x):
    # a mean: the sum is followed by a scaling (a "post" op whose adjoint reads no value)
    return np.mean((np.tanh(x) - 0.3) ** 2)


def penalized(x):
    # post ops with their own work: a mean plus a penalty on a few entries, as in a loss
    return np.sum(np.logaddexp(0.0, -x * 1.5)) / x.size + 0.05 * np.sum(x[:50] * x[:50])


def log_of_sum(x):
    # a post op whose adjoint reads the sum's value
    return np.log(np.sum(np.exp(-x * x)) + 1.0)


PROGRAMS = [rosen, chain, linear_mix, prefix, masked, mse, penalized, log_of_sum]
POST = (mse, penalized, log_of_sum)


def grads(r, x, fused):
    sweeps.set_fusing(fused)
    g = r.grad(x)
    v, g2 = r.value_and_grad(x)
    return v, g, g2


def close(a, b, tol=1e-13):
    scale = max(1.0, np.abs(b).max())
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("f", PROGRAMS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("n", [N, 4097, 5000, 300, 1000])
def test_fused_equals_op_by_op(f, n):
    x = np.random.default_rng(n).uniform(-1.0, 1.5, n)
    r = tg.record(f, x)
    k = r.tape.fused_tail()
    assert k is not None and (k[1] < r.tape.nops - 1) == (f in POST)
    assert (k[0] > 0) == (f is prefix)
    v0, g0, h0 = grads(r, x, False)
    v1, g1, h1 = grads(r, x, True)
    assert v1 == v0                       # the value: the same kernels, the same partial sums
    close(g1, g0)
    close(h1, g0)
    assert np.array_equal(g1, h1)         # skipping the value changes no adjoint
    close(g1, tg.grad(f)(x))               # re-tracing (the NumPy reference sweep for nesting)


def test_rosenbrock_closed_form():
    x = 1.0 + 0.1 * np.random.default_rng(0).standard_normal(N)
    r = tg.record(rosen, x)
    assert r.tape.fused_tail() == (0, r.tape.nops - 1) == r.info()["fused_tail"]
    close(r.grad(x), rosenbrock_hand(x, N), 1e-14)
    v, g = r.value_and_grad(x)
    close(v, rosen(x), 1e-14)


@pytest.mark.parametrize("tile", [16, 64, 512, 4096])
def test_tile_lengths(tile):
    x = np.random.default_rng(3).uniform(-1.0, 1.5, N)
    for f in PROGRAMS:
        r = tg.record(f, x)
        sweeps.set_fusing(False)
        ref = r.grad(x)
        sweeps.set_fusing(True, tile)
        close(r.grad(x), ref)


def test_no_tail():
    x = np.linspace(-1, 1, N)
    assert tg.record(lambda x: np.sum(x * x), x[:100]).tape.fused_tail() is None   # too small
    assert tg.record(lambda x: np.max(np.sin(x)), x).tape.fused_tail() is None     # not a sum
    assert tg.record(lambda x: np.sin(x) * 2.0, x).tape.fused_tail() is None        # no scalar
    # column sums, then a sum of those (too short): no full sum of a long elementwise run
    assert tg.record(lambda x: np.sum(np.sum(np.sin(x[:10000]).reshape(100, 100), axis=0)),
                     x).tape.fused_tail() is None
    # a sum over the only axis of a (1, n) array is a full sum: fused, with a post op
    t = tg.record(lambda x: np.sum(np.sum(np.sin(x).reshape(1, -1), axis=1)), x).tape
    assert t.fused_tail() == (0, 1) and t.nops == 3


def test_post_op_reading_a_tail_value_is_not_fused():
    def f(x):
        y = np.sin(x) * 2.0
        return np.sum(y * y) + y[3] * 0.5            # the post add reads y, a tail output
    x = np.random.default_rng(4).uniform(-1.0, 1.0, N)
    r = tg.record(f, x)
    k = r.tape.fused_tail()
    ops = r.tape.op_table()
    # whatever is fused, no op after its sum reads or writes a tail output
    if k is not None:
        outs = [(ops["out"][j], ops["n"][j]) for j in range(k[0], k[1])]
        for j in range(k[1] + 1, r.tape.nops):
            for o, m in outs:
                for a in (ops["a"][j], ops["b"][j]):
                    assert not o <= a < o + m
    close(r.grad(x), tg.grad(f)(x))
    sweeps.set_fusing(False)
    close(r.grad(x), tg.grad(f)(x))


def test_guard_on_the_loss_value():
    def f(x):
        s = np.mean(np.cos(x) ** 2)
        if s > 0.5:                                   # a guard on the post op's value
            return s * 2.0
        return s - 1.0
    x = np.random.default_rng(11).uniform(-0.5, 0.5, N)
    r = tg.record(f, x)
    assert r.tape.nguards > 0
    for z in (x, x + 1.2, x):                         # cos^2 mean above, then below 0.5
        close(r.grad(z), tg.grad(f)(z))
        v, g = r.value_and_grad(z)
        assert v == pytest.approx(f(z), rel=1e-13)


def test_out_aliasing_input():
    x = np.random.default_rng(5).uniform(-1.0, 1.0, N)
    r = tg.record(chain, x)
    want = r.grad(x)
    y = x.copy()
    got = r.grad(y, out=y)        # the gradient overwrites the input it is computed from
    assert got is y
    close(y, want)


def test_guards_before_the_tail():
    def f(x):
        if np.sum(x[:3]) > 0:
            return np.sum(np.sin(x) * x)
        return np.sum(np.cos(x) + x * x)
    x = np.random.default_rng(6).uniform(0.1, 1.0, N)
    r = tg.record(f, x)
    assert r.tape.nguards > 0 and r.tape.fused_tail() is not None
    for sign in (1.0, -1.0, 1.0):
        z = sign * x
        close(r.grad(z), tg.grad(f)(z))
        v, g = r.value_and_grad(z)
        assert v == pytest.approx(f(z), rel=1e-13)


@pytest.mark.filterwarnings("ignore::tapegrad.TracerConversionWarning")
def test_guard_on_a_tail_value_stops_the_tail():
    def f(x):
        y = np.sin(x)
        z = np.exp(y)
        if float(z[5]) > 1.0:           # a guard on an element of z (a tail output)
            return np.sum(z * y)
        return np.sum(z - y)
    x = np.random.default_rng(7).uniform(-1.0, 1.0, N)
    r = tg.record(f, x)
    k = r.tape.fused_tail()
    # the guarded op (exp) and everything before it stay out of the tail
    codes = r.tape.op_table()["code"]
    assert k is None or all(codes[j] != OPCODES["exp"] for j in range(k[0], k[1]))
    for s in (1.0, -1.0):
        z = x.copy()
        z[5] = s * 1.2
        close(r.grad(z), tg.grad(f)(z))


def test_threads_same_as_serial():
    x = np.random.default_rng(8).uniform(-1.0, 1.5, N)
    r = tg.record(chain, x)
    want = r.grad(x)
    got = [None] * 4

    def run(i):
        for _ in range(20):
            g = r.grad(x)
        got[i] = g
    ts = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for g in got:
        assert np.array_equal(g, want)


def test_crafted_tape_straddling_inputs():
    # a hand-made tape whose tail reads a region that runs over the end of the inputs: the
    # tail must not read the caller's input array there (it reads the work buffer instead)
    n = 5000
    full = (1, n, 1, n)
    t = tg.Tape()
    t.alloc(2 * n + 10)                       # inputs: [0, n + 10); more slots after
    o1 = t.alloc(n)
    o2 = t.alloc(n)
    s = t.alloc(1)
    t.add_op(OPCODES["exp"], 0, o1, 20, 0, 0, n)                 # reads [20, n + 20): straddles
    t.add_op(OPCODES["multiply"], 0, o2, o1, 0, 0, n, *full)
    t.add_op(OPCODES["sum"], 0, s, o2, 0, 0, 1, 1, n, 1)
    t.set_io(n + 10, s, 1)
    t.validate()
    assert t.fused_tail() == (0, 2)
    x = np.random.default_rng(9).uniform(-1, 1, n + 10)
    nw = t.nwork
    res = []
    for fused in (False, True):
        sweeps.set_fusing(fused)
        g = np.empty(n + 10)
        # (slots [n + 10, n + 20) are read but never written: zeros in both runs)
        v, ok = sweeps.value_and_grad(t, x, np.zeros(nw), np.empty(nw), g)
        res.append((v, g))
    assert res[0][0] == res[1][0]
    close(res[1][1], res[0][1])


def test_crafted_outputs_in_inputs_not_fused():
    n = 5000
    t = tg.Tape()
    t.alloc(3 * n)
    t.add_op(OPCODES["exp"], 0, n, 0, 0, 0, n)
    t.add_op(OPCODES["sum"], 0, 2 * n, n, 0, 0, 1, 1, n, 1)
    t.set_io(3 * n, 2 * n, 1)             # every slot is an input, the outputs too
    t.validate()
    assert t.fused_tail() is None


@pytest.mark.skipif(sweeps is _base_sweeps, reason="no AVX2 build of the sweeps here")
def test_avx2_build_bitwise_same_as_baseline():
    assert sweeps.SIMD == "avx2" and _base_sweeps.SIMD == "base"
    rng = np.random.default_rng(10)
    x = rng.uniform(-1.0, 1.5, N)
    W = rng.standard_normal((100, 100)) / 10.0

    def mlp(x):
        h = np.tanh(x[:10000].reshape(100, 100) @ W.T + 0.1)
        return np.sum(h * h) + rosen(x)
    for f in PROGRAMS + [mlp]:
        t = tg.record(f, x).tape
        nw = t.nwork
        out = []
        for mod in (_base_sweeps, sweeps):
            mod.set_fusing(True)
            g = np.empty(N)
            v, ok = mod.value_and_grad(t, x, np.empty(nw), np.empty(nw), g)
            w = mod.forward(t, x).copy()
            wb = mod.reverse(t, w, np.ones(1)).copy()
            V = rng.standard_normal((2, N)) if not out else out[0][-1]
            h = mod.hvp(t, w, V)
            out.append((v, g, w, wb, h, V))
        for a, b in zip(out[0][:5], out[1][:5]):
            assert np.array_equal(np.asarray(a).view(np.int64), np.asarray(b).view(np.int64)), f.__name__
