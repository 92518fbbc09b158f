"""One error base class: every public tapegrad error is a TapegradError and the builtin users
caught before (so ``except TypeError`` keeps working)."""
import numpy as np
import pytest

import tapegrad as tg
from tapegrad import errors
from tapegrad.bench.suite import DerivativeMismatch

PUBLIC = [
    (tg.TapegradTypeError, TypeError), (tg.TapegradValueError, ValueError),
    (tg.UnsupportedError, NotImplementedError), (tg.GuardError, RuntimeError),
    (tg.RegistrationError, RuntimeError), (DerivativeMismatch, AssertionError),
]


@pytest.mark.parametrize("cls, builtin", PUBLIC, ids=lambda c: c.__name__)
def test_each_public_error_is_a_tapegrad_error_and_its_builtin(cls, builtin):
    assert issubclass(cls, tg.TapegradError) and issubclass(cls, builtin)
    with pytest.raises(builtin):
        raise cls("x")


def test_every_error_class_of_the_errors_module_is_public():
    names = {n for n, v in vars(errors).items() if isinstance(v, type) and issubclass(v, Exception)}
    assert names <= set(tg.__all__)
    from tapegrad.engine import traced
    assert traced.GuardError is tg.GuardError


def test_raised_errors_are_tapegrad_errors():
    # a missing rule, an argument of the wrong type, a shape mismatch, a complex loss without a derivative
    with pytest.raises(tg.UnsupportedError, match="no rule"):
        tg.grad(lambda x: np.sum(np.frompyfunc(lambda a: a, 1, 1)(x)))(np.ones(2))
    with pytest.raises(NotImplementedError):
        tg.grad(lambda x: np.sum(np.add.accumulate(x)))(np.ones(2))
    with pytest.raises(tg.TapegradTypeError, match="boolean"):
        tg.grad(lambda x: np.sum(x))(np.ones(2, dtype=bool))
    with pytest.raises(tg.TapegradTypeError, match="phases"):   # a loss of arbitrary phases
        tg.grad(lambda x: np.sum(np.real(np.linalg.eigh(x.reshape(2, 2) + 0.3j * np.array([[0, -1], [1, 0]]))[1])))(
            np.array([2.0, 0.5, 0.5, 1.0]))
    with pytest.raises(tg.TapegradTypeError):
        tg.grad(lambda x: np.asarray(x, dtype=float).sum())(np.ones(2))
    with pytest.raises(ValueError):    # raised by the Cython core (not yet a TapegradError)
        tg.load(b"not a tape")
    with pytest.raises(tg.TapegradValueError, match="unknown mode"):
        tg.check_grads(np.sum, np.ones(2), modes=("sideways",))
