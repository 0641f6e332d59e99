/* AVX-512F matrix products for the forward pass: the AVX2 layout widened to
 * panels of NR = 32 output columns (two zmm) and an 8 x 32 register tile
 * (16 accumulators of 32 registers). Element-wise kernels (GELU, softmax,
 * LayerNorm) and attention are the AVX2 ones: they are memory-bound or small
 * next to the products. kernels.c hands this table out only when
 * vela_cpu_features() reports AVX-512F (and AVX2 + FMA). */
#include <immintrin.h>
#include <string.h>

#include "embed/embed_impl.h"

#define AVX512_INLINE __attribute__((target("avx512f,avx2,fma"), always_inline)) static inline
#define AVX512 __attribute__((target("avx512f,avx2,fma")))

#define NR 32u
#define MR 8
#define MB 96u

static size_t avx512_packed_size(uint32_t out, uint32_t in)
{
	return (size_t)(out + NR - 1) / NR * NR * in;
}

static void avx512_pack(const float *w, uint32_t out, uint32_t in, float *dst)
{
	for (uint32_t p = 0; p < (out + NR - 1) / NR; p++)
		for (uint32_t k = 0; k < in; k++)
			for (uint32_t c = 0; c < NR; c++) {
				uint32_t o = p * NR + c;
				*dst++ = o < out ? w[(size_t)o * in + k] : 0.0f;
			}
}

/* y[0..mr, 0..ncols) = x[0..mr, 0..kn) P + bias (P row k: 32 floats). */
AVX512_INLINE void tile(const float *x, size_t ldx, const float *p, uint32_t kn,
			const float *bias, float *y, size_t ldy, int mr, uint32_t ncols)
{
	__m512 acc[MR][2];
	__m512 b0 = _mm512_loadu_ps(bias), b1 = _mm512_loadu_ps(bias + 16);
#pragma GCC unroll 8
	for (int r = 0; r < mr; r++) {
		acc[r][0] = b0;
		acc[r][1] = b1;
	}
#pragma GCC unroll 2
	for (uint32_t k = 0; k < kn; k++) {
		__m512 w0 = _mm512_load_ps(p + (size_t)k * NR), w1 = _mm512_load_ps(p + (size_t)k * NR + 16);
#pragma GCC unroll 8
		for (int r = 0; r < mr; r++) {
			__m512 a = _mm512_set1_ps(x[r * ldx + k]);
			acc[r][0] = _mm512_fmadd_ps(a, w0, acc[r][0]);
			acc[r][1] = _mm512_fmadd_ps(a, w1, acc[r][1]);
		}
	}
	if (ncols == NR) {
#pragma GCC unroll 8
		for (int r = 0; r < mr; r++) {
			_mm512_storeu_ps(y + r * ldy, acc[r][0]);
			_mm512_storeu_ps(y + r * ldy + 16, acc[r][1]);
		}
		return;
	}
	__mmask16 m0 = ncols >= 16 ? 0xffff : (__mmask16)((1u << ncols) - 1);
	__mmask16 m1 = ncols <= 16 ? 0 : (__mmask16)((1u << (ncols - 16)) - 1);
#pragma GCC unroll 8
	for (int r = 0; r < mr; r++) {
		_mm512_mask_storeu_ps(y + r * ldy, m0, acc[r][0]);
		_mm512_mask_storeu_ps(y + r * ldy + 16, m1, acc[r][1]);
	}
}

AVX512 static void panel_rows(const float *x, size_t ldx, const float *p, uint32_t kn,
			      const float *bias, float *y, size_t ldy, uint32_t m, uint32_t ncols)
{
	uint32_t r = 0;
	for (; r + MR <= m; r += MR)
		tile(x + r * ldx, ldx, p, kn, bias, y + r * ldy, ldy, MR, ncols);
	x += r * ldx;
	y += r * ldy;
	switch (m - r) {
	case 7: tile(x, ldx, p, kn, bias, y, ldy, 7, ncols); break;
	case 6: tile(x, ldx, p, kn, bias, y, ldy, 6, ncols); break;
	case 5: tile(x, ldx, p, kn, bias, y, ldy, 5, ncols); break;
	case 4: tile(x, ldx, p, kn, bias, y, ldy, 4, ncols); break;
	case 3: tile(x, ldx, p, kn, bias, y, ldy, 3, ncols); break;
	case 2: tile(x, ldx, p, kn, bias, y, ldy, 2, ncols); break;
	case 1: tile(x, ldx, p, kn, bias, y, ldy, 1, ncols); break;
	default: break;
	}
}

AVX512 static void avx512_linear(const embed_linear_t *l, const float *x, uint32_t m, float *y,
				 size_t ldy, uint32_t c0, uint32_t c1)
{
	uint32_t kn = l->in;
	for (uint32_t r0 = 0; r0 < m; r0 += MB) {
		uint32_t rows = m - r0 < MB ? m - r0 : MB;
		for (uint32_t c = c0; c < c1; c += NR) {
			const float *p = l->w + (size_t)(c / NR) * NR * kn;
			uint32_t nc = c1 - c < NR ? c1 - c : NR;
			panel_rows(x + (size_t)r0 * kn, kn, p, kn, l->b + c,
				   y + (size_t)r0 * ldy + c, ldy, rows, nc);
		}
	}
}

const embed_kernels_t embed_kernels_avx512 = {
	.name = "avx512",
	.id = EMBED_KERNEL_AVX512,
	.packed_size = avx512_packed_size,
	.pack = avx512_pack,
	.linear = avx512_linear,
	.col_align = NR,
	.gelu = embed_avx2_gelu,
	.softmax = embed_avx2_softmax,
	.attend = embed_avx2_attend,
	.layernorm = embed_avx2_layernorm,
};
