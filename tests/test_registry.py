"""The one registry of NumPy functions: a second registration raises, every entry has a kind."""
import numpy as np
import pytest

import tapegrad as tg
from tapegrad import rules_numpy
from tapegrad.rules import registry


def _fake(x):
    return x


@pytest.fixture
def scratch():
    """A function object registered only inside the test (removed afterwards)."""
    yield _fake
    registry.ENTRIES.pop(_fake, None)
    registry.FUNCTIONS.pop(_fake, None)
    registry.UFUNCS.pop(_fake, None)


def test_second_registration_raises_naming_both_places(scratch):
    registry.register(scratch, lambda x: x, "composition")     # first place: this line
    with pytest.raises(tg.RegistrationError) as e:
        registry.register(scratch, lambda x: x, "constant")
    msg = str(e.value)
    assert "registered twice" in msg
    assert msg.count("test_registry.py:") == 2, msg
    assert registry.kind_of(scratch) == "composition"   # the first rule stays


def test_register_checks_its_arguments(scratch):
    with pytest.raises(tg.RegistrationError, match="kind"):
        registry.register(scratch, lambda x: x, "differentiable")
    with pytest.raises(tg.RegistrationError, match="rule class"):
        registry.register(scratch, lambda x: x, "rule")
    with pytest.raises(tg.RegistrationError, match="no rule callable"):
        registry.register(scratch, None, "composition")
    assert scratch not in registry.ENTRIES


def test_every_registered_function_has_a_kind():
    assert len(registry.ENTRIES) >= 250
    for f, e in registry.ENTRIES.items():
        assert e.kind in registry.KINDS, e
        assert e.fn is f
        assert e.where.count(":") == 1 and not e.where.startswith("registry.py"), e
        if e.kind == "rule":
            assert e.rule_class is not None, e
        if e.kind == "refused":
            assert e.detail, e
        if e.rule is None:
            assert e.ufunc and e.detail, e     # only the primitive ufuncs
        else:
            assert (registry.UFUNCS if e.ufunc else registry.FUNCTIONS)[f] is e.rule
    # every dispatch entry is in the registry
    assert set(registry.FUNCTIONS) | set(registry.UFUNCS) <= set(registry.ENTRIES)
    assert registry.kind_of(np.sin) == "primitive"
    assert registry.kind_of(np.floor) == registry.kind_of(np.less) == "constant"
    assert registry.kind_of(np.linalg.inv) == "rule"
    assert registry.kind_of(np.fft.fft) == "rule"
    assert registry.kind_of(np.linalg.eig) == "rule"
    assert registry.kind_of(np.cumsum) == "composition"
    assert registry.kind_of(np.frompyfunc) is None


def test_once_duplicated_functions_keep_the_rule_that_won():
    # registered twice before the registry (rules.py and rules_numpy.py, now rules/base.py and
    # rules/breadth.py); the breadth module's won
    for f in (np.var, np.std, np.outer, np.vdot, np.argmax, np.argmin, np.argsort):
        e = registry.ENTRIES[f]
        assert e.where.startswith("breadth.py:"), e
    assert registry.ENTRIES[np.tensordot].where.startswith("base.py:")


def test_coverage_table_reads_the_registry():
    text = rules_numpy.coverage_table()
    for name, e in rules_numpy.registry_table().items():
        assert f"| `{name}` | {e.how} |" in text
