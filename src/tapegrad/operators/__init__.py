"""The derivative operators: ``api`` (grad, value_and_grad, vjp, jvp, hvp, jacobian, hessian,
derivative) and ``recorded`` (record, compile, load: a tape recorded once and replayed in C)."""
