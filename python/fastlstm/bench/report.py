"""Rendering the runner's results: a text table, markdown (the README's performance section),
JSON (every raw number plus machine info) and a bar chart of the speed-up ratios.

Files are written atomically (a temporary file in the same folder, then os.replace), so an
interrupted run never leaves half a JSON behind.
"""

from __future__ import annotations

import json
import math

from ..io import atomic_write
from .runner import round_trip_text

SPEEDUP_NOTE = "vs X = X's median time / this backend's median time (> 1: fastlstm is faster)"


# ---------------------------------------------------------------------------------------------
# shared helpers

def _fmt_ms(v: float) -> str:
    return f"{v:.3g}" if v < 1 else (f"{v:.2f}" if v < 100 else f"{v:.0f}")


def _fmt_ratio(v: float) -> str:
    return f"{v:.2f}×" if v < 10 else f"{v:.1f}×"


def _sections(results: dict):
    """(threads, mode) pairs in run order."""
    seen = []
    for r in results["rows"]:
        k = (r["threads"], r["mode"])
        if k not in seen:
            seen.append(k)
    return seen


def _peak(results: dict, threads: int):
    for p in results["peaks"]:
        if p["threads"] == threads:
            return p
    return {"gflops": None, "state": "not measured"}


def _peak_text(p: dict, why: bool = False) -> str:
    if p["gflops"] is not None:
        return f"{p['gflops']:.1f} GFLOP/s"
    return f"— ({p['state']})" if why else "— (unavailable)"


def _peers_in(rows: list) -> list:
    out = []
    for r in rows:
        if r["kind"] == "peer" and r.get("status") == "ok" and r["contender"] not in out:
            out.append(r["contender"])
    return out


def _section_table(results: dict, threads: int, mode: str):
    """(header, rows); a row is a list of cells, or (first three cells, note) for untimed rows."""
    rows = [r for r in results["rows"] if r["threads"] == threads and r["mode"] == mode]
    peers = _peers_in(rows)
    ratio = {(s["shape"], s["dims"], s["backend"], s["peer"]): s["ratio"]
             for s in results["speedups"] if s["threads"] == threads and s["mode"] == mode}
    header = ["shape", "T×B×I×H", "contender", "median ms", "min–max ms", "GFLOP/s", "% peak"]
    header += [f"vs {p}" for p in peers]
    out = []
    for r in rows:
        head = [r["shape"], r["dims"], r["contender"]]
        if r.get("status") != "ok":
            out.append((head, r.get("note", r.get("status", "?"))))
            continue
        cells = head + [_fmt_ms(r["median_ms"]), f"{_fmt_ms(r['min_ms'])}–{_fmt_ms(r['max_ms'])}",
                        f"{r['gflops']:.1f}",
                        "—" if r.get("pct_peak") is None else f"{r['pct_peak']:.0f}%"]
        for p in peers:
            v = ratio.get((r["shape"], r["dims"], r["contender"], p))
            cells.append("—" if v is None else _fmt_ratio(v))
        out.append(cells)
    return header, out


def _stream_table(results: dict, threads: int):
    rows = [r for r in results["streaming"] if r["threads"] == threads]
    header = ["H (= I)", "contender", "median µs/step", "min–max µs"]
    out = []
    for r in rows:
        head = [str(r["H"]), r["contender"]]
        if r.get("status") != "ok":
            out.append((head, r.get("note", r.get("status", "?"))))
        else:
            out.append(head + [f"{r['median_us']:.1f}", f"{r['min_us']:.1f}–{r['max_us']:.1f}"])
    return header, out


def _footnotes(results: dict) -> list:
    notes = [SPEEDUP_NOTE]
    if any(r.get("cut_from") for r in results["rows"]):
        notes.append("* T truncated (--quick); FLOPs count the steps actually run")
    if any(r.get("variable") for r in results["rows"]):
        notes.append("var = variable lengths, uniform in 1..T; FLOPs count the real steps")
    notes.append("train = forward + backward of y.sum() (3× the forward FLOPs); "
                 "forward = inference (torch under no_grad)")
    tol = results["tolerance"]
    notes.append(f"every contender is checked against the float64 NumPy reference before it is "
                 f"timed: forward |got−ref| ≤ {tol['forward_atol']:g} + {tol['forward_rtol']:g}·|ref|, "
                 f"gradients max|got−ref|/max|ref| ≤ {tol['grad_rtol']:g}")
    return notes


def _busy(results: dict) -> str | None:
    """A warning when other processes used the CPUs while this run was timing."""
    other = results["machine"].get("others_busy_cpus")
    if other is None or other < 0.2:
        return None
    return (f"other processes kept {other} CPU(s) busy on average during this run: "
            f"expect noisy times, and compare min–max")


def _threads_text(results: dict) -> str:
    return ", ".join(str(t) for t in results["options"]["threads"])


# ---------------------------------------------------------------------------------------------
# text

def _text_table(header, rows) -> list:
    widths = [len(h) for h in header]
    for r in rows:
        cells = r[0] if isinstance(r, tuple) else r
        for i, c in enumerate(cells):
            widths[i] = max(widths[i], len(c))
    line = (lambda cells: "  ".join(c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip())
    out = [line(header)]
    for r in rows:
        if isinstance(r, tuple):
            out.append(line(r[0]).ljust(sum(widths[:len(r[0])]) + 2 * len(r[0])) + r[1])
        else:
            out.append(line(r))
    return out


def format_text(results: dict) -> str:
    m = results["machine"]
    v = m["versions"]
    lines = [f"fastlstm bench — {m['cpu']} ({m['cpus_usable']} usable CPUs), {m['date']}, "
             f"other processes' CPU use during the run: {m.get('others_busy_cpus')} CPUs",
             "versions: " + ", ".join(f"{k} {v[k]}" for k in ("fastlstm", "numpy", "torch",
                                                              "onnxruntime", "numba", "python")),
             f"memory allocator: {m.get('allocator', 'default')}",
             f"core-to-core round trip: {round_trip_text(m) or 'not measured'}",
             "contenders:"]
    for c in results["contenders"]:
        extra = f"  [{c['version']}]" if c.get("version") else ""
        state = c["state"] if len(c["state"]) < 110 else c["state"][:107] + "..."
        lines.append(f"  {c['name'] + ':':<13}{c['kind']:<9}{state}{extra}")
    for p in results["peaks"]:
        blas = "" if p.get("blas_threads") else " (NumPy BLAS threads not controllable)"
        lines.append(f"FMA peak, {p['threads']} thread(s): {_peak_text(p, why=True)}{blas}")
    if _busy(results):
        lines.append(f"WARNING: {_busy(results)}")
    for threads, mode in _sections(results):
        lines += ["", f"== {mode} · {threads} thread(s) · FMA peak {_peak_text(_peak(results, threads))} =="]
        lines += _text_table(*_section_table(results, threads, mode))
    for threads in results["options"]["threads"]:
        header, rows = _stream_table(results, threads)
        if rows:
            lines += ["", f"== streaming: one step, B = 1, state carried by the caller · {threads} thread(s) =="]
            lines += _text_table(header, rows)
    lines += [""] + [f"  {n}" for n in _footnotes(results)]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# markdown

def _md_table(header, rows) -> list:
    esc = (lambda s: str(s).replace("|", "\\|"))
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        if isinstance(r, tuple):
            cells = list(r[0]) + [r[1]] + ["—"] * (len(header) - len(r[0]) - 1)
        else:
            cells = r
        out.append("| " + " | ".join(esc(c) for c in cells) + " |")
    return out


def format_markdown(results: dict) -> str:
    m = results["machine"]
    v = m["versions"]
    cmd = " ".join(results["argv"]) if results.get("argv") is not None else None
    lines = [f"Measured on **{m['cpu']}** ({m['cpus_usable']} usable CPUs), "
             f"**{_threads_text(results)} thread(s)**, {m['date']}; "
             + ", ".join(f"{k} {v[k]}" for k in ("fastlstm", "numpy", "torch", "onnxruntime", "numba"))
             + f"; memory allocator: {m.get('allocator', 'default')}"
             + (f"; core-to-core round trip: {round_trip_text(m)}." if round_trip_text(m) else ".")]
    if cmd is not None:
        lines.append(f"Generated by `python -m fastlstm bench {cmd}`.".replace(" `.", "`."))
    if _busy(results):
        lines += ["", f"Note: {_busy(results)}."]
    missing = [f"{c['name']}: {c['state']}" for c in results["contenders"] if not c["state"].startswith("available")]
    if missing:
        lines += ["", "Not measured: " + "; ".join(missing) + "."]
    for threads, mode in _sections(results):
        lines += ["", f"#### {mode}, {threads} thread(s), FMA peak {_peak_text(_peak(results, threads))}", ""]
        lines += _md_table(*_section_table(results, threads, mode))
    for threads in results["options"]["threads"]:
        header, rows = _stream_table(results, threads)
        if rows:
            lines += ["", f"#### streaming: one time step, B = 1, state carried by the caller, {threads} thread(s)", ""]
            lines += _md_table(header, rows)
    lines += [""] + [f"- {n}" for n in _footnotes(results)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# files

def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if hasattr(o, "item") and getattr(o, "ndim", 1) == 0:       # NumPy scalars
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None                                               # strict JSON has no NaN
    if o is None or isinstance(o, (bool, int, float, str)):
        return o
    return str(o)


def write_json(results: dict, path: str) -> None:
    data = json.dumps(_jsonable(results), indent=1, allow_nan=False).encode()
    atomic_write(path, lambda f: f.write(data))


def write_markdown(results: dict, path: str) -> None:
    data = format_markdown(results).encode()
    atomic_write(path, lambda f: f.write(data))


def write_plot(results: dict, path: str) -> None:
    """Bar chart of the speed-up ratios, one panel per (mode, threads), log scale around 1."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg   # Agg, without touching pyplot
    from matplotlib.figure import Figure

    from matplotlib.ticker import FuncFormatter, NullFormatter

    secs = _sections(results) or [(None, None)]
    threads_l = list(dict.fromkeys(t for t, _ in secs))
    modes_l = list(dict.fromkeys(m for _, m in secs))
    n_shapes = len({r["shape"] for r in results["rows"]})
    fig = Figure(figsize=(len(modes_l) * max(5.0, 1.3 * n_shapes + 2), 3.4 * len(threads_l) + 0.6))
    FigureCanvasAgg(fig)
    m = results["machine"]
    fig.suptitle(f"fastlstm speed-up vs peers — {m['cpu']}, {m['date'][:10]}", fontsize=10)
    for threads, mode in secs:
        k = threads_l.index(threads) * len(modes_l) + modes_l.index(mode)
        ax = fig.add_subplot(len(threads_l), len(modes_l), k + 1)
        sp = [s for s in results["speedups"] if s["threads"] == threads and s["mode"] == mode]
        ax.set_title(f"{mode}, {threads} thread(s)" if mode else "", fontsize=9)
        if not sp:
            ax.text(0.5, 0.5, "no ratios (no peer or no fastlstm backend passed its check)",
                    ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        shapes = list(dict.fromkeys(s["shape"] for s in sp))
        series = list(dict.fromkeys(f"{s['backend']} vs {s['peer']}" for s in sp))
        width = 0.8 / len(series)
        for j, name in enumerate(series):
            vals = {s["shape"]: s["ratio"] for s in sp if f"{s['backend']} vs {s['peer']}" == name}
            xs = [i + (j - (len(series) - 1) / 2) * width for i, sh in enumerate(shapes) if sh in vals]
            ys = [vals[sh] for sh in shapes if sh in vals]
            bars = ax.bar(xs, ys, width, label=name)
            ax.bar_label(bars, labels=[f"{v:.2g}" if v < 10 else f"{v:.0f}" for v in ys], fontsize=6)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(range(len(shapes)))
        ax.set_xticklabels(shapes, fontsize=8)
        ax.set_ylabel("peer time / fastlstm time")
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
