"""Arrays built from traced values the way NumPy code builds them (issue 15, item 1).

``np.array([...])``, ``np.asarray(x)``, ``np.r_``, ``np.c_``, ``np.mean(list)`` ... go through
``Tracer.__array__``, which hands NumPy an object array of scalar tracers; NumPy's object loops
compute with them, and the next traced operation turns the object array back into one traced
array. One row per idiom: the value against plain NumPy, ``check_grads`` (fwd, rev, order 2)
against central differences, and a recorded tape replayed at another point against re-tracing.
The idioms NumPy leaves no door for raise errors that name what to write instead.
"""
import warnings

import numpy as np
import pytest

import tapegrad as tg
from tapegrad.tracing.tracer import _stack


def N(*s):
    return lambda r: r.standard_normal(s)


def U(lo, hi, *s):
    return lambda r: r.uniform(lo, hi, s)


ROWS = [
    ("array_of_scalars", lambda x: np.array([x[0] * x[1], np.sin(x[2]), 2.0]), N(3)),
    ("array_nested_lists", lambda x: np.array([[x[0], 1.0], [x[1] ** 2, x[2] * x[0]]]) @ np.array([1.0, -2.0]), N(3)),
    ("array_of_vectors", lambda x: np.array([x, 2.0 * x, x ** 2]).sum(axis=0), N(3)),
    ("asarray_then_ufuncs", lambda x: np.exp(np.asarray(x)) + np.sqrt(np.asarray(x) ** 2 + 1.0) + np.tanh(np.asarray(x)), N(4)),
    ("asarray_log_abs", lambda x: np.log(np.abs(np.asarray(x))) + np.arctan2(np.asarray(x), 2.0), U(.5, 2, 3)),
    ("array_of_tracer_times_tracer", lambda x: np.array(x) * x + x / np.asarray(x[::-1]), U(.5, 2, 3)),
    ("object_array_meets_tracer", lambda x: np.concatenate([np.array([x[0], x[1] * x[2]]), x]) ** 2, N(3)),
    ("stack_with_object_array", lambda x: np.stack([np.array([x[0], x[1]]), x[1:] ** 2]), N(3)),
    ("r_scalars", lambda x: np.r_[x[0], x[1] ** 2, 3.0], N(2)),
    ("r_vectors", lambda x: np.r_[x, np.sin(x[1:]), [1.0, 2.0]], N(3)),
    ("c_columns", lambda x: np.c_[x, x ** 2, np.ones(3)], N(3)),
    ("hstack_scalars", lambda x: np.hstack([x[0], x[1] * x[0]]), N(2)),
    ("mean_of_list", lambda x: np.mean([x[0], x[1] ** 2, x[2] * x[0]]), N(3)),
    ("std_var_of_list", lambda x: np.std([x[0], x[1] ** 2, x[2]]) + np.var([x[0] * 2, x[1]], ddof=1), N(3)),
    ("sum_prod_of_list", lambda x: np.sum([x[0], x[1] ** 2, 1.0]) * np.prod([x[0], x[2]]), N(3)),
    ("max_min_of_list", lambda x: np.max([x[0], x[1] ** 2, x[2]]) - np.min([x[0], 3 * x[1]]),
     lambda r: np.array([0.3, 1.2, -0.4]) + r.uniform(-.05, .05, 3)),
    ("mean_of_list_axis", lambda x: np.mean([x, x ** 2], axis=0) + np.std([x, np.sin(x)], axis=0), N(3)),
    ("median_average_of_list", lambda x: np.median([x[0], x[1] * 2.0, x[2] + 1.0]) + np.average([x[0], x[1] ** 2], weights=[1.0, 3.0]),
     lambda r: np.array([0.3, 1.2, -0.4]) + r.uniform(-.05, .05, 3)),
    ("object_methods", lambda x: np.array([x[0], x[1]]).mean() + np.asarray(x).sum() + np.asarray(x).dot(x), N(3)),
    ("dot_with_constant_matrix", lambda x: np.asarray(x) @ np.arange(6.0).reshape(3, 2), N(3)),
    ("norm_of_object_array", lambda x: np.linalg.norm(np.array([x[0], x[1], 1.0])), N(2)),
    ("assign_a_list_into_traced", lambda x: _assign_list(x), N(3)),
    ("returned_object_array", lambda x: np.array([x[0] * x[1], x[1] ** 3]), N(2)),
    ("lists_as_arguments", lambda x: np.where(x > 0, [x[0], x[1] ** 2, x[2]], 0.5) + np.concatenate([[x[0], x[1]], x[2:]])
     + np.stack([[x[2], x[1], x[0]], x])[1] + (x + [x[2], 1.0, x[0]]) + np.average([x[0], x[1] ** 2, x[2]], weights=x ** 2),
     lambda r: np.array([0.3, -1.2, 2.0]) + r.uniform(-.05, .05, 3)),
    ("nan_functions_of_lists", lambda x: np.nanmean([x[0], x[1] ** 2]) + np.nanvar([x[0], x[1] ** 2, x[2]])
     + np.nanstd([x, x ** 2], axis=0) + np.nansum([x[0], x[2]]), N(3)),
]


def _assign_list(x):
    out = np.zeros_like(x)
    out[:2] = [x[1] * x[2], x[0] ** 2]
    return out


def _flat(o):
    return np.ravel(np.asarray(o, dtype=np.float64))


def _plain(fn, x):
    """fn on a plain float array: what NumPy itself gives (object loops are not involved)."""
    return np.asarray(fn(x), dtype=np.float64)


@pytest.mark.parametrize("name, fn, gen", ROWS, ids=[r[0] for r in ROWS])
def test_idiom_value_and_derivatives(name, fn, gen, rng):
    x = gen(rng)
    with warnings.catch_warnings():
        warnings.simplefilter("error")        # no TracerConversionWarning: nothing dropped
        out, _ = tg.vjp(fn, x)
        np.testing.assert_allclose(_flat(out), _flat(_plain(fn, x)), rtol=1e-12, atol=1e-12)
        tg.check_grads(fn, x, modes=("fwd", "rev"), order=2)
        w = np.random.default_rng(3).uniform(0.5, 1.5, np.shape(_plain(fn, x)))
        # (cubed, not sin: NumPy's object loop for np.sin calls .sin() on every element, and
        # a plain float element of an object array has none; see docs/numpy_support.md)
        tg.check_grads(lambda x: np.sum(w * fn(x) ** 3), x, modes=("fwd", "rev"), order=2)
    assert _stack() == []


@pytest.mark.parametrize("name, fn, gen", ROWS, ids=[r[0] for r in ROWS])
def test_idiom_on_a_recorded_tape(name, fn, gen, rng):
    x = gen(rng)
    near = x + 1e-3 * np.random.default_rng(4).standard_normal(x.shape)
    rec = tg.record(fn, x)
    np.testing.assert_allclose(_flat(rec(near)), _flat(_plain(fn, near)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rec.jacobian(near), tg.jacobian(fn)(near), rtol=1e-10, atol=1e-12)
    s = lambda x: np.sum(fn(x) ** 3)  # noqa: E731
    np.testing.assert_allclose(tg.record(s, x).hessian(near), tg.hessian(s)(near), rtol=1e-9, atol=1e-11)


def test_closed_forms():
    x = np.array([0.7, -1.3, 2.1])
    # d/dx mean([x0, x1^2, x0 x2]) = [1 + x2, 2 x1, x0] / 3
    np.testing.assert_allclose(tg.grad(lambda x: np.mean([x[0], x[1] ** 2, x[0] * x[2]]))(x),
                               np.array([1 + x[2], 2 * x[1], x[0]]) / 3)
    # d/dx var([x0, x1]) = [x0 - x1, x1 - x0] / 2
    np.testing.assert_allclose(tg.grad(lambda x: np.var([x[0], x[1]]))(x),
                               [(x[0] - x[1]) / 2, (x[1] - x[0]) / 2, 0.0])
    # the second derivative through an object array: d2/dx0^2 sum(array([x0^3, x1]) ** 2) = 30 x0^4
    H = tg.hessian(lambda x: np.sum(np.array([x[0] ** 3, x[1]]) ** 2))(x[:2])
    np.testing.assert_allclose(H, [[30 * x[0] ** 4, 0.0], [0.0, 2.0]])
    # grad of grad through np.r_ and np.array inside both levels
    f = lambda t: np.sum(np.r_[t, t ** 2] * np.array([1.0, 1.0]))  # noqa: E731
    assert np.isclose(tg.grad(tg.grad(f))(1.5), 2.0)
    # a Python loop filling a list, then np.array: the most common idiom
    def loop(x):
        vals = []
        for k in range(3):
            vals.append(x[k] * (k + 1.0))
        return np.dot(np.array(vals), np.array(vals))
    np.testing.assert_allclose(tg.grad(loop)(x), 2 * x * np.array([1.0, 4.0, 9.0]))


def test_guards_of_object_comparisons_rerecord():
    """np.max of a list compares tracers (a guarded decision): a replay where another element
    is the largest re-records and returns that element's derivative."""
    f = lambda x: np.max([x[0], x[1] ** 2])  # noqa: E731
    rec = tg.record(f, np.array([2.0, 1.0]))
    for x in (np.array([3.0, 1.0]), np.array([0.5, 2.0])):
        np.testing.assert_allclose(rec.grad(x), tg.grad(f)(x))
    np.testing.assert_allclose(rec.grad(np.array([0.5, 2.0])), [0.0, 4.0])


# ------------------------------------------------------------------ no door: clear errors
def test_a_float_dtype_is_refused_naming_the_idiom():
    x = np.array([1.0, 2.0])
    for conv in (lambda x: np.array([x[0], x[1]], dtype=float), lambda x: np.asarray(x, dtype=np.float64),
                 lambda x: np.asarray([x[0], 1.0], dtype=np.float32)):
        with pytest.raises(TypeError, match="np.stack"):
            tg.grad(lambda x: np.sum(conv(x)))(x)
    # np.float64(t) of a scalar tracer is float(t): an explicit decision, a guarded constant
    with pytest.warns(tg.TracerConversionWarning):
        np.testing.assert_array_equal(tg.grad(lambda x: np.float64(x[0]) * x[1])(x), [0.0, 1.0])
    # astype(float) of an object array: NumPy raises its ValueError caused by ours
    with pytest.raises(ValueError) as e:
        tg.grad(lambda x: np.sum(np.array([x[0], x[1]]).astype(float)))(x)
    assert "np.stack" in str(e.value.__cause__)
    assert _stack() == []


def test_quantiles_of_lists_are_refused_and_stack_works():
    """np.quantile / np.percentile of a list of tracers: NumPy's interpolation writes into its
    result with out=, which tapegrad refuses for traced arrays; np.stack the list first."""
    x = np.array([0.3, -1.2, 2.0])
    with pytest.raises(TypeError, match="out="):
        tg.grad(lambda x: np.percentile([x[0], x[1] ** 2, x[2]], 40))(x)
    g = tg.grad(lambda x: np.percentile(np.stack([x[0], x[1] ** 2, x[2]]), 40))(x)
    # 40th percentile of [0.3, 1.44, 2.0]: 0.3 + 0.8 (1.44 - 0.3), d/dx1 = 0.8 * 2 x1
    np.testing.assert_allclose(g, [0.2, 0.8 * 2 * x[1], 0.0])


def test_assignment_into_a_plain_array_still_names_zeros_like():
    def f(x):
        a = np.zeros(3)
        a[:2] = [x[0], x[1]]
        return np.sum(a)
    with pytest.raises(TypeError, match="zeros_like"):
        tg.grad(f)(np.ones(3))


def test_functions_numpy_does_not_dispatch_for_object_arrays_raise():
    """np.linalg and the ufuncs without an object loop get no tracer to dispatch on: NumPy's
    own TypeError (never a wrong derivative); np.stack first makes them traced."""
    x = np.array([2.0, 0.5, 0.3])
    with pytest.raises(TypeError):
        tg.grad(lambda x: np.linalg.det(np.array([[x[0], x[1]], [x[2], 1.0]])))(x)
    with pytest.raises(TypeError):
        tg.grad(lambda x: np.sum(np.logaddexp(np.array([x[0], x[1]]), 0.0)))(x)
    M = lambda x: np.stack([np.stack([x[0], x[1]]), np.stack([x[2], 1.0 + 0 * x[0]])])  # noqa: E731
    np.testing.assert_allclose(tg.grad(lambda x: np.linalg.det(M(x)))(x), [1.0, -x[2], -x[1]])


def test_ragged_and_non_numeric_object_arrays_are_refused():
    def ragged(x):
        o = np.empty(2, dtype=object)
        o[0], o[1] = x, x[0]
        return np.sum(o * x[0])
    with pytest.raises(ValueError, match="np.stack"):
        tg.grad(lambda x: np.sum(ragged(x) + x[0]))(np.ones(2))
    with pytest.raises(TypeError, match="np.stack"):
        tg.grad(lambda x: np.sum(np.array([x[0], "a"], dtype=object) * x[0]))(np.ones(2))


def test_outer_tracers_inside_an_inner_object_array():
    """An object array of an inner recording holding an outer one's tracers: they are constants
    there, remembered with their source, so the outer derivative flows through them."""
    def outer(a):       # d/dx sum([x a, x^2, a^2]) at 1.5 = a + 3
        return tg.grad(lambda x: np.sum(np.array([x * a, x ** 2, a * a])))(1.5)
    assert np.isclose(tg.grad(outer)(2.0), 1.0)

    def outer_mean(a):  # d/dx mean([x a, x^2 a]) at 1.5 = 2 a
        return tg.grad(lambda x: np.mean([x * a, x ** 2 * a]))(1.5)
    assert np.isclose(tg.grad(outer_mean)(2.0), 2.0)

    def outer_asarray(a):   # d/dx1 sum(asarray(a) x^2) at x = [1, 2] = 4 a1
        return tg.grad(lambda x: np.sum(np.asarray(a) * x ** 2))(np.array([1.0, 2.0]))[1]
    np.testing.assert_allclose(tg.grad(outer_asarray)(np.array([1.0, 3.0])), [0.0, 4.0])


def test_vmap_through_object_arrays():
    f = lambda x: np.sum(np.array([x[0] * x[1], x[1] ** 2]))  # noqa: E731
    X = np.array([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_allclose(tg.vmap(tg.grad(f))(X), [[2.0, 5.0], [4.0, 11.0]])
    np.testing.assert_allclose(tg.vmap(f)(X), [6.0, 28.0])


def test_ufunc_out_into_an_object_array():
    """np.multiply(x, 2, out=obj) with obj an object array: the traced result's elements are
    stored in it (where= masks), as NumPy stores numbers."""
    def f(x):
        o = np.array([x[0], x[1], x[2]])
        np.multiply(x, 2.0, out=o, where=np.array([True, False, True]))
        return np.sum(o * o)
    x = np.array([0.5, -1.0, 2.0])
    np.testing.assert_allclose(tg.grad(f)(x), [8 * x[0], 2 * x[1], 8 * x[2]])
    tg.check_grads(f, x, modes=("fwd", "rev"), order=2)
    # into a plain float array it stays refused
    with pytest.raises(TypeError, match="out="):
        tg.grad(lambda x: np.sum(np.multiply(x, 2.0, out=np.zeros(3))))(x)


def test_a_selection_over_an_array_of_tracers_and_numbers_that_picks_only_numbers():
    # np.min over an object array (np.array of scalar tracers and floats) may return numbers
    # only: a constant, not an error (autograd's test_min_3_way_equality)
    f = lambda x: np.min(np.array([[x, x, x], [x, 0.5, 0.5], [0.5, 0.5, 0.5], [x, x, 0.5]]), axis=0)  # noqa: E731
    out, dot = tg.jvp(f, (1.0,), (1.0,))
    np.testing.assert_array_equal(out, [0.5, 0.5, 0.5])
    np.testing.assert_array_equal(dot, [0.0, 0.0, 0.0])
    out, dot = tg.jvp(f, (-1.0,), (1.0,))
    np.testing.assert_array_equal(dot, [1.0, 1.0, 1.0])
    with pytest.raises(TypeError, match="str"):
        tg.vjp(lambda x: np.array([x, "a"], dtype=object), 1.0)
