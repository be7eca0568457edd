// bindings.cpp: the private module fastlstm._core (pybind11).
//
// Arrays are taken without copies when they are already C-contiguous float32 and checked here
// again (the Python layer validates first; this is the last line before raw pointers): a bad
// dtype, layout or shape raises TypeError/ValueError, never reaches the kernels. The GIL is
// released while kernels run.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

#include "cpu_features.h"
#include "lstm.h"
#include "thread_pool.h"

namespace py = pybind11;
using namespace fastlstm;

namespace {

std::atomic<int> g_threads{1};
std::atomic<const char*> g_last_isa{""};

using farray = py::array_t<float, py::array::c_style>;

std::string shape_str(const std::vector<py::ssize_t>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

// A float32 C-contiguous array of exactly `shape`, or a Python exception naming `name`.
const float* checked(const py::array& a, const char* name, std::vector<py::ssize_t> shape) {
  if (!a.dtype().is(py::dtype::of<float>()))
    throw py::type_error(std::string(name) + " must be a float32 array, got dtype " +
                         std::string(py::str(a.dtype())));
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + " must be C-contiguous");
  std::vector<py::ssize_t> got(a.shape(), a.shape() + a.ndim());
  if (got != shape)
    throw py::value_error(std::string(name) + " must have shape " + shape_str(shape) + ", got " + shape_str(got));
  return static_cast<const float*>(a.data());
}

const int64_t* checked_lengths(const py::object& lengths, int T, int B) {
  if (lengths.is_none()) return nullptr;
  auto arr = py::cast<py::array>(lengths);
  if (!arr.dtype().is(py::dtype::of<int64_t>()) || !(arr.flags() & py::array::c_style))
    throw py::type_error("lengths must be a C-contiguous int64 array");
  if (arr.ndim() != 1 || arr.shape(0) != B)
    throw py::value_error("lengths must have shape (B,) = (" + std::to_string(B) + ",)");
  const int64_t* l = static_cast<const int64_t*>(arr.data());
  for (int b = 0; b < B; ++b)
    if (l[b] < 0 || l[b] > T)
      throw py::value_error("lengths must lie in [0, T] = [0, " + std::to_string(T) + "], got lengths[" +
                            std::to_string(b) + "] = " + std::to_string(l[b]));
  return l;
}

float* mut(farray& a) { return a.mutable_data(); }

const KernelTable* table_by_name(const std::string& name) {
  const KernelTable* t = find_table(name.c_str());
  if (!t) throw py::value_error("unknown ISA '" + name + "'");
  for (auto* r : runnable_tables())
    if (r == t) return t;
  throw py::value_error("this CPU cannot run the '" + name + "' path");
}

// x, h0, c0, lengths of a forward call with H hidden units; output arrays allocated.
struct ForwardCall {
  ForwardArgs a{};
  farray y, hT, cT;
  ForwardCall(py::array x, int H, py::array h0, py::array c0, py::object lengths, bool reverse) {
    if (x.ndim() != 3) throw py::value_error("x must have shape (T, B, I)");
    const int T = (int)x.shape(0), B = (int)x.shape(1), I = (int)x.shape(2);
    if (T < 1 || B < 1 || I < 1 || H < 1) throw py::value_error("T, B, I and H must all be >= 1");
    a.T = T; a.B = B; a.I = I; a.H = H;
    a.x = checked(x, "x", {T, B, I});
    a.h0 = checked(h0, "h0", {B, H});
    a.c0 = checked(c0, "c0", {B, H});
    a.lengths = checked_lengths(lengths, T, B);
    a.reverse = reverse;
    y = farray({T, B, H}); hT = farray({B, H}); cT = farray({B, H});
    a.y = mut(y); a.hT = mut(hT); a.cT = mut(cT);
    a.threads = g_threads.load();
  }
};

py::tuple forward(py::array x, py::array W_ih, py::array W_hh, py::array b, py::array h0, py::array c0,
                  py::object lengths, bool reverse, bool training) {
  if (W_hh.ndim() != 2) throw py::value_error("W_hh must have shape (4H, H)");
  ForwardCall f(x, (int)W_hh.shape(1), h0, c0, lengths, reverse);
  ForwardArgs& a = f.a;
  const int I = a.I, H = a.H;
  a.W_ih = checked(W_ih, "W_ih", {4 * H, I});
  a.W_hh = checked(W_hh, "W_hh", {4 * H, H});
  a.b = checked(b, "b", {4 * H});
  std::shared_ptr<Workspace> ws;
  if (training) ws = std::make_shared<Workspace>();
  a.ws = ws.get();
  const KernelTable* t = active_table();
  {
    py::gil_scoped_release nogil;
    t->lstm_forward(a);
  }
  g_last_isa = t->name;
  return py::make_tuple(f.y, f.hT, f.cT, ws ? py::cast(ws) : py::none());
}

py::tuple backward(py::array dy, py::array dhT, py::array dcT, std::shared_ptr<Workspace> ws, py::array x,
                   py::array W_ih, py::array W_hh, py::array h0, py::array c0, py::object lengths, bool reverse) {
  if (!ws) throw py::type_error("backward needs the workspace of forward(..., training=True)");
  const int T = ws->T, B = ws->B, I = ws->I, H = ws->H;
  if (reverse != ws->reverse) throw py::value_error("reverse differs from the forward call");
  BackwardArgs a{};
  a.dy = checked(dy, "dy", {T, B, H});
  a.dhT = checked(dhT, "dhT", {B, H});
  a.dcT = checked(dcT, "dcT", {B, H});
  a.x = checked(x, "x", {T, B, I});
  a.W_ih = checked(W_ih, "W_ih", {4 * H, I});
  a.W_hh = checked(W_hh, "W_hh", {4 * H, H});
  checked(h0, "h0", {B, H});
  checked(c0, "c0", {B, H});
  checked_lengths(lengths, T, B);
  a.ws = ws.get();
  farray dx({T, B, I}), dW_ih({4 * H, I}), dW_hh({4 * H, H}), db({4 * H}), dh0({B, H}), dc0({B, H});
  a.dx = mut(dx); a.dW_ih = mut(dW_ih); a.dW_hh = mut(dW_hh); a.db = mut(db); a.dh0 = mut(dh0); a.dc0 = mut(dc0);
  a.threads = g_threads.load();
  const KernelTable* t = find_table(ws->isa);  // the layout depends on the ISA that ran forward
  {
    py::gil_scoped_release nogil;
    t->lstm_backward(a);
  }
  g_last_isa = t->name;
  return py::make_tuple(dx, dW_ih, dW_hh, db, dh0, dc0);
}

// A packed copy of one layer's weights for repeated inference: whole sequences (forward) or
// single streaming steps (step). Packed by, and always run on, the ISA active at construction.
struct Cell {
  Packed P;
  const KernelTable* table;
  Cell(py::array W_ih, py::array W_hh, py::array b) {
    if (W_hh.ndim() != 2 || W_ih.ndim() != 2) throw py::value_error("W_ih and W_hh must be 2-d");
    const int H = (int)W_hh.shape(1), I = (int)W_ih.shape(1);
    if (H < 1 || I < 1) throw py::value_error("H and I must be >= 1");
    const float* wi = checked(W_ih, "W_ih", {4 * H, I});
    const float* wh = checked(W_hh, "W_hh", {4 * H, H});
    const float* bb = checked(b, "b", {4 * H});
    table = active_table();
    table->pack_weights(wi, wh, bb, I, H, P, g_threads.load(), true);
  }
  // inference over whole sequences with the packed weights -> (y, hT, cT)
  py::tuple forward(py::array x, py::array h0, py::array c0, py::object lengths, bool reverse) {
    ForwardCall f(x, P.H, h0, c0, lengths, reverse);
    if (f.a.I != P.I)
      throw py::value_error("x must have shape (T, B, I) with I = " + std::to_string(P.I) + ", got I = " +
                            std::to_string(f.a.I));
    {
      py::gil_scoped_release nogil;
      table->lstm_forward_packed(f.a, P);
    }
    g_last_isa = table->name;
    return py::make_tuple(f.y, f.hT, f.cT);
  }
  // h and c (B, H) float32 are updated in place; returns h
  py::array step(py::array x, py::array h, py::array c) {
    if (x.ndim() != 2) throw py::value_error("x must have shape (B, I)");
    const int B = (int)x.shape(0);
    if (B < 1) throw py::value_error("x has an empty batch, B = 0");
    const float* xp = checked(x, "x", {B, P.I});
    checked(h, "h", {B, P.H});
    checked(c, "c", {B, P.H});
    if (!h.writeable() || !c.writeable()) throw py::value_error("h and c must be writeable");
    float* hp = static_cast<float*>(h.mutable_data());
    float* cp = static_cast<float*>(c.mutable_data());
    const long n = (long)B * P.H;
    if (hp < cp + n && cp < hp + n) throw py::value_error("h and c must not overlap");
    if (xp < hp + n && hp < xp + (long)B * P.I) throw py::value_error("x and h must not overlap");
    if ((long)B * P.H > 4096) {
      py::gil_scoped_release nogil;
      table->lstm_step(P, xp, hp, cp, B);
    } else {
      table->lstm_step(P, xp, hp, cp, B);
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
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw py::value_error("number of threads must be >= 1");
    g_threads = n;
  });
  m.def("get_num_threads", [] { return g_threads.load(); });
  m.def("fma_peak_gflops", [](int threads, double seconds) {
    if (threads < 1 || !(seconds > 0)) throw py::value_error("threads >= 1 and seconds > 0 required");
    py::gil_scoped_release nogil;
    return runnable_tables().front()->fma_peak(threads, seconds);
  }, py::arg("threads"), py::arg("seconds") = 0.2,
     "GFLOP/s of a multiply-add loop on the best ISA this CPU runs (the machine's FMA peak)");

  m.def("release_scratch", [] {
    for (auto* t : compiled_tables()) t->release_scratch();
  }, "free the calling thread's scratch buffers (kept between calls to avoid page faults)");

  m.def("lstm_forward", &forward, py::arg("x"), py::arg("W_ih"), py::arg("W_hh"), py::arg("b"), py::arg("h0"),
        py::arg("c0"), py::arg("lengths"), py::arg("reverse"), py::arg("training"),
        "one layer, one direction: -> (y, hT, cT, workspace or None)");
  m.def("lstm_backward", &backward, py::arg("dy"), py::arg("dhT"), py::arg("dcT"), py::arg("workspace"), py::arg("x"),
        py::arg("W_ih"), py::arg("W_hh"), py::arg("h0"), py::arg("c0"), py::arg("lengths"), py::arg("reverse"),
        "-> (dx, dW_ih, dW_hh, db, dh0, dc0)");

  py::class_<Workspace, std::shared_ptr<Workspace>>(m, "Workspace", "what forward keeps for backward")
      .def_property_readonly("nbytes", &Workspace::nbytes)
      .def_property_readonly("isa", [](const Workspace& w) { return std::string(w.isa); });

  py::class_<Cell>(m, "Cell", "packed weights of one layer for repeated inference (sequences or single steps)")
      .def(py::init<py::array, py::array, py::array>(), py::arg("W_ih"), py::arg("W_hh"), py::arg("b"))
      .def("forward", &Cell::forward, py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("lengths"),
           py::arg("reverse"), "inference over whole sequences with the packed weights -> (y, hT, cT)")
      .def("step", &Cell::step, py::arg("x"), py::arg("h"), py::arg("c"),
           "one time step; h and c (B, H) are updated in place; returns h")
      .def_property_readonly("isa", [](const Cell& c) { return std::string(c.table->name); })
      .def_property_readonly("input_size", [](const Cell& c) { return c.P.I; })
      .def_property_readonly("hidden_size", [](const Cell& c) { return c.P.H; });

  m.def("_set_fuse_rows", [](long n) { return g_fuse_rows.exchange(n); }, py::arg("rows"),
        "forward policy: fuse the input projection when a step has >= rows rows (-1: the kernels' "
        "rule, the default); returns the previous setting");
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
  m.def("_last_fused", [] { return g_last_fused.load(); }, "whether the last forward fused the input projection");
  m.def("_gemm", [](py::array A, py::array Bm) {
    if (A.ndim() != 2 || Bm.ndim() != 2 || A.shape(1) != Bm.shape(0)) throw py::value_error("shapes");
    const int M = (int)A.shape(0), K = (int)A.shape(1), N = (int)Bm.shape(1);
    const float* a = checked(A, "A", {M, K});
    const float* b = checked(Bm, "B", {K, N});
    farray C({M, N});
    float* c = mut(C);
    const KernelTable* t = active_table();
    py::gil_scoped_release nogil;
    t->gemm(M, N, K, a, b, c, g_threads.load());
    return C;
  }, "C = A·B with the active ISA's GEMM (for tests)");
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
