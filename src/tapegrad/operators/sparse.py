"""Sparsity of derivatives from the tape, and sparse Jacobians and Hessians by coloring.

Patterns are found by propagating dependency sets through the op table, without evaluating
anything: each op's output elements depend on the union of what their operand elements depend
on (elementwise ops through their broadcast index maps, reductions over their block, matmul over
a row times a column, gather/scatter through their index lists; a Python-rule op conservatively
on all its inputs). The Jacobian pattern is exact for the ops' structure (an entry can still be
numerically zero, e.g. x * 0). The Hessian pattern adds, per op, the pairs of inputs its second
derivative couples (from the primitive table's second-derivative formulas: x * y couples a with
b but neither with itself), so it is a superset only where an op's output does not reach the
tape's output nonlinearly, or where max/min/abs kinks are (their second derivative is taken as
zero, as the sweeps do).

Patterns and colorings are made once per recorded variant and reused at every point.

Compressed derivatives (Curtis, Powell & Reid 1974; Gebremedhin, Manne & Pothen 2005): columns
that share no row get one color, a seed matrix with one column per color goes through the
existing lane sweeps (forward tangents for J S, reverse sweeps for S^T J, hvp lanes for H S), and
each nonzero is read back from its color's lane. Coloring is greedy in natural order, distance-1
on the column intersection graph (for the Hessian too: a distance-2 coloring of its adjacency
graph; symmetric star coloring would need fewer colors and is not done).
"""
import numpy as np
import scipy.sparse as sp

from .. import primitives as _prims
from .._core import sweeps
from ..errors import TapegradValueError

_N = _prims.OPCODES
_UN = _prims.family_range("unary")
_UN0 = _prims.family_range("unary_zero")
_BIN = _prims.family_range("binary")
_CMP = _prims.family_range("compare")
# which second partials of each elementwise op can be nonzero (from the table's formulas)
_D2 = {}
for _r in _prims.elementwise(("unary", "binary")):
    if _r["family"] == "unary":
        _D2[_N[_r["name"]]] = (not _prims.formula.is_zero(_r["d2"]),)
    else:
        _D2[_N[_r["name"]]] = tuple(not _prims.formula.is_zero(_r[k]) for k in ("daa", "dab", "dbb"))
# max, min, maximum, minimum, abs: piecewise linear (zero second derivative almost everywhere)
_PIECEWISE = {_N["max"], _N["min"]}


def _csr(n, cols, shape):
    """A 0/1 CSR matrix with row i holding cols[i] (an int array per row or one per row)."""
    cols = np.asarray(cols, dtype=np.int64)
    return sp.csr_matrix((np.ones(n, dtype=bool), cols, np.arange(n + 1)), shape=shape)


class _Deps:
    """Dependency rows (sparse, nwork x nin) of the work buffer, filled op by op."""

    def __init__(self, nwork, nin):
        self.nin = nin
        self.block = np.full(nwork, -1, dtype=np.int64)
        self.row = np.zeros(nwork, dtype=np.int64)
        self.blocks = [sp.identity(nin, dtype=bool, format="csr")]
        self.block[:nin] = 0
        self.row[:nin] = np.arange(nin)

    def rows(self, off, m):
        """Dependencies of work slots [off, off + m) as an m x nin CSR matrix."""
        if m == 0:
            return sp.csr_matrix((0, self.nin), dtype=bool)
        b = self.block[off:off + m]
        r = self.row[off:off + m]
        if b[0] >= 0 and np.all(b == b[0]) and np.all(np.diff(r) == 1):
            return self.blocks[b[0]][r[0]:r[0] + m]
        parts, i = [], 0
        while i < m:
            j = i + 1
            while j < m and b[j] == b[i] and r[j] == r[j - 1] + 1:
                j += 1
            if b[i] < 0:          # never written (zeros): no dependencies
                parts.append(sp.csr_matrix((j - i, self.nin), dtype=bool))
            else:
                parts.append(self.blocks[b[i]][r[i]:r[i] + (j - i)])
            i = j
        return sp.vstack(parts, format="csr")

    def put(self, off, D):
        D = sp.csr_matrix(D, dtype=bool)
        self.blocks.append(D)
        n = D.shape[0]
        self.block[off:off + n] = len(self.blocks) - 1
        self.row[off:off + n] = np.arange(n)


def _bmap(n, div, mod):
    """Broadcast map of a binary operand: output i reads element (i // div) % mod."""
    return _csr(n, (np.arange(n) // div) % mod, (n, mod))


def _operand(D, op, which, size):
    off = int(op[which])
    if int(op["flags"]) & {"a": 1, "b": 2, "c": 4}[which]:
        return sp.csr_matrix((size, D.nin), dtype=bool)      # a constant: no dependencies
    return D.rows(off, size)


def _ops(tape):
    return tape.op_table(), tape.index_pool()


def _propagate(tape, nin, want_hessian=False):
    """(dependency rows, Hessian pattern (nin x nin) or None) of every work slot."""
    table, ipool = _ops(tape)
    D = _Deps(int(tape.nwork), nin)
    H = sp.csr_matrix((nin, nin), dtype=bool) if want_hessian else None

    def couple(A, B):
        nonlocal H
        if H is not None and A.nnz and B.nnz:
            C = (A.T @ B).astype(bool)
            H = H + C + C.T

    for op in table:
        code, n, p = int(op["code"]), int(op["n"]), [int(v) for v in op["p"]]
        if n == 0:
            continue
        if code <= _UN0[1]:
            if code >= _UN0[0]:         # zero derivative (floor, sign, stop_gradient, ...)
                D.put(int(op["out"]), sp.csr_matrix((n, nin), dtype=bool))
                continue
            A = _operand(D, op, "a", n)
            D.put(int(op["out"]), A)
            if _D2.get(code, (False,))[0]:
                couple(A, A)
            continue
        if code <= _CMP[1]:
            A = _bmap(n, p[0], p[1]) @ _operand(D, op, "a", p[1])
            B = _bmap(n, p[2], p[3]) @ _operand(D, op, "b", p[3])
            if code > _BIN[1]:          # comparisons: no derivative
                D.put(int(op["out"]), sp.csr_matrix((n, nin), dtype=bool))
                continue
            if code == _N["where"]:     # the mask operand carries no derivative
                D.put(int(op["out"]), A + B)
                continue
            D.put(int(op["out"]), A + B)
            daa, dab, dbb = _D2.get(code, (False, False, False))
            if daa:
                couple(A, A)
            if dbb:
                couple(B, B)
            if dab:
                couple(A, B)
            continue
        name = _prims.OPNAMES[code]
        if name in ("sum", "max", "min", "prod"):
            pre, m, post = p[0], p[1], p[2]
            A = _operand(D, op, "a", pre * m * post)
            i = np.arange(pre * m * post)
            out_of = (i // (m * post)) * post + i % post
            R = sp.csr_matrix((np.ones(i.size, dtype=bool), (out_of, i)), shape=(pre * post, i.size))
            Y = R @ A
            D.put(int(op["out"]), Y)
            if name == "prod" and H is not None:
                # pairs of different elements j != k of a block: sum_{j,k} - sum_{j = k}, counted
                Ai = sp.csr_matrix(A, dtype=np.int64)
                Yi = R.astype(np.int64) @ Ai
                C = (Yi.T @ Yi) - (Ai.T @ Ai)
                C.eliminate_zeros()
                H = H + (C > 0)
            continue
        if name == "matmul":
            nb, M, K, N = p[0], p[1], p[2], p[3]
            ba, bb = nb if p[4] else 1, nb if p[5] else 1
            A = _operand(D, op, "a", ba * M * K)
            B = _operand(D, op, "b", bb * K * N)
            o = np.arange(nb * M * N)
            bi, rest = o // (M * N), o % (M * N)
            i, j = rest // N, rest % N
            k = np.arange(K)
            rows = np.repeat(o, K)
            acol = (((bi if p[4] else 0) * M * K + i * K)[:, None] + k[None, :]).ravel()
            bcol = (((bi if p[5] else 0) * K * N + j)[:, None] + (k * N)[None, :]).ravel()
            ones = np.ones(rows.size, dtype=bool)
            RA = sp.csr_matrix((ones, (rows, acol)), shape=(o.size, ba * M * K))
            RB = sp.csr_matrix((ones, (rows, bcol)), shape=(o.size, bb * K * N))
            DA, DB = RA @ A, RB @ B
            D.put(int(op["out"]), DA + DB)
            couple(DA, DB)          # bilinear: a row of A with a column of B
            continue
        if name == "gather":
            A = _operand(D, op, "a", p[1])
            idx = ipool[p[0]:p[0] + n]
            D.put(int(op["out"]), _csr(n, idx, (n, p[1])) @ A)
            continue
        if name == "transpose":
            A = _operand(D, op, "a", n)
            perm = np.arange(n).reshape(tuple(int(k) for k in p[:4])).transpose(0, 2, 1, 3).ravel()
            D.put(int(op["out"]), _csr(n, perm, (n, n)) @ A)
            continue
        if name == "scatter_add":
            A = _operand(D, op, "a", p[1])
            idx = ipool[p[0]:p[0] + p[1]]
            S = sp.csr_matrix((np.ones(p[1], dtype=bool), (idx, np.arange(p[1]))), shape=(n, p[1]))
            D.put(int(op["out"]), S @ A)
            continue
        if name == "copy":
            D.put(int(op["out"]), _operand(D, op, "a", n))
            continue
        if name == "call":
            parts = [_operand(D, op, w, s) for w, s in zip("abc", p[:3]) if s]
            u = sum((P.sum(axis=0) for P in parts), np.zeros((1, nin)))
            U = sp.csr_matrix(np.asarray(u) != 0)
            D.put(int(op["out"]), sp.vstack([U] * n, format="csr") if n else U[:0])
            couple(U, U)
            continue
        raise TapegradValueError(f"sparsity: unknown opcode {code}")
    return D, H


def _cached(tr, key, make):
    """A pattern or coloring of variant tr, made once: the tape (so its structure) is fixed."""
    cache = tr.__dict__.setdefault("_sparse_cache", {})
    if key not in cache:
        cache[key] = make()
    return cache[key]


def jacobian_sparsity(tr):
    """(nout, nin) CSR pattern (bool) of the Jacobian of a recorded variant ``tr``."""
    def make():
        D, _ = _propagate(tr.tape, tr.nin)
        return sp.csr_matrix(D.rows(tr.out_off, tr.nout), dtype=bool)
    return _cached(tr, "jacobian", make).copy()


def hessian_sparsity(tr):
    """(nin, nin) symmetric CSR pattern (bool) of the Hessian of a scalar-output variant."""
    if tr.nout != 1:
        raise TapegradValueError(f"hessian_sparsity: the function must return a scalar, got "
                                 f"{tr.nout} outputs")
    def make():
        _, H = _propagate(tr.tape, tr.nin, want_hessian=True)
        return sp.csr_matrix(H, dtype=bool)
    return _cached(tr, "hessian", make).copy()


def color_columns(P):
    """Greedy distance-1 coloring of the columns of pattern P (two columns sharing a row get
    different colors): an int array of colors, 0-based."""
    P = sp.csc_matrix(P, dtype=bool)
    R = sp.csr_matrix(P)
    n = P.shape[1]
    colors = np.full(n, -1, dtype=np.int64)
    mark = np.full(n + 1, -1, dtype=np.int64)
    for j in range(n):
        rows = P.indices[P.indptr[j]:P.indptr[j + 1]]
        for i in rows:
            nbrs = R.indices[R.indptr[i]:R.indptr[i + 1]]
            c = colors[nbrs]
            mark[c[c >= 0]] = j
        c = 0
        while mark[c] == j:
            c += 1
        colors[j] = c
    return colors


def _seeds(colors):
    k = int(colors.max()) + 1 if colors.size else 0
    S = np.zeros((k, colors.size))
    S[colors, np.arange(colors.size)] = 1.0
    return S


def jacobian_colors(P):
    """(column coloring, row coloring) of a Jacobian pattern: for forward and reverse lanes."""
    P = sp.csr_matrix(P, dtype=bool)
    return color_columns(P), color_columns(P.T)


def sparse_jacobian(tr, w, P=None, mode="auto", colors=None):
    """The Jacobian at work buffer w (after a forward sweep) as CSR, from colored lanes
    (colors: jacobian_colors(P), computed here if not given)."""
    if P is None:
        P = jacobian_sparsity(tr)
        if colors is None:
            colors = _cached(tr, "jacobian colors", lambda: jacobian_colors(P))
    P = sp.csr_matrix(P, dtype=bool)
    cfwd, crev = jacobian_colors(P) if colors is None else colors
    P = P.tocoo()
    nf = int(cfwd.max()) + 1 if cfwd.size else 0
    nr = int(crev.max()) + 1 if crev.size else 0
    if mode == "auto":
        mode = "fwd" if nf <= nr else "rev"
    if mode == "fwd":
        S = _seeds(cfwd)                                   # (colors, nin)
        wd = sweeps.tangent(tr.tape, w, np.ascontiguousarray(S))
        JS = wd[:, tr.out_off:tr.out_off + tr.nout]        # (colors, nout)
        vals = JS[cfwd[P.col], P.row]
    elif mode == "rev":
        S = _seeds(crev)                                   # (colors, nout)
        ST_J = np.empty((S.shape[0], tr.nin))
        for k in range(S.shape[0]):
            ST_J[k] = sweeps.reverse(tr.tape, w, S[k])[:tr.nin]
        vals = ST_J[crev[P.row], P.col]
    else:
        raise TapegradValueError(f"sparse_jacobian: mode must be 'auto', 'fwd' or 'rev', got {mode!r}")
    return sp.csr_matrix((vals, (P.row, P.col)), shape=P.shape)


def sparse_hessian(tr, w, hvp_lanes, P=None, colors=None):
    """The Hessian at w as CSR, from hvp lanes seeded by a coloring of its columns (colors:
    color_columns(P), computed here if not given; a flow reuses it at every point)."""
    if P is None:
        P = hessian_sparsity(tr)
        if colors is None:
            colors = _cached(tr, "hessian colors", lambda: color_columns(P))
    P = sp.csr_matrix(P, dtype=bool).tocoo()
    colors = color_columns(P) if colors is None else np.asarray(colors)
    S = _seeds(colors)
    HS = hvp_lanes(tr, w, S)                               # (colors, nin): row k = H s_k
    vals = HS[colors[P.col], P.row]
    return sp.csr_matrix((vals, (P.row, P.col)), shape=P.shape)
