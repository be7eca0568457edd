"""`python -m fastlstm bench --fit`: the time of one training epoch, fastlstm's fit loop against
a hand-written PyTorch loop and Keras 3 `model.fit`, on the four problems of the training issue:

    forecast   2000 windows, T=24, I=1, B=32             LSTM(50) → last step → Linear(1), MSE
    classify   500 sequences, T=150, I=1, B=32           LSTM(64) → last step → Linear(2), cross-entropy
    char-LM    512 sequences, T=100, vocab 96, B=64      Embedding(96,64) → LSTM(256) → Linear(96) per step
    seq2seq    5000 pairs, T_in=7, T_out=4, vocab 12, B=128   Embedding(12,16) → LSTM(128) encoder →
               Embedding(12,16) → LSTM(128) decoder (teacher forcing, starting from the encoder's
               final state) → Linear(12) per step

Every contender trains the same model on the same data (bench/fit_data.py), with Adam (lr 1e-3)
and shuffled batches; the epoch time is the median over `repeats` epochs after one warm-up epoch,
measured in one process at each thread count. Ratios = peer epoch time / fastlstm native epoch time.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

import numpy as np

import fastlstm
from fastlstm import nn
from fastlstm.nn.module import Module, register

from .fit_data import PROBLEMS, make_problem_data
from .runner import round_trip_text

PROBLEM_NAMES = tuple(PROBLEMS)


@register
class EncoderDecoder(Module):
    """The seq2seq benchmark model, a non-sequential model written as a plain Module: the encoder
    LSTM's final (h, c) starts the decoder LSTM, which reads the target shifted right behind a
    start symbol (teacher forcing); a Linear per step gives the logits.

    forward((src ids (B, T_in), tgt_in ids (B, T_out))) -> logits (B, T_out, V)
    """

    def __init__(self, vocab, hidden, embed=16, seed=0, backend=None):
        super().__init__()
        self.vocab, self.hidden, self.embed = int(vocab), int(hidden), int(embed)
        self.src_embed = nn.Embedding(vocab, embed, seed=seed)
        self.encoder = nn.LSTM(embed, hidden, batch_first=True, seed=seed + 1, backend=backend)
        self.tgt_embed = nn.Embedding(vocab, embed, seed=seed + 2)
        self.decoder = nn.LSTM(embed, hidden, batch_first=True, seed=seed + 3, backend=backend)
        self.head = nn.Linear(hidden, vocab, seed=seed + 4)

    def get_config(self):
        return dict(vocab=self.vocab, hidden=self.hidden, embed=self.embed)

    def forward(self, x, lengths=None):
        src, tgt_in = x
        _, state = self.encoder(self.src_embed(src))
        y, _ = self.decoder(self.tgt_embed(tgt_in), state)
        return self.head(y)

    def backward(self, dlogits):
        # logits = head(decoder(tgt_embed(tgt_in), state = encoder(src_embed(src)).final))
        dy = self.head.backward(dlogits)
        dtgt, (dh0, dc0) = self.decoder.backward(dy)
        self.tgt_embed.backward(dtgt)
        dsrc, _ = self.encoder.backward(None, dh0, dc0)
        self.src_embed.backward(dsrc)
        return None


def build_model(name: str, backend=None, seed=0) -> Module:
    p = PROBLEMS[name]
    if name == "forecast":
        return nn.Sequential(nn.LSTM(1, p["hidden"], batch_first=True, seed=seed, backend=backend),
                             nn.LastStep(), nn.Linear(p["hidden"], 1, seed=seed))
    if name == "classify":
        return nn.Sequential(nn.LSTM(1, p["hidden"], batch_first=True, seed=seed, backend=backend),
                             nn.LastStep(), nn.Linear(p["hidden"], p["classes"], seed=seed))
    if name == "char-LM":
        return nn.Sequential(nn.Embedding(p["vocab"], p["embed"], seed=seed),
                             nn.LSTM(p["embed"], p["hidden"], batch_first=True, seed=seed, backend=backend),
                             nn.Linear(p["hidden"], p["vocab"], seed=seed))
    if name == "seq2seq":
        return EncoderDecoder(p["vocab"], p["hidden"], p["embed"], seed=seed, backend=backend)
    raise ValueError(f"unknown fit problem {name!r}; choose from {', '.join(PROBLEMS)}")


def fit_args(name: str, data: dict) -> tuple:
    """(X, y, loss) for fastlstm.fit."""
    if name == "seq2seq":
        return (data["X"], data["y_in"]), data["y"], "cross_entropy"
    return data["X"], data["y"], ("mse" if name == "forecast" else "cross_entropy")


def fastlstm_epochs(name: str, data: dict, backend: str, epochs: int, seed=0) -> list:
    """Per-epoch wall times of fastlstm.fit (the first is the warm-up)."""
    model = build_model(name, backend=backend, seed=seed)
    X, y, loss = fit_args(name, data)
    hist = fastlstm.fit(model, X, y, loss=loss, optimizer="adam", lr=1e-3, epochs=epochs,
                        batch_size=PROBLEMS[name]["batch"], shuffle=True, seed=seed, verbose=0)
    return list(hist.history["time"])


@contextmanager
def _kernel_timer(totals: dict):
    """Wrap every backend's lstm_forward/lstm_backward to sum their wall time."""
    saved = []
    for be in fastlstm.backends._modules.values():
        for fn in ("lstm_forward", "lstm_backward"):
            orig = getattr(be, fn)

            def timed(*a, _orig=orig, _fn=fn, **k):
                t = time.perf_counter()
                try:
                    return _orig(*a, **k)
                finally:
                    totals[_fn] = totals.get(_fn, 0.0) + time.perf_counter() - t

            saved.append((be, fn, orig))
            setattr(be, fn, timed)
    try:
        yield totals
    finally:
        for be, fn, orig in saved:
            setattr(be, fn, orig)


def step_breakdown(name="forecast", backend="native", steps=200, seed=0) -> dict:
    """Where one training step's time goes: kernel forward, kernel backward, the rest (Python:
    layers, loss, optimizer, batching), in microseconds per step."""
    from fastlstm import optim

    model = build_model(name, backend=backend, seed=seed)
    X, y, loss = fit_args(name, make_problem_data(name, seed))
    B = PROBLEMS[name]["batch"]
    lossf = nn.get_loss(loss)
    opt = optim.Adam(model, lr=1e-3)
    model.train()
    rng = np.random.default_rng(seed)

    def one():
        idx = rng.integers(0, len(y), B)
        xb = tuple(a[idx] for a in X) if isinstance(X, tuple) else X[idx]
        model.zero_grad()
        out = model.forward(xb)
        _, d = lossf(out, y[idx])
        model.backward(d)
        opt.step()

    for _ in range(20):
        one()
    totals: dict = {}
    with _kernel_timer(totals):
        t = time.perf_counter()
        for _ in range(steps):
            one()
        wall = time.perf_counter() - t
    us = {k: v / steps * 1e6 for k, v in totals.items()}
    out = {"step_us": wall / steps * 1e6, "kernel_forward_us": us.get("lstm_forward", 0.0),
           "kernel_backward_us": us.get("lstm_backward", 0.0)}
    out["python_us"] = out["step_us"] - out["kernel_forward_us"] - out["kernel_backward_us"]
    return out


# -- the benchmark --------------------------------------------------------------------------

def _median(xs):
    return float(np.median(xs)) if xs else float("nan")


def _keras_epochs(name, threads, epochs):
    """Keras in a subprocess (its thread pools are fixed at start); None with the reason if absent."""
    import json
    import os
    import subprocess
    import sys

    import importlib.util

    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    for mod, why in (("keras", "keras not installed"), (backend, f"keras' backend {backend} not installed")):
        try:
            if importlib.util.find_spec(mod) is None:
                return None, why
        except (ImportError, ValueError):
            return None, why
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    r = subprocess.run([sys.executable, "-m", "fastlstm.bench.fit_keras", "--problem", name, "--threads",
                        str(threads), "--epochs", str(epochs)], capture_output=True, text=True, env=env, timeout=1800)
    if r.returncode != 0:
        return None, f"keras run failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}"
    last = [ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1]
    out = json.loads(last)
    return out["times"], f"keras {out['keras']} ({out['backend']})"


def run_fit(problems=PROBLEM_NAMES, threads=(1, 2), repeats=5, backends=("native", "numba", "reference"),
            peers=("torch", "torch+fastlstm", "keras"), progress=True, seed=0) -> dict:
    """Median epoch time per (problem, threads, contender) after one warm-up epoch, and the
    ratios against fastlstm native; plus the per-step breakdown of the forecast problem."""
    from .runner import _OpenBLAS, machine_info

    blas = _OpenBLAS()
    rows = []
    total = len(problems) * len(threads) * (len(backends) + len(peers))
    done = 0

    def note(text):
        if progress:
            print(f"[{done}/{total}] {text}", file=sys.stderr, flush=True)

    for n in threads:
        fastlstm.set_num_threads(n)
        blas.set(n)
        try:
            import torch

            torch.set_num_threads(n)
        except ImportError:
            torch = None
        for name in problems:
            data = make_problem_data(name, seed)
            for be in backends:
                note(f"{name}, {n} thread(s), fastlstm {be}")
                fastlstm.set_num_threads(n)
                try:
                    times = fastlstm_epochs(name, data, be, repeats + 1, seed)[1:]
                    rows.append(dict(problem=name, threads=n, contender=be, kind="fastlstm", times=times))
                except fastlstm.BackendUnavailable as e:
                    rows.append(dict(problem=name, threads=n, contender=be, kind="fastlstm", times=[], note=str(e)))
                done += 1
            for peer in peers:
                note(f"{name}, {n} thread(s), {peer}")
                times, why, extra = [], None, {}
                if peer in ("torch", "torch+fastlstm"):
                    if torch is None:
                        why = "torch not installed"
                    else:
                        # set again before every contender: a runtime another contender loaded can
                        # change it (numba's OpenMP layer once set torch's to all cores)
                        torch.set_num_threads(n)
                        fastlstm.set_num_threads(n)
                        from . import torch_loops

                        cls = torch.nn.LSTM
                        if peer == "torch+fastlstm":
                            import fastlstm.torch as ft

                            cls = ft.LSTM
                        times = [torch_loops.torch_epoch(name, data, lstm_cls=cls, seed=seed) for _ in range(repeats + 1)][1:]
                        extra = {"torch_threads": torch.get_num_threads()}   # still n: checked by the tests
                elif peer == "keras":
                    t, why = _keras_epochs(name, n, repeats + 1)
                    times = [] if t is None else t[1:]
                rows.append(dict(problem=name, threads=n, contender=peer, kind="peer", times=times, **extra,
                                 **({"note": why} if why else {})))
                done += 1
    for r in rows:
        r["median_ms"] = _median(r["times"]) * 1e3
        r["min_ms"] = min(r["times"]) * 1e3 if r["times"] else float("nan")
        r["max_ms"] = max(r["times"]) * 1e3 if r["times"] else float("nan")
    ratios = []
    for r in rows:
        nat = next((x for x in rows if x["problem"] == r["problem"] and x["threads"] == r["threads"]
                    and x["contender"] == "native"), None)
        if nat and r["contender"] != "native" and r["times"] and nat["times"]:
            ratios.append(dict(problem=r["problem"], threads=r["threads"], contender=r["contender"],
                               ratio=r["median_ms"] / nat["median_ms"]))
    fastlstm.set_num_threads(max(threads))
    breakdown = {n: None for n in threads}
    for n in threads:
        fastlstm.set_num_threads(n)
        breakdown[n] = step_breakdown("forecast", "native" if "native" in backends else backends[0], seed=seed)
    return {"machine": machine_info(), "repeats": repeats, "rows": rows, "ratios": ratios,
            "breakdown": breakdown, "problems": PROBLEMS}


def format_fit(results: dict, markdown=False) -> str:
    rows, ratios = results["rows"], results["ratios"]
    threads = sorted({r["threads"] for r in rows})
    contenders = list(dict.fromkeys(r["contender"] for r in rows))
    out = []
    m = results["machine"]
    out.append(f"Fit benchmark: median epoch time (ms) over {results['repeats']} epochs after a warm-up; "
               f"{m['cpu']}, {m['cpus_usable']} usable CPUs, {m['date'][:19]}, load average at start "
               f"{m['loadavg_start']}; memory allocator: {m.get('allocator', 'default')}; "
               f"core-to-core round trip: {round_trip_text(m) or 'not measured'}")
    for n in threads:
        head = ["problem"] + contenders + [f"{c} / native" for c in contenders if c != "native"]
        body = []
        for name in dict.fromkeys(r["problem"] for r in rows):
            cells = [name]
            for c in contenders:
                r = next((x for x in rows if x["problem"] == name and x["threads"] == n and x["contender"] == c), None)
                cells.append("—" if r is None or not r["times"] else f"{r['median_ms']:.0f}")
            for c in contenders:
                if c == "native":
                    continue
                q = next((x for x in ratios if x["problem"] == name and x["threads"] == n and x["contender"] == c), None)
                cells.append("—" if q is None else f"{q['ratio']:.2f}×")
            body.append(cells)
        out.append("")
        out.append(f"{n} thread(s): epoch ms, and peer time / fastlstm native time (> 1: fastlstm faster)")
        out.extend(_table(head, body, markdown))
    dropin = []
    for n in threads:
        for name in dict.fromkeys(r["problem"] for r in rows):
            t = {r["contender"]: r for r in rows if r["problem"] == name and r["threads"] == n and r["times"]}
            if "torch" in t and "torch+fastlstm" in t:
                dropin.append(f"{name} {n}t {t['torch']['median_ms'] / t['torch+fastlstm']['median_ms']:.2f}×")
    if dropin:
        out.append("")
        out.append("The same PyTorch loop with fastlstm.torch.LSTM in place of nn.LSTM (nn.LSTM time / "
                   "drop-in time): " + ", ".join(dropin))
    notes = {(r["contender"], r["note"]) for r in rows if r.get("note")}
    for c, why in sorted(notes):
        out.append(f"- {c}: {why}")
    out.append("")
    out.append("Per training step of the forecast problem (µs): kernel forward / kernel backward / the rest (Python)")
    for n, b in results["breakdown"].items():
        if b:
            out.append(f"- {n} thread(s): step {b['step_us']:.0f} = forward {b['kernel_forward_us']:.0f} + "
                       f"backward {b['kernel_backward_us']:.0f} + rest {b['python_us']:.0f}")
    return "\n".join(out)


def _table(head, body, markdown):
    if markdown:
        return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in body]
    w = [max(len(str(r[i])) for r in [head] + body) for i in range(len(head))]
    return ["  ".join(str(c).rjust(w[i]) if i else str(c).ljust(w[i]) for i, c in enumerate(r)) for r in [head] + body]


def write_fit_markdown(results: dict, path: str) -> None:
    from ..io import atomic_write

    atomic_write(path, lambda f: f.write(format_fit(results, markdown=True).encode()))


def write_fit_plot(results: dict, path: str) -> None:
    """Bars of peer time / fastlstm native time per problem, one panel per thread count."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..io import atomic_write

    ratios = results["ratios"]
    threads = sorted({r["threads"] for r in ratios})
    fig = Figure(figsize=(6 * max(1, len(threads)), 3.6))
    FigureCanvasAgg(fig)
    fig.suptitle(f"fit: epoch time of each contender / fastlstm native — {results['machine']['cpu']}", fontsize=9)
    for k, n in enumerate(threads):
        ax = fig.add_subplot(1, len(threads), k + 1)
        sub = [r for r in ratios if r["threads"] == n]
        probs = list(dict.fromkeys(r["problem"] for r in sub))
        conts = list(dict.fromkeys(r["contender"] for r in sub))
        width = 0.8 / max(1, len(conts))
        for j, c in enumerate(conts):
            vals = {r["problem"]: r["ratio"] for r in sub if r["contender"] == c}
            xs = [i + (j - (len(conts) - 1) / 2) * width for i, p in enumerate(probs) if p in vals]
            ys = [vals[p] for p in probs if p in vals]
            bars = ax.bar(xs, ys, width, label=c)
            ax.bar_label(bars, labels=[f"{v:.2g}" for v in ys], fontsize=6)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(probs)))
        ax.set_xticklabels(probs, fontsize=8)
        ax.set_title(f"{n} thread(s)", fontsize=9)
        ax.set_ylabel("time / fastlstm native")
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
