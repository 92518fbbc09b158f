"""More NumPy functions on complex traced values (see docs/complex.md), written like those of
rules/complex.py: as real operations on the (re, im) parts, so the tape keeps float64 slots.

Here: ``np.where`` with complex branches, ``np.einsum`` with any number of operands (pairwise
contractions in the order of ``np.einsum_path``), ``np.sinc``, ``np.sign`` (NumPy 2's z/|z|),
rounding (``np.round``, ``np.around``) partwise, bilinear functions (``np.convolve``,
``np.correlate``, ``np.cross``, ``np.linalg.multi_dot``), ``np.polyval``, the shape functions
``np.diff``, ``np.pad``, ``np.append``, ``np.split``/``np.array_split``, ``np.var``/``np.std``
(real results), ``np.average``, ``np.select``, ``np.linspace``, the nan-reductions (``np.nansum``
and friends), and value-only functions (``np.isclose``, ``np.allclose``,
``np.array_equal``, ``np.count_nonzero``, ``np.zeros_like`` and friends) as constants.
They are added to ``complex.FUNCTIONS``, which the tracer's complex dispatch consults.
"""
import functools

import numpy as np

from ..tracing.tracer import Tracer, value_of
from ..errors import TapegradTypeError, TapegradValueError
from . import base as _base, complex as _cx, custom as _custom
from ..tracing import pytree as _tree

parts, make, _wrap, _im = _cx.parts, _cx.make, _cx._wrap, _cx._im
_cmul, _cdiv, _cprod, _cabs = _cx._cmul, _cx._cdiv, _cx._cprod, _cx._cabs


def _shape(x):
    return np.shape(value_of(parts(x)[0]))


def _real_cond(cond, name):
    if type(cond) is _cx.ComplexTracer:
        raise TapegradTypeError(f"np.{name}: the condition is a complex traced value; give a real "
                                "or boolean condition (e.g. np.abs(z) > 0)")
    if _cx._is_complex_const(cond):
        return np.asarray(cond) != 0           # NumPy: a nonzero complex number is true
    return cond


# ---------------------------------------------------------------- where
def _where(condition, x=None, y=None):
    if x is None and y is None:
        if type(condition) is _cx.ComplexTracer:
            return np.nonzero(condition.value)  # a decision on values: the nonzero positions
        return np.nonzero(value_of(condition))
    if x is None or y is None:
        raise TapegradValueError("np.where: either both or neither of x and y should be given")
    cond = _real_cond(condition, "where")
    (a, b), (c, d) = parts(x), parts(y)
    re = np.where(cond, a, c)
    im = None if b is None and d is None else np.where(cond, 0.0 if b is None else b, 0.0 if d is None else d)
    return make(re, im)


# ---------------------------------------------------------------- einsum, any number of operands
_LETTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _einsum_specs(spec, shapes):
    """(input subscripts, output subscripts) of an explicit or implicit einsum spec, '...'
    written out as letters the spec does not use (right-aligned, as NumPy broadcasts it)."""
    if not isinstance(spec, str):
        raise TapegradTypeError("np.einsum: complex traced operands take the subscripts-string form "
                                "(not the interleaved operand, sublist form)")
    n = len(shapes)
    spec = spec.replace(" ", "")
    ins, arrow, out = spec.partition("->")
    ins = ins.split(",")
    bad = len(ins) != n or any(set(s.replace("...", "", 1)) - _LETTERS for s in ins + [out])
    if bad or any(len(s) - 3 > len(sh) if "..." in s else len(s) != len(sh) for s, sh in zip(ins, shapes)):
        raise TapegradValueError(f"np.einsum: subscripts {spec!r} do not fit {n} operands of shapes "
                                 f"{[tuple(sh) for sh in shapes]}")
    if not arrow:       # implicit: '...' first, then the letters seen once, sorted
        counts = {}
        for s in ins:
            for ch in s.replace("...", ""):
                counts[ch] = counts.get(ch, 0) + 1
        out = ("..." if any("..." in s for s in ins) else "") + \
            "".join(sorted(ch for ch, k in counts.items() if k == 1))
    if "..." in out and not any("..." in s for s in ins):
        raise TapegradValueError(f"np.einsum: output subscripts of {spec!r} have '...' that no "
                                 "operand has")
    nell = max((len(sh) - (len(s) - 3) for s, sh in zip(ins, shapes) if "..." in s), default=0)
    if nell and "..." not in out:
        raise TapegradValueError(f"np.einsum: {spec!r}: output has more dimensions than subscripts "
                                 "given in einstein sum, but no '...' ellipsis provided to broadcast "
                                 "the extra dimensions (as NumPy)")
    free = [c for c in sorted(_LETTERS) if c not in spec][:nell]
    if len(free) < nell:
        raise TapegradValueError(f"np.einsum: too many axes under '...' in {spec!r}")
    ell = "".join(free)

    def fill(s, k):
        return s.replace("...", ell[nell - k:] if k else "")
    ins = [fill(s, len(sh) - (len(s) - 3)) if "..." in s else s for s, sh in zip(ins, shapes)]
    return ins, fill(out, nell)


def _einsum(spec, *ops, **kw):
    kw.pop("optimize", None)
    if kw.pop("out", None) is not None:
        raise TapegradTypeError("np.einsum: out= would write a traced value into an array")
    if kw:
        raise TapegradTypeError(f"np.einsum: options {sorted(kw)} are not supported on complex "
                                "traced operands")
    if len(ops) <= 2:
        return _cx._einsum(spec, *ops)
    shapes = [_shape(o) for o in ops]
    ins, out = _einsum_specs(spec, shapes)
    spec = ",".join(ins) + "->" + out
    # the contraction order NumPy's einsum would take (einsum_path, greedy): each step takes
    # operands out of the current list and appends their contraction, which keeps the letters
    # that another operand or the output still needs; each pairwise contraction is the four
    # real products of (AC - BD, AD + BC)
    path = np.einsum_path(spec, *[np.broadcast_to(0.0, sh) for sh in shapes], optimize="greedy")[0]
    cur = [(s, parts(o)) for s, o in zip(ins, ops)]
    for step in path[1:]:
        picked = [cur[i] for i in step]
        cur = [c for i, c in enumerate(cur) if i not in step]
        rest = "".join(t for t, _ in cur) + out
        s, p = picked[0]
        if len(picked) == 1:
            s, p = _einsum_one(s, p, rest)
        for k, (s2, p2) in enumerate(picked[1:]):
            later = rest + "".join(t for t, _ in picked[k + 2:])
            keep = "".join(dict.fromkeys(ch for ch in s + s2 if ch in later))
            p = _cprod(lambda u, v, sub=f"{s},{s2}->{keep}": np.einsum(sub, u, v), p, p2)
            s = keep
        cur.append((s, p))
    (s, p), = cur
    if s != out:
        s, p = _einsum_one(s, p, out, out)
    return _wrap(p)


def _einsum_one(s, p, needed, order=None):
    """One operand's einsum keeping the letters needed (in the order given, else its own)."""
    keep = order if order is not None else "".join(dict.fromkeys(ch for ch in s if ch in needed))
    return keep, tuple(None if q is None else np.einsum(f"{s}->{keep}", q) for q in p)


# ---------------------------------------------------------------- elementwise functions
def _sinc(x):
    # NumPy's sinc: sin(y) / y with y = pi x, x = 0 replaced by 1e-20 (numpy/lib/
    # _function_base_impl.py); the test of x = 0 is on the traced parts (a guarded mask)
    a, b = parts(x)
    zero = (a == 0) if b is None else ((a == 0) & (b == 0))
    y = _cx._cscale(parts(_where(zero, 1e-20, x)), np.pi)
    return _wrap(_cdiv(_cx._csin(y), y))


def _sign_parts(p):
    # NumPy 2: sign(z) = z / |z| for complex z, and 0 at 0 (|z| + 1 there: 0 / 1)
    r = _cabs(p)
    return _cdiv(p, (r + (r == 0), None))


def _sign(x):
    return _wrap(_sign_parts(parts(x)))


def _round(x, decimals=0, out=None):
    if out is not None:
        raise TapegradTypeError("np.round: out= would write a traced value into an array")
    return _cx._partwise(lambda a: np.round(a, decimals))(x)


def _rint_parts(p):
    return tuple(None if q is None else np.rint(q) for q in p)


# ---------------------------------------------------------------- bilinear functions
def _correlate(a, v, mode="valid"):
    # NumPy: correlate(a, v)[k] = sum_n a[n + k] conj(v[n]) for complex v
    vr, vi = parts(v)
    return _wrap(_cprod(lambda s, t: np.correlate(s, t, mode), parts(a), (vr, _cx._sub(None, vi))))


def _multi_dot(arrays, *, out=None):
    if out is not None:
        raise TapegradTypeError("np.linalg.multi_dot: out= would write a traced value into an array")
    return functools.reduce(np.matmul, arrays)


def _polyval(p, x):
    # NumPy's Horner scheme: y = 0; y = y * x + p_k for each coefficient
    n = len(p) if isinstance(p, (list, tuple)) else _shape(p)[0]
    y = x * 0.0
    for k in range(n):
        y = y * x + p[k]
    return y


# ---------------------------------------------------------------- shapes
def _diff(a, n=1, axis=-1, prepend=None, append=None):
    pieces = [q for q in (prepend, a, append) if q is not None]
    if len(pieces) > 1:
        pieces = [q if np.ndim(value_of(parts(q)[0])) else
                  _cx._partwise(np.broadcast_to)(q, _edge_shape(a, axis)) for q in pieces]
        a = _cx.complex_function(np.concatenate, (pieces,), {"axis": axis})
    return _cx._partwise(lambda q: np.diff(q, n=n, axis=axis))(a)


def _edge_shape(a, axis):
    s = list(_shape(a))
    s[axis] = 1
    return tuple(s)


def _pad(array, pad_width, mode="constant", **kw):
    if callable(mode) or mode not in ("constant", "edge", "reflect", "symmetric", "wrap"):
        raise TapegradTypeError(f"np.pad: mode={mode!r} on complex traced values (linear modes "
                                "only: constant, edge, reflect, symmetric, wrap)")
    a, b = parts(array)
    if mode == "constant":
        cv = kw.pop("constant_values", 0)
        cr, ci = (np.real(cv), np.imag(cv)) if np.iscomplexobj(cv) else (cv, 0)
        re = np.pad(a, pad_width, mode, constant_values=cr, **kw)
        im = None if b is None and not np.any(ci) else np.pad(_im((a, b)), pad_width, mode,
                                                             constant_values=ci, **kw)
        return make(re, im)
    return make(np.pad(a, pad_width, mode, **kw), None if b is None else np.pad(b, pad_width, mode, **kw))


def _append(arr, values, axis=None):
    if axis is None:
        arr, values = _cx._partwise(np.ravel)(arr), _cx._partwise(np.ravel)(values)
        axis = 0
    return _cx.complex_function(np.concatenate, ([arr, values],), {"axis": axis})


def _splitter(func):
    def f(ary, indices_or_sections, axis=0):
        a, b = parts(ary)
        res = func(a, indices_or_sections, axis=axis)
        ims = [None] * len(res) if b is None else func(b, indices_or_sections, axis=axis)
        return [make(r, i) for r, i in zip(res, ims)]
    return f


# ---------------------------------------------------------------- statistics
def _var(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **kw):
    if out is not None or dtype is not None or kw:
        raise TapegradTypeError("np.var: out=, dtype= and where= are not supported on complex "
                                "traced values")
    # NumPy: the mean of |z - mean z|^2 over n - ddof (a real result)
    re, im = parts(a)
    n = np.size(value_of(re)) if axis is None else int(np.prod([_shape(a)[k] for k in np.atleast_1d(axis)]))
    dr = re - np.mean(re, axis=axis, keepdims=True)
    s = np.sum(dr * dr, axis=axis, keepdims=keepdims)
    if im is not None:
        di = im - np.mean(im, axis=axis, keepdims=True)
        s = s + np.sum(di * di, axis=axis, keepdims=keepdims)
    return s / (n - ddof)


def _std(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **kw):
    v = _var(a, axis, dtype, out, ddof, keepdims, **kw)
    return v if _base.one_per_reduction(_shape(a), axis) else np.sqrt(v)


def _average(a, axis=None, weights=None, returned=False, keepdims=False):
    if weights is None:
        avg = np.mean(a, axis=axis, keepdims=keepdims)
        s = _shape(avg)
        scl = np.full(s, np.size(value_of(parts(a)[0])) / max(int(np.prod(s)), 1))
    else:
        if np.shape(value_of(parts(weights)[0])) != _shape(a):
            raise TapegradTypeError("np.average: complex traced values take weights of the same "
                                    "shape as a")
        scl = np.sum(weights, axis=axis, keepdims=keepdims)
        avg = np.sum(a * weights, axis=axis, keepdims=keepdims) / scl
    return (avg, scl) if returned else avg


# ---------------------------------------------------------------- select, nan-functions, linspace
def _select(condlist, choicelist, default=0):
    # NumPy's first true condition wins: fold the choices from the last
    out = default
    for cond, choice in reversed(list(zip(condlist, choicelist))):
        out = _where(_real_cond(cond, "select"), choice, out)
    shape = np.broadcast_shapes(*[np.shape(value_of(c)) for c in condlist], *[_shape(v) for v in choicelist])
    out = out if _cx.is_complex(out) else make(out, None)
    return out if _shape(out) == shape else _cx._partwise(np.broadcast_to)(out, shape)


def _piecewise(x, condlist, funclist, *args, **kw):
    """np.piecewise of a complex x: the conditions are real decisions (a traced one is guarded,
    so a replay at a point where it changes re-records); each piece is evaluated on all of x
    and chosen with np.where, as the real rule does."""
    cl = condlist if isinstance(condlist, list) else [condlist]
    cl = [np.asarray(_real_cond(_base._guarded_value(c), "piecewise"), dtype=bool) for c in cl]
    if len(funclist) == len(cl) + 1:
        cl.append(~np.any(cl, axis=0))
    elif len(funclist) != len(cl):
        raise TapegradValueError(f"np.piecewise: {len(cl)} conditions need {len(cl)} or {len(cl) + 1} "
                                 f"functions, got {len(funclist)}")
    out = make(np.zeros(_shape(x)), None)
    for c, f in zip(cl, funclist):
        out = _where(c, f(x, *args, **kw) if callable(f) else f, out)
    return out


def _nan_free(a, fill):
    # NumPy treats a complex number with a NaN part as NaN; the mask is taken on the traced
    # parts, so a replay recomputes where the NaNs are
    re, im = parts(a)
    mask = np.isnan(re) if im is None else (np.isnan(re) | np.isnan(im))
    return _where(mask, fill, a), mask


def _nan_reduce(func, fill):
    def f(a, *args, **kw):
        return _cx.complex_function(func, (_nan_free(a, fill)[0],) + args, kw)
    return f


def _nanmean(a, axis=None, dtype=None, out=None, keepdims=False):
    if out is not None or dtype is not None:
        raise TapegradTypeError("np.nanmean: out= and dtype= are not supported on complex traced values")
    z, mask = _nan_free(a, 0.0)
    n = np.sum(~np.asarray(value_of(mask), dtype=bool), axis=axis, keepdims=keepdims)
    return _cx.complex_function(np.sum, (z,), {"axis": axis, "keepdims": keepdims}) / (n * 1.0)


def _linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0):
    if dtype is not None and np.dtype(dtype).kind != "c":
        raise TapegradTypeError(f"np.linspace: dtype={np.dtype(dtype)} would drop the imaginary part "
                                "of the complex start/stop")
    (a, b), (c, d) = parts(start), parts(stop)
    kw = {"num": num, "endpoint": endpoint, "retstep": retstep, "axis": axis}
    re = np.linspace(a, c, **kw)
    im = None if b is None and d is None else np.linspace(0.0 if b is None else b, 0.0 if d is None else d, **kw)
    if not retstep:
        return make(re, im)
    return make(re[0], None if im is None else im[0]), make(re[1], None if im is None else im[1])


# ---------------------------------------------------------------- constants (values only)
def _value(x):
    if type(x) is _cx.ComplexTracer:
        return x.value
    if isinstance(x, (list, tuple)):
        return [_value(e) for e in x]
    return value_of(x)


def _constant(func):
    def f(*args, **kwargs):
        return func(*[_value(a) for a in args], **{k: _value(v) for k, v in kwargs.items()})
    return f


def _like(func):
    def f(a, *args, dtype=None, **kw):
        return func(np.empty(_shape(a), dtype=np.complex128), *args, dtype=dtype, **kw)
    return f


# ---------------------------------------------------------------- interp
def _interp(x, xp, fp, left=None, right=None, period=None):
    """np.interp with complex fp (and left/right): linear in fp, so the real and imaginary
    parts are interpolated apart with the real rule, as NumPy's complex loop does. x and xp
    must be real, as in NumPy."""
    for name, v in (("x", x), ("xp", xp)):
        if type(v) is _cx.ComplexTracer or _cx._is_complex_const(v):
            raise TapegradTypeError(f"np.interp: {name} is complex; NumPy interpolates at real "
                                    "points only (complex values go in fp)")
    (a, b), lp, rp = parts(fp), parts(left) if left is not None else (None, None), \
        parts(right) if right is not None else (None, None)
    re = np.interp(x, xp, a, left=lp[0], right=rp[0], period=period)
    if b is None and lp[1] is None and rp[1] is None:
        return make(re, None)
    zero = np.zeros(_shape(fp))
    im = np.interp(x, xp, zero if b is None else b, left=0.0 if left is not None and lp[1] is None
                   else lp[1], right=0.0 if right is not None and rp[1] is None else rp[1],
                   period=period)
    return make(re, im)


def _unwrap(p, *args, **kwargs):
    raise TapegradTypeError("np.unwrap: ufunc 'remainder' not supported for the input types "
                            "(complex), as in NumPy: unwrap takes real phases, e.g. np.unwrap(np.angle(z))")


# ---------------------------------------------------------------- custom rules on complex values
def _leaves_map(tree, mask, fn):
    leaves, td = _tree.flatten(tree)
    return _tree.unflatten(td, [fn(v) if m else v for v, m in zip(leaves, mask)])


def _from_pair(p):
    return p[0] + 1j * p[1]


def _to_pair(z):
    return np.stack([np.real(z), np.imag(z)])


class _ComplexSpec:
    """A custom function (custom_vjp, custom_jvp, primitive) seen on real pairs: each complex
    traced leaf of an argument, and each complex leaf of the output, is a (2, ...) array
    (Re, Im), so the op is a real op of the tape like any other. The user's function and rules
    run on the complex values, with autograd's and JAX's convention (docs/complex.md): a
    cotangent is ct = dL/dx - i dL/dy (the vjp is the non-conjugated transpose), so a pair's
    adjoint (dL/dx, dL/dy) is (Re ct, -Im ct); a tangent is dz = dx + i dy. The cotangent of a
    real argument is the real part of the rule's (as autograd takes it)."""

    complex_adapter = True
    registered_name = None

    def __init__(self, spec, cin):
        self.spec, self.cin = spec, cin     # cin[k][i]: leaf i of argument k is a complex pair
        self.cout = None                    # per output leaf: complex (learnt by the first call)
        self.kind, self.fname, self.nondiff_argnums = spec.kind, spec.fname, spec.nondiff_argnums

    def has_vjp(self):
        return self.spec.has_vjp()

    def has_jvp(self):
        return self.spec.has_jvp()

    def _args(self, args):
        return [_leaves_map(a, m, _from_pair) for a, m in zip(args, self.cin)]

    def _ans(self, ans):
        return _leaves_map(ans, self.cout, _from_pair)

    def primal(self, args, kwargs):
        out = self.spec.primal(self._args(args), kwargs)
        leaves, td = _tree.flatten(out)
        if self.cout is None:
            self.cout = [_cx.is_complex(v) for v in leaves]
        return _tree.unflatten(td, [_to_pair(v) if c else v for v, c in zip(leaves, self.cout)])

    def vjp(self, args, kwargs, ans, g):
        g = _leaves_map(g, self.cout, lambda p: p[0] - 1j * p[1])
        cts = self.spec.vjp(self._args(args), kwargs, self._ans(ans), g)
        out = []
        for ct, m in zip(cts, self.cin):
            if ct is None:
                out.append(None)
                continue
            leaves, td = _tree.flatten(ct)
            out.append(_tree.unflatten(td, [None if v is None else
                                            np.stack([np.real(v), -np.imag(v)]) if c else np.real(v)
                                            for v, c in zip(leaves, m)]))
        return out

    def jvp(self, args, kwargs, ans, tangents):
        tans = [None if t is None else _leaves_map(t, m, _from_pair) for t, m in zip(tangents, self.cin)]
        dot = self.spec.jvp(self._args(args), kwargs, self._ans(ans), tans)
        if dot is None:
            return None
        leaves, td = _tree.flatten(dot)
        return _tree.unflatten(td, [_to_pair(v) if c else np.real(v) for v, c in zip(leaves, self.cout)])


def _custom_apply(spec, args, kwargs):
    """A call of a custom function with complex traced arguments or complex outputs: recorded
    as the real op of ``_ComplexSpec``, its complex outputs made again from their pairs."""
    cin, pargs = [], []
    for k, a in enumerate(args):
        leaves, td = _tree.flatten(a)
        m = [k not in spec.nondiff_argnums and type(v) is _cx.ComplexTracer for v in leaves]
        cin.append(m)
        pargs.append(_tree.unflatten(td, [_cx._pack(v) if c else v for v, c in zip(leaves, m)]))
    ad = _ComplexSpec(spec, cin)
    out = _custom._apply(ad, tuple(pargs), kwargs)
    leaves, td = _tree.flatten(out)
    return _tree.unflatten(td, [_cx._unpack(v) if c else v for v, c in zip(leaves, ad.cout)])


_custom.COMPLEX_APPLY = _custom_apply


_cx.FUNCTIONS.update({
    np.interp: _interp, np.unwrap: _unwrap,
    np.where: _where, np.einsum: _einsum, np.sinc: _sinc, np.sign: _sign,
    np.round: _round, np.around: _round,
    np.convolve: _cx._bilinear(np.convolve), np.correlate: _correlate, np.cross: _cx._bilinear(np.cross),
    np.linalg.multi_dot: _multi_dot, np.polyval: _polyval,
    np.diff: _diff, np.pad: _pad, np.append: _append,
    np.split: _splitter(np.split), np.array_split: _splitter(np.array_split),
    np.var: _var, np.std: _std, np.average: _average,
    np.isclose: _constant(np.isclose), np.allclose: _constant(np.allclose),
    np.array_equal: _constant(np.array_equal), np.array_equiv: _constant(np.array_equiv),
    np.count_nonzero: _constant(np.count_nonzero), np.nonzero: _constant(np.nonzero),
    np.flatnonzero: _constant(np.flatnonzero), np.argwhere: _constant(np.argwhere),
    np.zeros_like: _like(np.zeros_like), np.ones_like: _like(np.ones_like),
    np.empty_like: _like(np.zeros_like), np.full_like: _like(np.full_like),
    np.sort_complex: _cx._order_refused("sort_complex"),
    np.select: _select, np.piecewise: _piecewise, np.linspace: _linspace, np.nanmean: _nanmean,
    np.nansum: _nan_reduce(np.sum, 0.0), np.nanprod: _nan_reduce(np.prod, 1.0),
    np.nancumsum: _nan_reduce(np.cumsum, 0.0), np.nancumprod: _nan_reduce(np.cumprod, 1.0),
    # NumPy replaces non-finite real and imaginary parts separately
    np.nan_to_num: lambda x, copy=True, nan=0.0, posinf=None, neginf=None: _cx._partwise(np.nan_to_num)(
        x, nan=nan, posinf=posinf, neginf=neginf),
})
_cx.UNARY.update({np.rint: _rint_parts, np.sign: _sign_parts})
_cx.BINARY.update({np.matmul: lambda x, y: _cprod(np.matmul, x, y),
                   np.float_power: _cx._cpow})
