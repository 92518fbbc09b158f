"""Running the suite: check every tool against tapegrad, then time it, then summarize.

For each workload, tapegrad's replayed derivative is the reference. Every tool's derivative is
computed once and compared with it before any timing; a disagreement raises
``DerivativeMismatch`` at once (no table is written from a run with a wrong tool). Then each
tool's derivative and f itself are timed (``timing.measure``), one-off costs (recording, jit
compilation) are kept apart, and Python-side peak memory is taken with tracemalloc.
"""
import datetime
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy

from . import workloads as W
from .timing import measure, measure_pair, peak_python_bytes
from .tools import TOOL_ORDER, TOOL_LABELS, ALL_TOOLS, Tool, Unsupported, TapegradReplay
from .._core import get_num_threads as _tg_get_threads, set_num_threads as _tg_set_threads
from ..errors import TapegradError

PEERS = ("autograd", "jax", "jax-jit", "torch")


class DerivativeMismatch(TapegradError, AssertionError):
    """A tool's derivative disagrees with tapegrad's: the run stops, nothing is timed or written."""


@dataclass
class Config:
    tools: list = field(default_factory=lambda: list(TOOL_ORDER))   # names or Tool instances
    sizes: W.Sizes = field(default_factory=W.Sizes)
    workloads: list = None        # family names, None for all
    min_time: float = 0.25        # seconds of samples per measurement
    setup_time: float = 0.1       # seconds of samples for timing tape recording
    threads: int = 1              # BLAS / torch / XLA intra-op threads
    rtol: float = 1e-8            # derivative check (max-norm, relative to the reference's scale)
    ode_rtol: float = 1e-5        # solve_ivp end states (adaptive steps amplify rounding)
    memory: bool = True
    thread_check: bool = True
    batch: bool = True            # the many-points rows (bench/batch.py)
    quick: bool = False
    progress: object = sys.stderr  # a stream, or None for silence


# ------------------------------------------------------------------------------------------- machine
def machine_description(threads_info=None):
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal"):
                    mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    import scipy
    env = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS",
                                          "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS")}
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable, "memory": mem,
            "platform": platform.platform(), "python": platform.python_version(),
            "numpy": numpy.__version__, "scipy": scipy.__version__, "env": env,
            "loadavg_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "threads": threads_info or {}, "tapegrad": _tapegrad_source()}


def _tapegrad_source():
    """tapegrad's version and, in a git checkout, its commit (with '+dirty' for local edits)."""
    import subprocess
    from .._version import __version__
    info = {"version": __version__, "path": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    try:
        here = info["path"]
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, text=True,
                                capture_output=True, timeout=5)
        if commit.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=here, text=True, capture_output=True, timeout=5)
            info["commit"] = commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def _blas_info():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return [{k: i.get(k) for k in ("user_api", "internal_api", "version", "num_threads",
                                   "architecture", "filepath")} for i in threadpool_info()]


class _Pinned:
    """Pin BLAS (threadpoolctl), torch, XLA and tapegrad's sweeps (tg.set_num_threads) to
    ``n`` intra-op threads for the run."""

    def __init__(self, n, tool_names):
        self.n, self.tool_names, self._ctx, self._tg_prev = n, tool_names, None, None

    def __enter__(self):
        info = {"requested": self.n}
        try:
            from threadpoolctl import threadpool_limits
            self._ctx = threadpool_limits(limits=self.n)
            self._ctx.__enter__()
            info["blas_method"] = "threadpoolctl"
        except ImportError:
            info["blas_method"] = ("environment only (threadpoolctl not installed): "
                                   f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
                                   f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
        info["blas"] = _blas_info()
        if "torch" in self.tool_names:
            try:
                import torch
                torch.set_num_threads(self.n)
                info["torch"] = torch.get_num_threads()
            except ImportError:
                pass
        if any(t.startswith("jax") for t in self.tool_names) and "jax" not in sys.modules:
            os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                                               f"intra_op_parallelism_threads={self.n}")
        info["xla_flags"] = os.environ.get("XLA_FLAGS")
        self._tg_prev = _tg_set_threads(self.n)
        info["tapegrad"] = _tg_get_threads()
        self.info = info
        return info

    def __exit__(self, *exc):
        if self._tg_prev is not None:
            _tg_set_threads(self._tg_prev)
        if self._ctx is not None:
            self._ctx.__exit__(*exc)


# ------------------------------------------------------------------------------------------- progress
class Progress:
    def __init__(self, stream, total):
        self.stream, self.total, self.done, self.t0 = stream, total, 0, time.perf_counter()

    def step(self, text):
        self.done += 1
        if self.stream is None:
            return
        el = time.perf_counter() - self.t0
        eta = el / self.done * (self.total - self.done)
        self.stream.write(f"[{self.done:3d}/{self.total} {el:6.1f}s, ~{eta:4.0f}s left] {text}\n")
        self.stream.flush()

    def note(self, text):
        if self.stream is not None:
            self.stream.write(text + "\n")
            self.stream.flush()


# ------------------------------------------------------------------------------------------- checks
def check_derivative(tool_name, w, got, ref, rtol):
    """Raise ``DerivativeMismatch`` unless ``got`` equals ``ref`` to ``rtol`` of ref's scale."""
    got = numpy.asarray(got, dtype=numpy.float64)
    ref = numpy.asarray(ref, dtype=numpy.float64)
    if got.shape != ref.shape:
        raise DerivativeMismatch(
            f"DERIVATIVE MISMATCH: tool {tool_name!r} on workload {w.label!r} returned shape "
            f"{got.shape}, tapegrad returned {ref.shape}")
    scale = max(float(numpy.max(numpy.abs(ref))) if ref.size else 0.0, 1e-300)
    err = float(numpy.max(numpy.abs(got - ref))) if ref.size else 0.0
    if not numpy.isfinite(got).all() or err > rtol * scale:
        i = int(numpy.argmax(numpy.abs(got - ref))) if ref.size else 0
        raise DerivativeMismatch(
            f"DERIVATIVE MISMATCH: tool {tool_name!r} on workload {w.label!r} ({w.kind}) disagrees "
            f"with tapegrad: max |diff| = {err:.3e}, {err / scale:.3e} of the largest entry "
            f"(tolerance {rtol:g}); at flat index {i}: tool {got.ravel()[i]!r}, "
            f"tapegrad {ref.ravel()[i]!r}")
    return err / scale


# ------------------------------------------------------------------------------------------- run
def _tool_instances(specs):
    tools = []
    for s in specs:
        if isinstance(s, Tool):
            tools.append(s)
        elif s in ALL_TOOLS:
            tools.append(ALL_TOOLS[s]())
        else:
            raise ValueError(f"unknown tool {s!r}; choose from {', '.join(TOOL_ORDER)}")
    return tools


def run(config):
    """Run the suite; returns the results dict (see ``report.write`` for the files)."""
    cfg = config
    requested = _tool_instances(cfg.tools)
    tools, skipped, versions = [], {}, {}
    for t in requested:
        ok, info = t.available()
        if ok:
            tools.append(t)
            versions[t.name] = info
        else:
            skipped[t.name] = info
    prog_stream = cfg.progress
    for name, why in skipped.items():
        if prog_stream is not None:
            prog_stream.write(f"skipping {name}: {why}\n")
    names = [t.name for t in tools]
    wl = W.build(cfg.sizes, cfg.workloads)
    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    with _Pinned(cfg.threads, names) as pin:
        prog = Progress(prog_stream, len(wl) * len(tools) + (1 if cfg.thread_check else 0))
        rows = []
        for w in wl:
            rows.extend(_run_workload(w, tools, cfg, prog))
        threads = None
        if cfg.thread_check:
            threads = thread_scaling(cfg.sizes.threads_n, max(cfg.min_time, 0.02))
            prog.step(f"threads: 2 threads replaying one tape reach {threads['speedup']:.2f}x "
                      f"the throughput of 1")
        batch = None
        if cfg.batch:
            from .batch import run_batch
            prog.note("many points at once (batched replay):")
            batch = run_batch(cfg.sizes, cfg.min_time, names, prog)
        pin_info = pin
    res = {
        "date": started.isoformat(timespec="seconds"),
        "duration_s": round(time.perf_counter() - prog.t0, 1),
        "command": " ".join(sys.argv),
        "machine": machine_description(pin_info),
        "versions": versions,
        "skipped_tools": skipped,
        "config": {"tools": names, "min_time": cfg.min_time, "threads": cfg.threads,
                   "quick": cfg.quick, "rtol": cfg.rtol, "sizes": vars(cfg.sizes)},
        "workloads": [{"label": w.label, "name": w.name, "kind": w.kind, "n": w.n} for w in wl],
        "rows": rows,
        "threads": threads,
        "batch": batch,
    }
    res["machine"]["loadavg_at_start"] = load_start
    res["summary"] = summarize(res)
    return res


def _run_workload(w, tools, cfg, prog):
    rows = []
    ref_prep = TapegradReplay().prepare(w)
    ref = numpy.asarray(ref_prep.result(ref_prep.deriv()), dtype=numpy.float64)
    rtol = cfg.ode_rtol if w.kind == "ode" else cfg.rtol
    prepared = {}
    # 1. every tool's derivative, checked before anything is timed
    for t in tools:
        if t.name in w.skip:
            prepared[t.name] = w.skip[t.name]
            continue
        try:
            p = t.prepare(w)
        except Unsupported as e:
            prepared[t.name] = str(e)
            continue
        got = p.result(p.deriv())
        p.extra["check_error"] = check_derivative(t.name, w, got, ref, rtol)
        prepared[t.name] = p
    # 2. timings
    for t in tools:
        p = prepared[t.name]
        row = {"workload": w.label, "name": w.name, "kind": w.kind, "n": w.n, "tool": t.name}
        if isinstance(p, str):
            row["unsupported"] = p
            rows.append(row)
            prog.step(f"{w.label} · {t.name}: n/a ({p})")
            continue
        tm = measure(p.deriv, cfg.min_time, sync=p.sync)
        row["deriv"] = tm.as_dict()
        if p.value is not None:
            # f(x) timed in samples interleaved with the derivative's: the cheap-gradient
            # ratio is the median of the paired ratios
            _, tv, ratio = measure_pair(p.deriv, p.value, cfg.min_time / 2, sync=p.sync)
            row["value"] = tv.as_dict()
            row["deriv_over_value"] = ratio
        setup = {k: {"once": v} for k, v in p.setup.items()}
        if isinstance(t, TapegradReplay):
            rec = t.recorder(w)
            setup.setdefault("record", {})["timing"] = measure(
                rec, cfg.setup_time, warmup=1, min_samples=3).as_dict()
        row["setup"] = setup
        row["extra"] = dict(p.extra)
        if cfg.memory and p.traceable and getattr(t, "traceable", True):
            row["peak_python_bytes"] = peak_python_bytes(p.deriv)
        rows.append(row)
        prog.step(f"{w.label} · {t.name}: {fmt_time(tm.median)} "
                  f"(IQR {fmt_time(tm.iqr)}, {tm.samples}x{tm.calls} calls)")
    # the bars' ratios (replay against hand NumPy and autograd) once more from interleaved
    # samples: the median of paired ratios, which a burst of noise on one side cannot move
    rp = prepared.get("tg-replay")
    if w.kind == "grad" and not isinstance(rp, (str, type(None))):
        for other in ("numpy", "autograd"):
            po = prepared.get(other)
            if isinstance(po, (str, type(None))):
                continue
            _, _, ratio = measure_pair(rp.deriv, po.deriv, cfg.min_time / 2, sync=po.sync)
            for r in rows:
                if r["tool"] == "tg-replay" and "deriv" in r:
                    r.setdefault("paired", {})[other] = ratio
    # ratios within the workload
    by = {r["tool"]: r for r in rows if "deriv" in r}
    for r in rows:
        if "deriv" not in r:
            continue
        for base, key in (("tg-replay", "x_replay"), ("numpy", "x_numpy")):
            if base in by:
                r[key] = r["deriv"]["median"] / by[base]["deriv"]["median"]
    return rows


def thread_scaling(n, min_time, repeats=3):
    """Throughput of two threads replaying one ``Recorded`` against one thread (same tape, same
    point; results must equal the serial ones)."""
    from .. import operators as tg
    f, x = W.thread_workload(n)
    rec = tg.record(f, x)
    ref = rec.grad(x)
    per_call = measure(lambda: rec.grad(x), min_time / 5).median
    calls = max(20, int(min_time / per_call))
    errors = []

    def work(barrier, res):
        g = rec.grad(x)           # creates this thread's work buffers before the clock starts
        barrier.wait()
        for _ in range(calls):
            g = rec.grad(x)
        res.append(g)

    def timed(k):
        barrier = threading.Barrier(k + 1)
        res = []
        ths = [threading.Thread(target=work, args=(barrier, res)) for _ in range(k)]
        for th in ths:
            th.start()
        barrier.wait()
        t0 = time.perf_counter()
        for th in ths:
            th.join()
        dt = time.perf_counter() - t0
        for g in res:
            if not numpy.array_equal(g, ref):
                errors.append("a threaded replay differs from the serial one")
        return dt

    ratios, t1s, t2s = [], [], []
    for _ in range(repeats):
        t1 = timed(1)
        t2 = timed(2)
        t1s.append(t1)
        t2s.append(t2)
        ratios.append(2 * t1 / t2)
    if errors:
        raise DerivativeMismatch("THREADS: " + errors[0])
    return {"n": int(n), "ops": rec.info()["ops"], "calls_per_thread": calls,
            "one_thread_s": float(numpy.median(t1s)), "two_threads_s": float(numpy.median(t2s)),
            "speedup": float(numpy.median(ratios)), "ratios": ratios,
            "grad_median_s": per_call}


# ------------------------------------------------------------------------------------------- summary
def _cell(rows, label_or_name, tool, what="deriv"):
    for r in rows:
        if (r["workload"] == label_or_name or r["name"] == label_or_name) and r["tool"] == tool \
                and what in r:
            return r
    return None


def summarize(res):
    """The issue-4 ratios and the rows where tapegrad replay trails the best peer most."""
    rows = res["rows"]
    bars = []

    def med(label, tool, what="deriv"):
        r = _cell(rows, label, tool, what)
        return None if r is None else r[what]["median"]

    def bar(name, value, target, ok_if, how):
        met = None if value is None else bool(ok_if(value))
        bars.append({"bar": name, "value": value, "target": target, "met": met, "how": how})

    def ratio(a, b):
        return None if a is None or b is None else a / b

    def vs(label, other, invert=False):
        """replay / other (other / replay if invert) from paired samples, else from medians."""
        r = _cell(rows, label, "tg-replay")
        p = (r or {}).get("paired", {}).get(other)
        if p is not None:
            return (1.0 / p if invert else p), "median of paired ratios (interleaved samples)"
        a, b = med(label, "tg-replay"), med(label, other)
        return (ratio(b, a) if invert else ratio(a, b)), "median times"

    v, how = vs("worked_example", "numpy")
    bar("worked example: replay grad / hand grad", v, "<= 1.5", lambda v: v <= 1.5, how)
    v, how = vs("worked_example", "autograd", invert=True)
    bar("worked example: autograd grad / replay grad", v, ">= 50", lambda v: v >= 50, how)
    ag = med("scalar_loop", "autograd")
    r = _cell(rows, "scalar_loop", "tg-replay")
    rec = r["setup"]["record"]["timing"]["median"] if r and "record" in r.get("setup", {}) else None
    v, how = vs("scalar_loop", "autograd", invert=True)
    bar("scalar loop: autograd grad / replay grad", v, ">= 1000", lambda v: v >= 1000, how)
    bar("scalar loop: autograd grad / recording", ratio(ag, rec), ">= 10", lambda v: v >= 10,
        "median of tg.record(f, x0) against autograd.grad(f)(x)")
    for label in ("rosenbrock n=1e5", "logistic", "mlp"):
        v, how = vs(label, "numpy")
        bar(f"{label}: replay grad / hand grad", v, "<= 1.2", lambda v: v <= 1.2, how)
    for wl in res["workloads"]:
        r = _cell(rows, wl["label"], "tg-replay")
        if r is not None and wl["kind"] == "grad" and "deriv_over_value" in r:
            bar(f"cheap gradient {wl['label']}: tape.grad / tape(x)", r["deriv_over_value"],
                "<= 3", lambda v: v <= 3, "median of paired ratios (interleaved samples)")
    th = res.get("threads")
    if th:
        bar(f"threads: 2-thread / 1-thread replay throughput (n={th['n']}, {th['ops']} ops)",
            th["speedup"], ">= 1.6", lambda v: v >= 1.6, "median of 3 runs, one shared Recorded")
    rg, ra = _cell(rows, "mlp", "tg-replay"), _cell(rows, "mlp", "autograd")
    if rg is not None and ra is not None and "peak_python_bytes" in rg and "peak_python_bytes" in ra:
        bar("MLP memory: peak of tape.grad / peak of autograd grad",
            rg["peak_python_bytes"] / max(ra["peak_python_bytes"], 1), "<= 1",
            lambda v: v <= 1.0,
            f"tracemalloc; tape.grad {rg['peak_python_bytes']} B, autograd "
            f"{ra['peak_python_bytes']} B; tape {rg['extra'].get('tape_bytes')} B + work buffer "
            f"{rg['extra'].get('work_bytes')} B (allocated once per thread, not per call)")

    weakest = []
    for wl in res["workloads"]:
        rp = med(wl["label"], "tg-replay")
        peers = [(med(wl["label"], p), p) for p in PEERS]
        peers = [(t, p) for t, p in peers if t is not None]
        if rp is None or not peers:
            continue
        best_t, best_p = min(peers)
        weakest.append({"workload": wl["label"], "replay_s": rp, "best_peer": best_p,
                        "best_peer_s": best_t, "replay_over_best": rp / best_t})
    weakest.sort(key=lambda d: -d["replay_over_best"])
    return {"issue4": bars, "weakest": weakest}


def fmt_time(s):
    if s is None:
        return "—"
    if s < 1e-6:
        return f"{s * 1e9:.0f} ns"
    if s < 1e-3:
        return f"{s * 1e6:.3g} µs"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    return f"{s:.3g} s"


__all__ = ["Config", "run", "DerivativeMismatch", "check_derivative", "thread_scaling",
           "summarize", "machine_description", "fmt_time", "TOOL_LABELS"]
