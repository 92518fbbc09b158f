"""tapegrad: a compiled automatic-differentiation engine for plain NumPy code.

    import numpy as np
    import tapegrad as tg

    def f(x):
        return np.sum(np.tanh(x) ** 2)

    tg.grad(f)(np.ones(3))
"""
from .operators import (value_and_grad, grad, vjp, jvp, hvp, jacobian, jacfwd, jacrev, hessian,
                        derivative, record, compile, load, Recorded, Compiled, vmap)
from .engine.traced import GuardError
from .tracing.tracer import Tracer, TracerConversionWarning
from .errors import (TapegradError, TapegradTypeError, TapegradValueError, UnsupportedError,
                     RegistrationError)
from ._core.tape import Tape
from ._core import set_num_threads, get_num_threads
from .checking import check_grads
from . import numdiff
from .rules import calls as _calls  # registers the rules written in Python (linalg)
from .rules import breadth as rules_numpy  # NumPy/SciPy breadth and numpy.linalg (registers into rules)
from .rules import complex as _complex  # complex values as pairs of real parts; numpy.fft
from .rules import complex_linalg as _complex_linalg  # numpy.linalg on complex matrices
from .rules import complex_funcs as _complex_funcs  # more NumPy functions on complex values
from .rules import special as _special  # scipy.special ufuncs with parameters (gammainc, jv, ...)
from .rules import scipy_calls as _scipy_calls  # the rules of tapegrad.scipy (tapes load by rule name)
from .rules.breadth import logsumexp
from .rules.base import stop_gradient
from .rules.custom import (custom_vjp, custom_jvp, primitive, defvjp, defjvp, defvjp_argnum,
                           register_custom, checkpoint)
from .inspect import trace
from ._version import __version__


__all__ = ["value_and_grad", "grad", "vjp", "jvp", "hvp", "jacobian", "jacfwd", "jacrev",
           "hessian", "derivative", "GuardError", "TapegradError", "TapegradTypeError",
           "TapegradValueError", "UnsupportedError", "RegistrationError", "Tracer",
           "TracerConversionWarning", "Tape", "check_grads", "numdiff", "logsumexp", "record",
           "compile", "Recorded", "Compiled", "load", "trace", "stop_gradient", "custom_vjp",
           "custom_jvp", "primitive", "defvjp", "defjvp", "defvjp_argnum", "register_custom", "checkpoint", "vmap",
           "set_num_threads", "get_num_threads"]


def __getattr__(name):
    # tapegrad.scipy (special, stats, linalg, signal on tracers) on first use: importing
    # scipy.stats and scipy.signal costs about a second
    if name == "scipy":
        import importlib
        return importlib.import_module(".scipy", __name__)
    raise AttributeError(f"module 'tapegrad' has no attribute {name!r}")
