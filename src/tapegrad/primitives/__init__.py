"""The primitive table (``table.py``) and what the Python side derives from it.

``PRIMITIVES`` rows are data; this module gives them the shapes the rest of the package reads:
opcode numbers and family ranges (the same numbers the generated Cython enum has), the NumPy
callables recorded as each primitive, the value, derivative and display functions, and the
traits computed from the formulas. ``fingerprint()`` identifies the table: the tape header
carries it, so bytes written under another table are refused.
"""
import hashlib
import json

from . import formula as _formula
from .table import PRIMITIVES, FAMILIES, C_NAMES, CONSTANTS

__all__ = ["PRIMITIVES", "FAMILIES", "ROWS", "OPCODES", "OPNAMES", "family_range", "c_name",
           "fingerprint", "elementwise", "traits", "derivative_formulas"]

ROWS = {r["name"]: r for r in PRIMITIVES}
OPCODES = {r["name"]: k for k, r in enumerate(PRIMITIVES)}
OPNAMES = {k: name for name, k in OPCODES.items()}

UNARY_VARS = ("x", "y", "d")
BINARY_VARS = ("a", "b", "y", "m")


def _validate():
    seen = []
    for r in PRIMITIVES:
        fam = r["family"]
        if fam not in FAMILIES:
            raise _formula.FormulaError(f"primitive {r['name']!r}: unknown family {fam!r}")
        if seen and FAMILIES.index(fam) < FAMILIES.index(seen[-1]):
            raise _formula.FormulaError(f"primitive {r['name']!r}: family {fam!r} out of order "
                             "(rows of a family must be contiguous, families in FAMILIES order)")
        seen.append(fam)
        if fam in ("unary", "unary_zero"):
            for key in ("f", "d1", "d2"):
                _formula.check(r[key], ("x", "y", "d"), r["let"])
        elif fam in ("binary", "compare"):
            for key in ("f", "da", "db", "daa", "dab", "dbb"):
                _formula.check(r[key], ("a", "b", "y", "m"), r["let"])
    if len(ROWS) != len(PRIMITIVES):
        raise _formula.FormulaError("primitive table: a name appears twice")


_validate()


def family_range(fam):
    """(first, last) opcodes of a family (inclusive)."""
    codes = [OPCODES[r["name"]] for r in PRIMITIVES if r["family"] == fam]
    return codes[0], codes[-1]


def c_name(name):
    return C_NAMES.get(name, "OP_" + name.upper())


def elementwise(families=("unary", "unary_zero", "binary", "compare")):
    return [r for r in PRIMITIVES if r["family"] in families]


def derivative_formulas(row):
    """The first-derivative formulas of an elementwise row: (d1,) or (da, db)."""
    return (row["d1"],) if row["family"] in ("unary", "unary_zero") else (row["da"], row["db"])


def traits(row):
    """Per-op traits the sweeps dispatch on, computed from the formulas:

    reads_y:       a first derivative reads the op's own value y
    zero:          no derivative at all (every first derivative is 0)
    const_partial: every first derivative is a constant or reads only the parameter d
                   (the op is linear with constant partials; its adjoint reads no values)
    ieee:          the value is one IEEE basic operation of the operands (Python floats give
                   NumPy's bits: the scalar recording fast path may compute it in Python)
    """
    ds = derivative_formulas(row)
    free = set().union(*(_formula.free_vars(s, row["let"]) for s in ds))
    zero = all(_formula.is_zero(s) for s in ds)
    return dict(reads_y="y" in free, zero=zero, const_partial=not zero and free <= {"d"},
                ieee=_formula.is_ieee_arithmetic(row.get("value") or row["f"]))


# the fields that decide what a tape's bytes mean (not the docs, tests or NumPy-side fields)
_TAPE_FIELDS = ("family", "name", "f", "d1", "d2", "da", "db", "daa", "dab", "dbb", "let", "loop")


def fingerprint():
    """Eight hex digits identifying the table as the compiled core sees it (names, order,
    families, formulas, NumPy loops)."""
    rows = [{k: r[k] for k in _TAPE_FIELDS if k in r} for r in PRIMITIVES]
    blob = json.dumps([rows, C_NAMES, CONSTANTS], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]
