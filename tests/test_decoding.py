"""Tests for fastlstm.decoding: sampling filters, greedy and beam search against a fixed Markov table,
and Luong attention's backward against float64 finite differences."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fastlstm import decoding as D


def test_sampling_probs_temperature_topk_topp():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    assert np.allclose(D.sampling_probs(logits), [[0.5, 0.3, 0.15, 0.05]])
    assert np.allclose(D.sampling_probs(logits, top_k=2), [[0.625, 0.375, 0, 0]])
    assert np.allclose(D.sampling_probs(logits, top_p=0.75), [[0.625, 0.375, 0, 0]])
    assert np.allclose(D.sampling_probs(logits, top_p=0.79), [[0.5 / 0.8, 0.3 / 0.8, 0, 0]])
    assert np.allclose(D.sampling_probs(logits, top_p=0.81), [[0.5, 0.3, 0.15, 0]] / np.float64(0.95))
    assert np.allclose(D.sampling_probs(logits, top_p=0.1), [[1, 0, 0, 0]])
    cold = D.sampling_probs(logits, temperature=0.5)
    assert np.allclose(cold, np.array([[0.25, 0.09, 0.0225, 0.0025]]) / 0.365)
    for bad in (dict(temperature=-1), dict(top_k=0), dict(top_p=0.0), dict(top_p=1.5)):
        with pytest.raises(ValueError):
            D.sampling_probs(logits, **bad)


def test_sample_logits_is_reproducible_and_follows_the_distribution():
    logits = np.log(np.tile([[0.5, 0.3, 0.15, 0.05]], (20000, 1)))
    s1 = D.sample_logits(logits, np.random.default_rng(3))
    s2 = D.sample_logits(logits, np.random.default_rng(3))
    assert np.array_equal(s1, s2)
    freq = np.bincount(s1, minlength=4) / len(s1)
    assert np.allclose(freq, [0.5, 0.3, 0.15, 0.05], atol=0.015)
    s3 = D.sample_logits(logits, np.random.default_rng(3), top_k=2)
    assert set(np.unique(s3)) == {0, 1}
    assert np.array_equal(D.sample_logits(logits[:3], None, temperature=0), [0, 0, 0])


def _markov(V=6, seed=0, end=2):
    """A step function over a fixed random Markov table; state = the previous token (rows)."""
    rng = np.random.default_rng(seed)
    table = D.log_softmax(rng.normal(0, 2, (V, V)))

    def step(tok, state):
        return table[tok], state

    def reorder(state, rows):
        return state

    return table, step, reorder


def _exhaustive_best(table, start, end, max_len, alpha):
    """The best end-terminated sequence by brute force (normalised by GNMT's length penalty)."""
    V = table.shape[0]
    best, best_seq = -np.inf, None
    for n in range(0, max_len):
        for seq in itertools.product(range(V), repeat=n):
            if end in seq:
                continue
            lp, prev = 0.0, start
            for w in seq + (end,):
                lp += table[prev, w]
                prev = w
            s = lp / D.length_penalty(n, alpha)
            if s > best:
                best, best_seq = s, list(seq)
    return best, best_seq


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_beam_width_one_equals_greedy(seed):
    table, step, reorder = _markov(V=7, seed=seed)
    B, max_len = 5, 8
    g_tok, g_len, g_score = D.greedy_decode(step, None, B, start_id=1, end_id=2, max_len=max_len)
    b_tok, b_len, b_score = D.beam_search(step, reorder, None, B, 1, 2, max_len, beam_width=1)
    assert np.array_equal(g_tok, b_tok) and np.array_equal(g_len, b_len)
    assert np.allclose(g_score, b_score)


@pytest.mark.parametrize("alpha", [0.0, 0.7])
def test_wide_beam_finds_the_exhaustive_optimum(alpha):
    table, step, reorder = _markov(V=5, seed=4)
    max_len = 5
    best, best_seq = _exhaustive_best(table, 1, 2, max_len, alpha)
    # a beam as wide as the vocabulary over a first-order chain keeps the best path to every token
    tok, n, score = D.beam_search(step, reorder, None, 1, 1, 2, max_len, beam_width=5, alpha=alpha)
    assert list(tok[0, :n[0]]) == best_seq and score[0] == pytest.approx(best)
    # a narrower beam that ends within max_len never beats the optimum
    for K in (1, 2, 3):
        _, n1, s1 = D.beam_search(step, reorder, None, 1, 1, 2, max_len, beam_width=K, alpha=alpha)
        assert n1[0] == max_len or s1[0] <= best + 1e-12


def test_beam_reorders_the_state_rows():
    """A state that records each row's history must follow the beams' reordering."""
    table, _, _ = _markov(V=6, seed=7)

    def step(tok, hist):
        return table[tok], np.concatenate([hist, tok[:, None]], axis=1)

    def reorder(hist, rows):
        return hist[rows]

    B, K = 3, 3
    tok, n, _ = D.beam_search(step, reorder, np.zeros((B, 0), np.int64), B, 1, 2, 6, beam_width=K)
    assert tok.shape == (B, 6) and (n <= 6).all()


def test_decode_bad_arguments():
    table, step, reorder = _markov(V=4)
    with pytest.raises(ValueError, match="beam_width = 5 is wider than the vocabulary"):
        D.beam_search(step, reorder, None, 1, 1, 2, 5, beam_width=5)
    with pytest.raises(ValueError, match="beam_width must be >= 1"):
        D.beam_search(step, reorder, None, 1, 1, 2, 5, beam_width=0)
    with pytest.raises(ValueError, match="max_len must be >= 1"):
        D.greedy_decode(step, None, 1, 1, 2, 0)


def _fd_check(f, args, grads, eps=1e-6):
    for name, x in args.items():
        g = grads[name]
        num = np.zeros_like(x)
        it = np.nditer(x, flags=["multi_index"])
        for _ in it:
            i = it.multi_index
            old = x[i]
            x[i] = old + eps
            fp = f()
            x[i] = old - eps
            fm = f()
            x[i] = old
            num[i] = (fp - fm) / (2 * eps)
        assert np.allclose(g, num, rtol=1e-6, atol=1e-8), name


@pytest.mark.parametrize("kind", ["dot", "general"])
def test_attention_backward_matches_finite_differences(kind):
    rng = np.random.default_rng(0)
    B, T, S, H, A = 3, 4, 5, 3, 2
    E = H if kind == "dot" else 4
    h, enc = rng.normal(size=(B, T, H)), rng.normal(size=(B, S, E))
    W_c = rng.normal(size=(A, E + H)) * 0.5
    W_a = rng.normal(size=(H, E)) * 0.5 if kind == "general" else None
    lengths = np.array([5, 2, 1])
    enc[1, 2:] = rng.normal(size=(3, E)) * 100   # padded source steps must not matter
    G = rng.normal(size=(B, T, A))

    def loss():
        out, _ = D.attention_forward(h, enc, lengths, W_c, W_a)
        return float((out * G).sum())

    out, cache = D.attention_forward(h, enc, lengths, W_c, W_a)
    dh, denc, dW_c, dW_a = D.attention_backward(G, cache, W_c, W_a)
    assert np.all(denc[1, 2:] == 0) and np.all(denc[2, 1:] == 0)
    args = {"h": h, "enc": enc, "W_c": W_c}
    grads = {"h": dh, "enc": denc, "W_c": dW_c}
    if W_a is not None:
        args["W_a"], grads["W_a"] = W_a, dW_a
    _fd_check(loss, args, grads)
    # attention weights: a distribution over the real source steps only
    a = cache[3]
    assert np.allclose(a.sum(axis=2), 1) and np.all(a[1, :, 2:] == 0)
