/* GRAPH index: a graph_store_t over compressed vectors, LVQ (one or two
 * levels) and LeanVec (LVQ primary of a projection + LVQ8 secondary).
 * Formulas: reference/leanvec-lvq.md §1.1 (LeanVec storage, query
 * preprocessing, re-rank pipeline), §2.1-2.3 (LVQ codes and distances),
 * §3.2 (re-rank of the whole buffer). See the GRAPH LVQ section of index.h. */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "index/flat_impl.h"
#include "index/index.h"
#include "quant/quant.h"

/* Prepared-query regions are aligned to this (>= QUANT_LVQ_QUERY_ALIGN). */
#define GLQ_ALIGN 16u
#define GLQ_GROW_MIN 64u

static size_t glq_round(size_t n)
{
	return (n + GLQ_ALIGN - 1) / GLQ_ALIGN * GLQ_ALIGN;
}

enum glq_state { GLQ_ABSENT = 0, GLQ_LIVE = 1, GLQ_REMOVED = 2 };

struct graph_lvq_store {
	graph_lvq_params_t p; /* resolved: reduce_dim set, mode ID without queries */
	bool leanvec;
	bool norms;           /* LeanVec-OOD with L2: |x|^2 per vector */
	uint32_t d;           /* primary dimension (dim for LVQ kinds) */
	quant_lvq_t *prim;    /* primary encoder, d dims */
	quant_lvq_t *sec;     /* LeanVec secondary (LVQ8, dim); NULL for LVQ */
	float *B;             /* LeanVec data projection, d x dim */
	float *A;             /* query projection: B for ID, its own for OOD */
	float *Bmu;           /* L2: B mu, subtracted after projecting data */
	float *Amu;           /* L2: A mu for queries (== Bmu for ID) */
	float *cmu;           /* OOD with L2: the data mean mu the norms are taken from */
	vela_metric_t pmetric; /* metric of traversal queries on the primary */
	size_t p_size;        /* bytes per primary record */
	size_t s_size;        /* bytes per residual/secondary record (0: none) */
	uint8_t *pcodes, *scodes;
	float *norm;
	uint8_t *state;       /* enum glq_state per docid */
	uint32_t end, cap;    /* ids < end have a slot; cap slots allocated */
	uint64_t count;
	uint64_t gen;         /* renewed by every writer: keys the dist_ids cache */
	size_t q_off_p, q_off_s, q_off_y; /* prepared-query regions */
	uint8_t *enc;         /* set: one full LVQ code / LeanVec secondary code */
	uint8_t *penc;        /* set: LeanVec primary code */
	float *red;           /* set: d floats of the projection */
	graph_store_t st;
};

/* Prepared query (graph_store_t.query_size bytes, the graph's buffer). */
typedef struct glq_query {
	quant_lvq_query_t *p; /* primary (traversal; LVQ re-rank too) */
	quant_lvq_query_t *s; /* LeanVec secondary (re-rank) */
	float qn;             /* LeanVec-OOD L2: |q|^2 */
} glq_query_t;

static atomic_uint_fast64_t glq_gen_next = 1;

static void glq_renew(graph_lvq_store_t *s)
{
	s->gen = atomic_fetch_add(&glq_gen_next, 1);
}

/* ------------------------------------------------ kinds */

static const char *const glq_names[GRAPH_LVQ_KIND_COUNT] = {
	"LVQ8", "LVQ4", "LVQ4x4", "LVQ4x8", "LeanVec4x8", "LeanVec8x8"};

void graph_lvq_params_default(graph_lvq_params_t *p)
{
	*p = (graph_lvq_params_t){.kind = GRAPH_LVQ_LVQ8, .metric = VELA_METRIC_L2,
				  .reduce_dim = GRAPH_LVQ_REDUCE_DIM_DEFAULT,
				  .leanvec_mode = GRAPH_LVQ_LEANVEC_ID};
}

int graph_lvq_kind_parse(const char *name, graph_lvq_kind_t *out)
{
	if (name == NULL || out == NULL)
		return VELA_EINVAL;
	for (int k = 0; k < GRAPH_LVQ_KIND_COUNT; k++)
		if (strcasecmp(name, glq_names[k]) == 0) {
			*out = (graph_lvq_kind_t)k;
			return 0;
		}
	return VELA_EINVAL;
}

const char *graph_lvq_kind_name(graph_lvq_kind_t kind)
{
	return (unsigned)kind < GRAPH_LVQ_KIND_COUNT ? glq_names[kind] : "?";
}

/* Primary LVQ encoding of a kind (LeanVec: of the projection, §1.1). */
static quant_lvq_kind_t glq_primary_kind(graph_lvq_kind_t k)
{
	static const quant_lvq_kind_t map[GRAPH_LVQ_KIND_COUNT] = {
		QUANT_LVQ8, QUANT_LVQ4, QUANT_LVQ4x4, QUANT_LVQ4x8, QUANT_LVQ4, QUANT_LVQ8};
	return map[k];
}

/* ------------------------------------------------ graph_store_t callbacks */

static inline const uint8_t *glq_prim(const graph_lvq_store_t *s, uint32_t id)
{
	return s->pcodes + (size_t)id * s->p_size;
}

static inline const uint8_t *glq_sec(const graph_lvq_store_t *s, uint32_t id)
{
	return s->scodes + (size_t)id * s->s_size;
}

/* LeanVec query reduction (§1.1): A q, minus A mu with L2. */
static void glq_reduce_query(const graph_lvq_store_t *s, const float *q, float *y)
{
	quant_leanvec_project(s->A, s->d, s->p.dim, q, y);
	for (uint32_t j = 0; s->Amu && j < s->d; j++)
		y[j] -= s->Amu[j];
}

/* |v - mu|^2 (OOD with L2: the norms of the centred vectors). */
static float glq_cnorm(const graph_lvq_store_t *s, const float *v)
{
	double t = 0;
	for (uint32_t j = 0; j < s->p.dim; j++)
		t += ((double)v[j] - s->cmu[j]) * ((double)v[j] - s->cmu[j]);
	return (float)t;
}

static int glq_prepare(void *ctx, const float *q, void *buf)
{
	const graph_lvq_store_t *s = ctx;
	uint8_t *b = buf;
	glq_query_t *h = buf;
	*h = (glq_query_t){quant_lvq_query_place(s->prim, b + s->q_off_p), NULL, 0};
	if (h->p == NULL)
		return VELA_EINVAL;
	if (!s->leanvec)
		return quant_lvq_query_prepare(s->prim, s->p.metric, q, h->p);
	h->s = quant_lvq_query_place(s->sec, b + s->q_off_s);
	/* The secondary checks q is finite before it is projected. */
	int rc = h->s ? quant_lvq_query_prepare(s->sec, s->p.metric, q, h->s) : VELA_EINVAL;
	if (rc)
		return rc;
	float *y = (float *)(b + s->q_off_y);
	glq_reduce_query(s, q, y);
	if (s->norms)
		h->qn = glq_cnorm(s, q);
	return quant_lvq_query_prepare(s->prim, s->pmetric, y, h->p);
}

static float glq_dist(void *ctx, const void *pq, uint32_t id)
{
	const graph_lvq_store_t *s = ctx;
	const glq_query_t *h = pq;
	if (id >= s->end)
		return INFINITY;
	float d = quant_lvq_distance(s->prim, h->p, glq_prim(s, id));
	if (!s->norms)
		return d;
	/* OOD with L2, centred on mu (L2 does not change under a shift, and
	 * the IP term's error is then relative to the spread, not to |x|):
	 * |q'|^2 + |x'|^2 - 2 <A q', B x'>; the IP query gives 1 - <.,.> */
	return h->qn + s->norm[id] - 2.0f * (1.0f - d);
}

/* The primary record (what dist and dist_ids read): at 768 dimensions an
 * LVQ8 record is 13 cache lines, and a graph walk reads them at random. */
static void glq_prefetch(const void *ctx, uint32_t id)
{
	const graph_lvq_store_t *s = ctx;
	if (id >= s->end)
		return;
	const char *r = (const char *)glq_prim(s, id);
	size_t bytes = s->p_size < 1024 ? s->p_size : 1024; /* then the hardware prefetcher */
	for (size_t o = 0; o < bytes; o += 64)
		__builtin_prefetch(r + o, 0, 3);
}

static float glq_dist_rerank_lvq(void *ctx, const void *pq, uint32_t id)
{
	const graph_lvq_store_t *s = ctx;
	const glq_query_t *h = pq;
	if (id >= s->end)
		return INFINITY;
	return quant_lvq_distance_split(s->prim, h->p, glq_prim(s, id), glq_sec(s, id));
}

static float glq_dist_rerank_leanvec(void *ctx, const void *pq, uint32_t id)
{
	const graph_lvq_store_t *s = ctx;
	const glq_query_t *h = pq;
	if (id >= s->end)
		return INFINITY;
	return quant_lvq_distance(s->sec, h->s, glq_sec(s, id));
}

/* dist_ids: `a`'s primary decoded and prepared as a query on the primary
 * encoder. The graph asks dist_ids(x, y) for many y in a row with the same
 * x (greedy search for x, pool distances, prune rows), so each thread keeps
 * its last prepared `a`, keyed by (store generation, a). Thread-local
 * storage needs no lock and no free (fixed size). */
#define GLQ_TLS_QUERY_BYTES (64u + GRAPH_LVQ_IDS_CACHE_DIM_MAX * sizeof(float))

static _Thread_local struct {
	uint64_t gen;
	uint32_t id;
	_Alignas(GLQ_ALIGN) uint8_t query[GLQ_TLS_QUERY_BYTES];
	float vec[GRAPH_LVQ_IDS_CACHE_DIM_MAX];
} glq_tls;

/* Prepare stored `a` in `qbuf`, decoding through `vec` (d floats). */
static const quant_lvq_query_t *glq_prepare_id(const graph_lvq_store_t *s, uint32_t a,
					       void *qbuf, float *vec)
{
	quant_lvq_query_t *q = quant_lvq_query_place(s->prim, qbuf);
	quant_lvq_decode_primary(s->prim, glq_prim(s, a), vec);
	vela_metric_t m = s->norms ? VELA_METRIC_L2 : s->pmetric;
	if (q == NULL || quant_lvq_query_prepare(s->prim, m, vec, q) != 0)
		return NULL; /* a decoded record is finite: not reached */
	return q;
}

static float glq_dist_ids(void *ctx, uint32_t a, uint32_t b)
{
	const graph_lvq_store_t *s = ctx;
	if (a >= s->end || b >= s->end)
		return INFINITY;
	if (s->d <= GRAPH_LVQ_IDS_CACHE_DIM_MAX &&
	    quant_lvq_query_size(s->prim) <= GLQ_TLS_QUERY_BYTES) {
		if (glq_tls.gen != s->gen || glq_tls.id != a) {
			glq_tls.gen = 0; /* invalid until prepared */
			if (glq_prepare_id(s, a, glq_tls.query, glq_tls.vec) == NULL)
				return INFINITY;
			glq_tls.gen = s->gen;
			glq_tls.id = a;
		}
		return quant_lvq_distance(s->prim, (const void *)glq_tls.query, glq_prim(s, b));
	}
	size_t qb = glq_round(quant_lvq_query_size(s->prim));
	uint8_t *buf = aligned_alloc(GLQ_ALIGN, qb + glq_round((size_t)s->d * sizeof(float)));
	float d = INFINITY;
	const quant_lvq_query_t *q = buf ? glq_prepare_id(s, a, buf, (float *)(buf + qb)) : NULL;
	if (q)
		d = quant_lvq_distance(s->prim, q, glq_prim(s, b));
	free(buf);
	return d;
}

static int glq_get(void *ctx, uint32_t id, float *out)
{
	const graph_lvq_store_t *s = ctx;
	if (id >= s->end || s->state[id] == GLQ_ABSENT)
		return VELA_ENOTFOUND;
	if (s->leanvec)
		quant_lvq_decode(s->sec, glq_sec(s, id), out);
	else
		quant_lvq_decode_primary(s->prim, glq_prim(s, id), out);
	return 0;
}

/* ------------------------------------------------ training */

/* LeanVec training's Gram matrices go through the backend (the GPU when
 * there is one; index.h BACKEND). */
static int glq_train_ood(const float *X, size_t n, const float *Q, size_t m, uint32_t D,
			 uint32_t d, float *A, float *B, vela_err_t *err)
{
	quant_leanvec_ood_opts_t o;
	quant_leanvec_ood_opts_default(&o);
	o.gram = index_backend_gram;
	return quant_leanvec_train_ood(X, n, Q, m, D, d, &o, A, B, NULL, err);
}

/* LeanVec-OOD for L2: trained on the data and queries centred on the data
 * mean mu (kept in s->cmu for the norms), so A and B see the spread of the
 * data rather than its offset. */
static int glq_train_ood_l2(graph_lvq_store_t *s, const float *X, size_t n, const float *Q,
			    size_t m, const float *mu, vela_err_t *err)
{
	uint32_t D = s->p.dim;
	float *Xc = malloc(n * D * sizeof(float)), *Qc = malloc(m * D * sizeof(float));
	s->cmu = malloc((size_t)D * sizeof(float));
	int rc = Xc && Qc && s->cmu ? VELA_OK : VELA_ENOMEM;
	for (size_t i = 0; rc == 0 && i < n * D; i++)
		Xc[i] = X[i] - mu[i % D];
	for (size_t i = 0; rc == 0 && i < m * D; i++)
		Qc[i] = Q[i] - mu[i % D];
	if (rc == 0) {
		memcpy(s->cmu, mu, (size_t)D * sizeof(float));
		rc = glq_train_ood(Xc, n, Qc, m, D, s->d, s->A, s->B, err);
	}
	free(Xc);
	free(Qc);
	return rc;
}

/* LeanVec (§1.2, §1.3): projections, then the primary's mean on the
 * reduced sample (each LVQ level has its own mean, §1.1). */
static int glq_train_leanvec(graph_lvq_store_t *s, const float *X, size_t n, const float *Q,
			     size_t m, float *mu, vela_err_t *err)
{
	uint32_t D = s->p.dim, d = s->d;
	size_t pd = (size_t)d * D;
	s->B = malloc(pd * sizeof(float));
	if (s->B == NULL)
		return VELA_ENOMEM;
	int rc;
	bool l2 = s->p.metric == VELA_METRIC_L2;
	if (s->p.leanvec_mode == GRAPH_LVQ_LEANVEC_OOD) {
		if ((s->A = malloc(pd * sizeof(float))) == NULL)
			return VELA_ENOMEM;
		rc = l2 ? glq_train_ood_l2(s, X, n, Q, m, mu, err)
			: glq_train_ood(X, n, Q, m, D, d, s->A, s->B, err);
	} else {
		s->A = s->B;
		rc = quant_leanvec_train_id_with(index_backend_gram, X, n, D, d, s->B, mu, err);
	}
	if (rc == 0 && l2) {
		s->Bmu = malloc((size_t)d * sizeof(float));
		s->Amu = s->A == s->B ? s->Bmu : malloc((size_t)d * sizeof(float));
		if (s->Bmu == NULL || s->Amu == NULL)
			return VELA_ENOMEM;
		quant_leanvec_project(s->B, d, D, mu, s->Bmu);
		if (s->Amu != s->Bmu)
			quant_leanvec_project(s->A, d, D, mu, s->Amu);
	}
	float *Y = rc == 0 ? malloc(n * d * sizeof(float)) : NULL;
	if (rc == 0 && Y == NULL)
		rc = VELA_ENOMEM;
	if (rc == 0)
		rc = quant_leanvec_project_batch(s->B, d, D, X, n, Y);
	for (size_t i = 0; rc == 0 && s->Bmu && i < n; i++)
		for (uint32_t j = 0; j < d; j++)
			Y[i * d + j] -= s->Bmu[j];
	float *pmu = rc == 0 ? malloc((size_t)d * sizeof(float)) : NULL;
	if (rc == 0)
		rc = pmu ? quant_mean(Y, n, d, pmu) : VELA_ENOMEM;
	if (rc == 0)
		rc = quant_lvq_create(glq_primary_kind(s->p.kind), d, pmu, &s->prim);
	free(pmu);
	free(Y);
	return rc;
}

static int glq_check(const graph_lvq_params_t *p, const float *X, size_t n, vela_err_t *err)
{
	if ((unsigned)p->kind >= GRAPH_LVQ_KIND_COUNT || X == NULL || n == 0)
		return vela_err_set(err, VELA_EINVAL, "bad compression kind or empty sample");
	if (p->metric != VELA_METRIC_L2 && p->metric != VELA_METRIC_IP &&
	    p->metric != VELA_METRIC_COSINE)
		return vela_err_set(err, VELA_EINVAL, "bad metric");
	if (p->leanvec_mode != GRAPH_LVQ_LEANVEC_ID && p->leanvec_mode != GRAPH_LVQ_LEANVEC_OOD)
		return vela_err_set(err, VELA_EINVAL, "bad LeanVec mode");
	if (p->dim < VELA_DIM_MIN || p->dim > VELA_DIM_MAX || p->reduce_dim > p->dim)
		return vela_err_set(err, VELA_EDIM, "dim %u / reduce_dim %u out of range",
				    p->dim, p->reduce_dim);
	return 0;
}

/* Prepared-query layout and the graph_store_t. */
static void glq_store_init(graph_lvq_store_t *s)
{
	size_t off = glq_round(sizeof(glq_query_t));
	s->q_off_p = off;
	off += glq_round(quant_lvq_query_size(s->prim));
	if (s->leanvec) {
		s->q_off_s = off;
		off += glq_round(quant_lvq_query_size(s->sec));
		s->q_off_y = off;
		off += glq_round((size_t)s->d * sizeof(float));
	}
	s->st = (graph_store_t){
		.ctx = s,
		.dim = s->p.dim,
		.metric = s->p.metric,
		.query_size = off,
		.prepare = glq_prepare,
		.dist = glq_dist,
		.dist_rerank = s->leanvec ? glq_dist_rerank_leanvec
			       : s->s_size ? glq_dist_rerank_lvq : NULL,
		.dist_ids = glq_dist_ids,
		.get = glq_get,
		.prefetch = glq_prefetch,
	};
}

static int glq_create_encoders(graph_lvq_store_t *s, const float *X, size_t n, const float *Q,
			       size_t m, vela_err_t *err)
{
	uint32_t D = s->p.dim;
	float *mu = malloc((size_t)D * sizeof(float));
	int rc = mu ? quant_mean(X, n, D, mu) : VELA_ENOMEM;
	if (rc == 0 && s->leanvec)
		rc = glq_train_leanvec(s, X, n, Q, m, mu, err);
	if (rc == 0 && s->leanvec)
		rc = quant_lvq_create(QUANT_LVQ8, D, mu, &s->sec);
	else if (rc == 0)
		rc = quant_lvq_create(glq_primary_kind(s->p.kind), D, mu, &s->prim);
	free(mu);
	if (rc) /* the LeanVec trainers describe their own failures */
		return err && err->code == rc ? rc
					      : vela_err_set(err, rc, "%s: training failed: %s",
							     glq_names[s->p.kind], vela_strerror(rc));
	s->p_size = quant_lvq_primary_size(s->prim);
	s->s_size = s->leanvec ? quant_lvq_code_size(s->sec)
			       : quant_lvq_code_size(s->prim) - s->p_size;
	s->enc = malloc(s->leanvec ? s->s_size : quant_lvq_code_size(s->prim));
	s->penc = malloc(quant_lvq_code_size(s->prim));
	s->red = malloc((size_t)s->d * sizeof(float));
	return s->enc && s->penc && s->red ? 0 : vela_err_set(err, VELA_ENOMEM, "out of memory");
}

int graph_lvq_store_create(const graph_lvq_params_t *p, const float *sample, size_t n_sample,
			   const float *query_sample, size_t n_q, graph_lvq_store_t **out,
			   vela_err_t *err)
{
	vela_err_clear(err);
	if (p == NULL || out == NULL)
		return vela_err_set(err, VELA_EINVAL, "NULL argument");
	int rc = glq_check(p, sample, n_sample, err);
	if (rc)
		return rc;
	graph_lvq_store_t *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return vela_err_set(err, VELA_ENOMEM, "out of memory");
	s->p = *p;
	s->leanvec = p->kind >= GRAPH_LVQ_LEANVEC4X8;
	s->d = p->dim;
	if (s->leanvec) {
		s->d = p->reduce_dim ? p->reduce_dim : QUANT_LEANVEC_DIMS_DEFAULT(p->dim);
		if (query_sample == NULL || n_q == 0)
			s->p.leanvec_mode = GRAPH_LVQ_LEANVEC_ID;
		s->p.reduce_dim = s->d;
		s->norms = s->p.leanvec_mode == GRAPH_LVQ_LEANVEC_OOD && p->metric == VELA_METRIC_L2;
	}
	s->pmetric = s->norms ? VELA_METRIC_IP : p->metric;
	if (s->leanvec && n_sample < s->d)
		rc = vela_err_set(err, VELA_EINVAL, "LeanVec needs >= %u sample rows", s->d);
	if (rc == 0)
		rc = glq_create_encoders(s, sample, n_sample, query_sample, n_q, err);
	if (rc) {
		graph_lvq_store_destroy(s);
		return rc;
	}
	glq_store_init(s);
	glq_renew(s);
	*out = s;
	return 0;
}

void graph_lvq_store_destroy(graph_lvq_store_t *s)
{
	if (s == NULL)
		return;
	quant_lvq_destroy(s->prim);
	quant_lvq_destroy(s->sec);
	if (s->A != s->B)
		free(s->A);
	free(s->B);
	if (s->Amu != s->Bmu)
		free(s->Amu);
	free(s->Bmu);
	free(s->cmu);
	free(s->pcodes);
	free(s->scodes);
	free(s->norm);
	free(s->state);
	free(s->enc);
	free(s->penc);
	free(s->red);
	free(s);
}

/* ------------------------------------------------ writers */

static int glq_realloc(void **p, size_t n)
{
	if (n == 0)
		return 0;
	void *q = realloc(*p, n);
	if (q == NULL)
		return VELA_ENOMEM;
	*p = q;
	return 0;
}

/* Room for docid: every array grows to the same capacity (doubling).
 * A failed step leaves the old arrays valid (cap is raised only at the end). */
static int glq_reserve(graph_lvq_store_t *s, uint32_t docid)
{
	if (docid < s->cap)
		return 0;
	uint64_t want = (uint64_t)s->cap * 2;
	if (want <= docid)
		want = (uint64_t)docid + 1;
	if (want < GLQ_GROW_MIN)
		want = GLQ_GROW_MIN;
	if (want > (uint64_t)GRAPH_ID_MAX + 1) /* = UINT32_MAX: fits cap */
		want = (uint64_t)GRAPH_ID_MAX + 1;
	size_t n = (size_t)want;
	if (glq_realloc((void **)&s->pcodes, n * s->p_size) ||
	    glq_realloc((void **)&s->scodes, n * s->s_size) ||
	    (s->norms && glq_realloc((void **)&s->norm, n * sizeof(float))) ||
	    glq_realloc((void **)&s->state, n))
		return VELA_ENOMEM;
	memset(s->state + s->cap, GLQ_ABSENT, n - s->cap);
	s->cap = (uint32_t)n;
	return 0;
}

/* Encode `vec` into the scratch (s->enc; the LeanVec primary into
 * s->penc), so a failure leaves the record untouched. */
static int glq_encode(graph_lvq_store_t *s, const float *vec)
{
	if (!s->leanvec)
		return quant_lvq_encode(s->prim, vec, s->enc);
	int rc = quant_lvq_encode(s->sec, vec, s->enc); /* checks finiteness */
	if (rc)
		return rc;
	quant_leanvec_project(s->B, s->d, s->p.dim, vec, s->red);
	for (uint32_t j = 0; s->Bmu && j < s->d; j++)
		s->red[j] -= s->Bmu[j];
	return quant_lvq_encode(s->prim, s->red, s->penc);
}

int graph_lvq_store_set(graph_lvq_store_t *s, uint32_t docid, const float *vec)
{
	if (s == NULL || vec == NULL || docid > GRAPH_ID_MAX)
		return VELA_EINVAL;
	int rc = glq_encode(s, vec);
	if (rc == 0)
		rc = glq_reserve(s, docid);
	if (rc)
		return rc;
	uint8_t *prec = s->pcodes + (size_t)docid * s->p_size;
	uint8_t *srec = s->s_size ? s->scodes + (size_t)docid * s->s_size : NULL;
	if (s->leanvec) {
		memcpy(prec, s->penc, s->p_size);
		memcpy(srec, s->enc, s->s_size);
	} else {
		memcpy(prec, s->enc, s->p_size);
		if (s->s_size) /* one-level kinds have no residual array */
			memcpy(srec, s->enc + s->p_size, s->s_size);
	}
	if (s->norms)
		s->norm[docid] = glq_cnorm(s, vec);
	if (docid > s->end) { /* gaps: zeroed records, unreadable by get */
		size_t gap = docid - s->end;
		memset(s->pcodes + (size_t)s->end * s->p_size, 0, gap * s->p_size);
		if (s->s_size)
			memset(s->scodes + (size_t)s->end * s->s_size, 0, gap * s->s_size);
		if (s->norms)
			memset(s->norm + s->end, 0, gap * sizeof(float));
	}
	if (docid >= s->end)
		s->end = docid + 1;
	s->count += s->state[docid] != GLQ_LIVE;
	s->state[docid] = GLQ_LIVE;
	glq_renew(s);
	return 0;
}

int graph_lvq_store_remove(graph_lvq_store_t *s, uint32_t docid)
{
	if (s == NULL)
		return VELA_EINVAL;
	if (docid >= s->end || s->state[docid] != GLQ_LIVE)
		return VELA_ENOTFOUND;
	s->state[docid] = GLQ_REMOVED;
	s->count--;
	glq_renew(s);
	return 0;
}

/* ------------------------------------------------ readers */

uint64_t graph_lvq_store_count(const graph_lvq_store_t *s)
{
	return s ? s->count : 0;
}

const graph_store_t *graph_lvq_store(const graph_lvq_store_t *s)
{
	return s ? &s->st : NULL;
}

size_t graph_lvq_store_record_size(const graph_lvq_store_t *s)
{
	return s ? s->p_size + s->s_size + (s->norms ? sizeof(float) : 0) : 0;
}

size_t graph_lvq_store_memory(const graph_lvq_store_t *s)
{
	if (s == NULL)
		return 0;
	size_t pd = (size_t)s->d * s->p.dim * sizeof(float);
	size_t m = sizeof(*s) + (size_t)s->cap * (graph_lvq_store_record_size(s) + 1);
	m += (s->B ? pd : 0) + (s->A && s->A != s->B ? pd : 0) + (s->Bmu ? s->d * 4u : 0) +
	     (s->Amu && s->Amu != s->Bmu ? s->d * 4u : 0) + (s->cmu ? s->p.dim * 4u : 0);
	m += (size_t)(s->p.dim + s->d) * sizeof(float) * 2; /* encoder means, scratch */
	return m;
}

/* ------------------------------------------------ scans (exact plans) */

/* The most precise distance the store keeps (index.h: Scans). */
static float glq_dist_best(const graph_lvq_store_t *s, const void *pq, uint32_t id)
{
	void *ctx = (void *)s;
	return s->st.dist_rerank ? s->st.dist_rerank(ctx, pq, id) : glq_dist(ctx, pq, id);
}

typedef struct glq_scan {
	const graph_lvq_store_t *s;
	const void *pq;
	/* top-k (heap) or range (growable array) */
	vela_hit_t *hits;
	uint32_t k, size;
	float radius;
	size_t len, cap;
	int rc;
} glq_scan_t;

static bool glq_visit_top(uint32_t id, void *arg)
{
	glq_scan_t *c = arg;
	if (id < c->s->end && c->s->state[id] == GLQ_LIVE)
		flat_heap_push(c->hits, &c->size, c->k,
			       (vela_hit_t){glq_dist_best(c->s, c->pq, id), id});
	return true;
}

static bool glq_visit_range(uint32_t id, void *arg)
{
	glq_scan_t *c = arg;
	if (id >= c->s->end || c->s->state[id] != GLQ_LIVE)
		return true;
	float d = glq_dist_best(c->s, c->pq, id);
	if (!(d <= c->radius))
		return true;
	if (c->len == c->cap) {
		size_t ncap = c->cap ? c->cap * 2 : 64;
		vela_hit_t *nh = realloc(c->hits, ncap * sizeof(*nh));
		if (nh == NULL) {
			c->rc = VELA_ENOMEM;
			return false;
		}
		c->hits = nh;
		c->cap = ncap;
	}
	c->hits[c->len++] = (vela_hit_t){d, id};
	return true;
}

/* Prepare q, then visit every live id (of `filter`). */
static int glq_scan_run(glq_scan_t *c, const float *q, const roaring_bitmap_t *filter,
			bool (*visit)(uint32_t, void *))
{
	const graph_lvq_store_t *s = c->s;
	void *pq = aligned_alloc(GLQ_ALIGN, glq_round(s->st.query_size));
	if (pq == NULL)
		return VELA_ENOMEM;
	int rc = glq_prepare((void *)s, q, pq);
	c->pq = pq;
	if (rc == 0 && filter)
		roaring_iterate(filter, visit, c);
	for (uint32_t id = 0; rc == 0 && !filter && id < s->end && c->rc == 0; id++)
		visit(id, c);
	free(pq);
	return rc ? rc : c->rc;
}

int graph_lvq_store_search(const graph_lvq_store_t *s, const float *q, uint32_t k,
			   const roaring_bitmap_t *filter, vela_hit_t *out, uint32_t *n_out)
{
	if (s == NULL || q == NULL || n_out == NULL || k > VELA_K_MAX || (k && out == NULL))
		return VELA_EINVAL;
	*n_out = 0;
	if (k == 0)
		return 0;
	glq_scan_t c = {.s = s, .hits = out, .k = k};
	int rc = glq_scan_run(&c, q, filter, glq_visit_top);
	if (rc == 0) {
		flat_hits_sort(out, c.size);
		*n_out = c.size;
	}
	return rc;
}

int graph_lvq_store_range(const graph_lvq_store_t *s, const float *q, float radius,
			  const roaring_bitmap_t *filter, vela_hit_t **out, size_t *n_out)
{
	if (s == NULL || q == NULL || out == NULL || n_out == NULL || isnan(radius))
		return VELA_EINVAL;
	*out = NULL;
	*n_out = 0;
	glq_scan_t c = {.s = s, .radius = radius};
	int rc = glq_scan_run(&c, q, filter, glq_visit_range);
	if (rc) {
		free(c.hits);
		return rc;
	}
	flat_hits_sort(c.hits, c.len);
	*out = c.hits;
	*n_out = c.len;
	return 0;
}

int graph_lvq_store_decode(const graph_lvq_store_t *s, uint32_t docid, float *out)
{
	if (s == NULL || out == NULL)
		return VELA_EINVAL;
	if (docid >= s->end || s->state[docid] != GLQ_LIVE)
		return VELA_ENOTFOUND;
	if (s->leanvec) {
		quant_lvq_decode(s->sec, glq_sec(s, docid), out);
		return 0;
	}
	if (s->s_size == 0) {
		quant_lvq_decode(s->prim, glq_prim(s, docid), out);
		return 0;
	}
	/* two levels stored apart: join them into one record to decode */
	uint8_t *rec = malloc(s->p_size + s->s_size);
	if (rec == NULL)
		return VELA_ENOMEM;
	memcpy(rec, glq_prim(s, docid), s->p_size);
	memcpy(rec + s->p_size, glq_sec(s, docid), s->s_size);
	quant_lvq_decode(s->prim, rec, out);
	free(rec);
	return 0;
}
