/* AVX-512F matrix products for the forward pass: the AVX2 layout widened to
 * panels of NR = 32 output columns (two zmm) and register tiles of up to
 * 14 x 32 (28 accumulators of the 32 zmm). Element-wise kernels (GELU,
 * softmax, LayerNorm) and attention are the AVX2 ones: they are memory-bound
 * or small next to the products. kernels.c hands this table out only when
 * vela_cpu_features() reports AVX-512F (and AVX2 + FMA). */
#include <immintrin.h>
#include <string.h>

#include "embed/embed_impl.h"

#define AVX512_INLINE __attribute__((target("avx512f,avx2,fma"), always_inline)) static inline
#define AVX512 __attribute__((target("avx512f,avx2,fma")))

#define NR 32u
#define MB 96u
/* Most rows of one tile: 14 x 2 accumulators + 2 weight registers = 30 of
 * the 32 zmm. A short text (batch 1: 9..14 tokens) then streams each weight
 * panel from memory once instead of once per 8-row tile (and longer inputs
 * take fewer passes); every output is still the bias plus the same FMAs in
 * the same k order, so results are bit-identical to any other tiling. */
#define MR_MAX 14

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
	__m512 acc[MR_MAX][2];
	__m512 b0 = _mm512_loadu_ps(bias), b1 = _mm512_loadu_ps(bias + 16);
#pragma GCC unroll 14
	for (int r = 0; r < mr; r++) {
		acc[r][0] = b0;
		acc[r][1] = b1;
	}
#pragma GCC unroll 2
	for (uint32_t k = 0; k < kn; k++) {
		__m512 w0 = _mm512_load_ps(p + (size_t)k * NR), w1 = _mm512_load_ps(p + (size_t)k * NR + 16);
#pragma GCC unroll 14
		for (int r = 0; r < mr; r++) {
			__m512 a = _mm512_set1_ps(x[r * ldx + k]);
			acc[r][0] = _mm512_fmadd_ps(a, w0, acc[r][0]);
			acc[r][1] = _mm512_fmadd_ps(a, w1, acc[r][1]);
		}
	}
	if (ncols == NR) {
#pragma GCC unroll 14
		for (int r = 0; r < mr; r++) {
			_mm512_storeu_ps(y + r * ldy, acc[r][0]);
			_mm512_storeu_ps(y + r * ldy + 16, acc[r][1]);
		}
		return;
	}
	__mmask16 m0 = ncols >= 16 ? 0xffff : (__mmask16)((1u << ncols) - 1);
	__mmask16 m1 = ncols <= 16 ? 0 : (__mmask16)((1u << (ncols - 16)) - 1);
#pragma GCC unroll 14
	for (int r = 0; r < mr; r++) {
		_mm512_mask_storeu_ps(y + r * ldy, m0, acc[r][0]);
		_mm512_mask_storeu_ps(y + r * ldy + 16, m1, acc[r][1]);
	}
}

/* One tile of `mr` rows (1..MR_MAX), dispatched to a constant size so the
 * accumulators stay in registers. */
AVX512_INLINE void tile_n(const float *x, size_t ldx, const float *p, uint32_t kn,
			  const float *bias, float *y, size_t ldy, uint32_t mr, uint32_t ncols)
{
	switch (mr) {
	case 14: tile(x, ldx, p, kn, bias, y, ldy, 14, ncols); break;
	case 13: tile(x, ldx, p, kn, bias, y, ldy, 13, ncols); break;
	case 12: tile(x, ldx, p, kn, bias, y, ldy, 12, ncols); break;
	case 11: tile(x, ldx, p, kn, bias, y, ldy, 11, ncols); break;
	case 10: tile(x, ldx, p, kn, bias, y, ldy, 10, ncols); break;
	case 9: tile(x, ldx, p, kn, bias, y, ldy, 9, ncols); break;
	case 8: tile(x, ldx, p, kn, bias, y, ldy, 8, ncols); break;
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

/* The m rows in the fewest tiles of at most MR_MAX rows, sizes as even as
 * possible (14 rows: one pass over the panel, not 8 + 6). */
AVX512 static void panel_rows(const float *x, size_t ldx, const float *p, uint32_t kn,
			      const float *bias, float *y, size_t ldy, uint32_t m, uint32_t ncols)
{
	uint32_t tiles = (m + MR_MAX - 1) / MR_MAX;
	for (uint32_t t = 0, r = 0; t < tiles; t++) {
		uint32_t mr = (m - r) / (tiles - t) + ((m - r) % (tiles - t) != 0);
		tile_n(x + r * ldx, ldx, p, kn, bias, y + r * ldy, ldy, mr, ncols);
		r += mr;
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
