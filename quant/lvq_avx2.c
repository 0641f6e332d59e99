/* AVX2 + FMA LVQ kernels: 8 dimensions per step, codes unpacked to int32
 * lanes and converted to float in registers (reference §2.3). 4-bit levels
 * use the Turbo layout (§2.4): the first 32 bytes of a 64-byte block hold
 * lanes 0..7, the last 32 lanes 8..15, so chunk c = dimensions [8c, 8c+8)
 * is nibble (c/2)%8 of half c%2 of block c/16. Offered under the same
 * feature gate as quant_avx2.c (AVX2, FMA, F16C). */
#include <immintrin.h>
#include <string.h>

#include "quant/quant_impl.h"

#define AVX2_TARGET __attribute__((target("avx2,fma")))
#define AVX2_INLINE AVX2_TARGET static inline __attribute__((always_inline))

typedef __m256i (*avx2_z_fn)(const uint8_t *p, const uint8_t *r, size_t c, size_t n);

/* 8 all-ones then 8 zeros: loading at (8 - r) masks the first r lanes. */
static const int32_t lvq_avx2_tail_bits[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
					       0,  0,  0,  0,  0,  0,  0,  0};

AVX2_INLINE __m256i avx2_mask(size_t r)
{
	return _mm256_loadu_si256((const __m256i *)(lvq_avx2_tail_bits + 8 - r));
}

AVX2_INLINE float avx2_sum(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

/* 8 sequential 8-bit codes of chunk c; only the first n are read. */
AVX2_INLINE __m256i avx2_u8(const uint8_t *x, size_t c, size_t n)
{
	if (n == 8)
		return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(x + 8 * c)));
	uint8_t buf[8] = {0};
	memcpy(buf, x + 8 * c, n);
	return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)buf));
}

/* Chunk c of a Turbo 4-bit level (blocks are padded: always in bounds). */
AVX2_INLINE __m256i avx2_u4(const uint8_t *x, size_t c)
{
	const uint8_t *half = x + QUANT_LVQ_TURBO_BYTES * (c >> 4) + 32 * (c & 1);
	__m256i w = _mm256_loadu_si256((const __m256i *)half);
	w = _mm256_srlv_epi32(w, _mm256_set1_epi32((int)(4 * ((c >> 1) & 7))));
	return _mm256_and_si256(w, _mm256_set1_epi32(0xF));
}

AVX2_INLINE __m256i avx2_z_u8(const uint8_t *p, const uint8_t *r, size_t c, size_t n)
{
	return avx2_u8(p, c, n);
}

AVX2_INLINE __m256i avx2_z_u4(const uint8_t *p, const uint8_t *r, size_t c, size_t n)
{
	return avx2_u4(p, c);
}

/* Fused two-level integer (2^B2 - 1) p + r of §2.2, as (p << B2) - p + r. */
AVX2_INLINE __m256i avx2_z_u4x4(const uint8_t *p, const uint8_t *r, size_t c, size_t n)
{
	__m256i hi = avx2_u4(p, c);
	return _mm256_add_epi32(_mm256_sub_epi32(_mm256_slli_epi32(hi, 4), hi), avx2_u4(r, c));
}

AVX2_INLINE __m256i avx2_z_u4x8(const uint8_t *p, const uint8_t *r, size_t c, size_t n)
{
	__m256i hi = avx2_u4(p, c);
	return _mm256_add_epi32(_mm256_sub_epi32(_mm256_slli_epi32(hi, 8), hi), avx2_u8(r, c, n));
}

AVX2_INLINE float avx2_dot(const float *q, const uint8_t *p, const uint8_t *r, size_t n,
			   avx2_z_fn z)
{
	__m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
	size_t c = 0, full = n / 8;
	for (; c + 4 <= full; c += 4) {
		s0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * (c + 0)),
				     _mm256_cvtepi32_ps(z(p, r, c + 0, 8)), s0);
		s1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * (c + 1)),
				     _mm256_cvtepi32_ps(z(p, r, c + 1, 8)), s1);
		s2 = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * (c + 2)),
				     _mm256_cvtepi32_ps(z(p, r, c + 2, 8)), s2);
		s3 = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * (c + 3)),
				     _mm256_cvtepi32_ps(z(p, r, c + 3, 8)), s3);
	}
	for (; c < full; c++)
		s2 = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * c), _mm256_cvtepi32_ps(z(p, r, c, 8)), s2);
	if (n % 8)
		s1 = _mm256_fmadd_ps(_mm256_maskload_ps(q + 8 * c, avx2_mask(n % 8)),
				     _mm256_cvtepi32_ps(z(p, r, c, n % 8)), s1);
	return avx2_sum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
}

/* sum (q - (scale z + bias))^2; lanes outside `m` contribute zero. */
AVX2_INLINE __m256 avx2_l2_step(__m256 acc, __m256 q, __m256i z, __m256 s, __m256 b, __m256 m)
{
	__m256 d = _mm256_sub_ps(q, _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(z), b));
	d = _mm256_and_ps(d, m);
	return _mm256_fmadd_ps(d, d, acc);
}

AVX2_INLINE float avx2_l2(const float *q, const uint8_t *p, const uint8_t *r, size_t n,
			  float scale, float bias, avx2_z_fn z)
{
	__m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
	__m256 s = _mm256_set1_ps(scale), b = _mm256_set1_ps(bias);
	__m256 all = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
	size_t c = 0, full = n / 8;
	for (; c + 4 <= full; c += 4) {
		s0 = avx2_l2_step(s0, _mm256_loadu_ps(q + 8 * (c + 0)), z(p, r, c + 0, 8), s, b,
				    all);
		s1 = avx2_l2_step(s1, _mm256_loadu_ps(q + 8 * (c + 1)), z(p, r, c + 1, 8), s, b,
				    all);
		s2 = avx2_l2_step(s2, _mm256_loadu_ps(q + 8 * (c + 2)), z(p, r, c + 2, 8), s, b,
				    all);
		s3 = avx2_l2_step(s3, _mm256_loadu_ps(q + 8 * (c + 3)), z(p, r, c + 3, 8), s, b,
				    all);
	}
	for (; c < full; c++)
		s2 = avx2_l2_step(s2, _mm256_loadu_ps(q + 8 * c), z(p, r, c, 8), s, b, all);
	if (n % 8) {
		__m256i m = avx2_mask(n % 8);
		s1 = avx2_l2_step(s1, _mm256_maskload_ps(q + 8 * c, m), z(p, r, c, n % 8), s, b,
				  _mm256_castsi256_ps(m));
	}
	return avx2_sum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
}

/* Whole-block 4-bit kernels (§2.4): each 128-dimension Turbo block is one
 * 64-byte line, loaded once as two halves (lanes 0..7, lanes 8..15); chunk
 * 16b + 2k is nibble k of the low half, 16b + 2k + 1 of the high half, peeled
 * with a fixed shift by 4 and a mask (nibble 7, by then shifted down 28,
 * needs none) rather than a reload and variable shift per chunk. Chunk c
 * goes to accumulator c % 4, as in the per-chunk loop, which finishes any
 * partial last block: results are bit-identical to the per-chunk kernels.
 * MODE: 0 = u4, 1 = u4x4, 2 = u4x8; c is the chunk within the block. */
#define AVX2_BLOCK_Z(MODE, wp, wr, r8, c)                                             \
	__extension__({                                                             \
		__m256i hi_ = (c) >> 1 == 7 ? wp : _mm256_and_si256(wp, f4);        \
		__m256i z_ = hi_;                                                   \
		wp = _mm256_srli_epi32(wp, 4);                                      \
		if ((MODE) == 1) {                                                  \
			__m256i lo_ = (c) >> 1 == 7 ? wr : _mm256_and_si256(wr, f4); \
			z_ = _mm256_add_epi32(                                      \
				_mm256_sub_epi32(_mm256_slli_epi32(hi_, 4), hi_), lo_); \
			wr = _mm256_srli_epi32(wr, 4);                              \
		} else if ((MODE) == 2) {                                           \
			z_ = _mm256_add_epi32(                                      \
				_mm256_sub_epi32(_mm256_slli_epi32(hi_, 8), hi_),   \
				_mm256_cvtepu8_epi32(_mm_loadl_epi64(               \
					(const __m128i *)((r8) + 8 * (c)))));       \
		}                                                                   \
		z_;                                                                 \
	})

AVX2_INLINE float avx2_dot4(const float *q, const uint8_t *p, const uint8_t *r, size_t n,
			    int mode, avx2_z_fn z)
{
	__m256 s[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
		       _mm256_setzero_ps()};
	const __m256i f4 = _mm256_set1_epi32(0xF);
	size_t nb = n / QUANT_LVQ_TURBO_DIMS;
	for (size_t b = 0; b < nb; b++) {
		const float *qb = q + QUANT_LVQ_TURBO_DIMS * b;
		const uint8_t *pb = p + QUANT_LVQ_TURBO_BYTES * b;
		const uint8_t *r8 = mode == 2 ? r + QUANT_LVQ_TURBO_DIMS * b : NULL;
		__m256i wp0 = _mm256_loadu_si256((const __m256i *)pb);
		__m256i wp1 = _mm256_loadu_si256((const __m256i *)(pb + 32));
		__m256i wr0 = wp0, wr1 = wp1;
		if (mode == 1) {
			const uint8_t *rb = r + QUANT_LVQ_TURBO_BYTES * b;
			wr0 = _mm256_loadu_si256((const __m256i *)rb);
			wr1 = _mm256_loadu_si256((const __m256i *)(rb + 32));
		}
#pragma GCC unroll 8
		for (int k = 0; k < 8; k++) {
			__m256i z0 = AVX2_BLOCK_Z(mode, wp0, wr0, r8, 2 * k);
			__m256i z1 = AVX2_BLOCK_Z(mode, wp1, wr1, r8, 2 * k + 1);
			int a = (2 * k) & 3;
			s[a] = _mm256_fmadd_ps(_mm256_loadu_ps(qb + 16 * k), _mm256_cvtepi32_ps(z0),
					       s[a]);
			s[a + 1] = _mm256_fmadd_ps(_mm256_loadu_ps(qb + 16 * k + 8),
						   _mm256_cvtepi32_ps(z1), s[a + 1]);
		}
	}
	size_t c = 16 * nb, full = n / 8;
	for (; c + 4 <= full; c += 4)
		for (int k = 0; k < 4; k++)
			s[k] = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * (c + k)),
					       _mm256_cvtepi32_ps(z(p, r, c + k, 8)), s[k]);
	for (; c < full; c++)
		s[2] = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * c), _mm256_cvtepi32_ps(z(p, r, c, 8)),
				       s[2]);
	if (n % 8)
		s[1] = _mm256_fmadd_ps(_mm256_maskload_ps(q + 8 * c, avx2_mask(n % 8)),
				       _mm256_cvtepi32_ps(z(p, r, c, n % 8)), s[1]);
	return avx2_sum(_mm256_add_ps(_mm256_add_ps(s[0], s[1]), _mm256_add_ps(s[2], s[3])));
}

AVX2_INLINE float avx2_l24(const float *q, const uint8_t *p, const uint8_t *r, size_t n,
			   float scale, float bias, int mode, avx2_z_fn z)
{
	__m256 s[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
		       _mm256_setzero_ps()};
	__m256 sc = _mm256_set1_ps(scale), bi = _mm256_set1_ps(bias);
	__m256 all = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
	const __m256i f4 = _mm256_set1_epi32(0xF);
	size_t nb = n / QUANT_LVQ_TURBO_DIMS;
	for (size_t b = 0; b < nb; b++) {
		const float *qb = q + QUANT_LVQ_TURBO_DIMS * b;
		const uint8_t *pb = p + QUANT_LVQ_TURBO_BYTES * b;
		const uint8_t *r8 = mode == 2 ? r + QUANT_LVQ_TURBO_DIMS * b : NULL;
		__m256i wp0 = _mm256_loadu_si256((const __m256i *)pb);
		__m256i wp1 = _mm256_loadu_si256((const __m256i *)(pb + 32));
		__m256i wr0 = wp0, wr1 = wp1;
		if (mode == 1) {
			const uint8_t *rb = r + QUANT_LVQ_TURBO_BYTES * b;
			wr0 = _mm256_loadu_si256((const __m256i *)rb);
			wr1 = _mm256_loadu_si256((const __m256i *)(rb + 32));
		}
#pragma GCC unroll 8
		for (int k = 0; k < 8; k++) {
			__m256i z0 = AVX2_BLOCK_Z(mode, wp0, wr0, r8, 2 * k);
			__m256i z1 = AVX2_BLOCK_Z(mode, wp1, wr1, r8, 2 * k + 1);
			int a = (2 * k) & 3;
			s[a] = avx2_l2_step(s[a], _mm256_loadu_ps(qb + 16 * k), z0, sc, bi, all);
			s[a + 1] = avx2_l2_step(s[a + 1], _mm256_loadu_ps(qb + 16 * k + 8), z1, sc,
						bi, all);
		}
	}
	size_t c = 16 * nb, full = n / 8;
	for (; c + 4 <= full; c += 4)
		for (int k = 0; k < 4; k++)
			s[k] = avx2_l2_step(s[k], _mm256_loadu_ps(q + 8 * (c + k)), z(p, r, c + k, 8),
					    sc, bi, all);
	for (; c < full; c++)
		s[2] = avx2_l2_step(s[2], _mm256_loadu_ps(q + 8 * c), z(p, r, c, 8), sc, bi, all);
	if (n % 8) {
		__m256i m = avx2_mask(n % 8);
		s[1] = avx2_l2_step(s[1], _mm256_maskload_ps(q + 8 * c, m), z(p, r, c, n % 8), sc,
				    bi, _mm256_castsi256_ps(m));
	}
	return avx2_sum(_mm256_add_ps(_mm256_add_ps(s[0], s[1]), _mm256_add_ps(s[2], s[3])));
}

AVX2_TARGET static float avx2_dot_u8(const float *q, const uint8_t *c, size_t n)
{
	return avx2_dot(q, c, NULL, n, avx2_z_u8);
}

AVX2_TARGET static float avx2_l2_u8(const float *q, const uint8_t *c, size_t n, float s, float b)
{
	return avx2_l2(q, c, NULL, n, s, b, avx2_z_u8);
}

AVX2_TARGET static float avx2_dot_u4(const float *q, const uint8_t *c, size_t n)
{
	return avx2_dot4(q, c, NULL, n, 0, avx2_z_u4);
}

AVX2_TARGET static float avx2_l2_u4(const float *q, const uint8_t *c, size_t n, float s, float b)
{
	return avx2_l24(q, c, NULL, n, s, b, 0, avx2_z_u4);
}

AVX2_TARGET static float avx2_dot_u4x4(const float *q, const uint8_t *p, const uint8_t *r,
				       size_t n)
{
	return avx2_dot4(q, p, r, n, 1, avx2_z_u4x4);
}

AVX2_TARGET static float avx2_l2_u4x4(const float *q, const uint8_t *p, const uint8_t *r,
				      size_t n, float s, float b)
{
	return avx2_l24(q, p, r, n, s, b, 1, avx2_z_u4x4);
}

AVX2_TARGET static float avx2_dot_u4x8(const float *q, const uint8_t *p, const uint8_t *r,
				       size_t n)
{
	return avx2_dot4(q, p, r, n, 2, avx2_z_u4x8);
}

AVX2_TARGET static float avx2_l2_u4x8(const float *q, const uint8_t *p, const uint8_t *r,
				      size_t n, float s, float b)
{
	return avx2_l24(q, p, r, n, s, b, 2, avx2_z_u4x8);
}

const quant_lvq_kernels_t quant_lvq_kernels_avx2 = {
	.name = "avx2",
	.isa = QUANT_ISA_AVX2,
	.dot_u8 = avx2_dot_u8,
	.l2_u8 = avx2_l2_u8,
	.dot_u4 = avx2_dot_u4,
	.l2_u4 = avx2_l2_u4,
	.dot_u4x4 = avx2_dot_u4x4,
	.l2_u4x4 = avx2_l2_u4x4,
	.dot_u4x8 = avx2_dot_u4x8,
	.l2_u4x8 = avx2_l2_u4x8,
};
