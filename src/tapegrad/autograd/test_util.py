"""autograd.test_util on tapegrad: ``check_grads(fun, argnum=0, modes=["fwd", "rev"], order=2)``
returns a function of fun's arguments that checks fun's derivatives in ``args[argnum]`` against
central differences (tapegrad's ``check_grads``: jvp, vjp, hvp and the nested orders); it raises
AssertionError on a mismatch. ``check_vjp(f, x)`` and ``check_jvp(f, x)`` check one mode, first
order."""
import builtins as _b

from ..checking import check_grads as _check
from ..errors import TapegradValueError

__all__ = ["check_grads", "check_vjp", "check_jvp"]


def _unary_f(fun, args, kwargs, argnum):
    def unary(x):
        a = _b.list(args)
        if _b.isinstance(argnum, int):
            a[argnum] = x
        else:
            for i, v in zip(argnum, x):
                a[i] = v
        return fun(*a, **kwargs)
    x = args[argnum] if _b.isinstance(argnum, int) else _b.tuple(args[i] for i in argnum)
    return unary, x


def check_grads(f, argnum=0, modes=("fwd", "rev"), order=2):
    """autograd's ``check_grads(f, argnum, modes, order)(*args, **kwargs)``."""
    for m in modes:
        if m not in ("fwd", "rev"):
            raise TapegradValueError(f"check_grads: unknown mode {m!r} (use 'fwd' and/or 'rev')")

    def checker(*args, **kwargs):
        unary, x = _unary_f(f, args, kwargs, argnum)
        _check(unary, x, modes=_b.tuple(modes), order=order)
    return checker


def check_vjp(f, x):
    """Reverse mode of f at x against central differences (first order)."""
    _check(f, x, modes=("rev",), order=1)


def check_jvp(f, x):
    """Forward mode of f at x against central differences (first order)."""
    _check(f, x, modes=("fwd",), order=1)
