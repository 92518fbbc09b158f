"""Writing a run's results: results.md (tables), results.json (raw numbers), PNG charts."""
import json
import math
import os

import numpy

from .suite import fmt_time
from .tools import TOOL_ORDER, TOOL_LABELS


def _ratio(v):
    if v is None:
        return ""
    if v >= 100:
        return f"{v:.0f}×"
    if v >= 10:
        return f"{v:.1f}×"
    return f"{v:.2f}×"


def _bytes(b):
    if b is None:
        return "—"
    for unit, k in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= k:
            return f"{b / k:.3g} {unit}"
    return f"{b} B"


def _tools_in(res):
    present = {r["tool"] for r in res["rows"]}
    return [t for t in TOOL_ORDER if t in present] + sorted(present - set(TOOL_ORDER))


def machine_line(res):
    m = res["machine"]
    th = m.get("threads", {})
    blas = th.get("blas") or []
    blas_s = ", ".join(f"{b.get('internal_api')} {b.get('version')} ({b.get('architecture')}, "
                       f"{b.get('num_threads')} thread{'s' if b.get('num_threads') != 1 else ''})"
                       for b in blas) or th.get("blas_method", "unknown BLAS")
    env = {k: v for k, v in m["env"].items() if k.startswith("OPENBLAS_CORE") or k == "OPENBLAS_L2_SIZE"}
    env_s = ", ".join(f"{k}={v}" for k, v in env.items() if v is not None) or \
        "OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset"
    return (f"{m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), {m['memory']}; "
            f"{m['platform']}; Python {m['python']}, NumPy {m['numpy']}, SciPy {m['scipy']}; "
            f"BLAS: {blas_s}; {env_s}" + _load(m))


def _load(m):
    a, b = m.get("loadavg_at_start"), m.get("loadavg_1_5_15")
    if not a or not b:
        return ""
    return f"; load average (1 min) {a[0]:.1f} at start, {b[0]:.1f} at end"


def markdown(res):
    tools = _tools_in(res)
    rows = res["rows"]
    v = res["versions"]
    out = []
    out.append("# tapegrad benchmark results\n")
    out.append(f"- date: {res['date']} (run took {res['duration_s']} s)")
    out.append(f"- command: `{res['command']}`")
    out.append(f"- machine: {machine_line(res)}")
    tg_src = res["machine"].get("tapegrad", {})
    if tg_src.get("commit"):
        out.append(f"- tapegrad: {tg_src['version']} at commit {tg_src['commit']}")
    out.append(f"- threads: {res['config']['threads']} intra-op thread(s) for BLAS, torch, XLA and tapegrad's sweeps "
               f"({res['machine']['threads'].get('blas_method')})")
    out.append("- versions: " + ", ".join(f"{TOOL_LABELS.get(k, k)} {val}" for k, val in v.items()))
    if res["skipped_tools"]:
        out.append("- not run: " + ", ".join(f"{k} ({val})" for k, val in res["skipped_tools"].items()))
    out.append("- method: every derivative checked against tapegrad's before timing; warm-up, then "
               f"samples for at least {res['config']['min_time']} s; median per call, "
               "IQR = interquartile range of the samples; f(x) is timed in samples interleaved "
               "with the derivative's, and deriv / f is the median of those paired ratios. One run "
               "on a shared machine: read ratios, not absolute times.")
    out.append("")
    out.append("## Derivative time, median per call (× = time / tapegrad replay)\n")
    out.append("| workload | " + " | ".join(TOOL_LABELS.get(t, t) for t in tools) + " |")
    out.append("|---" * (len(tools) + 1) + "|")
    for wl in res["workloads"]:
        cells = []
        for t in tools:
            r = next((r for r in rows if r["workload"] == wl["label"] and r["tool"] == t), None)
            if r is None:
                cells.append("")
            elif "unsupported" in r:
                cells.append("n/a")
            elif t == "tg-replay":
                cells.append(f"**{fmt_time(r['deriv']['median'])}**")
            else:
                cells.append(f"{fmt_time(r['deriv']['median'])} ({_ratio(r.get('x_replay'))})")
        out.append(f"| {wl['label']} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("Derivative per workload kind: `grad` gradient; `hvp` Hessian-vector product; "
               "`jacobian fwd/rev` the full Jacobian; `gradient flow` one whole `solve_ivp` (RK45) "
               "run of dw/dt = -grad f(w), the gradient as its right-hand side.\n")

    out.append("## Details\n")
    out.append("| workload | tool | derivative | IQR | × replay | × hand NumPy | f(x) | deriv / f "
               "| one-off | peak Python memory | notes |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "unsupported" in r:
            out.append(f"| {r['workload']} | {TOOL_LABELS.get(r['tool'], r['tool'])} | n/a | | | | "
                       f"| | | | {r['unsupported']} |")
            continue
        d = r["deriv"]
        val = r.get("value")
        setup = []
        for k, s in r.get("setup", {}).items():
            t = s.get("timing", {}).get("median", s.get("once"))
            setup.append(f"{k} {fmt_time(t)}")
        notes = []
        ex = r.get("extra", {})
        if "tape_bytes" in ex:
            notes.append(f"{ex['ops']} ops, tape {_bytes(ex['tape_bytes'])}, work {_bytes(ex['work_bytes'])}")
        if "nfev" in ex:
            notes.append(f"{ex['nfev']} rhs calls")
        mem = r.get("peak_python_bytes")
        mem_s = _bytes(mem) if mem is not None else "not traced"
        out.append(f"| {r['workload']} | {TOOL_LABELS.get(r['tool'], r['tool'])} | "
                   f"{fmt_time(d['median'])} | {fmt_time(d['iqr'])} | {_ratio(r.get('x_replay'))} | "
                   f"{_ratio(r.get('x_numpy'))} | {fmt_time(val['median']) if val else '—'} | "
                   f"{_ratio(r.get('deriv_over_value'))} | {', '.join(setup)} | {mem_s} | "
                   f"{'; '.join(notes)} |")
    out.append("")
    out.append("Peak Python memory is tracemalloc's peak during one derivative call (NumPy's array "
               "data included); JAX and torch allocate outside Python's allocators, so theirs is "
               "not traced. One-off: tapegrad's recording (median of repeated `tg.record`), "
               "JAX's jit compilation (first call).\n")

    s = res["summary"]
    out.append("## Issue 4 speed bars\n")
    out.append("| bar | measured | target | met | how |")
    out.append("|---|---|---|---|---|")
    for b in s["issue4"]:
        met = "—" if b["met"] is None else ("yes" if b["met"] else "**no**")
        val = "not measured" if b["value"] is None else _ratio(b["value"])
        out.append(f"| {b['bar']} | {val} | {b['target']} | {met} | {b.get('how', '')} |")
    th = res.get("threads")
    if th:
        out.append("")
        out.append(f"Threads: `{th['ops']}`-op tape, n = {th['n']}, {th['calls_per_thread']} "
                   f"grads per thread; 1 thread {th['one_thread_s']:.3f} s, 2 threads "
                   f"{th['two_threads_s']:.3f} s for twice the work; ratios "
                   + ", ".join(f"{x:.2f}" for x in th["ratios"]) + ".")
    out.append("")
    if res.get("batch"):
        from .batch import markdown as batch_markdown
        out.extend(batch_markdown(res["batch"]))
    if s["weakest"]:
        out.append("## Where tapegrad replay trails the best peer most\n")
        out.append("| workload | tapegrad replay | best peer | its time | replay / best |")
        out.append("|---|---|---|---|---|")
        for w in s["weakest"][:5]:
            out.append(f"| {w['workload']} | {fmt_time(w['replay_s'])} | "
                       f"{TOOL_LABELS.get(w['best_peer'])} | {fmt_time(w['best_peer_s'])} | "
                       f"{_ratio(w['replay_over_best'])} |")
        out.append("")
    return "\n".join(out)


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (numpy.floating, numpy.integer)):
        return o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def charts(res, out_dir):
    """bars.png (per workload, log scale) and rosenbrock.png (grad time vs n, grad / f).
    Returns the written paths, or [] when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    tools = _tools_in(res)
    colors = {t: plt.cm.tab10(i) for i, t in enumerate(TOOL_ORDER)}
    rows = res["rows"]
    paths = []

    wls = res["workloads"]
    ncol = min(4, len(wls))
    nrow = math.ceil(len(wls) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 2.9 * nrow), squeeze=False)
    for ax, wl in zip(axes.ravel(), wls):
        xs, hs, cs = [], [], []
        for t in tools:
            r = next((r for r in rows if r["workload"] == wl["label"] and r["tool"] == t
                      and "deriv" in r), None)
            if r is not None:
                xs.append(TOOL_LABELS.get(t, t).replace(" ", "\n", 1))
                hs.append(r["deriv"]["median"])
                cs.append(colors.get(t, "gray"))
        ax.bar(range(len(hs)), hs, color=cs)
        ax.set_yscale("log")
        ax.set_xticks(range(len(hs)))
        ax.set_xticklabels(xs, fontsize=6, rotation=60)
        ax.set_title(wl["label"], fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_ylabel("s per call", fontsize=7)
    for ax in axes.ravel()[len(wls):]:
        ax.axis("off")
    fig.suptitle("derivative time per call (log scale; lower is better)", fontsize=10)
    fig.tight_layout()
    p = os.path.join(out_dir, "bars.png")
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)

    ros = [r for r in rows if r["name"] == "rosenbrock" and "deriv" in r]
    if ros:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
        for t in tools:
            rs = sorted((r for r in ros if r["tool"] == t), key=lambda r: r["n"])
            if not rs:
                continue
            n = [r["n"] for r in rs]
            a1.loglog(n, [r["deriv"]["median"] for r in rs], "o-", color=colors.get(t, "gray"),
                      label=TOOL_LABELS.get(t, t))
            q = [(r["n"], r["deriv_over_value"]) for r in rs if "deriv_over_value" in r]
            if q:
                a2.semilogx([a for a, _ in q], [b for _, b in q], "o-", color=colors.get(t, "gray"),
                            label=TOOL_LABELS.get(t, t))
        ns = sorted({r["n"] for r in ros})
        rp = sorted((r for r in ros if r["tool"] == "tg-replay"), key=lambda r: r["n"])
        if rp and len(ns) > 1:
            base = rp[-1]["deriv"]["median"] / rp[-1]["n"]
            a1.loglog(ns, [base * n for n in ns], "k:", lw=1, label="linear in n")
        a1.set_xlabel("n")
        a1.set_ylabel("gradient time (s)")
        a1.set_title("Rosenbrock: gradient time vs n")
        a1.legend(fontsize=7)
        a2.axhline(3.0, color="k", ls=":", lw=1, label="cheap-gradient bar (3)")
        a2.set_xlabel("n")
        a2.set_ylabel("grad time / f time")
        a2.set_title("cheap-gradient ratio grad / f")
        a2.set_yscale("log")
        a2.legend(fontsize=7)
        fig.tight_layout()
        p = os.path.join(out_dir, "rosenbrock.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


def write(res, out_dir, pictures=True):
    """Write results.md, results.json and the charts into ``out_dir``; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    pngs = charts(res, out_dir) if pictures else []
    res["files"] = ["results.md", "results.json"] + [os.path.basename(p) for p in pngs]
    md = os.path.join(out_dir, "results.md")
    with open(md, "w", encoding="utf-8") as fh:
        fh.write(markdown(res))
    js = os.path.join(out_dir, "results.json")
    with open(js, "w", encoding="utf-8") as fh:
        json.dump(_jsonable(res), fh, indent=1)
    return [md, js] + pngs
