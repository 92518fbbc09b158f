"""scipy.signal convolutions on tracers: ``convolve``, ``correlate`` (n-d, mode full/same/valid),
``fftconvolve`` and ``oaconvolve`` (with ``axes``), ``convolve2d``/``correlate2d`` (boundary
'fill' with fillvalue 0), with SciPy's signatures.

One Python rule (``Convolve`` in tapegrad.rules.scipy_calls, one tape operation) computes the full convolution along the
given axes with SciPy's own function (so values are SciPy's, FFT or direct as SciPy chooses);
'same' and 'valid' are slices of it. Convolution is bilinear: Y_dot = A_dot * B + A * B_dot,
and the adjoint of A is the correlation of Y_bar with B, i.e. the full convolution of Y_bar with
B reversed along the axes, sliced to A's extent (the same rule again, so hvp works).
"""
import numpy as np
import scipy.signal as _ss

from ._common import active, values, as_float, shape
from ..rules.scipy_calls import Convolve, _full  # noqa: F401
from ..rules import base as _rules
from ..tracing.tracer import Tracer

__all__ = ["convolve", "correlate", "fftconvolve", "oaconvolve", "convolve2d", "correlate2d",
           "covered"]

def _slice_mode(full, sa, sb, axes, mode, fname):
    if mode == "full":
        return full
    fs = shape(full)
    idx = []
    for d in range(len(fs)):
        if d not in axes:
            idx.append(slice(None))
        elif mode == "same":
            start = (fs[d] - sa[d]) // 2
            idx.append(slice(start, start + sa[d]))
        else:  # valid
            lo, hi = min(sa[d], sb[d]), max(sa[d], sb[d])
            idx.append(slice(lo - 1, hi))
    return full[tuple(idx)]


def _check_mode(fname, mode):
    if mode not in ("full", "same", "valid"):
        raise ValueError(f"tapegrad.scipy.signal.{fname}: acceptable mode flags are 'valid', "
                         f"'same', or 'full' (got {mode!r})")


def _check_valid(fname, sa, sb, axes):
    if not (all(sa[d] >= sb[d] for d in axes) or all(sb[d] >= sa[d] for d in axes)):
        raise ValueError(f"tapegrad.scipy.signal.{fname}: For 'valid' mode, one must be at least as "
                         f"large as the other in every dimension (shapes {sa} and {sb})")


def _prepare(fname, in1, in2, mode, axes):
    _check_mode(fname, mode)
    in1, in2 = as_float(in1), as_float(in2)
    sa, sb = shape(in1), shape(in2)
    if len(sa) != len(sb):
        raise ValueError(f"tapegrad.scipy.signal.{fname}: in1 and in2 should have the same "
                         f"dimensionality (shapes {sa} and {sb})")
    nd = len(sa)
    if axes is None:
        axes = tuple(range(nd))
    else:
        ax = [int(d) for d in np.atleast_1d(axes)]
        if any(not -nd <= d < nd for d in ax):
            raise ValueError(f"tapegrad.scipy.signal.{fname}: axes {axes} exceed the dimensionality "
                             f"of the input ({nd})")
        ax = [d % nd for d in ax]
        if len(set(ax)) != len(ax):
            raise ValueError(f"tapegrad.scipy.signal.{fname}: all axes must be unique (got {axes})")
        axes = tuple(sorted(ax))
    # off the axes, the shapes broadcast (as SciPy's fftconvolve allows)
    common = []
    for d in range(nd):
        if d in axes:
            common.append(None)
        elif sa[d] == sb[d] or 1 in (sa[d], sb[d]):
            common.append(max(sa[d], sb[d]))
        else:
            raise ValueError(f"tapegrad.scipy.signal.{fname}: incompatible shapes for in1 and in2 "
                             f"off the convolution axes: {sa} and {sb}")
    ta = tuple(sa[d] if c is None else c for d, c in enumerate(common))
    tb = tuple(sb[d] if c is None else c for d, c in enumerate(common))
    if ta != sa:
        in1 = _rules.broadcast_to(in1, ta) if type(in1) is Tracer else np.broadcast_to(in1, ta)
    if tb != sb:
        in2 = _rules.broadcast_to(in2, tb) if type(in2) is Tracer else np.broadcast_to(in2, tb)
    if mode == "valid":
        _check_valid(fname, ta, tb, axes)
    return in1, in2, ta, tb, axes


def _conv(fname, in1, in2, mode, axes, method):
    in1, in2, sa, sb, axes = _prepare(fname, in1, in2, mode, axes)
    full = _full(in1 if type(in1) is Tracer else np.ascontiguousarray(in1),
                 in2 if type(in2) is Tracer else np.ascontiguousarray(in2), axes, method)
    return _slice_mode(full, sa, sb, axes, mode, fname)


def convolve(in1, in2, mode="full", method="auto"):
    """scipy.signal.convolve on tracers (n-d; mode 'full', 'same' (centered on in1), 'valid')."""
    if not active(in1, in2):
        return _ss.convolve(values(in1), values(in2), mode=mode, method=method)
    if method not in ("auto", "direct", "fft"):
        raise ValueError(f"tapegrad.scipy.signal.convolve: acceptable method flags are 'auto', "
                         f"'direct', or 'fft' (got {method!r})")
    return _conv("convolve", in1, in2, mode, None, "fft" if method == "fft" else "direct")


def correlate(in1, in2, mode="full", method="auto"):
    """scipy.signal.correlate on tracers: convolve(in1, in2 reversed); for 'valid' with in2 the
    larger, SciPy's convention (the correlation of in2 with in1, reversed)."""
    if not active(in1, in2):
        return _ss.correlate(values(in1), values(in2), mode=mode, method=method)
    _check_mode("correlate", mode)
    sa, sb = shape(in1), shape(in2)
    if len(sa) != len(sb):
        raise ValueError(f"tapegrad.scipy.signal.correlate: in1 and in2 should have the same "
                         f"dimensionality (shapes {sa} and {sb})")
    nd = len(sa)
    if mode == "valid" and all(b >= a for a, b in zip(sa, sb)) and sa != sb:
        return np.flip(correlate(in2, in1, mode, method), tuple(range(nd)))
    return convolve(in1, np.flip(in2, tuple(range(nd))), mode, method)


def fftconvolve(in1, in2, mode="full", axes=None):
    """scipy.signal.fftconvolve on tracers, with ``axes`` (the other axes broadcast)."""
    if not active(in1, in2):
        return _ss.fftconvolve(values(in1), values(in2), mode=mode, axes=axes)
    return _conv("fftconvolve", in1, in2, mode, axes, "fft")


def oaconvolve(in1, in2, mode="full", axes=None):
    """scipy.signal.oaconvolve on tracers, with ``axes`` (the other axes broadcast)."""
    if not active(in1, in2):
        return _ss.oaconvolve(values(in1), values(in2), mode=mode, axes=axes)
    return _conv("oaconvolve", in1, in2, mode, axes, "oa")


def _check_2d(fname, in1, in2, boundary, fillvalue):
    if boundary not in ("fill", "pad"):
        raise NotImplementedError(f"tapegrad.scipy.signal.{fname}: boundary={boundary!r} has no "
                                  "rule on tracers; only 'fill' (with fillvalue=0)")
    if fillvalue != 0:
        raise NotImplementedError(f"tapegrad.scipy.signal.{fname}: fillvalue={fillvalue!r} has no "
                                  "rule on tracers; only 0")
    if len(shape(in1)) != 2 or len(shape(in2)) != 2:
        raise ValueError(f"tapegrad.scipy.signal.{fname}: in1 and in2 should be 2-D arrays "
                         f"(shapes {shape(in1)} and {shape(in2)})")


def convolve2d(in1, in2, mode="full", boundary="fill", fillvalue=0):
    """scipy.signal.convolve2d on tracers (boundary 'fill', fillvalue 0)."""
    if not active(in1, in2):
        return _ss.convolve2d(values(in1), values(in2), mode=mode, boundary=boundary,
                              fillvalue=fillvalue)
    _check_2d("convolve2d", in1, in2, boundary, fillvalue)
    return convolve(in1, in2, mode)


def correlate2d(in1, in2, mode="full", boundary="fill", fillvalue=0):
    """scipy.signal.correlate2d on tracers (boundary 'fill', fillvalue 0)."""
    if not active(in1, in2):
        return _ss.correlate2d(values(in1), values(in2), mode=mode, boundary=boundary,
                               fillvalue=fillvalue)
    _check_2d("correlate2d", in1, in2, boundary, fillvalue)
    return correlate(in1, in2, mode)


def covered():
    return list(__all__[:-1])
