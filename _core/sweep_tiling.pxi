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


cdef void forward_segment(const TapeView* tv, Py_ssize_t k0, Py_ssize_t k1, bint fold,
                          double* w) noexcept nogil:
    cdef Op top
    cdef const Op* ops = tv.ops
    cdef const int64_t* ipool = tv.ipool
    cdef const CPool* cv = tv.cv
    cdef Py_ssize_t i, j, t0 = 0, tl, n = ops[k0].n, T = TILE, ke = k1 - 1 if fold else k1
    cdef double ps[4]
    ps[0] = ps[1] = ps[2] = ps[3] = 0.0
    while t0 < n:
        tl = tile_len(t0, n, T)
        for j in range(k0, ke):
            tile_op(&ops[j], &top, t0, tl)
            forward_op(&top, ipool, opnd(w, cv, top.a, top.flags, FLAG_A_CONST),
                       opnd(w, cv, top.b, top.flags, FLAG_B_CONST),
                       opnd(w, cv, top.c, top.flags, FLAG_C_CONST), w + top.out)
        if fold and fold_tile(w + ops[ke].a + t0, tl, t0 + tl == n, ps):
            w[ops[ke].out] = ps[0]
        t0 += tl


cdef int reverse_segment(const TapeView* tv, Py_ssize_t k0, Py_ssize_t k1, bint fold,
                         const double* w, double* wb) except -1 nogil:
    cdef Op top
    cdef const Op* ops = tv.ops
    cdef Py_ssize_t i, j, t0 = 0, tl, n = ops[k0].n, T = TILE, ke = k1 - 1 if fold else k1
    cdef double g = wb[ops[ke].out] if fold else 0.0
    cdef double* ab
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
