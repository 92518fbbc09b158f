"""autograd.scipy.linalg on tapegrad: tapegrad.scipy.linalg (SciPy's signatures)."""
from ...scipy.linalg import (solve_triangular, cholesky, cho_factor, cho_solve, solve, inv,  # noqa: F401
                             det)

__all__ = ["solve_triangular", "cholesky", "cho_factor", "cho_solve", "solve", "inv", "det"]
