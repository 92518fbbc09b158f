"""tapegrad: a compiled automatic-differentiation engine for plain NumPy code.

    import numpy as np
    import tapegrad as tg

    def f(x):
        return np.sum(np.tanh(x) ** 2)

    tg.grad(f)(np.ones(3))
"""
from .api import (value_and_grad, grad, vjp, jvp, hvp, jacobian, jacfwd, jacrev, hessian,
                  derivative, GuardError)
from .tracer import Tracer, TracerConversionWarning
from .errors import (TapegradError, TapegradTypeError, TapegradValueError, UnsupportedError,
                     RegistrationError)
from ._core.tape import Tape
from .checking import check_grads
from .compiled import record, compile, load, Recorded, Compiled
from . import numdiff
from . import calls as _calls  # registers the rules written in Python (linalg)
from . import rules_numpy  # NumPy/SciPy breadth and numpy.linalg (registers into rules)
from .rules_numpy import logsumexp
from .inspect import trace

__version__ = "0.1.0"

__all__ = ["value_and_grad", "grad", "vjp", "jvp", "hvp", "jacobian", "jacfwd", "jacrev",
           "hessian", "derivative", "GuardError", "TapegradError", "TapegradTypeError",
           "TapegradValueError", "UnsupportedError", "RegistrationError", "Tracer", "TracerConversionWarning", "Tape",
           "check_grads", "numdiff", "logsumexp", "record", "compile", "Recorded", "Compiled", "load", "trace"]
