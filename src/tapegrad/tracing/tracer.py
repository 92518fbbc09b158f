"""Tracing plain NumPy code onto a tape.

A ``Tracer`` stands for one array while a function is being recorded. It carries its value
(computed eagerly with NumPy, so Python control flow sees real numbers) and its place in the
work buffer of the tape being recorded. NumPy hands every call on a tracer to us through
``__array_ufunc__`` / ``__array_function__`` and the arithmetic dunders; the rules in
``tapegrad.rules`` turn each call into tape operations.

Nesting (``grad(grad(f))``): recorders form a per-thread stack. An operation is recorded on
the innermost active recorder among its operands; tracers of outer recorders are constants
to it, remembered with their source so that the inner derivative can be re-expressed as
operations on the outer tracers (see ``reference.py``).
"""
import dis
import sys
import threading
import warnings
import weakref

import numpy as np

from .._core.tape import Tape, OPCODES, FLAG_A
from .._core import recording as _fast
from ..errors import TapegradTypeError, TapegradValueError

_PADS = tuple((0,) * (6 - k) for k in range(7))   # pads an op's integer parameters to 6

_state = threading.local()


def _stack():
    s = getattr(_state, "stack", None)
    if s is None:
        s = _state.stack = []
    return s


_STORE_SUBSCR = dis.opmap.get("STORE_SUBSCR")
_BINARY_SUBSCR = dis.opmap.get("BINARY_SUBSCR")


def _storing_subscript(frame):
    """Is frame executing ``a[k] = value`` (NumPy converting value inside its __setitem__)?"""
    try:
        return frame.f_code.co_code[frame.f_lasti] == _STORE_SUBSCR
    except (AttributeError, IndexError, TypeError):
        return False


def _loading_subscript(frame):
    """Is frame executing ``a[k]`` (NumPy converting the index k inside its __getitem__)?"""
    try:
        return _BINARY_SUBSCR is not None and frame.f_code.co_code[frame.f_lasti] == _BINARY_SUBSCR
    except (AttributeError, IndexError, TypeError):
        return False


class TracerConversionWarning(UserWarning):
    """A traced value was converted to a Python number: no derivative flows through it."""


KEEP_MAX_ELEMENTWISE = 1 << 16  # elements of the largest elementwise value Recorder.keep keeps
REF_MIN = 1024          # float64 elements from which a constant array is referenced, not copied
_EXT_BASE = 1 << 60     # offsets of referenced arrays start here (tape.pxd: TG_EXT_BASE)


class Recorder(_fast.RecorderCore):
    """Builds one Tape while a function runs on tracers (its tape, work-slot counter, activity
    and level are C fields of the base: the scalar fast paths of _core/recording.pyx use them)."""

    def __init__(self, ref_consts=True, capture=False):
        self.tape = Tape()
        # capture: the values of the costly ops (products, transcendental functions) as the
        # rules compute them, {output offset: value}, so that a re-traced gradient sweeps
        # forward only through the cheap ops before its reverse sweep (Traced.compiled_grad).
        # Only costly values are held: keeping every intermediate alive would cost more in
        # fresh memory than recomputing cheap ops does.
        self.captured = {} if capture else None
        # Arrays of REF_MIN or more float64 elements (closed over by f, or data arguments) are
        # referenced by the tape, not copied into it (Tape.add_const_ref): the sweeps read
        # their contents when they run. See const() for what that means for mutation.
        self.ref_consts = ref_consts
        self.nwork = 0               # work slots allocated so far (the tape learns it at finish)
        # ops go straight into the tape's C array: a positional add_op call costs ~0.15 us, a
        # fraction of building the row in Python (array.extend of a 13-tuple alone was ~0.6 us)
        self._add_op = self.tape.add_op
        # the one-op entry points of the hot paths (5 arguments to parse, not 14: ~50 ns less)
        self._add_unary, self._add_binary = self.tape.add_unary, self.tape.add_binary
        self.level = 0
        self.active = False
        self.nested = False          # saw a tracer of an outer (active) recorder
        self.const_cache = {}        # id(array) -> (offset, array): big constants stored once
        self.const_sources = {}      # constant offset -> outer Tracer it was taken from
        # The work buffer is cut into allocations, laid end to end in the order they are made.
        # An emitted op (emit_*, and the same inlined in Tracer's scalar fast paths) allocates
        # its own output and reads only work values (x[a], and x[b] for a binary op), so the
        # tape's op table says all there is to know about it: per op it costs no Python
        # bookkeeping. The other allocations and ops are listed here.
        self.new_starts = []         # work offsets of the allocations made by new()
        self.op_reads = {}           # op index -> work offsets it reads, for ops made by op()
        self.value_guards = []       # (offset, expected values) recorded by bool()/float()
        self._starts = None          # all allocations' starts, fixed by finish()
        self.handed_objects = False  # Tracer.__array__ gave NumPy an object array of tracers
        self._frozen = []            # referenced arrays made read-only while f runs (const())

    # -- context
    def __enter__(self):
        st = _stack()
        self.level = len(st) + 1
        self.active = True
        st.append(self)
        return self

    def __exit__(self, *exc):
        self.active = False
        self.thaw()
        st = _stack()
        if st and st[-1] is self:
            st.pop()
        elif self in st:
            st.remove(self)
        return False

    def thaw(self):
        """Give the arrays referenced while f ran their writeable flag back."""
        frozen, self._frozen = self._frozen, []
        for a in frozen:
            try:
                a.flags.writeable = True
            except ValueError:         # pragma: no cover - its base became read-only meanwhile
                pass

    # -- storage
    def new(self, value):
        """A fresh work-buffer allocation holding ``value`` (result of one operation)."""
        if type(value) is not np.ndarray:
            value = np.asarray(value)
        off = self.nwork
        self.nwork = off + value.size
        self.new_starts.append(off)
        return Tracer(self, off, value)

    def const(self, value, source=None):
        """Offset of ``value`` (float64) in the constant buffer."""
        if source is None and isinstance(value, np.ndarray) and value.size > 8:
            # the same array object may have been modified in place since it was stored
            # (A *= 2 between two uses): reuse a copy only while its contents are unchanged
            hit = self.const_cache.get(id(value))
            if hit is not None and hit[1] is value and (
                    hit[0] >= _EXT_BASE or self.tape.const_matches(hit[0], value)):
                return hit[0]
            if self.ref_consts and value.size >= REF_MIN:
                # referenced, not copied: a large array costs nothing per re-trace. The
                # contract (docs/numpy_support.md): the tape reads the array when it sweeps,
                # so changing it in place after recording is seen by the next replay (never a
                # stale copy); changing it in place inside f after f used it is not supported
                # for arrays this large (both uses would read the final contents), so the array
                # is read-only until f returns: such a write raises NumPy's "assignment
                # destination is read-only" instead of giving a silently wrong derivative.
                off = self.tape.add_const_ref(value)
                if value.flags.writeable:
                    value.flags.writeable = False
                    self._frozen.append(value)
            else:
                off = self.tape.add_const(value)
            self.const_cache[id(value)] = (off, value)
            return off
        off = self.tape.add_const(value)
        if source is not None:
            self.const_sources[off] = source
            self.nested = True
        return off

    def operand(self, x):
        """(offset, is_constant, float64 value) of an operand of an operation on this tape."""
        if type(x) is Tracer:
            if x._rec is self:
                v = x._val
                return x._off, False, (v if v.dtype == np.float64 else v.astype(np.float64))
            v = x._val.astype(np.float64)
            return self.const(v, source=x if x._rec.active else None), True, v
        if type(x) is list or type(x) is tuple:
            x = np.asarray(x)        # tracers inside: an object array (Tracer.__array__)
        if type(x) is np.ndarray and x.dtype.kind == "O" and any(
                type(e) is Tracer for e in x.reshape(-1).tolist()):
            t = self.from_objects(x)
            return t._off, False, t._val
        v = _as_float_array(x)
        return self.const(v), True, v

    def from_objects(self, a):
        """A tracer of this recording holding the object array ``a`` (NumPy's np.array of a
        list of tracers, np.asarray of a tracer, np.r_, ... see Tracer.__array__): its
        tracers' values (a copy op per run of consecutive work slots) and its numbers (one
        constant). Tracers of other recordings are constants here, as in operand()."""
        flat = a.reshape(-1)
        n = flat.size
        vals = np.empty(n)
        offs = [-1] * n            # work offset of a traced element of this recording, or -1
        srcs = [None] * n          # the tracer it is an element of (Tracer.__array__), if any
        for i, e in enumerate(flat.tolist()):
            if type(e) is Tracer:
                if e._f is not None:
                    v = e._f
                else:
                    ev = e._val
                    if ev.size != 1:
                        raise TapegradValueError(
                            "tapegrad: an object array holds a traced array of shape "
                            f"{ev.shape} as one element (a ragged np.array of traced values); "
                            "build the array with np.stack / np.concatenate")
                    v = float(ev.reshape(()))
                if e._rec is self:
                    offs[i] = e._off
                    srcs[i] = getattr(e, "_src", None)
                elif e._rec.active:        # an outer recording's tracer: a constant with source
                    offs[i] = -2 - self.const(np.array(v), source=e)
                vals[i] = v
            else:
                try:
                    vals[i] = _as_float_array(e)
                except (TypeError, ValueError):
                    raise TapegradTypeError(
                        f"tapegrad: an object array holds {type(e).__name__} (not a number or a "
                        "traced scalar); build arrays of traced values with np.stack") from None
        out = self.new(vals.reshape(a.shape))
        base = out._off
        cbuf = None
        i = 0
        while i < n:
            o = offs[i]
            j = i + 1
            if o >= 0:             # consecutive elements of one tracer (one allocation): one copy
                src = srcs[i]
                if src is not None and src is not _HANDED:
                    while j < n and offs[j] == o + (j - i) and srcs[j] is src:
                        j += 1
                self.op(OPCODES["copy"], 0, base + i, o, n=j - i, reads=(o,))
            elif o == -1:          # a run of numbers: from one constant holding all values
                while j < n and offs[j] == -1:
                    j += 1
                if cbuf is None:
                    cbuf = self.const(vals)
                self.op(OPCODES["copy"], FLAG_A, base + i, cbuf + i, n=j - i, reads=())
            else:                  # an outer tracer's value (its own constant)
                self.op(OPCODES["copy"], FLAG_A, base + i, -2 - o, n=1, reads=())
            i = j
        return out

    # The rules' fast paths: an allocation and the op writing it in one call, for the two op
    # shapes scalar-heavy code records most. value is an ndarray, or a Python float for a 0-d
    # result (see Tracer). Integer parameters are passed positionally: add_op(*p) alone cost
    # ~0.1 us. Nothing else is recorded (see __init__): these run once per traced operation.
    def keep(self, t, value, elementwise=False):
        """Capture the value of the allocation of tracer t (see __init__). An elementwise value
        of more than KEEP_MAX_ELEMENTWISE elements is not kept: ops that long belong to a fused
        or tiled run, which recomputes them in cache faster than a kept copy is read back."""
        if self.captured is not None and type(value) is np.ndarray and (
                not elementwise or value.size <= KEEP_MAX_ELEMENTWISE):
            self.captured[t._off] = value

    def emit_unary(self, value, code, a, d):
        """y = g(x[a]; d) elementwise."""
        n = 1 if type(value) is float else value.size
        off = self.nwork
        self.nwork = off + n
        self._add_unary(code, off, a, n, d)
        return Tracer(self, off, value)

    def emit_binary(self, value, code, a, b, flags=0):
        """y = g(x[a], x[b]) elementwise, both operands of the output's shape (flags: a
        constant operand, read from the constant buffer)."""
        n = 1 if type(value) is float else value.size
        off = self.nwork
        self.nwork = off + n
        self._add_binary(code, off, a, b, n, flags)
        return Tracer(self, off, value)

    def op(self, code, flags, out, a=0, b=0, c=0, n=0, p=(), d=0.0, reads=()):
        k = self._add_op(code, flags, out, a, b, c, n, *p, *_PADS[len(p)], d)
        self.op_reads[k] = reads

    def guard(self, tracer):
        """Record that replays must reproduce this tracer's current value."""
        self.value_guards.append((tracer._off, tracer._val.astype(np.float64).ravel().copy()))

    # -- the allocations (for finish() and the reference sweep)
    def _starts_of(self, table):
        """Start offsets of all allocations (new()'s, then the emitted ops' outputs: unsorted),
        and which ops of ``table`` (the tape's op_table()) were emitted: a boolean mask, or
        None for all of them (scalar code: no mask to make and apply)."""
        out = table["out"]
        if not self.op_reads:
            return np.concatenate([np.asarray(self.new_starts, dtype=np.int64), out]), None
        emitted = np.ones(len(table), dtype=bool)
        emitted[np.fromiter(self.op_reads, dtype=np.int64, count=len(self.op_reads))] = False
        return np.concatenate([np.asarray(self.new_starts, dtype=np.int64),
                               out[emitted]]), emitted

    @property
    def alloc_starts(self):
        """Work offsets where allocations start, in increasing order."""
        starts = self._starts if self._starts is not None else \
            self._starts_of(self.tape.op_table())[0]
        return np.sort(starts).tolist()

    @property
    def alloc_sizes(self):
        """Sizes of the allocations (they tile the work buffer end to end)."""
        starts = self.alloc_starts
        return [e - s for s, e in zip(starts, starts[1:] + [self.nwork])]

    # -- finishing
    def finish(self, nin, out_off, out_n):
        """Set inputs/outputs, add guards, drop operations that reach neither, validate."""
        t = self.tape
        t.alloc(self.nwork - t.nwork)
        t.set_io(nin, out_off, out_n)
        for off, expected in self.value_guards:
            t.add_guard(off, expected)
        roots = [off for off, _ in self.value_guards]
        if out_n:
            roots.append(out_off)
        # liveness by allocation in one compiled pass (Tape.live_ops): a NumPy version cost
        # ~30-60 us a recording, a tenth of a small array function's re-traced gradient
        reads = self.op_reads
        self._starts, keep = t.live_ops(self.new_starts, reads, roots)
        if keep is not None:
            t.keep_ops(keep)
            self.op_reads = {j: reads[k] for j, k in enumerate(np.flatnonzero(keep).tolist())
                             if k in reads}
        return self._validated()

    def _validated(self):
        self.tape.validate()
        return self.tape


class ComplexOperand(TapegradTypeError):
    """A complex value reached a real rule. Raised inside tapegrad only: the tracer's dispatch
    catches it and hands the operation to the complex rules (rules/complex.py)."""


class ComplexResult(TapegradTypeError):
    """A traced function took or returned complex values where the real machinery was set up;
    grad, value_and_grad, vjp and jvp catch it and take their complex path (operators/api.py)."""


def _holds_complex_tracers(a):
    """An object array with complex traced elements (np.array of complex traced scalars)?"""
    return any(getattr(type(e), "_complex_traced", False) for e in a.reshape(-1).tolist())


def _as_float_array(x):
    if isinstance(x, np.ndarray):
        if x.dtype == np.float64:
            return x
        if x.dtype.kind in "biuf":
            return x.astype(np.float64)
        raise (ComplexOperand if x.dtype.kind == "c" or (
            x.dtype.kind == "O" and _holds_complex_tracers(x)) else TapegradTypeError)(
            f"tapegrad: cannot use an array of dtype {x.dtype} in a traced operation "
                        "(only real numbers are supported)")
    if isinstance(x, (bool, int, float, np.number, np.bool_)):
        if isinstance(x, (complex, np.complexfloating)):
            raise ComplexOperand("tapegrad: a complex number in a real traced operation")
        return np.asarray(x, dtype=np.float64)
    if isinstance(x, complex) or getattr(type(x), "_complex_traced", False):
        raise ComplexOperand("tapegrad: a complex number in a real traced operation")
    a = np.asarray(x)
    if a.dtype.kind == "O" and _holds_complex_tracers(a):
        raise ComplexOperand("tapegrad: a complex traced value in a real traced operation")
    if a.dtype.kind not in "biuf":
        raise TapegradTypeError(f"tapegrad: cannot use {type(x).__name__} (dtype {a.dtype}) in a traced "
                        "operation (only real numbers are supported)")
    return a.astype(np.float64)


def top_recorder(*xs):
    """The innermost active recorder among the tracers in xs (None if there is none)."""
    best = None
    for x in xs:
        if type(x) is Tracer:
            r = x._rec
            if r.active and (best is None or r.level > best.level):
                best = r
    return best


def value_of(x):
    """The NumPy value of x (a tracer's current value, or x itself)."""
    return x._val if type(x) is Tracer else x


_scalar_tracer = _fast.scalar_tracer   # Tracer(rec, off, f) of a Python float f, no __init__
_HANDED = object()      # Tracer._src of a 0-d tracer NumPy got from __array__ as an element
_F64 = np.dtype(np.float64)


class Tracer(_fast.TracerCore):
    """An array being traced. Behaves like a read-only float64 ndarray.

    Scalar-heavy code (a Python loop over x[0], x[1], ...) makes one tracer per operation.
    Their 0-d float64 values are kept as Python floats (``_f``) and become a 0-d ndarray only
    when ``_val`` is asked for: creating a 0-d array cost ~0.2 us per operation, and the
    rules' scalar fast paths compute on the floats directly (the same IEEE double operations).
    The fields _rec, _off, _arr and _f are C fields of the base (_core/recording.pyx), which
    also holds the scalar fast paths of + - * / and of __array_ufunc__ (their general paths are
    here, handed to it by _install_fast).
    """

    # _base (set on views only: x[k], contiguous slices, reshapes): (weakref to the array it is a
    # view of, or that one's root, and its start in the root's flat elements); _views (on such a
    # root): weak references to its views. Item assignment reads them (rules.base.setitem):
    # tracers have no view semantics, so a write NumPy would show through a view is refused.
    # _src (set only by __array__): on the elements of the object array it makes, the tracer
    # they are elements of (so a run of them is known to lie in one allocation: from_objects);
    # on a 0-d tracer NumPy puts into an object array itself, _HANDED. Either way NumPy's own
    # float() of it is refused (_to_number).
    __slots__ = ("_base", "_views", "_src")
    __array_priority__ = 1000.0

    def __init__(self, rec, off, val):
        self._rec = rec
        self._off = off
        if type(val) is float:
            self._f = val
            self._arr = None
        else:
            self._f = None
            self._arr = val

    @property
    def _val(self):
        """The value as an ndarray (made from the float on first use for a scalar tracer)."""
        a = self._arr
        if a is None:
            a = self._arr = np.array(self._f)
        return a

    @_val.setter
    def _val(self, value):
        self._arr = value
        self._f = None

    # ---- array attributes
    shape = property(lambda self: self._val.shape)
    ndim = property(lambda self: self._val.ndim)
    size = property(lambda self: self._val.size)

    @property
    def dtype(self):
        # np.mean / np.var / np.std (np.nanmean, np.nanstd) of a list of tracers sum it as an
        # object array (see __array__) and then call ``ret.dtype.type(ret / n)`` if the sum has
        # a dtype: that is np.float64(tracer), a float() dropping the derivative. Hidden from
        # those frames (_NUMPY_SCALAR_CASTS), they compute ``ret / n`` instead, which is traced.
        if sys._getframe(1).f_code in _NUMPY_SCALAR_CASTS:
            raise AttributeError("dtype")
        return self._val.dtype

    @property
    def T(self):
        return rules.transpose(self)

    @property
    def value(self):
        """The current value as a NumPy array (a constant: no derivative flows through it)."""
        return self._val.copy()

    def __len__(self):
        if self._val.ndim == 0:
            raise TapegradTypeError("len() of unsized traced array")
        return self._val.shape[0]

    def __iter__(self):
        if self._val.ndim == 0:
            raise TapegradTypeError("iteration over a 0-d traced array")
        return (self[i] for i in range(self._val.shape[0]))

    def __repr__(self):
        return f"Tracer({self._val!r}, level={self._rec.level})"

    def __hash__(self):
        return id(self)

    # ---- NumPy protocols
    def __array_function__(self, func, types, args, kwargs):
        try:
            return rules.apply_function(func, args, kwargs)
        except ComplexOperand:
            r = _complex_hook("function", func, args, kwargs) if _complex_hook else None
            if r is None:
                raise
            return r

    def __array__(self, dtype=None, copy=None):
        """NumPy's conversion (np.array / np.asarray of a tracer or of a list holding tracers,
        np.r_, np.c_, np.mean of a list, ...): NumPy must get an ndarray here, and gives the
        tracer no other door. While recording, and unless a numeric dtype is asked for, the
        answer is an object array of scalar tracers (this array's elements, aliases of its work
        slots): NumPy's object loops then compute with tracers (+ - * / ** @, sum, prod, max,
        and the ufuncs whose object loop calls a method: exp, log, sin, sqrt, ...; see the
        methods below), and the next traced operation that meets the object array turns it
        back into one traced array (Recorder.operand / from_objects). A float dtype would take
        the values only, dropping the derivative: refused."""
        if dtype is not None and np.dtype(dtype).kind != "O" or not self._rec.active:
            if self._rec.active and _storing_subscript(sys._getframe(1)):
                raise TapegradTypeError(
                    "tapegrad: assigning a traced value into a NumPy array (a[...] = t) would "
                    "drop its derivative; make the array traced: a = np.zeros_like(x) (x "
                    "traced), then a[...] = t")
            if not self._rec.active:
                raise TapegradTypeError(
                    "tapegrad: a tracer of a finished recording cannot be converted to a NumPy "
                    "array (it escaped the function being differentiated); use its .value")
            if np.dtype(dtype).kind in "iub":
                # np.int64(t), np.asarray(t, dtype=int): NumPy wants an ndarray, whose values
                # decide what follows (indices, counts): the cast's traced value (zero
                # derivative) is guarded, so a replay where it differs records again
                t = self._integer_cast(np.dtype(dtype))
                self._rec.guard(t)
                return t._val.astype(dtype)
            raise TapegradTypeError(
                f"tapegrad: converting a traced array to dtype {np.dtype(dtype)} (np.array/"
                "np.asarray(..., dtype=float), or a NumPy function with no tapegrad rule) would "
                "drop its derivative. Build arrays from traced values with np.stack / "
                "np.concatenate (or np.array/np.asarray without dtype=: tapegrad computes in "
                "float64)")
        if dtype is None and _loading_subscript(sys._getframe(1)):
            # a NumPy array indexed by a traced array (np.eye(k)[labels], labels traced):
            # NumPy needs integers or booleans; an index has no derivative, so its values are
            # guarded (a replay where they differ records again)
            v = self._val
            if v.dtype == np.bool_ or (v.size and np.all(np.isfinite(v)) and np.all(v == np.trunc(v))):
                self._rec.guard(self)
                return v if v.dtype == np.bool_ else v.astype(np.int64)
        self._rec.handed_objects = True
        return self._objects()

    def _objects(self):
        """An object array shaped like self holding scalar tracers of its elements."""
        rec, off = self._rec, self._off
        v = self._val
        if v.ndim == 0:
            # NumPy puts the tracer itself into the array it builds (np.array([t1, t2]) holds
            # t1 and t2): mark it, so that NumPy's own float() of it later is refused
            self._src = _HANDED
            a = np.empty((), dtype=object)
            a[()] = self
            return a
        if v.dtype is _F64:
            items = [_scalar_tracer(rec, off + k, f) for k, f in enumerate(v.ravel().tolist())]
        else:
            flat = v.reshape(-1)
            items = [Tracer(rec, off + k, flat[k:k + 1].reshape(())) for k in range(v.size)]
        for e in items:
            e._src = self
        return np.fromiter(items, dtype=object, count=v.size).reshape(v.shape)

    # ---- conversions (record guards: a replay must see the same value)
    def __bool__(self):
        if self._val.size != 1:
            raise TapegradValueError("The truth value of a traced array with more than one element is "
                             "ambiguous. Use a.any() or a.all() on a comparison")
        if self._rec.active:
            self._rec.guard(self)
        return bool(self._val)

    def _to_number(self, kind):
        if self._val.size != 1:
            raise TapegradTypeError(f"only size-1 traced arrays can be converted to Python {kind.__name__}")
        if self._rec.active and _storing_subscript(sys._getframe(2)):
            # a[k] = t with a a NumPy array: NumPy converts t to a number, which would drop its
            # derivative silently (a float() the user wrote is a decision, guarded below)
            raise TapegradTypeError(
                "assigning a traced value into a NumPy array (a[k] = t) would drop its "
                "derivative; make the array traced: a = np.zeros_like(x) (x traced), then "
                "a[k] = t")
        if self._rec.active and getattr(self, "_src", None) is not None:
            # an element NumPy got from __array__: NumPy itself converts it (astype(float),
            # a float dtype, np.floor's object loop, ...), which would drop its derivative
            raise TapegradTypeError(
                f"tapegrad: NumPy converts a traced element of an object array (np.array/"
                f"np.asarray of traced values) with {kind.__name__}() (astype(float), a float "
                "dtype, an object loop such as np.floor's), which would drop its derivative; "
                "build the array with np.stack / np.concatenate and call the function on it "
                f"(for a constant on purpose: {kind.__name__}(tg.stop_gradient(t)))")
        if self._rec.active:
            self._rec.guard(self)
            hint = ("; if NumPy made this call (astype(float) or a float dtype of an object "
                    "array computed from traced values), build the array with np.stack instead"
                    if self._rec.handed_objects else "")
            warnings.warn(
                f"{kind.__name__}() of a traced value: the result is a constant (replays are "
                f"guarded to see the same value), so no derivative flows through it{hint}",
                TracerConversionWarning, stacklevel=3)
        return kind(self._val.reshape(()))

    def __float__(self):
        return self._to_number(float)

    def __int__(self):
        return self._to_number(int)

    def __index__(self):
        raise TapegradTypeError("a traced array cannot be used as an index; use its .value if the "
                        "index is meant to be constant")

    def item(self):
        return self._to_number(float)

    def tolist(self):
        raise TapegradTypeError("tolist() of a traced array would drop its derivative; index it instead")

    # ---- indexing
    def __getitem__(self, key):
        return rules.getitem(self, key)

    def __setitem__(self, key, value):
        """x[key] = value, recorded as a functional update: x becomes the new array (the old
        values stay what earlier results were computed from)."""
        if not self._rec.active:
            raise TapegradTypeError("item assignment into a tracer of a finished recording")
        new = rules.setitem(self, key, value)
        self._rec, self._off, self._arr, self._f = new._rec, new._off, new._arr, new._f

    # ---- arithmetic
    def __neg__(self): return _unary("neg", self)   # what np.negative would dispatch to
    def __pos__(self): return self
    def __abs__(self): return np.absolute(self)
    # +, -, *, / and __array_ufunc__: TracerCore's (their general paths: _install_fast); the
    # other operators are what NumPy's dispatch would call
    def __floordiv__(self, o): return np.floor_divide(self, o)
    def __rfloordiv__(self, o): return np.floor_divide(o, self)
    def __mod__(self, o): return np.remainder(self, o)
    def __rmod__(self, o): return np.remainder(o, self)
    def __pow__(self, o):
        return _binary("power", self, o) if type(o) in _PLAIN else _ufunc(np.power, self, o)

    def __rpow__(self, o):
        return _binary("power", o, self) if type(o) in _PLAIN else _ufunc(np.power, o, self)

    def __matmul__(self, o): return _ufunc(np.matmul, self, o)
    def __rmatmul__(self, o): return _ufunc(np.matmul, o, self)
    def __lt__(self, o): return _ufunc(np.less, self, o)
    def __le__(self, o): return _ufunc(np.less_equal, self, o)
    def __gt__(self, o): return _ufunc(np.greater, self, o)
    def __ge__(self, o): return _ufunc(np.greater_equal, self, o)
    def __eq__(self, o): return _ufunc(np.equal, self, o)
    def __ne__(self, o): return _ufunc(np.not_equal, self, o)
    def __and__(self, o): return np.logical_and(self, o)
    def __rand__(self, o): return np.logical_and(o, self)
    def __or__(self, o): return np.logical_or(self, o)
    def __ror__(self, o): return np.logical_or(o, self)
    def __invert__(self): return np.logical_not(self)

    # ---- methods
    def reshape(self, *shape, order="C"):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return rules.reshape(self, shape, order=order)

    def ravel(self, order="C"):
        return rules.reshape(self, (-1,), order=order)

    flatten = ravel

    def squeeze(self, axis=None): return np.squeeze(self, axis)
    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = axes[0]
        return rules.transpose(self, axes or None)
    def swapaxes(self, a, b): return np.swapaxes(self, a, b)
    def sum(self, axis=None, keepdims=False, **kw): return np.sum(self, axis=axis, keepdims=keepdims, **kw)
    def mean(self, axis=None, keepdims=False, **kw): return np.mean(self, axis=axis, keepdims=keepdims, **kw)
    def prod(self, axis=None, keepdims=False, **kw): return np.prod(self, axis=axis, keepdims=keepdims, **kw)
    def max(self, axis=None, keepdims=False, **kw): return np.max(self, axis=axis, keepdims=keepdims, **kw)
    def min(self, axis=None, keepdims=False, **kw): return np.min(self, axis=axis, keepdims=keepdims, **kw)
    def var(self, *a, **kw): return np.var(self, *a, **kw)
    def std(self, *a, **kw): return np.std(self, *a, **kw)
    def cumsum(self, *a, **kw): return np.cumsum(self, *a, **kw)
    def dot(self, o): return np.dot(self, o)
    def clip(self, a_min=None, a_max=None): return np.clip(self, a_min, a_max)
    def any(self, *a, **kw): return np.any(self, *a, **kw)
    def all(self, *a, **kw): return np.all(self, *a, **kw)
    def argmax(self, *a, **kw): return np.argmax(self, *a, **kw)
    def argmin(self, *a, **kw): return np.argmin(self, *a, **kw)
    def copy(self):
        """A new array object with the same values (assignments into it leave self alone)."""
        return Tracer(self._rec, self._off, self._arr if self._f is None else self._f)

    def astype(self, dtype, **kw):
        dt = np.dtype(dtype)
        if dt.kind == "f":
            if dt != np.float64:
                warnings.warn("tapegrad computes in float64; astype to a narrower float is ignored",
                              stacklevel=2)
            return self if self._val.dtype == np.float64 else self * 1.0
        if dt.kind in "iub":
            return self._integer_cast(dt)
        raise TapegradTypeError(f"astype({dtype}) of a traced array would drop its derivative")

    def _integer_cast(self, dt):
        """astype of an integer or boolean dtype, traced: NumPy's values (truncation toward
        zero; for bool, x != 0) with zero derivative (a piecewise-constant function). tapegrad
        computes in float64, so the result is a float64 tracer holding the integers (a bool
        tracer for bool); as an index it is an integer index (guarded, as traced indices are)."""
        if dt.kind == "b":
            return self != 0.0
        v = self._val
        if v.dtype == np.bool_:
            return self * 1.0          # 0/1, and a comparison has no derivative
        if dt.kind == "u" and np.any(v < 0):
            raise TapegradValueError(f"astype({dt}) of a traced array with negative values "
                                     "(NumPy's cast of them is undefined)")
        return np.trunc(self)


# NumPy's object loops call a method named after the ufunc on each element (np.exp of an
# object array calls elem.exp()): tracers inside object arrays (Tracer.__array__) answer with
# the traced ufunc. (abs, negative, **, comparisons, max and min use the operators above.)
_OBJECT_LOOP_METHODS = (
    "arccos", "arccosh", "arcsin", "arcsinh", "arctan", "arctanh", "cbrt", "cos", "cosh",
    "deg2rad", "degrees", "exp", "exp2", "expm1", "fabs", "log", "log10", "log1p", "log2",
    "rad2deg", "radians", "rint", "sin", "sinh", "sqrt", "tan", "tanh", "conjugate",
    "arctan2", "fmod", "hypot")


def _object_loop_method(name):
    uf = getattr(np, name)
    if uf.nin == 1:
        def method(self):
            return uf(self)
    else:
        def method(self, other):
            return uf(self, other)
    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"np.{name} of this tracer (what NumPy's object loop calls on an element)."
    return method


for _name in _OBJECT_LOOP_METHODS:
    if not hasattr(Tracer, _name):
        setattr(Tracer, _name, _object_loop_method(_name))
Tracer.conj = Tracer.conjugate
del _name


def _numpy_scalar_casts():
    """The code objects of NumPy's functions that end a reduction of an object array with
    ``ret.dtype.type(ret / n)`` when ``ret`` has a dtype (see Tracer.dtype)."""
    import importlib
    codes = []
    for mods, names in ((("numpy._core._methods", "numpy.core._methods"), ("_mean", "_var", "_std")),
                        (("numpy.lib._nanfunctions_impl", "numpy.lib.nanfunctions"),
                         ("_divide_by_count", "nanstd"))):
        for m in mods:
            try:
                mod = importlib.import_module(m)
            except ImportError:
                continue
            for name in names:
                fn = getattr(mod, name, None)
                fn = getattr(fn, "_implementation", fn)     # array_function_dispatch's wrapper
                code = getattr(fn, "__code__", None)
                if code is not None:
                    codes.append(code)
            break
    return frozenset(codes)


_NUMPY_SCALAR_CASTS = _numpy_scalar_casts()


def _ufunc(ufunc, *inputs):
    """What NumPy's dispatch would do for an operator on a tracer, without its override lookup."""
    for x in inputs:
        if type(x) is not Tracer and hasattr(type(x), "__array_ufunc__") and type(x) is not np.ndarray \
                and not isinstance(x, np.generic):
            return ufunc(*inputs)    # another override type takes part: let NumPy decide
    return _ufunc_general(ufunc, "__call__", inputs, {})


def _ufunc_general(ufunc, method, inputs, kwargs):
    """Tracer.__array_ufunc__ beyond its scalar fast path (TracerCore.__array_ufunc__)."""
    try:
        return rules.apply_ufunc(ufunc, method, inputs, kwargs)
    except ComplexOperand:
        # a complex operand: the complex rules take it (rules/complex.py), else the error stands
        r = _complex_hook("ufunc", ufunc, method, inputs, kwargs) if _complex_hook else None
        if r is None:
            raise
        return r


# The complex rules (tapegrad.rules.complex) install their fallback here: a real rule that meets
# a complex operand raises ComplexOperand, and the dispatch above hands the operation to it.
_complex_hook = None


def install_complex(hook):
    """Called once by tapegrad.rules.complex at import."""
    global _complex_hook
    _complex_hook = hook


# operand types for which an operator is exactly rules.binary (what np.<ufunc> would dispatch to)
_PLAIN = frozenset((Tracer, float, int, np.float64))


# ---------------------------------------------------------------------------- the rules' hook
# The NumPy rules (tapegrad.rules.base) sit above the tracer and are built on it, so the tracer
# does not import them: they install themselves here at import, as autograd's Box registration
# and JAX's ``aval._add`` do. Every NumPy call on a tracer goes to these names.
RULES_API = ("apply_ufunc", "apply_function", "binary", "unary", "getitem", "reshape",
             "transpose", "SCALAR_UNARY_UFUNCS")
rules = None
_binary = _unary = None
_SCALAR_UNARY_UFUNCS = {}


def install_rules(impl):
    """Make ``impl`` (a namespace with the names in ``RULES_API``: tapegrad.rules.base) the
    NumPy dispatch of every tracer. Called once, by that module at import."""
    global rules, _binary, _unary, _SCALAR_UNARY_UFUNCS
    missing = [name for name in RULES_API if not hasattr(impl, name)]
    if missing:
        raise TypeError(f"install_rules: {impl!r} lacks {', '.join(missing)}")
    rules = impl
    _binary, _unary, _SCALAR_UNARY_UFUNCS = impl.binary, impl.unary, impl.SCALAR_UNARY_UFUNCS
    _install_fast()


def _install_fast():
    """Hand the compiled fast paths (_core/recording.pyx) the Tracer type and the general paths."""
    _fast.install(Tracer, _binary, _ufunc, _ufunc_general, _SCALAR_UNARY_UFUNCS, _PLAIN,
                  (np.add, np.subtract, np.multiply, np.true_divide))


_install_fast()     # the Tracer type now; the general paths again when the rules install
