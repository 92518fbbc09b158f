"""tapegrad's errors: one base class, each subclass also deriving from the builtin users catch.

``except tapegrad.TapegradError`` catches everything tapegrad raises for its own reasons (a
missing rule, a traced value that cannot become a NumPy array, a shape a rule refuses, a
flipped guard, ...), while ``except TypeError`` / ``except ValueError`` / ... keep working as
they did before these classes existed. Errors NumPy itself would raise (``AxisError``,
``LinAlgError``) stay NumPy's.
"""


class TapegradError(Exception):
    """Base class of the errors tapegrad raises."""


class TapegradTypeError(TapegradError, TypeError):
    """An argument of a type tapegrad cannot differentiate or record (boolean, complex,
    a traced array converted to a NumPy array, out= receiving a traced result, ...)."""


class TapegradValueError(TapegradError, ValueError):
    """An argument of the right type with a value tapegrad refuses (shapes that do not
    match, corrupt tape bytes, sizes over a bound, a bad option)."""


class UnsupportedError(TapegradError, NotImplementedError):
    """No rule: a NumPy function, ufunc method or keyword tapegrad cannot record."""


class GuardError(TapegradError, RuntimeError):
    """A replay would take a different branch than the recording (raised when strict=True)."""


class RegistrationError(TapegradError, RuntimeError):
    """A NumPy function was registered twice (raised at import, naming both places)."""

