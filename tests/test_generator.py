"""Tests for SequenceGenerator (fastlstm.models.generator): learning, teacher forcing against the
streaming step API, gradients by finite differences, conditioned generation, save/load, bad input."""

from __future__ import annotations

import numpy as np
import pytest

import fastlstm
from fastlstm import nn
from fastlstm.models.generator import SequenceGenerator
from fastlstm.text import END, START, CharVocab

from conftest import require


def _stepwise_loss(model, X, Y, lengths, cond=None):
    """Mean cross-entropy over the real steps, computed one token at a time on the Sampler."""
    s = model.sampler(X.shape[0], cond)
    total, n = 0.0, 0
    for t in range(X.shape[1]):
        logits = s.step(X[:, t]).astype(np.float64)
        logp = logits - logits.max(1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(1, keepdims=True))
        real = t < lengths
        total -= logp[np.arange(len(X)), Y[:, t]][real].sum()
        n += real.sum()
    return total / n


def test_tiny_generator_reproduces_a_periodic_sequence():
    # period 6 over 4 tokens: what follows 2 depends on the token before it (memory needed)
    period = [0, 1, 2, 3, 2, 1]
    gen = SequenceGenerator(vocab_size=4, embedding_dim=8, hidden_size=24, seed=0)
    hist = gen.fit_text(np.tile(period, 200), seq_len=60, tbptt=30, epochs=20, batch_size=8, lr=1e-2, verbose=0)
    assert hist.history["loss"][-1] < 0.05
    out = gen.generate(30, seed_text=np.array([3, 2]), temperature=0, seed=0)
    assert out.shape == (1, 30)
    assert list(out[0]) == (period * 7)[5:35]   # ... 3, 2 | 1, 0, 1, 2, 3, 2, 1, 0 ...
    # sampling at a low temperature follows the same cycle
    assert list(gen.generate(12, np.array([0, 1]), temperature=0.3, seed=5)[0]) == (period * 3)[2:14]


@pytest.mark.parametrize("layers,cond_every", [(1, False), (2, True)])
def test_teacher_forced_loss_equals_the_stepwise_loss(layers, cond_every):
    vocab = CharVocab().fit("abcdefg")
    C = 3
    gen = SequenceGenerator(vocab, embedding_dim=5, hidden_size=13, num_layers=layers, condition_size=C,
                            condition_every_step=cond_every, seed=2)
    X, Y, lengths = gen.sequence_batch(["abc", "gfedcba", "", "ddd"])
    assert X[0, 0] == START and Y[0, 3] == END and list(lengths) == [4, 8, 1, 4]
    cond = np.random.default_rng(0).normal(size=(4, C)).astype(np.float32)
    logits = gen.forward((X, cond), lengths)
    loss, _ = nn.CrossEntropyLoss()(logits, Y, lengths)
    assert _stepwise_loss(gen, X, Y, lengths, cond) == pytest.approx(loss, rel=1e-5)


def test_backward_matches_finite_differences_float64():
    rng = np.random.default_rng(1)
    gen = SequenceGenerator(vocab_size=6, embedding_dim=3, hidden_size=5, num_layers=2, condition_size=2,
                            condition_every_step=True, dtype=np.float64, seed=3)
    gen.lstm.backend = "reference"  # float64: the NumPy spec (no JIT compile in a unit test)
    X = rng.integers(0, 6, (3, 4))
    Y = rng.integers(0, 6, (3, 4))
    lengths = np.array([4, 2, 3])
    cond = rng.normal(size=(3, 2))
    lossf = nn.CrossEntropyLoss()

    def loss():
        return lossf(gen.forward((X, cond), lengths), Y, lengths)[0]

    gen.train()
    gen.zero_grad()
    _, d = lossf(gen.forward((X, cond), lengths), Y, lengths)
    gen.backward(d)
    gen.eval()
    for name, p, g in gen.named_parameters():
        for idx in list(np.ndindex(p.shape))[:: max(1, p.size // 4)]:
            old = p[idx]
            p[idx] = old + 1e-6
            fp = loss()
            p[idx] = old - 1e-6
            fm = loss()
            p[idx] = old
            assert g[idx] == pytest.approx((fp - fm) / 2e-6, rel=1e-5, abs=1e-9), (name, idx)


def test_conditioned_generation_follows_the_condition():
    vocab = CharVocab().fit("abcde")
    gen = SequenceGenerator(vocab, embedding_dim=8, hidden_size=32, condition_size=2, seed=1)
    seqs = ["abcab", "edcba"] * 20
    cond = np.array([[1, 0], [0, 1]] * 20, np.float32)
    gen.fit_sequences(seqs, cond, epochs=60, batch_size=8, lr=1e-2)
    assert gen.generate(10, temperature=0, condition=[1, 0]) == "abcab"
    assert gen.generate(10, temperature=0, condition=[0, 1]) == "edcba"
    with pytest.raises(ValueError, match="conditioned"):
        gen.generate(5)
    with pytest.raises(ValueError, match="condition must have shape"):
        gen.generate(5, condition=[1, 0, 0])


def test_sampling_is_reproducible_and_save_load_keeps_samples(tmp_path):
    vocab = CharVocab().fit("hello world, the quick brown fox")
    gen = SequenceGenerator(vocab, embedding_dim=6, hidden_size=20, num_layers=2, seed=4)
    gen.fit_text("hello world, the quick brown fox. " * 30, seq_len=40, tbptt=20, epochs=2, batch_size=4, verbose=0)
    kw = dict(seed_text="the ", temperature=0.9, top_k=8, top_p=0.95, seed=11, num_samples=3)
    a = gen.generate(40, **kw)
    assert a == gen.generate(40, **kw) and len(a) == 3 and a[0] != a[1]
    assert a != gen.generate(40, **{**kw, "seed": 12})
    path = tmp_path / "gen.fastlstm"
    fastlstm.save(path, gen)
    back, _, _ = fastlstm.load(path)
    assert isinstance(back, SequenceGenerator) and back.vocab == gen.vocab
    assert back.generate(40, **kw) == a
    assert back.bits_per_char("hello world") == pytest.approx(gen.bits_per_char("hello world"), rel=1e-6)


def test_streaming_step_runs_the_native_cells():
    gen = SequenceGenerator(vocab_size=5, hidden_size=8, seed=0)
    s = gen.sampler()
    assert all(c.backend_name == fastlstm.backends.active().NAME for c in s.cells)
    h_before = s.h.copy()
    logits = s.step([1])
    assert logits.shape == (1, 5) and not np.array_equal(h_before, s.h)


def test_bad_input():
    vocab = CharVocab("abc", unknown="error")
    gen = SequenceGenerator(vocab, hidden_size=8)
    with pytest.raises(ValueError, match="'z' at position 1 is not in the vocabulary"):
        gen.generate(3, seed_text="az")
    with pytest.raises(ValueError, match="temperature must be a positive"):
        gen.generate(3, temperature=-1)
    with pytest.raises(ValueError, match="length must be >= 0"):
        gen.generate(-1)
    with pytest.raises(ValueError, match="non-empty list"):
        gen.sequence_batch([])
    ints = SequenceGenerator(vocab_size=4, hidden_size=8)
    with pytest.raises(ValueError, match="token id 4 outside the vocabulary"):
        ints.generate(3, seed_text=np.array([1, 4]))
    with pytest.raises(ValueError, match="seed_text is empty"):
        ints.generate(3)
    with pytest.raises(ValueError, match="sequence 1 is empty"):
        ints.sequence_batch([np.array([1, 2]), np.array([], np.int64)])
    with pytest.raises(ValueError, match="too short"):
        ints.stream_windows(np.array([1, 2]), seq_len=5)
    with pytest.raises(TypeError, match="integer tokens"):
        ints.generate(3, seed_text="ab")
    with pytest.raises(ValueError, match="give a CharVocab"):
        SequenceGenerator()
    with pytest.raises(ValueError, match="condition_every_step=True needs"):
        SequenceGenerator(vocab_size=4, condition_every_step=True)


def test_fit_text_time_budget_trains_in_rounds():
    gen = SequenceGenerator(vocab_size=4, embedding_dim=4, hidden_size=8, seed=0)
    hist = gen.fit_text(np.tile([0, 1, 2, 3], 300), np.tile([0, 1, 2, 3], 30), seq_len=20, tbptt=10, epochs=3,
                        batch_size=4, max_seconds=1e9, round_rows=20, verbose=0)
    # 59 rows of 20 (+1 target) in rounds of 20, three epochs, one shared optimizer: 9 rounds
    assert len(hist.epoch) == 9 and hist.history["rows_seen"][-1] == 3 * 59
    assert hist.history["val_loss"][-1] < hist.history["val_loss"][0]
    short = gen.fit_text(np.tile([0, 1, 2, 3], 300), seq_len=20, tbptt=10, epochs=3, batch_size=4,
                         max_seconds=0.0, round_rows=20, verbose=0)
    assert len(short.epoch) == 1  # a spent budget stops after the first round


def test_generate_demo_smoke(tmp_path):
    require("matplotlib")
    from fastlstm.__main__ import main

    assert main(["demo", "generate", "--smoke", "--no-progress", "--out", str(tmp_path)]) == 0
    import json

    m = json.loads((tmp_path / "metrics.json").read_text())
    assert {"lstm_bits_per_char", "ngram_bits_per_char", "ngram_order", "curve"} <= set(m)
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000
    assert "--- prompt 'def '" in (tmp_path / "samples.txt").read_text()
    back, _, _ = fastlstm.load(tmp_path / "model.fastlstm")
    assert isinstance(back, SequenceGenerator) and np.isfinite(back.bits_per_char("def f(x):\n    return x\n"))


def test_decode_benchmark_checks_against_torch_before_timing():
    require("torch")
    from fastlstm.bench import decode

    r = decode.sampling(hidden=20, vocab=9, embedding=4, steps=5, repeats=1, min_time=0.0)
    assert r["check"]["ok"] and r["check"]["same_tokens"]
    assert r["per_step_us"]["fastlstm"] > 0 and r["chars_per_second"]["torch_lstmcell"] > 0
    b = decode.beam(hidden=8, n_sources=5, beam_width=2, max_len=3, repeats=1, min_time=0.0)
    assert b["sequences_per_second"]["beam_batch"] > 0
    assert "chars/s" in decode.format_text({"sampling": r, "beam": b})
