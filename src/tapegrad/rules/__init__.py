"""The NumPy rules: how each NumPy function or ufunc records onto the tape's primitives.

``base`` (elementwise, reductions, indexing, matmul and the dispatch tables), ``calls``
(rules written in Python: one tape operation whose value and derivatives are NumPy code),
``linalg`` (numpy.linalg as such rules), ``breadth`` (the rest of NumPy and SciPy as
compositions), ``special`` (scipy.special ufuncs with parameters: gammainc, jv, ...),
``scipy_calls`` (the rules of tapegrad.scipy: triangular solves, convolutions), ``complex``
(complex values as pairs of real parts, numpy.fft) and ``complex_funcs`` (more NumPy
functions on complex values: where, einsum of several operands, sinc, ...). Imports the
tracing layer and the compiled core only."""
