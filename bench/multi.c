/* bench_multi: the unit costs behind flat_search_multi's cost model
 * (index.h "FLAT multi"): one row x query product of the whole-field GEMM,
 * one match scored by the scan, one match copied into a gathered block,
 * and the gathered GEMM per row x query, all in ns and in GEMM products.
 *
 * Usage: bench_multi [--n 200000] [--dim 64] [--sel 0.01] [--k 10] [--reps 3]
 *
 * Random Gaussian rows (F32, L2); the filters are random docid sets of
 * selectivity --sel (every match a random row: the scan's memory access
 * pattern). Each figure is the fastest of --reps runs. One thread unless
 * OPENBLAS_NUM_THREADS says otherwise. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/workload_gen.h"
#include "common/common.h"
#include "index/index.h"

typedef struct mb_opts {
	uint32_t n, dim, k, reps;
	double sel;
} mb_opts_t;

static int mb_parse(int argc, char **argv, mb_opts_t *o)
{
	*o = (mb_opts_t){.n = 200000, .dim = 64, .k = 10, .reps = 3, .sel = 0.01};
	for (int i = 1; i + 1 < argc; i += 2) {
		const char *a = argv[i], *v = argv[i + 1];
		if (!strcmp(a, "--n"))
			o->n = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(a, "--dim"))
			o->dim = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(a, "--k"))
			o->k = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(a, "--reps"))
			o->reps = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(a, "--sel"))
			o->sel = strtod(v, NULL);
		else
			return -1;
	}
	return argc % 2 == 0 || o->n < 1000 || o->dim == 0 || o->k == 0 || o->reps == 0 ||
			       !(o->sel > 0 && o->sel <= 1)
		       ? -1
		       : 0;
}

/* ns of the fastest of `reps` runs of flat_search_multi over qs. */
static double mb_multi(const flat_index_t *f, flat_multi_query_t *qs, uint32_t nq,
		       const flat_multi_opts_t *o, uint32_t reps)
{
	double best = INFINITY;
	for (uint32_t r = 0; r < reps; r++) {
		uint64_t t0 = vela_now_ns();
		if (flat_search_multi(f, qs, nq, o)) {
			fprintf(stderr, "flat_search_multi failed\n");
			exit(1);
		}
		double t = (double)(vela_now_ns() - t0);
		best = t < best ? t : best;
	}
	return best;
}

int main(int argc, char **argv)
{
	mb_opts_t o;
	if (mb_parse(argc, argv, &o)) {
		fprintf(stderr, "usage: bench_multi [--n 200000] [--dim 64] [--sel 0.01] [--k 10] "
				"[--reps 3]\n");
		return 2;
	}
	enum { G = 64 };
	flat_index_t *f;
	if (flat_create(o.dim, VELA_METRIC_L2, VELA_VEC_FLOAT32, &f))
		return 1;
	wl_rng_t r = wl_rng(1, WL_S_USER, 0);
	float *v = malloc((size_t)o.dim * sizeof(float));
	float *Q = malloc((size_t)G * o.dim * sizeof(float));
	vela_hit_t *out = malloc((size_t)G * o.k * sizeof(vela_hit_t));
	flat_multi_query_t *qs = calloc(G, sizeof(*qs));
	roaring_bitmap_t *flt = roaring_bitmap_create();
	for (uint32_t i = 0; i < o.n; i++) {
		for (uint32_t j = 0; j < o.dim; j++)
			v[j] = (float)wl_gauss(&r);
		flat_set(f, i, v);
		if (wl_unit(&r) < o.sel)
			roaring_bitmap_add(flt, i);
	}
	for (size_t j = 0; j < (size_t)G * o.dim; j++)
		Q[j] = (float)wl_gauss(&r);
	double m = (double)roaring_bitmap_get_cardinality(flt);
	for (uint32_t i = 0; i < G; i++)
		qs[i] = (flat_multi_query_t){.q = Q + (size_t)i * o.dim, .k = o.k,
					     .out = out + (size_t)i * o.k};
	flat_multi_opts_t dense = {.gather_rows = FLAT_MULTI_GATHER_ROWS_DEFAULT, .group_min = 1,
				   .dense_min = 1, .scan_cost = FLAT_MULTI_SCAN_COST_MAX,
				   .gather_cost = FLAT_MULTI_GATHER_COST_MAX, .dense_cost = 0};
	flat_multi_opts_t gather = dense, scan = dense;
	gather.gather_cost = 0;
	gather.dense_cost = FLAT_MULTI_DENSE_COST_MAX;
	scan.scan_cost = 0;
	scan.dense_cost = FLAT_MULTI_DENSE_COST_MAX;
	/* the whole-field GEMM, G unfiltered queries: per row x query */
	double gemm = mb_multi(f, qs, G, &dense, o.reps) / ((double)o.n * G);
	for (uint32_t i = 0; i < G; i++)
		qs[i].filter = flt;
	double scan_ns = mb_multi(f, qs, 8, &scan, o.reps) / (m * 8);
	printf("n %u, dim %u, k %u, filter %.0f matches (s %.4g)\n", o.n, o.dim, o.k, m, m / o.n);
	printf("whole-field GEMM of %d unfiltered queries: %.3f ns per row x query; "
	       "scan: %.3f ns per match (%.2f GEMM products)\n\n",
	       G, gemm, scan_ns, scan_ns / gemm);
	/* g queries sharing the filter, each way: µs per query, and what the
	 * model (with the default costs) predicts, in GEMM products per query */
	printf("| queries | scan µs/query | gather µs/query | dense µs/query | fastest | model "
	       "picks |\n|---|---|---|---|---|---|\n");
	static const uint32_t gs[] = {1, 2, 3, 4, 6, 8, 16, 32, 64};
	flat_multi_opts_t def;
	flat_multi_opts_default(&def);
	for (size_t i = 0; i < sizeof(gs) / sizeof(gs[0]); i++) {
		uint32_t g = gs[i];
		double t[3] = {mb_multi(f, qs, g, &scan, o.reps) / g * 1e-3,
			       mb_multi(f, qs, g, &gather, o.reps) / g * 1e-3,
			       mb_multi(f, qs, g, &dense, o.reps) / g * 1e-3};
		int best = t[0] <= t[1] && t[0] <= t[2] ? 0 : t[1] <= t[2] ? 1 : 2;
		mb_multi(f, qs, g, &def, 1);
		static const char *const names[] = {"scan", "gather", "dense"};
		printf("| %u | %.1f | %.1f | %.1f | %s | %s |\n", g, t[0], t[1], t[2], names[best],
		       names[qs[0].how]);
	}
	roaring_bitmap_free(flt);
	free(qs);
	free(out);
	free(Q);
	free(v);
	flat_destroy(f);
	return 0;
}
