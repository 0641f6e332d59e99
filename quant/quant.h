/**
 * @file quant.h
 * @brief Vector encodings and exact distance kernels.
 *
 * Distances follow Redis (DESIGN.md §2): L2 is the squared Euclidean
 * distance, IP is 1 - <q,x>, COSINE is 1 - <q,x> of vectors the caller has
 * already normalised (quant_normalize). Smaller is closer.
 *
 * Kernels exist in three instruction-set variants (scalar, AVX2+FMA+F16C,
 * AVX-512F). One is chosen on first use from vela_cpu_features(), so the
 * VELA_CPU_MAX environment cap applies. Every function here is thread-safe
 * and allocates nothing; pointers passed in are only read during the call.
 *
 * Accuracy: kernels accumulate in float with several independent partial
 * sums, so the result differs from the exact value by at most the classic
 * bound gamma_n * sum|a_i b_i| (n = dim, gamma_n ~ n * 2^-24) and in practice
 * by far less; integer-valued inputs whose partial sums stay below 2^24 are
 * computed exactly by every variant.
 */
#ifndef VELA_QUANT_H
#define VELA_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "vela/errors.h"
#include "vela/types.h"

/** Instruction-set variants of the kernel table. */
enum quant_isa {
	QUANT_ISA_SCALAR = 0,
	QUANT_ISA_AVX2 = 1,   /**< needs AVX2, FMA and F16C */
	QUANT_ISA_AVX512 = 2, /**< needs AVX-512F */
	QUANT_ISA_COUNT = 3
};

/** One variant's kernels. Tables are static: never freed, never modified. */
typedef struct quant_kernels {
	const char *name; /**< "scalar", "avx2" or "avx512" */
	int isa;          /**< enum quant_isa */
	float (*l2sq_f32)(const float *a, const float *b, size_t dim);
	float (*dot_f32)(const float *a, const float *b, size_t dim);
	/** Query in float, stored vector as IEEE binary16 halves. */
	float (*l2sq_f16)(const float *q, const uint16_t *x, size_t dim);
	float (*dot_f16)(const float *q, const uint16_t *x, size_t dim);
	void (*f32_to_f16)(const float *src, uint16_t *dst, size_t n);
	void (*f16_to_f32)(const uint16_t *src, float *dst, size_t n);
} quant_kernels_t;

/**
 * @brief Kernel table of one variant, or NULL when the CPU (after the
 * VELA_CPU_MAX cap) lacks it or `isa` is out of range. Lets tests run every
 * variant the machine supports.
 */
const quant_kernels_t *quant_kernels_get(int isa);

/** The table chosen for this process (the best variant available). */
const quant_kernels_t *quant_kernels(void);

/** Name of the chosen variant ("scalar", "avx2", "avx512"); static storage. */
const char *quant_isa_name(void);

/* ------------------------------------------------ dispatched kernels */

float quant_l2sq_f32(const float *a, const float *b, size_t dim);
float quant_dot_f32(const float *a, const float *b, size_t dim);
float quant_l2sq_f16(const float *q, const uint16_t *x, size_t dim);
float quant_dot_f16(const float *q, const uint16_t *x, size_t dim);

/**
 * @brief Distance of query `q` (float) to stored vector `x` of element type
 * `t` (float* for F32, uint16_t* halves for F16) under metric `m`.
 * Returns NAN for an unknown metric or type.
 */
float quant_distance(vela_metric_t m, vela_vec_type_t t, const float *q, const void *x,
		     size_t dim);

/** Signature of a full-metric distance (see quant_distance). */
typedef float (*quant_dist_fn)(const float *q, const void *x, size_t dim);

/**
 * @brief The dispatched distance function for (m, t), for hot loops that
 * want to skip the switch in quant_distance. NULL for an unknown m or t.
 * The pointer stays valid for the life of the process.
 */
quant_dist_fn quant_distance_fn(vela_metric_t m, vela_vec_type_t t);

/* ------------------------------------------------ conversions */

/**
 * @brief float -> binary16 with round-to-nearest-even. Overflow gives
 * infinity, tiny values give subnormals or signed zero, NaN stays NaN
 * (quietened, top payload bits kept, like F16C's VCVTPS2PH).
 * Buffers must not overlap.
 */
void quant_f32_to_f16(const float *src, uint16_t *dst, size_t n);

/** binary16 -> float; exact for every non-NaN half (NaNs are quietened). */
void quant_f16_to_f32(const uint16_t *src, float *dst, size_t n);

/** One-element software conversions (no dispatch); same semantics. */
uint16_t quant_f32_to_f16_one(float f);
float quant_f16_to_f32_one(uint16_t h);

/** Largest finite binary16 value; larger magnitudes round to infinity
 * from QUANT_F16_ROUNDS_TO_INF up. */
#define QUANT_F16_MAX 65504.0f
#define QUANT_F16_ROUNDS_TO_INF 65520.0f

/**
 * @brief Scale `v` to unit Euclidean length in place (norm computed in
 * double). A zero vector is left as is and returns 0.
 * @return 0, or VELA_EINVAL when `v` is NULL with dim > 0 or holds a
 * non-finite value (then `v` is unchanged).
 */
int quant_normalize(float *v, size_t dim);

/* ================================================================ LVQ
 * (locally-adaptive vector quantization; quant/lvq*.c) */

/*
 * LVQ (Aguerrebere et al., "Similarity search in the blink of an eye with
 * compressed indices", VLDB 2023; reference/leanvec-lvq.md §2). Each vector
 * is stored as x ~ mu + b + scale * c: mu a dataset mean given at create
 * time, b (bias, the vector's minimum after centring) and scale as binary16,
 * c unsigned B-bit codes. Two-level kinds add a residual level that encodes
 * the first level's error on its own grid with no extra constants (§2.2):
 * step delta = scale / (2^B2 - 1) over [-scale/2, +scale/2], decoded in the
 * fused form delta * ((2^B2 - 1) p + r) + (b - scale/2).
 *
 * Code record (bytes, no alignment required by any kernel):
 *   [primary codes][scale f16][bias f16] | [residual codes]
 *   \___________ quant_lvq_primary_size ___/ \__ rest of quant_lvq_code_size
 * so a caller may store the primary (what graph traversal reads) apart from
 * the residual (read only to re-rank), as reference §7 suggests.
 * - 8-bit codes are sequential: byte j is dimension j.
 * - 4-bit codes (primary and the 4x4 residual) use the "Turbo" layout of
 *   §2.4: blocks of 128 dimensions in 64 bytes (one cache line), read as 16
 *   little-endian u32 lanes; nibble k of lane l is dimension 128a + 16k + l.
 *   One 512-bit load and (w >> 4k) & 15 then yields dimensions [16k, 16k+16)
 *   in lane order (AVX2 reads each half line the same way). The last block
 *   is zero-padded, so 4-bit levels take 64 * ceil(dim/128) bytes (dim 200:
 *   128 B, not 100). Unlike SVS we also use it for the 4-bit residual, so
 *   both levels unpack with the same shifts.
 * - No centroid selector byte (one mean only): overhead is 4 B, not §2.5's
 *   5 B. Callers that want 32/64-byte aligned records round code_size up
 *   themselves (§2.5: +5..12% total footprint).
 *   dim 768: LVQ8 772 B, LVQ4 388, LVQ4x4 772, LVQ4x8 1156 (F32: 3072).
 *
 * Distances use Redis semantics like the rest of quant.h and are computed on
 * the codes directly (§2.3): IP as scale * sum q_j c_j + b * sum q + <q,mu>
 * (the loop is an int->float dot product), L2 as sum (q_j - mu_j - b -
 * scale c_j)^2 evaluated directly (no expansion, so no cancellation).
 * COSINE is IP on vectors the caller normalised before encoding/querying.
 *
 * Deviation from SVS (§2.1): bias is rounded to binary16 *down* and scale
 * *up*, so the grid b + scale * [0, 2^B - 1] always covers the vector's
 * range and the error is at most scale/2 per component (SVS rounds both to
 * nearest and can clip the extremes by half a binary16 ulp of b).
 * Kinds and layout are part of the stored format: never renumber them.
 */

/** LVQ encodings: primary bits x residual bits. */
typedef enum quant_lvq_kind {
	QUANT_LVQ8 = 0,   /**< one level, 8-bit sequential codes */
	QUANT_LVQ4 = 1,   /**< one level, 4-bit Turbo codes */
	QUANT_LVQ4x4 = 2, /**< 4-bit primary + 4-bit residual (both Turbo) */
	QUANT_LVQ4x8 = 3, /**< 4-bit primary + 8-bit sequential residual */
	QUANT_LVQ_KIND_COUNT = 4
} quant_lvq_kind_t;

/** Dimensions per 4-bit Turbo block (64 bytes). */
#define QUANT_LVQ_TURBO_DIMS 128u
#define QUANT_LVQ_TURBO_BYTES 64u

/** Opaque encoder: kind, dim and a private copy of the mean. Immutable
 * after create, so any number of threads may share one. */
typedef struct quant_lvq quant_lvq_t;

/**
 * @brief New encoder. `mean` (dim floats, NULL = zeros) is copied; the
 * caller keeps ownership of its array. Free with quant_lvq_destroy.
 * @return 0; VELA_EINVAL for an unknown kind, a NULL `out` or a non-finite
 * mean; VELA_EDIM for dim outside VELA_DIM_MIN..VELA_DIM_MAX; VELA_ENOMEM.
 */
int quant_lvq_create(quant_lvq_kind_t kind, uint32_t dim, const float *mean,
		     quant_lvq_t **out);
/** Free an encoder (NULL allowed). Prepared queries made from it must not be used after. */
void quant_lvq_destroy(quant_lvq_t *l);

quant_lvq_kind_t quant_lvq_kind(const quant_lvq_t *l);
uint32_t quant_lvq_dim(const quant_lvq_t *l);
/** The encoder's mean (dim floats); lives as long as `l`. */
const float *quant_lvq_mean(const quant_lvq_t *l);
/** Bits per dimension of the primary and residual levels (residual 0 for
 * one-level kinds). */
unsigned quant_lvq_primary_bits(const quant_lvq_t *l);
unsigned quant_lvq_residual_bits(const quant_lvq_t *l);

/** Bytes per encoded vector, all levels (see the record layout above). */
size_t quant_lvq_code_size(const quant_lvq_t *l);
/** Bytes of the primary part (codes + scale + bias), the record's prefix;
 * equals quant_lvq_code_size for one-level kinds. */
size_t quant_lvq_primary_size(const quant_lvq_t *l);

/**
 * @brief Mean of n row-major vectors of `dim` floats, accumulated in
 * double, written to `mean` (dim floats, caller-owned).
 * @return 0, or VELA_EINVAL (NULL pointer, n == 0, dim == 0), VELA_ENOMEM.
 */
int quant_mean(const float *X, size_t n, uint32_t dim, float *mean);

/**
 * @brief Encode `x` (dim floats) into `code` (quant_lvq_code_size bytes,
 * any alignment). Per component, |x - decode| <= scale/2 (one level or the
 * primary) or <= scale / (2 (2^B2 - 1)) (two levels), plus float rounding.
 * @return 0; VELA_EINVAL when x holds a non-finite value or x - mean needs
 * binary16 constants beyond +-65504 (a minimum component below -65504, or
 * (max - bias) above 65504 * (2^B1 - 1)); `code` is then untouched.
 */
int quant_lvq_encode(const quant_lvq_t *l, const float *x, void *code);
/** Reconstruct x (mean included) from all levels into `out` (dim floats). */
void quant_lvq_decode(const quant_lvq_t *l, const void *code, float *out);
/** Reconstruct from the primary level only (what quant_lvq_distance sees). */
void quant_lvq_decode_primary(const quant_lvq_t *l, const void *code, float *out);

/** A query prepared once per search (metric, q or q - mean, sum q,
 * <q, mean>). Owned by the caller; one thread at a time. */
typedef struct quant_lvq_query quant_lvq_query_t;

/** Alignment (bytes) a buffer given to quant_lvq_query_place needs. */
#define QUANT_LVQ_QUERY_ALIGN 8u

/** Bytes of a prepared query for `l`'s dim laid out in caller memory by
 * quant_lvq_query_place (header + dim floats). */
size_t quant_lvq_query_size(const quant_lvq_t *l);

/**
 * @brief Lay out an empty prepared query for `l`'s dim in `buf`
 * (quant_lvq_query_size(l) bytes, aligned to QUANT_LVQ_QUERY_ALIGN), then
 * fill it with quant_lvq_query_prepare. No allocation: `buf` stays the
 * caller's (never pass the result to quant_lvq_query_destroy), e.g. a
 * graph_store_t prepared-query buffer or thread-local scratch.
 * @return the query in `buf`, or NULL for a NULL argument or a misaligned buf.
 */
quant_lvq_query_t *quant_lvq_query_place(const quant_lvq_t *l, void *buf);

/** Allocate a prepared-query buffer for `l`'s dim (free with
 * quant_lvq_query_destroy). @return 0, VELA_EINVAL or VELA_ENOMEM. */
int quant_lvq_query_create(const quant_lvq_t *l, quant_lvq_query_t **out);
void quant_lvq_query_destroy(quant_lvq_query_t *pq);
/**
 * @brief Fill `pq` (made by quant_lvq_query_create for an encoder of the
 * same dim and mean) for query `q` (dim floats, not kept) under metric `m`.
 * For COSINE the caller passes a normalised q (quant_normalize).
 * @return 0, or VELA_EINVAL for an unknown metric, a dim mismatch or a
 * non-finite q.
 */
int quant_lvq_query_prepare(const quant_lvq_t *l, vela_metric_t m, const float *q,
			    quant_lvq_query_t *pq);

/** Distance of the prepared query to `code` on the primary level only (graph
 * traversal); reads only the first quant_lvq_primary_size bytes. */
float quant_lvq_distance(const quant_lvq_t *l, const quant_lvq_query_t *pq, const void *code);
/** Distance using both levels (re-ranking); same as quant_lvq_distance for
 * one-level kinds. */
float quant_lvq_distance_full(const quant_lvq_t *l, const quant_lvq_query_t *pq,
			      const void *code);
/** Two-level distance with the levels stored apart: `primary` is the
 * record's first quant_lvq_primary_size bytes, `residual` the rest. */
float quant_lvq_distance_split(const quant_lvq_t *l, const quant_lvq_query_t *pq,
			       const void *primary, const void *residual);

/**
 * LVQ kernels of one instruction set. They read q[0..dim) and the codes of
 * dimensions [0, dim) only (layouts above) and return, in float:
 *   dot_*: sum_j q_j z_j      l2_*: sum_j (q_j - (scale z_j + bias))^2
 * with z_j = c_j (one level) or (2^B2 - 1) p_j + r_j (two levels). Tables
 * are static. No VNNI variant: it needs an integer query, whose rounding
 * would make results differ between variants; the float path is exact on
 * the codes and bound by memory for 8-bit codes.
 */
typedef struct quant_lvq_kernels {
	const char *name; /**< "scalar", "avx2", "avx512" */
	int isa;          /**< enum quant_isa */
	float (*dot_u8)(const float *q, const uint8_t *c, size_t dim);
	float (*l2_u8)(const float *q, const uint8_t *c, size_t dim, float scale, float bias);
	float (*dot_u4)(const float *q, const uint8_t *c, size_t dim);
	float (*l2_u4)(const float *q, const uint8_t *c, size_t dim, float scale, float bias);
	float (*dot_u4x4)(const float *q, const uint8_t *p, const uint8_t *r, size_t dim);
	float (*l2_u4x4)(const float *q, const uint8_t *p, const uint8_t *r, size_t dim,
			 float scale, float bias);
	float (*dot_u4x8)(const float *q, const uint8_t *p, const uint8_t *r, size_t dim);
	float (*l2_u4x8)(const float *q, const uint8_t *p, const uint8_t *r, size_t dim,
			 float scale, float bias);
} quant_lvq_kernels_t;

/** Table of one variant, or NULL when quant_kernels_get(isa) is NULL (the
 * CPU, after the VELA_CPU_MAX cap, lacks it). For tests and benchmarks. */
const quant_lvq_kernels_t *quant_lvq_kernels_get(int isa);
/** The table chosen for this process (best available). */
const quant_lvq_kernels_t *quant_lvq_kernels(void);
/** quant_lvq_distance (full = 0) or quant_lvq_distance_full (full = 1)
 * computed with the given table `k`. */
float quant_lvq_distance_with(const quant_lvq_kernels_t *k, const quant_lvq_t *l,
			      const quant_lvq_query_t *pq, const void *code, int full);

/* ================================================================ LeanVec
 * (linear dimensionality reduction; quant/leanvec.c)
 *
 * LeanVec [LeanVec paper; reference/leanvec-lvq.md §1.1] approximates the
 * inner product <q, x> by <A q, B x>, A and B real d x D (d <= D): data are
 * stored reduced (B x) and each query is reduced once (A q).
 *
 * Layout: every matrix here is row-major and a projection is d x D, row i
 * the direction of reduced coordinate i, so y = P x. (SVS stores the
 * transpose, D x d, and computes x * M: the same numbers.)
 *
 * Training works in double precision on D x D second-moment matrices
 * (BLAS dsyrk/dgemm, LAPACK dsyevr/dgesvd): O(n D^2) to read a sample, then
 * O(D^2 d) per Frank-Wolfe iteration and O(D^3) per eigendecomposition;
 * memory about 5 D^2 doubles. Results are deterministic for given inputs and
 * BLAS thread count. Every function is thread-safe, and no pointer passed in
 * is kept after the call returns; outputs are caller-owned buffers.
 *
 * The O(n D^2) step, the Gram matrices of the samples, goes through a
 * quant_leanvec_gram_fn: NULL selects quant_leanvec_gram (BLAS dsyrk here);
 * index/ passes index_backend_gram, which runs it on the GPU when there is
 * one (quant/ does not know the backends: DESIGN.md §1).
 */

/**
 * @brief A Gram-matrix routine: G = sum_r (x_r - mu)(x_r - mu)^T over the
 * n rows of X (n x D floats, row-major; NULL allowed when n = 0), products
 * and sums in double; mu (D doubles) NULL means no centring. G: D x D
 * doubles, row-major, both triangles, caller-owned; n = 0 gives G = 0. All
 * pointers are borrowed for the call; it must be thread-safe.
 * @return 0, or a negative VELA_E... code with err filled (the trainer then
 *   fails with that code; G unspecified).
 */
typedef int (*quant_leanvec_gram_fn)(const float *X, uint64_t n, uint32_t D, const double *mu,
				     double *G, vela_err_t *err);

/**
 * @brief The CPU quant_leanvec_gram_fn: rows converted to double in chunks
 * and summed by BLAS dsyrk.
 * @return 0; VELA_EINVAL (NULL G, NULL X with n > 0, D outside
 *   VELA_DIM_MIN..VELA_DIM_MAX); VELA_ENOMEM.
 */
int quant_leanvec_gram(const float *X, uint64_t n, uint32_t D, const double *mu, double *G,
		       vela_err_t *err);

/** Largest D the trainers accept (5 D^2 doubles = 640 MiB at 4096). */
#define QUANT_LEANVEC_TRAIN_DIM_MAX 4096u
/** Recommended training-sample rows: SVS trains on the first 100 000
 * vectors (§1.2, §1.3); the trainers use every row they are given. */
#define QUANT_LEANVEC_SAMPLE_DEFAULT 100000u
/** Recommended reduced dimension d for full dimension D: D/2 (§1.4). */
#define QUANT_LEANVEC_DIMS_DEFAULT(D) ((D) >= 2u ? (D) / 2u : 1u)

/**
 * @brief LeanVec-ID (§1.2): P (d x D, orthonormal rows, caller-allocated)
 * spans the top-d principal subspace of the sample X (n x D, row-major).
 *
 * Like SVS, the data are *centred*: P holds the top-d eigenvectors of the
 * covariance (1/n) sum (x - mu)(x - mu)^T, in decreasing eigenvalue order,
 * each signed so its largest-magnitude entry is positive. A = B = P. For L2
 * search SVS reduces both sides as P (v - mu); for IP, P v (the dropped
 * <q, P^T P mu> is constant per query).
 *
 * @param mean  if not NULL, receives mu (D floats).
 * @return 0; VELA_EDIM unless 1 <= d <= D <= QUANT_LEANVEC_TRAIN_DIM_MAX;
 *   VELA_EINVAL for a NULL pointer, n < d or a non-finite value in X;
 *   VELA_ENOMEM; VELA_EINVAL if LAPACK fails to converge. On error the
 *   outputs are unspecified.
 */
int quant_leanvec_train_id(const float *X, size_t n, uint32_t D, uint32_t d, float *P,
			   float *mean, vela_err_t *err);
/** quant_leanvec_train_id with the covariance's sums computed by `gram`
 * (NULL = quant_leanvec_train_id); also fails with gram's error. */
int quant_leanvec_train_id_with(quant_leanvec_gram_fn gram, const float *X, size_t n, uint32_t D,
				uint32_t d, float *P, float *mean, vela_err_t *err);

/**
 * @brief LeanVec-OOD objective (§1.3) as a mean over all pairs:
 *   loss = 1/(n m) sum_{q in Q} sum_{x in X} (q.x - (A q).(B x))^2,
 * the paper's sum divided by n m (same minimiser). Computed in double from
 * the uncentred second moments, no centring (OOD mode, §1.1).
 * A, B: d x D; X: n x D; Q: m x D; n, m >= 1.
 * @return 0; VELA_EDIM / VELA_EINVAL (NULL, empty or non-finite input) /
 *   VELA_ENOMEM.
 */
int quant_leanvec_loss(const float *A, const float *B, uint32_t d, uint32_t D, const float *X,
		       size_t n, const float *Q, size_t m, double *loss, vela_err_t *err);

/** Which OOD optimiser(s) quant_leanvec_train_ood runs. */
enum quant_leanvec_method {
	QUANT_LEANVEC_OOD_BEST = 0,        /**< both; keep the lower loss */
	QUANT_LEANVEC_OOD_FRANK_WOLFE = 1, /**< Frank-Wolfe only (§1.3) */
	QUANT_LEANVEC_OOD_EIGEN = 2        /**< eigenvector search only (§1.3) */
};

/** Frank-Wolfe step size rule. */
enum quant_leanvec_step {
	/** Exact minimisation of the (quadratic) loss along each block's
	 * Frank-Wolfe segment: the loss never increases. */
	QUANT_LEANVEC_STEP_LINE_SEARCH = 0,
	/** SVS's rule gamma_t = 1/(t+1)^step_exp; no monotonicity guarantee. */
	QUANT_LEANVEC_STEP_DIMINISHING = 1
};

/** Frank-Wolfe starting point. */
enum quant_leanvec_init {
	QUANT_LEANVEC_INIT_ZERO = 0,  /**< A = B = 0, as SVS */
	QUANT_LEANVEC_INIT_EIGEN = 1  /**< warm start from eigenvector search */
};

#define QUANT_LEANVEC_FW_ITERS_DEFAULT 500u
#define QUANT_LEANVEC_FW_ITERS_MIN 1u
#define QUANT_LEANVEC_FW_ITERS_MAX 100000u
#define QUANT_LEANVEC_FW_TOL_DEFAULT 1e-3 /* relative loss change to stop */
#define QUANT_LEANVEC_FW_TOL_MIN 0.0      /* 0: run all iterations */
#define QUANT_LEANVEC_FW_TOL_MAX 1.0
#define QUANT_LEANVEC_FW_STEP_DEFAULT QUANT_LEANVEC_STEP_LINE_SEARCH
#define QUANT_LEANVEC_FW_STEP_EXP_DEFAULT 0.999
#define QUANT_LEANVEC_FW_STEP_EXP_MIN 0.5
#define QUANT_LEANVEC_FW_STEP_EXP_MAX 1.0
#define QUANT_LEANVEC_EIG_GRID_DEFAULT 11u /* beta = 0, 0.1, ..., 1 */
#define QUANT_LEANVEC_EIG_GRID_MIN 2u
#define QUANT_LEANVEC_EIG_GRID_MAX 1001u

/** Options of quant_leanvec_train_ood; fill with quant_leanvec_ood_opts_default. */
typedef struct quant_leanvec_ood_opts {
	int method;         /**< enum quant_leanvec_method */
	uint32_t max_iters; /**< Frank-Wolfe iterations (each updates A, then B) */
	double rel_tol;     /**< stop when |L_t - L_t-1| <= rel_tol L_t-1 (t > 1) */
	int step;           /**< enum quant_leanvec_step */
	double step_exp;    /**< exponent of the diminishing rule */
	int init;           /**< enum quant_leanvec_init */
	uint32_t eig_grid;  /**< points of the beta grid in [0, 1] */
	/** If not NULL: caller-owned, >= max_iters doubles; receives the loss
	 * (as quant_leanvec_loss) after each Frank-Wolfe iteration. */
	double *trace;
	/** Computes the second moments of X and Q; NULL = quant_leanvec_gram.
	 * Its errors fail the training. */
	quant_leanvec_gram_fn gram;
} quant_leanvec_ood_opts_t;

/** Defaults: BEST, 500 iterations, tol 1e-3, line search, zero init, grid 11,
 * gram NULL. */
void quant_leanvec_ood_opts_default(quant_leanvec_ood_opts_t *o);

/** What quant_leanvec_train_ood did; losses as quant_leanvec_loss. */
typedef struct quant_leanvec_ood_stats {
	double loss;      /**< loss of the returned (A, B) */
	double loss_zero; /**< loss of A = B = 0, i.e. mean (q.x)^2: the scale */
	double loss_fw;   /**< Frank-Wolfe result; NAN if not run */
	double loss_eig;  /**< best eigenvector-search result; NAN if not run */
	double eig_beta;  /**< its beta; NAN if not run */
	uint32_t fw_iters;  /**< iterations run (entries written to trace) */
	int fw_converged;   /**< 1 when rel_tol stopped it before max_iters */
	int winner;         /**< QUANT_LEANVEC_OOD_FRANK_WOLFE or _EIGEN */
} quant_leanvec_ood_stats_t;

/**
 * @brief LeanVec-OOD (§1.3): query projection A and data projection B
 * (each d x D, caller-allocated) minimising quant_leanvec_loss on the data
 * sample X (n x D) and the query sample Q (m x D). Reduce data as B x and
 * queries as A q, with no centring.
 *
 * Frank-Wolfe: block-coordinate over the spectral-norm unit ball, A then B
 * each iteration, the linear minimiser of a gradient G = U S V^T being
 * -U V^T. From zero both gradients vanish, so the first A is the top-d
 * eigenvectors of the query second moment (any A is optimal there).
 * Eigenvector search: A = B = the top-d eigenvectors of
 * beta Q~/|Q~|_F + (1 - beta) X~/|X~|_F over a grid of beta.
 * With method BEST both run and the lower loss is returned.
 *
 * @param opts   NULL for defaults. @param stats  NULL or filled on success.
 * @return 0; VELA_EDIM unless 1 <= d <= D <= QUANT_LEANVEC_TRAIN_DIM_MAX;
 *   VELA_EINVAL for a NULL pointer, n < d, m < 1, a non-finite input or an
 *   option out of range; VELA_ENOMEM; VELA_EINVAL if LAPACK fails.
 */
int quant_leanvec_train_ood(const float *X, size_t n, const float *Q, size_t m, uint32_t D,
			    uint32_t d, const quant_leanvec_ood_opts_t *opts, float *A, float *B,
			    quant_leanvec_ood_stats_t *stats, vela_err_t *err);

/**
 * @brief y = P x: P d x D, x D floats, y d floats (must not overlap x).
 * @return 0, or VELA_EINVAL for a NULL pointer or d, D out of
 *   1 <= d <= D <= VELA_DIM_MAX. No finiteness check (hot path).
 */
int quant_leanvec_project(const float *P, uint32_t d, uint32_t D, const float *x, float *y);

/**
 * @brief Y = X P^T with one sgemm per block of rows: X n x D, Y n x d
 * (row-major, not overlapping X). n = 0 is a no-op. Errors as
 * quant_leanvec_project.
 */
int quant_leanvec_project_batch(const float *P, uint32_t d, uint32_t D, const float *X, size_t n,
				float *Y);

#endif
