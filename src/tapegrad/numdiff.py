"""Numerical (finite-difference) differentiation, for checking AD results.

Pure NumPy on purpose: this module is the independent oracle the rest of tapegrad is
tested against, so it must not depend on the tracer, the tape or the compiled core.

Step rules
----------
A difference quotient has two errors that pull the step ``h`` in opposite directions
(see e.g. Nocedal & Wright, *Numerical Optimization*, 2nd ed., sec. 8.1):

* truncation error from the Taylor remainder, which shrinks with ``h``:
  ``h |f''| / 2`` for one-sided (forward/backward) differences, ``h**2 |f'''| / 6`` for
  central differences;
* rounding error from evaluating ``f`` in floating point, which grows as ``h`` shrinks:
  about ``eps |f| / h``, where ``eps`` is the relative precision of ``f``'s values.

Balancing the two gives ``h ~ sqrt(eps)`` for one-sided differences (total error
``O(sqrt(eps))``) and ``h ~ eps**(1/3)`` for central differences (total error
``O(eps**(2/3))``). The factor ``(1 + |x|)`` makes the step relative to ``x`` when ``|x|``
is large (so ``x + h != x``) and absolute near zero (so ``h`` does not vanish at ``x = 0``).
``eps`` defaults to float64 machine epsilon; pass a larger ``eps`` (e.g. ``1e-4``) when
``f`` is known only to lower precision, or to reproduce a textbook example.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from .errors import TapegradValueError

__all__ = [
    "NumDiffResult",
    "default_step",
    "gradient",
    "jacobian",
    "derivative",
    "directional",
]

_METHODS = ("central", "forward", "backward")
_SCALES = ("elementwise", "max")
_DIRECTIONAL_ORDERS = (1, 2, 4)


@dataclass(frozen=True)
class NumDiffResult:
    """Result of a finite-difference estimate.

    Attributes
    ----------
    value : ndarray or float64
        The derivative estimate. ``gradient``: shaped like ``x``; ``jacobian``:
        ``out.shape + x.shape``; ``directional``: shaped like ``f``'s output.
    step : ndarray or float64
        The steps actually used (shaped like ``x``; a scalar for ``directional``). They are
        the rounded perturbations ``(x + h) - x``, which is what the quotient divides by.
    method : str
        ``"central"``, ``"forward"`` or ``"backward"`` (``"central4"`` for the
        fourth-order directional stencil).
    evaluations : int
        Number of calls made to ``f``.
    """

    value: Any
    step: Any
    method: str
    evaluations: int


# --------------------------------------------------------------------------- validation


def _check_method(method):
    if method not in _METHODS:
        raise TapegradValueError(f"method must be one of {_METHODS}, got {method!r}")


def _check_scale(scale):
    if scale not in _SCALES:
        raise TapegradValueError(f"scale must be one of {_SCALES}, got {scale!r}")


def _resolve_eps(eps):
    if eps is None:
        return float(np.finfo(np.float64).eps)
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise TapegradValueError(f"eps must be a real number, got {eps!r}") from None
    if not (np.isfinite(eps) and 0.0 < eps < 1.0):
        raise TapegradValueError(f"eps must be finite and in (0, 1), got {eps!r}")
    return eps


def _as_float_array(x, name="x"):
    """A float64 copy of ``x`` (never a view of the caller's data)."""
    if np.iscomplexobj(x):
        raise TapegradValueError(f"{name} must be real, got a complex value")
    try:
        arr = np.array(x, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:
        raise TapegradValueError(f"{name} must be convertible to a float64 array: {exc}") from None
    if not np.all(np.isfinite(arr)):
        raise TapegradValueError(f"{name} must be finite, got non-finite entries")
    return arr


def _as_output(y, what):
    if np.iscomplexobj(y):
        raise TapegradValueError(f"f returned a complex value {what}; only real outputs are supported")
    return np.asarray(y, dtype=np.float64)


def _present(arr):
    """Hand a 0-d result back as a float64 scalar (it still has ``shape == ()``)."""
    return arr[()] if arr.ndim == 0 else arr


class _Counted:
    """Calls ``f`` on a fresh copy of the point each time, and counts the calls."""

    def __init__(self, f, shape):
        self.f = f
        self.shape = shape
        self.calls = 0

    def __call__(self, point):
        self.calls += 1
        # A fresh object per call: f may mutate its argument without corrupting later
        # evaluations. Shape () is passed as a float64 scalar, which behaves like a float.
        arg = np.float64(point) if self.shape == () else np.array(point, dtype=np.float64)
        return self.f(arg)


# --------------------------------------------------------------------------- step rules


def default_step(x, method="central", eps=None, scale="elementwise"):
    """The default finite-difference step for each component of ``x``.

    Rules (``eps`` defaults to float64 machine epsilon, ``np.finfo(float).eps``):

    * ``forward`` / ``backward``: ``h_i = sqrt(eps) * (1 + |x_i|)``
    * ``central``: ``h_i = eps**(1/3) * (1 + |x_i|)``

    With ``scale="max"`` every component gets the textbook step
    ``h = (1 + max_i |x_i|) * eps**p`` (``p = 1/2`` or ``1/3``) instead.

    Why: a one-sided difference has truncation error ``~ h |f''| / 2`` and rounding error
    ``~ eps |f| / h``; their sum is smallest near ``h ~ sqrt(eps)``. A central difference
    has truncation error ``~ h**2 |f'''| / 6``, so the balance moves to ``h ~ eps**(1/3)``.
    The ``(1 + |x|)`` factor scales the step with ``x`` so it neither vanishes at ``x = 0``
    nor falls below the spacing of floats when ``|x|`` is large.

    Parameters
    ----------
    x : array_like
        The point (any shape; a Python float is fine).
    method : {"central", "forward", "backward"}
    eps : float, optional
        Relative precision of the function values; default float64 machine epsilon.
    scale : {"elementwise", "max"}

    Returns
    -------
    ndarray of float64, shaped like ``x`` (float64 scalar for a scalar ``x``).
    """
    _check_method(method)
    _check_scale(scale)
    eps = _resolve_eps(eps)
    x = np.asarray(x, dtype=np.float64)
    power = 1.0 / 3.0 if method == "central" else 0.5
    base = eps ** power
    if scale == "max":
        size = np.max(np.abs(x)) if x.size else 0.0
        h = np.full(x.shape, base * (1.0 + size))
    else:
        h = base * (1.0 + np.abs(x))
    return _present(np.asarray(h, dtype=np.float64))


def _steps(x, method, h, eps, scale):
    """Steps for ``x``: the rule, or the user's ``h``; rounded so ``x + h`` is exact."""
    if h is None:
        h = np.asarray(default_step(x, method, eps=eps, scale=scale), dtype=np.float64)
        name = "the default step (check x and eps)"
    else:
        try:
            h = np.asarray(h, dtype=np.float64)
        except (TypeError, ValueError):
            raise TapegradValueError(f"h must be a real scalar or array, got {h!r}") from None
        if h.ndim == 0:
            h = np.full(x.shape, float(h))
        elif h.shape != x.shape:
            raise TapegradValueError(
                f"h must be a scalar or have the shape of x {x.shape}, got shape {h.shape}"
            )
        name = "h"
    if not np.all(np.isfinite(h)):
        raise TapegradValueError(f"{name} must be finite, got non-finite step(s)")
    if np.any(h <= 0):
        raise TapegradValueError(f"{name} must be positive, got {h[h <= 0].ravel()[:3]} ...")
    # Divide by the perturbation the computer actually made, not the one we asked for
    # (a classic trick: the rounding of x + h otherwise adds an O(eps |x| / h) error).
    if method == "backward":
        h_eff = x - (x - h)
    else:
        h_eff = (x + h) - x
    if np.any(h_eff == 0):
        bad = np.flatnonzero(h_eff.ravel() == 0)[:3]
        raise TapegradValueError(
            f"{name} is too small: x + h == x at flat index {bad.tolist()} (step is zero)"
        )
    return h_eff


# --------------------------------------------------------------------------- estimators


def _difference_columns(f, x, method, h, eps, scale, scalar_only):
    """Shared loop of ``gradient`` and ``jacobian``: one difference per component of x.

    Returns (columns of shape (x.size,) + out.shape, out_shape, steps, evaluations).
    """
    _check_method(method)
    _check_scale(scale)
    x = _as_float_array(x)
    steps = _steps(x, method, h, eps, scale)
    fc = _Counted(f, x.shape)
    x_flat = x.ravel()
    h_flat = steps.ravel()

    out_shape = None

    def evaluate(point, where):
        nonlocal out_shape
        y = _as_output(fc(point.reshape(x.shape)), where)
        if scalar_only and y.ndim != 0:
            raise TapegradValueError(
                f"f must return a scalar for gradient(), got an output of shape {y.shape} "
                f"{where}; use jacobian() for vector-valued functions"
            )
        if out_shape is None:
            out_shape = y.shape
        elif y.shape != out_shape:
            raise TapegradValueError(
                f"f returned an output of shape {y.shape} {where}, but {out_shape} elsewhere"
            )
        return y

    f0 = None
    if method != "central" or x.size == 0:
        # One-sided differences reuse f(x); an empty x still needs it for the output shape.
        f0 = evaluate(x_flat, "at x")

    columns = []
    for i in range(x.size):
        xp = x_flat.copy()
        xm = x_flat.copy()
        if method == "central":
            xp[i] += h_flat[i]
            xm[i] -= h_flat[i]
            where = f"at x +/- h along flat index {i}"
            fp, fm = evaluate(xp, where), evaluate(xm, where)
        elif method == "forward":
            xp[i] += h_flat[i]
            fp, fm = evaluate(xp, f"at x + h along flat index {i}"), f0
        else:
            xm[i] -= h_flat[i]
            fp, fm = f0, evaluate(xm, f"at x - h along flat index {i}")
        columns.append((fp - fm) / (xp[i] - xm[i]))

    if columns:
        stacked = np.stack(columns)
    else:
        stacked = np.zeros((0,) + out_shape)
    return stacked, out_shape, x.shape, steps, fc.calls


def gradient(f, x, method="central", h=None, eps=None, scale="elementwise"):
    """Finite-difference gradient of a scalar function ``f`` at ``x``.

    Parameters
    ----------
    f : callable
        ``f(x) -> scalar``. It receives a fresh float64 array shaped like ``x`` on each
        call (a float64 scalar when ``x`` is a scalar); the caller's ``x`` is never mutated.
    x : array_like or float
        The point, any shape; converted to float64.
    method : {"central", "forward", "backward"}
        Central differences cost ``2 n`` calls with ``O(h**2)`` error; one-sided ones cost
        ``n + 1`` calls with ``O(h)`` error.
    h : float or array_like, optional
        Explicit positive step(s), a scalar or shaped like ``x``; overrides the rule.
    eps, scale :
        Passed to :func:`default_step` when ``h`` is not given.

    Returns
    -------
    NumDiffResult
        ``value`` and ``step`` shaped like ``x``.
    """
    cols, _, x_shape, steps, calls = _difference_columns(
        f, x, method, h, eps, scale, scalar_only=True
    )
    value = cols.reshape(x_shape)
    return NumDiffResult(_present(value), _present(steps), method, calls)


def jacobian(f, x, method="central", h=None, eps=None, scale="elementwise"):
    """Finite-difference Jacobian of an array-valued ``f`` at ``x``.

    ``value[i..., j...] = d f(x)[i...] / d x[j...]``, of shape ``out.shape + x.shape``
    (the same layout as ``tapegrad.jacobian``). Arguments are as for :func:`gradient`;
    ``f`` may return any (fixed) shape, including a scalar.
    """
    cols, out_shape, x_shape, steps, calls = _difference_columns(
        f, x, method, h, eps, scale, scalar_only=False
    )
    # cols is (x.size,) + out_shape; move the input axis to the back.
    value = np.moveaxis(cols, 0, -1).reshape(out_shape + x_shape)
    return NumDiffResult(_present(value), _present(steps), method, calls)


def derivative(f, x, method="central", h=None, eps=None, scale="elementwise"):
    """Finite-difference derivative of a function of one real variable.

    ``x`` must be a scalar. ``value`` is a float64 scalar for scalar ``f`` (or an array
    shaped like ``f``'s output if ``f`` is array-valued). Arguments as for :func:`gradient`.
    """
    if np.ndim(x) != 0:
        raise TapegradValueError(
            f"x must be a scalar for derivative(), got shape {np.shape(x)}; "
            "use gradient() or jacobian()"
        )
    return jacobian(f, x, method=method, h=h, eps=eps, scale=scale)


def directional(f, x, v, h=None, order=2, eps=None):
    """Finite-difference derivative of ``f`` at ``x`` along the direction ``v``.

    Estimates ``d/dt f(x + t v)`` at ``t = 0`` (a JVP ``J(x) v``), which is what gradient
    checking compares against: ``order=2`` (default) is the central difference
    ``(f(x + h v) - f(x - h v)) / (2 h)``; ``order=1`` is the forward difference
    ``(f(x + h v) - f(x)) / h``; ``order=4`` is the five-point stencil
    ``(-f(x+2hv) + 8 f(x+hv) - 8 f(x-hv) + f(x-2hv)) / (12 h)``.

    The default ``h`` makes the largest perturbation ``|h v_i|`` equal to the textbook
    rule ``eps**(1/(order+1)) * (1 + max|x|)`` (the error balance ``h**order ~ eps / h``).
    ``f`` may be scalar- or array-valued; ``value`` has the shape of ``f``'s output.
    """
    if order not in _DIRECTIONAL_ORDERS:
        raise TapegradValueError(f"order must be one of {_DIRECTIONAL_ORDERS}, got {order!r}")
    x = _as_float_array(x)
    v = _as_float_array(v, "v")
    if v.shape != x.shape:
        raise TapegradValueError(f"v must have the shape of x {x.shape}, got shape {v.shape}")
    if h is None:
        eps = _resolve_eps(eps)
        size = np.max(np.abs(x)) if x.size else 0.0
        v_size = np.max(np.abs(v)) if v.size else 0.0
        h = eps ** (1.0 / (order + 1)) * (1.0 + size) / (v_size if v_size > 0 else 1.0)
        name = "the default step (check x, v and eps)"
    else:
        if np.ndim(h) != 0:
            raise TapegradValueError(f"h must be a scalar for directional(), got shape {np.shape(h)}")
        name = "h"
    try:
        h = float(h)
    except (TypeError, ValueError):
        raise TapegradValueError(f"h must be a real scalar, got {h!r}") from None
    if not np.isfinite(h):
        raise TapegradValueError(f"{name} must be finite, got {h!r}")
    if h <= 0:
        raise TapegradValueError(f"{name} must be positive, got {h!r}")

    fc = _Counted(f, x.shape)

    def at(t):
        return _as_output(fc(x + t * v), f"at x + {t!r} * v")

    if order == 1:
        value = (at(h) - at(0.0)) / h
        method = "forward"
    elif order == 2:
        value = (at(h) - at(-h)) / (2.0 * h)
        method = "central"
    else:
        value = (-at(2.0 * h) + 8.0 * at(h) - 8.0 * at(-h) + at(-2.0 * h)) / (12.0 * h)
        method = "central4"
    return NumDiffResult(_present(np.asarray(value)), np.float64(h), method, fc.calls)
