"""Every operation of issues 2 and 3 against central differences, table-driven.

One row per case: (name, function, generator of arguments inside the op's domain, indices of
arguments that are closed-over constants instead of traced inputs). Each row goes through
``check_grads(f, *args, modes=("fwd", "rev"), order=2)`` as written, and a second time through
a scalar wrapper ``sum(w * sin(f))`` so that hvp (tangent-of-reverse on the compiled tape) is
checked against differences of gradients for every op, not only the scalar-valued ones; the
dense Hessian (n lanes) is checked against jacobian(grad) and the single-lane hvp.

Ties of max/min/maximum/minimum/clip are kinks: the FD rows keep inputs away from them, and
``test_ties_split_evenly`` checks the documented convention (ties split evenly, as autograd
and JAX) with closed forms.
"""
import numpy as np
import pytest
import scipy.special as sps

import tapegrad as tg


# ------------------------------------------------------------------ domains
def N(*shape):
    return lambda r: r.standard_normal(shape)


def U(lo, hi, *shape):
    return lambda r: r.uniform(lo, hi, shape)


def away(lo, hi, *shape):
    """Uniform magnitudes in [lo, hi] with random signs (away from 0)."""
    return lambda r: r.uniform(lo, hi, shape) * r.choice([-1.0, 1.0], shape)


def distinct(*shape):
    """Values at least 0.08 apart from each other (no ties, and no tie within an FD step)."""
    def g(r):
        n = int(np.prod(shape))
        return ((r.permutation(n) - n / 2) * 0.1 + r.uniform(-0.01, 0.01, n)).reshape(shape)
    return g


def grid(offset, *shape):
    """Two of these with offsets 0 and 0.1 never come closer than 0.06 (maximum/minimum)."""
    return lambda r: 0.2 * r.integers(-5, 6, shape) + offset + r.uniform(-0.02, 0.02, shape)


def args(*gens):
    return lambda r: tuple(g(r) for g in gens)


ROWS = []


def row(name, fn, gen, const=()):
    ROWS.append(pytest.param(fn, gen, tuple(const), id=name))


# ------------------------------------------------------------------ unary
UNARY = [
    ("neg", np.negative, N(3, 2)), ("neg_op", lambda x: -x, N(4)),
    ("abs", np.abs, away(0.2, 2, 3, 2)), ("abs_builtin", abs, away(0.2, 2, 5)),
    ("absolute", np.absolute, away(0.2, 2, 5)),
    ("exp", np.exp, N(3, 2)), ("log", np.log, U(0.3, 3, 3, 2)),
    ("log1p", np.log1p, U(-0.5, 2, 5)), ("expm1", np.expm1, N(5)),
    ("sqrt", np.sqrt, U(0.3, 3, 5)), ("square", np.square, N(5)),
    ("reciprocal", np.reciprocal, away(0.4, 2, 5)),
    ("sin", np.sin, N(5)), ("cos", np.cos, N(5)), ("tan", np.tan, U(-1.2, 1.2, 5)),
    ("arcsin", np.arcsin, U(-0.8, 0.8, 5)), ("arccos", np.arccos, U(-0.8, 0.8, 5)),
    ("arctan", np.arctan, N(5)), ("sinh", np.sinh, N(5)), ("cosh", np.cosh, N(5)),
    ("tanh", np.tanh, N(5)), ("arcsinh", np.arcsinh, N(5)),
    ("arccosh", np.arccosh, U(1.3, 3, 5)), ("arctanh", np.arctanh, U(-0.8, 0.8, 5)),
    ("exp2", np.exp2, N(5)), ("log2", np.log2, U(0.3, 3, 5)),
    ("log10", np.log10, U(0.3, 3, 5)), ("cbrt", np.cbrt, away(0.3, 2, 5)),
    ("expit", sps.expit, N(5)), ("erf", sps.erf, N(5)), ("erfc", sps.erfc, N(5)),
    ("logit", sps.logit, U(0.1, 0.9, 5)),
]
for _name, _f, _g in UNARY:
    row(_name, _f, args(_g))
    row(_name + "_scalar", _f, args(lambda r, g=_g: g(r).ravel()[0]))


# ------------------------------------------------------------------ binary with broadcasting
def _pos(*s):
    return U(0.5, 2.0, *s)


BINARY = {  # name: (function, domain of a, domain of b)
    "add": (lambda a, b: a + b, N, N),
    "sub": (lambda a, b: a - b, N, N),
    "mul": (lambda a, b: a * b, N, N),
    "div": (lambda a, b: a / b, N, lambda *s: away(0.5, 2.0, *s)),
    "pow": (lambda a, b: a ** b, _pos, lambda *s: U(-1.5, 2.5, *s)),
    "np.add": (np.add, N, N),
    "np.subtract": (np.subtract, N, N),
    "np.multiply": (np.multiply, N, N),
    "np.divide": (np.divide, N, lambda *s: away(0.5, 2.0, *s)),
    "np.power": (np.power, _pos, lambda *s: U(-1.5, 2.5, *s)),
    "maximum": (np.maximum, lambda *s: grid(0.0, *s), lambda *s: grid(0.1, *s)),
    "minimum": (np.minimum, lambda *s: grid(0.0, *s), lambda *s: grid(0.1, *s)),
    "arctan2": (np.arctan2, lambda *s: away(0.3, 2, *s), lambda *s: away(0.3, 2, *s)),
    "hypot": (np.hypot, lambda *s: away(0.3, 2, *s), lambda *s: away(0.3, 2, *s)),
    "logaddexp": (np.logaddexp, N, N),
}
SHAPES = [((), ()), ((), (3,)), ((3,), ()), ((3,), (3,)), ((4,), (3, 4)), ((3, 4), (4,)),
          ((3, 1), (1, 4)), ((2, 1, 3), (2, 4, 3)), ((2, 4, 3), (2, 1, 3)), ((3, 1), (3, 4))]
for _name, (_f, _da, _db) in BINARY.items():
    for _sa, _sb in SHAPES:
        _tag = f"{_name}[{_sa}-{_sb}]"
        _gen = args(_da(*_sa), _db(*_sb))
        row(_tag, _f, _gen)
        if len(_sa) <= 1 and len(_sb) <= 1 or (_sa, _sb) in (((4,), (3, 4)), ((3, 1), (1, 4))):
            row(_tag + "-const_a", _f, _gen, const=(0,))
            row(_tag + "-const_b", _f, _gen, const=(1,))

# Python-number constants on either side, and integer exponents
for _name, _f, _g in [
    ("x+2", lambda x: x + 2.0, N(4)), ("2+x", lambda x: 2.0 + x, N(4)),
    ("x-2", lambda x: x - 2.0, N(4)), ("2-x", lambda x: 2.0 - x, N(4)),
    ("x*3", lambda x: x * 3.0, N(4)), ("3*x", lambda x: 3 * x, N(4)),
    ("x/3", lambda x: x / 3.0, N(4)), ("3/x", lambda x: 3.0 / x, away(0.5, 2, 4)),
    ("x**2", lambda x: x ** 2, N(4)), ("x**3", lambda x: x ** 3, N(4)),
    ("x**0.5", lambda x: x ** 0.5, U(0.3, 2, 4)), ("x**-1.5", lambda x: x ** -1.5, U(0.3, 2, 4)),
    ("x**0", lambda x: x ** 0, N(4)), ("x**1", lambda x: x ** 1, N(4)),
    ("2**x", lambda x: 2.0 ** x, N(4)), ("0.5**x", lambda x: 0.5 ** x, N(4)),
    ("np.power(x,2)", lambda x: np.power(x, 2), N(4)),
    ("np.power(2,x)", lambda x: np.power(2.0, x), N(4)),
    ("maximum(x,0)", lambda x: np.maximum(x, 0.0), away(0.2, 2, 6)),
    ("minimum(0,x)", lambda x: np.minimum(0.0, x), away(0.2, 2, 6)),
    ("int_array*x", lambda x: np.arange(4) * x, N(4)),
]:
    row(_name, _f, args(_g))


# ------------------------------------------------------------------ where, clip
row("where_const_cond", lambda x, y: np.where(np.array([True, False, True]), x, y), args(N(3), N(3)))
row("where_traced_cond", lambda x, y: np.where(x > y, x * y, y - x), args(grid(0, 4), grid(0.1, 4)))
row("where_bcast", lambda x, y: np.where(x > 0, x, y), args(away(0.2, 2, 3, 1), N(1, 4)))
row("where_bcast_cond", lambda x, y: np.where(np.array([True, False, True, False]), x, y),
    args(N(3, 1), N(3, 4)))
row("where_scalar_branch", lambda x: np.where(x > 0, x, 0.0), args(away(0.2, 2, 5)))
row("where_scalar_branch_left", lambda x: np.where(x > 0, 1.0, x ** 2), args(away(0.2, 2, 5)))
row("where_const_branch", lambda x, y: np.where(x > 0, y, x), args(away(0.2, 2, 2, 3), N(2, 3)),
    const=(1,))
row("clip", lambda x: np.clip(x, -0.5, 0.5), args(grid(0.1, 6)))
row("clip_method", lambda x: x.clip(-0.3, None), args(grid(0.1, 6)))
row("clip_traced_bounds", lambda x, lo, hi: np.clip(x, lo, hi),
    args(grid(0.0, 3, 4), grid(0.1, 4) , lambda r: grid(0.1, 3, 1)(r) + 0.4))

# ------------------------------------------------------------------ reductions
_AXES = [None, 0, 1, -1, (0, 2), (-1, 0), (1, 2), (), (0, 1, 2)]  # () was an IndexError
for _red, _fn, _dom in [("sum", np.sum, N), ("mean", np.mean, N), ("prod", np.prod, lambda *s: away(0.5, 1.5, *s)),
                        ("max", np.max, distinct), ("min", np.min, distinct),
                        ("amax", np.amax, distinct), ("amin", np.amin, distinct)]:
    for _ax in _AXES:
        for _kd in (False, True):
            row(f"{_red}[axis={_ax},keepdims={_kd}]",
                lambda x, f=_fn, ax=_ax, kd=_kd: f(x, axis=ax, keepdims=kd), args(_dom(2, 3, 4)))
    row(f"{_red}_1d", _fn, args(_dom(5)))
    row(f"{_red}_0d", _fn, args(_dom()))
for _m in ("sum", "mean", "prod", "max", "min"):
    row(f"method_{_m}", lambda x, m=_m: getattr(x, m)(axis=1), args(away(0.5, 1.5, 3, 4) if _m == "prod"
                                                                  else distinct(3, 4)))
row("prod_with_zero", lambda x: np.prod(x * np.array([1.0, 0.0, 1.0])), args(N(3)))
row("prod_axis_with_zero", lambda x: np.prod(x * np.array([[1.0, 0.0, 1.0]]), axis=1), args(N(2, 3)))
for _ax in (None, 0, -1, (0, 1)):
    for _kd in (False, True):
        row(f"var[axis={_ax},keepdims={_kd}]", lambda x, ax=_ax, kd=_kd: np.var(x, axis=ax, keepdims=kd),
            args(N(3, 4)))
        row(f"std[axis={_ax},keepdims={_kd}]", lambda x, ax=_ax, kd=_kd: np.std(x, axis=ax, keepdims=kd),
            args(N(3, 4)))
row("var_ddof1", lambda x: np.var(x, ddof=1), args(N(5)))
row("std_ddof1_method", lambda x: x.std(axis=0, ddof=1), args(N(4, 3)))
row("maximum.reduce", lambda x: np.maximum.reduce(x, axis=1), args(distinct(3, 4)))
row("add.reduce", lambda x: np.add.reduce(x, axis=0), args(N(3, 4)))

# ------------------------------------------------------------------ products
_PROD_SHAPES = [((4,), (4,)), ((3, 4), (4,)), ((4,), (4, 2)), ((3, 4), (4, 2)),
                ((2, 3, 4), (2, 4, 5)), ((2, 3, 4), (4, 5)), ((3, 4), (2, 4, 5)),
                ((2, 1, 3, 4), (1, 5, 4, 2)), ((2, 3, 4), (4,)), ((4,), (2, 4, 3))]
for _sa, _sb in _PROD_SHAPES:
    _gen = args(N(*_sa), N(*_sb))
    row(f"matmul[{_sa}@{_sb}]", np.matmul, _gen)
    row(f"@[{_sa}@{_sb}]", lambda a, b: a @ b, _gen)
    row(f"@[{_sa}@{_sb}]-const_a", lambda a, b: a @ b, _gen, const=(0,))
    row(f"@[{_sa}@{_sb}]-const_b", lambda a, b: a @ b, _gen, const=(1,))
for _sa, _sb in [((4,), (4,)), ((3, 4), (4,)), ((4,), (4, 2)), ((3, 4), (4, 2)), ((2, 3, 4), (4, 2)),
                 ((2, 3, 4), (5, 4, 2)), ((), (3,)), ((3, 2), ())]:
    _gen = args(N(*_sa), N(*_sb))
    row(f"dot[{_sa},{_sb}]", np.dot, _gen)
    row(f"dot[{_sa},{_sb}]-const_b", np.dot, _gen, const=(1,))
row("dot_method", lambda a, b: a.dot(b), args(N(3, 4), N(4)))
row("outer", np.outer, args(N(3), N(4)))
row("outer_const", np.outer, args(N(3), N(4)), const=(0,))
row("outer_2d_flattens", np.outer, args(N(2, 2), N(3)))
row("tensordot_1", lambda a, b: np.tensordot(a, b, axes=1), args(N(2, 3), N(3, 4)))
row("tensordot_2", lambda a, b: np.tensordot(a, b, axes=2), args(N(2, 3, 4), N(3, 4, 2)))
row("tensordot_0", lambda a, b: np.tensordot(a, b, axes=0), args(N(2), N(3)))
row("tensordot_pairs", lambda a, b: np.tensordot(a, b, axes=([1, 0], [0, 2])), args(N(3, 4, 2), N(4, 5, 3)))
row("tensordot_const", lambda a, b: np.tensordot(a, b, axes=([0], [1])), args(N(3, 2), N(4, 3)), const=(1,))

# ------------------------------------------------------------------ shapes (composed with a
# nonlinearity on both sides so second derivatives flow through the data movement)
def shaped(op):
    return lambda x: np.sin(op(x * x + x))


for _name, _op, _s in [
    ("transpose", np.transpose, (2, 3, 4)), ("transpose_axes", lambda x: np.transpose(x, (1, 2, 0)), (2, 3, 4)),
    ("transpose_method", lambda x: x.transpose(2, 0, 1), (2, 3, 4)), (".T", lambda x: x.T, (3, 4)),
    ("swapaxes", lambda x: np.swapaxes(x, 0, -1), (2, 3, 4)),
    ("swapaxes_method", lambda x: x.swapaxes(1, 2), (2, 3, 4)),
    ("moveaxis", lambda x: np.moveaxis(x, 0, -1), (2, 3, 4)),
    ("moveaxis_multi", lambda x: np.moveaxis(x, [0, 1], [-1, 0]), (2, 3, 4)),
    ("reshape", lambda x: np.reshape(x, (4, 6)), (2, 3, 4)),
    ("reshape_method", lambda x: x.reshape(6, -1), (2, 3, 4)),
    ("reshape_tuple", lambda x: x.reshape((3, 8)), (2, 3, 4)),
    ("reshape_F", lambda x: np.reshape(x, (4, 6), order="F"), (2, 3, 4)),
    ("ravel", np.ravel, (2, 3, 4)), ("ravel_method", lambda x: x.ravel(), (3, 4)),
    ("flatten", lambda x: x.flatten(), (3, 4)),
    ("squeeze", np.squeeze, (1, 3, 1, 4)), ("squeeze_axis", lambda x: np.squeeze(x, axis=2), (1, 3, 1, 4)),
    ("squeeze_method", lambda x: x.squeeze(0), (1, 3, 4)),
    ("expand_dims", lambda x: np.expand_dims(x, 1), (3, 4)),
    ("expand_dims_neg", lambda x: np.expand_dims(x, -1), (3, 4)),
    ("expand_dims_tuple", lambda x: np.expand_dims(x, (0, 2)), (3, 4)),
    ("broadcast_to", lambda x: np.broadcast_to(x, (2, 3, 4)), (3, 1)),
    ("atleast_2d", np.atleast_2d, (4,)),
]:
    row(_name, shaped(_op), args(N(*_s)))

row("concatenate0", lambda a, b: np.concatenate([a, b]), args(N(2, 3), N(4, 3)))
row("concatenate0_const", lambda a, b: np.concatenate([a, b, a * b[:2]], axis=0), args(N(2, 3), N(4, 3)),
    const=(1,))
row("concatenate1", lambda a, b: np.concatenate([a, b], axis=1), args(N(2, 3), N(2, 5)))
row("concatenate1_const", lambda a, b: np.concatenate((np.sin(a), b), axis=1), args(N(2, 3), N(2, 5)),
    const=(0,))
row("concatenate-1_3d", lambda a, b: np.concatenate([a, b], axis=-1), args(N(2, 3, 1), N(2, 3, 2)))
row("concatenate_scalars1d", lambda a, b: np.concatenate([a, b, np.ones(2)]), args(N(3), N(1)))
row("stack0", lambda a, b: np.stack([a, b]), args(N(2, 3), N(2, 3)))
row("stack-1", lambda a, b: np.stack([a, b], axis=-1), args(N(2, 3), N(2, 3)))
row("stack-1_const", lambda a, b: np.stack([a, b, a * b], axis=-1), args(N(2, 3), N(2, 3)), const=(1,))
row("stack_scalars", lambda x: np.stack([x[0] * x[1], np.sin(x[2]), 3.0 * x[0]]), args(N(3)))
row("stack1_of_1d", lambda a, b: np.stack((a, b), axis=1), args(N(4), N(4)))

# ------------------------------------------------------------------ indexing
_IDX = [
    ("int", lambda x: x[1]), ("neg_int", lambda x: x[-1]), ("int_int", lambda x: x[1, 2]),
    ("slice", lambda x: x[1:3]), ("slice_step", lambda x: x[::2]), ("neg_step", lambda x: x[::-1]),
    ("neg_step2", lambda x: x[3:0:-2]), ("col", lambda x: x[:, 1]), ("col_neg_step", lambda x: x[:, ::-1]),
    ("row_neg_step", lambda x: x[-2, ::-2]), ("ellipsis", lambda x: x[..., 0]),
    ("None", lambda x: x[None]), ("None_mid", lambda x: x[:, None, 1:]),
    ("int_array", lambda x: x[np.array([0, 2, 2, 3])]), ("int_list", lambda x: x[[3, 0, 0]]),
    ("int_array_2d", lambda x: x[np.array([[0, 1], [3, 0]])]),
    ("int_array_cols", lambda x: x[:, [0, 2, 2]]), ("int_arrays_pair", lambda x: x[[0, 1, 3], [2, 2, 0]]),
    ("neg_int_array", lambda x: x[np.array([-1, -4])]),
    ("bool_mask", lambda x: x[np.array([True, False, True, True])]),
    ("traced_mask", lambda x: x[x > 0]),
    ("traced_mask_rows", lambda x: x[x[:, 0] > 0]),
]
for _name, _op in _IDX:
    row("index_" + _name, shaped(_op), args(away(0.1, 2, 4, 3)))
row("index_scalar_of_1d", lambda x: x[2] * x[0] ** 2, args(N(4)))
row("index_then_assemble", lambda x: np.stack([x[0] - x[1], x[1] * x[2], x[2] ** 2]), args(N(3)))


# ------------------------------------------------------------------ the test
def _scalarize(f, out):
    """sum(w * sin(f)), a scalar function with generic second derivatives."""
    w = np.random.default_rng(7).uniform(0.5, 1.5, np.shape(out))
    return lambda *a: np.sum(w * np.sin(f(*a)))


@pytest.mark.parametrize("fn, gen, const", ROWS)
def test_op(fn, gen, const, rng):
    vals = gen(rng)
    consts = {i: (float(v) if np.ndim(v) == 0 else v) for i, v in enumerate(vals) if i in const}
    traced = [v for i, v in enumerate(vals) if i not in const]
    n = len(vals)

    def f(*t):
        it = iter(t)
        return fn(*[consts[i] if i in consts else next(it) for i in range(n)])

    out = f(*traced)
    tg.check_grads(f, *traced, modes=("fwd", "rev"), order=2)
    g = _scalarize(f, out)
    tg.check_grads(g, *traced, modes=("fwd", "rev"), order=2)

    # the dense Hessian (one tangent-of-reverse sweep with n lanes) against the Jacobian of the
    # gradient (reference reverse sweep recorded on tracers) and against the single-lane hvp
    shapes = [np.shape(t) for t in traced]
    ends = np.cumsum([int(np.prod(s)) for s in shapes])
    gv = lambda x: g(*[x[e - int(np.prod(s)):e].reshape(s) for e, s in zip(ends, shapes)])  # noqa: E731
    x0 = np.concatenate([np.ravel(t) for t in traced])
    H = tg.hessian(gv)(x0)
    J = tg.jacobian(tg.grad(gv))(x0)
    v = rng.standard_normal(x0.size)
    scale = max(1.0, np.abs(J).max())
    np.testing.assert_allclose(H, J, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(H @ v, tg.hvp(gv, (x0,), (v,)), rtol=0, atol=1e-10 * scale * np.abs(v).sum())


def test_table_covers_issue_2_and_3_ops():
    names = " ".join(p.id for p in ROWS)
    for op in ["neg", "abs", "exp", "log", "log1p", "expm1", "sqrt", "square", "reciprocal", "sin",
               "cos", "tan", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "arcsinh", "arccosh",
               "arctanh", "exp2", "log2", "log10", "cbrt", "expit", "erf", "erfc", "logit", "maximum",
               "minimum", "where", "clip", "sum", "mean", "prod", "max", "min", "dot", "matmul", "@",
               "outer", "tensordot", "transpose", ".T", "swapaxes", "moveaxis", "reshape", "ravel",
               "squeeze", "expand_dims", "concatenate0", "concatenate1", "stack0", "stack-1",
               "index_int", "index_slice", "index_neg_step", "index_None", "index_int_array",
               "index_bool_mask", "var", "std", "arctan2", "hypot", "logaddexp", "pow", "add", "sub",
               "mul", "div"]:
        assert op in names, op
    assert len(ROWS) > 300


# ------------------------------------------------------------------ kinks: documented conventions
def test_ties_split_evenly():
    x = np.array([1.0, 3.0, 3.0, 2.0])
    # reductions: the gradient is shared evenly among the tied maximisers / minimisers
    np.testing.assert_array_equal(tg.grad(np.max)(x), [0, 0.5, 0.5, 0])
    np.testing.assert_array_equal(tg.grad(np.min)(np.array([2.0, 1.0, 1.0, 1.0])), [0, 1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_array_equal(tg.grad(lambda x: np.sum(np.max(x, axis=0)))(np.array([[1.0, 5.0], [1.0, 2.0]])),
                                  [[0.5, 1.0], [0.5, 0.0]])
    # forward mode: the tangent is the average of the tied tangents
    _, d = tg.jvp(np.max, (x,), (np.array([10.0, 1.0, 3.0, 7.0]),))
    assert d == 2.0
    # elementwise maximum/minimum at a tie: half to each side
    for op in (np.maximum, np.minimum):
        ga, gb = tg.grad(lambda a, b: op(a, b), argnums=(0, 1))(2.0, 2.0)
        assert (ga, gb) == (0.5, 0.5)
        _, d = tg.jvp(op, (2.0, 2.0), (1.0, 3.0))
        assert d == 2.0
    # maximum(x, x) == x has derivative 1 (0.5 + 0.5)
    assert tg.grad(lambda a: np.maximum(a, a))(1.5) == 1.0
    # clip at its bounds is a tie of maximum/minimum
    np.testing.assert_array_equal(tg.grad(lambda x: np.sum(np.clip(x, -1.0, 1.0)))(np.array([-1.0, 0.0, 1.0, 2.0])),
                                  [0.5, 1.0, 0.5, 0.0])
    # the reference sweeps implement the same convention
    from tapegrad.engine.traced import Traced
    from tapegrad.engine.reference import Sweep
    tr = Traced(lambda x: np.max(x) + np.maximum(x[0], x[1] - 2.0), (x,))
    np.testing.assert_array_equal(Sweep(tr).vjp([np.ones(())])[0], tr.pullback([np.ones(())])[0])


def test_zero_derivative_ops():
    """Comparisons, sign, floor, argmax and friends are constants."""
    def f(x):
        return (np.sum(np.sign(x) * x) + np.sum(np.floor(x)) + np.sum(x > 0) + x[np.argmax(x)]
                + np.sum(np.ceil(x) + np.rint(x) + np.trunc(x)))
    x = np.array([0.3, -1.2, 2.6])
    np.testing.assert_allclose(tg.grad(f)(x), np.sign(x) + np.array([0.0, 0.0, 1.0]), rtol=0, atol=0)
    np.testing.assert_array_equal(tg.hvp(f, (x,), (np.ones(3),)), np.zeros(3))


@pytest.mark.parametrize("op", ["add", "sub", "mul"])
@pytest.mark.parametrize("scalar_left", [False, True])
def test_array_and_one_traced_value_op_by_op(op, scalar_left):
    # y = C op s and s op C for a constant array C and a traced value s (A * w[0]), and the
    # same with a traced array: the op-by-op sweeps' loops for one value against an array.
    # The value's adjoint is the sum over the elements in order (a Python loop of the same
    # products gives its bits); the array's adjoint is elementwise
    from tapegrad._core import sweeps
    fn = {"add": np.add, "sub": np.subtract, "mul": np.multiply}[op]
    rng = np.random.default_rng(3)
    C = rng.standard_normal(5000)
    wts = rng.standard_normal(5000)
    prev = sweeps.set_fusing(False), sweeps.set_tiling(False)
    try:
        def f(w):
            s, x = w[0], w[1:]
            y1 = fn(s, C) if scalar_left else fn(C, s)
            y2 = fn(s, x) if scalar_left else fn(x, s)
            return np.sum((y1 + y2) * wts)
        w = np.concatenate([[0.7], rng.standard_normal(5000)])
        r = tg.record(f, w)
        g = r.grad(w)
        s, x = w[0], w[1:]
        # forward: NumPy's own elementwise op, bit for bit
        y1 = fn(s, C) if scalar_left else fn(C, s)
        y2 = fn(s, x) if scalar_left else fn(x, s)
        assert r(w) == pytest.approx(np.sum((y1 + y2) * wts), rel=1e-12)
        # the partials: d/ds of s op v is 1, -1 (v - s) or v; of v it is 1, -1 (s - v) or s
        ds = {"add": lambda v: 1.0, "sub": lambda v: 1.0 if scalar_left else -1.0,
              "mul": lambda v: v}[op]
        dv = {"add": 1.0, "sub": -1.0 if scalar_left else 1.0, "mul": s}[op]
        acc = 0.0
        for v in (x, C):       # the reverse sweep meets y2's op first, then y1's
            for yb, e in zip(wts.tolist(), v.tolist()):
                acc += yb * ds(e)
        assert g[0] == acc
        np.testing.assert_array_equal(g[1:], wts * dv)
        np.testing.assert_allclose(g, tg.grad(f)(w), rtol=1e-12, atol=1e-12)
    finally:
        sweeps.set_fusing(*prev[0])
        sweeps.set_tiling(*prev[1])


def test_array_and_one_value_inside_it_op_by_op():
    # x * x[3]: the value is an element of the array, so both adjoints add into one region;
    # the sweep keeps the element-by-element order (the array's contribution at element i,
    # then the value's), which a Python loop replays to the bit
    from tapegrad._core import sweeps
    rng = np.random.default_rng(4)
    x, wts = rng.standard_normal(3000), rng.standard_normal(3000)
    prev = sweeps.set_fusing(False), sweeps.set_tiling(False)
    try:
        r = tg.record(lambda x: np.sum(wts * (x * x[3])), x)
        g = r.grad(x)
    finally:
        sweeps.set_fusing(*prev[0])
        sweeps.set_tiling(*prev[1])
    ref = [0.0] * x.size
    xs, ws = x.tolist(), wts.tolist()
    for i in range(x.size):
        ref[i] += ws[i] * xs[3]
        ref[3] += ws[i] * xs[i]
    np.testing.assert_array_equal(g, np.array(ref))


@pytest.mark.parametrize("name", ["add", "subtract", "multiply", "divide", "power", "maximum",
                                  "arctan2", "hypot", "logaddexp"])
def test_tracer_and_data_array_one_emitted_op(name):
    # a tracer with a float64 array of its shape, the array on either side: one op with a
    # constant operand (binary's path (3)); its value is NumPy's, its derivative the
    # differences', the replay gives the recording's bits, and an unused one is dropped
    fn = getattr(np, name)
    rng = np.random.default_rng(11)
    c = rng.uniform(0.5, 1.5, 7)

    def f(x):
        dead = fn(x, c) * 3.0            # noqa: F841 (unused: dropped by the liveness pass)
        return np.sum(np.sin(fn(x, c)) + np.cos(fn(c, x)) + (x > c) * x)

    x0 = rng.uniform(0.6, 1.4, 7)
    rec = tg.record(f, x0)
    t = rec._variants[0].tape
    from tapegrad._core.tape import OPCODES, FLAG_A, FLAG_B
    table = t.op_table()
    rows = table[(table["code"] == OPCODES[name]) & (table["flags"] != 0)]
    assert sorted(int(r) for r in rows["flags"]) == [FLAG_A, FLAG_B]
    want = np.sum(np.sin(fn(x0, c)) + np.cos(fn(c, x0)) + (x0 > c) * x0)
    assert np.isclose(rec(x0), want, rtol=1e-14, atol=0)
    assert np.isclose(tg.value_and_grad(f)(x0)[0], want, rtol=1e-14, atol=0)
    g = tg.grad(f)(x0)
    h = 1e-6
    fd = np.array([(f(x0 + h * e) - f(x0 - h * e)) / (2 * h) for e in np.eye(7)])
    assert np.allclose(g, fd, rtol=1e-6, atol=1e-8)
    assert np.array_equal(g, rec.grad(x0))
