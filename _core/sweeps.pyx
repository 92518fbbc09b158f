# cython: language_level=3
"""The four sweeps over a recorded tape, on raw pointers, with the GIL released.

- forward_sweep:  values of every slot at a new input (the work buffer ``w``)
- tangent_sweep:  dual numbers, L tangent lanes at once; lane l of slot s is wd[l*S + s]
- reverse_sweep:  adjoints accumulated in a buffer laid out like ``w``
- tor_sweep:      tangent-of-reverse (forward over reverse): the tangents of the adjoints,
                  w.r.t. the tangent lanes, which gives Hessian-vector products H v
                  (Pearlmutter 1994; Griewank & Walther 2008, ch. 5).

Gradients of scalar losses have two shortcuts: a tape ending in a long elementwise run and its
sum ("fused tail") runs that run's forward and reverse together, tile by tile, in a small
scratch (grad_fused); small scalar tapes keep each op's local partials from the forward sweep
(grad_partials). Both give the op-by-op sweeps' values; see their comments for the adjoints.

All buffers belong to the call, never to the tape, so one validated tape can be replayed by
several threads at once. Long elementwise runs (tiled segments, the fused tail, the fused H v)
are also split, in fixed chunks, over an OpenMP team of set_num_threads threads, with the same
bits for every count (sweep_threads.pxi). Operands flagged constant live in the tape's constant buffer and
carry no tangent and receive no adjoint.

Layout: every sweep is a driver over a per-op function (forward_op, reverse_op, tangent_op,
tor_op), one file per sweep kind, included below: sweep_forward.pxi, sweep_reverse.pxi,
sweep_tangent.pxi, sweep_tor.pxi, sweep_threads.pxi (the thread count, chunks of large runs),
sweep_tiling.pxi (tiled segments), sweep_fused.pxi (fused
gradient tail, scalar partials), sweep_calls.pxi (OP_CALL rules in Python), sweep_batch.pxi
(one tape at many points per call, at the end: it uses the entry points' helpers). This file keeps
what they share: the TapeView every sweep reads the tape through (filled once per call by
open_tape), the broadcast walk, the PROD partials, the batched matrix products, NumPy's inner
loops, the guards, and the Python entry points. Which fast path an op takes is asked of the
opcode traits in traits.pxd, the same predicates in every sweep. (sweeps_avx2.pyx includes
this file, so the includes resolve from _core/ for both modules.)
"""
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memset, memcpy, memmove
from libc.stdint cimport int64_t
from libc.math cimport NAN, sin, cos, fabs
from cpython.ref cimport PyObject
from scipy.linalg.cython_blas cimport dgemm, dgemv
from cython.parallel cimport prange, parallel

import numpy as np
cimport numpy as cnp

from .opcodes cimport *
from .kernels cimport un_f, un_d1, un_d2, bin_f, bin_d1, bin_d2
from .traits cimport *
from .tape cimport Tape, Op, TILE_MAX_OPS, op_reads, CPool, cpool_at
from .tape import NUMPY_LOOPS_UNARY, NUMPY_LOOPS_BINARY

cnp.import_array()


# ------------------------------------------------------------------ the tape as the sweeps see it
ctypedef struct TapeView:
    # what a sweep reads of a validated tape, taken once per call (open_tape) so no sweep
    # touches the Python object: the op array, its pools, and the switches in force
    const Op* ops
    Py_ssize_t nops
    const int64_t* ipool
    const CPool* cv           # the constants (operands flagged constant): own and referenced
    PyObject* cbs             # the rule objects of OP_CALL operations (a list)
    const int64_t* segs       # tiling segments (k0, k1, fold) triples, sorted
    Py_ssize_t nsegs          # how many are in force (0 when tiling is off)
    const int64_t* guards
    Py_ssize_t nguard
    Py_ssize_t nwork
    Py_ssize_t nin
    Py_ssize_t out_off
    Py_ssize_t out_n
    Py_ssize_t fuse_k0        # first op of the fused gradient tail, -1: none (or fusing off)
    Py_ssize_t fuse_sum
    bint outs_apart           # Tape.outs_apart: adjoints may be cleared after their use
    int nthreads              # threads for the large sweeps (sweep_threads.pxi); 1: serial


cdef inline TapeView view_part(const TapeView* tv, Py_ssize_t k0, Py_ssize_t k1,
                               Py_ssize_t nsegs) noexcept nogil:
    """The view of ops [k0, k1) alone with the first nsegs tiling segments (segments keep
    absolute op indices, so nsegs is 0 unless k0 is 0)."""
    cdef TapeView part = tv[0]
    part.ops = tv.ops + k0
    part.nops = k1 - k0
    part.nsegs = nsegs
    return part


# ------------------------------------------------------------------ small helpers
ctypedef struct BIdx:
    # walks the broadcast index (i // div) % mod of an operand for i = 0, 1, 2, ... without
    # dividing: count to div, then step, wrapping at mod
    Py_ssize_t i
    Py_ssize_t cnt
    int64_t div
    int64_t mod


cdef inline void bstart(BIdx* s, int64_t div, int64_t mod) noexcept nogil:
    s.i = 0
    s.cnt = 0
    s.div = div
    s.mod = mod


cdef inline void bnext(BIdx* s) noexcept nogil:
    s.cnt += 1
    if s.cnt == s.div:
        s.cnt = 0
        s.i += 1
        if s.i == s.mod:
            s.i = 0


cdef inline int bkind(int64_t div, int64_t mod, int64_t n) noexcept nogil:
    if div == 1 and mod == n:
        return 0
    if mod == 1:
        return 1
    return 2


cdef inline Py_ssize_t row_len(const Op* op, int ka, int kb) noexcept nogil:
    """The length of a binary op's repeating operand when the other is full (ka, kb: bkind):
    a row repeating every mod elements (x @ W + b), 1 for one value (A * s); 0: neither. The
    repeating operand is a when ka != 0."""
    if (ka == 0 and kb == 1) or (ka == 1 and kb == 0):
        return 1
    if ka == 0 and kb == 2 and op.p[2] == 1:
        return op.p[3]
    if kb == 0 and ka == 2 and op.p[0] == 1:
        return op.p[1]
    return 0


ctypedef struct BWalk:
    # the broadcast walk of both operands of a binary elementwise op (op.p[0:2] for a,
    # op.p[2:4] for b): a.i and b.i are the operand indices of output element i
    BIdx a
    BIdx b


cdef inline void bwalk_start(BWalk* s, const Op* op) noexcept nogil:
    bstart(&s.a, op.p[0], op.p[1])
    bstart(&s.b, op.p[2], op.p[3])


cdef inline void bwalk_next(BWalk* s) noexcept nogil:
    bnext(&s.a)
    bnext(&s.b)


cdef inline bint both_full(const Op* op) noexcept nogil:
    """Are both operands of a binary op full size (no broadcasting)?"""
    return bkind(op.p[0], op.p[1], op.n) == 0 and bkind(op.p[2], op.p[3], op.n) == 0


cdef inline void gemm_rm(char ta, char tb, int M, int N, int K, double alpha, const double* A,
                         int lda, const double* B, int ldb, double beta, double* C,
                         int ldc) noexcept nogil:
    """Row-major C(MxN) = alpha op(A) op(B) + beta C, via column-major dgemm on swapped operands."""
    cdef int i
    if M == 0 or N == 0:
        return
    if K == 0:
        if beta == 0.0:
            for i in range(M):
                memset(C + <Py_ssize_t>i * ldc, 0, N * sizeof(double))
        return
    lda = lda if lda > 1 else 1
    ldb = ldb if ldb > 1 else 1
    ldc = ldc if ldc > 1 else 1
    cdef char tr
    cdef int inc
    if N == 1:
        # a matrix times a vector (X @ w, X^T @ r): BLAS's gemv, which streams the matrix once
        # where gemm's small-matrix kernels do not. Row-major A (M x K, lda) is column-major
        # A^T; op(B)'s one column has stride ldb (B K x 1) or 1 (B^T 1 x K)
        tr = b'T' if ta == b'N' else b'N'
        inc = ldb if tb == b'N' else 1
        if ta == b'N':
            dgemv(&tr, &K, &M, &alpha, <double*>A, &lda, <double*>B, &inc, &beta, C, &ldc)
        else:
            dgemv(&tr, &M, &K, &alpha, <double*>A, &lda, <double*>B, &inc, &beta, C, &ldc)
        return
    dgemm(&tb, &ta, &N, &M, &K, &alpha, <double*>B, &ldb, <double*>A, &lda, &beta, C, &ldc)


cdef inline bint same(double x, double y) noexcept nogil:
    # the elements a max/min selected: equal to the result, or NaN when the result is NaN
    # (the forward kernel propagates NaN, so the NaN elements receive the derivative)
    return x == y or (x != x and y != y)


# The chunk length of the threaded sweeps (sweep_threads.pxi), a multiple of 4 (and of the
# default tiles, so chunks cut no tile the sweep without chunks would have): runs of at least 2 PAR_CHUNK elements are split into chunks of it, and full
# sums of at least that many values are blocked sums over the same chunks.
cdef enum:
    PAR_CHUNK = 32768


cdef inline double sum_contiguous(const double* a, Py_ssize_t m) noexcept nogil:
    """The sum of a[0:m]: four partial sums per chunk of PAR_CHUNK values (one chunk below
    2 PAR_CHUNK), the chunks' sums added in order (so a sum split over threads by chunks is
    the same number)."""
    cdef Py_ssize_t nb, b
    cdef double s
    if m < 2 * PAR_CHUNK:
        return sum4(a, m)
    nb = m // PAR_CHUNK
    s = sum4(a, PAR_CHUNK)
    for b in range(1, nb - 1):
        s += sum4(a + b * PAR_CHUNK, PAR_CHUNK)
    return s + sum4(a + (nb - 1) * PAR_CHUNK, m - (nb - 1) * PAR_CHUNK)


cdef inline double sum4(const double* a, Py_ssize_t m) noexcept nogil:
    # four independent partial sums: the adds pipeline instead of waiting on one another
    cdef double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0
    cdef Py_ssize_t i = 0
    while i + 4 <= m:
        s0 += a[i]
        s1 += a[i + 1]
        s2 += a[i + 2]
        s3 += a[i + 3]
        i += 4
    s0 = (s0 + s1) + (s2 + s3)
    while i < m:
        s0 += a[i]
        i += 1
    return s0


# ------------------------------------------------------------------ product helpers
cdef void prod_parts(const double* x, const double* xd, Py_ssize_t m, Py_ssize_t stride,
                     double* P, double* Pt, double* pre, double* pret) noexcept nogil:
    """P[j] = prod_{i != j} x_i, and if xd: Pt[j] = its directional derivative along xd.

    Prefix/suffix products (as dual numbers when tangents are wanted), so zeros are exact.
    Scratch pre/pret has room for m + 1 values.
    """
    cdef Py_ssize_t j
    cdef double sv = 1.0, st = 0.0, v, t
    pre[0] = 1.0
    pret[0] = 0.0
    for j in range(m):
        pre[j + 1] = pre[j] * x[j * stride]
        if xd != NULL:
            pret[j + 1] = pret[j] * x[j * stride] + pre[j] * xd[j * stride]
    for j in range(m - 1, -1, -1):
        P[j] = pre[j] * sv
        if xd != NULL:
            Pt[j] = pret[j] * sv + pre[j] * st
            t = st * x[j * stride] + sv * xd[j * stride]
            st = t
        sv = sv * x[j * stride]



cdef inline double* prod_start(const Op* op, Py_ssize_t* pre, Py_ssize_t* m,
                               Py_ssize_t* post) noexcept nogil:
    """The (pre, m, post) blocks of a PROD and a scratch for prod_block (4 m + 2 doubles, the
    caller frees it); NULL: nothing to do (an empty result, or out of memory)."""
    pre[0] = op.p[0]
    m[0] = op.p[1]
    post[0] = op.p[2]
    if pre[0] * post[0] == 0:
        return NULL
    return <double*> malloc((4 * m[0] + 2) * sizeof(double))


cdef inline double* prod_block(const double* a, const double* ad, Py_ssize_t i, Py_ssize_t kk,
                               Py_ssize_t m, Py_ssize_t post, double* scr) noexcept nogil:
    """The partials P[j] = prod_{i != j} of block (i, kk) of a PROD over (pre, m, post), and,
    when ad (tangents laid out like a) is given, their tangents Pt = P + m; returns P.
    The reverse, tangent and tangent-of-reverse sweeps all take the PROD partials from here."""
    cdef Py_ssize_t o = i * m * post + kk
    prod_parts(a + o, ad + o if ad != NULL else NULL, m, post, scr + 2 * m + 2, scr + 3 * m + 2,
               scr, scr + m + 1)
    return scr + 2 * m + 2


# ------------------------------------------------------------------ batched matrix products
# y = a @ b over op.p[0] batches: a is M x K (p1 x p2), b is K x N (p2 x N=p3), batch strides
# p4 (a) and p5 (b); y's batches are contiguous. A, B, Y point at the operands' first batch
# (values, tangents or adjoints laid out like them). Each sweep loops over bt itself, so the
# order in which a broadcast operand (stride 0) accumulates its batches stays the same.
cdef inline void mm_value(const Op* op, Py_ssize_t bt, double alpha, const double* A,
                          const double* B, double beta, double* Y) noexcept nogil:
    """Y_bt = alpha A_bt B_bt + beta Y_bt."""
    gemm_rm(b'N', b'N', <int>op.p[1], <int>op.p[3], <int>op.p[2], alpha, A + bt * op.p[4],
            <int>op.p[2], B + bt * op.p[5], <int>op.p[3], beta, Y + bt * op.p[1] * op.p[3],
            <int>op.p[3])


cdef inline void mm_adj_a(const Op* op, Py_ssize_t bt, const double* Yb, const double* B,
                          double* Ab) noexcept nogil:
    """Ab_bt += Yb_bt B_bt^T."""
    gemm_rm(b'N', b'T', <int>op.p[1], <int>op.p[2], <int>op.p[3], 1.0, Yb + bt * op.p[1] * op.p[3],
            <int>op.p[3], B + bt * op.p[5], <int>op.p[3], 1.0, Ab + bt * op.p[4], <int>op.p[2])


cdef inline void mm_adj_b(const Op* op, Py_ssize_t bt, const double* A, const double* Yb,
                          double* Bb) noexcept nogil:
    """Bb_bt += A_bt^T Yb_bt."""
    gemm_rm(b'T', b'N', <int>op.p[2], <int>op.p[3], <int>op.p[1], 1.0, A + bt * op.p[4],
            <int>op.p[2], Yb + bt * op.p[1] * op.p[3], <int>op.p[3], 1.0, Bb + bt * op.p[5],
            <int>op.p[3])


# ------------------------------------------------------------------ NumPy's inner loops
# For transcendental functions the forward sweep calls NumPy's own float64 inner loops (SIMD
# where NumPy has them), taken from the ufunc objects once at import. They need no GIL and give
# the same values as recording, which evaluates the same NumPy functions.
ctypedef void (*loop_fn)(char**, cnp.npy_intp*, cnp.npy_intp*, void*) noexcept nogil
cdef loop_fn UN_LOOP[OP_COUNT]
cdef void* UN_DATA[OP_COUNT]
cdef loop_fn BIN_LOOP[OP_COUNT]
cdef void* BIN_DATA[OP_COUNT]


cdef int _install(loop_fn* table, void** data, int code, object uf, str sig) except -1:
    cdef cnp.ufunc u = uf
    types = list(uf.types)
    if sig in types:
        k = types.index(sig)
        table[code] = <loop_fn> u.functions[k]
        data[code] = u.data[k]
    return 0


def _install_numpy_loops():
    cdef int k
    for k in range(OP_COUNT):
        UN_LOOP[k] = NULL
        BIN_LOOP[k] = NULL
    # which ops use NumPy's loop is the primitive table's "loop" column (opnames.pxi)
    for code, uf in NUMPY_LOOPS_UNARY:
        _install(UN_LOOP, UN_DATA, code, uf, "d->d")
    for code, uf in NUMPY_LOOPS_BINARY:
        _install(BIN_LOOP, BIN_DATA, code, uf, "dd->d")


_install_numpy_loops()


cdef inline void run_unary_loop(int code, const double* a, double* y, Py_ssize_t n) noexcept nogil:
    cdef char* args[2]
    cdef cnp.npy_intp dims[1]
    cdef cnp.npy_intp steps[2]
    args[0] = <char*> a
    args[1] = <char*> y
    dims[0] = n
    steps[0] = sizeof(double)
    steps[1] = sizeof(double)
    UN_LOOP[code](args, dims, steps, UN_DATA[code])


cdef inline void run_binary_loop(int code, const double* a, const double* b, double* y,
                                 Py_ssize_t n, bint a_scalar, bint b_scalar) noexcept nogil:
    cdef char* args[3]
    cdef cnp.npy_intp dims[1]
    cdef cnp.npy_intp steps[3]
    args[0] = <char*> a
    args[1] = <char*> b
    args[2] = <char*> y
    dims[0] = n
    steps[0] = 0 if a_scalar else sizeof(double)
    steps[1] = 0 if b_scalar else sizeof(double)
    steps[2] = sizeof(double)
    BIN_LOOP[code](args, dims, steps, BIN_DATA[code])


cdef inline const double* opnd(const double* w, const CPool* cv, int64_t off, int flags,
                               int bit) noexcept nogil:
    return cpool_at(cv, off) if flags & bit else w + off


cdef inline int64_t opnd_off(const Op* op, int k) noexcept nogil:
    """The offset of operand k (0: a, 1: b, 2: c)."""
    return op.a if k == 0 else (op.b if k == 1 else op.c)


cdef inline bint opnd_const(const Op* op, int k) noexcept nogil:
    """Is operand k (0: a, 1: b, 2: c) in the constant buffer (FLAG_A/B/C_CONST = 1 << k)?"""
    return (op.flags >> k) & 1


def _tile_length(str fn, tile):
    """A tile length given to set_tiling / set_fusing: a multiple of 4, at least 16."""
    if int(tile) < 16 or int(tile) % 4:
        raise ValueError(f"{fn}: tile must be a multiple of 4, at least 16")
    return int(tile)


def _switched_off(str var):
    """Is the environment variable var set to turn a sweep feature off?"""
    return _os.environ.get(var, "1") in ("0", "off", "no", "false")


cdef extern from *:
    """
    static int tg_cpu_has_avx2(void) {
    #if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2");
    #else
        return 0;
    #endif
    }
    #ifdef __AVX2__
    #define TG_SIMD_NAME "avx2"
    #else
    #define TG_SIMD_NAME "base"
    #endif
    #ifdef TAPEGRAD_DEBUG_BUILD
    #define TG_SWEEPS_DEBUG 1
    #else
    #define TG_SWEEPS_DEBUG 0
    #endif
    """
    int tg_cpu_has_avx2()
    const char* TG_SIMD_NAME
    int TG_SWEEPS_DEBUG

# the instruction set this module's loops were compiled for ("base" or "avx2")
SIMD = TG_SIMD_NAME.decode()
DEBUG_BUILD = bool(TG_SWEEPS_DEBUG)


def cpu_has_avx2():
    """Does this CPU (and its operating system) support AVX2?"""
    return bool(tg_cpu_has_avx2())


import os as _os


# ------------------------------------------------------------------ guards
cdef bint guards_hold(const int64_t* g, Py_ssize_t ng, const CPool* cv,
                      const double* w) noexcept nogil:
    cdef Py_ssize_t j, i
    cdef double u, v
    for j in range(0, ng, 3):
        for i in range(g[j + 1]):
            u = w[g[j] + i]
            v = cv.vals[g[j + 2] + i]     # (expected values: the tape's own)
            if u != v and not (u != u and v != v):
                return False
    return True


# Lanes (tangent lanes, reverse-Jacobian lanes) at or above LANE_CHUNK_MIN take chunked loops:
# an op's local derivatives for LANE_CHUNK elements at a time, then one contiguous loop per lane
# (the per-element loop walks the lanes at stride S, one cache line per lane and element)
cdef enum:
    LANE_CHUNK = 256
cdef Py_ssize_t LANE_CHUNK_MIN = 4


# ------------------------------------------------------------------ the sweeps, one file each
include "sweep_forward.pxi"
include "sweep_reverse.pxi"
include "sweep_tangent.pxi"
include "sweep_tor.pxi"
include "sweep_threads.pxi"
include "sweep_tiling.pxi"
include "sweep_fused.pxi"
include "sweep_calls.pxi"


# ------------------------------------------------------------------ Python entry points
# Every entry point starts with open_tape: the tape validated once, then viewed as a TapeView
# with the switches in force (tiling, fusing), so the sweeps below take one pointer.
cdef int open_tape(Tape t, TapeView* tv) except -1:
    if not t.validated:
        t.validate()
    tv.ops = t.ops
    tv.nops = t.nops
    tv.ipool = t.ipool
    tv.cv = t.pool_view()
    tv.cbs = <PyObject*> t.callbacks
    tv.segs = t.segs
    tv.nsegs = tiling_nsegs(t)
    tv.guards = t.guards
    tv.nguard = t.nguard
    tv.nwork = t.nwork
    tv.nin = t.nin
    tv.out_off = t.out_off
    tv.out_n = t.out_n
    tv.fuse_k0 = fused_k0(t)
    tv.fuse_sum = t.fuse_sum
    tv.outs_apart = t.outs_apart
    tv.nthreads = par_threads()
    return 0


def forward(Tape t, const double[::1] x, double[::1] w=None):
    """Evaluate the tape at x (size t.nin); returns the work buffer of all values."""
    cdef TapeView tv
    open_tape(t, &tv)
    if x.shape[0] != t.nin:
        raise ValueError(f"forward: expected {t.nin} input values, got {x.shape[0]}")
    if w is None:
        w = np.empty(max(t.nwork, 1))
    elif w.shape[0] < t.nwork:
        raise ValueError("forward: work buffer too small")
    if t.nin:
        memcpy(&w[0], &x[0], t.nin * sizeof(double))
    with nogil:
        forward_sweep(&tv, &w[0])
    return np.asarray(w)


def matmul_value(const double[::1] a, const double[::1] b, double[::1] y, Py_ssize_t nb,
                 Py_ssize_t M, Py_ssize_t K, Py_ssize_t N, Py_ssize_t sa, Py_ssize_t sb,
                 bint ta=False, bint tb=False):
    """y = the nb products A_i B_i (M x K by K x N; A_i at a[i sa:], B_i at b[i sb:], a stride
    0 for a broadcast operand) as the forward sweep computes a matmul op: a recording's
    product is the replay's, by the sweeps' BLAS. ta (tb): a holds A_i transposed (K x M),
    as a transposed view of a C-ordered array is laid out (its product by BLAS's transposed
    flag, no copy). (NumPy's matmul would run NumPy's own copy of OpenBLAS: two BLAS thread
    pools taking turns within one gradient keep each other's spinning threads on the cores,
    several times slower than either alone.)"""
    cdef Op op
    cdef Py_ssize_t bt, big = 2147483647
    if nb < 0 or M < 0 or K < 0 or N < 0 or sa < 0 or sb < 0:
        raise ValueError("matmul_value: negative size or stride")
    if M > big or K > big or N > big or M * K > big or K * N > big or M * N > big:
        raise ValueError(f"matmul_value: {M} x {K} by {K} x {N} exceeds BLAS's int sizes")
    if nb and (a.shape[0] < (nb - 1) * sa + M * K or b.shape[0] < (nb - 1) * sb + K * N
               or y.shape[0] < nb * M * N):
        raise ValueError("matmul_value: an operand or the result is smaller than its shape")
    if nb == 0 or M == 0 or N == 0:
        return
    if K == 0:
        y[:nb * M * N] = 0.0
        return
    op.p[0], op.p[1], op.p[2], op.p[3], op.p[4], op.p[5] = nb, M, K, N, sa, sb
    with nogil:
        for bt in range(nb):
            if ta or tb:
                gemm_rm(b'T' if ta else b'N', b'T' if tb else b'N', <int>M, <int>N, <int>K, 1.0,
                        &a[0] + bt * sa, <int>(M if ta else K), &b[0] + bt * sb,
                        <int>(K if tb else N), 0.0, &y[0] + bt * M * N, <int>N)
            else:
                mm_value(&op, bt, 1.0, &a[0], &b[0], 0.0, &y[0])


def logaddexp_values(const double[::1] a, const double[::1] b, double[::1] y):
    """y = logaddexp(a, b) as the forward sweep computes it (logaddexp_value): a and b of
    y's size or of one value (broadcast). What a recording of np.logaddexp computes, in one
    pass of NumPy's exp and log1p loops over y and two of C."""
    cdef Py_ssize_t n = y.shape[0]
    cdef int ka = 1 if a.shape[0] == 1 else 0, kb = 1 if b.shape[0] == 1 else 0
    if (a.shape[0] != n and a.shape[0] != 1) or (b.shape[0] != n and b.shape[0] != 1):
        raise ValueError(f"logaddexp_values: operands of {a.shape[0]} and {b.shape[0]} values "
                         f"for {n} results")
    if n == 0:
        return
    with nogil:
        logaddexp_value(&a[0], ka, &b[0], kb, &y[0], n)


def guards_ok(Tape t, const double[::1] w):
    cdef TapeView tv
    open_tape(t, &tv)
    if w.shape[0] < t.nwork:
        raise ValueError("guards_ok: work buffer too small")
    cdef bint ok
    with nogil:
        ok = guards_hold(tv.guards, tv.nguard, tv.cv, &w[0])
    return ok


def reverse(Tape t, const double[::1] w, const double[::1] seed, double[::1] wb=None):
    """Adjoints of every slot for the output cotangent ``seed``; returns the adjoint buffer."""
    cdef TapeView tv
    open_tape(t, &tv)
    if w.shape[0] < t.nwork or seed.shape[0] != t.out_n:
        raise ValueError(f"reverse: expected a work buffer of {t.nwork} and a seed of {t.out_n}")
    if wb is None:
        wb = np.zeros(max(t.nwork, 1))
    else:
        if wb.shape[0] < t.nwork:
            raise ValueError("reverse: adjoint buffer too small")
        with nogil:
            par_zero(&wb[0], wb.shape[0], tv.nthreads)
    cdef Py_ssize_t i
    for i in range(t.out_n):
        wb[t.out_off + i] += seed[i]
    with nogil:
        reverse_sweep(&tv, &w[0], &wb[0])
    return np.asarray(wb)


# lanes of a reverse Jacobian swept together: at most this many bytes of adjoint lanes
cdef Py_ssize_t JAC_REV_BYTES = 1 << 25


def jacobian_rev(Tape t, const double[::1] w, double[:, ::1] J):
    """J[i] = the gradient of output i: reverse sweeps with one cotangent lane per output row
    (reverse_lanes, lanes in chunks of at most JAC_REV_BYTES), all in one call (no Python
    between rows). J has shape (out_n, nin)."""
    cdef TapeView tv
    open_tape(t, &tv)
    cdef Py_ssize_t S = max(t.nwork, 1), i, i0 = 0, L, C
    if w.shape[0] < t.nwork or J.shape[0] != t.out_n or J.shape[1] != t.nin:
        raise ValueError(f"jacobian_rev: expected a work buffer of {t.nwork} and J of shape "
                         f"({t.out_n}, {t.nin})")
    C = max(1, min(t.out_n, JAC_REV_BYTES // (S * <Py_ssize_t> sizeof(double))))
    cdef double* wb = <double*> malloc(C * S * sizeof(double))
    if wb == NULL:
        raise MemoryError()
    try:
        with nogil:
            while i0 < t.out_n:
                L = t.out_n - i0 if t.out_n - i0 < C else C
                memset(wb, 0, L * S * sizeof(double))
                for i in range(L):
                    wb[i * S + t.out_off + i0 + i] = 1.0
                reverse_lanes(&tv, &w[0], wb, L, S)
                if t.nin:
                    for i in range(L):
                        memcpy(&J[i0 + i, 0], wb + i * S, t.nin * sizeof(double))
                i0 += L
    finally:
        free(wb)
    return np.asarray(J)


def tangent(Tape t, const double[::1] w, const double[:, ::1] xd, double[:, ::1] wd=None,
            Py_ssize_t unit=-1):
    """Tangent sweep with L = xd.shape[0] lanes; returns the (L, nwork) tangent buffer (wd if
    given: a buffer the caller keeps from call to call). unit >= 0 says that xd's rows are the
    unit vectors e_(unit + l) (checked), which lets products with the inputs copy instead of
    multiply (tangent_sweep_unit)."""
    cdef TapeView tv
    open_tape(t, &tv)
    cdef Py_ssize_t L = xd.shape[0], S = max(t.nwork, 1), l
    if w.shape[0] < t.nwork or xd.shape[1] != t.nin:
        raise ValueError(f"tangent: expected tangents of shape (L, {t.nin})")
    if wd is None:
        wd = np.empty((L, S))
    elif wd.shape[0] != L or wd.shape[1] != S:
        raise ValueError(f"tangent: the tangent buffer must have shape ({L}, {S})")
    cdef Py_ssize_t j
    for l in range(L):
        if t.nin:
            memcpy(&wd[l, 0], &xd[l, 0], t.nin * sizeof(double))
        if unit >= 0:
            for j in range(t.nin):
                if xd[l, j] != (1.0 if j == unit + l else 0.0):
                    raise ValueError(f"tangent: unit={unit} but tangent row {l} is not the "
                                     f"unit vector e_{unit + l}")
    if L:
        with nogil:
            tangent_sweep_unit(&tv, &w[0], &wd[0, 0], L, S, unit)
    return np.asarray(wd)


def tangent_of_reverse(Tape t, const double[::1] w, const double[:, ::1] wd,
                       const double[::1] wb, const double[:, ::1] seed_dot=None):
    """Tangents of the adjoints (forward over reverse); returns (L, nwork)."""
    cdef TapeView tv
    open_tape(t, &tv)
    cdef Py_ssize_t L = wd.shape[0], S = max(t.nwork, 1), l, i
    if w.shape[0] < t.nwork or wd.shape[1] != S or wb.shape[0] < t.nwork:
        raise ValueError("tangent_of_reverse: buffer sizes do not match the tape")
    cdef double[:, ::1] wbd = np.zeros((L, S))
    if seed_dot is not None:
        if seed_dot.shape[0] != L or seed_dot.shape[1] != t.out_n:
            raise ValueError("tangent_of_reverse: bad seed_dot shape")
        for l in range(L):
            for i in range(t.out_n):
                wbd[l, t.out_off + i] += seed_dot[l, i]
    if L:
        with nogil:
            tor_sweep(&tv, &w[0], &wd[0, 0], &wb[0], &wbd[0, 0], L, S)
    return np.asarray(wbd)


cdef int reverse_seeded(const TapeView* tv, const double* w, double* wb, double* g,
                        bint clean) except -1 nogil:
    """The reverse sweep of a scalar output seeded with 1, g = the inputs' adjoints. clean: wb
    arrives all zero and is left so; on a tape with outs_apart the sweep clears each adjoint
    after its use (reverse_lanes' clean mode), otherwise wb is cleared before the sweep, and
    after it if clean."""
    cdef bint lazy = clean and tv.outs_apart
    if not lazy:
        par_zero(wb, tv.nwork, tv.nthreads)
    wb[tv.out_off] = 1.0
    reverse_lanes(tv, w, wb, 1, 0, lazy)
    if tv.nin:
        memcpy(g, wb, tv.nin * sizeof(double))
    if lazy:
        # what the sweep did not clear: the inputs' adjoints and the seed's slot (when no op
        # writes it)
        memset(wb, 0, tv.nin * sizeof(double))
        wb[tv.out_off] = 0.0
    elif clean:
        par_zero(wb, tv.nwork, tv.nthreads)
    return 0


def value_and_grad(Tape t, const double[::1] x, double[::1] w, double[::1] wb, double[::1] g,
                   bint value=True, bint clean=False):
    """Fused scalar-output gradient into caller-owned buffers; returns (value, guards held).
    value=False: the value may be left uncomputed (NaN is returned) when that saves work.
    clean: wb arrives all zero and is left all zero (a buffer kept for such calls alone): a
    tape with outs_apart and no fused tail then clears each adjoint after its use, in cache,
    instead of the whole buffer before the sweep; a fused tail's sweep clears what it wrote
    (the slots outside the tail's outputs) after it; other tapes the whole buffer after."""
    cdef TapeView tv
    open_tape(t, &tv)
    if (x.shape[0] != t.nin or w.shape[0] < t.nwork or wb.shape[0] < t.nwork
            or g.shape[0] != t.nin or t.out_n != 1):
        raise ValueError("value_and_grad: buffer sizes do not match the tape")
    cdef bint ok
    cdef double val
    cdef const double* xp = &x[0] if t.nin else NULL
    cdef double* gp = &g[0] if t.nin else NULL
    try:
        with nogil:
            if tv.fuse_k0 >= 0:
                grad_fused(&tv, xp, gp, &w[0], &wb[0], value, &ok, clean)
                val = w[t.out_off] if value or t.nguard else NAN
            else:
                if t.nin:
                    memcpy(&w[0], &x[0], t.nin * sizeof(double))
                forward_sweep(&tv, &w[0])
                ok = guards_hold(tv.guards, tv.nguard, tv.cv, &w[0])
                val = w[t.out_off]
                if ok or not clean:       # (a clean buffer stays untouched: no gradient)
                    reverse_seeded(&tv, &w[0], &wb[0], gp, clean)
    except BaseException:
        if clean:
            wb[:] = 0.0
        raise
    return val, ok


def grad_at_values(Tape t, double[::1] w, const unsigned char[::1] skip, double[::1] wb,
                   double[::1] g, bint clean=False):
    """Gradient of a scalar-output tape whose work buffer w already holds the inputs and the
    values of the ops with skip[k] set (those a recording computed: operators' re-traced
    grad): the forward sweep of the other ops, then the reverse sweep into wb; g (nin)
    receives the gradient. Returns the value w[out_off]. clean: as value_and_grad's."""
    cdef TapeView tv
    open_tape(t, &tv)
    if (w.shape[0] < t.nwork or wb.shape[0] < t.nwork or g.shape[0] != t.nin
            or t.out_n != 1 or skip.shape[0] != t.nops):
        raise ValueError(f"grad_at_values: buffer sizes do not match the tape (work {t.nwork}, "
                         f"{t.nops} ops, {t.nin} inputs, a scalar output)")
    try:
        with nogil:
            forward_sweep_skip(&tv, &w[0], &skip[0] if t.nops else NULL)
            reverse_seeded(&tv, &w[0], &wb[0], &g[0] if t.nin else NULL, clean)
    except BaseException:
        if clean:
            wb[:] = 0.0
        raise
    return w[t.out_off]


def hvp(Tape t, const double[::1] w, const double[:, ::1] V, double[:, ::1] wd=None,
        double[::1] wb=None, double[:, ::1] wbd=None):
    """H v for each row v of V (scalar output): tangent sweep, reverse sweep and
    tangent-of-reverse in one call; returns an (L, nin) view of wbd. wd, wb, wbd: optional
    work buffers ((L, nwork), (nwork,), (L, nwork)) the caller keeps from call to call (fresh
    ones of this size cost page faults on every call)."""
    cdef TapeView tv
    open_tape(t, &tv)
    cdef Py_ssize_t L = V.shape[0], S = max(t.nwork, 1), l
    if t.out_n != 1 or w.shape[0] < t.nwork or V.shape[1] != t.nin:
        raise ValueError(f"hvp: expected a scalar-output tape and V of shape (L, {t.nin})")
    if wd is None or wb is None or wbd is None:
        wd = np.empty((L, S))
        wb = np.zeros(S)
        wbd = np.zeros((L, S))
    elif (wd.shape[0] != L or wd.shape[1] != S or wb.shape[0] != S or wbd.shape[0] != L
            or wbd.shape[1] != S):
        raise ValueError("hvp: work buffers do not match the tape and the number of lanes")
    else:
        with nogil:
            memset(&wb[0], 0, S * sizeof(double))
            if L:
                memset(&wbd[0, 0], 0, L * S * sizeof(double))
    for l in range(L):
        if t.nin:
            memcpy(&wd[l, 0], &V[l, 0], t.nin * sizeof(double))
    wb[t.out_off] = 1.0
    if L:
        with nogil:
            tangent_sweep(&tv, &w[0], &wd[0, 0], L, S)
            reverse_sweep(&tv, &w[0], &wb[0])
            tor_sweep(&tv, &w[0], &wd[0, 0], &wb[0], &wbd[0, 0], L, S)
    return np.asarray(wbd)[:, :t.nin]


def hvp_fast(Tape t, object x, object v, object shape):
    """H(x) v for a scalar tape that is one fused tail read straight from the inputs
    (hvp_fused), for x and v C-contiguous float64 ndarrays of the given shape. Returns H v (an
    array of that shape), or None when the tape or the arguments do not qualify (the caller
    takes the general path: forward, tangent, reverse and tangent-of-reverse sweeps)."""
    cdef TapeView tv
    open_tape(t, &tv)
    if not FUSING or tv.fuse_k0 < 0 or not hvp_fusable(&tv):
        return None
    for a in (x, v):
        if (type(a) is not np.ndarray or cnp.PyArray_TYPE(<cnp.ndarray> a) != cnp.NPY_DOUBLE
                or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray> a)
                or cnp.PyArray_SIZE(<cnp.ndarray> a) != t.nin or a.shape != shape):
            return None
    cdef cnp.ndarray h = np.zeros(shape)
    cdef const double* xp = <const double*> cnp.PyArray_DATA(<cnp.ndarray> x)
    cdef const double* vp = <const double*> cnp.PyArray_DATA(<cnp.ndarray> v)
    cdef double* hp = <double*> cnp.PyArray_DATA(h)
    with nogil:
        hvp_fused(&tv, xp, vp, hp, 1)
    return h


# Above this many work slots the per-thread buffers of the general path win: fresh large
# allocations come from mmap and cost page faults on every call.
cdef Py_ssize_t GRAD_FAST_MAX_WORK = 1 << 14   # 128 kB buffers: below malloc's mmap threshold
cdef Py_ssize_t VALUE_FAST_MAX_WORK = 1 << 15  # one buffer (no adjoints)


def grad_fast(Tape t, object x, object shape, bint with_value=False):
    """Gradient of a scalar-output tape at x for the common case, with no Python-level buffers:
    x must be a C-contiguous float64 ndarray with t.nin values. Returns the gradient (an array
    of the given shape), or None when x does not qualify or a guard flipped (the caller then
    takes the general path); with_value: (gradient, value) or None. Small work buffers come
    from malloc, so the call is thread-safe."""
    cdef TapeView tv
    open_tape(t, &tv)
    if (type(x) is not np.ndarray or cnp.PyArray_TYPE(<cnp.ndarray> x) != cnp.NPY_DOUBLE
            or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray> x)
            or cnp.PyArray_SIZE(<cnp.ndarray> x) != t.nin or t.out_n != 1 or x.shape != shape
            or t.nwork > GRAD_FAST_MAX_WORK):
        return None
    cdef Py_ssize_t S = max(t.nwork, 1)
    cdef cnp.ndarray g = np.empty(shape)
    # one block: values, then the partials of the scalar path (2 per op)
    cdef double* w = <double*> malloc((S + 2 * t.nops) * sizeof(double))
    cdef double* wb = <double*> calloc(S, sizeof(double))
    cdef const double* xp = <const double*> cnp.PyArray_DATA(<cnp.ndarray> x)
    cdef double* gp = <double*> cnp.PyArray_DATA(g)
    cdef bint ok = False
    cdef double val = NAN
    if w == NULL or wb == NULL:
        free(w)
        free(wb)
        raise MemoryError()
    try:
        with nogil:
            if tv.fuse_k0 >= 0:
                grad_fused(&tv, xp, gp, w, wb, with_value, &ok)
            elif tv.nsegs == 0:
                if t.nin:
                    memcpy(w, xp, t.nin * sizeof(double))
                grad_partials(&tv, w, wb, w + S, &ok)
                if ok and t.nin:
                    memcpy(gp, wb, t.nin * sizeof(double))
            else:
                if t.nin:
                    memcpy(w, xp, t.nin * sizeof(double))
                forward_sweep(&tv, w)
                ok = guards_hold(tv.guards, tv.nguard, tv.cv, w)
                if ok:
                    wb[t.out_off] = 1.0
                    reverse_sweep(&tv, w, wb)
                    if t.nin:
                        memcpy(gp, wb, t.nin * sizeof(double))
            if ok:
                val = w[t.out_off]
    finally:
        free(w)
        free(wb)
    if not ok:
        return None
    return (g, val) if with_value else g


def value_fast(Tape t, object x, object shape, object out_shape):
    """f(x) for the common case, like grad_fast: x a C-contiguous float64 ndarray of the given
    shape. Returns a float for a scalar output, else a new array of out_shape; None when x does
    not qualify or a guard flipped (the caller takes the general path)."""
    cdef TapeView tv
    open_tape(t, &tv)
    if (type(x) is not np.ndarray or cnp.PyArray_TYPE(<cnp.ndarray> x) != cnp.NPY_DOUBLE
            or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray> x)
            or cnp.PyArray_SIZE(<cnp.ndarray> x) != t.nin or x.shape != shape):
        return None
    cdef Py_ssize_t S = max(t.nwork, 1)
    cdef const double* xp = <const double*> cnp.PyArray_DATA(<cnp.ndarray> x)
    cdef bint ok = False
    cdef cnp.ndarray y
    cdef double val
    if out_shape == () and FUSING and tv.fuse_k0 >= 0 and hvp_fusable(&tv):
        # one elementwise run summed, read from x: its fused forward, no work buffer at all
        with nogil:
            val = value_fused(&tv, xp)
        return val
    if t.nwork > VALUE_FAST_MAX_WORK:
        return None
    cdef double* w = <double*> malloc(S * sizeof(double))
    if w == NULL:
        raise MemoryError()
    try:
        with nogil:
            if t.nin:
                memcpy(w, xp, t.nin * sizeof(double))
            forward_sweep(&tv, w)
            ok = guards_hold(tv.guards, tv.nguard, tv.cv, w)
        if not ok:
            return None
        if out_shape == ():
            return w[t.out_off]
        y = np.empty(out_shape)
        if t.out_n:
            memcpy(<double*> cnp.PyArray_DATA(y), w + t.out_off, t.out_n * sizeof(double))
        return y
    finally:
        free(w)


# ------------------------------------------------------------------ batched replay
include "sweep_batch.pxi"
