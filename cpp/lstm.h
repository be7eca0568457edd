// lstm.h: the native kernel contract (DESIGN.md §2) and the per-ISA kernel table.
//
// T = time steps, B = batch, I = input features, H = hidden units; time-major, C-contiguous
// float32. Gate order i, f, g, o. lengths may be null (every row has T steps).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

namespace fastlstm {

// Float buffers, uninitialised. Big ones (kHugeMinBytes or more, rounded up to whole 2 MB) are
// 2 MB-aligned and advised as transparent huge pages: a fresh 80 MB training workspace otherwise
// costs ~20k page faults, and the GEMMs' strided reads of dZ miss the TLB on every k. From 1 MB
// rather than 4 MB: in seq2seq's PyTorch loop (workspaces and dZ of 1-2 MB, torch's ops between
// the calls) the four kernel calls of a step took 3.06-3.41 ms with 4 KB pages and 2.93-3.26 ms
// with huge ones (5 runs, alternating; 4 of 5 faster); alone, training 1.00-1.08x on six small
// shapes at 1 thread and four at 2. The rounding costs under 2x the memory of such a buffer.
// Buffers of kPoolMinBytes or more are recycled rather than freed: a training loop frees its
// workspace and the next step asks for the same sizes, and fresh pages cost a fault and the
// kernel zeroing each one (at (100,32,10,100) the training forward took 40% longer than
// inference, a quarter of that in clear_page). The bindings take their big output arrays (y, dx,
// dW_ih, dW_hh, ...) from the pool too. At most kPoolBuffers buffers and kPoolBytes in all are
// kept (64: a 2-layer bidirectional step has ~30 such buffers in flight); release_buffer_pool()
// (called by release_scratch) frees them.
// From glibc's default mmap threshold: larger blocks are fresh mappings on every malloc (it
// raises the threshold only as such blocks are freed, and pooled ones never are).
constexpr size_t kPoolMinBytes = size_t(128) << 10;
constexpr size_t kHugeMinBytes = size_t(1) << 20;
constexpr size_t kPoolBytes = size_t(256) << 20;
constexpr size_t kPoolBuffers = 64;

// Defined once, in buffers.cpp (compiled for the baseline ISA): as inline functions here, each
// kernel TU (built with its own -m flags) emitted its own weak copy, and the linker could keep the
// AVX-512 TU's copy for every caller (an AVX-512 store in the allocation on an AVX2 CPU: SIGILL).
struct BufferPool {
  std::mutex mu;
  std::vector<std::pair<void*, size_t>> free;  // (buffer, capacity in bytes)
  size_t bytes = 0;
};
BufferPool& buffer_pool();
void release_buffer_pool();

struct FreeDeleter {
  size_t bytes = 0;  // capacity
  void operator()(float* p) const noexcept;  // back to the pool, or freed
};
using fbuf = std::unique_ptr<float[], FreeDeleter>;
// huge = false: no rounding to 2 MB (output arrays a caller may keep: their exact size, unless the
// pool has a buffer within 2x)
fbuf alloc_floats(size_t n, bool huge = true);
// A buffer kept for long (prepacked weights): its exact size (to a cache line), and from 2 MB
// 2 MB-aligned with its whole 2 MB sections advised as huge pages (the tail stays 4 KB pages).
// The fused tile streams every panel of W_hh each step: with 4 KB pages the prepacked forward
// ran 1-4% slower at H = 512 on Zen 3, 5% with a memory-bound process on the other core.
fbuf alloc_floats_kept(size_t n);

// What forward keeps for backward (training), in the kernel's internal layout: rows sorted by
// length (perm), compact step order (only the real steps of every step s: Bs[s] rows at
// offset off[s]), hidden units padded to Hp and gate-interleaved per panel of one vector of units.
struct Workspace {
  int T = 0, B = 0, I = 0, H = 0, Hp = 0;
  long ldh = 0;                    // row stride of hprev (Hp plus a cache line)
  bool reverse = false;
  bool batch_first = false;        // x, y, dy, dx are (B,T,·) rather than (T,B,·)
  std::vector<int> perm;        // internal row j -> batch row perm[j]
  std::vector<int> len;         // real steps of internal row j (non-increasing)
  std::vector<int> Bs;          // active rows at step s (non-increasing)
  std::vector<long> off;        // first compact row of step s; off[Teff] = Nact
  std::vector<long> src;        // compact row n -> row t·B + b of x / y
  fbuf gates;                      // (Nact, 4Hp) activated i, f, g, o, interleaved per panel
  fbuf c;                          // (Nact, Hp) c_t after each real step
  fbuf hprev;                      // (Nact + B, ldh) h_{t-1} before each real step
  fbuf c0;                         // (B, Hp) initial cell state, internal row order
  bool h0_zero = false;            // h_{-1} = 0: backward skips step 0's share of dW_hh (h0ᵀ·dz = 0)
  const char* isa = "";            // the ISA that ran forward; backward runs the same one
  size_t nbytes() const {
    size_t N = off.empty() ? 0 : (size_t)off.back();
    return sizeof(float) * (N * 4 * Hp + N * Hp + (N + B) * ldh + (size_t)B * Hp) +
           sizeof(long) * (off.size() + src.size()) + sizeof(int) * (perm.size() + len.size() + Bs.size());
  }
};

// Weights packed for one ISA's kernels (gate-interleaved panels). Within one call they live in
// per-thread scratch; `persistent` packings (Cell) own their storage.
struct Packed {
  int I = 0, H = 0, Hp = 0;
  const char* isa = "";
  const float *Wih = nullptr, *Whh = nullptr, *bias = nullptr;  // (I, 4Hp) (Hp, 4Hp) (4Hp)
  bool Whh_finite = false;  // W_hh checked free of Inf/NaN: a zero h0 may skip h0·W_hhᵀ (0·Inf is NaN)
  fbuf storage;  // cache-line aligned (alloc_floats), as every buffer the kernels read vectors from
};

struct ForwardArgs {
  int T, B, I, H;
  const float *x, *W_ih, *W_hh, *b, *h0, *c0;  // (T,B,I) (4H,I) (4H,H) (4H) (B,H) (B,H)
  const int64_t* lengths;                      // (B) or null
  bool reverse;
  bool batch_first;                            // x and y (B,T,·): rows are read and written in place
  float *y, *hT, *cT;                          // (T,B,H) (B,H) (B,H)
  Workspace* ws;                               // non-null: training
  int threads;
};

struct BackwardArgs {
  const float *dy, *dhT, *dcT;                 // (T,B,H) (B,H) (B,H); dy, x, dx (B,T,·) if ws->batch_first
  const Workspace* ws;
  const float *x, *W_ih, *W_hh;
  float *dx, *dW_ih, *dW_hh, *db, *dh0, *dc0;  // (T,B,I) (4H,I) (4H,H) (4H) (B,H) (B,H); dx null: not wanted
  int threads;
};

// Everything compiled once per ISA (lstm_kernels.cpp).
struct KernelTable {
  const char* name;      // "generic", "avx2", "avx512"
  int vector_width;      // floats per SIMD register
  void (*lstm_forward)(const ForwardArgs&);
  void (*lstm_backward)(const BackwardArgs&);
  void (*pack_weights)(const float* W_ih, const float* W_hh, const float* b, int I, int H, Packed& out, int threads,
                       bool persistent);
  void (*lstm_forward_packed)(const ForwardArgs&, const Packed&);
  // one step, h and c (B, H) updated in place; x (B, I)
  void (*lstm_step)(const Packed&, const float* x, float* h, float* c, int B, int threads);
  // C(M,N) = A(M,K)·B(K,N), all row-major (for tests of the GEMM itself)
  // C (M,N) = A·B, B (K,N) row-major; A(i,k) = A[i·ars + k·acs] (row-major: ars = K, acs = 1)
  void (*gemm)(int M, int N, int K, const float* A, long ars, long acs, const float* B, float* C, int threads);
  void (*eval_sigmoid)(const float* x, float* y, long n);
  void (*eval_tanh)(const float* x, float* y, long n);
  void (*eval_exp)(const float* x, float* y, long n);
  double (*fma_peak)(int threads, double seconds);  // GFLOP/s
  int (*tail_units)(int H);                          // units of a one-vector tail panel, or 0
  void (*release_scratch)();                         // free this thread's scratch buffers
};

// Loop policies (dispatch.cpp; set from Python, FASTLSTM_FUSE_ROWS / FASTLSTM_SPLIT at import).
// fuse_rows: fuse the input projection into the recurrent tile when a step has at least that
// many rows; -1 = the kernels' own rule. last_fused: what the last forward did, so tests can
// prove which path ran. split: how the recurrent loops share work over threads, 0 = the
// kernels' rule, 1 = batch rows, 2 = hidden units; last_split: 1 or 2 as the last forward or
// backward loop ran on more than one thread, else 0.
extern std::atomic<long> g_fuse_rows;
extern std::atomic<bool> g_last_fused;
// whether the last forward found h0 all zeros and skipped step 0's h_{t-1}·W_hhᵀ (tests)
extern std::atomic<bool> g_last_h0_zero;
// the threads the last streaming step split its panels over (1: it ran on the caller alone)
extern std::atomic<int> g_last_step_threads;
extern std::atomic<int> g_split;
extern std::atomic<int> g_last_split;
// how many parts the last recurrent loop (forward or backward) split over threads ran for a
// late owner (StepTeam)
extern std::atomic<long> g_last_steals;
// how many participants of the last recurrent loop came late, before running any part, and joined
extern std::atomic<long> g_last_late_joins;
// the backward's chunk of dZ in bytes (see kChunkBytes; -1: the kernels' rule, else chunks of
// that many bytes at any thread count, at least a step each); last_chunks: how many the last
// backward ran
extern std::atomic<long> g_backward_chunk;
extern std::atomic<int> g_last_chunks;
// how the last backward computed dX: 0 not wanted, 1 dot products, 2 dx_panels, 3 Gemm4
extern std::atomic<int> g_last_dx;
// how the last backward computed dW: 0 gemm_tn (transposed back), 1 Gemm4 (copied back), 2 Gemm4
// straight into the arrays
extern std::atomic<int> g_last_dw;
// rows of step 0 whose share of dW_hh the last backward skipped (a zero h0; 0: none)
extern std::atomic<long> g_last_dw_h0_rows;
// Split or serial by measurement (FASTLSTM_SPLIT=measured; choose_split in lstm_kernels.cpp):
// per loop kind and size, the last timings per row-step with one thread and split.
struct SplitTiming {
  uint64_t key = 0;              // 0: empty; a hash of the fields below
  int kind = 0, by_rows = 0, threads = 0;
  long B = 0, Hp = 0, I = 0;
  float ns[2][4] = {};           // the last 4 times per compact row-step: [0] one thread, [1] split
  unsigned calls = 0;
  unsigned runs[2] = {0, 0};     // loops run
  unsigned timed[2] = {0, 0};    // loops timed (not the first after a change of variant)
  int last = -1;                 // the variant of the last loop
  float estimate(int v) const;   // the median of the last (up to) 4 timed (dispatch.cpp)
};
constexpr int kSplitTimings = 256;  // 4-way: a key's entry is one of 4 consecutive slots
extern std::mutex g_split_timing_mu;
extern SplitTiming g_split_timings[kSplitTimings];
extern std::atomic<bool> g_split_adaptive;  // FASTLSTM_SPLIT=measured; false (default): the static rule alone
extern std::atomic<bool> g_prefer_serial;   // the last measured choice was one thread where the rule splits

// dispatch.cpp
std::vector<const KernelTable*> compiled_tables();   // every ISA in this build, best first
std::vector<const KernelTable*> runnable_tables();   // those this CPU can execute
const KernelTable* find_table(const char* name);     // null if not compiled
const KernelTable* active_table();
void set_active_table(const KernelTable* t);

}  // namespace fastlstm
