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

    cdef int _grow_ops(self) except -1
    cdef int _find_segments(self) except -1
    cdef int _find_fused(self) except -1
    cdef Py_ssize_t _tail_start(self, Py_ssize_t K) except -2
    cdef bint _post_apart(self, Py_ssize_t k0, Py_ssize_t K)


# The work-buffer regions an op reads (offsets, lengths; constant operands left out): up to 3
cdef int op_reads(const Op* op, int64_t* off, int64_t* ln) noexcept nogil


# Loop tiling of elementwise runs (see Tape._find_segments and the sweeps): ops with at least
# TILE_MIN_N elements may form segments of at most TILE_MAX_OPS ops.
cdef enum:
    TILE_MIN_N = 4096
    FUSE_MIN_N = 256     # the fused gradient tail saves work (skipped values, uniform
                         # adjoints) even in cache, so it starts at shorter runs
    TILE_MAX_OPS = 32
