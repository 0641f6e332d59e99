/* flat_search_multi: exact filtered kNN for a set of queries with their own
 * k and filters, planned together (index.h, "FLAT multi"; HQI's multi-query
 * optimisation as MicroNN describes it, reference/hybrid-queries.md §1.4:
 * invert query -> rows into rows -> queries, read each block of rows once,
 * score it against all its queries with one matrix product, keep one top-k
 * per query).
 *
 * Queries passing the same filter pointer touch the same docids: a group.
 * Each group is scanned, gathered or joins the whole-field GEMM, whichever
 * the cost model of index.h rates cheapest. The backend returns
 * direct-kernel distances ordered by (dist, row), rows of a gathered block
 * ascend with docid, and blocks partition the matches, so every answer is
 * flat_search's, bit for bit. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "index/flat_impl.h"

void flat_multi_opts_default(flat_multi_opts_t *o)
{
	o->gather_rows = FLAT_MULTI_GATHER_ROWS_DEFAULT;
	o->group_min = FLAT_MULTI_GROUP_MIN_DEFAULT;
	o->dense_min = FLAT_MULTI_DENSE_MIN_DEFAULT;
	o->scan_cost = FLAT_MULTI_SCAN_COST_DEFAULT;
	o->gather_cost = FLAT_MULTI_GATHER_COST_DEFAULT;
	o->dense_cost = FLAT_MULTI_DENSE_COST_DEFAULT;
}

static int flat_multi_opts_check(const flat_multi_opts_t *o)
{
	if (o->gather_rows < FLAT_MULTI_GATHER_ROWS_MIN ||
	    o->gather_rows > FLAT_MULTI_GATHER_ROWS_MAX ||
	    o->group_min < FLAT_MULTI_GROUP_MIN_MIN || o->group_min > FLAT_MULTI_GROUP_MIN_MAX ||
	    o->dense_min < FLAT_MULTI_DENSE_MIN_MIN || o->dense_min > FLAT_MULTI_DENSE_MIN_MAX ||
	    !(o->scan_cost >= FLAT_MULTI_SCAN_COST_MIN &&
	      o->scan_cost <= FLAT_MULTI_SCAN_COST_MAX) ||
	    !(o->gather_cost >= FLAT_MULTI_GATHER_COST_MIN &&
	      o->gather_cost <= FLAT_MULTI_GATHER_COST_MAX) ||
	    !(o->dense_cost >= FLAT_MULTI_DENSE_COST_MIN &&
	      o->dense_cost <= FLAT_MULTI_DENSE_COST_MAX))
		return VELA_EINVAL;
	return 0;
}

/* Group order: by filter pointer, then by position (any order would do). */
static int flat_multi_cmp(const void *a, const void *b, void *ctx)
{
	const flat_multi_query_t *qs = ctx;
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	uintptr_t fx = (uintptr_t)qs[x].filter, fy = (uintptr_t)qs[y].filter;
	if (fx != fy)
		return fx < fy ? -1 : 1;
	return (x > y) - (x < y);
}

/* Merge sort of query indices by flat_multi_cmp (qsort_r is not C11). */
static void flat_multi_sort(uint32_t *idx, uint32_t *tmp, uint32_t n,
			    const flat_multi_query_t *qs)
{
	if (n < 2)
		return;
	uint32_t h = n / 2;
	flat_multi_sort(idx, tmp, h, qs);
	flat_multi_sort(idx + h, tmp, n - h, qs);
	uint32_t i = 0, j = h, o = 0;
	while (i < h && j < n)
		tmp[o++] = flat_multi_cmp(&idx[j], &idx[i], (void *)qs) < 0 ? idx[j++] : idx[i++];
	while (i < h)
		tmp[o++] = idx[i++];
	while (j < n)
		tmp[o++] = idx[j++];
	memcpy(idx, tmp, n * sizeof(*idx));
}

static void flat_multi_scan(const flat_index_t *f, flat_multi_query_t *q)
{
	q->n_out = 0;
	q->how = FLAT_MULTI_SCAN;
	q->scored = q->filter ? roaring_bitmap_get_cardinality(q->filter) : f->count;
	if (q->k > 0)
		flat_search_scan(f, q->q, q->k, q->filter, q->out, &q->n_out);
}

/* Merge a block's hits (b, ascending, docids already mapped) into q's
 * running top-k (q->out, q->n_out ascending). tmp: k slots. */
static void flat_multi_merge(flat_multi_query_t *q, const vela_hit_t *b, uint32_t nb,
			     vela_hit_t *tmp)
{
	uint32_t i = 0, j = 0, o = 0;
	while (o < q->k && (i < q->n_out || j < nb)) {
		bool take_b = i == q->n_out || (j < nb && flat_hit_less(b[j], q->out[i]));
		tmp[o++] = take_b ? b[j++] : q->out[i++];
	}
	memcpy(q->out, tmp, o * sizeof(*tmp));
	q->n_out = o;
}

/* Scratch of the gather path: a block of rows, their norms and docids, the
 * group's packed queries and the backend's output. */
typedef struct {
	uint8_t *rows;
	float *norms;
	uint32_t *ids, *read;
	float *Q;
	vela_hit_t *hits, *tmp;
	uint32_t *nh;
} flat_gather_t;

static void flat_gather_free(flat_gather_t *g)
{
	free(g->rows);
	free(g->norms);
	free(g->ids);
	free(g->read);
	free(g->Q);
	free(g->hits);
	free(g->tmp);
	free(g->nh);
}

static int flat_gather_alloc(const flat_index_t *f, uint32_t rows, uint32_t ng, uint32_t kmax,
			     flat_gather_t *g)
{
	size_t row = f->stride * f->esize;
	memset(g, 0, sizeof(*g));
	g->rows = vela_aligned_alloc(64, vela_mul_size(rows, row));
	g->norms = malloc(vela_mul_size(rows, sizeof(float)));
	g->ids = malloc(vela_mul_size(rows, sizeof(uint32_t)));
	g->read = malloc(vela_mul_size(rows, sizeof(uint32_t)));
	g->Q = malloc(vela_mul_size((size_t)ng * f->dim, sizeof(float)));
	g->hits = malloc(vela_mul_size((size_t)ng * (kmax ? kmax : 1), sizeof(vela_hit_t)));
	g->tmp = malloc(vela_mul_size(kmax ? kmax : 1, sizeof(vela_hit_t)));
	g->nh = malloc(vela_mul_size(ng, sizeof(uint32_t)));
	return g->rows && g->norms && g->ids && g->read && g->Q && g->hits && g->tmp && g->nh
		       ? 0
		       : VELA_ENOMEM;
}

/* Copy the next (up to cap) present rows of the filter into the scratch;
 * returns how many. */
static uint32_t flat_gather_next(const flat_index_t *f, roaring_uint32_iterator_t *it,
				 flat_gather_t *g, uint32_t cap)
{
	size_t row = f->stride * f->esize;
	uint32_t n = 0;
	while (n < cap && it->has_value) {
		uint32_t got = roaring_read_uint32_iterator(it, g->read, cap - n);
		for (uint32_t i = 0; i < got; i++) {
			uint32_t id = g->read[i];
			if (!flat_live_has(f, id))
				continue;
			memcpy(g->rows + (size_t)n * row, flat_row(f, id), row);
			g->norms[n] = f->norms[id];
			g->ids[n++] = id;
		}
	}
	return n;
}

/* One group sharing a sparse filter: gather its rows block by block, score
 * each block against every query of the group with one backend kNN. */
static int flat_multi_gather(const flat_index_t *f, flat_multi_query_t *qs, const uint32_t *grp,
			     uint32_t ng, const flat_multi_opts_t *o)
{
	const roaring_bitmap_t *flt = qs[grp[0]].filter;
	uint64_t fit = FLAT_MULTI_GATHER_BYTES / (f->stride * f->esize), rows = o->gather_rows;
	if (rows > fit)
		rows = fit ? fit : 1;
	if (rows > roaring_bitmap_get_cardinality(flt))
		rows = roaring_bitmap_get_cardinality(flt);
	uint32_t cap = (uint32_t)rows, kmax = 0;
	for (uint32_t i = 0; i < ng; i++) {
		flat_multi_query_t *q = &qs[grp[i]];
		kmax = q->k > kmax ? q->k : kmax;
		q->n_out = 0;
		q->how = FLAT_MULTI_GATHER;
		q->scored = 0;
	}
	if (kmax == 0 || cap == 0)
		return 0;
	flat_gather_t g;
	int rc = flat_gather_alloc(f, cap, ng, kmax, &g);
	for (uint32_t i = 0; rc == 0 && i < ng; i++)
		memcpy(g.Q + (size_t)i * f->dim, qs[grp[i]].q, f->dim * sizeof(float));
	roaring_uint32_iterator_t it;
	roaring_init_iterator(flt, &it);
	uint32_t n;
	while (rc == 0 && (n = flat_gather_next(f, &it, &g, cap)) > 0) {
		index_rows_t rows = {.data = g.rows, .type = f->type, .metric = f->metric,
				     .dim = f->dim, .stride = f->stride, .n = n, .norms = g.norms,
				     .norm_max = f->norm_max, .db_block = f->db_block,
				     .q_block = f->q_block};
		index_knn_t req = {.queries = g.Q, .nq = ng, .k = kmax};
		rc = index_backend_knn(&rows, &req, g.hits, g.nh, NULL);
		for (uint32_t i = 0; rc == 0 && i < ng; i++) {
			flat_multi_query_t *q = &qs[grp[i]];
			vela_hit_t *h = g.hits + (size_t)i * kmax;
			uint32_t nh = g.nh[i] < q->k ? g.nh[i] : q->k;
			for (uint32_t j = 0; j < nh; j++)
				h[j].docid = g.ids[h[j].docid];
			flat_multi_merge(q, h, nh, g.tmp);
			q->scored += n;
		}
	}
	flat_gather_free(&g);
	return rc;
}

/* Every dense or unfiltered query of the set in one backend kNN over the
 * field's rows: each db block is read once for all of them. */
static int flat_multi_dense(const flat_index_t *f, flat_multi_query_t *qs, const uint32_t *d,
			    uint32_t nd)
{
	uint32_t kmax = 0;
	for (uint32_t i = 0; i < nd; i++)
		kmax = qs[d[i]].k > kmax ? qs[d[i]].k : kmax;
	float *Q = malloc(vela_mul_size((size_t)nd * f->dim, sizeof(float)));
	const roaring_bitmap_t **flt = malloc(vela_mul_size(nd, sizeof(*flt)));
	vela_hit_t *hits = malloc(vela_mul_size((size_t)nd * (kmax ? kmax : 1), sizeof(*hits)));
	uint32_t *nh = malloc(vela_mul_size(nd, sizeof(uint32_t)));
	int rc = Q && flt && hits && nh ? 0 : VELA_ENOMEM;
	for (uint32_t i = 0; rc == 0 && i < nd; i++) {
		memcpy(Q + (size_t)i * f->dim, qs[d[i]].q, f->dim * sizeof(float));
		flt[i] = qs[d[i]].filter;
	}
	if (rc == 0 && kmax > 0) {
		index_rows_t rows;
		flat_rows(f, &rows);
		index_knn_t req = {.queries = Q, .nq = nd, .k = kmax, .filters = flt};
		rc = index_backend_knn(&rows, &req, hits, nh, NULL);
	}
	for (uint32_t i = 0; rc == 0 && i < nd; i++) {
		flat_multi_query_t *q = &qs[d[i]];
		q->how = FLAT_MULTI_DENSE;
		q->scored = f->count;
		q->n_out = kmax == 0 ? 0 : nh[i] < q->k ? nh[i] : q->k;
		memcpy(q->out, hits + (size_t)i * kmax, q->n_out * sizeof(*hits));
	}
	free(Q);
	free(flt);
	free(hits);
	free(nh);
	return rc;
}

static int flat_multi_check(const flat_index_t *f, const flat_multi_query_t *qs, uint32_t nq)
{
	for (uint32_t i = 0; i < nq; i++) {
		float qn;
		if (qs[i].q == NULL || qs[i].k > VELA_K_MAX || (qs[i].k > 0 && qs[i].out == NULL))
			return VELA_EINVAL;
		int rc = flat_query_check(f, qs[i].q, &qn);
		if (rc)
			return rc; /* VELA_EINVAL, or VELA_EUNSUPPORTED: rows released */
	}
	return 0;
}

/* The cheapest way to answer g queries sharing `flt` (index.h's model). */
static enum flat_multi_how flat_multi_choose(const flat_index_t *f,
					     const roaring_bitmap_t *flt, uint32_t g,
					     const flat_multi_opts_t *o)
{
	if (flt == NULL) /* every row, in place: nothing to gather or mask */
		return FLAT_MULTI_DENSE;
	double n = (double)f->count, m = (double)roaring_bitmap_get_cardinality(flt);
	double scan = g * m * o->scan_cost, dense = g * n * o->dense_cost;
	double gather = g >= o->group_min ? m * o->gather_cost + g * m : INFINITY;
	if (dense < scan && dense <= gather)
		return FLAT_MULTI_DENSE;
	return gather < scan ? FLAT_MULTI_GATHER : FLAT_MULTI_SCAN;
}

/* Run the groups of the sorted order; dense ones are collected into d. */
static int flat_multi_groups(const flat_index_t *f, flat_multi_query_t *qs, const uint32_t *idx,
			     uint32_t nq, const flat_multi_opts_t *o, uint32_t *d, uint32_t *nd)
{
	int rc = 0;
	for (uint32_t s = 0, e; rc == 0 && s < nq; s = e) {
		const roaring_bitmap_t *flt = qs[idx[s]].filter;
		for (e = s + 1; e < nq && qs[idx[e]].filter == flt;)
			e++;
		switch (flat_multi_choose(f, flt, e - s, o)) {
		case FLAT_MULTI_DENSE:
			memcpy(d + *nd, idx + s, (e - s) * sizeof(*idx));
			*nd += e - s;
			break;
		case FLAT_MULTI_GATHER:
			rc = flat_multi_gather(f, qs, idx + s, e - s, o);
			break;
		default:
			for (uint32_t i = s; i < e; i++)
				flat_multi_scan(f, &qs[idx[i]]);
		}
	}
	return rc;
}

int flat_search_multi(const flat_index_t *f, flat_multi_query_t *qs, uint32_t nq,
		      const flat_multi_opts_t *opts)
{
	flat_multi_opts_t o;
	if (opts == NULL)
		flat_multi_opts_default(&o);
	else
		o = *opts;
	if (f == NULL || (nq > 0 && qs == NULL) || flat_multi_opts_check(&o))
		return VELA_EINVAL;
	int rc = flat_multi_check(f, qs, nq);
	if (rc || nq == 0)
		return rc;
	uint32_t *idx = malloc(vela_mul_size(nq, 3 * sizeof(uint32_t)));
	if (idx == NULL)
		return VELA_ENOMEM;
	uint32_t *tmp = idx + nq, *d = idx + 2 * (size_t)nq, nd = 0;
	for (uint32_t i = 0; i < nq; i++)
		idx[i] = i;
	flat_multi_sort(idx, tmp, nq, qs);
	rc = flat_multi_groups(f, qs, idx, nq, &o, d, &nd);
	if (rc == 0 && nd >= o.dense_min)
		rc = flat_multi_dense(f, qs, d, nd);
	for (uint32_t i = 0; rc == 0 && nd < o.dense_min && i < nd; i++)
		flat_multi_scan(f, &qs[d[i]]);
	free(idx);
	return rc;
}
