# cython: language_level=3
# Per-op traits: which fast path or shortcut a sweep may take for an opcode, as predicates over
# the opcode alone. Every sweep asks these (never a list of its own), so an op that takes a fast
# path in one sweep takes it by the same rule in the others where that sweep has a kernel for it.
# The names are stable; the bodies may later be generated from the primitive table (then the
# sets below are computed from the derivative formulas). Each one says what it means; a wrong
# answer here gives wrong derivatives, so a new op goes in a set only when it fits the meaning.
from .opcodes cimport *


cdef inline bint op_elementwise(int code) noexcept nogil:
    """Unary or binary elementwise (including comparisons and zero-derivative unary ops)."""
    return code <= BIN_LAST


cdef inline bint op_zero_derivative(int code) noexcept nogil:
    """Elementwise with a derivative that is zero everywhere it exists (sign, floor, ...,
    comparisons): no tangent, no adjoint, no second-order term."""
    return (UN_ZERO_FIRST <= code <= UN_LAST) or (CMP_FIRST <= code <= BIN_LAST)


cdef inline bint op_has_partials(int code) noexcept nogil:
    """Elementwise with nonzero local partials (un_d1 / bin_d1 are meaningful): the scalar
    partials path stores them and the reverse of a one-element op is a multiply-add."""
    return code <= BIN_LAST and not op_zero_derivative(code)


cdef inline bint op_reads_y(int code) noexcept nogil:
    """Does the first derivative of this elementwise op read its own value y (see un_d1,
    bin_d1)? Then the fused tail must compute y even when nothing else needs it."""
    return (code == OP_EXP or code == OP_EXPM1 or code == OP_SQRT or code == OP_RECIP
            or code == OP_TAN or code == OP_TANH or code == OP_EXP2 or code == OP_CBRT
            or code == OP_EXPIT or code == OP_RPOWC or code == OP_POW or code == OP_HYPOT
            or code == OP_LOGADDEXP)


cdef inline bint op_is_linear_unary(int code) noexcept nogil:
    """Unary y = s x + t with s, t depending only on the op's constant d (x + d, x * d, x / d,
    d - x, -x): the tangent is s times the operand's tangent, the adjoint s times y_bar."""
    return (code == OP_ADDC or code == OP_MULC or code == OP_DIVC or code == OP_RSUBC
            or code == OP_NEG)


cdef inline bint op_const_partial(int code) noexcept nogil:
    """Elementwise with partials that are constants independent of the values: the linear
    unary ops, and a + b, a - b. (The fused tail folds their adjoints into uniform
    coefficients; their reverse reads no value.)"""
    return op_is_linear_unary(code) or code == OP_ADD or code == OP_SUB


cdef inline bint op_cheap_unary(int code) noexcept nogil:
    """Unary ops whose value, tangent and adjoint are one or two flops per element: each sweep
    runs them as a plain contiguous loop of their own (vectorizable), not through the kernel
    chains. The linear unary ops and x * x."""
    return op_is_linear_unary(code) or code == OP_SQUARE


cdef inline bint op_algebraic_d1(int code) noexcept nogil:
    """Unary ops whose derivative is algebraic in x and y (exp: y, tanh: 1 - y^2, log: 1 / x,
    sqrt: 0.5 / y, expit: y (1 - y)): the reverse sweep runs it as a vectorizable loop with the
    same values as un_d1. (The tangent sweeps compute un_d1 once per element for all lanes,
    so they gain nothing from it.)"""
    return (code == OP_EXP or code == OP_TANH or code == OP_LOG or code == OP_SQRT
            or code == OP_EXPIT)


cdef inline bint op_cheap_binary(int code) noexcept nogil:
    """Binary ops with a one-flop value and trivial partials (a + b, a - b, a * b): same-size
    operands take contiguous loops of their own in every sweep, and a repeated row operand
    (a bias) takes the row loops where a sweep has them."""
    return code == OP_ADD or code == OP_SUB or code == OP_MUL


cdef inline bint op_linear_mover(int code) noexcept nogil:
    """Non-elementwise ops linear in their one operand whose adjoint reads no value: sum,
    gather, scatter_add, copy. Their tangent is the op itself applied to the tangent."""
    return code == OP_SUM or code == OP_GATHER or code == OP_SCATTER_ADD or code == OP_COPY


cdef inline bint op_value_free_reverse(int code) noexcept nogil:
    """Does the adjoint of this op read no values (constant partials, a linear mover, or no
    derivative at all)?"""
    return op_const_partial(code) or op_linear_mover(code) or op_zero_derivative(code)
