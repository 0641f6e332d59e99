/* The GPU backend (index.h BACKEND): gpu/gpu.h behind the index_backend_t
 * table. gpu/ is a shared library (libvela_gpu.so, CUDA + cuBLAS) loaded
 * with dlopen on first use (DESIGN.md §11), so one binary starts on hosts
 * with no CUDA libraries at all: without the library, or without a device,
 * the GPU backend reports VELA_EUNSUPPORTED and everything runs on the CPU.
 * Search order: $VELA_GPU_LIB (only that), then libvela_gpu.so beside the
 * executable, then the dynamic linker's own search (common/gpulib.h, the
 * loader embed/ shares, with the process's one context).
 *
 * kNN. Rows are uploaded as F32 (F16 rows decoded: exact) and stay
 * resident, keyed by uid, until their generation changes (then the whole
 * block is uploaded again on next use), index_backend_forget, eviction of
 * the least recently used of INDEX_BACKEND_GPU_RESIDENT_MAX blocks, or gpu
 * no. The device nominates kk = min(2k + 64, GPU_K_MAX) candidates per
 * query (GEMM form, F32); the host re-scores them with the quant/ direct
 * kernel, as flat_batch.c re-scores its pool. The answer is exact when the
 * list provably holds every row that can reach the top k: by flat_batch.c's
 * argument, every such row has a device distance <= T + 2e (T the k-th
 * device distance), so it suffices that the list is shorter than kk (it
 * holds every allowed row) or its last distance exceeds T + 2e (we take 4e
 * for margin), and a short list must hold as many rows as the filter
 * allows. A query that fails the test is answered by the CPU engine.
 * Per-query filters: queries with the same filter share one gpu_knn call
 * with the filter as a bitmap (ANDed with the presence bits). */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "index/backend_impl.h"

static atomic_uint backend_faults;

void index_backend_fault_inject(uint32_t n)
{
	atomic_store(&backend_faults, n);
}


#include "common/gpulib.h"

/* gpu/gpu.h's functions, resolved by the shared loader (common/gpulib.h):
 * NULL until loaded. */
static const vela_gpulib_t *gl;

/* Load the library once (caller holds gk.mu); 0 when it is there. */
static int gl_load_locked(void)
{
	if (gl == NULL)
		gl = vela_gpulib_load();
	return gl ? 0 : -1;
}

/* Host staging for uploads: rows per gpu_matrix_append, about 32 MiB. */
#define GK_UPLOAD_BYTES (32u << 20)
/* Result slots (queries x kk) of one gpu_knn call: bounds host scratch. */
#define GK_RESULT_SLOTS (4u << 20)

typedef struct {
	uint64_t uid, generation, n, last_use;
	uint32_t dim;
	gpu_metric_t metric;
	float norm_max; /* bound on |x|^2 of the present rows uploaded */
	gpu_matrix_t *m;
} gk_block_t;

/* A layout's clusters resident as one gpu_parts_t (the batched scan). */
typedef struct {
	uint64_t uid, generation, n, last_use;
	uint32_t n_cl, dim;
	gpu_metric_t metric;
	float *norm_max; /* n_cl: bound on |x|^2 of each cluster's rows uploaded */
	gpu_parts_t *g;
} gp_entry_t;

static struct {
	pthread_mutex_t mu;
	int devices; /* -1 until asked */
	gpu_ctx_t *ctx;
	char name[128];
	gk_block_t res[INDEX_BACKEND_GPU_RESIDENT_MAX];
	uint32_t n_res;
	gp_entry_t parts[INDEX_BACKEND_GPU_PARTS_MAX];
	uint32_t n_parts;
	uint64_t clock;
} gk = {.mu = PTHREAD_MUTEX_INITIALIZER, .devices = -1};

/* 1 when libvela_gpu.so is loaded (INFO gpu_library). */
int backend_gpu_built(void)
{
	pthread_mutex_lock(&gk.mu);
	int ok = gl_load_locked() == 0;
	pthread_mutex_unlock(&gk.mu);
	return ok;
}

static int gk_devices_locked(void)
{
	if (gk.devices < 0)
		gk.devices = gl_load_locked() == 0 ? vela_gpulib_devices() : 0;
	return gk.devices;
}

int index_backend_gpu_devices(void)
{
	pthread_mutex_lock(&gk.mu);
	int n = gk_devices_locked();
	pthread_mutex_unlock(&gk.mu);
	return n;
}

static int gk_open_locked(vela_err_t *err)
{
	if (gk.ctx)
		return 0;
	if (gk_devices_locked() == 0)
		return vela_err_set(err, VELA_EUNSUPPORTED, "no CUDA device");
	const char *name;
	int rc = vela_gpulib_ctx(&gk.ctx, &name, err); /* the process's, shared with embed/ */
	if (rc) {
		gk.ctx = NULL;
		return rc;
	}
	snprintf(gk.name, sizeof(gk.name), "%s", name);
	return 0;
}

/* A gpu_* failure: EUNSUPPORTED from the library mid-call means the device
 * went away, a device error like any other (the wrapper counts those). */
static int gk_failed(int rc)
{
	return rc == VELA_EUNSUPPORTED ? VELA_EIO : rc;
}

/* Consume one injected fault (index_backend_fault_inject). */
static int gk_fault(vela_err_t *err)
{
	unsigned n = atomic_load(&backend_faults);
	while (n > 0 && !atomic_compare_exchange_weak(&backend_faults, &n, n - 1))
		;
	return n > 0 ? vela_err_set(err, VELA_EIO, "injected GPU fault") : 0;
}

/* ------------------------------------------------ resident blocks */

static void gk_block_drop_locked(uint32_t i)
{
	gl->matrix_free(gk.res[i].m);
	gk.res[i] = gk.res[--gk.n_res];
}

static void gp_entry_free(gp_entry_t *e)
{
	if (e->g)
		gl->parts_free(e->g);
	free(e->norm_max);
	e->g = NULL;
	e->norm_max = NULL;
}

static void gp_drop_locked(uint32_t i)
{
	gp_entry_free(&gk.parts[i]);
	gk.parts[i] = gk.parts[--gk.n_parts];
}

/* Every resident block and layout (device memory ran short, or gpu no). */
static void gk_drop_all_locked(void)
{
	while (gk.n_res > 0)
		gk_block_drop_locked(gk.n_res - 1);
	while (gk.n_parts > 0)
		gp_drop_locked(gk.n_parts - 1);
}

void backend_gpu_release(void)
{
	pthread_mutex_lock(&gk.mu);
	gk_drop_all_locked();
	pthread_mutex_unlock(&gk.mu);
}

void index_backend_forget(uint64_t uid)
{
	if (uid == 0)
		return;
	pthread_mutex_lock(&gk.mu);
	for (uint32_t i = 0; i < gk.n_res; i++)
		if (gk.res[i].uid == uid) {
			gk_block_drop_locked(i);
			break;
		}
	for (uint32_t i = 0; i < gk.n_parts; i++)
		if (gk.parts[i].uid == uid) {
			gp_drop_locked(i);
			break;
		}
	pthread_mutex_unlock(&gk.mu);
}

/* Resident blocks and layouts together (INFO gpu_resident, _bytes). */
void backend_gpu_state(char *device, size_t cap, uint32_t *resident, uint64_t *bytes)
{
	pthread_mutex_lock(&gk.mu);
	snprintf(device, cap, "%s", gk.ctx ? gk.name : "none");
	uint64_t b = 0;
	for (uint32_t i = 0; i < gk.n_res; i++)
		b += gl->matrix_bytes(gk.res[i].m);
	for (uint32_t i = 0; i < gk.n_parts; i++)
		b += gl->parts_bytes(gk.parts[i].g);
	if (resident)
		*resident = gk.n_res + gk.n_parts;
	if (bytes)
		*bytes = b;
	pthread_mutex_unlock(&gk.mu);
}

static gpu_metric_t gk_metric(vela_metric_t m)
{
	return m == VELA_METRIC_L2 ? GPU_METRIC_L2 : GPU_METRIC_IP; /* COSINE: normalised IP */
}

static bool gk_row_live(const index_rows_t *r, uint64_t i)
{
	return r->live == NULL || ((r->live[i >> 6] >> (i & 63)) & 1);
}

/* Rows [r0, r0 + m) as dense F32 into buf; raise *nmax by present rows' |x|^2. */
static void gk_pack(const index_rows_t *r, uint64_t r0, uint64_t m, float *buf, double *nmax)
{
	size_t esize = r->type == VELA_VEC_FLOAT16 ? 2 : 4;
	for (uint64_t i = 0; i < m; i++) {
		const uint8_t *src = (const uint8_t *)r->data + (r0 + i) * r->stride * esize;
		float *dst = buf + i * r->dim;
		if (r->type == VELA_VEC_FLOAT16)
			quant_f16_to_f32((const uint16_t *)src, dst, r->dim);
		else
			memcpy(dst, src, r->dim * sizeof(float));
		if (!gk_row_live(r, r0 + i))
			continue;
		double s = 0;
		for (uint32_t j = 0; j < r->dim; j++)
			s += (double)dst[j] * dst[j];
		if (s > *nmax)
			*nmax = s;
	}
}

/* Upload every row of `r` into a new F32 matrix described by `b`. */
static int gk_upload(const index_rows_t *r, gk_block_t *b, vela_err_t *err)
{
	gpu_matrix_params_t p = {.elem = GPU_ELEM_F32, .metric = gk_metric(r->metric),
				 .dim = r->dim, .capacity = r->n};
	uint64_t chunk = GK_UPLOAD_BYTES / ((uint64_t)r->dim * sizeof(float));
	chunk = chunk ? chunk : 1;
	chunk = chunk < r->n ? chunk : r->n;
	float *buf = malloc(vela_mul_size(chunk * r->dim, sizeof(float)));
	if (buf == NULL)
		return vela_err_set(err, VELA_ENOMEM, "gpu upload: out of memory");
	*b = (gk_block_t){.uid = r->uid, .generation = r->generation, .n = r->n, .dim = r->dim,
			  .metric = p.metric};
	double nmax = 0;
	int rc = gl->matrix_create(gk.ctx, &p, &b->m, err);
	for (uint64_t r0 = 0; rc == 0 && r0 < r->n; r0 += chunk) {
		uint64_t m = r->n - r0 < chunk ? r->n - r0 : chunk;
		gk_pack(r, r0, m, buf, &nmax);
		rc = gl->matrix_append(b->m, buf, m, err);
	}
	free(buf);
	if (rc) {
		gl->matrix_free(b->m);
		b->m = NULL;
		return gk_failed(rc);
	}
	b->norm_max = r->norm_max > 0 ? r->norm_max : (float)nmax;
	if ((double)b->norm_max < nmax)
		b->norm_max = (float)nmax * (1 + 0x1p-20f);
	return 0;
}

static bool gk_block_fresh(const gk_block_t *b, const index_rows_t *r)
{
	return b->generation == r->generation && b->n == r->n && b->dim == r->dim &&
	       b->metric == gk_metric(r->metric);
}

/* The device copy of `r` into *b: the resident one when fresh, else a new
 * upload (resident when r->uid != 0; the caller frees a transient one).
 * A failed upload is retried once after dropping every other block, in
 * case device memory was the problem. */
static int gk_block_get_locked(const index_rows_t *r, gk_block_t *b, vela_err_t *err)
{
	for (uint32_t i = 0; r->uid && i < gk.n_res; i++) {
		if (gk.res[i].uid != r->uid)
			continue;
		if (gk_block_fresh(&gk.res[i], r)) {
			gk.res[i].last_use = ++gk.clock;
			*b = gk.res[i];
			return 0;
		}
		gk_block_drop_locked(i); /* changed since the upload */
		break;
	}
	int rc = gk_upload(r, b, err);
	if (rc && gk.n_res + gk.n_parts > 0) {
		gk_drop_all_locked();
		rc = gk_upload(r, b, err);
	}
	if (rc || r->uid == 0)
		return rc;
	if (gk.n_res == INDEX_BACKEND_GPU_RESIDENT_MAX) {
		uint32_t lru = 0;
		for (uint32_t i = 1; i < gk.n_res; i++)
			if (gk.res[i].last_use < gk.res[lru].last_use)
				lru = i;
		gk_block_drop_locked(lru);
	}
	b->last_use = ++gk.clock;
	gk.res[gk.n_res++] = *b;
	return 0;
}

/* ------------------------------------------------ kNN */

/* The allowed rows of one filter group as gpu_knn's bitmap: NULL (all),
 * the presence bits, or a new array (*owned) of filter AND presence. */
static const uint64_t *gk_filter_words(const index_rows_t *r, const roaring_bitmap_t *flt,
				       uint64_t **owned)
{
	*owned = NULL;
	if (flt == NULL)
		return r->live;
	uint64_t nw = (r->n + 63) / 64;
	uint64_t *w = calloc(nw ? nw : 1, sizeof(uint64_t));
	if (w == NULL)
		return NULL;
	roaring_uint32_iterator_t it;
	roaring_init_iterator(flt, &it);
	uint32_t ids[256];
	uint32_t got;
	bool done = false;
	while (!done && (got = roaring_read_uint32_iterator(&it, ids, 256)) > 0)
		for (uint32_t i = 0; i < got; i++) {
			if (ids[i] >= r->n) {
				done = true;
				break;
			}
			w[ids[i] >> 6] |= 1ull << (ids[i] & 63);
		}
	for (uint64_t i = 0; r->live && i < nw; i++)
		w[i] &= r->live[i];
	*owned = w;
	return w;
}

/* Rows `words` allows (all n when NULL). */
static uint64_t gk_allowed(const index_rows_t *r, const uint64_t *words)
{
	uint64_t c = 0;
	for (uint64_t w = 0; words && w < (r->n + 63) / 64; w++)
		c += (uint64_t)__builtin_popcountll(words[w]);
	return words ? c : r->n;
}

/* One query's device list (kk slots, ascending) -> the exact top k on the
 * host, or false when the list cannot be proven to hold it: a full list
 * whose last distance is within 4e of the k-th, or a short list that is
 * not every allowed row. */
static bool gk_rescore(const index_rows_t *r, const float *q, float qn, float norm_max,
		       const uint64_t *words, uint64_t allowed, uint32_t k, uint32_t kk,
		       const uint32_t *ids, const float *dists, vela_hit_t *out, uint32_t *n_out)
{
	uint32_t c = 0;
	while (c < kk && ids[c] != UINT32_MAX)
		c++;
	if (c < kk && c != allowed)
		return false;
	if (c == kk && !(dists[kk - 1] > dists[k - 1] + 2 * backend_rounding_slack(r->dim, qn,
										  norm_max)))
		return false;
	quant_dist_fn dist = quant_distance_fn(r->metric, r->type);
	size_t esize = r->type == VELA_VEC_FLOAT16 ? 2 : 4;
	uint32_t size = 0;
	for (uint32_t j = 0; j < c; j++) {
		uint32_t id = ids[j];
		if (id >= r->n || (words && !((words[id >> 6] >> (id & 63)) & 1)))
			return false; /* not a row we allowed: distrust the list */
		const void *row = (const uint8_t *)r->data + (uint64_t)id * r->stride * esize;
		flat_heap_push(out, &size, k, (vela_hit_t){dist(q, row, r->dim), id});
	}
	flat_hits_sort(out, size);
	*n_out = size;
	return true;
}

typedef struct {
	const index_rows_t *r;
	const index_knn_t *req;
	const float *qn;
	gk_block_t *b;
	uint32_t kk;
	uint32_t *order; /* query indices grouped by filter */
	uint32_t *ids;   /* chunk x kk */
	float *dists;
	float *qpack;    /* chunk x dim */
	uint32_t chunk;
	bool *redo;      /* per query: answer on the CPU */
} gk_knn_t;

/* Queries order[g0..g1) share `words`: gpu_knn in chunks, then re-score. */
static int gk_knn_group(gk_knn_t *t, uint32_t g0, uint32_t g1, const uint64_t *words,
			vela_hit_t *out, uint32_t *n_out, vela_err_t *err)
{
	uint32_t dim = t->r->dim, k = t->req->k;
	uint64_t allowed = gk_allowed(t->r, words);
	gpu_knn_params_t p = {.k = t->kk, .filter = words};
	for (uint32_t c0 = g0; c0 < g1; c0 += t->chunk) {
		uint32_t m = g1 - c0 < t->chunk ? g1 - c0 : t->chunk;
		for (uint32_t i = 0; i < m; i++)
			memcpy(t->qpack + (size_t)i * dim, t->req->queries + (size_t)t->order[c0 + i] * dim,
			       dim * sizeof(float));
		int rc = gl->knn(t->b->m, t->qpack, m, &p, t->ids, t->dists, err);
		if (rc)
			return gk_failed(rc);
		for (uint32_t i = 0; i < m; i++) {
			uint32_t qi = t->order[c0 + i];
			t->redo[qi] = !gk_rescore(t->r, t->req->queries + (size_t)qi * dim, t->qn[qi],
						  t->b->norm_max, words, allowed, k, t->kk,
						  t->ids + (size_t)i * t->kk, t->dists + (size_t)i * t->kk,
						  out + (size_t)qi * k, &n_out[qi]);
		}
	}
	return 0;
}

static const roaring_bitmap_t *gk_filter(const index_knn_t *req, uint32_t i)
{
	return req->filters ? req->filters[i] : NULL;
}

static const index_knn_t *gk_sort_req; /* qsort has no context argument */

static int gk_order_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	uintptr_t fx = (uintptr_t)gk_filter(gk_sort_req, x), fy = (uintptr_t)gk_filter(gk_sort_req, y);
	return fx < fy ? -1 : fx > fy ? 1 : (x > y) - (x < y);
}

/* Group the queries by filter (stable by index). Holds gk.mu, which also
 * guards gk_sort_req. */
static void gk_order_locked(gk_knn_t *t)
{
	for (uint32_t i = 0; i < t->req->nq; i++)
		t->order[i] = i;
	if (t->req->filters) {
		gk_sort_req = t->req;
		qsort(t->order, t->req->nq, sizeof(uint32_t), gk_order_cmp);
	}
}

static int gk_knn_device_locked(gk_knn_t *t, vela_hit_t *out, uint32_t *n_out, vela_err_t *err)
{
	gk_order_locked(t);
	int rc = 0;
	for (uint32_t g0 = 0, g1; rc == 0 && g0 < t->req->nq; g0 = g1) {
		const roaring_bitmap_t *flt = gk_filter(t->req, t->order[g0]);
		for (g1 = g0 + 1; g1 < t->req->nq && gk_filter(t->req, t->order[g1]) == flt; g1++)
			;
		uint64_t *owned;
		const uint64_t *words = gk_filter_words(t->r, flt, &owned);
		if (flt && words == NULL)
			return vela_err_set(err, VELA_ENOMEM, "gpu knn: out of memory");
		rc = gk_knn_group(t, g0, g1, words, out, n_out, err);
		free(owned);
	}
	return rc;
}

/* Answer the queries marked redo with the CPU engine, in one batch. */
static int gk_knn_redo(const index_rows_t *r, const index_knn_t *req, const bool *redo,
		       vela_hit_t *out, uint32_t *n_out, vela_err_t *err)
{
	uint32_t m = 0;
	for (uint32_t i = 0; i < req->nq; i++)
		m += redo[i];
	if (m == 0)
		return 0;
	float *Q = malloc(vela_mul_size((size_t)m * r->dim, sizeof(float)));
	const roaring_bitmap_t **flt = malloc(m * sizeof(*flt));
	vela_hit_t *o = malloc(vela_mul_size((size_t)m * req->k, sizeof(*o)));
	uint32_t *no = malloc(m * sizeof(*no)), *idx = malloc(m * sizeof(*idx));
	int rc = Q && flt && o && no && idx ? 0 : vela_err_set(err, VELA_ENOMEM, "knn: out of memory");
	for (uint32_t i = 0, j = 0; rc == 0 && i < req->nq; i++)
		if (redo[i]) {
			memcpy(Q + (size_t)j * r->dim, req->queries + (size_t)i * r->dim,
			       r->dim * sizeof(float));
			flt[j] = gk_filter(req, i);
			idx[j++] = i;
		}
	index_knn_t sub = {.queries = Q, .nq = m, .k = req->k, .filters = flt};
	if (rc == 0)
		rc = index_backend_cpu()->knn(r, &sub, o, no, err);
	for (uint32_t j = 0; rc == 0 && j < m; j++) {
		memcpy(out + (size_t)idx[j] * req->k, o + (size_t)j * req->k, req->k * sizeof(*o));
		n_out[idx[j]] = no[j];
	}
	free(Q);
	free(flt);
	free(o);
	free(no);
	free(idx);
	return rc;
}

static void gk_knn_free(gk_knn_t *t)
{
	free(t->order);
	free(t->ids);
	free(t->dists);
	free(t->qpack);
	free(t->redo);
}

static int gk_knn_alloc(gk_knn_t *t)
{
	uint32_t nq = t->req->nq;
	t->kk = 2 * t->req->k + 64 < GPU_K_MAX ? 2 * t->req->k + 64 : GPU_K_MAX;
	t->chunk = GK_RESULT_SLOTS / t->kk < nq ? GK_RESULT_SLOTS / t->kk : nq;
	t->order = malloc(nq * sizeof(uint32_t));
	t->ids = malloc((size_t)t->chunk * t->kk * sizeof(uint32_t));
	t->dists = malloc((size_t)t->chunk * t->kk * sizeof(float));
	t->qpack = malloc(vela_mul_size((size_t)t->chunk * t->r->dim, sizeof(float)));
	t->redo = calloc(nq, sizeof(bool));
	return t->order && t->ids && t->dists && t->qpack && t->redo ? 0 : VELA_ENOMEM;
}

static int gk_knn_run(gk_knn_t *t, vela_hit_t *out, uint32_t *n_out, vela_err_t *err)
{
	if (gk_knn_alloc(t))
		return vela_err_set(err, VELA_ENOMEM, "gpu knn: out of memory");
	gk_block_t b;
	pthread_mutex_lock(&gk.mu);
	int rc = gk_open_locked(err);
	if (rc == 0)
		rc = gk_block_get_locked(t->r, &b, err);
	if (rc == 0) {
		t->b = &b;
		rc = gk_knn_device_locked(t, out, n_out, err);
		if (t->r->uid == 0)
			gl->matrix_free(b.m);
	}
	pthread_mutex_unlock(&gk.mu);
	if (rc == 0)
		rc = gk_knn_redo(t->r, t->req, t->redo, out, n_out, err);
	return rc;
}

static int gk_knn(const index_rows_t *rows, const index_knn_t *req, vela_hit_t *out,
		  uint32_t *n_out, vela_err_t *err)
{
	if (rows && req && req->nq > 0 && (n_out == NULL || (req->k > 0 && out == NULL)))
		return vela_err_set(err, VELA_EINVAL, "knn: NULL output");
	if (rows == NULL || req == NULL || req->nq == 0)
		return backend_knn_check(rows, req, NULL, err);
	if (req->k > INDEX_BACKEND_GPU_K_MAX || rows->dim > GPU_DIM_MAX)
		return vela_err_set(err, VELA_EUNSUPPORTED, "gpu knn: k %u or dim %u too large",
				    req->k, rows->dim);
	float *qn = malloc(req->nq * sizeof(float));
	if (qn == NULL)
		return vela_err_set(err, VELA_ENOMEM, "knn: out of memory");
	int rc = backend_knn_check(rows, req, qn, err);
	if (rc == 0) {
		memset(n_out, 0, req->nq * sizeof(*n_out));
		if (req->k > 0 && rows->n > 0 && (rc = gk_fault(err)) == 0) {
			gk_knn_t t = {.r = rows, .req = req, .qn = qn};
			rc = gk_knn_run(&t, out, n_out, err);
			gk_knn_free(&t);
		}
	}
	if (rc == 0)
		backend_hits_pad(out, n_out, req->nq, req->k);
	free(qn);
	return rc;
}

/* ------------------------------------------------ batched partition scans
 * A layout's clusters are uploaded once, back to back, into one gpu_parts_t
 * (F16 rows decoded: exact), resident by index_parts_t.uid until its
 * generation changes, index_backend_forget, eviction of the least recently
 * used of INDEX_BACKEND_GPU_PARTS_MAX layouts, or gpu no. A batch of pairs
 * is one gpu_parts_scan per chunk asking kk = min(2k + 64, GPU_PART_K_MAX)
 * candidates per pair; the device's distances are direct F32 sums, which
 * differ from the host kernel's by less than the GEMM bound gk_rescore
 * uses, so the same re-scoring and proof of completeness apply per pair.
 * A pair that fails it is answered by the CPU's per-cluster scan. */

/* Host scratch bounds of one gpu_parts_scan: result slots (pairs x kk) and
 * filter rows. */
#define GP_RESULT_SLOTS (4u << 20)
#define GP_FILTER_ROWS (16u << 20)

/* What the device cannot serve: the CPU answers, silently. */
static int gp_shape_check(const index_parts_t *parts, uint32_t k, vela_err_t *err)
{
	if (gl->parts_create == NULL)
		return vela_err_set(err, VELA_EUNSUPPORTED, "gpu parts: not in the GPU library");
	if (k > INDEX_BACKEND_GPU_PARTS_K_MAX || k > GPU_PART_K_MAX ||
	    parts->cl[0].dim > GPU_DIM_MAX)
		return vela_err_set(err, VELA_EUNSUPPORTED, "gpu parts: k %u or dim %u too large", k,
				    parts->cl[0].dim);
	return 0;
}

/* Before an upload: every cluster (not only those a batch names) valid and
 * of one shape, with no absent rows (gpu_parts_t has no presence bits). A
 * resident copy is not checked again: its generation vouches for it. */
static int gp_upload_check(const index_parts_t *parts, vela_err_t *err)
{
	int rc = backend_parts_shape_check(parts, err);
	for (uint32_t c = 0; rc == 0 && c < parts->n_cl; c++)
		if (parts->cl[c].live || parts->cl[c].n > GPU_PART_CLUSTER_ROWS_MAX)
			rc = vela_err_set(err, VELA_EUNSUPPORTED,
					  "gpu parts: cluster %u: absent rows or too large", c);
	return rc;
}

/* Every cluster's rows as F32, back to back, with their offsets and norm
 * bounds (as gk_upload bounds a block). */
static int gp_pack(const index_parts_t *parts, gp_entry_t *e, float **rows, uint64_t **off)
{
	uint32_t dim = parts->cl[0].dim;
	*off = malloc(((size_t)parts->n_cl + 1) * sizeof(uint64_t));
	e->norm_max = malloc(parts->n_cl * sizeof(float));
	if (*off == NULL || e->norm_max == NULL)
		return VELA_ENOMEM;
	(*off)[0] = 0;
	for (uint32_t c = 0; c < parts->n_cl; c++)
		(*off)[c + 1] = (*off)[c] + parts->cl[c].n;
	e->n = (*off)[parts->n_cl];
	*rows = malloc(vela_mul_size(e->n ? e->n : 1, (size_t)dim * sizeof(float)));
	if (*rows == NULL)
		return VELA_ENOMEM;
	for (uint32_t c = 0; c < parts->n_cl; c++) {
		const index_rows_t *r = &parts->cl[c];
		double nmax = 0;
		gk_pack(r, 0, r->n, *rows + (*off)[c] * dim, &nmax);
		e->norm_max[c] = r->norm_max > 0 ? r->norm_max : (float)nmax;
		if ((double)e->norm_max[c] < nmax)
			e->norm_max[c] = (float)nmax * (1 + 0x1p-20f);
	}
	return 0;
}

/* Upload every cluster of `parts` into a new entry *e. */
static int gp_upload(const index_parts_t *parts, gp_entry_t *e, vela_err_t *err)
{
	const index_rows_t *c0 = &parts->cl[0];
	*e = (gp_entry_t){.uid = parts->uid, .generation = parts->generation, .n_cl = parts->n_cl,
			  .dim = c0->dim, .metric = gk_metric(c0->metric)};
	float *rows = NULL;
	uint64_t *off = NULL;
	int rc = gp_pack(parts, e, &rows, &off);
	if (rc)
		rc = vela_err_set(err, VELA_ENOMEM, "gpu parts: out of memory");
	else
		rc = gk_failed(gl->parts_create(gk.ctx, rows, e->n, e->dim, off, e->n_cl, e->metric,
						&e->g, err));
	free(rows);
	free(off);
	if (rc) {
		e->g = NULL;
		gp_entry_free(e);
	}
	return rc;
}

static bool gp_fresh(const gp_entry_t *e, const index_parts_t *parts)
{
	return e->generation == parts->generation && e->n_cl == parts->n_cl &&
	       e->dim == parts->cl[0].dim && e->metric == gk_metric(parts->cl[0].metric);
}

/* Keep *e resident (uid != 0), evicting the least recently used layout. */
static void gp_keep_locked(gp_entry_t *e)
{
	if (gk.n_parts == INDEX_BACKEND_GPU_PARTS_MAX) {
		uint32_t lru = 0;
		for (uint32_t i = 1; i < gk.n_parts; i++)
			if (gk.parts[i].last_use < gk.parts[lru].last_use)
				lru = i;
		gp_drop_locked(lru);
	}
	e->last_use = ++gk.clock;
	gk.parts[gk.n_parts++] = *e;
}

/* The device copy of `parts` into *e: the resident one when fresh, else a
 * new upload (kept when parts->uid != 0; the caller frees a transient one
 * with gp_entry_free). A failed upload is retried once after dropping every
 * resident block and layout. */
static int gp_get_locked(const index_parts_t *parts, gp_entry_t *e, vela_err_t *err)
{
	for (uint32_t i = 0; parts->uid && i < gk.n_parts; i++) {
		if (gk.parts[i].uid != parts->uid)
			continue;
		if (gp_fresh(&gk.parts[i], parts)) {
			gk.parts[i].last_use = ++gk.clock;
			*e = gk.parts[i];
			return 0;
		}
		gp_drop_locked(i); /* the layout changed since the upload */
		break;
	}
	int rc = gp_upload_check(parts, err);
	if (rc)
		return rc;
	rc = gp_upload(parts, e, err);
	if (rc && gk.n_res + gk.n_parts > 0) {
		gk_drop_all_locked();
		rc = gp_upload(parts, e, err);
	}
	if (rc == 0 && parts->uid)
		gp_keep_locked(e);
	return rc;
}

typedef struct {
	const index_parts_t *parts;
	const index_parts_req_t *req;
	const float *qn;
	gp_entry_t *e;
	uint32_t kk, chunk;
	gpu_part_pair_t *gp; /* chunk */
	uint32_t *filt;      /* filter rows of a chunk, grown on demand */
	size_t filt_cap;
	uint32_t *ids;       /* chunk x kk */
	float *dists;
	uint64_t *words;     /* one cluster's rows as bits; all clear between pairs */
	bool *redo;          /* per pair: answer on the CPU */
} gp_scan_t;

static void gp_scan_free(gp_scan_t *t)
{
	free(t->gp);
	free(t->filt);
	free(t->ids);
	free(t->dists);
	free(t->words);
	free(t->redo);
}

static int gp_scan_alloc(gp_scan_t *t)
{
	uint32_t np = t->req->npairs, k = t->req->k;
	uint64_t most = 0;
	for (uint32_t c = 0; c < t->parts->n_cl; c++)
		most = t->parts->cl[c].n > most ? t->parts->cl[c].n : most;
	t->kk = 2 * k + 64 < GPU_PART_K_MAX ? 2 * k + 64 : GPU_PART_K_MAX;
	t->chunk = GP_RESULT_SLOTS / t->kk < np ? GP_RESULT_SLOTS / t->kk : np;
	t->gp = malloc(t->chunk * sizeof(*t->gp));
	t->ids = malloc((size_t)t->chunk * t->kk * sizeof(uint32_t));
	t->dists = malloc((size_t)t->chunk * t->kk * sizeof(float));
	t->words = calloc((most + 63) / 64 + 1, sizeof(uint64_t));
	t->redo = calloc(np, sizeof(bool));
	return t->gp && t->ids && t->dists && t->words && t->redo ? 0 : VELA_ENOMEM;
}

/* Allowed rows of pair p: its filter's rows below the cluster's n. */
static uint32_t gp_filter_len(const gp_scan_t *t, uint32_t p)
{
	const index_part_pair_t *pr = &t->req->pairs[p];
	if (pr->filter == NULL)
		return GPU_PART_ALL_ROWS;
	return (uint32_t)roaring_bitmap_range_cardinality(pr->filter, 0, t->parts->cl[pr->cl].n);
}

/* The device pairs of pairs [p0, *p1): as many as fit the scratch bounds
 * (at least one); their filter rows into t->filt. 0 or VELA_ENOMEM. */
static int gp_chunk_make(gp_scan_t *t, uint32_t p0, uint32_t *p1, uint32_t *nfilt)
{
	uint32_t m = 0;
	size_t nf = 0;
	for (uint32_t p = p0; p < t->req->npairs && m < t->chunk; p++, m++) {
		uint32_t len = gp_filter_len(t, p), real = len == GPU_PART_ALL_ROWS ? 0 : len;
		if (m > 0 && nf + real > GP_FILTER_ROWS)
			break;
		if (nf + real > t->filt_cap) {
			size_t cap = (nf + real) * 2;
			uint32_t *f = realloc(t->filt, vela_mul_size(cap ? cap : 1, sizeof(*f)));
			if (f == NULL)
				return VELA_ENOMEM;
			t->filt = f;
			t->filt_cap = cap;
		}
		const index_part_pair_t *pr = &t->req->pairs[p];
		if (real)
			roaring_bitmap_range_uint32_array(pr->filter, 0, real, t->filt + nf);
		t->gp[m] = (gpu_part_pair_t){.cluster = pr->cl, .query = pr->q,
					     .filter_off = (uint32_t)nf, .filter_len = len};
		nf += real;
	}
	*p1 = p0 + m;
	*nfilt = (uint32_t)nf;
	return 0;
}

/* Re-score device pair i of the chunk starting at pair p0 (gk_rescore with
 * the pair's filter as bits); false: the CPU answers it. */
static bool gp_rescore(gp_scan_t *t, uint32_t p0, uint32_t i, vela_hit_t *out, uint32_t *n_out)
{
	const gpu_part_pair_t *g = &t->gp[i];
	const index_rows_t *r = &t->parts->cl[g->cluster];
	uint32_t k = t->req->k, p = p0 + i;
	bool all = g->filter_len == GPU_PART_ALL_ROWS;
	const uint32_t *f = t->filt + g->filter_off;
	for (uint32_t j = 0; !all && j < g->filter_len; j++)
		t->words[f[j] >> 6] |= 1ull << (f[j] & 63);
	bool ok = gk_rescore(r, t->req->queries + (size_t)g->query * r->dim, t->qn[g->query],
			     t->e->norm_max[g->cluster], all ? NULL : t->words,
			     all ? r->n : g->filter_len, k, t->kk, t->ids + (size_t)i * t->kk,
			     t->dists + (size_t)i * t->kk, out + (size_t)p * k, &n_out[p]);
	for (uint32_t j = 0; !all && j < g->filter_len; j++)
		t->words[f[j] >> 6] = 0;
	return ok;
}

/* Every chunk of pairs: one gpu_parts_scan, then re-score each pair. */
static int gp_scan_device_locked(gp_scan_t *t, vela_hit_t *out, uint32_t *n_out, vela_err_t *err)
{
	const index_parts_req_t *req = t->req;
	for (uint32_t p0 = 0, p1; p0 < req->npairs; p0 = p1) {
		uint32_t nfilt;
		if (gp_chunk_make(t, p0, &p1, &nfilt))
			return vela_err_set(err, VELA_ENOMEM, "gpu parts: out of memory");
		int rc = gl->parts_scan(t->e->g, req->queries, req->nq, t->gp, p1 - p0,
					nfilt ? t->filt : NULL, nfilt, t->kk, t->ids, t->dists, err);
		if (rc)
			return gk_failed(rc);
		for (uint32_t i = 0; i < p1 - p0; i++)
			t->redo[p0 + i] = !gp_rescore(t, p0, i, out, n_out);
	}
	return 0;
}

/* Answer the pairs marked redo with the CPU's scan, in one request. */
static int gp_scan_redo(const index_parts_t *parts, const index_parts_req_t *req,
			const bool *redo, vela_hit_t *out, uint32_t *n_out, vela_err_t *err)
{
	uint32_t m = 0;
	for (uint32_t i = 0; i < req->npairs; i++)
		m += redo[i];
	if (m == 0)
		return 0;
	index_part_pair_t *pr = malloc(m * sizeof(*pr));
	vela_hit_t *o = malloc(vela_mul_size((size_t)m * req->k, sizeof(*o)));
	uint32_t *no = malloc(m * sizeof(*no)), *idx = malloc(m * sizeof(*idx));
	int rc = pr && o && no && idx ? 0 : vela_err_set(err, VELA_ENOMEM, "parts: out of memory");
	for (uint32_t i = 0, j = 0; rc == 0 && i < req->npairs; i++)
		if (redo[i]) {
			pr[j] = req->pairs[i];
			idx[j++] = i;
		}
	index_parts_req_t sub = *req;
	sub.pairs = pr;
	sub.npairs = m;
	if (rc == 0)
		rc = index_backend_cpu()->parts_knn(parts, &sub, o, no, err);
	for (uint32_t j = 0; rc == 0 && j < m; j++) {
		memcpy(out + (size_t)idx[j] * req->k, o + (size_t)j * req->k, req->k * sizeof(*o));
		n_out[idx[j]] = no[j];
	}
	free(pr);
	free(o);
	free(no);
	free(idx);
	return rc;
}

static int gp_scan_run(gp_scan_t *t, vela_hit_t *out, uint32_t *n_out, vela_err_t *err)
{
	if (gp_scan_alloc(t))
		return vela_err_set(err, VELA_ENOMEM, "gpu parts: out of memory");
	gp_entry_t e;
	pthread_mutex_lock(&gk.mu);
	int rc = gk_open_locked(err);
	if (rc == 0)
		rc = gp_shape_check(t->parts, t->req->k, err);
	if (rc == 0)
		rc = gp_get_locked(t->parts, &e, err);
	if (rc == 0) {
		t->e = &e;
		rc = gp_scan_device_locked(t, out, n_out, err);
		if (t->parts->uid == 0)
			gp_entry_free(&e);
	}
	pthread_mutex_unlock(&gk.mu);
	if (rc == 0)
		rc = gp_scan_redo(t->parts, t->req, t->redo, out, n_out, err);
	return rc;
}

static int gk_parts_knn(const index_parts_t *parts, const index_parts_req_t *req,
			vela_hit_t *out, uint32_t *n_out, vela_err_t *err)
{
	if (parts == NULL || req == NULL || req->npairs == 0)
		return backend_parts_check(parts, req, out, n_out, NULL, err);
	float *qn = malloc((req->nq ? req->nq : 1) * sizeof(float));
	if (qn == NULL)
		return vela_err_set(err, VELA_ENOMEM, "parts: out of memory");
	int rc = backend_parts_check(parts, req, out, n_out, qn, err);
	if (rc == 0) {
		memset(n_out, 0, req->npairs * sizeof(*n_out));
		if (req->k > 0 && (rc = gk_fault(err)) == 0) {
			gp_scan_t t = {.parts = parts, .req = req, .qn = qn};
			rc = gp_scan_run(&t, out, n_out, err);
			gp_scan_free(&t);
		}
	}
	if (rc == 0)
		backend_hits_pad(out, n_out, req->npairs, req->k);
	free(qn);
	return rc;
}

/* ------------------------------------------------ projection, k-means, Gram */

static int gk_project(const float *X, uint64_t n, uint32_t din, const float *P, uint32_t dout,
		      float *Y, vela_err_t *err)
{
	int rc = backend_project_check(X, n, din, P, dout, Y, err);
	if (rc || n == 0)
		return rc;
	if (din > GPU_DIM_MAX || dout > GPU_DIM_MAX)
		return vela_err_set(err, VELA_EUNSUPPORTED, "gpu project: dimension too large");
	if ((rc = gk_fault(err)))
		return rc;
	pthread_mutex_lock(&gk.mu);
	rc = gk_open_locked(err);
	if (rc == 0)
		rc = gk_failed(gl->project(gk.ctx, X, n, din, P, dout, Y, err));
	pthread_mutex_unlock(&gk.mu);
	return rc;
}

static int gk_kmeans_step(const float *X, uint64_t n, uint32_t d, float *C, uint32_t kc,
			  uint32_t *assign, double *inertia, vela_err_t *err)
{
	int rc = backend_kmeans_check(X, n, d, C, kc, err);
	if (rc)
		return rc;
	if (n == 0) {
		if (inertia)
			*inertia = 0;
		return 0;
	}
	if (d > GPU_DIM_MAX)
		return vela_err_set(err, VELA_EUNSUPPORTED, "gpu kmeans: dimension too large");
	if ((rc = gk_fault(err)))
		return rc;
	pthread_mutex_lock(&gk.mu);
	rc = gk_open_locked(err);
	if (rc == 0)
		rc = gk_failed(gl->kmeans_step(gk.ctx, X, n, d, C, kc, assign, inertia, err));
	pthread_mutex_unlock(&gk.mu);
	return rc;
}

/* LeanVec training's Gram matrix in FP64 on the device. A library built
 * before gpu_gram lacks it: the CPU answers, silently. */
static int gk_gram(const float *X, uint64_t n, uint32_t d, const double *mu, double *G,
		   vela_err_t *err)
{
	int rc = backend_gram_check(X, n, d, G, err);
	if (rc)
		return rc;
	if (n == 0) {
		memset(G, 0, (size_t)d * d * sizeof(*G));
		return 0;
	}
	if (d > GPU_DIM_MAX)
		return vela_err_set(err, VELA_EUNSUPPORTED, "gpu gram: dimension too large");
	if ((rc = gk_fault(err)))
		return rc;
	pthread_mutex_lock(&gk.mu);
	rc = gk_open_locked(err);
	if (rc == 0 && gl->gram == NULL)
		rc = vela_err_set(err, VELA_EUNSUPPORTED, "gpu gram: not in the GPU library");
	else if (rc == 0)
		rc = gk_failed(gl->gram(gk.ctx, X, n, d, mu, G, err));
	pthread_mutex_unlock(&gk.mu);
	return rc;
}

static const index_backend_t gk_table = {
	.name = "cuda",
	.knn = gk_knn,
	.project = gk_project,
	.kmeans_step = gk_kmeans_step,
	.gram = gk_gram,
	.parts_knn = gk_parts_knn,
};

int index_backend_gpu(const index_backend_t **out, vela_err_t *err)
{
	pthread_mutex_lock(&gk.mu);
	int rc = gk_open_locked(err);
	pthread_mutex_unlock(&gk.mu);
	if (out)
		*out = rc ? NULL : &gk_table;
	return rc;
}

