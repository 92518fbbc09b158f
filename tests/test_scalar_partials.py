"""Gradients of small scalar tapes (sweeps.grad_fast): the forward sweep stores each one-element
op's local partials and the reverse is a loop of multiply-adds. It must give bitwise the
adjoints of the op-by-op reverse sweep (value_and_grad), and the right derivatives."""
import numpy as np
import pytest

import tapegrad as tg
from tapegrad.bench.workloads import scalar_loop


def every_kind(x):
    a, b, c = x[0], x[1], x[2]
    s = 0.0
    for k in range(3):
        s = s + np.sin(a) * np.cos(b) + np.tanh(c) * np.exp(-a * a) + np.log1p(b * b)
        s = s + np.sqrt(c * c + 1.0) / (1.0 + a * a) + np.arctan2(a, 2.0 + c) + np.hypot(a, b)
        s = s + np.maximum(a, b) * np.minimum(b, c) + np.where(a > b, a * 2.0, b - 1.0)
        s = s + np.abs(a - c) ** 1.5 + (2.0 + b * b) ** c + np.logaddexp(a, c) - 3.0 / (2.0 + a * a)
        s = s + np.floor(a * 3.0) * b + np.expm1(c * 0.5) + np.arcsinh(b) + np.cbrt(a + 3.0)
        if a > c:                       # a Python branch on traced scalars: a guard
            s = s + a * b
        else:
            s = s - c
        a, b, c = b * 0.9 + 0.1, c - 0.2 * a, np.sin(a + b)
    return s + x[3] * x[4] + np.sum(x[3:] ** 2)     # a small array op among the scalars


@pytest.mark.parametrize("f,n", [(lambda x: scalar_loop(x, None), 3), (every_kind, 6)])
def test_partials_bitwise_equal_op_by_op(f, n):
    rng = np.random.default_rng(n)
    x0 = rng.uniform(-1.0, 1.0, n)
    r = tg.record(f, x0)
    assert r.tape.nops > 50
    for _ in range(300):
        x = rng.uniform(-1.5, 1.5, n)
        g_fast = r.grad(x)                  # the partials path
        v, g_ref = r.value_and_grad(x)      # the op-by-op reverse sweep
        assert np.array_equal(g_fast.view(np.int64), g_ref.view(np.int64))


def test_partials_against_finite_differences_and_guards():
    rng = np.random.default_rng(1)
    x0 = rng.uniform(-1.0, 1.0, 6)
    r = tg.record(every_kind, x0)
    assert r.tape.nguards > 0
    for _ in range(20):
        x = rng.uniform(-1.5, 1.5, 6)
        g = r.grad(x)
        np.testing.assert_allclose(g, tg.grad(every_kind)(x), rtol=1e-13, atol=1e-13)
        h = 1e-6
        fd = np.array([(every_kind(x + h * e) - every_kind(x - h * e)) / (2 * h) for e in np.eye(6)])
        np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-5)
