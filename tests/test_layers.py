"""The layer order of pyproject.toml's [tool.importlinter] contracts holds: lint-imports on the
installed package (import-linter is in the test extra). Imports inside the compiled core are
invisible to it, which is why the core calls the layers above only through installed hooks."""
import os
import shutil
import subprocess
import sys

import tapegrad

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _lint_imports():
    exe = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    exe = exe if os.path.exists(exe) else shutil.which("lint-imports")
    assert exe, "lint-imports not found: install the test extra (pip install '.[test]')"
    return exe


def test_lint_imports_keeps_every_contract(tmp_path):
    # from an empty folder, so that the package analysed is the installed one
    res = subprocess.run([_lint_imports(), "--no-cache", os.path.join(ROOT, "pyproject.toml")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"lint-imports failed:\n{res.stdout}\n{res.stderr}"
    assert "0 broken" in res.stdout


def test_hooks_are_installed():
    # what the layers above install into the layers below at import (see pyproject.toml)
    from tapegrad._core import tape
    from tapegrad.operators import api, recorded
    from tapegrad.rules import base, calls
    from tapegrad.tracing import tracer
    assert tracer.rules is base
    assert tape._rule_from_spec is calls.rule_from_spec
    assert calls._jvp is api.jvp
    assert set(recorded._views) == {"wengert", "to_dot", "draw"}
    assert tapegrad.Recorded is recorded.Recorded
