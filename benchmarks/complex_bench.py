"""Gradients of complex programs: an FFT-based loss (n = 4096) and an eigenvalue loss of a 50x50
non-symmetric matrix, for tapegrad replay, tapegrad re-trace, autograd and JAX jit (peers when
installed). Medians of timed repeats in one run; gradients checked against each other first.

    python benchmarks/complex_bench.py [--n 4096] [--m 50] [--repeats 7]
"""
import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np                                                   # noqa: E402


def timed(fn, repeats, min_time=0.05):
    fn()
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - t0 >= min_time:
            break
        n *= 2
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        ts.append((time.perf_counter() - t0) / n)
    return statistics.median(ts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--m", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    import tapegrad as tg
    rng = np.random.default_rng(0)
    k = rng.standard_normal(args.n)
    x = rng.standard_normal(args.n)
    A = rng.standard_normal((args.m, args.m))

    def fft_loss(x, np=np):
        y = np.fft.ifft(np.fft.fft(x) * np.fft.fft(k))
        return np.sum(np.abs(y) ** 2)

    def eig_loss(a, np=np):
        M = a.reshape(args.m, args.m)     # autograd has a rule for eig, not for eigvals
        w = np.linalg.eig(M)[0] if np.__name__.startswith("autograd") else np.linalg.eigvals(M)
        return np.sum(np.abs(w) ** 2) + np.sum(np.real(w) ** 3)

    cases = [(f"FFT loss, n = {args.n}", fft_loss, x),
             (f"eigvals loss, {args.m}x{args.m}", eig_loss, A.ravel())]
    print("| workload | tapegrad replay | tapegrad re-trace | autograd | jax jit |")
    print("|---|---|---|---|---|")
    for name, f, x0 in cases:
        ref = tg.grad(f)(x0)
        rec = tg.record(f, x0)
        assert np.allclose(rec.grad(x0), ref, rtol=1e-11, atol=1e-11)
        cells = [timed(lambda: rec.grad(x0), args.repeats), timed(lambda: tg.grad(f)(x0), args.repeats)]
        try:
            import autograd
            import autograd.numpy as anp
            ga = autograd.grad(lambda v: f(v, np=anp))
            assert np.allclose(ga(x0), ref, rtol=1e-9, atol=1e-9)
            cells.append(timed(lambda: ga(x0), args.repeats))
        except ImportError:
            cells.append(None)
        except NotImplementedError as e:
            cells.append(f"no rule ({e})")
        try:
            import jax
            import jax.numpy as jnp
            jax.config.update("jax_enable_x64", True)
            gj = jax.jit(jax.grad(lambda v: f(v, np=jnp)))
            assert np.allclose(np.asarray(gj(x0)), ref, rtol=1e-9, atol=1e-9)
            cells.append(timed(lambda: gj(x0).block_until_ready(), args.repeats))
        except ImportError:
            cells.append(None)
        base = cells[0]
        out = [c if isinstance(c, str) else "not installed" if c is None
               else f"{c * 1e6:.0f} µs ({c / base:.2f}x)" for c in cells]
        print(f"| {name} | " + " | ".join(out) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
