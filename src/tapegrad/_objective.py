"""What the descent methods share: the derivative adapter and the descent bookkeeping.

``Derivs`` gives value, gradient, hvp and Hessian of a loss either by replaying one recorded
tape (the fast path) or by re-tracing on every call (autograd's model, for checking and
benchmarking); ``flow`` (gradient flow, gradient descent) and ``hyper`` (hypergradient descent)
both work through it and never ask how derivatives are obtained. ``Descent`` is the common tail
of a descent loop: take the step, evaluate, record the iterate, stop on convergence or
divergence.
"""
import numpy as np

from .operators import api
from .operators.recorded import record
from .errors import TapegradTypeError


class Derivs:
    """Value, gradient, hvp and Hessian of ``f`` at points shaped like ``w0``.

    ``replay=True`` records one tape and replays it (the fast path); ``replay=False`` re-traces
    ``f`` on every call with ``value_and_grad`` / ``hvp`` / ``hessian`` (autograd's
    model, kept for checking and benchmarking). If ``f`` already has the tape methods it is used
    as it is. Counters record how many evaluations of each kind were made. Results are copied:
    a replay may hand back a buffer it reuses, and callers keep gradients across steps.
    """

    def __init__(self, f, w0, replay=True):
        self.shape = np.shape(w0)
        self.n_value = self.n_grad = self.n_hvp = self.n_hessian = 0
        if is_tape_like(f):
            self._tape, self._f = f, None
        elif not callable(f):
            raise TapegradTypeError("f must be a callable or a recorded tape, got %r" % type(f).__name__)
        else:
            self._f = f
            self._tape = record(f, as_point(w0)) if replay else None

    @property
    def tape(self):
        return self._tape

    def value(self, w):
        self.n_value += 1
        w = as_point(w)
        if self._tape is not None:
            return float(self._tape(w))
        return float(self._f(w))

    def grad(self, w):
        self.n_grad += 1
        w = as_point(w)
        if self._tape is not None:
            g = self._tape.grad(w)
        else:
            g = api.grad(self._f)(w)
        return np.array(g, dtype=float).reshape(self.shape)

    def value_and_grad(self, w):
        self.n_grad += 1
        w = as_point(w)
        if self._tape is not None:
            v, g = self._tape.value_and_grad(w)
        else:
            v, g = api.value_and_grad(self._f)(w)
        return float(v), np.array(g, dtype=float).reshape(self.shape)

    def hvp(self, w, v):
        self.n_hvp += 1
        w, v = as_point(w), as_point(v)
        if self._tape is not None:
            hv = self._tape.hvp(w, v)
        else:
            hv = api.hvp(self._f, (w,), (v,))
        return np.array(hv, dtype=float).reshape(self.shape)

    def hvp_matrix(self, w, V):
        """H(w) @ V for V of shape (d, k): one sweep with k lanes on a tape, k hvps otherwise."""
        self.n_hvp += V.shape[1]
        w = as_point(w)
        if self._tape is not None and hasattr(self._tape, "hvp_matrix"):
            return np.array(self._tape.hvp_matrix(w, V), dtype=float)
        cols = [np.ravel(self._tape.hvp(w, V[:, j].reshape(self.shape)) if self._tape is not None
                         else api.hvp(self._f, (w,), (V[:, j].reshape(self.shape),)))
                for j in range(V.shape[1])]
        return np.array(cols, dtype=float).T.reshape(V.shape)

    def hessian(self, w):
        self.n_hessian += 1
        w = as_point(w)
        if self._tape is not None:
            h = self._tape.hessian(w)
        else:
            h = api.hessian(self._f)(w)
        d = int(np.prod(self.shape))
        return np.array(h, dtype=float).reshape(d, d)


    # ---- many points at once (rows of W, each shaped like w0 raveled): the batched replay of
    # the tape when it has one, else a loop of the one-point methods
    def _batched(self, name):
        t = self._tape
        return getattr(t, name, None) if t is not None else None

    def _rows(self, W):
        return as_point(W).reshape((-1,) + self.shape)

    def grad_batch(self, W):
        fn = self._batched("grad_batch")
        if fn is None:
            return np.array([self.grad(w) for w in self._rows(W)]).reshape(len(W), -1)
        self.n_grad += len(W)
        return np.asarray(fn(self._rows(W)), dtype=float).reshape(len(W), -1)

    def value_and_grad_batch(self, W):
        fn = self._batched("value_and_grad_batch")
        if fn is None:
            vg = [self.value_and_grad(w) for w in self._rows(W)]
            return (np.array([v for v, _ in vg], dtype=float),
                    np.array([g for _, g in vg]).reshape(len(W), -1))
        self.n_grad += len(W)
        v, g = fn(self._rows(W))
        return np.asarray(v, dtype=float), np.asarray(g, dtype=float).reshape(len(W), -1)

    def hessian_batch(self, W):
        """(B, d, d): the tape's batched Hessians, else one batched hvp per unit vector (column
        j of every member's Hessian), else a loop."""
        d = int(np.prod(self.shape))
        fn = self._batched("hessian_batch")
        if fn is not None:
            self.n_hessian += len(W)
            return np.asarray(fn(self._rows(W)), dtype=float).reshape(len(W), d, d)
        fn = self._batched("hvp_batch")
        if fn is None:
            return np.array([self.hessian(w) for w in self._rows(W)])
        X = self._rows(W)
        H = np.empty((len(W), d, d))
        for j in range(d):
            e = np.zeros(d)
            e[j] = 1.0
            H[:, :, j] = np.asarray(fn(X, e.reshape(self.shape), v_axes=None)).reshape(len(W), d)
        self.n_hessian += len(W)
        return H


def is_tape_like(f):
    return all(hasattr(f, name) for name in ("grad", "value_and_grad", "hvp", "hessian")) \
        and callable(f)


def as_point(w):
    return np.ascontiguousarray(w, dtype=float)


def derivs_for(f, w0):
    """f itself if it is already a Derivs, else a replaying Derivs of f at points like w0."""
    return f if isinstance(f, Derivs) else Derivs(f, w0)


class Descent:
    """Iterates ``w[k]``, losses, gradient norms (and, if asked, gradients) of a descent run,
    and why it stopped: "max_steps" until ``converged`` (gradient norm <= tol) or ``step``
    finds the loss not finite or above ``f(w0) + diverge_factor * (1 + |f(w0)|)``."""

    def __init__(self, derivs, w, tol, diverge_factor, keep_grads=False):
        self.derivs, self.tol = derivs, tol
        v, g = derivs.value_and_grad(w)
        self.w, self.g = w, g
        self.ws, self.fs, self.gnorms = [w.copy()], [v], [float(np.linalg.norm(g))]
        self.gs = [g] if keep_grads else None
        self.limit = v + diverge_factor * (1.0 + abs(v))
        self.reason = "max_steps"

    def converged(self):
        """True, with reason "converged", when the last gradient norm is at most tol."""
        if self.tol is not None and self.gnorms[-1] <= self.tol:
            self.reason = "converged"
            return True
        return False

    def step(self, eta, step):
        """``w <- w - eta * step`` and record the new point; False (reason "diverged") when
        the run must stop."""
        w = self.w - eta * step
        v, g = self.derivs.value_and_grad(w)
        self.w, self.g = w, g
        self.ws.append(w.copy())
        self.fs.append(v)
        self.gnorms.append(float(np.linalg.norm(g)))
        if self.gs is not None:
            self.gs.append(g)
        if not (np.isfinite(v) and np.all(np.isfinite(w))) or v > self.limit:
            self.reason = "diverged"
            return False
        return True
