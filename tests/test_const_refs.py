"""Large constant arrays are referenced by the tape, not copied (Tape.add_const_ref).

The rule (docs/numpy_support.md, "Data arrays"): a tape reads a referenced array's contents
when it sweeps, so an array changed in place after recording is seen by the next replay, never
a stale copy; vjp copies (its pullback sweeps later over values computed at the call);
serialization writes the contents at that time.
"""
import pickle

import numpy as np
import pytest

import tapegrad as tg
from tapegrad.engine.traced import Traced
from tapegrad.tracing.tracer import REF_MIN

rng = np.random.default_rng(7)
X = rng.standard_normal((300, 20))          # 6000 elements: referenced
w0 = 0.1 * rng.standard_normal(20)


def loss(w, X=X):
    z = X @ w
    return np.sum(np.logaddexp(0.0, -z)) / z.shape[0] + 0.05 * np.sum(w * w)


def hand_grad(w, X):
    z = X @ w
    s = np.exp(-np.logaddexp(0.0, z))
    return X.T @ (s * (-1.0 / z.shape[0])) + 0.1 * w


def test_large_closed_over_array_is_referenced_not_copied():
    tr = Traced(loss, (w0,))
    assert X.size >= REF_MIN
    assert tr.tape.nrefs == 1
    assert tr.tape.nconst >= X.size                   # counted, not held
    assert tr.tape.nbytes() < X.nbytes                 # the tape holds no copy of X
    assert X.flags.writeable                            # the user's array is left alone
    np.testing.assert_allclose(tg.grad(loss)(w0), hand_grad(w0, X), rtol=1e-12, atol=1e-15)


def test_small_arrays_are_copied():
    a = np.arange(1.0, 11.0)
    tr = Traced(lambda x: np.sum(x * a), (np.ones(10),))
    assert tr.tape.nrefs == 0


def test_mutation_after_recording_is_seen_by_replay():
    """The issue's check: an array changed in place after recording is never silently ignored."""
    A = X.copy()
    f = lambda w: loss(w, A)   # noqa: E731
    tape = tg.record(f, w0)
    v0, g0 = tape.value_and_grad(w0)
    np.testing.assert_allclose(g0, hand_grad(w0, A), rtol=1e-12, atol=1e-15)
    A *= 1.5
    A[3, 4] = -2.0
    v1, g1 = tape.value_and_grad(w0)
    np.testing.assert_allclose(g1, hand_grad(w0, A), rtol=1e-12, atol=1e-15)
    assert abs(v1 - f(w0)) <= 1e-12 * abs(v1)
    assert not np.allclose(g0, g1)
    # the other sweeps read the new contents too
    np.testing.assert_allclose(tape(w0), f(w0), rtol=1e-13)
    v = rng.standard_normal(20)
    np.testing.assert_allclose(tape.hvp(w0, v), tg.hvp(f, (w0,), (v,)), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(tape.jvp(w0, v)[1], tg.jvp(f, (w0,), (v,))[1], rtol=1e-12,
                               atol=1e-14)


def test_vjp_pullback_keeps_the_constants_of_its_call():
    """vjp's pullback sweeps over the values computed at vjp(): it copies its constants, so
    changing the array in between gives the derivative of the call it was made for."""
    A = X.copy()
    out, pull = tg.vjp(lambda w: loss(w, A), w0)
    want = hand_grad(w0, A)
    A *= 3.0
    np.testing.assert_allclose(pull(1.0)[0], want, rtol=1e-12, atol=1e-15)


def test_serialized_tape_holds_the_contents_at_that_time():
    A = X.copy()
    tape = tg.record(lambda w: loss(w, A), w0)
    want = hand_grad(w0, A)
    data = tape.to_bytes()
    A[:] = 0.0
    t2 = tg.load(data)
    np.testing.assert_allclose(t2.grad(w0), want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(tape.grad(w0), 0.1 * w0, rtol=1e-12, atol=1e-15)  # A = 0 now


def test_referenced_tape_pickles_and_bad_offsets_are_refused():
    tr = Traced(loss, (w0,))
    t2 = pickle.loads(pickle.dumps(tr.tape))
    assert t2.nrefs == 0 and t2.nconst == tr.tape.nconst
    ops = tr.tape.op_table()
    assert (ops["a"] >= 1 << 60).any() or (ops["b"] >= 1 << 60).any()
    # a referenced region past the array's end is refused by validate(), never read
    from tapegrad._core.tape import Tape, OPCODES, FLAG_A, FLAG_B
    t = Tape()
    off = t.add_const_ref(np.ones(2000))
    out = t.alloc(10)
    t.add_op(OPCODES["copy"], FLAG_A, out, off + 1995, 0, 0, 10)
    t.set_io(0, out, 10)
    with pytest.raises(ValueError, match="referenced constant"):
        t.validate()
    t2 = Tape()
    t2.add_const_ref(np.ones(2000))
    out = t2.alloc(10)
    t2.add_op(OPCODES["copy"], FLAG_A, out, (1 << 60) + (5 << 36), 0, 0, 10)
    t2.set_io(0, out, 10)
    with pytest.raises(ValueError, match="outside the buffers"):    # array 5 does not exist
        t2.validate()
    # nor may an unused operand name a missing referenced array (the sweeps form its pointer)
    t3 = Tape()
    out = t3.alloc(1)
    t3.add_op(OPCODES["sin"], FLAG_A | FLAG_B, out, 0, (1 << 60) + (3 << 36), 0, 1)
    t3.set_io(1, out, 1)
    with pytest.raises(ValueError, match="outside the buffers"):
        t3.validate()


def test_non_contiguous_and_other_dtypes_are_copied():
    from tapegrad._core.tape import Tape
    t = Tape()
    t.add_const_ref(np.ones((100, 40))[:, ::2])
    t.add_const_ref(np.ones(3000, dtype=np.float32))
    assert t.nrefs == 0 and t.nconst == 5000
    # a gradient through a strided view of a large array is right
    B = rng.standard_normal((100, 60))
    f = lambda x: np.sum((B[:, ::3] @ x) ** 2)   # noqa: E731
    x = rng.standard_normal(20)
    Bs = B[:, ::3]
    np.testing.assert_allclose(tg.grad(f)(x), 2 * Bs.T @ (Bs @ x), rtol=1e-12)


def test_nested_and_inspect_read_referenced_constants():
    A = X[:, :5].copy() if X[:, :5].size >= REF_MIN else np.tile(X[:, :5], (4, 1))
    assert A.size >= REF_MIN
    f = lambda w: np.sum(np.tanh(A @ w))   # noqa: E731
    x = rng.standard_normal(5)
    H = tg.hessian(f)(x)
    z = A @ x
    t = np.tanh(z)
    want = A.T @ (A * (-2 * t * (1 - t * t))[:, None])
    np.testing.assert_allclose(H, want, rtol=1e-10, atol=1e-12)
    Hn = tg.jacobian(tg.grad(f))(x)                   # nested: the reference sweep reads A
    np.testing.assert_allclose(Hn, want, rtol=1e-10, atol=1e-12)
    from tapegrad import inspect as tgi
    g = tgi.Graph(Traced(f, (x,)))
    consts = [n for n in g.nodes if n["kind"] == "const"]
    assert any(n["size"] == A.size and np.array_equal(n["value"], A.ravel()) for n in consts)


def test_in_place_change_of_a_referenced_array_inside_f_raises_not_wrong():
    M = np.ones((64, 64))                     # 4096 elements: referenced, not copied

    def f(x):
        y = np.sum(M @ x)
        M[0, 0] = 5.0                         # after the use: the sweeps would read 5
        return y + np.sum(M @ x)
    with pytest.raises(ValueError, match="read-only"):
        tg.grad(f)(np.ones(64))
    assert M.flags.writeable and M[0, 0] == 1.0           # writeable again, unchanged

    def g(x):
        return np.sum(M @ x)
    tg.grad(g)(np.ones(64))
    M[0, 0] = 2.0                             # after the call: the user's array is writeable
    ro = np.ones((64, 64))
    ro.flags.writeable = False
    tg.grad(lambda x: np.sum(ro @ x))(np.ones(64))
    assert not ro.flags.writeable             # an array read-only before stays so
