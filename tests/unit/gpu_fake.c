/* A CPU stand-in for gpu/gpu.h: the same C API and contracts, computed
 * naively on the host, built as libvela_gpu_fake.so and loaded by
 * common/gpulib.c through VELA_GPU_LIB, so the GPU backend's dlopen path
 * (index/backend_gpu.c) and the GPU text encoder's (embed/gpu.c) can be
 * tested on a machine with no GPU: residency, the candidate-list
 * verification, per-query filters, the encoder's weight upload and packing,
 * and the fallbacks.
 * Distances use the GEMM form in float (|q|^2 + |x|^2 - 2 q.x), as a
 * device would, so they differ from the host kernels by rounding.
 *
 * Environment: FAKE_GPU_DEVICES (default 1) devices; FAKE_GPU_FAIL=knn,
 * project, kmeans, gram, parts_create, parts_scan, bert_create, bert_set or
 * bert_encode makes that call fail with VELA_EIO (read at every call);
 * FAKE_GPU_K_CAP returns at most that many candidates per query or pair (a
 * device that truncates its lists: the backend must notice and answer on
 * the CPU). */
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/gpu.h"

/* The fake is a shared library loaded with dlopen (VELA_GPU_LIB), so it
 * cannot call into the test binary: its own error filler. */
static int fake_err(vela_err_t *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fake_err(vela_err_t *err, int code, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		err->code = code;
		vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		va_end(ap);
	}
	return code;
}

struct gpu_ctx {
	char name[64];
};

struct gpu_matrix {
	gpu_matrix_params_t p;
	float *rows, *norms;
	uint64_t n, cap;
};

static int fake_fails(const char *what, vela_err_t *err)
{
	const char *f = getenv("FAKE_GPU_FAIL");
	if (f && strstr(f, what))
		return fake_err(err, VELA_EIO, "fake device error in %s", what);
	return 0;
}

int gpu_device_count(void)
{
	const char *s = getenv("FAKE_GPU_DEVICES");
	return s ? atoi(s) : 1;
}

int gpu_ctx_open(int device, gpu_ctx_t **out, vela_err_t *err)
{
	if (device < 0 || device >= gpu_device_count())
		return fake_err(err, VELA_EUNSUPPORTED, "no such device");
	*out = calloc(1, sizeof(**out));
	if (*out == NULL)
		return VELA_ENOMEM;
	snprintf((*out)->name, sizeof((*out)->name), "Fake GPU %d (host)", device);
	return 0;
}

void gpu_ctx_close(gpu_ctx_t *ctx)
{
	free(ctx);
}

const char *gpu_ctx_name(const gpu_ctx_t *ctx)
{
	return ctx->name;
}

int gpu_matrix_create(gpu_ctx_t *ctx, const gpu_matrix_params_t *p, gpu_matrix_t **out,
		      vela_err_t *err)
{
	if (p->dim < 1 || p->dim > GPU_DIM_MAX || p->elem != GPU_ELEM_F32)
		return fake_err(err, VELA_EINVAL, "fake: bad matrix parameters");
	*out = calloc(1, sizeof(**out));
	if (*out == NULL)
		return VELA_ENOMEM;
	(*out)->p = *p;
	return 0;
}

int gpu_matrix_append(gpu_matrix_t *m, const float *rows, uint64_t n, vela_err_t *err)
{
	if (m->n + n > m->cap) {
		uint64_t cap = m->cap * 2 > m->n + n ? m->cap * 2 : m->n + n;
		float *r = realloc(m->rows, cap * m->p.dim * sizeof(float));
		if (r)
			m->rows = r;
		float *nn = realloc(m->norms, cap * sizeof(float));
		if (nn)
			m->norms = nn;
		if (r == NULL || nn == NULL)
			return fake_err(err, VELA_ENOMEM, "fake: out of memory");
		m->cap = cap;
	}
	memcpy(m->rows + m->n * m->p.dim, rows, n * m->p.dim * sizeof(float));
	for (uint64_t i = 0; i < n; i++) {
		float s = 0;
		for (uint32_t j = 0; j < m->p.dim; j++)
			s += rows[i * m->p.dim + j] * rows[i * m->p.dim + j];
		m->norms[m->n + i] = s;
	}
	m->n += n;
	return 0;
}

uint64_t gpu_matrix_rows(const gpu_matrix_t *m)
{
	return m->n;
}

size_t gpu_matrix_bytes(const gpu_matrix_t *m)
{
	return m->n * (m->p.dim + 1) * sizeof(float);
}

void gpu_matrix_free(gpu_matrix_t *m)
{
	if (m == NULL)
		return;
	free(m->rows);
	free(m->norms);
	free(m);
}

typedef struct {
	float d;
	uint32_t id;
} fake_hit_t;

static int fake_hit_cmp(const void *a, const void *b)
{
	const fake_hit_t *x = a, *y = b;
	return x->d < y->d ? -1 : x->d > y->d ? 1 : (x->id > y->id) - (x->id < y->id);
}

int gpu_knn(gpu_matrix_t *m, const float *queries, uint32_t nq, const gpu_knn_params_t *p,
	    uint32_t *ids, float *dists, vela_err_t *err)
{
	if (fake_fails("knn", err))
		return VELA_EIO;
	if (p->k < 1 || p->k > GPU_K_MAX)
		return fake_err(err, VELA_EINVAL, "fake: bad k");
	uint64_t end = p->row_end ? p->row_end : m->n;
	const char *cap_s = getenv("FAKE_GPU_K_CAP");
	uint32_t cap = cap_s ? (uint32_t)atoi(cap_s) : p->k;
	fake_hit_t *h = malloc((end + 1) * sizeof(*h));
	if (h == NULL)
		return VELA_ENOMEM;
	for (uint32_t i = 0; i < nq; i++) {
		const float *q = queries + (size_t)i * m->p.dim;
		float qn = 0;
		for (uint32_t j = 0; j < m->p.dim; j++)
			qn += q[j] * q[j];
		uint64_t c = 0;
		for (uint64_t r = p->row_begin; r < end; r++) {
			if (p->filter && !((p->filter[r >> 6] >> (r & 63)) & 1))
				continue;
			float dot = 0;
			for (uint32_t j = 0; j < m->p.dim; j++)
				dot += q[j] * m->rows[r * m->p.dim + j];
			float d = m->p.metric == GPU_METRIC_L2 ? qn + m->norms[r] - 2 * dot : 1 - dot;
			h[c++] = (fake_hit_t){d, (uint32_t)r};
		}
		qsort(h, c, sizeof(*h), fake_hit_cmp);
		for (uint32_t j = 0; j < p->k; j++) {
			bool ok = j < c && j < cap;
			ids[(size_t)i * p->k + j] = ok ? h[j].id : UINT32_MAX;
			dists[(size_t)i * p->k + j] = ok ? h[j].d : INFINITY;
		}
	}
	free(h);
	return 0;
}

int gpu_project(gpu_ctx_t *ctx, const float *X, uint64_t n, uint32_t din, const float *P,
		uint32_t dout, float *Y, vela_err_t *err)
{
	if (fake_fails("project", err))
		return VELA_EIO;
	for (uint64_t i = 0; i < n; i++)
		for (uint32_t j = 0; j < dout; j++) {
			double s = 0;
			for (uint32_t t = 0; t < din; t++)
				s += (double)X[i * din + t] * P[(size_t)t * dout + j];
			Y[i * dout + j] = (float)s;
		}
	return 0;
}

int gpu_covariance(gpu_ctx_t *ctx, const float *X, uint64_t n, uint32_t d, float *mu, float *C,
		   vela_err_t *err)
{
	return fake_err(err, VELA_EUNSUPPORTED, "fake: no covariance");
}

int gpu_kmeans_step(gpu_ctx_t *ctx, const float *X, uint64_t n, uint32_t d, float *centroids,
		    uint32_t kc, uint32_t *assign, double *inertia, vela_err_t *err)
{
	if (fake_fails("kmeans", err))
		return VELA_EIO;
	double *sum = calloc((size_t)kc * d, sizeof(double)), in = 0;
	uint64_t *cnt = calloc(kc, sizeof(uint64_t));
	if (sum == NULL || cnt == NULL) {
		free(sum);
		free(cnt);
		return VELA_ENOMEM;
	}
	for (uint64_t i = 0; i < n; i++) {
		double best = INFINITY;
		uint32_t bi = 0;
		for (uint32_t c = 0; c < kc; c++) {
			double s = 0;
			for (uint32_t j = 0; j < d; j++) {
				double t = (double)X[i * d + j] - centroids[(size_t)c * d + j];
				s += t * t;
			}
			if (s < best) {
				best = s;
				bi = c;
			}
		}
		if (assign)
			assign[i] = bi;
		in += best;
		cnt[bi]++;
		for (uint32_t j = 0; j < d; j++)
			sum[(size_t)bi * d + j] += X[i * d + j];
	}
	for (uint32_t c = 0; c < kc; c++)
		for (uint32_t j = 0; cnt[c] && j < d; j++)
			centroids[(size_t)c * d + j] = (float)(sum[(size_t)c * d + j] / (double)cnt[c]);
	if (inertia)
		*inertia = in;
	free(sum);
	free(cnt);
	return 0;
}

/* gpu_gram's contract row by row in double (the device sums in another
 * order); the lower triangle is computed and mirrored, as a device would
 * leave one triangle to copy. */
int gpu_gram(gpu_ctx_t *ctx, const float *X, uint64_t n, uint32_t d, const double *mu, double *G,
	     vela_err_t *err)
{
	if (!ctx || !G || (n && !X) || d < 1 || d > GPU_DIM_MAX)
		return fake_err(err, VELA_EINVAL, "gpu gram: bad arguments");
	if (fake_fails("gram", err))
		return VELA_EIO;
	double *y = malloc(d * sizeof(double));
	if (y == NULL)
		return fake_err(err, VELA_EIO, "fake gram: out of memory");
	memset(G, 0, (size_t)d * d * sizeof(double));
	for (uint64_t r = 0; r < n; r++) {
		for (uint32_t j = 0; j < d; j++)
			y[j] = (double)X[r * d + j] - (mu ? mu[j] : 0.0);
		for (uint32_t a = 0; a < d; a++)
			for (uint32_t b = 0; b <= a; b++)
				G[(size_t)a * d + b] += y[a] * y[b];
	}
	for (uint32_t a = 0; a < d; a++)
		for (uint32_t b = a + 1; b < d; b++)
			G[(size_t)a * d + b] = G[(size_t)b * d + a];
	free(y);
	return 0;
}

/* ------------------------------------------------------------- partitions */

/* gpu_parts_*: the clusters copied back to back; a scan ranks each pair's
 * allowed rows by a direct distance summed in double and rounded to float
 * (a device sums in another order: it differs from the host kernels by
 * rounding), ties by the smaller row. FAKE_GPU_FAIL=parts_create or
 * parts_scan fails that call; FAKE_GPU_K_CAP truncates a pair's list as it
 * does gpu_knn's. The counters below let a test see uploads and frees
 * (dlsym on the loaded library). */

extern unsigned fake_gpu_parts_created, fake_gpu_parts_freed, fake_gpu_parts_scans;
unsigned fake_gpu_parts_created, fake_gpu_parts_freed, fake_gpu_parts_scans;

struct gpu_parts {
	float *rows;
	uint64_t *off;
	uint64_t n;
	uint32_t dim, ncl;
	gpu_metric_t metric;
	uint32_t *mark; /* per row of the widest cluster: allowed by this pair */
};

static int fake_parts_args(const float *rows, uint64_t n, uint32_t dim, const uint64_t *off,
			   uint32_t ncl, gpu_metric_t metric, vela_err_t *err)
{
	if (dim == 0 || dim > GPU_DIM_MAX || (metric != GPU_METRIC_L2 && metric != GPU_METRIC_IP) ||
	    off == NULL || (n && rows == NULL) || off[0] != 0 || off[ncl] != n)
		return fake_err(err, VELA_EINVAL, "fake parts: bad arguments");
	for (uint32_t c = 0; c < ncl; c++)
		if (off[c + 1] < off[c] || off[c + 1] - off[c] > GPU_PART_CLUSTER_ROWS_MAX)
			return fake_err(err, VELA_EINVAL, "fake parts: bad offsets at %u", c);
	return 0;
}

int gpu_parts_create(gpu_ctx_t *ctx, const float *rows, uint64_t n, uint32_t dim,
		     const uint64_t *offsets, uint32_t nclusters, gpu_metric_t metric,
		     gpu_parts_t **out, vela_err_t *err)
{
	if (ctx == NULL || out == NULL)
		return fake_err(err, VELA_EINVAL, "fake parts: NULL");
	int rc = fake_parts_args(rows, n, dim, offsets, nclusters, metric, err);
	if (rc || (rc = fake_fails("parts_create", err)))
		return rc;
	gpu_parts_t *g = calloc(1, sizeof(*g));
	uint64_t most = 0;
	for (uint32_t c = 0; c < nclusters; c++)
		most = offsets[c + 1] - offsets[c] > most ? offsets[c + 1] - offsets[c] : most;
	if (g) {
		g->rows = malloc((n ? n : 1) * dim * sizeof(float));
		g->off = malloc((nclusters + 1) * sizeof(uint64_t));
		g->mark = calloc(most + 1, sizeof(uint32_t));
	}
	if (g == NULL || !g->rows || !g->off || !g->mark) {
		gpu_parts_free(g);
		return fake_err(err, VELA_ENOMEM, "fake parts: out of memory");
	}
	memcpy(g->rows, rows, n * dim * sizeof(float));
	memcpy(g->off, offsets, (nclusters + 1) * sizeof(uint64_t));
	g->n = n;
	g->dim = dim;
	g->ncl = nclusters;
	g->metric = metric;
	fake_gpu_parts_created++;
	*out = g;
	return 0;
}

static float fake_part_dist(const gpu_parts_t *g, const float *q, const float *x)
{
	double s = 0;
	for (uint32_t j = 0; j < g->dim; j++)
		s += g->metric == GPU_METRIC_L2 ? ((double)q[j] - x[j]) * ((double)q[j] - x[j])
						: (double)q[j] * x[j];
	return g->metric == GPU_METRIC_L2 ? (float)s : (float)(1.0 - s);
}

/* A pair's filter: in range, every row inside its cluster. */
static int fake_pair_check(const gpu_parts_t *g, uint32_t nq, const gpu_part_pair_t *p,
			   const uint32_t *filt, uint32_t nfilt, uint32_t i, vela_err_t *err)
{
	if (p->cluster >= g->ncl || p->query >= nq)
		return fake_err(err, VELA_EINVAL, "fake parts: pair %u out of range", i);
	if (p->filter_len == GPU_PART_ALL_ROWS)
		return 0;
	uint64_t rows = g->off[p->cluster + 1] - g->off[p->cluster];
	if ((uint64_t)p->filter_off + p->filter_len > nfilt || p->filter_len > rows)
		return fake_err(err, VELA_EINVAL, "fake parts: pair %u's filter out of range", i);
	for (uint32_t j = 0; j < p->filter_len; j++)
		if (filt[p->filter_off + j] >= rows)
			return fake_err(err, VELA_EINVAL, "fake parts: pair %u's filter row", i);
	return 0;
}

/* One pair's k best into ids / dists (h: scratch for the cluster's rows). */
static void fake_pair_scan(gpu_parts_t *g, const float *q, const gpu_part_pair_t *p,
			   const uint32_t *filt, uint32_t k, fake_hit_t *h, uint32_t *ids,
			   float *dists)
{
	uint64_t r0 = g->off[p->cluster], rows = g->off[p->cluster + 1] - r0, c = 0;
	bool all = p->filter_len == GPU_PART_ALL_ROWS;
	for (uint32_t j = 0; !all && j < p->filter_len; j++)
		g->mark[filt[p->filter_off + j]] = 1;
	for (uint64_t r = 0; r < rows; r++) {
		if (!all && !g->mark[r])
			continue;
		float d = fake_part_dist(g, q, g->rows + (r0 + r) * g->dim);
		h[c++] = (fake_hit_t){isnan(d) ? INFINITY : d, (uint32_t)r};
	}
	for (uint32_t j = 0; !all && j < p->filter_len; j++)
		g->mark[filt[p->filter_off + j]] = 0;
	qsort(h, c, sizeof(*h), fake_hit_cmp);
	const char *cap_s = getenv("FAKE_GPU_K_CAP");
	uint32_t cap = cap_s ? (uint32_t)atoi(cap_s) : k;
	for (uint32_t j = 0; j < k; j++) {
		bool ok = j < c && j < cap;
		ids[j] = ok ? h[j].id : UINT32_MAX;
		dists[j] = ok ? h[j].d : INFINITY;
	}
}

int gpu_parts_scan(gpu_parts_t *parts, const float *queries, uint32_t nq,
		   const gpu_part_pair_t *pairs, uint32_t npairs, const uint32_t *filt,
		   uint32_t nfilt, uint32_t k, uint32_t *out_ids, float *out_dists,
		   vela_err_t *err)
{
	if (parts == NULL || k < 1 || k > GPU_PART_K_MAX || (npairs && (!pairs || !queries)))
		return fake_err(err, VELA_EINVAL, "fake parts: bad k or NULL");
	for (uint32_t i = 0; i < npairs; i++) {
		int rc = fake_pair_check(parts, nq, &pairs[i], filt, nfilt, i, err);
		if (rc)
			return rc;
	}
	if (fake_fails("parts_scan", err))
		return VELA_EIO;
	fake_hit_t *h = malloc((parts->n + 1) * sizeof(*h));
	if (h == NULL)
		return fake_err(err, VELA_ENOMEM, "fake parts: out of memory");
	for (uint32_t i = 0; i < npairs; i++)
		fake_pair_scan(parts, queries + (size_t)pairs[i].query * parts->dim, &pairs[i], filt,
			       k, h, out_ids + (size_t)i * k, out_dists + (size_t)i * k);
	free(h);
	fake_gpu_parts_scans++;
	return 0;
}

void gpu_parts_last_times(const gpu_parts_t *parts, float ms[3])
{
	(void)parts;
	ms[0] = ms[1] = ms[2] = 0;
}

size_t gpu_parts_bytes(const gpu_parts_t *parts)
{
	return parts ? (size_t)parts->n * parts->dim * sizeof(float) : 0;
}

void gpu_parts_free(gpu_parts_t *parts)
{
	if (parts == NULL)
		return;
	if (parts->rows)
		fake_gpu_parts_freed++;
	free(parts->rows);
	free(parts->off);
	free(parts->mark);
	free(parts);
}

/* ---------------------------------------------------------------- encoder */

/* A naive BERT (post-LN, erf-GELU, mean pooling, L2 normalisation) in plain
 * C with double accumulators, one sequence at a time: the GPU encoder's
 * contract, independent of embed/'s CPU code (HF modeling_bert, written out
 * again). FAKE_GPU_FAIL=bert_create, bert_set or bert_encode makes that call
 * fail with VELA_EIO. */

enum { FB_WORD, FB_POS, FB_TYPE, FB_ELN_G, FB_ELN_B, FB_EMB_N };
static const char *const fb_emb_names[FB_EMB_N] = {
	"embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
	"embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight",
	"embeddings.LayerNorm.bias"};

enum {
	FB_QW, FB_QB, FB_KW, FB_KB, FB_VW, FB_VB, FB_OW, FB_OB, FB_LN1G, FB_LN1B,
	FB_IW, FB_IB, FB_O2W, FB_O2B, FB_LN2G, FB_LN2B, FB_LAYER_N
};
static const char *const fb_layer_names[FB_LAYER_N] = {
	"attention.self.query.weight", "attention.self.query.bias",
	"attention.self.key.weight", "attention.self.key.bias",
	"attention.self.value.weight", "attention.self.value.bias",
	"attention.output.dense.weight", "attention.output.dense.bias",
	"attention.output.LayerNorm.weight", "attention.output.LayerNorm.bias",
	"intermediate.dense.weight", "intermediate.dense.bias",
	"output.dense.weight", "output.dense.bias",
	"output.LayerNorm.weight", "output.LayerNorm.bias"};

struct gpu_bert {
	gpu_bert_config_t c;
	float *emb[FB_EMB_N];
	float *(*layer)[FB_LAYER_N];
	size_t bytes;
};

static size_t fb_emb_size(const gpu_bert_config_t *c, int i)
{
	size_t h = c->hidden;
	return i == FB_WORD ? c->vocab * h : i == FB_POS ? c->max_pos * h
				       : i == FB_TYPE ? c->type_vocab * h : h;
}

static size_t fb_layer_size(const gpu_bert_config_t *c, int i)
{
	size_t h = c->hidden, f = c->intermediate;
	switch (i) {
	case FB_QW: case FB_KW: case FB_VW: case FB_OW: return h * h;
	case FB_IW: case FB_O2W: return h * f;
	case FB_IB: return f;
	default: return h;
	}
}

int gpu_bert_create(gpu_ctx_t *ctx, const gpu_bert_config_t *cfg, gpu_bert_t **out,
		    vela_err_t *err)
{
	if (fake_fails("bert_create", err))
		return VELA_EIO;
	const gpu_bert_config_t *c = cfg;
	if (c->hidden < 8 || c->hidden > GPU_BERT_HIDDEN_MAX || c->hidden % 8 || c->heads == 0 ||
	    c->hidden % c->heads || c->layers < 1 || c->layers > GPU_BERT_LAYERS_MAX ||
	    c->intermediate % 8 || c->intermediate == 0 || c->vocab == 0 || c->max_pos < 1 ||
	    c->max_pos > GPU_BERT_POS_MAX || c->type_vocab == 0 || !(c->ln_eps > 0))
		return fake_err(err, VELA_EINVAL, "fake: bad encoder shape");
	if (c->hidden / c->heads != 32 && c->hidden / c->heads != 64)
		return fake_err(err, VELA_EUNSUPPORTED, "fake: head size %u", c->hidden / c->heads);
	gpu_bert_t *b = calloc(1, sizeof(*b));
	if (b == NULL || (b->layer = calloc(c->layers, sizeof(*b->layer))) == NULL) {
		free(b);
		return fake_err(err, VELA_ENOMEM, "fake: out of memory");
	}
	b->c = *c;
	*out = b;
	return 0;
}

int gpu_bert_set_tensor(gpu_bert_t *b, const char *name, const float *host, size_t n,
			vela_err_t *err)
{
	if (fake_fails("bert_set", err))
		return VELA_EIO;
	char nm[256];
	if (strncmp(name, "bert.", 5) == 0)
		name += 5;
	snprintf(nm, sizeof(nm), "%s", name);
	size_t l = strlen(nm);
	if (l > 6 && strcmp(nm + l - 6, ".gamma") == 0)
		strcpy(nm + l - 6, ".weight");
	else if (l > 5 && strcmp(nm + l - 5, ".beta") == 0)
		strcpy(nm + l - 5, ".bias");
	float **slot = NULL;
	size_t want = 0;
	for (int i = 0; i < FB_EMB_N && !slot; i++)
		if (strcmp(nm, fb_emb_names[i]) == 0) {
			slot = &b->emb[i];
			want = fb_emb_size(&b->c, i);
		}
	unsigned li;
	int used = 0;
	if (!slot && sscanf(nm, "encoder.layer.%u.%n", &li, &used) == 1 && used > 0 &&
	    li < b->c.layers)
		for (int i = 0; i < FB_LAYER_N && !slot; i++)
			if (strcmp(nm + used, fb_layer_names[i]) == 0) {
				slot = &b->layer[li][i];
				want = fb_layer_size(&b->c, i);
			}
	if (slot == NULL)
		return fake_err(err, VELA_ENOTFOUND, "fake: tensor %s not used", name);
	if (n != want)
		return fake_err(err, VELA_EINVAL, "fake: tensor %s has %zu values, not %zu", name, n,
				want);
	float *p = malloc(n * sizeof(float));
	if (p == NULL)
		return fake_err(err, VELA_ENOMEM, "fake: out of memory");
	memcpy(p, host, n * sizeof(float));
	if (*slot == NULL)
		b->bytes += n * sizeof(float);
	free(*slot);
	*slot = p;
	return 0;
}

/* y[t] = x[t] W^T + bias, W [out, in]; double sums. */
static void fb_linear(const float *x, size_t len, size_t in, const float *w, const float *bias,
		      size_t out, float *y)
{
	for (size_t t = 0; t < len; t++)
		for (size_t o = 0; o < out; o++) {
			double s = bias[o];
			for (size_t i = 0; i < in; i++)
				s += (double)x[t * in + i] * w[o * in + i];
			y[t * out + o] = (float)s;
		}
}

/* x[t] = LN(x[t] + add[t]) * g + b (add may be NULL); biased variance. */
static void fb_layernorm(float *x, const float *add, size_t len, size_t h, const float *g,
			 const float *b, double eps)
{
	for (size_t t = 0; t < len; t++) {
		float *r = x + t * h;
		double mean = 0, var = 0;
		for (size_t i = 0; i < h; i++) {
			if (add)
				r[i] += add[t * h + i];
			mean += r[i];
		}
		mean /= (double)h;
		for (size_t i = 0; i < h; i++)
			var += (r[i] - mean) * (r[i] - mean);
		double inv = 1.0 / sqrt(var / (double)h + eps);
		for (size_t i = 0; i < h; i++)
			r[i] = (float)((r[i] - mean) * inv * g[i] + b[i]);
	}
}

/* One sequence of `len` tokens into out[hidden]; scratch as below. */
static int fb_sequence(const gpu_bert_t *b, const uint32_t *tok, size_t len, float *out)
{
	const gpu_bert_config_t *c = &b->c;
	size_t h = c->hidden, f = c->intermediate, heads = c->heads, hd = h / heads;
	float *x = malloc(len * h * sizeof(float)), *q = malloc(len * h * sizeof(float));
	float *k = malloc(len * h * sizeof(float)), *v = malloc(len * h * sizeof(float));
	float *ctx = malloc(len * h * sizeof(float)), *a = malloc(len * h * sizeof(float));
	float *big = malloc(len * f * sizeof(float));
	double *sc = malloc(len * sizeof(double));
	int rc = x && q && k && v && ctx && a && big && sc ? 0 : VELA_ENOMEM;
	for (size_t t = 0; rc == 0 && t < len; t++)
		for (size_t i = 0; i < h; i++)
			x[t * h + i] = (float)((double)b->emb[FB_WORD][tok[t] * h + i] +
					       b->emb[FB_POS][t * h + i] + b->emb[FB_TYPE][i]);
	if (rc == 0)
		fb_layernorm(x, NULL, len, h, b->emb[FB_ELN_G], b->emb[FB_ELN_B], c->ln_eps);
	for (uint32_t l = 0; rc == 0 && l < c->layers; l++) {
		float *const *L = b->layer[l];
		fb_linear(x, len, h, L[FB_QW], L[FB_QB], h, q);
		fb_linear(x, len, h, L[FB_KW], L[FB_KB], h, k);
		fb_linear(x, len, h, L[FB_VW], L[FB_VB], h, v);
		double scale = 1.0 / sqrt((double)hd);
		for (size_t hh = 0; hh < heads; hh++)
			for (size_t i = 0; i < len; i++) {
				double mx = -INFINITY, sum = 0;
				for (size_t j = 0; j < len; j++) {
					double s = 0;
					for (size_t d = 0; d < hd; d++)
						s += (double)q[i * h + hh * hd + d] *
						     k[j * h + hh * hd + d];
					sc[j] = s * scale;
					mx = sc[j] > mx ? sc[j] : mx;
				}
				for (size_t j = 0; j < len; j++)
					sum += sc[j] = exp(sc[j] - mx);
				for (size_t d = 0; d < hd; d++) {
					double s = 0;
					for (size_t j = 0; j < len; j++)
						s += sc[j] * v[j * h + hh * hd + d];
					ctx[i * h + hh * hd + d] = (float)(s / sum);
				}
			}
		fb_linear(ctx, len, h, L[FB_OW], L[FB_OB], h, a);
		fb_layernorm(a, x, len, h, L[FB_LN1G], L[FB_LN1B], c->ln_eps);
		fb_linear(a, len, h, L[FB_IW], L[FB_IB], f, big);
		for (size_t i = 0; i < len * f; i++)
			big[i] = (float)(0.5 * big[i] * (1.0 + erf(big[i] / sqrt(2.0))));
		fb_linear(big, len, f, L[FB_O2W], L[FB_O2B], h, x);
		fb_layernorm(x, a, len, h, L[FB_LN2G], L[FB_LN2B], c->ln_eps);
	}
	if (rc == 0) {
		double nrm = 0, *acc = calloc(h, sizeof(double));
		if (acc == NULL)
			rc = VELA_ENOMEM;
		for (size_t t = 0; acc && t < len; t++)
			for (size_t i = 0; i < h; i++)
				acc[i] += x[t * h + i];
		for (size_t i = 0; acc && i < h; i++) {
			acc[i] /= (double)len;
			nrm += acc[i] * acc[i];
		}
		nrm = sqrt(nrm) > 1e-12 ? sqrt(nrm) : 1e-12;
		for (size_t i = 0; acc && i < h; i++)
			out[i] = (float)(acc[i] / nrm);
		free(acc);
	}
	free(x), free(q), free(k), free(v), free(ctx), free(a), free(big), free(sc);
	return rc;
}

int gpu_bert_encode(gpu_bert_t *b, const uint32_t *tokens, const uint32_t *seq_offsets,
		    uint32_t n_seqs, float *out, vela_err_t *err)
{
	if (fake_fails("bert_encode", err))
		return VELA_EIO;
	for (int i = 0; i < FB_EMB_N; i++)
		if (b->emb[i] == NULL)
			return fake_err(err, VELA_EINVAL, "fake: tensor %s never set", fb_emb_names[i]);
	for (uint32_t l = 0; l < b->c.layers; l++)
		for (int i = 0; i < FB_LAYER_N; i++)
			if (b->layer[l][i] == NULL)
				return fake_err(err, VELA_EINVAL, "fake: tensor encoder.layer.%u.%s "
						"never set", l, fb_layer_names[i]);
	for (uint32_t s = 0; s < n_seqs; s++) {
		uint32_t len = seq_offsets[s + 1] - seq_offsets[s];
		if (seq_offsets[s + 1] < seq_offsets[s] || len < 1 || len > b->c.max_pos)
			return fake_err(err, VELA_EINVAL, "fake: sequence %u has %u tokens", s, len);
		for (uint32_t t = seq_offsets[s]; t < seq_offsets[s + 1]; t++)
			if (tokens[t] >= b->c.vocab)
				return fake_err(err, VELA_EINVAL, "fake: token id %u", tokens[t]);
	}
	for (uint32_t s = 0; s < n_seqs; s++) {
		int rc = fb_sequence(b, tokens + seq_offsets[s], seq_offsets[s + 1] - seq_offsets[s],
				     out + (size_t)s * b->c.hidden);
		if (rc)
			return fake_err(err, rc, "fake: out of memory");
	}
	return 0;
}

size_t gpu_bert_bytes(const gpu_bert_t *b)
{
	return b->bytes;
}

void gpu_bert_free(gpu_bert_t *b)
{
	if (b == NULL)
		return;
	for (int i = 0; i < FB_EMB_N; i++)
		free(b->emb[i]);
	for (uint32_t l = 0; l < b->c.layers; l++)
		for (int i = 0; i < FB_LAYER_N; i++)
			free(b->layer[l][i]);
	free(b->layer);
	free(b);
}
