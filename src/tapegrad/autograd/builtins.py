"""autograd.builtins on tapegrad. autograd boxes tuples, lists and dicts (``SequenceBox``,
``DictBox``) and so needs its own ``tuple``, ``list``, ``dict``, ``isinstance`` and ``type``;
tapegrad traces Python containers natively (they are pytrees of tracers), so these are Python's
builtins. Not provided: ``SequenceBox``, ``DictBox``, ``SequenceVSpace``, ``DictVSpace``,
``container_take`` (there are no container boxes to type-check or index)."""
import builtins as _b

tuple = _b.tuple  # noqa: A001
list = _b.list  # noqa: A001
dict = _b.dict  # noqa: A001
isinstance = _b.isinstance  # noqa: A001
type = _b.type  # noqa: A001

__all__ = ["tuple", "list", "dict", "isinstance", "type"]
