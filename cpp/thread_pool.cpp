// thread_pool.cpp: the persistent worker team behind parallel_run (see thread_pool.h).
#include "thread_pool.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>
#if defined(__SSE2__)
#include <immintrin.h>
#endif
#if defined(__linux__)
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace fastlstm {

namespace {

// How long a call waits for its workers to join before running with those that came. A worker
// that spins after its last job joins in ~1 µs; a sleeping one needs its core woken, which on a
// VM whose idle vCPU the hypervisor halted takes 60-250 µs (measured on the 2-core EPYC VM:
// with a 60 µs wait the 2-thread team formed 5 times in 20 after 0.3 s idle, with 250 µs 20 in
// 20). On a loaded machine a worker may not run for a whole time slice (ms), and a static split
// would leave the caller waiting for that share (2 threads 2-18x slower than one at load 7), so
// the wait stays bounded.
constexpr auto kJoinWait = std::chrono::microseconds(300);

// seats_ packs (job generation << 32) | seats left (int32): a worker takes a seat only in the
// job it read. Without the generation a worker descheduled between reading job J (its fn) and
// taking a seat could sit down at job J+1 and run J's fn, destroyed by then (a segfault seen
// under load).
constexpr uint64_t pack_seats(long gen, int seats) {
  return (uint64_t(uint32_t(gen)) << 32) | uint32_t(seats);
}
constexpr int seats_of(uint64_t v) { return int32_t(uint32_t(v)); }
constexpr uint32_t gen_of(uint64_t v) { return uint32_t(v >> 32); }
constexpr int kClosed = -(1 << 20);  // no more seats: the team is formed

// The CPU the calling thread runs on (-1: unknown).
int current_cpu() {
#if defined(__linux__)
  return sched_getcpu();
#else
  return -1;
#endif
}

// A worker woken on the CPU its caller runs on moves to another allowed CPU. Linux wakes a
// thread on its waker's CPU when it judges the waker's cache warm (wake-affine), and a worker
// that then spins between back-to-back calls never sleeps again to be placed anew: on the 2-vCPU
// VM, in about half of the series of calls after 0.15 s of idle both threads shared one vCPU
// for the whole series while the other idled (seen in /proc/<pid>/task/*/stat: same CPU, the
// worker running a quarter of the caller's time), and a units split ran at 0.9x of one thread
// instead of 1.9x ((20,1,300,300) forward: 0.32 ms against 0.16). The affinity is narrowed only
// to leave that CPU, then restored: the scheduler stays free to place the worker later.
void leave_cpu(int cpu) {
#if defined(__linux__)
  if (cpu < 0 || cpu >= CPU_SETSIZE) return;
  cpu_set_t allowed, others;
  if (sched_getaffinity(0, sizeof allowed, &allowed) != 0 || !CPU_ISSET(cpu, &allowed)) return;
  others = allowed;
  CPU_CLR(cpu, &others);
  if (CPU_COUNT(&others) == 0) return;  // the only CPU allowed
  if (sched_setaffinity(0, sizeof others, &others) == 0) sched_setaffinity(0, sizeof allowed, &allowed);
#else
  (void)cpu;
#endif
}

class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
      ++job_gen_;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  // a wake-up without a job: the workers spin as after a job, then sleep again
  void wake(int n) {
    std::unique_lock<std::mutex> busy(call_mutex_, std::try_to_lock);
    if (n <= 1 || !busy.owns_lock()) return;
    grow(n - 1);
    {
      std::lock_guard<std::mutex> lk(m_);
      caller_cpu_ = current_cpu();
      steer_locked(caller_cpu_);
      ++wake_gen_;
    }
    cv_.notify_all();
  }

  int run(int n, const TeamFn& fn, bool dynamic) {
    std::unique_lock<std::mutex> busy(call_mutex_, std::try_to_lock);
    if (n <= 1 || !busy.owns_lock()) {  // serial, or the team is in use by another caller
      Team solo(1);
      DenormalGuard g;
      fn(0, solo);
      return 1;
    }
    grow(n - 1);
    long gen;
    const bool asleep = !workers_awake();
    {
      std::lock_guard<std::mutex> lk(m_);
      caller_cpu_ = current_cpu();
      if (asleep) steer_locked(caller_cpu_);
      fn_ = &fn;
      active_ = n - 1;
      ++job_gen_;
      gen = job_gen_;
      seats_.store(pack_seats(gen, n - 1), std::memory_order_relaxed);
      team_size_.store(0, std::memory_order_relaxed);
      job_gen_seen_.store(job_gen_, std::memory_order_release);
    }
    cv_.notify_all();
    if (dynamic) {  // start now; whoever joins before the work runs out helps
      Team team(n);
      team_ = &team;
      pending_.store(0, std::memory_order_relaxed);
      team_size_.store(n, std::memory_order_release);
      {
        DenormalGuard g;
        fn(0, team);
      }
      const int left = std::max(0, seats_of(seats_.exchange(pack_seats(gen, kClosed), std::memory_order_acq_rel)));
      const int joined = n - 1 - left;
      int ran = 1 + joined;
      // joined workers decrement pending_ from 0 as they finish
      for (int spins = 0; pending_.load(std::memory_order_acquire) != -joined; ++spins) {
        if (spins < kSpins) cpu_relax(); else std::this_thread::yield();
      }
      return ran;
    }
    // the team is whoever joins within kJoinWait; later workers skip this job
    const auto until = std::chrono::steady_clock::now() + kJoinWait;
    while (seats_of(seats_.load(std::memory_order_acquire)) > 0 && std::chrono::steady_clock::now() < until)
      cpu_relax();
    const int left = std::max(0, seats_of(seats_.exchange(pack_seats(gen, kClosed), std::memory_order_acq_rel)));
    const int size = n - left;
    Team team(size);
    team_ = &team;
    pending_.store(size - 1, std::memory_order_relaxed);
    team_size_.store(size, std::memory_order_release);  // go: joined workers read team_ now
    {
      DenormalGuard g;
      fn(0, team);
    }
    // wait for the workers of this job (spin briefly: they usually finish together)
    for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins) {
      if (spins < kSpins) cpu_relax(); else std::this_thread::yield();
    }
    return size;
  }

 private:
  void grow(int n) {
    while ((int)workers_.size() < n) {
      int id = (int)workers_.size() + 1;
      workers_.emplace_back([this, id] { loop(id); });
    }
  }

  // Sleeping workers are woken off the caller's CPU. Linux wakes a thread on its waker's CPU
  // when it judges that cache warm, and a worker queued there behind the running caller waited
  // for its time slice: a units split at B = 1 after 30 ms idle had its worker join after 2+ ms,
  // all 50 steps of a (50,1,200,200) forward run by the caller alone (StepTeam steals), where
  // a worker woken on the idle vCPU joins in 60-250 µs. So before the wake-up the workers'
  // affinity leaves out the caller's CPU, and each worker restores the process's mask once it
  // runs (leave_cpu below does the same for one already placed there). Linux only.
  void steer_locked(int cpu) {  // under m_
#if defined(__linux__)
    // thread ids are system-wide: a forked child (no workers of its own) must not move its parent's
    if (cpu < 0 || cpu >= CPU_SETSIZE || tids_.empty() || getpid() != tids_pid_) return;
    cpu_set_t mine, others;
    if (sched_getaffinity(0, sizeof mine, &mine) != 0 || !CPU_ISSET(cpu, &mine)) return;
    others = mine;
    CPU_CLR(cpu, &others);
    if (CPU_COUNT(&others) == 0) return;  // the caller may run on one CPU only: leave them be
    steer_restore_ = mine;  // (workers not yet woken from an earlier steer take this one back)
    for (long tid : tids_)
      if (tid > 0) sched_setaffinity((pid_t)tid, sizeof others, &others);
    ++steer_gen_;
#else
    (void)cpu;
#endif
  }

  void loop(int id) {
    long seen = 0, seen_wake = 0, seen_steer = 0;
#if defined(__linux__)
    {
      std::lock_guard<std::mutex> lk(m_);
      if ((int)tids_.size() < id) tids_.resize(id, 0);
      tids_[id - 1] = (long)syscall(SYS_gettid);
      tids_pid_ = getpid();
    }
#endif
    for (;;) {
      // spin a little before sleeping: back-to-back kernel calls (a training step's forward,
      // the Python between, its backward) then skip the wake-up cost (60-250 µs on a VM)
      auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(200);
      while (job_gen_seen_.load(std::memory_order_acquire) == seen &&
             std::chrono::steady_clock::now() < until)
        cpu_relax();
      const TeamFn* fn;
      int n, caller_cpu;
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return stop_ || job_gen_ != seen || wake_gen_ != seen_wake; });
        if (stop_) return;
        seen_wake = wake_gen_;
#if defined(__linux__)
        if (steer_gen_ != seen_steer) {  // woken off the caller's CPU: the scheduler is free again
          seen_steer = steer_gen_;
          sched_setaffinity(0, sizeof steer_restore_, &steer_restore_);
        }
#endif
        if (job_gen_ == seen) {  // woken without a job (wake): spin for the job to come
          caller_cpu = caller_cpu_;
          lk.unlock();
          if (caller_cpu >= 0 && current_cpu() == caller_cpu) leave_cpu(caller_cpu);
          continue;
        }
        seen = job_gen_;
        if (id > active_) continue;  // not part of this job
        fn = fn_;
        n = active_ + 1;
        caller_cpu = caller_cpu_;
      }
      if (caller_cpu >= 0 && current_cpu() == caller_cpu) leave_cpu(caller_cpu);
      // take a seat in job `seen` (ids in order of arrival), or skip it: its team is formed, or
      // it is over and a later job's seats are on offer
      int seat = 0;
      for (uint64_t v = seats_.load(std::memory_order_acquire);
           gen_of(v) == uint32_t(seen) && seats_of(v) > 0;) {
        if (seats_.compare_exchange_weak(v, v - 1, std::memory_order_acq_rel)) {
          seat = seats_of(v);
          break;
        }
      }
      if (seat <= 0) continue;
      for (int spins = 0; team_size_.load(std::memory_order_acquire) == 0; ++spins) {
        if (spins < kSpins) cpu_relax(); else std::this_thread::yield();
      }
      {
        DenormalGuard g;
        (*fn)(n - seat, *team_);  // seats n-1, n-2, ... -> ids 1, 2, ... (all < size)
      }
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  std::mutex call_mutex_;
  std::mutex m_;
  std::condition_variable cv_;
  std::vector<std::thread> workers_;
  const TeamFn* fn_ = nullptr;
  Team* team_ = nullptr;
  int active_ = 0;
  int caller_cpu_ = -1;  // the CPU the job's caller ran on when it posted the job
  long job_gen_ = 0;
  long wake_gen_ = 0;  // wake() calls
  std::vector<long> tids_;  // the workers' thread ids (Linux), for steer_locked
  long steer_gen_ = 0;      // steer_locked calls
#if defined(__linux__)
  cpu_set_t steer_restore_;  // the affinity the workers take back after a steered wake-up
  pid_t tids_pid_ = 0;       // the process the workers' ids belong to
#endif
  std::atomic<long> job_gen_seen_{0};
  std::atomic<int> pending_{0};
  std::atomic<uint64_t> seats_{0};  // pack_seats(job, seats not yet taken in the forming team)
  std::atomic<int> team_size_{0};  // 0 while the team forms, then its size
  bool stop_ = false;
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: workers may outlive static destruction order
  return *p;
}

}  // namespace

std::atomic<int> StepTeam::test_delay_us{0};
std::atomic<int> StepTeam::test_join_delay_us{0};

namespace {
std::atomic<int64_t> g_last_team_end_ns{0};
int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace
namespace {
struct OpenMp {
  OmpParallelFn parallel = nullptr;
  OmpIntFn thread_num = nullptr, num_threads = nullptr;
};
thread_local OpenMp tls_omp;
std::atomic<long> g_omp_runs{0};
std::atomic<int> g_omp_largest{0};
struct OmpJob {
  const TeamFn* fn;
  const OpenMp* omp;
  int size;
};
// Each thread of the OpenMP team: its id and the team's size from the runtime (it may grant
// fewer threads than asked; fn splits by team.size()).
void omp_member(void* p) {
  OmpJob& job = *static_cast<OmpJob*>(p);
  const int tid = job.omp->thread_num(), size = job.omp->num_threads();
  if (tid == 0) job.size = size;
  Team team(size);
  DenormalGuard g;
  (*job.fn)(tid, team);
}
}  // namespace
void set_openmp_executor(OmpParallelFn parallel, OmpIntFn thread_num, OmpIntFn num_threads) {
  if (!parallel || !thread_num || !num_threads) parallel = nullptr, thread_num = num_threads = nullptr;
  tls_omp = OpenMp{parallel, thread_num, num_threads};
}
bool openmp_executor_set() { return tls_omp.parallel != nullptr; }
void openmp_runs(long* runs, int* largest, bool reset) {
  *runs = reset ? g_omp_runs.exchange(0) : g_omp_runs.load();
  *largest = reset ? g_omp_largest.exchange(0) : g_omp_largest.load();
}

int parallel_run(int n, const TeamFn& fn, bool dynamic) {
  if (n > 1 && tls_omp.parallel) {
    OmpJob job{&fn, &tls_omp, 1};
    tls_omp.parallel(&omp_member, &job, (unsigned)n, 0);
    if (job.size > 1) g_last_team_end_ns.store(now_ns(), std::memory_order_relaxed);
    g_omp_runs.fetch_add(1, std::memory_order_relaxed);
    for (int m = g_omp_largest.load(); m < job.size && !g_omp_largest.compare_exchange_weak(m, job.size);) {}
    return job.size;
  }
  const int ran = pool().run(n, fn, dynamic);
  if (ran > 1) g_last_team_end_ns.store(now_ns(), std::memory_order_relaxed);
  return ran;
}
bool workers_awake() { return now_ns() - g_last_team_end_ns.load(std::memory_order_relaxed) < 150000; }
void wake_workers(int n) {
  if (n <= 1 || workers_awake() || tls_omp.parallel) return;
  pool().wake(n);
}

DenormalGuard::DenormalGuard() {
#if defined(__SSE2__)
  saved_ = _mm_getcsr();
  _mm_setcsr(saved_ | 0x8040);  // FTZ (bit 15) | DAZ (bit 6)
#else
  saved_ = 0;
#endif
}

DenormalGuard::~DenormalGuard() {
#if defined(__SSE2__)
  _mm_setcsr(saved_);
#endif
}

namespace {
bool pin_to(int cpu) {
#if defined(__linux__)
  if (cpu < 0 || cpu >= CPU_SETSIZE) return false;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  return sched_setaffinity(0, sizeof one, &one) == 0;
#else
  (void)cpu;
  return false;
#endif
}
}  // namespace

double core_round_trip_ns(int a, int b, long iters, int rounds) {
#if defined(__linux__)
  cpu_set_t old;
  if (iters < 1 || rounds < 1 || sched_getaffinity(0, sizeof old, &old) != 0) return -1;
  if (a < 0 || b < 0 || a >= CPU_SETSIZE || b >= CPU_SETSIZE || !CPU_ISSET(a, &old) || !CPU_ISSET(b, &old))
    return -1;
  alignas(64) std::atomic<long> ball{0};
  std::atomic<int> ready{0};
  std::vector<double> ns;
  std::thread other([&] {
    ready.store(pin_to(b) ? 1 : -1);
    for (long i = 0, n = iters * rounds; i < n; ++i) {  // odd values are ours to answer
      while (ball.load(std::memory_order_acquire) != 2 * i + 1) cpu_relax();
      ball.store(2 * i + 2, std::memory_order_release);
    }
  });
  while (ready.load() == 0) cpu_relax();
  bool ok = ready.load() == 1 && pin_to(a);
  long v = 0;
  for (int r = 0; r < rounds; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < iters; ++i, v += 2) {
      ball.store(v + 1, std::memory_order_release);
      while (ball.load(std::memory_order_acquire) != v + 2) cpu_relax();
    }
    ns.push_back(std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / iters);
  }
  other.join();
  sched_setaffinity(0, sizeof old, &old);
  if (!ok) return -1;
  std::sort(ns.begin(), ns.end());
  return ns[ns.size() / 2];
#else
  (void)a, (void)b, (void)iters, (void)rounds;
  return -1;
#endif
}

int hardware_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n ? (int)n : 1;
}

}  // namespace fastlstm
