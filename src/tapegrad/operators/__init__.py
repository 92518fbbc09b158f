"""The derivative operators: ``api`` (grad, value_and_grad, vjp, jvp, hvp, jacobian, hessian,
derivative), ``recorded`` (record, compile, load: a tape recorded once and replayed in C),
all thin layers over ``engine.traced.Traced``, ``batch`` (a recorded tape replayed at many points
per compiled call: ``Recorded.grad_batch`` and friends; its THREADS and BUDGET settings), and
``vmap`` (f mapped over a batch axis, re-traced)."""
from .api import (value_and_grad, grad, vjp, jvp, hvp, jacobian, jacfwd, jacrev, hessian,
                  derivative)
from .recorded import record, compile, load, Recorded, Compiled  # noqa: A004
from .vmap import vmap
