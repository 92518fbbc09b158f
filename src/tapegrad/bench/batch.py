"""The benchmark's many-points rows: per-example gradients, the batched replay's threads, an
ensemble of flows.

Per-example gradients of a loss ``f(params, x_i, y_i)`` over the rows of a data set, for a
logistic loss and a small MLP, by: tapegrad's batched replay (``grad_batch`` with
``in_axes=(None, 0, 0)``, one thread), a Python loop over tapegrad's one-point replay, an autograd
loop, ``jax.jit(jax.vmap(jax.grad(f)))`` and ``torch.func.vmap(torch.func.grad(f))`` (the peers
only when installed and asked for). The loops are timed over the first ``loop_rows`` rows and
reported per example like the others. Every result is checked against the loop of tapegrad
replays before timing (``DerivativeMismatch`` otherwise).

Threads: the batched replay with 2 threads against 1 (interleaved samples, the median of the
paired ratios), after checking the two give the same bits.

Ensemble: 64 Rosenbrock flows (d = 10) as one ODE (``gradient_flow`` with ``w0`` of shape
(64, 10)) against 64 separate ``gradient_flow`` solves, for RK45 and BDF.
"""
import time

import numpy

from .timing import measure, measure_pair
from .tools import _TorchNamespace, _jax


def logistic_loss(w, x, y, np=numpy):
    return np.logaddexp(0.0, -y * (x @ w))


def mlp_loss(p, x, y, np=numpy, hidden=32):
    """A one-hidden-layer tanh network with flat parameters [W1 (hidden x d), b1, w2]."""
    d = x.shape[0]
    k = hidden * d
    h = np.tanh(p[:k].reshape(hidden, d) @ x + p[k:k + hidden])
    return (h @ p[k + hidden:] - y) ** 2


def _problems(sizes):
    rng = numpy.random.default_rng(20240817)
    n, d = sizes.batch_logistic
    X = rng.standard_normal((n, d))
    y = numpy.where(X @ rng.standard_normal(d) > 0, 1.0, -1.0)
    out = [("logistic", f"per-example grads, logistic ({n} rows, d={d})", logistic_loss,
            0.1 * rng.standard_normal(d), X, y, {})]
    n, d, hidden = sizes.batch_mlp
    X = rng.standard_normal((n, d))
    y = numpy.sin(X[:, 0])
    p = 0.3 * rng.standard_normal(hidden * d + 2 * hidden)
    out.append(("mlp", f"per-example grads, MLP ({n} rows, {d}-{hidden}-1, "
                f"{p.size} params)", mlp_loss, p, X, y, {"hidden": hidden}))
    return out


def _check(name, label, got, ref, rtol=1e-8):
    from .suite import DerivativeMismatch
    got = numpy.asarray(got, dtype=numpy.float64)
    scale = max(float(numpy.abs(ref).max()), 1e-300)
    err = float(numpy.abs(got - ref).max()) if got.shape == ref.shape else numpy.inf
    if not err <= rtol * scale:
        raise DerivativeMismatch(f"DERIVATIVE MISMATCH: {name} on {label!r}: shape {got.shape} "
                                 f"vs {ref.shape}, max |diff| {err:.3e} (scale {scale:.3e})")
    return err / scale


def _impls(fun, p, X, y, kw, m, peers):
    """(name, call, rows it covers, result -> (rows, P) array, one-off setup seconds)."""
    from .. import operators as tg
    f = lambda p, x, y: fun(p, x, y, numpy, **kw)  # noqa: E731
    rec = tg.record(f, p, X[0], y[0], argnums=0)
    out = [("tg-batch", lambda: rec.grad_batch(p, X, y, in_axes=(None, 0, 0), threads=1),
            X.shape[0], numpy.asarray, 0.0),
           ("tg-loop", lambda: [rec.grad(p, X[i], y[i]) for i in range(m)], m, numpy.array, 0.0)]
    if "autograd" in peers:
        import autograd
        import autograd.numpy as anp
        g = autograd.grad(lambda p, x, y: fun(p, x, y, anp, **kw))
        out.append(("autograd-loop", lambda: [g(p, X[i], y[i]) for i in range(m)], m,
                    numpy.array, 0.0))
    if "jax" in peers:
        jax, jnp = _jax()
        jg = jax.jit(jax.vmap(jax.grad(lambda p, x, y: fun(p, x, y, jnp, **kw)),
                              in_axes=(None, 0, 0)))
        jp, jX, jy = jnp.asarray(p), jnp.asarray(X), jnp.asarray(y)
        t0 = time.perf_counter()
        jax.block_until_ready(jg(jp, jX, jy))
        out.append(("jax-jit-vmap", lambda: jax.block_until_ready(jg(jp, jX, jy)), X.shape[0],
                    numpy.asarray, time.perf_counter() - t0))
    if "torch" in peers:
        import torch
        from torch import func as tf
        ns = _TorchNamespace(torch)
        tg_ = tf.vmap(tf.grad(lambda p, x, y: fun(p, x, y, ns, **kw)), in_dims=(None, 0, 0))
        tp, tX, ty = (torch.from_numpy(numpy.ascontiguousarray(a)) for a in (p, X, y))
        out.append(("torch-vmap", lambda: tg_(tp, tX, ty), X.shape[0],
                    lambda r: r.detach().numpy(), 0.0))
    return rec, out


def per_example_rows(sizes, min_time, peers, prog=None):
    rows = []
    for name, label, fun, p, X, y, kw in _problems(sizes):
        m = min(sizes.batch_loop, X.shape[0])
        rec, impls = _impls(fun, p, X, y, kw, m, peers)
        ref = numpy.array([rec.grad(p, X[i], y[i]) for i in range(m)])
        base = None
        for impl, call, nrows, conv, setup in impls:
            got = conv(call())[:m]
            err = _check(impl, label, got, ref)
            if impl == "tg-batch" and not numpy.array_equal(got, ref):
                from .suite import DerivativeMismatch
                raise DerivativeMismatch(f"BATCH: grad_batch differs from a loop of replays on "
                                         f"{label!r}")
            tm = measure(call, min_time)
            per = tm.median / nrows
            base = per if impl == "tg-batch" else base
            rows.append({"problem": name, "label": label, "impl": impl, "rows_timed": nrows,
                         "median_s": tm.median, "per_example_s": per, "iqr_s": tm.iqr,
                         "x_batch": per / base, "check_error": err, "setup_s": setup})
            if prog is not None:
                prog.note(f"  {label} · {impl}: {per * 1e6:.3g} µs per example")
    return rows


def batch_threads(sizes, min_time):
    """2-thread over 1-thread throughput of the batched replay (logistic per-example grads)."""
    from .. import operators as tg
    _, label, fun, p, X, y, kw = _problems(sizes)[0]
    rec = tg.record(lambda p, x, y: fun(p, x, y, numpy), p, X[0], y[0], argnums=0)
    one = lambda: rec.grad_batch(p, X, y, in_axes=(None, 0, 0), threads=1)  # noqa: E731
    two = lambda: rec.grad_batch(p, X, y, in_axes=(None, 0, 0), threads=2)  # noqa: E731
    same = bool(numpy.array_equal(one(), two()))
    if not same:
        from .suite import DerivativeMismatch
        raise DerivativeMismatch("BATCH THREADS: 2 threads give other bits than 1")
    t1, t2, ratio = measure_pair(one, two, min_time)
    return {"label": label, "one_thread_s": t1.median, "two_threads_s": t2.median,
            "speedup": ratio, "identical_bits": same}     # ratio: median of t(1) / t(2)


def rosenbrock(w):
    return numpy.sum(100.0 * (w[1:] - w[:-1] ** 2) ** 2 + (1.0 - w[:-1]) ** 2)


def _block_jacobian(rec, Y, B, d):
    """-(block diagonal of the members' Hessians), from one batched Hessian call, as CSC."""
    import scipy.sparse
    H = rec.hessian_batch(Y, threads=1)
    return scipy.sparse.bsr_matrix((-H, numpy.arange(B), numpy.arange(B + 1)),
                                   shape=(B * d, B * d)).tocsc()


def ensemble_rows(sizes, methods=("RK45", "BDF"), repeats=3):
    """One ODE of B*d against B separate solves, median of ``repeats`` wall times each. The
    ODEs are those of ``flow.gradient_flow`` (which this layer may not import): right-hand side
    ``-grad f`` from the tape (batched: one ``grad_batch`` per call), and for BDF the Jacobian
    ``-hess f`` (batched: block diagonal from ``hessian_batch``, sparse)."""
    from scipy.integrate import solve_ivp
    from .. import operators as tg
    B, d = sizes.ensemble
    rng = numpy.random.default_rng(5)
    W0 = 1.0 + 0.3 * rng.standard_normal((B, d))
    rec = tg.record(rosenbrock, W0[0])
    kw = dict(t_eval=[0.0, 1.0], rtol=1e-8, atol=1e-10)
    rows = []
    for method in methods:
        implicit = method in ("BDF", "Radau")

        def joint():
            rhs = lambda t, y: -rec.grad_batch(y.reshape(B, d), threads=1).reshape(-1)  # noqa: E731
            jac = (lambda t, y: _block_jacobian(rec, y.reshape(B, d), B, d)) if implicit else None
            extra = {"jac": jac} if implicit else {}
            sol = solve_ivp(rhs, (0.0, 1.0), W0.reshape(-1), method=method, **kw, **extra)
            return sol.y[:, -1].reshape(B, d), sol.nfev

        def separate():
            out, nfev = [], 0
            for w in W0:
                extra = {"jac": lambda t, y: -rec.hessian(y)} if implicit else {}
                sol = solve_ivp(lambda t, y: -rec.grad(y), (0.0, 1.0), w, method=method, **kw,
                                **extra)
                out.append(sol.y[:, -1])
                nfev += sol.nfev
            return numpy.array(out), nfev
        tj, ts = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            wj, nj = joint()
            tj.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ws, ns = separate()
            ts.append(time.perf_counter() - t0)
        rows.append({"method": method, "members": B, "d": d, "joint_s": float(numpy.median(tj)),
                     "separate_s": float(numpy.median(ts)),
                     "speedup": float(numpy.median(ts) / numpy.median(tj)),
                     "joint_rhs": int(nj), "separate_rhs": int(ns),
                     "max_state_diff": float(numpy.abs(wj - ws).max())})
    return rows


def run_batch(sizes, min_time, tool_names, prog=None):
    """All many-points rows; peers from the suite's tools that ran (autograd, jax*, torch)."""
    peers = set()
    if "autograd" in tool_names:
        peers.add("autograd")
    if any(t.startswith("jax") for t in tool_names):
        peers.add("jax")
    if "torch" in tool_names:
        peers.add("torch")
    res = {"per_example": per_example_rows(sizes, min_time, peers, prog),
           "threads": batch_threads(sizes, min_time)}
    if prog is not None:
        prog.note(f"  batched replay: 2 threads / 1 thread {res['threads']['speedup']:.2f}x")
    res["ensemble"] = ensemble_rows(sizes, repeats=1 if min_time < 0.05 else 3)
    return res


def markdown(b):
    from .suite import fmt_time
    out = ["## Many points at once (batched replay)\n",
           "| workload | implementation | per example | × batched replay | rows timed |",
           "|---|---|---|---|---|"]
    for r in b["per_example"]:
        out.append(f"| {r['label']} | {r['impl']} | {fmt_time(r['per_example_s'])} | "
                   f"{r['x_batch']:.3g}× | {r['rows_timed']} |")
    th = b["threads"]
    out.append("")
    out.append(f"Batched replay threads ({th['label']}): 1 thread {fmt_time(th['one_thread_s'])}, "
               f"2 threads {fmt_time(th['two_threads_s'])}: {th['speedup']:.2f}× (median of paired "
               f"ratios; identical bits: {th['identical_bits']}).")
    out.append("")
    out.append("| ensemble of flows | one ODE (B·d) | separate solves | speedup | rhs (one / "
               "separate) | max state diff |")
    out.append("|---|---|---|---|---|---|")
    for r in b["ensemble"]:
        out.append(f"| {r['members']} Rosenbrock flows d={r['d']}, {r['method']} | "
                   f"{fmt_time(r['joint_s'])} | {fmt_time(r['separate_s'])} | "
                   f"{r['speedup']:.2f}× | {r['joint_rhs']} / {r['separate_rhs']} | "
                   f"{r['max_state_diff']:.1e} |")
    out.append("")
    return out
