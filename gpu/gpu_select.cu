/*
 * gpu_select.cu — the kernels around the GEMM tiles: query preparation, the
 * selection that consumes each tile (the "epilogue": row norms and LVQ
 * scales are applied as the tile is read, so no distance matrix is ever
 * written), and the final exact re-ranking.
 *
 * Selection keeps, per query, a candidate list of kc entries in device memory
 * across tiles.
 *  - kc <= GPU_K_FAST_MAX: filtered block select. A block owns one query;
 *    each thread reads 2 x 16 bytes of the tile per round, and an element
 *    enters a shared-memory buffer only if it is <= the query's current
 *    kc-th distance (the threshold). When the buffer could overflow, the
 *    block bitonic-sorts it and keeps kc; the threshold tightens. After the
 *    first tile almost nothing passes, so a tile costs one read and one
 *    compare per element (the "filtered" warp select of Johnson et al.,
 *    arXiv 1702.08734 §4, with a block-wide queue).
 *  - kc > GPU_K_FAST_MAX: radix select. The kc-th smallest of the old list
 *    plus the tile row is found with four 8-bit histogram passes over the
 *    order-preserving bits of the float (the AIR top-k scheme), then the
 *    survivors are gathered; ties at the kc-th value are taken in arrival
 *    order.
 */
#include <math.h>

#include "gpu/gpu_impl.h"

#define SEL_CAP 4096     /* shared buffer entries of the filtered select */
#define SEL_ELEMS 16      /* tile entries per thread per pass (16-byte loads) */
#define SEL_MERGE_MAX 64  /* newcomers merged by one warp instead of a sort */

/* ------------------------------------------------------------ helpers */

static __device__ __forceinline__ bool pair_less(float da, uint32_t ia, float db, uint32_t ib)
{
	return da < db || (da == db && ia < ib);
}

/* Ascending bitonic sort of d/id[0..count) in shared memory by (distance,
 * id); pads to a power of two with (INF, UINT32_MAX). Caller has synced;
 * returns synced. n must stay <= the buffers' capacity. */
static __device__ void block_sort(float *d, uint32_t *id, uint32_t count)
{
	uint32_t n = 2;
	while (n < count)
		n <<= 1;
	for (uint32_t i = count + threadIdx.x; i < n; i += blockDim.x) {
		d[i] = INFINITY;
		id[i] = UINT32_MAX;
	}
	__syncthreads();
	for (uint32_t size = 2; size <= n; size <<= 1) {
		for (uint32_t stride = size >> 1; stride > 0; stride >>= 1) {
			for (uint32_t t = threadIdx.x; t < n / 2; t += blockDim.x) {
				uint32_t i = 2 * t - (t & (stride - 1)), j = i + stride;
				bool up = (i & size) == 0;
				if (pair_less(d[j], id[j], d[i], id[i]) == up) {
					float td = d[i];
					uint32_t ti = id[i];
					d[i] = d[j];
					id[i] = id[j];
					d[j] = td;
					id[j] = ti;
				}
			}
			__syncthreads();
		}
	}
}

static __device__ __forceinline__ float block_sum(float v, float *red)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	__syncthreads();
	if ((threadIdx.x & 31) == 0)
		red[threadIdx.x / 32] = v;
	__syncthreads();
	float s = 0.f;
	for (int w = 0; w < (int)(blockDim.x / 32); w++)
		s += red[w];
	return s;
}

static __device__ __forceinline__ float block_max(float v, float *red)
{
	for (int o = 16; o > 0; o >>= 1)
		v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	__syncthreads();
	if ((threadIdx.x & 31) == 0)
		red[threadIdx.x / 32] = v;
	__syncthreads();
	float s = 0.f;
	for (int w = 0; w < (int)(blockDim.x / 32); w++)
		s = fmaxf(s, red[w]);
	return s;
}

/* ------------------------------------------------------------ queries */

template <typename T> static __device__ T qenc(float v);
template <> __device__ __half qenc<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __nv_bfloat16 qenc<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
static __device__ float qdec(__half v) { return __half2float(v); }
static __device__ float qdec(__nv_bfloat16 v) { return __bfloat162float(v); }

/* One block per query. F32: the norm only. F16/BF16: convert + norm of the
 * converted query, so L2 = |q|^2 + |x|^2 - 2<q,x> is exact for what the
 * GEMM multiplied. */
template <typename T>
static __global__ void k_prep_half(const float *qf, uint32_t ld, T *qe, float *qnorm, float *qoff)
{
	__shared__ float red[32];
	const float *q = qf + (size_t)blockIdx.x * ld;
	T *e = qe + (size_t)blockIdx.x * ld;
	float acc = 0.f;
	for (uint32_t c = threadIdx.x; c < ld; c += blockDim.x) {
		T v = qenc<T>(q[c]);
		e[c] = v;
		float b = qdec(v);
		acc = fmaf(b, b, acc);
	}
	acc = block_sum(acc, red);
	if (threadIdx.x == 0) {
		qnorm[blockIdx.x] = acc;
		qoff[blockIdx.x] = 0.f;
	}
}

static __global__ void k_prep_f32(const float *qf, uint32_t ld, float *qnorm, float *qoff)
{
	__shared__ float red[32];
	const float *q = qf + (size_t)blockIdx.x * ld;
	float acc = 0.f;
	for (uint32_t c = threadIdx.x; c < ld; c += blockDim.x)
		acc = fmaf(q[c], q[c], acc);
	acc = block_sum(acc, red);
	if (threadIdx.x == 0) {
		qnorm[blockIdx.x] = acc;
		qoff[blockIdx.x] = 0.f;
	}
}

/* LVQ-8 queries: symmetric int8 with one scale per query. L2 works on the
 * centred query q - mu; IP keeps q and adds back -<q, mu> at the end. */
static __global__ void k_prep_lvq(const float *qf, uint32_t ld, uint32_t dim, const float *mean,
				  int l2, int8_t *qe, float *qnorm, float *qscale, float *qsum,
				  float *qoff)
{
	__shared__ float red[32];
	const float *q = qf + (size_t)blockIdx.x * ld;
	int8_t *e = qe + (size_t)blockIdx.x * ld;
	float amax = 0.f, sum = 0.f, nrm = 0.f, qmu = 0.f;
	for (uint32_t c = threadIdx.x; c < dim; c += blockDim.x) {
		float v = l2 ? q[c] - mean[c] : q[c];
		amax = fmaxf(amax, fabsf(v));
		sum += v;
		nrm = fmaf(v, v, nrm);
		qmu = fmaf(q[c], mean[c], qmu);
	}
	amax = block_max(amax, red);
	sum = block_sum(sum, red);
	nrm = block_sum(nrm, red);
	qmu = block_sum(qmu, red);
	float s = amax > 0.f ? amax / 127.f : 1.f, inv = 1.f / s;
	for (uint32_t c = threadIdx.x; c < ld; c += blockDim.x) {
		float v = c < dim ? (l2 ? q[c] - mean[c] : q[c]) : 0.f;
		e[c] = (int8_t)fminf(fmaxf(rintf(v * inv), -127.f), 127.f);
	}
	if (threadIdx.x == 0) {
		qnorm[blockIdx.x] = nrm;
		qscale[blockIdx.x] = s;
		qsum[blockIdx.x] = sum;
		qoff[blockIdx.x] = l2 ? 0.f : -qmu;
	}
}

int gpu_launch_prep_queries(gpu_matrix_t *m, gpu_qtile_t *t, uint32_t nq, cudaStream_t st,
			    vela_err_t *err)
{
	int rc = 0;
	uint32_t ld = m->ld;
	switch (m->p.elem) {
	case GPU_ELEM_F32:
		k_prep_f32<<<nq, 256, 0, st>>>(t->qf32, ld, t->qnorm, t->qoff);
		break;
	case GPU_ELEM_F16:
		k_prep_half<__half><<<nq, 256, 0, st>>>(t->qf32, ld, (__half *)t->qenc, t->qnorm,
							t->qoff);
		break;
	case GPU_ELEM_BF16:
		k_prep_half<__nv_bfloat16><<<nq, 256, 0, st>>>(t->qf32, ld,
							       (__nv_bfloat16 *)t->qenc,
							       t->qnorm, t->qoff);
		break;
	case GPU_ELEM_LVQ8:
		k_prep_lvq<<<nq, 256, 0, st>>>(t->qf32, ld, m->p.dim, m->mean,
					       m->p.metric == GPU_METRIC_L2, (int8_t *)t->qenc,
					       t->qnorm, t->qscale, t->qsum, t->qoff);
		break;
	}
	GPU_CKL("query kernel");
out:
	return rc;
}

static __global__ void k_best_init(float *d, uint32_t *id, uint64_t n)
{
	uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) {
		d[i] = INFINITY;
		id[i] = UINT32_MAX;
	}
}

int gpu_launch_best_init(gpu_qtile_t *t, uint32_t nq, uint32_t kc, cudaStream_t st,
			 vela_err_t *err)
{
	int rc = 0;
	uint64_t n = (uint64_t)nq * kc;
	k_best_init<<<(unsigned)((n + 255) / 256), 256, 0, st>>>(t->best_d, t->best_i, n);
	GPU_CKL("init kernel");
out:
	return rc;
}

/* ------------------------------------------------------------ tile epilogue */

/* What the selection needs to turn a GEMM entry into the value it ranks by
 * (the final distance minus a per-query constant). */
struct epi {
	const float *norms;  /* at the tile's first row; NULL for IP */
	const float *rscale; /* LVQ */
	const float *rbias;  /* LVQ */
	float qscale, qsum;  /* LVQ, this query */
	float coef;          /* -2 (L2) or -1 (IP) */
};

static __device__ __forceinline__ float tf(float v) { return v; }
static __device__ __forceinline__ float tf(int32_t v) { return (float)v; }
static __device__ __forceinline__ float tf(__nv_bfloat16 v) { return __bfloat162float(v); }

/* The value a tile entry ranks by: |x|^2 - 2<q,x> (L2) or -<q,x> (IP), with
 * the LVQ scale and bias of the row and the scale and sum of the query. */
template <bool LVQ, typename TT>
static __device__ __forceinline__ float epi_val(const epi &e, TT t, float nrm, float sc, float bi)
{
	float dot = LVQ ? fmaf(e.qscale * sc, tf(t), bi * e.qsum) : tf(t);
	return nrm + e.coef * dot;
}

template <bool LVQ, typename TT>
static __device__ __forceinline__ float epi_value(const epi &e, TT t, uint32_t r)
{
	return epi_val<LVQ>(e, t, e.norms ? e.norms[r] : 0.f, LVQ ? e.rscale[r] : 0.f,
			    LVQ ? e.rbias[r] : 0.f);
}

/* NV per-row parameters of rows c0.. (norms, LVQ scales): 16-byte loads when
 * aligned (c0 < nrows, and the arrays carry GPU_ALIGN spare rows, so the
 * last vector stays inside them), else clamped scalar loads; 0 without an
 * array or past the tile.
 * Scalar loads strided across the warp made the selection L1-bound. */
template <int NV>
static __device__ __forceinline__ void row_params(const float *p, uint32_t c0, uint32_t nrows,
						  float *o)
{
	if (!p || c0 >= nrows) { /* no array, or lanes past the tile (masked) */
#pragma unroll
		for (int u = 0; u < NV; u++)
			o[u] = 0.f;
	} else if ((((uintptr_t)(p + c0)) & 15) == 0) {
#pragma unroll
		for (int v = 0; v < NV / 4; v++) {
			float4 x = *reinterpret_cast<const float4 *>(p + c0 + 4 * v);
			o[4 * v] = x.x, o[4 * v + 1] = x.y, o[4 * v + 2] = x.z, o[4 * v + 3] = x.w;
		}
	} else {
#pragma unroll
		for (int u = 0; u < NV; u++)
			o[u] = p[min(c0 + u, nrows - 1)];
	}
}

/* 16-byte loads of a tile row: 4 floats or int32, or 8 bfloat16. */
template <typename TT> struct tvec;
template <> struct tvec<float> {
	enum { N = 4 };
	static __device__ __forceinline__ void get(const float *p, float *o)
	{
		float4 v = *reinterpret_cast<const float4 *>(p);
		o[0] = v.x, o[1] = v.y, o[2] = v.z, o[3] = v.w;
	}
};
template <> struct tvec<int32_t> {
	enum { N = 4 };
	static __device__ __forceinline__ void get(const int32_t *p, int32_t *o)
	{
		int4 v = *reinterpret_cast<const int4 *>(p);
		o[0] = v.x, o[1] = v.y, o[2] = v.z, o[3] = v.w;
	}
};
template <> struct tvec<__nv_bfloat16> {
	enum { N = 8 };
	static __device__ __forceinline__ void get(const __nv_bfloat16 *p, __nv_bfloat16 *o)
	{
		uint4 v = *reinterpret_cast<const uint4 *>(p);
		const __nv_bfloat16 *h = reinterpret_cast<const __nv_bfloat16 *>(&v);
#pragma unroll
		for (int i = 0; i < 8; i++)
			o[i] = h[i];
	}
};

static __device__ __forceinline__ bool row_allowed(const uint64_t *filter, uint64_t row)
{
	return !filter || ((filter[row >> 6] >> (row & 63)) & 1u);
}

static __device__ epi epi_make(const float *norms, const float *rs,
			       const float *rb, const float *qs, const float *qsum, float coef,
			       uint32_t q)
{
	epi e;
	e.norms = norms;
	e.rscale = rs;
	e.rbias = rb;
	e.qscale = qs ? qs[q] : 0.f;
	e.qsum = qsum ? qsum[q] : 0.f;
	e.coef = coef;
	return e;
}

/* Merge m unsorted newcomers d/id[kc..kc+m) into the sorted list d/id[0..kc)
 * and write the kc best to out_d/out_i, by one warp with no block barrier:
 * each entry's final place is its rank (merge path by counting). Entries
 * are distinct pairs except the (INF, UINT32_MAX) padding, which only ever
 * sits in the old list, where its index keeps the places distinct. */
static __device__ void warp_merge(const float *d, const uint32_t *id, uint32_t kc, uint32_t m,
				  float *out_d, uint32_t *out_i)
{
	const float *nd = d + kc;
	const uint32_t *ni = id + kc;
	for (uint32_t i = threadIdx.x & 31; i < kc; i += 32) {
		uint32_t pos = i;
		for (uint32_t j = 0; j < m; j++)
			pos += pair_less(nd[j], ni[j], d[i], id[i]);
		if (pos < kc) {
			out_d[pos] = d[i];
			out_i[pos] = id[i];
		}
	}
	for (uint32_t j = threadIdx.x & 31; j < m; j += 32) {
		uint32_t lo = 0, hi = kc; /* old entries before newcomer j */
		while (lo < hi) {
			uint32_t mid = (lo + hi) / 2;
			if (pair_less(d[mid], id[mid], nd[j], ni[j]))
				lo = mid + 1;
			else
				hi = mid;
		}
		uint32_t pos = lo;
		for (uint32_t t = 0; t < m; t++)
			pos += pair_less(nd[t], ni[t], nd[j], ni[j]);
		if (pos < kc) {
			out_d[pos] = nd[j];
			out_i[pos] = ni[j];
		}
	}
}

/* Filtered block select, one block per query of the tile (see the top). */
template <typename TT, bool LVQ>
static __global__ void __launch_bounds__(GPU_SELECT_THREADS, 4)
k_select_small(const TT *tile, uint32_t ldt, uint32_t nrows, uint64_t row0, const float *norms,
	       const float *rs, const float *rb, const float *qs, const float *qsum, float coef,
	       const uint64_t *filter, float *best_d, uint32_t *best_i, uint32_t kc)
{
	__shared__ float sd[SEL_CAP];
	__shared__ uint32_t si[SEL_CAP];
	__shared__ uint32_t s_count;
	__shared__ float s_tau;
	uint32_t q = blockIdx.x;
	epi e = epi_make(norms, rs, rb, qs, qsum, coef, q);
	float *bd = best_d + (size_t)q * kc;
	uint32_t *bi = best_i + (size_t)q * kc;
	for (uint32_t i = threadIdx.x; i < kc; i += blockDim.x) {
		sd[i] = bd[i];
		si[i] = bi[i];
	}
	if (threadIdx.x == 0) {
		s_count = kc;
		s_tau = bd[kc - 1];
	}
	__syncthreads();
	const TT *row = tile + (size_t)q * ldt;
	/* A BF16 tile rounds many distances to the same value: admitting ties
	 * with the threshold would flood the buffer with equal entries (each a
	 * sort). Those tiles are re-ranked exactly anyway, so they admit only
	 * values strictly below it; 32-bit tiles keep ties (row-number order). */
	const bool STRICT = sizeof(TT) == 2;
	/* A pass issues SEL_LOADS 16-byte loads per thread before it looks at
	 * any (memory-level parallelism), then inserts them one sub-round at a
	 * time: a sub-round adds at most SUBW entries, so the buffer is sorted
	 * down to kc first whenever fewer than SUBW slots are free. */
	const int NV = tvec<TT>::N, SUBW = GPU_SELECT_THREADS * NV;
	const int SEL_LOADS = SEL_ELEMS / tvec<TT>::N;
	for (uint32_t base = 0; base < nrows; base += SEL_LOADS * SUBW) {
		/* Zeroed, not left undefined: lanes past the tile still compute a
		 * (masked) value, and an undefined one is poison to the compiler,
		 * which may then fold the whole `any` vote away (seen on an H200:
		 * a k = 1 search lost its nearest row in a tile's last pass). */
		TT tv[SEL_ELEMS / tvec<TT>::N][tvec<TT>::N] = {};
#pragma unroll
		for (int j = 0; j < SEL_LOADS; j++) {
			uint32_t c0 = base + j * SUBW + NV * threadIdx.x;
			if (c0 < nrows)
				tvec<TT>::get(row + c0, tv[j]);
		}
		/* every value of the pass, branch-free */
		float dv[SEL_ELEMS / tvec<TT>::N][tvec<TT>::N];
#pragma unroll
		for (int j = 0; j < SEL_LOADS; j++) {
			uint32_t c0 = base + j * SUBW + NV * threadIdx.x;
			float nrm[tvec<TT>::N], sc[tvec<TT>::N], bi[tvec<TT>::N];
			row_params<tvec<TT>::N>(e.norms, c0, nrows, nrm);
			row_params<tvec<TT>::N>(LVQ ? e.rscale : NULL, c0, nrows, sc);
			row_params<tvec<TT>::N>(LVQ ? e.rbias : NULL, c0, nrows, bi);
#pragma unroll
			for (int u = 0; u < NV; u++)
				dv[j][u] = epi_val<LVQ>(e, tv[j][u], nrm[u], sc[u], bi[u]);
		}
		/* Fast path: once the threshold is tight almost no pass holds a
		 * candidate; one block-wide vote then skips the sub-rounds. */
		float tau0 = s_tau;
		int any = 0;
#pragma unroll
		for (int j = 0; j < SEL_LOADS; j++) {
			uint32_t c0 = base + j * SUBW + NV * threadIdx.x;
#pragma unroll
			for (int u = 0; u < NV; u++)
				any |= (c0 + u < nrows) & (STRICT ? dv[j][u] < tau0 : dv[j][u] <= tau0);
		}
		if (!__syncthreads_or(any))
			continue;
#pragma unroll
		for (int j = 0; j < SEL_LOADS; j++) {
			if (base + j * SUBW >= nrows) /* uniform */
				break;
			if (s_count > SEL_CAP - SUBW) { /* uniform: read after a barrier */
				block_sort(sd, si, s_count);
				if (threadIdx.x == 0) {
					s_count = kc;
					s_tau = sd[kc - 1];
				}
				__syncthreads();
			}
			float tau = s_tau;
			uint32_t c0 = base + j * SUBW + NV * threadIdx.x;
#pragma unroll
			for (int u = 0; u < NV; u++) {
				uint32_t c = c0 + u;
				bool pass = STRICT ? dv[j][u] < tau : dv[j][u] <= tau;
				if (c < nrows && pass && row_allowed(filter, row0 + c)) {
					uint32_t pos = atomicAdd(&s_count, 1u);
					sd[pos] = dv[j][u];
					si[pos] = (uint32_t)(row0 + c);
				}
			}
			__syncthreads();
		}
	}
	uint32_t count = s_count;
	if (count > kc + SEL_MERGE_MAX) {
		block_sort(sd, si, count);
		for (uint32_t i = threadIdx.x; i < kc; i += blockDim.x) {
			bd[i] = sd[i];
			bi[i] = si[i];
		}
	} else if (count > kc && threadIdx.x < 32) {
		warp_merge(sd, si, kc, count - kc, bd, bi);
	}
}

/* Order-preserving key of a float (smaller float, smaller key). */
static __device__ __forceinline__ uint32_t fkey(float f)
{
	uint32_t u = __float_as_uint(f);
	return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* Candidate c of the radix select: c < kc is the old list, else tile column
 * c - kc. Returns false when it is no candidate (empty slot, filtered out,
 * not finite). */
template <typename TT, bool LVQ>
static __device__ __forceinline__ bool radix_cand(const TT *row, const epi &e, uint32_t c,
						  uint32_t kc, uint64_t row0,
						  const uint64_t *filter, const float *bd,
						  const uint32_t *bi, float *dist, uint32_t *id)
{
	if (c < kc) {
		*dist = bd[c];
		*id = bi[c];
	} else {
		uint32_t r = c - kc;
		if (!row_allowed(filter, row0 + r))
			return false;
		*dist = epi_value<LVQ>(e, row[r], r);
		*id = (uint32_t)(row0 + r);
	}
	return isfinite(*dist);
}

template <typename TT, bool LVQ>
static __global__ void __launch_bounds__(GPU_SELECT_THREADS)
k_select_radix(const TT *tile, uint32_t ldt, uint32_t nrows, uint64_t row0, const float *norms,
	       const float *rs, const float *rb, const float *qs, const float *qsum, float coef,
	       const uint64_t *filter, float *best_d, uint32_t *best_i, float *tmp_d,
	       uint32_t *tmp_i, uint32_t kc)
{
	__shared__ uint32_t hist[256];
	__shared__ uint32_t s_total, s_prefix, s_mask, s_want, s_less, s_eq;
	uint32_t q = blockIdx.x, n = kc + nrows;
	epi e = epi_make(norms, rs, rb, qs, qsum, coef, q);
	const TT *row = tile + (size_t)q * ldt;
	float *bd = best_d + (size_t)q * kc, *td = tmp_d + (size_t)q * kc;
	uint32_t *bi = best_i + (size_t)q * kc, *ti = tmp_i + (size_t)q * kc;
	float d;
	uint32_t id;
	if (threadIdx.x == 0) {
		s_total = 0;
		s_prefix = 0;
		s_mask = 0;
		s_want = kc;
		s_less = 0;
		s_eq = 0;
	}
	__syncthreads();
	uint32_t mine = 0;
	for (uint32_t c = threadIdx.x; c < n; c += blockDim.x)
		mine += radix_cand<TT, LVQ>(row, e, c, kc, row0, filter, bd, bi, &d, &id);
	atomicAdd(&s_total, mine);
	__syncthreads();
	bool all = s_total <= kc;
	for (int shift = 24; !all && shift >= 0; shift -= 8) {
		hist[threadIdx.x] = 0;
		__syncthreads();
		uint32_t pre = s_prefix, mask = s_mask;
		for (uint32_t c = threadIdx.x; c < n; c += blockDim.x) {
			if (!radix_cand<TT, LVQ>(row, e, c, kc, row0, filter, bd, bi, &d, &id))
				continue;
			uint32_t k = fkey(d);
			if ((k & mask) == pre)
				atomicAdd(&hist[(k >> shift) & 255u], 1u);
		}
		__syncthreads();
		if (threadIdx.x == 0) {
			uint32_t want = s_want, cum = 0, b = 0;
			while (cum + hist[b] < want)
				cum += hist[b++];
			s_want = want - cum;
			s_prefix = pre | (b << shift);
			s_mask = mask | (255u << shift);
		}
		__syncthreads();
	}
	uint32_t kth = s_prefix, want = s_want, nless = kc - want;
	for (uint32_t c = threadIdx.x; c < n; c += blockDim.x) {
		if (!radix_cand<TT, LVQ>(row, e, c, kc, row0, filter, bd, bi, &d, &id))
			continue;
		uint32_t k = fkey(d), pos = UINT32_MAX;
		if (all || k < kth)
			pos = atomicAdd(&s_less, 1u);
		else if (k == kth) {
			uint32_t t = atomicAdd(&s_eq, 1u);
			if (t < want)
				pos = nless + t;
		}
		if (pos != UINT32_MAX) {
			td[pos] = d;
			ti[pos] = id;
		}
	}
	__syncthreads();
	uint32_t filled = all ? s_less : kc;
	for (uint32_t i = threadIdx.x; i < kc; i += blockDim.x) {
		bd[i] = i < filled ? td[i] : INFINITY;
		bi[i] = i < filled ? ti[i] : UINT32_MAX;
	}
}

/* Arguments of one selection launch (the kernels take them unpacked). */
struct sel_args {
	uint32_t nq, ldt, nrows, kc;
	uint64_t row0;
	const float *norms, *rs, *rb, *qs, *qsum;
	float coef;
	const uint64_t *filter;
	float *bd, *td;
	uint32_t *bi, *ti;
};

template <typename TT, bool LVQ>
static void select_launch(const void *tile, const sel_args &a, cudaStream_t st)
{
	dim3 grid(a.nq), block(GPU_SELECT_THREADS);
	const TT *tt = (const TT *)tile;
	if (a.kc <= GPU_K_FAST_MAX)
		k_select_small<TT, LVQ><<<grid, block, 0, st>>>(tt, a.ldt, a.nrows, a.row0, a.norms,
								a.rs, a.rb, a.qs, a.qsum, a.coef,
								a.filter, a.bd, a.bi, a.kc);
	else
		k_select_radix<TT, LVQ><<<grid, block, 0, st>>>(tt, a.ldt, a.nrows, a.row0, a.norms,
								a.rs, a.rb, a.qs, a.qsum, a.coef,
								a.filter, a.bd, a.bi, a.td, a.ti,
								a.kc);
}

int gpu_launch_select(gpu_matrix_t *m, gpu_qtile_t *t, uint32_t nq, uint32_t ldt,
		      uint64_t row0, uint32_t nrows, const uint64_t *filter, uint32_t kc,
		      int tile16, cudaStream_t st, vela_err_t *err)
{
	int rc = 0;
	int l2 = m->p.metric == GPU_METRIC_L2, lvq = m->p.elem == GPU_ELEM_LVQ8;
	sel_args a = {nq, ldt, nrows, kc, row0, l2 ? m->norms + row0 : NULL,
		      lvq ? m->lvq_scale + row0 : NULL, lvq ? m->lvq_bias + row0 : NULL,
		      lvq ? t->qscale : NULL, lvq ? t->qsum : NULL, l2 ? -2.f : -1.f, filter,
		      t->best_d, t->tmp_d, t->best_i, t->tmp_i};
	if (lvq)
		select_launch<int32_t, true>(t->tile, a, st);
	else if (tile16)
		select_launch<__nv_bfloat16, false>(t->tile, a, st);
	else
		select_launch<float, false>(t->tile, a, st);
	GPU_CKL("select kernel");
out:
	return rc;
}

/* ------------------------------------------------------------ finish */

/* One block per query: optionally re-score the kc candidates exactly against
 * the F32 rows (one warp per candidate), turn ranking values into distances,
 * sort by (distance, row) and write the k best. */
static __global__ void __launch_bounds__(GPU_SELECT_THREADS)
k_finish(const float *qf32, uint32_t ld, uint32_t dim, const void *rows, int rows_bf16, int l2,
	 const float *qnorm, const float *qoff, const float *best_d, const uint32_t *best_i,
	 uint32_t kc, uint32_t k, int rerank, uint32_t *out_i, float *out_d)
{
	extern __shared__ unsigned char smem[];
	uint32_t n = 2;
	while (n < kc)
		n <<= 1;
	float *sd = (float *)smem;
	uint32_t *si = (uint32_t *)(sd + n);
	uint32_t q = blockIdx.x;
	const float *bd = best_d + (size_t)q * kc;
	const uint32_t *bi = best_i + (size_t)q * kc;
	float add = l2 ? qnorm[q] + qoff[q] : 1.f + qoff[q];
	for (uint32_t i = threadIdx.x; i < kc; i += blockDim.x) {
		float v = bd[i];
		if (isfinite(v) && !rerank) {
			v += add;
			if (l2)
				v = fmaxf(v, 0.f); /* the expansion can round below 0 */
		}
		sd[i] = isfinite(v) ? v : INFINITY;
		si[i] = isfinite(v) ? bi[i] : UINT32_MAX;
	}
	__syncthreads();
	if (rerank) {
		const float *qv = qf32 + (size_t)q * ld;
		int lane = threadIdx.x & 31, warp = threadIdx.x / 32, nw = blockDim.x / 32;
		for (uint32_t c = warp; c < kc; c += nw) {
			uint32_t id = si[c];
			if (id == UINT32_MAX)
				continue;
			const float *xf = (const float *)rows + (size_t)id * ld;
			const __nv_bfloat16 *xb = (const __nv_bfloat16 *)rows + (size_t)id * ld;
			float acc = 0.f;
			for (uint32_t j = lane; j < dim; j += 32) {
				float x = rows_bf16 ? __bfloat162float(xb[j]) : xf[j];
				float t = l2 ? qv[j] - x : qv[j] * x;
				acc = l2 ? fmaf(t, t, acc) : acc + t;
			}
			for (int o = 16; o > 0; o >>= 1)
				acc += __shfl_xor_sync(0xffffffffu, acc, o);
			if (lane == 0)
				sd[c] = l2 ? acc : 1.f - acc;
		}
		__syncthreads();
	}
	block_sort(sd, si, kc);
	for (uint32_t i = threadIdx.x; i < k; i += blockDim.x) {
		bool ok = i < kc && si[i] != UINT32_MAX;
		out_i[(size_t)q * k + i] = ok ? si[i] : UINT32_MAX;
		out_d[(size_t)q * k + i] = ok ? sd[i] : INFINITY;
	}
}

int gpu_launch_finish(gpu_matrix_t *m, gpu_qtile_t *t, uint32_t nq, uint32_t kc, uint32_t k,
		      int rerank, uint32_t *out_i, float *out_d, cudaStream_t st,
		      vela_err_t *err)
{
	int rc = 0;
	uint32_t n = 2;
	while (n < kc)
		n <<= 1;
	size_t smem = (size_t)n * (sizeof(float) + sizeof(uint32_t));
	/* kc <= GPU_K_MAX = 4096: at most 32 KB, under the 48 KB default. */
	k_finish<<<nq, GPU_SELECT_THREADS, smem, st>>>(
		t->qf32, m->ld, m->p.dim, rerank == 2 ? m->data : (const void *)m->f32, rerank == 2,
		m->p.metric == GPU_METRIC_L2, t->qnorm, t->qoff, t->best_d, t->best_i, kc, k,
		rerank != 0, out_i, out_d);
	GPU_CKL("finish kernel");
out:
	return rc;
}

/* ------------------------------------------------------------ fused candidates */

/* One block per query: sort the candidates the fused kernel kept (at most
 * GPU_FZ_CAP) by (value, row). A sampling round lowers the query's
 * threshold to its kc-th best value, which bounds the final kc-th best from
 * above (the sample's rows are a subset of all rows; a list that overflowed
 * is a subset of the sample's kept rows, so its kc-th value bounds it too).
 * The last round writes the kc best and flags an overflowed list: its
 * query is answered again by the tiled path. */
static __global__ void __launch_bounds__(GPU_SELECT_THREADS)
k_cand_select(uint32_t *cnt, const float *cd, const uint32_t *ci, uint32_t dense_n, uint32_t kc,
	      float *thr, float *best_d, uint32_t *best_i, uint8_t *overflow, int final)
{
	__shared__ float sd[GPU_FZ_CAP];
	__shared__ uint32_t si[GPU_FZ_CAP];
	uint32_t q = blockIdx.x, seen = cnt[q];
	uint32_t n = dense_n ? dense_n : seen < GPU_FZ_CAP ? seen : GPU_FZ_CAP;
	for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) {
		sd[i] = cd[(size_t)q * GPU_FZ_CAP + i];
		si[i] = ci[(size_t)q * GPU_FZ_CAP + i];
	}
	block_sort(sd, si, n); /* pads to a power of two, barriers first */
	if (final) {
		for (uint32_t i = threadIdx.x; i < kc; i += blockDim.x) {
			best_d[(size_t)q * kc + i] = i < n ? sd[i] : INFINITY;
			best_i[(size_t)q * kc + i] = i < n ? si[i] : UINT32_MAX;
		}
	}
	if (threadIdx.x == 0) {
		if (final)
			overflow[q] = seen > GPU_FZ_CAP;
		else if (n >= kc)
			thr[q] = fminf(thr[q], sd[kc - 1]);
		cnt[q] = 0;
	}
}

int gpu_launch_cand_select(uint32_t nq, uint32_t *cnt, const float *cd, const uint32_t *ci,
			   uint32_t dense_n, uint32_t kc, float *thr, float *best_d,
			   uint32_t *best_i, uint8_t *overflow, int final, cudaStream_t st,
			   vela_err_t *err)
{
	int rc = 0;
	k_cand_select<<<nq, GPU_SELECT_THREADS, 0, st>>>(cnt, cd, ci, dense_n, kc, thr, best_d,
							best_i, overflow, final);
	GPU_CKL("fused candidate kernel");
out:
	return rc;
}
