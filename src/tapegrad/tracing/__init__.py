"""The tracing front end: the ``Tracer`` type and its recorder (NumPy's dispatch protocols, the
arithmetic dunders, the per-thread recording stack), and the pytree helpers. Imports only the
compiled core; the NumPy rules plug into the tracer's dispatch from above (see ``tracer.py``)."""
