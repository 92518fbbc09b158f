"""The primitive table (tapegrad/primitives/table.py) against what is generated and derived from it.

- The committed Cython files are what the table renders now (else: stale), and the compiled
  core carries the same opcodes, family ranges and fingerprint.
- Every elementwise row is differentiated through the NumPy call that records it (its first
  ufunc, or its ``example``) on its test domain: forward and reverse, order 2, against central
  differences; the tape holds that row's opcode.
- The traits computed from the formulas steer the fused gradient tail: for every differentiable
  row, the fused gradient equals the op-by-op one (a trait wrong for an op, e.g. an op whose
  derivative reads y but is not marked so, would read a value the fused tail never computed).
"""
import pathlib

import numpy as np
import pytest
import scipy.special as sps

import tapegrad as tg
from tapegrad import primitives as ops
from tapegrad.primitives import codegen, derived, formula
from tapegrad._core import sweeps
from tapegrad._core import tape as core_tape

CORE = pathlib.Path(__file__).resolve().parents[1] / "_core"


def test_generated_files_are_current():
    if not CORE.is_dir():
        pytest.skip("no _core sources next to the tests")
    assert codegen.stale(str(CORE)) == [], (
        "generated files differ from the table: run `python -m tapegrad.primitives.codegen _core`")


def test_compiled_core_matches_table():
    assert core_tape.OPCODES == ops.OPCODES
    assert core_tape.OPTABLE_FINGERPRINT == ops.fingerprint()
    assert core_tape.OP_COUNT_ == len(ops.PRIMITIVES)
    for key, fams in (("unary", ("unary", "unary_zero")), ("unary_zero", ("unary_zero",)),
                      ("binary", ("binary", "compare")), ("compare", ("compare",))):
        lo, hi = ops.family_range(fams[0])[0], ops.family_range(fams[-1])[1]
        assert core_tape.FAMILIES[key] == (lo, hi), key
    assert core_tape.MAGIC_BYTES[4:] == bytes.fromhex(ops.fingerprint())


def test_bytes_of_another_table_are_refused():
    t = tg.record(lambda x: np.sum(np.exp(x)), np.ones(3)).tape
    data = bytearray(t.to_bytes())
    data[4] ^= 0xFF                       # another fingerprint
    with pytest.raises(ValueError):
        type(t).from_bytes(bytes(data))


def _domain(spec, shape, r):
    lo_hi = {"N": lambda: r.standard_normal(shape),
             "U": lambda lo, hi: r.uniform(lo, hi, shape),
             "away": lambda lo, hi: r.uniform(lo, hi, shape) * r.choice([-1.0, 1.0], shape),
             "grid": lambda off: 0.2 * r.integers(-5, 6, shape) + off + r.uniform(-0.02, 0.02, shape)}
    return eval(spec or "N()", {"__builtins__": {}}, lo_hi)    # data of the table


def _call(row):
    """The NumPy function of one array (unary) or two (binary) that records this row."""
    if row["example"]:
        args = "x" if row["family"].startswith("unary") else "a, b"
        return eval(f"lambda {args}: {row['example']}", {"np": np, "sps": sps, "tg": tg})
    return derived._resolve(row["ufuncs"][0])


def _inputs(row, r, shape=(4, 3)):
    dom = row["domain"]
    if row["family"].startswith("unary"):
        return (_domain(dom, shape, r),)
    da, db = dom if isinstance(dom, tuple) else (dom, dom)
    if row["family"] == "compare":
        da, db = "grid(0.0)", "grid(0.1)"     # no ties within a difference step
    return _domain(da, shape, r), _domain(db, shape, r)


ELEMENTWISE = [pytest.param(r, id=r["name"]) for r in ops.elementwise()]
DIFFERENTIABLE = [pytest.param(r, id=r["name"]) for r in ops.elementwise(("unary", "binary"))]


@pytest.mark.parametrize("row", ELEMENTWISE)
def test_row_records_its_opcode_and_has_the_right_derivatives(row):
    r = np.random.default_rng(sum(map(ord, row["name"])))
    fn, xs = _call(row), _inputs(row, r)
    rec = tg.record(lambda *a: fn(*a), *xs)
    codes = set(rec.tape.op_table()["code"].tolist())
    assert ops.OPCODES[row["name"]] in codes, (row["name"], codes)
    if row["loop"] or ops.traits(row)["ieee"] or row["family"] in ("unary_zero", "compare") \
            or row["name"] == "where":
        # the replay runs NumPy's own loop or one IEEE operation: NumPy's bits
        np.testing.assert_array_equal(rec(*xs), fn(*xs) * 1.0)
    else:
        # the replay runs the C kernel of the table's formula (libm), the recording NumPy's or
        # SciPy's function: equal to a few units in the last place
        np.testing.assert_allclose(rec(*xs), fn(*xs), rtol=4e-16, atol=0)
    if row["family"] in ("unary_zero", "compare"):
        g = tg.grad(lambda *a: np.sum(fn(*a) * 1.0), argnums=tuple(range(len(xs))))(*xs)
        for gi in g:
            assert np.all(gi == 0.0)
    else:
        tg.check_grads(fn, *xs, modes=("fwd", "rev"), order=2)


@pytest.mark.parametrize("row", DIFFERENTIABLE)
def test_fused_tail_agrees_with_op_by_op_for_every_row(row):
    r = np.random.default_rng(1 + sum(map(ord, row["name"])))
    fn, xs = _call(row), _inputs(row, r, shape=(700,))
    if len(xs) == 1:
        loss, x0 = (lambda x: np.sum(fn(x) * 1.5)), xs[0]
    else:
        b = xs[1]
        loss, x0 = (lambda x: np.sum(fn(x, b) * 1.5)), xs[0]
    rec = tg.record(loss, x0)
    assert rec.tape.fused_tail() is not None
    prev = sweeps.set_fusing(True)
    try:
        g_fused = rec.grad(x0)
        sweeps.set_fusing(False)
        g_plain = rec.grad(x0)
    finally:
        sweeps.set_fusing(*prev)
    np.testing.assert_allclose(g_fused, g_plain, rtol=1e-15, atol=0)


def test_traits_are_computed_from_formulas():
    t = {r["name"]: ops.traits(r) for r in ops.elementwise()}
    assert t["exp"]["reads_y"] and not t["sin"]["reads_y"] and t["hypot"]["reads_y"]
    assert t["mulc"]["const_partial"] and t["subtract"]["const_partial"]
    assert not t["multiply"]["const_partial"] and not t["where"]["const_partial"]
    assert t["floor"]["zero"] and t["less"]["zero"] and not t["abs"]["zero"]


def test_python_float_paths_are_numpys_bits():
    r = np.random.default_rng(3)
    xs = np.concatenate([r.standard_normal(200) * 10, [0.5, -2.0, 3.0, 1e300, -1e-300]])
    for name, fn in derived.PY_UNARY.items():
        for x in xs:
            for d in (1.5, -0.25, 3.0):
                with np.errstate(all="ignore"):
                    want = derived.UNARY_VALUE[name](np.float64(x), d)
                got = fn(float(x), d)
                assert np.float64(got).tobytes() == np.float64(want).tobytes(), (name, x, d)
    for name, fn in derived.PY_BINARY.items():
        for a, b in zip(xs, xs[::-1]):
            assert np.float64(fn(float(a), float(b))).tobytes() == \
                np.float64(derived.BINARY_VALUE[name](a, b)).tobytes(), name


def test_bad_formulas_are_named():
    with pytest.raises(formula.FormulaError, match="unknown name 'z'"):
        formula.check("x + z", ("x", "y", "d"))
    with pytest.raises(formula.FormulaError, match="unknown function 'gamma'"):
        formula.check("gamma(x)", ("x", "y", "d"))


def test_ufunc_maps_cover_the_table():
    for row in ops.elementwise():
        for u in row["ufuncs"]:
            uf = derived._resolve(u)
            target = derived.UNARY_UFUNCS if row["family"].startswith("unary") else derived.BINARY_UFUNCS
            assert target[uf] == row["name"]
    assert derived.UNARY_UFUNCS[np.fabs] == "abs" and derived.UNARY_UFUNCS[sps.expit] == "expit"


def test_wengert_list_uses_the_table_formats():
    x = np.array([0.5, 2.0])
    text = str(tg.trace(lambda x: np.sum(np.where(x < 1.0, x * x, x ** 3)), x))
    assert "] < c1" in text and "less(" not in text      # comparisons render infix
    assert "** 3" in text and "where(" in text
