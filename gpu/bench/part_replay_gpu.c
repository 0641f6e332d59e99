/*
 * part_replay_gpu.c — a recorded partitions batch (bench_hybrid
 * --dump-partitions on the engine's machine; format: index/index.h
 * part_search_plan_dump; reader: bench/part_dump.h) scanned on the GPU
 * through gpu_knn, as the engine's GPU backend (index/backend_gpu.c) would
 * scan it, needing only libc and the gpu library (the engine does not build
 * on the GPU hosts). The CPU twin is bench/part_replay.c; same output lines.
 *
 *   part_replay_gpu FILE [--reps 3]
 *
 * Every scanned cluster is uploaded once before the clock starts and stays
 * resident (one gpu_matrix each; the engine keys its copies by the
 * cluster's uid). Per cluster, as gk_knn groups queries by filter: one
 * gpu_knn for the queries that take every row, one per filtered query with
 * its rows as the bitmap (built before the clock, as the row bitmaps of
 * the CPU replay are); kk = min(2 k + 64, GPU_K_MAX) candidates, re-scored
 * on the host in F32 against the rows (the engine re-scores with the quant/
 * kernel and answers on the CPU a query whose list it cannot prove holds
 * the top k: not done here, so the distances may differ in the last bits
 * and the check compares docids), then mapped to docids and merged per
 * query. Timed: the scans, re-scoring and merge. Runs the F32 matrices
 * (exact SIMT sgemm), then BF16 ones with an F32 copy (tensor cores,
 * re-ranked exactly).
 *
 * Exit status: 0; 1 a failure; 2 usage; 77 no CUDA device ("skipped: no
 * CUDA device", after the file is read and described).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/part_dump.h"
#include "gpu/gpu.h"

static double now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e9 + t.tv_nsec;
}

/* Per cluster: its resident matrix, the queries taking every row packed,
 * and each filtered pair's bitmap. */
typedef struct rg_cluster {
	gpu_matrix_t *m;
	uint32_t nfull;
	uint32_t *full;  /* pair indices */
	float *qfull;    /* nfull x dim */
	uint64_t **words; /* per pair: NULL (full) or (n + 63) / 64 words */
} rg_cluster_t;

typedef struct rg {
	const pd_t *d;
	rg_cluster_t *c;
	uint32_t kk;
	uint32_t *ids;  /* largest m x kk */
	float *dists;
	pd_hit_t *b, *tmp; /* kk */
	double calls;
} rg_t;

static int hit_cmp(const void *x, const void *y)
{
	const pd_hit_t *a = x, *b = y;
	if (a->dist != b->dist)
		return a->dist < b->dist ? -1 : 1;
	return (a->docid > b->docid) - (a->docid < b->docid);
}

static float host_dist(const pd_t *d, const float *q, const float *x)
{
	float s = 0;
	if (d->metric == 0) {
		for (uint32_t j = 0; j < d->dim; j++)
			s += (q[j] - x[j]) * (q[j] - x[j]);
		return s;
	}
	for (uint32_t j = 0; j < d->dim; j++)
		s += q[j] * x[j];
	return 1 - s;
}

/* One query's device list (kk slots, row numbers) -> its top k as docids,
 * merged into its answer. */
static void rescore_merge(rg_t *g, const pd_cluster_t *cl, uint32_t q, const uint32_t *ids,
			  pd_hit_t *out, uint32_t *n_out)
{
	const pd_t *d = g->d;
	uint32_t c = 0, k = d->k[q];
	const float *qv = d->q + (size_t)q * d->dim;
	while (c < g->kk && ids[c] != UINT32_MAX && ids[c] < cl->n) {
		g->b[c] = (pd_hit_t){host_dist(d, qv, cl->rows + (size_t)ids[c] * d->dim), ids[c]};
		c++;
	}
	qsort(g->b, c, sizeof(pd_hit_t), hit_cmp); /* (dist, row): rows ascend with docid */
	c = c < k ? c : k;
	for (uint32_t i = 0; i < c; i++)
		g->b[i].docid = cl->docids[g->b[i].docid];
	pd_merge(out + (size_t)q * d->kmax, &n_out[q], k, g->b, c, g->tmp);
}

static int run_once(rg_t *g, pd_hit_t *out, uint32_t *n_out, vela_err_t *err)
{
	const pd_t *d = g->d;
	memset(n_out, 0, d->nq * sizeof(*n_out));
	g->calls = 0;
	for (uint32_t i = 0; i < d->n_cl; i++) {
		const pd_cluster_t *cl = &d->cl[i];
		rg_cluster_t *c = &g->c[i];
		uint32_t kk = 2 * cl->kmax + 64 < GPU_K_MAX ? 2 * cl->kmax + 64 : GPU_K_MAX;
		gpu_knn_params_t p = {.k = kk};
		uint32_t saved = g->kk;
		g->kk = kk;
		if (c->nfull) {
			int rc = gpu_knn(c->m, c->qfull, c->nfull, &p, g->ids, g->dists, err);
			if (rc)
				return rc;
			g->calls++;
			for (uint32_t j = 0; j < c->nfull; j++)
				rescore_merge(g, cl, cl->pairs[c->full[j]].q, g->ids + (size_t)j * kk,
					      out, n_out);
		}
		for (uint32_t j = 0; j < cl->m; j++) {
			if (c->words[j] == NULL)
				continue;
			uint32_t q = cl->pairs[j].q;
			p.filter = c->words[j];
			int rc = gpu_knn(c->m, d->q + (size_t)q * d->dim, 1, &p, g->ids, g->dists, err);
			p.filter = NULL;
			if (rc)
				return rc;
			g->calls++;
			rescore_merge(g, cl, q, g->ids, out, n_out);
		}
		g->kk = saved;
	}
	return 0;
}

static void rg_free(rg_t *g)
{
	for (uint32_t i = 0; g->c && i < g->d->n_cl; i++) {
		rg_cluster_t *c = &g->c[i];
		gpu_matrix_free(c->m);
		for (uint32_t j = 0; c->words && j < g->d->cl[i].m; j++)
			free(c->words[j]);
		free(c->words);
		free(c->full);
		free(c->qfull);
	}
	free(g->c);
	free(g->ids);
	free(g->dists);
	free(g->b);
	free(g->tmp);
	g->c = NULL;
}

/* Upload every cluster as `elem` and build the filters' bitmaps. */
static int rg_prepare(rg_t *g, gpu_ctx_t *ctx, gpu_elem_t elem, size_t *bytes, vela_err_t *err)
{
	const pd_t *d = g->d;
	uint32_t most = 1, kkmax = 2 * d->kmax + 64 < GPU_K_MAX ? 2 * d->kmax + 64 : GPU_K_MAX;
	g->c = calloc(d->n_cl ? d->n_cl : 1, sizeof(rg_cluster_t));
	g->b = malloc(kkmax * sizeof(pd_hit_t));
	g->tmp = malloc(kkmax * sizeof(pd_hit_t));
	if (g->c == NULL || g->b == NULL || g->tmp == NULL)
		return VELA_ENOMEM;
	*bytes = 0;
	for (uint32_t i = 0; i < d->n_cl; i++) {
		const pd_cluster_t *cl = &d->cl[i];
		rg_cluster_t *c = &g->c[i];
		most = cl->m > most ? cl->m : most;
		gpu_matrix_params_t mp = {.elem = elem, .metric = d->metric ? GPU_METRIC_IP
									     : GPU_METRIC_L2,
					  .dim = d->dim, .capacity = cl->n,
					  .keep_f32 = elem != GPU_ELEM_F32};
		int rc = gpu_matrix_create(ctx, &mp, &c->m, err);
		if (rc == 0)
			rc = gpu_matrix_append(c->m, cl->rows, cl->n, err);
		if (rc)
			return rc;
		*bytes += gpu_matrix_bytes(c->m);
		c->words = calloc(cl->m, sizeof(uint64_t *));
		c->full = malloc(cl->m * sizeof(uint32_t));
		c->qfull = malloc((size_t)cl->m * d->dim * sizeof(float));
		if (c->words == NULL || c->full == NULL || c->qfull == NULL)
			return VELA_ENOMEM;
		for (uint32_t j = 0; j < cl->m; j++) {
			const pd_pair_t *p = &cl->pairs[j];
			if (p->nf == PD_FULL) {
				memcpy(c->qfull + (size_t)c->nfull * d->dim, d->q + (size_t)p->q * d->dim,
				       d->dim * sizeof(float));
				c->full[c->nfull++] = j;
				continue;
			}
			if ((c->words[j] = calloc((cl->n + 63) / 64, sizeof(uint64_t))) == NULL)
				return VELA_ENOMEM;
			for (uint32_t t = 0; t < p->nf; t++)
				c->words[j][p->rows[t] >> 6] |= 1ull << (p->rows[t] & 63);
		}
	}
	g->ids = malloc((size_t)most * kkmax * sizeof(uint32_t));
	g->dists = malloc((size_t)most * kkmax * sizeof(float));
	return g->ids && g->dists ? 0 : VELA_ENOMEM;
}

int main(int argc, char **argv)
{
	pd_t d;
	uint32_t reps;
	int st = pd_open_main(argc, argv, "part_replay_gpu", &d, &reps);
	if (st)
		return st;
	if (gpu_device_count() == 0) {
		printf("skipped: no CUDA device\n");
		pd_free(&d);
		return 77;
	}
	gpu_ctx_t *ctx = NULL;
	vela_err_t err = {0};
	if (gpu_ctx_open(0, &ctx, &err)) {
		fprintf(stderr, "gpu_ctx_open: %s\n", err.msg);
		return 1;
	}
	printf("device: %s\n", gpu_ctx_name(ctx));
	pd_hit_t *got = malloc((size_t)(d.nq ? d.nq : 1) * (d.kmax ? d.kmax : 1) * sizeof(*got));
	uint32_t *n_got = malloc((d.nq ? d.nq : 1) * sizeof(uint32_t));
	int rc = got && n_got ? 0 : VELA_ENOMEM;
	static const gpu_elem_t elems[] = {GPU_ELEM_F32, GPU_ELEM_BF16};
	static const char *const names[] = {"gpu F32", "gpu BF16 (re-ranked in F32)"};
	for (int e = 0; rc == 0 && e < 2; e++) {
		rg_t g = {.d = &d};
		size_t bytes = 0;
		double t0 = now_ns();
		rc = rg_prepare(&g, ctx, elems[e], &bytes, &err);
		if (rc == 0)
			printf("%s: %u clusters resident, %.1f MB on the device, uploaded in %.2f s\n",
			       names[e], d.n_cl, bytes / 1e6, (now_ns() - t0) * 1e-9);
		if (rc == 0) /* warm-up: the first calls pay the library's set-up */
			rc = run_once(&g, got, n_got, &err);
		double best = INFINITY;
		for (uint32_t r = 0; rc == 0 && r < reps; r++) {
			double t = now_ns();
			rc = run_once(&g, got, n_got, &err);
			double ns = now_ns() - t;
			printf("rep %u: %.2f ms\n", r, ns * 1e-6);
			best = ns < best ? ns : best;
		}
		if (rc == 0) {
			pd_report(&d, names[e], best, g.calls);
			uint32_t same, exact;
			double rel;
			pd_check(&d, got, n_got, &same, &exact, &rel);
			printf("check: %u / %u queries with the engine's docids, %u with its distances bit "
			       "for bit (max relative difference %.2g)\n",
			       same, d.nq, exact, rel);
		}
		rg_free(&g);
	}
	if (rc)
		fprintf(stderr, "replay: error %d: %s\n", rc, err.msg);
	free(got);
	free(n_got);
	gpu_ctx_close(ctx);
	pd_free(&d);
	return rc ? 1 : 0;
}
