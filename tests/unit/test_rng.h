/* Seeded random numbers for tests: splitmix64, uniform doubles and Box-Muller
 * gaussians. Define TEST_RNG_SEED before including to pick the stream. */
#ifndef VELA_TEST_RNG_H
#define VELA_TEST_RNG_H

#include <math.h>
#include <stdint.h>

#ifndef TEST_RNG_SEED
#define TEST_RNG_SEED 0x243f6a8885a308d3ull
#endif

static uint64_t rng_state = TEST_RNG_SEED;

static inline uint64_t rng_next(void) /* splitmix64 */
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline double rng_unit(void)
{
	return ((double)(rng_next() >> 11) + 0.5) * 0x1p-53;
}

static inline float rng_gauss(void) /* Box-Muller */
{
	return (float)(sqrt(-2.0 * log(rng_unit())) * cos(6.283185307179586 * rng_unit()));
}

#endif
