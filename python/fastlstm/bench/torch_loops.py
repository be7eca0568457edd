"""The fit benchmark's four problems as plain PyTorch training loops, and the drop-in benchmark:
the same loop with torch.nn.LSTM and with fastlstm.torch.LSTM, epoch time side by side.

    data = make_problem_data("forecast")              # NumPy arrays, deterministic (seed 0)
    secs = torch_epoch("forecast", data)              # one epoch of the hand-written loop
    rows = run_dropin_bench(threads=(1, 2), repeats=5)
    print(format_dropin_table(rows))

Problems (all batch_first, Adam lr 1e-3, batches shuffled per epoch, last batch partial):
  forecast  2000 windows, T=24, I=1, B=32    LSTM(50) -> Linear(1) on the last step, MSE
  classify  500 sequences, T=150, I=1, B=32  LSTM(64) -> last step -> Linear(2), cross-entropy
  char-LM   512 sequences, T=100, B=64       Embedding(96, 64) -> LSTM(256) -> Linear(96) per step, CE
  seq2seq   5000 pairs, T_in=7, T_out=4, B=128  Embedding(12, 16) -> LSTM(128) encoder ->
            LSTM(128) decoder (own Embedding(12, 16), teacher forcing, initial state = the
            encoder's final state) -> Linear(12) per step, CE
make_problem_data is bench.fit_data's: the fastlstm-native fit benchmark trains on the same arrays.
The training loop is what a PyTorch user writes: model.train(), zero_grad, forward, loss,
backward, optimizer.step — nothing clever, so the ratio is what changing one import buys.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from torch import nn

import fastlstm

from .runner import settle

PROBLEMS = ("forecast", "classify", "char-LM", "seq2seq")
BATCH = {"forecast": 32, "classify": 32, "char-LM": 64, "seq2seq": 128}
VOCAB_CHARS = 96
VOCAB_S2S = 12          # "0123456789+ " (fit_data.ADD_CHARS)


# --- data: the fit benchmark's own (bench/fit_data.py), one source for every contender ----------

def make_problem_data(name: str, seed: int = 0) -> dict:
    """The fit benchmark's data for one problem (bench.fit_data.make_problem_data: synthetic,
    deterministic in (name, seed), batch-first NumPy arrays):

    forecast  X (2000, 24, 1) float32 windows of a noisy two-tone sine; y (2000, 1) the next value
    classify  X (500, 150, 1) float32 noisy sines of two frequencies; y (500,) int64 the class
    char-LM   X (512, 100) int64 ids from a sparse Markov chain over 96 tokens; y = X shifted by one
    seq2seq   X (5000, 7) int64 "535+61 " as ids of "0123456789+ "; y_in (5000, 4) the answer
              shifted right behind the start symbol " " (teacher forcing); y (5000, 4) "596 "
    """
    from .fit_data import make_problem_data as fit_data

    return fit_data(name, seed)


# --- models (what a PyTorch user writes; lstm_cls is the one line that changes) -----------------

class Forecaster(nn.Module):
    def __init__(self, lstm_cls=nn.LSTM):
        super().__init__()
        self.lstm = lstm_cls(1, 50, batch_first=True)
        self.head = nn.Linear(50, 1)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.head(y[:, -1])


class Classifier(nn.Module):
    def __init__(self, lstm_cls=nn.LSTM):
        super().__init__()
        self.lstm = lstm_cls(1, 64, batch_first=True)
        self.head = nn.Linear(64, 2)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.head(y[:, -1])


class CharLM(nn.Module):
    def __init__(self, lstm_cls=nn.LSTM):
        super().__init__()
        self.embed = nn.Embedding(VOCAB_CHARS, 64)
        self.lstm = lstm_cls(64, 256, batch_first=True)
        self.head = nn.Linear(256, VOCAB_CHARS)

    def forward(self, x):
        y, _ = self.lstm(self.embed(x))
        return self.head(y)                      # (B, T, 96)


class Seq2Seq(nn.Module):
    def __init__(self, lstm_cls=nn.LSTM):
        super().__init__()
        self.enc_embed = nn.Embedding(VOCAB_S2S, 16)
        self.dec_embed = nn.Embedding(VOCAB_S2S, 16)
        self.encoder = lstm_cls(16, 128, batch_first=True)
        self.decoder = lstm_cls(16, 128, batch_first=True)
        self.head = nn.Linear(128, VOCAB_S2S)

    def forward(self, x, y_in):
        _, state = self.encoder(self.enc_embed(x))
        y, _ = self.decoder(self.dec_embed(y_in), state)   # teacher forcing
        return self.head(y)                              # (B, T_out, 12)


MODELS = {"forecast": Forecaster, "classify": Classifier, "char-LM": CharLM, "seq2seq": Seq2Seq}


class TorchFit:
    """One problem's model and Adam optimizer, built once (torch.manual_seed(seed) first, so
    nn.LSTM and fastlstm.torch.LSTM start from the same weights); epoch() trains one epoch."""

    def __init__(self, name: str, data: dict, lstm_cls=nn.LSTM, seed: int = 0):
        if name not in MODELS:
            raise ValueError(f"unknown problem {name!r}; choose one of {', '.join(PROBLEMS)}")
        self.name, self.seed, self.epochs = name, seed, 0
        torch.manual_seed(seed)
        self.model = MODELS[name](lstm_cls)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in data.items()}
        self.n = len(data["X"])
        self.batch = BATCH[name]

    def loss(self, idx):
        t = {k: v[idx] for k, v in self.tensors.items()}
        if self.name == "forecast":
            return nn.functional.mse_loss(self.model(t["X"]), t["y"])
        if self.name == "classify":
            return nn.functional.cross_entropy(self.model(t["X"]), t["y"])
        if self.name == "char-LM":
            return nn.functional.cross_entropy(self.model(t["X"]).reshape(-1, VOCAB_CHARS), t["y"].reshape(-1))
        return nn.functional.cross_entropy(self.model(t["X"], t["y_in"]).reshape(-1, VOCAB_S2S), t["y"].reshape(-1))

    def batches(self, max_batches: int | None = None) -> list:
        """The next epoch's batches (index tensors; shuffled per epoch, seeded) and model.train()."""
        order = torch.from_numpy(np.random.default_rng([self.seed, self.epochs]).permutation(self.n))
        self.epochs += 1
        self.model.train()
        return list(torch.split(order, self.batch))[:max_batches]

    def train(self, batches) -> tuple[float, float, list]:
        """Train on `batches` in turn: (wall seconds, CPU seconds of all threads, per-batch losses)."""
        losses = []
        c0, t0 = time.process_time(), time.perf_counter()
        for idx in batches:
            self.opt.zero_grad()
            loss = self.loss(idx)
            loss.backward()
            self.opt.step()
            losses.append(loss.item())
        return time.perf_counter() - t0, time.process_time() - c0, losses

    def epoch(self, max_batches: int | None = None) -> tuple[float, list]:
        """One epoch (or its first max_batches batches): (wall seconds, per-batch losses)."""
        wall, self.last_cpu, losses = self.train(self.batches(max_batches))
        return wall, losses


def torch_epoch(name: str, data: dict, lstm_cls=nn.LSTM, seed: int = 0) -> float:
    """Build the model once and time ONE epoch of the plain PyTorch loop; returns seconds."""
    return TorchFit(name, data, lstm_cls, seed).epoch()[0]


def _set_threads(n: int) -> None:
    torch.set_num_threads(n)
    fastlstm.set_num_threads(n)


# Each timed epoch runs in SEGMENTS runs of consecutive batches, the two modules taking turns
# segment by segment (who goes first flipping each time). This VM's speed changes for seconds at a
# time (one core's FMA peak 82-102 GFLOP/s within minutes); a seq2seq epoch takes ~0.6 s, so with
# whole epochs in turn a slow spell could fall on one module's epoch and not the other's: six runs
# of round 13 gave seq2seq 1.19-1.51x. A segment (5 seq2seq batches, ~70 ms) is long enough to keep
# each library's thread pool busy as a real loop does, and SETTLE_S of idle time before each (then
# on until no other thread of the process is busy: runner.settle) lets the other library's
# spinning threads (OpenMP, fastlstm's pool) go to sleep first, untimed.
SEGMENTS = 8
SETTLE_S = 0.03


def interleaved_epoch(fits: dict, max_batches: int | None = None) -> dict:
    """One epoch of every TorchFit in `fits`, segment by segment in turn (see SEGMENTS).
    Returns {key: (wall seconds, CPU seconds)}, each the sum over that fit's segments."""
    plans = {k: f.batches(max_batches) for k, f in fits.items()}
    n = len(next(iter(plans.values())))
    bounds = np.linspace(0, n, min(SEGMENTS, n) + 1).round().astype(int)
    out = {k: [0.0, 0.0] for k in fits}
    keys = list(fits)
    for j, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        for k in keys if j % 2 == 0 else keys[::-1]:
            settle(SETTLE_S)
            wall, cpu, _ = fits[k].train(plans[k][a:b])
            out[k][0] += wall
            out[k][1] += cpu
    return {k: tuple(v) for k, v in out.items()}


def run_dropin_bench(threads=(1, 2), repeats: int = 5, quick: bool = False, problems=PROBLEMS,
                     seed: int = 0, progress=None) -> list:
    """Epoch time of each problem's loop with torch.nn.LSTM and with fastlstm.torch.LSTM.

    Per thread count (torch.set_num_threads and fastlstm.set_num_threads both) and problem: one
    warm-up epoch each, then `repeats` epochs each, the two modules taking turns segment by
    segment within every epoch (interleaved_epoch) so that a noisy machine hits both alike; the
    medians. quick: 4 batches per epoch, 2 repeats.
    Rows: problem, threads, torch_s, fastlstm_s, ratio = torch_s / fastlstm_s (> 1: fastlstm faster),
    torch_cpu_s, fastlstm_cpu_s, cpu_ratio (the same in CPU seconds of all threads: steadier on a
    shared machine), repeats, batches, backend (the fastlstm backend that ran).
    """
    from .. import torch as ftorch

    if quick:
        repeats = min(repeats, 2)
    max_batches = 4 if quick else None
    old_torch, old_fast = torch.get_num_threads(), fastlstm.get_num_threads()
    rows = []
    try:
        for n in threads:
            _set_threads(n)
            for name in problems:
                data = make_problem_data(name, seed)
                fits = {"torch": TorchFit(name, data, nn.LSTM, seed), "fastlstm": TorchFit(name, data, ftorch.LSTM, seed)}
                times = {k: [] for k in fits}
                cpu = {k: [] for k in fits}
                for f in fits.values():
                    f.epoch(max_batches)                    # warm-up: allocations, Numba/oneDNN caches
                for _ in range(repeats):
                    for k, (wall, c) in interleaved_epoch(fits, max_batches).items():
                        times[k].append(wall)
                        cpu[k].append(c)
                t_torch, t_fast = statistics.median(times["torch"]), statistics.median(times["fastlstm"])
                c_torch, c_fast = statistics.median(cpu["torch"]), statistics.median(cpu["fastlstm"])
                lstm = fits["fastlstm"].model.lstm if name != "seq2seq" else fits["fastlstm"].model.encoder
                row = {"problem": name, "threads": n, "torch_s": t_torch, "fastlstm_s": t_fast,
                       "ratio": t_torch / t_fast, "torch_cpu_s": c_torch, "fastlstm_cpu_s": c_fast,
                       "cpu_ratio": c_torch / c_fast, "repeats": repeats,
                       "batches": min(-(-len(data["X"]) // BATCH[name]), max_batches or 10 ** 9),
                       "backend": lstm.last_backend}
                rows.append(row)
                if progress is not None:
                    progress(row)
    finally:
        torch.set_num_threads(old_torch)
        fastlstm.set_num_threads(old_fast)
    return rows


def format_dropin_table(rows: list) -> str:
    """A markdown table of run_dropin_bench rows."""
    out = ["| problem | threads | nn.LSTM epoch (s) | fastlstm.torch.LSTM epoch (s) | speed-up (wall) | speed-up (CPU time) |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['problem']} | {r['threads']} | {r['torch_s']:.3f} | {r['fastlstm_s']:.3f} | "
                   f"{r['ratio']:.2f}× | {r['cpu_ratio']:.2f}× |")
    return "\n".join(out)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=PROBLEMS)
    ap.add_argument("--default-malloc", action="store_true", help="leave glibc malloc as it is (see pin_allocator)")
    args = ap.parse_args()
    if not args.default_malloc:
        from .runner import pin_allocator

        print(f"memory allocator: {pin_allocator()}")
    from .runner import core_round_trips

    print("core-to-core round trip:", ", ".join(f"CPUs {k} {v} ns" for k, v in core_round_trips().items()) or "not measured")
    rows = run_dropin_bench(tuple(args.threads), args.repeats, args.quick, tuple(args.problems),
                            progress=lambda r: print(f"  {r['problem']:9s} {r['threads']}t  torch {r['torch_s']:.3f}s  "
                                                     f"fastlstm {r['fastlstm_s']:.3f}s  {r['ratio']:.2f}x  "
                                                     f"(CPU {r['cpu_ratio']:.2f}x)", flush=True))
    print(format_dropin_table(rows))
