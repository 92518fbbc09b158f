"""autograd.misc.flatten on tapegrad: nested tuples, lists and dicts (keys sorted) of arrays and
numbers <-> one flat 1-D float array. ``unflatten`` is traceable: it slices and reshapes, so
``grad(lambda flat: loss(unflatten(flat)))`` works."""
import numpy as np

from ...tracing import pytree as _tree

__all__ = ["flatten", "flatten_func"]


def flatten(value):
    """(flat, unflatten): flat is the leaves of ``value`` raveled in order (dict keys sorted),
    ``unflatten(flat)`` rebuilds the structure (scalar leaves come back as 0-d values)."""
    leaves, td = _tree.flatten(value)
    shapes = [np.shape(v) for v in leaves]
    sizes = [int(np.prod(s)) for s in shapes]
    flat = np.concatenate([np.ravel(v) for v in leaves]) if leaves else np.array([])

    def unflatten(vector):
        parts, pos = [], 0
        for s, n in zip(shapes, sizes):
            parts.append(vector[pos] if s == () else vector[pos:pos + n].reshape(s))
            pos += n
        return _tree.unflatten(td, parts)
    return flat, unflatten


def flatten_func(func, example):
    """(flat_func, unflatten, flat_example): ``flat_func(flat_x, *args)`` is func on the
    unflattened x, its output flattened."""
    _ex, unflatten = flatten(example)

    def _func(_x, *args):
        return flatten(func(unflatten(_x), *args))[0]
    return _func, unflatten, _ex
