#!/usr/bin/env python
"""Run the tapegrad benchmark suite as a plain script (same code as ``tapegrad bench``).

    python benchmarks/run.py                 # all installed tools, default sizes
    python benchmarks/run.py --quick         # tiny sizes, tapegrad and hand NumPy, seconds
    python benchmarks/run.py --help

BLAS, OpenMP and XLA are pinned to one thread here, before NumPy is imported (the suite pins
them again with threadpoolctl when it is installed); pass --threads N to the suite to change it.
"""
import os
import sys

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

from tapegrad.cli import bench_main as main  # noqa: E402  (after the thread pinning above)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
