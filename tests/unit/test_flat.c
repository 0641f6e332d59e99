/* Unit tests for index/ FLAT: a property test against an independent
 * double-precision brute force (several dims, all metrics, F32 and F16,
 * filters, duplicate vectors for exact ties), batch == single, range,
 * remove/overwrite, growth and argument errors. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "index/index.h"
#include "quant/quant.h"

#define U 0x1p-24

static uint64_t rng_state = 0x243f6a8885a308d3ull;

static uint64_t rng_next(void) /* splitmix64 */
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static float rng_uniform(float lo, float hi)
{
	return lo + (hi - lo) * (float)((rng_next() >> 40) * 0x1p-24);
}

/* ------------------------------------------------ the test's own model */

typedef struct {
	uint32_t dim, ndoc; /* docids live in [0, ndoc) */
	vela_metric_t metric;
	vela_vec_type_t type;
	float *vec;  /* ndoc x dim: the values as stored (F16 already rounded) */
	bool *present;
	flat_index_t *f;
} model_t;

static void model_init(model_t *m, uint32_t dim, uint32_t ndoc, vela_metric_t metric,
		       vela_vec_type_t type)
{
	m->dim = dim;
	m->ndoc = ndoc;
	m->metric = metric;
	m->type = type;
	m->vec = calloc((size_t)ndoc * dim, sizeof(float));
	m->present = calloc(ndoc, sizeof(bool));
	cr_assert(m->vec && m->present);
	cr_assert_eq(flat_create(dim, metric, type, &m->f), 0);
}

static void model_free(model_t *m)
{
	flat_destroy(m->f);
	free(m->vec);
	free(m->present);
}

static void model_set(model_t *m, uint32_t id, const float *v)
{
	cr_assert_eq(flat_set(m->f, id, v), 0);
	float *dst = m->vec + (size_t)id * m->dim;
	for (uint32_t i = 0; i < m->dim; i++)
		dst[i] = m->type == VELA_VEC_FLOAT16 ? quant_f16_to_f32_one(quant_f32_to_f16_one(v[i]))
						     : v[i];
	m->present[id] = true;
}

static void random_vector(model_t *m, float *v, float offset)
{
	for (uint32_t i = 0; i < m->dim; i++)
		v[i] = offset + rng_uniform(-1, 1);
	if (m->metric == VELA_METRIC_COSINE)
		cr_assert_eq(quant_normalize(v, m->dim), 0);
}

/* Reference distance in double, and the error bound of the float kernel
 * (the quant bound (n/4 + 16) u sum|term|, doubled for safety, plus the
 * rounding of "1 -" for IP). */
static double ref_dist(const model_t *m, const float *q, uint32_t id, double *tol)
{
	const float *x = m->vec + (size_t)id * m->dim;
	double l2 = 0, dot = 0, absdot = 0;
	for (uint32_t i = 0; i < m->dim; i++) {
		double d = (double)q[i] - x[i];
		l2 += d * d;
		dot += (double)q[i] * x[i];
		absdot += fabs((double)q[i] * x[i]);
	}
	double g = 2 * ((double)m->dim / 4 + 16) * U;
	if (m->metric == VELA_METRIC_L2) {
		*tol = g * l2 + 1e-30;
		return l2;
	}
	*tol = g * absdot + 2 * U * (1 + fabs(dot));
	return 1 - dot;
}

static bool model_candidate(const model_t *m, uint32_t id, const roaring_bitmap_t *filter)
{
	return m->present[id] && (filter == NULL || roaring_bitmap_contains(filter, id));
}

typedef struct {
	double d;
	uint32_t id;
} ref_hit_t;

static int ref_hit_cmp(const void *a, const void *b)
{
	const ref_hit_t *x = a, *y = b;
	return x->d < y->d ? -1 : x->d > y->d ? 1 : (x->id > y->id) - (x->id < y->id);
}

/* Check one kNN answer against the brute force. */
static void check_knn(const model_t *m, const float *q, uint32_t k,
		      const roaring_bitmap_t *filter, const vela_hit_t *hits, uint32_t n)
{
	ref_hit_t *all = malloc(m->ndoc * sizeof(*all));
	bool *in_hits = calloc(m->ndoc, sizeof(bool));
	cr_assert(all && in_hits);
	uint32_t nc = 0;
	double tolmax = 0, tol;
	for (uint32_t id = 0; id < m->ndoc; id++)
		if (model_candidate(m, id, filter)) {
			all[nc].d = ref_dist(m, q, id, &tol);
			all[nc++].id = id;
			if (tol > tolmax)
				tolmax = tol;
		}
	qsort(all, nc, sizeof(*all), ref_hit_cmp);
	cr_assert_eq(n, nc < k ? nc : k, "n=%u candidates=%u k=%u", n, nc, k);
	for (uint32_t i = 0; i < n; i++) {
		uint32_t id = hits[i].docid;
		cr_assert_lt(id, m->ndoc);
		cr_assert(model_candidate(m, id, filter), "docid %u is not a candidate", id);
		cr_assert_not(in_hits[id], "docid %u twice", id);
		in_hits[id] = true;
		double r = ref_dist(m, q, id, &tol);
		cr_assert_leq(fabs(hits[i].dist - r), tol, "dist %u: %.9g vs %.9g", id, hits[i].dist, r);
		if (i > 0)
			cr_assert(hits[i - 1].dist < hits[i].dist ||
				  (hits[i - 1].dist == hits[i].dist && hits[i - 1].docid < id),
				  "order at %u", i);
	}
	if (n > 0) {
		/* Ranking right up to near-ties: everything clearly closer than
		 * the reference k-th is returned; nothing clearly farther is. */
		double rk = all[n - 1].d;
		for (uint32_t i = 0; i < nc && all[i].d < rk - 2 * tolmax; i++)
			cr_assert(in_hits[all[i].id], "missed docid %u (%.9g < %.9g)", all[i].id,
				  all[i].d, rk);
		for (uint32_t i = 0; i < n; i++)
			cr_assert_leq(ref_dist(m, q, hits[i].docid, &tol), rk + 2 * tolmax);
		/* Exactness of the selection itself: under the kernel's own
		 * distances, every candidate left out ranks after the last hit
		 * by (dist, docid); this pins the tie-break on duplicates. */
		vela_hit_t last = hits[n - 1];
		for (uint32_t i = 0; i < nc; i++) {
			uint32_t id = all[i].id;
			if (in_hits[id])
				continue;
			float kd;
			if (m->type == VELA_VEC_FLOAT16) {
				uint16_t *h = malloc(m->dim * sizeof(uint16_t));
				quant_f32_to_f16(m->vec + (size_t)id * m->dim, h, m->dim);
				kd = quant_distance(m->metric, m->type, q, h, m->dim);
				free(h);
			} else {
				kd = quant_distance(m->metric, m->type, q, m->vec + (size_t)id * m->dim,
						    m->dim);
			}
			cr_assert(kd > last.dist || (kd == last.dist && id > last.docid),
				  "docid %u (%.9g) should have beaten %u (%.9g)", id, kd, last.docid,
				  last.dist);
		}
	}
	free(all);
	free(in_hits);
}

/* ------------------------------------------------ property test */

enum { FILTER_NONE, FILTER_EMPTY, FILTER_ALL, FILTER_HALF, FILTER_SPARSE, FILTER_KINDS };

static roaring_bitmap_t *make_filter(const model_t *m, int kind)
{
	roaring_bitmap_t *b = roaring_bitmap_create();
	switch (kind) {
	case FILTER_ALL:
		roaring_bitmap_or_inplace(b, flat_docids(m->f));
		break;
	case FILTER_HALF: /* dense: the scan strategy */
		for (uint32_t id = 0; id < m->ndoc + 100; id++)
			if (rng_next() & 1)
				roaring_bitmap_add(b, id);
		break;
	case FILTER_SPARSE: /* the iterate-the-filter strategy; absent ids too */
		for (uint32_t i = 0; i < m->ndoc / 40 + 1; i++)
			roaring_bitmap_add(b, (uint32_t)(rng_next() % (m->ndoc + 50)));
		break;
	default:
		break;
	}
	return b;
}

static void check_batch_equals_single(const model_t *m, const float *Q, uint32_t nq, uint32_t k,
				      const roaring_bitmap_t *const *filters)
{
	vela_hit_t *bo = malloc((size_t)nq * (k ? k : 1) * sizeof(*bo));
	vela_hit_t *so = malloc((k ? k : 1) * sizeof(*so));
	uint32_t *bn = malloc(nq * sizeof(*bn)), sn;
	cr_assert(bo && so && bn);
	cr_assert_eq(flat_search_batch(m->f, Q, nq, k, filters, bo, bn), 0);
	for (uint32_t i = 0; i < nq; i++) {
		const roaring_bitmap_t *flt = filters ? filters[i] : NULL;
		cr_assert_eq(flat_search(m->f, Q + (size_t)i * m->dim, k, flt, so, &sn), 0);
		cr_assert_eq(bn[i], sn, "query %u: batch %u hits, single %u", i, bn[i], sn);
		for (uint32_t j = 0; j < sn; j++) {
			vela_hit_t b = bo[(size_t)i * k + j];
			cr_assert(b.docid == so[j].docid && b.dist == so[j].dist,
				  "query %u hit %u: batch (%u, %.9g) single (%u, %.9g)", i, j, b.docid,
				  b.dist, so[j].docid, so[j].dist);
		}
	}
	free(bo);
	free(so);
	free(bn);
}

static void populate(model_t *m, float offset)
{
	float *v = malloc(m->dim * sizeof(float));
	cr_assert(v);
	for (uint32_t i = 0; i < m->ndoc * 3 / 4; i++) { /* some ids get overwritten */
		random_vector(m, v, offset);
		model_set(m, (uint32_t)(rng_next() % m->ndoc), v);
	}
	/* groups of exact duplicates: exact distance ties */
	for (int g = 0; g < 4; g++) {
		uint32_t src = (uint32_t)(rng_next() % m->ndoc);
		random_vector(m, v, offset);
		model_set(m, src, v);
		for (int c = 0; c < 12; c++)
			model_set(m, (uint32_t)(rng_next() % m->ndoc), v);
	}
	for (uint32_t i = 0; i < m->ndoc / 20; i++) {
		uint32_t id = (uint32_t)(rng_next() % m->ndoc);
		int rc = flat_remove(m->f, id);
		cr_assert_eq(rc, m->present[id] ? 0 : VELA_ENOTFOUND);
		m->present[id] = false;
	}
	uint64_t count = 0;
	for (uint32_t id = 0; id < m->ndoc; id++)
		count += m->present[id];
	cr_assert_eq(flat_count(m->f), count);
	free(v);
}

static void run_property(uint32_t dim, vela_metric_t metric, vela_vec_type_t type,
			 uint32_t ndoc, float offset)
{
	model_t m;
	enum { NQ = 10 };
	static const uint32_t ks[] = {1, 5, 10, 37, 100000};
	model_init(&m, dim, ndoc, metric, type);
	populate(&m, offset);

	float *Q = malloc((size_t)NQ * dim * sizeof(float));
	roaring_bitmap_t *filters[NQ];
	vela_hit_t *hits = malloc(m.ndoc * sizeof(*hits));
	cr_assert(Q && hits);
	for (uint32_t i = 0; i < NQ; i++) {
		float *q = Q + (size_t)i * dim;
		uint32_t id = (uint32_t)(rng_next() % ndoc);
		if (i % 3 == 0 && m.present[id]) /* a stored vector: distance ~0, ties */
			memcpy(q, m.vec + (size_t)id * dim, dim * sizeof(float));
		else
			random_vector(&m, q, offset);
		filters[i] = make_filter(&m, i % FILTER_KINDS);
	}
	for (uint32_t i = 0; i < NQ; i++) {
		const roaring_bitmap_t *flt = (i % FILTER_KINDS) == FILTER_NONE ? NULL : filters[i];
		for (uint32_t j = 0; j < 5; j++) {
			uint32_t k = ks[(i + j) % 5], n = 12345;
			uint32_t kk = k < m.ndoc ? k : m.ndoc; /* the buffer holds ndoc hits */
			cr_assert_eq(flat_search(m.f, Q + (size_t)i * dim, kk, flt, hits, &n), 0);
			check_knn(&m, Q + (size_t)i * dim, kk, flt, hits, n);
		}
	}
	const roaring_bitmap_t *fl[NQ];
	for (uint32_t i = 0; i < NQ; i++)
		fl[i] = (i % FILTER_KINDS) == FILTER_NONE ? NULL : filters[i];
	check_batch_equals_single(&m, Q, NQ, 10, fl);
	check_batch_equals_single(&m, Q, NQ, 1, NULL);
	check_batch_equals_single(&m, Q, NQ, 37, fl);
	/* tiny blocks: many sgemm calls, block and query-block edges */
	cr_assert_eq(flat_batch_blocks_set(m.f, 64, 3), 0);
	check_batch_equals_single(&m, Q, NQ, 10, fl);
	check_batch_equals_single(&m, Q, NQ, 5, NULL);
	for (uint32_t i = 0; i < NQ; i++)
		roaring_bitmap_free(filters[i]);
	free(Q);
	free(hits);
	model_free(&m);
}

static const vela_metric_t metrics[] = {VELA_METRIC_L2, VELA_METRIC_IP, VELA_METRIC_COSINE};
static const vela_vec_type_t types[] = {VELA_VEC_FLOAT32, VELA_VEC_FLOAT16};

Test(flat, property_small_dims)
{
	static const uint32_t dims[] = {1, 3, 17};
	for (int d = 0; d < 3; d++)
		for (int mt = 0; mt < 3; mt++)
			for (int t = 0; t < 2; t++)
				run_property(dims[d], metrics[mt], types[t], 400, 0);
}

Test(flat, property_large_dims)
{
	static const uint32_t dims[] = {64, 129, 300};
	for (int d = 0; d < 3; d++)
		for (int mt = 0; mt < 3; mt++)
			for (int t = 0; t < 2; t++)
				run_property(dims[d], metrics[mt], types[t], 700, 0);
}

/* Far from the origin |q|^2 + |x|^2 dwarfs the distances, so the GEMM form
 * of L2 cancels badly: the batch must still match the direct kernel. */
Test(flat, batch_exact_under_cancellation)
{
	for (int t = 0; t < 2; t++) {
		run_property(64, VELA_METRIC_L2, types[t], 900, 10.0f);
		run_property(64, VELA_METRIC_L2, types[t], 900, 100.0f);
	}
}

/* More exact ties at the k-th distance than the batch pool holds. */
Test(flat, batch_many_duplicates)
{
	model_t m;
	model_init(&m, 32, 600, VELA_METRIC_L2, VELA_VEC_FLOAT32);
	float v[32], q[32];
	random_vector(&m, v, 0);
	for (uint32_t id = 0; id < 600; id += 2)
		model_set(&m, 598 - id, v); /* 300 copies, inserted high ids first */
	for (uint32_t id = 1; id < 600; id += 2) {
		random_vector(&m, q, 3);
		model_set(&m, id, q);
	}
	memcpy(q, v, sizeof(q));
	q[0] += 0.25f;
	vela_hit_t hits[10];
	uint32_t n;
	cr_assert_eq(flat_search(m.f, q, 10, NULL, hits, &n), 0);
	check_knn(&m, q, 10, NULL, hits, n);
	for (uint32_t i = 0; i < 10; i++)
		cr_assert_eq(hits[i].docid, 2 * i); /* the lowest docids among the tie */
	check_batch_equals_single(&m, q, 1, 10, NULL);
	model_free(&m);
}

/* ------------------------------------------------ range */

Test(flat, range_matches_knn_prefix)
{
	for (int t = 0; t < 2; t++)
		for (int mt = 0; mt < 3; mt++) {
			model_t m;
			model_init(&m, 40, 500, metrics[mt], types[t]);
			populate(&m, 0);
			float q[40];
			random_vector(&m, q, 0);
			for (int fk = 0; fk < FILTER_KINDS; fk++) {
				roaring_bitmap_t *flt = make_filter(&m, fk);
				const roaring_bitmap_t *fp = fk == FILTER_NONE ? NULL : flt;
				vela_hit_t all[500], *r;
				uint32_t n;
				size_t nr;
				cr_assert_eq(flat_search(m.f, q, 500, fp, all, &n), 0);
				float radius = n ? all[n / 3].dist : 1.0f;
				cr_assert_eq(flat_range(m.f, q, radius, fp, &r, &nr), 0);
				size_t expect = 0;
				while (expect < n && all[expect].dist <= radius)
					expect++;
				cr_assert_eq(nr, expect);
				for (size_t i = 0; i < nr; i++)
					cr_assert(r[i].docid == all[i].docid && r[i].dist == all[i].dist);
				free(r);
				roaring_bitmap_free(flt);
			}
			vela_hit_t *r;
			size_t nr;
			cr_assert_eq(flat_range(m.f, q, -1e30f, NULL, &r, &nr), 0);
			cr_assert_eq(nr, 0);
			cr_assert_null(r);
			cr_assert_eq(flat_range(m.f, q, NAN, NULL, &r, &nr), VELA_EINVAL);
			model_free(&m);
		}
}

/* ------------------------------------------------ writes, growth, errors */

Test(flat, remove_and_overwrite)
{
	flat_index_t *f;
	cr_assert_eq(flat_create(4, VELA_METRIC_L2, VELA_VEC_FLOAT32, &f), 0);
	float a[4] = {1, 2, 3, 4}, b[4] = {-1, 0, 5, 2}, got[4];
	vela_hit_t h[4];
	uint32_t n;
	cr_assert_eq(flat_set(f, 7, a), 0);
	cr_assert_eq(flat_set(f, 9, a), 0);
	cr_assert_eq(flat_set(f, 7, b), 0); /* overwrite */
	cr_assert_eq(flat_count(f), 2);
	cr_assert_eq(flat_get(f, 7, got), 0);
	cr_assert_eq(memcmp(got, b, sizeof(b)), 0);
	cr_assert_eq(flat_search(f, b, 4, NULL, h, &n), 0);
	cr_assert_eq(n, 2);
	cr_assert(h[0].docid == 7 && h[0].dist == 0.0f);
	cr_assert_eq(flat_remove(f, 7), 0);
	cr_assert_eq(flat_remove(f, 7), VELA_ENOTFOUND);
	cr_assert_eq(flat_remove(f, 123456), VELA_ENOTFOUND);
	cr_assert_eq(flat_get(f, 7, got), VELA_ENOTFOUND);
	cr_assert_eq(flat_count(f), 1);
	cr_assert_not(roaring_bitmap_contains(flat_docids(f), 7));
	cr_assert_eq(flat_search(f, b, 4, NULL, h, &n), 0);
	cr_assert(n == 1 && h[0].docid == 9);
	cr_assert_eq(flat_search_batch(f, b, 1, 4, NULL, h, &n), 0);
	cr_assert(n == 1 && h[0].docid == 9);
	flat_destroy(f);
}

Test(flat, growth_keeps_vectors)
{
	for (int t = 0; t < 2; t++) {
		flat_index_t *f;
		cr_assert_eq(flat_create(130, VELA_METRIC_IP, types[t], &f), 0);
		size_t mem0 = flat_memory(f);
		float v[130], got[130];
		static const uint32_t ids[] = {0, 5000, 1, 100000, 70000, 4095, 4096};
		for (int i = 0; i < 7; i++) {
			for (int j = 0; j < 130; j++)
				v[j] = (float)(ids[i] % 97) + (float)j / 8; /* exact in F16 */
			cr_assert_eq(flat_set(f, ids[i], v), 0);
		}
		cr_assert_eq(flat_count(f), 7);
		cr_assert_gt(flat_memory(f), mem0 + (size_t)100000 * 130 * (t ? 2 : 4));
		for (int i = 0; i < 7; i++) {
			cr_assert_eq(flat_get(f, ids[i], got), 0);
			for (int j = 0; j < 130; j++)
				cr_assert_eq(got[j], (float)(ids[i] % 97) + (float)j / 8);
			cr_assert(roaring_bitmap_contains(flat_docids(f), ids[i]));
		}
		vela_hit_t h[10];
		uint32_t n;
		cr_assert_eq(flat_search_batch(f, v, 1, 10, NULL, h, &n), 0);
		cr_assert_eq(n, 7);
		flat_destroy(f);
	}
}

Test(flat, argument_errors)
{
	flat_index_t *f;
	cr_assert_eq(flat_create(0, VELA_METRIC_L2, VELA_VEC_FLOAT32, &f), VELA_EDIM);
	cr_assert_eq(flat_create(VELA_DIM_MAX + 1, VELA_METRIC_L2, VELA_VEC_FLOAT32, &f), VELA_EDIM);
	cr_assert_eq(flat_create(4, (vela_metric_t)7, VELA_VEC_FLOAT32, &f), VELA_EINVAL);
	cr_assert_eq(flat_create(4, VELA_METRIC_L2, (vela_vec_type_t)7, &f), VELA_EINVAL);
	cr_assert_eq(flat_create(4, VELA_METRIC_L2, VELA_VEC_FLOAT32, NULL), VELA_EINVAL);
	flat_destroy(NULL);

	cr_assert_eq(flat_create(4, VELA_METRIC_L2, VELA_VEC_FLOAT16, &f), 0);
	float ok[4] = {1, 2, 3, 4}, nan[4] = {1, NAN, 3, 4}, big[4] = {1, 70000, 3, 4};
	cr_assert_eq(flat_set(f, 0, nan), VELA_EINVAL);
	cr_assert_eq(flat_set(f, 0, big), VELA_EINVAL); /* overflows binary16 */
	cr_assert_eq(flat_set(f, UINT32_MAX, ok), VELA_EINVAL);
	cr_assert_eq(flat_set(f, 0, NULL), VELA_EINVAL);
	cr_assert_eq(flat_count(f), 0);
	cr_assert_eq(flat_set(f, 3, ok), 0);

	vela_hit_t h[2];
	uint32_t n = 99;
	cr_assert_eq(flat_search(f, ok, 0, NULL, h, &n), 0);
	cr_assert_eq(n, 0);
	cr_assert_eq(flat_search(f, ok, VELA_K_MAX + 1, NULL, h, &n), VELA_EINVAL);
	cr_assert_eq(flat_search(f, nan, 2, NULL, h, &n), VELA_EINVAL);
	cr_assert_eq(flat_search(f, NULL, 2, NULL, h, &n), VELA_EINVAL);
	cr_assert_eq(flat_search_batch(f, nan, 1, 2, NULL, h, &n), VELA_EINVAL);
	cr_assert_eq(flat_search_batch(f, ok, 1, 0, NULL, h, &n), 0);
	cr_assert_eq(n, 0);
	cr_assert_eq(flat_search_batch(f, ok, 0, 2, NULL, h, &n), 0);
	cr_assert_eq(flat_batch_blocks_set(f, 10, 1), VELA_EINVAL);
	cr_assert_eq(flat_batch_blocks_set(f, 64, 0), VELA_EINVAL);

	flat_index_t *g;
	cr_assert_eq(flat_create(2, VELA_METRIC_L2, VELA_VEC_FLOAT32, &g), 0);
	float huge[2] = {3e18f, 3e18f}; /* |x|^2 = 1.8e37 > FLAT_NORM_SQ_MAX */
	cr_assert_eq(flat_set(g, 0, huge), VELA_EINVAL);
	cr_assert_eq(flat_search(g, huge, 1, NULL, h, &n), VELA_EINVAL);
	cr_assert_eq(flat_search(g, ok, 1, NULL, h, &n), 0); /* empty index */
	cr_assert_eq(n, 0);
	flat_destroy(g);
	flat_destroy(f);
}

/* ------------------------------------------------ scale, concurrency */

/* Default block sizes over several blocks, with the pool compacting for
 * real: 12,000 vectors, 40 queries, F32 and F16. */
Test(flat, batch_default_blocks_many_rows)
{
	for (int t = 0; t < 2; t++) {
		model_t m;
		model_init(&m, 48, 12000, VELA_METRIC_L2, types[t]);
		float v[48];
		for (uint32_t id = 0; id < 12000; id++) {
			random_vector(&m, v, 0.5f);
			model_set(&m, id, v);
		}
		enum { NQ = 40 };
		float *Q = malloc(NQ * 48 * sizeof(float));
		for (int i = 0; i < NQ; i++)
			random_vector(&m, Q + i * 48, 0.5f);
		check_batch_equals_single(&m, Q, NQ, 10, NULL);
		check_batch_equals_single(&m, Q, NQ, 300, NULL);
		vela_hit_t h[10];
		uint32_t n;
		cr_assert_eq(flat_search(m.f, Q, 10, NULL, h, &n), 0);
		check_knn(&m, Q, 10, NULL, h, n);
		free(Q);
		model_free(&m);
	}
}

#include <pthread.h>

typedef struct {
	const model_t *m;
	const float *Q;
	const vela_hit_t *expect;
	int bad;
} reader_arg_t;

static void *reader_main(void *p)
{
	reader_arg_t *a = p;
	vela_hit_t h[8 * 5];
	uint32_t n[8];
	for (int rep = 0; rep < 20; rep++) {
		if (rep & 1) {
			if (flat_search_batch(a->m->f, a->Q, 8, 5, NULL, h, n) != 0)
				a->bad++;
		} else {
			for (int i = 0; i < 8; i++)
				if (flat_search(a->m->f, a->Q + i * 16, 5, NULL, h + i * 5, &n[i]) != 0)
					a->bad++;
		}
		if (memcmp(h, a->expect, sizeof(h)) != 0)
			a->bad++;
	}
	return NULL;
}

/* Readers may share an index: concurrent single and batch searches give
 * the answers a lone reader gets. */
Test(flat, concurrent_readers)
{
	model_t m;
	model_init(&m, 16, 3000, VELA_METRIC_L2, VELA_VEC_FLOAT32);
	float v[16], Q[8 * 16];
	for (uint32_t id = 0; id < 3000; id++) {
		random_vector(&m, v, 0);
		model_set(&m, id, v);
	}
	for (int i = 0; i < 8; i++)
		random_vector(&m, Q + i * 16, 0);
	vela_hit_t expect[8 * 5];
	uint32_t n;
	for (int i = 0; i < 8; i++)
		cr_assert_eq(flat_search(m.f, Q + i * 16, 5, NULL, expect + i * 5, &n), 0);
	pthread_t th[4];
	reader_arg_t args[4];
	for (int i = 0; i < 4; i++) {
		args[i] = (reader_arg_t){&m, Q, expect, 0};
		cr_assert_eq(pthread_create(&th[i], NULL, reader_main, &args[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		cr_assert_eq(args[i].bad, 0, "reader %d saw %d bad answers", i, args[i].bad);
	}
	model_free(&m);
}
