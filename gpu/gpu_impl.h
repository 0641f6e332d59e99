/*
 * gpu_impl.h — internals of gpu/ shared by its .cu files (not installed).
 *
 * Layout conventions (see gpu.h for the model):
 *  - Every resident row has `ld` elements, dim rounded up to GPU_ALIGN, the
 *    padding zero; row counts are rounded up to GPU_ALIGN too. That keeps
 *    every row 16-byte aligned (vector loads, int8 IMMA needs lda % 4 == 0)
 *    and lets a partial last tile run the GEMM on whole GPU_ALIGN blocks.
 *  - GEMM tiles are column-major cuBLAS results of X_tile^T * Q_tile: the
 *    tile holds, for each query, its distances to the tile's rows
 *    contiguously (tile[q * ldt + r]).
 */
#ifndef VELA_GPU_IMPL_H
#define VELA_GPU_IMPL_H

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <pthread.h>
#include <stdint.h>

#include "gpu/gpu.h"

/** Rows and columns are padded to a multiple of this (elements). */
#define GPU_ALIGN 16
/** Streams a context alternates query tiles over (GEMM of one overlaps the
 *  selection of the other). */
#define GPU_STREAMS 2
/** Fewest candidates re-ranked after a BF16 GEMM tile (see knn_plan_make). */
#define GPU_TILE16_MIN_CANDIDATES 64
/** Threads of the selection kernels. */
#define GPU_SELECT_THREADS 256
/** Rows uploaded per staging chunk in gpu_matrix_append and the linalg ops. */
#define GPU_CHUNK_ROWS 65536

#define GPU_ROUND_UP(x, a) ((((x) + (a) - 1) / (a)) * (a))

struct gpu_ctx {
	int device;
	char name[320];
	int sm_count;
	size_t smem_optin; /* largest dynamic shared memory per block */
	int cc_major, cc_minor;
	/* fused LVQ-8 path (gpu_fused.cu): 0 not checked yet, 1 usable with the
	 * 128-byte swizzled layout, 2 usable unswizzled, -1 unusable (fused_note) */
	int fused_state;
	char fused_note[320];
	uint64_t fused_redone; /* queries the tiled path answered again */
	cudaStream_t stream[GPU_STREAMS];
	cublasHandle_t blas[GPU_STREAMS];
	pthread_mutex_t lock;
};

struct gpu_matrix {
	gpu_ctx_t *ctx;
	gpu_matrix_params_t p;
	uint32_t ld;     /* padded row length (elements) */
	uint64_t rows;   /* rows appended */
	uint64_t cap;    /* rows allocated (multiple of GPU_ALIGN) */
	void *data;      /* cap x ld in the encoding (F32 rows for GPU_ELEM_F32) */
	float *f32;      /* cap x ld exact copy: == data for F32, NULL without keep_f32 */
	float *norms;    /* cap: squared norm of the row as encoded (LVQ: decoded) */
	float *mean;     /* LVQ8: dim floats, the centre */
	float *lvq_scale; /* LVQ8: cap, step of the codes */
	float *lvq_bias;  /* LVQ8: cap, value of code 0 (codes are centred int8) */
	int have_mean;
};

/* Fill err (optional) with code and a printf-style message; returns code. */
int gpu_errf(vela_err_t *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Error helpers: fill err with the CUDA/cuBLAS text and return VELA_EIO. */
int gpu_fail_cuda(vela_err_t *err, cudaError_t e, const char *what);
int gpu_fail_blas(vela_err_t *err, cublasStatus_t s, const char *what);

#define GPU_CK(call, what)                                                   \
	do {                                                                 \
		cudaError_t e_ = (call);                                     \
		if (e_ != cudaSuccess) {                                     \
			rc = gpu_fail_cuda(err, e_, what);                   \
			goto out;                                            \
		}                                                            \
	} while (0)
#define GPU_CKB(call, what)                                                  \
	do {                                                                 \
		cublasStatus_t s_ = (call);                                  \
		if (s_ != CUBLAS_STATUS_SUCCESS) {                           \
			rc = gpu_fail_blas(err, s_, what);                   \
			goto out;                                            \
		}                                                            \
	} while (0)
#define GPU_CKL(what) GPU_CK(cudaGetLastError(), what)

/* Bytes per element of an encoding. */
size_t gpu_elem_size(gpu_elem_t e);

/* F32 rows (device, stride `src_ld`) -> encoding (device, stride ld), with
 * zero padding, and the per-row squared norms. Used for rows and queries. */
int gpu_encode_rows(gpu_matrix_t *m, const float *src, uint32_t src_ld, uint64_t n,
		    uint64_t row0, cudaStream_t st, vela_err_t *err);

/* Scratch of one query tile on one stream (owned by the gpu_knn call). */
typedef struct gpu_qtile {
	float *qf32;     /* tq x ld: queries as given (padded) */
	void *qenc;      /* tq x ld: queries in the encoding */
	float *qnorm;    /* tq: squared norm of the encoded query (L2) */
	float *qscale;   /* LVQ8: tq */
	float *qsum;     /* LVQ8: tq, sum of the (centred) query */
	float *qoff;     /* tq: constant added to every distance at the end */
	void *tile;      /* tq x tr GEMM result (float or int32) */
	float *best_d;   /* tq x kc running candidates, ascending */
	uint32_t *best_i;
	float *tmp_d;    /* tq x kc, radix select double buffer */
	uint32_t *tmp_i;
} gpu_qtile_t;

/* ------------------------------------------------ fused LVQ-8 path */

/** Queries per CTA of the fused kernel (two warpgroups of 64). */
#define GPU_FZ_BQ 128
/** Rows per tile of the fused kernel (wgmma N: 192 leaves room for a
 *  4-slot ring beside 128 queries of 768 bytes in shared memory). */
#define GPU_FZ_BN 192
/** Largest padded code row (bytes = dimensions): the CTA keeps its 128
 *  queries in shared memory beside a 4-slot ring of row tiles. */
#define GPU_FZ_KMAX 768
/** Candidates a query can keep in one round. */
#define GPU_FZ_CAP 4096
/** Largest candidate count kc (rerank * k) of the fused path: a round keeps
 *  about kc * GPU_FZ_ROUND_GROWTH candidates, which must stay under CAP. */
#define GPU_FZ_KC_MAX 128
/** Row tiles of the first round (1,536 rows: every one fits the list). */
#define GPU_FZ_ROUND0_TILES 8
/** Each round samples this many times more tiles than the one before, and
 *  the next is the last (all tiles) once it should keep at most CAP / 2
 *  candidates a query (kc * tiles / sampled tiles). */
#define GPU_FZ_ROUND_GROWTH 16
/** Queries per pass (bounds the candidate lists: 16,384 x 4,096 x 8 B). */
#define GPU_FZ_QCHUNK 16384

/* One launch of the fused kernel: nt of the tiles of [r_begin, r_end). */
typedef struct gpu_fz_round {
	uint64_t r_begin, r_end;
	uint32_t nt;
	const float *thr;        /* per query: keep values <= thr */
	const uint64_t *filter;  /* optional, over all rows */
	uint32_t *cnt;           /* per query: candidates seen (may pass CAP) */
	uint4 *rec;              /* sm_count regions of rec_cap kept entries */
	uint32_t *rec_n;         /* per region: entries (zeroed before a round) */
	uint32_t rec_cap;
	float *cd;               /* nq x GPU_FZ_CAP */
	uint32_t *ci;
	int layout;              /* shared memory: 1 128-byte swizzle, 0 none */
	int dense;               /* nt * GPU_FZ_BN <= GPU_FZ_CAP: keep every entry
				    at slot tile * GPU_FZ_BN + column, no threshold */
	int32_t *dbg;            /* diagnostic (self-check), else NULL */
	uint32_t *status;        /* diagnostic (self-check), else NULL */
} gpu_fz_round_t;

int gpu_launch_fused(gpu_matrix_t *m, const gpu_qtile_t *t, uint32_t nq, const gpu_fz_round_t *r,
		     cudaStream_t st, vela_err_t *err);
/* Files a round's records (regions 0 .. regions-1) into the queries' lists. */
int gpu_launch_fused_scatter(const gpu_fz_round_t *r, uint32_t regions, cudaStream_t st,
			     vela_err_t *err);
/* thr = +inf, cnt = 0 for nq queries. */
int gpu_launch_fused_reset(float *thr, uint32_t *cnt, uint32_t nq, cudaStream_t st,
			   vela_err_t *err);
/* Once per context: sets m->ctx->fused_state and fused_note (never fails:
 * a check that cannot run marks the path unusable). */
void gpu_fused_selfcheck(gpu_matrix_t *m);
/* Per query: sort its kept candidates (the first dense_n slots after a
 * dense round, else min(cnt, GPU_FZ_CAP)); not final: lower thr to the kc-th
 * value (when it kept kc); final: write the kc best to best_d/best_i and
 * flag a list that overflowed. Resets cnt. (gpu_select.cu) */
int gpu_launch_cand_select(uint32_t nq, uint32_t *cnt, const float *cd, const uint32_t *ci,
			   uint32_t dense_n, uint32_t kc, float *thr, float *best_d,
			   uint32_t *best_i, uint8_t *overflow, int final, cudaStream_t st,
			   vela_err_t *err);

/* Launchers (gpu_select.cu). All asynchronous on `st`. */
int gpu_launch_prep_queries(gpu_matrix_t *m, gpu_qtile_t *t, uint32_t nq, cudaStream_t st,
			    vela_err_t *err);
int gpu_launch_best_init(gpu_qtile_t *t, uint32_t nq, uint32_t kc, cudaStream_t st,
			 vela_err_t *err);
int gpu_launch_select(gpu_matrix_t *m, gpu_qtile_t *t, uint32_t nq, uint32_t ldt,
		      uint64_t row0, uint32_t nrows, const uint64_t *filter, uint32_t kc,
		      int tile16, cudaStream_t st, vela_err_t *err);
/* rerank: 0 none (distances of the encoding), 1 exact against the F32 rows,
 * 2 exact against the resident BF16 rows (F32 query). */
int gpu_launch_finish(gpu_matrix_t *m, gpu_qtile_t *t, uint32_t nq, uint32_t kc, uint32_t k,
		      int rerank, uint32_t *out_i, float *out_d, cudaStream_t st,
		      vela_err_t *err);

#endif
