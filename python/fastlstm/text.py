"""Text for sequence models: a character vocabulary, the standard-library corpus, an n-gram baseline
and the toy seq2seq datasets (addition, date normalisation).

    vocab = CharVocab().fit(train_text)          # pad=0, start=1, end=2, unk=3, then the characters
    ids = vocab.encode("def f():", add_end=True) # int64 array
    train, valid, info = stdlib_corpus()         # Python's own standard library, held-out modules
    lm = NGramModel.select(train_ids, valid_ids, V=len(vocab))   # interpolated Kneser-Ney, n by valid bpc
    lm.bits_per_char(valid_ids)

Everything is deterministic: the corpus is read in sorted file order, the datasets draw from a seed.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import os
import sysconfig
from collections import Counter

import numpy as np

PAD, START, END, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")


# ---------------------------------------------------------------------------------------------
# Character vocabulary
# ---------------------------------------------------------------------------------------------

class CharVocab:
    """Characters <-> int ids with reserved ids pad=0, start=1, end=2, unk=3.

    unknown: what encode() does with a character that is not in the vocabulary —
    "unk" maps it to UNK (default), "error" raises ValueError naming it, "skip" drops it.
    """

    def __init__(self, chars=(), unknown: str = "unk"):
        if unknown not in ("unk", "error", "skip"):
            raise ValueError(f"unknown must be 'unk', 'error' or 'skip', got {unknown!r}")
        self.unknown = unknown
        self.itos: list[str] = list(SPECIALS)
        self.stoi: dict[str, int] = {}
        self._add(chars)

    def _add(self, chars):
        for ch in chars:
            if not isinstance(ch, str) or len(ch) != 1:
                raise ValueError(f"vocabulary entries must be single characters, got {ch!r}")
            if ch not in self.stoi:
                self.stoi[ch] = len(self.itos)
                self.itos.append(ch)

    def fit(self, texts, min_count: int = 1, max_size: int | None = None) -> CharVocab:
        """Add the characters of `texts` (a str or an iterable of str), most frequent first (ties in
        code-point order, so the ids do not depend on dict order); characters seen fewer than
        min_count times, or beyond max_size characters, stay unknown."""
        if isinstance(texts, str):
            texts = [texts]
        counts: Counter = Counter()
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"fit() takes str or an iterable of str, got an item of type {type(t).__name__}")
            counts.update(t)
        chars = sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c))
        if max_size is not None:
            chars = chars[:max(0, int(max_size))]
        self._add(sorted(chars))  # ids in code-point order: readable, stable
        return self

    def __len__(self) -> int:
        return len(self.itos)

    @property
    def size(self) -> int:
        return len(self.itos)

    def __contains__(self, ch) -> bool:
        return ch in self.stoi

    def encode(self, text: str, add_start: bool = False, add_end: bool = False, unknown: str | None = None) -> np.ndarray:
        """text -> int64 ids (START/END added on request)."""
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, got {type(text).__name__}")
        policy = self.unknown if unknown is None else unknown
        ids = [START] if add_start else []
        for pos, ch in enumerate(text):
            i = self.stoi.get(ch)
            if i is None:
                if policy == "error":
                    raise ValueError(f"character {ch!r} at position {pos} is not in the vocabulary "
                                     f"(unknown='error'; use unknown='unk' or 'skip')")
                if policy == "skip":
                    continue
                if policy != "unk":
                    raise ValueError(f"unknown must be 'unk', 'error' or 'skip', got {policy!r}")
                i = UNK
            ids.append(i)
        if add_end:
            ids.append(END)
        return np.asarray(ids, dtype=np.int64)

    def decode(self, ids, strip_special: bool = True, stop_at_end: bool = True, unk_char: str = "\ufffd") -> str:
        """ids -> text. Stops at the first END (stop_at_end), drops pad/start (strip_special),
        shows UNK as unk_char."""
        out = []
        n = len(self.itos)
        for i in np.asarray(ids, dtype=np.int64).ravel():
            i = int(i)
            if not 0 <= i < n:
                raise ValueError(f"id {i} is outside the vocabulary of size {n}")
            if i == END and stop_at_end:
                break
            if i == UNK:
                out.append(unk_char)
            elif i < len(SPECIALS):
                if not strip_special:
                    out.append(SPECIALS[i])
            else:
                out.append(self.itos[i])
        return "".join(out)

    def check_ids(self, ids, name: str = "ids") -> np.ndarray:
        """Validate integer token ids against this vocabulary (ValueError naming `name`)."""
        return check_token_ids(ids, len(self), name)

    def get_state(self) -> dict:
        return {"chars": "".join(self.itos[len(SPECIALS):]), "unknown": self.unknown}

    @classmethod
    def from_state(cls, state: dict) -> CharVocab:
        return cls(state["chars"], unknown=state.get("unknown", "unk"))

    def __eq__(self, other) -> bool:
        return isinstance(other, CharVocab) and self.itos == other.itos and self.unknown == other.unknown

    def __repr__(self) -> str:
        return f"CharVocab(size={len(self)}, unknown={self.unknown!r})"


def check_token_ids(ids, vocab_size: int, name: str = "ids") -> np.ndarray:
    """ids as an int64 array, every value in [0, vocab_size) — else ValueError/TypeError naming it."""
    arr = np.asarray(ids)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise TypeError(f"{name} must be integer token ids, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
        bad = arr[(arr < 0) | (arr >= vocab_size)][0]
        raise ValueError(f"{name} holds token id {int(bad)} outside the vocabulary [0, {vocab_size})")
    return arr


# ---------------------------------------------------------------------------------------------
# The standard-library corpus
# ---------------------------------------------------------------------------------------------

# Top-level modules present in every CPython 3.9+ install, held out as the validation text.
HELDOUT_MODULES = ("bisect.py", "calendar.py", "difflib.py", "fractions.py", "heapq.py",
                   "shlex.py", "string.py", "textwrap.py")
# folders that are not library code: tests, demos, bundled wheels, the IDE, build configuration,
# and generated data tables (encodings: 1.4 MB of codec charmaps; pydoc_data: the help topics)
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "idlelib",
             "turtledemo", "ensurepip", "lib2to3", "pydoc_data", "encodings"}


def stdlib_files(root: str | None = None, packages: bool = True) -> list:
    """The standard library's *.py files as sorted paths relative to root (the top level, and with
    packages=True every package below it except SKIP_DIRS and config-* build folders)."""
    root = root or sysconfig.get_paths()["stdlib"]
    if not os.path.isdir(root):
        raise FileNotFoundError(f"standard library directory {root!r} not found")
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if packages and x not in SKIP_DIRS and not x.startswith("config-"))
        rel = os.path.relpath(d, root)
        out += [f if rel == "." else os.path.join(rel, f) for f in files if f.endswith(".py")]
    return sorted(out)


def stdlib_corpus(max_train_chars: int | None = 8_000_000, max_valid_chars: int | None = 200_000,
                  heldout=HELDOUT_MODULES, root: str | None = None, packages: bool = True):
    """The source text of Python's standard library: (train_text, valid_text, info).

    Reads the stdlib's *.py files (stdlib_files) in sorted path order (deterministic), the
    top-level `heldout` modules going to the validation text and everything else to training,
    each capped at a number of characters (whole files until the cap, then the part of the next
    file that fits) so tests and CI stay fast. info lists the files and sizes.
    """
    root = root or sysconfig.get_paths()["stdlib"]
    names = stdlib_files(root, packages)
    held = [f for f in names if f in set(heldout)]
    if not held:
        raise ValueError(f"none of the held-out modules {list(heldout)} is in {root!r}")
    train_names = [f for f in names if f not in set(heldout)]

    def read(files, cap):
        parts, used, total = [], [], 0
        for f in files:
            if cap is not None and total >= cap:
                break
            with open(os.path.join(root, f), encoding="utf-8", errors="replace") as fh:
                text = fh.read().replace("\r\n", "\n")
            if cap is not None:
                text = text[:cap - total]
            parts.append(text)
            used.append(f)
            total += len(text)
        return "".join(parts), used

    train, train_used = read(train_names, max_train_chars)
    valid, valid_used = read(held, max_valid_chars)
    info = {"root": root, "train_files": train_used, "valid_files": valid_used,
            "train_chars": len(train), "valid_chars": len(valid)}
    return train, valid, info


# ---------------------------------------------------------------------------------------------
# Count-based n-gram baseline: interpolated Kneser-Ney on characters
# ---------------------------------------------------------------------------------------------

def bits_per_char(log_probs) -> float:
    """Mean negative log2 probability of natural-log probabilities: the cross-entropy in bits."""
    lp = np.asarray(log_probs, dtype=np.float64)
    if lp.size == 0:
        raise ValueError("bits_per_char needs at least one log-probability")
    return float(-lp.mean() / np.log(2.0))


def _gram_codes(ids: np.ndarray, k: int, V: int) -> np.ndarray:
    """code of ids[i:i+k] = sum_j ids[i+j]·V^(k-1-j) for every i (int64; V^k must fit)."""
    n = len(ids) - k + 1
    code = np.zeros(max(n, 0), np.int64)
    for j in range(k):
        code = code * V + ids[j:j + n]
    return code


class NGramModel:
    """Character n-gram model with interpolated Kneser-Ney smoothing (Chen & Goodman 1998):

        P_k(w | u) = max(c_k(u w) − D_k, 0) / c_k(u ·)  +  D_k · N1+(u ·) / c_k(u ·) · P_{k−1}(w | u')
        P_0(w)     = 1 / V

    where u' drops u's first character, c_n are raw counts at the top order and continuation counts
    N1+(· u w) below it, D_k = n1 / (n1 + 2 n2) from the count-of-counts; an unseen context falls
    through to P_{k−1}. Counts live in sorted int64 code arrays, so fitting and scoring are NumPy
    sorts and binary searches (a few seconds on millions of characters).
    """

    def __init__(self, order: int, vocab_size: int):
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
        if vocab_size ** order >= 2 ** 62:
            raise ValueError(f"vocab_size**order = {vocab_size}**{order} does not fit the int64 codes")
        self.order, self.V = int(order), int(vocab_size)
        self.levels: list[dict] = []

    def fit(self, ids) -> NGramModel:
        ids = check_token_ids(ids, self.V, "ids")
        if len(ids) < self.order:
            raise ValueError(f"need at least order = {self.order} tokens to fit, got {len(ids)}")
        V = self.V
        self.levels = []
        for k in range(1, self.order + 1):
            grams = _gram_codes(ids, k, V)
            if k == self.order:
                codes, counts = np.unique(grams, return_counts=True)         # raw counts c(u w)
            else:
                # continuation count N1+(· u w): distinct left neighbours of each k-gram
                ext = np.unique(_gram_codes(ids, k + 1, V))
                codes, counts = np.unique(ext % V ** k, return_counts=True)
            n1, n2 = np.sum(counts == 1), np.sum(counts == 2)
            D = n1 / (n1 + 2.0 * n2) if n1 + 2 * n2 > 0 else 0.5
            ctx = codes // V                                                   # sorted, grouped
            ctx_codes, start = np.unique(ctx, return_index=True)
            ctx_total = np.add.reduceat(counts, start).astype(np.float64)      # c(u ·)
            ctx_types = np.diff(np.append(start, len(codes))).astype(np.float64)  # N1+(u ·)
            self.levels.append({"codes": codes, "counts": counts.astype(np.float64), "D": float(D),
                                "ctx_codes": ctx_codes, "ctx_total": ctx_total, "ctx_types": ctx_types})
        return self

    @staticmethod
    def _lookup(sorted_codes, query):
        pos = np.searchsorted(sorted_codes, query)
        pos = np.minimum(pos, len(sorted_codes) - 1)
        found = sorted_codes[pos] == query
        return pos, found

    def log_probs(self, ids, history=None) -> np.ndarray:
        """Natural-log P(ids[i] | the order−1 tokens before it) for every i; `history` (ids) is
        the text before ids[0] (none: the first tokens see a shorter context)."""
        if not self.levels:
            raise RuntimeError("NGramModel is not fitted: call fit() first")
        ids = check_token_ids(ids, self.V, "ids")
        hist = np.zeros(0, np.int64) if history is None else check_token_ids(history, self.V, "history")
        full = np.concatenate([hist[-(self.order - 1):] if self.order > 1 else hist[:0], ids])
        off = len(full) - len(ids)
        N, V = len(ids), self.V
        p = np.full(N, 1.0 / V)                                                # P_0
        for k, lev in enumerate(self.levels, start=1):
            # the k-gram ending at each position i of ids: full[off+i-k+1 .. off+i]
            has = np.arange(N) + off - (k - 1) >= 0
            code = np.zeros(N, np.int64)
            for j in range(k):
                idx = np.arange(N) + off - (k - 1) + j
                code = code * V + np.where(has, full[np.clip(idx, 0, None)], 0)
            cpos, cfound = self._lookup(lev["ctx_codes"], code // V)
            cfound &= has
            gpos, gfound = self._lookup(lev["codes"], code)
            gfound &= cfound
            tot = np.where(cfound, lev["ctx_total"][cpos], 1.0)
            cnt = np.where(gfound, lev["counts"][gpos], 0.0)
            typ = np.where(cfound, lev["ctx_types"][cpos], 0.0)
            D = lev["D"]
            pk = np.maximum(cnt - D, 0.0) / tot + D * typ / tot * p
            p = np.where(cfound, pk, p)                                        # unseen context: back off
        return np.log(p)

    def bits_per_char(self, ids, history=None) -> float:
        return bits_per_char(self.log_probs(ids, history))

    @classmethod
    def select(cls, train_ids, valid_ids, vocab_size: int, orders=range(1, 9)):
        """Fit every order and keep the one with the lowest validation bits per char:
        (model, {order: bpc})."""
        scores, best = {}, None
        for n in orders:
            if vocab_size ** n >= 2 ** 62:
                break
            m = cls(n, vocab_size).fit(train_ids)
            scores[n] = m.bits_per_char(valid_ids)
            if best is None or scores[n] < scores[best.order]:
                best = m
        return best, scores

    def get_state(self) -> dict:
        return {"order": self.order, "V": self.V, "levels": self.levels}


# ---------------------------------------------------------------------------------------------
# Seq2seq datasets
# ---------------------------------------------------------------------------------------------

def addition_problems(n: int, digits: int = 3, seed: int = 0, exclude=()):
    """n distinct problems "a+b" -> "a+b's sum" with a, b uniform in [0, 10^digits) (for digits=3,
    99% of operands have 2 or 3 digits). Problems in `exclude` (question strings) are skipped, so
    a test set can be disjoint from training.

    (Keras' addition_rnn draws the number of digits first. That over-represents short operands —
    a third of them have one digit, yet only 100 one-digit pairs exist — so a disjoint test set
    would take most of those pairs and leave training without them.)"""
    if digits < 1:
        raise ValueError(f"digits must be >= 1, got {digits}")
    m = 10 ** digits
    seen = set(exclude)
    if n > m * m - len(seen):
        raise ValueError(f"only {m * m} distinct {digits}-digit problems exist, asked for {n}")
    rng = np.random.default_rng(seed)
    qs, ans = [], []
    while len(qs) < n:
        for a, b in rng.integers(0, m, (max(16, 2 * (n - len(qs))), 2)):
            q = f"{a}+{b}"
            if q in seen:
                continue
            seen.add(q)
            qs.append(q)
            ans.append(str(a + b))
            if len(qs) == n:
                break
    return qs, ans


def addition_split(n_train: int = 50_000, n_test: int = 1000, digits: int = 3, seed: int = 0):
    """Disjoint train and test problems: ((q_train, a_train), (q_test, a_test))."""
    q_test, a_test = addition_problems(n_test, digits, seed=seed + 1)
    q_train, a_train = addition_problems(n_train, digits, seed=seed, exclude=q_test)
    return (q_train, a_train), (q_test, a_test)


def _ordinal(d: int) -> str:
    suffix = "th" if 11 <= d % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(d % 10, "th")
    return f"{d}{suffix}"


# A date format is a composition of parts, so that formats never seen in training can still be
# made of seen parts (how people write dates: a layout, a day style, a month style, a letter case
# and an optional weekday). Numeric layouts follow one convention each — "/" before the year is
# US month/day, "." and "-" are day.month — since 4/3/2031 is otherwise ambiguous.
DATE_LAYOUTS = {
    # layout -> (template, day styles, month styles); D, M, Y are the rendered parts
    "D M Y":        ("{D} {M} {Y}",        ("d", "dd", "dth"), ("Month", "Mon", "Mon.")),
    "M D, Y":       ("{M} {D}, {Y}",       ("d", "dd", "dth"), ("Month", "Mon", "Mon.")),
    "M D Y":        ("{M} {D} {Y}",        ("d", "dd", "dth"), ("Month", "Mon", "Mon.")),
    "Y M D":        ("{Y} {M} {D}",        ("d", "dd", "dth"), ("Month", "Mon", "Mon.")),
    "D-M-Y":        ("{D}-{M}-{Y}",        ("d", "dd"),        ("Month", "Mon")),
    "the D of M Y": ("the {D} of {M} {Y}", ("dth",),           ("Month", "Mon", "Mon.")),
    "M/D/Y":        ("{M}/{D}/{Y}",        ("d", "dd"),        ("m", "mm")),
    "D.M.Y":        ("{D}.{M}.{Y}",        ("d", "dd"),        ("m", "mm")),
    "D-M-Y num":    ("{D}-{M}-{Y}",        ("d", "dd"),        ("m", "mm")),
    "Y/M/D":        ("{Y}/{M}/{D}",        ("d", "dd"),        ("m", "mm")),
    "Y-M-D":        ("{Y}-{M}-{D}",        ("d", "dd"),        ("m", "mm")),
    "Y.M.D":        ("{Y}.{M}.{D}",        ("d", "dd"),        ("m", "mm")),
    "YMD":          ("{Y}{M}{D}",          ("dd",),            ("mm",)),
}
DATE_WEEKDAYS = ("", "Wday, ", "Wday ", "Wdy, ", "Wdy ")
DATE_CASES = ("title", "upper", "lower")


def _render_date(d, layout: str, day: str, month: str, case: str = "title", weekday: str = "") -> str:
    """One date in the format (layout, day style, month style, case, weekday prefix)."""
    template = DATE_LAYOUTS[layout][0]
    D = {"d": str(d.day), "dd": f"{d.day:02d}", "dth": _ordinal(d.day)}[day]
    M = {"m": str(d.month), "mm": f"{d.month:02d}", "Month": calendar.month_name[d.month],
         "Mon": calendar.month_abbr[d.month], "Mon.": calendar.month_abbr[d.month] + "."}[month]
    W = {"": "", "Wday, ": calendar.day_name[d.weekday()] + ", ", "Wday ": calendar.day_name[d.weekday()] + " ",
         "Wdy, ": calendar.day_abbr[d.weekday()] + ", ", "Wdy ": calendar.day_abbr[d.weekday()] + " "}[weekday]
    text = W + template.format(D=D, M=M, Y=d.year)
    return {"title": text, "upper": text.upper(), "lower": text.lower()}[case]


def _format_name(layout, day, month, case, weekday) -> str:
    return f"{weekday}{layout} [{day} {month} {case}]"


def _date_grammar():
    """name -> (layout, day, month, case, weekday) for every format of the grammar. Case only
    matters where there are letters, so all-digit formats come in title case alone (814 in all)."""
    out = {}
    for layout, (_, days, months) in DATE_LAYOUTS.items():
        for weekday in DATE_WEEKDAYS:
            lettered = weekday or months[0] not in ("m", "mm")
            for case in DATE_CASES if lettered else ("title",):
                for day in days:
                    for month in months:
                        out[_format_name(layout, day, month, case, weekday)] = (layout, day, month, case, weekday)
    return out


_GRAMMAR = _date_grammar()
# the classic spellings (the README's examples) by short names; each is one format of the grammar
NAMED_DATE_FORMATS = {
    "iso_slash":     ("Y/M/D", "dd", "mm", "title", ""),               # 2031/03/04
    "us_slash":      ("M/D/Y", "d", "m", "title", ""),                 # 3/4/2031
    "eu_dot":        ("D.M.Y", "dd", "mm", "title", ""),               # 04.03.2031
    "d_month_y":     ("D M Y", "d", "Month", "title", ""),             # 4 March 2031
    "month_d_y":     ("M D, Y", "d", "Month", "title", ""),            # March 4, 2031
    "dd_mon_yyyy":   ("D-M-Y", "dd", "Mon", "upper", ""),              # 04-MAR-2031
    "wdab_mon_d_y":  ("M D Y", "d", "Mon", "title", "Wdy "),           # Tue Mar 4 2031
    "ord_of_month":  ("the D of M Y", "dth", "Month", "title", ""),    # the 4th of March 2031
    "month_ord_y":   ("M D, Y", "dth", "Month", "title", ""),          # March 4th, 2031
    "compact":       ("YMD", "dd", "mm", "title", ""),                 # 20310304
    # the three formats the first version of this dataset held out
    "mon_dot_d_y":   ("M D Y", "d", "Mon.", "title", ""),              # Mar. 4 2031
    "wd_month_d_y":  ("M D, Y", "d", "Month", "title", "Wday, "),      # Tuesday, March 4, 2031
    "lower_d_month": ("D M Y", "d", "Month", "lower", ""),             # 4 march 2031
}


def _date_formatters():
    """name -> function(date) -> human text, for every grammar format and the named ones. Month and
    day names come from `calendar` (English under the C locale, the default), so the data needs
    nothing outside the standard library."""
    spec = {**_GRAMMAR, **{k: _GRAMMAR[_format_name(*v)] for k, v in NAMED_DATE_FORMATS.items()}}
    return {name: (lambda d, p=p: _render_date(d, *p)) for name, p in spec.items()}


DATE_FORMATS = tuple(_GRAMMAR)
# Formats never shown in training: the three named ones plus a fixed random tenth of the grammar
# (drawn once with seed 0, so the split is the same for everyone). Each recombines parts that
# training shows in other formats.
HELDOUT_DATE_FORMATS = tuple(sorted(
    {_format_name(*NAMED_DATE_FORMATS[k]) for k in ("mon_dot_d_y", "wd_month_d_y", "lower_d_month")}
    | set(np.random.default_rng(0).choice(DATE_FORMATS, len(DATE_FORMATS) // 10, replace=False).tolist())))


def date_examples(dates, formats=DATE_FORMATS, seed: int = 0):
    """(human, iso) pairs: each date rendered in one format drawn from `formats`."""
    fmts = _date_formatters()
    bad = [f for f in formats if f not in fmts]
    if bad:
        raise ValueError(f"unknown date formats {bad[:5]}; choose from text.DATE_FORMATS (the grammar's "
                         f"{len(DATE_FORMATS)} formats) or {sorted(NAMED_DATE_FORMATS)}")
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(formats), len(dates))
    return [fmts[formats[k]](d) for d, k in zip(dates, pick)], [d.isoformat() for d in dates]


def date_split(n_train: int = 20_000, n_test: int = 1000, seed: int = 0,
               start: str = "1950-01-01", end: str = "2049-12-31"):
    """Date normalisation data, held out by date AND by format:

    train: n_train dates from the training dates, rendered in the training formats;
    test: n_test held-out dates (never seen in training, in any format), training formats;
    test_formats: n_test held-out dates in HELDOUT_DATE_FORMATS (formats never seen in training),
                  each text one that no training format writes for its date.
    Returns dict name -> (human_texts, iso_texts).
    """
    d0, d1 = _dt.date.fromisoformat(start), _dt.date.fromisoformat(end)
    days = (d1 - d0).days + 1
    rng = np.random.default_rng(seed)
    perm = rng.permutation(days)
    n_hold = max(2 * n_test, days // 10)
    if n_hold >= days:
        raise ValueError(f"the date range {start}..{end} is too short for {n_test} test dates")
    held, pool = perm[:n_hold], perm[n_hold:]
    to_date = lambda k: d0 + _dt.timedelta(days=int(k))  # noqa: E731
    train_formats = tuple(f for f in DATE_FORMATS if f not in HELDOUT_DATE_FORMATS)
    train_days = rng.choice(pool, n_train, replace=n_train > len(pool))
    test_days = rng.choice(held, n_test, replace=False)
    test_days2 = rng.choice(held, n_test, replace=False)
    return {
        "train": date_examples([to_date(k) for k in train_days], train_formats, seed + 1),
        "test": date_examples([to_date(k) for k in test_days], train_formats, seed + 2),
        "test_formats": _unseen_format_examples([to_date(k) for k in test_days2], seed + 3),
    }


def _unseen_format_examples(dates, seed):
    """(human, iso) pairs in held-out formats, each text one that no training format writes for
    that date: "SAT, 12.03.2011" is a held-out format's text but also a training format's (12 and
    "12" read the same as day styles d and dd), and would not test generalisation."""
    fmts = _date_formatters()
    held = set(HELDOUT_DATE_FORMATS)
    # only formats with the same layout, case and weekday can write the same text
    family = {}
    for name, (layout, _, _, case, weekday) in _GRAMMAR.items():
        family.setdefault((layout, case, weekday), []).append(name)
    rng = np.random.default_rng(seed)
    human = []
    for d in dates:
        for k in rng.permutation(len(HELDOUT_DATE_FORMATS)):
            name = HELDOUT_DATE_FORMATS[k]
            layout, _, _, case, weekday = _GRAMMAR[name]
            text = fmts[name](d)
            if all(fmts[other](d) != text for other in family[(layout, case, weekday)] if other not in held):
                human.append(text)
                break
        else:  # every held-out format collides (cannot happen with the grammar above; kept as a guard)
            raise RuntimeError(f"no held-out format writes {d} differently from the training formats")
    return human, [d.isoformat() for d in dates]
