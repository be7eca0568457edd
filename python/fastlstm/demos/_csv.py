"""`python -m fastlstm forecast FILE.csv --column NAME --horizon N`: forecast a user's own series.

Reads the CSV with pandas, takes the numeric column NAME (NaN gaps inside are interpolated, see
Forecaster), uses --date-column (or a first column that parses as dates) as the time index so the
seasonal period comes from its frequency, fits the Forecaster with its defaults (horizon N,
direct multi-output), and writes to --out: forecast.csv (time, forecast, lower, upper of the 90%
interval), forecast.png (history, forecast, interval) and report.md, which also holds a rolling
one-step backtest over the last 20% of the series beside the baselines when the series is long
enough for one.
"""

from __future__ import annotations

import io
import os
import sys
import warnings

import numpy as np

from ._report import Timer, machine_line, markdown_table, write_text


def _read(path, column, date_column):
    try:
        import pandas as pd
    except ImportError as e:
        raise ImportError("forecast FILE.csv needs pandas: pip install 'fastlstm[examples]'") from e
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise ValueError(f"no such file: {path}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a readable CSV file: {e}") from None
    if column not in df.columns:
        raise ValueError(f"--column {column!r} is not a column of {path}; columns: {', '.join(map(str, df.columns))}")
    values = pd.to_numeric(df[column], errors="coerce")
    bad = values.isna() & df[column].notna()
    if bad.any():
        raise ValueError(f"column {column!r} holds non-numeric values, e.g. {df[column][bad].iloc[0]!r} "
                         f"(row {int(np.flatnonzero(bad.to_numpy())[0]) + 2} of the file)")
    dcol = date_column
    if dcol is None:  # a first column that parses entirely as dates is the time index
        first = df.columns[0]
        if first != column and not pd.api.types.is_numeric_dtype(df[first]):
            try:
                pd.to_datetime(df[first], errors="raise", format="mixed")
                dcol = first
            except (ValueError, TypeError):
                dcol = None
    elif dcol not in df.columns:
        raise ValueError(f"--date-column {dcol!r} is not a column of {path}")
    series = pd.Series(values.to_numpy(np.float64), name=column)
    if dcol is not None:
        idx = pd.DatetimeIndex(pd.to_datetime(df[dcol], format="mixed"))
        with warnings.catch_warnings():  # pandas 3 warns that infer_freq will return an offset
            warnings.simplefilter("ignore")
            freq = pd.infer_freq(idx) if len(idx) >= 3 else None
        freq = getattr(freq, "freqstr", freq)
        if freq is not None:
            idx = pd.DatetimeIndex(idx, freq=freq)
        series.index = idx
    return series


def main(args) -> int:
    from ..baselines import Persistence, SeasonalNaive, WindowMLPForecaster
    from ..models import Forecaster

    y = _read(args.file, args.column, args.date_column)
    h = args.horizon
    stem = os.path.splitext(os.path.basename(args.file))[0]
    out = args.out or f"forecast-{stem}"
    kw = dict(epochs=2, n_models=1) if args.smoke else {}
    est = Forecaster(horizon=h, random_state=args.seed, verbose=0 if args.no_progress else 1, **kw)
    with Timer() as t:
        est.fit(y)
    mean, lower, upper = est.predict(h, return_interval=True)
    idx = getattr(mean, "index", None)
    buf = io.StringIO()
    buf.write("time,forecast,lower,upper\n")
    for k in range(h):
        tk = idx[k] if idx is not None else len(y) + k
        buf.write(f"{tk},{float(np.asarray(mean)[k])!r},{float(np.asarray(lower)[k])!r},{float(np.asarray(upper)[k])!r}\n")
    csv_path = write_text(os.path.join(out, "forecast.csv"), buf.getvalue())
    png_path = est.plot(os.path.join(out, "forecast.png"), horizon=h,
                        title=f"{stem}: {args.column}, {h} steps ahead (90% interval)")
    lines = [f"# fastlstm forecast: {args.file}, column {args.column}\n",
             f"{len(y)} values; seasonal period {est.period_}; window {est.window_}; horizon {h} "
             f"(direct multi-output); fit {t.seconds:.1f} s. Machine: {machine_line()}.\n",
             "![forecast](forecast.png)\n"]
    # a backtest beside the baselines, when the series can spare a hold-out
    try:
        rows = []
        for b in [Forecaster(random_state=args.seed, **kw), Persistence(), SeasonalNaive(),
                  WindowMLPForecaster(random_state=args.seed, **({"epochs": 2} if args.smoke else {}))]:
            r = b.backtest(y, test_size=0.2)
            rows.append([b.name, r.rmse, r.mae])
        lines.append("One-step-ahead backtest over the last 20% (rolling, true history as input):\n\n"
                     + markdown_table(["model", "RMSE", "MAE"], rows) + "\n")
    except ValueError as e:
        lines.append(f"No backtest: {e}\n")
    rep = write_text(os.path.join(out, "report.md"), "\n".join(lines))
    for p in (csv_path, png_path, rep):
        print(f"wrote {p}", file=sys.stdout)
    return 0
