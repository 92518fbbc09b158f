"""The recording's hot paths in C: the state a tracer and its recorder keep, and the scalar fast
paths of + - * / between 0-d tracers and of NumPy's unary ufuncs on a 0-d tracer.

Scalar-heavy code (a Python loop over x[0], x[1], ...) makes one tracer per operation. In Python
an operator's fast path cost about 0.6 us and np.sin of a 0-d tracer 1.3 us, most of it
attribute lookups, argument parsing and the frames themselves. Here the tracer's fields and its
recorder's allocation counter are C struct members and the op goes into the tape's C array
directly.

``TracerCore`` and ``RecorderCore`` are the bases of ``tapegrad.tracing.tracer.Tracer`` and
``Recorder``, which define everything else (and the general paths, handed to ``install``:
this module never imports the Python layers). What a fast path records and computes is exactly
what the general path would: the same opcodes, the same IEEE double operation (C's + - * / on
doubles are Python's float operations), taken only when the result is finite (else NumPy's
value and its warnings come from the general path).
"""
from cpython.long cimport PyLong_AsLongLongAndOverflow
from libc.stdint cimport int64_t
from libc.math cimport isfinite

from .tape cimport Tape, Op
from .opcodes cimport *

# set by install(): the Python subclass of TracerCore that recording makes, the general paths
cdef type _Tracer = None
cdef object _binary = None          # rules.binary(name, a, b)
cdef object _ufunc = None           # the operator's NumPy ufunc call, ufunc(a, b) by dispatch
cdef object _ufunc_general = None   # Tracer's __array_ufunc__ beyond the fast path
cdef dict _scalar_unary = {}        # ufunc -> (the ufunc giving its primitive's value, opcode)
cdef frozenset _plain = frozenset()  # operand types for which an operator is rules.binary
cdef tuple _ufuncs = (None,) * 4    # np.add, np.subtract, np.multiply, np.true_divide
cdef tuple _names = ("add", "subtract", "multiply", "divide")

cdef enum:
    _ADD = 0
    _SUB = 1
    _MUL = 2
    _DIV = 3

cdef int64_t _EXACT_INT = 1 << 53


def install(tracer_type, binary, call_ufunc, ufunc_general, scalar_unary, plain, ufuncs):
    """Hand this module the Tracer type and the general paths (tapegrad.tracing.tracer and,
    once the rules are imported, their binary rule and scalar ufunc table)."""
    global _Tracer, _binary, _ufunc, _ufunc_general, _scalar_unary, _plain, _ufuncs
    if not issubclass(tracer_type, TracerCore):
        raise TypeError(f"install: {tracer_type!r} is not a TracerCore subclass")
    _Tracer = tracer_type
    _binary, _ufunc, _ufunc_general = binary, call_ufunc, ufunc_general
    _scalar_unary = dict(scalar_unary)
    _plain = frozenset(plain)
    _ufuncs = tuple(ufuncs)


cdef class RecorderCore:
    """The part of a Recorder the fast paths touch: its tape, its work-slot counter, whether it
    records, its nesting level."""
    cdef public Tape tape
    cdef public int64_t nwork      # work slots allocated so far (the tape learns it at finish)
    cdef public bint active
    cdef public int level


cdef class TracerCore:
    """A tracer's own fields: its recorder, its work offset, and its value, either a Python
    float (``_f``, 0-d float64 tracers) or an ndarray (``_arr``)."""
    cdef public RecorderCore _rec
    cdef public object _off
    cdef public object _arr
    cdef public object _f
    cdef object __weakref__

    def __add__(self, o):
        return _arith(self, o, _ADD, False)

    def __radd__(self, o):
        return _arith(self, o, _ADD, True)

    def __sub__(self, o):
        return _arith(self, o, _SUB, False)

    def __rsub__(self, o):
        return _arith(self, o, _SUB, True)

    def __mul__(self, o):
        return _arith(self, o, _MUL, False)

    def __rmul__(self, o):
        return _arith(self, o, _MUL, True)

    def __truediv__(self, o):
        return _arith(self, o, _DIV, False)

    def __rtruediv__(self, o):
        return _arith(self, o, _DIV, True)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        """np.sin(x) of a 0-d tracer (inputs is (self,)): what rules.unary records, without its
        lookups (the ufunc on a Python float runs the loop it runs on a 0-d array); everything
        else goes to the general path."""
        cdef RecorderCore rec
        cdef int64_t off
        f = self._f
        if f is not None and len(inputs) == 1 and not kwargs and method == "__call__":
            hit = _scalar_unary.get(ufunc)
            rec = self._rec
            if hit is not None and rec is not None and rec.active:
                r = float((<tuple> hit)[0](f))
                off = rec.nwork
                rec.tape._push_op((<tuple> hit)[1], off, self._off, 1).d = 0.0
                rec.nwork = off + 1
                return _scalar(rec, off, r)
        return _ufunc_general(ufunc, method, inputs, kwargs)


def scalar_tracer(RecorderCore rec, int64_t off, f):
    """A tracer of work slot ``off`` of ``rec`` with the Python float value ``f`` (no __init__)."""
    return _scalar(rec, off, float(f))


cdef inline TracerCore _scalar(RecorderCore rec, int64_t off, object f):
    cdef TracerCore t = <TracerCore> TracerCore.__new__(_Tracer)
    t._rec = rec
    t._off = off
    t._f = f
    return t


cdef inline double _op(int which, double x, double y) noexcept:
    if which == _ADD:
        return x + y
    if which == _SUB:
        return x - y
    if which == _MUL:
        return x * y
    return x / y


cdef int _BIN_CODE[4]
_BIN_CODE[:] = [OP_ADD, OP_SUB, OP_MUL, OP_DIV]
# self op c: x + c, x + (-c), x * c, x / c; c op self (reflected): c + x, c - x, c * x, c / x
cdef int _CONST_CODE[4]
_CONST_CODE[:] = [OP_ADDC, OP_ADDC, OP_MULC, OP_DIVC]
cdef int _RCONST_CODE[4]
_RCONST_CODE[:] = [OP_ADDC, OP_RSUBC, OP_MULC, OP_RDIVC]


cdef object _arith(TracerCore self, object o, int which, bint reflected):
    """``self op o``, or ``o op self`` if reflected: two 0-d tracers of one active recording
    make one binary op; a 0-d tracer and a float constant c (or an int of at most 2**53, which
    converts exactly, as NumPy does) make the unary primitive with parameter c (x - c is
    x + (-c)). Everything else is rules.binary (for operands it takes) or NumPy's dispatch."""
    cdef RecorderCore rec
    cdef TracerCore other
    cdef double r, c
    cdef int64_t off
    cdef long long iv
    cdef int overflow = 0
    cdef Op* op
    f = self._f
    to = type(o)
    if f is not None:
        rec = self._rec
        if to is _Tracer:
            other = <TracerCore> o
            # (Python calls a reflected operator only for a non-Tracer o: not fast-pathed)
            if (not reflected and other._f is not None and other._rec is rec and rec is not None
                    and rec.active):
                r = _op(which, <double> f, <double> other._f)
                if isfinite(r):
                    off = rec.nwork
                    rec.tape._push_binary(_BIN_CODE[which], off, self._off, other._off, 1, 0)
                    rec.nwork = off + 1
                    return _scalar(rec, off, r)
        elif rec is not None and rec.active and (to is float or to is int):
            if to is float:
                c = <double> o
            else:
                iv = PyLong_AsLongLongAndOverflow(o, &overflow)
                if overflow or iv > _EXACT_INT or iv < -_EXACT_INT:
                    return _general(self, o, which, reflected, to)
                c = <double> iv
            r = _op(which, c, <double> f) if reflected else _op(which, <double> f, c)
            if isfinite(r):
                off = rec.nwork
                op = rec.tape._push_op(_RCONST_CODE[which] if reflected else _CONST_CODE[which],
                                       off, self._off, 1)
                op.d = -c if (which == _SUB and not reflected) else c
                rec.nwork = off + 1
                return _scalar(rec, off, r)
    return _general(self, o, which, reflected, to)


cdef object _general(TracerCore self, object o, int which, bint reflected, object to):
    name = _names[which]
    if to in _plain:
        return _binary(name, o, self) if reflected else _binary(name, self, o)
    uf = _ufuncs[which]
    return _ufunc(uf, o, self) if reflected else _ufunc(uf, self, o)
