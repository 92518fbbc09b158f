"""Gradient flow, (preconditioned) gradient descent and step-size bounds on recorded tapes.

The continuous picture is the flow ``dw/dt = -A grad f(w)``; the discrete one is gradient
descent ``w <- w - eta A grad f(w)``, which is the explicit Euler method for that flow with step
eta. A is symmetric positive definite: a matrix, a vector (a diagonal), a positive scalar, or a
callable ``v -> A v`` (a ``scipy.sparse.linalg.LinearOperator`` works too).

Everything here goes through one small adapter, ``_objective.Derivs``, built on ``record``: the
loss is traced once and every right-hand side, Jacobian and Hessian-vector product afterwards is a
replay of that tape (which re-records by itself if a Python branch in ``f`` flips). The flow code
never asks how derivatives are obtained, so ``f`` may also be an already recorded tape, or any
object with the same methods (``__call__``, ``grad``, ``value_and_grad``, ``hvp``, ``hessian``).

Why the implicit methods get the exact Jacobian: on an ill-conditioned problem the flow is stiff
(eigenvalues of ``A hess f`` spread over many decades). Explicit methods (RK45) are then limited
by stability, not accuracy, to steps ~ 3 / lambda_max; BDF/Radau/LSODA take steps set by the slow
modes, but only if the Newton iterations inside them see the true Jacobian ``-A hess f(w)``.
Without ``jac`` scipy would estimate it with d extra right-hand sides per Jacobian.

Step sizes: on a quadratic with Hessian H, GD multiplies the error by ``I - eta A H``, so it
converges iff ``eta < 2 / lambda_max(A H)``. :func:`stable_step` returns that sharp value and the
two bounds of the theory, ``2 / (beta lambda_max(A))`` (sharp when A is a multiple of the
identity) and the descent-lemma bound ``2 lambda_min(A) / (beta lambda_max(A)^2)``, with
``beta = lambda_max(hess f(w))`` from Lanczos on hvps (:func:`smoothness`).
"""
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg as spla
from scipy import integrate

from .errors import TapegradTypeError, TapegradValueError
from .operators import api as _api

__all__ = [
    "FlowResult", "GDResult", "StepBound", "Comparison",
    "FlowJVP", "FlowGrad", "gradient_flow", "gradient_flow_jvp", "gradient_flow_grad",
    "gradient_descent", "compare_flow_gd", "smoothness", "stable_step",
    "hessian_diagonal", "cli_report", "PROBLEMS",
]

_SOLVERS = {"RK45": integrate.RK45, "RK23": integrate.RK23, "DOP853": integrate.DOP853,
            "BDF": integrate.BDF, "Radau": integrate.Radau, "LSODA": integrate.LSODA}
# Below this dimension a dense eigen-decomposition is cheaper and more robust than ARPACK.
_DENSE_EIG_MAX_DIM = 8
# Up to this dimension "jacobi" uses the exact Hessian diagonal (d hvps); above, an estimate.
JACOBI_EXACT_MAX_DIM = 256


# the derivative adapter (replay or re-trace) and the descent bookkeeping, shared with hyper.py
from ._objective import (Derivs as _Derivs, Descent as _Descent,  # noqa: E402
                         as_point as _as_point, derivs_for as _derivs)


# ---------------------------------------------------------------------------------------------
# Preconditioners
# ---------------------------------------------------------------------------------------------
class _Precond:
    """A fixed symmetric positive definite A in one of its accepted forms."""

    def __init__(self, A, d):
        self.d = d
        self.kind = None
        self._bounds = None
        if A is None:
            self.kind, self.A = "identity", None
        elif isinstance(A, str):
            raise TapegradValueError("named preconditioner %r is only available in gradient_descent; "
                             "the flow needs a fixed A" % A)
        elif scipy.sparse.issparse(A) or isinstance(A, spla.LinearOperator):
            if A.shape != (d, d):
                raise TapegradValueError("A has shape %s, expected %s" % (A.shape, (d, d)))
            self.kind, self.A = "operator", A
        elif callable(A):
            self.kind, self.A = "callable", A
        else:
            arr = np.asarray(A, dtype=float)
            if arr.ndim == 0:
                if not arr > 0:
                    raise TapegradValueError("a scalar A must be positive, got %g" % arr)
                self.kind, self.A = "diagonal", np.full(d, float(arr))
            elif arr.ndim == 1:
                if arr.shape != (d,):
                    raise TapegradValueError("diagonal A has shape %s, expected %s" % (arr.shape, (d,)))
                if not np.all(arr > 0):
                    raise TapegradValueError("diagonal A must be positive")
                self.kind, self.A = "diagonal", arr
            elif arr.ndim == 2:
                if arr.shape != (d, d):
                    raise TapegradValueError("A has shape %s, expected %s" % (arr.shape, (d, d)))
                scale = max(np.abs(arr).max(), 1e-300)
                if np.abs(arr - arr.T).max() > 1e-10 * scale:
                    raise TapegradValueError("A must be symmetric")
                evals = np.linalg.eigvalsh(arr)
                if evals[0] <= 0:
                    raise TapegradValueError("A must be positive definite (smallest eigenvalue %g)"
                                     % evals[0])
                self.kind, self.A = "matrix", arr
                self._bounds = (float(evals[0]), float(evals[-1]))
            else:
                raise TapegradValueError("A must be a matrix, a vector or a callable")

    def matvec(self, v):
        if self.kind == "identity":
            return v
        if self.kind == "diagonal":
            return self.A * v
        if self.kind == "matrix":
            return self.A @ v
        if self.kind == "operator":
            return np.asarray(self.A @ v, dtype=float).reshape(v.shape)
        return np.asarray(self.A(v), dtype=float).reshape(v.shape)

    def matmat(self, M):
        """A @ M for a dense (d, k) M."""
        if self.kind == "identity":
            return M
        if self.kind == "diagonal":
            return self.A[:, None] * M
        if self.kind == "matrix":
            return self.A @ M
        return np.column_stack([self.matvec(M[:, j]) for j in range(M.shape[1])])

    def dense(self):
        if self.kind == "identity":
            return np.eye(self.d)
        if self.kind == "diagonal":
            return np.diag(self.A)
        if self.kind == "matrix":
            return self.A
        return self.matmat(np.eye(self.d))

    def eig_bounds(self):
        """(lambda_min(A), lambda_max(A))."""
        if self._bounds is None:
            if self.kind == "identity":
                self._bounds = (1.0, 1.0)
            elif self.kind == "diagonal":
                self._bounds = (float(self.A.min()), float(self.A.max()))
            elif self.d <= 512:
                M = self.dense()
                evals = np.linalg.eigvalsh(0.5 * (M + M.T))
                self._bounds = (float(evals[0]), float(evals[-1]))
            else:
                op = spla.LinearOperator((self.d, self.d), matvec=self.matvec, dtype=float)
                hi = spla.eigsh(op, k=1, which="LA", return_eigenvectors=False)[0]
                lo = spla.eigsh(op, k=1, which="SA", return_eigenvectors=False)[0]
                self._bounds = (float(lo), float(hi))
            if self._bounds[0] <= 0:
                raise TapegradValueError("A must be positive definite (smallest eigenvalue %g)"
                                 % self._bounds[0])
        return self._bounds


# ---------------------------------------------------------------------------------------------
# Gradient flow
# ---------------------------------------------------------------------------------------------
@dataclass
class FlowResult:
    """The solution of ``dw/dt = -A grad f(w)``.

    ``w[i]`` is the state at ``t[i]``; ``f`` and ``grad_norm`` are the loss and the (not
    preconditioned) gradient norm there. ``n_steps`` counts accepted solver steps; ``nfev``,
    ``njev`` and ``nlu`` are scipy's statistics; ``n_rhs`` and ``n_jac`` are our own counts of
    right-hand sides and tape Jacobians (``n_rhs`` includes the right-hand sides scipy spends
    on finite-difference Jacobians, which its ``nfev`` leaves out); ``sol`` is scipy's own result (with the dense
    interpolant in ``sol.sol`` when ``dense_output=True``).

    An ensemble (``w0`` of shape ``(B, d)``) is one ODE of dimension ``B * d``: then ``w`` has
    shape ``(len(t), B, d)``, ``f`` and ``grad_norm`` ``(len(t), B)`` (member b is ``w[:, b]``),
    ``batch`` is B, and the counts are those of the joint solve (one right-hand side is one
    batched replay of all members).
    """
    t: np.ndarray
    w: np.ndarray
    f: np.ndarray
    grad_norm: np.ndarray
    method: str
    n_steps: int
    nfev: int
    njev: int
    nlu: int
    n_rhs: int
    n_jac: int
    success: bool
    message: str
    sol: Any = field(repr=False, default=None)
    batch: Optional[int] = None

    def at(self, t):
        """States at times ``t`` from the dense interpolant, shape ``(len(t), d)`` (``(len(t),
        B, d)`` for an ensemble)."""
        if self.sol is None or self.sol.sol is None:
            raise TapegradValueError("call gradient_flow(..., dense_output=True) to interpolate")
        y = np.asarray(self.sol.sol(np.atleast_1d(t))).T
        return y if self.batch is None else y.reshape(len(y), self.batch, -1)


def _counting(method):
    """A subclass of a solve_ivp method class that counts accepted steps (scipy does not)."""
    if isinstance(method, str):
        if method not in _SOLVERS:
            raise TapegradValueError("unknown solve_ivp method %r (one of %s)" % (method, ", ".join(_SOLVERS)))
        base = _SOLVERS[method]
    elif isinstance(method, type) and issubclass(method, integrate.OdeSolver):
        base = method
    else:
        raise TapegradTypeError("method must be a solve_ivp method name or an OdeSolver subclass")

    class Counted(base):
        n_accepted = 0

        def step(self):
            t_before = self.t
            message = super().step()
            if self.t != t_before:
                Counted.n_accepted += 1
            return message

    Counted.__name__ = base.__name__
    return Counted, base


def gradient_flow(f, w0, t_span, A=None, method="RK45", t_eval=None, rtol=1e-8, atol=1e-10,
                  jac=True, sparse="auto", **solve_ivp_kwargs):
    """Integrate ``dw/dt = -A grad f(w)`` from ``w(t_span[0]) = w0`` with ``scipy.integrate.solve_ivp``.

    The right-hand side replays one recorded tape of ``f``. Implicit methods (BDF, Radau, LSODA)
    get the exact Jacobian ``-A hess f(w)`` from the same tape unless ``jac=False`` (then scipy
    estimates it by finite differences). Other keywords go to ``solve_ivp``.

    sparse: for BDF and Radau, hand scipy a sparse Jacobian (the Hessian's pattern from the tape,
    its values from colored hvp lanes) and, with ``jac=False``, the pattern as ``jac_sparsity``.
    "auto" does so when the pattern fills at most 5% of the matrix (d >= 100) and A is None, a
    scalar, a diagonal or a sparse matrix; True forces it, False never.

    An ensemble: ``w0`` of shape ``(B, d)`` integrates B flows together as one ODE of dimension
    ``B * d`` (see :class:`FlowResult` for the shapes): each right-hand side is one batched
    replay (``grad_batch``) of all members, and BDF/Radau get the block-diagonal Jacobian of
    the members' ``-A hess f`` blocks as a sparse matrix (LSODA: dense).
    """
    w0 = _as_point(w0)
    if w0.ndim == 2:
        return _gradient_flow_batch(f, w0, t_span, A, method, t_eval, rtol, atol, jac, sparse,
                                    solve_ivp_kwargs)
    if w0.ndim != 1:
        raise TapegradValueError("w0 must be a 1-D array, got shape %s" % (w0.shape,))
    derivs = _derivs(f, w0)
    P = _Precond(A, w0.size)
    solver, base = _counting(method)
    implicit = issubclass(base, (integrate.BDF, integrate.Radau, integrate.LSODA))

    counts = [0, 0]

    def rhs(t, w):
        counts[0] += 1
        return -P.matvec(derivs.grad(w))

    def jacobian(t, w):
        counts[1] += 1
        return -P.matmat(derivs.hessian(w))

    kwargs = dict(solve_ivp_kwargs)
    pattern = _sparse_plan(derivs, P, base, sparse, w0.size)
    if pattern is not None:
        tape = derivs.tape

        def sparse_jacobian(t, w):
            counts[1] += 1
            return -_apply_sparse(P, tape.sparse_hessian(_as_point(w)))   # pattern kept by the tape

        if jac:
            kwargs["jac"] = sparse_jacobian
        else:
            kwargs["jac_sparsity"] = _apply_sparse(P, pattern.astype(float)) != 0
    elif implicit and jac:
        kwargs["jac"] = jacobian
    sol = integrate.solve_ivp(rhs, t_span, w0, method=solver, t_eval=t_eval, rtol=rtol,
                              atol=atol, **kwargs)
    W = np.ascontiguousarray(sol.y.T)
    losses, gnorms = np.empty(len(sol.t)), np.empty(len(sol.t))
    for i, w in enumerate(W):
        v, g = derivs.value_and_grad(w)
        losses[i], gnorms[i] = v, np.linalg.norm(g)
    return FlowResult(t=sol.t, w=W, f=losses, grad_norm=gnorms, method=base.__name__,
                      n_steps=solver.n_accepted, nfev=int(sol.nfev), njev=int(sol.njev),
                      nlu=int(sol.nlu), n_rhs=counts[0], n_jac=counts[1], success=bool(sol.success), message=str(sol.message),
                      sol=sol)


def _rows_times_A(P, G):
    """Each row g of G (B, d) replaced by A g, with the bits of P.matvec(g)."""
    if P.kind == "identity":
        return G
    if P.kind == "diagonal":
        return P.A * G
    return np.array([P.matvec(g) for g in G]).reshape(G.shape)


def _block_diagonal(blocks, fmt="csc"):
    """The (B d, B d) block-diagonal matrix of B dense (d, d) blocks: BSR with one block per
    block row (the members of an ensemble do not interact), in scipy's format ``fmt``."""
    B, d = blocks.shape[0], blocks.shape[1]
    M = scipy.sparse.bsr_matrix((blocks, np.arange(B), np.arange(B + 1)), shape=(B * d, B * d))
    return M.asformat(fmt)


def _ensemble_setup(where, f, W, A):
    """(B, d, derivatives of f, preconditioner) of an ensemble W (B, d) of starting points."""
    B, d = W.shape
    if B == 0 or d == 0:
        raise TapegradValueError("%s: an ensemble w0 must have shape (B, d) with B, d > 0, got %s"
                                 % (where, W.shape))
    return B, d, _derivs(f, W[0]), _Precond(A, d)


def _gradient_flow_batch(f, W0, t_span, A, method, t_eval, rtol, atol, jac, sparse, kw):
    """gradient_flow for an ensemble W0 (B, d): one ODE of dimension B d."""
    B, d, derivs, P = _ensemble_setup("gradient_flow", f, W0, A)
    solver, base = _counting(method)
    sparse_jac = issubclass(base, (integrate.BDF, integrate.Radau))
    # LSODA takes no sparse matrix, but a banded one: block diagonal is banded (d - 1 off
    # diagonals), in LAPACK's packed form (jac_packed[u + i - j, j] = jac[i, j])
    banded = issubclass(base, integrate.LSODA) and "lband" not in kw and "uband" not in kw
    ii, jj = np.indices((d, d))
    pack_rows = (d - 1) + ii - jj
    pack_cols = np.arange(B)[:, None, None] * d + jj[None]
    counts = [0, 0]

    def rhs(t, y):
        counts[0] += 1
        return -_rows_times_A(P, derivs.grad_batch(y.reshape(B, d))).reshape(-1)

    def jacobian(t, y):
        counts[1] += 1
        H = derivs.hessian_batch(y.reshape(B, d))
        blocks = -np.stack([P.matmat(h) for h in H]) if P.kind != "identity" else -H
        if banded:
            J = np.zeros((2 * d - 1, B * d))
            J[pack_rows[None], pack_cols] = blocks
            return J
        M = _block_diagonal(blocks)
        return M if sparse_jac else M.toarray()

    kwargs = dict(kw)
    if banded:
        kwargs["lband"] = kwargs["uband"] = d - 1
    pattern = _sparse_plan(derivs, P, base, sparse, d)
    if pattern is not None:
        tape = derivs.tape

        def sparse_jacobian(t, y):
            counts[1] += 1
            return -scipy.sparse.block_diag([_apply_sparse(P, tape.sparse_hessian(_as_point(w)))
                                             for w in y.reshape(B, d)], format="csc")

        if jac:
            kwargs["jac"] = sparse_jacobian
        else:
            one = _apply_sparse(P, pattern.astype(float)) != 0
            kwargs["jac_sparsity"] = scipy.sparse.block_diag([one] * B, format="csc") != 0
    elif issubclass(base, (integrate.BDF, integrate.Radau, integrate.LSODA)):
        if jac:
            kwargs["jac"] = jacobian
        elif sparse_jac:
            # scipy's finite differences then need d right-hand sides per Jacobian, not B d
            kwargs["jac_sparsity"] = _block_diagonal(np.ones((B, d, d)))
    sol = integrate.solve_ivp(rhs, t_span, W0.reshape(-1), method=solver, t_eval=t_eval,
                              rtol=rtol, atol=atol, **kwargs)
    W = np.ascontiguousarray(sol.y.T).reshape(len(sol.t), B, d)
    losses, gnorms = np.empty((len(sol.t), B)), np.empty((len(sol.t), B))
    for i, Wi in enumerate(W):
        v, G = derivs.value_and_grad_batch(Wi)
        losses[i], gnorms[i] = v, np.linalg.norm(G, axis=1)
    return FlowResult(t=sol.t, w=W, f=losses, grad_norm=gnorms, method=base.__name__,
                      n_steps=solver.n_accepted, nfev=int(sol.nfev), njev=int(sol.njev),
                      nlu=int(sol.nlu), n_rhs=counts[0], n_jac=counts[1],
                      success=bool(sol.success), message=str(sol.message), sol=sol, batch=B)


def _sparse_plan(derivs, P, base, sparse, d):
    """The Hessian pattern when the flow should use sparse Jacobians, else None."""
    if sparse is False or not issubclass(base, (integrate.BDF, integrate.Radau)):
        if sparse is True and not issubclass(base, (integrate.BDF, integrate.Radau)):
            raise TapegradValueError("sparse=True needs method='BDF' or 'Radau' (scipy's sparse "
                                     "Jacobians)")
        return None
    tape = derivs.tape
    if tape is None or not hasattr(tape, "hessian_sparsity"):
        if sparse is True:
            raise TapegradValueError("sparse=True needs a recorded tape of f (replay=True)")
        return None
    if P.kind not in ("identity", "diagonal") and not (P.kind == "operator"
                                                       and scipy.sparse.issparse(P.A)):
        if sparse is True:
            raise TapegradValueError("sparse=True needs A to be None, a scalar, a diagonal or a "
                                     "scipy.sparse matrix")
        return None
    H = tape.hessian_sparsity()
    if sparse == "auto" and (d < 100 or H.nnz > 0.05 * d * d):
        return None
    return H


def _apply_sparse(P, H):
    """A H for a sparse H, kept sparse (A: identity, diagonal or a sparse matrix)."""
    H = scipy.sparse.csr_matrix(H)
    if P.kind == "identity":
        return H
    if P.kind == "diagonal":
        return scipy.sparse.diags(P.A) @ H
    return scipy.sparse.csr_matrix(P.A @ H)


# ---------------------------------------------------------------------------------------------
# Sensitivities of the flow: d w(T) / d w0 (forward), d L(w(T)) / d (w0, theta) (adjoint)
# ---------------------------------------------------------------------------------------------
@dataclass
class FlowJVP:
    """``w`` = w(T) and ``tangent`` = d w(T)/d w0 @ v (+ d w(T)/d theta @ v_theta), shaped like v.

    ``nfev`` and ``njev`` are scipy's counts for the augmented ODE; ``sol`` its result."""
    w: np.ndarray
    tangent: np.ndarray
    t_final: float
    nfev: int
    njev: int
    success: bool
    message: str
    sol: Any = field(repr=False, default=None)


@dataclass
class FlowGrad:
    """``loss`` = L(w(T)), ``w`` = w(T), ``grad_w0`` = d L / d w0 (shaped like w0) and
    ``grad_theta`` = d L / d theta (shaped like theta; None without theta), by the adjoint
    method. ``forward`` is the FlowResult of the forward solve; ``nfev_backward`` counts the
    adjoint ODE's right-hand sides (one hvp each)."""
    loss: float
    w: np.ndarray
    grad_w0: np.ndarray
    grad_theta: Optional[np.ndarray]
    forward: Any
    nfev_backward: int
    success: bool
    message: str


class _Joint:
    """f(w) or f(w, theta) as one function of z = (w, theta.ravel()), recorded once, so one hvp
    lane gives both H_ww u and H_theta,w u (the mixed second derivatives the adjoint needs)."""

    def __init__(self, f, w0, theta, where):
        self.d = w0.size
        if theta is None:
            self.theta, self.p = None, 0
            self.derivs = _derivs(f, w0)
            return
        if not callable(f) or hasattr(f, "hvp"):
            raise TapegradTypeError("%s: with theta=..., f must be a plain function f(w, theta), "
                                    "not a recorded tape" % where)
        theta = _as_point(theta)
        self.theta, self.p = theta, theta.size
        d, shape = self.d, theta.shape

        def joint(z):
            return f(z[:d], z[d:].reshape(shape))
        self.derivs = _Derivs(joint, self.z(w0))

    def z(self, w):
        return w if self.theta is None else np.concatenate([w, self.theta.ravel()])

    def grad_w(self, w):
        return self.derivs.grad(self.z(w))[:self.d]

    def hessian(self, w):
        return self.derivs.hessian(self.z(w))


def _check_t_final(t_final, where):
    t_final = float(t_final)
    if not (np.isfinite(t_final) and t_final > 0):
        raise TapegradValueError("%s: t_final must be a positive number, got %r" % (where, t_final))
    return t_final


def _lanes(v, n, what, where):
    """v as an (n, k) matrix of k lanes (a vector: one lane) and whether it was a vector."""
    V = np.asarray(v, dtype=float)
    if V.ndim == 1 and V.shape == (n,):
        return V[:, None], True
    if V.ndim == 2 and V.shape[0] == n:
        return V, False
    raise TapegradValueError("%s: %s must have shape (%d,) or (%d, k), got %s"
                             % (where, what, n, n, V.shape))


def gradient_flow_jvp(f, w0, t_final, v, A=None, theta=None, v_theta=None, method="RK45",
                      rtol=1e-10, atol=1e-12, **solve_ivp_kwargs):
    """Forward sensitivities of the flow ``dw/dt = -A grad_w f(w[, theta])``.

    Returns :class:`FlowJVP` with w(T) and ``d w(T)/d w0 @ v`` (plus ``d w(T)/d theta @ v_theta``
    when theta and v_theta are given), from the augmented ODE ``w' = -A g(w)``,
    ``S' = -A (H_ww S + H_w,theta V_theta)``, ``S(0) = v``: v may hold k lanes (shape (d, k));
    all of them go through one tangent-of-reverse sweep per right-hand side. Implicit methods
    (BDF, Radau, LSODA) get the block-diagonal part of the augmented Jacobian (``-A H`` per
    block); the coupling term d S'/d w needs third derivatives and is left out, which only makes
    their Newton iterations converge more slowly (the solution is set by rtol/atol as usual).
    """
    where = "gradient_flow_jvp"
    t_final = _check_t_final(t_final, where)
    w0 = _as_point(w0)
    if w0.ndim != 1:
        raise TapegradValueError("%s: w0 must be a 1-D array, got shape %s" % (where, w0.shape))
    d = w0.size
    joint = _Joint(f, w0, theta, where)
    S0, was_vector = _lanes(v, d, "v", where)
    k = S0.shape[1]
    if v_theta is not None:
        if theta is None:
            raise TapegradValueError("%s: v_theta needs theta" % where)
        Vt = np.asarray(v_theta, dtype=float)
        shape = joint.theta.shape
        if Vt.shape == shape:
            Vt = Vt.reshape(joint.p, 1)
        elif Vt.shape[:len(shape)] == shape and Vt.ndim == len(shape) + 1:
            Vt = Vt.reshape(joint.p, Vt.shape[-1])
        else:
            raise TapegradValueError("%s: v_theta must have theta's shape %s (or that plus a lane "
                                     "axis), got %s" % (where, shape, Vt.shape))
        if Vt.shape[1] != k:
            raise TapegradValueError("%s: v has %d lanes and v_theta %d" % (where, k, Vt.shape[1]))
    else:
        Vt = np.zeros((joint.p, k))
    P = _Precond(A, d)
    solver, base = _counting(method)
    derivs = joint.derivs

    def rhs(t, y):
        w, S = y[:d], y[d:].reshape(d, k)
        z = joint.z(w)
        g = derivs.grad(z)[:d]
        HS = derivs.hvp_matrix(z, np.vstack([S, Vt]))[:d]
        return np.concatenate([-P.matvec(g), -P.matmat(HS).ravel()])

    kwargs = dict(solve_ivp_kwargs)
    if issubclass(base, (integrate.BDF, integrate.Radau, integrate.LSODA)) and "jac" not in kwargs:
        def jacobian(t, y):
            J = scipy.sparse.csr_matrix(-P.matmat(joint.hessian(y[:d])[:d, :d]))
            return scipy.sparse.block_diag([J, scipy.sparse.kron(J, scipy.sparse.eye(k))],
                                           format="csc")
        kwargs["jac"] = jacobian
    y0 = np.concatenate([w0, S0.ravel()])
    sol = integrate.solve_ivp(rhs, (0.0, t_final), y0, method=solver, rtol=rtol, atol=atol,
                              t_eval=[t_final], **kwargs)
    yT = sol.y[:, -1]
    tangent = yT[d:].reshape(d, k)
    return FlowJVP(w=yT[:d].copy(), tangent=tangent[:, 0].copy() if was_vector else tangent.copy(),
                   t_final=t_final, nfev=int(sol.nfev), njev=int(sol.njev),
                   success=bool(sol.success), message=str(sol.message), sol=sol)


def gradient_flow_grad(f, w0, t_final, loss=None, A=None, theta=None, method="RK45",
                       rtol=1e-10, atol=1e-12, **solve_ivp_kwargs):
    """d L(w(T)) / d w0 and d L(w(T)) / d theta for the flow ``dw/dt = -A grad_w f(w[, theta])``,
    by the adjoint method.

    ``loss`` is a function L(w) of the final state (traced with value_and_grad); None means f
    itself at the end, ``L = f(w(T)[, theta])``, whose direct dependence on theta is included.
    A forward solve with dense output gives w(t); the adjoint ``lambda(t) = d L / d w(t)`` then
    runs backward from ``lambda(T) = grad L(w(T))`` with ``lambda' = H_ww A lambda`` and
    ``q' = H_theta,w A lambda`` (q(T): L's own theta gradient), so that ``lambda(0) = dL/dw0`` and
    ``q(0) = dL/dtheta``; each backward right-hand side is one hvp lane of the tape of f in
    (w, theta). A must be symmetric (as everywhere in this module). The accuracy is that of the
    two solves and of the forward dense output, i.e. set by rtol/atol. Implicit methods get the
    exact Jacobians of both solves (dense: d + theta.size squared).
    """
    where = "gradient_flow_grad"
    t_final = _check_t_final(t_final, where)
    w0 = _as_point(w0)
    if w0.ndim != 1:
        raise TapegradValueError("%s: w0 must be a 1-D array, got shape %s" % (where, w0.shape))
    if loss is not None and not callable(loss):
        raise TapegradTypeError("%s: loss must be a function of w(T) or None" % where)
    d = w0.size
    joint = _Joint(f, w0, theta, where)
    p, derivs = joint.p, joint.derivs
    # the forward solve: f's own tape, or with theta a tape of f(., theta) (theta a constant)
    f_w = derivs if theta is None else _Derivs(lambda w: f(w, joint.theta), w0)
    fwd = gradient_flow(f_w, w0, (0.0, t_final), A=A, method=method, t_eval=[0.0, t_final],
                        rtol=rtol, atol=atol, dense_output=True, **solve_ivp_kwargs)
    if not fwd.success:
        raise TapegradValueError("%s: the forward solve failed: %s" % (where, fwd.message))
    wT = fwd.w[-1]
    if loss is None:
        L, gz = derivs.value_and_grad(joint.z(wT))
        lamT, qT = gz[:d], gz[d:]
    else:
        L, lamT = _api.value_and_grad(loss)(wT)
        lamT, qT = np.ravel(np.asarray(lamT, dtype=float)), np.zeros(p)
        if lamT.shape != (d,):
            raise TapegradValueError("%s: loss must map w of shape (%d,) to a scalar" % (where, d))
    P = _Precond(A, d)
    dense = fwd.sol.sol
    count = [0]

    def rhs(t, y):
        count[0] += 1
        u = np.concatenate([P.matvec(y[:d]), np.zeros(p)])
        return derivs.hvp(joint.z(dense(t)), u)

    solver, base = _counting(method)
    kwargs = dict(solve_ivp_kwargs)
    if issubclass(base, (integrate.BDF, integrate.Radau, integrate.LSODA)) and "jac" not in kwargs:
        def jacobian(t, y):
            H = joint.hessian(dense(t))
            J = np.zeros((d + p, d + p))
            J[:, :d] = P.matmat(H[:d, :]).T                    # H[:, :d] A, A symmetric
            return J
        kwargs["jac"] = jacobian
    back = integrate.solve_ivp(rhs, (t_final, 0.0), np.concatenate([lamT, qT]), method=solver,
                               rtol=rtol, atol=atol, t_eval=[0.0], **kwargs)
    y0 = back.y[:, -1]
    return FlowGrad(loss=float(L), w=wT.copy(), grad_w0=y0[:d].copy(),
                    grad_theta=None if theta is None else y0[d:].reshape(joint.theta.shape),
                    forward=fwd, nfev_backward=count[0], success=bool(back.success),
                    message=str(back.message))


# ---------------------------------------------------------------------------------------------
# Hessian diagonal (Jacobi preconditioning)
# ---------------------------------------------------------------------------------------------
def hessian_diagonal(f, w, exact=None, n_samples=64, seed=0):
    """The diagonal of ``hess f(w)``.

    Exact (from the Hessian, d hvps) when ``exact`` is true or, by default, when
    ``d <= JACOBI_EXACT_MAX_DIM``. Otherwise the Bekas-Kokiopoulou-Saad estimator
    ``sum_k v_k * (H v_k) / sum_k v_k * v_k`` with Rademacher probes v_k, which costs
    ``n_samples`` hvps whatever d is, and is exact for a diagonal H.
    """
    w = _as_point(w)
    derivs = _derivs(f, w)
    d = w.size
    if exact is None:
        exact = d <= JACOBI_EXACT_MAX_DIM
    if exact:
        return np.diag(derivs.hessian(w)).copy()
    rng = np.random.default_rng(seed)
    num, den = np.zeros(d), np.zeros(d)
    for _ in range(n_samples):
        v = rng.choice((-1.0, 1.0), size=d)
        num += v * derivs.hvp(w, v)
        den += v * v
    return num / den


def _jacobi_scale(diag):
    """1 / |diag|, with tiny or zero entries floored so the step stays bounded."""
    a = np.abs(diag)
    floor = max(a.max(), 1e-300) * 1e-8
    return 1.0 / np.maximum(a, floor)


# ---------------------------------------------------------------------------------------------
# Gradient descent
# ---------------------------------------------------------------------------------------------
@dataclass
class GDResult:
    """Iterates ``w[k]`` (k = 0 .. n_steps, w[0] = w0), losses, gradient norms, why it stopped.

    ``reason`` is ``"converged"`` (gradient norm <= tol), ``"diverged"`` (loss not finite or
    grown by ``diverge_factor``), ``"max_steps"``, or ``"singular"`` (Newton on a singular
    Hessian).

    An ensemble (``w0`` of shape ``(B, d)``): ``w`` has shape ``(K + 1, B, d)``, ``f`` and
    ``grad_norm`` ``(K + 1, B)``, ``n_steps`` is an array of B step counts (K the largest) and
    ``reason`` a list of B reasons; member b's run is ``w[:n_steps[b] + 1, b]`` (a member that
    stopped earlier keeps its last iterate in the rows after).
    """
    w: np.ndarray
    f: np.ndarray
    grad_norm: np.ndarray
    eta: float
    reason: str
    n_steps: int
    preconditioner: str


def gradient_descent(f, w0, eta, steps, A=None, tol=None, diverge_factor=1e8, refresh=1,
                     jacobi_exact=None, jacobi_samples=64, seed=0):
    """Run ``w <- w - eta A grad f(w)`` for at most ``steps`` steps.

    A is None (plain GD), a fixed SPD matrix / vector / scalar / callable, or a name:
    ``"newton"`` uses ``A = hess f(w)^{-1}`` (so eta = 1 is Newton's method, one step on a
    quadratic) and ``"jacobi"`` uses ``A = 1 / |diag hess f(w)|`` (see :func:`hessian_diagonal`
    for exact vs estimated). Named preconditioners are recomputed every ``refresh`` steps.
    Stops when the gradient norm is at most ``tol``, when the loss stops being finite or exceeds
    ``f(w0) + diverge_factor * (1 + |f(w0)|)``, or after ``steps`` steps.

    An ensemble: ``w0`` of shape ``(B, d)`` runs B descents together, each step one batched
    replay (``value_and_grad_batch``) of the members still running; each member stops on its
    own (see :class:`GDResult` for the shapes). Its iterates equal separate runs' bit for bit.
    A must then be fixed (not "newton" or "jacobi").
    """
    w = _as_point(w0).copy()
    if w.ndim == 2:
        if isinstance(A, str):
            raise TapegradValueError("gradient_descent: an ensemble w0 (shape %s) takes a fixed A, "
                                     "not the named preconditioner %r" % (w.shape, A))
        return _gradient_descent_batch(f, w, eta, steps, A, tol, diverge_factor)
    if w.ndim != 1:
        raise TapegradValueError("w0 must be a 1-D array, got shape %s" % (w.shape,))
    derivs = _derivs(f, w)
    d = w.size
    named = A if isinstance(A, str) else None
    if named not in (None, "newton", "jacobi"):
        raise TapegradValueError("unknown preconditioner %r (use 'newton', 'jacobi', an SPD matrix, a "
                         "vector or a callable)" % A)
    P = None if named else _Precond(A, d)

    run = _Descent(derivs, w, tol, diverge_factor)
    scale, H_factor = None, None
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(steps):
            if run.converged():
                break
            w, g = run.w, run.g
            if named == "newton":
                if k % refresh == 0:
                    try:
                        with warnings.catch_warnings():  # singularity is reported as a reason
                            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
                            H_factor = scipy.linalg.lu_factor(derivs.hessian(w))
                    except (ValueError, np.linalg.LinAlgError):
                        run.reason = "singular"
                        break
                    if np.any(np.diag(H_factor[0]) == 0):
                        run.reason = "singular"
                        break
                step = scipy.linalg.lu_solve(H_factor, g)
            elif named == "jacobi":
                if k % refresh == 0:
                    scale = _jacobi_scale(hessian_diagonal(
                        derivs, w, exact=jacobi_exact, n_samples=jacobi_samples, seed=seed + k))
                step = scale * g
            else:
                step = P.matvec(g)
            if not run.step(eta, step):
                break
        else:
            run.converged()
    return GDResult(w=np.array(run.ws), f=np.array(run.fs), grad_norm=np.array(run.gnorms),
                    eta=float(eta), reason=run.reason, n_steps=len(run.ws) - 1,
                    preconditioner=named or (P.kind if P else "identity"))


def _gradient_descent_batch(f, W, eta, steps, A, tol, diverge_factor):
    """gradient_descent for an ensemble W (B, d), with the bits of B separate runs."""
    B, d, derivs, P = _ensemble_setup("gradient_descent", f, W, A)
    v, G = derivs.value_and_grad_batch(W)
    limit = v + diverge_factor * (1.0 + np.abs(v))
    ws, fs, gns = [W.copy()], [v.copy()], [np.linalg.norm(G, axis=1)]
    active = np.ones(B, bool)
    reason = ["max_steps"] * B
    n_steps = np.zeros(B, int)

    def converge():
        if tol is None:
            return
        for b in np.flatnonzero(active & (gns[-1] <= tol)):
            reason[b] = "converged"
            active[b] = False

    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(steps):
            converge()
            if not active.any():
                break
            idx = np.flatnonzero(active)
            Wn = W[idx] - eta * _rows_times_A(P, G[idx])
            vn, Gn = derivs.value_and_grad_batch(Wn)
            W, G, v = W.copy(), G.copy(), v.copy()
            W[idx], G[idx], v[idx] = Wn, Gn, vn
            n_steps[idx] += 1
            gn = gns[-1].copy()
            gn[idx] = np.linalg.norm(Gn, axis=1)
            ws.append(W)
            fs.append(v)
            gns.append(gn)
            bad = ~(np.isfinite(vn) & np.all(np.isfinite(Wn), axis=1)) | (vn > limit[idx])
            for b in idx[bad]:
                reason[b] = "diverged"
                active[b] = False
        else:
            converge()
    return GDResult(w=np.array(ws), f=np.array(fs), grad_norm=np.array(gns), eta=float(eta),
                    reason=reason, n_steps=n_steps, preconditioner=P.kind)


# ---------------------------------------------------------------------------------------------
# Step-size theory
# ---------------------------------------------------------------------------------------------
def smoothness(f, w, which="LA", tol=1e-10, return_vector=False):
    """Local smoothness beta: the largest eigenvalue of ``hess f(w)``, by Lanczos on hvps.

    ``scipy.sparse.linalg.eigsh`` runs on a ``LinearOperator`` whose matvec is one replayed hvp,
    so the Hessian is never formed (tiny problems, d <= 8, use the dense Hessian instead: ARPACK
    needs d > k + 1 and is wasteful there). ``which="LA"`` is the largest algebraic eigenvalue,
    the one that limits GD; ``which="LM"`` the largest in magnitude (the Lipschitz constant of
    the gradient on non-convex problems).
    """
    w = _as_point(w)
    derivs = _derivs(f, w)
    d = w.size
    if which not in ("LA", "LM"):
        raise TapegradValueError("which must be 'LA' or 'LM'")
    if d <= _DENSE_EIG_MAX_DIM:
        H = derivs.hessian(w)
        evals, evecs = np.linalg.eigh(0.5 * (H + H.T))
        i = int(np.argmax(evals if which == "LA" else np.abs(evals)))
        beta, vec = float(evals[i]), evecs[:, i]
    else:
        op = spla.LinearOperator((d, d), matvec=lambda v: derivs.hvp(w, np.ravel(v)), dtype=float)
        v0 = np.ones(d) / math.sqrt(d)  # deterministic start: results are reproducible
        evals, evecs = spla.eigsh(op, k=1, which=which, tol=tol, v0=v0)
        beta, vec = float(evals[0]), evecs[:, 0]
    return (beta, vec) if return_vector else beta


@dataclass
class StepBound:
    """Step-size bounds for ``w <- w - eta A grad f(w)`` near ``w``.

    - ``eta_max = 2 / (beta lambda_max(A))``: GD on the local quadratic model is stable below it;
      sharp when A is a multiple of the identity (so for plain GD on a quadratic, GD converges
      just below and diverges just above it).
    - ``eta_descent = 2 lambda_min(A) / (beta lambda_max(A)^2)``: the looser descent-lemma bound,
      below which every step decreases a beta-smooth f.
    - ``eta_sharp = 2 / lambda_max(A hess f(w))``: the exact stability limit on the local quadratic
      model for any A (``>= eta_max``; equal to it when A = cI).
    """
    eta_max: float
    eta_descent: float
    eta_sharp: float
    beta: float
    lambda_min_A: float
    lambda_max_A: float

    def __float__(self):
        return self.eta_max


def stable_step(f, w, A=None):
    """The step-size bounds of :class:`StepBound` at ``w`` (beta from :func:`smoothness`)."""
    w = _as_point(w)
    derivs = _derivs(f, w)
    P = _Precond(A, w.size)
    beta = smoothness(derivs, w)
    lo, hi = P.eig_bounds()
    if beta <= 0:
        inf = float("inf")
        return StepBound(inf, inf, inf, beta, lo, hi)
    if P.kind == "identity":
        sharp_lambda = beta
    else:
        sharp_lambda = _largest_eig_AH(derivs, w, P)
    eta_sharp = 2.0 / sharp_lambda if sharp_lambda > 0 else float("inf")
    return StepBound(eta_max=2.0 / (beta * hi), eta_descent=2.0 * lo / (beta * hi * hi),
                     eta_sharp=eta_sharp, beta=beta, lambda_min_A=lo, lambda_max_A=hi)


def _largest_eig_AH(derivs, w, P):
    """Largest eigenvalue of A H (real: A H is similar to A^1/2 H A^1/2), Arnoldi on hvps."""
    d = w.size
    if d <= _DENSE_EIG_MAX_DIM:
        M = P.matmat(derivs.hessian(w))
        return float(np.max(np.linalg.eigvals(M).real))
    op = spla.LinearOperator((d, d), matvec=lambda v: P.matvec(derivs.hvp(w, np.ravel(v))),
                             dtype=float)
    v0 = np.ones(d) / math.sqrt(d)
    evals = spla.eigs(op, k=1, which="LR", tol=1e-10, v0=v0, return_eigenvectors=False)
    return float(evals[0].real)


# ---------------------------------------------------------------------------------------------
# Flow vs gradient descent
# ---------------------------------------------------------------------------------------------
@dataclass
class Comparison:
    """GD iterate k against the flow at time k*eta, for each eta.

    ``deviation[i] = max_k ||w_gd(eta_i)[k] - w_flow(k eta_i)||`` over ``k eta_i <= t_final``;
    it shrinks like O(eta) (GD is explicit Euler for the flow). ``order`` is the fitted slope of
    log deviation against log eta (about 1). ``flow_loss_at_gd_end[i]`` is the flow's loss at the
    time of the last GD iterate of run i, to set against ``final_loss_gd[i]``. ``figure`` is the matplotlib figure if one was drawn.
    """
    etas: np.ndarray
    deviation: np.ndarray
    final_loss_gd: np.ndarray
    flow_loss_at_gd_end: np.ndarray
    final_loss_flow: float
    t_final: float
    order: float
    bound: StepBound
    flow: FlowResult
    gd: list
    figure: Any = field(repr=False, default=None)


def compare_flow_gd(f, w0, etas=None, t_final=None, A=None, method="RK45", rtol=1e-10,
                    atol=1e-12, plot=False, out=None):
    """Compare GD with several step sizes against the gradient flow on ``[0, t_final]``.

    ``etas`` defaults to 5%, 10%, 20% and 40% of ``stable_step(f, w0, A).eta_max``;
    ``t_final`` to 50 times the largest of them. With ``plot=True`` or an ``out`` file name a
    picture is drawn (needs matplotlib): loss against time for the flow and each GD run, and for
    2-D problems the contours of f with the trajectories.
    """
    w0 = _as_point(w0)
    derivs = _derivs(f, w0)
    bound = stable_step(derivs, w0, A)
    if etas is None:
        etas = bound.eta_max * np.array([0.05, 0.1, 0.2, 0.4])
    etas = np.atleast_1d(np.asarray(etas, dtype=float))
    if t_final is None:
        t_final = 50.0 * float(etas.max())
    flow = gradient_flow(derivs, w0, (0.0, t_final), A=A, method=method, rtol=rtol, atol=atol,
                         dense_output=True)
    runs, deviation, final_gd, flow_end = [], [], [], []
    for eta in etas:
        n = int(math.floor(t_final / eta + 1e-9))
        gd = gradient_descent(derivs, w0, eta, n, A=A)
        times = eta * np.arange(gd.n_steps + 1)
        ref = flow.at(times)
        deviation.append(float(np.max(np.linalg.norm(gd.w - ref, axis=1))))
        final_gd.append(float(gd.f[-1]))
        flow_end.append(derivs.value(ref[-1]))
        runs.append(gd)
    deviation = np.array(deviation)
    ok = (deviation > 0) & np.isfinite(deviation)
    order = float(np.polyfit(np.log(etas[ok]), np.log(deviation[ok]), 1)[0]) \
        if ok.sum() >= 2 else float("nan")
    result = Comparison(etas=etas, deviation=deviation, final_loss_gd=np.array(final_gd),
                        flow_loss_at_gd_end=np.array(flow_end),
                        final_loss_flow=float(flow.f[-1]), t_final=float(t_final), order=order,
                        bound=bound, flow=flow, gd=runs)
    if plot or out is not None:
        result.figure = plot_comparison(result, derivs, out=out)
    return result


def _matplotlib_figure():
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("drawing the flow/GD picture needs matplotlib, an optional extra: "
                          "pip install 'tapegrad[plot]' (or pip install matplotlib)") from exc
    return Figure


def _gd_style(gd):
    return ".-" if gd.n_steps <= 200 else "-"  # markers only while they can be told apart


def plot_comparison(result, f=None, out=None):
    """Draw a :class:`Comparison`; returns the matplotlib Figure (saved to ``out`` if given).

    Uses ``matplotlib.figure.Figure`` directly, so no pyplot state or GUI backend is touched.
    For the contour panel of 2-D problems, pass ``f`` (a function or tape).
    """
    Figure = _matplotlib_figure()
    flow = result.flow
    two_d = flow.w.shape[1] == 2 and f is not None
    fig = Figure(figsize=(11 if two_d else 6, 4.5))
    ax = fig.add_subplot(1, 2 if two_d else 1, 1)
    positive = np.all(flow.f > 0) and all(np.all(g.f > 0) for g in result.gd)
    ax.plot(flow.t, flow.f, "k--", lw=1.5, zorder=3, label="flow (%s)" % flow.method)
    for eta, gd in zip(result.etas, result.gd):
        ax.plot(eta * np.arange(gd.n_steps + 1), gd.f, _gd_style(gd), ms=3, lw=1.2,
                label="GD eta=%.3g" % eta)
    if positive:
        ax.set_yscale("log")
    ax.set_xlabel("time t (GD step k at t = k eta)")
    ax.set_ylabel("loss f(w)")
    ax.set_title("gradient flow vs gradient descent")
    ax.legend(fontsize=8)
    if two_d:
        derivs = _derivs(f, flow.w[0])
        ax2 = fig.add_subplot(1, 2, 2)
        pts = np.vstack([flow.w] + [g.w for g in result.gd])
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        pad = 0.15 * np.maximum(hi - lo, 1e-3)
        xs = np.linspace(lo[0] - pad[0], hi[0] + pad[0], 120)
        ys = np.linspace(lo[1] - pad[1], hi[1] + pad[1], 120)
        Z = np.array([[derivs.value(np.array([x, y])) for x in xs] for y in ys])
        levels = np.quantile(Z[np.isfinite(Z)], np.linspace(0.0, 1.0, 25) ** 2)
        ax2.contour(xs, ys, Z, levels=np.unique(levels), cmap="viridis", linewidths=0.7)
        ax2.plot(flow.w[:, 0], flow.w[:, 1], "k--", lw=1.5, zorder=3, label="flow")
        for eta, gd in zip(result.etas, result.gd):
            ax2.plot(gd.w[:, 0], gd.w[:, 1], _gd_style(gd), ms=3, lw=1.2,
                     label="GD eta=%.3g" % eta)
        ax2.set_xlabel("w[0]")
        ax2.set_ylabel("w[1]")
        ax2.set_title("trajectories")
    fig.tight_layout()
    if out is not None:
        fig.savefig(out, dpi=120)
    return fig


# ---------------------------------------------------------------------------------------------
# CLI: tapegrad flow --problem quadratic|rosenbrock|logistic
# ---------------------------------------------------------------------------------------------
def _quadratic_problem():
    H = np.array([[10.0, 3.0], [3.0, 1.5]])

    def f(w):
        return 0.5 * w @ (H @ w)

    return f, np.array([1.0, 1.0])


def _rosenbrock_problem():
    def f(w):
        return (1.0 - w[0]) ** 2 + 100.0 * (w[1] - w[0] ** 2) ** 2

    return f, np.array([-1.2, 1.0])


def _logistic_problem(n=200, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * np.linspace(0.5, 3.0, d)
    y = np.where(X @ rng.standard_normal(d) + 0.5 * rng.standard_normal(n) > 0, 1.0, -1.0)
    Xy = X * y[:, None]

    def f(w):
        # mean log(1 + exp(-y x.w)) + a small ridge term, written with logaddexp for stability
        return np.mean(np.logaddexp(0.0, -(Xy @ w))) + 0.05 * np.sum(w * w)

    return f, np.zeros(d)


PROBLEMS = {"quadratic": _quadratic_problem, "rosenbrock": _rosenbrock_problem,
            "logistic": _logistic_problem}
# Default flow end times for the CLI: long enough to show the slow phase (Rosenbrock's valley),
# short enough that GD at 5% of the step bound stays a few tens of thousands of steps.
_CLI_T_FINAL = {"quadratic": 4.0, "rosenbrock": 2.0, "logistic": 20.0}


def cli_report(problem="quadratic", eta=None, method="RK45", t_final=None, out=None):
    """What ``tapegrad flow`` prints (its options are parsed by ``tapegrad.cli``): flow vs GD on
    a test problem, as a table, optionally with a picture; returns the exit status."""
    f, w0 = PROBLEMS[problem]()
    try:
        t_final = t_final if t_final is not None else _CLI_T_FINAL[problem]
        cmp = compare_flow_gd(f, w0, etas=eta, t_final=t_final, method=method,
                              rtol=1e-9, atol=1e-12, out=out)
    except ImportError as exc:
        print("error: %s" % exc)
        return 2
    b, flow = cmp.bound, cmp.flow
    print("problem %s, d = %d, f(w0) = %.6g" % (problem, w0.size, flow.f[0]))
    print("step bound at w0: beta = %.6g, eta_max = 2/beta = %.6g, descent bound = %.6g"
          % (b.beta, b.eta_max, b.eta_descent))
    print("flow (%s) to t = %.6g: %d steps, %d rhs evaluations, %d Jacobians, f = %.6g, %s"
          % (flow.method, cmp.t_final, flow.n_steps, flow.nfev, flow.njev, flow.f[-1],
             "ok" if flow.success else "FAILED: " + flow.message))
    header = "%12s %9s %7s %14s %14s %14s %10s" % (
        "eta", "eta/bound", "steps", "max|gd-flow|", "f(gd final)", "f(flow, t_k)", "stopped")
    print(header)
    print("-" * len(header))
    for eta, dev, gd, f_flow in zip(cmp.etas, cmp.deviation, cmp.gd, cmp.flow_loss_at_gd_end):
        print("%12.5g %9.3f %7d %14.4g %14.6g %14.6g %10s" % (
            eta, eta / b.eta_max, gd.n_steps, dev, gd.f[-1], f_flow, gd.reason))
    print("deviation ~ eta^%.2f (explicit Euler: order 1)" % cmp.order)
    if out:
        print("picture written to %s" % out)
    return 0
