/* FLAT batch search: many queries scored against blocks of the database
 * with OpenBLAS sgemm, a candidate pool per query, then an exact re-score.
 *
 * Why a pool and not just a heap on the GEMM distances: the GEMM form of
 * L2, |q|^2 + |x|^2 - 2 q.x, cancels catastrophically when the distance is
 * small next to the norms, so its ranking can disagree with the direct
 * kernel's (flat_search) on near-ties. We bound that disagreement instead:
 *
 *   Let E be the direct-kernel distance and G the GEMM one, |G - E| <= e.
 *   Let T be the k-th smallest G seen. The k docids with G <= T have
 *   E <= T + e, so the k-th smallest E is <= T + e, and any docid in the
 *   true (E) top-k has G <= T + 2e. Keeping every docid with
 *   G <= T_running + 2e (T only falls) keeps the whole true top-k;
 *   re-scoring the pool with the direct kernel then gives exactly
 *   flat_search's answer, ties broken by docid as there.
 *
 * The bound e (Higham, Accuracy and Stability of Numerical Algorithms,
 * §3.1, gamma_n = n u / (1 - n u), u = 2^-24, any summation order, FMA or
 * not): the dot product errs by <= gamma_n sum|q_i x_i| <= gamma_n
 * (|q|^2 + |x|^2) / 2, each norm by <= gamma_n of itself, the two final
 * additions by <= 4u (|q|^2 + |x|^2); the direct L2 kernel errs by
 * <= (n + 3) u * 2 (|q|^2 + |x|^2). Summed, with slack for gamma's
 * denominator: e <= ((4n + 16)(|q|^2 + max|x|^2) + 4) u, the +4 covering
 * the "1 -" of IP. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "index/backend_impl.h"

/* F16 blocks are decoded into a float scratch of at most this many bytes. */
#define FLAT_BATCH_F16_SCRATCH_MAX (16u << 20)

/* Per-query state of a batch. */
typedef struct {
	const float *q;      /* the query (caller's memory) */
	uint32_t idx;        /* its index in the batch */
	float qn;            /* |q|^2 */
	float kth;           /* upper bound of the k-th best GEMM distance */
	float slack;         /* 2e: see the top of the file */
	bool overflow;       /* pool flooded by near-ties: use the scan path */
	const roaring_bitmap_t *filter;
	roaring_uint32_iterator_t it;
	vela_hit_t *pool;    /* candidates with their GEMM distances */
	uint32_t n, cap, limit;
} flat_bq_t;

static float flat_rounding_slack(const flat_index_t *f, float qn)
{
	return backend_rounding_slack(f->dim, qn, f->norm_max);
}

/* k-th smallest distance (1-based) of a[0..n), n >= k >= 1; reorders a. */
static float flat_select_kth(vela_hit_t *a, long n, long k)
{
	long lo = 0, hi = n - 1, t = k - 1;
	while (lo < hi) {
		float pivot = a[lo + (hi - lo) / 2].dist;
		long i = lo, j = hi;
		while (i <= j) {
			while (a[i].dist < pivot)
				i++;
			while (a[j].dist > pivot)
				j--;
			if (i <= j) {
				vela_hit_t tmp = a[i];
				a[i++] = a[j];
				a[j--] = tmp;
			}
		}
		if (t <= j)
			hi = j;
		else if (t >= i)
			lo = i;
		else
			return a[t].dist; /* between j and i: equal to the pivot */
	}
	return a[t].dist;
}

/* Lower the k-th bound from the pool and drop what can no longer make
 * the top k. A pool still crowded afterwards holds > limit/2 near-ties:
 * give up on it and let the scan path answer that query. */
static void flat_pool_compact(flat_bq_t *p, uint32_t k)
{
	if (p->n < k)
		return;
	float kth = flat_select_kth(p->pool, p->n, k);
	if (kth < p->kth)
		p->kth = kth;
	float thr = p->kth + p->slack;
	uint32_t m = 0;
	for (uint32_t i = 0; i < p->n; i++)
		if (p->pool[i].dist <= thr)
			p->pool[m++] = p->pool[i];
	p->n = m;
	if (m > p->limit / 4 * 3) {
		p->overflow = true;
		free(p->pool);
		p->pool = NULL;
		p->n = p->cap = 0;
	}
}

static int flat_pool_push(flat_bq_t *p, uint32_t k, float d, uint32_t docid)
{
	if (p->n == p->cap) {
		if (p->cap == p->limit) {
			flat_pool_compact(p, k);
			if (p->overflow)
				return 0;
		} else {
			uint32_t cap = p->cap ? p->cap * 2 : 64;
			if (cap > p->limit)
				cap = p->limit;
			vela_hit_t *np = realloc(p->pool, cap * sizeof(*np));
			if (np == NULL)
				return VELA_ENOMEM;
			p->pool = np;
			p->cap = cap;
		}
	}
	p->pool[p->n++] = (vela_hit_t){d, docid};
	return 0;
}

/* Offer one block's GEMM row (c[j] = alpha * q.x_j) to the pool. */
static int flat_bq_offer(const flat_index_t *f, flat_bq_t *p, uint32_t k, const float *c,
			 uint64_t b0, const uint64_t *mask, uint64_t nw)
{
	bool l2 = f->metric == VELA_METRIC_L2;
	float base = l2 ? p->qn : 1.0f, thr = p->kth + p->slack;
	for (uint64_t w = 0; w < nw; w++) {
		const float *cw = c + w * 64, *xw = f->norms + b0 + w * 64;
		for (uint64_t m = mask[w]; m; m &= m - 1) {
			int j = __builtin_ctzll(m);
			float d = l2 ? (base + xw[j]) + cw[j] : base + cw[j];
			if (d > thr)
				continue;
			int rc = flat_pool_push(p, k, d, (uint32_t)(b0 + w * 64 + (uint64_t)j));
			if (rc != 0 || p->overflow)
				return rc;
			thr = p->kth + p->slack;
		}
	}
	return 0;
}

/* Re-score the pool with the direct kernel into the caller's k slots. */
static void flat_bq_finish(const flat_index_t *f, flat_bq_t *p, uint32_t k, vela_hit_t *out,
			   uint32_t *n_out)
{
	if (p->overflow) {
		flat_search_scan(f, p->q, k, p->filter, out, n_out);
		return;
	}
	flat_pool_compact(p, k);
	if (p->overflow) {
		flat_search_scan(f, p->q, k, p->filter, out, n_out);
		return;
	}
	uint32_t size = 0;
	for (uint32_t i = 0; i < p->n; i++) {
		uint32_t id = p->pool[i].docid;
		vela_hit_t h = {f->dist(p->q, flat_row(f, id), f->dim), id};
		flat_heap_push(out, &size, k, h);
	}
	flat_hits_sort(out, size);
	*n_out = size;
}

/* Rows per GEMM block: the tunable, capped for the F16 decode scratch. */
static uint64_t flat_batch_rows(const flat_index_t *f)
{
	uint64_t rows = f->db_block;
	uint64_t fit = FLAT_BATCH_F16_SCRATCH_MAX / ((uint64_t)f->dim * sizeof(float));
	if (f->type == VELA_VEC_FLOAT16 && rows > fit)
		rows = fit < 64 ? 64 : fit & ~(uint64_t)63;
	return rows;
}

typedef struct {
	float *c;       /* q_block x rows GEMM result tile */
	float *x;       /* rows x dim decoded F16 block (F16 only) */
	uint64_t *mask; /* 2 * rows / 64 words */
	float *qpack;   /* GEMM queries packed contiguously, or NULL */
} flat_scratch_t;

/* Score every block of the database against the GEMM queries. */
static int flat_batch_run(const flat_index_t *f, flat_bq_t *bq, uint32_t ng, const float *Qg,
			  uint32_t k, flat_scratch_t *s)
{
	uint64_t rows = flat_batch_rows(f);
	uint32_t qb = f->q_block < ng ? f->q_block : ng;
	float alpha = f->metric == VELA_METRIC_L2 ? -2.0f : -1.0f;
	for (uint64_t b0 = 0; b0 < f->end; b0 += rows) {
		uint64_t nb = f->end - b0 < rows ? f->end - b0 : rows, nw = (nb + 63) / 64;
		uint64_t any = 0;
		for (uint64_t w = 0; w < nw; w++)
			any |= f->live[b0 / 64 + w];
		if (!any)
			continue;
		const float *X = (const float *)flat_row(f, b0);
		int ldx = (int)f->stride;
		if (f->type == VELA_VEC_FLOAT16) {
			for (uint64_t r = 0; r < nb; r++)
				quant_f16_to_f32(flat_row(f, b0 + r), s->x + r * f->dim, f->dim);
			X = s->x;
			ldx = (int)f->dim;
		}
		for (uint32_t q0 = 0; q0 < ng; q0 += qb) {
			uint32_t mq = ng - q0 < qb ? ng - q0 : qb;
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)mq, (int)nb,
				    (int)f->dim, alpha, Qg + (size_t)q0 * f->dim, (int)f->dim, X, ldx,
				    0.0f, s->c, (int)nb);
			for (uint32_t i = 0; i < mq; i++) {
				flat_bq_t *p = &bq[q0 + i];
				if (p->overflow)
					continue;
				const uint64_t *mask = f->live + b0 / 64;
				if (p->filter) {
					flat_mask_words(f, &p->it, b0 / 64, nw, s->mask);
					mask = s->mask;
				}
				int rc = flat_bq_offer(f, p, k, s->c + (size_t)i * nb, b0, mask, nw);
				if (rc != 0)
					return rc;
			}
		}
	}
	return 0;
}

static int flat_scratch_alloc(const flat_index_t *f, uint32_t ng, flat_scratch_t *s)
{
	uint64_t rows = flat_batch_rows(f);
	uint32_t qb = f->q_block < ng ? f->q_block : ng;
	s->c = malloc(vela_mul_size((size_t)qb * rows, sizeof(float)));
	s->mask = malloc(2 * (rows / 64) * sizeof(uint64_t));
	s->x = f->type == VELA_VEC_FLOAT16
		       ? malloc(vela_mul_size((size_t)rows * f->dim, sizeof(float)))
		       : NULL;
	if (s->c == NULL || s->mask == NULL || (f->type == VELA_VEC_FLOAT16 && s->x == NULL))
		return VELA_ENOMEM;
	return 0;
}

static void flat_scratch_free(flat_scratch_t *s)
{
	free(s->c);
	free(s->x);
	free(s->mask);
	free(s->qpack);
}

/* Set up the GEMM queries; sparse-filter queries are answered right here
 * by the scan path, which beats scoring the whole database for them. */
static uint32_t flat_batch_plan(const flat_index_t *f, const float *Q, uint32_t nq, uint32_t k,
				const roaring_bitmap_t *const *filters, const float *qn,
				flat_bq_t *bq, vela_hit_t *out, uint32_t *n_out)
{
	uint32_t ng = 0;
	for (uint32_t i = 0; i < nq; i++) {
		const roaring_bitmap_t *flt = filters ? filters[i] : NULL;
		const float *q = Q + (size_t)i * f->dim;
		if (flat_filter_is_sparse(f, flt)) {
			flat_search_scan(f, q, k, flt, out + (size_t)i * k, &n_out[i]);
			continue;
		}
		flat_bq_t *p = &bq[ng++];
		memset(p, 0, sizeof(*p));
		p->q = q;
		p->idx = i;
		p->qn = qn[i];
		p->kth = INFINITY;
		p->slack = flat_rounding_slack(f, qn[i]);
		p->limit = 2 * k + 64;
		p->filter = flt;
		if (flt)
			roaring_init_iterator(flt, &p->it);
	}
	return ng;
}

int flat_batch_knn(const flat_index_t *f, const float *Q, uint32_t nq, uint32_t k,
		   const roaring_bitmap_t *const *filters, const float *qn, vela_hit_t *out,
		   uint32_t *n_out)
{
	if (k == 0 || f->end == 0)
		return 0;
	flat_bq_t *bq = malloc(vela_mul_size(nq, sizeof(*bq)));
	if (bq == NULL)
		return VELA_ENOMEM;
	flat_scratch_t s = {0};
	int rc = 0;
	uint32_t ng = flat_batch_plan(f, Q, nq, k, filters, qn, bq, out, n_out);
	if (ng > 0)
		rc = flat_scratch_alloc(f, ng, &s);
	const float *Qg = Q;
	if (rc == 0 && ng > 0 && ng < nq) { /* some went to the scan path: pack the rest */
		s.qpack = malloc(vela_mul_size((size_t)ng * f->dim, sizeof(float)));
		rc = s.qpack ? 0 : VELA_ENOMEM;
		for (uint32_t i = 0; rc == 0 && i < ng; i++)
			memcpy(s.qpack + (size_t)i * f->dim, bq[i].q, f->dim * sizeof(float));
		Qg = s.qpack;
	}
	if (rc == 0 && ng > 0)
		rc = flat_batch_run(f, bq, ng, Qg, k, &s);
	for (uint32_t i = 0; i < ng; i++) {
		if (rc == 0)
			flat_bq_finish(f, &bq[i], k, out + (size_t)bq[i].idx * k, &n_out[bq[i].idx]);
		free(bq[i].pool);
	}
	flat_scratch_free(&s);
	free(bq);
	return rc;
}

int flat_search_batch(const flat_index_t *f, const float *Q, uint32_t nq, uint32_t k,
		      const roaring_bitmap_t *const *filters, vela_hit_t *out, uint32_t *n_out)
{
	if (f == NULL || k > VELA_K_MAX || (nq > 0 && (Q == NULL || n_out == NULL)) ||
	    (nq > 0 && k > 0 && out == NULL))
		return VELA_EINVAL;
	if (!flat_has_rows(f))
		return VELA_EUNSUPPORTED;
	if (nq == 0)
		return 0;
	memset(n_out, 0, nq * sizeof(*n_out));
	index_rows_t rows;
	flat_rows(f, &rows);
	index_knn_t req = {.queries = Q, .nq = nq, .k = k, .filters = filters};
	return index_backend_knn(&rows, &req, out, n_out, NULL);
}
