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

/* ================================================================ LeanVec
 * (linear dimensionality reduction; quant/leanvec.c) */

#endif
