/*
 * gpu_matrix.cu — resident database rows: upload, encode on the device
 * (F32/F16/BF16 conversion, LVQ-8 quantisation) and the per-row norms.
 *
 * LVQ (Aguerrebere et al., arXiv 2304.04759 §3): rows are centred on the
 * dataset mean mu, then each row x' = x - mu is quantised with its own
 * lower bound l and step D = (max - min) / 255: code c = round((x' - l) / D).
 * The device keeps c - 128 as int8 (the IMMA GEMM is signed), so a row
 * decodes as bias + D * c8 with bias = l + 128 D.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/gpu_impl.h"

static __device__ float warp_sum(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

static __device__ float warp_min(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v = fminf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}

static __device__ float warp_max(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}

template <typename T> static __device__ T enc_from(float v);
template <> __device__ float enc_from<float>(float v) { return v; }
template <> __device__ __half enc_from<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __nv_bfloat16 enc_from<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
static __device__ float dec_to(float v) { return v; }
static __device__ float dec_to(__half v) { return __half2float(v); }
static __device__ float dec_to(__nv_bfloat16 v) { return __bfloat162float(v); }

/* One warp per row: convert, zero the padding, sum the squares of what was
 * stored (so norms match the encoded row exactly). */
template <typename T>
static __global__ void k_encode_plain(const float *src, uint32_t src_ld, uint64_t n, uint32_t dim,
				      uint32_t ld, T *dst, float *norms)
{
	uint64_t r = (uint64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
	int lane = threadIdx.x & 31;
	if (r >= n)
		return;
	const float *s = src + r * src_ld;
	T *d = dst + r * ld;
	float acc = 0.f;
	for (uint32_t c = lane; c < ld; c += 32) {
		T e = enc_from<T>(c < dim ? s[c] : 0.f);
		d[c] = e;
		float b = dec_to(e);
		acc = fmaf(b, b, acc);
	}
	acc = warp_sum(acc);
	if (lane == 0)
		norms[r] = acc;
}

/* One warp per row: LVQ-8 with per-row bounds (LVQ §3.1). */
static __global__ void k_encode_lvq(const float *src, uint32_t src_ld, uint64_t n, uint32_t dim,
				    uint32_t ld, const float *mean, int8_t *dst, float *scale,
				    float *bias, float *norms)
{
	uint64_t r = (uint64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
	int lane = threadIdx.x & 31;
	if (r >= n)
		return;
	const float *s = src + r * src_ld;
	float lo = INFINITY, hi = -INFINITY;
	for (uint32_t c = lane; c < dim; c += 32) {
		float v = s[c] - mean[c];
		lo = fminf(lo, v);
		hi = fmaxf(hi, v);
	}
	lo = warp_min(lo);
	hi = warp_max(hi);
	float step = (hi - lo) / 255.f;
	float inv = step > 0.f ? 1.f / step : 0.f;
	int8_t *d = dst + r * ld;
	float acc = 0.f;
	for (uint32_t c = lane; c < ld; c += 32) {
		if (c >= dim) {
			d[c] = 0;
			continue;
		}
		float q = rintf((s[c] - mean[c] - lo) * inv);
		q = fminf(fmaxf(q, 0.f), 255.f);
		d[c] = (int8_t)((int)q - 128);
		float b = fmaf(step, q, lo);
		acc = fmaf(b, b, acc);
	}
	acc = warp_sum(acc);
	if (lane == 0) {
		scale[r] = step;
		bias[r] = fmaf(128.f, step, lo);
		norms[r] = acc;
	}
}

static __global__ void k_scale(float *v, uint32_t n, float s)
{
	uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n)
		v[i] *= s;
}

static __global__ void k_fill(float *v, uint64_t n, float x)
{
	uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n)
		v[i] = x;
}

int gpu_encode_rows(gpu_matrix_t *m, const float *src, uint32_t src_ld, uint64_t n,
		    uint64_t row0, cudaStream_t st, vela_err_t *err)
{
	int rc = 0;
	uint32_t wpb = 8; /* warps per block */
	dim3 grid((unsigned)((n + wpb - 1) / wpb)), block(32 * wpb);
	uint32_t dim = m->p.dim, ld = m->ld;
	float *nrm = m->norms + row0;
	if (n == 0)
		return 0;
	switch (m->p.elem) {
	case GPU_ELEM_F32:
		k_encode_plain<float><<<grid, block, 0, st>>>(src, src_ld, n, dim, ld,
							       (float *)m->data + row0 * ld, nrm);
		break;
	case GPU_ELEM_F16:
		k_encode_plain<__half><<<grid, block, 0, st>>>(src, src_ld, n, dim, ld,
								(__half *)m->data + row0 * ld, nrm);
		break;
	case GPU_ELEM_BF16:
		k_encode_plain<__nv_bfloat16><<<grid, block, 0, st>>>(
			src, src_ld, n, dim, ld, (__nv_bfloat16 *)m->data + row0 * ld, nrm);
		break;
	case GPU_ELEM_LVQ8:
		k_encode_lvq<<<grid, block, 0, st>>>(src, src_ld, n, dim, ld, m->mean,
						     (int8_t *)m->data + row0 * ld,
						     m->lvq_scale + row0, m->lvq_bias + row0, nrm);
		break;
	}
	GPU_CKL("encode kernel");
out:
	return rc;
}

static void *dmalloc0(size_t bytes, cudaError_t *e)
{
	void *p = NULL;
	*e = cudaMalloc(&p, bytes ? bytes : 16);
	if (*e == cudaSuccess)
		*e = cudaMemset(p, 0, bytes ? bytes : 16);
	return p;
}

/* Grow every per-row array to hold `need` rows (amortised doubling). The
 * arrays carry GPU_ALIGN spare rows so a GEMM over a tile rounded up to
 * GPU_ALIGN never reads past the allocation. */
static int matrix_reserve(gpu_matrix_t *m, uint64_t need, vela_err_t *err)
{
	int rc = 0;
	if (need <= m->cap)
		return 0;
	uint64_t cap = GPU_ROUND_UP(need > 2 * m->cap ? need : 2 * m->cap, GPU_ALIGN);
	size_t es = gpu_elem_size(m->p.elem), rowb = (size_t)m->ld * es;
	uint64_t alloc = cap + GPU_ALIGN;
	cudaError_t e = cudaSuccess;
	void *data = dmalloc0(alloc * rowb, &e);
	float *f32 = NULL, *norms = NULL, *sc = NULL, *bi = NULL;
	if (e == cudaSuccess && m->p.keep_f32 && m->p.elem != GPU_ELEM_F32)
		f32 = (float *)dmalloc0(alloc * m->ld * sizeof(float), &e);
	if (e == cudaSuccess)
		norms = (float *)dmalloc0(alloc * sizeof(float), &e);
	if (e == cudaSuccess && m->p.elem == GPU_ELEM_LVQ8) {
		sc = (float *)dmalloc0(alloc * sizeof(float), &e);
		if (e == cudaSuccess)
			bi = (float *)dmalloc0(alloc * sizeof(float), &e);
	}
	if (e == cudaSuccess && m->rows) {
		e = cudaMemcpy(data, m->data, m->rows * rowb, cudaMemcpyDeviceToDevice);
		if (e == cudaSuccess && f32)
			e = cudaMemcpy(f32, m->f32, m->rows * m->ld * sizeof(float),
				       cudaMemcpyDeviceToDevice);
		if (e == cudaSuccess)
			e = cudaMemcpy(norms, m->norms, m->rows * sizeof(float),
				       cudaMemcpyDeviceToDevice);
		if (e == cudaSuccess && sc) {
			e = cudaMemcpy(sc, m->lvq_scale, m->rows * sizeof(float),
				       cudaMemcpyDeviceToDevice);
			if (e == cudaSuccess)
				e = cudaMemcpy(bi, m->lvq_bias, m->rows * sizeof(float),
					       cudaMemcpyDeviceToDevice);
		}
	}
	/* the zeroing memsets ran on the legacy stream: finish them before the
	 * non-blocking streams write these rows */
	if (e == cudaSuccess)
		e = cudaDeviceSynchronize();
	if (e != cudaSuccess) {
		cudaFree(data);
		cudaFree(f32);
		cudaFree(norms);
		cudaFree(sc);
		cudaFree(bi);
		return gpu_fail_cuda(err, e, "gpu matrix allocation");
	}
	if (m->f32 != (float *)m->data)
		cudaFree(m->f32);
	cudaFree(m->data);
	cudaFree(m->norms);
	cudaFree(m->lvq_scale);
	cudaFree(m->lvq_bias);
	m->data = data;
	m->f32 = m->p.elem == GPU_ELEM_F32 ? (float *)data : f32;
	m->norms = norms;
	m->lvq_scale = sc;
	m->lvq_bias = bi;
	m->cap = cap;
	return rc;
}

extern "C" int gpu_matrix_create(gpu_ctx_t *ctx, const gpu_matrix_params_t *p,
				 gpu_matrix_t **out, vela_err_t *err)
{
	*out = NULL;
	if (!ctx || !p || p->dim < 1 || p->dim > GPU_DIM_MAX || (unsigned)p->elem > GPU_ELEM_LVQ8 ||
	    (unsigned)p->metric > GPU_METRIC_IP) {
		if (err) {
			err->code = VELA_EINVAL;
			strcpy(err->msg, "gpu matrix: bad parameters");
		}
		return VELA_EINVAL;
	}
	gpu_matrix_t *m = (gpu_matrix_t *)calloc(1, sizeof(*m));
	if (!m)
		return VELA_ENOMEM;
	m->ctx = ctx;
	m->p = *p;
	m->ld = GPU_ROUND_UP(p->dim, GPU_ALIGN);
	pthread_mutex_lock(&ctx->lock);
	int rc = cudaSetDevice(ctx->device) == cudaSuccess ? 0 : VELA_EIO;
	if (!rc && p->elem == GPU_ELEM_LVQ8) {
		cudaError_t e;
		m->mean = (float *)dmalloc0(p->dim * sizeof(float), &e);
		if (e != cudaSuccess)
			rc = gpu_fail_cuda(err, e, "gpu matrix allocation");
	}
	if (!rc)
		rc = matrix_reserve(m, p->capacity ? p->capacity : GPU_ALIGN, err);
	pthread_mutex_unlock(&ctx->lock);
	if (rc) {
		gpu_matrix_free(m);
		return rc;
	}
	*out = m;
	return 0;
}

/* LVQ needs the dataset mean before the first row is encoded: one pass over
 * the first append (chunked uploads, gemv with a ones vector). */
static int lvq_mean(gpu_matrix_t *m, const float *rows, uint64_t n, float *stage, float *ones,
		    uint64_t chunk, vela_err_t *err)
{
	int rc = 0;
	cudaStream_t st = m->ctx->stream[0];
	cublasHandle_t h = m->ctx->blas[0];
	uint32_t d = m->p.dim;
	const float one = 1.f, zero = 0.f;
	for (uint64_t r0 = 0; r0 < n; r0 += chunk) {
		uint64_t c = n - r0 < chunk ? n - r0 : chunk;
		GPU_CK(cudaMemcpyAsync(stage, rows + r0 * d, c * d * sizeof(float),
				       cudaMemcpyHostToDevice, st), "upload rows");
		/* stage is row-major c x d = column-major d x c: mean += stage * 1 */
		GPU_CKB(cublasSgemv(h, CUBLAS_OP_N, (int)d, (int)c, &one, stage, (int)d, ones, 1,
				    r0 ? &one : &zero, m->mean, 1), "cublasSgemv");
	}
	k_scale<<<(d + 255) / 256, 256, 0, st>>>(m->mean, d, (float)(1.0 / (double)n));
	GPU_CKL("mean kernel");
	m->have_mean = 1;
out:
	return rc;
}

static int matrix_append_locked(gpu_matrix_t *m, const float *rows, uint64_t n, vela_err_t *err)
{
	int rc = 0;
	uint32_t d = m->p.dim;
	uint64_t chunk = ((uint64_t)1 << 26) / d;
	chunk = chunk < 16 ? 16 : chunk > GPU_CHUNK_ROWS ? GPU_CHUNK_ROWS : chunk;
	cudaStream_t st = m->ctx->stream[0];
	float *stage = NULL, *ones = NULL;
	rc = matrix_reserve(m, m->rows + n, err);
	if (rc)
		return rc;
	GPU_CK(cudaMalloc(&stage, chunk * d * sizeof(float)), "staging allocation");
	if (m->p.elem == GPU_ELEM_LVQ8 && !m->have_mean) {
		GPU_CK(cudaMalloc(&ones, chunk * sizeof(float)), "staging allocation");
		k_fill<<<(unsigned)((chunk + 255) / 256), 256, 0, st>>>(ones, chunk, 1.f);
		GPU_CKL("fill kernel");
		rc = lvq_mean(m, rows, n, stage, ones, chunk, err);
		if (rc)
			goto out;
	}
	for (uint64_t r0 = 0; r0 < n; r0 += chunk) {
		uint64_t c = n - r0 < chunk ? n - r0 : chunk, at = m->rows + r0;
		GPU_CK(cudaMemcpyAsync(stage, rows + r0 * d, c * d * sizeof(float),
				       cudaMemcpyHostToDevice, st), "upload rows");
		if (m->f32 && m->f32 != (float *)m->data)
			GPU_CK(cudaMemcpy2DAsync(m->f32 + at * m->ld, m->ld * sizeof(float), stage,
						 d * sizeof(float), d * sizeof(float), c,
						 cudaMemcpyDeviceToDevice, st), "copy rows");
		rc = gpu_encode_rows(m, stage, d, c, at, st, err);
		if (rc)
			goto out;
	}
	GPU_CK(cudaStreamSynchronize(st), "append");
	m->rows += n;
out:
	cudaStreamSynchronize(st);
	cudaFree(stage);
	cudaFree(ones);
	return rc;
}

extern "C" int gpu_matrix_append(gpu_matrix_t *m, const float *rows, uint64_t n, vela_err_t *err)
{
	if (!m || (!rows && n))
		return VELA_EINVAL;
	if (n == 0)
		return 0;
	pthread_mutex_lock(&m->ctx->lock);
	int rc = cudaSetDevice(m->ctx->device) == cudaSuccess ? 0 : VELA_EIO;
	if (!rc)
		rc = matrix_append_locked(m, rows, n, err);
	pthread_mutex_unlock(&m->ctx->lock);
	return rc;
}

extern "C" uint64_t gpu_matrix_rows(const gpu_matrix_t *m)
{
	return m ? m->rows : 0;
}

extern "C" size_t gpu_matrix_bytes(const gpu_matrix_t *m)
{
	if (!m)
		return 0;
	size_t rows = m->cap + GPU_ALIGN, b = rows * m->ld * gpu_elem_size(m->p.elem);
	if (m->f32 && m->f32 != (float *)m->data)
		b += rows * m->ld * sizeof(float);
	b += rows * sizeof(float) * (m->lvq_scale ? 3 : 1);
	if (m->mean)
		b += m->p.dim * sizeof(float);
	return b;
}

extern "C" void gpu_matrix_free(gpu_matrix_t *m)
{
	if (!m)
		return;
	pthread_mutex_lock(&m->ctx->lock);
	cudaSetDevice(m->ctx->device);
	if (m->f32 != (float *)m->data)
		cudaFree(m->f32);
	cudaFree(m->data);
	cudaFree(m->norms);
	cudaFree(m->mean);
	cudaFree(m->lvq_scale);
	cudaFree(m->lvq_bias);
	pthread_mutex_unlock(&m->ctx->lock);
	free(m);
}
