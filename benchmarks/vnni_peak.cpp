// Peak int8 multiply-add rate of one core: 12 independent vpdpbusd chains on
// zmm registers (64 u8 x s8 products each), no memory traffic. An upper bound
// for any int8 GEMM on this CPU, used to judge the qgemm kernels and the
// int8 baselines they are compared with (see benchmarks/results/).
//
//   g++ -O2 -mavx512f -mavx512vnni benchmarks/vnni_peak.cpp -o build/vnni_peak && build/vnni_peak
#include <immintrin.h>

#include <chrono>
#include <cstdio>

int main() {
  constexpr int kChains = 12;
  constexpr long kSteps = 100000000;
  __m512i acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_epi32(i);
  __m512i a = _mm512_set1_epi8(1);
  const __m512i b = _mm512_set1_epi8(2);
  const auto start = std::chrono::steady_clock::now();
  for (long step = 0; step < kSteps; ++step) {
#pragma GCC unroll 12  // keeps acc[] in registers (else every step goes through memory)
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
    asm volatile("" : "+v"(a));  // keeps the loop from being folded away
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  __m512i sum = acc[0];
  for (int i = 1; i < kChains; ++i) sum = _mm512_add_epi32(sum, acc[i]);
  const double per_second = double(kSteps) * kChains / seconds;
  std::printf("%.3f G vpdpbusd/s = %.0f G int8 MAC/s per core (checksum %d)\n", per_second / 1e9,
              per_second * 64 / 1e9, _mm512_reduce_add_epi32(sum));
  return 0;
}
