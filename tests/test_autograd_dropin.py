"""tapegrad.autograd as a drop-in for autograd: the autograd-style programs of
tests/autograd_programs.py run through it and agree with plain tapegrad (the same computations
written with ``import tapegrad as tg``) and, when autograd is installed, with autograd itself on
the very same source (its imports switched back to autograd) to 1e-12."""
import os
import types

import numpy
import pytest

import tapegrad as tg
import tapegrad.autograd as tga
import tapegrad.autograd.numpy as tnp
from tapegrad.autograd.test_util import check_grads, check_vjp, check_jvp

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "autograd_programs.py")) as _fh:
    SOURCE = _fh.read()


def _load(source, name):
    mod = types.ModuleType(name)
    exec(compile(source, os.path.join(HERE, "autograd_programs.py"), "exec"), mod.__dict__)
    return mod


P = _load(SOURCE, "programs_tapegrad")


PROGRAMS = ["logistic_adam", "net_sgd", "custom_primitive", "tanh_elementwise", "quadratic_hessian",
            "hvps", "ggn", "tjp", "derivs", "checkpointed_rnn", "argnums_and_names", "likelihoods",
            "custom_argnum_rules"]


@pytest.fixture(scope="module")
def A():
    """The same programs on the real autograd (the import lines switched)."""
    pytest.importorskip("autograd")
    return _load(SOURCE.replace("tapegrad.autograd", "autograd"), "programs_autograd")


@pytest.mark.parametrize("program", PROGRAMS)
def test_same_program_same_numbers_as_autograd(A, program):
    close(getattr(P, program)(), getattr(A, program)())


def close(a, b, tol=1e-12):
    a_leaves = _leaves(a)
    b_leaves = _leaves(b)
    assert len(a_leaves) == len(b_leaves)
    for x, y in zip(a_leaves, b_leaves):
        x, y = numpy.asarray(x, float), numpy.asarray(y, float)
        assert x.shape == y.shape, (x.shape, y.shape)
        numpy.testing.assert_allclose(x, y, rtol=tol, atol=tol)


def _leaves(t):
    if isinstance(t, (tuple, list)):
        return [l for c in t for l in _leaves(c)]
    if isinstance(t, dict):
        return [l for k in sorted(t) for l in _leaves(t[k])]
    return [t]


# ---------------------------------------------------------------------------- the namespaces
def test_numpy_is_numpy():
    import tapegrad.autograd.numpy.linalg as la
    import tapegrad.autograd.numpy.random as npr
    assert tnp is numpy and npr is numpy.random and la is numpy.linalg
    assert tnp.fft is numpy.fft and tga.numpy is numpy


# ---------------------------------------------------------------------------- the programs
def _adam_by_hand(gradf, x, num_iters, step_size, b1=0.9, b2=0.999, eps=1e-8):
    m = numpy.zeros(len(x))
    v = numpy.zeros(len(x))
    for i in range(num_iters):
        g = gradf(x, i)
        m = (1 - b1) * g + b1 * m
        v = (1 - b2) * g ** 2 + b2 * v
        x = x - step_size * (m / (1 - b1 ** (i + 1))) / (numpy.sqrt(v / (1 - b2 ** (i + 1))) + eps)
    return x


def test_logistic_regression_with_adam():
    w, losses = P.logistic_adam()
    X, y = P.logistic_data()

    def loss(w, i):
        p = 0.5 * (numpy.tanh(X @ w / 2.0) + 1.0)
        return -numpy.sum(numpy.log(p * y + (1 - p) * (1 - y)))
    close(w, _adam_by_hand(tg.grad(loss), numpy.zeros(3), 150, 0.1))
    assert losses.shape == (150,) and losses[-1] < 0.8 * losses[0]


def test_logistic_regression_without_autograd():
    w, losses = P.logistic_adam(num_iters=20)
    assert w.shape == (3,) and numpy.all(numpy.diff(losses) < 0)


def test_neural_net_with_flatten_and_sgd():
    flat, tree, rms, final = P.net_sgd()
    close(flat, tree)                          # structured parameters == flattened by hand
    params = P.init_net([4, 5, 2], rs=numpy.random.RandomState(1))
    flat0, unflatten = tga.misc.flatten(params)
    assert unflatten(flat0)[1][0].shape == (5, 2)
    rs = numpy.random.RandomState(2)
    X = rs.randn(40, 4)
    T = numpy.eye(2)[(X[:, 0] + X[:, 1] > 0).astype(int)]
    obj = lambda f: -numpy.sum(P.net_predict(unflatten(f), X) * T) / len(X)  # noqa: E731
    x, vel = flat0, numpy.zeros(len(flat0))
    for _ in range(60):
        vel = 0.9 * vel - 0.1 * tg.grad(obj)(x)
        x = x + 0.5 * vel
    close(flat, x)
    assert final < obj(flat0)


def test_custom_primitive_with_defvjp():
    g_lse, g_clip, jvp_clip = P.custom_primitive()
    x = numpy.array([0.5, -1.0, 2.0])
    close(g_lse, tg.grad(lambda x: tg.logsumexp(numpy.sin(x) * 3.0))(x))
    close(g_clip, -numpy.sin(x ** 2))          # the rule (g * 1) is used, not 2 x g
    close(jvp_clip, numpy.ones(3))


def test_custom_argnum_rules():
    (gx, gw), jx, jw, H = P.custom_argnum_rules()
    x, w = numpy.array([0.2, 1.1, -0.4]), numpy.array([1.0, 2.0, 3.0])
    f = lambda x, w: numpy.sum(w * numpy.sin(x))  # noqa: E731
    close((gx, gw), tg.grad(f, argnums=(0, 1))(x, w))
    close(jx, tg.jvp(lambda x: f(x, w), (x,), (numpy.ones(3),))[1])
    close(jw, tg.jvp(lambda w: f(x, w), (w,), (numpy.ones(3),))[1])
    close(H, tg.hessian(f)(x, w))


def test_elementwise_grad_of_tanh():
    d1, d2 = P.tanh_elementwise()
    x = numpy.linspace(-3.0, 3.0, 7)
    t = numpy.tanh(x)
    close(d1, 1 - t ** 2)
    close(d2, -2 * t * (1 - t ** 2))
    close(d1, numpy.diag(tg.jacobian(numpy.tanh)(x)))


def test_hessian_of_quadratic_is_the_matrix():
    H, g, (v, g2) = P.quadratic_hessian()
    Am, b = P.quadratic_parts()
    x = numpy.array([0.3, -0.7, 1.1])
    close(H, Am)
    close(g, Am @ x + b)
    close(g2, g)
    close(v, 0.5 * x @ Am @ x + b @ x)


def test_make_hvp_and_hessian_tensor_product():
    hv, g, htp, H = P.hvps()
    x = numpy.array([0.5, -0.3, 1.2, 0.8])
    v = numpy.array([1.0, 2.0, -1.0, 0.5])
    close(hv, tg.hvp(P.rosenbrock, (x,), (v,)))
    close(htp, hv)
    close(H, tg.hessian(P.rosenbrock)(x))
    close(g, tg.grad(P.rosenbrock)(x))


def test_make_ggnvp_is_jt_h_j():
    ggnv, ggnv_default, J, H = P.ggn()
    v = numpy.array([1.0, 0.5, -2.0])
    close(ggnv, J.T @ H @ J @ v)
    close(ggnv_default, J.T @ J @ v)           # default g = sum(y**2) / 2: H = identity
    x = numpy.random.RandomState(3).randn(5, 3)
    w = numpy.array([0.2, -0.4, 0.7])
    close(J, tg.jacobian(P.ggn_f)(w, x))


def test_tensor_jacobian_product():
    tjp, vjp, J, ans = P.tjp()
    V = numpy.array([[1.0, -2.0], [0.5, 0.0], [3.0, 1.0]])
    close(tjp, numpy.tensordot(V, J, axes=2))
    close(vjp, tjp)
    assert J.shape == (3, 2, 3) and ans.shape == (3, 2)


def test_deriv():
    d_sin, d_poly, d_tanh = P.derivs()
    close(d_sin, numpy.cos(0.3))
    close(d_poly, 3 * 1.5 ** 2 + numpy.exp(1.5))
    close(d_tanh, tg.jvp(numpy.tanh, (numpy.array([0.1, 0.2]),), (numpy.ones(2),))[1])


def test_checkpoint():
    g_ck, g_plain, g_h0 = P.checkpointed_rnn()
    close(g_ck, g_plain, tol=1e-13)
    assert g_h0.shape == (3,)


def test_argnum_tuples_names_and_dicts():
    ga, gb, gb_named, e = P.argnums_and_names()
    a, b = numpy.array([1.0, 2.0]), numpy.array([0.3, -0.4])
    close(ga, 2.0 * numpy.sin(b))
    close(gb, 2.0 * a * numpy.cos(b))
    close(gb_named, gb)
    names, ma, mb, mc = P.all_gradients()
    assert names == ["a", "b", "c"]
    close((ma, mb, mc), tg.grad(lambda a, b, c: numpy.sum(a * numpy.sin(b)) * c, argnums=(0, 1, 2))(
        a, b, 2.0))


# ---------------------------------------------------------------------------- conventions
def test_grad_of_a_non_scalar_is_a_type_error():
    with pytest.raises(TypeError):
        tga.grad(numpy.sin)(numpy.ones(3))


def test_make_vjp_and_make_jvp_return_orders():
    x = numpy.array([0.1, 0.7])
    vjp, ans = tga.make_vjp(numpy.sin)(x)
    close(ans, numpy.sin(x))
    close(vjp(numpy.ones(2)), numpy.cos(x))
    ans2, t = tga.make_jvp(numpy.sin)(x)(numpy.array([1.0, 2.0]))
    close((ans2, t), (numpy.sin(x), numpy.cos(x) * [1.0, 2.0]))


def test_holomorphic_grad_is_the_complex_derivative():
    # (this replaced a test pinning the refusal: complex numbers are supported now)
    f = tga.holomorphic_grad(lambda z: z ** 2)
    z = 1.0 + 2.0j
    numpy.testing.assert_allclose(f(z), 2 * z, rtol=1e-13)
    g = tga.holomorphic_grad(lambda z: numpy.sum(numpy.exp(z) * numpy.sin(z)))
    zs = numpy.array([0.3 - 0.2j, -1.1 + 0.7j])
    numpy.testing.assert_allclose(g(zs), numpy.exp(zs) * (numpy.sin(zs) + numpy.cos(zs)), rtol=1e-13)
    with pytest.warns(UserWarning, match="not complex"):
        close(f(1.5), 3.0)   # autograd: the gradient of Re f at a real point, with a warning


def test_argnum_must_be_int_or_tuple():
    with pytest.raises(TypeError):
        tga.grad(numpy.sum, "x")


def test_extend_box_and_notrace_primitive():
    from tapegrad.autograd.extend import Box, notrace_primitive
    seen = []
    f = notrace_primitive(lambda x: (seen.append(type(x)), numpy.floor(x) * 2.0)[1])
    g = tga.grad(lambda x: isinstance(x, Box) * numpy.sum(x * f(x)))(numpy.array([1.5, 2.5]))
    close(g, numpy.array([2.0, 4.0]))                 # d/dx (x * c), c = 2 floor(x) held constant
    assert seen == [numpy.ndarray]


def test_builtins_are_pythons():
    # the containers are Python's; isinstance and type look through traced values (below)
    from tapegrad.autograd import builtins as agb
    assert agb.tuple is tuple and agb.list is list and agb.dict is dict
    assert agb.isinstance(3, int) and agb.type(3.0) is float and agb.isinstance((), (tuple, list))


def test_scipy_namespaces():
    from tapegrad.autograd.scipy import special, stats, misc
    x = numpy.array([0.3, -1.2, 2.0])
    assert special.logsumexp is tg.logsumexp and misc.logsumexp is tg.logsumexp
    close(tga.grad(lambda x: special.logsumexp(x))(x), numpy.exp(x) / numpy.exp(x).sum())
    close(tga.grad(lambda x: numpy.sum(special.gammaln(x ** 2 + 1)))(x),
          special.psi(x ** 2 + 1) * 2 * x)
    import scipy.stats as ss
    for name in ("pdf", "logpdf", "cdf", "logcdf", "sf", "logsf"):
        ours = getattr(stats.norm, name)(x, 0.5, 2.0)
        close(ours, getattr(ss.norm, name)(x, 0.5, 2.0), tol=1e-12)
        check_grads(lambda x, l, s: getattr(stats.norm, name)(x, l, s), modes=["fwd", "rev"],
                    order=2)(x, 0.5, 2.0)
    close(tga.grad(lambda x: numpy.sum(stats.norm.logpdf(x)))(x), -x)
    u = numpy.array([0.2, 0.5, 0.9])
    for dist, args in (("t", (u, 3.5, 0.2, 1.5)), ("gamma", (u, 2.5, 0.0, 1.3)), ("chi2", (u, 3.0)),
                       ("beta", (u, 2.0, 3.5)), ("poisson", (numpy.array([0.0, 2.0, 5.0]), 2.3))):
        for name in (("logpmf", "pmf") if dist == "poisson" else ("logpdf", "pdf")):
            close(getattr(getattr(stats, dist), name)(*args), getattr(getattr(ss, dist), name)(*args),
                  tol=1e-12)
        check_grads(getattr(stats, dist).logpmf if dist == "poisson" else getattr(stats, dist).logpdf,
                    argnum=tuple(range(1 if dist == "poisson" else 0, len(args))))(*args)
    mean, cov = numpy.array([0.1, -0.2]), numpy.array([[2.0, 0.3], [0.3, 1.0]])
    X = numpy.array([[0.3, 0.4], [1.0, -1.0], [0.0, 0.2]])
    close(stats.multivariate_normal.logpdf(X, mean, cov), ss.multivariate_normal.logpdf(X, mean, cov))
    close(stats.multivariate_normal.pdf(X[0], mean, cov), ss.multivariate_normal.pdf(X[0], mean, cov))
    check_grads(stats.multivariate_normal.logpdf, argnum=(0, 1, 2))(X, mean, cov)
    al, p = numpy.array([1.5, 2.0, 3.0]), numpy.array([0.2, 0.3, 0.5])
    close(stats.dirichlet.logpdf(p, al), ss.dirichlet.logpdf(p, al))
    check_grads(stats.dirichlet.logpdf, argnum=(0, 1))(p, al)


def test_likelihoods_against_plain_tapegrad():
    v, g = P.likelihoods()
    assert numpy.isfinite(v) and len(g) == 4 and g[3].shape == (2, 2)
    nll, params = P.likelihood_problem()
    close((v, g), tg.value_and_grad(nll)(params))
    tg.check_grads(nll, params, modes=("fwd", "rev"), order=2)


def test_check_grads_catches_a_wrong_rule():
    x = numpy.array([0.3, 0.9])
    check_grads(lambda x: numpy.sum(numpy.tanh(x) ** 3))(x)
    check_grads(lambda a, b: a * numpy.sin(b), argnum=(0, 1), modes=["rev"], order=1)(x, x + 1)
    check_vjp(numpy.sin, x)
    check_jvp(numpy.sin, x)
    with pytest.raises(AssertionError):
        check_grads(P.clipped_square, modes=["rev"], order=1)(x)


def test_against_autograd_check_grads_style(A):
    # the same assertion through autograd's own checker, on the same function
    autograd_test_util = pytest.importorskip("autograd.test_util")
    import autograd.numpy as anp
    autograd_test_util.check_grads(lambda x: anp.sum(anp.tanh(x) ** 3), modes=["fwd", "rev"])(
        numpy.array([0.3, 0.9]))


def test_builtins_isinstance_and_type_look_through_traced_values():
    # autograd.builtins.isinstance sees the value a box holds; so does the drop-in's
    from tapegrad.autograd.builtins import isinstance as ag_isinstance, type as ag_type
    seen = []

    def f(x):
        seen.append((ag_isinstance(x, numpy.ndarray), ag_type(x) is numpy.ndarray,
                     ag_isinstance(x, (tuple, list)), tga.isinstance(x, numpy.ndarray)))
        return numpy.sum(x * x)
    tga.grad(f)(numpy.ones(2))
    assert seen == [(True, True, False, True)]
    assert ag_isinstance([], list) and not ag_isinstance(numpy.zeros(1), (tuple, list))
    z = numpy.ones(2) + 1j
    tga.grad(lambda z: numpy.sum(numpy.abs(z)) if ag_isinstance(z, numpy.ndarray) else None)(z)
