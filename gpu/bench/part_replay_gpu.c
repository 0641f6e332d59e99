/*
 * part_replay_gpu.c — a recorded partitions batch (bench_hybrid
 * --dump-partitions on the engine's machine; format: index/index.h
 * part_search_plan_dump; reader: bench/part_dump.h) scanned on the GPU,
 * needing only libc and the gpu library (the engine does not build on the
 * GPU hosts). The CPU twin is bench/part_replay.c.
 *
 *   part_replay_gpu FILE [--reps 3]
 *
 * Two paths, one table line each (ms: the median of the reps; scans/s,
 * query x row pairs/s, effective GFLOP/s at 2 dim flops per query x row
 * pair, as bench_part_replay counts them):
 *
 *  - "batched": every cluster resident in one gpu_parts_t (uploaded before
 *    the clock), the whole batch one gpu_parts_scan (k = the largest k of the
 *    batch; each pair's list cut to its query's k), rows mapped to docids and
 *    merged per query on the host. Timed: the scan (upload of queries,
 *    pairs and filter rows, one kernel, download) and the merge; the
 *    "scan only" line is the gpu_parts_scan call alone. Checked twice:
 *    every pair against a double-precision brute force on the host (rows
 *    identical where the distances are not tied within 1e-5 relative,
 *    distances within 1e-4 relative), and every query's merged answer
 *    against the engine's recorded one (docids identical, or swapped only
 *    between distances tied within 1e-5; distances within 1e-4 relative:
 *    both sides sum in F32 but in a different order).
 *  - "per-call" (the baseline, as index/backend_gpu.c scans today): one
 *    gpu_matrix per cluster (F32, exact sgemm), one gpu_knn per cluster for
 *    the queries that take every row and one per filtered query (its rows as
 *    a bitmap, built before the clock), kk = min(2k + 64, GPU_K_MAX)
 *    candidates re-scored on the host in F32, merged. ~9,500 calls that each
 *    allocate scratch: its reps stop at PER_CALL_BUDGET_S seconds; a cut rep
 *    is reported as the clusters it scanned and its rate.
 *
 * Exit status: 0; 1 a failure or a batched answer outside the tolerances;
 * 2 usage; 77 no CUDA device ("skipped: no CUDA device", after the file is
 * read and described).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/part_dump.h"
#include "gpu/gpu.h"

/* Wall-clock budget of the per-call baseline (set-up, warm-up and reps). */
#define PER_CALL_BUDGET_S 12.0
/* Tolerances of the checks (see the top of the file). */
#define TOL_DIST 1e-4
#define TOL_TIE 1e-5

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

/* Every cluster's scans through gpu_knn, or as many as fit before
 * `deadline` (now_ns() clock): *done = the clusters scanned. */
static int run_once(rg_t *g, pd_hit_t *out, uint32_t *n_out, double deadline, uint32_t *done,
		    vela_err_t *err)
{
	const pd_t *d = g->d;
	memset(n_out, 0, d->nq * sizeof(*n_out));
	g->calls = 0;
	*done = 0;
	for (uint32_t i = 0; i < d->n_cl; i++, *done = i) {
		if (now_ns() > deadline)
			return 0;
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


/* ------------------------------------------------------------ batched */

static int dbl_cmp(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;
	return (a > b) - (a < b);
}

static double median(double *v, uint32_t n)
{
	qsort(v, n, sizeof(double), dbl_cmp);
	return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* |got - want| relative to want (1e-6 floor: an IP distance may be ~0). */
static double rel_diff(double got, double want)
{
	double den = fabs(want) > 1e-6 ? fabs(want) : 1e-6;
	return fabs(got - want) / den;
}

/* The batched path's inputs, built before the clock, and its outputs. */
typedef struct bt {
	gpu_parts_t *parts;
	gpu_part_pair_t *pairs; /* in the file's order: by cluster, then query */
	uint32_t npairs, nfilt, k;
	uint32_t *filt;
	uint32_t *ids; /* npairs x k */
	float *dists;
	pd_hit_t *b, *tmp; /* k each */
	float ms[3];       /* the last scan's device phases (gpu_parts_last_times) */
} bt_t;

static void bt_free(bt_t *t)
{
	gpu_parts_free(t->parts);
	free(t->pairs);
	free(t->filt);
	free(t->ids);
	free(t->dists);
	free(t->b);
	free(t->tmp);
	memset(t, 0, sizeof(*t));
}

static int bt_prepare(const pd_t *d, gpu_ctx_t *ctx, bt_t *t, vela_err_t *err)
{
	uint64_t nfilt = 0;
	memset(t, 0, sizeof(*t));
	t->npairs = (uint32_t)d->n_pairs;
	t->k = d->kmax ? d->kmax : 1;
	for (uint32_t c = 0; c < d->n_cl; c++)
		for (uint32_t j = 0; j < d->cl[c].m; j++)
			if (d->cl[c].pairs[j].nf != PD_FULL)
				nfilt += d->cl[c].pairs[j].nf;
	if (d->n_pairs > UINT32_MAX || nfilt >= UINT32_MAX) {
		snprintf(err->msg, sizeof(err->msg), "batch too large for one gpu_parts_scan");
		return VELA_EINVAL;
	}
	t->nfilt = (uint32_t)nfilt;
	float *rows = malloc((d->rows ? d->rows : 1) * d->dim * sizeof(float));
	uint64_t *off = malloc(((size_t)d->n_cl + 1) * sizeof(uint64_t));
	t->pairs = malloc((t->npairs ? t->npairs : 1) * sizeof(gpu_part_pair_t));
	t->filt = malloc((nfilt ? nfilt : 1) * sizeof(uint32_t));
	t->ids = malloc((size_t)(t->npairs ? t->npairs : 1) * t->k * sizeof(uint32_t));
	t->dists = malloc((size_t)(t->npairs ? t->npairs : 1) * t->k * sizeof(float));
	t->b = malloc(t->k * sizeof(pd_hit_t));
	t->tmp = malloc(t->k * sizeof(pd_hit_t));
	int rc = rows && off && t->pairs && t->filt && t->ids && t->dists && t->b && t->tmp
			 ? 0
			 : VELA_ENOMEM;
	uint32_t np = 0, nf = 0;
	if (rc == 0)
		off[0] = 0;
	for (uint32_t c = 0; rc == 0 && c < d->n_cl; c++) {
		const pd_cluster_t *cl = &d->cl[c];
		memcpy(rows + off[c] * d->dim, cl->rows, (size_t)cl->n * d->dim * sizeof(float));
		off[c + 1] = off[c] + cl->n;
		for (uint32_t j = 0; j < cl->m; j++) {
			const pd_pair_t *p = &cl->pairs[j];
			gpu_part_pair_t *g = &t->pairs[np++];
			*g = (gpu_part_pair_t){.cluster = c, .query = p->q, .filter_off = nf,
					       .filter_len = GPU_PART_ALL_ROWS};
			if (p->nf == PD_FULL)
				continue;
			g->filter_len = p->nf;
			memcpy(t->filt + nf, p->rows, p->nf * sizeof(uint32_t));
			nf += p->nf;
		}
	}
	if (rc == 0)
		rc = gpu_parts_create(ctx, rows, d->rows, d->dim, off, d->n_cl,
				      d->metric ? GPU_METRIC_IP : GPU_METRIC_L2, &t->parts, err);
	free(rows);
	free(off);
	return rc;
}

/* One batched pass: the scan (*scan_ns: gpu_parts_scan alone), then each
 * pair's list cut to its query's k, mapped to docids and merged. */
static int bt_run(const pd_t *d, bt_t *t, pd_hit_t *out, uint32_t *n_out, double *scan_ns,
		  vela_err_t *err)
{
	double t0 = now_ns();
	int rc = gpu_parts_scan(t->parts, d->q, d->nq, t->pairs, t->npairs, t->filt, t->nfilt,
				t->k, t->ids, t->dists, err);
	*scan_ns = now_ns() - t0;
	if (rc)
		return rc;
	gpu_parts_last_times(t->parts, t->ms);
	memset(n_out, 0, d->nq * sizeof(*n_out));
	for (uint32_t p = 0; p < t->npairs; p++) {
		const pd_cluster_t *cl = &d->cl[t->pairs[p].cluster];
		uint32_t q = t->pairs[p].query, kq = d->k[q] < t->k ? d->k[q] : t->k, m = 0;
		const uint32_t *ids = t->ids + (size_t)p * t->k;
		const float *ds = t->dists + (size_t)p * t->k;
		while (m < kq && ids[m] < cl->n) {
			t->b[m] = (pd_hit_t){ds[m], cl->docids[ids[m]]};
			m++;
		}
		/* ascending (dist, row), and docids ascend with rows */
		pd_merge(out + (size_t)q * d->kmax, &n_out[q], kq, t->b, m, t->tmp);
	}
	return 0;
}

typedef struct ref_hit {
	double d;
	uint32_t row;
} ref_hit_t;

static int ref_cmp(const void *x, const void *y)
{
	const ref_hit_t *a = x, *b = y;
	if (a->d != b->d)
		return a->d < b->d ? -1 : 1;
	return (a->row > b->row) - (a->row < b->row);
}

static double ref_dist(const pd_t *d, const float *q, const float *x)
{
	double s = 0;
	for (uint32_t j = 0; j < d->dim; j++)
		s += d->metric ? (double)q[j] * x[j] : ((double)q[j] - x[j]) * ((double)q[j] - x[j]);
	return d->metric ? 1.0 - s : s;
}

static int row_allowed(const gpu_part_pair_t *p, const uint32_t *filt, uint32_t n, uint32_t row)
{
	if (row >= n)
		return 0;
	if (p->filter_len == GPU_PART_ALL_ROWS)
		return 1;
	const uint32_t *f = filt + p->filter_off; /* ascending: the file's order */
	uint32_t lo = 0, hi = p->filter_len;
	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;
		if (f[mid] < row)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < p->filter_len && f[lo] == row;
}

/* Every pair's k slots against a double-precision brute force over its
 * allowed rows. Prints the first wrong pair; returns the number wrong. */
static uint32_t bt_check_pairs(const pd_t *d, const bt_t *t)
{
	uint32_t most = 1, wrong = 0, k = t->k;
	for (uint32_t c = 0; c < d->n_cl; c++)
		most = d->cl[c].n > most ? d->cl[c].n : most;
	ref_hit_t *r = malloc(most * sizeof(ref_hit_t));
	if (r == NULL)
		return t->npairs;
	for (uint32_t p = 0; p < t->npairs; p++) {
		const gpu_part_pair_t *pp = &t->pairs[p];
		const pd_cluster_t *cl = &d->cl[pp->cluster];
		const float *q = d->q + (size_t)pp->query * d->dim;
		int all = pp->filter_len == GPU_PART_ALL_ROWS;
		uint32_t nc = all ? cl->n : pp->filter_len;
		for (uint32_t i = 0; i < nc; i++) {
			uint32_t row = all ? i : t->filt[pp->filter_off + i];
			r[i] = (ref_hit_t){ref_dist(d, q, cl->rows + (size_t)row * d->dim), row};
		}
		qsort(r, nc, sizeof(ref_hit_t), ref_cmp);
		uint32_t count = nc < k ? nc : k;
		const uint32_t *gi = t->ids + (size_t)p * k;
		const float *gd = t->dists + (size_t)p * k;
		char why[200] = "";
		uint32_t slot = 0;
		for (uint32_t i = 0; i < k && !why[0]; i++) {
			slot = i;
			if (i >= count) {
				if (gi[i] != UINT32_MAX || !isinf(gd[i]))
					snprintf(why, sizeof(why), "an empty slot holds row %u dist %.9g",
						 gi[i], gd[i]);
				continue;
			}
			if (!row_allowed(pp, t->filt, cl->n, gi[i])) {
				snprintf(why, sizeof(why), "row %u dist %.9g is not allowed (want row "
					 "%u dist %.9g)", gi[i], gd[i], r[i].row, r[i].d);
				continue;
			}
			double dg = gi[i] == r[i].row ? r[i].d
						      : ref_dist(d, q, cl->rows + (size_t)gi[i] * d->dim);
			if (gi[i] != r[i].row && rel_diff(dg, r[i].d) > TOL_TIE)
				snprintf(why, sizeof(why), "row %u (exact dist %.9g), want row %u "
					 "dist %.9g", gi[i], dg, r[i].row, r[i].d);
			else if (rel_diff(gd[i], dg) > TOL_DIST)
				snprintf(why, sizeof(why), "row %u dist %.9g, exact %.9g", gi[i],
					 gd[i], dg);
			for (uint32_t j = 0; j < i && !why[0] && k <= 64; j++)
				if (gi[j] == gi[i])
					snprintf(why, sizeof(why), "row %u also in slot %u", gi[i], j);
		}
		if (why[0] && wrong++ == 0)
			printf("check: FAIL first wrong pair %u (cluster #%u id %u, %u rows; query %u; "
			       "%s %u rows): slot %u: %s\n",
			       p, pp->cluster, cl->id, cl->n, pp->query, all ? "all" : "filter of",
			       nc, slot, why);
	}
	free(r);
	printf("check: %u / %u pairs equal to a double-precision brute force (k = %u; rows "
	       "identical unless tied within %.0e, distances within %.0e relative)\n",
	       t->npairs - wrong, t->npairs, k, TOL_TIE, TOL_DIST);
	return wrong;
}

/* The merged answers against the engine's recorded ones. Returns the number
 * of queries outside the tolerances (the first is printed). */
static uint32_t bt_check_answers(const pd_t *d, const pd_hit_t *got, const uint32_t *n_got)
{
	uint32_t same = 0, tied = 0, exact = 0, wrong = 0;
	double max_rel = 0;
	for (uint32_t i = 0; i < d->nq; i++) {
		const pd_hit_t *a = d->ans + (size_t)i * d->kmax, *g = got + (size_t)i * d->kmax;
		uint32_t na = d->n_ans[i];
		int ids = n_got[i] == na, bits = ids, ok = n_got[i] == na;
		char why[200] = "";
		if (!ok)
			snprintf(why, sizeof(why), "%u hits, want %u", n_got[i], na);
		for (uint32_t j = 0; ok && j < na; j++) {
			double e = rel_diff(g[j].dist, a[j].dist);
			max_rel = e > max_rel ? e : max_rel;
			bits = bits && memcmp(&g[j].dist, &a[j].dist, sizeof(float)) == 0;
			if (e > TOL_DIST) {
				ok = 0;
				snprintf(why, sizeof(why), "slot %u: docid %u dist %.9g, want docid %u "
					 "dist %.9g", j, g[j].docid, g[j].dist, a[j].docid, a[j].dist);
				break;
			}
			if (g[j].docid == a[j].docid)
				continue;
			ids = 0;
			/* a swap between tied distances, or a tie at the k-th */
			int tie = rel_diff(g[j].dist, a[na - 1].dist) <= TOL_TIE;
			for (uint32_t t = 0; t < na && !tie; t++)
				tie = a[t].docid == g[j].docid && rel_diff(a[t].dist, g[j].dist) <= TOL_TIE;
			if (!tie) {
				ok = 0;
				snprintf(why, sizeof(why), "slot %u: docid %u dist %.9g, want docid %u "
					 "dist %.9g (not a tie)", j, g[j].docid, g[j].dist, a[j].docid,
					 a[j].dist);
			}
		}
		same += (uint32_t)(ok && ids);
		tied += (uint32_t)(ok && !ids);
		exact += (uint32_t)(ok && ids && bits);
		if (!ok && wrong++ == 0)
			printf("check: FAIL first wrong query %u (k %u): %s\n", i, d->k[i], why);
	}
	printf("check: %u / %u queries with the engine's docids (%u more differing only between "
	       "tied distances), %u with its distances bit for bit (max relative difference "
	       "%.2g; tolerance %.0e)\n",
	       same, d->nq, tied, exact, max_rel, TOL_DIST);
	return wrong;
}

/* ------------------------------------------------------------ main */

static void table_head(void)
{
	printf("%-30s %10s %26s %11s %12s %9s %7s\n", "path", "ms", "(reps)", "scans/s",
	       "q x row/s", "GFLOP/s", "calls");
}

/* One table line: ms is the median over nreps. */
static void table_row(const pd_t *d, const char *name, double ms, double best_ms,
		      uint32_t nreps, double calls)
{
	double s = ms * 1e-3;
	char reps[64];
	snprintf(reps, sizeof(reps), "(median of %u, best %.3f)", nreps, best_ms);
	printf("%-30s %10.3f %26s %11.0f %12.3g %9.1f %7.0f\n", name, ms, reps, d->n_cl / s,
	       (double)d->pair_rows / s, 2.0 * d->dim * (double)d->pair_rows / s * 1e-9, calls);
}

static int run_batched(const pd_t *d, gpu_ctx_t *ctx, uint32_t reps, pd_hit_t *got,
		       uint32_t *n_got, uint32_t *wrong, vela_err_t *err)
{
	bt_t t = {0};
	double t0 = now_ns(), scan_ns;
	double *tot = calloc(reps, sizeof(double)), *scan = calloc(reps, sizeof(double));
	double *ph = calloc(3 * (size_t)reps, sizeof(double));
	int rc = tot && scan && ph ? bt_prepare(d, ctx, &t, err) : VELA_ENOMEM;
	if (rc == 0) {
		printf("batched: %u clusters resident in one gpu_parts_t, %.1f MB on the device, "
		       "uploaded in %.2f s; %u pairs, %u filter rows, k %u\n",
		       d->n_cl, gpu_parts_bytes(t.parts) / 1e6, (now_ns() - t0) * 1e-9, t.npairs,
		       t.nfilt, t.k);
		rc = bt_run(d, &t, got, n_got, &scan_ns, err); /* warm-up: scratch, module */
	}
	for (uint32_t r = 0; rc == 0 && r < reps; r++) {
		double t1 = now_ns();
		rc = bt_run(d, &t, got, n_got, &scan[r], err);
		tot[r] = now_ns() - t1;
		for (int i = 0; i < 3; i++)
			ph[i * reps + r] = t.ms[i];
	}
	if (rc == 0) {
		double best = INFINITY, sbest = INFINITY;
		for (uint32_t r = 0; r < reps; r++) {
			best = tot[r] < best ? tot[r] : best;
			sbest = scan[r] < sbest ? scan[r] : sbest;
		}
		table_head();
		table_row(d, "gpu batched (scan + merge)", median(tot, reps) * 1e-6, best * 1e-6,
			  reps, 1);
		table_row(d, "gpu batched, scan only", median(scan, reps) * 1e-6, sbest * 1e-6,
			  reps, 1);
		printf("batched scan on the device (CUDA events, median of %u): uploads %.3f ms, "
		       "kernel %.3f ms, downloads %.3f ms\n",
		       reps, median(ph, reps), median(ph + reps, reps), median(ph + 2 * reps, reps));
		*wrong = bt_check_pairs(d, &t);
		*wrong += bt_check_answers(d, got, n_got);
	}
	bt_free(&t);
	free(tot);
	free(scan);
	free(ph);
	return rc;
}

/* The per-call baseline within PER_CALL_BUDGET_S. */
static int run_per_call(const pd_t *d, gpu_ctx_t *ctx, uint32_t reps, pd_hit_t *got,
			uint32_t *n_got, vela_err_t *err)
{
	rg_t g = {.d = d};
	size_t bytes = 0;
	uint32_t done = 0, full = 0, cut = 0;
	double t0 = now_ns(), deadline = t0 + PER_CALL_BUDGET_S * 1e9;
	double *ms = calloc(reps, sizeof(double)), best = INFINITY;
	int rc = ms ? rg_prepare(&g, ctx, GPU_ELEM_F32, &bytes, err) : VELA_ENOMEM;
	if (rc == 0) {
		printf("per-call: %u gpu_matrix (F32) resident, %.1f MB on the device, uploaded in "
		       "%.2f s; budget %.0f s\n",
		       d->n_cl, bytes / 1e6, (now_ns() - t0) * 1e-9, PER_CALL_BUDGET_S);
		/* warm-up (the first calls pay cuBLAS's set-up), at most a second */
		double w = now_ns() + 1e9;
		rc = run_once(&g, got, n_got, w < deadline ? w : deadline, &done, err);
	}
	for (uint32_t r = 0; rc == 0 && r < reps && now_ns() < deadline; r++) {
		double t = now_ns();
		rc = run_once(&g, got, n_got, deadline, &done, err);
		double ns = now_ns() - t;
		if (rc == 0 && done < d->n_cl) {
			printf("per-call: rep %u cut at the budget after %.2f s: %u of %u clusters "
			       "(%.0f calls), %.2f ms per cluster\n",
			       r, ns * 1e-9, done, d->n_cl, g.calls, done ? ns * 1e-6 / done : 0.0);
			if (full == 0)
				printf("%-30s %10.0f (projected from %u of %u clusters)\n",
				       "gpu per-call gpu_knn F32", ns * 1e-6 * d->n_cl / (done ? done : 1),
				       done, d->n_cl);
			cut = 1;
			break;
		}
		if (rc == 0) {
			ms[full++] = ns;
			best = ns < best ? ns : best;
		}
	}
	if (rc == 0 && full == 0 && !cut)
		printf("per-call: no rep started within the budget\n");
	if (rc == 0 && full) {
		table_row(d, "gpu per-call gpu_knn F32", median(ms, full) * 1e-6, best * 1e-6, full,
			  g.calls);
		uint32_t same, exact;
		double rel;
		pd_check(d, got, n_got, &same, &exact, &rel);
		printf("check (per-call): %u / %u queries with the engine's docids, %u with its "
		       "distances bit for bit (max relative difference %.2g)\n",
		       same, d->nq, exact, rel);
	}
	rg_free(&g);
	free(ms);
	return rc;
}

int main(int argc, char **argv)
{
	pd_t d;
	uint32_t reps, wrong = 0;
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
		pd_free(&d);
		return 1;
	}
	printf("device: %s\n", gpu_ctx_name(ctx));
	pd_hit_t *got = malloc((size_t)(d.nq ? d.nq : 1) * (d.kmax ? d.kmax : 1) * sizeof(*got));
	uint32_t *n_got = malloc((d.nq ? d.nq : 1) * sizeof(uint32_t));
	int rc = got && n_got ? 0 : VELA_ENOMEM;
	if (rc == 0)
		rc = run_batched(&d, ctx, reps, got, n_got, &wrong, &err);
	if (rc == 0)
		rc = run_per_call(&d, ctx, reps, got, n_got, &err);
	if (rc)
		fprintf(stderr, "replay: error %d: %s\n", rc, err.msg);
	else if (wrong)
		printf("replay: FAIL: %u batched answers outside the tolerances\n", wrong);
	free(got);
	free(n_got);
	gpu_ctx_close(ctx);
	pd_free(&d);
	return rc || wrong ? 1 : 0;
}
