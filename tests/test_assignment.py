"""Item and slice assignment into traced arrays: functional updates (a scatter whose adjoint is
a gather, and the assigned region zeroed in the old array's adjoint), with NumPy's semantics,
checked against central differences in every mode and on recorded tapes."""
import numpy as np
import pytest

import tapegrad as tg


def set_scalar(x):
    y = x.copy()
    y[1] = x[0] ** 2
    return y * x


def set_slice(x):
    y = np.zeros_like(x)
    y[1:3] = np.sin(x[:2])
    y[0] = x[3] * x[2]
    return y


def set_mask(x):
    y = x * 1.0
    y[x > 0.2] = np.exp(x[x > 0.2])
    return y


def set_fancy_repeats(x):
    y = np.zeros_like(x)
    y[[0, 2, 0]] = x[1:4] ** 3         # repeated index 0: the last assignment (x[3]**3) wins
    return y + x


def augmented(x):
    y = x.copy()
    y[[1, 1, 2]] += x[:3] * 2.0       # NumPy's buffered +=: position 1 gets x[1] * 2 once
    y[...] *= x
    y[:2] -= 1.0
    y[2:] /= (x[2:] ** 2 + 1.0)
    return y


def matrix_rows_and_columns(x):
    X = np.reshape(x, (2, 2)).copy()
    X[:, 0] = X[:, 1] * X[0, 0]
    X[1] = np.tanh(X[0])
    return X


def recurrence(x):
    out = np.zeros(5) * x[0]           # a traced array to assign into
    out[0] = x[0]
    for k in range(1, 5):
        out[k] = np.sin(out[k - 1]) + x[1] * k
    return out


def broadcast_value(x):
    y = np.zeros_like(np.outer(x[:2], x[:3]))
    y[:, 1:] = x[2]                   # a scalar broadcast into a (2, 2) block
    y[0] = x[:3]
    return y


CASES = [set_scalar, set_slice, set_mask, set_fancy_repeats, augmented, matrix_rows_and_columns,
         recurrence, broadcast_value]


@pytest.mark.parametrize("f", CASES, ids=lambda f: f.__name__)
def test_assignment_all_modes_against_differences(f):
    x = np.array([0.7, -0.4, 1.3, 0.25])
    tg.check_grads(f, x, modes=("fwd", "rev"), order=2)
    scalar = lambda x: np.sum(np.cos(f(x)) * np.arange(1.0, np.size(f(x)) + 1).reshape(np.shape(f(x))))
    tg.check_grads(scalar, x, modes=("rev",), order=2)       # hvp (tangent of reverse)
    rec = tg.record(scalar, x)
    x1 = np.array([0.3, 0.9, -0.6, 0.5])
    if f is set_mask:
        x1 = np.array([0.3, -0.9, 0.6, 0.1])    # the same mask pattern as x (a guard holds)
    np.testing.assert_allclose(rec.grad(x1), tg.grad(scalar)(x1), rtol=1e-13, atol=1e-15)


def test_values_follow_numpy():
    x = np.array([0.7, -0.4, 1.3, 0.25])
    for f in CASES:
        got = f(x)                       # no recording: NumPy runs the function itself
        traced = tg.jvp(f, (x,), (np.zeros(4),))[0]
        np.testing.assert_allclose(traced, got, rtol=1e-15, err_msg=f.__name__)


def test_repeated_indices_closed_form():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    g = tg.grad(lambda x: np.sum(set_fancy_repeats(x)))(x)
    # y[0] = x3^3, y[2] = x2^3 (x1^3 lost), plus x
    np.testing.assert_allclose(g, [1.0, 1.0, 1.0 + 3 * 9.0, 1.0 + 3 * 16.0])
    g = tg.grad(lambda x: np.sum(augmented(x)[1]))(x)
    # y1 = (x1 + 2 x1) * x1 - 1  ->  d/dx1 = 6 x1
    np.testing.assert_allclose(g, [0.0, 12.0, 0.0, 0.0])


def test_nested_gradients_through_assignment():
    def f(x):
        y = np.zeros_like(x)
        y[0] = x[0] ** 3
        y[1] = x[0] * x[1]
        return np.sum(y)
    x = np.array([0.5, 2.0])
    H = tg.jacobian(tg.grad(f))(x)
    np.testing.assert_allclose(H, [[6 * 0.5, 1.0], [1.0, 0.0]], rtol=1e-14)


def test_copies_are_independent():
    def f(x):
        y = x.copy()
        y[0] = 0.0
        z = np.copy(x)
        z[1] = 0.0
        return np.sum(x) + np.sum(y) * 2 + np.sum(z) * 4
    np.testing.assert_array_equal(tg.grad(f)(np.ones(3)), [1 + 4, 1 + 2, 1 + 2 + 4])


def test_writes_numpy_would_show_through_a_view_are_refused():
    def chained(x):
        X = np.reshape(x, (2, 2))
        X[0][1] = 5.0                   # NumPy changes X through the row view
        return np.sum(X)

    def stale_view(x):
        row = x[0:2]
        x[1] = 7.0                      # NumPy's row would show 7.0
        return np.sum(row)

    for f in (chained, stale_view):
        with pytest.raises(tg.TapegradValueError, match="view"):
            tg.grad(f)(np.ones(4))

    def fine(x):
        row = x[0:2]                    # a view of elements no assignment touches
        x[3] = x[0] * 3.0
        X = np.reshape(x, (2, 2)).copy()
        X[1, 1] += 1.0                  # into a copy
        return np.sum(row) + np.sum(X)
    np.testing.assert_array_equal(tg.grad(fine)(np.ones(4)), [2 + 3, 2, 1, 0])


def test_assigning_a_tracer_into_a_plain_array_names_the_idiom():
    def f(x):
        a = np.zeros(3)
        a[:] = x
        return np.sum(a)
    with pytest.raises(TypeError, match="zeros_like"):
        tg.grad(f)(np.ones(3))


def test_elements_read_before_an_assignment_keep_their_values_as_in_numpy():
    def f(x):
        s = x[0]            # NumPy: a scalar (a copy), not a view
        t = x[1, 0] if x.ndim == 2 else x[1]
        x[0] = 5.0 * x[1]
        return s * 2.0 + t + np.sum(x)
    x = np.array([1.5, -0.5, 2.0])
    assert tg.jvp(f, (x,), (np.zeros(3),))[0] == f(x.copy())
    np.testing.assert_allclose(tg.grad(f)(x), [2.0, 1.0 + 5.0 + 1.0, 1.0])
