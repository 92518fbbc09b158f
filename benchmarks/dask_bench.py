"""tapegrad.dask throughput on this machine (LocalCluster of processes, one thread each).

    python benchmarks/dask_bench.py [--rows 4e6] [--d 50] [--chunks 8] [--repeats 5] [--flows 40]

1. Gradient throughput (rows per second) of a logistic loss over rows x d: one process with no
   Dask (one recorded tape, argnums=0, replayed on the whole data), Dask with 1 worker and with 2
   workers (the data generated on the workers in row chunks and persisted; one value-and-grad
   call = one task per chunk plus the tree of sums).
2. Ensemble throughput (flows per second): Rosenbrock flows (d = 10, BDF) with 1 and 2 workers.
3. Per-task overhead: a data-parallel call over tiny chunks (2 rows each), wall time per chunk.
Medians of --repeats calls after one warm-up; one run on a shared machine.
"""
import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np                                                   # noqa: E402


def logistic(w, X, y):
    z = X @ w
    return np.sum(np.logaddexp(0.0, z) - y * z)


def rosen(w):
    return np.sum(100.0 * (w[1:] - w[:-1] ** 2) ** 2 + (1.0 - w[:-1]) ** 2)


def median_time(fn, repeats):
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=float, default=4e6)
    ap.add_argument("--d", type=int, default=50)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--flows", type=int, default=40)
    args = ap.parse_args(argv)
    import dask.array as da
    import distributed
    import tapegrad as tg
    from tapegrad import dask as tgd
    n, d = int(args.rows), args.d
    w = np.random.default_rng(1).standard_normal(d) * 0.1
    rows = []

    # 1. one process, no Dask
    rs = da.random.RandomState(0)
    Xd = rs.standard_normal((n, d), chunks=(-(-n // args.chunks), d))
    yd = (rs.random_sample(n, chunks=Xd.chunks[0]) < 0.5).astype(float)
    X, y = Xd.compute(), yd.compute()
    rec = tg.record(logistic, w, X, y, argnums=0)
    t1 = median_time(lambda: rec.value_and_grad(w, X, y), args.repeats)
    g_ref = rec.value_and_grad(w, X, y)[1]
    del rec, X, y
    rows.append(("1 process, no Dask", t1))
    print(f"logistic loss, {n:,} x {d}, {args.chunks} chunks; median of {args.repeats}")
    print(f"  1 process (no Dask): {t1 * 1e3:.0f} ms per value-and-grad, {n / t1:,.0f} rows/s",
          flush=True)

    times = {}
    for workers in (1, 2):
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=40,
                                           memory_limit=0)
        client = distributed.Client(cluster)
        try:
            with tgd.DataParallel(logistic, w, Xd, yd, client=client) as dp:
                t = median_time(lambda: dp.value_and_grad(w), args.repeats)
                err = np.max(np.abs(dp.value_and_grad(w)[1] - g_ref)) / np.max(np.abs(g_ref))
            times[workers] = t
            print(f"  Dask, {workers} worker(s): {t * 1e3:.0f} ms, {n / t:,.0f} rows/s "
                  f"(gradient vs 1 process: {err:.1e} relative)", flush=True)

            starts = [np.random.default_rng(k).uniform(-2, 2, 10) for k in range(args.flows)]
            tgd.map_flows(rosen, starts[:2 * workers], (0.0, 5.0), client=client, method="BDF")
            ens = tgd.map_flows(rosen, starts, (0.0, 5.0), client=client, method="BDF")
            print(f"  ensemble of {args.flows} Rosenbrock flows (d = 10, BDF, t = 0..5), {workers} "
                  f"worker(s): {ens.wall_s:.2f} s, {args.flows / ens.wall_s:.1f} flows/s", flush=True)
            times[("flows", workers)] = ens.wall_s

            if workers == 2:
                tiny_X = np.random.default_rng(2).standard_normal((400, 3))
                with tgd.DataParallel(logistic, np.zeros(3), tiny_X, np.ones(400), client=client,
                                      chunk_rows=2) as dp:
                    t = median_time(lambda: dp.value_and_grad(np.zeros(3)), args.repeats)
                print(f"  per-task overhead: {t * 1e3:.0f} ms for 200 chunk tasks (+ 29 sums): "
                      f"{t / 229 * 1e3:.2f} ms per task on 2 workers")
        finally:
            client.close()
            cluster.close()
    print(f"  2 workers / 1 worker: gradient {times[1] / times[2]:.2f}x, ensemble "
          f"{times[('flows', 1)] / times[('flows', 2)]:.2f}x; Dask 2 workers / 1 process: "
          f"{t1 / times[2]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
