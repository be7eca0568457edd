"""Demos behind `python -m fastlstm demo KIND` and `python -m fastlstm forecast FILE.csv`.

Every public module here (no leading underscore) is a demo kind: `fastlstm.demos.<kind>.main(args)`
runs it with the parsed command-line arguments (out, smoke, seed, no_progress, datasets) and
returns an exit status. Each writes a report folder: report.md (metrics tables in markdown, the
LSTM beside its baselines) and PNG plots.
"""

import pkgutil


def kinds() -> list:
    """The demo kinds available: the public modules of this package."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
