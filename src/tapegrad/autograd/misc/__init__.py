"""autograd.misc on tapegrad: ``flatten`` and the ``optimizers`` (``sgd``, ``rmsprop``, ``adam``).
Not provided: ``misc.tracers.const_graph`` (tapegrad's ``tg.record`` / ``tg.compile`` record a
function once and replay it, which is what const_graph was for)."""
from .flatten import flatten, flatten_func
from . import optimizers

__all__ = ["flatten", "flatten_func", "optimizers"]
