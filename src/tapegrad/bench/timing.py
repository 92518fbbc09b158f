"""Timing and memory measurement.

``measure`` follows timeit's method: warm up, pick a number of calls per sample so one sample
lasts long enough for the clock (calls of a microsecond are timed in batches), then take samples
until a minimum total time, with the cyclic garbage collector off while sampling. It reports the
median time per call and the interquartile range, which a shared, noisy machine needs more than
a mean (one descheduling does not move a median).
"""
import gc
import time
import tracemalloc
from dataclasses import dataclass, asdict

import numpy


@dataclass
class Timing:
    median: float      # seconds per call
    q1: float
    q3: float
    best: float
    samples: int
    calls: int         # calls per sample

    @property
    def iqr(self):
        return self.q3 - self.q1

    def as_dict(self):
        d = asdict(self)
        d["iqr"] = self.iqr
        return d


def _sampled(runs, min_time, min_samples, max_samples):
    """Samples (seconds per call) of each (run, calls per sample) in runs, taken in turn, with
    the cyclic garbage collector off, until min_samples each and min_time in all."""
    out = [[] for _ in runs]
    total = 0.0
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        while len(out[0]) < min_samples or (total < min_time and len(out[0]) < max_samples):
            for (run, number), samples in zip(runs, out):
                t0 = time.perf_counter()
                for _ in range(number):
                    run()
                dt = time.perf_counter() - t0
                samples.append(dt / number)
                total += dt
    finally:
        if was_enabled:
            gc.enable()
    return [numpy.asarray(s) for s in out]


def _timing(a, number):
    q1, med, q3 = numpy.percentile(a, [25, 50, 75])
    return Timing(float(med), float(q1), float(q3), float(a.min()), len(a), number)


def _synced(call, sync):
    return call if sync is None else (lambda: sync(call()))


def measure(call, min_time=0.25, warmup=2, min_samples=5, max_samples=2000, sample_time=None,
            sync=None):
    """Time ``call()``; ``sync(result)`` (if given) waits for asynchronous work to finish."""
    run = _synced(call, sync)
    t0 = time.perf_counter()
    run()
    one = max(time.perf_counter() - t0, 1e-9)
    if one < min_time / 4:          # slow calls (seconds) get one warm-up call only
        for _ in range(warmup - 1):
            run()
        t0 = time.perf_counter()
        run()
        one = max(time.perf_counter() - t0, 1e-9)
    else:
        min_samples = min(min_samples, 3)
    # one sample lasts ~ sample_time (default: a fiftieth of the budget, at least 200 us)
    target = sample_time if sample_time is not None else max(min_time / 50, 2e-4)
    number = max(1, int(target / one))
    a, = _sampled([(run, number)], min_time, min_samples, max_samples)
    return _timing(a, number)


def measure_pair(call_a, call_b, min_time=0.25, min_samples=9, sync=None):
    """Time two calls in interleaved samples (a, b, a, b, ...) and return (Timing of a,
    Timing of b, median of the per-pair ratios a / b). On a shared machine a burst of noise
    then lands on both sides of a ratio instead of on one of two medians taken apart."""
    runs = []
    for call in (call_a, call_b):
        run = _synced(call, sync)
        run()
        t0 = time.perf_counter()
        run()
        one = max(time.perf_counter() - t0, 1e-9)
        runs.append((run, max(1, int(max(min_time / 100, 1e-4) / one))))
    sa, sb = _sampled(runs, min_time, min_samples, 2000)
    return _timing(sa, runs[0][1]), _timing(sb, runs[1][1]), float(numpy.median(sa / sb))


def peak_python_bytes(call):
    """Peak bytes allocated through Python's allocators (NumPy's data included) during one call,
    above what was allocated before it. Allocators of JAX/XLA and torch are invisible here."""
    gc.collect()
    started = tracemalloc.is_tracing()
    if not started:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        r = call()
        peak = tracemalloc.get_traced_memory()[1]
        del r
    finally:
        if not started:
            tracemalloc.stop()
    return max(0, peak - base)
