"""Custom derivative rules: tg.custom_vjp / tg.custom_jvp (JAX's shapes) and tg.primitive with
tg.defvjp / tg.defjvp (autograd's). Rules that differ from what tracing would give prove that
the rule is used; correct rules are checked against central differences."""
import pickle
import threading

import numpy as np
import pytest
from scipy import integrate

import tapegrad as tg


# ------------------------------------------------------------------ the rule is what is used
@tg.custom_vjp
def square_says_three(x):
    return x * x


square_says_three.defvjp(lambda x: (x * x, None), lambda res, g: (3.0 * g,))


def test_custom_vjp_rule_replaces_tracing():
    x = np.array([0.5, -2.0, 4.0])
    np.testing.assert_array_equal(tg.grad(lambda x: np.sum(square_says_three(x)))(x), [3.0] * 3)
    rec = tg.record(lambda x: np.sum(square_says_three(x)), x)
    np.testing.assert_array_equal(rec.grad(x + 1.0), [3.0] * 3)
    assert rec(x + 1.0) == np.sum((x + 1.0) ** 2)
    # forward mode transposes the vjp rule: J v = 3 v
    _, t = tg.jvp(square_says_three, (x,), (np.array([1.0, 2.0, -1.0]),))
    np.testing.assert_array_equal(t, [3.0, 6.0, -3.0])


# ------------------------------------------------------------------ a SciPy routine, wrapped
def _quad(a):
    return integrate.quad(lambda t: np.exp(-a * t * t), 0.0, 1.0, epsabs=1e-13, epsrel=1e-13)[0]


@tg.custom_vjp
def gauss_integral(a):
    """F(a) = int_0^1 exp(-a t^2) dt for each a (scipy.integrate.quad: not traceable)."""
    return np.array([_quad(float(v)) for v in np.ravel(a)]).reshape(np.shape(a))


def _gi_fwd(a):
    da = np.array([-integrate.quad(lambda t: t * t * np.exp(-v * t * t), 0.0, 1.0,
                                   epsabs=1e-13, epsrel=1e-13)[0] for v in np.ravel(a)])
    return gauss_integral(a), da.reshape(np.shape(a))


gauss_integral.defvjp(_gi_fwd, lambda dF, g: (g * dF,))


def test_wrapping_a_scipy_routine():
    a = np.array([0.3, 1.0, 2.5])
    tg.check_grads(gauss_integral, a, modes=("fwd", "rev"), order=1)
    loss = lambda a: np.sum(np.sin(gauss_integral(a ** 2)))
    tg.check_grads(loss, a, modes=("rev",), order=1)
    rec = tg.record(loss, a)
    b = a + 0.25
    np.testing.assert_allclose(rec.grad(b), tg.grad(loss)(b), rtol=1e-14)


# ------------------------------------------------------------------ custom_jvp
@tg.custom_jvp
def softplus(x):
    return np.log1p(np.exp(x))


@softplus.defjvp
def _softplus_jvp(primals, tangents):
    (x,), (x_dot,) = primals, tangents
    return softplus(x), x_dot / (1.0 + np.exp(-x))


def test_custom_jvp_all_modes_and_second_order():
    x = np.array([-1.5, 0.2, 3.0])
    tg.check_grads(softplus, x, modes=("fwd", "rev"), order=2)
    tg.check_grads(lambda x: np.sum(softplus(x) ** 2), x, modes=("fwd", "rev"), order=2)
    # nesting: grad of grad through the transposed jvp rule
    d2 = tg.grad(tg.grad(lambda v: softplus(v)))(0.4)
    s = 1 / (1 + np.exp(-0.4))
    np.testing.assert_allclose(d2, s * (1 - s), rtol=1e-12)


def test_custom_jvp_rule_replaces_tracing():
    @tg.custom_jvp
    def f(x):
        return np.sin(x)

    f.defjvp(lambda primals, tangents: (f(primals[0]), 5.0 * tangents[0]))
    x = np.array([0.1, 0.2])
    np.testing.assert_array_equal(tg.grad(lambda x: np.sum(f(x)))(x), [5.0, 5.0])
    np.testing.assert_array_equal(tg.jvp(f, (x,), (np.ones(2),))[1], [5.0, 5.0])


# ------------------------------------------------------------------ structure of arguments
def test_several_arguments_pytrees_and_nondiff_argnums():
    @tg.custom_vjp
    def f(p, scale, mode):
        return {"out": np.tanh(p["w"]) * p["b"] * scale, "n": mode}["out"]

    def fwd(p, scale, mode):
        t = np.tanh(p["w"])
        return f(p, scale, mode), (t, p["b"], scale)

    def bwd(mode, res, g):
        t, b, scale = res
        return ({"w": g * (1 - t * t) * b * scale, "b": np.sum(g * t * scale)},
                np.sum(g * t * b))

    f.defvjp(fwd, bwd)
    f.nondiff_argnums = (2,)
    p = {"w": np.array([0.3, -0.8, 1.1]), "b": 1.7}
    loss = lambda p, s: np.sum(f(p, s, "any") ** 2)
    g = tg.grad(loss, argnums=(0, 1))(p, 0.9)
    eps = 1e-6
    fd_b = (loss({"w": p["w"], "b": p["b"] + eps}, 0.9) - loss({"w": p["w"], "b": p["b"] - eps}, 0.9)) / (2 * eps)
    fd_s = (loss(p, 0.9 + eps) - loss(p, 0.9 - eps)) / (2 * eps)
    np.testing.assert_allclose(g[0]["b"], fd_b, rtol=1e-7)
    np.testing.assert_allclose(g[1], fd_s, rtol=1e-7)
    tg.check_grads(lambda w: loss({"w": w, "b": 1.7}, 0.9), p["w"], modes=("rev",), order=1)


def test_untraced_arguments_are_constants():
    @tg.custom_vjp
    def f(x, y):
        return x * y

    f.defvjp(lambda x, y: (x * y, (x, y)), lambda r, g: (g * r[1], g * r[0]))
    y = np.array([2.0, 3.0])
    np.testing.assert_array_equal(tg.grad(lambda x: np.sum(f(x, y)))(np.ones(2)), y)
    assert np.all(f(np.ones(2), y) == y)          # no recording: just the function


# ------------------------------------------------------------------ autograd's API
def test_primitive_defvjp_defjvp_autograd_style():
    def logsumexp(x):
        m = np.max(x)
        return m + np.log(np.sum(np.exp(x - m)))

    lse = tg.primitive(logsumexp)
    tg.defvjp(lse, lambda ans, x: lambda g: g * np.exp(x - ans))
    x = np.array([0.5, -1.0, 2.0])
    tg.check_grads(lse, x, modes=("rev",), order=2)
    np.testing.assert_allclose(tg.grad(lse)(x), np.exp(x) / np.sum(np.exp(x)), rtol=1e-14)
    # forward mode before defjvp: transposed vjp; after defjvp: the jvp rule
    v = np.array([1.0, 0.0, -1.0])
    want = np.dot(np.exp(x) / np.sum(np.exp(x)), v)
    np.testing.assert_allclose(tg.jvp(lse, (x,), (v,))[1], want, rtol=1e-14)
    tg.defjvp(lse, lambda g, ans, x: np.sum(g * np.exp(x - ans)))
    np.testing.assert_allclose(tg.jvp(lse, (x,), (v,))[1], want, rtol=1e-14)


def test_defvjp_per_argnum_and_kwargs():
    def scaled(x, y, power=1.0):
        return (x * y) ** power

    f = tg.primitive(scaled)
    tg.defvjp(f, lambda ans, x, y, power=1.0: lambda g: g * power * ans / x,
              lambda ans, x, y, power=1.0: lambda g: g * power * ans / y)
    x, y = np.array([1.5, 2.0]), np.array([0.5, 3.0])
    loss = lambda x, y: np.sum(f(x, y, power=2.0))
    gx, gy = tg.grad(loss, argnums=(0, 1))(x, y)
    np.testing.assert_allclose(gx, 2 * x * y * y, rtol=1e-14)
    np.testing.assert_allclose(gy, 2 * x * x * y, rtol=1e-14)
    g2 = tg.primitive(scaled)
    tg.defvjp_argnum(g2, lambda k, ans, args, kw: lambda g: g * kw.get("power", 1.0) * ans / args[k])
    np.testing.assert_allclose(tg.grad(lambda x: np.sum(g2(x, y, power=2.0)))(x), gx, rtol=1e-14)


# ------------------------------------------------------------------ errors
def test_errors_name_the_function():
    @tg.custom_vjp
    def nothing(x):
        return x

    with pytest.raises(TypeError, match="nothing.*defvjp"):
        nothing(np.ones(2))

    @tg.custom_vjp
    def two(x):
        return x

    two.defvjp(lambda x: (x, None), lambda r, g: (g, g))
    with pytest.raises(TypeError, match="two: bwd returned 2 cotangents for 1"):
        tg.grad(lambda x: np.sum(two(x)))(np.ones(2))
    with pytest.raises(TypeError, match="is not a tapegrad.primitive"):
        tg.defvjp(np.sin, lambda ans, x: lambda g: g)


# ------------------------------------------------------------------ replay: threads, bytes
def test_threads_replay_a_tape_with_a_custom_op():
    rec = tg.record(lambda x: np.sum(softplus(x) * x), np.zeros(50))
    pts = [np.linspace(-1, 1, 50) * k for k in range(1, 9)]
    want = [tg.grad(lambda x: np.sum(softplus(x) * x))(p) for p in pts]
    got = [None] * len(pts)

    def work(i):
        for _ in range(20):
            got[i] = rec.grad(pts[i])

    ts = [threading.Thread(target=work, args=(i,)) for i in range(len(pts))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-14)


def test_saving_needs_a_registered_name():
    @tg.custom_jvp
    def cube(x, c):
        return c * x ** 3

    cube.defjvp(lambda p, t: (cube(*p), 3 * p[1] * p[0] ** 2 * t[0]))
    loss = lambda x: np.sum(cube(x, np.array([1.0, 2.0])))
    rec = tg.record(loss, np.array([0.5, 1.5]))
    with pytest.raises(ValueError, match="not registered.*register_custom"):
        rec.to_bytes()
    tg.register_custom("tests.cube", cube)
    data = rec.to_bytes()
    back = tg.load(data)
    x = np.array([1.0, -2.0])
    np.testing.assert_allclose(back.grad(x), 3 * np.array([1.0, 2.0]) * x ** 2, rtol=1e-14)
    np.testing.assert_allclose(pickle.loads(pickle.dumps(rec)).grad(x), back.grad(x), rtol=0)
    with pytest.raises(ValueError, match="already registered"):
        tg.register_custom("tests.cube", softplus)


def test_loading_without_the_registration_is_a_clear_error(monkeypatch):
    from tapegrad.rules import custom
    f = tg.register_custom("tests.softplus", softplus)
    data = tg.record(lambda x: np.sum(f(x)), np.ones(3)).to_bytes()
    monkeypatch.setattr(custom, "CUSTOM", {})
    with pytest.raises(ValueError, match="'tests.softplus' is not registered"):
        tg.load(data)


# ------------------------------------------------------------------ checkpointing
_A = np.random.default_rng(0).standard_normal((30, 30)) / np.sqrt(30)


def _step(x, c):
    return np.tanh(_A @ x) * c + 0.1 * np.sin(x)


def _unrolled(step, steps=400):
    def loss(x):
        for _ in range(steps):
            x = step(x, 0.9)
        return np.sum(x ** 2)
    return loss


def test_checkpoint_gives_the_plain_gradient_and_keeps_only_step_inputs():
    x0 = np.linspace(-1.0, 1.0, 30)
    plain, ck = _unrolled(_step), _unrolled(tg.checkpoint(_step))
    g0, g1 = tg.grad(plain)(x0), tg.grad(ck)(x0)
    np.testing.assert_allclose(g1, g0, rtol=1e-13, atol=1e-16)
    r0, r1 = tg.record(plain, x0), tg.record(ck, x0)
    # the tape keeps one op and the 30 outputs per step, not the step's intermediates
    assert r1.tape.nwork < r0.tape.nwork / 3 and r1.tape.nops == 400 + 2
    x1 = x0[::-1] * 0.5
    np.testing.assert_allclose(r1.grad(x1), r0.grad(x1), rtol=1e-13, atol=1e-16)
    v = np.cos(np.arange(30.0))
    np.testing.assert_allclose(tg.jvp(ck, (x1,), (v,))[1], tg.jvp(plain, (x1,), (v,))[1], rtol=1e-12)
    short0, short1 = _unrolled(_step, 5), _unrolled(tg.checkpoint(_step), 5)
    np.testing.assert_allclose(tg.hvp(short1, (x1,), (v,)), tg.hvp(short0, (x1,), (v,)), rtol=1e-12)


def test_checkpoint_non_numeric_arguments_are_constants():
    def f(x, mode):
        return np.sin(x) if mode == "sin" else np.cos(x)

    g = tg.grad(lambda x: np.sum(tg.checkpoint(f)(x, "sin")))(np.array([0.3, 0.4]))
    np.testing.assert_allclose(g, np.cos([0.3, 0.4]), rtol=1e-15)


def test_forward_mode_without_a_traceable_rule_says_what_to_give():
    @tg.custom_vjp
    def f(x):
        return np.sin(x)

    def bwd(res, g):
        return (np.asarray(g, dtype=float) * np.cos(res),)   # dtype=float: not traceable in g
    f.defvjp(lambda x: (np.sin(x), x), bwd)
    x = np.array([0.2, 0.4])
    np.testing.assert_allclose(tg.grad(lambda x: np.sum(f(x)))(x), np.cos(x))
    with pytest.raises(TypeError, match="forward mode needs a jvp rule"):
        tg.jvp(f, (x,), (np.ones(2),))


# ------------------------------------------------------------------ complex values
def _cz(rng, *shape):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


def test_custom_rules_on_complex_values():
    # the rules run on complex values with autograd's and JAX's convention (ct = dL/dx - i dL/dy,
    # the non-conjugated transpose); every mode against the same function traced
    rng = np.random.default_rng(3)
    z, v, a = _cz(rng, 4), _cz(rng, 4), _cz(rng, 4)

    @tg.custom_vjp
    def f(z):
        return np.exp(z) * 2.0

    used = []

    def f_bwd(e, g):
        used.append(1)
        return (g * 2.0 * e,)                  # holomorphic: g f'(z)
    f.defvjp(lambda z: (f(z), np.exp(z)), f_bwd)
    conj = tg.primitive(lambda z: np.conj(z))                            # not holomorphic
    tg.defvjp(conj, lambda ans, z: lambda g: np.conj(g))
    tg.defjvp(conj, lambda g, ans, z: np.conj(g))

    def L(z, f=f, conj=conj):
        w = f(z) * conj(z * a)
        return np.sum(np.abs(w) ** 2) + np.real(np.sum(w * a))
    ref = lambda z: L(z, lambda z: np.exp(z) * 2.0, np.conj)   # noqa: E731
    np.testing.assert_allclose(L(z), ref(z), rtol=1e-14)
    np.testing.assert_allclose(tg.grad(L)(z), tg.grad(ref)(z), rtol=1e-12, atol=1e-12)
    assert used                                # the rule, not a trace of f's body
    np.testing.assert_allclose(tg.hvp(L, (z,), (v,)), tg.hvp(ref, (z,), (v,)), rtol=1e-10, atol=1e-10)
    F = lambda z, f=f, conj=conj: f(z) * conj(z)                          # noqa: E731
    for fn in (tg.jvp, ):
        np.testing.assert_allclose(fn(F, (z,), (v,))[1],
                                   fn(lambda z: np.exp(z) * 2.0 * np.conj(z), (z,), (v,))[1], rtol=1e-12)
    out, pull = tg.vjp(F, z)
    _, pull_ref = tg.vjp(lambda z: np.exp(z) * 2.0 * np.conj(z), z)
    np.testing.assert_allclose(pull(a)[0], pull_ref(a)[0], rtol=1e-12)
    tg.check_grads(lambda x, y: np.stack([np.real(F(x + 1j * y)), np.imag(F(x + 1j * y))]),
                   z.real, z.imag, modes=("fwd", "rev"), order=2)
    # a recording replays the custom op at new points; it does not serialize (yet)
    r = tg.record(L, z)
    z2 = z + 0.1 * _cz(rng, 4)
    np.testing.assert_allclose(r.grad(z2), tg.grad(ref)(z2), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="complex values; such tapes do not serialize"):
        r.to_bytes()


def test_custom_rule_from_real_to_complex_and_a_real_argument():
    # real inputs, complex outputs: the cotangent of a real argument is the real part of the
    # rule's; a complex argument next to a real one
    rng = np.random.default_rng(4)
    x, z = rng.standard_normal(3), _cz(rng, 3)

    @tg.custom_vjp
    def phase(x, z):
        return np.exp(1j * x) * z

    phase.defvjp(lambda x, z: (phase(x, z), (x, z)),
                 lambda res, g: (g * 1j * np.exp(1j * res[0]) * res[1], g * np.exp(1j * res[0])))
    L = lambda x, z, p=phase: np.sum(np.real(p(x, z) * (1 + 2j))) + np.sum(np.abs(p(x, z)) ** 2)  # noqa: E731
    ref = lambda x, z: L(x, z, lambda x, z: np.exp(1j * x) * z)   # noqa: E731
    for k in (0, 1):
        np.testing.assert_allclose(tg.grad(L, argnums=k)(x, z), tg.grad(ref, argnums=k)(x, z),
                                   rtol=1e-12, atol=1e-12)
    gx = tg.grad(L)(x, z)
    assert np.isrealobj(gx)
    # against central differences of the real argument
    h = 1e-6
    fd = np.array([(L(x + h * e, z) - L(x - h * e, z)) / (2 * h) for e in np.eye(3)])
    np.testing.assert_allclose(gx, fd, rtol=1e-7, atol=1e-8)


def test_custom_jvp_on_complex_values_reverse_by_transposition():
    rng = np.random.default_rng(5)
    z, v = _cz(rng, 3), _cz(rng, 3)

    @tg.custom_jvp
    def f(z):
        return np.sin(z)

    @f.defjvp
    def f_jvp(primals, tangents):
        return f(primals[0]), np.cos(primals[0]) * tangents[0]
    np.testing.assert_allclose(tg.jvp(f, (z,), (v,))[1], np.cos(z) * v, rtol=1e-14)
    L = lambda z: np.sum(np.abs(f(z)) ** 2)                       # noqa: E731
    # the convention: grad = dL/dx - i dL/dy = 2 dL/dz = 2 conj(sin z) cos z for L = |sin z|^2
    np.testing.assert_allclose(tg.grad(L)(z), 2 * np.conj(np.sin(z)) * np.cos(z), rtol=1e-12)
