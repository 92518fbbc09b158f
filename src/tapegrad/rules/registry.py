"""The one registry of NumPy functions and ufuncs that tapegrad records.

Every rule module registers here, once per NumPy object; a second registration of the same
object raises ``RegistrationError`` at import, naming both places (before this registry, nine
tables were merged with ``dict.update`` and import order decided silently which rule won).

Each entry says how the function is differentiated (``kind``):

- ``primitive``: a ufunc recorded as one elementwise primitive of the core (``detail`` names it);
  dispatched by the primitive maps of ``rules.py``, so it has no rule callable here (a
  zero-derivative primitive such as ``floor`` or ``less`` is ``constant``, with its ``detail``);
- ``composition``: a rule written with other traced NumPy calls, so every mode is exact;
- ``rule``: a Python rule (``calls.CallRule`` subclass ``rule_class``), one tape op;
- ``constant``: integer, boolean or piecewise-constant results: zero derivative;
- ``refused``: raises a clear error (``detail`` says why), e.g. complex-valued results.

The tracer's ``__array_function__`` / ``__array_ufunc__`` dispatch reads ``FUNCTIONS`` and
``UFUNCS``; the coverage table (``docs/coverage.md``) reads ``ENTRIES``. This module imports
nothing of tapegrad's but its errors, so any layer may register.
"""
import os
import sys

from ..errors import RegistrationError

KINDS = ("primitive", "composition", "rule", "constant", "refused")

FUNCTIONS = {}   # NumPy function -> rule(*args, **kwargs)   (what __array_function__ calls)
UFUNCS = {}      # ufunc -> rule(*inputs)                     (what __array_ufunc__ calls)
ENTRIES = {}     # function or ufunc -> Entry


class Entry:
    __slots__ = ("fn", "rule", "kind", "detail", "rule_class", "ufunc", "where")

    def __init__(self, fn, rule, kind, detail, rule_class, ufunc, where):
        self.fn, self.rule, self.kind, self.detail = fn, rule, kind, detail
        self.rule_class, self.ufunc, self.where = rule_class, ufunc, where

    @property
    def how(self):
        """The coverage table's column: kind, with the primitive, rule class or reason."""
        if self.kind == "primitive":
            return f"primitive {self.detail}"
        if self.kind == "rule":
            return f"rule {self.rule_class.__name__}"
        if self.kind == "refused":
            return f"refused ({self.detail})"
        return self.kind

    def __repr__(self):
        return f"Entry({_name(self.fn)}, {self.how}, registered at {self.where})"


def _name(fn):
    mod = getattr(fn, "__module__", None) or "numpy"
    return f"{mod}.{getattr(fn, '__name__', repr(fn))}"


def _caller():
    """file:line where a registration was written: the first frame outside this module and
    outside registering decorators (inner functions named ``deco``, as rules_numpy.defn's)."""
    f = sys._getframe(1)
    here = f.f_code.co_filename
    while f is not None and (f.f_code.co_filename == here or f.f_code.co_name == "deco"):
        f = f.f_back
    if f is None:
        return "?"
    return f"{os.path.basename(f.f_code.co_filename)}:{f.f_lineno}"


def register(fn, rule, kind, *, detail=None, rule_class=None, ufunc=False):
    """Register ``rule`` for the NumPy function (or ufunc, with ``ufunc=True``) ``fn``."""
    where = _caller()
    if kind not in KINDS:
        raise RegistrationError(f"{_name(fn)} at {where}: kind {kind!r} is not one of {KINDS}")
    if kind == "rule" and rule_class is None:
        raise RegistrationError(f"{_name(fn)} at {where}: a Python rule names its rule class")
    if rule is None and not (ufunc and detail):
        raise RegistrationError(f"{_name(fn)} at {where}: only a ufunc recorded as one primitive "
                                "(detail names it) has no rule callable")
    old = ENTRIES.get(fn)
    if old is not None:
        raise RegistrationError(f"{_name(fn)} is registered twice: first at {old.where} "
                                f"({old.how}), again at {where} ({kind})")
    ENTRIES[fn] = Entry(fn, rule, kind, detail, rule_class, ufunc, where)
    if rule is not None:
        (UFUNCS if ufunc else FUNCTIONS)[fn] = rule
    return rule


def kind_of(fn):
    """How ``fn`` is differentiated (one of KINDS), or None if tapegrad has no rule for it."""
    e = ENTRIES.get(fn)
    return None if e is None else e.kind
