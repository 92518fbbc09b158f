"""autograd.scipy.misc on tapegrad: ``logsumexp`` (``tg.logsumexp``)."""
from ...rules.breadth import logsumexp

__all__ = ["logsumexp"]
