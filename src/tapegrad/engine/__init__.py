"""What the derivative operators share: the NumPy reference sweep (an oracle for the compiled
sweeps, and the way nested derivatives are recorded). Imports the rules, the tracing layer and
the compiled core only."""
