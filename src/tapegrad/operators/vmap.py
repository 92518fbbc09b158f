"""``vmap``: f mapped over a batch axis, with JAX's ``in_axes`` / ``out_axes``.

This is the re-traced form: f runs once per batch member (on slices of the batched arguments)
and the outputs are stacked, so it composes with every operator (``vmap(grad(f))``,
``jacobian(vmap(f))``, ``vmap(vmap(f))``) and value-dependent control flow is per member, as in
a Python loop. Under an outer operator the slicing and stacking are traced like any NumPy code.
"""
import numpy as np

from ..tracing import pytree as _tree
from ..tracing.tracer import Tracer
from ..errors import TapegradTypeError, TapegradValueError

__all__ = ["vmap"]


def _shape(x):
    return np.shape(x._val if type(x) is Tracer else x)


def _is_axis(a):
    return a is None or (isinstance(a, (int, np.integer)) and not isinstance(a, bool))


def _leaf_axes(spec, tree, where):
    """The axis (int or None) of every leaf of tree, from a spec that is an axis or a prefix
    of tree's structure (tuples, lists, dicts)."""
    if _is_axis(spec):
        leaves, _ = _tree.flatten(tree)
        return [spec] * len(leaves)
    if isinstance(spec, (tuple, list)) and isinstance(tree, (tuple, list)):
        if len(spec) != len(tree):
            raise TapegradValueError(f"vmap: {where} has {len(spec)} entries for a container of "
                                     f"{len(tree)}")
        return [a for k, (s, t) in enumerate(zip(spec, tree))
                for a in _leaf_axes(s, t, f"{where}[{k}]")]
    if isinstance(spec, dict) and isinstance(tree, dict):
        if set(spec) != set(tree):
            raise TapegradValueError(f"vmap: {where} has keys {sorted(spec)}, the argument "
                                     f"{sorted(tree)}")
        return [a for k in sorted(tree) for a in _leaf_axes(spec[k], tree[k], f"{where}[{k!r}]")]
    raise TapegradTypeError(f"vmap: {where} must be an int, None, or a tuple/list/dict matching "
                            f"the argument's structure, got {spec!r}")


def _take(x, i, axis):
    key = (slice(None),) * axis + (i,)
    return x[key] if type(x) is Tracer else np.asarray(x)[key]


def vmap(f, in_axes=0, out_axes=0):
    """f mapped over an axis of its arguments: ``vmap(f)(X)[i] == f(X[i])``.

    in_axes: an int (every argument batched along that axis), None (not batched), or a tuple
    with one entry per positional argument, each an int, None or a prefix of that argument's
    pytree. out_axes: where the batch axis goes in each output leaf (int, or a prefix pytree of
    ints; None for an output that does not depend on the batch: the first member's is returned).
    """
    if not callable(f):
        raise TapegradTypeError(f"vmap: f must be callable, got {type(f).__name__}")

    def mapped(*args):
        spec = in_axes
        if _is_axis(spec):
            spec = (spec,) * len(args)
        if not isinstance(spec, (tuple, list)) or len(spec) != len(args):
            raise TapegradValueError(f"vmap: in_axes must have one entry per positional "
                                     f"argument ({len(args)}), got {in_axes!r}")
        flat_args, batch = [], None
        for k, (a, s) in enumerate(zip(args, spec)):
            leaves, td = _tree.flatten(a)
            axes = _leaf_axes(s, a, f"in_axes[{k}]")
            norm = []
            for leaf, ax in zip(leaves, axes):
                if ax is None:
                    norm.append(None)
                    continue
                shp = _shape(leaf)
                if not -len(shp) <= ax < len(shp):
                    raise TapegradValueError(f"vmap: in_axes[{k}] = {ax} for a leaf of shape {shp}")
                ax = ax % len(shp)
                if batch is None:
                    batch = shp[ax]
                elif shp[ax] != batch:
                    raise TapegradValueError(f"vmap: argument {k} has {shp[ax]} batch members "
                                             f"along axis {ax}, an earlier argument {batch}")
                norm.append(ax)
            flat_args.append((td, leaves, norm))
        if batch is None:
            raise TapegradValueError("vmap: no argument is batched (every in_axes entry is None)")
        outs = []
        for i in range(batch):
            member = [_tree.unflatten(td, [v if ax is None else _take(v, i, ax)
                                           for v, ax in zip(leaves, norm)])
                      for td, leaves, norm in flat_args]
            outs.append(f(*member))
        if batch == 0:
            raise TapegradValueError("vmap: a batch of size 0 has no output structure to stack")
        first, out_td = _tree.flatten(outs[0])
        per_leaf = [[_tree.flatten(o)[0][j] for o in outs] for j in range(len(first))]
        oaxes = _leaf_axes(out_axes, outs[0], "out_axes")
        stacked = []
        for vals, ax in zip(per_leaf, oaxes):
            if ax is None:
                stacked.append(vals[0])
                continue
            nd = len(_shape(vals[0])) + 1
            if not -nd <= ax < nd:
                raise TapegradValueError(f"vmap: out_axes = {ax} for outputs of shape "
                                         f"{_shape(vals[0])}")
            stacked.append(np.stack(vals, axis=ax % nd))
        return _tree.unflatten(out_td, stacked)

    mapped.__name__ = f"vmap({getattr(f, '__name__', 'f')})"
    mapped.__doc__ = f"{getattr(f, '__name__', 'f')} mapped over a batch axis."
    return mapped
