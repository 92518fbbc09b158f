"""autograd.scipy.stats on tapegrad: ``norm`` (``pdf``, ``logpdf``, ``cdf``, ``logcdf``, ``sf``,
``logsf`` with ``loc`` and ``scale``), written in NumPy and the scipy.special functions tapegrad
differentiates, so every mode and every order works. The other distributions autograd wraps are
not provided yet: plain ``scipy.stats`` converts its arguments with ``np.asarray`` and so does not
dispatch to tapegrad (see docs/porting_from_autograd.md)."""
import types as _types

import numpy as np
import scipy.special as _sps

__all__ = ["norm"]

_LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)


def _logpdf(x, loc=0.0, scale=1.0):
    z = (x - loc) / scale
    return -0.5 * z * z - _LOG_SQRT_2PI - np.log(scale)


def _pdf(x, loc=0.0, scale=1.0):
    return np.exp(_logpdf(x, loc, scale))


def _cdf(x, loc=0.0, scale=1.0):
    return _sps.ndtr((x - loc) / scale)


def _logcdf(x, loc=0.0, scale=1.0):
    return _sps.log_ndtr((x - loc) / scale)


def _sf(x, loc=0.0, scale=1.0):
    return _sps.ndtr(-(x - loc) / scale)


def _logsf(x, loc=0.0, scale=1.0):
    return _sps.log_ndtr(-(x - loc) / scale)


norm = _types.SimpleNamespace(pdf=_pdf, logpdf=_logpdf, cdf=_cdf, logcdf=_logcdf, sf=_sf,
                              logsf=_logsf)
