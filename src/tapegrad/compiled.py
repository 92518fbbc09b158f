"""Record once, replay in C.

``record(f, *args)`` traces f once; the returned ``Recorded`` evaluates and differentiates f at
new inputs of the same structure and shapes by running the compiled sweeps alone (no Python per
operation). Guards recorded while tracing (a traced value that decided an ``if``, a mask that
chose elements) are checked after each forward sweep; if one flips, f is re-recorded at the new
input (or, with ``strict=True``, ``GuardError`` is raised), so a replay never returns the
derivative of a branch that was not taken. A few variants (one per branch pattern seen) are kept.

Work buffers are per thread (``threading.local``), never shared: several threads may replay one
``Recorded`` at once, and the sweeps release the GIL.
"""
import threading

import numpy as np

from ._core import sweeps
from . import _tree
from .api import Traced, GuardError


class Recorded:
    """A function recorded at example arguments, replayable at new ones."""

    def __init__(self, f, *example_args, strict=False, max_variants=8):
        self.f = f
        self.strict = strict
        self.max_variants = max_variants
        tr = Traced(f, example_args, None, None, False, "record")
        if tr.nested:
            raise ValueError("record: the arguments are traced values of an enclosing derivative "
                             "operator; call grad/jvp on the function directly instead")
        self._variants = [tr]
        self.nargs = len(example_args)
        self.in_tree, self.in_shapes, self.in_sizes = tr.in_tree, tr.in_shapes, tr.in_sizes
        self.nin = tr.nin
        self.out_tree, self.out_shapes, self.nout = tr.out_tree, tr.out_shapes, tr.nout
        self._simple = len(self.in_shapes) == 1 and self.nargs == 1
        self._local = threading.local()
        self.rerecords = 0

    # ------------------------------------------------------------------ inputs
    def _flat(self, args, what="record"):
        if len(args) != self.nargs:
            raise TypeError(f"{what}: the recorded function takes {self.nargs} argument(s), "
                            f"got {len(args)}")
        if self._simple:
            a = args[0]
            if not (type(a) is np.ndarray and a.dtype == np.float64 and a.flags.c_contiguous):
                a = self._checked_array(a, 0, what)
            if a.shape != self.in_shapes[0]:
                raise ValueError(f"{what}: expected an input of shape {self.in_shapes[0]}, "
                                 f"got shape {a.shape}")
            return a.reshape(-1)
        leaves, td = _tree.flatten(tuple(args))
        if len(leaves) != len(self.in_shapes) or td != self.in_tree:
            raise ValueError(f"{what}: the arguments' structure differs from the recording")
        parts = []
        for i, (l, s) in enumerate(zip(leaves, self.in_shapes)):
            a = self._checked_array(l, i, what)
            if a.shape != tuple(s):
                raise ValueError(f"{what}: expected input {i} of shape {tuple(s)}, got shape {a.shape}")
            parts.append(a.reshape(-1))
        return np.concatenate(parts) if parts else np.zeros(0)

    @staticmethod
    def _checked_array(a, i, what):
        arr = np.asarray(a)
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"{what}: input {i} has dtype {arr.dtype}; expected real numbers")
        arr = np.asarray(arr, dtype=np.float64)
        return arr if arr.flags.c_contiguous else arr.copy()

    def _args(self, x):
        parts, pos = [], 0
        for s, n in zip(self.in_shapes, self.in_sizes):
            parts.append(x[pos:pos + n].reshape(s).copy())
            pos += n
        return _tree.unflatten(self.in_tree, parts)

    def _bufs(self, tr):
        d = getattr(self._local, "bufs", None)
        if d is None:
            d = self._local.bufs = {}
        b = d.get(id(tr))
        if b is None or b[0] is not tr:
            n = max(tr.tape.nwork, 1)
            b = d[id(tr)] = (tr, np.empty(n), np.empty(n))
        return b[1], b[2]

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
        res, pos = [], 0
        for s in tr.out_shapes:
            n = int(np.prod(s))
            res.append(flat[pos:pos + n].reshape(s).copy())
            pos += n
        out = _tree.unflatten(tr.out_tree, res)
        if isinstance(out, np.ndarray) and out.ndim == 0:
            return out[()]
        return out

    def _in(self, flat):
        if self._simple:
            if getattr(self.in_tree, "scalar", False):
                return float(flat[0])
            return flat.reshape(self.in_shapes[0])
        res = _tree.unflatten(self.in_tree, [p for p in self._split(flat)])
        return res[0] if self.nargs == 1 else res

    def _split(self, flat):
        pos = 0
        for s, n in zip(self.in_shapes, self.in_sizes):
            yield flat[pos:pos + n].reshape(s)
            pos += n

    def _primals(self, x):
        """x is the single argument, or a tuple of all arguments."""
        return (x,) if self.nargs == 1 else tuple(x)

    # ------------------------------------------------------------------ public replay API
    def __call__(self, *args):
        tr, w = self._select(self._flat(args))
        return self._out(tr, w[tr.out_off:tr.out_off + tr.nout])

    def value_and_grad(self, *args, out=None):
        """(f(args), gradient) for scalar f; ``out`` (shaped like the input) receives the gradient."""
        if self.nout != 1:
            raise TypeError(f"grad: the recorded function returns shape {self.out_shapes}, not a scalar")
        x = self._flat(args, "grad")
        if out is not None:
            if not (isinstance(out, np.ndarray) and out.dtype == np.float64 and out.flags.c_contiguous
                    and out.size == self.nin):
                raise ValueError(f"grad: out= must be a C-contiguous float64 array of {self.nin} values")
            g = out.reshape(-1)
        else:
            g = np.empty(self.nin)
        tr = self._variants[0]
        w, wb = self._bufs(tr)
        val, ok = sweeps.value_and_grad(tr.tape, x, w, wb, g)
        if not ok:
            tr, w = self._select(x)
            wb = sweeps.reverse(tr.tape, w, np.ones(1))
            g[:] = wb[:self.nin]
            val = w[tr.out_off]
        return val, (out if out is not None else self._in(g))

    def grad(self, *args, out=None):
        return self.value_and_grad(*args, out=out)[1]

    def vjp(self, x, u):
        """J(x)^T u, shaped like the inputs; u shaped like the output."""
        tr, w = self._select(self._flat(self._primals(x), "vjp"))
        seed = np.concatenate([np.ravel(np.asarray(l, dtype=np.float64)) for l in _tree.flatten(u)[0]])
        if seed.size != tr.nout:
            raise ValueError(f"vjp: expected a cotangent with {tr.nout} values, got {seed.size}")
        wb = sweeps.reverse(tr.tape, w, seed)
        return self._in(wb[:self.nin].copy())

    def jvp(self, x, v):
        """(f(x), J(x) v); v shaped like the inputs."""
        xf = self._flat(self._primals(x), "jvp")
        vf = self._flat(self._primals(v), "jvp tangent")
        tr, w = self._select(xf)
        wd = sweeps.tangent(tr.tape, w, vf[None, :])
        return (self._out(tr, w[tr.out_off:tr.out_off + tr.nout]),
                self._out(tr, wd[0, tr.out_off:tr.out_off + tr.nout]))

    def hvp(self, x, v):
        """H(x) v for scalar f, by forward-over-reverse on the tape."""
        xf = self._flat(self._primals(x), "hvp")
        vf = self._flat(self._primals(v), "hvp tangent")
        tr, w = self._select(xf)
        tr._w = w.copy()
        return self._in(tr.hvp_lanes(vf[None, :])[0])

    def jacobian(self, x, mode="auto"):
        """(out.size, in.size) shaped as out.shape + in.shape for one array in and out."""
        tr, w = self._select(self._flat(self._primals(x), "jacobian"))
        tr._w = w.copy()
        m = mode if mode != "auto" else ("fwd" if tr.nin < tr.nout else "rev")
        J = tr.jac_fwd() if m == "fwd" else tr.jac_rev()
        if len(self.in_shapes) == 1 and len(tr.out_shapes) == 1:
            return J.reshape(tuple(tr.out_shapes[0]) + tuple(self.in_shapes[0]))
        return J

    def hessian(self, x):
        tr, w = self._select(self._flat(self._primals(x), "hessian"))
        tr._w = w.copy()
        H = tr.hvp_lanes(np.eye(self.nin))
        s = tuple(self.in_shapes[0]) if len(self.in_shapes) == 1 else (self.nin,)
        return H.T.reshape(s + s).copy()

    # ------------------------------------------------------------------ inspection
    @property
    def tape(self):
        return self._variants[0].tape

    @property
    def traced(self):
        return self._variants[0]

    def info(self):
        t = self.tape
        return {"ops": t.nops, "work_slots": t.nwork, "constants": t.nconst,
                "guards": t.nguards, "tape_bytes": t.nbytes(), "work_bytes": 8 * t.nwork,
                "variants": len(self._variants), "rerecords": self.rerecords}

    def to_bytes(self):
        return self.tape.to_bytes()

    def __repr__(self):
        i = self.info()
        return (f"<Recorded {getattr(self.f, '__name__', 'f')}: {i['ops']} ops, "
                f"{i['work_slots']} slots, {i['tape_bytes']} bytes>")

    def wengert(self, *args):
        """The Wengert list (slot, operation, inputs, value); see ``tapegrad.inspect.wengert``."""
        from .inspect import wengert
        return wengert(self, *args)

    def to_dot(self, **kw):
        """Graphviz DOT text of the computational graph; see ``tapegrad.inspect.to_dot``."""
        from .inspect import to_dot
        return to_dot(self, **kw)

    def draw(self, path, **kw):
        """Render the graph to ``path`` (PNG); see ``tapegrad.inspect.draw``."""
        from .inspect import draw
        return draw(self, path, **kw)


def record(f, *example_args, strict=False):
    """Trace f at example_args once; returns a ``Recorded`` that replays in C."""
    return Recorded(f, *example_args, strict=strict)


class Compiled:
    """f with one recorded tape per input signature (structure and shapes)."""

    def __init__(self, f, strict=False):
        self.f = f
        self.strict = strict
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
                    r = self._cache[key] = Recorded(self.f, *args, strict=self.strict)
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

    def hessian(self, x):
        return self.recorded(*self._one(x)).hessian(x)


def compile(f=None, *, strict=False):  # noqa: A001  (mirrors jax.jit / torch.compile naming)
    """Decorator: keep one tape per input signature and replay it (see ``Compiled``)."""
    if f is None:
        return lambda g: Compiled(g, strict=strict)
    return Compiled(f, strict=strict)
