// dispatch.cpp: the kernel tables compiled into this build, and which one runs.
// The best ISA the CPU supports is chosen at load; FASTLSTM_ISA=generic|avx2|avx512 (or
// set_isa from Python) forces a lower one, e.g. so tests cover every path this CPU executes.
#include <cstring>

#include "cpu_features.h"
#include "lstm.h"

namespace fastlstm {

const KernelTable* table_generic();
#if defined(FASTLSTM_X86)
const KernelTable* table_avx2();
const KernelTable* table_avx512();
#endif

std::vector<const KernelTable*> compiled_tables() {
#if defined(FASTLSTM_X86)
  return {table_avx512(), table_avx2(), table_generic()};
#else
  return {table_generic()};
#endif
}

// set from Python (fastlstm.backends.native reads FASTLSTM_FUSE_ROWS / FASTLSTM_SPLIT)
std::atomic<long> g_fuse_rows{-1};
std::atomic<bool> g_last_fused{false};
std::atomic<bool> g_last_h0_zero{false};
std::atomic<int> g_last_step_threads{1};
std::atomic<int> g_split{0};
std::atomic<int> g_last_split{0};
std::atomic<long> g_last_steals{0};
std::atomic<long> g_last_late_joins{0};
std::atomic<long> g_backward_chunk{-1};
std::atomic<int> g_last_chunks{0};
std::atomic<int> g_last_dx{0};
std::atomic<int> g_last_dw{0};
std::atomic<long> g_last_dw_h0_rows{0};
std::mutex g_split_timing_mu;
SplitTiming g_split_timings[kSplitTimings];

float SplitTiming::estimate(int v) const {
  const int n = (int)std::min(timed[v], 4u);
  float t[4];
  for (int i = 0; i < n; ++i) t[i] = ns[v][i];
  for (int i = 1; i < n; ++i)  // insertion sort (std::sort of a float[4] trips GCC's -Warray-bounds)
    for (int j = i; j > 0 && t[j - 1] > t[j]; --j) std::swap(t[j - 1], t[j]);
  return n == 0 ? 0.f : n % 2 ? t[n / 2] : 0.5f * (t[n / 2 - 1] + t[n / 2]);
}
std::atomic<bool> g_split_adaptive{false};
std::atomic<bool> g_prefer_serial{false};

static bool runnable(const KernelTable* t) {
  const CpuFeatures& f = cpu_features();
  if (!std::strcmp(t->name, "avx512")) return f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl && f.avx2 && f.fma;
  if (!std::strcmp(t->name, "avx2")) return f.avx2 && f.fma;
  return true;
}

std::vector<const KernelTable*> runnable_tables() {
  std::vector<const KernelTable*> out;
  for (auto* t : compiled_tables())
    if (runnable(t)) out.push_back(t);
  return out;
}

const KernelTable* find_table(const char* name) {
  for (auto* t : compiled_tables())
    if (!std::strcmp(t->name, name)) return t;
  return nullptr;
}

static const KernelTable*& active_slot() {
  static const KernelTable* t = runnable_tables().front();
  return t;
}

const KernelTable* active_table() { return active_slot(); }
void set_active_table(const KernelTable* t) { active_slot() = t; }

}  // namespace fastlstm
