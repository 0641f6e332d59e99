/* Hashing (xxHash XXH3), aligned allocation, clock. */
#include <stdlib.h>
#include <time.h>

#include <xxhash.h>

#include "common.h"

uint64_t vela_hash64(const void *data, size_t len)
{
	return XXH3_64bits(data, len);
}

uint64_t vela_hash64_seed(const void *data, size_t len, uint64_t seed)
{
	return XXH3_64bits_withSeed(data, len, seed);
}

size_t vela_mul_size(size_t n, size_t size)
{
	if (size != 0 && n > SIZE_MAX / size)
		return SIZE_MAX;
	return n * size;
}

void *vela_aligned_alloc(size_t alignment, size_t size)
{
	if (size == SIZE_MAX)
		return NULL;
	void *p = NULL;
	if (posix_memalign(&p, alignment, size ? size : alignment) != 0)
		return NULL;
	return p;
}

uint64_t vela_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
