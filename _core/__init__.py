"""Compiled core of tapegrad: tape storage (tape) and the sweeps over it (sweeps).

``sweeps`` is the AVX2 build of the sweeps (sweeps_avx2, same source) when it was built in the
same mode (release/debug) and the CPU supports AVX2, else the baseline build;
TAPEGRAD_SIMD=base forces the baseline.
"""
import os as _os

from . import sweeps as _base_sweeps

sweeps = _base_sweeps
if _os.environ.get("TAPEGRAD_SIMD", "auto") != "base" and _base_sweeps.cpu_has_avx2():
    try:
        from . import sweeps_avx2 as _avx2_sweeps
    except ImportError:      # not built (debug build, another architecture)
        pass
    else:
        if _avx2_sweeps.DEBUG_BUILD == _base_sweeps.DEBUG_BUILD:
            sweeps = _avx2_sweeps
