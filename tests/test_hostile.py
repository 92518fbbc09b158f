"""Hostile inputs: each case either gives a clear error or the correct result, never a crash,
never an absurd allocation, never tracer state left behind.

Catalogue (one test or parametrized row each): NaN and inf (IEEE propagation through values and
derivatives, also through max/min/maximum/minimum and fmax/fmin), empty arrays, 0-d arrays,
huge shapes (broadcast_to, reshape, constants), int/bool/float32/complex/object/str inputs and
constants, Python ints beyond float range, non-contiguous / Fortran-ordered / read-only inputs,
wrong replay shapes, dtypes and structures, functions returning non-arrays, exceptions inside f,
re-entrant use (grad inside f, record inside grad), and mutation of traced arrays.

Every test runs under the ``clean_stack`` fixture: after it, no recorder may be left active.
"""
import warnings

import numpy as np
import pytest

import tapegrad as tg
from tapegrad.tracing import tracer
from tapegrad.engine.traced import Traced
from tapegrad.engine.reference import Sweep

NAN, INF = np.nan, np.inf


@pytest.fixture(autouse=True)
def clean_stack():
    assert tracer._stack() == []
    yield
    assert tracer._stack() == [], "a recorder was left on the tracer stack"


def _all_modes(f, x):
    """grad (re-trace), replayed grad, jvp/vjp along ones, and the reference sweep vjp."""
    g = tg.grad(f)(x)
    r = tg.record(f, x)
    gr = r.grad(x)
    tr = Traced(f, (x,))
    ref = Sweep(tr).vjp([np.ones(())])[0]
    _, jv = tg.jvp(f, (x,), (np.ones_like(x),))
    return g, gr, np.reshape(ref, np.shape(x)), jv


# ---------------------------------------------------------------------- NaN / inf
def test_nan_propagates_through_values_and_derivatives():
    x = np.array([NAN, 1.0, 2.0])
    v, g = tg.value_and_grad(lambda x: np.sum(np.sin(x) * x))(x)
    assert np.isnan(v)
    assert np.isnan(g[0]) and np.all(np.isfinite(g[1:]))


def test_signed_zeros_and_nans_follow_numpy():
    # np.signbit reads the sign bit (True at -0.0 and at a NaN with the bit set), so do the
    # traced signbit, copysign and angle, recorded, replayed and in the reference sweep
    x = np.array([-0.0, 0.0, -1.0, 2.0, np.nan, -np.nan, -INF, INF])
    want = np.signbit(x)
    out = tg.vjp(lambda x: np.signbit(x), x)[0]
    np.testing.assert_array_equal(out != 0, want)
    f = lambda x: np.sum(np.where(np.signbit(x), 2.0 * x, 3.0 * x))   # noqa: E731
    z = np.array([-0.0, 0.0, -0.0])
    np.testing.assert_array_equal(tg.grad(f)(z), [2.0, 3.0, 2.0])
    r = tg.record(f, np.ones(3))
    np.testing.assert_array_equal(r.grad(z), [2.0, 3.0, 2.0])
    tr = Traced(f, (z,))
    np.testing.assert_array_equal(Sweep(tr).vjp([np.ones(())])[0], [2.0, 3.0, 2.0])
    # copysign(1, x) * x = |x|: d/dx at -0.0 is copysign(1, -0.0) = -1, as NumPy's sign bit says
    assert tg.grad(lambda x: np.copysign(1.0, x) * x)(-0.0) == -1.0
    np.testing.assert_array_equal(tg.vjp(lambda x: np.copysign(2.0, x), x)[0], np.copysign(2.0, x))
    np.testing.assert_array_equal(tg.vjp(np.angle, x[:4])[0], np.angle(x[:4]))


def test_inf_follows_ieee():
    x = np.array([INF, -INF, 0.0])
    v, g = tg.value_and_grad(lambda x: np.sum(np.exp(x)))(x)
    assert v == INF
    np.testing.assert_array_equal(g, [INF, 0.0, 1.0])
    # inf - inf is NaN in the value; the derivative of x - x is exactly 0 - the tape is linear
    v, g = tg.value_and_grad(lambda x: np.sum(x - x))(np.array([INF]))
    assert np.isnan(v) and g[0] == 0.0
    g = tg.grad(lambda x: np.sum(np.sqrt(x)))(np.zeros(2))
    np.testing.assert_array_equal(g, [INF, INF])


@pytest.mark.parametrize("f, want", [
    (lambda x: np.max(x), [1.0, 0.0, 0.0]),
    (lambda x: np.min(x * 2.0), [2.0, 0.0, 0.0]),
    (lambda x: np.max(x[None, :] + np.zeros((2, 1)), axis=1).sum(), [2.0, 0.0, 0.0]),
    (lambda x: np.sum(np.maximum(x, 0.0)), [1.0, 1.0, 0.0]),
    (lambda x: np.sum(np.minimum(0.5, x)), [1.0, 0.0, 1.0]),
    (lambda x: np.sum(np.maximum(x, x[::-1])), [2.0, 1.0, 0.0]),   # NaN wins; x1 ties itself
])
def test_nan_selected_by_max_min_gets_the_derivative(f, want):
    """Regression: max/min/maximum/minimum propagate a NaN value but used to route the derivative
    to the other operand (x == NaN is false), so the gradient of a NaN result was a clean 0 and
    NaN disappeared from the derivative. The NaN element is the result, so it gets the adjoint."""
    x = np.array([NAN, 1.0, -1.0])
    assert np.isnan(f(x))
    for g in _all_modes(f, x)[:3]:
        np.testing.assert_array_equal(g, want)
    # and a NaN upstream of the max now reaches the gradient
    g = tg.grad(lambda x: np.max(np.sin(x)))(x)
    assert np.isnan(g[0])


def test_nan_through_max_in_forward_mode_matches_reverse():
    x = np.array([NAN, 1.0, -1.0])
    for f in (lambda x: np.max(x), lambda x: np.sum(np.maximum(x, 0.0))):
        g, _, _, jv = _all_modes(f, x)
        assert jv == np.sum(g)


@pytest.mark.parametrize("fn", [np.fmax, np.fmin])
def test_fmax_fmin_ignore_nan_like_numpy(fn):
    """Regression: np.fmax/np.fmin were recorded as maximum/minimum, which propagate NaN, so the
    traced value was NaN where NumPy gives the number (and the derivative went to the NaN)."""
    x = np.array([NAN, 1.0, -1.0, NAN, 3.0])
    c = np.array([0.0, 0.0, 0.0, NAN, NAN])
    f = lambda x: fn(x, c)  # noqa: E731
    got = tg.jacobian(f)(x)
    tr = Traced(f, (x,))
    out = tr.out_flat(tr.work())
    np.testing.assert_array_equal(out, fn(x, c))
    want = np.diag([0.0, 1.0 if fn is np.fmax else 0.0, 1.0 if fn is np.fmin else 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(got, want)
    # replay at new NaN positions follows NumPy too (the NaN masks are recorded operations)
    r = tg.record(f, np.ones(5))
    x2 = np.array([1.0, NAN, 2.0, NAN, NAN])
    np.testing.assert_array_equal(r(x2), fn(x2, c))
    # both operands traced, and the constant on the left
    g = tg.grad(lambda x: np.sum(fn(x, x[::-1] + 0.5)))(np.array([NAN, 1.0, 2.0]))
    assert np.all(np.isfinite(g))
    np.testing.assert_array_equal(tg.record(lambda x: fn(2.0, x), x)(x), fn(2.0, x))


# ---------------------------------------------------------------------- empty and 0-d
@pytest.mark.parametrize("f, x", [
    (lambda x: np.sum(x * 2.0), np.zeros(0)),
    (lambda x: np.sum(x @ x.T), np.zeros((0, 3))),
    (lambda x: np.sum(x @ np.ones((0, 2))), np.zeros((3, 0))),
    (lambda x: np.sum(np.prod(x, axis=0)), np.zeros((0, 3))),
    (lambda x: np.sum(np.concatenate([x, x])), np.zeros(0)),
    (lambda x: np.sum(x[1:1]) + np.sum(x), np.ones(3)),
    (lambda x: np.sum(x.reshape(0, 5).T), np.zeros(0)),
])
def test_empty_arrays(f, x):
    g, gr, ref, jv = _all_modes(f, x)
    assert g.shape == x.shape
    np.testing.assert_array_equal(g, gr)
    np.testing.assert_array_equal(g, ref)
    r = tg.record(f, x)
    assert r.hessian(x).shape == x.shape * 2
    assert tg.jacobian(lambda x: x * 2.0)(np.zeros(0)).shape == (0, 0)


def test_empty_max_raises_like_numpy():
    with pytest.raises(ValueError):
        tg.grad(lambda x: np.max(x))(np.zeros(0))


def test_zero_d_arrays():
    assert tg.grad(lambda x: x * x)(np.array(3.0)) == 6.0
    assert isinstance(tg.grad(lambda x: x * x)(3.0), float)
    assert tg.hessian(lambda x: x ** 3)(2.0) == 12.0
    assert tg.grad(lambda x: np.where(x > 0, x, -x))(np.array(-2.0)) == -1.0
    r = tg.record(lambda x: np.sin(x) * x, 1.0)
    np.testing.assert_allclose(r.grad(np.float64(2.0)), np.cos(2.0) * 2.0 + np.sin(2.0))
    with pytest.raises(ValueError, match="shape"):
        r.grad(np.array([2.0]))


# ---------------------------------------------------------------------- huge shapes
@pytest.mark.parametrize("shape", [(2 ** 35,), (2 ** 16, 2 ** 16), (2 ** 31, 2 ** 31), (2 ** 62, 4)])
def test_broadcast_to_huge_raises_before_allocating(shape):
    """Regression: NumPy broadcasts to any size as a view, tapegrad materializes; a huge target
    used to try to allocate the index array (256 GiB for 2**35) before failing."""
    import tracemalloc
    tracemalloc.start()
    try:
        with pytest.raises(ValueError):
            tg.grad(lambda x: np.sum(np.broadcast_to(x, shape)))(np.ones(1))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50_000_000


@pytest.mark.parametrize("f", [
    lambda x: np.sum(x.reshape(2 ** 40, 2 ** 40)),
    lambda x: np.sum(x.reshape(-1, -1)),
    lambda x: np.sum(x * np.zeros((2 ** 31, 2 ** 31))),
    lambda x: np.sum(np.broadcast_to(x, (-1,))),
    lambda x: x[10 ** 30],
    lambda x: np.sum(x, axis=2 ** 70),
    lambda x: np.sum(x[[0, 5]]),
])
def test_bad_shapes_and_indices_raise_cleanly(f):
    with pytest.raises((ValueError, IndexError, TypeError, MemoryError)):
        tg.grad(f)(np.ones(3))


def test_tape_alloc_and_loaded_work_bounds():
    t = tg.Tape()
    with pytest.raises(ValueError):
        t.alloc(2 ** 62)
    with pytest.raises(ValueError):
        t.alloc(-1)
    r = tg.record(lambda x: np.sum(x ** 2), np.ones(3))
    with pytest.raises(ValueError, match="max_work"):
        tg.load(r.to_bytes(), max_work=2)


# ---------------------------------------------------------------------- dtypes and Python numbers
@pytest.mark.parametrize("x, want", [
    (np.arange(3), [0.0, 2.0, 4.0]),
    (np.arange(3, dtype=np.uint8), [0.0, 2.0, 4.0]),
    (np.arange(3, dtype=np.float32), [0.0, 2.0, 4.0]),
    (np.arange(3, dtype=np.float16), [0.0, 2.0, 4.0]),
])
def test_real_dtypes_promote_to_float64(x, want):
    # computed in float64; integers get float64 derivatives, narrower floats their own dtype
    dtype = x.dtype if x.dtype.kind == "f" else np.float64
    g = tg.grad(lambda x: np.sum(x * x))(x)
    assert g.dtype == dtype
    np.testing.assert_array_equal(g, want)
    r = tg.record(lambda x: np.sum(x * x), np.ones(3))
    assert r.grad(x).dtype == dtype
    np.testing.assert_array_equal(r.grad(x), want)


@pytest.mark.parametrize("x, match", [
    (np.ones(3, bool), "boolean"),
    (np.ones(3, complex), "complex"),
    (np.ones(3, object), "object"),
    (np.array(["a", "b", "c"]), "<U1"),
    ("abc", "str"),
    (10 ** 400, "int"),
    ({"a": 1.0, "b": "s"}, "str"),
])
def test_unsupported_inputs_raise_type_error(x, match):
    with pytest.raises(TypeError, match=match):
        tg.grad(lambda x: np.sum(x))(x)


@pytest.mark.parametrize("bad", [np.ones(3, complex), np.ones(3, object), np.array(["a"] * 3),
                                 np.ones(3, bool)])
def test_replay_with_unsupported_dtype_raises(bad):
    r = tg.record(lambda x: np.sum(x * x), np.ones(3))
    for call in (r, r.grad, lambda x: r.hvp(x, np.ones(3)), lambda x: r.jvp(x, np.ones(3))):
        with pytest.raises(TypeError, match="dtype"):
            call(bad)


@pytest.mark.parametrize("c, exc", [
    (1j, TypeError), ("a", TypeError), (np.ones(3, object), TypeError),
    (np.array(10 ** 30), TypeError), (10 ** 400, OverflowError),
])
def test_unsupported_constants_raise(c, exc):
    with pytest.raises(exc):
        tg.grad(lambda x: np.sum(x * c))(np.ones(3))


def test_supported_constants_promote():
    g = tg.grad(lambda x: np.sum(x * np.float32(2) + x * np.int8(127) + x * True))(np.ones(2))
    np.testing.assert_array_equal(g, [130.0, 130.0])
    # a big Python int that fits in a float is a float constant
    assert tg.grad(lambda x: x * 10 ** 300)(1.0) == 1e300


# ---------------------------------------------------------------------- memory layout
def _layouts():
    base = np.arange(12.0).reshape(3, 4) / 7.0
    ro = base.copy()
    ro.flags.writeable = False
    return [base, np.asfortranarray(base), np.arange(24.0).reshape(3, 8)[:, ::2] / 7.0,
            base[::-1], ro, base.T.copy().T, np.broadcast_to(base[:1], (3, 4))]


@pytest.mark.parametrize("x", _layouts(), ids=["C", "F", "strided", "reversed", "readonly",
                                                "F-copy", "broadcast-view"])
def test_layouts_give_the_same_derivatives(x):
    M = np.linspace(-1, 1, 8).reshape(4, 2)
    f = lambda x: np.sum(np.tanh(x @ M) ** 2) + np.sum(x[:, ::-1] * x)  # noqa: E731
    xc = np.ascontiguousarray(x)
    want = tg.grad(f)(xc)
    np.testing.assert_array_equal(tg.grad(f)(x), want)
    r = tg.record(f, np.ones((3, 4)))
    np.testing.assert_array_equal(r.grad(x), want)
    np.testing.assert_array_equal(r.hvp(x, x), r.hvp(xc, xc))
    flags = x.flags.writeable
    r.grad(x)
    assert x.flags.writeable == flags   # inputs are neither modified nor re-flagged


def test_read_only_input_is_not_written():
    x = np.linspace(0, 1, 5)
    x.flags.writeable = False
    before = x.copy()
    r = tg.record(lambda x: np.sum(np.sin(x)), x)
    r.grad(x)
    r.hessian(x)
    np.testing.assert_array_equal(x, before)


# ---------------------------------------------------------------------- replay misuse
def test_wrong_replay_shapes_structures_and_buffers():
    r = tg.record(lambda x: np.sum(x ** 2), np.ones(3))
    with pytest.raises(ValueError, match="shape"):
        r.grad(np.ones(4))
    with pytest.raises(ValueError, match="shape"):
        r.grad(np.ones((3, 1)))
    with pytest.raises(TypeError, match="argument"):
        r.grad(np.ones(3), np.ones(3))
    with pytest.raises(ValueError):
        r.vjp(np.ones(3), np.ones(5))
    with pytest.raises(ValueError, match="shape"):
        r.jvp(np.ones(3), np.ones(5))
    with pytest.raises(ValueError, match="shape"):
        r.hvp(np.ones(3), np.ones((3, 1)))
    with pytest.raises(ValueError, match="out="):
        r.grad(np.ones(3), out=np.ones(2))
    with pytest.raises(ValueError, match="out="):
        r.grad(np.ones(3), out=np.ones(3, np.float32))
    r2 = tg.record(lambda x, y: np.sum(x * y["a"]), np.ones(2), {"a": np.ones(2)})
    with pytest.raises(ValueError, match="structure"):
        r2.grad(np.ones(2), {"b": np.ones(2)})
    with pytest.raises(ValueError, match="structure"):
        r2.grad(np.ones(2), [np.ones(2)])
    # the sweeps check buffer sizes against the tape
    from tapegrad._core import sweeps
    t = r.tape
    with pytest.raises(ValueError):
        sweeps.forward(t, np.ones(2))
    with pytest.raises(ValueError):
        sweeps.forward(t, np.ones(3), np.empty(1))
    w = sweeps.forward(t, np.ones(3))
    with pytest.raises(ValueError):
        sweeps.reverse(t, w, np.ones(2))
    with pytest.raises(ValueError):
        sweeps.tangent(t, w, np.ones((1, 4)))
    with pytest.raises(ValueError):
        sweeps.tangent_of_reverse(t, w, np.ones((1, 2)), w)
    with pytest.raises(ValueError):
        sweeps.value_and_grad(t, np.ones(3), w, w[:1], np.empty(3))


def test_replay_nan_input_follows_ieee_and_guards():
    r = tg.record(lambda x: np.sum(x ** 2), np.ones(3))
    g = r.grad(np.array([NAN, 1.0, 2.0]))
    assert np.isnan(g[0]) and list(g[1:]) == [2.0, 4.0]
    # a guard recorded at x > 0 sees NaN > 0 as False: the other branch, re-recorded, exact
    f = lambda x: x * 2.0 if x > 0 else x * 3.0  # noqa: E731
    rf = tg.record(f, 1.0)
    assert rf.grad(np.float64(NAN)) == 3.0
    assert rf.rerecords == 1
    with pytest.raises(tg.GuardError):
        tg.record(f, 1.0, strict=True).grad(np.float64(NAN))


# ---------------------------------------------------------------------- what f returns
@pytest.mark.parametrize("ret, exc, match", [
    (lambda x: "abc", TypeError, "str"),
    (lambda x: None, TypeError, "None"),
    (lambda x: [x[0], x[1]], TypeError, "scalar"),
    (lambda x: object(), TypeError, "object"),
    (lambda x: {"a": "s"}, TypeError, "str"),
    (lambda x: x, TypeError, "scalar"),
])
def test_grad_of_non_scalar_or_non_array_output(ret, exc, match):
    with pytest.raises(exc, match=match):
        tg.grad(ret)(np.ones(3))


def test_other_outputs():
    assert list(tg.grad(lambda x: 1.0)(np.ones(3))) == [0.0, 0.0, 0.0]
    out, fn = tg.vjp(lambda x: [x[0], x[1] * 2.0], np.ones(3))
    np.testing.assert_array_equal(fn([1.0, 1.0])[0], [1.0, 2.0, 0.0])
    with pytest.raises(TypeError, match="str"):
        tg.record(lambda x: "s", np.ones(2))
    assert tg.record(lambda x: None, np.ones(2))(np.ones(2)) is None


# ---------------------------------------------------------------------- exceptions and re-entrance
class Boom(Exception):
    pass


@pytest.mark.parametrize("op", [
    lambda F: tg.grad(F)(np.ones(3)),
    lambda F: tg.jvp(F, (np.ones(3),), (np.ones(3),)),
    lambda F: tg.vjp(F, np.ones(3)),
    lambda F: tg.hessian(F)(np.ones(3)),
    lambda F: tg.jacobian(F)(np.ones(3)),
    lambda F: tg.record(F, np.ones(3)),
    lambda F: tg.grad(lambda x: np.sum(tg.grad(F)(x)))(np.ones(3)),
    lambda F: tg.compile(F)(np.ones(3)),
])
def test_exception_inside_f_leaves_no_state(op):
    def F(x):
        y = np.sin(x) * 2.0
        bool(y[0] > 0)          # a guard on the way
        raise Boom(y.shape)
    with pytest.raises(Boom):
        op(F)
    assert tracer._stack() == []
    # the thread still works normally afterwards
    np.testing.assert_allclose(tg.grad(lambda x: np.sum(x * x))(np.ones(2)), [2.0, 2.0])


def test_exception_on_guard_rerecord_leaves_no_state():
    calls = []

    def f(x):
        calls.append(1)
        if x > 0:
            return x * 2.0
        raise Boom("negative")
    r = tg.record(f, 1.0)
    with pytest.raises(Boom):
        r.grad(np.float64(-1.0))
    assert tracer._stack() == []
    assert r.grad(np.float64(3.0)) == 2.0


def test_reentrant_grad_inside_f():
    # inner derivative of the outer variable: differentiated again (nesting)
    g = tg.grad(lambda x: np.sum(tg.grad(lambda y: np.sum(y ** 3))(x)))(np.ones(3))
    np.testing.assert_allclose(g, [6.0, 6.0, 6.0])
    # inner derivative at an unrelated constant point: a constant to the outer one
    g = tg.grad(lambda x: np.sum(x * tg.grad(lambda y: np.sum(y ** 3))(np.full(3, 2.0))))(np.ones(3))
    np.testing.assert_allclose(g, [12.0, 12.0, 12.0])
    # a recorded tape replayed inside f is a constant computation (numbers in, numbers out)
    r = tg.record(lambda y: np.sum(y ** 3), np.ones(3))
    g = tg.grad(lambda x: np.sum(x) * r(np.full(3, 2.0)))(np.ones(3))
    np.testing.assert_allclose(g, [24.0] * 3)
    # record of traced arguments is refused with a clear message
    with pytest.raises(ValueError, match="enclosing"):
        tg.grad(lambda x: tg.record(lambda y: np.sum(y ** 3), x).grad(x).sum())(np.ones(2))
    # a replay fed a tracer refuses to convert it (it would drop the derivative)
    with pytest.raises(TypeError, match="traced"):
        tg.grad(lambda x: r(x))(np.ones(3))


def test_rerecord_inside_another_recording():
    """A guard flip while an outer recording is active: the re-recording nests cleanly."""
    r = tg.record(lambda y: y * 2.0 if y > 0 else y * 3.0, 1.0)
    g = tg.grad(lambda x: x * r(np.float64(-1.0)))(2.0)
    assert g == -3.0 and r.rerecords == 1
    assert tracer._stack() == []


# ---------------------------------------------------------------------- mutation
def _setitem_into_view(x):
    # (assignment into a traced array itself is a functional update: tests/test_assignment.py)
    X = np.reshape(x, (3, 1))
    X[0][0] = 1.0
    return np.sum(X)


def _ufunc_out(x):
    np.add(x, 1.0, out=x)
    return np.sum(x)


def _set_shape(x):
    x.shape = (3, 1)
    return np.sum(x)


def _into_numpy(x):
    a = np.zeros(3)
    a[:] = x
    return np.sum(a)


def _asarray(x):
    return np.sum(np.asarray(x, dtype=np.float64))   # (without dtype=: traced, as an object array)


@pytest.mark.parametrize("f, exc, match", [
    (_setitem_into_view, ValueError, "view"),
    (_ufunc_out, TypeError, "out="),
    (_set_shape, AttributeError, "shape"),
    (_into_numpy, TypeError, "traced"),
    (_asarray, TypeError, "traced"),
])
def test_mutation_of_traced_arrays_is_refused(f, exc, match):
    with pytest.raises(exc, match=match):
        tg.grad(f)(np.ones(3))


def test_scalar_assignment_into_numpy_is_refused():
    """a[0] = tracer: NumPy converts the tracer with float(), which would drop the derivative; it
    is refused with the idiom (NumPy wraps the TypeError in a ValueError of its own)."""
    def f(x):
        a = np.zeros(3)
        a[0] = x[0]
        return np.sum(a) + np.sum(x)
    with pytest.raises(ValueError) as e:
        tg.grad(f)(np.ones(3))
    assert "np.zeros_like(x)" in str(e.value.__cause__)

    def g(x):
        a = np.zeros(3)
        a[1:2] += x[0]          # a slice: NumPy converts the traced sum the same way
        return np.sum(a) + np.sum(x)
    with pytest.raises((TypeError, ValueError)):
        tg.grad(g)(np.ones(3))


def test_augmented_assignment_rebinds_and_input_untouched():
    x = np.ones(3)

    def f(x):
        x += 1.0          # rebinding (Tracer has no in-place ops): correct derivative
        x *= x
        return np.sum(x)
    np.testing.assert_array_equal(tg.grad(f)(x), [4.0, 4.0, 4.0])
    np.testing.assert_array_equal(x, np.ones(3))
    r = tg.record(f, x)
    np.testing.assert_array_equal(r.grad(x), [4.0, 4.0, 4.0])
    np.testing.assert_array_equal(x, np.ones(3))


def test_returned_replay_arrays_are_independent():
    """Outputs of replays must not alias the per-thread work buffers."""
    r = tg.record(lambda x: np.sin(x) * 2.0, np.ones(3))
    a = r(np.zeros(3))
    b = r(np.ones(3))
    np.testing.assert_array_equal(a, np.zeros(3))
    rg = tg.record(lambda x: np.sum(np.sin(x)), np.ones(3))
    g1 = rg.grad(np.zeros(3))
    rg.grad(np.ones(3))
    np.testing.assert_array_equal(g1, np.ones(3))
    del b


def test_traced_conversion_warning_is_a_warning_not_silence():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(tg.TracerConversionWarning):
            tg.grad(lambda x: x * float(x))(2.0)


def test_division_by_constant_zero_follows_ieee():
    # x / 0.0 is recorded as x * (1/0.0); it must give IEEE's inf, -inf, nan, not raise
    x = np.array([2.0, -3.0, 0.0])
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = x / 0.0
        r = tg.record(lambda x: x / 0.0, x)
        np.testing.assert_array_equal(r(x), expected)
        np.testing.assert_array_equal(np.diag(tg.jacobian(lambda x: x / 0.0)(x)), [np.inf] * 3)


def test_power_of_zero_base_has_derivative_zero():
    # 0 ** y = 0 for y > 0, so d/dy is 0 (not 0 * log 0 = NaN), for a constant base (the rpowc
    # primitive; power's b-partial has it too), at every order and in a replay
    for f in (lambda y: np.power(0.0, y), lambda y: 0.0 ** y, lambda y: np.power(np.zeros(2), y)[1]):
        assert tg.grad(f)(0.3) == 0.0
        assert tg.jvp(f, (0.3,), (1.0,))[1] == 0.0
        assert tg.hvp(f, (0.3,), (1.0,)) == 0.0
        assert tg.record(f, 0.7).grad(0.3) == 0.0
    # a positive base keeps y log(d)
    np.testing.assert_allclose(tg.grad(lambda y: 2.0 ** y)(0.3), np.log(2.0) * 2.0 ** 0.3, rtol=1e-15)
    np.testing.assert_allclose(tg.hvp(lambda y: 2.0 ** y, (0.3,), (1.0,)), np.log(2.0) ** 2 * 2.0 ** 0.3,
                               rtol=1e-14)


def test_std_over_one_element_is_the_constant_zero():
    # one element per reduction: std is identically 0, so its derivative is 0 (sqrt's infinite
    # slope at 0 would give NaN); over more elements the closed form (x - mean) / (n std)
    x = np.array([[2.0], [3.0], [-1.0]])
    np.testing.assert_array_equal(tg.grad(lambda x: np.sum(np.std(x, axis=1)))(x), np.zeros((3, 1)))
    assert tg.grad(np.std)(np.array([4.0]))[0] == 0.0
    assert tg.grad(lambda z: np.std(z))(np.array([1.0 + 2.0j]))[0] == 0.0
    y = np.array([1.0, 2.0, 4.0])
    np.testing.assert_allclose(tg.grad(np.std)(y), (y - y.mean()) / (3 * y.std()), rtol=1e-14)


def test_power_b_partial_at_zero_and_negative_bases_is_the_same_on_every_path():
    # d/db a^b = a^b log(a): 0 at a = 0, NaN at a < 0 (no real derivative in b; autograd and
    # JAX give NaN too), for scalars and arrays, re-traced, replayed and in the reference sweep
    a, b = np.array([-2.0, 3.0, 0.0]), np.array([2.0, 2.0, 2.0])
    want = np.array([np.nan, 9.0 * np.log(3.0), 0.0])
    f = lambda a, b: np.sum(np.power(a, b))                       # noqa: E731
    np.testing.assert_allclose(tg.grad(f, argnums=1)(a, b), want, rtol=1e-15)
    for k in range(3):
        got = tg.grad(lambda a, b: np.power(a, b), argnums=1)(float(a[k]), 2.0)
        np.testing.assert_allclose(got, want[k], rtol=1e-15)
    r = tg.record(lambda b: f(a, b), b)
    np.testing.assert_allclose(r.grad(b), want, rtol=1e-15)
    tr = Traced(lambda b: f(a * 1.0, b), (b,))
    np.testing.assert_allclose(Sweep(tr).vjp([np.ones(())])[0], want, rtol=1e-15)
