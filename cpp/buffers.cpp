// buffers.cpp: the float buffers and their pool (lstm.h), compiled once for the baseline ISA.
#include "lstm.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace fastlstm {

BufferPool& buffer_pool() {
  static BufferPool* pool = new BufferPool;  // never destroyed: buffers may be freed at exit
  return *pool;
}
void release_buffer_pool() {
  BufferPool& bp = buffer_pool();
  std::lock_guard<std::mutex> lock(bp.mu);
  for (auto& f : bp.free) std::free(f.first);
  bp.free.clear();
  bp.bytes = 0;
}

void FreeDeleter::operator()(float* p) const noexcept {
  if (p && bytes >= kPoolMinBytes) {
    BufferPool& bp = buffer_pool();
    std::lock_guard<std::mutex> lock(bp.mu);
    if (bp.free.size() < kPoolBuffers && bp.bytes + bytes <= kPoolBytes) {
      bp.free.emplace_back(p, bytes);
      bp.bytes += bytes;
      return;
    }
  }
  std::free(p);
}

fbuf alloc_floats(size_t n, bool huge) {
  constexpr size_t kHuge = size_t(2) << 20, kLine = 64;
  size_t bytes = std::max<size_t>(n, 1) * sizeof(float);
  if (huge && bytes >= kHugeMinBytes) bytes = (bytes + kHuge - 1) / kHuge * kHuge;
  if (bytes >= kPoolMinBytes) {  // the smallest pooled buffer that fits, if within 2x
    BufferPool& bp = buffer_pool();
    std::lock_guard<std::mutex> lock(bp.mu);
    size_t best = bp.free.size();
    for (size_t i = 0; i < bp.free.size(); ++i)
      if (bp.free[i].second >= bytes && bp.free[i].second <= 2 * bytes &&
          (best == bp.free.size() || bp.free[i].second < bp.free[best].second))
        best = i;
    if (best < bp.free.size()) {
      auto f = bp.free[best];
      bp.free.erase(bp.free.begin() + (long)best);
      bp.bytes -= f.second;
      return fbuf(static_cast<float*>(f.first), FreeDeleter{f.second});
    }
  }
  void* p;
  if (huge && bytes >= kHugeMinBytes) {
    p = std::aligned_alloc(kHuge, bytes);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (p) madvise(p, bytes, MADV_HUGEPAGE);  // a hint: without THP it is a no-op
#endif
  } else {
    // a cache line: malloc's 16 bytes left a 32-byte load across two lines every other vector
    // (the weights of a prepacked forward at (30,64,8,200) on Zen 3 ran 1.27x slower in the
    // processes where they were not 64-byte aligned)
    bytes = (bytes + kLine - 1) / kLine * kLine;
    p = std::aligned_alloc(kLine, bytes);
  }
  if (!p) throw std::bad_alloc();
  return fbuf(static_cast<float*>(p), FreeDeleter{bytes});
}

fbuf alloc_floats_kept(size_t n) {
  constexpr size_t kHuge = size_t(2) << 20, kLine = 64;
  const size_t bytes = (std::max<size_t>(n, 1) * sizeof(float) + kLine - 1) / kLine * kLine;
  if (bytes < kHuge) return alloc_floats(n, false);
  void* p = nullptr;
  if (posix_memalign(&p, kHuge, bytes) != 0) throw std::bad_alloc();  // no size rule, unlike aligned_alloc
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  madvise(p, bytes / kHuge * kHuge, MADV_HUGEPAGE);  // the whole 2 MB sections; a hint
#endif
  return fbuf(static_cast<float*>(p), FreeDeleter{bytes});
}

}  // namespace fastlstm
