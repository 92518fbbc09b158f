"""Declares the Cython extensions of tapegrad._core; metadata lives in pyproject.toml.

Cython resolves .pxd files by full module name (tapegrad/_core/x.pxd), while the sources live
in a root _core/ folder. We expose _core as build/include/tapegrad/_core (a symlink, or a copy
where links are not allowed) and put build/include on the include path.
TAPEGRAD_DEBUG=1 turns bounds checks, wraparound checks and assertions back on.
OpenMP (the threaded sweeps, _core/sweep_threads.pxi) is used when the compiler accepts
-fopenmp (checked by compiling a small program); TAPEGRAD_OPENMP=0 builds without it, and the
sweeps then run serially.
"""
import os
import platform
import shutil
import sysconfig
import tempfile
import zlib

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
DEBUG = os.environ.get("TAPEGRAD_DEBUG", "0") not in ("", "0")
MODE = "debug" if DEBUG else "release"
BUILD = os.path.join("build", "cython-" + MODE)
INCLUDE = os.path.join(HERE, "build", "include-" + MODE)
CORE_LINK = os.path.join(INCLUDE, "tapegrad", "_core")

os.makedirs(os.path.dirname(CORE_LINK), exist_ok=True)
if not os.path.exists(CORE_LINK):
    try:
        os.symlink(os.path.join(HERE, "_core"), CORE_LINK)
    except OSError:
        shutil.copytree(os.path.join(HERE, "_core"), CORE_LINK)
with open(os.path.join(INCLUDE, "tapegrad", "__init__.pxd"), "w"):
    pass

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    # always C division: the kernels rely on IEEE float division (1/0 = inf), and Cython's
    # checked division would raise ZeroDivisionError inside nogil kernels in debug builds
    "cdivision": True,
    "embedsignature": True,
}
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
cflags = ["-O0", "-g"] if DEBUG else ["-O3"]
if DEBUG:
    macros.append(("TAPEGRAD_DEBUG_BUILD", None))   # read back as tapegrad._core.tape.DEBUG_BUILD
else:
    macros.append(("CYTHON_WITHOUT_ASSERTIONS", None))
# Extra flags from the environment (e.g. -fsanitize=address,undefined, see .ci/sanitize)
cflags += os.environ.get("TAPEGRAD_CFLAGS", "").split()
ldflags = os.environ.get("TAPEGRAD_LDFLAGS", "").split()


def _openmp_flags():
    """-fopenmp when the C compiler builds and links an OpenMP program with it, else none."""
    if os.environ.get("TAPEGRAD_OPENMP", "1") in ("0", "off", "no", "false"):
        return []
    if sysconfig.get_platform().startswith("win"):
        return []
    try:
        from setuptools._distutils import ccompiler, sysconfig as dsys
    except ImportError:
        return []
    tmp = tempfile.mkdtemp(prefix="tapegrad-omp-")
    try:
        src = os.path.join(tmp, "omp.c")
        with open(src, "w") as fh:
            fh.write("#include <omp.h>\nint main(void) { int s = 0;\n"
                     "#pragma omp parallel for reduction(+:s)\n"
                     "for (int i = 0; i < 4; i++) s += omp_get_thread_num() >= 0;\n"
                     "return s == 4 ? 0 : 1; }\n")
        cc = ccompiler.new_compiler()
        dsys.customize_compiler(cc)
        objs = cc.compile([src], output_dir=tmp, extra_postargs=["-fopenmp"])
        cc.link_executable(objs, os.path.join(tmp, "omp"), extra_postargs=["-fopenmp"])
    except Exception:          # no compiler support (e.g. Apple clang without libomp)
        return []
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ["-fopenmp"]


OPENMP = _openmp_flags()

extensions = [
    Extension(
        "tapegrad._core." + name,
        [os.path.join("_core", name + ".pyx")],
        include_dirs=[np.get_include()],
        define_macros=macros,
        extra_compile_args=cflags + (OPENMP if name == "sweeps" else []),
        extra_link_args=ldflags + (OPENMP if name == "sweeps" else []),
    )
    for name in ("tape", "recording", "sweeps")
]
# The sweeps once more with AVX2 vector loops (x86-64, release builds): tapegrad._core picks
# this build at import when the CPU has AVX2 (see _core/__init__.py). Same source, bitwise the
# same results (no FMA: only -mavx2); TAPEGRAD_SIMD=base skips it.
if (not DEBUG and platform.machine().lower() in ("x86_64", "amd64")
        and os.environ.get("TAPEGRAD_SIMD", "auto") != "base"
        and not sysconfig.get_platform().startswith("win")):
    extensions.append(Extension(
        "tapegrad._core.sweeps_avx2",
        [os.path.join("_core", "sweeps_avx2.pyx")],
        include_dirs=[np.get_include()],
        define_macros=macros,
        extra_compile_args=cflags + ["-mavx2"] + OPENMP,
        extra_link_args=ldflags + OPENMP,
    ))

# Cython's and setuptools' up-to-date checks ignore directives and flags: a release .so newer
# than the debug C files would be reused by a debug build. Each build mode (and flag set) gets
# its own build folders, so switching modes never reuses the other mode's objects.
FLAVOR = MODE + ("-omp" if OPENMP else "") + ("-%08x" % zlib.crc32(" ".join(cflags + ldflags).encode())
                 if os.environ.get("TAPEGRAD_CFLAGS") or ldflags else "")

setup(
    options={"build": {"build_base": os.path.join("build", FLAVOR)}},
    ext_modules=cythonize(
        extensions,
        include_path=[INCLUDE],
        build_dir=BUILD,
        compiler_directives=directives,
        force=True if os.environ.get("TAPEGRAD_FORCE_CYTHON") else False,
    ),
)
