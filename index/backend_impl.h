/* Private to index/: what the CPU backend (backend.c) and the GPU backend
 * (backend_gpu.c) share. The public side is index.h's BACKEND section. */
#ifndef VELA_BACKEND_IMPL_H
#define VELA_BACKEND_IMPL_H

#include "index/flat_impl.h"

/* Check a kNN request against its rows; fill qn[i] = |Q_i|^2 (computed as
 * flat_query_check does) when qn is not NULL. 0 or VELA_EINVAL with err. */
int backend_knn_check(const index_rows_t *rows, const index_knn_t *req, float *qn,
		      vela_err_t *err);

/* Check a batched partition scan (index_backend_t.parts_knn): the queries
 * (qn as backend_knn_check), the pairs, the shapes of the clusters they
 * name, the outputs. 0 or VELA_EINVAL with err. */
int backend_parts_check(const index_parts_t *parts, const index_parts_req_t *req,
			const vela_hit_t *out, const uint32_t *n_out, float *qn, vela_err_t *err);
/* Every cluster of `parts` (what an upload reads) of cl[0]'s shape. */
int backend_parts_shape_check(const index_parts_t *parts, vela_err_t *err);

/* Argument checks of project, kmeans_step and gram. 0 or VELA_EINVAL with err. */
int backend_project_check(const float *X, uint64_t n, uint32_t din, const float *P,
			  uint32_t dout, const float *Y, vela_err_t *err);
int backend_kmeans_check(const float *X, uint64_t n, uint32_t d, const float *C, uint32_t kc,
			 vela_err_t *err);
int backend_gram_check(const float *X, uint64_t n, uint32_t d, const double *G, vela_err_t *err);

/* Slots n_out[i]..k-1 of every query become {INFINITY, UINT32_MAX}. */
void backend_hits_pad(vela_hit_t *out, const uint32_t *n_out, uint32_t nq, uint32_t k);

/* Twice the bound e on |GEMM-form distance - direct-kernel distance| of
 * flat_batch.c (Higham §3.1), for a query with |q|^2 = qn over rows whose
 * |x|^2 <= norm_max. */
float backend_rounding_slack(uint32_t dim, float qn, float norm_max);

/* backend_gpu.c: 1 when built with CUDA; free every resident block; the
 * device in use ("none" if no context) and the resident blocks' totals. */
int backend_gpu_built(void);
void backend_gpu_release(void);
void backend_gpu_state(char *device, size_t cap, uint32_t *resident, uint64_t *bytes);

#endif
