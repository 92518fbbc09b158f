# OP_CALL: rules written in Python, one function per sweep kind (call_forward, call_reverse,
# call_tangent, call_tor), each called from that sweep's per-op function with the GIL taken.
# They live apart because they are the only sweep code that touches Python objects.
# OP_CALL operations run a rule object's NumPy code with the GIL held (linear algebra and the
# like, where the work is in LAPACK anyway). Operand k has size op.p[k]; absent operands have 0.
cdef object _view(const double* p, Py_ssize_t n):
    if n == 0:
        return np.zeros(0)
    return np.asarray(<double[:n]> (<double*> p))


cdef list _call_inputs(object rule, const Op* op, const double* a, const double* b, const double* c):
    cdef list xs = []
    cdef const double* ptrs[3]
    ptrs[0] = a
    ptrs[1] = b
    ptrs[2] = c
    for k, shape in enumerate(rule.in_shapes):
        xs.append(_view(ptrs[k], op.p[k]).reshape(shape))
    return xs


cdef int call_forward(PyObject* cbs, const Op* op, const double* a, const double* b,
                      const double* c, double* y) except -1 with gil:
    rule = (<object> cbs)[op.p[3]]
    out = np.asarray(rule.forward(*_call_inputs(rule, op, a, b, c)), dtype=np.float64).reshape(-1)
    if out.shape[0] != op.n:
        raise ValueError(f"rule {rule.name}: forward returned {out.shape[0]} values, expected {op.n}")
    _view(y, op.n)[:] = out
    return 0


cdef int _accumulate(object rule, const Op* op, object grads, double* base, Py_ssize_t lane_off) except -1:
    for k, g in enumerate(grads):
        if g is None or opnd_const(op, k):
            continue
        g = np.asarray(g, dtype=np.float64).reshape(-1)
        if g.shape[0] != op.p[k]:
            raise ValueError(f"rule {rule.name}: cotangent {k} has {g.shape[0]} values, expected {op.p[k]}")
        v = _view(base + lane_off + opnd_off(op, k), op.p[k])
        v += g
    return 0


cdef int call_reverse(PyObject* cbs, const Op* op, const double* a, const double* b, const double* c,
                      const double* y, const double* yb, double* wb) except -1 with gil:
    rule = (<object> cbs)[op.p[3]]
    xs = _call_inputs(rule, op, a, b, c)
    grads = rule.vjp(xs, _view(y, op.n).reshape(rule.out_shape),
                     _view(yb, op.n).reshape(rule.out_shape))
    _accumulate(rule, op, grads, wb, 0)
    return 0


cdef list _call_tangents(object rule, const Op* op, const double* wd, Py_ssize_t l, Py_ssize_t S):
    cdef list ts = []
    for k, shape in enumerate(rule.in_shapes):
        if opnd_const(op, k):
            ts.append(None)
        else:
            ts.append(_view(wd + l * S + opnd_off(op, k), op.p[k]).reshape(shape))
    return ts


cdef int call_tangent(PyObject* cbs, const Op* op, const double* a, const double* b, const double* c,
                      const double* y, double* wd, Py_ssize_t L, Py_ssize_t S) except -1 with gil:
    cdef Py_ssize_t l
    rule = (<object> cbs)[op.p[3]]
    xs = _call_inputs(rule, op, a, b, c)
    yv = _view(y, op.n).reshape(rule.out_shape)
    for l in range(L):
        yd = rule.jvp(xs, yv, _call_tangents(rule, op, wd, l, S))
        _view(wd + l * S + op.out, op.n)[:] = 0.0 if yd is None else np.asarray(yd, dtype=np.float64).reshape(-1)
    return 0


cdef int call_tor(PyObject* cbs, const Op* op, const double* a, const double* b, const double* c,
                  const double* y, const double* yb, const double* wd, double* wbd,
                  Py_ssize_t L, Py_ssize_t S) except -1 with gil:
    cdef Py_ssize_t l
    rule = (<object> cbs)[op.p[3]]
    xs = _call_inputs(rule, op, a, b, c)
    yv = _view(y, op.n).reshape(rule.out_shape)
    ybv = _view(yb, op.n).reshape(rule.out_shape)
    for l in range(L):
        ybd = _view(wbd + l * S + op.out, op.n).reshape(rule.out_shape)
        grads = rule.tor(xs, yv, _call_tangents(rule, op, wd, l, S), ybv, ybd)
        _accumulate(rule, op, grads, wbd, l * S)
    return 0
