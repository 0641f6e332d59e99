/* Unit tests for index/ BACKEND: one matrix of cases runs on every backend
 * this machine has (the CPU always; the CUDA backend when a device is
 * present, else those cases are skipped) against an independent
 * double-precision brute force: batch kNN (k 1..1000, dims that are no
 * multiple of 8, row counts that are no multiple of the tiles, empty and
 * partial filters, absent rows, exact duplicates, L2/IP/COSINE, F32/F16),
 * one k-means step, the projection and the FP64 Gram matrix; then
 * residency (a changed generation is seen), the process-wide mode, the
 * GPU -> CPU fallback, FLAT batch search and LeanVec training (also a
 * LeanVec graph store's) through the backend. */
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "index/index.h"
#include "quant/quant.h"

#define TEST_RNG_SEED 0x5be0cd19137e2179ull
#include "test_rng.h"

typedef enum { BE_CPU, BE_GPU } be_kind_t;

/* The backend under test; GPU cases skip without a device. */
static const index_backend_t *backend_get(be_kind_t kind)
{
	if (kind == BE_CPU)
		return index_backend_cpu();
	if (index_backend_gpu_devices() == 0)
		cr_skip_test("skipped: no CUDA device");
	const index_backend_t *b = NULL;
	vela_err_t e = {0};
	cr_assert_eq(index_backend_gpu(&b, &e), 0, "index_backend_gpu: %s", e.msg);
	cr_assert_str_eq(b->name, "cuda");
	return b;
}

/* ------------------------------------------------ a block of rows */

typedef struct {
	index_rows_t rows;
	float *vals;    /* n x dim: the stored values as floats (F16 rounded) */
	void *data;     /* n x stride elements, what the backend reads */
	uint64_t *live; /* NULL = all present */
} block_t;

static void block_store(block_t *b, uint32_t r, const float *v)
{
	const index_rows_t *x = &b->rows;
	float *dst = b->vals + (size_t)r * x->dim;
	if (x->type == VELA_VEC_FLOAT16) {
		uint16_t *h = (uint16_t *)b->data + (size_t)r * x->stride;
		quant_f32_to_f16(v, h, x->dim);
		quant_f16_to_f32(h, dst, x->dim);
	} else {
		memcpy((float *)b->data + (size_t)r * x->stride, v, x->dim * sizeof(float));
		memcpy(dst, v, x->dim * sizeof(float));
	}
}

static void random_vec(float *v, uint32_t dim, vela_metric_t metric)
{
	for (uint32_t i = 0; i < dim; i++)
		v[i] = rng_gauss();
	if (metric == VELA_METRIC_COSINE)
		cr_assert_eq(quant_normalize(v, dim), 0);
}

/* n random rows (stride dim + pad), groups of exact duplicates, and with
 * `holes` about 1 row in 8 absent (its values still finite). */
static void block_make(block_t *b, uint32_t dim, uint32_t n, vela_metric_t metric,
		       vela_vec_type_t type, uint32_t pad, bool holes)
{
	memset(b, 0, sizeof(*b));
	index_rows_t *x = &b->rows;
	x->type = type;
	x->metric = metric;
	x->dim = dim;
	x->stride = dim + pad;
	x->n = n;
	size_t esize = type == VELA_VEC_FLOAT16 ? 2 : 4;
	b->vals = calloc((size_t)n * dim + 1, sizeof(float));
	b->data = calloc((size_t)n * x->stride + 1, esize);
	float *v = malloc(dim * sizeof(float));
	cr_assert(b->vals && b->data && v);
	for (uint32_t r = 0; r < n; r++) {
		random_vec(v, dim, metric);
		block_store(b, r, v);
	}
	for (uint32_t g = 0; n > 8 && g < 3; g++) { /* exact ties */
		uint32_t src = (uint32_t)(rng_next() % n);
		for (int c = 0; c < 6; c++)
			block_store(b, (uint32_t)(rng_next() % n), b->vals + (size_t)src * dim);
	}
	if (holes) {
		b->live = calloc((n + 63) / 64 + 1, sizeof(uint64_t));
		cr_assert(b->live);
		for (uint32_t r = 0; r < n; r++)
			if (rng_next() % 8)
				b->live[r / 64] |= 1ull << (r % 64);
		x->live = b->live;
	}
	x->data = b->data;
	free(v);
}

static void block_free(block_t *b)
{
	free(b->vals);
	free(b->data);
	free(b->live);
}

static bool block_allowed(const block_t *b, uint32_t r, const roaring_bitmap_t *flt)
{
	bool live = b->live == NULL || ((b->live[r / 64] >> (r % 64)) & 1);
	return live && (flt == NULL || roaring_bitmap_contains(flt, r));
}

/* ------------------------------------------------ the brute force */

typedef struct {
	double d;
	uint32_t id;
} ref_t;

static int ref_cmp(const void *a, const void *b)
{
	const ref_t *x = a, *y = b;
	return x->d < y->d ? -1 : x->d > y->d ? 1 : (x->id > y->id) - (x->id < y->id);
}

/* Distance in double and the tolerance allowed to a float kernel: 1e-4
 * relative, with a floor proportional to the terms that cancel. */
static double ref_dist(const block_t *b, const float *q, uint32_t r, double *tol)
{
	const float *x = b->vals + (size_t)r * b->rows.dim;
	double l2 = 0, dot = 0, absdot = 0, nn = 0;
	for (uint32_t i = 0; i < b->rows.dim; i++) {
		double t = (double)q[i] - x[i];
		l2 += t * t;
		dot += (double)q[i] * x[i];
		absdot += fabs((double)q[i] * x[i]);
		nn += (double)q[i] * q[i] + (double)x[i] * x[i];
	}
	double d = b->rows.metric == VELA_METRIC_L2 ? l2 : 1 - dot;
	double scale = b->rows.metric == VELA_METRIC_L2 ? 1e-6 * nn : 1e-2 * absdot + 1e-3;
	*tol = 1e-4 * fmax(fabs(d), scale);
	return d;
}

/* The kernel's own float distance (what every backend must return). */
static float kernel_dist(const block_t *b, const float *q, uint32_t r)
{
	size_t esize = b->rows.type == VELA_VEC_FLOAT16 ? 2 : 4;
	const void *row = (const uint8_t *)b->data + (size_t)r * b->rows.stride * esize;
	return quant_distance(b->rows.metric, b->rows.type, q, row, b->rows.dim);
}

/* One query's answer against the brute force: count, validity, distances,
 * order, ranking up to near-ties, and exactness of the selection under the
 * kernel's distances (which pins the docid tie-break). */
static void check_query(const block_t *b, const float *q, uint32_t k,
			const roaring_bitmap_t *flt, const vela_hit_t *hits, uint32_t n)
{
	uint32_t N = (uint32_t)b->rows.n, nc = 0;
	ref_t *all = malloc((N + 1) * sizeof(*all));
	bool *in = calloc(N + 1, sizeof(bool));
	cr_assert(all && in);
	double tol, tolmax = 0;
	for (uint32_t r = 0; r < N; r++)
		if (block_allowed(b, r, flt)) {
			all[nc].d = ref_dist(b, q, r, &tol);
			all[nc++].id = r;
			tolmax = fmax(tolmax, tol);
		}
	qsort(all, nc, sizeof(*all), ref_cmp);
	cr_assert_eq(n, nc < k ? nc : k, "n=%u candidates=%u k=%u", n, nc, k);
	for (uint32_t i = n; i < k; i++)
		cr_assert(hits[i].docid == UINT32_MAX && isinf(hits[i].dist) && hits[i].dist > 0,
			  "slot %u past the hits: (%u, %g)", i, hits[i].docid, hits[i].dist);
	for (uint32_t i = 0; i < n; i++) {
		uint32_t id = hits[i].docid;
		cr_assert(id < N && block_allowed(b, id, flt), "hit %u: row %u not allowed", i, id);
		cr_assert_not(in[id], "row %u twice", id);
		in[id] = true;
		double r = ref_dist(b, q, id, &tol);
		cr_assert_leq(fabs(hits[i].dist - r), tol, "row %u: %.9g vs %.9g", id, hits[i].dist, r);
		cr_assert_leq(fabs(r - all[i].d), 2 * tolmax, "rank %u: row %u (%.9g) vs row %u (%.9g)",
			      i, id, r, all[i].id, all[i].d);
		if (i > 0)
			cr_assert(hits[i - 1].dist < hits[i].dist ||
				  (hits[i - 1].dist == hits[i].dist && hits[i - 1].docid < id),
				  "order at %u", i);
	}
	if (n > 0) {
		vela_hit_t last = hits[n - 1];
		for (uint32_t i = 0; i < nc; i++) {
			uint32_t id = all[i].id;
			cr_assert(in[id] || all[i].d >= all[n - 1].d - 2 * tolmax, "missed row %u", id);
			if (in[id])
				continue;
			float kd = kernel_dist(b, q, id);
			cr_assert(kd > last.dist || (kd == last.dist && id > last.docid),
				  "row %u (%.9g) should have beaten %u (%.9g)", id, kd, last.docid,
				  last.dist);
		}
	}
	free(all);
	free(in);
}

/* ------------------------------------------------ kNN matrix */

enum { F_NONE, F_EMPTY, F_HALF, F_SPARSE, F_KINDS };
#define NQ 11u

typedef struct {
	float *Q;
	roaring_bitmap_t *flt[NQ];
	const roaring_bitmap_t *fl[NQ];
} queries_t;

static void queries_make(queries_t *qs, const block_t *b)
{
	uint32_t dim = b->rows.dim, n = (uint32_t)b->rows.n;
	qs->Q = malloc((size_t)NQ * dim * sizeof(float));
	cr_assert(qs->Q);
	for (uint32_t i = 0; i < NQ; i++) {
		float *q = qs->Q + (size_t)i * dim;
		if (i % 4 == 1 && n > 0) /* a stored row: distance ~0, duplicates tie */
			memcpy(q, b->vals + (size_t)(rng_next() % n) * dim, dim * sizeof(float));
		else
			random_vec(q, dim, b->rows.metric);
		roaring_bitmap_t *f = roaring_bitmap_create();
		int kind = (int)(i % F_KINDS);
		for (uint32_t r = 0; kind == F_HALF && r < n + 70; r++)
			if (rng_next() & 1)
				roaring_bitmap_add(f, r);
		for (uint32_t c = 0; kind == F_SPARSE && c < n / 40 + 2; c++)
			roaring_bitmap_add(f, (uint32_t)(rng_next() % (n + 50)));
		qs->flt[i] = f;
		qs->fl[i] = kind == F_NONE ? NULL : f;
	}
}

static void queries_free(queries_t *qs)
{
	for (uint32_t i = 0; i < NQ; i++)
		roaring_bitmap_free(qs->flt[i]);
	free(qs->Q);
}

/* Run one batch on `be` and check every query. */
static void run_knn(const index_backend_t *be, const block_t *b, const queries_t *qs,
		    uint32_t k, bool filtered)
{
	vela_hit_t *out = malloc((size_t)NQ * (k ? k : 1) * sizeof(*out));
	uint32_t n_out[NQ];
	cr_assert(out);
	index_knn_t req = {.queries = qs->Q, .nq = NQ, .k = k, .filters = filtered ? qs->fl : NULL};
	vela_err_t e = {0};
	cr_assert_eq(be->knn(&b->rows, &req, out, n_out, &e), 0, "%s knn: %s", be->name, e.msg);
	for (uint32_t i = 0; i < NQ; i++)
		check_query(b, qs->Q + (size_t)i * b->rows.dim, k, filtered ? qs->fl[i] : NULL,
			    out + (size_t)i * k, n_out[i]);
	free(out);
}

static void knn_matrix(be_kind_t kind, vela_metric_t metric)
{
	const index_backend_t *be = backend_get(kind);
	static const uint32_t dims[] = {3, 77, 130};
	static const uint32_t ks[] = {1, 10, 100, 1000};
	for (int d = 0; d < 3; d++) {
		block_t b;
		queries_t qs;
		block_make(&b, dims[d], 2501, metric, VELA_VEC_FLOAT32, 0, d == 1);
		queries_make(&qs, &b);
		b.rows.db_block = 320; /* 2501 rows: 7 full tiles and a ragged one */
		b.rows.q_block = 4;    /* 11 queries: 2 full tiles and a ragged one */
		for (int j = 0; j < 4; j++)
			run_knn(be, &b, &qs, ks[j], true);
		run_knn(be, &b, &qs, 10, false);
		b.rows.db_block = b.rows.q_block = 0; /* default tiles */
		run_knn(be, &b, &qs, 100, true);
		queries_free(&qs);
		block_free(&b);
	}
}

Test(backend_cpu, knn_l2) { knn_matrix(BE_CPU, VELA_METRIC_L2); }
Test(backend_cpu, knn_ip) { knn_matrix(BE_CPU, VELA_METRIC_IP); }
Test(backend_gpu, knn_l2) { knn_matrix(BE_GPU, VELA_METRIC_L2); }
Test(backend_gpu, knn_ip) { knn_matrix(BE_GPU, VELA_METRIC_IP); }

/* F16 rows with padded strides and holes, COSINE, and given norms. */
static void knn_f16_cosine(be_kind_t kind)
{
	const index_backend_t *be = backend_get(kind);
	block_t b;
	queries_t qs;
	block_make(&b, 77, 1000, VELA_METRIC_COSINE, VELA_VEC_FLOAT16, 11, true);
	queries_make(&qs, &b);
	run_knn(be, &b, &qs, 10, true);
	run_knn(be, &b, &qs, 1000, true);
	float *norms = malloc(1000 * sizeof(float));
	cr_assert(norms);
	for (uint32_t r = 0; r < 1000; r++) {
		double s = 0;
		for (uint32_t i = 0; i < 77; i++)
			s += (double)b.vals[r * 77 + i] * b.vals[r * 77 + i];
		norms[r] = (float)s;
	}
	b.rows.norms = norms;
	b.rows.norm_max = 1.01f;
	run_knn(be, &b, &qs, 37, true);
	free(norms);
	queries_free(&qs);
	block_free(&b);
}

Test(backend_cpu, knn_f16_cosine) { knn_f16_cosine(BE_CPU); }
Test(backend_gpu, knn_f16_cosine) { knn_f16_cosine(BE_GPU); }

/* No rows, no present rows, k = 0, a single row. */
static void knn_edges(be_kind_t kind)
{
	const index_backend_t *be = backend_get(kind);
	block_t b;
	queries_t qs;
	block_make(&b, 5, 1, VELA_METRIC_L2, VELA_VEC_FLOAT32, 0, false);
	queries_make(&qs, &b);
	run_knn(be, &b, &qs, 1, true);
	run_knn(be, &b, &qs, 7, false);
	run_knn(be, &b, &qs, 0, false);
	b.rows.n = 0;
	run_knn(be, &b, &qs, 4, true);
	queries_free(&qs);
	block_free(&b);
	block_make(&b, 5, 200, VELA_METRIC_IP, VELA_VEC_FLOAT32, 0, true);
	memset(b.live, 0, 4 * sizeof(uint64_t)); /* every row absent */
	queries_make(&qs, &b);
	run_knn(be, &b, &qs, 3, true);
	queries_free(&qs);
	block_free(&b);
}

Test(backend_cpu, knn_edges) { knn_edges(BE_CPU); }
Test(backend_gpu, knn_edges) { knn_edges(BE_GPU); }

static void knn_errors(be_kind_t kind)
{
	const index_backend_t *be = backend_get(kind);
	block_t b;
	block_make(&b, 4, 10, VELA_METRIC_L2, VELA_VEC_FLOAT32, 0, false);
	float q[4] = {1, 2, 3, 4};
	vela_hit_t out[4];
	uint32_t n_out;
	index_knn_t req = {.queries = q, .nq = 1, .k = 4};
	vela_err_t e = {0};
	cr_assert_eq(be->knn(NULL, &req, out, &n_out, &e), VELA_EINVAL);
	cr_assert_eq(be->knn(&b.rows, NULL, out, &n_out, &e), VELA_EINVAL);
	cr_assert_eq(be->knn(&b.rows, &req, NULL, &n_out, &e), VELA_EINVAL);
	q[2] = NAN;
	cr_assert_eq(be->knn(&b.rows, &req, out, &n_out, &e), VELA_EINVAL);
	q[2] = 1e20f;
	cr_assert_eq(be->knn(&b.rows, &req, out, &n_out, &e), VELA_EINVAL);
	q[2] = 3;
	req.k = VELA_K_MAX + 1;
	cr_assert_eq(index_backend_knn(&b.rows, &req, out, &n_out, &e), VELA_EINVAL);
	req.k = 4;
	b.rows.stride = 3;
	cr_assert_eq(be->knn(&b.rows, &req, out, &n_out, &e), VELA_EINVAL);
	b.rows.stride = 4;
	b.rows.metric = (vela_metric_t)9;
	cr_assert_eq(be->knn(&b.rows, &req, out, &n_out, &e), VELA_EINVAL);
	b.rows.metric = VELA_METRIC_L2;
	b.rows.db_block = 1;
	cr_assert_eq(be->knn(&b.rows, &req, out, &n_out, &e), VELA_EINVAL);
	b.rows.db_block = 0;
	cr_assert_eq(be->knn(&b.rows, &req, out, &n_out, &e), 0, "%s", e.msg);
	cr_assert_eq(n_out, 4);
	block_free(&b);
}

Test(backend_cpu, knn_errors) { knn_errors(BE_CPU); }
Test(backend_gpu, knn_errors) { knn_errors(BE_GPU); }

/* ------------------------------------------------ residency */

/* A resident block sees a change only through its generation. */
static void knn_resident(be_kind_t kind)
{
	const index_backend_t *be = backend_get(kind);
	block_t b;
	block_make(&b, 33, 3000, VELA_METRIC_L2, VELA_VEC_FLOAT32, 0, false);
	b.rows.uid = index_backend_uid_new();
	cr_assert_neq(b.rows.uid, 0);
	cr_assert_neq(index_backend_uid_new(), b.rows.uid);
	float q[33];
	random_vec(q, 33, VELA_METRIC_L2);
	vela_hit_t out[5];
	uint32_t n_out;
	index_knn_t req = {.queries = q, .nq = 1, .k = 5};
	for (int round = 0; round < 3; round++) {
		cr_assert_eq(be->knn(&b.rows, &req, out, &n_out, NULL), 0);
		check_query(&b, q, 5, NULL, out, n_out);
		uint32_t r = (uint32_t)(rng_next() % 3000); /* the query itself becomes row r */
		block_store(&b, r, q);
		b.rows.generation++;
		cr_assert_eq(be->knn(&b.rows, &req, out, &n_out, NULL), 0);
		cr_assert_eq(out[0].docid, r, "round %d: row %u not seen", round, r);
		cr_assert_eq(out[0].dist, 0.0f);
		random_vec(q, 33, VELA_METRIC_L2);
	}
	index_backend_forget(b.rows.uid);
	cr_assert_eq(be->knn(&b.rows, &req, out, &n_out, NULL), 0);
	check_query(&b, q, 5, NULL, out, n_out);
	index_backend_forget(b.rows.uid);
	index_backend_forget(0);
	block_free(&b);
}

Test(backend_cpu, knn_resident) { knn_resident(BE_CPU); }
Test(backend_gpu, knn_resident) { knn_resident(BE_GPU); }

/* Both backends answer with the same hits, bit for bit. */
Test(backend_gpu, same_as_cpu)
{
	const index_backend_t *gpu = backend_get(BE_GPU), *cpu = index_backend_cpu();
	block_t b;
	queries_t qs;
	block_make(&b, 130, 5000, VELA_METRIC_L2, VELA_VEC_FLOAT32, 0, true);
	queries_make(&qs, &b);
	b.rows.uid = index_backend_uid_new();
	enum { K = 100 };
	static vela_hit_t o1[NQ * K], o2[NQ * K];
	uint32_t n1[NQ], n2[NQ];
	index_knn_t req = {.queries = qs.Q, .nq = NQ, .k = K, .filters = qs.fl};
	cr_assert_eq(cpu->knn(&b.rows, &req, o1, n1, NULL), 0);
	cr_assert_eq(gpu->knn(&b.rows, &req, o2, n2, NULL), 0);
	cr_assert_eq(memcmp(n1, n2, sizeof(n1)), 0);
	for (uint32_t i = 0; i < NQ * K; i++)
		cr_assert(o1[i].docid == o2[i].docid &&
				  (o1[i].dist == o2[i].dist || (isinf(o1[i].dist) && isinf(o2[i].dist))),
			  "slot %u: cpu (%u, %.9g) gpu (%u, %.9g)", i, o1[i].docid, o1[i].dist,
			  o2[i].docid, o2[i].dist);
	index_backend_forget(b.rows.uid);
	queries_free(&qs);
	block_free(&b);
}

/* ------------------------------------------------ k-means, projection */

static void kmeans_data(float *X, uint32_t n, uint32_t d, float *C, uint32_t kc)
{
	for (uint32_t i = 0; i < n; i++)
		for (uint32_t j = 0; j < d; j++)
			X[(size_t)i * d + j] = rng_gauss() + (float)(i % 5) * 3.0f;
	for (uint32_t c = 0; c < kc; c++)
		memcpy(C + (size_t)c * d, X + (size_t)(rng_next() % n) * d, d * sizeof(float));
	for (uint32_t j = 0; j < d; j++) /* centroid kc-1 gets no rows */
		C[(size_t)(kc - 1) * d + j] = 1e3f;
}

static void kmeans_step(be_kind_t kind, uint32_t n, uint32_t d, uint32_t kc)
{
	const index_backend_t *be = backend_get(kind);
	float *X = malloc((size_t)n * d * sizeof(float)), *C = malloc((size_t)kc * d * sizeof(float));
	float *C0 = malloc((size_t)kc * d * sizeof(float));
	uint32_t *as = malloc(n * sizeof(uint32_t));
	double *sum = calloc((size_t)kc * d, sizeof(double)), *cnt = calloc(kc, sizeof(double));
	cr_assert(X && C && C0 && as && sum && cnt);
	kmeans_data(X, n, d, C, kc);
	memcpy(C0, C, (size_t)kc * d * sizeof(float));
	/* The CPU scores in F32; a GPU may use TF32 tensor cores (10-bit
	 * mantissa), so its bounds are 2^-9 of the terms that cancel. */
	double rel = kind == BE_GPU ? 0x1p-9 : 1e-5;
	double inertia = -1, ref_inertia = 0, ref_scale = 0;
	vela_err_t e = {0};
	cr_assert_eq(be->kmeans_step(X, n, d, C, kc, as, &inertia, &e), 0, "%s", e.msg);
	for (uint32_t i = 0; i < n; i++) {
		const float *x = X + (size_t)i * d;
		double best = INFINITY, mine = 0, scale = 0, cn = 0;
		for (uint32_t c = 0; c < kc; c++) {
			double s = 0;
			for (uint32_t j = 0; j < d; j++) {
				double t = (double)x[j] - C0[(size_t)c * d + j];
				s += t * t;
				scale += (double)x[j] * x[j] / kc;
			}
			best = fmin(best, s);
			if (c == as[i]) {
				mine = s;
				for (uint32_t j = 0; j < d; j++)
					cn += (double)C0[(size_t)c * d + j] * C0[(size_t)c * d + j];
			}
		}
		cr_assert_lt(as[i], kc);
		/* the assignment is the nearest centroid up to GEMM rounding */
		cr_assert_leq(mine - best, rel * (scale + cn + best) + 1e-9, "row %u: %.9g vs %.9g",
			      i, mine, best);
		ref_inertia += mine;
		ref_scale += scale + cn;
		cnt[as[i]]++;
		for (uint32_t j = 0; j < d; j++)
			sum[(size_t)as[i] * d + j] += x[j];
	}
	double itol = kind == BE_GPU ? rel * ref_scale : 1e-4 * ref_inertia;
	cr_assert_leq(fabs(inertia - ref_inertia), itol, "%.9g vs %.9g", inertia, ref_inertia);
	cr_assert_eq(cnt[kc - 1], 0);
	for (uint32_t c = 0; c < kc; c++)
		for (uint32_t j = 0; j < d; j++) {
			double want = cnt[c] ? sum[(size_t)c * d + j] / cnt[c] : C0[(size_t)c * d + j];
			cr_assert_leq(fabs(C[(size_t)c * d + j] - want), 10 * rel * (fabs(want) + 1),
				      "centroid %u[%u]: %.9g vs %.9g", c, j, C[(size_t)c * d + j], want);
		}
	/* assign and inertia are optional; no rows moves nothing */
	cr_assert_eq(be->kmeans_step(X, n, d, C, kc, NULL, NULL, NULL), 0);
	memcpy(C0, C, (size_t)kc * d * sizeof(float));
	cr_assert_eq(be->kmeans_step(X, 0, d, C, kc, NULL, &inertia, NULL), 0);
	cr_assert_eq(inertia, 0);
	cr_assert_eq(memcmp(C0, C, (size_t)kc * d * sizeof(float)), 0);
	cr_assert_eq(be->kmeans_step(X, n, d, C, 0, NULL, NULL, NULL), VELA_EINVAL);
	cr_assert_eq(be->kmeans_step(X, n, d, NULL, kc, NULL, NULL, NULL), VELA_EINVAL);
	free(X);
	free(C);
	free(C0);
	free(as);
	free(sum);
	free(cnt);
}

Test(backend_cpu, kmeans_step)
{
	kmeans_step(BE_CPU, 700, 7, 9);
	kmeans_step(BE_CPU, 2100, 3, 1100); /* several row and centroid tiles */
}
Test(backend_gpu, kmeans_step)
{
	kmeans_step(BE_GPU, 700, 7, 9);
	kmeans_step(BE_GPU, 2100, 3, 1100);
}

static void project(be_kind_t kind, uint32_t n, uint32_t din, uint32_t dout)
{
	const index_backend_t *be = backend_get(kind);
	float *X = malloc((size_t)n * din * sizeof(float)), *P = malloc((size_t)din * dout * sizeof(float));
	float *Y = malloc((size_t)n * dout * sizeof(float));
	cr_assert(X && P && Y);
	for (size_t i = 0; i < (size_t)n * din; i++)
		X[i] = rng_gauss();
	for (size_t i = 0; i < (size_t)din * dout; i++)
		P[i] = rng_gauss();
	vela_err_t e = {0};
	cr_assert_eq(be->project(X, n, din, P, dout, Y, &e), 0, "%s", e.msg);
	/* the GPU may use TF32 (10-bit mantissa): 2^-9 of the absolute terms */
	double rel = kind == BE_GPU ? 0x1p-9 : 1e-5;
	for (uint32_t i = 0; i < n; i++)
		for (uint32_t j = 0; j < dout; j++) {
			double s = 0, a = 0;
			for (uint32_t t = 0; t < din; t++) {
				double v = (double)X[(size_t)i * din + t] * P[(size_t)t * dout + j];
				s += v;
				a += fabs(v);
			}
			cr_assert_leq(fabs(Y[(size_t)i * dout + j] - s), rel * a + 1e-30,
				      "Y[%u][%u] %.9g vs %.9g", i, j, Y[(size_t)i * dout + j], s);
		}
	cr_assert_eq(be->project(X, 0, din, P, dout, Y, NULL), 0);
	cr_assert_eq(be->project(NULL, n, din, P, dout, Y, NULL), VELA_EINVAL);
	cr_assert_eq(be->project(X, n, 0, P, dout, Y, NULL), VELA_EINVAL);
	free(X);
	free(P);
	free(Y);
}

Test(backend_cpu, project)
{
	project(BE_CPU, 300, 77, 13);
	project(BE_CPU, 5, 3, 130);
}
Test(backend_gpu, project)
{
	project(BE_GPU, 300, 77, 13);
	project(BE_GPU, 5, 3, 130);
}

/* ------------------------------------------------ selection and fallback */

Test(backend, mode)
{
	vela_gpu_mode_t m;
	cr_assert_eq(index_backend_mode_get(), VELA_GPU_MODE_DEFAULT);
	cr_assert_eq(index_backend_mode_parse("No", &m), 0);
	cr_assert_eq(m, VELA_GPU_NO);
	cr_assert_eq(index_backend_mode_parse("AUTO", &m), 0);
	cr_assert_eq(m, VELA_GPU_AUTO);
	cr_assert_eq(index_backend_mode_parse("yes", &m), 0);
	cr_assert_eq(m, VELA_GPU_YES);
	cr_assert_eq(index_backend_mode_parse("maybe", &m), VELA_EINVAL);
	cr_assert_eq(index_backend_mode_parse(NULL, &m), VELA_EINVAL);
	cr_assert_str_eq(index_backend_mode_name(VELA_GPU_AUTO), "auto");
	cr_assert_str_eq(index_backend_mode_name((vela_gpu_mode_t)7), "?");
	cr_assert_eq(index_backend_mode_set((vela_gpu_mode_t)7, NULL), VELA_EINVAL);

	bool gpu = index_backend_gpu_devices() > 0;
	vela_gpu_info_t info;
	index_backend_info(&info);
	cr_assert_eq(info.mode, VELA_GPU_AUTO);
	cr_assert_str_eq(info.backend, gpu ? "cuda" : "cpu");
	if (!gpu) {
		cr_assert_eq(index_backend_current(), index_backend_cpu());
		cr_assert_str_eq(info.device, "none");
		cr_assert_eq(info.device_count, 0);
	}
	vela_err_t e = {0};
	int rc = index_backend_mode_set(VELA_GPU_YES, &e);
	if (gpu) {
		cr_assert_eq(rc, 0, "%s", e.msg);
		cr_assert_str_eq(index_backend_current()->name, "cuda");
	} else {
		cr_assert_eq(rc, VELA_EUNSUPPORTED);
		cr_assert(strstr(e.msg, "no CUDA device"), "message: %s", e.msg);
		cr_assert_eq(index_backend_mode_get(), VELA_GPU_AUTO, "mode must not change");
	}
	cr_assert_eq(index_backend_mode_set(VELA_GPU_NO, NULL), 0);
	cr_assert_eq(index_backend_current(), index_backend_cpu());
	index_backend_info(&info);
	cr_assert_eq(info.mode, VELA_GPU_NO);
	cr_assert_str_eq(info.backend, "cpu");
	cr_assert_str_eq(info.device, "none");
	cr_assert_eq(info.resident, 0);
	cr_assert_eq(index_backend_mode_set(VELA_GPU_AUTO, NULL), 0);
	cr_assert_str_eq(index_backend_current()->name, gpu ? "cuda" : "cpu");
}

/* A GPU failure mid-call is answered on the CPU and counted. */
Test(backend_gpu, fallback)
{
	backend_get(BE_GPU);
	cr_assert_eq(index_backend_mode_set(VELA_GPU_YES, NULL), 0);
	block_t b;
	queries_t qs;
	block_make(&b, 20, 900, VELA_METRIC_L2, VELA_VEC_FLOAT32, 0, true);
	queries_make(&qs, &b);
	vela_gpu_info_t info;
	index_backend_info(&info);
	uint64_t f0 = info.fallbacks;
	enum { K = 10 };
	vela_hit_t out[NQ * K];
	uint32_t n_out[NQ];
	index_knn_t req = {.queries = qs.Q, .nq = NQ, .k = K, .filters = qs.fl};
	index_backend_fault_inject(1);
	cr_assert_eq(index_backend_knn(&b.rows, &req, out, n_out, NULL), 0);
	for (uint32_t i = 0; i < NQ; i++)
		check_query(&b, qs.Q + (size_t)i * 20, K, qs.fl[i], out + (size_t)i * K, n_out[i]);
	float P[20 * 4], Y[900 * 4], C[3 * 20];
	for (int i = 0; i < 80; i++)
		P[i] = rng_gauss();
	memcpy(C, b.vals, sizeof(C));
	index_backend_fault_inject(2);
	cr_assert_eq(index_backend_project(b.vals, 900, 20, P, 4, Y, NULL), 0);
	double inertia;
	cr_assert_eq(index_backend_kmeans_step(b.vals, 900, 20, C, 3, NULL, &inertia, NULL), 0);
	index_backend_info(&info);
	cr_assert_eq(info.fallbacks, f0 + 3);
	cr_assert_str_eq(info.backend, "cuda");
	queries_free(&qs);
	block_free(&b);
}

/* ------------------------------------------------ FLAT through the backend */

/* flat_search_batch == flat_search on the selected backend, also after a
 * write (the generation bump must reach a resident copy). */
static void flat_through(vela_gpu_mode_t mode)
{
	cr_assert_eq(index_backend_mode_set(mode, NULL), 0);
	flat_index_t *f;
	enum { N = 3000, D = 24, K = 10 };
	cr_assert_eq(flat_create(D, VELA_METRIC_L2, VELA_VEC_FLOAT32, &f), 0);
	float v[D];
	for (uint32_t r = 0; r < N; r++) {
		random_vec(v, D, VELA_METRIC_L2);
		cr_assert_eq(flat_set(f, r, v), 0);
	}
	float Q[NQ * D];
	for (uint32_t i = 0; i < NQ * D; i++)
		Q[i] = rng_gauss();
	vela_hit_t bo[NQ * K], so[K];
	uint32_t bn[NQ], sn;
	for (int round = 0; round < 3; round++) {
		cr_assert_eq(flat_search_batch(f, Q, NQ, K, NULL, bo, bn), 0);
		for (uint32_t i = 0; i < NQ; i++) {
			cr_assert_eq(flat_search(f, Q + i * D, K, NULL, so, &sn), 0);
			cr_assert_eq(bn[i], sn);
			for (uint32_t j = 0; j < sn; j++)
				cr_assert(bo[i * K + j].docid == so[j].docid &&
					  bo[i * K + j].dist == so[j].dist, "round %d query %u hit %u",
					  round, i, j);
		}
		uint32_t r = (uint32_t)(rng_next() % N); /* query 0 becomes row r */
		cr_assert_eq(flat_set(f, r, Q), 0);
		cr_assert_eq(flat_remove(f, (uint32_t)((r + 1) % N)), 0);
	}
	flat_destroy(f);
}

Test(backend_cpu, flat_batch) { flat_through(VELA_GPU_NO); }
Test(backend_gpu, flat_batch)
{
	backend_get(BE_GPU);
	flat_through(VELA_GPU_YES);
}

/* ------------------------------------------------ Gram matrices (LeanVec training) */

/* n x d rows, column j ~ offset_j + scale_j N(0, 1) (offsets make centring
 * matter); `integer`: values in -8..8, so every sum is exact in double. */
static float *gram_rows(uint64_t n, uint32_t d, bool integer)
{
	float *X = malloc((size_t)(n ? n : 1) * d * sizeof(float));
	double *off = malloc(d * sizeof(double)), *sc = malloc(d * sizeof(double));
	cr_assert(X && off && sc);
	for (uint32_t j = 0; j < d; j++) {
		off[j] = 6 * rng_unit() - 3;
		sc[j] = 0.1 + 2 * rng_unit();
	}
	for (uint64_t r = 0; r < n; r++)
		for (uint32_t j = 0; j < d; j++)
			X[r * d + j] = integer ? (float)((int)(rng_next() % 17) - 8)
					       : (float)(off[j] + sc[j] * rng_gauss());
	free(off);
	free(sc);
	return X;
}

static double *gram_mean(const float *X, uint64_t n, uint32_t d)
{
	double *mu = calloc(d, sizeof(double));
	cr_assert(mu);
	for (uint64_t r = 0; r < n; r++)
		for (uint32_t j = 0; j < d; j++)
			mu[j] += X[r * d + j];
	for (uint32_t j = 0; j < d; j++)
		mu[j] /= (double)n;
	return mu;
}

/* The reference: every entry summed over the rows in double, in row order. */
static double *gram_ref(const float *X, uint64_t n, uint32_t d, const double *mu)
{
	double *R = calloc((size_t)d * d, sizeof(double));
	cr_assert(R);
	for (uint32_t a = 0; a < d; a++)
		for (uint32_t b = 0; b < d; b++) {
			double s = 0;
			for (uint64_t r = 0; r < n; r++)
				s += ((double)X[r * d + a] - (mu ? mu[a] : 0)) *
				     ((double)X[r * d + b] - (mu ? mu[b] : 0));
			R[(size_t)a * d + b] = s;
		}
	return R;
}

/* |G - R|_F / |R|_F, asserting G exactly symmetric. */
static double gram_err(const double *G, const double *R, uint32_t d)
{
	double num = 0, den = 0;
	for (uint32_t a = 0; a < d; a++)
		for (uint32_t b = 0; b < d; b++) {
			double g = G[(size_t)a * d + b], r = R[(size_t)a * d + b];
			cr_assert(g == G[(size_t)b * d + a], "G[%u][%u] != G[%u][%u]", a, b, b, a);
			num += (g - r) * (g - r);
			den += r * r;
		}
	return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* One shape on one backend: uncentred, centred, integer (exact). */
static void gram_case(const index_backend_t *be, uint64_t n, uint32_t d)
{
	float *X = gram_rows(n, d, false), *Xi = gram_rows(n, d, true);
	double *mu = gram_mean(X, n, d), *G = malloc((size_t)d * d * sizeof(double));
	cr_assert(G);
	vela_err_t e = {0};
	for (int centred = 0; centred < 2; centred++) {
		double *R = gram_ref(X, n, d, centred ? mu : NULL);
		for (size_t i = 0; i < (size_t)d * d; i++)
			G[i] = NAN;
		cr_assert_eq(be->gram(X, n, d, centred ? mu : NULL, G, &e), 0, "%s", e.msg);
		double rel = gram_err(G, R, d);
		cr_assert_lt(rel, 1e-13, "%s n %llu d %u centred %d: rel err %.3g", be->name,
			     (unsigned long long)n, d, centred, rel);
		free(R);
	}
	double *R = gram_ref(Xi, n, d, NULL);
	cr_assert_eq(be->gram(Xi, n, d, NULL, G, &e), 0, "%s", e.msg);
	cr_assert_eq(memcmp(G, R, (size_t)d * d * sizeof(double)), 0, "%s: integer sums not exact",
		     be->name);
	free(R);
	free(X);
	free(Xi);
	free(mu);
	free(G);
}

static void gram_matrix(be_kind_t kind)
{
	const index_backend_t *be = backend_get(kind);
	gram_case(be, 1, 9);
	gram_case(be, 300, 1);
	gram_case(be, 20011, 17); /* several of quant/'s dsyrk chunks */
	gram_case(be, 257, 130);
	double G[4] = {NAN, NAN, NAN, NAN}, mu[2] = {1, 2};
	float X[2] = {1, 2};
	cr_assert_eq(be->gram(NULL, 0, 2, mu, G, NULL), 0); /* n = 0: zero */
	for (int i = 0; i < 4; i++)
		cr_assert_eq(G[i], 0.0);
	vela_err_t e = {0};
	cr_assert_eq(be->gram(NULL, 1, 2, NULL, G, &e), VELA_EINVAL);
	cr_assert_eq(be->gram(X, 1, 2, NULL, NULL, &e), VELA_EINVAL);
	cr_assert_eq(be->gram(X, 1, 0, NULL, G, &e), VELA_EINVAL);
	cr_assert_eq(be->gram(X, 1, VELA_DIM_MAX + 1, NULL, G, &e), VELA_EINVAL);
}

Test(backend_cpu, gram) { gram_matrix(BE_CPU); }
Test(backend_gpu, gram) { gram_matrix(BE_GPU); }

/* The fake GPU library (tests/unit/gpu_fake.c) is loaded: FAKE_GPU_FAIL works. */
static bool fake_gpu(void)
{
	vela_gpu_info_t info;
	index_backend_info(&info);
	return strcmp(info.backend, "cuda") == 0 && strncmp(info.device, "Fake GPU", 8) == 0;
}

/* A GPU Gram failure (injected, or the device's) is answered on the CPU
 * and counted; the wrapper is exact either way. */
Test(backend_gpu, gram_fallback)
{
	backend_get(BE_GPU);
	cr_assert_eq(index_backend_mode_set(VELA_GPU_YES, NULL), 0);
	const uint64_t n = 500;
	const uint32_t d = 12;
	float *X = gram_rows(n, d, false);
	double *mu = gram_mean(X, n, d), *R = gram_ref(X, n, d, mu), G[12 * 12];
	vela_gpu_info_t info;
	index_backend_info(&info);
	uint64_t f0 = info.fallbacks;
	vela_err_t e = {0};
	cr_assert_eq(index_backend_gram(X, n, d, mu, G, &e), 0, "%s", e.msg);
	cr_assert_lt(gram_err(G, R, d), 1e-13);
	index_backend_fault_inject(1);
	cr_assert_eq(index_backend_gram(X, n, d, mu, G, &e), 0, "%s", e.msg);
	cr_assert_lt(gram_err(G, R, d), 1e-13);
	index_backend_info(&info);
	cr_assert_eq(info.fallbacks, f0 + 1);
	if (fake_gpu()) { /* a failure inside the library, after the device was reached */
		setenv("FAKE_GPU_FAIL", "gram", 1);
		for (int i = 0; i < 144; i++)
			G[i] = NAN;
		cr_assert_eq(index_backend_gram(X, n, d, mu, G, &e), 0, "%s", e.msg);
		unsetenv("FAKE_GPU_FAIL");
		cr_assert_lt(gram_err(G, R, d), 1e-13);
		index_backend_info(&info);
		cr_assert_eq(info.fallbacks, f0 + 2);
	}
	/* bad arguments are the caller's: refused, not a fallback */
	cr_assert_eq(index_backend_gram(NULL, n, d, mu, G, &e), VELA_EINVAL);
	index_backend_info(&info);
	cr_assert_eq(info.fallbacks, f0 + (fake_gpu() ? 2 : 1));
	free(X);
	free(mu);
	free(R);
}

/* LeanVec-ID trained through the backend: each row p_k of P must be an
 * eigenvector of the sample covariance computed here (|C p - lambda p| small,
 * lambdas decreasing), and P must equal the CPU trainer's. */
static void leanvec_through(vela_gpu_mode_t mode)
{
	cr_assert_eq(index_backend_mode_set(mode, NULL), 0);
	enum { N = 4000, D = 24, DR = 5 };
	float *X = malloc((size_t)N * D * sizeof(float));
	cr_assert(X);
	for (size_t i = 0; i < N; i++) /* well separated spectrum: 8, 7, ..., then 0.3 */
		for (uint32_t j = 0; j < D; j++)
			X[i * D + j] = (float)((j < 8 ? 8.0 - j : 0.3) * rng_gauss() + 2.0 + j);
	float P[DR * D], Pc[DR * D], mean[D], meanc[D];
	vela_err_t e = {0};
	cr_assert_eq(quant_leanvec_train_id_with(index_backend_gram, X, N, D, DR, P, mean, &e), 0,
		     "%s", e.msg);
	cr_assert_eq(quant_leanvec_train_id(X, N, D, DR, Pc, meanc, &e), 0, "%s", e.msg);
	for (size_t i = 0; i < DR * D; i++)
		cr_assert(fabsf(P[i] - Pc[i]) <= 1e-5f, "P[%zu] %.9g vs CPU %.9g", i, P[i], Pc[i]);
	double *mu = gram_mean(X, N, D), *C = gram_ref(X, N, D, mu);
	for (size_t i = 0; i < (size_t)D * D; i++)
		C[i] /= N;
	double prev = INFINITY;
	for (uint32_t k = 0; k < DR; k++) {
		const float *p = P + (size_t)k * D;
		double v[D], lambda = 0, res = 0;
		for (uint32_t a = 0; a < D; a++) {
			v[a] = 0;
			for (uint32_t b = 0; b < D; b++)
				v[a] += C[(size_t)a * D + b] * p[b];
			lambda += v[a] * p[a];
		}
		for (uint32_t a = 0; a < D; a++)
			res += (v[a] - lambda * p[a]) * (v[a] - lambda * p[a]);
		cr_assert_lt(sqrt(res), 1e-4 * lambda, "row %u: |C p - l p| = %.3g, l = %.6g", k,
			     sqrt(res), lambda);
		cr_assert_lt(lambda, prev, "eigenvalues not decreasing at row %u", k);
		prev = lambda;
	}
	/* LeanVec-OOD with the backend's Gram matrices: the CPU trainer's answer */
	float *Q = malloc((size_t)300 * D * sizeof(float)), A[DR * D], B[DR * D], Ac[DR * D],
	      Bc[DR * D];
	cr_assert(Q);
	for (size_t i = 0; i < (size_t)300 * D; i++)
		Q[i] = (float)rng_gauss();
	quant_leanvec_ood_opts_t o;
	quant_leanvec_ood_opts_default(&o);
	o.method = QUANT_LEANVEC_OOD_EIGEN;
	quant_leanvec_ood_stats_t st, stc;
	cr_assert_eq(quant_leanvec_train_ood(X, N, Q, 300, D, DR, &o, Ac, Bc, &stc, &e), 0, "%s",
		     e.msg);
	o.gram = index_backend_gram;
	cr_assert_eq(quant_leanvec_train_ood(X, N, Q, 300, D, DR, &o, A, B, &st, &e), 0, "%s",
		     e.msg);
	cr_assert(fabs(st.loss - stc.loss) <= 1e-9 * stc.loss, "loss %.12g vs CPU %.12g", st.loss,
		  stc.loss);
	for (size_t i = 0; i < DR * D; i++)
		cr_assert(fabsf(A[i] - Ac[i]) <= 1e-5f && fabsf(B[i] - Bc[i]) <= 1e-5f,
			  "A/B[%zu] differ from the CPU trainer's", i);
	free(Q);
	free(mu);
	free(C);
	free(X);
}

Test(backend_cpu, leanvec_training) { leanvec_through(VELA_GPU_NO); }
Test(backend_gpu, leanvec_training)
{
	backend_get(BE_GPU);
	vela_gpu_info_t info;
	index_backend_info(&info);
	uint64_t f0 = info.fallbacks;
	leanvec_through(VELA_GPU_YES);
	index_backend_info(&info);
	cr_assert_eq(info.fallbacks, f0, "the GPU Gram matrices fell back to the CPU");
}

/* A LeanVec graph store trains through the backend: a GPU Gram failure
 * during graph_lvq_store_create is a counted fallback, not an error. */
Test(backend_gpu, leanvec_store_uses_backend)
{
	backend_get(BE_GPU);
	if (!fake_gpu())
		cr_skip_test("needs the fake GPU library (test_index_backend_fakegpu)");
	cr_assert_eq(index_backend_mode_set(VELA_GPU_YES, NULL), 0);
	enum { N = 600, D = 16 };
	float *X = gram_rows(N, D, false);
	graph_lvq_params_t p;
	graph_lvq_params_default(&p);
	p.kind = GRAPH_LVQ_LEANVEC8X8;
	p.dim = D;
	p.reduce_dim = 6;
	vela_gpu_info_t info;
	index_backend_info(&info);
	uint64_t f0 = info.fallbacks;
	setenv("FAKE_GPU_FAIL", "gram", 1);
	graph_lvq_store_t *s = NULL;
	vela_err_t e = {0};
	cr_assert_eq(graph_lvq_store_create(&p, X, N, NULL, 0, &s, &e), 0, "%s", e.msg);
	unsetenv("FAKE_GPU_FAIL");
	index_backend_info(&info);
	cr_assert_eq(info.fallbacks, f0 + 1, "ID training must ask the backend once");
	graph_lvq_store_destroy(s);
	p.leanvec_mode = GRAPH_LVQ_LEANVEC_OOD;
	setenv("FAKE_GPU_FAIL", "gram", 1);
	cr_assert_eq(graph_lvq_store_create(&p, X, N, X, 100, &s, &e), 0, "%s", e.msg);
	unsetenv("FAKE_GPU_FAIL");
	index_backend_info(&info);
	cr_assert_eq(info.fallbacks, f0 + 3, "OOD training: two Gram matrices");
	graph_lvq_store_destroy(s);
	free(X);
}

/* ------------------------------------------------ batched partition scans */

/* The fake library's counters of gpu_parts_create / _free / _scan calls;
 * NULL when the fake is not the loaded library. */
static unsigned *fake_counter(const char *name)
{
	const char *lib = getenv("VELA_GPU_LIB");
	void *h = lib && fake_gpu() ? dlopen(lib, RTLD_NOW | RTLD_NOLOAD) : NULL;
	unsigned *c = h ? (unsigned *)dlsym(h, name) : NULL;
	if (h)
		dlclose(h); /* still loaded by common/gpulib.c */
	return c;
}

enum { PB_CL = 12, PB_QN = 9 };

/* Clusters of several sizes (empty, one row, past a warp, past the
 * default cluster) as index_parts_t. */
static void parts_blocks(block_t *b, index_rows_t *rows, uint32_t dim, vela_metric_t metric,
			 vela_vec_type_t type)
{
	static const uint32_t sizes[PB_CL] = {0, 1, 5, 64, 200, 333, 10, 0, 1000, 70, 3, 129};
	for (uint32_t c = 0; c < PB_CL; c++) {
		block_make(&b[c], dim, sizes[c], metric, type, c % 3, false);
		rows[c] = b[c].rows;
	}
}

/* Pairs: most clusters with several queries (grouped), one cluster named
 * again later; filters none, empty, a random half (with numbers past n). */
static uint32_t parts_pairs(index_part_pair_t *pr, roaring_bitmap_t **flt, uint32_t *nflt)
{
	uint32_t n = 0;
	*nflt = 0;
	for (uint32_t c = 0; c < PB_CL; c++)
		for (uint32_t q = c % 3; q < PB_QN; q += 2) {
			roaring_bitmap_t *f = NULL;
			if ((q + c) % 3 == 1) {
				f = flt[(*nflt)++] = roaring_bitmap_create();
				for (uint32_t r = 0; r < 1100; r++)
					if (rng_next() & 1)
						roaring_bitmap_add(f, r);
			} else if ((q + c) % 7 == 2) {
				f = flt[(*nflt)++] = roaring_bitmap_create();
			}
			pr[n++] = (index_part_pair_t){.cl = c, .q = q, .filter = f};
		}
	pr[n++] = (index_part_pair_t){.cl = 4, .q = 0, .filter = NULL};
	return n;
}

/* be's batched scan: every pair as the CPU knn of its cluster alone, bit
 * for bit, and against the brute force. */
static void parts_op_case(const index_backend_t *be, vela_metric_t metric, vela_vec_type_t type,
			  uint32_t k)
{
	const uint32_t dim = 19;
	block_t b[PB_CL];
	index_rows_t rows[PB_CL];
	parts_blocks(b, rows, dim, metric, type);
	float Q[PB_QN * 19];
	for (uint32_t i = 0; i < PB_QN; i++)
		random_vec(Q + i * dim, dim, metric);
	index_part_pair_t pr[PB_CL * PB_QN];
	roaring_bitmap_t *flt[PB_CL * PB_QN];
	uint32_t nflt, np = parts_pairs(pr, flt, &nflt);
	index_parts_t parts = {.cl = rows, .n_cl = PB_CL, .uid = index_backend_uid_new(),
			       .generation = 1};
	index_parts_req_t req = {.queries = Q, .nq = PB_QN, .k = k, .pairs = pr, .npairs = np};
	vela_hit_t *out = malloc((size_t)np * k * sizeof(*out)), *one = malloc(k * sizeof(*one));
	uint32_t n_out[PB_CL * PB_QN + 1], n1;
	cr_assert(out && one);
	vela_err_t e = {0};
	int rc = be->parts_knn(&parts, &req, out, n_out, &e);
	if (rc == VELA_EUNSUPPORTED && strcmp(be->name, "cuda") == 0)
		cr_skip_test("a GPU library without gpu_parts_*: %s", e.msg);
	cr_assert_eq(rc, 0, "%s: %s", be->name, e.msg);
	for (uint32_t p = 0; p < np; p++) {
		const float *q = Q + (size_t)pr[p].q * dim;
		index_knn_t r1 = {.queries = q, .nq = 1, .k = k, .filters = &pr[p].filter};
		cr_assert_eq(index_backend_cpu()->knn(&rows[pr[p].cl], &r1, one, &n1, NULL), 0);
		cr_assert_eq(n_out[p], n1, "pair %u: %u hits, cpu knn %u", p, n_out[p], n1);
		cr_assert_eq(memcmp(out + (size_t)p * k, one, k * sizeof(*one)), 0,
			     "pair %u (cluster %u) differs from the cluster's knn", p, pr[p].cl);
		check_query(&b[pr[p].cl], q, k, pr[p].filter, out + (size_t)p * k, n_out[p]);
	}
	index_backend_forget(parts.uid);
	for (uint32_t i = 0; i < nflt; i++)
		roaring_bitmap_free(flt[i]);
	for (uint32_t c = 0; c < PB_CL; c++)
		block_free(&b[c]);
	free(out);
	free(one);
}

static void parts_op(be_kind_t kind)
{
	const index_backend_t *be = backend_get(kind);
	static const vela_metric_t m[] = {VELA_METRIC_L2, VELA_METRIC_IP, VELA_METRIC_COSINE};
	for (int i = 0; i < 3; i++)
		for (uint32_t k = 1; k <= 100; k *= 10)
			parts_op_case(be, m[i], i == 1 ? VELA_VEC_FLOAT16 : VELA_VEC_FLOAT32, k);
	parts_op_case(be, VELA_METRIC_L2, VELA_VEC_FLOAT32, 1000);
}

Test(backend_cpu, parts_knn) { parts_op(BE_CPU); }
Test(backend_gpu, parts_knn) { parts_op(BE_GPU); }

/* Refused arguments; shapes the GPU does not serve are the CPU's. */
static void parts_errors(be_kind_t kind)
{
	const index_backend_t *be = backend_get(kind);
	block_t b[2];
	block_make(&b[0], 8, 50, VELA_METRIC_L2, VELA_VEC_FLOAT32, 0, false);
	block_make(&b[1], 8, 40, VELA_METRIC_L2, VELA_VEC_FLOAT32, 0, true);
	index_rows_t rows[2] = {b[0].rows, b[1].rows};
	float q[8] = {1, 2, 3, 4, 5, 6, 7, 8};
	index_part_pair_t pr[2] = {{0, 0, NULL}, {1, 0, NULL}};
	index_parts_t parts = {.cl = rows, .n_cl = 2};
	index_parts_req_t req = {.queries = q, .nq = 1, .k = 5, .pairs = pr, .npairs = 2};
	vela_hit_t out[2 * 1025];
	uint32_t n_out[2];
	vela_err_t e = {0};
	pr[1].cl = 2;
	cr_assert_eq(be->parts_knn(&parts, &req, out, n_out, &e), VELA_EINVAL);
	pr[1] = (index_part_pair_t){0, 1, NULL};
	cr_assert_eq(be->parts_knn(&parts, &req, out, n_out, &e), VELA_EINVAL);
	pr[1] = (index_part_pair_t){1, 0, NULL};
	cr_assert_eq(be->parts_knn(&parts, &req, NULL, n_out, &e), VELA_EINVAL);
	rows[1].dim = 7;
	cr_assert_eq(be->parts_knn(&parts, &req, out, n_out, &e), VELA_EINVAL);
	rows[1].dim = 8;
	q[3] = NAN;
	cr_assert_eq(be->parts_knn(&parts, &req, out, n_out, &e), VELA_EINVAL);
	q[3] = 4;
	req.npairs = 0; /* nothing to do */
	cr_assert_eq(be->parts_knn(&parts, &req, NULL, NULL, &e), 0);
	req.npairs = 2;
	req.k = 0;
	cr_assert_eq(be->parts_knn(&parts, &req, NULL, n_out, &e), 0);
	cr_assert(n_out[0] == 0 && n_out[1] == 0);
	/* absent rows (cluster 1) and k above the GPU's: the wrapper answers */
	for (uint32_t k = 5; k <= 1025; k += 1020) {
		req.k = k;
		int rc = be->parts_knn(&parts, &req, out, n_out, &e);
		cr_assert(rc == 0 || (kind == BE_GPU && rc == VELA_EUNSUPPORTED), "rc %d", rc);
		cr_assert_eq(index_backend_parts_knn(&parts, &req, out, n_out, &e), 0, "%s", e.msg);
		check_query(&b[0], q, k, NULL, out, n_out[0]);
		check_query(&b[1], q, k, NULL, out + k, n_out[1]);
	}
	block_free(&b[0]);
	block_free(&b[1]);
}

Test(backend_cpu, parts_errors) { parts_errors(BE_CPU); }
Test(backend_gpu, parts_errors) { parts_errors(BE_GPU); }

/* ---- part_search through the backend */

#define PQ 40u
#define PK_MAX 50u

typedef struct {
	flat_index_t *f;
	part_layout_t *p;
	uint32_t dim;
	float *q;
	uint32_t k[PQ];
	roaring_bitmap_t *flt[PQ];
	vela_hit_t out[PQ][PK_MAX];
	uint32_t n_out[PQ], probed[PQ];
} pfx_t;

static void pfx_vec(float *v, uint32_t dim, vela_metric_t metric, const float *centre)
{
	for (uint32_t d = 0; d < dim; d++)
		v[d] = centre[d] + rng_gauss();
	if (metric == VELA_METRIC_COSINE)
		cr_assert_eq(quant_normalize(v, dim), 0);
}

static void pfx_layout(pfx_t *x, part_encoding_t enc)
{
	roaring_bitmap_t *lv[2] = {roaring_bitmap_create(), roaring_bitmap_create()};
	roaring_bitmap_add_range(lv[0], 0, 1200);
	roaring_bitmap_add_range(lv[1], 1200, 2500);
	part_opts_t po;
	part_opts_default(&po);
	po.cluster_rows = 64;
	po.encoding = enc;
	part_source_t src = {.f = x->f};
	cr_assert_eq(part_build(&src, (const roaring_bitmap_t *const *)lv, 2, &po, &x->p), 0);
	cr_assert_eq(part_calibrate(x->p, 16), 0);
	roaring_bitmap_free(lv[0]);
	roaring_bitmap_free(lv[1]);
}

/* 2,500 rows around 6 centres in two leaves (64-row clusters), some docids
 * absent; 40 queries: k mixed (or all 10), filters none, a range, nothing
 * in the layout, a random 30%. Built on the CPU. */
static void pfx_make(pfx_t *x, vela_metric_t metric, vela_vec_type_t type, part_encoding_t enc,
		     bool mixed_k)
{
	cr_assert_eq(index_backend_mode_set(VELA_GPU_NO, NULL), 0);
	memset(x, 0, sizeof(*x));
	x->dim = 20;
	cr_assert_eq(flat_create(x->dim, metric, type, &x->f), 0);
	float centre[6][20], v[20];
	for (uint32_t c = 0; c < 6; c++)
		for (uint32_t d = 0; d < x->dim; d++)
			centre[c][d] = 3 * rng_gauss();
	for (uint32_t i = 0; i < 2500; i++) {
		pfx_vec(v, x->dim, metric, centre[i % 6]);
		if (i % 13 != 3)
			cr_assert_eq(flat_set(x->f, i, v), 0);
	}
	pfx_layout(x, enc);
	x->q = malloc(PQ * x->dim * sizeof(float));
	cr_assert(x->q);
	static const uint32_t ks[] = {1, 5, 10, 20, 0, 50};
	for (uint32_t i = 0; i < PQ; i++) {
		pfx_vec(x->q + i * x->dim, x->dim, metric, centre[rng_next() % 6]);
		x->k[i] = mixed_k ? ks[i % 6] : 10;
		if (i % 3 == 0)
			continue;
		x->flt[i] = roaring_bitmap_create();
		if (i % 12 == 4)
			roaring_bitmap_add_range(x->flt[i], 100, 1500);
		else if (i % 12 == 7)
			roaring_bitmap_add(x->flt[i], 9999);
		else
			for (uint32_t d = 0; d < 2500; d++)
				if (rng_next() % 10 < 3)
					roaring_bitmap_add(x->flt[i], d);
	}
}

static void pfx_free(pfx_t *x)
{
	for (uint32_t i = 0; i < PQ; i++)
		if (x->flt[i])
			roaring_bitmap_free(x->flt[i]);
	part_free(x->p);
	flat_destroy(x->f);
	free(x->q);
}

/* part_search of the fixture's batch under `mode` into x->out etc. */
static void pfx_search(pfx_t *x, vela_gpu_mode_t mode, const part_search_opts_t *o)
{
	cr_assert_eq(index_backend_mode_set(mode, NULL), 0);
	part_query_t pq[PQ];
	for (uint32_t i = 0; i < PQ; i++)
		pq[i] = (part_query_t){.q = x->q + i * x->dim, .k = x->k[i], .filter = x->flt[i],
				       .out = x->out[i]};
	cr_assert_eq(part_search(x->p, pq, PQ, o), 0);
	for (uint32_t i = 0; i < PQ; i++) {
		x->n_out[i] = pq[i].n_out;
		x->probed[i] = pq[i].probed;
	}
}

typedef struct {
	vela_hit_t out[PQ][PK_MAX];
	uint32_t n_out[PQ], probed[PQ];
} pans_t;

static void pans_take(pans_t *a, const pfx_t *x)
{
	memcpy(a->out, x->out, sizeof(a->out));
	memcpy(a->n_out, x->n_out, sizeof(a->n_out));
	memcpy(a->probed, x->probed, sizeof(a->probed));
}

/* x's answers are a's, bit for bit. */
static void pans_same(const pans_t *a, const pfx_t *x, const char *what)
{
	for (uint32_t i = 0; i < PQ; i++) {
		cr_assert_eq(x->n_out[i], a->n_out[i], "%s: query %u: %u hits, cpu %u", what, i,
			     x->n_out[i], a->n_out[i]);
		cr_assert_eq(x->probed[i], a->probed[i], "%s: query %u probed", what, i);
		for (uint32_t j = 0; j < a->n_out[i]; j++)
			cr_assert(x->out[i][j].docid == a->out[i][j].docid &&
					  memcmp(&x->out[i][j].dist, &a->out[i][j].dist, 4) == 0,
				  "%s: query %u hit %u: (%u, %.9g), cpu (%u, %.9g)", what, i, j,
				  x->out[i][j].docid, x->out[i][j].dist, a->out[i][j].docid,
				  a->out[i][j].dist);
	}
}

/* Probing every cluster with a match, the CPU answer is flat_search's. */
static void pfx_check_flat(const pfx_t *x)
{
	vela_hit_t h[PK_MAX];
	uint32_t n;
	for (uint32_t i = 0; i < PQ; i++) {
		cr_assert_eq(flat_search(x->f, x->q + i * x->dim, x->k[i], x->flt[i], h, &n), 0);
		cr_assert_eq(n, x->n_out[i], "query %u", i);
		cr_assert_eq(memcmp(h, x->out[i], n * sizeof(*h)), 0, "query %u", i);
	}
}

static void pfx_opts(part_search_opts_t *o, int which)
{
	part_search_opts_default(o);
	if (which == 0) { /* exact */
		o->probe_factor = 0;
		o->recall = 0;
	} else if (which == 2) {
		o->probe_factor = 20;
	}
}

/* CPU and GPU part_search agree bit for bit under exact, calibrated and
 * fixed probing, and the CPU's exact answer is flat_search's (FIELD). */
static void parts_search_case(vela_metric_t metric, vela_vec_type_t type, part_encoding_t enc)
{
	bool gpu = index_backend_gpu_devices() > 0;
	unsigned *scans = fake_counter("fake_gpu_parts_scans");
	vela_gpu_info_t info;
	for (int mixed = 0; mixed < 2; mixed++) {
		pfx_t x;
		pfx_make(&x, metric, type, enc, mixed);
		for (int which = 0; which < 3; which++) {
			part_search_opts_t o;
			pfx_opts(&o, which);
			pans_t cpu;
			pfx_search(&x, VELA_GPU_NO, &o);
			if (which == 0 && enc == PART_ENC_FIELD)
				pfx_check_flat(&x);
			pans_take(&cpu, &x);
			if (!gpu)
				continue;
			index_backend_info(&info);
			uint64_t f0 = info.fallbacks;
			unsigned s0 = scans ? *scans : 0;
			memset(x.out, 0xa5, sizeof(x.out));
			pfx_search(&x, VELA_GPU_YES, &o);
			static const char *const names[] = {"exact", "calibrated", "fixed"};
			pans_same(&cpu, &x, names[which]);
			index_backend_info(&info);
			cr_assert_eq(info.fallbacks, f0, "a GPU scan fell back");
			cr_assert(scans == NULL || *scans >= s0 + 1 + (unsigned)mixed,
				  "the GPU did not scan (%u scans)", scans ? *scans - s0 : 0);
		}
		pfx_free(&x);
	}
}

Test(backend_cpu, parts_search)
{
	if (index_backend_gpu_devices() > 0)
		cr_skip_test("the GPU run compares with the CPU (backend_gpu.parts_search_*)");
	parts_search_case(VELA_METRIC_L2, VELA_VEC_FLOAT32, PART_ENC_FIELD);
	parts_search_case(VELA_METRIC_COSINE, VELA_VEC_FLOAT16, PART_ENC_LVQ8);
}

Test(backend_gpu, parts_search_l2)
{
	backend_get(BE_GPU);
	parts_search_case(VELA_METRIC_L2, VELA_VEC_FLOAT32, PART_ENC_FIELD);
}

Test(backend_gpu, parts_search_ip_f16)
{
	backend_get(BE_GPU);
	parts_search_case(VELA_METRIC_IP, VELA_VEC_FLOAT16, PART_ENC_FIELD);
}

Test(backend_gpu, parts_search_cosine)
{
	backend_get(BE_GPU);
	parts_search_case(VELA_METRIC_COSINE, VELA_VEC_FLOAT32, PART_ENC_FIELD);
}

Test(backend_gpu, parts_search_lvq8)
{
	backend_get(BE_GPU);
	parts_search_case(VELA_METRIC_L2, VELA_VEC_FLOAT32, PART_ENC_LVQ8);
	parts_search_case(VELA_METRIC_COSINE, VELA_VEC_FLOAT32, PART_ENC_LVQ8);
}

/* Search under `mode` with exact probing; x's answers must be a's. */
static void pfx_same(pfx_t *x, const pans_t *a, const char *what)
{
	part_search_opts_t o;
	pfx_opts(&o, 0);
	memset(x->out, 0xa5, sizeof(x->out));
	pfx_search(x, VELA_GPU_YES, &o);
	pans_same(a, x, what);
}

static uint64_t fallbacks(void)
{
	vela_gpu_info_t info;
	index_backend_info(&info);
	return info.fallbacks;
}

/* A failing scan or upload is answered on the CPU and counted; a device
 * whose lists cannot be proven complete is answered on the CPU silently. */
Test(backend_gpu, parts_fallback)
{
	backend_get(BE_GPU);
	if (!fake_gpu())
		cr_skip_test("needs the fake GPU library (test_index_backend_fakegpu)");
	pfx_t x;
	pfx_make(&x, VELA_METRIC_L2, VELA_VEC_FLOAT32, PART_ENC_FIELD, false);
	part_search_opts_t o;
	pfx_opts(&o, 0);
	pans_t cpu;
	pfx_search(&x, VELA_GPU_NO, &o);
	pans_take(&cpu, &x);
	uint64_t f0 = fallbacks();
	setenv("FAKE_GPU_FAIL", "parts_create", 1); /* the first upload fails */
	pfx_same(&x, &cpu, "failed upload");
	unsetenv("FAKE_GPU_FAIL");
	cr_assert_eq(fallbacks(), f0 + 1);
	pfx_same(&x, &cpu, "uploaded");
	cr_assert_eq(fallbacks(), f0 + 1);
	setenv("FAKE_GPU_FAIL", "parts_scan", 1);
	pfx_same(&x, &cpu, "failed scan");
	unsetenv("FAKE_GPU_FAIL");
	cr_assert_eq(fallbacks(), f0 + 2);
	setenv("FAKE_GPU_K_CAP", "3", 1); /* lists too short to prove anything */
	pfx_same(&x, &cpu, "truncated lists");
	unsetenv("FAKE_GPU_K_CAP");
	cr_assert_eq(fallbacks(), f0 + 2);
	/* an injected fault through the wrapper directly */
	index_rows_t r = {.data = x.q, .type = VELA_VEC_FLOAT32, .metric = VELA_METRIC_L2,
			  .dim = x.dim, .stride = x.dim, .n = PQ};
	index_part_pair_t pr = {0, 3, NULL};
	index_parts_t parts = {.cl = &r, .n_cl = 1};
	index_parts_req_t req = {.queries = x.q, .nq = PQ, .k = 4, .pairs = &pr, .npairs = 1};
	vela_hit_t out[4];
	uint32_t n_out;
	index_backend_fault_inject(1);
	cr_assert_eq(index_backend_parts_knn(&parts, &req, out, &n_out, NULL), 0);
	cr_assert_eq(fallbacks(), f0 + 3);
	cr_assert(n_out == 4 && out[0].docid == 3 && out[0].dist == 0.0f);
	pfx_free(&x);
}

/* The layout's clusters stay resident between searches, are uploaded
 * again after part_remove / part_insert, and go with part_free; a rebuilt
 * layout is another key. LVQ-8 layouts are uploaded per call. */
Test(backend_gpu, parts_residency)
{
	backend_get(BE_GPU);
	unsigned *made = fake_counter("fake_gpu_parts_created");
	unsigned *gone = fake_counter("fake_gpu_parts_freed");
	if (made == NULL || gone == NULL)
		cr_skip_test("needs the fake GPU library (test_index_backend_fakegpu)");
	pfx_t x;
	pfx_make(&x, VELA_METRIC_L2, VELA_VEC_FLOAT32, PART_ENC_FIELD, false);
	part_search_opts_t o;
	pfx_opts(&o, 0);
	pans_t cpu;
	pfx_search(&x, VELA_GPU_NO, &o);
	pans_take(&cpu, &x);
	unsigned m0 = *made, g0 = *gone;
	pfx_same(&x, &cpu, "first");
	pfx_same(&x, &cpu, "second");
	cr_assert_eq(*made, m0 + 1, "uploaded %u times", *made - m0);
	cr_assert_eq(*gone, g0);
	vela_gpu_info_t info;
	index_backend_info(&info);
	cr_assert_geq(info.resident_bytes, 2300ull * 20 * sizeof(float));
	uint32_t top = cpu.out[0][0].docid; /* query 0: no filter, k 10 */
	cr_assert_eq(part_remove(x.p, top), 0);
	pfx_search(&x, VELA_GPU_YES, &o);
	cr_assert_eq(*made, m0 + 2, "part_remove must invalidate the resident copy");
	cr_assert_eq(*gone, g0 + 1);
	cr_assert_neq(x.out[0][0].docid, top);
	pans_take(&cpu, &x);
	pfx_search(&x, VELA_GPU_NO, &o); /* also frees the resident copies */
	pans_same(&cpu, &x, "after part_remove");
	cr_assert_eq(*gone, g0 + 2);
	part_source_t src = {.f = x.f};
	cr_assert_eq(part_insert(x.p, &src, 0, top), 0);
	pfx_search(&x, VELA_GPU_NO, &o);
	pans_take(&cpu, &x);
	pfx_same(&x, &cpu, "after part_insert");
	cr_assert_eq(*made, m0 + 3);
	pfx_same(&x, &cpu, "again");
	cr_assert_eq(*made, m0 + 3);
	part_free(x.p); /* a rebuild: the old copy goes, the new layout uploads */
	cr_assert_eq(*gone, g0 + 3);
	cr_assert_eq(index_backend_mode_set(VELA_GPU_NO, NULL), 0);
	pfx_layout(&x, PART_ENC_FIELD);
	pfx_search(&x, VELA_GPU_NO, &o);
	pans_take(&cpu, &x);
	pfx_same(&x, &cpu, "rebuilt");
	cr_assert_eq(*made, m0 + 4);
	cr_assert_eq(*gone, g0 + 3);
	pfx_free(&x);
	cr_assert_eq(*gone, g0 + 4);
	pfx_make(&x, VELA_METRIC_L2, VELA_VEC_FLOAT32, PART_ENC_LVQ8, false);
	pfx_search(&x, VELA_GPU_NO, &o);
	pans_take(&cpu, &x);
	m0 = *made;
	g0 = *gone;
	pfx_same(&x, &cpu, "lvq8");
	pfx_same(&x, &cpu, "lvq8 again");
	cr_assert_eq(*made, m0 + 2, "LVQ-8: one transient upload per call");
	cr_assert_eq(*gone, g0 + 2);
	pfx_free(&x);
}
