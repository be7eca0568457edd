"""Seq2Seq: an LSTM encoder–decoder with teacher forcing, optional Luong attention and a
bidirectional encoder option, decoded greedily or with beam search on the streaming step API.

    src_vocab = CharVocab().fit(sources); tgt_vocab = CharVocab().fit(targets)
    model = Seq2Seq(src_vocab, tgt_vocab, hidden_size=128, attention="general")
    model.fit(sources, targets, epochs=10)
    model.translate(["535+61"], beam_width=4)            # -> ["596"]

Training is one LSTM call per side (fastlstm.train.fit with the tuple input (src, tgt_in)):

    enc, (h_n, c_n) = Encoder(embed_src(src))                    (B, S, E), E = D·H
    y, _            = Decoder(embed_tgt([START] + tgt), (h_n, c_n) with directions concatenated)
    h̃               = LuongAttention(y, enc)       (Luong's global attention without input
                                                     feeding, so the decoder runs in one call)
    logits          = head(h̃)                      (B, T, V), cross-entropy on tgt + [END]

A bidirectional encoder of hidden_size H gives a decoder of 2H (each layer starts from both
directions' final states side by side), so dot attention needs no projection.

Letters: B = batch, S = source steps, T = target steps, V = vocabulary, H = hidden,
D = encoder directions, L = layers, E = encoder output size (D·H), A = attention output size.
"""

from __future__ import annotations

import numpy as np

from .. import core, functional
from ..decoding import (attention_backward, attention_forward, attention_keys, beam_search, greedy_decode,
                        log_softmax)
from ..nn import LSTM, CrossEntropyLoss, Embedding, Linear
from ..nn.module import Module, register
from ..text import END, PAD, START, CharVocab


@register
class LuongAttention(Module):
    """h̃_t = tanh(W_c [c_t; h_t]), c_t = Σ_s softmax_s(score(h_t, e_s)) e_s with
    score = h·e (dot) or h·W_a e (general). See decoding.attention_forward/backward."""

    def __init__(self, query_size, memory_size, out_size=None, kind="general", dtype=np.float32, seed=None):
        super().__init__()
        if kind not in ("dot", "general"):
            raise ValueError(f"attention must be 'dot' or 'general', got {kind!r}")
        if kind == "dot" and query_size != memory_size:
            raise ValueError(f"dot attention needs query_size == memory_size, got {query_size} and {memory_size}")
        self.query_size, self.memory_size = int(query_size), int(memory_size)
        self.out_size, self.kind, self.dtype = int(out_size or query_size), kind, np.dtype(dtype)
        rng = np.random.default_rng(seed)
        H, E, A = self.query_size, self.memory_size, self.out_size
        k = 1.0 / np.sqrt(E + H)
        self.add_param("W_c", rng.uniform(-k, k, (A, E + H)).astype(self.dtype))
        if kind == "general":
            self.add_param("W_a", rng.uniform(-1 / np.sqrt(E), 1 / np.sqrt(E), (H, E)).astype(self.dtype))
        self._cache = None

    def get_config(self):
        return dict(query_size=self.query_size, memory_size=self.memory_size, out_size=self.out_size, kind=self.kind,
                    dtype=self.dtype.name)

    def extra_repr(self):
        return self.kind

    def forward(self, h, enc=None, src_lengths=None, keys=None):
        out, cache = attention_forward(h, enc, src_lengths, self.params["W_c"], self.params.get("W_a"), keys)
        if self.training:
            self._cache = cache
        return out

    def backward(self, dout):
        if self._cache is None:
            raise RuntimeError("LuongAttention.backward needs a preceding forward in training mode")
        dh, denc, dW_c, dW_a = attention_backward(dout, self._cache, self.params["W_c"], self.params.get("W_a"))
        self.grads["W_c"] += dW_c
        if dW_a is not None:
            self.grads["W_a"] += dW_a
        self._cache = None
        return dh, denc


def _as_vocab(v, name):
    if isinstance(v, dict):
        return CharVocab.from_state(v)
    if not isinstance(v, CharVocab):
        raise TypeError(f"{name} must be a CharVocab (or its get_state()), got {type(v).__name__}")
    return v


@register
class Seq2Seq(Module):
    """Character encoder–decoder (see the module docstring). Sources and targets are str.

    max_source_len: a hard limit on source tokens (None: none) — a longer source is a ValueError
    in fit() and translate(). max_target_len: None = the longest target seen by fit(); decoding
    stops after max_len tokens (default max_target_len + 5) and returns what it has (no end
    token). Characters outside a vocabulary follow its `unknown` policy (default: the UNK id)."""

    def __init__(self, src_vocab, tgt_vocab=None, embedding_dim=32, hidden_size=128, num_layers=1,
                 bidirectional=False, attention=None, reverse_source=False, max_source_len=None,
                 max_target_len=None, dtype=np.float32, seed=0):
        super().__init__()
        self.src_vocab = _as_vocab(src_vocab, "src_vocab")
        self.tgt_vocab = self.src_vocab if tgt_vocab is None else _as_vocab(tgt_vocab, "tgt_vocab")
        if attention not in (None, "dot", "general"):
            raise ValueError(f"attention must be None, 'dot' or 'general', got {attention!r}")
        self.embedding_dim, self.hidden_size, self.num_layers = int(embedding_dim), int(hidden_size), int(num_layers)
        self.bidirectional, self.attention, self.reverse_source = bool(bidirectional), attention, bool(reverse_source)
        self.max_source_len, self.max_target_len, self.seed = max_source_len, max_target_len, seed
        self.dtype = dt = np.dtype(dtype)
        D = 2 if self.bidirectional else 1
        H, L, Em = self.hidden_size, self.num_layers, self.embedding_dim
        self.dec_size = D * H
        seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(6)]
        self.src_embed = Embedding(len(self.src_vocab), Em, dtype=dt, seed=seeds[0])
        self.tgt_embed = Embedding(len(self.tgt_vocab), Em, dtype=dt, seed=seeds[1])
        for emb in (self.src_embed, self.tgt_embed):
            emb.params["weight"] *= 0.1
        self.encoder = LSTM(Em, H, L, batch_first=True, bidirectional=self.bidirectional, forget_bias=1.0,
                            dtype=dt, seed=seeds[2])
        self.decoder = LSTM(Em, self.dec_size, L, batch_first=True, forget_bias=1.0, dtype=dt, seed=seeds[3])
        self.attn = LuongAttention(self.dec_size, D * H, kind=attention, dtype=dt, seed=seeds[4]) if attention else None
        self.head = Linear(self.dec_size, len(self.tgt_vocab), dtype=dt, seed=seeds[5])
        self._has_tape = False

    def get_config(self):
        return dict(src_vocab=self.src_vocab.get_state(),
                    tgt_vocab=None if self.tgt_vocab is self.src_vocab else self.tgt_vocab.get_state(),
                    embedding_dim=self.embedding_dim, hidden_size=self.hidden_size, num_layers=self.num_layers,
                    bidirectional=self.bidirectional, attention=self.attention,
                    reverse_source=self.reverse_source, max_source_len=self.max_source_len,
                    max_target_len=self.max_target_len, dtype=self.dtype.name, seed=self.seed)

    def extra_repr(self):
        return (f"H={self.hidden_size}, L={self.num_layers}, attention={self.attention}, "
                f"bidirectional={self.bidirectional}")

    # -- the bridge: encoder final states -> decoder initial states ---------------------------
    def _bridge(self, h_n, c_n):
        """(L·D, B, H) -> (L, B, D·H): each layer's directions side by side."""
        L, D = self.num_layers, 2 if self.bidirectional else 1
        def f(s):
            return np.ascontiguousarray(s.reshape(L, D, *s.shape[1:]).transpose(0, 2, 1, 3).reshape(L, s.shape[1], -1))
        return f(h_n), f(c_n)

    def _bridge_backward(self, dh0, dc0):
        L, D, H = self.num_layers, 2 if self.bidirectional else 1, self.hidden_size
        def f(d):
            return np.ascontiguousarray(d.reshape(L, d.shape[1], D, H).transpose(0, 2, 1, 3).reshape(L * D, d.shape[1], H))
        return f(dh0), f(dc0)

    # -- training: forward and backward side by side ----------------------------------------
    def forward(self, x, lengths=None):
        """x = (src (B, S), tgt_in (B, T)) ids, lengths = (src_len, tgt_len) -> logits (B, T, V)."""
        if not isinstance(x, tuple) or len(x) != 2:
            raise ValueError("Seq2Seq.forward takes x = (src ids (B, S), decoder input ids (B, T))")
        src, tgt_in = x
        src_len, tgt_len = (None, None) if lengths is None else lengths
        enc, (h_n, c_n) = self.encoder.forward(self.src_embed.forward(src), None, src_len)   # (B, S, E)
        h0, c0 = self._bridge(h_n, c_n)
        y, _ = self.decoder.forward(self.tgt_embed.forward(tgt_in), (h0, c0), tgt_len)      # (B, T, H_dec)
        if self.attn is not None:
            y = self.attn.forward(y, enc, src_len)                                          # (B, T, A)
        self._has_tape, self._enc_shape = self.training, enc.shape
        return self.head.forward(y)                                                          # (B, T, V)

    def backward(self, dlogits):
        if not self._has_tape:
            raise RuntimeError("Seq2Seq.backward needs a preceding forward in training mode")
        self._has_tape = False
        dy = self.head.backward(dlogits)                       # logits = head(y)
        denc = None
        if self.attn is not None:
            dy, denc = self.attn.backward(dy)                  # y = attn(y_dec, enc)
        dx, (dh0, dc0) = self.decoder.backward(dy)             # y_dec = decoder(embed(tgt_in), bridge(h_n, c_n))
        self.tgt_embed.backward(dx)
        dh_n, dc_n = self._bridge_backward(dh0, dc0)
        if denc is None:                                       # no attention: enc feeds only (h_n, c_n)
            denc = np.zeros(self._enc_shape, self.dtype)
        dx_src, _ = self.encoder.backward(np.ascontiguousarray(denc, dtype=self.dtype), dh_n, dc_n, need_dh0=False)
        self.src_embed.backward(dx_src)                        # enc = encoder(embed(src))
        return None

    # -- data ---------------------------------------------------------------------------------
    def _src_ids(self, sources):
        if isinstance(sources, str):
            raise TypeError("sources must be a list of str, not one str")
        rows = []
        for i, s in enumerate(sources):
            ids = self.src_vocab.encode(s)
            if len(ids) == 0:
                raise ValueError(f"source {i} is empty: the encoder needs at least one token")
            if self.max_source_len is not None and len(ids) > self.max_source_len:
                raise ValueError(f"source {i} has {len(ids)} tokens, more than max_source_len = "
                                 f"{self.max_source_len}")
            rows.append(ids[::-1] if self.reverse_source else ids)
        lengths = np.array([len(r) for r in rows], np.int64)
        X = np.full((len(rows), int(lengths.max())), PAD, np.int64)
        for i, r in enumerate(rows):
            X[i, :len(r)] = r
        return X, lengths

    def prepare(self, sources, targets):
        """Padded training arrays: ((src, tgt_in), (src_len, tgt_len)), tgt_out, tgt_len with
        tgt_in = START + target, tgt_out = target + END."""
        if len(sources) != len(targets):
            raise ValueError(f"{len(sources)} sources but {len(targets)} targets")
        if not len(sources):
            raise ValueError("no training pairs")
        src, src_len = self._src_ids(sources)
        tg = [self.tgt_vocab.encode(t) for t in targets]
        tgt_len = np.array([len(t) + 1 for t in tg], np.int64)
        T = int(tgt_len.max())
        tin = np.full((len(tg), T), PAD, np.int64)
        tout = np.full((len(tg), T), PAD, np.int64)
        for i, t in enumerate(tg):
            tin[i, 0], tin[i, 1:len(t) + 1] = START, t
            tout[i, :len(t)], tout[i, len(t)] = t, END
        return (src, tin), (src_len, tgt_len), tout, tgt_len

    def fit(self, sources, targets, *, epochs=10, batch_size=64, lr=3e-3, clip_norm=5.0, seed=0,
            validation_data=None, callbacks=(), verbose=1):
        """Teacher-forced training through fastlstm.train.fit. validation_data = (sources, targets)
        reports val_loss per epoch. Returns the History."""
        from ..train import fit

        X, lengths, Y, y_len = self.prepare(sources, targets)
        self.max_target_len = int(max(self.max_target_len or 0, y_len.max() - 1))
        val = None
        if validation_data is not None:
            Xv, lv, Yv, ylv = self.prepare(*validation_data)
            val = (Xv, Yv, lv, ylv)
        return fit(self, X, Y, loss=CrossEntropyLoss(), lr=lr, epochs=epochs, batch_size=batch_size,
                   lengths=lengths, y_lengths=y_len, clip_norm=clip_norm, seed=seed, validation_data=val,
                   callbacks=callbacks, verbose=verbose)

    # -- decoding on the streaming step API ---------------------------------------------------
    def decoder_state(self, sources):
        """Encode sources (one packed forward) -> (state, step, reorder) for decoding.beam_search /
        greedy_decode; step runs one packed LSTM step per decoder layer + attention + head."""
        src, src_len = self._src_ids(sources)
        enc_packed = self.encoder.prepack()
        enc, (h_n, c_n) = enc_packed(self.src_embed.params["weight"][src], None, src_len)
        h0, c0 = self._bridge(h_n, c_n)
        state = {"h": h0, "c": c0, "enc": enc, "src_len": src_len}
        if self.attn is not None:
            state["keys"] = attention_keys(enc, self.attn.params.get("W_a"))
        H = self.dec_size
        cells = [core.prepack(W_ih, W_hh, functional._bias_sum(b_ih, b_hh, H, self.dtype))
                 for W_ih, W_hh, b_ih, b_hh in self.decoder.weights()]
        E_tgt = self.tgt_embed.params["weight"]
        W_o, b_o = self.head.params["weight"], self.head.params["bias"]
        W_c = self.attn.params["W_c"] if self.attn is not None else None
        W_a = self.attn.params.get("W_a") if self.attn is not None else None

        def step(tok, st):
            x = E_tgt[tok]                                     # (R, E)
            for l, cell in enumerate(cells):
                x = cell.step(x, st["h"][l], st["c"][l])       # h, c updated in place
            if W_c is not None:
                x = attention_forward(x[:, None], st["enc"], st["src_len"], W_c, W_a, st["keys"])[0][:, 0]
            return log_softmax((x @ W_o.T + b_o).astype(np.float64)), st

        def reorder(st, rows):
            return {"h": np.ascontiguousarray(st["h"][:, rows]), "c": np.ascontiguousarray(st["c"][:, rows]),
                    **{k: v[rows] for k, v in st.items() if k not in ("h", "c")}}

        return state, step, reorder

    def decode_ids(self, sources, beam_width: int = 1, alpha: float = 0.0, max_len: int | None = None):
        """(tokens (N, max_len), lengths (N,), scores (N,)): greedy for beam_width=1, else beam search."""
        if max_len is None:
            max_len = (self.max_target_len or 50) + 5
        state, step, reorder = self.decoder_state(sources)
        N, V = len(sources), len(self.tgt_vocab)
        if beam_width == 1:
            return greedy_decode(step, state, N, START, END, int(max_len))
        return beam_search(step, reorder, state, N, START, END, int(max_len), int(beam_width), alpha, V)

    def translate(self, sources, beam_width: int = 1, alpha: float = 0.0, max_len: int | None = None,
                  batch_size: int = 1000) -> list:
        """Decode a list of source strings to target strings (in batches of batch_size)."""
        if isinstance(sources, str):
            raise TypeError("translate() takes a list of str; wrap one source as [source]")
        out = []
        for i in range(0, len(sources), int(batch_size)):
            chunk = list(sources[i:i + int(batch_size)])
            tok, n, _ = self.decode_ids(chunk, beam_width, alpha, max_len)
            out += [self.tgt_vocab.decode(tok[j, :n[j]]) for j in range(len(chunk))]
        return out

    def exact_match(self, sources, targets, **kw) -> float:
        """Fraction of sources decoded to exactly their target."""
        pred = self.translate(sources, **kw)
        return float(np.mean([p == t for p, t in zip(pred, targets)]))
