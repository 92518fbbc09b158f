"""tapegrad.scipy and the scipy.special ufunc rules of tapegrad.rules.special.

One table: each row is a function of arrays (ours), SciPy's own function at the same arguments
(the reference values), a sampler of arguments inside the domain, and the derivative order to
check. Every row is checked for values against SciPy at random points, for derivatives against
central differences (tapegrad.check_grads: jvp, vjp and, for order 2, the derivatives of the
vjp and hvp), on the re-traced path (tg.grad) and on a recorded tape replayed at a new point.
"""
import re

import numpy as np
import pytest
import scipy.linalg as sl
import scipy.signal as ss
import scipy.special as sps
import scipy.stats as st

import tapegrad as tg
from tapegrad import scipy as tsc
from tapegrad.scipy import linalg as tl, signal as tsig, special as tsp, stats as ts
from tapegrad.numdiff import directional


def U(lo, hi, shape=(3,)):
    return lambda r: r.uniform(lo, hi, shape)


def N(shape=(3,), s=1.0):
    return lambda r: s * r.standard_normal(shape)


def C(value):
    return lambda r: np.asarray(value, dtype=np.float64)


def _spd(n):
    def make(r):
        a = r.standard_normal((n, n))
        return a @ a.T + n * np.eye(n)
    return make


def _lower(n):
    return lambda r: np.tril(r.standard_normal((n, n))) + 3.0 * np.eye(n)


def _simplex(k, n=None):
    def make(r):
        p = r.dirichlet(np.ones(k), n).T if n else r.dirichlet(np.ones(k))
        return p
    return make


x3 = U(0.4, 2.5)
probs = U(0.1, 0.9)
MEAN, COV = np.array([0.1, -0.2, 0.3]), np.array([[2.0, 0.3, 0.1], [0.3, 1.0, -0.2], [0.1, -0.2, 1.5]])
L4 = np.tril(np.arange(1.0, 17.0).reshape(4, 4) / 10.0) + 2.0 * np.eye(4)
S4 = L4 @ L4.T
K3 = np.array([0.5, -1.0, 0.25])
XD = _simplex(3, 4)(np.random.default_rng(5))

# (name, ours, scipy's, argument samplers, order, fd tolerance)
ROWS = [
    # ---- scipy.special ufuncs (dispatch through __array_ufunc__)
    ("gammainc", lambda x: sps.gammainc(1.7, x), lambda x: sps.gammainc(1.7, x), [x3], 2, 1e-5),
    ("gammaincc", lambda x: sps.gammaincc(0.6, x), lambda x: sps.gammaincc(0.6, x), [x3], 2, 1e-5),
    ("gammaincinv", lambda q: sps.gammaincinv(2.5, q), lambda q: sps.gammaincinv(2.5, q), [probs], 2, 1e-5),
    ("gammainccinv", lambda q: sps.gammainccinv(2.5, q), lambda q: sps.gammainccinv(2.5, q), [probs], 2, 1e-5),
    ("betainc", lambda x: sps.betainc(1.5, 2.5, x), lambda x: sps.betainc(1.5, 2.5, x), [probs], 2, 1e-5),
    ("betaincc", lambda x: sps.betaincc(1.5, 2.5, x), lambda x: sps.betaincc(1.5, 2.5, x), [probs], 2, 1e-5),
    ("betaincinv", lambda q: sps.betaincinv(1.5, 2.5, q), lambda q: sps.betaincinv(1.5, 2.5, q), [probs], 2, 1e-5),
    ("betainc broadcast a", lambda x: sps.betainc(np.array([[1.5], [3.0]]), 2.5, x),
     lambda x: sps.betainc(np.array([[1.5], [3.0]]), 2.5, x), [probs], 2, 1e-5),
    ("stdtr", lambda t: sps.stdtr(3.5, t), lambda t: sps.stdtr(3.5, t), [N()], 2, 1e-5),
    ("stdtrit", lambda p: sps.stdtrit(3.5, p), lambda p: sps.stdtrit(3.5, p), [probs], 2, 1e-5),
    ("pdtr (in m)", lambda m: sps.pdtr(3.0, m), lambda m: sps.pdtr(3.0, m), [x3], 2, 1e-5),
    ("pdtrc (in m)", lambda m: sps.pdtrc(3.0, m), lambda m: sps.pdtrc(3.0, m), [x3], 2, 1e-5),
    ("j0", sps.j0, sps.j0, [x3], 2, 1e-5),
    ("j1", sps.j1, sps.j1, [x3], 2, 1e-5),
    ("y0", sps.y0, sps.y0, [x3], 2, 1e-5),
    ("y1", sps.y1, sps.y1, [x3], 2, 1e-5),
    ("k0", sps.k0, sps.k0, [x3], 2, 1e-5),
    ("k1", sps.k1, sps.k1, [x3], 2, 1e-5),
    ("k0e", sps.k0e, sps.k0e, [x3], 2, 1e-5),
    ("k1e", sps.k1e, sps.k1e, [x3], 2, 1e-5),
    ("i0e", sps.i0e, sps.i0e, [N()], 2, 1e-5),
    ("i1e", sps.i1e, sps.i1e, [N()], 2, 1e-5),
    ("jv", lambda x: sps.jv(1.3, x), lambda x: sps.jv(1.3, x), [x3], 2, 1e-5),
    ("jn (jv)", lambda x: sps.jn(2, x), lambda x: sps.jn(2, x), [x3], 2, 1e-5),
    ("yv", lambda x: sps.yv(0.7, x), lambda x: sps.yv(0.7, x), [x3], 2, 1e-5),
    ("yn", lambda x: sps.yn(2, x), lambda x: sps.yn(2, x), [x3], 2, 1e-5),
    ("iv", lambda x: sps.iv(np.array([0.5, 1.0, 2.5]), x), lambda x: sps.iv(np.array([0.5, 1.0, 2.5]), x), [x3], 2, 1e-5),
    ("iv integer order, x < 0", lambda x: sps.iv(2.0, x), lambda x: sps.iv(2.0, x), [N()], 2, 1e-5),
    ("kv", lambda x: sps.kv(1.5, x), lambda x: sps.kv(1.5, x), [x3], 2, 1e-5),
    ("ive", lambda x: sps.ive(1.5, x), lambda x: sps.ive(1.5, x), [x3], 2, 1e-5),
    ("ive integer order, x < 0", lambda x: sps.ive(1.0, x), lambda x: sps.ive(1.0, x), [N()], 2, 1e-5),
    ("kve", lambda x: sps.kve(1.5, x), lambda x: sps.kve(1.5, x), [x3], 2, 1e-5),
    ("zeta (in q)", lambda q: sps.zeta(3.0, q), lambda q: sps.zeta(3.0, q), [x3], 2, 1e-5),
    ("erfcx", sps.erfcx, sps.erfcx, [N()], 2, 1e-5),
    ("logit", sps.logit, sps.logit, [probs], 2, 1e-5),
    ("boxcox", sps.boxcox, sps.boxcox, [x3, lambda r: np.array([0.3, 0.0, -0.5])], 2, 1e-5),
    ("boxcox small lmbda", sps.boxcox, sps.boxcox, [x3, C([1e-7, -2e-6, 1e-5])], 2, 1e-5),
    ("boxcox1p", sps.boxcox1p, sps.boxcox1p, [x3, lambda r: np.array([0.3, 0.0, -1.5])], 2, 1e-5),
    ("chdtr", lambda x: sps.chdtr(3.0, x), lambda x: sps.chdtr(3.0, x), [x3], 2, 1e-5),
    ("chdtrc", lambda x: sps.chdtrc(3.0, x), lambda x: sps.chdtrc(3.0, x), [x3], 2, 1e-5),
    ("gdtr", lambda x: sps.gdtr(1.5, 2.5, x), lambda x: sps.gdtr(1.5, 2.5, x), [x3], 2, 1e-5),
    ("gdtrc", lambda x: sps.gdtrc(1.5, 2.5, x), lambda x: sps.gdtrc(1.5, 2.5, x), [x3], 2, 1e-5),
    ("dawsn", sps.dawsn, sps.dawsn, [N()], 2, 1e-5),
    ("erfi", sps.erfi, sps.erfi, [N()], 2, 1e-5),
    ("expi", sps.expi, sps.expi, [x3], 2, 1e-5),
    ("exp1", sps.exp1, sps.exp1, [x3], 2, 1e-5),
    ("expn", lambda x: sps.expn(np.array([0, 1, 3]), x), lambda x: sps.expn(np.array([0, 1, 3]), x), [x3], 2, 1e-5),
    ("ellipk", sps.ellipk, sps.ellipk, [probs], 2, 1e-5),
    ("ellipe", sps.ellipe, sps.ellipe, [probs], 2, 1e-5),
    ("beta", sps.beta, sps.beta, [U(0.5, 3.0), U(0.5, 3.0)], 2, 1e-5),
    ("beta, negative non-integer a", sps.beta, sps.beta, [U(-0.9, -0.1), U(1.5, 3.0)], 2, 1e-5),
    ("kl_div", sps.kl_div, sps.kl_div, [x3, x3], 2, 1e-5),
    ("huber", sps.huber, sps.huber, [U(0.5, 1.5), N()], 2, 1e-5),
    ("pseudo_huber", sps.pseudo_huber, sps.pseudo_huber, [U(0.5, 1.5), N()], 2, 1e-5),
    # ---- scipy.special Python functions (tapegrad.scipy.special)
    ("polygamma", lambda x: tsp.polygamma(np.array([0, 1, 3]), x),
     lambda x: sps.polygamma(np.array([0, 1, 3]), x), [x3], 2, 1e-5),
    ("polygamma scalar n", lambda x: tsp.polygamma(2, x), lambda x: sps.polygamma(2, x), [x3], 2, 1e-5),
    ("multigammaln", lambda a: tsp.multigammaln(a, 3), lambda a: sps.multigammaln(a, 3),
     [U(1.5, 4.0, ())], 2, 1e-5),
    ("logsumexp", lambda a: tsp.logsumexp(a), lambda a: sps.logsumexp(a), [N((4,))], 2, 1e-5),
    ("logsumexp axis keepdims", lambda a: tsp.logsumexp(a, axis=1, keepdims=True),
     lambda a: sps.logsumexp(a, axis=1, keepdims=True), [N((2, 3))], 2, 1e-5),
    ("logsumexp axis tuple b", lambda a, b: tsp.logsumexp(a, axis=(0, 2), b=b),
     lambda a, b: sps.logsumexp(a, axis=(0, 2), b=b), [N((2, 3, 2)), U(0.2, 1.0, (2, 3, 2))], 2, 1e-5),
    ("logsumexp return_sign", lambda a, b: tsp.logsumexp(a, axis=0, b=b, return_sign=True)[0],
     lambda a, b: sps.logsumexp(a, axis=0, b=b, return_sign=True)[0],
     [N((3, 2)), C([[1.0, -1.0], [-0.5, 0.3], [0.2, 0.1]])], 2, 1e-5),
    ("softmax", lambda a: tsp.softmax(a, axis=0), lambda a: sps.softmax(a, axis=0), [N((3, 2))], 2, 1e-5),
    ("log_softmax", lambda a: tsp.log_softmax(a, axis=-1), lambda a: sps.log_softmax(a, axis=-1),
     [N((3, 2))], 2, 1e-5),
    # ---- scipy.stats: x, loc, scale and shapes all differentiated
    ("norm.logpdf", ts.norm.logpdf, st.norm.logpdf, [N(), N(s=0.3), U(0.5, 2)], 2, 1e-5),
    ("norm.pdf", ts.norm.pdf, st.norm.pdf, [N(), N(s=0.3), U(0.5, 2)], 2, 1e-5),
    ("norm.cdf", ts.norm.cdf, st.norm.cdf, [N(), N(s=0.3), U(0.5, 2)], 2, 1e-5),
    ("norm.logcdf", ts.norm.logcdf, st.norm.logcdf, [N(), N(s=0.3), U(0.5, 2)], 2, 1e-5),
    ("norm.sf", ts.norm.sf, st.norm.sf, [N(), N(s=0.3), U(0.5, 2)], 2, 1e-5),
    ("norm.logsf", ts.norm.logsf, st.norm.logsf, [N(), N(s=0.3), U(0.5, 2)], 2, 1e-5),
    ("norm.ppf", ts.norm.ppf, st.norm.ppf, [probs, N(s=0.3), U(0.5, 2)], 2, 1e-5),
    ("norm.isf", ts.norm.isf, st.norm.isf, [probs, N(s=0.3), U(0.5, 2)], 2, 1e-5),
    ("norm.logpdf keywords broadcast", lambda x, s: ts.norm.logpdf(x=x, scale=s, loc=0.5),
     lambda x, s: st.norm.logpdf(x=x, scale=s, loc=0.5), [N((2, 3)), U(0.5, 2, (3,))], 2, 1e-5),
    ("norm frozen", lambda x, m: ts.norm(m, 2.0).logpdf(x), lambda x, m: st.norm(m, 2.0).logpdf(x),
     [N(), N(s=0.3)], 2, 1e-5),
    ("t.logpdf", ts.t.logpdf, st.t.logpdf, [N(), U(1.5, 6), N(s=0.3), U(0.5, 2)], 2, 1e-5),
    ("t.pdf", ts.t.pdf, st.t.pdf, [N(), U(1.5, 6), N(s=0.3), U(0.5, 2)], 2, 1e-5),
    ("t.cdf", lambda x, l, s: ts.t.cdf(x, 3.5, l, s), lambda x, l, s: st.t.cdf(x, 3.5, l, s),
     [N(), N(s=0.3), U(0.5, 2)], 2, 1e-5),
    ("t.sf", lambda x, l, s: ts.t.sf(x, 3.5, l, s), lambda x, l, s: st.t.sf(x, 3.5, l, s),
     [N(), N(s=0.3), U(0.5, 2)], 2, 1e-5),
    ("t.ppf", lambda q, l, s: ts.t.ppf(q, 3.5, l, s), lambda q, l, s: st.t.ppf(q, 3.5, l, s),
     [probs, N(s=0.3), U(0.5, 2)], 2, 1e-5),
    ("t.isf", lambda q, l, s: ts.t.isf(q, 3.5, l, s), lambda q, l, s: st.t.isf(q, 3.5, l, s),
     [probs, N(s=0.3), U(0.5, 2)], 2, 1e-5),
    ("gamma.logpdf", ts.gamma.logpdf, st.gamma.logpdf, [x3, U(0.5, 3), U(-0.3, 0.0), U(0.5, 2)], 2, 1e-5),
    ("gamma.pdf", ts.gamma.pdf, st.gamma.pdf, [x3, U(0.5, 3), U(-0.3, 0.0), U(0.5, 2)], 2, 1e-5),
    ("gamma.cdf", lambda x, l, s: ts.gamma.cdf(x, 2.2, l, s), lambda x, l, s: st.gamma.cdf(x, 2.2, l, s),
     [x3, U(-0.3, 0.0), U(0.5, 2)], 2, 1e-5),
    ("gamma.sf", lambda x, s: ts.gamma.sf(x, 2.2, scale=s), lambda x, s: st.gamma.sf(x, 2.2, scale=s),
     [x3, U(0.5, 2)], 2, 1e-5),
    ("gamma.ppf", lambda q, s: ts.gamma.ppf(q, 2.2, scale=s), lambda q, s: st.gamma.ppf(q, 2.2, scale=s),
     [probs, U(0.5, 2)], 2, 1e-5),
    ("chi2.logpdf", ts.chi2.logpdf, st.chi2.logpdf, [x3, U(1.5, 5), U(-0.3, 0.0), U(0.5, 2)], 2, 1e-5),
    ("chi2.cdf", lambda x: ts.chi2.cdf(x, 3.0), lambda x: st.chi2.cdf(x, 3.0), [x3], 2, 1e-5),
    ("beta.logpdf", ts.beta.logpdf, st.beta.logpdf, [probs, U(0.5, 3), U(0.5, 3)], 2, 1e-5),
    ("beta.logpdf loc scale", ts.beta.logpdf, st.beta.logpdf,
     [U(0.2, 1.5), U(1.5, 3), U(1.5, 3), U(-0.2, 0.0), U(1.6, 2.0)], 2, 1e-5),
    ("beta.pdf", ts.beta.pdf, st.beta.pdf, [probs, U(0.5, 3), U(0.5, 3)], 2, 1e-5),
    ("beta.cdf", lambda x: ts.beta.cdf(x, 1.5, 2.5), lambda x: st.beta.cdf(x, 1.5, 2.5), [probs], 2, 1e-5),
    ("beta.ppf", lambda q: ts.beta.ppf(q, 1.5, 2.5), lambda q: st.beta.ppf(q, 1.5, 2.5), [probs], 2, 1e-5),
    ("expon.logpdf", ts.expon.logpdf, st.expon.logpdf, [x3, U(-0.3, 0.3), U(0.5, 2)], 2, 1e-5),
    ("expon.cdf", ts.expon.cdf, st.expon.cdf, [x3, U(-0.3, 0.3), U(0.5, 2)], 2, 1e-5),
    ("expon.logsf", ts.expon.logsf, st.expon.logsf, [x3, U(-0.3, 0.3), U(0.5, 2)], 2, 1e-5),
    ("expon.ppf", ts.expon.ppf, st.expon.ppf, [probs, U(-0.3, 0.3), U(0.5, 2)], 2, 1e-5),
    ("laplace.logpdf", ts.laplace.logpdf, st.laplace.logpdf, [N(), N(s=0.1), U(0.5, 2)], 2, 1e-5),
    ("laplace.cdf", ts.laplace.cdf, st.laplace.cdf, [N(), N(s=0.1), U(0.5, 2)], 2, 1e-5),
    ("laplace.ppf", ts.laplace.ppf, st.laplace.ppf, [probs, N(s=0.1), U(0.5, 2)], 2, 1e-5),
    ("cauchy.logpdf", ts.cauchy.logpdf, st.cauchy.logpdf, [N(), N(s=0.3), U(0.5, 2)], 2, 1e-5),
    ("cauchy.cdf", ts.cauchy.cdf, st.cauchy.cdf, [N(), N(s=0.3), U(0.5, 2)], 2, 1e-5),
    ("cauchy.ppf", ts.cauchy.ppf, st.cauchy.ppf, [probs, N(s=0.3), U(0.5, 2)], 2, 1e-5),
    ("logistic.logpdf", ts.logistic.logpdf, st.logistic.logpdf, [N(), N(s=0.3), U(0.5, 2)], 2, 1e-5),
    ("logistic.cdf", ts.logistic.cdf, st.logistic.cdf, [N(), N(s=0.3), U(0.5, 2)], 2, 1e-5),
    ("logistic.logsf", ts.logistic.logsf, st.logistic.logsf, [N(), N(s=0.3), U(0.5, 2)], 2, 1e-5),
    ("poisson.logpmf (in mu)", lambda mu: ts.poisson.logpmf(np.array([0.0, 2.0, 5.0]), mu),
     lambda mu: st.poisson.logpmf(np.array([0.0, 2.0, 5.0]), mu), [x3], 2, 1e-5),
    ("poisson.pmf loc", lambda mu: ts.poisson.pmf(np.array([1.0, 3.0, 6.0]), mu, loc=1),
     lambda mu: st.poisson.pmf(np.array([1.0, 3.0, 6.0]), mu, loc=1), [x3], 2, 1e-5),
    ("poisson.cdf (in mu)", lambda mu: ts.poisson.cdf(np.array([0.0, 2.5, 5.0]), mu),
     lambda mu: st.poisson.cdf(np.array([0.0, 2.5, 5.0]), mu), [x3], 2, 1e-5),
    ("multivariate_normal.logpdf", ts.multivariate_normal.logpdf, st.multivariate_normal.logpdf,
     [N((4, 3)), C(MEAN), C(COV)], 2, 1e-5),
    ("multivariate_normal.logpdf one x", ts.multivariate_normal.logpdf, st.multivariate_normal.logpdf,
     [N((3,)), C(MEAN), C(COV)], 2, 1e-5),
    ("multivariate_normal.logpdf batch", ts.multivariate_normal.logpdf, st.multivariate_normal.logpdf,
     [N((2, 2, 3)), C(MEAN), C(COV)], 2, 1e-5),
    ("multivariate_normal.pdf", ts.multivariate_normal.pdf, st.multivariate_normal.pdf,
     [N((4, 3)), C(MEAN), C(COV)], 2, 1e-5),
    ("multivariate_normal diagonal cov", ts.multivariate_normal.logpdf, st.multivariate_normal.logpdf,
     [N((4, 3)), C(MEAN), U(0.5, 2.0)], 2, 1e-5),
    ("multivariate_normal scalar cov, d=1", lambda x, c: ts.multivariate_normal.logpdf(x, cov=c),
     lambda x, c: st.multivariate_normal.logpdf(x, cov=c), [N((4,)), U(0.5, 2.0, ())], 2, 1e-5),
    ("multivariate_normal frozen", lambda x, m: ts.multivariate_normal(m, COV).logpdf(x),
     lambda x, m: st.multivariate_normal(m, COV).logpdf(x), [N((4, 3)), C(MEAN)], 2, 1e-5),
    ("dirichlet.logpdf (in alpha)", lambda a: ts.dirichlet.logpdf(XD, a), lambda a: st.dirichlet.logpdf(XD, a),
     [U(0.5, 3.0)], 2, 1e-5),
    ("dirichlet.logpdf K-1 x of shape (K-1, N)", ts.dirichlet.logpdf, st.dirichlet.logpdf,
     [C(XD[:2] * 0.9), U(0.5, 3.0)], 2, 1e-5),
    ("dirichlet.pdf K-1", lambda x, a: ts.dirichlet.pdf(x, a), lambda x, a: st.dirichlet.pdf(x, a),
     [C([0.2, 0.3]), U(0.5, 3.0)], 2, 1e-5),
    # ---- scipy.linalg
    ("solve_triangular lower", lambda a, b: tl.solve_triangular(a, b, lower=True),
     lambda a, b: sl.solve_triangular(a, b, lower=True), [_lower(4), N((4, 2))], 2, 1e-5),
    ("solve_triangular upper vector", lambda a, b: tl.solve_triangular(a, b),
     lambda a, b: sl.solve_triangular(a, b), [lambda r: _lower(4)(r).T, N((4,))], 2, 1e-5),
    ("solve_triangular trans=1", lambda a, b: tl.solve_triangular(a, b, trans=1, lower=True),
     lambda a, b: sl.solve_triangular(a, b, trans=1, lower=True), [_lower(4), N((4, 2))], 2, 1e-5),
    ("solve_triangular trans='T' upper", lambda a, b: tl.solve_triangular(a, b, trans="T"),
     lambda a, b: sl.solve_triangular(a, b, trans="T"), [lambda r: _lower(4)(r).T, N((4,))], 2, 1e-5),
    ("solve_triangular trans='C' unit", lambda a, b: tl.solve_triangular(a, b, trans="C", lower=True, unit_diagonal=True),
     lambda a, b: sl.solve_triangular(a, b, trans="C", lower=True, unit_diagonal=True), [_lower(4), N((4, 2))], 2, 1e-5),
    ("solve_triangular other triangle ignored", lambda a, b: tl.solve_triangular(a, b, lower=True),
     lambda a, b: sl.solve_triangular(a, b, lower=True), [lambda r: _lower(3)(r) + np.triu(r.random((3, 3)), 1), N((3,))], 2, 1e-5),
    ("cholesky upper", lambda a: tl.cholesky(a), lambda a: sl.cholesky(a), [_spd(3)], 2, 1e-5),
    ("cholesky lower", lambda a: tl.cholesky(a, lower=True), lambda a: sl.cholesky(a, lower=True), [_spd(3)], 2, 1e-5),
    ("cho_solve lower", lambda a, b: tl.cho_solve(tl.cho_factor(a, lower=True), b),
     lambda a, b: sl.cho_solve(sl.cho_factor(a, lower=True), b), [_spd(3), N((3, 2))], 2, 1e-5),
    ("cho_solve upper", lambda a, b: tl.cho_solve(tl.cho_factor(a), b),
     lambda a, b: sl.cho_solve(sl.cho_factor(a), b), [_spd(3), N((3,))], 2, 1e-5),
    ("cho_solve of a factor", lambda c, b: tl.cho_solve((c, True), b),
     lambda c, b: sl.cho_solve((c, True), b), [_lower(3), N((3,))], 2, 1e-5),
    ("solve", tl.solve, sl.solve, [_spd(3), N((3, 2))], 2, 1e-5),
    ("solve assume_a=pos", lambda a, b: tl.solve(a, b, assume_a="pos"),
     lambda a, b: sl.solve(a, b, assume_a="pos"), [_spd(3), N((3,))], 2, 1e-5),
    ("inv", tl.inv, sl.inv, [_spd(3)], 2, 1e-5),
    ("det", tl.det, sl.det, [_spd(3)], 2, 1e-5),
    # ---- scipy.signal
    ("convolve full", tsig.convolve, ss.convolve, [N((7,)), N((3,))], 2, 1e-5),
    ("convolve same", lambda a, b: tsig.convolve(a, b, "same"), lambda a, b: ss.convolve(a, b, "same"),
     [N((7,)), N((4,))], 2, 1e-5),
    ("convolve same, in2 larger", lambda a, b: tsig.convolve(a, b, mode="same"),
     lambda a, b: ss.convolve(a, b, mode="same"), [N((3,)), N((6,))], 2, 1e-5),
    ("convolve valid", lambda a, b: tsig.convolve(a, b, "valid"), lambda a, b: ss.convolve(a, b, "valid"),
     [N((7,)), N((3,))], 2, 1e-5),
    ("convolve valid swapped", lambda a, b: tsig.convolve(a, b, "valid"),
     lambda a, b: ss.convolve(a, b, "valid"), [N((3,)), N((7,))], 2, 1e-5),
    ("convolve 2-d same", lambda a, b: tsig.convolve(a, b, "same"), lambda a, b: ss.convolve(a, b, "same"),
     [N((5, 4)), N((2, 3))], 2, 1e-5),
    ("convolve 3-d valid fft", lambda a, b: tsig.convolve(a, b, "valid", method="fft"),
     lambda a, b: ss.convolve(a, b, "valid", method="fft"), [N((4, 3, 3)), N((2, 2, 1))], 2, 1e-5),
    ("convolve constant kernel", lambda a: tsig.convolve(a, K3, "same"), lambda a: ss.convolve(a, K3, "same"),
     [N((6,))], 2, 1e-5),
    ("correlate full", tsig.correlate, ss.correlate, [N((6,)), N((3,))], 2, 1e-5),
    ("correlate same 2-d", lambda a, b: tsig.correlate(a, b, "same"), lambda a, b: ss.correlate(a, b, "same"),
     [N((4, 5)), N((3, 2))], 2, 1e-5),
    ("correlate valid swapped", lambda a, b: tsig.correlate(a, b, "valid"),
     lambda a, b: ss.correlate(a, b, "valid"), [N((3,)), N((6,))], 2, 1e-5),
    ("fftconvolve axes", lambda a, b: tsig.fftconvolve(a, b, "full", axes=1),
     lambda a, b: ss.fftconvolve(a, b, "full", axes=1), [N((3, 6)), N((1, 4))], 2, 1e-5),
    ("fftconvolve same axes -1", lambda a, b: tsig.fftconvolve(a, b, "same", axes=[-1]),
     lambda a, b: ss.fftconvolve(a, b, "same", axes=[-1]), [N((2, 3, 6)), N((2, 1, 3))], 2, 1e-5),
    ("oaconvolve valid axes 0", lambda a, b: tsig.oaconvolve(a, b, "valid", axes=0),
     lambda a, b: ss.oaconvolve(a, b, "valid", axes=0), [N((7, 2)), N((3, 2))], 2, 1e-5),
    ("convolve2d", lambda a, b: tsig.convolve2d(a, b, "same"), lambda a, b: ss.convolve2d(a, b, "same"),
     [N((4, 4)), N((3, 2))], 2, 1e-5),
    ("correlate2d", lambda a, b: tsig.correlate2d(a, b, "valid"), lambda a, b: ss.correlate2d(a, b, "valid"),
     [N((4, 4)), N((3, 2))], 2, 1e-5),
]
ROWS += [
    ("gamma.isf", lambda q, s: ts.gamma.isf(q, 2.2, scale=s), lambda q, s: st.gamma.isf(q, 2.2, scale=s),
     [probs, U(0.5, 2)], 2, 1e-5),
    ("chi2.pdf", ts.chi2.pdf, st.chi2.pdf, [x3, U(1.5, 5), U(-0.3, 0.0), U(0.5, 2)], 2, 1e-5),
    ("chi2.sf", lambda x, s: ts.chi2.sf(x, 3.0, scale=s), lambda x, s: st.chi2.sf(x, 3.0, scale=s),
     [x3, U(0.5, 2)], 2, 1e-5),
    ("chi2.ppf", lambda q: ts.chi2.ppf(q, 3.0), lambda q: st.chi2.ppf(q, 3.0), [probs], 2, 1e-5),
    ("chi2.isf", lambda q: ts.chi2.isf(q, 3.0), lambda q: st.chi2.isf(q, 3.0), [probs], 2, 1e-5),
    ("beta.sf", lambda x: ts.beta.sf(x, 1.5, 2.5), lambda x: st.beta.sf(x, 1.5, 2.5), [probs], 2, 1e-5),
    ("poisson.sf (in mu)", lambda mu: ts.poisson.sf(np.array([0.0, 2.5, 5.0]), mu),
     lambda mu: st.poisson.sf(np.array([0.0, 2.5, 5.0]), mu), [x3], 2, 1e-5),
    ("cho_factor", lambda a: np.tril(tl.cho_factor(a, lower=True)[0]),
     lambda a: np.tril(sl.cho_factor(a, lower=True)[0]), [_spd(3)], 2, 1e-5),
    ("polygamma at a scalar", lambda x: tsp.polygamma(1, x), lambda x: sps.polygamma(1, x),
     [U(0.5, 2.0, ())], 2, 1e-5),
    ("jv at a scalar", lambda x: sps.jv(0.5, x), lambda x: sps.jv(0.5, x), [U(0.5, 2.0, ())], 2, 1e-5),
]
# every method of the location-scale families, at x, loc, scale
for _d in ("expon", "laplace", "cauchy", "logistic"):
    for _m in getattr(ts, _d)._methods:
        _x = probs if _m in ("ppf", "isf") else (x3 if _d == "expon" else N())
        ROWS.append((f"{_d}.{_m} (x, loc, scale)", getattr(getattr(ts, _d), _m),
                     getattr(getattr(st, _d), _m), [_x, U(-0.3, 0.3), U(0.5, 2)], 2, 1e-5))
IDS = [r[0] for r in ROWS]


def _args(row, seed):
    r = np.random.default_rng(seed)
    return tuple(make(r) for make in row[3])


def _traced_value(f, args):
    """f's value computed on tracers (the jvp's primal output)."""
    out, _ = tg.jvp(f, args, tuple(np.zeros_like(a) for a in args))
    return np.asarray(out)


def test_table_covers_the_package():
    """every function of tapegrad.scipy.{stats,linalg,signal} has a row"""
    names = " ".join(IDS)
    for fq in tsc.covered():
        mod, name = fq.split(".")[1:3] if fq.count(".") == 2 else (fq.split(".")[1], ".".join(fq.split(".")[2:]))
        if mod == "special" and name not in ("logsumexp", "softmax", "log_softmax", "polygamma",
                                            "multigammaln"):
            continue
        assert name in names, f"{fq} has no row in tests/test_scipy.py"


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_values_match_scipy(row):
    for seed in (0, 1):
        args = _args(row, seed)
        ref = np.asarray(row[2](*args), dtype=np.float64)
        ours = _traced_value(row[1], args)
        assert ours.shape == ref.shape, (ours.shape, ref.shape)
        np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)
        # untraced, ours is SciPy's own
        np.testing.assert_allclose(np.asarray(row[1](*args)), ref, rtol=1e-14, atol=0)


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_derivatives_match_finite_differences(row):
    args = _args(row, 2)
    tg.check_grads(row[1], *args, modes=("fwd", "rev"), order=row[4], rtol=row[5], atol=row[5])


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_recorded_tape_replays_gradient_and_hvp(row):
    """recorded once at one point, replayed at another: gradient equal to the re-traced one and
    to central differences; hvp equal to the re-traced one."""
    f = row[1]
    a0, a1 = _args(row, 3), _args(row, 4)
    w = np.random.default_rng(9).standard_normal(np.shape(row[2](*a0)))

    def g(*a):
        return np.sum(w * f(*a))
    rec = tg.record(g, *a0)
    argnums = tuple(range(len(a1)))
    gr = tg.grad(g, argnums=argnums)(*a1)
    grec = rec.grad(*a1)
    grec = grec if isinstance(grec, tuple) else (grec,)
    for k, (x, y) in enumerate(zip(grec, gr)):
        np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-11)
        v = np.random.default_rng(k).standard_normal(np.shape(a1[k]))

        def gk(t, k=k):
            return g(*(a1[:k] + (t,) + a1[k + 1:]))
        fd = directional(lambda t: np.atleast_1d(gk(t)), np.asarray(a1[k], dtype=np.float64), v, order=4).value
        np.testing.assert_allclose(np.sum(x * v), fd, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rec(*a1), np.sum(w * np.asarray(row[2](*a1))), rtol=1e-10, atol=1e-12)
    if len(a1) == 1:
        v = np.random.default_rng(7).standard_normal(np.shape(a1[0]))
        np.testing.assert_allclose(rec.hvp(a1[0], v), tg.hvp(g, (a1[0],), (v,)), rtol=1e-8, atol=1e-10)


def test_nested_grad_of_special_functions():
    """third derivatives by nesting grad: the derivative rules are traced again"""
    x = 1.3
    d2 = tg.grad(tg.grad(lambda x: sps.jv(1.5, x)))(x)
    np.testing.assert_allclose(d2, sps.jvp(1.5, x, 2), rtol=1e-10)
    d3 = tg.grad(tg.grad(tg.grad(lambda x: sps.kv(0.5, x))))(x)
    np.testing.assert_allclose(d3, sps.kvp(0.5, x, 3), rtol=1e-9)
    d2 = tg.grad(tg.grad(lambda x: sps.gammainc(2.5, x)))(x)
    np.testing.assert_allclose(d2, (1.5 / x - 1.0) * np.exp(1.5 * np.log(x) - x - sps.gammaln(2.5)),
                               rtol=1e-10)


def test_singular_multivariate_normal_on_its_support():
    """allow_singular=True: SciPy's pseudo-determinant, -inf off the support, and the derivative
    along the support (x = mean + B u) against central differences in u"""
    r = np.random.default_rng(0)
    B = r.standard_normal((3, 2))
    cov, mean = B @ B.T, np.array([0.1, -0.2, 0.3])
    u = r.standard_normal((4, 2))
    X = u @ B.T + mean
    f = lambda x: ts.multivariate_normal.logpdf(x, mean, cov, allow_singular=True)  # noqa: E731
    np.testing.assert_allclose(_traced_value(f, (X,)),
                               st.multivariate_normal.logpdf(X, mean, cov, allow_singular=True), rtol=1e-9)
    off = X + np.array([1.0, 0.0, 0.0])
    assert np.all(_traced_value(f, (off,)) == -np.inf)
    tg.check_grads(lambda u: f(u @ B.T + mean), u, modes=("fwd", "rev"), order=2, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ bad input
def _traced(f, *args):
    """f's value at args with every argument traced (through a jvp)."""
    return _traced_value(f, tuple(np.asarray(a, dtype=np.float64) for a in args))


def test_bad_parameters_give_scipys_nan_and_inf():
    x = np.array([-0.5, 0.5, 1.5])
    for ours, ref, args in [
            (ts.norm.logpdf, st.norm.logpdf, (x, 0.0, np.array([1.0, -1.0, 0.0]))),
            (ts.norm.cdf, st.norm.cdf, (x, 0.0, np.array([1.0, -1.0, 0.0]))),
            (ts.norm.ppf, st.norm.ppf, (np.array([-0.1, 0.5, 1.2]), 0.0, 1.0)),
            (ts.gamma.logpdf, st.gamma.logpdf, (x, np.array([1.5, -1.0, 2.0]))),
            (ts.gamma.logpdf, st.gamma.logpdf, (np.array([0.0, 0.0, 0.0]), np.array([0.5, 1.0, 2.0]))),
            (ts.beta.logpdf, st.beta.logpdf, (x, 2.0, 3.0)),
            (ts.beta.pdf, st.beta.pdf, (x, np.array([2.0, 0.0, 2.0]), 3.0)),
            (ts.expon.logpdf, st.expon.logpdf, (x, 0.0, 2.0)),
            (ts.t.logpdf, st.t.logpdf, (x, np.array([3.0, -1.0, 0.0]))),
            (ts.poisson.logpmf, st.poisson.logpmf, (np.array([-1.0, 2.5, 3.0]), np.array([1.0, 1.0, -1.0]))),
            (ts.chi2.logpdf, st.chi2.logpdf, (x, 3.0)),
            (sps.kl_div, sps.kl_div, (np.array([0.0, -1.0, 1.0]), np.array([1.0, 1.0, -1.0]))),
            (sps.huber, sps.huber, (np.array([-1.0, 0.5, 1.0]), np.array([0.3, 2.0, 0.5]))),
            (sps.pseudo_huber, sps.pseudo_huber, (np.array([-1.0, 0.0, 1.0]), np.array([0.3, 2.0, 0.5]))),
            (lambda x: sps.gammainc(1.5, x), lambda x: sps.gammainc(1.5, x), (x,)),
            (lambda x: sps.betainc(1.5, 2.0, x), lambda x: sps.betainc(1.5, 2.0, x), (x,)),
            (sps.boxcox, sps.boxcox, (x, np.array([0.5, 0.0, -1.0])))]:
        with np.errstate(all="ignore"):
            np.testing.assert_array_equal(np.isnan(_traced(ours, *args)), np.isnan(ref(*args)))
            np.testing.assert_allclose(_traced(ours, *args), ref(*args), rtol=1e-10)


def test_bad_shapes_and_matrices_raise_clear_errors():
    X = np.zeros((2, 3))
    mvn = ts.multivariate_normal.logpdf
    with pytest.raises(ValueError, match="must be square"):
        _traced(lambda x: mvn(x, np.zeros(3), np.ones((3, 2))), X)
    with pytest.raises(ValueError, match="Dimension mismatch"):
        _traced(lambda x: mvn(x, np.zeros(3), np.eye(2)), X)
    with pytest.raises(ValueError, match="at most two-dimensional"):
        _traced(lambda x: mvn(x, np.zeros(3), np.ones((1, 3, 3))), X)
    with pytest.raises(ValueError, match="last axis has length 3"):
        _traced(lambda x: mvn(x, np.zeros(2), np.eye(2)), X)
    with pytest.raises(ValueError, match="positive semidefinite"):
        _traced(lambda x: mvn(x, np.zeros(3), -np.eye(3)), X)
    with pytest.raises(np.linalg.LinAlgError, match="allow_singular"):
        _traced(lambda x: mvn(x, np.zeros(3), np.diag([1.0, 1.0, 0.0])), X)
    with pytest.raises(ValueError, match="normal simplex"):
        _traced(lambda a: ts.dirichlet.logpdf(np.array([0.2, 0.2, 0.2]), a), np.ones(3))
    with pytest.raises(ValueError, match="greater than 0"):
        _traced(lambda x: ts.dirichlet.logpdf(x, np.array([1.0, -1.0, 1.0])), np.array([0.2, 0.3, 0.5]))
    with pytest.raises(ValueError, match=r"shapes of a \(3, 3\) and b \(2,\)"):
        _traced(lambda b: tl.solve_triangular(np.eye(3), b), np.ones(2))
    with pytest.raises(ValueError, match="square matrix"):
        _traced(lambda a: tl.solve_triangular(a, np.ones(3)), np.ones((3, 2)))
    with pytest.raises(tg.TapegradValueError, match="trans='X'"):
        _traced(lambda b: tl.solve_triangular(np.eye(3), b, trans="X"), np.ones(3))
    with pytest.raises(sl.LinAlgError, match="cholesky"):
        _traced(lambda a: tl.cholesky(a), -np.eye(2))
    with pytest.raises(ValueError, match="at least as large as the other in every dimension"):
        _traced(lambda a: tsig.convolve(a, np.ones((2, 5)), "valid"), np.ones((3, 3)))
    with pytest.raises(ValueError, match="same dimensionality"):
        _traced(lambda a: tsig.convolve(a, np.ones((2, 2))), np.ones(3))
    with pytest.raises(ValueError, match="acceptable mode"):
        _traced(lambda a: tsig.convolve(a, np.ones(2), "middle"), np.ones(3))
    with pytest.raises(ValueError, match="off the convolution axes"):
        _traced(lambda a: tsig.fftconvolve(a, np.ones((3, 2)), axes=1), np.ones((2, 4)))
    with pytest.raises(NotImplementedError, match="boundary='wrap'"):
        _traced(lambda a: tsig.convolve2d(a, np.ones((2, 2)), boundary="wrap"), np.ones((3, 3)))
    with pytest.raises(tg.TapegradTypeError, match="missing required argument"):
        _traced(lambda x: ts.t.logpdf(x), np.ones(2))
    with pytest.raises(tg.TapegradTypeError, match="unexpected keyword argument 'sigma'"):
        _traced(lambda x: ts.norm.logpdf(x, sigma=2.0), np.ones(2))
    with pytest.raises(ValueError, match="positive integer"):
        _traced(lambda a: tsp.multigammaln(a, 1.5), np.full(2, 3.0))
    with pytest.raises(tg.TapegradValueError, match="non-negative integers"):
        _traced(lambda x: tsp.polygamma(1.5, x), np.ones(2))


@pytest.mark.parametrize("f, arg", [
    (lambda a: sps.gammainc(a, 1.5), "with respect to a \\(argument 0\\)"),
    (lambda a: sps.gammaincc(a, 1.5), "with respect to a \\(argument 0\\)"),
    (lambda a: sps.betainc(a, 2.0, 0.3), "betainc: .* with respect to a \\(argument 0\\)"),
    (lambda b: sps.betainc(2.0, b, 0.3), "betainc: .* with respect to b \\(argument 1\\)"),
    (lambda v: sps.jv(v, 1.5), "jv: .* with respect to v"),
    (lambda v: sps.kv(v, 1.5), "kv: .* with respect to v"),
    (lambda df: sps.stdtr(df, 0.3), "stdtr: .* with respect to df"),
    (lambda df: ts.t.cdf(0.3, df), "stdtr: .* with respect to df"),
    (lambda a: ts.gamma.cdf(0.3, a), "gammainc: .* with respect to a"),
    (lambda x: sps.zeta(x), "zeta: .* with respect to x"),
    (lambda x: sps.zeta(x, 2.0), "zeta: .* with respect to x"),
    (lambda n: tsp.polygamma(n, 2.0), "polygamma: no derivative with respect to n"),
])
def test_parameters_without_a_rule_raise_naming_the_argument(f, arg):
    with pytest.raises(tg.TapegradTypeError, match=arg):
        tg.grad(f)(2.5)


def test_plain_arguments_are_scipys_own():
    x = np.array([0.3, 1.2])
    assert np.array_equal(ts.norm.logpdf(x, 0.1, 2.0), st.norm.logpdf(x, 0.1, 2.0))
    with pytest.raises(ValueError):
        ts.multivariate_normal.logpdf(x, np.zeros(2), np.ones((2, 3)))
    assert tl.cho_factor(np.eye(2))[1] is False
    assert np.array_equal(tsig.convolve(x, x), ss.convolve(x, x))


def test_autograd_dropin_reexports_tapegrad_scipy():
    from tapegrad.autograd.scipy import stats as ags, special as agsp, linalg as agl
    assert ags.norm is ts.norm and ags.t is ts.t and ags.multivariate_normal is ts.multivariate_normal
    assert agsp.logsumexp is tsp.logsumexp is tg.logsumexp and agsp.polygamma is tsp.polygamma
    assert agl.solve_triangular is tl.solve_triangular


def test_coverage_counts():
    """what tapegrad.scipy names (documented in docs/scipy_support.md)"""
    names = tsc.covered()
    assert len(names) == len(set(names))
    for must in ("scipy.special.logsumexp", "scipy.special.gammainc", "scipy.special.betainc",
                 "scipy.special.jv", "scipy.special.kv", "scipy.special.boxcox", "scipy.stats.norm.ppf",
                 "scipy.stats.t.cdf", "scipy.stats.multivariate_normal.logpdf",
                 "scipy.stats.dirichlet.logpdf", "scipy.linalg.solve_triangular",
                 "scipy.linalg.cho_solve", "scipy.signal.convolve", "scipy.signal.fftconvolve"):
        assert must in names, must


def test_tapes_with_the_new_rules_serialize():
    """special_param, solve_triangular and convolve rules rebuild from bytes by name and params"""
    r = np.random.default_rng(3)
    A = np.tril(r.standard_normal((3, 3))) + 3 * np.eye(3)

    def f(x):
        y = sps.gammainc(1.5, x * x + 0.1) + sps.jv(0.5, x + 2.0)
        z = tl.solve_triangular(A, y, lower=True, unit_diagonal=True)
        return np.sum(tsig.fftconvolve(z, np.array([1.0, -0.5]), "same") ** 2)
    x0, x1 = r.uniform(0.2, 1.0, 3), r.uniform(0.2, 1.0, 3)
    rec = tg.record(f, x0)
    loaded = tg.load(rec.to_bytes())
    np.testing.assert_allclose(loaded.grad(x1), tg.grad(f)(x1), rtol=1e-12)
    v = np.ones(3)
    np.testing.assert_allclose(loaded.hvp(x1, v), tg.hvp(f, (x1,), (v,)), rtol=1e-10)


def test_every_special_rule_has_a_row():
    """each ufunc tapegrad.rules.special registers is exercised: a table row calls it (by name),
    or (zeta in its exponent) a test of its refusal"""
    from tapegrad.rules import special as rs
    import inspect
    src = inspect.getsource(inspect.getmodule(test_every_special_rule_has_a_row))
    for u in rs.REGISTERED:
        name = {"_zeta": "zeta", "_riemann_zeta": "zeta"}.get(u.__name__, u.__name__)
        assert re.search(rf"sps\.{name}\b", src), f"scipy.special.{name} has no row in tests/test_scipy.py"


def test_a_tape_with_the_new_rules_loads_in_a_fresh_process(tmp_path):
    """the rules are registered by ``import tapegrad`` alone (tapegrad.scipy is imported lazily)"""
    import subprocess
    import sys

    def f(x):
        y = tl.solve_triangular(np.eye(3) + np.tril(np.ones((3, 3)), -1), sps.kv(1.5, x), lower=True)
        return np.sum(tsig.convolve(y, np.array([0.5, 2.0])) ** 2)
    x = np.array([0.5, 1.0, 1.5])
    rec = tg.record(f, x)
    path = tmp_path / "tape.bin"
    path.write_bytes(rec.to_bytes())
    code = ("import sys, numpy as np, tapegrad as tg\n"
            "assert 'tapegrad.scipy' not in sys.modules\n"
            f"r = tg.load(open({str(path)!r}, 'rb').read())\n"
            "print(repr(r.grad(np.array([0.6, 1.1, 1.7])).tolist()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    np.testing.assert_allclose(eval(out.stdout), tg.grad(f)(np.array([0.6, 1.1, 1.7])), rtol=1e-12)


@pytest.mark.parametrize("dist, shapes", [("norm", ()), ("t", (3.0,)), ("gamma", (2.0,)), ("chi2", (3.0,)),
                                          ("beta", (2.0, 3.0)), ("expon", ()), ("laplace", ()),
                                          ("cauchy", ()), ("logistic", ())])
def test_quantiles_at_the_ends_and_outside_match_scipy(dist, shapes):
    """ppf/isf at q = 0 and 1 are the support's ends (loc + scale * end), nan outside [0, 1]"""
    q = np.array([0.0, 1.0, 0.3, -0.1, 1.1])
    for m in ("ppf", "isf"):
        if m not in getattr(ts, dist)._methods:
            continue
        f = getattr(getattr(ts, dist), m)
        ours = _traced_value(lambda q: f(q, *shapes, 0.5, 2.0), (q,))
        np.testing.assert_allclose(ours, getattr(getattr(st, dist), m)(q, *shapes, 0.5, 2.0), rtol=1e-12)


def test_t_with_infinite_df_is_the_normal():
    x = np.array([0.5, -1.0])
    ours = _traced_value(lambda x: ts.t.logpdf(x, np.array([np.inf, 3.0])), (x,))
    np.testing.assert_allclose(ours, st.t.logpdf(x, np.array([np.inf, 3.0])), rtol=1e-12)
    np.testing.assert_allclose(tg.grad(lambda x: np.sum(ts.t.logpdf(x, np.inf)))(x), -x, rtol=1e-12)


def test_multivariate_normal_gradient_in_cov_reads_the_lower_triangle():
    """as SciPy's eigh, cov's lower triangle is read: the gradient is that function's (zero above
    the diagonal, twice the symmetric gradient below it), and its symmetric part, (G + G^T) / 2,
    is the symmetric gradient -(S^-1 - S^-1 d d^T S^-1) / 2"""
    x = np.array([0.3, -0.4, 1.0])
    g = tg.grad(lambda c: ts.multivariate_normal.logpdf(x, MEAN, c))(COV)
    Si = np.linalg.inv(COV)
    d = x - MEAN
    sym = -0.5 * (Si - Si @ np.outer(d, d) @ Si)
    np.testing.assert_allclose(np.triu(g, 1), 0.0, atol=0)
    np.testing.assert_allclose(0.5 * (g + g.T), sym, rtol=1e-10)
