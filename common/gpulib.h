/**
 * @file gpulib.h
 * @brief The one loader of libvela_gpu.so (gpu/gpu.h) and the process's GPU
 * context, shared by index/ (backend_gpu.c) and embed/ (DESIGN.md §6, §11).
 *
 * gpu/ is a shared library loaded with dlopen on first use, so one binary
 * starts on hosts with no CUDA libraries at all: without the library, or
 * without a device, callers run on the CPU. Search order: $VELA_GPU_LIB
 * (only that), then libvela_gpu.so beside the executable, then the dynamic
 * linker's own search. The library is loaded once per process and never
 * unloaded; the answer (loaded or not, and why) is final.
 *
 * Symbols: the kNN / projection / k-means functions are required (a library
 * without one is refused, logged once as a warning). gpu_gram is optional
 * (NULL: LeanVec training's Gram matrices stay on the CPU), and so are the
 * batched partition scan's gpu_parts_create / _scan / _bytes / _free (all
 * NULL unless all are there: part_search's scans stay on the CPU). The encoder
 * functions (gpu_bert_*) are optional: a library built before them loads,
 * and its `bert_*` pointers are all NULL ("no GPU encoder", not a failure).
 */
#ifndef VELA_COMMON_GPULIB_H
#define VELA_COMMON_GPULIB_H

#include "gpu/gpu.h"

#ifdef __cplusplus
extern "C" {
#endif

/** gpu/gpu.h's functions resolved from the library (GNU C __typeof__ keeps
 * the prototypes checked). Static storage, valid for the process. */
typedef struct vela_gpulib {
	/* required */
	__typeof__(gpu_device_count) *device_count;
	__typeof__(gpu_ctx_open) *ctx_open;
	__typeof__(gpu_ctx_name) *ctx_name;
	__typeof__(gpu_matrix_create) *matrix_create;
	__typeof__(gpu_matrix_append) *matrix_append;
	__typeof__(gpu_matrix_free) *matrix_free;
	__typeof__(gpu_matrix_bytes) *matrix_bytes;
	__typeof__(gpu_knn) *knn;
	__typeof__(gpu_project) *project;
	__typeof__(gpu_kmeans_step) *kmeans_step;
	/* optional: NULL in a library built before it */
	__typeof__(gpu_gram) *gram;
	/* optional: all set or all NULL (the batched partition scan) */
	__typeof__(gpu_parts_create) *parts_create;
	__typeof__(gpu_parts_scan) *parts_scan;
	__typeof__(gpu_parts_bytes) *parts_bytes;
	__typeof__(gpu_parts_free) *parts_free;
	/* optional: all set or all NULL */
	__typeof__(gpu_bert_create) *bert_create;
	__typeof__(gpu_bert_set_tensor) *bert_set_tensor;
	__typeof__(gpu_bert_encode) *bert_encode;
	__typeof__(gpu_bert_bytes) *bert_bytes;
	__typeof__(gpu_bert_free) *bert_free;
} vela_gpulib_t;

/**
 * @brief Load the library on the first call (thread-safe); later calls
 * return the same answer. NULL when there is no usable library: the reason
 * is logged once (info: not found; warning: a required symbol missing) and
 * vela_gpulib_why() says it.
 */
const vela_gpulib_t *vela_gpulib_load(void);

/** @brief Why vela_gpulib_load() returned NULL ("" when it did not, or
 * before the first call). Static storage. */
const char *vela_gpulib_why(void);

/** @brief Usable CUDA devices, asked once (0 without the library). */
int vela_gpulib_devices(void);

/**
 * @brief The process's context on device 0 (DESIGN §6: one per process),
 * opened on the first successful call and never closed, so anything made on
 * it may live until exit. A failed open is retried on the next call.
 * @param name receives gpu_ctx_name() of it (static for the process); may be NULL.
 * @return 0; VELA_EUNSUPPORTED (no library or no device); the codes of gpu_ctx_open.
 */
int vela_gpulib_ctx(gpu_ctx_t **ctx, const char **name, vela_err_t *err);

#ifdef __cplusplus
}
#endif
#endif
