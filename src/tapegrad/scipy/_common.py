"""Helpers shared by tapegrad.scipy's modules: is anything traced, values of nested arguments."""
import numpy as np

from ..tracing.tracer import Tracer, top_recorder, value_of
from ..rules import base as _rules



def where(cond, x, y):
    """np.where, traced only if one of its arguments is (a stand-in for a plain parameter must
    stay plain: a traced shape parameter of an incomplete gamma function has no derivative)."""
    if top_recorder(cond, x, y) is None:
        return np.where(value_of(cond), value_of(x), value_of(y))
    if type(cond) is not Tracer:
        c = np.asarray(cond)
        out = np.broadcast_shapes(c.shape, shape(x), shape(y))
        if c.all() and shape(x) == out:      # nothing to select (valid parameters, the common case)
            return x
        if not c.any() and shape(y) == out:
            return y
    return _rules.where(cond, x, y)


def leaves(obj):
    if isinstance(obj, (list, tuple)):
        for o in obj:
            yield from leaves(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from leaves(o)
    else:
        yield obj


def active(*args):
    """Is any argument (or a leaf of a list/tuple/dict argument) traced by an active recording?"""
    return top_recorder(*leaves(args)) is not None


def values(obj):
    if isinstance(obj, list):
        return [values(o) for o in obj]
    if isinstance(obj, tuple):
        return tuple(values(o) for o in obj)
    return value_of(obj)


def shape(x):
    return np.shape(value_of(x))


def as_float(x):
    """x itself if traced, else a float64 array (Python scalars and lists included)."""
    if type(x) is Tracer:
        return x
    return np.asarray(x, dtype=np.float64)
