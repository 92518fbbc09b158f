"""`tapegrad demo`: every number it prints against closed forms (timings: printed, not tested)."""
import io
import math
import re
import sys

import numpy as np
import pytest

from tapegrad import cli, numdiff

E = math.e


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    buf = io.StringIO()
    res = cli.run_demo(str(out), sizes=(), stream=buf)
    return res, buf.getvalue(), out


def test_forward_mode_dy_dx1_is_e_cubed(demo):
    res, text, _ = demo
    fwd = res["forward"]
    assert fwd["x"] == (2.0, 1.0, 1.0)
    assert fwd["dydx1"] == pytest.approx(E ** 3, rel=1e-14)
    assert fwd["closed_form"] == E ** 3
    assert f"dy/dx1 = {fwd['dydx1']:.15g}" in text and f"e^3 = {E ** 3:.15g}" in text
    # the tangent table printed is the one checked: its last slot carries dy/dx1
    assert fwd["table"][-1]["tangent"] == fwd["dydx1"]
    assert fwd["table"].text in text


def test_reverse_mode_dy_dx2_is_three_e_cubed(demo):
    res, text, _ = demo
    rev = res["reverse"]
    assert rev["dydx2"] == pytest.approx(3 * E ** 3, rel=1e-14)
    np.testing.assert_allclose(rev["gradient"], [E ** 3, 3 * E ** 3, E ** 3 + 0.5], rtol=1e-14)
    assert f"dy/dx2 = {rev['dydx2']:.15g}" in text and f"3 e^3 = {3 * E ** 3:.15g}" in text
    assert rev["table"].row("x2")["adjoint"] == rev["dydx2"]
    assert rev["table"].text in text


def test_numerical_dy_dx3_is_e_squared_with_the_textbook_step(demo):
    res, text, _ = demo
    nd = res["numdiff"]
    assert nd["x"] == (1.0, 1.0, 1.0) and nd["eps"] == 1e-4 and nd["method"] == "central"
    # h = (1 + max|x_i|) * sqrt(eps) = 2 * 0.01
    assert nd["step"] == pytest.approx(0.02, rel=1e-12)
    assert nd["step_rule"] == pytest.approx((1 + 1) * math.sqrt(1e-4), rel=1e-15)
    assert nd["dydx3"] == pytest.approx(E ** 2, rel=1e-12)
    assert nd["evaluations"] == 2
    assert f"step used h = {nd['step']:.6g}" in text
    assert f"dy/dx3 ~ {nd['dydx3']:.15g}" in text and f"e^2 = {E ** 2:.15g}" in text


def test_ad_at_sqrt_of_zero_is_shown_not_hidden(demo):
    res, text, _ = demo
    g = res["numdiff"]["ad_gradient"]
    # sqrt'(0) = inf; along x3 the chain rule multiplies it by sin(0) = 0 -> nan
    assert g[0] == np.inf and g[1] == -np.inf and np.isnan(g[2])
    assert np.isnan(res["numdiff"]["ad_dydx3_forward"])
    assert "[inf, -inf, nan]" in text and "0*inf = nan" in text


def test_dual_number_chain_rule(demo):
    res, text, _ = demo
    ch = res["chain"]
    x = ch["x"]
    closed = [(x ** 2, 2 * x),
              (math.sin(x ** 2), math.cos(x ** 2) * 2 * x),
              (math.exp(math.sin(x ** 2)), math.exp(math.sin(x ** 2)) * math.cos(x ** 2) * 2 * x)]
    assert len(ch["stages"]) == 3
    for stage, (val, dot) in zip(ch["stages"], closed):
        assert stage["value"] == pytest.approx(val, rel=1e-14)
        assert stage["tangent"] == pytest.approx(dot, rel=1e-14)
        assert stage["value_closed"] == pytest.approx(val, rel=1e-15)
        assert stage["tangent_closed"] == pytest.approx(dot, rel=1e-15)
        assert f"{stage['value']:.12g} + {stage['tangent']:.12g} eps" in text
    assert ch["derivative"] == pytest.approx(closed[-1][1], rel=1e-14)
    assert ch["derivative"] == pytest.approx(
        numdiff.derivative(cli.chain_example, x).value, rel=1e-8)


def test_graph_files_and_counts(demo):
    res, text, out = demo
    gr = res["graph"]
    dot = (out / "worked_example.dot").read_text()
    assert dot == gr["dot"] and dot.rstrip() in text
    nodes = re.findall(r"^\s*(\w+) \[label=", dot, re.M)
    edges = re.findall(r"^\s*(\w+) -> (\w+);", dot, re.M)
    assert len(nodes) == gr["nodes"] == 13 and len(edges) == gr["edges"] == 15
    assert f"{gr['nodes']} nodes" in text and f"{gr['edges']} edges" in text
    assert gr["wengert"].text in text
    if gr["png_path"] is not None:
        assert (out / "worked_example.png").read_bytes()[:4] == b"\x89PNG"
    else:
        assert "PNG not written" in text


def test_cli_demo_end_to_end(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path), "--sizes", "4", "--repeat", "1"]) == 0
    text = capsys.readouterr().out
    for head in ("1. The computational graph", "2. Forward mode", "3. Reverse mode",
                 "4. Numerical differentiation", "5. The chain rule", "6. Cost of a gradient"):
        assert head in text
    assert re.search(r"^\s+4\s+\S+ \w?s", text, re.M)          # the cost row for n = 4
    assert (tmp_path / "worked_example.dot").exists()


def test_cost_table_gradients_agree():
    rows = cli.measure_costs(sizes=(3, 7), repeat=1)
    assert [r["n"] for r in rows] == [3, 7]
    for r in rows:
        assert r["fwd_vs_rev"] < 1e-12 and r["num_vs_rev"] < 1e-6
        assert min(r["forward"], r["reverse"], r["numerical"]) > 0


def test_cli_dispatch(capsys, monkeypatch):
    assert cli.main([]) == 2
    assert "usage: tapegrad" in capsys.readouterr().out
    assert cli.main(["--help"]) == 0
    assert cli.main(["nope"]) == 2
    assert "unknown command" in capsys.readouterr().err
    assert cli.main(["demo", "--help"]) == 0
    assert cli.main(["flow", "--help"]) == 0
    monkeypatch.setitem(sys.modules, "tapegrad.bench", None)
    assert cli.main(["bench"]) == 2
    assert "not available" in capsys.readouterr().err
