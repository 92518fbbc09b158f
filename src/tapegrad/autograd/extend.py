"""autograd.extend on tapegrad: define primitives with their own derivative rules.

``primitive``, ``defvjp``, ``defjvp`` and ``defvjp_argnum`` are tapegrad's own (``tg.primitive``
and friends, autograd's signatures: ``vjpmaker(ans, *args, **kwargs) -> (g -> cotangent)``,
``jvpfun(g, ans, *args, **kwargs) -> output tangent``). ``Box`` is tapegrad's tracer class, for
``isinstance(x, Box)`` checks. Not provided (see docs/porting_from_autograd.md): ``VSpace`` /
``vspace`` (tapegrad has no vector-space objects: values are arrays, floats and pytrees of them),
``register_notrace``, ``defjvp_argnums``, ``def_linear``, ``defvjp_is_zero``, ``SparseObject``,
``VJPNode`` / ``JVPNode``.
"""
import functools

from ..tracing import pytree as _tree
from ..tracing.tracer import Tracer as Box, value_of as _value_of
from ..rules.custom import primitive, defvjp, defjvp, defvjp_argnum, defjvp_argnum
from ..rules.base import stop_gradient

__all__ = ["primitive", "defvjp", "defjvp", "defvjp_argnum", "defjvp_argnum", "Box",
           "notrace_primitive"]


def _getval(x):
    while type(x) is Box:
        x = _value_of(x)
    return x


def notrace_primitive(f):
    """A function whose output is not traced (autograd's ``notrace_primitive``): f runs on the
    plain values of its arguments and its result carries no derivative."""
    @functools.wraps(f)
    def wrapped(*args, **kwargs):
        leaves, td = _tree.flatten((args, kwargs))
        a, kw = _tree.unflatten(td, [_getval(v) for v in leaves])
        return stop_gradient(f(*a, **kw))
    return wrapped
