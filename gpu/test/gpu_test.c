/*
 * gpu_test.c — tests of gpu/ against an independent double-precision brute
 * force (needs only libc and the gpu library, so it runs on a bare GPU host).
 *
 * Exit status: 0 all passed, 1 a check failed, 77 no CUDA device (CTest's
 * SKIP_RETURN_CODE; it prints "skipped: no CUDA device").
 *
 * Every run draws fresh random data (the seed is printed; pass one as argv[1]
 * to replay; 0 draws one), poisons the outputs before each call and checks
 * that every slot was written. argv[2]: "quick" (fewer cases) or "encoder"
 * (only the BERT encoder's tests, gpu_test_encoder.c).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpu/gpu.h"

/* gpu_test_encoder.c: the BERT encoder against a double-precision forward. */
int gpu_test_encoder(gpu_ctx_t *ctx, uint64_t seed, int quick, int *pass, int *fail);
/* gpu_test_part.c: batched partition scans; gpu_test_linalg.c: Gram matrices. */
int gpu_test_part(gpu_ctx_t *ctx, uint64_t seed, int quick, int *pass, int *fail);
int gpu_test_linalg(gpu_ctx_t *ctx, uint64_t seed, int quick, int *pass, int *fail);

static uint64_t g_rng;
static int g_fail, g_pass;
static int g_quick; /* argv[2] "quick": one dimension, no covariance */

static uint64_t rng_next(void)
{
	g_rng ^= g_rng >> 12;
	g_rng ^= g_rng << 25;
	g_rng ^= g_rng >> 27;
	return g_rng * 0x2545F4914F6CDD1DULL;
}

static double rng_unit(void) { return ((rng_next() >> 11) + 0.5) / 9007199254740992.0; }

static float rng_gauss(void)
{
	return (float)(sqrt(-2.0 * log(rng_unit())) * cos(6.283185307179586 * rng_unit()));
}

/* Gaussian mixture: realistic neighbourhoods, distinct distances. */
static float *gen_rows(uint64_t n, uint32_t d, int normalise, const float *centres, int nc)
{
	float *x = malloc(n * d * sizeof(float));
	for (uint64_t r = 0; r < n; r++) {
		const float *c = centres + (size_t)(rng_next() % nc) * d;
		double s = 0;
		for (uint32_t j = 0; j < d; j++) {
			x[r * d + j] = c[j] + 0.35f * rng_gauss();
			s += (double)x[r * d + j] * x[r * d + j];
		}
		if (normalise)
			for (uint32_t j = 0; j < d; j++)
				x[r * d + j] = (float)(x[r * d + j] / sqrt(s));
	}
	return x;
}

static float *gen_centres(uint32_t d, int nc)
{
	float *c = malloc((size_t)nc * d * sizeof(float));
	for (size_t i = 0; i < (size_t)nc * d; i++)
		c[i] = rng_gauss();
	return c;
}

/* ------------------------------------------------------------ reference */

typedef struct { double d; uint32_t id; } pair_t;

static int pair_cmp(const void *a, const void *b)
{
	const pair_t *x = a, *y = b;
	if (x->d != y->d)
		return x->d < y->d ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

static double ref_dist(const float *q, const float *x, uint32_t d, gpu_metric_t met)
{
	double s = 0;
	for (uint32_t j = 0; j < d; j++)
		s += met == GPU_METRIC_L2 ? ((double)q[j] - x[j]) * ((double)q[j] - x[j])
					  : (double)q[j] * x[j];
	return met == GPU_METRIC_L2 ? s : 1.0 - s;
}

static int allowed(const uint64_t *f, uint64_t r) { return !f || ((f[r >> 6] >> (r & 63)) & 1); }

/* The exact answer: all[q*k + i], sorted by (distance, id); count[q] valid. */
static pair_t *ref_knn(const float *X, uint64_t r0, uint64_t r1, uint32_t d, const float *Q,
		       uint32_t nq, uint32_t k, gpu_metric_t met, const uint64_t *filter,
		       uint32_t *count)
{
	pair_t *all = malloc((size_t)nq * k * sizeof(pair_t));
	pair_t *tmp = malloc((r1 - r0 + 1) * sizeof(pair_t));
	for (uint32_t q = 0; q < nq; q++) {
		uint32_t n = 0;
		for (uint64_t r = r0; r < r1; r++)
			if (allowed(filter, r))
				tmp[n++] = (pair_t){ref_dist(Q + (size_t)q * d, X + r * d, d, met),
						    (uint32_t)r};
		qsort(tmp, n, sizeof(pair_t), pair_cmp);
		count[q] = n < k ? n : k;
		for (uint32_t i = 0; i < k; i++)
			all[(size_t)q * k + i] = i < n ? tmp[i] : (pair_t){INFINITY, UINT32_MAX};
	}
	free(tmp);
	return all;
}

/* ------------------------------------------------------------ checks */

#define CHECK(cond, ...)                                                     \
	do {                                                                 \
		if (!(cond)) {                                               \
			printf("  FAIL %s:%d: ", __FILE__, __LINE__);        \
			printf(__VA_ARGS__);                                 \
			printf("\n");                                        \
			return 1;                                            \
		}                                                            \
	} while (0)

/* Every slot written, valid ids first and ascending, then empties. */
static int check_shape(const uint32_t *ids, const float *dists, uint32_t nq, uint32_t k,
		       uint64_t rows, const uint32_t *count)
{
	for (uint32_t q = 0; q < nq; q++)
		for (uint32_t i = 0; i < k; i++) {
			uint32_t id = ids[(size_t)q * k + i];
			float dd = dists[(size_t)q * k + i];
			if (i < count[q]) {
				CHECK(id < rows && isfinite(dd), "q%u slot %u: id %u dist %g (want %u valid)",
				      q, i, id, dd, count[q]);
				if (i)
					CHECK(dists[(size_t)q * k + i - 1] <= dd, "q%u not sorted at %u", q, i);
			} else {
				CHECK(id == UINT32_MAX && isinf(dd), "q%u slot %u should be empty: id %u dist %g",
				      q, i, id, dd);
			}
		}
	return 0;
}

/* Exact F32: same ids except where the reference itself ties (within
 * 1e-6), distances within 1e-4 relative. */
static int check_exact(const uint32_t *ids, const float *dists, const pair_t *ref,
		       const float *X, const float *Q, uint32_t d, gpu_metric_t met, uint32_t nq,
		       uint32_t k, const uint32_t *count)
{
	for (uint32_t q = 0; q < nq; q++)
		for (uint32_t i = 0; i < count[q]; i++) {
			const pair_t *r = &ref[(size_t)q * k + i];
			uint32_t id = ids[(size_t)q * k + i];
			double tol = 1e-4 * fabs(r->d) + 1e-5;
			CHECK(fabs(dists[(size_t)q * k + i] - r->d) <= tol,
			      "q%u slot %u: dist %.7g want %.7g", q, i, dists[(size_t)q * k + i], r->d);
			if (id != r->id) {
				double got = ref_dist(Q + (size_t)q * d, X + (size_t)id * d, d, met);
				CHECK(fabs(got - r->d) <= 1e-6 * fabs(r->d) + 1e-7,
				      "q%u slot %u: id %u (%.9g) want %u (%.9g)", q, i, id, got, r->id, r->d);
			}
		}
	return 0;
}

/* recall@k against the reference, and each returned distance is the true
 * distance of its id (within tol, relative) under `X` (original or decoded). */
static double recall_of(const uint32_t *ids, const pair_t *ref, uint32_t nq, uint32_t k,
			const uint32_t *count)
{
	uint64_t hit = 0, tot = 0;
	for (uint32_t q = 0; q < nq; q++) {
		tot += count[q];
		for (uint32_t i = 0; i < count[q]; i++)
			for (uint32_t j = 0; j < count[q]; j++)
				if (ids[(size_t)q * k + i] == ref[(size_t)q * k + j].id) {
					hit++;
					break;
				}
	}
	return tot ? (double)hit / tot : 1.0;
}

static int check_dists(const uint32_t *ids, const float *dists, const float *X, const float *Q,
		       uint32_t d, gpu_metric_t met, uint32_t nq, uint32_t k, const uint32_t *count,
		       double tol)
{
	for (uint32_t q = 0; q < nq; q++)
		for (uint32_t i = 0; i < count[q]; i++) {
			uint32_t id = ids[(size_t)q * k + i];
			double want = ref_dist(Q + (size_t)q * d, X + (size_t)id * d, d, met);
			CHECK(fabs(dists[(size_t)q * k + i] - want) <= tol * fabs(want) + 1e-4,
			      "q%u slot %u id %u: dist %.7g want %.7g", q, i, id, dists[(size_t)q * k + i], want);
		}
	return 0;
}

/* ------------------------------------------------------------ encodings on the host */

static float bf16_round(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
	memcpy(&f, &u, 4);
	return f;
}

static float *decode_as(const float *x, size_t n, gpu_elem_t e)
{
	float *y = malloc(n * sizeof(float));
	for (size_t i = 0; i < n; i++)
		y[i] = e == GPU_ELEM_BF16 ? bf16_round(x[i]) : e == GPU_ELEM_F16 ? (float)(_Float16)x[i] : x[i];
	return y;
}

/* ------------------------------------------------------------ cases */

static const char *elem_name[] = {"F32", "F16", "BF16", "LVQ8"};

typedef struct kcase {
	gpu_elem_t elem;
	gpu_metric_t met;
	uint32_t d, nq, k, rerank;
	uint64_t n, r0, r1;
	const uint64_t *filter;
	int split_append;
	int no_f32; /* no F32 copy: BF16 re-ranks against its own rows */
	int lib_tiles; /* the library's default (large) tiles, not tiny ones */
	uint32_t path; /* GPU_PATH_... */
} kcase_t;

static int run_case(gpu_ctx_t *ctx, const kcase_t *c, const float *X, const float *Q)
{
	vela_err_t err = {0};
	gpu_matrix_params_t mp = {c->elem, c->met, c->d, c->split_append ? 16 : c->n, !c->no_f32};
	gpu_matrix_t *m = NULL;
	int rc = gpu_matrix_create(ctx, &mp, &m, &err);
	CHECK(rc == 0, "create: %s", err.msg);
	uint64_t half = c->split_append ? c->n / 2 : c->n;
	rc = gpu_matrix_append(m, X, half, &err);
	if (!rc && half < c->n)
		rc = gpu_matrix_append(m, X + half * c->d, c->n - half, &err);
	CHECK(rc == 0, "append: %s", err.msg);
	CHECK(gpu_matrix_rows(m) == c->n, "rows %llu", (unsigned long long)gpu_matrix_rows(m));
	size_t nout = (size_t)c->nq * c->k;
	uint32_t *ids = malloc(nout * 4), *count = malloc(c->nq * 4);
	float *dists = malloc(nout * 4);
	memset(ids, 0xA5, nout * 4);
	for (size_t i = 0; i < nout; i++)
		dists[i] = NAN;
	gpu_knn_params_t kp = {.k = c->k, .row_begin = c->r0, .row_end = c->r1, .filter = c->filter,
			       .rerank = c->rerank, .tile_queries = c->lib_tiles ? 0 : 32,
			       .tile_rows = c->lib_tiles ? 0 : 1000, .path = c->path};
	rc = gpu_knn(m, Q, c->nq, &kp, ids, dists, &err);
	gpu_matrix_free(m);
	int bad = rc != 0;
	if (bad)
		printf("  FAIL knn: %s\n", err.msg);
	uint64_t r1 = c->r1 ? c->r1 : c->n;
	int exact_dist = c->elem == GPU_ELEM_F32 || c->rerank != 1;
	/* BF16 without an F32 copy re-scores the F32 query against the BF16 rows */
	int on_rows16 = c->no_f32 && c->elem == GPU_ELEM_BF16 && c->rerank != 1;
	float *Xd = (!exact_dist && c->elem != GPU_ELEM_LVQ8) || on_rows16
			    ? decode_as(X, c->n * c->d, c->elem) : NULL;
	float *Qd = Xd && !on_rows16 ? decode_as(Q, (size_t)c->nq * c->d, c->elem) : NULL;
	const float *RX = Xd ? Xd : X, *RQ = Qd ? Qd : Q;
	pair_t *ref = bad ? NULL : ref_knn(RX, c->r0, r1, c->d, RQ, c->nq, c->k, c->met, c->filter, count);
	double rec = -1;
	if (!bad)
		bad = check_shape(ids, dists, c->nq, c->k, c->n, count);
	if (!bad) {
		rec = recall_of(ids, ref, c->nq, c->k, count);
		if (c->elem == GPU_ELEM_F32)
			bad = check_exact(ids, dists, ref, X, Q, c->d, c->met, c->nq, c->k, count);
		else if (exact_dist || Xd)
			bad = check_dists(ids, dists, RX, RQ, c->d, c->met, c->nq, c->k, count,
					  exact_dist ? 1e-4 : 2e-3);
		double want = c->elem == GPU_ELEM_LVQ8 && c->rerank == 1 ? 0.80 : 0.99;
		if (!bad && rec < want) {
			printf("  FAIL recall %.4f < %.2f\n", rec, want);
			bad = 1;
		}
	}
	printf("%-4s %s %-4s d=%-3u n=%-5llu rows=[%llu,%llu) k=%-4u rerank=%-2u filter=%s recall=%.4f  %s%s%s%s\n",
	       bad ? "FAIL" : "ok", elem_name[c->elem], c->met == GPU_METRIC_L2 ? "L2" : "IP", c->d,
	       (unsigned long long)c->n, (unsigned long long)c->r0, (unsigned long long)r1, c->k,
	       c->rerank, c->filter ? "yes" : "no", rec, c->split_append ? "(two appends)" : "",
	       c->no_f32 ? "(no F32 copy)" : "", c->lib_tiles ? "(default tiles)" : "",
	       c->path == GPU_PATH_FUSED ? "(fused)" : "");
	free(ref);
	free(Xd);
	free(Qd);
	free(ids);
	free(dists);
	free(count);
	bad ? g_fail++ : g_pass++;
	return bad;
}

static void knn_matrix(gpu_ctx_t *ctx)
{
	static const uint32_t dims[] = {77, 130};
	static const uint64_t ns[] = {5003, 2051};
	static const uint32_t ks[] = {1, 10, 100, 1000};
	for (int di = 0; di < (g_quick ? 1 : 2); di++) {
		uint32_t d = dims[di], nq = 77;
		uint64_t n = ns[di];
		float *cen = gen_centres(d, 24);
		for (int met = 0; met < 2; met++) {
			float *X = gen_rows(n, d, met == GPU_METRIC_IP, cen, 24);
			float *Q = gen_rows(nq, d, met == GPU_METRIC_IP, cen, 24);
			for (int e = 0; e < 4; e++)
				for (int ki = 0; ki < 4; ki++) {
					kcase_t c = {.elem = (gpu_elem_t)e, .met = (gpu_metric_t)met,
						     .d = d, .nq = nq, .k = ks[ki], .n = n,
						     .split_append = ki == 1};
					run_case(ctx, &c, X, Q);
					if (e != GPU_ELEM_F32 && ks[ki] <= 100) {
						c.rerank = 1; /* the encoding's own distances */
						run_case(ctx, &c, X, Q);
					}
					if (e == GPU_ELEM_BF16) {
						c.rerank = 0;
						c.no_f32 = 1;
						run_case(ctx, &c, X, Q);
					}
				}
			free(X);
			free(Q);
		}
		free(cen);
	}
}

/* Default tiles: several passes of the selection over one long tile row. */
static void big_tile_cases(gpu_ctx_t *ctx)
{
	uint32_t d = 64, nq = 50;
	uint64_t n = 40000;
	float *cen = gen_centres(d, 40);
	float *X = gen_rows(n, d, 0, cen, 40), *Q = gen_rows(nq, d, 0, cen, 40);
	for (int e = 0; e < 4; e++) {
		kcase_t c = {.elem = (gpu_elem_t)e, .met = GPU_METRIC_L2, .d = d, .nq = nq, .k = 10,
			     .n = n, .no_f32 = e == GPU_ELEM_BF16, .lib_tiles = 1};
		run_case(ctx, &c, X, Q);
		c.k = 1;
		run_case(ctx, &c, X, Q);
	}
	free(X);
	free(Q);
	free(cen);
}

static void filter_cases(gpu_ctx_t *ctx)
{
	uint32_t d = 45, nq = 40;
	uint64_t n = 3001, words = (n + 63) / 64;
	float *cen = gen_centres(d, 10);
	float *X = gen_rows(n, d, 0, cen, 10), *Q = gen_rows(nq, d, 0, cen, 10);
	uint64_t *none = calloc(words, 8), *third = calloc(words, 8), *five = calloc(words, 8);
	for (uint64_t r = 0; r < n; r += 3)
		third[r >> 6] |= 1ull << (r & 63);
	for (uint64_t r = 7; r < n; r += 600)
		five[r >> 6] |= 1ull << (r & 63);
	for (int e = 0; e < 4; e += 3) {
		for (int ki = 0; ki < 3; ki++) {
			uint32_t k = ki == 0 ? 10 : ki == 1 ? 300 : 7;
			kcase_t c = {.elem = (gpu_elem_t)e, .met = GPU_METRIC_L2, .d = d, .nq = nq,
				     .k = k, .n = n, .filter = none};
			run_case(ctx, &c, X, Q); /* empty filter: nothing at all */
			c.filter = third;
			run_case(ctx, &c, X, Q);
			c.filter = five; /* fewer allowed rows than k */
			run_case(ctx, &c, X, Q);
			c.filter = NULL;
			c.r0 = 100;
			c.r1 = 1517; /* a block of rows, not tile aligned */
			run_case(ctx, &c, X, Q);
		}
	}
	free(none);
	free(third);
	free(five);
	free(X);
	free(Q);
	free(cen);
}

/* ------------------------------------------------------------ fused LVQ-8 */

/* Refusals of GPU_PATH_FUSED (VELA_EUNSUPPORTED, never a wrong answer). */
static void fused_refusals(gpu_ctx_t *ctx, const float *X, const float *Q, uint32_t d)
{
	static const struct {
		gpu_elem_t e;
		uint32_t d, k;
		uint64_t r0;
		const char *what;
	} cases[] = {{GPU_ELEM_BF16, 61, 10, 0, "a BF16 matrix"},
		     {GPU_ELEM_LVQ8, 61, 40, 0, "rerank * k = 160"},
		     {GPU_ELEM_LVQ8, 61, 10, 8, "row_begin 8"}};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		vela_err_t err = {0};
		gpu_matrix_params_t mp = {cases[i].e, GPU_METRIC_L2, d, 4096, 1};
		gpu_matrix_t *m = NULL;
		uint32_t ids[40];
		float dists[40];
		int rc = gpu_matrix_create(ctx, &mp, &m, &err);
		if (!rc)
			rc = gpu_matrix_append(m, X, 4096, &err);
		gpu_knn_params_t kp = {.k = cases[i].k, .row_begin = cases[i].r0,
				       .path = GPU_PATH_FUSED};
		if (!rc)
			rc = gpu_knn(m, Q, 1, &kp, ids, dists, &err);
		gpu_matrix_free(m);
		int ok = rc == VELA_EUNSUPPORTED;
		printf("%-4s fused path refuses %s: %s\n", ok ? "ok" : "FAIL", cases[i].what,
		       rc == VELA_EUNSUPPORTED ? err.msg : "not refused");
		ok ? g_pass++ : g_fail++;
	}
}

/* The fused and tiled paths re-rank the kc best by the same LVQ-8 value, so
 * they must agree on (nearly) every result; only values tied within the
 * two paths' rounding can swap places at the kc-th slot. */
static void fused_vs_tiled(gpu_ctx_t *ctx, const float *X, uint64_t n, const float *Q,
			   uint32_t nq, uint32_t d, gpu_metric_t met)
{
	vela_err_t err = {0};
	gpu_matrix_params_t mp = {GPU_ELEM_LVQ8, met, d, n, 1};
	gpu_matrix_t *m = NULL;
	uint32_t k = 10;
	size_t nout = (size_t)nq * k;
	uint32_t *i1 = malloc(nout * 4), *i2 = malloc(nout * 4);
	float *d1 = malloc(nout * 4), *d2 = malloc(nout * 4);
	int rc = gpu_matrix_create(ctx, &mp, &m, &err);
	if (!rc)
		rc = gpu_matrix_append(m, X, n, &err);
	gpu_knn_params_t kp = {.k = k, .path = GPU_PATH_FUSED};
	if (!rc)
		rc = gpu_knn(m, Q, nq, &kp, i1, d1, &err);
	kp.path = GPU_PATH_TILED;
	if (!rc)
		rc = gpu_knn(m, Q, nq, &kp, i2, d2, &err);
	char note[400] = "";
	gpu_fused_probe(m, note, sizeof(note));
	gpu_matrix_free(m);
	size_t same = 0;
	for (size_t i = 0; !rc && i < nout; i++)
		same += i1[i] == i2[i];
	double agree = rc ? 0 : (double)same / nout;
	int ok = rc == 0 && agree >= 0.995;
	printf("%-4s fused == tiled: %.4f of %zu results (d=%u n=%llu %s)%s%s\n",
	       ok ? "ok" : "FAIL", agree, nout, d, (unsigned long long)n,
	       met == GPU_METRIC_L2 ? "L2" : "IP", rc ? ": " : "", rc ? err.msg : "");
	printf("     %s\n", note);
	ok ? g_pass++ : g_fail++;
	free(i1);
	free(i2);
	free(d1);
	free(d2);
}

/* GPU_PATH_FUSED against the double-precision brute force: several rounds
 * (70,001 rows = 274 tiles: rounds of 15, 240 and 274), a partial query
 * block, k = 1 .. kc = 128, filters, a row range, dimensions 61 .. 768. */
static void fused_cases(gpu_ctx_t *ctx)
{
	{
		vela_err_t err = {0};
		gpu_matrix_params_t mp = {GPU_ELEM_LVQ8, GPU_METRIC_L2, 64, 512, 1};
		gpu_matrix_t *m = NULL;
		float *cen = gen_centres(64, 8), *X = gen_rows(512, 64, 0, cen, 8);
		char note[400] = "";
		int rc = gpu_matrix_create(ctx, &mp, &m, &err), use = 0;
		if (!rc && !(rc = gpu_matrix_append(m, X, 512, &err)))
			use = gpu_fused_probe(m, note, sizeof(note));
		gpu_matrix_free(m);
		printf("%-4s fused path usable: %s%s\n", use == 1 ? "ok" : "FAIL", note,
		       rc ? err.msg : "");
		use == 1 ? g_pass++ : g_fail++;
		free(X);
		free(cen);
		if (use != 1)
			return;
	}
	uint32_t d = 61, nq = 300;
	uint64_t n = 70001, words = (n + 63) / 64;
	float *cen = gen_centres(d, 40);
	uint64_t *third = calloc(words, 8), *few = calloc(words, 8);
	for (uint64_t r = 0; r < n; r += 3)
		third[r >> 6] |= 1ull << (r & 63);
	for (uint64_t r = 5; r < n; r += 9000)
		few[r >> 6] |= 1ull << (r & 63);
	for (int met = 0; met < 2; met++) {
		float *X = gen_rows(n, d, met == GPU_METRIC_IP, cen, 40);
		float *Q = gen_rows(nq, d, met == GPU_METRIC_IP, cen, 40);
		kcase_t c = {.elem = GPU_ELEM_LVQ8, .met = (gpu_metric_t)met, .d = d, .nq = nq,
			     .k = 10, .n = n, .lib_tiles = 1, .path = GPU_PATH_FUSED};
		run_case(ctx, &c, X, Q);
		if (met == GPU_METRIC_L2) {
			fused_refusals(ctx, X, Q, d);
			c.k = 1;
			run_case(ctx, &c, X, Q);
			c.k = 32; /* kc = 128, the largest */
			run_case(ctx, &c, X, Q);
			c.k = 10;
			c.rerank = 1; /* the LVQ-8 values themselves */
			run_case(ctx, &c, X, Q);
			c.rerank = 0;
			c.filter = third;
			run_case(ctx, &c, X, Q);
			c.filter = few; /* fewer allowed rows than k */
			run_case(ctx, &c, X, Q);
			c.filter = NULL;
			c.r0 = 4096;
			c.r1 = 60001;
			run_case(ctx, &c, X, Q);
			c.r0 = c.r1 = 0;
			c.nq = 129; /* one query past a block */
			run_case(ctx, &c, X, Q);
			c.nq = 1;
			run_case(ctx, &c, X, Q);
		}
		if (!g_quick)
			fused_vs_tiled(ctx, X, n, Q, nq, d, (gpu_metric_t)met);
		free(X);
		free(Q);
	}
	free(cen);
	static const uint32_t dims[] = {768, 384};
	for (int di = 0; di < (g_quick ? 1 : 2); di++) {
		d = dims[di];
		n = di == 0 ? 20000 : 3001; /* two rounds; one round */
		cen = gen_centres(d, 40);
		float *X = gen_rows(n, d, di == 1, cen, 40), *Q = gen_rows(200, d, di == 1, cen, 40);
		kcase_t c = {.elem = GPU_ELEM_LVQ8, .met = di == 0 ? GPU_METRIC_L2 : GPU_METRIC_IP,
			     .d = d, .nq = 200, .k = 10, .n = n, .lib_tiles = 1,
			     .path = GPU_PATH_FUSED};
		run_case(ctx, &c, X, Q);
		free(X);
		free(Q);
		free(cen);
	}
	free(third);
	free(few);
}

/* ------------------------------------------------------------ linalg */

static int test_project(gpu_ctx_t *ctx)
{
	uint64_t n = 1000;
	uint32_t din = 77, dout = 19;
	float *X = malloc(n * din * 4), *P = malloc((size_t)din * dout * 4), *Y = malloc(n * dout * 4);
	for (size_t i = 0; i < n * din; i++)
		X[i] = rng_gauss();
	for (size_t i = 0; i < (size_t)din * dout; i++)
		P[i] = rng_gauss();
	vela_err_t err = {0};
	int rc = gpu_project(ctx, X, n, din, P, dout, Y, &err);
	double num = 0, den = 0;
	for (uint64_t r = 0; rc == 0 && r < n; r++)
		for (uint32_t j = 0; j < dout; j++) {
			double s = 0;
			for (uint32_t l = 0; l < din; l++)
				s += (double)X[r * din + l] * P[(size_t)l * dout + j];
			num += (Y[r * dout + j] - s) * (Y[r * dout + j] - s);
			den += s * s;
		}
	double rel = rc ? 1 : sqrt(num / den);
	int bad = rc || !(rel < 2e-3); /* TF32 lands near 3e-4 */
	printf("%-4s project n=%llu %u->%u: rel err %.2e %s\n", bad ? "FAIL" : "ok",
	       (unsigned long long)n, din, dout, rel, rc ? err.msg : "");
	free(X);
	free(P);
	free(Y);
	return bad;
}

static int test_covariance(gpu_ctx_t *ctx)
{
	uint64_t n = 70001; /* more than one staging chunk at d = 33 */
	uint32_t d = 33;
	float *X = malloc(n * d * 4), *C = malloc((size_t)d * d * 4), *mu = malloc(d * 4);
	for (uint64_t r = 0; r < n; r++)
		for (uint32_t j = 0; j < d; j++)
			X[r * d + j] = 5.0f + (j + 1) * 0.1f * rng_gauss() + (j ? X[r * d] : 0);
	vela_err_t err = {0};
	int rc = gpu_covariance(ctx, X, n, d, mu, C, &err);
	double *m = calloc(d, sizeof(double)), maxabs = 0, maxerr = 0, muerr = 0;
	for (uint64_t r = 0; r < n; r++)
		for (uint32_t j = 0; j < d; j++)
			m[j] += X[r * d + j];
	for (uint32_t j = 0; j < d; j++) {
		m[j] /= n;
		muerr = fmax(muerr, fabs(mu[j] - m[j]) / (fabs(m[j]) + 1e-9));
	}
	for (uint32_t a = 0; rc == 0 && a < d; a++)
		for (uint32_t b = 0; b < d; b++) {
			double s = 0;
			for (uint64_t r = 0; r < n; r++)
				s += (X[r * d + a] - m[a]) * (X[r * d + b] - m[b]);
			s /= n;
			maxabs = fmax(maxabs, fabs(s));
			maxerr = fmax(maxerr, fabs(C[(size_t)a * d + b] - s));
		}
	double rel = rc ? 1 : maxerr / maxabs;
	int bad = rc || !(rel < 1e-4) || !(muerr < 1e-4);
	printf("%-4s covariance n=%llu d=%u: max rel err %.2e, mean rel err %.2e %s\n",
	       bad ? "FAIL" : "ok", (unsigned long long)n, d, rel, muerr, rc ? err.msg : "");
	free(X);
	free(C);
	free(mu);
	free(m);
	return bad;
}

static int test_kmeans(gpu_ctx_t *ctx)
{
	uint64_t n = 20000;
	uint32_t d = 37, kc = 50;
	float *cen = gen_centres(d, 30), *X = gen_rows(n, d, 0, cen, 30);
	float *C = malloc((size_t)kc * d * 4), *C0 = malloc((size_t)kc * d * 4);
	for (uint32_t c = 0; c < kc; c++)
		memcpy(C + (size_t)c * d, X + (rng_next() % n) * d, d * 4);
	memcpy(C0, C, (size_t)kc * d * 4);
	uint32_t *asg = malloc(n * 4);
	double inertia = 0, ref_in = 0;
	vela_err_t err = {0};
	int rc = gpu_kmeans_step(ctx, X, n, d, C, kc, asg, &inertia, &err);
	uint64_t wrong = 0;
	double *sum = calloc((size_t)kc * d, sizeof(double)), cerr = 0;
	uint64_t *cnt = calloc(kc, 8);
	for (uint64_t r = 0; rc == 0 && r < n; r++) {
		double best = INFINITY, second = INFINITY;
		uint32_t bi = 0;
		for (uint32_t c = 0; c < kc; c++) {
			double s = ref_dist(X + r * d, C0 + (size_t)c * d, d, GPU_METRIC_L2);
			if (s < best) {
				second = best;
				best = s;
				bi = c;
			} else if (s < second)
				second = s;
		}
		ref_in += best;
		if (asg[r] != bi && second - best > 1e-5 * best)
			wrong++;
		uint32_t a = asg[r] < kc ? asg[r] : bi; /* update as the GPU assigned */
		cnt[a]++;
		for (uint32_t j = 0; j < d; j++)
			sum[(size_t)a * d + j] += X[r * d + j];
	}
	for (uint32_t c = 0; rc == 0 && c < kc; c++)
		for (uint32_t j = 0; j < d; j++) {
			double want = cnt[c] ? sum[(size_t)c * d + j] / cnt[c] : C0[(size_t)c * d + j];
			cerr = fmax(cerr, fabs(C[(size_t)c * d + j] - want));
		}
	int bad = rc || wrong || !(cerr < 1e-4) || !(fabs(inertia - ref_in) <= 1e-4 * ref_in);
	printf("%-4s kmeans step n=%llu d=%u kc=%u: wrong assignments %llu, centroid err %.2e, inertia %.6g vs %.6g %s\n",
	       bad ? "FAIL" : "ok", (unsigned long long)n, d, kc, (unsigned long long)wrong, cerr,
	       inertia, ref_in, rc ? err.msg : "");
	free(cen);
	free(X);
	free(C);
	free(C0);
	free(asg);
	free(sum);
	free(cnt);
	return bad;
}

static void api_errors(gpu_ctx_t *ctx)
{
	vela_err_t err = {0};
	gpu_matrix_params_t mp = {GPU_ELEM_F32, GPU_METRIC_L2, 0, 0, 0};
	gpu_matrix_t *m = NULL;
	int bad = gpu_matrix_create(ctx, &mp, &m, &err) != VELA_EINVAL;
	mp.dim = 8;
	bad |= gpu_matrix_create(ctx, &mp, &m, &err) != 0;
	float x[16] = {0}, dd[2];
	uint32_t ids[2];
	bad |= gpu_matrix_append(m, x, 2, &err) != 0;
	gpu_knn_params_t kp = {.k = GPU_K_MAX + 1};
	bad |= gpu_knn(m, x, 1, &kp, ids, dd, &err) != VELA_EINVAL;
	kp.k = 2;
	kp.row_end = 3; /* past the rows */
	bad |= gpu_knn(m, x, 1, &kp, ids, dd, &err) != VELA_EINVAL;
	gpu_matrix_free(m);
	printf("%-4s bad arguments are refused with VELA_EINVAL\n", bad ? "FAIL" : "ok");
	bad ? g_fail++ : g_pass++;
}

int main(int argc, char **argv)
{
	int probe = argc > 1 && !strcmp(argv[1], "probe");
	g_quick = argc > 2 && !strcmp(argv[2], "quick");
	g_rng = argc > 1 && !probe ? strtoull(argv[1], NULL, 0) : 0;
	if (g_rng == 0)
		g_rng = (uint64_t)time(NULL) * 2654435761u + 1;
	if (gpu_device_count() == 0) {
		printf("skipped: no CUDA device\n");
		return 77;
	}
	if (probe)
		return 0;
	gpu_ctx_t *ctx = NULL;
	vela_err_t err = {0};
	if (gpu_ctx_open(0, &ctx, &err)) {
		printf("FAIL gpu_ctx_open: %s\n", err.msg);
		return 1;
	}
	printf("device: %s, seed %llu\n", gpu_ctx_name(ctx), (unsigned long long)g_rng);
	if (argc > 2 && !strcmp(argv[2], "encoder")) { /* the encoder's tests alone */
		gpu_test_encoder(ctx, g_rng, 0, &g_pass, &g_fail);
		gpu_ctx_close(ctx);
		printf("gpu_test: %d passed, %d failed\n", g_pass, g_fail);
		return g_fail ? 1 : 0;
	}
	if (argc > 2 && !strcmp(argv[2], "fused")) { /* the fused path's tests alone */
		fused_cases(ctx);
		gpu_ctx_close(ctx);
		printf("gpu_test: %d passed, %d failed\n", g_pass, g_fail);
		return g_fail ? 1 : 0;
	}
	api_errors(ctx);
	knn_matrix(ctx);
	filter_cases(ctx);
	big_tile_cases(ctx);
	fused_cases(ctx);
	test_project(ctx) ? g_fail++ : g_pass++;
	if (!g_quick)
		test_covariance(ctx) ? g_fail++ : g_pass++;
	test_kmeans(ctx) ? g_fail++ : g_pass++;
	gpu_test_linalg(ctx, g_rng, g_quick, &g_pass, &g_fail);
	gpu_test_part(ctx, g_rng, g_quick, &g_pass, &g_fail);
	gpu_test_encoder(ctx, g_rng, g_quick, &g_pass, &g_fail);
	gpu_ctx_close(ctx);
	printf("gpu_test: %d passed, %d failed\n", g_pass, g_fail);
	return g_fail ? 1 : 0;
}
