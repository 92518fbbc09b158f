# The reverse sweep: adjoints accumulated in a buffer laid out like the values. reverse_op is
# the adjoint of one op (reverse_elem / reverse_scalar for elementwise ops on raw pointers, so
# the tiled and fused sweeps share them; reverse_linear for the linear data movers, which the
# tangent-of-reverse sweep applies to its lanes too); reverse_sweep is the driver over the op
# array, tiled segments included. Fast paths are chosen by the traits (traits.pxd).

cdef void reverse_linear(const Op* op, const int64_t* ipool, const double* x, const double* y,
                         const double* yb, double* xb) noexcept nogil:
    """Adjoint of the ops that are linear in their single operand given the values x, y:
    sum, max/min (ties split evenly), gather, scatter_add, copy, transpose. xb += J^T yb."""
    cdef int code = op.code
    cdef Py_ssize_t i, j, k, n = op.n, pre, m, post, cnt
    cdef const int64_t* idx
    cdef double g, yv
    if code == OP_SUM:
        pre = op.p[0]; m = op.p[1]; post = op.p[2]
        if post == 1:
            # contiguous rows: one broadcast value per row (vectorizable)
            for i in range(pre):
                g = yb[i]
                for j in range(m):
                    xb[i * m + j] += g
            return
        for i in range(pre):
            for j in range(m):
                for k in range(post):
                    xb[(i * m + j) * post + k] += yb[i * post + k]
    elif code == OP_MAX or code == OP_MIN:
        pre = op.p[0]; m = op.p[1]; post = op.p[2]
        for i in range(pre):
            for k in range(post):
                yv = y[i * post + k]
                cnt = 0
                for j in range(m):
                    if same(x[(i * m + j) * post + k], yv):
                        cnt += 1
                if cnt == 0:
                    continue
                g = yb[i * post + k] / cnt
                for j in range(m):
                    if same(x[(i * m + j) * post + k], yv):
                        xb[(i * m + j) * post + k] += g
    elif code == OP_GATHER:
        idx = ipool + op.p[0]
        for i in range(n):
            xb[idx[i]] += yb[i]
    elif code == OP_SCATTER_ADD:
        idx = ipool + op.p[0]
        for i in range(op.p[1]):
            xb[i] += yb[idx[i]]
    elif code == OP_COPY:
        for i in range(n):
            xb[i] += yb[i]
    elif code == OP_TRANSPOSE:
        swap_blocks(yb, xb, op.p[0], op.p[2], op.p[1], op.p[3], True)


cdef inline bint scalar_apart(const Op* op, bint a_is_one) noexcept nogil:
    """Is the adjoint of an op's one-value operand apart from its array operand's (either is
    constant, or the value lies outside the array's region)? Then the two may be accumulated
    in separate loops with the numbers and order of the interleaved walk."""
    cdef int64_t s_off = op.a if a_is_one else op.b, v_off = op.b if a_is_one else op.a
    if op.flags & (FLAG_A_CONST | FLAG_B_CONST):
        return True
    return s_off < v_off or s_off >= v_off + op.n


cdef void row_op_reverse(int code, const double* a, const double* b, const double* yb, double* ab,
                         double* bb, Py_ssize_t n, Py_ssize_t m, bint a_is_row, int a_const,
                         int b_const, bint flat) noexcept nogil:
    # adjoints of row_op_forward: the row's adjoint sums its contributions row by row, in the
    # same order as the element-by-element walk. flat (a row of one value whose adjoint is apart
    # from the array's: scalar_apart): the array's adjoint in one loop, the value's in another
    # (bin_d1's partials 1, -1 or the other operand, summed in order: the walk's numbers)
    cdef Py_ssize_t r, j, base
    cdef double sa = -1.0 if code == OP_SUB else 1.0
    cdef double* vb = bb if a_is_row else ab          # the array operand's adjoint
    cdef double* sb = ab if a_is_row else bb          # the one value's
    cdef const double* v = b if a_is_row else a
    cdef double s, acc
    if flat:
        s = a[0] if a_is_row else b[0]
        if not (b_const if a_is_row else a_const):
            if code == OP_MUL:
                for j in range(n):
                    vb[j] += yb[j] * s
            elif code == OP_SUB and a_is_row:
                for j in range(n):
                    vb[j] -= yb[j]
            else:
                for j in range(n):
                    vb[j] += yb[j]
        if not (a_const if a_is_row else b_const):
            acc = sb[0]
            if code == OP_MUL:
                for j in range(n):
                    acc += yb[j] * v[j]
            elif code == OP_SUB and not a_is_row:
                for j in range(n):
                    acc -= yb[j]
            else:
                for j in range(n):
                    acc += yb[j]
            sb[0] = acc
        return
    for r in range(n // m):
        base = r * m
        if not a_const:
            if a_is_row:
                for j in range(m):
                    ab[j] += yb[base + j] * (b[base + j] if code == OP_MUL else 1.0)
            else:
                for j in range(m):
                    ab[base + j] += yb[base + j] * (b[j] if code == OP_MUL else 1.0)
        if not b_const:
            if a_is_row:
                for j in range(m):
                    bb[base + j] += yb[base + j] * (a[j] if code == OP_MUL else sa)
            else:
                for j in range(m):
                    bb[j] += yb[base + j] * (a[base + j] if code == OP_MUL else sa)


cdef void logaddexp_adjoint(const double* x, int kind, const double* y, const double* yb,
                            double* xb, Py_ssize_t n, double* scratch, int is_const) noexcept nogil:
    # xb += yb * exp(x - y) for one operand of y = logaddexp(a, b); kind 0: x has n values,
    # kind 1: x is one value broadcast (its adjoint sums the contributions in order)
    cdef Py_ssize_t i
    if is_const:
        return
    for i in range(n):
        scratch[i] = (x[i] if kind == 0 else x[0]) - y[i]
    run_unary_loop(OP_EXP, scratch, scratch, n)
    if kind == 0:
        for i in range(n):
            xb[i] += yb[i] * scratch[i]
    else:
        for i in range(n):
            xb[0] += yb[i] * scratch[i]


cdef inline void reverse_scalar(const Op* op, const double* a, const double* b, const double* c,
                                const double* y, const double* yb, double* ab,
                                double* bb) noexcept nogil:
    """reverse_elem of a one-element op (scalar code: no broadcasting) with a derivative."""
    cdef int code = op.code, fl = op.flags
    cdef double da, db
    if code <= UN_LAST:
        if not (fl & FLAG_A_CONST):
            ab[0] += yb[0] * un_d1(code, a[0], y[0], op.d)
    else:
        bin_d1(code, a[0], b[0], y[0], c[0] if code == OP_WHERE else 0.0, &da, &db)
        if not (fl & FLAG_A_CONST):
            ab[0] += yb[0] * da
        if not (fl & FLAG_B_CONST):
            bb[0] += yb[0] * db


cdef void reverse_elem(const Op* op, const double* a, const double* b, const double* c,
                       const double* y, const double* yb, double* ab, double* bb) noexcept nogil:
    """Adjoint of one elementwise op (code <= BIN_LAST) given pointers to its operands' values
    a, b, c, its value y and adjoint yb: accumulates into the operand adjoints ab, bb (not read
    for constant operands). The tiled and fused sweeps pass tile pointers."""
    cdef BWalk bw
    cdef Py_ssize_t i, m, n = op.n
    cdef int code = op.code, fl = op.flags, ka, kb
    cdef double da, db
    cdef double* scratch
    if op_zero_derivative(code):
        return
    if n == 1:
        reverse_scalar(op, a, b, c, y, yb, ab, bb)
        return
    if code <= UN_LAST:
        if fl & FLAG_A_CONST:
            pass
        elif not (op_cheap_unary(code) or op_algebraic_d1(code)):
            for i in range(n):
                ab[i] += yb[i] * un_d1(code, a[i], y[i], op.d)
        elif code == OP_MULC:
            for i in range(n):
                ab[i] += yb[i] * op.d
        elif code == OP_DIVC:
            da = 1.0 / op.d         # un_d1's value: the same products as the scalar path
            for i in range(n):
                ab[i] += yb[i] * da
        elif code == OP_ADDC:
            for i in range(n):
                ab[i] += yb[i]
        elif code == OP_RSUBC or code == OP_NEG:
            for i in range(n):
                ab[i] -= yb[i]
        elif code == OP_SQUARE:
            for i in range(n):
                ab[i] += 2.0 * a[i] * yb[i]
        # derivatives that are algebraic in x and y: vectorizable loops (same values as un_d1)
        elif code == OP_EXP:
            for i in range(n):
                ab[i] += yb[i] * y[i]
        elif code == OP_TANH:
            for i in range(n):
                ab[i] += yb[i] * (1.0 - y[i] * y[i])
        elif code == OP_LOG:
            for i in range(n):
                ab[i] += yb[i] * (1.0 / a[i])
        elif code == OP_SQRT:
            for i in range(n):
                ab[i] += yb[i] * (0.5 / y[i])
        elif code == OP_EXPIT:
            for i in range(n):
                ab[i] += yb[i] * (y[i] * (1.0 - y[i]))
        else:   # a fast-path op with no loop of its own here
            for i in range(n):
                ab[i] += yb[i] * un_d1(code, a[i], y[i], op.d)
    else:
        ka = bkind(op.p[0], op.p[1], n)
        kb = bkind(op.p[2], op.p[3], n)
        if ka == 0 and kb == 0 and op_cheap_binary(code):
            # separate loops: a and b may be the same slot (x * x)
            if not (fl & FLAG_A_CONST):
                if code == OP_MUL:
                    for i in range(n):
                        ab[i] += yb[i] * b[i]
                else:
                    for i in range(n):
                        ab[i] += yb[i]
            if not (fl & FLAG_B_CONST):
                if code == OP_MUL:
                    for i in range(n):
                        bb[i] += yb[i] * a[i]
                elif code == OP_ADD:
                    for i in range(n):
                        bb[i] += yb[i]
                else:
                    for i in range(n):
                        bb[i] -= yb[i]
            return
        if op_cheap_binary(code) and row_len(op, ka, kb):
            m = row_len(op, ka, kb)
            row_op_reverse(code, a, b, yb, ab, bb, n, m, ka != 0, fl & FLAG_A_CONST,
                           fl & FLAG_B_CONST, m == 1 and scalar_apart(op, ka != 0))
            return
        if code == OP_LOGADDEXP and ka != 2 and kb != 2 and UN_LOOP[OP_EXP] != NULL:
            # d/da = exp(a - y), d/db = exp(b - y): NumPy's exp loop over a scratch row instead
            # of two scalar exp calls per element (logistic losses spend their reverse sweep here)
            scratch = <double*> malloc(n * sizeof(double))
            if scratch != NULL:
                logaddexp_adjoint(a, ka, y, yb, ab, n, scratch, fl & FLAG_A_CONST)
                logaddexp_adjoint(b, kb, y, yb, bb, n, scratch, fl & FLAG_B_CONST)
                free(scratch)
                return
        bwalk_start(&bw, op)
        for i in range(n):
            bin_d1(code, a[bw.a.i], b[bw.b.i], y[i], c[i] if code == OP_WHERE else 0.0, &da, &db)
            if not (fl & FLAG_A_CONST):
                ab[bw.a.i] += yb[i] * da
            if not (fl & FLAG_B_CONST):
                bb[bw.b.i] += yb[i] * db
            bwalk_next(&bw)


cdef int reverse_op(const TapeView* tv, const Op* op, const double* w,
                    double* wb) except -1 nogil:
    """Adjoint of one op: accumulates into the adjoints of its operands."""
    cdef Py_ssize_t i, j, kk, n, pre, m, post, bt
    cdef int code, fl
    cdef const double* a
    cdef const double* b
    cdef const double* c
    cdef const double* y
    cdef const double* yb
    cdef double* ab
    cdef double* bb
    cdef double* P
    cdef double* scratch
    code = op.code
    fl = op.flags
    n = op.n
    a = opnd(w, tv.cv, op.a, fl, FLAG_A_CONST)
    b = opnd(w, tv.cv, op.b, fl, FLAG_B_CONST)
    c = opnd(w, tv.cv, op.c, fl, FLAG_C_CONST)
    y = w + op.out
    yb = wb + op.out
    ab = wb + op.a
    bb = wb + op.b
    if code <= BIN_LAST:
        if n == 1 and op_has_partials(code):
            reverse_scalar(op, a, b, c, y, yb, ab, bb)     # inline: scalar code's hot path
        else:
            reverse_elem(op, a, b, c, y, yb, ab, bb)
        return 0
    if code == OP_PROD:
        if fl & FLAG_A_CONST:
            return 0
        scratch = prod_start(op, &pre, &m, &post)
        if scratch == NULL:
            return 0
        for i in range(pre):
            for kk in range(post):
                P = prod_block(a, NULL, i, kk, m, post, scratch)
                for j in range(m):
                    ab[(i * m + j) * post + kk] += yb[i * post + kk] * P[j]
        free(scratch)
    elif code == OP_MATMUL:
        for bt in range(op.p[0]):
            if not (fl & FLAG_A_CONST):
                mm_adj_a(op, bt, yb, b, ab)
            if not (fl & FLAG_B_CONST):
                mm_adj_b(op, bt, a, yb, bb)
    elif code == OP_CALL:
        call_reverse(tv.cbs, op, a, b, c, y, yb, wb)
    elif not (fl & FLAG_A_CONST):
        reverse_linear(op, tv.ipool, a, y, yb, ab)
    return 0



cdef int reverse_sweep(const TapeView* tv, const double* w, double* wb) except -1 nogil:
    """Adjoints of ops [0, tv.nops), last op first, accumulated into wb (seeded by the caller)."""
    return reverse_lanes(tv, w, wb, 1, 0)


cdef void reverse_unary_lanes(const Op* op, const double* a, const double* y, double* wb,
                              Py_ssize_t L, Py_ssize_t S) noexcept nogil:
    """The adjoint of a unary op whose local derivative is a function call (sin, arctan, ...)
    for L lanes: the derivative of a chunk of elements once, then each lane's chunk as a
    contiguous loop; each lane gets reverse_elem's numbers (the same products, in the same
    order), with one derivative call per element instead of one per element and lane."""
    cdef double dch[LANE_CHUNK]
    cdef Py_ssize_t i, i0 = 0, l, cn, n = op.n
    cdef int code = op.code
    cdef const double* yb
    cdef double* ab
    while i0 < n:
        cn = n - i0 if n - i0 < LANE_CHUNK else LANE_CHUNK
        for i in range(cn):
            dch[i] = un_d1(code, a[i0 + i], y[i0 + i], op.d)
        for l in range(L):
            yb = wb + l * S + op.out + i0
            ab = wb + l * S + op.a + i0
            for i in range(cn):
                ab[i] += yb[i] * dch[i]
        i0 += cn


cdef void reverse_binary_lanes(const Op* op, const double* a, const double* b,
                               const double* c, const double* y, double* wb, Py_ssize_t L,
                               Py_ssize_t S) noexcept nogil:
    """The adjoint of a binary op of full-size operands without a cheap loop (x / y, power,
    arctan2, hypot, ...) for L lanes: the partials of a chunk of elements once, then each lane's
    chunk in reverse_elem's order (per element: a's adjoint, then b's)."""
    cdef double dA[LANE_CHUNK]
    cdef double dB[LANE_CHUNK]
    cdef Py_ssize_t i, i0 = 0, l, cn, n = op.n
    cdef int code = op.code, fl = op.flags
    cdef bint ca = fl & FLAG_A_CONST, cb = fl & FLAG_B_CONST
    cdef const double* yb
    cdef double* ab
    cdef double* bb
    while i0 < n:
        cn = n - i0 if n - i0 < LANE_CHUNK else LANE_CHUNK
        for i in range(cn):
            bin_d1(code, a[i0 + i], b[i0 + i], y[i0 + i],
                   c[i0 + i] if code == OP_WHERE else 0.0, &dA[i], &dB[i])
        for l in range(L):
            yb = wb + l * S + op.out + i0
            ab = wb + l * S + op.a + i0
            bb = wb + l * S + op.b + i0
            if ca:
                for i in range(cn):
                    bb[i] += yb[i] * dB[i]
            elif cb:
                for i in range(cn):
                    ab[i] += yb[i] * dA[i]
            else:
                for i in range(cn):
                    ab[i] += yb[i] * dA[i]
                    bb[i] += yb[i] * dB[i]
        i0 += cn


cdef Py_ssize_t lanes_diagonal(const double* Y, Py_ssize_t L, Py_ssize_t M,
                               Py_ssize_t S) noexcept nogil:
    """j when every lane l of the L x M lanes Y (rows at stride S) is zero outside column
    l + j (as the cotangents of a reverse Jacobian are until they reach a product: its unit
    seeds, scaled by elementwise ops), else -L - 1. Stops at the first element that rules it
    out, so a dense Y costs a few reads."""
    cdef Py_ssize_t l, m, j = -L - 1, c
    cdef const double* y
    for l in range(L):
        y = Y + l * S
        if j == -L - 1:
            for m in range(M):
                if y[m] != 0.0:
                    j = m - l
                    break
            else:
                continue
        c = l + j
        for m in range(M):
            if m != c and y[m] != 0.0:
                return -L - 1
    return j if j != -L - 1 else 0


cdef void lanes_times_matrix(const double* Y, Py_ssize_t L, Py_ssize_t M, Py_ssize_t S,
                             const double* A, Py_ssize_t K, Py_ssize_t rs, Py_ssize_t cs,
                             double* X, bint trans) noexcept nogil:
    """X[l, k] += sum_m Y[l, m] B[m, k] for the lanes of Y (L x M) and X (L x K), both at
    stride S, B[m, k] = A[m rs + k cs] (B = A, or A^T when trans). Lanes of one diagonal
    (lanes_diagonal) take one row of B each, Y[l, l + j] B[l + j, :]: the one nonzero term
    of the product, each element the product and its add as BLAS's kernel rounds them;
    other lanes one matrix product by BLAS."""
    cdef Py_ssize_t j = lanes_diagonal(Y, L, M, S), l, k, c
    cdef double d
    cdef const double* b
    cdef double* x
    if j == -L - 1:
        gemm_rm(b'N', b'T' if trans else b'N', <int>L, <int>K, <int>M, 1.0, Y, <int>S, A,
                <int>(M if trans else K), 1.0, X, <int>S)
        return
    for l in range(L):
        c = l + j
        if c < 0 or c >= M:
            continue
        d = Y[l * S + c]
        b = A + c * rs
        x = X + l * S
        for k in range(K):
            x[k] += d * b[k * cs]


cdef int reverse_lanes(const TapeView* tv, const double* w, double* wb, Py_ssize_t L,
                       Py_ssize_t S, bint clean=False) except -1 nogil:
    """reverse_sweep for L cotangent lanes at once (lane l at wb + l * S, seeded by the caller:
    reverse Jacobians), op by op over all lanes. Each lane gets what its own reverse_sweep gives
    (the same ops in the same order), except that a fixed matrix times a vector (A x, x B: the
    dense layers of vector functions) takes its lanes as the rows of one matrix product instead
    of a matrix-vector product per lane (equal up to rounding). clean (one lane, a tape with
    outs_apart): each op's output adjoint is cleared once the op's adjoint has run (it is
    complete then, and still in cache), so a buffer that was all zero but for the seed ends
    all zero but for the inputs' adjoints; no clearing of the whole buffer before the sweep."""
    cdef Py_ssize_t k = tv.nops - 1, s = tv.nsegs - 1, l, j
    cdef const int64_t* segs = tv.segs
    cdef const Op* ops = tv.ops
    cdef const Op* op
    cdef int fl
    while k >= 0:
        if s >= 0 and k == segs[3 * s + 1] - 1:
            for l in range(L):
                reverse_segment(tv, segs[3 * s], segs[3 * s + 1], segs[3 * s + 2] != 0, w,
                                wb + l * S)
            if clean:
                for j in range(segs[3 * s], segs[3 * s + 1]):
                    memset(wb + ops[j].out, 0, ops[j].n * sizeof(double))
            k = segs[3 * s] - 1
            s -= 1
            continue
        op = &ops[k]
        fl = op.flags
        if op.code == OP_MATMUL and L > 1 and op.p[0] == 1 and op.p[3] == 1 and (
                fl & FLAG_A_CONST) and not (fl & FLAG_B_CONST):
            # y = A x: Xb (L x K, rows at stride S) += Yb (L x M) A
            lanes_times_matrix(wb + op.out, L, op.p[1], S, opnd(w, tv.cv, op.a, fl, FLAG_A_CONST),
                               op.p[2], op.p[2], 1, wb + op.b, False)
        elif op.code == OP_MATMUL and L > 1 and op.p[0] == 1 and op.p[1] == 1 and (
                fl & FLAG_B_CONST) and not (fl & FLAG_A_CONST):
            # y = x B: Xb (L x K) += Yb (L x N) B^T
            lanes_times_matrix(wb + op.out, L, op.p[3], S, opnd(w, tv.cv, op.b, fl, FLAG_B_CONST),
                               op.p[2], 1, op.p[3], wb + op.a, True)
        elif (L >= LANE_CHUNK_MIN and op.code <= UN_LAST and op.n > 1
                and not (fl & FLAG_A_CONST)
                and not op_zero_derivative(op.code) and not op_cheap_unary(op.code)
                and not op_algebraic_d1(op.code)):
            reverse_unary_lanes(op, w + op.a, w + op.out, wb, L, S)
        elif (L >= LANE_CHUNK_MIN and UN_LAST < op.code <= BIN_LAST and op.n > 1
                and (fl & (FLAG_A_CONST | FLAG_B_CONST)) != (FLAG_A_CONST | FLAG_B_CONST)
                and not op_zero_derivative(op.code) and not op_cheap_binary(op.code)
                and op.code != OP_LOGADDEXP and both_full(op)):
            reverse_binary_lanes(op, opnd(w, tv.cv, op.a, fl, FLAG_A_CONST),
                                 opnd(w, tv.cv, op.b, fl, FLAG_B_CONST),
                                 opnd(w, tv.cv, op.c, fl, FLAG_C_CONST), w + op.out, wb, L, S)
        elif not (L == 1 and (op.n >= 2 * PAR_CHUNK or op.code == OP_SUM)
                  and op_par(tv, op, <double*> w, wb, True)):   # (w only read: a large op over the threads)
            for l in range(L):
                reverse_op(tv, op, w, wb + l * S)
        if clean:
            memset(wb + op.out, 0, op.n * sizeof(double))
        k -= 1
    return 0
