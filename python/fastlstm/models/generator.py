"""SequenceGenerator: a character / token language model (Embedding -> stacked LSTM -> per-step
softmax) with sampling and conditioned generation.

    vocab = CharVocab().fit(text)
    gen = SequenceGenerator(vocab, hidden_size=256)
    gen.fit_text(train_text, valid_text, epochs=4)                 # truncated BPTT through fit()
    gen.generate(200, seed_text="def ", temperature=0.8, seed=0)   # streaming steps, packed once
    gen.bits_per_char(valid_text)

Conditioned generation (how an image-caption decoder starts): with condition_size = C the initial
state of every layer is tanh(W [cond] + b) — one learned projection to (h0, c0) of all layers —
and condition_every_step=True also concatenates cond to the input of every step. Training data is
then (ids, cond) and forward takes the tuple.

Letters: B = batch, T = steps, V = vocabulary, E = embedding, H = hidden, L = layers, C = condition.
"""

from __future__ import annotations

import numpy as np

from .. import core, functional
from ..decoding import log_softmax, sample_logits
from ..nn import LSTM, CrossEntropyLoss, Embedding, Linear
from ..nn.module import Module, register
from ..text import END, PAD, START, CharVocab, bits_per_char, check_token_ids


@register
class SequenceGenerator(Module):
    """Language model over characters (give a CharVocab) or integer tokens (give vocab_size).

    With a CharVocab, sequences start with START and end with END (fit_sequences) and text goes in
    and out; in integer mode tokens are ids in [0, vocab_size) and start_id / end_id are optional.
    """

    def __init__(self, vocab=None, vocab_size=None, embedding_dim=32, hidden_size=256, num_layers=1,
                 dropout=0.0, condition_size=0, condition_every_step=False, start_id=None, end_id=None,
                 dtype=np.float32, seed=0):
        super().__init__()
        if isinstance(vocab, dict):
            vocab = CharVocab.from_state(vocab)
        if vocab is not None and not isinstance(vocab, CharVocab):
            raise TypeError(f"vocab must be a CharVocab (or its get_state()), got {type(vocab).__name__}")
        if vocab is None and vocab_size is None:
            raise ValueError("give a CharVocab (vocab=) or an integer vocabulary size (vocab_size=)")
        if vocab is not None and vocab_size is not None and vocab_size != len(vocab):
            raise ValueError(f"vocab_size={vocab_size} disagrees with the vocabulary's {len(vocab)} entries")
        self.vocab = vocab
        V = len(vocab) if vocab is not None else int(vocab_size)
        if V < 2:
            raise ValueError(f"the vocabulary needs at least 2 tokens, got {V}")
        self.vocab_size, self.embedding_dim, self.hidden_size = V, int(embedding_dim), int(hidden_size)
        self.num_layers, self.dropout, self.seed = int(num_layers), float(dropout), seed
        self.dtype = np.dtype(dtype)
        self.condition_size, self.condition_every_step = int(condition_size), bool(condition_every_step)
        if self.condition_every_step and not self.condition_size:
            raise ValueError("condition_every_step=True needs condition_size > 0")
        self.start_id = START if vocab is not None and start_id is None else start_id
        self.end_id = END if vocab is not None and end_id is None else end_id
        for name in ("start_id", "end_id"):
            v = getattr(self, name)
            if v is not None and not 0 <= int(v) < V:
                raise ValueError(f"{name}={v} is outside the vocabulary [0, {V})")
        ss = np.random.SeedSequence(seed)
        seeds = [int(s.generate_state(1)[0]) for s in ss.spawn(4)]
        L, H, C = self.num_layers, self.hidden_size, self.condition_size
        self.embed = Embedding(V, self.embedding_dim, dtype=self.dtype, seed=seeds[0])
        self.embed.params["weight"] *= 0.1  # small inputs: the LSTM starts in its linear range
        self.init = Linear(C, 2 * L * H, activation="tanh", dtype=self.dtype, seed=seeds[1]) if C else None
        in_size = self.embedding_dim + (C if self.condition_every_step else 0)
        self.lstm = LSTM(in_size, H, L, batch_first=True, dropout=self.dropout, forget_bias=1.0,
                         dtype=self.dtype, seed=seeds[2])
        self.head = Linear(H, V, dtype=self.dtype, seed=seeds[3])
        self._cond = None

    def get_config(self):
        return dict(vocab=None if self.vocab is None else self.vocab.get_state(),
                    vocab_size=None if self.vocab is not None else self.vocab_size,
                    embedding_dim=self.embedding_dim, hidden_size=self.hidden_size, num_layers=self.num_layers,
                    dropout=self.dropout, condition_size=self.condition_size,
                    condition_every_step=self.condition_every_step, start_id=self.start_id,
                    end_id=self.end_id, dtype=self.dtype.name, seed=self.seed)

    def extra_repr(self):
        return f"V={self.vocab_size}, H={self.hidden_size}, L={self.num_layers}"

    # -- training: forward and backward side by side ----------------------------------------
    def _split_input(self, x):
        if isinstance(x, tuple):
            if len(x) != 2:
                raise ValueError("a conditioned input is the tuple (ids (B, T), cond (B, C))")
            ids, cond = x
        else:
            ids, cond = x, None
        if self.condition_size and cond is None:
            raise ValueError(f"this model is conditioned (condition_size={self.condition_size}): "
                             f"pass x = (ids, cond) with cond (B, {self.condition_size})")
        if not self.condition_size and cond is not None:
            raise ValueError("this model has no condition (condition_size=0) but got (ids, cond)")
        ids = np.asarray(ids)
        if ids.ndim != 2:
            raise ValueError(f"ids must have shape (B, T), got {ids.shape}")
        if cond is not None:
            cond = np.ascontiguousarray(cond, dtype=self.dtype)
            if cond.shape != (ids.shape[0], self.condition_size):
                raise ValueError(f"cond must have shape (B, C) = ({ids.shape[0]}, {self.condition_size}), "
                                 f"got {cond.shape}")
        return ids, cond

    def _initial_state(self, cond):
        """(h0, c0) each (L, B, H) from cond: tanh(W cond + b) split into h and c of every layer."""
        L, H = self.num_layers, self.hidden_size
        s = self.init.forward(cond)                                  # (B, 2·L·H)
        s = s.reshape(-1, 2, L, H).transpose(1, 2, 0, 3)             # (2, L, B, H)
        return np.ascontiguousarray(s[0]), np.ascontiguousarray(s[1])

    def forward(self, x, lengths=None, hx=None):
        """x: ids (B, T), or (ids, cond) for a conditioned model -> logits (B, T, V).
        lengths (B,) (or fit's tuple (lengths, None) for (ids, cond))."""
        ids, cond = self._split_input(x)
        if isinstance(lengths, tuple):
            lengths = lengths[0]
        e = self.embed.forward(ids)                                  # (B, T, E)
        if cond is not None:
            if self.condition_every_step:
                e = np.concatenate([e, np.broadcast_to(cond[:, None], (*ids.shape, self.condition_size))], axis=2)
            hx = self._initial_state(cond)
        y, _ = self.lstm.forward(e, hx, lengths)                     # (B, T, H)
        self._cond = cond is not None
        return self.head.forward(y)                                  # (B, T, V)

    def backward(self, dlogits):
        dy = self.head.backward(dlogits)                             # logits = head(y)
        de, (dh0, dc0) = self.lstm.backward(dy)                      # y = lstm(e, hx)
        E = self.embedding_dim
        if self._cond:
            dcond_state = np.stack([dh0, dc0])                      # (2, L, B, H)
            dcond_state = dcond_state.transpose(2, 0, 1, 3).reshape(dh0.shape[1], -1)
            self.init.backward(dcond_state)                          # (h0, c0) = split(init(cond))
        self.embed.backward(np.ascontiguousarray(de[..., :E]))      # e = [embed(ids); cond]
        return None

    # -- data ---------------------------------------------------------------------------------
    def _ids(self, seq, name="sequence", add_start=False, add_end=False):
        if isinstance(seq, str):
            if self.vocab is None:
                raise TypeError(f"{name} is text, but this model has integer tokens (no vocab)")
            return self.vocab.encode(seq, add_start=add_start, add_end=add_end)
        ids = check_token_ids(seq, self.vocab_size, name)
        if ids.ndim != 1:
            raise ValueError(f"{name} must be a 1-D sequence of token ids, got shape {ids.shape}")
        parts = ([[self.start_id]] if add_start and self.start_id is not None else []) + [ids] + \
                ([[self.end_id]] if add_end and self.end_id is not None else [])
        return np.concatenate(parts).astype(np.int64)

    def stream_windows(self, text, seq_len: int):
        """A long text or id sequence -> (X, Y) rows of seq_len steps, Y = X shifted by one."""
        ids = self._ids(text, "text")
        n = (len(ids) - 1) // seq_len
        if n < 1:
            raise ValueError(f"the text has {len(ids)} tokens: too short for one row of seq_len={seq_len} + 1")
        X = ids[:n * seq_len].reshape(n, seq_len)
        Y = ids[1:n * seq_len + 1].reshape(n, seq_len)
        return X, Y

    def sequence_batch(self, seqs):
        """Independent sequences (str or id arrays) -> padded (X, Y, lengths): X = START + s,
        Y = s + END (with a CharVocab; in integer mode as far as start_id/end_id are set)."""
        if isinstance(seqs, (str, np.ndarray)) or not len(seqs):
            raise ValueError("give a non-empty list of sequences (str or token-id arrays)")
        full = [self._ids(s, f"sequence {i}", add_start=True, add_end=True) for i, s in enumerate(seqs)]
        short = [i for i, f in enumerate(full) if len(f) < 2]
        if short:
            raise ValueError(f"sequence {short[0]} is empty: nothing to learn without start_id/end_id")
        lengths = np.array([len(f) - 1 for f in full], np.int64)
        T = int(lengths.max())
        X = np.full((len(full), T), PAD, np.int64)
        Y = np.full((len(full), T), PAD, np.int64)
        for i, f in enumerate(full):
            X[i, :len(f) - 1], Y[i, :len(f) - 1] = f[:-1], f[1:]
        return X, Y, lengths

    def fit_text(self, text, valid_text=None, *, seq_len=1000, tbptt=100, epochs=4, batch_size=32, lr=3e-3,
                 clip_norm=5.0, seed=0, max_seconds=None, round_rows=1000, lr_decay="cosine", optimizer="adam",
                 callbacks=(), verbose=1):
        """Train on one long text (or id sequence): rows of seq_len tokens, truncated BPTT every
        tbptt steps with the state carried along the row (fastlstm.train.fit). Returns the History.

        max_seconds: a training time budget. The rows of each epoch (shuffled) are then trained in
        rounds of round_rows rows — one fit() call each, sharing one optimizer, validating after
        each — and training stops when the next round would end past the budget. The History then
        has one entry per round, with "seconds" (elapsed) and "rows_seen". With lr_decay="cosine"
        each round starts at lr·(0.1 + 0.9·(1 + cos(π·elapsed/max_seconds))/2): the rate anneals
        over the budget whatever the machine's speed."""
        from .. import optim
        from ..train import History, fit

        X, Y = self.stream_windows(text, seq_len)
        val = None
        if valid_text is not None:
            Xv, Yv = self.stream_windows(valid_text, min(seq_len, len(valid_text) - 1))
            val = (Xv, Yv)
        kw = dict(loss=CrossEntropyLoss(), batch_size=batch_size, validation_data=val, clip_norm=clip_norm,
                  tbptt=tbptt, callbacks=callbacks, verbose=verbose)
        if max_seconds is None:
            return fit(self, X, Y, optimizer=optimizer, lr=lr, epochs=epochs, seed=seed, **kw)
        import time

        if lr_decay not in (None, "cosine"):
            raise ValueError(f"lr_decay must be None or 'cosine', got {lr_decay!r}")
        opt = optim.get_optimizer(optimizer, self, lr)
        rng = np.random.default_rng(seed)
        history, t0, seen, k = History(), time.perf_counter(), 0, 0
        for epoch in range(epochs):
            order = rng.permutation(len(X))
            for r in range(0, len(X), int(round_rows)):
                t1 = time.perf_counter()
                if lr_decay == "cosine":
                    progress = min(1.0, (t1 - t0) / max_seconds) if max_seconds > 0 else 1.0
                    opt.lr = lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * progress)))
                idx = np.sort(order[r:r + int(round_rows)])
                h = fit(self, X[idx], Y[idx], optimizer=opt, epochs=1, seed=seed + k, **kw)
                seen += len(idx)
                logs = {key: v[-1] for key, v in h.history.items()}
                logs.update(seconds=time.perf_counter() - t0, rows_seen=seen, epoch=epoch)
                history.append(k, logs)
                k += 1
                if time.perf_counter() - t0 + (time.perf_counter() - t1) > max_seconds:
                    history.optimizer = opt
                    return history
        history.optimizer = opt
        return history

    def fit_sequences(self, seqs, conditions=None, *, epochs=50, batch_size=32, lr=3e-3, clip_norm=5.0,
                      seed=0, validation_data=None, callbacks=(), verbose=0):
        """Train on independent sequences (each START ... END), optionally with a condition
        vector per sequence (conditions (N, C)). Returns the History."""
        from ..train import fit

        X, Y, lengths = self.sequence_batch(seqs)
        if conditions is not None:
            X = (X, np.asarray(conditions, self.dtype))
            lengths = (lengths, None)
            y_lengths = lengths[0]
        else:
            y_lengths = None
        return fit(self, X, Y, loss=CrossEntropyLoss(), lr=lr, epochs=epochs, batch_size=batch_size,
                   lengths=lengths, y_lengths=y_lengths, clip_norm=clip_norm, seed=seed,
                   validation_data=validation_data, callbacks=callbacks, verbose=verbose)

    # -- evaluation ---------------------------------------------------------------------------
    def log_probs(self, text, streams: int = 16, chunk: int = 2000) -> np.ndarray:
        """Natural-log P(token_t | tokens before it) for t >= 1 of a long text: the text is cut into
        `streams` contiguous parts run side by side, each from a zero state (so `streams` tokens
        see a shorter history), in chunks of `chunk` steps with the state carried."""
        ids = self._ids(text, "text")
        if len(ids) < 2:
            raise ValueError("need at least 2 tokens to score")
        n = len(ids) - 1
        S = max(1, min(int(streams), n))
        per = -(-n // S)
        X = np.full((S, per), PAD, np.int64)
        Y = np.full((S, per), PAD, np.int64)
        lengths = np.zeros(S, np.int64)
        real_len = np.array([max(0, min(n, (s + 1) * per) - s * per) for s in range(S)])
        for s in range(S):
            a, m = s * per, real_len[s]
            X[s, :m], Y[s, :m] = ids[a:a + m], ids[a + 1:a + m + 1]
        lengths = np.maximum(real_len, 1)  # an empty trailing stream runs one padded step, masked below
        packed = self.lstm.prepack()
        L, H = self.num_layers, self.hidden_size
        h = np.zeros((L, S, H), self.dtype)
        c = np.zeros((L, S, H), self.dtype)
        out = np.zeros((S, per))
        for t0 in range(0, per, chunk):
            t1 = min(per, t0 + chunk)
            lc = np.clip(lengths - t0, 1, t1 - t0)
            y, (h, c) = packed(self.embed.params["weight"][X[:, t0:t1]], (h, c), lc)
            logp = log_softmax(self.head.forward(y).astype(np.float64))
            out[:, t0:t1] = np.take_along_axis(logp, Y[:, t0:t1, None], axis=2)[..., 0]
        return out[np.arange(per)[None, :] < real_len[:, None]]

    def bits_per_char(self, text, **kw) -> float:
        """Cross-entropy on `text` in bits per token (per character with a CharVocab)."""
        return bits_per_char(self.log_probs(text, **kw))

    # -- generation on the streaming step API -------------------------------------------------
    def sampler(self, num_streams: int = 1, condition=None) -> Sampler:
        """A streaming decoder with the weights packed once (see Sampler)."""
        return Sampler(self, num_streams, condition)

    def generate(self, length: int, seed_text=None, *, temperature: float = 1.0, top_k=None, top_p=None,
                 seed=None, condition=None, num_samples: int = 1, stop_at_end: bool = True):
        """Sample `length` tokens after seed_text (str, or ids in integer mode), reproducible from
        `seed`. The prefix is START + seed_text (START when the model has one); an empty prefix
        without a start token is an error. temperature=0 is greedy. Returns a str (CharVocab, one
        sample), a list of str (num_samples > 1) or an int64 array (num_samples, length).
        stop_at_end: a sample that emits END stops there (the rest is END in integer output)."""
        if int(length) < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if seed_text is None:
            seed_text = "" if self.vocab is not None else np.zeros(0, np.int64)
        prefix = self._ids(seed_text, "seed_text", add_start=True)
        if len(prefix) == 0:
            raise ValueError("seed_text is empty and the model has no start token to begin from; "
                             "give a seed")
        rng = np.random.default_rng(seed)
        s = self.sampler(int(num_samples), condition)
        logits = s.feed(prefix)
        out = np.full((int(num_samples), int(length)), self.end_id if self.end_id is not None else PAD, np.int64)
        done = np.zeros(int(num_samples), bool)
        for t in range(int(length)):
            tok = sample_logits(logits, rng, temperature, top_k, top_p)
            out[:, t] = np.where(done, out[:, t], tok)
            if stop_at_end and self.end_id is not None:
                done |= tok == self.end_id
                if done.all():
                    break
            logits = s._step(tok)
        if self.vocab is None:
            return out
        texts = [self.vocab.decode(row, stop_at_end=stop_at_end) for row in out]
        return texts[0] if num_samples == 1 else texts


class Sampler:
    """Streaming decoding: each layer's weights packed once (fastlstm.prepack), the state (h, c)
    carried between calls; one call = one LSTM step per layer + the head, never the whole prefix.

        s = model.sampler()
        logits = s.feed(prefix_ids)       # (R, V) after the prefix (one packed forward)
        logits = s.step(next_ids)         # (R,) ids -> (R, V)
    """

    def __init__(self, model: SequenceGenerator, num_streams: int = 1, condition=None):
        self.model = model
        R, L, H, dt = int(num_streams), model.num_layers, model.hidden_size, model.dtype
        if R < 1:
            raise ValueError(f"num_streams must be >= 1, got {R}")
        self.cells = [core.prepack(W_ih, W_hh, functional._bias_sum(b_ih, b_hh, H, dt))
                      for W_ih, W_hh, b_ih, b_hh in model.lstm.weights()]
        self.E = model.embed.params["weight"]
        self.W, self.b = model.head.params["weight"], model.head.params["bias"]
        self.h = np.zeros((L, R, H), dt)
        self.c = np.zeros((L, R, H), dt)
        self.cond = None
        if model.condition_size:
            if condition is None:
                raise ValueError(f"this model is conditioned: pass condition (C,) or (R, C) with "
                                 f"C = {model.condition_size}")
            cond = np.asarray(condition, dt)
            if cond.shape == (model.condition_size,):
                cond = np.broadcast_to(cond, (R, model.condition_size))
            if cond.shape != (R, model.condition_size):
                raise ValueError(f"condition must have shape ({model.condition_size},) or "
                                 f"({R}, {model.condition_size}), got {np.shape(condition)}")
            cond = np.ascontiguousarray(cond)
            was, model.init.training = model.init.training, False
            h0, c0 = model._initial_state(cond)
            model.init.training = was
            self.h[...], self.c[...] = h0, c0
            self.cond = cond if model.condition_every_step else None
        elif condition is not None:
            raise ValueError("this model has no condition (condition_size=0)")

    def _input(self, ids):
        x = self.E[ids]
        if self.cond is not None:
            x = np.concatenate([x, self.cond], axis=1)
        return np.ascontiguousarray(x, dtype=self.h.dtype)

    def step(self, ids) -> np.ndarray:
        """One token per stream (R,) -> next-token logits (R, V)."""
        ids = check_token_ids(ids, self.model.vocab_size, "ids").reshape(-1)
        if ids.shape[0] != self.h.shape[1]:
            raise ValueError(f"ids must hold one token per stream ({self.h.shape[1]}), got {ids.shape[0]}")
        return self._step(ids)

    def _step(self, ids):
        """step() for ids known to be valid (generate() feeds back its own draws)."""
        x = self._input(ids)
        for l, cell in enumerate(self.cells):
            x = cell.step(x, self.h[l], self.c[l])                   # h[l], c[l] updated in place
        return x @ self.W.T + self.b

    def feed(self, prefix) -> np.ndarray:
        """Run a prefix (T,) (the same for every stream) and return the logits after it."""
        prefix = check_token_ids(prefix, self.model.vocab_size, "prefix").reshape(-1)
        if len(prefix) == 0:
            raise ValueError("the prefix is empty")
        R = self.h.shape[1]
        x = np.ascontiguousarray(np.broadcast_to(self.E[prefix][:, None], (len(prefix), R, self.E.shape[1])))
        if self.cond is not None:
            x = np.concatenate([x, np.broadcast_to(self.cond, (len(prefix), *self.cond.shape))], axis=2)
            x = np.ascontiguousarray(x)
        for l, cell in enumerate(self.cells):                        # time-major, one call per layer
            x, hT, cT = cell.forward(x, self.h[l], self.c[l])
            self.h[l], self.c[l] = hT, cT
        return x[-1] @ self.W.T + self.b
