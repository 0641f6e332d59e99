/* GRAPH index: the graph_store_t adapter over a FLAT index (F32 or F16
 * rows read in place with the quant/ kernels flat_search uses). */
#include <math.h>
#include <string.h>

#include "index/flat_impl.h"
#include "index/graph_impl.h"

/* Ids the FLAT index never held read as infinitely far instead of out of
 * bounds (removed rows are zero and stay readable, see flat_remove). */
static bool gsf_ok(const flat_index_t *f, uint32_t id)
{
	return id < f->end;
}

static int gsf_prepare(void *ctx, const float *q, void *pq)
{
	const flat_index_t *f = ctx;
	float n2;
	int rc = flat_query_check(f, q, &n2);
	if (rc == 0)
		memcpy(pq, q, (size_t)f->dim * sizeof(float));
	return rc;
}

static float gsf_dist(void *ctx, const void *pq, uint32_t id)
{
	const flat_index_t *f = ctx;
	return gsf_ok(f, id) ? f->dist(pq, flat_row(f, id), f->dim) : INFINITY;
}

static float gsf_dist_ids_f32(void *ctx, uint32_t a, uint32_t b)
{
	const flat_index_t *f = ctx;
	if (!gsf_ok(f, a) || !gsf_ok(f, b))
		return INFINITY;
	return f->dist(flat_row(f, a), flat_row(f, b), f->dim);
}

/* F16 x F16: decode row a in chunks and accumulate the F16 kernels (L2 and
 * the dot product both add up over chunks), so no per-thread buffer. */
#define GSF_CHUNK 256u

static float gsf_dist_ids_f16(void *ctx, uint32_t a, uint32_t b)
{
	const flat_index_t *f = ctx;
	if (!gsf_ok(f, a) || !gsf_ok(f, b))
		return INFINITY;
	const uint16_t *ra = flat_row(f, a), *rb = flat_row(f, b);
	float buf[GSF_CHUNK], acc = 0;
	bool l2 = f->metric == VELA_METRIC_L2;
	for (uint32_t off = 0; off < f->dim; off += GSF_CHUNK) {
		uint32_t n = f->dim - off < GSF_CHUNK ? f->dim - off : GSF_CHUNK;
		quant_f16_to_f32(ra + off, buf, n);
		acc += l2 ? quant_l2sq_f16(buf, rb + off, n) : quant_dot_f16(buf, rb + off, n);
	}
	return l2 ? acc : 1.0f - acc;
}

static void gsf_prefetch(const void *ctx, uint32_t id)
{
	const flat_index_t *f = ctx;
	if (!gsf_ok(f, id))
		return;
	const char *r = flat_row(f, id);
	size_t bytes = (size_t)f->dim * f->esize;
	if (bytes > 1024)
		bytes = 1024; /* the hardware prefetcher takes over from there */
	for (size_t o = 0; o < bytes; o += 64)
		__builtin_prefetch(r + o, 0, 3);
}

graph_prefetch_fn graph_store_prefetch(const graph_store_t *st)
{
	return st->prefetch;
}

static int gsf_get(void *ctx, uint32_t id, float *out)
{
	return flat_get(ctx, id, out);
}

int graph_store_flat(const flat_index_t *f, graph_store_t *out)
{
	if (f == NULL || out == NULL)
		return VELA_EINVAL;
	*out = (graph_store_t){
		.ctx = (void *)f,
		.dim = f->dim,
		.metric = f->metric,
		.query_size = (size_t)f->dim * sizeof(float),
		.prepare = gsf_prepare,
		.dist = gsf_dist,
		.dist_rerank = NULL,
		.dist_ids = f->type == VELA_VEC_FLOAT16 ? gsf_dist_ids_f16 : gsf_dist_ids_f32,
		.get = gsf_get,
		.prefetch = gsf_prefetch,
	};
	return 0;
}
