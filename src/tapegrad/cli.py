"""The ``tapegrad`` command: ``tapegrad demo | flow | bench``.

``tapegrad demo`` walks through the worked example of the README,

    y = exp(x1 + x2**3) * x3 + sqrt(x3 * sin(pi/2 * (x1 - x2))),

end to end: its graph, forward and reverse mode with their tables, numerical differentiation,
what AD does where sqrt meets 0, the dual-number chain rule, and measured costs. ``run_demo``
returns every number it prints in a dict, so the tests check the printout against closed forms.
"""
import argparse
import math
import os
import statistics
import sys
import time

import numpy as np

USAGE = """usage: tapegrad <command> [options]

commands:
  demo    the worked example: graph, forward/reverse tables, numerical differentiation, costs
  flow    gradient flow (solve_ivp on a recorded tape) vs gradient descent
  bench   tapegrad vs autograd / JAX / PyTorch on the same workloads
  dask-demo  data-parallel gradients and an ensemble of flows on Dask (pip install "tapegrad[dask]")

`tapegrad <command> --help` describes a command's options."""

POINT_AD = (2.0, 1.0, 1.0)     # where forward and reverse mode are shown
POINT_FD = (1.0, 1.0, 1.0)     # where sqrt meets 0
FD_EPS = 1e-4                  # precision eps of the textbook step rule
CHAIN_X = 0.5                  # point of the dual-number chain rule


def worked_example(x):
    """y = exp(x1 + x2**3) * x3 + sqrt(x3 * sin(pi/2 * (x1 - x2))), plain NumPy."""
    x1, x2, x3 = x[0], x[1], x[2]
    return np.exp(x1 + x2 ** 3) * x3 + np.sqrt(x3 * np.sin(np.pi / 2 * (x1 - x2)))


def chain_example(x):
    """f(g(h(x))) with h(x) = x**2, g(u) = sin(u), f(v) = exp(v)."""
    return np.exp(np.sin(x ** 2))


def cost_example(x):
    """The function timed as the input dimension grows."""
    return np.sum(np.sin(x) * x ** 2)


# ---------------------------------------------------------------------------- closed forms
def closed_forms():
    """The derivatives the demo shows, from the formulas by hand."""
    e = math.e
    x = CHAIN_X
    return {
        # dy/dx1 = exp(x1+x2^3) x3 + x3 cos(pi/2 (x1-x2)) pi/2 / (2 sqrt(.)); cos(pi/2) = 0
        "dydx1": e ** 3,
        # dy/dx2 = 3 x2^2 exp(x1+x2^3) x3 - (same sqrt term) = 3 e^3
        "dydx2": 3 * e ** 3,
        # along x3 at (1,1,1) the sqrt term is sqrt(x3 * 0) = 0, so dy/dx3 = exp(2)
        "dydx3": e ** 2,
        "chain": [
            ("h(x) = x**2", x ** 2, 2 * x),
            ("g(h) = sin(h)", math.sin(x ** 2), math.cos(x ** 2) * 2 * x),
            ("f(g) = exp(g)", math.exp(math.sin(x ** 2)),
             math.exp(math.sin(x ** 2)) * math.cos(x ** 2) * 2 * x),
        ],
    }


# ---------------------------------------------------------------------------- timing
def _median_time(fn, repeat):
    """Median seconds per call over ``repeat`` samples, each long enough to time."""
    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    number = max(1, int(2e-3 / max(once, 1e-7)))
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - t0) / number)
    return statistics.median(samples)


def _fmt_time(s):
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1.0:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def measure_costs(sizes=(10, 100, 1000), repeat=5):
    """Gradient of ``cost_example`` by n tangent sweeps, one reverse sweep, 2n differences."""
    from . import numdiff
    from .operators.recorded import record
    from ._core import sweeps
    rows = []
    rng = np.random.default_rng(0)
    for n in sizes:
        x = rng.standard_normal(n)
        rec = record(cost_example, x)
        tape, out = rec.tape, rec.tape.out_off
        E = np.eye(n)

        def forward_mode():
            w = sweeps.forward(tape, x)
            g = np.empty(n)
            for i in range(n):          # one tangent sweep per input direction
                g[i] = sweeps.tangent(tape, w, E[i:i + 1])[0, out]
            return g

        def reverse_mode():
            return rec.grad(x)

        def numerical():
            return numdiff.gradient(rec, x, method="central").value

        g_fwd, g_rev, g_num = forward_mode(), reverse_mode(), numerical()
        rows.append({
            "n": n,
            "forward": _median_time(forward_mode, repeat),
            "reverse": _median_time(reverse_mode, repeat),
            "numerical": _median_time(numerical, repeat),
            "fwd_vs_rev": float(np.max(np.abs(g_fwd - g_rev))),
            "num_vs_rev": float(np.max(np.abs(g_num - g_rev))),
        })
    return rows


# ---------------------------------------------------------------------------- the demo
def run_demo(out_dir="tapegrad-demo", sizes=(10, 100, 1000), repeat=5, stream=None):
    """Run the worked example, print it to ``stream`` (default stdout), return its numbers."""
    from . import inspect as tgi, numdiff
    from .operators.recorded import record
    stream = sys.stdout if stream is None else stream

    def say(*lines):
        for line in lines:
            print(line, file=stream)

    cf = closed_forms()
    res = {"closed_forms": cf, "out_dir": os.path.abspath(out_dir)}
    os.makedirs(out_dir, exist_ok=True)
    rule = "=" * 78

    say(rule, "tapegrad demo: y = exp(x1 + x2**3) * x3 + sqrt(x3 * sin(pi/2 * (x1 - x2)))", rule)

    # 1. the graph
    x_ad = np.array(POINT_AD)
    rec = record(worked_example, x_ad)
    table = tgi.wengert(rec)
    counts = tgi.graph_counts(rec)
    dot = tgi.to_dot(rec)
    dot_path = os.path.join(out_dir, "worked_example.dot")
    png_path = os.path.join(out_dir, "worked_example.png")
    with open(dot_path, "w") as fh:
        fh.write(dot)
    try:
        engine = tgi.draw(rec, png_path)
        png_msg = f"PNG written to {png_path} (rendered with {engine})"
    except RuntimeError as exc:
        engine, png_path = None, None
        png_msg = f"PNG not written: {exc}"
    res["graph"] = {"wengert": table, "dot": dot, "dot_path": dot_path, "png_path": png_path,
                    "engine": engine, **counts}
    say("", f"1. The computational graph, recorded at x = {POINT_AD}", "", table.text, "",
        f"graph: {counts['nodes']} nodes ({counts['inputs']} inputs, {counts['ops']} operations, "
        f"{counts['consts']} constant operands), {counts['edges']} edges", dot.rstrip(),
        f"DOT written to {dot_path}", png_msg)

    # 2. forward mode
    fwd = tgi.forward_table(rec, x_ad, np.array([1.0, 0.0, 0.0]))
    res["forward"] = {"x": POINT_AD, "dydx1": fwd.result, "closed_form": cf["dydx1"],
                      "table": fwd}
    say("", f"2. Forward mode: dy/dx1 at x = {POINT_AD}, one tangent sweep with x_dot = e1",
        "", fwd.text, "",
        f"dy/dx1 = {fwd.result:.15g};  closed form e^3 = {cf['dydx1']:.15g}  "
        f"(difference {fwd.result - cf['dydx1']:.2g})")

    # 3. reverse mode
    rev = tgi.reverse_table(rec, x_ad)
    dydx2 = float(rev.result[1])
    res["reverse"] = {"x": POINT_AD, "dydx2": dydx2, "gradient": rev.result,
                      "closed_form": cf["dydx2"], "table": rev}
    say("", f"3. Reverse mode: dy/dx2 at x = {POINT_AD}, one adjoint sweep with y_bar = 1",
        "", rev.text, "",
        f"dy/dx2 = {dydx2:.15g};  closed form 3 e^3 = {cf['dydx2']:.15g}  "
        f"(difference {dydx2 - cf['dydx2']:.2g})",
        f"(the same sweep gives the whole gradient: {np.array2string(rev.result, precision=6)})")

    # 4. numerical differentiation at (1, 1, 1), and what AD says there
    x_fd = np.array(POINT_FD)
    h_rule = float(np.max(numdiff.default_step(x_fd, method="forward", eps=FD_EPS,
                                               scale="max")))
    nd = numdiff.derivative(lambda t: worked_example(np.array([x_fd[0], x_fd[1], t])),
                            float(x_fd[2]), method="central", h=h_rule)
    ad_grad = np.asarray(rec.grad(x_fd), dtype=float)
    _, ad_x3_fwd = rec.jvp(x_fd, np.array([0.0, 0.0, 1.0]))
    res["numdiff"] = {"x": POINT_FD, "eps": FD_EPS, "dydx3": float(nd.value),
                      "step": float(nd.step), "step_rule": h_rule, "method": nd.method,
                      "evaluations": nd.evaluations, "closed_form": cf["dydx3"],
                      "ad_gradient": ad_grad, "ad_dydx3_forward": float(ad_x3_fwd)}
    say("", f"4. Numerical differentiation of dy/dx3 at x = {POINT_FD}",
        f"   central differences (f(x + h e3) - f(x - h e3)) / 2h, textbook step rule "
        f"h = (1 + max|x_i|) * sqrt(eps), eps = {FD_EPS:g}",
        f"   step used h = {float(nd.step):.6g}, {nd.evaluations} evaluations",
        f"   dy/dx3 ~ {float(nd.value):.15g};  closed form e^2 = {cf['dydx3']:.15g}  "
        f"(difference {float(nd.value) - cf['dydx3']:.2g})",
        "",
        f"   AD at the same point: reverse gradient = {ad_grad.tolist()}, "
        f"forward dy/dx3 = {float(ad_x3_fwd)}",
        "   why: u = x3*sin(pi/2*(x1-x2)) = 0 there and sqrt'(0) = 1/(2*sqrt(0)) = inf; the chain "
        "rule multiplies",
        "   it by du/dx3 = sin(0) = 0 and 0*inf = nan, although the sqrt term is 0 for every x3 "
        "(so dy/dx3 = e^2);",
        "   along x1 and x2 sqrt has a vertical tangent at 0, hence +-inf. Differences only see "
        "x3 near 1, where f is linear.")

    # 5. the chain rule with dual numbers
    crec = record(chain_example, CHAIN_X)
    ctab = tgi.forward_table(crec, CHAIN_X, 1.0)
    stages = []
    for row, (name, val, dot_cf) in zip(ctab[1:], cf["chain"]):
        stages.append({"name": name, "slot": row["slot"], "value": row["value"],
                       "tangent": row["tangent"], "value_closed": val, "tangent_closed": dot_cf})
    res["chain"] = {"x": CHAIN_X, "stages": stages, "derivative": ctab.result,
                    "closed_form": cf["chain"][-1][2], "table": ctab}
    forms = ["2x", "cos(x**2) * 2x", "exp(sin(x**2)) * cos(x**2) * 2x"]
    say("", "5. The chain rule with dual numbers: F(x) = f(g(h(x))), h(x) = x**2, g(u) = sin(u), "
        "f(v) = exp(v)",
        f"   push x + 1*eps through each stage (eps**2 = 0) at x = {CHAIN_X}: "
        "a + b*eps -> f(a) + f'(a)*b*eps", "")
    for s, form in zip(stages, forms):
        say(f"   {s['name']:<15} -> {s['value']:.12g} + {s['tangent']:.12g} eps   "
            f"(closed form: tangent = {form} = {s['tangent_closed']:.12g})")
    say(f"   F'(x) = f'(g(h(x))) g'(h(x)) h'(x) = {ctab.result:.15g}")

    # 6. costs
    res["costs"] = measure_costs(sizes, repeat) if sizes else []
    if res["costs"]:
        say("", f"6. Cost of a gradient of sum(sin(x) * x**2) as n grows (median of {repeat})",
            "   forward mode needs one tangent sweep per input, reverse mode one sweep, central "
            "differences 2n evaluations", "")
        hdr = f"   {'n':>6}  {'forward (n sweeps)':>19}  {'reverse (1 sweep)':>18}  " \
              f"{'numerical (2n)':>15}  {'fwd/rev':>8}  {'num/rev':>8}"
        say(hdr, "   " + "-" * (len(hdr) - 3))
        for r in res["costs"]:
            say(f"   {r['n']:>6}  {_fmt_time(r['forward']):>19}  {_fmt_time(r['reverse']):>18}  "
                f"{_fmt_time(r['numerical']):>15}  {r['forward'] / r['reverse']:>8.1f}  "
                f"{r['numerical'] / r['reverse']:>8.1f}")
        worst = max(max(r["fwd_vs_rev"], r["num_vs_rev"]) for r in res["costs"])
        say(f"   (the three gradients agree: max |difference| = {worst:.1g})")
    say("", f"files in {res['out_dir']}: " + ", ".join(sorted(os.listdir(out_dir))))
    return res


# ---------------------------------------------------------------- the commands' options
# Every command's arguments are parsed here; the modules behind them take plain values
# (flow.cli_report) or the parsed options (bench.run_main / bench.config_from_args).
def demo_parser():
    parser = argparse.ArgumentParser(prog="tapegrad demo",
                                     description="The worked example of the README, end to end.")
    parser.add_argument("--out", default="tapegrad-demo",
                        help="directory for the DOT and PNG files (default ./tapegrad-demo)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[10, 100, 1000],
                        help="input dimensions for the cost table (none: skip timing)")
    parser.add_argument("--repeat", type=int, default=5, help="timing samples per entry")
    return parser


def flow_parser():
    from .flow import PROBLEMS, _CLI_T_FINAL
    parser = argparse.ArgumentParser(
        prog="tapegrad flow",
        description="Gradient flow (solve_ivp on a recorded tape) vs gradient descent.")
    parser.add_argument("--problem", choices=sorted(PROBLEMS), default="quadratic")
    parser.add_argument("--eta", type=float, nargs="+", default=None,
                        help="GD step sizes (default: 5/10/20/40%% of the stable bound)")
    parser.add_argument("--method", default="RK45",
                        help="solve_ivp method: RK45, RK23, DOP853, BDF, Radau, LSODA")
    parser.add_argument("--t-final", type=float, default=None,
                        help="flow end time (default: %s)" % ", ".join(
                            "%s %g" % kv for kv in sorted(_CLI_T_FINAL.items())))
    parser.add_argument("--out", default=None, help="write the picture here (needs matplotlib)")
    return parser


def parse_sizes(text):
    """'10,100,1e5' -> (10, 100, 100000)."""
    out = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        v = float(part)
        if v < 2 or v != int(v):
            raise argparse.ArgumentTypeError(f"Rosenbrock sizes are integers >= 2, got {part!r}")
        out.append(int(v))
    if not out:
        raise argparse.ArgumentTypeError("--sizes needs at least one size")
    return tuple(out)


def bench_parser():
    from .bench import TOOL_ORDER, QUICK_TOOLS
    p = argparse.ArgumentParser(
        prog="tapegrad bench",
        description="Benchmark tapegrad against autograd, JAX, torch.func and hand-written NumPy "
                    "gradients. Every tool's derivative is checked against tapegrad's first.")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes, short timings, tapegrad and hand NumPy only (seconds)")
    p.add_argument("--tools", default=None,
                   help="comma-separated tools among " + ", ".join(TOOL_ORDER) +
                        " (default: all installed; with --quick: " + ",".join(QUICK_TOOLS) + ")")
    p.add_argument("--out", default="bench-results", help="output folder (default: %(default)s)")
    p.add_argument("--sizes", type=parse_sizes, default=None,
                   help="Rosenbrock sizes, e.g. 10,1e3,1e6 (default 10,100,1e3,1e4,1e5,1e6)")
    p.add_argument("--workloads", default=None,
                   help="comma-separated workload families: worked_example, scalar_loop, "
                        "rosenbrock, logistic, mlp, gmm, fft, eig, hvp, jac_fwd, jac_rev, ode (default: all)")
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds of timing samples per measurement (default 0.25; quick 0.01)")
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads for BLAS, torch, XLA and tapegrad's sweeps (default 1)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG charts")
    p.add_argument("--no-memory", action="store_true", help="skip the tracemalloc measurements")
    p.add_argument("--no-batch", action="store_true",
                   help="skip the many-points rows (per-example gradients, flow ensembles)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    return p


def demo_main(args):
    try:
        opts = demo_parser().parse_args(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    run_demo(opts.out, sizes=tuple(opts.sizes), repeat=max(1, opts.repeat))
    return 0


def flow_main(args):
    """``tapegrad flow``: flow vs GD on a test problem; prints a table, optionally a picture."""
    try:
        opts = flow_parser().parse_args(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    from .flow import cli_report
    return cli_report(opts.problem, eta=opts.eta, method=opts.method, t_final=opts.t_final,
                      out=opts.out)


def bench_main(args=None):
    """``tapegrad bench`` (and ``python benchmarks/run.py``); returns the exit status."""
    try:
        from .bench import run_main
    except ImportError as exc:
        missing = getattr(exc, "name", None) or ""
        if missing.startswith("tapegrad.bench") or "cannot import name 'run_main'" in str(exc):
            print("tapegrad bench: the benchmark suite (tapegrad.bench) is not available in this "
                  "installation", file=sys.stderr)
            return 2
        raise
    return run_main(bench_parser().parse_args(args))


def dask_demo_main(argv):
    ap = argparse.ArgumentParser(prog="tapegrad dask-demo",
                                 description="data-parallel gradients and flow ensembles on Dask")
    ap.add_argument("--address", default=None,
                    help="a Dask scheduler (tcp://host:port); default: a LocalCluster started here")
    ap.add_argument("--workers", type=int, default=2, help="LocalCluster processes (default 2)")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--flows", type=int, default=20)
    args = ap.parse_args(argv)
    try:
        from . import dask as tgd
        tgd._modules()
    except ImportError as e:
        print(f"tapegrad dask-demo: {e}", file=sys.stderr)
        return 2
    tgd.demo(address=args.address, n_workers=args.workers, rows=args.rows, n_flows=args.flows)
    return 0


def main(argv=None):
    """Entry point of the ``tapegrad`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from ._version import __version__
        print(f"tapegrad {__version__}")
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "demo":
        return demo_main(rest)
    if cmd == "flow":
        return flow_main(rest)
    if cmd == "bench":
        return bench_main(rest)
    if cmd == "dask-demo":
        return dask_demo_main(rest)
    print(f"tapegrad: unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
