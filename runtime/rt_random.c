/* rt_random.c - counter-based random numbers.
 *
 * Every value is a pure function of (seed, stream, counter), so any draw can
 * be recomputed without replaying a sequence: parameter k of a tensor is
 * counter k of that tensor's stream, and epoch e's shuffle is stream e.
 * The mixing function is the splitmix64 finaliser (Steele, Lea, Flood 2014),
 * applied once per input word:
 *
 *   bits(seed, stream, counter) = h(h(h(seed) ^ stream) ^ counter)
 *   h(x) = mix(x + 0x9e3779b97f4a7c15)
 */
#include "rt_internal.h"

#include <math.h>

uint64_t dlrt_hash64(uint64_t x) {
  uint64_t z = x + UINT64_C(0x9e3779b97f4a7c15);
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static uint64_t random_bits(uint64_t seed, uint64_t stream, uint64_t counter) {
  return dlrt_hash64(dlrt_hash64(dlrt_hash64(seed) ^ stream) ^ counter);
}

double dlrt_uniform01(uint64_t seed, uint64_t stream, uint64_t counter) {
  /* The top 53 bits fill a double's mantissa exactly: k / 2^53 with k < 2^53
   * is in [0, 1) and every value is equally likely. */
  return (double)(random_bits(seed, stream, counter) >> 11) * 0x1.0p-53;
}

double dlrt_normal(uint64_t seed, uint64_t stream, uint64_t counter) {
  /* Box-Muller on counters 2k and 2k+1.  1 - u1 lies in (0, 1], so the
   * logarithm is finite. */
  double u1 = dlrt_uniform01(seed, stream, 2 * counter);
  double u2 = dlrt_uniform01(seed, stream, 2 * counter + 1);
  double radius = sqrt(-2.0 * log(1.0 - u1));
  return radius * cos(2.0 * 3.14159265358979323846 * u2);
}

uint64_t dlrt_name_stream(const char *name) {
  /* FNV-1a over the bytes, then one more mix so that similar names
   * ("h1.W", "h2.W") give unrelated streams. */
  uint64_t h = UINT64_C(0xcbf29ce484222325);
  for (const unsigned char *p = (const unsigned char *)(name ? name : ""); *p; p++) {
    h ^= *p;
    h *= UINT64_C(0x100000001b3);
  }
  return dlrt_hash64(h);
}
