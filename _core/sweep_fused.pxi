# The two shortcuts for gradients of scalar losses, both giving the op-by-op sweeps' values:
# grad_partials (small scalar tapes: each one-element op's local partials stored by the forward
# sweep, the reverse a loop of multiply-adds) and grad_fused with its helpers (a tape ending in
# a long elementwise run summed to one number: that run's forward and reverse tile by tile in
# a small scratch). Which ops' adjoints read values, have constant partials or none at all is
# asked of the traits (traits.pxd), never listed here.

# ------------------------------------------------------------------ scalar tapes: partials
# Scalar code (a Python loop of scalar operations) records one-element ops whose reverse is
# mostly dispatch. For a gradient, the forward sweep stores each one-element op's local
# partials (P[2k], P[2k + 1]: dy/da, dy/db, the values reverse_scalar would compute), and the
# reverse sweep is then a loop of multiply-adds (preaccumulated local partials, Griewank &
# Walther 2008, sec. 4.6). sin and cos of the same x in one function become one sincos call.
cdef inline double un_fd(int code, double x, double d, double* dy) noexcept nogil:
    """y = f(x) and dy[0] = f'(x) of a unary elementwise op (un_f, un_d1)."""
    cdef double y
    if code == OP_SIN:
        dy[0] = cos(x)
        return sin(x)
    if code == OP_COS:
        dy[0] = -sin(x)
        return cos(x)
    y = un_f(code, x, d)
    dy[0] = un_d1(code, x, y, d) if op_has_partials(code) else 0.0
    return y


cdef int grad_partials(const TapeView* t, double* w, double* wb, double* P,
                       bint* ok) except -1 nogil:
    """Gradient of a scalar-output tape with no tiling segments, x already in w[0:nin]: the
    forward sweep with local partials of one-element ops in P (2 per op), then the reverse.
    wb must be zero; wb[0:nin] receives the gradient. ok: the guards held."""
    cdef Py_ssize_t k, nops = t.nops
    cdef const Op* op
    cdef const CPool* cv = t.cv
    cdef int code, fl
    cdef double g, da, db
    for k in range(nops):
        op = &t.ops[k]
        code = op.code
        fl = op.flags
        if op.n == 1 and code <= BIN_LAST:
            if code <= UN_LAST:
                w[op.out] = un_fd(code, opnd(w, cv, op.a, fl, FLAG_A_CONST)[0], op.d, &P[2 * k])
            else:
                da = opnd(w, cv, op.a, fl, FLAG_A_CONST)[0]
                db = opnd(w, cv, op.b, fl, FLAG_B_CONST)[0]
                g = opnd(w, cv, op.c, fl, FLAG_C_CONST)[0] if code == OP_WHERE else 0.0
                w[op.out] = bin_f(code, da, db, g)
                bin_d1(code, da, db, w[op.out], g, &P[2 * k], &P[2 * k + 1])
        elif code == OP_CALL:
            call_forward(t.cbs, op, opnd(w, cv, op.a, fl, FLAG_A_CONST),
                         opnd(w, cv, op.b, fl, FLAG_B_CONST),
                         opnd(w, cv, op.c, fl, FLAG_C_CONST), w + op.out)
        else:
            forward_op(op, t.ipool, opnd(w, cv, op.a, fl, FLAG_A_CONST),
                       opnd(w, cv, op.b, fl, FLAG_B_CONST),
                       opnd(w, cv, op.c, fl, FLAG_C_CONST), w + op.out)
    ok[0] = guards_hold(t.guards, t.nguard, cv, w)
    if not ok[0]:
        return 0
    wb[t.out_off] = 1.0
    for k in range(nops - 1, -1, -1):
        op = &t.ops[k]
        code = op.code
        if op.n == 1 and code <= BIN_LAST:
            if not op_has_partials(code):
                continue
            g = wb[op.out]
            if not (op.flags & FLAG_A_CONST):
                wb[op.a] += g * P[2 * k]
            if code >= BIN_FIRST and not (op.flags & FLAG_B_CONST):
                wb[op.b] += g * P[2 * k + 1]
        else:
            reverse_op(t, op, w, wb)
    return 0


# ------------------------------------------------------------------ fused gradient tail
# A scalar loss usually ends in a run of elementwise ops summed to one number (Tape._find_fused:
# ops [k0, K) elementwise, op K the sum, the tape's output). For its gradient the tail's forward
# and reverse run together, tile by tile: forward of every tail op on the tile, the partial sums,
# then the reverse of the tail ops on the same tile (the sum's adjoint is the seed, known up
# front). The tail's values and adjoints live in a per-call scratch of two tiles per op, so they
# never travel to the work buffers: only the tail's external operands (inputs, earlier results)
# are read and only their adjoints written. The work buffers' tail regions are left untouched.
# Long tails run chunk by chunk over the threads (FuseRun, fuse_chunk; sweep_threads.pxi says
# how shifted operands' edge tiles keep the bits independent of the thread count).
cdef Py_ssize_t FUSE_TILE = 512
cdef bint FUSING = True


def set_fusing(enabled=True, tile=None):
    """Switch the fused gradient tail on or off (and set its tile length); returns the previous
    (enabled, tile). For tests and benchmarks: results agree up to the order in which an input's
    adjoint adds its contributions."""
    global FUSING, FUSE_TILE
    prev = (bool(FUSING), int(FUSE_TILE))
    FUSING = bool(enabled)
    if tile is not None:
        FUSE_TILE = _tile_length("set_fusing", tile)
    return prev


if _switched_off("TAPEGRAD_FUSING"):
    FUSING = False


cdef inline Py_ssize_t fused_k0(Tape t) noexcept:
    return t.fuse_k0 if FUSING else -1


cdef Py_ssize_t segs_before(const int64_t* segs, Py_ssize_t nsegs, Py_ssize_t k) noexcept nogil:
    """How many tiling segments end at or before op k (segments are sorted)."""
    cdef Py_ssize_t s = 0
    while s < nsegs and segs[3 * s + 1] <= k:
        s += 1
    return s


cdef void zero_outside(double* wb, Py_ssize_t start, Py_ssize_t nwork, const Op* ops,
                       Py_ssize_t k0, Py_ssize_t k1) noexcept nogil:
    """wb[i] = 0 for every i in [start, nwork) outside the outputs of ops [k0, k1) (disjoint
    regions)."""
    cdef Py_ssize_t pos = start, best, j, lo, hi
    while pos < nwork:
        # the tail output starting first at or after pos
        best = -1
        for j in range(k0, k1):
            if ops[j].out >= pos and (best < 0 or ops[j].out < ops[best].out):
                best = j
        if best < 0:
            memset(wb + pos, 0, (nwork - pos) * sizeof(double))
            return
        lo = ops[best].out
        hi = lo + ops[best].n
        if lo > pos:
            memset(wb + pos, 0, (lo - pos) * sizeof(double))
        pos = hi if hi > pos else pos + 1


cdef inline Py_ssize_t fuse_row(Py_ssize_t n, Py_ssize_t T) noexcept nogil:
    """Scratch row length of a fused tail of n elements: its longest tile (< 2 T, at most n)."""
    return n if n < 2 * T else 2 * T


cdef inline double linear_partial(const Op* op, int r) noexcept nogil:
    """d y / d operand r when it is a constant independent of the values (NaN: it is not)."""
    return op_linear_partial(op.code, op.d, r)
    if code == OP_ADD or code == OP_ADDC:
        return 1.0
    if code == OP_SUB:
        return 1.0 if r == 0 else -1.0
    if code == OP_RSUBC or code == OP_NEG:
        return -1.0
    if code == OP_MULC:
        return op.d
    if code == OP_DIVC:
        return 1.0 / op.d
    return NAN


cdef inline bint has_adjoint(const Op* op, int r) noexcept nogil:
    """Does operand r (0 = a, 1 = b) of an elementwise op receive an adjoint?"""
    if r == 0:
        return not (op.flags & FLAG_A_CONST) and op_has_partials(op.code)
    return (op.code >= BIN_FIRST and op_has_partials(op.code) and not (op.flags & FLAG_B_CONST))


ctypedef struct FusePlan:
    # per tail op j (L of them): src[3 j + r] the tail op whose output operand r reads, or -1;
    # uni[j]: its adjoint is the same number u[j] * seed on every element (known before the
    # sweep: it only receives constant multiples of other uniform adjoints), else it is a row
    # that starts each tile at init[j] * seed; run[j]: its reverse loop runs (else all its
    # contributions went into uniform coefficients); need[j]: its value is computed
    int src[3 * TILE_MAX_OPS]
    bint uni[TILE_MAX_OPS]
    bint run[TILE_MAX_OPS]
    bint need[TILE_MAX_OPS]
    double u[TILE_MAX_OPS]
    double init[TILE_MAX_OPS]


cdef void fuse_plan(const Op* ops, Py_ssize_t k0, Py_ssize_t L, bint values,
                    FusePlan* P) noexcept nogil:
    """The plan of a fused tail of L ops from k0 (L <= TILE_MAX_OPS). values: the sum's value
    is wanted (else only what the adjoints read is computed)."""
    cdef Py_ssize_t j, i, r
    cdef int64_t off
    cdef const Op* op
    cdef double c
    cdef bint lin
    for j in range(L):
        op = &ops[k0 + j]
        P.uni[j] = True
        P.u[j] = 0.0
        P.init[j] = 0.0
        P.run[j] = False
        P.need[j] = values
        for r in range(3):
            P.src[3 * j + r] = -1
            if r == 0:
                off = op.a
                if op.flags & FLAG_A_CONST:
                    continue
            elif r == 1:
                off = op.b
                if op.code <= UN_LAST or op.flags & FLAG_B_CONST:
                    continue
            else:
                off = op.c
                if op.code != OP_WHERE or op.flags & FLAG_C_CONST:
                    continue
            # the segment rules: a read that touches a tail output is exactly that output
            for i in range(j):
                if ops[k0 + i].out == off:
                    P.src[3 * j + r] = <int> i
    P.u[L - 1] = 1.0
    # adjoints, last op first: uniform ones pass constant multiples on to internal operands
    for j in range(L - 1, -1, -1):
        op = &ops[k0 + j]
        lin = P.uni[j]
        for r in range(2):
            if has_adjoint(op, r) and (P.src[3 * j + r] < 0 or linear_partial(op, r) != linear_partial(op, r)):
                lin = False
        if lin:
            for r in range(2):
                if has_adjoint(op, r):
                    i = P.src[3 * j + r]
                    c = P.u[j] * linear_partial(op, r)
                    if P.uni[i]:
                        P.u[i] += c
                    else:
                        P.init[i] += c
            continue
        P.run[j] = has_adjoint(op, 0) or has_adjoint(op, 1)
        if not P.run[j]:
            continue
        for r in range(2):
            i = P.src[3 * j + r]
            if has_adjoint(op, r) and i >= 0 and P.uni[i]:
                P.uni[i] = False
                P.init[i] = P.u[i]
    # values: those the running adjoints read, and what they are computed from
    for j in range(L):
        op = &ops[k0 + j]
        if not P.run[j]:
            continue
        if op_reads_y(op.code):
            P.need[j] = True
        if linear_partial(op, 0) != linear_partial(op, 0):   # reads its operands' values
            for r in range(3):
                if P.src[3 * j + r] >= 0:
                    P.need[P.src[3 * j + r]] = True
    for j in range(L - 1, -1, -1):
        if P.need[j]:
            for r in range(3):
                if P.src[3 * j + r] >= 0:
                    P.need[P.src[3 * j + r]] = True


cdef inline const double* fz_val(const FusePlan* P, Py_ssize_t j, int r, const double* scr,
                                 Py_ssize_t R, const Op* top, const double* w, const double* xin,
                                 Py_ssize_t nin, const CPool* cv) noexcept nogil:
    # the value pointer of operand r of tail op j on the current tile (top: the tiled op)
    cdef int i = P.src[3 * j + r]
    cdef int64_t off = top.a if r == 0 else (top.b if r == 1 else top.c)
    cdef int bit = FLAG_A_CONST if r == 0 else (FLAG_B_CONST if r == 1 else FLAG_C_CONST)
    if i >= 0:
        return scr + 2 * i * R
    if top.flags & bit:
        return cpool_at(cv, off)
    return (xin if off < nin else w) + off


cdef inline double* fz_adj(const FusePlan* P, Py_ssize_t j, int r, double* scr, Py_ssize_t R,
                           const Op* top, double* wb, double* gin, Py_ssize_t nin) noexcept nogil:
    cdef int i = P.src[3 * j + r]
    cdef int64_t off = top.a if r == 0 else top.b
    if i >= 0:
        return scr + (2 * i + 1) * R
    return (gin if off < nin else wb) + off


ctypedef struct FuseRun:
    # one call of a fused sweep (the gradient tail or H v), shared by the threads: the tail
    # ops [k0, K) of n elements, in chunks (sweep_threads.pxi), tiles of T, scratch rows of R
    const Op* ops
    const FusePlan* P
    const int64_t* ipool
    const CPool* cv
    Py_ssize_t k0, K, n, nch, T, R, nin
    bint values, rev
    double* w
    double* wb
    const double* xin
    double* gin
    double g                  # the sum's adjoint (rev)
    double* sums              # per chunk: the sum's part (values)
    # edge rows: operand r of tail op j has slot[2 j + r] >= 0 when it may add into the
    # elements of a neighbouring chunk; its edge tiles add into a row of hold instead (chunk
    # c, side 0 its first tile, side 1 its last; lanes rows of R each), set to -0.0 by the tile
    int slot[2 * TILE_MAX_OPS]
    int64_t soff[2 * TILE_MAX_OPS]
    Py_ssize_t nslot, lanes
    double* hold
    # zero_in: each chunk clears its own part of gin[0:nin] first (the gradient array of the
    # direct case: one pass over it fewer than clearing it before the sweep)
    bint zero_in


cdef bint plan_edges(FuseRun* F, const bint* adj) noexcept nogil:
    """The edge slots of F's tail (adj[2 j + r]: operand r of tail op j adds into an external
    adjoint) and whether its chunks may run in parallel: no scalar operand with an adjoint
    (its adjoint sums over every chunk), shifts within a group of overlapping operand regions
    at most one tile, and chunks of at least 4 tiles. Slots: the operands of groups with a
    shift (set only when the chunks may run in parallel)."""
    cdef Py_ssize_t j, q, q2, m = 0, n = F.n, L = F.K - F.k0
    cdef int r
    cdef int idx[2 * TILE_MAX_OPS]
    cdef int64_t off[2 * TILE_MAX_OPS]
    cdef int64_t glo[2 * TILE_MAX_OPS]
    cdef int64_t ghi[2 * TILE_MAX_OPS]
    cdef const Op* op
    cdef bint changed
    F.nslot = 0
    for j in range(2 * L):
        F.slot[j] = -1
    if 4 * F.T > PAR_CHUNK:
        F.zero_in = False
        return False
    for j in range(L):
        op = &F.ops[F.k0 + j]
        for r in range(2):
            if not adj[2 * j + r]:
                continue
            if op.code > UN_LAST and not (op.p[2 * r] == 1 and op.p[2 * r + 1] == n):
                F.zero_in = False
                return False          # a broadcast scalar (or another broadcast)
            idx[m] = <int> (2 * j + r)
            off[m] = op.a if r == 0 else op.b
            glo[m] = ghi[m] = off[m]
            m += 1
    # each operand's group: the offsets of the regions chained to it by overlaps
    changed = True
    while changed:
        changed = False
        for q in range(m):
            for q2 in range(m):
                if off[q2] < off[q] + n and off[q] < off[q2] + n:
                    if glo[q2] < glo[q]:
                        glo[q] = glo[q2]
                        changed = True
                    if ghi[q2] > ghi[q]:
                        ghi[q] = ghi[q2]
                        changed = True
    for q in range(m):
        if ghi[q] - glo[q] > F.T:
            F.nslot = 0
            for j in range(2 * L):
                F.slot[j] = -1
            F.zero_in = False
            return False
    # the chunks may clear the caller's gradient themselves (zero_in, see fuse_chunk) when
    # every operand read from it lies at an offset in [0, T]; then all of those are held
    if F.zero_in:
        for q in range(m):
            if off[q] < F.nin and not (0 <= off[q] <= F.T):
                F.zero_in = False
    for q in range(m):
        if ghi[q] > glo[q] or (F.zero_in and off[q] < F.nin):
            F.slot[idx[q]] = <int> F.nslot
            F.soff[F.nslot] = off[q]
            F.nslot += 1
    return True


cdef inline double* edge_rows(const FuseRun* F, Py_ssize_t c, Py_ssize_t lo, Py_ssize_t hi,
                              Py_ssize_t t0, Py_ssize_t tl) noexcept nogil:
    """The hold rows of the tile [t0, t0 + tl) of chunk c = [lo, hi), set to -0.0 (NULL: not
    an edge tile)."""
    cdef double* h
    cdef Py_ssize_t i
    if F.nslot == 0:
        return NULL
    if t0 == lo and c > 0:
        h = F.hold + (2 * c) * F.nslot * F.lanes * F.R
    elif t0 + tl == hi and c < F.nch - 1:
        h = F.hold + (2 * c + 1) * F.nslot * F.lanes * F.R
    else:
        return NULL
    for i in range(F.nslot * F.lanes * F.R):
        h[i] = -0.0
    return h


cdef void merge_edges(const FuseRun* F, double* base_in, double* base_w,
                      Py_ssize_t lstride) noexcept nogil:
    """Adds the hold rows into the adjoints (operands below nin into base_in, others into
    base_w; lane l at + l lstride) in a fixed order: chunk, first tile then last, op (last
    first), operand."""
    cdef Py_ssize_t c, side, j, r, s, l, i, lo, hi, t0, tl, L = F.K - F.k0
    cdef double* row
    cdef double* dst
    for c in range(F.nch):
        lo = c * PAR_CHUNK
        hi = chunk_end(c, F.nch, F.n)
        for side in range(2):
            if (side == 0 and c == 0) or (side == 1 and c == F.nch - 1):
                continue
            t0 = lo if side == 0 else lo + last_tile_start(hi - lo, F.T)
            tl = tile_len(t0 - lo, hi - lo, F.T)
            for j in range(L - 1, -1, -1):
                for r in range(2):
                    s = F.slot[2 * j + r]
                    if s < 0:
                        continue
                    for l in range(F.lanes):
                        row = F.hold + (((2 * c + side) * F.nslot + s) * F.lanes + l) * F.R
                        dst = (base_in if F.soff[s] < F.nin else base_w) + F.soff[s] + t0 + l * lstride
                        for i in range(tl):
                            dst[i] += row[i]


cdef void fuse_scratch_start(const FuseRun* F, double* scr) noexcept nogil:
    """A scratch's uniform adjoint rows: one number for the whole sweep."""
    cdef Py_ssize_t i, j, L = F.K - F.k0
    cdef double c
    cdef double* v
    for j in range(L):
        if F.rev and F.P.uni[j] and F.P.run[j]:
            v = scr + (2 * j + 1) * F.R
            c = F.P.u[j] * F.g
            for i in range(F.R):
                v[i] = c


cdef inline bint fz_reverse_cheap(const Op* top, const double* a, const double* b,
                                  const double* yb, double* ab, double* bb, bint fa, bint fb,
                                  Py_ssize_t tl) noexcept nogil:
    """reverse_elem of a cheap op on a tile (its loops and formulas, bit for bit), where an
    operand's adjoint row that no contribution has reached yet on this tile (fa, fb) is written
    instead of added to: x = t is x = 0 + t but for the sign of a zero, which the sums into the
    gradient (started at +0) do not keep. False: not such an op, take reverse_elem."""
    cdef Py_ssize_t i
    cdef int code = top.code, fl = top.flags
    cdef double d = top.d
    if tl < 2:
        return False
    if code <= UN_LAST:
        if (fl & FLAG_A_CONST) or not op_cheap_unary(code):
            return False
        if code == OP_SQUARE:
            if fa:
                for i in range(tl):
                    ab[i] = 2.0 * a[i] * yb[i]
            else:
                for i in range(tl):
                    ab[i] += 2.0 * a[i] * yb[i]
            return True
        if code == OP_RSUBC or code == OP_NEG:
            if fa:
                for i in range(tl):
                    ab[i] = -yb[i]
            else:
                for i in range(tl):
                    ab[i] -= yb[i]
            return True
        if code == OP_ADDC:
            if fa:
                for i in range(tl):
                    ab[i] = yb[i]
            else:
                for i in range(tl):
                    ab[i] += yb[i]
            return True
        if code == OP_DIVC:
            d = 1.0 / d             # (reverse_elem's product)
        elif code != OP_MULC:
            return False
        if fa:
            for i in range(tl):
                ab[i] = yb[i] * d
        else:
            for i in range(tl):
                ab[i] += yb[i] * d
        return True
    if not (code <= BIN_LAST and op_cheap_binary(code) and both_full(top)):
        return False
    # separate loops: a and b may be the same slot (x * x), then b's adds (fb is False)
    if not (fl & FLAG_A_CONST):
        if code == OP_MUL:
            if fa:
                for i in range(tl):
                    ab[i] = yb[i] * b[i]
            else:
                for i in range(tl):
                    ab[i] += yb[i] * b[i]
        elif fa:
            for i in range(tl):
                ab[i] = yb[i]
        else:
            for i in range(tl):
                ab[i] += yb[i]
    if not (fl & FLAG_B_CONST):
        if code == OP_MUL:
            if fb:
                for i in range(tl):
                    bb[i] = yb[i] * a[i]
            else:
                for i in range(tl):
                    bb[i] += yb[i] * a[i]
        elif code == OP_ADD:
            if fb:
                for i in range(tl):
                    bb[i] = yb[i]
            else:
                for i in range(tl):
                    bb[i] += yb[i]
        elif fb:
            for i in range(tl):
                bb[i] = -yb[i]
        else:
            for i in range(tl):
                bb[i] -= yb[i]
    return True


cdef void fuse_chunk(const FuseRun* F, Py_ssize_t c, double* scr) noexcept nogil:
    """Forward and reverse of the tail on chunk c (all of it when there is one chunk)."""
    cdef Op top
    cdef const FusePlan* P = F.P
    cdef const Op* ops = F.ops
    cdef Py_ssize_t i, j, k0 = F.k0, L = F.K - F.k0, R = F.R, T = F.T, nin = F.nin
    cdef Py_ssize_t lo = c * PAR_CHUNK, hi = chunk_end(c, F.nch, F.n), t0, tl
    cdef double ps[4]
    cdef double g = F.g, cc
    cdef double* v
    cdef double* hrows
    cdef double* pa
    cdef double* pb
    cdef const double* va
    cdef const double* vb
    cdef int ia, ib
    cdef bint fa, fb
    cdef bint fresh[TILE_MAX_OPS]   # tail ops whose adjoint row no contribution reached yet
    cdef const double* last = scr + 2 * (L - 1) * R
    ps[0] = ps[1] = ps[2] = ps[3] = 0.0
    if F.zero_in:
        # this chunk's share of the gradient array: no other chunk writes into it before the
        # edge rows are merged (all operands read from it are held on edge tiles and lie at
        # offsets in [0, T], so the middle tiles write only into [lo + T, hi))
        i = 0 if c == 0 else lo
        memset(F.gin + i, 0, ((nin if c == F.nch - 1 else hi) - i) * sizeof(double))
    t0 = lo
    while t0 < hi:
        tl = tile_len(t0 - lo, hi - lo, T)
        for j in range(L):
            if P.need[j]:
                tile_op(&ops[k0 + j], &top, t0, tl)
                forward_op(&top, F.ipool, fz_val(P, j, 0, scr, R, &top, F.w, F.xin, nin, F.cv),
                           fz_val(P, j, 1, scr, R, &top, F.w, F.xin, nin, F.cv),
                           fz_val(P, j, 2, scr, R, &top, F.w, F.xin, nin, F.cv), scr + 2 * j * R)
        if F.values and fold_tile(last, tl, t0 + tl == hi, ps):
            F.sums[c] = ps[0]
        if not F.rev:
            t0 += tl
            continue
        # reverse on the same tile; row adjoints start at their uniform part: a nonzero
        # one is filled in, a zero one is written by its first contribution (fresh)
        for j in range(L):
            fresh[j] = False
            if not P.uni[j]:
                v = scr + (2 * j + 1) * R
                if P.init[j] == 0.0:
                    fresh[j] = True
                else:
                    cc = P.init[j] * g
                    for i in range(tl):
                        v[i] = cc
        hrows = edge_rows(F, c, lo, hi, t0, tl)
        for j in range(L - 1, -1, -1):
            if P.run[j]:
                tile_op(&ops[k0 + j], &top, t0, tl)
                if fresh[j]:        # no contribution reached it: zero, as the sweeps have it
                    memset(scr + (2 * j + 1) * R, 0, tl * sizeof(double))
                    fresh[j] = False
                pa = fz_adj(P, j, 0, scr, R, &top, F.wb, F.gin, nin)
                pb = fz_adj(P, j, 1, scr, R, &top, F.wb, F.gin, nin)
                if hrows != NULL:
                    if F.slot[2 * j] >= 0:
                        pa = hrows + F.slot[2 * j] * R
                    if F.slot[2 * j + 1] >= 0:
                        pb = hrows + F.slot[2 * j + 1] * R
                ia = P.src[3 * j]
                ib = P.src[3 * j + 1]
                fa = ia >= 0 and fresh[ia]
                fb = ib >= 0 and fresh[ib] and ib != ia
                va = fz_val(P, j, 0, scr, R, &top, F.w, F.xin, nin, F.cv)
                vb = fz_val(P, j, 1, scr, R, &top, F.w, F.xin, nin, F.cv)
                if not fz_reverse_cheap(&top, va, vb, scr + (2 * j + 1) * R, pa, pb, fa, fb,
                                        tl):
                    if fa:
                        memset(pa, 0, tl * sizeof(double))
                    if fb:
                        memset(pb, 0, tl * sizeof(double))
                    reverse_elem(&top, va, vb,
                                 fz_val(P, j, 2, scr, R, &top, F.w, F.xin, nin, F.cv),
                                 scr + 2 * j * R, scr + (2 * j + 1) * R, pa, pb)
                if ia >= 0 and has_adjoint(&top, 0):
                    fresh[ia] = False
                if ib >= 0 and has_adjoint(&top, 1):
                    fresh[ib] = False
        t0 += tl


cdef int fused_tail(const Op* ops, Py_ssize_t k0, Py_ssize_t K, const FusePlan* P, bint values,
                    bint rev, const int64_t* ipool, const CPool* cv, double* w, double* wb,
                    const double* xin, double* gin, Py_ssize_t nin, double* scr,
                    Py_ssize_t T, double* total, int nt, bint zero_in=False) except -1 nogil:
    """Forward and reverse of the tail [k0, K) and its folded sum K (see above). scr holds
    2 (K - k0) rows of R = fuse_row(n, T) values (row 2 j: values of op k0 + j, row 2 j + 1: adjoints).
    Operands in [0, nin) are read from xin and their adjoints added to gin (the caller passes w
    and wb, or the caller's input and gradient arrays); wb must be zero where adjoints are
    added, and wb[ops[K].out] holds the seed. rev = False: the forward alone (the sum's
    value), P planned with values. The sum's value goes to total[0]. Long tails run in chunks
    over nt threads
    (sweep_threads.pxi)."""
    cdef FuseRun F
    cdef Py_ssize_t j, r, c, L = K - k0, n = ops[k0].n
    cdef bint adj[2 * TILE_MAX_OPS]
    cdef bint par
    cdef int fail = 0
    cdef int* failp = &fail
    cdef double one, s
    cdef double* s2
    F.ops = ops
    F.P = P
    F.ipool = ipool
    F.cv = cv
    F.k0 = k0
    F.K = K
    F.n = n
    F.nch = n_chunks(n)
    F.T = T
    F.R = fuse_row(n, T)
    F.nin = nin
    F.values = values
    F.rev = rev
    F.w = w
    F.wb = wb
    F.xin = xin
    F.gin = gin
    F.g = wb[ops[K].out] if rev else 0.0
    F.sums = &one
    F.nslot = 0
    F.lanes = 1
    F.hold = NULL
    F.zero_in = zero_in and rev and F.nch > 1
    for j in range(2 * TILE_MAX_OPS):
        F.slot[j] = -1
    if F.nch == 1:
        if zero_in:
            memset(gin, 0, nin * sizeof(double))
        fuse_scratch_start(&F, scr)
        fuse_chunk(&F, 0, scr)
        if values:
            total[0] = one
        return 0
    for j in range(L):
        for r in range(2):
            adj[2 * j + r] = rev and P.run[j] and has_adjoint(&ops[k0 + j], r) and P.src[3 * j + r] < 0
    par = plan_edges(&F, adj)
    if zero_in and not F.zero_in:
        par_zero(gin, nin, nt)
    F.sums = <double*> malloc(F.nch * sizeof(double))
    if F.nslot:
        F.hold = <double*> malloc(2 * F.nch * F.nslot * F.R * sizeof(double))
    if F.sums == NULL or (F.nslot and F.hold == NULL):
        free(F.sums)
        free(F.hold)
        with gil:
            raise MemoryError()
    if par and nt > 1:
        with parallel(num_threads=nt):
            s2 = <double*> malloc(2 * L * F.R * sizeof(double))
            if s2 == NULL:
                failp[0] = 1
            else:
                fuse_scratch_start(&F, s2)
            for c in prange(F.nch, schedule="dynamic"):
                if s2 != NULL:
                    fuse_chunk(&F, c, s2)
            free(s2)
    else:
        fuse_scratch_start(&F, scr)
        for c in range(F.nch):
            fuse_chunk(&F, c, scr)
    if F.nslot and not fail:
        merge_edges(&F, gin, wb, 0)
    if values:
        s = F.sums[0]
        for c in range(1, F.nch):
            s += F.sums[c]
        total[0] = s
    free(F.sums)
    free(F.hold)
    if fail:
        with gil:
            raise MemoryError()
    return 0


cdef bint inputs_apart(const Op* ops, Py_ssize_t k0, Py_ssize_t K, Py_ssize_t nin) noexcept nogil:
    """Does every work-buffer operand of the tail lie wholly inside or wholly outside the
    inputs [0, nin)? (Then the tail may read the caller's input array in place.)"""
    cdef Py_ssize_t j
    cdef const Op* op
    for j in range(k0, K):
        op = &ops[j]
        if not (op.flags & FLAG_A_CONST) and straddles(op.a, op.n if op.code <= UN_LAST else op.p[1], nin):
            return False
        if op.code > UN_LAST and not (op.flags & FLAG_B_CONST) and straddles(op.b, op.p[3], nin):
            return False
        if op.code == OP_WHERE and not (op.flags & FLAG_C_CONST) and straddles(op.c, op.n, nin):
            return False
    return True


cdef inline bint straddles(int64_t off, int64_t m, Py_ssize_t nin) noexcept nogil:
    return off < nin and off + m > nin


cdef bint post_value_free(const Op* ops, Py_ssize_t K, Py_ssize_t nops) noexcept nogil:
    """Do the adjoints of the ops after the sum K read no value that depends on the sum? (Then
    the sum's adjoint is known without its value: a mean's 1/n, a penalty added to it.) The
    ops that depend on it are found by overlap with the outputs of those that do."""
    cdef Py_ssize_t k, j, ndep = 1
    cdef int q, nr
    cdef int64_t off[3]
    cdef int64_t ln[3]
    cdef int64_t dep_off[TILE_MAX_OPS + 1]
    cdef int64_t dep_n[TILE_MAX_OPS + 1]
    cdef bint dep
    dep_off[0] = ops[K].out
    dep_n[0] = ops[K].n
    for k in range(K + 1, nops):
        nr = op_reads(&ops[k], off, ln)
        dep = False
        for q in range(nr):
            for j in range(ndep):
                if off[q] < dep_off[j] + dep_n[j] and dep_off[j] < off[q] + ln[q]:
                    dep = True
        if not dep:
            continue
        if not op_value_free_reverse(ops[k].code) or ndep > TILE_MAX_OPS:
            return False
        dep_off[ndep] = ops[k].out
        dep_n[ndep] = ops[k].n
        ndep += 1
    return True


cdef int grad_fused(const TapeView* t, const double* x, double* g, double* w, double* wb,
                    bint values, bint* ok, bint clean=False) except -1 nogil:
    """Scalar-output gradient with the fused tail [k0, K] (k0 = t.fuse_k0, K = t.fuse_sum) at the input x into
    g (nin values each); afterwards w[out_off] is the value if values. ok: the guards held.
    The sweep writes wb only outside the tail's outputs (and not at all in [0, nin) when the
    tail adds into g directly), which it clears first; clean: wb arrives all zero, and what
    the sweep wrote is cleared after it instead (value_and_grad's clean mode).
    With ops after the sum ("post" ops): the tail's forward alone gives the sum, the post ops
    run forward and reverse, which gives the sum's adjoint, then the fused tail runs with it
    (its forward computed twice, in cache: cheaper than storing it). When nothing needs the
    value and the post ops' adjoints read no value that depends on the sum (a mean's 1/n, a
    penalty added), the first pass is skipped."""
    cdef Py_ssize_t k0 = t.fuse_k0, K = t.fuse_sum, L = K - k0, T = FUSE_TILE, ns, nin = t.nin
    cdef TapeView part
    cdef Py_ssize_t npost = t.nops - K - 1
    cdef FusePlan P
    cdef double* scr
    cdef bint need_vals = values or t.nguard > 0
    # (guards may read the sum or post values: they are checked after a first pass)
    cdef bint first_pass = t.nguard > 0 or (npost > 0 and (
        values or not post_value_free(t.ops, K, t.nops)))
    # with no ops before or after the tail and no guards, the tail reads x and adds into g
    cdef bint direct = (k0 == 0 and npost == 0 and t.nguard == 0
                        and inputs_apart(t.ops, k0, K, nin)
                        and (g + nin <= x or x + nin <= g))
    if not direct:
        if nin:
            memcpy(w, x, nin * sizeof(double))
        ns = segs_before(t.segs, t.nsegs, k0)
        part = view_part(t, 0, k0, ns)
        forward_sweep(&part, w)
    scr = <double*> malloc(2 * L * fuse_row(t.ops[k0].n, T) * sizeof(double))
    if scr == NULL:
        with gil:
            raise MemoryError()
    if direct:
        fuse_plan(t.ops, k0, L, values, &P)
        if not clean:
            zero_outside(wb, nin, t.nwork, t.ops, k0, K)
        wb[t.out_off] = 1.0
        try:
            # (the tail clears g: in its chunks when it can, else before them)
            fused_tail(t.ops, k0, K, &P, values, True, t.ipool, t.cv, w, wb, x, g, nin, scr, T,
                       w + t.ops[K].out, t.nthreads, True)
        finally:
            free(scr)
        if clean:
            zero_outside(wb, nin, t.nwork, t.ops, k0, K)
            wb[t.out_off] = 0.0
        ok[0] = True
        return 0
    try:
        if first_pass:
            fuse_plan(t.ops, k0, L, True, &P)
            fused_tail(t.ops, k0, K, &P, True, False, t.ipool, t.cv, w, wb, w, wb, nin, scr, T,
                       w + t.ops[K].out, t.nthreads)
        if npost:
            # without a first pass the sum is not known yet: the post ops that depend on it
            # get placeholder values, which no adjoint reads (post_value_free)
            if not first_pass:
                w[t.ops[K].out] = 0.0
            part = view_part(t, K + 1, t.nops, 0)
            forward_sweep(&part, w)
        ok[0] = guards_hold(t.guards, t.nguard, t.cv, w)
        if not ok[0]:
            return 0
        if not clean:
            zero_outside(wb, 0, t.nwork, t.ops, k0, K)
        wb[t.out_off] = 1.0
        if npost:
            part = view_part(t, K + 1, t.nops, 0)
            reverse_sweep(&part, w, wb)
        # the sum's value is known after a first pass; otherwise the fold computes it
        fuse_plan(t.ops, k0, L, need_vals and not first_pass, &P)
        fused_tail(t.ops, k0, K, &P, need_vals and not first_pass, True, t.ipool, t.cv, w, wb,
                   w, wb, nin, scr, T, w + t.ops[K].out, t.nthreads)
    finally:
        free(scr)
    part = view_part(t, 0, k0, ns)
    reverse_sweep(&part, w, wb)
    if nin:
        memcpy(g, wb, nin * sizeof(double))
    if clean:
        zero_outside(wb, 0, t.nwork, t.ops, k0, K)
        wb[t.out_off] = 0.0
    return 0


# ------------------------------------------------------------------ fused Hessian-vector products
# H v of a tape that is one fused tail read straight from the inputs (grad_fused's direct case:
# no ops before the tail or after its sum, no guards). On each tile, every tail op's value,
# tangents, adjoint and adjoint tangents (forward over reverse: x_bar_dot += g'(x) y_bar_dot +
# g''(x) x_dot y_bar, Pearlmutter 1994) are computed in a scratch of 2 + 2 L rows per op, and
# the tile's contributions to H v are added to the caller's output. That is one pass over x and
# V, where the op-by-op hvp runs a forward, a tangent, a reverse and a tangent-of-reverse sweep,
# each over buffers the size of the whole tape. The formulas are tor_op's general elementwise
# ones; agreement with the op-by-op sweeps is up to rounding (the cheap ops' loops there group
# the same terms otherwise, and an input's H v element gets its contributions tile by tile).

cdef bint hvp_fusable(const TapeView* t) noexcept nogil:
    """May hvp_fused run this tape (see above)?"""
    cdef Py_ssize_t j, K = t.fuse_sum
    cdef const Op* op
    cdef double c
    if t.fuse_k0 != 0 or t.nguard != 0 or t.out_n != 1 or post_scale(t, &c) != c:
        return False
    if K > TILE_MAX_OPS or not inputs_apart(t.ops, 0, K, t.nin):
        return False
    for j in range(K):
        op = &t.ops[j]
        if op.code > BIN_LAST:
            return False
        # operands full size or one scalar (the tiles shift the one and keep the other)
        if op.code > UN_LAST and (bkind(op.p[0], op.p[1], op.n) == 2
                                  or bkind(op.p[2], op.p[3], op.n) == 2):
            return False
    return True


cdef double post_scale(const TapeView* t, double* c) noexcept nogil:
    """d out / d sum when the ops after the fused tail's sum are a chain of linear unary ops on
    it (a mean's 1/n, a sign, an offset: their second derivatives vanish, so H = c H_sum);
    NaN (and c NaN) otherwise. 1 when the sum is the output."""
    cdef Py_ssize_t k, K = t.fuse_sum
    cdef const Op* op
    cdef int64_t prev = t.ops[K].out
    c[0] = 1.0
    for k in range(K + 1, t.nops):
        op = &t.ops[k]
        if (not op_is_linear_unary(op.code) or (op.flags & FLAG_A_CONST) or op.n != 1
                or op.a != prev):
            c[0] = NAN
            return NAN
        c[0] *= op_linear_partial(op.code, op.d, 0)
        prev = op.out
    if prev != t.out_off:
        c[0] = NAN
    return c[0]


ctypedef struct HvOpnd:
    # operand r of a tail op on the current tile: values, lane-0 tangents and adjoint tangents
    # (lane l at + l * lstride), internal adjoint (NULL: an input or a constant), stride 0 for
    # a broadcast scalar
    const double* v
    const double* t
    double* bt
    double* b
    Py_ssize_t lstride
    Py_ssize_t btstride       # the lane stride of bt (lstride but in an edge tile's hold row)
    Py_ssize_t s
    bint live             # has a derivative (not a constant)
    int src               # the tail op whose output it is (its rows in the scratch), or -1


cdef inline void hv_opnd(HvOpnd* o, const FusePlan* P, Py_ssize_t j, int r, const Op* top,
                         double* scr, Py_ssize_t R, Py_ssize_t NL, const double* x,
                         const double* V, double* out, Py_ssize_t nin,
                         const CPool* cv, const int* slot, double* hrows) noexcept nogil:
    cdef int i = P.src[3 * j + r]
    cdef int64_t off = top.a if r == 0 else (top.b if r == 1 else top.c)
    cdef int bit = FLAG_A_CONST if r == 0 else (FLAG_B_CONST if r == 1 else FLAG_C_CONST)
    cdef double* base
    o.s = 1
    o.src = i
    if r < 2 and top.code > UN_LAST and top.p[2 * r + 1] == 1:
        o.s = 0
    o.live = False
    o.t = NULL
    o.bt = NULL
    o.b = NULL
    o.lstride = 0
    o.btstride = 0
    if i >= 0:
        base = scr + (2 + 2 * NL) * i * R
        o.v = base
        o.b = base + R
        o.t = base + 2 * R
        o.bt = base + (2 + NL) * R
        o.lstride = R
        o.btstride = R
        o.live = True
    elif top.flags & bit:
        o.v = cpool_at(cv, off)
    else:
        o.v = x + off
        o.t = V + off
        o.bt = out + off
        o.lstride = nin
        o.btstride = nin
        o.live = True
        if hrows != NULL and r < 2 and slot[2 * j + r] >= 0:
            # an edge tile's shifted operand: its adjoint tangents go to a hold row
            o.bt = hrows + slot[2 * j + r] * NL * R
            o.btstride = R


cdef inline bint hv_tangent_cheap(int code, const Op* top, HvOpnd* A, HvOpnd* B,
                                  const double* y, double* yd, Py_ssize_t l,
                                  Py_ssize_t tl) noexcept nogil:
    """The tangent of a cheap op on lane l as a plain loop (the tangent sweep's formulas);
    False: not one, take the general loop."""
    cdef Py_ssize_t i
    cdef const double* at
    cdef const double* bt
    cdef const double* a = A.v
    cdef double d = top.d
    if op_cheap_unary(code) and A.live:
        at = A.t + l * A.lstride
        if code == OP_MULC:
            for i in range(tl):
                yd[i] = d * at[i]
        elif code == OP_DIVC:
            d = 1.0 / d
            for i in range(tl):
                yd[i] = d * at[i]
        elif code == OP_ADDC:
            for i in range(tl):
                yd[i] = at[i]
        elif code == OP_SQUARE:
            for i in range(tl):
                yd[i] = 2.0 * a[i] * at[i]
        elif code == OP_RSUBC or code == OP_NEG:
            for i in range(tl):
                yd[i] = -at[i]
        else:
            return False
        return True
    if (op_cheap_binary(code) and A.live and B.live and A.s == 1 and B.s == 1):
        at = A.t + l * A.lstride
        bt = B.t + l * B.lstride
        if code == OP_ADD:
            for i in range(tl):
                yd[i] = at[i] + bt[i]
        elif code == OP_SUB:
            for i in range(tl):
                yd[i] = at[i] - bt[i]
        else:
            for i in range(tl):
                yd[i] = B.v[i] * at[i] + A.v[i] * bt[i]
        return True
    return False


cdef inline void hv_clear(HvOpnd* o, bint* ini, Py_ssize_t R, Py_ssize_t NL,
                          Py_ssize_t tl) noexcept nogil:
    """Zero the tile's adjoint and adjoint-tangent slots of an internal operand that has not
    received a contribution on this tile yet (before a loop that adds into them)."""
    cdef Py_ssize_t l
    if o.src >= 0 and not ini[o.src]:
        memset(o.b, 0, tl * sizeof(double))
        for l in range(NL):
            memset(o.bt + l * o.btstride, 0, tl * sizeof(double))
        ini[o.src] = True


cdef enum:
    HV_LIN = 0      # ab += d ybar;  abd += d ybd
    HV_MUL = 1      # ab += p ybar;  abd += p ybd + ybar pt   (p, pt: the other operand)
    HV_SQ = 2       # ab += 2 p ybar;  abd += 2 (p ybd + ybar pt)   (p, pt: the operand)


cdef inline void hv_acc1(int form, double d, const double* p, const double* pt,
                         const double* ybar, const double* ybd, double* ab, double* abd,
                         bint fresh, Py_ssize_t tl) noexcept nogil:
    """One operand's adjoint (ab; NULL for an input, or for a lane after the first: the
    adjoint is the lanes' one) and adjoint tangent (abd) of a cheap op on one lane, in one loop
    (hv_reverse_cheap's formulas, bit for bit); fresh: written, not added to."""
    cdef Py_ssize_t i
    if ab == NULL and fresh:
        if form == HV_LIN:
            for i in range(tl):
                abd[i] = d * ybd[i]
        elif form == HV_MUL:
            for i in range(tl):
                abd[i] = p[i] * ybd[i] + ybar[i] * pt[i]
        else:
            for i in range(tl):
                abd[i] = 2.0 * (p[i] * ybd[i] + ybar[i] * pt[i])
    elif ab == NULL:
        if form == HV_LIN:
            for i in range(tl):
                abd[i] += d * ybd[i]
        elif form == HV_MUL:
            for i in range(tl):
                abd[i] += p[i] * ybd[i] + ybar[i] * pt[i]
        else:
            for i in range(tl):
                abd[i] += 2.0 * (p[i] * ybd[i] + ybar[i] * pt[i])
    elif fresh:
        if form == HV_LIN:
            for i in range(tl):
                ab[i] = d * ybar[i]
                abd[i] = d * ybd[i]
        elif form == HV_MUL:
            for i in range(tl):
                ab[i] = p[i] * ybar[i]
                abd[i] = p[i] * ybd[i] + ybar[i] * pt[i]
        else:
            for i in range(tl):
                ab[i] = 2.0 * p[i] * ybar[i]
                abd[i] = 2.0 * (p[i] * ybd[i] + ybar[i] * pt[i])
    else:
        if form == HV_LIN:
            for i in range(tl):
                ab[i] += d * ybar[i]
                abd[i] += d * ybd[i]
        elif form == HV_MUL:
            for i in range(tl):
                ab[i] += p[i] * ybar[i]
                abd[i] += p[i] * ybd[i] + ybar[i] * pt[i]
        else:
            for i in range(tl):
                ab[i] += 2.0 * p[i] * ybar[i]
                abd[i] += 2.0 * (p[i] * ybd[i] + ybar[i] * pt[i])


cdef inline bint hv_forward_cheap(int code, const Op* top, HvOpnd* A, HvOpnd* B, double* y,
                                  double* yd, Py_ssize_t tl) noexcept nogil:
    """Value and one lane's tangent of a cheap op in one loop (forward_op's and
    hv_tangent_cheap's formulas, bit for bit); False: not one, take those two."""
    cdef Py_ssize_t i
    cdef const double* a = A.v
    cdef const double* b = B.v
    cdef const double* at = A.t
    cdef const double* bt = B.t
    cdef double d = top.d, r
    if op_cheap_unary(code) and A.live:
        if code == OP_MULC:
            for i in range(tl):
                y[i] = a[i] * d
                yd[i] = d * at[i]
        elif code == OP_DIVC:
            r = 1.0 / d
            for i in range(tl):
                y[i] = a[i] / d
                yd[i] = r * at[i]
        elif code == OP_ADDC:
            for i in range(tl):
                y[i] = a[i] + d
                yd[i] = at[i]
        elif code == OP_SQUARE:
            for i in range(tl):
                y[i] = a[i] * a[i]
                yd[i] = 2.0 * a[i] * at[i]
        elif code == OP_RSUBC:
            for i in range(tl):
                y[i] = d - a[i]
                yd[i] = -at[i]
        elif code == OP_NEG:
            for i in range(tl):
                y[i] = -a[i]
                yd[i] = -at[i]
        else:
            return False
        return True
    if op_cheap_binary(code) and A.live and B.live and A.s == 1 and B.s == 1:
        if code == OP_ADD:
            for i in range(tl):
                y[i] = a[i] + b[i]
                yd[i] = at[i] + bt[i]
        elif code == OP_SUB:
            for i in range(tl):
                y[i] = a[i] - b[i]
                yd[i] = at[i] - bt[i]
        else:
            for i in range(tl):
                y[i] = a[i] * b[i]
                yd[i] = b[i] * at[i] + a[i] * bt[i]
        return True
    return False


cdef inline bint hv_reverse_cheap(int code, const Op* top, HvOpnd* A, HvOpnd* B,
                                  const double* y, const double* ybar, Py_ssize_t R,
                                  Py_ssize_t NL, Py_ssize_t tl, bint* ini) noexcept nogil:
    """Adjoint and adjoint tangents of a cheap op as plain loops (tor_op's formulas; per lane
    and operand one loop, hv_acc1, the adjoint itself with the first lane); False: not one,
    take the general loop. The first contribution to an internal operand's rows on a tile is
    written, the later ones added (ini: which tail ops' rows hold contributions), so the rows
    need no clearing: x = t is x = 0 + t, bit for bit, but for the sign of a zero (which the
    sums into H v, started at +0, do not keep)."""
    cdef Py_ssize_t l
    cdef const double* ybd
    cdef double d = top.d
    cdef bint fa, fb
    cdef int form
    if op_cheap_unary(code) and A.live:
        if code == OP_DIVC:
            d = 1.0 / d
        elif not (code == OP_MULC or code == OP_ADDC or code == OP_SQUARE
                  or code == OP_RSUBC or code == OP_NEG):
            return False
        if code == OP_ADDC:
            d = 1.0
        elif code == OP_RSUBC or code == OP_NEG:
            d = -1.0
        fa = A.src >= 0 and not ini[A.src]
        form = HV_SQ if code == OP_SQUARE else HV_LIN
        for l in range(NL):
            hv_acc1(form, d, A.v, A.t + l * A.lstride, ybar, y + (2 + NL + l) * R,
                    A.b if l == 0 else NULL, A.bt + l * A.btstride, fa, tl)
        if fa:
            ini[A.src] = True
        return True
    if not (op_cheap_binary(code) and A.live and B.live and A.s == 1 and B.s == 1):
        return False
    # a's loops before b's: when a and b are one slot (x * x), b's add (fb is False)
    fa = A.src >= 0 and not ini[A.src]
    fb = B.src >= 0 and not ini[B.src] and B.src != A.src
    d = 1.0 if code == OP_ADD else -1.0
    for l in range(NL):
        ybd = y + (2 + NL + l) * R
        if code == OP_MUL:
            hv_acc1(HV_MUL, 0.0, B.v, B.t + l * B.lstride, ybar, ybd, A.b if l == 0 else NULL,
                    A.bt + l * A.btstride, fa, tl)
            hv_acc1(HV_MUL, 0.0, A.v, A.t + l * A.lstride, ybar, ybd, B.b if l == 0 else NULL,
                    B.bt + l * B.btstride, fb, tl)
        else:
            hv_acc1(HV_LIN, 1.0, A.v, NULL, ybar, ybd, A.b if l == 0 else NULL,
                    A.bt + l * A.btstride, fa, tl)
            hv_acc1(HV_LIN, d, B.v, NULL, ybar, ybd, B.b if l == 0 else NULL,
                    B.bt + l * B.btstride, fb, tl)
    if fa:
        ini[A.src] = True
    if fb:
        ini[B.src] = True
    return True


cdef void hvp_tile(const Op* ops, Py_ssize_t M, const FusePlan* P, const int64_t* ipool,
                   const CPool* cv, const double* x, const double* V, double* out,
                   Py_ssize_t nin, Py_ssize_t NL, double* scr, Py_ssize_t R, Py_ssize_t t0,
                   Py_ssize_t tl, const int* slot, double* hrows) noexcept nogil:
    """One tile of the fused H v (ops [0, M) the tail, summed by op M); hrows: an edge tile's
    hold rows (see FuseRun), else NULL."""
    cdef Op top
    cdef HvOpnd A, B, C
    cdef Py_ssize_t j, i, l, ia, ib, rs = (2 + 2 * NL) * R
    cdef int code
    cdef double d1, d2, da, db, daa, dab, dbb, ta, tb, s, yb, ybd, h
    cdef double* y
    cdef double* ybar
    cdef double* yd
    cdef double* ybdp
    cdef bint ini[TILE_MAX_OPS]      # tail ops whose adjoint rows hold contributions (tile)
    for j in range(M):
        ini[j] = False
    for j in range(M):
        tile_op(&ops[j], &top, t0, tl)
        code = top.code
        hv_opnd(&A, P, j, 0, &top, scr, R, NL, x, V, out, nin, cv, slot, hrows)
        hv_opnd(&B, P, j, 1, &top, scr, R, NL, x, V, out, nin, cv, slot, hrows)
        hv_opnd(&C, P, j, 2, &top, scr, R, NL, x, V, out, nin, cv, slot, hrows)
        y = scr + rs * j
        if NL == 1 and hv_forward_cheap(code, &top, &A, &B, y, y + 2 * R, tl):
            if j == M - 1:
                for i in range(tl):
                    y[R + i] = 1.0
                memset(y + (2 + NL) * R, 0, tl * sizeof(double))
                ini[j] = True
            continue
        forward_op(&top, ipool, A.v, B.v, C.v, y)
        # the summed op's adjoint is the sum's seed 1 (its tangent 0); the others' rows are
        # written by their first contribution in the reverse below (ini)
        if j == M - 1:
            for i in range(tl):
                y[R + i] = 1.0
            for l in range(NL):
                memset(y + (2 + NL + l) * R, 0, tl * sizeof(double))
            ini[j] = True
        for l in range(NL):
            yd = y + (2 + l) * R
            if hv_tangent_cheap(code, &top, &A, &B, y, yd, l, tl):
                continue
            if code <= UN_LAST:
                if not A.live or op_zero_derivative(code):
                    memset(yd, 0, tl * sizeof(double))
                    continue
                for i in range(tl):
                    yd[i] = un_d1(code, A.v[i], y[i], top.d) * A.t[l * A.lstride + i]
            else:
                for i in range(tl):
                    ia = i * A.s
                    ib = i * B.s
                    bin_d1(code, A.v[ia], B.v[ib], y[i], C.v[i] if code == OP_WHERE else 0.0,
                           &da, &db)
                    s = 0.0
                    if A.live:
                        s = da * A.t[l * A.lstride + ia]
                    if B.live:
                        s = s + db * B.t[l * B.lstride + ib]
                    yd[i] = s
    for j in range(M - 1, -1, -1):
        tile_op(&ops[j], &top, t0, tl)
        code = top.code
        if op_zero_derivative(code):
            continue
        hv_opnd(&A, P, j, 0, &top, scr, R, NL, x, V, out, nin, cv, slot, hrows)
        hv_opnd(&B, P, j, 1, &top, scr, R, NL, x, V, out, nin, cv, slot, hrows)
        hv_opnd(&C, P, j, 2, &top, scr, R, NL, x, V, out, nin, cv, slot, hrows)
        y = scr + rs * j
        ybar = y + R
        if not ini[j]:
            # no contribution reached it (read only by ops without a derivative): zero rows,
            # run as the op-by-op sweep runs it
            memset(ybar, 0, tl * sizeof(double))
            for l in range(NL):
                memset(y + (2 + NL + l) * R, 0, tl * sizeof(double))
            ini[j] = True
        if hv_reverse_cheap(code, &top, &A, &B, y, ybar, R, NL, tl, ini):
            continue
        hv_clear(&A, ini, R, NL, tl)
        hv_clear(&B, ini, R, NL, tl)
        if code <= UN_LAST:
            if not A.live:
                continue
            for i in range(tl):
                d1 = un_d1(code, A.v[i], y[i], top.d)
                d2 = un_d2(code, A.v[i], y[i], top.d) * ybar[i]
                if A.b != NULL:
                    A.b[i] += d1 * ybar[i]
                for l in range(NL):
                    A.bt[l * A.btstride + i] += (d1 * y[(2 + NL + l) * R + i]
                                                + d2 * A.t[l * A.lstride + i])
            continue
        for i in range(tl):
            ia = i * A.s
            ib = i * B.s
            yb = ybar[i]
            bin_d1(code, A.v[ia], B.v[ib], y[i], C.v[i] if code == OP_WHERE else 0.0, &da, &db)
            bin_d2(code, A.v[ia], B.v[ib], y[i], &daa, &dab, &dbb)
            if A.b != NULL:
                A.b[ia] += da * yb
            if B.b != NULL:
                B.b[ib] += db * yb
            for l in range(NL):
                ybd = y[(2 + NL + l) * R + i]
                ta = A.t[l * A.lstride + ia] if A.live else 0.0
                tb = B.t[l * B.lstride + ib] if B.live else 0.0
                # (as the op-by-op sweep: no cross term with an operand that has no tangent)
                if A.live:
                    h = daa * ta
                    if B.live:
                        h = h + dab * tb
                    A.bt[l * A.btstride + ia] += da * ybd + yb * h
                if B.live:
                    h = dbb * tb
                    if A.live:
                        h = dab * ta + h
                    B.bt[l * B.btstride + ib] += db * ybd + yb * h


cdef void hvp_chunk(const FuseRun* F, Py_ssize_t c, const double* V, double* out,
                    double* scr) noexcept nogil:
    cdef Py_ssize_t lo = c * PAR_CHUNK, hi = chunk_end(c, F.nch, F.n), t0 = lo, tl
    while t0 < hi:
        tl = tile_len(t0 - lo, hi - lo, F.T)
        hvp_tile(F.ops, F.K, F.P, F.ipool, F.cv, F.xin, V, out, F.nin, F.lanes, scr, F.R, t0, tl,
                 F.slot, edge_rows(F, c, lo, hi, t0, tl))
        t0 += tl


cdef int hvp_fused(const TapeView* t, const double* x, const double* V, double* out,
                   Py_ssize_t NL) except -1 nogil:
    """out (NL lanes of nin, zero on entry) += H V for a tape hvp_fusable accepts. Long runs
    go in chunks over the threads (sweep_threads.pxi, FuseRun)."""
    cdef Py_ssize_t M = t.fuse_sum, n = t.ops[0].n, T = FUSE_TILE, R = fuse_row(n, T)
    cdef Py_ssize_t j, r, c, rs = (2 + 2 * NL) * M * R
    cdef FusePlan P
    cdef FuseRun F
    cdef const Op* op
    cdef bint adj[2 * TILE_MAX_OPS]
    cdef bint par
    cdef int nt = t.nthreads
    cdef int fail = 0
    cdef int* failp = &fail
    cdef double* s2
    cdef double* scr = NULL
    cdef double cs
    fuse_plan(t.ops, 0, M, True, &P)
    F.ops = t.ops
    F.P = &P
    F.ipool = t.ipool
    F.cv = t.cv
    F.k0 = 0
    F.K = M
    F.n = n
    F.nch = n_chunks(n)
    F.T = T
    F.R = R
    F.nin = t.nin
    F.xin = x
    F.lanes = NL
    F.nslot = 0
    F.hold = NULL
    F.zero_in = False
    for j in range(2 * TILE_MAX_OPS):
        F.slot[j] = -1
    par = False
    if F.nch > 1:
        for j in range(M):
            op = &t.ops[j]
            for r in range(2):
                adj[2 * j + r] = (not op_zero_derivative(op.code) and P.src[3 * j + r] < 0
                                  and not (op.flags & (FLAG_A_CONST if r == 0 else FLAG_B_CONST))
                                  and (r == 0 or op.code > UN_LAST))
        par = plan_edges(&F, adj)
        if F.nslot:
            F.hold = <double*> malloc(2 * F.nch * F.nslot * NL * R * sizeof(double))
            if F.hold == NULL:
                with gil:
                    raise MemoryError()
    if par and nt > 1:
        with parallel(num_threads=nt):
            s2 = <double*> malloc(rs * sizeof(double))
            if s2 == NULL:
                failp[0] = 1
            for c in prange(F.nch, schedule="dynamic"):
                if s2 != NULL:
                    hvp_chunk(&F, c, V, out, s2)
            free(s2)
    else:
        scr = <double*> malloc(rs * sizeof(double))
        if scr == NULL:
            fail = 1
        else:
            for c in range(F.nch):
                hvp_chunk(&F, c, V, out, scr)
            free(scr)
    if F.nslot and not fail:
        merge_edges(&F, out, out, t.nin)
    free(F.hold)
    if fail:
        with gil:
            raise MemoryError()
    if post_scale(t, &cs) != 1.0:
        for j in range(NL * t.nin):
            out[j] *= cs
    return 0


# ------------------------------------------------------------------ fused values
cdef double value_fused(const TapeView* t, const double* x) except? -1 nogil:
    """f(x) of a tape that is one fused tail read straight from the inputs (hvp_fusable's
    tapes): the tail's forward tile by tile in a scratch, folded into the sum, the tail's values
    never written to a work buffer. The same kernels and partial sums as the op-by-op forward
    sweep with its folded segment: the same number."""
    cdef Py_ssize_t M = t.fuse_sum, T = FUSE_TILE, k
    cdef FusePlan P
    cdef double total = NAN
    cdef double* scr = <double*> malloc(2 * M * fuse_row(t.ops[0].n, T) * sizeof(double))
    if scr == NULL:
        with gil:
            raise MemoryError()
    fuse_plan(t.ops, 0, M, True, &P)
    try:
        fused_tail(t.ops, 0, M, &P, True, False, t.ipool, t.cv, NULL, NULL, x, NULL, t.nin, scr,
                   T, &total, t.nthreads)
    finally:
        free(scr)
    for k in range(M + 1, t.nops):       # the linear post ops (post_scale), as the sweep runs them
        total = un_f(t.ops[k].code, total, t.ops[k].d)
    return total
