"""tapegrad.scipy: SciPy functions that do not dispatch through NumPy's protocols, on tracers.

``special`` (logsumexp, softmax, polygamma, multigammaln, and every scipy.special ufunc tapegrad
differentiates), ``stats`` (norm, t, multivariate_normal, gamma, chi2, beta, expon, laplace,
cauchy, logistic, poisson, dirichlet), ``linalg`` (solve_triangular, cholesky, cho_factor,
cho_solve, solve, inv, det), ``signal`` (convolve, correlate, fftconvolve, oaconvolve,
convolve2d, correlate2d). SciPy's names and signatures; with no traced argument each function
is SciPy's own. See docs/scipy_support.md.
"""
import importlib

__all__ = ["special", "stats", "linalg", "signal", "covered"]
_SUBMODULES = ("special", "stats", "linalg", "signal")


def __getattr__(name):
    # the submodules on first use (scipy.stats and scipy.signal take a while to import)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'tapegrad.scipy' has no attribute {name!r}")


def covered():
    """Every SciPy function name this package differentiates, as "module.name"."""
    out = []
    for mod in (importlib.import_module(f".{m}", __name__) for m in _SUBMODULES):
        out += [f"scipy.{mod.__name__.rsplit('.', 1)[1]}.{n}" for n in mod.covered()]
    return out
