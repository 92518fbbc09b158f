# Batched replay: one tape at many points in one compiled call (operators/batch.py drives it).
# Row i of X is point i's flat input; rows [lo, hi) are swept here, one point after the other,
# with the GIL released, in work buffers that belong to this call (so several threads may each
# sweep their own rows of the same arrays at once). Each point runs exactly the sweeps of the
# one-point entry it mirrors (value_fast / forward, grad_fast, value_and_grad, tangent, hvp),
# so a batch gives the bits of a loop of one-point replays. After each point's forward sweep its
# guards are checked; ok[i] = 0 marks a point whose branches differ from the tape's, its results
# left unwritten (the caller replays it with another variant).
cdef enum:
    BATCH_VALUE = 0     # Y[i] = f(x_i)
    BATCH_GRAD = 1      # Y[i, 0] = f(x_i) (if value), D[i] = grad f(x_i)
    BATCH_JVP = 2       # Y[i] = f(x_i), D[i] = J(x_i) v_i
    BATCH_HVP = 3       # D[i] = H(x_i) v_i

BATCH_KINDS = {"value": BATCH_VALUE, "grad": BATCH_GRAD, "jvp": BATCH_JVP, "hvp": BATCH_HVP}


cdef int batch_point(const TapeView* tv, int kind, bint fast, bint value, const double* x,
                     const double* v, double* y, double* d, double* w, double* wb, double* wd,
                     double* wbd, Py_ssize_t S, bint* ok) except -1 nogil:
    """One point of a batch; w has room for S + 2 nops values (the partials of grad_fast),
    wb, wd, wbd for S each."""
    cdef Py_ssize_t nin = tv.nin
    if kind == BATCH_GRAD:
        if tv.fuse_k0 >= 0:
            # grad_fast and value_and_grad both take the fused tail here
            grad_fused(tv, x, d, w, wb, value, ok)
            if ok[0] and value:
                y[0] = w[tv.out_off]
            return 0
        if nin:
            memcpy(w, x, nin * sizeof(double))
        if fast and tv.nsegs == 0:
            # grad_fast's scalar path: local partials kept from the forward sweep
            memset(wb, 0, S * sizeof(double))
            grad_partials(tv, w, wb, w + S, ok)
        else:
            forward_sweep(tv, w)
            ok[0] = guards_hold(tv.guards, tv.nguard, tv.cv, w)
            if not ok[0]:
                return 0
            memset(wb, 0, S * sizeof(double))
            wb[tv.out_off] = 1.0
            reverse_sweep(tv, w, wb)
        if ok[0]:
            if nin:
                memcpy(d, wb, nin * sizeof(double))
            if value:
                y[0] = w[tv.out_off]
        return 0
    if nin:
        memcpy(w, x, nin * sizeof(double))
    forward_sweep(tv, w)
    ok[0] = guards_hold(tv.guards, tv.nguard, tv.cv, w)
    if not ok[0]:
        return 0
    if kind == BATCH_VALUE:
        if tv.out_n:
            memcpy(y, w + tv.out_off, tv.out_n * sizeof(double))
        return 0
    if nin:
        memcpy(wd, v, nin * sizeof(double))
    tangent_sweep(tv, w, wd, 1, S)
    if kind == BATCH_JVP:
        if tv.out_n:
            memcpy(y, w + tv.out_off, tv.out_n * sizeof(double))
            memcpy(d, wd + tv.out_off, tv.out_n * sizeof(double))
        return 0
    # BATCH_HVP: hvp's tangent, reverse and tangent-of-reverse sweeps
    memset(wb, 0, S * sizeof(double))
    memset(wbd, 0, S * sizeof(double))
    wb[tv.out_off] = 1.0
    reverse_sweep(tv, w, wb)
    tor_sweep(tv, w, wd, wb, wbd, 1, S)
    if nin:
        memcpy(d, wbd, nin * sizeof(double))
    return 0


def batch_replay(Tape t, int kind, const double[:, ::1] X, const double[:, ::1] V,
                 double[:, ::1] Y, double[:, ::1] D, unsigned char[::1] ok, Py_ssize_t lo,
                 Py_ssize_t hi, bint fast=False, bint value=True):
    """Sweep rows [lo, hi) of X (shape (B, nin)) through the tape for one of BATCH_KINDS.

    V: tangents (B, nin) for jvp/hvp (else None). Y: values (B, out_n), or (B, 1) for grad
    (None when grad's value is not wanted, or for hvp). D: gradients or hvps (B, nin), jvp
    tangents (B, out_n). ok[i]: point i's guards held (its rows of Y, D are written only then).
    fast: grad as grad_fast sweeps it (one array argument), else as value_and_grad. lo == hi
    validates the tape and checks the shapes only (call it once before sweeping from threads)."""
    cdef TapeView tv
    open_tape(t, &tv)
    cdef Py_ssize_t B = X.shape[0], S = max(t.nwork, 1), i, nout = t.out_n
    cdef Py_ssize_t ny = 0, nd = 0
    if kind < BATCH_VALUE or kind > BATCH_HVP:
        raise ValueError(f"batch_replay: unknown kind {kind}")
    if kind in (BATCH_GRAD, BATCH_HVP) and nout != 1:
        raise ValueError(f"batch_replay: grad and hvp need a scalar-output tape, it has {nout} outputs")
    if X.shape[1] != t.nin or ok.shape[0] != B or not 0 <= lo <= hi <= B:
        raise ValueError(f"batch_replay: expected X of shape (B, {t.nin}), ok of B values and "
                         f"0 <= lo <= hi <= B; got X ({X.shape[0]}, {X.shape[1]}), ok {ok.shape[0]}, "
                         f"rows [{lo}, {hi})")
    if kind == BATCH_VALUE or kind == BATCH_JVP or (kind == BATCH_GRAD and value):
        ny = 1 if kind == BATCH_GRAD else nout
        if Y is None or Y.shape[0] != B or Y.shape[1] != ny:
            raise ValueError(f"batch_replay: the value buffer must have shape ({B}, {ny})")
    if kind != BATCH_VALUE:
        nd = nout if kind == BATCH_JVP else t.nin
        if D is None or D.shape[0] != B or D.shape[1] != nd:
            raise ValueError(f"batch_replay: the derivative buffer must have shape ({B}, {nd})")
    if kind == BATCH_JVP or kind == BATCH_HVP:
        if V is None or V.shape[0] != B or V.shape[1] != t.nin:
            raise ValueError(f"batch_replay: tangents must have shape ({B}, {t.nin})")
    if hi == lo:
        return 0
    if kind == BATCH_GRAD and not (fast and t.nwork <= GRAD_FAST_MAX_WORK):
        fast = False
    # one block per call: values (+ the scalar path's partials), adjoints, tangents, their adjoints
    cdef double* w = <double*> malloc((4 * S + 2 * t.nops) * sizeof(double))
    if w == NULL:
        raise MemoryError()
    cdef double* wb = w + S + 2 * t.nops
    cdef double* wd = wb + S
    cdef double* wbd = wd + S
    cdef const double* xp = &X[0, 0] if t.nin else NULL
    cdef const double* vp = &V[0, 0] if V is not None and t.nin else NULL
    cdef double* yp = &Y[0, 0] if ny else NULL
    cdef double* dp = &D[0, 0] if nd else NULL
    cdef Py_ssize_t nin = t.nin
    cdef bint good
    try:
        with nogil:
            for i in range(lo, hi):
                batch_point(&tv, kind, fast, value, xp + i * nin if xp != NULL else NULL,
                            vp + i * nin if vp != NULL else NULL,
                            yp + i * ny if yp != NULL else NULL,
                            dp + i * nd if dp != NULL else NULL, w, wb, wd, wbd, S, &good)
                ok[i] = good
    finally:
        free(w)
    return hi - lo
