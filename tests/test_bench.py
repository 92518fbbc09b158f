"""The benchmark suite in quick mode: outputs are produced, and a wrong derivative stops the run.

Timings are never asserted (one noisy run on a shared machine proves nothing); only that the
files exist with the expected rows and that the derivative checks bite.
"""
import json

import numpy as np
import pytest

import tapegrad.bench as bench
from tapegrad import cli
from tapegrad.bench import workloads as W
from tapegrad.bench.suite import check_derivative

FAST = ["--quick", "--tools", "tg-replay,tg-retrace,numpy", "--min-time", "0.002", "-q"]


def _labels():
    return [w.label for w in W.build(W.QUICK_SIZES)]


def test_quick_run_writes_markdown_json_and_charts(tmp_path):
    out = tmp_path / "res"
    assert cli.bench_main(FAST + ["--out", str(out)]) == 0
    md = (out / "results.md").read_text(encoding="utf-8")
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))

    labels = _labels()
    assert len(labels) >= 10
    for label in labels:
        assert f"| {label} |" in md, label
    for header in ("tapegrad replay", "tapegrad retrace", "hand NumPy", "## Issue 4 speed bars",
                   "## Details"):
        assert header in md

    # every (workload, tool) pair has a row with a median and spread, ratios to replay and numpy
    pairs = {(r["workload"], r["tool"]) for r in res["rows"]}
    assert pairs == {(label, t) for label in labels for t in ("tg-replay", "tg-retrace", "numpy")}
    for r in res["rows"]:
        d = r["deriv"]
        assert d["q1"] <= d["median"] <= d["q3"] and d["samples"] >= 3
        assert r["x_replay"] > 0 and r["x_numpy"] > 0
        assert r["extra"]["check_error"] <= 1e-8
        if r["tool"] == "tg-replay":
            assert r["extra"]["tape_bytes"] > 0 and "record" in r["setup"]
        assert r["peak_python_bytes"] >= 0
    kinds = {w["kind"] for w in res["workloads"]}
    assert kinds == set(W.KINDS)
    m = res["machine"]
    for key in ("cpu", "cores", "python", "numpy", "env", "threads"):
        assert key in m
    assert res["threads"]["speedup"] > 0
    bars = [b["bar"] for b in res["summary"]["issue4"]]
    assert any(b.startswith("worked example: replay grad / hand grad") for b in bars)
    assert any(b.startswith("cheap gradient") for b in bars)
    assert any(b.startswith("threads") for b in bars)

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    for png in ("bars.png", "rosenbrock.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


class WrongGradient(bench.HandNumpy):
    """A tool whose gradient is off by 0.1% in one entry."""
    name = "wrong"

    def hand(self, w):
        good = w.hand

        def bad(x, d):
            g = np.array(good(x, d), dtype=float)
            g[len(g) // 2] *= 1.001
            return g
        return bad


def test_wrong_gradient_tool_raises_before_timing():
    cfg = bench.Config(tools=["tg-replay", WrongGradient()], sizes=W.QUICK_SIZES,
                       workloads=["rosenbrock"], min_time=0.001, progress=None,
                       thread_check=False, memory=False)
    with pytest.raises(bench.DerivativeMismatch, match=r"DERIVATIVE MISMATCH: tool 'wrong' on "
                                                       r"workload 'rosenbrock n=10'"):
        bench.run(cfg)


def test_wrong_hand_gradient_fails_the_command_and_writes_nothing(tmp_path, monkeypatch, capsys):
    good = W.rosenbrock_hand

    def bad_hand(x, d):
        return 2.0 * good(x, d)
    monkeypatch.setattr(W, "rosenbrock_hand", bad_hand)
    out = tmp_path / "res"
    code = cli.bench_main(FAST + ["--workloads", "rosenbrock", "--out", str(out)])
    assert code == 1
    assert "DERIVATIVE MISMATCH" in capsys.readouterr().err
    assert not (out / "results.md").exists()


def test_check_derivative_catches_shape_and_nan():
    w = W.build(W.QUICK_SIZES, ["worked_example"])[0]
    ref = np.array([1.0, 2.0, 3.0])
    assert check_derivative("t", w, ref + 1e-12, ref, 1e-8) < 1e-8
    with pytest.raises(bench.DerivativeMismatch, match="shape"):
        check_derivative("t", w, ref[:2], ref, 1e-8)
    with pytest.raises(bench.DerivativeMismatch):
        check_derivative("t", w, np.array([1.0, np.nan, 3.0]), ref, 1e-8)


def test_hand_derivatives_agree_with_tapegrad():
    # the baselines themselves are correct (else the 'numpy' column would stop every run)
    import tapegrad as tg
    for w in W.build(W.QUICK_SIZES):
        f = lambda x, w=w: w.fun(x, w.data)  # noqa: E731
        if w.kind in ("grad", "ode"):
            np.testing.assert_allclose(w.hand(w.x0, w.data), tg.grad(f)(w.x0), rtol=1e-10,
                                       atol=1e-12)
        elif w.kind == "hvp":
            np.testing.assert_allclose(w.hand(w.x0, w.v, w.data), tg.hvp(f, (w.x0,), (w.v,)),
                                       rtol=1e-10, atol=1e-12)
        else:
            np.testing.assert_allclose(w.hand(w.x0, w.data), tg.jacobian(f, mode="rev")(w.x0),
                                       rtol=1e-10, atol=1e-12)


def test_options():
    assert cli.parse_sizes("10, 1e3,100000") == (10, 1000, 100000)
    with pytest.raises(Exception):
        cli.parse_sizes("1.5")
    assert cli.bench_main(["--quick", "--tools", "nonesuch", "-q"]) == 2
    args = cli.bench_parser().parse_args(["--sizes", "10,1e2"])
    cfg = bench.config_from_args(args)
    assert cfg.sizes.rosenbrock == (10, 100) and "autograd" in cfg.tools


def test_measure_pair_interleaves_and_pairs():
    from tapegrad.bench.timing import measure_pair
    calls = []
    ta, tb, ratio = measure_pair(lambda: calls.append("a"), lambda: calls.append("b"),
                                 min_time=0.01, min_samples=5)
    assert ta.samples == tb.samples >= 5
    assert ratio > 0 and np.isfinite(ratio)
    # samples alternate: a batch of a, then a batch of b, ...
    firsts = [c for i, c in enumerate(calls) if i == 0 or calls[i - 1] != c]
    assert firsts[:4] == ["a", "b", "a", "b"]


def test_gmm_hand_gradient_matches_central_differences():
    # ADBench's GMM objective: the hand-written gradient against differences of the plain
    # NumPy objective (independent of tapegrad), at a size with every term present (d = 3:
    # diagonal and strictly lower factors, K = 4 components)
    data, w0 = W._gmm_data(40, 4, 3, seed=7)
    f = lambda x: W.gmm(x, data)  # noqa: E731
    g = W.gmm_hand(w0, data)
    assert g.shape == w0.shape
    rng = np.random.default_rng(1)
    h = 1e-5
    for _ in range(5):
        v = rng.standard_normal(w0.size)
        fd = (f(w0 + h * v) - f(w0 - h * v)) / (2 * h)
        assert abs(fd - g @ v) <= 1e-6 * max(1.0, abs(fd))
    # the value: at zero parameters the mixture is K identical standard Gaussians, so the
    # likelihood term is the standard normal log-density (closed form); the Wishart prior adds
    # 0.5 gamma^2 ||exp(0)||^2 = p / 2 per component, plus ADBench's normalization
    p, K, n = 3, 4, 40
    flat = np.zeros(K + K * p + K * p * (p + 1) // 2)
    X = data["X"]
    ref = -0.5 * np.sum(X * X) - n * p * 0.5 * np.log(2 * np.pi) + 0.5 * p * K
    prior_const = data["C"][0] + n * p * 0.5 * np.log(2 * np.pi)
    assert W.gmm(flat, data) == pytest.approx(ref + prior_const, rel=1e-12)


@pytest.mark.parametrize("name", ["fft", "eig"])
def test_complex_hand_gradients_match_central_differences(name):
    # the FFT and eigenvalue losses (complex intermediates, real in and out): the hand-written
    # gradients against differences of the plain NumPy functions
    w = [w for w in W.build(W.QUICK_SIZES, names=[name])][0]
    f = lambda x: w.fun(x, w.data)  # noqa: E731
    g = w.hand(w.x0, w.data)
    rng = np.random.default_rng(2)
    h = 1e-6
    for _ in range(4):
        v = rng.standard_normal(w.x0.size)
        fd = (f(w.x0 + h * v) - f(w.x0 - h * v)) / (2 * h)
        assert abs(fd - g @ v) <= 1e-6 * max(1.0, abs(fd))
