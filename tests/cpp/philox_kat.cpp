// Host check of the device RNG in csrc/kernel_math.h: Random123's known-answer vectors for
// philox4x32-10, and the moments of philox_normal4. Prints one line per check; exit 1 on failure.
#include <cmath>
#include <cstdio>

#include "kernel_math.h"

int main() {
  using arcdae_fast::Words4;
  struct Kat {
    Words4 ctr;
    uint32_t k0, k1;
    Words4 want;
  } kats[] = {
      {{0, 0, 0, 0}, 0, 0, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
      {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, 0xffffffffu, 0xffffffffu,
       {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
      {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, 0xa4093822u, 0x299f31d0u,
       {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
  };
  int fails = 0;
  for (const Kat& k : kats) {
    const Words4 got = arcdae_fast::philox4x32(k.ctr, k.k0, k.k1);
    const bool ok = got.x == k.want.x && got.y == k.want.y && got.z == k.want.z &&
                    got.w == k.want.w;
    std::printf("%s kat %08x %08x %08x %08x\n", ok ? "ok" : "FAIL", got.x, got.y, got.z, got.w);
    fails += !ok;
  }
  double s = 0, q = 0;
  const int n = 250000;
  for (int i = 0; i < n; ++i) {
    const auto r = arcdae_fast::philox_normal4(1234, static_cast<uint64_t>(i), 5);
    for (float v : r.v) {
      s += v;
      q += double(v) * v;
    }
  }
  const double mean = s / (4.0 * n), var = q / (4.0 * n) - mean * mean;
  const bool ok = std::fabs(mean) < 0.01 && std::fabs(var - 1.0) < 0.01;
  std::printf("%s normals mean %.4f var %.4f\n", ok ? "ok" : "FAIL", mean, var);
  return fails || !ok;
}
