"""The Python side of the primitive table: NumPy callables and functions made from the rows.

- ``UNARY_UFUNCS`` / ``BINARY_UFUNCS``: NumPy (and SciPy) callable -> primitive name, read by
  the NumPy rules to record a ufunc call as one op.
- ``UNARY_VALUE_UFUNC``: name -> the ufunc that gives the value (the scalar fast path calls it
  on Python floats); ``UNARY_VALUE`` / ``BINARY_VALUE``: name -> value function used while
  recording (NumPy's own functions, so recorded and replayed values agree bitwise).
- ``PY_UNARY`` / ``PY_BINARY``: the primitives whose value is one IEEE basic operation, as
  Python functions on floats (same bits as NumPy).
- ``SHOW``: name -> Wengert-list format.
- ``numpy_derivatives(value_of)``: the first-derivative formulas as NumPy functions, for the
  reference sweep (conditions are evaluated on plain values through ``value_of``).
"""
import numpy as np
import scipy.special as sps

from . import PRIMITIVES, elementwise, traits
from . import formula as F

_NS = {"np": np, "sps": sps}


def _resolve(dotted):
    mod, _, attr = dotted.partition(".")
    return getattr(_NS[mod], attr)


def _compile(args, exprs, let, ns, numpy=True, quiet=False):
    """fn(*args) returning the formulas' values; quiet: NumPy's floating-point warnings off
    (where() evaluates both branches, where the compiled kernel evaluates one)."""
    lets = F.lets_used(exprs, let)
    tr = F.to_numpy if numpy else (lambda s: s)
    pad = "        " if quiet else "    "
    lines = [f"def fn({', '.join(args)}):"] + (["    with np.errstate(all='ignore'):"] if quiet else [])
    lines += [f"{pad}{n} = {tr(let[n])}" for n in lets]
    lines.append(pad + "return " + ", ".join(tr(e) for e in exprs))
    scope = dict(ns)
    exec("\n".join(lines), scope)     # formulas of the table (checked by ops._validate)
    return scope["fn"]


UNARY_UFUNCS, BINARY_UFUNCS = {}, {}
UNARY_VALUE_UFUNC, UNARY_VALUE, BINARY_VALUE = {}, {}, {}
PY_UNARY, PY_BINARY = {}, {}
SHOW = {}
for _r in PRIMITIVES:
    _name, _fam = _r["name"], _r["family"]
    SHOW[_name] = _r.get("show") or (f"{_name}({{a}})" if _fam in ("unary", "unary_zero") else None)
    if _fam not in ("unary", "unary_zero", "binary", "compare"):
        continue
    _ufs = [_resolve(u) for u in _r["ufuncs"]]
    _unary = _fam in ("unary", "unary_zero")
    for _u in _ufs:
        (UNARY_UFUNCS if _unary else BINARY_UFUNCS)[_u] = _name
    if _unary:
        if _r["value"] is None:
            UNARY_VALUE_UFUNC[_name] = _ufs[0]
            UNARY_VALUE[_name] = (lambda x, d, uf=_ufs[0]: uf(x))
        else:
            UNARY_VALUE[_name] = _compile(("x", "d"), (_r["value"],), {}, _NS)
    elif _ufs:
        BINARY_VALUE[_name] = _ufs[0]
    if traits(_r)["ieee"]:
        if _unary:
            PY_UNARY[_name] = _compile(("x", "d"), (_r["value"] or _r["f"],), {}, {}, numpy=False)
        else:
            PY_BINARY[_name] = _compile(("a", "b"), (_r["f"],), {}, {}, numpy=False)


def numpy_derivatives(value_of):
    """(unary d1: name -> fn(x, y, d), binary d1: name -> fn(a, b, y, m) -> (da, db))."""
    def _v(x):
        return np.asarray(value_of(x))

    def _step(c):
        return np.asarray(c, dtype=np.float64)

    def _where(c, p, q):
        c = np.asarray(c)
        if c.ndim == 0:
            return p if c else q
        return np.where(c, p, q)

    ns = dict(_NS, _v=_v, _step=_step, _where=_where)
    un, bi = {}, {}
    for r in elementwise(("unary",)):
        un[r["name"]] = _compile(("x", "y", "d"), (r["d1"],), r["let"], ns, quiet=True)
    for r in elementwise(("binary",)):
        bi[r["name"]] = _compile(("a", "b", "y", "m"), (r["da"], r["db"]), r["let"], ns, quiet=True)
    return un, bi
