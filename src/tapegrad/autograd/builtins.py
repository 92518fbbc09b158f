"""autograd.builtins on tapegrad. autograd boxes tuples, lists and dicts (``SequenceBox``,
``DictBox``) and so needs its own ``tuple``, ``list``, ``dict``, ``isinstance`` and ``type``;
tapegrad traces Python containers natively (they are pytrees of tracers), so ``tuple``, ``list``
and ``dict`` are Python's. ``isinstance`` and ``type`` look through a traced value to the value
it stands for, as autograd's look through a box: ``isinstance(x, np.ndarray)`` holds for a
traced array. Not provided: ``SequenceBox``, ``DictBox``, ``SequenceVSpace``, ``DictVSpace``,
``container_take`` (there are no container boxes to type-check or index)."""
import builtins as _b

from ..tracing.tracer import Tracer as _Tracer, value_of as _value_of

tuple = _b.tuple  # noqa: A001
list = _b.list  # noqa: A001
dict = _b.dict  # noqa: A001


def _unbox(x):
    if _b.type(x) is _Tracer:
        return _value_of(x)
    if getattr(_b.type(x), "_complex_traced", False):
        return x.value
    return x


def isinstance(obj, classinfo):  # noqa: A001
    """Python's isinstance of obj, or of the value a traced obj stands for (an ndarray)."""
    return _b.isinstance(_unbox(obj), classinfo)


def type(obj):  # noqa: A001
    """Python's type of obj, or of the value a traced obj stands for."""
    return _b.type(_unbox(obj))

__all__ = ["tuple", "list", "dict", "isinstance", "type"]
