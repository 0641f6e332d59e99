/* Bounded top-k heaps and result ordering over vela_hit_t, shared by the
 * FLAT scans (flat.c, flat_batch.c, flat_multi.c) and the compressed
 * store's scans (graph_store_lvq.c); a file of its own so that the fuzz
 * targets linking the store need not link the FLAT index. */
#include <stdlib.h>

#include "index/flat_impl.h"

static void flat_heap_sift_down(vela_hit_t *heap, uint32_t size, uint32_t i)
{
	for (;;) {
		uint32_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < size && flat_hit_less(heap[m], heap[l]))
			m = l;
		if (r < size && flat_hit_less(heap[m], heap[r]))
			m = r;
		if (m == i)
			return;
		vela_hit_t t = heap[i];
		heap[i] = heap[m];
		heap[m] = t;
		i = m;
	}
}

void flat_heap_push(vela_hit_t *heap, uint32_t *size, uint32_t k, vela_hit_t h)
{
	if (*size < k) {
		uint32_t i = (*size)++;
		while (i > 0 && flat_hit_less(heap[(i - 1) / 2], h)) {
			heap[i] = heap[(i - 1) / 2];
			i = (i - 1) / 2;
		}
		heap[i] = h;
	} else if (k > 0 && flat_hit_less(h, heap[0])) {
		heap[0] = h;
		flat_heap_sift_down(heap, *size, 0);
	}
}

static int flat_hit_cmp(const void *a, const void *b)
{
	vela_hit_t x = *(const vela_hit_t *)a, y = *(const vela_hit_t *)b;
	return flat_hit_less(x, y) ? -1 : flat_hit_less(y, x) ? 1 : 0;
}

void flat_hits_sort(vela_hit_t *hits, size_t n)
{
	if (n > 1)
		qsort(hits, n, sizeof(*hits), flat_hit_cmp);
}
