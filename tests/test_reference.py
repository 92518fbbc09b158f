"""The compiled sweeps (Cython) against the pure-NumPy reference sweeps (reference.py).

For each program: forward values (also at a new point, by replaying the tape), vjp, jvp, the
full Jacobian by both compiled modes, and hvp lanes of a scalarized program against the nested
jvp-of-grad (which runs the reference vjp on tracers, not the tangent-of-reverse sweep) and
against central differences of gradients.
"""
import numpy as np
import pytest
import scipy.special as sps

import tapegrad as tg
from tapegrad import numdiff
from tapegrad._core import sweeps
from tapegrad.engine.traced import Traced
from tapegrad.engine.reference import Sweep

from _programs import random_program

RTOL, ATOL = 1e-11, 1e-12


def _hand_programs():
    r = np.random.default_rng(3)
    A = r.standard_normal((4, 3))
    mask = np.array([True, False, True, True])
    return [
        ("elementwise", lambda x, y: np.exp(x) * np.sin(y) + np.log1p(x * x) / (1.0 + y ** 2),
         (r.standard_normal(5), r.standard_normal(5))),
        ("unary_zoo", lambda x: np.stack([np.tan(x / 2), np.arcsin(x / 3), np.arccos(x / 3), np.arctan(x),
                                          np.sinh(x), np.cosh(x), np.arcsinh(x), np.arccosh(2 + x * x),
                                          np.arctanh(x / 3), np.exp2(x), np.log2(2 + x), np.log10(2 + x),
                                          np.cbrt(2 + x), sps.expit(x), sps.erf(x), sps.erfc(x),
                                          sps.logit(sps.expit(x)), np.reciprocal(2 + x), np.expm1(x),
                                          np.sqrt(2 + x), np.abs(x), 2.0 ** x, x ** 3, 3.0 / (2 + x)]),
         (r.uniform(-1, 1, 6),)),
        ("broadcast", lambda x, y, z: (x * y - z) / (1.0 + z * z) + np.maximum(x, z) - np.minimum(y, x),
         (r.standard_normal((3, 1)), r.standard_normal((1, 4)), r.standard_normal((2, 3, 4)))),
        ("binary_zoo", lambda a, b: np.stack([np.arctan2(a, b), np.hypot(a, b), np.logaddexp(a, b),
                                             np.abs(a) ** b, np.where(a > b, a, b * b)]),
         (r.standard_normal((2, 3)), r.standard_normal(3))),
        ("reductions", lambda x: (np.sum(x, axis=0), np.mean(x, axis=(0, 2), keepdims=True),
                                  np.prod(x, axis=-1), np.max(x, axis=1), np.min(x), np.var(x, axis=1),
                                  np.std(x)),
         # values 0.04 apart: no max/min tie within a finite-difference step
         ((r.permutation(24).reshape(2, 3, 4) * 0.04 + 0.5) * r.choice([-1.0, 1.0], (2, 3, 4)),)),
        ("linalg", lambda x, y: (A @ x, x @ y.T, np.dot(x[0], y[1]), np.outer(x[:, 0], y[0]),
                                 np.tensordot(x, y, axes=([1], [1]))),
         (r.standard_normal((3, 2)), r.standard_normal((5, 2)))),
        ("batched", lambda a, b: np.matmul(a, b) + np.swapaxes(a, -1, -2).sum() * 0.1,
         (r.standard_normal((2, 1, 3, 4)), r.standard_normal((5, 4, 3)))),
        ("shapes", lambda x: np.concatenate([x.T, np.moveaxis(x, 0, 1)[::-1] * 2], axis=1).reshape(-1)[::-3]
         + np.expand_dims(x, 0).squeeze()[1, 2],
         (r.standard_normal((3, 4)),)),
        ("indexing", lambda x: np.stack([x[1], x[-1, ::-1], x[[0, 2, 2]].sum(axis=0), x[mask[:3]][0],
                                         x[None, 1, :][0] ** 2, x[x[:, 0] > 0].sum(axis=0)]),
         (r.standard_normal((3, 4)),)),
        ("scalar_out", lambda x: np.sum(np.tanh(x) ** 2) + np.prod(x[:3]), (r.standard_normal(6),)),
        ("prod_zero", lambda x: np.prod(x * np.array([1.0, 0.0, 2.0]), axis=0) + np.prod(x, axis=0),
         (r.standard_normal((2, 3)),)),
    ]


PROGRAMS = [pytest.param(f, a, id=n) for n, f, a in _hand_programs()]
PROGRAMS += [pytest.param(*random_program(s), id=f"random{s}") for s in range(24)]


def _flat(leaves):
    return np.concatenate([np.ravel(l) for l in leaves])


def _np_out(f, args):
    out = f(*args)
    return _flat(out if isinstance(out, tuple) else (out,))


@pytest.mark.parametrize("f, args", PROGRAMS)
def test_forward_values(f, args):
    tr = Traced(f, args)
    ref = _flat(Sweep(tr).out_leaves())
    want = _np_out(f, args)
    np.testing.assert_allclose(ref, want, rtol=1e-13, atol=1e-14)
    got = tr.out_flat(tr.work())
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("f, args", PROGRAMS)
def test_forward_replay_at_new_point(f, args):
    """The compiled forward sweep at a new x equals NumPy and the reference sweep there."""
    tr = Traced(f, args)
    if tr.tape.nguards:
        pytest.skip("guarded program (a traced mask decides the indices)")
    r = np.random.default_rng(1)
    new = tuple(np.asarray(a) + 0.01 * r.standard_normal(np.shape(a)) for a in args)
    xnew = _flat(new)
    w = sweeps.forward(tr.tape, xnew)
    got = w[tr.out_off:tr.out_off + tr.nout]
    want = _np_out(f, new)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)
    ref = Sweep(tr, inputs=[np.ravel(a) for a in new])
    np.testing.assert_allclose(_flat(ref.out_leaves()), want, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("f, args", PROGRAMS)
def test_vjp_matches_reference(f, args):
    tr = Traced(f, args)
    r = np.random.default_rng(2)
    for _ in range(2):
        u = [r.standard_normal(s) for s in tr.out_shapes]
        got = tr.pullback(u)
        ref = Sweep(tr).vjp(u)
        for g, w, s in zip(got, ref, tr.in_shapes):
            assert g.shape == tuple(s)
            np.testing.assert_allclose(np.ravel(g), np.ravel(w), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("f, args", PROGRAMS)
def test_jvp_matches_reference(f, args):
    tr = Traced(f, args)
    r = np.random.default_rng(4)
    for _ in range(2):
        v = [r.standard_normal(s) for s in tr.in_shapes]
        got = tr.pushforward(v)
        ref = Sweep(tr).jvp(v)
        for g, w, s in zip(got, ref, tr.out_shapes):
            assert g.shape == tuple(s)
            np.testing.assert_allclose(np.ravel(g), np.ravel(w), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("f, args", PROGRAMS)
def test_jacobians_match_reference(f, args):
    """Tangent sweep with nin lanes and nout reverse sweeps against reference vjp rows."""
    tr = Traced(f, args)
    sw = Sweep(tr)
    rows = []
    for i in range(tr.nout):
        e = np.zeros(tr.nout)
        e[i] = 1.0
        pos, cts = 0, []
        for s, n in zip(tr.out_shapes, tr.out_sizes):
            cts.append(e[pos:pos + n].reshape(s))
            pos += n
        rows.append(_flat(sw.vjp(cts)))
    J = np.array(rows).reshape(tr.nout, tr.nin)
    np.testing.assert_allclose(tr.jac_fwd(), J, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(tr.jac_rev(), J, rtol=RTOL, atol=ATOL)


def _scalar(f, args):
    out = f(*args)
    leaves = out if isinstance(out, tuple) else (out,)
    ws = [np.random.default_rng(5 + k).uniform(0.5, 1.5, np.shape(l)) for k, l in enumerate(leaves)]

    def g(*a):
        o = f(*a)
        o = o if isinstance(o, tuple) else (o,)
        return sum(np.sum(w * np.sin(l)) for w, l in zip(ws, o))
    return g


_KINKS = ("max", "min", "where")


@pytest.mark.parametrize("f, args", PROGRAMS)
def test_hvp_lanes(f, args):
    g = _scalar(f, args)
    tr = Traced(g, args)
    r = np.random.default_rng(6)
    V = r.standard_normal((3, tr.nin))
    HV = tr.hvp_lanes(V)
    argnums = tuple(range(len(args)))
    flat_grad = lambda x: _flat(tg.grad(g, argnums)(*tr.split_in(x)))  # noqa: E731
    x0 = tr.recorded_x
    for l in range(3):
        # nested jvp of grad: the inner reverse sweep is the reference one, recorded on tracers
        _, hv = tg.jvp(tg.grad(g, argnums), args, tuple(tr.split_in(V[l])))
        np.testing.assert_allclose(HV[l], _flat(hv), rtol=1e-10, atol=1e-11)
        if any(k in f.__name__ for k in _KINKS):
            continue  # a tie (possibly exact, e.g. maximum(x, max(x))) breaks central differences
        fd = numdiff.directional(flat_grad, x0, V[l], order=4).value
        np.testing.assert_allclose(HV[l], fd, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(fd).max()))
