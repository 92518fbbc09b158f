"""Derivative operators. One mechanism (``engine.traced.Traced``: trace f onto a tape, then sweep
it), many thin operators.
"""
import numpy as np

from .._core import sweeps

from ..tracing import pytree as _tree
from ..tracing.tracer import Tracer
from ..rules import base as rules, calls as _calls
from ..engine.traced import Traced, _finish_leaves, cast_leaves, with_dyn as _with_dyn
from ..rules import custom as _custom
from ..rules import complex as _cx
from ..errors import TapegradTypeError, TapegradValueError
from ..tracing.tracer import ComplexResult


# ====================================================================== public operators
def _traced_or_complex(f, args, kwargs, argnums, has_aux, fname, holomorphic, complex_path):
    """(the real recording, None), or (None, complex_path(holomorphic)) when holomorphic=True or
    the function takes or returns complex values (docs/complex.md)."""
    if holomorphic:
        return None, complex_path(True)
    try:
        return Traced(f, args, kwargs, argnums, has_aux, fname), None
    except ComplexResult:
        return None, complex_path(False)



def value_and_grad(f, argnums=0, has_aux=False, holomorphic=False):
    """Returns a function computing (f(*args), gradient of f with respect to args[argnums]).
    The value is float64; the gradient takes the inputs' float dtypes (float32 in, float32 out,
    computed in float64: see grad). Complex inputs: see grad and docs/complex.md."""
    def vg(*args, **kwargs):
        # the recording is followed by the reverse sweep: rules may keep for their adjoint
        # what their value computes anyway (calls.reverse_follows)
        with _calls.reverse_follows():
            return _vg(*args, **kwargs)

    def _vg(*args, **kwargs):
        tr, res = _traced_or_complex(f, args, kwargs, argnums, has_aux, "grad", holomorphic,
                                     lambda h: _complex_value_and_grad(f, args, kwargs, argnums,
                                                                       has_aux, h))
        if tr is None:
            return res
        if tr.nout != 1:
            if not tr.out_shapes:
                raise TapegradTypeError("grad: the function must return a scalar (size-1) output, got "
                                "no array (None or an empty container)")
            raise TapegradTypeError(f"grad: the function must return a scalar (size-1) output, got shape "
                            f"{tr.out_shapes[0] if len(tr.out_shapes) == 1 else tr.out_shapes}")
        g = tr.compiled_grad()
        if g is not None:
            g, v = g
            if type(tr.out_tree) is _tree.Leaf and not tr.out_shapes[0]:   # the usual output
                val = float(v) if tr.out_tree.scalar else np.float64(v)
            else:
                val = _value_tree(tr, tr.split_out(np.array([v])))
            g = _tree.unflatten(tr.in_tree, cast_leaves(g, tr.in_dtypes))
        else:
            g = tr.pullback([np.ones(tr.out_shapes[0])])
            g = _tree.unflatten(tr.in_tree, cast_leaves(_finish_leaves(g), tr.in_dtypes))
            val = _value_tree(tr, tr.output())
        return ((val, tr.aux) if has_aux else val), g
    vg.__name__ = f"value_and_grad({getattr(f, '__name__', 'f')})"
    vg.__doc__ = f"Value and gradient of {getattr(f, '__name__', 'f')}."
    return vg


def _value_tree(tr, out):
    val = _tree.unflatten(tr.out_tree, _finish_leaves(_tree.flatten(out)[0]))
    if isinstance(val, np.ndarray) and val.ndim == 0:
        val = val[()]
    return val


def grad(f, argnums=0, has_aux=False, holomorphic=False):
    """Returns a function computing the gradient of scalar f with respect to args[argnums].

    The gradient has the structure of the differentiated argument (pytrees of tuples, lists,
    dicts). With has_aux=True, f returns (output, aux) and the function returns (grad, aux).

    dtypes: tapegrad computes in float64. The derivative with respect to a float32 (float16,
    longdouble) input is given in that dtype (a NumPy float32 scalar for one), as autograd and
    JAX give it; integer inputs (Python ints, NumPy integer arrays) are promoted to float64 and
    get float64 derivatives (a Python float for a Python int or float); boolean inputs are
    refused with an error naming the argument. The same holds for every operator (vjp, jvp,
    hvp, jacobian, hessian) and for recorded tapes; jvp and jacobian results take NumPy's
    promotion of the inputs' dtypes (float32 when every differentiated input is).

    Complex inputs (autograd's and JAX's convention, docs/complex.md): for real f of complex
    z = x + iy the gradient is df/dx - i df/dy (complex64 in, complex64 out). A complex-valued
    f raises a TypeError unless holomorphic=True, which gives the complex derivative f'(z).
    jacobian, hessian, hvp and derivative take complex inputs by JAX's rules (see each), and
    ``record`` gives a ``ComplexRecorded`` for complex arguments or outputs.
    """
    vg = value_and_grad(f, argnums, has_aux, holomorphic)

    def g(*args, **kwargs):
        (v, g_) = vg(*args, **kwargs)
        return (g_, v[1]) if has_aux else g_
    g.__name__ = f"grad({getattr(f, '__name__', 'f')})"
    g.__doc__ = f"Gradient of {getattr(f, '__name__', 'f')}."
    return g


def vjp(f, *primals, has_aux=False):
    """(out, vjp_fn): vjp_fn(cotangent) returns a tuple with one cotangent per primal, each in
    its primal's float dtype (float32 for a float32 primal; computed in float64: see grad).
    Complex primals or outputs: the non-conjugated transpose (docs/complex.md)."""
    try:
        return _vjp(f, primals, has_aux)
    except ComplexResult:
        return _complex_vjp(f, primals, has_aux)


def _vjp(f, primals, has_aux):
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
    try:
        return _jvp(f, primals, tangents)
    except ComplexResult:
        return _complex_jvp(f, tuple(primals), tuple(tangents))


def _jvp(f, primals, tangents):
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
    primals' float dtypes (see grad). A complex primal z = x + iy (real f): the derivative of
    the gradient df/dx - i df/dy along the complex tangent, as jvp(grad(f)) gives it.
    """
    if not isinstance(primals, (tuple, list)) or not isinstance(tangents, (tuple, list)):
        raise TapegradTypeError("hvp: primals and tangents must be tuples (one entry per argument)")
    try:
        tr = Traced(f, tuple(primals), None, None, False, "hvp")
    except ComplexResult:
        return _complex_hvp(f, tuple(primals), tuple(tangents))
    tans = tr.flat_in(tuple(tangents), "hvp tangents")
    if tr.nested or any(type(t) is Tracer and t._rec.active for t in tans):
        # inside another operator: differentiate the gradient along the tangents
        _, res = jvp(grad(f, argnums=tuple(range(len(primals)))), tuple(primals), tuple(tangents))
        return res[0] if len(primals) == 1 else res
    if tr.nout != 1:
        raise TapegradTypeError(f"hvp: the function must return a scalar, got shape {tr.out_shapes}")
    V = _tree.join(tans)[None, :]
    # a tape that is one fused elementwise tail summed: one tiled pass over x and v, as a
    # recorded tape's hvp takes it (None: the four sweeps of the general path)
    hv = sweeps.hvp_fast(tr.tape, tr.recorded_x, np.ascontiguousarray(V[0], dtype=np.float64),
                         (tr.nin,))
    if hv is None:
        hv = tr.hvp_lanes(V)[0]
    res = _tree.unflatten(tr.in_tree, cast_leaves(tr._split_leaves(hv), tr.in_dtypes))
    return res[0] if len(primals) == 1 else res


def _single_array_fn(tr, fname):
    if len(tr.out_shapes) != 1:
        raise TapegradTypeError(f"{fname}: the function must return a single array")


def jacobian(f, argnums=0, mode="auto", holomorphic=False):
    """Jacobian of f with respect to args[argnums]: shape out.shape + in.shape.

    mode="fwd": one tangent sweep with one lane per input; "rev": one reverse sweep per output;
    "auto" picks forward when there are fewer inputs than outputs. The dtype is NumPy's
    promotion of the inputs' (float32 for float32 inputs; computed in float64: see grad).

    Complex values (JAX's jacfwd/jacrev rules, docs/complex.md): "rev" takes complex inputs of
    a real-valued f (each row is grad's df/dx - i df/dy); "fwd" takes real inputs of a
    complex-valued f (the pushforward of each real unit direction); holomorphic=True (complex
    inputs and a complex output) gives the complex Jacobian df_i/dz_j of a holomorphic f in
    either mode. Anything else raises a TypeError that says which of them fits.
    """
    if mode not in ("auto", "fwd", "rev"):
        raise TapegradValueError(f"jacobian: mode must be 'auto', 'fwd' or 'rev', got {mode!r}")

    def jac(*args, **kwargs):
        tr, res = _traced_or_complex(f, args, kwargs, argnums, False, "jacobian", holomorphic,
                                     lambda h: _complex_jacobian(f, args, kwargs, argnums, mode, h))
        if tr is None:
            return res
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


jacfwd = lambda f, argnums=0, holomorphic=False: jacobian(f, argnums, "fwd", holomorphic)  # noqa: E731
jacrev = lambda f, argnums=0, holomorphic=False: jacobian(f, argnums, "rev", holomorphic)  # noqa: E731


def hessian(f, argnums=0, holomorphic=False):
    """Dense Hessian of scalar f, from lane-batched Hessian-vector products (one sweep pair),
    in the input's float dtype (see grad).

    Complex inputs need holomorphic=True, as in JAX (hessian = jacfwd(jacrev), and jacfwd
    takes complex inputs only for a holomorphic f): then f is complex-valued and holomorphic
    and the result is its complex Hessian d^2 f / dz_i dz_j. For a real f of complex z use
    hvp (the derivative of the gradient df/dx - i df/dy along v), or the Hessian of the real
    function (x, y) -> f(x + iy)."""
    def hess(*args, **kwargs):
        if holomorphic:
            return _complex_hessian(f, args, kwargs, argnums)
        try:
            tr = Traced(f, args, kwargs, argnums, False, "hessian")
        except ComplexResult as e:
            raise TapegradTypeError(
                f"{str(e).split(';')[0]}; hessian takes complex inputs only with holomorphic=True (a holomorphic, "
                "complex-valued f, as in JAX); for a real f of complex z use hvp, or the Hessian "
                "of the real function (x, y) -> f(x + iy)") from None
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


def derivative(f, holomorphic=False):
    """df/dx for scalar-to-scalar f, by one dual-number (tangent) sweep.

    Complex values follow jacfwd's rules (docs/complex.md): a real x with a complex output
    gives the complex df/dx; a complex x needs holomorphic=True (and a complex output) and
    gives f'(z)."""
    def d(x, *args, **kwargs):
        if holomorphic:
            return _complex_derivative(f, x, args, kwargs, True)
        try:
            tr = Traced(f, (x,) + args, kwargs, 0, False, "derivative")
        except ComplexResult:
            return _complex_derivative(f, x, args, kwargs, False)
        if tr.nin != 1 or tr.nout != 1:
            raise TapegradTypeError("derivative: f must map a scalar to a scalar; use jacobian otherwise")
        r = _finish_leaves(tr.pushforward([np.ones(tr.in_shapes[0])]))[0]
        if isinstance(r, Tracer):
            return r
        return float(r) if tr.in_dtypes is None else cast_leaves([r], [(tr.in_dtypes[0][0], True)])[0]
    return d


# ====================================================================== complex values
# Complex inputs and outputs are split into (re, im) pairs of real leaves around f, so the real
# machinery differentiates a real function of real arguments; the convention (docs/complex.md)
# is applied here: a complex cotangent c pairs with a change dz as Re(c dz), so c = a + ib is
# the real cotangent (a, -b) of (re, im), and a real gradient (gx, gy) is the complex gx - i gy.
def _is_complex_leaf(x):
    return _cx.is_complex(x) or (type(x) is np.ndarray and x.dtype.kind == "c")


def _split(x):
    if type(x) is _cx.ComplexTracer:
        return (x.re, x.imag)
    if isinstance(x, (complex, np.complexfloating)) and not isinstance(x, np.ndarray):
        return (x.real, x.imag)
    a = np.asarray(x)
    return (a.real.copy(), a.imag.copy())


def _realify(tree):
    """(tree with complex leaves as (re, im) pairs, mask of the complex leaves, treedef)."""
    leaves, td = _tree.flatten(tree)
    mask = [_is_complex_leaf(l) for l in leaves]
    new = [_split(l) if m else l for l, m in zip(leaves, mask)]
    return _tree.unflatten(td, new), mask, td


def _join(rtree, mask, td, pair):
    """The inverse of _realify: pairs back to one leaf each, by pair(re, im)."""
    leaves, _ = _tree.flatten(rtree)
    it, out = iter(leaves), []
    for m in mask:
        out.append(pair(next(it), next(it)) if m else next(it))
    return _tree.unflatten(td, out)


def _complex_leaf(re, im):
    if type(re) is Tracer or type(im) is Tracer:
        return _cx.make(re, im)
    r = np.asarray(re) + 1j * np.asarray(im)
    return r[()] if np.ndim(r) == 0 and not isinstance(re, np.ndarray) else r


def _grad_leaf(gx, gy):
    """df/dx - i df/dy."""
    if type(gx) is Tracer or type(gy) is Tracer:
        return _cx.make(gx, -gy)
    r = np.asarray(gx) - 1j * np.asarray(gy)
    return r[()] if np.ndim(r) == 0 and not isinstance(gx, np.ndarray) else r


def _realified(f, primals, has_aux):
    """(g, realified primals, input mask/treedef, out holder): g takes the realified primals and
    returns f's output with complex leaves as (re, im) pairs."""
    rp, in_mask, in_td = _realify(tuple(primals))
    holder = {}

    def g(*rargs):
        res = f(*_join(rargs, in_mask, in_td, _cx.make))
        if has_aux:
            res, aux = res
        leaves, td = _tree.flatten(res)
        mask = [_is_complex_leaf(l) for l in leaves]
        holder["out"] = (mask, td)
        r = _tree.unflatten(td, [(_split(l)[0], _split(l)[1]) if m else l for l, m in zip(leaves, mask)])
        return (r, aux) if has_aux else r
    return g, rp, (in_mask, in_td), holder


def _complex_vjp(f, primals, has_aux):
    g, rp, (in_mask, in_td), holder = _realified(f, primals, has_aux)
    res = _vjp(g, rp, has_aux)
    out_r, fn_r = res[0], res[1]
    out_mask, out_td = holder["out"]
    out = _join(out_r, out_mask, out_td, _complex_leaf)

    def vjp_fn(ct):
        leaves, _ = _tree.flatten(ct)
        if len(leaves) != len(out_mask):
            raise TapegradValueError(f"vjp_fn: the cotangent has {len(leaves)} arrays, the output "
                                     f"{len(out_mask)}")
        new = []
        for c, m in zip(leaves, out_mask):
            if m:
                c = np.asarray(c) if type(c) is not _cx.ComplexTracer else c
                re, im = _split(c) if _is_complex_leaf(c) else (c, np.zeros(np.shape(c)))
                new.append((re, -im))
            else:
                if _is_complex_leaf(c):
                    raise TapegradTypeError("vjp_fn: a complex cotangent for a real output")
                new.append(c)
        gr = fn_r(_tree.unflatten(out_td, new))
        return _join(gr, in_mask, in_td, _grad_leaf)
    return (out, vjp_fn, res[2]) if has_aux else (out, vjp_fn)


def _split_tangents(tangents, in_mask, fname):
    """The tangent leaves as the real function of the pairs takes them: (re, im) for a complex
    primal (a real tangent has im 0), as they are for a real one (a complex tangent there is an
    error)."""
    t_leaves, _ = _tree.flatten(tangents)
    if len(t_leaves) != len(in_mask):
        raise TapegradValueError(f"{fname}: the tangents do not have the structure of the primals")
    new = []
    for t, m in zip(t_leaves, in_mask):
        if m:
            new.append(_split(t) if _is_complex_leaf(t)
                       else (t, np.zeros(np.shape(rules.value_of(t)))))
        elif _is_complex_leaf(t):
            raise TapegradTypeError(f"{fname}: a complex tangent for a real primal")
        else:
            new.append(t)
    return new


def _complex_jvp(f, primals, tangents):
    g, rp, (in_mask, in_td), holder = _realified(f, primals, False)
    out_r, dot_r = _jvp(g, rp, _tree.unflatten(in_td, _split_tangents(tangents, in_mask, "jvp")))
    out_mask, out_td = holder["out"]
    return (_join(out_r, out_mask, out_td, _complex_leaf), _join(dot_r, out_mask, out_td, _complex_leaf))


def _complex_value_and_grad(f, args, kwargs, argnums, has_aux, holomorphic):
    nums, single = _argnums(argnums, len(args), "grad")
    primals = tuple(args[i] for i in nums)

    def h(*dyn):
        new = list(args)
        for i, d in zip(nums, dyn):
            new[i] = d
        return f(*new, **kwargs)
    if holomorphic and not all(_is_complex_leaf(l) for l in _tree.flatten(primals)[0]):
        raise TapegradTypeError("grad(holomorphic=True): the differentiated inputs must be complex "
                                "(as in JAX); give z + 0j for a real point")
    res = _complex_vjp(h, primals, has_aux)
    out, vjp_fn = res[0], res[1]
    leaves, td = _tree.flatten(out)
    if len(leaves) != 1 or np.size(rules.value_of(leaves[0]) if type(leaves[0]) is not _cx.ComplexTracer
                                    else leaves[0].re) != 1:
        raise TapegradTypeError("grad: the function must return a scalar (size-1) output")
    o = leaves[0]
    is_c = _is_complex_leaf(o)
    if is_c and not holomorphic:
        raise TapegradTypeError("grad: the function returned a complex value; grad takes "
                                "real-valued functions (use holomorphic=True for the complex "
                                "derivative of a holomorphic function, or take np.abs / np.real)")
    if holomorphic and not is_c:
        raise TapegradTypeError("grad(holomorphic=True): the function must return a complex value")
    shape = np.shape(o.re) if type(o) is _cx.ComplexTracer else np.shape(rules.value_of(o))
    ct = _tree.unflatten(td, [np.ones(shape) + (0j if is_c else 0.0)])
    gs = vjp_fn(ct)
    g = gs[0] if single else tuple(gs)
    val = o
    if type(val) is np.ndarray and val.ndim == 0:
        val = val[()]
    return ((val, res[2]) if has_aux else val), g


def _out_leaf(out, fname):
    leaves, _ = _tree.flatten(out)
    if len(leaves) != 1:
        raise TapegradTypeError(f"{fname}: the function must return a single array")
    return leaves[0]


def _complex_dtype(*leaves):
    """complex64 when every (complex or real) leaf is complex64 or float32, else complex128."""
    ds = [l.dtype for l in leaves if isinstance(l, (np.ndarray, np.generic))]
    if ds and all(d in (np.complex64, np.float32) for d in ds) and len(ds) == len(leaves):
        return np.complex64
    return np.complex128


def _cast_complex(J, dtype):
    if type(J) is np.ndarray and J.dtype != dtype:
        return J.astype(dtype)
    return J


def _complex_jacobian(f, args, kwargs, argnums, mode, holomorphic):
    """jacobian with complex inputs or output (JAX's jacfwd/jacrev rules). f is differentiated
    as the real function of the (re, im) pairs of its complex inputs, its complex output
    stacked as (re, im); with Jr that real Jacobian, Jx and Jy its blocks for x and y of z:
    - rev, real output: each row is grad's df/dx - i df/dy, so J = Jx - i Jy;
    - fwd, real inputs, complex output w = u + iv: the pushforward of each unit direction,
      J = du/dx + i dv/dx;
    - holomorphic=True: the complex Jacobian f'(z) = du/dx + i dv/dx (fwd), which by the
      Cauchy-Riemann equations (dv/dx = -du/dy) is also du/dx - i du/dy (rev: the rows of
      the non-conjugated vjp)."""
    nums, single = _argnums(argnums, len(args), "jacobian")
    dyn = args[nums[0]] if single else tuple(args[i] for i in nums)
    rdyn, in_mask, in_td = _realify(dyn)
    in_leaves = _tree.flatten(dyn)[0]
    _check_complex_inputs(in_mask, mode, holomorphic)
    holder = {}

    def h(rd):
        o = _out_leaf(f(*_with_dyn(args, nums, single, _join(rd, in_mask, in_td, _cx.make)), **kwargs),
                      "jacobian")
        c = holder["c"] = _is_complex_leaf(o)
        _check_complex_output(c, in_mask, mode, holomorphic)
        if not c:
            return o
        re, im = _split(o)
        return rules.stack([re, im])
    m = _complex_jacobian_mode(in_mask, mode, holomorphic)
    Jr = jacobian(h, 0, m)(rdyn)
    dtype = _complex_dtype(*in_leaves)
    out = [_complex_jacobian_block(J, mk, holder["c"], m == "rev", dtype)
           for J, mk in zip(_pairs(Jr, in_mask), in_mask)]
    return _tree.unflatten(in_td, out)


def _check_complex_inputs(in_mask, mode, holomorphic):
    if holomorphic and not all(in_mask):
        raise TapegradTypeError("jacobian(holomorphic=True): the differentiated inputs must be "
                                "complex (as in JAX); give z + 0j for a real point")
    if not holomorphic and any(in_mask) and mode == "fwd":
        raise TapegradTypeError("jacobian(mode='fwd') takes real inputs (as JAX's jacfwd); for "
                                "complex inputs pass holomorphic=True (a holomorphic f), use "
                                "mode='rev' (a real-valued f) or jvp directly")


def _check_complex_output(c, in_mask, mode, holomorphic):
    if holomorphic and not c:
        raise TapegradTypeError("jacobian(holomorphic=True): the function must return a "
                                "complex value (as in JAX)")
    if not holomorphic and c and (any(in_mask) or mode == "rev"):
        raise TapegradTypeError("jacobian: the function returned a complex value; mode='rev' "
                                "(as JAX's jacrev) and complex inputs take real-valued "
                                "functions: pass holomorphic=True for a holomorphic f, use "
                                "mode='fwd' for real inputs, or vjp directly")


def _complex_jacobian_mode(in_mask, mode, holomorphic):
    """The real sweep's mode: auto without holomorphic is the one mode that fits."""
    if mode == "auto" and not holomorphic:
        return "rev" if any(in_mask) else "fwd"
    return mode


def _complex_jacobian_block(J, mk, c, rev, dtype):
    """One input leaf's complex Jacobian from its real blocks: (Jx, Jy) for a complex leaf
    (else J), each with a leading axis of 2 (the output's re, im) when the output is complex."""
    if mk:
        Jx, Jy = J
        if not c:
            J = _grad_leaf(Jx, Jy)
        elif rev:
            J = _grad_leaf(Jx[0], Jy[0])
        else:
            J = _complex_leaf(Jx[0], Jx[1])
    elif c:
        J = _complex_leaf(J[0], J[1])
    return _cast_complex(J, dtype) if (mk or c) else J


def _pairs(rtree, mask):
    """The leaves of a realified tree, a complex leaf's two parts as one (re, im) entry."""
    leaves, _ = _tree.flatten(rtree)
    it, out = iter(leaves), []
    for m in mask:
        out.append((next(it), next(it)) if m else next(it))
    return out


def _complex_hessian(f, args, kwargs, argnums):
    """The complex Hessian d^2 f / dz_i dz_j of a holomorphic f = u + iv of one complex array
    z = x + iy. f'' = d/dx (du/dx - i du/dy) (the Cauchy-Riemann equations), so with H the
    real Hessian of u over (x, y), column j of f'' is the x rows minus i the y rows of
    H (e_j, 0): n hvp lanes on one tape. Inside another operator: jacfwd(jacrev), as JAX."""
    nums, single = _argnums(argnums, len(args), "hessian")
    if not single:
        raise TapegradTypeError("hessian: differentiate with respect to a single array argument")
    z = args[nums[0]]
    if not _is_complex_leaf(z):
        raise TapegradTypeError("hessian(holomorphic=True): the differentiated input must be "
                                "complex (as in JAX); give z + 0j for a real point")
    re, im = _split(z)
    if type(re) is Tracer or type(im) is Tracer:
        return jacobian(grad(f, argnums, holomorphic=True), argnums, "fwd", True)(*args, **kwargs)
    s = np.shape(re)

    def h(p):
        o = _out_leaf(f(*_with_dyn(args, nums, True, _cx.make(p[0], p[1])), **kwargs), "hessian")
        if not _is_complex_leaf(o):
            raise TapegradTypeError("hessian(holomorphic=True): the function must return a "
                                    "complex value (as in JAX)")
        return _split(o)[0]
    tr = Traced(h, (np.stack([np.asarray(re, dtype=np.float64), np.asarray(im, dtype=np.float64)]),),
                None, 0, False, "hessian")
    if tr.nested:
        return jacobian(grad(f, argnums, holomorphic=True), argnums, "fwd", True)(*args, **kwargs)
    if tr.nout != 1:
        raise TapegradTypeError("hessian: the function must return a scalar")
    n = tr.nin // 2
    V = np.zeros((n, 2 * n))
    V[np.arange(n), np.arange(n)] = 1.0
    HV = tr.hvp_lanes(V)            # lane j: H (e_j, 0) = (d^2u/dx dx_j, d^2u/dy dx_j)
    H = (HV[:, :n] - 1j * HV[:, n:]).T.reshape(s + s).copy()
    return H.astype(_complex_dtype(z))


def _complex_hvp(f, primals, tangents):
    """hvp of a real f with complex primals: the real hvp of the function of the (re, im)
    pairs along the pairs of the tangents, read back as df/dx - i df/dy is (docs/complex.md)."""
    g, rp, (in_mask, in_td), holder = _realified(f, primals, False)

    def g2(*a):
        r = g(*a)
        if any(holder["out"][0]):
            raise TapegradTypeError("hvp: the function returned a complex value; hvp takes "
                                    "real-valued functions")
        return r
    res = hvp(g2, rp, _tree.unflatten(in_td, _split_tangents(tangents, in_mask, "hvp")))
    res = _join((res,) if len(primals) == 1 else tuple(res), in_mask, in_td, _grad_leaf)
    return res[0] if len(primals) == 1 else res


def _complex_derivative(f, x, args, kwargs, holomorphic):
    """derivative with a complex x or output, by the pushforward along 1 (jacfwd's rules)."""
    cx = _is_complex_leaf(x)
    if cx and not holomorphic:
        raise TapegradTypeError("derivative: x is complex; derivative (forward mode, as JAX's "
                                "jacfwd) takes a complex x only with holomorphic=True (a "
                                "holomorphic f); use jvp for the change along a direction")
    if holomorphic and not cx:
        raise TapegradTypeError("derivative(holomorphic=True): x must be complex (as in JAX); "
                                "give z + 0j for a real point")
    if np.size(rules.value_of(_split(x)[0]) if cx else rules.value_of(x)) != 1:
        raise TapegradTypeError("derivative: f must map a scalar to a scalar; use jacobian otherwise")
    out, t = jvp(lambda z: f(z, *args, **kwargs), (x,), (np.ones(np.shape(rules.value_of(
        _split(x)[0] if cx else x))),))
    o = _out_leaf(out, "derivative")
    if holomorphic and not _is_complex_leaf(o):
        raise TapegradTypeError("derivative(holomorphic=True): the function must return a "
                                "complex value (as in JAX)")
    if np.size(o.re if type(o) is _cx.ComplexTracer else rules.value_of(o)) != 1:
        raise TapegradTypeError("derivative: f must map a scalar to a scalar; use jacobian otherwise")
    t = _tree.flatten(t)[0][0]
    if type(t) in (Tracer, _cx.ComplexTracer):
        return t
    dt = _complex_dtype(x) if isinstance(x, (np.ndarray, np.generic)) else np.complex128
    if not _is_complex_leaf(t):
        return t
    t = np.asarray(t).reshape(())
    return complex(t) if not isinstance(x, (np.ndarray, np.generic)) else dt(t)


from ..engine.traced import _argnums  # noqa: E402


_calls.install_jvp(jvp)   # the tangent of a Python rule's adjoint (see rules/calls.py)
_custom.install_operators(jvp=jvp, vjp=vjp)   # custom rules transpose with these (rules/custom.py)
