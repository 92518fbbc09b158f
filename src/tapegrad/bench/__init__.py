"""The benchmark suite: tapegrad against autograd, JAX, torch.func and hand-written NumPy.

    tapegrad bench                      # every installed tool, default sizes (a few minutes)
    tapegrad bench --quick              # tiny sizes, tapegrad and NumPy only (seconds)
    python benchmarks/run.py --tools tg-replay,autograd --sizes 100,1e5 --out results/

Layout: ``workloads`` (one source per function, ``fun(x, d, np)``, plus hand-written
derivatives), ``tools`` (one adapter per tool), ``timing`` (median/IQR timer, tracemalloc),
``suite`` (check, time, summarize), ``report`` (Markdown, JSON, PNG).
"""
import os
import sys

from .suite import Config, run, DerivativeMismatch, check_derivative, summarize
from .tools import TOOL_ORDER, Tool, Prepared, Unsupported, HandNumpy
from .workloads import Sizes, QUICK_SIZES, build
from . import report

QUICK_TOOLS = ("tg-replay", "tg-retrace", "numpy")


def config_from_args(args):
    """The suite's Config from the options ``tapegrad.cli`` parsed for ``tapegrad bench``."""
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
                  batch=not getattr(args, "no_batch", False),
                  progress=None if args.quiet else sys.stderr)


def run_main(args):
    """``tapegrad bench`` once its options are parsed (by ``tapegrad.cli``); returns the exit
    status (1 when a derivative check fails, 2 for a bad option value)."""
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


__all__ = ["run_main", "config_from_args", "run", "Config", "Sizes", "QUICK_SIZES", "build", "DerivativeMismatch",
           "check_derivative", "summarize", "Tool", "Prepared", "Unsupported", "HandNumpy",
           "report", "TOOL_ORDER"]
