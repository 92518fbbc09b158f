"""Complex values as pairs of real traced values (see docs/complex.md).

A complex traced value is a ``ComplexTracer(re, im)``: two real parts, each a ``Tracer`` or a
float64 ndarray constant (``im`` may be ``None``: an exact zero imaginary part, so a real value
made complex costs nothing). Every complex operation is written as real operations on the parts,
so the tape holds only float64 slots and the compiled sweeps, replay, serialization and threads
serve complex programs unchanged. The FFTs are Python rules (one tape op each, ``FFT``): they
are real-linear maps of (re, im), whose adjoint is the inverse transform with the dual norm,
padded or cropped back (the adjoint of the DFT matrix F is F^H = n ifft).

On the tape the pairs pair with the standard real inner product; the complex convention of the
operators (grad = df/dx - i df/dy) is applied at the operator boundary (operators/api.py).
"""
import numpy as np
import scipy.fft as _sfft

from ..tracing.tracer import Tracer, top_recorder, value_of, install_complex, ComplexOperand
from ..errors import TapegradTypeError, TapegradValueError
from . import base as _rules, registry as _registry
from .calls import CallRule, register as _register_rule, call as _call, reverse_follows_now



def _is_complex_const(x):
    if isinstance(x, (complex, np.complexfloating)):
        return True
    return isinstance(x, np.ndarray) and x.dtype.kind == "c"


def is_complex(x):
    """Whether x is a complex traced value or a complex constant."""
    return type(x) is ComplexTracer or _is_complex_const(x)


def parts(x):
    """(re, im) of x; im is None for a real x (an exact zero)."""
    if type(x) is ComplexTracer:
        return x.re, x.im
    if type(x) is Tracer:
        return x, None
    if _is_complex_const(x):
        a = np.asarray(x)     # (np.array, not ascontiguousarray: that makes a 0-d value 1-d)
        return np.array(a.real, dtype=np.float64), np.array(a.imag, dtype=np.float64)
    if type(x) is np.ndarray and x.dtype.kind == "O" and any(
            type(e) is ComplexTracer for e in x.reshape(-1).tolist()):
        # an object array of complex traced elements (ComplexTracer.__array__) and numbers
        els = x.reshape(-1).tolist()
        ps = [(e.re, e.im) if type(e) is ComplexTracer else parts(e) if type(e) is Tracer
              else (np.array(complex(e).real), np.array(complex(e).imag)) for e in els]
        re = (_rules.apply_function(np.stack, ([p[0] for p in ps],), {})
              if any(type(p[0]) is Tracer for p in ps)
              else np.array([value_of(p[0]) for p in ps], dtype=np.float64))
        im = _stack_parts([p[1] for p in ps], [p[0] for p in ps])
        return (_rules.reshape(re, x.shape) if type(re) is Tracer else np.reshape(re, x.shape),
                None if im is None else (_rules.reshape(im, x.shape) if type(im) is Tracer
                                         else np.reshape(im, x.shape)))
    if isinstance(x, (list, tuple)) and any(is_complex(e) for e in x):
        ps = [parts(e) for e in x]
        return (_rules.apply_function(np.stack, ([p[0] for p in ps],), {}) if any(type(p[0]) is Tracer for p in ps)
                else np.array([value_of(p[0]) for p in ps], dtype=np.float64),
                _stack_parts([p[1] for p in ps], [p[0] for p in ps]))
    return x, None


def _stack_parts(ims, res):
    if all(i is None for i in ims):
        return None
    ims = [i if i is not None else np.zeros(np.shape(value_of(r))) for i, r in zip(ims, res)]
    return np.stack(ims) if not any(type(i) is Tracer for i in ims) else _rules.apply_function(np.stack, (ims,), {})


def make(re, im):
    """A complex value from its parts: a ComplexTracer if either is traced, else an ndarray."""
    if type(re) is not Tracer and type(im) is not Tracer:
        re = np.asarray(re, dtype=np.float64)
        return re + 0j if im is None else re + 1j * np.asarray(im, dtype=np.float64)
    if im is not None:
        # the parts broadcast as the complex value does (z + x: the imaginary part of a complex
        # scalar z is not broadcast by the real addition of the parts)
        sr, si = np.shape(value_of(re)), np.shape(value_of(im))
        if sr != si:
            s = np.broadcast_shapes(sr, si)
            re = re if sr == s else np.broadcast_to(re, s)
            im = im if si == s else np.broadcast_to(im, s)
    return ComplexTracer(re, im)


def _zeros_like(x):
    return np.zeros(np.shape(value_of(x)))


def _im(p):
    return p[1] if p[1] is not None else _zeros_like(p[0])


# ---------------------------------------------------------------- arithmetic on parts
def _add(a, b):
    return a if b is None else (b if a is None else a + b)


def _sub(a, b):
    return a if b is None else (-b if a is None else a - b)


def _mul(a, b):
    return None if a is None or b is None else a * b


def _cmul(x, y):
    (a, b), (c, d) = x, y
    return _sub(_mul(a, c), _mul(b, d)), _add(_mul(a, d), _mul(b, c))


def _cdiv(x, y):
    (a, b), (c, d) = x, y
    if d is None:
        return a / c, (None if b is None else b / c)
    den = c * c + d * d
    return _add(_mul(a, c), _mul(b, d)) / den, _sub(_mul(b, c), _mul(a, d)) / den


def _cexp(x):
    a, b = x
    e = np.exp(a)
    if b is None:
        return e, None
    return e * np.cos(b), e * np.sin(b)


def _cabs(x):
    a, b = x
    return np.abs(a) if b is None else np.hypot(a, b)


def _cangle(x):
    a, b = x
    return np.arctan2(0.0 * a if b is None else b, a)


def _clog(x):
    a, b = x
    return np.log(_cabs(x)), _cangle(x)


def _csqrt(x):
    # polar form: sqrt(r) (cos(t/2), sin(t/2)), t = angle(z) in (-pi, pi]: NumPy's branch
    r, t = np.sqrt(_cabs(x)), _cangle(x) * 0.5
    return r * np.cos(t), r * np.sin(t)


def _cpow(x, y):
    yr, yi = y
    if yi is None and type(yr) is not Tracer and np.ndim(yr) == 0:
        p = float(yr)
        if p == int(p) and abs(p) <= 64:
            n, res, base = abs(int(p)), (np.ones(np.shape(value_of(x[0]))), None), x
            while n:         # binary powering: exact products, no branch cut
                if n & 1:
                    res = _cmul(res, base)
                n >>= 1
                if n:
                    base = _cmul(base, base)
            return _cdiv((1.0, None), res) if p < 0 else res
    return _cexp(_cmul(y, _clog(x)))


def _csin(x):
    a, b = x
    if b is None:
        return np.sin(a), None
    return np.sin(a) * np.cosh(b), np.cos(a) * np.sinh(b)


def _ccos(x):
    a, b = x
    if b is None:
        return np.cos(a), None
    return np.cos(a) * np.cosh(b), -(np.sin(a) * np.sinh(b))


def _csinh(x):
    a, b = x
    if b is None:
        return np.sinh(a), None
    return np.sinh(a) * np.cos(b), np.cosh(a) * np.sin(b)


def _ccosh(x):
    a, b = x
    if b is None:
        return np.cosh(a), None
    return np.cosh(a) * np.cos(b), np.sinh(a) * np.sin(b)


def _order_refused(name):
    def f(*a, **k):
        raise TapegradTypeError(f"np.{name}: complex values have no order (NumPy's ordering of complex "
                                "numbers is lexicographic and has no derivative); compare np.abs, "
                                "np.real or np.imag explicitly")
    return f


_LN10, _LN2 = np.log(10.0), np.log(2.0)

UNARY = {
    np.negative: lambda x: (_sub(None, x[0]) if x[0] is not None else None, _sub(None, x[1])),
    np.positive: lambda x: x,
    np.conjugate: lambda x: (x[0], _sub(None, x[1])),
    np.exp: _cexp,
    np.log: _clog,
    np.log10: lambda x: tuple(None if p is None else p / _LN10 for p in _clog(x)),
    np.log2: lambda x: tuple(None if p is None else p / _LN2 for p in _clog(x)),
    np.sqrt: _csqrt,
    np.square: lambda x: _cmul(x, x),
    np.reciprocal: lambda x: _cdiv((1.0, None), x),
    np.sin: _csin, np.cos: _ccos,
    np.tan: lambda x: _cdiv(_csin(x), _ccos(x)),
    np.sinh: _csinh, np.cosh: _ccosh,
    np.tanh: lambda x: _cdiv(_csinh(x), _ccosh(x)),
    np.expm1: lambda x: _csub(_cexp(x), (1.0, None)),
}
_I = (0.0, 1.0)


def _casin(x):
    # arcsin z = -i log(iz + sqrt(1 - z^2)) (Abramowitz & Stegun 4.4.26; NumPy's branch cuts)
    w = _clog(_cadd(_cmul(_I, x), _csqrt(_csub((1.0, None), _cmul(x, x)))))
    return w[1], _sub(None, w[0])


def _cadd(x, y):
    return _add(x[0], y[0]), _add(x[1], y[1])


def _csub(x, y):
    return _sub(x[0], y[0]), _sub(x[1], y[1])


def _cscale(x, c):
    return tuple(None if p is None else p * c for p in x)


UNARY.update({
    np.log1p: lambda x: _clog(_cadd((1.0, None), x)),
    np.exp2: lambda x: _cexp(_cscale(x, _LN2)),
    np.arcsin: _casin,
    np.arccos: lambda x: _csub((np.pi / 2, None), _casin(x)),
    # arctan z = (i/2) (log(1 - iz) - log(1 + iz)) (A&S 4.4.22)
    np.arctan: lambda x: _cmul((0.0, 0.5), _csub(_clog(_csub((1.0, None), _cmul(_I, x))),
                                                 _clog(_cadd((1.0, None), _cmul(_I, x))))),
    # arcsinh z = log(z + sqrt(z^2 + 1)), arccosh z = log(z + sqrt(z + 1) sqrt(z - 1)),
    # arctanh z = (log(1 + z) - log(1 - z)) / 2 (A&S 4.6.14-16)
    np.arcsinh: lambda x: _clog(_cadd(x, _csqrt(_cadd(_cmul(x, x), (1.0, None))))),
    np.arccosh: lambda x: _clog(_cadd(x, _cmul(_csqrt(_cadd(x, (1.0, None))), _csqrt(_csub(x, (1.0, None)))))),
    np.arctanh: lambda x: _cscale(_csub(_clog(_cadd((1.0, None), x)), _clog(_csub((1.0, None), x))), 0.5),
})
REAL_UNARY = {   # complex -> real
    np.absolute: _cabs,
}
BINARY = {
    np.add: lambda x, y: (_add(x[0], y[0]), _add(x[1], y[1])),
    np.subtract: lambda x, y: (_sub(x[0], y[0]), _sub(x[1], y[1])),
    np.multiply: _cmul,
    np.divide: _cdiv,
    np.power: _cpow,
}
ORDERED = (np.less, np.less_equal, np.greater, np.greater_equal, np.maximum, np.minimum, np.fmax,
           np.fmin, np.floor, np.ceil, np.trunc, np.rint, np.sign, np.floor_divide, np.remainder,
           np.fmod, np.heaviside, np.arctan2, np.hypot)


def _wrap(p):
    return make(p[0], p[1])


def complex_ufunc(ufunc, method, inputs, kwargs):
    """A ufunc with at least one complex operand, by real operations on the parts."""
    if method != "__call__":
        if method == "reduce" and ufunc is np.add:
            return complex_function(np.sum, inputs, kwargs)
        raise TapegradTypeError(f"np.{ufunc.__name__}.{method}: not supported on complex traced values")
    if kwargs.get("out") is not None:
        raise TapegradTypeError(f"np.{ufunc.__name__}: out= would write a traced value into an array")
    if ufunc is np.matmul:     # an ndarray @ a ComplexTracer reaches here as the ufunc
        return complex_function(np.matmul, inputs, {})
    ps = [parts(x) for x in inputs]
    if ufunc in UNARY and len(ps) == 1:
        return _wrap(UNARY[ufunc](ps[0]))
    if ufunc in REAL_UNARY and len(ps) == 1:
        return REAL_UNARY[ufunc](ps[0])
    if ufunc in BINARY and len(ps) == 2:
        return _wrap(BINARY[ufunc](ps[0], ps[1]))
    if ufunc in (np.equal, np.not_equal):
        v = [value_of(p[0]) + 1j * value_of(_im(p)) for p in ps]
        return ufunc(*v)
    if ufunc in (np.isfinite, np.isnan, np.isinf):
        return ufunc(value_of(ps[0][0]) + 1j * value_of(_im(ps[0])))
    if ufunc in ORDERED:
        _order_refused(ufunc.__name__)()
    if not any(c in "FDG" for t in ufunc.types for c in t.split("->")[0]):
        # NumPy defines no complex loop for it (logaddexp, cbrt, fabs, ...): NumPy's own error
        raise TapegradTypeError(f"ufunc '{ufunc.__name__}' not supported for the input types "
                                "(complex), as in NumPy: it is defined for real numbers only")
    raise TapegradTypeError(f"np.{ufunc.__name__}: no rule for complex traced values (tapegrad "
                            "never drops an imaginary part silently)")


# ---------------------------------------------------------------- functions
def _partwise(func):
    """Linear, shape-only functions: applied to each part (a zero imaginary part stays None)."""
    def f(x, *args, **kwargs):
        a, b = parts(x)
        return make(func(a, *args, **kwargs), None if b is None else func(b, *args, **kwargs))
    return f


def _seq(func):
    def f(xs, *args, **kwargs):
        ps = [parts(x) for x in xs]
        re = func([p[0] for p in ps], *args, **kwargs)
        if all(p[1] is None for p in ps):
            return make(re, None)
        return make(re, func([_im(p) for p in ps], *args, **kwargs))
    return f


def _bilinear(func):
    def f(x, y, *args, **kwargs):
        return _wrap(_cprod(func, parts(x), parts(y), args, kwargs))
    return f


def _cprod(func, x, y, args=(), kwargs=None):
    kwargs = kwargs or {}
    g = (lambda u, v: None if u is None or v is None else func(u, v, *args, **kwargs))
    (a, b), (c, d) = x, y
    return _sub(g(a, c), g(b, d)), _add(g(a, d), g(b, c))


def _einsum(spec, *ops, **kw):
    if len(ops) == 1:
        return _partwise(lambda a: np.einsum(spec, a, **kw))(ops[0])
    if len(ops) != 2:
        raise TapegradTypeError("np.einsum: complex traced operands are supported with one or two operands")
    return _wrap(_cprod(lambda u, v: np.einsum(spec, u, v, **kw), parts(ops[0]), parts(ops[1])))


def _vdot(x, y):
    a, b = parts(x)
    return _wrap(_cprod(np.vdot, (a, _sub(None, b)), parts(y)))


def _real(x):
    return parts(x)[0]


def _imag(x):
    p = parts(x)
    return _im(p)


def _angle(x, deg=False):
    r = _cangle(parts(x))
    return r * (180.0 / np.pi) if deg else r


def _real_if_close(x, tol=100):
    a, b = parts(x)
    if b is None:
        return a
    if np.all(np.abs(value_of(b)) < tol * np.finfo(np.float64).eps):
        # a decision on values: the imaginary part is (numerically) zero here
        return a
    return make(a, b)


def _prod(x, axis=None, keepdims=False):
    """Products of complex values: a running complex product over the axis (no log: exact at 0)."""
    a, b = parts(x)
    shape = np.shape(value_of(a))
    if axis is None:
        a, b, ax = np.ravel(a), (None if b is None else np.ravel(b)), 0
    else:
        ax = int(axis) % max(len(shape), 1)
    n = np.shape(value_of(a))[ax]
    if n == 0:
        return np.prod(np.zeros(np.shape(value_of(a)), dtype=complex), axis=ax, keepdims=keepdims)

    def at(p, k):
        return None if p is None else p[(slice(None),) * ax + (k,)]
    res = (at(a, 0), at(b, 0))
    for k in range(1, n):
        res = _cmul(res, (at(a, k), at(b, k)))
    out = make(*res)
    if keepdims:
        out = out.reshape((1,) * len(shape)) if axis is None else _partwise(np.expand_dims)(out, ax)
    return out


def _cumprod(x, axis=None):
    a, b = parts(x)
    if axis is None:
        a, b, ax = np.ravel(a), (None if b is None else np.ravel(b)), 0
    else:
        ax = int(axis) % np.ndim(value_of(a))
    n = np.shape(value_of(a))[ax]
    if n == 0:
        return make(a, b)
    idx = lambda k: tuple([slice(None)] * ax + [slice(k, k + 1)])   # noqa: E731
    acc = (a[idx(0)], None if b is None else b[idx(0)])
    outs = [acc]
    for k in range(1, n):
        acc = _cmul(acc, (a[idx(k)], None if b is None else b[idx(k)]))
        outs.append(acc)
    return _seq(lambda ps, axis=ax: np.concatenate(ps, axis=axis))([make(*o) for o in outs])


def _cat(ps, axis):
    if any(type(p) is Tracer for p in ps):
        return np.concatenate([p if type(p) is Tracer else np.asarray(p, dtype=np.float64) for p in ps], axis=axis)
    return np.concatenate(ps, axis=axis)


def _embed(A):
    """The real 2n x 2n matrix [[B, -C], [C, B]] of A = B + iC: A z = w is M (x, y) = (u, v)."""
    B, C = parts(A)
    if np.ndim(value_of(B)) < 2 or np.shape(value_of(B))[-1] != np.shape(value_of(B))[-2]:
        raise np.linalg.LinAlgError("Last 2 dimensions of the array must be square")
    C = _im((B, C))
    return _cat([_cat([B, -C], -1), _cat([C, B], -1)], -2), np.shape(value_of(B))[-1]


def _pack(z):
    """(2, ...) real array or tracer holding (Re z, Im z)."""
    a, b = parts(z)
    b = _im((a, b))
    if type(a) is Tracer or type(b) is Tracer:
        return _rules.apply_function(np.stack, ([a, b],), {})
    return np.stack([np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)])


def _unpack(p):
    return make(p[0], p[1])


@_register_rule
class CSolve(CallRule):
    """x = A^-1 b for one complex n x n matrix A, on packed pairs (2, n, n) and (2, n[, k]).
    Tangent x_dot = A^-1 (b_dot - A_dot x); adjoint under the real inner product of the
    pairs: b_bar = A^-H x_bar, A_bar = -b_bar x^H (Giles 2008, sec. 3.1, with conjugate
    transposes for complex matrices)."""

    name = "csolve"

    def __init__(self, in_shapes, out_shapes=None):
        sa, sb = (tuple(int(k) for k in t) for t in in_shapes)
        if len(sa) != 3 or sa[0] != 2 or sa[1] != sa[2] or len(sb) not in (2, 3) or sb[0] != 2 or sb[1] != sa[1]:
            raise TapegradValueError(f"csolve rule: shapes {in_shapes}")
        super().__init__(in_shapes, [sb])

    def fwd(self, Ap, bp):
        if type(Ap) is Tracer or type(bp) is Tracer:
            return [_call(self, Ap, bp)]
        x = np.linalg.solve(Ap[0] + 1j * Ap[1], bp[0] + 1j * bp[1])
        return [np.stack([x.real, x.imag])]

    def tan(self, xs, ys, xdots):
        A, x = _unpack(xs[0]), _unpack(ys[0])
        r = 0.0 if xdots[1] is None else _unpack(xdots[1])
        if xdots[0] is not None:
            r = r - _mm(_unpack(xdots[0]), x)
        return [_pack(np.linalg.solve(A, r))]

    def bwd(self, xs, ys, ybars):
        A, x = _unpack(xs[0]), _unpack(ys[0])
        bbar = np.linalg.solve(np.conj(A).T, _unpack(ybars[0]))
        Abar = -(np.outer(bbar, np.conj(x)) if len(self.in_shapes[1]) == 2 else _mm(bbar, np.conj(x).T))
        return [_pack(Abar), _pack(bbar)]


def _cmm(X, Y):
    """X @ Y of complex arrays by four real products (this NumPy's complex128 matmul can be
    orders of magnitude slower than its real one: 15 ms against 11 us at 50 x 50 here)."""
    a, b, c, d = X.real, X.imag, Y.real, Y.imag
    return (a @ c - b @ d) + 1j * (a @ d + b @ c)


def _mm(X, Y):
    """X @ Y: by real products for plain arrays (_cmm), by the traced dispatch otherwise."""
    if isinstance(X, np.ndarray) and isinstance(Y, np.ndarray):
        return _cmm(X, Y)
    return X @ Y


def _matrix(Ap):
    """The matrix of packed parts: real when its imaginary part is zero (LAPACK's real
    eigensolver, several times faster; the same eigenvalues)."""
    return Ap[0] if not Ap[1].any() else Ap[0] + 1j * Ap[1]


@_register_rule
class CEigvals(CallRule):
    """Eigenvalues w of one (complex or real) n x n matrix A = V diag(w) V^-1, on packed pairs.
    Tangent w_dot = diag(V^-1 A_dot V); adjoint A_bar = V^-H diag(w_bar) V^H (the first-order
    eigenvalue perturbation; Giles 2008, sec. 3.1; Boeddeker et al. 2017 for the complex case).
    Distinct eigenvalues only (the derivative does not exist at a repeated one). The eigenvectors
    come from np.linalg.eig, traced when the pair is (rules/complex_linalg.py: CEig), so the
    tangent of the adjoint (hvp) and nested derivatives are traced too."""

    name = "ceigvals"
    keeps_for_adjoint = True

    def __init__(self, in_shapes, out_shapes=None):
        sa = tuple(int(k) for k in in_shapes[0])
        # a real matrix (n, n) or the packed pair (2, n, n) of a complex one
        real = len(sa) == 2 and sa[0] == sa[1]
        if len(in_shapes) != 1 or not (real or len(sa) == 3 and sa[0] == 2 and sa[1] == sa[2]):
            raise TapegradValueError(f"ceigvals rule: shape {in_shapes}")
        super().__init__(in_shapes, [(2, sa[-1])])
        self.real = real

    def _mat(self, Ap):
        return Ap if self.real else _matrix(Ap)

    def fwd(self, Ap):
        if type(Ap) is Tracer:
            return [_call(self, Ap)]
        w = np.linalg.eigvals(self._mat(Ap))
        return [np.stack([w.real, w.imag])]

    def forward(self, *xs):
        # a gradient follows: eig (the eigenvalues with the vectors, the same eigenvalues
        # LAPACK's geev gives without them) once, the vectors kept for the adjoint; else the
        # cheaper eigvals
        if not reverse_follows_now() or type(xs[0]) is Tracer:
            return super().forward(*xs)
        w, V = np.linalg.eig(self._mat(xs[0]))
        self.stash(xs, (w, V))
        return np.concatenate([w.real, w.imag])

    def _vectors(self, xs, ys):
        w = value_of(ys[0][0]) + 1j * value_of(ys[0][1])
        kept = self.stashed(xs) if type(xs[0]) is not Tracer else None
        if kept is not None:
            w2, V = kept
            w2 = w2 + 0j
        elif type(xs[0]) is Tracer:
            w2, V = np.linalg.eig(xs[0] if self.real else _unpack(xs[0]))   # traced: the eig rule
            w2 = w2.value
        else:
            w2, V = np.linalg.eig(self._mat(xs[0]))
        # the eigenvalues of the recording's order: for each recorded one, the first nearest
        # (one argmin over a table of distances; none when the values are the recording's own)
        if not np.array_equal(w2, w):
            V = V[:, np.argmin(np.abs(w2[None, :] - w[:, None]), axis=1)]
        return V, np.linalg.inv(V)

    def tan(self, xs, ys, xdots):
        V, Vi = self._vectors(xs, ys)
        dA = xdots[0] if self.real else _unpack(xdots[0])
        wd = np.sum(_mm(Vi, dA) * V.T, axis=1)      # diag(V^-1 A_dot V)
        return [_pack(wd)]

    def bwd(self, xs, ys, ybars):
        V, Vi = self._vectors(xs, ys)
        G = _mm(np.conj(Vi).T * _unpack(ybars[0]), np.conj(V).T)
        # a real matrix: the adjoint of its embedding in the complex ones is the real part
        return [np.real(G) if self.real else _pack(G)]


def _eigvals(a):
    re, im = parts(a)
    s = np.shape(value_of(re))
    if len(s) < 2 or s[-1] != s[-2]:
        raise np.linalg.LinAlgError(f"np.linalg.eigvals: last 2 dimensions of the array must be square, "
                                    f"got shape {s}")
    if len(s) > 2:    # a stack: the eigenvalues of the eig rule (rules/complex_linalg.py)
        return np.linalg.eig(a)[0]
    # a real matrix is the rule's one real operand (no zero imaginary part to pack and read)
    Ap = re if im is None else _pack(a)
    sp = np.shape(value_of(Ap))
    out = _call(CEigvals([sp]), Ap) if top_recorder(Ap) else \
        CEigvals([sp]).fwd(np.asarray(value_of(Ap), dtype=np.float64))[0]
    # always complex, also for a real matrix (NumPy gives a real array when every eigenvalue is
    # real: a decision on values that a replay could not keep)
    return _unpack(out)


def _cinv(A):
    if np.ndim(value_of(parts(A)[0])) == 2 and top_recorder(*parts(A)) is not None:
        n = np.shape(value_of(parts(A)[0]))[0]
        return _csolve(A, np.eye(n) + 0j)
    # the embedding is a ring homomorphism: inv(M) embeds inv(A)
    M, n = _embed(A)
    Mi = np.linalg.inv(M)
    return make(Mi[..., :n, :n], Mi[..., n:, :n])


def _csolve(A, b):
    sa, sb = np.shape(value_of(parts(A)[0])), np.shape(value_of(parts(b)[0]))
    if len(sa) == 2 and sa[0] == sa[1] and len(sb) in (1, 2) and sb[0] == sa[0] and (
            top_recorder(*parts(A), *parts(b)) is not None):
        Ap, bp = _pack(A), _pack(b)
        return _unpack(_call(CSolve([np.shape(value_of(Ap)), np.shape(value_of(bp))]), Ap, bp))
    M, n = _embed(A)
    br, bi = parts(b)
    bi = _im((br, bi))
    vec = np.ndim(value_of(br)) == 1
    x = np.linalg.solve(M, _cat([br, bi], -1 if vec else -2))
    return make(x[..., :n], x[..., n:]) if vec else make(x[..., :n, :], x[..., n:, :])


FUNCTIONS = {
    np.linalg.eigvals: _eigvals,
    np.linalg.inv: _cinv, np.linalg.solve: _csolve,
    np.prod: _prod, np.cumprod: _cumprod,
    np.real: _real, np.imag: _imag, np.conj: lambda x: _wrap(UNARY[np.conjugate](parts(x))),
    np.conjugate: lambda x: _wrap(UNARY[np.conjugate](parts(x))),
    np.angle: _angle, np.abs: lambda x: _cabs(parts(x)), np.absolute: lambda x: _cabs(parts(x)),
    np.real_if_close: _real_if_close,
    np.iscomplexobj: lambda x: True, np.isrealobj: lambda x: False,
    np.iscomplex: lambda x: value_of(_im(parts(x))) != 0, np.isreal: lambda x: value_of(_im(parts(x))) == 0,
    np.shape: lambda x: np.shape(value_of(parts(x)[0])), np.ndim: lambda x: np.ndim(value_of(parts(x)[0])),
    np.size: lambda x, axis=None: np.size(value_of(parts(x)[0]), axis),
    np.dot: _bilinear(np.dot), np.matmul: _bilinear(np.matmul), np.inner: _bilinear(np.inner),
    np.outer: _bilinear(np.outer), np.kron: _bilinear(np.kron), np.tensordot: _bilinear(np.tensordot),
    np.vdot: _vdot, np.einsum: _einsum,
    np.multiply: lambda x, y: _wrap(_cmul(parts(x), parts(y))),
    np.add: lambda x, y: _wrap(BINARY[np.add](parts(x), parts(y))),
    np.concatenate: _seq(np.concatenate), np.stack: _seq(np.stack), np.hstack: _seq(np.hstack),
    np.vstack: _seq(np.vstack),
}
for _f in (np.reshape, np.transpose, np.ravel, np.squeeze, np.expand_dims, np.swapaxes, np.moveaxis,
           np.broadcast_to, np.flip, np.fliplr, np.flipud, np.roll, np.diagonal, np.trace, np.sum,
           np.mean, np.cumsum, np.tile, np.repeat, np.take, np.atleast_1d, np.atleast_2d, np.diag,
           np.triu, np.tril, np.copy, np.fft.fftshift, np.fft.ifftshift):
    FUNCTIONS[_f] = _partwise(_f)
for _f in (np.sort, np.argsort, np.max, np.min, np.amax, np.amin, np.argmax, np.argmin, np.maximum,
           np.minimum, np.clip, np.median, np.percentile, np.quantile, np.sign):
    FUNCTIONS[_f] = _order_refused(_f.__name__)


def complex_function(func, args, kwargs):
    rule = FUNCTIONS.get(func)
    if rule is None:
        rule = _FFT_FUNCS.get(func)
    if rule is None:
        raise TapegradTypeError(f"{getattr(func, '__module__', 'numpy')}.{func.__name__}: no rule for "
                                "complex traced values yet (tapegrad never drops an imaginary part "
                                "silently)")
    return rule(*args, **kwargs)


# ---------------------------------------------------------------- the traced complex value
class ComplexTracer:
    """A complex traced array: real part ``re`` and imaginary part ``im`` (Tracers or float64
    constants; ``im`` None means zero). Behaves like a read-only complex128 ndarray."""

    __slots__ = ("re", "im")
    __array_priority__ = 2000.0
    _complex_traced = True      # (what the real machinery checks: tracing/tracer.py)

    def __init__(self, re, im):
        self.re, self.im = re, im

    shape = property(lambda self: np.shape(value_of(self.re)))
    ndim = property(lambda self: np.ndim(value_of(self.re)))
    size = property(lambda self: np.size(value_of(self.re)))
    dtype = property(lambda self: np.dtype(np.complex128))
    real = property(lambda self: self.re)
    imag = property(lambda self: _im((self.re, self.im)))
    T = property(lambda self: make(np.transpose(self.re), None if self.im is None else np.transpose(self.im)))

    @property
    def value(self):
        return np.asarray(value_of(self.re), dtype=np.float64) + 1j * np.asarray(value_of(_im((self.re, self.im))))

    def __repr__(self):
        return f"ComplexTracer({self.value!r})"

    def __len__(self):
        return len(self.re)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __hash__(self):
        return id(self)

    def __getitem__(self, key):
        return make(self.re[key], None if self.im is None else self.im[key])

    def __setitem__(self, key, value):
        raise TapegradTypeError("item assignment into a complex traced array is not supported; build "
                                "the array with np.concatenate / np.stack / np.where")

    def __array__(self, dtype=None, copy=None):
        """As a real tracer's (tracing/tracer.py): an object array of this array's complex traced
        elements, for NumPy's conversions (np.array of a list of complex traced scalars, ...);
        the next complex operation that meets it takes it apart again (parts). A numeric dtype
        would drop the derivative (and a real one the imaginary part): refused."""
        if dtype is not None and np.dtype(dtype).kind != "O":
            raise ComplexOperand("a complex traced value cannot be converted to a NumPy array "
                                 f"of dtype {np.dtype(dtype)}")
        out = np.empty(self.shape, dtype=object)
        for idx in np.ndindex(self.shape):
            out[idx] = self[idx] if idx else self
        return out

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return complex_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return complex_function(func, args, kwargs)

    def __bool__(self):
        return bool(self.re) or (self.im is not None and bool(self.im))

    def __float__(self):
        raise TapegradTypeError("float() of a complex traced value would drop its imaginary part; use "
                                "np.real or np.abs")

    __int__ = __float__

    def __complex__(self):
        return complex(float(self.re), 0.0 if self.im is None else float(self.im))

    def item(self):
        return complex(self)    # as float() of a real tracer: a guarded constant, with a warning

    # arithmetic
    def __neg__(self): return complex_ufunc(np.negative, "__call__", (self,), {})
    def __pos__(self): return self
    def __abs__(self): return _cabs((self.re, self.im))
    def __add__(self, o): return complex_ufunc(np.add, "__call__", (self, o), {})
    def __radd__(self, o): return complex_ufunc(np.add, "__call__", (o, self), {})
    def __sub__(self, o): return complex_ufunc(np.subtract, "__call__", (self, o), {})
    def __rsub__(self, o): return complex_ufunc(np.subtract, "__call__", (o, self), {})
    def __mul__(self, o): return complex_ufunc(np.multiply, "__call__", (self, o), {})
    def __rmul__(self, o): return complex_ufunc(np.multiply, "__call__", (o, self), {})
    def __truediv__(self, o): return complex_ufunc(np.divide, "__call__", (self, o), {})
    def __rtruediv__(self, o): return complex_ufunc(np.divide, "__call__", (o, self), {})
    def __pow__(self, o): return complex_ufunc(np.power, "__call__", (self, o), {})
    def __rpow__(self, o): return complex_ufunc(np.power, "__call__", (o, self), {})
    def __matmul__(self, o): return complex_function(np.matmul, (self, o), {})
    def __rmatmul__(self, o): return complex_function(np.matmul, (o, self), {})
    def __eq__(self, o): return complex_ufunc(np.equal, "__call__", (self, o), {})
    def __ne__(self, o): return complex_ufunc(np.not_equal, "__call__", (self, o), {})
    __lt__ = __le__ = __gt__ = __ge__ = _order_refused("less")

    # methods
    def conj(self): return make(self.re, None if self.im is None else -self.im)
    conjugate = conj
    def reshape(self, *shape, order="C"):
        shape = shape[0] if len(shape) == 1 else shape
        return _partwise(np.reshape)(self, shape)
    def ravel(self): return _partwise(np.ravel)(self)
    def flatten(self): return _partwise(np.ravel)(self)
    def transpose(self, *axes): return _partwise(np.transpose)(self, *((axes[0] if len(axes) == 1 else axes,) if axes else ()))
    def swapaxes(self, a, b): return _partwise(np.swapaxes)(self, a, b)
    def squeeze(self, axis=None): return _partwise(np.squeeze)(self, axis)
    def sum(self, axis=None, keepdims=False): return _partwise(np.sum)(self, axis=axis, keepdims=keepdims)
    def mean(self, axis=None, keepdims=False): return _partwise(np.mean)(self, axis=axis, keepdims=keepdims)
    def cumsum(self, axis=None): return _partwise(np.cumsum)(self, axis=axis)
    def dot(self, o): return complex_function(np.dot, (self, o), {})
    def copy(self): return self
    def astype(self, dtype, **kw):
        if np.dtype(dtype).kind == "c":
            return self
        raise TapegradTypeError(f"astype({np.dtype(dtype)}) of a complex traced value would drop its "
                                "imaginary part; use np.real or np.abs")
    max = min = sort = argmax = argmin = _order_refused("max")


# The ufuncs' object loops (an object array of complex traced elements, ComplexTracer.__array__)
# call a method of each element's name: the complex rules give them.
for _name in ("exp", "log", "sqrt", "sin", "cos", "tan", "sinh", "cosh", "tanh", "arcsin",
              "arccos", "arctan", "arcsinh", "arccosh", "arctanh", "log10", "log2", "log1p",
              "expm1", "exp2", "square", "reciprocal", "absolute", "negative"):
    setattr(ComplexTracer, _name, (lambda uf: lambda self: complex_ufunc(uf, "__call__", (self,), {}))(
        getattr(np, _name)))


def _complex_hook(kind, *a):
    """The tracer's fallback when a real rule met a complex operand (tracing/tracer.py)."""
    if kind == "ufunc":
        ufunc, method, inputs, kwargs = a
        if any(is_complex(x) for x in inputs):
            return complex_ufunc(ufunc, method, inputs, kwargs)
    else:
        func, args, kwargs = a
        if any(is_complex(x) for x in args) or any(is_complex(x) for x in kwargs.values()) or any(
                isinstance(x, (list, tuple)) and any(is_complex(e) for e in x) for x in args):
            return complex_function(func, args, kwargs)
    return None


install_complex(_complex_hook)


# ---------------------------------------------------------------- FFT (np.fft)
_NORMS = ("backward", "ortho", "forward")
_DUAL = {"backward": "forward", "forward": "backward", "ortho": "ortho"}
_KINDS = ("fft", "ifft", "rfft", "irfft")
_NUMPY = {"fft": np.fft.fftn, "ifft": np.fft.ifftn, "rfft": np.fft.rfftn, "irfft": np.fft.irfftn}
# one axis: scipy.fft, the same pocketfft transform as NumPy's with NumPy's values bit for bit
# on complex input (and rfft, irfft), and faster (4096 complex points: 41 us against 56 us).
# Several axes go through NumPy: scipy takes them in another order (other rounding).
_SCIPY_1D = {"fft": _sfft.fft, "ifft": _sfft.ifft, "rfft": _sfft.rfft, "irfft": _sfft.irfft}


def _fit(a, sizes, axes):
    """a cropped or zero-padded to sizes along axes (the adjoint of a crop is a pad, and back)."""
    for n, ax in zip(sizes, axes):
        m = np.shape(value_of(a))[ax]
        if m > n:
            idx = [slice(None)] * np.ndim(value_of(a))
            idx[ax] = slice(0, n)
            a = a[tuple(idx)]
        elif m < n:
            shp = list(np.shape(value_of(a)))
            shp[ax] = n - m
            z = np.zeros(shp)
            a = np.concatenate([a, z], axis=ax) if type(a) is Tracer else np.concatenate([a, z], axis=ax)
    return a


@_register_rule
class FFT(CallRule):
    """One n-dimensional FFT of np.fft on pairs of real arrays: ``kind`` fft, ifft (complex to
    complex: inputs and outputs (re, im)), rfft (real to (re, im)), irfft ((re, im) to real),
    over ``axes`` with sizes ``s`` and NumPy's ``norm``. Linear, so its tangent is itself at the
    tangents and its adjoint is the transposed map: for fft, P^T F^H ybar with F^H = ifft at the
    dual norm (Van Loan, Computational Frameworks for the FFT, 1992, sec. 1.1; P the crop or
    zero-pad to s); rfft and irfft add the half-spectrum embedding (see ``bwd``)."""

    name = "fft"
    hvp_mode = "yes (linear: the adjoint of the tangent)"

    def __init__(self, in_shapes, out_shapes=None, kind="fft", s=(), axes=(), norm="backward"):
        kind, norm = str(kind), str(norm)
        s, axes = [int(k) for k in s], [int(a) for a in axes]
        if kind not in _KINDS or norm not in _NORMS or len(s) != len(axes) or not axes:
            raise TapegradValueError(f"fft rule: bad parameters {kind!r} {s} {axes} {norm!r}")
        shape = tuple(int(k) for k in in_shapes[0])
        if any(not 0 <= a < len(shape) for a in axes) or len(set(axes)) != len(axes) or any(k < 1 for k in s):
            raise TapegradValueError(f"fft rule: axes {axes} or sizes {s} do not fit shape {shape}")
        # fft and ifft take (re, im) or one real input (a real array's transform: no zero
        # imaginary part to read, and the real-input FFT is faster)
        if len(in_shapes) not in ((1,) if kind == "rfft" else (2,) if kind == "irfft" else (1, 2)) \
                or any(tuple(t) != shape for t in in_shapes):
            raise TapegradValueError(f"fft rule: inputs {in_shapes} for kind {kind}")
        o = list(shape)
        for k, a in zip(s, axes):
            o[a] = k
        if kind == "rfft":
            o[axes[-1]] = s[-1] // 2 + 1
        super().__init__(in_shapes, [tuple(o)] * (1 if kind == "irfft" else 2), kind=kind, s=s,
                         axes=axes, norm=norm)
        self.kind, self.s, self.axes, self.norm = kind, s, axes, norm

    def _value(self, xs):
        """The transform of float64 arrays xs: complex, or real for irfft."""
        if self.kind == "rfft":
            z = np.asarray(xs[0], dtype=np.float64)
        elif len(xs) == 1:
            # as a complex array: scipy's real-input fft differs from NumPy's in the last bits
            # and in the sign of zero imaginary parts (which np.angle sees); its complex fft,
            # rfft and irfft are NumPy's bit for bit
            z = np.asarray(xs[0], dtype=np.complex128)
        else:
            z = np.empty(self.in_shapes[0], dtype=np.complex128)
            z.real, z.imag = xs
        if len(self.axes) == 1:
            return _SCIPY_1D[self.kind](z, self.s[0], self.axes[0], self.norm)
        return _NUMPY[self.kind](z, self.s, self.axes, self.norm)

    def fwd(self, *xs):
        if any(type(x) is Tracer for x in xs):
            return transform(self.kind, list(xs), self.s, self.axes, self.norm)
        y = self._value(xs)
        return [y] if self.kind == "irfft" else [np.ascontiguousarray(y.real), np.ascontiguousarray(y.imag)]

    def forward(self, *xs):
        # the sweeps' flat output, the parts written straight into it
        if self.kind == "irfft" or any(type(x) is Tracer for x in xs):
            return super().forward(*xs)
        y = self._value(xs)
        out = np.empty(self.out_size)
        m = self.out_sizes[0]
        np.copyto(out[:m].reshape(y.shape), y.real)
        np.copyto(out[m:].reshape(y.shape), y.imag)
        return out

    def tan(self, xs, ys, xdots):
        return self.fwd(*[t if t is not None else np.zeros(s) for t, s in zip(xdots, self.in_shapes)])

    def vjp(self, xs, y, ybar):
        # the sweeps' adjoint of a one-axis complex transform without crop or pad: bwd's
        # transform of the dual kind on the flat (re, im) cotangent, without its recording
        # checks, rule lookup and copies (the same scipy call on the same array: same bits)
        if (self.kind in ("fft", "ifft") and len(self.axes) == 1 and type(ybar) is np.ndarray
                and self.in_shapes[0][self.axes[0]] == self.s[0]):
            m = self.out_sizes[0]
            z = np.empty(self.out_shapes[0], dtype=np.complex128)
            flat = ybar.reshape(-1)
            z.real = flat[:m].reshape(z.shape)
            z.imag = flat[m:].reshape(z.shape)
            g = _SCIPY_1D["ifft" if self.kind == "fft" else "fft"](z, self.s[0], self.axes[0],
                                                                   _DUAL[self.norm])
            return [g.real, g.imag][:len(self.in_shapes)]
        return super().vjp(xs, y, ybar)

    def bwd(self, xs, ys, ybars):
        kind, s, axes, dual = self.kind, self.s, self.axes, _DUAL[self.norm]
        in_sizes = [self.in_shapes[0][a] for a in axes]
        if kind in ("fft", "ifft"):
            g = transform("ifft" if kind == "fft" else "fft", list(ybars), s, axes, dual)
            # a real input: the adjoint of its embedding in the complex numbers is the real part
            return [_fit(p, in_sizes, axes) for p in g[:len(self.in_shapes)]]
        if kind == "rfft":
            # y = R F P x (R keeps the first s[-1]//2+1 bins): x_bar = P^T Re(F^H R^T ybar)
            padded = [_fit(p, [s[-1]], axes[-1:]) for p in ybars]
            g = transform("ifft", padded, s, axes, dual)
            return [_fit(g[0], in_sizes, axes)]
        # irfft: y = Re(F^-1 E (c * P x)), E the zero-extension of the m = s[-1]//2+1 bins, c the
        # Hermitian weights (1 for bin 0 and the Nyquist bin, 2 elsewhere: the mirrored half);
        # so x_bar = P^T (c * E^T F^-H ybar) = P^T (c * rfft(ybar) at the dual norm)
        g = transform("rfft", [ybars[0]], s, axes, dual)
        m = s[-1] // 2 + 1
        c = np.full(m, 2.0)
        c[0] = 1.0
        if s[-1] % 2 == 0:
            c[-1] = 1.0
        c = c.reshape((m,) + (1,) * (len(self.in_shapes[0]) - 1 - axes[-1]))
        return [_fit(p * c, in_sizes, axes) for p in g]

    def tor(self, xs, y, xdots, ybar, ybardot):
        # the adjoint does not depend on x: its tangent is the adjoint of the tangent of ybar
        return self.bwd(xs, None, self.unpack(np.reshape(ybardot, (-1,)) if type(ybardot) is not Tracer
                                              else ybardot.reshape(-1)))


_FFT_RULES = {}      # FFT rule objects (immutable) by their parameters: made once, not per call


def transform(kind, ps, s, axes, norm):
    """The parts of kind's FFT of the parts ps (one tape op while recording)."""
    shape = np.shape(value_of(ps[0]))
    key = (kind, shape, len(ps), tuple(s), tuple(axes), norm)
    rule = _FFT_RULES.get(key)
    if rule is None:
        rule = FFT([shape] * len(ps), kind=kind, s=s, axes=axes, norm=norm)
        if len(_FFT_RULES) > 256:
            _FFT_RULES.clear()
        _FFT_RULES[key] = rule
    if top_recorder(*ps) is None:
        return rule.fwd(*[np.asarray(value_of(p), dtype=np.float64) for p in ps])
    out = _call(rule, *ps)
    return list(out) if isinstance(out, tuple) else [out]


def _norm(norm, name):
    if norm is None:
        return "backward"
    if norm not in _NORMS:
        raise TapegradValueError(f'np.fft.{name}: invalid norm={norm!r}; use "backward", "ortho" or "forward"')
    return norm


def _axes_sizes(name, kind, shape, s, axes, inverse_real=False):
    nd = len(shape)
    if axes is None:
        axes = list(range(nd)) if s is None else list(range(nd - len(s), nd))
    axes = [int(a) for a in (axes if np.ndim(axes) else [axes])]
    for a in axes:
        if not -nd <= a < nd:
            raise TapegradValueError(f"np.fft.{name}: axis {a} is out of bounds for an array of shape {shape}")
    axes = [a % nd for a in axes]
    if s is None:
        s = [shape[a] for a in axes]
        if inverse_real:
            s[-1] = 2 * (shape[axes[-1]] - 1)
    else:
        s = [int(k) for k in (s if np.ndim(s) else [s])]
        if len(s) != len(axes):
            raise TapegradValueError(f"np.fft.{name}: s and axes have different lengths")
        s = [shape[a] if k == -1 else k for k, a in zip(s, axes)]
    if any(k < 1 for k in s):
        raise TapegradValueError(f"np.fft.{name}: invalid number of data points {s} specified")
    return s, axes


def _fftn(kind, name, x, s, axes, norm, out=None):
    if out is not None:
        raise TapegradTypeError(f"np.fft.{name}: out= would write a traced value into an array")
    re, im = parts(x)
    shape = np.shape(value_of(re))
    if len(shape) == 0:
        raise TapegradValueError(f"np.fft.{name}: the input must be at least 1-d, got a scalar")
    s, axes = _axes_sizes(name, kind, shape, s, axes, kind == "irfft")
    norm = _norm(norm, name)
    if kind == "rfft":
        if im is not None:
            raise TapegradTypeError(f"np.fft.{name}: the input is complex; {name} takes real input "
                                    "(its imaginary part would be dropped): use np.fft.fft")
        return _wrap(transform(kind, [re], s, axes, norm))
    out = transform(kind, [re] if im is None and kind != "irfft" else [re, _im((re, im))], s, axes, norm)
    return out[0] if kind == "irfft" else _wrap(out)


def _one_d(kind, name):
    def f(a, n=None, axis=-1, norm=None, out=None):
        return _fftn(kind, name, a, None if n is None else [n], [axis], norm, out)
    f.__name__ = name
    return f


def _n_d(kind, name, default_axes=None):
    def f(a, s=None, axes=default_axes, norm=None, out=None):
        return _fftn(kind, name, a, s, axes, norm, out)
    f.__name__ = name
    return f


def _hfft(a, n=None, axis=-1, norm=None, out=None):
    # NumPy: hfft(a) = irfft(conj(a)) at the swapped norm
    return _fftn("irfft", "hfft", np.conj(a) if is_complex(a) else a, None if n is None else [n], [axis],
                 _DUAL[_norm(norm, "hfft")], out)


def _ihfft(a, n=None, axis=-1, norm=None, out=None):
    return np.conj(_fftn("rfft", "ihfft", a, None if n is None else [n], [axis], _DUAL[_norm(norm, "ihfft")], out))


_FFT_FUNCS = {
    np.fft.fft: _one_d("fft", "fft"), np.fft.ifft: _one_d("ifft", "ifft"),
    np.fft.rfft: _one_d("rfft", "rfft"), np.fft.irfft: _one_d("irfft", "irfft"),
    np.fft.fftn: _n_d("fft", "fftn"), np.fft.ifftn: _n_d("ifft", "ifftn"),
    np.fft.rfftn: _n_d("rfft", "rfftn"), np.fft.irfftn: _n_d("irfft", "irfftn"),
    np.fft.fft2: _n_d("fft", "fft2", (-2, -1)), np.fft.ifft2: _n_d("ifft", "ifft2", (-2, -1)),
    np.fft.rfft2: _n_d("rfft", "rfft2", (-2, -1)), np.fft.irfft2: _n_d("irfft", "irfft2", (-2, -1)),
    np.fft.hfft: _hfft, np.fft.ihfft: _ihfft,
}
for _f, _r in _FFT_FUNCS.items():
    _registry.register(_f, _r, "rule", rule_class=FFT)
_registry.register(np.linalg.eigvals, _eigvals, "rule", rule_class=CEigvals)
