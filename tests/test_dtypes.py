"""dtypes of derivatives (issue 15, item 5).

tapegrad computes in float64. Derivatives with respect to a float32 (float16) input come back
in that dtype, computed in float64 and rounded once at the end (so they equal the float64
derivative at the same point, cast); integer inputs are promoted to float64 (a Python int gives
a Python float); boolean and complex inputs are refused with an error naming the argument. The
autograd drop-in follows autograd (checked against it when it is installed)."""
import numpy as np
import pytest

import tapegrad as tg
import tapegrad.autograd as tga


def f(x):
    return np.sum(np.sin(x) * x ** 2)


def vec(x):
    return np.exp(x) * x[::-1]


X = np.array([0.3, -1.1, 0.7])


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_narrow_float_inputs_give_derivatives_in_their_dtype(dtype):
    x = X.astype(dtype)
    x64 = x.astype(np.float64)          # the same point, in float64
    v = np.ones(3, dtype)
    cases = [
        (tg.grad(f)(x), tg.grad(f)(x64)),
        (tg.value_and_grad(f)(x)[1], tg.grad(f)(x64)),
        (tg.vjp(vec, x)[1](np.ones(3))[0], tg.vjp(vec, x64)[1](np.ones(3))[0]),
        (tg.jvp(vec, (x,), (v,))[1], tg.jvp(vec, (x64,), (v.astype(np.float64),))[1]),
        (tg.hvp(f, (x,), (v,)), tg.hvp(f, (x64,), (v.astype(np.float64),))),
        (tg.jacobian(vec)(x), tg.jacobian(vec)(x64)),
        (tg.jacobian(vec, mode="fwd")(x), tg.jacobian(vec)(x64)),
        (tg.hessian(f)(x), tg.hessian(f)(x64)),
    ]
    for got, ref in cases:
        assert got.dtype == dtype
        # computed in float64 inside, rounded once: exactly the float64 result cast
        np.testing.assert_array_equal(got, ref.astype(dtype))


def test_numpy_float32_scalar_gives_a_numpy_float32_scalar():
    g = tg.grad(lambda t: t ** 3)(np.float32(2.0))
    assert type(g) is np.float32 and g == 12.0
    d2 = tg.grad(tg.grad(lambda t: t ** 3))(np.float32(2.0))
    assert type(d2) is np.float32 and d2 == 12.0
    d = tg.derivative(lambda t: t ** 3)(np.float32(2.0))
    assert type(d) is np.float32 and d == 12.0


def test_integers_are_promoted_to_float64():
    g = tg.grad(lambda t: t ** 2)(3)
    assert type(g) is float and g == 6.0
    g = tg.grad(lambda x: np.sum(x ** 2))(np.array([1, 2, 3]))
    assert g.dtype == np.float64
    np.testing.assert_array_equal(g, [2.0, 4.0, 6.0])
    g = tg.grad(lambda t: t ** 2)(np.int64(3))
    assert np.asarray(g).dtype == np.float64 and g == 6.0
    # an int32 array and a Python int in one pytree
    g = tg.grad(lambda p: np.sum(p[0] * p[1]))((np.array([1, 2], dtype=np.int32), 3))
    assert g[0].dtype == np.float64 and type(g[1]) is float
    np.testing.assert_array_equal(g[0], [3.0, 3.0])
    assert g[1] == 3.0


def test_mixed_dtypes_each_keep_their_own():
    a, b = X.astype(np.float32), X.copy()
    ga, gb = tg.grad(lambda a, b: np.sum(a * b ** 2), argnums=(0, 1))(a, b)
    assert ga.dtype == np.float32 and gb.dtype == np.float64
    J = tg.jacobian(lambda a, b: a * b, argnums=(0, 1))(a, b)
    assert J[0].dtype == np.float64          # NumPy's promotion of float32 and float64


def test_booleans_and_complex_are_refused_naming_the_argument():
    with pytest.raises(TypeError, match=r"argument 0 is boolean"):
        tg.grad(lambda x: np.sum(x * 2.0))(np.ones(2, dtype=bool))
    with pytest.raises(TypeError, match=r"argument 1\[1\] is boolean"):
        tg.grad(lambda a, b: np.sum(b[0]) * a, argnums=1)(1.0, (np.ones(2), np.ones(2, dtype=bool)))
    with pytest.raises(TypeError, match=r"argument 0\['w'\] is boolean"):
        tg.grad(lambda d: np.sum(d["w"] * 2.0))({"v": 1.0, "w": np.ones(2, dtype=bool)})
    # grad and jacobian take complex inputs now (tests/test_complex.py); hessian without
    # holomorphic=True names them
    with pytest.raises(TypeError, match=r"argument 2 is complex"):
        tg.hessian(lambda a, b, c: a * np.abs(c) ** 2, argnums=(0, 2))(1.0, 2.0, 1j)


def test_recorded_tapes_follow_the_call_dtypes():
    rec = tg.record(f, X)                       # recorded at float64
    x32 = X.astype(np.float32)
    for got, ref in [(rec.grad(x32), tg.grad(f)(x32)), (rec.hvp(x32, np.ones(3, np.float32)),
                                                       tg.hvp(f, (x32,), (np.ones(3, np.float32),))),
                     (rec.hessian(x32), tg.hessian(f)(x32)), (rec.vjp(x32, 1.0), tg.grad(f)(x32))]:
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, ref)
    assert rec.grad(X).dtype == np.float64
    rv = tg.record(vec, x32)                    # recorded at float32, replayed at float64
    assert rv.jacobian(X).dtype == np.float64 and rv.jacobian(x32).dtype == np.float32
    assert rv.jvp(x32, np.ones(3, np.float32))[1].dtype == np.float32
    rs = tg.record(lambda t: t ** 3, np.float32(2.0))
    assert rs.jvp(np.float32(2.0), np.float32(1.0))[1] == 12.0
    assert np.asarray(rs.jvp(np.float32(2.0), np.float32(1.0))[1]).dtype == np.float32


CASES = [
    ("python_int", lambda A, anp: A.grad(lambda x: x ** 2)(3)),
    ("python_bool", lambda A, anp: A.grad(lambda x: x * 2.0)(True)),
    ("numpy_int", lambda A, anp: A.grad(lambda x: x ** 2)(np.int64(3))),
    ("int_in_list", lambda A, anp: A.grad(lambda x: x[0] * 1.5)([1, 2.0])),
    ("int_array", lambda A, anp: A.grad(lambda x: anp.sum(x * 1.5))(np.array([1, 2]))),
    ("bool_array", lambda A, anp: A.grad(lambda x: anp.sum(x * 2.0))(np.array([True, False]))),
    ("f32_array", lambda A, anp: A.grad(lambda x: anp.sum(x ** 2))(np.array([1, 2], dtype=np.float32))),
    ("f32_scalar", lambda A, anp: A.grad(lambda x: x ** 2)(np.float32(3))),
    ("f16_array", lambda A, anp: A.grad(lambda x: anp.sum(x ** 2))(np.array([1, 2], dtype=np.float16))),
    ("jacobian_f32", lambda A, anp: A.jacobian(lambda x: x ** 2)(np.array([1, 2], dtype=np.float32))),
    ("hessian_f32", lambda A, anp: A.hessian(lambda x: anp.sum(x ** 3))(np.array([1, 2], dtype=np.float32))),
    ("elementwise_grad_int", lambda A, anp: A.elementwise_grad(lambda x: x ** 2 * 1.0)(np.array([1, 2]))),
    ("make_jvp_f32", lambda A, anp: A.make_jvp(lambda x: x ** 2)(np.array([1, 2], dtype=np.float32))(np.ones(2, np.float32))[1]),
]


@pytest.mark.parametrize("name, call", CASES, ids=[c[0] for c in CASES])
def test_autograd_dropin_dtypes_are_autograds(name, call):
    autograd = pytest.importorskip("autograd")
    import autograd.numpy as anp

    def outcome(A, np_):
        try:
            r = call(A, np_)
        except TypeError as e:
            return ("TypeError", str(e))
        return ("value", np.asarray(r).dtype, np.asarray(r, dtype=np.float64).tolist())
    expected = outcome(autograd, anp)
    got = outcome(tga, tga.numpy)
    assert got == expected


def test_casts_to_integers_and_booleans_are_traced_with_zero_derivative():
    # t.astype(int): NumPy's values (truncation toward zero) as a traced float64 array with no
    # derivative, so masks and counts built from traced values work in recordings too
    x = np.array([1.5, -2.5, 3.0, 0.0])
    g = tg.grad(lambda x: np.sum(x * (x > 0).astype(int)))(x)
    np.testing.assert_array_equal(g, (x > 0).astype(float))
    g = tg.grad(lambda x: np.sum(x * x.astype(np.int32)))(x)
    np.testing.assert_array_equal(g, np.trunc(x))              # d/dx (x trunc(x)) = trunc(x)
    np.testing.assert_array_equal(tg.vjp(lambda x: x.astype(int) * 1.0, x)[0], x.astype(int))
    np.testing.assert_array_equal(tg.vjp(lambda x: x.astype(bool), x)[0] != 0, x.astype(bool))
    with pytest.raises(ValueError, match="negative"):
        tg.grad(lambda x: np.sum(x.astype(np.uint8) * x))(x)
    # a replay recomputes the cast at the new point (traced, no guard needed)
    f = lambda x: np.sum(x * (x > 0).astype(int))              # noqa: E731
    r = tg.record(f, x)
    np.testing.assert_array_equal(r.grad(-x), (-x > 0).astype(float))
    assert r.rerecords == 0


def test_numpy_integer_conversion_of_a_traced_array_is_guarded():
    # np.int64(t) / np.asarray(t, dtype=int) must give NumPy an ndarray: the integers are
    # guarded, so a replay where they differ records again
    x = np.array([1.0, -2.0, 3.0])
    f = lambda x: np.sum(x[np.int64(x[:1])] ** 2)               # noqa: E731
    assert tg.grad(f)(x)[1] == -4.0                            # x[1] picked by int(1.0)
    r = tg.record(f, x)
    x2 = np.array([2.0, 0.0, 5.0])
    np.testing.assert_array_equal(r.grad(x2), [0.0, 0.0, 10.0])
    assert r.rerecords == 1
    with pytest.raises(tg.GuardError):
        tg.record(f, x, strict=True).grad(x2)


def test_a_numpy_array_indexed_by_traced_integers_or_masks():
    # np.eye(k)[labels] with labels from traced values: the index is guarded (no derivative)
    x = np.array([1.0, -2.0, 3.0])
    f = lambda x: np.sum((np.eye(3)[(x > 0).astype(int)] @ np.arange(3.0)) * x)   # noqa: E731
    sel = lambda x: np.eye(3)[(x > 0).astype(int)] @ np.arange(3.0)                # noqa: E731
    np.testing.assert_array_equal(tg.grad(f)(x), sel(x))
    r = tg.record(f, x)
    np.testing.assert_array_equal(r.grad(-x), sel(-x))
    assert r.rerecords == 1
    g = lambda x: np.sum(np.arange(3.0)[x > 0] * x[x > 0])     # noqa: E731  (a traced mask)
    np.testing.assert_array_equal(tg.grad(g)(x), [0.0, 0.0, 2.0])
    with pytest.raises(IndexError):
        tg.grad(lambda x: np.sum(np.eye(3)[x * 0.5]))(x)        # not integers: NumPy's error
