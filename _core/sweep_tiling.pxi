# Loop tiling: the forward and reverse of a segment (a run of elementwise ops over large
# arrays) strip-mined tile by tile, and the tile helpers the fused tail shares (tile_op,
# tile_len, fold_tile). The drivers in sweep_forward.pxi / sweep_reverse.pxi hand a segment
# over when they reach it; the per-op work is forward_op / reverse_op on a tiled Op.
#
# Long runs of elementwise ops over large arrays are memory-bound when swept op by op: every op
# streams its operands and result through the whole work buffer. Tape._find_segments (tape.pyx)
# marks runs [k0, k1) of elementwise ops that may be strip-mined instead: the forward sweep runs
# every op of the run on one tile of ``TILE`` elements before moving to the next tile, so the
# intermediates of a tile are still in cache when the next op reads them.
#
# Why the values and adjoints are unchanged (bitwise), given the segment rules:
# - forward: an op reads either external regions, which no segment op writes (outputs never
#   overlap earlier reads nor external reads), or the output of an earlier segment op at the
#   same element index, which the earlier op computed on this same tile. Each element is
#   computed by the same kernel from the same operand values as in the op-by-op sweep.
# - reverse: when the reverse sweep reaches the last op of a segment, the segment is processed
#   tile by tile (ascending), ops in reverse order within a tile. The adjoint of a segment
#   output on a tile is final when its op is processed: its contributions come from ops after
#   the segment (processed before the segment, as in the op-by-op sweep) and from segment ops
#   that read it at the same index (internal reads are full and exact), which run earlier in
#   the reversed loop of the same tile; no earlier segment op reads it (outputs overlap no
#   earlier read). Values are read-only in the reverse sweep. External adjoints only receive
#   contributions during the segment; a scalar-broadcast operand accumulates over the tiles in
#   element order, as the op-by-op loop does (the rules exclude two segment ops accumulating
#   into one scalar, and shifted external reads whose contributions would change order).
# Tiles are TILE elements (512: a tile of each of a run of 8 ops fits in L1), the last one takes the remainder (between TILE and 2 TILE - 1), so
# every tile op has n >= 2 and takes the same code paths as the whole op.
# Runs of at least 2 PAR_CHUNK elements go chunk by chunk (tiles counted from each chunk's
# start), the chunks over the threads (sweep_threads.pxi): the forward always (a folded sum is
# the blocked sum_contiguous), the reverse when no two chunks add into one element
# (segment_apart), so the values and adjoints stay the op-by-op sweep's.
cdef Py_ssize_t TILE = 512
cdef bint TILING = True


def set_tiling(enabled=True, tile=None):
    """Switch loop tiling of elementwise runs on or off (and set the tile length); returns the
    previous (enabled, tile). For tests and benchmarks: results are the same either way."""
    global TILING, TILE
    prev = (bool(TILING), int(TILE))
    TILING = bool(enabled)
    if tile is not None:
        TILE = _tile_length("set_tiling", tile)
    return prev


if _switched_off("TAPEGRAD_TILING"):
    TILING = False


cdef inline Py_ssize_t tiling_nsegs(Tape t) noexcept:
    return t.nsegs if TILING else 0


cdef inline void tile_op(const Op* src, Op* dst, Py_ssize_t t0, Py_ssize_t tl) noexcept nogil:
    """dst = src restricted to elements [t0, t0 + tl): full operands shifted, scalars kept."""
    dst[0] = src[0]
    dst.n = tl
    dst.out = src.out + t0
    if src.code <= UN_LAST:
        dst.a = src.a + t0
        return
    if src.p[0] == 1 and src.p[1] == src.n:
        dst.a = src.a + t0
        dst.p[1] = tl
    if src.p[2] == 1 and src.p[3] == src.n:
        dst.b = src.b + t0
        dst.p[3] = tl
    if src.code == OP_WHERE:
        dst.c = src.c + t0


cdef inline Py_ssize_t tile_len(Py_ssize_t t0, Py_ssize_t n, Py_ssize_t T) noexcept nogil:
    return n - t0 if n - t0 < 2 * T else T


cdef inline bint fold_tile(const double* a, Py_ssize_t tl, bint last, double* ps) noexcept nogil:
    """A folded sum: adds a tile of tl values to sum_contiguous's four partial sums ps[0:4],
    carried across tiles (tiles start at multiples of 4, so the result is the same number).
    On the last tile, ps[0] becomes the sum and True is returned."""
    cdef Py_ssize_t i = 0
    while i + 4 <= tl:
        ps[0] += a[i]
        ps[1] += a[i + 1]
        ps[2] += a[i + 2]
        ps[3] += a[i + 3]
        i += 4
    if not last:
        return False
    ps[0] = (ps[0] + ps[1]) + (ps[2] + ps[3])
    while i < tl:
        ps[0] += a[i]
        i += 1
    return True


cdef void forward_tiles(const TapeView* tv, Py_ssize_t k0, Py_ssize_t ke, bint fold,
                        const unsigned char* skip,
                        double* w, Py_ssize_t lo, Py_ssize_t hi, double* total) noexcept nogil:
    """The forward of segment ops [k0, ke) on elements [lo, hi), tiles counted from lo; fold:
    total = the sum of op ke's operand over [lo, hi) (sum_contiguous's partial sums)."""
    cdef Op top
    cdef const Op* ops = tv.ops
    cdef const int64_t* ipool = tv.ipool
    cdef const CPool* cv = tv.cv
    cdef Py_ssize_t j, t0 = lo, tl, T = TILE
    cdef double ps[4]
    ps[0] = ps[1] = ps[2] = ps[3] = 0.0
    while t0 < hi:
        tl = tile_len(t0 - lo, hi - lo, T)
        for j in range(k0, ke):
            if skip != NULL and skip[j]:
                continue        # its values are in w already (forward_sweep_skip)
            tile_op(&ops[j], &top, t0, tl)
            forward_op(&top, ipool, opnd(w, cv, top.a, top.flags, FLAG_A_CONST),
                       opnd(w, cv, top.b, top.flags, FLAG_B_CONST),
                       opnd(w, cv, top.c, top.flags, FLAG_C_CONST), w + top.out)
        if fold and fold_tile(w + ops[ke].a + t0, tl, t0 + tl == hi, ps):
            total[0] = ps[0]
        t0 += tl


cdef int forward_segment(const TapeView* tv, Py_ssize_t k0, Py_ssize_t k1, bint fold,
                         const unsigned char* skip, double* w) except -1 nogil:
    """The forward of the segment [k0, k1) (k1 - 1 a folded sum if fold), chunk by chunk, the
    chunks over the threads (sweep_threads.pxi); ops with skip[k] set (skip NULL: none) are
    left out, their outputs holding their values already (a folded sum is always summed)."""
    cdef const Op* ops = tv.ops
    cdef Py_ssize_t c, n = ops[k0].n, ke = k1 - 1 if fold else k1, nch = n_chunks(n)
    cdef int nt = tv.nthreads
    cdef double one
    cdef double* sums
    if nch == 1:
        forward_tiles(tv, k0, ke, fold, skip, w, 0, n, &one)
        if fold:
            w[ops[ke].out] = one
        return 0
    sums = <double*> malloc(nch * sizeof(double))
    if sums == NULL:
        with gil:
            raise MemoryError()
    if nt > 1:
        for c in prange(nch, num_threads=nt, schedule="dynamic"):
            forward_tiles(tv, k0, ke, fold, skip, w, c * PAR_CHUNK, chunk_end(c, nch, n), sums + c)
    else:
        for c in range(nch):
            forward_tiles(tv, k0, ke, fold, skip, w, c * PAR_CHUNK, chunk_end(c, nch, n), sums + c)
    if fold:
        one = sums[0]
        for c in range(1, nch):
            one += sums[c]
        w[ops[ke].out] = one
    free(sums)
    return 0


cdef bint segment_apart(const Op* ops, Py_ssize_t k0, Py_ssize_t ke) noexcept nogil:
    """Can no two chunks of the segment [k0, ke) add into one adjoint element? True when every
    op is elementwise and every operand that may receive an adjoint is a segment output or an
    external region of the run's length that no other such region overlaps at another offset
    (a scalar operand's adjoint sums over all chunks)."""
    cdef Py_ssize_t j, i, q, m = 0, n = ops[k0].n
    cdef int r
    cdef int64_t off
    cdef bint internal
    cdef int64_t ext[2 * TILE_MAX_OPS]
    cdef const Op* op
    for j in range(k0, ke):
        op = &ops[j]
        if op.code > BIN_LAST:
            return False
        for r in range(2):
            if r == 0:
                if op.flags & FLAG_A_CONST:
                    continue
                off = op.a
                if op.code > UN_LAST and not (op.p[0] == 1 and op.p[1] == n):
                    return False
            else:
                if op.code <= UN_LAST or op.flags & FLAG_B_CONST:
                    continue
                off = op.b
                if not (op.p[2] == 1 and op.p[3] == n):
                    return False
            internal = False
            for i in range(k0, ke):
                if ops[i].out == off:
                    internal = True
            if internal:
                continue
            for q in range(m):
                if ext[q] != off and ext[q] < off + n and off < ext[q] + n:
                    return False
            if m < 2 * TILE_MAX_OPS:
                ext[m] = off
                m += 1
            else:
                return False
    return True


cdef void reverse_tiles(const TapeView* tv, Py_ssize_t k0, Py_ssize_t ke, bint fold, double g,
                        const double* w, double* wb, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """The reverse of segment ops [k0, ke) (all elementwise) on elements [lo, hi); fold: the
    folded sum's adjoint g is broadcast first."""
    cdef Op top
    cdef const Op* ops = tv.ops
    cdef const CPool* cv = tv.cv
    cdef Py_ssize_t i, j, t0 = lo, tl, T = TILE
    cdef double* ab
    while t0 < hi:
        tl = tile_len(t0 - lo, hi - lo, T)
        if fold:
            ab = wb + ops[ke].a + t0
            for i in range(tl):
                ab[i] += g
        for j in range(ke - 1, k0 - 1, -1):
            tile_op(&ops[j], &top, t0, tl)
            reverse_elem(&top, opnd(w, cv, top.a, top.flags, FLAG_A_CONST),
                         opnd(w, cv, top.b, top.flags, FLAG_B_CONST),
                         opnd(w, cv, top.c, top.flags, FLAG_C_CONST), w + top.out,
                         wb + top.out, wb + top.a, wb + top.b)
        t0 += tl


cdef int reverse_segment(const TapeView* tv, Py_ssize_t k0, Py_ssize_t k1, bint fold,
                         const double* w, double* wb) except -1 nogil:
    cdef Op top
    cdef const Op* ops = tv.ops
    cdef Py_ssize_t i, j, c, t0 = 0, tl, n = ops[k0].n, T = TILE, ke = k1 - 1 if fold else k1
    cdef Py_ssize_t nch = n_chunks(n)
    cdef double g = wb[ops[ke].out] if fold else 0.0
    cdef double* ab
    cdef int nt = tv.nthreads
    if nch > 1 and nt > 1 and segment_apart(ops, k0, ke):
        # no element is added into by two chunks: each chunk's order is the serial one
        for c in prange(nch, num_threads=nt, schedule="dynamic"):
            reverse_tiles(tv, k0, ke, fold, g, w, wb, c * PAR_CHUNK, chunk_end(c, nch, n))
        return 0
    while t0 < n:
        tl = tile_len(t0, n, T)
        if fold:
            # the folded sum's adjoint, broadcast on this tile (its result overlaps nothing
            # the segment reads or writes, so g does not change)
            ab = wb + ops[ke].a + t0
            for i in range(tl):
                ab[i] += g
        for j in range(ke - 1, k0 - 1, -1):
            tile_op(&ops[j], &top, t0, tl)
            reverse_op(tv, &top, w, wb)
        t0 += tl
    return 0
