"""Batched replay: one recorded tape at B points in one compiled call per chunk of points.

``Recorded.value_batch / grad_batch / value_and_grad_batch / jvp_batch / hvp_batch`` come
here. The arguments carry a leading batch axis (``in_axes``: per argument, 0 or another axis,
or None for an argument shared by every point, as in ``vmap``; a pytree argument has one axis
for all its leaves). Each chunk of points is laid out as one (n, nin) matrix of flat inputs and
swept by ``sweeps.batch_replay`` (_core/sweep_batch.pxi): the loop over points runs in C with
the GIL released, each point in the exact sweeps of its one-point replay, so a batch gives the
bits of a Python loop of one-point replays, whatever the thread count.

Threads: a chunk's rows are cut into ``threads`` contiguous slices, one per worker of a
``ThreadPoolExecutor``; each worker's call has its own work buffers. Chosen over OpenMP's
prange: the build stays as it is (no -fopenmp, which differs between compilers and is absent
on some), the thread count is a plain argument, and an OP_CALL rule (Python, under the GIL)
inside the tape stays safe.

Guards: a point whose guards do not hold for the variant it was swept with is marked by the
sweep; such points are grouped and swept again with the other recorded variants, and those no
variant fits are re-recorded once per branch pattern (at the first such point, then all the
others are swept with the new variant), or raise ``GuardError`` when strict. A point's result
always comes from one variant whose guards held at that point.

Memory: the staging arrays of one chunk (flat inputs, tangents, values, derivatives) and the
per-thread work buffers stay within ``budget`` bytes (``BUDGET`` by default): a bigger batch is
processed in chunks; only the results the caller asked for are B points long.
"""
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .._core import sweeps
from ..tracing import pytree as _tree
from ..engine.traced import Traced, GuardError
from ..errors import TapegradTypeError, TapegradValueError

# defaults: threads=None means THREADS, then os.cpu_count(); budget=None means BUDGET bytes
THREADS = None
BUDGET = 64 << 20
# a slice is worth a worker from this many points, and this much work (points times the
# tape's work slots and ops): below, the pool's hand-off costs more than the slice
MIN_POINTS_PER_THREAD = 16
MIN_WORK_PER_THREAD = 1 << 16

_KIND = sweeps.BATCH_KINDS
_pool = None


def _executor(n):
    global _pool
    if _pool is None or _pool._max_workers < n:
        old, _pool = _pool, ThreadPoolExecutor(max_workers=n, thread_name_prefix="tapegrad-batch")
        if old is not None:
            old.shutdown(wait=False)
    return _pool


def default_threads():
    return int(THREADS) if THREADS is not None else (os.cpu_count() or 1)


def _n_leaves(td):
    if isinstance(td, _tree.Leaf):
        return 1
    if td[0] in ("tuple", "list"):
        return sum(_n_leaves(c) for c in td[1])
    if td[0] == "dict":
        return sum(_n_leaves(c) for c in td[2])
    return 0


class Layout:
    """Where each argument's leaves sit in the flat input, and which arguments are
    differentiated (``argnums``)."""

    def __init__(self, rec):
        self.rec = rec
        kids = rec.in_tree[1]
        self.arg_leaves, pos = [], 0
        for k in kids:
            n = _n_leaves(k)
            self.arg_leaves.append(range(pos, pos + n))
            pos += n
        self.offsets = np.concatenate([[0], np.cumsum(rec.in_sizes)]).astype(int)
        self.argnums = rec.argnums

    def diff_leaves(self):
        """The leaves of the differentiated arguments, in order."""
        if self.argnums is None:
            return list(range(len(self.rec.in_shapes)))
        return [j for a in self.argnums for j in self.arg_leaves[a]]

    def diff_columns(self):
        """The flat input columns of the differentiated arguments."""
        return np.concatenate([np.arange(self.offsets[j], self.offsets[j + 1])
                               for j in self.diff_leaves()] or [np.zeros(0, int)])


def _axes(in_axes, nargs, fn):
    if in_axes is None or isinstance(in_axes, (int, np.integer)):
        return (in_axes,) * nargs
    if not isinstance(in_axes, (tuple, list)) or len(in_axes) != nargs:
        raise TapegradValueError(f"{fn}: in_axes must be an int, None or a tuple of one per argument "
                                 f"({nargs}), got {in_axes!r}")
    for a in in_axes:
        if a is not None and not isinstance(a, (int, np.integer)):
            raise TapegradValueError(f"{fn}: in_axes entries must be ints or None, got {a!r}")
    return tuple(in_axes)


def _same_structure(a, b):
    """Pytree definitions equal up to the leaves' kinds (a batched Python number is an array)."""
    if isinstance(a, _tree.Leaf) or isinstance(b, _tree.Leaf):
        return isinstance(a, _tree.Leaf) and isinstance(b, _tree.Leaf)
    if a[0] != b[0]:
        return False
    if a[0] == "dict":
        return a[1] == b[1] and len(a[2]) == len(b[2]) and all(
            _same_structure(x, y) for x, y in zip(a[2], b[2]))
    if a[0] in ("tuple", "list"):
        return len(a[1]) == len(b[1]) and all(_same_structure(x, y) for x, y in zip(a[1], b[1]))
    return True


class Batch:
    """The arguments of one batched call, checked: leaves moved to a leading batch axis (or
    shared), the batch size B; ``layout`` gives the shared values and the batched segments."""

    def __init__(self, fn, what, args, axes, shapes, leaf_args, names, trees):
        self.leaves, self.B = [], None
        where = None
        for a, (arg, ax) in enumerate(zip(args, axes)):
            leaves, td = _tree.flatten(arg)
            idx = leaf_args[a]
            label = f"{what} {names[a]}".strip()
            if not _same_structure(td, trees[a]):
                raise TapegradValueError(f"{fn}: {label} has the structure {td!r}, the recording "
                                         f"{trees[a]!r}")
            if len(leaves) != len(idx):
                raise TapegradValueError(f"{fn}: {label} has {len(leaves)} leaves, the "
                                         f"recording has {len(idx)}")
            for leaf, j in zip(leaves, idx):
                arr = np.asarray(leaf)
                if arr.dtype.kind not in "fiub":
                    raise TapegradTypeError(f"{fn}: {label} has dtype {arr.dtype}; "
                                            f"expected real numbers")
                want = tuple(shapes[j])
                if ax is None:
                    if arr.shape != want:
                        raise TapegradValueError(f"{fn}: {label} (in_axes None) must have "
                                                 f"the recorded shape {want}, got {arr.shape}")
                    self.leaves.append((j, arr.astype(np.float64, copy=False), False))
                    continue
                if not -arr.ndim <= ax < max(arr.ndim, 1) or arr.ndim != len(want) + 1:
                    raise TapegradValueError(f"{fn}: {label} must have shape {want} plus "
                                             f"a batch axis at {ax}, got shape {arr.shape}")
                arr = np.moveaxis(arr, ax, 0)
                if arr.shape[1:] != want:
                    raise TapegradValueError(f"{fn}: {label} must have shape {want} plus "
                                             f"a batch axis at {ax}, got shape "
                                             f"{np.moveaxis(arr, 0, ax).shape}")
                if self.B is None:
                    self.B, where = arr.shape[0], names[a]
                elif arr.shape[0] != self.B:
                    raise TapegradValueError(f"{fn}: mismatched batch sizes: {where} has {self.B} "
                                             f"points, {label} has {arr.shape[0]} "
                                             f"(shape {np.moveaxis(arr, 0, ax).shape})")
                self.leaves.append((j, arr.astype(np.float64, copy=False), True))

    def layout(self, offsets, nin):
        """(base, segments, batched leaves): the flat vector with the shared leaves in place
        (zeros elsewhere), the (offset, length) segments of the batched leaves in input order
        (adjacent ones merged), and those leaves as (B, size) arrays in the same order."""
        base = np.zeros(nin)
        segs, parts = [], []
        for j, arr, batched in sorted(self.leaves, key=lambda t: t[0]):
            o, e = int(offsets[j]), int(offsets[j + 1])
            if not batched:
                base[o:e] = arr.reshape(-1)
            elif e > o:
                if segs and segs[-1][0] + segs[-1][1] == o:
                    segs[-1][1] += e - o
                else:
                    segs.append([o, e - o])
                parts.append(arr.reshape(arr.shape[0], e - o))
        return base, np.array(segs, dtype=np.int64).reshape(-1, 2), parts

    @staticmethod
    def rows(parts, lo, hi):
        """Points [lo, hi) of the batched leaves as one C-contiguous (n, width) matrix (a view
        when there is one contiguous leaf)."""
        if len(parts) == 1:
            return np.ascontiguousarray(parts[0][lo:hi], dtype=np.float64)
        if not parts:
            return np.zeros((hi - lo, 0))
        return np.ascontiguousarray(np.concatenate([p[lo:hi] for p in parts], axis=1),
                                    dtype=np.float64)


def _names(rec, argnums=None):
    if argnums is not None:
        return [f"argument {a}" for a in argnums]
    return [f"argument {a}" for a in range(rec.nargs)]


def _chunk_size(rec, B, per_point, threads, budget, lanes=1):
    S = max(max(tr.tape.nwork for tr in rec._variants), 1)
    nops = max(tr.tape.nops for tr in rec._variants)
    work = threads * 8 * ((2 + 2 * lanes) * S + 2 * nops)
    budget = BUDGET if budget is None else int(budget)
    if budget <= 0:
        raise TapegradValueError(f"batch: budget must be a positive number of bytes, got {budget}")
    return max(1, min(B, (budget - work) // max(8 * per_point, 1)))


class Chunk:
    """One chunk's points: inputs (base, rows, segments) and tangents alike."""

    def __init__(self, xbase, X, xsegs, vbase=None, V=None, vsegs=None):
        self.xbase, self.X, self.xsegs = xbase, X, xsegs
        self.vbase, self.V, self.vsegs = vbase, V, vsegs

    def take(self, rows):
        return Chunk(self.xbase, np.ascontiguousarray(self.X[rows]), self.xsegs, self.vbase,
                     None if self.V is None else np.ascontiguousarray(self.V[rows]), self.vsegs)

    def point(self, i):
        """Point i's full flat input."""
        x = self.xbase.copy()
        pos = 0
        for o, n in self.xsegs:
            x[o:o + n] = self.X[i, pos:pos + n]
            pos += n
        return x

    def __len__(self):
        return self.X.shape[0]


def _sweep(tape, kind, c, Y, D, d_lo, ok, threads, fast, value):
    n = len(c)
    args = (tape, kind, c.xbase, c.X, c.xsegs, c.vbase, c.V, c.vsegs, Y, D, d_lo, ok)
    work = n * (tape.nwork + 4 * tape.nops)
    T = max(1, min(threads, n // max(MIN_POINTS_PER_THREAD, 1),
                   work // max(MIN_WORK_PER_THREAD, 1)))
    if T == 1:
        sweeps.batch_replay(*args, 0, n, fast, value)
        return
    sweeps.batch_replay(*args, 0, 0, fast, value)          # validate once, here
    cuts = [n * k // T for k in range(T + 1)]
    pool = _executor(T)
    futs = [pool.submit(sweeps.batch_replay, *args, cuts[k], cuts[k + 1], fast, value)
            for k in range(T)]
    for f in futs:
        f.result()


def _take(a, rows):
    return None if a is None else np.ascontiguousarray(a[rows])


def _run_chunk(rec, kind, c, Y, D, d_lo, threads, fast, value, strict, fn):
    """Sweep a chunk with the current variant; points whose guards fail go to the other
    variants, then to new recordings, grouped. Y, D are filled in place."""
    n = len(c)
    ok = np.zeros(n, np.uint8)
    tr = rec._variants[0]
    _sweep(tr.tape, kind, c, Y, D, d_lo, ok, threads, fast, value)
    todo = np.flatnonzero(ok == 0)
    tried = {id(tr)}
    while todo.size:
        cand = [v for v in rec._variants if id(v) not in tried]
        if cand:
            tr = cand[0]
        elif rec.strict or rec.f is None:
            raise GuardError(f"{fn}: a recorded guard flipped at {todo.size} of {n} points (control "
                             f"flow depends on the input differently than when recorded) and "
                             f"strict=True")
        else:
            tr = Traced(rec.f, tuple(rec._args(c.point(todo[0]))), None, None, False, "record")
            rec.rerecords += 1
            rec._variants.insert(0, tr)
            del rec._variants[rec.max_variants:]
            if tr.nout != rec.nout:
                raise TapegradValueError(f"{fn}: a branch returns {tr.nout} values, the recording "
                                         f"{rec.nout}")
        tried.add(id(tr))
        cs, Ys, Ds = c.take(todo), _take(Y, todo), _take(D, todo)
        oks = np.zeros(todo.size, np.uint8)
        _sweep(tr.tape, kind, cs, Ys, Ds, d_lo, oks, threads, fast, value)
        good = oks != 0
        if not good.any() and not cand:
            raise GuardError(f"{fn}: f re-recorded at a point does not hold its own guards there")
        if Y is not None:
            Y[todo[good]] = Ys[good]
        if D is not None:
            D[todo[good]] = Ds[good]
        todo = todo[~good]


def _simple_rows(rec, a):
    """a as (B, nin) float64 rows when it is one array argument batched on axis 0 with the
    recorded shape (the common case, taken without the general layout), else None."""
    if type(a) is not np.ndarray or a.dtype.kind not in "fiu":
        return None
    shape = tuple(rec.in_shapes[0])
    if a.ndim != len(shape) + 1 or a.shape[1:] != shape:
        return None
    return np.ascontiguousarray(a, dtype=np.float64).reshape(a.shape[0], rec.nin)


def run_simple(rec, kind, x, v, threads, budget, strict, value, fn):
    """run() for one array argument, in_axes=0 (and tangents on axis 0): (Y, D) as run's,
    or None when the arguments do not qualify (the general path then checks them)."""
    if not rec._simple or (kind in ("grad", "hvp", "hessian") and rec.nout != 1):
        return None
    X = _simple_rows(rec, x)
    if X is None:
        return None
    B, nin = X.shape
    V = None
    if kind in ("jvp", "hvp"):
        V = _simple_rows(rec, v)
        if V is None or V.shape[0] != B:
            return None
    threads = default_threads() if threads is None else int(threads)
    if threads < 1:
        raise TapegradValueError(f"{fn}: threads must be at least 1, got {threads}")
    strict = rec.strict if strict is None else strict
    nout = rec.nout
    ny = {"value": nout, "grad": 1 if value else 0, "jvp": nout, "hvp": 0, "hessian": 0}[kind]
    nd = {"value": 0, "grad": nin, "jvp": nout, "hvp": nin, "hessian": nin * nin}[kind]
    chunk = _chunk_size(rec, B, (0 if V is None else nin) + nin + ny + nd, threads, budget,
                        nin if kind == "hessian" else 1)
    Yall = np.empty((B, ny)) if ny else None
    Dall = np.empty((B, nd)) if nd else None
    base, segs = np.zeros(nin), np.array([[0, nin]], dtype=np.int64)
    fast = kind == "grad" and rec._grad_shape is not None and not value
    saved = rec.strict
    rec.strict = strict
    try:
        for lo in range(0, B, chunk):
            hi = min(B, lo + chunk)
            c = Chunk(base, X[lo:hi], segs, None if V is None else base,
                      None if V is None else V[lo:hi], None if V is None else segs)
            _run_chunk(rec, _KIND[kind], c, None if Yall is None else Yall[lo:hi],
                       None if Dall is None else Dall[lo:hi], 0, threads, fast, value, strict, fn)
    finally:
        rec.strict = saved
    return Yall, Dall


def run(rec, kind, args, tangents, in_axes, v_axes, threads, budget, strict, value, fn):
    """The batched replay behind Recorded.*_batch. Returns (values (B, nout) or None,
    derivatives (B, ncols) or None), the derivative columns restricted to argnums."""
    lay = Layout(rec)
    axes = _axes(in_axes, rec.nargs, fn)
    if len(args) != rec.nargs:
        raise TapegradTypeError(f"{fn}: the recorded function takes {rec.nargs} argument(s), got "
                                f"{len(args)}")
    xb = Batch(fn, "", args, axes, rec.in_shapes, lay.arg_leaves, _names(rec), rec.in_tree[1])
    diff = list(range(rec.nargs)) if rec.argnums is None else list(rec.argnums)
    vb = None
    if kind in ("jvp", "hvp"):
        if len(tangents) != len(diff):
            raise TapegradTypeError(f"{fn}: expected {len(diff)} tangent argument(s) (one per "
                                    f"differentiated argument), got {len(tangents)}")
        vaxes = _axes(v_axes, len(diff), fn)
        vb = Batch(fn, "tangent of", tangents, vaxes, rec.in_shapes,
                   [lay.arg_leaves[a] for a in diff], _names(rec, diff),
                   [rec.in_tree[1][a] for a in diff])
        if xb.B is not None and vb.B is not None and xb.B != vb.B:
            raise TapegradValueError(f"{fn}: mismatched batch sizes: the arguments have {xb.B} "
                                     f"points, the tangents {vb.B}")
    B = xb.B if xb.B is not None else (vb.B if vb is not None else None)
    if B is None:
        raise TapegradValueError(f"{fn}: no argument has a batch axis (in_axes={in_axes!r})")
    if kind in ("grad", "hvp") and rec.nout != 1:
        raise TapegradTypeError(f"{fn}: the recorded function returns shape {rec.out_shapes}, "
                                f"not a scalar")
    threads = default_threads() if threads is None else int(threads)
    if threads < 1:
        raise TapegradValueError(f"{fn}: threads must be at least 1, got {threads}")
    if strict is None:
        strict = rec.strict
    nin, nout = rec.nin, rec.nout
    cols = lay.diff_columns()
    inputs = kind in ("grad", "hvp")            # derivatives shaped like the inputs
    # the derivative entries kept: one contiguous range is written straight into the result
    span = inputs and (cols.size == 0 or np.all(np.diff(cols) == 1))
    d_lo = int(cols[0]) if span and cols.size else 0
    xbase, xsegs, xparts = xb.layout(lay.offsets, nin)
    if vb is not None:
        vbase, vsegs, vparts = vb.layout(lay.offsets, nin)
    ny = {"value": nout, "grad": 1 if value else 0, "jvp": nout, "hvp": 0}[kind]
    nd = {"value": 0, "grad": nin, "jvp": nout, "hvp": nin}[kind]
    nk = cols.size if inputs else nd
    # a chunk's staging per point: batched inputs and tangents, the work rows of values and
    # derivatives (all columns unless one range is kept)
    per_point = (sum(int(n) for _, n in xsegs) + (sum(int(n) for _, n in vsegs) if vb else 0)
                 + ny + (nk if span or not inputs else nd))
    chunk = _chunk_size(rec, B, per_point, threads, budget)
    Yall = np.empty((B, ny)) if ny else None
    Dall = np.empty((B, nk)) if nd else None
    fast = kind == "grad" and rec._grad_shape is not None and not value
    saved = rec.strict
    rec.strict = strict
    try:
        for lo in range(0, B, chunk):
            hi = min(B, lo + chunk)
            c = Chunk(xbase, Batch.rows(xparts, lo, hi), xsegs)
            if vb is not None:
                c.vbase, c.V, c.vsegs = vbase, Batch.rows(vparts, lo, hi), vsegs
            Y = Yall[lo:hi] if ny else None
            if not nd:
                D = None
            elif span or not inputs:
                D = Dall[lo:hi]
            else:
                D = np.empty((hi - lo, nin))
            _run_chunk(rec, _KIND[kind], c, Y, D, d_lo, threads, fast, value, strict, fn)
            if nd and inputs and not span:
                Dall[lo:hi] = D[:, cols]
    finally:
        rec.strict = saved
    return Yall, Dall


def unflat_out(rec, Y, B):
    """Values (B, nout) as the output pytree with a leading batch axis."""
    parts = _tree.split(Y, rec.out_shapes, [int(np.prod(s, dtype=int)) for s in rec.out_shapes],
                        lead=(B,))
    return _tree.unflatten(rec.out_tree, [p.copy() for p in parts])


def unflat_in(rec, D, B):
    """Derivatives (B, ncols) as the differentiated arguments with a leading batch axis: the
    single argument (or argnums an int), else a tuple."""
    if rec._simple:
        return D.reshape((B,) + tuple(rec.in_shapes[0]))
    lay = Layout(rec)
    diff = list(range(rec.nargs)) if rec.argnums is None else list(rec.argnums)
    leaves = lay.diff_leaves()
    parts = _tree.split(D, [rec.in_shapes[j] for j in leaves], [rec.in_sizes[j] for j in leaves],
                        lead=(B,))
    parts = [p.copy() for p in parts]
    trees, pos = [], 0
    for a in diff:
        k = len(lay.arg_leaves[a])
        trees.append(_tree.unflatten(rec.in_tree[1][a], parts[pos:pos + k]))
        pos += k
    single = (rec.argnums is None and rec.nargs == 1) or rec.argnum_int
    return trees[0] if single else tuple(trees)
