"""Derivative operators. One mechanism (``engine.traced.Traced``: trace f onto a tape, then sweep
it), many thin operators.
"""
import numpy as np

from ..tracing import pytree as _tree
from ..tracing.tracer import Tracer
from ..rules import base as rules, calls as _calls
from ..engine.traced import Traced, _finish_leaves, cast_leaves
from ..rules import custom as _custom
from ..errors import TapegradTypeError, TapegradValueError


# ====================================================================== public operators
def value_and_grad(f, argnums=0, has_aux=False):
    """Returns a function computing (f(*args), gradient of f with respect to args[argnums]).
    The value is float64; the gradient takes the inputs' float dtypes (float32 in, float32 out,
    computed in float64: see grad)."""
    def vg(*args, **kwargs):
        tr = Traced(f, args, kwargs, argnums, has_aux, "grad")
        if tr.nout != 1:
            if not tr.out_shapes:
                raise TapegradTypeError("grad: the function must return a scalar (size-1) output, got "
                                "no array (None or an empty container)")
            raise TapegradTypeError(f"grad: the function must return a scalar (size-1) output, got shape "
                            f"{tr.out_shapes[0] if len(tr.out_shapes) == 1 else tr.out_shapes}")
        g = tr.compiled_grad()
        if g is not None:
            out = tr.split_out(np.array([g[1]]))
            g = g[0]
        else:
            g = tr.pullback([np.ones(tr.out_shapes[0])])
            out = tr.output()
        g = _tree.unflatten(tr.in_tree, cast_leaves(_finish_leaves(g), tr.in_dtypes))
        val = _tree.unflatten(tr.out_tree, _finish_leaves(_tree.flatten(out)[0]))
        if isinstance(val, np.ndarray) and val.ndim == 0:
            val = val[()]
        return ((val, tr.aux) if has_aux else val), g
    vg.__name__ = f"value_and_grad({getattr(f, '__name__', 'f')})"
    vg.__doc__ = f"Value and gradient of {getattr(f, '__name__', 'f')}."
    return vg


def grad(f, argnums=0, has_aux=False):
    """Returns a function computing the gradient of scalar f with respect to args[argnums].

    The gradient has the structure of the differentiated argument (pytrees of tuples, lists,
    dicts). With has_aux=True, f returns (output, aux) and the function returns (grad, aux).

    dtypes: tapegrad computes in float64. The derivative with respect to a float32 (float16,
    longdouble) input is given in that dtype (a NumPy float32 scalar for one), as autograd and
    JAX give it; integer inputs (Python ints, NumPy integer arrays) are promoted to float64 and
    get float64 derivatives (a Python float for a Python int or float); boolean and complex
    inputs are refused with an error naming the argument. The same holds for every operator
    (vjp, jvp, hvp, jacobian, hessian) and for recorded tapes; jvp and jacobian results take
    NumPy's promotion of the inputs' dtypes (float32 when every differentiated input is).
    """
    vg = value_and_grad(f, argnums, has_aux)

    def g(*args, **kwargs):
        (v, g_) = vg(*args, **kwargs)
        return (g_, v[1]) if has_aux else g_
    g.__name__ = f"grad({getattr(f, '__name__', 'f')})"
    g.__doc__ = f"Gradient of {getattr(f, '__name__', 'f')}."
    return g


def vjp(f, *primals, has_aux=False):
    """(out, vjp_fn): vjp_fn(cotangent) returns a tuple with one cotangent per primal, each in
    its primal's float dtype (float32 for a float32 primal; computed in float64: see grad)."""
    tr = Traced(f, primals, None, None, has_aux, "vjp")
    out = tr.output()
    out = _tree.unflatten(tr.out_tree, _finish_leaves(_tree.flatten(out)[0]))

    def vjp_fn(ct):
        cts = tr.flat_out(ct, "vjp_fn")
        g = cast_leaves(_finish_leaves(tr.pullback(cts)), tr.in_dtypes)
        return _tree.unflatten(tr.in_tree, g)
    return ((out, vjp_fn, tr.aux) if has_aux else (out, vjp_fn))


def jvp(f, primals, tangents):
    """(f(*primals), J tangents), by the tangent (dual number) sweep. J tangents takes NumPy's
    promotion of the primals' dtypes (float32 if every primal is float32; see grad)."""
    if not isinstance(primals, (tuple, list)) or not isinstance(tangents, (tuple, list)):
        raise TapegradTypeError("jvp: primals and tangents must be tuples (one entry per argument)")
    if len(primals) != len(tangents):
        raise TapegradValueError(f"jvp: {len(primals)} primals but {len(tangents)} tangents")
    tr = Traced(f, tuple(primals), None, None, False, "jvp")
    tans = tr.flat_in(tuple(tangents), "jvp tangents")
    out_dot = _finish_leaves(tr.pushforward(tans))
    if tr.out_dtype is not None:
        out_dot = cast_leaves(out_dot, [tr.out_dtype] * len(out_dot))
    out = _tree.unflatten(tr.out_tree, _finish_leaves(_tree.flatten(tr.output())[0]))
    return out, _tree.unflatten(tr.out_tree, out_dot)


def hvp(f, primals, tangents):
    """Hessian-vector product H v of scalar f, by forward-over-reverse on one tape.

    Returns H v shaped like the (single) primal, or a tuple for several primals, in the
    primals' float dtypes (see grad).
    """
    if not isinstance(primals, (tuple, list)) or not isinstance(tangents, (tuple, list)):
        raise TapegradTypeError("hvp: primals and tangents must be tuples (one entry per argument)")
    tr = Traced(f, tuple(primals), None, None, False, "hvp")
    tans = tr.flat_in(tuple(tangents), "hvp tangents")
    if tr.nested or any(type(t) is Tracer and t._rec.active for t in tans):
        # inside another operator: differentiate the gradient along the tangents
        _, res = jvp(grad(f, argnums=tuple(range(len(primals)))), tuple(primals), tuple(tangents))
        return res[0] if len(primals) == 1 else res
    if tr.nout != 1:
        raise TapegradTypeError(f"hvp: the function must return a scalar, got shape {tr.out_shapes}")
    V = _tree.join(tans)[None, :]
    hv = tr.hvp_lanes(V)[0]
    res = _tree.unflatten(tr.in_tree, cast_leaves(tr._split_leaves(hv), tr.in_dtypes))
    return res[0] if len(primals) == 1 else res


def _single_array_fn(tr, fname):
    if len(tr.out_shapes) != 1:
        raise TapegradTypeError(f"{fname}: the function must return a single array")


def jacobian(f, argnums=0, mode="auto"):
    """Jacobian of f with respect to args[argnums]: shape out.shape + in.shape.

    mode="fwd": one tangent sweep with one lane per input; "rev": one reverse sweep per output;
    "auto" picks forward when there are fewer inputs than outputs. The dtype is NumPy's
    promotion of the inputs' (float32 for float32 inputs; computed in float64: see grad).
    """
    if mode not in ("auto", "fwd", "rev"):
        raise TapegradValueError(f"jacobian: mode must be 'auto', 'fwd' or 'rev', got {mode!r}")

    def jac(*args, **kwargs):
        tr = Traced(f, args, kwargs, argnums, False, "jacobian")
        _single_array_fn(tr, "jacobian")
        m = mode if mode != "auto" else ("fwd" if tr.nin < tr.nout else "rev")
        oshape = tuple(tr.out_shapes[0])
        if tr.nested:
            rows = []
            for i in range(tr.nout):
                e = np.zeros(tr.nout)
                e[i] = 1.0
                rows.append(tr.pullback([e.reshape(oshape)]))
            res = []
            for k, s in enumerate(tr.in_shapes):
                r = rules.stack([row[k] for row in rows]) if rows else np.zeros((0,) + tuple(s))
                res.append(rules.reshape(r, oshape + tuple(s)))
            return _tree.unflatten(tr.in_tree, res)
        J = tr.jac_fwd() if m == "fwd" else tr.jac_rev()
        if tr.out_dtype is not None:
            J = J.astype(tr.out_dtype[0])
        return _tree.unflatten(tr.in_tree, _tree.split(J, tr.in_shapes, tr.in_sizes, lead=oshape))
    return jac


jacfwd = lambda f, argnums=0: jacobian(f, argnums, "fwd")  # noqa: E731
jacrev = lambda f, argnums=0: jacobian(f, argnums, "rev")  # noqa: E731


def hessian(f, argnums=0):
    """Dense Hessian of scalar f, from lane-batched Hessian-vector products (one sweep pair),
    in the input's float dtype (see grad)."""
    def hess(*args, **kwargs):
        tr = Traced(f, args, kwargs, argnums, False, "hessian")
        if tr.nested:
            return jacobian(grad(f, argnums), argnums, "rev")(*args, **kwargs)
        if tr.nout != 1:
            raise TapegradTypeError("hessian: the function must return a scalar")
        if len(tr.in_shapes) != 1:
            raise TapegradTypeError("hessian: differentiate with respect to a single array argument")
        H = tr.hvp_lanes(np.eye(tr.nin))
        s = tuple(tr.in_shapes[0])
        H = H.T.reshape(s + s).copy()
        return H if tr.in_dtypes is None else H.astype(tr.in_dtypes[0][0])
    return hess


def derivative(f):
    """df/dx for scalar-to-scalar f, by one dual-number (tangent) sweep."""
    def d(x, *args, **kwargs):
        tr = Traced(f, (x,) + args, kwargs, 0, False, "derivative")
        if tr.nin != 1 or tr.nout != 1:
            raise TapegradTypeError("derivative: f must map a scalar to a scalar; use jacobian otherwise")
        r = _finish_leaves(tr.pushforward([np.ones(tr.in_shapes[0])]))[0]
        if isinstance(r, Tracer):
            return r
        return float(r) if tr.in_dtypes is None else cast_leaves([r], [(tr.in_dtypes[0][0], True)])[0]
    return d


_calls.install_jvp(jvp)   # the tangent of a Python rule's adjoint (see rules/calls.py)
_custom.install_operators(jvp=jvp, vjp=vjp)   # custom rules transpose with these (rules/custom.py)
