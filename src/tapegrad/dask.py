"""Data-parallel gradients and ensembles of flows on Dask (``pip install "tapegrad[dask]"``).

A recorded tape is a value: ``to_bytes()`` gives everything a replay needs, checked on arrival
(``Tape.from_bytes`` refuses corrupt bytes and tapes of another format). So the workers get the
tape, not the Python function: it is recorded once per chunk shape on the client, scattered to
every worker once, loaded there once (kept in a small per-process cache keyed by its digest) and
replayed in compiled code at each chunk. A function that cannot be recorded is shipped with
cloudpickle instead (Dask's own function serialization), with a warning; its chunks are then
re-traced on the workers.

- :class:`DataParallel` (and the one-shot :func:`value_and_grad`, :func:`minimize`): for a loss
  that is a sum (``reduction="sum"``) or a mean (``"mean"``: weighted by rows) over the rows of
  data arguments, given Dask (or NumPy) arrays chunked by rows, each chunk's value and gradient is
  computed where the chunk lives and the partial results are summed in a tree of tasks (fan-in 8).
  The data are persisted on the workers for the object's life, so the calls of an optimizer loop
  move only w and the partial gradients.
- :func:`map_flows`, :func:`map_descents`, :func:`map_hyper`: ``gradient_flow``,
  ``gradient_descent`` and ``hypergradient_descent`` over a list of starting points times a grid
  of settings, one Dask task each, gathered into one table (:class:`Ensemble`).

Without ``client`` or ``address`` a ``LocalCluster`` of processes (one per core, one thread each)
is started for the call and closed afterwards. BLAS is capped at one thread inside each task
(threadpoolctl) so that the workers do not oversubscribe the cores. A worker that dies is
replaced and its tasks re-run by Dask (the data chunks are recomputed from their graph); results do
not change. A worker with another tapegrad version refuses to replay.
"""
import hashlib
import itertools
import os
import time
import warnings
from contextlib import contextmanager

import numpy as np

from . import flow as _flow
from . import hyper as _hyper
from ._version import __version__
from .errors import TapegradTypeError, TapegradValueError
from .operators import api as _api
from .operators.recorded import load as _load, record as _record

__all__ = ["DataParallel", "value_and_grad", "minimize", "map_flows", "map_descents", "map_hyper",
           "Ensemble", "local_client"]

FAN_IN = 8                 # partial results summed per reduction task
RETRIES = 2                # data-parallel calls redone after losing data with a worker
_CACHE_SIZE = 16           # loaded tapes kept per worker process


def _modules():
    try:
        import dask.array as da
        import distributed
    except ImportError as e:        # pragma: no cover - the extra is in the test requirements
        raise ImportError('tapegrad.dask needs Dask: pip install "tapegrad[dask]" '
                          '(dask[distributed])') from e
    return da, distributed


# ---------------------------------------------------------------------------------------------
# the client: given, by address, or a LocalCluster of our own
# ---------------------------------------------------------------------------------------------
@contextmanager
def local_client(client=None, address=None, n_workers=None):
    """The client to use: ``client`` itself, a new one connected to ``address``, or a new
    ``LocalCluster`` of ``n_workers`` processes (default: one per core) with one thread each;
    the ones made here are closed on exit."""
    _, distributed = _modules()
    if client is not None:
        yield client
        return
    if address is not None:
        c = distributed.Client(address)
        try:
            yield c
        finally:
            c.close()
        return
    n = int(n_workers or os.cpu_count() or 1)
    cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                       dashboard_address=_dashboard(), silence_logs=40)
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def _dashboard():
    try:
        import bokeh  # noqa: F401  (the dashboard needs it)
        return ":0"
    except ImportError:
        return None


# ---------------------------------------------------------------------------------------------
# on the workers
# ---------------------------------------------------------------------------------------------
_LOADED = {}


_BLAS_CAPPED = []


@contextmanager
def _one_blas_thread():
    """BLAS at one thread in this worker process from its first task on (threadpoolctl walks
    the loaded libraries at each call, milliseconds, so it is done once, not per task)."""
    if not _BLAS_CAPPED:
        try:
            from threadpoolctl import threadpool_limits
            threadpool_limits(1)
        except ImportError:
            pass
        _BLAS_CAPPED.append(True)
    yield


def _check_version(version):
    if version != __version__:
        raise RuntimeError(f"tapegrad.dask: the client runs tapegrad {version} and this worker "
                           f"tapegrad {__version__}; install the same version on both")


def _tape(blob, digest, version):
    """The Recorded for a tape's bytes, loaded once per worker process."""
    _check_version(version)
    rec = _LOADED.get(digest)
    if rec is None:
        if _digest(blob) != digest:
            raise ValueError("tapegrad.dask: the tape's bytes do not match their digest")
        rec = _load(blob)
        if len(_LOADED) >= _CACHE_SIZE:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[digest] = rec
    return rec


def _chunk_value_and_grad(shipped, version, weight, w, *data):
    """(weight * value, weight * gradient in w, rows) of one chunk."""
    kind, payload = shipped
    with _one_blas_thread():
        if kind == "tape":
            rec = _tape(payload[0], payload[1], version)
            v, g = rec.value_and_grad(w, *data)             # argnums=0: the gradient in w
        else:
            _check_version(version)
            v, g = _api.value_and_grad(payload, argnums=0)(w, *data)
    rows = int(np.shape(data[0])[0]) if data else 0
    s = float(rows) if weight == "rows" else 1.0
    return s * float(v), s * np.array(g, dtype=float), rows


def _sum_parts(*parts):
    v = sum(p[0] for p in parts)
    g = parts[0][1].copy()
    for p in parts[1:]:
        g += p[1]
    return v, g, sum(p[2] for p in parts)


# ---------------------------------------------------------------------------------------------
# data-parallel value and gradient
# ---------------------------------------------------------------------------------------------
def _digest(blob):
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


def _recordable(f, example, what):
    """("tape", (bytes, digest)) of f recorded at the example arguments (gradient in argument
    0), or ("function", f) with a warning when f cannot be recorded."""
    try:
        rec = _record(f, *example, argnums=0)
        blob = rec.to_bytes()
    except Exception as e:                                  # noqa: BLE001 - reported, then shipped
        warnings.warn(f"{what}: f could not be recorded ({type(e).__name__}: {e}); shipping the "
                      "function with cloudpickle instead (re-traced on the workers)",
                      RuntimeWarning, stacklevel=3)
        return ("function", f)
    return ("tape", (blob, _digest(blob)))


class DataParallel:
    """Value and gradient (in ``w``) of ``f(w, *data)`` summed over row chunks of ``data``.

    data: Dask arrays (or NumPy arrays, chunked here by ``chunk_rows``) with the same number of
    rows and the same row chunks; they are rechunked to whole rows and persisted on the workers.
    ``reduction="sum"``: f of a chunk is its part of a sum; ``"mean"``: f of a chunk is the
    mean over its rows, and chunks are weighted by their row counts. Use as a context manager,
    or call ``close()``: that closes the LocalCluster started here (if any).
    """

    def __init__(self, f, w0, *data, reduction="sum", client=None, address=None, n_workers=None,
                 chunk_rows=None):
        da, _ = _modules()
        if reduction not in ("sum", "mean"):
            raise TapegradValueError(f"DataParallel: reduction must be 'sum' or 'mean', got {reduction!r}")
        if not callable(f):
            raise TapegradTypeError("DataParallel: f must be a function f(w, *data)")
        if not data:
            raise TapegradValueError("DataParallel: give the data arguments (arrays chunked by rows)")
        self.f, self.reduction = f, reduction
        self.w0 = np.asarray(w0, dtype=float)
        arrays = []
        for i, a in enumerate(data):
            if not isinstance(a, da.Array):
                a = np.asarray(a)
                if a.ndim == 0:
                    raise TapegradValueError(f"DataParallel: data argument {i + 1} is a scalar; "
                                             "data arguments need a row axis")
                a = da.from_array(a, chunks=(chunk_rows or max(1, -(-a.shape[0] // 8)),)
                                  + a.shape[1:])
            if a.ndim == 0:
                raise TapegradValueError(f"DataParallel: data argument {i + 1} is a scalar")
            arrays.append(a.rechunk({k: -1 for k in range(1, a.ndim)}))
        rows = arrays[0].shape[0]
        for i, a in enumerate(arrays[1:], start=2):
            if a.shape[0] != rows:
                raise TapegradValueError(f"DataParallel: data argument {i} has {a.shape[0]} rows, "
                                         f"argument 1 has {rows}")
        chunks = arrays[0].chunks[0]
        arrays = [a if a.chunks[0] == chunks else a.rechunk({0: chunks}) for a in arrays]
        self.rows, self.row_chunks = rows, chunks
        self._session = local_client(client, address, n_workers)
        self.client = self._session.__enter__()
        try:
            self._blocks = [list(a.to_delayed().ravel()) for a in arrays]
            self._materialize()
            self._recorded, self._keys = {}, []
            for k, n in enumerate(chunks):
                key = tuple((n,) + a.shape[1:] for a in arrays)
                if key not in self._recorded:     # record at the first chunk of each shape
                    example = [fut.result() for fut in self._chunks[k]]
                    self._recorded[key] = _recordable(f, [self.w0] + example, "DataParallel")
                self._keys.append(key)
            self._ship()
        except BaseException:
            self.close()
            raise
        self.n_calls = 0

    def _materialize(self):
        """The chunks as futures on the workers, computed from the arrays' graphs."""
        self._chunks = list(zip(*[self.client.compute(b) for b in self._blocks]))

    def _ship(self):
        """Scatter each recorded tape to every worker (again after a loss: the client keeps the
        bytes, so a tape whose every copy died with its workers is sent anew)."""
        self._shipped = {}
        for key, shipped in self._recorded.items():
            if shipped[0] == "tape":
                blob, dig = shipped[1]
                shipped = ("tape", (self.client.scatter(blob, broadcast=True, hash=False), dig))
            self._shipped[key] = shipped

    @property
    def shipped(self):
        """How f reaches the workers per chunk shape: "tape" or "function"."""
        return {k: s[0] for k, s in self._recorded.items()}

    def value_and_grad(self, w):
        """(f summed (or averaged) over all rows, its gradient in w) at w, as NumPy."""
        w = np.ascontiguousarray(w, dtype=float)
        if w.shape != self.w0.shape:
            raise TapegradValueError(f"DataParallel.value_and_grad: w has shape {w.shape}, "
                                     f"expected {self.w0.shape}")
        self.n_calls += 1
        _, distributed = _modules()
        lost = distributed.CancelledError          # FutureCancelledError is one
        for attempt in range(RETRIES + 1):
            try:
                return self._value_and_grad(w)
            except lost:
                # a worker died with chunks whose inputs Dask no longer has (it keeps the
                # futures we hold, not the intermediate keys of their graphs), or with scattered
                # tapes it cannot recover: compute the chunks again from the arrays, send the
                # tapes again and redo the call
                if attempt == RETRIES:
                    raise
                self._materialize()
                self._ship()

    def _value_and_grad(self, w):
        weight = "rows" if self.reduction == "mean" else "one"
        parts = [self.client.submit(_chunk_value_and_grad, self._shipped[key], __version__, weight,
                                    w, *chunk, pure=False)
                 for key, chunk in zip(self._keys, self._chunks)]
        held = list(parts)         # every future of the call is held until its end, so that a
        while len(parts) > 1:      # lost partial (a worker died) is recomputed, not cancelled
            parts = [self.client.submit(_sum_parts, *parts[i:i + FAN_IN], pure=False)
                     for i in range(0, len(parts), FAN_IN)]
            held += parts
        v, g, n = parts[0].result()
        del held
        if self.reduction == "mean":
            v, g = v / n, g / n
        return float(v), g.reshape(self.w0.shape)

    def value(self, w):
        return self.value_and_grad(w)[0]

    def grad(self, w):
        return self.value_and_grad(w)[1]

    def close(self):
        s, self._session = getattr(self, "_session", None), None
        if s is not None:
            self._chunks = None
            s.__exit__(None, None, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def value_and_grad(f, w, *data, reduction="sum", client=None, address=None, n_workers=None,
                   chunk_rows=None):
    """One data-parallel (value, gradient in w) of ``f(w, *data)``; see :class:`DataParallel`."""
    with DataParallel(f, w, *data, reduction=reduction, client=client, address=address,
                      n_workers=n_workers, chunk_rows=chunk_rows) as dp:
        return dp.value_and_grad(w)


def minimize(f, w0, *data, reduction="sum", method="L-BFGS-B", client=None, address=None,
             n_workers=None, chunk_rows=None, **scipy_kwargs):
    """``scipy.optimize.minimize`` of ``f(w, *data)`` summed over row chunks, each value and
    gradient one data-parallel call (the data stay on the workers between calls). Returns
    SciPy's ``OptimizeResult`` (with ``ncalls``: the data-parallel calls made)."""
    import scipy.optimize as so
    with DataParallel(f, w0, *data, reduction=reduction, client=client, address=address,
                      n_workers=n_workers, chunk_rows=chunk_rows) as dp:
        res = so.minimize(dp.value_and_grad, np.asarray(w0, dtype=float).ravel()
                          if np.ndim(w0) == 1 else w0, jac=True, method=method, **scipy_kwargs)
        res.ncalls = dp.n_calls
    return res


# ---------------------------------------------------------------------------------------------
# ensembles
# ---------------------------------------------------------------------------------------------
_RUNNERS = {"flow": "gradient_flow", "descent": "gradient_descent", "hyper": "hypergradient_descent"}


def _run_member(shipped, version, kind, w0, kwargs):
    """One flow or descent on a worker; a row of the ensemble's table."""
    _check_version(version)
    what, payload = shipped
    f = _tape(payload[0], payload[1], version) if what == "tape" else payload
    t0 = time.perf_counter()
    with _one_blas_thread():
        if kind == "flow":
            kw = dict(kwargs)
            t_span = kw.pop("t_span")
            res = _flow.gradient_flow(f, w0, t_span, **kw)
            row = {"f_final": float(res.f[-1]), "grad_norm": float(res.grad_norm[-1]),
                   "steps": int(res.n_steps), "reason": "success" if res.success else res.message,
                   "w_final": res.w[-1].copy()}
        else:
            run = _flow.gradient_descent if kind == "descent" else _hyper.hypergradient_descent
            res = run(f, w0, **kwargs)
            row = {"f_final": float(res.f[-1]), "grad_norm": float(res.grad_norm[-1]),
                   "steps": int(res.n_steps), "reason": res.reason, "w_final": res.w[-1].copy()}
            if kind == "hyper":
                row["eta_final"] = float(res.eta[-1]) if len(res.eta) else float("nan")
    row["time_s"] = time.perf_counter() - t0
    row["worker_pid"] = os.getpid()
    return row


class Ensemble:
    """The gathered results of an ensemble: ``rows`` (one dict per member, in submission
    order: member, start, the member's settings, f_final, grad_norm, steps, reason, time_s,
    w_final, worker_pid), ``wall_s`` the whole run's wall time; ``table()`` a text table,
    ``to_pandas()`` a DataFrame (if pandas is installed)."""

    def __init__(self, rows, kind, wall_s):
        self.rows, self.kind, self.wall_s = rows, kind, wall_s

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    def column(self, name):
        return [r[name] for r in self.rows]

    def to_pandas(self):
        import pandas as pd
        return pd.DataFrame([{k: v for k, v in r.items() if k != "w_final"} for r in self.rows])

    def table(self, max_rows=40):
        keys = [k for k in self.rows[0] if k not in ("w_final", "worker_pid")] if self.rows else []
        lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        for r in self.rows[:max_rows]:
            lines.append("| " + " | ".join(_cell(r[k]) for k in keys) + " |")
        if len(self.rows) > max_rows:
            lines.append(f"({len(self.rows) - max_rows} more rows)")
        return "\n".join(lines)

    def __repr__(self):
        return f"Ensemble({self.kind}, {len(self.rows)} members, {self.wall_s:.2f} s)"


def _cell(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, np.ndarray):
        return np.array2string(v, precision=3, threshold=4)
    return str(v)


def _grid(settings):
    """A list of setting dicts: a list as it is; a dict of lists as their product."""
    if settings is None:
        return [{}]
    if isinstance(settings, dict):
        names = list(settings)
        values = [v if isinstance(v, (list, tuple)) else [v] for v in settings.values()]
        return [dict(zip(names, combo)) for combo in itertools.product(*values)]
    settings = list(settings)
    if not all(isinstance(s, dict) for s in settings):
        raise TapegradTypeError("settings must be a dict of lists (a grid) or a list of dicts")
    return settings or [{}]


def _ensemble(kind, f, starts, settings, common, client, address, n_workers, progress):
    starts = [np.ascontiguousarray(s, dtype=float) for s in starts]
    if not starts:
        raise TapegradValueError(f"map_{kind}: no starting points")
    shape = starts[0].shape
    for i, s in enumerate(starts):
        if s.shape != shape:
            raise TapegradValueError(f"map_{kind}: start {i} has shape {s.shape}, start 0 {shape}")
    grid = _grid(settings)
    shipped = _recordable(f, [starts[0]], f"map_{kind}") if callable(f) and not hasattr(f, "grad") \
        else None
    if shipped is None:
        if hasattr(f, "to_bytes"):
            blob = f.to_bytes()
            shipped = ("tape", (blob, _digest(blob)))
        else:
            raise TapegradTypeError(f"map_{kind}: f must be a function or a recorded tape")
    members = [(i, s, g) for i, s in enumerate(starts) for g in grid]
    t0 = time.perf_counter()
    _, distributed = _modules()
    with local_client(client, address, n_workers) as c:
        def submit(done=None):
            # the tape is scattered anew at each try: a worker that dies can take the cluster's
            # every copy of it (Dask cannot recompute scattered data); finished members are kept
            sent = shipped if shipped[0] != "tape" else \
                ("tape", (c.scatter(shipped[1][0], broadcast=True, hash=False), shipped[1][1]))
            return [d if d is not None and d.status == "finished" else
                    c.submit(_run_member, sent, __version__, kind, s, {**common, **g}, pure=False)
                    for d, (_, s, g) in zip(done or [None] * len(members), members)]
        futs = submit()
        if progress:
            if c.dashboard_link and _dashboard():
                print(f"tapegrad.dask: dashboard at {c.dashboard_link}")
            distributed.progress(futs)
            print()
        for attempt in range(RETRIES + 1):
            try:
                results = c.gather(futs)
                break
            except distributed.CancelledError:
                if attempt == RETRIES:
                    raise
                futs = submit(futs)
    rows = []
    for (i, s, g), r in zip(members, results):
        rows.append({"member": i, **{k: v for k, v in g.items()}, **r, "start": s})
    return Ensemble(rows, kind, time.perf_counter() - t0)


def map_flows(f, starts, t_span, settings=None, client=None, address=None, n_workers=None,
              progress=False, **common):
    """``gradient_flow(f, w0, t_span, **common, **setting)`` for every start times every setting
    (``settings``: a dict of lists, taken as a grid, or a list of dicts), one Dask task each."""
    return _ensemble("flow", f, starts, settings, dict(common, t_span=t_span), client, address,
                     n_workers, progress)


def map_descents(f, starts, settings=None, client=None, address=None, n_workers=None,
                 progress=False, **common):
    """``gradient_descent(f, w0, **common, **setting)`` over starts times settings (say eta,
    steps, A in either)."""
    return _ensemble("descent", f, starts, settings, common, client, address, n_workers, progress)


def map_hyper(f, starts, settings=None, client=None, address=None, n_workers=None,
              progress=False, **common):
    """``hypergradient_descent(f, w0, **common, **setting)`` over starts times settings (say
    eta0, hyper_lr, steps, horizon, rule)."""
    return _ensemble("hyper", f, starts, settings, common, client, address, n_workers, progress)


# ---------------------------------------------------------------------------------------------
# tapegrad dask-demo
# ---------------------------------------------------------------------------------------------
def demo(address=None, n_workers=2, rows=200_000, d=20, n_flows=20, seed=0, out=print):
    """Both uses on generated data: a data-parallel logistic regression fitted with L-BFGS-B
    (checked against the single-process gradient) and an ensemble of Rosenbrock flows.
    Returns the numbers it prints."""
    import scipy.optimize as so
    da, _ = _modules()
    rng = np.random.default_rng(seed)
    w_true = rng.standard_normal(d)
    X = da.random.RandomState(seed).standard_normal((rows, d), chunks=(max(1, rows // 8), d))
    Xn = X.compute()
    y = (rng.random(rows) < 1.0 / (1.0 + np.exp(-(Xn @ w_true)))).astype(float)
    Y = da.from_array(y, chunks=X.chunks[0])

    def loss(w, X, y):
        z = X @ w
        return np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * np.sum(w * w) * X.shape[0] / rows

    report = {}
    with local_client(None, address, n_workers) as c:
        where = address or f"a LocalCluster of {len(c.scheduler_info()['workers'])} processes"
        out(f"tapegrad.dask demo on {where}")
        out(f"1. data-parallel logistic regression: {rows:,} rows x {d} in {len(X.chunks[0])} "
            "chunks, the tape shipped once per chunk shape")
        with DataParallel(loss, np.zeros(d), X, Y, client=c) as dp:
            t0 = time.perf_counter()
            v, g = dp.value_and_grad(np.zeros(d))
            t_one = time.perf_counter() - t0
            v1, g1 = _api.value_and_grad(loss, argnums=0)(np.zeros(d), Xn, y)
            err = float(np.max(np.abs(g - g1)) / max(1e-300, np.max(np.abs(g1))))
            t0 = time.perf_counter()
            res = so.minimize(dp.value_and_grad, np.zeros(d), jac=True, method="L-BFGS-B")
            t_fit = time.perf_counter() - t0
        cos = float(res.x @ w_true / (np.linalg.norm(res.x) * np.linalg.norm(w_true)))
        out(f"   gradient vs one process: max relative difference {err:.1e} "
            f"(one call {t_one * 1e3:.0f} ms)")
        out(f"   L-BFGS-B: {res.nit} iterations, {res.nfev} data-parallel calls, {t_fit:.2f} s; "
            f"cosine(w, w_true) = {cos:.4f}")
        report.update(grad_rel_err=err, fit_s=t_fit, nit=int(res.nit), cosine=cos)

        def rosen(w):
            return np.sum(100.0 * (w[1:] - w[:-1] ** 2) ** 2 + (1.0 - w[:-1]) ** 2)
        starts = [rng.uniform(-2, 2, size=4) for _ in range(n_flows)]
        out(f"2. an ensemble of {n_flows} Rosenbrock flows (d = 4, BDF, t = 0..20) as Dask tasks")
        ens = map_flows(rosen, starts, (0.0, 20.0), client=c, method="BDF", rtol=1e-8, atol=1e-10)
        out(ens.table(max_rows=8))
        out(f"   {len(ens)} flows in {ens.wall_s:.2f} s on "
            f"{len(set(ens.column('worker_pid')))} workers; "
            f"{sum(r['f_final'] < 1e-6 for r in ens.rows)} reached f < 1e-6")
        report.update(flows=len(ens), flows_s=ens.wall_s)
    return report
