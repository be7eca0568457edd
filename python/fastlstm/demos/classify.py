"""`python -m fastlstm demo classify`: the SequenceClassifier on GunPoint and JapaneseVowels.

Fits the LSTM and the MLP baseline (resampled, flattened series) on each official train split
with their defaults and scores the test split; writes report.md (accuracy and fit time side by
side) and PNG plots (accuracies; the LSTM's training loss). --datasets takes any of aeon's
bundled problems (fastlstm.datasets.CLASSIFICATION_DATASETS). --smoke: tiny budgets.
"""

from __future__ import annotations

import os

import numpy as np

from ._report import Progress, Timer, machine_line, markdown_table, write_text

DEFAULT_DATASETS = ("GunPoint", "JapaneseVowels")


def _describe(X):
    if isinstance(X, list):
        lens = [np.shape(x)[-1] for x in X]
        C = np.shape(X[0])[0]
        return f"{len(X)} cases, {C} channel{'s' * (C > 1)}, lengths {min(lens)}..{max(lens)}"
    return f"{X.shape[0]} cases, {X.shape[1]} channel{'s' * (X.shape[1] > 1)}, length {X.shape[2]}"


def _loss_figure(path, curves):
    from ..models._plot import _pyplot, save_figure

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, loss in curves.items():
        ax.plot(np.arange(1, len(loss) + 1), loss, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (cross-entropy)")
    ax.set_title("SequenceClassifier training loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def main(args) -> int:
    from .. import datasets
    from ..baselines import MLPClassifier
    from ..models import SequenceClassifier
    from ..models._plot import bar_figure

    out = args.out or os.path.join("demo-report", "classify")
    names = args.datasets or (["GunPoint"] if args.smoke else list(DEFAULT_DATASETS))
    kw = dict(epochs=2) if args.smoke else {}
    progress = Progress(total=2 * len(names), desc="demo classify", disable=args.no_progress)
    rows, acc, curves, lines = [], {"LSTM": [], "MLP": []}, {}, []
    try:
        for name in names:
            Xtr, ytr = datasets.load_classification(name, "train")
            Xte, yte = datasets.load_classification(name, "test")
            lines.append(f"- {name}: train {_describe(Xtr)}; test {_describe(Xte)}; "
                         f"{len(set(ytr.tolist()))} classes")
            res = {}
            for label, est in (("LSTM", SequenceClassifier(random_state=args.seed, **kw)),
                               ("MLP", MLPClassifier(random_state=args.seed, **kw))):
                with Timer() as t:
                    est.fit(Xtr, ytr)
                res[label] = (est.score(Xte, yte), t.seconds, est)
                acc[label].append(res[label][0])
                progress.step(f"{name} {label}")
            lstm = res["LSTM"][2]
            curves[name] = lstm.history_["loss"]
            rows.append([name, res["LSTM"][0], res["MLP"][0], res["LSTM"][1], res["MLP"][1],
                         f"frame {lstm.frame_}, {lstm.n_epochs_} epochs"])
    finally:
        progress.close()
    bar_figure(os.path.join(out, "accuracy.png"), names, acc, title="test accuracy", ylabel="accuracy")
    _loss_figure(os.path.join(out, "training_loss.png"), curves)
    losses = [r[0] for r in rows if r[1] < r[2]]
    verdict = ("The LSTM loses to the MLP on: " + ", ".join(losses) + "." if losses
               else "The LSTM matches or beats the MLP on every data set here.")
    text = ("# fastlstm demo: sequence classification\n\n"
            + ("**Smoke run (--smoke): tiny training budgets, the numbers mean nothing.**\n\n" if args.smoke else "")
            + "SequenceClassifier and the MLP baseline with their defaults (no per-dataset tuning), "
              "fitted on the official train split, scored on the test split.\n"
              f"Machine: {machine_line()}; seed {args.seed}.\n\n"
            + "\n".join(lines) + "\n\n"
            + markdown_table(["data set", "LSTM accuracy", "MLP accuracy", "LSTM fit s", "MLP fit s", "LSTM setup"], rows)
            + f"\n\n{verdict}\n\n![accuracy](accuracy.png)\n\n![training loss](training_loss.png)\n")
    path = write_text(os.path.join(out, "report.md"), text)
    print(text)
    print(f"wrote {path}")
    return 0
