"""scipy.special on tracers.

The scipy.special *ufuncs* tapegrad has rules for dispatch to the tracer by themselves
(``scipy.special.gammaln(x)`` works on a tracer); they are re-exported here so that
``tapegrad.scipy.special`` is a complete namespace. SciPy's *Python* functions convert their
arguments with ``np.asarray`` and so never reach tapegrad; this module has traced versions of
them with SciPy's signatures: ``logsumexp`` (axis, b=, keepdims, return_sign=), ``softmax``,
``log_softmax``, ``polygamma`` (integer n, derivative in x), ``multigammaln`` (a, d).
``zeta`` is SciPy's own (it calls ufuncs that dispatch): differentiable in q, not in x.
"""
import numpy as np
import scipy.special as _sps

from ._common import active, values, as_float, shape, where
from ..rules import registry as _registry
from ..rules.breadth import logsumexp, _polygamma
from ..tracing.tracer import value_of
from ..errors import TapegradTypeError, TapegradValueError

__all__ = ["logsumexp", "softmax", "log_softmax", "polygamma", "multigammaln", "zeta"]

zeta = _sps.zeta


def softmax(x, axis=None):
    """scipy.special.softmax on tracers."""
    if not active(x):
        return _sps.softmax(values(x), axis=axis)
    return np.exp(x - logsumexp(x, axis=axis, keepdims=True))


def log_softmax(x, axis=None):
    """scipy.special.log_softmax on tracers."""
    if not active(x):
        return _sps.log_softmax(values(x), axis=axis)
    return x - logsumexp(x, axis=axis, keepdims=True)


def polygamma(n, x):
    """scipy.special.polygamma on tracers: the n-th derivative of digamma at x (n integers, not
    traced: no derivative in n); the derivative in x is polygamma(n + 1, x)."""
    if not active(x):
        if active(n):
            raise TapegradTypeError("tapegrad.scipy.special.polygamma: no derivative with respect "
                                    "to n (argument 0, an integer order)")
        return _sps.polygamma(values(n), values(x))
    if active(n):
        raise TapegradTypeError("tapegrad.scipy.special.polygamma: no derivative with respect to n "
                                "(argument 0, an integer order); pass n as a constant")
    n = np.asarray(n)
    if not np.all(np.floor(n) == n) or np.any(n < 0):
        raise TapegradValueError(f"tapegrad.scipy.special.polygamma: n must be non-negative "
                                 f"integers (got {n!r})")
    x = as_float(x)
    s = np.broadcast_shapes(n.shape, shape(x))
    if shape(x) != s:
        x = np.broadcast_to(x, s)
    orders = np.unique(n)
    out = _polygamma(int(orders[0]), x)
    for k in orders[1:]:
        out = where(np.broadcast_to(n == k, s), _polygamma(int(k), x), out)
    return out


def multigammaln(a, d):
    """scipy.special.multigammaln on tracers: log of the multivariate gamma function of
    dimension d (a positive integer), differentiable in a."""
    if not active(a):
        return _sps.multigammaln(values(a), values(d))
    d = np.asarray(value_of(d))[()]
    if not np.isscalar(d) or np.floor(d) != d or d < 1:
        raise ValueError("tapegrad.scipy.special.multigammaln: d should be a positive integer "
                         "(dimension)")
    d = int(d)
    if np.any(np.asarray(value_of(a)) <= 0.5 * (d - 1)):
        raise ValueError(f"tapegrad.scipy.special.multigammaln: condition a ({value_of(a)}) > "
                         f"0.5 * (d-1) ({0.5 * (d - 1)}) not met")
    res = (d * (d - 1) * 0.25) * np.log(np.pi)
    for j in range(d):
        res = res + _sps.gammaln(a - 0.5 * j)
    return res


# every scipy.special ufunc tapegrad differentiates (they dispatch to the tracer themselves)
for _name in sorted(dir(_sps)):
    if _name.startswith("_") or _name in __all__:
        continue
    _f = getattr(_sps, _name)
    try:
        _e = _registry.ENTRIES.get(_f)
    except TypeError:      # unhashable attribute
        _e = None
    if _e is not None and _e.kind != "refused" and isinstance(_f, np.ufunc):
        globals()[_name] = _f
        __all__.append(_name)
del _name, _f, _e


def covered():
    """The scipy.special names this module provides."""
    return list(__all__)
