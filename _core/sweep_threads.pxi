# Threads: large sweeps split their elements over an OpenMP thread pool (Cython's prange; the
# build adds -fopenmp where the compiler has it, else the same loops run serially).
#
# - What is split: the tiled forward and reverse segments (sweep_tiling.pxi), the fused
#   gradient tail and the fused Hessian-vector product (sweep_fused.pxi), and in the op-by-op
#   forward and reverse sweeps one large op at a time where no cut can change a number
#   (elementwise ops, row sums, transposes: the end of this file). The adjoint buffer of a
#   reverse sweep is cleared in chunks too. The tangent sweeps stay serial, and so does the
#   batched replay, which splits its points over its own pool (operators/batch.py).
# - Chunks, not threads: a run of n elements is cut into chunks of PAR_CHUNK elements (the
#   last takes the remainder, PAR_CHUNK to 2 PAR_CHUNK - 1), tiles counted from each chunk's
#   start. The cut depends on n alone, never on the thread count, and threads take whole
#   chunks. Runs shorter than 2 PAR_CHUNK are one chunk: small tapes never start a thread.
# - Sums: a full sum of m >= 2 PAR_CHUNK values is a blocked sum everywhere, the op-by-op
#   OP_SUM included (sum_contiguous): each chunk's four partial sums are combined into one
#   number, then the chunks' numbers are added in chunk order. So a folded or fused sum is the
#   same number whatever the thread count, and still the op-by-op sum.
# - Adjoints added by two chunks: each tile writes only its own elements of the values and of
#   the adjoints of its outputs, but the adjoints of external operands (inputs, earlier results)
#   can be shared. Two reads of one region at different offsets (x[1:] and x[:-1] in the
#   Rosenbrock function) make the last tile of a chunk and the first tile of the next add into
#   the same elements. When that shift is at most a tile and chunks hold at least 4 tiles, only
#   those edge tiles can collide: the fused sweeps give every shifted operand of an edge tile a
#   private row (started at -0.0, the additive identity, so a row holds the contributions
#   themselves), and after the parallel loop the rows are added in a fixed order (chunk, first
#   tile then last, op, operand). This runs whatever the thread count, so the bits do not
#   depend on it; an edge element may differ in rounding from the sweep without chunks (the
#   fused sweeps already promise only that). A scalar operand whose adjoint sums over the whole
#   run, or a shift longer than a tile, keeps the chunks but runs them serially. The tiled
#   segments promise the op-by-op sweep's bits, so their reverse runs in parallel only when no
#   two chunks can add into one element (no shifted or scalar external operand with an
#   adjoint); otherwise serially.
# - The gradient array of a fused tail read straight from the inputs is cleared by the chunks
#   themselves (each its own part, before its first write) when every operand read from it lies
#   at an offset in [0, T]: then all of those are held on edge tiles and a chunk's other tiles
#   write only inside its part (FuseRun.zero_in), which saves a pass over the array.
# - Scratch: each thread allocates its own tile scratch for the parallel loop; results land in
#   the caller's buffers, so one tape may still be replayed from several Python threads at once
#   (each call opens its own team).
# - The count: NUM_THREADS (default 1: no team unless asked, so nothing changes for code that
#   already runs its own threads or processes, and a busy machine, where a team waits for its
#   slowest thread, costs nothing), set by TAPEGRAD_NUM_THREADS at import ("auto":
#   the cores this process may use) and by set_num_threads. Both compiled sweeps modules (the
#   baseline and the AVX2 build) keep their own copy; tapegrad.set_num_threads sets both.

cdef extern from *:
    """
    #ifdef _OPENMP
    #define TG_OPENMP 1
    #else
    #define TG_OPENMP 0
    #endif
    """
    int TG_OPENMP

# was the module built with OpenMP (else every sweep runs serially)
OPENMP = bool(TG_OPENMP)
cdef int NUM_THREADS = 1


def usable_cores():
    """The number of cores this process may run on (its CPU affinity where the system has it)."""
    try:
        return max(1, len(_os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, _os.cpu_count() or 1)


def _thread_count(str fn, n):
    """n checked as a thread count: an integer (not a bool) of at least 1."""
    if isinstance(n, bool) or not hasattr(n, "__index__"):
        raise TypeError(f"{fn}: the thread count must be an integer, got {n!r}")
    n = n.__index__()
    if n < 1:
        raise ValueError(f"{fn}: the thread count must be at least 1, got {n}")
    return int(n)


def set_num_threads(n):
    """Threads for the large sweeps of this module (see sweep_threads.pxi); returns the previous
    count. Results are the same bits for every count."""
    global NUM_THREADS
    prev = int(NUM_THREADS)
    NUM_THREADS = min(_thread_count("set_num_threads", n), 1 << 16)
    return prev


def get_num_threads():
    """The thread count the large sweeps use: the count set, or 1 without OpenMP."""
    return int(NUM_THREADS) if TG_OPENMP else 1


def _threads_from_env():
    v = _os.environ.get("TAPEGRAD_NUM_THREADS", "").strip()
    if not v:
        return 1
    if v.lower() == "auto":
        return usable_cores()
    try:
        n = int(v)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"TAPEGRAD_NUM_THREADS must be a positive integer or 'auto', got {v!r}")
    return n


NUM_THREADS = _threads_from_env()


cdef inline int par_threads() noexcept nogil:
    return NUM_THREADS if TG_OPENMP else 1


cdef inline Py_ssize_t n_chunks(Py_ssize_t n) noexcept nogil:
    """How many chunks a run of n elements is cut into (1: below the threshold)."""
    return n // PAR_CHUNK if n >= 2 * PAR_CHUNK else 1


cdef inline Py_ssize_t chunk_end(Py_ssize_t c, Py_ssize_t nch, Py_ssize_t n) noexcept nogil:
    return n if c == nch - 1 else (c + 1) * PAR_CHUNK


cdef inline Py_ssize_t last_tile_start(Py_ssize_t cl, Py_ssize_t T) noexcept nogil:
    """Where the last tile of a run of cl elements starts (tiles of T, the last T to 2T - 1)."""
    cdef Py_ssize_t s = (cl // T - 1) * T
    return s if s > 0 else 0


cdef void par_zero(double* p, Py_ssize_t m, int nt) noexcept nogil:
    """p[0:m] = 0, split over nt threads when long (a fresh gradient array's first touch)."""
    cdef Py_ssize_t c, nch = n_chunks(m)
    if nch == 1 or nt <= 1:
        memset(p, 0, m * sizeof(double))
        return
    for c in prange(nch, num_threads=nt, schedule="static"):
        memset(p + c * PAR_CHUNK, 0, (chunk_end(c, nch, m) - c * PAR_CHUNK) * sizeof(double))


# ------------------------------------------------------------------ one large op, op by op
# A large op of the op-by-op sweeps (outside tiling segments: broadcasts, row sums, the
# elementwise ops between matrix products) is split into chunks over the team when each
# element's value or adjoint is computed exactly as in the whole op, whatever the cut:
# - elementwise ops whose operands are full, one value, or a row repeating with a period
#   (x @ W + b; the forward only): chunks start at multiples of the period, so a chunk is
#   the same op on shifted pointers (tile_op);
# - their adjoints when no two chunks add into one element: every operand with an adjoint is
#   full, and two such operands read one region at the same offset or disjoint regions (a
#   one-value or repeating operand's adjoint sums over the run: serial);
# - sums over contiguous rows (post 1), in whole rows, both ways;
# - matrix transposes (one plane), in row ranges of the matrix read, both ways (each element
#   is moved or added once).
# Chunks of about PAR_CHUNK elements, cut by the op alone (never by the thread count), so
# the bits are the serial sweep's for every count.

cdef Py_ssize_t op_par_unit(const Op* op, bint rev) noexcept nogil:
    """The quantum (elements) at which chunk starts of an elementwise op may lie, 0: keep the
    op whole (too short, or a chunk could change a value or race on an adjoint)."""
    cdef Py_ssize_t n = op.n, unit = 1, per
    cdef int kind, r
    cdef int64_t div, mod, offs[2]
    cdef bint live[2]
    if n < 2 * PAR_CHUNK or op.code > BIN_LAST:
        return 0
    if op.code <= UN_LAST:
        return 1
    for r in range(2):
        div, mod = op.p[2 * r], op.p[2 * r + 1]
        kind = bkind(div, mod, n)
        live[r] = not (op.flags & (FLAG_A_CONST if r == 0 else FLAG_B_CONST))
        offs[r] = op.a if r == 0 else op.b
        if kind == 0:
            continue
        if rev and live[r]:
            return 0                # its adjoint is a sum over the run
        if kind == 2:
            per = div * mod
            if per > PAR_CHUNK or per <= 0:
                return 0
            if per % unit == 0:
                unit = per
            elif unit % per != 0:
                return 0
    if rev and live[0] and live[1] and offs[0] != offs[1] and (
            offs[0] < offs[1] + n and offs[1] < offs[0] + n):
        return 0                    # x[1:] * x[:-1]: two chunks would add into one element
    return unit


cdef inline bint op_rows_par(const Op* op) noexcept nogil:
    """A sum over contiguous rows long enough to split by rows."""
    return (op.code == OP_SUM and op.p[2] == 1 and op.p[0] >= 2
            and op.p[0] * op.p[1] >= 2 * PAR_CHUNK)


cdef inline void op_part(const Op* op, Op* top, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """top = op restricted to elements [lo, hi) (rows of a row sum)."""
    if op.code == OP_SUM:
        top[0] = op[0]
        top.n = hi - lo
        top.p[0] = hi - lo
        top.out = op.out + lo
        top.a = op.a + lo * op.p[1]
    else:
        tile_op(op, top, lo, hi - lo)


cdef inline bint op_plane_par(const Op* op) noexcept nogil:
    """A matrix transpose (one plane, single elements) long enough to split by rows."""
    return (op.code == OP_TRANSPOSE and op.p[0] == 1 and op.p[3] == 1
            and op.n >= 2 * PAR_CHUNK)


cdef inline Py_ssize_t op_par_len(const Op* op, bint rev) noexcept nogil:
    """What the chunks of a large op count: rows of a row sum, rows of the matrix a transpose
    reads (its operand forward, its result's adjoint in reverse), else elements."""
    if op.code == OP_SUM:
        return op.p[0]
    if op.code == OP_TRANSPOSE:
        return op.p[2] if rev else op.p[1]
    return op.n


cdef inline void op_forward_part(const TapeView* tv, const Op* op, double* w, Py_ssize_t lo,
                                 Py_ssize_t hi) noexcept nogil:
    cdef Op top
    if op.code == OP_TRANSPOSE:
        swap_plane(opnd(w, tv.cv, op.a, op.flags, FLAG_A_CONST), w + op.out, op.p[1], op.p[2],
                   lo, hi, False)
        return
    op_part(op, &top, lo, hi)
    forward_op(&top, tv.ipool, opnd(w, tv.cv, top.a, top.flags, FLAG_A_CONST),
               opnd(w, tv.cv, top.b, top.flags, FLAG_B_CONST),
               opnd(w, tv.cv, top.c, top.flags, FLAG_C_CONST), w + top.out)


cdef inline void op_reverse_part(const TapeView* tv, const Op* op, const double* w, double* wb,
                                 Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Op top
    if op.code == OP_TRANSPOSE:
        swap_plane(wb + op.out, wb + op.a, op.p[2], op.p[1], lo, hi, True)
        return
    op_part(op, &top, lo, hi)
    reverse_op(tv, &top, w, wb)     # (elementwise ops and sums: nothing to raise)


cdef inline Py_ssize_t op_par_step(const Op* op, bint rev) noexcept nogil:
    """Elements (rows of a row sum) per chunk of a large op, 0: not split (see above)."""
    cdef Py_ssize_t unit, width
    if op_rows_par(op):
        return PAR_CHUNK // op.p[1] if op.p[1] < PAR_CHUNK else 1
    if op_plane_par(op):
        width = op.p[1] if rev else op.p[2]        # elements per row of the matrix read
        unit = (PAR_CHUNK // width) // 32 * 32
        return unit if unit > 32 else 32
    unit = op_par_unit(op, rev)
    return (PAR_CHUNK // unit) * unit if unit else 0


cdef bint op_par(const TapeView* tv, const Op* op, double* w, double* wb, bint rev) noexcept nogil:
    """One large op in chunks over the team: its forward into w, or (rev) its adjoint into wb.
    False: not split (the caller runs it whole)."""
    cdef Py_ssize_t c, nch, step, n
    if tv.nthreads <= 1 or (rev and (op.flags & FLAG_A_CONST) and (
            op.code <= UN_LAST or op.code == OP_SUM or op.code == OP_TRANSPOSE
            or op.flags & FLAG_B_CONST)):
        return False                # (one thread, or no adjoint to add)
    step = op_par_step(op, rev)
    if step == 0:
        return False
    n = op_par_len(op, rev)
    nch = n // step
    if nch < 2:
        return False
    for c in prange(nch, num_threads=tv.nthreads, schedule="static"):
        if rev:
            op_reverse_part(tv, op, w, wb, c * step, n if c == nch - 1 else (c + 1) * step)
        else:
            op_forward_part(tv, op, w, c * step, n if c == nch - 1 else (c + 1) * step)
    return True
