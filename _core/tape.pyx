# cython: language_level=3
"""Tape storage: the Wengert list of a recorded function.

What lives here and why:
- ``Op`` records (opcode, operand offsets, small integer parameters, one scalar parameter) in a
  growable C array, an integer pool (gather/scatter indices), a constant buffer (closed-over
  arrays and folded constants) and guards (work-buffer regions whose recorded values a replay
  must reproduce, or the recording is stale).
- Values are not stored here: the work buffer of values belongs to each replay call (see
  sweeps.pyx), so one tape can be replayed from several threads at once.
- ``validate`` checks every offset, size and index against the buffers before any sweep may run,
  so neither a recording bug nor hostile serialized bytes can make a sweep read out of bounds.
"""
from cpython.mem cimport PyMem_Malloc, PyMem_Realloc, PyMem_Free
from libc.string cimport memcpy, memcmp, memset
from libc.stdlib cimport qsort
from libc.stdint cimport int32_t, int64_t

import json
import zlib

import numpy as np
cimport numpy as cnp

from .opcodes cimport *

cnp.import_array()

include "opnames.pxi"   # OPCODES, OPTABLE_FINGERPRINT, NUMPY_LOOPS_*: generated from the primitive table
OPNAMES = {v: k for k, v in OPCODES.items()}
FAMILIES = {
    "unary": (UN_FIRST, UN_LAST), "unary_zero": (UN_ZERO_FIRST, UN_LAST),
    "binary": (BIN_FIRST, BIN_LAST), "compare": (CMP_FIRST, BIN_LAST),
}
OP_COUNT_ = OP_COUNT
FLAG_A = FLAG_A_CONST
FLAG_B = FLAG_B_CONST
FLAG_C = FLAG_C_CONST

OP_DTYPE = np.dtype([
    ("code", np.int32), ("flags", np.int32), ("out", np.int64), ("a", np.int64),
    ("b", np.int64), ("c", np.int64), ("n", np.int64), ("p", np.int64, (6,)), ("d", np.float64),
])
assert OP_DTYPE.itemsize == sizeof(Op)

cdef extern from *:
    """
    #ifdef TAPEGRAD_DEBUG_BUILD
    #define TAPEGRAD_IS_DEBUG_BUILD 1
    #else
    #define TAPEGRAD_IS_DEBUG_BUILD 0
    #endif
    """
    int TAPEGRAD_IS_DEBUG_BUILD

# True when built with TAPEGRAD_DEBUG=1 (bounds/wraparound checks and assertions on)
DEBUG_BUILD = bool(TAPEGRAD_IS_DEBUG_BUILD)

# The header's magic carries the primitive table's fingerprint: bytes written under another
# table (other opcodes or formulas) are refused instead of replayed with the wrong kernels.
cdef bytes MAGIC = b"TAPE" + bytes.fromhex(OPTABLE_FINGERPRINT)
MAGIC_BYTES = MAGIC
# no single size may exceed this: keeps every sum and product of two sizes far from overflow
cdef int64_t SIZE_LIMIT = (<int64_t>1) << 40
cdef int64_t INT32_LIMIT = (<int64_t>1) << 31
# default bound on the work buffer of a loaded tape (slots): 2**31 slots are 16 GiB of values
MAX_WORK = 1 << 31

# Rules written in Python (tapegrad.rules.calls) live above the core. They install their loader
# here at import, so that a loaded tape finds its rules by name without the core importing
# upward (an import inside a compiled module would also be invisible to lint-imports).
_rule_from_spec = None


def set_rule_loader(loader):
    """Install loader([name, params]) -> rule for Tape.from_bytes. Called by tapegrad.rules.calls."""
    global _rule_from_spec
    _rule_from_spec = loader


cdef str _w(Py_ssize_t i, int code):
    # the name of op i in messages; built only when a check fails (validate runs on every
    # recording, and formatting a name per op cost more than the checks themselves)
    return f"op {i} ({OPNAMES.get(code, code)})" if i >= 0 else ""


cdef int _check_region(int64_t off, int64_t size, int64_t bound, Py_ssize_t i, int code,
                       str what) except -1:
    if size < 0 or size > SIZE_LIMIT or off < 0 or off > SIZE_LIMIT or off + size > bound:
        raise ValueError(f"invalid tape: {_w(i, code)}{what} region [{off}, {off}+{size}) "
                         f"outside buffer of size {bound}")
    return 0


cdef inline Py_ssize_t _alloc_of(const int64_t* s, Py_ssize_t m, int64_t off,
                                 Py_ssize_t stride=1) noexcept nogil:
    """The index of the last of the m sorted starts s[0], s[stride], ... at or before off (the
    allocation holding work offset off; empty allocations share their start with the next
    one); m for none."""
    cdef Py_ssize_t lo = 0, hi = m, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if s[mid * stride] <= off:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1 if lo > 0 else m


cdef int _cmp_i64(const void* a, const void* b) noexcept nogil:
    cdef int64_t x = (<const int64_t*> a)[0], y = (<const int64_t*> b)[0]
    return (x > y) - (x < y)


cdef int64_t _mul(int64_t x, int64_t y, Py_ssize_t i, int code) except -1:
    if x < 0 or y < 0 or x > SIZE_LIMIT or y > SIZE_LIMIT or (x != 0 and y > SIZE_LIMIT // x):
        raise ValueError(f"invalid tape: {_w(i, code)} size overflow ({x} * {y})")
    return x * y


# Tape objects alive (their C buffers not yet freed); counted with the GIL held
cdef Py_ssize_t _live = 0


def live_tapes():
    """The number of Tape objects whose C buffers are allocated (for leak tests)."""
    return _live


# ---------------------------------------------------------------- tiling segments
# A segment is a run of consecutive elementwise ops [k0, k1) that the forward and reverse
# sweeps may strip-mine (every op of the run on one tile of elements, then the next tile)
# with results bitwise identical to the op-by-op sweeps. The rules, op by op (greedy; an op
# that breaks a rule ends the segment and may start the next one):
#  - unary or binary elementwise, same n (>= TILE_MIN_N) as the segment; every operand full
#    (div 1, mod n) or scalar (mod 1), no block broadcast; its output overlaps none of its
#    own operands (no in-place ops);
#  - reads of the work buffer either are exactly an earlier segment op's output (full, same
#    offset: an "internal" read, served from the same tile) or overlap no segment output;
#  - its output overlaps no output and no operand of the earlier segment ops (so nothing
#    read by a later tile is overwritten by an earlier one);
#  - adjoint order: in the reverse, the adjoint of an external operand element receives its
#    contributions tile by tile (ascending), ops in reverse order within a tile; the op-by-op
#    sweep adds them op by op (descending), a then b inside the vectorized add/sub/mul.
#    They agree when overlapping full external operands of a later op j and an earlier op i
#    satisfy off_j >= off_i (op j's element lies in the same or an earlier tile), and when
#    no scalar external operand overlaps an external operand of another op (scalars take a
#    contribution on every tile). Within one op the generic loop interleaves a and b by
#    element, which tiling keeps; the add/sub/mul loops need off_a >= off_b.
# Constant-buffer operands take no part (read-only, no adjoint).
ctypedef struct _Rd:
    int64_t off
    int64_t len
    bint full
    bint adj      # receives an adjoint contribution
    int role      # 0 = a, 1 = b, 2 = c


cdef inline bint _overlap(int64_t o1, int64_t n1, int64_t o2, int64_t n2) noexcept nogil:
    return n1 > 0 and n2 > 0 and o1 < o2 + n2 and o2 < o1 + n1


cdef inline int _read_operand(_Rd* r, int nr, int64_t off, int64_t div, int64_t mod, int64_t n,
                              int is_const, int code, int role, bint* ok) noexcept nogil:
    """Record operand a or b (role 0/1) of a binary op broadcast as (div, mod): full (1, n) or
    one value (mod 1); any other broadcast clears ok. Returns the new record count."""
    cdef bint full = div == 1 and mod == n
    if not full and mod != 1:
        ok[0] = False
        return nr
    if not is_const:
        r[nr].off = off; r[nr].len = n if full else 1; r[nr].full = full
        r[nr].adj = code < CMP_FIRST; r[nr].role = role
        nr += 1
    return nr


cdef int _reads(const Op* op, _Rd* r, bint* ok) noexcept nogil:
    """The work-buffer operands of an elementwise op; ok = False for block broadcasting."""
    cdef int nr = 0, code = op.code
    cdef int64_t n = op.n
    ok[0] = True
    if code <= UN_LAST:
        if not (op.flags & FLAG_A_CONST):
            r[nr].off = op.a; r[nr].len = n; r[nr].full = True
            r[nr].adj = code < UN_ZERO_FIRST; r[nr].role = 0
            nr += 1
        return nr
    nr = _read_operand(r, nr, op.a, op.p[0], op.p[1], n, op.flags & FLAG_A_CONST, code, 0, ok)
    nr = _read_operand(r, nr, op.b, op.p[2], op.p[3], n, op.flags & FLAG_B_CONST, code, 1, ok)
    if code == OP_WHERE and not (op.flags & FLAG_C_CONST):
        r[nr].off = op.c; r[nr].len = n; r[nr].full = True
        r[nr].adj = False; r[nr].role = 2
        nr += 1
    return nr


cdef int op_reads(const Op* op, int64_t* off, int64_t* ln) noexcept nogil:
    """The work-buffer regions op reads (constant operands left out), any op kind; for a
    validated op."""
    cdef int nr = 0, code = op.code, fl = op.flags
    cdef int64_t la = 0, lb = 0, lc = 0
    if code <= UN_LAST or code == OP_COPY or code == OP_TRANSPOSE:
        la = op.n
    elif code <= BIN_LAST:
        la = op.p[1]
        lb = op.p[3]
        lc = op.n if code == OP_WHERE else 0
    elif code <= OP_PROD:
        la = op.p[0] * op.p[1] * op.p[2]
    elif code == OP_MATMUL:
        if op.p[0] > 0:
            la = op.p[4] * (op.p[0] - 1) + op.p[1] * op.p[2]
            lb = op.p[5] * (op.p[0] - 1) + op.p[2] * op.p[3]
    elif code == OP_GATHER or code == OP_SCATTER_ADD:
        la = op.p[1]
    elif code == OP_CALL:
        la = op.p[0]
        lb = op.p[1]
        lc = op.p[2]
    if la and not (fl & FLAG_A_CONST):
        off[nr] = op.a; ln[nr] = la; nr += 1
    if lb and not (fl & FLAG_B_CONST):
        off[nr] = op.b; ln[nr] = lb; nr += 1
    if lc and not (fl & FLAG_C_CONST):
        off[nr] = op.c; ln[nr] = lc; nr += 1
    return nr


cdef bint _alone_ok(const Op* op, const _Rd* r, int nr, bint strict) noexcept nogil:
    cdef int q
    if op.code > BIN_LAST or op.n < (TILE_MIN_N if strict else FUSE_MIN_N):
        return False
    for q in range(nr):
        if _overlap(op.out, op.n, r[q].off, r[q].len):
            return False
    # the vectorized add/sub/mul reverse adds all of a's contributions, then b's
    if strict and nr == 2 and r[0].adj and r[1].adj and r[0].full and r[1].full and (
            op.code == OP_ADD or op.code == OP_SUB or op.code == OP_MUL) and (
            _overlap(r[0].off, r[0].len, r[1].off, r[1].len) and r[0].off < r[1].off):
        return False
    return True


cdef bint _joins(const Op* ops, Py_ssize_t k0, Py_ssize_t k, const _Rd* r, int nr,
                 bint strict) noexcept nogil:
    """May op k join the segment [k0, k)? Not strict: the adjoint-order rule is waived (the
    fused gradient tail, see _find_fused)."""
    cdef const Op* op = &ops[k]
    cdef const Op* oi
    cdef _Rd ri[3]
    cdef int ni, q, s
    cdef bint ok, internal
    cdef Py_ssize_t i
    if op.n != ops[k0].n:
        return False
    for i in range(k0, k):
        oi = &ops[i]
        ni = _reads(oi, ri, &ok)
        if _overlap(op.out, op.n, oi.out, oi.n):
            return False
        for s in range(ni):
            if _overlap(op.out, op.n, ri[s].off, ri[s].len):
                return False
        for q in range(nr):
            internal = False
            if _overlap(r[q].off, r[q].len, oi.out, oi.n):
                if not (r[q].full and r[q].off == oi.out):
                    return False
                internal = True
            if internal or not r[q].adj or not strict:
                continue
            for s in range(ni):
                if not ri[s].adj or not _overlap(r[q].off, r[q].len, ri[s].off, ri[s].len):
                    continue
                # ri[s] cannot be internal here: it would overlap a segment output that
                # r[q] (external) overlaps too, which the checks above exclude
                if not r[q].full or not ri[s].full or r[q].off < ri[s].off:
                    return False
    return True



cdef bint _sum_folds(const Op* ops, Py_ssize_t k0, Py_ssize_t k) noexcept nogil:
    """Is op k a full sum (one row, m = n) of the output of op k - 1, the last op of the
    segment [k0, k), whose result overlaps no operand or output of the segment?"""
    cdef const Op* sm = &ops[k]
    cdef const Op* last = &ops[k - 1]
    cdef _Rd ri[3]
    cdef int ni, s
    cdef bint ok
    cdef Py_ssize_t i
    if (sm.code != OP_SUM or sm.p[0] != 1 or sm.p[2] != 1 or sm.p[1] != last.n
            or sm.a != last.out or (sm.flags & FLAG_A_CONST)):
        return False
    for i in range(k0, k):
        if _overlap(sm.out, sm.n, ops[i].out, ops[i].n):
            return False
        ni = _reads(&ops[i], ri, &ok)
        for s in range(ni):
            if _overlap(sm.out, sm.n, ri[s].off, ri[s].len):
                return False
    return True


cdef void* _reserve(void* buf, Py_ssize_t* cap, Py_ssize_t need, size_t item) except NULL:
    """buf grown (by doubling) to hold at least ``need`` items; cap is updated."""
    cdef Py_ssize_t c = cap[0]
    cdef void* p
    if need <= c:
        return buf
    while need > c:
        c *= 2
    p = PyMem_Realloc(buf, c * item)
    if p == NULL:
        raise MemoryError()
    cap[0] = c
    return p


cdef class Tape:
    """A recorded operation sequence (Wengert list) over float64 buffers."""

    def __cinit__(self):
        global _live
        _live += 1       # first: __dealloc__ runs (and decrements) even if __cinit__ raises
        self.cap_ops = 16
        self.ops = <Op*> PyMem_Malloc(self.cap_ops * sizeof(Op))
        self.cap_idx = 16
        self.ipool = <int64_t*> PyMem_Malloc(self.cap_idx * sizeof(int64_t))
        self.cap_con = 16
        self.cvals = <double*> PyMem_Malloc(self.cap_con * sizeof(double))
        self.cap_guard = 12
        self.guards = <int64_t*> PyMem_Malloc(self.cap_guard * sizeof(int64_t))
        if not self.ops or not self.ipool or not self.cvals or not self.guards:
            raise MemoryError()
        self.nops = self.nidx = self.ncon = self.nguard = 0
        self.nwork = self.nin = self.out_off = self.out_n = 0
        self.validated = False
        self.meta = None
        self.callbacks = []
        self.segs = NULL
        self.nsegs = self.cap_segs = 0
        self.fuse_k0 = self.fuse_sum = -1
        self.ext_arrays = []
        self.extp = NULL
        self.extn = NULL
        self.next_ = self.cap_ext = 0

    def __dealloc__(self):
        global _live
        _live -= 1
        PyMem_Free(self.ops)
        PyMem_Free(self.ipool)
        PyMem_Free(self.cvals)
        PyMem_Free(self.guards)
        PyMem_Free(self.segs)
        PyMem_Free(self.extp)
        PyMem_Free(self.extn)

    cdef int _grow_ops(self) except -1:
        cdef Py_ssize_t cap = self.cap_ops * 2
        cdef Op* p = <Op*> PyMem_Realloc(self.ops, cap * sizeof(Op))
        if not p:
            raise MemoryError()
        self.ops = p
        self.cap_ops = cap
        return 0

    cdef int _find_segments(self) except -1:
        """Tiling segments (see the rules above), kept as triples (k0, k1, fold): ops [k0, k1),
        at least two elementwise ops or one and a folded sum; fold = 1 when op k1 - 1 is a
        full sum of op k1 - 2's output."""
        cdef Py_ssize_t k, k0 = -1
        cdef int nr
        cdef bint ok, fold
        cdef _Rd r[3]
        cdef int64_t* p
        self.nsegs = 0
        k = 0
        while k <= self.nops:
            if k < self.nops:
                nr = _reads(&self.ops[k], r, &ok)
                ok = ok and _alone_ok(&self.ops[k], r, nr, True)
            else:
                ok = False
            if ok and k0 >= 0 and k - k0 < TILE_MAX_OPS and _joins(self.ops, k0, k, r, nr, True):
                k += 1
                continue
            # close the current segment [k0, k), taking in a following full sum of its
            # last output (folded into the tiles as partial sums)
            fold = k0 >= 0 and k < self.nops and _sum_folds(self.ops, k0, k)
            if k0 >= 0 and (k - k0 >= 2 or fold):
                if self.nsegs == self.cap_segs:
                    p = <int64_t*> PyMem_Realloc(self.segs, 3 * (2 * self.cap_segs + 4) * sizeof(int64_t))
                    if not p:
                        raise MemoryError()
                    self.segs = p
                    self.cap_segs = 2 * self.cap_segs + 4
                self.segs[3 * self.nsegs] = k0
                self.segs[3 * self.nsegs + 1] = k + 1 if fold else k
                self.segs[3 * self.nsegs + 2] = fold
                self.nsegs += 1
            if fold:
                k0 = -1
                k += 1
                continue
            k0 = k if ok else -1
            k += 1
        return 0

    cdef int _find_fused(self) except -1:
        """The fused gradient tail: ops [k0, K) elementwise and op K a full sum of the last
        one's output; the ops after K (the "post" ops, e.g. the 1/n of a mean, a penalty
        term) read no tail output and write none. A scalar-output gradient then runs the
        tail's forward and reverse tile by tile with its intermediates (values and adjoints)
        in a small per-call scratch, never in the work buffers (sweeps.grad_fused). The
        segment rules apply except the adjoint-order one: an external adjoint element may
        receive its contributions in another order than the op-by-op sweep's (equal up to
        rounding). Tail outputs hold no guard (their values are not written) and lie outside
        the inputs. The last such sum within TILE_MAX_OPS ops of the end is taken.
        fuse_k0 = -1: none."""
        cdef Py_ssize_t K, k0
        self.fuse_k0 = -1
        self.fuse_sum = -1
        if self.out_n != 1:
            return 0
        K = self.nops - 1
        while K >= 1 and self.nops - K <= TILE_MAX_OPS:
            k0 = self._tail_start(K)
            if k0 < K and self._post_apart(k0, K):
                self.fuse_k0 = k0
                self.fuse_sum = K
                return 0
            K -= 1
        return 0

    cdef Py_ssize_t _tail_start(self, Py_ssize_t K) except -2:
        """The first op of the longest fusable tail whose full sum is op K (K: none)."""
        cdef Py_ssize_t k0 = K, k, j
        cdef int nr
        cdef bint ok
        cdef _Rd r[3]
        cdef const Op* op
        if self.ops[K].code != OP_SUM:
            return K
        while k0 > 0 and K - (k0 - 1) <= TILE_MAX_OPS:
            op = &self.ops[k0 - 1]
            nr = _reads(op, r, &ok)
            # (tail outputs never overlap the inputs: their adjoints would be the gradient)
            if (not (ok and _alone_ok(op, r, nr, False)) or op.n != self.ops[K - 1].n
                    or op.out < self.nin):
                break
            for j in range(0, self.nguard, 3):
                if _overlap(op.out, op.n, self.guards[j], self.guards[j + 1]):
                    ok = False
            # every later tail op must still join once op k0 - 1 is in
            k = k0
            while ok and k < K:
                nr = _reads(&self.ops[k], r, &ok)
                ok = ok and _joins(self.ops, k0 - 1, k, r, nr, False)
                k += 1
            if not ok or not _sum_folds(self.ops, k0 - 1, K):
                break
            k0 -= 1
        return k0

    cdef bint _post_apart(self, Py_ssize_t k0, Py_ssize_t K):
        """Do the ops after the sum K (and the tape's output) stay clear of the outputs of the
        tail ops [k0, K)?"""
        cdef Py_ssize_t i, j
        cdef int q, nr
        cdef int64_t off[3]
        cdef int64_t ln[3]
        cdef const Op* op
        cdef int64_t toff[3]
        cdef int64_t tln[3]
        cdef int tr
        for j in range(k0, K):
            if _overlap(self.out_off, self.out_n, self.ops[j].out, self.ops[j].n):
                return False
            tr = op_reads(&self.ops[j], toff, tln)
            for i in range(K + 1, self.nops):
                op = &self.ops[i]
                if _overlap(op.out, op.n, self.ops[j].out, self.ops[j].n):
                    return False
                for q in range(tr):      # (nor may a later op write what the tail reads)
                    if _overlap(op.out, op.n, toff[q], tln[q]):
                        return False
                nr = op_reads(op, off, ln)
                for q in range(nr):
                    if _overlap(off[q], ln[q], self.ops[j].out, self.ops[j].n):
                        return False
        return True

    cdef bint _find_outs_apart(self) except -1:
        """Does every op write slots that no other op writes and none of the inputs [0, nin),
        and read only inputs, constants and outputs of earlier ops (never its own; a read may
        run over adjacent outputs, as a cumulative sum's joined parts do)? Then each
        work slot holds one value, whose adjoint is complete once the op that wrote it has
        run its adjoint: a reverse sweep may clear it right there and leave the adjoint
        buffer all zero as it found it (the clean mode of sweeps.value_and_grad)."""
        cdef Py_ssize_t k, j, m = 0
        cdef int q, nr
        cdef int64_t off[3]
        cdef int64_t ln[3]
        cdef int64_t end
        cdef const Op* op
        if self.nops == 0:
            return True
        # (start, size, op) triples: the inputs as op -1's output, then every op's output,
        # sorted by start (C buffers: validate runs on every re-traced gradient)
        cdef int64_t* r = <int64_t*> PyMem_Malloc(3 * (self.nops + 1) * sizeof(int64_t))
        if r == NULL:
            raise MemoryError()
        try:
            if self.nin:
                r[0], r[1], r[2] = 0, self.nin, -1
                m = 1
            for k in range(self.nops):
                if self.ops[k].n > 0:
                    r[3 * m], r[3 * m + 1], r[3 * m + 2] = self.ops[k].out, self.ops[k].n, k
                    m += 1
            for j in range(m - 1):           # (a recording's are in order already)
                if r[3 * j] > r[3 * j + 3]:
                    qsort(r, m, 3 * sizeof(int64_t), _cmp_i64)
                    break
            for j in range(m - 1):
                if r[3 * j] + r[3 * j + 1] > r[3 * j + 3]:
                    return False
            for k in range(self.nops):
                op = &self.ops[k]
                nr = op_reads(op, off, ln)
                for q in range(nr):
                    if ln[q] <= 0:
                        continue
                    j = _alloc_of(r, m, off[q], 3)
                    if j == m or off[q] >= r[3 * j] + r[3 * j + 1] or r[3 * j + 2] >= k:
                        return False
                    end = r[3 * j] + r[3 * j + 1]
                    while end < off[q] + ln[q]:      # the read runs on into the next output
                        j += 1
                        if j >= m or r[3 * j] != end or r[3 * j + 2] >= k:
                            return False
                        end += r[3 * j + 1]
            return True
        finally:
            PyMem_Free(r)

    def fused_tail(self):
        """(k0, K): the fused gradient tail, elementwise ops [k0, K) and their sum K (see
        _find_fused), or None."""
        if not self.validated:
            self.validate()
        return None if self.fuse_k0 < 0 else (self.fuse_k0, self.fuse_sum)

    def segments(self):
        """The tiling segments [(k0, k1, folded sum), ...] found by validate()."""
        if not self.validated:
            self.validate()
        return [(self.segs[3 * i], self.segs[3 * i + 1], bool(self.segs[3 * i + 2]))
                for i in range(self.nsegs)]

    # ---------------------------------------------------------------- recording entry points
    def alloc(self, Py_ssize_t n):
        """Reserve n slots of the work buffer; returns their offset."""
        if n < 0 or n > SIZE_LIMIT:
            raise ValueError(f"alloc: bad size {n}")
        cdef Py_ssize_t off = self.nwork
        self.nwork += n
        self.validated = False
        return off

    def set_io(self, Py_ssize_t nin, Py_ssize_t out_off, Py_ssize_t out_n):
        self.nin = nin
        self.out_off = out_off
        self.out_n = out_n
        self.validated = False

    def add_op(self, int code, int flags, int64_t out, int64_t a, int64_t b,
                            int64_t c, int64_t n, int64_t p0=0, int64_t p1=0, int64_t p2=0,
                            int64_t p3=0, int64_t p4=0, int64_t p5=0, double d=0.0):
        """Append one operation; returns its index. Checked later by validate()."""
        if self.nops == self.cap_ops:
            self._grow_ops()
        cdef Op* op = &self.ops[self.nops]
        op.code = code
        op.flags = flags
        op.out = out
        op.a = a
        op.b = b
        op.c = c
        op.n = n
        op.p[0] = p0
        op.p[1] = p1
        op.p[2] = p2
        op.p[3] = p3
        op.p[4] = p4
        op.p[5] = p5
        op.d = d
        self.nops += 1
        self.validated = False
        return self.nops - 1

    # the recorder's hot paths (one call per traced operation in scalar code): the same ops as
    # add_op gives, with 5 arguments to parse instead of 14 (~50 ns less a call)
    cdef Op* _push_op(self, int code, int64_t out, int64_t a, int64_t n) except NULL:
        """A new zeroed op with these fields (the others are the caller's)."""
        if self.nops == self.cap_ops:
            self._grow_ops()
        cdef Op* op = &self.ops[self.nops]
        memset(op, 0, sizeof(Op))
        op.code = code
        op.out = out
        op.a = a
        op.n = n
        self.nops += 1
        self.validated = False
        return op

    def add_unary(self, int code, int64_t out, int64_t a, int64_t n, double d):
        """add_op(code, 0, out, a, 0, 0, n, d=d): y = g(x[a]; d) elementwise."""
        self._push_op(code, out, a, n).d = d
        return self.nops - 1

    cdef Op* _push_binary(self, int code, int64_t out, int64_t a, int64_t b, int64_t n,
                          int flags) except NULL:
        """A new binary op y = g(x[a], x[b]), both operands of y's shape."""
        cdef Op* op = self._push_op(code, out, a, n)
        op.flags = flags
        op.b = b
        op.p[0] = 1
        op.p[1] = n
        op.p[2] = 1
        op.p[3] = n
        return op

    def add_binary(self, int code, int64_t out, int64_t a, int64_t b, int64_t n, int flags=0):
        """add_op(code, flags, out, a, b, 0, n, 1, n, 1, n): y = g(x[a], x[b]), both of y's
        shape (flags: which operand is a constant)."""
        self._push_binary(code, out, a, b, n, flags)
        return self.nops - 1

    def add_ops(self, table):
        """Append operations given as a structured array of dtype OP_DTYPE; checked by validate()."""
        arr = np.ascontiguousarray(table, dtype=OP_DTYPE)
        cdef Py_ssize_t n = arr.shape[0]
        if n == 0:
            return self.nops
        while self.nops + n > self.cap_ops:
            self._grow_ops()
        cdef const unsigned char[::1] raw = arr.view(np.uint8).reshape(-1)
        memcpy(self.ops + self.nops, &raw[0], n * sizeof(Op))
        self.nops += n
        self.validated = False
        return self.nops

    def add_const(self, values):
        """Append constants (any shape, converted to float64); returns their offset."""
        cdef const double[::1] v = np.ascontiguousarray(values, dtype=np.float64).ravel()
        cdef Py_ssize_t n = v.shape[0]
        self.cvals = <double*> _reserve(self.cvals, &self.cap_con, self.ncon + n, sizeof(double))
        cdef Py_ssize_t off = self.ncon
        if n:
            memcpy(self.cvals + off, &v[0], n * sizeof(double))
        self.ncon += n
        self.validated = False
        return off

    def add_const_ref(self, cnp.ndarray values):
        """Reference a float64 C-contiguous array as constants, without copying it; returns
        the offset of its first element. The tape keeps the array alive and its sweeps read
        the array's contents at the time they run (a change made in place is seen by the next
        replay). Other arrays are copied (add_const)."""
        if (values.dtype != np.float64 or not values.flags.c_contiguous
                or values.size > TG_EXT_MASK or not values.flags.aligned):
            return self.add_const(values)
        cdef Py_ssize_t k = self.next_
        cdef void* p
        if k >= (1 << (62 - EXT_SHIFT)) - 1:
            return self.add_const(values)
        if k == self.cap_ext:
            p = PyMem_Realloc(self.extp, (2 * k + 4) * sizeof(double*))
            if p == NULL:
                raise MemoryError()
            self.extp = <const double**> p
            p = PyMem_Realloc(self.extn, (2 * k + 4) * sizeof(int64_t))
            if p == NULL:
                raise MemoryError()
            self.extn = <int64_t*> p
            self.cap_ext = 2 * k + 4
        self.ext_arrays.append(values)
        self.extp[k] = <const double*> cnp.PyArray_DATA(values)
        self.extn[k] = values.size
        self.next_ = k + 1
        self.validated = False
        return TG_EXT_BASE + (<int64_t> k << EXT_SHIFT)

    @property
    def nrefs(self):
        """How many arrays the tape references (add_const_ref) instead of holding copies."""
        return self.next_

    def const_values(self, int64_t off, Py_ssize_t n):
        """A copy of the n constants at offset ``off`` (own or referenced)."""
        cdef Py_ssize_t k
        if off >= TG_EXT_BASE:
            k = (off - TG_EXT_BASE) >> EXT_SHIFT
            if k >= self.next_ or (off & TG_EXT_MASK) + n > self.extn[k] or n < 0:
                raise ValueError(f"const_values: bad region [{off}, +{n})")
            a = self.ext_arrays[k].reshape(-1)
            return a[off & TG_EXT_MASK:(off & TG_EXT_MASK) + n].copy()
        if off < 0 or n < 0 or off + n > self.ncon:
            raise ValueError(f"const_values: bad region [{off}, +{n})")
        return self.constants()[off:off + n] if n else np.empty(0)

    def inlined(self):
        """This tape with its referenced arrays copied in (a tape that references nothing;
        self when it already does): what serialization writes."""
        if self.next_ == 0:
            return self
        cdef Tape t = Tape()
        cdef Py_ssize_t k
        base = [0] * self.next_
        t.alloc(self.nwork)
        t.add_const(self.constants())
        for k in range(self.next_):
            base[k] = t.add_const(self.ext_arrays[k])
        t.add_index(self.index_pool())
        ops = self.op_table()
        for field, bit in (("a", FLAG_A_CONST), ("b", FLAG_B_CONST), ("c", FLAG_C_CONST)):
            col = ops[field]
            sel = ((ops["flags"] & bit) != 0) & (col >= TG_EXT_BASE)
            if sel.any():
                kk = (col[sel] - TG_EXT_BASE) >> EXT_SHIFT
                col[sel] = np.asarray(base, dtype=np.int64)[kk] + (col[sel] & TG_EXT_MASK)
        t.add_ops(ops)
        for g in self.guard_table():
            t.guards_append(int(g[0]), int(g[1]), int(g[2]))
        t.set_io(self.nin, self.out_off, self.out_n)
        t.meta = self.meta
        t.callbacks = list(self.callbacks)
        return t

    cdef const CPool* pool_view(self):
        self.pool.vals = self.cvals
        self.pool.ext = self.extp
        return &self.pool

    cdef bint _outside(self, int64_t off, bint const_, int64_t WC):
        """Is an operand offset outside every buffer? A referenced constant's offset must name
        an existing array and an element up to its end (its region is checked by _region)."""
        cdef int64_t k
        if const_ and off >= TG_EXT_BASE:
            k = (off - TG_EXT_BASE) >> EXT_SHIFT
            return k >= self.next_ or (off & TG_EXT_MASK) > self.extn[k]
        return off > WC

    cdef int _region(self, int64_t off, int64_t size, int64_t W, bint const_, Py_ssize_t i,
                     int code, str what) except -1:
        cdef int64_t k
        if not const_:
            return _check_region(off, size, W, i, code, what)
        if off < TG_EXT_BASE:
            return _check_region(off, size, self.ncon, i, code, what)
        k = (off - TG_EXT_BASE) >> EXT_SHIFT
        if k >= self.next_ or size < 0 or (off & TG_EXT_MASK) + size > self.extn[k]:
            raise ValueError(f"invalid tape: {_w(i, code)}{what} region outside referenced "
                             f"constant array {k}")
        return 0

    def const_matches(self, Py_ssize_t off, values):
        """True if the constants stored at ``off`` are, bit for bit, ``values`` (as float64).
        Lets a recording reuse a stored array only while the array is unchanged, without keeping
        a second copy of it."""
        cdef const double[::1] v = np.ascontiguousarray(values, dtype=np.float64).ravel()
        cdef Py_ssize_t n = v.shape[0]
        if off < 0 or off + n > self.ncon:
            return False
        return n == 0 or memcmp(self.cvals + off, &v[0], n * sizeof(double)) == 0

    def add_index(self, idx):
        """Append integer indices (gather/scatter); returns their offset in the pool."""
        cdef const int64_t[::1] v = np.ascontiguousarray(idx, dtype=np.int64).ravel()
        cdef Py_ssize_t n = v.shape[0]
        self.ipool = <int64_t*> _reserve(self.ipool, &self.cap_idx, self.nidx + n, sizeof(int64_t))
        cdef Py_ssize_t off = self.nidx
        if n:
            memcpy(self.ipool + off, &v[0], n * sizeof(int64_t))
        self.nidx += n
        self.validated = False
        return off

    def add_callback(self, rule):
        """Register the rule object of an OP_CALL operation; returns its index (p3)."""
        self.callbacks.append(rule)
        self.validated = False
        return len(self.callbacks) - 1

    def add_guard(self, Py_ssize_t off, expected):
        """The replayed values at work[off:off+len(expected)] must equal ``expected``."""
        e = np.ascontiguousarray(expected, dtype=np.float64).ravel()
        self.guards_append(off, e.shape[0], self.add_const(e))

    def live_ops(self, new_starts, dict explicit, roots):
        """The liveness pass of a finished recording (Recorder.finish), by allocation: the
        allocations start at new_starts (Recorder.new) and at the outputs of the ops not in
        explicit (the emitted ops, which read operand a, and b when binary); an op k in
        explicit reads the work offsets explicit[k]. An op is live when its output allocation
        holds a root (work offsets: the output, guarded values) or is read by a live op.
        Returns (starts, keep): the allocations' starts, sorted, and None when every op is
        live, else a uint8 mask for keep_ops."""
        cdef Py_ssize_t k, i, m = 0, nops = self.nops, ns = len(new_starts)
        cdef Op* op
        # (C buffers and an in-place sort: NumPy's allocations and np.sort were most of this
        # pass's cost on the small tapes of a re-traced gradient)
        st = np.empty(ns + nops, dtype=np.int64)
        cdef int64_t[::1] s = st
        for v in new_starts:
            s[m] = v
            m += 1
        for k in range(nops):
            if k not in explicit:
                s[m] = self.ops[k].out
                m += 1
        if m > 1:
            qsort(&s[0], m, sizeof(int64_t), _cmp_i64)
        if m < ns + nops:
            st = st[:m]
            s = st
        cdef const int64_t* sp = &s[0] if m else NULL
        cdef unsigned char* nd = <unsigned char*> PyMem_Malloc(m + 1 + nops)
        if nd == NULL:
            raise MemoryError()
        cdef unsigned char* kp = nd + m + 1
        cdef bint all_live = True
        memset(nd, 0, m + 1 + nops)
        try:
            for v in roots:
                nd[_alloc_of(sp, m, v)] = 1
            for k in range(nops - 1, -1, -1):
                op = &self.ops[k]
                if not nd[_alloc_of(sp, m, op.out)]:
                    all_live = False
                    continue
                kp[k] = 1
                r = explicit.get(k) if explicit else None
                if r is None:
                    if not (op.flags & FLAG_A_CONST):
                        nd[_alloc_of(sp, m, op.a)] = 1
                    if op.code >= BIN_FIRST and not (op.flags & FLAG_B_CONST):
                        nd[_alloc_of(sp, m, op.b)] = 1
                    if op.code == OP_WHERE and not (op.flags & FLAG_C_CONST):
                        nd[_alloc_of(sp, m, op.c)] = 1
                else:
                    for v in r:
                        nd[_alloc_of(sp, m, v)] = 1
            if all_live:
                return st, None
            keep = np.empty(nops, dtype=np.uint8)
            if nops:
                memcpy(cnp.PyArray_DATA(keep), kp, nops)
            return st, keep
        finally:
            PyMem_Free(nd)

    def keep_ops(self, keep):
        """Drop the operations whose entry in the boolean array ``keep`` is False."""
        cdef const unsigned char[::1] k = np.ascontiguousarray(keep, dtype=np.uint8)
        if k.shape[0] != self.nops:
            raise ValueError("keep_ops: mask length differs from the number of operations")
        cdef Py_ssize_t i, j = 0
        for i in range(self.nops):
            if k[i]:
                self.ops[j] = self.ops[i]
                j += 1
        self.nops = j
        self.validated = False

    # ---------------------------------------------------------------- reading
    @property
    def nops(self):
        return self.nops

    @property
    def nconst(self):
        """Constants the sweeps read: the tape's own and the referenced arrays' elements."""
        cdef Py_ssize_t k, n = self.ncon
        for k in range(self.next_):
            n += self.extn[k]
        return n

    @property
    def nguards(self):
        return self.nguard // 3

    def op_outputs(self):
        """(out, n) of every operation, as two lists (where each op writes and how many values:
        what a re-traced gradient needs to place the values its recording kept)."""
        cdef Py_ssize_t k
        return ([self.ops[k].out for k in range(self.nops)],
                [self.ops[k].n for k in range(self.nops)])

    def op_table(self):
        """A copy of the operations as a NumPy structured array (dtype OP_DTYPE)."""
        arr = np.empty(self.nops, dtype=OP_DTYPE)
        cdef unsigned char[::1] raw = arr.view(np.uint8).reshape(-1) if self.nops else None
        if self.nops:
            memcpy(&raw[0], self.ops, self.nops * sizeof(Op))
        return arr

    def index_pool(self):
        cdef int64_t[::1] v = np.empty(self.nidx, dtype=np.int64)
        if self.nidx:
            memcpy(&v[0], self.ipool, self.nidx * sizeof(int64_t))
        return np.asarray(v)

    def constants(self):
        cdef double[::1] v = np.empty(self.ncon, dtype=np.float64)
        if self.ncon:
            memcpy(&v[0], self.cvals, self.ncon * sizeof(double))
        return np.asarray(v)

    def guard_table(self):
        cdef int64_t[::1] v = np.empty(self.nguard, dtype=np.int64)
        if self.nguard:
            memcpy(&v[0], self.guards, self.nguard * sizeof(int64_t))
        return np.asarray(v).reshape(-1, 3)

    def nbytes(self):
        """Bytes held by the tape itself (ops, indices, constants, guards)."""
        return (self.nops * sizeof(Op) + self.nidx * sizeof(int64_t)
                + self.ncon * sizeof(double) + self.nguard * sizeof(int64_t))

    # ---------------------------------------------------------------- validation
    def validate(self):
        """Check every region and index against the buffers; raises ValueError if any is bad."""
        cdef Py_ssize_t i, j
        cdef Op* op
        cdef int64_t W = self.nwork, C = self.ncon, n, sa, sb, pre, m, post
        cdef int code, fl
        cdef int64_t WC = W if W > C else C
        _check_region(0, self.nin, W, -1, 0, "input")
        _check_region(self.out_off, self.out_n, W, -1, 0, "output")
        if self.nguard % 3:
            raise ValueError("invalid tape: guard table is not made of triples")
        for j in range(0, self.nguard, 3):
            _check_region(self.guards[j], self.guards[j + 1], W, -1, 0, "guard")
            _check_region(self.guards[j + 2], self.guards[j + 1], C, -1, 0, "guard constant")
        for i in range(self.nops):
            op = &self.ops[i]
            code = op.code
            fl = op.flags
            n = op.n
            if code < 0 or code >= OP_COUNT:
                raise ValueError(f"invalid tape: op {i} has unknown opcode {code}")
            if fl < 0 or fl > FLAG_ALL:
                raise ValueError(f"invalid tape: {_w(i, code)} has bad flags {fl}")
            # the sweeps form a pointer for every operand, used or not (w + op.b of a unary
            # op): keep even unused offsets inside the buffers, or that arithmetic can overflow
            if (op.a < 0 or op.b < 0 or op.c < 0 or self._outside(op.a, fl & FLAG_A_CONST, WC)
                    or self._outside(op.b, fl & FLAG_B_CONST, WC)
                    or self._outside(op.c, fl & FLAG_C_CONST, WC)):
                raise ValueError(f"invalid tape: {_w(i, code)} has an operand offset outside the buffers")
            _check_region(op.out, n, W, i, code, " output")
            if code <= UN_LAST:
                self._region(op.a, n, W, fl & FLAG_A_CONST, i, code, " operand")
            elif code <= BIN_LAST:
                for j in range(4):
                    if op.p[j] < 1 or op.p[j] > SIZE_LIMIT:
                        raise ValueError(f"invalid tape: {_w(i, code)} has bad broadcast parameters")
                self._region(op.a, op.p[1], W, fl & FLAG_A_CONST, i, code, " operand a")
                self._region(op.b, op.p[3], W, fl & FLAG_B_CONST, i, code, " operand b")
                if code == OP_WHERE:
                    self._region(op.c, n, W, fl & FLAG_C_CONST, i, code, " mask")
            elif code <= OP_PROD:
                pre, m, post = op.p[0], op.p[1], op.p[2]
                if n != _mul(pre, post, i, code):
                    raise ValueError(f"invalid tape: {_w(i, code)} output size mismatch")
                self._region(op.a, _mul(_mul(pre, m, i, code), post, i, code),
                             W, fl & FLAG_A_CONST, i, code, " operand")
                if m == 0 and n > 0 and (code == OP_MAX or code == OP_MIN):
                    raise ValueError(f"invalid tape: {_w(i, code)} reduces an empty block")
            elif code == OP_MATMUL:
                for j in range(4):
                    if op.p[j] < 0 or op.p[j] >= (1 << 31):
                        raise ValueError(f"invalid tape: {_w(i, code)} has bad matrix sizes")
                # LP64 BLAS indexes a matrix with 32-bit integers (column * ld + row): keep
                # every operand and result below 2**31 elements or it may index out of bounds
                if (op.p[1] * op.p[2] >= INT32_LIMIT or op.p[2] * op.p[3] >= INT32_LIMIT
                        or op.p[1] * op.p[3] >= INT32_LIMIT):
                    raise ValueError(f"invalid tape: {_w(i, code)} has a matrix too large for BLAS")
                if op.p[4] not in (0, op.p[1] * op.p[2]) or op.p[5] not in (0, op.p[2] * op.p[3]):
                    raise ValueError(f"invalid tape: {_w(i, code)} has bad batch strides")
                if n != _mul(op.p[0], _mul(op.p[1], op.p[3], i, code), i, code):
                    raise ValueError(f"invalid tape: {_w(i, code)} output size mismatch")
                if op.p[0] > 0:
                    sa = _mul(op.p[4], op.p[0] - 1, i, code) + op.p[1] * op.p[2]
                    sb = _mul(op.p[5], op.p[0] - 1, i, code) + op.p[2] * op.p[3]
                    self._region(op.a, sa, W, fl & FLAG_A_CONST, i, code, " operand a")
                    self._region(op.b, sb, W, fl & FLAG_B_CONST, i, code, " operand b")
            elif code == OP_GATHER:
                _check_region(op.p[0], n, self.nidx, i, code, " index")
                self._region(op.a, op.p[1], W, fl & FLAG_A_CONST, i, code, " operand")
                for j in range(op.p[0], op.p[0] + n):
                    if self.ipool[j] < 0 or self.ipool[j] >= op.p[1]:
                        raise ValueError(f"invalid tape: {_w(i, code)} index out of range")
            elif code == OP_SCATTER_ADD:
                _check_region(op.p[0], op.p[1], self.nidx, i, code, " index")
                self._region(op.a, op.p[1], W, fl & FLAG_A_CONST, i, code, " operand")
                for j in range(op.p[0], op.p[0] + op.p[1]):
                    if self.ipool[j] < 0 or self.ipool[j] >= n:
                        raise ValueError(f"invalid tape: {_w(i, code)} index out of range")
            elif code == OP_COPY:
                self._region(op.a, n, W, fl & FLAG_A_CONST, i, code, " operand")
            elif code == OP_TRANSPOSE:
                if op.p[0] < 0 or op.p[1] < 0 or op.p[2] < 0 or op.p[3] < 0 or n != _mul(
                        _mul(op.p[0], op.p[1], i, code), _mul(op.p[2], op.p[3], i, code), i, code):
                    raise ValueError(f"invalid tape: {_w(i, code)} blocks do not match its size")
                self._region(op.a, n, W, fl & FLAG_A_CONST, i, code, " operand")
            elif code == OP_CALL:
                if op.p[3] < 0 or op.p[3] >= len(self.callbacks):
                    raise ValueError(f"invalid tape: {_w(i, code)} refers to a missing rule {op.p[3]}")
                rule = self.callbacks[op.p[3]]
                sizes = tuple(rule.in_sizes) + (0,) * (3 - len(rule.in_sizes))
                if (op.p[0], op.p[1], op.p[2]) != sizes or n != rule.out_size:
                    raise ValueError(f"invalid tape: {_w(i, code)} sizes do not match its rule")
                self._region(op.a, op.p[0], W, fl & FLAG_A_CONST, i, code, " operand a")
                self._region(op.b, op.p[1], W, fl & FLAG_B_CONST, i, code, " operand b")
                self._region(op.c, op.p[2], W, fl & FLAG_C_CONST, i, code, " operand c")
        self._find_segments()
        self._find_fused()
        self.outs_apart = self._find_outs_apart()
        self.validated = True
        return self

    # ---------------------------------------------------------------- serialization
    def to_bytes(self):
        """Serialize: magic, sizes, raw arrays, JSON metadata, CRC32 of everything before it.
        Referenced constant arrays are written as copies of their contents now."""
        if self.next_:
            return self.inlined().to_bytes()
        head = np.array([self.nops, self.nidx, self.ncon, self.nguard, self.nwork, self.nin,
                         self.out_off, self.out_n], dtype="<i8").tobytes()
        meta = json.dumps({"meta": self.meta,
                           "calls": [[r.name, r.params] for r in self.callbacks]}).encode()
        body = b"".join([
            MAGIC, head, np.array([len(meta)], dtype="<i8").tobytes(),
            self.op_table().tobytes(), self.index_pool().astype("<i8").tobytes(),
            self.constants().astype("<f8").tobytes(), self.guard_table().astype("<i8").tobytes(),
            meta,
        ])
        return body + np.array([zlib.crc32(body)], dtype="<u4").tobytes()

    @staticmethod
    def from_bytes(data, max_work=None):
        """Inverse of to_bytes. Corrupt or hostile input raises ValueError.

        ``max_work`` bounds the work buffer (slots) a loaded tape may ask replays to allocate
        (default ``MAX_WORK``), so a crafted header cannot demand terabytes.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("Tape.from_bytes: expected bytes")
        data = bytes(data)
        if len(data) < len(MAGIC) + 9 * 8 + 4 or data[:len(MAGIC)] != MAGIC:
            raise ValueError("Tape.from_bytes: not a tapegrad tape (bad magic or too short)")
        body, crc = data[:len(data) - 4], np.frombuffer(data[len(data) - 4:], dtype="<u4")[0]
        if zlib.crc32(body) != int(crc):
            raise ValueError("Tape.from_bytes: checksum mismatch (corrupt data)")
        pos = len(MAGIC)
        head = np.frombuffer(body, dtype="<i8", count=9, offset=pos)
        pos += 9 * 8
        nops, nidx, ncon, nguard, nwork, nin, out_off, out_n, nmeta = [int(v) for v in head]
        sizes = [nops * OP_DTYPE.itemsize, nidx * 8, ncon * 8, nguard * 8, nmeta]
        if min(head) < 0 or max(head) > SIZE_LIMIT or pos + sum(sizes) != len(body):
            raise ValueError("Tape.from_bytes: section sizes do not match the data length")
        if nguard % 3:
            raise ValueError("Tape.from_bytes: bad guard table")
        if nwork > (MAX_WORK if max_work is None else max_work):
            raise ValueError(f"Tape.from_bytes: work buffer of {nwork} slots exceeds max_work="
                             f"{MAX_WORK if max_work is None else max_work}")
        ops = np.frombuffer(body, dtype=OP_DTYPE, count=nops, offset=pos)
        pos += sizes[0]
        idx = np.frombuffer(body, dtype="<i8", count=nidx, offset=pos)
        pos += sizes[1]
        con = np.frombuffer(body, dtype="<f8", count=ncon, offset=pos)
        pos += sizes[2]
        gua = np.frombuffer(body, dtype="<i8", count=nguard, offset=pos)
        pos += sizes[3]
        try:
            meta = json.loads(body[pos:pos + nmeta].decode())
            calls = meta["calls"]
            meta = meta["meta"]
            if not isinstance(calls, list):
                raise ValueError("calls is not a list")
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError) as e:
            raise ValueError(f"Tape.from_bytes: bad metadata ({e})") from None
        rules = []
        if calls:
            if _rule_from_spec is None:
                raise ValueError("Tape.from_bytes: the tape holds rules written in Python, and "
                                 "none are installed (import tapegrad)")
            for spec in calls:
                rules.append(_rule_from_spec(spec))   # rules written in Python, by name
        cdef Tape t = Tape()
        t.alloc(nwork)
        t.add_const(con)
        t.add_index(idx)
        cdef const unsigned char[::1] raw
        cdef Py_ssize_t k
        if nops:
            while t.cap_ops < nops:
                t._grow_ops()
            raw = np.ascontiguousarray(ops).view(np.uint8).reshape(-1)
            memcpy(t.ops, &raw[0], nops * sizeof(Op))
            t.nops = nops
        for k in range(0, nguard, 3):
            t.guards_append(int(gua[k]), int(gua[k + 1]), int(gua[k + 2]))
        t.set_io(nin, out_off, out_n)
        t.meta = meta
        t.callbacks = rules
        t.validate()
        return t

    def guards_append(self, int64_t off, int64_t n, int64_t coff):
        cdef int64_t* p
        if self.nguard + 3 > self.cap_guard:
            p = <int64_t*> PyMem_Realloc(self.guards, 2 * self.cap_guard * sizeof(int64_t))
            if not p:
                raise MemoryError()
            self.guards = p
            self.cap_guard *= 2
        self.guards[self.nguard] = off
        self.guards[self.nguard + 1] = n
        self.guards[self.nguard + 2] = coff
        self.nguard += 3
        self.validated = False

    def __reduce__(self):
        return (Tape.from_bytes, (self.to_bytes(),))

    def __repr__(self):
        return (f"<tapegrad Tape: {self.nops} ops, {self.nwork} work slots, "
                f"{self.ncon} constants, {self.nguard // 3} guards, {self.nbytes()} bytes>")
