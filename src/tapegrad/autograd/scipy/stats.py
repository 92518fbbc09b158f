"""autograd.scipy.stats on tapegrad: the densities autograd wraps, written in NumPy and the
scipy.special functions tapegrad differentiates, so every mode and every order works:

- ``norm``: ``pdf logpdf cdf logcdf sf logsf`` (x, loc=0, scale=1)
- ``t``: ``pdf logpdf`` (x, df, loc=0, scale=1)
- ``multivariate_normal``: ``pdf logpdf`` (x, mean, cov); x of shape (D,) or (N, D)
- ``poisson``: ``pmf logpmf`` (k, mu)
- ``gamma``: ``pdf logpdf`` (x, a, loc=0, scale=1); ``chi2``: ``pdf logpdf`` (x, df, loc, scale)
- ``beta``: ``pdf logpdf`` (x, a, b, loc=0, scale=1)
- ``dirichlet``: ``pdf logpdf`` (x, alpha)

Not provided: the cdfs of ``t``, ``gamma``, ``chi2``, ``beta``, ``poisson`` (they need the
incomplete beta and gamma functions, which have no tapegrad rule yet). Plain ``scipy.stats``
converts its arguments with ``np.asarray``, so it does not dispatch to tapegrad at all."""
import types as _types

import numpy as np
import scipy.special as _sps

__all__ = ["norm", "t", "multivariate_normal", "poisson", "gamma", "chi2", "beta", "dirichlet"]

_LOG_2PI = np.log(2 * np.pi)


def _dist(**logs):
    """A namespace with each log-density and its exponential (logpdf -> pdf, logpmf -> pmf)."""
    ns = {}
    for name, f in logs.items():
        ns[name] = f
        if name in ("logpdf", "logpmf"):
            ns[name[3:]] = (lambda f: lambda *a, **k: np.exp(f(*a, **k)))(f)
    return _types.SimpleNamespace(**ns)


# ---------------------------------------------------------------- normal
def _norm_logpdf(x, loc=0.0, scale=1.0):
    z = (x - loc) / scale
    return -0.5 * z * z - 0.5 * _LOG_2PI - np.log(scale)


norm = _dist(logpdf=_norm_logpdf,
             cdf=lambda x, loc=0.0, scale=1.0: _sps.ndtr((x - loc) / scale),
             logcdf=lambda x, loc=0.0, scale=1.0: _sps.log_ndtr((x - loc) / scale),
             sf=lambda x, loc=0.0, scale=1.0: _sps.ndtr(-(x - loc) / scale),
             logsf=lambda x, loc=0.0, scale=1.0: _sps.log_ndtr(-(x - loc) / scale))


# ---------------------------------------------------------------- Student's t
def _t_logpdf(x, df, loc=0.0, scale=1.0):
    z = (x - loc) / scale
    return (_sps.gammaln((df + 1) / 2.0) - _sps.gammaln(df / 2.0) - 0.5 * np.log(df * np.pi)
            - np.log(scale) - (df + 1) / 2.0 * np.log1p(z * z / df))


t = _dist(logpdf=_t_logpdf)


# ---------------------------------------------------------------- multivariate normal
def _mvn_logpdf(x, mean, cov):
    if not hasattr(cov, "shape"):
        cov = np.asarray(cov)
    d = np.shape(cov)[-1]
    diff = x - mean
    sol = np.linalg.solve(cov, np.swapaxes(np.atleast_2d(diff), -1, -2))   # cov^-1 diff^T
    quad = np.sum(np.atleast_2d(diff) * np.swapaxes(sol, -1, -2), axis=-1)
    if np.ndim(diff) == 1:
        quad = quad[0]
    return -0.5 * (d * _LOG_2PI + np.linalg.slogdet(cov)[1] + quad)


multivariate_normal = _dist(logpdf=_mvn_logpdf)


# ---------------------------------------------------------------- counts, gamma family, beta
poisson = _dist(logpmf=lambda k, mu: _sps.xlogy(k, mu) - mu - _sps.gammaln(k + 1.0))


def _gamma_logpdf(x, a, loc=0.0, scale=1.0):
    z = (x - loc) / scale
    return _sps.xlogy(a - 1.0, z) - z - _sps.gammaln(a) - np.log(scale)


gamma = _dist(logpdf=_gamma_logpdf)
chi2 = _dist(logpdf=lambda x, df, loc=0.0, scale=1.0: _gamma_logpdf(x, df / 2.0, loc, 2.0 * scale))


def _beta_logpdf(x, a, b, loc=0.0, scale=1.0):
    z = (x - loc) / scale
    return (_sps.xlogy(a - 1.0, z) + _sps.xlog1py(b - 1.0, -z) - _sps.betaln(a, b)
            - np.log(scale))


beta = _dist(logpdf=_beta_logpdf)


def _dirichlet_logpdf(x, alpha):
    return (np.sum(_sps.xlogy(alpha - 1.0, x), axis=-1) + _sps.gammaln(np.sum(alpha, axis=-1))
            - np.sum(_sps.gammaln(alpha), axis=-1))


dirichlet = _dist(logpdf=_dirichlet_logpdf)
