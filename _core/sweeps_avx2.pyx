# cython: language_level=3
# The sweeps of sweeps.pyx, compiled a second time with AVX2 vector loops (setup.py adds
# -mavx2). tapegrad._core uses this module in place of sweeps when the CPU has AVX2.
include "sweeps.pyx"
