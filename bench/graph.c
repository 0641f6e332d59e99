/* bench_graph: Vamana (index/ GRAPH) build time and the QPS / recall@10
 * curve over search windows.
 *
 * Built-in mode (no --base): sift-5k (4,900 base + 100 queries) and a
 * synthetic clustered Gaussian set (default 100k x 128, 1,000 queries),
 * built and searched at 1 and 2 threads (one build per thread count).
 * Ground truth: flat_search_batch (exact).
 *
 * File mode (--base): the given .fvecs base, one or more query sets with
 * their .ivecs ground truth (comma-separated, same order; only the first
 * 10 columns are used), one build per configuration with --build-threads
 * workers (default: the machine's online CPUs), then every query set is
 * searched at every --threads count. bench/ann/ drives this mode.
 *
 * Usage: bench_graph [--sift PATH] [--n N] [--dim D] [--nq Q] [--R R]
 *                    [--L L] [--fvecs DIR] [--compression LIST]
 *                    [--windows LIST] [--threads LIST] [--json OUT]
 *        bench_graph --base B.fvecs --queries Q1.fvecs[,Q2.fvecs]
 *                    --gt G1.ivecs[,G2.ivecs] [--names id,ood]
 *                    [--metric L2|IP|COSINE] [--build-threads T]
 *                    [--ood-train T.fvecs] [--name DATASET]
 *                    [--stop-recall R] [...as above]
 * --compression LVQ8,LVQ4x8,... (or "all"): graph_lvq_store kinds run after
 * the F32 run (trained on the first min(n, 100,000) base rows; LeanVec-ID
 * with d = dim/2); the re-rank buffer is the window. In file mode the list
 * may name F32 (without it, F32 is skipped there) and LeanVec4x8-OOD /
 * LeanVec8x8-OOD (LeanVec-OOD trained with the --ood-train queries, which
 * must not be a measured query set).
 * --fvecs DIR (built-in mode) writes {sift,synth}_{base,query}.fvecs and
 * _gt.ivecs there for bench/graph_peer.py (hnswlib on the same data).
 * --stop-recall R ends a sweep at the first window reaching recall@10 R.
 * --json OUT writes one object per configuration: build seconds and
 * threads, bytes per vector of the vectors and of the adjacency, and per
 * query set, thread count and window the QPS and recall@10.
 * QPS at T threads: T threads each running its share of the queries one
 * at a time (latency-bound search, as a server would), with OpenBLAS
 * set to 1 thread while searching (see openblas_set_num_threads). COSINE: base and
 * queries are normalised here (the caller's job for the flat store). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "index/index.h"
#include "quant/quant.h"

/* OpenBLAS (linked through index/ and quant/) runs its own thread pool;
 * LeanVec's per-query projection is a BLAS sgemv, and a pool per call
 * from T search threads at once costs ~10x the search itself on this
 * 2-core machine. Searches therefore run with 1 BLAS thread, training and
 * builds with the library's default. Weak: absent without OpenBLAS. */
extern void openblas_set_num_threads(int n) __attribute__((weak));
extern int openblas_get_num_threads(void) __attribute__((weak));

#define K 10u
#define BENCH_THREADS_MAX 64u
#define BENCH_LIST_MAX 64u
#define BENCH_QSETS_MAX 4u

typedef struct {
	const char *name;
	uint32_t nq;
	float *q;
	uint32_t *gt; /* nq * K */
} bqset_t;

typedef struct {
	const char *name;
	uint32_t n, dim;
	float *base;
	uint32_t nqs;
	bqset_t qs[BENCH_QSETS_MAX];
	vela_metric_t metric;
} bset_t;

/* Run options shared by every configuration. */
typedef struct {
	uint32_t R, L;
	uint32_t windows[BENCH_LIST_MAX], nwin;
	uint32_t threads[BENCH_LIST_MAX], nthr;
	uint32_t build_threads; /* 0 = built-in mode: one build per search thread count */
	const char *compression;
	bool file_mode;
	const float *ood_q; /* LeanVec-OOD training queries */
	uint32_t ood_n;
	double stop_recall; /* stop a sweep once recall@10 reaches this */
	FILE *json;
	int json_items;
} bopts_t;

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

static void *bench_alloc(size_t bytes)
{
	void *p = malloc(bytes ? bytes : 1);
	if (p == NULL) {
		fprintf(stderr, "out of memory (%zu bytes)\n", bytes);
		exit(1);
	}
	return p;
}

/* 1,000 Gaussian clusters (centres N(0, 1), spread N(0, 1)). */
static void bench_synth(bset_t *s, uint32_t n, uint32_t nq, uint32_t dim)
{
	*s = (bset_t){.name = "synth", .n = n, .dim = dim, .base = bench_alloc((size_t)n * dim * 4),
		      .nqs = 1, .metric = VELA_METRIC_L2};
	s->qs[0] = (bqset_t){"query", nq, bench_alloc((size_t)nq * dim * 4), NULL};
	uint32_t nc = 1000;
	float *c = bench_alloc((size_t)nc * dim * 4);
	for (size_t i = 0; i < (size_t)nc * dim; i++)
		c[i] = bench_gauss();
	for (uint32_t i = 0; i < n + nq; i++) {
		float *v = i < n ? s->base + (size_t)i * dim : s->qs[0].q + (size_t)(i - n) * dim;
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
	*s = (bset_t){.name = "sift", .n = 4900, .dim = 128, .base = bench_alloc(4900 * 128 * 4),
		      .nqs = 1, .metric = VELA_METRIC_L2};
	s->qs[0] = (bqset_t){"query", 100, bench_alloc(100 * 128 * 4), NULL};
	for (uint32_t i = 0; i < 5000; i++) {
		float *v = i < 4900 ? s->base + (size_t)i * 128 : s->qs[0].q + (size_t)(i - 4900) * 128;
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

/* Read a .fvecs / .ivecs file (each row: int32 dim, then dim 4-byte
 * values) into a new array of rows * *dim values; exits on error. */
static void *bench_read_vecs(const char *path, uint32_t *rows, uint32_t *dim)
{
	FILE *f = fopen(path, "rb");
	int32_t d;
	if (f == NULL || fread(&d, 4, 1, f) != 1 || d <= 0) {
		fprintf(stderr, "cannot read %s\n", path);
		exit(1);
	}
	fseek(f, 0, SEEK_END);
	long bytes = ftell(f);
	size_t row = 4 + (size_t)d * 4, n = (size_t)bytes / row;
	if ((size_t)bytes != n * row) {
		fprintf(stderr, "%s: not a .fvecs/.ivecs file of dim %d\n", path, d);
		exit(1);
	}
	fseek(f, 0, SEEK_SET);
	uint8_t *out = bench_alloc(n * (size_t)d * 4);
	for (size_t i = 0; i < n; i++)
		if (fread(&d, 4, 1, f) != 1 || fread(out + i * (size_t)d * 4, 4, (size_t)d, f) != (size_t)d) {
			fprintf(stderr, "%s: short read\n", path);
			exit(1);
		}
	fclose(f);
	*rows = (uint32_t)n;
	*dim = (uint32_t)d;
	return out;
}

static void bench_normalize(float *v, size_t rows, uint32_t dim)
{
	for (size_t i = 0; i < rows; i++)
		quant_normalize(v + i * dim, dim);
}

static flat_index_t *bench_flat(const bset_t *s)
{
	flat_index_t *f;
	if (flat_create(s->dim, s->metric, VELA_VEC_FLOAT32, &f) != 0)
		exit(1);
	for (uint32_t i = 0; i < s->n; i++)
		if (flat_set(f, i, s->base + (size_t)i * s->dim) != 0)
			exit(1);
	return f;
}

static void bench_truth(bqset_t *qs, const flat_index_t *f)
{
	vela_hit_t *h = bench_alloc((size_t)qs->nq * K * sizeof(*h));
	uint32_t *n = bench_alloc(qs->nq * sizeof(uint32_t));
	qs->gt = bench_alloc((size_t)qs->nq * K * sizeof(uint32_t));
	if (flat_search_batch(f, qs->q, qs->nq, K, NULL, h, n) != 0)
		exit(1);
	for (size_t i = 0; i < (size_t)qs->nq * K; i++)
		qs->gt[i] = h[i].docid;
	free(h);
	free(n);
}

/* File mode: the base, and query set i = queries[i] with truth gts[i]. */
static void bench_files(bset_t *s, const char *base, const char *queries, const char *gts,
			const char *names, vela_metric_t metric)
{
	*s = (bset_t){.name = "files", .metric = metric};
	s->base = bench_read_vecs(base, &s->n, &s->dim);
	char qb[4096], gb[4096], nb[256];
	snprintf(qb, sizeof(qb), "%s", queries);
	snprintf(gb, sizeof(gb), "%s", gts ? gts : "");
	snprintf(nb, sizeof(nb), "%s", names ? names : "");
	char *qsv, *gsv, *nsv;
	char *qt = strtok_r(qb, ",", &qsv), *gt = strtok_r(gb, ",", &gsv),
	     *nt = strtok_r(nb, ",", &nsv);
	for (; qt && s->nqs < BENCH_QSETS_MAX; s->nqs++) {
		bqset_t *q = &s->qs[s->nqs];
		uint32_t qd, gr, gd;
		q->q = bench_read_vecs(qt, &q->nq, &qd);
		if (qd != s->dim) {
			fprintf(stderr, "%s: dim %u, base has %u\n", qt, qd, s->dim);
			exit(1);
		}
		q->name = nt ? strdup(nt) : "query";
		if (metric == VELA_METRIC_COSINE)
			bench_normalize(q->q, q->nq, s->dim);
		if (gt != NULL) {
			uint32_t *all = bench_read_vecs(gt, &gr, &gd);
			if (gr != q->nq || gd < K) {
				fprintf(stderr, "%s: %u x %u, need %u x >= %u\n", gt, gr, gd, q->nq, K);
				exit(1);
			}
			q->gt = bench_alloc((size_t)q->nq * K * 4);
			for (size_t i = 0; i < q->nq; i++)
				memcpy(q->gt + i * K, all + i * gd, K * 4);
			free(all);
		}
		qt = strtok_r(NULL, ",", &qsv);
		gt = gt ? strtok_r(NULL, ",", &gsv) : NULL;
		nt = nt ? strtok_r(NULL, ",", &nsv) : NULL;
	}
	if (metric == VELA_METRIC_COSINE)
		bench_normalize(s->base, s->n, s->dim);
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
	bench_write_vecs(dir, s->name, "query.fvecs", s->qs[0].q, s->qs[0].nq, s->dim);
	bench_write_vecs(dir, s->name, "gt.ivecs", s->qs[0].gt, s->qs[0].nq, K);
}

/* ------------------------------------------------ searching */

typedef struct {
	const graph_t *g;
	const bqset_t *qs;
	uint32_t dim, window, q0, q1, hits;
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
		if (graph_search(j->g, j->qs->q + (size_t)qi * j->dim, K, &sp, out, &n) != 0)
			exit(1);
		for (uint32_t a = 0; a < n; a++)
			for (uint32_t b = 0; b < K; b++)
				j->hits += out[a].docid == j->qs->gt[(size_t)qi * K + b];
	}
	return NULL;
}

/* Queries/s and recall@10 of one window at `threads` threads; the query
 * set is repeated until at least 0.3 s has run. */
static void bench_window(const graph_t *g, const bqset_t *qs, uint32_t dim, uint32_t window,
			 uint32_t threads, double *qps, double *recall)
{
	uint64_t t0 = vela_now_ns();
	uint64_t done = 0, hits = 0;
	while (done == 0 || bench_sec(t0) < 0.3) {
		bench_job_t jobs[BENCH_THREADS_MAX];
		pthread_t tid[BENCH_THREADS_MAX];
		for (uint32_t t = 0; t < threads; t++) {
			jobs[t] = (bench_job_t){g, qs, dim, window, qs->nq * t / threads,
						qs->nq * (t + 1) / threads, 0};
			pthread_create(&tid[t], NULL, bench_search_job, &jobs[t]);
		}
		for (uint32_t t = 0; t < threads; t++) {
			pthread_join(tid[t], NULL);
			hits += jobs[t].hits;
		}
		done += qs->nq;
	}
	*qps = (double)done / bench_sec(t0);
	*recall = (double)hits / ((double)done * K);
}

/* Sweep the windows of one query set at one thread count (and its JSON). */
static void bench_sweep(const graph_t *g, const bset_t *s, const bqset_t *qs, uint32_t threads,
			const bopts_t *o, bool *first)
{
	printf("  %s, %u search thread%s\n  %-8s %10s %10s\n", qs->name, threads,
	       threads == 1 ? "" : "s", "window", "QPS", "recall@10");
	for (uint32_t w = 0; w < o->nwin; w++) {
		double qps, rec;
		bench_window(g, qs, s->dim, o->windows[w], threads, &qps, &rec);
		printf("  %-8u %10.0f %10.4f\n", o->windows[w], qps, rec);
		if (o->json)
			fprintf(o->json,
				"%s\n    {\"queries\": \"%s\", \"threads\": %u, \"window\": %u, "
				"\"qps\": %.1f, \"recall\": %.5f}",
				*first ? "" : ",", qs->name, threads, o->windows[w], qps, rec);
		*first = false;
		if (rec >= o->stop_recall)
			break;
	}
	fflush(stdout);
}

/* Build over `st` and sweep; store_bytes / record_bytes describe the
 * vectors (record_bytes: per vector). */
static void bench_set(const bset_t *s, const graph_store_t *st, const char *label,
		      bopts_t *o, double train_s, size_t record_bytes, size_t store_bytes)
{
	uint32_t *ids = bench_alloc(s->n * sizeof(uint32_t));
	for (uint32_t i = 0; i < s->n; i++)
		ids[i] = i;
	/* built-in mode: one build per search thread count (build threads =
	 * search threads); file mode: one build with build_threads. */
	uint32_t builds = o->file_mode ? 1 : o->nthr;
	for (uint32_t b = 0; b < builds; b++) {
		uint32_t bthreads = o->file_mode ? o->build_threads : o->threads[b];
		graph_params_t p;
		graph_params_default(&p);
		p.max_degree = o->R;
		p.window = o->L;
		p.threads = bthreads;
		graph_t *g;
		if (graph_create(st, &p, &g) != 0)
			exit(1);
		uint64_t t0 = vela_now_ns();
		if (graph_build(g, ids, s->n) != 0)
			exit(1);
		double bt = bench_sec(t0);
		size_t gbytes = graph_memory(g);
		printf("%s %s n=%u dim=%u R=%u L=%u threads=%u: build %.2f s (%.0f vec/s), %.1f MiB "
		       "adjacency (%.1f B/vector), vectors %zu B/vector\n",
		       s->name, label, s->n, s->dim, o->R, o->L, bthreads, bt, s->n / bt,
		       gbytes / 1048576.0, (double)gbytes / s->n, record_bytes);
		bool first = true;
		int blas = openblas_get_num_threads ? openblas_get_num_threads() : 0;
		if (openblas_set_num_threads)
			openblas_set_num_threads(1);
		if (o->json) {
			fprintf(o->json,
				"%s\n  {\"dataset\": \"%s\", \"library\": \"vela\", \"config\": \"%s\", "
				"\"n\": %u, \"dim\": %u, \"metric\": \"%s\", \"R\": %u, \"L\": %u, "
				"\"build_threads\": %u, \"build_s\": %.3f, \"train_encode_s\": %.3f, "
				"\"bytes_per_vector_vectors\": %zu, \"vector_store_bytes\": %zu, "
				"\"bytes_per_vector_graph\": %.2f, \"graph_bytes\": %zu, "
				"\"bytes_per_vector\": %.2f, \"search\": \"one query per call per thread\", "
				"\"points\": [",
				o->json_items++ ? "," : "", s->name, label, s->n, s->dim,
				s->metric == VELA_METRIC_L2 ? "L2" : s->metric == VELA_METRIC_IP ? "IP" : "COSINE",
				o->R, o->L, bthreads, bt, train_s, record_bytes, store_bytes,
				(double)gbytes / s->n, gbytes, (double)record_bytes + (double)gbytes / s->n);
		}
		for (uint32_t q = 0; q < s->nqs; q++)
			for (uint32_t t = 0; t < o->nthr; t++)
				if (o->file_mode || t == b)
					bench_sweep(g, s, &s->qs[q], o->threads[t], o, &first);
		if (o->json) {
			fprintf(o->json, "\n  ]}");
			fflush(o->json);
		}
		if (openblas_set_num_threads && blas > 0)
			openblas_set_num_threads(blas);
		graph_destroy(g);
	}
	free(ids);
}

/* Is `name` (a kind name, "F32", or a kind name + "-OOD") in `list`? */
static bool bench_listed(const char *list, const char *name)
{
	if (list == NULL)
		return false;
	if (strcmp(list, "all") == 0)
		return strstr(name, "-OOD") == NULL;
	size_t nl = strlen(name);
	for (const char *t = list; *t; t += strcspn(t, ",") + (t[strcspn(t, ",")] != 0))
		if (strcspn(t, ",") == nl && strncasecmp(t, name, nl) == 0)
			return true;
	return false;
}

/* The F32 run, then one per kind named in the list. */
static void bench_stores(const bset_t *s, const flat_index_t *f, bopts_t *o)
{
	if (!o->file_mode || o->compression == NULL || bench_listed(o->compression, "F32")) {
		graph_store_t st;
		graph_store_flat(f, &st);
		bench_set(s, &st, "F32", o, 0.0, (size_t)s->dim * 4, flat_memory(f));
	}
	for (int ood = 0; ood < 2; ood++)
		for (int k = 0; o->compression && k < GRAPH_LVQ_KIND_COUNT; k++) {
			char name[48];
			snprintf(name, sizeof(name), "%s%s", graph_lvq_kind_name((graph_lvq_kind_t)k),
				 ood ? "-OOD" : "");
			if (!bench_listed(o->compression, name))
				continue;
			if (ood && (k < GRAPH_LVQ_LEANVEC4X8 || o->ood_q == NULL)) {
				fprintf(stderr, "%s: needs a LeanVec kind and --ood-train: skipped\n", name);
				continue;
			}
			graph_lvq_params_t lp;
			graph_lvq_params_default(&lp);
			lp.kind = (graph_lvq_kind_t)k;
			lp.dim = s->dim;
			lp.metric = s->metric;
			lp.leanvec_mode = ood ? GRAPH_LVQ_LEANVEC_OOD : GRAPH_LVQ_LEANVEC_ID;
			graph_lvq_store_t *ls;
			vela_err_t err;
			uint64_t t0 = vela_now_ns();
			size_t ns = s->n < QUANT_LEANVEC_SAMPLE_DEFAULT ? s->n : QUANT_LEANVEC_SAMPLE_DEFAULT;
			if (graph_lvq_store_create(&lp, s->base, ns, ood ? o->ood_q : NULL,
						   ood ? o->ood_n : 0, &ls, &err) != 0) {
				fprintf(stderr, "%s: %s\n", name, err.msg);
				exit(1);
			}
			for (uint32_t i = 0; i < s->n; i++)
				if (graph_lvq_store_set(ls, i, s->base + (size_t)i * s->dim) != 0)
					exit(1);
			double ts = bench_sec(t0);
			printf("%s %s: train + encode %.2f s, %zu B/vector (F32 %u)\n", s->name, name, ts,
			       graph_lvq_store_record_size(ls), s->dim * 4);
			bench_set(s, graph_lvq_store(ls), name, o, ts, graph_lvq_store_record_size(ls),
				  graph_lvq_store_memory(ls));
			graph_lvq_store_destroy(ls);
		}
}

/* Parse "a,b,c" into at most BENCH_LIST_MAX values in [lo, hi]. */
static uint32_t bench_parse_list(const char *s, uint32_t *out, uint32_t lo, uint32_t hi)
{
	uint32_t n = 0;
	for (const char *t = s; *t && n < BENCH_LIST_MAX; t += strcspn(t, ",") + (t[strcspn(t, ",")] != 0)) {
		unsigned long v = strtoul(t, NULL, 10);
		if (v < lo || v > hi) {
			fprintf(stderr, "value %lu out of %u..%u in %s\n", v, lo, hi, s);
			exit(2);
		}
		out[n++] = (uint32_t)v;
	}
	return n;
}

int main(int argc, char **argv)
{
	const char *sift = "/work/shared/data/sift-5k.tsv", *dir = NULL, *json = NULL;
	const char *base = NULL, *queries = NULL, *gts = NULL, *names = NULL, *ood = NULL,
		   *dname = NULL, *windows = "10,20,30,40,60,80,120,160,200", *threads = "1,2";
	vela_metric_t metric = VELA_METRIC_L2;
	uint32_t n = 100000, dim = 128, nq = 1000;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	bopts_t o = {.R = GRAPH_MAX_DEGREE_DEFAULT, .L = GRAPH_CONSTRUCTION_WINDOW_SIZE_DEFAULT,
		     .build_threads = ncpu > 0 ? (uint32_t)ncpu : 1, .stop_recall = 2.0};
	for (int i = 1; i + 1 < argc; i += 2) {
		const char *a = argv[i], *v = argv[i + 1];
		unsigned long u = strtoul(v, NULL, 10);
		if (!strcmp(a, "--sift"))
			sift = v;
		else if (!strcmp(a, "--compression"))
			o.compression = v;
		else if (!strcmp(a, "--fvecs"))
			dir = v;
		else if (!strcmp(a, "--n"))
			n = (uint32_t)u;
		else if (!strcmp(a, "--dim"))
			dim = (uint32_t)u;
		else if (!strcmp(a, "--nq"))
			nq = (uint32_t)u;
		else if (!strcmp(a, "--R"))
			o.R = (uint32_t)u;
		else if (!strcmp(a, "--L"))
			o.L = (uint32_t)u;
		else if (!strcmp(a, "--windows"))
			windows = v;
		else if (!strcmp(a, "--threads"))
			threads = v;
		else if (!strcmp(a, "--build-threads"))
			o.build_threads = (uint32_t)u;
		else if (!strcmp(a, "--stop-recall"))
			o.stop_recall = strtod(v, NULL);
		else if (!strcmp(a, "--json"))
			json = v;
		else if (!strcmp(a, "--base"))
			base = v;
		else if (!strcmp(a, "--queries"))
			queries = v;
		else if (!strcmp(a, "--gt"))
			gts = v;
		else if (!strcmp(a, "--names"))
			names = v;
		else if (!strcmp(a, "--name"))
			dname = v;
		else if (!strcmp(a, "--ood-train"))
			ood = v;
		else if (!strcmp(a, "--metric")) {
			if (!strcasecmp(v, "L2"))
				metric = VELA_METRIC_L2;
			else if (!strcasecmp(v, "IP"))
				metric = VELA_METRIC_IP;
			else if (!strcasecmp(v, "COSINE"))
				metric = VELA_METRIC_COSINE;
			else {
				fprintf(stderr, "unknown metric %s\n", v);
				return 2;
			}
		} else {
			fprintf(stderr, "unknown option %s\n", a);
			return 2;
		}
	}
	o.nwin = bench_parse_list(windows, o.windows, GRAPH_SEARCH_WINDOW_SIZE_MIN,
				  GRAPH_SEARCH_WINDOW_SIZE_MAX);
	o.nthr = bench_parse_list(threads, o.threads, 1, BENCH_THREADS_MAX);
	if (o.build_threads < GRAPH_THREADS_MIN || o.build_threads > GRAPH_THREADS_MAX)
		o.build_threads = 1;
	if (json && (o.json = fopen(json, "w")) == NULL) {
		fprintf(stderr, "cannot write %s\n", json);
		return 1;
	}
	if (o.json)
		fprintf(o.json, "[");
	bset_t sets[2];
	int ns = 0;
	if (base != NULL) {
		if (queries == NULL) {
			fprintf(stderr, "--base needs --queries\n");
			return 2;
		}
		o.file_mode = true;
		bench_files(&sets[ns], base, queries, gts, names, metric);
		if (dname)
			sets[ns].name = dname;
		ns++;
		if (ood) {
			uint32_t od;
			float *oq = bench_read_vecs(ood, &o.ood_n, &od);
			if (od != sets[0].dim) {
				fprintf(stderr, "%s: dim %u, base has %u\n", ood, od, sets[0].dim);
				return 1;
			}
			if (metric == VELA_METRIC_COSINE)
				bench_normalize(oq, o.ood_n, od);
			o.ood_q = oq;
		}
	} else {
		if (bench_sift(&sets[ns], sift) == 0)
			ns++;
		else
			fprintf(stderr, "sift-5k not found at %s: skipped\n", sift);
		if (n > 0)
			bench_synth(&sets[ns++], n, nq, dim);
	}
	for (int i = 0; i < ns; i++) {
		flat_index_t *f = bench_flat(&sets[i]);
		for (uint32_t q = 0; q < sets[i].nqs; q++)
			if (sets[i].qs[q].gt == NULL)
				bench_truth(&sets[i].qs[q], f);
		if (dir && !o.file_mode)
			bench_export(&sets[i], dir);
		bench_stores(&sets[i], f, &o);
		flat_destroy(f);
		free(sets[i].base);
		for (uint32_t q = 0; q < sets[i].nqs; q++) {
			free(sets[i].qs[q].q);
			free(sets[i].qs[q].gt);
		}
	}
	if (o.json) {
		fprintf(o.json, "\n]\n");
		fclose(o.json);
	}
	free((void *)o.ood_q);
	return 0;
}
