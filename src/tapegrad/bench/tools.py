"""The tools compared: each one turns a workload into callables the timer runs.

A tool's ``prepare(w)`` returns a ``Prepared``: ``deriv()`` computes the workload's derivative
(gradient, Hessian-vector product, Jacobian, or a whole solve_ivp run) with the tool's own array
type, ``value()`` evaluates f the same way (for the cheap-gradient ratio grad / f), ``result()``
turns a derivative into a NumPy array for the check against tapegrad, and ``setup`` holds one-off
costs (recording a tape, jit compilation) measured apart from the steady state.

Peers are imported lazily, so a missing one only removes its column. JAX runs in float64
(``jax_enable_x64``) and torch on float64 tensors, so every tool computes the same numbers.
"""
import os
import time
from dataclasses import dataclass, field

import numpy

from . import workloads as W

TOOL_ORDER = ("tg-replay", "tg-retrace", "autograd", "jax", "jax-jit", "torch", "numpy")
TOOL_LABELS = {"tg-replay": "tapegrad replay", "tg-retrace": "tapegrad retrace",
               "autograd": "autograd", "jax": "JAX (no jit)", "jax-jit": "JAX jit",
               "torch": "torch.func", "numpy": "hand NumPy"}


class Unsupported(Exception):
    """This tool has no way to compute this workload's derivative (a gap, not a failure)."""


@dataclass
class Prepared:
    deriv: object                       # () -> native derivative
    result: object                      # native derivative -> numpy array
    value: object = None                # () -> f(x), or None
    setup: dict = field(default_factory=dict)   # name -> seconds (one-off costs)
    sync: object = None                 # native result -> blocks until computed (JAX)
    extra: dict = field(default_factory=dict)   # tape sizes, ODE step counts, ...
    traceable: bool = True              # allocations visible to tracemalloc


class Tool:
    name = "?"
    traceable = True     # its arrays are allocated through NumPy / Python (tracemalloc sees them)

    @property
    def label(self):
        return TOOL_LABELS.get(self.name, self.name)

    def available(self):
        """(True, version) or (False, reason)."""
        return True, ""

    def prepare(self, w):
        raise NotImplementedError


def _ode_runner(w, grad_numpy):
    """A solve_ivp run of dw/dt = -grad f(w) with the given NumPy-in NumPy-out gradient."""
    from scipy.integrate import solve_ivp
    o = w.ode
    extra = {}

    def rhs(t, y):
        return -grad_numpy(y)

    def run():
        sol = solve_ivp(rhs, o["t_span"], w.x0, method=o["method"], rtol=o["rtol"], atol=o["atol"])
        if not sol.success:
            raise RuntimeError(f"solve_ivp failed: {sol.message}")
        extra["nfev"] = int(sol.nfev)
        return sol.y[:, -1].copy()
    return run, extra


# ------------------------------------------------------------------------------------------- tapegrad
class TapegradReplay(Tool):
    """Record the tape once (``tg.record``), then replay it in C for every derivative."""
    name = "tg-replay"

    def available(self):
        from .._version import __version__
        return True, __version__

    def prepare(self, w):
        from .. import operators as tg
        f = _bind(w, numpy)
        t0 = time.perf_counter()
        rec = tg.record(f, w.x0)
        record_s = time.perf_counter() - t0
        x = w.x0
        info = rec.info()
        extra = {"ops": info["ops"], "tape_bytes": info["tape_bytes"],
                 "work_bytes": info["work_bytes"]}
        value = lambda: rec(x)  # noqa: E731
        if w.kind == "grad":
            deriv = lambda: rec.grad(x)  # noqa: E731
        elif w.kind == "hvp":
            v = w.v
            deriv = lambda: rec.hvp(x, v)  # noqa: E731
        elif w.kind in ("jac_fwd", "jac_rev"):
            mode = w.kind[4:]
            deriv = lambda: rec.jacobian(x, mode=mode)  # noqa: E731
        else:
            deriv, ode_extra = _ode_runner(w, rec.grad)
            extra = {**extra, **ode_extra}
            value = None
        return Prepared(deriv, numpy.asarray, value, {"record": record_s}, extra=extra,
                        traceable=True)

    def recorder(self, w):
        """() -> a fresh tape: the recording cost, timed like any other call."""
        from .. import operators as tg
        f = _bind(w, numpy)
        return lambda: tg.record(f, w.x0)


class TapegradRetrace(Tool):
    """``tg.grad(f)(x)`` and friends: trace f again on every call (autograd's model)."""
    name = "tg-retrace"

    def available(self):
        from .._version import __version__
        return True, __version__

    def prepare(self, w):
        from .. import operators as tg
        f = _bind(w, numpy)
        x = w.x0
        value = lambda: f(x)  # noqa: E731
        if w.kind == "grad":
            g = tg.grad(f)
            deriv = lambda: g(x)  # noqa: E731
        elif w.kind == "hvp":
            v = w.v
            deriv = lambda: tg.hvp(f, (x,), (v,))  # noqa: E731
        elif w.kind in ("jac_fwd", "jac_rev"):
            J = tg.jacobian(f, mode=w.kind[4:])
            deriv = lambda: J(x)  # noqa: E731
        else:
            deriv, extra = _ode_runner(w, tg.grad(f))
            return Prepared(deriv, numpy.asarray, None, extra=extra)
        return Prepared(deriv, numpy.asarray, value)


class HandNumpy(Tool):
    """The hand-written derivative in the workload (plain NumPy / Python floats, no AD)."""
    name = "numpy"

    def available(self):
        return True, numpy.__version__

    def hand(self, w):
        return w.hand

    def prepare(self, w):
        hand = self.hand(w)
        if hand is None:
            raise Unsupported("no hand-written derivative")
        f = _bind(w, numpy)
        x, d = w.x0, w.data
        value = lambda: f(x)  # noqa: E731
        if w.kind == "hvp":
            v = w.v
            deriv = lambda: hand(x, v, d)  # noqa: E731
        elif w.kind == "ode":
            deriv, extra = _ode_runner(w, lambda y: hand(y, d))
            return Prepared(deriv, numpy.asarray, None, extra=extra)
        else:
            deriv = lambda: hand(x, d)  # noqa: E731
        return Prepared(deriv, numpy.asarray, value)


# ------------------------------------------------------------------------------------------- autograd
class Autograd(Tool):
    name = "autograd"

    def available(self):
        try:
            import autograd
        except ImportError:
            return False, "not installed (pip install autograd, or the 'bench' extra)"
        try:
            from importlib.metadata import version
            return True, version("autograd")
        except Exception:  # noqa: BLE001  (metadata missing: source checkout)
            return True, getattr(autograd, "__version__", "?")

    def prepare(self, w):
        import autograd
        import autograd.numpy as anp
        f = _bind(w, anp)
        x = w.x0
        value = lambda: f(x)  # noqa: E731
        if w.kind == "grad":
            g = autograd.grad(f)
            deriv = lambda: g(x)  # noqa: E731
        elif w.kind == "hvp":
            hvp = autograd.hessian_tensor_product(f)
            v = w.v
            deriv = lambda: hvp(x, v)  # noqa: E731
        elif w.kind == "jac_rev":
            J = autograd.jacobian(f)
            deriv = lambda: J(x)  # noqa: E731
        elif w.kind == "jac_fwd":
            raise Unsupported("autograd has no forward-mode Jacobian")
        else:
            deriv, extra = _ode_runner(w, autograd.grad(f))
            return Prepared(deriv, numpy.asarray, None, extra=extra)
        return Prepared(deriv, numpy.asarray, value)


# ------------------------------------------------------------------------------------------- JAX
def _jax():
    if "jax" not in __import__("sys").modules:
        # one intra-op thread, like the pinned BLAS (set before XLA starts; ignored afterwards)
        os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                                           "intra_op_parallelism_threads=1")
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    return jax, jnp


class Jax(Tool):
    """JAX without jit: every call dispatches op by op (its eager mode)."""
    name = "jax"
    traceable = False
    jit = False

    def available(self):
        try:
            import jax  # noqa: F401
        except ImportError:
            return False, "not installed (pip install jax jaxlib)"
        return True, jax.__version__

    def prepare(self, w):
        jax, jnp = _jax()
        d = {k: jnp.asarray(v) for k, v in w.data.items()}

        def f(x):
            return w.fun(x, d, jnp)
        x = jnp.asarray(w.x0)
        if w.kind in ("grad", "ode"):
            op = jax.grad(f)
        elif w.kind == "hvp":
            v = jnp.asarray(w.v)
            g = jax.grad(f)
            op = lambda x: jax.jvp(g, (x,), (v,))[1]  # noqa: E731
        else:
            op = jax.jacfwd(f) if w.kind == "jac_fwd" else jax.jacrev(f)
        val = f
        setup = {}
        if self.jit:
            op, val = jax.jit(op), jax.jit(f)
            t0 = time.perf_counter()
            jax.block_until_ready(op(x))
            setup["compile"] = time.perf_counter() - t0
        if w.kind == "ode":
            deriv, extra = _ode_runner(w, lambda y: numpy.asarray(op(jnp.asarray(y))))
            return Prepared(deriv, numpy.asarray, None, setup, extra=extra, traceable=False)
        return Prepared(lambda: op(x), numpy.asarray, lambda: val(x), setup,
                        sync=jax.block_until_ready, traceable=False)


class JaxJit(Jax):
    """``jax.jit`` of the derivative; compile time (first call) reported separately."""
    name = "jax-jit"
    jit = True


# ------------------------------------------------------------------------------------------- torch
class _TorchNamespace:
    """The few NumPy names the workloads use, over torch (float scalars become tensors where
    torch insists on tensors)."""

    def __init__(self, torch):
        self._t = torch
        self.pi = float(numpy.pi)
        for name in ("exp", "log", "sin", "cos", "tanh", "sqrt", "einsum", "abs", "real"):
            setattr(self, name, getattr(torch, name))
        self.fft, self.linalg = torch.fft, torch.linalg

    def sum(self, a, axis=None):
        return self._t.sum(a) if axis is None else self._t.sum(a, dim=axis)

    def max(self, a, axis=None, keepdims=False):
        return self._t.amax(a) if axis is None else self._t.amax(a, dim=axis, keepdim=keepdims)

    def logaddexp(self, a, b):
        t = self._t
        if not isinstance(a, t.Tensor):
            a = t.as_tensor(a, dtype=b.dtype)
        if not isinstance(b, t.Tensor):
            b = t.as_tensor(b, dtype=a.dtype)
        return t.logaddexp(a, b)


class Torch(Tool):
    """``torch.func`` transforms (grad, jvp, jacfwd, jacrev) on float64 CPU tensors."""
    name = "torch"
    traceable = False

    def available(self):
        try:
            import torch
        except ImportError:
            return False, "not installed (pip install torch)"
        return True, torch.__version__

    def prepare(self, w):
        import torch
        from torch import func as tf
        ns = _TorchNamespace(torch)
        d = {k: torch.from_numpy(numpy.ascontiguousarray(v)) for k, v in w.data.items()}

        def f(x):
            return w.fun(x, d, ns)
        x = torch.from_numpy(w.x0.copy())
        if w.kind in ("grad", "ode"):
            op = tf.grad(f)
        elif w.kind == "hvp":
            v = torch.from_numpy(w.v.copy())
            g = tf.grad(f)
            op = lambda x: tf.jvp(g, (x,), (v,))[1]  # noqa: E731
        else:
            op = tf.jacfwd(f) if w.kind == "jac_fwd" else tf.jacrev(f)
        to_np = lambda r: r.detach().numpy()  # noqa: E731
        if w.kind == "ode":
            deriv, extra = _ode_runner(w, lambda y: op(torch.from_numpy(y)).numpy())
            return Prepared(deriv, numpy.asarray, None, extra=extra, traceable=False)

        def value():
            with torch.no_grad():
                return f(x)
        return Prepared(lambda: op(x), to_np, value, traceable=False)


def _bind(w, ns):
    d = w.data

    def f(x):
        return w.fun(x, d, ns)
    f.__name__ = w.name
    return f


ALL_TOOLS = {c.name: c for c in (TapegradReplay, TapegradRetrace, Autograd, Jax, JaxJit, Torch,
                                 HandNumpy)}


def make_tools(names):
    out = []
    for n in names:
        if n not in ALL_TOOLS:
            raise ValueError(f"unknown tool {n!r}; choose from {', '.join(TOOL_ORDER)}")
        out.append(ALL_TOOLS[n]())
    return out


def versions():
    """Versions of every tool that imports, for the machine description."""
    res = {}
    for n in TOOL_ORDER:
        ok, info = ALL_TOOLS[n]().available()
        res[n] = info if ok else None
    return res


__all__ = ["Tool", "Prepared", "Unsupported", "TOOL_ORDER", "TOOL_LABELS", "ALL_TOOLS",
           "make_tools", "W"]
