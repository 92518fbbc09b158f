"""autograd.scipy.special on tapegrad: every scipy.special function tapegrad's registry
differentiates (the ufuncs themselves: tapegrad traces them through NumPy's ufunc protocol),
and ``logsumexp`` (``tg.logsumexp``: scipy's own converts its argument with ``np.asarray``).
Functions autograd wraps that are missing here (``beta``, ``betainc``, ``polygamma``,
``gammainc``, ``gammaincc``, ``multigammaln``, the Bessel functions ``j0 j1 y0 y1 jn yn iv ive``)
have no tapegrad rule yet; ``tapegrad.autograd.extend.primitive`` + ``defvjp`` adds one."""
import scipy.special as _sps

from ...rules import registry as _registry
from ...rules.breadth import logsumexp

__all__ = ["logsumexp"]

for _name in sorted(dir(_sps)):
    _f = getattr(_sps, _name)
    try:
        _e = _registry.ENTRIES.get(_f)
    except TypeError:      # unhashable attribute
        _e = None
    if _e is not None and _e.kind != "refused" and not _name.startswith("_"):
        globals()[_name] = _f
        __all__.append(_name)
del _name, _f, _e
