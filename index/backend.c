/* The backend table (index.h BACKEND): the CPU backend's operations, the
 * process-wide selection and the wrappers that fall back to the CPU when
 * the GPU fails.
 *
 * CPU kNN is the FLAT batch engine (flat_batch.c): blocked sgemm, a
 * candidate pool per query bounded by the rounding argument at the top of
 * that file, exact re-scoring with the quant/ kernel and a bounded heap.
 * It runs on a borrowed flat_index_t laid over the caller's rows, so
 * flat_search_batch on the CPU computes exactly what it always did. */
#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/common.h"
#include "index/backend_impl.h"

/* Rows per sgemm of cpu_project (keeps every BLAS dimension an int). */
#define BACKEND_PROJECT_ROWS 65536u
/* k-means tiles: rows x centroids scored by one sgemm (4 MiB of floats). */
#define BACKEND_KMEANS_ROWS 1024u
#define BACKEND_KMEANS_CENTROIDS 1024u

/* ------------------------------------------------ argument checks */

float backend_rounding_slack(uint32_t dim, float qn, float norm_max)
{
	double e = ((4.0 * dim + 16.0) * ((double)qn + norm_max) + 4.0) * 0x1p-24;
	return (float)(2.0 * e * 1.01);
}

static int backend_rows_check(const index_rows_t *r, vela_err_t *err)
{
	if (r->dim < VELA_DIM_MIN || r->dim > VELA_DIM_MAX)
		return vela_err_set(err, VELA_EINVAL, "rows: dim %u out of range", r->dim);
	if (quant_distance_fn(r->metric, r->type) == NULL)
		return vela_err_set(err, VELA_EINVAL, "rows: unknown metric or element type");
	if (r->stride < r->dim || r->n > (uint64_t)FLAT_DOCID_MAX + 1 ||
	    (r->n > 0 && r->data == NULL))
		return vela_err_set(err, VELA_EINVAL, "rows: bad stride, count or data");
	if ((r->db_block && (r->db_block < FLAT_BATCH_DB_BLOCK_MIN ||
			     r->db_block > FLAT_BATCH_DB_BLOCK_MAX)) ||
	    (r->q_block && (r->q_block < FLAT_BATCH_Q_BLOCK_MIN || r->q_block > FLAT_BATCH_Q_BLOCK_MAX)))
		return vela_err_set(err, VELA_EINVAL, "rows: sgemm block out of range");
	return 0;
}

int backend_knn_check(const index_rows_t *rows, const index_knn_t *req, float *qn,
		      vela_err_t *err)
{
	if (rows == NULL || req == NULL)
		return vela_err_set(err, VELA_EINVAL, "knn: NULL rows or request");
	int rc = backend_rows_check(rows, err);
	if (rc)
		return rc;
	if (req->k > VELA_K_MAX)
		return vela_err_set(err, VELA_EINVAL, "knn: k %u above %u", req->k, VELA_K_MAX);
	if (req->nq > 0 && req->queries == NULL)
		return vela_err_set(err, VELA_EINVAL, "knn: NULL queries");
	for (uint32_t i = 0; i < req->nq; i++) {
		const float *q = req->queries + (size_t)i * rows->dim;
		double s = 0;
		for (uint32_t j = 0; j < rows->dim; j++) {
			if (!isfinite(q[j]))
				return vela_err_set(err, VELA_EINVAL, "knn: query %u is not finite", i);
			s += (double)q[j] * q[j];
		}
		if (s > FLAT_NORM_SQ_MAX)
			return vela_err_set(err, VELA_EINVAL, "knn: query %u is too large", i);
		if (qn)
			qn[i] = (float)s;
	}
	return 0;
}

int backend_project_check(const float *X, uint64_t n, uint32_t din, const float *P,
			  uint32_t dout, const float *Y, vela_err_t *err)
{
	if (din < VELA_DIM_MIN || din > VELA_DIM_MAX || dout < VELA_DIM_MIN || dout > VELA_DIM_MAX)
		return vela_err_set(err, VELA_EINVAL, "project: dimensions %u x %u out of range",
				    din, dout);
	if (n > 0 && (X == NULL || P == NULL || Y == NULL))
		return vela_err_set(err, VELA_EINVAL, "project: NULL matrix");
	return 0;
}

int backend_kmeans_check(const float *X, uint64_t n, uint32_t d, const float *C, uint32_t kc,
			 vela_err_t *err)
{
	if (d < VELA_DIM_MIN || d > VELA_DIM_MAX || kc == 0 || n > UINT32_MAX)
		return vela_err_set(err, VELA_EINVAL, "kmeans: d %u, kc %u or n out of range", d, kc);
	if (C == NULL || (n > 0 && X == NULL))
		return vela_err_set(err, VELA_EINVAL, "kmeans: NULL matrix");
	return 0;
}

int backend_gram_check(const float *X, uint64_t n, uint32_t d, const double *G, vela_err_t *err)
{
	if (d < VELA_DIM_MIN || d > VELA_DIM_MAX)
		return vela_err_set(err, VELA_EINVAL, "gram: d %u out of range", d);
	if (G == NULL || (n > 0 && X == NULL))
		return vela_err_set(err, VELA_EINVAL, "gram: NULL matrix");
	return 0;
}

/* Cluster c against the first one's shape. */
static int backend_part_shape_check(const index_parts_t *parts, uint32_t c, vela_err_t *err)
{
	const index_rows_t *c0 = &parts->cl[0], *r = &parts->cl[c];
	int rc = backend_rows_check(r, err);
	if (rc == 0 && (r->dim != c0->dim || r->type != c0->type || r->metric != c0->metric))
		rc = vela_err_set(err, VELA_EINVAL, "parts: cluster %u's shape differs", c);
	return rc;
}

int backend_parts_shape_check(const index_parts_t *parts, vela_err_t *err)
{
	int rc = 0;
	for (uint32_t c = 0; rc == 0 && c < parts->n_cl; c++)
		rc = backend_part_shape_check(parts, c, err);
	return rc;
}

/* The pairs in range; the clusters they name (each run once) of cl[0]'s
 * shape: O(pairs), not O(clusters), as a one-query batch names few. */
static int backend_pairs_check(const index_parts_t *parts, const index_parts_req_t *req,
			       vela_err_t *err)
{
	int rc = backend_part_shape_check(parts, 0, err);
	for (uint32_t i = 0; rc == 0 && i < req->npairs; i++) {
		const index_part_pair_t *p = &req->pairs[i];
		if (p->cl >= parts->n_cl || p->q >= req->nq)
			rc = vela_err_set(err, VELA_EINVAL, "parts: pair %u out of range", i);
		else if (i == 0 || p->cl != req->pairs[i - 1].cl)
			rc = backend_part_shape_check(parts, p->cl, err);
	}
	return rc;
}

int backend_parts_check(const index_parts_t *parts, const index_parts_req_t *req,
			const vela_hit_t *out, const uint32_t *n_out, float *qn, vela_err_t *err)
{
	if (parts == NULL || req == NULL || (parts->n_cl > 0 && parts->cl == NULL))
		return vela_err_set(err, VELA_EINVAL, "parts: NULL clusters or request");
	if (req->npairs == 0)
		return 0;
	if (parts->n_cl == 0 || req->pairs == NULL || n_out == NULL || (req->k > 0 && out == NULL))
		return vela_err_set(err, VELA_EINVAL, "parts: no clusters, pairs or output");
	index_knn_t q = {.queries = req->queries, .nq = req->nq, .k = req->k};
	int rc = backend_knn_check(&parts->cl[0], &q, qn, err);
	return rc ? rc : backend_pairs_check(parts, req, err);
}

void backend_hits_pad(vela_hit_t *out, const uint32_t *n_out, uint32_t nq, uint32_t k)
{
	for (uint32_t i = 0; i < nq; i++)
		for (uint32_t j = n_out[i]; j < k; j++)
			out[(size_t)i * k + j] = (vela_hit_t){INFINITY, UINT32_MAX};
}

/* ------------------------------------------------ CPU kNN */

/* What a borrowed view allocated (NULL when the caller gave it). */
typedef struct {
	uint64_t *live;
	float *norms;
} backend_own_t;

static int backend_view_live(const index_rows_t *r, flat_index_t *v, backend_own_t *own)
{
	uint64_t nw = (r->n + 63) / 64;
	if (r->live == NULL && nw > 0) {
		own->live = malloc(vela_mul_size(nw, sizeof(uint64_t)));
		if (own->live == NULL)
			return VELA_ENOMEM;
		memset(own->live, 0xff, nw * sizeof(uint64_t));
		if (r->n & 63)
			own->live[nw - 1] = (1ull << (r->n & 63)) - 1;
	}
	v->live = own->live ? own->live : (uint64_t *)r->live;
	for (uint64_t w = 0; w < nw; w++)
		v->count += (uint64_t)__builtin_popcountll(v->live[w]);
	return 0;
}

/* |x|^2 of every row in double, as flat_encode computes it. */
static int backend_view_norms(const index_rows_t *r, flat_index_t *v, backend_own_t *own)
{
	if (r->norms == NULL && r->n > 0) {
		own->norms = malloc(vela_mul_size(r->n, sizeof(float)));
		float *x = r->type == VELA_VEC_FLOAT16 ? malloc(r->dim * sizeof(float)) : NULL;
		if (own->norms == NULL || (r->type == VELA_VEC_FLOAT16 && x == NULL)) {
			free(x);
			return VELA_ENOMEM;
		}
		for (uint64_t i = 0; i < r->n; i++) {
			const float *row = (const float *)flat_row(v, i);
			if (x) {
				quant_f16_to_f32(flat_row(v, i), x, r->dim);
				row = x;
			}
			double s = 0;
			for (uint32_t j = 0; j < r->dim; j++)
				s += (double)row[j] * row[j];
			own->norms[i] = (float)s;
		}
		free(x);
	}
	v->norms = own->norms ? own->norms : (float *)r->norms;
	v->norm_max = r->norm_max;
	if (v->norm_max <= 0)
		for (uint64_t i = 0; i < r->n; i++)
			if (flat_live_has(v, i) && v->norms[i] > v->norm_max)
				v->norm_max = v->norms[i];
	return 0;
}

/* Lay a flat_index_t over the caller's rows (no docids bitmap: the batch
 * engine needs only the presence bits and their count). */
static int backend_view(const index_rows_t *r, flat_index_t *v, backend_own_t *own)
{
	memset(v, 0, sizeof(*v));
	memset(own, 0, sizeof(*own));
	v->dim = r->dim;
	v->metric = r->metric;
	v->type = r->type;
	v->esize = r->type == VELA_VEC_FLOAT16 ? 2 : 4;
	v->stride = r->stride;
	v->data = (uint8_t *)r->data;
	v->end = r->n;
	v->cap = (r->n + 63) & ~(uint64_t)63;
	v->db_block = r->db_block ? (r->db_block + 63) & ~63u : FLAT_BATCH_DB_BLOCK_DEFAULT;
	v->q_block = r->q_block ? r->q_block : FLAT_BATCH_Q_BLOCK_DEFAULT;
	v->dist = quant_distance_fn(r->metric, r->type);
	v->uid = r->uid;
	v->generation = r->generation;
	int rc = backend_view_live(r, v, own);
	return rc ? rc : backend_view_norms(r, v, own);
}

static int cpu_knn(const index_rows_t *rows, const index_knn_t *req, vela_hit_t *out,
		   uint32_t *n_out, vela_err_t *err)
{
	if (rows && req && req->nq > 0 && (n_out == NULL || (req->k > 0 && out == NULL)))
		return vela_err_set(err, VELA_EINVAL, "knn: NULL output");
	if (rows == NULL || req == NULL || req->nq == 0)
		return backend_knn_check(rows, req, NULL, err);
	float *qn = malloc(req->nq * sizeof(float));
	if (qn == NULL)
		return vela_err_set(err, VELA_ENOMEM, "knn: out of memory");
	int rc = backend_knn_check(rows, req, qn, err);
	flat_index_t v;
	backend_own_t own = {0};
	if (rc == 0) {
		memset(n_out, 0, req->nq * sizeof(*n_out));
		rc = backend_view(rows, &v, &own);
	}
	if (rc == 0)
		rc = flat_batch_knn(&v, req->queries, req->nq, req->k, req->filters, qn, out, n_out);
	if (rc == 0)
		backend_hits_pad(out, n_out, req->nq, req->k);
	else if (rc == VELA_ENOMEM)
		vela_err_set(err, rc, "knn: out of memory");
	free(own.live);
	free(own.norms);
	free(qn);
	return rc;
}

/* The end of the run of pairs naming pairs[s].cl. */
static uint32_t backend_pair_run_end(const index_parts_req_t *req, uint32_t s)
{
	uint32_t e = s + 1;
	while (e < req->npairs && req->pairs[e].cl == req->pairs[s].cl)
		e++;
	return e;
}

/* Pairs [s, e) name one cluster: one knn of its rows for their queries. */
static int cpu_parts_run(const index_parts_t *parts, const index_parts_req_t *req, uint32_t s,
			 uint32_t e, float *Q, const roaring_bitmap_t **flt, vela_hit_t *out,
			 uint32_t *n_out, vela_err_t *err)
{
	const index_rows_t *r = &parts->cl[req->pairs[s].cl];
	for (uint32_t i = s; i < e; i++) {
		memcpy(Q + (size_t)(i - s) * r->dim, req->queries + (size_t)req->pairs[i].q * r->dim,
		       r->dim * sizeof(float));
		flt[i - s] = req->pairs[i].filter;
	}
	index_knn_t sub = {.queries = Q, .nq = e - s, .k = req->k, .filters = flt};
	return cpu_knn(r, &sub, out ? out + (size_t)s * req->k : NULL, n_out + s, err);
}

/* Exactly the per-cluster loop partitions.c ran before the batched scan:
 * one cpu_knn per run of pairs naming one cluster. */
static int cpu_parts_knn(const index_parts_t *parts, const index_parts_req_t *req,
			 vela_hit_t *out, uint32_t *n_out, vela_err_t *err)
{
	int rc = backend_parts_check(parts, req, out, n_out, NULL, err);
	if (rc || req->npairs == 0)
		return rc;
	uint32_t most = 0;
	for (uint32_t s = 0, e; s < req->npairs; s = e) {
		e = backend_pair_run_end(req, s);
		most = e - s > most ? e - s : most;
	}
	float *Q = malloc(vela_mul_size((size_t)most * parts->cl[0].dim, sizeof(float)));
	const roaring_bitmap_t **flt = malloc(most * sizeof(*flt));
	if (Q == NULL || flt == NULL)
		rc = vela_err_set(err, VELA_ENOMEM, "parts: out of memory");
	for (uint32_t s = 0, e; rc == 0 && s < req->npairs; s = e) {
		e = backend_pair_run_end(req, s);
		rc = cpu_parts_run(parts, req, s, e, Q, flt, out, n_out, err);
	}
	free(Q);
	free(flt);
	return rc;
}

/* ------------------------------------------------ CPU projection, k-means */

static int cpu_project(const float *X, uint64_t n, uint32_t din, const float *P, uint32_t dout,
		       float *Y, vela_err_t *err)
{
	int rc = backend_project_check(X, n, din, P, dout, Y, err);
	for (uint64_t r0 = 0; rc == 0 && r0 < n; r0 += BACKEND_PROJECT_ROWS) {
		uint64_t m = n - r0 < BACKEND_PROJECT_ROWS ? n - r0 : BACKEND_PROJECT_ROWS;
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)dout, (int)din,
			    1.0f, X + r0 * din, (int)din, P, (int)dout, 0.0f, Y + r0 * dout,
			    (int)dout);
	}
	return rc;
}

typedef struct {
	float *cn;      /* kc: |c|^2 */
	float *tile;    /* rows x centroids of one sgemm */
	float *best;    /* per row of the tile: best distance so far */
	uint32_t *bi;   /* and its centroid */
	double *sums;   /* kc x d */
	uint64_t *cnt;  /* kc */
} backend_km_t;

static void backend_km_free(backend_km_t *s)
{
	free(s->cn);
	free(s->tile);
	free(s->best);
	free(s->bi);
	free(s->sums);
	free(s->cnt);
}

static int backend_km_alloc(backend_km_t *s, uint32_t d, uint32_t kc)
{
	uint32_t cb = kc < BACKEND_KMEANS_CENTROIDS ? kc : BACKEND_KMEANS_CENTROIDS;
	s->cn = malloc(kc * sizeof(float));
	s->tile = malloc((size_t)BACKEND_KMEANS_ROWS * cb * sizeof(float));
	s->best = malloc(BACKEND_KMEANS_ROWS * sizeof(float));
	s->bi = malloc(BACKEND_KMEANS_ROWS * sizeof(uint32_t));
	s->sums = calloc(vela_mul_size(kc, d), sizeof(double));
	s->cnt = calloc(kc, sizeof(uint64_t));
	return s->cn && s->tile && s->best && s->bi && s->sums && s->cnt ? 0 : VELA_ENOMEM;
}

/* Nearest centroid of rows [r0, r0 + m) by the GEMM form |c|^2 - 2 x.c
 * (|x|^2 is the same for every centroid of a row, so it is left out). */
static void backend_km_assign(const float *X, uint64_t r0, uint32_t m, uint32_t d,
			      const float *C, uint32_t kc, backend_km_t *s)
{
	for (uint32_t r = 0; r < m; r++) {
		s->best[r] = INFINITY;
		s->bi[r] = 0;
	}
	for (uint32_t c0 = 0; c0 < kc; c0 += BACKEND_KMEANS_CENTROIDS) {
		uint32_t nc = kc - c0 < BACKEND_KMEANS_CENTROIDS ? kc - c0 : BACKEND_KMEANS_CENTROIDS;
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)nc, (int)d, -2.0f,
			    X + r0 * d, (int)d, C + (size_t)c0 * d, (int)d, 0.0f, s->tile, (int)nc);
		for (uint32_t r = 0; r < m; r++) {
			for (uint32_t j = 0; j < nc; j++) {
				float dist = s->cn[c0 + j] + s->tile[(size_t)r * nc + j];
				if (dist < s->best[r]) {
					s->best[r] = dist;
					s->bi[r] = c0 + j;
				}
			}
		}
	}
}

static int cpu_kmeans_step(const float *X, uint64_t n, uint32_t d, float *C, uint32_t kc,
			   uint32_t *assign, double *inertia, vela_err_t *err)
{
	int rc = backend_kmeans_check(X, n, d, C, kc, err);
	if (rc)
		return rc;
	backend_km_t s = {0};
	if (backend_km_alloc(&s, d, kc)) {
		backend_km_free(&s);
		return vela_err_set(err, VELA_ENOMEM, "kmeans: out of memory");
	}
	for (uint32_t j = 0; j < kc; j++) {
		double t = 0;
		for (uint32_t i = 0; i < d; i++)
			t += (double)C[(size_t)j * d + i] * C[(size_t)j * d + i];
		s.cn[j] = (float)t;
	}
	double in = 0;
	for (uint64_t r0 = 0; r0 < n; r0 += BACKEND_KMEANS_ROWS) {
		uint32_t m = (uint32_t)(n - r0 < BACKEND_KMEANS_ROWS ? n - r0 : BACKEND_KMEANS_ROWS);
		backend_km_assign(X, r0, m, d, C, kc, &s);
		for (uint32_t r = 0; r < m; r++) {
			const float *x = X + (r0 + r) * d;
			uint32_t a = s.bi[r];
			if (assign)
				assign[r0 + r] = a;
			in += quant_l2sq_f32(x, C + (size_t)a * d, d);
			s.cnt[a]++;
			for (uint32_t i = 0; i < d; i++)
				s.sums[(size_t)a * d + i] += x[i];
		}
	}
	for (uint32_t j = 0; j < kc; j++)
		for (uint32_t i = 0; s.cnt[j] && i < d; i++)
			C[(size_t)j * d + i] = (float)(s.sums[(size_t)j * d + i] / (double)s.cnt[j]);
	if (inertia)
		*inertia = in;
	backend_km_free(&s);
	return 0;
}

/* LeanVec training's Gram matrix: quant/'s own double-precision dsyrk. */
static int cpu_gram(const float *X, uint64_t n, uint32_t d, const double *mu, double *G,
		    vela_err_t *err)
{
	int rc = backend_gram_check(X, n, d, G, err);
	return rc ? rc : quant_leanvec_gram(X, n, d, mu, G, err);
}

static const index_backend_t backend_cpu_table = {
	.name = "cpu",
	.knn = cpu_knn,
	.project = cpu_project,
	.kmeans_step = cpu_kmeans_step,
	.gram = cpu_gram,
	.parts_knn = cpu_parts_knn,
};

const index_backend_t *index_backend_cpu(void)
{
	return &backend_cpu_table;
}

/* ------------------------------------------------ selection */

static pthread_mutex_t backend_mu = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(const index_backend_t *) backend_sel;    /* NULL until resolved */
static atomic_int backend_mode = VELA_GPU_MODE_DEFAULT;
static atomic_uint_fast64_t backend_fallbacks;
static atomic_uint_fast64_t backend_uid_next;
static bool backend_cpu_logged;

/* The table for `mode`; logs the choice (the CPU one once per process). */
static const index_backend_t *backend_resolve_locked(vela_gpu_mode_t mode)
{
	if (mode == VELA_GPU_NO)
		return &backend_cpu_table;
	const index_backend_t *g;
	vela_err_t e = {0};
	if (index_backend_gpu(&g, &e) == 0) {
		char dev[128];
		backend_gpu_state(dev, sizeof(dev), NULL, NULL);
		vela_info("gpu: CUDA backend on %s (gpu %s)", dev, index_backend_mode_name(mode));
		return g;
	}
	if (!backend_cpu_logged) {
		backend_cpu_logged = true;
		vela_info("gpu: %s; using the CPU backend", e.msg[0] ? e.msg : vela_strerror(e.code));
	}
	return &backend_cpu_table;
}

const index_backend_t *index_backend_current(void)
{
	const index_backend_t *t = atomic_load(&backend_sel);
	if (t)
		return t;
	pthread_mutex_lock(&backend_mu);
	t = atomic_load(&backend_sel);
	if (t == NULL) {
		t = backend_resolve_locked((vela_gpu_mode_t)atomic_load(&backend_mode));
		atomic_store(&backend_sel, t);
	}
	pthread_mutex_unlock(&backend_mu);
	return t;
}

int index_backend_mode_set(vela_gpu_mode_t mode, vela_err_t *err)
{
	if (mode != VELA_GPU_NO && mode != VELA_GPU_YES && mode != VELA_GPU_AUTO)
		return vela_err_set(err, VELA_EINVAL, "unknown gpu mode %d", (int)mode);
	pthread_mutex_lock(&backend_mu);
	const index_backend_t *g;
	int rc = mode == VELA_GPU_YES ? index_backend_gpu(&g, err) : 0;
	if (rc == 0) {
		atomic_store(&backend_mode, (int)mode);
		atomic_store(&backend_sel, backend_resolve_locked(mode));
		if (mode == VELA_GPU_NO)
			backend_gpu_release();
	}
	pthread_mutex_unlock(&backend_mu);
	return rc;
}

vela_gpu_mode_t index_backend_mode_get(void)
{
	return (vela_gpu_mode_t)atomic_load(&backend_mode);
}

static const char *const backend_mode_names[] = {"no", "yes", "auto"};

int index_backend_mode_parse(const char *s, vela_gpu_mode_t *out)
{
	for (int m = 0; s && m < 3; m++)
		if (strcasecmp(s, backend_mode_names[m]) == 0) {
			*out = (vela_gpu_mode_t)m;
			return 0;
		}
	return VELA_EINVAL;
}

const char *index_backend_mode_name(vela_gpu_mode_t mode)
{
	return (unsigned)mode < 3 ? backend_mode_names[mode] : "?";
}

void index_backend_info(vela_gpu_info_t *out)
{
	memset(out, 0, sizeof(*out));
	const index_backend_t *t = index_backend_current();
	out->mode = index_backend_mode_get();
	out->backend = t->name;
	out->library_loaded = backend_gpu_built();
	out->device_count = index_backend_gpu_devices();
	out->fallbacks = atomic_load(&backend_fallbacks);
	backend_gpu_state(out->device, sizeof(out->device), &out->resident, &out->resident_bytes);
	if (t == &backend_cpu_table)
		snprintf(out->device, sizeof(out->device), "none");
}

uint64_t index_backend_uid_new(void)
{
	return atomic_fetch_add(&backend_uid_next, 1) + 1;
}

/* ------------------------------------------------ wrappers */

/* Count a GPU failure answered on the CPU; log the 1st, 2nd, 4th, 8th...
 * so a failing device cannot flood the log. */
static void backend_fallback(const char *op, int rc, const vela_err_t *e)
{
	uint64_t n = atomic_fetch_add(&backend_fallbacks, 1) + 1;
	if ((n & (n - 1)) == 0)
		vela_warn("gpu: %s failed (%s); answered on the CPU backend (%llu fallback%s so far)",
			  op, e->msg[0] ? e->msg : vela_strerror(rc), (unsigned long long)n,
			  n == 1 ? "" : "s");
}

int index_backend_knn(const index_rows_t *rows, const index_knn_t *req, vela_hit_t *out,
		      uint32_t *n_out, vela_err_t *err)
{
	const index_backend_t *b = index_backend_current();
	if (b != &backend_cpu_table && backend_knn_check(rows, req, NULL, err) == 0) {
		vela_err_t e = {0};
		int rc = b->knn(rows, req, out, n_out, &e);
		if (rc == 0)
			return 0;
		if (rc != VELA_EUNSUPPORTED)
			backend_fallback("knn", rc, &e);
	}
	return backend_cpu_table.knn(rows, req, out, n_out, err);
}

int index_backend_project(const float *X, uint64_t n, uint32_t din, const float *P,
			  uint32_t dout, float *Y, vela_err_t *err)
{
	const index_backend_t *b = index_backend_current();
	if (b != &backend_cpu_table && backend_project_check(X, n, din, P, dout, Y, err) == 0) {
		vela_err_t e = {0};
		int rc = b->project(X, n, din, P, dout, Y, &e);
		if (rc == 0)
			return 0;
		if (rc != VELA_EUNSUPPORTED)
			backend_fallback("project", rc, &e);
	}
	return backend_cpu_table.project(X, n, din, P, dout, Y, err);
}

int index_backend_kmeans_step(const float *X, uint64_t n, uint32_t d, float *C, uint32_t kc,
			      uint32_t *assign, double *inertia, vela_err_t *err)
{
	const index_backend_t *b = index_backend_current();
	if (b != &backend_cpu_table && backend_kmeans_check(X, n, d, C, kc, err) == 0) {
		/* The GPU may have moved C before failing: keep a copy to retry on. */
		float *c0 = malloc(vela_mul_size((size_t)kc * d, sizeof(float)));
		if (c0) {
			memcpy(c0, C, (size_t)kc * d * sizeof(float));
			vela_err_t e = {0};
			int rc = b->kmeans_step(X, n, d, C, kc, assign, inertia, &e);
			if (rc != 0)
				memcpy(C, c0, (size_t)kc * d * sizeof(float));
			free(c0);
			if (rc == 0)
				return 0;
			if (rc != VELA_EUNSUPPORTED)
				backend_fallback("kmeans_step", rc, &e);
		}
	}
	return backend_cpu_table.kmeans_step(X, n, d, C, kc, assign, inertia, err);
}

int index_backend_gram(const float *X, uint64_t n, uint32_t d, const double *mu, double *G,
		       vela_err_t *err)
{
	const index_backend_t *b = index_backend_current();
	if (b != &backend_cpu_table && backend_gram_check(X, n, d, G, err) == 0) {
		vela_err_t e = {0};
		int rc = b->gram(X, n, d, mu, G, &e);
		if (rc == 0)
			return 0;
		if (rc != VELA_EUNSUPPORTED)
			backend_fallback("gram", rc, &e);
	}
	return backend_cpu_table.gram(X, n, d, mu, G, err);
}

int index_backend_parts_knn(const index_parts_t *parts, const index_parts_req_t *req,
			    vela_hit_t *out, uint32_t *n_out, vela_err_t *err)
{
	const index_backend_t *b = index_backend_current();
	if (b != &backend_cpu_table && backend_parts_check(parts, req, out, n_out, NULL, err) == 0) {
		vela_err_t e = {0};
		int rc = b->parts_knn(parts, req, out, n_out, &e);
		if (rc == 0)
			return 0;
		if (rc != VELA_EUNSUPPORTED)
			backend_fallback("parts_knn", rc, &e);
	}
	return backend_cpu_table.parts_knn(parts, req, out, n_out, err);
}
