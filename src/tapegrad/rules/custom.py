"""Derivative rules written by users: JAX's ``custom_vjp`` / ``custom_jvp`` and autograd's
``primitive`` / ``defvjp`` / ``defjvp``.

A custom function is one tape operation (the Python-rule op of ``calls.py``): while recording,
the user's function runs once on plain NumPy values (so it may call anything: compiled code,
SciPy solvers), and its output becomes one traced op whose derivatives are the user's rules. A
recorded tape replays it by calling the rules with the GIL held for that op only.

What each mode uses:
- reverse (vjp, grad): the vjp rule. For ``custom_vjp`` the residuals are recomputed by calling
  ``fwd`` again in the reverse sweep (a tape holds numbers, not Python objects). A function with
  only a jvp rule gets its vjp by transposing the jvp: tapegrad traces the jvp rule in its
  tangent argument (it is linear there) and reverses that trace.
- forward (jvp, jacfwd): the jvp rule. A function with only a vjp rule gets J v as the gradient
  of <vjp(g), v> in g (the vjp rule is linear in g), by tracing the vjp rule: one reverse pass.
- second order (hvp, nesting): the rules themselves are traced like any code, so they must be
  written with NumPy functions tapegrad can trace.

Inputs are pytrees (tuples, lists, dicts of arrays and numbers); the traced leaves are packed
into one flat operand. Non-differentiable arguments (``nondiff_argnums``, or any argument that
is not traced) are held by the op as constants of the recording.
"""
import functools
import math

import numpy as np

from ..tracing import pytree as _tree
from ..tracing.tracer import Tracer, top_recorder, value_of
from . import base as _rules
from . import calls as _calls
from ..errors import TapegradTypeError, TapegradValueError

# The operators sit above the rules: tapegrad.operators.api installs jvp and vjp here at import.
_OPS = {}


def install_operators(jvp, vjp):
    """Called once by tapegrad.operators.api at import."""
    _OPS["jvp"], _OPS["vjp"] = jvp, vjp


# named custom functions, so a tape holding one can be saved and loaded (register_custom)
CUSTOM = {}


def register_custom(name, fn):
    """Register a custom function under ``name`` so tapes holding it serialize (``to_bytes``,
    pickle) and ``tg.load`` finds it again; returns fn. Register it in every process that loads."""
    if not isinstance(fn, _CustomBase):
        raise TapegradTypeError(f"register_custom: {fn!r} is not a custom_vjp, custom_jvp or primitive")
    if not isinstance(name, str) or not name:
        raise TapegradTypeError("register_custom: name must be a non-empty string")
    if CUSTOM.get(name, fn) is not fn:
        raise TapegradValueError(f"register_custom: {name!r} is already registered to another function")
    CUSTOM[name] = fn
    fn.registered_name = name
    return fn


def _zeros_like(x):
    return np.zeros(np.shape(value_of(x)))


def _float(x):
    return np.asarray(x, dtype=np.float64)


class _CustomBase:
    """What the op needs from a custom function: primal, and vjp and/or jvp rules."""

    registered_name = None
    kind = "custom"

    def __init__(self, fun, nondiff_argnums=()):
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.nondiff_argnums = tuple(sorted(int(k) for k in nondiff_argnums))

    @property
    def fname(self):
        return getattr(self.fun, "__qualname__", getattr(self.fun, "__name__", repr(self.fun)))

    def has_vjp(self):
        raise NotImplementedError

    def has_jvp(self):
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        self._check_ready()
        return _apply(self, args, kwargs)

    def _check_ready(self):
        if not (self.has_vjp() or self.has_jvp()):
            raise TapegradTypeError(f"{self.kind} function {self.fname}: no derivative rule defined yet "
                            f"({self._how_to_define})")

    # rules on the full argument list (nondiff arguments included, as the user passed them)
    def primal(self, args, kwargs):
        return self.fun(*args, **kwargs)

    def vjp(self, args, kwargs, ans, g):
        """Cotangents of the differentiable arguments (a tuple over argument positions)."""
        raise NotImplementedError

    def jvp(self, args, kwargs, ans, tangents):
        """Tangent of the output, given tangents of the differentiable arguments."""
        raise NotImplementedError


class custom_vjp(_CustomBase):
    """A function with a reverse-mode rule of its own, as JAX's ``jax.custom_vjp``::

        @tg.custom_vjp
        def f(x, y):
            return np.sin(x) * y

        def f_fwd(x, y):
            return f(x, y), (np.cos(x), np.sin(x), y)     # output, residuals

        def f_bwd(res, g):
            cos_x, sin_x, y = res
            return (cos_x * g * y, sin_x * g)             # one cotangent per argument

        f.defvjp(f_fwd, f_bwd)

    With ``nondiff_argnums``, those arguments come first in ``bwd(*nondiff, res, g)`` and get
    no cotangent. Forward mode uses a ``defjvp`` rule if one is given, else the transpose of bwd.
    """

    kind = "custom_vjp"
    _how_to_define = "call .defvjp(fwd, bwd)"

    def __init__(self, fun, nondiff_argnums=()):
        super().__init__(fun, nondiff_argnums)
        self.fwd = self.bwd = self.jvp_rule = None

    def defvjp(self, fwd, bwd):
        self.fwd, self.bwd = fwd, bwd
        return self

    def defjvp(self, jvp):
        """Optional: a forward rule too (see custom_jvp.defjvp for its signature)."""
        self.jvp_rule = jvp
        return jvp

    def has_vjp(self):
        return self.bwd is not None

    def has_jvp(self):
        return self.jvp_rule is not None

    def vjp(self, args, kwargs, ans, g):
        out, res = self.fwd(*args, **kwargs)
        nd = [args[k] for k in self.nondiff_argnums]
        cts = self.bwd(*nd, res, g)
        if not isinstance(cts, (tuple, list)):
            raise TapegradTypeError(f"custom_vjp function {self.fname}: bwd must return a tuple with one "
                            f"cotangent per differentiable argument, got {type(cts).__name__}")
        diff = [k for k in range(len(args)) if k not in self.nondiff_argnums]
        if len(cts) != len(diff):
            raise TapegradTypeError(f"custom_vjp function {self.fname}: bwd returned {len(cts)} cotangents "
                            f"for {len(diff)} differentiable arguments")
        full = [None] * len(args)
        for k, c in zip(diff, cts):
            full[k] = c
        return full

    def jvp(self, args, kwargs, ans, tangents):
        return _jvp_rule(self, self.jvp_rule, args, kwargs, tangents)


class custom_jvp(_CustomBase):
    """A function with a forward-mode rule of its own, as JAX's ``jax.custom_jvp``::

        @tg.custom_jvp
        def f(x):
            return np.log1p(np.exp(x))

        @f.defjvp
        def f_jvp(primals, tangents):
            (x,), (x_dot,) = primals, tangents
            return f(x), x_dot * (1 / (1 + np.exp(-x)))    # output, its tangent

    Reverse mode transposes the jvp rule (it must be linear in the tangents and written with
    NumPy functions tapegrad can trace). With ``nondiff_argnums``, those arguments come first in
    ``jvp(*nondiff, primals, tangents)``.
    """

    kind = "custom_jvp"
    _how_to_define = "call .defjvp(jvp)"

    def __init__(self, fun, nondiff_argnums=()):
        super().__init__(fun, nondiff_argnums)
        self.jvp_rule = None

    def defjvp(self, jvp):
        self.jvp_rule = jvp
        return jvp

    def has_vjp(self):
        return False

    def has_jvp(self):
        return self.jvp_rule is not None

    def jvp(self, args, kwargs, ans, tangents):
        return _jvp_rule(self, self.jvp_rule, args, kwargs, tangents)


def _jvp_rule(spec, rule, args, kwargs, tangents):
    nd = [args[k] for k in spec.nondiff_argnums]
    diff = [k for k in range(len(args)) if k not in spec.nondiff_argnums]
    primals = tuple(args[k] for k in diff)
    tans = tuple(tangents[k] if tangents[k] is not None else
                 _tree.unflatten(*_zero_tree(args[k])) for k in diff)
    out = rule(*nd, primals, tans, **kwargs)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TapegradTypeError(f"{spec.kind} function {spec.fname}: the jvp rule must return "
                        "(primal_out, tangent_out)")
    return out[1]


def _zero_tree(x):
    leaves, td = _tree.flatten(x)
    return td, [_zeros_like(v) for v in leaves]


class primitive(_CustomBase):
    """autograd's ``primitive``: a function whose derivatives are given with ``defvjp`` and
    ``defjvp`` (rules per argument, autograd's signatures), recorded as one op."""

    kind = "primitive"
    _how_to_define = "use tg.defvjp(f, ...) or tg.defjvp(f, ...)"

    def __init__(self, fun):
        super().__init__(fun, ())
        self.vjps, self.jvps = {}, {}

    def has_vjp(self):
        return bool(self.vjps)

    def has_jvp(self):
        return bool(self.jvps)

    def vjp(self, args, kwargs, ans, g):
        full = [None] * len(args)
        for k in range(len(args)):
            if k in self.vjps:
                full[k] = self.vjps[k](ans, *args, **kwargs)(g)
        return full

    def jvp(self, args, kwargs, ans, tangents):
        out = None
        for k, t in enumerate(tangents):
            if t is None:
                continue
            if k not in self.jvps:
                raise TapegradTypeError(f"primitive {self.fname}: no jvp rule for argument {k} "
                                f"(defjvp(f, ..., argnums=({k},)))")
            c = self.jvps[k](t, ans, *args, **kwargs)
            out = c if out is None else out + c
        return out


class checkpoint(_CustomBase):
    """``checkpoint(f)``: f's intermediate values are not kept for the reverse sweep but
    recomputed from its inputs (autograd's ``checkpoint``, JAX's ``jax.checkpoint``). A call is
    one op holding only f's inputs and outputs; its reverse re-traces f at those inputs and
    runs f's own vjp (its forward mode, f's jvp). Memory for a loop of checkpointed steps is
    O(steps * step inputs), not O(ops); the price is a second evaluation of f, traced, in the
    reverse sweep (also on replay of a recorded tape)."""

    kind = "checkpoint"
    _how_to_define = ""

    def __init__(self, fun):
        super().__init__(fun, ())

    def has_vjp(self):
        return True

    def has_jvp(self):
        return True

    def _diff(self, args):
        """Positions of the arguments to differentiate: all-numeric pytrees."""
        return [k for k, a in enumerate(args)
                if all(type(v) is Tracer or isinstance(v, (float, int, np.ndarray, np.generic))
                       and not isinstance(v, bool) for v in _tree.flatten(a)[0])]

    def _closed(self, args, kwargs, diff):
        def f(*dargs):
            full = list(args)
            for k, a in zip(diff, dargs):
                full[k] = a
            return self.fun(*full, **kwargs)
        return f

    def vjp(self, args, kwargs, ans, g):
        diff = self._diff(args)
        _, pull = _OPS["vjp"](self._closed(args, kwargs, diff), *[args[k] for k in diff])
        full = [None] * len(args)
        for k, c in zip(diff, pull(g)):
            full[k] = c
        return full

    def jvp(self, args, kwargs, ans, tangents):
        diff = [k for k in self._diff(args) if tangents[k] is not None]
        if not diff:
            return None
        _, out = _OPS["jvp"](self._closed(args, kwargs, diff), tuple(args[k] for k in diff),
                             tuple(tangents[k] for k in diff))
        return out


def defvjp(fun, *vjpmakers, argnums=None):
    """autograd's ``defvjp``: ``vjpmaker(ans, *args, **kwargs)`` returns ``g -> cotangent``,
    one maker per argument in ``argnums`` (default 0, 1, ...); None: no rule for that one."""
    _check_primitive(fun, "defvjp")
    argnums = range(len(vjpmakers)) if argnums is None else argnums
    for k, m in zip(argnums, vjpmakers):
        if m is not None:
            fun.vjps[int(k)] = m


def defvjp_argnum(fun, vjpmaker):
    """autograd's ``defvjp_argnum``: ``vjpmaker(argnum, ans, args, kwargs)`` -> ``g -> ct``."""
    _check_primitive(fun, "defvjp_argnum")
    fun.vjps = _AllArgs(lambda k: (lambda ans, *args, **kw: vjpmaker(k, ans, args, kw)))


def defjvp_argnum(fun, jvpmaker):
    """autograd's ``defjvp_argnum``: ``jvpmaker(argnum, g, ans, args, kwargs)`` is the output
    tangent from a tangent g of argument ``argnum``; contributions of several arguments add."""
    _check_primitive(fun, "defjvp_argnum")
    fun.jvps = _AllArgs(lambda k: (lambda g, ans, *args, **kw: jvpmaker(k, g, ans, args, kw)))


def defjvp(fun, *jvpfuns, argnums=None):
    """autograd's ``defjvp``: ``jvpfun(g, ans, *args, **kwargs)`` is the output tangent from a
    tangent g of that argument; contributions of several arguments add."""
    _check_primitive(fun, "defjvp")
    argnums = range(len(jvpfuns)) if argnums is None else argnums
    for k, j in zip(argnums, jvpfuns):
        if j is not None:
            fun.jvps[int(k)] = j


class _AllArgs(dict):
    def __contains__(self, k):
        return True

    def __getitem__(self, k):
        return self.factory(k)

    def __init__(self, factory):
        super().__init__()
        self.factory = factory

    def __bool__(self):
        return True


def _check_primitive(fun, what):
    if not isinstance(fun, primitive):
        raise TapegradTypeError(f"{what}: {getattr(fun, '__name__', fun)!r} is not a tapegrad.primitive "
                        "(wrap it first: f = tg.primitive(f))")


# ---------------------------------------------------------------------------- recording
# complex arguments or outputs: installed by rules/complex_funcs.py (the rules above this module
# do not import it); COMPLEX_APPLY(spec, args, kwargs) records the call on real pairs
COMPLEX_APPLY = None


class ComplexOutput(Exception):
    """The first forward of a custom function gave a complex output (internal)."""


def _apply(spec, args, kwargs):
    leaves_per_arg = []
    traced = []
    for k, a in enumerate(args):
        leaves, td = _tree.flatten(a)
        if k in spec.nondiff_argnums:
            leaves_per_arg.append((td, leaves, [False] * len(leaves)))
            continue
        if any(type(v).__name__ == "ComplexTracer" for v in leaves):
            # complex arguments: the rules are called on complex values, the op records the
            # real pairs (rules/complex_funcs.py)
            if COMPLEX_APPLY is None:
                raise TapegradTypeError(f"{spec.kind} function {spec.fname}: argument {k} is a "
                                        "complex traced value and complex support is not loaded")
            return COMPLEX_APPLY(spec, args, kwargs)
        mask = [type(v) is Tracer for v in leaves]
        leaves_per_arg.append((td, leaves, mask))
        traced.extend(v for v, m in zip(leaves, mask) if m)
    rec = top_recorder(*traced) if traced else None
    if rec is None:
        return spec.primal(args, kwargs)
    layout = []
    for td, leaves, mask in leaves_per_arg:
        layout.append((td, [None if m else v for v, m in zip(leaves, mask)],
                       [np.shape(value_of(v)) if m else None for v, m in zip(leaves, mask)]))
    flat = (_rules.reshape(traced[0], (-1,)) if len(traced) == 1 else
            _rules.concatenate([_rules.reshape(v, (-1,)) for v in traced]))
    x0 = np.asarray(value_of(flat), dtype=np.float64)
    rule = CustomRule(spec, layout, kwargs, x0.size)
    try:
        outs = rule.first_forward(x0)
    except ComplexOutput:
        if COMPLEX_APPLY is None or getattr(spec, "complex_adapter", False):
            raise TapegradTypeError(f"{spec.kind} function {spec.fname}: outputs must be real or "
                                    "complex numbers or arrays") from None
        return COMPLEX_APPLY(spec, args, kwargs)
    ys = _calls.call(rule, flat, value=rule.pack(outs))
    return _tree.unflatten(rule.out_td, list(ys) if len(rule.out_shapes) > 1 else [ys])


class CustomRule(_calls.CallRule):
    """The op of one call of a custom function: one flat input (the traced leaves), the
    output leaves as outputs."""

    name = "custom"

    def __init__(self, spec, layout, kwargs, n, out_td=None, out_shapes=None):
        self.spec, self.layout, self.kwargs, self.n = spec, layout, dict(kwargs), n
        self.out_td = out_td
        if out_shapes is not None:
            self._init_shapes(out_shapes)

    def _init_shapes(self, out_shapes):
        super().__init__([(self.n,)], out_shapes)

    @property
    def params(self):        # read by Tape.to_bytes only
        return self._serialize()

    @params.setter
    def params(self, value):
        pass   # CallRule.__init__ sets it; a custom op's parameters are built on demand

    def first_forward(self, x):
        """The recording's forward: the output structure is learnt from the first call."""
        out = self.spec.primal(self.args(x), self.kwargs)
        leaves, self.out_td = _tree.flatten(out)
        if any(np.iscomplexobj(value_of(v)) or type(v).__name__ == "ComplexTracer" for v in leaves):
            raise ComplexOutput()
        leaves = [_float(value_of(v)) for v in leaves]
        bad = [v for v in leaves if not np.issubdtype(np.asarray(v).dtype, np.floating)]
        if bad:
            raise TapegradTypeError(f"{self.spec.kind} function {self.spec.fname}: outputs must be "
                            "real numbers or arrays")
        self._init_shapes([np.shape(v) for v in leaves])
        return leaves

    # -- arguments from the flat input
    def _trees(self, x, constant, untraced):
        """Per-argument trees with the traced leaves cut from the flat x, the others
        ``constant(c)``; an argument with nothing traced is ``untraced(tree)``."""
        x = np.reshape(x, (-1,))
        pos, out = 0, []
        for td, consts, shapes in self.layout:
            leaves = []
            for c, s in zip(consts, shapes):
                if s is None:
                    leaves.append(constant(c))
                else:
                    m = math.prod(s)
                    leaves.append(np.reshape(x[pos:pos + m], s))
                    pos += m
            tree = _tree.unflatten(td, leaves)
            out.append(untraced(tree) if all(s is None for s in shapes) else tree)
        return out

    def args(self, x):
        return self._trees(x, lambda c: c, lambda t: t)

    def _flat_of(self, per_arg, what):
        """The traced leaves' parts of per-argument trees (None: zeros) as one flat vector."""
        parts = []
        for k, ((td, consts, shapes), t) in enumerate(zip(self.layout, per_arg)):
            if all(s is None for s in shapes):
                continue
            if t is None:
                parts.extend(np.zeros(math.prod(s)) for s in shapes if s is not None)
                continue
            leaves, td2 = _tree.flatten(t)
            if len(leaves) != len(shapes):
                raise TapegradTypeError(f"{self.spec.kind} function {self.spec.fname}: the {what} of "
                                f"argument {k} has {len(leaves)} leaves, the argument {len(shapes)}")
            for v, s in zip(leaves, shapes):
                if s is None:
                    continue
                if v is None:
                    parts.append(np.zeros(math.prod(s)))
                    continue
                if np.shape(value_of(v)) != s:
                    v = np.broadcast_to(v, s) if np.ndim(value_of(v)) == 0 else v
                if np.shape(value_of(v)) != s:
                    raise TapegradValueError(f"{self.spec.kind} function {self.spec.fname}: {what} of "
                                     f"argument {k} has shape {np.shape(value_of(v))}, the "
                                     f"argument {s}")
                parts.append(np.reshape(v, (-1,)))
        if len(parts) == 1:
            return parts[0]
        return _rules.concatenate(parts)

    def _out_tree(self, flats):
        return _tree.unflatten(self.out_td, list(flats))

    # -- the CallRule interface
    def fwd(self, x):
        out = self.spec.primal(self.args(x), self.kwargs)
        leaves, _ = _tree.flatten(out)
        return [v if type(v) is Tracer else _float(v) for v in leaves]

    def bwd(self, xs, ys, ybars):
        args = self.args(xs[0])
        g = self._out_tree(ybars)
        if self.spec.has_vjp():
            cts = self.spec.vjp(args, self.kwargs, self._out_tree(ys), g)
            return [self._flat_of(cts, "cotangent")]
        # transpose the jvp rule: x_bar = d/dt <g, jvp(x, t)> (linear in t)
        vjp = _OPS["vjp"]
        ans = self._out_tree(ys)

        def tangent_out(t):
            tans = self._tangent_trees(t)
            out = self.spec.jvp(args, self.kwargs, ans, tans)
            return tuple(np.reshape(v, (-1,)) for v in _tree.flatten(out)[0])

        try:
            _, pull = vjp(tangent_out, np.zeros(self.n))
        except (TypeError, NotImplementedError) as e:
            raise TapegradTypeError(
                f"{self.spec.kind} function {self.spec.fname}: reverse mode needs a vjp rule or a "
                "jvp rule written with NumPy functions tapegrad can trace (the vjp is its "
                f"transpose); tracing the jvp rule failed: {e}") from e
        (xbar,) = pull(tuple(np.reshape(v, (-1,)) for v in ybars))
        return [xbar]

    def tan(self, xs, ys, xdots):
        args = self.args(xs[0])
        ans = self._out_tree(ys)
        xdot = xdots[0] if xdots[0] is not None else np.zeros(self.n)
        if self.spec.has_jvp():
            out = self.spec.jvp(args, self.kwargs, ans, self._tangent_trees(xdot))
            leaves, _ = _tree.flatten(out)
            return [np.zeros(s) if v is None else v for v, s in zip(leaves, self.out_shapes)]
        # J v from the vjp rule: the gradient in g of <vjp(g), v> (linear in g)
        vjp = _OPS["vjp"]

        def inner(*gs):
            cts = self.spec.vjp(args, self.kwargs, ans, self._out_tree(gs))
            flat = self._flat_of(cts, "cotangent")
            return np.sum(flat * xdot)

        zeros = tuple(np.zeros(s) for s in self.out_shapes)
        try:
            _, pull = vjp(inner, *zeros)
        except (TypeError, NotImplementedError) as e:
            raise TapegradTypeError(
                f"{self.spec.kind} function {self.spec.fname}: forward mode needs a jvp rule "
                "(.defjvp) or a vjp rule written with NumPy functions tapegrad can trace (J v is "
                f"the transpose of the vjp); tracing the vjp rule failed: {e}") from e
        return list(pull(1.0))

    def _tangent_trees(self, t):
        """Per-argument tangent trees from the flat tangent of the traced leaves (None for
        arguments with nothing traced)."""
        return self._trees(t, _zeros_like, lambda tree: None)

    # -- serialization: registered functions with JSON-able constants only
    def _serialize(self):
        if getattr(self.spec, "complex_adapter", False):
            raise TapegradValueError(f"to_bytes: the tape holds the {self.spec.kind} function "
                                     f"{self.spec.fname} called with complex values; such tapes do "
                                     "not serialize (yet): replay them in this process")
        name = self.spec.registered_name
        if name is None or CUSTOM.get(name) is not self.spec:
            raise TapegradValueError(f"to_bytes: the tape holds the {self.spec.kind} function "
                             f"{self.spec.fname}, which is not registered; call "
                             f"tg.register_custom('some.name', {self.spec.fname}) first")
        try:
            layout = [[_td_json(td), [_const_json(c) for c in consts],
                       [None if s is None else list(s) for s in shapes]]
                      for td, consts, shapes in self.layout]
            kw = {k: _const_json(v) for k, v in self.kwargs.items()}
        except TypeError as e:
            raise TapegradValueError(f"to_bytes: the {self.spec.kind} function {self.spec.fname} was "
                             f"called with a constant argument that cannot be saved ({e})") from None
        return {"key": name, "n": self.n, "layout": layout, "kwargs": kw,
                "out_td": _td_json(self.out_td), "out_shapes": [list(s) for s in self.out_shapes],
                "in_shapes": [[self.n]]}


def _td_json(td):
    if isinstance(td, _tree.Leaf):
        return ["leaf", bool(td.scalar)]
    if td[0] == "dict":
        return ["dict", list(td[1]), [_td_json(c) for c in td[2]]]
    if td[0] == "none":
        return ["none"]
    return [td[0], [_td_json(c) for c in td[1]]]


def _td_from_json(j):
    if j[0] == "leaf":
        return _tree.Leaf(bool(j[1]))
    if j[0] == "dict":
        return ("dict", [str(k) for k in j[1]], [_td_from_json(c) for c in j[2]])
    if j[0] == "none":
        return ("none",)
    if j[0] not in ("tuple", "list"):
        raise TapegradValueError(f"bad tree node {j[0]!r}")
    return (j[0], [_td_from_json(c) for c in j[1]])


def _const_json(c):
    if c is None or isinstance(c, (bool, int, float, str)):
        return ["py", c]
    if isinstance(c, (np.ndarray, np.generic)) and np.asarray(c).dtype.kind in "biuf":
        a = np.asarray(c)
        return ["array", a.dtype.str, list(a.shape), a.ravel().tolist()]
    raise TapegradTypeError(f"{type(c).__name__} constant")


def _const_from_json(j):
    if j[0] == "py":
        return j[1]
    if j[0] == "array":
        return np.asarray(j[3], dtype=np.dtype(j[1])).reshape(j[2])
    raise TapegradValueError(f"bad constant {j[0]!r}")


@_calls.register
class _LoadedCustom:
    """Rebuilds a CustomRule from saved parameters (the function found by its registered name)."""
    name = "custom"

    def __new__(cls, key, n, layout, kwargs, out_td, out_shapes, in_shapes):
        spec = CUSTOM.get(key)
        if spec is None:
            raise TapegradValueError(f"custom function {key!r} is not registered in this process "
                             "(tg.register_custom)")
        lay = [(_td_from_json(td), [_const_from_json(c) for c in consts],
                [None if s is None else tuple(int(k) for k in s) for s in shapes])
               for td, consts, shapes in layout]
        if [list(s) for s in in_shapes] != [[int(n)]]:
            raise TapegradValueError("custom op: inconsistent input size")
        return CustomRule(spec, lay, {k: _const_from_json(v) for k, v in kwargs.items()},
                          int(n), _td_from_json(out_td), [tuple(int(k) for k in s) for s in out_shapes])
