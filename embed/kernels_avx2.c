/* AVX2 + FMA kernels of the forward pass. Compiled with function target
 * attributes so the library runs on any x86-64; kernels.c hands this table
 * out only when vela_cpu_features() reports AVX2 and FMA.
 *
 * Matrix products use weights packed at load into panels of NR = 16 output
 * columns, k-major ([in][16] per panel), so the 6 x 16 register tile (12
 * accumulators) streams one panel row per k with two aligned loads and
 * broadcasts the activations in place (the GotoBLAS/BLIS micro-kernel shape,
 * without packing A: activations are used as they lie). Attention reuses the
 * same tile: K_h^T is packed per head, V_h is read in place. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "embed/embed_impl.h"

#define AVX2 __attribute__((target("avx2,fma")))
#define AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) static inline

#define NR 16u /* panel width: two ymm */
#define MR 6   /* tile rows */
#define MB 96u /* rows per block: the x block stays in L2 across panels */

static size_t avx2_packed_size(uint32_t out, uint32_t in)
{
	return (size_t)(out + NR - 1) / NR * NR * in;
}

static void avx2_pack(const float *w, uint32_t out, uint32_t in, float *dst)
{
	for (uint32_t p = 0; p < (out + NR - 1) / NR; p++)
		for (uint32_t k = 0; k < in; k++)
			for (uint32_t c = 0; c < NR; c++) {
				uint32_t o = p * NR + c;
				*dst++ = o < out ? w[(size_t)o * in + k] : 0.0f;
			}
}

/* y[0..mr, 0..ncols) = x[0..mr, 0..kn) P + bias, P row k at p + k * ldp
 * (16 floats). bias NULL means zero. */
AVX2_INLINE void tile(const float *x, size_t ldx, const float *p, size_t ldp, uint32_t kn,
		      const float *bias, float *y, size_t ldy, int mr, uint32_t ncols)
{
	__m256 acc[MR][2];
	__m256 b0 = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
	__m256 b1 = bias ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
#pragma GCC unroll 6
	for (int r = 0; r < mr; r++) {
		acc[r][0] = b0;
		acc[r][1] = b1;
	}
#pragma GCC unroll 2
	for (uint32_t k = 0; k < kn; k++) {
		__m256 w0 = _mm256_loadu_ps(p + k * ldp), w1 = _mm256_loadu_ps(p + k * ldp + 8);
#pragma GCC unroll 6
		for (int r = 0; r < mr; r++) {
			__m256 a = _mm256_broadcast_ss(x + r * ldx + k);
			acc[r][0] = _mm256_fmadd_ps(a, w0, acc[r][0]);
			acc[r][1] = _mm256_fmadd_ps(a, w1, acc[r][1]);
		}
	}
	if (ncols == NR) {
#pragma GCC unroll 6
		for (int r = 0; r < mr; r++) {
			_mm256_storeu_ps(y + r * ldy, acc[r][0]);
			_mm256_storeu_ps(y + r * ldy + 8, acc[r][1]);
		}
		return;
	}
	float tmp[NR];
#pragma GCC unroll 6
	for (int r = 0; r < mr; r++) {
		_mm256_storeu_ps(tmp, acc[r][0]);
		_mm256_storeu_ps(tmp + 8, acc[r][1]);
		memcpy(y + r * ldy, tmp, ncols * sizeof(float));
	}
}

/* Rows [0, m) of one panel: full tiles, then the 1..5 row remainder. */
AVX2 static void panel_rows(const float *x, size_t ldx, const float *p, size_t ldp, uint32_t kn,
			    const float *bias, float *y, size_t ldy, uint32_t m, uint32_t ncols)
{
	uint32_t r = 0;
	for (; r + MR <= m; r += MR)
		tile(x + r * ldx, ldx, p, ldp, kn, bias, y + r * ldy, ldy, MR, ncols);
	x += r * ldx;
	y += r * ldy;
	switch (m - r) {
	case 5: tile(x, ldx, p, ldp, kn, bias, y, ldy, 5, ncols); break;
	case 4: tile(x, ldx, p, ldp, kn, bias, y, ldy, 4, ncols); break;
	case 3: tile(x, ldx, p, ldp, kn, bias, y, ldy, 3, ncols); break;
	case 2: tile(x, ldx, p, ldp, kn, bias, y, ldy, 2, ncols); break;
	case 1: tile(x, ldx, p, ldp, kn, bias, y, ldy, 1, ncols); break;
	default: break;
	}
}

/* y[:, c0..c1) = x W^T + b over packed W; c0 is a multiple of NR. */
AVX2 static void avx2_linear(const embed_linear_t *l, const float *x, uint32_t m, float *y,
			     size_t ldy, uint32_t c0, uint32_t c1)
{
	uint32_t kn = l->in;
	for (uint32_t r0 = 0; r0 < m; r0 += MB) {
		uint32_t rows = m - r0 < MB ? m - r0 : MB;
		for (uint32_t c = c0; c < c1; c += NR) {
			const float *p = l->w + (size_t)(c / NR) * NR * kn;
			uint32_t nc = c1 - c < NR ? c1 - c : NR;
			panel_rows(x + (size_t)r0 * kn, kn, p, NR, kn, l->b + c,
				   y + (size_t)r0 * ldy + c, ldy, rows, nc);
		}
	}
}

/* ------------------------------------------------------------ exp, GELU */

/* e^x: Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, degree-7 Taylor
 * (relative error < 1e-8 before rounding), times 2^n built in the exponent
 * bits. Clamped so 2^n stays a normal float. */
AVX2_INLINE __m256 exp8(__m256 x)
{
	x = _mm256_min_ps(x, _mm256_set1_ps(88.3f));
	x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
	__m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)),
				   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
	r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
	__m256 p = _mm256_set1_ps(1.0f / 5040);
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
	__m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
				      23);
	return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* GELU(z) = 0.5 z (1 + erf(z/sqrt2)) through erfc(a), a = |z|/sqrt2, with
 * the Chebyshev fit of Numerical Recipes §6.2 (erfcc: fractional error
 * < 1.2e-7 everywhere), so the negative tail keeps its relative accuracy:
 * z >= 0: z - 0.5 z erfc(a); z < 0: 0.5 z erfc(a). */
AVX2_INLINE __m256 gelu8(__m256 z)
{
	__m256 a = _mm256_mul_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), z),
				 _mm256_set1_ps(0.70710678f));
	__m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f),
				 _mm256_fmadd_ps(a, _mm256_set1_ps(0.5f), _mm256_set1_ps(1.0f)));
	__m256 q = _mm256_set1_ps(0.17087277f);
	q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(-0.82215223f));
	q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(1.48851587f));
	q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(-1.13520398f));
	q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(0.27886807f));
	q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(-0.18628806f));
	q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(0.09678418f));
	q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(0.37409196f));
	q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(1.00002368f));
	q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(-1.26551223f));
	q = _mm256_fnmadd_ps(a, a, q);
	__m256 ec = _mm256_mul_ps(t, exp8(q));
	__m256 hz = _mm256_mul_ps(z, _mm256_set1_ps(0.5f));
	__m256 neg = _mm256_mul_ps(hz, ec);
	__m256 pos = _mm256_sub_ps(z, neg);
	return _mm256_blendv_ps(pos, neg, _mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_LT_OQ));
}

AVX2 void embed_avx2_gelu(float *y, size_t n)
{
	size_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(y + i, gelu8(_mm256_loadu_ps(y + i)));
	if (i < n) {
		float tmp[8] = {0};
		memcpy(tmp, y + i, (n - i) * sizeof(float));
		_mm256_storeu_ps(tmp, gelu8(_mm256_loadu_ps(tmp)));
		memcpy(y + i, tmp, (n - i) * sizeof(float));
	}
}

/* ------------------------------------------------------------ softmax */

AVX2_INLINE float hsum8(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

AVX2_INLINE float hmax8(__m256 v)
{
	__m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_max_ps(s, _mm_movehl_ps(s, s));
	s = _mm_max_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

/* Lanes [0, r) set, for the row tail. */
AVX2_INLINE __m256 tail_mask(uint32_t r)
{
	__m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
	return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)r), idx));
}

AVX2 static void softmax_row(float *p, uint32_t n, float scale)
{
	__m256 vs = _mm256_set1_ps(scale), mx = _mm256_set1_ps(-INFINITY), sum = _mm256_setzero_ps();
	uint32_t full = n & ~7u;
	__m256 tm = tail_mask(n - full);
	for (uint32_t j = 0; j < full; j += 8)
		mx = _mm256_max_ps(mx, _mm256_mul_ps(_mm256_loadu_ps(p + j), vs));
	if (full < n)
		mx = _mm256_max_ps(mx, _mm256_blendv_ps(_mm256_set1_ps(-INFINITY),
							_mm256_mul_ps(_mm256_maskload_ps(p + full,
								_mm256_castps_si256(tm)), vs), tm));
	__m256 m = _mm256_set1_ps(hmax8(mx));
	for (uint32_t j = 0; j < full; j += 8) {
		__m256 e = exp8(_mm256_fmsub_ps(_mm256_loadu_ps(p + j), vs, m));
		_mm256_storeu_ps(p + j, e);
		sum = _mm256_add_ps(sum, e);
	}
	if (full < n) {
		__m256 v = _mm256_maskload_ps(p + full, _mm256_castps_si256(tm));
		__m256 e = _mm256_and_ps(exp8(_mm256_fmsub_ps(v, vs, m)), tm);
		_mm256_maskstore_ps(p + full, _mm256_castps_si256(tm), e);
		sum = _mm256_add_ps(sum, e);
	}
	__m256 inv = _mm256_set1_ps(1.0f / hsum8(sum));
	for (uint32_t j = 0; j < full; j += 8)
		_mm256_storeu_ps(p + j, _mm256_mul_ps(_mm256_loadu_ps(p + j), inv));
	if (full < n) {
		__m256 v = _mm256_maskload_ps(p + full, _mm256_castps_si256(tm));
		_mm256_maskstore_ps(p + full, _mm256_castps_si256(tm), _mm256_mul_ps(v, inv));
	}
}

AVX2 void embed_avx2_softmax(float *s, uint32_t rows, uint32_t n, size_t ld, float scale)
{
	for (uint32_t r = 0; r < rows; r++)
		softmax_row(s + r * ld, n, scale);
}

/* ------------------------------------------------------------ attention */

/* Per head: pack K_h^T into 16-column panels ([head_dim][16] each, zero
 * past len), S = Q_h K_h^T with the GEMM tile (row stride lp), softmax
 * over the first len columns, then C_h = P V_h with V_h read in place. */
AVX2 void embed_avx2_attend(const float *qkv, uint32_t len, uint32_t hidden, uint32_t heads,
			    uint32_t h0, uint32_t h1, float scale, float *scratch, float *ctx)
{
	uint32_t dh = hidden / heads, ld = 3 * hidden, lp = (len + NR - 1) / NR * NR;
	float *kt = scratch, *s = scratch + (size_t)dh * lp;
	for (uint32_t h = h0; h < h1; h++) {
		const float *q = qkv + h * dh, *k = q + hidden, *v = q + 2 * hidden;
		for (uint32_t jp = 0; jp < lp; jp += NR)
			for (uint32_t d = 0; d < dh; d++)
				for (uint32_t c = 0; c < NR; c++)
					kt[(size_t)jp * dh + d * NR + c] =
						jp + c < len ? k[(size_t)(jp + c) * ld + d] : 0.0f;
		for (uint32_t jp = 0; jp < lp; jp += NR)
			panel_rows(q, ld, kt + (size_t)jp * dh, NR, dh, NULL, s + jp, lp, len, NR);
		embed_avx2_softmax(s, len, len, lp, scale);
		for (uint32_t c = 0; c < dh; c += NR)
			panel_rows(s, lp, v + c, ld, len, NULL, ctx + h * dh + c, hidden, len,
				   dh - c < NR ? dh - c : NR);
	}
}

/* ------------------------------------------------------------ LayerNorm */

AVX2 static void ln_row(float *v, const float *add, uint32_t d, const float *g, const float *b,
			float eps)
{
	uint32_t full = d & ~7u, i;
	__m256 s = _mm256_setzero_ps();
	for (i = 0; i < full; i += 8) {
		__m256 x = _mm256_loadu_ps(v + i);
		if (add != NULL) {
			x = _mm256_add_ps(x, _mm256_loadu_ps(add + i));
			_mm256_storeu_ps(v + i, x);
		}
		s = _mm256_add_ps(s, x);
	}
	float sum = hsum8(s);
	for (; i < d; i++) {
		if (add != NULL)
			v[i] += add[i];
		sum += v[i];
	}
	float mean = sum / (float)d;
	__m256 vm = _mm256_set1_ps(mean), q = _mm256_setzero_ps();
	for (i = 0; i < full; i += 8) {
		__m256 c = _mm256_sub_ps(_mm256_loadu_ps(v + i), vm);
		q = _mm256_fmadd_ps(c, c, q);
	}
	float var = hsum8(q);
	for (; i < d; i++)
		var += (v[i] - mean) * (v[i] - mean);
	float inv = 1.0f / sqrtf(var / (float)d + eps);
	__m256 vi = _mm256_set1_ps(inv);
	for (i = 0; i < full; i += 8) {
		__m256 c = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(v + i), vm), vi);
		_mm256_storeu_ps(v + i, _mm256_fmadd_ps(c, _mm256_loadu_ps(g + i),
							_mm256_loadu_ps(b + i)));
	}
	for (; i < d; i++)
		v[i] = (v[i] - mean) * inv * g[i] + b[i];
}

AVX2 void embed_avx2_layernorm(float *x, const float *add, uint32_t m, uint32_t d,
				const float *g, const float *b, float eps)
{
	for (uint32_t r = 0; r < m; r++)
		ln_row(x + (size_t)r * d, add ? add + (size_t)r * d : NULL, d, g, b, eps);
}

const embed_kernels_t embed_kernels_avx2 = {
	.name = "avx2",
	.id = EMBED_KERNEL_AVX2,
	.packed_size = avx2_packed_size,
	.pack = avx2_pack,
	.linear = avx2_linear,
	.col_align = NR,
	.gelu = embed_avx2_gelu,
	.softmax = embed_avx2_softmax,
	.attend = embed_avx2_attend,
	.layernorm = embed_avx2_layernorm,
};
