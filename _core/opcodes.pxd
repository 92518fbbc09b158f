# One sorted enum of opcodes, grouped by family. The Python front end reads the same numbers
# through tapegrad._core.tape.OPCODES; tests check that the families and the table agree.
# Families (ranges are inclusive):
#   unary elementwise      y = g(x; d)                 [UN_FIRST, UN_LAST]
#     of which zero-derivative (sign, floor, ...)      [UN_ZERO_FIRST, UN_LAST]
#   binary elementwise     y = g(a, b) with broadcast  [BIN_FIRST, BIN_LAST]
#     of which comparisons (0/1 results, no derivative)[CMP_FIRST, BIN_LAST]
#   reductions over (pre, m, post) blocks, matmul, and the linear data movers.

cdef enum:
    # --- unary, differentiable (parameter d where noted) ---
    OP_NEG = 0
    OP_ABS = 1
    OP_EXP = 2
    OP_LOG = 3
    OP_LOG1P = 4
    OP_EXPM1 = 5
    OP_SQRT = 6
    OP_SQUARE = 7
    OP_RECIP = 8
    OP_SIN = 9
    OP_COS = 10
    OP_TAN = 11
    OP_ARCSIN = 12
    OP_ARCCOS = 13
    OP_ARCTAN = 14
    OP_SINH = 15
    OP_COSH = 16
    OP_TANH = 17
    OP_ARCSINH = 18
    OP_ARCCOSH = 19
    OP_ARCTANH = 20
    OP_EXP2 = 21
    OP_LOG2 = 22
    OP_LOG10 = 23
    OP_CBRT = 24
    OP_EXPIT = 25
    OP_ERF = 26
    OP_ERFC = 27
    OP_ADDC = 28      # x + d
    OP_MULC = 29      # x * d
    OP_RSUBC = 30     # d - x
    OP_RDIVC = 31     # d / x
    OP_POWC = 32      # x ** d
    OP_RPOWC = 33     # d ** x
    OP_SOFTPLUS = 34  # log(1 + exp(x))
    OP_LOGIT = 35     # log(x / (1 - x))
    OP_DIVC = 36      # x / d
    # --- unary, zero derivative ---
    OP_SIGN = 37
    OP_FLOOR = 38
    OP_CEIL = 39
    OP_RINT = 40
    OP_TRUNC = 41
    # --- binary, differentiable ---
    OP_ADD = 42
    OP_SUB = 43
    OP_MUL = 44
    OP_DIV = 45
    OP_POW = 46
    OP_MAXIMUM = 47
    OP_MINIMUM = 48
    OP_ARCTAN2 = 49
    OP_HYPOT = 50
    OP_LOGADDEXP = 51
    OP_WHERE = 52     # c ? a : b, c is a third (mask) operand of full size
    # --- binary comparisons: 1.0 / 0.0, zero derivative ---
    OP_LT = 53
    OP_LE = 54
    OP_GT = 55
    OP_GE = 56
    OP_EQ = 57
    OP_NE = 58
    # --- reductions over a (pre, m, post) block: p0=pre, p1=m, p2=post ---
    OP_SUM = 59
    OP_MAX = 60
    OP_MIN = 61
    OP_PROD = 62
    # --- (batched) matrix product: p0=batch, p1=M, p2=K, p3=N, p4/p5 = batch strides of a/b ---
    OP_MATMUL = 63
    # --- linear data movement ---
    OP_GATHER = 64       # y[i] = a[idx[i]],  idx = ipool[p0 : p0+n], p1 = size of a
    OP_SCATTER_ADD = 65  # y = 0; y[idx[i]] += a[i], idx = ipool[p0 : p0+p1], p1 = size of a
    OP_COPY = 66         # y[i] = a[i]
    # --- a rule written in Python (linear algebra and friends), called with the GIL:
    #     operands a, b, c of sizes p0, p1, p2 (0 = absent), p3 = index of the rule object
    OP_CALL = 67
    OP_COUNT = 68

cdef enum:
    UN_FIRST = OP_NEG
    UN_ZERO_FIRST = OP_SIGN
    UN_LAST = OP_TRUNC
    BIN_FIRST = OP_ADD
    CMP_FIRST = OP_LT
    BIN_LAST = OP_NE

# operand flags: the operand lives in the tape's constant buffer, not in the work buffer
cdef enum:
    FLAG_A_CONST = 1
    FLAG_B_CONST = 2
    FLAG_C_CONST = 4
    FLAG_ALL = 7
