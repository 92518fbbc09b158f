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


cdef void fused_tail(const Op* ops, Py_ssize_t k0, Py_ssize_t K, const FusePlan* P, bint values,
                     bint rev, const int64_t* ipool, const CPool* cv, double* w, double* wb,
                     const double* xin, double* gin, Py_ssize_t nin, double* scr,
                     Py_ssize_t T) noexcept nogil:
    """Forward and reverse of the tail [k0, K) and its folded sum K (see above). scr holds
    2 (K - k0) rows of R = fuse_row(n, T) values (row 2 j: values of op k0 + j, row 2 j + 1: adjoints).
    Operands in [0, nin) are read from xin and their adjoints added to gin (the caller passes w
    and wb, or the caller's input and gradient arrays); wb must be zero where adjoints are
    added, and wb[ops[K].out] holds the seed. rev = False: the forward alone (the sum's
    value), P planned with values."""
    cdef Op top
    cdef Py_ssize_t i, j, t0 = 0, tl, n = ops[k0].n, L = K - k0, R = fuse_row(n, T)
    cdef double ps[4]
    cdef double g = wb[ops[K].out] if rev else 0.0, c
    cdef double* v
    cdef const double* last = scr + 2 * (L - 1) * R
    ps[0] = ps[1] = ps[2] = ps[3] = 0.0
    # uniform adjoints are rows of one number for the whole sweep
    for j in range(L):
        if rev and P.uni[j] and P.run[j]:
            v = scr + (2 * j + 1) * R
            c = P.u[j] * g
            for i in range(R):
                v[i] = c
    while t0 < n:
        tl = tile_len(t0, n, T)
        for j in range(L):
            if P.need[j]:
                tile_op(&ops[k0 + j], &top, t0, tl)
                forward_op(&top, ipool, fz_val(P, j, 0, scr, R, &top, w, xin, nin, cv),
                           fz_val(P, j, 1, scr, R, &top, w, xin, nin, cv),
                           fz_val(P, j, 2, scr, R, &top, w, xin, nin, cv), scr + 2 * j * R)
        if values and fold_tile(last, tl, t0 + tl == n, ps):
            w[ops[K].out] = ps[0]
        if not rev:
            t0 += tl
            continue
        # reverse on the same tile; row adjoints start at their uniform part
        for j in range(L):
            if not P.uni[j]:
                v = scr + (2 * j + 1) * R
                if P.init[j] == 0.0:
                    memset(v, 0, tl * sizeof(double))
                else:
                    c = P.init[j] * g
                    for i in range(tl):
                        v[i] = c
        for j in range(L - 1, -1, -1):
            if P.run[j]:
                tile_op(&ops[k0 + j], &top, t0, tl)
                reverse_elem(&top, fz_val(P, j, 0, scr, R, &top, w, xin, nin, cv),
                             fz_val(P, j, 1, scr, R, &top, w, xin, nin, cv),
                             fz_val(P, j, 2, scr, R, &top, w, xin, nin, cv), scr + 2 * j * R,
                             scr + (2 * j + 1) * R, fz_adj(P, j, 0, scr, R, &top, wb, gin, nin),
                             fz_adj(P, j, 1, scr, R, &top, wb, gin, nin))
        t0 += tl


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
                    bint values, bint* ok) except -1 nogil:
    """Scalar-output gradient with the fused tail [k0, K] (k0 = t.fuse_k0, K = t.fuse_sum) at the input x into
    g (nin values each); afterwards w[out_off] is the value if values. ok: the guards held.
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
        memset(g, 0, nin * sizeof(double))
        zero_outside(wb, nin, t.nwork, t.ops, k0, K)
        wb[t.out_off] = 1.0
        fused_tail(t.ops, k0, K, &P, values, True, t.ipool, t.cv, w, wb, x, g, nin, scr, T)
        free(scr)
        ok[0] = True
        return 0
    if first_pass:
        fuse_plan(t.ops, k0, L, True, &P)
        fused_tail(t.ops, k0, K, &P, True, False, t.ipool, t.cv, w, wb, w, wb, nin, scr, T)
    try:
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
        zero_outside(wb, 0, t.nwork, t.ops, k0, K)
        wb[t.out_off] = 1.0
        if npost:
            part = view_part(t, K + 1, t.nops, 0)
            reverse_sweep(&part, w, wb)
        # the sum's value is known after a first pass; otherwise the fold computes it
        fuse_plan(t.ops, k0, L, need_vals and not first_pass, &P)
        fused_tail(t.ops, k0, K, &P, need_vals and not first_pass, True, t.ipool, t.cv, w, wb,
                   w, wb, nin, scr, T)
    finally:
        free(scr)
    part = view_part(t, 0, k0, ns)
    reverse_sweep(&part, w, wb)
    if nin:
        memcpy(g, wb, nin * sizeof(double))
    return 0
