"""The benchmark suite: tapegrad against autograd, JAX, torch.func and hand-written NumPy.

    tapegrad bench                      # every installed tool, default sizes (a few minutes)
    tapegrad bench --quick              # tiny sizes, tapegrad and NumPy only (seconds)
    python benchmarks/run.py --tools tg-replay,autograd --sizes 100,1e5 --out results/

Layout: ``workloads`` (one source per function, ``fun(x, d, np)``, plus hand-written
derivatives), ``tools`` (one adapter per tool), ``timing`` (median/IQR timer, tracemalloc),
``suite`` (check, time, summarize), ``report`` (Markdown, JSON, PNG).
"""
import argparse
import os
import sys

from .suite import Config, run, DerivativeMismatch, check_derivative, summarize
from .tools import TOOL_ORDER, Tool, Prepared, Unsupported, HandNumpy
from .workloads import Sizes, QUICK_SIZES, build
from . import report

QUICK_TOOLS = ("tg-replay", "tg-retrace", "numpy")


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


def _parser():
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
                        "rosenbrock, logistic, mlp, hvp, jac_fwd, jac_rev, ode (default: all)")
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds of timing samples per measurement (default 0.25; quick 0.01)")
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads for BLAS, torch and XLA (default 1)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG charts")
    p.add_argument("--no-memory", action="store_true", help="skip the tracemalloc measurements")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    return p


def config_from_args(args):
    if args.tools:
        tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    else:
        tools = list(QUICK_TOOLS if args.quick else TOOL_ORDER)
    sizes = QUICK_SIZES if args.quick else Sizes()
    if args.sizes:
        sizes = Sizes(**{**vars(sizes), "rosenbrock": args.sizes})
    min_time = args.min_time if args.min_time is not None else (0.01 if args.quick else 0.25)
    return Config(tools=tools, sizes=sizes,
                  workloads=[w.strip() for w in args.workloads.split(",")] if args.workloads else None,
                  min_time=min_time, setup_time=min(0.1, min_time * 2), threads=args.threads,
                  memory=not args.no_memory, quick=args.quick,
                  progress=None if args.quiet else sys.stderr)


def main(argv=None):
    """``tapegrad bench`` entry point; returns the exit status (1 when a derivative check fails)."""
    args = _parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        res = run(cfg)
    except DerivativeMismatch as e:
        sys.stderr.write("\n" + "!" * 78 + "\n" + str(e) + "\n" + "!" * 78 + "\n"
                         "The benchmark stopped: no results were written.\n")
        return 1
    except ValueError as e:
        sys.stderr.write(f"tapegrad bench: {e}\n")
        return 2
    paths = report.write(res, args.out, pictures=not args.no_plots)
    if not args.quiet:
        sys.stderr.write("wrote " + ", ".join(os.path.relpath(p) for p in paths) + "\n")
        sys.stdout.write(report.markdown(res) + "\n")
    return 0


__all__ = ["main", "run", "Config", "Sizes", "QUICK_SIZES", "build", "DerivativeMismatch",
           "check_derivative", "summarize", "Tool", "Prepared", "Unsupported", "HandNumpy",
           "report", "TOOL_ORDER"]
