"""Formulas of the primitive table, read once: their free names, their traits, and the two
translations made from them (Cython source for the generated kernels, NumPy functions for the
reference sweep and the recording values). Pure Python, no NumPy import."""
import ast

from ..errors import TapegradValueError
from .table import CONSTANTS

ELEMENT_VARS = {"x", "y", "d", "a", "b", "m"}
# formula function -> name in the NumPy namespace of the reference sweep
NUMPY_NAMES = {
    "exp": "np.exp", "log": "np.log", "log1p": "np.log1p", "expm1": "np.expm1",
    "sqrt": "np.sqrt", "sin": "np.sin", "cos": "np.cos", "tan": "np.tan", "asin": "np.arcsin",
    "acos": "np.arccos", "atan": "np.arctan", "sinh": "np.sinh", "cosh": "np.cosh",
    "tanh": "np.tanh", "asinh": "np.arcsinh", "acosh": "np.arccosh", "atanh": "np.arctanh",
    "exp2": "np.exp2", "log2": "np.log2", "log10": "np.log10", "cbrt": "np.cbrt",
    "erf": "sps.erf", "erfc": "sps.erfc", "expit": "sps.expit", "pow": "np.power",
    "power": "np.power", "fabs": "np.absolute", "floor": "np.floor", "ceil": "np.ceil",
    "rint": "np.rint", "trunc": "np.trunc", "atan2": "np.arctan2", "hypot": "np.hypot",
    "logaddexp": "np.logaddexp", "signbit": "np.signbit",
}
# formula function -> C function of the generated kernels (libc.math unless noted)
C_NAMES = {name: name for name in NUMPY_NAMES}
C_NAMES.update({"expit": "_expit"})   # a helper of kernels.pxd (stable for large |x|)
del C_NAMES["power"], C_NAMES["logaddexp"]  # NumPy-only (recording values)
HELPERS = {"where", "step"}


class FormulaError(TapegradValueError):
    """A formula of the primitive table that cannot be read (unknown name or function)."""


def parse(src):
    try:
        return ast.parse(src, mode="eval").body
    except SyntaxError as e:
        raise FormulaError(f"formula {src!r}: {e}") from None


def names(src):
    """Free element variables and let names of a formula."""
    return {n.id for n in ast.walk(parse(src)) if isinstance(n, ast.Name)} - set(CONSTANTS) \
        - set(NUMPY_NAMES) - HELPERS


def lets_used(srcs, let):
    """The let names the formulas use (transitively), in the table's order."""
    need, todo = set(), [n for s in srcs for n in names(s) if n in let]
    while todo:
        n = todo.pop()
        if n not in need:
            need.add(n)
            todo.extend(m for m in names(let[n]) if m in let)
    return [n for n in let if n in need]


def free_vars(src, let):
    """The element variables a formula reads, with its let names expanded."""
    out = set()
    for n in names(src):
        out |= free_vars(let[n], let) if n in let else {n}
    return out


def is_zero(src):
    node = parse(src)
    return isinstance(node, ast.Constant) and node.value == 0.0


def is_ieee_arithmetic(src):
    """Only + - * / and negation of variables and numbers (Python floats give NumPy's bits)."""
    for n in ast.walk(parse(src)):
        if not isinstance(n, (ast.BinOp, ast.UnaryOp, ast.Name, ast.Constant, ast.Load,
                              ast.Add, ast.Sub, ast.Mult, ast.Div, ast.USub)):
            return False
        if isinstance(n, ast.Name) and n.id not in ELEMENT_VARS:
            return False
    return True


class _Check(ast.NodeVisitor):
    def __init__(self, src, known):
        self.src, self.known = src, known

    def visit_Name(self, n):
        if n.id not in self.known and n.id not in CONSTANTS:
            raise FormulaError(f"formula {self.src!r}: unknown name {n.id!r}")

    def visit_Call(self, n):
        f = n.func.id if isinstance(n.func, ast.Name) else None
        if f not in NUMPY_NAMES and f not in HELPERS:
            raise FormulaError(f"formula {self.src!r}: unknown function {f!r}")
        if f == "where" and len(n.args) != 3 or f == "step" and len(n.args) != 1:
            raise FormulaError(f"formula {self.src!r}: {f} takes {3 if f == 'where' else 1} arguments")
        for a in n.args:
            self.visit(a)


def check(src, variables, let=()):
    _Check(src, set(variables) | set(let)).visit(parse(src))


# ------------------------------------------------------------------ Cython
class _ToCython(ast.NodeTransformer):
    def visit_Name(self, n):
        if n.id in CONSTANTS:
            return ast.copy_location(ast.Constant(CONSTANTS[n.id]), n)
        return n

    def visit_Call(self, n):
        self.generic_visit(n)
        f = n.func.id
        if f == "where":
            return ast.copy_location(ast.IfExp(test=n.args[0], body=n.args[1], orelse=n.args[2]), n)
        if f == "step":      # rendered as the cast <double>(c) below
            return ast.copy_location(ast.Call(ast.Name("__step__", ast.Load()), n.args, []), n)
        if f not in C_NAMES:
            raise FormulaError(f"{f} has no C function (NumPy-only)")
        n.func = ast.Name(C_NAMES[f], ast.Load())
        return n


def to_cython(src):
    """The formula as a Cython expression (same operations in the same order)."""
    text = ast.unparse(ast.fix_missing_locations(_ToCython().visit(parse(src))))
    return text.replace("__step__(", "<double>(")


# ------------------------------------------------------------------ NumPy
class _ToNumPy(ast.NodeTransformer):
    """Conditions (of where and step) are evaluated on plain values: they select, they carry
    no derivative, so on an outer recording's tracers they need not be traced."""

    def __init__(self):
        self.in_cond = 0

    def visit_Name(self, n):
        if n.id in CONSTANTS:
            return ast.copy_location(ast.Constant(CONSTANTS[n.id]), n)
        if self.in_cond:
            return ast.copy_location(ast.Call(ast.Name("_v", ast.Load()), [n], []), n)
        return n

    def _cond(self, node):
        self.in_cond += 1
        node = self.visit(node)
        self.in_cond -= 1
        return node

    def visit_BoolOp(self, n):
        fn = "np.logical_or" if isinstance(n.op, ast.Or) else "np.logical_and"
        vals = [self.visit(v) for v in n.values]
        out = vals[0]
        for v in vals[1:]:
            out = ast.Call(ast.parse(fn, mode="eval").body, [out, v], [])
        return ast.copy_location(out, n)

    def visit_Call(self, n):
        f = n.func.id
        if f == "where":
            c = self._cond(n.args[0])
            return ast.copy_location(ast.Call(ast.Name("_where", ast.Load()),
                                              [c, self.visit(n.args[1]), self.visit(n.args[2])], []), n)
        if f == "step":
            return ast.copy_location(ast.Call(ast.Name("_step", ast.Load()),
                                              [self._cond(n.args[0])], []), n)
        n.args = [self.visit(a) for a in n.args]
        n.func = ast.parse(NUMPY_NAMES[f], mode="eval").body
        return n


def to_numpy(src):
    return ast.unparse(ast.fix_missing_locations(_ToNumPy().visit(parse(src))))
