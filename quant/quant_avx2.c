/* AVX2 + FMA + F16C kernels. Compiled with function target attributes so
 * the library still runs on any x86-64; quant.c only hands this table out
 * when vela_cpu_features() reports all three features. */
#include <immintrin.h>
#include <string.h>

#include "quant/quant_impl.h"

#define AVX2_TARGET __attribute__((target("avx2,fma,f16c")))

/* Sliding window: 8 all-ones then 8 zeros; loading 8 ints at offset
 * (8 - r) gives a mask with the first r lanes set. maskload never touches
 * the masked-out bytes, so tails read nothing past the vector. */
static const int32_t avx2_tail_bits[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
					   0,  0,  0,  0,  0,  0,  0,  0};

AVX2_TARGET static inline __m256i avx2_tail_mask(size_t r)
{
	return _mm256_loadu_si256((const __m256i *)(avx2_tail_bits + 8 - r));
}

AVX2_TARGET static inline float avx2_hsum(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

/* Up to 7 trailing halves, zero-padded to a full 8-lane load. */
AVX2_TARGET static inline __m256 avx2_load_f16_tail(const uint16_t *x, size_t r)
{
	uint16_t buf[8] = {0};
	memcpy(buf, x, r * sizeof(*x));
	return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)buf));
}

AVX2_TARGET static float avx2_l2sq_f32(const float *a, const float *b, size_t n)
{
	__m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
	size_t i = 0;
	for (; i + 32 <= n; i += 32) {
		__m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
		__m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));
		__m256 d2 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16));
		__m256 d3 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24));
		s0 = _mm256_fmadd_ps(d0, d0, s0);
		s1 = _mm256_fmadd_ps(d1, d1, s1);
		s2 = _mm256_fmadd_ps(d2, d2, s2);
		s3 = _mm256_fmadd_ps(d3, d3, s3);
	}
	for (; i + 8 <= n; i += 8) {
		__m256 d = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
		s0 = _mm256_fmadd_ps(d, d, s0);
	}
	if (i < n) {
		__m256i m = avx2_tail_mask(n - i);
		__m256 d = _mm256_sub_ps(_mm256_maskload_ps(a + i, m), _mm256_maskload_ps(b + i, m));
		s1 = _mm256_fmadd_ps(d, d, s1);
	}
	return avx2_hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
}

AVX2_TARGET static float avx2_dot_f32(const float *a, const float *b, size_t n)
{
	__m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
	size_t i = 0;
	for (; i + 32 <= n; i += 32) {
		s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
		s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
		s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
		s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
	}
	for (; i + 8 <= n; i += 8)
		s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
	if (i < n) {
		__m256i m = avx2_tail_mask(n - i);
		s1 = _mm256_fmadd_ps(_mm256_maskload_ps(a + i, m), _mm256_maskload_ps(b + i, m), s1);
	}
	return avx2_hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
}

AVX2_TARGET static inline __m256 avx2_load_f16(const uint16_t *x)
{
	return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)x));
}

AVX2_TARGET static float avx2_l2sq_f16(const float *q, const uint16_t *x, size_t n)
{
	__m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
	size_t i = 0;
	for (; i + 32 <= n; i += 32) {
		__m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(q + i), avx2_load_f16(x + i));
		__m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(q + i + 8), avx2_load_f16(x + i + 8));
		__m256 d2 = _mm256_sub_ps(_mm256_loadu_ps(q + i + 16), avx2_load_f16(x + i + 16));
		__m256 d3 = _mm256_sub_ps(_mm256_loadu_ps(q + i + 24), avx2_load_f16(x + i + 24));
		s0 = _mm256_fmadd_ps(d0, d0, s0);
		s1 = _mm256_fmadd_ps(d1, d1, s1);
		s2 = _mm256_fmadd_ps(d2, d2, s2);
		s3 = _mm256_fmadd_ps(d3, d3, s3);
	}
	for (; i + 8 <= n; i += 8) {
		__m256 d = _mm256_sub_ps(_mm256_loadu_ps(q + i), avx2_load_f16(x + i));
		s0 = _mm256_fmadd_ps(d, d, s0);
	}
	if (i < n) {
		__m256i m = avx2_tail_mask(n - i);
		__m256 d = _mm256_sub_ps(_mm256_maskload_ps(q + i, m), avx2_load_f16_tail(x + i, n - i));
		s1 = _mm256_fmadd_ps(d, d, s1);
	}
	return avx2_hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
}

AVX2_TARGET static float avx2_dot_f16(const float *q, const uint16_t *x, size_t n)
{
	__m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
	size_t i = 0;
	for (; i + 32 <= n; i += 32) {
		s0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), avx2_load_f16(x + i), s0);
		s1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), avx2_load_f16(x + i + 8), s1);
		s2 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 16), avx2_load_f16(x + i + 16), s2);
		s3 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 24), avx2_load_f16(x + i + 24), s3);
	}
	for (; i + 8 <= n; i += 8)
		s0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), avx2_load_f16(x + i), s0);
	if (i < n) {
		__m256i m = avx2_tail_mask(n - i);
		s1 = _mm256_fmadd_ps(_mm256_maskload_ps(q + i, m), avx2_load_f16_tail(x + i, n - i), s1);
	}
	return avx2_hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
}

AVX2_TARGET static void avx2_f32_to_f16(const float *src, uint16_t *dst, size_t n)
{
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		__m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
		_mm_storeu_si128((__m128i *)(dst + i), h);
	}
	quant_scalar_f32_to_f16(src + i, dst + i, n - i);
}

AVX2_TARGET static void avx2_f16_to_f32(const uint16_t *src, float *dst, size_t n)
{
	size_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(dst + i, avx2_load_f16(src + i));
	quant_scalar_f16_to_f32(src + i, dst + i, n - i);
}

const quant_kernels_t quant_kernels_avx2 = {
	.name = "avx2",
	.isa = QUANT_ISA_AVX2,
	.l2sq_f32 = avx2_l2sq_f32,
	.dot_f32 = avx2_dot_f32,
	.l2sq_f16 = avx2_l2sq_f16,
	.dot_f16 = avx2_dot_f16,
	.f32_to_f16 = avx2_f32_to_f16,
	.f16_to_f32 = avx2_f16_to_f32,
};
