"""Decoding for sequence models: sampling (temperature, top-k, top-p), greedy and beam search, and
Luong attention (forward and backward side by side).

Decoders are written against a step function, so they run on any model (and in tests on a fixed
table of probabilities):

    step(tokens (R,) int64, state) -> (log_probs (R, V) float, state)    # R rows, one step each
    reorder(state, rows (R',) int64) -> state                           # keep / duplicate rows

Letters: B = batch, K = beam width, V = vocabulary, T = target steps, S = source steps,
H = decoder hidden size, E = encoder output size.
"""

from __future__ import annotations

import numpy as np

from .nn.losses import log_softmax  # one definition, shared with the losses  # noqa: F401


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------

def sampling_probs(logits, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None):
    """The distribution sample_logits draws from, (R, V) float64: softmax(logits / temperature),
    restricted to the top_k most likely tokens and then to the smallest set whose probability
    reaches top_p (nucleus sampling), renormalised. Ties at the top-k boundary keep the lower ids."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] == 0:
        raise ValueError(f"logits must have shape (R, V) with V >= 1, got {logits.shape}")
    if not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a positive finite number, got {temperature} "
                         f"(use greedy decoding for temperature 0)")
    V = logits.shape[1]
    p = np.exp((logits - logits.max(axis=1, keepdims=True)) / temperature)   # ∝ softmax(logits / T)
    p /= p.sum(axis=1, keepdims=True)
    if top_k is not None:
        if int(top_k) < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if top_k < V:
            order = np.argsort(-p, axis=1, kind="stable")
            drop = order[:, int(top_k):]
            np.put_along_axis(p, drop, 0.0, axis=1)
    if top_p is not None:
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        order = np.argsort(-p, axis=1, kind="stable")
        ps = np.take_along_axis(p, order, axis=1)
        cum = np.cumsum(ps, axis=1) / ps.sum(axis=1, keepdims=True)
        # keep a token when the mass before it is still below top_p (the top token always stays)
        keep = (cum - ps / ps.sum(axis=1, keepdims=True)) < top_p
        np.put_along_axis(p, order, np.where(keep, ps, 0.0), axis=1)
    return p / p.sum(axis=1, keepdims=True)


def sample_logits(logits, rng: np.random.Generator, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> np.ndarray:
    """One token per row of logits (R, V), drawn with `rng` (reproducible from its seed);
    temperature=0 means argmax (greedy)."""
    if temperature == 0:
        return np.asarray(logits).argmax(axis=1).astype(np.int64)
    p = sampling_probs(logits, temperature, top_k, top_p)
    u = rng.random(p.shape[0])
    # inverse CDF: the first token whose cumulative probability exceeds u
    cdf = np.cumsum(p, axis=1)
    if p.shape[0] == 1:  # one stream (the common case): a binary search
        return np.minimum(np.searchsorted(cdf[0], u, side="right"), p.shape[1] - 1).astype(np.int64)
    idx = (cdf <= u[:, None]).sum(axis=1)
    return np.minimum(idx, p.shape[1] - 1).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Greedy and beam search
# ---------------------------------------------------------------------------------------------

def _check_decode_args(batch_size, max_len, vocab_size=None, beam_width=None):
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if int(max_len) < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    if beam_width is not None:
        if int(beam_width) < 1:
            raise ValueError(f"beam_width must be >= 1, got {beam_width}")
        if vocab_size is not None and beam_width > vocab_size:
            raise ValueError(f"beam_width = {beam_width} is wider than the vocabulary ({vocab_size} tokens): "
                             f"a step could not fill the beam with distinct tokens")


def greedy_decode(step, state, batch_size: int, start_id: int, end_id: int, max_len: int):
    """Argmax decoding of B rows: (tokens (B, max_len) int64 padded with end_id after the end,
    lengths (B,) = tokens before the end token, log_prob (B,) of the chosen tokens incl. the end)."""
    _check_decode_args(batch_size, max_len)
    B = int(batch_size)
    out = np.full((B, max_len), end_id, np.int64)
    lengths = np.full(B, max_len, np.int64)
    score = np.zeros(B)
    done = np.zeros(B, bool)
    tok = np.full(B, start_id, np.int64)
    for t in range(max_len):
        logp, state = step(tok, state)
        tok = logp.argmax(axis=1).astype(np.int64)
        score += np.where(done, 0.0, logp[np.arange(B), tok])
        newly = ~done & (tok == end_id)
        lengths[newly] = t
        done |= newly
        out[:, t] = np.where(done, end_id, tok)
        if done.all():
            break
    return out, lengths, score


def length_penalty(length, alpha: float):
    """GNMT's ((5 + |Y|) / 6)^alpha: alpha = 0 ranks by the raw log-probability sum, larger alpha
    favours longer hypotheses."""
    return ((5.0 + np.asarray(length, dtype=np.float64)) / 6.0) ** alpha


def beam_search(step, reorder, state, batch_size: int, start_id: int, end_id: int, max_len: int,
                beam_width: int = 4, alpha: float = 0.0, vocab_size: int | None = None):
    """Beam search over B independent rows, K = beam_width hypotheses each (B·K decoder rows).

    A hypothesis ends when it emits end_id (the end token counts towards its log-probability, not
    its length); finished hypotheses are ranked by log P / length_penalty(length, alpha) against
    the live beams until no live beam can still win or max_len steps are done. A row with no
    finished hypothesis after max_len steps returns its best live beam (length max_len). `state` is the decoder state for B rows; it is expanded to
    B·K rows with reorder(). beam_width > vocab_size raises ValueError.

    Returns (tokens (B, max_len) int64 padded with end_id, lengths (B,), scores (B,) normalised).
    With beam_width=1 this is exactly greedy_decode (same step, same argmax tie rule).
    """
    _check_decode_args(batch_size, max_len, vocab_size, beam_width)
    B, K = int(batch_size), int(beam_width)
    rows = np.repeat(np.arange(B), K)
    state = reorder(state, rows)
    tok = np.full(B * K, start_id, np.int64)
    seqs = np.zeros((B * K, 0), np.int64)
    # only the first beam of each row is live at t = 0 (all K start identical)
    beam_lp = np.tile(np.r_[0.0, np.full(K - 1, -np.inf)], B)
    best_score = np.full(B, -np.inf)
    best_seq = [np.zeros(0, np.int64) for _ in range(B)]
    finished_row = np.zeros(B, bool)
    for t in range(max_len):
        logp, state = step(tok, state)
        V = logp.shape[1]
        if t == 0:
            _check_decode_args(B, max_len, V, K)
        cand = (beam_lp[:, None] + logp).reshape(B, K * V)               # (B, K·V)
        top = np.argsort(-cand, axis=1, kind="stable")[:, :K]             # best K per row
        top_lp = np.take_along_axis(cand, top, axis=1)                    # (B, K)
        src_beam, word = top // V, top % V
        src_rows = (np.arange(B)[:, None] * K + src_beam).ravel()
        word = word.ravel().astype(np.int64)
        top_lp = top_lp.ravel()
        seqs = np.concatenate([seqs[src_rows], word[:, None]], axis=1)
        state = reorder(state, src_rows)
        ends = (word == end_id) & np.isfinite(top_lp)
        # finished hypotheses: length t tokens before the end
        if ends.any():
            norm = top_lp / length_penalty(t, alpha)
            for r in np.flatnonzero(ends):
                b = r // K
                if norm[r] > best_score[b]:
                    best_score[b] = norm[r]
                    best_seq[b] = seqs[r, :-1].copy()
        beam_lp = np.where(ends, -np.inf, top_lp)
        tok = np.where(ends, end_id, word)
        # a row is done when its best finished hypothesis beats every live beam's best possible
        # normalised score (log-probs only fall; with alpha > 0 the penalty at max_len bounds it)
        live_best = beam_lp.reshape(B, K).max(axis=1)
        bound = live_best / (length_penalty(max_len, alpha) if alpha > 0 else 1.0)
        bound = np.where(live_best < 0, bound, live_best)
        finished_row = best_score >= bound
        if finished_row.all():
            break
    # rows where no hypothesis ended within max_len: the best live beam as it stands
    out = np.full((B, max_len), end_id, np.int64)
    lengths = np.zeros(B, np.int64)
    for b in range(B):
        lp = beam_lp[b * K:(b + 1) * K]
        k = int(np.argmax(lp))
        if not np.isfinite(best_score[b]) and np.isfinite(lp[k]):
            best_score[b], best_seq[b] = lp[k] / length_penalty(seqs.shape[1], alpha), seqs[b * K + k]
        n = len(best_seq[b])
        out[b, :n] = best_seq[b]
        lengths[b] = n
    return out, lengths, best_score


# ---------------------------------------------------------------------------------------------
# Luong attention ("global attention" after the RNN, no input feeding)
# ---------------------------------------------------------------------------------------------
#
#   score(h_t, e_s) = h_t · e_s              (dot; needs H == E)
#                   = h_t · (W_a e_s)        (general; W_a (H, E))
#   a_t   = softmax_s(score) over the real source steps s < src_len
#   c_t   = Σ_s a_ts e_s                                                    (B, T, E)
#   h̃_t   = tanh(W_c [c_t; h_t])             W_c (A, E + H)                 (B, T, A)

def _source_mask(src_lengths, B, S):
    if src_lengths is None:
        return np.ones((B, 1, S), bool)
    return (np.arange(S)[None, :] < np.asarray(src_lengths)[:, None])[:, None, :]


def attention_keys(enc, W_a=None):
    """W_a e_s for every source step (B, S, H); enc itself for dot attention. Decoding computes
    them once per source instead of once per step."""
    return enc if W_a is None else enc @ W_a.T


def attention_forward(h, enc, src_lengths, W_c, W_a=None, keys=None):
    """h (B, T, H) decoder states, enc (B, S, E) encoder outputs, src_lengths (B,) or None;
    keys = attention_keys(enc, W_a) when already known. Returns out (B, T, A) = h̃ and the cache
    backward needs (inputs, keys, weights, context input, out)."""
    B, S, _ = enc.shape
    if keys is None:
        keys = attention_keys(enc, W_a)                         # (B, S, H)
    scores = h @ keys.transpose(0, 2, 1)                        # (B, T, S)
    mask = _source_mask(src_lengths, B, S)
    scores = np.where(mask, scores, -np.inf)
    scores = scores - scores.max(axis=2, keepdims=True)
    a = np.exp(scores)
    a /= a.sum(axis=2, keepdims=True)                           # (B, T, S), zero on padding
    ctx = a @ enc                                               # (B, T, E)
    cat = np.concatenate([ctx, h], axis=2)                      # (B, T, E + H)
    out = np.tanh(cat @ W_c.T)                                  # (B, T, A)
    cache = (h, enc, keys, a, cat, out)
    return out, cache


def attention_backward(dout, cache, W_c, W_a=None):
    """Given dL/dout (B, T, A): returns dh (B, T, H), denc (B, S, E), dW_c, dW_a (None for dot)."""
    h, enc, keys, a, cat, out = cache
    E = enc.shape[2]
    dpre = dout * (1.0 - out * out)                             # out = tanh(pre)
    dW_c = dpre.reshape(-1, dpre.shape[2]).T @ cat.reshape(-1, cat.shape[2])   # pre = cat @ W_cᵀ
    dcat = dpre @ W_c
    dctx, dh = dcat[..., :E], dcat[..., E:].copy()              # cat = [ctx; h]
    da = dctx @ enc.transpose(0, 2, 1)                          # ctx = a @ enc
    denc = a.transpose(0, 2, 1) @ dctx
    dscores = a * (da - (da * a).sum(axis=2, keepdims=True))    # a = softmax(scores); masked a = 0
    dh += dscores @ keys                                        # scores = h @ keysᵀ
    dkeys = dscores.transpose(0, 2, 1) @ h                      # (B, S, H)
    if W_a is None:
        denc += dkeys                                           # keys = enc
        dW_a = None
    else:
        denc += dkeys @ W_a                                     # keys = enc @ W_aᵀ
        dW_a = dkeys.reshape(-1, dkeys.shape[2]).T @ enc.reshape(-1, E)
    return dh, denc, dW_c, dW_a
