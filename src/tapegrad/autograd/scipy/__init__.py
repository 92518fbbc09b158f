"""autograd.scipy on tapegrad, re-exported from tapegrad.scipy (one implementation):
``special`` (the scipy.special functions tapegrad differentiates, ``logsumexp``, ``polygamma``,
``multigammaln``), ``stats`` (``norm``, ``t``, ``multivariate_normal``, ``poisson``, ``gamma``,
``chi2``, ``beta`` with SciPy's signatures, cdfs included; ``dirichlet`` in autograd's
last-axis convention), ``linalg`` (``solve_triangular``, ``cholesky``, ``cho_factor``,
``cho_solve``, ``solve``, ``inv``, ``det``), ``misc.logsumexp``.
Not provided: ``scipy.integrate.odeint`` (wrap it with ``tg.custom_vjp``, see
docs/custom_derivatives.md), ``scipy.linalg.sqrtm``/``solve_sylvester``, and autograd's own
``scipy.signal.convolve(A, B, axes, dot_axes)`` (its signature is not SciPy's; SciPy's
convolve, correlate, fftconvolve with ``axes`` are in tapegrad.scipy.signal)."""
from . import special, stats, misc, linalg

__all__ = ["special", "stats", "misc", "linalg"]
