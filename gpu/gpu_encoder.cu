/*
 * gpu_encoder.cu — the BERT text encoder on the GPU (see gpu.h, "encoder";
 * the CPU path and the exact math are embed/forward.c).
 *
 * One chunk of packed sequences (at most batch_tokens tokens, whole
 * sequences) runs as:
 *
 *   x = LN(W_word[id] + W_pos[p] + W_type[0])                 k_embed_ln
 *   per layer:
 *     qkv16 = x16 Wqkv^T                                        GEMM, F16 out
 *     ctx16 = softmax(q k^T / sqrt(d)) v per sequence, head     k_attention
 *             (adds the q/k/v biases as it reads qkv16)
 *     x = LN1(ctx16 Wo^T + b_o + x)                             GEMM F32 out, k_add_ln
 *     h16 = GELU(x16 W1^T + b_1)                                GEMM F16 out, k_bias_gelu
 *     x = LN2(h16 W2^T + b_2 + x)                               GEMM F32 out, k_add_ln
 *   e = mean over the sequence's tokens, e / max(|e|, 1e-12)   k_pool
 *
 * The residual stream x stays F32 (x16 is its F16 copy, the GEMM operand);
 * every GEMM is cuBLAS with F16 operands and F32 accumulation (tensor
 * cores). The two wide products (q|k|v and the FFN hidden) are written in
 * F16, as torch's fp16 path does, which halves their traffic; the two that
 * feed a residual LayerNorm are written in F32. Biases, GELU, softmax,
 * LayerNorm and pooling compute in F32. `h16` holds the attention context,
 * then the FFN hidden (not live together); `y` holds each residual GEMM's
 * output.
 *
 * Everything runs on the context's stream 0 and cuBLAS handle 0 under the
 * context's mutex (like gpu_knn).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/gpu_impl.h"

/* Queries per attention block (one per thread: one warp). */
#define ATT_QT 32
/* Keys per shared-memory tile of the attention kernel. */
#define ATT_KT 32
/* Keys scored together before one online-softmax rescale. */
#define ATT_CH 8
/* Warps (rows) per block of the LayerNorm kernels. */
#define LN_WARPS 8
/* Threads of the pooling and elementwise kernels. */
#define POOL_THREADS 128
#define EW_THREADS 256

/* Tensors of one layer, in the order of layer_names[]. */
enum {
	LT_QW, LT_QB, LT_KW, LT_KB, LT_VW, LT_VB, LT_OW, LT_OB, LT_LN1G, LT_LN1B,
	LT_IW, LT_IB, LT_O2W, LT_O2B, LT_LN2G, LT_LN2B, LT_COUNT
};
/* Tensors outside the layers. */
enum { GT_WORD, GT_POS, GT_TYPE, GT_EMBG, GT_EMBB, GT_COUNT };

static const char *const layer_names[LT_COUNT] = {
	"attention.self.query.weight",       "attention.self.query.bias",
	"attention.self.key.weight",         "attention.self.key.bias",
	"attention.self.value.weight",       "attention.self.value.bias",
	"attention.output.dense.weight",     "attention.output.dense.bias",
	"attention.output.LayerNorm.weight", "attention.output.LayerNorm.bias",
	"intermediate.dense.weight",         "intermediate.dense.bias",
	"output.dense.weight",               "output.dense.bias",
	"output.LayerNorm.weight",           "output.LayerNorm.bias",
};
static const char *const global_names[GT_COUNT] = {
	"embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
	"embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight",
	"embeddings.LayerNorm.bias",
};

/* Device pointers of one layer: `w16` is one allocation holding
 * Wqkv [3H, H] | Wo [H, H] | W1 [I, H] | W2 [H, I] (row-major [out, in]),
 * `f32` one holding bqkv [3H] | bo | ln1 g | ln1 b | b1 [I] | b2 | ln2 g |
 * ln2 b. H and I are multiples of 8, so every piece is 16-byte aligned. */
typedef struct bert_layer {
	__half *w16, *wqkv, *wo, *w1, *w2;
	float *f32, *bqkv, *bo, *ln1_g, *ln1_b, *b1, *b2, *ln2_g, *ln2_b;
} bert_layer_t;

struct gpu_bert {
	gpu_ctx_t *ctx;
	gpu_bert_config_t c;
	uint32_t head_dim;
	uint32_t cap;    /* tokens (and sequences, and attention items) per chunk */
	float *emb;      /* word [vocab, H] | pos [max_pos, H] | type [type_vocab, H] | g | b */
	float *word, *pos, *type, *emb_g, *emb_b;
	bert_layer_t *layer;
	uint8_t *set;    /* GT_COUNT + LT_COUNT * layers flags: tensor uploaded */
	float *x;        /* cap x H, residual stream */
	__half *x16;     /* cap x H, its F16 copy */
	__half *qkv16;   /* cap x 3H */
	__half *h16;     /* cap x max(H, I) */
	float *y;        /* cap x H, output of the residual GEMMs */
	float *pooled;   /* cap x H */
	uint32_t *dmeta; /* device: ids | pos | seqs | items of one chunk */
	uint32_t *hmeta; /* pinned host staging of the same */
	size_t bytes;
};

/* ------------------------------------------------------------ kernels */

static __device__ __forceinline__ float warp_sum(float v)
{
	for (int o = 16; o; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

/* LayerNorm of one row held by a warp, NPL values per lane (column
 * lane + 32 i; lanes past H hold 0 and are not written). Biased variance,
 * eps inside the root (HF BertLayerNorm). Writes the F32 row and its F16
 * copy. */
template <int NPL>
static __device__ __forceinline__ void row_ln(float (&v)[NPL], uint32_t H, uint32_t lane,
					      const float *__restrict__ g,
					      const float *__restrict__ b, float eps,
					      float *__restrict__ y, __half *__restrict__ y16)
{
	float s = 0.f;
#pragma unroll
	for (int i = 0; i < NPL; i++)
		s += v[i];
	float mean = warp_sum(s) / (float)H;
	float q = 0.f;
#pragma unroll
	for (int i = 0; i < NPL; i++) {
		uint32_t j = lane + 32u * i;
		float d = j < H ? v[i] - mean : 0.f;
		q += d * d;
	}
	float rstd = 1.f / sqrtf(warp_sum(q) / (float)H + eps);
#pragma unroll
	for (int i = 0; i < NPL; i++) {
		uint32_t j = lane + 32u * i;
		if (j < H) {
			float o = (v[i] - mean) * rstd * g[j] + b[j];
			y[j] = o;
			y16[j] = __float2half_rn(o);
		}
	}
}

/* x[t] = LN(word[ids[t]] + pos[pos[t]] + type[0]); one warp per token. */
template <int NPL>
static __global__ void __launch_bounds__(LN_WARPS * 32)
k_embed_ln(const uint32_t *__restrict__ ids, const uint32_t *__restrict__ pos, uint32_t T,
	   uint32_t H, const float *__restrict__ word, const float *__restrict__ pemb,
	   const float *__restrict__ type0, const float *__restrict__ g,
	   const float *__restrict__ b, float eps, float *__restrict__ x,
	   __half *__restrict__ x16)
{
	uint32_t t = blockIdx.x * LN_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31u;
	if (t >= T) /* whole warps leave; no block barrier below */
		return;
	const float *we = word + (size_t)ids[t] * H, *pe = pemb + (size_t)pos[t] * H;
	float v[NPL];
#pragma unroll
	for (int i = 0; i < NPL; i++) {
		uint32_t j = lane + 32u * i;
		v[i] = j < H ? we[j] + pe[j] + type0[j] : 0.f;
	}
	row_ln<NPL>(v, H, lane, g, b, eps, x + (size_t)t * H, x16 + (size_t)t * H);
}

/* x[t] = LN(y[t] + bias + x[t]) in place; one warp per token. */
template <int NPL>
static __global__ void __launch_bounds__(LN_WARPS * 32)
k_add_ln(const float *__restrict__ y, const float *__restrict__ bias, uint32_t T, uint32_t H,
	 const float *__restrict__ g, const float *__restrict__ b, float eps, float *x,
	 __half *__restrict__ x16)
{
	uint32_t t = blockIdx.x * LN_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31u;
	if (t >= T)
		return;
	const float *yr = y + (size_t)t * H;
	float *xr = x + (size_t)t * H;
	float v[NPL];
#pragma unroll
	for (int i = 0; i < NPL; i++) {
		uint32_t j = lane + 32u * i;
		v[i] = j < H ? yr[j] + bias[j] + xr[j] : 0.f;
	}
	/* every lane has read its own columns before it writes them */
	row_ln<NPL>(v, H, lane, g, b, eps, xr, x16 + (size_t)t * H);
}

/* h = GELU_erf(h + bias) in place (F16 in and out, F32 arithmetic), over T
 * rows of I (I % 4 == 0); n4 = T * I / 4 groups of 4 (8-byte aligned). */
static __global__ void __launch_bounds__(EW_THREADS)
k_bias_gelu(__half *__restrict__ h, const float *__restrict__ bias, size_t n4, uint32_t I)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n4;
	     i += (size_t)gridDim.x * blockDim.x) {
		__half2 *p = reinterpret_cast<__half2 *>(h + i * 4);
		const float2 a = __half22float2(p[0]), c = __half22float2(p[1]);
		const float4 bb = *reinterpret_cast<const float4 *>(bias + (i * 4) % I);
		float z[4] = {a.x + bb.x, a.y + bb.y, c.x + bb.z, c.y + bb.w};
#pragma unroll
		for (int k = 0; k < 4; k++)
			z[k] = 0.5f * z[k] * (1.f + erff(z[k] * 0.70710678118654752f));
		p[0] = __floats2half2_rn(z[0], z[1]);
		p[1] = __floats2half2_rn(z[2], z[3]);
	}
}

/* 8 F16 values (16 bytes, aligned) plus 8 F32 biases, times `scale`. */
static __device__ __forceinline__ void load8(const __half *__restrict__ src,
					     const float *__restrict__ bias, float scale,
					     float *__restrict__ dst)
{
	/* one 16-byte load; the halves are taken out of the words by value
	 * (no type punning of a local) */
	const uint4 u = *reinterpret_cast<const uint4 *>(src);
	const uint32_t w[4] = {u.x, u.y, u.z, u.w};
	const float4 b0 = reinterpret_cast<const float4 *>(bias)[0];
	const float4 b1 = reinterpret_cast<const float4 *>(bias)[1];
	const float bb[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
	for (int k = 0; k < 4; k++) {
		const float lo = __half2float(__ushort_as_half((unsigned short)(w[k] & 0xffffu)));
		const float hi = __half2float(__ushort_as_half((unsigned short)(w[k] >> 16)));
		dst[2 * k] = (lo + bb[2 * k]) * scale;
		dst[2 * k + 1] = (hi + bb[2 * k + 1]) * scale;
	}
}

/*
 * Attention of one (sequence, head, tile of ATT_QT queries): items[3 * x] =
 * (first token of the sequence in the chunk, its length, first query), head
 * = blockIdx.y. One thread per query keeps q, the output accumulator and the
 * running max / sum in registers; keys and values pass through shared
 * memory ATT_KT at a time in F32 (rows past the sequence are zero) and are
 * scored ATT_CH at a time with one rescale of the accumulator (online
 * softmax, arXiv 1805.02867 §3). Softmax in F32 with expf. qkv rows hold
 * q | k | v in F16 without bias (stride 3H); the output row (stride H) is
 * F16.
 */
template <int D>
static __global__ void __launch_bounds__(ATT_QT)
k_attention(const __half *__restrict__ qkv, const float *__restrict__ bqkv,
	    const uint32_t *__restrict__ items, uint32_t H, float scale,
	    __half *__restrict__ ctx)
{
	__shared__ __align__(16) float ks[ATT_KT * D];
	__shared__ __align__(16) float vs[ATT_KT * D];
	const uint32_t start = items[3 * blockIdx.x], len = items[3 * blockIdx.x + 1];
	const uint32_t qi = items[3 * blockIdx.x + 2] + threadIdx.x;
	const uint32_t hoff = blockIdx.y * D;
	const size_t ld = 3 * (size_t)H;
	const bool active = qi < len;
	float q[D], acc[D];
	float m = -INFINITY, l = 0.f;
#pragma unroll
	for (int d = 0; d < D; d++) {
		q[d] = 0.f;
		acc[d] = 0.f;
	}
	if (active) {
		const __half *qr = qkv + (start + qi) * ld + hoff;
#pragma unroll
		for (int d8 = 0; d8 < D / 8; d8++)
			load8(qr + 8 * d8, bqkv + hoff + 8 * d8, scale, q + 8 * d8);
	}
	const float *bk = bqkv + H + hoff, *bv = bqkv + 2 * (size_t)H + hoff;
	for (uint32_t k0 = 0; k0 < len; k0 += ATT_KT) {
		const uint32_t nk = len - k0 < ATT_KT ? len - k0 : ATT_KT;
		__syncthreads(); /* the previous tile is consumed */
		for (uint32_t i = threadIdx.x; i < ATT_KT * D / 8; i += ATT_QT) {
			const uint32_t r = i / (D / 8), c = (i % (D / 8)) * 8;
			float *kd = ks + r * D + c, *vd = vs + r * D + c;
			if (r < nk) {
				const __half *row = qkv + (start + k0 + r) * ld + hoff + c;
				load8(row + H, bk + c, 1.f, kd);
				load8(row + 2 * (size_t)H, bv + c, 1.f, vd);
			} else {
#pragma unroll
				for (int k = 0; k < 8; k++)
					kd[k] = vd[k] = 0.f;
			}
		}
		__syncthreads();
		if (!active)
			continue; /* still reaches every barrier of the loop */
		for (uint32_t j0 = 0; j0 < nk; j0 += ATT_CH) {
			float s[ATT_CH], mx = m;
#pragma unroll
			for (int jj = 0; jj < ATT_CH; jj++) {
				/* j0 + jj < ATT_KT always (ATT_KT % ATT_CH == 0); rows
				 * past nk are zero, masked here */
				const float4 *kr = reinterpret_cast<const float4 *>(ks + (j0 + jj) * D);
				float dot = 0.f;
#pragma unroll
				for (int d4 = 0; d4 < D / 4; d4++) {
					float4 kk = kr[d4];
					dot = fmaf(q[4 * d4 + 0], kk.x, dot);
					dot = fmaf(q[4 * d4 + 1], kk.y, dot);
					dot = fmaf(q[4 * d4 + 2], kk.z, dot);
					dot = fmaf(q[4 * d4 + 3], kk.w, dot);
				}
				s[jj] = j0 + jj < nk ? dot : -INFINITY;
				mx = fmaxf(mx, s[jj]);
			}
			/* mx is finite: key j0 < nk is real; the first time m is
			 * -inf and corr is 0 (acc and l are 0 anyway) */
			const float corr = expf(m - mx);
			l *= corr;
#pragma unroll
			for (int d = 0; d < D; d++)
				acc[d] *= corr;
#pragma unroll
			for (int jj = 0; jj < ATT_CH; jj++) {
				const float p = expf(s[jj] - mx); /* 0 for masked keys */
				l += p;
				const float4 *vr = reinterpret_cast<const float4 *>(vs + (j0 + jj) * D);
#pragma unroll
				for (int d4 = 0; d4 < D / 4; d4++) {
					float4 vv = vr[d4];
					acc[4 * d4 + 0] = fmaf(p, vv.x, acc[4 * d4 + 0]);
					acc[4 * d4 + 1] = fmaf(p, vv.y, acc[4 * d4 + 1]);
					acc[4 * d4 + 2] = fmaf(p, vv.z, acc[4 * d4 + 2]);
					acc[4 * d4 + 3] = fmaf(p, vv.w, acc[4 * d4 + 3]);
				}
			}
			m = mx;
		}
	}
	if (active) {
		const float inv = 1.f / l; /* l >= 1: the max key contributes exp(0) */
		__half2 *o = reinterpret_cast<__half2 *>(ctx + (start + qi) * (size_t)H + hoff);
#pragma unroll
		for (int d = 0; d < D; d += 2)
			o[d / 2] = __floats2half2_rn(acc[d] * inv, acc[d + 1] * inv);
	}
}

/* out[s] = normalise(mean of x over sequence s's tokens); seqs[2s] = first
 * token in the chunk, seqs[2s + 1] = length (>= 1). One block per sequence. */
static __global__ void __launch_bounds__(POOL_THREADS)
k_pool(const float *__restrict__ x, const uint32_t *__restrict__ seqs, uint32_t H,
       float *__restrict__ out)
{
	__shared__ float red[POOL_THREADS / 32];
	const uint32_t s = blockIdx.x, start = seqs[2 * s], len = seqs[2 * s + 1];
	float *o = out + (size_t)s * H;
	float ss = 0.f;
	for (uint32_t j = threadIdx.x; j < H; j += POOL_THREADS) {
		float a = 0.f;
		for (uint32_t p = 0; p < len; p++)
			a += x[(size_t)(start + p) * H + j];
		a /= (float)len;
		o[j] = a;
		ss += a * a;
	}
	ss = warp_sum(ss);
	if ((threadIdx.x & 31u) == 0)
		red[threadIdx.x >> 5] = ss;
	__syncthreads();
	float tot = 0.f;
#pragma unroll
	for (int w = 0; w < POOL_THREADS / 32; w++)
		tot += red[w];
	const float inv = 1.f / fmaxf(sqrtf(tot), 1e-12f);
	/* each thread rescales the columns it wrote itself */
	for (uint32_t j = threadIdx.x; j < H; j += POOL_THREADS)
		o[j] *= inv;
}

/* ------------------------------------------------------------ launchers */

/* Smallest values-per-lane template that covers H (<= GPU_BERT_HIDDEN_MAX). */
static int ln_npl(uint32_t H)
{
	return H <= 256 ? 8 : H <= 384 ? 12 : H <= 512 ? 16 : H <= 768 ? 24 : 32;
}

#define LN_DISPATCH(npl, kern, grid, st, ...)                                    \
	do {                                                                         \
		switch (npl) {                                                       \
		case 8: kern<8><<<grid, LN_WARPS * 32, 0, st>>>(__VA_ARGS__); break;  \
		case 12: kern<12><<<grid, LN_WARPS * 32, 0, st>>>(__VA_ARGS__); break; \
		case 16: kern<16><<<grid, LN_WARPS * 32, 0, st>>>(__VA_ARGS__); break; \
		case 24: kern<24><<<grid, LN_WARPS * 32, 0, st>>>(__VA_ARGS__); break; \
		default: kern<32><<<grid, LN_WARPS * 32, 0, st>>>(__VA_ARGS__); break; \
		}                                                                    \
	} while (0)

/* Y [T, N] (row-major; F32, or F16 with y16) = X [T, K] W^T, W [N, K]
 * row-major, X and W F16, F32 accumulation. In cuBLAS's column-major terms
 * Y^T = (W as K x N)^T X^T. */
static int gemm(cublasHandle_t h, const __half *X, const __half *W, void *Y, int y16, uint32_t T,
		uint32_t N, uint32_t K, const char *what, vela_err_t *err)
{
	int rc = 0;
	const float one = 1.f, zero = 0.f;
	GPU_CKB(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)T, (int)K, &one, W,
			     CUDA_R_16F, (int)K, X, CUDA_R_16F, (int)K, &zero, Y,
			     y16 ? CUDA_R_16F : CUDA_R_32F, (int)N, CUBLAS_COMPUTE_32F,
			     CUBLAS_GEMM_DEFAULT),
		what);
out:
	return rc;
}

/* ------------------------------------------------------------ create / free */

static void bert_release(gpu_bert_t *b)
{
	if (b->layer)
		for (uint32_t l = 0; l < b->c.layers; l++) {
			cudaFree(b->layer[l].w16);
			cudaFree(b->layer[l].f32);
		}
	free(b->layer);
	free(b->set);
	cudaFree(b->emb);
	cudaFree(b->x);
	cudaFree(b->x16);
	cudaFree(b->qkv16);
	cudaFree(b->h16);
	cudaFree(b->y);
	cudaFree(b->pooled);
	cudaFree(b->dmeta);
	if (b->hmeta)
		cudaFreeHost(b->hmeta);
	free(b);
}

static int config_check(const gpu_bert_config_t *c, vela_err_t *err)
{
	if (c->hidden < 8 || c->hidden > GPU_BERT_HIDDEN_MAX || c->hidden % 8 ||
	    c->layers < 1 || c->layers > GPU_BERT_LAYERS_MAX || c->heads < 1 ||
	    c->hidden % c->heads || c->intermediate < 8 || c->intermediate > 65536 ||
	    c->intermediate % 8 || c->vocab < 1 || c->vocab > (1u << 24) || c->max_pos < 1 ||
	    c->max_pos > GPU_BERT_POS_MAX || c->type_vocab < 1 || c->type_vocab > 16 ||
	    !(c->ln_eps > 0.f && c->ln_eps < 1.f) ||
	    (c->batch_tokens && (c->batch_tokens < GPU_BERT_BATCH_TOKENS_MIN ||
				 c->batch_tokens > GPU_BERT_BATCH_TOKENS_MAX)))
		return gpu_errf(err, VELA_EINVAL,
				"gpu bert: bad config (hidden %u layers %u heads %u intermediate %u "
				"vocab %u max_pos %u batch_tokens %u)",
				c->hidden, c->layers, c->heads, c->intermediate, c->vocab,
				c->max_pos, c->batch_tokens);
	uint32_t hd = c->hidden / c->heads;
	if (hd != 32 && hd != 64)
		return gpu_errf(err, VELA_EUNSUPPORTED, "gpu bert: head size %u (only 32 or 64)",
				hd);
	return 0;
}

static int bert_alloc(gpu_bert_t *b, vela_err_t *err)
{
	int rc = 0;
	const gpu_bert_config_t *c = &b->c;
	size_t H = c->hidden, I = c->intermediate, cap = b->cap;
	size_t nemb = ((size_t)c->vocab + c->max_pos + c->type_vocab + 2) * H;
	size_t nw16 = 4 * H * H + 2 * I * H, nf32 = 9 * H + I;
	size_t w16 = H > I ? H : I;
	b->layer = (bert_layer_t *)calloc(c->layers, sizeof(bert_layer_t));
	b->set = (uint8_t *)calloc(GT_COUNT + (size_t)LT_COUNT * c->layers, 1);
	if (!b->layer || !b->set)
		return gpu_errf(err, VELA_ENOMEM, "gpu bert: out of host memory");
	GPU_CK(cudaMalloc((void **)&b->emb, nemb * sizeof(float)), "gpu bert weights");
	b->word = b->emb;
	b->pos = b->word + (size_t)c->vocab * H;
	b->type = b->pos + (size_t)c->max_pos * H;
	b->emb_g = b->type + (size_t)c->type_vocab * H;
	b->emb_b = b->emb_g + H;
	b->bytes = nemb * sizeof(float);
	for (uint32_t l = 0; l < c->layers; l++) {
		bert_layer_t *L = &b->layer[l];
		GPU_CK(cudaMalloc((void **)&L->w16, nw16 * sizeof(__half)), "gpu bert weights");
		GPU_CK(cudaMalloc((void **)&L->f32, nf32 * sizeof(float)), "gpu bert weights");
		L->wqkv = L->w16;
		L->wo = L->wqkv + 3 * H * H;
		L->w1 = L->wo + H * H;
		L->w2 = L->w1 + I * H;
		L->bqkv = L->f32;
		L->bo = L->bqkv + 3 * H;
		L->ln1_g = L->bo + H;
		L->ln1_b = L->ln1_g + H;
		L->b1 = L->ln1_b + H;
		L->b2 = L->b1 + I;
		L->ln2_g = L->b2 + H;
		L->ln2_b = L->ln2_g + H;
		b->bytes += nw16 * sizeof(__half) + nf32 * sizeof(float);
	}
	GPU_CK(cudaMalloc((void **)&b->x, cap * H * sizeof(float)), "gpu bert activations");
	GPU_CK(cudaMalloc((void **)&b->x16, cap * H * sizeof(__half)), "gpu bert activations");
	GPU_CK(cudaMalloc((void **)&b->qkv16, cap * 3 * H * sizeof(__half)), "gpu bert activations");
	GPU_CK(cudaMalloc((void **)&b->h16, cap * w16 * sizeof(__half)), "gpu bert activations");
	GPU_CK(cudaMalloc((void **)&b->y, cap * H * sizeof(float)), "gpu bert activations");
	GPU_CK(cudaMalloc((void **)&b->pooled, cap * H * sizeof(float)), "gpu bert activations");
	/* ids, positions: cap each; seqs: 2 cap; items: 3 cap (one per query
	 * tile, each tile holds >= 1 token) */
	GPU_CK(cudaMalloc((void **)&b->dmeta, 7 * cap * sizeof(uint32_t)), "gpu bert activations");
	GPU_CK(cudaMallocHost((void **)&b->hmeta, 7 * cap * sizeof(uint32_t)), "gpu bert staging");
	b->bytes += cap * (H * 4 + H * 2 + 3 * H * 2 + w16 * 2 + H * 4 + H * 4 + 7 * 4);
out:
	return rc;
}

extern "C" int gpu_bert_create(gpu_ctx_t *ctx, const gpu_bert_config_t *cfg, gpu_bert_t **out,
			       vela_err_t *err)
{
	if (!ctx || !cfg || !out)
		return gpu_errf(err, VELA_EINVAL, "gpu bert: bad argument");
	*out = NULL;
	int rc = config_check(cfg, err);
	if (rc)
		return rc;
	gpu_bert_t *b = (gpu_bert_t *)calloc(1, sizeof(*b));
	if (!b)
		return gpu_errf(err, VELA_ENOMEM, "gpu bert: out of host memory");
	b->ctx = ctx;
	b->c = *cfg;
	if (!b->c.batch_tokens)
		b->c.batch_tokens = GPU_BERT_BATCH_TOKENS_DEFAULT;
	b->head_dim = cfg->hidden / cfg->heads;
	/* a chunk always holds one whole sequence, however long */
	b->cap = b->c.batch_tokens > b->c.max_pos ? b->c.batch_tokens : b->c.max_pos;
	pthread_mutex_lock(&ctx->lock);
	rc = cudaSetDevice(ctx->device) == cudaSuccess
		     ? bert_alloc(b, err)
		     : gpu_errf(err, VELA_EIO, "gpu bert: cudaSetDevice failed");
	pthread_mutex_unlock(&ctx->lock);
	if (rc) {
		bert_release(b);
		return rc;
	}
	*out = b;
	return 0;
}

extern "C" void gpu_bert_free(gpu_bert_t *b)
{
	if (!b)
		return;
	gpu_ctx_t *ctx = b->ctx;
	pthread_mutex_lock(&ctx->lock);
	cudaSetDevice(ctx->device);
	cudaStreamSynchronize(ctx->stream[0]);
	bert_release(b);
	pthread_mutex_unlock(&ctx->lock);
}

extern "C" size_t gpu_bert_bytes(const gpu_bert_t *b)
{
	return b ? b->bytes : 0;
}

/* ------------------------------------------------------------ weights */

/* Where tensor `name` goes: its flag index, device address, element count
 * and whether it is stored F16. 0, or VELA_ENOTFOUND. */
typedef struct tdest {
	size_t flag;
	void *dst;
	size_t n;
	int f16;
} tdest_t;

static int tensor_dest(gpu_bert_t *b, const char *name, tdest_t *t)
{
	const gpu_bert_config_t *c = &b->c;
	size_t H = c->hidden, I = c->intermediate;
	char nm[160];
	if (!strncmp(name, "bert.", 5))
		name += 5;
	size_t len = strlen(name);
	if (len >= sizeof(nm))
		return VELA_ENOTFOUND;
	memcpy(nm, name, len + 1);
	/* old checkpoints name LayerNorm parameters gamma / beta */
	if (len > 6 && !strcmp(nm + len - 6, ".gamma"))
		strcpy(nm + len - 6, ".weight");
	else if (len > 5 && !strcmp(nm + len - 5, ".beta"))
		strcpy(nm + len - 5, ".bias");
	for (int g = 0; g < GT_COUNT; g++)
		if (!strcmp(nm, global_names[g])) {
			const size_t rows[GT_COUNT] = {c->vocab, c->max_pos, c->type_vocab, 1, 1};
			float *const dst[GT_COUNT] = {b->word, b->pos, b->type, b->emb_g, b->emb_b};
			t->flag = (size_t)g;
			t->dst = dst[g];
			t->n = rows[g] * H;
			t->f16 = 0;
			return 0;
		}
	const char *pre = "encoder.layer.";
	if (strncmp(nm, pre, strlen(pre)))
		return VELA_ENOTFOUND;
	char *end;
	const char *num = nm + strlen(pre);
	if (*num < '0' || *num > '9')
		return VELA_ENOTFOUND;
	unsigned long l = strtoul(num, &end, 10);
	if (*end != '.' || l >= c->layers)
		return VELA_ENOTFOUND;
	bert_layer_t *L = &b->layer[l];
	for (int k = 0; k < LT_COUNT; k++) {
		if (strcmp(end + 1, layer_names[k]))
			continue;
		tdest_t d = {GT_COUNT + (size_t)l * LT_COUNT + k, NULL, H, 0};
		switch (k) {
		case LT_QW: d.dst = L->wqkv, d.n = H * H, d.f16 = 1; break;
		case LT_KW: d.dst = L->wqkv + H * H, d.n = H * H, d.f16 = 1; break;
		case LT_VW: d.dst = L->wqkv + 2 * H * H, d.n = H * H, d.f16 = 1; break;
		case LT_OW: d.dst = L->wo, d.n = H * H, d.f16 = 1; break;
		case LT_IW: d.dst = L->w1, d.n = I * H, d.f16 = 1; break;
		case LT_O2W: d.dst = L->w2, d.n = H * I, d.f16 = 1; break;
		case LT_QB: d.dst = L->bqkv; break;
		case LT_KB: d.dst = L->bqkv + H; break;
		case LT_VB: d.dst = L->bqkv + 2 * H; break;
		case LT_OB: d.dst = L->bo; break;
		case LT_LN1G: d.dst = L->ln1_g; break;
		case LT_LN1B: d.dst = L->ln1_b; break;
		case LT_IB: d.dst = L->b1, d.n = I; break;
		case LT_O2B: d.dst = L->b2; break;
		case LT_LN2G: d.dst = L->ln2_g; break;
		case LT_LN2B: d.dst = L->ln2_b; break;
		}
		*t = d;
		return 0;
	}
	return VELA_ENOTFOUND;
}

extern "C" int gpu_bert_set_tensor(gpu_bert_t *b, const char *name, const float *host, size_t n,
				   vela_err_t *err)
{
	if (!b || !name || !host)
		return gpu_errf(err, VELA_EINVAL, "gpu bert: bad argument");
	tdest_t t;
	if (tensor_dest(b, name, &t))
		return gpu_errf(err, VELA_ENOTFOUND, "gpu bert: tensor %.120s is not used", name);
	if (n != t.n)
		return gpu_errf(err, VELA_EINVAL, "gpu bert: tensor %.120s has %zu values, want %zu",
				name, n, t.n);
	int rc = 0;
	__half *h16 = NULL;
	const void *src = host;
	size_t bytes = n * sizeof(float);
	if (t.f16) {
		h16 = (__half *)malloc(n * sizeof(__half));
		if (!h16)
			return gpu_errf(err, VELA_ENOMEM, "gpu bert: out of host memory");
		for (size_t i = 0; i < n; i++)
			h16[i] = __float2half_rn(host[i]);
		src = h16;
		bytes = n * sizeof(__half);
	}
	gpu_ctx_t *ctx = b->ctx;
	pthread_mutex_lock(&ctx->lock);
	GPU_CK(cudaSetDevice(ctx->device), "cudaSetDevice");
	/* on the stream every encode runs on, so no later kernel can see a
	 * half-written tensor */
	GPU_CK(cudaMemcpyAsync(t.dst, src, bytes, cudaMemcpyHostToDevice, ctx->stream[0]),
	       "gpu bert upload");
	GPU_CK(cudaStreamSynchronize(ctx->stream[0]), "gpu bert upload");
	b->set[t.flag] = 1;
out:
	pthread_mutex_unlock(&ctx->lock);
	free(h16);
	return rc;
}

/* ------------------------------------------------------------ encode */

/* The forward pass of one chunk whose metadata is already on the device:
 * T tokens, ns sequences, ni attention items. Result in b->pooled. */
static int forward_chunk(gpu_bert_t *b, const uint32_t *d_ids, const uint32_t *d_pos,
			 const uint32_t *d_seqs, const uint32_t *d_items, uint32_t T, uint32_t ns,
			 uint32_t ni, vela_err_t *err)
{
	int rc = 0;
	const gpu_bert_config_t *c = &b->c;
	const uint32_t H = c->hidden, I = c->intermediate;
	cudaStream_t st = b->ctx->stream[0];
	cublasHandle_t h = b->ctx->blas[0];
	const int npl = ln_npl(H);
	const dim3 ln_grid((T + LN_WARPS - 1) / LN_WARPS);
	const float scale = 1.f / sqrtf((float)b->head_dim);
	size_t n4 = (size_t)T * I / 4;
	unsigned gelu_blocks = (unsigned)((n4 + EW_THREADS - 1) / EW_THREADS);
	if (gelu_blocks > 65535u * 8u)
		gelu_blocks = 65535u * 8u; /* grid-stride beyond */
	LN_DISPATCH(npl, k_embed_ln, ln_grid, st, d_ids, d_pos, T, H, b->word, b->pos, b->type,
		    b->emb_g, b->emb_b, c->ln_eps, b->x, b->x16);
	GPU_CKL("gpu bert embeddings");
	for (uint32_t l = 0; l < c->layers; l++) {
		const bert_layer_t *L = &b->layer[l];
		if ((rc = gemm(h, b->x16, L->wqkv, b->qkv16, 1, T, 3 * H, H, "gpu bert qkv", err)))
			goto out;
		if (b->head_dim == 32)
			k_attention<32><<<dim3(ni, c->heads), ATT_QT, 0, st>>>(b->qkv16, L->bqkv,
									      d_items, H, scale,
									      b->h16);
		else
			k_attention<64><<<dim3(ni, c->heads), ATT_QT, 0, st>>>(b->qkv16, L->bqkv,
									      d_items, H, scale,
									      b->h16);
		GPU_CKL("gpu bert attention");
		if ((rc = gemm(h, b->h16, L->wo, b->y, 0, T, H, H, "gpu bert attention out", err)))
			goto out;
		LN_DISPATCH(npl, k_add_ln, ln_grid, st, b->y, L->bo, T, H, L->ln1_g, L->ln1_b,
			    c->ln_eps, b->x, b->x16);
		GPU_CKL("gpu bert layernorm");
		if ((rc = gemm(h, b->x16, L->w1, b->h16, 1, T, I, H, "gpu bert ffn in", err)))
			goto out;
		k_bias_gelu<<<gelu_blocks, EW_THREADS, 0, st>>>(b->h16, L->b1, n4, I);
		GPU_CKL("gpu bert gelu");
		if ((rc = gemm(h, b->h16, L->w2, b->y, 0, T, H, I, "gpu bert ffn out", err)))
			goto out;
		LN_DISPATCH(npl, k_add_ln, ln_grid, st, b->y, L->b2, T, H, L->ln2_g, L->ln2_b,
			    c->ln_eps, b->x, b->x16);
		GPU_CKL("gpu bert layernorm");
	}
	k_pool<<<ns, POOL_THREADS, 0, st>>>(b->x, d_seqs, H, b->pooled);
	GPU_CKL("gpu bert pooling");
out:
	return rc;
}

static int encode_locked(gpu_bert_t *b, const uint32_t *tokens, const uint32_t *off,
			 uint32_t n, float *out, vela_err_t *err)
{
	int rc = 0;
	gpu_ctx_t *ctx = b->ctx;
	const uint32_t H = b->c.hidden, budget = b->c.batch_tokens;
	cudaStream_t st = ctx->stream[0];
	GPU_CK(cudaSetDevice(ctx->device), "cudaSetDevice");
	for (uint32_t s0 = 0, s1; s0 < n; s0 = s1) {
		/* whole sequences up to the budget; the first always fits (cap) */
		uint32_t T = 0;
		for (s1 = s0; s1 < n; s1++) {
			uint32_t len = off[s1 + 1] - off[s1];
			if (s1 > s0 && T + len > budget)
				break;
			T += len;
		}
		uint32_t ns = s1 - s0, ni = 0;
		uint32_t *ids = b->hmeta, *pos = ids + T, *seqs = pos + T, *items = seqs + 2 * ns;
		for (uint32_t s = s0, t = 0; s < s1; s++) {
			uint32_t len = off[s + 1] - off[s];
			memcpy(ids + t, tokens + off[s], len * sizeof(uint32_t));
			for (uint32_t p = 0; p < len; p++)
				pos[t + p] = p;
			seqs[2 * (s - s0)] = t;
			seqs[2 * (s - s0) + 1] = len;
			for (uint32_t q0 = 0; q0 < len; q0 += ATT_QT) {
				items[3 * ni] = t;
				items[3 * ni + 1] = len;
				items[3 * ni + 2] = q0;
				ni++;
			}
			t += len;
		}
		size_t words = 2 * (size_t)T + 2 * ns + 3 * (size_t)ni; /* <= 7 cap */
		GPU_CK(cudaMemcpyAsync(b->dmeta, b->hmeta, words * sizeof(uint32_t),
				       cudaMemcpyHostToDevice, st),
		       "gpu bert upload tokens");
		const uint32_t *d_ids = b->dmeta, *d_pos = d_ids + T, *d_seqs = d_pos + T,
			       *d_items = d_seqs + 2 * ns;
		if ((rc = forward_chunk(b, d_ids, d_pos, d_seqs, d_items, T, ns, ni, err)))
			goto out;
		GPU_CK(cudaMemcpyAsync(out + (size_t)s0 * H, b->pooled, (size_t)ns * H * sizeof(float),
				       cudaMemcpyDeviceToHost, st),
		       "gpu bert download");
		/* the staging buffer is rewritten by the next chunk */
		GPU_CK(cudaStreamSynchronize(st), "gpu bert encode");
	}
out:
	if (rc)
		cudaStreamSynchronize(st);
	return rc;
}

extern "C" int gpu_bert_encode(gpu_bert_t *b, const uint32_t *tokens, const uint32_t *seq_offsets,
			       uint32_t n_seqs, float *out, vela_err_t *err)
{
	if (!b || (n_seqs && (!tokens || !seq_offsets || !out)))
		return gpu_errf(err, VELA_EINVAL, "gpu bert: bad argument");
	const gpu_bert_config_t *c = &b->c;
	for (uint32_t s = 0; s < n_seqs; s++) {
		uint32_t a = seq_offsets[s], e = seq_offsets[s + 1];
		if (e <= a || e - a > c->max_pos)
			return gpu_errf(err, VELA_EINVAL,
					"gpu bert: sequence %u has length %lld (1..%u)", s,
					(long long)e - (long long)a, c->max_pos);
		for (uint32_t t = a; t < e; t++)
			if (tokens[t] >= c->vocab)
				return gpu_errf(err, VELA_EINVAL,
						"gpu bert: token id %u of sequence %u >= vocab %u",
						tokens[t], s, c->vocab);
	}
	if (n_seqs == 0)
		return 0;
	gpu_ctx_t *ctx = b->ctx;
	int rc = 0;
	pthread_mutex_lock(&ctx->lock);
	for (size_t f = 0; f < GT_COUNT + (size_t)LT_COUNT * c->layers; f++)
		if (!b->set[f]) {
			if (f < GT_COUNT)
				rc = gpu_errf(err, VELA_EINVAL, "gpu bert: tensor %s not set",
					      global_names[f]);
			else
				rc = gpu_errf(err, VELA_EINVAL,
					      "gpu bert: tensor encoder.layer.%zu.%s not set",
					      (f - GT_COUNT) / LT_COUNT,
					      layer_names[(f - GT_COUNT) % LT_COUNT]);
			break;
		}
	if (!rc)
		rc = encode_locked(b, tokens, seq_offsets, n_seqs, out, err);
	pthread_mutex_unlock(&ctx->lock);
	return rc;
}
