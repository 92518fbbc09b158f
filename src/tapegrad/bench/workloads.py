"""The benchmark workloads: one function source for every tool, plus a hand-written derivative.

Each workload function is written once as ``fun(x, d, np)``: ``x`` the point (a 1-D array of the
tool's array type), ``d`` a dict of data arrays (already converted to the tool's array type), and
``np`` a NumPy-like namespace (``numpy`` for tapegrad and hand-written NumPy, ``autograd.numpy``,
``jax.numpy``, or a thin shim over ``torch``). Only a small shared vocabulary is used (``exp``,
``log``, ``sin``, ``cos``, ``tanh``, ``sqrt``, ``sum`` and ``max`` (with ``axis``), ``einsum``,
``logaddexp``, ``abs``, ``real``, ``fft.fft``/``fft.ifft``, ``linalg.eig``, ``pi``, ``@``, slicing
and ``.reshape``) so the same source runs everywhere; tapegrad needs no namespace at all, the default
``np=numpy`` is enough.

The hand-written derivatives are the "what a careful person would write" baseline of issue 4:
plain NumPy (or plain Python floats for the scalar functions), no AD.
"""
import math
from dataclasses import dataclass, field

import numpy


# ------------------------------------------------------------------------------------------- kinds
# grad     scalar f, derivative = gradient
# hvp      scalar f, derivative = Hessian times a fixed vector v
# jac_fwd  vector f, derivative = full Jacobian by forward mode
# jac_rev  vector f, derivative = full Jacobian by reverse mode
# ode      gradient-flow dw/dt = -grad f(w) integrated by scipy's solve_ivp; "derivative" = w(T)
KINDS = ("grad", "hvp", "jac_fwd", "jac_rev", "ode")


@dataclass
class Workload:
    name: str                 # family: "rosenbrock"
    label: str                # row label: "rosenbrock n=1e5"
    kind: str                 # one of KINDS
    fun: object               # fun(x, d, np)
    x0: numpy.ndarray
    data: dict = field(default_factory=dict)
    hand: object = None       # hand(x, d) -> derivative, or hand(x, v, d) for hvp
    v: numpy.ndarray = None   # hvp direction
    n: int = 0                # number of inputs (for the scaling chart)
    ode: dict = None          # solve_ivp settings for kind "ode"
    note: str = ""
    skip: dict = field(default_factory=dict)   # tool name -> why that tool cannot run it here


# ------------------------------------------------------------------------------------------- sources
def worked_example(x, d, np=numpy):
    """The worked example of the design notes: exp(x1 + x2^3) x3 + sqrt(x3 sin(pi/2 (x1 - x2)))."""
    x1, x2, x3 = x[0], x[1], x[2]
    return np.exp(x1 + x2 ** 3) * x3 + np.sqrt(x3 * np.sin(np.pi / 2 * (x1 - x2)))


def worked_example_hand(x, d):
    x1, x2, x3 = float(x[0]), float(x[1]), float(x[2])
    e = math.exp(x1 + x2 ** 3)
    a = math.pi / 2 * (x1 - x2)
    s, c = math.sin(a), math.cos(a)
    r = 0.5 / math.sqrt(x3 * s)
    k = r * x3 * c * (math.pi / 2)
    return numpy.array([e * x3 + k, 3.0 * x2 * x2 * e * x3 - k, e + r * s])


SCALAR_LOOP_ITERS = 30   # 10 scalar operations per iteration: 300 operations


def scalar_loop(x, d, np=numpy):
    """A Python loop of scalar operations (a tiny recurrence): per-operation overhead dominates."""
    a, b, c = x[0], x[1], x[2]
    for _ in range(SCALAR_LOOP_ITERS):
        a, b, c = np.sin(b * c) + 0.1 * a, np.cos(a - b) * 0.9, np.tanh(c + a * b)
    return a + b + c


def scalar_loop_hand(x, d):
    """Hand-written adjoint of ``scalar_loop`` in plain Python floats (a forward pass storing what
    the backward pass needs, then the backward pass in reverse order)."""
    a, b, c = float(x[0]), float(x[1]), float(x[2])
    sin, cos, tanh = math.sin, math.cos, math.tanh
    tape = []
    for _ in range(SCALAR_LOOP_ITERS):
        bc, amb, cab = b * c, a - b, c + a * b
        cbc, samb, tcab = cos(bc), sin(amb), tanh(cab)
        tape.append((a, b, c, cbc, samb, tcab))
        a, b, c = sin(bc) + 0.1 * a, cos(amb) * 0.9, tcab
    a_bar = b_bar = c_bar = 1.0
    for a, b, c, cbc, samb, tcab in reversed(tape):
        u = a_bar * cbc                 # through sin(b c)
        w = -b_bar * 0.9 * samb         # through cos(a - b)
        z = c_bar * (1.0 - tcab * tcab)  # through tanh(c + a b)
        a_bar, b_bar, c_bar = 0.1 * a_bar + w + z * b, u * c - w + z * a, u * b + z
    return numpy.array([a_bar, b_bar, c_bar])


def rosenbrock(x, d, np=numpy):
    """The chained Rosenbrock function: large elementwise work, no BLAS."""
    xm, xp = x[:-1], x[1:]
    return np.sum(100.0 * (xp - xm * xm) ** 2 + (1.0 - xm) ** 2)


def rosenbrock_hand(x, d):
    xm, xp = x[:-1], x[1:]
    t = xp - xm * xm
    g = numpy.zeros_like(x)
    g[:-1] = -400.0 * xm * t - 2.0 * (1.0 - xm)
    g[1:] += 200.0 * t
    return g


def rosenbrock_hvp_hand(x, v, d):
    """H v with the tridiagonal Hessian of the chained Rosenbrock function."""
    xm, xp = x[:-1], x[1:]
    diag = numpy.zeros_like(x)
    diag[:-1] = 1200.0 * xm * xm - 400.0 * xp + 2.0
    diag[1:] += 200.0
    off = -400.0 * xm
    hv = diag * v
    hv[:-1] += off * v[1:]
    hv[1:] += off * v[:-1]
    return hv


def logistic(w, d, np=numpy):
    """Mean logistic loss plus a ridge term; Xy holds the rows x_i multiplied by labels y_i."""
    z = d["Xy"] @ w
    return np.sum(np.logaddexp(0.0, -z)) / z.shape[0] + 0.05 * np.sum(w * w)


def logistic_hand(w, d):
    Xy = d["Xy"]
    z = Xy @ w
    s = numpy.exp(-numpy.logaddexp(0.0, z))       # sigmoid(-z), stable
    return Xy.T @ (s * (-1.0 / z.shape[0])) + 0.1 * w


def mlp(w, d, np=numpy):
    """A two-layer tanh network, half the mean squared error; parameters packed in one vector."""
    X, Y = d["X"], d["Y"]
    din, h, o = X.shape[1], d["h"].shape[0], Y.shape[1]
    k1 = din * h
    k2 = k1 + h
    k3 = k2 + h * o
    W1 = w[:k1].reshape(din, h)
    b1 = w[k1:k2]
    W2 = w[k2:k3].reshape(h, o)
    b2 = w[k3:]
    r = np.tanh(X @ W1 + b1) @ W2 + b2 - Y
    return np.sum(r * r) * (0.5 / X.shape[0])


def mlp_hand(w, d):
    X, Y = d["X"], d["Y"]
    din, h, o = X.shape[1], d["h"].shape[0], Y.shape[1]
    k1, k2, k3 = din * h, din * h + h, din * h + h + h * o
    W1, b1 = w[:k1].reshape(din, h), w[k1:k2]
    W2, b2 = w[k2:k3].reshape(h, o), w[k3:]
    H = numpy.tanh(X @ W1 + b1)
    R = (H @ W2 + b2 - Y) * (1.0 / X.shape[0])
    dH = (R @ W2.T) * (1.0 - H * H)
    g = numpy.empty_like(w)
    g[:k1] = (X.T @ dH).ravel()
    g[k1:k2] = dH.sum(axis=0)
    g[k2:k3] = (H.T @ R).ravel()
    g[k3:] = R.sum(axis=0)
    return g


def _gmm_unpack(w, d):
    """The data and the packed parameters (alphas K, means K x p, icf K x p (p + 1) / 2)."""
    X = d["X"]
    n, p = X.shape
    K = d["K"].shape[0]
    return (X, d["T"], n, p, K, w[:K], w[K:K + K * p].reshape(K, p),
            w[K + K * p:].reshape(K, p * (p + 1) // 2))


def gmm(w, d, np=numpy):
    """ADBench's Gaussian mixture negative log-likelihood (Srajer et al. 2018): K components in d
    dimensions with inverse-covariance factors Q_k = diag(exp(q_k)) + L_k (L_k strictly lower,
    filled column by column from icf[:, d:]), a Wishart prior, n points. The parameters are
    packed as (alphas K, means K d, icf K d (d + 1) / 2). L_k is built by a product with a
    constant 0/1 matrix so the same source runs in every tool (no scatter)."""
    X, T, n, p, K, alphas, means, icf = _gmm_unpack(w, d)
    qs = icf[:, :p]
    Qdiags = np.exp(qs)
    sum_qs = np.sum(qs, axis=1)
    Ls = (icf[:, p:] @ T).reshape(K, p, p)
    xc = X.reshape(n, 1, p) - means.reshape(1, K, p)                 # (n, K, p)
    Lx = Qdiags.reshape(1, K, p) * xc + np.einsum("kij,nkj->nki", Ls, xc)
    inner = alphas.reshape(1, K) + sum_qs.reshape(1, K) - 0.5 * np.sum(Lx * Lx, axis=2)
    mx = np.max(inner, axis=1, keepdims=True)
    lse = np.log(np.sum(np.exp(inner - mx), axis=1)) + mx.reshape(n)
    ma = np.max(alphas)
    lse_alpha = np.log(np.sum(np.exp(alphas - ma))) + ma
    g, m = GMM_GAMMA, GMM_M
    prior = np.sum(0.5 * g * g * (np.sum(Qdiags * Qdiags, axis=1)
                                  + np.sum(icf[:, p:] * icf[:, p:], axis=1)) - m * sum_qs)
    return np.sum(lse) - n * lse_alpha + prior + d["C"][0]


def gmm_hand(w, d):
    X, T, n, p, K, alphas, means, icf = _gmm_unpack(w, d)
    Qd = numpy.exp(icf[:, :p])
    Q = (icf[:, p:] @ T).reshape(K, p, p)
    Q[:, numpy.arange(p), numpy.arange(p)] = Qd
    xc = X[:, None, :] - means[None, :, :]                            # (n, K, p)
    Y = numpy.einsum("kij,nkj->nki", Q, xc)                           # Q_k (x_i - mu_k)
    inner = alphas + icf[:, :p].sum(axis=1) - 0.5 * numpy.sum(Y * Y, axis=2)
    R = numpy.exp(inner - inner.max(axis=1, keepdims=True))
    R /= R.sum(axis=1, keepdims=True)                                 # responsibilities
    sa = numpy.exp(alphas - alphas.max())
    sa /= sa.sum()
    RY = R[:, :, None] * Y
    G = -numpy.einsum("nki,nkj->kij", RY, xc)                        # df / dQ_k
    g_alpha = R.sum(axis=0) - n * sa
    g_means = numpy.einsum("nki,kij->kj", RY, Q)                     # sum_i r_ik Q_k^T y_ik
    gam, m = GMM_GAMMA, GMM_M
    g_q = (G[:, numpy.arange(p), numpy.arange(p)] * Qd + R.sum(axis=0)[:, None]
           + gam * gam * Qd * Qd - m)
    g_l = G.reshape(K, p * p) @ T.T + gam * gam * icf[:, p:]
    return numpy.concatenate([g_alpha, g_means.ravel(),
                              numpy.concatenate([g_q, g_l], axis=1).ravel()])


GMM_GAMMA, GMM_M = 1.0, 0


def _gmm_data(n, K, p, seed):
    """Points, the L-filling matrix T, and the constant terms of the objective (ADBench's)."""
    rng = numpy.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    nl = p * (p - 1) // 2
    T = numpy.zeros((nl, p * p))
    r = 0
    for col in range(p):                      # column by column, as ADBench's constructL
        for row in range(col + 1, p):
            T[r, row * p + col] = 1.0
            r += 1
    # -n p / 2 log(2 pi) and the Wishart normalization: they move the value, not the gradient
    nw = p + GMM_M + 1
    lmgamma = 0.25 * p * (p - 1) * math.log(math.pi) + sum(
        math.lgamma(0.5 * nw - 0.5 * j) for j in range(p))
    C = -n * p * 0.5 * math.log(2 * math.pi) - K * (
        nw * p * (math.log(GMM_GAMMA) - 0.5 * math.log(2)) - lmgamma)
    w0 = numpy.concatenate([rng.standard_normal(K), rng.standard_normal(K * p),
                            0.1 * rng.standard_normal(K * p * (p + 1) // 2)])
    return {"X": X, "T": T, "K": numpy.zeros(K), "C": numpy.array([C])}, w0


def fft_loss(x, d, np=numpy):
    """A circular convolution by FFTs (complex intermediates of a real function) and its energy."""
    y = np.fft.ifft(np.fft.fft(x) * np.fft.fft(d["k"]))
    return np.sum(np.abs(y) ** 2)


def fft_loss_hand(x, d):
    # Parseval: f = |K|^2 . |X|^2 / n for X = fft(x), so grad = 2 Re(ifft(|K|^2 fft(x)))
    K2 = numpy.abs(numpy.fft.fft(d["k"])) ** 2
    return 2.0 * numpy.real(numpy.fft.ifft(K2 * numpy.fft.fft(x)))


def eig_loss(a, d, np=numpy):
    """Eigenvalues of a non-symmetric matrix (complex for a real one) in a real loss."""
    m = d["m"].shape[0]
    M = a.reshape(m, m)
    # (autograd has a rule for eig, not eigvals; JAX differentiates eigvals, and eig only with
    # enable_eigvec_derivs)
    w = np.linalg.eig(M)[0] if getattr(np, "__name__", "").startswith("autograd") \
        else np.linalg.eigvals(M)
    return np.sum(np.abs(w) ** 2) + np.sum(np.real(w) ** 3)


def eig_loss_hand(a, d):
    # dw = diag(V^-1 dA V) for distinct eigenvalues, and dL = Re(c . dw) with
    # c = 2 conj(w) + 3 Re(w)^2, so the gradient is Re((V diag(c) V^-1)^T)
    m = d["m"].shape[0]
    w, V = numpy.linalg.eig(a.reshape(m, m))
    c = 2.0 * numpy.conj(w) + 3.0 * numpy.real(w) ** 2
    return numpy.real((V * c) @ numpy.linalg.inv(V)).T.ravel()


def vecmap(x, d, np=numpy):
    """A vector function R^n -> R^n for full Jacobians: a dense layer plus an elementwise term."""
    return np.tanh(d["A"] @ x) + np.sin(x) * x


def vecmap_jac_hand(x, d):
    t = numpy.tanh(d["A"] @ x)
    J = (1.0 - t * t)[:, None] * d["A"]
    J[numpy.diag_indices_from(J)] += numpy.cos(x) * x + numpy.sin(x)
    return J


# ------------------------------------------------------------------------------------------- sizes
@dataclass
class Sizes:
    rosenbrock: tuple = (10, 100, 1_000, 10_000, 100_000, 1_000_000)
    logistic: tuple = (10_000, 100)        # samples, features
    mlp: tuple = (256, 64, 128, 10)        # batch, inputs, hidden, outputs
    hvp_n: tuple = (10_000, 1_000_000)     # Rosenbrock sizes for the Hessian-vector product
    gmm: tuple = (1_000, 25, 10)           # points, components, dimension (ADBench's 1k, K=25, d=10)
    fft_n: int = 4096                      # signal length of the FFT loss
    eig_m: int = 50                        # matrix size of the eigenvalue loss
    jac_n: int = 100                       # inputs = outputs of the Jacobian workload
    ode: tuple = (200, 10)                 # logistic problem inside solve_ivp
    threads_n: int = 20_000                # elementwise size of the compute-bound thread tape
    batch_logistic: tuple = (10_000, 20)   # per-example gradients: rows, features
    batch_mlp: tuple = (10_000, 20, 32)    # rows, inputs, hidden units
    batch_loop: int = 1_000                # rows the one-point loops are timed over
    ensemble: tuple = (64, 10)             # flows, dimension (Rosenbrock)


QUICK_SIZES = Sizes(rosenbrock=(10, 100), logistic=(50, 5), mlp=(16, 4, 8, 3), hvp_n=(20,),
                    jac_n=6, ode=(30, 3), threads_n=200, batch_logistic=(200, 5),
                    batch_mlp=(100, 4, 6), batch_loop=50, ensemble=(4, 3), gmm=(30, 3, 2), fft_n=64,
                    eig_m=6)


def _logistic_data(n, dim, seed):
    rng = numpy.random.default_rng(seed)
    X = rng.standard_normal((n, dim)) * numpy.linspace(0.5, 2.0, dim)
    y = numpy.where(X @ rng.standard_normal(dim) + 0.5 * rng.standard_normal(n) > 0, 1.0, -1.0)
    return {"Xy": numpy.ascontiguousarray(X * y[:, None])}


def build(sizes=None, names=None):
    """The list of workloads at the given sizes (``names`` filters by family name)."""
    s = sizes or Sizes()
    rng = numpy.random.default_rng(20240607)
    out = []

    out.append(Workload("worked_example", "worked example (3 vars)", "grad", worked_example,
                        numpy.array([0.7, 0.3, 1.3]), hand=worked_example_hand, n=3))
    out.append(Workload("scalar_loop", f"scalar loop ({10 * SCALAR_LOOP_ITERS} ops)", "grad",
                        scalar_loop, numpy.array([0.3, -0.4, 0.5]), hand=scalar_loop_hand, n=3,
                        skip={"jax-jit": "XLA compile time explodes on this unrolled loop "
                                         "(10 iterations: ~1 s, 20: ~60 s on the benchmark "
                                         "machine; 30 did not finish)"}))
    for n in s.rosenbrock:
        n = int(n)
        x = 1.0 + 0.1 * rng.standard_normal(n)
        out.append(Workload("rosenbrock", f"rosenbrock n={_fmt_n(n)}", "grad", rosenbrock, x,
                            hand=rosenbrock_hand, n=n))
    n, dim = s.logistic
    out.append(Workload("logistic", f"logistic {n}x{dim}", "grad", logistic,
                        0.1 * rng.standard_normal(dim), _logistic_data(n, dim, 1),
                        hand=logistic_hand, n=dim))
    B, din, h, o = s.mlp
    X = rng.standard_normal((B, din))
    Y = numpy.sin(X[:, :o] if o <= din else numpy.tile(X, (1, o // din + 1))[:, :o])
    nw = din * h + h + h * o + o
    w0 = numpy.concatenate([rng.standard_normal(din * h) / math.sqrt(din), numpy.zeros(h),
                            rng.standard_normal(h * o) / math.sqrt(h), numpy.zeros(o)])
    out.append(Workload("mlp", f"mlp {B}x{din}-{h}-{o}", "grad", mlp, w0,
                        {"X": X, "Y": numpy.ascontiguousarray(Y), "h": numpy.zeros(h)},
                        hand=mlp_hand, n=nw))
    n, K, p = s.gmm
    data, wg = _gmm_data(n, K, p, 4)
    out.append(Workload("gmm", f"gmm n={n} K={K} d={p}", "grad", gmm, wg, data, hand=gmm_hand,
                        n=wg.size))
    n = int(s.fft_n)
    out.append(Workload("fft", f"fft loss n={n} (complex)", "grad", fft_loss,
                        rng.standard_normal(n), {"k": rng.standard_normal(n)}, hand=fft_loss_hand,
                        n=n))
    m = int(s.eig_m)
    out.append(Workload("eig", f"eig loss {m}x{m} (complex)", "grad", eig_loss,
                        rng.standard_normal(m * m), {"m": numpy.zeros(m)}, hand=eig_loss_hand,
                        n=m * m))
    hvp_sizes = (s.hvp_n,) if numpy.ndim(s.hvp_n) == 0 else s.hvp_n
    for n in hvp_sizes:
        n = int(n)
        out.append(Workload("hvp", f"hvp rosenbrock n={_fmt_n(n)}", "hvp", rosenbrock,
                            1.0 + 0.1 * rng.standard_normal(n), hand=rosenbrock_hvp_hand,
                            v=rng.standard_normal(n), n=n))
    n = int(s.jac_n)
    A = {"A": rng.standard_normal((n, n)) / math.sqrt(n)}
    xj = rng.standard_normal(n)
    out.append(Workload("jac_fwd", f"jacobian fwd {n}x{n}", "jac_fwd", vecmap, xj, A,
                        hand=vecmap_jac_hand, n=n))
    out.append(Workload("jac_rev", f"jacobian rev {n}x{n}", "jac_rev", vecmap, xj, A,
                        hand=vecmap_jac_hand, n=n))
    n, dim = s.ode
    out.append(Workload("ode", f"gradient flow solve_ivp (logistic {n}x{dim})", "ode", logistic,
                        numpy.zeros(dim), _logistic_data(n, dim, 2), hand=logistic_hand, n=dim,
                        ode={"t_span": (0.0, 20.0), "method": "RK45", "rtol": 1e-8, "atol": 1e-10}))
    if names:
        wanted = set(names)
        unknown = wanted - {w.name for w in out}
        if unknown:
            raise ValueError(f"unknown workload(s) {sorted(unknown)}; choose from "
                             f"{sorted({w.name for w in out})}")
        out = [w for w in out if w.name in wanted]
    return out


def thread_workload(n):
    """A compute-bound tape for the threads measurement: transcendental elementwise work on an
    array small enough to stay in cache, so two threads do not fight over memory bandwidth."""
    def f(x, d=None, np=numpy):
        return np.sum(np.tanh(np.sin(x) * np.exp(np.cos(x))) + np.sqrt(1.0 + x * x))
    x = numpy.random.default_rng(3).standard_normal(int(n))
    return f, x


def _fmt_n(n):
    if n >= 1000 and float(n) == 10 ** round(math.log10(n)):
        return f"1e{round(math.log10(n))}"
    return str(n)
