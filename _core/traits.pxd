# cython: language_level=3
# Per-op traits: which fast path or shortcut a sweep may take for an opcode, as predicates over
# the opcode alone. Every sweep asks these (never a list of its own), so an op that takes a fast
# path in one sweep takes it by the same rule in the others where that sweep has a kernel for it.
# The semantic ones are generated from the primitive table (optraits.pxi); the ones written
# here are structural (families) or pick the sweeps' hand-written fast loops, so an op goes in
# one of those sets only when such a loop exists for it in every sweep that asks.
from .opcodes cimport *
from libc.math cimport NAN
from .kernels cimport un_d1, bin_d1

# generated from the primitive table: op_reads_y, op_const_partial, op_zero_derivative,
# op_is_linear_unary, op_linear_partial (their sets are computed from the derivative formulas)
include "optraits.pxi"


cdef inline bint op_elementwise(int code) noexcept nogil:
    """Unary or binary elementwise (including comparisons and zero-derivative unary ops)."""
    return code <= BIN_LAST


cdef inline bint op_has_partials(int code) noexcept nogil:
    """Elementwise with nonzero local partials (un_d1 / bin_d1 are meaningful): the scalar
    partials path stores them and the reverse of a one-element op is a multiply-add."""
    return code <= BIN_LAST and not op_zero_derivative(code)


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
    gather, scatter_add, copy, transpose. Their tangent is the op itself applied to the tangent."""
    return (code == OP_SUM or code == OP_GATHER or code == OP_SCATTER_ADD or code == OP_COPY
            or code == OP_TRANSPOSE)


cdef inline bint op_value_free_reverse(int code) noexcept nogil:
    """Does the adjoint of this op read no values (constant partials, a linear mover, or no
    derivative at all)?"""
    return op_const_partial(code) or op_linear_mover(code) or op_zero_derivative(code)
