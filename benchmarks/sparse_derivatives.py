"""Sparse derivatives at scale: stiff banded gradient flows with dense vs sparse Jacobians, and
``tapegrad.optimize.minimize(method="trust-ncg")`` against autograd-based derivatives and finite
differences on the chained Rosenbrock function.

    python benchmarks/sparse_derivatives.py flow [--d 1000,10000,100000] [--dense-max 10000]
    python benchmarks/sparse_derivatives.py optimize [--d 1000] [--repeats 5] [--no-fd]

Each flow case runs in its own process, so its peak resident memory (ru_maxrss, minus the
process's size before the solve) is its own. A dense case above ``--dense-max`` is not run;
at ``--dense-max`` and above 2,000 only one dense Jacobian and one LU are timed (a full dense
solve needs dozens of each), and the table says so. Times are wall-clock medians of one run on
a shared machine: compare the ratios within one run.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")        # one BLAS thread: the machine is shared
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np                                   # noqa: E402


def banded(d):
    lam = np.logspace(0, 3, d)         # stiff: rates 1 .. 1000, a tridiagonal coupling, quartic

    def f(w):
        return (0.5 * np.sum(lam * w * w) + 0.25 * np.sum((w[1:] - w[:-1]) ** 2)
                + 0.05 * np.sum(w ** 4))
    return f


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def flow_case(d, mode):
    import scipy.linalg
    import tapegrad as tg
    from tapegrad import flow
    from tapegrad.operators import sparse as tsp
    f = banded(d)
    w0 = np.linspace(1.0, 2.0, d)
    out = {"d": d, "mode": mode}
    rec = tg.record(f, w0)
    pattern = rec.hessian_sparsity()
    out["nnz"] = int(pattern.nnz)
    out["colors"] = int(np.max(tsp.color_columns(pattern)) + 1)
    base = rss_mb()
    t0 = time.perf_counter()
    if mode == "dense-one":           # one dense Jacobian and one LU, as the dense solve needs
        H = rec.hessian(w0)
        t1 = time.perf_counter()
        scipy.linalg.lu_factor(np.eye(d) + 0.01 * H)
        t2 = time.perf_counter()
        out.update(jac_s=t1 - t0, lu_s=t2 - t1)
    else:
        res = flow.gradient_flow(rec, w0, (0.0, 0.5), method="BDF", rtol=1e-6, atol=1e-9,
                                 sparse=(mode == "sparse"))
        out.update(time_s=time.perf_counter() - t0, steps=res.n_steps, n_jac=res.n_jac,
                   nlu=res.nlu, nfev=res.nfev, success=res.success, f_end=float(res.f[-1]),
                   w_end_head=[float(x) for x in res.w[-1][:3]])
    out["peak_rss_mb"] = rss_mb() - base
    return out


def run_flow(args):
    ds = [int(float(x)) for x in args.d.split(",")]
    rows = []
    for d in ds:
        modes = ["sparse"]
        if d <= 2000:
            modes.append("dense")
        elif d <= args.dense_max:
            modes.append("dense-one")
        for mode in modes:
            p = subprocess.run([sys.executable, __file__, "_flowcase", str(d), mode],
                               capture_output=True, text=True)
            if p.returncode != 0:
                rows.append({"d": d, "mode": mode, "error": p.stderr.strip().splitlines()[-1]})
            else:
                rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print()
    print("| d | Jacobian | time | peak RSS | colors (nnz) | steps | Jacobians | LUs |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['d']:,} | {r['mode']} | failed: {r['error']} | | | | | |")
        elif r["mode"] == "dense-one":
            print(f"| {r['d']:,} | dense: one Jacobian + one LU only | {r['jac_s']:.2f} s + "
                  f"{r['lu_s']:.2f} s | {r['peak_rss_mb']:.0f} MB | {r['colors']} ({r['nnz']:,}) "
                  f"| | | |")
        else:
            print(f"| {r['d']:,} | {r['mode']} | {r['time_s']:.2f} s | {r['peak_rss_mb']:.0f} MB | "
                  f"{r['colors']} ({r['nnz']:,}) | {r['steps']} | {r['n_jac']} | {r['nlu']} |")
    for d in ds:
        if d > args.dense_max:
            print(f"| {d:,} | dense | not run: the Hessian alone is {8 * d * d / 1e9:.0f} GB | "
                  f"| | | | |")


def chained_rosenbrock(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def run_optimize(args):
    import scipy.optimize as so
    from tapegrad import optimize as topt
    d = int(float(args.d.split(",")[0]))
    x0 = np.arange(1, d + 1) / (d + 1.0)          # CUTEst GENROSE's starting point
    opts = dict(gtol=1e-8, maxiter=5000)
    cases = {}

    def tg_run():
        return topt.minimize(chained_rosenbrock, x0, method="trust-ncg", options=opts)
    cases["tapegrad (one tape: value+grad, hessp)"] = tg_run
    try:
        import autograd
        import autograd.numpy as anp

        def f_ag(x):
            return anp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)
        vg = autograd.value_and_grad(f_ag)
        hvp = autograd.grad(lambda x, p: anp.dot(autograd.grad(f_ag)(x), p))

        def ag_run():
            return so.minimize(vg, x0, jac=True, hessp=hvp, method="trust-ncg", options=opts)
        cases["autograd (value_and_grad, grad-of-grad hessp)"] = ag_run
    except ImportError:
        print("autograd not installed: its row is left out")
    eps = np.sqrt(np.finfo(float).eps)

    def fd_grad(x):
        return so.approx_fprime(x, chained_rosenbrock, eps)

    def fd_hessp(x, p):
        h = 1e-4 / max(1.0, np.linalg.norm(p))
        return (fd_grad(x + h * p) - fd_grad(x)) / h

    def fd_run():
        return so.minimize(chained_rosenbrock, x0, jac=fd_grad, hessp=fd_hessp, method="trust-ncg",
                           options=opts)
    if not args.no_fd:
        cases["finite differences (forward: gradient, hessp of it)"] = fd_run
    print(f"chained Rosenbrock, d = {d:,}, x0_i = i / (d + 1) (CUTEst GENROSE), trust-ncg, gtol 1e-8; "
          f"median of {args.repeats} (finite differences: 1)")
    print("| derivatives | time | iterations | f evals | gradient evals | hessp evals | f at the end "
          "| max abs(x - 1) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, run in cases.items():
        n = 1 if name.startswith("finite") else args.repeats
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            r = run()
            times.append(time.perf_counter() - t0)
        print(f"| {name} | {statistics.median(times):.3f} s | {r.nit} | {r.nfev} | {r.njev} | "
              f"{r.nhev} | {r.fun:.3g} | {np.max(np.abs(r.x - 1)):.2g} |", flush=True)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_flowcase":
        print(json.dumps(flow_case(int(argv[1]), argv[2])))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["flow", "optimize"])
    ap.add_argument("--d", default=None)
    ap.add_argument("--dense-max", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-fd", action="store_true", help="leave out the (slow) finite differences")
    args = ap.parse_args(argv)
    if args.what == "flow":
        args.d = args.d or "1000,10000,100000"
        run_flow(args)
    else:
        args.d = args.d or "1000"
        run_optimize(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
