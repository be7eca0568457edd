"""Decoding speed: sampling one stream and beam search, on the streaming step API.

    python -m fastlstm.bench.decode [--hidden 256] [--steps 400] [--repeats 5] [--threads 1] [--json FILE]

1. Sampling, B = 1 (SequenceGenerator: Embedding -> LSTM(H) -> Linear -> softmax -> draw):
   characters per second of our loop (Sampler.step + sample_logits) against the same loop
   written with torch.nn.LSTMCell + torch.multinomial under no_grad, with the per-step parts
   (one packed LSTM step; head + softmax + draw) timed alone, and what re-running the whole
   prefix every step would cost (one packed forward over the prefix, at the mean prefix length).
2. Beam search (Seq2Seq with Luong attention, the addition model's size): sequences and tokens
   per second for greedy and beam decoding of a batch of sources, and one source alone.

Correctness first (DESIGN.md §5): before timing, our loop and the torch loop decode greedily
from the same weights and must produce the same tokens with logits within 1e-4; a mismatch is
reported and nothing is timed.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

import fastlstm

from ..decoding import sample_logits
from .runner import time_call


def _torch_loop(gen):
    """The same model in torch: Embedding, LSTMCell, Linear, with our weights."""
    import torch

    E = torch.nn.Embedding(gen.vocab_size, gen.embedding_dim)
    cell = torch.nn.LSTMCell(gen.embedding_dim, gen.hidden_size)
    head = torch.nn.Linear(gen.hidden_size, gen.vocab_size)
    p = gen.lstm.params
    with torch.no_grad():
        E.weight.copy_(torch.from_numpy(gen.embed.params["weight"]))
        cell.weight_ih.copy_(torch.from_numpy(p["weight_ih_l0"]))
        cell.weight_hh.copy_(torch.from_numpy(p["weight_hh_l0"]))
        cell.bias_ih.copy_(torch.from_numpy(p["bias_ih_l0"]))
        cell.bias_hh.copy_(torch.from_numpy(p["bias_hh_l0"]))
        head.weight.copy_(torch.from_numpy(gen.head.params["weight"]))
        head.bias.copy_(torch.from_numpy(gen.head.params["bias"]))
    return torch, E, cell, head


def sampling(hidden=256, vocab=100, embedding=32, steps=400, repeats=5, min_time=0.05, seed=0) -> dict:
    from ..models.generator import SequenceGenerator

    gen = SequenceGenerator(vocab_size=vocab, embedding_dim=embedding, hidden_size=hidden, seed=seed)
    torch, E, cell, head = _torch_loop(gen)
    H = hidden

    def ours(n, greedy=False):
        if not greedy:  # what a user calls: n characters after the token 1
            return gen.generate(n, np.array([1]), seed=seed, stop_at_end=False)
        s = gen.sampler(1)
        tok, toks, logs = np.array([1]), [], []
        for _ in range(n):
            logits = s.step(tok)
            tok = logits.argmax(1)
            toks.append(int(tok[0]))
            logs.append(logits[0].copy())
        return toks, logs

    def theirs(n, greedy=False):
        g = torch.Generator().manual_seed(seed)
        toks, logs = [], []
        with torch.no_grad():
            h, c = torch.zeros(1, H), torch.zeros(1, H)
            tok = torch.tensor([1])
            for _ in range(n):
                h, c = cell(E(tok), (h, c))
                logits = head(h)
                if greedy:
                    tok = logits.argmax(1)
                    toks.append(int(tok[0]))
                    logs.append(logits[0].numpy().copy())
                else:
                    tok = torch.multinomial(torch.softmax(logits, 1), 1, generator=g)[:, 0]
        return toks, logs

    # correctness gate: the same greedy path and logits
    a, b = ours(50, True), theirs(50, True)
    err = float(max(np.abs(x - y).max() for x, y in zip(a[1], b[1])))
    ok = a[0] == b[0] and err < 1e-4
    res = {"H": H, "V": vocab, "E": embedding, "steps": steps, "check": {"same_tokens": a[0] == b[0],
                                                                        "max_logit_diff": err, "ok": ok}}
    if not ok:
        return res

    # the parts of one of our steps, alone
    s = gen.sampler(1)
    x = np.ascontiguousarray(gen.embed.params["weight"][[1]])
    h, cst = s.h[0], s.c[0]
    W, bb = s.W, s.b
    rng = np.random.default_rng(0)
    logits0 = s.step(np.array([1]))
    prefix = np.ascontiguousarray(np.repeat(x[None], steps // 2, axis=0))      # (T, 1, E)
    packed = s.cells[0]
    z = np.zeros((1, H), np.float32)
    timings = {
        "fastlstm_loop": time_call(lambda: ours(steps), repeats, 1, min_time),
        "torch_lstmcell_loop": time_call(lambda: theirs(steps), repeats, 1, min_time),
        "lstm_step": time_call(lambda: packed.step(x, h, cst), repeats, 10, min_time),
        "head_softmax_draw": time_call(lambda: sample_logits(h @ W.T + bb, rng), repeats, 10, min_time),
        "draw_only": time_call(lambda: sample_logits(logits0, rng), repeats, 10, min_time),
        "prefix_forward_T": time_call(lambda: packed.forward(prefix, z, z), repeats, 1, min_time),
    }
    ms = {k: v["median_ms"] for k, v in timings.items()}
    per_step_us = {
        "fastlstm": 1e3 * ms["fastlstm_loop"] / steps,
        "torch_lstmcell": 1e3 * ms["torch_lstmcell_loop"] / steps,
        "lstm_step": 1e3 * ms["lstm_step"],
        "head_softmax_draw": 1e3 * ms["head_softmax_draw"],
        "draw_only": 1e3 * ms["draw_only"],
        "rerun_prefix_at_mean_length": 1e3 * ms["prefix_forward_T"],
    }
    res.update({"timings": timings, "per_step_us": per_step_us,
                "chars_per_second": {"fastlstm": 1e6 / per_step_us["fastlstm"],
                                     "torch_lstmcell": 1e6 / per_step_us["torch_lstmcell"]},
                "speedup_vs_torch": per_step_us["torch_lstmcell"] / per_step_us["fastlstm"],
                "step_vs_parts": per_step_us["fastlstm"] / (per_step_us["lstm_step"] + per_step_us["head_softmax_draw"])})
    return res


def beam(hidden=128, n_sources=1000, beam_width=4, max_len=6, repeats=3, min_time=0.05, seed=0) -> dict:
    from ..models.seq2seq import Seq2Seq
    from ..text import CharVocab, addition_problems

    from ..decoding import beam_search, greedy_decode
    from ..text import END, START

    m = Seq2Seq(CharVocab("0123456789+"), hidden_size=hidden, attention="general", seed=seed)
    src, _ = addition_problems(n_sources, 3, seed=seed)
    V = len(m.tgt_vocab)
    rows = {}

    def decode(sources, width, key):
        """decode_ids, with the decoder rows × steps actually run counted (beams may end early)."""
        state, step, reorder = m.decoder_state(sources)
        count = [0]

        def counted(tok, st):
            count[0] += len(tok)
            return step(tok, st)

        if width == 1:
            greedy_decode(counted, state, len(sources), START, END, max_len)
        else:
            beam_search(counted, reorder, state, len(sources), START, END, max_len, width, 0.0, V)
        rows[key] = count[0]

    t = {
        "greedy_batch": time_call(lambda: decode(src, 1, "greedy_batch"), repeats, 1, min_time),
        "beam_batch": time_call(lambda: decode(src, beam_width, "beam_batch"), repeats, 1, min_time),
        "greedy_one": time_call(lambda: decode(src[:1], 1, "greedy_one"), repeats, 2, min_time),
        "beam_one": time_call(lambda: decode(src[:1], beam_width, "beam_one"), repeats, 2, min_time),
    }
    ms = {k: v["median_ms"] for k, v in t.items()}
    n = {"greedy_batch": n_sources, "beam_batch": n_sources, "greedy_one": 1, "beam_one": 1}
    return {"H": hidden, "N": n_sources, "beam_width": beam_width, "max_len": max_len, "timings": t,
            "sequences_per_second": {k: n[k] / ms[k] * 1e3 for k in t},
            "decoder_rows_x_steps_per_second": {k: rows[k] / ms[k] * 1e3 for k in t},
            "us_per_decoder_step_call": {k: 1e3 * ms[k] / (rows[k] / (n[k] * (beam_width if "beam" in k else 1)))
                                         for k in t}}


def format_text(r) -> str:
    lines = []
    s = r["sampling"]
    lines.append(f"sampling, B=1, H={s['H']}, V={s['V']}, {s['steps']} steps "
                 f"(correctness: same greedy tokens {s['check']['same_tokens']}, "
                 f"max logit diff {s['check']['max_logit_diff']:.1e})")
    if "per_step_us" in s:
        p = s["per_step_us"]
        lines += [f"  fastlstm loop          {p['fastlstm']:8.1f} us/char  {s['chars_per_second']['fastlstm']:10.0f} chars/s",
                  f"  torch LSTMCell loop    {p['torch_lstmcell']:8.1f} us/char  {s['chars_per_second']['torch_lstmcell']:10.0f} chars/s"
                  f"   (fastlstm {s['speedup_vs_torch']:.2f}x faster)",
                  f"  parts: packed LSTM step {p['lstm_step']:.1f} us + head/softmax/draw {p['head_softmax_draw']:.1f} us"
                  f" (draw alone {p['draw_only']:.1f} us); loop / parts = {s['step_vs_parts']:.2f}",
                  f"  re-running the prefix each step instead: {p['rerun_prefix_at_mean_length']:.0f} us per char "
                  f"at the mean prefix length {s['steps'] // 2}"]
    b = r["beam"]
    q = b["sequences_per_second"]
    w = b["decoder_rows_x_steps_per_second"]
    u = b["us_per_decoder_step_call"]
    lines += [f"beam search, Seq2Seq H={b['H']} general attention (untrained), at most {b['max_len']} steps",
              f"  {b['N']} sources: greedy {q['greedy_batch']:.0f} seq/s ({w['greedy_batch']:.0f} row-steps/s), "
              f"beam {b['beam_width']} {q['beam_batch']:.0f} seq/s ({w['beam_batch']:.0f} row-steps/s)",
              f"  one source: greedy {q['greedy_one']:.0f} seq/s ({u['greedy_one']:.0f} us/step), "
              f"beam {b['beam_width']} {q['beam_one']:.0f} seq/s ({u['beam_one']:.0f} us/step of {b['beam_width']} rows)"]
    return "\n".join(lines)


def run(hidden=256, steps=400, repeats=5, threads=1, min_time=0.05, beam_hidden=128, n_sources=1000) -> dict:
    import torch

    fastlstm.set_num_threads(threads)
    torch.set_num_threads(threads)
    from .runner import _OpenBLAS

    _OpenBLAS().set(threads)
    return {"threads": threads, "backend": fastlstm.backends.active().NAME, "torch": torch.__version__,
            "sampling": sampling(hidden=hidden, steps=steps, repeats=repeats, min_time=min_time),
            "beam": beam(hidden=beam_hidden, n_sources=n_sources, repeats=max(1, repeats // 2), min_time=min_time)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fastlstm.bench.decode", description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-time", type=float, default=0.05)
    ap.add_argument("--beam-hidden", type=int, default=128)
    ap.add_argument("--sources", type=int, default=1000)
    ap.add_argument("--json", metavar="FILE")
    a = ap.parse_args(argv)
    r = run(a.hidden, a.steps, a.repeats, a.threads, a.min_time, a.beam_hidden, a.sources)
    print(format_text(r))
    if a.json:
        from ..demos.generate import write_atomic

        write_atomic(a.json, json.dumps(r, indent=2))
    return 0 if r["sampling"]["check"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
