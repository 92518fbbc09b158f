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


def flatten(tree):
    leaves = []

    def rec(t):
        if isinstance(t, tuple) and not hasattr(t, "_fields"):
            return ("tuple", [rec(c) for c in t])
        if isinstance(t, list):
            return ("list", [rec(c) for c in t])
        if isinstance(t, dict):
            keys = sorted(t)
            return ("dict", keys, [rec(t[k]) for k in keys])
        if t is None:
            return ("none",)
        leaves.append(t)
        return Leaf(isinstance(t, (int, float, bool)) and not isinstance(t, np.ndarray))

    return leaves, rec(tree)


def unflatten(treedef, leaves):
    it = iter(leaves)

    def rec(d):
        if isinstance(d, Leaf):
            v = next(it)
            if d.scalar and isinstance(v, np.ndarray) and v.ndim == 0:
                return float(v)
            return v
        if d[0] == "tuple":
            return tuple(rec(c) for c in d[1])
        if d[0] == "list":
            return [rec(c) for c in d[1]]
        if d[0] == "dict":
            return {k: rec(c) for k, c in zip(d[1], d[2])}
        return None

    return rec(treedef)
