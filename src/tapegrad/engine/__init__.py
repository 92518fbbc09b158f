"""What the derivative operators share: ``traced`` (``Traced``, f recorded at one set of
arguments, with its compiled sweeps: the one mechanism every operator is built on) and
``reference`` (the NumPy reference sweep: an oracle for the compiled sweeps, and the way nested
derivatives are recorded). Imports the rules, the tracing layer and the compiled core only."""
