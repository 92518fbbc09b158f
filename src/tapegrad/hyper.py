"""Hypergradient step-size learning for gradient descent (Baydin et al., ICLR 2018).

Gradient descent with a step size per step, ``w[s+1] = w[s] - eta[s] g[s]`` with
``g[s] = grad f(w[s])``. The loss after the step, f(w[t]), depends on the earlier step sizes
through the unrolled iteration; by the chain rule (``dw[s+1]/dw[s] = I - eta[s] H[s]``,
``H[s] = hess f(w[s])``, ``dw[s+1]/d eta[s] = -g[s]``):

    d f(w[t]) / d eta[t-tau] = -g[t]^T (I - eta[t-1] H[t-1]) ... (I - eta[t-tau+1] H[t-tau+1]) g[t-tau]

For tau = 1 the product is empty: ``-g[t] . g[t-1]``, Baydin's horizon-1 hypergradient. Longer
horizons are accumulated right to left like a reverse sweep: a vector ``u`` starts at g[t] and is
multiplied by one factor ``(I - eta H)`` per step back, each a single Hessian-vector product
replayed from the recorded tape; no Hessian is ever formed, so the cost is horizon - 1 hvps per
step whatever the dimension.

``hypergradient_descent`` uses the sum of the partials over the last ``horizon`` steps, i.e. the
derivative of f(w[t]) when the step sizes of the whole window move together, as the hypergradient
of the next step size: ``eta[t] = eta[t-1] - alpha * sum_tau d f(w[t]) / d eta[t-tau]``.
Optionally alpha is learnt one level up the same way (horizon 1 at that level, as in Baydin et
al.): ``d f(w[t]) / d alpha[t-1] = -h[t] h[t-1]`` with h the hypergradients.

The additive rule is not scale-free: h has the units of f / eta, so multiplying f by c (or
changing the parametrization) moves the useful range of alpha by c^3, and on an
ill-conditioned problem only a tiny alpha is stable. ``rule="multiplicative"`` is Baydin et al.'s
multiplicative update, ``eta[t] = eta[t-1] * (1 - beta * c[t])`` with ``c[t] = h[t] /
(|g[t]| |g[t-1]|)``: for horizon 1, ``c = -cos(g[t], g[t-1])``, so the step size grows by at most
a factor (1 + beta) while consecutive gradients agree and shrinks while they disagree, whatever
the scale of f. ``c`` is dimensionless (eta has the units of w^2 / f); for horizons above 1 it is
clipped to [-1, 1] so that ``0 < beta < 1`` keeps eta positive.
"""
from dataclasses import dataclass

import numpy as np

from ._objective import Descent, as_point as _as_point, derivs_for as _derivs
from .errors import TapegradValueError

__all__ = ["HyperResult", "unrolled_loss", "unrolled_hypergradient", "hypergradient_descent"]


def unrolled_loss(f, w0, etas):
    """f(w[T]) after T = len(etas) GD steps ``w[s+1] = w[s] - etas[s] grad f(w[s])`` from w0."""
    w = _as_point(w0)
    derivs = _derivs(f, w)
    for eta in np.asarray(etas, dtype=float):
        w = w - eta * derivs.grad(w)
    return derivs.value(w)


def unrolled_hypergradient(f, w0, etas):
    """``(f(w[T]), d f(w[T]) / d etas)`` for the T-step unrolled GD loss, by hvps.

    The forward pass stores the iterates and gradients, the backward pass carries
    ``u = d f(w[T]) / d w[s+1]`` back with ``u <- u - eta[s] H[s] u`` (one hvp each, H symmetric).
    """
    w = _as_point(w0)
    derivs = _derivs(f, w)
    etas = np.asarray(etas, dtype=float)
    ws, gs = [], []
    for eta in etas:
        g = derivs.grad(w)
        ws.append(w)
        gs.append(g)
        w = w - eta * g
    loss, g_last = derivs.value_and_grad(w)
    return loss, _backward(derivs, ws, gs, etas, g_last)


def _backward(derivs, ws, gs, etas, u):
    """Partials of f(w[end]) w.r.t. each eta of the window (ws, gs, etas), given u = grad f(w[end])."""
    n = len(etas)
    partials = np.empty(n)
    for s in range(n - 1, -1, -1):
        partials[s] = -float(u @ gs[s])
        if s > 0:
            u = u - etas[s] * derivs.hvp(ws[s], u)
    return partials


@dataclass
class HyperResult:
    """Hypergradient descent history.

    ``w[k]`` are the iterates (w[0] = w0), ``f`` and ``grad_norm`` the loss and gradient norm
    there; ``eta[k]`` is the step size used to go from w[k] to w[k+1] and ``alpha[k]`` the hyper
    step size in force then. ``hypergrad[k]`` is the hypergradient used to set eta[k] (0 for k = 0)
    and ``partials[k]`` its parts ``d f(w[k]) / d eta[k-tau]`` for tau = min(horizon, k), ..., 1
    (oldest first), so ``partials[k][j]`` belongs to ``eta[k - len(partials[k]) + j]``.
    """
    w: np.ndarray
    f: np.ndarray
    grad_norm: np.ndarray
    eta: np.ndarray
    alpha: np.ndarray
    hypergrad: np.ndarray
    partials: list
    reason: str
    n_steps: int
    horizon: int


def hypergradient_descent(f, w0, eta0, hyper_lr, steps, horizon=1, hyper_hyper_lr=None,
                          tol=None, diverge_factor=1e8, rule="additive"):
    """Gradient descent whose step size is learnt online from hypergradients.

    ``horizon=1`` is Baydin et al.'s rule ``eta[t] = eta[t-1] + hyper_lr * g[t] . g[t-1]``;
    ``horizon=T`` differentiates f(w[t]) exactly through the last T steps (T - 1 hvps per step,
    see the module docstring). ``hyper_hyper_lr`` (kappa), if given, also learns the hyper step
    size: ``alpha[t] = alpha[t-1] + kappa * h[t] * h[t-1]``. Stops at gradient norm <= ``tol``,
    on divergence (loss not finite or grown by ``diverge_factor``), or after ``steps`` steps.

    ``rule="multiplicative"``: ``hyper_lr`` is Baydin et al.'s dimensionless beta, with
    ``0 < beta < 1``, and ``eta[t] = eta[t-1] * (1 - beta * c[t])``, ``c[t] = h[t] / (|g[t]|
    |g[t-1]|)`` clipped to [-1, 1] (see the module docstring); the same beta works whatever the
    scale of f. ``hypergrad`` then holds c. ``hyper_hyper_lr`` is for the additive rule only.
    """
    if int(horizon) < 1:
        raise TapegradValueError("horizon must be a positive integer, got %r" % horizon)
    if rule not in ("additive", "multiplicative"):
        raise TapegradValueError("hypergradient_descent: rule must be 'additive' or "
                                 "'multiplicative', got %r" % (rule,))
    multiplicative = rule == "multiplicative"
    if multiplicative:
        if not 0.0 < float(hyper_lr) < 1.0:
            raise TapegradValueError("hypergradient_descent: the multiplicative rule needs "
                                     "0 < hyper_lr < 1 (beta), got %r" % (hyper_lr,))
        if hyper_hyper_lr is not None:
            raise TapegradValueError("hypergradient_descent: hyper_hyper_lr is for the additive "
                                     "rule only")
    horizon = int(horizon)
    w = _as_point(w0).copy()
    derivs = _derivs(f, w)
    run = Descent(derivs, w, tol, diverge_factor, keep_grads=True)
    ws, gs = run.ws, run.gs
    etas, alphas, hypergrads, partials = [], [], [], []
    eta, alpha, h_prev = float(eta0), float(hyper_lr), None
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(steps):
            if run.converged():
                break
            if t == 0:
                h, parts = 0.0, np.empty(0)
            else:
                lo = max(0, t - horizon)
                parts = _backward(derivs, ws[lo:t], gs[lo:t], etas[lo:t], gs[t])
                h = float(parts.sum())
                if multiplicative:
                    norms = float(np.linalg.norm(gs[t])) * float(np.linalg.norm(gs[t - 1]))
                    h = min(1.0, max(-1.0, h / norms)) if norms > 0 else 0.0
                    eta = eta * (1.0 - alpha * h)
                else:
                    if hyper_hyper_lr is not None and h_prev is not None:
                        alpha = alpha + hyper_hyper_lr * h * h_prev
                    eta = eta - alpha * h
                h_prev = h
            etas.append(eta)
            alphas.append(alpha)
            hypergrads.append(h)
            partials.append(parts)
            if not run.step(eta, run.g):
                break
        else:
            run.converged()
    return HyperResult(w=np.array(ws), f=np.array(run.fs), grad_norm=np.array(run.gnorms),
                       eta=np.array(etas), alpha=np.array(alphas), hypergrad=np.array(hypergrads),
                       partials=partials, reason=run.reason, n_steps=len(ws) - 1, horizon=horizon)
