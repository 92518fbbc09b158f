"""autograd.scipy on tapegrad: ``special`` (the scipy.special functions tapegrad differentiates,
and ``logsumexp``), ``stats`` (``norm``, ``t``, ``multivariate_normal``, ``poisson``, ``gamma``,
``chi2``, ``beta``, ``dirichlet`` densities written in NumPy on those), ``misc.logsumexp``.
Not provided:
``scipy.integrate.odeint`` (wrap it with ``tg.custom_vjp``, see docs/custom_derivatives.md),
``scipy.signal.convolve``, ``scipy.linalg`` beyond ``numpy.linalg`` (``sqrtm``, ``solve_sylvester``,
``solve_triangular``), and the cdfs of ``t``, ``gamma``, ``chi2``, ``beta``, ``poisson`` (no
incomplete beta/gamma rule yet): plain ``scipy.stats`` converts its arguments with ``np.asarray``
and so does not dispatch to tapegrad."""
from . import special, stats, misc

__all__ = ["special", "stats", "misc"]
