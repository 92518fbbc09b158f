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


def set_num_threads(n):
    """Threads for the large sweeps (long elementwise runs, fused gradients and Hessian-vector
    products; see _core/sweep_threads.pxi): an integer of at least 1. Returns the previous count.
    The results are the same bits for every count; without OpenMP in the build the sweeps run
    serially whatever the count. TAPEGRAD_NUM_THREADS sets it at import (default 1; "auto": the
    cores this process may use)."""
    prev = _base_sweeps.set_num_threads(n)
    if sweeps is not _base_sweeps:
        sweeps.set_num_threads(n)
    return prev


def get_num_threads():
    """The thread count the large sweeps use (1 when the build has no OpenMP)."""
    return sweeps.get_num_threads()
