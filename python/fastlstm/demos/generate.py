"""Demo: a character language model of Python's own standard library, judged against an n-gram.

    python -m fastlstm demo generate [--minutes 5] [--out reports/generate] [--smoke]

Trains SequenceGenerator on the source of the standard library (held-out modules are the
validation text, text.HELDOUT_MODULES), fits an interpolated Kneser-Ney n-gram on the same text
(order chosen by validation bits per character), and writes to the report folder:
metrics.json (both bits per character, times, settings), samples.txt, learning_curve.png and the
model (model.fastlstm). --smoke runs the whole pipeline on a small slice in seconds (CI).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

from ..train import Callback

PROG = "python -m fastlstm demo generate"


# -- report helpers (shared with demos/seq2seq.py) --------------------------------------------

def write_atomic(path, data) -> None:
    """Write str or bytes to path via a temporary file in the same folder, fsync, rename."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_figure(fig, path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    write_atomic(path, buf.getvalue())


def limit_blas_threads(n: int) -> None:
    """NumPy's OpenBLAS to n threads: the model's GEMMs are small, and on a busy machine a
    multi-threaded OpenBLAS spins (a 64x448x64 product measured 0.1 s instead of 30 µs)."""
    from ..bench.runner import _OpenBLAS

    _OpenBLAS().set(n)


class TimeBudget(Callback):
    """fit() callback: stop after the epoch whose end leaves less time than one more epoch."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)

    def on_train_begin(self, logs=None):
        self.t0, self.done = time.perf_counter(), 0

    def on_epoch_end(self, epoch, logs=None):
        self.done += 1
        spent = time.perf_counter() - self.t0
        if spent + spent / self.done > self.seconds:
            self.loop.stop_training = True


# -- the demo ---------------------------------------------------------------------------------

def build_parser():
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join("reports", "generate"), help="report folder")
    ap.add_argument("--minutes", type=float, default=5.0, help="training time budget (default 5)")
    ap.add_argument("--epochs", type=int, default=20, help="at most this many passes over the text")
    ap.add_argument("--round-rows", type=int, default=500,
                    help="rows per training round (validation and the time check after each)")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--embedding", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=1000, help="characters per training row")
    ap.add_argument("--tbptt", type=int, default=50, help="truncated BPTT steps (state carried along a row)")
    ap.add_argument("--lr", type=float, default=5e-3, help="Adam's rate, annealed (cosine) over the time budget")
    ap.add_argument("--train-chars", type=int, default=8_000_000, help="cap on the training text")
    ap.add_argument("--valid-chars", type=int, default=200_000, help="cap on the held-out text")
    ap.add_argument("--max-order", type=int, default=9, help="largest n-gram order tried")
    ap.add_argument("--samples", type=int, default=400, help="characters per sample")
    ap.add_argument("--blas-threads", type=int, default=1, help="NumPy BLAS threads (see limit_blas_threads)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="a tiny run of the whole pipeline (seconds)")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def run(args) -> dict:
    import fastlstm

    from ..models.generator import SequenceGenerator
    from ..text import CharVocab, NGramModel, stdlib_corpus

    if args.smoke:
        args.train_chars, args.valid_chars, args.hidden, args.epochs = 40_000, 8_000, 32, 1
        args.seq_len, args.tbptt, args.samples, args.max_order, args.minutes = 200, 50, 80, 4, 1.0
        args.round_rows = 100
    limit_blas_threads(args.blas_threads)
    out = args.out
    os.makedirs(out, exist_ok=True)
    train, valid, info = stdlib_corpus(args.train_chars, args.valid_chars)
    vocab = CharVocab().fit(train, min_count=2)
    tr_ids, va_ids = vocab.encode(train), vocab.encode(valid)
    say = (lambda *a: None) if args.no_progress else (lambda *a: print(*a, file=sys.stderr))
    say(f"corpus: {len(train):,} training characters from {len(info['train_files'])} modules, "
        f"{len(valid):,} held-out from {', '.join(info['valid_files'])}; vocabulary {len(vocab)}")

    t0 = time.perf_counter()
    ngram, ngram_scores = NGramModel.select(tr_ids, va_ids, len(vocab), range(1, args.max_order + 1))
    ngram_time = time.perf_counter() - t0
    ngram_bpc = ngram_scores[ngram.order]
    say(f"n-gram (interpolated Kneser-Ney): best order {ngram.order}, {ngram_bpc:.3f} bits/char "
        f"({ngram_time:.1f} s)")

    model = SequenceGenerator(vocab, embedding_dim=args.embedding, hidden_size=args.hidden,
                              num_layers=args.layers, seed=args.seed)
    t_fit = time.perf_counter()
    hist = model.fit_text(train, valid, seq_len=args.seq_len, tbptt=args.tbptt, epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, seed=args.seed, max_seconds=args.minutes * 60,
                          round_rows=args.round_rows, verbose=0 if args.no_progress else 1)
    train_time = time.perf_counter() - t_fit
    h = hist.history
    curve = [{"round": i + 1, "seconds": h["seconds"][i], "chars_seen": h["rows_seen"][i] * args.seq_len,
              "train_bpc": h["loss"][i] / np.log(2), "val_bpc": h["val_loss"][i] / np.log(2)}
             for i in range(len(hist.epoch))]
    lstm_bpc = model.bits_per_char(valid)
    say(f"LSTM: {lstm_bpc:.3f} bits/char on the held-out modules after {curve[-1]['chars_seen']:,} "
        f"training characters, {train_time:.0f} s")

    samples = []
    # (below 0.7 a character model this size falls into runs of spaces)
    for k, (prompt, temp, top_p) in enumerate([("def ", 0.7, None), ("    def ", 0.8, 0.95), ("class ", 1.0, None)]):
        text = model.generate(args.samples, prompt, temperature=temp, top_p=top_p, seed=args.seed)
        samples.append({"prompt": prompt, "temperature": temp, "top_p": top_p, "text": prompt + text})
    metrics = {
        "lstm_bits_per_char": lstm_bpc, "ngram_bits_per_char": ngram_bpc, "ngram_order": ngram.order,
        "ngram_bits_per_char_by_order": {str(k): v for k, v in ngram_scores.items()},
        "lstm_beats_ngram": bool(lstm_bpc < ngram_bpc), "train_seconds": train_time,
        "ngram_seconds": ngram_time, "rounds": len(hist.epoch), "curve": curve,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "corpus": {k: v for k, v in info.items()}, "vocab_size": len(vocab),
        "threads": fastlstm.get_num_threads(), "backend": fastlstm.backends.active().NAME,
    }
    write_atomic(os.path.join(out, "metrics.json"), json.dumps(metrics, indent=2))
    write_atomic(os.path.join(out, "samples.txt"), "\n\n".join(
        f"--- prompt {s['prompt']!r}, temperature {s['temperature']}, top_p {s['top_p']} ---\n{s['text']}"
        for s in samples) + "\n")
    plot_curve(curve, ngram_bpc, ngram.order, os.path.join(out, "learning_curve.png"))
    fastlstm.save(os.path.join(out, "model.fastlstm"), model)
    return metrics


def plot_curve(curve, ngram_bpc, order, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    t = [c["seconds"] / 60 for c in curve]  # after each round: its training + its validation
    ax.plot(t, [c["train_bpc"] for c in curve], "o-", label="LSTM, training text")
    ax.plot(t, [c["val_bpc"] for c in curve], "o-", label="LSTM, held-out modules")
    ax.axhline(ngram_bpc, color="k", ls="--", label=f"{order}-gram Kneser-Ney, held-out")
    ax.set_xlabel("training time (minutes)")
    ax.set_ylabel("bits per character")
    ax.set_title("Character LM of the Python standard library")
    ax.legend()
    save_figure(fig, path)
    plt.close(fig)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    m = run(args)
    print(f"held-out bits per character: LSTM {m['lstm_bits_per_char']:.3f}, "
          f"{m['ngram_order']}-gram Kneser-Ney {m['ngram_bits_per_char']:.3f} "
          f"({'LSTM better' if m['lstm_beats_ngram'] else 'n-gram better'}); "
          f"training {m['train_seconds']:.0f} s; report in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
