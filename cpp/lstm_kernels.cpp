// lstm_kernels.cpp: fused LSTM forward and backward for one ISA (float32).
//
// Compiled once per ISA (CMakeLists.txt: FASTLSTM_ISA = generic, avx2, avx512) into namespace
// fastlstm::<isa>; dispatch.cpp picks the best one this CPU runs. The NumPy reference
// (python/fastlstm/backends/reference.py) is the spec; this file computes the same thing fast:
//
//   forward:  Zx = X·W_ihᵀ + b for all real steps in one GEMM, then per step one fused
//             recurrent tile: z = Zx + h_{t-1}·W_hhᵀ accumulated in registers, activations and
//             the cell update in the tile's epilogue (no z round-trip through memory). With
//             many rows per step the tile computes b + x_t·W_ihᵀ itself (see fuse_input).
//   backward: per step only the elementwise dz (cell_backward) and dh_{t-1} = dz·W_hh; after
//             each chunk of steps (all of them, or a few MB of dZ: kChunkBytes) two merged
//             products over its real steps: dX = dZ·W_ih (dot products for small I) and
//             [dW_ih | dW_hh] += dZᵀ·[X | H_prev].
//
// T = time steps, B = batch, I = input, H = hidden; W = floats per vector = hidden units per
// panel, Hp = H rounded up to W (padded units have zero weights and stay exactly 0).
// Gate-interleaved layout: a (·, 4Hp) row holds, per panel p, [i | f | g | o] of units p·W..p·W+W-1,
// so one register tile yields all four gates of the same units. The backward's dZ drops the
// padded units (compact_gate_rows).
// Internal rows are sorted by length (longest first), so at step s the active rows are a
// prefix 0..Bs[s]-1 and padding costs nothing; "compact" arrays hold only real steps.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <numeric>
#include <vector>

#include "lstm.h"
#include "simd.h"
#include "thread_pool.h"

#define FL_UNROLL _Pragma("GCC unroll 32")
#define FL_STR2(x) #x
#define FL_STR(x) FL_STR2(x)
#define FL_CAT2(a, b) a##b
#define FL_CAT(a, b) FL_CAT2(a, b)
#define FL_CAT_TABLE FL_CAT(table_, FASTLSTM_ISA)

namespace fastlstm {
namespace FASTLSTM_ISA {

// Register tiles: MR4 rows × 4 vectors (fused gate tile, big GEMMs), MR2 rows × 2 vectors
// (the per-step backward GEMM, whose output columns follow the 2W-aligned thread split).
#if defined(__AVX512F__)
// MR4 = 5: 20 accumulators. With 6 (24 + 4 weight vectors + the broadcasts > 32 zmm) GCC
// spilled 3 accumulators to the stack in the fused tile (perf annotate at (30,64,8,200)); 5 ran
// the forward 1.05-1.28x faster from (24,32,1,50) to (20,64,1024,1024), 1 thread.
constexpr int MR4 = 5, MR2 = 12;   // MR2: 24 accumulators
#elif defined(__AVX2__)
constexpr int MR4 = 3, MR2 = 6;    // 12 accumulators of 16 ymm
#elif defined(__SSE2__)
constexpr int MR4 = 2, MR2 = 3;    // no FMA: separate mul + add
#else
constexpr int MR4 = 4, MR2 = 4;
#endif
constexpr int KC = 1024;           // K block of the big GEMMs (measured: larger K blocks win on Zen 4)
// M block of the big GEMMs: its packed A (MC × KC floats, ~1 MB on AVX-512) about fills a core's
// L2 (1 MB on Zen 4/5) while every B panel streams past it; 48 register tiles high. Smaller blocks
// (KC = 128 or 256, a B panel's slice then in L1; MC = 500 or 1000 rows) trained within ±3% of
// these on Zen 5 at (100,64,64,256), (50,32,200,200), (25,32,300,300), (50,64,1,512),
// (7,128,16,128), (100,32,10,100): the micro-kernel runs at ~97% of the FMA peak with B in L2.
constexpr int MC = 48 * MR4;
constexpr int KCS = 256;           // K block of the per-step backward GEMM: its W_hh slice stays in L1/L2
                                   // (128, 512, 1024: within ±4%, 7 shapes, Zen 5)

inline fbuf alloc(size_t n) { return alloc_floats(n); }  // uninitialised on purpose

// Per-thread scratch reused across calls (grows, never shrinks; release_scratch() frees it).
// Fresh multi-megabyte buffers cost a page fault per page, the kernel zeroing each one: about
// a third of the weight-packing time of a large layer before this.
enum Slot { S_PACK, S_ZX, S_XC, S_C, S_H, S_WHHB, S_DZ, S_DH, S_DC, S_WIHB, S_DXC, S_XB, S_DWI,
            S_AP, S_GEMMB, S_STEP, NSLOTS };
struct ScratchBuf {
  fbuf p;
  size_t n = 0;
};
thread_local ScratchBuf tls_scratch[NSLOTS];
static float* scratch(Slot s, size_t n) {
  ScratchBuf& b = tls_scratch[s];
  if (b.n < n) {
    b.p.reset();
    b.p = alloc(n);
    b.n = n;
  }
  return b.p.get();
}
static void release_scratch() {
  for (auto& b : tls_scratch) { b.p.reset(); b.n = 0; }
  release_buffer_pool();  // after the scratch, which may have gone to the pool
}

// ---------------------------------------------------------------------------------------------
// Micro-kernel: acc[i][v] += Σ_k A(i,k) · Bp[k][v·W ..]; A(i,k) = a[i·ars + k·acs], Bp is K rows
// of NV vectors (a packed panel) every ldb floats (0: NV·W, a panel exactly NV vectors wide).
#if defined(__AVX2__) && !defined(__AVX512F__) && defined(__x86_64__) && !defined(FL_NO_ASM)
#define FL_MICRO34_ASM 1
// The AVX2 3×4 tile (12 accumulators of 16 ymm) with three weight vectors in registers and the
// fourth a memory operand: 9 loads per 12 FMAs. Written out because GCC keeps only two weight
// vectors in registers and re-loads the other two for every row (11 loads per 12 FMAs), however
// the intrinsics are ordered. A's rows are ra bytes apart, k contiguous: rows of x or h (the
// fused gate tile) and the big GEMMs' A read in place. Forward on Zen 3, both builds in one
// process: 1.03-1.05x at (7,128,16,128), (50,64,100,100), (50,32,200,200), (24,32,1,50);
// training 1.00-1.02x. Written out the same way, the big GEMMs' packed-A tile and a strided one
// for gemm_tn ran within ±1-2% of GCC's code: not taken. The fused tile as two passes of 6 rows
// × 2 vectors (gates i, f, then g, o: half the weight loads per multiply-add, for few rows a
// step) ran the forward 0.79-1.00x of this tile at B = 8 and 0.96-1.01x at B = 32, 64 (Zen 3,
// 1 thread, one build alternating both ways).
// (asm operands: 12 accumulators, a and b read-write, two inputs = GCC's limit of 30)
static inline void micro34_avx2(long K, const float* a, long ra, const float* bp, V (&acc)[3][4]) {
  const float* bend = bp + K * 4 * W;
  __m256 c00 = acc[0][0].v, c01 = acc[0][1].v, c02 = acc[0][2].v, c03 = acc[0][3].v;
  __m256 c10 = acc[1][0].v, c11 = acc[1][1].v, c12 = acc[1][2].v, c13 = acc[1][3].v;
  __m256 c20 = acc[2][0].v, c21 = acc[2][1].v, c22 = acc[2][2].v, c23 = acc[2][3].v;
#define FL_ROW(a1, c0, c1, c2, c3)                      \
  "vbroadcastss " a1 ", %%ymm15\n\t"                   \
  "vfmadd231ps %%ymm12, %%ymm15, %[" c0 "]\n\t"        \
  "vfmadd231ps %%ymm13, %%ymm15, %[" c1 "]\n\t"        \
  "vfmadd231ps %%ymm14, %%ymm15, %[" c2 "]\n\t"        \
  "vfmadd231ps 96(%[b]), %%ymm15, %[" c3 "]\n\t"
  asm volatile(
      "1:\n\t"
      "vmovups (%[b]), %%ymm12\n\t"
      "vmovups 32(%[b]), %%ymm13\n\t"
      "vmovups 64(%[b]), %%ymm14\n\t"
      FL_ROW("(%[a])", "c00", "c01", "c02", "c03")
      FL_ROW("(%[a],%[ra],1)", "c10", "c11", "c12", "c13")
      FL_ROW("(%[a],%[ra],2)", "c20", "c21", "c22", "c23")
      "add $4, %[a]\n\t"
      "sub $-128, %[b]\n\t"
      "cmp %[bend], %[b]\n\t"
      "jne 1b\n\t"
      : [c00] "+x"(c00), [c01] "+x"(c01), [c02] "+x"(c02), [c03] "+x"(c03),
        [c10] "+x"(c10), [c11] "+x"(c11), [c12] "+x"(c12), [c13] "+x"(c13),
        [c20] "+x"(c20), [c21] "+x"(c21), [c22] "+x"(c22), [c23] "+x"(c23),
        [a] "+r"(a), [b] "+r"(bp)
      : [ra] "r"(ra), [bend] "r"(bend)
      : "xmm12", "xmm13", "xmm14", "xmm15", "cc", "memory");
#undef FL_ROW
  acc[0][0].v = c00; acc[0][1].v = c01; acc[0][2].v = c02; acc[0][3].v = c03;
  acc[1][0].v = c10; acc[1][1].v = c11; acc[1][2].v = c12; acc[1][3].v = c13;
  acc[2][0].v = c20; acc[2][1].v = c21; acc[2][2].v = c22; acc[2][3].v = c23;
}

// The 2-row tile (a step's last rows when 3 does not divide them: B = 8 runs 3, 3, 2) the same
// way, all four weight vectors in registers: GCC re-loads each for both rows (10 loads per 8
// FMAs, more than Zen 3's two 256-bit loads a cycle). Forward, 1 thread, both variants
// alternating in one build, 15 rounds, bit-identical results: 1.13-1.14x at (200,2,1,64) and
// (200,2,64,128), where every tile has 2 rows; at B = 5 and 8, a quarter to two fifths of the
// rows, 0.97-1.06x (within the spread).
static inline void micro24_avx2(long K, const float* a, long ra, const float* bp, V (&acc)[2][4]) {
  const float* bend = bp + K * 4 * W;
  __m256 c00 = acc[0][0].v, c01 = acc[0][1].v, c02 = acc[0][2].v, c03 = acc[0][3].v;
  __m256 c10 = acc[1][0].v, c11 = acc[1][1].v, c12 = acc[1][2].v, c13 = acc[1][3].v;
  asm volatile(
      "1:\n\t"
      "vmovups (%[b]), %%ymm12\n\t"
      "vmovups 32(%[b]), %%ymm13\n\t"
      "vmovups 64(%[b]), %%ymm14\n\t"
      "vmovups 96(%[b]), %%ymm11\n\t"
      "vbroadcastss (%[a]), %%ymm15\n\t"
      "vfmadd231ps %%ymm12, %%ymm15, %[c00]\n\t"
      "vfmadd231ps %%ymm13, %%ymm15, %[c01]\n\t"
      "vfmadd231ps %%ymm14, %%ymm15, %[c02]\n\t"
      "vfmadd231ps %%ymm11, %%ymm15, %[c03]\n\t"
      "vbroadcastss (%[a],%[ra],1), %%ymm15\n\t"
      "vfmadd231ps %%ymm12, %%ymm15, %[c10]\n\t"
      "vfmadd231ps %%ymm13, %%ymm15, %[c11]\n\t"
      "vfmadd231ps %%ymm14, %%ymm15, %[c12]\n\t"
      "vfmadd231ps %%ymm11, %%ymm15, %[c13]\n\t"
      "add $4, %[a]\n\t"
      "sub $-128, %[b]\n\t"
      "cmp %[bend], %[b]\n\t"
      "jne 1b\n\t"
      : [c00] "+x"(c00), [c01] "+x"(c01), [c02] "+x"(c02), [c03] "+x"(c03),
        [c10] "+x"(c10), [c11] "+x"(c11), [c12] "+x"(c12), [c13] "+x"(c13),
        [a] "+r"(a), [b] "+r"(bp)
      : [ra] "r"(ra), [bend] "r"(bend)
      : "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "cc", "memory");
  acc[0][0].v = c00; acc[0][1].v = c01; acc[0][2].v = c02; acc[0][3].v = c03;
  acc[1][0].v = c10; acc[1][1].v = c11; acc[1][2].v = c12; acc[1][3].v = c13;
}
#endif

template <int MR, int NV>
static inline void micro(long K, const float* a, long ars, long acs, const float* bp, V (&acc)[MR][NV],
                         long ldb = 0) {
  if (!ldb) ldb = NV * W;
#if defined(FL_MICRO34_ASM)
  if constexpr (MR == 3 && NV == 4) {
    if (ldb == NV * W && acs == 1) {
      if (K > 0) micro34_avx2(K, a, ars * (long)sizeof(float), bp, acc);
      return;
    }
  }
  if constexpr (MR == 2 && NV == 4) {
    if (ldb == NV * W && acs == 1) {
      if (K > 0) micro24_avx2(K, a, ars * (long)sizeof(float), bp, acc);
      return;
    }
  }
#endif
  for (long k = 0; k < K; ++k) {
    V bv[NV];
    FL_UNROLL for (int v = 0; v < NV; ++v) bv[v] = load(bp + k * ldb + v * W);
    FL_UNROLL for (int i = 0; i < MR; ++i) {
      V ai = set1(a[i * ars + k * acs]);
      FL_UNROLL for (int v = 0; v < NV; ++v) acc[i][v] = fmadd(ai, bv[v], acc[i][v]);
    }
  }
}

// Call f.template operator()<m>() for a runtime m in 1..MR (register tiles need compile-time rows).
template <int MR, class F>
static inline void with_rows(int m, F&& f) {
  if constexpr (MR > 1) {
    if (m < MR) return with_rows<MR - 1>(m, f);
  }
  f.template operator()<MR>();
}

// Cover rows 0..rows-1 with ceil(rows/MR) register tiles of near-equal height (32 rows with
// MR = 6: 5,5,5,5,6,6 rather than 6,6,6,6,6,2 — a thin last tile streams the same weights for a
// third of the work); f.template operator()<m>(r0) per tile.
template <int MR, class F>
static inline void for_tiles(int rows, F&& f) {
  const int nt = (rows + MR - 1) / MR;
  for (int t = 0, r0 = 0; t < nt; ++t) {
    const int m = rows / nt + (t < rows % nt ? 1 : 0);
    with_rows<MR>(m, [&]<int M>() { f.template operator()<M>(r0); });
    r0 += m;
  }
}

// ---------------------------------------------------------------------------------------------
// Packing B operands into panels of NR = NV·W columns: panel j is K rows × NR floats.
// fn(j) for every panel j < panels, split over the team when the copy (`work` floats) is big.
// A thread per kPackFloatsPerThread floats copied: a quarter million floats (1 MB) take ~50 µs,
// which a worker's wake-up does not eat up.
constexpr long kPackFloatsPerThread = 1L << 18;

// When the last measured choice (plan_loop) was one thread for a loop the static rule splits,
// the GEMMs and packing copies of the same calls take half the threads: a work item started by a
// descheduled worker holds them up the same way.
static inline bool contended() { return g_prefer_serial.load(std::memory_order_relaxed); }

// Items 0..count-1 handed out one at a time to whoever of a dynamic team asks
// (parallel_run(..., true)): a thread that joins late, or is descheduled on a loaded machine,
// leaves its share to the others instead of holding up the call.
template <class F>
static void for_items(long count, int threads, F&& fn) {
  std::atomic<long> next{0};
  parallel_run((int)std::min<long>(threads, count), [&](int, Team&) {
    for (long j; (j = next.fetch_add(1, std::memory_order_relaxed)) < count;) fn(j);
  }, true);
}

template <class F>
static void for_panels(long panels, long work, int threads, F&& fn) {
  // with the workers asleep, 4x the work per thread (a wake-up costs a 1 MB copy or more)
  const long per = workers_awake() ? kPackFloatsPerThread : 4 * kPackFloatsPerThread;
  const int n = (int)std::min<long>(threads, std::max<long>(1, work / per));
  for_items(panels, contended() ? std::max(1, n / 2) : n, fn);
}

#if defined(__AVX2__)
// out[kk·ldo + u] = src[u·lds + kk] for u, kk < 8: an 8×8 block transposed in registers.
static inline void transpose8x8(const float* src, long lds, float* out, long ldo) {
  __m256 r[8], t[8], q[8];
  for (int u = 0; u < 8; ++u) r[u] = _mm256_loadu_ps(src + u * lds);
  for (int u = 0; u < 8; u += 2) {
    t[u] = _mm256_unpacklo_ps(r[u], r[u + 1]);
    t[u + 1] = _mm256_unpackhi_ps(r[u], r[u + 1]);
  }
  for (int u = 0; u < 8; u += 4) {
    q[u] = _mm256_shuffle_ps(t[u], t[u + 2], 0x44);
    q[u + 1] = _mm256_shuffle_ps(t[u], t[u + 2], 0xEE);
    q[u + 2] = _mm256_shuffle_ps(t[u + 1], t[u + 3], 0x44);
    q[u + 3] = _mm256_shuffle_ps(t[u + 1], t[u + 3], 0xEE);
  }
  for (int kk = 0; kk < 4; ++kk) {
    _mm256_storeu_ps(out + kk * ldo, _mm256_permute2f128_ps(q[kk], q[kk + 4], 0x20));
    _mm256_storeu_ps(out + (kk + 4) * ldo, _mm256_permute2f128_ps(q[kk], q[kk + 4], 0x31));
  }
}
#endif

// B(k, col) = W[colmap[col]·ldw + k] for k < Kvalid (a transposed read of a weight matrix, its
// rows chosen by colmap; -1 = zero column). A group of W columns that maps to W consecutive rows
// (every gate block of a full panel) is transposed 8×8 in registers; a scalar column-at-a-time
// loop made packing a third of a latency-shape forward.
static void pack_cols(const float* Wm, long ldw, long K, long Kvalid, long N, const int* colmap, int NR,
                      float* out, int threads) {
  for_panels((N + NR - 1) / NR, K * N, threads, [&](long j) {
    float* o = out + j * K * NR;
    for (int g = 0; g < NR; g += W) {
      const long c0 = j * NR + g;
      const int r0 = c0 < N ? colmap[c0] : -1;
      bool consecutive = r0 >= 0 && c0 + W <= N;
      for (int u = 1; consecutive && u < W; ++u) consecutive = colmap[c0 + u] == r0 + u;
      long k = 0;
      if (consecutive) {
        const float* src = Wm + (long)r0 * ldw;
#if defined(__AVX2__)
        for (; k + 8 <= Kvalid; k += 8)
          for (int u = 0; u < W; u += 8) transpose8x8(src + u * ldw + k, ldw, o + k * NR + g + u, NR);
#endif
        for (; k < Kvalid; ++k)
          for (int u = 0; u < W; ++u) o[k * NR + g + u] = src[u * ldw + k];
        for (; k < K; ++k) store(o + k * NR + g, zero());
        continue;
      }
      for (int u = 0; u < W; ++u) {
        const long col = c0 + u;
        const int row = col < N ? colmap[col] : -1;
        for (k = 0; k < K; ++k) o[k * NR + g + u] = (row >= 0 && k < Kvalid) ? Wm[(long)row * ldw + k] : 0.f;
      }
    }
  });
}

// B(k, col) = W[rowmap[k]·ldw + col] for col < Nvalid (rowmap null: identity; -1 = zero row).
// Row by row: each row of W is read once, front to back, and cut into every panel. Panel by
// panel, each read one line of every row (rows 2 KB apart at H = 512: a new page every other
// row, which no prefetcher follows): packing W_hh for the backward was a fifth of a B = 1
// training call at (20,1,512,512) on Zen 3. Panel by panel within each block of 32 rows (rows
// then in L1/L2, each panel's writes contiguous) trained 0.76-0.99x at (20,1|8|32,·,300|512)
// and (50,32,200,200): the stores, a new line in every panel, cost the same either way.
static void pack_rows(const float* Wm, long ldw, long K, long N, long Nvalid, const int* rowmap, int NR,
                      float* out, int threads) {
  const long panels = (N + NR - 1) / NR;
  constexpr long kRows = 32;  // rows per work item
  for_panels((K + kRows - 1) / kRows, K * N, threads, [&](long it) {
    for (long k = it * kRows; k < std::min(K, (it + 1) * kRows); ++k) {
      const int row = rowmap ? rowmap[k] : (int)k;
      const float* src = row >= 0 ? Wm + (long)row * ldw : nullptr;
      for (long j = 0; j < panels; ++j) {
        float* ok = out + j * K * NR + k * NR;
        const long c0 = j * NR, nc = src ? std::max<long>(0, std::min<long>(NR, Nvalid - c0)) : 0;
        long c = 0;
        for (; c + W <= nc; c += W) store(ok + c, load(src + c0 + c));
        for (; c < nc; ++c) ok[c] = src[c0 + c];
        for (; c < NR; ++c) ok[c] = 0.f;
      }
    }
  });
}

// Threads for a GEMM-like product: one per kGemmFlopsPerThread of work. Waking a worker and
// pulling the operands into its cache costs a few µs; 2 MFLOP is ~15 µs on one Zen 4 core.
constexpr double kGemmFlopsPerThread = 2e6;
// With the workers asleep (no team call in the last ~150 µs) a product needs kColdGemmFlops
// before it splits: waking a worker costs 60-250 µs on a VM, and the sweep's H = 16, B = 64
// training (only its 13 MFLOP dW product split) ran 2.5x slower on 2 threads than on one.
constexpr double kColdGemmFlops = 4e7;
static int gemm_threads(int threads, double flops) {
  if (threads > 1 && flops < kColdGemmFlops && !workers_awake()) return 1;
  const int n = (int)std::max(1.0, std::min<double>(threads, flops / kGemmFlopsPerThread));
  return contended() ? std::max(1, n / 2) : n;
}

// ---------------------------------------------------------------------------------------------
// GEMM: C(M, N) = A(M, K)·B + bias  (or C += A·B when accumulate), B prepacked by pack_*.
// A(i,k) = A[i·ars + k·acs] (row-major or transposed); only columns < N of C are written.
// C written straight into the gradient arrays (the backward's dW product): row r of C is row
// rows[r] of dW_ih for columns [0, I) and of dW_hh for [I, I + H), I and H multiples of W (no
// vector across the two). A copy of C into them cost 4.5% of training at (20,8,512,512) and 7.5%
// at (20,1,512,512), 1 thread.
struct SplitOut {
  const int* rows;
  float *ih, *hh;
  long I, H;
  float* at(long r, long col) const {
    const long row = rows[r];
    return col < I ? ih + row * I + col : hh + row * H + (col - I);
  }
};

template <int MR, int NV>
struct Gemm {
  static constexpr int NR = NV * W;

  // rows [r0, r0 + m) of C, columns c0.. (N = I + H: whole vectors) through a SplitOut
  template <int TV>
  static void store_tile_split(int m, const V (&acc)[MR][TV], const SplitOut& so, long r0, long c0, long N,
                               bool add_c) {
    for (int i = 0; i < m; ++i) FL_UNROLL for (int v = 0; v < TV; ++v) {
      if (c0 + v * W >= N) break;
      float* d = so.at(r0 + i, c0 + v * W);
      store(d, add_c ? add(acc[i][v], load(d)) : acc[i][v]);
    }
  }

  template <int TV>
  static void store_tile(int m, const V (&acc)[MR][TV], float* C, long ldc, long c0, long N,
                         const float* bias, bool add_c) {
    for (int i = 0; i < m; ++i) {
      float* ci = C + i * ldc + c0;
      FL_UNROLL for (int v = 0; v < TV; ++v) {
        long n = std::min<long>(W, N - c0 - v * W);
        if (n <= 0) break;
        V r = acc[i][v];
        if (n == W) {
          if (add_c) r = add(r, load(ci + v * W));
          else if (bias) r = add(r, load(bias + c0 + v * W));
          store(ci + v * W, r);
        } else {
          if (add_c) r = add(r, load_n(ci + v * W, (int)n));
          else if (bias) r = add(r, load_n(bias + c0 + v * W, (int)n));
          store_n(ci + v * W, r, (int)n);
        }
      }
    }
  }

  // rows [m0, m1) × panels [j0, j1) on one thread; asum (A transposed only): the row sums of A,
  // rows [m0, m1), gathered while A is packed (written by the item of panel 0 only)
  static void block(long m0, long m1, long j0, long j1, long K, const float* A, long ars, long acs,
                    const float* Bp, float* C, long ldc, long N, const float* bias, bool accumulate,
                    float* Ap, float* asum = nullptr, const SplitOut* so = nullptr) {
    if (j0 != 0) asum = nullptr;
    for (long kc0 = 0; kc0 < K; kc0 += KC) {
      long kc = std::min<long>(KC, K - kc0);
      bool add_c = accumulate || kc0 > 0;
      for (long mc0 = m0; mc0 < m1; mc0 += MC) {
        long mc = std::min<long>(MC, m1 - mc0);
        // A rows contiguous in k (acs == 1): whole register tiles read A in place, only a last
        // partial one is packed (zero rows past mc). Packing cost more than it saved: the dX
        // product dZ·W_ih at (100,64,64,256), one 64-column panel, ran at 58% of the FMA peak
        // packed and 79% in place. With several B panels each tile's rows are re-read per panel
        // from L2 in either case; in place was 3-16% faster on five GEMMs (M 640-2048, N
        // 100-512) and trained 1.01-1.08x faster (dX by Gemm4, I > kDotMaxI; Zen 5, 1 and 2
        // threads, alternating builds, 5 rounds).
        const bool in_place = acs == 1;
        // pack A(mc0.., kc0..) into MR-row panels, k-major, zero rows beyond mc
        for (long ir = in_place ? mc / MR * MR : 0; ir < mc; ir += MR) {
          float* ap = Ap + ir * kc;
          int m = (int)std::min<long>(MR, mc - ir);
          const float* a = A + (mc0 + ir) * ars + kc0 * acs;
          // A transposed (the backward's dZᵀ): the MR values of one k are adjacent, one masked
          // vector copy (element at a time, packing took 22% of the dW GEMM at (100,32,10,100)).
          // It is still ~14% of the dW GEMM at (100,64,64,256). Slower on Zen 5: k outer, each
          // row of dZ cut into all panels (backward 0.87x at (100,64,64,256)); 3 panels per walk
          // down k from one vector and a lane permute (training 0.94-0.97x); gemm_tn, which
          // reads dZ in place, up to 16 MB results (training 0.91-1.04x).
#if defined(__AVX2__) && !defined(__AVX512F__)
          // AVX2's masked load and store (vmaskmovps) are slow on AMD, the store microcoded:
          // on Zen 3 the masked copy stalled a fifth of the dW GEMM at (100,64,64,256). A full
          // 3-row tile copies 4 lanes instead (its 4th, the next row of A, exists: ir + 4 <= m1),
          // the store's 4th lane overwritten by the next k's. Training 1.07-1.10x faster at
          // (100,64,64,256), (20,32,1,300), (50,32,200,200), (20,64,512,512), (50,64,1,512),
          // (20,8,256,256) (A/B of two builds in alternating processes, 6 rounds, minimums).
          if constexpr (MR == 3) {
            if (ars == 1 && m == MR && mc0 + ir + 4 <= m1) {
              __m128 sum = _mm_setzero_ps();
              const long k = kc - 1;  // the last k stores 3 lanes: its 4th would pass the panel
              if (asum)
                for (long kk = 0; kk < k; ++kk) {
                  const __m128 v = _mm_loadu_ps(a + kk * acs);
                  _mm_storeu_ps(ap + kk * MR, v);  // its 4th lane is overwritten by the next k's
                  sum = _mm_add_ps(sum, v);
                }
              else
                for (long kk = 0; kk < k; ++kk) _mm_storeu_ps(ap + kk * MR, _mm_loadu_ps(a + kk * acs));
              for (int i = 0; i < MR; ++i) ap[k * MR + i] = a[k * acs + i];
              if (asum) {
                sum = _mm_add_ps(sum, _mm_loadu_ps(a + k * acs));
                alignas(16) float sv[4];
                _mm_store_ps(sv, sum);
                for (int i = 0; i < MR; ++i) {
                  float* out = asum + mc0 + ir + i;
                  *out = kc0 || accumulate ? *out + sv[i] : sv[i];
                }
              }
              continue;
            }
          }
#endif
          if (ars == 1) {
            V sum[(MR + W - 1) / W];
            FL_UNROLL for (int i0 = 0; i0 < MR; i0 += W) sum[i0 / W] = zero();
            for (long k = 0; k < kc; ++k)
              FL_UNROLL for (int i0 = 0; i0 < MR; i0 += W) {
                const int n = std::max(0, std::min(W, m - i0));
                const V v = n ? load_n(a + k * acs + i0, n) : zero();
                store_n(ap + k * MR + i0, v, std::min(W, MR - i0));
                if (asum) sum[i0 / W] = add(sum[i0 / W], v);
              }
            if (asum)
              FL_UNROLL for (int i0 = 0; i0 < MR; i0 += W) {
                const int n = std::max(0, std::min(W, m - i0));
                float* out = asum + mc0 + ir + i0;
                if (n) store_n(out, kc0 || accumulate ? add(sum[i0 / W], load_n(out, n)) : sum[i0 / W], n);
              }
            continue;
          }
          for (long k = 0; k < kc; ++k) {
            for (int i = 0; i < m; ++i) ap[k * MR + i] = a[i * ars + k * acs];
            for (int i = m; i < MR; ++i) ap[k * MR + i] = 0.f;
          }
        }
        for (long j = j0; j < j1; ++j) {
          const float* bp = Bp + j * K * NR + kc0 * NR;
          // the last panel computes only the vectors that hold columns < N: at dX = dZ·W_ih with
          // I = 200 a full last panel made 28% of the product zeros, at dW (N = I + H = 110) 16%
          const int nv = (int)std::min<long>(NV, (N - j * NR + W - 1) / W);
          with_rows<NV>(nv, [&]<int TV>() {
            for (long ir = 0; ir < mc; ir += MR) {
              V acc[MR][TV];
              FL_UNROLL for (int i = 0; i < MR; ++i) FL_UNROLL for (int v = 0; v < TV; ++v) acc[i][v] = zero();
              if (in_place && ir + MR <= mc) micro<MR, TV>(kc, A + (mc0 + ir) * ars + kc0, ars, 1, bp, acc, NR);
              else micro<MR, TV>(kc, Ap + ir * kc, 1, MR, bp, acc, NR);
              if (so) store_tile_split<TV>((int)std::min<long>(MR, mc - ir), acc, *so, mc0 + ir, j * NR, N, add_c);
              else store_tile<TV>((int)std::min<long>(MR, mc - ir), acc, C + (mc0 + ir) * ldc, ldc, j * NR, N, bias, add_c);
            }
          });
        }
      }
    }
  }

  // asum (ars == 1 only): also the row sums of A (M floats), from the packing pass
  // so: C goes through a SplitOut (C and ldc unused)
  static void run(long M, long N, long K, const float* A, long ars, long acs, const float* Bp, float* C,
                  long ldc, const float* bias, bool accumulate, int threads, float* asum = nullptr,
                  const SplitOut* so = nullptr) {
    if (M <= 0 || N <= 0) return;
    long panels = (N + NR - 1) / NR;
    if (K <= 0) {  // empty sum
      if (!accumulate)
        for (long i = 0; i < M; ++i)
          for (long c = 0; c < N; ++c) *(so ? so->at(i, c) : C + i * ldc + c) = bias ? bias[c] : 0.f;
      if (asum && !accumulate) std::fill(asum, asum + M, 0.f);
      return;
    }
    if (ars != 1) asum = nullptr;
    int n = gemm_threads(threads, 2.0 * M * N * K);
    // work items: blocks of rows (about 4 per thread, whole register tiles) or single panels
    const bool split_m = M >= (long)MR * 4 * n || panels == 1;
    const long rows = split_m && n > 1 ? std::max<long>(4L * MR, (M / (4L * n) + MR - 1) / MR * MR) : M;
    const long items = split_m ? (M + rows - 1) / rows : panels;
    for_items(items, n, [&](long it) {
      // sized to the problem: a full MC×KC block is over a megabyte of scratch per thread
      float* Ap = scratch(S_AP, (size_t)std::min<long>(MC, (M + MR - 1) / MR * MR) * std::min<long>(KC, K));
      if (split_m) block(it * rows, std::min(M, (it + 1) * rows), 0, panels, K, A, ars, acs, Bp, C, ldc, N, bias,
                         accumulate, Ap, asum, so);
      else block(0, M, it, it + 1, K, A, ars, acs, Bp, C, ldc, N, bias, accumulate, Ap, asum, so);
    });
  }
};

using Gemm4 = Gemm<MR4, 4>;

// ---------------------------------------------------------------------------------------------
// The step order shared by forward and backward: rows sorted by length (stable, longest
// first), Bs[s] rows active at step s, compact row n = off[s] + j reads/writes row src[n] of
// the (T·B, ·) views of x and y.
struct Order {
  std::vector<int> perm, Bs;
  std::vector<long> off, src;
  std::vector<int> len;  // per internal row
  bool identity = true;  // src[n] == n: x and y can be used in place
  long nact() const { return off.back(); }
};

static Order make_order(int T, int B, const int64_t* lengths, bool reverse, bool batch_first) {
  Order o;
  o.perm.resize(B);
  std::iota(o.perm.begin(), o.perm.end(), 0);
  o.len.assign(B, T);
  if (lengths) {
    std::stable_sort(o.perm.begin(), o.perm.end(), [&](int a, int b) { return lengths[a] > lengths[b]; });
    for (int j = 0; j < B; ++j) o.len[j] = (int)lengths[o.perm[j]];
  }
  int Teff = B ? o.len[0] : 0;
  o.Bs.assign(Teff, 0);
  for (int j = 0; j < B; ++j)
    for (int s = 0; s < o.len[j]; ++s) o.Bs[s]++;
  o.off.assign(Teff + 1, 0);
  for (int s = 0; s < Teff; ++s) o.off[s + 1] = o.off[s] + o.Bs[s];
  o.src.resize(o.off[Teff]);
  for (int s = 0; s < Teff; ++s)
    for (int j = 0; j < o.Bs[s]; ++j) {
      int t = reverse ? o.len[j] - 1 - s : s;
      long n = o.off[s] + j;
      // batch-first x and y are (B·T, ·) views: a caller's (B, T, ·) tensors need no transposed copy
      o.src[n] = batch_first ? (long)o.perm[j] * T + t : (long)t * B + o.perm[j];
      o.identity = o.identity && o.src[n] == n;
    }
  o.identity = o.identity && o.off[Teff] == (long)T * B;
  return o;
}

// The last panel of units when it holds ny <= W/4 real ones (H = 50, 100 on AVX-512): its four
// gates fit one vector, [i | f | g | o] as 4 runs of ny lanes, so the recurrent tile computes one
// vector there instead of four and activates one instead of four (fwd_tile_tail). At H = 50
// the last of 4 panels holds 2 units: 19% of the forward's multiply-adds and of its
// activations went to padding. AVX2 and AVX-512 only (the gates are spread by a lane permute).
static inline int tail_units(int H) {
  const int ny = H % W;
  return W >= 8 && ny > 0 && ny <= W / 4 ? ny : 0;
}

// Gate-interleaved index r = p·4U + q·U + u  ->  row q·H + p·U + u of a PyTorch (4H, ·) weight
// (-1: a zero column). A tail panel (tail_units) holds its gates as 4 runs of ny in its first
// vector, its other three vectors are zero.
static std::vector<int> gate_rows(int H, int Hp) {
  std::vector<int> m(4 * (size_t)Hp, -1);
  const int ny = tail_units(H);
  for (int p = 0; p < Hp / W; ++p)
    for (int q = 0; q < 4; ++q)
      for (int u = 0; u < W; ++u) {
        const int unit = p * W + u;
        if (unit >= H) continue;
        m[p * 4 * W + (ny && p == H / W ? q * ny : q * W) + u] = q * H + unit;
      }
  return m;
}

// Hidden units padded to whole vectors: every padded unit costs its share of all the work
// (the recurrent FLOPs grow as Hp²), so one vector is the padding, not the 2W panel of the
// backward's per-step GEMM (that one pads its own output, see ldd in lstm_backward).
// H = 100 on AVX-512: Hp = 112 instead of 128, 23% fewer recurrent FLOPs.
// dZ's compact order: the gate-interleaved one without the padded units, so the backward's
// GEMMs (K = 4H per step, M = 4H for dW) do no work on them. Only the last panel is partial
// (Hp = H rounded up to W): its ny units hold [i | f | g | o] as 4 runs of ny. Compact index ->
// row of a PyTorch (4H, ·) weight. At H = 50 on AVX-512 the padded layout was 22% zeros.
static std::vector<int> compact_gate_rows(int H) {
  std::vector<int> m(4 * (size_t)H);
  for (int p = 0; p * W < H; ++p) {
    const int ny = std::min(W, H - p * W);
    for (int q = 0; q < 4; ++q)
      for (int u = 0; u < ny; ++u) m[p * 4 * W + q * ny + u] = q * H + p * W + u;
  }
  return m;
}

static inline int padded_hidden(int H) { return (H + W - 1) / W * W; }

// Weights read every step stay cached while they fit half the L3 (32 MB on this EPYC, shared by
// the cores; the other half holds the state, Zx or the workspace streams).
constexpr double kCachedWeightBytes = 16e6;

// On AVX2 (measured on Zen 3: 32 KB L1, 512 KB L2) the merged projection won past 4 MB of
// per-step weights: forward 1.11-1.21x at (20,32,512,512), (20,64,512,512), (20,32,256,512)
// (both paths alternating in one process, 8 rounds; 1.04-1.2x on 2 threads), training within ±6%;
// within ±4% at (20,32,400,400), (20,32,512,256) (3.1 MB), (20,32|64,300,300) (2.9 MB),
// (50,64,200,200) and (50,64,100,100). Again in round 19, I = H = 128-300, B = 8-64, 1 and 2
// threads: merged against fused 0.87-1.17x, with (50,32,200,200) on 2 threads at 1.17x in one
// run and 1.04x in the next: noise both ways, so the threshold stands.
#if defined(__AVX2__) && !defined(__AVX512F__)
constexpr double kFuseMaxWeightBytes = 4e6;
#else
constexpr double kFuseMaxWeightBytes = kCachedWeightBytes;
#endif

// Fuse the input projection into the recurrent tile when a step has rows enough for full
// register tiles, and W_ih, now read every step, is cache-resident (both packed weights within
// 16 MB) or cheaper to re-read than Zx (write, read-for-ownership, read) is to stream.
// Measured with the bench CLI on Zen 4 (FASTLSTM_FUSE_ROWS forcing the path, 2 rounds), fused vs
// merged: (100,32,512,512) −5% at 1 and 2 threads, (100,16,128,128) −1% to −10%,
// (50,64,1024,1024) +0.4% to +3%.
// Few rows a step and many inputs go merged, whatever the weights: the merged GEMM runs the
// input projection over T·B rows in full tiles with W_ih reused from cache, where the fused tile
// would run it over a step's few rows in 3,3,2-row tiles and stream W_ih with W_hh every step.
// Measured on Zen 3 (round 20), fused/merged time, both paths alternating in one process, 11
// rounds: forward B = 8, I = H = 100-300: 1.02-1.10x on 1 thread, 1.06-1.13x on 2; B = 16,
// I = H = 100 and 300: 1.02-1.08x; B = 8, I = 64 or 100, H = 200: 1.03-1.06x; training B = 8,
// I = H = 100-300: 1.01-1.06x. Not with B = 32 (0.95-1.05x), I = 32 (0.93-1.00x) or
// H = I = 50-64 (0.64-1.03x: a tile of 2 rows · 64 units is cheap, and the 2-thread row split
// changes with the weights a step reads). For inference Zx is scratch that stays allocated:
// past kMergedMaxZxBytes (a long sequence) the tile keeps fusing. AVX2 only: on Zen 4 the
// fused tile won at (100,16,128,128) (above), and this rule is not measured there.
// g_fuse_rows >= 0 overrides the rule with a plain row threshold (tests, measurements).
#if defined(__AVX2__) && !defined(__AVX512F__)
constexpr long kMergedMaxRows = 16;
#else
constexpr long kMergedMaxRows = 0;
#endif
constexpr long kMergedMinInputs = 64, kMergedMinHidden = 96;
constexpr double kMergedMaxZxBytes = 32e6;
static bool fuse_input(long rows, long I, long Hp, double zx_bytes, bool training) {
  const long min_rows = g_fuse_rows.load(std::memory_order_relaxed);
  if (I <= 0) return false;
  if (min_rows >= 0) return rows >= min_rows;
  const double weight_bytes = 4.0 * (I + Hp) * 4 * Hp;
  if (rows <= kMergedMaxRows && I >= kMergedMinInputs && Hp >= kMergedMinHidden &&
      (training || zx_bytes <= kMergedMaxZxBytes))
    return false;
  return rows >= 2L * MR4 && (weight_bytes <= kFuseMaxWeightBytes || 3 * rows >= I);
}

// How the recurrent loops (forward, backward) share work over threads: batch rows or hidden
// units. A row split needs no barrier (a row's recurrence never reads another row), but every
// thread streams all the weights each step and gets fewer rows per register tile: used with 8+
// rows per thread and weights within kCachedWeightBytes. Measured with the bench CLI, 2 threads,
// rows vs FASTLSTM_SPLIT=units, median of 3 rounds × 15 repeats: (100,16,128,128) forward −20%,
// training −5%; (100,32,512,512) −5% / +3%.
// Ragged lengths keep the units split: rows end one by one, and a thread left with a few
// short rows runs thin tiles while the other works (the bench's medium-var shape, 2 threads:
// 39.0 ms with rows against 34.9 ms with units, in two full runs of the bench).
// A units split needs every part of step s done before step s+1. With a plain barrier, on a
// loaded machine each step could wait for the other thread's next time slice (measured at load
// 7 on the 2 cores, 2 vs 1 thread: (50,1,256,256) forward 0.52 -> 5.0 ms), so the split ran
// only for steps of 4e6 FLOPs. Now the loops run their steps through a StepTeam
// (thread_pool.h): a thread that is late has its part run by the others, and the team starts
// without waiting for workers to wake (parallel_run's dynamic mode). A late thread then costs a
// step at one-thread speed, so the split pays from small steps on. Measured on the 2-core EPYC,
// forward, 2 threads forced units (StepTeam, the team then waiting for its workers to join) vs
// 1 thread (medians of 200 calls interleaved, shared machine at load ~3.5): (50,1,64,64) 1.02x,
// (50,1,100,100) 1.46x, (50,1,128,128) 1.59x, (50,1,200,200) 1.46x, (20,1,300,300) 1.69x,
// (20,1,512,512) 1.71x, (50,8,50,50) 1.57x: per step a part of
// ~5e4 FLOPs still gains (the sync costs ~0.2-0.5 µs). kUnitsStepFlops = 1e5 (a step of ~1 µs
// on one core) takes those gains with a margin. A worker woken from sleep takes 60-250 µs on
// this VM, and the caller's wake-up call and the cold caches are paid by the call: a split call
// of 1e7 FLOPs (~50 µs per thread) bounds that cost; smaller loops stay on one thread.
// Rows split only when each thread gets kRowsSplitFlops of the call (~100 µs: a cold worker's
// wake-up, ~30-50 µs, is then paid back), else one thread; row splits (then with a team that
// waited for its workers to join) stayed within ±15% of one thread at load 7 at (100,32,10,100),
// (30,64,8,200), (60,32,100,300) but lost 2.3× at (24,32,1,50), whose whole forward is ~0.13 ms.
// A rows split now runs as one StepTeam step too, so a late thread's rows are taken over.
// A forced policy (g_split, tests and measurements) keeps a floor: a step of 2.5e5 FLOPs.
// Small weights split by rows sooner. With the StepTeam a late worker's rows are taken over,
// and a rows split has no per-step exchange of h_{t-1} between the cores (a units split does).
// Forced rows against forced units, 2 threads, quiet machine, forward / training
// speedup over one thread: (24,32,1,50) 1.76 / 1.59 against 1.56 / 1.40; (50,8,1,100) 1.64 / 1.63
// against 1.40 / 1.45; (50,64,1,32), which the old rule ran on one thread, 1.81 / 1.57. Not when
// each thread streams weights past its L2: (20,8,1,256) 1.76 / 1.65 against 1.82 / 1.80 (1 MB of
// W_hh per step), nor with 2 rows per thread: (50,4,32,200) 0.94 / 1.10 against 1.57 / 1.59.
// So a loop the units rule would split goes by rows instead with 4+ rows per thread, the weights
// a step reads within kRowsL2Bytes and kRowsSmallFlops per thread (~25 µs on one core). Loops
// the rule runs on one thread stay there: (50,64,1,32) by rows gained 1.81x / 1.57x in one run
// and lost 0.75x training in another (measured before the thread pool stopped a woken worker
// from sharing its caller's CPU, see leave_cpu in thread_pool.cpp: that run may have had both
// threads on one vCPU).
constexpr double kRowsL2Bytes = 512e3;
constexpr double kRowsSmallFlops = 5e6;    // per thread, whole loop
constexpr double kUnitsStepFlops = 1e5;    // per step
constexpr double kUnitsLoopFlops = 1e7;    // whole loop
constexpr double kRowsSplitFlops = 2e7;    // per thread, whole loop
// A call whose recurrent loop will split by units wakes the workers first (wake_workers), so
// that their wake-up (60-250 µs on the VM) overlaps the weight packing and the input product
// instead of the loop's first steps, which the caller would run alone. At B = 1 a training call
// is mostly packing and the dW output, and the workers slept through it: 2 threads, training
// (20,1,300,300) 1.2-1.7x faster, (20,1,512,512) 1.04-1.24x (A/B of two builds in alternating
// processes). Calls with 4+ rows per thread are left alone: within ±3% there.
static void wake_for_loop(int threads, long T, long B, long Hp) {
  const double step = 2.0 * B * 4 * Hp * Hp;
  if (threads > 1 && B < 4L * threads && step >= kUnitsStepFlops && step * T >= kUnitsLoopFlops)
    wake_workers(threads);
}
struct LoopPlan {
  int threads;   // 1: serial
  bool by_rows;  // else by hidden units
  int slot = -1, variant = 0;  // the measured choice (choose_split), slot -1: none
  bool explore = false, timed = false;
};
// Split or serial, by measurement. The rule above assumes two cores that work at full speed
// and share a cache. On a VM neither holds all the time: beside a busy process on the other
// core, 2 threads ran (50,32,1,50) training at 0.87x and (100,32,10,100) backward at 0.72x of
// one thread (the worker, descheduled in the middle of its part, holds up the step: steals only
// take parts not yet started), and for minutes at a time, with nothing else running in the VM,
// a units split at (24,32,1,50) ran at 0.6x of one thread (both threads on one vCPU, Linux
// having woken the worker on its caller's CPU; thread_pool.cpp's leave_cpu now moves it). So a loop the rule splits is timed, per kind (forward or backward),
// split, threads, rows, hidden size and fused inputs: kFirstRuns loops split, then kFirstRuns
// on one thread, then the one with the lower median of its last 4 times per compact row-step;
// every kExploreEvery loops of that kind the other runs kFirstRuns times, so a change (the load
// gone, the vCPUs moved) is seen within a hundred loops. The first loop after a change of
// variant is not timed: it pays for the change, each thread pulling its share of the weights
// into its own cache, a worker's core waking from idle (the first 2-thread call after 0.15 s
// of idle took 9.3 ms at (20,32,512,512), the next ones 5.6 ms; at (50,64,200,200) the first
// two split loops after one-thread loops took twice the next two), and timed it kept the
// choice on whichever variant ran before.
constexpr unsigned kFirstRuns = 3;
constexpr unsigned kExploreEvery = 64;
enum LoopKind { kForwardLoop = 0, kBackwardLoop = 1 };
struct SplitChoice {
  int slot = -1;   // g_split_timings entry, -1: not measured
  int variant = 0; // 0 one thread, 1 split
  bool explore = false;  // not the faster as timed so far (a first run, or exploration)
  bool timed = false;    // the same variant as the loop before: its time counts
};
// I is part of the key: a forward that fuses the input projection costs more per row-step with
// more inputs (the sweep's I = 1 and I = H cells of one B and H once shared an entry, and the
// choice then followed the other cell's timing).
static SplitChoice choose_split(LoopKind kind, long B, long Hp, long I, const LoopPlan& plan) {
  SplitChoice c;
  if (!g_split_adaptive.load(std::memory_order_relaxed)) return c;
  uint64_t key = 0x9E3779B97F4A7C15ull;
  for (uint64_t v : {(uint64_t)kind, (uint64_t)plan.by_rows, (uint64_t)plan.threads, (uint64_t)B, (uint64_t)Hp,
                     (uint64_t)I})
    key = (key ^ v) * 0x100000001B3ull + (key >> 29);
  key |= 1;  // never 0 (empty)
  const int set = (int)((key * 0x9E3779B97F4A7C15ull) >> 56) & ~3;  // 4 slots of 256
  std::lock_guard<std::mutex> lk(g_split_timing_mu);
  int slot = set;  // the key's slot, else an empty one, else the least used
  for (int i = 0; i < 4; ++i) {
    const SplitTiming& t = g_split_timings[set + i];
    if (t.key == key) { slot = set + i; break; }
    if (g_split_timings[slot].key != 0 && (t.key == 0 || t.calls < g_split_timings[slot].calls)) slot = set + i;
  }
  SplitTiming& e = g_split_timings[slot];
  if (e.key != key) {
    e = SplitTiming{};
    e.key = key; e.kind = kind; e.by_rows = plan.by_rows; e.threads = plan.threads; e.B = B; e.Hp = Hp; e.I = I;
  }
  const unsigned n = e.calls++;
  if (e.runs[1] < kFirstRuns) {  // split first, then one thread, kFirstRuns each
    c.variant = 1;
    c.explore = true;
  } else if (e.runs[0] < kFirstRuns) {
    c.variant = 0;
    c.explore = true;
  } else {
    const int best = e.estimate(1) <= e.estimate(0) ? 1 : 0;
    c.explore = n % kExploreEvery < kFirstRuns;
    c.variant = c.explore ? 1 - best : best;
    g_prefer_serial.store(best == 0, std::memory_order_relaxed);
  }
  c.timed = e.last == c.variant;
  e.last = c.variant;
  ++e.runs[c.variant];
  c.slot = slot;
  return c;
}
template <class Choice>
static void note_split_timing(const Choice& c, double ns_per_row_step) {
  if (c.slot < 0 || !c.timed) return;
  std::lock_guard<std::mutex> lk(g_split_timing_mu);
  SplitTiming& e = g_split_timings[c.slot];
  e.ns[c.variant][e.timed[c.variant]++ % 4] = (float)ns_per_row_step;
}

// A rows split streams all the weights through every core each step. Past a core's L2 (1 MB on
// Zen 4/5) they come from L3 every step, while a units split reads only its share. So the
// forward with up to 16 rows per thread splits units where they split evenly (the imbalance of
// the 2W-unit chunks costs as much: H = 200, 13 vectors in 7 chunks, ran 0.87x of rows).
// Forward, 2 threads, units vs rows, vCPUs far apart (round trip ~410 ns): (20,32,1,300) 1.13x,
// (20,32,300,300) 1.07x, (20,16,512,512) 1.18x; near (45-55 ns): 0.96-1.03x, (20,32,1,512) and
// (20,32,512,512) 1.09x. With 32 rows per thread 0.94-1.04x. Not the backward: its units split
// ran training 0.86-1.01x of rows. Measured with 2 threads only: with more, every thread of a
// units split meets the others every step, and the rule keeps rows until that is measured.
constexpr double kCoreL2Bytes = 1e6;
static bool units_split_evenly(long Hp, int threads) {
  const long chunks = (Hp + 2 * W - 1) / (2 * W);  // split_range's units of 2W hidden units
  const long largest = std::min(Hp, (chunks + threads - 1) / threads * 2 * W);
  return largest * threads <= 1.06 * Hp;
}
static bool units_stream_less(LoopKind kind, long B, long Hp, int threads, double weight_bytes) {
  if (kind != kForwardLoop || threads != 2 || weight_bytes <= kCoreL2Bytes || B > 16L * threads) return false;
  return units_split_evenly(Hp, threads);
}

// A forward whose rows split would leave each thread fewer rows than two full register tiles
// (B = 8 on 2 threads with AVX2: tiles of 2 rows) splits units instead, where they split evenly:
// every tile keeps its full height. Zen 3, 2 threads, units vs rows, forward, 11 rounds in one
// process: (50,8,1,128) 1.16-1.18x, (50,8,32,128) 1.13x, (50,8,128,128) 1.11x, (50,8,1,96) 1.10x,
// (50,8,32,64) 1.07x, (50,8,1,64) 1.04x; uneven (Hp = 104: 4 chunks against 3), rows won:
// (50,8,1,100) 0.93-0.98x. With 8 rows per thread (B = 16) within ±5%; training at B = 8 within
// ±2% (even) or rows ahead (uneven): not changed.
static bool units_fill_tiles(LoopKind kind, long B, long Hp, int threads) {
  return kind == kForwardLoop && threads == 2 && B < 2L * MR4 * threads && units_split_evenly(Hp, threads);
}

// Bs: rows active per step (the Order's, or the Workspace's in backward); weight_bytes: the
// weights a step reads; loop_flops: the whole loop's multiply-adds ×2.
static LoopPlan plan_loop(LoopKind kind, int threads, const std::vector<int>& Bs, long B, long Hp, long I,
                          double weight_bytes, double loop_flops) {
  const int policy = g_split.load(std::memory_order_relaxed);
  const bool ragged = !Bs.empty() && Bs.front() != Bs.back();
  const double step_flops = 2.0 * B * 4 * Hp * Hp;
  const int max_units = (int)((Hp + 2 * W - 1) / (2 * W));  // units are split in 2W chunks
  LoopPlan plan{1, false};
  if (threads > 1 && policy != 0) {
    if (step_flops >= 2.5e5) {
      plan.by_rows = policy == 1 && B >= threads;
      plan.threads = plan.by_rows ? threads : std::min(threads, max_units);
    }
  } else if (threads > 1) {
    const bool rows_small = B >= 4L * threads && weight_bytes <= kRowsL2Bytes && loop_flops / threads >= kRowsSmallFlops;
    if (B >= 8L * threads && weight_bytes <= kCachedWeightBytes && !ragged && loop_flops / threads >= kRowsSplitFlops)
      plan = units_stream_less(kind, B, Hp, threads, weight_bytes) ? LoopPlan{std::min(threads, max_units), false}
                                                                    : LoopPlan{threads, true};
    else if (step_flops >= kUnitsStepFlops && loop_flops >= kUnitsLoopFlops && max_units > 1)
      plan = !ragged && rows_small && !units_fill_tiles(kind, B, Hp, threads) ? LoopPlan{threads, true}
                                                                              : LoopPlan{std::min(threads, max_units), false};
    if (plan.threads > 1) {
      const SplitChoice c = choose_split(kind, B, Hp, I, plan);
      plan.slot = c.slot;
      plan.variant = c.variant;
      plan.explore = c.explore;
      plan.timed = c.timed;
      if (c.slot >= 0 && c.variant == 0) plan.threads = 1;
    }
  }
  g_last_split.store(plan.threads <= 1 ? 0 : plan.by_rows ? 1 : 2, std::memory_order_relaxed);
  return plan;
}

// Rows [r0, r1) of part i of `parts`: contiguous, with near-equal real steps (len: steps per
// row, summing to total).
static void row_range(const std::vector<int>& len, long total, int parts, int i, long* r0, long* r1) {
  const long B = (long)len.size();
  auto bound = [&](int t) -> long {  // first row after part t-1
    if (t <= 0) return 0;
    if (t >= parts) return B;
    long acc = 0;
    for (long j = 0; j < B; ++j)
      if ((acc += len[j]) * parts >= total * t) return j + 1;
    return B;
  };
  *r0 = bound(i);
  *r1 = bound(i + 1);
}

// Gather rows src[n] of a (·, cols) matrix into a compact (N, cols) one.
static void gather_rows(const float* in, long cols, const std::vector<long>& src, float* out) {
  for (size_t n = 0; n < src.size(); ++n) std::memcpy(out + n * cols, in + src[n] * cols, sizeof(float) * cols);
}

// ---------------------------------------------------------------------------------------------
// Forward. One fused tile: rows r0..r0+MR-1 of step s, hidden units of panel p.
struct FwdStep {
  long Hp, ldh, H, I;  // ldh: row stride of the h buffers
  long Kh;             // H, or 0 where h_{t-1} is all zeros (a zero initial state at step 0)
  const float* Whp;    // packed W_hhᵀ, panel p at Whp + p·Hp·4W
  const float* x;      // fused input projection: (rows, I) x_t of this step, else null (zx holds it)
  const float* Wip;    // packed W_ihᵀ, panel p at Wip + p·I·4W (fused only)
  const float* bias;   // (4Hp) packed b (fused only)
  const float* hprev;  // (rows, ldh)
  float* hnext;        // (rows, ldh); only rows < rows_next are stored (training: the next
  long rows_next;      // step's h_{t-1} block; later rows would spill into another step's block)
  float* c;            // (B, Hp), updated in place
  float* zx;           // (rows, 4Hp) Zx of this step; activated gates are written back when training
  float* cout;         // (rows, Hp) c_t for backward, or null
  float* y;            // (T·B, H)
  const long* src;     // y row of each compact row of this step
};

// acc = b + x·W_ihᵀ for rows r0.. of panel p (x rows of I floats; Wip, bias packed).
template <int MR>
static inline void input_part(V (&acc)[MR][4], const float* bias, const float* x, long I, const float* Wip, long p,
                              long r0) {
  FL_UNROLL for (int i = 0; i < MR; ++i) FL_UNROLL for (int q = 0; q < 4; ++q)
    acc[i][q] = load(bias + p * 4 * W + q * W);
  micro<MR, 4>(I, x + r0 * I, I, 1, Wip + p * I * 4 * W, acc);
}

// The cell on one vector of units of R rows: z[r] (i, f, g, o pre-activations) becomes the
// activated gates, and c_t, h_t of each row are returned. Each line runs for all rows before the
// next: R independent chains of σ/tanh for the scheduler. Training (gates not null) stores each
// activated gate of row r at gates + r·ldg as soon as it is computed, which frees its register
// (keeping all 4R live until the end spilled: the training forward ran 0.8-0.95x).
template <int R>
static inline void cell(V (&z)[R][4], const V (&c_prev)[R], V (&c)[R], V (&h)[R], float* gates = nullptr,
                        long ldg = 0) {
  FL_UNROLL for (int q = 0; q < 4; ++q) FL_UNROLL for (int r = 0; r < R; ++r) {
    z[r][q] = q == 2 ? tanh_(z[r][q]) : sigmoid(z[r][q]);   // i, f, o: σ; g: tanh
    if (gates) store(gates + r * ldg + q * W, z[r][q]);
  }
  FL_UNROLL for (int r = 0; r < R; ++r) c[r] = fmadd(z[r][1], c_prev[r], mul(z[r][0], z[r][2]));  // c_t = f ⊙ c_{t-1} + i ⊙ g
  FL_UNROLL for (int r = 0; r < R; ++r) h[r] = mul(z[r][3], tanh_(c[r]));                        // h_t = o ⊙ tanh(c_t)
}

#if defined(__AVX2__)
// The same cell on a tail panel's one vector zt = [i | f | g | o] (4 runs of ny <= W/4 lanes):
// σ and tanh of the whole vector, each gate then permuted to lanes 0..ny-1 of z[q], the layout
// cell() leaves (the backward reads it).
static inline void cell_tail(V zt, int ny, V c_prev, V (&z)[4], V& c, V& h) {
  const V sg = sigmoid(zt), th = tanh_(zt);
  alignas(64) int32_t idx[4][W];
  for (int q = 0; q < 4; ++q)
    for (int l = 0; l < W; ++l) idx[q][l] = q * ny + std::min(l, ny - 1);
  z[0] = permute(sg, idx[0]); z[1] = permute(sg, idx[1]); z[2] = permute(th, idx[2]); z[3] = permute(sg, idx[3]);
  c = fmadd(z[1], c_prev, mul(z[0], z[2]));
  h = mul(z[3], tanh_(c));
}
#endif

// Its backward on the same vector of units (DESIGN.md §1): z holds the activated gates i, f, g, o
// that forward kept, dh = dy_t + the next step's dh_{t-1}. dz gets the pre-activation gradients
// [di, df, dg, do]; dc comes in as the next step's dc_{t-1} and leaves as this step's.
static inline void cell_backward(const V (&z)[4], V c, V c_prev, V dh, V& dc, V (&dz)[4]) {
  const V one = set1(1.f);
  const V i = z[0], f = z[1], g = z[2], o = z[3];
  const V tc = tanh_(c);                                  // h_t = o ⊙ tanh(c_t)
  const V d_o = mul(dh, tc);
  const V dct = fmadd(mul(dh, o), fnmadd(tc, tc, one), dc);
  const V di = mul(dct, g), dg = mul(dct, i), df = mul(dct, c_prev);  // c_t = f ⊙ c_{t-1} + i ⊙ g
  dz[0] = mul(mul(di, i), sub(one, i));                    // σ' = σ(1−σ)
  dz[1] = mul(mul(df, f), sub(one, f));
  dz[2] = mul(dg, fnmadd(g, g, one));                      // tanh' = 1 − tanh²
  dz[3] = mul(mul(d_o, o), sub(one, o));
  dc = mul(dct, f);                                        // dc_{t-1}
}

#if defined(__AVX2__)
// fwd_tile for a tail panel p (tail_units): one vector of z per row, the gates of ny units.
template <int MR>
static inline void fwd_tile_tail(const FwdStep& s, long p, long r0, int ny) {
  const long G = 4 * s.Hp;
  V acc[MR][1];
  if (s.x) {
    FL_UNROLL for (int i = 0; i < MR; ++i) acc[i][0] = load(s.bias + p * 4 * W);
    micro<MR, 1>(s.I, s.x + r0 * s.I, s.I, 1, s.Wip + p * s.I * 4 * W, acc, 4 * W);
  } else {
    FL_UNROLL for (int i = 0; i < MR; ++i) acc[i][0] = load(s.zx + (r0 + i) * G + p * 4 * W);
  }
  micro<MR, 1>(s.Kh, s.hprev + r0 * s.ldh, s.ldh, 1, s.Whp + p * s.Hp * 4 * W, acc, 4 * W);
  const long u0 = p * W;
  FL_UNROLL for (int i = 0; i < MR; ++i) {
    const long row = r0 + i;
    float* cp = s.c + row * s.Hp + u0;
    V z[4], c, h;
    cell_tail(acc[i][0], ny, load(cp), z, c, h);
    c = first_n(c, ny);  // padded units stay exactly 0 (see fwd_tile)
    h = first_n(h, ny);
    store(cp, c);
    if (row < s.rows_next) store(s.hnext + row * s.ldh + u0, h);
    if (s.cout) {
      float* g = s.zx + row * G + p * 4 * W;
      FL_UNROLL for (int q = 0; q < 4; ++q) store(g + q * W, z[q]);
      store(s.cout + row * s.Hp + u0, c);
    }
    store_n(s.y + s.src[row] * s.H + u0, h, ny);
  }
}
#endif

// c_t and h_t of one row of a fused tile to the state, the next step's h block, y, and (training)
// c_t for backward. Padded units (ny < W) stay exactly 0: an inf in x or h0 times their zero
// weights is NaN there, and h_{t-1}'s padded lanes meet zero W_hh rows (NaN · 0 = NaN) in every
// unit of the next step.
static inline void store_state(const FwdStep& s, long row, long u0, int ny, V c, V h) {
  if (ny < W) {
    c = first_n(c, ny);
    h = first_n(h, ny);
  }
  store(s.c + row * s.Hp + u0, c);
  if (row < s.rows_next) store(s.hnext + row * s.ldh + u0, h);
  if (s.cout) store(s.cout + row * s.Hp + u0, c);
  float* yp = s.y + s.src[row] * s.H + u0;
  if (ny == W) store(yp, h); else if (ny > 0) store_n(yp, h, ny);
}

template <int MR>
static inline void fwd_tile(const FwdStep& s, long p, long r0) {
#if defined(__AVX2__)
  if (const int ny = tail_units((int)s.H); ny && p == s.H / W) return fwd_tile_tail<MR>(s, p, r0, ny);
#endif
  const long G = 4 * s.Hp;
  V acc[MR][4];
  if (s.x) {  // z = b + x_t·W_ihᵀ + h_{t-1}·W_hhᵀ, all in registers
    input_part<MR>(acc, s.bias, s.x, s.I, s.Wip, p, r0);
  } else {    // z = Zx (= x_t·W_ihᵀ + b from the merged GEMM) + h_{t-1}·W_hhᵀ
    FL_UNROLL for (int i = 0; i < MR; ++i) FL_UNROLL for (int q = 0; q < 4; ++q)
      acc[i][q] = load(s.zx + (r0 + i) * G + p * 4 * W + q * W);
    // the next tile's Zx lines (the rows below, or the next step's): rows are 4Hp floats apart,
    // a stride no hardware prefetcher follows, and the K loop cannot start until they arrive.
    // Forward, Zen 3, both builds in one process: 1.02-1.04x at (20,1|4|64,·,512|256), 1.00x at
    // (20,32,512,512) (a prefetch never faults, so rows past the last are harmless)
    FL_UNROLL for (int i = 0; i < MR; ++i) for (int b = 0; b < 4 * W; b += 64 / (int)sizeof(float))
      __builtin_prefetch(s.zx + (r0 + MR + i) * G + p * 4 * W + b);
  }
  // K = H, not Hp: the packed rows k >= H are zero (at H = 50 on AVX-512, 22% of the FLOPs)
  micro<MR, 4>(s.Kh, s.hprev + r0 * s.ldh, s.ldh, 1, s.Whp + p * s.Hp * 4 * W, acc);
  const long u0 = p * W;
  const int ny = (int)std::max<long>(0, std::min<long>(W, s.H - u0));
  // All rows at once, gate by gate (cell<MR>). Zen 3, both builds in one process: training
  // 1.01-1.05x over row by row at (7,128,16,128), (100,32,10,100), (150,32,1,64),
  // (20,64,256,256), ±1% at (50,32,200,200), (20,32,512,512); inference 1.01-1.08x over the
  // row-major order of all rows at (7,128,16,128), (100,32,10,100), (24,32,1,50), H = 200, 512.
  V c_prev[MR], c[MR], h[MR];
  FL_UNROLL for (int i = 0; i < MR; ++i) c_prev[i] = load(s.c + (r0 + i) * s.Hp + u0);
  cell<MR>(acc, c_prev, c, h, s.cout ? s.zx + r0 * G + p * 4 * W : nullptr, G);
  FL_UNROLL for (int i = 0; i < MR; ++i) store_state(s, r0 + i, u0, ny, c[i], h[i]);
}

// No Inf or NaN among a[0..n): an exponent of all ones is either (an OR-reduction the compiler
// vectorizes; ~5 µs for W_hh at H = 128).
static bool all_finite(const float* a, size_t n) {
  uint32_t bad = 0;
  for (size_t k = 0; k < n; ++k) {
    uint32_t u;
    std::memcpy(&u, a + k, sizeof u);
    bad |= (~u & 0x7f800000u) == 0;
  }
  return !bad;
}

static bool all_zero(const float* a, size_t n) {
  for (size_t k = 0; k < n; ++k)
    if (a[k] != 0.f) return false;
  return true;
}

// Pack W_ihᵀ and W_hhᵀ into gate-interleaved 4W-wide panels (and b likewise), once per weight version.
static void pack_weights(const float* W_ih, const float* W_hh, const float* b, int I, int H, Packed& P, int threads,
                         bool persistent) {
  const int Hp = padded_hidden(H);
  const long G = 4L * Hp;
  std::vector<int> rows = gate_rows(H, Hp);
  P.I = I; P.H = H; P.Hp = Hp; P.isa = FL_STR(FASTLSTM_ISA);
  const size_t n = (size_t)I * G + (size_t)Hp * G + G;
  float* buf;
  if (persistent) {
    P.storage = alloc_floats_kept(n);
    buf = P.storage.get();
  } else {
    buf = scratch(S_PACK, n);
  }
  float* Wih = buf;
  float* Whh = buf + (size_t)I * G;
  float* bias = Whh + (size_t)Hp * G;
  pack_cols(W_ih, I, I, I, G, rows.data(), 4 * W, Wih, threads);
  pack_cols(W_hh, H, Hp, H, G, rows.data(), 4 * W, Whh, threads);
  for (long r = 0; r < G; ++r) bias[r] = rows[r] >= 0 ? b[rows[r]] : 0.f;
  P.Wih = Wih; P.Whh = Whh; P.bias = bias;
  // a packing kept for many calls is checked once; a call's own packing by lstm_forward, only
  // when its h0 is zero (a 16 MB W_hh at H = 1024 takes a millisecond to scan)
  P.Whh_finite = persistent && all_finite(W_hh, (size_t)4 * H * H);
}

// Runs a recurrent loop as `plan` says, over a StepTeam (thread_pool.h): rows(r0, r1) runs
// every step for the batch rows [r0, r1) (one thread, or one block of rows per part: a single
// StepTeam step, no sync between steps); units(k, u0, u1) runs sub-step k = 0..substeps-1 for
// the hidden units [u0, u1) (every part of sub-step k before any of k+1). A late thread's part
// is run by the others; the team starts at once (dynamic join), workers join as they wake.
// N: the compact rows of all steps (a rows split balances them); timed: of the steps run (-1: N)
template <class Rows, class Units>
static void run_loop(const LoopPlan& plan, const std::vector<int>& len, long N, long Hp, int substeps, Rows&& rows,
                     Units&& units, long timed = -1) {
  StepTeam team(plan.threads);
  auto t0 = std::chrono::steady_clock::now();
  // a measured split that is not the current choice (its first run, or exploration) waits for
  // its workers to join and is timed from there: they slept through the one-thread runs, and a
  // wake-up (60-250 µs on a VM) timed as the split's cost would keep the choice on one thread
  const bool join_first = plan.slot >= 0 && plan.explore && plan.threads > 1;
  parallel_run(plan.threads, [&](int tid, Team& t) {
    if (tid == 0 && join_first) t0 = std::chrono::steady_clock::now();
    const int parts = t.size();
    if (parts == 1) {
      rows(0L, (long)len.size());
    } else if (plan.by_rows) {
      team.run(tid, parts, 1, [&](int, int part) {
        long r0, r1;
        row_range(len, N, parts, part, &r0, &r1);
        rows(r0, r1);
      });
    } else {
      team.run(tid, parts, substeps, [&](int k, int part) {
        long u0, u1;
        split_range(Hp, parts, part, 2 * W, &u0, &u1);
        units(k, u0, u1);
      });
    }
  }, !join_first);
  g_last_steals.store(team.steals(), std::memory_order_relaxed);
  g_last_late_joins.store(team.late_joins(), std::memory_order_relaxed);
  if (plan.slot >= 0)
    note_split_timing(plan, std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() /
                                std::max<long>(timed >= 0 ? timed : N, 1));
}

// The forward loop's buffers (internal row order, see Order).
struct FwdLoop {
  const Order* o;
  long B, H, I, Hp, ldh;
  const Packed* P;
  const float* X;  // (N, I) compact x when the input projection is fused, else null
  float* Zx;       // (N, 4Hp) Zx, then the activated gates when training; null when fused and not training
  float* c;        // (B, Hp) c, updated in place
  float* hbuf;     // training: (N + B, ldh) every h_{t-1}; else (2B, ldh), two alternating blocks
  float* Cn;       // training: (N, Hp) c_t of every real step; else null
  float* y;        // (T·B, H)
  bool h0_zero;    // h_{-1} = 0: step 0 skips h_{t-1}·W_hhᵀ
};

// Step s for rows [r0, r1) and hidden units [u0, u1): one fused tile per panel and rows tile.
static void fwd_step(const FwdLoop& L, int s, long r0, long r1, long u0, long u1) {
  const Order& o = *L.o;
  const long G = 4 * L.Hp;
  const int Teff = (int)o.Bs.size();
  FwdStep st;
  st.Hp = L.Hp; st.ldh = L.ldh; st.H = L.H; st.I = L.I; st.Whp = L.P->Whh;
  st.Kh = s == 0 && L.h0_zero ? 0 : L.H;
  st.x = L.X ? L.X + o.off[s] * L.I : nullptr;
  st.Wip = L.P->Wih; st.bias = L.P->bias;
  if (L.Cn) {  // training
    st.hprev = L.hbuf + o.off[s] * L.ldh;
    st.hnext = L.hbuf + o.off[s + 1] * L.ldh;  // the next step's block: its Bs[s+1] rows
    st.cout = L.Cn + o.off[s] * L.Hp;
    st.rows_next = s + 1 < Teff ? o.Bs[s + 1] : 0;
  } else {
    st.hprev = L.hbuf + (s & 1) * L.B * L.ldh;
    st.hnext = L.hbuf + ((s + 1) & 1) * L.B * L.ldh;
    st.cout = nullptr;
    st.rows_next = L.B;
  }
  st.c = L.c;
  st.zx = L.Zx ? L.Zx + o.off[s] * G : nullptr;
  st.y = L.y;
  st.src = o.src.data() + o.off[s];
  // Panels in alternating directions: a thread's W_hh share a little larger than its L2
  // (1 MB at H = 256 on Zen 4) would miss on every line if always streamed in one order;
  // zig-zag, the lines used last are used first again ((100,1,256,256), A/B of two builds
  // over 6 rounds: 1 thread −8%, 2 threads −3%).
  // Each tile streams its whole panel (K × 4W floats) from L2, not in K blocks kept in L1 across
  // the tiles: on Zen 3 (512 KB L2) the 3×4 tile alone ran at 88-94% of the FMA peak with 33 rows
  // a panel and W_hh of 0.6-4 MB streaming from L3 (a C++ loop of micro34_avx2, fast spells),
  // and K blocks of 64-128 ran it 4-8% slower (their partial sums round-trip through L1);
  // prefetching the next panel into L2 or L1 during the current one, 2-6% slower. In this loop,
  // K blocks of 64-256 ran the forward 0.82-1.15x at B = 8-64, H = 200-512 (noise, both ways).
  const long p0 = u0 / W, np = u1 / W - p0;
  for (long i = 0; i < np; ++i) {
    const long p = (s & 1) ? p0 + np - 1 - i : p0 + i;
    for_tiles<MR4>((int)(r1 - r0), [&]<int M>(int r) { fwd_tile<M>(st, p, r0 + r); });
  }
}

// c and h_{-1} (the first B rows of hbuf) from c0, h0 in internal row order, padded to Hp.
static void load_state(const ForwardArgs& a, const Order& o, long Hp, long ldh, float* c, float* hbuf) {
  const long B = a.B, H = a.H;
  std::memset(c, 0, sizeof(float) * B * Hp);
  std::memset(hbuf, 0, sizeof(float) * B * ldh);  // later rows are written before they are read
  for (long j = 0; j < B; ++j) {
    std::memcpy(c + j * Hp, a.c0 + (long)o.perm[j] * H, sizeof(float) * H);
    std::memcpy(hbuf + j * ldh, a.h0 + (long)o.perm[j] * H, sizeof(float) * H);
  }
}

// hT, cT: c is already per row; h_T is the output of each row's last real step (h0 if none).
static void store_final_state(const ForwardArgs& a, const Order& o, long Hp, const float* c) {
  const long H = a.H;
  for (int j = 0; j < a.B; ++j) {
    const int b = o.perm[j];
    std::memcpy(a.cT + (long)b * H, c + (long)j * Hp, sizeof(float) * H);
    const float* h = a.h0 + (long)b * H;
    if (o.len[j] > 0) h = a.y + o.src[o.off[o.len[j] - 1] + j] * H;
    std::memcpy(a.hT + (long)b * H, h, sizeof(float) * H);
  }
}

static void lstm_forward_packed(const ForwardArgs& a, const Packed& P) {
  const int T = a.T, B = a.B, I = a.I, H = a.H, Hp = P.Hp;
  wake_for_loop(a.threads, T, B, Hp);
  const long G = 4L * Hp;
  const bool training = a.ws != nullptr;
  Order o = make_order(T, B, a.lengths, a.reverse, a.batch_first);
  const int Teff = (int)o.Bs.size();
  const long N = o.nact();
  if (N < (long)T * B) std::memset(a.y, 0, sizeof(float) * (size_t)T * B * H);  // padding outputs are 0

  // Zx = X·W_ihᵀ + b for every real step at once (compact rows). When training it becomes the
  // workspace's gate buffer, so it is owned; otherwise scratch.
  // With enough rows per step the projection is instead fused into the recurrent tile
  // (fuse_input): same register tile, no Zx round-trip through memory (at (100,32,512,512) Zx
  // is 26 MB written and read back). Few rows per step keep the merged GEMM, whose M = T·B
  // rows make full register tiles where a step's single row would not.
  const bool fuse = fuse_input(o.Bs.empty() ? 0 : o.Bs[0], I, Hp, 4.0 * N * G, training);
  fbuf Zx_own, hbuf_own, c0p, Cn;
  float* Zx = training ? (Zx_own = alloc((size_t)N * G)).get() : fuse ? nullptr : scratch(S_ZX, (size_t)N * G);
  const float* X = a.x;
  if (!o.identity) {
    float* Xc = scratch(S_XC, (size_t)N * I);
    gather_rows(a.x, I, o.src, Xc);
    X = Xc;
  }
  g_last_fused.store(fuse, std::memory_order_relaxed);
  if (!fuse) Gemm4::run(N, G, I, X, I, 1, P.Wih, Zx, G, P.bias, false, a.threads);

  // h rows are padded by one cache line (ldh): the register tile reads MR rows per k, and with a
  // power-of-two stride they would all share one L1 set
  const long ldh = Hp + 16;
  const size_t hrows = training ? (size_t)N + B : 2 * (size_t)B;  // training keeps every h_{t-1}
  float* hbuf = training ? (hbuf_own = alloc(hrows * ldh)).get() : scratch(S_H, hrows * ldh);
  float* c = scratch(S_C, (size_t)B * Hp);
  // most calls start from zeros: step 0's h0·W_hhᵀ is skipped then (1/T of the recurrent work;
  // not with an Inf or NaN in W_hh, where IEEE makes it NaN)
  load_state(a, o, Hp, ldh, c, hbuf);
  const bool h0_zero = P.Whh_finite && all_zero(a.h0, (size_t)B * H);
  g_last_h0_zero.store(h0_zero, std::memory_order_relaxed);
  if (training) {
    c0p = alloc((size_t)B * Hp);
    std::memcpy(c0p.get(), c, sizeof(float) * B * Hp);
    Cn = alloc((size_t)N * Hp);
  }

  // Threads split the batch rows (independent for the whole sequence) or the hidden units
  // (every unit needs all of h_{t-1}: step s+1 waits for every part of step s).
  const LoopPlan plan = plan_loop(kForwardLoop, a.threads, o.Bs, B, Hp, fuse ? I : 0, 4.0 * ((fuse ? I : 0) + Hp) * G,  // weights per step
                                  2.0 * N * G * ((fuse ? I : 0) + H));
  const FwdLoop L{&o, B, H, I, Hp, ldh, &P, fuse ? X : nullptr, Zx, c, hbuf, Cn.get(), a.y, h0_zero};
  run_loop(plan, o.len, N, Hp, Teff,
           [&](long r0, long r1) {  // rows are sorted longest first: row r0 ends first
             for (int s = 0; s < Teff && o.Bs[s] > r0; ++s) fwd_step(L, s, r0, std::min<long>(r1, o.Bs[s]), 0, Hp);
           },
           [&](int s, long u0, long u1) { fwd_step(L, s, 0, o.Bs[s], u0, u1); });
  store_final_state(a, o, Hp, c);

  if (training) {  // what backward needs, moved, not copied: the biggest buffers of the call
    Workspace& ws = *a.ws;
    ws.T = T; ws.B = B; ws.I = I; ws.H = H; ws.Hp = Hp; ws.ldh = ldh; ws.reverse = a.reverse;
    ws.batch_first = a.batch_first;
    ws.perm = o.perm; ws.len = o.len; ws.Bs = o.Bs; ws.off = o.off; ws.src = o.src;
    ws.gates = std::move(Zx_own);
    ws.c = std::move(Cn);
    ws.hprev = std::move(hbuf_own);
    ws.c0 = std::move(c0p);
    ws.h0_zero = h0_zero;
    ws.isa = FL_STR(FASTLSTM_ISA);
  }
}

static void lstm_forward(const ForwardArgs& a) {
  wake_for_loop(a.threads, a.T, a.B, padded_hidden(a.H));
  Packed P;
  pack_weights(a.W_ih, a.W_hh, a.b, a.I, a.H, P, a.threads, false);
  P.Whh_finite = all_zero(a.h0, (size_t)a.B * a.H) && all_finite(a.W_hh, (size_t)4 * a.H * a.H);
  lstm_forward_packed(a, P);
}

// One time step for streaming (T = 1, state carried by the caller, updated in place):
// z = x·W_ihᵀ + h·W_hhᵀ + b in one register tile, no buffers beyond a copy of h_{t-1}.
template <int MR>
static inline void step_tile(const Packed& P, const float* x, const float* hprev, float* h, float* c,
                             long p, long r0) {
  const long H = P.H;
#if defined(__AVX2__)
  if (const int ny = tail_units((int)H); ny && p == H / W) {  // a tail panel (see fwd_tile_tail)
    V acc[MR][1];
    FL_UNROLL for (int i = 0; i < MR; ++i) acc[i][0] = load(P.bias + p * 4 * W);
    micro<MR, 1>(P.I, x + r0 * P.I, P.I, 1, P.Wih + p * P.I * 4 * W, acc, 4 * W);
    micro<MR, 1>(H, hprev + r0 * H, H, 1, P.Whh + p * P.Hp * 4 * W, acc, 4 * W);
    FL_UNROLL for (int i = 0; i < MR; ++i) {
      float* cp = c + (r0 + i) * H + p * W;
      V z[4], cv, hv;
      cell_tail(acc[i][0], ny, load_n(cp, ny), z, cv, hv);
      store_n(cp, cv, ny);
      store_n(h + (r0 + i) * H + p * W, hv, ny);
    }
    return;
  }
#endif
  V acc[MR][4];
  input_part<MR>(acc, P.bias, x, P.I, P.Wih, p, r0);
  micro<MR, 4>(H, hprev + r0 * H, H, 1, P.Whh + p * P.Hp * 4 * W, acc);  // rows k >= H are 0
  const long u0 = p * W;
  const int n = (int)std::min<long>(W, H - u0);
  if (n <= 0) return;
  V cprev[MR], cv[MR], hv[MR];
  FL_UNROLL for (int i = 0; i < MR; ++i) {
    const float* cp = c + (r0 + i) * H + u0;
    cprev[i] = n == W ? load(cp) : load_n(cp, n);
  }
  cell<MR>(acc, cprev, cv, hv);
  FL_UNROLL for (int i = 0; i < MR; ++i) {
    float* cp = c + (r0 + i) * H + u0;
    float* hp = h + (r0 + i) * H + u0;
    if (n == W) { store(cp, cv[i]); store(hp, hv[i]); } else { store_n(cp, cv[i], n); store_n(hp, hv[i], n); }
  }
}

// A step's panels of units are independent: with threads they are handed out one at a time
// (for_items, a dynamic team). A step streams all its packed weights (8 MB at H = I = 512) for
// little arithmetic, and a second core brings its own L2 and bandwidth, so a step pays for a
// split from far less work than a GEMM does (kGemmFlopsPerThread). Zen 3 VM, 2 threads, I = H,
// one build alternating serial and split (time per step, serial / split):
//   steps back to back: B = 1, H = 64 0.68-0.89x, 80 1.00x, 96 1.18x, 128 1.36-1.41x, 256
//     1.48x, 512 1.69x; B = 4, H = 32 0.75x, 64 1.24x;
//   0.3-1 ms of other work between steps (the workers asleep at each step): H = 128
//     0.64-0.72x, 256 0.90-0.96x, 300 1.41x, 384 1.28-1.43x, 512 1.45-1.78x.
// So a step splits from kStepSplitFlops when the workers are spinning (a team call, or this
// thread's previous step, ended under 150 µs ago: a stream of steps keeps them awake after the
// first split), and from kStepColdSplitFlops in any case.
constexpr double kStepSplitFlops = 1.2e5;
constexpr double kStepColdSplitFlops = 1.25e6;
constexpr int64_t kStepStreamNs = 150000;
thread_local int64_t tls_last_step_end_ns = INT64_MIN / 2;
static int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

static void lstm_step(const Packed& P, const float* x, float* h, float* c, int B, int threads) {
  DenormalGuard guard;
  const long H = P.H, panels = P.Hp / W;
  float* hprev = scratch(S_STEP, (size_t)B * H);
  std::memcpy(hprev, h, sizeof(float) * B * H);
  const double flops = 2.0 * B * 4 * P.Hp * (P.I + H);
  const bool may_split = threads > 1 && panels > 1 && flops >= kStepSplitFlops;  // else no clock reads
  int n = 1;
  if (may_split && (flops >= kStepColdSplitFlops || workers_awake() ||
                    steady_ns() - tls_last_step_end_ns < kStepStreamNs))
    n = (int)std::min<long>(threads, panels);
  g_last_step_threads.store(n, std::memory_order_relaxed);
  const auto panel = [&](long p) {
    for_tiles<MR4>(B, [&]<int M>(int r0) { step_tile<M>(P, x, hprev, h, c, p, r0); });
  };
  if (n > 1) for_items(panels, n, panel);
  else for (long p = 0; p < panels; ++p) panel(p);
  if (may_split) tls_last_step_end_ns = steady_ns();
}

// ---------------------------------------------------------------------------------------------
// Backward's merged-GEMM helpers.

// dX = dZ·W_ih for small I as I dot products of length 4H per row: WT = W_ihᵀ with its G = 4H
// columns in dZ's compact gate order (I rows of G). A 4W-wide GEMM panel computes 64 columns
// (AVX-512) for I of them: at (24,32,1,50) that padded product cost as many FLOPs as the whole
// forward. Tiles of RB rows × IB inputs share each load; one horizontal sum per output.
constexpr int kDotMaxI = 16;
template <int RB, int IB>
static inline void dot_tile(long G, const float* dz, long ldz, const float* WT, float* const* out) {
  V acc[RB][IB];
  FL_UNROLL for (int r = 0; r < RB; ++r) FL_UNROLL for (int i = 0; i < IB; ++i) acc[r][i] = zero();
  long k = 0;
  for (; k + W <= G; k += W) {
    V w[IB];
    FL_UNROLL for (int i = 0; i < IB; ++i) w[i] = load(WT + i * G + k);
    FL_UNROLL for (int r = 0; r < RB; ++r) {
      const V d = load(dz + r * ldz + k);
      FL_UNROLL for (int i = 0; i < IB; ++i) acc[r][i] = fmadd(d, w[i], acc[r][i]);
    }
  }
  if (k < G) {
    const int n = (int)(G - k);
    V w[IB];
    FL_UNROLL for (int i = 0; i < IB; ++i) w[i] = load_n(WT + i * G + k, n);
    FL_UNROLL for (int r = 0; r < RB; ++r) {
      const V d = load_n(dz + r * ldz + k, n);
      FL_UNROLL for (int i = 0; i < IB; ++i) acc[r][i] = fmadd(d, w[i], acc[r][i]);
    }
  }
  FL_UNROLL for (int r = 0; r < RB; ++r) FL_UNROLL for (int i = 0; i < IB; ++i) out[r][i] = hsum(acc[r][i]);
}

// dX rows n of (N, I) compact dZ rows; output row src[n] (src null: n).
static void dx_dots(long N, long I, long G, const float* dZ, long ldz, const float* WT, float* dx, const long* src,
                    int threads) {
  constexpr int RB = 4, IB = 4;
  const int nth = gemm_threads(threads, 2.0 * N * I * G);
  const long rows = std::max<long>(64, (N / (4L * nth) + RB - 1) / RB * RB);  // ~4 items per thread
  for_items((N + rows - 1) / rows, nth, [&](long it) {
    const long n0 = it * rows, n1 = std::min(N, n0 + rows);
    for (long n = n0; n < n1; n += RB) {
      const int rb = (int)std::min<long>(RB, n1 - n);
      float* out[RB];
      for (int r = 0; r < rb; ++r) out[r] = dx + (src ? src[n + r] : n + r) * I;
      for (long i = 0; i < I; i += IB) {
        const int ib = (int)std::min<long>(IB, I - i);
        float* o[RB];
        for (int r = 0; r < rb; ++r) o[r] = out[r] + i;
        const float* dz = dZ + n * ldz;
        with_rows<RB>(rb, [&]<int R>() {
          with_rows<IB>(ib, [&]<int C>() { dot_tile<R, C>(G, dz, ldz, WT + i * G, o); });
        });
      }
    }
  });
}

// dX = dZ·W_ih as a GEMM with I on the vector lanes, for I that fills most of two vectors
// (kDxPanelMinI..2W: 12-16 on AVX2): Wp = W_ihᵀ packed as G compact gate rows of 2W floats
// (pack_rows), register tiles of MR2 dZ rows × 2 vectors, the per-step dh product's tile. The dot
// products pay a horizontal sum per output and re-stream W_ihᵀ (32 KB at I = 16) for each block
// of four inputs. Training on Zen 3, both builds in one process: 1.02-1.04x at (7,128,16,128)
// and (50,32,16,64), 0.99-1.03x at (4,128,16,128) (1 and 2 threads). With one vector (I = 7, 8:
// 12 rows × 1 vector) it ran 0.98-0.99x: those stay dot products.
constexpr long kDxPanelMinI = 3 * W / 2;
constexpr bool kDxPanels = W == 8;  // measured on AVX2 only (AVX-512's I <= kDotMaxI is one vector)
static void dx_panels(long N, long I, long G, const float* dZ, long ldz, const float* Wp, float* dx, const long* src,
                      int threads) {
  const int nth = gemm_threads(threads, 2.0 * N * 2 * W * G);
  const long rows = std::max<long>(64, (N / (4L * nth) + MR2 - 1) / MR2 * MR2);  // ~4 items per thread
  for_items((N + rows - 1) / rows, nth, [&](long it) {
    const long n0 = it * rows, n1 = std::min(N, n0 + rows);
    for_tiles<MR2>((int)(n1 - n0), [&]<int M>(int r) {
      const long r0 = n0 + r;
      V acc[M][2];
      FL_UNROLL for (int i = 0; i < M; ++i) acc[i][0] = acc[i][1] = zero();
      micro<M, 2>(G, dZ + r0 * ldz, ldz, 1, Wp, acc);
      FL_UNROLL for (int i = 0; i < M; ++i) {
        float* o = dx + (src ? src[r0 + i] : r0 + i) * I;
        store(o, acc[i][0]);
        if (I == 2 * W) store(o + W, acc[i][1]); else store_n(o + W, acc[i][1], (int)(I - W));
      }
    });
  });
}

// d[0..n) = s[0..n) as whole vectors and one masked tail: inline, where a memcpy call per run
// cost more than the copy (pack_xh's runs are 1-64 floats).
static inline void copy_floats(float* d, const float* s, long n) {
  long k = 0;
  for (; k + W <= n; k += W) store(d + k, load(s + k));
  if (k < n) store_n(d + k, load_n(s + k, (int)(n - k)), (int)(n - k));
}

// The dW product, [dW_ih | dW_hh | db] over all real steps, in one of two orientations:
//   small result (4H·(I + H + 1) floats up to kTnMaxC): [X | H_prev | 1]ᵀ·dZ by gemm_tn, dZ,
//     h_{t-1} and (unless permuted) x read in place;
//   large: dZᵀ·[X | H_prev | 1] by Gemm4, dZᵀ packed block by block (pack_xh_panels).
// gemm_tn reloads its result every KCT rows of K, which is cheap while the result stays in L2;
// at (20,64,512,512) (an 8 MB result) it ran the backward 5-13% slower than Gemm4. Gemm4's
// packing of dZᵀ walks dZ a cache line per row: a fifth of the product at (150,32,1,64), where
// gemm_tn ran the backward 1.2-1.3x faster (1 thread).
constexpr long kTnMaxC = 1L << 18;  // floats: a 1 MB result

// The backward in chunks of steps, each chunk's products (dX, dW) right after its steps while its
// dZ is still cached, instead of one pass over all of dZ after the loop: dZ (4H floats a row) is
// the biggest array the backward writes, 26 MB at (100,64,64,256), and the products read it
// back from DRAM. A chunk holds at least kChunkBytes of dZ and twice the dW result, which every
// chunk re-reads and re-writes; a result past kChunkMaxResult costs more than the chunks save:
// (50,64,1,512), 4.2 MB, 1.00x on one thread and 0.91-0.95x on two; (20,64,512,512), 8.4 MB,
// 0.94-0.95x on one. Measured on Zen 5, training (forward + backward) against one pass, builds
// in alternating processes, 5 rounds: 1 thread (100,64,64,256) 1.03-1.05x, (150,32,1,64)
// 1.04-1.12x, (100,32,10,100) 1.03-1.07x, (50,64,128,128) 1.01-1.09x, (50,64,256,256)
// 1.01-1.04x, others within ±2%; 2 threads (vCPUs close) (100,64,64,256) 1.03x, (150,32,1,64)
// 1.06x, others 1.00-1.02x. Chunks of 1 or 4 MB ran within ±2% of 2 MB. g_backward_chunk >= 0
// overrides the rule (tests, measurements).
constexpr long kChunkBytes = 2L << 20;
constexpr long kChunkMaxResult = 3L << 20;

// [X | H_prev | 1] as the B operand of [dW_ih | dW_hh | db] = dZᵀ·[X | H_prev | 1]: K = N
// compact rows, I + H (+ 1 with ones) columns in 4W-wide panels; X row n is x row src[n]
// (src null: n). The column of ones gives db = Σ_n dz_n from the same GEMM (used where the
// last vector has a free lane, see lstm_backward).
static void pack_xh_panels(const float* x, long I, const long* src, const float* hp, long ldh, long H, bool ones,
                           long N, float* out, int threads) {
  constexpr long NR = 4 * W;
  const long cols = I + H + (ones ? 1 : 0);
  for_panels((cols + NR - 1) / NR, N * cols, threads, [&](long j) {
    float* o = out + j * N * NR;
    const long c0 = j * NR;
    // this panel's columns [c0, c0 + NR): nx of x from column c0, then nh of h_{t-1} from
    // column hc0, then the ones column if it falls here, then zeros
    const long nx = std::max<long>(0, std::min<long>(NR, I - c0));
    const long hc0 = std::max<long>(0, c0 - I);
    const long nh = std::max<long>(0, std::min<long>(NR - nx, H - hc0));
    const long n1 = ones && I + H >= c0 && I + H < c0 + NR ? 1 : 0;
    for (long n = 0; n < N; ++n) {
      float* on = o + n * NR;
      // zeros first, then the runs over them (a run's masked tail leaves the lanes after it)
      if (nx + nh + n1 < NR) FL_UNROLL for (int v = 0; v < 4; ++v) store(on + v * W, zero());
      if (nx) copy_floats(on, x + (src ? src[n] : n) * I + c0, nx);
      if (nh) copy_floats(on + nx, hp + n * ldh + hc0, nh);
      if (n1) on[nx + nh] = 1.f;
    }
  });
}

// C(F, G) = Xᵀ·Z, C(f, g) = Σ_k X(k, f)·Z(k, g), X given as blocks of its columns f (TnX: block
// b's column f is p[k·ld + f], f < cols; ld 0 repeats one value for every k, the ones column of
// db), read in place; Z (ldz) row-major over k and read in place, the vector operand (its rows
// padded to whole vectors, the padding finite); C row-major, ldc ≥ G rounded up to W (whole
// vectors stored), the blocks' rows in order, F = Σ cols. Z, the big operand, is read once, a
// KCT × 4W panel at a time (32 KB on AVX-512: reused from L1 by every register tile of F), X from
// L2. Threads take ranges of whole vectors of G, so each reads its own part of Z. A block with p
// null is skipped: its rows of C keep what they hold (accumulate only). X packed per thread once
// per K block (each tile's columns as contiguous runs, reused by every Z panel) trained
// 0.98-1.04x at (24,32,1,50), (7,128,16,128), (100,32,10,100), (50,64,100,100) (Zen 3, one
// build alternating both ways): X's strided reads are not what limits it.
constexpr long KCT = 128;
struct TnX {
  const float* p;
  long ld, cols;
};
template <int NB>
static void gemm_tn(const TnX (&X)[NB], long G, long K, const float* Z, long ldz, float* C, long ldc, int threads,
                    bool accumulate = false) {
  const long nvec = (G + W - 1) / W;
  long F = 0;
  for (const TnX& b : X) F += b.cols;
  if (K <= 0) {  // an empty sum (every length 0)
    if (!accumulate) std::memset(C, 0, sizeof(float) * F * ldc);
    return;
  }
  const int n = (int)std::min<long>(gemm_threads(threads, 2.0 * F * G * K), nvec);
  for_items(n, n, [&](long it) {
    const long v0 = nvec * it / n, v1 = nvec * (it + 1) / n;
    const long panels = (v1 - v0 + 3) / 4;  // of near-equal width: 13 vectors as 4,3,3,3, not 4,4,4,1
    for (long kc0 = 0; kc0 < K; kc0 += KCT) {
      const long kc = std::min(KCT, K - kc0);
      for (long p = 0; p < panels; ++p) {
        const long pv0 = v0 + (v1 - v0) * p / panels, pv1 = v0 + (v1 - v0) * (p + 1) / panels;
        with_rows<4>((int)(pv1 - pv0), [&]<int NV>() {
          long f0 = 0;  // C row of the block's first column
          for (const TnX& b : X) {
            if (!b.p) {
              f0 += b.cols;
              continue;
            }
            for_tiles<MR4>((int)b.cols, [&]<int M>(int r0) {
              float* c = C + (f0 + r0) * ldc + pv0 * W;
              V acc[M][NV];
              FL_UNROLL for (int i = 0; i < M; ++i) FL_UNROLL for (int v = 0; v < NV; ++v)
                acc[i][v] = kc0 || accumulate ? load(c + i * ldc + v * W) : zero();
              micro<M, NV>(kc, b.p + kc0 * b.ld + r0, 1, b.ld, Z + kc0 * ldz + pv0 * W, acc, ldz);
              FL_UNROLL for (int i = 0; i < M; ++i) FL_UNROLL for (int v = 0; v < NV; ++v)
                store(c + i * ldc + v * W, acc[i][v]);
            });
            f0 += b.cols;
          }
        });
      }
    }
  });
}

// out[rows[r]·ldo + f] = in[f·ldi + r] for f < nf, r < nr: the dW product's result transposed
// back into the weights' gate rows. Runs of 8 r that map to 8 consecutive rows (every gate block
// of a full panel) go as 8×8 register transposes; element by element this was 5% of the backward
// at (20,64,512,512).
static void scatter_transposed(const float* in, long ldi, long nf, long nr, const int* rows, float* out, long ldo) {
  long r0 = 0;
#if defined(__AVX2__)
  for (; r0 + 8 <= nr; r0 += 8) {
    bool consecutive = true;
    for (int u = 1; consecutive && u < 8; ++u) consecutive = rows[r0 + u] == rows[r0] + u;
    long f = 0;
    if (consecutive)
      for (; f + 8 <= nf; f += 8) transpose8x8(in + f * ldi + r0, ldi, out + (long)rows[r0] * ldo + f, ldo);
    for (; f < nf; ++f)
      for (int u = 0; u < 8; ++u) out[(long)rows[r0 + u] * ldo + f] = in[f * ldi + r0 + u];
  }
#endif
  for (; r0 < nr; ++r0)
    for (long f = 0; f < nf; ++f) out[(long)rows[r0] * ldo + f] = in[f * ldi + r0];
}

// ---------------------------------------------------------------------------------------------
// Backward. Per step: the elementwise part (cell_backward), then dh_{t-1} = dz·W_hh; threads
// split the rows or the units as plan_loop decides, as in forward.
static void lstm_backward(const BackwardArgs& a) {
  const Workspace& ws = *a.ws;
  const int T = ws.T, B = ws.B, I = ws.I, H = ws.H, Hp = ws.Hp;
  const long G = 4L * Hp;
  const int Teff = (int)ws.Bs.size();
  const long N = ws.off.back();
  const long Gz = 4L * H;  // dZ's compact width (compact_gate_rows)
  std::vector<int> rows = compact_gate_rows(H);
  wake_for_loop(a.threads, T, B, Hp);

  // W_hh as the B operand of dz·W_hh: K = 4H compact gate rows, ldd columns, 2W-wide panels;
  // dh rows are ldd = Hp rounded up to 2W long (a last panel past Hp computes one vector)
  const long ldd = (Hp + 2 * W - 1) / (2 * W) * (2 * W);
  float* Whh_b = scratch(S_WHHB, (size_t)Gz * ldd);
  pack_rows(a.W_hh, H, Gz, ldd, H, rows.data(), 2 * W, Whh_b, a.threads);

  // dZ rows are padded by one cache line: with a power-of-two stride the 12 rows one register
  // tile reads per k all fall into the same L1 set (8 ways) and evict each other.
  const long ldz = (Gz + 15) / 16 * 16 + 16;
  // Steps run in chunks (see kChunkBytes) of whole steps, at least one; dZ holds one chunk.
  const long row_bytes = ldz * (long)sizeof(float);
  const long forced = g_backward_chunk.load(std::memory_order_relaxed);
  const long result_bytes = Gz * (I + H + 1) * (long)sizeof(float);  // dW, re-read by every chunk
  const long chunk_bytes = forced >= 0 ? forced : std::max(kChunkBytes, 2 * result_bytes);
  const long chunk_rows = forced >= 0 || (result_bytes <= kChunkMaxResult && N * row_bytes > 2 * chunk_bytes)
                              ? std::max<long>(1, chunk_bytes / row_bytes) : N;
  const long zrows = std::max<long>(std::min(N, std::max<long>(chunk_rows, B)), 1);
  float* dZ = scratch(S_DZ, (size_t)zrows * ldz);
  long z0 = 0;  // compact row of dZ's first row: the chunk's first
  // gemm_tn reads dZ rows in whole vectors: the lanes past 4H are zeros (stale scratch might
  // hold denormals or NaNs, slow or poisonous in lanes that are otherwise thrown away)
  if (Gz % W)
    for (long n = 0; n < zrows; ++n) std::memset(dZ + n * ldz + Gz, 0, sizeof(float) * (W - Gz % W));
  float* dh = scratch(S_DH, (size_t)B * ldd);
  float* dc = scratch(S_DC, (size_t)B * Hp);
  std::memset(dh, 0, sizeof(float) * B * ldd);
  std::memset(dc, 0, sizeof(float) * B * Hp);
  for (int j = 0; j < B; ++j) {
    std::memcpy(dh + (long)j * ldd, a.dhT + (long)ws.perm[j] * H, sizeof(float) * H);
    std::memcpy(dc + (long)j * Hp, a.dcT + (long)ws.perm[j] * H, sizeof(float) * H);
  }

  const LoopPlan plan = plan_loop(kBackwardLoop, a.threads, ws.Bs, B, Hp, 0, 4.0 * Gz * ldd, 2.0 * N * Gz * ldd);
  // step s, elementwise part: dz and dc_{t-1} for rows [j0, j1) and units [u0, u1)
  auto cell_part = [&](int s, long j0, long j1, long u0, long u1) {
    const long n0 = ws.off[s];
    for (long j = j0; j < j1; ++j) {
      const long n = n0 + j;
      const float* dyr = a.dy + ws.src[n] * H;
      const float* gr = ws.gates.get() + n * G;
      const float* cr = ws.c.get() + n * Hp;
      const float* cpr = s > 0 ? ws.c.get() + (ws.off[s - 1] + j) * Hp : ws.c0.get() + (long)j * Hp;
      float* dzr = dZ + (n - z0) * ldz;
      for (long p = u0 / W; p < u1 / W; ++p) {
        const long u = p * W;
        const int ny = (int)std::max<long>(0, std::min<long>(W, H - u));
        const float* g = gr + p * 4 * W;
        const V z[4] = {load(g), load(g + W), load(g + 2 * W), load(g + 3 * W)};
        V dhv = add(load(dh + (long)j * ldd + u), ny == W ? load(dyr + u) : load_n(dyr + u, ny));
        V dcv = load(dc + (long)j * Hp + u);
        V dz[4];
        cell_backward(z, load(cr + u), load(cpr + u), dhv, dcv, dz);
        store(dc + (long)j * Hp + u, dcv);
        float* dzp = dzr + p * 4 * W;  // compact: the padded units' lanes are not stored
        if (ny == W) FL_UNROLL for (int q = 0; q < 4; ++q) store(dzp + q * W, dz[q]);
        else FL_UNROLL for (int q = 0; q < 4; ++q) store_n(dzp + q * ny, dz[q], ny);
      }
    }
  };
  // step s, recurrent part: dh_{t-1}[j0:j1, u0:u1] = dz · W_hh[:, u0:u1]   (z_t = ... + h_{t-1}·W_hhᵀ)
  // K-blocked so a KCS × 2W slice of W_hh stays in L1 across all row tiles of the step
  auto dh_part = [&](int s, long j0, long j1, long u0, long u1) {
    if (s == 0 && !a.dh0) return;  // dh_{-1} = dh0, not wanted
    const float* dzs = dZ + (ws.off[s] - z0) * ldz;
    for (long kc0 = 0; kc0 < Gz; kc0 += KCS) {
      const long kc = std::min<long>(KCS, Gz - kc0);
      for (long jj = u0 / (2 * W); jj < (u1 + 2 * W - 1) / (2 * W); ++jj) {
        const float* bp = Whh_b + jj * Gz * 2 * W + kc0 * 2 * W;
        // a panel past Hp computes its first vector only: H = 100 on AVX-512 (Hp = 112 in
        // 2W = 32-unit panels) would otherwise compute 128 columns, 14% of them for nothing
        with_rows<2>(jj * 2 * W + W < Hp ? 2 : 1, [&]<int NV>() {
          for_tiles<MR2>((int)(j1 - j0), [&]<int M>(int r) {
            const long r0 = j0 + r;
            V acc[M][NV];
            FL_UNROLL for (int i = 0; i < M; ++i) FL_UNROLL for (int v = 0; v < NV; ++v)
              acc[i][v] = kc0 ? load(dh + (long)(r0 + i) * ldd + jj * 2 * W + v * W) : zero();
            micro<M, NV>(kc, dzs + r0 * ldz + kc0, ldz, 1, bp, acc, 2 * W);
            FL_UNROLL for (int i = 0; i < M; ++i) FL_UNROLL for (int v = 0; v < NV; ++v)
              store(dh + (long)(r0 + i) * ldd + jj * 2 * W + v * W, acc[i][v]);
          });
        });
      }
    }
  };
  // The products, run per chunk of steps (merged over the chunk's real steps): its rows of dX,
  // and dW accumulated.
  bool identity = N == (long)T * B;
  for (long n = 0; identity && n < N; ++n) identity = ws.src[n] == n;
  const long* src = identity ? nullptr : ws.src.data();
  if (a.dx && N < (long)T * B) std::memset(a.dx, 0, sizeof(float) * (size_t)T * B * I);  // padding gets no gradient
  float* WT = nullptr;    // dX = dZ·W_ih by dot products (small I): W_ihᵀ in compact gate order
  float* Wih_p = nullptr; // or by dx_panels (I fills most of two vectors)
  float* Wih_b = nullptr; // else W_ih packed for Gemm4
  if (!a.dx) {
  } else if (kDxPanels && I <= kDotMaxI && I >= kDxPanelMinI && I <= 2 * W) {
    Wih_p = scratch(S_WIHB, (size_t)Gz * 2 * W);
    pack_rows(a.W_ih, I, Gz, 2 * W, I, rows.data(), 2 * W, Wih_p, a.threads);
  } else if (I <= kDotMaxI) {
    WT = scratch(S_WIHB, (size_t)I * Gz);
    for (long r = 0; r < Gz; ++r)
      for (long i = 0; i < I; ++i) WT[i * Gz + r] = a.W_ih[(long)rows[r] * I + i];
  } else {
    Wih_b = scratch(S_WIHB, (size_t)Gz * ((I + 4 * W - 1) / (4 * W)) * 4 * W);
    pack_rows(a.W_ih, I, Gz, I, I, rows.data(), 4 * W, Wih_b, a.threads);
  }
  // [dW_ih | dW_hh | db] in one product, accumulated over the chunks (see kTnMaxC for the two
  // orientations)
  const long F = I + H + 1;
  const bool tn = Gz * F <= kTnMaxC;
  const bool ones = (I + H) % W != 0;  // Gemm4: the ones column rides in a free lane (else asum)
  const long ldw = (I + H + (ones ? 1 : 0) + 4 * W - 1) / (4 * W) * (4 * W);
  const long ldc = (Gz + W - 1) / W * W;
  float* XH = scratch(S_XB, (size_t)zrows * (tn ? I : ldw));  // tn: gathered x rows; else the packed panels
  // Gemm4 writes straight into dW_ih and dW_hh (SplitOut) when their rows keep its vectors
  // aligned; else into dWt, copied after. Training, 1 thread, the two builds in alternating
  // processes, 8 rounds each, medians: (20,1,512,512) 1.12-1.17x, (20,4,256,256) 1.06x,
  // (20,8,512,512) 1.01-1.05x, (20,32,512,512) 1.07x, (50,8,256,256) 0.98-1.02x (400 rows: the
  // copy is a small share). Written straight at H = I = 300 (rows of 300 floats: every other
  // vector store split across cache lines) it ran 0.83-0.89x: there it copies.
  const bool dw_direct = !tn && I % W == 0 && H % W == 0;  // then (I + H) % W == 0: db from asum
  float* dWt = dw_direct ? nullptr : scratch(S_DWI, tn ? (size_t)F * ldc : (size_t)Gz * ldw);  // tn: (F, ldc), else (4H, ldw)
  const SplitOut dw_out{rows.data(), a.dW_ih, a.dW_hh, I, H};
  int chunks = 0;
  long dw_h0_rows = 0;
  std::vector<float> dbp(Gz, 0.f);
  auto products = [&](long n0, long n1, bool accumulate) {
    const long Nc = n1 - n0;
    const long* sc = src ? src + n0 : nullptr;     // x / dx row of chunk row n: sc[n] (null: n0 + n)
    const float* xc = src ? a.x : a.x + n0 * I;
    // dX = dZ · W_ih   (K = 4H compact gate rows of W_ih), unless not wanted (a first layer)
    if (Wih_p) {
      dx_panels(Nc, I, Gz, dZ, ldz, Wih_p, src ? a.dx : a.dx + n0 * I, sc, a.threads);
    } else if (WT) {
      dx_dots(Nc, I, Gz, dZ, ldz, WT, src ? a.dx : a.dx + n0 * I, sc, a.threads);
    } else if (Wih_b) {
      if (identity) {
        Gemm4::run(Nc, I, Gz, dZ, ldz, 1, Wih_b, a.dx + n0 * I, I, nullptr, false, a.threads);
      } else {
        float* dXc = scratch(S_DXC, (size_t)Nc * I);
        Gemm4::run(Nc, I, Gz, dZ, ldz, 1, Wih_b, dXc, I, nullptr, false, a.threads);
        for (long n = 0; n < Nc; ++n) std::memcpy(a.dx + sc[n] * I, dXc + n * I, sizeof(float) * I);
      }
    }
    const float* hp = ws.hprev.get() + n0 * ws.ldh;
    if (tn) {
      // [X | H_prev | 1] read in place: h_{t-1} rows as they are (ldh apart), the ones column
      // as one value (ld 0); only x rows are gathered, when they are permuted (batch-first,
      // lengths). Packing [X | H_prev | 1] row by row first cost a copy of every h_{t-1}: without
      // it training ran 1.01-1.06x on 2 threads at (7,128,16,128), (4,128,16,128), (24,32,1,50),
      // (100,32,10,100), (150,32,1,64), (50,64,100,100), 0.96-1.02x on one (Zen 3, both builds
      // in one process).
      static const float one = 1.f;
      const float* xr = xc;
      if (sc) {
        for (long n = 0; n < Nc; ++n) copy_floats(XH + n * I, a.x + sc[n] * I, I);
        xr = XH;
      }
      // From a zero h0 (forward skipped h0·W_hhᵀ), step 0 adds nothing to dW_hh: its rows go
      // without the h_{t-1} block, unless their dz holds an Inf or NaN (0·Inf is NaN). 1/T of
      // the dW_hh product: training 1.03x at (7,128,16,128), 1.04x at (4,128,16,128), 1.12x at
      // (2,128,16,128) on one thread (Zen 3, both builds in one process). The Gemm4
      // orientation (results past kTnMaxC, long sequences) keeps every row.
      long k0 = 0;  // chunk rows [0, k0) are step 0's, run without h_{t-1}
      if (ws.h0_zero && n0 == 0 && Nc > 0) {
        k0 = std::min<long>(ws.off[1], Nc);
        for (long n = 0; k0 && n < k0; ++n)
          if (!all_finite(dZ + n * ldz, (size_t)Gz)) k0 = 0;
      }
      const TnX xs[3] = {{xr + k0 * I, I, I}, {hp + k0 * ws.ldh, ws.ldh, H}, {&one, 0, 1}};
      gemm_tn(xs, Gz, Nc - k0, dZ + k0 * ldz, ldz, dWt, ldc, a.threads, accumulate);
      if (k0) {
        const TnX x0[3] = {{xr, I, I}, {nullptr, 0, H}, {&one, 0, 1}};
        gemm_tn(x0, Gz, k0, dZ, ldz, dWt, ldc, a.threads, true);
        dw_h0_rows = k0;
      }
    } else {
      // [dW_ih | dW_hh | db] = dZᵀ · [X | H_prev | 1] in one GEMM (A = dZᵀ: ars = 1, acs = ldz),
      // so dZᵀ is packed once; I + H columns padded once (padded separately, I = 1 cost a whole
      // zero panel). The ones column rides in the last vector's padding when it has a free lane
      // (db then costs nothing); else db is the row sums of dZᵀ, gathered while the GEMM packs it
      // (a separate pass over dZ cost 1.8% of the backward at (100,64,64,256); a whole vector
      // more of the GEMM is dearer).
      pack_xh_panels(xc, I, sc, hp, ws.ldh, H, ones, Nc, XH, a.threads);
      Gemm4::run(Gz, I + H + (ones ? 1 : 0), Nc, dZ, 1, ldz, XH, dWt, ldw, nullptr, accumulate, a.threads,
                 ones ? nullptr : dbp.data(), dw_direct ? &dw_out : nullptr);
    }
  };

  // Threads split the rows (no sync) or the units: sub-step 2k is the elementwise part of step
  // sb-1-k of the chunk [sa, sb) for this part's units, 2k+1 its columns of dh_{t-1} over all
  // rows of the step (it needs every unit's dz). The next step's elementwise part reads only this
  // part's columns of dh, but a StepTeam orders whole sub-steps: one more sync per step.
  // Chunks [sa, sb) from the last step back to the first (one empty chunk when no step is real).
  int sb = Teff;
  do {
    int sa = std::max(sb - 1, 0);
    while (sa > 0 && ws.off[sb] - ws.off[sa - 1] <= chunk_rows) --sa;
    z0 = ws.off[sa];
    if (sb > sa)
      run_loop(plan, ws.len, N, Hp, 2 * (sb - sa),
               [&](long r0, long r1) {
                 for (int s = sb - 1; s >= sa; --s) {
                   const long j1 = std::min<long>(r1, ws.Bs[s]);  // rows [r0, j1) of the step
                   if (j1 <= r0) continue;
                   cell_part(s, r0, j1, 0, Hp);
                   dh_part(s, r0, j1, 0, Hp);
                 }
               },
               [&](int k, long u0, long u1) {
                 const int s = sb - 1 - k / 2;
                 if (k % 2 == 0) cell_part(s, 0, ws.Bs[s], u0, u1);
                 else dh_part(s, 0, ws.Bs[s], u0, u1);
               }, ws.off[sb] - z0);
    products(z0, ws.off[sb], sb != Teff);
    ++chunks;
    sb = sa;
  } while (sb > 0);
  g_last_chunks.store(chunks, std::memory_order_relaxed);
  g_last_dw_h0_rows.store(dw_h0_rows, std::memory_order_relaxed);
  g_last_dx.store(Wih_p ? 2 : WT ? 1 : Wih_b ? 3 : 0, std::memory_order_relaxed);
  g_last_dw.store(tn ? 0 : dw_direct ? 2 : 1, std::memory_order_relaxed);
  for (int j = 0; j < B; ++j) {
    if (a.dh0) std::memcpy(a.dh0 + (long)ws.perm[j] * H, dh + (long)j * ldd, sizeof(float) * H);
    std::memcpy(a.dc0 + (long)ws.perm[j] * H, dc + (long)j * Hp, sizeof(float) * H);
  }
  if (tn) {
    scatter_transposed(dWt, ldc, I, Gz, rows.data(), a.dW_ih, I);
    scatter_transposed(dWt + I * ldc, ldc, H, Gz, rows.data(), a.dW_hh, H);
    scatter_transposed(dWt + (I + H) * ldc, ldc, 1, Gz, rows.data(), a.db, 1);
    return;
  }
  if (ones)
    for (long r = 0; r < Gz; ++r) dbp[r] = dWt[r * ldw + I + H];
  for (long r = 0; r < Gz; ++r) {
    if (!dw_direct) {
      std::memcpy(a.dW_ih + (long)rows[r] * I, dWt + r * ldw, sizeof(float) * I);
      std::memcpy(a.dW_hh + (long)rows[r] * H, dWt + r * ldw + I, sizeof(float) * H);
    }
    a.db[rows[r]] = dbp[r];
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers exposed for tests and the benchmark.
static void gemm_rowmajor(int M, int N, int K, const float* A, long ars, long acs, const float* Bm, float* C,
                          int threads) {
  long panels = (N + 4 * W - 1) / (4 * W);
  float* Bp = scratch(S_GEMMB, (size_t)std::max(K, 1) * panels * 4 * W);
  pack_rows(Bm, N, K, N, N, nullptr, 4 * W, Bp, threads);
  Gemm4::run(M, N, K, A, ars, acs, Bp, C, N, nullptr, false, threads);
}

template <V (*F)(V)>
static void eval(const float* x, float* y, long n) {
  DenormalGuard g;
  long i = 0;
  for (; i + W <= n; i += W) store(y + i, F(load(x + i)));
  if (i < n) store_n(y + i, F(load_n(x + i, (int)(n - i))), (int)(n - i));
}

// Peak multiply-add throughput: 12 independent accumulator chains per thread.
static double fma_peak(int threads, double seconds) {
  std::vector<double> flops(std::max(threads, 1), 0.0);
  auto t0 = std::chrono::steady_clock::now();
  int ran = parallel_run(threads, [&](int tid, Team&) {
    V acc[12];
    for (int k = 0; k < 12; ++k) acc[k] = set1(1.0f + 1e-3f * k);
    V m = set1(0.9999999f), c = set1(1e-7f);
    long iters = 0;
    auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    do {
      for (int r = 0; r < 4096; ++r)
        FL_UNROLL for (int k = 0; k < 12; ++k) acc[k] = fmadd(acc[k], m, c);
      iters += 4096;
    } while (std::chrono::steady_clock::now() < until);
    V s = acc[0];
    for (int k = 1; k < 12; ++k) s = add(s, acc[k]);
    volatile float sink = hsum(s);
    (void)sink;
    flops[tid] = 2.0 * 12 * W * iters;
  });
  double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double total = 0;
  for (int i = 0; i < ran; ++i) total += flops[i];
  return total / dt * 1e-9;
}

}  // namespace FASTLSTM_ISA

const KernelTable* FL_CAT_TABLE();
const KernelTable* FL_CAT_TABLE() {
  static const KernelTable t = {
      FL_STR(FASTLSTM_ISA), FASTLSTM_ISA::W, FASTLSTM_ISA::lstm_forward, FASTLSTM_ISA::lstm_backward,
      FASTLSTM_ISA::pack_weights, FASTLSTM_ISA::lstm_forward_packed, FASTLSTM_ISA::lstm_step,
      FASTLSTM_ISA::gemm_rowmajor, FASTLSTM_ISA::eval<FASTLSTM_ISA::sigmoid>,
      FASTLSTM_ISA::eval<FASTLSTM_ISA::tanh_>, FASTLSTM_ISA::eval<FASTLSTM_ISA::exp_>, FASTLSTM_ISA::fma_peak,
      FASTLSTM_ISA::tail_units, FASTLSTM_ISA::release_scratch};
  return &t;
}

}  // namespace fastlstm
