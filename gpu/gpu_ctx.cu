/*
 * gpu_ctx.cu — the device context: one per process (DESIGN.md §6), holding
 * the cuBLAS handles and the streams every operation runs on.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/gpu_impl.h"

static int err_put(vela_err_t *err, int code, const char *what, const char *detail)
{
	if (err) {
		err->code = code;
		snprintf(err->msg, sizeof(err->msg), "%s: %s", what, detail);
	}
	return code;
}

int gpu_errf(vela_err_t *err, int code, const char *fmt, ...)
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

int gpu_fail_cuda(vela_err_t *err, cudaError_t e, const char *what)
{
	return err_put(err, VELA_EIO, what, cudaGetErrorString(e));
}

int gpu_fail_blas(vela_err_t *err, cublasStatus_t s, const char *what)
{
	return err_put(err, VELA_EIO, what, cublasGetStatusString(s));
}

size_t gpu_elem_size(gpu_elem_t e)
{
	switch (e) {
	case GPU_ELEM_F32: return 4;
	case GPU_ELEM_F16:
	case GPU_ELEM_BF16: return 2;
	case GPU_ELEM_LVQ8: return 1;
	}
	return 4;
}

extern "C" int gpu_device_count(void)
{
	int n = 0;
	if (cudaGetDeviceCount(&n) != cudaSuccess) {
		(void)cudaGetLastError(); /* no driver: clear the sticky error */
		return 0;
	}
	return n;
}

static void ctx_free(gpu_ctx_t *c)
{
	for (int i = 0; i < GPU_STREAMS; i++) {
		if (c->blas[i])
			cublasDestroy(c->blas[i]);
		if (c->stream[i])
			cudaStreamDestroy(c->stream[i]);
	}
	pthread_mutex_destroy(&c->lock);
	free(c);
}

extern "C" int gpu_ctx_open(int device, gpu_ctx_t **out, vela_err_t *err)
{
	int rc = 0, n = gpu_device_count();
	*out = NULL;
	if (device < 0 || device >= n)
		return err_put(err, VELA_EUNSUPPORTED, "gpu", "no CUDA device");
	gpu_ctx_t *c = (gpu_ctx_t *)calloc(1, sizeof(*c));
	if (!c)
		return err_put(err, VELA_ENOMEM, "gpu", "out of host memory");
	pthread_mutex_init(&c->lock, NULL);
	c->device = device;
	cudaDeviceProp prop;
	GPU_CK(cudaSetDevice(device), "cudaSetDevice");
	GPU_CK(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
	c->sm_count = prop.multiProcessorCount;
	c->smem_optin = prop.sharedMemPerBlockOptin;
	c->cc_major = prop.major;
	c->cc_minor = prop.minor;
	snprintf(c->name, sizeof(c->name), "%.200s, %d SMs, %.1f GiB, sm_%d%d", prop.name,
		 prop.multiProcessorCount, prop.totalGlobalMem / 1073741824.0, prop.major,
		 prop.minor);
	for (int i = 0; i < GPU_STREAMS; i++) {
		GPU_CK(cudaStreamCreateWithFlags(&c->stream[i], cudaStreamNonBlocking),
		       "cudaStreamCreate");
		GPU_CKB(cublasCreate(&c->blas[i]), "cublasCreate");
		GPU_CKB(cublasSetStream(c->blas[i], c->stream[i]), "cublasSetStream");
		/* F32 GEMMs stay full F32 (exact ranking); reduced-precision
		 * reductions are not allowed for the F16/BF16 paths either. */
		GPU_CKB(cublasSetMathMode(c->blas[i],
					  (cublasMath_t)(CUBLAS_DEFAULT_MATH |
							 CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)),
			"cublasSetMathMode");
	}
	*out = c;
	return 0;
out:
	ctx_free(c);
	return rc;
}

extern "C" void gpu_ctx_close(gpu_ctx_t *ctx)
{
	if (!ctx)
		return;
	cudaSetDevice(ctx->device);
	cudaDeviceSynchronize();
	ctx_free(ctx);
}

extern "C" const char *gpu_ctx_name(const gpu_ctx_t *ctx)
{
	return ctx ? ctx->name : "none";
}
