/*
 * gpu_part.cu — batched partition scans (see gpu.h, "partitions").
 *
 * Layout: all clusters' F32 rows back to back, each row padded with zeros to
 * ld = dim rounded up to 4 floats (one float4 per load); the batch's queries
 * are padded the same way, so padding adds 0 to both L2 and IP.
 *
 * Kernel: one warp per (cluster, query, filter) pair, PART_WARPS pairs per
 * block. Lane l takes candidates l, l + 32, ... (rows of the cluster, or the
 * filter's entries) and computes a whole distance itself: the query is read
 * by all lanes at the same address (a broadcast), rows through L1/L2, and
 * pairs of one cluster sit next to each other in a batch, so a block's warps
 * mostly read the same rows. Selection is a filtered warp queue (Johnson et
 * al., arXiv 1702.08734 §4) kept in shared memory rather than registers, so
 * any k up to GPU_PART_K_MAX runs in one kernel:
 *  - the warp's current k best (d, row), ascending, with (INF, UINT32_MAX)
 *    sentinels; a candidate is admitted only if it beats the k-th;
 *  - admitted candidates are appended to a PART_BUF buffer (ballot + popc);
 *    when it may overflow on the next round it is merged: the buffer is
 *    sorted by rank counting, then every list and buffer entry computes its
 *    rank in the union by binary search in the other sorted array and, if
 *    the rank is < k, writes itself there in a second list (double buffer).
 *    Ties between the list and the buffer go to the list, inside the buffer
 *    to the earlier entry, so the ranks are a permutation and every one of
 *    the k slots is written exactly once.
 * The order is (distance, row): ties go to the smaller row, and NaN ranks
 * as +INF (a real row with an infinite distance still beats a sentinel).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/gpu_impl.h"

/** Warps (pairs) per block. */
#define PART_WARPS 4
/** Candidate buffer per warp: merged when more than PART_BUF - 32 wait. */
#define PART_BUF 64
#define PART_FULL_MASK 0xffffffffu

struct gpu_parts {
	gpu_ctx_t *ctx;
	uint32_t dim, ld, nclusters;
	gpu_metric_t metric;
	uint64_t n;
	float *rows;     /* device, n x ld (at least one row allocated) */
	uint64_t *off;   /* device, nclusters + 1 */
	uint64_t *hoff;  /* host copy of off */
	void *scratch;   /* device: flag, queries, pairs, filt, outputs of a call */
	size_t scratch_cap;
	cudaEvent_t ev[4]; /* a scan's phases: uploads, kernel, downloads */
	float times[3];    /* ms of the last successful scan's phases */
};

/* ------------------------------------------------------------ device */

static __device__ __forceinline__ bool key_less(float a, uint32_t ai, float b, uint32_t bi)
{
	return a < b || (a == b && ai < bi);
}

template <bool IP>
static __device__ __forceinline__ float part_dist(const float4 *__restrict__ q,
						  const float4 *__restrict__ x, uint32_t ld4)
{
	float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
#pragma unroll 4
	for (uint32_t j = 0; j < ld4; j++) {
		float4 u = __ldg(q + j), v = __ldg(x + j);
		if (IP) {
			a0 = fmaf(u.x, v.x, a0);
			a1 = fmaf(u.y, v.y, a1);
			a2 = fmaf(u.z, v.z, a2);
			a3 = fmaf(u.w, v.w, a3);
		} else {
			float t0 = u.x - v.x, t1 = u.y - v.y, t2 = u.z - v.z, t3 = u.w - v.w;
			a0 = fmaf(t0, t0, a0);
			a1 = fmaf(t1, t1, a1);
			a2 = fmaf(t2, t2, a2);
			a3 = fmaf(t3, t3, a3);
		}
	}
	float s = (a0 + a1) + (a2 + a3);
	float d = IP ? 1.f - s : s;
	return isnan(d) ? INFINITY : d;
}

/*
 * Merge the warp's buffer (bd/bi, nb entries, unsorted) into its list
 * (cd/ci, k entries, sorted) writing the k smallest of the union to nd/ni.
 * sd/si: PART_BUF scratch for the sorted buffer. All lanes of the warp call
 * it together, after a __syncwarp that published the buffer; it ends with
 * one, so nd/ni may be read (and bd/bi, sd/si, cd/ci overwritten) after it.
 */
static __device__ __forceinline__ void part_merge(const uint32_t *cd, const uint32_t *ci, uint32_t *nd,
				  uint32_t *ni, const uint32_t *bd, const uint32_t *bi,
				  uint32_t *sd, uint32_t *si, uint32_t nb, uint32_t k,
				  uint32_t lane)
{
	/* 1. sort the buffer: rank = entries before it (ties by position) */
	for (uint32_t j = lane; j < nb; j += 32) {
		float d = __uint_as_float(bd[j]);
		uint32_t r = bi[j], rank = 0;
		for (uint32_t t = 0; t < nb; t++) {
			float d2 = __uint_as_float(bd[t]);
			uint32_t r2 = bi[t];
			rank += key_less(d2, r2, d, r) || (d2 == d && r2 == r && t < j);
		}
		sd[rank] = bd[j];
		si[rank] = r;
	}
	__syncwarp();
	/* 2. list entry i: i list entries and the buffer entries strictly
	 * below it come first */
	for (uint32_t i = lane; i < k; i += 32) {
		float d = __uint_as_float(cd[i]);
		uint32_t r = ci[i], lo = 0, hi = nb;
		while (lo < hi) {
			uint32_t mid = (lo + hi) >> 1;
			if (key_less(__uint_as_float(sd[mid]), si[mid], d, r))
				lo = mid + 1;
			else
				hi = mid;
		}
		uint32_t rank = i + lo;
		if (rank < k) {
			nd[rank] = cd[i];
			ni[rank] = r;
		}
	}
	/* 3. sorted buffer entry s: s buffer entries and the list entries at
	 * or below it come first */
	for (uint32_t s = lane; s < nb && s < k; s += 32) {
		float d = __uint_as_float(sd[s]);
		uint32_t r = si[s], lo = 0, hi = k;
		while (lo < hi) {
			uint32_t mid = (lo + hi) >> 1;
			if (!key_less(d, r, __uint_as_float(cd[mid]), ci[mid]))
				lo = mid + 1;
			else
				hi = mid;
		}
		uint32_t rank = s + lo;
		if (rank < k) {
			nd[rank] = sd[s];
			ni[rank] = r;
		}
	}
	__syncwarp();
}

/* Shared memory words per warp: two lists of kp (d, row) and two buffers. */
static __host__ __device__ uint32_t part_smem_words(uint32_t kp)
{
	return 4 * kp + 4 * PART_BUF;
}

/*
 * One warp per pair. bad: the smallest pair index with a filter row outside
 * its cluster (UINT32_MAX when none); such rows are skipped.
 */
template <bool IP>
static __global__ void
k_part_scan(const float *__restrict__ rows, const uint64_t *__restrict__ off, uint32_t ld4,
	    const float *__restrict__ queries, const gpu_part_pair_t *__restrict__ pairs,
	    uint32_t npairs, const uint32_t *__restrict__ filt, uint32_t k, uint32_t kp,
	    uint32_t *__restrict__ out_i, float *__restrict__ out_d, uint32_t *bad)
{
	extern __shared__ uint32_t part_smem[];
	const uint32_t lane = threadIdx.x & 31, w = threadIdx.x >> 5;
	const uint32_t p = blockIdx.x * PART_WARPS + w;
	if (p >= npairs)
		return; /* the whole warp: nothing below syncs the block */
	uint32_t *s = part_smem + (size_t)w * part_smem_words(kp);
	uint32_t *cd = s, *ci = s + kp, *nd = s + 2 * kp, *ni = s + 3 * kp;
	uint32_t *bd = s + 4 * kp, *bi = bd + PART_BUF, *sd = bi + PART_BUF, *si = sd + PART_BUF;

	const gpu_part_pair_t pr = pairs[p];
	const uint64_t r0 = off[pr.cluster];
	const uint32_t n = (uint32_t)(off[pr.cluster + 1] - r0);
	const bool all = pr.filter_len == GPU_PART_ALL_ROWS;
	const uint32_t ncand = all ? n : pr.filter_len;
	const float4 *q4 = reinterpret_cast<const float4 *>(queries) + (size_t)pr.query * ld4;
	const float4 *x4 = reinterpret_cast<const float4 *>(rows) + r0 * ld4;
	const uint32_t *f = all ? filt : filt + pr.filter_off;

	for (uint32_t i = lane; i < k; i += 32) {
		cd[i] = __float_as_uint(INFINITY);
		ci[i] = UINT32_MAX;
	}
	float thd = INFINITY; /* the current k-th: (thd, thi) */
	uint32_t thi = UINT32_MAX, nb = 0;
	/* ncand <= GPU_PART_CLUSTER_ROWS_MAX (checked on the host): b0 + 32
	 * does not wrap */
	for (uint32_t b0 = 0; b0 < ncand; b0 += 32) {
		uint32_t i = b0 + lane, row = UINT32_MAX;
		float d = INFINITY;
		bool ok = false;
		if (i < ncand) {
			row = all ? i : __ldg(f + i);
			ok = row < n;
			if (!ok)
				atomicMin(bad, p);
		}
		if (ok)
			d = part_dist<IP>(q4, x4 + (size_t)row * ld4, ld4);
		bool admit = ok && key_less(d, row, thd, thi);
		uint32_t m = __ballot_sync(PART_FULL_MASK, admit);
		if (admit) {
			uint32_t pos = nb + __popc(m & ((1u << lane) - 1u));
			bd[pos] = __float_as_uint(d);
			bi[pos] = row;
		}
		nb += __popc(m); /* warp-uniform, so are the branches below */
		if (nb > PART_BUF - 32 || (nb && b0 + 32 >= ncand)) {
			__syncwarp();
			part_merge(cd, ci, nd, ni, bd, bi, sd, si, nb, k, lane);
			uint32_t *t = cd;
			cd = nd;
			nd = t;
			t = ci;
			ci = ni;
			ni = t;
			nb = 0;
			thd = __uint_as_float(cd[k - 1]);
			thi = ci[k - 1];
		}
	}
	__syncwarp();
	for (uint32_t i = lane; i < k; i += 32) {
		out_i[(size_t)p * k + i] = ci[i];
		out_d[(size_t)p * k + i] = __uint_as_float(cd[i]);
	}
}

/* ------------------------------------------------------------ host */

extern "C" int gpu_parts_create(gpu_ctx_t *ctx, const float *rows, uint64_t n, uint32_t dim,
				const uint64_t *offsets, uint32_t nclusters, gpu_metric_t metric,
				gpu_parts_t **out, vela_err_t *err)
{
	int rc = 0;
	if (out)
		*out = NULL;
	if (!ctx || !out || !offsets || (n && !rows) || dim < 1 || dim > GPU_DIM_MAX ||
	    (unsigned)metric > GPU_METRIC_IP)
		return gpu_errf(err, VELA_EINVAL, "gpu parts: bad parameters");
	if (offsets[0] != 0 || offsets[nclusters] != n)
		return gpu_errf(err, VELA_EINVAL,
				 "gpu parts: offsets must start at 0 and end at n = %llu",
				 (unsigned long long)n);
	for (uint32_t c = 0; c < nclusters; c++)
		if (offsets[c + 1] < offsets[c] ||
		    offsets[c + 1] - offsets[c] > GPU_PART_CLUSTER_ROWS_MAX)
			return gpu_errf(err, VELA_EINVAL,
					 "gpu parts: cluster %u: offsets %llu..%llu (decreasing, or "
					 "more than %u rows)",
					 c, (unsigned long long)offsets[c],
					 (unsigned long long)offsets[c + 1], GPU_PART_CLUSTER_ROWS_MAX);
	gpu_parts_t *g = (gpu_parts_t *)calloc(1, sizeof(*g));
	uint64_t *hoff = (uint64_t *)malloc(((size_t)nclusters + 1) * sizeof(uint64_t));
	if (!g || !hoff) {
		free(g);
		free(hoff);
		return gpu_errf(err, VELA_ENOMEM, "gpu parts: out of host memory");
	}
	memcpy(hoff, offsets, ((size_t)nclusters + 1) * sizeof(uint64_t));
	g->ctx = ctx;
	g->dim = dim;
	g->ld = GPU_ROUND_UP(dim, 4);
	g->nclusters = nclusters;
	g->metric = metric;
	g->n = n;
	g->hoff = hoff;
	size_t rowb = (size_t)g->ld * sizeof(float), bytes = (n ? n : 1) * rowb;
	cudaStream_t st = ctx->stream[0];
	pthread_mutex_lock(&ctx->lock);
	GPU_CK(cudaSetDevice(ctx->device), "cudaSetDevice");
	for (int i = 0; i < 4; i++)
		GPU_CK(cudaEventCreate(&g->ev[i]), "gpu parts: events");
	GPU_CK(cudaMalloc((void **)&g->rows, bytes), "gpu parts: rows");
	GPU_CK(cudaMalloc((void **)&g->off, ((size_t)nclusters + 1) * sizeof(uint64_t)),
	       "gpu parts: offsets");
	GPU_CK(cudaMemcpyAsync(g->off, offsets, ((size_t)nclusters + 1) * sizeof(uint64_t),
			       cudaMemcpyHostToDevice, st), "gpu parts: upload offsets");
	if (g->ld != dim || n == 0)
		GPU_CK(cudaMemsetAsync(g->rows, 0, bytes, st), "gpu parts: rows");
	if (n && g->ld == dim)
		GPU_CK(cudaMemcpyAsync(g->rows, rows, n * rowb, cudaMemcpyHostToDevice, st),
		       "gpu parts: upload rows");
	else if (n)
		GPU_CK(cudaMemcpy2DAsync(g->rows, rowb, rows, dim * sizeof(float),
					 dim * sizeof(float), n, cudaMemcpyHostToDevice, st),
		       "gpu parts: upload rows");
	GPU_CK(cudaStreamSynchronize(st), "gpu parts: upload");
out:
	pthread_mutex_unlock(&ctx->lock);
	if (rc) {
		gpu_parts_free(g);
		return rc;
	}
	*out = g;
	return 0;
}

extern "C" void gpu_parts_last_times(const gpu_parts_t *g, float ms[3])
{
	for (int i = 0; i < 3; i++)
		ms[i] = g ? g->times[i] : 0.f;
}

extern "C" size_t gpu_parts_bytes(const gpu_parts_t *g)
{
	if (!g)
		return 0;
	return (g->n ? g->n : 1) * (size_t)g->ld * sizeof(float) +
	       ((size_t)g->nclusters + 1) * sizeof(uint64_t) + g->scratch_cap;
}

extern "C" void gpu_parts_free(gpu_parts_t *g)
{
	if (!g)
		return;
	cudaSetDevice(g->ctx->device);
	cudaFree(g->rows);
	cudaFree(g->off);
	cudaFree(g->scratch);
	for (int i = 0; i < 4; i++)
		if (g->ev[i])
			cudaEventDestroy(g->ev[i]);
	free(g->hoff);
	free(g);
}

#define PART_ALIGN 256

/* Byte offsets of one call's arrays in the scratch. */
typedef struct part_layout {
	size_t q, pairs, filt, oi, od, total;
} part_layout_t;

static part_layout_t part_layout(const gpu_parts_t *g, uint32_t nq, uint32_t npairs,
				 uint32_t nfilt, uint32_t k)
{
	part_layout_t L;
	size_t o = PART_ALIGN; /* [0, 4): the bad-pair flag */
	L.q = o;
	o += GPU_ROUND_UP((size_t)nq * g->ld * sizeof(float), PART_ALIGN);
	L.pairs = o;
	o += GPU_ROUND_UP((size_t)npairs * sizeof(gpu_part_pair_t), PART_ALIGN);
	L.filt = o;
	o += GPU_ROUND_UP((size_t)nfilt * sizeof(uint32_t), PART_ALIGN);
	L.oi = o;
	o += GPU_ROUND_UP((size_t)npairs * k * sizeof(uint32_t), PART_ALIGN);
	L.od = o;
	o += GPU_ROUND_UP((size_t)npairs * k * sizeof(float), PART_ALIGN);
	L.total = o;
	return L;
}

/* Grow the scratch to `need` bytes (by half again at least: batches vary). */
static int part_reserve(gpu_parts_t *g, size_t need, vela_err_t *err)
{
	if (need <= g->scratch_cap)
		return 0;
	size_t cap = g->scratch_cap + g->scratch_cap / 2;
	cap = GPU_ROUND_UP(cap > need ? cap : need, (size_t)1 << 20);
	cudaFree(g->scratch); /* the last call synchronised its stream */
	g->scratch = NULL;
	g->scratch_cap = 0;
	cudaError_t e = cudaMalloc(&g->scratch, cap);
	if (e != cudaSuccess) {
		(void)cudaGetLastError();
		g->scratch = NULL;
		return gpu_errf(err, e == cudaErrorMemoryAllocation ? VELA_ENOMEM : VELA_EIO,
				 "gpu parts: scratch of %zu bytes: %s", cap, cudaGetErrorString(e));
	}
	g->scratch_cap = cap;
	return 0;
}

/* The message for a filter row outside its cluster (found by the kernel). */
static int part_bad_row(const gpu_parts_t *g, const gpu_part_pair_t *pairs, uint32_t p,
			const uint32_t *filt, vela_err_t *err)
{
	const gpu_part_pair_t *pr = &pairs[p];
	uint64_t n = g->hoff[pr->cluster + 1] - g->hoff[pr->cluster];
	for (uint32_t i = 0; i < pr->filter_len; i++)
		if (filt[(size_t)pr->filter_off + i] >= n)
			return gpu_errf(err, VELA_EINVAL,
					 "gpu parts scan: pair %u: filter entry %u is row %u, "
					 "cluster %u has %llu rows",
					 p, i, filt[(size_t)pr->filter_off + i], pr->cluster,
					 (unsigned long long)n);
	return gpu_errf(err, VELA_EINVAL, "gpu parts scan: pair %u: a filter row outside its "
			 "cluster", p);
}

/* Phase boundary i of a scan (timing only: a failure is ignored). */
static void part_event(gpu_parts_t *g, int i, cudaStream_t st)
{
	if (g->ev[i] && cudaEventRecord(g->ev[i], st) != cudaSuccess)
		(void)cudaGetLastError();
}

static int scan_locked(gpu_parts_t *g, const float *queries, uint32_t nq,
		       const gpu_part_pair_t *pairs, uint32_t npairs, const uint32_t *filt,
		       uint32_t nfilt, uint32_t k, uint32_t *out_ids, float *out_dists,
		       vela_err_t *err)
{
	int rc = 0;
	gpu_ctx_t *ctx = g->ctx;
	cudaStream_t st = ctx->stream[0];
	part_layout_t L = part_layout(g, nq, npairs, nfilt, k);
	uint32_t kp = GPU_ROUND_UP(k, 32), bad = UINT32_MAX;
	size_t smem = (size_t)PART_WARPS * part_smem_words(kp) * sizeof(uint32_t);
	size_t nout = (size_t)npairs * k;
	char *s;
	unsigned grid = (unsigned)(((uint64_t)npairs + PART_WARPS - 1) / PART_WARPS);
	if (smem > ctx->smem_optin)
		return gpu_errf(err, VELA_EINVAL, "gpu parts scan: k = %u needs %zu bytes of "
				 "shared memory per block, the device has %zu", k, smem,
				 ctx->smem_optin);
	GPU_CK(cudaSetDevice(ctx->device), "cudaSetDevice");
	if ((rc = part_reserve(g, L.total, err)))
		goto out;
	s = (char *)g->scratch;
	part_event(g, 0, st);
	GPU_CK(cudaMemsetAsync(s, 0xff, sizeof(uint32_t), st), "gpu parts scan: flag");
	if (nq && g->ld == g->dim) {
		GPU_CK(cudaMemcpyAsync(s + L.q, queries, (size_t)nq * g->dim * sizeof(float),
				       cudaMemcpyHostToDevice, st), "gpu parts scan: upload queries");
	} else if (nq) {
		/* zero padding: the scratch holds an earlier call's bytes */
		GPU_CK(cudaMemsetAsync(s + L.q, 0, (size_t)nq * g->ld * sizeof(float), st),
		       "gpu parts scan: queries");
		GPU_CK(cudaMemcpy2DAsync(s + L.q, g->ld * sizeof(float), queries,
					 g->dim * sizeof(float), g->dim * sizeof(float), nq,
					 cudaMemcpyHostToDevice, st), "gpu parts scan: upload queries");
	}
	GPU_CK(cudaMemcpyAsync(s + L.pairs, pairs, (size_t)npairs * sizeof(gpu_part_pair_t),
			       cudaMemcpyHostToDevice, st), "gpu parts scan: upload pairs");
	if (nfilt)
		GPU_CK(cudaMemcpyAsync(s + L.filt, filt, (size_t)nfilt * sizeof(uint32_t),
				       cudaMemcpyHostToDevice, st), "gpu parts scan: upload filters");
	part_event(g, 1, st);
	if (g->metric == GPU_METRIC_IP) {
		if (smem > 48 * 1024)
			GPU_CK(cudaFuncSetAttribute(k_part_scan<true>,
						    cudaFuncAttributeMaxDynamicSharedMemorySize,
						    (int)smem), "gpu parts scan: shared memory");
		k_part_scan<true><<<grid, PART_WARPS * 32, smem, st>>>(
			g->rows, g->off, g->ld / 4, (const float *)(s + L.q),
			(const gpu_part_pair_t *)(s + L.pairs), npairs, (const uint32_t *)(s + L.filt),
			k, kp, (uint32_t *)(s + L.oi), (float *)(s + L.od), (uint32_t *)s);
	} else {
		if (smem > 48 * 1024)
			GPU_CK(cudaFuncSetAttribute(k_part_scan<false>,
						    cudaFuncAttributeMaxDynamicSharedMemorySize,
						    (int)smem), "gpu parts scan: shared memory");
		k_part_scan<false><<<grid, PART_WARPS * 32, smem, st>>>(
			g->rows, g->off, g->ld / 4, (const float *)(s + L.q),
			(const gpu_part_pair_t *)(s + L.pairs), npairs, (const uint32_t *)(s + L.filt),
			k, kp, (uint32_t *)(s + L.oi), (float *)(s + L.od), (uint32_t *)s);
	}
	GPU_CKL("gpu parts scan: kernel");
	part_event(g, 2, st);
	GPU_CK(cudaMemcpyAsync(out_ids, s + L.oi, nout * sizeof(uint32_t), cudaMemcpyDeviceToHost,
			       st), "gpu parts scan: download");
	GPU_CK(cudaMemcpyAsync(out_dists, s + L.od, nout * sizeof(float), cudaMemcpyDeviceToHost,
			       st), "gpu parts scan: download");
	GPU_CK(cudaMemcpyAsync(&bad, s, sizeof(uint32_t), cudaMemcpyDeviceToHost, st),
	       "gpu parts scan: download");
	part_event(g, 3, st);
	GPU_CK(cudaStreamSynchronize(st), "gpu parts scan");
	for (int i = 0; i < 3; i++) {
		g->times[i] = 0.f;
		if (g->ev[0] && g->ev[1] && g->ev[2] && g->ev[3] &&
		    cudaEventElapsedTime(&g->times[i], g->ev[i], g->ev[i + 1]) != cudaSuccess) {
			(void)cudaGetLastError();
			g->times[i] = 0.f;
		}
	}
	if (bad != UINT32_MAX)
		rc = part_bad_row(g, pairs, bad < npairs ? bad : 0, filt, err);
out:
	if (rc)
		cudaStreamSynchronize(st); /* nothing of this call left in flight */
	return rc;
}

extern "C" int gpu_parts_scan(gpu_parts_t *g, const float *queries, uint32_t nq,
			      const gpu_part_pair_t *pairs, uint32_t npairs, const uint32_t *filt,
			      uint32_t nfilt, uint32_t k, uint32_t *out_ids, float *out_dists,
			      vela_err_t *err)
{
	if (!g || (npairs && (!pairs || !out_ids || !out_dists)) || (nq && !queries) ||
	    (nfilt && !filt))
		return gpu_errf(err, VELA_EINVAL, "gpu parts scan: NULL argument");
	if (k < 1 || k > GPU_PART_K_MAX)
		return gpu_errf(err, VELA_EINVAL, "gpu parts scan: k = %u, must be 1..%d", k,
				 GPU_PART_K_MAX);
	for (uint32_t p = 0; p < npairs; p++) {
		const gpu_part_pair_t *pr = &pairs[p];
		if (pr->cluster >= g->nclusters || pr->query >= nq ||
		    (pr->filter_len != GPU_PART_ALL_ROWS &&
		     ((uint64_t)pr->filter_off + pr->filter_len > nfilt ||
		      pr->filter_len > g->hoff[pr->cluster + 1] - g->hoff[pr->cluster])))
			return gpu_errf(err, VELA_EINVAL,
					 "gpu parts scan: pair %u: cluster %u of %u, query %u of %u, "
					 "filter %u + %u of %u (at most the cluster's rows)",
					 p, pr->cluster, g->nclusters, pr->query, nq, pr->filter_off,
					 pr->filter_len, nfilt);
	}
	if (npairs == 0)
		return 0;
	pthread_mutex_lock(&g->ctx->lock);
	int rc = scan_locked(g, queries, nq, pairs, npairs, filt, nfilt, k, out_ids, out_dists,
			     err);
	pthread_mutex_unlock(&g->ctx->lock);
	return rc;
}
