// bindings.cpp: the private module fastlstm._core (pybind11).
//
// Arrays are taken without copies when they are already C-contiguous float32 and checked here
// again (the Python layer validates first; this is the last line before raw pointers): a bad
// dtype, layout or shape raises TypeError/ValueError naming the argument, never reaches the
// kernels. The GIL is released while kernels run, so what a kernel reads without the GIL must
// be what was checked: small index arrays (lengths) are copied before they are checked.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu_features.h"
#include "lstm.h"
#include "thread_pool.h"

namespace py = pybind11;
using namespace fastlstm;

namespace {

std::atomic<int> g_threads{1};
std::atomic<const char*> g_last_isa{""};

// The most threads set_num_threads accepts: the pool spawns that many workers on the next call.
constexpr long long kMaxThreads = 1024;

// A streaming step of at most this many state values (B·H) keeps the GIL: releasing and
// re-taking it costs ~0.2 µs, a sizeable part of a ~1 µs step of a small model.
constexpr long kStepGilFreeMin = 4096;

using farray = py::array_t<float, py::array::c_style>;

std::string shape_str(const std::vector<py::ssize_t>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

// float32 in this machine's byte order, compared by equality: an unpickled array's dtype is
// equal to, but not the same object as, NumPy's canonical float32 (nor is one with metadata).
bool is_native_float32(const py::dtype& d) {
  return d.equal(py::dtype::of<float>()) && d.attr("isnative").cast<bool>();
}

// A float32 C-contiguous array of exactly `shape`, or a Python exception naming `name` (and,
// in `where`, the arguments the sizes come from: a wrong x must not be blamed on W_ih alone).
const float* checked(const py::array& a, const char* name, std::vector<py::ssize_t> shape, const char* where = "") {
  if (!is_native_float32(a.dtype()))
    throw py::type_error(std::string(name) + " must be a float32 array in native byte order, got dtype " +
                         std::string(py::str(a.dtype())));
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + " must be C-contiguous");
  std::vector<py::ssize_t> got(a.shape(), a.shape() + a.ndim());
  if (got != shape)
    throw py::value_error(std::string(name) + " must have shape " + shape_str(shape) + (*where ? " (" : "") + where +
                          (*where ? ")" : "") + ", got " + shape_str(got));
  return static_cast<const float*>(a.data());
}

// A dimension of `name` as an int the kernels can index with (4·H must fit too).
int dim(py::ssize_t n, const char* name) {
  if (n < 1 || n > INT_MAX / 4) throw py::value_error(std::string(name) + " must be in [1, " +
                                                      std::to_string(INT_MAX / 4) + "], got " + std::to_string(n));
  return (int)n;
}

// True/False (or a NumPy bool) only: "no" or 0 must not count as a flag.
bool flag(const py::handle& o, const char* name) {
  if (o.ptr() == Py_True) return true;
  if (o.ptr() == Py_False) return false;
  if (py::isinstance(o, py::module_::import("numpy").attr("bool_"))) return o.cast<bool>();
  throw py::type_error(std::string(name) + " must be a bool, got " +
                       py::str(py::type::of(o).attr("__name__")).cast<std::string>());
}

// None, or a private copy of lengths (B,) int64 with 0 <= lengths[b] <= T. Copied before it is
// checked: the caller's array may be a temporary (a list converts to one) or be rewritten by
// another Python thread while the kernel runs without the GIL.
std::vector<int64_t> checked_lengths(const py::object& lengths, int T, int B) {
  if (lengths.is_none()) return {};
  py::array arr = py::array::ensure(lengths);
  if (!arr) throw py::type_error("lengths must be None or an int64 array of shape (B,)");
  if (!arr.dtype().equal(py::dtype::of<int64_t>()) || !arr.dtype().attr("isnative").cast<bool>() ||
      !(arr.flags() & py::array::c_style))
    throw py::type_error("lengths must be a C-contiguous int64 array, got dtype " + std::string(py::str(arr.dtype())));
  if (arr.ndim() != 1 || arr.shape(0) != B)
    throw py::value_error("lengths must have shape (B,) = (" + std::to_string(B) + ",)");
  const int64_t* l = static_cast<const int64_t*>(arr.data());
  std::vector<int64_t> out(l, l + B);
  for (int b = 0; b < B; ++b)
    if (out[b] < 0 || out[b] > T)
      throw py::value_error("lengths must lie in [0, T] = [0, " + std::to_string(T) + "], got lengths[" +
                            std::to_string(b) + "] = " + std::to_string(out[b]));
  return out;
}

// pybind11 lets Python call Cls.__new__(Cls) and then use an object whose C++ value was never
// constructed: it allocates the value lazily, uninitialised. Zeroed storage makes that state
// detectable (a constructed Cell has a kernel table, a constructed Workspace an ISA name).
struct ZeroedNew {
  static void* operator new(size_t n) {
    void* p = std::calloc(1, n);
    if (!p) throw std::bad_alloc();
    return p;
  }
  static void operator delete(void* p) noexcept { std::free(p); }
};

// The workspace object handed to Python (the kernels see the Workspace base).
struct PyWorkspace : Workspace, ZeroedNew {};

const PyWorkspace& live(const PyWorkspace& w) {
  if (!w.isa)
    throw py::type_error("workspace is not one made by lstm_forward(..., training=True) (its constructor never ran)");
  return w;
}

[[noreturn]] void refuse_pickle(const char* what, const char* instead) {
  throw py::type_error(std::string("fastlstm._core.") + what + " cannot be pickled: " + instead);
}

float* mut(farray& a) { return a.mutable_data(); }

// A new uninitialised output array. Big ones (kPoolMinBytes or more) come from the kernels'
// buffer pool (lstm.h) and go back to it when the array is freed: glibc maps such blocks fresh
// and trims them again depending on the process's history of frees, and then every call pays a
// page fault and the kernel zeroing each page. Seen at (20,1,300,300): the backward took
// 2.2-2.6 ms instead of 0.65 ms in a process that had fallen into that pattern (~470 faults a
// call, dW_ih and dW_hh 1.4 MB each). Not rounded up to huge pages: the caller may keep them.
farray out_array(const std::vector<py::ssize_t>& shape) {
  size_t n = 1;
  for (py::ssize_t d : shape) n *= (size_t)d;
  if (n * sizeof(float) < kPoolMinBytes) return farray(shape);
  auto* owner = new fbuf(alloc_floats(n, false));
  float* p = owner->get();
  py::capsule base(owner, [](void* o) { delete static_cast<fbuf*>(o); });  // back to the pool
  return farray(shape, p, base);
}


const KernelTable* table_by_name(const std::string& name) {
  const KernelTable* t = find_table(name.c_str());
  if (!t) throw py::value_error("unknown ISA '" + name + "'");
  for (auto* r : runnable_tables())
    if (r == t) return t;
  throw py::value_error("this CPU cannot run the '" + name + "' path");
}

// The shape of a sequence array: (T, B, n), or (B, T, n) batch-first.
std::vector<py::ssize_t> rows_of(bool batch_first, int T, int B, int n) {
  return batch_first ? std::vector<py::ssize_t>{B, T, n} : std::vector<py::ssize_t>{T, B, n};
}

// x, h0, c0, lengths of a forward call with H hidden units; output arrays allocated.
struct ForwardCall {
  ForwardArgs a{};
  std::vector<int64_t> lengths;  // the checked copy the kernel reads
  farray y, hT, cT;
  ForwardCall(const py::array& x, int H, const py::array& h0, const py::array& c0, const py::object& lengths_,
              const py::object& reverse, const py::object& batch_first) {
    a.batch_first = flag(batch_first, "batch_first");
    const bool bf = a.batch_first;
    if (x.ndim() != 3) throw py::value_error(bf ? "x must have shape (B, T, I)" : "x must have shape (T, B, I)");
    const int T = dim(x.shape(bf ? 1 : 0), "x's T"), B = dim(x.shape(bf ? 0 : 1), "x's B"),
              I = dim(x.shape(2), "x's I");
    a.T = T; a.B = B; a.I = I; a.H = H;
    a.x = checked(x, "x", rows_of(bf, T, B, I));
    a.h0 = checked(h0, "h0", {B, H}, "B from x, H from the weights");
    a.c0 = checked(c0, "c0", {B, H}, "B from x, H from the weights");
    lengths = checked_lengths(lengths_, T, B);
    a.lengths = lengths.empty() ? nullptr : lengths.data();
    a.reverse = flag(reverse, "reverse");
    y = out_array(rows_of(bf, T, B, H)); hT = out_array({B, H}); cT = out_array({B, H});
    a.y = mut(y); a.hT = mut(hT); a.cT = mut(cT);
    a.threads = g_threads.load();
  }
};

// H of W_hh (4H, H), checked before any 4·H is formed.
int hidden_of(const py::array& W_hh) {
  if (W_hh.ndim() != 2 || W_hh.shape(0) != 4 * W_hh.shape(1))
    throw py::value_error("W_hh must have shape (4H, H)");
  return dim(W_hh.shape(1), "W_hh's H");
}

py::tuple forward(const py::array& x, const py::array& W_ih, const py::array& W_hh, const py::array& b,
                  const py::array& h0, const py::array& c0, const py::object& lengths, const py::object& reverse,
                  const py::object& training, const py::object& batch_first) {
  ForwardCall f(x, hidden_of(W_hh), h0, c0, lengths, reverse, batch_first);
  ForwardArgs& a = f.a;
  const int I = a.I, H = a.H;
  a.W_ih = checked(W_ih, "W_ih", {4 * H, I}, "4H, I: H from W_hh, I from x");
  a.W_hh = checked(W_hh, "W_hh", {4 * H, H});
  a.b = checked(b, "b", {4 * H}, "4H: H from W_hh");
  std::shared_ptr<PyWorkspace> ws;
  if (flag(training, "training")) ws = std::make_shared<PyWorkspace>();
  a.ws = ws.get();
  const KernelTable* t = active_table();
  {
    py::gil_scoped_release nogil;
    t->lstm_forward(a);
  }
  g_last_isa = t->name;
  return py::make_tuple(f.y, f.hT, f.cT, ws ? py::cast(ws) : py::none());
}

// h0, c0 and lengths are in the contract's signature (DESIGN.md §2) but not read: the workspace
// keeps the initial state and the row lengths of forward.
py::tuple backward(const py::array& dy, const py::array& dhT, const py::array& dcT, const py::object& workspace,
                   const py::array& x, const py::array& W_ih, const py::array& W_hh, const py::object& /*h0*/,
                   const py::object& /*c0*/, const py::object& /*lengths*/, const py::object& reverse,
                   const py::object& need_dx, const py::object& batch_first, const py::object& need_dh0) {
  if (!py::isinstance<PyWorkspace>(workspace))
    throw py::type_error("workspace must be the Workspace of lstm_forward(..., training=True)");
  std::shared_ptr<PyWorkspace> ws;
  try {
    ws = workspace.cast<std::shared_ptr<PyWorkspace>>();
  } catch (const py::cast_error&) {  // Workspace.__new__(Workspace): no value behind it
    throw py::type_error("workspace is not one made by lstm_forward(..., training=True) (its constructor never ran)");
  }
  live(*ws);
  const int T = ws->T, B = ws->B, I = ws->I, H = ws->H;
  if (flag(reverse, "reverse") != ws->reverse) throw py::value_error("reverse differs from the forward call");
  const bool bf = ws->batch_first;
  if (flag(batch_first, "batch_first") != bf) throw py::value_error("batch_first differs from the forward call");
  BackwardArgs a{};
  const char* fwd = "as in the forward call of this workspace";
  a.dy = checked(dy, "dy", rows_of(bf, T, B, H), fwd);
  a.dhT = checked(dhT, "dhT", {B, H}, fwd);
  a.dcT = checked(dcT, "dcT", {B, H}, fwd);
  a.x = checked(x, "x", rows_of(bf, T, B, I), fwd);
  a.W_ih = checked(W_ih, "W_ih", {4 * H, I}, fwd);
  a.W_hh = checked(W_hh, "W_hh", {4 * H, H}, fwd);
  a.ws = ws.get();
  const bool want_dx = flag(need_dx, "need_dx"), want_dh0 = flag(need_dh0, "need_dh0");
  const std::vector<py::ssize_t> none{0};
  farray dx = out_array(want_dx ? rows_of(bf, T, B, I) : none);
  farray dh0 = out_array(want_dh0 ? std::vector<py::ssize_t>{B, H} : none);
  farray dW_ih = out_array({4 * H, I}), dW_hh = out_array({4 * H, H}), db = out_array({4 * H});
  farray dc0 = out_array({B, H});
  a.dx = want_dx ? mut(dx) : nullptr;  // null: the kernels skip dX = dZ·W_ih
  a.dW_ih = mut(dW_ih); a.dW_hh = mut(dW_hh); a.db = mut(db); a.dc0 = mut(dc0);
  a.dh0 = want_dh0 ? mut(dh0) : nullptr;  // null: the first step skips dh_{-1} = dz·W_hh
  a.threads = g_threads.load();
  const KernelTable* t = find_table(ws->isa);  // the layout depends on the ISA that ran forward
  {
    py::gil_scoped_release nogil;
    t->lstm_backward(a);
  }
  g_last_isa = t->name;
  return py::make_tuple(want_dx ? py::object(dx) : py::none(), dW_ih, dW_hh, db,
                        want_dh0 ? py::object(dh0) : py::none(), dc0);
}

// Byte ranges of two arrays intersect (a conservative test, like numpy.may_share_memory).
bool overlap(const py::array& a, const py::array& b) {
  const char* pa = static_cast<const char*>(a.data());
  const char* pb = static_cast<const char*>(b.data());
  return pa < pb + b.nbytes() && pb < pa + a.nbytes();
}

// A packed copy of one layer's weights for repeated inference: whole sequences (forward) or
// single streaming steps (step). Packed by, and always run on, the ISA active at construction.
struct Cell : ZeroedNew {
  Packed P;
  const KernelTable* table;  // null only in a Cell whose constructor never ran (see ZeroedNew)
  Cell(const py::array& W_ih, const py::array& W_hh, const py::array& b) {
    const int H = hidden_of(W_hh);
    if (W_ih.ndim() != 2) throw py::value_error("W_ih must have shape (4H, I)");
    const int I = dim(W_ih.shape(1), "W_ih's I");
    const float* wi = checked(W_ih, "W_ih", {4 * H, I}, "4H, I: H from W_hh");
    const float* wh = checked(W_hh, "W_hh", {4 * H, H});
    const float* bb = checked(b, "b", {4 * H}, "4H: H from W_hh");
    const KernelTable* t = active_table();
    t->pack_weights(wi, wh, bb, I, H, P, g_threads.load(), true);
    table = t;
  }
  const Cell& live() const {
    if (!table) throw py::type_error("this Cell was not constructed: use _core.Cell(W_ih, W_hh, b)");
    return *this;
  }
  // inference over whole sequences with the packed weights -> (y, hT, cT)
  py::tuple forward(const py::array& x, const py::array& h0, const py::array& c0, const py::object& lengths,
                    const py::object& reverse, const py::object& batch_first) {
    live();
    ForwardCall f(x, P.H, h0, c0, lengths, reverse, batch_first);
    if (f.a.I != P.I)
      throw py::value_error(std::string(f.a.batch_first ? "x must have shape (B, T, I)" : "x must have shape (T, B, I)") +
                            " with I = " + std::to_string(P.I) + ", got I = " +
                            std::to_string(f.a.I));
    {
      py::gil_scoped_release nogil;
      table->lstm_forward_packed(f.a, P);
    }
    g_last_isa = table->name;
    return py::make_tuple(f.y, f.hT, f.cT);
  }
  // h and c (B, H) float32 are updated in place; returns h. x is read while h and c are
  // written, so none of the three may share memory.
  py::array step(const py::array& x, py::array h, py::array c) {
    live();
    if (x.ndim() != 2) throw py::value_error("x must have shape (B, I)");
    const int B = dim(x.shape(0), "x's batch B");
    const float* xp = checked(x, "x", {B, P.I}, "B, I: I of the weights");
    checked(h, "h", {B, P.H}, "B, H: B from x, H of the weights");
    checked(c, "c", {B, P.H}, "B, H: B from x, H of the weights");
    if (!h.writeable()) throw py::value_error("h must be writeable (it is updated in place)");
    if (!c.writeable()) throw py::value_error("c must be writeable (it is updated in place)");
    if (overlap(h, c)) throw py::value_error("h and c must not overlap");
    if (overlap(x, h)) throw py::value_error("x and h must not overlap");
    if (overlap(x, c)) throw py::value_error("x and c must not overlap");
    float* hp = static_cast<float*>(h.mutable_data());
    float* cp = static_cast<float*>(c.mutable_data());
    if ((long)B * P.H > kStepGilFreeMin) {
      py::gil_scoped_release nogil;
      table->lstm_step(P, xp, hp, cp, B, g_threads.load());
    } else {
      table->lstm_step(P, xp, hp, cp, B, g_threads.load());
    }
    return h;
  }
};

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "fastlstm native kernels (private; use fastlstm.backends.native)";
  m.attr("__version__") = FASTLSTM_VERSION;
#ifdef FASTLSTM_SANITIZE
  m.attr("sanitized") = true;
#else
  m.attr("sanitized") = false;
#endif
  g_threads = hardware_threads();

  m.def("cpu_features", [] {
    const CpuFeatures& f = cpu_features();
    py::dict d;
    d["vendor"] = f.vendor; d["brand"] = f.brand;
    d["sse2"] = f.sse2; d["avx"] = f.avx; d["avx2"] = f.avx2; d["fma"] = f.fma; d["f16c"] = f.f16c;
    d["avx512f"] = f.avx512f; d["avx512bw"] = f.avx512bw; d["avx512dq"] = f.avx512dq;
    d["avx512vl"] = f.avx512vl; d["avx512_bf16"] = f.avx512_bf16; d["amx_tile"] = f.amx_tile;
    return d;
  }, "CPU features detected at runtime");
  m.def("compiled_isas", [] {
    std::vector<std::string> v;
    for (auto* t : compiled_tables()) v.push_back(t->name);
    return v;
  }, "ISA paths in this build, best first");
  m.def("supported_isas", [] {
    std::vector<std::string> v;
    for (auto* t : runnable_tables()) v.push_back(t->name);
    return v;
  }, "ISA paths this CPU can execute, best first");
  m.def("get_isa", [] { return std::string(active_table()->name); }, "the ISA path kernels run on");
  m.def("set_isa", [](const std::string& name) { set_active_table(table_by_name(name)); },
        "force an ISA path this CPU supports");
  m.def("last_isa", [] { return std::string(g_last_isa.load()); }, "the ISA path of the last kernel call");
  m.def("vector_width", [] { return active_table()->vector_width; });
  m.def("set_num_threads", [](long long n) {
    if (n < 1 || n > kMaxThreads)
      throw py::value_error("number of threads must be in [1, " + std::to_string(kMaxThreads) + "], got " +
                            std::to_string(n));
    g_threads = (int)n;
  }, py::arg("n"));
  m.attr("max_threads") = kMaxThreads;
  m.def("get_num_threads", [] { return g_threads.load(); });
  m.def("fma_peak_gflops", [](int threads, double seconds) {
    if (threads < 1 || !(seconds > 0)) throw py::value_error("threads >= 1 and seconds > 0 required");
    py::gil_scoped_release nogil;
    return runnable_tables().front()->fma_peak(threads, seconds);
  }, py::arg("threads"), py::arg("seconds") = 0.2,
     "GFLOP/s of a multiply-add loop on the best ISA this CPU runs (the machine's FMA peak)");

  m.def("release_scratch", [] {
    // runnable ones only: a table this CPU cannot run never allocated, and its code may use
    // instructions the CPU lacks (the AVX-512 one, built with ASan, clears its shadow with zmm)
    for (auto* t : runnable_tables()) t->release_scratch();
  }, "free the calling thread's scratch buffers and the buffer pool's idle buffers (workspaces and "
     "output arrays kept for reuse between calls, to avoid page faults)");
  m.def("_pool_bytes", [] {
    BufferPool& bp = buffer_pool();
    std::lock_guard<std::mutex> lock(bp.mu);
    return py::make_tuple(bp.free.size(), bp.bytes);
  }, "(buffers, bytes) idle in the buffer pool, kept for the next calls");

  m.def("lstm_forward", &forward, py::arg("x"), py::arg("W_ih"), py::arg("W_hh"), py::arg("b"), py::arg("h0"),
        py::arg("c0"), py::arg("lengths") = py::none(), py::arg("reverse") = false, py::arg("training") = false,
        py::arg("batch_first") = false,
        "one layer, one direction: -> (y, hT, cT, workspace or None); batch_first: x and y (B, T, ·)");
  m.def("lstm_backward", &backward, py::arg("dy"), py::arg("dhT"), py::arg("dcT"), py::arg("workspace"), py::arg("x"),
        py::arg("W_ih"), py::arg("W_hh"), py::arg("h0"), py::arg("c0"), py::arg("lengths") = py::none(),
        py::arg("reverse") = false, py::arg("need_dx") = true, py::arg("batch_first") = false, py::arg("need_dh0") = true,
        "-> (dx, dW_ih, dW_hh, db, dh0, dc0); dx None with need_dx=False, dh0 None with need_dh0=False (not "
        "computed); batch_first as in forward: dy, x and dx (B, T, ·)");

  py::class_<PyWorkspace, std::shared_ptr<PyWorkspace>>(m, "Workspace", "what forward keeps for backward")
      .def_property_readonly("nbytes", [](const PyWorkspace& w) { return live(w).nbytes(); })
      .def_property_readonly("isa", [](const PyWorkspace& w) { return std::string(live(w).isa); })
      .def("__reduce__", [](const PyWorkspace&) -> py::object {
        refuse_pickle("Workspace", "it lives for one forward/backward pair in this process");
      });

  py::class_<Cell>(m, "Cell", "packed weights of one layer for repeated inference (sequences or single steps)")
      .def(py::init<const py::array&, const py::array&, const py::array&>(), py::arg("W_ih"), py::arg("W_hh"),
           py::arg("b"))
      .def("forward", &Cell::forward, py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("lengths"),
           py::arg("reverse"), py::arg("batch_first") = false,
           "inference over whole sequences with the packed weights -> (y, hT, cT); batch_first: x and y (B, T, ·)")
      .def("step", &Cell::step, py::arg("x"), py::arg("h"), py::arg("c"),
           "one time step; h and c (B, H) are updated in place; returns h")
      .def_property_readonly("isa", [](const Cell& c) { return std::string(c.live().table->name); })
      .def_property_readonly("input_size", [](const Cell& c) { return c.live().P.I; })
      .def_property_readonly("hidden_size", [](const Cell& c) { return c.live().P.H; })
      .def("__reduce__", [](const Cell&) -> py::object {
        refuse_pickle("Cell", "its weights are packed for this CPU's ISA; pickle fastlstm.prepack(...) "
                              "(a Prepacked), which packs again when loaded");
      });

  m.def("_set_fuse_rows", [](long n) { return g_fuse_rows.exchange(n); }, py::arg("rows"),
        "forward policy: fuse the input projection when a step has >= rows rows (-1: the kernels' "
        "rule, the default); returns the previous setting");
  m.def("_set_openmp_executor", [](uintptr_t parallel, uintptr_t thread_num, uintptr_t num_threads) {
    set_openmp_executor(reinterpret_cast<OmpParallelFn>(parallel), reinterpret_cast<OmpIntFn>(thread_num),
                        reinterpret_cast<OmpIntFn>(num_threads));
    return openmp_executor_set();
  }, py::arg("parallel"), py::arg("thread_num"), py::arg("num_threads"),
        "run this thread's kernel teams on an OpenMP runtime: the addresses of its GOMP_parallel, "
        "omp_get_thread_num, omp_get_num_threads (all 0: the kernels' own pool); returns whether set");
  m.def("core_round_trip_ns", [](int a, int b, long iters, int rounds) {
    if (iters < 1 || rounds < 1) throw py::value_error("iters and rounds must be >= 1");
    if (a == b) throw py::value_error("a and b must be two CPUs (threads on one CPU take turns by time slice)");
    double ns;
    {
      py::gil_scoped_release nogil;
      ns = core_round_trip_ns(a, b, iters, rounds);
    }
    if (ns < 0) return py::object(py::none());
    return py::object(py::float_(ns));
  }, py::arg("a"), py::arg("b"), py::arg("iters") = 20000, py::arg("rounds") = 5,
        "median round trip (ns) of a cache line between threads pinned to CPUs a and b; None where "
        "they cannot be pinned (not Linux, or a CPU outside this process's affinity)");
  m.def("_openmp_runs", [](bool reset) {
    long runs;
    int largest;
    openmp_runs(&runs, &largest, reset);
    return py::make_tuple(runs, largest);
  }, py::arg("reset") = false, "(team calls run on an OpenMP runtime, the largest such team) since the last reset");
  m.def("_set_split", [](const std::string& mode) {
    int v = mode == "auto" ? 0 : mode == "rows" ? 1 : mode == "units" ? 2 : -1;
    if (v < 0) throw py::value_error("split must be 'auto', 'rows' or 'units', got '" + mode + "'");
    const char* names[] = {"auto", "rows", "units"};
    return std::string(names[g_split.exchange(v)]);
  }, py::arg("mode"), "how recurrent loops split over threads: auto (the kernels' rule), rows, units; returns the previous");
  m.def("_last_split", [] {
    const char* names[] = {"serial", "rows", "units"};
    return std::string(names[g_last_split.load()]);
  }, "how the last recurrent loop split over threads: serial, rows or units");
  m.def("_last_steals", [] { return g_last_steals.load(); },
        "how many parts the last recurrent loop split over threads ran for a late thread");
  m.def("_set_steal_test_delay", [](int us) { return StepTeam::test_delay_us.exchange(us); }, py::arg("us"),
        "tests: the last thread of a units split sleeps us µs before step 1 (0: off); returns the previous");
  m.def("_last_late_joins", [] { return g_last_late_joins.load(); },
        "how many threads of the last recurrent loop came late, before running any part, and joined at a later step");
  m.def("_set_late_join_test_delay", [](int us) { return StepTeam::test_join_delay_us.exchange(us); },
        py::arg("us"), "tests: the last thread of a split loop sleeps us µs before step 0 (0: off); returns the previous");
  m.def("_last_fused", [] { return g_last_fused.load(); }, "whether the last forward fused the input projection");
  m.def("_last_step_threads", [] { return g_last_step_threads.load(); },
        "the threads the last streaming step split its panels over (1: the caller alone)");
  m.def("_last_h0_zero", [] { return g_last_h0_zero.load(); },
        "whether the last forward found h0 all zeros and skipped step 0's h0·W_hhᵀ");
  m.def("_set_backward_chunk", [](long bytes) { return g_backward_chunk.exchange(bytes); }, py::arg("bytes"),
        "backward policy: run the steps in chunks of about bytes of dZ, each chunk's products after "
        "it, at any thread count (-1: the kernels' rule, the default); returns the previous setting");
  m.def("_last_chunks", [] { return g_last_chunks.load(); }, "how many chunks of steps the last backward ran");
  m.def("_last_dw_h0_rows", [] { return g_last_dw_h0_rows.load(); },
        "rows of step 0 whose share of dW_hh the last backward skipped, from a zero h0 (0: none)");
  m.def("_last_dx", [] {
    static const char* names[] = {"none", "dots", "panels", "gemm"};
    return std::string(names[g_last_dx.load()]);
  }, "how the last backward computed dX: none (not wanted), dots, panels or gemm");
  m.def("_last_dw", [] {
    static const char* names[] = {"tn", "gemm", "gemm direct"};
    return std::string(names[g_last_dw.load()]);
  }, "how the last backward computed dW: tn (gemm_tn, transposed back), gemm (Gemm4, copied back) or "
     "gemm direct (Gemm4 writing straight into dW_ih and dW_hh)");
  m.def("_set_split_adaptive", [](bool on) { return g_split_adaptive.exchange(on); }, py::arg("on"),
        "whether loops the rule splits are timed and run split or on one thread, the faster "
        "(FASTLSTM_SPLIT=measured; default false: the static rule alone); returns the previous");
  m.def("_split_timings", [] {
    std::lock_guard<std::mutex> lk(g_split_timing_mu);
    py::list out;
    for (const SplitTiming& e : g_split_timings) {
      if (!e.key) continue;
      py::dict d;
      d["kind"] = e.kind ? "backward" : "forward";
      d["split"] = e.by_rows ? "rows" : "units";
      d["threads"] = e.threads;
      d["B"] = e.B;
      d["Hp"] = e.Hp;
      d["I"] = e.I;  // the fused input projection's inputs (0: not fused)
      d["ns_serial"] = e.estimate(0);
      d["ns_split"] = e.estimate(1);
      d["samples_serial"] = std::vector<float>(e.ns[0], e.ns[0] + std::min(e.timed[0], 4u));
      d["samples_split"] = std::vector<float>(e.ns[1], e.ns[1] + std::min(e.timed[1], 4u));
      d["runs_serial"] = e.runs[0];
      d["runs_split"] = e.runs[1];
      out.append(d);
    }
    return out;
  }, "the measured choice's timings: per loop kind and size, ns per compact row-step with one thread and split");
  m.def("_reset_split_timings", [] {
    std::lock_guard<std::mutex> lk(g_split_timing_mu);
    for (SplitTiming& e : g_split_timings) e = SplitTiming{};
    g_prefer_serial.store(false);
  }, "forget the measured choice's timings");
  m.def("_tail_units", [](int H) { return active_table()->tail_units(H); }, py::arg("H"),
        "units in the last panel that the active ISA's forward computes as one vector of four gates (0: none)");
  m.def("gemm", [](py::array A, py::array Bm, bool trans_a) {
    if (A.ndim() != 2 || Bm.ndim() != 2 || A.shape(trans_a ? 0 : 1) != Bm.shape(0))
      throw py::value_error(std::string("gemm needs A ") + (trans_a ? "(K, M)" : "(M, K)") + " and B (K, N), got " +
                            std::to_string(A.ndim()) + "-d and " + std::to_string(Bm.ndim()) + "-d arrays" +
                            (A.ndim() == 2 && Bm.ndim() == 2 ? " with different K" : ""));
    const int M = dim(A.shape(trans_a ? 1 : 0), "A's M"), K = dim(Bm.shape(0), "K"), N = dim(Bm.shape(1), "B's N");
    const float* a = checked(A, "A", trans_a ? std::vector<py::ssize_t>{K, M} : std::vector<py::ssize_t>{M, K});
    const float* b = checked(Bm, "B", {K, N});
    farray C = out_array({M, N});
    float* c = mut(C);
    const KernelTable* t = active_table();
    {
      py::gil_scoped_release nogil;
      t->gemm(M, N, K, a, trans_a ? 1 : K, trans_a ? M : 1, b, c, g_threads.load());
    }
    g_last_isa = t->name;
    return C;
  }, py::arg("A"), py::arg("B"), py::arg("trans_a") = false,
        "C = A·B (Aᵀ·B with trans_a: A given as (K, M)), float32, C-contiguous operands, on the "
        "kernels' GEMM and thread team (what the dense layers use when the kernels run on more "
        "than one thread)");
  m.def("_pool_selftest", [](long jobs, int threads, bool dynamic) {
    if (jobs < 0 || threads < 1 || threads > kMaxThreads)
      throw py::value_error("need jobs >= 0 and 1 <= threads <= " + std::to_string(kMaxThreads));
    // Every job's fn stays alive to the end, so a worker that ran an earlier job's fn inside a
    // later job is counted (not undefined behaviour): each fn checks it runs in its own job.
    std::vector<std::unique_ptr<TeamFn>> fns;
    fns.reserve(jobs);
    std::atomic<long> current{-1}, wrong{0}, participants{0};
    auto run_all = [&] {
      for (long j = 0; j < jobs; ++j) {
        fns.push_back(std::make_unique<TeamFn>([&, j](int tid, Team& team) {
          if (current.load() != j || tid < 0 || tid >= team.size()) wrong.fetch_add(1);
          participants.fetch_add(1);
        }));
        current.store(j);
        parallel_run(threads, *fns.back(), dynamic);
        current.store(-1);
      }
    };
    {
      py::gil_scoped_release nogil;
      run_all();
    }
    return py::make_tuple(wrong.load(), participants.load());
  }, py::arg("jobs"), py::arg("threads"), py::arg("dynamic") = false,
     "run `jobs` tiny parallel jobs; returns (participants that ran another job's function, participants)");
  m.def("_eval", [](const std::string& fn, py::array x) {
    const float* xp = checked(x, "x", {x.ndim() == 1 ? x.shape(0) : -1});
    farray y({x.shape(0)});
    const KernelTable* t = active_table();
    if (fn == "sigmoid") t->eval_sigmoid(xp, mut(y), x.shape(0));
    else if (fn == "tanh") t->eval_tanh(xp, mut(y), x.shape(0));
    else if (fn == "exp") t->eval_exp(xp, mut(y), x.shape(0));
    else throw py::value_error("fn must be sigmoid, tanh or exp");
    return y;
  }, "the active ISA's vectorized sigmoid/tanh/exp on a 1-d float32 array (for accuracy tests)");
}
