/* part_replay_cpu.h: a recorded partitions batch (bench/part_dump.h) scanned
 * through the process's index backend as index/partitions.c scan_cluster
 * scans it: per cluster one index_backend_knn over its F32 rows for its
 * queries, k = the largest k among them, each filtered query with its rows
 * as a bitmap, hits mapped to docids and merged per query. Shared by
 * bench/part_replay.c and tests/unit/test_index_partreplay.c. */
#ifndef VELA_BENCH_PART_REPLAY_CPU_H
#define VELA_BENCH_PART_REPLAY_CPU_H

#include "bench/part_dump.h"
#include "index/index.h"

/* The filters as the engine passes them (built once, outside the timing:
 * the engine's rows_of makes them per scan). */
typedef struct pr_cpu {
	roaring_bitmap_t ***flt; /* per cluster, m entries (NULL: every row) */
	float **Q;               /* per cluster, m x dim */
	vela_hit_t *hits;        /* largest m x kmax */
	pd_hit_t *b, *tmp;       /* kmax each: one query's hits as docids; merge */
	uint32_t *nh;
} pr_cpu_t;

static inline void pr_cpu_free(const pd_t *d, pr_cpu_t *c)
{
	for (uint32_t i = 0; c->flt && i < d->n_cl; i++) {
		for (uint32_t j = 0; c->flt[i] && j < d->cl[i].m; j++)
			if (c->flt[i][j])
				roaring_bitmap_free(c->flt[i][j]);
		free(c->flt[i]);
	}
	for (uint32_t i = 0; c->Q && i < d->n_cl; i++)
		free(c->Q[i]);
	free(c->flt);
	free(c->Q);
	free(c->hits);
	free(c->b);
	free(c->tmp);
	free(c->nh);
	memset(c, 0, sizeof(*c));
}

static inline int pr_cpu_prepare(const pd_t *d, pr_cpu_t *c)
{
	memset(c, 0, sizeof(*c));
	size_t most = 1;
	c->flt = calloc(d->n_cl ? d->n_cl : 1, sizeof(*c->flt));
	c->Q = calloc(d->n_cl ? d->n_cl : 1, sizeof(*c->Q));
	if (c->flt == NULL || c->Q == NULL)
		return VELA_ENOMEM;
	for (uint32_t i = 0; i < d->n_cl; i++) {
		const pd_cluster_t *cl = &d->cl[i];
		size_t w = (size_t)cl->m * (cl->kmax ? cl->kmax : 1);
		most = w > most ? w : most;
		c->flt[i] = calloc(cl->m, sizeof(roaring_bitmap_t *));
		c->Q[i] = malloc((size_t)cl->m * d->dim * sizeof(float));
		if (c->flt[i] == NULL || c->Q[i] == NULL)
			return VELA_ENOMEM;
		for (uint32_t j = 0; j < cl->m; j++) {
			const pd_pair_t *p = &cl->pairs[j];
			memcpy(c->Q[i] + (size_t)j * d->dim, d->q + (size_t)p->q * d->dim,
			       d->dim * sizeof(float));
			if (p->nf == PD_FULL)
				continue;
			if ((c->flt[i][j] = roaring_bitmap_create()) == NULL)
				return VELA_ENOMEM;
			roaring_bitmap_add_many(c->flt[i][j], p->nf, p->rows);
		}
	}
	c->hits = malloc(most * sizeof(vela_hit_t));
	c->b = malloc((d->kmax ? d->kmax : 1) * sizeof(pd_hit_t));
	c->tmp = malloc((d->kmax ? d->kmax : 1) * sizeof(pd_hit_t));
	c->nh = malloc(most * sizeof(uint32_t)); /* >= the largest m */
	return c->hits && c->b && c->tmp && c->nh ? 0 : VELA_ENOMEM;
}

/* Every cluster's scan; out (nq x d->kmax) and n_out receive each query's
 * merged top k. */
static inline int pr_cpu_run(const pd_t *d, pr_cpu_t *c, pd_hit_t *out, uint32_t *n_out)
{
	memset(n_out, 0, d->nq * sizeof(*n_out));
	int rc = 0;
	for (uint32_t i = 0; rc == 0 && i < d->n_cl; i++) {
		const pd_cluster_t *cl = &d->cl[i];
		index_rows_t rows = {.data = cl->rows, .type = VELA_VEC_FLOAT32,
				     .metric = (vela_metric_t)d->metric, .dim = d->dim,
				     .stride = d->dim, .n = cl->n, .norms = cl->norms,
				     .norm_max = cl->norm_max};
		index_knn_t req = {.queries = c->Q[i], .nq = cl->m, .k = cl->kmax,
				   .filters = (const roaring_bitmap_t *const *)c->flt[i]};
		rc = index_backend_knn(&rows, &req, c->hits, c->nh, NULL);
		for (uint32_t j = 0; rc == 0 && j < cl->m; j++) {
			uint32_t q = cl->pairs[j].q, k = d->k[q];
			const vela_hit_t *h = c->hits + (size_t)j * cl->kmax;
			uint32_t m = c->nh[j] < k ? c->nh[j] : k;
			for (uint32_t t = 0; t < m; t++)
				c->b[t] = (pd_hit_t){h[t].dist, cl->docids[h[t].docid]};
			pd_merge(out + (size_t)q * d->kmax, &n_out[q], k, c->b, m, c->tmp);
		}
	}
	return rc;
}

#endif
