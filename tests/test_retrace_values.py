"""Re-traced gradients (tg.grad(f)(x), the way autograd is used) start their reverse sweep from
the values the recording computed for its costly ops (matmul, transcendental functions), and
sweep forward only through the cheap ones (Traced.compiled_grad, sweeps.grad_at_values).

Checked against the replayed gradient of the same recording (a forward sweep of its own), the
same call with capturing off, central differences, and the NumPy reference sweep; that the
captured path is really taken; that its kept work buffers survive nested gradients (a custom
rule calling tg.grad inside the sweep) and threads."""
import threading

import numpy as np
import pytest

import tapegrad as tg
from tapegrad import numdiff
from tapegrad._core import sweeps
from tapegrad.engine import traced

from _programs import random_program


@pytest.fixture
def counted(monkeypatch):
    calls = []
    real = sweeps.grad_at_values

    def spy(*a):
        calls.append(a[2].size)
        return real(*a)
    monkeypatch.setattr(traced.sweeps, "grad_at_values", spy)
    yield calls


def scalar(f):
    def g(x, y, z, s):
        a, b = f(x, y, z, s)
        return np.sum(a * a) * 0.1 + b
    g.__name__ = f.__name__
    return g


@pytest.mark.parametrize("seed", range(40))
def test_random_programs_captured_equals_replay(seed, counted, monkeypatch):
    monkeypatch.setattr(traced, "_CAPTURE_MIN_WORK", 0)     # (these tapes are small)
    f, args = random_program(seed)
    g = scalar(f)
    vals, grads = tg.value_and_grad(g, argnums=(0, 1, 2, 3))(*args)
    traced.CAPTURE = False
    try:
        v0, g0 = tg.value_and_grad(g, argnums=(0, 1, 2, 3))(*args)
    finally:
        traced.CAPTURE = True
    rec = tg.record(g, *args)
    gr = rec.grad(*args)
    for a, b, c in zip(grads, g0, gr):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12)
    assert vals == pytest.approx(v0, rel=1e-13, abs=1e-13)
    assert vals == pytest.approx(g(*args), rel=1e-13, abs=1e-13)
    # every program has a costly op (the final sin): the captured path ran
    assert counted


def test_the_captured_path_is_taken_and_matches_differences(counted):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 20))
    W2 = rng.standard_normal((16, 3))

    def loss(w):
        h = np.tanh(X @ w.reshape(20, 16))
        return np.sum(np.logaddexp(0.0, h @ W2)) / 300 + 0.01 * np.sum(w * w)
    w = 0.3 * rng.standard_normal(320)
    g = tg.grad(loss)(w)
    assert counted, "the re-traced gradient did not start from the recording's values"
    fd = numdiff.gradient(loss, w)
    np.testing.assert_allclose(g, fd.value, rtol=1e-6, atol=1e-8)
    # the same recording replayed at the same point: the forward sweep's own values
    np.testing.assert_allclose(g, tg.record(loss, w).grad(w), rtol=1e-13, atol=1e-15)


def test_scalar_code_and_fused_tails_keep_their_paths(counted):
    x = np.linspace(0.1, 1.0, 5000)
    tg.grad(lambda x: np.sum((x[1:] - x[:-1] ** 2) ** 2))(x)      # nothing costly captured
    tg.grad(lambda x: x[0] * x[1] + x[2])(np.array([1.0, 2.0, 3.0]))
    # long elementwise runs keep the fused tail (it recomputes in cache): their costly values
    # are not kept, nor is a product's before a long tail
    y = np.linspace(-1.0, 1.0, 200_000)
    tg.grad(lambda y: np.sum(np.exp(np.sin(y)) * y))(y)
    M = np.linspace(0.0, 1.0, 200_000 * 40).reshape(200_000, 40)
    tg.grad(lambda w: np.sum(np.tanh(M @ w) ** 2))(np.linspace(0.0, 1.0, 40))
    assert counted == []


def test_gradient_inside_a_custom_rule_during_the_sweep():
    # the bwd rule of a custom_vjp runs inside the outer reverse sweep and takes a re-traced
    # gradient of its own: it must not reuse the outer call's kept buffers
    rng = np.random.default_rng(1)
    A = rng.standard_normal((40, 40)) / 6

    def inner(v):
        return np.sum(np.tanh(A @ v) ** 2)

    @tg.custom_vjp
    def h(v):
        return np.sin(v)

    def h_fwd(v):
        return h(v), v

    def h_bwd(v, gbar):
        return (gbar * np.cos(v) + 0.0 * tg.grad(inner)(np.asarray(v)),)

    h.defvjp(h_fwd, h_bwd)

    def outer(v):
        return np.sum(np.exp(A @ h(v)) * 0.1)
    v = rng.standard_normal(40)
    g = tg.grad(outer)(v)
    ref = tg.grad(lambda v: np.sum(np.exp(A @ np.sin(v)) * 0.1))(v)
    np.testing.assert_allclose(g, ref, rtol=1e-13, atol=1e-15)


def test_threads_each_get_their_own_buffers():
    rng = np.random.default_rng(2)
    A = rng.standard_normal((200, 50))

    def f(w):
        return np.sum(np.tanh(A @ w) ** 2)
    ws = [rng.standard_normal(50) for _ in range(8)]
    refs = [tg.record(f, w).grad(w) for w in ws]
    out = [None] * len(ws)
    errors = []

    def work(i):
        try:
            for _ in range(20):
                out[i] = tg.grad(f)(ws[i])
        except Exception as e:   # noqa: BLE001 - reported below
            errors.append(e)
    ts = [threading.Thread(target=work, args=(i,)) for i in range(len(ws))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    for a, b in zip(out, refs):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


def test_grad_at_values_checks_its_arguments():
    rng = np.random.default_rng(3)
    A = rng.standard_normal((30, 30))
    rec = tg.record(lambda x: np.sum(np.tanh(A @ x)), rng.standard_normal(30))
    t = rec.tape
    w, wb, g = np.empty(t.nwork), np.empty(t.nwork), np.empty(30)
    with pytest.raises(ValueError, match="buffer sizes"):
        sweeps.grad_at_values(t, w, np.zeros(t.nops + 1, np.uint8), wb, g)
    with pytest.raises(ValueError, match="buffer sizes"):
        sweeps.grad_at_values(t, w[:-1], np.zeros(t.nops, np.uint8), wb, g)
    with pytest.raises(ValueError, match="buffer sizes"):
        sweeps.grad_at_values(t, w, np.zeros(t.nops, np.uint8), wb, g[:-1])
    # skipping nothing is a plain forward and reverse sweep
    x = rng.standard_normal(30)
    w[:30] = x
    sweeps.grad_at_values(t, w, np.zeros(t.nops, np.uint8), wb, g)
    np.testing.assert_array_equal(g, rec.grad(x))


def test_captured_ops_inside_a_tiling_segment_are_not_computed_again():
    # x -> -x -> exp -> sum: one tiling segment; with exp's values given (skip set) the tiles
    # run only the negation and the sum, so a value planted in exp's output is what is summed
    n = 5000
    x = np.random.default_rng(4).standard_normal(n)
    rec = tg.record(lambda z: np.sum(np.exp(-z)), x)
    t = rec.tape
    table = t.op_table()
    k_exp = [k for k, c in enumerate(table["code"].tolist()) if c == tg.primitives.OPCODES["exp"]][0]
    assert any(k0 <= k_exp < k1 for k0, k1, _ in t.segments()), "exp is not in a tiling segment"
    w, wb, g = np.empty(t.nwork), np.empty(t.nwork), np.empty(n)
    w[:n] = x
    o = int(table["out"][k_exp])
    planted = 2.0 * np.exp(-x)
    w[o:o + n] = planted
    skip = np.zeros(t.nops, np.uint8)
    skip[k_exp] = 1
    val = sweeps.grad_at_values(t, w, skip, wb, g)
    assert val == pytest.approx(planted.sum(), rel=1e-12)
    np.testing.assert_array_equal(w[o:o + n], planted)
    # the reverse reads the planted values too: d/dx sum(exp(-x)) = -exp(-x), here doubled
    np.testing.assert_allclose(g, -planted, rtol=1e-14)
    # skipping nothing recomputes everything: the true value and gradient
    w[o:o + n] = planted
    val = sweeps.grad_at_values(t, w, np.zeros(t.nops, np.uint8), wb, g)
    assert val == pytest.approx(np.exp(-x).sum(), rel=1e-12)
    np.testing.assert_allclose(g, rec.grad(x), rtol=1e-14)


@pytest.mark.parametrize("sa, sb", [((7, 40), (40, 5)), ((7, 40), (40,)), ((40,), (40, 6)),
                                    ((3, 4, 40), (3, 40, 2)), ((3, 4, 40), (40, 2)),
                                    ((4, 40), (3, 40, 2)), ((1, 4, 40), (3, 40, 2)),
                                    ((5, 0), (0, 3)), ((0, 8), (8, 3)), ((40,), (40,))])
def test_recorded_products_are_the_replays_bits(sa, sb):
    # a product's value while recording comes from the sweeps' own kernel (sweeps.matmul_value:
    # the sweeps' BLAS, not NumPy's copy of it), so the recording and a replay of it agree to
    # the bit, for traced and constant operands, batches and broadcast batches
    rng = np.random.default_rng(len(sa) * 10 + len(sb))
    A, B = rng.standard_normal(sa), rng.standard_normal(sb)
    for traced_a, traced_b in ((True, False), (False, True), (True, True)):
        seen = []

        def f(a, b):
            y = (a if traced_a else A) @ (b if traced_b else B)
            seen.append(y)
            return y
        rec = tg.record(f, A, B)
        recorded = np.asarray(seen[0]._val)
        np.testing.assert_array_equal(recorded, rec(A, B))
        np.testing.assert_allclose(recorded, A @ B, rtol=1e-13, atol=1e-13)
        assert recorded.shape == (A @ B).shape


@pytest.mark.parametrize("layout", ["a.T", "b.T", "both.T", "strided"])
def test_recorded_products_of_other_layouts(layout):
    # a transposed view (X.T of a C-ordered X) is multiplied by BLAS's transposed flag, other
    # layouts are copied first: NumPy's product to rounding, and the same gradient as a replay
    rng = np.random.default_rng(7)
    A0, B0 = rng.standard_normal((40, 9)), rng.standard_normal((6, 40))
    A, B = {"a.T": (A0.T, B0.T), "b.T": (A0.T.copy(), B0.T), "both.T": (A0.T, B0.T),
            "strided": (rng.standard_normal((9, 80))[:, ::2], B0.T)}[layout]
    seen = []

    def f(x):
        y = (A * x[0]) @ B             # a constant on the right
        z = A @ (B * x[1])             # and on the left
        seen.append((y, z))
        return np.sum(np.tanh(y)) + np.sum(z * z)
    x = np.array([0.3, 0.7])
    rec = tg.record(f, x)
    y, z = seen[0]
    np.testing.assert_allclose(np.asarray(y._val), (A * 0.3) @ B, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(np.asarray(z._val), A @ (B * 0.7), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(tg.grad(f)(x), rec.grad(x), rtol=1e-12)
    np.testing.assert_allclose(tg.grad(f)(x), numdiff.gradient(f, x).value, rtol=1e-6)


def test_matmul_value_checks_its_arguments():
    a, b, y = np.ones(12), np.ones(20), np.empty(15)
    sweeps.matmul_value(a, b, y, 1, 3, 4, 5, 0, 0)
    np.testing.assert_array_equal(y, np.full(15, 4.0))
    with pytest.raises(ValueError, match="smaller than its shape"):
        sweeps.matmul_value(a[:-1], b, y, 1, 3, 4, 5, 0, 0)
    with pytest.raises(ValueError, match="smaller than its shape"):
        sweeps.matmul_value(a, b, y, 2, 3, 4, 5, 12, 0)      # a second A past the end
    with pytest.raises(ValueError, match="smaller than its shape"):
        sweeps.matmul_value(a, b, y[:-1], 1, 3, 4, 5, 0, 0)
    with pytest.raises(ValueError, match="negative"):
        sweeps.matmul_value(a, b, y, 1, -3, 4, 5, 0, 0)
    with pytest.raises(ValueError, match="int sizes"):
        sweeps.matmul_value(a, b, y, 1, 3, 1 << 31, 5, 0, 0)
    # a zero inner dimension is a zero product
    y[:] = np.nan
    sweeps.matmul_value(np.empty(0), np.empty(0), y, 1, 3, 0, 5, 0, 0)
    np.testing.assert_array_equal(y, np.zeros(15))


@pytest.mark.parametrize("f, guarded", [
    (lambda x: np.sum(np.sin(x) * x), False),                          # a fused tail
    (lambda x: np.exp(x[0] * x[1]) + np.sqrt(x[2]), False),            # scalar code (partials)
    (lambda x: np.max(np.tanh(x)) + np.sum(x[1:] * x[:-1]), False),    # neither
    (lambda x: (x[0] * 2.0 if x[1] > 0 else x[0] ** 3) + 0.0, True),   # a guard
])
def test_grad_fast_value_is_the_sweeps(f, guarded):
    # a small one-input re-traced gradient goes through sweeps.grad_fast(..., with_value=True):
    # its value and gradient are value_and_grad's sweep's, to the bit
    x = np.random.default_rng(5).uniform(0.2, 1.2, 40)
    r = tg.record(f, x)
    t = r.tape
    g, val = sweeps.grad_fast(t, x, x.shape, True)
    w, wb, g2 = np.empty(t.nwork), np.empty(t.nwork), np.empty(x.size)
    val2, ok = sweeps.value_and_grad(t, x, w, wb, g2)
    assert ok and val == val2
    np.testing.assert_array_equal(g, g2)
    np.testing.assert_array_equal(sweeps.grad_fast(t, x, x.shape), g)
    v3, g3 = tg.value_and_grad(f)(x)
    assert v3 == val
    np.testing.assert_array_equal(g3, g)
    assert (t.nguards > 0) == guarded
    if guarded:         # the guard flips: no result, the caller takes the general path
        y = x.copy()
        y[1] = -1.0
        assert sweeps.grad_fast(t, y, y.shape, True) is None
