"""autograd.scipy on tapegrad: ``special`` (the scipy.special functions tapegrad differentiates,
and ``logsumexp``), ``stats.norm`` (written in NumPy on those), ``misc.logsumexp``. Not provided:
``scipy.integrate.odeint`` (wrap it with ``tg.custom_vjp``, see docs/custom_derivatives.md),
``scipy.signal.convolve``, ``scipy.linalg`` beyond ``numpy.linalg`` (``sqrtm``, ``solve_sylvester``,
``solve_triangular``), and the other ``scipy.stats`` distributions (``multivariate_normal``,
``t``, ``gamma``, ``beta``, ``chi2``, ``poisson``, ``dirichlet``): plain ``scipy.stats`` converts
its arguments with ``np.asarray`` and so does not dispatch to tapegrad."""
from . import special, stats, misc

__all__ = ["special", "stats", "misc"]
