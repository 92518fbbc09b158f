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


def _is_complex(x):
    return np.iscomplexobj(x) and not hasattr(x, "_rec")


def _realflat(leaves, mask):
    """Leaves as one real vector, a complex leaf as its real part then its imaginary part."""
    parts = []
    for l, c in zip(leaves, mask):
        a = np.asarray(l)
        parts += [a.real, a.imag] if c else [a]
    return _tree.join(parts)


def _flat_fn(f, args):
    """(ff, x0, unflat, out mask): f as a real function of one real vector, complex leaves of
    the arguments and of the output as (re, im) blocks, so that central differences perturb
    the real and imaginary parts separately."""
    leaves, td = _tree.flatten(tuple(args))
    mask = [_is_complex(l) for l in leaves]
    shapes = [np.shape(l) for l in leaves]
    sizes = [int(np.prod(s)) for s in shapes]

    def unflat(x):
        if not any(mask):
            return _tree.unflatten(td, _tree.split(x, shapes, sizes))
        out, pos = [], 0
        for s, n, c in zip(shapes, sizes, mask):
            a = x[pos:pos + n].reshape(s)
            pos += n
            if c:
                a = a + 1j * x[pos:pos + n].reshape(s)
                pos += n
            out.append(a)
        return _tree.unflatten(td, out)

    out_mask = [_is_complex(l) for l in _tree.flatten(f(*args))[0]]

    def ff(x):
        return _realflat(_tree.flatten(f(*unflat(x)))[0], out_mask)

    return ff, _realflat(leaves, mask), unflat, (mask, out_mask)


def _shaped_like(u, out, out_mask=None):
    """The flat vector u laid out as the pytree ``out`` (a cotangent for vjp). A complex leaf's
    cotangent c = a - ib pairs with its change dw as Re(c dw) = a Re(dw) + b Im(dw): u's two
    blocks (a, b) (docs/complex.md)."""
    leaves, td = _tree.flatten(out)
    out_mask = out_mask or [False] * len(leaves)
    res, pos = [], 0
    for o, c in zip(leaves, out_mask):
        n, s = int(np.size(o)), np.shape(o)
        a = u[pos:pos + n].reshape(s)
        pos += n
        if c:
            a = a - 1j * u[pos:pos + n].reshape(s)
            pos += n
        res.append(a)
    return _tree.unflatten(td, res)


def _grad_flat(g, mask):
    """A cotangent of the arguments as the real vector it pairs with: g = gx - i gy is the
    real gradient (gx, gy) (Re(g dz) = gx dx + gy dy)."""
    return _realflat([np.conj(l) if c else l for l, c in zip(_tree.flatten(g)[0], mask)], mask)


def check_grads(f, *args, modes=("fwd", "rev"), order=2, rtol=1e-5, atol=1e-7, seed=0, h=None):
    """Check f's derivatives at args against central differences; raises AssertionError.

    modes: "fwd" (jvp vs directional difference), "rev" (vjp through <u, J v>). order=2 also
    checks the derivatives of the vjp function (reverse over reverse / forward over reverse),
    and for scalar f, hvp against differences of the gradient.

    Complex arguments and outputs: the differences perturb real and imaginary parts
    separately (a random complex direction), and the operators' convention is checked
    (docs/complex.md): jvp is the pushforward, a complex cotangent c pairs with dw as
    Re(c dw), the gradient g = gx - i gy with dz as Re(g dz).
    """
    for m in modes:
        if m not in ("fwd", "rev"):
            raise TapegradValueError(f"check_grads: unknown mode {m!r} (use 'fwd' and/or 'rev')")
    rng = np.random.default_rng(seed)
    ff, x0, unflat, (mask, out_mask) = _flat_fn(f, args)
    y0 = ff(x0)
    v = rng.standard_normal(x0.shape)
    u = rng.standard_normal(y0.shape)
    num = np.atleast_1d(directional(ff, x0, v, h=h, order=4).value)
    scale = atol + rtol * max(np.abs(num).max(initial=0.0), 1.0)
    if "fwd" in modes:
        _, out_dot = api.jvp(lambda *a: f(*a), tuple(unflat(x0)), tuple(unflat(v)))
        od = _realflat(_tree.flatten(out_dot)[0], out_mask)
        err = np.abs(od - num).max(initial=0.0)
        if not err <= scale:
            raise AssertionError(f"check_grads (fwd, order {order}): jvp differs from central "
                                 f"differences by {err:.3e}\n jvp={od}\n fd ={num}")
    if "rev" in modes:
        out, vjp_fn = api.vjp(f, *unflat(x0))
        ct = vjp_fn(_shaped_like(u, out, out_mask))
        g = _grad_flat(ct, mask) if x0.size else np.zeros(0)
        lhs, rhs = float(g @ v), float(u @ num)
        tol = atol + rtol * max(np.abs(u).sum() * np.abs(num).max(initial=0.0), 1.0)
        if not abs(lhs - rhs) <= tol:
            raise AssertionError(f"check_grads (rev, order {order}): <J^T u, v> = {lhs!r} but "
                                 f"<u, J v> from central differences = {rhs!r}")
    if order > 1:
        if y0.size == 1 and x0.size:
            gf = lambda x: _grad_flat(  # noqa: E731
                api.grad(f, argnums=tuple(range(len(args))))(*unflat(x)), mask)
            hv_num = directional(gf, x0, v, h=h, order=4).value
            hv = api.hvp(lambda *a: f(*a), tuple(unflat(x0)), tuple(unflat(v)))
            hv = _grad_flat(hv if len(args) > 1 else (hv,), mask)
            hscale = atol + rtol * max(np.abs(hv_num).max(initial=0.0), 1.0)
            err = np.abs(hv - hv_num).max(initial=0.0)
            if not err <= 10 * hscale:
                raise AssertionError(f"check_grads (hvp): differs from differences of the gradient "
                                     f"by {err:.3e}\n hvp={hv}\n fd ={hv_num}")
        def vjp_of_f(*a):
            out, fn = api.vjp(f, *a)
            return fn(_shaped_like(u, out, out_mask))
        check_grads(vjp_of_f, *args, modes=modes, order=order - 1, rtol=rtol, atol=atol,
                    seed=seed + 1, h=h)
