"""Scalar tracers (0-d values held as Python floats, see tracer.Tracer) against the 0-d array path.

The rules' scalar fast paths compute on Python floats instead of 0-d arrays; they must give the
same bits, the same floating-point warnings and the same tape as the array path.
"""
import warnings

import numpy as np
import pytest

from tapegrad import rules
from tapegrad.tracer import Recorder, Tracer

POINTS = [0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 2.0, 0.9999, 1e-300, 1e308, -1e308, np.inf, -np.inf,
          np.nan]


def _same(a, b):
    a, b = np.float64(a), np.float64(b)
    return a.tobytes() == b.tobytes() or (np.isnan(a) and np.isnan(b))


def _run(fn, *args):
    with warnings.catch_warnings(record=True) as wl:
        warnings.simplefilter("always")
        r = fn(*args)
    return r, sorted(str(w.message) for w in wl)


@pytest.mark.parametrize("name", sorted(rules._UNARY_VALUE))
def test_scalar_unary_matches_array_path(name):
    for x in POINTS:
        for d in (0.0, 2.0, -0.5, 1e308):
            got, w_got = _run(rules._scalar_unary, name, x, d)
            if got is None:
                continue     # left to the array path
            want, w_want = _run(rules._UNARY_VALUE[name], np.array(x), d)
            assert type(got) is float
            assert _same(got, want), (name, x, d, got, want)
            assert w_got == w_want, (name, x, d)


@pytest.mark.parametrize("name", sorted(rules._PY_BINARY))
def test_scalar_binary_matches_array_path(name):
    for x in POINTS:
        for y in POINTS:
            got, w_got = _run(rules._py_float, rules._PY_BINARY[name], x, y)
            if got is None:
                continue
            want, w_want = _run(rules._BINARY_VALUE[name], np.array(x), np.array(y))
            assert _same(got, want), (name, x, y, got, want)
            assert w_got == w_want == []


def _program(a, b, c):
    """Intermediate results of a scalar loop and of ops that overflow, divide by zero, ..."""
    s = 0.0
    res = []
    for i in range(3):
        s = s + np.sin(a * i) * b - np.exp(-c * 0.01 * i) / (1.0 + a * a)
        res.append(s)
    res += [a ** 2, a ** 3, 2 ** b, 1 / b, (-a) / 3, np.tanh(c), abs(a), np.maximum(a, b),
            np.log(a - b), np.log(b), a / (c - c), np.sqrt(a) * 1e308 * 10.0, (a > b) * c,
            s * np.float64(2.0) - 3]
    return res


def test_scalar_tracers_record_the_array_path_tape(monkeypatch):
    def record():
        rec = Recorder()
        with rec:
            xs = rec.new(np.array([0.3, -0.7, 2.0]))
            out, w = _run(_program, *(xs[k] for k in range(3)))
        return rec.tape.op_table().tobytes(), [t._val for t in out], w

    got = record()
    # reference: every value computed by NumPy on arrays (the float shortcuts switched off)
    monkeypatch.setattr(rules, "_py_float", lambda fn, a, b: None)
    monkeypatch.setattr(rules, "_scalar_unary", lambda name, x, d: None)
    ref = record()
    assert got[0] == ref[0]
    assert all(_same(u, v) for u, v in zip(got[1], ref[1]))
    assert got[2] == ref[2]


def test_scalar_tracer_materializes_its_array():
    rec = Recorder()
    with rec:
        t = Tracer(rec, 0, 0.25)
        assert t.shape == () and t.dtype == np.float64 and t._val.ndim == 0
        assert t._val is t._val          # made once
        t._val = np.array(True)          # rules set boolean results through _val
        assert t._f is None and t._val.dtype == np.bool_
