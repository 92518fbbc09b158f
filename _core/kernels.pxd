# Per-element derivative kernels, one block per elementwise opcode: the value, the first
# derivative and the second derivative side by side, so each can be checked against the
# others at a glance. The sweeps call these inside their loops; the switch on ``code`` is
# loop-invariant, so the compiler hoists it (loop unswitching at -O3).
from libc.math cimport (exp, log, log1p, expm1, sqrt, sin, cos, tan, asin, acos, atan, sinh,
                        cosh, tanh, asinh, acosh, atanh, exp2, log2, log10, cbrt, erf, erfc,
                        pow, fabs, floor, ceil, rint, trunc, atan2, hypot, M_PI, NAN)
from .opcodes cimport *

# constants are spelled out (module-level variables in a .pxd would need a module of their own):
# 0.6931471805599453 = 0.6931471805599453, 2.302585092994046 = 2.302585092994046, 2/sqrt(pi) = 1.1283791670955126


cdef inline double _expit(double x) noexcept nogil:
    cdef double e
    if x >= 0:
        return 1.0 / (1.0 + exp(-x))
    e = exp(x)
    return e / (1.0 + e)


cdef inline double un_f(int code, double x, double d) noexcept nogil:
    if code == OP_NEG: return -x
    elif code == OP_ABS: return fabs(x)
    elif code == OP_EXP: return exp(x)
    elif code == OP_LOG: return log(x)
    elif code == OP_LOG1P: return log1p(x)
    elif code == OP_EXPM1: return expm1(x)
    elif code == OP_SQRT: return sqrt(x)
    elif code == OP_SQUARE: return x * x
    elif code == OP_RECIP: return 1.0 / x
    elif code == OP_SIN: return sin(x)
    elif code == OP_COS: return cos(x)
    elif code == OP_TAN: return tan(x)
    elif code == OP_ARCSIN: return asin(x)
    elif code == OP_ARCCOS: return acos(x)
    elif code == OP_ARCTAN: return atan(x)
    elif code == OP_SINH: return sinh(x)
    elif code == OP_COSH: return cosh(x)
    elif code == OP_TANH: return tanh(x)
    elif code == OP_ARCSINH: return asinh(x)
    elif code == OP_ARCCOSH: return acosh(x)
    elif code == OP_ARCTANH: return atanh(x)
    elif code == OP_EXP2: return exp2(x)
    elif code == OP_LOG2: return log2(x)
    elif code == OP_LOG10: return log10(x)
    elif code == OP_CBRT: return cbrt(x)
    elif code == OP_EXPIT: return _expit(x)
    elif code == OP_ERF: return erf(x)
    elif code == OP_ERFC: return erfc(x)
    elif code == OP_ADDC: return x + d
    elif code == OP_MULC: return x * d
    elif code == OP_RSUBC: return d - x
    elif code == OP_RDIVC: return d / x
    elif code == OP_DIVC: return x / d
    elif code == OP_POWC: return pow(x, d)
    elif code == OP_RPOWC: return pow(d, x)
    elif code == OP_SOFTPLUS: return log1p(exp(-fabs(x))) + (x if x > 0 else 0.0)
    elif code == OP_LOGIT: return log(x / (1.0 - x))
    elif code == OP_SIGN: return x if x != x else <double>((x > 0) - (x < 0))
    elif code == OP_FLOOR: return floor(x)
    elif code == OP_CEIL: return ceil(x)
    elif code == OP_RINT: return rint(x)
    elif code == OP_TRUNC: return trunc(x)
    return NAN


cdef inline double un_d1(int code, double x, double y, double d) noexcept nogil:
    """dy/dx, given x and y = f(x)."""
    if code == OP_NEG: return -1.0
    elif code == OP_ABS: return <double>((x > 0) - (x < 0))
    elif code == OP_EXP: return y
    elif code == OP_LOG: return 1.0 / x
    elif code == OP_LOG1P: return 1.0 / (1.0 + x)
    elif code == OP_EXPM1: return y + 1.0
    elif code == OP_SQRT: return 0.5 / y
    elif code == OP_SQUARE: return 2.0 * x
    elif code == OP_RECIP: return -y * y
    elif code == OP_SIN: return cos(x)
    elif code == OP_COS: return -sin(x)
    elif code == OP_TAN: return 1.0 + y * y
    elif code == OP_ARCSIN: return 1.0 / sqrt(1.0 - x * x)
    elif code == OP_ARCCOS: return -1.0 / sqrt(1.0 - x * x)
    elif code == OP_ARCTAN: return 1.0 / (1.0 + x * x)
    elif code == OP_SINH: return cosh(x)
    elif code == OP_COSH: return sinh(x)
    elif code == OP_TANH: return 1.0 - y * y
    elif code == OP_ARCSINH: return 1.0 / sqrt(x * x + 1.0)
    elif code == OP_ARCCOSH: return 1.0 / sqrt(x * x - 1.0)
    elif code == OP_ARCTANH: return 1.0 / (1.0 - x * x)
    elif code == OP_EXP2: return y * 0.6931471805599453
    elif code == OP_LOG2: return 1.0 / (x * 0.6931471805599453)
    elif code == OP_LOG10: return 1.0 / (x * 2.302585092994046)
    elif code == OP_CBRT: return 1.0 / (3.0 * y * y)
    elif code == OP_EXPIT: return y * (1.0 - y)
    elif code == OP_ERF: return 1.1283791670955126 * exp(-x * x)
    elif code == OP_ERFC: return -1.1283791670955126 * exp(-x * x)
    elif code == OP_ADDC: return 1.0
    elif code == OP_MULC: return d
    elif code == OP_RSUBC: return -1.0
    elif code == OP_RDIVC: return -d / (x * x)
    elif code == OP_DIVC: return 1.0 / d
    elif code == OP_POWC: return 0.0 if d == 0.0 else d * pow(x, d - 1.0)
    elif code == OP_RPOWC: return y * log(d)
    elif code == OP_SOFTPLUS: return _expit(x)
    elif code == OP_LOGIT: return 1.0 / (x * (1.0 - x))
    return 0.0


cdef inline double un_d2(int code, double x, double y, double d) noexcept nogil:
    """d2y/dx2, given x and y = f(x)."""
    cdef double t
    if code == OP_EXP: return y
    elif code == OP_LOG: return -1.0 / (x * x)
    elif code == OP_LOG1P: return -1.0 / ((1.0 + x) * (1.0 + x))
    elif code == OP_EXPM1: return y + 1.0
    elif code == OP_SQRT: return -0.25 / (y * y * y)
    elif code == OP_SQUARE: return 2.0
    elif code == OP_RECIP: return 2.0 * y * y * y
    elif code == OP_SIN: return -y
    elif code == OP_COS: return -y
    elif code == OP_TAN: return 2.0 * y * (1.0 + y * y)
    elif code == OP_ARCSIN:
        t = 1.0 - x * x
        return x / (t * sqrt(t))
    elif code == OP_ARCCOS:
        t = 1.0 - x * x
        return -x / (t * sqrt(t))
    elif code == OP_ARCTAN:
        t = 1.0 + x * x
        return -2.0 * x / (t * t)
    elif code == OP_SINH: return y
    elif code == OP_COSH: return y
    elif code == OP_TANH: return -2.0 * y * (1.0 - y * y)
    elif code == OP_ARCSINH:
        t = x * x + 1.0
        return -x / (t * sqrt(t))
    elif code == OP_ARCCOSH:
        t = x * x - 1.0
        return -x / (t * sqrt(t))
    elif code == OP_ARCTANH:
        t = 1.0 - x * x
        return 2.0 * x / (t * t)
    elif code == OP_EXP2: return y * 0.6931471805599453 * 0.6931471805599453
    elif code == OP_LOG2: return -1.0 / (x * x * 0.6931471805599453)
    elif code == OP_LOG10: return -1.0 / (x * x * 2.302585092994046)
    elif code == OP_CBRT: return -2.0 / (9.0 * y * y * y * y * y)
    elif code == OP_EXPIT: return y * (1.0 - y) * (1.0 - 2.0 * y)
    elif code == OP_ERF: return -2.0 * x * 1.1283791670955126 * exp(-x * x)
    elif code == OP_ERFC: return 2.0 * x * 1.1283791670955126 * exp(-x * x)
    elif code == OP_RDIVC: return 2.0 * d / (x * x * x)
    elif code == OP_POWC: return 0.0 if d * (d - 1.0) == 0.0 else d * (d - 1.0) * pow(x, d - 2.0)
    elif code == OP_RPOWC:
        t = log(d)
        return y * t * t
    elif code == OP_SOFTPLUS:
        t = _expit(x)
        return t * (1.0 - t)
    elif code == OP_LOGIT:
        t = x * (1.0 - x)
        return (2.0 * x - 1.0) / (t * t)
    return 0.0


cdef inline double bin_f(int code, double a, double b, double m) noexcept nogil:
    cdef double hi
    if code == OP_ADD: return a + b
    elif code == OP_SUB: return a - b
    elif code == OP_MUL: return a * b
    elif code == OP_DIV: return a / b
    elif code == OP_POW: return pow(a, b)
    elif code == OP_MAXIMUM: return a if (a >= b or a != a) else b
    elif code == OP_MINIMUM: return a if (a <= b or a != a) else b
    elif code == OP_ARCTAN2: return atan2(a, b)
    elif code == OP_HYPOT: return hypot(a, b)
    elif code == OP_LOGADDEXP:
        if a == b: return a + 0.6931471805599453
        hi = a if a > b else b
        return hi + log1p(exp(-fabs(a - b)))
    elif code == OP_WHERE: return a if m != 0.0 else b
    elif code == OP_LT: return <double>(a < b)
    elif code == OP_LE: return <double>(a <= b)
    elif code == OP_GT: return <double>(a > b)
    elif code == OP_GE: return <double>(a >= b)
    elif code == OP_EQ: return <double>(a == b)
    elif code == OP_NE: return <double>(a != b)
    return NAN


cdef inline void bin_d1(int code, double a, double b, double y, double m,
                        double* da, double* db) noexcept nogil:
    """Partial derivatives dy/da, dy/db. Ties of maximum/minimum split evenly (as autograd, JAX)."""
    cdef double r
    da[0] = 0.0
    db[0] = 0.0
    if code == OP_ADD:
        da[0] = 1.0; db[0] = 1.0
    elif code == OP_SUB:
        da[0] = 1.0; db[0] = -1.0
    elif code == OP_MUL:
        da[0] = b; db[0] = a
    elif code == OP_DIV:
        da[0] = 1.0 / b; db[0] = -a / (b * b)
    elif code == OP_POW:
        da[0] = 0.0 if b == 0.0 else b * pow(a, b - 1.0)
        db[0] = y * log(a) if a > 0 else 0.0
    elif code == OP_MAXIMUM or code == OP_MINIMUM:
        # a NaN operand is the result (bin_f propagates it), so it receives the derivative
        if a != a:
            da[0] = 1.0
        elif b != b:
            db[0] = 1.0
        elif a == b:
            da[0] = 0.5; db[0] = 0.5
        elif (a > b) == (code == OP_MAXIMUM):
            da[0] = 1.0
        else:
            db[0] = 1.0
    elif code == OP_ARCTAN2:
        r = a * a + b * b
        da[0] = b / r; db[0] = -a / r
    elif code == OP_HYPOT:
        da[0] = a / y; db[0] = b / y
    elif code == OP_LOGADDEXP:
        da[0] = exp(a - y); db[0] = exp(b - y)
    elif code == OP_WHERE:
        if m != 0.0:
            da[0] = 1.0
        else:
            db[0] = 1.0


cdef inline void bin_d2(int code, double a, double b, double y,
                        double* daa, double* dab, double* dbb) noexcept nogil:
    """Second partial derivatives."""
    cdef double r, la, ea, eb
    daa[0] = 0.0
    dab[0] = 0.0
    dbb[0] = 0.0
    if code == OP_MUL:
        dab[0] = 1.0
    elif code == OP_DIV:
        dab[0] = -1.0 / (b * b)
        dbb[0] = 2.0 * a / (b * b * b)
    elif code == OP_POW:
        daa[0] = 0.0 if b * (b - 1.0) == 0.0 else b * (b - 1.0) * pow(a, b - 2.0)
        if a > 0:
            la = log(a)
            dab[0] = pow(a, b - 1.0) * (1.0 + b * la)
            dbb[0] = y * la * la
        elif b == 0.0:
            dab[0] = 0.0
        else:
            dab[0] = pow(a, b - 1.0)
    elif code == OP_ARCTAN2:
        r = a * a + b * b
        r = r * r
        daa[0] = -2.0 * a * b / r
        dab[0] = (a * a - b * b) / r
        dbb[0] = 2.0 * a * b / r
    elif code == OP_HYPOT:
        r = y * y * y
        daa[0] = b * b / r
        dab[0] = -a * b / r
        dbb[0] = a * a / r
    elif code == OP_LOGADDEXP:
        ea = exp(a - y)
        eb = exp(b - y)
        daa[0] = ea * eb
        dab[0] = -ea * eb
        dbb[0] = ea * eb
