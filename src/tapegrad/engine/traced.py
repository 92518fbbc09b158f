"""The one mechanism every derivative operator is built on: ``Traced``, f recorded at one set of
arguments, with its sweeps (autograd's ``make_vjp``; the thin operators are ``operators/api.py``).

Without outer tracers among its inputs (the usual case) its derivatives come from the compiled
sweeps. Inside another derivative operator (``grad(grad(f))``, ``jacobian(grad(f))``, ``jvp`` of
``grad``) its inputs are tracers of the outer recording; then the sweeps are re-expressed with
NumPy operations on those tracers by the reference sweep (``reference.py``), so the outer
recording captures the derivative computation itself and can differentiate it again.
"""
import math
import threading

import numpy as np

from .._core import sweeps
from ..tracing import pytree as _tree
from ..tracing.tracer import Recorder, Tracer, _as_float_array
from ..rules import base as rules
from ..errors import GuardError, TapegradTypeError, TapegradValueError  # noqa: F401 (GuardError: re-exported)
from ..tracing.tracer import ComplexOperand, ComplexResult
from . import reference


def _input_value(x, fname, label):
    """(float64 value, outer tracer or None) of one input leaf; label() names it in errors."""
    if type(x) is np.ndarray and x.dtype is _F64:     # the usual case
        return x.copy(), None
    if type(x) is Tracer:
        if x._rec.active:
            return x._val.astype(np.float64), x
        x = x._val
    try:
        if getattr(type(x), "_complex_traced", False):
            raise ComplexOperand("complex traced")
        a = np.asarray(x)
    except ComplexOperand:      # a complex traced value of an enclosing operator
        raise ComplexResult(f"{fname}: {label()} is complex; {fname} takes real inputs only "
                            "(grad, value_and_grad, vjp, jvp, hvp, jacobian and record take complex ones)") from None
    k = a.dtype.kind
    if k == "f" or k in "iu":
        if k == "f" and a.dtype != np.float64:
            a = a.astype(np.float64)
        return np.array(a, dtype=np.float64), None
    if k == "b":
        raise TapegradTypeError(f"{fname}: {label()} is boolean; differentiate with respect to "
                        "real (float) arrays (integers are promoted to float64; convert a "
                        "boolean with x.astype(float) if it is meant as 0/1 numbers)")
    if k == "c":
        # grad, value_and_grad, vjp and jvp catch it and take their complex path (operators/api.py)
        raise ComplexResult(f"{fname}: {label()} is complex; {fname} takes real inputs only "
                            "(grad, value_and_grad, vjp, jvp, hvp, jacobian and record take complex ones)")
    raise TapegradTypeError(f"{fname}: {label()} of type {type(x).__name__} (dtype {a.dtype}) is "
                    "not a real number or array")


def narrow_dtype(x):
    """(dtype, is a NumPy scalar) that derivatives with respect to the input x are given in, or
    None for float64. tapegrad computes in float64; a NumPy float input of another precision
    (float32, float16, longdouble) gets its derivatives back in its own dtype, as autograd and
    JAX give them. Integers (Python or NumPy) and float64 give float64 derivatives."""
    if type(x) is np.ndarray:
        d = x.dtype
        return None if d is _F64 or d.kind != "f" else (d, False)
    if isinstance(x, np.floating) and type(x) is not np.float64:
        return (x.dtype, True)
    return None


def cast_leaves(leaves, dtypes):
    """Derivative leaves in the dtypes ``narrow_dtype`` gave (None: leave as computed)."""
    if dtypes is None:
        return leaves
    out = []
    for l, d in zip(leaves, dtypes):
        if d is not None and type(l) is not Tracer:
            l = np.asarray(l).astype(d[0])
            if d[1] and l.ndim == 0:
                l = l[()]
        out.append(l)
    return out


def cast_tree(tree, dtypes):
    if dtypes is None:
        return tree
    leaves, td = _tree.flatten(tree)
    return _tree.unflatten(td, cast_leaves(leaves, dtypes))


def out_dtype(dtypes):
    """The dtype of derivatives shaped like the output (jvp, jacobian): NumPy's promotion of
    the inputs' dtypes, float64 for integer and Python inputs (None: float64)."""
    if dtypes is None:
        return None
    d = np.result_type(*[np.float64 if t is None else t[0] for t in dtypes])
    return None if d == np.float64 else (d, False)


_F64 = np.dtype(np.float64)


def _is_complex_value(x):
    """A complex number or array, or a complex traced value (rules/complex.py)."""
    t = type(x)
    if t is np.ndarray:
        return x.dtype.kind == "c"
    return t is complex or isinstance(x, np.complexfloating) or t.__name__ == "ComplexTracer"


def _leaf_label(dyn, argnums, single, i):
    """'argument k' (with the path inside it, e.g. "argument 1[0]['w']") of leaf i."""
    paths = []

    def walk(t, path):
        if type(t) is np.ndarray:
            paths.append(path)
        elif isinstance(t, tuple) and not hasattr(t, "_fields") or isinstance(t, list):
            for k, c in enumerate(t):
                walk(c, f"{path}[{k}]")
        elif isinstance(t, dict):
            for k in sorted(t):
                walk(t[k], f"{path}[{k!r}]")
        elif t is not None:
            paths.append(path)
    if single:
        walk(dyn, f"argument {argnums[0]}")
    else:
        for a, d in zip(argnums, dyn):
            walk(d, f"argument {a}")
    return paths[i] if i < len(paths) else f"input {i}"


def _argnums(argnums, nargs, fname):
    if type(argnums) is int and 0 <= argnums < nargs:     # the usual case: grad(f)(x)
        return (argnums,), True
    single = isinstance(argnums, int)
    nums = (argnums,) if single else tuple(argnums)
    for a in nums:
        if not -nargs <= a < nargs:
            raise TapegradValueError(f"{fname}: argnums={argnums} but the function got {nargs} "
                             "positional arguments")
    return tuple(a % nargs for a in nums), single


def _numbers_only(o):
    """An output that is an object array of plain floats (np.min over an np.array of tracers and
    numbers that picked numbers only) as a float64 array; anything else as it is."""
    if type(o) is np.ndarray and o.dtype.kind == "O" and all(
            type(e) is float or isinstance(e, np.floating) for e in o.reshape(-1).tolist()):
        return o.astype(np.float64)
    return o


class Traced:
    """f recorded at one set of arguments."""

    @classmethod
    def loaded(cls, tape, nargs, in_tree, in_shapes, in_sizes, out_tree, out_shapes, out_sizes,
               recorded_x):
        """A Traced for a tape loaded from bytes: no recorder and no function, the layout its
        metadata gives (checked against the tape by the caller, ``operators.recorded``)."""
        tr = cls.__new__(cls)
        tr.tape, tr.rec, tr.argnums, tr.single = tape, None, tuple(range(nargs)), False
        tr.in_tree, tr.in_shapes, tr.in_sizes, tr.nin = in_tree, in_shapes, in_sizes, tape.nin
        tr.out_tree, tr.out_shapes, tr.out_sizes, tr.nout = out_tree, out_shapes, out_sizes, tape.out_n
        tr.out_off, tr.nested, tr.outer_inputs, tr.aux = tape.out_off, False, [None] * len(in_shapes), None
        tr.recorded_x, tr._w = np.asarray(recorded_x, dtype=np.float64), None
        tr.in_dtypes = tr.out_dtype = None
        return tr

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
        narrow = None
        for i, leaf in enumerate(leaves):
            v, o = _input_value(leaf, fname, lambda i=i: _leaf_label(dyn, argnums, single, i))
            vals.append(v)
            outer.append(o)
            d = narrow_dtype(leaf)
            if d is not None:
                if narrow is None:
                    narrow = [None] * len(leaves)
                narrow[i] = d
        # derivatives with respect to float32 (float16, ...) inputs are given back in that dtype
        # (computed in float64); None: all float64
        self.in_dtypes = narrow
        self.out_dtype = out_dtype(narrow)
        self.in_shapes = [v.shape for v in vals]
        self.in_sizes = [v.size for v in vals]
        self.nin = sum(self.in_sizes)
        self.outer_inputs = outer
        # vjp's pullback sweeps later, over the values computed now: its constants are copied,
        # so a data array changed in place in between cannot pair new constants with old
        # values. Every other tape references large arrays (Recorder.const).
        rec = self.rec = Recorder(ref_consts=fname != "vjp", capture=fname == "grad" and CAPTURE)
        with rec:
            tracers = [rec.new(v) for v in vals]
            sub = _tree.unflatten(self.in_tree, tracers)
            result = f(*with_dyn(args, argnums, single, sub), **kwargs)
        self.aux = None
        if has_aux:
            if not (isinstance(result, (tuple, list)) and len(result) == 2):
                raise TapegradTypeError(f"{fname}(has_aux=True): the function must return a pair (output, aux)")
            result, aux = result
            self.aux = _strip(aux)
        out_leaves, self.out_tree = _tree.flatten(result)
        self.out_shapes = [o._val.shape if type(o) is Tracer else np.shape(rules.value_of(o))
                           for o in out_leaves]
        self.out_sizes = [math.prod(s) for s in self.out_shapes]   # (np.prod: ~5 us a call)
        self.nout = sum(self.out_sizes)
        try:
            self.out_off = self._assemble_output(out_leaves)
        except ComplexOperand:
            raise ComplexResult(f"{fname}: the function returned a complex value; {fname} takes "
                                "real-valued functions only (grad, value_and_grad, vjp, jvp, jacobian "
                                "and record take complex ones)") from None
        rec.finish(self.nin, self.out_off, self.nout)
        self.tape = rec.tape
        self.nested = rec.nested or any(o is not None for o in outer)
        # (the values are fresh copies of the inputs: one of them needs no joining copy)
        self.recorded_x = vals[0].reshape(-1) if len(vals) == 1 else _tree.join(vals)
        self._w = None

    def _assemble_output(self, leaves):
        rec = self.rec
        if len(leaves) == 1 and type(leaves[0]) is Tracer and leaves[0]._rec is rec:
            return leaves[0]._off
        vals = []
        leaves = [_numbers_only(o) for o in leaves]
        for o in leaves:
            if type(o) is Tracer and o._rec is rec:
                continue
            if type(o) is np.ndarray and o.dtype.kind == "O":
                continue        # an object array of traced values: operand() below takes it
            try:
                _as_float_array(rules.value_of(o))
            except ComplexOperand:
                raise
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
            if _is_complex_value(l):
                raise TapegradTypeError(f"{what}: a complex tangent for a real primal (its imaginary "
                                        "part would be dropped)")
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
            if _is_complex_value(l):
                raise TapegradTypeError(f"{what}: a complex cotangent for a real output (its "
                                        "imaginary part would be dropped)")
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
        t = self.tape
        if len(self.in_shapes) == 1 and t.nwork < _CAPTURE_MIN_WORK and not t.callbacks:
            # a small tape of one input: the compiled call that makes its own buffers
            s = self.in_shapes[0]
            r = sweeps.grad_fast(t, self.recorded_x.reshape(s), s, True)
            if r is not None:
                return [r[0]], r[1]
        g = np.empty(self.nin)
        with _Scratch() as scratch:
            w, wb = scratch.buffers(self.tape.nwork)
            skip = self._captured_work(w)
            if skip is not None:
                val = sweeps.grad_at_values(self.tape, w, skip, wb, g, True)
                return self._split_fresh(g), val
            val, ok = sweeps.value_and_grad(self.tape, self.recorded_x, w, wb, g, True, True)
        return (self._split_fresh(g), val) if ok else None

    def _captured_work(self, w):
        """Fills w with the inputs and the values of the costly ops the recording computed and
        returns which ops those are (a uint8 mask: the others are computed again before the
        reverse sweep), or None: nothing worth it was captured, or the fused gradient tail is
        the better path (it recomputes its values in cache, and a long one runs about twice as
        fast as the op-by-op reverse sweep: only costly ops before a short tail are worth
        keeping). The captured values are the forward sweep's at the recording point
        (the same operations on the same operands: the sweeps run NumPy's own loops for the
        transcendental functions and BLAS for products; where a kernel differs, they agree to
        rounding), so the gradient is the one a replay gives there."""
        rec = self.rec
        caps = rec.captured if rec is not None else None
        if caps is not None:
            rec.captured = None          # (the values are used once: let them go)
        t = self.tape
        if not caps or (t.nwork < _CAPTURE_MIN_WORK and not t.callbacks):
            return None      # (a Python rule's value is worth keeping on any tape: an eig, a solve)
        outs, sizes = t.op_outputs()
        tail = t.fused_tail()
        k0 = t.nops
        if tail is not None:
            k0 = tail[0]
            if sizes[k0] > _CAPTURE_MAX_TAIL:
                return None
        skip = np.zeros(t.nops, dtype=np.uint8)
        before = False          # a kept value before the fused tail (else nothing is gained)
        for k, (o, m) in enumerate(zip(outs, sizes)):
            v = caps.get(o)
            if v is not None and v.size == m:
                w[o:o + m] = v.reshape(-1)
                skip[k] = 1
                before = before or k < k0
        if not before:
            return None
        if self.nin:
            w[:self.nin] = self.recorded_x
        return skip

    def _split_fresh(self, g):
        # (g is the call's own: its leaves can be views of it)
        return _tree.split(g, self.in_shapes, self.in_sizes)

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
        wd = sweeps.tangent(self.tape, self.work() if w is None else w, np.eye(self.nin), wd,
                            unit=0)
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


# Re-traced gradients start from the values the recording computed (Recorder.keep): a switch
# for tests and benchmarks (the gradient is the same up to rounding either way)
CAPTURE = True
_CAPTURE_MIN_WORK = 2048        # smaller tapes recompute everything faster than they fill w
_CAPTURE_MAX_TAIL = 1 << 16     # elements of a fused tail above which it keeps its own path

# Work buffers of re-traced gradients, kept per thread from call to call: a fresh buffer of
# megabytes comes from mmap and costs a page fault per 4 kB on every call (for data-heavy
# code that was more than the sweeps themselves). In use by one call at a time: a gradient
# taken inside a sweep (a callback rule calling tg.grad) gets fresh buffers.
_SCRATCH_MAX = 1 << 21          # float64 elements (16 MB) per buffer; larger ones are not kept
_scratch_local = threading.local()


class _Scratch:
    """Two kept work buffers (values, adjoints) for one compiled gradient call; the adjoints
    are all zero between calls (the sweeps' clean mode leaves them so)."""

    def __enter__(self):
        loc = _scratch_local
        self.kept = not getattr(loc, "busy", False)
        if self.kept:
            loc.busy = True
        return self

    def buffers(self, n):
        n = max(n, 1)
        if not self.kept or n > _SCRATCH_MAX:
            return np.empty(n), np.zeros(n)
        loc = _scratch_local
        bufs = getattr(loc, "bufs", None)
        if bufs is None or bufs[0].size < n:
            bufs = loc.bufs = (np.empty(n), np.zeros(n))
        return bufs[0][:n], bufs[1][:n]

    def __exit__(self, *exc):
        if self.kept:
            _scratch_local.busy = False
        return False


def with_dyn(args, nums, single, dyn):
    """args with the differentiated ones (positions nums) replaced by dyn (one value if
    single, else one per position)."""
    new = list(args)
    if single:
        new[nums[0]] = dyn
    else:
        for i, d in zip(nums, dyn):
            new[i] = d
    return new


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
