"""Loop tiling of elementwise runs: tiled sweeps give bitwise the same values and adjoints as the
op-by-op sweeps, and the segment rules tile what they may and nothing else."""
import numpy as np
import pytest

import tapegrad as tg
from tapegrad._core import sweeps
from tapegrad._core.tape import OPCODES, FLAG_A, FLAG_B

N_BIG = 10007          # not a multiple of any tile length tried
TILES = (16, 64, 512, 2048)


@pytest.fixture(autouse=True)
def _restore_tiling():
    prev = sweeps.set_tiling(True)
    yield
    sweeps.set_tiling(*prev)


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float64).view(np.int64)


def sweep_all(tape, x, tiled, tile=2048):
    sweeps.set_tiling(tiled, tile)
    x = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
    w = sweeps.forward(tape, x).copy()
    rng = np.random.default_rng(7)
    seed = rng.standard_normal(tape.out_n)
    wb = sweeps.reverse(tape, w, seed).copy()
    # the tangent and tangent-of-reverse sweeps tile the same segments (two lanes)
    V = rng.standard_normal((2, tape.nin))
    wd = sweeps.tangent(tape, w, V).copy()
    out = [w, wb, wd]
    if tape.out_n == 1:
        g = np.empty(tape.nin)
        val, ok = sweeps.value_and_grad(tape, x, np.empty(tape.nwork), np.empty(tape.nwork), g)
        out += [np.array([val]), g, sweeps.hvp(tape, w, V).copy()]
    return out


def check_same(tape, x, expect_segments=None):
    if expect_segments is not None:
        assert tape.segments() == expect_segments
    ref = sweep_all(tape, x, False)
    for tile in TILES:
        got = sweep_all(tape, x, True, tile)
        for r, g in zip(ref, got):
            assert np.array_equal(bits(r), bits(g)), f"tile {tile}: results differ"
    return ref


def rosen(x):
    return np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def chain(x):
    y = np.exp(np.sin(x) * 0.5) + np.tanh(x) * x
    y = np.log1p(y * y) - np.sqrt(np.abs(y) + 1.0)
    y = np.arctan2(y, x + 2.0) + np.hypot(y, x) / (1.5 + np.cos(x))
    return np.sum(np.logaddexp(y, -y) + np.maximum(y, 0.1) * np.minimum(x, 0.3))


def shifted_inputs(x):
    return np.sum(x[2:] * x[:-2] + np.exp(x[1:-1]) * x[:-2] - x[2:] ** 3)


def scalar_operands(x):
    s = np.sum(x[:5])            # a scalar computed on the tape
    c = x[0]                     # a scalar read of an input
    y = (x * s + c) ** 2 - s / (x + 3.0)
    return np.sum(y * c + np.sin(y) * s)


def masks(x):
    y = np.where(x > 0.2, x ** 2, -x)
    z = np.where(y < 0.1, np.exp(y), y * x)
    return np.sum(z * (x >= 0.5) + np.sign(x) * z + np.floor(x * 3.0) * z)


def shifted_inner(x):
    # shifted reads of segment outputs: must end the segment and stay correct
    y = np.exp(x) * 2.0
    z = y[1:] - y[:-1]           # shifted reads of an in-segment output
    u = z * z + 1.0
    return np.sum(u[3:] * u[:-3] + np.log(u[:-3]))


def vector_output(x):
    y = x * x + np.sin(x)
    return np.cos(y) * y - x


PROGRAMS = [rosen, chain, shifted_inputs, scalar_operands, masks, shifted_inner]


@pytest.mark.parametrize("f", PROGRAMS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("n", [N_BIG, 4099, 8192 + 3])
def test_tiled_equals_untiled(f, n):
    rng = np.random.default_rng(n)
    x = rng.uniform(-1.0, 1.5, n)
    r = tg.record(f, x)
    assert r.tape.segments(), "expected the program to have tiling segments"
    check_same(r.tape, x)
    # the public gradient too, and a finite check against plain numpy values
    sweeps.set_tiling(False)
    g0 = r.grad(x)
    sweeps.set_tiling(True, 64)
    g1 = r.grad(x)
    assert np.array_equal(bits(g0), bits(g1))
    assert np.isfinite(g1).all() or f is masks


def test_vector_output_and_hvp():
    x = np.random.default_rng(1).uniform(-1, 1, N_BIG)
    r = tg.record(vector_output, x)
    check_same(r.tape, x)
    rr = tg.record(rosen, x)
    v = np.random.default_rng(2).standard_normal(N_BIG)
    sweeps.set_tiling(False)
    h0 = rr.hvp(x, v)
    sweeps.set_tiling(True, 64)
    h1 = rr.hvp(x, v)
    assert np.array_equal(bits(h0), bits(h1))


@pytest.mark.parametrize("n", [1, 2, 7, 100, 4095])
def test_small_n_not_tiled(n):
    x = np.linspace(-1, 1, n)
    r = tg.record(chain, x)
    assert r.tape.segments() == []
    check_same(r.tape, x)


def test_rosenbrock_segments():
    x = np.linspace(-1, 1, N_BIG)
    T = tg.record(rosen, x).tape
    codes = list(T.op_table()["code"])
    assert codes[-1] == OPCODES["sum"]
    segs = T.segments()
    # square, subtract(x[1:], .), square, mulc | rsubc(x[:-1]), square, add: the second run
    # reads x[:-1] after subtract read x[1:], which would change the adjoint summation order
    # at tile edges, so it starts a segment of its own
    # the final sum folds into the second segment's tiles
    assert segs == [(0, 4, False), (4, 8, True)]


def test_shifted_inner_read_ends_segment():
    x = np.linspace(-1, 1, N_BIG)
    T = tg.record(shifted_inner, x).tape
    ops = T.op_table()
    for k0, k1, fold in T.segments():
        k1 -= fold
        outs = [(ops["out"][k], ops["n"][k]) for k in range(k0, k1)]
        for k in range(k0, k1):
            for o, m in outs:
                a = ops["a"][k]
                if o <= a < o + m:
                    assert a == o           # only exact reads of in-segment outputs


# ---------------------------------------------------------------------- hand-made tapes
def test_crafted_overlaps():
    n = 5000
    full = (1, n, 1, n)
    X, A, B, C, D, E = 0, n, 2 * n, 3 * n, 4 * n, 5 * n
    cases = {
        # three chained ops, clean: one segment
        "clean": ([("exp", A, X, 0, 0, n, (), 0), ("multiply", B, A, X, 0, n, full, 0),
                   ("sin", C, B, 0, 0, n, (), 0)], [(0, 3, False)]),
        # shifted read of an in-segment output (B reads A + 1): ends the segment
        "shifted": ([("exp", A, X, 0, 0, n, (), 0),
                     ("multiply", B, A + 1, X, 0, n - 1, (1, n - 1, 1, n - 1), 0),
                     ("sin", C, B, 0, 0, n - 1, (), 0)], [(1, 3, False)]),
        # scalar read of an in-segment output: ends the segment
        "scalar_inner": ([("exp", A, X, 0, 0, n, (), 0),
                          ("multiply", B, X, A + 7, 0, n, (1, n, n, 1), 0),
                          ("sin", C, B, 0, 0, n, (), 0)], [(1, 3, False)]),
        # in-place op: may not join
        "inplace": ([("exp", A, X, 0, 0, n, (), 0), ("sin", A, A, 0, 0, n, (), 0),
                     ("cos", B, A, 0, 0, n, (), 0)], []),
        # a later op overwrites (shifted) what an earlier op read: ends the segment
        "war": ([("exp", A, E, 0, 0, n, (), 0), ("sin", B, A, 0, 0, n, (), 0),
                 ("cos", E + 3, B, 0, 0, n - 3, (), 0),
                 ("tanh", D, E + 3, 0, 0, n - 3, (), 0)], [(0, 2, False), (2, 4, False)]),
        # shifted external reads whose adjoints would add in another order: ends the segment
        "order": ([("exp", A, X + 1, 0, 0, n - 1, (), 0), ("sin", B, X, 0, 0, n - 1, (), 0),
                   ("add", C, A, B, 0, n - 1, (1, n - 1, 1, n - 1), 0)], [(1, 3, False)]),
        # ... and in the allowed order: one segment
        "order_ok": ([("exp", A, X, 0, 0, n - 1, (), 0), ("sin", B, X + 1, 0, 0, n - 1, (), 0),
                      ("add", C, A, B, 0, n - 1, (1, n - 1, 1, n - 1), 0)], [(0, 3, False)]),
        # two ops accumulating into one scalar adjoint: ends the segment
        "two_scalars": ([("multiply", A, X, X + 3, 0, n, (1, n, n, 1), 0),
                         ("multiply", B, A, X + 3, 0, n, (1, n, n, 1), 0)], []),
        # block broadcast: never tiled
        "block": ([("exp", A, X, 0, 0, n, (), 0),
                   ("multiply", B, A, X, 0, n, (1, n, 2, 10), 0),
                   ("sin", C, B, 0, 0, n, (), 0)], []),
        # constant operands, full and scalar
        "consts": ([("multiply", A, 0, X, 0, n, full, FLAG_A),
                    ("add", B, A, 3, 0, n, (1, n, n, 1), FLAG_B),
                    ("sqrt", C, B, 0, 0, n, (), 0)], [(0, 3, False)]),
        # a full sum of the last output folds in (also after a single op)
        "fold": ([("exp", A, X, 0, 0, n, (), 0), ("sin", B, A, 0, 0, n, (), 0),
                  ("sum", C, B, 0, 0, 1, (1, n, 1), 0)], [(0, 3, True)]),
        "fold_one": ([("exp", A, X, 0, 0, n, (), 0), ("sum", C, A, 0, 0, 1, (1, n, 1), 0)],
                     [(0, 2, True)]),
        # a sum of another output, a row sum, or a sum written over a segment operand: no fold
        "no_fold": ([("exp", A, X, 0, 0, n, (), 0), ("sin", B, A, 0, 0, n, (), 0),
                     ("sum", C, A, 0, 0, 1, (1, n, 1), 0)], [(0, 2, False)]),
        "no_fold_rows": ([("exp", A, X, 0, 0, n, (), 0), ("sin", B, A, 0, 0, n, (), 0),
                          ("sum", C, B, 0, 0, 2, (2, n // 2, 1), 0)], [(0, 2, False)]),
        "no_fold_overlap": ([("exp", A, X, 0, 0, n, (), 0), ("sin", B, A, 0, 0, n, (), 0),
                             ("sum", X + 5, B, 0, 0, 1, (1, n, 1), 0)], [(0, 2, False)]),
    }
    rng = np.random.default_rng(0)
    for name, (ops, segs) in cases.items():
        t = tg.Tape()
        t.alloc(6 * n)
        t.add_const(rng.uniform(0.5, 1.0, n))
        for code, o, a, b, c, m, p, fl in ops:
            t.add_op(OPCODES[code], fl, o, a, b, c, m, *p)
        last = ops[-1]
        t.set_io(6 * n, last[1], last[5])
        t.validate()
        assert t.segments() == segs, name
        check_same(t, rng.uniform(0.1, 0.9, 6 * n))


@pytest.mark.parametrize("switch", ["set_tiling", "set_fusing"])
def test_switches(switch):
    # loop tiling, and the fused gradient tail (tests/test_fusion.py)
    fn = getattr(sweeps, switch)
    prev = fn(False, 256)
    assert fn(True) == (False, 256)
    for bad in (1, 15, 1026):
        with pytest.raises(ValueError):
            fn(True, bad)
    fn(*prev)
