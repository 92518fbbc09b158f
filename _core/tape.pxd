from libc.stdint cimport int32_t, int64_t


ctypedef struct Op:
    int32_t code
    int32_t flags
    int64_t out      # output offset in the work buffer
    int64_t a        # operand offsets (work buffer, or constant buffer per flags)
    int64_t b
    int64_t c
    int64_t n        # output size
    int64_t p[6]     # integer parameters, meaning per family (see opcodes.pxd)
    double d         # scalar parameter


# Constants referenced, not copied: an operand offset at or above EXT_BASE names element
# (off & EXT_MASK) of referenced array (off - EXT_BASE) >> EXT_SHIFT (Tape.add_const_ref).
cdef enum:
    EXT_SHIFT = 36
cdef extern from *:
    """
    #define TG_EXT_BASE (((long long)1) << 60)
    #define TG_EXT_MASK ((((long long)1) << 36) - 1)
    """
    const int64_t TG_EXT_BASE
    const int64_t TG_EXT_MASK


ctypedef struct CPool:
    const double* vals        # the tape's own constants (offsets below TG_EXT_BASE)
    const double** ext        # data of the referenced arrays


cdef inline const double* cpool_at(const CPool* cp, int64_t off) noexcept nogil:
    if off < TG_EXT_BASE:
        return cp.vals + off
    return cp.ext[(off - TG_EXT_BASE) >> EXT_SHIFT] + (off & TG_EXT_MASK)


cdef class Tape:
    cdef Op* ops
    cdef Py_ssize_t nops
    cdef Py_ssize_t cap_ops
    cdef int64_t* ipool
    cdef Py_ssize_t nidx
    cdef Py_ssize_t cap_idx
    cdef double* cvals
    cdef Py_ssize_t ncon
    cdef Py_ssize_t cap_con
    cdef list ext_arrays             # referenced constant arrays (kept alive by the tape)
    cdef const double** extp         # their data pointers
    cdef int64_t* extn               # their sizes
    cdef Py_ssize_t next_
    cdef Py_ssize_t cap_ext
    cdef CPool pool                  # what the sweeps read constants through (pool_view())
    cdef int64_t* guards      # triples: (work offset, size, constant offset of expected values)
    cdef Py_ssize_t nguard
    cdef Py_ssize_t cap_guard
    cdef readonly Py_ssize_t nwork   # size of the work (value) buffer
    cdef readonly Py_ssize_t nin     # inputs occupy work[0:nin]
    cdef readonly Py_ssize_t out_off
    cdef readonly Py_ssize_t out_n
    cdef readonly bint validated
    cdef public object meta          # Python-side description (shapes, pytree), JSON-able
    cdef public list callbacks       # rule objects of OP_CALL operations
    cdef object __weakref__          # tests check that tapes (and their C buffers) are freed
    cdef int64_t* segs               # tiling segments, pairs [k0, k1) of op indices (validate())
    cdef Py_ssize_t nsegs
    cdef Py_ssize_t cap_segs
    cdef Py_ssize_t fuse_k0          # first op of the fused gradient tail, -1: none (validate())
    cdef Py_ssize_t fuse_sum         # its sum op (ops after it: scalar "post" ops)
    cdef readonly bint outs_apart    # outputs disjoint, reads of earlier values only (validate())

    cdef int _grow_ops(self) except -1
    cdef Op* _push_op(self, int code, int64_t out, int64_t a, int64_t n) except NULL
    cdef Op* _push_binary(self, int code, int64_t out, int64_t a, int64_t b, int64_t n,
                          int flags) except NULL
    cdef const CPool* pool_view(self)
    cdef bint _outside(self, int64_t off, bint const_, int64_t WC)
    cdef int _region(self, int64_t off, int64_t size, int64_t W, bint const_, Py_ssize_t i,
                     int code, str what) except -1
    cdef int _find_segments(self) except -1
    cdef int _find_fused(self) except -1
    cdef Py_ssize_t _tail_start(self, Py_ssize_t K) except -2
    cdef bint _post_apart(self, Py_ssize_t k0, Py_ssize_t K)
    cdef bint _find_outs_apart(self) except -1


# The work-buffer regions an op reads (offsets, lengths; constant operands left out): up to 3
cdef int op_reads(const Op* op, int64_t* off, int64_t* ln) noexcept nogil


# Loop tiling of elementwise runs (see Tape._find_segments and the sweeps): ops with at least
# TILE_MIN_N elements may form segments of at most TILE_MAX_OPS ops.
cdef enum:
    TILE_MIN_N = 4096
    FUSE_MIN_N = 256     # the fused gradient tail saves work (skipped values, uniform
                         # adjoints) even in cache, so it starts at shorter runs
    TILE_MAX_OPS = 32
