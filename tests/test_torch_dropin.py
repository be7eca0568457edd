"""fastlstm.torch.LSTM against torch.nn.LSTM: outputs, every gradient, packed sequences, gradcheck
in float64, the fallbacks, dropout semantics and a training loop's loss curve."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from conftest import require


@pytest.fixture(scope="module")
def torch():
    return require("torch")


@pytest.fixture(scope="module")
def ft(torch):
    import fastlstm.torch as ft

    return ft


@pytest.fixture(autouse=True)
def _fresh_warnings(request):
    # FallbackWarning is warned once per reason and process; every test starts afresh
    if "ft" in request.fixturenames:
        request.getfixturevalue("ft")._warned.clear()


def _pair(torch, ft, seed, **cfg):
    torch.manual_seed(seed)
    ref = torch.nn.LSTM(**cfg)
    with torch.no_grad():      # biases and weights of a wider range than the default init
        for p in ref.parameters():
            p.uniform_(-0.6, 0.6)
    return ref, ft.LSTM.from_torch(ref)


def _run(torch, module, inp, hx, upstream):
    """Forward, a loss mixing every output, and the gradients of all leaves."""
    out, (h_n, c_n) = module(inp, hx)
    data = out.data if hasattr(out, "batch_sizes") else out
    gy, gh, gc = upstream
    loss = (data * gy).sum() + (h_n * gh).sum() + (c_n * gc).sum()
    leaves = [t for t in ([inp.data if hasattr(inp, "batch_sizes") else inp] + list(hx or ()))] + list(module.parameters())
    need = [t for t in leaves if t.requires_grad]
    grads = torch.autograd.grad(loss, need)
    return out, h_n, c_n, grads


CASES = list(range(14))


@pytest.mark.parametrize("case", CASES)
def test_matches_torch_outputs_and_every_gradient(torch, ft, case):
    rng = np.random.default_rng(zlib.crc32(f"dropin{case}".encode()))
    L = int(rng.integers(1, 4))
    bi = bool(rng.integers(0, 2))
    bf = bool(rng.integers(0, 2))
    mode = ["tensor", "packed_sorted", "packed_unsorted"][case % 3]
    with_state = bool(case % 2)
    T = [1, 5, 9][case % 3] if case % 5 else 1
    B = [1, 4, 7][(case // 3) % 3]
    I, H = int(rng.choice([1, 3, 8])), int(rng.choice([5, 17, 33]))
    D = 2 if bi else 1
    ref, mod = _pair(torch, ft, case, input_size=I, hidden_size=H, num_layers=L, bias=bool(case % 7 != 3),
                     batch_first=bf, bidirectional=bi)
    torch.manual_seed(100 + case)
    x = torch.randn(B, T, I) if bf else torch.randn(T, B, I)
    hx = (torch.randn(L * D, B, H) * 0.5, torch.randn(L * D, B, H) * 0.5) if with_state else None
    if mode == "tensor":
        inp = x.requires_grad_()
    else:
        lengths = rng.integers(1, T + 1, B)
        lengths[0] = T
        if mode == "packed_sorted":
            lengths = -np.sort(-lengths)
        seqs = [(x[b] if bf else x[:, b])[:n] for b, n in enumerate(lengths)]
        inp = torch.nn.utils.rnn.pack_sequence(seqs, enforce_sorted=mode == "packed_sorted")
        inp = torch.nn.utils.rnn.PackedSequence(inp.data.clone().requires_grad_(), inp.batch_sizes,
                                                inp.sorted_indices, inp.unsorted_indices)
    if hx is not None:
        hx = tuple(t.requires_grad_() for t in hx)
    N = (inp.data if mode != "tensor" else x).shape
    up = (torch.randn(*N[:-1], D * H), torch.randn(L * D, B, H), torch.randn(L * D, B, H))
    want = _run(torch, ref, inp, hx, up)
    got = _run(torch, mod, inp, hx, up)
    assert mod.last_backend == __import__("fastlstm").backends.active().NAME
    if mode != "tensor":
        assert isinstance(got[0], torch.nn.utils.rnn.PackedSequence)
        assert torch.equal(got[0].batch_sizes, want[0].batch_sizes)
        for k in ("sorted_indices", "unsorted_indices"):
            a, b = getattr(got[0], k), getattr(want[0], k)
            assert (a is None and b is None) or torch.equal(a, b)
        got0, want0 = got[0].data, want[0].data
    else:
        got0, want0 = got[0], want[0]
    for name, g, w in [("output", got0, want0), ("h_n", got[1], want[1]), ("c_n", got[2], want[2])]:
        assert g.shape == w.shape and g.dtype == torch.float32, name
        torch.testing.assert_close(g, w, atol=2e-5, rtol=1e-4, msg=name)
    assert len(got[3]) == len(want[3]) == (1 + 2 * with_state + len(list(ref.parameters())))
    for k, (g, w) in enumerate(zip(got[3], want[3])):
        torch.testing.assert_close(g, w, atol=5e-5, rtol=2e-4, msg=f"gradient {k}")


@pytest.mark.parametrize("backend", ["reference", "numba"])
@pytest.mark.parametrize("bi,packed,bf", [(False, False, False), (True, True, False), (True, False, True)])
def test_gradcheck_float64(torch, ft, backend, bi, packed, bf):
    if backend == "numba":
        require("numba")
    torch.manual_seed(3)
    mod = ft.LSTM(3, 4, num_layers=2, bidirectional=bi, dtype=torch.float64, backend=backend, batch_first=bf)
    D = 2 if bi else 1
    x = torch.randn(*((3, 5) if bf else (5, 3)), 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2 * D, 3, 4, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2 * D, 3, 4, dtype=torch.float64, requires_grad=True)
    params = list(mod.parameters())
    names = [n for n, _ in mod.named_parameters()]

    def f(x, h0, c0, *ps):
        out = torch.func.functional_call(mod, dict(zip(names, ps)),
                                         (torch.nn.utils.rnn.pack_padded_sequence(x, [5, 3, 1], enforce_sorted=False)
                                          if packed else x, (h0, c0)))
        y, (h, c) = out
        return (y.data if packed else y), h, c

    assert torch.autograd.gradcheck(f, (x, h0, c0, *params), eps=1e-6, atol=1e-6)
    assert mod.last_backend == backend


def test_float64_default_backend_is_not_native(torch, ft):
    import fastlstm

    mod = ft.LSTM(2, 3, dtype=torch.float64)
    mod(torch.randn(4, 2, 2, dtype=torch.float64))
    assert mod.last_backend == fastlstm.backends.for_dtype(np.dtype(np.float64)).NAME != "native"


def test_needs_input_grad_respected(torch, ft):
    ref, mod = _pair(torch, ft, 0, input_size=3, hidden_size=6, num_layers=2)
    mod.weight_ih_l0.requires_grad_(False)
    x = torch.randn(4, 2, 3)                              # needs no grad
    y, _ = mod(x)
    assert y.grad_fn is not None
    y.sum().backward()
    assert x.grad is None and mod.weight_ih_l0.grad is None
    assert mod.weight_hh_l0.grad is not None and mod.bias_ih_l1.grad is not None
    ref.weight_ih_l0.requires_grad_(False)
    ref(x)[0].sum().backward()
    torch.testing.assert_close(mod.weight_hh_l0.grad, ref.weight_hh_l0.grad, atol=2e-5, rtol=1e-4)


def test_no_grad_inference_matches_and_builds_no_graph(torch, ft):
    ref, mod = _pair(torch, ft, 1, input_size=2, hidden_size=9, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(3, 6, 2)
    with torch.no_grad():
        y, (h, c) = mod(x)
        y_ref, (h_ref, c_ref) = ref(x)
    assert y.grad_fn is None and h.grad_fn is None
    for g, w in ((y, y_ref), (h, h_ref), (c, c_ref)):
        torch.testing.assert_close(g, w, atol=2e-5, rtol=1e-4)


def test_unbatched_input(torch, ft):
    ref, mod = _pair(torch, ft, 2, input_size=2, hidden_size=5, num_layers=2, batch_first=True)
    x = torch.randn(7, 2)
    hx = (torch.randn(2, 5), torch.randn(2, 5))
    for a, b in zip((mod(x, hx)[0], *mod(x, hx)[1]), (ref(x, hx)[0], *ref(x, hx)[1])):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_plain_calls_take_the_short_path_and_the_rest_the_general_one(torch, ft, monkeypatch):
    """_plain_call runs the common call (results as the general path's, gradients too) and
    returns None for every call it does not cover, which forward() then checks in full."""
    ref, mod = _pair(torch, ft, 3, input_size=3, hidden_size=5, num_layers=2, batch_first=True)
    x = torch.randn(4, 6, 3, requires_grad=True)
    hx = (torch.randn(2, 4, 5, requires_grad=True), torch.randn(2, 4, 5, requires_grad=True))
    plain = mod._plain_call(x, hx)
    assert plain is not None
    general = []
    monkeypatch.setattr(type(mod), "_plain_call", lambda self, *a: general.append(1))
    full = mod(x, hx)
    assert general == [1]           # the general path ran this one
    for a, b in zip((plain[0], *plain[1]), (full[0], *full[1])):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    ga = torch.autograd.grad(sum(t.sum() for t in (plain[0], *plain[1])), [x, *hx, *mod.parameters()])
    gb = torch.autograd.grad(sum(t.sum() for t in (full[0], *full[1])), [x, *hx, *mod.parameters()])
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    monkeypatch.undo()
    h0, c0 = (t.detach() for t in hx)
    not_plain = [
        (x.detach().double(), None),                              # dtype differs from the weights
        (x.detach()[0], None),                                    # unbatched
        (x.detach(), [h0, c0]),                                   # hx not a tuple
        (x.detach(), (h0[:1], c0[:1])),                           # hx of the wrong shape
        (x.detach(), (h0.double(), c0.double())),                 # hx of another dtype
        (torch.randn(4, 6, 2), None),                             # input size
        (torch.randn(0, 6, 3), None),                             # empty batch
        (x.detach().half(), None),                                # float16
    ]
    for inp, h in not_plain:
        assert mod._plain_call(inp, h) is None
    drop = ft.LSTM(3, 5, num_layers=2, dropout=0.5).train()
    assert drop._plain_call(torch.randn(6, 4, 3), None) is None   # dropout between layers
    assert drop.eval()._plain_call(torch.randn(6, 4, 3), None) is not None
    monkeypatch.setenv("FASTLSTM_CHECK_FINITE", "1")
    assert mod._plain_call(x, hx) is None                         # the finite check is the general path's


def test_bad_input_raises_like_torch(torch, ft):
    mod = ft.LSTM(3, 4, num_layers=2)
    with pytest.raises(ValueError, match="2D or 3D"):
        mod(torch.randn(2, 3, 4, 3))
    with pytest.raises(RuntimeError, match="hidden"):
        mod(torch.randn(5, 2, 3), (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)))
    with pytest.raises(RuntimeError):
        mod(torch.randn(5, 2, 7))                        # input_size mismatch


def test_inplace_weight_change_before_backward_raises(torch, ft):
    mod = ft.LSTM(2, 3)
    y, _ = mod(torch.randn(4, 2, 2))
    with torch.no_grad():
        mod.weight_hh_l0.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_inplace_input_change_before_backward_raises(torch, ft):
    """The kernels read x again in backward straight from the tensor's memory (no private copy):
    torch's version counter must catch an in-place change, as it does for nn.LSTM."""
    mod = ft.LSTM(2, 3)
    x = torch.randn(4, 2, 2)                 # time-major and contiguous: the kernels read it in place
    y, _ = mod(x)
    x.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_weight_updates_reach_every_call(torch, ft):
    """Nothing derived from the weights outlives a call: after an optimizer's in-place step, a
    .data edit (which bumps no version counter) and load_state_dict, each next forward and its
    gradients equal nn.LSTM's with the same weights. A cache of the weights (or of b_ih + b_hh)
    keyed on anything but their current values would fail here."""
    ref, mod = _pair(torch, ft, 7, input_size=3, hidden_size=5, num_layers=2, bidirectional=True)
    x = torch.randn(6, 4, 3)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.5)
    opt_mod = torch.optim.SGD(mod.parameters(), lr=0.5)

    def compare():
        for m in (ref, mod):
            m.zero_grad()
        outs = [m(x) for m in (ref, mod)]
        for (y, (h, c)) in outs:
            (y.square().sum() + h.sum() + c.sum()).backward()
        torch.testing.assert_close(outs[1][0], outs[0][0], atol=2e-5, rtol=1e-4)
        for (name, pr), pm in zip(ref.named_parameters(), mod.parameters()):
            torch.testing.assert_close(pm.grad, pr.grad, atol=5e-5, rtol=2e-4, msg=name)

    compare()
    for _ in range(2):                               # optimizer steps (in place, under no_grad)
        opt_ref.step()
        opt_mod.step()
        compare()
    for m in (ref, mod):                             # .data edits: no version counter moves
        m.bias_hh_l1_reverse.data.add_(0.75)
        m.weight_hh_l0.data.mul_(-1.0)
    compare()
    state = {k: torch.randn_like(v) * 0.3 for k, v in ref.state_dict().items()}
    ref.load_state_dict(state)
    mod.load_state_dict(state)
    compare()


def test_output_changed_in_place_leaves_gradients(torch, ft):
    """backward reads only the workspaces and the saved inputs, never the returned y, h_n, c_n."""
    torch.manual_seed(8)
    mod = ft.LSTM(3, 4, num_layers=2)
    x = torch.randn(5, 2, 3, requires_grad=True)
    gy, gh, gc = torch.randn(5, 2, 4), torch.randn(2, 2, 4), torch.randn(2, 2, 4)
    grads = []
    for scribble in (False, True):
        y, (h, c) = mod(x)
        loss = (y * gy).sum() + (h * gh).sum() + (c * gc).sum()     # saves gy, gh, gc, not y, h, c
        if scribble:
            with torch.no_grad():
                y.zero_()
                h.fill_(7.0)
                c.fill_(7.0)
        grads.append(torch.autograd.grad(loss, [x, *mod.parameters()]))
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_one_graph_node_per_stack_or_per_layer_with_dropout(torch, ft):
    """No dropout between layers: the whole stack is one autograd node. Dropout in training: one
    node per layer with F.dropout between; with p ~ 0 (no element dropped, scale 1) both must
    give nn.LSTM's outputs and gradients, float64 on the reference backend."""
    torch.manual_seed(9)
    ref = torch.nn.LSTM(3, 4, num_layers=3, bidirectional=True, dtype=torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    hx = tuple(torch.randn(6, 2, 4, dtype=torch.float64, requires_grad=True) for _ in range(2))
    want = _run(torch, ref, x, hx, (torch.ones(5, 2, 8, dtype=torch.float64),) + (torch.ones(6, 2, 4, dtype=torch.float64),) * 2)

    def nodes(t):
        seen, todo = [], [t.grad_fn]
        while todo:
            f = todo.pop()
            if f is not None and f not in seen:
                seen.append(f)
                todo += [g for g, _ in f.next_functions]
        return [type(f).__name__ for f in seen]

    for p, n_nodes in ((0.0, 1), (1e-300, 3)):
        mod = ft.LSTM.from_torch(ref, backend="reference")
        mod.dropout = p
        out = mod(x, hx)
        assert nodes(out[0]).count("_LSTMStackBackward") == n_nodes
        got = _run(torch, mod, x, hx, (torch.ones(5, 2, 8, dtype=torch.float64),) + (torch.ones(6, 2, 4, dtype=torch.float64),) * 2)
        assert mod.last_backend == "reference"
        for g, w in zip((*got[:3], *got[3]), (*want[:3], *want[3])):
            torch.testing.assert_close(g, w, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("backend", ["native", "numba", "reference"])
def test_one_output_used_gradients(torch, ft, backend):
    """A loss on y alone, h_n alone or c_n alone: backward gets None for the other outputs and
    feeds the kernels shared read-only zeros (no backend may write them); gradients as nn.LSTM."""
    if backend == "numba":
        require("numba")
    dtype = torch.float32 if backend == "native" else torch.float64
    tol = dict(atol=5e-5, rtol=2e-4) if backend == "native" else dict(atol=1e-10, rtol=1e-10)
    torch.manual_seed(12)
    mod = ft.LSTM(3, 5, num_layers=2, bidirectional=True, dtype=dtype, backend=backend)
    ref = mod.to_torch()
    x = torch.randn(6, 3, 3, dtype=dtype, requires_grad=True)
    for k in range(3):
        got, want = mod(x), ref(x)
        pick = (lambda r: r[0], lambda r: r[1][0], lambda r: r[1][1])[k]
        g = torch.autograd.grad(pick(got).square().sum(), [x, *mod.parameters()])
        w = torch.autograd.grad(pick(want).square().sum(), [x, *ref.parameters()])
        assert mod.last_backend == backend
        for a, b in zip(g, w):
            torch.testing.assert_close(a, b, **tol)
    for z in ft._ZEROS.values():
        assert not z.flags.writeable and not z.any()


def test_check_finite_env_and_empty_input(torch, ft, monkeypatch):
    mod = ft.LSTM(2, 3)
    x = torch.randn(4, 2, 2)
    x[1, 0, 1] = float("nan")
    monkeypatch.setenv("FASTLSTM_CHECK_FINITE", "1")
    with pytest.raises(ValueError, match="x"):
        mod(x)
    monkeypatch.setenv("FASTLSTM_CHECK_FINITE", "0")
    assert torch.isnan(mod(x)[0]).any()                 # unchecked: NaN flows through, no error
    with pytest.raises(ValueError, match="empty dimension"):
        mod(torch.randn(4, 0, 2))


def test_shared_zero_states_stay_zero_and_bounded(torch, ft):
    """Missing h0/c0 and output gradients use shared read-only zeros: no call may write them,
    and many batch sizes do not grow the cache without bound."""
    torch.manual_seed(10)
    mod = ft.LSTM(2, 3)
    for B in range(1, 80):
        y, _ = mod(torch.randn(2, B, 2, requires_grad=True))
        y.sum().backward()                               # dh_n, dc_n: None -> shared zeros
    assert 0 < len(ft._ZEROS) <= 64
    for z in ft._ZEROS.values():
        assert not z.flags.writeable and not z.any()


@pytest.fixture
def threads(torch):
    """Set torch's and fastlstm's thread counts inside a test; both restored after."""
    import fastlstm

    old = torch.get_num_threads(), fastlstm.get_num_threads()

    def set_(n_torch, n_fast):
        torch.set_num_threads(n_torch)
        fastlstm.set_num_threads(n_fast)

    yield set_
    set_(*old)


def _measured(core):
    """Whether the native split is the measured one now (read by setting and restoring it)."""
    old = core._set_split_adaptive(False)
    core._set_split_adaptive(old)
    return old


def _torch_on_openmp(torch):
    import sys

    return sys.platform.startswith("linux") and "parallel backend: OpenMP" in torch.__config__.parallel_info()


@pytest.mark.parametrize("on_torch_threads", [True, False])
@pytest.mark.parametrize("n_torch,n_fast,want", [(1, 2, 1), (2, 1, 1), (2, 2, 2), (3, 2, 2)])
def test_kernels_follow_torch_threads(torch, ft, monkeypatch, threads, n_torch, n_fast, want, on_torch_threads):
    """The rule: min(torch.get_num_threads(), fastlstm.get_num_threads()) threads inside a call
    (forward, backward and inference); on more than one, the teams run on torch's OpenMP threads
    (use_torch_threads, the default, where torch runs on OpenMP), else on the kernels' pool with
    the measured split; fastlstm's own settings (threads, split, team) are unchanged after."""
    import fastlstm
    from fastlstm import _core
    from fastlstm.backends import native

    omp = on_torch_threads and _torch_on_openmp(torch)
    monkeypatch.setattr(ft, "use_torch_threads", on_torch_threads)
    threads(n_torch, n_fast)
    seen = []
    for name in ("lstm_forward", "lstm_backward"):
        real = getattr(native, name)
        # the kernels' threads, whether the measured split is on, and the OpenMP team runs so far
        monkeypatch.setattr(native, name, lambda *a, real=real, name=name: (
            seen.append((name, _core.get_num_threads(), _measured(_core), _core._openmp_runs()[0])),
            real(*a))[1])
    _core._openmp_runs(True)
    mod = ft.LSTM(32, 128, num_layers=2, backend="native")    # big enough to split
    y, _ = mod(torch.randn(20, 64, 32))
    y.sum().backward()
    with torch.no_grad():
        mod(torch.randn(20, 64, 32))
    assert [n for _, n, _, _ in seen] == [want] * 6 and [k for k, _, _, _ in seen].count("lstm_backward") == 2
    assert [m for _, _, m, _ in seen] == [want > 1 and not omp] * 6   # the measured split: the pool only
    runs, largest = _core._openmp_runs()
    if want > 1 and omp:
        assert runs > 0 and largest == want and seen[-1][3] > seen[0][3]  # teams on torch's threads
    else:
        assert runs == 0
    assert fastlstm.get_num_threads() == _core.get_num_threads() == n_fast
    assert native.set_split("auto") == "auto"                   # the static rule again after
    rng = np.random.default_rng(0)
    fastlstm.core.lstm_forward(rng.standard_normal((30, 64, 32), np.float32), rng.standard_normal((512, 32), np.float32),
                               rng.standard_normal((512, 128), np.float32), np.zeros(512, np.float32), backend="native")
    assert _core._openmp_runs() == (runs, largest)              # the pool again outside the drop-in


def test_teams_on_torch_threads_compute_the_same(torch, ft, monkeypatch, threads):
    """Torch's OpenMP runtime is found among the loaded libraries (Linux, torch on OpenMP); a
    2-thread drop-in step on its threads gives what the kernels' own pool gives, and torch's
    own parallel ops still work after."""
    from fastlstm import _core

    team = ft._torch_openmp_team()
    assert (team is not None) == _torch_on_openmp(torch)
    threads(2, 2)
    torch.manual_seed(0)
    mod = ft.LSTM(24, 50, num_layers=2, bidirectional=True, backend="native")
    x = torch.randn(30, 64, 24)
    got = {}
    for on in (True, False):
        monkeypatch.setattr(ft, "use_torch_threads", on)
        mod.zero_grad()
        _core._openmp_runs(True)
        y, (h, c) = mod(x)
        (y.square().sum() + h.sum() + c.sum()).backward()
        got[on] = [y.detach(), h.detach(), c.detach()] + [p.grad.clone() for p in mod.parameters()]
        assert (_core._openmp_runs()[1] == 2) == (on and team is not None)
    for a, b in zip(got[True], got[False]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    a = torch.randn(300_000)
    torch.testing.assert_close(a.sum(), a.double().sum().float(), rtol=1e-5, atol=1e-3)
    assert torch.get_num_threads() == 2


def test_double_backward_raises(torch, ft):
    mod = ft.LSTM(2, 3)
    x = torch.randn(4, 2, 2, requires_grad=True)
    (g,) = torch.autograd.grad(mod(x)[0].pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|differentiate"):
        g.sum().backward()


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN:UserWarning")
@pytest.mark.filterwarnings("ignore:`torch.jit.trace:DeprecationWarning")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")   # torch's own nn.LSTM warns when traced
def test_fallbacks_warn_once_and_compute_like_torch(torch, ft):
    torch.manual_seed(0)
    ref = torch.nn.LSTM(3, 6, proj_size=2)
    mod = ft.LSTM.from_torch(ref)
    x = torch.randn(4, 2, 3)
    with pytest.warns(ft.FallbackWarning, match="proj_size"):
        y = mod(x)[0]
    assert mod.last_backend == "torch"
    torch.testing.assert_close(y, ref(x)[0], atol=0, rtol=0)
    mod(x)                                                     # warned once: no second warning

    plain = ft.LSTM(3, 4, dtype=torch.bfloat16)
    with pytest.warns(ft.FallbackWarning, match="bfloat16"):
        plain(torch.randn(5, 2, 3, dtype=torch.bfloat16))
    assert plain.last_backend == "torch"

    traced_mod = ft.LSTM(3, 4)
    with pytest.warns(ft.FallbackWarning, match="torch.jit"):
        traced = torch.jit.trace(traced_mod, (torch.randn(5, 2, 3),), check_trace=False)
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(traced(x)[0], traced_mod.to_torch()(x)[0], atol=2e-5, rtol=1e-4)


def test_mixed_dtypes_raise_torch_error(torch, ft):
    mod = ft.LSTM(3, 4)
    with pytest.raises(ValueError, match="does not match weight dtype"):
        mod(torch.randn(5, 2, 3, dtype=torch.float64))
    assert mod.last_backend == "torch"


def test_dropout_between_layers_only(torch, ft):
    """dropout=p in training: F.dropout on layer 0's output feeds layer 1; eval is deterministic."""
    ref, mod = _pair(torch, ft, 4, input_size=3, hidden_size=5, num_layers=2, dropout=0.5)
    x = torch.randn(6, 2, 3)
    mod.train()
    torch.manual_seed(11)
    y, (h, c) = mod(x)
    # rebuild by hand: layer 0, the same random mask (the first random draw after the seed), layer 1
    one = [torch.nn.LSTM(3, 5), torch.nn.LSTM(5, 5)]
    for l, m in enumerate(one):
        m.load_state_dict({k.replace(f"_l{l}", "_l0"): v for k, v in ref.state_dict().items() if k.endswith(f"_l{l}")})
    with torch.no_grad():
        y0, (h0, c0) = one[0](x)
        torch.manual_seed(11)
        y0d = torch.nn.functional.dropout(y0, 0.5, training=True)
        y1, (h1, c1) = one[1](y0d)
    assert not torch.equal(y0d, y0)
    torch.testing.assert_close(y, y1, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(h, torch.cat([h0, h1]), atol=2e-5, rtol=1e-4)
    mod.eval()
    torch.testing.assert_close(mod(x)[0], ref.eval()(x)[0], atol=2e-5, rtol=1e-4)


def test_conversions_round_trip(torch, ft):
    import fastlstm

    torch.manual_seed(5)
    ref = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True, dropout=0.25).eval()
    mod = ft.LSTM.from_torch(ref)
    assert isinstance(mod, torch.nn.LSTM) and not mod.training and mod.dropout == 0.25
    assert [n for n, _ in mod.named_parameters()] == [n for n, _ in ref.named_parameters()]
    back = mod.to_torch()
    assert type(back) is torch.nn.LSTM and back.batch_first and back.bidirectional
    for k, v in ref.state_dict().items():
        assert torch.equal(back.state_dict()[k], v) and torch.equal(mod.state_dict()[k], v)
    np_layer = mod.to_fastlstm()
    assert isinstance(np_layer, fastlstm.LSTM)
    x = torch.randn(2, 5, 3)
    y_np, _ = np_layer(x.numpy())
    torch.testing.assert_close(torch.from_numpy(y_np), ref(x)[0], atol=2e-5, rtol=1e-4)
    again = ft.LSTM.from_fastlstm(np_layer)
    for k, v in ref.state_dict().items():
        assert torch.equal(again.state_dict()[k], v)
    with pytest.raises(TypeError, match="torch.nn.LSTM"):
        ft.LSTM.from_torch(torch.nn.GRU(3, 4))


@pytest.fixture
def one_thread(torch):
    # torch's OpenMP team stalls badly on a shared, oversubscribed CI machine; one thread each
    import fastlstm

    old = torch.get_num_threads(), fastlstm.get_num_threads()
    torch.set_num_threads(1)
    fastlstm.set_num_threads(1)
    yield
    torch.set_num_threads(old[0])
    fastlstm.set_num_threads(old[1])


@pytest.mark.parametrize("problem", ["forecast", "classify", "char-LM", "seq2seq"])
def test_training_loop_same_loss_curve(torch, ft, problem, one_thread):
    from fastlstm.bench import torch_loops

    data = torch_loops.make_problem_data(problem)
    n = {"forecast": 64, "classify": 64, "char-LM": 128, "seq2seq": 256}[problem]
    data = {k: v[:n, :40] if k != "y" or v.ndim > 1 else v[:n] for k, v in data.items()}  # shorter T: seconds
    curves = []
    for cls in (torch.nn.LSTM, ft.LSTM):
        fit = torch_loops.TorchFit(problem, data, cls, seed=0)
        curves.append(sum((fit.epoch(max_batches=2)[1] for _ in range(2)), []))
    a, b = np.array(curves[0]), np.array(curves[1])
    assert len(a) == 4 and a[-1] != a[0]
    np.testing.assert_allclose(b, a, rtol=2e-4, atol=1e-6)


def test_dropin_bench_rows(torch, ft):
    """The drop-in benchmark's table (timings are not asserted: speed belongs in benchmarks)."""
    from fastlstm.bench import torch_loops

    old = torch.get_num_threads()
    rows = torch_loops.run_dropin_bench(threads=(1,), repeats=1, quick=True, problems=("forecast",))
    assert torch.get_num_threads() == old                      # threads restored
    (r,) = rows
    assert r["problem"] == "forecast" and r["threads"] == 1 and r["batches"] == 4
    assert r["backend"] == __import__("fastlstm").backends.active().NAME
    assert r["torch_s"] > 0 and r["fastlstm_s"] > 0 and r["ratio"] == pytest.approx(r["torch_s"] / r["fastlstm_s"])
    assert "| forecast | 1 |" in torch_loops.format_dropin_table(rows)


@pytest.mark.parametrize("x_grad", [False, True])
def test_first_layer_skips_dx_unless_needed(torch, ft, monkeypatch, x_grad):
    """needs_input_grad reaches the kernels: the first layer's dx is computed only when x needs a
    gradient (layers above always pass theirs down); the weights' gradients are the same."""
    from fastlstm.backends import native

    calls = []
    real = native.lstm_backward
    monkeypatch.setattr(native, "lstm_backward", lambda *a: (calls.append(a[11]), real(*a))[1])  # need_dx
    torch.manual_seed(0)
    mod = ft.LSTM(3, 4, num_layers=2, bidirectional=True, backend="native")
    ref = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    ref.load_state_dict(mod.state_dict())
    x = torch.randn(5, 2, 3, requires_grad=x_grad)
    mod(x)[0].sum().backward()
    assert calls == [True, True, x_grad, x_grad]  # layer 1's two directions, then layer 0's
    got = {n: p.grad.clone() for n, p in mod.named_parameters()}
    gx = x.grad.clone() if x_grad else None
    x.grad = None
    ref(x)[0].sum().backward()
    for n, p in ref.named_parameters():
        torch.testing.assert_close(got[n], p.grad, rtol=1e-4, atol=1e-5)
    if x_grad:
        torch.testing.assert_close(gx, x.grad, rtol=1e-4, atol=1e-5)


def test_batch_first_reaches_the_kernels_without_copies(torch, ft, monkeypatch):
    """batch_first tensors go to the native kernels as they are: forward reads the input's own
    memory, backward reads the upstream gradient's, and y comes back contiguous (B, T, H) with no
    transpose (the CASES test checks the values against nn.LSTM)."""
    from fastlstm.backends import native

    fwd, bwd = [], []
    real_f, real_b = native.lstm_forward, native.lstm_backward
    monkeypatch.setattr(native, "lstm_forward", lambda *a: (fwd.append((a[0].ctypes.data, a[-1])), real_f(*a))[1])
    monkeypatch.setattr(native, "lstm_backward", lambda *a: (bwd.append((a[0].ctypes.data, *a[-2:])), real_b(*a))[1])
    mod = ft.LSTM(3, 5, batch_first=True, backend="native")
    x = torch.randn(4, 6, 3, requires_grad=True)
    y, _ = mod(x)
    assert fwd == [(x.data_ptr(), True)]
    assert y.shape == (4, 6, 5) and y.is_contiguous()
    g = torch.randn(4, 6, 5)
    y.backward(g)
    assert bwd == [(g.data_ptr(), True, False)]    # batch_first; no h0 given: no dh0 computed
    assert x.grad.shape == (4, 6, 3) and x.grad.is_contiguous()


def test_interleaved_epoch_trains_each_fit_one_full_epoch(torch, ft, one_thread):
    """The drop-in benchmark's segment-by-segment turns train every model on exactly the batches
    of one plain epoch, in order: the same weights as epoch() gives, and a time for each."""
    from fastlstm.bench import torch_loops

    data = torch_loops.make_problem_data("forecast")
    data = {k: v[:200] for k, v in data.items()}                # 7 batches of 32 (the last partial)
    fits = {"a": torch_loops.TorchFit("forecast", data, torch.nn.LSTM, seed=0),
            "b": torch_loops.TorchFit("forecast", data, ft.LSTM, seed=0)}
    plain = torch_loops.TorchFit("forecast", data, torch.nn.LSTM, seed=0)
    out = torch_loops.interleaved_epoch(fits)
    plain.epoch()
    assert set(out) == {"a", "b"} and all(w > 0 and c > 0 for w, c in out.values())
    assert fits["a"].epochs == fits["b"].epochs == plain.epochs == 1
    for (n, p), (_, q), (_, r) in zip(plain.model.named_parameters(), fits["a"].model.named_parameters(),
                                      fits["b"].model.named_parameters()):
        torch.testing.assert_close(q, p, rtol=0, atol=0, msg=n)
        torch.testing.assert_close(r, p, rtol=2e-4, atol=1e-6, msg=n)
