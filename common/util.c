/* Hashing (xxHash XXH3), aligned allocation, clock, byte buffers. */
#include <stdlib.h>
#include <string.h>
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

/* ------------------------------------------------ byte buffers */

void vela_wbuf_put(vela_wbuf_t *w, const void *src, size_t n)
{
	if (w->oom || n == 0)
		return;
	if (w->len + n > w->cap) {
		size_t cap = w->cap ? w->cap : 256;
		while (cap < w->len + n)
			cap *= 2;
		uint8_t *v = realloc(w->b, cap);
		if (v == NULL) {
			w->oom = true;
			return;
		}
		w->b = v;
		w->cap = cap;
	}
	memcpy(w->b + w->len, src, n);
	w->len += n;
}

const uint8_t *vela_rbuf_take(vela_rbuf_t *r, size_t n)
{
	if (r->bad || n > r->len - r->o) {
		r->bad = true;
		return NULL;
	}
	const uint8_t *s = r->b + r->o;
	r->o += n;
	return s;
}

uint32_t vela_rbuf_u32(vela_rbuf_t *r)
{
	const uint8_t *s = vela_rbuf_take(r, 4);
	uint32_t v = 0;
	if (s)
		memcpy(&v, s, 4);
	return v;
}

uint64_t vela_rbuf_u64(vela_rbuf_t *r)
{
	const uint8_t *s = vela_rbuf_take(r, 8);
	uint64_t v = 0;
	if (s)
		memcpy(&v, s, 8);
	return v;
}
