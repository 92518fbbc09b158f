"""tapegrad.dask on a LocalCluster of 2 worker processes (loopback only), started and closed here.

References are single-process: the same loss on all rows at once, its gradient by tapegrad and,
for the logistic loss, by a hand-written formula; ensembles against serial runs."""
import os
import signal
import threading
import time

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")

import tapegrad as tg                                              # noqa: E402
from tapegrad import dask as tgd                                  # noqa: E402
from tapegrad import flow, hyper                                  # noqa: E402
from tapegrad._version import __version__                         # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=40)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(autouse=True)
def no_hang():
    """A test that waits on the cluster for 4 minutes fails instead of hanging the suite."""
    def stop(signum, frame):
        raise TimeoutError("tapegrad.dask test took more than 240 s")
    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(240)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


rng = np.random.default_rng(0)
N, D = 1003, 7                               # 1003 rows in chunks of 200: an uneven last chunk
X = rng.standard_normal((N, D))
Y = (rng.random(N) < 0.5).astype(float)
W = 0.3 * rng.standard_normal(D)


def logistic_sum(w, X, y):
    z = X @ w
    return np.sum(np.logaddexp(0.0, z) - y * z)


def logistic_mean(w, X, y):
    z = X @ w
    return np.mean(np.logaddexp(0.0, z) - y * z) + 0.0


K = 3


def gmm_nll(params, X):
    """Negative log-likelihood of a K-component isotropic Gaussian mixture (sum over rows)."""
    logits, means, logs = params[:K], params[K:K + K * D].reshape(K, D), params[K + K * D:]
    logw = logits - np.log(np.sum(np.exp(logits)))
    d2 = np.sum((X[:, None, :] - means[None, :, :]) ** 2, axis=2)
    comp = logw - D * logs - 0.5 * d2 * np.exp(-2 * logs) - 0.5 * D * np.log(2 * np.pi)
    m = np.max(comp, axis=1, keepdims=True)
    return -np.sum(m[:, 0] + np.log(np.sum(np.exp(comp - m), axis=1)))


def test_data_parallel_gradient_equals_single_process(client):
    Xd, Yd = da.from_array(X, chunks=(200, D)), da.from_array(Y, chunks=200)
    v, g = tgd.value_and_grad(logistic_sum, W, Xd, Yd, client=client)
    v1, g1 = tg.value_and_grad(logistic_sum)(W, X, Y)
    assert v == pytest.approx(v1, rel=1e-12)
    np.testing.assert_allclose(g, g1[0] if isinstance(g1, tuple) else g1, rtol=1e-12, atol=1e-12)
    p = 1.0 / (1.0 + np.exp(-(X @ W)))
    np.testing.assert_allclose(g, X.T @ (p - Y), rtol=1e-11)

    # a mean: chunks weighted by their rows
    vm, gm = tgd.value_and_grad(logistic_mean, W, Xd, Yd, reduction="mean", client=client)
    assert vm == pytest.approx(v1 / N, rel=1e-12)
    np.testing.assert_allclose(gm, X.T @ (p - Y) / N, rtol=1e-11)


def test_data_parallel_gmm_with_numpy_data_chunked_here(client):
    params = np.concatenate([rng.standard_normal(K), rng.standard_normal(K * D),
                             0.1 * rng.standard_normal(K)])
    with tgd.DataParallel(gmm_nll, params, X, client=client, chunk_rows=300) as dp:
        assert dp.row_chunks == (300, 300, 300, 103)
        assert set(dp.shipped.values()) == {"tape"}
        v, g = dp.value_and_grad(params)
        v2, g2 = dp.value_and_grad(params + 0.01)          # the same tapes, new w
    assert v == pytest.approx(gmm_nll(params, X), rel=1e-12)
    np.testing.assert_allclose(g, tg.grad(gmm_nll)(params, X), rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(g2, tg.grad(gmm_nll)(params + 0.01, X), rtol=1e-11, atol=1e-11)


def test_minimize_matches_the_single_process_optimum(client):
    import scipy.optimize as so
    Xd, Yd = da.from_array(X, chunks=(250, D)), da.from_array(Y, chunks=250)
    ridge = lambda w, X, y: logistic_sum(w, X, y) + 0.5 * np.sum(w ** 2) * X.shape[0] / N  # noqa
    res = tgd.minimize(ridge, np.zeros(D), Xd, Yd, client=client, options={"gtol": 1e-10})
    ref = so.minimize(lambda w: (ridge(w, X, Y), X.T @ (1 / (1 + np.exp(-(X @ w))) - Y) + w),
                      np.zeros(D), jac=True, method="L-BFGS-B", options={"gtol": 1e-10})
    assert res.success and res.ncalls == res.nfev
    np.testing.assert_allclose(res.x, ref.x, atol=1e-6)


def test_unrecordable_function_is_shipped_with_a_warning(client):
    def failing(w, X, y):
        if not isinstance(w, np.ndarray):
            raise RuntimeError("this function refuses to be recorded")
        return logistic_sum(w, X, y)

    with pytest.warns(RuntimeWarning, match="could not be recorded"):
        dp = tgd.DataParallel(failing, W, X, Y, client=client, chunk_rows=400)
    with dp:
        assert set(dp.shipped.values()) == {"function"}
        with pytest.raises(RuntimeError, match="refuses"):
            dp.value_and_grad(W)            # re-traced on the workers: the same function, the same error


def test_ensemble_of_flows_equals_serial_runs(client):
    def rosen(w):
        return np.sum(100.0 * (w[1:] - w[:-1] ** 2) ** 2 + (1.0 - w[:-1]) ** 2)
    starts = [np.array([-1.2, 1.0, 0.5]) + 0.1 * k for k in range(20)]
    ens = tgd.map_flows(rosen, starts, (0.0, 0.5), client=client, method="BDF", rtol=1e-8,
                        atol=1e-10)
    assert len(ens) == 20 and len({r["worker_pid"] for r in ens.rows}) == 2
    for k, row in enumerate(ens.rows):
        ref = flow.gradient_flow(rosen, starts[k], (0.0, 0.5), method="BDF", rtol=1e-8, atol=1e-10)
        np.testing.assert_array_equal(row["w_final"], ref.w[-1])    # the same tape, the same bits
        assert row["steps"] == ref.n_steps and row["member"] == k
    assert "f_final" in ens.table()


def test_descent_and_hyper_grids(client):
    f = lambda w: 0.5 * np.sum(np.arange(1.0, 5.0) * w ** 2)       # noqa: E731
    starts = [np.ones(4), -np.ones(4)]
    ens = tgd.map_descents(f, starts, {"eta": [0.1, 0.6]}, client=client, steps=50)
    assert [(r["member"], r["eta"]) for r in ens.rows] == [(0, 0.1), (0, 0.6), (1, 0.1), (1, 0.6)]
    for r in ens.rows:
        ref = flow.gradient_descent(f, r["start"], r["eta"], 50)
        assert r["reason"] == ref.reason and r["f_final"] == ref.f[-1]
    assert ens.rows[3]["reason"] == "diverged"               # eta > 2 / lambda_max = 0.5
    hy = tgd.map_hyper(f, starts, [{"rule": "multiplicative", "hyper_lr": 0.5}], client=client,
                       eta0=0.01, steps=40)
    for r in hy.rows:
        ref = hyper.hypergradient_descent(f, r["start"], 0.01, 0.5, 40, rule="multiplicative")
        assert r["eta_final"] == ref.eta[-1]


def test_a_killed_worker_does_not_change_the_result(client):
    def slow_quartic(w):
        return np.sum(w ** 4) + 0.5 * np.sum(w ** 2)
    starts = [np.linspace(-1, 1, 6) * (1 + 0.05 * k) for k in range(24)]
    t0 = time.perf_counter()
    serial = [flow.gradient_flow(slow_quartic, s, (0.0, 2.0), method="RK45", rtol=1e-10,
                                 atol=1e-12).w[-1] for s in starts]
    t_serial = time.perf_counter() - t0           # the 2 workers need about half of it
    pids = list(client.run(os.getpid).values())
    killed_at = []

    def kill():
        os.kill(pids[0], signal.SIGKILL)
        killed_at.append(time.perf_counter())
    killer = threading.Timer(min(0.3, t_serial / 8), kill)
    killer.start()
    try:
        ens = tgd.map_flows(slow_quartic, starts, (0.0, 2.0), client=client, method="RK45",
                            rtol=1e-10, atol=1e-12)
        done = time.perf_counter()
    finally:
        killer.join()
    assert killed_at and killed_at[0] < done          # the kill came before the results were in
    for row, ref in zip(ens.rows, serial):
        np.testing.assert_array_equal(row["w_final"], ref)
    _wait_for_two_workers(client, pids[0])


def _wait_for_two_workers(client, dead_pid):
    """The nanny restarts a killed worker: wait until the cluster has 2 live workers again."""
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            pids = list(client.run(os.getpid).values())
            if len(pids) == 2 and dead_pid not in pids:
                return
        except Exception:                              # noqa: BLE001 - a worker still going away
            pass
        time.sleep(0.3)
    raise AssertionError("the killed worker was not replaced within 60 s")


def test_a_killed_worker_during_data_parallel_calls(client):
    Xd, Yd = da.from_array(X, chunks=(100, D)), da.from_array(Y, chunks=100)
    g_ref = tg.grad(logistic_sum)(W, X, Y)
    with tgd.DataParallel(logistic_sum, W, Xd, Yd, client=client) as dp:
        pids = list(client.run(os.getpid).values())
        os.kill(pids[-1], signal.SIGKILL)                   # the data chunks there are lost
        for _ in range(3):
            v, g = dp.value_and_grad(W)                     # Dask recomputes them from the graph
            np.testing.assert_allclose(g, g_ref, rtol=1e-12, atol=1e-12)
    _wait_for_two_workers(client, pids[-1])


def test_a_lost_scattered_tape_is_sent_again(client):
    # Dask cannot recompute scattered data: when every worker holding a tape dies, the client
    # scatters its bytes again (here the loss is forced by cancelling the tapes' futures)
    g_ref = tg.grad(logistic_sum)(W, X, Y)
    with tgd.DataParallel(logistic_sum, W, X, Y, client=client, chunk_rows=100) as dp:
        assert set(dp.shipped.values()) == {"tape"}
        old = [s[1][0] for s in dp._shipped.values()]
        client.cancel(old)
        v, g = dp.value_and_grad(W)
        np.testing.assert_allclose(g, g_ref, rtol=1e-12, atol=1e-12)
        assert all(s[1][0].key not in {o.key for o in old} for s in dp._shipped.values())


def test_version_mismatch_and_bad_bytes_are_refused():
    rec = tg.record(logistic_sum, W, X[:10], Y[:10], argnums=0)
    blob = rec.to_bytes()
    shipped = ("tape", (blob, tgd._digest(blob)))
    v, g, n = tgd._chunk_value_and_grad(shipped, __version__, "one", W, X[:10], Y[:10])
    np.testing.assert_allclose(g, tg.grad(logistic_sum)(W, X[:10], Y[:10]), rtol=1e-13)
    with pytest.raises(RuntimeError, match="same version"):
        tgd._chunk_value_and_grad(shipped, "0.0.0-other", "one", W, X[:10], Y[:10])
    bad = bytearray(blob)
    bad[len(bad) // 2] ^= 0xFF
    with pytest.raises(ValueError):
        tgd._chunk_value_and_grad(("tape", (bytes(bad), tgd._digest(bytes(bad)))), __version__,
                                  "one", W, X[:10], Y[:10])


def test_bad_arguments_are_named(client):
    with pytest.raises(ValueError, match="data argument 2 has 5 rows"):
        tgd.DataParallel(logistic_sum, W, X, Y[:5], client=client)
    with pytest.raises(ValueError, match="reduction"):
        tgd.DataParallel(logistic_sum, W, X, Y, reduction="median", client=client)
    with tgd.DataParallel(logistic_sum, W, X, Y, client=client) as dp:
        with pytest.raises(ValueError, match=r"w has shape \(3,\)"):
            dp.value_and_grad(np.ones(3))
    with pytest.raises(ValueError, match="start 1 has shape"):
        tgd.map_descents(lambda w: np.sum(w ** 2), [np.ones(2), np.ones(3)], client=client,
                         eta=0.1, steps=3)


def test_dask_demo_command():
    lines = []
    rep = tgd.demo(n_workers=2, rows=4000, n_flows=4, out=lines.append)
    assert rep["grad_rel_err"] < 1e-12 and rep["cosine"] > 0.9 and rep["flows"] == 4
    assert any("LocalCluster of 2 processes" in l for l in lines)
    from tapegrad import cli
    assert cli.main(["dask-demo", "--rows", "2000", "--flows", "2"]) == 0
