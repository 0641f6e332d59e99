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
	int fused;  /* gpu_fused.cu instead of GEMM tiles (knn_fused_locked) */
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
	if (pl->ldt) /* the fused path has no tile */
		GPU_CK(cudaMalloc(&t->tile, tq * (size_t)pl->ldt * (pl->tile16 ? 2 : 4)),
		       "gpu tile");
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

/* ------------------------------------------------------------ fused path */

/* Scratch of the fused path, per query of a chunk. */
typedef struct fz_scratch {
	float *thr;    /* threshold: keep values <= thr */
	uint32_t *cnt; /* candidates seen this round */
	float *cd;     /* tq x GPU_FZ_CAP kept values */
	uint32_t *ci;  /* and their rows */
	uint4 *rec;    /* a round's kept entries, one region per CTA */
	uint32_t *rec_n;
	uint32_t rec_cap, regions;
} fz_scratch_t;

/* Why the fused path cannot serve this plan, or NULL (gpu.h, GPU_PATH_FUSED). */
static const char *fused_refusal(const gpu_matrix_t *m, const knn_plan_t *pl)
{
	if (m->p.elem != GPU_ELEM_LVQ8)
		return "the fused path serves LVQ-8 matrices only";
	if (m->ctx->cc_major != 9 || m->ctx->cc_minor != 0)
		return "the fused path needs an sm_90 GPU (H100, H200)";
	if (m->ld > GPU_FZ_KMAX)
		return "the fused path serves dimensions up to 768";
	if (pl->kc > GPU_FZ_KC_MAX)
		return "the fused path serves rerank * k up to 128";
	if (pl->r_begin % GPU_ALIGN)
		return "the fused path needs row_begin a multiple of 16";
	return NULL;
}

/* Sampling rounds, then the last over every tile, then the usual finish
 * (re-ranking) of the kc candidates, for queries q0 .. q0 + nqc. */
static int fz_chunk(gpu_matrix_t *m, const knn_plan_t *pl, gpu_qtile_t *t, fz_scratch_t *z,
		    cudaStream_t st, const float *queries, uint32_t q0, uint32_t nqc,
		    const uint64_t *dfilter, uint32_t *dout_i, float *dout_d, uint8_t *dovf,
		    vela_err_t *err)
{
	int rc = 0;
	uint32_t d = m->p.dim;
	uint64_t tiles = (pl->r_end - pl->r_begin + GPU_FZ_BN - 1) / GPU_FZ_BN;
	gpu_fz_round_t r;
	memset(&r, 0, sizeof(r));
	r.r_begin = pl->r_begin;
	r.r_end = pl->r_end;
	r.thr = z->thr;
	r.filter = dfilter;
	r.cnt = z->cnt;
	r.cd = z->cd;
	r.ci = z->ci;
	r.rec = z->rec;
	r.rec_n = z->rec_n;
	r.rec_cap = z->rec_cap;
	r.layout = m->ctx->fused_state == 1;
	GPU_CK(cudaMemcpy2DAsync(t->qf32, m->ld * sizeof(float), queries + (size_t)q0 * d,
				 d * sizeof(float), d * sizeof(float), nqc,
				 cudaMemcpyHostToDevice, st), "upload queries");
	if ((rc = gpu_launch_prep_queries(m, t, nqc, st, err)) ||
	    (rc = gpu_launch_fused_reset(z->thr, z->cnt, nqc, st, err)))
		goto out;
	for (uint64_t nt = tiles < GPU_FZ_ROUND0_TILES ? tiles : GPU_FZ_ROUND0_TILES;;) {
		int final = nt == tiles;
		r.nt = (uint32_t)nt;
		r.dense = nt * GPU_FZ_BN <= GPU_FZ_CAP;
		uint32_t dense_n = r.dense ? (uint32_t)nt * GPU_FZ_BN : 0;
		if (!r.dense)
			GPU_CK(cudaMemsetAsync(z->rec_n, 0, z->regions * sizeof(uint32_t), st),
			       "fused records");
		if ((rc = gpu_launch_fused(m, t, nqc, &r, st, err)) ||
		    (!r.dense && (rc = gpu_launch_fused_scatter(&r, z->regions, st, err))))
			goto out;
		if ((rc = gpu_launch_cand_select(nqc, z->cnt, z->cd, z->ci, dense_n, pl->kc, z->thr,
						 t->best_d, t->best_i, dovf + q0, final, st, err)))
			goto out;
		if (final)
			break;
		/* the next round over every tile should keep kc * tiles / nt
		 * entries a query: take it once that is at most half a list */
		uint64_t next = nt * GPU_FZ_ROUND_GROWTH;
		if (next >= tiles || (uint64_t)pl->kc * tiles <= nt * (GPU_FZ_CAP / 2))
			next = tiles;
		nt = next;
	}
	rc = gpu_launch_finish(m, t, nqc, pl->kc, pl->k, pl->rerank, dout_i + (size_t)q0 * pl->k,
			       dout_d + (size_t)q0 * pl->k, st, err);
out:
	return rc;
}

/* Queries whose last-round list overflowed, answered again by the tiled path. */
static int fz_redo(gpu_matrix_t *m, const float *queries, uint32_t nq, const gpu_knn_params_t *p,
		   const uint8_t *hovf, uint32_t *ids, float *dists, vela_err_t *err)
{
	uint32_t n = 0, d = m->p.dim, k = p->k;
	for (uint32_t q = 0; q < nq; q++)
		n += hovf[q] != 0;
	m->ctx->fused_redone += n;
	if (n == 0)
		return 0;
	knn_plan_t pl;
	int rc = knn_plan_make(m, n, p, &pl, err);
	float *qb = (float *)malloc((size_t)n * d * sizeof(float));
	uint32_t *ib = (uint32_t *)malloc((size_t)n * k * sizeof(uint32_t));
	float *db = (float *)malloc((size_t)n * k * sizeof(float));
	if (!rc && (!qb || !ib || !db))
		rc = VELA_ENOMEM;
	for (uint32_t q = 0, j = 0; !rc && q < nq; q++)
		if (hovf[q])
			memcpy(qb + (size_t)j++ * d, queries + (size_t)q * d, d * sizeof(float));
	if (!rc)
		rc = knn_locked(m, qb, n, &pl, p->filter, ib, db, err);
	for (uint32_t q = 0, j = 0; !rc && q < nq; q++)
		if (hovf[q]) {
			memcpy(ids + (size_t)q * k, ib + (size_t)j * k, k * sizeof(uint32_t));
			memcpy(dists + (size_t)q * k, db + (size_t)j++ * k, k * sizeof(float));
		}
	free(qb);
	free(ib);
	free(db);
	return rc;
}

static void fz_scratch_free(gpu_qtile_t *t, fz_scratch_t *z)
{
	qtile_free(t);
	cudaFree(z->thr);
	cudaFree(z->cd);
	cudaFree(z->ci);
	cudaFree(z->rec);
	cudaFree(z->rec_n);
	memset(z, 0, sizeof(*z));
}

/* Per stream: a query tile of cp->tq queries, their lists and records. */
static int fz_scratch_alloc(gpu_matrix_t *m, const knn_plan_t *cp, gpu_qtile_t *t,
			    fz_scratch_t *z, vela_err_t *err)
{
	int rc = 0;
	size_t lists = (size_t)cp->tq * GPU_FZ_CAP;
	GPU_CK(cudaMalloc((void **)&z->thr, cp->tq * 2 * sizeof(float)), "fused scratch");
	z->cnt = (uint32_t *)(z->thr + cp->tq);
	GPU_CK(cudaMalloc((void **)&z->cd, lists * sizeof(float)), "fused candidate lists");
	GPU_CK(cudaMalloc((void **)&z->ci, lists * sizeof(uint32_t)), "fused candidate lists");
	/* records: a round keeps at most about CAP / 2 entries a query (the
	 * round rule in fz_chunk); a full region falls back to direct pushes */
	z->regions = (uint32_t)m->ctx->sm_count;
	z->rec_cap = (uint32_t)(((uint64_t)cp->tq * (GPU_FZ_CAP / 2) + z->regions - 1) /
				z->regions);
	GPU_CK(cudaMalloc((void **)&z->rec, (size_t)z->regions * z->rec_cap * sizeof(uint4)),
	       "fused records");
	GPU_CK(cudaMalloc((void **)&z->rec_n, z->regions * sizeof(uint32_t)), "fused records");
	rc = qtile_alloc(m, cp, t, err);
out:
	return rc;
}

/* Queries in chunks over two streams: the (host-blocking) upload of one
 * chunk's queries overlaps the other's rounds on the device. A chunk is a
 * whole number of 128-query blocks, at most GPU_FZ_QCHUNK. */
static int knn_fused_locked(gpu_matrix_t *m, const float *queries, uint32_t nq,
			    const knn_plan_t *pl, const gpu_knn_params_t *p, uint32_t *ids,
			    float *dists, vela_err_t *err)
{
	int rc = 0;
	knn_plan_t cp = *pl;
	uint32_t half = GPU_ROUND_UP((nq + 1) / 2, GPU_FZ_BQ);
	uint32_t chunk = nq <= 2 * GPU_FZ_BQ ? nq : half < GPU_FZ_QCHUNK ? half : GPU_FZ_QCHUNK;
	cp.tq = GPU_ROUND_UP(chunk, GPU_ALIGN);
	cp.ldt = 0;
	int ns = nq > cp.tq ? 2 : 1;
	gpu_qtile_t t[2];
	fz_scratch_t z[2];
	memset(t, 0, sizeof(t));
	memset(z, 0, sizeof(z));
	uint64_t *dfilter = NULL;
	uint32_t *dout_i = NULL;
	float *dout_d = NULL;
	uint8_t *dovf = NULL, *hovf = (uint8_t *)calloc(nq, 1);
	size_t nout = (size_t)nq * pl->k;
	if (!hovf)
		return VELA_ENOMEM;
	GPU_CK(cudaSetDevice(m->ctx->device), "cudaSetDevice");
	if (p->filter) {
		size_t words = (m->rows + 63) / 64;
		GPU_CK(cudaMalloc((void **)&dfilter, words * 8), "gpu filter");
		GPU_CK(cudaMemcpy(dfilter, p->filter, words * 8, cudaMemcpyHostToDevice),
		       "upload filter");
	}
	GPU_CK(cudaMalloc((void **)&dout_i, nout * sizeof(uint32_t)), "gpu results");
	GPU_CK(cudaMalloc((void **)&dout_d, nout * sizeof(float)), "gpu results");
	GPU_CK(cudaMalloc((void **)&dovf, nq), "gpu results");
	for (int s = 0; s < ns; s++)
		if ((rc = fz_scratch_alloc(m, &cp, &t[s], &z[s], err)))
			goto out;
	GPU_CK(cudaDeviceSynchronize(), "gpu scratch");
	for (uint32_t q0 = 0, c = 0; q0 < nq; q0 += cp.tq, c++) {
		uint32_t nqc = nq - q0 < cp.tq ? nq - q0 : cp.tq;
		int s = (int)(c % ns);
		if ((rc = fz_chunk(m, &cp, &t[s], &z[s], m->ctx->stream[s], queries, q0, nqc,
				   dfilter, dout_i, dout_d, dovf, err)))
			goto out;
	}
	for (int s = 0; s < ns; s++)
		GPU_CK(cudaStreamSynchronize(m->ctx->stream[s]), "gpu knn (fused)");
	GPU_CK(cudaMemcpy(ids, dout_i, nout * sizeof(uint32_t), cudaMemcpyDeviceToHost),
	       "download results");
	GPU_CK(cudaMemcpy(dists, dout_d, nout * sizeof(float), cudaMemcpyDeviceToHost),
	       "download results");
	GPU_CK(cudaMemcpy(hovf, dovf, nq, cudaMemcpyDeviceToHost), "download overflow flags");
	rc = fz_redo(m, queries, nq, p, hovf, ids, dists, err);
out:
	for (int s = 0; s < 2; s++) {
		cudaStreamSynchronize(m->ctx->stream[s]);
		fz_scratch_free(&t[s], &z[s]);
	}
	cudaFree(dfilter);
	cudaFree(dout_i);
	cudaFree(dout_d);
	cudaFree(dovf);
	free(hovf);
	return rc;
}

/* Chooses the path (gpu.h, GPU_PATH_...); the context's lock is held. */
static int knn_choose(gpu_matrix_t *m, uint32_t path, knn_plan_t *pl, vela_err_t *err)
{
	/* AUTO is TILED until the fused path measures faster (BENCHMARKS.md
	 * "GPU batch kNN": 1.02x the tiled LVQ-8 path at 1M x 768, within the
	 * runs' spread) */
	if (path != GPU_PATH_FUSED)
		return 0;
	const char *why = fused_refusal(m, pl);
	if (!why) {
		gpu_fused_selfcheck(m);
		if (m->ctx->fused_state < 0)
			why = m->ctx->fused_note;
	}
	if (why) {
		if (err) {
			err->code = VELA_EUNSUPPORTED;
			snprintf(err->msg, sizeof(err->msg), "gpu knn: %.200s", why);
		}
		return VELA_EUNSUPPORTED;
	}
	pl->fused = 1;
	return 0;
}

extern "C" int gpu_fused_probe(gpu_matrix_t *m, char *note, size_t cap)
{
	if (!m)
		return VELA_EINVAL;
	knn_plan_t pl;
	memset(&pl, 0, sizeof(pl));
	pl.kc = 1;
	const char *why = fused_refusal(m, &pl);
	pthread_mutex_lock(&m->ctx->lock);
	if (!why && m->rows) {
		gpu_fused_selfcheck(m);
		if (m->ctx->fused_state < 0)
			why = "";
	}
	if (note && cap)
		snprintf(note, cap, "%s%s%s; %llu queries answered again by the tiled path so far",
			 why ? why : "", why && *why ? "; " : "", m->ctx->fused_note,
			 (unsigned long long)m->ctx->fused_redone);
	pthread_mutex_unlock(&m->ctx->lock);
	return why || !m->rows ? 0 : 1;
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
	if (p->path > GPU_PATH_FUSED)
		return VELA_EINVAL;
	pthread_mutex_lock(&m->ctx->lock);
	rc = knn_choose(m, p->path, &pl, err);
	if (!rc)
		rc = pl.fused ? knn_fused_locked(m, queries, nq, &pl, p, ids, dists, err)
			      : knn_locked(m, queries, nq, &pl, p->filter, ids, dists, err);
	pthread_mutex_unlock(&m->ctx->lock);
	return rc;
}
