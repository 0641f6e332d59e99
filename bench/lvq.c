/* bench_lvq: LVQ distance throughput per kind, level and instruction set,
 * next to the exact F32 kernels of the same variant, and bytes per vector.
 * One query against n encoded vectors scanned in order (the memory-bound
 * case when n * bytes exceeds the caches; use a small --n for in-cache).
 * Each figure is the best of --reps scans.
 *
 * Usage: bench_lvq [--n N] [--dim D] [--reps R] [--metric l2|ip]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "quant/quant.h"

static uint64_t bench_rng(uint64_t *s) /* splitmix64 */
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void bench_fill(float *v, size_t n, uint64_t *s)
{
	for (size_t i = 0; i < n; i++)
		v[i] = (float)((bench_rng(s) >> 40) * 0x1p-24) * 2.0f - 1.0f;
}

typedef struct {
	size_t n;
	uint32_t dim, reps;
	vela_metric_t metric;
} bench_opts_t;

static void bench_parse(int argc, char **argv, bench_opts_t *o)
{
	*o = (bench_opts_t){100000, 768, 3, VELA_METRIC_L2};
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--n"))
			o->n = strtoul(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "--dim"))
			o->dim = (uint32_t)strtoul(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "--reps"))
			o->reps = (uint32_t)strtoul(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "--metric"))
			o->metric = strcmp(argv[i + 1], "ip") ? VELA_METRIC_L2 : VELA_METRIC_IP;
	}
}

static volatile float bench_sink;

static void bench_report(const char *what, const char *isa, size_t bytes, size_t n, double sec)
{
	printf("%-10s %-7s %6zu B/vec  %8.2f Mdist/s  %7.2f GB/s\n", what, isa, bytes,
	       (double)n / sec * 1e-6, (double)n * (double)bytes / sec * 1e-9);
}

static double bench_f32(const quant_kernels_t *k, const bench_opts_t *o, const float *X,
			const float *q)
{
	double best = INFINITY;
	for (uint32_t r = 0; r < o->reps; r++) {
		float acc = 0;
		uint64_t t0 = vela_now_ns();
		for (size_t i = 0; i < o->n; i++)
			acc += o->metric == VELA_METRIC_L2 ? k->l2sq_f32(q, X + i * o->dim, o->dim)
							   : 1 - k->dot_f32(q, X + i * o->dim, o->dim);
		best = fmin(best, (double)(vela_now_ns() - t0) * 1e-9);
		bench_sink = acc;
	}
	return best;
}

static double bench_lvq_scan(const quant_lvq_kernels_t *k, const bench_opts_t *o,
			     const quant_lvq_t *l, const quant_lvq_query_t *pq,
			     const uint8_t *codes, int full)
{
	size_t cs = quant_lvq_code_size(l);
	double best = INFINITY;
	for (uint32_t r = 0; r < o->reps; r++) {
		float acc = 0;
		uint64_t t0 = vela_now_ns();
		for (size_t i = 0; i < o->n; i++)
			acc += quant_lvq_distance_with(k, l, pq, codes + i * cs, full);
		best = fmin(best, (double)(vela_now_ns() - t0) * 1e-9);
		bench_sink = acc;
	}
	return best;
}

static int bench_kind(quant_lvq_kind_t kind, const char *name, const bench_opts_t *o,
		      const float *X, const float *mean, const float *q)
{
	quant_lvq_t *l;
	quant_lvq_query_t *pq;
	if (quant_lvq_create(kind, o->dim, mean, &l) || quant_lvq_query_create(l, &pq))
		return 1;
	size_t cs = quant_lvq_code_size(l), ps = quant_lvq_primary_size(l);
	uint8_t *codes = malloc(o->n * cs);
	if (codes == NULL)
		return 1;
	for (size_t i = 0; i < o->n; i++)
		if (quant_lvq_encode(l, X + i * o->dim, codes + i * cs))
			return 1;
	quant_lvq_query_prepare(l, o->metric, q, pq);
	char label[32];
	for (int isa = 0; isa < QUANT_ISA_COUNT; isa++) {
		const quant_lvq_kernels_t *k = quant_lvq_kernels_get(isa);
		if (k == NULL)
			continue;
		snprintf(label, sizeof(label), "%s", name);
		bench_report(label, k->name, ps, o->n, bench_lvq_scan(k, o, l, pq, codes, 0));
		if (ps != cs) {
			snprintf(label, sizeof(label), "%s full", name);
			bench_report(label, k->name, cs, o->n, bench_lvq_scan(k, o, l, pq, codes, 1));
		}
	}
	free(codes);
	quant_lvq_query_destroy(pq);
	quant_lvq_destroy(l);
	return 0;
}

int main(int argc, char **argv)
{
	bench_opts_t o;
	bench_parse(argc, argv, &o);
	uint64_t seed = 42;
	float *X = malloc(o.n * o.dim * sizeof(float)), *mean = malloc(o.dim * sizeof(float));
	float *q = malloc(o.dim * sizeof(float));
	if (!X || !mean || !q)
		return 1;
	bench_fill(X, o.n * o.dim, &seed);
	bench_fill(q, o.dim, &seed);
	quant_mean(X, o.n, o.dim, mean);
	printf("n=%zu dim=%u metric=%s cpu=%s (one query, sequential scan, best of %u)\n", o.n,
	       o.dim, o.metric == VELA_METRIC_L2 ? "l2" : "ip", vela_cpu_features_str(), o.reps);
	for (int isa = 0; isa < QUANT_ISA_COUNT; isa++) {
		const quant_kernels_t *k = quant_kernels_get(isa);
		if (k)
			bench_report("F32", k->name, o.dim * sizeof(float), o.n, bench_f32(k, &o, X, q));
	}
	static const char *const names[] = {"LVQ8", "LVQ4", "LVQ4x4", "LVQ4x8"};
	for (int kind = 0; kind < QUANT_LVQ_KIND_COUNT; kind++)
		if (bench_kind((quant_lvq_kind_t)kind, names[kind], &o, X, mean, q))
			return 1;
	free(X);
	free(mean);
	free(q);
	return 0;
}
