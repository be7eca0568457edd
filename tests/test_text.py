"""Tests for fastlstm.text: the character vocabulary, the stdlib corpus, the Kneser-Ney n-gram
baseline and the addition / date-normalisation datasets."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from fastlstm import text as T


def test_vocab_reserved_ids_roundtrip_and_state():
    v = T.CharVocab().fit(["hello world", "abc"])
    assert (T.PAD, T.START, T.END, T.UNK) == (0, 1, 2, 3)
    assert v.itos[:4] == list(T.SPECIALS) and len(v) == 4 + len(set("hello worldabc"))
    ids = v.encode("hold", add_start=True, add_end=True)
    assert ids.dtype == np.int64 and ids[0] == T.START and ids[-1] == T.END
    assert v.decode(ids) == "hold"
    assert v.decode(ids, strip_special=False, stop_at_end=False) == "<s>hold</s>"
    w = T.CharVocab.from_state(v.get_state())
    assert w == v and np.array_equal(w.encode("hello"), v.encode("hello"))


def test_vocab_unknown_policies_and_bad_input():
    v = T.CharVocab().fit("abc")
    assert list(v.encode("axb")) == [v.stoi["a"], T.UNK, v.stoi["b"]]
    assert v.decode(v.encode("axb")) == "a\ufffdb"
    assert list(v.encode("axb", unknown="skip")) == [v.stoi["a"], v.stoi["b"]]
    with pytest.raises(ValueError, match=r"'x' at position 1 is not in the vocabulary"):
        v.encode("axb", unknown="error")
    with pytest.raises(ValueError, match="unknown must be"):
        T.CharVocab(unknown="drop")
    with pytest.raises(TypeError, match="takes a str"):
        v.encode(["a"])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        v.decode([0, 99])
    with pytest.raises(ValueError, match="token id 7 outside"):
        v.check_ids([1, 7], "tokens")
    with pytest.raises(TypeError, match="integer token ids"):
        v.check_ids([1.5], "tokens")
    assert v.encode("").shape == (0,)


def test_vocab_min_count_max_size_and_stable_ids():
    v = T.CharVocab().fit("aaabbc", min_count=2)
    assert "c" not in v and "a" in v and "b" in v
    v2 = T.CharVocab().fit("aaabbc", max_size=1)
    assert v2.itos[4:] == ["a"]
    assert T.CharVocab().fit("cba").itos == T.CharVocab().fit("abc").itos  # code-point order


def test_stdlib_corpus_is_deterministic_and_holds_out_modules():
    tr, va, info = T.stdlib_corpus(max_train_chars=30_000, max_valid_chars=5_000)
    assert len(tr) == 30_000 and len(va) == 5_000
    assert set(info["valid_files"]) <= set(T.HELDOUT_MODULES)
    assert not set(info["train_files"]) & set(T.HELDOUT_MODULES)
    tr2, va2, _ = T.stdlib_corpus(max_train_chars=30_000, max_valid_chars=5_000)
    assert tr == tr2 and va == va2
    with pytest.raises(ValueError, match="held-out"):
        T.stdlib_corpus(heldout=("no_such_module.py",))


def _kn_bruteforce(model, ids, history):
    """P(w | history) recomputed from Python dict counts: the recursion written out directly."""
    V, n = model.V, model.order
    seq = list(ids)
    raw = {}
    for i in range(len(seq) - n + 1):
        g = tuple(seq[i:i + n])
        raw[g] = raw.get(g, 0) + 1

    def cont(k):
        left = {}
        for i in range(len(seq) - k):
            left.setdefault(tuple(seq[i + 1:i + 1 + k]), set()).add(seq[i])
        return {g: len(s) for g, s in left.items()}

    counts = {k: (raw if k == n else cont(k)) for k in range(1, n + 1)}

    def D(k):
        c = np.array(list(counts[k].values()))
        n1, n2 = (c == 1).sum(), (c == 2).sum()
        return n1 / (n1 + 2 * n2) if n1 + 2 * n2 > 0 else 0.5

    def p(w, ctx, k):
        if k == 0:
            return 1.0 / V
        u = tuple(ctx[len(ctx) - (k - 1):]) if k > 1 else ()
        lower = p(w, ctx, k - 1)
        if len(u) < k - 1:
            return lower
        tot = sum(c for g, c in counts[k].items() if g[:-1] == u)
        if tot == 0:
            return lower
        typ = sum(1 for g in counts[k] if g[:-1] == u)
        return max(counts[k].get(u + (w,), 0) - D(k), 0) / tot + D(k) * typ / tot * lower

    return np.array([p(w, history, n) for w in range(V)])


def test_ngram_matches_bruteforce_kneser_ney_and_normalises():
    rng = np.random.default_rng(0)
    V = 7
    ids = np.concatenate([np.tile([4, 5, 6, 4, 5], 30), rng.integers(3, V, 200)])
    for order in (1, 2, 3):
        m = T.NGramModel(order, V).fit(ids)
        hist = np.array([4, 5])
        p = np.exp([m.log_probs(np.array([w]), history=hist)[0] for w in range(V)])
        assert p.sum() == pytest.approx(1.0, abs=1e-12)
        assert np.allclose(p, _kn_bruteforce(m, ids, list(hist)), atol=1e-12)


def test_ngram_selects_order_by_validation_and_beats_unigram():
    text = "def f(x):\n    return x + 1\n" * 40 + "class A:\n    pass\n" * 20
    v = T.CharVocab().fit(text)
    a, b = v.encode(text[:800]), v.encode(text[800:])
    best, scores = T.NGramModel.select(a, b, len(v), orders=range(1, 6))
    assert best.order == min(scores, key=scores.get)
    assert scores[best.order] < 0.5 * scores[1]
    assert T.bits_per_char(np.log(np.full(10, 0.5))) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="order must be >= 1"):
        T.NGramModel(0, 5)
    with pytest.raises(RuntimeError, match="not fitted"):
        T.NGramModel(2, 5).log_probs([1, 2])


def test_addition_split_is_disjoint_deterministic_and_correct():
    (qa, aa), (qt, at) = T.addition_split(2000, 300, digits=3, seed=5)
    assert len(set(qa)) == 2000 and len(set(qt)) == 300 and not set(qa) & set(qt)
    for q, a in zip(qa + qt, aa + at):
        x, y = q.split("+")
        assert len(x) <= 3 and len(y) <= 3 and int(x) + int(y) == int(a)
    assert T.addition_split(2000, 300, digits=3, seed=5)[1] == (qt, at)
    with pytest.raises(ValueError, match="distinct"):
        T.addition_problems(200, digits=1)


def test_date_split_holds_out_dates_and_formats():
    d = T.date_split(n_train=3000, n_test=200, seed=1)
    train_iso = set(d["train"][1])
    for name in ("test", "test_formats"):
        human, iso = d[name]
        assert len(human) == 200 and not set(iso) & train_iso   # held-out dates
        for s in iso:
            dt.date.fromisoformat(s)
    fmts = T._date_formatters()
    day = dt.date(2021, 3, 4)
    train_formats = [f for f in T.DATE_FORMATS if f not in T.HELDOUT_DATE_FORMATS]
    seen = {fmts[f](day) for f in train_formats}
    assert not {fmts[f](day) for f in T.HELDOUT_DATE_FORMATS} & seen
    # every held-out format is a new combination of parts that training shows elsewhere
    for part in range(5):
        assert {T._GRAMMAR[f][part] for f in T.HELDOUT_DATE_FORMATS} <= {T._GRAMMAR[f][part] for f in train_formats}
    assert set(T.HELDOUT_DATE_FORMATS) < set(T.DATE_FORMATS) and len(T.HELDOUT_DATE_FORMATS) >= len(T.DATE_FORMATS) // 10
    # the held-out test texts really are in held-out formats: none is a training format's rendering
    held_texts = set(d["test_formats"][0])
    assert len(held_texts) > 150
    for h, iso in zip(*d["test_formats"]):
        when = dt.date.fromisoformat(iso)
        assert h in {fmts[f](when) for f in T.HELDOUT_DATE_FORMATS}
        assert h not in {fmts[f](when) for f in train_formats}
    assert fmts["ord_of_month"](dt.date(2020, 1, 11)) == "the 11th of January 2020"
    assert fmts["month_ord_y"](dt.date(2020, 1, 22)) == "January 22nd, 2020"
    assert fmts["us_slash"](day) == "3/4/2021" and fmts["eu_dot"](day) == "04.03.2021"
    assert fmts["wd_month_d_y"](day) == "Thursday, March 4, 2021" and fmts["lower_d_month"](day) == "4 march 2021"
    assert fmts["dd_mon_yyyy"](day) == "04-MAR-2021" and fmts["compact"](day) == "20210304"
    assert d == T.date_split(n_train=3000, n_test=200, seed=1)
    with pytest.raises(ValueError, match="unknown date formats"):
        T.date_examples([day], formats=("nope",))