/*
 * gpu_linalg.cu — the dense helpers of LeanVec and the partitions:
 * projection (one GEMM), covariance (syrk), the FP64 Gram matrix of
 * LeanVec training (dsyrk) and a k-means step (GEMM + arg-min through
 * gpu_knn, centroid update on the host in double).
 * Inputs and outputs are host memory; rows stream through the device in
 * chunks so the data never has to fit the card.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/gpu_impl.h"

static uint64_t chunk_rows(uint32_t d)
{
	uint64_t c = ((uint64_t)1 << 25) / (d ? d : 1);
	return c < 16 ? 16 : c > GPU_CHUNK_ROWS ? GPU_CHUNK_ROWS : c;
}

static int bad_args(vela_err_t *err, const char *what)
{
	if (err) {
		err->code = VELA_EINVAL;
		snprintf(err->msg, sizeof(err->msg), "%s: bad arguments", what);
	}
	return VELA_EINVAL;
}

static int project_locked(gpu_ctx_t *ctx, const float *X, uint64_t n, uint32_t din,
			  const float *P, uint32_t dout, float *Y, vela_err_t *err)
{
	int rc = 0;
	uint64_t chunk = chunk_rows(din > dout ? din : dout);
	cudaStream_t st = ctx->stream[0];
	cublasHandle_t h = ctx->blas[0];
	float *dP = NULL, *dX = NULL, *dY = NULL;
	const float one = 1.f, zero = 0.f;
	GPU_CK(cudaSetDevice(ctx->device), "cudaSetDevice");
	GPU_CK(cudaMalloc((void **)&dP, (size_t)din * dout * sizeof(float)), "gpu project");
	GPU_CK(cudaMalloc((void **)&dX, chunk * din * sizeof(float)), "gpu project");
	GPU_CK(cudaMalloc((void **)&dY, chunk * dout * sizeof(float)), "gpu project");
	GPU_CK(cudaMemcpyAsync(dP, P, (size_t)din * dout * sizeof(float), cudaMemcpyHostToDevice,
			       st), "upload projection");
	for (uint64_t r0 = 0; r0 < n; r0 += chunk) {
		uint64_t c = n - r0 < chunk ? n - r0 : chunk;
		GPU_CK(cudaMemcpyAsync(dX, X + r0 * din, c * din * sizeof(float),
				       cudaMemcpyHostToDevice, st), "upload rows");
		/* Row-major Y = X P is column-major Y^T = P^T X^T: no transposes. */
		GPU_CKB(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, (int)dout, (int)c, (int)din, &one,
				     dP, CUDA_R_32F, (int)dout, dX, CUDA_R_32F, (int)din, &zero, dY,
				     CUDA_R_32F, (int)dout, CUBLAS_COMPUTE_32F_FAST_TF32,
				     CUBLAS_GEMM_DEFAULT), "cublasGemmEx (project)");
		GPU_CK(cudaMemcpyAsync(Y + r0 * dout, dY, c * dout * sizeof(float),
				       cudaMemcpyDeviceToHost, st), "download rows");
	}
	GPU_CK(cudaStreamSynchronize(st), "gpu project");
out:
	cudaStreamSynchronize(st);
	cudaFree(dP);
	cudaFree(dX);
	cudaFree(dY);
	return rc;
}

extern "C" int gpu_project(gpu_ctx_t *ctx, const float *X, uint64_t n, uint32_t din,
			   const float *P, uint32_t dout, float *Y, vela_err_t *err)
{
	if (!ctx || (n && (!X || !Y)) || !P || din < 1 || dout < 1 || din > GPU_DIM_MAX ||
	    dout > GPU_DIM_MAX)
		return bad_args(err, "gpu project");
	pthread_mutex_lock(&ctx->lock);
	int rc = project_locked(ctx, X, n, din, P, dout, Y, err);
	pthread_mutex_unlock(&ctx->lock);
	return rc;
}

/* x[r][c] -= mu[c] over a chunk, in place. */
static __global__ void k_center(float *x, uint64_t n, uint32_t d, const float *mu)
{
	uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n * d)
		x[i] -= mu[i % d];
}

static __global__ void k_fill1(float *v, uint64_t n)
{
	uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n)
		v[i] = 1.f;
}

/* Two passes: the mean (gemv against ones), then the centred scatter
 * (syrk), so the covariance never subtracts two large numbers. */
static int cov_locked(gpu_ctx_t *ctx, const float *X, uint64_t n, uint32_t d, float *mu,
		      float *C, vela_err_t *err)
{
	int rc = 0;
	uint64_t chunk = chunk_rows(d);
	cudaStream_t st = ctx->stream[0];
	cublasHandle_t h = ctx->blas[0];
	float *dX = NULL, *dOnes = NULL, *dMu = NULL, *dC = NULL, *hMu = NULL;
	const float one = 1.f, zero = 0.f, invn = (float)(1.0 / (double)n);
	GPU_CK(cudaSetDevice(ctx->device), "cudaSetDevice");
	GPU_CK(cudaMalloc((void **)&dX, chunk * d * sizeof(float)), "gpu covariance");
	GPU_CK(cudaMalloc((void **)&dOnes, chunk * sizeof(float)), "gpu covariance");
	GPU_CK(cudaMalloc((void **)&dMu, d * sizeof(float)), "gpu covariance");
	GPU_CK(cudaMalloc((void **)&dC, (size_t)d * d * sizeof(float)), "gpu covariance");
	k_fill1<<<(unsigned)((chunk + 255) / 256), 256, 0, st>>>(dOnes, chunk);
	GPU_CKL("fill kernel");
	for (uint64_t r0 = 0; r0 < n; r0 += chunk) {
		uint64_t c = n - r0 < chunk ? n - r0 : chunk;
		GPU_CK(cudaMemcpyAsync(dX, X + r0 * d, c * d * sizeof(float),
				       cudaMemcpyHostToDevice, st), "upload rows");
		GPU_CKB(cublasSgemv(h, CUBLAS_OP_N, (int)d, (int)c, &invn, dX, (int)d, dOnes, 1,
				    r0 ? &one : &zero, dMu, 1), "cublasSgemv");
	}
	for (uint64_t r0 = 0; r0 < n; r0 += chunk) {
		uint64_t c = n - r0 < chunk ? n - r0 : chunk;
		GPU_CK(cudaMemcpyAsync(dX, X + r0 * d, c * d * sizeof(float),
				       cudaMemcpyHostToDevice, st), "upload rows");
		k_center<<<(unsigned)((c * d + 255) / 256), 256, 0, st>>>(dX, c, d, dMu);
		GPU_CKL("center kernel");
		/* column-major d x c chunk A: C += A A^T / n (upper triangle) */
		GPU_CKB(cublasSsyrk(h, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_N, (int)d, (int)c, &invn,
				    dX, (int)d, r0 ? &one : &zero, dC, (int)d), "cublasSsyrk");
	}
	GPU_CK(cudaMemcpyAsync(C, dC, (size_t)d * d * sizeof(float), cudaMemcpyDeviceToHost, st),
	       "download covariance");
	if (mu)
		GPU_CK(cudaMemcpyAsync(mu, dMu, d * sizeof(float), cudaMemcpyDeviceToHost, st),
		       "download mean");
	GPU_CK(cudaStreamSynchronize(st), "gpu covariance");
	/* column-major upper (row <= col) -> mirror into a full symmetric matrix */
	for (uint32_t col = 0; col < d; col++)
		for (uint32_t row = col + 1; row < d; row++)
			C[(size_t)col * d + row] = C[(size_t)row * d + col];
out:
	cudaStreamSynchronize(st);
	free(hMu);
	cudaFree(dX);
	cudaFree(dOnes);
	cudaFree(dMu);
	cudaFree(dC);
	return rc;
}

extern "C" int gpu_covariance(gpu_ctx_t *ctx, const float *X, uint64_t n, uint32_t d, float *mu,
			      float *C, vela_err_t *err)
{
	if (!ctx || !X || !C || n == 0 || d < 1 || d > GPU_DIM_MAX)
		return bad_args(err, "gpu covariance");
	pthread_mutex_lock(&ctx->lock);
	int rc = cov_locked(ctx, X, n, d, mu, C, err);
	pthread_mutex_unlock(&ctx->lock);
	return rc;
}

/* dst = (double)src - mu per column (mu NULL: no centring) over len = rows
 * x d elements of a chunk; grid-stride, 64-bit indices. The subtraction is
 * the CPU's (float -> double, then one IEEE double subtraction). */
static __global__ void k_to_double(const float *src, double *dst, uint64_t len, uint32_t d,
				   const double *mu)
{
	uint64_t step = (uint64_t)gridDim.x * blockDim.x;
	for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < len; i += step) {
		double v = (double)src[i];
		dst[i] = mu ? v - mu[i % d] : v;
	}
}

/* Column-major d x d G holding its upper triangle: copy it onto the lower
 * one (reads only row <= col, writes only row > col: no overlap). */
static __global__ void k_mirror_lower(double *G, uint32_t d)
{
	uint64_t len = (uint64_t)d * d, step = (uint64_t)gridDim.x * blockDim.x;
	for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < len; i += step) {
		uint64_t col = i / d, row = i % d;
		if (row > col)
			G[i] = G[row * d + col];
	}
}

/* G = sum (x - mu)(x - mu)^T in FP64: per chunk, upload the F32 rows,
 * convert them on the device and dsyrk them into one device accumulator
 * (zeroed, then beta = 1); mirror on the device, download once. */
static int gram_locked(gpu_ctx_t *ctx, const float *X, uint64_t n, uint32_t d, const double *mu,
		       double *G, vela_err_t *err)
{
	int rc = 0;
	uint64_t chunk = chunk_rows(d);
	chunk = chunk < n ? chunk : n;
	size_t dd = (size_t)d * d;
	cudaStream_t st = ctx->stream[0];
	cublasHandle_t h = ctx->blas[0];
	float *dX = NULL;
	double *dXd = NULL, *dMu = NULL, *dG = NULL;
	const double one = 1.0;
	uint64_t max_blocks = (uint64_t)(ctx->sm_count > 0 ? ctx->sm_count : 1) * 16;
	GPU_CK(cudaSetDevice(ctx->device), "cudaSetDevice");
	GPU_CK(cudaMalloc((void **)&dX, chunk * d * sizeof(float)), "gpu gram");
	GPU_CK(cudaMalloc((void **)&dXd, chunk * d * sizeof(double)), "gpu gram");
	GPU_CK(cudaMalloc((void **)&dG, dd * sizeof(double)), "gpu gram");
	if (mu) {
		GPU_CK(cudaMalloc((void **)&dMu, d * sizeof(double)), "gpu gram");
		GPU_CK(cudaMemcpyAsync(dMu, mu, d * sizeof(double), cudaMemcpyHostToDevice, st),
		       "upload mean");
	}
	GPU_CK(cudaMemsetAsync(dG, 0, dd * sizeof(double), st), "gpu gram");
	for (uint64_t r0 = 0; r0 < n; r0 += chunk) {
		uint64_t c = n - r0 < chunk ? n - r0 : chunk, len = c * d;
		uint64_t blocks = (len + 255) / 256;
		GPU_CK(cudaMemcpyAsync(dX, X + r0 * d, len * sizeof(float), cudaMemcpyHostToDevice,
				       st), "upload rows");
		k_to_double<<<(unsigned)(blocks < max_blocks ? blocks : max_blocks), 256, 0, st>>>(
			dX, dXd, len, d, dMu);
		GPU_CKL("to-double kernel");
		/* The row-major c x d chunk is the column-major d x c matrix A:
		 * G += A A^T, upper triangle (column-major). */
		GPU_CKB(cublasDsyrk(h, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_N, (int)d, (int)c, &one, dXd,
				    (int)d, &one, dG, (int)d), "cublasDsyrk");
	}
	{
		uint64_t blocks = (dd + 255) / 256;
		k_mirror_lower<<<(unsigned)(blocks < max_blocks ? blocks : max_blocks), 256, 0, st>>>(
			dG, d);
		GPU_CKL("mirror kernel");
	}
	/* Symmetric: the column-major matrix reads the same row-major. */
	GPU_CK(cudaMemcpyAsync(G, dG, dd * sizeof(double), cudaMemcpyDeviceToHost, st),
	       "download gram");
	GPU_CK(cudaStreamSynchronize(st), "gpu gram");
out:
	cudaStreamSynchronize(st);
	cudaFree(dX);
	cudaFree(dXd);
	cudaFree(dMu);
	cudaFree(dG);
	return rc;
}

extern "C" int gpu_gram(gpu_ctx_t *ctx, const float *X, uint64_t n, uint32_t d, const double *mu,
			double *G, vela_err_t *err)
{
	if (!ctx || !G || (n && !X) || d < 1 || d > GPU_DIM_MAX)
		return bad_args(err, "gpu gram");
	if (n == 0) {
		memset(G, 0, (size_t)d * d * sizeof(double));
		return 0;
	}
	pthread_mutex_lock(&ctx->lock);
	int rc = gram_locked(ctx, X, n, d, mu, G, err);
	pthread_mutex_unlock(&ctx->lock);
	return rc;
}

/* Host update of Lloyd's step in double: deterministic, and O(n d) next to
 * the O(n kc d) assignment the GPU did. */
static int kmeans_update(const float *X, uint64_t n, uint32_t d, float *cent, uint32_t kc,
			 const uint32_t *asg)
{
	double *sum = (double *)calloc((size_t)kc * d, sizeof(double));
	uint64_t *cnt = (uint64_t *)calloc(kc, sizeof(uint64_t));
	if (!sum || !cnt) {
		free(sum);
		free(cnt);
		return VELA_ENOMEM;
	}
	for (uint64_t r = 0; r < n; r++) {
		uint32_t c = asg[r];
		if (c >= kc)
			continue;
		cnt[c]++;
		for (uint32_t j = 0; j < d; j++)
			sum[(size_t)c * d + j] += X[r * d + j];
	}
	for (uint32_t c = 0; c < kc; c++)
		if (cnt[c])
			for (uint32_t j = 0; j < d; j++)
				cent[(size_t)c * d + j] = (float)(sum[(size_t)c * d + j] / cnt[c]);
	free(sum);
	free(cnt);
	return 0;
}

extern "C" int gpu_kmeans_step(gpu_ctx_t *ctx, const float *X, uint64_t n, uint32_t d,
			       float *centroids, uint32_t kc, uint32_t *assign, double *inertia,
			       vela_err_t *err)
{
	if (!ctx || !X || !centroids || n == 0 || kc == 0 || d < 1 || d > GPU_DIM_MAX ||
	    n > UINT32_MAX)
		return bad_args(err, "gpu kmeans");
	gpu_matrix_params_t mp = {GPU_ELEM_F32, GPU_METRIC_L2, d, kc, 0};
	gpu_matrix_t *m = NULL;
	uint32_t *asg = assign ? assign : (uint32_t *)malloc(n * sizeof(uint32_t));
	float *dist = (float *)malloc(n * sizeof(float));
	int rc = (!asg || !dist) ? VELA_ENOMEM : 0;
	if (!rc)
		rc = gpu_matrix_create(ctx, &mp, &m, err);
	if (!rc)
		rc = gpu_matrix_append(m, centroids, kc, err);
	gpu_knn_params_t kp;
	memset(&kp, 0, sizeof(kp));
	kp.k = 1;
	kp.rerank = 2; /* exact distance of the winner (the F32 rows are resident) */
	for (uint64_t q0 = 0; !rc && q0 < n; q0 += GPU_TILE_QUERIES_MAX) {
		uint32_t nq = (uint32_t)(n - q0 < GPU_TILE_QUERIES_MAX ? n - q0 : GPU_TILE_QUERIES_MAX);
		rc = gpu_knn(m, X + q0 * d, nq, &kp, asg + q0, dist + q0, err);
	}
	if (!rc && inertia) {
		double s = 0;
		for (uint64_t r = 0; r < n; r++)
			s += dist[r];
		*inertia = s;
	}
	if (!rc)
		rc = kmeans_update(X, n, d, centroids, kc, asg);
	gpu_matrix_free(m);
	if (asg != assign)
		free(asg);
	free(dist);
	return rc;
}
