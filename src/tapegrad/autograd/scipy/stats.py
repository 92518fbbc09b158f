"""autograd.scipy.stats on tapegrad: the distributions autograd wraps. ``norm``, ``t``,
``multivariate_normal``, ``poisson``, ``gamma``, ``chi2`` and ``beta`` are tapegrad.scipy.stats's
(SciPy's signatures; every mode and order; also their cdfs and quantiles, differentiable in x,
loc and scale). ``dirichlet`` keeps autograd's convention (components along x's *last* axis,
no simplex check, so finite differences in x work), where SciPy's (tapegrad.scipy.stats.dirichlet)
reads them along the first axis and raises off the simplex. Plain ``scipy.stats`` converts its
arguments with ``np.asarray``, so it does not dispatch to tapegrad at all."""
import types as _types

import numpy as np
import scipy.special as _sps

from ...scipy.stats import norm, t, multivariate_normal, poisson, gamma, chi2, beta

__all__ = ["norm", "t", "multivariate_normal", "poisson", "gamma", "chi2", "beta", "dirichlet"]


def _dirichlet_logpdf(x, alpha):
    return (np.sum(_sps.xlogy(alpha - 1.0, x), axis=-1) + _sps.gammaln(np.sum(alpha, axis=-1))
            - np.sum(_sps.gammaln(alpha), axis=-1))


dirichlet = _types.SimpleNamespace(logpdf=_dirichlet_logpdf,
                                   pdf=lambda x, alpha: np.exp(_dirichlet_logpdf(x, alpha)))
