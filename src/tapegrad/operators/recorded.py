"""Record once, replay in C.

``record(f, *args)`` traces f once; the returned ``Recorded`` evaluates and differentiates f at
new inputs of the same structure and shapes by running the compiled sweeps alone (no Python per
operation). Guards recorded while tracing (a traced value that decided an ``if``, a mask that
chose elements) are checked after each forward sweep; if one flips, f is re-recorded at the new
input (or, with ``strict=True``, ``GuardError`` is raised), so a replay never returns the
derivative of a branch that was not taken. A few variants (one per branch pattern seen) are kept.

Work buffers are per thread (``threading.local``), never shared: several threads may replay one
``Recorded`` at once, and the sweeps release the GIL.

Serialization: ``to_bytes()`` writes every variant's tape with everything needed to replay it
without f (input/output shapes and pytree structure, the recording point) as JSON in the
tape's metadata; ``load(b)`` / ``Recorded.from_bytes(b)`` rebuild a replayable ``Recorded`` with
the same variants. Without f there is nothing to re-record, so a loaded ``Recorded`` is strict:
a guard flip that none of its variants matches raises ``GuardError``. Pickling goes through the same bytes and keeps f when f itself pickles.
"""
import base64
import pickle
import struct
import threading
import zlib

import numpy as np

from .._core import sweeps
from .._core.tape import Tape
from ..tracing import pytree as _tree
from ..tracing.tracer import Tracer
from ..engine.traced import Traced, GuardError, narrow_dtype, cast_tree, out_dtype
from . import sparse as _sparse
from . import batch as _batch
from ..errors import TapegradTypeError, TapegradValueError
from ..tracing.tracer import ComplexResult
from . import api as _api
from ..rules import calls as _calls

def _gradient_sweep(sweep, tape, *args):
    """sweep(tape, *args) of a sweep that ends in the reverse one, inside calls.reverse_follows
    when a rule of the tape keeps values for its adjoint (no context otherwise: the fast path of
    small tapes stays as fast)."""
    if tape.callbacks and _calls.keeps_for_adjoint(tape.callbacks):
        with _calls.reverse_follows():
            return sweep(tape, *args)
    return sweep(tape, *args)


_FORMAT = "tapegrad.Recorded"
_VERSION = 1


class Recorded:
    """A function recorded at example arguments, replayable at new ones.

    Replays compute in float64; derivatives follow the dtypes of each call's arguments as
    re-tracing does (tapegrad.grad): float32 arguments give float32 derivatives."""

    def __init__(self, f, *example_args, strict=False, max_variants=8, argnums=None):
        tr = Traced(f, example_args, None, None, False, "record")
        if tr.nested:
            raise TapegradValueError("record: the arguments are traced values of an enclosing derivative "
                             "operator; call grad/jvp on the function directly instead")
        self._setup(f, tr, len(example_args), strict, max_variants)
        self._set_argnums(argnums)

    def _set_argnums(self, argnums):
        """Which arguments grad, jvp, hvp (and their batched forms) differentiate: None (all)
        or an int or a tuple of ints; the others are data, replayed as inputs."""
        self.argnums, self.argnum_int = None, False
        if argnums is None:
            return
        one = isinstance(argnums, (int, np.integer))
        nums = (int(argnums),) if one else tuple(argnums)
        if (not nums or len(set(nums)) != len(nums)
                or any(not isinstance(a, (int, np.integer)) or not 0 <= a < self.nargs for a in nums)):
            raise TapegradValueError(f"record: argnums={argnums!r} must name distinct arguments "
                                     f"0..{self.nargs - 1}")
        self.argnums, self.argnum_int = tuple(int(a) for a in nums), one

    def _setup(self, f, tr, nargs, strict, max_variants):
        self.f = f
        self.strict = strict
        self.max_variants = max_variants
        self._variants = [tr]
        self.nargs = nargs
        self.in_tree, self.in_shapes, self.in_sizes = tr.in_tree, tr.in_shapes, tr.in_sizes
        self.nin = tr.nin
        self.out_tree, self.out_shapes, self.nout = tr.out_tree, tr.out_shapes, tr.nout
        self._simple = len(self.in_shapes) == 1 and self.nargs == 1
        # grad's fast path: one array argument, a scalar output
        leaf = self.in_tree[1][0] if self._simple and isinstance(self.in_tree, tuple) else None
        self._grad_shape = (tuple(self.in_shapes[0]) if isinstance(leaf, _tree.Leaf)
                            and not leaf.scalar and self.nout == 1 else None)
        # __call__'s fast path: one array argument, one array (or scalar) output
        self._value_shape = ((tuple(self.in_shapes[0]), tuple(self.out_shapes[0]))
                             if isinstance(leaf, _tree.Leaf) and not leaf.scalar
                             and isinstance(self.out_tree, _tree.Leaf) else None)
        self._local = threading.local()
        self.rerecords = 0
        self.argnums, self.argnum_int = None, False
        # a ComplexRecorded around this recording: which leaves are complex (to_bytes keeps it)
        self._complex_meta = None

    # ------------------------------------------------------------------ inputs
    def _flat(self, args, what="record"):
        if len(args) != self.nargs:
            raise TapegradTypeError(f"{what}: the recorded function takes {self.nargs} argument(s), "
                            f"got {len(args)}")
        if self._simple:
            a = args[0]
            if not (type(a) is np.ndarray and a.dtype == np.float64 and a.flags.c_contiguous):
                a = self._checked_array(a, 0, what)
            if a.shape != self.in_shapes[0]:
                raise TapegradValueError(f"{what}: expected an input of shape {self.in_shapes[0]}, "
                                 f"got shape {a.shape}")
            return a.reshape(-1)
        leaves, td = _tree.flatten(tuple(args))
        if len(leaves) != len(self.in_shapes) or td != self.in_tree:
            raise TapegradValueError(f"{what}: the arguments' structure differs from the recording")
        parts = []
        for i, (l, s) in enumerate(zip(leaves, self.in_shapes)):
            a = self._checked_array(l, i, what)
            if a.shape != tuple(s):
                raise TapegradValueError(f"{what}: expected input {i} of shape {tuple(s)}, got shape {a.shape}")
            parts.append(a)
        return _tree.join(parts)

    @staticmethod
    def _checked_array(a, i, what):
        if type(a) is Tracer or (isinstance(a, np.ndarray) and a.dtype.kind == "O" and any(
                type(e) is Tracer for e in a.reshape(-1).tolist())):
            raise TapegradTypeError(
                f"{what}: input {i} is a traced value (this replay runs inside a derivative "
                "operator); a replay computes numbers and would drop its derivative: call the "
                "function itself there")
        arr = np.asarray(a)
        if arr.dtype.kind not in "fiu":
            raise TapegradTypeError(f"{what}: input {i} has dtype {arr.dtype}; expected real numbers")
        arr = np.asarray(arr, dtype=np.float64)
        return arr if arr.flags.c_contiguous else arr.copy()

    def _dtypes(self, args):
        """Per input leaf of this call, the dtype its derivatives are given in (None: all
        float64); float32 inputs get float32 derivatives, as with re-tracing (api.grad)."""
        if self._simple:
            d = narrow_dtype(args[0])
            return None if d is None else [d]
        ds = [narrow_dtype(l) for l in _tree.flatten(tuple(args))[0]]
        return ds if any(d is not None for d in ds) else None

    def _out_cast(self, args, value):
        d = out_dtype(self._dtypes(args))
        if d is None:
            return value
        if isinstance(value, (float, np.floating)):     # a scalar output: a NumPy scalar
            return d[0].type(value)
        return cast_tree(value, [d] * len(_tree.flatten(value)[0]))

    def _args(self, x):
        return _tree.unflatten(self.in_tree, _tree.split(x, self.in_shapes, self.in_sizes, copy=True))

    def _kept(self, kind, tr, make):
        """This thread's buffers of one kind for variant tr, made by make(nwork) on first use.
        Fresh large buffers cost page faults on every call, so they are kept; those of variants
        no longer kept are dropped (they would keep their tapes alive: a leak of one tape and
        its buffers per re-recording)."""
        d = self._local.__dict__.setdefault(kind, {})
        b = d.get(id(tr))
        if b is None or b[0] is not tr:
            live = {id(v) for v in self._variants}
            for k in [k for k in d if k not in live]:
                del d[k]
            b = d[id(tr)] = (tr, make(max(tr.tape.nwork, 1)))
        return b[1]

    def _bufs(self, tr):
        """Values and adjoints."""
        return self._kept("bufs", tr, lambda n: (np.empty(n), np.empty(n)))

    def _clean_adjoints(self, tr):
        """Adjoints that are all zero between gradients (sweeps.value_and_grad's clean mode:
        no clearing of the whole buffer per call)."""
        return self._kept("clean_adjoints", tr, np.zeros)

    # ------------------------------------------------------------------ guarded forward
    def _select(self, x):
        """A variant whose guards hold at x, and its work buffer after the forward sweep."""
        for k, tr in enumerate(self._variants):
            w, _ = self._bufs(tr)
            sweeps.forward(tr.tape, x, w)
            if tr.tape.nguards == 0 or sweeps.guards_ok(tr.tape, w):
                if k:
                    self._variants.insert(0, self._variants.pop(k))
                return tr, w
        if self.strict:
            raise GuardError("replay: a recorded guard flipped (control flow depends on the "
                             "input differently than when recorded) and strict=True")
        tr = Traced(self.f, tuple(self._args(x)), None, None, False, "record")
        self.rerecords += 1
        self._variants.insert(0, tr)
        del self._variants[self.max_variants:]
        w, _ = self._bufs(tr)
        sweeps.forward(tr.tape, x, w)
        return tr, w

    def _out(self, tr, flat):
        out = _tree.unflatten(tr.out_tree, _tree.split(flat, tr.out_shapes, tr.out_sizes, copy=True))
        if isinstance(out, np.ndarray) and out.ndim == 0:
            return out[()]
        return out

    def _in(self, flat):
        if self._simple:
            if getattr(self.in_tree, "scalar", False):
                return float(flat[0])
            return flat.reshape(self.in_shapes[0])
        res = _tree.unflatten(self.in_tree, _tree.split(flat, self.in_shapes, self.in_sizes))
        return res[0] if self.nargs == 1 else res

    def _primals(self, x):
        """x is the single argument, or a tuple of all arguments."""
        return (x,) if self.nargs == 1 else tuple(x)

    # ------------------------------------------------------------------ public replay API
    def __call__(self, *args):
        if self._value_shape is not None and len(args) == 1:
            # one array in, one array out: the whole replay is one compiled call
            y = sweeps.value_fast(self._variants[0].tape, args[0], self._value_shape[0],
                                  self._value_shape[1])
            if y is not None:
                return y
        tr, w = self._select(self._flat(args))
        return self._out(tr, w[tr.out_off:tr.out_off + tr.nout])

    def value_and_grad(self, *args, out=None):
        """(f(args), gradient) for scalar f; ``out`` (shaped like the input) receives the gradient."""
        return self._value_and_grad(args, out, True)

    def _value_and_grad(self, args, out, value):
        # value=False: the sweep may skip work that only the value needs (the result's value
        # is then not used)
        if self.nout != 1:
            raise TapegradTypeError(f"grad: the recorded function returns shape {self.out_shapes}, not a scalar")
        x = self._flat(args, "grad")
        if out is not None and self.argnums is not None:
            raise TapegradValueError("grad: out= takes the whole flat gradient; it is not "
                                     "available with argnums")
        if out is not None:
            if not (isinstance(out, np.ndarray) and out.dtype == np.float64 and out.flags.c_contiguous
                    and out.size == self.nin):
                raise TapegradValueError(f"grad: out= must be a C-contiguous float64 array of {self.nin} values")
            g = out.reshape(-1)
        else:
            g = np.empty(self.nin)
        tr = self._variants[0]
        val, ok = _gradient_sweep(sweeps.value_and_grad, tr.tape, x, self._bufs(tr)[0],
                                  self._clean_adjoints(tr), g, value, True)
        if not ok:
            tr, w = self._select(x)
            wb = sweeps.reverse(tr.tape, w, np.ones(1), self._bufs(tr)[1])
            g[:] = wb[:self.nin]
            val = w[tr.out_off]
        return val, (out if out is not None else self._in_diff(g, args))

    def _in_diff(self, flat, args):
        """A flat input-shaped derivative as the differentiated arguments (see argnums), in
        the dtypes of this call's arguments (float32 in, float32 out)."""
        dt = self._dtypes(args)
        if self.argnums is None:
            return cast_tree(self._in(flat), dt)
        full = cast_tree(self._args(flat), dt)
        return full[self.argnums[0]] if self.argnum_int else tuple(full[a] for a in self.argnums)

    def _tangents(self, v):
        """Tangents of the differentiated arguments as the tuple of all arguments' tangents
        (zeros for the data arguments)."""
        if self.argnums is None:
            return self._primals(v)
        full = list(self._args(np.zeros(self.nin)))
        vs = (v,) if self.argnum_int else tuple(v)
        if len(vs) != len(self.argnums):
            raise TapegradTypeError(f"expected {len(self.argnums)} tangent(s), one per argument "
                                    f"in argnums={self.argnums}, got {len(vs)}")
        for a, t in zip(self.argnums, vs):
            full[a] = t
        return tuple(full)

    def grad(self, *args, out=None):
        if out is None and self._grad_shape is not None and len(args) == 1:
            # one array in: the whole replay is one compiled call (None: take the general path)
            g = _gradient_sweep(sweeps.grad_fast, self._variants[0].tape, args[0], self._grad_shape)
            if g is not None:
                return g
        return self._value_and_grad(args, out, False)[1]

    def vjp(self, x, u):
        """J(x)^T u, shaped like the inputs; u shaped like the output."""
        tr, w = self._select(self._flat(self._primals(x), "vjp"))
        seed = _tree.join(_tree.flatten(u)[0])
        if seed.size != tr.nout:
            raise TapegradValueError(f"vjp: expected a cotangent with {tr.nout} values, got {seed.size}")
        wb = sweeps.reverse(tr.tape, w, seed, self._bufs(tr)[1])    # this thread's kept buffer
        return self._in_diff(wb[:self.nin].copy(), self._primals(x))

    def jvp(self, x, v):
        """(f(x), J(x) v); v shaped like the inputs."""
        xf = self._flat(self._primals(x), "jvp")
        vf = self._flat(self._tangents(v), "jvp tangent")
        tr, w = self._select(xf)
        wd = sweeps.tangent(tr.tape, w, vf[None, :], self._lane_bufs(tr)[0])
        return (self._out(tr, w[tr.out_off:tr.out_off + tr.nout]),
                self._out_cast(self._primals(x), self._out(tr, wd[0, tr.out_off:tr.out_off + tr.nout])))

    def _hvp_lanes(self, tr, w, V):
        """H V (lanes of V) at the work buffer w: tangent, reverse, tangent-of-reverse sweeps.
        One lane (hvp) uses this thread's kept buffers for the variant."""
        if tr.nout != 1:
            raise TapegradValueError(f"hvp: the function must return a scalar, got shape {tr.out_shapes}")
        V = np.ascontiguousarray(V, dtype=np.float64)
        if V.shape[0] != 1:
            return sweeps.hvp(tr.tape, w, V).copy()
        return sweeps.hvp(tr.tape, w, V, *self._lane_bufs(tr)).copy()

    def _jac_buf(self, tr):
        """The (nin, nwork) tangent buffer of forward Jacobians, kept when it is at most 4 MB
        (None: a fresh one per call)."""
        if tr.nin * max(tr.tape.nwork, 1) > 1 << 19:
            return None
        return self._kept("jac_bufs", tr, lambda n: np.empty((tr.nin, n)))

    def _lane_bufs(self, tr):
        """One-lane tangents, adjoints and adjoint tangents (jvp, hvp)."""
        return self._kept("lane_bufs", tr,
                          lambda n: (np.empty((1, n)), np.empty(n), np.empty((1, n))))

    def hvp(self, x, v):
        """H(x) v for scalar f, by forward-over-reverse on the tape."""
        if self._grad_shape is not None and self.nout == 1:
            # one array in: a tape that is one fused elementwise tail summed runs as a single
            # tiled pass over x and v (None: take the general path)
            h = sweeps.hvp_fast(self._variants[0].tape, x, v, self._grad_shape)
            if h is not None:
                return h
        xf = self._flat(self._primals(x), "hvp")
        vf = self._flat(self._tangents(v), "hvp tangent")
        tr, w = self._select(xf)
        return self._in_diff(self._hvp_lanes(tr, w, vf[None, :])[0], self._primals(x))

    def hvp_matrix(self, x, V):
        """H(x) @ V for V of shape (in.size, k): k hvp lanes in one tangent-of-reverse sweep."""
        xf = self._flat(self._primals(x), "hvp_matrix")
        V = np.asarray(V, dtype=np.float64)
        if V.ndim != 2 or V.shape[0] != self.nin:
            raise TapegradValueError(f"hvp_matrix: V must have shape ({self.nin}, k), got "
                                     f"{V.shape}")
        tr, w = self._select(xf)
        return np.ascontiguousarray(self._hvp_lanes(tr, w, V.T).T)

    def jacobian(self, x, mode="auto"):
        """(out.size, in.size) shaped as out.shape + in.shape for one array in and out."""
        tr, w = self._select(self._flat(self._primals(x), "jacobian"))
        m = mode if mode != "auto" else ("fwd" if tr.nin < tr.nout else "rev")
        k = _lane_chunk(tr)
        if m == "fwd" and tr.nin > k:       # lanes in chunks: the buffers stay within budget
            J = np.empty((tr.nout, tr.nin))
            for j, E in _unit_chunks(tr.nin, k):
                wd = sweeps.tangent(tr.tape, w, E, unit=j)
                J[:, j:j + len(E)] = wd[:, tr.out_off:tr.out_off + tr.nout].T
        else:
            J = tr.jac_fwd(w, self._jac_buf(tr)) if m == "fwd" else tr.jac_rev(w)
        J = self._out_cast(self._primals(x), J)
        if len(self.in_shapes) == 1 and len(tr.out_shapes) == 1:
            return J.reshape(tuple(tr.out_shapes[0]) + tuple(self.in_shapes[0]))
        return J

    def hessian(self, x):
        tr, w = self._select(self._flat(self._primals(x), "hessian"))
        k = _lane_chunk(tr)
        if self.nin <= k:
            H = self._hvp_lanes(tr, w, np.eye(self.nin))
        else:                               # lanes in chunks: the buffers stay within budget
            H = np.empty((self.nin, self.nin))
            for j, E in _unit_chunks(self.nin, k):
                H[j:j + len(E)] = self._hvp_lanes(tr, w, E)
        s = tuple(self.in_shapes[0]) if len(self.in_shapes) == 1 else (self.nin,)
        return self._out_cast(self._primals(x), H.T.reshape(s + s).copy())

    # ------------------------------------------------------------------ batched replay
    # Many points per compiled call (operators/batch.py): every argument leaf carries a batch
    # axis (in_axes: 0, another axis, or None for an argument shared by all points; one entry
    # per argument, applying to all its leaves). threads: workers sweeping slices of the points
    # (default batch.THREADS or os.cpu_count()); budget: bytes of one chunk's staging and work
    # buffers (default batch.BUDGET); strict: raise GuardError instead of re-recording when a
    # point's branches differ from every variant (default: the Recorded's own). Results have a
    # leading batch axis and equal, bit for bit, a loop of one-point replays.
    def value_batch(self, *args, in_axes=0, threads=None, budget=None, strict=None):
        """f at every point: the output pytree with a leading batch axis."""
        Y, _ = self._run_batch("value", args, None, in_axes, 0, threads, budget, strict, True,
                               "value_batch")
        return _batch.unflat_out(self, Y, Y.shape[0])

    def grad_batch(self, *args, in_axes=0, threads=None, budget=None, strict=None):
        """The gradient at every point (of the argnums arguments), each leaf (B,) + shape:
        with in_axes=(None, 0, 0) and argnums=0, per-example gradients of f(w, x, y)."""
        _, D = self._run_batch("grad", args, None, in_axes, 0, threads, budget, strict, False,
                               "grad_batch")
        return _batch.unflat_in(self, D, D.shape[0])

    def value_and_grad_batch(self, *args, in_axes=0, threads=None, budget=None, strict=None):
        """(values (B,), gradients as grad_batch)."""
        Y, D = self._run_batch("grad", args, None, in_axes, 0, threads, budget, strict, True,
                               "value_and_grad_batch")
        return Y[:, 0].copy(), _batch.unflat_in(self, D, D.shape[0])

    def jvp_batch(self, x, v, in_axes=0, v_axes=0, threads=None, budget=None, strict=None):
        """(f(x_i), J(x_i) v_i) at every point, as jvp takes x and v (v: the argnums
        arguments' tangents, batched along v_axes)."""
        Y, D = self._run_batch("jvp", self._primals(x), self._tangent_args(v), in_axes, v_axes,
                               threads, budget, strict, True, "jvp_batch")
        return _batch.unflat_out(self, Y, Y.shape[0]), _batch.unflat_out(self, D, D.shape[0])

    def hvp_batch(self, x, v, in_axes=0, v_axes=0, threads=None, budget=None, strict=None):
        """H(x_i) v_i at every point (scalar f), shaped like the argnums arguments."""
        _, D = self._run_batch("hvp", self._primals(x), self._tangent_args(v), in_axes, v_axes,
                               threads, budget, strict, True, "hvp_batch")
        return _batch.unflat_in(self, D, D.shape[0])

    def hessian_batch(self, x, threads=None, budget=None, strict=None):
        """The Hessian at every point of one array argument batched on axis 0 (scalar f):
        shape (B,) + shape + shape, each as ``hessian`` gives it (its nin lanes per point)."""
        if self.nout != 1:
            raise TapegradTypeError(f"hessian_batch: the recorded function returns shape "
                                    f"{self.out_shapes}, not a scalar")
        res = _batch.run_simple(self, "hessian", x, None, threads, budget, strict, True,
                                "hessian_batch") if self._simple else None
        if res is None:
            s = tuple(self.in_shapes[0]) if self._simple else None
            raise TapegradValueError(f"hessian_batch: expected one array argument with a batch "
                                     f"axis first, shape (B,) + {s}, got "
                                     f"{getattr(x, 'shape', type(x).__name__)}")
        D = res[1]
        s = tuple(self.in_shapes[0])
        return D.reshape((D.shape[0],) + s + s)

    def _run_batch(self, kind, args, tangents, in_axes, v_axes, threads, budget, strict, value,
                   fn):
        if (self._simple and len(args) == 1 and isinstance(in_axes, int) and in_axes == 0
                and isinstance(v_axes, int) and v_axes == 0):
            res = _batch.run_simple(self, kind, args[0], tangents[0] if tangents else None,
                                    threads, budget, strict, value, fn)
            if res is not None:
                return res
        return _batch.run(self, kind, args, tangents, in_axes, v_axes, threads, budget, strict,
                          value, fn)

    def _tangent_args(self, v):
        """v as a tuple of one tangent per differentiated argument."""
        if self.argnums is None:
            return self._primals(v)
        return (v,) if self.argnum_int else tuple(v)

    # ------------------------------------------------------------------ sparse derivatives
    def jacobian_sparsity(self):
        """The (out.size, in.size) pattern of the Jacobian as a scipy.sparse CSR bool matrix,
        from the recorded tape's structure (no evaluation; see operators/sparse.py)."""
        return _sparse.jacobian_sparsity(self._variants[0])

    def hessian_sparsity(self):
        """The (in.size, in.size) pattern of the Hessian of a scalar output (CSR bool)."""
        return _sparse.hessian_sparsity(self._variants[0])

    def sparse_jacobian(self, x, mode="auto", sparsity=None, colors=None):
        """The Jacobian at x as CSR (out.size, in.size): one tangent lane (or reverse sweep) per
        color of the pattern's columns (rows), whichever needs fewer (``colors``: the pair from
        operators.sparse.jacobian_colors to reuse)."""
        tr, w = self._select(self._flat(self._primals(x), "sparse_jacobian"))
        return _sparse.sparse_jacobian(tr, w, sparsity, mode, colors)   # None: the variant's own

    def sparse_hessian(self, x, sparsity=None, colors=None):
        """The Hessian at x as CSR (in.size, in.size): one hvp lane per color (``colors``:
        a coloring of the pattern's columns to reuse, see operators.sparse.color_columns)."""
        tr, w = self._select(self._flat(self._primals(x), "sparse_hessian"))
        return _sparse.sparse_hessian(tr, w, self._hvp_lanes, sparsity, colors)

    # ------------------------------------------------------------------ inspection
    @property
    def tape(self):
        return self._variants[0].tape

    @property
    def variants(self):
        """The recorded variants (``Traced``, one per branch pattern seen), most recently used first."""
        return tuple(self._variants)

    def flat_input(self, x, what="record"):
        """x (the single argument, or a tuple of all arguments, as ``jvp`` takes them) checked
        against the recording and laid out as one flat float64 vector."""
        return self._flat(self._primals(x), what)

    def forward_at(self, x, what="record"):
        """(variant, work buffer) at x: the variant whose guards hold there (re-recorded if none
        does, as a replay would), after its forward sweep. The buffer is this thread's and is
        reused by the next replay: copy it to keep it."""
        return self._select(self.flat_input(x, what))

    @property
    def traced(self):
        return self._variants[0]

    def info(self):
        """Sizes of the current variant's tape, and how its sweeps run: ``tiled_runs``, the
        runs of elementwise ops swept tile by tile; ``fused_tail``, (first op, sum op) of the
        elementwise tail whose gradient runs fused (or None)."""
        t = self.tape
        return {"ops": t.nops, "work_slots": t.nwork, "constants": t.nconst,
                "guards": t.nguards, "tape_bytes": t.nbytes(), "work_bytes": 8 * t.nwork,
                "variants": len(self._variants), "rerecords": self.rerecords,
                "tiled_runs": len(t.segments()), "fused_tail": t.fused_tail()}

    # ------------------------------------------------------------------ serialization
    def _tape_bytes(self, tr):
        x0 = np.ascontiguousarray(getattr(tr, "recorded_x", np.zeros(tr.nin)), dtype="<f8")
        tr.tape.meta = {
            "format": _FORMAT, "version": _VERSION, "nargs": self.nargs,
            "in_tree": _tree_to_json(self.in_tree), "in_shapes": [list(s) for s in self.in_shapes],
            "out_tree": _tree_to_json(tr.out_tree), "out_shapes": [list(s) for s in tr.out_shapes],
            "strict": bool(self.strict), "x0": base64.b64encode(x0.tobytes()).decode("ascii"),
            "argnums": (None if self.argnums is None
                        else self.argnums[0] if self.argnum_int else list(self.argnums)),
        }
        if self._complex_meta is not None:
            tr.tape.meta["complex"] = self._complex_meta()
        return tr.tape.to_bytes()

    def to_bytes(self):
        """Every variant's tape (one per branch pattern seen, most recently used first) plus
        what a replay without f needs (see ``load``). One variant: the tape's own bytes; more:
        a container of them (magic, count, lengths, CRC32)."""
        parts = [self._tape_bytes(tr) for tr in self._variants]
        if len(parts) == 1:
            return parts[0]
        body = b"".join([_MULTI_MAGIC, struct.pack("<I", len(parts))]
                        + [struct.pack("<Q", len(p)) + p for p in parts])
        return body + struct.pack("<I", zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data, f=None, strict=None, max_work=None):
        """A ``Recorded`` from ``to_bytes()`` output, with all its variants. Without f it is
        strict (a guard flip that no variant matches raises ``GuardError``); with f it
        re-records on a flip unless ``strict``. Corrupt or hostile bytes raise ``ValueError``."""
        kw = {} if max_work is None else {"max_work": max_work}
        variants = [_variant_from_tape(Tape.from_bytes(p, **kw)) for p in _split_variants(data)]
        tr = variants[0]
        meta = tr.tape.meta
        for v in variants[1:]:
            m = v.tape.meta
            if (m["nargs"], m["in_tree"], m["in_shapes"]) != (meta["nargs"], meta["in_tree"],
                                                              meta["in_shapes"]):
                _bad("variants differ in their inputs")
        self = cls.__new__(cls)
        if strict is None:
            strict = True if f is None else bool(meta.get("strict", False))
        elif f is None and not strict:
            raise TapegradValueError("from_bytes: strict=False needs f (something to re-record)")
        self._setup(f, tr, meta["nargs"], strict, max(8, len(variants)))
        self._variants = variants
        argnums = meta.get("argnums")
        if argnums is not None and not isinstance(argnums, int):
            if not isinstance(argnums, list):
                _bad("argnums")
            argnums = tuple(argnums)
        try:
            self._set_argnums(argnums)
        except (TypeError, ValueError):
            _bad("argnums")
        return self

    def __reduce__(self):
        f = _picklable(self.f)
        nums = None if self.argnums is None else (self.argnums[0] if self.argnum_int
                                                  else self.argnums)
        return (_unpickle, (self.to_bytes(), f, self.strict if f is not None else True, nums))

    def __repr__(self):
        i = self.info()
        return (f"<Recorded {getattr(self.f, '__name__', 'f')}: {i['ops']} ops, "
                f"{i['work_slots']} slots, {i['tape_bytes']} bytes>")

    def wengert(self, *args):
        """The Wengert list (slot, operation, inputs, value); see ``tapegrad.inspect.wengert``."""
        return _view("wengert")(self, *args)

    def to_dot(self, **kw):
        """Graphviz DOT text of the computational graph; see ``tapegrad.inspect.to_dot``."""
        return _view("to_dot")(self, **kw)

    def draw(self, path, **kw):
        """Render the graph to ``path`` (PNG); see ``tapegrad.inspect.draw``."""
        return _view("draw")(self, path, **kw)


# Recorded.wengert / to_dot / draw are tapegrad.inspect's, which sits above this module: it
# installs them here at import.
_views = {}


LANE_BYTES = 1 << 26        # lane buffers of one dense Jacobian/Hessian sweep call (64 MB)


def _lane_chunk(tr):
    """Lanes per sweep call so that the three (lanes, nwork) buffers fit in LANE_BYTES."""
    return max(1, LANE_BYTES // (24 * max(tr.tape.nwork, 1)))


def _picklable(f):
    """f if it pickles, else None: a lambda, closure or local function is left out and the
    unpickled recording replays strictly without it."""
    try:
        pickle.dumps(f)
    except Exception:  # noqa: BLE001 (anything pickle raises)
        return None
    return f


def _unit_chunks(n, k):
    """(j, rows j..j+k of the n x n identity) for j = 0, k, 2k, ..."""
    for j in range(0, n, k):
        m = min(k, n - j)
        E = np.zeros((m, n))
        E[np.arange(m), j + np.arange(m)] = 1.0
        yield j, E


def install_views(**views):
    """Called once by tapegrad.inspect at import: wengert=, to_dot=, draw=."""
    _views.update(views)


def _view(name):
    v = _views.get(name)
    if v is None:
        raise RuntimeError(f"Recorded.{name} needs tapegrad.inspect (import tapegrad)")
    return v


def _unpickle(data, f, strict, argnums=None):
    r = Recorded.from_bytes(data, f=f, strict=strict)
    r._set_argnums(argnums)
    return r


def load(data, f=None, strict=None, max_work=None):
    """A replayable ``Recorded`` from ``Recorded.to_bytes()`` output (see ``Recorded.from_bytes``);
    a ``ComplexRecorded`` for a recording with complex arguments or outputs."""
    rec = Recorded.from_bytes(data, f=None if f is None else _placeholder, strict=strict,
                              max_work=max_work)
    meta = rec.tape.meta.get("complex")
    if meta is not None:
        return ComplexRecorded._from_recorded(rec, meta, f)
    rec.f = f
    return rec


# ---------------------------------------------------------------------- metadata (JSON)
def _tree_to_json(td):
    if isinstance(td, _tree.Leaf):
        return {"leaf": bool(td.scalar)}
    kind = td[0]
    if kind in ("tuple", "list"):
        return [kind, [_tree_to_json(c) for c in td[1]]]
    if kind == "dict":
        keys = []
        for k in td[1]:
            if type(k) is str:
                keys.append(["s", k])
            elif type(k) is int:
                keys.append(["i", k])
            else:
                raise TapegradTypeError(f"to_bytes: dict key {k!r} of the pytree is not a str or int")
        return ["dict", keys, [_tree_to_json(c) for c in td[2]]]
    return ["none"]


def _bad(what):
    raise TapegradValueError(f"Recorded.from_bytes: bad metadata ({what})")


def _tree_from_json(j, depth=0):
    """Inverse of _tree_to_json; also returns the number of leaves. Anything malformed: ValueError."""
    if depth > 100:
        _bad("pytree nested too deeply")
    if isinstance(j, dict):
        if set(j) != {"leaf"} or type(j["leaf"]) is not bool:
            _bad("pytree leaf")
        return _tree.Leaf(j["leaf"]), 1
    if not isinstance(j, list) or not j or j[0] not in ("tuple", "list", "dict", "none"):
        _bad("pytree node")
    if j[0] == "none":
        if len(j) != 1:
            _bad("pytree node")
        return ("none",), 0
    if j[0] in ("tuple", "list"):
        if len(j) != 2 or not isinstance(j[1], list):
            _bad("pytree node")
        kids = [_tree_from_json(c, depth + 1) for c in j[1]]
        return (j[0], [k for k, _ in kids]), sum(n for _, n in kids)
    if len(j) != 3 or not isinstance(j[1], list) or not isinstance(j[2], list) or len(j[1]) != len(j[2]):
        _bad("pytree dict")
    keys = []
    for k in j[1]:
        if not (isinstance(k, list) and len(k) == 2 and
                ((k[0] == "s" and type(k[1]) is str) or (k[0] == "i" and type(k[1]) is int))):
            _bad("pytree dict key")
        keys.append(k[1])
    if sorted(keys) != keys or len(set(keys)) != len(keys):
        _bad("pytree dict keys")
    kids = [_tree_from_json(c, depth + 1) for c in j[2]]
    return ("dict", keys, [k for k, _ in kids]), sum(n for _, n in kids)


def _shapes_from_json(j, what):
    if not isinstance(j, list):
        _bad(what)
    shapes = []
    for s in j:
        if not isinstance(s, list) or len(s) > 64 or any(type(d) is not int or d < 0 or d > 2**40
                                                         for d in s):
            _bad(what)
        shapes.append(tuple(s))
    return shapes


_MULTI_MAGIC = b"TGVARS\x01\x00"
_MAX_VARIANTS = 1 << 12


def _split_variants(data):
    """The tape bytes of each variant in ``to_bytes()`` output (one, or a container)."""
    data = bytes(data) if not isinstance(data, bytes) else data
    if not data.startswith(_MULTI_MAGIC):
        return [data]
    head = len(_MULTI_MAGIC)
    if len(data) < head + 8:
        _bad("truncated variant container")
    body, crc = data[:-4], struct.unpack("<I", data[-4:])[0]
    if zlib.crc32(body) != crc:
        _bad("variant container checksum mismatch")
    count = struct.unpack_from("<I", body, head)[0]
    if not 1 <= count <= _MAX_VARIANTS:
        _bad(f"variant count {count}")
    parts, pos = [], head + 4
    for _ in range(count):
        if pos + 8 > len(body):
            _bad("truncated variant container")
        n = struct.unpack_from("<Q", body, pos)[0]
        pos += 8
        if n > len(body) - pos:
            _bad("variant length runs past the end")
        parts.append(body[pos:pos + n])
        pos += n
    if pos != len(body):
        _bad("trailing bytes after the variants")
    return parts


def _variant_from_tape(tape):
    """A ``Traced`` (without a recorder) for a loaded tape, its metadata checked against it."""
    m = tape.meta
    if not isinstance(m, dict) or m.get("format") != _FORMAT:
        _bad("not a recorded function; use Tape.from_bytes for a bare tape")
    if m.get("version") != _VERSION:
        _bad(f"unsupported version {m.get('version')!r}")
    nargs = m.get("nargs")
    if type(nargs) is not int or nargs < 0 or type(m.get("strict")) is not bool:
        _bad("nargs/strict")
    in_tree, nleaves = _tree_from_json(m.get("in_tree"))
    out_tree, nout_leaves = _tree_from_json(m.get("out_tree"))
    if in_tree[0] != "tuple" or len(in_tree[1]) != nargs:
        _bad("input structure differs from nargs")
    in_shapes = _shapes_from_json(m.get("in_shapes"), "input shapes")
    out_shapes = _shapes_from_json(m.get("out_shapes"), "output shapes")
    if len(in_shapes) != nleaves or len(out_shapes) != nout_leaves:
        _bad("number of shapes differs from the pytree")
    in_sizes = [int(np.prod(s, dtype=object)) for s in in_shapes]
    out_sizes = [int(np.prod(s, dtype=object)) for s in out_shapes]
    if sum(in_sizes) != tape.nin or sum(out_sizes) != tape.out_n:
        _bad(f"shapes give {sum(in_sizes)} inputs and {sum(out_sizes)} outputs, the tape has "
             f"{tape.nin} and {tape.out_n}")
    try:
        x0 = np.frombuffer(base64.b64decode(m.get("x0"), validate=True), dtype="<f8")
    except (TypeError, ValueError) as e:
        _bad(f"recording point ({e})")
    if x0.size != tape.nin:
        _bad("recording point size")
    return Traced.loaded(tape, nargs, in_tree, in_shapes, in_sizes, out_tree, out_shapes, out_sizes,
                         x0.astype(np.float64))


def record(f, *example_args, strict=False, argnums=None):
    """Trace f at example_args once; returns a ``Recorded`` that replays in C.

    argnums (an int or a tuple): the arguments that grad, jvp and hvp (and their batched
    forms) differentiate; the others are data, replayed as inputs (so a batch over data, e.g.
    ``grad_batch(w, X, y, in_axes=(None, 0, 0))``, needs no re-recording). None: all."""
    try:
        return Recorded(f, *example_args, strict=strict, argnums=argnums)
    except ComplexResult:
        return ComplexRecorded(f, example_args, strict, argnums)


class ComplexRecorded:
    """A recording of f with complex arguments or outputs (docs/complex.md): f is recorded on
    the (re, im) pairs of its complex leaves, a real tape replayed by ``Recorded``; the methods
    apply the operators' convention (grad = df/dx - i df/dy, the non-conjugated vjp, the
    pushforward jvp, hvp the derivative of the gradient). Calls give complex values where the
    recording had them (a real number is taken as complex with zero imaginary part there).

    The argument positions are those of f (a complex leaf becomes a pair inside its argument),
    so ``argnums``, the batched replays (``in_axes`` one entry per argument) and guards are the
    real ``Recorded``'s; ``to_bytes`` adds which leaves are complex to the tapes' metadata and
    ``tg.load`` gives a ``ComplexRecorded`` back."""

    def __init__(self, f, example_args, strict=False, argnums=None):
        self.nargs = len(example_args)
        rargs, self._arg_masks, self._arg_tds = [], [], []
        for a in example_args:
            r, m, td = _api._realify(a)
            rargs.append(r)
            self._arg_masks.append(m)
            self._arg_tds.append(td)
        self._holder = {}
        self.f = f
        self._rec = Recorded(self._realified(f), *rargs, strict=strict, argnums=argnums)
        self._rec._complex_meta = self._meta
        self.recorded = self._rec

    def _realified(self, f):
        """f as a real function of the realified arguments, its complex outputs as pairs."""
        holder, masks, tds = self._holder, self._arg_masks, self._arg_tds

        def g(*rargs):
            res = f(*[_api._join(r, m, td, _api._cx.make) for r, m, td in zip(rargs, masks, tds)])
            leaves, otd = _tree.flatten(res)
            om = [_api._is_complex_leaf(l) for l in leaves]
            holder["out"] = (om, otd)
            return _tree.unflatten(otd, [_api._split(l) if c else l for l, c in zip(leaves, om)])
        g.__name__ = getattr(f, "__name__", "f")
        return g

    # ------------------------------------------------------------------ the boundary
    def _real_arg(self, a, i, what):
        leaves, td = _tree.flatten(a)
        if td != self._arg_tds[i]:
            raise TapegradValueError(f"{what}: argument {i} does not have the recorded structure")
        new = []
        for l, m in zip(leaves, self._arg_masks[i]):
            if m:
                new.append(_api._split(l) if _api._is_complex_leaf(l) else (l, np.zeros(np.shape(l))))
            elif _api._is_complex_leaf(l):
                raise TapegradTypeError(f"{what}: a complex value where the recording had a real one "
                                        f"(argument {i}; record again with a complex example)")
            else:
                new.append(l)
        return _tree.unflatten(td, new)

    def _real_args(self, args, what, nums=None):
        """The realified arguments nums (default: all)."""
        nums = range(self.nargs) if nums is None else nums
        if len(args) != len(nums):
            raise TapegradTypeError(f"{what}: expected {len(nums)} argument(s), got {len(args)}")
        return tuple(self._real_arg(a, i, what) for a, i in zip(args, nums))

    def _diff_nums(self):
        r = self._rec
        return tuple(range(self.nargs)) if r.argnums is None else r.argnums

    def _single(self):
        r = self._rec
        return r.argnum_int if r.argnums is not None else self.nargs == 1

    def _primals(self, x):
        return (x,) if self.nargs == 1 else tuple(x)

    def _unpack(self, rx):
        return rx[0] if self.nargs == 1 else rx

    def _tangents(self, v, what):
        """Realified tangents of the differentiated arguments, as the real replay takes them."""
        nums = self._diff_nums()
        vs = (v,) if self._single() else tuple(v)
        rv = self._real_args(vs, what, nums)
        return rv[0] if self._single() else rv

    def _out(self, out_r):
        m, td = self._holder["out"]
        return _api._join(out_r, m, td, _api._complex_leaf)

    def _in(self, g_r):
        """Derivatives of the differentiated arguments back from pairs (df/dx - i df/dy)."""
        nums = self._diff_nums()
        gs = (g_r,) if self._single() else tuple(g_r)
        res = tuple(_api._join(g, self._arg_masks[i], self._arg_tds[i], _api._grad_leaf)
                    for g, i in zip(gs, nums))
        return res[0] if self._single() else res

    def _real_output(self, what):
        if any(self._holder["out"][0]):
            raise TapegradTypeError(f"{what}: the recorded function returns a complex value; {what} "
                                    "takes real-valued functions (use vjp)")

    def _cotangent(self, u):
        m, td = self._holder["out"]
        leaves, _ = _tree.flatten(u)
        if len(leaves) != len(m):
            raise TapegradValueError("vjp: the cotangent does not have the structure of the output")
        ct = []
        for c, cm in zip(leaves, m):
            if cm:
                re, im = _api._split(c) if _api._is_complex_leaf(c) else (c, np.zeros(np.shape(c)))
                ct.append((re, -im))
            elif _api._is_complex_leaf(c):
                raise TapegradTypeError("vjp: a complex cotangent for a real output")
            else:
                ct.append(c)
        return _tree.unflatten(td, ct)

    # ------------------------------------------------------------------ replay
    @property
    def argnums(self):
        r = self._rec
        return None if r.argnums is None else (r.argnums[0] if r.argnum_int else r.argnums)

    @property
    def strict(self):
        return self._rec.strict

    @property
    def tape(self):
        return self._rec.tape

    @property
    def rerecords(self):
        return self._rec.rerecords

    def info(self):
        return self._rec.info()

    def __call__(self, *args):
        return self._out(self._rec(*self._real_args(args, "call")))

    def value_and_grad(self, *args, out=None):
        self._real_output("grad")
        if out is not None:
            raise TapegradValueError("grad: out= is not available for complex recordings")
        v, g = self._rec.value_and_grad(*self._real_args(args, "grad"))
        return v, self._in(g)

    def grad(self, *args, out=None):
        return self.value_and_grad(*args, out=out)[1]

    def vjp(self, x, u):
        rx = self._real_args(self._primals(x), "vjp")
        return self._in(self._rec.vjp(self._unpack(rx), self._cotangent(u)))

    def jvp(self, x, v):
        rx = self._real_args(self._primals(x), "jvp")
        out, dot = self._rec.jvp(self._unpack(rx), self._tangents(v, "jvp tangent"))
        return self._out(out), self._out(dot)

    def hvp(self, x, v):
        """The derivative of the gradient (df/dx - i df/dy) along v."""
        self._real_output("hvp")
        rx = self._real_args(self._primals(x), "hvp")
        return self._in(self._rec.hvp(self._unpack(rx), self._tangents(v, "hvp tangent")))

    # ------------------------------------------------------------------ batched replay
    # As Recorded's (in_axes: one entry per argument, for all its leaves; the pairs of a
    # complex leaf share it). Results equal a loop of one-point replays bit for bit.
    def value_batch(self, *args, in_axes=0, threads=None, budget=None, strict=None):
        """f at every point: the output pytree with a leading batch axis."""
        return self._out(self._rec.value_batch(*self._real_args(args, "value_batch"), in_axes=in_axes,
                                               threads=threads, budget=budget, strict=strict))

    def grad_batch(self, *args, in_axes=0, threads=None, budget=None, strict=None):
        """The gradient (df/dx - i df/dy) at every point, each leaf (B,) + shape."""
        self._real_output("grad_batch")
        return self._in(self._rec.grad_batch(*self._real_args(args, "grad_batch"), in_axes=in_axes,
                                             threads=threads, budget=budget, strict=strict))

    def value_and_grad_batch(self, *args, in_axes=0, threads=None, budget=None, strict=None):
        self._real_output("value_and_grad_batch")
        v, g = self._rec.value_and_grad_batch(*self._real_args(args, "value_and_grad_batch"),
                                              in_axes=in_axes, threads=threads, budget=budget,
                                              strict=strict)
        return v, self._in(g)

    def jvp_batch(self, x, v, in_axes=0, v_axes=0, threads=None, budget=None, strict=None):
        """(f(x_i), J(x_i) v_i) at every point, as jvp takes x and v."""
        rx = self._real_args(self._primals(x), "jvp_batch")
        out, dot = self._rec.jvp_batch(self._unpack(rx), self._tangents(v, "jvp_batch tangent"),
                                       in_axes=in_axes, v_axes=v_axes, threads=threads,
                                       budget=budget, strict=strict)
        return self._out(out), self._out(dot)

    def hvp_batch(self, x, v, in_axes=0, v_axes=0, threads=None, budget=None, strict=None):
        """The hvp (the derivative of df/dx - i df/dy along v_i) at every point."""
        self._real_output("hvp_batch")
        rx = self._real_args(self._primals(x), "hvp_batch")
        return self._in(self._rec.hvp_batch(self._unpack(rx), self._tangents(v, "hvp_batch tangent"),
                                            in_axes=in_axes, v_axes=v_axes, threads=threads,
                                            budget=budget, strict=strict))

    def jacobian(self, x, mode="auto", holomorphic=False):
        """The Jacobian by JAX's jacfwd/jacrev rules, as tapegrad.jacobian gives it (rev: a
        real output's rows df/dx - i df/dy; fwd: real inputs, a complex output;
        holomorphic=True: the complex Jacobian), from the real recording's Jacobian of the
        pairs. Shaped out.shape + in.shape for one array argument, else (out.size, in.size)
        over every argument's leaves in order (complex leaves count their complex entries)."""
        om, otd = self._holder["out"]
        if len(om) != 1:
            raise TapegradTypeError("jacobian: the recorded function must return a single array")
        masks = [m for ms in self._arg_masks for m in ms]
        _api._check_complex_inputs(masks, mode, holomorphic)
        c = om[0]
        _api._check_complex_output(c, masks, mode, holomorphic)
        m = _api._complex_jacobian_mode(masks, mode, holomorphic)
        xs = self._primals(x)
        rx = self._real_args(xs, "jacobian")
        rec = self._rec
        Jr = np.reshape(rec.jacobian(self._unpack(rx), m), (rec.nout, rec.nin))
        oshape = tuple(rec.out_shapes[0])       # a complex output: (re, im) stacked first
        lead = ((2,) if c else ()) + oshape
        Jr = Jr.reshape(lead + (rec.nin,))
        leaves = _tree.flatten(tuple(xs))[0]
        dtype = _api._complex_dtype(*leaves)
        blocks, col, k = [], 0, 0
        for mk in masks:
            s = tuple(rec.in_shapes[k])
            n = int(np.prod(s, dtype=int))
            cut = lambda a: Jr[..., a:a + n].reshape(lead + s)   # noqa: E731
            if mk:
                J, col, k = (cut(col), cut(col + n)), col + 2 * n, k + 2
            else:
                J, col, k = cut(col), col + n, k + 1
            blocks.append(_api._complex_jacobian_block(J, mk, c, m == "rev", dtype))
        if len(blocks) == 1:
            return np.asarray(blocks[0])
        size = int(np.prod(oshape, dtype=int))
        return np.concatenate([np.reshape(b, (size, -1)) for b in blocks], axis=1)

    def _holomorphic_u(self, what, holomorphic, p):
        """The real recording of u = Re f over the stacked pairs p = (x, y) of the one complex
        argument (recorded at the first call, from f), for the complex Hessian of a holomorphic
        f (tapegrad.hessian(f, holomorphic=True)'s rule, on a tape that replays)."""
        if not holomorphic:
            raise TapegradTypeError(
                f"{what}: a recording with complex arguments or outputs takes holomorphic=True (a "
                "holomorphic, complex-valued f of one complex array, as in JAX); for a real f of "
                "complex z use hvp, or .recorded, the real recording of the (re, im) pairs")
        om, otd = self._holder["out"]
        if self.nargs != 1 or self._arg_masks[0] != [True] or om != [True]:
            raise TapegradTypeError(f"{what}(holomorphic=True): the recorded function must take one "
                                    "complex array and return one complex value (as in JAX)")
        u = getattr(self, "_u_rec", None)
        if u is None:
            if self.f is None:
                raise TapegradTypeError(f"{what}(holomorphic=True): this loaded recording has no "
                                        "Python function to record Re f from; load it with f")
            f, td = self.f, self._arg_tds[0]

            def re_f(p):
                return _api._split(f(_tree.unflatten(td, [_api._cx.make(p[0], p[1])])))[0]
            re_f.__name__ = getattr(f, "__name__", "f")
            self._u_rec = u = Recorded(re_f, p, strict=self.strict)
        return u

    @staticmethod
    def _pairs(z, what, axis=0):
        """(x, y) of a complex (or real) array, stacked on axis."""
        if _api._is_complex_leaf(z):
            re, im = _api._split(z)
        else:
            re = np.asarray(z)
            if re.dtype.kind not in "fiu":
                raise TapegradTypeError(f"{what}: expected a complex array, got {re.dtype}")
            im = np.zeros(re.shape)
        return np.stack([np.asarray(re, dtype=np.float64), np.asarray(im, dtype=np.float64)], axis=axis)

    @staticmethod
    def _from_u_hessian(H, n, s, dtype, lead=()):
        """f'' from the real Hessian H of u over (x, y) (Cauchy-Riemann: f'' = d/dx (du/dx -
        i du/dy), so entry (i, j) is H[x_i, x_j] - i H[y_i, x_j])."""
        H = H.reshape(lead + (2 * n, 2 * n))
        F = H[..., :n, :n] - 1j * H[..., n:, :n]
        return F.reshape(lead + s + s).astype(dtype)

    def hessian(self, x, holomorphic=False):
        """The complex Hessian d^2 f / dz_i dz_j of a holomorphic, complex-valued f of one
        complex array (holomorphic=True, as tapegrad.hessian and JAX's hessian give it), from
        the replayed real Hessian of Re f over the pairs."""
        p = self._pairs(x, "hessian")
        u = self._holomorphic_u("hessian", holomorphic, p)
        s = tuple(self._rec.in_shapes[0])
        n = int(np.prod(s, dtype=int))
        H = u.hessian(p)
        return self._from_u_hessian(H, n, s, _api._complex_dtype(x))

    def hessian_batch(self, x, holomorphic=False, threads=None, budget=None, strict=None):
        """hessian(x_i, holomorphic=True) at every point of x, batched on axis 0:
        shape (B,) + shape + shape."""
        s = tuple(self._rec.in_shapes[0])
        n = int(np.prod(s, dtype=int))
        P = self._pairs(x, "hessian_batch", axis=1)
        if P.ndim != len(s) + 2 or P.shape[2:] != s or P.shape[0] == 0:
            raise TapegradValueError(f"hessian_batch: expected one complex array with a batch axis "
                                     f"first, shape (B,) + {s}, got {P.shape[:1] + P.shape[2:]}")
        u = self._holomorphic_u("hessian_batch", holomorphic, P[0])
        H = u.hessian_batch(P, threads=threads, budget=budget, strict=strict)
        return self._from_u_hessian(H, n, s, _api._complex_dtype(x), (P.shape[0],))

    # ------------------------------------------------------------------ serialization
    def _meta(self):
        """What a load needs besides the real recording: which leaves are complex."""
        om, otd = self._holder["out"]
        return {"args": [{"tree": _tree_to_json(td), "complex": [bool(b) for b in m]}
                         for m, td in zip(self._arg_masks, self._arg_tds)],
                "out": {"tree": _tree_to_json(otd), "complex": [bool(b) for b in om]}}

    def to_bytes(self):
        """The real recording's bytes (every variant), whose metadata says which leaves of
        the arguments and outputs are complex; ``tg.load`` gives a ``ComplexRecorded``."""
        return self._rec.to_bytes()

    @classmethod
    def _from_recorded(cls, rec, meta, f=None):
        """A ComplexRecorded around a loaded real recording, its metadata checked against it."""
        if not isinstance(meta, dict) or set(meta) != {"args", "out"} or not isinstance(meta["args"], list):
            _bad("complex layout")
        if len(meta["args"]) != rec.nargs:
            _bad("complex layout: number of arguments")
        self = cls.__new__(cls)
        self.nargs, self._arg_masks, self._arg_tds, self._holder = rec.nargs, [], [], {}
        for j, r in zip(meta["args"], rec.in_tree[1]):
            td, m = _complex_layout(j)
            if not _same_shape(_realified_td(td, m), r):
                _bad("complex layout differs from the recorded inputs")
            self._arg_masks.append(m)
            self._arg_tds.append(td)
        otd, om = _complex_layout(meta["out"])
        if any(not _same_shape(_realified_td(otd, om), v.out_tree) for v in rec.variants):
            _bad("complex layout differs from the recorded outputs")
        self._holder["out"] = (om, otd)
        self.f = f
        if f is not None:
            rec.f = self._realified(f)
        self._rec = self.recorded = rec
        rec._complex_meta = self._meta
        return self

    @classmethod
    def from_bytes(cls, data, f=None, strict=None, max_work=None):
        """A ``ComplexRecorded`` from ``to_bytes()`` output (see ``Recorded.from_bytes``)."""
        rec = Recorded.from_bytes(data, f=None if f is None else _placeholder, strict=strict,
                                  max_work=max_work)
        meta = rec.tape.meta.get("complex")
        if meta is None:
            raise TapegradValueError("ComplexRecorded.from_bytes: a recording without complex "
                                     "values; use tg.load")
        return cls._from_recorded(rec, meta, f)

    def __reduce__(self):
        f = _picklable(self.f)
        return (_unpickle_complex, (self.to_bytes(), f, self.strict if f is not None else True))

    def __repr__(self):
        i = self.info()
        return (f"<ComplexRecorded {getattr(self.f, '__name__', 'f')}: {i['ops']} ops on the "
                f"(re, im) pairs, {i['work_slots']} slots>")


def _placeholder(*args):
    raise RuntimeError("re-recording needs the complex function")      # replaced at once


def _unpickle_complex(data, f, strict):
    return ComplexRecorded.from_bytes(data, f=f, strict=strict)


def _complex_layout(j):
    if not isinstance(j, dict) or set(j) != {"tree", "complex"} or not isinstance(j["complex"], list) \
            or any(type(b) is not bool for b in j["complex"]):
        _bad("complex layout")
    td, n = _tree_from_json(j["tree"])
    if n != len(j["complex"]):
        _bad("complex layout: mask length")
    return td, list(j["complex"])


def _realified_td(td, mask):
    """The treedef of a tree with its complex leaves (mask) as (re, im) pairs."""
    it = iter(mask)

    def walk(t):
        if isinstance(t, _tree.Leaf):
            return ("tuple", [t, t]) if next(it) else t
        if t[0] in ("tuple", "list"):
            return (t[0], [walk(c) for c in t[1]])
        if t[0] == "dict":
            return ("dict", t[1], [walk(c) for c in t[2]])
        return t
    return walk(td)


def _same_shape(a, b):
    """Equal treedefs up to the Leaf scalar flags (a pair's parts may be Python floats)."""
    if isinstance(a, _tree.Leaf) or isinstance(b, _tree.Leaf):
        return isinstance(a, _tree.Leaf) and isinstance(b, _tree.Leaf)
    if a[0] != b[0] or len(a) != len(b):
        return False
    if a[0] in ("tuple", "list"):
        return len(a[1]) == len(b[1]) and all(_same_shape(x, y) for x, y in zip(a[1], b[1]))
    if a[0] == "dict":
        return list(a[1]) == list(b[1]) and len(a[2]) == len(b[2]) and all(
            _same_shape(x, y) for x, y in zip(a[2], b[2]))
    return True


class Compiled:
    """f with one recorded tape per input signature (structure and shapes). ``argnums``: the
    arguments grad, jvp and hvp differentiate (see ``record``); the others are data, so a new
    data shard of the same shape replays the same tape and another shape records a new one."""

    def __init__(self, f, strict=False, argnums=None):
        self.f = f
        self.strict = strict
        self.argnums = argnums
        self._cache = {}
        self._lock = threading.Lock()
        self.__name__ = getattr(f, "__name__", "f")
        self.__doc__ = getattr(f, "__doc__", None)

    def recorded(self, *args):
        leaves, td = _tree.flatten(tuple(args))
        key = (repr(td), tuple(np.shape(l) for l in leaves))
        r = self._cache.get(key)
        if r is None:
            with self._lock:
                r = self._cache.get(key)
                if r is None:
                    r = self._cache[key] = record(self.f, *args, strict=self.strict,
                                                  argnums=self.argnums)
        return r

    def __call__(self, *args):
        return self.recorded(*args)(*args)

    def grad(self, *args, out=None):
        return self.recorded(*args).grad(*args, out=out)

    def value_and_grad(self, *args, out=None):
        return self.recorded(*args).value_and_grad(*args, out=out)

    def _one(self, x):
        return (x,) if not isinstance(x, tuple) else x

    def vjp(self, x, u):
        return self.recorded(*self._one(x)).vjp(x, u)

    def jvp(self, x, v):
        return self.recorded(*self._one(x)).jvp(x, v)

    def hvp(self, x, v):
        return self.recorded(*self._one(x)).hvp(x, v)

    def jacobian(self, x, mode="auto"):
        return self.recorded(*self._one(x)).jacobian(x, mode)

    def hessian(self, x, holomorphic=False):
        r = self.recorded(*self._one(x))
        if isinstance(r, ComplexRecorded):
            return r.hessian(x, holomorphic=holomorphic)
        if holomorphic:
            raise TapegradTypeError("hessian(holomorphic=True): the differentiated input must be "
                                    "complex (as in JAX); give z + 0j for a real point")
        return r.hessian(x)


def compile(f=None, *, strict=False, argnums=None):  # noqa: A001  (mirrors jax.jit / torch.compile)
    """Decorator: keep one tape per input signature and replay it (see ``Compiled``)."""
    if f is None:
        return lambda g: Compiled(g, strict=strict, argnums=argnums)
    return Compiled(f, strict=strict, argnums=argnums)
