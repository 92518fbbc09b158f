"""Random NumPy programs over the traced ops, for consistency tests (not a test module).

``random_program(seed)`` returns ``(f, args)``: a function of four arrays (shapes (3, 4), (4,),
(3, 1) and ()) built from a random sequence of smooth elementwise ops, broadcasting binary ops,
reductions with keepdims, matrix products with constants, where, reversed slices, stack+prod
gathers, transposes, and returning a pair (a (3, 4) array, a scalar). Every op is smooth on
the reals where it is used (denominators and log arguments are kept positive), so finite
differences apply too; maximum/minimum of two independent random values have no tie almost
surely.
"""
import numpy as np
import scipy.special as sps

UNARY = [
    ("sin", np.sin), ("tanh", np.tanh), ("log1p_sq", lambda a: np.log1p(a * a)),
    ("sqrt1p", lambda a: np.sqrt(a * a + 1.0)), ("expit", sps.expit), ("arctan", np.arctan),
    ("gauss", lambda a: np.exp(-a * a)), ("cube", lambda a: a ** 3), ("cos", np.cos),
    ("softplus", lambda a: np.logaddexp(0.0, a)), ("erf", sps.erf), ("arcsinh", np.arcsinh),
    ("rev", lambda a: a[..., ::-1] if np.ndim(a) else -a), ("neg", lambda a: -a),
    ("square", np.square), ("scale", lambda a: 0.7 * a - 0.2),
    ("swap", lambda a: _swap(a)),
]


def _swap(a):
    """A permutation of a's elements by transposes (the transpose op: runs of 2 moved whole
    for a (3, 4) value, a matrix transpose otherwise), in a's shape."""
    if np.shape(a) == (3, 4):
        return np.transpose(np.reshape(a, (3, 2, 2)), (1, 0, 2)).reshape(3, 4)
    if np.size(a) % 2 == 0:
        return np.reshape(np.reshape(a, (-1, 2)).T, np.shape(a))
    return -a

BINARY = [
    ("add", lambda a, b: a + b), ("sub", lambda a, b: a - b), ("mul", lambda a, b: a * b),
    ("div", lambda a, b: a / (1.0 + b * b)), ("hypot", lambda a, b: np.hypot(a, b) + 0.0),
    ("logaddexp", np.logaddexp), ("arctan2", lambda a, b: np.arctan2(a, 1.5 + b * b)),
    ("maximum", np.maximum), ("minimum", np.minimum),
    ("where", lambda a, b: np.where(a > b, a * b, a - b)),
    ("pow", lambda a, b: (1.0 + a * a) ** np.tanh(b)),
    ("stackprod", lambda a, b: np.prod(np.stack([np.broadcast_to(a, (3, 4)),
                                                 np.broadcast_to(b, (3, 4)) + 1.5]), axis=0)),
]

SHAPES = [(3, 4), (4,), (3, 1), ()]


def random_program(seed, n_ops=10):
    r = np.random.default_rng(seed)
    M4 = r.standard_normal((4, 4)) / 2
    M3 = r.standard_normal((3, 3)) / 2
    steps = []
    nvals = 4
    shapes = list(SHAPES)
    for _ in range(n_ops):
        kind = r.choice(["unary", "binary", "binary", "reduce", "matmul"])
        if kind == "unary":
            name, fn = UNARY[r.integers(len(UNARY))]
            i = int(r.integers(nvals))
            steps.append((name, lambda v, fn=fn, i=i: fn(v[i])))
            shapes.append(shapes[i])
        elif kind == "binary":
            name, fn = BINARY[r.integers(len(BINARY))]
            i, j = (int(k) for k in r.integers(nvals, size=2))
            steps.append((name, lambda v, fn=fn, i=i, j=j: fn(v[i], v[j])))
            shapes.append((3, 4) if name == "stackprod" else np.broadcast_shapes(shapes[i], shapes[j]))
        elif kind == "reduce":
            cands = [k for k in range(nvals) if shapes[k] == (3, 4)]
            i = cands[r.integers(len(cands))]
            red = [np.sum, np.mean, np.max, np.min][r.integers(4)]
            ax = int(r.integers(2))
            steps.append((red.__name__, lambda v, red=red, i=i, ax=ax: red(v[i], axis=ax, keepdims=True)))
            shapes.append((1, 4) if ax == 0 else (3, 1))
        else:
            cands = [k for k in range(nvals) if shapes[k] == (3, 4)]
            i = cands[r.integers(len(cands))]
            if r.integers(2):
                steps.append(("matmul_r", lambda v, i=i: np.tanh(v[i]) @ M4))
            else:
                steps.append(("matmul_l", lambda v, i=i: M3 @ np.sin(v[i])))
            shapes.append((3, 4))
        nvals += 1

    def f(x, y, z, s):
        v = [x, y, z, s]
        for _, step in steps:
            v.append(step(v))
        main = v[-1] + 0.1 * v[-2] + x * s
        return np.broadcast_to(main, (3, 4)) + 0.0 * x, np.sum(np.sin(v[-3]) * v[-1]) + np.sum(z * y)

    f.__name__ = f"program_{seed}[" + ",".join(n for n, _ in steps) + "]"
    args = (r.standard_normal((3, 4)), r.standard_normal(4), r.standard_normal((3, 1)),
            r.standard_normal())
    return f, args
