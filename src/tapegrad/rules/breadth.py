"""NumPy and SciPy breadth: the functions people already call, as compositions of primitives.

Everything here records onto the existing primitives of ``rules.py`` (elementwise unary/binary,
where, reductions, matmul, gather/scatter, concatenate), so each function gets its tangent, adjoint
and tangent-of-adjoint (hvp) for free and exactly. Three recurring tricks:

- *index arrays*: a pure data-movement function (flip, roll, tile, repeat, diagonal, take, pad,
  split, hstack, block, ...) is applied by NumPy itself to an integer array of element numbers;
  the result says which element goes where, and one ``gather`` records it. New zero entries
  (pad, diag, tril) come from a constant appended behind the operand.
- *order guards*: sort, partition, argmax, ... take their permutation from the current value and
  record a guard on a comparison that holds exactly while that permutation is still valid, so a
  replay at another point re-records when (and only when) the order changes.
- *Python rules* (``calls.CallRule``) for special functions whose derivatives are other special
  functions (gammaln -> digamma -> polygamma), one tape operation each.

``scipy.special.logsumexp`` is a plain Python function that converts its argument with
``np.asarray``: it gets an object array of tracers (``Tracer.__array__``), on which SciPy's code
fails with a TypeError. Use ``np.logaddexp.reduce(x, axis=...)`` or ``tapegrad.logsumexp``
(same signature, including ``b=`` and ``return_sign=``). ``np.array([a, b])`` of traced
values is traced through that object array (docs/numpy_support.md says where it is not).

``numpy.fft`` and ``np.linalg.eigvals`` are rules/complex.py, ``np.linalg.eig`` rules/complex_linalg.py.
"""
import math
import operator

import numpy as np
import scipy.special as sps

from . import base as R
from .base import unary, binary, reduce, gather, reshape, transpose, concatenate, matmul, where
from ..tracing.tracer import Tracer, top_recorder, value_of, _as_float_array
from .calls import CallRule, register, call
from . import registry as _registry
from ..errors import TapegradTypeError, TapegradValueError, UnsupportedError


# ------------------------------------------------------------------ helpers
def _leaves(obj):
    if isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _leaves(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _leaves(o)
    else:
        yield obj


def _values(obj):
    if isinstance(obj, list):
        return [_values(o) for o in obj]
    if isinstance(obj, tuple):
        return tuple(_values(o) for o in obj)
    return value_of(obj)


def _active(*args):
    return top_recorder(*_leaves(args)) is not None


def _is_traced(x):
    return type(x) is Tracer and x._rec.active


def defn(*funcs, constant=False):
    """Register ``rule`` for the NumPy functions ``funcs`` (as a composition, or with zero
    derivative if ``constant``); plain values go to NumPy itself."""
    def deco(rule):
        for fn in funcs:
            def wrapped(*args, _fn=fn, **kw):
                if not _active(args, kw):
                    return _fn(*_values(args), **{k: _values(v) for k, v in kw.items()})
                return rule(*args, **kw)
            wrapped.__name__ = getattr(fn, "__name__", "rule")
            wrapped.rule = rule
            _registry.register(fn, wrapped, "constant" if constant else "composition")
        return rule
    return deco


def defufunc(*ufuncs, constant=False):
    def deco(rule):
        for u in ufuncs:
            _registry.register(u, rule, "constant" if constant else "composition", ufunc=True)
        return rule
    return deco


def _shape(x):
    return np.shape(value_of(x))


def _no_out(name, out):
    if out is not None:
        raise TapegradTypeError(f"np.{name}: out= cannot receive a traced result; use the returned value")


def _axis(axis, ndim):
    return operator.index(axis) % ndim if ndim else 0


def _ids(shape, start=0):
    return np.arange(start, start + math.prod(shape), dtype=np.int64).reshape(shape)


def _by_index(x, fn):
    """fn (pure data movement, no new values) applied to x through its element numbers."""
    idx = fn(_ids(_shape(x)))
    if isinstance(idx, (list, tuple)):
        return type(idx)(gather(x, np.asarray(i)) for i in idx)
    return gather(x, np.asarray(idx))


def _by_index_fill(x, fn, fill=0.0):
    """Like _by_index, but fn may create entries (as zeros); those become ``fill``."""
    n = math.prod(_shape(x))
    idx = np.asarray(fn(_ids(_shape(x), start=1))) - 1
    idx = np.where(idx < 0, n, idx)
    src = concatenate([reshape(x, (-1,)), np.full(1, float(fill))])
    return gather(src, idx)


def _assemble(arrays, fn):
    """fn (a NumPy assembly of several arrays: hstack, block, ...) on traced/constant leaves."""
    pos, ids, flat = 0, [], []

    def walk(a):
        nonlocal pos
        if isinstance(a, (list, tuple)):
            return type(a)(walk(b) for b in a)
        s = _shape(a)
        i = _ids(s, pos)
        pos += i.size
        flat.append(reshape(a, (-1,)) if type(a) is Tracer else np.ravel(_as_float_array(a)))
        return i
    idtree = walk(arrays)
    idx = np.asarray(fn(idtree))
    src = concatenate(flat) if flat else np.zeros(0)
    return gather(src, idx)


def _take_last(x, k):
    return x[..., k]


def _guard_true(t):
    """Guard a traced boolean: replays must see the same comparison outcomes."""
    if type(t) is Tracer and t._rec.active:
        t._rec.guard(t)


def _move_last(x, axis):
    nd = len(_shape(x))
    return R.moveaxis(x, axis, -1) if axis % nd != nd - 1 else x


# ------------------------------------------------------------------ elementwise (ufuncs)
_LN2 = math.log(2.0)


@defufunc(np.logaddexp2)
def _logaddexp2(x, y):
    return binary("logaddexp", x * _LN2, y * _LN2) * (1.0 / _LN2)


@defufunc(np.fmod)
def _fmod(x, y):
    # x - y * trunc(x / y): derivative 1 in x, -trunc(x / y) in y, away from the jumps
    return x - y * np.trunc(x / y)


@defufunc(np.remainder)
def _remainder(x, y):
    return x - y * np.floor(x / y)


@defufunc(np.floor_divide, constant=True)
def _floor_divide(x, y):
    return np.floor(x / y)


def _sign_of(y):
    if _is_traced(y):
        return where(_signbit(y), -1.0, 1.0)
    return np.where(np.signbit(value_of(y)), -1.0, 1.0)


@defufunc(np.copysign)
def _copysign(x, y):
    return np.abs(x) * _sign_of(y)


@defufunc(np.heaviside, constant=True)
def _heaviside(x, h):
    return where(x > 0.0, 1.0, where(x == 0.0, h, 0.0))


@defufunc(np.conjugate)
def _conjugate(x):
    return x


@defufunc(np.ldexp)
def _ldexp(x, i):
    if _is_traced(i):
        raise TapegradTypeError("np.ldexp: the exponent must be an integer constant")
    return x * np.ldexp(1.0, np.asarray(value_of(i)))


@defufunc(np.signbit, constant=True)
def _signbit(x):
    # the signbit primitive (true at -0.0 and at NaNs with the sign bit, as NumPy), boolean
    return R._boolean(unary("signbit", x))


@defufunc(np.logical_xor, constant=True)
def _logical_xor(a, b):
    return R._boolean(binary("not_equal", R.as_bool(a), R.as_bool(b)))


@defn(np.isneginf, constant=True)
def _isneginf(x, out=None):
    return x == -np.inf


@defn(np.isposinf, constant=True)
def _isposinf(x, out=None):
    return x == np.inf


@defn(np.real, np.real_if_close)
def _real(x, *a, **kw):
    return x


@defn(np.imag, constant=True)
def _imag(x):
    return np.zeros(_shape(x))


@defn(np.angle)
def _angle(z, deg=False):
    # a real x: NumPy's arctan2(0, x), 0 for x >= 0, pi for x < 0, NaN for NaN; piecewise
    # constant (derivative 0), chosen by traced tests so that a replay recomputes it (pi at
    # x = -0.0, as NumPy: the traced signbit reads the sign bit)
    a = np.where(np.isnan(z), np.nan, np.where(np.signbit(z), np.pi, 0.0))
    return a * (180.0 / np.pi) if deg else a


for _f in (np.iscomplexobj, np.isrealobj):
    _registry.register(_f, (lambda f: lambda x: f(np.empty(0)))(_f), "constant")
_registry.register(np.iscomplex, lambda x: np.zeros(_shape(x), dtype=bool), "constant")
_registry.register(np.isreal, lambda x: np.ones(_shape(x), dtype=bool), "constant")


@defn(np.sinc)
def _sinc(x):
    # sin(pi x) / (pi x), with the Taylor branch at 0 so that first and second derivatives at 0
    # are exact (0 and -pi^2/3) too
    px = x * np.pi
    zero = x == 0.0
    safe = where(zero, 1.0, px)
    return where(zero, 1.0 - px * px * (1.0 / 6.0), np.sin(safe) / safe)


@defn(np.fix, constant=True)
def _fix(x, out=None):
    _no_out("fix", out)
    return np.trunc(x)


@defn(np.nan_to_num)
def _nan_to_num(x, copy=True, nan=0.0, posinf=None, neginf=None):
    big = np.finfo(np.float64).max
    y = where(np.isnan(x), nan, x)
    y = where(y == np.inf, big if posinf is None else posinf, y)
    return where(y == -np.inf, -big if neginf is None else neginf, y)


# ------------------------------------------------------------------ scipy.special
# ufuncs that are compositions
defufunc(sps.ndtr)(lambda x: 0.5 * sps.erfc(x * (-1.0 / math.sqrt(2.0))))
defufunc(sps.log_expit)(lambda x: -unary("softplus", -x))
defufunc(sps.exp10)(lambda x: unary("rpowc", x, 10.0))
defufunc(sps.exp2)(np.exp2)
defufunc(sps.expm1)(np.expm1)
defufunc(sps.log1p)(np.log1p)
defufunc(sps.cbrt)(np.cbrt)
if isinstance(getattr(sps, "softplus", None), np.ufunc):
    defufunc(sps.softplus)(lambda x: unary("softplus", x))


@defufunc(sps.xlogy)
def _xlogy(x, y):
    # x log y, 0 where x == 0 (also at y == 0); d/dx = log y, d/dy = x / y
    x0 = x == 0.0
    return where(x0, 0.0, x * np.log(where(x0 & (y == 0.0), 1.0, y)))


@defufunc(sps.xlog1py)
def _xlog1py(x, y):
    x0 = x == 0.0
    return where(x0, 0.0, x * np.log1p(where(x0 & (y == -1.0), 0.0, y)))


@defufunc(sps.entr)
def _entr(x):
    # -x log x for x > 0, 0 at 0 (and -inf below, as SciPy)
    pos = x > 0.0
    return where(pos, -x * np.log(where(pos, x, 1.0)), where(x == 0.0, 0.0, -np.inf))


@defufunc(sps.rel_entr)
def _rel_entr(x, y):
    ok = (x > 0.0) & (y > 0.0)
    xs, ys = where(ok, x, 1.0), where(ok, y, 1.0)
    return where(ok, x * np.log(xs / ys), where((x == 0.0) & (y >= 0.0), 0.0, np.inf))


@defufunc(sps.betaln)
def _betaln(a, b):
    return sps.gammaln(a) + sps.gammaln(b) - sps.gammaln(a + b)


_SQRT_2PI = math.sqrt(2.0 * math.pi)
_SQRT_PI = math.sqrt(math.pi)


def _polygamma(n, x):
    return call(Special([_shape(x)], fn="polygamma", n=n), x)


# name -> (value from x, derivative from traced (x, y = value)); the derivative is NumPy code
# that tapegrad traces, which gives the second derivative for hvp
_SPECIAL = {
    "gammaln": (lambda x, n: sps.gammaln(x), lambda x, y, n: sps.digamma(x)),
    "digamma": (lambda x, n: sps.digamma(x), lambda x, y, n: _polygamma(1, x)),
    "polygamma": (lambda x, n: sps.polygamma(n, x), lambda x, y, n: _polygamma(n + 1, x)),
    "gamma": (lambda x, n: sps.gamma(x), lambda x, y, n: y * sps.digamma(x)),
    "rgamma": (lambda x, n: sps.rgamma(x), lambda x, y, n: -y * sps.digamma(x)),
    "erfinv": (lambda x, n: sps.erfinv(x), lambda x, y, n: (_SQRT_PI / 2.0) * np.exp(y * y)),
    "erfcinv": (lambda x, n: sps.erfcinv(x), lambda x, y, n: (-_SQRT_PI / 2.0) * np.exp(y * y)),
    "ndtri": (lambda x, n: sps.ndtri(x), lambda x, y, n: _SQRT_2PI * np.exp(0.5 * y * y)),
    # exp(-x^2/2 - log_ndtr(x)) / sqrt(2 pi) stays finite far in the left tail
    "log_ndtr": (lambda x, n: sps.log_ndtr(x),
                 lambda x, y, n: np.exp(-0.5 * x * x - y) * (1.0 / _SQRT_2PI)),
    "erfcx": (lambda x, n: sps.erfcx(x), lambda x, y, n: 2.0 * x * y - 2.0 / _SQRT_PI),
    "i0": (lambda x, n: sps.i0(x), lambda x, y, n: sps.i1(x)),
    "i0e": (lambda x, n: sps.i0e(x), lambda x, y, n: sps.i1e(x) - np.sign(x) * y),
    # i1' = (i0 + i2) / 2 = i0 - i1/x, written without the 1/x singularity
    "i1": (lambda x, n: sps.i1(x), lambda x, y, n: 0.5 * (sps.i0(x) + _iv2(x))),
    "i1e": (lambda x, n: sps.i1e(x), lambda x, y, n: 0.5 * (sps.i0e(x) + _iv2e(x)) - np.sign(x) * y),
    "iv2": (lambda x, n: sps.iv(2, x), lambda x, y, n: sps.i1(x) - 2.0 * _iv3_over(x)),
}


def _iv2(x):
    return call(Special([_shape(x)], fn="iv2"), x)


def _iv2e(x):
    return _iv2(x) * np.exp(-np.abs(x))


def _iv3_over(x):
    # I_2(x) / x = (I_1(x) - I_3(x)) / 4 ... kept simple: I_2'(x) = I_1(x) - 2 I_2(x) / x
    # is singular-looking at 0; use I_2' = (I_1 + I_3) / 2 with I_3 = I_1 - 4 I_2 / x instead
    # only away from 0, and the series I_2(x)/x ~ x/8 near it
    small = np.abs(x) < 1e-3
    xs = where(small, 1.0, x)
    return where(small, x * 0.125, _iv2(xs) / xs)


@register
class Special(CallRule):
    """y = f(x) elementwise, f a special function whose derivative is another special function.

    Tangent y_dot = f'(x) x_dot, adjoint x_bar = f'(x) y_bar; f' is NumPy/SciPy code that tapegrad
    traces, so hvp differentiates it again (gammaln -> digamma -> polygamma(1) -> polygamma(2)).
    """
    name = "special"

    def __init__(self, in_shapes, out_shapes=None, fn="gammaln", n=0):
        super().__init__(in_shapes, in_shapes, fn=fn, n=int(n))
        if fn not in _SPECIAL:
            raise TapegradValueError(f"unknown special function {fn!r}")
        self.value, self.deriv = _SPECIAL[fn]
        self.n = int(n)

    def fwd(self, x):
        if type(x) is Tracer:  # traced (when the adjoint is differentiated): record a call
            return [call(Special([x.shape], fn=self.extra["fn"], n=self.n), x)]
        return [np.asarray(self.value(x, self.n), dtype=np.float64)]

    def tan(self, xs, ys, xdots):
        return [self.deriv(xs[0], ys[0], self.n) * xdots[0]]

    def bwd(self, xs, ys, ybars):
        return [self.deriv(xs[0], ys[0], self.n) * ybars[0]]


def _special_ufunc(fn):
    return lambda x: call(Special([_shape(x)], fn=fn), x)


for _u, _fn in [(sps.gammaln, "gammaln"), (sps.digamma, "digamma"), (sps.gamma, "gamma"),
                (sps.rgamma, "rgamma"), (sps.erfinv, "erfinv"), (sps.erfcinv, "erfcinv"),
                (sps.ndtri, "ndtri"), (sps.log_ndtr, "log_ndtr"), (sps.erfcx, "erfcx"),
                (sps.i0, "i0"), (sps.i0e, "i0e"), (sps.i1, "i1"), (sps.i1e, "i1e")]:
    _registry.register(_u, _special_ufunc(_fn), "rule", rule_class=Special, ufunc=True)
# loggamma is gammaln for real x > 0
_registry.register(sps.loggamma, _special_ufunc("gammaln"), "rule", rule_class=Special, ufunc=True)


def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False):
    """scipy.special.logsumexp that also works on tracers (scipy's converts with np.asarray)."""
    if not _active(a, b):
        return sps.logsumexp(_values(a), axis=axis, b=_values(b), keepdims=keepdims,
                             return_sign=return_sign)
    m = np.max(a, axis=axis, keepdims=True)
    mv = np.where(np.isfinite(m.value if type(m) is Tracer else m), value_of(m), 0.0)
    e = np.exp(a - mv)
    if b is not None:
        e = e * b
    s = np.sum(e, axis=axis, keepdims=keepdims)
    mk = mv if keepdims else np.squeeze(mv, axis=axis)
    if return_sign:
        sgn = np.sign(value_of(s))
        return np.log(np.abs(s)) + mk, sgn
    return np.log(s) + mk


# ------------------------------------------------------------------ reductions and scans
def _shift(x, s, axis, fill):
    """x shifted by s > 0 along axis, the first s entries set to ``fill``."""
    def fn(I):
        pad = [(0, 0)] * I.ndim
        pad[axis] = (s, 0)
        sl = [slice(None)] * I.ndim
        sl[axis] = slice(0, I.shape[axis] - s) if I.shape[axis] > s else slice(0, 0)
        return np.pad(I[tuple(sl)], pad)
    return _by_index_fill(x, fn, fill)


def _scan(x, axis, kind):
    """Inclusive scan by doubling (Hillis & Steele 1986): log2(n) shifted adds / products."""
    n = _shape(x)[axis]
    s = 1
    while s < n:
        sh = _shift(x, s, axis, 0.0 if kind == "add" else 1.0)
        x = x + sh if kind == "add" else x * sh
        s *= 2
    return x


def _scan_rule(kind, name):
    def rule(a, axis=None, dtype=None, out=None):
        _no_out(name, out)
        if axis is None:
            a, axis = reshape(a, (-1,)), 0
        nd = len(_shape(a))
        if nd == 0:
            return reshape(a, (1,))
        return _scan(a, _axis(axis, nd), kind)
    return rule


defn(np.cumsum)(_scan_rule("add", "cumsum"))
defn(np.cumprod)(_scan_rule("mul", "cumprod"))
if hasattr(np, "cumulative_sum"):
    @defn(np.cumulative_sum)
    def _cumulative_sum(x, /, *, axis=None, dtype=None, out=None, include_initial=False):
        if axis is None:
            if len(_shape(x)) > 1:
                raise TapegradValueError("cumulative_sum: axis is required for arrays with more than one dimension")
            axis = 0
        y = _scan_rule("add", "cumulative_sum")(x, axis)
        if include_initial:
            y = _by_index_fill(y, lambda I: np.concatenate(
                [np.zeros_like(np.take(I, [0], axis=axis)), I], axis=axis))
        return y

    @defn(np.cumulative_prod)
    def _cumulative_prod(x, /, *, axis=None, dtype=None, out=None, include_initial=False):
        if axis is None:
            axis = 0
        y = _scan_rule("mul", "cumulative_prod")(x, axis)
        if include_initial:
            y = _by_index_fill(y, lambda I: np.concatenate(
                [np.zeros_like(np.take(I, [0], axis=axis)), I], axis=axis), 1.0)
        return y


@defn(np.ptp)
def _ptp(a, axis=None, out=None, keepdims=False):
    _no_out("ptp", out)
    return reduce("max", a, axis, keepdims) - reduce("min", a, axis, keepdims)


@defn(np.average)
def _average(a, axis=None, weights=None, returned=False, *, keepdims=False):
    if weights is None:
        avg = R.mean(a, axis, keepdims)
        if returned:
            n = math.prod(_shape(a)) / max(math.prod(np.shape(value_of(avg))), 1)
            return avg, np.full(np.shape(value_of(avg)), float(n))
        return avg
    ws, s = _shape(weights), _shape(a)
    if ws != s:
        if axis is None or len(ws) != 1:
            raise TapegradTypeError("np.average: 1D weights need an axis; otherwise shapes must match")
        ax = _axis(axis, len(s))
        shp = [1] * len(s)
        shp[ax] = ws[0]
        weights = reshape(weights, tuple(shp)) if type(weights) is Tracer else np.reshape(weights, shp)
    wsum = np.sum(weights * np.ones(s), axis=axis, keepdims=keepdims) if ws != s else \
        np.sum(weights, axis=axis, keepdims=keepdims)
    avg = np.sum(a * weights, axis=axis, keepdims=keepdims) / wsum
    return (avg, wsum) if returned else avg


def _nan_fill(a, fill):
    # a traced mask: a replay recomputes where the NaNs are (a mask taken from the recorded
    # values would keep the recorded positions)
    return where(np.isnan(a) if _is_traced(a) else np.isnan(value_of(a)), fill, a)


for _f, _g, _fill in [(np.nansum, np.sum, 0.0), (np.nanprod, np.prod, 1.0),
                      (np.nanmax, np.max, -np.inf), (np.nanmin, np.min, np.inf),
                      (np.nancumsum, np.cumsum, 0.0), (np.nancumprod, np.cumprod, 1.0)]:
    defn(_f)((lambda g, fill: lambda a, *args, **kw: g(_nan_fill(a, fill), *args, **kw))(_g, _fill))


@defn(np.nanmean)
def _nanmean(a, axis=None, dtype=None, out=None, keepdims=False, **kw):
    ok = ~np.isnan(a) if _is_traced(a) else ~np.isnan(value_of(a))
    return np.sum(_nan_fill(a, 0.0), axis=axis, keepdims=keepdims) / (
        np.sum(ok, axis=axis, keepdims=keepdims) * 1.0)


def _var(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=True, mean=None,
         correction=None):
    _no_out("var", out)
    if where is not True:
        raise UnsupportedError("np.var: where= on traced arrays")
    if correction is not None:
        ddof = correction
    m = np.mean(a, axis=axis, keepdims=True) if mean is None else mean
    d = a - m
    n = math.prod(_shape(a)[i] for i in R._norm_axes(axis, len(_shape(a))))
    return np.sum(d * d, axis=axis, keepdims=keepdims) * (1.0 / (n - ddof))


defn(np.var)(_var)


@defn(np.std)
def _std(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **kw):
    v = _var(a, axis, dtype, out, ddof, keepdims, **kw)
    # one element per reduction: var is the constant 0, and std = var (R.one_per_reduction)
    return v if R.one_per_reduction(_shape(a), axis) else np.sqrt(v)


@defn(np.median)
def _median(a, axis=None, out=None, overwrite_input=False, keepdims=False):
    return _quantile(a, 0.5, axis, keepdims=keepdims)


def _quantile(a, q, axis=None, method="linear", keepdims=False):
    if method != "linear":
        raise UnsupportedError(f"quantile: method={method!r} on traced arrays (linear only)")
    if _is_traced(q):
        raise TapegradTypeError("quantile: q must be a constant")
    qv = np.asarray(value_of(q), dtype=np.float64)
    nd = len(_shape(a))
    if axis is None:
        a, ax = reshape(a, (-1,)), 0
    elif isinstance(axis, (tuple, list)):
        axes = R._norm_axes(axis, nd)
        rest = [i for i in range(nd) if i not in axes]
        a = transpose(a, tuple(rest) + axes)
        a = reshape(a, tuple(_shape(a)[:len(rest)]) + (-1,))
        ax = len(rest)
    else:
        ax = _axis(axis, nd)
    s = _sort(a, axis=ax)
    n = _shape(s)[ax]
    pos = qv * (n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    t = pos - lo
    res = []
    for l, h, w in zip(lo.ravel(), hi.ravel(), t.ravel()):
        vl = _take(s, int(l), axis=ax)
        vh = _take(s, int(h), axis=ax)
        res.append(vl + (vh - vl) * float(w) if w else vl)
    out = res[0] if qv.ndim == 0 else R.reshape(R.stack(res), qv.shape + _shape(res[0]))
    if keepdims:
        if axis is None:
            out = reshape(out, qv.shape + (1,) * nd)
        else:
            axes = R._norm_axes(axis, nd)
            base = list(_shape(out)[qv.ndim:])
            for i in axes:
                base.insert(i, 1)
            out = reshape(out, qv.shape + tuple(base))
    return out


@defn(np.quantile)
def _np_quantile(a, q, axis=None, out=None, overwrite_input=False, method="linear",
                 keepdims=False, **kw):
    _no_out("quantile", out)
    return _quantile(a, q, axis, method, keepdims)


@defn(np.percentile)
def _np_percentile(a, q, axis=None, out=None, overwrite_input=False, method="linear",
                   keepdims=False, **kw):
    _no_out("percentile", out)
    return _quantile(a, np.asarray(value_of(q)) / 100.0, axis, method, keepdims)


@defn(np.diff)
def _diff(a, n=1, axis=-1, prepend=np._NoValue, append=np._NoValue):
    nd = len(_shape(a))
    ax = _axis(axis, nd)
    parts = []
    if prepend is not np._NoValue:
        parts.append(R.broadcast_to(prepend, _shape(a)[:ax] + (1,) + _shape(a)[ax + 1:])
                     if np.ndim(value_of(prepend)) == 0 else prepend)
    parts.append(a)
    if append is not np._NoValue:
        parts.append(R.broadcast_to(append, _shape(a)[:ax] + (1,) + _shape(a)[ax + 1:])
                     if np.ndim(value_of(append)) == 0 else append)
    if len(parts) > 1:
        a = concatenate(parts, axis=ax)
    for _ in range(n):
        m = _shape(a)[ax]
        hi = [slice(None)] * nd
        lo = [slice(None)] * nd
        hi[ax], lo[ax] = slice(1, m), slice(0, m - 1)
        a = a[tuple(hi)] - a[tuple(lo)]
    return a


@defn(np.ediff1d)
def _ediff1d(ary, to_end=None, to_begin=None):
    d = _diff(reshape(ary, (-1,)))
    parts = [p for p in (to_begin, d, to_end) if p is not None]
    return concatenate([reshape(p, (-1,)) if type(p) is Tracer else np.ravel(p) for p in parts])


@defn(np.gradient)
def _gradient(f, *varargs, axis=None, edge_order=1):
    if edge_order != 1 or any(np.ndim(value_of(v)) for v in varargs):
        raise UnsupportedError("np.gradient on traced arrays: uniform scalar spacing, edge_order=1")
    nd = len(_shape(f))
    axes = range(nd) if axis is None else R._norm_axes(axis, nd)
    axes = list(axes)
    hs = [float(value_of(v)) for v in varargs] or [1.0]
    if len(hs) == 1:
        hs = hs * len(axes)
    out = []
    for ax, h in zip(axes, hs):
        m = _shape(f)[ax]

        def sl(a, b):
            s = [slice(None)] * nd
            s[ax] = slice(a, b)
            return f[tuple(s)]
        inner = (sl(2, m) - sl(0, m - 2)) * (0.5 / h)
        first = (sl(1, 2) - sl(0, 1)) * (1.0 / h)
        last = (sl(m - 1, m) - sl(m - 2, m - 1)) * (1.0 / h)
        out.append(concatenate([first, inner, last], axis=ax))
    return out[0] if len(out) == 1 else tuple(out)


@defn(np.trapezoid if hasattr(np, "trapezoid") else np.trapz)
def _trapezoid(y, x=None, dx=1.0, axis=-1):
    nd = len(_shape(y))
    ax = _axis(axis, nd)
    m = _shape(y)[ax]
    s1 = [slice(None)] * nd
    s0 = [slice(None)] * nd
    s1[ax], s0[ax] = slice(1, m), slice(0, m - 1)
    avg = (y[tuple(s1)] + y[tuple(s0)]) * 0.5
    if x is None:
        return np.sum(avg, axis=ax) * dx
    d = _diff(x, axis=-1 if np.ndim(value_of(x)) == 1 else ax)
    if np.ndim(value_of(x)) == 1 and nd > 1:
        shp = [1] * nd
        shp[ax] = m - 1
        d = reshape(d, tuple(shp)) if type(d) is Tracer else np.reshape(d, shp)
    return np.sum(avg * d, axis=ax)


# ------------------------------------------------------------------ shape and assembly
@defn(np.flip)
def _flip(m, axis=None):
    return _by_index(m, lambda I: np.flip(I, axis))


defn(np.fliplr)(lambda m: _by_index(m, np.fliplr))
defn(np.flipud)(lambda m: _by_index(m, np.flipud))
defn(np.roll)(lambda a, shift, axis=None: _by_index(a, lambda I: np.roll(I, shift, axis)))
defn(np.rot90)(lambda m, k=1, axes=(0, 1): _by_index(m, lambda I: np.rot90(I, k, axes)))
defn(np.tile)(lambda A, reps: _by_index(A, lambda I: np.tile(I, reps)))
defn(np.resize)(lambda a, new_shape: _by_index(a, lambda I: np.resize(I, new_shape)))
defn(np.repeat)(lambda a, repeats, axis=None: _by_index(a, lambda I: np.repeat(I, _values(repeats), axis)))
defn(np.diagonal)(lambda a, offset=0, axis1=0, axis2=1: _by_index(
    a, lambda I: np.diagonal(I, offset, axis1, axis2).copy()))
defn(np.split)(lambda ary, indices_or_sections, axis=0: _by_index(
    ary, lambda I: list(np.split(I, indices_or_sections, axis))))
defn(np.array_split)(lambda ary, indices_or_sections, axis=0: _by_index(
    ary, lambda I: list(np.array_split(I, indices_or_sections, axis))))
defn(np.hsplit)(lambda ary, s: _by_index(ary, lambda I: list(np.hsplit(I, s))))
defn(np.vsplit)(lambda ary, s: _by_index(ary, lambda I: list(np.vsplit(I, s))))
defn(np.dsplit)(lambda ary, s: _by_index(ary, lambda I: list(np.dsplit(I, s))))
defn(np.delete)(lambda arr, obj, axis=None: _by_index(arr, lambda I: np.delete(I, _values(obj), axis)))
defn(np.compress)(lambda condition, a, axis=None, out=None: _by_index(
    a, lambda I: np.compress(R._guarded_value(condition), I, axis)))
defn(np.extract)(lambda condition, arr: _by_index(
    arr, lambda I: np.extract(R._guarded_value(condition), I)))


@defn(np.take)
def _take(a, indices, axis=None, out=None, mode="raise"):
    _no_out("take", out)
    return _by_index(a, lambda I: np.take(I, np.asarray(_values(indices)), axis, mode=mode))


@defn(np.take_along_axis)
def _take_along_axis(arr, indices, axis=-1):
    ind = R._guarded_value(indices)
    return _by_index(arr, lambda I: np.take_along_axis(I, np.asarray(ind), axis))


@defn(np.diag)
def _diag(v, k=0):
    if len(_shape(v)) == 1:
        return _by_index_fill(v, lambda I: np.diag(I, k))
    return _by_index(v, lambda I: np.diag(I, k).copy())


@defn(np.diagflat)
def _diagflat(v, k=0):
    return _by_index_fill(v, lambda I: np.diagflat(I, k))


@defn(np.tril)
def _tril(m, k=0):
    return _by_index_fill(m, lambda I: np.tril(I, k))


@defn(np.triu)
def _triu(m, k=0):
    return _by_index_fill(m, lambda I: np.triu(I, k))


@defn(np.trace)
def _trace(a, offset=0, axis1=0, axis2=1, dtype=None, out=None):
    _no_out("trace", out)
    return np.sum(np.diagonal(a, offset, axis1, axis2), axis=-1)


_PAD_INDEX_MODES = ("constant", "edge", "reflect", "symmetric", "wrap", "empty")


@defn(np.pad)
def _pad(array, pad_width, mode="constant", **kw):
    if callable(mode) or mode not in _PAD_INDEX_MODES:
        raise UnsupportedError(f"np.pad: mode={mode!r} on traced arrays (supported: "
                                  f"{', '.join(_PAD_INDEX_MODES)})")
    pw = _values(pad_width)
    if mode in ("constant", "empty"):
        cv = kw.get("constant_values", 0)
        if any(_is_traced(c) for c in _leaves(cv)):
            raise UnsupportedError("np.pad: traced constant_values")
        body = _by_index_fill(array, lambda I: np.pad(I, pw))
        extra = np.pad(np.zeros(_shape(array)), pw, constant_values=_values(cv))
        return body + extra if np.any(extra) else body
    return _by_index(array, lambda I: np.pad(I, pw, mode=mode, **kw))


def _seq_rule(fn):
    def rule(tup, *args, **kw):
        kw.pop("dtype", None)
        kw.pop("casting", None)
        return _assemble(list(tup), lambda ids: fn(ids, *args, **kw))
    return rule


for _f in (np.hstack, np.vstack, np.dstack, np.column_stack):
    defn(_f)(_seq_rule(_f))
if hasattr(np, "row_stack"):
    try:
        defn(np.row_stack)(_seq_rule(np.vstack))
    except Exception:  # pragma: no cover
        pass


@defn(np.block)
def _block(arrays):
    return _assemble(arrays, np.block)


@defn(np.append)
def _append(arr, values, axis=None):
    return _assemble([arr, values], lambda ids: np.append(ids[0], ids[1], axis))


@defn(np.insert)
def _insert(arr, obj, values, axis=None):
    return _assemble([arr, values], lambda ids: np.insert(ids[0], _values(obj), ids[1], axis))


@defn(np.select)
def _select(condlist, choicelist, default=0):
    out = default
    for c, v in reversed(list(zip(condlist, choicelist))):
        out = where(c, v, out)
    shape = np.broadcast_shapes(*[_shape(c) for c in condlist], *[_shape(v) for v in choicelist])
    return out if _shape(out) == shape else R.broadcast_to(out, shape)


@defn(np.piecewise)
def _piecewise(x, condlist, funclist, *args, **kw):
    cl = [R._guarded_value(c) for c in (condlist if isinstance(condlist, list) else [condlist])]
    cl = [np.asarray(c, dtype=bool) for c in cl]
    if len(funclist) == len(cl) + 1:
        cl.append(~np.any(cl, axis=0))
    out = np.zeros(_shape(x))
    for c, f in zip(cl, funclist):
        val = f(x, *args, **kw) if callable(f) else f
        out = where(c, val, out)
    return out


@defn(np.kron)
def _kron(a, b):
    sa, sb = _shape(a), _shape(b)
    nd = max(len(sa), len(sb))
    sa, sb = (1,) * (nd - len(sa)) + sa, (1,) * (nd - len(sb)) + sb
    a2 = reshape(a, tuple(k for d in sa for k in (d, 1)))
    b2 = reshape(b, tuple(k for d in sb for k in (1, d)))
    return reshape(a2 * b2, tuple(x * y for x, y in zip(sa, sb)))


@defn(np.cross)
def _cross(a, b, axisa=-1, axisb=-1, axisc=-1, axis=None):
    if axis is not None:
        axisa = axisb = axisc = axis
    a, b = _move_last(a, axisa), _move_last(b, axisb)
    na, nb = _shape(a)[-1], _shape(b)[-1]
    if na not in (2, 3) or nb not in (2, 3):
        raise TapegradValueError("incompatible dimensions for cross product (dimension must be 2 or 3)")
    a0, a1 = a[..., 0], a[..., 1]
    b0, b1 = b[..., 0], b[..., 1]
    a2 = a[..., 2] if na == 3 else 0.0
    b2 = b[..., 2] if nb == 3 else 0.0
    if na == 2 and nb == 2:
        return a0 * b1 - a1 * b0
    c = R.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], axis=-1)
    nd = len(_shape(c))
    return c if axisc % nd == nd - 1 else R.moveaxis(c, -1, axisc)


@defn(np.outer)
def _outer(a, b, out=None):
    _no_out("outer", out)
    return reshape(a, (-1, 1)) * reshape(b, (1, -1))


@defn(np.vdot)
def _vdot(a, b):
    return np.sum(reshape(a, (-1,)) * reshape(b, (-1,)))


# ------------------------------------------------------------------ einsum
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _parse_einsum(subscripts, shapes):
    subscripts = subscripts.replace(" ", "")
    if "->" in subscripts:
        lhs, out = subscripts.split("->")
    else:
        lhs, out = subscripts, None
    ins = lhs.split(",")
    if len(ins) != len(shapes):
        raise TapegradValueError("einsum: number of subscripts and operands differ")
    used = set(c for c in subscripts if c.isalpha())
    free = [c for c in _LETTERS if c not in used]
    ell_nd = max((len(s) - (len(t) - 3) for t, s in zip(ins, shapes) if "..." in t), default=0)
    ell = "".join(free[:ell_nd])
    ins2 = []
    for t, s in zip(ins, shapes):
        if "..." in t:
            k = len(s) - (len(t) - 3)
            t = t.replace("...", ell[ell_nd - k:])
        if len(t) != len(s):
            raise TapegradValueError(f"einsum: subscripts {t!r} for an operand of shape {s}")
        ins2.append(t)
    if out is None:
        counts = {}
        for t in ins2:
            for c in t:
                counts[c] = counts.get(c, 0) + 1
        out = ell + "".join(sorted(c for c in counts if counts[c] == 1 and c not in ell))
    else:
        out = out.replace("...", ell)
    return ins2, out


def _einsum(subscripts, *operands, **kw):
    if not isinstance(subscripts, str):          # the interleaved (operand, sublist) form
        subscripts, operands = _einsum_subscripts((subscripts,) + operands)
    ops = list(operands)
    ins, out = _parse_einsum(subscripts, [_shape(o) for o in ops])
    sizes = {}
    for t, o in zip(ins, ops):
        for c, k in zip(t, _shape(o)):
            if sizes.get(c, 1) == 1:
                sizes[c] = k
    # 1. per operand: repeated letters (diagonals), size-1 broadcast letters, letters used nowhere else
    terms = []
    for i, (t, o) in enumerate(zip(ins, ops)):
        if len(set(t)) != len(t):
            u = "".join(dict.fromkeys(t))
            o = _by_index(o, lambda I, t=t, u=u: np.einsum(f"{t}->{u}", I).copy())
            t = u
        sh = _shape(o)
        if any(k != sizes[c] for c, k in zip(t, sh)):
            o = R.broadcast_to(o, tuple(sizes[c] for c in t))
        others = set(out) | set(c for j, tt in enumerate(ins) if j != i for c in tt)
        gone = [k for k, c in enumerate(t) if c not in others]
        if gone:
            o = np.sum(o, axis=tuple(gone))
            t = "".join(c for c in t if c in others)
        terms.append((t, o))
    # 2. contract pairwise, left to right: batch letters, free letters, summed letters -> matmul
    t, o = terms[0]
    for k in range(1, len(terms)):
        t2, o2 = terms[k]
        later = set(out) | set(c for tt, _ in terms[k + 1:] for c in tt)
        batch = [c for c in t if c in t2 and c in later]
        summed = [c for c in t if c in t2 and c not in later]
        fa = [c for c in t if c not in t2]
        fb = [c for c in t2 if c not in t]
        nb = math.prod(sizes[c] for c in batch)
        na, nbb, nk = (math.prod(sizes[c] for c in fa), math.prod(sizes[c] for c in fb),
                       math.prod(sizes[c] for c in summed))
        A = reshape(transpose(o, tuple(t.index(c) for c in batch + fa + summed)), (nb, na, nk)) \
            if type(o) is Tracer else np.reshape(np.transpose(o, [t.index(c) for c in batch + fa + summed]), (nb, na, nk))
        B = reshape(transpose(o2, tuple(t2.index(c) for c in batch + summed + fb)), (nb, nk, nbb)) \
            if type(o2) is Tracer else np.reshape(np.transpose(o2, [t2.index(c) for c in batch + summed + fb]), (nb, nk, nbb))
        o = matmul(A, B)
        t = "".join(batch + fa + fb)
        o = reshape(o, tuple(sizes[c] for c in t)) if type(o) is Tracer else np.reshape(o, [sizes[c] for c in t])
        gone = [i for i, c in enumerate(t) if c not in later]
        if gone:
            o = np.sum(o, axis=tuple(gone))
            t = "".join(c for c in t if c in later)
    if t != out:
        o = transpose(o, tuple(t.index(c) for c in out)) if type(o) is Tracer else np.transpose(o, [t.index(c) for c in out])
    return o


defn(np.einsum)(_einsum)


# ------------------------------------------------------------------ order: sort, partition, arg*
def _order_guard(x, idx, check):
    """Gather x by idx; guard that ``check(gathered)`` (a traced comparison) stays true."""
    s = gather(x, idx)
    if _is_traced(s):
        _guard_true(check(s))
    return s


def _sort(a, axis=-1, kind=None, order=None, **kw):
    if axis is None:
        a, axis = reshape(a, (-1,)), 0
    nd = len(_shape(a))
    ax = _axis(axis, nd)
    perm = np.argsort(value_of(a), axis=ax, kind="stable")
    idx = np.take_along_axis(_ids(_shape(a)), perm, ax)
    return _order_guard(a, idx, lambda s: _diff(s, axis=ax) >= 0.0)


defn(np.sort)(_sort)
if hasattr(np, "msort"):
    defn(np.msort)(lambda a: _sort(a, 0))


@defn(np.partition)
def _partition(a, kth, axis=-1, kind="introselect", order=None):
    if axis is None:
        a, axis = reshape(a, (-1,)), 0
    nd = len(_shape(a))
    ax = _axis(axis, nd)
    perm = np.argpartition(value_of(a), kth, axis=ax)
    idx = np.take_along_axis(_ids(_shape(a)), perm, ax)
    n = _shape(a)[ax]
    ks = [k % n for k in np.atleast_1d(kth)]

    def check(s):
        pos = np.arange(n).reshape((n,) + (1,) * (nd - ax - 1))
        conds = []
        for k in ks:
            sk = _take(s, [k], axis=ax)
            sg = np.where(pos < k, -1.0, np.where(pos > k, 1.0, 0.0))
            conds.append(((s - sk) * sg) >= 0.0)
        return conds[0] if len(conds) == 1 else R.concatenate(conds)
    return _order_guard(a, idx, check)


def _argsort(a, axis=-1, kind=None, order=None, **kw):
    if axis is None:
        a, axis = reshape(a, (-1,)), 0
    ax = _axis(axis, len(_shape(a)))
    perm = np.argsort(value_of(a), axis=ax, kind="stable" if kind is None else kind)
    idx = np.take_along_axis(_ids(_shape(a)), perm, ax)
    _order_guard(a, idx, lambda s: _diff(s, axis=ax) >= 0.0)
    return perm


def _argpartition(a, kth, axis=-1, kind="introselect", order=None):
    if axis is None:
        a, axis = reshape(a, (-1,)), 0
    ax = _axis(axis, len(_shape(a)))
    perm = np.argpartition(value_of(a), kth, axis=ax)
    _partition(a, kth, axis=ax)  # records the same guard (the permutation is deterministic)
    return perm


def _argext(kind):
    def rule(a, axis=None, out=None, *, keepdims=False):
        _no_out("arg" + kind, out)
        v = value_of(a)
        i = (np.argmax if kind == "max" else np.argmin)(v, axis=axis, keepdims=True)
        flat_a = reshape(a, (-1,)) if axis is None else a
        ax = 0 if axis is None else _axis(axis, v.ndim)
        idx = np.take_along_axis(_ids(_shape(flat_a)), i.reshape((1,)) if axis is None else i, ax)
        e = gather(flat_a, idx)
        if _is_traced(e):
            # first index of the extreme: strictly better than everything before it, at least
            # as good as everything after (so a replay picks the same index)
            n = _shape(flat_a)[ax]
            pos = np.arange(n).reshape((n,) + (1,) * (len(_shape(flat_a)) - ax - 1))
            before = pos < np.asarray(i)
            d = (e - flat_a) if kind == "max" else (flat_a - e)
            _guard_true(where(before, d > 0.0, d >= 0.0))
        r = np.argmax(v, axis=axis, keepdims=keepdims) if kind == "max" else \
            np.argmin(v, axis=axis, keepdims=keepdims)
        return r
    return rule


defn(np.argsort, constant=True)(_argsort)
defn(np.argpartition, constant=True)(_argpartition)
defn(np.argmax, constant=True)(_argext("max"))
defn(np.argmin, constant=True)(_argext("min"))


def _guarded_tree(obj):
    if isinstance(obj, (list, tuple)):
        return type(obj)(_guarded_tree(o) for o in obj)
    return R._guarded_value(obj)


def _guarded_fn(fn):
    """An integer/boolean-valued function of values: evaluate on guarded values (constants)."""
    return lambda *a, **kw: fn(*_guarded_tree(a), **{k: _guarded_tree(v) for k, v in kw.items()})


for _f in (np.searchsorted, np.digitize, np.unique, np.bincount, np.histogram,
           np.lexsort, np.array_equiv, np.isin, np.nanargmax, np.nanargmin):
    defn(_f, constant=True)(_guarded_fn(_f))
if hasattr(np, "in1d"):
    defn(np.in1d, constant=True)(_guarded_fn(np.in1d))


# ------------------------------------------------------------------ numpy.linalg (compositions)
def _norm(x, ord=None, axis=None, keepdims=False):
    nd = len(_shape(x))
    if axis is None:
        if ord is None or (nd == 2 and ord == "fro") or (nd == 1 and ord == 2):
            r = np.sqrt(np.sum(x * x))
            if keepdims:
                r = reshape(r, (1,) * nd)
            return r
        axis = tuple(range(nd))
    if isinstance(axis, (int, np.integer)):
        axis = (int(axis),)
    axis = tuple(axis)
    if len(axis) == 1:
        ax = axis[0]
        if ord is None or ord == 2:
            return np.sqrt(np.sum(x * x, axis=ax, keepdims=keepdims))
        if ord == np.inf:
            return np.max(np.abs(x), axis=ax, keepdims=keepdims)
        if ord == -np.inf:
            return np.min(np.abs(x), axis=ax, keepdims=keepdims)
        if ord == 0:
            return np.sum((x != 0.0) * 1.0, axis=ax, keepdims=keepdims)
        if ord == 1:
            return np.sum(np.abs(x), axis=ax, keepdims=keepdims)
        if isinstance(ord, str):
            raise TapegradValueError(f"Invalid norm order '{ord}' for vectors")
        p = float(ord)
        return np.sum(np.abs(x) ** p, axis=ax, keepdims=keepdims) ** (1.0 / p)
    if len(axis) == 2:
        r, c = (a % nd for a in axis)
        if r == c:
            raise TapegradValueError("Duplicate axes given.")
        if ord is None or ord == "fro":
            out = np.sqrt(np.sum(x * x, axis=(r, c), keepdims=keepdims))
        elif ord in (1, -1):
            s = np.sum(np.abs(x), axis=r, keepdims=True)
            out = (np.max if ord == 1 else np.min)(s, axis=c, keepdims=True)
            out = out if keepdims else np.squeeze(out, axis=(r, c))
        elif ord in (np.inf, -np.inf):
            s = np.sum(np.abs(x), axis=c, keepdims=True)
            out = (np.max if ord == np.inf else np.min)(s, axis=r, keepdims=True)
            out = out if keepdims else np.squeeze(out, axis=(r, c))
        elif ord in (2, -2, "nuc"):
            m = np.moveaxis(x, (r, c), (-2, -1))
            s = np.linalg.svd(m, compute_uv=False)
            out = np.max(s, axis=-1) if ord == 2 else np.min(s, axis=-1) if ord == -2 else np.sum(s, axis=-1)
            if keepdims:
                shp = list(_shape(x))
                shp[r] = shp[c] = 1
                out = reshape(out, tuple(shp))
        else:
            raise TapegradValueError("Invalid norm order for matrices.")
        return out
    raise TapegradValueError("Improper number of dimensions to norm.")


defn(np.linalg.norm)(_norm)
if hasattr(np.linalg, "vector_norm"):
    @defn(np.linalg.vector_norm)
    def _vector_norm(x, /, *, axis=None, keepdims=False, ord=2):
        if axis is None:
            r = _norm(reshape(x, (-1,)), ord, 0)
            return reshape(r, (1,) * len(_shape(x))) if keepdims else r
        return _norm(x, ord, axis, keepdims)

    @defn(np.linalg.matrix_norm)
    def _matrix_norm(x, /, *, keepdims=False, ord="fro"):
        return _norm(x, ord, (-2, -1), keepdims)


@defn(np.linalg.matrix_power)
def _matrix_power(a, n):
    n = operator.index(n)
    if n < 0:
        a, n = np.linalg.inv(a), -n
    if n == 0:
        s = _shape(a)
        return np.broadcast_to(np.eye(s[-1]), s).copy()
    result, base = None, a
    while n:
        if n & 1:
            result = base if result is None else matmul(result, base)
        n >>= 1
        if n:
            base = matmul(base, base)
    return result


@defn(np.linalg.multi_dot)
def _multi_dot(arrays, *, out=None):
    _no_out("multi_dot", out)
    arrays = list(arrays)
    r = arrays[0]
    for b in arrays[1:]:
        r = R.dot(r, b)
    return r


if hasattr(np.linalg, "matmul"):
    defn(np.linalg.matmul)(lambda a, b: matmul(a, b))
    defn(np.linalg.vecdot)(lambda a, b, axis=-1: np.sum(a * b, axis=axis))
    defn(np.linalg.outer)(lambda a, b: _outer(a, b))
    defn(np.linalg.trace)(lambda x, offset=0, dtype=None: np.sum(
        np.diagonal(x, offset, -2, -1), axis=-1))
    defn(np.linalg.diagonal)(lambda x, offset=0: np.diagonal(x, offset, -2, -1))
    defn(np.linalg.tensordot)(R.tensordot)
    defn(np.linalg.cross)(lambda a, b, axis=-1: _cross(a, b, axis=axis))
# NumPy 2 gufuncs (dispatched through __array_ufunc__)
for _name, _rule in [("vecdot", lambda a, b: np.sum(a * b, axis=-1)),
                     ("matvec", lambda A, v: np.sum(A * np.expand_dims(v, -2), axis=-1)),
                     ("vecmat", lambda v, A: np.sum(np.expand_dims(v, -1) * A, axis=-2))]:
    if isinstance(getattr(np, _name, None), np.ufunc):
        defufunc(getattr(np, _name))(_rule)
defn(np.linalg.matrix_rank, constant=True)(_guarded_fn(np.linalg.matrix_rank))
defn(np.linalg.cond, constant=False)(lambda x, p=None: linalg._cond(x, p))


# (np.fft: rules/complex.py)
# (np.linalg.eigvals: rules/complex.py; np.linalg.eig: rules/complex_linalg.py)
_registry.register(np.fft.fftshift, lambda x, axes=None: _by_index(x, lambda I: np.fft.fftshift(I, axes)),
                  "composition")
_registry.register(np.fft.ifftshift, lambda x, axes=None: _by_index(x, lambda I: np.fft.ifftshift(I, axes)),
                  "composition")


# ------------------------------------------------------------------ ranges, signals, polynomials
def _einsum_subscripts(operands):
    """The subscripts string of einsum's interleaved form (op0, sublist0, op1, sublist1, ...,
    [sublist_out]): integer labels become letters, Ellipsis becomes '...'."""
    out = None
    if len(operands) % 2:          # an output sublist was given last
        out, operands = operands[-1], operands[:-1]
    ops, subs = list(operands[0::2]), list(operands[1::2])

    def letters(sub):
        s = []
        for k in sub:
            if k is Ellipsis:
                s.append("...")
            else:
                k = operator.index(k)
                if not 0 <= k < len(_LETTERS):
                    raise TapegradValueError(f"einsum: subscript {k} is not in [0, {len(_LETTERS)})")
                s.append(_LETTERS[k])
        return "".join(s)
    spec = ",".join(letters(s) for s in subs)
    if out is not None:
        spec += "->" + letters(out)
    return spec, ops


def _linspace_t(num, endpoint, ndim):
    div = (num - 1) if endpoint else num
    t = np.arange(num, dtype=np.float64) / div if div > 0 else np.zeros(num)
    return t.reshape((num,) + (1,) * ndim), div


@defn(np.linspace)
def _linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0, *,
              device=None):
    if dtype is not None and np.dtype(dtype).kind != "f":
        raise TapegradTypeError(f"np.linspace: dtype={np.dtype(dtype)} would drop the derivative in "
                                "the traced start/stop (tapegrad computes in float64)")
    num = operator.index(num)
    if num < 0:
        raise TapegradValueError(f"np.linspace: number of samples, {num}, must be non-negative")
    shape = np.broadcast_shapes(_shape(start), _shape(stop))
    t, div = _linspace_t(num, endpoint, len(shape))
    delta = stop - start
    y = start + t * delta      # NumPy: start + arange(num) * (delta / div), the end set to stop
    if endpoint and num > 1:
        y = concatenate([y[:-1], R.broadcast_to(R.expand_dims(stop, 0) if _is_traced(stop)
                                                 else np.expand_dims(value_of(stop), 0),
                                                 (1,) + shape)], axis=0)
    y = R.broadcast_to(y, (num,) + shape) if _shape(y) != (num,) + shape else y
    if axis != 0:
        y = R.moveaxis(y, 0, axis)
    if retstep:
        return y, (delta * (1.0 / div) if div > 0 else delta * np.nan)
    return y


@defn(np.geomspace)
def _geomspace(start, stop, num=50, endpoint=True, dtype=None, axis=0):
    if dtype is not None and np.dtype(dtype).kind != "f":
        raise TapegradTypeError(f"np.geomspace: dtype={np.dtype(dtype)} would drop the derivative")
    if np.any(value_of(start) == 0) or np.any(value_of(stop) == 0):
        raise TapegradValueError("Geometric sequence cannot include zero")
    if np.any(np.sign(value_of(start)) != np.sign(value_of(stop))):
        raise TapegradValueError("np.geomspace: start and stop of different signs give complex "
                                 "values; tapegrad is real-valued")
    # NumPy: sign(start) * logspace(log10|start|, log10|stop|), the ends set to start and stop
    sgn = np.sign(start)
    y = sgn * np.exp(_linspace(np.log(np.abs(start)), np.log(np.abs(stop)), num, endpoint))
    shape = _shape(y)[1:]
    if num > 0:
        parts = [R.broadcast_to(R.expand_dims(start, 0) if _is_traced(start)
                                else np.expand_dims(value_of(start), 0), (1,) + shape)]
        if endpoint and num > 1:
            parts += [y[1:-1], R.broadcast_to(R.expand_dims(stop, 0) if _is_traced(stop)
                                              else np.expand_dims(value_of(stop), 0), (1,) + shape)]
        else:
            parts.append(y[1:])
        y = concatenate(parts, axis=0)
    return R.moveaxis(y, 0, axis) if axis != 0 else y


defn(np.rollaxis)(lambda a, axis, start=0: _by_index(a, lambda I: np.rollaxis(I, axis, start)))


def _conv_full(a, v):
    """The full 1-d convolution sum_j a[k - j] v[j], k = 0 .. n + m - 2: a gather of a (zero
    outside it) against v, then a sum (every product recorded: O(n m) work and memory)."""
    n, m = _shape(a)[0], _shape(v)[0]
    k = np.arange(n + m - 1)[:, None] - np.arange(m)[None, :]
    k = np.where((k >= 0) & (k < n), k, n)
    src = concatenate([reshape(a, (-1,)) if type(a) is Tracer else np.ravel(value_of(a)),
                       np.zeros(1)])
    return np.sum(gather(src, k) * v, axis=1)


def _conv_mode(full, n, m, mode, name):
    if mode == "full":
        return full
    lo, hi = min(n, m), max(n, m)
    if mode == "same":
        s = (lo - 1) // 2
        return full[s:s + hi]
    if mode == "valid":
        return full[lo - 1:hi]
    raise TapegradValueError(f"np.{name}: mode must be 'full', 'same' or 'valid', got {mode!r}")


def _check_1d(name, a, v):
    for arg, x in (("a", a), ("v", v)):
        if len(_shape(x)) != 1 or _shape(x)[0] == 0:
            raise TapegradValueError(f"np.{name}: {arg} must be a non-empty 1-d array, got shape "
                                     f"{_shape(x)}")


@defn(np.convolve)
def _convolve(a, v, mode="full"):
    _check_1d("convolve", a, v)
    n, m = _shape(a)[0], _shape(v)[0]
    return _conv_mode(_conv_full(a, v), n, m, mode, "convolve")


@defn(np.correlate)
def _correlate(a, v, mode="valid"):
    # c[k] = sum_n a[n + k] v[n] (real values): the convolution with v reversed; NumPy reverses
    # the result when v is the longer one
    _check_1d("correlate", a, v)
    n, m = _shape(a)[0], _shape(v)[0]
    if n >= m:
        return _conv_mode(_conv_full(a, _flip(v)), n, m, mode, "correlate")
    return _flip(_conv_mode(_conv_full(v, _flip(a)), m, n, mode, "correlate"))


@defn(np.interp)
def _interp(x, xp, fp, left=None, right=None, period=None):
    """Piecewise-linear interpolation, differentiable in x and fp (the segment each x falls in
    is taken from its value and guarded: a replay re-records when one changes segment)."""
    if period is not None:
        raise UnsupportedError("np.interp: period= on traced arrays")
    for v in (x, xp, fp, left, right):
        if v is not None and type(v) is not Tracer:
            _as_float_array(v)      # a complex constant: ComplexOperand, the complex rule takes it
    if _is_traced(xp):
        raise TapegradTypeError("np.interp: xp (the sample points) must be a constant; the derivative "
                                "is taken in x and fp")
    xpv = np.asarray(value_of(xp), dtype=np.float64)
    n = xpv.size
    if xpv.ndim != 1 or _shape(fp) != (n,) or n == 0:
        raise TapegradValueError(f"np.interp: xp and fp must be 1-d of the same length, got shapes "
                                 f"{xpv.shape} and {_shape(fp)}")
    xv = np.asarray(value_of(x), dtype=np.float64)
    j = np.clip(np.searchsorted(xpv, xv, side="right") - 1, 0, max(n - 2, 0))
    below, above, at_end = xv < xpv[0], xv > xpv[-1], xv == xpv[-1]
    if _is_traced(x):
        # the segment stays valid while xp[j] <= x <= xp[j + 1] (or beyond the end it is on)
        hi = xpv[np.minimum(j + 1, n - 1)]
        _guard_true(where(below, x < xpv[0], where(above, x > xpv[-1],
                                                   (x >= xpv[j]) & (x <= hi))))
    fp_flat = reshape(fp, (-1,)) if type(fp) is Tracer else np.asarray(value_of(fp), dtype=np.float64)
    f0 = gather(fp_flat, j) if type(fp_flat) is Tracer else fp_flat[j]
    if n == 1:
        y = f0 + 0.0 * x
    else:
        f1 = gather(fp_flat, j + 1) if type(fp_flat) is Tracer else fp_flat[j + 1]
        x0, dx = xpv[j], xpv[j + 1] - xpv[j]
        y = f0 + (x - x0) * ((f1 - f0) / dx)
        last = fp_flat[-1] if type(fp_flat) is not Tracer else gather(fp_flat, np.full(j.shape, n - 1))
        y = where(at_end, last, y)
    lo = fp_flat[0] if left is None else left
    hi_v = fp_flat[-1] if right is None else right
    y = where(below, lo, where(above, hi_v, y))
    return y if _shape(y) == xv.shape else R.broadcast_to(y, xv.shape)


@defn(np.polyval)
def _polyval(p, x):
    # Horner's rule, as NumPy evaluates it
    if len(_shape(p)) != 1:
        raise TapegradValueError(f"np.polyval: p must be 1-d, got shape {_shape(p)}")
    k = _shape(p)[0]
    y = np.zeros(_shape(x)) if k == 0 else None
    for i in range(k):
        c = p[i]
        y = c + 0.0 * x if y is None else y * x + c
    return y


@defn(np.polyfit)
def _polyfit(x, y, deg, rcond=None, full=False, w=None, cov=False):
    """Least-squares polynomial fit, differentiable in y: the coefficients are pinv(V) y with V
    the (weighted) Vandermonde matrix of the constant x (NumPy's lstsq solution)."""
    if _is_traced(x) or _is_traced(w):
        raise TapegradTypeError("np.polyfit: x and w must be constants; the derivative is taken in y")
    if full or cov:
        raise UnsupportedError("np.polyfit: full=True / cov=True on traced arrays")
    deg = operator.index(deg)
    xv = np.asarray(value_of(x), dtype=np.float64)
    if deg < 0 or xv.ndim != 1 or xv.size == 0:
        raise TapegradValueError("np.polyfit: expected deg >= 0 and a non-empty 1-d x")
    if _shape(y)[:1] != xv.shape or len(_shape(y)) > 2:
        raise TapegradTypeError(f"np.polyfit: y must be 1-d or 2-d with {xv.size} rows, got shape "
                                f"{_shape(y)}")
    V = np.vander(xv, deg + 1)
    wv = None
    if w is not None:
        wv = np.asarray(value_of(w), dtype=np.float64)
        V = V * wv[:, None]
    scale = np.sqrt((V * V).sum(axis=0))        # NumPy's column scaling, for conditioning
    scale[scale == 0] = 1.0
    rcond = xv.size * np.finfo(np.float64).eps if rcond is None else rcond
    P = (np.linalg.pinv(V / scale, rcond=rcond).T / scale).T
    rhs = y if wv is None else y * (wv if len(_shape(y)) == 1 else wv[:, None])
    return matmul(P, rhs)


# ------------------------------------------------------------------ NaN-ignoring statistics
def _nan_stats_args(name, out, where, kw):
    _no_out(name, out)
    if where is not True:
        raise UnsupportedError(f"np.{name}: where= on traced arrays")
    if kw:
        raise UnsupportedError(f"np.{name}: {', '.join(kw)} on traced arrays")


def _nanvar(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=True,
            mean=None, correction=None, **kw):
    _nan_stats_args("nanvar", out, where, kw)
    if correction is not None:
        ddof = correction
    # traced NaN masks: a replay recomputes them at its own point
    ok = ~np.isnan(a)
    n = np.sum(ok, axis=axis, keepdims=True) * 1.0
    if mean is None:
        mean = np.sum(R.where(ok, a, 0.0), axis=axis, keepdims=True) / n
    d = R.where(ok, a - mean, 0.0)
    return np.sum(d * d, axis=axis, keepdims=keepdims) / (
        (n if keepdims else np.squeeze(n, axis=axis)) - ddof)


defn(np.nanvar)(_nanvar)


@defn(np.nanstd)
def _nanstd(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **kw):
    return np.sqrt(_nanvar(a, axis, dtype, out, ddof, keepdims, **kw))


def _nanquantile_rule(a, q, axis, method, keepdims, name):
    """Quantiles of the non-NaN values of each slice along axis; which values are NaN comes
    from the current values and is guarded (a replay re-records when it changes)."""
    if _is_traced(q):
        raise TapegradTypeError(f"np.{name}: q must be a constant")
    mask = R._guarded_value(np.isnan(a)) if _is_traced(a) else np.isnan(value_of(a))
    nd = len(_shape(a))
    if axis is None:
        flat = reshape(a, (-1,))
        keep = np.flatnonzero(~np.ravel(mask))
        qv = np.asarray(value_of(q), dtype=np.float64)
        if keep.size == 0:
            res = np.full(qv.shape, np.nan)
        else:
            res = _quantile(gather(flat, keep), q, None, method)
        if keepdims:
            res = (reshape if type(res) is Tracer else np.reshape)(res, qv.shape + (1,) * nd)
        return res
    axes = R._norm_axes(axis, nd)
    rest = [i for i in range(nd) if i not in axes]
    moved = transpose(a, tuple(rest) + axes)
    mmask = np.transpose(mask, tuple(rest) + axes)
    outer = tuple(_shape(a)[i] for i in rest)
    moved = reshape(moved, (math.prod(outer), -1))
    mmask = mmask.reshape(math.prod(outer), -1)
    qv = np.asarray(value_of(q), dtype=np.float64)
    rows = []
    for r in range(mmask.shape[0]):
        keep = np.flatnonzero(~mmask[r])
        if keep.size == 0:
            rows.append(np.full(qv.shape, np.nan))
        else:
            rows.append(_quantile(gather(moved, r * mmask.shape[1] + keep), q, None, method))
    res = R.stack(rows, axis=-1)                 # q's shape + (rows,)
    res = reshape(res, qv.shape + outer)
    if keepdims:
        shp = list(outer)
        for i in axes:
            shp.insert(i, 1)
        res = reshape(res, qv.shape + tuple(shp))
    return res


@defn(np.nanquantile)
def _nanquantile(a, q, axis=None, out=None, overwrite_input=False, method="linear",
                 keepdims=False, **kw):
    _no_out("nanquantile", out)
    return _nanquantile_rule(a, q, axis, method, keepdims, "nanquantile")


@defn(np.nanpercentile)
def _nanpercentile(a, q, axis=None, out=None, overwrite_input=False, method="linear",
                   keepdims=False, **kw):
    _no_out("nanpercentile", out)
    return _nanquantile_rule(a, np.asarray(value_of(q)) / 100.0, axis, method, keepdims,
                             "nanpercentile")


@defn(np.nanmedian)
def _nanmedian(a, axis=None, out=None, overwrite_input=False, keepdims=False):
    _no_out("nanmedian", out)
    return _nanquantile_rule(a, 0.5, axis, "linear", keepdims, "nanmedian")


# ------------------------------------------------------------------ apply_along_axis
@defn(np.apply_along_axis)
def _apply_along_axis(func1d, axis, arr, *args, **kwargs):
    """func1d on each 1-d slice along axis (a Python loop, as NumPy's), the results stacked
    where the axis was."""
    nd = len(_shape(arr))
    ax = _axis(axis, nd)
    moved = R.moveaxis(arr, ax, -1) if type(arr) is Tracer else np.moveaxis(value_of(arr), ax, -1)
    outer = _shape(moved)[:-1]
    if math.prod(outer) == 0:
        raise TapegradValueError("Cannot apply_along_axis when any iteration dimensions are 0")
    res = []
    for ix in np.ndindex(*outer):
        r = func1d(moved[ix], *args, **kwargs)
        if R._is_objects(r):
            r = R.from_objects(r)
        res.append(r)
    rs = _shape(res[0])
    out = reshape(R.stack(res), outer + rs)
    if rs and ax != len(outer):
        k = len(outer)
        order = list(range(ax)) + list(range(k, k + len(rs))) + list(range(ax, k))
        out = transpose(out, tuple(order))
    return out


# ------------------------------------------------------------------ registration
from . import linalg  # noqa: E402,F401  (registers the numpy.linalg Python rules)


# ------------------------------------------------------------------ coverage table
def _qualname(f):
    mod = getattr(f, "__module__", None) or "numpy"
    if isinstance(f, np.ufunc):
        mod = "numpy" if getattr(np, f.__name__, None) is f else "scipy.special"
    if mod.startswith("numpy.linalg"):
        mod = "numpy.linalg"
    elif mod.startswith("numpy.fft"):
        mod = "numpy.fft"
    elif mod.startswith("numpy"):
        mod = "numpy"
    elif mod.startswith("scipy.special"):
        mod = "scipy.special"
    return f"{mod}.{f.__name__}"


def registry_table():
    """Every function/ufunc tapegrad dispatches: {qualified name: registry entry}."""
    entries = {}
    for f, e in _registry.ENTRIES.items():
        name = _qualname(f)
        if name in entries:
            raise _registry.RegistrationError(f"two registered objects are both named {name}")
        entries[name] = e
    return dict(sorted(entries.items()))


def registry():
    """Every function/ufunc tapegrad dispatches: {qualified name: (object, how)}."""
    return {name: (e.fn, e.how) for name, e in registry_table().items()}


def _modes(entry):
    """(reverse, forward, hvp) for one registry entry."""
    if entry.kind == "refused":
        return ("no", "no", "no")
    if entry.kind == "constant":
        return ("zero", "zero", "zero")
    if entry.kind == "rule":
        from . import calls
        ok = all(getattr(entry.rule_class, m) is not getattr(calls.CallRule, m)
                 for m in ("fwd", "tan", "bwd"))
        hvp = getattr(entry.rule_class, "hvp_mode", "yes (traced adjoint)")   # a rule may say otherwise
        return ("yes", "yes", hvp) if ok else ("MISSING",) * 3
    return ("yes", "yes", "yes")


def coverage_table(path=None):
    """Markdown table (function, how, reverse, forward, hvp) generated from the registry."""
    rows = ["| function | how | reverse | forward | hvp |", "|---|---|---|---|---|"]
    reg = registry_table()
    for name, e in reg.items():
        r, fw, h = _modes(e)
        rows.append(f"| `{name}` | {e.how} | {r} | {fw} | {h} |")
    text = ("# Coverage\n\nGenerated by `tapegrad.rules_numpy.coverage_table()` from the rule "
            f"registry: {len(reg)} NumPy/SciPy functions and ufuncs. \"composition\" rules record "
            "onto the core's primitives, so all modes are exact by construction; \"rule\" entries "
            "are Python rules (one tape op) whose hvp differentiates the traced adjoint; "
            "\"constant\" entries have zero derivative (integer/boolean or piecewise-constant "
            "results; orders and masks taken from values are guarded on replay).\n\n"
            + "\n".join(rows) + "\n")
    if path is not None:
        with open(path, "w") as fh:
            fh.write(text)
    return text
