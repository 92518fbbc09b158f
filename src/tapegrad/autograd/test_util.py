"""autograd.test_util on tapegrad: ``check_grads(fun, argnum=0, modes=["fwd", "rev"], order=2)``
returns a function of fun's arguments that checks fun's derivatives in ``args[argnum]`` against
central differences (tapegrad's ``check_grads``: jvp, vjp, hvp and the nested orders); it raises
AssertionError on a mismatch. ``check_vjp(f, x)`` and ``check_jvp(f, x)`` check one mode, first
order. ``combo_check(fun, argnum, modes, order)(*value_lists, **keyword_value_lists)`` runs
check_grads at every combination of the values listed for each argument and keyword. Complex
arguments and outputs are checked with the operators' convention (docs/complex.md)."""
import builtins as _b
import itertools as _itertools

from ..checking import check_grads as _check
from ..errors import TapegradValueError

__all__ = ["check_grads", "check_vjp", "check_jvp", "combo_check"]

# autograd's finite-difference step: a small one, as autograd's check_grads takes, so that the
# differences do not step over a switch of the function's branch (the order LAPACK gives
# eigenvalues in, a largest component) that tapegrad's default step (eps ** (1/5)) can reach
EPS = 1e-6


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
        _check(unary, x, modes=_b.tuple(modes), order=order, h=EPS)
    return checker


def check_vjp(f, x):
    """Reverse mode of f at x against central differences (first order)."""
    _check(f, x, modes=("rev",), order=1)


def check_jvp(f, x):
    """Forward mode of f at x against central differences (first order)."""
    _check(f, x, modes=("fwd",), order=1)


def combo_check(fun, *check_args, **check_kwargs):
    """autograd's ``combo_check``: the returned function takes, for each argument, a list of
    values (and for each keyword a list of values) and checks fun at every combination."""
    checker = check_grads(fun, *check_args, **check_kwargs)

    def run(*value_lists, **keyword_lists):
        keys = _b.list(keyword_lists)
        for values in _itertools.product(*value_lists):
            for kw in _itertools.product(*[keyword_lists[k] for k in keys]):
                checker(*values, **_b.dict(zip(keys, kw)))
    return run
