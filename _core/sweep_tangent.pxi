# The tangent sweep (forward mode, dual numbers): L tangent lanes at once, lane l of slot s at
# wd[l*S + s]. tangent_op is the tangent of one op for all lanes; tangent_sweep is the driver.
# Elementwise ops compute their local derivative once per element and apply it to every lane;
# the cheap ops (traits.pxd: op_cheap_unary, op_cheap_binary) run lane by lane as contiguous
# loops; the linear movers are forward_op applied to each lane.

# Lanes at or above LANE_CHUNK_MIN take chunked loops (sweeps.pyx).


cdef int tangent_op(const TapeView* tv, const Op* op, const double* w, double* wd,
                    Py_ssize_t L, Py_ssize_t S) except -1 nogil:
    """yd (L lanes) = the tangent of op's output along the lanes of its operands' tangents."""
    cdef BWalk bw
    cdef Py_ssize_t i, j, kk, l, n = op.n, pre, m, post, bt, cnt, ia, ib
    cdef int code = op.code, fl = op.flags
    cdef const double* a = opnd(w, tv.cv, op.a, fl, FLAG_A_CONST)
    cdef const double* b = opnd(w, tv.cv, op.b, fl, FLAG_B_CONST)
    cdef const double* c = opnd(w, tv.cv, op.c, fl, FLAG_C_CONST)
    cdef const double* y = w + op.out
    cdef double* yd = wd + op.out
    cdef const double* xd
    cdef const double* xd2
    cdef double d1, da, db, acc, yv
    cdef double* P
    cdef double* scratch
    cdef double dch[LANE_CHUNK]
    cdef Py_ssize_t i0, cn
    if op_cheap_unary(code) and not (fl & FLAG_A_CONST):
        # linear (or nearly) ops: lane by lane, contiguous loops
        if code == OP_DIVC:
            da = 1.0 / op.d         # un_d1's value, as in the reverse sweep
        for l in range(L):
            xd = wd + l * S + op.a
            if code == OP_MULC:
                for i in range(n):
                    yd[l * S + i] = op.d * xd[i]
            elif code == OP_DIVC:
                for i in range(n):
                    yd[l * S + i] = da * xd[i]
            elif code == OP_ADDC:
                memmove(yd + l * S, xd, n * sizeof(double))  # may overlap on a crafted tape
            elif code == OP_SQUARE:
                for i in range(n):
                    yd[l * S + i] = 2.0 * a[i] * xd[i]
            elif code == OP_RSUBC or code == OP_NEG:
                for i in range(n):
                    yd[l * S + i] = -xd[i]
            else:   # a cheap op with no loop of its own here
                for i in range(n):
                    d1 = un_d1(code, a[i], y[i], op.d)
                    yd[l * S + i] = 0.0 if d1 == 0.0 else d1 * xd[i]
    elif code <= UN_LAST and not op_zero_derivative(code) and L >= LANE_CHUNK_MIN:
        # many lanes: the local derivatives of a chunk of elements once, then each lane's chunk
        # as a contiguous loop (the same numbers as the per-element loop below)
        i0 = 0
        while i0 < n:
            cn = n - i0 if n - i0 < LANE_CHUNK else LANE_CHUNK
            for i in range(cn):
                dch[i] = 0.0 if fl & FLAG_A_CONST else un_d1(code, a[i0 + i], y[i0 + i], op.d)
            for l in range(L):
                xd = wd + l * S + op.a + i0
                for i in range(cn):
                    yd[l * S + i0 + i] = 0.0 if dch[i] == 0.0 else dch[i] * xd[i]
            i0 += cn
    elif code <= UN_LAST and not op_zero_derivative(code):
        for i in range(n):
            d1 = 0.0 if fl & FLAG_A_CONST else un_d1(code, a[i], y[i], op.d)
            for l in range(L):
                yd[l * S + i] = 0.0 if d1 == 0.0 else d1 * wd[l * S + op.a + i]
    elif op_cheap_binary(code) and not (fl & FLAG_ALL) and both_full(op):
        for l in range(L):
            xd = wd + l * S + op.a
            xd2 = wd + l * S + op.b
            if code == OP_ADD:
                for i in range(n):
                    yd[l * S + i] = xd[i] + xd2[i]
            elif code == OP_SUB:
                for i in range(n):
                    yd[l * S + i] = xd[i] - xd2[i]
            else:
                for i in range(n):
                    yd[l * S + i] = b[i] * xd[i] + a[i] * xd2[i]
    elif op_zero_derivative(code):
        for l in range(L):
            memset(yd + l * S, 0, n * sizeof(double))
    elif code <= BIN_LAST:
        bwalk_start(&bw, op)
        for i in range(n):
            ia = bw.a.i
            ib = bw.b.i
            bwalk_next(&bw)
            bin_d1(code, a[ia], b[ib], y[i], c[i] if code == OP_WHERE else 0.0, &da, &db)
            if fl & FLAG_A_CONST:
                da = 0.0
            if fl & FLAG_B_CONST:
                db = 0.0
            for l in range(L):
                acc = 0.0
                if da != 0.0:
                    acc = da * wd[l * S + op.a + ia]
                if db != 0.0:
                    acc = acc + db * wd[l * S + op.b + ib]
                yd[l * S + i] = acc
    elif op_linear_mover(code):
        for l in range(L):
            if fl & FLAG_A_CONST:
                memset(yd + l * S, 0, n * sizeof(double))
            else:
                forward_op(op, tv.ipool, wd + l * S + op.a, NULL, NULL, yd + l * S)
    elif code == OP_MAX or code == OP_MIN:
        pre = op.p[0]; m = op.p[1]; post = op.p[2]
        for l in range(L):
            for i in range(pre):
                for kk in range(post):
                    yv = y[i * post + kk]
                    cnt = 0
                    acc = 0.0
                    if not (fl & FLAG_A_CONST):
                        for j in range(m):
                            if same(a[(i * m + j) * post + kk], yv):
                                cnt += 1
                                acc += wd[l * S + op.a + (i * m + j) * post + kk]
                    yd[l * S + i * post + kk] = acc / cnt if cnt else 0.0
    elif code == OP_PROD:
        scratch = prod_start(op, &pre, &m, &post)
        if scratch == NULL:
            return 0
        for i in range(pre):
            for kk in range(post):
                P = prod_block(a, NULL, i, kk, m, post, scratch)
                for l in range(L):
                    acc = 0.0
                    if not (fl & FLAG_A_CONST):
                        for j in range(m):
                            acc += P[j] * wd[l * S + op.a + (i * m + j) * post + kk]
                    yd[l * S + i * post + kk] = acc
        free(scratch)
    elif code == OP_MATMUL and L > 1 and op.p[0] == 1 and (
            (op.p[3] == 1 and (fl & FLAG_A_CONST) and not (fl & FLAG_B_CONST))
            or (op.p[1] == 1 and (fl & FLAG_B_CONST) and not (fl & FLAG_A_CONST))):
        # a matrix times a vector (A x, x B) with the matrix fixed: all lanes in one product,
        # the lanes' tangents as the rows of a matrix (row stride S): Yd = Xd A^T, or Xd B
        if op.p[3] == 1 and (fl & FLAG_A_CONST):
            gemm_rm(b'N', b'T', <int>L, <int>op.p[1], <int>op.p[2], 1.0, wd + op.b, <int>S,
                    a, <int>op.p[2], 0.0, yd, <int>S)
        else:
            gemm_rm(b'N', b'N', <int>L, <int>op.p[3], <int>op.p[2], 1.0, wd + op.a, <int>S,
                    b, <int>op.p[3], 0.0, yd, <int>S)
    elif code == OP_MATMUL:
        for l in range(L):
            for bt in range(op.p[0]):
                if fl & FLAG_A_CONST:
                    mm_value(op, bt, 0.0, a, b, 0.0, yd + l * S)     # zeros
                else:
                    mm_value(op, bt, 1.0, wd + l * S + op.a, b, 0.0, yd + l * S)
                if not (fl & FLAG_B_CONST):
                    mm_value(op, bt, 1.0, a, wd + l * S + op.b, 1.0, yd + l * S)
    elif code == OP_CALL:
        call_tangent(tv.cbs, op, a, b, c, y, wd, L, S)
    return 0


cdef int tangent_sweep(const TapeView* tv, const double* w, double* wd, Py_ssize_t L,
                       Py_ssize_t S) except -1 nogil:
    """wd holds L lanes of tangents, lane l at wd + l*S; input lanes are set by the caller."""
    return tangent_sweep_unit(tv, w, wd, L, S, -1)


cdef int tangent_sweep_unit(const TapeView* tv, const double* w, double* wd, Py_ssize_t L,
                            Py_ssize_t S, Py_ssize_t unit) except -1 nogil:
    """tangent_sweep; unit >= 0: the caller's input lanes are the unit vectors e_(unit + l) (a
    forward Jacobian), and a fixed matrix times inputs (y = A x[j:j + K]) then has the tangent
    lanes Yd[l, i] = A[i, unit + l - j] (a copy of A's columns, 0 outside: the product with
    the identity, exactly) instead of a matrix product over the lanes."""
    cdef Py_ssize_t k = 0, l, i, c, M, K, s = 0
    cdef const Op* op
    cdef const double* A
    cdef const int64_t* segs = tv.segs
    while k < tv.nops:
        if s < tv.nsegs and k == segs[3 * s]:
            tangent_segment(tv, k, segs[3 * s + 1], segs[3 * s + 2] != 0, w, wd, L, S)
            k = segs[3 * s + 1]
            s += 1
            continue
        op = &tv.ops[k]
        k += 1
        if (unit >= 0 and op.code == OP_MATMUL and op.p[0] == 1 and op.p[3] == 1
                and (op.flags & FLAG_A_CONST) and not (op.flags & FLAG_B_CONST)
                and op.b >= 0 and op.b + op.p[2] <= tv.nin):
            M = op.p[1]
            K = op.p[2]
            A = opnd(w, tv.cv, op.a, op.flags, FLAG_A_CONST)
            for l in range(L):
                c = unit + l - op.b
                if 0 <= c < K:
                    for i in range(M):
                        wd[l * S + op.out + i] = A[i * K + c]
                else:
                    memset(wd + l * S + op.out, 0, M * sizeof(double))
            continue
        tangent_op(tv, op, w, wd, L, S)
    return 0


cdef int tangent_segment(const TapeView* tv, Py_ssize_t k0, Py_ssize_t k1, bint fold,
                         const double* w, double* wd, Py_ssize_t L,
                         Py_ssize_t S) except -1 nogil:
    """The tangents of a tiling segment (sweep_tiling.pxi) tile by tile: every op of the run on
    one tile of elements before the next tile, so a tile's tangents are still in cache when the
    next op reads them; a folded sum at the end runs whole afterwards. Each element is computed
    by the same kernel from the same operands as in the op-by-op sweep (the segment rules of
    forward_segment): the same bits."""
    cdef Op top
    cdef const Op* ops = tv.ops
    cdef Py_ssize_t j, t0 = 0, tl, n = ops[k0].n, T = TILE, ke = k1 - 1 if fold else k1
    while t0 < n:
        tl = tile_len(t0, n, T)
        for j in range(k0, ke):
            tile_op(&ops[j], &top, t0, tl)
            tangent_op(tv, &top, w, wd, L, S)
        t0 += tl
    if fold:
        tangent_op(tv, &ops[ke], w, wd, L, S)
    return 0
