// thread_pool.h: one persistent team of worker threads for the whole process.
//
// A kernel call runs fn(tid, team) on `n` participants (the caller is tid 0); a recurrent loop
// orders its steps with a StepTeam (below), spinning, not sleeping, between steps: the team
// lives for the whole sequence, no thread is spawned per step (DESIGN.md §4). Only one call
// uses the team at a time; a concurrent caller (another Python thread) runs single-threaded
// instead of waiting, so concurrent use is safe and never deadlocks.
// Every participant runs with FTZ/DAZ set (denormals made oneDNN LSTM training ~20× slower)
// and restores its previous MXCSR afterwards.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <thread>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace fastlstm {

class Team {
 public:
  explicit Team(int n) : n_(n) {}
  int size() const { return n_; }

 private:
  int n_;
};

using TeamFn = std::function<void(int tid, Team& team)>;

// Run fn on min(n, available) participants; returns how many ran. The team is the workers
// that join within a short wait (thread_pool.cpp's kJoinWait), so fn must split its work by
// team.size(), never by n.
// dynamic: fn claims its work from shared counters (a work queue, or a StepTeam): the caller
// starts at once with team.size() == n, workers join as they come, and the caller waits only
// for those that joined.
int parallel_run(int n, const TeamFn& fn, bool dynamic = false);
// Whether the workers are likely still spinning after the last team call (they spin ~200 µs
// before sleeping): a call then starts without a wake-up (60-250 µs on a VM).
bool workers_awake();
// Start waking up to n - 1 sleeping workers now, without a job, so that a team call a little
// later finds them spinning: a call whose loop will split hides the wake-up (60-250 µs on a VM)
// behind its packing. No-op while the team is in use or the workers are awake. It does not
// change workers_awake(): the products before the loop keep their rule for sleeping workers.
void wake_workers(int n);

// Teams on another OpenMP runtime's threads instead of the pool: `parallel` is libgomp's
// GOMP_parallel (what `#pragma omp parallel` compiles to), `thread_num` / `num_threads` its
// omp_get_thread_num / omp_get_num_threads; all null: the pool again. The drop-in for
// torch.nn.LSTM points this at the runtime torch already loaded: after each parallel torch op
// its workers spin on the cores the pool's workers need, and the two teams took each other's
// time slices (a 2-thread char-LM epoch 1.3x slower than with torch's workers asleep). On
// torch's own team there is one set of threads, and they are awake when our call comes.
// Set per calling thread (thread_local): another thread's calls keep the pool.
using OmpParallelFn = void (*)(void (*)(void*), void*, unsigned, unsigned);
using OmpIntFn = int (*)();
void set_openmp_executor(OmpParallelFn parallel, OmpIntFn thread_num, OmpIntFn num_threads);
bool openmp_executor_set();
// Team calls run on an OpenMP runtime since the last reset, and the largest team among them (tests).
void openmp_runs(long* runs, int* largest, bool reset);

// Split [0, total) in `parts` contiguous ranges aligned to `align`; returns part `i`.
inline void split_range(long total, int parts, int i, long align, long* begin, long* end) {
  long units = (total + align - 1) / align;
  long per = units / parts, rem = units % parts;
  long b = i * per + (i < rem ? i : rem);
  long e = b + per + (i < rem ? 1 : 0);
  *begin = b * align < total ? b * align : total;
  *end = e * align < total ? e * align : total;
}

// The steps of a loop split over `parts` parts (hidden units, or blocks of batch rows as one
// step), without a blocking barrier: part r of step s runs exactly once, after every part of
// step s-1, preferably on participant r (its weights stay in that core's cache). A participant
// that has done its own part and finds another part of the step not yet started after
// kStealPatience runs it itself, and at once on the next step while that owner stays away.
// So a participant the OS deschedules for a time slice (ms, on a loaded machine) costs the
// others a step at one-thread speed, not the time slice a barrier would wait for (a units split
// with a barrier ran 10x slower than one thread at load 7). The owner, when it comes back and
// finds its part taken, leaves the loop, and the others run its part from then on without
// waiting: on an oversubscribed machine a participant that came back to catch up and spin-wait
// for the others took CPU time from them (2 threads at 0.4-0.65x of one at load 8, the worker's
// part taken in every call). A worker that is already spinning when the loop starts (back-to-back
// calls) claims its first part in µs, long before kStealPatience. Only a part whose owner is
// descheduled in its middle is waited for.
// A participant that finds its part taken before it ran any part of the loop was waking up (a
// sleeping worker comes 60-250 µs late on a VM, and a loop that follows idle time, such as a
// training step's forward after the optimizer's Python, starts with sleeping workers): it joins
// at the first step whose part of its own nobody has started yet, once every part of the step
// before is done, instead of leaving the loop to one thread. After 30 ms idle, 2 threads against
// one (workers woken off the caller's CPU, thread_pool.cpp): (20,1,1,300) forward 0.89x when it
// left, 1.34x when it joins, training 1.08x -> 1.18x; (50,1,200,200) forward 0.92x -> 1.26x.
// One that comes back after it ran parts was away mid-loop (descheduled) and leaves, as above.
// Per step: one CAS and one release store per part, one acquire load per part (the barrier's
// cost, ~0.1-0.5 µs between two cores).
class StepTeam {
 public:
  explicit StepTeam(int max_parts) : parts_(new Part[std::max(max_parts, 1)]) {}
  // Participant `tid` of `parts` (= the team's size) runs fn(s, r) for its share of s = 0..steps-1.
  template <class F>
  void run(int tid, int parts, int steps, F&& fn);
  long steals() const { return steals_.load(std::memory_order_relaxed); }
  // participants that came late, before running any part, and joined at a later step
  long late_joins() const { return late_joins_.load(std::memory_order_relaxed); }
  // tests: the participant of the last part sleeps this many µs before step 1 (step 0 of a
  // one-step run), so the others must run its part (set with _core._set_steal_test_delay)
  static std::atomic<int> test_delay_us;
  // tests: the participant of the last part sleeps this many µs before step 0, as a worker
  // woken from sleep comes late (set with _core._set_late_join_test_delay)
  static std::atomic<int> test_join_delay_us;

 private:
  struct alignas(64) Part {
    std::atomic<int> claimed{-1};  // the last step whose part r someone started
    std::atomic<int> done{-1};     // the last step whose part r is finished
    std::atomic<bool> left{false}; // its owner has left the loop
  };
  std::unique_ptr<Part[]> parts_;
  std::atomic<long> steals_{0};
  std::atomic<long> late_joins_{0};
};

// Denormal guard for one scope (sets FTZ/DAZ, restores the caller's MXCSR).
class DenormalGuard {
 public:
  DenormalGuard();
  ~DenormalGuard();

 private:
  unsigned saved_;
};

int hardware_threads();

// Median round trip (ns) of a cache line handed back and forth between two threads pinned to
// CPUs a and b, over `rounds` rounds of `iters` trips; -1 when the threads cannot be pinned
// there (not Linux, or a CPU outside the affinity mask). About what a step's sync costs between
// those CPUs, and set by where the host puts a VM's vCPUs: on the 2-vCPU VM 390-420 ns at one
// time and 47-50 ns half an hour later, and torch's 2-thread forecast epoch took 89 ms at the
// first and 60 ms at the second (same code), so the benchmarks record it with their figures.
double core_round_trip_ns(int a, int b, long iters, int rounds);

// Spin this many pauses (~20-40 µs; PAUSE is ~40-140 cycles) before yielding the core: a step's
// barrier normally completes in a few µs, but when another process holds the core, spinning
// longer only burns the time slice the late thread needs.
constexpr int kSpins = 2000;

inline void cpu_relax() {
#if defined(__SSE2__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// How long a participant that has done its own part waits for another part's owner to start
// before running that part itself. The owner normally starts when this one does, so one that
// has not started after a whole part's time plus this is late: a few times the ~1 µs it takes
// one core to see another's store, far below a time slice.
constexpr auto kStealPatience = std::chrono::microseconds(5);

template <class F>
void StepTeam::run(int tid, int parts, int steps, F&& fn) {
  using clock = std::chrono::steady_clock;
  unsigned long stole_last = 0;  // parts (< 64) this participant ran for their owner last step
  auto claim = [&](int r, int s) {
    int expect = s - 1;
    return parts_[r].claimed.compare_exchange_strong(expect, s, std::memory_order_acq_rel);
  };
  auto finish = [&](int r, int s) { parts_[r].done.store(s, std::memory_order_release); };
  auto wait_step_done = [&](int s) {  // every part of step s
    for (int r = 0; r < parts; ++r)
      for (int spins = 0; parts_[r].done.load(std::memory_order_acquire) < s; ++spins) {
        if (spins < kSpins) cpu_relax(); else std::this_thread::yield();
      }
  };
  bool ran = false;  // this participant ran a part of its own in this loop
  if (parts > 1 && tid == parts - 1 && test_join_delay_us.load(std::memory_order_relaxed) > 0)
    std::this_thread::sleep_for(std::chrono::microseconds(test_join_delay_us.load()));
  for (int s = 0; s < steps; ++s) {  // here every part of step s-1 is done
    if (s == (steps > 1) && parts > 1 && tid == parts - 1 && test_delay_us.load(std::memory_order_relaxed) > 0)
      std::this_thread::sleep_for(std::chrono::microseconds(test_delay_us.load()));
    while (!claim(tid, s)) {  // another participant ran this one's part
      if (ran) {  // away mid-loop: it leaves (see above)
        parts_[tid].left.store(true, std::memory_order_relaxed);
        return;
      }
      // late before its first part: join after the last step of its part someone started
      s = parts_[tid].claimed.load(std::memory_order_acquire) + 1;
      if (s >= steps) return;
      wait_step_done(s - 1);
    }
    if (!ran && s > 0) late_joins_.fetch_add(1, std::memory_order_relaxed);
    ran = true;
    fn(s, tid);
    finish(tid, s);
    unsigned long stole = 0;
    for (int k = 1; k <= parts; ++k) {
      const int r = (tid + k) % parts;  // the others, then (k = parts) this one's own
      if (parts_[r].done.load(std::memory_order_acquire) >= s) continue;
      const bool eager = (r < 64 && (stole_last >> r & 1)) ||  // its owner is away: no patience
                         parts_[r].left.load(std::memory_order_relaxed);
      const auto t1 = clock::now();
      for (int spins = 0; parts_[r].done.load(std::memory_order_acquire) < s; ++spins) {
        if (r != tid && parts_[r].claimed.load(std::memory_order_relaxed) < s &&
            (eager || clock::now() - t1 >= kStealPatience) && claim(r, s)) {
          fn(s, r);
          finish(r, s);
          steals_.fetch_add(1, std::memory_order_relaxed);
          if (r < 64) stole |= 1ul << r;
          break;
        }
        if (spins < kSpins) cpu_relax(); else std::this_thread::yield();  // oversubscribed: let others run
      }
    }
    stole_last = stole;
  }
}

}  // namespace fastlstm
