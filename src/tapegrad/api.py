"""Derivative operators. One mechanism (trace f onto a tape, then sweep it), many thin operators.

``Traced`` records a function at given arguments. Without outer tracers among its inputs (the
usual case) its derivatives come from the compiled sweeps. Inside another derivative operator
(``grad(grad(f))``, ``jacobian(grad(f))``, ``jvp`` of ``grad``) its inputs are tracers of the
outer recording; then the sweeps are re-expressed with NumPy operations on those tracers by the
reference sweep (``reference.py``), so the outer recording captures the derivative computation
itself and can differentiate it again.
"""
import math
import threading

import numpy as np

from ._core import sweeps
from . import _tree, reference
from .tracer import Recorder, Tracer, top_recorder, _as_float_array
from . import rules
from .errors import GuardError, TapegradTypeError, TapegradValueError  # noqa: F401 (GuardError: re-exported)


def _input_value(x, fname, pos):
    if type(x) is Tracer:
        if x._rec.active:
            return x._val.astype(np.float64), x
        x = x._val
    a = np.asarray(x)
    k = a.dtype.kind
    if k == "f" or k in "iu":
        if k == "f" and a.dtype != np.float64:
            a = a.astype(np.float64)
        return np.array(a, dtype=np.float64), None
    if k == "b":
        raise TapegradTypeError(f"{fname}: argument {pos} is boolean; differentiate with respect to "
                        "real (float) arrays")
    if k == "c":
        raise TapegradTypeError(f"{fname}: argument {pos} is complex; tapegrad differentiates "
                        "real-valued code only")
    raise TapegradTypeError(f"{fname}: argument {pos} of type {type(x).__name__} (dtype {a.dtype}) is "
                    "not a real number or array")


def _argnums(argnums, nargs, fname):
    single = isinstance(argnums, int)
    nums = (argnums,) if single else tuple(argnums)
    for a in nums:
        if not -nargs <= a < nargs:
            raise TapegradValueError(f"{fname}: argnums={argnums} but the function got {nargs} "
                             "positional arguments")
    return tuple(a % nargs for a in nums), single


class Traced:
    """f recorded at one set of arguments."""

    def __init__(self, f, args, kwargs=None, argnums=None, has_aux=False, fname="grad"):
        kwargs = kwargs or {}
        if argnums is None:
            argnums, single = tuple(range(len(args))), False
        else:
            argnums, single = _argnums(argnums, len(args), fname)
        self.argnums, self.single = argnums, single
        dyn = args[argnums[0]] if single else tuple(args[i] for i in argnums)
        leaves, self.in_tree = _tree.flatten(dyn)
        vals, outer = [], []
        for i, leaf in enumerate(leaves):
            v, o = _input_value(leaf, fname, i)
            vals.append(v)
            outer.append(o)
        self.in_shapes = [v.shape for v in vals]
        self.in_sizes = [v.size for v in vals]
        self.nin = sum(self.in_sizes)
        self.outer_inputs = outer
        rec = self.rec = Recorder()
        with rec:
            tracers = [rec.new(v) for v in vals]
            sub = _tree.unflatten(self.in_tree, tracers)
            new_args = list(args)
            if single:
                new_args[argnums[0]] = sub
            else:
                for i, s in zip(argnums, sub):
                    new_args[i] = s
            result = f(*new_args, **kwargs)
        self.aux = None
        if has_aux:
            if not (isinstance(result, (tuple, list)) and len(result) == 2):
                raise TapegradTypeError(f"{fname}(has_aux=True): the function must return a pair (output, aux)")
            result, aux = result
            self.aux = _strip(aux)
        out_leaves, self.out_tree = _tree.flatten(result)
        self.out_shapes = [np.shape(rules.value_of(o)) for o in out_leaves]
        self.out_sizes = [math.prod(s) for s in self.out_shapes]   # (np.prod: ~5 us a call)
        self.nout = sum(self.out_sizes)
        self.out_off = self._assemble_output(out_leaves)
        rec.finish(self.nin, self.out_off, self.nout)
        self.tape = rec.tape
        self.nested = rec.nested or any(o is not None for o in outer)
        self.recorded_x = _tree.join(vals)
        self._w = None

    def _assemble_output(self, leaves):
        rec = self.rec
        if len(leaves) == 1 and type(leaves[0]) is Tracer and leaves[0]._rec is rec:
            return leaves[0]._off
        vals = []
        for o in leaves:
            if type(o) is Tracer and o._rec is rec:
                continue
            try:
                _as_float_array(rules.value_of(o))
            except TypeError:
                raise TapegradTypeError(f"the function returned {type(o).__name__}, which is not an array "
                                "or a number") from None
        out = rec.new(np.zeros(self.nout))
        pos = 0
        for o, n in zip(leaves, self.out_sizes):
            so, sc, _ = rec.operand(o)
            if n:
                rec.op(rules.OPCODES["copy"], rules.FLAG_A if sc else 0, out._off + pos, so, n=n,
                       reads=() if sc else (so,))
            pos += n
        return out._off

    # ---------------------------------------------------------------- flat helpers
    def work(self):
        """Work buffer at the recording point (computed once by the compiled forward sweep)."""
        if self._w is None:
            self._w = sweeps.forward(self.tape, self.recorded_x)
        return self._w

    def out_flat(self, w):
        return w[self.out_off:self.out_off + self.nout].copy()

    def split_in(self, flat):
        return _tree.unflatten(self.in_tree, _tree.split(flat, self.in_shapes, self.in_sizes))

    def split_out(self, flat, lead=()):
        return _tree.unflatten(self.out_tree,
                               _tree.split(flat, self.out_shapes, self.out_sizes, lead=lead))

    def flat_in(self, tree, what):
        leaves, td = _tree.flatten(tree)
        if td != self.in_tree and not (len(leaves) == len(self.in_shapes)):
            raise TapegradValueError(f"{what}: structure does not match the primals")
        parts = []
        for l, s in zip(leaves, self.in_shapes):
            a = np.asarray(rules.value_of(l), dtype=np.float64) if type(l) is not Tracer else l
            if np.shape(rules.value_of(a)) != tuple(s):
                raise TapegradValueError(f"{what}: expected shape {tuple(s)}, got {np.shape(rules.value_of(a))}")
            parts.append(a)
        return parts

    def flat_out(self, tree, what):
        leaves, _ = _tree.flatten(tree)
        if len(leaves) != len(self.out_shapes):
            raise TapegradValueError(f"{what}: structure does not match the output")
        parts = []
        for l, s in zip(leaves, self.out_shapes):
            if np.shape(rules.value_of(l)) != tuple(s):
                raise TapegradValueError(f"{what}: expected shape {tuple(s)}, got {np.shape(rules.value_of(l))}")
            parts.append(l)
        return parts

    # ---------------------------------------------------------------- derivatives
    def output(self):
        """The output pytree (tracers of the outer recording when nested)."""
        if self.nested:
            return self.split_out_leaves(self._ref().out_leaves())
        return self.split_out(self.out_flat(self.work()))

    def split_out_leaves(self, flat_leaves):
        return _tree.unflatten(self.out_tree, [rules.reshape(v, s) for v, s in
                                               zip(flat_leaves, self.out_shapes)])

    def _ref(self):
        if getattr(self, "_refsweep", None) is None:
            self._refsweep = reference.Sweep(self)
        return self._refsweep

    def pullback(self, ct_leaves):
        """Input cotangent leaves (flat list, input shapes) for output cotangent leaves."""
        if self.nested or any(type(c) is Tracer and c._rec.active for c in ct_leaves):
            flat = self._ref().vjp(ct_leaves)
            return [rules.reshape(g, s) for g, s in zip(flat, self.in_shapes)]
        seed = _tree.join(ct_leaves)
        wb = sweeps.reverse(self.tape, self.work(), seed)
        return self._split_leaves(wb[:self.nin])

    def compiled_grad(self):
        """(gradient leaves, value) of a scalar output at the recording point in one compiled
        call (the fused gradient tail and scalar partials apply, and only the buffer regions
        the sweep touches are ever written), or None: nested, or a guard did not hold."""
        if self.nested or self.nout != 1:
            return None
        n = max(self.tape.nwork, 1)
        g = np.empty(self.nin)
        val, ok = sweeps.value_and_grad(self.tape, self.recorded_x, np.empty(n), np.empty(n), g)
        return (self._split_leaves(g), val) if ok else None

    def _split_leaves(self, flat):
        return _tree.split(flat, self.in_shapes, self.in_sizes, copy=True)

    def pushforward(self, tan_leaves):
        """Output tangent leaves for input tangent leaves."""
        if self.nested or any(type(c) is Tracer and c._rec.active for c in tan_leaves):
            flat = self._ref().jvp(tan_leaves)
            return [rules.reshape(g, s) for g, s in zip(flat, self.out_shapes)]
        xd = _tree.join(tan_leaves)[None, :]
        wd = sweeps.tangent(self.tape, self.work(), np.ascontiguousarray(xd))
        flat = wd[0, self.out_off:self.out_off + self.nout]
        return _tree.split(flat, self.out_shapes, self.out_sizes, copy=True)

    def jac_fwd(self, w=None, wd=None):
        """(nout, nin) Jacobian from one tangent sweep with nin lanes (at work buffer w; wd: an
        (nin, nwork) tangent buffer to reuse)."""
        wd = sweeps.tangent(self.tape, self.work() if w is None else w, np.eye(self.nin), wd)
        return wd[:, self.out_off:self.out_off + self.nout].T.copy()

    def jac_rev(self, w=None):
        """(nout, nin) Jacobian from nout reverse sweeps (at work buffer w)."""
        w = self.work() if w is None else w
        return sweeps.jacobian_rev(self.tape, w, np.empty((self.nout, self.nin)))

    def hvp_lanes(self, V):
        """H V for a scalar output, V of shape (L, nin): tangent sweep + reverse + tangent-of-reverse."""
        if self.nout != 1:
            raise TapegradValueError(f"hvp: the function must return a scalar, got shape {self.out_shapes[0]}")
        return sweeps.hvp(self.tape, self.work(), np.ascontiguousarray(V, dtype=np.float64)).copy()


def _strip(tree):
    leaves, td = _tree.flatten(tree)
    return _tree.unflatten(td, [l._val.copy() if type(l) is Tracer and not l._rec.active else l
                                for l in leaves])


def _finish_leaves(leaves):
    """Values leaving a derivative operator: tracers of finished recordings become arrays."""
    out = []
    for l in leaves:
        if type(l) is Tracer and not l._rec.active:
            l = l._val.copy()
        out.append(l)
    return out


# ====================================================================== public operators
def value_and_grad(f, argnums=0, has_aux=False):
    """Returns a function computing (f(*args), gradient of f with respect to args[argnums])."""
    def vg(*args, **kwargs):
        tr = Traced(f, args, kwargs, argnums, has_aux, "grad")
        if tr.nout != 1:
            if not tr.out_shapes:
                raise TapegradTypeError("grad: the function must return a scalar (size-1) output, got "
                                "no array (None or an empty container)")
            raise TapegradTypeError(f"grad: the function must return a scalar (size-1) output, got shape "
                            f"{tr.out_shapes[0] if len(tr.out_shapes) == 1 else tr.out_shapes}")
        g = tr.compiled_grad()
        if g is not None:
            out = tr.split_out(np.array([g[1]]))
            g = g[0]
        else:
            g = tr.pullback([np.ones(tr.out_shapes[0])])
            out = tr.output()
        g = _tree.unflatten(tr.in_tree, _finish_leaves(g))
        val = _tree.unflatten(tr.out_tree, _finish_leaves(_tree.flatten(out)[0]))
        if isinstance(val, np.ndarray) and val.ndim == 0:
            val = val[()]
        return ((val, tr.aux) if has_aux else val), g
    vg.__name__ = f"value_and_grad({getattr(f, '__name__', 'f')})"
    vg.__doc__ = f"Value and gradient of {getattr(f, '__name__', 'f')}."
    return vg


def grad(f, argnums=0, has_aux=False):
    """Returns a function computing the gradient of scalar f with respect to args[argnums].

    The gradient has the structure of the differentiated argument (pytrees of tuples, lists,
    dicts). With has_aux=True, f returns (output, aux) and the function returns (grad, aux).
    """
    vg = value_and_grad(f, argnums, has_aux)

    def g(*args, **kwargs):
        (v, g_) = vg(*args, **kwargs)
        return (g_, v[1]) if has_aux else g_
    g.__name__ = f"grad({getattr(f, '__name__', 'f')})"
    g.__doc__ = f"Gradient of {getattr(f, '__name__', 'f')}."
    return g


def vjp(f, *primals, has_aux=False):
    """(out, vjp_fn): vjp_fn(cotangent) returns a tuple with one cotangent per primal."""
    tr = Traced(f, primals, None, None, has_aux, "vjp")
    out = tr.output()
    out = _tree.unflatten(tr.out_tree, _finish_leaves(_tree.flatten(out)[0]))

    def vjp_fn(ct):
        cts = tr.flat_out(ct, "vjp_fn")
        g = _finish_leaves(tr.pullback(cts))
        return _tree.unflatten(tr.in_tree, g)
    return ((out, vjp_fn, tr.aux) if has_aux else (out, vjp_fn))


def jvp(f, primals, tangents):
    """(f(*primals), J tangents), by the tangent (dual number) sweep."""
    if not isinstance(primals, (tuple, list)) or not isinstance(tangents, (tuple, list)):
        raise TapegradTypeError("jvp: primals and tangents must be tuples (one entry per argument)")
    if len(primals) != len(tangents):
        raise TapegradValueError(f"jvp: {len(primals)} primals but {len(tangents)} tangents")
    tr = Traced(f, tuple(primals), None, None, False, "jvp")
    tans = tr.flat_in(tuple(tangents), "jvp tangents")
    out_dot = _finish_leaves(tr.pushforward(tans))
    out = _tree.unflatten(tr.out_tree, _finish_leaves(_tree.flatten(tr.output())[0]))
    return out, _tree.unflatten(tr.out_tree, out_dot)


def hvp(f, primals, tangents):
    """Hessian-vector product H v of scalar f, by forward-over-reverse on one tape.

    Returns H v shaped like the (single) primal, or a tuple for several primals.
    """
    if not isinstance(primals, (tuple, list)) or not isinstance(tangents, (tuple, list)):
        raise TapegradTypeError("hvp: primals and tangents must be tuples (one entry per argument)")
    tr = Traced(f, tuple(primals), None, None, False, "hvp")
    tans = tr.flat_in(tuple(tangents), "hvp tangents")
    if tr.nested or any(type(t) is Tracer and t._rec.active for t in tans):
        # inside another operator: differentiate the gradient along the tangents
        _, res = jvp(grad(f, argnums=tuple(range(len(primals)))), tuple(primals), tuple(tangents))
        return res[0] if len(primals) == 1 else res
    if tr.nout != 1:
        raise TapegradTypeError(f"hvp: the function must return a scalar, got shape {tr.out_shapes}")
    V = _tree.join(tans)[None, :]
    hv = tr.hvp_lanes(V)[0]
    res = _tree.unflatten(tr.in_tree, tr._split_leaves(hv))
    return res[0] if len(primals) == 1 else res


def _single_array_fn(tr, fname):
    if len(tr.out_shapes) != 1:
        raise TapegradTypeError(f"{fname}: the function must return a single array")


def jacobian(f, argnums=0, mode="auto"):
    """Jacobian of f with respect to args[argnums]: shape out.shape + in.shape.

    mode="fwd": one tangent sweep with one lane per input; "rev": one reverse sweep per output;
    "auto" picks forward when there are fewer inputs than outputs.
    """
    if mode not in ("auto", "fwd", "rev"):
        raise TapegradValueError(f"jacobian: mode must be 'auto', 'fwd' or 'rev', got {mode!r}")

    def jac(*args, **kwargs):
        tr = Traced(f, args, kwargs, argnums, False, "jacobian")
        _single_array_fn(tr, "jacobian")
        m = mode if mode != "auto" else ("fwd" if tr.nin < tr.nout else "rev")
        oshape = tuple(tr.out_shapes[0])
        if tr.nested:
            rows = []
            for i in range(tr.nout):
                e = np.zeros(tr.nout)
                e[i] = 1.0
                rows.append(tr.pullback([e.reshape(oshape)]))
            res = []
            for k, s in enumerate(tr.in_shapes):
                r = rules.stack([row[k] for row in rows]) if rows else np.zeros((0,) + tuple(s))
                res.append(rules.reshape(r, oshape + tuple(s)))
            return _tree.unflatten(tr.in_tree, res)
        J = tr.jac_fwd() if m == "fwd" else tr.jac_rev()
        return _tree.unflatten(tr.in_tree, _tree.split(J, tr.in_shapes, tr.in_sizes, lead=oshape))
    return jac


jacfwd = lambda f, argnums=0: jacobian(f, argnums, "fwd")  # noqa: E731
jacrev = lambda f, argnums=0: jacobian(f, argnums, "rev")  # noqa: E731


def hessian(f, argnums=0):
    """Dense Hessian of scalar f, from lane-batched Hessian-vector products (one sweep pair)."""
    def hess(*args, **kwargs):
        tr = Traced(f, args, kwargs, argnums, False, "hessian")
        if tr.nested:
            return jacobian(grad(f, argnums), argnums, "rev")(*args, **kwargs)
        if tr.nout != 1:
            raise TapegradTypeError("hessian: the function must return a scalar")
        if len(tr.in_shapes) != 1:
            raise TapegradTypeError("hessian: differentiate with respect to a single array argument")
        H = tr.hvp_lanes(np.eye(tr.nin))
        s = tuple(tr.in_shapes[0])
        return H.T.reshape(s + s).copy()
    return hess


def derivative(f):
    """df/dx for scalar-to-scalar f, by one dual-number (tangent) sweep."""
    def d(x, *args, **kwargs):
        tr = Traced(f, (x,) + args, kwargs, 0, False, "derivative")
        if tr.nin != 1 or tr.nout != 1:
            raise TapegradTypeError("derivative: f must map a scalar to a scalar; use jacobian otherwise")
        r = _finish_leaves(tr.pushforward([np.ones(tr.in_shapes[0])]))[0]
        return float(r) if not isinstance(r, Tracer) else r
    return d
