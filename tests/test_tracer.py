"""Scalar tracers (0-d values held as Python floats, see tracer.Tracer) against the 0-d array path.

The scalar fast paths (the rules' and the Tracer operators' and __array_ufunc__'s) compute on
Python floats instead of 0-d arrays; they must give the same bits, the same floating-point
warnings and the same tape as the array path. Then the recorder's bookkeeping (emitted ops
leave none: finish() reads the op table) against a plain reverse scan for dead operations.
"""
import warnings

import bisect

import numpy as np
import pytest

import tapegrad as tg
from tapegrad.operators import api
from tapegrad.rules import base as rules
from tapegrad._core.tape import FLAG_A, FLAG_B, FLAG_C
from tapegrad.engine.reference import operand_sizes
from tapegrad.tracing.tracer import Recorder, Tracer

from _programs import random_program

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
    # each operator with a float, an int, a NumPy scalar on either side, and with two tracers;
    # results that overflow, divide by zero or are NaN; ufuncs of every kind of unary primitive
    for k in (0.5, -2.0, 0.0, 3, np.float64(0.25), 1e308, np.nan):
        res += [a + k, k + a, a - k, k - a, a * k, k * a, a / k, k / a, (a * 1e308) * k]
    res += [a + b, a - b, a * b, a / b, b / (a - a), (a - a) / (a - a), a * 1e308 + b * 1e308,
            np.sin(a), np.cos(b), np.tanh(c), np.exp(c * 400.0), np.log(a - a), np.log(b),
            np.sqrt(b), np.arcsin(c), np.abs(b), np.fabs(b), np.negative(a), np.square(c),
            np.sign(b), np.floor(c), np.expm1(a), np.log1p(b), np.cbrt(b), np.arctanh(c)]
    return res


def test_scalar_tracers_record_the_array_path_tape(monkeypatch):
    def record(floats):
        rec = Recorder()
        with rec:
            xs = rec.new(np.array([0.3, -0.7, 2.0]))
            ins = [xs[k] for k in range(3)]
            assert all(t._f is not None for t in ins)
            if not floats:
                for t in ins:
                    t._val = t._val     # held as a 0-d array from here on
            out, w = _run(_program, *ins)
        return rec.tape.op_table().tobytes(), [t._val for t in out], w

    got = record(True)
    # reference: every value computed by NumPy on arrays (the float shortcuts switched off;
    # the operators' and __array_ufunc__'s are taken only by tracers holding floats)
    monkeypatch.setattr(rules, "_py_float", lambda fn, a, b: None)
    monkeypatch.setattr(rules, "_scalar_unary", lambda name, x, d: None)
    ref = record(False)
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


# ------------------------------------------------------------------ operators on 0-d tracers
CONSTANTS = [0.5, -3, True, np.float64(0.25), np.float32(1.5), np.int64(2), np.array(0.75),
             np.array([0.75]), np.array([[-1.25]]), np.array(2)]
OPERATORS = [("+", lambda u, v: u + v, lambda u, v: (1.0, 1.0)),
             ("-", lambda u, v: u - v, lambda u, v: (1.0, -1.0)),
             ("*", lambda u, v: u * v, lambda u, v: (v, u)),
             ("/", lambda u, v: u / v, lambda u, v: (1.0 / v, -u / (v * v)))]


@pytest.mark.parametrize("c", CONSTANTS, ids=lambda c: f"{type(c).__name__}{np.shape(c)}")
@pytest.mark.parametrize("sym,op,partials", OPERATORS, ids=[o[0] for o in OPERATORS])
def test_operators_with_constants_of_every_kind(sym, op, partials, c):
    """x op c and c op x for a 0-d tracer x: NumPy's value and shape, the closed-form derivative."""
    x0 = np.array([0.3, -1.7])
    cv = float(np.ravel(c)[0])
    for f, dx in ((lambda x: op(x[0] * x[1], c), lambda u: partials(u, cv)[0]),
                  (lambda x: op(c, x[0] * x[1]), lambda u: partials(cv, u)[1])):
        want = f(x0)
        r = tg.record(lambda x: np.sum(f(x)), x0)
        v, g = r.value_and_grad(x0)
        assert np.shape(tg.record(f, x0)(x0)) == np.shape(want)
        np.testing.assert_allclose(v, np.sum(want), rtol=1e-15)   # (x / c records x * (1/c))
        u = x0[0] * x0[1]
        np.testing.assert_allclose(g, dx(u) * np.array([x0[1], x0[0]]), rtol=1e-14)
        x1 = x0 * 1.1
        np.testing.assert_allclose(r.grad(x1), dx(x1[0] * x1[1]) * np.array([x1[1], x1[0]]),
                                   rtol=1e-14)


def test_operators_mix_scalar_tracers_with_arrays_and_other_recordings():
    def f(x):
        a, b, v = x[0], x[1], x[1:]                 # v: a 1-element traced array
        s = a * b - b / a + 2 * a - 1 / b
        s = s + a * v - v / a + v * np.ones((1, 1))  # 0-d with (1,) and (1, 1): broadcasting
        return np.sum(s * np.array(0.5) + np.float32(2.0) * np.sin(a) / np.int64(3))
    x0 = np.array([0.7, -1.3])
    r = tg.record(f, x0)
    np.testing.assert_allclose(r(x0), f(x0), rtol=1e-15)
    g = tg.grad(f)(x0)
    h = 1e-6
    fd = [(f(x0 + h * e) - f(x0 - h * e)) / (2 * h) for e in np.eye(2)]
    np.testing.assert_allclose(g, fd, rtol=1e-8)
    np.testing.assert_allclose(r.grad(x0), g, rtol=1e-15)
    # a tracer of the outer recording in an inner one: a constant there, yet differentiated
    # through by the outer derivative (d/dy of d/dx (x * y) at y = 1.5, x = 2 is 1)
    dxy = tg.grad(lambda y: tg.grad(lambda x: x * y * 1.0 - y / x)(2.0))(1.5)
    np.testing.assert_allclose(dxy, 1.0 + 1.0 / 4.0, rtol=1e-14)


def test_scalar_operators_on_finished_tracers_fold_to_numbers():
    rec = Recorder()
    with rec:
        a = rec.new(np.array([0.5, 2.0]))[0]
    for y, want in ((a * a, 0.25), (a + 1.0, 1.5), (3.0 - a, 2.5), (np.sin(a), np.sin(0.5))):
        assert type(y) is not Tracer and y == want


# ------------------------------------------------------------------ dead operations
def _reference_keep(table, starts, roots):
    """Which ops reach a root: a plain reverse scan by allocation, as finish() should decide."""
    alloc = lambda off: bisect.bisect_right(starts, off) - 1      # noqa: E731
    needed = {alloc(r) for r in roots}
    keep = []
    for op in table[::-1]:
        live = alloc(int(op["out"])) in needed
        keep.append(live)
        if live:
            for off, size, flag in zip((op["a"], op["b"], op["c"]), operand_sizes(op),
                                       (FLAG_A, FLAG_B, FLAG_C)):
                if size and not int(op["flags"]) & flag:
                    needed.add(alloc(int(off)))
    return np.array(keep[::-1], dtype=bool)


def _scalar_with_dead_values(x):
    a, b, c = x[0], x[1], x[2]
    dead = np.cos(a * c) - 2.0 * b                    # emitted ops nobody reads
    np.stack([dead, a * a])                           # an explicit op reading them, unused too
    u = a * b + np.sin(c)
    w = np.stack([u, a * a, np.tanh(u)])              # explicit copies of emitted values
    if u > 0.0:                                       # a guard: a root
        u = u * 2.0
    z = w[1:]
    return np.sum(z) * c + u + (a - b if a > b else b - a) + np.exp(z[0] + 0.0 * dead)


def _scalar_only(x):
    a, b, c = x[0], x[1], x[2]
    dead = np.cos(a * c) - 2.0 * b                    # only emitted ops: none made by op()
    u = a * b + np.sin(c) / (c - 0.5)
    np.exp(dead * u)
    return u * u - 3.0 * a if a < b else u


@pytest.mark.parametrize("case", range(14))
def test_finish_drops_what_the_reference_scan_drops(monkeypatch, case):
    if case < 12:
        f, args = random_program(case, n_ops=14)
    else:
        f = _scalar_with_dead_values if case == 12 else _scalar_only
        args = (np.array([0.4, -0.9, 1.3]),)
    seen = {}
    finish = Recorder.finish

    def spy(self, nin, out_off, out_n):
        seen["table"] = self.tape.op_table()
        seen["roots"] = [o for o, _ in self.value_guards] + ([out_off] if out_n else [])
        t = finish(self, nin, out_off, out_n)
        seen["starts"], seen["sizes"], seen["nwork"] = self.alloc_starts, self.alloc_sizes, self.nwork
        return t
    monkeypatch.setattr(Recorder, "finish", spy)
    tr = api.Traced(f, args, fname="record")
    keep = _reference_keep(seen["table"], seen["starts"], seen["roots"])
    assert not keep.all()                            # each case has dead ops
    assert tr.tape.op_table().tobytes() == seen["table"][keep].tobytes()
    # the allocations tile the work buffer, in order
    starts, sizes = seen["starts"], seen["sizes"]
    assert starts[0] == 0 and all(n >= 0 for n in sizes)
    assert all(s + n == e for s, n, e in zip(starts, sizes, starts[1:] + [seen["nwork"]]))
    monkeypatch.undo()
    if case >= 12:
        x = args[0]
        h = 1e-6
        fd = [(f(x + h * e) - f(x - h * e)) / (2 * h) for e in np.eye(3)]
        np.testing.assert_allclose(tg.record(f, x).grad(x), fd, rtol=1e-7)


def test_concatenate_later_axis_traced_value():
    # the value a tracer carries while recording (what Python decisions and guards see) of a
    # concatenation or stack along a later axis: once the end-to-end layout of the pieces on
    # the tape was taken for it, so a branch on it could go the wrong way
    x = np.array([[1.0, -2.0, 0.5], [3.0, 4.0, -6.0]])
    seen = {}

    def f(x):
        s = np.stack([x, 10.0 * x], axis=2)
        c = np.concatenate([x, -x], axis=1)
        seen["s"], seen["c"] = getattr(s, "value", s), getattr(c, "value", c)
        if np.sum(s[..., ::-2]) > 0.0:      # the sum of 10 x: 5.0 > 0
            return np.sum(np.sin(s) * 2.0)
        return np.sum(np.cos(c))
    for run in (lambda: tg.grad(f)(x), lambda: tg.record(f, x)):
        run()
        np.testing.assert_array_equal(seen["s"], np.stack([x, 10.0 * x], axis=2))
        np.testing.assert_array_equal(seen["c"], np.concatenate([x, -x], axis=1))
    r = tg.record(f, x)
    assert r(x) == pytest.approx(f(x), rel=1e-15)
    np.testing.assert_allclose(r.grad(x), 2.0 * np.cos(np.stack([x, 10.0 * x], axis=2)) @ [1.0, 10.0],
                               rtol=1e-14)


def test_division_by_a_constant_is_numpys():
    # x / c is recorded as a division (divc), not x * (1/c): the values are NumPy's bitwise
    rng = np.random.default_rng(5)
    x = rng.standard_normal(1000)
    for c in (3.0, 7.0, -0.1, 49.0):
        r = tg.record(lambda x: x / c, x)
        assert np.array_equal(r(x), x / c)
        s = tg.record(lambda x: x[0] / c + x[1] / c, x)          # the scalar path
        assert s(x) == x[0] / c + x[1] / c
        g = tg.grad(lambda x: np.sum(np.sin(x) / c))(x)
        np.testing.assert_allclose(g, np.cos(x) / c, rtol=1e-15)
        tg.check_grads(lambda x: np.sum((x / c) ** 3), x[:5], order=2)
    v = tg.record(lambda x: np.var(x, ddof=1), x)(x)
    assert v == pytest.approx(np.var(x, ddof=1), rel=1e-14)


def test_int_constants_take_the_float_fast_path_exactly():
    # 2 * x, x - 5, 7 / x with Python ints: the same tape and values as with floats; ints
    # beyond 2**53 (inexact as doubles) and bools take the general path, as before
    x = np.array([1.5, -2.0, 0.25])

    def f(x, k):
        return k[0] * x[0] + x[1] * k[1] - k[2] + k[3] / x[2] + x[0] / k[4]
    ints, floats = (2, 3, 5, 7, 4), (2.0, 3.0, 5.0, 7.0, 4.0)
    ri, rf = tg.record(lambda x: f(x, ints), x), tg.record(lambda x: f(x, floats), x)
    assert ri.tape.to_bytes() != b"" and ri.info()["ops"] == rf.info()["ops"]
    assert np.array_equal(ri.tape.op_table(), rf.tape.op_table())
    assert ri(x) == f(x, ints) and np.array_equal(ri.grad(x), rf.grad(x))
    big = tg.record(lambda x: (2 ** 60 + 1) * x[0] + True * x[1], x)
    assert big(x) == (2 ** 60 + 1) * x[0] + True * x[1]
    # the bounds of the exact range are ints of the fast path (the same op table as their
    # floats); one past them, and ints beyond 64 bits, are NumPy's (its own conversion)
    for k in (2 ** 53, -2 ** 53):
        fi = lambda x: k * x[0] + x[1] / k - k + x[2] * k
        ff = lambda x: float(k) * x[0] + x[1] / float(k) - float(k) + x[2] * float(k)
        assert np.array_equal(tg.record(fi, x).tape.op_table(), tg.record(ff, x).tape.op_table())
    for k in (2 ** 53 + 1, -2 ** 53 - 1, 10 ** 30, -10 ** 30):
        fk = lambda x: k * x[0] + x[1] * k - k
        r = tg.record(fk, x)
        want = np.float64(k) * x[0] + x[1] * np.float64(k) - np.float64(k)
        assert r(x) == want and tg.grad(fk)(x)[0] == np.float64(k)


def test_one_op_entry_points_record_what_add_op_records():
    # Tape.add_unary / add_binary (the recorder's hot paths) give add_op's rows exactly
    from tapegrad._core.tape import Tape
    t1, t2 = Tape(), Tape()
    for n in (1, 7):
        t1.add_op(3, 0, 10, 2, 0, 0, n, d=0.25)
        t2.add_unary(3, 10, 2, n, 0.25)
        t1.add_op(20, 0, 30, 4, 5, 0, n, 1, n, 1, n)
        t2.add_binary(20, 30, 4, 5, n)
    a, b = t1.op_table(), t2.op_table()
    assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_vector_slices_values_gradients_and_views():
    # x[a:b] of a traced vector (found from the slice itself): every start and stop, in and
    # out of range, negative, empty, with steps; values as NumPy's, gradients the weights on
    # the slice's elements, and the whole-vector reductions of slices against differences
    x = np.arange(1.0, 8.0)
    w = np.linspace(0.5, 2.0, 7)
    bounds = [None, -9, -7, -3, -1, 0, 1, 3, 6, 7, 9]
    for a in bounds:
        for b in bounds:
            for step in (None, 1, 2, -1):
                key = slice(a, b, step)
                expect = x[key]
                with Recorder() as rec:
                    t = rec.new(x.copy())
                    s = t[key]
                    np.testing.assert_array_equal(rules.value_of(s), expect)
                g = tg.grad(lambda v: np.sum(v[key] * w[key]) if expect.size else np.sum(v * 0.0))(x)
                ind = np.zeros(7)
                ind[key] = w[key]
                np.testing.assert_array_equal(g, ind, err_msg=str(key))
                # the reductions' whole-vector path: sum, prod, max, min of the slice
                if expect.size:
                    for red in (np.sum, np.prod, np.max, np.min):
                        val, gr = tg.value_and_grad(lambda v: red(v[key] * 1.5))(x)
                        assert val == red(x[key] * 1.5)
                        fd = np.array([(red((x + e)[key] * 1.5) - red((x - e)[key] * 1.5)) / 2e-6
                                       for e in np.eye(7) * 1e-6])
                        np.testing.assert_allclose(gr, fd, rtol=1e-6, atol=1e-6)


def test_tracer_with_an_array_of_its_shape_records_what_the_general_path_records():
    # binary(name, tracer, float64 array of its shape) takes a fast path (rules.base: one op,
    # the array a constant operand); a list of the same numbers takes the general one. The
    # tapes must be the same op for op, and so the values and gradients bit for bit.
    rng = np.random.default_rng(3)
    x = rng.uniform(0.5, 2.0, 6)
    c = rng.uniform(0.5, 2.0, 6)
    names = ["add", "subtract", "multiply", "true_divide", "power", "arctan2", "hypot",
             "maximum", "minimum", "logaddexp", "less", "greater_equal"]
    for name in names:
        uf = getattr(np, name)
        for left in (False, True):
            def f(v, const):
                r = uf(const, v) if left else uf(v, const)
                return np.sum(r * v)
            fast = tg.record(lambda v: f(v, c), x)
            slow = tg.record(lambda v: f(v, c.tolist()), x)
            ta, tb = fast._variants[0].tape.op_table(), slow._variants[0].tape.op_table()
            assert ta.tobytes() == tb.tobytes(), (name, left)
            va, ga = tg.value_and_grad(lambda v: f(v, c))(x)
            vb, gb = tg.value_and_grad(lambda v: f(v, c.tolist()))(x)
            assert va == vb and np.array_equal(ga, gb), (name, left)
            np.testing.assert_array_equal(fast.grad(x), ga)
