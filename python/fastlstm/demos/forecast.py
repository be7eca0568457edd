"""`python -m fastlstm demo forecast`: the Forecaster on Airline and yearly sunspots, beside baselines.

For each series: a rolling one-step-ahead backtest over the last 20% (true history as input,
models fitted once on the first 80%) of the LSTM, persistence, seasonal naive and the window
MLP; then a multi-step forecast of one season (12 months for Airline) from the 80% point, the
LSTM (direct multi-output) against seasonal naive and the window MLP. Writes report.md and PNG
plots to --out. --smoke: tiny training budgets (checks the plumbing in seconds, not the figures).
"""

from __future__ import annotations

import os

import numpy as np

from ._report import Progress, Timer, machine_line, markdown_table, write_text

DEFAULT_DATASETS = ("Airline", "Sunspots")
TEST_FRACTION = 0.2


def _estimators(horizon, smoke, seed):
    from ..baselines import Persistence, SeasonalNaive, WindowMLPForecaster
    from ..models import Forecaster

    kw = dict(epochs=2, n_models=1) if smoke else {}
    mlp_kw = dict(epochs=2) if smoke else {}
    return [Forecaster(horizon=horizon, random_state=seed, **kw), Persistence(), SeasonalNaive(),
            WindowMLPForecaster(horizon=horizon, random_state=seed, **mlp_kw)]


def _rmse(a, b):
    return float(np.sqrt(np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2)))


def run_dataset(name, out, smoke=False, seed=0, progress=None):
    """Backtest + multi-step for one series; returns (one-step rows, multi-step rows, notes)."""
    from .. import datasets
    from ..models._plot import forecast_figure

    y = datasets.load_forecasting(name)
    n = len(y)
    cut = n - int(round(n * TEST_FRACTION))
    slug = name.lower()
    one, results = [], {}
    for est in _estimators(1, smoke, seed):
        with Timer() as t:
            r = est.backtest(y, test_size=TEST_FRACTION)
        results[est.name] = r
        one.append([est.name, r.rmse, r.mae, r.coverage, t.seconds])
        if progress:
            progress.step(f"{name} one-step {est.name}")
    lstm = results["LSTM"]
    x = y.index.to_timestamp()
    fcs = [dict(label="LSTM (one-step rolling)", x=x[cut:], y=lstm.forecast[0][:, 0],
                lower=lstm.lower[0][:, 0], upper=lstm.upper[0][:, 0], band_label="LSTM 90% interval")]
    for b in ("window MLP", "seasonal naive"):
        fcs.append(dict(label=f"{b} (one-step rolling)", x=x[cut:], y=results[b].forecast[0][:, 0]))
    forecast_figure(os.path.join(out, f"{slug}_one_step.png"), x[:cut], y.to_numpy()[:cut], fcs, x[cut:],
                    y.to_numpy()[cut:], title=f"{name}: one-step-ahead forecasts over the last 20%",
                    ylabel=y.name)

    # multi-step: one season ahead (12 for monthly data) from the 80% point
    head = y.iloc[:cut]
    probe = _estimators(1, smoke, seed)[2].fit(head)  # seasonal naive finds the period
    h = int(probe.period_ or 12)
    h = min(h, n - cut)
    truth = y.to_numpy()[cut:cut + h]
    multi, fcs = [], []
    for est in _estimators(h, smoke, seed):
        if est.name == "persistence":
            continue
        with Timer() as t:
            est.fit(head)
            mean, lower, upper = est.predict(h, return_interval=True)
        multi.append([est.name, _rmse(mean, truth), t.seconds])
        fcs.append(dict(label=est.name, x=x[cut:cut + h], y=np.asarray(mean, dtype=np.float64),
                        lower=None if lower is None else np.asarray(lower, dtype=np.float64),
                        upper=None if upper is None else np.asarray(upper, dtype=np.float64),
                        band_label=f"{est.name} 90% interval"))
        if progress:
            progress.step(f"{name} {h}-step {est.name}")
    show = max(0, cut - max(4 * h, 48))  # the last few seasons of history: the forecast stays readable
    forecast_figure(os.path.join(out, f"{slug}_multi_step.png"), x[show:cut], head.to_numpy()[show:], fcs,
                    x[cut:cut + h], truth, title=f"{name}: {h} steps ahead from the 80% point", ylabel=y.name)
    notes = dict(n=n, cut=cut, horizon=h, period=probe.period_, index_freq=y.index.freqstr)
    return one, multi, notes


def main(args) -> int:
    out = args.out or os.path.join("demo-report", "forecast")
    names = args.datasets or (["Airline"] if args.smoke else list(DEFAULT_DATASETS))
    progress = Progress(total=len(names) * 7, desc="demo forecast", disable=args.no_progress)
    sections = []
    try:
        for name in names:
            one, multi, notes = run_dataset(name, out, smoke=args.smoke, seed=args.seed, progress=progress)
            best = min((r for r in one if r[0] != "LSTM"), key=lambda r: r[1])
            lstm = next(r for r in one if r[0] == "LSTM")
            verdict = (f"the LSTM beats the best baseline ({best[0]}, {best[1]:.4g}) with {lstm[1]:.4g}"
                       if lstm[1] < best[1] else
                       f"the LSTM ({lstm[1]:.4g}) LOSES to {best[0]} ({best[1]:.4g})")
            bm = min((r for r in multi if r[0] != "LSTM"), key=lambda r: r[1])
            lm = next(r for r in multi if r[0] == "LSTM")
            mverdict = (f"the LSTM beats {bm[0]} ({bm[1]:.4g}) with {lm[1]:.4g}" if lm[1] < bm[1] else
                        f"the LSTM ({lm[1]:.4g}) LOSES to {bm[0]} ({bm[1]:.4g})")
            sections.append(
                f"## {name}\n\n{notes['n']} values (index frequency {notes['index_freq']}, seasonal period "
                f"{notes['period']}); models fitted on the first {notes['cut']}.\n\n"
                f"One-step-ahead, rolling over the last {notes['n'] - notes['cut']} values (true history as input): "
                f"{verdict}.\n\n"
                + markdown_table(["model", "RMSE", "MAE", "90% interval coverage", "backtest seconds"], one)
                + f"\n\n![one-step]({name.lower()}_one_step.png)\n\n"
                f"{notes['horizon']} steps ahead from the 80% point (one forecast path): {mverdict}.\n\n"
                + markdown_table(["model", f"RMSE over {notes['horizon']} steps", "fit+predict seconds"], multi)
                + f"\n\n![multi-step]({name.lower()}_multi_step.png)\n")
    finally:
        progress.close()
    head = ("# fastlstm demo: forecasting\n\n"
            + ("**Smoke run (--smoke): tiny training budgets, the numbers mean nothing.**\n\n" if args.smoke else "")
            + "Forecaster defaults (no per-dataset tuning); baselines: persistence, seasonal naive, "
              "window MLP (same windows, differencing, scaling and budget as the LSTM).\n"
              f"Machine: {machine_line()}; seed {args.seed}.\n\n")
    path = write_text(os.path.join(out, "report.md"), head + "\n".join(sections))
    print(open(path, encoding="utf-8").read())
    print(f"wrote {path}")
    return 0
