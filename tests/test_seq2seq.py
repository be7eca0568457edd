"""Tests for Seq2Seq (fastlstm.models.seq2seq): learning, beam width 1 = greedy, teacher forcing
against the streaming decoder, whole-model gradients by float64 finite differences, save/load,
bad input."""

from __future__ import annotations

import numpy as np
import pytest

import fastlstm
from fastlstm import nn
from fastlstm.models.seq2seq import Seq2Seq
from fastlstm.text import END, START, CharVocab

from conftest import require

DIGITS = CharVocab("0123456789+")


def _one_digit_sums():
    qs = [f"{a}+{b}" for a in range(10) for b in range(10)]
    return qs, [str(eval(q)) for q in qs]


@pytest.fixture(scope="module")
def trained():
    """A small attention model that has learned every 1-digit sum (seconds)."""
    qs, ans = _one_digit_sums()
    m = Seq2Seq(DIGITS, hidden_size=48, embedding_dim=16, attention="general", seed=0)
    m.fit(qs, ans, epochs=120, batch_size=20, lr=1e-2, verbose=0)
    return m, qs, ans


def test_learns_one_digit_addition(trained):
    m, qs, ans = trained
    assert m.exact_match(qs, ans) == 1.0
    assert m.exact_match(qs, ans, beam_width=3, alpha=0.6) == 1.0


def test_beam_width_one_equals_greedy(trained):
    m, qs, _ = trained
    g = m.decode_ids(qs, beam_width=1, max_len=8)
    from fastlstm.decoding import beam_search

    state, step, reorder = m.decoder_state(qs)
    b = beam_search(step, reorder, state, len(qs), START, END, 8, beam_width=1, vocab_size=len(DIGITS))
    assert np.array_equal(g[0], b[0]) and np.array_equal(g[1], b[1])
    assert np.allclose(g[2], b[2])


def _stepwise_loss(m, sources, targets):
    (src, tin), (slen, tlen), tout, _ = m.prepare(sources, targets)
    state, step, _ = m.decoder_state(sources)
    total, n = 0.0, 0
    for t in range(tin.shape[1]):
        logp, state = step(tin[:, t], state)
        real = t < tlen
        total -= logp[np.arange(len(src)), tout[:, t]][real].sum()
        n += real.sum()
    return total / n


@pytest.mark.parametrize("attention,bidirectional,layers", [(None, False, 1), ("dot", True, 1),
                                                            ("general", False, 2), ("general", True, 2)])
def test_teacher_forced_loss_equals_the_stepwise_loss(attention, bidirectional, layers):
    v = CharVocab().fit("abcdefgh")
    m = Seq2Seq(v, hidden_size=11, embedding_dim=5, num_layers=layers, bidirectional=bidirectional,
                attention=attention, seed=3)
    sources, targets = ["abc", "h", "gfedcba", "dd"], ["cba", "hhhh", "", "d"]
    X, lengths, Y, ylen = m.prepare(sources, targets)
    loss, _ = nn.CrossEntropyLoss()(m.forward(X, lengths), Y, ylen)
    assert _stepwise_loss(m, sources, targets) == pytest.approx(loss, rel=1e-5)


@pytest.mark.parametrize("attention,bidirectional", [(None, True), ("general", True), ("dot", False)])
def test_backward_matches_finite_differences_float64(attention, bidirectional):
    v = CharVocab().fit("abcde")
    m = Seq2Seq(v, hidden_size=4, embedding_dim=3, num_layers=2, bidirectional=bidirectional,
                attention=attention, dtype=np.float64, seed=5)
    m.encoder.backend = m.decoder.backend = "reference"  # float64: the NumPy spec, no JIT compile
    X, lengths, Y, ylen = m.prepare(["abc", "e", "dcbae"], ["ba", "eee", ""])
    lossf = nn.CrossEntropyLoss()
    m.train()
    m.zero_grad()
    _, d = lossf(m.forward(X, lengths), Y, ylen)
    m.backward(d)
    m.eval()

    def loss():
        return lossf(m.forward(X, lengths), Y, ylen)[0]

    checked = 0
    for name, p, g in m.named_parameters():
        for idx in list(np.ndindex(p.shape))[:: max(1, p.size // 4)]:
            old = p[idx]
            p[idx] = old + 1e-6
            fp = loss()
            p[idx] = old - 1e-6
            fm = loss()
            p[idx] = old
            assert g[idx] == pytest.approx((fp - fm) / 2e-6, rel=1e-5, abs=1e-9), (name, idx)
            checked += 1
    assert checked > 40


def test_save_load_translates_identically(trained, tmp_path):
    m, qs, _ = trained
    path = tmp_path / "s2s.fastlstm"
    fastlstm.save(path, m)
    back, _, _ = fastlstm.load(path)
    assert isinstance(back, Seq2Seq) and back.src_vocab == m.src_vocab
    assert back.max_target_len == m.max_target_len == 2   # the longest target seen in fit()
    for kw in (dict(beam_width=1), dict(beam_width=4, alpha=0.6)):
        a, b = m.decode_ids(qs, **kw), back.decode_ids(qs, **kw)
        assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_decoding_stops_at_max_len(trained):
    m, qs, _ = trained
    tok, n, _ = m.decode_ids(qs[:5], max_len=1)
    assert tok.shape == (5, 1) and (n <= 1).all()
    assert all(len(t) <= 1 for t in m.translate(qs[:5], max_len=1))


def test_bad_input(trained):
    m, _, _ = trained
    with pytest.raises(ValueError, match="source 1 is empty"):
        m.translate(["1+1", ""])
    capped = Seq2Seq(DIGITS, hidden_size=4, max_source_len=3)
    with pytest.raises(ValueError, match="source 0 has 4 tokens, more than max_source_len = 3"):
        capped.translate(["12+1"])
    with pytest.raises(ValueError, match="more than max_source_len = 3"):
        capped.fit(["1+1", "12+1"], ["2", "13"], epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"beam_width = 16 is wider than the vocabulary \(15 tokens\)"):
        m.translate(["1+1"], beam_width=16)
    with pytest.raises(TypeError, match="list of str"):
        m.translate("1+1")
    strict = Seq2Seq(CharVocab("ab", unknown="error"), hidden_size=4)
    with pytest.raises(ValueError, match="'c' at position 1 is not in the vocabulary"):
        strict.translate(["ac"])
    with pytest.raises(ValueError, match="2 sources but 1 targets"):
        strict.prepare(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="attention must be"):
        Seq2Seq(DIGITS, attention="bahdanau")
    with pytest.raises(ValueError, match="dot attention needs"):
        from fastlstm.models.seq2seq import LuongAttention
        LuongAttention(4, 8, kind="dot")
    with pytest.raises(RuntimeError, match="training mode"):
        strict.backward(np.zeros((1, 1, len(strict.tgt_vocab)), np.float32))


def test_seq2seq_demo_smoke(tmp_path):
    require("matplotlib")
    from fastlstm.__main__ import main

    assert main(["demo", "seq2seq", "--smoke", "--no-progress", "--out", str(tmp_path)]) == 0
    import json

    m = json.loads((tmp_path / "metrics.json").read_text())
    assert set(m["tasks"]) == {"addition", "dates"}
    assert {"test", "test_unseen_formats"} <= set(m["tasks"]["dates"])
    assert 0.0 <= m["tasks"]["addition"]["test"]["exact_greedy"] <= 1.0
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000
    assert "== dates ==" in (tmp_path / "samples.txt").read_text()
    back, _, _ = fastlstm.load(tmp_path / "addition.fastlstm")
    assert isinstance(back, Seq2Seq)
