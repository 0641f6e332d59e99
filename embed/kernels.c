/* The reference kernel table (OpenBLAS sgemm, plain C with libm) and the
 * choice of table. The reference follows HF modeling_bert literally
 * (reference/embeddings-and-datasets.md §1.3): erf GELU, softmax, post-LN
 * LayerNorm with the biased variance; the vector tables are checked
 * against it in tests/unit/test_embed_model.c. */
#include <cblas.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "common/common.h"
#include "embed/embed_impl.h"

void embed_ref_gelu(float *y, size_t n)
{
	for (size_t i = 0; i < n; i++)
		y[i] = 0.5f * y[i] * (1.0f + erff(y[i] * (float)M_SQRT1_2));
}

void embed_ref_softmax(float *s, uint32_t rows, uint32_t n, size_t ld, float scale)
{
	for (uint32_t r = 0; r < rows; r++) {
		float *p = s + r * ld, mx = -INFINITY, sum = 0;
		for (uint32_t j = 0; j < n; j++) {
			p[j] *= scale;
			mx = p[j] > mx ? p[j] : mx;
		}
		for (uint32_t j = 0; j < n; j++) {
			p[j] = expf(p[j] - mx);
			sum += p[j];
		}
		float inv = 1.0f / sum;
		for (uint32_t j = 0; j < n; j++)
			p[j] *= inv;
	}
}

void embed_ref_layernorm(float *x, const float *add, uint32_t m, uint32_t d, const float *g,
			 const float *b, float eps)
{
	for (uint32_t r = 0; r < m; r++) {
		float *v = x + (size_t)r * d;
		if (add != NULL)
			for (uint32_t i = 0; i < d; i++)
				v[i] += add[(size_t)r * d + i];
		double mean = 0, var = 0;
		for (uint32_t i = 0; i < d; i++)
			mean += v[i];
		mean /= d;
		for (uint32_t i = 0; i < d; i++)
			var += (v[i] - mean) * (v[i] - mean);
		float inv = (float)(1.0 / sqrt(var / d + eps));
		for (uint32_t i = 0; i < d; i++)
			v[i] = ((float)(v[i] - mean)) * inv * g[i] + b[i];
	}
}

/* Per head: S = Q_h K_h^T (one sgemm), softmax, C_h = P V_h (one sgemm). */
void embed_ref_attend(const float *qkv, uint32_t len, uint32_t hidden, uint32_t heads,
		      uint32_t h0, uint32_t h1, float scale, float *scratch, float *ctx)
{
	uint32_t dh = hidden / heads, ld = 3 * hidden;
	for (uint32_t h = h0; h < h1; h++) {
		const float *q = qkv + h * dh, *k = q + hidden, *v = q + 2 * hidden;
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)len, (int)len, (int)dh,
			    1.0f, q, (int)ld, k, (int)ld, 0.0f, scratch, (int)len);
		embed_ref_softmax(scratch, len, len, len, scale);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)len, (int)dh, (int)len,
			    1.0f, scratch, (int)len, v, (int)ld, 0.0f, ctx + h * dh, (int)hidden);
	}
}

static size_t blas_packed_size(uint32_t out, uint32_t in)
{
	return (size_t)out * in;
}

static void blas_pack(const float *w, uint32_t out, uint32_t in, float *dst)
{
	memcpy(dst, w, (size_t)out * in * sizeof(float));
}

/* Y = X W^T (§1.3 BLAS mapping: RowMajor, NoTrans, Trans), then the bias. */
static void blas_linear(const embed_linear_t *l, const float *x, uint32_t m, float *y,
			size_t ldy, uint32_t c0, uint32_t c1)
{
	if (m == 0 || c1 <= c0)
		return;
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)(c1 - c0), (int)l->in,
		    1.0f, x, (int)l->in, l->w + (size_t)c0 * l->in, (int)l->in, 0.0f, y + c0,
		    (int)ldy);
	for (uint32_t r = 0; r < m; r++)
		for (uint32_t c = c0; c < c1; c++)
			y[(size_t)r * ldy + c] += l->b[c];
}

const embed_kernels_t embed_kernels_blas = {
	.name = "blas",
	.id = EMBED_KERNEL_BLAS,
	.packed_size = blas_packed_size,
	.pack = blas_pack,
	.linear = blas_linear,
	.col_align = 1,
	.gelu = embed_ref_gelu,
	.softmax = embed_ref_softmax,
	.attend = embed_ref_attend,
	.layernorm = embed_ref_layernorm,
};

const embed_kernels_t *embed_kernels_get(embed_kernel_t id)
{
	unsigned f = vela_cpu_features();
	bool avx2 = (f & VELA_CPU_AVX2) && (f & VELA_CPU_FMA);
	bool avx512 = avx2 && (f & VELA_CPU_AVX512F);
	switch (id) {
	case EMBED_KERNEL_AUTO:
		return avx512 ? &embed_kernels_avx512 : avx2 ? &embed_kernels_avx2
							     : &embed_kernels_blas;
	case EMBED_KERNEL_BLAS:
		return &embed_kernels_blas;
	case EMBED_KERNEL_AVX2:
		return avx2 ? &embed_kernels_avx2 : NULL;
	case EMBED_KERNEL_AVX512:
		return avx512 ? &embed_kernels_avx512 : NULL;
	}
	return NULL;
}
