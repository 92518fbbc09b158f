# The tangent-of-reverse sweep (forward over reverse): the tangents of the adjoints along the
# tangent lanes of the tangent sweep, which gives Hessian-vector products H v (Pearlmutter
# 1994; Griewank & Walther 2008, ch. 5). tor_op is one op for all lanes; tor_sweep is the
# driver, last op first. For y = g(x): x_bar = g'(x) y_bar, so
#     x_bar_dot += g'(x) y_bar_dot + g''(x) x_dot y_bar.
# Linear ops apply their adjoint to y_bar_dot (reverse_linear for the movers); bilinear matmul
# adds the cross terms. Cheap ops take the same traits' fast paths as the other sweeps.

cdef int tor_op(const TapeView* tv, const Op* op, const double* w, const double* wd,
                const double* wb, double* wbd, Py_ssize_t L, Py_ssize_t S) except -1 nogil:
    """wbd (L lanes) += the tangent of op's operand adjoints."""
    cdef BWalk bw
    cdef Py_ssize_t i, j, kk, l, n = op.n, pre, m, post, bt, ia, ib
    cdef int code = op.code, fl = op.flags
    cdef const double* a = opnd(w, tv.cv, op.a, fl, FLAG_A_CONST)
    cdef const double* b = opnd(w, tv.cv, op.b, fl, FLAG_B_CONST)
    cdef const double* c = opnd(w, tv.cv, op.c, fl, FLAG_C_CONST)
    cdef const double* y = w + op.out
    cdef const double* yb = wb + op.out
    cdef double d1, d2, da, db, daa, dab, dbb, ta, tb, ybd, h
    cdef double* xbd
    cdef const double* ybdp
    cdef const double* xdp
    cdef double* P
    cdef double* Pt
    cdef double* scratch
    if op_cheap_unary(code) and not (fl & FLAG_A_CONST):
        if code == OP_DIVC:
            da = 1.0 / op.d         # un_d1's value, as in the reverse sweep
        for l in range(L):
            xbd = wbd + l * S + op.a
            ybdp = wbd + l * S + op.out
            if code == OP_MULC:
                for i in range(n):
                    xbd[i] += op.d * ybdp[i]
            elif code == OP_DIVC:
                for i in range(n):
                    xbd[i] += da * ybdp[i]
            elif code == OP_ADDC:
                for i in range(n):
                    xbd[i] += ybdp[i]
            elif code == OP_SQUARE:
                xdp = wd + l * S + op.a
                for i in range(n):
                    xbd[i] += 2.0 * (a[i] * ybdp[i] + yb[i] * xdp[i])
            elif code == OP_RSUBC or code == OP_NEG:
                for i in range(n):
                    xbd[i] -= ybdp[i]
            else:   # a cheap op with no loop of its own here
                xdp = wd + l * S + op.a
                for i in range(n):
                    xbd[i] += (un_d1(code, a[i], y[i], op.d) * ybdp[i]
                               + un_d2(code, a[i], y[i], op.d) * yb[i] * xdp[i])
    elif code <= UN_LAST and not op_zero_derivative(code):
        if fl & FLAG_A_CONST:
            return 0
        for i in range(n):
            d1 = un_d1(code, a[i], y[i], op.d)
            d2 = un_d2(code, a[i], y[i], op.d) * yb[i]
            for l in range(L):
                ybd = wbd[l * S + op.out + i]
                if d1 != 0.0 and ybd != 0.0:
                    wbd[l * S + op.a + i] += d1 * ybd
                if d2 != 0.0:
                    wbd[l * S + op.a + i] += d2 * wd[l * S + op.a + i]
    elif op_zero_derivative(code):
        pass
    elif op_cheap_binary(code) and not (fl & FLAG_ALL) and both_full(op):
        # separate loops per operand: a and b may be the same slot (x * x)
        for l in range(L):
            ybdp = wbd + l * S + op.out
            xbd = wbd + l * S + op.a
            if code == OP_MUL:
                xdp = wd + l * S + op.b
                for i in range(n):
                    xbd[i] += b[i] * ybdp[i] + yb[i] * xdp[i]
            else:
                for i in range(n):
                    xbd[i] += ybdp[i]
            xbd = wbd + l * S + op.b
            if code == OP_MUL:
                xdp = wd + l * S + op.a
                for i in range(n):
                    xbd[i] += a[i] * ybdp[i] + yb[i] * xdp[i]
            elif code == OP_ADD:
                for i in range(n):
                    xbd[i] += ybdp[i]
            else:
                for i in range(n):
                    xbd[i] -= ybdp[i]
    elif code <= BIN_LAST:
        bwalk_start(&bw, op)
        for i in range(n):
            ia = bw.a.i
            ib = bw.b.i
            bwalk_next(&bw)
            bin_d1(code, a[ia], b[ib], y[i], c[i] if code == OP_WHERE else 0.0, &da, &db)
            bin_d2(code, a[ia], b[ib], y[i], &daa, &dab, &dbb)
            for l in range(L):
                ta = 0.0 if fl & FLAG_A_CONST else wd[l * S + op.a + ia]
                tb = 0.0 if fl & FLAG_B_CONST else wd[l * S + op.b + ib]
                ybd = wbd[l * S + op.out + i]
                # a constant operand has no tangent: its cross term is left out, not multiplied
                # by 0 (an infinite mixed partial, as pow's at a zero base, would give NaN)
                if not (fl & FLAG_A_CONST):
                    h = daa * ta
                    if not (fl & FLAG_B_CONST):
                        h = h + dab * tb
                    wbd[l * S + op.a + ia] += da * ybd + yb[i] * h
                if not (fl & FLAG_B_CONST):
                    h = dbb * tb
                    if not (fl & FLAG_A_CONST):
                        h = dab * ta + h
                    wbd[l * S + op.b + ib] += db * ybd + yb[i] * h
    elif code == OP_PROD:
        if fl & FLAG_A_CONST:
            return 0
        scratch = prod_start(op, &pre, &m, &post)
        if scratch == NULL:
            return 0
        for l in range(L):
            for i in range(pre):
                for kk in range(post):
                    P = prod_block(a, wd + l * S + op.a, i, kk, m, post, scratch)
                    Pt = P + m
                    for j in range(m):
                        wbd[l * S + op.a + (i * m + j) * post + kk] += (
                            wbd[l * S + op.out + i * post + kk] * P[j] + yb[i * post + kk] * Pt[j])
        free(scratch)
    elif code == OP_MATMUL:
        for l in range(L):
            for bt in range(op.p[0]):
                if not (fl & FLAG_A_CONST):
                    mm_adj_a(op, bt, wbd + l * S + op.out, b, wbd + l * S + op.a)
                    if not (fl & FLAG_B_CONST):
                        mm_adj_a(op, bt, yb, wd + l * S + op.b, wbd + l * S + op.a)
                if not (fl & FLAG_B_CONST):
                    mm_adj_b(op, bt, a, wbd + l * S + op.out, wbd + l * S + op.b)
                    if not (fl & FLAG_A_CONST):
                        mm_adj_b(op, bt, wd + l * S + op.a, yb, wbd + l * S + op.b)
    elif code == OP_CALL:
        call_tor(tv.cbs, op, a, b, c, y, yb, wd, wbd, L, S)
    elif not (fl & FLAG_A_CONST):
        # linear ops (sum, max/min with fixed ties, gather, scatter_add, copy)
        for l in range(L):
            reverse_linear(op, tv.ipool, a, y, wbd + l * S + op.out, wbd + l * S + op.a)
    return 0


cdef int tor_sweep(const TapeView* tv, const double* w, const double* wd, const double* wb,
                   double* wbd, Py_ssize_t L, Py_ssize_t S) except -1 nogil:
    """wbd (L lanes) += the tangent of the reverse sweep's adjoints along the lanes of wd."""
    cdef Py_ssize_t k = tv.nops - 1, s = tv.nsegs - 1
    cdef const int64_t* segs = tv.segs
    while k >= 0:
        if s >= 0 and k == segs[3 * s + 1] - 1:
            tor_segment(tv, segs[3 * s], segs[3 * s + 1], segs[3 * s + 2] != 0, w, wd, wb, wbd,
                        L, S)
            k = segs[3 * s] - 1
            s -= 1
            continue
        tor_op(tv, &tv.ops[k], w, wd, wb, wbd, L, S)
        k -= 1
    return 0


cdef int tor_segment(const TapeView* tv, Py_ssize_t k0, Py_ssize_t k1, bint fold,
                     const double* w, const double* wd, const double* wb, double* wbd,
                     Py_ssize_t L, Py_ssize_t S) except -1 nogil:
    """The tangent-of-reverse of a tiling segment tile by tile (ascending tiles, ops in reverse
    order within a tile), after a folded sum's whole op: the order reverse_segment keeps, for
    which the segment rules give the op-by-op sweep's bits (an adjoint tangent of a segment
    output is final when its op runs; external ones get their contributions in element
    order)."""
    cdef Op top
    cdef const Op* ops = tv.ops
    cdef Py_ssize_t j, t0 = 0, tl, n = ops[k0].n, T = TILE, ke = k1 - 1 if fold else k1
    if fold:
        tor_op(tv, &ops[ke], w, wd, wb, wbd, L, S)
    while t0 < n:
        tl = tile_len(t0, n, T)
        for j in range(ke - 1, k0 - 1, -1):
            tile_op(&ops[j], &top, t0, tl)
            tor_op(tv, &top, w, wd, wb, wbd, L, S)
        t0 += tl
    return 0
