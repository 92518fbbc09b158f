"""Look inside a recorded function: its Wengert list, tangent and adjoint tables, and its graph.

Everything here reads the tape itself (``op_table``, constants, the work-buffer layout) and the
compiled sweeps' own buffers, so what is shown is what is run (Griewank & Walther, *Evaluating
Derivatives*, 2nd ed., ch. 2-3: the Wengert list, the tangent and the adjoint tables).

Names. Inputs are ``x1 .. xn``: one name per element when the inputs are small (at most
``split_inputs`` values in all, the textbook case), else one per input array. The result of the
k-th operation of the tape is ``vk``; an operand read from the tape's constant buffer is ``cj``.
Reshapes and contiguous slices record no operation (they alias slots), so an operand that is
part of a slot is shown as ``v3[2:5]`` and one made of several slots as ``[x1, x2, x3]``.

The graph has one node per input name, per operation and per constant operand, and one edge per
(operation operand, node it reads); ``to_dot`` and ``graph_counts`` agree on both counts.
"""
import math
import shutil
import subprocess

import numpy as np

from ._core import sweeps
from ._core.tape import OPNAMES, FLAG_A, FLAG_B, FLAG_C
from .primitives.derived import SHOW
from .engine.reference import operand_sizes
from .operators.recorded import Recorded, record, install_views

__all__ = ["Table", "wengert", "forward_table", "reverse_table", "to_dot", "draw",
           "graph_counts", "trace"]

SPLIT_INPUTS = 8   # inputs with at most this many values in all get one name per element


# ---------------------------------------------------------------------------- formatting
def _num(d):
    """A parameter as a reader would write it: 3, -0.5, pi/2, 3*pi/4."""
    d = float(d)
    if not math.isfinite(d):
        return repr(d)
    if d == round(d) and abs(d) < 1e15:
        return str(int(d))
    for q in (1, 2, 3, 4, 6, 8, 12):
        p = d * q / math.pi
        if abs(p - round(p)) < 1e-12 and round(p) != 0:
            p = int(round(p))
            head = {1: "pi", -1: "-pi"}.get(p, f"{p}*pi")
            return head if q == 1 else f"{head}/{q}"
    return f"{d:.6g}"


def _fmt(v, width=4):
    """A slot value for a text table: a number, or the first few values of an array."""
    a = np.asarray(v, dtype=np.float64).ravel()
    if a.size == 1:
        return f"{a[0]:.6g}"
    head = ", ".join(f"{t:.4g}" for t in a[:width])
    return f"[{head}{', ...' if a.size > width else ''}] ({a.size})"


def _value(a):
    """A row's data: a float for one value, else a copy of the array."""
    a = np.asarray(a, dtype=np.float64)
    return float(a[0]) if a.size == 1 else a.copy()


class Table(list):
    """Rows (dicts) that print as a text table: ``str(table)`` or ``table.text``.

    ``columns`` are ``(key, header)`` pairs; ``notes`` are lines printed under the table.
    """

    def __init__(self, rows, columns, title="", notes=()):
        super().__init__(rows)
        self.columns = list(columns)
        self.title = title
        self.notes = list(notes)

    def column(self, key):
        """The values of one column, in row order."""
        return [r[key] for r in self]

    def row(self, slot):
        """The row of a slot name (``"x1"``, ``"v3"``)."""
        for r in self:
            if r["slot"] == slot:
                return r
        raise KeyError(slot)

    @property
    def text(self):
        cells = [[h for _, h in self.columns]]
        for r in self:
            cells.append([_fmt(r[k]) if k in ("value", "tangent", "adjoint") else str(r[k])
                          for k, _ in self.columns])
        widths = [max(len(c[i]) for c in cells) for i in range(len(self.columns))]
        lines = [self.title] if self.title else []
        for j, c in enumerate(cells):
            lines.append("  ".join(s.ljust(w) for s, w in zip(c, widths)).rstrip())
            if j == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines.extend(self.notes)
        return "\n".join(lines)

    def __str__(self):
        return self.text

    def __repr__(self):
        return f"<Table {self.title!r}: {len(self)} rows>"


# ---------------------------------------------------------------------------- the graph model
def _traced(obj):
    """(Traced, Recorded or None) for a Recorded or an api.Traced."""
    if isinstance(obj, Recorded):
        return obj.traced, obj
    if hasattr(obj, "rec") and hasattr(obj, "tape"):
        return obj, None
    raise TypeError(f"expected a tapegrad Recorded (tg.record(f, x)) or Traced, "
                    f"got {type(obj).__name__}")


class Graph:
    """Nodes (inputs, operations, constants) and edges of a tape, with names for every slot.

    ``nodes``: dicts with ``id``, ``kind`` ("input", "op", "const"), ``name``, ``offset``,
    ``size`` and, for ops, ``op`` (opcode name), ``expr`` and ``index`` (position on the tape).
    ``edges``: (source id, target id, operand role "a"/"b"/"c").
    """

    def __init__(self, tr, split_inputs=SPLIT_INPUTS):
        self.tr = tr
        tape = tr.tape
        self.ops = tape.op_table()
        self.tape = tape
        self.nin, self.nwork = tape.nin, tape.nwork
        self.out_off, self.out_n = tape.out_off, tape.out_n
        self.nodes, self.edges = [], []
        writer = np.full(max(self.nwork, 1), -1, dtype=np.int64)
        self._writer = writer

        # inputs
        if self.nin <= split_inputs:
            for i in range(self.nin):
                self._add("input", f"x{i + 1}", i, 1)
        else:
            pos = 0
            leaves = [(s, n) for s, n in zip(tr.in_shapes, tr.in_sizes)]
            for k, (s, n) in enumerate(leaves):
                name = "x" if len(leaves) == 1 else f"x{k + 1}"
                self._add("input", name, pos, n, shape=tuple(s))
                pos += n
        for node in self.nodes:
            writer[node["offset"]:node["offset"] + node["size"]] = node["id"]

        # operations, in tape order: operands are named by whoever wrote them last
        const_ids = {}
        self.op_nodes = []
        for k, op in enumerate(self.ops):
            fl = int(op["flags"])
            names, reads = [], []   # reads: (source id, role); the op's own id comes after
            for role, off, size, bit in zip("abc", (op["a"], op["b"], op["c"]),
                                            operand_sizes(op), (FLAG_A, FLAG_B, FLAG_C)):
                off = int(off)
                if size == 0:
                    names.append(None)
                    continue
                if fl & bit:
                    key = (off, size)
                    if key not in const_ids:
                        cid = self._add("const", f"c{len(const_ids) + 1}", off, size,
                                        value=self.tape.const_values(off, size))
                        const_ids[key] = cid
                    cnode = self.nodes[const_ids[key]]
                    names.append(cnode["name"])
                    reads.append((cnode["id"], role))
                    continue
                text, srcs = self._operand(off, size)
                names.append(text)
                reads.extend((s, role) for s in srcs)
            name = OPNAMES[int(op["code"])]
            out, n = int(op["out"]), int(op["n"])
            nid = self._add("op", f"v{k + 1}", out, n, op=name, index=k,
                            expr=_expr(name, names, op), inputs=[t for t in names if t])
            self.op_nodes.append(nid)
            self.edges.extend((s, nid, role) for s, role in reads)
            writer[out:out + n] = nid

        # the output: whichever nodes hold it at the end
        text, srcs = self._operand(self.out_off, self.out_n) if self.out_n else ("", [])
        self.output_expr, self.output_ids = text, srcs

    def _add(self, kind, name, offset, size, **extra):
        nid = len(self.nodes)
        self.nodes.append(dict(id=nid, kind=kind, name=name, offset=int(offset), size=int(size),
                               **extra))
        return nid

    def _operand(self, off, size):
        """(display text, source node ids) of the work-buffer region [off, off+size)."""
        w = self._writer[off:off + size]
        pieces, i = [], 0
        while i < size:
            j = i
            while j < size and w[j] == w[i]:
                j += 1
            pieces.append((int(w[i]), off + i, j - i))
            i = j
        texts, srcs = [], []
        for nid, start, n in pieces:
            if nid < 0:
                texts.append("0" if n == 1 else f"zeros({n})")
                continue
            node = self.nodes[nid]
            if nid not in srcs:
                srcs.append(nid)
            if start == node["offset"] and n == node["size"]:
                texts.append(node["name"])
            else:
                lo = start - node["offset"]
                texts.append(f"{node['name']}[{lo}]" if n == 1 else
                             f"{node['name']}[{lo}:{lo + n}]")
        return (texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"), srcs

    @property
    def slot_nodes(self):
        """Input and op nodes (the Wengert slots), in order."""
        return [n for n in self.nodes if n["kind"] != "const"]


def _expr(name, a, op):
    """The right-hand side of a Wengert line, e.g. ``x2 ** 3`` or ``exp(v2)``."""
    A, B, C = a
    d = _num(op["d"])
    p = op["p"]
    fmt = SHOW.get(name)      # the primitive table's format, e.g. "{a} ** {d}"
    if fmt is not None:
        return fmt.format(a=A, b=B, c=C, d=d)
    if name in ("sum", "max", "min", "prod"):
        pre, m, post = int(p[0]), int(p[1]), int(p[2])
        if pre == 1 and post == 1:
            return f"{name}({A})"
        return f"{name}({A} as ({pre}, {m}, {post}), axis=1)"
    if B is not None:
        return f"{name}({A}, {B})"
    return f"{name}({A})"


# ---------------------------------------------------------------------------- sweeps at a point
def _point(obj, x, what):
    """(Traced, work buffer) at x (None: the recording point). x is what ``rec.jvp`` takes."""
    tr, rec = _traced(obj)
    if x is None:
        return tr, np.array(tr.work(), copy=True)
    if rec is not None:
        tr, w = rec.forward_at(x, what)
        return tr, np.array(w, copy=True)
    xf = np.ascontiguousarray(np.asarray(x, dtype=np.float64).ravel())
    if xf.size != tr.nin:
        raise ValueError(f"{what}: expected {tr.nin} input values, got {xf.size}")
    return tr, sweeps.forward(tr.tape, xf)


def _flat_like_inputs(obj, v, tr, what):
    _, rec = _traced(obj)
    if rec is not None:
        return np.ascontiguousarray(rec.flat_input(v, what), dtype=np.float64)
    vf = np.ascontiguousarray(np.asarray(v, dtype=np.float64).ravel())
    if vf.size != tr.nin:
        raise ValueError(f"{what}: expected {tr.nin} values, got {vf.size}")
    return vf


def _rows(g, w, extra=None):
    rows = []
    for node in g.slot_nodes:
        o, n = node["offset"], node["size"]
        row = {"slot": node["name"],
               "operation": "input" if node["kind"] == "input" else node["expr"],
               "op": node.get("op", "input"),
               "inputs": list(node.get("inputs", [])),
               "value": _value(w[o:o + n]), "offset": o, "size": n,
               "output": node["id"] in g.output_ids}
        if extra:
            for key, buf in extra.items():
                row[key] = _value(buf[o:o + n])
        rows.append(row)
    return rows


def _output_note(g):
    return f"y = {g.output_expr}" if g.output_expr else "y = (no output)"


def wengert(obj, x=None, split_inputs=SPLIT_INPUTS):
    """The Wengert list of a recorded function: one row per slot (inputs, then operations).

    ``obj`` is a ``Recorded`` (``tg.record(f, x0)``) or an ``api.Traced``. Values come from the
    compiled forward sweep at ``x`` (default: the recording point). Each row is a dict with
    ``slot`` (x1.., v1..), ``operation`` (e.g. ``"exp(v2)"``), ``op`` (opcode name), ``inputs``
    (operand names), ``value`` (float, or array for array slots), ``offset``, ``size`` and
    ``output``. Print the returned ``Table`` for the text form.
    """
    tr, w = _point(obj, x, "wengert")
    g = Graph(tr, split_inputs)
    rows = _rows(g, w)
    for r in rows:
        r["inputs_text"] = ", ".join(r["inputs"]) if r["inputs"] else "-"
    cols = [("slot", "slot"), ("operation", "operation"), ("inputs_text", "inputs"),
            ("value", "value")]
    return Table(rows, cols, title="Wengert list", notes=[_output_note(g)])


def trace(f, *args, split_inputs=SPLIT_INPUTS):
    """Record f at args and return its Wengert list (``wengert(tg.record(f, *args))``)."""
    return wengert(record(f, *args), split_inputs=split_inputs)


def forward_table(obj, x=None, v=None, split_inputs=SPLIT_INPUTS):
    """Forward mode: value and tangent (v_dot) of every slot along direction ``v``.

    From the compiled tangent sweep (one lane). ``x`` and ``v`` are shaped like the inputs (as
    for ``Recorded.jvp``); ``x=None`` is the recording point. Rows as in ``wengert`` plus
    ``tangent``; ``table.result`` is the output's tangent, the directional derivative J v.
    """
    tr, w = _point(obj, x, "forward_table")
    if v is None:
        raise TypeError("forward_table: give a direction v shaped like the inputs "
                        "(e.g. a unit vector for one partial derivative)")
    vf = _flat_like_inputs(obj, v, tr, "forward_table direction")
    wd = sweeps.tangent(tr.tape, w, vf[None, :])[0]
    g = Graph(tr, split_inputs)
    rows = _rows(g, w, {"tangent": wd})
    t = Table(rows, [("slot", "slot"), ("operation", "operation"), ("value", "value"),
                     ("tangent", "tangent v_dot")],
              title="Forward mode (tangent sweep), direction v = " + _fmt(vf, 8),
              notes=[_output_note(g) + f";  y_dot = {_fmt(wd[tr.out_off:tr.out_off + tr.nout])}"])
    t.result = _value(wd[tr.out_off:tr.out_off + tr.nout])
    t.output = _value(w[tr.out_off:tr.out_off + tr.nout])
    return t


def reverse_table(obj, x=None, seed=None, split_inputs=SPLIT_INPUTS):
    """Reverse mode: value and adjoint (v_bar = dy/dv) of every slot, from one reverse sweep.

    ``seed`` is the output cotangent (default 1 for a scalar output). Rows as in ``wengert``
    plus ``adjoint``; ``table.result`` is the input adjoint (the gradient for seed 1), flat.
    """
    tr, w = _point(obj, x, "reverse_table")
    if seed is None:
        if tr.nout != 1:
            raise TypeError(f"reverse_table: the output has {tr.nout} values; give seed=")
        seed = np.ones(1)
    seed = np.ascontiguousarray(np.asarray(seed, dtype=np.float64).ravel())
    if seed.size != tr.nout:
        raise ValueError(f"reverse_table: seed has {seed.size} values, the output {tr.nout}")
    wb = sweeps.reverse(tr.tape, w, seed)
    g = Graph(tr, split_inputs)
    rows = _rows(g, w, {"adjoint": wb})
    t = Table(rows, [("slot", "slot"), ("operation", "operation"), ("value", "value"),
                     ("adjoint", "adjoint v_bar")],
              title="Reverse mode (adjoint sweep), seed y_bar = " + _fmt(seed, 8),
              notes=[_output_note(g) + f";  gradient x_bar = {_fmt(wb[:tr.nin], 8)}"])
    t.result = np.array(wb[:tr.nin], copy=True)
    t.output = _value(w[tr.out_off:tr.out_off + tr.nout])
    return t


# ---------------------------------------------------------------------------- DOT and pictures
def graph_counts(obj, split_inputs=SPLIT_INPUTS):
    """{"inputs", "ops", "consts", "nodes", "edges"} of the graph ``to_dot`` draws."""
    tr, _ = _traced(obj)
    g = Graph(tr, split_inputs)
    kinds = [n["kind"] for n in g.nodes]
    return {"inputs": kinds.count("input"), "ops": kinds.count("op"),
            "consts": kinds.count("const"), "nodes": len(g.nodes), "edges": len(g.edges)}


def _dot_escape(s):
    return s.replace("\\", "\\\\").replace('"', '\\"')


def _label(g, node, w, values):
    name = node["name"]
    if node["kind"] == "const":
        v = node["value"]
        return f"{name} = {_num(v[0])}" if v.size == 1 else f"{name} ({v.size} values)"
    if node["kind"] == "input":
        head = name if "shape" not in node else f"{name} {node['shape']}"
    else:
        head = f"{name} = {node['expr']}"
    if values and w is not None and node["size"]:
        head += "\n" + _fmt(w[node["offset"]:node["offset"] + node["size"]], 3)
    return head


def to_dot(obj, values=True, split_inputs=SPLIT_INPUTS, rankdir="LR"):
    """Graphviz DOT text of the computational graph.

    One node per input name (ellipses), per operation (boxes; the output's is doubled) and per
    constant operand (plain text), one edge per operand read. With ``values=True`` the labels
    show the values at the recording point.
    """
    tr, _ = _traced(obj)
    g = Graph(tr, split_inputs)
    w = tr.work() if values else None
    lines = ["digraph tapegrad {", f"  rankdir={rankdir};",
             '  node [fontname="Helvetica", fontsize=11];', '  edge [color="#555555"];']
    for node in g.nodes:
        label = _dot_escape(_label(g, node, w, values)).replace("\n", "\\n")
        if node["kind"] == "input":
            style = 'shape=ellipse, style=filled, fillcolor="#dbe9f6"'
        elif node["kind"] == "const":
            style = 'shape=plaintext'
        else:
            style = 'shape=box, style="rounded,filled", fillcolor="#f4f4f4"'
            if node["id"] in g.output_ids:
                style += ", peripheries=2"
        lines.append(f'  {node["name"]} [label="{label}", {style}];')
    for s, t, role in g.edges:
        lines.append(f'  {g.nodes[s]["name"]} -> {g.nodes[t]["name"]};')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _layers(g):
    """Depth of every node: inputs 0, an op one more than its deepest operand."""
    depth = [0] * len(g.nodes)
    preds = [[] for _ in g.nodes]
    for s, t, _ in g.edges:
        preds[t].append(s)
    for nid in g.op_nodes:
        ps = [p for p in preds[nid] if g.nodes[p]["kind"] != "const"]
        depth[nid] = 1 + max((depth[p] for p in ps), default=0)
    for nid, node in enumerate(g.nodes):   # a constant sits one layer before its first reader
        if node["kind"] == "const":
            depth[nid] = min(depth[t] for s, t, _ in g.edges if s == nid) - 1
    return depth


def _draw_matplotlib(obj, path, split_inputs, values):
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    tr, _ = _traced(obj)
    g = Graph(tr, split_inputs)
    w = tr.work() if values else None
    depth = _layers(g)
    cols = {}
    for nid, dep in enumerate(depth):
        cols.setdefault(dep, []).append(nid)
    # order each layer by the mean height of its predecessors (one barycenter pass)
    preds = [[] for _ in g.nodes]
    for s, t, _ in g.edges:
        preds[t].append(s)
    pos = {}
    for dep in sorted(cols):
        ids = cols[dep]
        key = {nid: (np.mean([pos[p][1] for p in preds[nid] if p in pos])
                     if any(p in pos for p in preds[nid]) else 0.0) for nid in ids}
        ids.sort(key=lambda nid: -key[nid])
        for j, nid in enumerate(ids):
            pos[nid] = (dep, (len(ids) - 1) / 2.0 - j)
    width = max(depth) - min(depth) + 1 if depth else 1
    height = max(len(ids) for ids in cols.values()) if cols else 1
    fig = Figure(figsize=(min(2.0 * width + 1.5, 40), min(1.0 * height + 1.5, 40)), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_axis_off()
    xs = [p[0] for p in pos.values()] or [0]
    ys = [p[1] for p in pos.values()] or [0]
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(min(ys) - 0.7, max(ys) + 0.7)
    colors = {"input": "#dbe9f6", "op": "#f4f4f4", "const": "white"}
    boxes = {}
    for node in g.nodes:
        lw = 2.0 if node["id"] in g.output_ids else 0.8
        boxes[node["id"]] = ax.text(
            *pos[node["id"]], _label(g, node, w, values), ha="center", va="center", fontsize=8,
            zorder=3, bbox=dict(boxstyle="round,pad=0.35", fc=colors[node["kind"]],
                                ec="none" if node["kind"] == "const" else "#333333", lw=lw))
    for s, t, _ in g.edges:
        # arrows run from box edge to box edge (coordinates relative to the text boxes)
        ax.annotate("", xy=(0.0, 0.5), xycoords=boxes[t], xytext=(1.0, 0.5),
                    textcoords=boxes[s], zorder=2,
                    arrowprops=dict(arrowstyle="-|>", color="#555555", lw=0.8,
                                    shrinkA=4, shrinkB=4, connectionstyle="arc3,rad=0.0"))
    fig.savefig(path)
    return path


def draw(obj, path, engine="auto", values=True, split_inputs=SPLIT_INPUTS):
    """Render the computational graph to an image file (format from the suffix, e.g. ``.png``).

    ``engine``: ``"dot"`` (Graphviz's ``dot`` program), ``"matplotlib"``, or ``"auto"`` (dot if
    installed, else matplotlib). Both are optional extras; with neither, raises RuntimeError
    saying what to install. Returns the engine used.
    """
    path = str(path)
    fmt = path.rsplit(".", 1)[-1].lower() if "." in path else "png"
    have_dot = shutil.which("dot") is not None
    if engine not in ("auto", "dot", "matplotlib"):
        raise ValueError(f"draw: engine must be 'auto', 'dot' or 'matplotlib', got {engine!r}")
    if engine == "dot" or (engine == "auto" and have_dot):
        if not have_dot:
            raise RuntimeError("draw: Graphviz's `dot` program is not on PATH (install "
                               "graphviz, e.g. apt install graphviz), or use engine='matplotlib'")
        subprocess.run(["dot", f"-T{fmt}", "-o", path],
                       input=to_dot(obj, values, split_inputs).encode(), check=True,
                       capture_output=True)
        return "dot"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise RuntimeError("draw: no renderer available. Install Graphviz (the `dot` program, "
                           "e.g. apt install graphviz) or matplotlib "
                           "(pip install 'tapegrad[plot]'); to_dot() works without either"
                           ) from None
    _draw_matplotlib(obj, path, split_inputs, values)
    return "matplotlib"


install_views(wengert=wengert, to_dot=to_dot, draw=draw)   # Recorded.wengert/to_dot/draw
