/* AVX-512F LVQ kernels: 16 dimensions per step, codes unpacked to int32
 * lanes and converted to float in registers (reference §2.3), never
 * decoded to memory. 4-bit levels use the Turbo layout (§2.4): chunk c =
 * dimensions [16c, 16c+16) is nibble c%8 of the 16 u32 lanes of block c/8,
 * so one shift and one mask unpack it. Only AVX-512F instructions are used
 * (same gate as quant_avx512.c). */
#include <immintrin.h>
#include <string.h>

#include "quant/quant_impl.h"

#define AVX512_TARGET __attribute__((target("avx512f")))
#define AVX512_INLINE AVX512_TARGET static inline __attribute__((always_inline))

typedef __m512i (*avx512_z_fn)(const uint8_t *p, const uint8_t *r, size_t c, size_t n);

/* 16 sequential 8-bit codes of chunk c; only the first n are read. */
AVX512_INLINE __m512i avx512_u8(const uint8_t *x, size_t c, size_t n)
{
	if (n == 16)
		return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(x + 16 * c)));
	uint8_t buf[16] = {0};
	memcpy(buf, x + 16 * c, n);
	return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)buf));
}

/* Chunk c of a Turbo 4-bit level (blocks are padded: always in bounds). */
AVX512_INLINE __m512i avx512_u4(const uint8_t *x, size_t c)
{
	__m512i w = _mm512_loadu_si512(x + QUANT_LVQ_TURBO_BYTES * (c >> 3));
	w = _mm512_srlv_epi32(w, _mm512_set1_epi32((int)(4 * (c & 7))));
	return _mm512_and_si512(w, _mm512_set1_epi32(0xF));
}

AVX512_INLINE __m512i avx512_z_u8(const uint8_t *p, const uint8_t *r, size_t c, size_t n)
{
	return avx512_u8(p, c, n);
}

AVX512_INLINE __m512i avx512_z_u4(const uint8_t *p, const uint8_t *r, size_t c, size_t n)
{
	return avx512_u4(p, c);
}

/* Fused two-level integer (2^B2 - 1) p + r of §2.2, as (p << B2) - p + r. */
AVX512_INLINE __m512i avx512_z_u4x4(const uint8_t *p, const uint8_t *r, size_t c, size_t n)
{
	__m512i hi = avx512_u4(p, c);
	return _mm512_add_epi32(_mm512_sub_epi32(_mm512_slli_epi32(hi, 4), hi), avx512_u4(r, c));
}

AVX512_INLINE __m512i avx512_z_u4x8(const uint8_t *p, const uint8_t *r, size_t c, size_t n)
{
	__m512i hi = avx512_u4(p, c);
	return _mm512_add_epi32(_mm512_sub_epi32(_mm512_slli_epi32(hi, 8), hi), avx512_u8(r, c, n));
}

AVX512_INLINE float avx512_dot(const float *q, const uint8_t *p, const uint8_t *r, size_t n,
			       avx512_z_fn z)
{
	__m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
	size_t c = 0, full = n / 16;
	for (; c + 4 <= full; c += 4) {
		s0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + 16 * (c + 0)),
				     _mm512_cvtepi32_ps(z(p, r, c + 0, 16)), s0);
		s1 = _mm512_fmadd_ps(_mm512_loadu_ps(q + 16 * (c + 1)),
				     _mm512_cvtepi32_ps(z(p, r, c + 1, 16)), s1);
		s2 = _mm512_fmadd_ps(_mm512_loadu_ps(q + 16 * (c + 2)),
				     _mm512_cvtepi32_ps(z(p, r, c + 2, 16)), s2);
		s3 = _mm512_fmadd_ps(_mm512_loadu_ps(q + 16 * (c + 3)),
				     _mm512_cvtepi32_ps(z(p, r, c + 3, 16)), s3);
	}
	for (; c < full; c++)
		s2 = _mm512_fmadd_ps(_mm512_loadu_ps(q + 16 * c), _mm512_cvtepi32_ps(z(p, r, c, 16)), s2);
	if (n % 16) {
		__mmask16 m = (__mmask16)((1u << (n % 16)) - 1);
		s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + 16 * c),
				     _mm512_cvtepi32_ps(z(p, r, c, n % 16)), s1);
	}
	return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

/* sum (q - (scale z + bias))^2; masked-out tail lanes contribute zero. */
AVX512_INLINE __m512 avx512_l2_step(__m512 acc, __m512 q, __m512i z, __m512 s, __m512 b,
				    __mmask16 m)
{
	__m512 d = _mm512_maskz_sub_ps(m, q, _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(z), b));
	return _mm512_fmadd_ps(d, d, acc);
}

AVX512_INLINE float avx512_l2(const float *q, const uint8_t *p, const uint8_t *r, size_t n,
			      float scale, float bias, avx512_z_fn z)
{
	__m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
	__m512 s = _mm512_set1_ps(scale), b = _mm512_set1_ps(bias);
	size_t c = 0, full = n / 16;
	for (; c + 4 <= full; c += 4) {
		s0 = avx512_l2_step(s0, _mm512_loadu_ps(q + 16 * (c + 0)), z(p, r, c + 0, 16), s, b,
				    0xFFFF);
		s1 = avx512_l2_step(s1, _mm512_loadu_ps(q + 16 * (c + 1)), z(p, r, c + 1, 16), s, b,
				    0xFFFF);
		s2 = avx512_l2_step(s2, _mm512_loadu_ps(q + 16 * (c + 2)), z(p, r, c + 2, 16), s, b,
				    0xFFFF);
		s3 = avx512_l2_step(s3, _mm512_loadu_ps(q + 16 * (c + 3)), z(p, r, c + 3, 16), s, b,
				    0xFFFF);
	}
	for (; c < full; c++)
		s2 = avx512_l2_step(s2, _mm512_loadu_ps(q + 16 * c), z(p, r, c, 16), s, b, 0xFFFF);
	if (n % 16) {
		__mmask16 m = (__mmask16)((1u << (n % 16)) - 1);
		s1 = avx512_l2_step(s1, _mm512_maskz_loadu_ps(m, q + 16 * c), z(p, r, c, n % 16), s,
				    b, m);
	}
	return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

/* Whole-block 4-bit kernels (§2.4): each 128-dimension Turbo block is one
 * 64-byte line, loaded once; its 8 chunks are peeled with a fixed shift by 4
 * and a mask (nibble 7, by then shifted down 28, needs none), instead of
 * reloading the line and shifting by a variable amount per chunk. Chunk k
 * of the block goes to accumulator k % 4, as in the per-chunk loop, which
 * finishes any partial last block: results are bit-identical to the
 * per-chunk kernels. MODE: 0 = u4, 1 = u4x4, 2 = u4x8. */
#define AVX512_BLOCK_Z(MODE, wp, wr, r8, k)                                           \
	__extension__({                                                             \
		__m512i hi_ = (k) == 7 ? wp : _mm512_and_si512(wp, f4);             \
		__m512i z_ = hi_;                                                   \
		wp = _mm512_srli_epi32(wp, 4);                                      \
		if ((MODE) == 1) {                                                  \
			__m512i lo_ = (k) == 7 ? wr : _mm512_and_si512(wr, f4);     \
			z_ = _mm512_add_epi32(                                      \
				_mm512_sub_epi32(_mm512_slli_epi32(hi_, 4), hi_), lo_); \
			wr = _mm512_srli_epi32(wr, 4);                              \
		} else if ((MODE) == 2) {                                           \
			z_ = _mm512_add_epi32(                                      \
				_mm512_sub_epi32(_mm512_slli_epi32(hi_, 8), hi_),   \
				_mm512_cvtepu8_epi32(_mm_loadu_si128(               \
					(const __m128i *)((r8) + 16 * (k)))));      \
		}                                                                   \
		z_;                                                                 \
	})

AVX512_INLINE float avx512_dot4(const float *q, const uint8_t *p, const uint8_t *r, size_t n,
				int mode, avx512_z_fn z)
{
	__m512 s[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
		       _mm512_setzero_ps()};
	const __m512i f4 = _mm512_set1_epi32(0xF);
	size_t nb = n / QUANT_LVQ_TURBO_DIMS;
	for (size_t b = 0; b < nb; b++) {
		const float *qb = q + QUANT_LVQ_TURBO_DIMS * b;
		const uint8_t *r8 = mode == 2 ? r + QUANT_LVQ_TURBO_DIMS * b : NULL;
		__m512i wp = _mm512_loadu_si512(p + QUANT_LVQ_TURBO_BYTES * b);
		__m512i wr = mode == 1 ? _mm512_loadu_si512(r + QUANT_LVQ_TURBO_BYTES * b) : wp;
#pragma GCC unroll 8
		for (int k = 0; k < 8; k++) {
			__m512i zk = AVX512_BLOCK_Z(mode, wp, wr, r8, k);
			s[k & 3] = _mm512_fmadd_ps(_mm512_loadu_ps(qb + 16 * k),
						   _mm512_cvtepi32_ps(zk), s[k & 3]);
		}
	}
	size_t c = 8 * nb, full = n / 16;
	for (; c + 4 <= full; c += 4)
		for (int k = 0; k < 4; k++)
			s[k] = _mm512_fmadd_ps(_mm512_loadu_ps(q + 16 * (c + k)),
					       _mm512_cvtepi32_ps(z(p, r, c + k, 16)), s[k]);
	for (; c < full; c++)
		s[2] = _mm512_fmadd_ps(_mm512_loadu_ps(q + 16 * c), _mm512_cvtepi32_ps(z(p, r, c, 16)),
				       s[2]);
	if (n % 16) {
		__mmask16 m = (__mmask16)((1u << (n % 16)) - 1);
		s[1] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + 16 * c),
				       _mm512_cvtepi32_ps(z(p, r, c, n % 16)), s[1]);
	}
	return _mm512_reduce_add_ps(
		_mm512_add_ps(_mm512_add_ps(s[0], s[1]), _mm512_add_ps(s[2], s[3])));
}

AVX512_INLINE float avx512_l24(const float *q, const uint8_t *p, const uint8_t *r, size_t n,
			       float scale, float bias, int mode, avx512_z_fn z)
{
	__m512 s[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
		       _mm512_setzero_ps()};
	__m512 sc = _mm512_set1_ps(scale), bi = _mm512_set1_ps(bias);
	const __m512i f4 = _mm512_set1_epi32(0xF);
	size_t nb = n / QUANT_LVQ_TURBO_DIMS;
	for (size_t b = 0; b < nb; b++) {
		const float *qb = q + QUANT_LVQ_TURBO_DIMS * b;
		const uint8_t *r8 = mode == 2 ? r + QUANT_LVQ_TURBO_DIMS * b : NULL;
		__m512i wp = _mm512_loadu_si512(p + QUANT_LVQ_TURBO_BYTES * b);
		__m512i wr = mode == 1 ? _mm512_loadu_si512(r + QUANT_LVQ_TURBO_BYTES * b) : wp;
#pragma GCC unroll 8
		for (int k = 0; k < 8; k++) {
			__m512i zk = AVX512_BLOCK_Z(mode, wp, wr, r8, k);
			s[k & 3] = avx512_l2_step(s[k & 3], _mm512_loadu_ps(qb + 16 * k), zk, sc, bi,
						  0xFFFF);
		}
	}
	size_t c = 8 * nb, full = n / 16;
	for (; c + 4 <= full; c += 4)
		for (int k = 0; k < 4; k++)
			s[k] = avx512_l2_step(s[k], _mm512_loadu_ps(q + 16 * (c + k)),
					      z(p, r, c + k, 16), sc, bi, 0xFFFF);
	for (; c < full; c++)
		s[2] = avx512_l2_step(s[2], _mm512_loadu_ps(q + 16 * c), z(p, r, c, 16), sc, bi,
				      0xFFFF);
	if (n % 16) {
		__mmask16 m = (__mmask16)((1u << (n % 16)) - 1);
		s[1] = avx512_l2_step(s[1], _mm512_maskz_loadu_ps(m, q + 16 * c), z(p, r, c, n % 16),
				      sc, bi, m);
	}
	return _mm512_reduce_add_ps(
		_mm512_add_ps(_mm512_add_ps(s[0], s[1]), _mm512_add_ps(s[2], s[3])));
}

AVX512_TARGET static float avx512_dot_u8(const float *q, const uint8_t *c, size_t n)
{
	return avx512_dot(q, c, NULL, n, avx512_z_u8);
}

AVX512_TARGET static float avx512_l2_u8(const float *q, const uint8_t *c, size_t n, float s,
					float b)
{
	return avx512_l2(q, c, NULL, n, s, b, avx512_z_u8);
}

AVX512_TARGET static float avx512_dot_u4(const float *q, const uint8_t *c, size_t n)
{
	return avx512_dot4(q, c, NULL, n, 0, avx512_z_u4);
}

AVX512_TARGET static float avx512_l2_u4(const float *q, const uint8_t *c, size_t n, float s,
					float b)
{
	return avx512_l24(q, c, NULL, n, s, b, 0, avx512_z_u4);
}

AVX512_TARGET static float avx512_dot_u4x4(const float *q, const uint8_t *p, const uint8_t *r,
					   size_t n)
{
	return avx512_dot4(q, p, r, n, 1, avx512_z_u4x4);
}

AVX512_TARGET static float avx512_l2_u4x4(const float *q, const uint8_t *p, const uint8_t *r,
					  size_t n, float s, float b)
{
	return avx512_l24(q, p, r, n, s, b, 1, avx512_z_u4x4);
}

AVX512_TARGET static float avx512_dot_u4x8(const float *q, const uint8_t *p, const uint8_t *r,
					   size_t n)
{
	return avx512_dot4(q, p, r, n, 2, avx512_z_u4x8);
}

AVX512_TARGET static float avx512_l2_u4x8(const float *q, const uint8_t *p, const uint8_t *r,
					  size_t n, float s, float b)
{
	return avx512_l24(q, p, r, n, s, b, 2, avx512_z_u4x8);
}

const quant_lvq_kernels_t quant_lvq_kernels_avx512 = {
	.name = "avx512",
	.isa = QUANT_ISA_AVX512,
	.dot_u8 = avx512_dot_u8,
	.l2_u8 = avx512_l2_u8,
	.dot_u4 = avx512_dot_u4,
	.l2_u4 = avx512_l2_u4,
	.dot_u4x4 = avx512_dot_u4x4,
	.l2_u4x4 = avx512_l2_u4x4,
	.dot_u4x8 = avx512_dot_u4x8,
	.l2_u4x8 = avx512_l2_u4x8,
};
