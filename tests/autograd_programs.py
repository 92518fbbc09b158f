"""Programs written the way autograd users write them. tests/test_autograd_dropin.py runs this
file as it is (through tapegrad.autograd) and, when autograd is installed, with the three import
lines below switched to autograd's: the one change a project makes to move either way."""
import tapegrad.autograd.numpy as np
import tapegrad.autograd.numpy.random as npr
from tapegrad.autograd import (grad, value_and_grad, elementwise_grad, jacobian, hessian, make_vjp,
                               make_jvp, make_hvp, make_ggnvp, hessian_tensor_product,
                               tensor_jacobian_product, deriv, checkpoint, grad_named,
                               multigrad_dict)
from tapegrad.autograd.extend import primitive, defvjp, defjvp, defvjp_argnum, defjvp_argnum
from tapegrad.autograd.misc import flatten
from tapegrad.autograd.misc.optimizers import adam, sgd, rmsprop
from tapegrad.autograd.scipy.special import logsumexp as sp_logsumexp, expit
from tapegrad.autograd.scipy.stats import norm, t, multivariate_normal, poisson, gamma, beta


def sigmoid(x):
    return 0.5 * (np.tanh(x / 2.0) + 1.0)


def logistic_data(n=60, d=3, seed=0):
    rs = npr.RandomState(seed)
    X = rs.randn(n, d)
    w_true = np.array([1.5, -2.0, 0.5])[:d]
    y = (rs.rand(n) < sigmoid(X @ w_true)).astype(float)
    return X, y


def logistic_adam(num_iters=150):
    X, y = logistic_data()

    def training_loss(weights, i):
        preds = sigmoid(np.dot(X, weights))
        label_probabilities = preds * y + (1 - preds) * (1 - y)
        return -np.sum(np.log(label_probabilities))

    losses = []

    def callback(weights, i, g):
        losses.append(training_loss(weights, i))

    w = adam(grad(training_loss), np.zeros(3), callback=callback, num_iters=num_iters,
             step_size=0.1)
    return w, np.array(losses)


def init_net(layer_sizes, scale=0.1, rs=npr.RandomState(1)):
    return [(scale * rs.randn(m, n), scale * rs.randn(n))
            for m, n in zip(layer_sizes[:-1], layer_sizes[1:])]


def net_predict(params, inputs):
    for W, b in params:
        outputs = np.dot(inputs, W) + b
        inputs = np.tanh(outputs)
    return outputs - sp_logsumexp(outputs, axis=1, keepdims=True)


def net_sgd(num_iters=60):
    rs = npr.RandomState(2)
    X = rs.randn(40, 4)
    labels = (X[:, 0] + X[:, 1] > 0).astype(int)
    T = np.eye(2)[labels]
    params = init_net([4, 5, 2], rs=npr.RandomState(1))
    flat0, unflatten = flatten(params)

    def objective(flat_params, i):
        return -np.sum(net_predict(unflatten(flat_params), X) * T) / len(X)

    flat = sgd(grad(objective), flat0, num_iters=num_iters, step_size=0.5)
    # the same on the structured parameters (the optimizer flattens them itself), and rmsprop
    tree_obj = lambda p, i: objective(flatten(p)[0], i)  # noqa: E731
    tree = sgd(grad(tree_obj), params, num_iters=num_iters, step_size=0.5)
    rms = rmsprop(grad(objective), flat0, num_iters=20, step_size=0.01)
    return flat, flatten(tree)[0], rms, objective(flat, 0)


@primitive
def logsumexp(x):
    max_x = np.max(x)
    return max_x + np.log(np.sum(np.exp(x - max_x)))


def logsumexp_vjp(ans, x):
    x_shape = x.shape
    return lambda g: np.full(x_shape, g) * np.exp(x - np.full(x_shape, ans))


defvjp(logsumexp, logsumexp_vjp)


@primitive
def clipped_square(x):          # its rule is not the derivative of its value (1 * g, not 2x g)
    return x ** 2


defvjp(clipped_square, lambda ans, x: lambda g: g * np.ones_like(x))
defjvp(clipped_square, lambda g, ans, x: g * np.ones_like(x))


@primitive
def weighted(x, w):
    return np.sum(w * np.sin(x))


defvjp_argnum(weighted, lambda argnum, ans, args, kwargs:
              (lambda g: g * args[1] * np.cos(args[0])) if argnum == 0
              else (lambda g: g * np.sin(args[0])))
defjvp_argnum(weighted, lambda argnum, g, ans, args, kwargs:
              np.sum(g * args[1] * np.cos(args[0])) if argnum == 0 else np.sum(g * np.sin(args[0])))


def custom_argnum_rules():
    x, w = np.array([0.2, 1.1, -0.4]), np.array([1.0, 2.0, 3.0])
    return (grad(weighted, (0, 1))(x, w), make_jvp(weighted)(x, w)(np.ones(3))[1],
            make_jvp(weighted, 1)(x, w)(np.ones(3))[1], hessian(weighted)(x, w))


def custom_primitive():
    x = np.array([0.5, -1.0, 2.0])
    f = lambda x: logsumexp(np.sin(x) * 3.0)  # noqa: E731
    g = lambda x: np.sum(np.cos(clipped_square(x)))  # noqa: E731
    return grad(f)(x), grad(g)(x), make_jvp(clipped_square)(x)(np.ones(3))[1]


def tanh_elementwise():
    x = np.linspace(-3.0, 3.0, 7)
    return elementwise_grad(np.tanh)(x), elementwise_grad(elementwise_grad(np.tanh))(x)


def quadratic_parts():
    A = np.array([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 4.0]])
    b = np.array([1.0, -1.0, 0.5])
    return A, b


def quadratic_hessian():
    A, b = quadratic_parts()
    f = lambda x: 0.5 * np.dot(x, np.dot(A, x)) + np.dot(b, x)  # noqa: E731
    x = np.array([0.3, -0.7, 1.1])
    return hessian(f)(x), grad(f)(x), value_and_grad(f)(x)


def rosenbrock(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def hvps():
    x = np.array([0.5, -0.3, 1.2, 0.8])
    v = np.array([1.0, 2.0, -1.0, 0.5])
    hvp, g = make_hvp(rosenbrock)(x)
    return hvp(v), g, hessian_tensor_product(rosenbrock)(x, v), hessian(rosenbrock)(x)


def ggn_f(w, x):
    return np.tanh(np.dot(x, w))


def ggn():
    x = npr.RandomState(3).randn(5, 3)
    w = np.array([0.2, -0.4, 0.7])
    v = np.array([1.0, 0.5, -2.0])
    loss = lambda y: np.sum(np.log1p(np.exp(y)) - 0.3 * y)  # noqa: E731
    return (make_ggnvp(ggn_f, loss, f_argnum=0)(w, x)(v), make_ggnvp(ggn_f)(w, x)(v),
            jacobian(ggn_f)(w, x), hessian(loss)(ggn_f(w, x)))


def tjp():
    x = np.array([0.4, -1.1, 0.9])
    f = lambda x: np.outer(np.sin(x), x[:2])  # noqa: E731  (3x2 output)
    V = np.array([[1.0, -2.0], [0.5, 0.0], [3.0, 1.0]])
    vjp, ans = make_vjp(f)(x)
    return tensor_jacobian_product(f)(x, V), vjp(V), jacobian(f)(x), ans


def derivs():
    return (deriv(np.sin)(0.3), deriv(lambda t: t ** 3 + np.exp(t))(1.5),
            deriv(np.tanh)(np.array([0.1, 0.2])))


def checkpointed_rnn(steps=30):
    W = npr.RandomState(4).randn(3, 3) * 0.5

    @checkpoint
    def step(h, W):
        return np.tanh(np.dot(W, h) + 0.1)

    def loss(W, h0, checkpointed):
        h = h0
        for _ in range(steps):
            h = step(h, W) if checkpointed else np.tanh(np.dot(W, h) + 0.1)
        return np.sum(h ** 2)

    h0 = np.array([0.5, -0.2, 0.1])
    return grad(loss)(W, h0, True), grad(loss)(W, h0, False), grad(loss, 1)(W, h0, True)


def argnums_and_names():
    def f(a, b, c=2.0):
        return np.sum(a * np.sin(b)) * c
    a, b = np.array([1.0, 2.0]), np.array([0.3, -0.4])
    ga, gb = grad(f, (0, 1))(a, b)
    return ga, gb, grad_named(f, "b")(a, b), expit(0.3)


def all_gradients():            # autograd's own multigrad_dict needs the retired funcsigs package
    def f(a, b, c=2.0):
        return np.sum(a * np.sin(b)) * c
    md = multigrad_dict(f)(np.array([1.0, 2.0]), np.array([0.3, -0.4]))
    return list(md), md["a"], md["b"], md["c"]


def likelihood_problem():
    rs = npr.RandomState(5)
    x = rs.randn(20)
    X = rs.randn(10, 2)
    counts = np.array([0.0, 1.0, 3.0, 2.0, 6.0])
    u = np.array([0.1, 0.4, 0.75])

    def nll(params):
        mu, log_s, log_df, L = params
        cov = np.dot(L, L.T) + 0.1 * np.eye(2)
        return -(np.sum(norm.logpdf(x, mu, np.exp(log_s))) + np.sum(norm.logcdf(x - mu))
                 + np.sum(t.logpdf(x, np.exp(log_df), mu, np.exp(log_s)))
                 + np.sum(multivariate_normal.logpdf(X, np.stack([mu, -mu]), cov))
                 + np.sum(poisson.logpmf(counts, np.exp(mu)))
                 + np.sum(gamma.logpdf(u + 1.0, np.exp(log_df))) + np.sum(beta.logpdf(u, 2.0, np.exp(log_s))))

    params = (0.3, -0.2, 1.1, np.array([[1.0, 0.0], [0.4, 0.8]]))
    return nll, params


def likelihoods():
    nll, params = likelihood_problem()
    return value_and_grad(nll)(params)
