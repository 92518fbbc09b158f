"""tapegrad.scipy: SciPy functions that do not dispatch through NumPy's protocols, on tracers.

``special`` (logsumexp, softmax, polygamma, multigammaln, and every scipy.special ufunc tapegrad
differentiates), ``stats`` (norm, t, multivariate_normal, gamma, chi2, beta, expon, laplace,
cauchy, logistic, poisson, dirichlet), ``linalg`` (solve_triangular, cholesky, cho_factor,
cho_solve, solve, inv, det), ``signal`` (convolve, correlate, fftconvolve, oaconvolve,
convolve2d, correlate2d). SciPy's names and signatures; with no traced argument each function
is SciPy's own. See docs/scipy_support.md.
"""
from . import special, linalg, signal, stats

__all__ = ["special", "stats", "linalg", "signal", "covered"]


def covered():
    """Every SciPy function name this package differentiates, as "module.name"."""
    out = []
    for mod in (special, stats, linalg, signal):
        out += [f"scipy.{mod.__name__.rsplit('.', 1)[1]}.{n}" for n in mod.covered()]
    return out
