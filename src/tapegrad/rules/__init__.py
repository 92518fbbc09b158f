"""The NumPy rules: how each NumPy function or ufunc records onto the tape's primitives.

``base`` (elementwise, reductions, indexing, matmul and the dispatch tables), ``calls``
(rules written in Python: one tape operation whose value and derivatives are NumPy code),
``linalg`` (numpy.linalg as such rules) and ``breadth`` (the rest of NumPy and SciPy as
compositions). Imports the tracing layer and the compiled core only."""
