/* A CPU stand-in for gpu/gpu.h: the same C API and contracts, computed
 * naively on the host, built as libvela_gpu_fake.so and loaded by
 * index/backend_gpu.c through VELA_GPU_LIB, so the GPU backend's dlopen
 * path can be tested on a machine with no GPU: residency,
 * the candidate-list verification, per-query filters and the fallback.
 * Distances use the GEMM form in float (|q|^2 + |x|^2 - 2 q.x), as a
 * device would, so they differ from the host kernels by rounding.
 *
 * Environment: FAKE_GPU_DEVICES (default 1) devices; FAKE_GPU_FAIL=knn,
 * project or kmeans makes that call fail with VELA_EIO; FAKE_GPU_K_CAP
 * returns at most that many candidates per query (a device that truncates
 * its lists: the backend must notice and answer on the CPU). */
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
