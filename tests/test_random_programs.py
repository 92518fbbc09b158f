"""Random NumPy programs (hypothesis): derivatives must agree on code nobody anticipated.

A program is a random DAG over the traced operations: smooth elementwise unary ops (domains kept
safe: log of 1 + a*a, sqrt of a*a + 1, division by 1 + b*b), broadcasting binary ops between
values of different shapes, reductions (sum/mean/prod/max/min) with random axes and keepdims,
matmul (with constants, with other values, a @ a.T), slicing and fancy indexing, reshape and
transpose, concatenate and stack, where on comparisons, and value-dependent Python branches
(`if np.sum(v) > 0:`), which record guards. The input is one flat vector z, split inside the
program into a (3, 4) array and a second array of a drawn shape.

Per program:
  1. re-trace gradient (tg.grad) == gradient of a tape recorded at another point and replayed
     at z (through guards and re-recording), to 1e-13;
  2. <u, J v> == <J^T u, v> for the vector-valued program (jvp vs vjp, compiled sweeps);
  3. the compiled vjp/jvp == the NumPy reference sweeps (reference.Sweep) on the same tape;
  4. hvp (tangent-of-reverse) == central differences of replayed gradients, and the gradient
     == central differences of f, when the program is smooth (no max/min/where/branch).

Budget: ``TAPEGRAD_PROGRAMS`` programs (default 2000, under a minute). Long run:

    TAPEGRAD_PROGRAMS=20000 python -m pytest tests/test_random_programs.py -q

(``TAPEGRAD_PROGRAMS_SEED=<int>`` fixes hypothesis' seed; failures print the program.)
"""
import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import tapegrad as tg
from tapegrad import numdiff
from tapegrad.tracing import tracer
from tapegrad.engine.traced import Traced
from tapegrad.engine.reference import Sweep

N_PROGRAMS = int(os.environ.get("TAPEGRAD_PROGRAMS", "2000"))
settings.register_profile(
    "tapegrad-programs", max_examples=N_PROGRAMS, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much])
SEED = os.environ.get("TAPEGRAD_PROGRAMS_SEED")
STATS = {"programs": 0, "smooth": 0, "guarded": 0, "rerecorded": 0, "ops": 0, "unresolved": 0}

C44 = np.linspace(-1.0, 1.0, 16).reshape(4, 4) / 2.0
C33 = np.cos(np.arange(9.0)).reshape(3, 3) / 2.0

UNARY = {
    "sin": np.sin, "cos": np.cos, "tanh": np.tanh, "arctan": np.arctan,
    "gauss": lambda a: np.exp(-a * a), "log1p_sq": lambda a: np.log1p(a * a),
    "log_pos": lambda a: np.log(1.0 + a * a), "sqrt1p": lambda a: np.sqrt(a * a + 1.0),
    "softplus": lambda a: np.logaddexp(0.0, a), "cube": lambda a: a ** 3,
    "square": np.square, "rat": lambda a: a / (1.0 + a * a), "neg": lambda a: -a,
    "affine": lambda a: 0.7 * a - 0.3, "exp_tanh": lambda a: np.exp(np.tanh(a)),
    "arcsinh": np.arcsinh, "abs_sq": lambda a: np.abs(a) ** 2.0,
}
BINARY = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (1.0 + b * b), "logaddexp": np.logaddexp,
    "arctan2": lambda a, b: np.arctan2(a, 1.5 + b * b),
    "pow": lambda a, b: (1.0 + a * a) ** np.tanh(b), "hypot1": lambda a, b: np.hypot(a, 1.0 + b * b),
}
KINKED_BINARY = {
    "maximum": np.maximum, "minimum": np.minimum,
    "where": lambda a, b: np.where(a > b, a * b, a - b),
    "where_le": lambda a, b: np.where(a <= 0.1, np.sin(b) + a, a * a),
}
Y_SHAPES = [(4,), (3, 1), (), (1, 4), (3, 4), (2, 3, 4)]


class Program:
    """A list of steps over a growing list of values, with their shapes."""

    def __init__(self, y_shape):
        self.y_shape = y_shape
        self.n = 12 + int(np.prod(y_shape))
        self.steps = []                 # (name, function of the value list)
        self.shapes = [(3, 4), y_shape]
        self.smooth = True

    def add(self, name, fn, shape, smooth=True):
        self.steps.append((name, fn))
        self.shapes.append(tuple(shape))
        self.smooth &= smooth

    def values(self, z):
        v = [z[:12].reshape(3, 4), z[12:].reshape(self.y_shape)]
        for _, fn in self.steps:
            v.append(fn(v))
        return v

    def vector(self, z):
        """The last value, plus a mixture of earlier ones so that every step matters."""
        v = self.values(z)
        last = v[-1]
        extra = sum(np.sum(np.tanh(w)) * (0.1 * (k + 1)) for k, w in enumerate(v[2:-1]))
        return last + extra + 0.0 * v[0].sum()

    def scalar(self, z):
        out = self.vector(z)
        return np.sum(np.sin(out) * 0.9 + 0.05 * out * out)

    def __repr__(self):
        return f"Program(y={self.y_shape}, steps={[n for n, _ in self.steps]})"


def _pick(draw, prog, pred=lambda s: True):
    cands = [k for k, s in enumerate(prog.shapes) if pred(s)]
    return draw(st.sampled_from(cands)) if cands else None


@st.composite
def programs(draw):
    prog = Program(draw(st.sampled_from(Y_SHAPES)))
    n_steps = draw(st.integers(1, 9))
    kinds = ["unary", "binary", "binary", "kinked", "reduce", "matmul", "index", "shape",
             "join", "branch"]
    for _ in range(n_steps):
        kind = draw(st.sampled_from(kinds))
        if kind == "unary":
            name = draw(st.sampled_from(sorted(UNARY)))
            i = _pick(draw, prog)
            prog.add(name, lambda v, fn=UNARY[name], i=i: fn(v[i]), prog.shapes[i])
        elif kind in ("binary", "kinked"):
            table = BINARY if kind == "binary" else KINKED_BINARY
            name = draw(st.sampled_from(sorted(table)))
            i = _pick(draw, prog)
            j = _pick(draw, prog, lambda s: _broadcastable(s, prog.shapes[i]))
            shape = np.broadcast_shapes(prog.shapes[i], prog.shapes[j])
            if draw(st.booleans()) and kind == "binary":
                i, j = j, i
            prog.add(name, lambda v, fn=table[name], i=i, j=j: fn(v[i], v[j]), shape,
                     smooth=kind == "binary")
        elif kind == "reduce":
            i = _pick(draw, prog, lambda s: len(s) >= 1)
            if i is None:
                continue
            red = draw(st.sampled_from(["sum", "mean", "prod", "max", "min"]))
            nd = len(prog.shapes[i])
            axis = draw(st.sampled_from([None] + list(range(-nd, nd)) + ([(0, nd - 1)] if nd > 1 else [])))
            keep = draw(st.booleans())
            fn = {"sum": np.sum, "mean": np.mean, "prod": np.prod, "max": np.max, "min": np.min}[red]
            shape = np.sum(np.zeros(prog.shapes[i]), axis=axis, keepdims=keep).shape
            src = (lambda a: np.tanh(a) + 1.1) if red == "prod" else (lambda a: a)
            prog.add(f"{red}(axis={axis},keepdims={keep})",
                     lambda v, fn=fn, i=i, axis=axis, keep=keep, src=src: fn(src(v[i]), axis=axis, keepdims=keep),
                     shape, smooth=red not in ("max", "min"))
        elif kind == "matmul":
            i = _pick(draw, prog, lambda s: len(s) >= 1 and s[-1] in (3, 4))
            if i is None:
                continue
            s = prog.shapes[i]
            form = draw(st.sampled_from(["const_r", "gram", "value_r", "const_l"]))
            if form == "const_r":
                C = C44 if s[-1] == 4 else C33
                prog.add("matmul_c", lambda v, i=i, C=C: np.tanh(v[i]) @ C, s)
            elif form == "gram" and len(s) == 2:
                prog.add("gram", lambda v, i=i: v[i] @ v[i].T / 4.0, (s[0], s[0]))
            elif form == "const_l" and len(s) >= 2 and s[-2] in (3, 4):
                C = C44 if s[-2] == 4 else C33
                prog.add("c_matmul", lambda v, i=i, C=C: C @ np.sin(v[i]), s)
            else:
                j = _pick(draw, prog, lambda t: len(t) == 2 and t[0] == s[-1])
                if j is None:
                    continue
                shape = np.matmul(np.zeros(s), np.zeros(prog.shapes[j])).shape
                prog.add("matmul_vv", lambda v, i=i, j=j: v[i] @ np.tanh(v[j]), shape)
        elif kind == "index":
            i = _pick(draw, prog, lambda s: len(s) >= 1 and s[0] >= 2)
            if i is None:
                continue
            s = prog.shapes[i]
            form = draw(st.sampled_from(["rev", "tail", "row", "fancy", "neg_step", "newaxis"]))
            if form == "rev":
                prog.add("rev", lambda v, i=i: v[i][::-1], s)
            elif form == "tail":
                prog.add("tail", lambda v, i=i: v[i][1:], (s[0] - 1,) + s[1:])
            elif form == "row":
                prog.add("row", lambda v, i=i: v[i][-1], s[1:])
            elif form == "fancy":
                idx = draw(st.lists(st.integers(-s[0], s[0] - 1), min_size=1, max_size=5))
                prog.add(f"fancy{idx}", lambda v, i=i, idx=idx: v[i][idx], (len(idx),) + s[1:])
            elif form == "neg_step":
                prog.add("neg_step", lambda v, i=i: v[i][..., ::-2], s[:-1] + ((s[-1] + 1) // 2,))
            else:
                prog.add("newaxis", lambda v, i=i: v[i][None, ...][0], s)
        elif kind == "shape":
            i = _pick(draw, prog)
            s = prog.shapes[i]
            form = draw(st.sampled_from(["T", "flat", "col", "moveaxis"]))
            if form == "T":
                prog.add("T", lambda v, i=i: np.transpose(v[i]), s[::-1])
            elif form == "flat":
                prog.add("flat", lambda v, i=i: np.reshape(v[i], -1), (int(np.prod(s)),))
            elif form == "col":
                prog.add("col", lambda v, i=i: v[i].reshape(-1, 1), (int(np.prod(s)), 1))
            elif len(s) >= 2:
                prog.add("moveaxis", lambda v, i=i: np.moveaxis(v[i], 0, -1), s[1:] + s[:1])
        elif kind == "join":
            i = _pick(draw, prog, lambda s: len(s) >= 1)
            if i is None:
                continue
            s = prog.shapes[i]
            j = _pick(draw, prog, lambda t: len(t) == len(s) and t[1:] == s[1:])
            if draw(st.booleans()):
                prog.add("concat", lambda v, i=i, j=j: np.concatenate([v[i], np.sin(v[j])], axis=0),
                         (s[0] + prog.shapes[j][0],) + s[1:])
            else:
                j = _pick(draw, prog, lambda t: t == s)
                ax = draw(st.integers(0, len(s)))
                prog.add(f"stack{ax}", lambda v, i=i, j=j, ax=ax: np.stack([v[i], v[j] * 0.5], axis=ax),
                         s[:ax] + (2,) + s[ax:])
        else:  # a value-dependent Python branch: recorded as a guard
            i = _pick(draw, prog)
            j = _pick(draw, prog, lambda t: _broadcastable(t, prog.shapes[i]))

            def branch(v, i=i, j=j):
                if np.sum(v[j]) > 0.0:
                    return np.sin(v[i]) * 2.0
                return np.cos(v[i]) - v[i]
            prog.add("branch", branch, prog.shapes[i], smooth=False)
    return prog


def _broadcastable(s, t):
    try:
        np.broadcast_shapes(s, t)
        return True
    except ValueError:
        return False


def _close(a, b, rtol, atol=0.0):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    scale = max(1.0, np.abs(b).max(initial=0.0))
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol * scale)


def _decorate(test):
    test = given(prog=programs(), data=st.data())(test)
    test = settings(settings.get_profile("tapegrad-programs"))(test)
    if SEED is not None:
        from hypothesis import seed
        test = seed(int(SEED))(test)
    return test


@_decorate
def test_random_program(prog, data):
    r = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="rng seed"))
    z = r.standard_normal(prog.n)
    z0 = r.standard_normal(prog.n)           # a different recording point
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = prog.vector(z)
        if not np.all(np.isfinite(out)) or np.abs(out).max(initial=0.0) > 1e6:
            return  # overflowing program (e.g. nested cubes): nothing to compare
        _check(prog, z, z0, r)
    assert tracer._stack() == []


def _check(prog, z, z0, r):
    STATS["programs"] += 1
    STATS["ops"] += len(prog.steps)
    f, F = prog.scalar, prog.vector

    # 1. re-trace gradient == replayed gradient of a tape recorded elsewhere (guards, re-records)
    g = tg.grad(f)(z)
    rec = tg.record(f, z0)
    STATS["guarded"] += rec.tape.nguards > 0
    v_rep, g_rep = rec.value_and_grad(z)
    STATS["rerecorded"] += rec.rerecords > 0
    _close(g_rep, g, 1e-13, 1e-13)
    _close(v_rep, f(z), 1e-11, 1e-12)   # tape vs NumPy: summation orders differ
    _close(rec.grad(z), g, 1e-13, 1e-13)       # again: now the variant list is warm

    # 2. <u, J v> == <J^T u, v> on the vector-valued program (compiled sweeps)
    tr = Traced(F, (z,))
    u = r.standard_normal(tr.out_shapes[0])
    v = r.standard_normal(prog.n)
    Jv = tr.pushforward([v])[0]
    JTu = tr.pullback([u])[0]
    lhs, rhs = np.sum(u * Jv), np.dot(JTu, v)
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, np.abs(u).sum() * np.abs(Jv).max(initial=0),
                                         np.abs(JTu).sum() * np.abs(v).max()), (lhs, rhs)
    # the replayed vector program agrees too
    recF = tg.record(F, z0)
    _close(recF.vjp(z, u), JTu, 1e-12, 1e-12)
    _close(recF.jvp(z, v)[1], Jv, 1e-12, 1e-12)

    # 3. compiled sweeps == NumPy reference sweeps on the same tape
    ref = Sweep(tr)
    _close(ref.out_leaves()[0], tr.out_flat(tr.work()), 1e-12, 1e-13)
    _close(ref.vjp([u])[0], JTu, 1e-11, 1e-12)
    _close(ref.jvp([v])[0], np.ravel(Jv), 1e-11, 1e-12)

    # hvp (tangent-of-reverse) against the reference reverse sweep differentiated forward
    hv = rec.hvp(z, v)
    _, hv_nested = tg.jvp(tg.grad(f), (z,), (v,))
    _close(hv, hv_nested, 1e-9, 1e-10)

    # 4. against finite differences where the program is smooth
    # (large values make sin(out) oscillate faster than any difference step resolves)
    if not prog.smooth or np.abs(F(z)).max(initial=0.0) > 20.0:
        return
    STATS["smooth"] += 1
    fd_h = _converged_fd(rec.grad, z, v, 1e-6)
    if fd_h is not None:
        _close(hv, fd_h, 1e-5, 1e-6)
    for d in (v, r.standard_normal(prog.n)):
        fd = _converged_fd(f, z, d, 1e-7)
        if fd is not None:
            assert abs(np.dot(g, d) - fd) <= 1e-6 * max(1.0, np.abs(g).max() * np.abs(d).sum()), \
                (np.dot(g, d), fd)


def _converged_fd(fun, z, d, rtol):
    """A 4th-order central difference, if it is resolved: the estimates at the default step and
    at half of it agree to rtol. Nested powers or a cosine of a large argument vary faster than the
    step resolves; there the differences, not the derivatives, are wrong, so nothing is compared
    (counted in STATS["unresolved"])."""
    r1 = numdiff.directional(fun, z, d, order=4)
    r2 = numdiff.directional(fun, z, d, h=r1.step / 2, order=4)
    a, b = np.asarray(r1.value), np.asarray(r2.value)
    if np.abs(a - b).max() <= rtol * max(1.0, np.abs(b).max()):
        return b
    STATS["unresolved"] += 1
    return None


def teardown_module(module):
    import sys
    print(f"\nrandom programs: {STATS}", file=sys.stderr)
