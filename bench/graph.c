/* bench_graph: Vamana (index/ GRAPH) build time and the QPS / recall@10
 * curve over search windows, on sift-5k (4,900 base + 100 queries) and a
 * synthetic clustered Gaussian set (default 100k x 128, 1,000 queries),
 * with 1 and 2 threads. Ground truth: flat_search_batch (exact).
 *
 * Usage: bench_graph [--sift PATH] [--n N] [--dim D] [--nq Q] [--R R]
 *                    [--L L] [--fvecs DIR] [--compression LIST]
 * --compression LVQ8,LVQ4x8,... (or "all") also runs each listed
 * graph_lvq_store kind (index.h GRAPH LVQ; trained on the base, LeanVec-ID
 * with d = dim/2) after the F32 run; the re-rank buffer is the window.
 * --fvecs DIR writes {sift,synth}_{base,query}.fvecs and _gt.ivecs there
 * for bench/graph_peer.py (hnswlib on the same data).
 * QPS at T threads: T threads each running its share of the queries one
 * at a time (latency-bound search, as a server would). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "index/index.h"
#include "quant/quant.h"

#define K 10u

typedef struct {
	const char *name;
	uint32_t n, nq, dim;
	float *base, *q;
	uint32_t *gt; /* nq * K */
} bset_t;

static uint64_t rng_s = 42;

static double bench_unit(void)
{
	uint64_t z = (rng_s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return ((double)((z ^ (z >> 31)) >> 11) + 0.5) * 0x1p-53;
}

static float bench_gauss(void)
{
	return (float)(sqrt(-2.0 * log(bench_unit())) * cos(6.283185307179586 * bench_unit()));
}

static double bench_sec(uint64_t t0)
{
	return (double)(vela_now_ns() - t0) * 1e-9;
}

/* 1,000 Gaussian clusters (centres N(0, 1), spread N(0, 1)). */
static void bench_synth(bset_t *s, uint32_t n, uint32_t nq, uint32_t dim)
{
	*s = (bset_t){"synth", n, nq, dim, malloc((size_t)n * dim * 4),
		      malloc((size_t)nq * dim * 4), NULL};
	uint32_t nc = 1000;
	float *c = malloc((size_t)nc * dim * 4);
	for (size_t i = 0; i < (size_t)nc * dim; i++)
		c[i] = bench_gauss();
	for (uint32_t i = 0; i < n + nq; i++) {
		float *v = i < n ? s->base + (size_t)i * dim : s->q + (size_t)(i - n) * dim;
		const float *ci = c + (size_t)(bench_unit() * nc) * dim;
		for (uint32_t j = 0; j < dim; j++)
			v[j] = ci[j] + bench_gauss();
	}
	free(c);
}

static int bench_sift(bset_t *s, const char *path)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return -1;
	*s = (bset_t){"sift", 4900, 100, 128, malloc(4900 * 128 * 4), malloc(100 * 128 * 4), NULL};
	for (uint32_t i = 0; i < 5000; i++) {
		float *v = i < 4900 ? s->base + (size_t)i * 128 : s->q + (size_t)(i - 4900) * 128;
		unsigned id;
		for (uint32_t j = 0; j < 128; j++)
			if (fscanf(f, "%f", &v[j]) != 1)
				return fclose(f), -1;
		if (fscanf(f, "%u", &id) != 1)
			return fclose(f), -1;
	}
	fclose(f);
	return 0;
}

static flat_index_t *bench_flat(const bset_t *s)
{
	flat_index_t *f;
	if (flat_create(s->dim, VELA_METRIC_L2, VELA_VEC_FLOAT32, &f) != 0)
		exit(1);
	for (uint32_t i = 0; i < s->n; i++)
		if (flat_set(f, i, s->base + (size_t)i * s->dim) != 0)
			exit(1);
	return f;
}

static void bench_truth(bset_t *s, const flat_index_t *f)
{
	vela_hit_t *h = malloc((size_t)s->nq * K * sizeof(*h));
	uint32_t *n = malloc(s->nq * sizeof(uint32_t));
	s->gt = malloc((size_t)s->nq * K * sizeof(uint32_t));
	if (flat_search_batch(f, s->q, s->nq, K, NULL, h, n) != 0)
		exit(1);
	for (size_t i = 0; i < (size_t)s->nq * K; i++)
		s->gt[i] = h[i].docid;
	free(h);
	free(n);
}

/* ------------------------------------------------ fvecs for the peer */

static void bench_write_vecs(const char *dir, const char *name, const char *kind,
			     const void *data, uint32_t n, uint32_t dim)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/%s_%s", dir, name, kind);
	FILE *f = fopen(path, "wb");
	if (f == NULL)
		return;
	for (uint32_t i = 0; i < n; i++) {
		int32_t d = (int32_t)dim;
		fwrite(&d, 4, 1, f);
		fwrite((const uint8_t *)data + (size_t)i * dim * 4, 4, dim, f);
	}
	fclose(f);
}

static void bench_export(const bset_t *s, const char *dir)
{
	bench_write_vecs(dir, s->name, "base.fvecs", s->base, s->n, s->dim);
	bench_write_vecs(dir, s->name, "query.fvecs", s->q, s->nq, s->dim);
	bench_write_vecs(dir, s->name, "gt.ivecs", s->gt, s->nq, K);
}

/* ------------------------------------------------ searching */

typedef struct {
	const graph_t *g;
	const bset_t *s;
	uint32_t window, q0, q1, hits;
} bench_job_t;

static void *bench_search_job(void *p)
{
	bench_job_t *j = p;
	graph_search_params_t sp;
	graph_search_params_default(&sp);
	sp.window = j->window;
	for (uint32_t qi = j->q0; qi < j->q1; qi++) {
		vela_hit_t out[K];
		uint32_t n;
		if (graph_search(j->g, j->s->q + (size_t)qi * j->s->dim, K, &sp, out, &n) != 0)
			exit(1);
		for (uint32_t a = 0; a < n; a++)
			for (uint32_t b = 0; b < K; b++)
				j->hits += out[a].docid == j->s->gt[(size_t)qi * K + b];
	}
	return NULL;
}

/* Queries/s and recall@10 of one window at `threads` threads; the query
 * set is repeated until at least 0.3 s has run. */
static void bench_window(const graph_t *g, const bset_t *s, uint32_t window, uint32_t threads,
			 double *qps, double *recall)
{
	uint64_t t0 = vela_now_ns();
	uint64_t done = 0, hits = 0;
	while (done == 0 || bench_sec(t0) < 0.3) {
		bench_job_t jobs[2];
		pthread_t tid[2];
		for (uint32_t t = 0; t < threads; t++) {
			jobs[t] = (bench_job_t){g, s, window, s->nq * t / threads,
						s->nq * (t + 1) / threads, 0};
			pthread_create(&tid[t], NULL, bench_search_job, &jobs[t]);
		}
		for (uint32_t t = 0; t < threads; t++) {
			pthread_join(tid[t], NULL);
			hits += jobs[t].hits;
		}
		done += s->nq;
	}
	*qps = (double)done / bench_sec(t0);
	*recall = (double)hits / ((double)done * K);
}

static void bench_set(const bset_t *s, uint32_t R, uint32_t L, const graph_store_t *st,
		      const char *label)
{
	static const uint32_t windows[] = {10, 20, 30, 40, 60, 80, 120, 160, 200};
	uint32_t *ids = malloc(s->n * sizeof(uint32_t));
	for (uint32_t i = 0; i < s->n; i++)
		ids[i] = i;
	for (uint32_t threads = 1; threads <= 2; threads++) {
		graph_params_t p;
		graph_params_default(&p);
		p.max_degree = R;
		p.window = L;
		p.threads = threads;
		graph_t *g;
		if (graph_create(st, &p, &g) != 0)
			exit(1);
		uint64_t t0 = vela_now_ns();
		if (graph_build(g, ids, s->n) != 0)
			exit(1);
		double bt = bench_sec(t0);
		printf("%s %s n=%u dim=%u R=%u L=%u threads=%u: build %.2f s (%.0f vec/s), %.1f MiB "
		       "adjacency\n",
		       s->name, label, s->n, s->dim, R, L, threads, bt, s->n / bt,
		       graph_memory(g) / 1048576.0);
		printf("  %-8s %10s %10s\n", "window", "QPS", "recall@10");
		for (size_t w = 0; w < sizeof(windows) / sizeof(windows[0]); w++) {
			double qps, rec;
			bench_window(g, s, windows[w], threads, &qps, &rec);
			printf("  %-8u %10.0f %10.4f\n", windows[w], qps, rec);
		}
		fflush(stdout);
		graph_destroy(g);
	}
	free(ids);
}

/* The F32 run, then one per kind named in `list` (comma-separated). */
static void bench_stores(const bset_t *s, uint32_t R, uint32_t L, const flat_index_t *f,
			 const char *list)
{
	graph_store_t st;
	graph_store_flat(f, &st);
	bench_set(s, R, L, &st, "F32");
	for (int k = 0; list && k < GRAPH_LVQ_KIND_COUNT; k++) {
		const char *name = graph_lvq_kind_name((graph_lvq_kind_t)k);
		bool on = strcmp(list, "all") == 0;
		for (const char *t = list; !on && *t; t += strcspn(t, ",") + (t[strcspn(t, ",")] != 0)) {
			char tok[32] = {0};
			graph_lvq_kind_t got;
			memcpy(tok, t, strcspn(t, ",") < sizeof(tok) - 1 ? strcspn(t, ",") : 0);
			on = graph_lvq_kind_parse(tok, &got) == 0 && (int)got == k;
		}
		if (!on)
			continue;
		graph_lvq_params_t lp;
		graph_lvq_params_default(&lp);
		lp.kind = (graph_lvq_kind_t)k;
		lp.dim = s->dim;
		lp.metric = VELA_METRIC_L2;
		graph_lvq_store_t *ls;
		vela_err_t err;
		uint64_t t0 = vela_now_ns();
		size_t ns = s->n < QUANT_LEANVEC_SAMPLE_DEFAULT ? s->n : QUANT_LEANVEC_SAMPLE_DEFAULT;
		if (graph_lvq_store_create(&lp, s->base, ns, NULL, 0, &ls, &err) != 0) {
			fprintf(stderr, "%s: %s\n", name, err.msg);
			exit(1);
		}
		for (uint32_t i = 0; i < s->n; i++)
			if (graph_lvq_store_set(ls, i, s->base + (size_t)i * s->dim) != 0)
				exit(1);
		printf("%s %s: train + encode %.2f s, %zu B/vector (F32 %u)\n", s->name, name,
		       bench_sec(t0), graph_lvq_store_record_size(ls), s->dim * 4);
		bench_set(s, R, L, graph_lvq_store(ls), name);
		graph_lvq_store_destroy(ls);
	}
}

int main(int argc, char **argv)
{
	const char *compression = NULL;
	const char *sift = "/work/shared/data/sift-5k.tsv", *dir = NULL;
	uint32_t n = 100000, dim = 128, nq = 1000, R = GRAPH_MAX_DEGREE_DEFAULT,
		 L = GRAPH_CONSTRUCTION_WINDOW_SIZE_DEFAULT;
	for (int i = 1; i + 1 < argc; i += 2) {
		unsigned long v = strtoul(argv[i + 1], NULL, 10);
		if (!strcmp(argv[i], "--sift"))
			sift = argv[i + 1];
		else if (!strcmp(argv[i], "--compression"))
			compression = argv[i + 1];
		else if (!strcmp(argv[i], "--fvecs"))
			dir = argv[i + 1];
		else if (!strcmp(argv[i], "--n"))
			n = (uint32_t)v;
		else if (!strcmp(argv[i], "--dim"))
			dim = (uint32_t)v;
		else if (!strcmp(argv[i], "--nq"))
			nq = (uint32_t)v;
		else if (!strcmp(argv[i], "--R"))
			R = (uint32_t)v;
		else if (!strcmp(argv[i], "--L"))
			L = (uint32_t)v;
		else {
			fprintf(stderr, "unknown option %s\n", argv[i]);
			return 2;
		}
	}
	bset_t sets[2];
	int ns = 0;
	if (bench_sift(&sets[ns], sift) == 0)
		ns++;
	else
		fprintf(stderr, "sift-5k not found at %s: skipped\n", sift);
	if (n > 0)
		bench_synth(&sets[ns++], n, nq, dim);
	for (int i = 0; i < ns; i++) {
		flat_index_t *f = bench_flat(&sets[i]);
		bench_truth(&sets[i], f);
		if (dir)
			bench_export(&sets[i], dir);
		bench_stores(&sets[i], R, L, f, compression);
		flat_destroy(f);
		free(sets[i].base);
		free(sets[i].q);
		free(sets[i].gt);
	}
	return 0;
}
