"""Gradient checking: tapegrad's derivatives against central differences.

Modelled on autograd's ``check_grads``: random directions, forward mode compared with the
directional derivative, reverse mode compared through <u, J v> = <J^T u, v>, recursively for
higher orders (the derivative operators themselves are differentiated, which exercises nesting).
"""
import numpy as np

from .tracing import pytree as _tree
from .numdiff import directional
from .operators import api
from .errors import TapegradValueError


def _flat_fn(f, args):
    leaves, td = _tree.flatten(tuple(args))
    shapes = [np.shape(l) for l in leaves]
    sizes = [int(np.prod(s)) for s in shapes]

    def unflat(x):
        return _tree.unflatten(td, _tree.split(x, shapes, sizes))

    def ff(x):
        return _tree.join(_tree.flatten(f(*unflat(x)))[0])

    return ff, _tree.join(leaves), unflat


def _shaped_like(u, out):
    """The flat vector u laid out as the pytree ``out`` (a cotangent for vjp)."""
    leaves, td = _tree.flatten(out)
    return _tree.unflatten(td, _tree.split(u, [np.shape(o) for o in leaves],
                                           [int(np.size(o)) for o in leaves]))


def check_grads(f, *args, modes=("fwd", "rev"), order=2, rtol=1e-5, atol=1e-7, seed=0, h=None):
    """Check f's derivatives at args against central differences; raises AssertionError.

    modes: "fwd" (jvp vs directional difference), "rev" (vjp through <u, J v>). order=2 also
    checks the derivatives of the vjp function (reverse over reverse / forward over reverse),
    and for scalar f, hvp against differences of the gradient.
    """
    for m in modes:
        if m not in ("fwd", "rev"):
            raise TapegradValueError(f"check_grads: unknown mode {m!r} (use 'fwd' and/or 'rev')")
    rng = np.random.default_rng(seed)
    ff, x0, unflat = _flat_fn(f, args)
    y0 = ff(x0)
    v = rng.standard_normal(x0.shape)
    u = rng.standard_normal(y0.shape)
    num = np.atleast_1d(directional(ff, x0, v, h=h, order=4).value)
    scale = atol + rtol * max(np.abs(num).max(initial=0.0), 1.0)
    if "fwd" in modes:
        _, out_dot = api.jvp(lambda *a: f(*a), tuple(unflat(x0)), tuple(unflat(v)))
        od = _tree.join(_tree.flatten(out_dot)[0])
        err = np.abs(od - num).max(initial=0.0)
        if not err <= scale:
            raise AssertionError(f"check_grads (fwd, order {order}): jvp differs from central "
                                 f"differences by {err:.3e}\n jvp={od}\n fd ={num}")
    if "rev" in modes:
        out, vjp_fn = api.vjp(f, *unflat(x0))
        ct = vjp_fn(_shaped_like(u, out))
        g = _tree.join(_tree.flatten(ct)[0]) if x0.size else np.zeros(0)
        lhs, rhs = float(g @ v), float(u @ num)
        tol = atol + rtol * max(np.abs(u).sum() * np.abs(num).max(initial=0.0), 1.0)
        if not abs(lhs - rhs) <= tol:
            raise AssertionError(f"check_grads (rev, order {order}): <J^T u, v> = {lhs!r} but "
                                 f"<u, J v> from central differences = {rhs!r}")
    if order > 1:
        if y0.size == 1 and x0.size:
            gf = lambda x: _tree.join(  # noqa: E731
                _tree.flatten(api.grad(f, argnums=tuple(range(len(args))))(*unflat(x)))[0])
            hv_num = directional(gf, x0, v, h=h, order=4).value
            hv = api.hvp(lambda *a: f(*a), tuple(unflat(x0)), tuple(unflat(v)))
            hv = _tree.join(_tree.flatten(hv if len(args) > 1 else (hv,))[0])
            hscale = atol + rtol * max(np.abs(hv_num).max(initial=0.0), 1.0)
            err = np.abs(hv - hv_num).max(initial=0.0)
            if not err <= 10 * hscale:
                raise AssertionError(f"check_grads (hvp): differs from differences of the gradient "
                                     f"by {err:.3e}\n hvp={hv}\n fd ={hv_num}")
        def vjp_of_f(*a):
            out, fn = api.vjp(f, *a)
            return fn(_shaped_like(u, out))
        check_grads(vjp_of_f, *args, modes=modes, order=order - 1, rtol=rtol, atol=atol,
                    seed=seed + 1, h=h)
