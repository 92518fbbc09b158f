"""scipy.stats densities, distribution functions and quantiles on tracers.

SciPy's distributions convert their arguments with ``np.asarray``, so they never reach tapegrad.
These objects have SciPy's names, signatures and broadcasting (``norm.logpdf(x, loc=0,
scale=1)``, ``t.cdf(x, df, loc=0, scale=1)``, ``multivariate_normal.logpdf(x, mean=None, cov=1,
allow_singular=False)``, ``dirichlet.logpdf(x, alpha)`` with the components along x's first
axis, as SciPy reads them), are written in traced NumPy and the scipy.special functions tapegrad
differentiates, and are differentiable in every continuous argument: x, loc, scale and the shape
parameters of the log densities. The distribution functions of ``t``, ``gamma``, ``chi2``,
``beta`` and the quantiles go through incomplete beta/gamma functions, which are differentiable
in x only: a traced shape parameter there raises a TapegradTypeError naming it.

Called with no traced argument, each method is SciPy's own (values, warnings and errors exactly
SciPy's). Traced, bad parameters give what SciPy gives: nan for a non-positive scale or shape,
-inf (log density) or 0 (density) outside the support; ``multivariate_normal`` and
``dirichlet`` raise SciPy's ValueError (shapes, non-PSD cov, x off the simplex).
Frozen distributions work too: ``norm(loc, scale).logpdf(x)``.
"""
import math

import numpy as np
import scipy.special as sps
import scipy.stats as _st

from ._common import active, values, as_float, where, shape
from . import linalg as _la
from ..rules.special import _log_t_density
from ..tracing.tracer import value_of
from ..errors import TapegradTypeError

__all__ = ["norm", "t", "multivariate_normal", "gamma", "chi2", "beta", "expon", "laplace",
           "cauchy", "logistic", "poisson", "dirichlet", "covered"]

_LOG_2PI = math.log(2.0 * math.pi)
_INF, _NAN = np.inf, np.nan


class _Frozen:
    """dist(*shapes, loc=, scale=): the methods with those parameters bound, as SciPy's."""

    def __init__(self, dist, args, kwargs):
        self.dist, self.args, self.kwargs = dist, args, kwargs

    def __getattr__(self, meth):
        if meth not in self.dist._methods:
            raise AttributeError(f"frozen tapegrad.scipy.stats.{self.dist.name} has no method {meth!r}")
        f = getattr(self.dist, meth)
        return lambda x: f(x, *self.args, **self.kwargs)

    def __repr__(self):
        return f"<frozen tapegrad.scipy.stats.{self.dist.name}{self.args}{self.kwargs}>"


class _Dist:
    """A distribution with SciPy's method signatures: meth(x, *shapes, loc=0[, scale=1])."""

    def __init__(self, name, shapes, has_scale=True, **methods):
        self.name, self.shapes, self.has_scale = name, tuple(shapes), has_scale
        self._scipy = getattr(_st, name)
        self._methods = tuple(methods)
        for meth, impl in methods.items():
            setattr(self, meth, self._method(meth, impl))

    def __call__(self, *args, **kwargs):
        return _Frozen(self, args, kwargs)

    def __repr__(self):
        return f"<tapegrad.scipy.stats.{self.name}: {', '.join(self._methods)}>"

    def _parse(self, meth, args, kwargs):
        first = "q" if meth in ("ppf", "isf") else ("k" if self.name == "poisson" else "x")
        names = (first,) + self.shapes + (("loc", "scale") if self.has_scale else ("loc",))
        where_ = f"tapegrad.scipy.stats.{self.name}.{meth}"
        if len(args) > len(names):
            raise TapegradTypeError(f"{where_}: takes at most {len(names)} positional arguments "
                                    f"({', '.join(names)}), got {len(args)}")
        got = dict(zip(names, args))
        for k, v in kwargs.items():
            if k not in names:
                raise TapegradTypeError(f"{where_}: unexpected keyword argument {k!r} "
                                        f"(arguments: {', '.join(names)})")
            if k in got:
                raise TapegradTypeError(f"{where_}: got multiple values for argument {k!r}")
            got[k] = v
        missing = [n for n in names[:1 + len(self.shapes)] if n not in got]
        if missing:
            raise TapegradTypeError(f"{where_}: missing required argument(s) {', '.join(missing)}")
        return (as_float(got[first]), [as_float(got[n]) for n in self.shapes],
                as_float(got.get("loc", 0.0)), as_float(got.get("scale", 1.0)))

    def _method(self, meth, impl):
        scipy_meth = getattr(self._scipy, meth)

        def method(*args, **kwargs):
            if not active(args, kwargs):
                return scipy_meth(*values(args), **{k: values(v) for k, v in kwargs.items()})
            return impl(self, *self._parse(meth, args, kwargs))
        method.__name__ = meth
        method.__qualname__ = f"{self.name}.{meth}"
        method.__doc__ = (f"scipy.stats.{self.name}.{meth} on tracers (SciPy's signature; "
                          f"differentiable in x, loc, scale and {', '.join(self.shapes) or 'no shape'} "
                          "where continuous).")
        return method


# ---------------------------------------------------------------- continuous: shared plumbing
def _ok_params(d, shapes, scale):
    """(all parameters valid, shapes with stand-ins where they are not, scale likewise); each
    stand-in depends on its own parameters only, so a constant stays constant."""
    ok_shapes = True
    for s in shapes:
        ok_shapes = ok_shapes & (s > 0.0)
    ok_scale = scale > 0.0
    shapes_s = [where(ok_shapes, s, 1.0) for s in shapes]
    return ok_shapes & ok_scale, shapes_s, where(ok_scale, scale, 1.0)


def _logpdf_impl(std_logpdf, support=None, interior=0.0):
    """logpdf(x; shapes, loc, scale) = std_logpdf((x - loc) / scale; shapes) - log(scale), -inf off
    the support, nan at bad parameters. Unselected branches see safe stand-ins, so their
    derivatives are finite (a where's adjoint is zero there, and 0 * inf would be nan)."""
    def impl(d, x, shapes, loc, scale):
        ok, shapes_s, scale_s = _ok_params(d, shapes, scale)
        z = (x - loc) / scale_s
        if support is not None:
            ins = support(z)
            z = where(ins, z, interior)
        val = std_logpdf(z, *shapes_s) - np.log(scale_s)
        if support is not None:
            val = where(ins, val, -_INF)
        return where(ok, val, _NAN)
    return impl


def _pdf_impl(logpdf_impl):
    return lambda d, *a: np.exp(logpdf_impl(d, *a))


def _cdf_impl(std_cdf):
    """std_cdf((x - loc) / scale; shapes), defined by std_cdf for every z; nan at bad parameters."""
    def impl(d, x, shapes, loc, scale):
        ok, shapes_s, scale_s = _ok_params(d, shapes, scale)
        return where(ok, std_cdf((x - loc) / scale_s, *shapes_s), _NAN)
    return impl


def _ppf_impl(std_ppf, bounds, inverse=False):
    """loc + scale * std_ppf(q; shapes) for 0 < q < 1, the support's ends at q = 0 and 1 (as
    SciPy: isf reversed), nan elsewhere and at bad parameters."""
    lo, hi = bounds
    if inverse:
        lo, hi = hi, lo

    def impl(d, q, shapes, loc, scale):
        ok, shapes_s, scale_s = _ok_params(d, shapes, scale)
        qok = (q >= 0.0) & (q <= 1.0)
        ok = ok & qok
        inner = (q > 0.0) & (q < 1.0)
        qs = where(inner, q, 0.5)
        val = where(inner, std_ppf(qs, *shapes_s), where(q == 0.0, lo, hi))
        return where(ok, loc + scale_s * val, _NAN)
    return impl


def _continuous(name, shapes, logpdf, support=None, interior=0.0, cdf=None, logcdf=None,
                sf=None, logsf=None, ppf=None, isf=None, bounds=(-_INF, _INF)):
    lp = _logpdf_impl(logpdf, support, interior)
    m = {"logpdf": lp, "pdf": _pdf_impl(lp)}
    for meth, f in (("cdf", cdf), ("logcdf", logcdf), ("sf", sf), ("logsf", logsf)):
        if f is not None:
            m[meth] = _cdf_impl(f)
    for meth, f in (("ppf", ppf), ("isf", isf)):
        if f is not None:
            m[meth] = _ppf_impl(f, bounds, inverse=meth == "isf")
    return _Dist(name, shapes, **m)


def _pos(z):
    return z > 0.0


def _gate(cond, f, safe, else_value):
    """where(cond, f(z with safe stand-ins off cond), else_value), as a function of z."""
    return lambda z, *s: where(cond(z), f(where(cond(z), z, safe), *s), else_value)


# ---------------------------------------------------------------- the distributions
norm = _continuous(
    "norm", (), lambda z: -0.5 * z * z - 0.5 * _LOG_2PI,
    cdf=lambda z: sps.ndtr(z), logcdf=lambda z: sps.log_ndtr(z),
    sf=lambda z: sps.ndtr(-z), logsf=lambda z: sps.log_ndtr(-z),
    ppf=lambda q: sps.ndtri(q), isf=lambda q: -sps.ndtri(q))

def _t_logpdf(z, df):
    big = df == _INF                      # SciPy: the normal distribution
    return where(big, -0.5 * z * z - 0.5 * _LOG_2PI, _log_t_density(where(big, 1.0, df), z))


t = _continuous(
    "t", ("df",), _t_logpdf,
    cdf=lambda z, df: sps.stdtr(df, z), sf=lambda z, df: sps.stdtr(df, -z),
    ppf=lambda q, df: sps.stdtrit(df, q), isf=lambda q, df: -sps.stdtrit(df, q))

gamma = _continuous(
    "gamma", ("a",), lambda z, a: sps.xlogy(a - 1.0, z) - z - sps.gammaln(a),
    support=lambda z: z >= 0.0, interior=1.0,
    cdf=_gate(_pos, lambda z, a: sps.gammainc(a, z), 1.0, 0.0),
    sf=_gate(_pos, lambda z, a: sps.gammaincc(a, z), 1.0, 1.0),
    ppf=lambda q, a: sps.gammaincinv(a, q), isf=lambda q, a: sps.gammainccinv(a, q),
    bounds=(0.0, _INF))

chi2 = _continuous(
    "chi2", ("df",),
    lambda z, df: sps.xlogy(0.5 * df - 1.0, z) - 0.5 * z - sps.gammaln(0.5 * df) - 0.5 * df * math.log(2.0),
    support=lambda z: z >= 0.0, interior=1.0,
    cdf=_gate(_pos, lambda z, df: sps.gammainc(0.5 * df, 0.5 * z), 1.0, 0.0),
    sf=_gate(_pos, lambda z, df: sps.gammaincc(0.5 * df, 0.5 * z), 1.0, 1.0),
    ppf=lambda q, df: 2.0 * sps.gammaincinv(0.5 * df, q),
    isf=lambda q, df: 2.0 * sps.gammainccinv(0.5 * df, q), bounds=(0.0, _INF))


def _beta_cdf(z, a, b):
    inside = (z > 0.0) & (z < 1.0)
    v = sps.betainc(a, b, where(inside, z, 0.5))
    return where(inside, v, where(z <= 0.0, 0.0, 1.0))


beta = _continuous(
    "beta", ("a", "b"),
    lambda z, a, b: sps.xlogy(a - 1.0, z) + sps.xlog1py(b - 1.0, -z) - sps.betaln(a, b),
    support=lambda z: (z >= 0.0) & (z <= 1.0), interior=0.5,
    cdf=_beta_cdf, sf=lambda z, a, b: 1.0 - _beta_cdf(z, a, b),
    ppf=lambda q, a, b: sps.betaincinv(a, b, q), bounds=(0.0, 1.0))

expon = _continuous(
    "expon", (), lambda z: -z, support=lambda z: z >= 0.0, interior=1.0,
    cdf=_gate(_pos, lambda z: -np.expm1(-z), 1.0, 0.0),
    logcdf=_gate(_pos, lambda z: np.log(-np.expm1(-z)), 1.0, -_INF),
    sf=_gate(_pos, lambda z: np.exp(-z), 1.0, 1.0),
    logsf=_gate(_pos, lambda z: -z, 1.0, 0.0),
    ppf=lambda q: -np.log1p(-q), isf=lambda q: -np.log(q), bounds=(0.0, _INF))


def _laplace_cdf(z):
    e = 0.5 * np.exp(-np.abs(z))
    return where(z < 0.0, e, 1.0 - e)


def _laplace_ppf(q):
    lo = q < 0.5
    return where(lo, np.log(2.0 * where(lo, q, 0.25)), -np.log(2.0 - 2.0 * where(lo, 0.75, q)))


laplace = _continuous(
    "laplace", (), lambda z: -np.abs(z) - math.log(2.0),
    cdf=_laplace_cdf, sf=lambda z: _laplace_cdf(-z),
    ppf=_laplace_ppf, isf=lambda q: -_laplace_ppf(q))

cauchy = _continuous(
    "cauchy", (), lambda z: -math.log(math.pi) - np.log1p(z * z),
    cdf=lambda z: 0.5 + np.arctan(z) / math.pi, sf=lambda z: 0.5 - np.arctan(z) / math.pi,
    ppf=lambda q: np.tan(math.pi * (q - 0.5)), isf=lambda q: np.tan(math.pi * (0.5 - q)))

logistic = _continuous(
    "logistic", (), lambda z: -np.abs(z) - 2.0 * np.log1p(np.exp(-np.abs(z))),
    cdf=lambda z: sps.expit(z), logcdf=lambda z: sps.log_expit(z),
    sf=lambda z: sps.expit(-z), logsf=lambda z: sps.log_expit(-z),
    ppf=lambda q: sps.logit(q), isf=lambda q: -sps.logit(q))


# ---------------------------------------------------------------- Poisson (discrete; k not differentiated)
def _poisson_logpmf(d, k, shapes, loc, _scale):
    (mu,) = shapes
    k = k - loc
    ok = mu >= 0.0
    mu_s = where(ok, mu, 1.0)
    ins = (k >= 0.0) & (k == np.floor(k))
    ks = where(ins, k, 0.0)
    val = where(ins, sps.xlogy(ks, mu_s) - mu_s - sps.gammaln(ks + 1.0), -_INF)
    return where(ok, val, _NAN)


def _poisson_cdf(upper):
    def impl(d, k, shapes, loc, _scale):
        (mu,) = shapes
        k = np.floor(k - loc)
        ok = mu >= 0.0
        mu_s = where(ok, mu, 1.0)
        pos = k >= 0.0
        v = (sps.pdtrc if upper else sps.pdtr)(where(pos, k, 0.0), mu_s)
        return where(ok, where(pos, v, 1.0 if upper else 0.0), _NAN)
    return impl


poisson = _Dist("poisson", ("mu",), has_scale=False, logpmf=_poisson_logpmf,
                pmf=lambda d, *a: np.exp(_poisson_logpmf(d, *a)), cdf=_poisson_cdf(False),
                sf=_poisson_cdf(True))


# ---------------------------------------------------------------- multivariate normal
class _MultivariateNormal:
    """multivariate_normal.logpdf / pdf (x, mean=None, cov=1, allow_singular=False), SciPy's
    parameter processing (scalar or diagonal cov; x's last axis the components), through the
    Cholesky factor (allow_singular=True: SciPy's eigendecomposition, pseudo-determinant and
    -inf off the support; differentiable in cov only where its eigenvalues are distinct)."""
    name = "multivariate_normal"
    _methods = ("logpdf", "pdf")

    def __call__(self, mean=None, cov=1, allow_singular=False):
        return _Frozen(self, (), {"mean": mean, "cov": cov, "allow_singular": allow_singular})

    def __repr__(self):
        return "<tapegrad.scipy.stats.multivariate_normal: logpdf, pdf>"

    @staticmethod
    def _params(mean, cov):
        where_ = "tapegrad.scipy.stats.multivariate_normal"
        cs = shape(cov)
        if mean is None:
            dim = 1 if len(cs) < 2 else cs[0]
            mean = np.zeros(dim)
        else:
            mean = as_float(mean)
            dim = int(np.prod(shape(mean)))
            if len(shape(mean)) != 1:
                mean = np.reshape(mean, (dim,))
        cov = as_float(cov)
        if len(cs) == 0:
            cov = cov * np.eye(dim)
        elif len(cs) == 1:
            if cs[0] != dim:
                raise ValueError(f"{where_}: Array 'cov' of shape {cs} does not match 'mean', "
                                 f"a vector of length {dim}")
            cov = cov[:, None] * np.eye(dim)
        elif len(cs) == 2 and cs != (dim, dim):
            if cs[0] != cs[1]:
                raise ValueError(f"{where_}: Array 'cov' must be square if it is two dimensional, "
                                 f"but cov.shape = {cs}.")
            raise ValueError(f"{where_}: Dimension mismatch: array 'cov' is of shape {cs}, but "
                             f"'mean' is a vector of length {dim}.")
        elif len(cs) > 2:
            raise ValueError(f"{where_}: Array 'cov' must be at most two-dimensional, but "
                             f"cov.ndim = {len(cs)}")
        return dim, mean, cov

    @staticmethod
    def _quantiles(x, dim):
        x = as_float(x)
        xs = shape(x)
        if len(xs) == 0:
            x = np.reshape(x, (1,))
        elif len(xs) == 1:
            x = np.reshape(x, (xs[0], 1) if dim == 1 else (1, xs[0]))
        if shape(x)[-1] != dim:
            raise ValueError(f"tapegrad.scipy.stats.multivariate_normal: x's last axis has length "
                             f"{shape(x)[-1]}, but 'mean' is a vector of length {dim}")
        return x

    def logpdf(self, x, mean=None, cov=1, allow_singular=False):
        if not active(x, mean, cov):
            return _st.multivariate_normal.logpdf(values(x), values(mean), values(cov),
                                                  allow_singular=allow_singular)
        dim, mean, cov = self._params(mean, cov)
        x = self._quantiles(x, dim)
        dev = x - mean
        batch = shape(dev)[:-1]
        dev2 = np.reshape(dev, (-1, dim))
        s = np.linalg.eigvalsh(np.asarray(value_of(cov)))      # SciPy's checks, on the value
        eps = 1e6 * np.finfo(np.float64).eps * np.max(np.abs(s))
        if np.min(s) < -eps:
            raise ValueError("tapegrad.scipy.stats.multivariate_normal: The input matrix 'cov' "
                             "must be symmetric positive semidefinite.")
        singular = bool(np.any(s <= eps))
        if singular and not allow_singular:
            raise np.linalg.LinAlgError(
                "tapegrad.scipy.stats.multivariate_normal: When `allow_singular is False`, the "
                "input matrix 'cov' must be symmetric positive definite.")
        if not allow_singular:
            L = np.linalg.cholesky(cov)
            z = _la.solve_triangular(L, np.swapaxes(dev2, 0, 1), lower=True)
            maha = np.sum(z * z, axis=0)
            out = -0.5 * (dim * _LOG_2PI + 2.0 * np.sum(np.log(np.diagonal(L))) + maha)
        else:
            w, u = np.linalg.eigh(cov)
            tol = 1e6 * np.finfo(np.float64).eps * np.max(np.abs(w))
            keep = w > tol
            ws = where(keep, w, 1.0)
            U = u * where(keep, 1.0 / np.sqrt(ws), 0.0)
            maha = np.sum((dev2 @ U) ** 2, axis=1)
            rank = np.sum(where(keep, 1.0, 0.0))
            logpdet = np.sum(where(keep, np.log(ws), 0.0))
            out = -0.5 * (rank * _LOG_2PI + logpdet + maha)
            V = u * where(keep, 0.0, 1.0)          # the null space's directions
            resid = np.sqrt(np.sum((dev2 @ V) ** 2, axis=1))
            out = where(resid < 1e3 * tol, out, -_INF)
        out = np.reshape(out, batch)
        return np.squeeze(out)

    def pdf(self, x, mean=None, cov=1, allow_singular=False):
        if not active(x, mean, cov):
            return _st.multivariate_normal.pdf(values(x), values(mean), values(cov),
                                               allow_singular=allow_singular)
        return np.exp(self.logpdf(x, mean, cov, allow_singular))


multivariate_normal = _MultivariateNormal()


# ---------------------------------------------------------------- Dirichlet
class _Dirichlet:
    """dirichlet.logpdf / pdf (x, alpha): x of shape (K,) or (K, N) (components along the first
    axis, as SciPy reads them; K - 1 components are completed with 1 - sum), SciPy's checks."""
    name = "dirichlet"
    _methods = ("logpdf", "pdf")

    def __call__(self, alpha):
        return _Frozen(self, (alpha,), {})

    def __repr__(self):
        return "<tapegrad.scipy.stats.dirichlet: logpdf, pdf>"

    def logpdf(self, x, alpha):
        if not active(x, alpha):
            return _st.dirichlet.logpdf(values(x), values(alpha))
        alpha, x = as_float(alpha), as_float(x)
        av, xv = np.asarray(value_of(alpha)), np.asarray(value_of(x))
        if np.min(av) <= 0:
            raise ValueError("tapegrad.scipy.stats.dirichlet: All parameters must be greater than 0")
        if av.ndim != 1:
            raise ValueError(f"tapegrad.scipy.stats.dirichlet: Parameter vector 'a' must be one "
                             f"dimensional, but a.shape = {av.shape}.")
        K = av.shape[0]
        if xv.ndim == 0 or xv.shape[0] not in (K, K - 1) or xv.ndim > 2:
            raise ValueError(f"tapegrad.scipy.stats.dirichlet: Vector 'x' must have either the same "
                             f"number of entries as, or one entry fewer than, parameter vector 'a', "
                             f"but alpha.shape = {av.shape} and x.shape = {xv.shape}.")
        if xv.shape[0] == K - 1:
            last = 1.0 - np.sum(x, axis=0, keepdims=True)
            x = np.concatenate([x, last], axis=0)
            xv = np.asarray(value_of(x))
        if np.min(xv) < 0:
            raise ValueError("tapegrad.scipy.stats.dirichlet: Each entry in 'x' must be greater "
                             "than or equal to zero.")
        if np.max(xv) > 1:
            raise ValueError("tapegrad.scipy.stats.dirichlet: Each entry in 'x' must be smaller "
                             "or equal one.")
        a_b = av.reshape((K,) + (1,) * (xv.ndim - 1))
        if np.any((xv == 0) & (a_b < 1)):
            raise ValueError("tapegrad.scipy.stats.dirichlet: Each entry in 'x' must be greater "
                             "than zero if its alpha is less than one.")
        if np.any(np.abs(np.sum(xv, 0) - 1.0) > 10e-10):
            raise ValueError("tapegrad.scipy.stats.dirichlet: The input vector 'x' must lie within "
                             f"the normal simplex. but np.sum(x, 0) = {np.sum(xv, 0)}.")
        ab = np.reshape(alpha, (K,) + (1,) * (xv.ndim - 1))
        lnB = np.sum(sps.gammaln(alpha)) - sps.gammaln(np.sum(alpha))
        out = np.sum(sps.xlogy(ab - 1.0, x), axis=0) - lnB
        return np.squeeze(out)

    def pdf(self, x, alpha):
        if not active(x, alpha):
            return _st.dirichlet.pdf(values(x), values(alpha))
        return np.exp(self.logpdf(x, alpha))


dirichlet = _Dirichlet()


def covered():
    """The scipy.stats methods this module provides, as "dist.method" names."""
    out = []
    for name in __all__[:-1]:
        d = globals()[name]
        out += [f"{name}.{m}" for m in d._methods]
    return out
