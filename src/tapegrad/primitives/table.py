"""The primitive table: one row per primitive of the tape, data only.

This is the single place an elementwise primitive is defined. Each row gives its name (the
opcode's name), how its value and derivatives are computed, which NumPy functions record as it,
how the Wengert list shows it, and where its test draws inputs. From the rows:

- ``tapegrad.primitives.codegen`` generates the Cython opcode enum (``_core/opcodes.pxd``), the
  per-element kernels (``_core/kernels.pxd``: value, first and second derivatives, and the
  per-op traits the sweeps dispatch on) and the opcode names of the tape module
  (``_core/opnames.pxi``). The generated files are committed; a test fails when they are stale.
- ``tapegrad.primitives`` derives the Python side: the ufunc maps of the NumPy rules, the NumPy
  formulas of the reference sweep, the inspector's formats, and the traits (computed from the
  formulas, never listed by hand).

Formulas are Python expressions over the element variables (unary: ``x``, ``y`` = the value,
``d`` = the op's scalar parameter; binary: ``a``, ``b``, ``y``, and ``m`` = the mask operand of
``where``), with the math functions of C99 (``exp``, ``log``, ``pow``, ``fabs``, ``asin``, ...),
``expit``, the named constants ``LN2``, ``LN10``, ``TWO_OVER_SQRTPI``, and two helpers:
``where(c, p, q)`` (``p if c else q``) and ``step(c)`` (1.0 where c holds, else 0.0). A missing
derivative is zero. ``let`` names shared subexpressions (a kernel computes only those it uses).
The row order is the opcode order; families are contiguous (see ``FAMILIES``).
"""

# Families, in opcode order. "unary"/"binary": differentiable; "unary_zero"/"compare": zero
# derivative (compare gives 1.0/0.0). The rest are hand-written in every sweep.
FAMILIES = ("unary", "unary_zero", "binary", "compare", "reduce", "matmul", "move", "call")


def unary(name, f, d1="0.0", d2="0.0", *, ufuncs=(), value=None, loop=False, let=None,
          show=None, domain=None, param=None, example=None):
    """A row of a unary primitive y = f(x; d).

    ufuncs: the NumPy/SciPy callables recorded as this op ("np.exp"); the first gives the value
    while recording unless ``value`` (a NumPy formula) is given. loop: the compiled forward sweep
    calls NumPy's own float64 inner loop of ufuncs[0] (bitwise the recorded value). show: the
    Wengert-list format ({a}, {d}); default ``name({a})``. domain: (lo, hi) of the test inputs.
    param: what the scalar parameter d is (for the docs). example: NumPy code over x (binary: a,
    b) that records this op, for the table-driven test of a primitive no ufunc records.
    """
    return dict(family="unary", name=name, f=f, d1=d1, d2=d2, ufuncs=tuple(ufuncs), value=value,
                loop=loop, let=dict(let or {}), show=show, domain=domain, param=param,
                example=example)


def unary_zero(name, f, *, ufuncs=(), value=None, show=None, domain=None, example=None):
    return dict(unary(name, f, ufuncs=ufuncs, value=value, show=show, domain=domain,
                      example=example), family="unary_zero")


def binary(name, f, da="0.0", db="0.0", daa="0.0", dab="0.0", dbb="0.0", *, ufuncs=(),
           loop=False, let=None, show=None, domain=None, example=None):
    """A row of a binary primitive y = f(a, b) (operands broadcast by index arithmetic)."""
    return dict(family="binary", name=name, f=f, da=da, db=db, daa=daa, dab=dab, dbb=dbb,
                ufuncs=tuple(ufuncs), loop=loop, let=dict(let or {}), show=show, domain=domain,
                example=example)


def compare(name, f, *, ufuncs=(), show=None):
    return dict(binary(name, f, ufuncs=ufuncs, show=show), family="compare")


def other(family, name, show=None, note=""):
    """A primitive that is not elementwise: written by hand in every sweep (as in CppAD)."""
    return dict(family=family, name=name, show=show, note=note)


_T = "1.0 - x * x"
PRIMITIVES = [
    # ------------------------------------------------------------ unary, differentiable
    unary("neg", "-x", "-1.0", ufuncs=("np.negative",), value="-x", show="-{a}"),
    unary("abs", "fabs(x)", "step(x > 0) - step(x < 0)", ufuncs=("np.absolute", "np.fabs"),
          loop=True, domain="away(0.2, 2)"),
    unary("exp", "exp(x)", "y", "y", ufuncs=("np.exp",), loop=True),
    unary("log", "log(x)", "1.0 / x", "-1.0 / (x * x)", ufuncs=("np.log",), loop=True,
          domain="U(0.3, 3)"),
    unary("log1p", "log1p(x)", "1.0 / (1.0 + x)", "-1.0 / ((1.0 + x) * (1.0 + x))",
          ufuncs=("np.log1p",), loop=True, domain="U(-0.5, 2)"),
    unary("expm1", "expm1(x)", "y + 1.0", "y + 1.0", ufuncs=("np.expm1",), loop=True),
    unary("sqrt", "sqrt(x)", "0.5 / y", "-0.25 / (y * y * y)", ufuncs=("np.sqrt",), loop=True,
          domain="U(0.3, 3)"),
    unary("square", "x * x", "2.0 * x", "2.0", ufuncs=("np.square",), value="x * x",
          show="{a} ** 2"),
    unary("reciprocal", "1.0 / x", "-y * y", "2.0 * y * y * y", ufuncs=("np.reciprocal",),
          value="1.0 / x", domain="away(0.4, 2)"),
    unary("sin", "sin(x)", "cos(x)", "-y", ufuncs=("np.sin",), loop=True),
    unary("cos", "cos(x)", "-sin(x)", "-y", ufuncs=("np.cos",), loop=True),
    unary("tan", "tan(x)", "1.0 + y * y", "2.0 * y * (1.0 + y * y)", ufuncs=("np.tan",),
          loop=True, domain="U(-1.2, 1.2)"),
    unary("arcsin", "asin(x)", "1.0 / sqrt(1.0 - x * x)", "x / (t * sqrt(t))", let={"t": _T},
          ufuncs=("np.arcsin",), loop=True, domain="U(-0.8, 0.8)"),
    unary("arccos", "acos(x)", "-1.0 / sqrt(1.0 - x * x)", "-x / (t * sqrt(t))", let={"t": _T},
          ufuncs=("np.arccos",), loop=True, domain="U(-0.8, 0.8)"),
    unary("arctan", "atan(x)", "1.0 / (1.0 + x * x)", "-2.0 * x / (t * t)",
          let={"t": "1.0 + x * x"}, ufuncs=("np.arctan",), loop=True),
    unary("sinh", "sinh(x)", "cosh(x)", "y", ufuncs=("np.sinh",), loop=True),
    unary("cosh", "cosh(x)", "sinh(x)", "y", ufuncs=("np.cosh",), loop=True),
    unary("tanh", "tanh(x)", "1.0 - y * y", "-2.0 * y * (1.0 - y * y)", ufuncs=("np.tanh",),
          loop=True),
    unary("arcsinh", "asinh(x)", "1.0 / sqrt(x * x + 1.0)", "-x / (t * sqrt(t))",
          let={"t": "x * x + 1.0"}, ufuncs=("np.arcsinh",), loop=True),
    unary("arccosh", "acosh(x)", "1.0 / sqrt(x * x - 1.0)", "-x / (t * sqrt(t))",
          let={"t": "x * x - 1.0"}, ufuncs=("np.arccosh",), loop=True, domain="U(1.3, 3)"),
    unary("arctanh", "atanh(x)", "1.0 / (1.0 - x * x)", "2.0 * x / (t * t)", let={"t": _T},
          ufuncs=("np.arctanh",), loop=True, domain="U(-0.8, 0.8)"),
    unary("exp2", "exp2(x)", "y * LN2", "y * LN2 * LN2", ufuncs=("np.exp2",), loop=True),
    unary("log2", "log2(x)", "1.0 / (x * LN2)", "-1.0 / (x * x * LN2)", ufuncs=("np.log2",),
          loop=True, domain="U(0.3, 3)"),
    unary("log10", "log10(x)", "1.0 / (x * LN10)", "-1.0 / (x * x * LN10)",
          ufuncs=("np.log10",), loop=True, domain="U(0.3, 3)"),
    unary("cbrt", "cbrt(x)", "1.0 / (3.0 * y * y)", "-2.0 / (9.0 * y * y * y * y * y)",
          ufuncs=("np.cbrt",), loop=True, domain="away(0.3, 2)"),
    unary("expit", "expit(x)", "y * (1.0 - y)", "y * (1.0 - y) * (1.0 - 2.0 * y)",
          ufuncs=("sps.expit",)),
    unary("erf", "erf(x)", "TWO_OVER_SQRTPI * exp(-x * x)",
          "-2.0 * x * TWO_OVER_SQRTPI * exp(-x * x)", ufuncs=("sps.erf",)),
    unary("erfc", "erfc(x)", "-TWO_OVER_SQRTPI * exp(-x * x)",
          "2.0 * x * TWO_OVER_SQRTPI * exp(-x * x)", ufuncs=("sps.erfc",)),
    unary("addc", "x + d", "1.0", value="x + d", example="x + 1.5", show="{a} + {d}", param="x + d"),
    unary("mulc", "x * d", "d", value="x * d", example="2.5 * x", show="{d} * {a}", param="x * d"),
    unary("rsubc", "d - x", "-1.0", value="d - x", example="1.5 - x", show="{d} - {a}", param="d - x"),
    unary("rdivc", "d / x", "-d / (x * x)", "2.0 * d / (x * x * x)", value="d / x",
          example="1.5 / x",
          show="{d} / {a}", param="d / x", domain="away(0.4, 2)"),
    unary("powc", "pow(x, d)", "where(d == 0.0, 0.0, d * pow(x, d - 1.0))",
          "where(d * (d - 1.0) == 0.0, 0.0, d * (d - 1.0) * pow(x, d - 2.0))",
          value="power(x, d)", example="x ** 2.5", show="{a} ** {d}", param="x ** d", domain="U(0.3, 3)"),
    # d = 0: 0 ** x is 0 for x > 0, so its derivative is 0 there (not 0 * log(0) = NaN; as the
    # binary power's b-partial and autograd's rule)
    unary("rpowc", "pow(d, x)", "where(d == 0.0, 0.0, y * log(d))", "where(d == 0.0, 0.0, y * t * t)",
          let={"t": "log(d)"},
          value="power(d, x)", example="2.5 ** x", show="{d} ** {a}", param="d ** x"),
    unary("softplus", "log1p(exp(-fabs(x))) + where(x > 0, x, 0.0)", "expit(x)", "t * (1.0 - t)",
          let={"t": "expit(x)"}, value="logaddexp(0.0, x)", example="-sps.log_expit(-x)", param="log(1 + exp(x))"),
    unary("logit", "log(x / (1.0 - x))", "1.0 / (x * (1.0 - x))", "(2.0 * x - 1.0) / (t * t)",
          let={"t": "x * (1.0 - x)"}, ufuncs=("sps.logit",), domain="U(0.1, 0.9)"),
    unary("divc", "x / d", "1.0 / d", value="x / d", example="x / 1.5", show="{a} / {d}", param="x / d"),
    # ------------------------------------------------------------ unary, zero derivative
    unary_zero("sign", "where(x != x, x, step(x > 0) - step(x < 0))", ufuncs=("np.sign",)),
    unary_zero("floor", "floor(x)", ufuncs=("np.floor",)),
    unary_zero("ceil", "ceil(x)", ufuncs=("np.ceil",)),
    unary_zero("rint", "rint(x)", ufuncs=("np.rint",)),
    unary_zero("trunc", "trunc(x)", ufuncs=("np.trunc",)),
    # x as a value without derivative, at every nesting level (tapegrad.stop_gradient)
    unary_zero("stop_gradient", "x", value="x", example="tg.stop_gradient(x)",
               show="stop_gradient({a})"),
    # the sign bit (1.0 / 0.0): true for -0.0 and NaNs with the bit set, as np.signbit; the rule
    # of np.signbit (rules/breadth.py) gives it as a boolean
    unary_zero("signbit", "step(signbit(x))", value="signbit(x)", example="np.signbit(x)",
               domain="N()"),
    # ------------------------------------------------------------ binary, differentiable
    binary("add", "a + b", "1.0", "1.0", ufuncs=("np.add",), show="{a} + {b}"),
    binary("subtract", "a - b", "1.0", "-1.0", ufuncs=("np.subtract",), show="{a} - {b}"),
    binary("multiply", "a * b", "b", "a", dab="1.0", ufuncs=("np.multiply",), show="{a} * {b}"),
    binary("divide", "a / b", "1.0 / b", "-a / (b * b)", dab="-1.0 / (b * b)",
           dbb="2.0 * a / (b * b * b)", ufuncs=("np.true_divide",), loop=True, show="{a} / {b}",
           domain=("N()", "away(0.4, 2)")),
    # the b-partials: a^b log(a); 0 at a = 0 (0^b is 0 for b > 0), NaN for a < 0 (a^b has no
    # real derivative in b there), as autograd's and JAX's
    binary("power", "pow(a, b)", "where(b == 0.0, 0.0, b * pow(a, b - 1.0))",
           "where(a == 0.0, 0.0, y * log(a))",
           daa="where(b * (b - 1.0) == 0.0, 0.0, b * (b - 1.0) * pow(a, b - 2.0))",
           dab="where(a == 0.0, where(b == 0.0, 0.0, pow(a, b - 1.0)), "
               "pow(a, b - 1.0) * (1.0 + b * la))",
           dbb="where(a == 0.0, 0.0, y * la * la)", let={"la": "log(a)"},
           ufuncs=("np.power", "np.float_power"), loop=True, show="{a} ** {b}",
           domain=("U(0.3, 3)", "N()")),
    binary("maximum", "where(a >= b or a != a, a, b)",
           # a NaN operand is the result, so it receives the derivative; ties split evenly
           "where(a != a, 1.0, where(b != b, 0.0, where(a == b, 0.5, step(a > b))))",
           "where(a != a, 0.0, where(b != b, 1.0, where(a == b, 0.5, step(a < b))))",
           ufuncs=("np.maximum",), domain=("grid(0.0)", "grid(0.1)")),
    binary("minimum", "where(a <= b or a != a, a, b)",
           "where(a != a, 1.0, where(b != b, 0.0, where(a == b, 0.5, step(a < b))))",
           "where(a != a, 0.0, where(b != b, 1.0, where(a == b, 0.5, step(a > b))))",
           ufuncs=("np.minimum",), domain=("grid(0.0)", "grid(0.1)")),
    binary("arctan2", "atan2(a, b)", "b / r", "-a / r", daa="-2.0 * a * b / r2",
           dab="(a * a - b * b) / r2", dbb="2.0 * a * b / r2",
           let={"r": "a * a + b * b", "r2": "r * r"}, ufuncs=("np.arctan2",), loop=True,
           domain=("away(0.3, 2)", "away(0.3, 2)")),
    # at (0, 0) the partials are 0 (the subgradient abs takes at 0, so |z| of a complex zero,
    # hypot of its parts, gets a zero gradient rather than 0 / 0)
    binary("hypot", "hypot(a, b)", "where(y == 0.0, 0.0, a / y)", "where(y == 0.0, 0.0, b / y)",
           daa="where(y == 0.0, 0.0, b * b / r3)", dab="where(y == 0.0, 0.0, -a * b / r3)",
           dbb="where(y == 0.0, 0.0, a * a / r3)", let={"r3": "y * y * y"},
           ufuncs=("np.hypot",), loop=True,
           domain=("away(0.3, 2)", "away(0.3, 2)")),
    binary("logaddexp", "where(a == b, a + LN2, where(a > b, a, b) + log1p(exp(-fabs(a - b))))",
           "exp(a - y)", "exp(b - y)", daa="ea * eb", dab="-ea * eb", dbb="ea * eb",
           let={"ea": "exp(a - y)", "eb": "exp(b - y)"}, ufuncs=("np.logaddexp",), loop=True),
    binary("where", "where(m != 0.0, a, b)", "step(m != 0.0)", "1.0 - step(m != 0.0)",
           example="np.where(a > b, a, b * b)", show="where({c}, {a}, {b})"),
    # ------------------------------------------------------------ comparisons: 1.0 / 0.0
    compare("less", "step(a < b)", ufuncs=("np.less",), show="{a} < {b}"),
    compare("less_equal", "step(a <= b)", ufuncs=("np.less_equal",), show="{a} <= {b}"),
    compare("greater", "step(a > b)", ufuncs=("np.greater",), show="{a} > {b}"),
    compare("greater_equal", "step(a >= b)", ufuncs=("np.greater_equal",), show="{a} >= {b}"),
    compare("equal", "step(a == b)", ufuncs=("np.equal",), show="{a} == {b}"),
    compare("not_equal", "step(a != b)", ufuncs=("np.not_equal",), show="{a} != {b}"),
    # ------------------------------------------------------------ hand-written in every sweep
    other("reduce", "sum", note="over a (pre, m, post) block: p0=pre, p1=m, p2=post"),
    other("reduce", "max"),
    other("reduce", "min"),
    other("reduce", "prod"),
    other("matmul", "matmul", show="{a} @ {b}",
          note="(batched) matrix product: p0=batch, p1=M, p2=K, p3=N, p4/p5 = batch strides of a/b"),
    other("move", "gather", show="gather({a})",
          note="y[i] = a[idx[i]],  idx = ipool[p0 : p0+n], p1 = size of a"),
    other("move", "scatter_add", show="scatter_add({a})",
          note="y = 0; y[idx[i]] += a[i], idx = ipool[p0 : p0+p1], p1 = size of a"),
    other("move", "copy", show="{a}", note="y[i] = a[i]"),
    other("move", "transpose", show="transpose({a})",
          note="a as (D, A, B, C) blocks (p0..p3), y as (D, B, A, C): y[d, j, i, k] = a[d, i, j, k]"),
    other("call", "call", note="a rule written in Python (linear algebra and friends), called with "
          "the GIL: operands a, b, c of sizes p0, p1, p2 (0 = absent), p3 = index of the rule object"),
]

# C names of the opcodes that differ from OP_<NAME upper> (kept from the first enum)
C_NAMES = {"reciprocal": "OP_RECIP", "subtract": "OP_SUB", "multiply": "OP_MUL", "divide": "OP_DIV",
           "power": "OP_POW", "less": "OP_LT", "less_equal": "OP_LE", "greater": "OP_GT",
           "greater_equal": "OP_GE", "equal": "OP_EQ", "not_equal": "OP_NE"}

# named constants of the formulas (the doubles nearest to log 2, log 10 and 2/sqrt(pi))
CONSTANTS = {"LN2": 0.6931471805599453, "LN10": 2.302585092994046,
             "TWO_OVER_SQRTPI": 1.1283791670955126}
