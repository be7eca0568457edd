// cpu_features.h: what this CPU can execute, detected at runtime (CPUID + OS support of the
// register state, via the compiler's __builtin_cpu_supports).
#pragma once

#include <string>
#include <vector>

namespace fastlstm {

struct CpuFeatures {
  bool sse2 = false, avx = false, avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512dq = false, avx512vl = false, avx512_bf16 = false;
  bool amx_tile = false;
  std::string vendor, brand;
};

const CpuFeatures& cpu_features();

}  // namespace fastlstm
