// thread_pool.h: one persistent team of worker threads for the whole process.
//
// A kernel call runs fn(tid, team) on `n` participants (the caller is tid 0) and the
// participants synchronise per time step with team.barrier(), a spinning barrier: the team
// lives for the whole sequence, no thread is spawned per step (DESIGN.md §4). Only one call
// uses the team at a time; a concurrent caller (another Python thread) runs single-threaded
// instead of waiting, so concurrent use is safe and never deadlocks.
// Every participant runs with FTZ/DAZ set (denormals made oneDNN LSTM training ~20× slower)
// and restores its previous MXCSR afterwards.
#pragma once

#include <atomic>
#include <functional>

namespace fastlstm {

class Team {
 public:
  explicit Team(int n) : n_(n) {}
  int size() const { return n_; }
  void barrier();

 private:
  int n_;
  alignas(64) std::atomic<int> count_{0};
  alignas(64) std::atomic<int> generation_{0};
};

using TeamFn = std::function<void(int tid, Team& team)>;

// Run fn on min(n, available) participants; returns how many ran. The team is the workers
// that join within a short wait (thread_pool.cpp's kJoinWait), so fn must split its work by
// team.size(), never by n.
// dynamic: fn claims its work from a shared counter (no split by tid, no barrier): the caller
// starts at once with team.size() == n, workers join as they come, and the caller waits only
// for those that joined.
int parallel_run(int n, const TeamFn& fn, bool dynamic = false);

// Split [0, total) in `parts` contiguous ranges aligned to `align`; returns part `i`.
inline void split_range(long total, int parts, int i, long align, long* begin, long* end) {
  long units = (total + align - 1) / align;
  long per = units / parts, rem = units % parts;
  long b = i * per + (i < rem ? i : rem);
  long e = b + per + (i < rem ? 1 : 0);
  *begin = b * align < total ? b * align : total;
  *end = e * align < total ? e * align : total;
}

// Denormal guard for one scope (sets FTZ/DAZ, restores the caller's MXCSR).
class DenormalGuard {
 public:
  DenormalGuard();
  ~DenormalGuard();

 private:
  unsigned saved_;
};

int hardware_threads();

}  // namespace fastlstm
