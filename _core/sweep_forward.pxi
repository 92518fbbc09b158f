# The forward sweep: values of every slot at a new input. forward_op is the value of one op on
# raw operand pointers (the tiled, fused and tangent sweeps call it too: on tiles, on scratch
# rows, on tangent lanes of linear ops); forward_sweep is the driver over the op array, with
# the scalar-code shortcut (one-element ops straight to un_f / bin_f), OP_CALL rules and the
# tiled segments (sweep_tiling.pxi). Which ops take a loop of their own is decided by the
# traits (traits.pxd), as in the other sweeps.

cdef void forward_op(const Op* op, const int64_t* ipool, const double* a, const double* b,
                     const double* c, double* y) noexcept nogil:
    """y = op(a, b, c); also used for tangents of linear ops (then a, b, c are tangents)."""
    cdef BWalk bw
    cdef int code = op.code
    cdef Py_ssize_t i, j, k, n = op.n, pre, m, post, bt
    cdef int ka, kb
    cdef double acc, v
    cdef const int64_t* idx
    if code <= UN_LAST:
        # the cheapest ops get loops of their own (vectorizable); the rest go through un_f
        if not op_cheap_unary(code):
            if UN_LOOP[code] != NULL:
                run_unary_loop(code, a, y, n)
            else:
                for i in range(n):
                    y[i] = un_f(code, a[i], op.d)
        elif code == OP_MULC:
            for i in range(n):
                y[i] = a[i] * op.d
        elif code == OP_DIVC:
            for i in range(n):
                y[i] = a[i] / op.d
        elif code == OP_ADDC:
            for i in range(n):
                y[i] = a[i] + op.d
        elif code == OP_RSUBC:
            for i in range(n):
                y[i] = op.d - a[i]
        elif code == OP_SQUARE:
            for i in range(n):
                y[i] = a[i] * a[i]
        elif code == OP_NEG:
            for i in range(n):
                y[i] = -a[i]
        else:   # a cheap op with no loop of its own here
            for i in range(n):
                y[i] = un_f(code, a[i], op.d)
    elif code <= BIN_LAST:
        ka = bkind(op.p[0], op.p[1], n)
        kb = bkind(op.p[2], op.p[3], n)
        if ka == 0 and kb == 0 and op_cheap_binary(code):
            if code == OP_ADD:
                for i in range(n):
                    y[i] = a[i] + b[i]
            elif code == OP_SUB:
                for i in range(n):
                    y[i] = a[i] - b[i]
            else:
                for i in range(n):
                    y[i] = a[i] * b[i]
        elif op_cheap_binary(code) and row_len(op, ka, kb):
            # a bias row: one operand repeats every mod elements (x @ W + b), or is one value;
            # loops instead of an index walk, so the inner loop vectorizes
            row_op_forward(code, a, b, y, n, row_len(op, ka, kb), ka != 0)
        elif (code == OP_LOGADDEXP and ka != 2 and kb != 2 and UN_LOOP[OP_EXP] != NULL
                and UN_LOOP[OP_LOG1P] != NULL):
            logaddexp_value(a, ka, b, kb, y, n)
        elif BIN_LOOP[code] != NULL and ka != 2 and kb != 2:
            run_binary_loop(code, a, b, y, n, ka == 1, kb == 1)
        elif ka == 0 and kb == 0 and code != OP_WHERE:
            for i in range(n):
                y[i] = bin_f(code, a[i], b[i], 0.0)
        else:
            bwalk_start(&bw, op)
            for i in range(n):
                y[i] = bin_f(code, a[bw.a.i], b[bw.b.i], c[i] if code == OP_WHERE else 0.0)
                bwalk_next(&bw)
    elif code == OP_SUM:
        pre = op.p[0]; m = op.p[1]; post = op.p[2]
        if post == 1:
            for i in range(pre):
                y[i] = sum_contiguous(a + i * m, m)
        else:
            # accumulate whole rows: the inner loop is contiguous and branch-free
            memset(y, 0, pre * post * sizeof(double))
            for i in range(pre):
                for j in range(m):
                    for k in range(post):
                        y[i * post + k] += a[(i * m + j) * post + k]
    elif code <= OP_PROD:
        pre = op.p[0]; m = op.p[1]; post = op.p[2]
        for i in range(pre):
            for k in range(post):
                # max/min start from the first element of the block, which exists only if m > 0
                y[i * post + k] = 0.0 if (code == OP_SUM or m == 0) else (
                    1.0 if code == OP_PROD else a[i * m * post + k])
            for j in range(m):
                for k in range(post):
                    v = a[(i * m + j) * post + k]
                    if code == OP_SUM:
                        y[i * post + k] += v
                    elif code == OP_PROD:
                        y[i * post + k] *= v
                    elif code == OP_MAX:
                        if v > y[i * post + k] or v != v:
                            y[i * post + k] = v
                    else:
                        if v < y[i * post + k] or v != v:
                            y[i * post + k] = v
            if m == 0 and (code == OP_MAX or code == OP_MIN):
                for k in range(post):
                    y[i * post + k] = 0.0
    elif code == OP_MATMUL:
        for bt in range(op.p[0]):
            mm_value(op, bt, 1.0, a, b, 0.0, y)
    elif code == OP_GATHER:
        idx = ipool + op.p[0]
        for i in range(n):
            y[i] = a[idx[i]]
    elif code == OP_SCATTER_ADD:
        idx = ipool + op.p[0]
        memset(y, 0, n * sizeof(double))
        for i in range(op.p[1]):
            y[idx[i]] += a[i]
    elif code == OP_COPY:
        memmove(y, a, n * sizeof(double))   # a crafted tape may overlap y and a
    elif code == OP_TRANSPOSE:
        swap_blocks(a, y, op.p[0], op.p[1], op.p[2], op.p[3], False)


cdef inline void swap4(const double* r, Py_ssize_t rs, double* c, Py_ssize_t cs,
                       bint add) noexcept nogil:
    """c[q * cs + p] = r[p * rs + q] (or +=) for p, q < 4: one 4 x 4 block of a transpose."""
    cdef double a00 = r[0], a01 = r[1], a02 = r[2], a03 = r[3]
    cdef double a10 = r[rs], a11 = r[rs + 1], a12 = r[rs + 2], a13 = r[rs + 3]
    cdef double a20 = r[2 * rs], a21 = r[2 * rs + 1], a22 = r[2 * rs + 2], a23 = r[2 * rs + 3]
    cdef double a30 = r[3 * rs], a31 = r[3 * rs + 1], a32 = r[3 * rs + 2], a33 = r[3 * rs + 3]
    if add:
        c[0] += a00; c[1] += a10; c[2] += a20; c[3] += a30
        c[cs] += a01; c[cs + 1] += a11; c[cs + 2] += a21; c[cs + 3] += a31
        c[2 * cs] += a02; c[2 * cs + 1] += a12; c[2 * cs + 2] += a22; c[2 * cs + 3] += a32
        c[3 * cs] += a03; c[3 * cs + 1] += a13; c[3 * cs + 2] += a23; c[3 * cs + 3] += a33
    else:
        c[0] = a00; c[1] = a10; c[2] = a20; c[3] = a30
        c[cs] = a01; c[cs + 1] = a11; c[cs + 2] = a21; c[cs + 3] = a31
        c[2 * cs] = a02; c[2 * cs + 1] = a12; c[2 * cs + 2] = a22; c[2 * cs + 3] = a32
        c[3 * cs] = a03; c[3 * cs + 1] = a13; c[3 * cs + 2] = a23; c[3 * cs + 3] = a33


cdef void swap_blocks(const double* x, double* y, Py_ssize_t D, Py_ssize_t A, Py_ssize_t B,
                      Py_ssize_t C, bint add) noexcept nogil:
    """y[d, j, i, k] = x[d, i, j, k] (or += if add) for x of shape (D, A, B, C), y of shape
    (D, B, A, C): a transpose of two groups of axes. Runs of C elements are moved whole; with
    C = 1 (a matrix transpose) the (i, j) plane goes in 32 x 32 blocks, so that both x and y are
    walked a cache line at a time. The adjoint is swap_blocks(yb, xb, D, B, A, C, True)."""
    cdef Py_ssize_t d, i, j, k, blk = A * B * C
    cdef const double* xs
    cdef double* ys
    for d in range(D):
        xs = x + d * blk
        ys = y + d * blk
        if C == 1:
            swap_plane(xs, ys, A, B, 0, A, add)
        else:
            for i in range(A):
                for j in range(B):
                    if add:
                        for k in range(C):
                            ys[(j * A + i) * C + k] += xs[(i * B + j) * C + k]
                    else:
                        memcpy(ys + (j * A + i) * C, xs + (i * B + j) * C, C * sizeof(double))


cdef void swap_plane(const double* xs, double* ys, Py_ssize_t A, Py_ssize_t B, Py_ssize_t lo,
                     Py_ssize_t hi, bint add) noexcept nogil:
    """Rows [lo, hi) of a matrix transpose: ys[j, i] = xs[i, j] (or +=) for xs A x B, ys B x A,
    in 32 x 32 blocks whose rows start at lo (each element is moved once: any cut into row
    ranges gives the same result, which lets a large transpose go in parts over threads)."""
    cdef Py_ssize_t i, j, k, i0, j0, i1, j1
    for i0 in range(lo, hi, 32):
        i1 = min(i0 + 32, hi)
        for j0 in range(0, B, 32):
            j1 = min(j0 + 32, B)
            # 4 x 4 blocks through registers (four short rows read, four written:
            # about 1.7x the element-at-a-time loop), then the block's edges
            i = i0
            while i + 4 <= i1:
                j = j0
                while j + 4 <= j1:
                    swap4(xs + i * B + j, B, ys + j * A + i, A, add)
                    j += 4
                for j in range(j, j1):
                    for k in range(i, i + 4):
                        if add:
                            ys[j * A + k] += xs[k * B + j]
                        else:
                            ys[j * A + k] = xs[k * B + j]
                i += 4
            for i in range(i, i1):
                for j in range(j0, j1):
                    if add:
                        ys[j * A + i] += xs[i * B + j]
                    else:
                        ys[j * A + i] = xs[i * B + j]


cdef void logaddexp_value(const double* a, int ka, const double* b, int kb, double* y,
                          Py_ssize_t n) noexcept nogil:
    """y = logaddexp(a, b) as max(a, b) + log1p(exp(-|a - b|)) (a + log 2 where a == b, which
    takes equal infinities), with NumPy's SIMD exp and log1p loops over y: NumPy's own logaddexp
    loop is scalar (about 30 ns an element here, against 5). kind 1: one value broadcast.
    A recording computes np.logaddexp with this kernel too (sweeps.logaddexp_values), so
    recorded and replayed values agree bit for bit."""
    cdef Py_ssize_t i
    cdef double av, bv
    for i in range(n):
        av = a[0] if ka == 1 else a[i]
        bv = b[0] if kb == 1 else b[i]
        y[i] = -fabs(av - bv)
    run_unary_loop(OP_EXP, y, y, n)
    run_unary_loop(OP_LOG1P, y, y, n)
    for i in range(n):
        av = a[0] if ka == 1 else a[i]
        bv = b[0] if kb == 1 else b[i]
        if av == bv:
            y[i] = av + 0.6931471805599453
        else:
            y[i] = (av if (av > bv or av != av) else bv) + y[i]


cdef void row_op_forward(int code, const double* a, const double* b, double* y, Py_ssize_t n,
                         Py_ssize_t m, bint a_is_row) noexcept nogil:
    # y = a op b where one operand (the "row", m values) repeats along the other (n values);
    # a row of one value (A * s for a traced s) in one flat loop
    cdef Py_ssize_t r, j, base
    cdef double s
    if m == 1:
        s = a[0] if a_is_row else b[0]
        if code == OP_ADD:
            for j in range(n):
                y[j] = (s + b[j]) if a_is_row else (a[j] + s)
        elif code == OP_SUB:
            if a_is_row:
                for j in range(n):
                    y[j] = s - b[j]
            else:
                for j in range(n):
                    y[j] = a[j] - s
        else:
            for j in range(n):
                y[j] = (s * b[j]) if a_is_row else (a[j] * s)
        return
    for r in range(n // m):
        base = r * m
        if code == OP_ADD:
            for j in range(m):
                y[base + j] = (a[j] if a_is_row else a[base + j]) + (b[base + j] if a_is_row else b[j])
        elif code == OP_SUB:
            for j in range(m):
                y[base + j] = (a[j] if a_is_row else a[base + j]) - (b[base + j] if a_is_row else b[j])
        else:
            for j in range(m):
                y[base + j] = (a[j] if a_is_row else a[base + j]) * (b[base + j] if a_is_row else b[j])


cdef int forward_sweep(const TapeView* tv, double* w) except -1 nogil:
    """Values of ops [0, tv.nops) into w (inputs already in w[0:nin])."""
    return forward_sweep_skip(tv, w, NULL)


cdef inline bint all_skipped(const unsigned char* skip, Py_ssize_t k0,
                             Py_ssize_t k1) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(k0, k1):
        if not skip[k]:
            return False
    return True


cdef int forward_sweep_skip(const TapeView* tv, double* w,
                            const unsigned char* skip) except -1 nogil:
    """forward_sweep, leaving out the ops with skip[k] set (their outputs already hold their
    values; skip NULL: none). A tiling segment is left out when all its ops are; otherwise its
    tiles run the ops not skipped (elementwise: the values a whole segment gives them)."""
    cdef Py_ssize_t k = 0, s = 0, nops = tv.nops, nsegs = tv.nsegs
    cdef const Op* ops = tv.ops
    cdef const Op* op
    cdef const int64_t* segs = tv.segs
    cdef const int64_t* ipool = tv.ipool
    cdef const CPool* cv = tv.cv
    while k < nops:
        if s < nsegs and k == segs[3 * s]:
            if skip == NULL or not all_skipped(skip, k, segs[3 * s + 1]):
                forward_segment(tv, k, segs[3 * s + 1], segs[3 * s + 2] != 0, skip, w)
            k = segs[3 * s + 1]
            s += 1
            continue
        op = &ops[k]
        k += 1
        if skip != NULL and skip[k - 1]:
            continue
        if op.n == 1 and op.code <= BIN_LAST:
            # scalar code (Python loops of scalar operations): one element, no broadcasting
            if op.code <= UN_LAST:
                w[op.out] = un_f(op.code, opnd(w, cv, op.a, op.flags, FLAG_A_CONST)[0], op.d)
            else:
                w[op.out] = bin_f(op.code, opnd(w, cv, op.a, op.flags, FLAG_A_CONST)[0],
                                  opnd(w, cv, op.b, op.flags, FLAG_B_CONST)[0],
                                  opnd(w, cv, op.c, op.flags, FLAG_C_CONST)[0]
                                  if op.code == OP_WHERE else 0.0)
            continue
        if op.code == OP_CALL:
            call_forward(tv.cbs, op, opnd(w, cv, op.a, op.flags, FLAG_A_CONST),
                           opnd(w, cv, op.b, op.flags, FLAG_B_CONST),
                           opnd(w, cv, op.c, op.flags, FLAG_C_CONST), w + op.out)
            continue
        if op.n >= 2 * PAR_CHUNK or op.code == OP_SUM:
            if op_par(tv, op, w, NULL, False):     # a large op in chunks over the threads
                continue
        forward_op(op, ipool, opnd(w, cv, op.a, op.flags, FLAG_A_CONST),
                   opnd(w, cv, op.b, op.flags, FLAG_B_CONST),
                   opnd(w, cv, op.c, op.flags, FLAG_C_CONST), w + op.out)
    return 0
