"""Record once, replay in C (tapegrad.compiled): replay equals re-trace, guards, threads, out=
buffers, the compile() cache and tape optimization (dead ops dropped, constants folded)."""
import threading
import tracemalloc

import numpy as np
import pytest

import tapegrad as tg

TOL = 1e-14


# ---------------------------------------------------------------------------- workloads
def worked(x):
    return np.exp(x[0] + x[1] ** 3) * x[2] + np.sqrt(x[0] ** 2 + x[1] ** 2 + x[2] ** 2)


def rosenbrock(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


_rng = np.random.default_rng(7)
_Xd = _rng.standard_normal((20, 5))
_yd = (_rng.random(20) > 0.5).astype(float)
_W1 = _rng.standard_normal((5, 8)) * 0.5


def logistic(w):
    z = _Xd @ w
    return np.mean(np.logaddexp(0.0, z) - _yd * z) + 0.01 * np.sum(w * w)


def mlp(w):
    W1 = w[:40].reshape(5, 8)
    b1 = w[40:48]
    W2 = w[48:56]
    h = np.tanh(_Xd @ W1 + b1)
    out = h @ W2
    return np.mean((out - _yd) ** 2)


def bcast_index(x):
    A = x.reshape(3, 4)
    B = A - np.mean(A, axis=0) + A[:, :1] * np.arange(4.0)   # broadcasting both ways
    C = B[[2, 0, 1]][:, ::2] + B.T[1:3].T[::-1] / (1.0 + A[1, :2])  # fancy, strided, transposed
    return np.sum(np.sin(C) ** 2) + np.max(A[1:, 2]) * np.prod(A[0, :2])


CASES = [
    (worked, lambda r: np.array([0.3, 0.7, 1.1]) + 0.2 * r.standard_normal(3)),
    (rosenbrock, lambda r: 1.0 + 0.3 * r.standard_normal(10)),
    (logistic, lambda r: r.standard_normal(5)),
    (mlp, lambda r: 0.5 * r.standard_normal(56)),
    (bcast_index, lambda r: 0.5 + r.random(12)),
]


def close(a, b, tol=TOL):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape
    scale = max(1.0, float(np.max(np.abs(b)))) if b.size else 1.0
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * scale)


# ---------------------------------------------------------------------------- replay == re-trace
@pytest.mark.parametrize("f, point", CASES, ids=[c[0].__name__ for c in CASES])
def test_replay_equals_retrace(f, point):
    rng = np.random.default_rng(3)
    x0 = point(rng)
    r = tg.record(f, x0)
    for _ in range(25):
        x = point(rng)
        v = rng.standard_normal(x.shape)
        close(r(x), f(x))
        val, g = r.value_and_grad(x)
        close(val, f(x))
        close(g, tg.grad(f)(x))
        close(r.grad(x), tg.grad(f)(x))
        close(r.hvp(x, v), tg.hvp(f, (x,), (v,)))
        o, t = r.jvp(x, v)
        o2, t2 = tg.jvp(f, (x,), (v,))
        close(o, o2)
        close(t, t2)
        close(r.vjp(x, 2.5), 2.5 * tg.grad(f)(x))
    assert r.rerecords == 0


def test_jacobian_and_hessian_replay():
    def vec(x):
        return np.concatenate([np.sin(x) * x[0], np.cumsum(x)[1:] ** 2])
    rng = np.random.default_rng(4)
    x0 = rng.standard_normal(4)
    r = tg.record(vec, x0)
    h = tg.record(rosenbrock, x0)
    for _ in range(10):
        x = rng.standard_normal(4)
        for mode in ("fwd", "rev"):
            close(r.jacobian(x, mode), tg.jacobian(vec, mode=mode)(x))
        close(h.hessian(x), tg.hessian(rosenbrock)(x))


def test_pytree_inputs_and_outputs():
    def f(p, s):
        return {"loss": np.sum(p["w"] ** 2) * s + p["b"], "pred": p["w"] * p["b"]}
    p0 = {"w": np.array([1.0, 2.0]), "b": 0.5}
    r = tg.record(f, p0, 3.0)
    p1 = {"w": np.array([-1.0, 0.25]), "b": 2.0}
    out = r(p1, 1.5)
    ref = f(p1, 1.5)
    close(out["loss"], ref["loss"])
    close(out["pred"], ref["pred"])


# ---------------------------------------------------------------------------- guards
def branchy(x):
    return x ** 2 if x > 0 else -x


@pytest.mark.parametrize("x0", [1.5, -1.5])
def test_guard_alternating_sides(x0):
    r = tg.record(branchy, x0)
    pts = [0.7, -0.4, 2.0, -3.0, 1e-3, -1e-3, 5.0, -5.0] * 3
    for x in pts:
        val, g = r.value_and_grad(x)
        assert val == (x * x if x > 0 else -x)
        assert g == (2 * x if x > 0 else -1.0)
        assert r(x) == (x * x if x > 0 else -x)
        assert r.grad(x) == (2 * x if x > 0 else -1.0)
        assert r.hvp(x, 1.0) == (2.0 if x > 0 else 0.0)
        assert r.jvp(x, 1.0)[1] == (2 * x if x > 0 else -1.0)
    # one variant per side: after the first flip no more re-recording is needed
    assert r.rerecords == 1
    assert r.info()["variants"] == 2


def test_guard_strict_raises():
    r = tg.record(branchy, 1.5, strict=True)
    assert r.grad(2.0) == 4.0
    with pytest.raises(tg.GuardError):
        r.grad(-1.0)
    with pytest.raises(tg.GuardError):
        r(-1.0)
    with pytest.raises(tg.GuardError):
        r.hvp(-1.0, 1.0)
    assert r.grad(0.5) == 1.0        # still usable on the recorded side


def test_guard_on_array_input_and_compile():
    def f(x):
        if np.sum(x) > 1.0:
            return np.sum(np.exp(x))
        return np.sum(x ** 3)
    c = tg.compile(f)
    rng = np.random.default_rng(5)
    for _ in range(20):
        x = rng.standard_normal(3)
        close(c(x), f(x))
        close(c.grad(x), tg.grad(f)(x))


def test_boolean_mask_indexing_on_replay():
    def f(x):
        return np.sum(x[x > 0] ** 2) - np.sum(x[x <= 0])
    rng = np.random.default_rng(6)
    r = tg.record(f, rng.standard_normal(6))
    for _ in range(30):
        x = rng.standard_normal(6)
        close(r(x), f(x))
        close(r.grad(x), np.where(x > 0, 2 * x, -1.0))
    assert r.rerecords > 0


def test_argmax_dependent_code_on_replay():
    def f(x):
        i = np.argmax(x)
        return x[i] ** 3 + np.sum(x) * x[(i + 1) % x.size]
    rng = np.random.default_rng(8)
    r = tg.record(f, np.array([0.0, 1.0, 2.0, 0.5]))
    strict = tg.record(f, np.array([0.0, 1.0, 2.0, 0.5]), strict=True)
    for _ in range(30):
        x = rng.standard_normal(4)
        close(r(x), f(x))
        close(r.grad(x), tg.grad(f)(x))
        if np.argmax(x) != 2:
            with pytest.raises(tg.GuardError):
                strict.grad(x)
        else:
            close(strict.grad(x), tg.grad(f)(x))


# ---------------------------------------------------------------------------- input checks
def test_shape_mismatch_names_both_shapes():
    r = tg.record(rosenbrock, np.ones(5))
    with pytest.raises(ValueError, match=r"\(5,\).*\(4,\)"):
        r.grad(np.ones(4))
    with pytest.raises(ValueError, match=r"\(5,\).*\(5, 1\)"):
        r(np.ones((5, 1)))
    r2 = tg.record(lambda a, b: np.sum(a * b[0]), np.ones(3), np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        r2(np.ones(3), np.ones((3, 2)))


def test_out_buffer_and_allocation_free_loop():
    r = tg.record(rosenbrock, np.ones(50))
    x = np.linspace(0.5, 1.5, 50)
    out = np.empty(50)
    res = r.grad(x, out=out)
    assert res is out
    close(out, tg.grad(rosenbrock)(x))
    with pytest.raises(ValueError):
        r.grad(x, out=np.empty(49))
    for _ in range(100):                       # warm up (per-thread buffers, caches)
        r.grad(x, out=out)
    tracemalloc.start()
    try:
        r.grad(x, out=out)
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(5000):
            r.grad(x, out=out)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 2000, f"{grown} bytes kept after 5000 calls"


def test_compile_caches_per_signature():
    calls = []

    def f(x):
        calls.append(np.shape(x))
        return np.sum(np.sin(x) * x)
    c = tg.compile(f)
    for _ in range(5):
        c(np.ones(3))
        c.grad(np.ones(3) * 0.5)
    assert calls == [(3,)]
    c.grad(np.ones(4))
    c(np.ones((2, 2)))
    assert calls == [(3,), (4,), (2, 2)]
    close(c.grad(np.full(4, 0.3)), tg.grad(f)(np.full(4, 0.3)))

    @tg.compile
    def g(x):
        return np.sum(x ** 2)
    close(g.grad(np.arange(3.0)), 2 * np.arange(3.0))


# ---------------------------------------------------------------------------- threads
@pytest.mark.parametrize("f, point", CASES[1:4], ids=["rosenbrock", "logistic", "mlp"])
def test_threads_match_serial(f, point):
    rng = np.random.default_rng(9)
    r = tg.record(f, point(rng))
    xs = [point(rng) for _ in range(40)]
    vs = [rng.standard_normal(x.shape) for x in xs]
    serial = [(r(x), r.grad(x), r.hvp(x, v), r.jvp(x, v)[1]) for x, v in zip(xs, vs)]
    nthreads = 4
    barrier = threading.Barrier(nthreads)
    results = [None] * nthreads
    errors = []

    def work(k):
        try:
            barrier.wait()
            res = []
            for rep in range(5):
                order = range(len(xs)) if (k + rep) % 2 == 0 else reversed(range(len(xs)))
                got = {i: (r(xs[i]), r.grad(xs[i]), r.hvp(xs[i], vs[i]), r.jvp(xs[i], vs[i])[1])
                       for i in order}
                res.append([got[i] for i in range(len(xs))])
            results[k] = res
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
    ts = [threading.Thread(target=work, args=(k,)) for k in range(nthreads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    for res in results:
        for rep in res:
            for a, b in zip(rep, serial):
                for u, w in zip(a, b):
                    assert np.asarray(u).tobytes() == np.asarray(w).tobytes()


def test_threads_with_guard_flips():
    r = tg.record(branchy, 1.0)
    barrier = threading.Barrier(4)
    bad = []

    def work(k):
        barrier.wait()
        for i in range(300):
            x = (i % 7 - 3) * 0.5 + 0.25 * ((k + i) % 2)
            v, g = r.value_and_grad(x)
            if v != (x * x if x > 0 else -x) or g != (2 * x if x > 0 else -1.0):
                bad.append((x, v, g))
    ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not bad


# ---------------------------------------------------------------------------- tape optimization
def test_unused_ops_are_dropped():
    def used(x):
        expensive = np.sum(np.exp(np.sin(x) ** 2) @ np.cos(np.outer(x, x)))
        return np.sum(x ** 2) + expensive

    def unused(x):
        expensive = np.sum(np.exp(np.sin(x) ** 2) @ np.cos(np.outer(x, x)))  # noqa: F841
        return np.sum(x ** 2)
    x = np.linspace(0.1, 1.0, 6)
    ru, rn = tg.record(used, x), tg.record(unused, x)
    base = tg.record(lambda x: np.sum(x ** 2), x)
    assert rn.info()["ops"] == base.info()["ops"] < ru.info()["ops"]
    assert rn.info()["tape_bytes"] < ru.info()["tape_bytes"]
    close(rn.grad(x), 2 * x)


def test_constant_subexpressions_are_folded():
    C = np.arange(12.0).reshape(3, 4)

    def folded(x):
        k = np.exp(np.sin(C) @ C.T).sum() / np.sqrt(2.0) + np.log(3.0)   # no traced operand
        return k * np.sum(x ** 2)

    def plain(x):
        return 1.2345 * np.sum(x ** 2)
    x = np.ones(3)
    rf, rp = tg.record(folded, x), tg.record(plain, x)
    assert rf.info()["ops"] == rp.info()["ops"]
    k = np.exp(np.sin(C) @ C.T).sum() / np.sqrt(2.0) + np.log(3.0)
    close(rf.grad(x * 0.5), 2 * k * x * 0.5)


def test_info_reports_size():
    r = tg.record(mlp, np.zeros(56))
    i = r.info()
    t = r.tape
    assert i["ops"] == t.nops > 0
    assert i["work_slots"] == t.nwork >= 56
    assert i["work_bytes"] == 8 * t.nwork
    assert i["tape_bytes"] == t.nbytes() > 0
    assert i["constants"] == t.nconst >= _Xd.size
    assert "ops" in repr(r) and "bytes" in repr(r)


def test_hvp_jvp_kept_buffers_same_as_fresh_and_per_thread():
    # Recorded.hvp keeps its work buffers per thread and variant; results equal fresh buffers
    import threading
    from tapegrad._core import sweeps
    f = lambda x: np.sum(np.sin(x) * x ** 2) + np.prod(x[:3])
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 50)
    r = tg.record(f, x)
    vs = rng.standard_normal((5, 50))
    tr, w = r._select(x)
    want = [sweeps.hvp(tr.tape, w, v[None, :])[0].copy() for v in vs]
    for _ in range(2):                      # the second round reuses the buffers
        for v, h in zip(vs, want):
            assert np.array_equal(r.hvp(x, v), h)
    got = {}

    def run(i):
        got[i] = [r.hvp(x, v) for v in vs]
    ts = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for i in range(3):
        for a, b in zip(got[i], want):
            assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="work buffers"):
        sweeps.hvp(tr.tape, w, vs[:1], np.empty((1, 3)), np.empty(3), np.empty((1, 3)))
    # jvp's tangent lane is kept too
    jv = [sweeps.tangent(tr.tape, w, v[None, :])[0, tr.out_off] for v in vs]
    for _ in range(2):
        for v, j in zip(vs, jv):
            y, t = r.jvp(x, v)
            assert t == j and y == pytest.approx(f(x), rel=1e-14)   # (tape vs NumPy sums)
    with pytest.raises(ValueError, match="tangent buffer"):
        sweeps.tangent(tr.tape, w, vs[:1], np.empty((2, 3)))


def test_jacobian_rev_one_call_equals_reverse_rows():
    from tapegrad._core import sweeps
    A = np.random.default_rng(2).standard_normal((7, 5))
    f = lambda x: np.tanh(A @ x) + np.sum(x * x)
    x = np.linspace(-1, 1, 5)
    r = tg.record(f, x)
    tr, w = r._select(x)
    J = sweeps.jacobian_rev(tr.tape, w, np.empty((7, 5)))
    for i in range(7):
        seed = np.zeros(7)
        seed[i] = 1.0
        assert np.array_equal(J[i], sweeps.reverse(tr.tape, w, seed)[:5])
    np.testing.assert_allclose(r.jacobian(x, mode="rev"), r.jacobian(x, mode="fwd"), rtol=1e-14)
    x2 = x[::-1].copy()      # the forward Jacobian's kept tangent buffer, reused at a new point
    assert np.array_equal(r.jacobian(x2, mode="fwd"), tg.record(f, x2).jacobian(x2, mode="fwd"))
    with pytest.raises(ValueError, match="J of shape"):
        sweeps.jacobian_rev(tr.tape, w, np.empty((5, 7)))
