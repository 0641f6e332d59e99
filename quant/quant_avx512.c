/* AVX-512F kernels (16 lanes). Only AVX-512F is used: masked float loads
 * handle the tails, and VCVTPH2PS/VCVTPS2PH on zmm are part of AVX-512F,
 * so the table is offered whenever vela_cpu_features() has AVX512F. */
#include <immintrin.h>
#include <string.h>

#include "quant/quant_impl.h"

#define AVX512_TARGET __attribute__((target("avx512f")))

AVX512_TARGET static inline __mmask16 avx512_tail_mask(size_t r)
{
	return (__mmask16)((1u << r) - 1);
}

AVX512_TARGET static inline __m512 avx512_load_f16(const uint16_t *x)
{
	return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)x));
}

/* Up to 15 trailing halves, zero-padded (a masked 16-bit load would need
 * AVX-512BW+VL). */
AVX512_TARGET static inline __m512 avx512_load_f16_tail(const uint16_t *x, size_t r)
{
	uint16_t buf[16] = {0};
	memcpy(buf, x, r * sizeof(*x));
	return avx512_load_f16(buf);
}

AVX512_TARGET static float avx512_l2sq_f32(const float *a, const float *b, size_t n)
{
	__m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
	size_t i = 0;
	for (; i + 64 <= n; i += 64) {
		__m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
		__m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16));
		__m512 d2 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32));
		__m512 d3 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48));
		s0 = _mm512_fmadd_ps(d0, d0, s0);
		s1 = _mm512_fmadd_ps(d1, d1, s1);
		s2 = _mm512_fmadd_ps(d2, d2, s2);
		s3 = _mm512_fmadd_ps(d3, d3, s3);
	}
	for (; i + 16 <= n; i += 16) {
		__m512 d = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
		s0 = _mm512_fmadd_ps(d, d, s0);
	}
	if (i < n) {
		__mmask16 m = avx512_tail_mask(n - i);
		__m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i));
		s1 = _mm512_fmadd_ps(d, d, s1);
	}
	return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

AVX512_TARGET static float avx512_dot_f32(const float *a, const float *b, size_t n)
{
	__m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
	size_t i = 0;
	for (; i + 64 <= n; i += 64) {
		s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
		s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
		s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
		s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
	}
	for (; i + 16 <= n; i += 16)
		s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
	if (i < n) {
		__mmask16 m = avx512_tail_mask(n - i);
		s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
	}
	return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

AVX512_TARGET static float avx512_l2sq_f16(const float *q, const uint16_t *x, size_t n)
{
	__m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
	size_t i = 0;
	for (; i + 64 <= n; i += 64) {
		__m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(q + i), avx512_load_f16(x + i));
		__m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(q + i + 16), avx512_load_f16(x + i + 16));
		__m512 d2 = _mm512_sub_ps(_mm512_loadu_ps(q + i + 32), avx512_load_f16(x + i + 32));
		__m512 d3 = _mm512_sub_ps(_mm512_loadu_ps(q + i + 48), avx512_load_f16(x + i + 48));
		s0 = _mm512_fmadd_ps(d0, d0, s0);
		s1 = _mm512_fmadd_ps(d1, d1, s1);
		s2 = _mm512_fmadd_ps(d2, d2, s2);
		s3 = _mm512_fmadd_ps(d3, d3, s3);
	}
	for (; i + 16 <= n; i += 16) {
		__m512 d = _mm512_sub_ps(_mm512_loadu_ps(q + i), avx512_load_f16(x + i));
		s0 = _mm512_fmadd_ps(d, d, s0);
	}
	if (i < n) {
		__mmask16 m = avx512_tail_mask(n - i);
		__m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, q + i), avx512_load_f16_tail(x + i, n - i));
		s1 = _mm512_fmadd_ps(d, d, s1);
	}
	return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

AVX512_TARGET static float avx512_dot_f16(const float *q, const uint16_t *x, size_t n)
{
	__m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
	size_t i = 0;
	for (; i + 64 <= n; i += 64) {
		s0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), avx512_load_f16(x + i), s0);
		s1 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i + 16), avx512_load_f16(x + i + 16), s1);
		s2 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i + 32), avx512_load_f16(x + i + 32), s2);
		s3 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i + 48), avx512_load_f16(x + i + 48), s3);
	}
	for (; i + 16 <= n; i += 16)
		s0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), avx512_load_f16(x + i), s0);
	if (i < n) {
		__mmask16 m = avx512_tail_mask(n - i);
		s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + i), avx512_load_f16_tail(x + i, n - i), s1);
	}
	return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

AVX512_TARGET static void avx512_f32_to_f16(const float *src, uint16_t *dst, size_t n)
{
	size_t i = 0;
	for (; i + 16 <= n; i += 16) {
		__m256i h = _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
		_mm256_storeu_si256((__m256i *)(dst + i), h);
	}
	quant_scalar_f32_to_f16(src + i, dst + i, n - i);
}

AVX512_TARGET static void avx512_f16_to_f32(const uint16_t *src, float *dst, size_t n)
{
	size_t i = 0;
	for (; i + 16 <= n; i += 16)
		_mm512_storeu_ps(dst + i, avx512_load_f16(src + i));
	quant_scalar_f16_to_f32(src + i, dst + i, n - i);
}

const quant_kernels_t quant_kernels_avx512 = {
	.name = "avx512",
	.isa = QUANT_ISA_AVX512,
	.l2sq_f32 = avx512_l2sq_f32,
	.dot_f32 = avx512_dot_f32,
	.l2sq_f16 = avx512_l2sq_f16,
	.dot_f16 = avx512_dot_f16,
	.f32_to_f16 = avx512_f32_to_f16,
	.f16_to_f32 = avx512_f16_to_f32,
};
