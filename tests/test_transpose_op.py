"""The transpose op: permutations that swap two neighbouring groups of axes are one block move
(not an index gather) in every sweep, the reference sweep and the sparsity patterns."""
import numpy as np
import pytest

import tapegrad as tg
from tapegrad.checking import check_grads
from tapegrad.primitives import OPCODES
from tapegrad.rules.base import _swap_blocks

CASES = [((3, 4), (1, 0)), ((3, 4, 5), (1, 0, 2)), ((3, 4, 5), (0, 2, 1)),
         ((2, 3, 4, 5), (0, 3, 1, 2)), ((3, 4, 5), (2, 0, 1)), ((3, 4, 5), (1, 2, 0)),
         ((40, 70), (1, 0)), ((33, 2, 65), (2, 1, 0)), ((2, 3, 4), (2, 1, 0))]


def _codes(rec):
    return set(rec.tape.op_table()["code"].tolist())


def test_which_permutations_are_block_swaps():
    # (D, A, B, C) worked out by hand from the shapes
    assert _swap_blocks((3, 4), (1, 0)) == (1, 3, 4, 1)
    assert _swap_blocks((3, 4, 5), (1, 0, 2)) == (1, 3, 4, 5)
    assert _swap_blocks((3, 4, 5), (0, 2, 1)) == (3, 4, 5, 1)
    assert _swap_blocks((2, 3, 4, 5), (0, 3, 1, 2)) == (2, 12, 5, 1)
    assert _swap_blocks((3, 4, 5), (2, 0, 1)) == (1, 12, 5, 1)
    assert _swap_blocks((3, 4, 5), (1, 2, 0)) == (1, 3, 20, 1)
    assert _swap_blocks((2, 3, 4, 5), (0, 2, 1, 3)) == (2, 3, 4, 5)
    assert _swap_blocks((3, 4, 5), (2, 1, 0)) is None      # a reversal: three groups
    assert _swap_blocks((2, 3, 4, 5), (1, 0, 3, 2)) is None


@pytest.mark.parametrize("shape, axes", CASES)
def test_values_and_derivatives(shape, axes):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape)
    W = rng.standard_normal(np.transpose(x, axes).shape)

    def f(x):
        return np.sum(W * np.sin(np.transpose(x, axes)) ** 2)

    rec = tg.record(f, x)
    swap = _swap_blocks(shape, axes) is not None
    assert (OPCODES["transpose"] in _codes(rec)) == swap
    assert (OPCODES["gather"] in _codes(rec)) == (not swap)
    check_grads(f, x, modes=("fwd", "rev"), order=2)
    # the exact permutation: the Jacobian of the transpose is a 0/1 matrix (no rounding)
    perm = np.arange(x.size).reshape(shape).transpose(axes).ravel()
    J = tg.jacobian(lambda z: np.transpose(z, axes))(x).reshape(x.size, x.size)
    np.testing.assert_array_equal(J, np.eye(x.size)[perm])
    r2 = tg.record(lambda z: np.transpose(z, axes) * 1.0, x)
    np.testing.assert_array_equal(r2(x), np.transpose(x, axes))
    np.testing.assert_array_equal(r2.jacobian(x).reshape(x.size, x.size), np.eye(x.size)[perm])
    # compiled replay at a new point against re-tracing, and H v against the nested (Python
    # reference) sweep: grad of <grad f, v>
    x1 = rng.standard_normal(shape)
    v = rng.standard_normal(shape)
    np.testing.assert_allclose(rec.grad(x1), tg.grad(f)(x1), rtol=1e-13, atol=1e-14)
    hv = tg.grad(lambda z: np.sum(tg.grad(f)(z) * v))(x1)
    np.testing.assert_allclose(rec.hvp(x1, v), hv, rtol=1e-12, atol=1e-13)


def test_sparsity_pattern_of_a_transpose_is_the_permutation():
    x = np.random.default_rng(1).standard_normal(12)
    perm = np.arange(12).reshape(3, 4).T.ravel()
    rec = tg.record(lambda z: np.sin(z.reshape(3, 4).T).ravel() * z[0], x)
    P = rec.jacobian_sparsity().toarray()
    expect = np.eye(12, dtype=bool)[perm]
    expect[:, 0] = True
    np.testing.assert_array_equal(P, expect)
    np.testing.assert_allclose(rec.sparse_jacobian(x).toarray(), rec.jacobian(x), rtol=1e-14)


def test_a_transposed_tape_is_smaller_and_round_trips():
    x = np.random.default_rng(2).standard_normal((200, 30))
    rec = tg.record(lambda z: np.sum(np.tanh(z.T) ** 2), x)
    assert OPCODES["transpose"] in _codes(rec) and OPCODES["gather"] not in _codes(rec)
    back = tg.load(rec.to_bytes())
    np.testing.assert_array_equal(back.grad(x), rec.grad(x))
    # no index pool: the tape holds no 8 bytes per element for the permutation (a gather does)
    assert rec.tape.nbytes() < 8 * x.size
    gathered = tg.record(lambda z: np.sum(np.tanh(np.transpose(z.reshape(20, 10, 30), (2, 1, 0))) ** 2), x)
    assert OPCODES["gather"] in _codes(gathered) and gathered.tape.nbytes() > 8 * x.size
