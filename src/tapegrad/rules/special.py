"""scipy.special ufuncs of a variable and constant parameters, as one Python rule each.

``gammainc(a, x)``, ``betainc(a, b, x)``, ``jv(v, x)``, ``stdtr(df, t)``, ... are differentiable in
their last argument with a closed form that is again NumPy/SciPy code (tapegrad traces it, so hvp
and nesting work): the derivative of an incomplete gamma function is the gamma density, a Bessel
function's derivative is a difference of its neighbours in the order (DLMF 10.6.1, 10.29.1), the
derivative of an inverse is the reciprocal of the forward derivative at the result. The
parameters (orders, shapes, degrees of freedom) have no closed-form derivative in SciPy: a
traced parameter raises a ``TapegradTypeError`` naming the function and the argument, never a
silent zero. ``zeta(x, q)`` is differentiable in ``q`` (d/dq = -x zeta(x + 1, q)), not in the
exponent ``x``. ``boxcox``/``boxcox1p``, ``beta``, ``kl_div``, ``huber``, ``pseudo_huber`` are
compositions, differentiable in every argument.

One rule class (``SpecialParam``, one tape operation) carries every function of the table: the
parameters are constant operands broadcast to the result's shape, the variable the last operand.
SciPy's ``zeta`` is a Python function that calls the private ufuncs ``_riemann_zeta``/``_zeta``:
those are what dispatch to the tracer, so those are registered.
"""
import numpy as np
import scipy.special as sps
from scipy.special import _ufuncs as _spu

from . import breadth as _breadth  # noqa: F401  (registers first)
from .calls import CallRule, register, call
from . import base as _rules, registry
from ..tracing.tracer import Tracer, top_recorder, value_of
from ..errors import TapegradTypeError, TapegradValueError


def _log_gamma_density(a, x):
    return sps.xlogy(a - 1.0, x) - x - sps.gammaln(a)


def _log_beta_density(a, b, x):
    return sps.xlogy(a - 1.0, x) + sps.xlog1py(b - 1.0, -x) - sps.betaln(a, b)


def _log_t_density(df, t):
    return (sps.gammaln(0.5 * (df + 1.0)) - sps.gammaln(0.5 * df) - 0.5 * np.log(df * np.pi)
            - 0.5 * (df + 1.0) * np.log1p(t * t / df))


def _poisson_pmf(k, m):
    k = np.floor(k)
    return np.exp(sps.xlogy(k, m) - m - sps.gammaln(k + 1.0))


def _p(fn, *params):
    """The traced function ``fn`` of the table at constant parameters: lambda x: fn(*params, x)."""
    return lambda x: _apply(fn, list(params), x)


# name -> (ufunc, parameter names, variable name, derivative(params..., x, y) as traced NumPy)
_TABLE = {
    "gammainc": (sps.gammainc, ("a",), "x", lambda a, x, y: np.exp(_log_gamma_density(a, x))),
    "gammaincc": (sps.gammaincc, ("a",), "x", lambda a, x, y: -np.exp(_log_gamma_density(a, x))),
    "gammaincinv": (sps.gammaincinv, ("a",), "y",
                    lambda a, q, x: np.exp(-_log_gamma_density(a, x))),
    "gammainccinv": (sps.gammainccinv, ("a",), "y",
                     lambda a, q, x: -np.exp(-_log_gamma_density(a, x))),
    "betainc": (sps.betainc, ("a", "b"), "x",
                lambda a, b, x, y: np.exp(_log_beta_density(a, b, x))),
    "betaincinv": (sps.betaincinv, ("a", "b"), "y",
                   lambda a, b, q, x: np.exp(-_log_beta_density(a, b, x))),
    "stdtr": (sps.stdtr, ("df",), "t", lambda df, t, y: np.exp(_log_t_density(df, t))),
    "stdtrit": (sps.stdtrit, ("df",), "p", lambda df, p, t: np.exp(-_log_t_density(df, t))),
    "pdtr": (sps.pdtr, ("k",), "m", lambda k, m, y: -_poisson_pmf(k, m)),
    "pdtrc": (sps.pdtrc, ("k",), "m", lambda k, m, y: _poisson_pmf(k, m)),
    # Bessel functions: DLMF 10.6.1 (J, Y), 10.29.1 (I, K); the scaled ones add the scale's derivative
    "jv": (sps.jv, ("v",), "x", lambda v, x, y: 0.5 * (_p("jv", v - 1.0)(x) - _p("jv", v + 1.0)(x))),
    "yv": (sps.yv, ("v",), "x", lambda v, x, y: 0.5 * (_p("yv", v - 1.0)(x) - _p("yv", v + 1.0)(x))),
    "yn": (sps.yn, ("n",), "x", lambda n, x, y: 0.5 * (_p("yv", n - 1.0)(x) - _p("yv", n + 1.0)(x))),
    "iv": (sps.iv, ("v",), "x", lambda v, x, y: 0.5 * (_p("iv", v - 1.0)(x) + _p("iv", v + 1.0)(x))),
    "kv": (sps.kv, ("v",), "x", lambda v, x, y: -0.5 * (_p("kv", v - 1.0)(x) + _p("kv", v + 1.0)(x))),
    "ive": (sps.ive, ("v",), "x", lambda v, x, y: 0.5 * (_p("ive", v - 1.0)(x) + _p("ive", v + 1.0)(x))
            - np.sign(x) * y),
    "kve": (sps.kve, ("v",), "x", lambda v, x, y: y - 0.5 * (_p("kve", v - 1.0)(x) + _p("kve", v + 1.0)(x))),
    "j0": (sps.j0, (), "x", lambda x, y: -sps.j1(x)),
    "j1": (sps.j1, (), "x", lambda x, y: 0.5 * (sps.j0(x) - _p("jv", 2.0)(x))),
    "y0": (sps.y0, (), "x", lambda x, y: -sps.y1(x)),
    "y1": (sps.y1, (), "x", lambda x, y: 0.5 * (sps.y0(x) - _p("yv", 2.0)(x))),
    "k0": (sps.k0, (), "x", lambda x, y: -sps.k1(x)),
    "k1": (sps.k1, (), "x", lambda x, y: -0.5 * (sps.k0(x) + _p("kv", 2.0)(x))),
    "k0e": (sps.k0e, (), "x", lambda x, y: y - sps.k1e(x)),
    "k1e": (sps.k1e, (), "x", lambda x, y: y - 0.5 * (sps.k0e(x) + _p("kve", 2.0)(x))),
    # Hurwitz zeta: d/dq sum_k (k + q)^-x = -x zeta(x + 1, q)
    "zeta": (_spu._zeta, ("x",), "q", lambda s, q, y: -s * _p("zeta", s + 1.0)(q)),
    "chdtr": (sps.chdtr, ("v",), "x", lambda v, x, y: 0.5 * np.exp(_log_gamma_density(0.5 * v, 0.5 * x))),
    "chdtrc": (sps.chdtrc, ("v",), "x", lambda v, x, y: -0.5 * np.exp(_log_gamma_density(0.5 * v, 0.5 * x))),
    # gdtr(a, b, x) = gammainc(b, a x): a the rate, b the shape
    "gdtr": (sps.gdtr, ("a", "b"), "x", lambda a, b, x, y: a * np.exp(_log_gamma_density(b, a * x))),
    "gdtrc": (sps.gdtrc, ("a", "b"), "x", lambda a, b, x, y: -a * np.exp(_log_gamma_density(b, a * x))),
    # DLMF 7.10 (Dawson, erfi), 6.6 (E1, Ei), 8.19.13 (E_n' = -E_{n-1}; E_0(x) = exp(-x)/x), 19.4.1
    "dawsn": (sps.dawsn, (), "x", lambda x, y: 1.0 - 2.0 * x * y),
    "erfi": (sps.erfi, (), "x", lambda x, y: (2.0 / np.sqrt(np.pi)) * np.exp(x * x)),
    "expi": (sps.expi, (), "x", lambda x, y: np.exp(x) / x),
    "exp1": (sps.exp1, (), "x", lambda x, y: -np.exp(-x) / x),
    "expn": (sps.expn, ("n",), "x", lambda n, x, y: np.where(
        n >= 1, -_p("expn", np.maximum(n - 1.0, 0.0))(x), -y * (1.0 + 1.0 / x))),
    "ellipk": (sps.ellipk, (), "m", lambda m, y: (sps.ellipe(m) - (1.0 - m) * y) / (2.0 * m * (1.0 - m))),
    "ellipe": (sps.ellipe, (), "m", lambda m, y: (y - sps.ellipk(m)) / (2.0 * m)),
}


@register
class SpecialParam(CallRule):
    """y = f(p..., x) elementwise, differentiable in x only (the p are constant operands).

    Tangent y_dot = f_x x_dot, adjoint x_bar = f_x y_bar; f_x is traced NumPy/SciPy code, so hvp
    differentiates it again (jv -> jv at v +- 1 -> ...)."""
    name = "special_param"

    def __init__(self, in_shapes, out_shapes=None, fn="gammainc"):
        super().__init__(in_shapes, [in_shapes[-1]], fn=fn)
        if fn not in _TABLE:
            raise TapegradValueError(f"unknown special function {fn!r}")
        self.ufunc, self.pnames, _, self.deriv = _TABLE[fn]
        if len(in_shapes) != len(self.pnames) + 1:
            raise TapegradValueError(f"special_param {fn}: {len(in_shapes)} operands, expected "
                                     f"{len(self.pnames) + 1}")

    def _params(self, xs):
        # constants, whatever form a sweep hands them in (the reference sweep: flat)
        return [np.reshape(np.asarray(value_of(p), dtype=np.float64), s)
                for p, s in zip(xs[:-1], self.in_shapes)]

    def fwd(self, *xs):
        if type(xs[-1]) is Tracer:      # traced (the adjoint is being differentiated)
            return [_apply(self.extra["fn"], self._params(xs), xs[-1])]
        return [np.asarray(self.ufunc(*self._params(xs), xs[-1]), dtype=np.float64)]

    def _d(self, xs, ys):
        return self.deriv(*self._params(xs), xs[-1], ys[0])

    def tan(self, xs, ys, xdots):
        if xdots[-1] is None:
            return [None]
        return [self._d(xs, ys) * xdots[-1]]

    def bwd(self, xs, ys, ybars):
        return [None] * (len(xs) - 1) + [self._d(xs, ys) * ybars[0]]


def _apply(fn, params, x):
    """fn(*params, x) with constant params (plain arrays) and x traced or not."""
    params = [np.asarray(value_of(p), dtype=np.float64) for p in params]
    xs = np.shape(value_of(x))
    shape = np.broadcast_shapes(xs, *[p.shape for p in params])
    if top_recorder(x) is None:
        return np.asarray(_TABLE[fn][0](*params, value_of(x)), dtype=np.float64)
    if xs != shape:
        x = _rules.broadcast_to(x, shape)
    params = [np.array(np.broadcast_to(p, shape)) for p in params]   # (ascontiguousarray makes 0-d 1-d)
    return call(SpecialParam([shape] * (len(params) + 1), fn=fn), *params, x)


def _traced(x):
    return top_recorder(x) is not None


def _public_name(fn):
    return "zeta" if fn == "zeta" else fn


def _ufunc_rule(fn):
    _, pnames, xname, _ = _TABLE[fn]

    def rule(*args):
        if len(args) != len(pnames) + 1:
            raise TapegradTypeError(f"scipy.special.{_public_name(fn)}: takes {len(pnames) + 1} "
                                    f"arguments, got {len(args)}")
        for k, (name, p) in enumerate(zip(pnames, args)):
            if _traced(p):
                raise TapegradTypeError(
                    f"scipy.special.{_public_name(fn)}: tapegrad has no derivative with respect to "
                    f"{name} (argument {k}); only {xname} (argument {len(pnames)}) may be traced. "
                    f"Pass {name} as a constant (tg.stop_gradient, or a plain array)")
        return _apply(fn, args[:-1], args[-1])
    rule.__name__ = fn
    return rule


if isinstance(getattr(sps, "betaincc", None), np.ufunc):      # SciPy >= 1.11
    _TABLE["betaincc"] = (sps.betaincc, ("a", "b"), "x",
                          lambda a, b, x, y: -np.exp(_log_beta_density(a, b, x)))

REGISTERED = []    # the ufuncs this module registers (tests/test_scipy.py has a row for each)
for _fn, (_u, _pn, _xn, _d) in _TABLE.items():
    registry.register(_u, _ufunc_rule(_fn), "rule", rule_class=SpecialParam, ufunc=True)
    REGISTERED.append(_u)
del _fn, _u, _pn, _xn, _d


def _riemann_zeta(x):
    raise TapegradTypeError(
        "scipy.special.zeta: tapegrad has no derivative with respect to x (the exponent; SciPy has "
        "no closed form for d/dx zeta). zeta(x, q) is differentiable in q")


registry.register(_spu._riemann_zeta, _riemann_zeta, "refused",
                  detail="no derivative in the exponent x; zeta(x, q) is differentiable in q",
                  ufunc=True)
REGISTERED.append(_spu._riemann_zeta)


# ------------------------------------------------------------------ Box-Cox (compositions)
def _boxcox_of_log(lx, lmbda):
    """(exp(lmbda * lx) - 1) / lmbda, and its limit lx + lmbda lx^2 / 2 + lmbda^2 lx^3 / 6 near 0
    (so the derivative in lmbda is right at lmbda = 0 too)."""
    t = lmbda * lx
    small = np.abs(t) < 1e-4        # a traced comparison: a replay re-evaluates it
    ls = _rules.where(small, 1.0, lmbda)
    series = lx * (1.0 + t * (0.5 + t * (1.0 / 6.0)))
    return _rules.where(small, series, np.expm1(ls * lx) / ls)


def _boxcox(x, lmbda):
    return _boxcox_of_log(np.log(x), lmbda)


def _boxcox1p(x, lmbda):
    return _boxcox_of_log(np.log1p(x), lmbda)


# ------------------------------------------------------------------ more compositions
def _beta(a, b):
    """B(a, b): exp(betaln) for positive arguments, the gamma quotient elsewhere (each branch
    at stand-ins off its domain, so its derivative stays finite where it is not selected)."""
    pos = (a > 0.0) & (b > 0.0)
    ap, bp = _rules.where(pos, a, 1.0), _rules.where(pos, b, 1.0)
    an, bn = _rules.where(pos, 0.5, a), _rules.where(pos, 0.5, b)
    return _rules.where(pos, np.exp(sps.betaln(ap, bp)), sps.gamma(an) * sps.gamma(bn) * sps.rgamma(an + bn))


def _kl_div(x, y):
    # x log(x / y) - x + y for x, y > 0; y at x = 0 <= y; inf elsewhere (SciPy's)
    ok = (x > 0.0) & (y > 0.0)
    xs, ys = _rules.where(ok, x, 1.0), _rules.where(ok, y, 1.0)
    return _rules.where(ok, xs * np.log(xs / ys) - xs + ys,
                        _rules.where((x == 0.0) & (y >= 0.0), y, np.inf))


def _huber(delta, r):
    # r^2 / 2 for |r| <= delta, delta (|r| - delta / 2) beyond; inf for delta < 0
    a = np.abs(r)
    inner = a <= delta
    return _rules.where(delta < 0.0, np.inf,
                        _rules.where(inner, 0.5 * r * r, delta * (a - 0.5 * delta)))


def _pseudo_huber(delta, r):
    # delta^2 (sqrt(1 + (r / delta)^2) - 1); 0 for delta = 0, inf for delta < 0
    pos = delta > 0.0
    ds = _rules.where(pos, delta, 1.0)
    t = r / ds
    return _rules.where(pos, ds * ds * (np.sqrt(1.0 + t * t) - 1.0),
                        _rules.where(delta == 0.0, 0.0, np.inf))


registry.register(sps.boxcox, _boxcox, "composition", ufunc=True)
registry.register(sps.boxcox1p, _boxcox1p, "composition", ufunc=True)
registry.register(sps.beta, _beta, "composition", ufunc=True)
registry.register(sps.kl_div, _kl_div, "composition", ufunc=True)
registry.register(sps.huber, _huber, "composition", ufunc=True)
registry.register(sps.pseudo_huber, _pseudo_huber, "composition", ufunc=True)
REGISTERED += [sps.boxcox, sps.boxcox1p, sps.beta, sps.kl_div, sps.huber, sps.pseudo_huber]
