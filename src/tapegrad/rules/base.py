"""How each NumPy function records onto the tape.

One entry per NumPy function or ufunc, mapping it onto the core's primitives (an elementwise
primitive's value and derivatives are one row of ``primitives/table.py``, from which the kernels
of ``_core/`` and the NumPy formulas of ``engine/reference.py`` are made; the other primitives'
rules are written per sweep in ``_core/sweep_*.pxi``):

- elementwise unary ops (with a scalar parameter for ``x + c``, ``c / x``, ``x ** c``, ...),
- elementwise binary ops with broadcasting by index arithmetic (no copy) when an operand's
  shape is a contiguous block of the output's, else by an explicit gather,
- reductions over one (pre, m, post) block, batched matmul,
- gather (indexing, general permutations), transpose (a swap of two neighbouring groups of
  axes: matrix and batched transposes, moveaxis to either end, einsum's permutations; runs
  moved whole, no index pool), scatter_add and copy (assembly); reshapes and contiguous
  slices are free aliases of the same work-buffer region.

When no operand is traced the NumPy function runs as usual (constant folding).
"""
import math
import operator
import weakref
import sys

import numpy as np
import scipy.special as sps

from .._core import sweeps as _sweeps
from .._core.tape import OPCODES, FAMILIES, FLAG_A, FLAG_B, FLAG_C, MAX_WORK, OPTABLE_FINGERPRINT
from ..tracing import pytree as _tree
from .. import primitives as _prims
from ..primitives import derived as _derived
from . import registry
from ..errors import TapegradTypeError, TapegradValueError, UnsupportedError

if _prims.fingerprint() != OPTABLE_FINGERPRINT:
    raise ImportError("tapegrad._core was built from another primitive table "
                      f"({OPTABLE_FINGERPRINT}, the table is {_prims.fingerprint()}): regenerate "
                      "(python -m tapegrad.primitives.codegen _core) and rebuild")
from ..tracing.tracer import Tracer, top_recorder, value_of, _as_float_array, install_rules

# The elementwise primitives' NumPy callables and value functions, derived from the primitive
# table (tapegrad/primitives/table.py). A ufunc called on a Python float runs the same float64 loop as
# on a 0-d array (same bits, same floating-point warnings), which lets the scalar fast path
# below call _UNARY_UFUNC on floats without making 0-d arrays.
_UNARY_UFUNC = _derived.UNARY_VALUE_UFUNC       # name -> the ufunc giving its value
_UNARY_VALUE = _derived.UNARY_VALUE             # name -> value(x, d) while recording
_BINARY_VALUE = _derived.BINARY_VALUE           # name -> ufunc


def logaddexp_value(a, b):
    """np.logaddexp as the sweeps compute it, by their kernel (sweeps.logaddexp_values: max(a,
    b) + log1p(exp(-|a - b|)), a + log 2 where a == b, with NumPy's exp and log1p): the same
    bits as the replay, within an ulp or so of np.logaddexp (whose loop is several times
    slower). Operands broadcasting beyond one value are materialized first."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    shape = np.broadcast_shapes(a.shape, b.shape)
    y = np.empty(shape)
    a, b = (np.ascontiguousarray(v if v.size == 1 or v.shape == shape
                                 else np.broadcast_to(v, shape)).reshape(-1) for v in (a, b))
    _sweeps.logaddexp_values(a, b, y.reshape(-1))
    return y


# the values of recorded binary ops (the sweeps' way where it differs from the ufunc's)
_RECORDED_VALUE = dict(_BINARY_VALUE, logaddexp=logaddexp_value)
_COMPARISONS = {r["name"] for r in _prims.elementwise(("compare",))}
UNARY_UFUNCS = _derived.UNARY_UFUNCS            # NumPy callable -> primitive name
BINARY_UFUNCS = _derived.BINARY_UFUNCS

# Tracer.__array_ufunc__'s fast path for a 0-d tracer: ufunc -> (the ufunc giving the value of
# its primitive, opcode) for the unary ufuncs whose primitive is one ufunc of x
SCALAR_UNARY_UFUNCS = {uf: (_UNARY_UFUNC[name], OPCODES[name])
                       for uf, name in UNARY_UFUNCS.items() if name in _UNARY_UFUNC}


def _prod(shape):
    return math.prod(shape)


def _const_value(x):
    return _as_float_array(value_of(x))


def _is_objects(a):
    return type(a) is np.ndarray and a.dtype.kind == "O"


def from_objects(a):
    """An object array holding tracers (NumPy's np.array of a list of tracers, np.asarray of
    a tracer, np.r_, ...: see Tracer.__array__) as one traced array of the innermost recording
    among them; ``a`` itself if it holds none."""
    rec = top_recorder(*a.reshape(-1).tolist())
    return a if rec is None else rec.from_objects(a)   # (no tracer: NumPy's error, or ours)


def _no_objects(obj):
    """obj (an argument of a NumPy call, a list or tuple of them) with its object arrays of
    tracers made traced arrays; obj itself (the same object) if it has none."""
    t = type(obj)
    if t is np.ndarray:
        return from_objects(obj) if obj.dtype.kind == "O" else obj
    if t is list or t is tuple:
        new = [_no_objects(o) for o in obj]
        if any(n is not o for n, o in zip(new, obj)):
            return t(new)
    return obj


def _has_objects(obj):
    t = type(obj)
    if t is np.ndarray:
        return obj.dtype.kind == "O"
    if t is list or t is tuple:
        for o in obj:         # (a loop: any() over a generator costs ~1 us a call here)
            to = type(o)
            if to is Tracer or to is float or to is int:
                continue
            if _has_objects(o):
                return True
    return False


# ------------------------------------------------------------------ primitives
# Scalar (0-d) values of the IEEE basic operations computed on Python floats: the same double
# operation NumPy performs, bitwise, without a ufunc call (the table's "ieee" trait). Used only
# when the result is finite (so NumPy would not have warned) and no division by zero is involved.
_PY_UNARY = _derived.PY_UNARY
_PY_BINARY = _derived.PY_BINARY


def _py_float(fn, a, b):
    """fn(a, b) on Python floats if the result is finite and exact in Python, else None."""
    try:
        r = fn(a, b)
    except ZeroDivisionError:
        return None
    return r if r - r == 0.0 else None


def _scalar_unary(name, x, d):
    """The value of a unary primitive at the Python float x, as a Python float, or None where
    only the array path gives NumPy's exact result (non-finite basic ops, powc, ...)."""
    fn = _PY_UNARY.get(name)
    if fn is not None:      # _py_float, inlined: this runs for every x op number of a loop
        try:
            r = fn(x, d)
        except ZeroDivisionError:
            return None
        return r if r - r == 0.0 else None
    uf = _UNARY_UFUNC.get(name)
    if uf is not None:
        return float(uf(x))
    if name in _POWERS:     # NumPy's power of the float and the constant (a 0-d array's loop)
        return float(_UNARY_VALUE[name](x, d))
    return None


_POWERS = frozenset(("powc", "rpowc"))     # x ** c and c ** x



def unary(name, x, d=0.0):
    if type(x) is Tracer and x._rec.active:      # the usual case, without the generic lookups
        rec, off = x._rec, x._off
        if x._f is not None and type(d) is float:
            y = _scalar_unary(name, x._f, d)
            if y is not None:
                return rec.emit_unary(y, OPCODES[name], off, d)
        v = x._val
        if v.dtype is not _F64:
            v = v.astype(np.float64)
    else:
        rec = top_recorder(x)
        if rec is None:
            return _UNARY_VALUE[name](_as_float_array(value_of(x)), d)
        off, _, v = rec.operand(x)
    if v.ndim == 0 and type(d) is float:
        y = _scalar_unary(name, float(v), d)
        if y is not None:
            return rec.emit_unary(y, OPCODES[name], off, d)
    y = np.asarray(_UNARY_VALUE[name](v, d), dtype=np.float64)
    if y.size and type(y) is np.ndarray:
        return _keep_costly(rec, name, rec.emit_unary(y, OPCODES[name], off, float(d)), y)
    t = rec.new(y)
    if y.size:
        rec.op(OPCODES[name], 0, t._off, off, n=y.size, d=float(d), reads=(off,))
    return t


def stop_gradient(x):
    """x (a pytree) as values with no derivative at any level of nesting, as JAX's
    ``stop_gradient``: one zero-derivative op per traced leaf, so a replayed tape recomputes the
    value at the new point (it is not frozen into a constant)."""
    leaves, td = _tree.flatten(x)
    return _tree.unflatten(td, [unary("stop_gradient", v) if type(v) is Tracer else v
                                for v in leaves])


# On an outer recording's tracers (nesting: the reference sweep replays the inner tape on them)
# the value of stop_gradient must stop there too, so its value function is stop_gradient itself.
_UNARY_VALUE["stop_gradient"] = lambda x, d: stop_gradient(x)


_SCALAR_SPECIAL = {  # (name, constant on the left?) -> (unary primitive, parameter from c)
    ("add", False): ("addc", lambda c: c), ("add", True): ("addc", lambda c: c),
    ("subtract", False): ("addc", lambda c: -c), ("subtract", True): ("rsubc", lambda c: c),
    ("multiply", False): ("mulc", lambda c: c), ("multiply", True): ("mulc", lambda c: c),
    ("divide", False): ("divc", lambda c: c),     # x / c exactly as NumPy divides
    ("divide", True): ("rdivc", lambda c: c),
    ("power", False): ("powc", lambda c: c), ("power", True): ("rpowc", lambda c: c),
}


# the same by side, looked up by name alone on the fast path: x op c, and c op x
_CONST_RIGHT = {name: v for (name, left), v in _SCALAR_SPECIAL.items() if not left}
_CONST_LEFT = {name: v for (name, left), v in _SCALAR_SPECIAL.items() if left}


def _bmode(shape, out_shape):
    """(div, mod) such that operand index = (i // div) % mod, or None if not a block."""
    n = _prod(out_shape)
    if shape == out_shape:
        return (1, max(n, 1))
    s = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    if s == tuple(out_shape):
        return (1, max(n, 1))
    nz = [i for i, k in enumerate(s) if k != 1]
    if not nz:
        return (1, 1)
    i0, i1 = nz[0], nz[-1] + 1
    if all(s[i] == out_shape[i] for i in range(i0, i1)):
        return (_prod(out_shape[i1:]), _prod(out_shape[i0:i1]))
    return None


def broadcast_to(x, shape):
    """Materialize x broadcast to ``shape`` (a gather for tracers)."""
    shape = tuple(shape)
    if type(x) is not Tracer or not x._rec.active:
        return np.broadcast_to(_const_value(x), shape)
    if x.shape == shape:
        return x
    # NumPy broadcasts as a view of any size; we materialize values and indices, so refuse
    # what no work buffer may hold (the bound a loaded tape's work buffer has) up front
    n = np.broadcast_to(np.empty(x.shape, dtype=np.bool_), shape).size
    if n > MAX_WORK:
        raise TapegradValueError(f"tapegrad: broadcasting a traced array to shape {shape} ({n} elements) "
                         f"would materialize more than {MAX_WORK} values")
    idx = np.broadcast_to(np.arange(x.size).reshape(x.shape), shape)
    return gather(x, idx)


_F64 = np.dtype(np.float64)   # builtin dtypes are singletons: compared with ``is``, cheaply
# Elementwise ops whose value costs much more than a copy (a transcendental function per
# element): a re-traced gradient keeps their recorded values (Recorder.keep) instead of
# computing them again; matmul keeps its value too.
_COSTLY = frozenset(("exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sin", "cos",
                     "tan", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "arcsinh",
                     "arccosh", "arctanh", "expit", "logit", "erf", "erfc", "softplus", "cbrt",
                     "powc", "rpowc", "power", "logaddexp", "arctan2", "hypot"))
_EXACT_INT = 2 ** 53


def _fast_scalar(c):
    """c as a float if it is a plain number the scalar special case may take, else None."""
    tc = type(c)
    if tc is float or tc is np.float64:
        return float(c)
    if tc is int and -_EXACT_INT <= c <= _EXACT_INT:
        return float(c)
    return None


def binary(name, x, y):
    # Fast paths for what scalar-heavy loops record most; each gives exactly what the general
    # path below gives. (1) a tracer of an active recording with a plain number constant:
    tx, ty = type(x), type(y)
    if tx is Tracer and ty is not Tracer:
        spec = _CONST_RIGHT.get(name)
        if spec is not None and x._rec.active:
            c = y if ty is float else _fast_scalar(y)     # a float needs no conversion
            if c is not None:
                prim, par = spec
                c = par(c)
                return unary("square" if prim == "powc" and c == 2.0 else prim, x, c)
    elif ty is Tracer and tx is not Tracer:
        spec = _CONST_LEFT.get(name)
        if spec is not None and y._rec.active:
            c = x if tx is float else _fast_scalar(x)
            if c is not None:
                prim, par = spec
                return unary(prim, y, par(c))
    # (2) two tracers of the same active recording with the same shape (no broadcasting);
    # first two scalars held as Python floats, without making any array
    elif tx is Tracer and ty is Tracer and x._rec is y._rec and x._rec.active:
        rec = x._rec
        fn = _PY_BINARY.get(name)
        if fn is not None and x._f is not None and y._f is not None:
            val = _py_float(fn, x._f, y._f)
            if val is not None:
                return rec.emit_binary(val, OPCODES[name], x._off, y._off)
        xv, yv = x._val, y._val
        if xv.shape == yv.shape and xv.size:
            if xv.dtype is not _F64:
                xv = xv.astype(np.float64)
            if yv.dtype is not _F64:
                yv = yv.astype(np.float64)
            val = None
            if xv.ndim == 0 and fn is not None:
                val = _py_float(fn, float(xv), float(yv))
            if val is None:
                val = np.asarray(_RECORDED_VALUE[name](xv, yv))
                if name not in _COMPARISONS and val.dtype is not _F64:
                    val = val.astype(np.float64)
            return _keep_costly(rec, name, rec.emit_binary(val, OPCODES[name], x._off, y._off),
                                val)
    # (3) a tracer of an active recording and a float64 array of its shape (a data array,
    # a constant's part): the general path below without its lookups (one op, the array a
    # constant operand)
    if (tx is Tracer and ty is np.ndarray) or (ty is Tracer and tx is np.ndarray):
        left = tx is np.ndarray
        t, c = (y, x) if left else (x, y)
        rec, tv = t._rec, t._val
        if (rec.active and c.dtype is _F64 and tv.dtype is _F64 and c.shape == tv.shape
                and c.size > 1):
            return _binary_array_const(rec, name, t, tv, c, left)
    rec = top_recorder(x, y)
    if rec is None:
        return _BINARY_VALUE[name](value_of(x), value_of(y))
    xo, xc, xv = rec.operand(x)
    yo, yc, yv = rec.operand(y)
    out_shape = xv.shape if xv.shape == yv.shape else np.broadcast_shapes(xv.shape, yv.shape)
    # x op c and c op x with a constant scalar: one unary primitive with parameter c
    # (not for a tracer of an outer recording: baked into the parameter it would lose its
    # derivative, e.g. grad of a function that calls grad(inner)(x, a) with a traced a)
    for (co, cc, cv, vo, c_obj, left) in ((yo, yc, yv, x, y, False), (xo, xc, xv, y, x, True)):
        if (cc and cv.size == 1 and (name, left) in _SCALAR_SPECIAL and not (xc and yc)
                and not (type(c_obj) is Tracer and c_obj._rec.active)):
            prim, par = _SCALAR_SPECIAL[(name, left)]
            c = par(float(cv.reshape(())))
            if prim == "powc" and c == 2.0:
                prim = "square"  # x * x: the same value as pow(x, 2), several times cheaper
            t = unary(prim, vo, c)
            return reshape(t, out_shape) if t.shape != out_shape else t
    return _record_binary(rec, name, xo, xc, xv, x, yo, yc, yv, y, out_shape)


def _recorded_value(name, xv, yv):
    """A binary op's value as a recording computes it (float64, or bool for a comparison)."""
    val = _RECORDED_VALUE[name](xv, yv)
    return val if name in _COMPARISONS else np.asarray(val, dtype=np.float64)


def _keep_costly(rec, name, t, val):
    """t, its value kept for a re-traced gradient when the op is a costly one."""
    if rec.captured is not None and name in _COSTLY:
        rec.keep(t, val, True)
    return t


def _record_binary(rec, name, xo, xc, xv, x, yo, yc, yv, y, out_shape):
    """The value and the op of binary's general path (operands as rec.operand gives them);
    a costly op's value is kept for a re-traced gradient."""
    val = _recorded_value(name, xv, yv)
    return _keep_costly(rec, name, binary_op(rec, name, val, xo, xc, xv, x, yo, yc, yv, y,
                                             out_shape), val)


def _binary_array_const(rec, name, t, tv, c, left):
    """binary(name, t, c) (or (c, t) if left) for a tracer t of rec with float64 value tv and
    a float64 ndarray c of the same shape, more than one element: what the general path
    records (binary_op's emitted op without broadcasting, c its constant operand), without
    its operand lookups."""
    co = rec.const(c)
    if left:
        val = _recorded_value(name, c, tv)
        r = rec.emit_binary(val, OPCODES[name], co, t._off, FLAG_A)
    else:
        val = _recorded_value(name, tv, c)
        r = rec.emit_binary(val, OPCODES[name], t._off, co, FLAG_B)
    return _keep_costly(rec, name, r, val)


def binary_op(rec, name, val, xo, xc, xv, x, yo, yc, yv, y, out_shape):
    """Record the binary op with value val (binary's general path, broadcasting)."""
    n = val.size
    if n == 0:
        return rec.new(val)
    if xv.shape == out_shape and yv.shape == out_shape:
        # no broadcasting (the usual case): both operands read element by element, one
        # emitted op (a constant operand flagged: the liveness pass reads the flags)
        return rec.emit_binary(val if type(val) is np.ndarray else np.asarray(val),
                               OPCODES[name], xo, yo, (FLAG_A if xc else 0) | (FLAG_B if yc else 0))
    modes = []
    ops = []
    for (o, c, v, orig) in ((xo, xc, xv, x), (yo, yc, yv, y)):
        m = _bmode(v.shape, out_shape)
        if m is None:
            if c:
                v = np.ascontiguousarray(np.broadcast_to(v, out_shape))
                o = rec.const(v, source=orig if type(orig) is Tracer and orig._rec.active else None)
            else:
                o = broadcast_to(orig, out_shape)._off
            m = (1, n)
        modes.append(m)
        ops.append(o)
    flags = (FLAG_A if xc else 0) | (FLAG_B if yc else 0)
    t = rec.new(val)
    reads = tuple(o for o, c in ((ops[0], xc), (ops[1], yc)) if not c)
    rec.op(OPCODES[name], flags, t._off, ops[0], ops[1], n=n,
           p=(modes[0][0], modes[0][1], modes[1][0], modes[1][1]), reads=reads)
    return t


def where(cond, x, y):
    rec = top_recorder(cond, x, y)
    if rec is None:
        return np.where(value_of(cond), value_of(x), value_of(y))
    cv = np.asarray(value_of(cond)).astype(bool)
    xo, xc, xv = rec.operand(x)
    yo, yc, yv = rec.operand(y)
    out_shape = np.broadcast_shapes(cv.shape, xv.shape, yv.shape)
    val = np.where(cv, xv, yv).astype(np.float64)
    n = val.size
    if n == 0:
        return rec.new(val)
    if type(cond) is Tracer and cond._rec is rec:
        co, cc = broadcast_to(cond, out_shape)._off, False
    else:
        co, cc = rec.const(np.ascontiguousarray(np.broadcast_to(cv, out_shape)).astype(np.float64),
                           source=cond if type(cond) is Tracer and cond._rec.active else None), True
    modes, ops = [], []
    for (o, c, v, orig) in ((xo, xc, xv, x), (yo, yc, yv, y)):
        m = _bmode(v.shape, out_shape)
        if m is None:
            if c:
                o = rec.const(np.ascontiguousarray(np.broadcast_to(v, out_shape)),
                              source=orig if type(orig) is Tracer and orig._rec.active else None)
            else:
                o = broadcast_to(orig, out_shape)._off
            m = (1, n)
        modes.append(m)
        ops.append(o)
    flags = (FLAG_A if xc else 0) | (FLAG_B if yc else 0) | (FLAG_C if cc else 0)
    t = rec.new(val)
    reads = tuple(o for o, c in ((ops[0], xc), (ops[1], yc), (co, cc)) if not c)
    rec.op(OPCODES["where"], flags, t._off, ops[0], ops[1], co, n=n,
           p=(modes[0][0], modes[0][1], modes[1][0], modes[1][1]), reads=reads)
    return t


def _fmax_fmin(name, x, y):
    """np.fmax / np.fmin: maximum / minimum except that a NaN loses to a number (NaN only
    when both are), by where on recorded x != x masks, so replays see the NaNs of their x."""
    m = binary(name, x, y)
    m = where(binary("not_equal", y, y), x, m)
    return where(binary("not_equal", x, x), y, m)


def _norm_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (tuple, list)):
        axes = tuple(operator.index(a) for a in axis)
    else:
        axes = (operator.index(axis),)
    out = []
    for a in axes:
        if not -ndim <= a < max(ndim, 1):
            raise np.exceptions.AxisError(a, ndim)
        out.append(a % ndim if ndim else 0)
    if len(set(out)) != len(out):
        raise TapegradValueError("duplicate value in 'axis'")
    return tuple(sorted(out))


_REDUCE_VALUE = {"sum": np.sum, "prod": np.prod, "max": np.max, "min": np.min}
# the ufunc reductions np.sum, np.prod, np.max and np.min run on an ndarray (same loops, same
# bits, without the Python wrapper's ~2 us)
_REDUCE_UFUNC = {"sum": np.add.reduce, "prod": np.multiply.reduce, "max": np.maximum.reduce,
                 "min": np.minimum.reduce}


def reduce(kind, x, axis=None, keepdims=False):
    """sum / prod / max / min over the given axes."""
    rec = top_recorder(x)
    if rec is None:
        return _REDUCE_VALUE[kind](value_of(x), axis=axis, keepdims=keepdims)
    off, _, v = rec.operand(x)
    if axis is None and v.ndim == 1 and v.size and not keepdims:
        # the common whole-vector reduction (a loss's sum): one op of one row
        t = rec.new(np.asarray(_REDUCE_UFUNC[kind](v), dtype=np.float64))
        rec.op(OPCODES[kind], 0, t._off, off, n=1, p=(1, v.size, 1), reads=(off,))
        return t
    axes = _norm_axes(axis, v.ndim)
    val = np.asarray(_REDUCE_UFUNC[kind](v, axis=axes, keepdims=keepdims), dtype=np.float64)
    if v.ndim == 0 or not axes:   # nothing to reduce (axis=() keeps every element)
        return x if type(x) is Tracer and x._rec is rec else reshape(unary("mulc", x, 1.0), v.shape)
    contiguous = all(b - a == 1 for a, b in zip(axes, axes[1:]))
    src = x
    if not contiguous:
        rest = tuple(a for a in range(v.ndim) if a not in axes)
        src = transpose(x, rest + axes)
        axes = tuple(range(len(rest), v.ndim))
    s = src.shape
    pre, m, post = _prod(s[:axes[0]]), _prod(s[axes[0]:axes[-1] + 1]), _prod(s[axes[-1] + 1:])
    t = rec.new(val)
    if val.size:
        rec.op(OPCODES[kind], 0, t._off, src._off, n=pre * post, p=(pre, m, post), reads=(src._off,))
    return t


def mean(x, axis=None, keepdims=False):
    v = value_of(x)
    axes = _norm_axes(axis, np.ndim(v))
    m = _prod(np.shape(v)[a] for a in axes)
    s = reduce("sum", x, axis, keepdims)
    return unary("divc", s, float(m)) if m else unary("mulc", s, np.nan)   # NumPy: sum / m


def gather(x, idx, value=None):
    """x.ravel()[idx] with the shape of idx; a contiguous range is a free alias. value: that
    result when the caller has it already (a transpose: NumPy's copy is faster than fancy
    indexing)."""
    idx = np.asarray(idx, dtype=np.int64)
    rec = top_recorder(x)
    if rec is None:
        return np.asarray(value_of(x)).ravel()[idx]
    flat = idx.ravel()
    n = flat.size
    v = x._val.ravel()
    if n == 0:
        return rec.new(np.zeros(idx.shape))
    start = int(flat[0])
    if flat[-1] - start == n - 1 and (n == 1 or (flat[1] == start + 1
                                                 and bool(np.all(np.diff(flat) == 1)))):
        return Tracer(rec, x._off + start, v[start:start + n].reshape(idx.shape))
    t = rec.new(v[flat].reshape(idx.shape) if value is None else value)
    p0 = rec.tape.add_index(flat)
    rec.op(OPCODES["gather"], 0, t._off, x._off, n=n, p=(p0, x.size), reads=(x._off,))
    return t


def scatter_add(x, idx, n):
    """y = zeros(n); y[idx] += x.ravel() (the adjoint of gather)."""
    idx = np.asarray(idx, dtype=np.int64).ravel()
    rec = top_recorder(x)
    if rec is None:
        return np.bincount(idx, weights=np.asarray(value_of(x), dtype=np.float64).ravel(),
                           minlength=n).astype(np.float64)
    off, _, v = rec.operand(x)
    val = np.bincount(idx, weights=v.ravel(), minlength=n).astype(np.float64)
    t = rec.new(val)
    if n:
        p0 = rec.tape.add_index(idx)
        rec.op(OPCODES["scatter_add"], 0, t._off, off, n=n, p=(p0, idx.size), reads=(off,))
    return t


def _resolve_shape(size, shape):
    """The concrete shape NumPy's reshape would give (one -1 allowed)."""
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(operator.index(k) for k in shape)
    if shape.count(-1) == 1:
        rest = _prod(k for k in shape if k != -1)
        if rest == 0 or size % rest:
            raise TapegradValueError(f"cannot reshape array of size {size} into shape {shape}")
        shape = tuple(size // rest if k == -1 else k for k in shape)
    if _prod(shape) != size or any(k < 0 for k in shape):
        raise TapegradValueError(f"cannot reshape array of size {size} into shape {shape}")
    return shape


def reshape(x, shape, order="C"):
    if type(x) is not Tracer or not x._rec.active:
        return np.reshape(value_of(x), shape, order=order)
    if order == "F":
        return transpose(reshape(transpose(x), tuple(reversed(_resolve_shape(x.size, shape)))))
    if order not in ("C", "A"):
        raise UnsupportedError(f"reshape: order={order!r}")
    return _view(x._rec, x, Tracer(x._rec, x._off, x._val.reshape(shape)))


def transpose(x, axes=None):
    v = value_of(x)
    if type(x) is not Tracer or not x._rec.active:
        return np.transpose(v, axes)
    nd = v.ndim
    axes = tuple(range(nd))[::-1] if axes is None else tuple(a % nd for a in axes)
    if axes == tuple(range(nd)):
        return x
    value = np.ascontiguousarray(np.asarray(v, dtype=np.float64).transpose(axes))
    blocks = _swap_blocks(v.shape, axes)
    if blocks is None:
        return gather(x, np.arange(v.size).reshape(v.shape).transpose(axes), value)
    rec = x._rec
    t = rec.new(value)
    if v.size:
        rec.op(OPCODES["transpose"], 0, t._off, x._off, n=v.size, p=blocks, reads=(x._off,))
    return t


def _swap_blocks(shape, axes):
    """(D, A, B, C) when the permutation axes of shape swaps two neighbouring groups of axes
    (leading axes kept (D), the group of A axes and the group of B axes exchanged, trailing
    axes kept (C)): matrix and batched transposes, moveaxis to the front or the back, the
    permutations einsum makes around a batched product. None: another permutation (a gather)."""
    nd = len(axes)
    d = 0
    while axes[d] == d:
        d += 1
    i = axes[d]                  # the B group starts at axis i: axes[d:] = i.., then d..i-1
    j = i
    q = d
    while q < nd and axes[q] == j:
        q += 1
        j += 1
    if list(axes[q:q + i - d]) != list(range(d, i)) or list(axes[q + i - d:]) != list(range(j, nd)):
        return None
    return (_prod(shape[:d]), _prod(shape[d:i]), _prod(shape[i:j]), _prod(shape[j:]))


def _array_like(s):
    """A list or tuple holding tracers (a piece of np.concatenate, ...) as one traced array."""
    if type(s) is list or type(s) is tuple:
        a = np.asarray(s)          # tracers inside: an object array (Tracer.__array__)
        return from_objects(a) if a.dtype.kind == "O" else a
    return s


def concatenate(seq, axis=0):
    seq = [_array_like(s) for s in seq]
    rec = top_recorder(*seq)
    vals = [value_of(s) for s in seq]
    if rec is None:
        return np.concatenate(vals, axis=axis)
    val = np.concatenate([_as_float_array(v) for v in vals], axis=axis)
    if axis is None:
        seq = [reshape(s, (-1,)) if type(s) is Tracer else np.ravel(s) for s in seq]
        axis = 0
    axis = axis % val.ndim
    # the pieces go end to end into out's slots; for axis > 0 one gather then puts each
    # element where concatenation wants it, so out's value is that end-to-end layout
    ends = val if axis == 0 else np.concatenate([np.ravel(_as_float_array(v)) for v in vals])
    out = rec.new(ends)
    pos = 0
    for s in seq:
        so, sc, sv = rec.operand(s)
        if sv.size:
            rec.op(OPCODES["copy"], FLAG_A if sc else 0, out._off + pos, so, n=sv.size,
                   reads=() if sc else (so,))
        pos += sv.size
    if axis == 0:
        return out
    blocks, pos = [], 0
    for v in vals:
        v = np.asarray(v)
        blocks.append(np.arange(pos, pos + v.size).reshape(v.shape))
        pos += v.size
    return gather(out, np.concatenate(blocks, axis=axis))


def stack(seq, axis=0):
    seq = [_array_like(s) for s in seq]
    if not seq:
        raise TapegradValueError("need at least one array to stack")
    shapes = {np.shape(value_of(s)) for s in seq}
    if len(shapes) != 1:
        raise TapegradValueError("all input arrays must have the same shape")
    nd = len(shapes.pop()) + 1
    axis = operator.index(axis) % nd
    return concatenate([expand_dims(s, axis) for s in seq], axis=axis)


def expand_dims(x, axis):
    return reshape(x, np.expand_dims(np.empty(np.shape(value_of(x)), dtype=np.bool_), axis).shape)


def matmul(a, b):
    rec = top_recorder(a, b)
    if rec is None:
        return np.matmul(value_of(a), value_of(b))
    av, bv = np.asarray(value_of(a)), np.asarray(value_of(b))
    if av.ndim == 0 or bv.ndim == 0:
        raise TapegradValueError("matmul: Input operand does not have enough dimensions")
    if av.ndim <= 2 and bv.ndim <= 2:
        # matrices and vectors (the usual case): one product, no views or batch to work out
        M, K = av.shape if av.ndim == 2 else (1, av.shape[0])
        K2, N = bv.shape if bv.ndim == 2 else (bv.shape[0], 1)
        if K != K2:
            raise TapegradValueError(f"matmul: mismatch in core dimension: {av.shape} @ {bv.shape}")
        oa, ca, va = rec.operand(a)
        ob, cb, vb = rec.operand(b)
        shape = ((M,) if av.ndim == 2 else ()) + ((N,) if bv.ndim == 2 else ())
        return _record_product(rec, ((oa, ca, va, 0), (ob, cb, vb, 0)), shape, 1, M, K, N)
    a2 = reshape(a, (1,) + av.shape) if av.ndim == 1 else a
    b2 = reshape(b, bv.shape + (1,)) if bv.ndim == 1 else b
    s_a, s_b = np.shape(value_of(a2)), np.shape(value_of(b2))
    M, K = s_a[-2:]
    K2, N = s_b[-2:]
    if K != K2:
        raise TapegradValueError(f"matmul: mismatch in core dimension: {av.shape} @ {bv.shape}")
    batch = np.broadcast_shapes(s_a[:-2], s_b[:-2])
    nb = _prod(batch)
    ops = []
    for x, s, rows, cols in ((a2, s_a, M, K), (b2, s_b, K, N)):
        if tuple(s[:-2]) != tuple(batch) and _prod(s[:-2]) != 1:
            x = broadcast_to(x, batch + (rows, cols))
            s = batch + (rows, cols)
        o, c, v = rec.operand(x)
        stride = rows * cols if _prod(s[:-2]) == nb and nb > 1 else 0
        ops.append((o, c, v, stride))
    shape = tuple(batch) + (M, N)
    t = _record_product(rec, ops, shape, nb, M, K, N)
    final = tuple(batch) + ((M,) if av.ndim > 1 else ()) + ((N,) if bv.ndim > 1 else ())
    return reshape(t, final) if final != shape else t


def _record_product(rec, ops, shape, nb, M, K, N):
    """The matmul op of nb products M x K by K x N of the operands ops ((offset, is constant,
    float64 value, batch stride) each), its result of the given shape (nb M N values)."""
    val = _product_value(ops, shape, nb, M, K, N)
    t = rec.new(val)
    if K >= 32:          # (a product over a short inner dimension is as cheap to redo as to keep)
        rec.keep(t, val)
    if val.size:
        flags = (FLAG_A if ops[0][1] else 0) | (FLAG_B if ops[1][1] else 0)
        reads = tuple(o[0] for o in ops if not o[1])
        rec.op(OPCODES["matmul"], flags, t._off, ops[0][0], ops[1][0], n=val.size,
               p=(nb, M, K, N, ops[0][3], ops[1][3]), reads=reads)
    return t


def _product_value(ops, shape, nb, M, K, N):
    """The value of a matmul op by the sweeps' own batched product (sweeps.matmul_value: one
    BLAS library within a gradient, and for C-ordered operands the replay's bits). A matrix
    that is a transposed view (X.T of a C-ordered X) goes by BLAS's transposed flag; another
    layout is copied."""
    flat, trans = [], []
    for o in ops:
        v = o[2]
        t = v.ndim == 2 and not v.flags.c_contiguous and v.flags.f_contiguous
        if not t and not v.flags.c_contiguous:
            v = np.ascontiguousarray(v)
        flat.append((v.T if t else v).reshape(-1))
        trans.append(t)
    val = np.empty(shape)
    _sweeps.matmul_value(flat[0], flat[1], val.reshape(-1), nb, M, K, N, ops[0][3], ops[1][3],
                         trans[0], trans[1])
    return val


def dot(a, b):
    av, bv = value_of(a), value_of(b)
    if np.ndim(av) == 0 or np.ndim(bv) == 0:
        return binary("multiply", a, b)
    if np.ndim(av) <= 2 and np.ndim(bv) <= 2:
        return matmul(a, b)
    if np.ndim(bv) == 1:
        return matmul(a, b)
    # N-d dot: sum over the last axis of a and the second-to-last of b
    K = np.shape(av)[-1]
    b_moved = moveaxis(b, -2, 0)
    out = matmul(reshape(a, (-1, K)), reshape(b_moved, (K, -1)))
    return reshape(out, np.shape(av)[:-1] + np.shape(bv)[:-2] + np.shape(bv)[-1:])


def moveaxis(x, source, destination):
    nd = np.ndim(value_of(x))
    src = [s % nd for s in np.atleast_1d(source)]
    dst = [d % nd for d in np.atleast_1d(destination)]
    order = [n for n in range(nd) if n not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return transpose(x, tuple(order))


def tensordot(a, b, axes=2):
    av, bv = np.shape(value_of(a)), np.shape(value_of(b))
    if isinstance(axes, int):
        ax_a = list(range(len(av) - axes, len(av)))
        ax_b = list(range(axes))
    else:
        ax_a, ax_b = [list(np.atleast_1d(x)) for x in axes]
    ax_a = [x % len(av) for x in ax_a]
    ax_b = [x % len(bv) for x in ax_b]
    free_a = [i for i in range(len(av)) if i not in ax_a]
    free_b = [i for i in range(len(bv)) if i not in ax_b]
    K = _prod(av[i] for i in ax_a)
    at = reshape(transpose(a, free_a + ax_a), (-1, K))
    bt = reshape(transpose(b, ax_b + free_b), (K, -1))
    return reshape(matmul(at, bt), tuple(av[i] for i in free_a) + tuple(bv[i] for i in free_b))


def getitem(x, key):
    rec = x._rec if x._rec.active else None
    if rec is None:
        return x._val[key]
    v = x._val
    if type(key) is int and v.ndim:     # x[k]: a free alias of one row, as gather makes it
        shape = v.shape
        d0 = shape[0]
        if -d0 <= key < d0:
            inner = v.size // d0
            if inner:
                start = (key + d0 if key < 0 else key) * inner
                if v.ndim == 1 and v.dtype is _F64:    # one element: a scalar tracer (a float)
                    return Tracer(rec, x._off + start, float(v[start]))   # (NumPy: a copy)
                return _view(rec, x, Tracer(rec, x._off + start,
                                            v.reshape(-1)[start:start + inner].reshape(shape[1:])))
    t = _basic_view(rec, x, v, key)
    if t is not None:
        return t
    idx = np.arange(x.size).reshape(x.shape)[_plain_key(key)]
    t = gather(x, idx)
    # NumPy's basic indexing (integers, slices, Ellipsis, None) gives a view unless the result
    # is one element; the gather shares x's memory exactly when the elements are contiguous
    if idx.ndim and type(t) is Tracer and x._off <= t._off < x._off + x.size and all(
            k is None or k is Ellipsis or type(k) in (int, slice)
            for k in (key if isinstance(key, tuple) else (key,))):
        _view(rec, x, t)
    return t


_BASIC = (int, slice, type(None), type(Ellipsis))


def _basic_view(rec, x, v, key):
    """x[key] for basic indexing (integers, slices, None, Ellipsis) whose result NumPy gives as
    a C-contiguous view of x (x[a:b], X[i:j], X[2:4, :], ...): a free alias of those slots,
    found in O(1) from where NumPy's own view starts, instead of building an index array of
    x's size. None: not such a key or result (the general path decides)."""
    if type(key) is slice and v.ndim == 1 and v.flags.c_contiguous:
        # x[a:b] of a vector (x[1:], x[:-1]): where the view starts, from the slice itself
        start, stop, step = key.indices(v.shape[0])
        if step == 1 and stop > start:
            return _view(rec, x, Tracer(rec, x._off + start, v[start:stop]))
        if step == 1:
            return None
    if type(key) is tuple:
        for k in key:
            if type(k) not in _BASIC:
                return None
    elif type(key) not in _BASIC:
        return None
    if not v.flags.c_contiguous:
        return None
    r = v[key]
    if type(r) is not np.ndarray or r.ndim == 0 or r.size == 0 or not r.flags.c_contiguous:
        return None
    start, rem = divmod(r.__array_interface__["data"][0] - v.__array_interface__["data"][0],
                        v.itemsize)
    if rem or not 0 <= start <= v.size - r.size:      # (not a view of v: never for basic keys)
        return None
    return _view(rec, x, Tracer(rec, x._off + start, r))


def _plain_key(key):
    """An index with its traced parts replaced by their (guarded) values."""
    keys = key if isinstance(key, tuple) else (key,)
    plain = []
    for k in keys:
        if type(k) is Tracer:
            # a traced index (e.g. a boolean mask from a comparison): its value decides which
            # elements are taken, so replays must see the same value
            if k._rec.active:
                k._rec.guard(k)
            kv = k._val
            if kv.dtype != np.bool_ and not np.all(kv == np.trunc(kv)):
                raise IndexError("only integers, slices, None, Ellipsis and integer or boolean "
                                 "arrays are valid indices (a traced index had non-integer values)")
            plain.append(kv if kv.dtype == np.bool_ else kv.astype(np.int64))
        else:
            plain.append(k)
    return tuple(plain) if isinstance(key, tuple) else plain[0]


# ------------------------------------------------------------------ views and assignment
def _view(rec, base, t):
    """t shares base's memory (x[k], a contiguous slice, a reshape): remember, weakly, which
    array it is a view of and where, as NumPy would (see Tracer._base, Tracer._views)."""
    b = getattr(base, "_base", None)
    root = b[0]() if b is not None else None
    if root is None:
        root, start = base, t._off - base._off
    else:
        start = b[1] + (t._off - base._off)
    t._base = (weakref.ref(root), start)
    try:
        root._views.append(weakref.ref(t))
    except AttributeError:
        root._views = [weakref.ref(t)]
    return t


_VIEW_HELP = ("tapegrad's traced arrays are values, not views: assign into the array itself "
              "(X[i, j] = v, not X[i][j] = v), or take the view after the assignment, or copy it "
              "(x[k].copy())")


def setitem(x, key, value):
    """The array x would be after ``x[key] = value``, recorded functionally: the assigned
    elements come from value (a scatter, whose adjoint gathers them), the others from x (a
    where with the assigned positions zeroed in x's adjoint). NumPy's rules: value broadcast to
    the indexed shape; with repeated indices the last assignment wins (so x[idx] += v adds once
    per position, as NumPy's buffered +=; np.add.at adds every repeat)."""
    rec = x._rec
    v = x._val
    pos = np.arange(v.size).reshape(v.shape)[_plain_key(key)]
    flat = pos.ravel()
    _check_views(rec, x, flat)
    if type(value) is not Tracer and not isinstance(value, (float, int, np.generic)):
        value = np.asarray(value)        # a list of tracers: an object array (Tracer.__array__)
        if _is_objects(value):
            value = from_objects(value)
    if type(value) is Tracer and value._rec.active:
        vals = reshape(broadcast_to(value, pos.shape), (-1,))
    else:
        vals = np.broadcast_to(_const_value(value), pos.shape).ravel()
    if flat.size > 1:
        last = flat.size - 1 - np.unique(flat[::-1], return_index=True)[1]
        if last.size != flat.size:              # repeated positions: the last one wins
            keep = np.sort(last)
            flat = flat[keep]
            vals = gather(vals, keep) if type(vals) is Tracer else vals[keep]
    mask = np.zeros(v.size, dtype=bool)
    mask[flat] = True
    return where(mask.reshape(v.shape), reshape(scatter_add(vals, flat, v.size), v.shape), x)


def _check_views(rec, x, flat):
    """Refuse an assignment NumPy would make visible through a view that a tracer cannot."""
    b = getattr(x, "_base", None)
    if b is not None and b[0]() is not None:
        raise TapegradValueError(
            "x[...] = v: x is a view of another traced array (made by indexing, slicing or "
            "reshaping it), which NumPy would change too; " + _VIEW_HELP)
    views = getattr(x, "_views", None)
    if not views:
        return
    live, written = [], None
    for ref in views:
        t = ref()
        if t is None:
            continue               # dropped here: each dead view is scanned once
        live.append(ref)
        if written is None:
            written = np.sort(flat)
        lo, n = t._base[1], t.size
        k = np.searchsorted(written, lo)
        if k < written.size and written[k] < lo + n:
            raise TapegradValueError(
                "x[...] = v changes elements that a view of x taken earlier (by indexing, "
                "slicing or reshaping) still shows in NumPy; " + _VIEW_HELP)
    x._views = live


def clip(x, a_min=None, a_max=None):
    out = x
    if a_min is not None:
        out = binary("maximum", out, a_min)
    if a_max is not None:
        out = binary("minimum", out, a_max)
    return out


def as_bool(x):
    """0/1-valued tracer for logical operations."""
    if type(x) is Tracer and x._val.dtype == np.bool_:
        return x
    return binary("not_equal", x, 0.0)


def _boolean(t):
    if type(t) is Tracer:
        t._val = t._val.astype(bool)
    return t


def logical_and(a, b):
    if top_recorder(a, b) is None:
        return np.logical_and(value_of(a), value_of(b))
    return _boolean(binary("multiply", as_bool(a), as_bool(b)))


def logical_or(a, b):
    if top_recorder(a, b) is None:
        return np.logical_or(value_of(a), value_of(b))
    return _boolean(binary("maximum", as_bool(a), as_bool(b)))


def logical_not(a):
    if top_recorder(a) is None:
        return np.logical_not(value_of(a))
    return _boolean(unary("rsubc", as_bool(a), 1.0))


def one_per_reduction(shape, axis):
    """Does each reduction over axis take one element? Then a variance is the constant 0
    (a - mean(a) is identically 0) and a standard deviation is best written as that variance:
    the value 0 and the derivative 0, not sqrt's infinite slope at 0 times 0 (NaN; autograd's
    std gives 0 there too)."""
    return _prod(shape[i] for i in _norm_axes(axis, len(shape))) == 1


def _guarded_value(x):
    """The value of x for a function whose (integer) result depends on it: guard it."""
    if type(x) is Tracer:
        if x._rec.active:
            x._rec.guard(x)
        return x._val
    return x


# ------------------------------------------------------------------ dispatch tables
def _reduction(kind):
    def rule(a, axis=None, dtype=None, out=None, keepdims=False, **kw):
        if out is not None:
            raise TapegradTypeError(f"np.{kind}: out= cannot receive a traced result")
        if kw.get("where", True) is not True or kw.get("initial", None) is not None:
            raise UnsupportedError(f"np.{kind}: where=/initial= are not supported on traced arrays")
        return reduce(kind, a, axis, keepdims)
    return rule


def _mean(a, axis=None, dtype=None, out=None, keepdims=False, **kw):
    if out is not None:
        raise TapegradTypeError("np.mean: out= cannot receive a traced result")
    return mean(a, axis, keepdims)


def _bool_reduction(kind):
    def rule(a, axis=None, out=None, keepdims=False, **kw):
        if out is not None:
            raise TapegradTypeError(f"np.{kind}: out= cannot receive a traced result")
        return _boolean(reduce("max" if kind == "any" else "min", as_bool(a), axis, keepdims))
    return rule


def _reshape_fn(a, *args, **kw):
    shape = kw.pop("newshape", kw.pop("shape", args[0] if args else None))
    return reshape(a, shape, order=kw.get("order", "C"))


def _squeeze(a, axis=None):
    return reshape(a, np.squeeze(np.empty(np.shape(value_of(a)), dtype=np.bool_), axis).shape)


def _atleast(nd):
    def rule(*arys):
        res = []
        for a in arys:
            s = np.shape(value_of(a))
            e = np.empty(s, dtype=np.bool_)
            res.append(reshape(a, {1: np.atleast_1d, 2: np.atleast_2d, 3: np.atleast_3d}[nd](e).shape))
        return res[0] if len(res) == 1 else res
    return rule


def _swapaxes(a, axis1, axis2):
    nd = np.ndim(value_of(a))
    axes = list(range(nd))
    axes[axis1 % nd], axes[axis2 % nd] = axes[axis2 % nd], axes[axis1 % nd]
    return transpose(a, tuple(axes))


def _inner(a, b):
    if np.ndim(value_of(a)) == 0 or np.ndim(value_of(b)) == 0:
        return binary("multiply", a, b)
    return tensordot(a, b, axes=([-1], [-1]))


def _where(condition, x=None, y=None):
    if x is None and y is None:
        return np.nonzero(_guarded_value(condition))
    return where(condition, x, y)


def _clip(a, a_min=None, a_max=None, out=None, **kw):
    if out is not None:
        raise TapegradTypeError("np.clip: out= cannot receive a traced result")
    a_min = kw.pop("min", a_min)
    a_max = kw.pop("max", a_max)
    return clip(a, a_min, a_max)


def _shape_only(fn):
    def rule(a, *args, **kw):
        return fn(np.empty(np.shape(value_of(a))), *args, **kw)
    return rule


def traced_constant(rec, value):
    """A tracer of rec holding the constant value (a copy from the constant buffer), so that
    it can be assigned into (``out = np.zeros_like(x); out[k] = ...``)."""
    value = np.asarray(value, dtype=np.float64)
    t = rec.new(value.copy())
    if value.size:
        rec.op(OPCODES["copy"], FLAG_A, t._off, rec.const(value), n=value.size, reads=())
    return t


def _filled(a, fill, dtype, shape):
    shape = np.shape(value_of(a)) if shape is None else shape
    rec = a._rec if type(a) is Tracer and a._rec.active else None
    if rec is None or (dtype is not None and np.dtype(dtype).kind not in "f"):
        return np.full(shape, fill, dtype=dtype or np.float64)
    return traced_constant(rec, np.full(shape, fill, dtype=np.float64))


def _like(fill):
    def rule(a, dtype=None, order="K", subok=True, shape=None):
        return _filled(a, fill, dtype, shape)
    return rule


def _full_like(a, fill_value, dtype=None, order="K", subok=True, shape=None):
    shape = np.shape(value_of(a)) if shape is None else shape
    if type(fill_value) is Tracer:
        return broadcast_to(fill_value, shape) * 1.0
    return _filled(a, fill_value, dtype, shape)


def _copy(a, order="K", subok=False):
    if type(a) is Tracer:
        return a.copy()
    return np.array(a, order=order, subok=subok, copy=True)


def _guarded(fn):
    def rule(*args, **kw):
        args = [_guarded_value(a) for a in args]
        kw = {k: _guarded_value(v) for k, v in kw.items()}
        return fn(*args, **kw)
    return rule


def _ravel(a, order="C"):
    return reshape(a, (-1,), order=order)


def _broadcast_to(a, shape, subok=False):
    return broadcast_to(a, shape)


def _around(a, decimals=0, out=None):
    if decimals:
        raise UnsupportedError("np.round with decimals != 0 on traced arrays")
    return unary("rint", a)


# NumPy functions recorded as compositions of the primitives above (registered in the registry;
# the same functions' NumPy-breadth siblings live in rules_numpy, the Python rules in linalg/calls)
for _f, _rule in [
    (np.sum, _reduction("sum")), (np.prod, _reduction("prod")), (np.max, _reduction("max")),
    (np.min, _reduction("min")), (np.amax, _reduction("max")), (np.amin, _reduction("min")),
    (np.mean, _mean), (np.any, _bool_reduction("any")), (np.all, _bool_reduction("all")),
    (np.dot, lambda a, b, out=None: dot(a, b)), (np.inner, _inner), (np.tensordot, tensordot),
    (np.transpose, lambda a, axes=None: transpose(a, axes)), (np.reshape, _reshape_fn),
    (np.ravel, _ravel), (np.squeeze, _squeeze), (np.expand_dims, expand_dims),
    (np.swapaxes, _swapaxes), (np.moveaxis, moveaxis), (np.atleast_1d, _atleast(1)),
    (np.atleast_2d, _atleast(2)), (np.atleast_3d, _atleast(3)),
    (np.concatenate, lambda arrays, axis=0, out=None, **kw: concatenate(arrays, axis)),
    (np.stack, lambda arrays, axis=0, out=None, **kw: stack(arrays, axis)),
    (np.where, _where), (np.clip, _clip), (np.broadcast_to, _broadcast_to),
    (np.shape, lambda a: np.shape(value_of(a))), (np.ndim, lambda a: np.ndim(value_of(a))),
    (np.size, lambda a, axis=None: np.size(value_of(a), axis)),
    (np.zeros_like, _like(0.0)), (np.ones_like, _like(1.0)), (np.empty_like, _like(0.0)),
    (np.full_like, _full_like), (np.copy, _copy),
]:
    registry.register(_f, _rule, "composition")
# integer / boolean / piecewise-constant results: zero derivative (values guarded on replay)
for _f, _rule in [
    (np.round, _around), (np.around, _around), (np.nonzero, _guarded(np.nonzero)),
    (np.argwhere, _guarded(np.argwhere)), (np.flatnonzero, _guarded(np.flatnonzero)),
    (np.count_nonzero, _guarded(np.count_nonzero)), (np.isclose, _guarded(np.isclose)),
    (np.allclose, _guarded(np.allclose)), (np.array_equal, _guarded(np.array_equal)),
]:
    registry.register(_f, _rule, "constant")


def _zero_derivative(code):
    lo, hi = FAMILIES["unary_zero"]
    clo, chi = FAMILIES["compare"]
    return lo <= code <= hi or clo <= code <= chi


# ufuncs that are one primitive (dispatched by UNARY_UFUNCS / BINARY_UFUNCS in apply_ufunc)
for _u, _name in (*UNARY_UFUNCS.items(), *BINARY_UFUNCS.items()):
    registry.register(_u, None, "constant" if _zero_derivative(OPCODES[_name]) else "primitive",
                      detail=_name, ufunc=True)
# ufuncs written with other primitives
for _u, _rule, _kind in [
    (np.fmax, lambda x, y: _fmax_fmin("maximum", x, y), "composition"),
    (np.fmin, lambda x, y: _fmax_fmin("minimum", x, y), "composition"),
    (np.matmul, lambda a, b: matmul(a, b), "composition"),
    (np.positive, lambda x: x, "composition"),
    (np.deg2rad, lambda x: unary("mulc", x, np.pi / 180.0), "composition"),
    (np.radians, lambda x: unary("mulc", x, np.pi / 180.0), "composition"),
    (np.rad2deg, lambda x: unary("mulc", x, 180.0 / np.pi), "composition"),
    (np.degrees, lambda x: unary("mulc", x, 180.0 / np.pi), "composition"),
    (np.logical_and, logical_and, "constant"), (np.logical_or, logical_or, "constant"),
    (np.logical_not, logical_not, "constant"),
    (np.isnan, lambda x: binary("not_equal", x, x), "constant"),
    (np.isinf, lambda x: binary("equal", unary("abs", x), np.inf), "constant"),
    (np.isfinite, lambda x: binary("less", unary("abs", x), np.inf), "constant"),
]:
    registry.register(_u, _rule, _kind, ufunc=True)


def _into_objects(ufunc, inputs, kwargs, out):
    """ufunc(*inputs, out=out) with out an object array (NumPy's own code on object arrays of
    tracers does this, e.g. np.quantile's interpolation): the traced result's elements are
    stored in out (where ``where`` holds), as NumPy would store numbers."""
    mask = kwargs.pop("where", True)
    kwargs.pop("casting", None)
    kwargs.pop("dtype", None)
    r = apply_ufunc(ufunc, "__call__", inputs, kwargs)
    rv = r.__array__() if type(r) is Tracer and r._rec.active else np.asarray(r, dtype=object)
    mask = np.asarray(_guarded_value(mask), dtype=bool)
    np.copyto(out, np.broadcast_to(rv, out.shape), where=mask)
    return out


def apply_ufunc(ufunc, method, inputs, kwargs):
    if not kwargs and method == "__call__":   # operators and plain calls: the common case
        if len(inputs) == 2:
            name = BINARY_UFUNCS.get(ufunc)
            if name is not None:
                return binary(name, inputs[0], inputs[1])
        elif len(inputs) == 1:
            name = UNARY_UFUNCS.get(ufunc)
            if name is not None:
                return unary(name, inputs[0])
    if _has_objects(inputs):
        inputs = _no_objects(inputs)
    out = kwargs.pop("out", None)
    if out is not None:
        o = out[0] if isinstance(out, tuple) and len(out) == 1 else out
        if method == "__call__" and _is_objects(o):
            return _into_objects(ufunc, inputs, kwargs, o)
        raise TapegradTypeError(f"np.{ufunc.__name__}: out= would write a traced value into an array; "
                        "use the returned value instead")
    for k in ("where", "casting", "order", "subok", "signature"):
        if k in kwargs and k != "dtype":
            raise UnsupportedError(f"np.{ufunc.__name__}: keyword {k}= on traced arrays")
    kwargs.pop("dtype", None)
    name = ufunc.__name__
    if method == "reduce":
        axis = kwargs.get("axis", 0)
        keepdims = kwargs.get("keepdims", False)
        kinds = {"add": "sum", "multiply": "prod", "maximum": "max", "minimum": "min",
                 "fmax": "max", "fmin": "min"}
        if name in kinds:
            return reduce(kinds[name], inputs[0], axis, keepdims)
        if name == "logaddexp":
            x = inputs[0]
            m = reduce("max", x, axis, True)
            mc = value_of(m)
            s = reduce("sum", unary("exp", binary("subtract", x, mc)), axis, True)
            r = binary("add", unary("log", s), mc)
            return r if keepdims else _squeeze(r, axis if axis is not None else None)
        raise UnsupportedError(f"tapegrad has no rule for np.{name}.{method}")
    if method != "__call__":
        raise UnsupportedError(f"tapegrad has no rule for np.{name}.{method} on traced arrays")
    if ufunc in UNARY_UFUNCS and len(inputs) == 1:
        return unary(UNARY_UFUNCS[ufunc], inputs[0])
    if ufunc in BINARY_UFUNCS and len(inputs) == 2:
        return binary(BINARY_UFUNCS[ufunc], inputs[0], inputs[1])
    if ufunc in (np.floor_divide, np.remainder, np.fmod, np.bitwise_and, np.bitwise_or,
                 np.bitwise_xor, np.invert):
        if ufunc in (np.bitwise_and, np.bitwise_or) and all(
                type(i) is not Tracer or i._val.dtype == np.bool_ for i in inputs):
            return (logical_and if ufunc is np.bitwise_and else logical_or)(*inputs)
        if ufunc is np.invert and type(inputs[0]) is Tracer and inputs[0]._val.dtype == np.bool_:
            return logical_not(inputs[0])
    rule = registry.UFUNCS.get(ufunc)
    if rule is not None:
        return rule(*inputs)
    raise UnsupportedError(f"tapegrad has no rule for np.{name} (ufunc) on traced arrays")


def apply_function(func, args, kwargs):
    if _has_objects(args) or (kwargs and _has_objects(tuple(kwargs.values()))):
        args = _no_objects(args)
        kwargs = {k: _no_objects(v) for k, v in kwargs.items()}
    rule = registry.FUNCTIONS.get(func)
    if rule is None:
        name = getattr(func, "__module__", "numpy") or "numpy"
        raise UnsupportedError(
            f"tapegrad has no rule for {name}.{func.__name__} on traced arrays")
    return rule(*args, **kwargs)


install_rules(sys.modules[__name__])   # the tracer's NumPy dispatch (see tracing/tracer.py)
