"""tapegrad.inspect: Wengert list, tangent and adjoint tables, DOT export, pictures.

The worked example's tables are checked slot by slot against closed forms and against the
compiled sweeps' own buffers; the DOT text is parsed back and counted against the tape.
"""
import math
import re
import sys

import numpy as np
import pytest

import tapegrad as tg
from tapegrad import inspect as tgi
from tapegrad._core import sweeps
from tapegrad._core.tape import OPNAMES, FLAG_A, FLAG_B, FLAG_C
from tapegrad.engine.reference import operand_sizes

E = math.e
NODE_RE = re.compile(r"^\s*(\w+) \[label=", re.M)
EDGE_RE = re.compile(r"^\s*(\w+) -> (\w+);", re.M)


def worked(x):
    x1, x2, x3 = x[0], x[1], x[2]
    return np.exp(x1 + x2 ** 3) * x3 + np.sqrt(x3 * np.sin(np.pi / 2 * (x1 - x2)))


X0 = np.array([2.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def rec():
    return tg.record(worked, X0)


# values, tangents along e1 and adjoints of every slot at (2, 1, 1), by hand
# (cos(pi/2) is 6e-17 in floating point, so slots behind it are ~1e-16, not exactly 0)
CLOSED = {
    #      value          x1-tangent    adjoint
    "x1": (2.0, 1.0, E ** 3),
    "x2": (1.0, 0.0, 3 * E ** 3),
    "x3": (1.0, 0.0, E ** 3 + 0.5),
    "v1": (1.0, 0.0, E ** 3),
    "v2": (3.0, 1.0, E ** 3),
    "v3": (E ** 3, E ** 3, 1.0),
    "v4": (E ** 3, E ** 3, 1.0),
    "v5": (1.0, 1.0, 0.0),
    "v6": (math.pi / 2, math.pi / 2, 0.0),
    "v7": (1.0, 0.0, 0.5),
    "v8": (1.0, 0.0, 0.5),
    "v9": (1.0, 0.0, 1.0),
    "v10": (E ** 3 + 1, E ** 3, 1.0),
}
OPERATIONS = ["input", "input", "input", "x2 ** 3", "x1 + v1", "exp(v2)", "v3 * x3", "x1 - x2",
              "pi/2 * v5", "sin(v6)", "x3 * v7", "sqrt(v8)", "v4 + v9"]


def test_wengert_list_reads_like_the_textbook(rec):
    table = rec.wengert()
    assert [r["slot"] for r in table] == list(CLOSED)
    assert [r["operation"] for r in table] == OPERATIONS
    assert table.row("v2")["inputs"] == ["x1", "v1"]
    assert table.row("v10")["output"] and not table.row("v9")["output"]
    for r in table:
        assert r["value"] == pytest.approx(CLOSED[r["slot"]][0], rel=1e-14, abs=1e-15)
    text = str(table)
    assert "v6    pi/2 * v5" in text and "y = v10" in text
    assert text.splitlines()[1].split() == ["slot", "operation", "inputs", "value"]


def test_wengert_values_are_the_forward_sweep(rec):
    x = np.array([0.3, -0.2, 1.7])
    w = sweeps.forward(rec.tape, x)
    for r in tgi.wengert(rec, x):
        np.testing.assert_array_equal(r["value"], w[r["offset"]:r["offset"] + r["size"]])
    assert tgi.wengert(rec, x).row("v10")["value"] == pytest.approx(worked(x), rel=1e-14)


def test_trace_and_scalar_arguments():
    table = tg.trace(lambda a, b: a * np.sin(b), 1.5, 2.0)
    assert [r["slot"] for r in table] == ["x1", "x2", "v1", "v2"]
    assert [r["operation"] for r in table][2:] == ["sin(x2)", "x1 * v1"]
    assert table[-1]["value"] == pytest.approx(1.5 * np.sin(2.0))


def test_forward_table_matches_tangent_sweep_and_closed_forms(rec):
    v = np.array([1.0, 0.0, 0.0])
    table = tgi.forward_table(rec, X0, v)
    wd = sweeps.tangent(rec.tape, sweeps.forward(rec.tape, X0), v[None, :])[0]
    for r in table:
        np.testing.assert_array_equal(r["tangent"], wd[r["offset"]:r["offset"] + r["size"]])
        value, dot, _ = CLOSED[r["slot"]]
        assert r["value"] == pytest.approx(value, rel=1e-14, abs=1e-15)
        assert r["tangent"] == pytest.approx(dot, rel=1e-14, abs=1e-15)
    assert table.result == pytest.approx(E ** 3, rel=1e-14)
    assert table.result == pytest.approx(rec.jvp(X0, v)[1], rel=0, abs=0)
    assert "tangent v_dot" in table.text


def test_reverse_table_matches_adjoint_sweep_and_closed_forms(rec):
    table = tgi.reverse_table(rec, X0)
    wb = sweeps.reverse(rec.tape, sweeps.forward(rec.tape, X0), np.ones(1))
    for r in table:
        np.testing.assert_array_equal(r["adjoint"], wb[r["offset"]:r["offset"] + r["size"]])
        assert r["adjoint"] == pytest.approx(CLOSED[r["slot"]][2], rel=1e-14, abs=1e-15)
    np.testing.assert_allclose(table.result, rec.grad(X0), rtol=0, atol=0)
    assert table.result[1] == pytest.approx(3 * E ** 3, rel=1e-14)
    assert "adjoint v_bar" in table.text


def test_forward_and_reverse_tables_agree_on_the_gradient(rec):
    x = np.array([0.7, 0.1, 2.0])
    grad = tgi.reverse_table(rec, x).result
    fwd = [tgi.forward_table(rec, x, np.eye(3)[i]).result for i in range(3)]
    np.testing.assert_allclose(fwd, grad, rtol=1e-13)
    nd = tg.numdiff.gradient(worked, x)
    np.testing.assert_allclose(grad, nd.value, rtol=1e-7)


def test_tables_of_vector_functions_and_aliases():
    def f(x):
        return np.tanh(x.reshape(5, 4)) @ np.arange(4.0) * 2.0 + np.max(x[3:7])

    x = np.linspace(-1, 1, 20)
    r = tg.record(f, x)
    table = r.wengert()
    assert table[0]["slot"] == "x" and table[0]["size"] == 20      # one name for a big input
    ops = [row["operation"] for row in table]
    assert "max(x[3:7])" in ops and "tanh(x)" in ops and "v1 @ c1" in ops
    with pytest.raises(TypeError, match="seed"):
        tgi.reverse_table(r, x)
    u = np.arange(5.0)
    rt = tgi.reverse_table(r, x, seed=u)
    np.testing.assert_allclose(rt.result, r.vjp(x, u), rtol=1e-15)
    v = np.sin(np.arange(20.0))
    ft = tgi.forward_table(r, x, v)
    np.testing.assert_allclose(ft.result, r.jvp(x, v)[1], rtol=1e-15)
    with pytest.raises(TypeError, match="direction"):
        tgi.forward_table(r, x)


def test_traced_objects_work_too(rec):
    table = tgi.wengert(rec.traced)
    assert [row["slot"] for row in table] == list(CLOSED)
    assert tgi.reverse_table(rec.traced, X0).result[1] == pytest.approx(3 * E ** 3)
    with pytest.raises(TypeError, match="Recorded"):
        tgi.wengert(worked)


# ---------------------------------------------------------------------------- DOT
def _expected_counts(tape):
    """Nodes and edges of a tape whose operands each come from one slot (or one constant)."""
    consts = set()
    edges = 0
    for op in tape.op_table():
        for off, size, bit in zip((op["a"], op["b"], op["c"]), operand_sizes(op),
                                  (FLAG_A, FLAG_B, FLAG_C)):
            if size:
                edges += 1
                if int(op["flags"]) & bit:
                    consts.add((int(off), size))
    return tape.nops, len(consts), edges


def test_dot_parses_and_matches_the_tape(rec):
    dot = rec.to_dot()
    assert dot.startswith("digraph tapegrad {") and dot.rstrip().endswith("}")
    nodes = NODE_RE.findall(dot)
    edges = EDGE_RE.findall(dot)
    nops, nconst, nedges = _expected_counts(rec.tape)
    assert len(nodes) == len(set(nodes)) == rec.tape.nin + nops + nconst == 13
    assert len(edges) == nedges == 15
    assert {a for a, b in edges} | {b for a, b in edges} <= set(nodes)
    assert tgi.graph_counts(rec) == {"inputs": 3, "ops": 10, "consts": 0, "nodes": 13,
                                     "edges": 15}
    # in-degree of each op node is its arity
    indeg = {n: 0 for n in nodes}
    for a, b in edges:
        indeg[b] += 1
    arity = [2 if OPNAMES[int(op["code"])] in ("add", "subtract", "multiply") else 1
             for op in rec.tape.op_table()]
    assert [indeg[f"v{k + 1}"] for k in range(10)] == arity
    assert ('x2 -> v1' in dot) and ('v9 -> v10' in dot) and "peripheries=2" in dot


def test_dot_with_constant_operands():
    W = np.arange(12.0).reshape(4, 3)

    def f(x):
        return np.sum(np.tanh(x @ W))

    r = tg.record(f, np.ones((3, 4)))   # 12 values: one input node
    dot = tgi.to_dot(r, values=False)
    nodes, edges = NODE_RE.findall(dot), EDGE_RE.findall(dot)
    c = tgi.graph_counts(r)
    nops, nconst, nedges = _expected_counts(r.tape)
    assert c["consts"] == nconst >= 1 and c["ops"] == nops
    assert len(nodes) == c["nodes"] == 1 + nops + nconst
    assert len(edges) == c["edges"] == nedges
    assert ("c1", "v1") in edges


# ---------------------------------------------------------------------------- pictures
def test_draw_png_with_matplotlib(rec, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "g.png"
    assert rec.draw(path, engine="matplotlib") == "matplotlib"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_draw_errors_clearly_without_renderers(rec, tmp_path, monkeypatch):
    monkeypatch.setattr(tgi.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="dot"):
        tgi.draw(rec, tmp_path / "g.png", engine="dot")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(RuntimeError, match="Graphviz.*matplotlib"):
        tgi.draw(rec, tmp_path / "g.png")
    with pytest.raises(ValueError, match="engine"):
        tgi.draw(rec, tmp_path / "g.png", engine="tikz")


def test_number_formatting():
    assert tgi._num(np.pi / 2) == "pi/2"
    assert tgi._num(-3 * np.pi / 4) == "-3*pi/4"
    assert tgi._num(3.0) == "3" and tgi._num(0.1) == "0.1"
