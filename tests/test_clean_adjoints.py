"""The clean mode of sweeps.value_and_grad (Recorded.grad's kept adjoint buffer): each op's
output adjoint is cleared right after its use instead of the whole buffer before the sweep.
The gradient must be bitwise the plain sweep's, and the buffer must be left all zero on every
path (eligible tapes, other tapes, a flipped guard, an exception inside the sweep)."""
import numpy as np
import pytest

import tapegrad as tg
from tapegrad._core import sweeps
from tapegrad._core.tape import OPCODES


@pytest.fixture(autouse=True)
def _restore():
    fz, tl = sweeps.set_fusing(True), sweeps.set_tiling(True)
    yield
    sweeps.set_fusing(*fz)
    sweeps.set_tiling(*tl)


def gmm_like(w):
    # broadcasting, an einsum (transposes and a batched product), reductions over an axis,
    # a max and an exp: the shape of the benchmark's mixture objective
    X = np.linspace(-1.0, 1.0, 60).reshape(20, 3)
    m = w[:12].reshape(4, 3)
    L = w[12:].reshape(4, 3, 3)
    xc = X.reshape(20, 1, 3) - m.reshape(1, 4, 3)
    Lx = np.exp(m).reshape(1, 4, 3) * xc + np.einsum("kij,nkj->nki", L, xc)
    inner = -0.5 * np.sum(Lx * Lx, axis=2)
    mx = np.max(inner, axis=1, keepdims=True)
    return np.sum(np.log(np.sum(np.exp(inner - mx), axis=1)) + mx.reshape(-1))


def tiled_chain(x):
    # long elementwise runs (tiling segments), then a product
    y = np.exp(np.sin(x) * 0.5) + np.tanh(x) * x
    y = np.log1p(y * y) - np.sqrt(np.abs(y) + 1.0)
    return np.sum(y.reshape(-1, 100) @ np.ones(100)) + np.sum(x[1:] * x[:-1])


def indexed(x):
    idx = np.array([3, 1, 1, 7, 0, 5])
    y = x[idx] * x[:6] + np.where(x[:6] > 0, x[2:8], -x[2:8])
    return np.sum(np.cumsum(y) ** 2) + np.prod(x[8:12])


def solved(x):
    # an OP_CALL rule (a linear solve) inside the tape
    A = x[:16].reshape(4, 4) + 4.0 * np.eye(4)
    return np.sum(np.linalg.solve(A, x[16:20]) ** 2) + np.sum(np.sin(x))


def scalar_loop(x):
    s = x[0]
    for k in range(30):
        s = s * 0.9 + np.sin(x[k % 3]) * x[(k + 1) % 3]
    return s


CASES = [(gmm_like, 48), (tiled_chain, 10000), (indexed, 12), (solved, 20), (scalar_loop, 3)]


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float64).view(np.int64)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("f,n", CASES, ids=[c[0].__name__ for c in CASES])
def test_clean_equals_plain_and_leaves_zeros(f, n, fused):
    sweeps.set_fusing(fused)
    rng = np.random.default_rng(3)
    x0 = rng.uniform(-1.0, 1.0, n)
    t = tg.record(f, x0)._variants[0].tape
    nw = max(t.nwork, 1)
    clean = np.zeros(nw)
    for x in (x0, rng.uniform(-1.0, 1.0, n), x0):
        g_ref = np.empty(n)
        v_ref, ok_ref = sweeps.value_and_grad(t, x, np.empty(nw), np.empty(nw), g_ref)
        g = np.empty(n)
        v, ok = sweeps.value_and_grad(t, x, np.empty(nw), clean, g, True, True)
        assert ok and ok_ref
        assert bits(v) == bits(v_ref)
        assert np.array_equal(bits(g), bits(g_ref))
        assert not clean.any(), "the clean adjoint buffer was left dirty"
    # against an independent reference: central differences
    if n <= 48:
        h = 1e-6
        fd = np.array([(f(x0 + h * e) - f(x0 - h * e)) / (2 * h) for e in np.eye(n)])
        g = np.empty(n)
        sweeps.value_and_grad(t, x0, np.empty(nw), clean, g, True, True)
        assert np.allclose(g, fd, rtol=1e-6, atol=1e-7)


def test_recorded_tapes_have_outs_apart():
    for f, n in CASES:
        t = tg.record(f, np.linspace(0.1, 0.9, n))._variants[0].tape
        assert t.outs_apart, f.__name__


def _crafted(kind):
    n = 50
    t = tg.Tape()
    t.alloc(n)                                  # inputs
    o1 = t.alloc(n + 10)
    o2 = t.alloc(n + 10)
    s = t.alloc(1)
    full = (1, n, 1, n)
    if kind == "overlap":                       # the second op writes into the first's slots
        t.add_op(OPCODES["exp"], 0, o1, 0, 0, 0, n)
        t.add_op(OPCODES["sin"], 0, o1 + 10, 0, 0, 0, n)
        t.add_op(OPCODES["multiply"], 0, o2 + 10, o1, o1 + 10, 0, n, *full)
        t.add_op(OPCODES["sum"], 0, s, o2 + 10, 0, 0, 1, 1, n, 1)
    elif kind == "later":                       # an op reads what a later op writes
        t.add_op(OPCODES["multiply"], 0, o2, 0, o1, 0, n, *full)
        t.add_op(OPCODES["exp"], 0, o1, 0, 0, 0, n)
        t.add_op(OPCODES["sum"], 0, s, o2, 0, 0, 1, 1, n, 1)
    else:                                       # reads slots no op writes
        t.add_op(OPCODES["exp"], 0, o1, n // 2, 0, 0, n)
        t.add_op(OPCODES["sum"], 0, s, o1, 0, 0, 1, 1, n, 1)
    t.set_io(n, s, 1)
    t.validate()
    return t


@pytest.mark.parametrize("kind", ["overlap", "later", "unwritten"])
def test_crafted_tapes_take_the_plain_path(kind):
    t = _crafted(kind)
    assert not t.outs_apart
    nw = t.nwork
    x = np.random.default_rng(1).uniform(-1.0, 1.0, t.nin)
    g_ref = np.empty(t.nin)
    # (never-written slots read as zeros in both runs)
    v_ref, _ = sweeps.value_and_grad(t, x, np.zeros(nw), np.empty(nw), g_ref)
    clean = np.zeros(nw)
    g = np.empty(t.nin)
    v, _ = sweeps.value_and_grad(t, x, np.zeros(nw), clean, g, True, True)
    assert bits(v) == bits(v_ref)
    assert np.array_equal(bits(g), bits(g_ref))
    assert not clean.any()


def test_guard_flip_leaves_the_buffer_clean():
    def f(x):
        return np.sum(x * x) if x[0] > 0 else np.sum(np.sin(x))
    sweeps.set_fusing(False)
    t = tg.record(f, np.array([1.0, 2.0, 3.0]))._variants[0].tape
    assert t.nguards
    clean = np.zeros(t.nwork)
    g = np.empty(3)
    _, ok = sweeps.value_and_grad(t, np.array([-1.0, 2.0, 3.0]), np.empty(t.nwork), clean, g,
                                  True, True)
    assert not ok
    assert not clean.any()


def test_exception_in_the_sweep_leaves_the_buffer_clean():
    calls = {"n": 0}

    @tg.custom_vjp
    def h(x):
        return np.sin(x)

    def h_fwd(x):
        return np.sin(x), x

    def h_bwd(x, g):
        calls["n"] += 1
        raise RuntimeError("adjoint failed")

    h.defvjp(h_fwd, h_bwd)

    def f(x):
        return np.sum(h(x * 2.0) * x)

    sweeps.set_fusing(False)
    t = tg.record(f, np.linspace(0.1, 0.5, 5))._variants[0].tape
    clean = np.zeros(t.nwork)
    with pytest.raises(RuntimeError, match="adjoint failed"):
        sweeps.value_and_grad(t, np.linspace(0.2, 0.6, 5), np.empty(t.nwork), clean,
                              np.empty(5), True, True)
    assert calls["n"] == 1
    assert not clean.any()


def test_recorded_grad_repeats_bitwise():
    # Recorded.grad keeps the clean buffer between calls: repeated and interleaved calls
    # (with vjp, which uses the other buffers) give the same bits as the first call
    rng = np.random.default_rng(5)
    x0, x1 = rng.uniform(-1, 1, 48), rng.uniform(-1, 1, 48)
    rec = tg.record(gmm_like, x0)
    g0, g1 = rec.grad(x0).copy(), rec.grad(x1).copy()
    for _ in range(3):
        assert np.array_equal(bits(rec.grad(x0)), bits(g0))
        rec.vjp(x1, 1.0)
        assert np.array_equal(bits(rec.grad(x1)), bits(g1))
    assert np.allclose(g0, tg.grad(gmm_like)(x0), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("f,n", CASES, ids=[c[0].__name__ for c in CASES])
def test_grad_at_values_clean(f, n):
    rng = np.random.default_rng(8)
    x = rng.uniform(-1.0, 1.0, n)
    t = tg.record(f, x)._variants[0].tape
    nw = max(t.nwork, 1)
    w = sweeps.forward(t, x).copy()
    skip = np.zeros(t.nops, dtype=np.uint8)
    skip[::2] = 1                                  # half the values taken from w as they are
    g_ref, g = np.empty(n), np.empty(n)
    v_ref = sweeps.grad_at_values(t, w.copy(), skip, np.empty(nw), g_ref)
    clean = np.zeros(nw)
    v = sweeps.grad_at_values(t, w.copy(), skip, clean, g, True)
    assert bits(v) == bits(v_ref)
    assert np.array_equal(bits(g), bits(g_ref))
    assert not clean.any()


def test_retraced_grad_leaves_its_scratch_clean():
    from tapegrad.engine import traced
    rng = np.random.default_rng(2)
    for f, n in CASES:
        x = rng.uniform(-1.0, 1.0, n)
        g1 = tg.grad(f)(x)
        bufs = getattr(traced._scratch_local, "bufs", None)
        if bufs is not None:
            assert not bufs[1].any(), f.__name__
        # the next gradient through the kept scratch: the same bits as the replay's
        assert np.array_equal(bits(tg.grad(f)(x)), bits(g1)), f.__name__
        assert np.allclose(g1, tg.record(f, x).grad(x), rtol=1e-12, atol=1e-13), f.__name__
