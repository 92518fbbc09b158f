"""autograd's public API on tapegrad: a project written for autograd switches with one import line.

    import tapegrad.autograd.numpy as np        # plain NumPy (tapegrad traces plain NumPy)
    from tapegrad.autograd import grad, jacobian, hessian

Every operator keeps autograd's conventions (``differential_operators.py``): ``argnum`` is an int
or a tuple of ints (the gradient is then a tuple), ``grad`` raises a ``TypeError`` for an output
that is not a scalar, ``make_vjp(f, x)`` returns ``(vjp, ans)``, ``make_jvp(f, x)(v)`` returns
``(ans, jvp)``, ``make_hvp(f, x)`` returns ``(hvp, grad)``. What is not provided, and why, is
listed in docs/porting_from_autograd.md.
"""
import builtins as _builtins
import inspect as _inspect
import sys as _sys
from collections import OrderedDict as _OrderedDict
from functools import wraps as _wraps

import numpy as _np
import numpy.fft  # noqa: F401  (loaded, so that the aliases below exist)
import numpy.linalg  # noqa: F401
import numpy.random  # noqa: F401

from ..operators import api as _api
from ..tracing import pytree as _tree
from ..rules.custom import primitive, checkpoint as _tg_checkpoint
from ..errors import TapegradTypeError as _TypeError, UnsupportedError as _Unsupported

# ------------------------------------------------------------------ tapegrad.autograd.numpy
# autograd.numpy wraps NumPy in boxes; tapegrad traces NumPy itself, so the drop-in's numpy *is*
# numpy (``import tapegrad.autograd.numpy as np; np is numpy``), and so are its submodules.
numpy = _np
for _sub in ("", ".random", ".linalg", ".fft"):
    _sys.modules[__name__ + ".numpy" + _sub] = _sys.modules["numpy" + _sub]
del _sub

# autograd's top level also re-exports its container builtins (builtins.py)
from .builtins import isinstance, type, tuple, list, dict  # noqa: E402,A001


# ------------------------------------------------------------------ unary -> n-ary, as autograd
def _subvals(args, pairs):
    args = _builtins.list(args)
    for i, v in pairs:
        args[i] = v
    return _builtins.tuple(args)


def _unary_to_nary(unary_operator):
    """autograd's ``unary_to_nary``: ``op(fun, argnum=0, *op_args)`` differentiates fun in
    ``args[argnum]`` (an int) or in the tuple of ``args[i]`` for i in argnum (a tuple/list)."""
    @_wraps(unary_operator)
    def nary_operator(fun, argnum=0, *nary_op_args, **nary_op_kwargs):
        if _builtins.type(argnum) not in (int, _builtins.tuple, _builtins.list):
            raise _TypeError(f"{unary_operator.__name__}: argnum must be an int or a tuple of ints, "
                             f"got {argnum!r}")

        @_wraps(fun)
        def nary_f(*args, **kwargs):
            @_wraps(fun)
            def unary_f(x):
                if _builtins.isinstance(argnum, int):
                    subargs = _subvals(args, [(argnum, x)])
                else:
                    subargs = _subvals(args, zip(argnum, x))
                return fun(*subargs, **kwargs)
            if _builtins.isinstance(argnum, int):
                x = args[argnum]
            else:
                x = _builtins.tuple(args[i] for i in argnum)
            return unary_operator(unary_f, _as_autograd_input(x), *nary_op_args, **nary_op_kwargs)
        nary_f.__name__ = f"{unary_operator.__name__}_of_{getattr(fun, '__name__', 'f')}"
        nary_f.__qualname__ = nary_f.__name__
        return nary_f
    return nary_operator


def _as_autograd_input(x):
    """autograd's dtypes for a differentiated argument: an integer or boolean *scalar* (Python
    or NumPy) has no vector space there (``TypeError: Can't differentiate w.r.t. type <class
    'int'>``); integer and boolean *arrays* are differentiated as float64 arrays (tapegrad
    itself refuses booleans); float32 and float16 keep their dtype in the derivatives (as
    tapegrad does: computed in float64, given back in the input's dtype)."""
    leaves, td = _tree.flatten(x)
    changed = False
    out = []
    for l in leaves:
        if _builtins.isinstance(l, (bool, int, _np.integer, _np.bool_)):
            raise _TypeError(f"Can't differentiate w.r.t. type {_builtins.type(l)}")
        if _builtins.type(l) is _np.ndarray and l.dtype.kind == "b":
            l, changed = l.astype(_np.float64), True
        out.append(l)
    return _tree.unflatten(td, out) if changed else x


def _make_vjp(fun, x):
    ans, vjp_fn = _api.vjp(fun, x)
    return (lambda g: vjp_fn(g)[0]), ans


def _make_jvp(fun, x):
    return lambda v: _api.jvp(fun, (x,), (v,))


def _ones_like(tree):
    """autograd's ``vspace(x).ones()``: ones shaped like each leaf of a pytree."""
    leaves, td = _tree.flatten(tree)
    return _tree.unflatten(td, [1.0 if _np.ndim(v) == 0 and not _builtins.isinstance(v, _np.ndarray)
                                else _np.ones(_np.shape(v)) for v in leaves])


# ------------------------------------------------------------------ the operators
@_unary_to_nary
def grad(fun, x):
    """Gradient of scalar-valued fun with respect to argument ``argnum`` (autograd's ``grad``).
    Raises TypeError for an output of more than one element."""
    return _api.grad(fun)(x)


@_unary_to_nary
def value_and_grad(fun, x):
    """(fun(x), grad(fun)(x)) from one recording."""
    return _api.value_and_grad(fun)(x)


@_unary_to_nary
def grad_and_aux(fun, x):
    """fun returns (output, aux); returns (gradient of output, aux)."""
    return _api.grad(fun, has_aux=True)(x)


@_unary_to_nary
def elementwise_grad(fun, x):
    """The vjp of fun with a cotangent of ones: the derivative of each output element with
    respect to its own input element when fun acts elementwise (sums over outputs otherwise)."""
    vjp, ans = _make_vjp(fun, x)
    return vjp(_ones_like(ans))


@_unary_to_nary
def deriv(fun, x):
    """The jvp of fun along a tangent of ones (the derivative for scalar x)."""
    return _make_jvp(fun, x)(_ones_like(x))[1]


@_unary_to_nary
def jacobian(fun, x):
    """Jacobian of shape ``fun(x).shape + x.shape``."""
    return _api.jacobian(fun)(x)


@_unary_to_nary
def hessian(fun, x):
    """``jacobian(jacobian(fun))``: shape ``fun(x).shape + x.shape + x.shape``. A scalar fun of
    one array gets it from one lane-batched forward-over-reverse sweep."""
    if _builtins.isinstance(x, (float, int, _np.ndarray, _np.generic)):
        try:
            return _api.hessian(fun)(x)
        except _TypeError as e:
            if not str(e).startswith("hessian:"):
                raise   # an error of fun itself
            # not a scalar output: autograd's definition below
    return _api.jacobian(_api.jacobian(fun))(x)


@_unary_to_nary
def make_vjp(fun, x):
    """(vjp, ans): ``vjp(g)`` is the vector-Jacobian product of fun at x with cotangent g."""
    return _make_vjp(fun, x)


@_unary_to_nary
def make_jvp(fun, x):
    """``jvp(v)`` returning ``(ans, J v)`` (dual numbers, one tangent sweep per call)."""
    return _make_jvp(fun, x)


@_unary_to_nary
def make_hvp(fun, x):
    """(hvp, grad(fun)(x)): ``hvp(v)`` is H v, the vjp of the gradient (autograd's definition)."""
    return _make_vjp(_api.grad(fun), x)


def hessian_tensor_product(fun, argnum=0):
    """``f(*args, v)`` -> the Hessian of fun in ``args[argnum]`` contracted with the tensor v
    over v's dimensions (autograd's ``hessian_tensor_product``)."""
    fun_grad = grad(fun, argnum)

    def vector_dot_grad(*args, **kwargs):
        args, vector = args[:-1], args[-1]
        return _np.tensordot(fun_grad(*args, **kwargs), vector, _np.ndim(vector))
    return grad(vector_dot_grad, argnum)


hessian_vector_product = hessian_tensor_product


def tensor_jacobian_product(fun, argnum=0):
    """``f(*args, v)`` -> v contracted with the Jacobian of fun in ``args[argnum]``, over v's
    dimensions (autograd's ``tensor_jacobian_product``)."""
    def vector_dot_fun(*args, **kwargs):
        args, vector = args[:-1], args[-1]
        return _np.tensordot(vector, fun(*args, **kwargs), axes=_np.ndim(vector))
    return jacobian(vector_dot_fun, argnum)


vector_jacobian_product = tensor_jacobian_product


def make_ggnvp(f, g=lambda x: 1. / 2 * _np.sum(x ** 2, axis=-1), f_argnum=0):
    """Generalized Gauss-Newton vector products ``v -> J^T H_g J v`` of ``g(f(x))``, J the
    Jacobian of f at x and H_g the Hessian of g at f(x) (autograd's ``make_ggnvp``)."""
    @_unary_to_nary
    def _make_ggnvp(f, x):
        f_vjp, f_x = _make_vjp(f, x)

        def ggnvp(v):
            jv = _api.jvp(f, (x,), (v,))[1]             # J v by a tangent sweep
            hjv = _api.vjp(_api.grad(g), f_x)[1](jv)[0]   # H_g (J v), autograd's g_hvp
            return f_vjp(hjv)                           # J^T H_g J v
        return ggnvp
    return _make_ggnvp(f, f_argnum)


@_unary_to_nary
def holomorphic_grad(fun, x):
    """The complex derivative f'(z) of a holomorphic fun (autograd's ``holomorphic_grad``): the
    gradient of Re f, which is f'(z) by the Cauchy-Riemann equations under the convention
    grad = d/dx - i d/dy (docs/complex.md). Warns, as autograd does, for a real x."""
    if not _np.iscomplexobj(x):
        import warnings
        warnings.warn("Input to holomorphic_grad is not complex")
    return _api.grad(lambda z: _np.real(fun(z)))(x)


def grad_named(fun, argname):
    """grad with respect to the argument called ``argname``."""
    arg_index = _builtins.list(_inspect.signature(fun).parameters).index(argname)
    return grad(fun, arg_index)


def multigrad_dict(fun):
    """Gradients with respect to every argument at once, as an OrderedDict name -> gradient
    (defaults included). Functions with *args or **kwargs are not supported."""
    sig = _inspect.signature(fun)
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise _Unsupported("multigrad_dict: functions with *args or **kwargs are not supported")

    def gradfun(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        names = _builtins.list(bound.arguments)
        g = _api.grad(lambda d: fun(**d))(_builtins.dict(bound.arguments))
        return _OrderedDict((n, g[n]) for n in names)
    return gradfun


def checkpoint(fun):
    """autograd's ``checkpoint``: fun's intermediate values are recomputed in the reverse sweep
    instead of being kept (``tg.checkpoint``)."""
    return _tg_checkpoint(fun)


from . import builtins, extend, misc, scipy, test_util  # noqa: E402,F401,A004

__all__ = ["grad", "value_and_grad", "grad_and_aux", "elementwise_grad", "deriv", "jacobian",
           "hessian", "make_vjp", "make_jvp", "make_hvp", "hessian_tensor_product",
           "hessian_vector_product", "tensor_jacobian_product", "vector_jacobian_product",
           "make_ggnvp", "holomorphic_grad", "grad_named", "multigrad_dict", "checkpoint",
           "primitive", "numpy", "isinstance", "type", "tuple", "list", "dict"]
