/* Private to index/: the FLAT index layout and helpers shared by the scan
 * path (flat.c) and the GEMM path (flat_batch.c). */
#ifndef VELA_FLAT_IMPL_H
#define VELA_FLAT_IMPL_H

#include <stdbool.h>

#include "index/index.h"
#include "quant/quant.h"

/* Rows are allocated in multiples of 64 so the presence bitset is whole
 * words and GEMM blocks start on word boundaries. */
#define FLAT_CAPACITY_INITIAL 1024u

struct flat_index {
	uint32_t dim;
	vela_metric_t metric;
	vela_vec_type_t type;
	size_t esize;         /* bytes per element: 4 or 2 */
	size_t stride;        /* elements per row, >= dim (zero padding) */
	uint8_t *data;        /* cap rows, 64-byte aligned */
	float *norms;         /* |x|^2 per row (0 for absent rows) */
	uint64_t *live;       /* presence bitset, cap / 64 words */
	uint64_t cap;         /* rows allocated; multiple of 64 */
	uint64_t end;         /* 1 + highest docid ever stored (0 if none) */
	float norm_max;       /* max |x|^2 ever stored; never lowered */
	roaring_bitmap_t *docids; /* NULL in a borrowed view (backend.c) */
	uint64_t count;       /* present rows (the cardinality of docids) */
	uint32_t db_block, q_block;
	quant_dist_fn dist;   /* full metric distance of the chosen kernels */
	uint64_t uid;         /* residency key of the GPU backend (index.h BACKEND) */
	uint64_t generation;  /* +1 on every set/remove: invalidates GPU copies */
	bool ids_only;        /* flat_rows_release: data and norms freed, docids kept */
};

static inline const void *flat_row(const flat_index_t *f, uint64_t docid)
{
	return f->data + docid * f->stride * f->esize;
}

static inline bool flat_live_has(const flat_index_t *f, uint64_t docid)
{
	return docid < f->end && ((f->live[docid >> 6] >> (docid & 63)) & 1);
}

/* Check a query and return its |q|^2 (computed in double). */
int flat_query_check(const flat_index_t *f, const float *q, float *norm_sq);

/* Does this filter take the iterate-the-filter strategy? */
bool flat_filter_is_sparse(const flat_index_t *f, const roaring_bitmap_t *filter);

/* Presence & filter bits of words [w0, w0 + nw): `it` is the filter's
 * iterator (NULL = no filter), advanced monotonically, so successive calls
 * must ask for ascending word ranges. */
void flat_mask_words(const flat_index_t *f, roaring_uint32_iterator_t *it, uint64_t w0,
		     uint64_t nw, uint64_t *mask);

/* (dist, docid) order of results. */
static inline bool flat_hit_less(vela_hit_t a, vela_hit_t b)
{
	return a.dist < b.dist || (a.dist == b.dist && a.docid < b.docid);
}

/* Bounded max-heap of the k best hits (the worst on top). */
void flat_heap_push(vela_hit_t *heap, uint32_t *size, uint32_t k, vela_hit_t h);
/* Sort hits ascending by (dist, docid). */
void flat_hits_sort(vela_hit_t *hits, size_t n);

/* The CPU batch engine behind flat_search_batch and the CPU backend's knn:
 * `f` is a FLAT index or a borrowed view of an index_rows_t (no docids).
 * Queries already checked, qn[i] = |Q_i|^2; n_out zeroed by the caller. */
int flat_batch_knn(const flat_index_t *f, const float *Q, uint32_t nq, uint32_t k,
		   const roaring_bitmap_t *const *filters, const float *qn, vela_hit_t *out,
		   uint32_t *n_out);

/* The scan path of flat_search, arguments already checked. */
void flat_search_scan(const flat_index_t *f, const float *q, uint32_t k,
		      const roaring_bitmap_t *filter, vela_hit_t *out, uint32_t *n_out);

#endif
