/**
 * @file gpu.h
 * @brief vela's CUDA backend: exact and quantized batch kNN, projection,
 *        covariance, k-means and the BERT text encoder on one NVIDIA GPU
 *        (DESIGN.md §6, §7).
 *
 * This header is plain C and names no CUDA type, so every module can include
 * it; the code behind it is CUDA C (gpu/ *.cu) built only when CMake finds
 * nvcc. gpu/ depends on nothing but the CUDA runtime, cuBLAS and libc (the
 * error codes come from the header-only include/vela/errors.h), so it builds,
 * tests and benchmarks on a bare GPU host on its own (gpu/CMakeLists.txt can be
 * the top-level project; see docs/gpu.md).
 *
 * Model. One gpu_ctx_t per process owns the device: a cuBLAS handle, a few
 * streams and scratch buffers. A gpu_matrix_t is a block of database rows
 * uploaded once and kept resident in device memory in one encoding (F32, F16,
 * BF16 or LVQ-8), optionally with an F32 copy for exact re-ranking. gpu_knn()
 * takes host queries and returns host results.
 *
 * Search (gpu_knn). Distances come from cuBLAS GEMM tiles (TQ queries x TR
 * rows, TN layout): F32 SIMT for F32 rows, tensor cores with F32
 * accumulation for F16/BF16, int8 IMMA with int32 output for LVQ-8. The
 * kernel that consumes each tile adds the squared row norms (L2) or applies
 * the LVQ scales, so the Q x N distance matrix never exists: one tile per
 * stream does. It keeps each query's running top-kc in device memory across
 * tiles: a filtered block select for kc <= GPU_K_FAST_MAX (an entry is
 * admitted only if it beats the query's current kc-th value; a block-wide
 * vote skips passes without one; newcomers are merged by one warp, or by a
 * shared-memory bitonic sort when many), and a radix select (8-bit digits
 * over the order-preserving bits of the float) for larger kc. Then the
 * kc = rerank * k candidates are re-scored exactly in F32 against the F32
 * copy (or, for BF16 rows without one, against the BF16 rows), and the k
 * best returned. With re-ranking on, BF16 tiles are written in BF16 (half the
 * bytes), and at least GPU_TILE16_MIN_CANDIDATES candidates are kept. LVQ:
 * Aguerrebere et al., arXiv 2304.04759 §3-4; selection: Johnson et al.,
 * arXiv 1702.08734 §4 (filtered queues) and the AIR top-k radix scheme.
 *
 * Threading: a context serialises its calls with an internal mutex; use one
 * context from many threads freely, but calls do not overlap on the device.
 *
 * Errors: functions return 0 or a negative VELA_E... code and fill the
 * optional vela_err_t. VELA_EUNSUPPORTED means "no usable CUDA device"; a
 * CUDA or cuBLAS failure mid-call is VELA_EIO with the CUDA error's text in
 * the detail; the caller falls back to the CPU backend for that call.
 */
#ifndef VELA_GPU_H
#define VELA_GPU_H

#include <stddef.h>
#include <stdint.h>

#include "vela/errors.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Largest k served by the filtered block select (shared-memory bitonic). */
#define GPU_K_FAST_MAX 256
/** Largest k (and candidate count) of gpu_knn; above FAST_MAX radix select. */
#define GPU_K_MAX 4096

/** Queries per GEMM tile. */
#define GPU_TILE_QUERIES_DEFAULT 2048
#define GPU_TILE_QUERIES_MIN 32
#define GPU_TILE_QUERIES_MAX 16384
/** Database rows per GEMM tile. */
#define GPU_TILE_ROWS_DEFAULT 16384
#define GPU_TILE_ROWS_MIN 256
#define GPU_TILE_ROWS_MAX (1u << 20)
/** Candidates re-scored exactly per result (rerank * k, capped at GPU_K_MAX). */
#define GPU_RERANK_DEFAULT 4
#define GPU_RERANK_MIN 1
#define GPU_RERANK_MAX 32
/** Largest vector dimension. */
#define GPU_DIM_MAX 16384

/** Encoding of the resident rows. */
typedef enum gpu_elem {
	GPU_ELEM_F32 = 0,  /**< exact; SIMT sgemm with full F32 accuracy (no TF32) */
	GPU_ELEM_F16 = 1,  /**< half rows and queries, F32 accumulation */
	GPU_ELEM_BF16 = 2, /**< bfloat16 rows and queries, F32 accumulation */
	GPU_ELEM_LVQ8 = 3  /**< LVQ 8-bit codes, int8 tensor-core GEMM */
} gpu_elem_t;

/** Distance. COSINE is IP over rows and queries the caller normalised. */
typedef enum gpu_metric {
	GPU_METRIC_L2 = 0, /**< squared Euclidean */
	GPU_METRIC_IP = 1  /**< 1 - <q, x> (Redis convention) */
} gpu_metric_t;

typedef struct gpu_ctx gpu_ctx_t;
typedef struct gpu_matrix gpu_matrix_t;

/** @brief Number of usable CUDA devices; 0 when there is no driver or device. */
int gpu_device_count(void);

/**
 * @brief Open the process's context on `device` (0-based).
 * @return 0; VELA_EUNSUPPORTED when no such device; VELA_EIO on CUDA errors.
 * On success *out is owned by the caller (gpu_ctx_close).
 */
int gpu_ctx_open(int device, gpu_ctx_t **out, vela_err_t *err);
/** @brief Free the context. Its matrices must have been freed first. NULL ok. */
void gpu_ctx_close(gpu_ctx_t *ctx);
/** @brief "NVIDIA H200, 132 SMs, 139.8 GiB, sm_90"; owned by the context. */
const char *gpu_ctx_name(const gpu_ctx_t *ctx);

/** Parameters of a resident matrix. */
typedef struct gpu_matrix_params {
	gpu_elem_t elem;
	gpu_metric_t metric;
	uint32_t dim;      /**< 1..GPU_DIM_MAX */
	uint64_t capacity; /**< rows reserved up front; appends beyond it regrow */
	int keep_f32;      /**< keep an F32 copy to re-rank F16/BF16/LVQ8 results */
} gpu_matrix_params_t;

/**
 * @brief Create an empty resident matrix. LVQ8 centres on the mean of the
 * first append (LVQ §3: per-dataset mean, per-vector scale and bias).
 * On success *out is owned by the caller (gpu_matrix_free).
 */
int gpu_matrix_create(gpu_ctx_t *ctx, const gpu_matrix_params_t *p, gpu_matrix_t **out,
		      vela_err_t *err);
/**
 * @brief Append `n` F32 rows (row-major, host memory, borrowed for the call);
 * they get row numbers rows()..rows()+n-1. Encoding happens on the device.
 */
int gpu_matrix_append(gpu_matrix_t *m, const float *rows, uint64_t n, vela_err_t *err);
/** @brief Rows held. */
uint64_t gpu_matrix_rows(const gpu_matrix_t *m);
/** @brief Device bytes held by the matrix (codes, norms, F32 copy). */
size_t gpu_matrix_bytes(const gpu_matrix_t *m);
/** @brief Free the matrix and its device memory. NULL ok. */
void gpu_matrix_free(gpu_matrix_t *m);

/** Parameters of one gpu_knn call; zero-initialise and set k. */
typedef struct gpu_knn_params {
	uint32_t k;              /**< 1..GPU_K_MAX */
	uint64_t row_begin;      /**< search rows [row_begin, row_end) */
	uint64_t row_end;        /**< 0 = all rows */
	const uint64_t *filter;  /**< optional bitmap over all rows (bit r set = row r
				      allowed), rows()/64 rounded up words; borrowed */
	uint32_t rerank;         /**< 0 = GPU_RERANK_DEFAULT; 1 = no exact re-ranking */
	uint32_t tile_queries;   /**< 0 = default */
	uint32_t tile_rows;      /**< 0 = default */
	uint32_t path;           /**< GPU_PATH_...; 0 = GPU_PATH_AUTO */
} gpu_knn_params_t;

/*
 * Search paths. TILED: cuBLAS GEMM tiles read back by the selection kernel
 * (above). FUSED (LVQ-8 on an sm_90 GPU, dimension <= 768, rerank * k <= 128,
 * row_begin a multiple of 16): one int8 wgmma kernel whose epilogue keeps, per
 * query, only the dot products under a threshold learnt from growing samples
 * of the rows, so no distance tile is written (gpu_fused.cu, docs/gpu.md).
 * Its first use on a context checks the kernel against cuBLAS once. AUTO
 * is TILED for now: FUSED measured 1.02x the tiled LVQ-8 path on an H200
 * (1M x 768, 10k queries), within the runs' spread. Results are the same
 * either way (the kc best by the LVQ-8 value, re-ranked), up to ties.
 */
#define GPU_PATH_AUTO 0
#define GPU_PATH_TILED 1
#define GPU_PATH_FUSED 2 /**< VELA_EUNSUPPORTED when not eligible or not usable */

/**
 * @brief Whether the fused path is usable for `m` (runs the context's one-off
 * check if it has not run): 1 yes, 0 no (a check that could not run counts
 * as no), VELA_EINVAL for a NULL m. `note` (optional, cap bytes) receives
 * the check's outcome in words.
 */
int gpu_fused_probe(gpu_matrix_t *m, char *note, size_t cap);

/**
 * @brief k nearest rows for each of `nq` queries (host, row-major F32).
 *
 * ids[q*k + i] / dists[q*k + i] hold query q's i-th nearest row (row number)
 * and its distance, ascending, ties broken by the smaller row number; slots
 * past the number of allowed rows hold UINT32_MAX and INFINITY. Distances
 * are exact F32 when re-ranked (rerank > 1 with an F32 copy, or elem F32),
 * else those of the encoding.
 */
int gpu_knn(gpu_matrix_t *m, const float *queries, uint32_t nq, const gpu_knn_params_t *p,
	    uint32_t *ids, float *dists, vela_err_t *err);

/**
 * @brief Y = X * P: project n rows of dimension din onto dout (LeanVec).
 * X is n x din, P is din x dout, Y is n x dout, all row-major host memory.
 * TF32 tensor cores are allowed: a projection feeds an approximate search.
 */
int gpu_project(gpu_ctx_t *ctx, const float *X, uint64_t n, uint32_t din, const float *P,
		uint32_t dout, float *Y, vela_err_t *err);

/**
 * @brief Mean and covariance of n rows: mu = mean(X), C = (X-mu)^T (X-mu) / n
 * (d x d row-major, full F32, no TF32). mu may be NULL.
 */
int gpu_covariance(gpu_ctx_t *ctx, const float *X, uint64_t n, uint32_t d, float *mu, float *C,
		   vela_err_t *err);

/**
 * @brief One Lloyd iteration of k-means over n rows: assign every row to its
 * nearest centroid (L2; GEMM + arg-min) and move each centroid to the mean of
 * its rows (a centroid with no rows stays). centroids is kc x d, in/out.
 * assign (n entries) and inertia (sum of squared distances) may be NULL.
 */
int gpu_kmeans_step(gpu_ctx_t *ctx, const float *X, uint64_t n, uint32_t d, float *centroids,
		    uint32_t kc, uint32_t *assign, double *inertia, vela_err_t *err);

/**
 * @brief Gram matrix of n F32 rows in double precision (LeanVec training's
 * second moments, quant/leanvec.c): G = sum_r (x_r - mu)(x_r - mu)^T, d x d
 * row-major, both triangles; mu NULL means no centring. The rows stream
 * through the device in chunks, are converted to double there (minus mu)
 * and summed by cublasDsyrk (FP64 all the way: the CPU's dsyrk up to the
 * order of the additions). X: n x d host floats, NULL allowed when n = 0;
 * mu: d host doubles or NULL; G: d x d host doubles, caller-owned; all
 * borrowed for the call. n = 0 gives G = 0.
 * @return 0; VELA_EINVAL (NULL ctx or G, NULL X with n > 0, d outside
 * 1..GPU_DIM_MAX); VELA_EIO (CUDA/cuBLAS failure, device memory included;
 * G is then unspecified).
 */
int gpu_gram(gpu_ctx_t *ctx, const float *X, uint64_t n, uint32_t d, const double *mu, double *G,
	     vela_err_t *err);

/* ========================================================== partitions */

/*
 * Batched partition scans (docs/gpu.md, "Partition scans"; the CPU path is
 * index/partitions.c scan_cluster). The planner's partitions plan scans many
 * small clusters, each for a few queries, some with a row filter: one
 * gpu_knn per (cluster, filter) is latency-bound. Here every cluster's F32
 * rows are uploaded once into one resident gpu_parts_t, and a whole batch of
 * (cluster, query, filter) pairs is one upload, one kernel and one download:
 * a warp per pair computes exact F32 distances of the rows it may take
 * (direct differences for L2, no norm expansion) and keeps the pair's k best
 * in shared memory with a filtered warp queue (Johnson et al., arXiv
 * 1702.08734 §4: a candidate enters a buffer only if it beats the current
 * k-th; full buffers are merged by rank). Merging across a query's pairs is
 * the caller's (the engine merges hits per query).
 */

/** Largest k of gpu_parts_scan (two k-entry lists per warp in shared memory). */
#define GPU_PART_K_MAX 1024
/** Largest cluster (rows); results name rows by uint32 within their cluster. */
#define GPU_PART_CLUSTER_ROWS_MAX (1u << 31)

typedef struct gpu_parts gpu_parts_t;

/** One (cluster, query) pair of a batch. */
typedef struct gpu_part_pair {
	uint32_t cluster;    /**< < nclusters of the gpu_parts_t */
	uint32_t query;      /**< < nq of the call */
	uint32_t filter_off; /**< first allowed row in the call's filt[] */
	uint32_t filter_len; /**< GPU_PART_ALL_ROWS, or the number of allowed rows
				  (at most the cluster's): filt[filter_off ..
				  filter_off + filter_len), row indexes within the
				  cluster, any order, distinct */
} gpu_part_pair_t;

/** filter_len of a pair that takes every row of its cluster. */
#define GPU_PART_ALL_ROWS UINT32_MAX

/**
 * @brief Upload `nclusters` clusters of F32 rows and keep them resident.
 * rows (host, n x dim row-major) holds the clusters back to back: cluster c
 * is rows [offsets[c], offsets[c+1]) (offsets: nclusters + 1 entries,
 * offsets[0] = 0, non-decreasing, offsets[nclusters] = n; each cluster at
 * most GPU_PART_CLUSTER_ROWS_MAX rows; empty clusters allowed). Distances
 * follow gpu_knn: L2 squared, IP = 1 - <q, x>. rows and offsets are borrowed
 * for the call. `ctx` must outlive the result. On success *out is owned by
 * the caller (gpu_parts_free).
 * @return 0; VELA_EINVAL (dim 0 or > GPU_DIM_MAX, bad offsets or metric);
 * VELA_ENOMEM; VELA_EIO.
 */
int gpu_parts_create(gpu_ctx_t *ctx, const float *rows, uint64_t n, uint32_t dim,
		     const uint64_t *offsets, uint32_t nclusters, gpu_metric_t metric,
		     gpu_parts_t **out, vela_err_t *err);

/**
 * @brief Scan a batch of `npairs` (cluster, query, filter) pairs.
 *
 * queries: host, nq x dim F32; pairs: host, npairs entries; filt: host,
 * nfilt row indexes the pairs' filters point into (NULL when nfilt = 0).
 * All borrowed for the call. For pair p, out_ids[p*k + i] / out_dists[p*k + i]
 * (host, npairs x k each) receive its i-th nearest allowed row (index within
 * the cluster) and exact F32 distance, ascending, ties broken by the smaller
 * row; slots past the number of allowed rows hold UINT32_MAX and INFINITY
 * (a NaN distance ranks as INFINITY). Device scratch is kept in `parts` and
 * grows on demand; calls on one context are serialised.
 * @return 0; VELA_EINVAL (k outside 1..GPU_PART_K_MAX, a pair naming a cluster
 * or query out of range, a filter range past nfilt or longer than its
 * cluster, or a filter row not in its cluster: the detail names the first
 * such pair; outputs unspecified); VELA_ENOMEM; VELA_EIO.
 */
int gpu_parts_scan(gpu_parts_t *parts, const float *queries, uint32_t nq,
		   const gpu_part_pair_t *pairs, uint32_t npairs, const uint32_t *filt,
		   uint32_t nfilt, uint32_t k, uint32_t *out_ids, float *out_dists,
		   vela_err_t *err);

/**
 * @brief Device time (ms, CUDA events on the scan's stream) of the last
 * successful gpu_parts_scan: ms[0] the uploads, ms[1] the kernel, ms[2] the
 * downloads. Zeros before the first scan or without events.
 */
void gpu_parts_last_times(const gpu_parts_t *parts, float ms[3]);

/** @brief Device bytes held: the rows plus the cached scratch. */
size_t gpu_parts_bytes(const gpu_parts_t *parts);

/** @brief Free the clusters, the scratch and the handle. NULL ok. */
void gpu_parts_free(gpu_parts_t *parts);

/* ================================================================ encoder */

/*
 * The BERT text encoder on the GPU (DESIGN.md §7; the CPU path is embed/,
 * forward.c): post-LN BERT with erf-GELU, mean pooling over each sequence's
 * tokens and L2 normalisation: the semantics of embed_ids_batch, up to the
 * F16 rounding of the GEMM operands.
 *
 * Sequences are packed without padding (Prepacking, arXiv 2404.09529 §3):
 * the token ids of all sequences are concatenated, positions restart at 0 per
 * sequence and a token attends only to its own sequence. Every linear layer
 * is one cuBLAS GEMM over all T tokens of a chunk (F16 weights and
 * activations, F32 accumulation, tensor cores); the residual stream,
 * LayerNorm, softmax and pooling stay in F32. Attention is a kernel for
 * variable-length sequences: one block per (sequence, head, tile of 32
 * queries), keys and values staged through shared memory in tiles with an
 * online softmax (Milakov & Gimelshein, arXiv 1805.02867), so any length up
 * to max_pos runs in bounded shared memory. Chunks hold whole sequences and
 * at most batch_tokens tokens, so device memory is bounded by the budget.
 *
 * Weights are uploaded once through gpu_bert_set_tensor under the names of
 * the safetensors file (HF BertModel, with or without a "bert." prefix) and
 * stay resident: linear weights in F16, embeddings, biases and LayerNorm
 * parameters in F32.
 */

/** Tokens per forward chunk (bounds the activations: ~11 KB per token for
 *  all-MiniLM-L6-v2). A chunk always takes at least one whole sequence. */
#define GPU_BERT_BATCH_TOKENS_DEFAULT 16384
#define GPU_BERT_BATCH_TOKENS_MIN 256
#define GPU_BERT_BATCH_TOKENS_MAX (1u << 20)
/** Largest hidden size (LayerNorm keeps a row in one warp's registers). */
#define GPU_BERT_HIDDEN_MAX 1024
/** Largest position table, hence sequence length. */
#define GPU_BERT_POS_MAX 8192
/** Largest number of layers. */
#define GPU_BERT_LAYERS_MAX 64

/** Shape of the model (config.json of a BertModel). head size
 *  hidden / heads must be 32 or 64 and hidden a multiple of 8. */
typedef struct gpu_bert_config {
	uint32_t hidden;       /**< 384 for all-MiniLM-L6-v2; 8..GPU_BERT_HIDDEN_MAX */
	uint32_t layers;       /**< 6; 1..GPU_BERT_LAYERS_MAX */
	uint32_t heads;        /**< 12 */
	uint32_t intermediate; /**< 1536; a multiple of 8 */
	uint32_t vocab;        /**< 30522 */
	uint32_t max_pos;      /**< 512: longest sequence accepted; 1..GPU_BERT_POS_MAX */
	uint32_t type_vocab;   /**< 2 (only type 0 is used) */
	uint32_t batch_tokens; /**< 0 = GPU_BERT_BATCH_TOKENS_DEFAULT */
	float ln_eps;          /**< 1e-12; > 0 */
} gpu_bert_config_t;

typedef struct gpu_bert gpu_bert_t;

/**
 * @brief Create an encoder of shape `cfg` on `ctx` and reserve its device
 * memory (weights and the activations of one chunk). No weight is set yet.
 * `ctx` must outlive the encoder. On success *out is owned by the caller
 * (gpu_bert_free).
 * @return 0; VELA_EINVAL (a shape outside the bounds above);
 * VELA_EUNSUPPORTED (head size not 32 or 64); VELA_ENOMEM; VELA_EIO.
 */
int gpu_bert_create(gpu_ctx_t *ctx, const gpu_bert_config_t *cfg, gpu_bert_t **out,
		    vela_err_t *err);

/**
 * @brief Upload one weight tensor, given as `n` F32 values in host memory
 * (borrowed for the call), row-major as in the safetensors file: e.g.
 * "embeddings.word_embeddings.weight" [vocab, hidden],
 * "encoder.layer.3.attention.self.query.weight" [hidden, hidden] (out, in),
 * "encoder.layer.3.output.LayerNorm.bias" [hidden] (".gamma"/".beta" also
 * accepted). Setting a tensor again replaces it.
 * @return 0; VELA_ENOTFOUND (a name the encoder does not use, such as
 * "pooler.dense.weight": nothing changes, the caller may skip it);
 * VELA_EINVAL (n is not the tensor's size); VELA_ENOMEM; VELA_EIO.
 */
int gpu_bert_set_tensor(gpu_bert_t *b, const char *name, const float *host, size_t n,
			vela_err_t *err);

/**
 * @brief Encode `n_seqs` packed sequences: sequence s is
 * tokens[seq_offsets[s] .. seq_offsets[s+1]) (seq_offsets has n_seqs + 1
 * non-decreasing entries; lengths 1..max_pos; ids < vocab; [CLS]/[SEP] are
 * the caller's business; token type 0). out (host, n_seqs x hidden F32,
 * row s for sequence s) receives the mean-pooled, L2-normalised vectors.
 * All arrays are borrowed for the call. Calls on one context are serialised.
 * @return 0; VELA_EINVAL (bad length or id, or a tensor never set: the
 * detail names it); VELA_ENOMEM; VELA_EIO (CUDA/cuBLAS failure; out is then
 * unspecified).
 */
int gpu_bert_encode(gpu_bert_t *b, const uint32_t *tokens, const uint32_t *seq_offsets,
		    uint32_t n_seqs, float *out, vela_err_t *err);

/** @brief Device bytes held by the encoder (weights and activations). */
size_t gpu_bert_bytes(const gpu_bert_t *b);

/** @brief Free the encoder and its device memory. NULL ok. */
void gpu_bert_free(gpu_bert_t *b);

#ifdef __cplusplus
}
#endif
#endif
