/*
 * gpu_knn.cu — the tiled batch kNN driver (see gpu.h for the model).
 *
 * Query tiles alternate over GPU_STREAMS streams; on each stream a query
 * tile walks the row tiles: GEMM (cuBLAS, tensor cores for F16/BF16/int8)
 * into that stream's tile buffer, then the selection kernel reads the tile
 * once. With two streams the GEMM of one tile overlaps the selection of the
 * other. Per-query state never crosses streams, so no ordering between
 * streams is needed.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/gpu_impl.h"

typedef struct knn_plan {
	uint32_t k, kc, tq, tr, ldt;
	int rerank; /* see gpu_launch_finish */
	int tile16; /* BF16 GEMM output (re-ranked afterwards) instead of F32 */
	uint64_t r_begin, r_end;
} knn_plan_t;

static uint32_t clampu(uint32_t v, uint32_t def, uint32_t lo, uint32_t hi)
{
	if (v == 0)
		v = def;
	return v < lo ? lo : v > hi ? hi : v;
}

static int knn_plan_make(const gpu_matrix_t *m, uint32_t nq, const gpu_knn_params_t *p,
			 knn_plan_t *pl, vela_err_t *err)
{
	memset(pl, 0, sizeof(*pl));
	pl->r_begin = p->row_begin;
	pl->r_end = p->row_end ? p->row_end : m->rows;
	if (p->k < 1 || p->k > GPU_K_MAX || pl->r_end > m->rows || pl->r_begin > pl->r_end) {
		if (err) {
			err->code = VELA_EINVAL;
			snprintf(err->msg, sizeof(err->msg),
				 "gpu knn: k must be 1..%d and rows within 0..%llu", GPU_K_MAX,
				 (unsigned long long)m->rows);
		}
		return VELA_EINVAL;
	}
	uint32_t rr = clampu(p->rerank, GPU_RERANK_DEFAULT, GPU_RERANK_MIN, GPU_RERANK_MAX);
	pl->k = p->k;
	/* Re-ranking makes the tile's own precision matter less: BF16 rows then
	 * get a BF16 GEMM output (half the bytes of F32, and the same distance
	 * exponent range), and the candidates are re-scored exactly against the
	 * F32 copy or, without one, against the BF16 rows themselves. */
	int bf16 = m->p.elem == GPU_ELEM_BF16;
	pl->rerank = rr > 1 && m->f32 ? 1 : rr > 1 && bf16 ? 2 : 0;
	pl->tile16 = rr > 1 && bf16;
	uint64_t kc = pl->rerank ? (uint64_t)p->k * rr : p->k;
	/* a BF16 tile ranks with 8 significant bits: never fewer candidates
	 * than GPU_TILE16_MIN_CANDIDATES, or a k = 1 search misses often */
	if (pl->tile16 && kc < GPU_TILE16_MIN_CANDIDATES)
		kc = GPU_TILE16_MIN_CANDIDATES;
	pl->kc = (uint32_t)(kc > GPU_K_MAX ? GPU_K_MAX : kc);
	uint32_t tq = clampu(p->tile_queries, GPU_TILE_QUERIES_DEFAULT, GPU_TILE_QUERIES_MIN,
			     GPU_TILE_QUERIES_MAX);
	pl->tq = GPU_ROUND_UP(tq < nq ? tq : nq, GPU_ALIGN);
	uint32_t tr = clampu(p->tile_rows, GPU_TILE_ROWS_DEFAULT, GPU_TILE_ROWS_MIN,
			     GPU_TILE_ROWS_MAX);
	uint64_t span = pl->r_end - pl->r_begin;
	pl->tr = GPU_ROUND_UP((uint64_t)tr < span ? tr : (uint32_t)span, GPU_ALIGN);
	if (pl->tr == 0)
		pl->tr = GPU_ALIGN;
	pl->ldt = pl->tr;
	return 0;
}

static void qtile_free(gpu_qtile_t *t)
{
	if (t->qenc != t->qf32)
		cudaFree(t->qenc);
	cudaFree(t->qf32);
	cudaFree(t->qnorm);
	cudaFree(t->tile);
	cudaFree(t->best_d);
	cudaFree(t->best_i);
	cudaFree(t->tmp_d);
	cudaFree(t->tmp_i);
	memset(t, 0, sizeof(*t));
}

static int qtile_alloc(const gpu_matrix_t *m, const knn_plan_t *pl, gpu_qtile_t *t,
		       vela_err_t *err)
{
	int rc = 0;
	size_t tq = pl->tq, ld = m->ld, kc = pl->kc;
	memset(t, 0, sizeof(*t));
	GPU_CK(cudaMalloc((void **)&t->qf32, tq * ld * sizeof(float)), "gpu scratch");
	GPU_CK(cudaMemset(t->qf32, 0, tq * ld * sizeof(float)), "gpu scratch");
	if (m->p.elem == GPU_ELEM_F32)
		t->qenc = t->qf32;
	else
		GPU_CK(cudaMalloc(&t->qenc, tq * ld * gpu_elem_size(m->p.elem)), "gpu scratch");
	GPU_CK(cudaMemset(t->qenc, 0, tq * ld * gpu_elem_size(m->p.elem)), "gpu scratch");
	/* qnorm, qscale, qsum, qoff share one allocation */
	GPU_CK(cudaMalloc((void **)&t->qnorm, 4 * tq * sizeof(float)), "gpu scratch");
	t->qscale = t->qnorm + tq;
	t->qsum = t->qnorm + 2 * tq;
	t->qoff = t->qnorm + 3 * tq;
	GPU_CK(cudaMalloc(&t->tile, tq * (size_t)pl->ldt * (pl->tile16 ? 2 : 4)), "gpu tile");
	GPU_CK(cudaMalloc((void **)&t->best_d, tq * kc * sizeof(float)), "gpu scratch");
	GPU_CK(cudaMalloc((void **)&t->best_i, tq * kc * sizeof(uint32_t)), "gpu scratch");
	if (kc > GPU_K_FAST_MAX) {
		GPU_CK(cudaMalloc((void **)&t->tmp_d, tq * kc * sizeof(float)), "gpu scratch");
		GPU_CK(cudaMalloc((void **)&t->tmp_i, tq * kc * sizeof(uint32_t)), "gpu scratch");
	}
out:
	return rc;
}

/* C (tr x nq, column-major, ldc = ldt) = X[r0 .. r0+nr)^T-as-TN * Q. */
static int tile_gemm(gpu_matrix_t *m, gpu_qtile_t *t, cublasHandle_t h, uint64_t r0,
		     uint32_t nr, uint32_t nqt, uint32_t ldt, int tile16, vela_err_t *err)
{
	int rc = 0;
	int mm = (int)GPU_ROUND_UP(nr, GPU_ALIGN), nn = (int)GPU_ROUND_UP(nqt, GPU_ALIGN);
	int kk = (int)m->ld, lda = (int)m->ld;
	const float one = 1.f, zero = 0.f;
	const int32_t ione = 1, izero = 0;
	switch (m->p.elem) {
	case GPU_ELEM_F32:
		GPU_CKB(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, mm, nn, kk, &one,
				    (const float *)m->data + r0 * m->ld, lda,
				    (const float *)t->qenc, lda, &zero, (float *)t->tile, (int)ldt),
			"cublasSgemm");
		break;
	case GPU_ELEM_F16:
	case GPU_ELEM_BF16: {
		cudaDataType ty = m->p.elem == GPU_ELEM_F16 ? CUDA_R_16F : CUDA_R_16BF;
		GPU_CKB(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, mm, nn, kk, &one,
				     (const uint16_t *)m->data + r0 * m->ld, ty, lda, t->qenc, ty,
				     lda, &zero, t->tile, tile16 ? CUDA_R_16BF : CUDA_R_32F, (int)ldt,
				     CUBLAS_COMPUTE_32F,
				     CUBLAS_GEMM_DEFAULT),
			"cublasGemmEx (16-bit)");
		break;
	}
	case GPU_ELEM_LVQ8:
		GPU_CKB(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, mm, nn, kk, &ione,
				     (const int8_t *)m->data + r0 * m->ld, CUDA_R_8I, lda, t->qenc,
				     CUDA_R_8I, lda, &izero, t->tile, CUDA_R_32I, (int)ldt,
				     CUBLAS_COMPUTE_32I, CUBLAS_GEMM_DEFAULT),
			"cublasGemmEx (int8)");
		break;
	}
out:
	return rc;
}

/* One query tile on one stream: upload, prepare, all row tiles, finish. */
static int knn_query_tile(gpu_matrix_t *m, const knn_plan_t *pl, gpu_qtile_t *t, int s,
			  const float *queries, uint32_t q0, uint32_t nqt, const uint64_t *dfilter,
			  uint32_t *dout_i, float *dout_d, vela_err_t *err)
{
	int rc = 0;
	cudaStream_t st = m->ctx->stream[s];
	uint32_t d = m->p.dim;
	GPU_CK(cudaMemcpy2DAsync(t->qf32, m->ld * sizeof(float), queries + (size_t)q0 * d,
				 d * sizeof(float), d * sizeof(float), nqt,
				 cudaMemcpyHostToDevice, st), "upload queries");
	if ((rc = gpu_launch_prep_queries(m, t, nqt, st, err)) ||
	    (rc = gpu_launch_best_init(t, nqt, pl->kc, st, err)))
		goto out;
	for (uint64_t r0 = pl->r_begin; r0 < pl->r_end; r0 += pl->tr) {
		uint32_t nr = (uint32_t)(pl->r_end - r0 < pl->tr ? pl->r_end - r0 : pl->tr);
		if ((rc = tile_gemm(m, t, m->ctx->blas[s], r0, nr, nqt, pl->ldt, pl->tile16,
				    err)) ||
		    (rc = gpu_launch_select(m, t, nqt, pl->ldt, r0, nr, dfilter, pl->kc,
					    pl->tile16, st, err)))
			goto out;
	}
	rc = gpu_launch_finish(m, t, nqt, pl->kc, pl->k, pl->rerank,
			       dout_i + (size_t)q0 * pl->k, dout_d + (size_t)q0 * pl->k, st, err);
out:
	return rc;
}

static void knn_empty(uint32_t nq, uint32_t k, uint32_t *ids, float *dists)
{
	for (size_t i = 0; i < (size_t)nq * k; i++) {
		ids[i] = UINT32_MAX;
		dists[i] = INFINITY;
	}
}

static int knn_locked(gpu_matrix_t *m, const float *queries, uint32_t nq, const knn_plan_t *pl,
		      const uint64_t *filter, uint32_t *ids, float *dists, vela_err_t *err)
{
	int rc = 0;
	gpu_qtile_t t[GPU_STREAMS];
	memset(t, 0, sizeof(t));
	uint64_t *dfilter = NULL;
	uint32_t *dout_i = NULL;
	float *dout_d = NULL;
	size_t nout = (size_t)nq * pl->k;
	int ntiles = (int)((nq + pl->tq - 1) / pl->tq);
	int nstreams = ntiles < GPU_STREAMS ? ntiles : GPU_STREAMS;
	GPU_CK(cudaSetDevice(m->ctx->device), "cudaSetDevice");
	if (filter) {
		size_t words = (m->rows + 63) / 64;
		GPU_CK(cudaMalloc((void **)&dfilter, words * 8), "gpu filter");
		GPU_CK(cudaMemcpy(dfilter, filter, words * 8, cudaMemcpyHostToDevice),
		       "upload filter");
	}
	GPU_CK(cudaMalloc((void **)&dout_i, nout * sizeof(uint32_t)), "gpu results");
	GPU_CK(cudaMalloc((void **)&dout_d, nout * sizeof(float)), "gpu results");
	for (int s = 0; s < nstreams; s++)
		if ((rc = qtile_alloc(m, pl, &t[s], err)))
			goto out;
	/* the scratch memsets ran on the legacy stream */
	GPU_CK(cudaDeviceSynchronize(), "gpu scratch");
	for (int qt = 0; qt < ntiles; qt++) {
		uint32_t q0 = (uint32_t)qt * pl->tq, nqt = nq - q0 < pl->tq ? nq - q0 : pl->tq;
		int s = qt % nstreams;
		if ((rc = knn_query_tile(m, pl, &t[s], s, queries, q0, nqt, dfilter, dout_i,
					 dout_d, err)))
			goto out;
	}
	for (int s = 0; s < nstreams; s++)
		GPU_CK(cudaStreamSynchronize(m->ctx->stream[s]), "gpu knn");
	GPU_CK(cudaMemcpy(ids, dout_i, nout * sizeof(uint32_t), cudaMemcpyDeviceToHost),
	       "download results");
	GPU_CK(cudaMemcpy(dists, dout_d, nout * sizeof(float), cudaMemcpyDeviceToHost),
	       "download results");
out:
	for (int s = 0; s < GPU_STREAMS; s++) {
		cudaStreamSynchronize(m->ctx->stream[s]);
		qtile_free(&t[s]);
	}
	cudaFree(dfilter);
	cudaFree(dout_i);
	cudaFree(dout_d);
	return rc;
}

extern "C" int gpu_knn(gpu_matrix_t *m, const float *queries, uint32_t nq,
		       const gpu_knn_params_t *p, uint32_t *ids, float *dists, vela_err_t *err)
{
	knn_plan_t pl;
	if (!m || !p || (nq && (!queries || !ids || !dists)))
		return VELA_EINVAL;
	int rc = knn_plan_make(m, nq, p, &pl, err);
	if (rc || nq == 0)
		return rc;
	if (pl.r_begin == pl.r_end) {
		knn_empty(nq, pl.k, ids, dists);
		return 0;
	}
	pthread_mutex_lock(&m->ctx->lock);
	rc = knn_locked(m, queries, nq, &pl, p->filter, ids, dists, err);
	pthread_mutex_unlock(&m->ctx->lock);
	return rc;
}
