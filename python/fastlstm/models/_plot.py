"""Figures for the estimators and demos: matplotlib on the Agg backend, written atomically.

One function per figure; each takes the path the caller names and writes a PNG through a temp
file in the same folder, fsync, rename (a crash never leaves half a PNG behind).
"""

from __future__ import annotations

import sys

from ..io import atomic_write


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("plotting needs matplotlib: pip install 'fastlstm[examples]'") from e
    if "matplotlib.pyplot" not in sys.modules:  # a user's own pyplot session keeps its backend
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> str:
    """Write fig as PNG to path atomically; close it; return the path."""
    try:
        return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    finally:
        fig.clear()
        _pyplot().close(fig)


def forecast_figure(path, history_x, history_y, forecasts, truth_x=None, truth_y=None, title=None,
                    ylabel=None):
    """History, hold-out truth and one or more forecasts with optional interval bands.

    forecasts: list of dicts {label, x, y, lower=None, upper=None}.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(history_x, history_y, color="0.25", lw=1.2, label="history")
    if truth_y is not None:
        ax.plot(truth_x, truth_y, color="black", lw=1.2, ls="--", label="hold-out truth")
    colors = ["tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown"]
    for i, fc in enumerate(forecasts):
        c = colors[i % len(colors)]
        ax.plot(fc["x"], fc["y"], color=c, lw=1.4, label=fc["label"])
        if fc.get("lower") is not None:
            ax.fill_between(fc["x"], fc["lower"], fc["upper"], color=c, alpha=0.18, lw=0,
                            label=fc.get("band_label", f"{fc['label']} interval"))
    if title:
        ax.set_title(title)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def bar_figure(path, groups, series, title=None, ylabel=None, lower_is_better=False):
    """Grouped bars: groups (x labels), series {label: [value per group]}."""
    plt = _pyplot()
    import numpy as np

    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups) + 2), 4))
    k = len(series)
    width = 0.8 / max(k, 1)
    x = np.arange(len(groups))
    for i, (label, vals) in enumerate(series.items()):
        ax.bar(x + (i - (k - 1) / 2) * width, vals, width, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels(groups)
    if title:
        ax.set_title(title + (" (lower is better)" if lower_is_better else ""))
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)
