"""Run autograd's own test suite against tapegrad.autograd (``import autograd`` aliased).

    python benchmarks/autograd_suite.py PATH_TO_AUTOGRAD_CHECKOUT [pytest args...]

Copies the checkout's tests/ to a temporary folder, adds a conftest.py whose import hook makes
``autograd.X`` the module ``tapegrad.autograd.X``, and runs pytest there. Test modules that import
autograd internals (``autograd.core``, ``autograd.tracer``, vspaces, ...) fail to collect; they
are reported, not counted. The drop-in's documented differences (docs/porting_from_autograd.md)
show up as failures: assignment is supported (autograd raises), ``rfftn`` of odd sizes is
differentiated (autograd raises), ``np.max``/``np.min`` of complex values raise; tests that
call autograd-only helpers (``np.make_diagonal``, ``np.linalg._dot``) fail on the attribute.
"""
import os
import shutil
import subprocess
import sys
import tempfile

CONFTEST = '''import importlib, importlib.abc, importlib.util, sys
import numpy as np
import pytest


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """import autograd.X -> the module tapegrad.autograd.X."""
    def find_spec(self, name, path, target=None):
        if name == "autograd" or name.startswith("autograd."):
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        return importlib.import_module("tapegrad." + spec.name)

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, _Alias())


@pytest.fixture(autouse=True)
def random_seed():
    np.random.seed(42)
'''


def main(argv):
    if not argv:
        print(__doc__)
        return 2
    src = os.path.join(argv[0], "tests")
    if not os.path.isdir(src):
        print(f"no tests/ folder in {argv[0]!r}", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="tapegrad-autograd-suite-")
    try:
        dst = os.path.join(tmp, "tests")
        shutil.copytree(src, dst)
        with open(os.path.join(dst, "conftest.py"), "w") as fh:
            fh.write(CONFTEST)
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "--continue-on-collection-errors", "-rfE", dst] + argv[1:]
        return subprocess.call(cmd, cwd=tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
