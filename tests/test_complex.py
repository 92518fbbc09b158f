"""Complex values (rules/complex.py, the complex paths of operators/api.py; docs/complex.md).

Every complex primitive runs on complex inputs through ``check_grads`` (fwd and rev, order 2)
of its real-pair form F(x, y) = (Re f(x + iy), Im f(x + iy)), so the real and imaginary parts
are perturbed separately by central differences; the complex operators' convention
(grad = df/dx - i df/dy, non-conjugated vjp, holomorphic=True) is checked against central
differences along random complex directions and against closed forms; FFT convolutions of
real signals against the same convolution in real arithmetic (np.convolve).
"""
import pickle

import numpy as np
import pytest

import tapegrad as tg


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def cplx(rng, *shape, scale=1.0):
    return scale * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))


def pair_form(f, real_out=False):
    """F(x, y) = f(x + iy), its output split into real and imaginary parts (a real function)."""
    def F(x, y):
        z = f(x + 1j * y)
        return z if real_out else np.stack([np.real(z), np.imag(z)])
    return F


# ------------------------------------------------------------------ primitives, table-driven
# (name, f, argument maker); complex to complex
UNARY = [
    ("neg", lambda z: -z, None), ("conj", np.conj, None), ("conjugate", np.conjugate, None),
    ("exp", np.exp, None), ("log", np.log, None), ("log10", np.log10, None), ("log2", np.log2, None),
    ("sqrt", np.sqrt, None), ("square", np.square, None), ("reciprocal", np.reciprocal, None),
    ("sin", np.sin, None), ("cos", np.cos, None), ("tan", np.tan, None), ("sinh", np.sinh, None),
    ("cosh", np.cosh, None), ("tanh", np.tanh, None), ("expm1", np.expm1, None),
    ("pow_int", lambda z: z ** 3, None), ("pow_neg_int", lambda z: z ** -2, None),
    ("pow_real", lambda z: z ** 0.7, None), ("pow_complex", lambda z: z ** (0.5 + 0.25j), None),
    ("rpow", lambda z: (1.5 + 0.5j) ** z, None),
    ("add_const", lambda z: z + (2 - 1j), None), ("rsub_const", lambda z: (2 - 1j) - z, None),
    ("mul_const", lambda z: z * (0.5 + 2j), None), ("div_const", lambda z: z / (0.5 + 2j), None),
    ("rdiv_const", lambda z: (0.5 + 2j) / z, None),
    ("mul_self", lambda z: z * z[::-1], None), ("div_self", lambda z: z / z[::-1], None),
    ("sum", lambda z: np.sum(z), None), ("mean", lambda z: np.mean(z.reshape(2, 3), axis=0), None),
    ("cumsum", lambda z: np.cumsum(z), None), ("reshape_T", lambda z: z.reshape(2, 3).T, None),
    ("getitem", lambda z: z[1:4], None), ("flip_roll", lambda z: np.roll(np.flip(z), 2), None),
    ("concatenate", lambda z: np.concatenate([z, z[:2] * 1j]), None),
    ("stack", lambda z: np.stack([z, np.conj(z)]), None),
    ("matmul", lambda z: z.reshape(2, 3) @ z.reshape(3, 2), None),
    ("dot_const", lambda z: np.dot(z, np.arange(6.0) - 2j), None),
    ("vdot", lambda z: np.vdot(z, z[::-1] * 2), None),
    ("einsum", lambda z: np.einsum("ij,jk->ik", z.reshape(2, 3), z.reshape(3, 2)), None),
    ("outer", lambda z: np.outer(z[:2], z[2:]), None),
    ("fftshift", lambda z: np.fft.fftshift(z), None),
    ("log1p", np.log1p, None), ("exp2", np.exp2, None), ("arcsin", np.arcsin, None),
    ("arccos", np.arccos, None), ("arctan", np.arctan, None), ("arcsinh", np.arcsinh, None),
    ("arccosh", np.arccosh, None), ("arctanh", np.arctanh, None),
    ("prod", np.prod, None), ("prod_axis", lambda z: np.prod(z.reshape(2, 3), axis=1), None),
    ("prod_keepdims", lambda z: np.prod(z.reshape(2, 3), axis=0, keepdims=True), None),
    ("cumprod", np.cumprod, None), ("cumprod_axis", lambda z: np.cumprod(z.reshape(2, 3), axis=1), None),
    # rules/complex_funcs.py
    ("where_const_cond", lambda z: np.where(np.arange(6) % 2 == 0, z, np.conj(z) * 2j), None),
    ("where_scalar_branch", lambda z: np.where(np.arange(6) > 2, z, 0.5), None),
    ("where_real_branch", lambda z: np.where(np.arange(6) < 3, np.real(z), z * z), None),
    ("where_traced_cond", lambda z: np.where(np.real(z) > 0, z * z, np.exp(z)), None),
    ("einsum3", lambda z: np.einsum("ij,jk,kl->il", z.reshape(2, 3), z.reshape(3, 2), z.reshape(2, 3)), None),
    ("einsum3_real_operand", lambda z: np.einsum("i,ij,j->", z[:2], z.reshape(2, 3) * (1 - 1j), np.arange(3.0)), None),
    ("einsum4_implicit", lambda z: np.einsum("ij,jk,kl,li", z.reshape(2, 3), z.reshape(3, 2), z.reshape(2, 3),
                                             z.reshape(3, 2)), None),
    ("einsum3_trace_outer", lambda z: np.einsum("ii,j,k->kj", z[:4].reshape(2, 2), z[:3], z[3:]), None),
    ("interp_fp", lambda z: np.interp(np.linspace(-0.5, 6.5, 9), np.arange(6.0), z, left=2j), None),
    ("interp_fp_right", lambda z: np.interp(np.array([0.25, 4.5, 7.0]), np.arange(6.0), z, right=-1.5),
     None),
    ("einsum3_ellipsis", lambda z: np.einsum("...ij,jk,k->...i", z.reshape(1, 2, 3), z.reshape(3, 2),
                                             z[:2] * 1j), None),
    ("einsum3_ellipsis_broadcast", lambda z: np.einsum("...i,...i,...->...", z.reshape(2, 3),
                                                       z[:3] + 1j, z[:2]), None),
    ("einsum3_ellipsis_implicit", lambda z: np.einsum("...,...,...", z, z[::-1], np.arange(6.0)), None),
    ("sinc", np.sinc, None), ("sign", np.sign, None), ("float_power", lambda z: np.float_power(z, 3), None),
    ("matmul_ufunc", lambda z: np.matmul(z.reshape(2, 3), z.reshape(3, 2)), None),
    ("convolve", lambda z: np.convolve(z, z[:3] * 1j + 1), None),
    ("correlate", lambda z: np.correlate(z, z[:3] + 1j, "full"), None),
    ("cross", lambda z: np.cross(z[:3], z[3:]), None),
    ("multi_dot", lambda z: np.linalg.multi_dot([z.reshape(2, 3), z.reshape(3, 2), z.reshape(2, 3)]), None),
    ("polyval", lambda z: np.polyval(z[:3], z[3:]), None),
    ("polyval_real_coeffs", lambda z: np.polyval([1.5, -2.0, 0.5], z), None),
    ("diff", lambda z: np.diff(z, n=2), None), ("diff_prepend", lambda z: np.diff(z, prepend=1j), None),
    ("pad_const", lambda z: np.pad(z, (1, 2), constant_values=1 + 2j), None),
    ("pad_edge", lambda z: np.pad(z.reshape(2, 3), 1, mode="edge"), None),
    ("pad_reflect", lambda z: np.pad(z, 2, mode="reflect"), None),
    ("append", lambda z: np.append(z, z[:2] * 1j), None),
    ("split", lambda z: np.split(z, 3)[1] * np.array_split(z, 4)[0], None),
    ("average", np.average, None),
    ("average_weights", lambda z: np.average(z.reshape(2, 3), axis=0, weights=np.arange(1.0, 7).reshape(2, 3)), None),
    ("round_plus", lambda z: np.round(z) + z, None), ("rint_plus", lambda z: np.rint(3 * z) * z, None),
    ("select", lambda z: np.select([np.arange(6) < 2, np.arange(6) < 4], [z * 2, np.conj(z)], 1j), None),
    ("linspace", lambda z: np.linspace(z[0], z[1], 5), None),
    ("linspace_step", lambda z: np.linspace(z[:2], z[2:4], 3, endpoint=False, retstep=True)[1], None),
    ("nansum", lambda z: np.nansum(z.reshape(2, 3), axis=0), None), ("nanmean", np.nanmean, None),
    ("nanprod", np.nanprod, None), ("nancumsum", np.nancumsum, None), ("nancumprod", np.nancumprod, None),
]
# complex to real
TO_REAL = [
    ("abs", np.abs), ("absolute", np.absolute), ("real", np.real), ("imag", np.imag),
    ("angle", np.angle), ("angle_deg", lambda z: np.angle(z, deg=True)), ("attr_real", lambda z: z.real),
    ("attr_imag", lambda z: z.imag), ("abs2", lambda z: np.abs(z) ** 2),
    ("var", np.var), ("std", np.std), ("var_axis_ddof", lambda z: np.var(z[:4].reshape(2, 2), axis=1, ddof=1)),
    ("std_keepdims", lambda z: np.std(z[:4].reshape(2, 2), axis=0, keepdims=True)),
]
FFTS = [
    ("fft", lambda z: np.fft.fft(z)), ("fft_n_pad", lambda z: np.fft.fft(z, n=9)),
    ("fft_n_crop", lambda z: np.fft.fft(z, n=4, norm="ortho")),
    ("ifft", lambda z: np.fft.ifft(z)), ("ifft_forward", lambda z: np.fft.ifft(z, n=8, norm="forward")),
    ("fft2", lambda z: np.fft.fft2(z.reshape(2, 3))),
    ("ifft2_s", lambda z: np.fft.ifft2(z.reshape(2, 3), s=(3, 2))),
    ("fftn_axes", lambda z: np.fft.fftn(z.reshape(3, 2), axes=(0,))),
    ("ifftn", lambda z: np.fft.ifftn(z.reshape(3, 2), norm="ortho")),
    ("irfft", lambda z: np.fft.irfft(z)), ("irfft_odd", lambda z: np.fft.irfft(z, n=7)),
    ("irfft2", lambda z: np.fft.irfft2(z.reshape(2, 3))),
    ("irfftn_s", lambda z: np.fft.irfftn(z.reshape(2, 3), s=(2, 5), axes=(0, 1), norm="forward")),
    ("hfft", lambda z: np.fft.hfft(z)), ("hfft_n", lambda z: np.fft.hfft(z, n=8, norm="ortho")),
]
REAL_FFTS = [   # real to complex
    ("rfft", lambda x: np.fft.rfft(x)), ("rfft_n", lambda x: np.fft.rfft(x, n=9, norm="ortho")),
    ("rfft2", lambda x: np.fft.rfft2(x.reshape(2, 3))), ("rfftn", lambda x: np.fft.rfftn(x.reshape(3, 2), s=(4, 3), axes=(0, 1))),
    ("ihfft", lambda x: np.fft.ihfft(x)), ("ihfft_n", lambda x: np.fft.ihfft(x, n=4, norm="forward")),
]


@pytest.mark.parametrize("name, f, _", UNARY, ids=[r[0] for r in UNARY])
def test_complex_primitive_values_and_derivatives(name, f, _, rng):
    z = cplx(rng, 6) + (1.5 if name in ("log", "log10", "log2", "sqrt", "pow_real", "pow_complex") else 0)
    x, y = z.real.copy(), z.imag.copy()
    F = pair_form(f)
    np.testing.assert_allclose(tg.vjp(F, x, y)[0], F(x, y), rtol=1e-12, atol=1e-13)
    tg.check_grads(F, x, y, modes=("fwd", "rev"), order=2)


@pytest.mark.parametrize("name, f", TO_REAL, ids=[r[0] for r in TO_REAL])
def test_complex_to_real_primitives(name, f, rng):
    z = cplx(rng, 5)
    F = pair_form(f, real_out=True)
    np.testing.assert_allclose(tg.vjp(F, z.real, z.imag)[0], f(z), rtol=1e-12, atol=1e-13)
    tg.check_grads(F, z.real, z.imag, modes=("fwd", "rev"), order=2)


@pytest.mark.parametrize("name, f", FFTS, ids=[r[0] for r in FFTS])
def test_fft_rules_on_complex_inputs(name, f, rng):
    z = cplx(rng, 6)
    F = pair_form(f, real_out=np.isrealobj(f(z)))
    np.testing.assert_allclose(tg.vjp(F, z.real, z.imag)[0], F(z.real, z.imag), rtol=1e-12, atol=1e-12)
    tg.check_grads(F, z.real, z.imag, modes=("fwd", "rev"), order=2)


@pytest.mark.parametrize("name, f", REAL_FFTS, ids=[r[0] for r in REAL_FFTS])
def test_fft_rules_on_real_inputs(name, f, rng):
    x = rng.standard_normal(6)
    F = lambda x: np.stack([np.real(f(x)), np.imag(f(x))])   # noqa: E731
    np.testing.assert_allclose(tg.vjp(F, x)[0], F(x), rtol=1e-12, atol=1e-12)
    tg.check_grads(F, x, modes=("fwd", "rev"), order=2)


@pytest.mark.parametrize("name", ["inv", "solve_vec", "solve_mat", "solve_real_matrix", "solve_rhs"])
def test_complex_inv_and_solve(name, rng):
    # by the real embedding [[B, -C], [C, B]] of A = B + iC (rules/complex.py)
    A = cplx(rng, 3, 3) + 3 * np.eye(3)
    b, Bm = cplx(rng, 3), cplx(rng, 3, 2)
    f, z = {"inv": (np.linalg.inv, A), "solve_vec": (lambda A: np.linalg.solve(A, b), A),
            "solve_mat": (lambda A: np.linalg.solve(A, Bm), A),
            "solve_real_matrix": (lambda b: np.linalg.solve(A.real + 3 * np.eye(3), b), b),
            "solve_rhs": (lambda b: np.linalg.solve(A, b), b)}[name]
    F = pair_form(f)
    np.testing.assert_allclose(tg.vjp(F, z.real, z.imag)[0], F(z.real, z.imag), rtol=1e-12, atol=1e-13)
    tg.check_grads(F, z.real, z.imag, modes=("fwd", "rev"), order=2)
    # a real matrix argument with a complex right-hand side: a real gradient
    M = A.real + 3 * np.eye(3)
    loss = lambda M: np.sum(np.abs(np.linalg.solve(M, b)) ** 2)   # noqa: E731
    tg.check_grads(loss, M, modes=("fwd", "rev"), order=2)


def test_fft_values_are_numpys(rng):
    z = cplx(rng, 4, 6)
    for f in (np.fft.fft, np.fft.ifft, np.fft.fft2, np.fft.ifftn, np.fft.irfft, np.fft.hfft):
        out, _ = tg.vjp(lambda x, y, f=f: pair_form(f, np.isrealobj(f(z)))(x, y), z.real, z.imag)
        want = f(z)
        np.testing.assert_allclose(out, want if np.isrealobj(want) else np.stack([want.real, want.imag]),
                                   rtol=1e-13, atol=1e-13)


def test_fft_values_equal_numpys_bit_for_bit(rng):
    # the FFT rules compute with scipy.fft; their values must be NumPy's exactly, the sign of
    # zero imaginary parts included (np.angle of -1 + 0j and -1 - 0j differ by 2 pi), on real
    # and complex inputs, through the recording and its replay
    x, z = rng.standard_normal((4, 6)), cplx(rng, 4, 6)
    for f, a in [(np.fft.fft, x), (np.fft.ifft, x), (np.fft.fft2, x), (np.fft.rfft, x), (np.fft.fft, z),
                 (np.fft.ifftn, z), (np.fft.irfft, z), (lambda v: np.fft.fft(v, 9, axis=0), x)]:
        want = f(a)
        F = lambda p, f=f: np.stack([np.real(f(p)), np.imag(f(p))]) if np.isrealobj(a) else \
            np.stack([np.real(f(p[0] + 1j * p[1])), np.imag(f(p[0] + 1j * p[1]))])   # noqa: E731
        arg = a if np.isrealobj(a) else np.stack([a.real, a.imag])
        for got in (tg.vjp(F, arg)[0], tg.record(F, arg)(arg)):
            np.testing.assert_array_equal(got, np.stack([want.real, np.imag(want) + 0 * want.real]))
            np.testing.assert_array_equal(np.signbit(got[1]), np.signbit(np.imag(want)))


# ------------------------------------------------------------------ the operators' convention
def _fd_directional(f, z, dz, h=1e-6):
    return (f(z + h * dz) - f(z - h * dz)) / (2 * h)


@pytest.mark.parametrize("f", [
    lambda z: np.sum(np.abs(z) ** 2), lambda z: np.sum(np.real(np.exp(z) * np.conj(z))),
    lambda z: np.sum(np.abs(np.fft.fft(z * np.sin(z))) ** 2), lambda z: np.angle(z[0] * z[1]),
])
def test_grad_of_real_function_is_df_dx_minus_i_df_dy(f, rng):
    z = cplx(rng, 4)
    g = tg.grad(f)(z)
    assert g.dtype == np.complex128 and g.shape == z.shape
    for _ in range(3):
        dz = cplx(rng, 4)
        # the change of f along dz is Re(g dz) = gx dx + gy dy for g = gx - i gy
        np.testing.assert_allclose(np.real(np.sum(g * dz)), _fd_directional(f, z, dz), rtol=1e-7, atol=1e-8)
    gx = np.array([_fd_directional(f, z, e) for e in np.eye(4)])
    gy = np.array([_fd_directional(f, z, 1j * e) for e in np.eye(4)])
    np.testing.assert_allclose(g, gx - 1j * gy, rtol=1e-7, atol=1e-8)


def test_grad_closed_forms_and_dtypes():
    z = np.array([1.0 + 2.0j, -0.5 + 0.25j])
    np.testing.assert_allclose(tg.grad(lambda z: np.sum(np.abs(z) ** 2))(z), 2 * np.conj(z), rtol=1e-14)
    np.testing.assert_allclose(tg.grad(lambda z: np.sum(np.real(z) * 3.0 + np.imag(z)))(z), 3.0 - 1j)
    g = tg.grad(lambda z: np.sum(np.abs(z) ** 2))(z.astype(np.complex64))
    assert g.dtype == np.complex64
    s = tg.grad(lambda z: np.abs(z) ** 2)(1.0 + 2.0j)
    assert isinstance(s, complex) and s == 2 - 4j
    # a pytree with real and complex leaves, argnums
    gr = tg.grad(lambda a, d: np.sum(np.abs(d["z"] * a) ** 2) + d["x"] ** 2, argnums=1)(2.0, {"z": z, "x": 3.0})
    np.testing.assert_allclose(gr["z"], 8 * np.conj(z), rtol=1e-14)
    assert gr["x"] == 6.0
    v, g2 = tg.value_and_grad(lambda z: np.sum(np.abs(z) ** 2))(z)
    assert np.isclose(v, np.sum(np.abs(z) ** 2)) and np.isrealobj(v)


def test_holomorphic_grad_is_the_complex_derivative(rng):
    z = cplx(rng, 3)
    for f, df in [(lambda z: z ** 3, lambda z: 3 * z ** 2), (np.exp, np.exp), (np.sin, np.cos),
                  (lambda z: np.log(z + 3), lambda z: 1 / (z + 3)), (np.tanh, lambda z: 1 - np.tanh(z) ** 2)]:
        for k in range(3):
            np.testing.assert_allclose(tg.grad(f, holomorphic=True)(z[k]), df(z[k]), rtol=1e-12)
    # the sum of elementwise holomorphic functions: the elementwise derivative
    np.testing.assert_allclose(tg.grad(lambda z: np.sum(np.exp(z) * z), holomorphic=True)(z),
                               np.exp(z) * (1 + z), rtol=1e-12)


def test_complex_output_needs_holomorphic_and_holomorphic_needs_complex(rng):
    z = cplx(rng, 3)
    with pytest.raises(TypeError, match="complex value.*holomorphic=True"):
        tg.grad(lambda z: np.sum(z * z))(z)
    with pytest.raises(TypeError, match="complex value.*holomorphic=True"):
        tg.grad(lambda x: np.sum(np.fft.fft(x)))(np.ones(4))      # real input, complex output
    with pytest.raises(TypeError, match="must be complex"):
        tg.grad(lambda z: z * z, holomorphic=True)(1.0)
    with pytest.raises(TypeError, match="must return a complex"):
        tg.grad(lambda z: np.abs(z), holomorphic=True)(1.0 + 1j)


def test_vjp_is_the_non_conjugated_transpose(rng):
    z, c = cplx(rng, 4), cplx(rng, 4)
    out, fn = tg.vjp(lambda z: z * z, z)
    np.testing.assert_allclose(out, z * z)
    np.testing.assert_allclose(fn(c)[0], c * 2 * z, rtol=1e-13)        # holomorphic: c f'(z)
    out, fn = tg.vjp(np.conj, z)
    np.testing.assert_allclose(fn(c)[0], np.conj(c), rtol=1e-13)
    # general: Re(sum(c * J dz)) == Re(sum(vjp(c) * dz)) for every dz
    f = lambda z: np.fft.ifft(z * np.abs(z))   # noqa: E731
    _, fn = tg.vjp(f, z)
    g = fn(c)[0]
    for _ in range(3):
        dz = cplx(rng, 4)
        np.testing.assert_allclose(np.real(np.sum(c * _fd_directional(f, z, dz))), np.real(np.sum(g * dz)),
                                   rtol=1e-7, atol=1e-8)
    # real input, complex output: the cotangent's pairing Re(c dy) gives a real gradient
    x = rng.standard_normal(5)
    out, fn = tg.vjp(np.fft.fft, x)
    np.testing.assert_allclose(out, np.fft.fft(x), rtol=1e-13)
    g = fn(c[:1].repeat(5))[0]
    assert np.isrealobj(g)
    num = np.array([np.real(np.sum(c[:1] * _fd_directional(np.fft.fft, x, e))) for e in np.eye(5)])
    np.testing.assert_allclose(g, num, rtol=1e-7, atol=1e-8)


def test_jvp_is_the_pushforward(rng):
    z, dz = cplx(rng, 4), cplx(rng, 4)
    for f in (np.exp, lambda z: np.conj(z) * z, lambda z: np.fft.fft(np.sqrt(z + 3))):
        out, t = tg.jvp(f, (z,), (dz,))
        np.testing.assert_allclose(out, f(z), rtol=1e-13)
        np.testing.assert_allclose(t, _fd_directional(f, z, dz), rtol=1e-7, atol=1e-8)
    # real tangent for a complex primal: a change of the real part only
    out, t = tg.jvp(lambda z: np.abs(z), (z,), (np.ones(4),))
    np.testing.assert_allclose(t, _fd_directional(np.abs, z, np.ones(4)), rtol=1e-7)
    with pytest.raises(TypeError, match="complex tangent for a real primal"):
        tg.jvp(np.sin, (np.ones(2),), (np.ones(2) * 1j,))


# ------------------------------------------------------------------ FFT convolutions of real signals
def _fft_conv_loss(k):
    def loss(x):
        n = x.size + k.size - 1
        y = np.fft.ifft(np.fft.fft(x, n) * np.fft.fft(k, n))
        return np.sum(np.abs(y) ** 2)
    return loss


def _rfft_conv_loss(k):
    def loss(x):
        n = x.size + k.size - 1
        return np.sum(np.fft.irfft(np.fft.rfft(x, n) * np.fft.rfft(k, n), n) ** 2)
    return loss


def _real_conv_loss(k):
    return lambda x: np.sum(np.convolve(x, k) ** 2)


@pytest.mark.parametrize("make", [_fft_conv_loss, _rfft_conv_loss])
def test_fft_convolution_equals_real_convolution(make, rng):
    x, k, v = rng.standard_normal(33), rng.standard_normal(8), rng.standard_normal(33)
    f, ref = make(k), _real_conv_loss(k)
    np.testing.assert_allclose(f(x), ref(x), rtol=1e-12)
    np.testing.assert_allclose(tg.grad(f)(x), tg.grad(ref)(x), rtol=0, atol=1e-12 * max(1, abs(ref(x))))
    np.testing.assert_allclose(tg.hvp(f, (x,), (v,)), tg.hvp(ref, (x,), (v,)), atol=1e-11)
    # nesting: grad of <grad f, v> is the hvp
    np.testing.assert_allclose(tg.grad(lambda x: np.sum(tg.grad(f)(x) * v))(x), tg.hvp(ref, (x,), (v,)),
                               atol=1e-11)
    _, t = tg.jvp(f, (x,), (v,))
    np.testing.assert_allclose(t, np.dot(tg.grad(ref)(x), v), rtol=1e-12)


def test_recorded_complex_program_replays(rng):
    k = rng.standard_normal(8)

    def f(x):
        X = np.fft.fft(x * np.cos(x))
        return np.sum(np.abs(np.fft.ifft(X * np.fft.fft(k, x.size))) ** 2) + np.sum(np.angle(X + 1.0))
    x0 = rng.standard_normal(16)
    r = tg.record(f, x0)
    for _ in range(3):
        x, v = rng.standard_normal(16), rng.standard_normal(16)
        np.testing.assert_allclose(r(x), f(x), rtol=1e-13)
        np.testing.assert_allclose(r.grad(x), tg.grad(f)(x), rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(r.hvp(x, v), tg.hvp(f, (x,), (v,)), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(r.jvp(x, v)[1], tg.jvp(f, (x,), (v,))[1], rtol=1e-12, atol=1e-12)
    # bytes and pickle round trips replay the FFT rules by name
    x = rng.standard_normal(16)
    for r2 in (tg.load(r.to_bytes()), pickle.loads(pickle.dumps(r))):
        np.testing.assert_array_equal(r2.grad(x), r.grad(x))


def test_recorded_rfft_conv_replay_equals_retrace_on_random_programs(rng):
    for trial in range(4):
        n, m = rng.integers(4, 20), rng.integers(2, 6)
        k = rng.standard_normal(m)
        norm = ["backward", "ortho", "forward"][trial % 3]

        def f(x, k=k, norm=norm):
            N = x.size + k.size - 1
            y = np.fft.irfft(np.fft.rfft(np.tanh(x), N, norm=norm) * np.fft.rfft(k, N, norm=norm), N, norm=norm)
            return np.sum(y ** 2) + np.sum(np.abs(np.fft.fft(x * 1j + x[::-1])))
        r = tg.record(f, rng.standard_normal(n))
        x = rng.standard_normal(n)
        np.testing.assert_allclose(r.grad(x), tg.grad(f)(x), rtol=1e-13, atol=1e-13)


# ------------------------------------------------------------------ errors: nothing dropped silently
def test_ordering_complex_values_raises_type_error(rng):
    z = cplx(rng, 3)
    for bad in (lambda z: np.sum(np.abs(np.maximum(z, 0))), lambda z: np.abs(np.max(z)),
                lambda z: np.sum(np.abs(np.sort(z))), lambda z: np.abs(z[0]) if z[0] < z[1] else 0.0,
                lambda z: np.sum(np.abs(np.clip(z, 0, 1)))):
        with pytest.raises(TypeError, match="no order"):
            tg.grad(bad)(z)
    with pytest.raises(TypeError, match="no order"):
        tg.grad(lambda x: np.sum(np.abs(np.sort(np.fft.fft(x)))))(np.ones(4))


def test_nothing_complex_is_dropped_to_its_real_part(rng):
    z = cplx(rng, 3)
    for bad in (lambda z: float(z[0]), lambda z: np.sum(z.astype(float)),
                lambda z: np.sum(np.fft.rfft(z).real)):
        with pytest.raises(TypeError, match="imaginary part"):
            tg.grad(bad)(z)
    with pytest.raises(TypeError, match="no order"):
        tg.grad(lambda x: np.sum(np.floor(x * 1j)))(np.ones(2))
    # complex fp in np.interp is a complex interpolation, not its real part:
    # |interp(0.5, [0, 1], 1j x)| = |x0 + x1| / 2, so the gradient at (1, 2) is (1/2, 1/2)
    g = tg.grad(lambda x: np.abs(np.interp(0.5, [0.0, 1.0], x * 1j)))(np.array([1.0, 2.0]))
    np.testing.assert_allclose(g, [0.5, 0.5], rtol=1e-14)
    with pytest.raises(TypeError, match="complex cotangent for a real output"):
        tg.vjp(np.sin, np.ones(2))[1](np.ones(2) * 1j)
    # a complex constant in a real function is a complex value, and a real loss of it is fine
    g = tg.grad(lambda x: np.sum(np.abs(x * (1 + 2j)) ** 2))(np.ones(2))
    np.testing.assert_allclose(g, 10 * np.ones(2), rtol=1e-14)


def test_hessian_of_complex_inputs_needs_holomorphic():
    # as JAX: hessian = jacfwd(jacrev), and jacfwd takes complex inputs only when holomorphic
    with pytest.raises(TypeError, match="argument 0 is complex.*holomorphic=True.*hvp"):
        tg.hessian(lambda z: np.sum(np.abs(z) ** 2))(np.ones(2) * 1j)


# ------------------------------------------------------------------ jacobian, hessian, hvp, derivative
def _fd_jacobian(f, z, h=1e-6):
    """(J_x, J_y): central differences of f along each real and each imaginary unit direction."""
    E = np.eye(z.size).reshape((z.size,) + z.shape)
    Jx = np.stack([_fd_directional(f, z, e, h) for e in E], axis=-1)
    Jy = np.stack([_fd_directional(f, z, 1j * e, h) for e in E], axis=-1)
    return Jx.reshape(np.shape(f(z)) + z.shape), Jy.reshape(np.shape(f(z)) + z.shape)


def test_jacobian_rev_of_a_real_function_of_complex_inputs(rng):
    # JAX's jacrev: each row is grad's convention df_i/dx - i df_i/dy
    f = lambda z: np.abs(np.sin(z) * z[::-1]) ** 2 + np.real(np.fft.fft(z))   # noqa: E731
    z = cplx(rng, 4)
    J = tg.jacobian(f, mode="rev")(z)
    assert J.dtype == np.complex128 and J.shape == (4, 4)
    Jx, Jy = _fd_jacobian(f, z)
    np.testing.assert_allclose(J, Jx - 1j * Jy, rtol=1e-7, atol=1e-8)
    for _ in range(3):      # the change along dz is Re(J dz)
        dz = cplx(rng, 4)
        np.testing.assert_allclose(np.real(J @ dz), _fd_directional(f, z, dz), rtol=1e-7, atol=1e-8)
    np.testing.assert_array_equal(tg.jacobian(f)(z), J)     # auto: rev, the only mode that fits
    np.testing.assert_array_equal(tg.jacrev(f)(z), J)
    # closed form: |z|^2 elementwise has the Jacobian diag(2 conj(z)); complex64 stays complex64
    J2 = tg.jacobian(lambda z: np.abs(z) ** 2)(z.astype(np.complex64))
    assert J2.dtype == np.complex64
    np.testing.assert_allclose(J2, np.diag(2 * np.conj(z)), rtol=1e-6)
    # several arguments, real and complex, and a pytree
    g = lambda a, d: np.abs(d["z"] * a) ** 2 + d["x"] * np.real(d["z"])   # noqa: E731
    x = rng.standard_normal(4)
    Ja, Jd = tg.jacobian(g, argnums=(0, 1))(1.5, {"z": z, "x": x})
    np.testing.assert_allclose(Ja, 2 * 1.5 * np.abs(z) ** 2, rtol=1e-13)
    np.testing.assert_allclose(Jd["z"], np.diag(2 * 1.5 ** 2 * np.conj(z) + x), rtol=1e-13)
    np.testing.assert_allclose(Jd["x"], np.diag(np.real(z)), rtol=1e-13)


def test_jacobian_fwd_of_a_complex_function_of_real_inputs(rng):
    # JAX's jacfwd: the pushforward of each real unit direction; the DFT's Jacobian is its matrix
    x = rng.standard_normal(5)
    F = np.fft.fft(np.eye(5), axis=0)
    np.testing.assert_allclose(tg.jacobian(np.fft.fft, mode="fwd")(x), F, atol=1e-13)
    np.testing.assert_allclose(tg.jacobian(np.fft.fft)(x), F, atol=1e-13)
    f = lambda x: np.exp(1j * x) * x[::-1]   # noqa: E731
    Jx, _ = _fd_jacobian(f, x + 0j)
    np.testing.assert_allclose(tg.jacfwd(f)(x), Jx, rtol=1e-7, atol=1e-8)
    assert tg.jacobian(f)(x.astype(np.float32)).dtype == np.complex64


@pytest.mark.parametrize("mode", ["fwd", "rev", "auto"])
def test_jacobian_holomorphic_is_the_complex_jacobian(mode, rng):
    f = lambda z: np.sin(z) * z[::-1] + np.fft.fft(z) ** 2   # noqa: E731
    z = cplx(rng, 4)
    J = tg.jacobian(f, mode=mode, holomorphic=True)(z)
    assert J.dtype == np.complex128
    Jx, Jy = _fd_jacobian(f, z)
    np.testing.assert_allclose(J, Jx, rtol=1e-7, atol=1e-8)        # d/dx
    np.testing.assert_allclose(1j * J, Jy, rtol=1e-7, atol=1e-8)   # d/dy = i f'(z)
    for _ in range(2):      # holomorphic: the change along any complex dz is J dz
        dz = cplx(rng, 4)
        np.testing.assert_allclose(J @ dz, _fd_directional(f, z, dz), rtol=1e-7, atol=1e-8)
    # closed form, complex64
    J = tg.jacobian(np.exp, mode=mode, holomorphic=True)(z.astype(np.complex64))
    assert J.dtype == np.complex64
    np.testing.assert_allclose(J, np.diag(np.exp(z)), rtol=1e-5, atol=1e-6)


def test_jacobian_refuses_what_jax_refuses(rng):
    z, x = cplx(rng, 3), rng.standard_normal(3)
    with pytest.raises(TypeError, match="mode='fwd'.*real inputs.*holomorphic=True"):
        tg.jacobian(np.abs, mode="fwd")(z)
    with pytest.raises(TypeError, match="returned a complex value.*holomorphic=True"):
        tg.jacobian(np.sin)(z)
    with pytest.raises(TypeError, match="returned a complex value.*mode='rev'"):
        tg.jacobian(np.fft.fft, mode="rev")(x)
    with pytest.raises(TypeError, match="holomorphic=True.*must be complex"):
        tg.jacobian(np.sin, holomorphic=True)(x)
    with pytest.raises(TypeError, match="holomorphic=True.*must return a complex"):
        tg.jacobian(np.abs, holomorphic=True)(z)


def test_hessian_holomorphic_is_the_complex_hessian(rng):
    z = cplx(rng, 3)
    # closed forms: sum(z^3) -> diag(6 z); sum(exp(z) * z[::-1]) -> diag(exp(z) z[::-1]) + the
    # cross terms exp(z_i) at (i, 2 - i) and (2 - i, i)
    H = tg.hessian(lambda z: np.sum(z ** 3), holomorphic=True)(z)
    np.testing.assert_allclose(H, np.diag(6 * z), rtol=1e-13, atol=1e-13)
    H = tg.hessian(lambda z: np.sum(np.exp(z) * z[::-1]), holomorphic=True)(z)
    want = np.diag(np.exp(z) * z[::-1])
    for i in range(3):
        want[i, 2 - i] += np.exp(z[i])
        want[2 - i, i] += np.exp(z[i])
    np.testing.assert_allclose(H, want, rtol=1e-12)
    # against differences of the complex derivative f'(z) = d/dx f (independent of tapegrad)
    f = lambda z: np.prod(np.tanh(z)) + np.sum(np.fft.fft(z) ** 3)   # noqa: E731
    H = tg.hessian(f, holomorphic=True)(z)
    dfx = lambda z: np.array([_fd_directional(f, z, e, 1e-5) for e in np.eye(3)])   # noqa: E731
    num = np.stack([_fd_directional(dfx, z, e, 1e-4) for e in np.eye(3)], axis=-1)
    np.testing.assert_allclose(H, num, rtol=1e-5, atol=1e-6)
    assert tg.hessian(lambda z: np.sum(z ** 3), holomorphic=True)(z.astype(np.complex64)).dtype == np.complex64
    with pytest.raises(TypeError, match="must return a complex"):
        tg.hessian(lambda z: np.sum(np.abs(z) ** 2), holomorphic=True)(z)
    with pytest.raises(TypeError, match="must be complex"):
        tg.hessian(lambda z: np.sum(z ** 3), holomorphic=True)(np.ones(3))


def _fd_mixed(f, z, v, w, h=1e-4):
    """d^2/ds dt f(z + s v + t w) at 0 by central differences (real and imaginary parts of v, w)."""
    return (f(z + h * v + h * w) - f(z + h * v - h * w) - f(z - h * v + h * w) + f(z - h * v - h * w)) / (4 * h * h)


def test_hvp_of_a_real_function_of_complex_inputs(rng):
    # hvp is the derivative of the gradient g = df/dx - i df/dy along v; so Re(sum(hvp * w))
    # is the mixed second derivative of f along v and w
    f = lambda z: np.sum(np.abs(np.fft.fft(z * np.sin(z))) ** 2) + np.sum(np.angle(z + 3))   # noqa: E731
    z = cplx(rng, 4)
    for _ in range(3):
        v, w = cplx(rng, 4), cplx(rng, 4)
        hv = tg.hvp(f, (z,), (v,))
        assert hv.dtype == np.complex128 and hv.shape == z.shape
        np.testing.assert_allclose(np.real(np.sum(hv * w)), _fd_mixed(f, z, v, w), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(hv, tg.jvp(tg.grad(f), (z,), (v,))[1], rtol=1e-12, atol=1e-12)
    # closed form: f = sum |z|^2 has g = 2 conj(z), so hvp = 2 conj(v); a real tangent: 2 v
    v = cplx(rng, 4)
    np.testing.assert_allclose(tg.hvp(lambda z: np.sum(np.abs(z) ** 2), (z,), (v,)), 2 * np.conj(v), rtol=1e-14)
    np.testing.assert_allclose(tg.hvp(lambda z: np.sum(np.abs(z) ** 2), (z,), (v.real,)), 2 * v.real, rtol=1e-14)
    assert tg.hvp(lambda z: np.sum(np.abs(z) ** 4), (z.astype(np.complex64),), (v,)).dtype == np.complex64
    # a real and a complex primal
    g = lambda x, z: np.sum(np.abs(z * x) ** 2)   # noqa: E731
    x = rng.standard_normal(4)
    hx, hz = tg.hvp(g, (x, z), (np.ones(4), v))
    np.testing.assert_allclose(hx, 2 * np.abs(z) ** 2 + 4 * x * np.real(z * np.conj(v)), rtol=1e-13)
    np.testing.assert_allclose(hz, 4 * x * np.conj(z) + 2 * x ** 2 * np.conj(v), rtol=1e-13)
    with pytest.raises(TypeError, match="returned a complex value"):
        tg.hvp(lambda z: np.sum(z * z), (z,), (v,))
    with pytest.raises(TypeError, match="complex tangent for a real primal"):
        tg.hvp(g, (x, z), (v, v))


def test_derivative_with_complex_values():
    z = 0.3 + 0.8j
    np.testing.assert_allclose(tg.derivative(np.sin, holomorphic=True)(z), np.cos(z), rtol=1e-14)
    d = tg.derivative(lambda z: z ** 3 + np.exp(2 * z), holomorphic=True)(z)
    assert isinstance(d, complex)
    np.testing.assert_allclose(d, 3 * z ** 2 + 2 * np.exp(2 * z), rtol=1e-14)
    d = tg.derivative(lambda z: z * z, holomorphic=True)(np.complex64(z))
    assert type(d) is np.complex64 and abs(d - 2 * z) < 1e-6
    # a real x with a complex output: the pushforward of 1 (jacfwd's rule)
    np.testing.assert_allclose(tg.derivative(lambda x: np.exp(1j * x) * x)(0.7),
                               np.exp(0.7j) * (1 + 0.7j), rtol=1e-14)
    with pytest.raises(TypeError, match="x is complex.*holomorphic=True"):
        tg.derivative(np.sin)(z)
    with pytest.raises(TypeError, match="must return a complex"):
        tg.derivative(np.abs, holomorphic=True)(z)


def test_complex_jacobian_hessian_hvp_nest(rng):
    # each inside grad over a real parameter a, against central differences in a
    z, v = cplx(rng, 3), cplx(rng, 3)
    cases = [
        lambda a: np.sum(np.real(tg.jacobian(lambda z: np.sin(a * z) * z[::-1], holomorphic=True)(z))),
        lambda a: np.sum(np.imag(tg.jacobian(lambda z: np.abs(a * z) ** 3, mode="rev")(z))),
        lambda a: np.real(np.sum(tg.hessian(lambda z: np.sum(np.exp(a * z) * z[::-1]), holomorphic=True)(z))),
        lambda a: np.real(np.sum(tg.hvp(lambda z: np.sum(np.abs(np.sin(a * z)) ** 2), (z,), (v,)))),
        lambda a: np.imag(tg.derivative(lambda w: np.sin(a * w), holomorphic=True)(0.5 + 0.2j)),
    ]
    for F in cases:
        np.testing.assert_allclose(tg.grad(F)(1.3), (F(1.3 + 1e-6) - F(1.3 - 1e-6)) / 2e-6, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ second order, complex records
def test_derivative_of_the_complex_gradient(rng):
    # jvp of grad (nesting: the inner grad sees complex traced inputs) against differences of grad
    f = lambda z: np.sum(np.abs(np.fft.fft(z * np.sin(z))) ** 2)   # noqa: E731
    z, v = cplx(rng, 4), cplx(rng, 4)
    _, hv = tg.jvp(tg.grad(f), (z,), (v,))
    np.testing.assert_allclose(hv, _fd_directional(tg.grad(f), z, v), rtol=1e-6, atol=1e-7)


def test_record_with_complex_inputs_replays_like_retracing(rng):
    def f(z, w):
        X = np.fft.fft(z * np.exp(1j * w))
        return np.sum(np.abs(X) ** 2 * np.cos(w)) + np.real(np.vdot(z, z[::-1]))
    z0, w0 = cplx(rng, 6), rng.standard_normal(6)
    r = tg.record(f, z0, w0)
    for _ in range(3):
        z, w = cplx(rng, 6), rng.standard_normal(6)
        vz, vw = cplx(rng, 6), rng.standard_normal(6)
        np.testing.assert_allclose(r(z, w), f(z, w), rtol=1e-13)
        for a, b in zip(r.grad(z, w), tg.grad(f, argnums=(0, 1))(z, w)):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)
        _, t = r.jvp((z, w), (vz, vw))
        np.testing.assert_allclose(t, tg.jvp(f, (z, w), (vz, vw))[1], rtol=1e-12, atol=1e-12)
        hv = r.hvp((z, w), (vz, vw))
        want = tg.jvp(tg.grad(f, argnums=(0, 1)), (z, w), (vz, vw))[1]
        for a, b in zip(hv, want):
            np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11)
    # a complex output: values and the non-conjugated vjp
    h = lambda z: np.fft.ifft(z) * z   # noqa: E731
    r = tg.record(h, z0)
    z, c = cplx(rng, 6), cplx(rng, 6)
    np.testing.assert_allclose(r(z), h(z), rtol=1e-13)
    np.testing.assert_allclose(r.vjp(z, c), tg.vjp(h, z)[1](c)[0], rtol=1e-13, atol=1e-13)
    with pytest.raises(TypeError, match="complex value"):
        r.grad(z)
    with pytest.raises(TypeError, match="complex value where the recording had a real one"):
        tg.record(f, z0, w0)(z0, w0 * 1j)


@pytest.mark.parametrize("f", [
    lambda x: abs(x * 1j + 2) ** 2, lambda x: abs(1j * x + 2) ** 2, lambda x: abs(x - 1j) ** 2,
    lambda x: abs(1j - x) ** 2, lambda x: abs(x / (1 + 1j)) ** 2, lambda x: abs((1 + 1j) / x) ** 2,
    lambda x: abs(x ** 1j) ** 2 + np.angle(x ** (0.5 + 1j)), lambda x: np.real((0.5 + 1j) ** x),
    lambda x: np.real(np.exp(1j * x)), lambda x: np.imag(np.complex128(2 + 1j) * x),
    lambda x: np.abs(np.array(1 + 2j) * x), lambda x: np.real(x * np.exp(1j * x) * np.conj(np.exp(2j * x))),
], ids=lambda f: "")
def test_scalar_tracers_with_complex_constants(f):
    # 0-d tracers take the scalar fast paths of the real dunders: a complex constant must leave them
    x, h = 1.3, 1e-6
    np.testing.assert_allclose(tg.grad(f)(x), (f(x + h) - f(x - h)) / (2 * h), rtol=1e-8, atol=1e-9)
    tg.check_grads(f, x, modes=("fwd", "rev"), order=2)


def test_recorded_complex_solve_replays_and_round_trips(rng):
    N, b = rng.standard_normal((4, 4)), cplx(rng, 4)
    f = lambda M: np.sum(np.abs(np.linalg.solve(M + 1j * N, b)) ** 2) + np.sum(np.abs(np.linalg.inv(M - 1j * N)))  # noqa: E731
    M0 = rng.standard_normal((4, 4)) + 4 * np.eye(4)
    r = tg.record(f, M0)
    M, V = M0 + 0.1 * rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
    np.testing.assert_allclose(r(M), f(M), rtol=1e-13)
    np.testing.assert_allclose(r.grad(M), tg.grad(f)(M), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(r.hvp(M, V), tg.hvp(f, (M,), (V,)), rtol=1e-11, atol=1e-11)
    tg.check_grads(f, M, modes=("fwd", "rev"), order=2)
    np.testing.assert_array_equal(tg.load(r.to_bytes()).grad(M), r.grad(M))


def test_eigvals(rng):
    # distinct eigenvalues of real and complex matrices; fwd and rev, second order (hvp) too
    A, C = rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
    F = lambda x, y: (lambda w: np.stack([np.real(w), np.imag(w)]))(np.linalg.eigvals(x + 1j * y))  # noqa: E731
    np.testing.assert_allclose(tg.vjp(F, A, C)[0], F(A, C), rtol=1e-13, atol=1e-13)
    tg.check_grads(F, A, C, modes=("fwd", "rev"), order=2)
    f = lambda A: np.sum(np.real(np.linalg.eigvals(A)) ** 3 + np.imag(np.linalg.eigvals(A)) ** 2)  # noqa: E731
    tg.check_grads(f, A, modes=("fwd", "rev"), order=2)
    # closed form: the gradient of sum(w) = trace(A) is the identity; of w_k for a symmetric A, v_k v_k^T
    np.testing.assert_allclose(tg.grad(lambda A: np.real(np.sum(np.linalg.eigvals(A))))(A), np.eye(4), atol=1e-12)
    S = A + A.T
    w, V = np.linalg.eigh(S)
    g = tg.grad(lambda S: np.max(np.real(np.linalg.eigvals(S))))(S)
    np.testing.assert_allclose(g, np.outer(V[:, -1], V[:, -1]), atol=1e-10)
    r = tg.record(f, A)
    A2 = A + 0.01 * rng.standard_normal((4, 4))
    np.testing.assert_allclose(r.grad(A2), tg.grad(f)(A2), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(tg.load(r.to_bytes()).grad(A2), r.grad(A2))
    np.testing.assert_allclose(r.hvp(A2, C), tg.hvp(f, (A2,), (C,)), rtol=1e-10, atol=1e-10)


def test_eigvals_gradient_decomposes_once(rng, monkeypatch):
    # a gradient (re-traced or replayed) takes the eigenvalues from eig in the forward and
    # keeps the vectors for the adjoint (calls.reverse_follows): no eigvals-only LAPACK call,
    # one eig per eigvals in a replayed gradient; vjp (no gradient follows for sure) computes
    # eigvals in the forward and eig in the adjoint
    from tapegrad.rules import calls
    A = rng.standard_normal((6, 6))
    f = lambda A: np.sum(np.abs(np.linalg.eigvals(A)) ** 2) + np.sum(np.real(np.linalg.eigvals(A)) ** 3)  # noqa: E731
    w, V = np.linalg.eig(A)
    c = 2.0 * np.conj(w) + 3.0 * np.real(w) ** 2      # dL = Re(c . dw), dw = diag(V^-1 dA V)
    want = np.real((V * c) @ np.linalg.inv(V)).T
    r = tg.record(f, A)
    counts = {"eig": 0, "eigvals": 0}
    for name in counts:
        def counted(*a, _f=getattr(np.linalg, name), _n=name, **k):
            if type(a[0]) is np.ndarray:        # LAPACK calls (not the traced calls in f)
                counts[_n] += 1
            return _f(*a, **k)
        monkeypatch.setattr(np.linalg, name, counted)
    for which, grad in (("retrace", tg.grad(f)), ("replay", r.grad), ("vjp", lambda A: tg.vjp(f, A)[1](1.0)[0])):
        counts.update(eig=0, eigvals=0)
        np.testing.assert_allclose(grad(A), want, rtol=1e-10, atol=1e-12)
        if which == "vjp":
            assert counts["eigvals"] >= 2 and counts["eig"] >= 2, counts
        else:
            # (re-traced too: the recording's values are the forward, not computed again)
            assert counts["eigvals"] == 0 and counts["eig"] == 2, (which, counts)
        assert getattr(calls._MODE, "stash", {}) == {}      # nothing kept after the call
    # what is kept is used only at the very inputs it was computed at
    rule = calls.CallRule([(3,)], [(3,)])
    with calls.reverse_follows():
        rule.stash([np.ones(3)], "kept")
        assert rule.stashed([np.ones(3)]) == "kept"
        assert rule.stashed([np.array([1.0, 1.0, 1.0 + 2 ** -52])]) is None
    assert rule.stashed([np.ones(3)]) is None          # dropped when the context ends


def test_abs_at_an_exact_complex_zero_has_a_zero_gradient():
    # |z| = hypot(Re z, Im z): at (0, 0) its partials are the subgradient 0, as the real abs
    # takes at 0 (not 0 / 0); exact zeros appear in factorizations (a Cholesky factor's
    # upper triangle) and padded signals
    assert tg.grad(lambda z: np.abs(z))(0j) == 0j
    z = np.array([0j, 3 + 4j, 0j])
    g = tg.grad(lambda z: np.sum(np.abs(z)))(z)
    np.testing.assert_allclose(g, [0, (3 - 4j) / 5, 0], atol=1e-15)
    assert np.all(np.isfinite(tg.grad(lambda x, y: np.hypot(x, y), argnums=(0, 1))(0.0, 0.0)))
    r = tg.record(lambda x: np.sum(np.hypot(x, 2 * x)), np.zeros(4))
    assert np.array_equal(r.grad(np.zeros(4)), np.zeros(4))
    assert np.array_equal(r.hvp(np.zeros(4), np.ones(4)), np.zeros(4))


# ------------------------------------------------------------------ ComplexRecorded: argnums, batches, bytes
_C_UNARY = [np.exp, np.sin, np.cos, np.tanh, np.conj, lambda z: z * z, lambda z: z[::-1] * (0.5 - 1j),
            lambda z: np.fft.fft(z), lambda z: np.fft.ifft(z, norm="ortho"), lambda z: np.sqrt(z + 3),
            lambda z: z / (np.abs(z) + 1), lambda z: np.cumsum(z) * 0.3, lambda z: np.roll(z, 2)]
_C_BINARY = [lambda a, b: a * b, lambda a, b: a + 2j * b, lambda a, b: a / (b * b + 2),
             lambda a, b: a * np.conj(b), lambda a, b: np.exp(1j * np.real(b)) * a]


def _random_complex_program(rng, n_ops=6):
    """f(z, w) of a complex z and a real w: a random chain of complex operations, real loss."""
    steps = [(int(rng.integers(2)), int(rng.integers(len(_C_UNARY))), int(rng.integers(len(_C_BINARY))))
             for _ in range(n_ops)]

    def f(z, w):
        a, b = z, w * (1 + 0.5j)
        for kind, u, v in steps:
            a = _C_UNARY[u](a) if kind == 0 else _C_BINARY[v](a, b)
            a = a / (1 + np.abs(a))          # bounded: no overflow along the chain
        return np.sum(np.abs(a) ** 2) + np.sum(np.real(a) * w) + np.angle(a[0] + 3)
    return f


def test_recorded_complex_replay_equals_retrace_on_random_programs(rng):
    for trial in range(6):
        f = _random_complex_program(rng)
        r = tg.record(f, cplx(rng, 5), rng.standard_normal(5))
        for _ in range(2):
            z, w, vz, vw = cplx(rng, 5), rng.standard_normal(5), cplx(rng, 5), rng.standard_normal(5)
            np.testing.assert_allclose(r(z, w), f(z, w), rtol=1e-13, atol=1e-13)
            for a, b in zip(r.grad(z, w), tg.grad(f, argnums=(0, 1))(z, w)):
                np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)
            np.testing.assert_allclose(r.jvp((z, w), (vz, vw))[1], tg.jvp(f, (z, w), (vz, vw))[1],
                                       rtol=1e-13, atol=1e-13)
            for a, b in zip(r.hvp((z, w), (vz, vw)), tg.hvp(f, (z, w), (vz, vw))):
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        # the gradient itself against central differences along random complex directions
        z, w = cplx(rng, 5), rng.standard_normal(5)
        g = r.grad(z, w)[0]
        for _ in range(2):
            dz = cplx(rng, 5)
            np.testing.assert_allclose(np.real(np.sum(g * dz)), _fd_directional(lambda z: f(z, w), z, dz),
                                       rtol=1e-6, atol=1e-7)


def test_recorded_complex_argnums(rng):
    def f(z, w, d):
        return np.sum(np.abs(np.fft.fft(z * np.exp(1j * w))) ** 2 * d["s"]) + np.real(np.vdot(d["c"], z))
    z, w, d = cplx(rng, 4), rng.standard_normal(4), {"s": 1.5, "c": cplx(rng, 4)}
    for nums in (0, 1, 2, (0, 2), (2, 0)):
        r = tg.record(f, z, w, d, argnums=nums)
        assert r.argnums == nums
        z2, w2, d2 = cplx(rng, 4), rng.standard_normal(4), {"s": 0.7, "c": cplx(rng, 4)}
        got, want = r.grad(z2, w2, d2), tg.grad(f, argnums=nums)(z2, w2, d2)
        for a, b in zip(_leaves(got), _leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)
    # jvp and hvp take tangents of the argnums arguments only
    r = tg.record(f, z, w, d, argnums=0)
    v = cplx(rng, 4)
    h = lambda z: f(z, w, d)   # noqa: E731
    np.testing.assert_allclose(r.jvp((z, w, d), v)[1], tg.jvp(h, (z,), (v,))[1], rtol=1e-13)
    np.testing.assert_allclose(r.hvp((z, w, d), v), tg.hvp(h, (z,), (v,)), rtol=1e-12, atol=1e-12)
    # vjp follows argnums as for real recordings; a complex output's cotangent
    rv = tg.record(lambda z, w: np.fft.fft(z) * w, z, w, argnums=0)
    c = cplx(rng, 4)
    np.testing.assert_allclose(rv.vjp((z, w), c), tg.vjp(lambda z: np.fft.fft(z) * w, z)[1](c)[0], rtol=1e-13)
    # closed form: the gradient of Re(vdot(c, z)) = Re(sum(conj(c) z)) with respect to z is conj(c)
    r = tg.record(lambda z, c: np.real(np.vdot(c, z)), z, d["c"], argnums=0)
    np.testing.assert_allclose(r.grad(z, d["c"]), np.conj(d["c"]), rtol=1e-15)
    with pytest.raises(ValueError, match="argnums"):
        tg.record(f, z, w, d, argnums=3)


def _leaves(t):
    if isinstance(t, dict):
        return [x for k in sorted(t) for x in _leaves(t[k])]
    if isinstance(t, (tuple, list)):
        return [x for e in t for x in _leaves(e)]
    return [t]


def test_recorded_complex_batches_equal_loops_of_replays(rng):
    def f(z, w):
        return np.sum(np.abs(np.fft.fft(z * np.sin(w))) ** 2) + np.sum(np.real(z * z) * w)
    B = 7
    Z, W, VZ, VW = cplx(rng, B, 5), rng.standard_normal((B, 5)), cplx(rng, B, 5), rng.standard_normal((B, 5))
    r = tg.record(f, Z[0], W[0])
    gz, gw = r.grad_batch(Z, W, threads=2)
    v, (gz2, gw2) = r.value_and_grad_batch(Z, W)
    vals = r.value_batch(Z, W)
    out, dot = r.jvp_batch((Z, W), (VZ, VW))
    hz, hw = r.hvp_batch((Z, W), (VZ, VW))
    assert gz.dtype == np.complex128 and gz.shape == (B, 5) and np.isrealobj(gw)
    for i in range(B):
        a, b = r.grad(Z[i], W[i])
        np.testing.assert_array_equal(gz[i], a)
        np.testing.assert_array_equal(gw[i], b)
        np.testing.assert_array_equal(gz2[i], a)
        np.testing.assert_array_equal(v[i], r(Z[i], W[i]))
        np.testing.assert_array_equal(vals[i], r(Z[i], W[i]))
        np.testing.assert_array_equal(dot[i], r.jvp((Z[i], W[i]), (VZ[i], VW[i]))[1])
        np.testing.assert_array_equal(hz[i], r.hvp((Z[i], W[i]), (VZ[i], VW[i]))[0])
        np.testing.assert_allclose(gz[i], tg.grad(f)(Z[i], W[i]), rtol=1e-13, atol=1e-13)
    # a shared argument (in_axes None), argnums, and a complex output
    r0 = tg.record(f, Z[0], W[0], argnums=0)
    g = r0.grad_batch(Z, W[0], in_axes=(0, None))
    for i in range(B):
        np.testing.assert_array_equal(g[i], r0.grad(Z[i], W[0]))
    h = lambda z: np.fft.ifft(z) * z   # noqa: E731
    rh = tg.record(h, Z[0])
    vals, (o, d) = rh.value_batch(Z), rh.jvp_batch(Z, VZ)
    assert vals.dtype == np.complex128
    for i in range(B):
        np.testing.assert_array_equal(vals[i], rh(Z[i]))
        np.testing.assert_array_equal(d[i], rh.jvp(Z[i], VZ[i])[1])
        np.testing.assert_allclose(vals[i], h(Z[i]), rtol=1e-13)
    with pytest.raises(TypeError, match="complex value"):
        rh.grad_batch(Z)


def _module_level_complex_loss(z):
    return np.sum(np.abs(np.fft.fft(z)) ** 3)


def test_recorded_complex_bytes_and_pickle_round_trip(rng):
    def f(z, w):
        return np.sum(np.abs(np.fft.ifft(z * np.exp(1j * w))) ** 2 * w) + np.real(np.sum(z ** 3))
    z0, w0 = cplx(rng, 6), rng.standard_normal(6)
    h = lambda z: np.fft.fft(z) * np.conj(z)   # noqa: E731
    recs = [tg.record(f, z0, w0), tg.record(f, z0, w0, argnums=0), tg.record(h, z0),
            tg.record(_module_level_complex_loss, z0)]
    z, w, v, c = cplx(rng, 6), rng.standard_normal(6), cplx(rng, 6), cplx(rng, 6)
    for r in recs:
        for r2 in (tg.load(r.to_bytes()), pickle.loads(pickle.dumps(r)),
                   type(r).from_bytes(r.to_bytes())):
            assert type(r2) is tg.operators.recorded.ComplexRecorded and r2.argnums == r.argnums
            if r is recs[2]:
                np.testing.assert_array_equal(r2(z), r(z))
                np.testing.assert_array_equal(r2.vjp(z, c), r.vjp(z, c))
                np.testing.assert_array_equal(r2.jvp(z, v)[1], r.jvp(z, v)[1])
                continue
            args = (z,) if r is recs[3] else (z, w)
            np.testing.assert_array_equal(r2(*args), r(*args))
            for a, b in zip(_leaves(r2.grad(*args)), _leaves(r.grad(*args))):
                np.testing.assert_array_equal(a, b)
            x = args[0] if len(args) == 1 else args
            t = v if (r is recs[3] or r.argnums == 0) else (v, w)
            for a, b in zip(_leaves(r2.hvp(x, t)), _leaves(r.hvp(x, t))):
                np.testing.assert_array_equal(a, b)
    # a module-level function pickles with the recording, which can then re-record
    assert pickle.loads(pickle.dumps(recs[3])).f is _module_level_complex_loss
    with pytest.raises(ValueError, match="without complex values"):
        tg.operators.recorded.ComplexRecorded.from_bytes(tg.record(lambda x: np.sum(x ** 2), w0).to_bytes())


def test_recorded_complex_guards_rerecord_and_loaded_ones_are_strict(rng):
    def f(z):
        if np.abs(z[0]) > 1:
            return np.sum(np.abs(z) ** 2)
        return np.sum(np.abs(z) ** 4)
    big, small = np.array([2.0 + 1j, 0.5j]), np.array([0.1 + 0.2j, 0.5j])
    r = tg.record(f, big)
    np.testing.assert_allclose(r.grad(small), 2 * np.abs(small) ** 2 * 2 * np.conj(small), rtol=1e-14)
    np.testing.assert_allclose(r.grad(big), 2 * np.conj(big), rtol=1e-14)
    assert r.rerecords == 1
    loaded = tg.load(tg.record(f, big).to_bytes())
    with pytest.raises(tg.GuardError):
        loaded.grad(small)
    rl = tg.load(tg.record(f, big).to_bytes(), f=f)      # with f: re-records
    np.testing.assert_allclose(rl.grad(small), 4 * np.abs(small) ** 2 * np.conj(small), rtol=1e-14)


def test_recorded_complex_bad_layout_metadata_raises_value_error(rng):
    from tapegrad._core.tape import Tape
    r = tg.record(lambda z, w: np.sum(np.abs(z * w) ** 2), cplx(rng, 3), rng.standard_normal(3))
    for bad in ({"args": [], "out": {}}, {"args": "x", "out": {}},
                {"args": [{"tree": {"leaf": False}, "complex": [True, True]}] * 2,
                 "out": {"tree": {"leaf": False}, "complex": [False]}},
                {"args": [{"tree": {"leaf": False}, "complex": [False]}] * 2,
                 "out": {"tree": {"leaf": False}, "complex": [False]}},
                {"args": [{"tree": {"leaf": False}, "complex": [True]}] * 2,
                 "out": {"tree": {"leaf": False}, "complex": [True]}}):
        t = Tape.from_bytes(r.to_bytes())
        t.meta = dict(t.meta, complex=bad)
        with pytest.raises(ValueError, match="bad metadata"):
            tg.load(t.to_bytes())


def test_compiled_takes_complex_arguments(rng):
    f = tg.compile(lambda z: np.sum(np.abs(np.fft.fft(z)) ** 2))
    z = cplx(rng, 8)
    np.testing.assert_allclose(f.grad(z), 2 * 8 * np.conj(z), rtol=1e-13)     # Parseval
    np.testing.assert_allclose(f(z), 8 * np.sum(np.abs(z) ** 2), rtol=1e-13)
    with pytest.raises(TypeError, match="takes holomorphic=True"):
        f.hessian(z)           # a real f of complex z: no complex Hessian (as JAX's hessian)
    with pytest.raises(TypeError, match="return one complex value"):
        f.hessian(z, holomorphic=True)


def _holomorphic_hessian_closed_form(z):
    # f(z) = sum(sin(z) z^2) + prod(z): the diagonal from (sin z z^2)'' = (2 - z^2) sin z +
    # 4 z cos z, the off-diagonal prod(z) / (z_i z_j) (the diagonal of prod's Hessian is 0)
    H = np.prod(z) / np.outer(z, z)
    np.fill_diagonal(H, (2 - z ** 2) * np.sin(z) + 4 * z * np.cos(z))
    return H


def test_recorded_holomorphic_hessian_replays(rng):
    f = lambda z: np.sum(np.sin(z) * z ** 2) + np.prod(z)          # noqa: E731
    z = cplx(rng, 4)
    r = tg.record(f, z)
    np.testing.assert_allclose(r.hessian(z, holomorphic=True), _holomorphic_hessian_closed_form(z),
                               rtol=1e-12)
    Z = np.stack([z * 1.3 + 0.2j, z - 1, np.conj(z)])
    HB = r.hessian_batch(Z, holomorphic=True)
    assert HB.shape == (3, 4, 4) and HB.dtype == np.complex128
    for k in range(3):
        ref = _holomorphic_hessian_closed_form(Z[k])
        np.testing.assert_allclose(r.hessian(Z[k], holomorphic=True), ref, rtol=1e-12)
        np.testing.assert_allclose(HB[k], ref, rtol=1e-12)
    assert r.hessian(z.astype(np.complex64), holomorphic=True).dtype == np.complex64
    with pytest.raises(TypeError, match="takes holomorphic=True"):
        r.hessian(z)
    with pytest.raises(TypeError, match="takes holomorphic=True"):
        r.hessian_batch(Z)
    with pytest.raises(ValueError, match="batch axis first"):
        r.hessian_batch(z, holomorphic=True)
    # a loaded tape keeps the function's Hessian when given f
    np.testing.assert_allclose(tg.load(r.to_bytes(), f).hessian(z, holomorphic=True),
                               _holomorphic_hessian_closed_form(z), rtol=1e-12)
    with pytest.raises(TypeError, match="no Python function"):
        tg.load(r.to_bytes()).hessian(z, holomorphic=True)


# ------------------------------------------------------------------ complex64 in, complex64 out
def test_complex64_in_complex64_out_everywhere(rng):
    # computed in float64 (the tape's one dtype) and given back in the input's precision: the
    # numbers are the complex128 computation at the same (exactly widened) input, rounded
    z = cplx(rng, 5).astype(np.complex64)
    Z, c = z.astype(np.complex128), cplx(rng, 5).astype(np.complex64)
    f = lambda z: np.sum(np.abs(np.fft.fft(z * np.sin(z))) ** 2)   # noqa: E731
    h = lambda z: np.fft.ifft(z) * z   # noqa: E731

    def same(got, want):
        assert got.dtype == want.dtype, (got.dtype, want.dtype)
        np.testing.assert_array_equal(got, want)
    c64 = lambda a: np.asarray(a).astype(np.complex64)   # noqa: E731
    same(tg.grad(f)(z), c64(tg.grad(f)(Z)))
    v, g = tg.value_and_grad(f)(z)
    same(g, c64(tg.value_and_grad(f)(Z)[1]))
    assert np.isrealobj(v)
    same(tg.vjp(h, z)[1](c)[0], c64(tg.vjp(h, Z)[1](c)[0]))
    same(tg.jvp(h, (z,), (c,))[1], c64(tg.jvp(h, (Z,), (c,))[1]))
    t = tg.jvp(f, (z,), (c,))[1]                      # a real output's tangent: float32
    assert np.asarray(t).dtype == np.float32
    gh = tg.grad(lambda z: np.sum(z ** 3), holomorphic=True)
    same(gh(z), c64(gh(Z)))
    np.testing.assert_allclose(gh(z), 3 * Z ** 2, rtol=1e-6)
    assert type(tg.grad(lambda z: np.abs(z) ** 2)(np.complex64(1 + 2j))) is np.complex64
    assert type(tg.vjp(lambda z: z * z, np.complex64(1 + 2j))[1](np.complex64(1))[0]) is np.complex64
    # a real float32 input with a complex cotangent: a float32 gradient; its tangent: complex64
    x = rng.standard_normal(5).astype(np.float32)
    assert tg.vjp(np.fft.fft, x)[1](c)[0].dtype == np.float32
    assert tg.jvp(np.fft.fft, (x,), (x,))[1].dtype == np.complex64
    # pytrees keep each leaf's dtype
    g = tg.grad(lambda d: np.sum(np.abs(d["z"]) ** 2) + np.sum(d["x"] ** 2))({"z": z, "x": x})
    assert g["z"].dtype == np.complex64 and g["x"].dtype == np.float32
    # recordings follow each call's dtypes (recorded at complex128, replayed at complex64)
    r, rh = tg.record(f, Z), tg.record(h, Z)
    same(r.grad(z), c64(r.grad(Z)))
    same(r.value_and_grad(z)[1], c64(r.value_and_grad(Z)[1]))
    same(r.hvp(z, c), c64(r.hvp(Z, c)))
    same(rh.vjp(z, c), c64(rh.vjp(Z, c)))
    same(rh.jvp(z, c)[1], c64(rh.jvp(Z, c)[1]))
    same(tg.load(r.to_bytes()).grad(z), c64(r.grad(Z)))
    np.testing.assert_allclose(r.grad(z), tg.grad(f)(Z), rtol=1e-6)
    rr = tg.record(np.fft.fft, x)
    assert rr.jvp(x, x)[1].dtype == np.complex64 and rr.vjp(x, c).dtype == np.float32


def test_float32_real_inputs_are_unchanged_by_the_complex_paths(rng):
    x = rng.standard_normal(4).astype(np.float32)
    f = lambda x: np.sum(np.abs(np.fft.fft(x)) ** 2)   # noqa: E731  (a complex intermediate)
    g = tg.grad(f)(x)
    assert g.dtype == np.float32
    np.testing.assert_allclose(g, 2 * 4 * x, rtol=1e-6)         # Parseval: f = 4 sum x^2
    assert tg.jvp(f, (x,), (x,))[1].dtype == np.float32
    assert tg.hessian(f)(x).dtype == np.float32
    assert tg.jacobian(lambda x: np.real(np.fft.fft(x)))(x).dtype == np.float32
    r = tg.record(f, x)
    assert r.grad(x).dtype == np.float32 and r.hvp(x, x).dtype == np.float32
    assert type(r(x)) in (float, np.float64)


# ------------------------------------------------------------------ more functions (rules/complex_funcs.py)
def test_sinc_at_zero_and_closed_forms():
    z = np.array([0j, 0.5 + 0.25j])
    g = tg.grad(lambda z: np.sum(np.real(np.sinc(z))))(z)
    np.testing.assert_allclose(tg.vjp(np.sinc, z)[0], np.sinc(z), rtol=1e-15)
    # d/dz sinc(z) = (cos(pi z) - sinc(z)) / z, 0 at z = 0; grad of Re(f) for holomorphic f is f'(z)
    d = (np.cos(np.pi * z[1]) - np.sinc(z[1])) / z[1]
    np.testing.assert_allclose(g, [0.0, d], rtol=1e-12, atol=1e-12)
    # sign(z) = z / |z| (NumPy 2), 0 at 0
    np.testing.assert_allclose(tg.vjp(np.sign, z)[0], [0, z[1] / abs(z[1])], rtol=1e-15)


def test_value_only_functions_of_complex_values_are_constants(rng):
    z = cplx(rng, 4)

    def f(z):
        checks = (np.allclose(z, z), np.isclose(z, z + 1e-12).all(), np.array_equal(z, z),
                  np.count_nonzero(z) == 4, len(np.nonzero(z)[0]) == 4)
        assert all(checks)
        zeros, ones, full = np.zeros_like(z), np.ones_like(z), np.full_like(z, 2 - 1j)
        assert zeros.dtype == ones.dtype == full.dtype == np.complex128
        return np.sum(np.abs(z + full + ones + zeros) ** 2)
    np.testing.assert_allclose(tg.grad(f)(z), 2 * np.conj(z + 3 - 1j), rtol=1e-14)


def test_real_only_ufuncs_raise_as_numpy_does(rng):
    z = cplx(rng, 3)
    for bad in (lambda z: np.logaddexp(z, z), np.cbrt, np.fabs, np.deg2rad, lambda z: np.copysign(z, 1.0)):
        with pytest.raises(TypeError, match="not supported for the input types"):
            bad(z)              # NumPy's own error
        with pytest.raises(TypeError, match="not supported for the input types"):
            tg.grad(lambda z: np.sum(np.abs(bad(z))))(z)
    with pytest.raises(TypeError, match="no order"):
        tg.grad(lambda z: np.sum(np.abs(np.sort_complex(z))))(z)
    with pytest.raises(TypeError, match="condition is a complex"):
        tg.grad(lambda z: np.sum(np.abs(np.where(z, z, 0))))(z)
    # '...' with three operands: the values NumPy gives, and NumPy's errors
    w = np.array([0.5, -1.0, 2.0])
    np.testing.assert_allclose(tg.grad(lambda z: np.abs(np.einsum("...,...,...", z, z, w).sum()))(z),
                               tg.grad(lambda z: np.abs(np.sum(z * z * w)))(z), rtol=1e-13)
    for spec in ("...,...,...->", "ij,...jk,k->i"):     # NumPy's error: '...' axes not in the output
        args = (z, z, z) if spec.startswith("...") else (z.reshape(1, 3), np.ones((2, 3, 2)), z[:2])
        with pytest.raises(ValueError, match="no '...' ellipsis"):
            np.einsum(spec, *[np.asarray(a, dtype=complex) for a in args])
        with pytest.raises(ValueError, match="no '...' ellipsis"):
            tg.grad(lambda z: np.abs(np.sum(np.einsum(spec, *((z, z, z) if spec.startswith("...") else
                                                             (z.reshape(1, 3), np.ones((2, 3, 2)), z[:2]))))))(z)
    with pytest.raises(ValueError, match="do not fit"):
        tg.grad(lambda z: np.abs(np.einsum("ij,j,j->", z, z, z)))(z)


def test_interp_at_traced_real_points_of_complex_values(rng):
    # complex fp at traced real x: the imaginary part is interpolated too (before, a real rule
    # took the call and dropped it), and the derivative in x is the slope of each part
    xp = np.sort(rng.uniform(0, 5, size=7))
    fp = cplx(rng, 7)
    x = rng.uniform(-1, 6, size=9)
    np.testing.assert_allclose(tg.record(lambda x: np.interp(x, xp, fp), x)(x), np.interp(x, xp, fp),
                               rtol=1e-14)
    loss = lambda x: np.sum(np.abs(np.interp(x, xp, fp)) ** 2)      # noqa: E731
    h = 1e-6
    fd = np.array([(loss(x + h * e) - loss(x - h * e)) / (2 * h) for e in np.eye(9)])
    np.testing.assert_allclose(tg.grad(loss)(x), fd, rtol=1e-6, atol=1e-8)
    with pytest.raises(TypeError, match="x is complex"):
        tg.grad(lambda z: np.sum(np.abs(np.interp(z, xp, fp))))(x + 1j)
    # np.unwrap takes real phases: NumPy raises for complex input, and so does the rule
    with pytest.raises(TypeError, match="'remainder' not supported"):
        np.unwrap(fp)
    with pytest.raises(TypeError, match="'remainder' not supported"):
        tg.grad(lambda z: np.sum(np.abs(np.unwrap(z))))(fp)


def test_recorded_where_sinc_einsum_replay_like_retracing(rng):
    def f(z):
        a = np.where(np.abs(z) > 1, np.sinc(z), z * z)
        return np.sum(np.abs(np.einsum("i,j,k->ijk", a, z, np.conj(a))) ** 2) + np.real(np.sum(np.sign(z)))
    z0 = cplx(rng, 4)
    r = tg.record(f, z0)
    for _ in range(4):       # new points flip the mask: the guard re-records
        z = cplx(rng, 4)
        np.testing.assert_allclose(r(z), f(z), rtol=1e-13)
        np.testing.assert_allclose(r.grad(z), tg.grad(f)(z), rtol=1e-12, atol=1e-12)


def test_nan_to_num_replaces_each_part():
    z = np.array([1 + 2j, complex(np.nan, 1), complex(3, np.inf)])
    f = lambda z: np.sum(np.abs(np.nan_to_num(z, nan=5.0, posinf=7.0)) ** 2)   # noqa: E731
    v, g = tg.value_and_grad(f)(z)
    np.testing.assert_allclose([v, f(z)], 5 + 26 + 58, rtol=1e-14)     # |1+2j|^2 + |5+1j|^2 + |3+7j|^2
    # the replaced parts are constants: only the finite parts have derivatives (2 * part)
    np.testing.assert_array_equal(g, [2 - 4j, -2j, 6])


def test_recorded_complex_jacobian_equals_retracing(rng):
    z, z2, x = cplx(rng, 4), cplx(rng, 4), rng.standard_normal(4)
    f = lambda z: np.abs(np.sin(z) * z[::-1]) ** 2       # noqa: E731  (real output: rev)
    np.testing.assert_allclose(tg.record(f, z).jacobian(z2), tg.jacobian(f)(z2), rtol=1e-13, atol=1e-13)
    g = lambda z: np.sin(z) * z[::-1]                     # noqa: E731  (holomorphic)
    r = tg.record(g, z)
    for mode in ("fwd", "rev", "auto"):
        np.testing.assert_allclose(r.jacobian(z2, mode, holomorphic=True), tg.jacobian(g, holomorphic=True)(z2),
                                   rtol=1e-13, atol=1e-13)
    # real input, complex output (fwd): the DFT matrix
    np.testing.assert_allclose(tg.record(np.fft.fft, x).jacobian(x), np.fft.fft(np.eye(4), axis=0), atol=1e-13)
    # several arguments: (out.size, in.size) over the leaves in order, as real recordings give it
    h = lambda z, w: np.abs(z * w) ** 2                   # noqa: E731
    J = tg.record(h, z, x).jacobian((z2, x))
    np.testing.assert_allclose(J, np.concatenate(tg.jacobian(h, argnums=(0, 1))(z2, x), axis=1), rtol=1e-13)
    assert tg.record(f, z.astype(np.complex64)).jacobian(z2.astype(np.complex64)).dtype == np.complex64
    with pytest.raises(TypeError, match="holomorphic=True"):
        r.jacobian(z2)


def test_nan_reductions_skip_nans_of_either_part():
    z = np.array([1 + 2j, complex(np.nan, 1), 0.5 - 1j, complex(2, np.nan)])
    ok = np.array([True, False, True, False])
    v, g = tg.value_and_grad(lambda z: np.abs(np.nansum(z)) ** 2)(z)
    s = np.sum(z[ok])
    np.testing.assert_allclose(v, abs(s) ** 2, rtol=1e-14)
    np.testing.assert_allclose(g, np.where(ok, 2 * np.conj(s), 0), rtol=1e-14)
    v, g = tg.value_and_grad(lambda z: np.abs(np.nanmean(z)) ** 2)(z)
    np.testing.assert_allclose(v, abs(s / 2) ** 2, rtol=1e-14)
    np.testing.assert_allclose(g, np.where(ok, np.conj(s) / 2, 0), rtol=1e-14)


def test_item_of_a_complex_traced_scalar_is_a_guarded_constant():
    z = np.array([1 + 1j, 2j])
    with pytest.warns(UserWarning, match="constant"):
        g = tg.grad(lambda z: np.abs(z[0].item() * z[1]) ** 2)(z)
    np.testing.assert_allclose(g, [0, 2 * 2 * np.conj(z[1])], rtol=1e-15)   # |1 + 1j|^2 = 2


def test_angle_of_real_values_is_piecewise_constant():
    x = np.array([1.5, -2.0, 0.0, np.nan, np.inf, -np.inf])
    out, fn = tg.vjp(np.angle, x)
    np.testing.assert_array_equal(out, np.angle(x))
    np.testing.assert_array_equal(fn(np.ones(6))[0], np.zeros(6))
    f = lambda x: np.sum(np.angle(x, deg=True) * x)   # noqa: E731
    np.testing.assert_array_equal(tg.grad(f)(np.array([1.0, -2.0])), [0.0, 180.0])
    r = tg.record(f, np.array([1.0, -2.0]))          # the sign test is traced: replays follow it
    np.testing.assert_array_equal(r.grad(np.array([-1.0, 2.0])), [180.0, 0.0])


def test_check_grads_takes_complex_arguments_and_outputs(rng):
    # the shipped checker perturbs real and imaginary parts separately and checks the
    # operators' convention at the boundary (jvp, the Re(c dw) cotangent, df/dx - i df/dy)
    z, x = cplx(rng, 4), rng.standard_normal(3)
    tg.check_grads(lambda z: np.fft.fft(z * np.sin(z)), z, modes=("fwd", "rev"), order=2)
    tg.check_grads(lambda z: np.sum(np.abs(z) ** 3), z, modes=("fwd", "rev"), order=2)
    tg.check_grads(lambda z, x: np.conj(z[:3]) * np.exp(1j * x), z, x, modes=("fwd", "rev"), order=2)
    tg.check_grads(np.fft.rfft, x, modes=("fwd", "rev"), order=2)
    tg.check_grads(lambda z: z * z, 0.5 + 1j, modes=("fwd", "rev"), order=2)
    # a wrong convention is caught: g * conj(f'(z)) (the conjugated vjp) instead of g f'(z)
    import tapegrad.checking as checking
    real_vjp = checking.api.vjp

    def conjugated_vjp(f, *primals):
        out, fn = real_vjp(f, *primals)
        return out, lambda c: tuple(np.conj(g) for g in fn(np.conj(c)))
    checking.api = type("api", (), {"vjp": staticmethod(conjugated_vjp), "jvp": staticmethod(tg.jvp)})
    try:
        with pytest.raises(AssertionError, match="rev"):
            tg.check_grads(lambda z: z * z, z, modes=("rev",), order=1)
    finally:
        checking.api = tg.operators.api


def test_custom_rules_take_complex_traced_arguments(rng):
    # the rule is used (not the body traced): a deliberately different vjp shows which runs;
    # ct_z = g * 3 z in the convention (tests/test_custom.py checks the convention itself)
    from tapegrad.autograd.extend import primitive, defvjp
    sq = primitive(lambda z: z * z)
    defvjp(sq, lambda ans, z: lambda g: g * 3 * z)
    z, c = cplx(rng, 2), cplx(rng, 2)
    out, pull = tg.vjp(sq, z)
    np.testing.assert_allclose(out, z * z, rtol=1e-15)
    np.testing.assert_allclose(pull(c)[0], c * 3 * z, rtol=1e-14)


def test_complex_scalar_broadcast_against_real_arrays(rng):
    # the parts broadcast together: (a + ib) + x has an imaginary part of x's shape
    z, x = 0.6 + 0.3j, rng.standard_normal((3, 2))
    out, fn = tg.vjp(np.add, z, x)
    np.testing.assert_allclose(out, z + x, rtol=1e-15)
    c = cplx(rng, 3, 2)
    gz, gx = fn(c)
    np.testing.assert_allclose(gz, np.sum(c), rtol=1e-14)      # sum over the broadcast axes
    np.testing.assert_allclose(gx, np.real(c), rtol=1e-15)     # a real input: Re of the cotangent
    for f in (np.add, np.subtract, lambda a, b: b - a, lambda a, b: a * b + b):
        tg.check_grads(f, z, x, modes=("fwd", "rev"), order=2)


def test_autograd_combo_check_runs_every_combination(rng):
    from tapegrad.autograd.test_util import combo_check
    seen = []

    def f(a, b, scale=1.0):
        seen.append((np.shape(a), np.iscomplexobj(a), np.shape(b), scale))
        return np.sum(np.abs(a * b) ** 2) * scale
    combo_check(f, (0, 1), modes=["rev"], order=1)([0.5, 0.6 + 0.3j, rng.standard_normal(2)],
                                                     [rng.standard_normal(2), 1.5], scale=[1.0, 2.0])
    combos = {(s, c, t, k) for s, c, t, k in seen}
    assert {(s, c, t, k) for s, c in (((), False), ((), True), ((2,), False)) for t in ((2,), ())
            for k in (1.0, 2.0)} <= combos
    with pytest.raises(AssertionError):     # a wrong derivative is caught at some combination
        # (the value of sum(a^2), the derivative of a[1]^2 only)
        combo_check(lambda a: a[1] ** 2 + tg.stop_gradient(a[0] ** 2), 0,
                    modes=["fwd"], order=1)([np.array([1.0, 2.0])])


def test_np_array_of_complex_traced_scalars(rng):
    # NumPy's conversions of complex traced scalars (np.array of a list, nested, mixed with real
    # traced scalars and numbers): an object array the complex rules take apart again; the
    # gradients against central differences along random complex directions
    z = cplx(rng, 3)
    fs = [
        lambda z: np.sum(np.abs(np.array([z[0] * z[1], z[2], 2j])) ** 2),
        lambda z: np.real(np.sum(np.array([[z[0], 1j], [z[1], z[0] * z[2]]]) @ z[:2])),
        lambda z: np.sum(np.abs(np.exp(np.array([z[0], 0.5 * z[1]])) * z[1:]) ** 2),
        lambda z: np.sum(np.abs(np.array([np.real(z[0]), z[1] + 1, 3.0])) ** 2),
    ]
    for f in fs:
        g = tg.grad(f)(z)
        assert g.shape == z.shape
        for _ in range(2):
            dz = cplx(rng, 3)
            np.testing.assert_allclose(np.real(np.sum(g * dz)), _fd_directional(f, z, dz),
                                       rtol=1e-6, atol=1e-7)
    # a real input made complex inside, as a list
    x = rng.standard_normal(2)
    h = lambda x: np.sum(np.abs(np.array([x[0] + 1j * x[1], x[1]])) ** 2)  # noqa: E731
    np.testing.assert_allclose(tg.grad(h)(x), [2 * x[0], 4 * x[1]], rtol=1e-14)


def test_scalar_times_complex_constant_stays_0d(rng):
    x = rng.standard_normal(2)
    assert np.shape(tg.vjp(lambda x: x[0] * 1j, x)[0]) == ()
    assert np.shape(tg.vjp(lambda x: (1 + 2j) * x[1] + 1j, x)[0]) == ()


@pytest.mark.parametrize("norm", ["backward", "ortho", "forward"])
@pytest.mark.parametrize("kind,shape,s,axes,nin", [
    ("fft", (8,), [8], [0], 1), ("fft", (8,), [8], [0], 2), ("ifft", (8,), [8], [0], 2),
    ("fft", (3, 4), [3], [0], 2), ("ifft", (3, 4), [4], [1], 1),
    ("fft", (8,), [5], [0], 2), ("ifft", (8,), [11], [0], 2), ("fft", (3, 4), [3, 4], [0, 1], 2)])
def test_fft_rule_vjp_equals_its_general_adjoint(kind, shape, s, axes, nin, norm, rng):
    # FFT.vjp's direct path (one axis, no crop or pad) against the general bwd, bit for bit;
    # the other parameters take the general path (the comparison is then the same code)
    from tapegrad.rules.calls import CallRule
    from tapegrad.rules.complex import FFT
    rule = FFT([shape] * nin, kind=kind, s=s, axes=axes, norm=norm)
    xs = [rng.standard_normal(shape) for _ in range(nin)]
    y = rule.forward(*xs)
    yb = rng.standard_normal(y.size).reshape(rule.out_shape)
    fast = rule.vjp(xs, y, yb)
    general = CallRule.vjp(rule, xs, y, yb)
    assert len(fast) == len(general) == nin
    for a, b in zip(fast, general):
        assert np.array_equal(np.reshape(a, -1).view(np.int64),
                              np.ascontiguousarray(b, dtype=np.float64).reshape(-1).view(np.int64))
    # and the adjoint against the transposed map: <J^T yb, v> = <yb, J v>
    vs = [rng.standard_normal(shape) for _ in range(nin)]
    Jv = rule.forward(*vs)
    lhs = sum(np.vdot(np.reshape(a, -1), v.reshape(-1)) for a, v in zip(fast, vs))
    assert np.isclose(lhs, np.vdot(yb.reshape(-1), Jv), rtol=1e-12, atol=1e-12)
