# Batched replay: one tape at many points in one compiled call (operators/batch.py drives it).
# Point i's flat input is xbase with row i of X written over the segments xsegs (offset,
# length pairs, in order: the batched arguments; xbase holds the shared ones), assembled in a
# scratch of the call; likewise its tangent from vbase, V and vsegs. Points [lo, hi) are swept
# here, one after the other, with the GIL released, in work buffers that belong to this call
# (so several threads may each sweep their own points of the same arrays at once). Each point runs exactly the sweeps of the
# one-point entry it mirrors (value_fast / forward, grad_fast, value_and_grad, tangent, hvp),
# so a batch gives the bits of a loop of one-point replays. After each point's forward sweep its
# guards are checked; ok[i] = 0 marks a point whose branches differ from the tape's, its results
# left unwritten (the caller replays it with another variant).
cdef enum:
    BATCH_VALUE = 0     # Y[i] = f(x_i)
    BATCH_GRAD = 1      # Y[i, 0] = f(x_i) (if value), D[i] = grad f(x_i)
    BATCH_JVP = 2       # Y[i] = f(x_i), D[i] = J(x_i) v_i
    BATCH_HVP = 3       # D[i] = H(x_i) v_i
    BATCH_HESS = 4      # D[i] = H(x_i) raveled: hessian's nin lanes (the unit vectors)

BATCH_KINDS = {"value": BATCH_VALUE, "grad": BATCH_GRAD, "jvp": BATCH_JVP, "hvp": BATCH_HVP,
               "hessian": BATCH_HESS}


cdef int batch_point(const TapeView* tv, int kind, bint fast, bint value, const double* x,
                     const double* v, double* y, double* d, Py_ssize_t d_lo, Py_ssize_t d_n,
                     double* w, double* wb, double* wd, double* wbd, double* g, Py_ssize_t S,
                     bint* ok) except -1 nogil:
    """One point of a batch; w has room for S + 2 nops values (the partials of grad_fast),
    wb for S, wd and wbd for S (nin S for the Hessian's lanes), g for nin (the gradient of the
    fused path). d receives derivative entries [d_lo, d_lo + d_n) of the point (all out_n for
    jvp, the nin x nin Hessian for hessian)."""
    cdef Py_ssize_t nin = tv.nin, l, j
    if kind == BATCH_GRAD:
        if tv.fuse_k0 >= 0:
            # grad_fast and value_and_grad both take the fused tail here
            grad_fused(tv, x, g, w, wb, value, ok)
            if ok[0]:
                if d_n:
                    memcpy(d, g + d_lo, d_n * sizeof(double))
                if value:
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
            if d_n:
                memcpy(d, wb + d_lo, d_n * sizeof(double))
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
    if kind == BATCH_HESS:
        # hessian's sweeps: the hvp of the nin unit vectors as lanes; H[i, j] is lane j's entry i
        for l in range(nin):
            memset(wd + l * S, 0, nin * sizeof(double))
            wd[l * S + l] = 1.0
        memset(wb, 0, S * sizeof(double))
        memset(wbd, 0, nin * S * sizeof(double))
        wb[tv.out_off] = 1.0
        if nin:
            tangent_sweep(tv, w, wd, nin, S)
            reverse_sweep(tv, w, wb)
            tor_sweep(tv, w, wd, wb, wbd, nin, S)
        for l in range(nin):
            for j in range(nin):
                d[l * nin + j] = wbd[j * S + l]
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
    if d_n:
        memcpy(d, wbd + d_lo, d_n * sizeof(double))
    return 0


cdef inline void assemble(double* dst, const double* base, const double* row,
                          const int64_t* segs, Py_ssize_t nseg, Py_ssize_t nin) noexcept nogil:
    """dst = base with the segments (offset, length) taken, in order, from row."""
    cdef Py_ssize_t k, pos = 0
    if nin:
        memcpy(dst, base, nin * sizeof(double))
    for k in range(nseg):
        memcpy(dst + segs[2 * k], row + pos, segs[2 * k + 1] * sizeof(double))
        pos += segs[2 * k + 1]


cdef int check_segments(str what, const int64_t[:, ::1] segs, Py_ssize_t width,
                        Py_ssize_t nin) except -1:
    """Segments (offset, length) inside [0, nin), in increasing order, not overlapping, whose
    lengths add up to width (the rows' length)."""
    cdef Py_ssize_t k, total = 0, end = 0
    if segs.shape[1] != 2:
        raise ValueError(f"batch_replay: {what} segments must have shape (k, 2)")
    for k in range(segs.shape[0]):
        if segs[k, 0] < end or segs[k, 1] < 0 or segs[k, 0] + segs[k, 1] > nin:
            raise ValueError(f"batch_replay: {what} segment {k} ({segs[k, 0]}, {segs[k, 1]}) is "
                             f"out of order or outside the {nin} inputs")
        end = segs[k, 0] + segs[k, 1]
        total += segs[k, 1]
    if total != width:
        raise ValueError(f"batch_replay: the {what} segments cover {total} values, the rows "
                         f"have {width}")
    return 0


def batch_replay(Tape t, int kind, const double[::1] xbase, const double[:, ::1] X,
                 const int64_t[:, ::1] xsegs, const double[::1] vbase, const double[:, ::1] V,
                 const int64_t[:, ::1] vsegs, double[:, ::1] Y, double[:, ::1] D,
                 Py_ssize_t d_lo, unsigned char[::1] ok, Py_ssize_t lo, Py_ssize_t hi,
                 bint fast=False, bint value=True):
    """Sweep points [lo, hi) of a batch of B points through the tape for one of BATCH_KINDS.

    Point i's input: xbase (nin values) with row i of X (B, width) written over xsegs. Its
    tangent (jvp, hvp; else vbase, V, vsegs are None): vbase with row i of V over vsegs.
    Y: values (B, out_n), or (B, 1) for grad (None when grad's value is not wanted, or for
    hvp). D: gradients or hvps, entries [d_lo, d_lo + D.shape[1]) of each (B, k); jvp
    tangents (B, out_n). ok[i]: point i's guards held (its rows of Y and D are written only
    then). fast: grad as grad_fast sweeps it (one array argument), else as value_and_grad.
    lo == hi validates the tape and checks the shapes only (call it once before sweeping from
    several threads)."""
    cdef TapeView tv
    open_tape(t, &tv)
    tv.nthreads = 1       # the points are split over the caller's threads already
    cdef Py_ssize_t B = ok.shape[0], S = max(t.nwork, 1), i, nout = t.out_n, nin = t.nin
    cdef Py_ssize_t ny = 0, nd = 0, d_n = 0
    cdef bint tangents = kind == BATCH_JVP or kind == BATCH_HVP
    if kind < BATCH_VALUE or kind > BATCH_HESS:
        raise ValueError(f"batch_replay: unknown kind {kind}")
    if (kind == BATCH_GRAD or kind == BATCH_HVP or kind == BATCH_HESS) and nout != 1:
        raise ValueError(f"batch_replay: grad, hvp and hessian need a scalar-output tape, it "
                         f"has {nout} outputs")
    if not 0 <= lo <= hi <= B:
        raise ValueError(f"batch_replay: rows [{lo}, {hi}) outside the batch of {B}")
    if xbase.shape[0] != nin or X.shape[0] != B:
        raise ValueError(f"batch_replay: expected xbase of {nin} values and X of {B} rows, got "
                         f"{xbase.shape[0]} and {X.shape[0]}")
    check_segments("input", xsegs, X.shape[1], nin)
    if tangents:
        if vbase is None or V is None or vsegs is None:
            raise ValueError("batch_replay: jvp and hvp need tangents (vbase, V, vsegs)")
        if vbase.shape[0] != nin or V.shape[0] != B:
            raise ValueError(f"batch_replay: expected vbase of {nin} values and V of {B} rows")
        check_segments("tangent", vsegs, V.shape[1], nin)
    if kind == BATCH_VALUE or kind == BATCH_JVP or (kind == BATCH_GRAD and value):
        ny = 1 if kind == BATCH_GRAD else nout
        if Y is None or Y.shape[0] != B or Y.shape[1] != ny:
            raise ValueError(f"batch_replay: the value buffer must have shape ({B}, {ny})")
    if kind != BATCH_VALUE:
        if D is None or D.shape[0] != B:
            raise ValueError(f"batch_replay: the derivative buffer must have {B} rows")
        nd = D.shape[1]
        if kind == BATCH_JVP:
            if nd != nout:
                raise ValueError(f"batch_replay: jvp tangents must have shape ({B}, {nout})")
            d_lo = 0
        elif kind == BATCH_HESS:
            if nd != nin * nin:
                raise ValueError(f"batch_replay: Hessians must have shape ({B}, {nin * nin})")
            d_lo = 0
        elif not (0 <= d_lo and d_lo + nd <= nin):
            raise ValueError(f"batch_replay: derivative entries [{d_lo}, {d_lo + nd}) outside "
                             f"the {nin} inputs")
        d_n = nd
    if hi == lo:
        return 0
    if kind == BATCH_GRAD and not (fast and t.nwork <= GRAD_FAST_MAX_WORK):
        fast = False
    # one block per call: values (+ the scalar path's partials), adjoints, tangents, their
    # adjoints, the fused path's gradient, the assembled input and tangent
    cdef Py_ssize_t N = max(nin, 1)
    cdef Py_ssize_t LS = N * S if kind == BATCH_HESS else S      # tangent lanes' room
    cdef double* w = <double*> malloc((2 * S + 2 * LS + 2 * t.nops + 3 * N) * sizeof(double))
    if w == NULL:
        raise MemoryError()
    cdef double* wb = w + S + 2 * t.nops
    cdef double* wd = wb + S
    cdef double* wbd = wd + LS
    cdef double* g = wbd + LS
    cdef double* xs = g + N
    cdef double* vs = xs + N
    cdef Py_ssize_t wx = X.shape[1], wv = V.shape[1] if tangents else 0
    cdef const double* xb = &xbase[0] if nin else NULL
    cdef const double* xp = &X[0, 0] if wx and B else NULL
    cdef const int64_t* xsg = &xsegs[0, 0] if xsegs.shape[0] else NULL
    cdef Py_ssize_t nxs = xsegs.shape[0], nvs = vsegs.shape[0] if tangents else 0
    cdef const double* vb = &vbase[0] if tangents and nin else NULL
    cdef const double* vp = &V[0, 0] if tangents and wv and B else NULL
    cdef const int64_t* vsg = &vsegs[0, 0] if tangents and nvs else NULL
    cdef double* yp = &Y[0, 0] if ny else NULL
    cdef double* dp = &D[0, 0] if nd else NULL
    cdef bint good
    try:
        with nogil:
            for i in range(lo, hi):
                assemble(xs, xb, xp + i * wx if xp != NULL else NULL, xsg, nxs, nin)
                if tangents:
                    assemble(vs, vb, vp + i * wv if vp != NULL else NULL, vsg, nvs, nin)
                batch_point(&tv, kind, fast, value, xs, vs,
                            yp + i * ny if yp != NULL else NULL,
                            dp + i * nd if dp != NULL else NULL, d_lo, d_n,
                            w, wb, wd, wbd, g, S, &good)
                ok[i] = good
    finally:
        free(w)
    return hi - lo
