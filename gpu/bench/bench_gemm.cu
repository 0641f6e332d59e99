/*
 * bench_gemm.cu — the ceiling for the benchmark: a plain cuBLAS GEMM of the
 * kNN shape (TN, bf16 or int8 inputs, nothing else), timed with CUDA events.
 * Exported from libvela_gpu_shared only (the Python benchmark calls it).
 */
#include <algorithm>
#include <stdint.h>
#include <stdio.h>
#include <vector>

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

/* Random (never zero) inputs: zeros run faster than real data. */
static __global__ void k_rand_bf16(__nv_bfloat16 *x, size_t n, uint32_t seed)
{
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) {
		uint32_t h = (uint32_t)i * 2654435761u ^ seed;
		h ^= h >> 15;
		h *= 2246822519u;
		h ^= h >> 13;
		x[i] = __float2bfloat16((float)(h & 0xFFFF) / 32768.f - 1.f);
	}
}

static __global__ void k_rand_i8(int8_t *x, size_t n, uint32_t seed)
{
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) {
		uint32_t h = (uint32_t)i * 2654435761u ^ seed;
		h ^= h >> 15;
		h *= 2246822519u;
		h ^= h >> 13;
		x[i] = (int8_t)((h & 0xFF) - 128);
	}
}

/*
 * Median milliseconds of `reps` GEMMs C (m x n) = A^T B with A k x m and B
 * k x n (column-major), i.e. rows x queries of the kNN. kind 0: bf16 in,
 * bf16 out (what `q @ x.T` does); 1: bf16 in, f32 out; 2: int8 in, int32
 * out. Returns < 0 on error.
 */
extern "C" double vela_gpu_bench_gemm(int kind, int m, int n, int k, int reps)
{
	cublasHandle_t h;
	if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS)
		return -1;
	size_t es = kind == 2 ? 1 : 2, cs = kind == 0 ? 2 : 4;
	void *A = NULL, *B = NULL, *C = NULL;
	double result = -1;
	std::vector<float> ms;
	cudaEvent_t e0, e1;
	cudaEventCreate(&e0);
	cudaEventCreate(&e1);
	if (cudaMalloc(&A, (size_t)m * k * es) || cudaMalloc(&B, (size_t)n * k * es) ||
	    cudaMalloc(&C, (size_t)m * n * cs))
		goto out;
	if (kind == 2) {
		k_rand_i8<<<(unsigned)(((size_t)m * k + 255) / 256), 256>>>((int8_t *)A, (size_t)m * k, 1);
		k_rand_i8<<<(unsigned)(((size_t)n * k + 255) / 256), 256>>>((int8_t *)B, (size_t)n * k, 2);
	} else {
		k_rand_bf16<<<(unsigned)(((size_t)m * k + 255) / 256), 256>>>((__nv_bfloat16 *)A, (size_t)m * k, 1);
		k_rand_bf16<<<(unsigned)(((size_t)n * k + 255) / 256), 256>>>((__nv_bfloat16 *)B, (size_t)n * k, 2);
	}
	for (int r = -1; r < reps; r++) {
		const float one = 1.f, zero = 0.f;
		const int32_t ione = 1, izero = 0;
		cublasStatus_t s;
		cudaEventRecord(e0);
		if (kind == 2)
			s = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &ione, A, CUDA_R_8I, k, B,
					 CUDA_R_8I, k, &izero, C, CUDA_R_32I, m, CUBLAS_COMPUTE_32I,
					 CUBLAS_GEMM_DEFAULT);
		else
			s = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, A, CUDA_R_16BF, k,
					 B, CUDA_R_16BF, k, &zero, C,
					 kind == 0 ? CUDA_R_16BF : CUDA_R_32F, m, CUBLAS_COMPUTE_32F,
					 CUBLAS_GEMM_DEFAULT);
		cudaEventRecord(e1);
		if (s != CUBLAS_STATUS_SUCCESS) {
			fprintf(stderr, "bench gemm: %s\n", cublasGetStatusString(s));
			goto out;
		}
		cudaEventSynchronize(e1);
		float t;
		cudaEventElapsedTime(&t, e0, e1);
		if (r >= 0) /* r = -1 is the warm-up */
			ms.push_back(t);
	}
	std::sort(ms.begin(), ms.end());
	result = ms.empty() ? -1 : ms[ms.size() / 2];
out:
	if (cudaGetLastError() != cudaSuccess)
		result = -1;
	cudaFree(A);
	cudaFree(B);
	cudaFree(C);
	cudaEventDestroy(e0);
	cudaEventDestroy(e1);
	cublasDestroy(h);
	return result;
}
