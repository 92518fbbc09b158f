"""Pytrees: tuples, lists and dicts (keys sorted) of arrays and numbers."""
import numpy as np


class Leaf:
    __slots__ = ("scalar",)

    def __init__(self, scalar):
        self.scalar = scalar  # a Python number: derivatives come back as Python floats

    def __eq__(self, o):
        return isinstance(o, Leaf) and o.scalar == self.scalar

    def __repr__(self):
        return "*"


# Module-level recursion, not a nested function that calls itself: such a closure is a reference
# cycle (function -> cell -> function) holding its leaves, here the tracers of a recording and
# through them its recorder and tape, until the cyclic garbage collector runs.
def flatten(tree):
    leaves = []
    return leaves, _flatten(tree, leaves)


def _flatten(t, leaves):
    if type(t) is np.ndarray:       # the usual leaf, first
        leaves.append(t)
        return Leaf(False)
    if isinstance(t, tuple) and not hasattr(t, "_fields"):
        return ("tuple", [_flatten(c, leaves) for c in t])
    if isinstance(t, list):
        return ("list", [_flatten(c, leaves) for c in t])
    if isinstance(t, dict):
        keys = sorted(t)
        return ("dict", keys, [_flatten(t[k], leaves) for k in keys])
    if t is None:
        return ("none",)
    leaves.append(t)
    return Leaf(isinstance(t, (int, float, bool)) and not isinstance(t, np.ndarray))


def unflatten(treedef, leaves):
    return _unflatten(treedef, iter(leaves))


def _unflatten(d, it):
    if isinstance(d, Leaf):
        v = next(it)
        if d.scalar and isinstance(v, np.ndarray) and v.ndim == 0:
            return float(v)
        return v
    if d[0] == "tuple":
        return tuple(_unflatten(c, it) for c in d[1])
    if d[0] == "list":
        return [_unflatten(c, it) for c in d[1]]
    if d[0] == "dict":
        return {k: _unflatten(c, it) for k, c in zip(d[1], d[2])}
    return None


# ------------------------------------------------------------------ flat vectors <-> leaves
# The derivative operators work on one flat float64 vector per pytree (the sweeps' x, seed,
# gradient); these two are the only places that cut one into leaves or join leaves into one.
def split(flat, shapes, sizes, lead=None, copy=False):
    """One array per shape, cut in order from the last axis of ``flat``: ``flat[a:b]`` reshaped
    to the shape, or with ``lead`` (the leading axes, e.g. a Jacobian's output shape)
    ``flat[..., a:b]`` reshaped to ``lead + shape``. ``sizes`` are the shapes' element counts.
    Views of ``flat`` unless ``copy`` (results handed to users must not alias a kept buffer)."""
    res, pos = [], 0
    for s, n in zip(shapes, sizes):
        if lead is None:
            part = flat[pos:pos + n].reshape(s)
        else:
            part = flat[..., pos:pos + n].reshape(lead + tuple(s))
        res.append(part.copy() if copy else part)
        pos += n
    return res


def join(leaves):
    """The leaves raveled, in order, into one float64 vector (empty for no leaves)."""
    if not leaves:
        return np.zeros(0)
    return np.concatenate(leaves, axis=None, dtype=np.float64)   # axis=None ravels each leaf
