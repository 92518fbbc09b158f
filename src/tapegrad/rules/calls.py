"""Rules written in Python: one tape operation (OP_CALL) whose value and derivatives are NumPy code.

For functions whose work is in LAPACK anyway (inv, solve, cholesky, eigh, svd, ...), a rule
object gives the value (``fwd``), the tangent (``tan``) and the adjoint (``bwd``) side by side.
The compiled sweeps call these with the GIL held. The tangent of the adjoint (for hvp) is not
written by hand: it is the jvp of ``bwd``, which tapegrad computes by tracing the NumPy code of
``bwd`` itself. So ``bwd`` and ``fwd`` must use NumPy functions that tapegrad can trace.

A rule with several outputs packs them into one flat output; ``call`` splits them again as free
aliases. Rules serialize by name and JSON parameters (``rule_from_spec``).
"""
import math
import threading

import numpy as np

from .._core.tape import set_rule_loader
from ..tracing.tracer import top_recorder, value_of
from ..tracing import pytree as _tree
from . import base as _rules, registry
from ..errors import TapegradValueError

REGISTRY = {}


def register(cls):
    REGISTRY[cls.name] = cls
    return cls


def rule_from_spec(spec):
    """Rebuild a rule from [name, params] (serialized tapes); ValueError if unknown."""
    try:
        name, params = spec
        cls = REGISTRY[name]
        rule = cls(**params)
        # hostile bytes: negative dimensions could still multiply to the sizes validate() checks
        if any(k < 0 for s in rule.in_shapes + rule.out_shapes for k in s):
            raise TapegradValueError("negative dimension")
        return rule
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError, RecursionError) as e:
        raise TapegradValueError(f"Tape.from_bytes: unknown or malformed rule {str(spec)[:200]} ({e})") from None


set_rule_loader(rule_from_spec)   # a loaded tape's rules, by name (the core does not import us)

# The jvp that ``tor`` traces ``bwd`` with: the operators sit above the rules, so
# tapegrad.operators.api installs it here at import.
_jvp = None


def install_jvp(jvp):
    """Called once by tapegrad.operators.api at import."""
    global _jvp
    _jvp = jvp


_MODE = threading.local()


class reverse_follows:
    """Context: what runs inside ends in a reverse sweep (a gradient), so a rule whose adjoint
    needs more than its value (eigvals: the eigenvectors) may compute that in its forward and
    keep it for its adjoint (CallRule.stash, CallRule.stashed). Per thread; what was kept is
    dropped when the outermost such context ends."""

    def __enter__(self):
        self.outer = not getattr(_MODE, "on", False)
        _MODE.on = True
        return self

    def __exit__(self, *exc):
        if self.outer:
            _MODE.on = False
            _MODE.stash = {}


def reverse_follows_now():
    return getattr(_MODE, "on", False)


def keeps_for_adjoint(rules):
    """Whether any of these rules keeps values for its adjoint (worth a reverse_follows)."""
    return any(r.keeps_for_adjoint for r in rules)


class CallRule:
    """Base class. Subclasses set ``name`` and implement fwd, tan, bwd on lists/tuples of arrays."""

    name = None
    keeps_for_adjoint = False     # True: forward() may stash() for the adjoint (reverse_follows)

    def __init__(self, in_shapes, out_shapes, **extra):
        self.in_shapes = [tuple(int(k) for k in s) for s in in_shapes]
        self.out_shapes = [tuple(int(k) for k in s) for s in out_shapes]
        if len(self.in_shapes) > 3 or not self.out_shapes:
            raise TapegradValueError(f"rule {self.name}: at most 3 inputs and at least one output")
        self.extra = extra
        self.params = {"in_shapes": self.in_shapes, "out_shapes": self.out_shapes, **extra}
        self.in_sizes = [math.prod(s) for s in self.in_shapes]
        self.out_sizes = [math.prod(s) for s in self.out_shapes]
        self.out_size = sum(self.out_sizes)
        self.out_shape = (self.out_size,)

    # -- packing of several outputs into one flat array
    def pack(self, outs):
        if len(outs) == 1:
            return np.reshape(outs[0], (-1,))
        return _rules.concatenate([np.reshape(o, (-1,)) for o in outs])

    def unpack(self, flat):
        return _tree.split(flat, self.out_shapes, self.out_sizes)

    # -- the interface the sweeps call (flat outputs)
    def forward(self, *xs):
        return self.pack(self.fwd(*xs))

    def vjp(self, xs, y, ybar):
        return self.bwd(list(xs), self.unpack(np.reshape(y, (-1,))), self.unpack(np.reshape(ybar, (-1,))))

    def jvp(self, xs, y, xdots):
        if all(t is None for t in xdots):
            return None
        outs = self.tan(list(xs), self.unpack(np.reshape(y, (-1,))), list(xdots))
        return self.pack([o if o is not None else np.zeros(s) for o, s in zip(outs, self.out_shapes)])

    def tor(self, xs, y, xdots, ybar, ybardot):
        """Tangent of the adjoints along (xdots, ybardot): the jvp of bwd, traced by tapegrad."""
        jvp = _jvp
        k = len(xs)

        def xbar(*args):
            xs_, yb = list(args[:k]), args[k]
            ys = self.fwd(*xs_)
            gs = self.bwd(xs_, ys, self.unpack(np.reshape(yb, (-1,))))
            return tuple(g if g is not None else np.zeros(s) for g, s in zip(gs, self.in_shapes))

        tans = tuple(t if t is not None else np.zeros(s) for t, s in zip(xdots, self.in_shapes))
        _, out = jvp(xbar, tuple(xs) + (np.reshape(ybar, (-1,)),), tans + (np.reshape(ybardot, (-1,)),))
        return list(out)

    # -- values the forward kept for the adjoint (inside ``reverse_follows`` only)
    def stash(self, xs, value):
        """Keep value for this rule's adjoint at inputs xs (copied: compared bit for bit)."""
        if reverse_follows_now():
            d = getattr(_MODE, "stash", None)
            if d is None:
                d = _MODE.stash = {}
            d[id(self)] = (self, [np.array(x, dtype=np.float64) for x in xs], value)

    def stashed(self, xs):
        """What stash kept at exactly these inputs, or None."""
        e = getattr(_MODE, "stash", {}).get(id(self))
        if e is None or len(e[1]) != len(xs) or not all(
                type(x) is np.ndarray and np.array_equal(k, x) for k, x in zip(e[1], xs)):
            return None
        return e[2]

    # -- to implement
    def fwd(self, *xs):
        raise NotImplementedError

    def tan(self, xs, ys, xdots):
        raise NotImplementedError

    def bwd(self, xs, ys, ybars):
        raise NotImplementedError


def call(rule, *inputs, value=None):
    """Apply a rule: records one OP_CALL on the innermost recording (or just evaluates).
    value: the rule's flat output at these inputs, when the caller computed it already."""
    rec = top_recorder(*inputs)
    if rec is None:
        outs = rule.fwd(*[np.asarray(value_of(x), dtype=np.float64) for x in inputs])
        return outs[0] if len(outs) == 1 else tuple(outs)
    ops = [rec.operand(x) for x in inputs]
    for (o, c, v), s in zip(ops, rule.in_shapes):
        if v.shape != s:
            raise TapegradValueError(f"{rule.name}: operand of shape {v.shape}, rule expects {s}")
    if value is None:
        value = rule.forward(*[v for _, _, v in ops])
    y = np.asarray(value, dtype=np.float64).reshape(-1)
    t = rec.new(y)
    rec.keep(t, y)       # a Python rule's value: kept for a re-traced gradient (Recorder.keep)
    if y.size:
        idx = rec.tape.add_callback(rule)
        flags = 0
        offs = [0, 0, 0]
        sizes = [0, 0, 0]
        for k, (o, c, v) in enumerate(ops):
            offs[k], sizes[k] = o, v.size
            if c:
                flags |= (1, 2, 4)[k]
        rec.op(_rules.OPCODES["call"], flags, t._off, offs[0], offs[1], offs[2], n=y.size,
               p=(sizes[0], sizes[1], sizes[2], idx), reads=tuple(o for o, c, _ in ops if not c))
    outs = rule.unpack(t) if len(rule.out_shapes) > 1 else [_rules.reshape(t, rule.out_shapes[0])]
    return outs[0] if len(outs) == 1 else tuple(outs)


# ---------------------------------------------------------------------------- linear algebra
def _T(x):
    return np.swapaxes(x, -1, -2)


@register
class Inv(CallRule):
    """Y = A^-1; Y_dot = -Y A_dot Y; A_bar = -Y^T Y_bar Y^T (Giles 2008, sec. 3.1)."""
    name = "inv"

    def __init__(self, in_shapes, out_shapes=None):
        super().__init__(in_shapes, in_shapes)

    def fwd(self, A):
        return [np.linalg.inv(A)]

    def tan(self, xs, ys, xdots):
        Y = ys[0]
        return [-(Y @ xdots[0] @ Y)]

    def bwd(self, xs, ys, ybars):
        Yt = _T(ys[0])
        return [-(Yt @ ybars[0] @ Yt)]


def _inv(a):
    s = np.shape(value_of(a))
    if len(s) < 2 or s[-1] != s[-2]:
        raise np.linalg.LinAlgError("inv: last 2 dimensions of the array must be square")
    return call(Inv([s]), a)


registry.register(np.linalg.inv, _inv, "rule", rule_class=Inv)
