"""Batched replay (Recorded.*_batch, operators/batch.py, _core/sweep_batch.pxi): one tape at many
points per compiled call, bitwise equal to loops of one-point replays, per-point guards,
threads, chunking under a memory budget, argnums for batches over data."""
import numpy as np
import pytest

import tapegrad as tg
from tapegrad.engine.traced import GuardError
from tapegrad.errors import TapegradTypeError, TapegradValueError
from tapegrad.operators import batch as _batch


def logistic(w, x, y):
    return np.logaddexp(0.0, -y * (x @ w))


def mlp(params, x, y):
    W1, b1, w2 = params
    h = np.tanh(W1 @ x + b1)
    return (h @ w2 - y) ** 2


def smooth(x):
    return np.sum(np.sin(x) * x ** 2) + x[0] * x[1]


def scalarish(x):
    # small scalar tape: the partials path of grad_fast
    return x[0] * x[1] + np.sin(x[2]) / (1.0 + x[0] ** 2)


def smooth_grad(x):
    g = np.cos(x) * x ** 2 + 2 * x * np.sin(x)
    g[0] += x[1]
    g[1] += x[0]
    return g


def branchy(x):
    if x[0] > 0:
        return np.sum(x ** 3)
    return np.sum(np.cos(x)) * x[1]


def branchy_grad(x):
    if x[0] > 0:
        return 3 * x ** 2
    g = -np.sin(x) * x[1]
    g[1] += np.sum(np.cos(x))
    return g


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    d, n = 6, 300
    return rng.standard_normal(d), rng.standard_normal((n, d)), np.sign(rng.standard_normal(n))


def test_per_example_gradients_logistic(data):
    w, X, y = data
    rec = tg.record(logistic, w, X[0], y[0], argnums=0)
    G = rec.grad_batch(w, X, y, in_axes=(None, 0, 0))
    assert G.shape == X.shape
    loop = np.array([rec.grad(w, a, b) for a, b in zip(X, y)])
    assert np.array_equal(G, loop)                       # same sweeps, same bits
    ref = np.array([tg.grad(logistic)(w, a, b) for a, b in zip(X, y)])
    np.testing.assert_allclose(G, ref, rtol=0, atol=1e-14)
    # closed form: -y x sigmoid(-y x.w)
    s = 1.0 / (1.0 + np.exp(y * (X @ w)))
    np.testing.assert_allclose(G, -(y * s)[:, None] * X, rtol=1e-12, atol=1e-14)
    v, G2 = rec.value_and_grad_batch(w, X, y, in_axes=(None, 0, 0))
    assert np.array_equal(G2, G)
    assert np.array_equal(v, [rec(w, a, b) for a, b in zip(X, y)])
    assert np.array_equal(rec.value_batch(w, X, y, in_axes=(None, 0, 0)), v)


def test_per_example_gradients_mlp_pytree(data):
    _, X, y = data
    rng = np.random.default_rng(3)
    params = (rng.standard_normal((5, X.shape[1])), rng.standard_normal(5), rng.standard_normal(5))
    rec = tg.record(mlp, params, X[0], y[0], argnums=0)
    G = rec.grad_batch(params, X, y, in_axes=(None, 0, 0))
    assert isinstance(G, tuple) and [g.shape for g in G] == [(300, 5, 6), (300, 5), (300, 5)]
    for i in (0, 17, 299):
        one = rec.grad(params, X[i], y[i])
        ref = tg.grad(mlp)(params, X[i], y[i])
        for a, b, c in zip(G, one, ref):
            assert np.array_equal(a[i], b)
            np.testing.assert_allclose(a[i], c, rtol=0, atol=1e-14)


@pytest.mark.parametrize("f", [smooth, scalarish])
def test_single_argument_batches_equal_loops(f):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((129, 4))
    rec = tg.record(f, X[0])
    G = rec.grad_batch(X)
    assert np.array_equal(G, np.array([rec.grad(x) for x in X]))
    np.testing.assert_allclose(G, [tg.grad(f)(x) for x in X], rtol=0, atol=1e-14)
    v, G2 = rec.value_and_grad_batch(X)
    loop = [rec.value_and_grad(x) for x in X]
    assert np.array_equal(v, [a for a, _ in loop]) and np.array_equal(G2, [b for _, b in loop])
    assert np.array_equal(rec.value_batch(X), [rec(x) for x in X])
    if f is smooth:
        np.testing.assert_allclose(G, [smooth_grad(x) for x in X], rtol=1e-12, atol=1e-13)


def test_hvp_and_jvp_batches_equal_one_point_versions():
    rng = np.random.default_rng(2)
    X, Vt = rng.standard_normal((64, 5)), rng.standard_normal((64, 5))
    rec = tg.record(smooth, X[0])
    H = rec.hvp_batch(X, Vt)
    assert np.array_equal(H, [rec.hvp(x, v) for x, v in zip(X, Vt)])
    # closed form: H = diag(d/dx (cos x x^2 + 2 x sin x)) + the x0 x1 coupling
    diag = -np.sin(X) * X ** 2 + 4 * X * np.cos(X) + 2 * np.sin(X)
    ref = diag * Vt
    ref[:, 0] += Vt[:, 1]
    ref[:, 1] += Vt[:, 0]
    np.testing.assert_allclose(H, ref, rtol=1e-12, atol=1e-12)
    y, t = rec.jvp_batch(X, Vt)
    loop = [rec.jvp(x, v) for x, v in zip(X, Vt)]
    assert np.array_equal(y, [a for a, _ in loop]) and np.array_equal(t, [b for _, b in loop])
    np.testing.assert_allclose(t, np.sum([smooth_grad(x) for x in X] * Vt, axis=1), rtol=1e-12)
    # a vector output: jvp_batch per point
    vec = tg.record(lambda x: np.sin(x) * x[0], X[0])
    y, t = vec.jvp_batch(X, Vt)
    assert y.shape == t.shape == (64, 5)
    for i in (0, 63):
        a, b = vec.jvp(X[i], Vt[i])
        assert np.array_equal(y[i], a) and np.array_equal(t[i], b)


def test_hvp_batch_with_data_and_shared_tangent(data):
    w, X, y = data
    rec = tg.record(logistic, w, X[0], y[0], argnums=0)
    v = np.linspace(-1, 1, w.size)
    H = rec.hvp_batch((w, X, y), v, in_axes=(None, 0, 0), v_axes=None)
    assert H.shape == X.shape
    for i in (0, 99):
        assert np.array_equal(H[i], rec.hvp((w, X[i], y[i]), v))
        # closed form: s (1 - s) x (x.v)
        z = -y[i] * (X[i] @ w)
        s = 1 / (1 + np.exp(-z))
        np.testing.assert_allclose(H[i], s * (1 - s) * X[i] * (X[i] @ v), rtol=1e-12, atol=1e-15)


def test_hessian_batch():
    rng = np.random.default_rng(17)
    X = rng.standard_normal((40, 5))
    rec = tg.record(smooth, X[0])
    H = rec.hessian_batch(X)
    assert H.shape == (40, 5, 5)
    assert np.array_equal(H, [rec.hessian(x) for x in X])
    for i in (0, 39):
        ref = np.diag(-np.sin(X[i]) * X[i] ** 2 + 4 * X[i] * np.cos(X[i]) + 2 * np.sin(X[i]))
        ref[0, 1] += 1.0
        ref[1, 0] += 1.0
        np.testing.assert_allclose(H[i], ref, rtol=1e-12, atol=1e-12)
    r = tg.record(branchy, np.ones(3))
    Z = rng.standard_normal((30, 3))
    HB = r.hessian_batch(Z, threads=2)
    for z, h in zip(Z, HB):
        ref = np.diag(6 * z) if z[0] > 0 else tg.hessian(branchy)(z)
        np.testing.assert_allclose(h, ref, rtol=1e-12, atol=1e-13)
    with pytest.raises(TapegradValueError, match=r"hessian_batch: expected .*\(5,\).*\(40, 4\)"):
        rec.hessian_batch(X[:, :4])
    with pytest.raises(TapegradValueError, match="one array argument"):
        tg.record(logistic, np.ones(3), np.ones(3), 1.0).hessian_batch(np.ones((2, 3)))


def test_guarded_function_gives_each_point_its_branch():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((200, 3))
    assert (X[:, 0] > 0).any() and (X[:, 0] <= 0).any()
    rec = tg.record(branchy, np.ones(3))
    G = rec.grad_batch(X)
    np.testing.assert_allclose(G, [branchy_grad(x) for x in X], rtol=1e-13, atol=1e-14)
    v = rec.value_batch(X)
    np.testing.assert_allclose(v, [branchy(x) for x in X], rtol=1e-14)
    assert rec.rerecords == 1 and len(rec.variants) == 2      # one re-recording per branch
    # both variants known now: no more re-recording, still per-point branches
    G2 = rec.grad_batch(X[::-1])
    assert np.array_equal(G2, G[::-1]) and rec.rerecords == 1
    # a finite-difference check of one point on each side
    for i in (int(np.argmax(X[:, 0] > 0)), int(np.argmax(X[:, 0] <= 0))):
        e = 1e-6
        fd = [(branchy(X[i] + e * u) - branchy(X[i] - e * u)) / (2 * e) for u in np.eye(3)]
        np.testing.assert_allclose(G[i], fd, rtol=1e-6, atol=1e-7)
    H = rec.hvp_batch(X, np.ones_like(X))
    assert np.array_equal(H[:5], [rec.hvp(x, np.ones(3)) for x in X[:5]])


def test_guard_flip_strict_raises():
    X = np.array([[1.0, 2.0, 3.0], [-1.0, 2.0, 3.0]])
    rec = tg.record(branchy, np.ones(3), strict=True)
    with pytest.raises(GuardError, match="grad_batch"):
        rec.grad_batch(X)
    loose = tg.record(branchy, np.ones(3))
    with pytest.raises(GuardError):
        loose.grad_batch(X, strict=True)
    assert loose.rerecords == 0
    assert loose.grad_batch(X[:1], strict=True).shape == (1, 3)


def test_guarded_batch_over_data():
    def hinge(w, x):
        m = x @ w
        if m < 1.0:
            return 1.0 - m
        return 0.0 * m

    rng = np.random.default_rng(5)
    w, X = rng.standard_normal(4), rng.standard_normal((100, 4))
    rec = tg.record(hinge, w, X[0], argnums=0)
    G = rec.grad_batch(w, X, in_axes=(None, 0))
    ref = np.where((X @ w < 1.0)[:, None], -X, 0.0)
    np.testing.assert_array_equal(G, ref)


def test_threads_give_identical_bits(monkeypatch, data):
    monkeypatch.setattr(_batch, "MIN_POINTS_PER_THREAD", 1)
    monkeypatch.setattr(_batch, "MIN_WORK_PER_THREAD", 1)
    w, X, y = data
    rec = tg.record(logistic, w, X[0], y[0], argnums=0)
    g1 = rec.grad_batch(w, X, y, in_axes=(None, 0, 0), threads=1)
    g2 = rec.grad_batch(w, X, y, in_axes=(None, 0, 0), threads=2)
    g3 = rec.grad_batch(w, X, y, in_axes=(None, 0, 0), threads=3)
    assert np.array_equal(g1, g2) and np.array_equal(g1, g3)
    rng = np.random.default_rng(6)
    Z = rng.standard_normal((301, 3))
    r = tg.record(branchy, np.ones(3))
    h1 = r.hvp_batch(Z, Z, threads=1)
    h2 = r.hvp_batch(Z, Z, threads=2)
    assert np.array_equal(h1, h2)


def test_budget_splits_into_chunks(monkeypatch, data):
    w, X, y = data
    rec = tg.record(logistic, w, X[0], y[0], argnums=0)
    whole = rec.grad_batch(w, X, y, in_axes=(None, 0, 0))
    calls = []
    sweep = _batch._sweep
    monkeypatch.setattr(_batch, "_sweep", lambda *a: (calls.append(len(a[2])), sweep(*a)))
    per_point = 8 * (X.shape[1] + 1 + w.size)    # staging: batched inputs (x, y), gradients
    work = 8 * (4 * rec.tape.nwork + 2 * rec.tape.nops)
    parts = rec.grad_batch(w, X, y, in_axes=(None, 0, 0), threads=1, budget=work + 50 * per_point)
    assert np.array_equal(parts, whole)
    assert len(calls) > 1 and max(calls) <= 50 and sum(calls) == X.shape[0]
    with pytest.raises(TapegradValueError, match="budget"):
        rec.grad_batch(w, X, y, in_axes=(None, 0, 0), budget=0)
    # one array argument (the direct path): chunks too, guards and all
    calls.clear()
    Z = np.random.default_rng(16).standard_normal((90, 3))
    r = tg.record(branchy, np.ones(3))
    work = 8 * (4 * r.tape.nwork + 2 * r.tape.nops)
    H = r.hvp_batch(Z, Z, threads=1, budget=work + 20 * 8 * 3 * 3)   # inputs, tangents, hvps
    assert len(calls) >= 90 // 20 and max(calls) <= 20
    assert np.array_equal(H, [r.hvp(z, z) for z in Z])


def test_pytree_and_axes():
    def f(p):
        return np.sum(p["a"] ** 2) * p["b"]

    rng = np.random.default_rng(8)
    A, b = rng.standard_normal((3, 10)), rng.standard_normal(10)    # batch on axis 1 of "a"
    rec = tg.record(f, {"a": A[:, 0], "b": 1.0})
    with pytest.raises(TapegradValueError, match="shape"):
        rec.grad_batch({"a": A, "b": b})
    with pytest.raises(TapegradValueError, match="structure"):
        rec.grad_batch({"a": A.T.copy(), "c": b})
    G = rec.grad_batch({"a": A.T.copy(), "b": b})
    assert G["a"].shape == (10, 3) and G["b"].shape == (10,)
    np.testing.assert_allclose(G["a"], 2 * A.T * b[:, None], rtol=1e-14)
    np.testing.assert_allclose(G["b"], np.sum(A ** 2, axis=0), rtol=1e-14)
    r2 = tg.record(lambda a, s: np.sum(a ** 2) * s, A[:, 0], 2.0)
    G = r2.grad_batch(A, 2.0, in_axes=(1, None))
    np.testing.assert_allclose(G[0], 4 * A.T, rtol=1e-14)
    np.testing.assert_allclose(G[1], np.sum(A ** 2, axis=0), rtol=1e-14)


def test_argnums_one_point():
    rng = np.random.default_rng(9)
    w, x = rng.standard_normal(3), rng.standard_normal(3)
    rec = tg.record(lambda w, x, y: logistic(w, x, y), w, x, 1.0, argnums=0)
    np.testing.assert_allclose(rec.grad(w, x, 1.0), tg.grad(logistic)(w, x, 1.0), atol=1e-15)
    both = tg.record(logistic, w, x, 1.0, argnums=(0, 1))
    g = both.grad(w, x, 1.0)
    assert isinstance(g, tuple) and len(g) == 2
    np.testing.assert_allclose(g[1], tg.grad(logistic, argnums=1)(w, x, 1.0), atol=1e-15)
    v = np.ones(3)
    np.testing.assert_allclose(rec.hvp((w, x, 1.0), v), tg.hvp(lambda w: logistic(w, x, 1.0),
                                                              (w,), (v,)), atol=1e-14)
    with pytest.raises(TapegradValueError, match="argnums"):
        tg.record(logistic, w, x, 1.0, argnums=3)
    import pickle
    again = pickle.loads(pickle.dumps(rec))
    assert again.argnums == (0,) and np.array_equal(again.grad(w, x, 1.0), rec.grad(w, x, 1.0))


def test_bad_input_names_argument_and_shapes(data):
    w, X, y = data
    rec = tg.record(logistic, w, X[0], y[0], argnums=0)
    with pytest.raises(TapegradValueError, match=r"mismatched batch sizes.*argument 1 has 300.*"
                                                 r"argument 2 has 7"):
        rec.grad_batch(w, X, y[:7], in_axes=(None, 0, 0))
    with pytest.raises(TapegradValueError, match=r"grad_batch: argument 1 must have shape \(6,\) "
                                                 r"plus a batch axis at 0, got shape \(300, 5\)"):
        rec.grad_batch(w, X[:, :5], y, in_axes=(None, 0, 0))
    with pytest.raises(TapegradValueError, match=r"argument 0 \(in_axes None\).*\(6,\).*\(300, 6\)"):
        rec.grad_batch(X, X, y, in_axes=(None, 0, 0))
    with pytest.raises(TapegradValueError, match="in_axes"):
        rec.grad_batch(w, X, y, in_axes=(None, 0))
    with pytest.raises(TapegradValueError, match="no argument has a batch axis"):
        rec.grad_batch(w, X[0], y[0], in_axes=None)
    with pytest.raises(TapegradTypeError, match="takes 3 argument"):
        rec.grad_batch(w, X)
    with pytest.raises(TapegradValueError, match="threads"):
        rec.grad_batch(w, X, y, in_axes=(None, 0, 0), threads=0)
    single = tg.record(smooth, np.ones(4))
    with pytest.raises(TapegradValueError, match=r"tangent of argument 0.*\(4,\).*\(3, 5\)"):
        single.hvp_batch(np.ones((3, 4)), np.ones((3, 5)))
    with pytest.raises(TapegradValueError, match="mismatched batch sizes"):
        single.hvp_batch(np.ones((3, 4)), np.ones((2, 4)))
    with pytest.raises(TapegradTypeError, match="not a scalar"):
        tg.record(np.sin, np.ones(4)).grad_batch(np.ones((2, 4)))


def test_empty_batch_and_core_checks():
    rec = tg.record(smooth, np.ones(4))
    assert rec.grad_batch(np.ones((0, 4))).shape == (0, 4)
    from tapegrad._core import sweeps
    X, base, segs = np.ones((3, 4)), np.zeros(4), np.array([[0, 4]], dtype=np.int64)
    ok = np.zeros(3, np.uint8)
    D = np.empty((3, 4))
    assert sweeps.batch_replay(rec.tape, 1, base, X, segs, None, None, None, None, D, 0, ok,
                               0, 3, value=False) == 3
    np.testing.assert_array_equal(D, [rec.grad(np.ones(4))] * 3)
    with pytest.raises(ValueError, match="outside the 4 inputs"):
        sweeps.batch_replay(rec.tape, 1, base, X, segs, None, None, None, None, D, 1, ok, 0, 3, value=False)
    with pytest.raises(ValueError, match="rows"):
        sweeps.batch_replay(rec.tape, 1, base, X, segs, None, None, None, None, D, 0, ok, 0, 4, value=False)
    with pytest.raises(ValueError, match="segment 0"):
        sweeps.batch_replay(rec.tape, 1, base, X, np.array([[2, 4]], dtype=np.int64), None,
                            None, None, None, D, 0, ok, 0, 3,
                            value=False)
    with pytest.raises(ValueError, match="cover 2 values"):
        sweeps.batch_replay(rec.tape, 1, base, X, np.array([[0, 2]], dtype=np.int64), None,
                            None, None, None, D, 0, ok, 0, 3,
                            value=False)
    with pytest.raises(ValueError, match="Hessians must have shape"):
        sweeps.batch_replay(rec.tape, 4, base, X, segs, None, None, None, None, D, 0, ok, 0, 3)
    with pytest.raises(ValueError, match="need tangents"):
        sweeps.batch_replay(rec.tape, 3, base, X, segs, None, None, None, None, D, 0, ok, 0, 3,
                            value=False)


# ---------------------------------------------------------------------- ensembles of flows
def rosenbrock(w):
    return np.sum(100.0 * (w[1:] - w[:-1] ** 2) ** 2 + (1.0 - w[:-1]) ** 2)


def _separate(W0, **kw):
    from tapegrad import flow
    return [flow.gradient_flow(rosenbrock, w, (0.0, 0.5), t_eval=[0.0, 0.25, 0.5], **kw) for w in W0]


def test_ensemble_of_64_flows_equals_separate_solves():
    from tapegrad import flow
    rng = np.random.default_rng(10)
    W0 = 1.0 + 0.3 * rng.standard_normal((64, 10))
    kw = dict(method="BDF", rtol=1e-8, atol=1e-10)
    res = flow.gradient_flow(rosenbrock, W0, (0.0, 0.5), t_eval=[0.0, 0.25, 0.5], **kw)
    assert res.success and res.batch == 64
    assert res.w.shape == (3, 64, 10) and res.f.shape == res.grad_norm.shape == (3, 64)
    assert res.n_jac > 0                                   # the block-diagonal tape Jacobian
    sep = _separate(W0, **kw)
    W = np.stack([s.w for s in sep], axis=1)
    np.testing.assert_allclose(res.w, W, rtol=0, atol=1e-6)
    np.testing.assert_allclose(res.f, np.stack([s.f for s in sep], axis=1), rtol=1e-5, atol=1e-8)
    # the losses and gradient norms are those of the states
    np.testing.assert_allclose(res.f[-1], [rosenbrock(w) for w in res.w[-1]], rtol=1e-13)


@pytest.mark.parametrize("method,jac", [("RK45", True), ("Radau", True), ("LSODA", True),
                                        ("BDF", False)])
def test_small_ensembles_each_method(method, jac):
    from tapegrad import flow
    rng = np.random.default_rng(11)
    W0 = 1.0 + 0.3 * rng.standard_normal((5, 4))
    A = np.linspace(0.5, 1.5, 4)
    if method == "Radau":                       # a dense SPD preconditioner
        M = rng.standard_normal((4, 4))
        A = np.eye(4) + 0.1 * (M @ M.T)
    res = flow.gradient_flow(rosenbrock, W0, (0.0, 0.5), t_eval=[0.0, 0.25, 0.5], method=method,
                             jac=jac, A=A, rtol=1e-9, atol=1e-11, dense_output=True)
    sep = _separate(W0, method=method, jac=jac, A=A, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(res.w, np.stack([s.w for s in sep], axis=1), rtol=0, atol=1e-6)
    assert res.at([0.5]).shape == (1, 5, 4)
    np.testing.assert_allclose(res.at([0.5])[0], res.w[-1], atol=1e-9)


def test_ensemble_jacobian_is_block_diagonal_of_members():
    from tapegrad import flow
    rng = np.random.default_rng(12)
    W = 1.0 + 0.3 * rng.standard_normal((3, 4))
    derivs = flow._Derivs(rosenbrock, W[0])
    H = derivs.hessian_batch(W)
    for b in range(3):
        np.testing.assert_allclose(H[b], tg.hessian(rosenbrock)(W[b]), rtol=1e-14, atol=1e-12)
    M = flow._block_diagonal(-H).toarray()
    np.testing.assert_array_equal(M[4:8, 4:8], -H[1])
    assert not M[:4, 4:].any() and not M[4:, :4].any()


def test_ensemble_sparse_hessian_flow():
    from tapegrad import flow

    def chain(w):
        return np.sum((w[1:] - w[:-1]) ** 2) + np.sum(w ** 4)

    rng = np.random.default_rng(13)
    W0 = rng.standard_normal((3, 120))
    res = flow.gradient_flow(chain, W0, (0.0, 0.2), t_eval=[0.2], method="BDF", sparse=True)
    for b in range(3):
        one = flow.gradient_flow(chain, W0[b], (0.0, 0.2), t_eval=[0.2], method="BDF", sparse=True)
        np.testing.assert_allclose(res.w[-1, b], one.w[-1], rtol=0, atol=1e-6)


def test_ensemble_gradient_descent_equals_separate_runs_bitwise():
    from tapegrad import flow
    rng = np.random.default_rng(14)
    W0 = 1.0 + 0.3 * rng.standard_normal((8, 6))
    W0[3] = 1.0 + 1e-9 * rng.standard_normal(6)           # converges at once
    W0[5] *= 30.0                                         # diverges
    res = flow.gradient_descent(rosenbrock, W0, 1e-3, 50, tol=1e-4)
    assert res.w.shape[1:] == (8, 6) and len(res.reason) == 8
    for b in range(8):
        one = flow.gradient_descent(rosenbrock, W0[b], 1e-3, 50, tol=1e-4)
        n = one.n_steps
        assert res.n_steps[b] == n and res.reason[b] == one.reason
        assert np.array_equal(res.w[:n + 1, b], one.w, equal_nan=True)
        assert np.array_equal(res.f[:n + 1, b], one.f, equal_nan=True)
        np.testing.assert_allclose(res.grad_norm[:n + 1, b], one.grad_norm, rtol=1e-14)
        assert np.array_equal(res.w[n:, b], np.broadcast_to(one.w[-1], res.w[n:, b].shape),
                              equal_nan=True)
    assert {"converged", "diverged", "max_steps"} <= set(res.reason)
    A = np.diag(np.linspace(1, 2, 6))
    res = flow.gradient_descent(rosenbrock, W0[:2], 1e-3, 5, A=A)
    one = flow.gradient_descent(rosenbrock, W0[1], 1e-3, 5, A=A)
    assert res.n_steps[1] == one.n_steps and res.reason[1] == one.reason
    assert np.array_equal(res.w[:one.n_steps + 1, 1], one.w, equal_nan=True)
    with pytest.raises(TapegradValueError, match="named preconditioner"):
        flow.gradient_descent(rosenbrock, W0, 1e-3, 5, A="newton")
    with pytest.raises(TapegradValueError, match=r"\(0, 6\)"):
        flow.gradient_flow(rosenbrock, W0[:0], (0.0, 1.0))


def test_bench_batch_rows_quick():
    from tapegrad.bench import batch as bb
    from tapegrad.bench.workloads import QUICK_SIZES
    res = bb.run_batch(QUICK_SIZES, 0.002, ["tg-replay"])
    impls = {(r["problem"], r["impl"]) for r in res["per_example"]}
    assert {("logistic", "tg-batch"), ("logistic", "tg-loop"), ("mlp", "tg-batch")} <= impls
    assert all(r["check_error"] <= 1e-12 for r in res["per_example"])
    assert res["threads"]["identical_bits"] and res["threads"]["speedup"] > 0
    assert all(r["max_state_diff"] < 1e-5 for r in res["ensemble"])
    assert any("Many points" in line for line in bb.markdown(res))


def test_python_rules_inside_a_batch_under_threads(monkeypatch):
    # an OP_CALL op (a rule in Python) takes the GIL inside the nogil loop: still per-point bits
    monkeypatch.setattr(_batch, "MIN_POINTS_PER_THREAD", 1)
    monkeypatch.setattr(_batch, "MIN_WORK_PER_THREAD", 1)

    def f(a):
        return np.linalg.slogdet(a.reshape(3, 3) + 3 * np.eye(3))[1]

    rng = np.random.default_rng(15)
    A = 0.3 * rng.standard_normal((40, 9))
    rec = tg.record(f, A[0])
    G1, G2 = rec.grad_batch(A, threads=1), rec.grad_batch(A, threads=2)
    assert np.array_equal(G1, G2) and np.array_equal(G1, [rec.grad(a) for a in A])
    # closed form: d log|det M| / dM = M^{-T}
    ref = [np.linalg.inv(a.reshape(3, 3) + 3 * np.eye(3)).T.ravel() for a in A]
    np.testing.assert_allclose(G1, ref, rtol=1e-12, atol=1e-14)
    H = rec.hvp_batch(A, A, threads=2)
    assert np.array_equal(H, [rec.hvp(a, v) for a, v in zip(A, A)])


def test_compile_with_argnums_replays_new_shards_and_records_new_shapes():
    def loss(w, X, y):
        return np.sum((X @ w - y) ** 2)
    c = tg.compile(loss, argnums=0)
    rng = np.random.default_rng(5)
    w = rng.standard_normal(3)
    shards = [(rng.standard_normal((10, 3)), rng.standard_normal(10)) for _ in range(3)]
    for X, y in shards:
        g = c.grad(w, X, y)
        assert g.shape == (3,)
        np.testing.assert_allclose(g, 2 * X.T @ (X @ w - y), rtol=1e-13)
    assert len(c._cache) == 1                       # one shape: one tape, replayed per shard
    X, y = rng.standard_normal((7, 3)), rng.standard_normal(7)
    np.testing.assert_allclose(c.grad(w, X, y), 2 * X.T @ (X @ w - y), rtol=1e-13)
    assert len(c._cache) == 2
