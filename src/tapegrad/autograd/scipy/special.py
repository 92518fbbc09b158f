"""autograd.scipy.special on tapegrad: tapegrad.scipy.special (every scipy.special ufunc tapegrad
differentiates, which dispatch to the tracer by themselves, and traced versions of SciPy's Python
functions: ``logsumexp``, ``softmax``, ``log_softmax``, ``polygamma``, ``multigammaln``).
Functions autograd wraps that are missing here (``jn``'s integer-order siblings beyond ``yn``,
derivatives in the orders or parameters of incomplete gamma/beta and Bessel functions) have no
tapegrad rule; ``tapegrad.autograd.extend.primitive`` + ``defvjp`` adds one."""
from ...scipy import special as _tsp
from ...scipy.special import *  # noqa: F401,F403

__all__ = list(_tsp.__all__)
