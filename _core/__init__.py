"""Compiled core of tapegrad: tape storage (tape) and the sweeps over it (sweeps)."""
