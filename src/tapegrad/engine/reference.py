"""Reference sweeps in NumPy: slow, obviously correct, and generic.

Every primitive of the core gets its value, its tangent (jvp) and its adjoint (vjp) written here
with NumPy functions, independently of the Cython kernels. Two uses:

1. An oracle: tests run the same tape through these sweeps and through the compiled ones.
2. Nesting: NumPy functions dispatch to tracers, so when the inputs of a tape are tracers of an
   outer recording (``grad(grad(f))``), running these sweeps records the derivative computation
   onto the outer tape, which can then be differentiated again.
"""
import bisect

import numpy as np

from .._core.tape import OPNAMES, FAMILIES, FLAG_A, FLAG_B, FLAG_C
from ..tracing.tracer import Tracer
from ..rules import base as rules
from ..primitives import derived as _derived

# dy/dx of each unary primitive from (x, y = f(x), d), and (dy/da, dy/db) of each binary one
# from (a, b, y, m): NumPy functions made from the formulas of the primitive table, the same
# formulas the compiled kernels are generated from. What this sweep checks independently is
# everything around them (broadcasting, reductions, accumulation, tiling, fusion, the lanes);
# the formulas themselves are checked against finite differences (tests/test_ops.py).
UNARY_D1, _BINARY_D1 = _derived.numpy_derivatives(rules.value_of)


def _binary_d1(name, a, b, y, m):
    return _BINARY_D1[name](a, b, y, m)


_UN = FAMILIES["unary"]
_UN0 = FAMILIES["unary_zero"]
_BIN = FAMILIES["binary"]
_CMP = FAMILIES["compare"]


def _same(x, y):
    """The elements a max/min selected: equal to the result, or NaN where the result is NaN."""
    return (x == y) | ((x != x) & (y != y))


def _take(x, idx):
    if type(x) is Tracer:
        return rules.gather(x, idx)
    return np.asarray(x)[idx]


def _swap(x, p):
    """x as (D, A, B, C) blocks (p[0..3]) with the A and B axes swapped, flat (the transpose op)."""
    return _flat(rules.transpose(rules.reshape(x, tuple(int(k) for k in p[:4])), (0, 2, 1, 3)))


def _scatter(x, idx, n):
    return rules.scatter_add(x, idx, n)


def _flat(x):
    return np.reshape(x, (-1,))


def operand_sizes(op):
    """Sizes of the operand regions a, b, c an op (a row of Tape.op_table()) reads; 0: not read."""
    code, n, p = int(op["code"]), int(op["n"]), op["p"]
    name = OPNAMES[code]
    if code <= _UN[1]:
        return n, 0, 0
    if code <= _BIN[1]:
        return int(p[1]), int(p[3]), (n if name == "where" else 0)
    if name in ("sum", "max", "min", "prod"):
        return int(p[0] * p[1] * p[2]), 0, 0
    if name == "matmul":
        return (int(p[0] if p[4] else 1) * int(p[1] * p[2]),
                int(p[0] if p[5] else 1) * int(p[2] * p[3]), 0)
    if name in ("gather", "scatter_add"):
        return int(p[1]), 0, 0
    if name == "call":
        return int(p[0]), int(p[1]), int(p[2])
    return n, 0, 0


class Buf:
    """A work buffer made of its allocations; each holds a flat array (NumPy or tracer) or None (zero)."""

    def __init__(self, starts, sizes):
        self.starts, self.sizes = list(starts), list(sizes)
        self.arrs = [None] * len(starts)

    def _find(self, off, n):
        k = bisect.bisect_right(self.starts, off) - 1
        while k > 0 and not (off + n <= self.starts[k] + self.sizes[k]):
            k -= 1
        return k

    def read(self, off, n, zero=True):
        if n == 0:
            return np.zeros(0)
        k = self._find(off, n)
        a, s = self.arrs[k], self.starts[k]
        if a is None:
            return np.zeros(n) if zero else None
        if off == s and n == self.sizes[k]:
            return a
        return a[off - s:off - s + n]

    def put(self, off, n, v, add=False):
        if n == 0 or v is None:
            return
        k = self._find(off, n)
        s, size = self.starts[k], self.sizes[k]
        v = np.broadcast_to(v, (n,)) if np.ndim(rules.value_of(v)) == 0 else _flat(v)
        full = off == s and n == size
        base = self.arrs[k]
        if full and (base is None or not add):
            self.arrs[k] = v
            return
        piece = v if full else _scatter(v, np.arange(off - s, off - s + n), size)
        self.arrs[k] = piece if base is None else base + piece


class Sweep:
    """Values, tangents and adjoints of a recorded function, computed op by op with NumPy."""

    def __init__(self, tr, inputs=None):
        self.tr = tr
        t = tr.tape
        rec = tr.rec
        self.ops = t.op_table()
        self.ipool = t.index_pool()
        self.consts = t.constants()
        self.sources = rec.const_sources
        self.callbacks = t.callbacks
        self.starts, self.sizes = rec.alloc_starts, rec.alloc_sizes
        if inputs is None:
            inputs = []
            pos = 0
            for o, n in zip(tr.outer_inputs, tr.in_sizes):
                inputs.append(_flat(o) if o is not None else tr.recorded_x[pos:pos + n])
                pos += n
        self.inputs = inputs
        self.vals = self._forward()

    # -- operands
    def _const(self, off, n):
        src = self.sources.get(off)
        if src is not None:
            return _flat(src)
        if off >= len(self.consts):      # a referenced array (Tape.add_const_ref)
            return self.tr.tape.const_values(off, n)
        return self.consts[off:off + n]

    def _operands(self, op, buf):
        sa, sb, sc = operand_sizes(op)
        fl = int(op["flags"])
        res = []
        for off, size, bit in ((op["a"], sa, FLAG_A), (op["b"], sb, FLAG_B), (op["c"], sc, FLAG_C)):
            off = int(off)
            if size == 0 and OPNAMES[int(op["code"])] == "matmul":
                res.append(np.zeros(0))   # an empty factor (K = 0) is present, not absent
            elif size == 0 and (bit != FLAG_A or OPNAMES[int(op["code"])] == "call"):
                res.append(None)
            elif fl & bit:
                res.append(self._const(off, size))
            else:
                res.append(buf.read(off, size))
        return res

    # -- forward
    def _forward(self):
        vals = Buf(self.starts, self.sizes)
        for k, x in enumerate(self.inputs):
            vals.put(self.starts[k], self.tr.in_sizes[k], x)
        for op in self.ops:
            A, B, C = self._operands(op, vals)
            vals.put(int(op["out"]), int(op["n"]), self.forward_op(op, A, B, C))
        return vals

    def _binary_partials(self, name, n, p, A, B, C, Y):
        """Broadcast indices of a binary op's operands (None: full size) and its partials."""
        ia = None if (p[0] == 1 and p[1] == n) else self._bidx(n, p[0], p[1])
        ib = None if (p[2] == 1 and p[3] == n) else self._bidx(n, p[2], p[3])
        Af = A if ia is None else _take(A, ia)
        Bf = B if ib is None else _take(B, ib)
        return (ia, ib) + tuple(_binary_d1(name, Af, Bf, Y, C))

    def _bidx(self, n, div, mod):
        return (np.arange(n) // div) % mod

    def forward_op(self, op, A, B, C):
        code, n, p, d = int(op["code"]), int(op["n"]), op["p"], float(op["d"])
        name = OPNAMES[code]
        if code <= _UN[1]:
            return rules._UNARY_VALUE[name](A, d)
        if code <= _BIN[1]:
            Af = A if (p[0] == 1 and p[1] == n) else _take(A, self._bidx(n, p[0], p[1]))
            Bf = B if (p[2] == 1 and p[3] == n) else _take(B, self._bidx(n, p[2], p[3]))
            if name == "where":
                return np.where(C != 0, Af, Bf)
            return rules._BINARY_VALUE[name](Af, Bf) * 1.0
        if name in ("sum", "max", "min", "prod"):
            A3 = np.reshape(A, (int(p[0]), int(p[1]), int(p[2])))
            return _flat(rules._REDUCE_VALUE[name](A3, axis=1))
        if name == "matmul":
            A3, B3 = self._mats(p, A, B)
            return _flat(np.matmul(A3, B3))
        if name == "call":
            rule = self.callbacks[int(p[3])]
            xs = [np.reshape(x, s) for x, s in zip((A, B, C), rule.in_shapes)]
            return _flat(rule.forward(*xs))
        if name == "transpose":
            return _swap(A, p)
        idx = self.ipool[int(p[0]):int(p[0]) + (n if name == "gather" else int(p[1]))]
        if name == "gather":
            return _take(A, idx)
        if name == "scatter_add":
            return _scatter(A, idx, n)
        return A  # copy

    def _mats(self, p, A, B):
        nb, M, K, N = int(p[0]), int(p[1]), int(p[2]), int(p[3])
        A3 = np.reshape(A, ((nb if p[4] else 1), M, K))
        B3 = np.reshape(B, ((nb if p[5] else 1), K, N))
        return A3, B3

    # -- outputs
    def out_leaves(self):
        tr = self.tr
        flat = self.vals.read(tr.out_off, tr.nout)
        res, pos = [], 0
        for n in tr.out_sizes:
            res.append(flat[pos:pos + n] if len(tr.out_sizes) > 1 else flat)
            pos += n
        return res

    # -- reverse
    def vjp(self, ct_leaves):
        tr = self.tr
        adj = Buf(self.starts, self.sizes)
        seed = ct_leaves[0] if len(ct_leaves) == 1 else rules.concatenate([_flat(c) for c in ct_leaves])
        adj.put(tr.out_off, tr.nout, _flat(seed), add=True)
        for op in self.ops[::-1]:
            n = int(op["n"])
            Yb = adj.read(int(op["out"]), n, zero=False)
            if Yb is None or n == 0:
                continue
            A, B, C = self._operands(op, self.vals)
            Y = self.vals.read(int(op["out"]), n)
            fl = int(op["flags"])
            Ab, Bb = self.vjp_op(op, A, B, C, Y, Yb)
            sa, sb, _ = operand_sizes(op)
            if Ab is not None and not fl & FLAG_A:
                adj.put(int(op["a"]), sa, Ab, add=True)
            if Bb is not None and not fl & FLAG_B:
                adj.put(int(op["b"]), sb, Bb, add=True)
            pending = getattr(self, "_pending_c", None)
            if pending is not None:
                adj.put(pending[0], pending[1], pending[2], add=True)
                self._pending_c = None
        return [adj.read(s, n) for s, n in zip(self.starts, tr.in_sizes)]

    def vjp_op(self, op, A, B, C, Y, Yb):
        code, n, p, d = int(op["code"]), int(op["n"]), op["p"], float(op["d"])
        name = OPNAMES[code]
        if _UN0[0] <= code <= _UN0[1] or _CMP[0] <= code <= _CMP[1]:
            return None, None
        if code <= _UN[1]:
            return Yb * UNARY_D1[name](A, Y, d), None
        if code <= _BIN[1]:
            ia, ib, da, db = self._binary_partials(name, n, p, A, B, C, Y)
            ga, gb = Yb * da, Yb * db
            ga = ga if ia is None else _scatter(ga, ia, int(p[1]))
            gb = gb if ib is None else _scatter(gb, ib, int(p[3]))
            return ga, gb
        pre, m, post = int(p[0]), int(p[1]), int(p[2])
        if name == "sum":
            return _flat(np.broadcast_to(np.reshape(Yb, (pre, 1, post)), (pre, m, post))), None
        if name in ("max", "min"):
            A3 = np.reshape(A, (pre, m, post))
            mask = _same(A3, np.reshape(Y, (pre, 1, post))) * 1.0
            cnt = np.sum(mask, axis=1, keepdims=True)
            return _flat(mask * (np.reshape(Yb, (pre, 1, post)) / cnt)), None
        if name == "prod":
            P = self._prod_others(A, pre, m, post)
            return _flat(np.reshape(Yb, (pre, 1, post)) * P), None
        if name == "matmul":
            A3, B3 = self._mats(p, A, B)
            Yb3 = np.reshape(Yb, (int(p[0]), int(p[1]), int(p[3])))
            Ab = np.matmul(Yb3, np.swapaxes(B3, -1, -2))
            Bb = np.matmul(np.swapaxes(A3, -1, -2), Yb3)
            if not p[4]:
                Ab = np.sum(Ab, axis=0)
            if not p[5]:
                Bb = np.sum(Bb, axis=0)
            return _flat(Ab), _flat(Bb)
        if name == "call":
            rule = self.callbacks[int(p[3])]
            xs = [np.reshape(x, s) for x, s in zip((A, B, C), rule.in_shapes)]
            gs = list(rule.vjp(xs, Y, Yb)) + [None, None]
            if gs[2] is not None and not int(op["flags"]) & FLAG_C:
                self._pending_c = (int(op["c"]), int(p[2]), _flat(gs[2]))
            return (None if gs[0] is None else _flat(gs[0])), (None if gs[1] is None else _flat(gs[1]))
        if name == "transpose":
            return _swap(Yb, (p[0], p[2], p[1], p[3])), None
        idx = self.ipool[int(p[0]):int(p[0]) + (n if name == "gather" else int(p[1]))]
        if name == "gather":
            return _scatter(Yb, idx, int(p[1])), None
        if name == "scatter_add":
            return _take(Yb, idx), None
        return Yb, None  # copy

    def _prod_others(self, A, pre, m, post):
        """P[i, j, k] = prod over j' != j of A[i, j', k] (O(m^2), exact with zeros)."""
        A3 = np.reshape(A, (pre, m, post))
        eye = np.eye(m, dtype=bool)[None, :, :, None]
        A4 = A3[:, None, :, :] if type(A3) is not Tracer else rules.getitem(A3, (slice(None), None))
        return np.prod(np.where(eye, 1.0, A4), axis=2)

    # -- tangent
    def jvp(self, tan_leaves):
        tr = self.tr
        tan = self._tan = Buf(self.starts, self.sizes)
        for k, t in enumerate(tan_leaves):
            tan.put(self.starts[k], tr.in_sizes[k], _flat(t))
        for op in self.ops:
            n = int(op["n"])
            if n == 0:
                continue
            A, B, C = self._operands(op, self.vals)
            fl = int(op["flags"])
            sa, sb, _ = operand_sizes(op)
            Ad = None if fl & FLAG_A else tan.read(int(op["a"]), sa, zero=False)
            Bd = None if (fl & FLAG_B or sb == 0) else tan.read(int(op["b"]), sb, zero=False)
            Y = self.vals.read(int(op["out"]), n)
            is_call = OPNAMES[int(op["code"])] == "call"
            Yd = self.jvp_op(op, A, B, C, Y, Ad, Bd) if (Ad is not None or Bd is not None or is_call) else None
            tan.put(int(op["out"]), n, Yd if Yd is not None else np.zeros(n))
        flat = tan.read(tr.out_off, tr.nout)
        res, pos = [], 0
        for n in tr.out_sizes:
            res.append(flat[pos:pos + n] if len(tr.out_sizes) > 1 else flat)
            pos += n
        return res

    def jvp_op(self, op, A, B, C, Y, Ad, Bd):
        code, n, p, d = int(op["code"]), int(op["n"]), op["p"], float(op["d"])
        name = OPNAMES[code]
        if _UN0[0] <= code <= _UN0[1] or _CMP[0] <= code <= _CMP[1]:
            return None
        if code <= _UN[1]:
            return Ad * UNARY_D1[name](A, Y, d)
        if code <= _BIN[1]:
            ia, ib, da, db = self._binary_partials(name, n, p, A, B, C, Y)
            out = 0.0
            if Ad is not None:
                out = out + da * (Ad if ia is None else _take(Ad, ia))
            if Bd is not None:
                out = out + db * (Bd if ib is None else _take(Bd, ib))
            return out
        pre, m, post = int(p[0]), int(p[1]), int(p[2])
        if name == "sum":
            return _flat(np.sum(np.reshape(Ad, (pre, m, post)), axis=1))
        if name in ("max", "min"):
            A3 = np.reshape(A, (pre, m, post))
            mask = _same(A3, np.reshape(Y, (pre, 1, post))) * 1.0
            cnt = np.sum(mask, axis=1)
            return _flat(np.sum(mask * np.reshape(Ad, (pre, m, post)), axis=1) / cnt)
        if name == "prod":
            P = self._prod_others(A, pre, m, post)
            return _flat(np.sum(P * np.reshape(Ad, (pre, m, post)), axis=1))
        if name == "matmul":
            A3, B3 = self._mats(p, A, B)
            out = 0.0
            if Ad is not None:
                out = out + np.matmul(np.reshape(Ad, np.shape(rules.value_of(A3))), B3)
            if Bd is not None:
                out = out + np.matmul(A3, np.reshape(Bd, np.shape(rules.value_of(B3))))
            return _flat(out)
        if name == "call":
            rule = self.callbacks[int(p[3])]
            xs = [np.reshape(x, s) for x, s in zip((A, B, C), rule.in_shapes)]
            fl = int(op["flags"])
            Cd = None
            if len(rule.in_shapes) > 2 and not fl & FLAG_C:
                Cd = self._tan.read(int(op["c"]), int(p[2]), zero=False)
            ts = [None if t is None else np.reshape(t, s)
                  for t, s in zip((Ad, Bd, Cd), rule.in_shapes)]
            yd = rule.jvp(xs, Y, ts)
            return None if yd is None else _flat(yd)
        if name == "transpose":
            return _swap(Ad, p)
        idx = self.ipool[int(p[0]):int(p[0]) + (n if name == "gather" else int(p[1]))]
        if name == "gather":
            return _take(Ad, idx)
        if name == "scatter_add":
            return _scatter(Ad, idx, n)
        return Ad
