/* Internal to embed/: half-float conversion, the model layout and the
 * kernel table the forward pass runs on. Not a public header: only the embed/ sources
 * and the embed unit tests include it. */
#ifndef VELA_EMBED_IMPL_H
#define VELA_EMBED_IMPL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "embed/embed.h"

/* ------------------------------------------------------------ halves */

/** IEEE binary16 -> float, exact (NaN payloads kept). */
static inline float embed_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, u;
	if (e == 0x1f) {
		u = sign | 0x7f800000u | (m << 13);
	} else if (e != 0) {
		u = sign | ((e + 112u) << 23) | (m << 13);
	} else if (m == 0) {
		u = sign;
	} else { /* subnormal: normalise */
		int s = 0;
		while (!(m & 0x400u)) {
			m <<= 1;
			s++;
		}
		u = sign | ((uint32_t)(113 - s) << 23) | ((m & 0x3ffu) << 13);
	}
	float f;
	memcpy(&f, &u, sizeof(f));
	return f;
}

/** bfloat16 -> float: the top half of the float's bits. */
static inline float embed_bf16_to_f32(uint16_t h)
{
	uint32_t u = (uint32_t)h << 16;
	float f;
	memcpy(&f, &u, sizeof(f));
	return f;
}

/* ------------------------------------------------------------ vocab */

struct embed_vocab {
	char *text;      /* every token, NUL-terminated, in one block */
	uint32_t *off;   /* [n] start of token i in text */
	uint32_t *len;   /* [n] its length in bytes */
	size_t n;
	uint32_t *slots; /* open addressing: id + 1, 0 = empty */
	size_t mask;
	uint32_t max_len; /* longest token, bytes: bounds the greedy match */
	int32_t unk, cls, sep;
	int32_t special[5]; /* ids of [PAD] [UNK] [CLS] [SEP] [MASK] present */
	int n_special;
};

/* ------------------------------------------------------------ model */

/** Largest hidden size config.json may declare (pooling keeps a double
 * accumulator of this many on the stack). */
#define EMBED_POOL_DIM_MAX 4096u

/** Hyper-parameters read from config.json. */
typedef struct embed_config {
	uint32_t hidden;       /* 384 */
	uint32_t layers;       /* 6 */
	uint32_t heads;        /* 12 */
	uint32_t intermediate; /* 1536 */
	uint32_t max_pos;      /* 512 */
	uint32_t vocab;        /* 30522 */
	uint32_t type_vocab;   /* 2 */
	float ln_eps;          /* 1e-12 */
} embed_config_t;

/** A linear layer y = x W^T + b, W [out, in]. `w` is in the layout the
 * kernel table wants (row-major [out,in] for BLAS, packed panels else);
 * `b` is zero-padded to a multiple of EMBED_COL_PAD floats, so kernels may
 * read whole panels of it. */
#define EMBED_COL_PAD 32u
typedef struct embed_linear {
	uint32_t in, out;
	float *w;
	float *b;
} embed_linear_t;

/** One encoder layer. BERT (post-LN): a = LN1(x + o(attn(x)));
 * x = LN2(a + ffn_out(GELU(ffn_in(a)))). The CLIP vision tower (pre-LN,
 * vit.c): x += o(attn(LN1 x)); x += ffn_out(act(ffn_in(LN2 x))). */
typedef struct embed_layer {
	embed_linear_t qkv;  /* query, key, value fused: out = 3 * hidden */
	embed_linear_t attn_out;
	float *ln1_g, *ln1_b;
	embed_linear_t ffn_in;  /* hidden -> intermediate, then the activation */
	embed_linear_t ffn_out; /* intermediate -> hidden */
	float *ln2_g, *ln2_b;
} embed_layer_t;

struct embed_kernels;

struct embed_model {
	embed_config_t cfg;
	uint32_t max_seq, batch_tokens, threads;
	embed_vocab_t *vocab;
	const struct embed_kernels *k;
	float *word_emb, *pos_emb, *type_emb; /* [vocab|max_pos|type_vocab, hidden] */
	float *emb_ln_g, *emb_ln_b;
	embed_layer_t *layer;
	/* The GPU encoder (gpu.c), NULL on the CPU. gpu_off is set once, by the
	 * first failure; the encoder itself stays until close (a call may still
	 * be in it). */
	struct gpu_bert *gpu;
	const struct vela_gpulib *gl;
	const char *gpu_name; /* the context's, static for the process */
	atomic_bool gpu_off;
};

/* ------------------------------------------------------------ GPU (gpu.c) */

/** Upload the weights of `st` to a new GPU encoder for `m` when `device`
 * asks for it (AUTO: quietly stay on the CPU when that fails).
 * @return 0; with EMBED_DEVICE_GPU, VELA_EUNSUPPORTED and gpu.h's codes. */
int embed_gpu_attach(struct embed_model *m, embed_st_t *st, embed_device_t device,
		     vela_err_t *err);
/** Free the GPU encoder, if any. */
void embed_gpu_detach(struct embed_model *m);
/** Encode `n` packed sequences on the GPU. 0 when done; nonzero when the
 * model is (now) on the CPU: the caller runs the batch there. */
int embed_gpu_run(const struct embed_model *m, const int32_t *ids, const uint32_t *lens,
		  size_t n, float *out);

/* ------------------------------------------------------------ kernels */

/** Instruction-set kernels of the forward pass; tables are static. */
typedef struct embed_kernels {
	const char *name;
	embed_kernel_t id;
	/** Floats needed for `w` of a [out, in] layer in this table's layout. */
	size_t (*packed_size)(uint32_t out, uint32_t in);
	/** Lay out row-major W [out, in] into `dst` (packed_size floats). */
	void (*pack)(const float *w, uint32_t out, uint32_t in, float *dst);
	/** y[r, c0..c1) = x[r, :] W^T + b over rows [0, m) and output columns
	 * [c0, c1) (multiples of `col_align` except at the end): lets threads
	 * split a product by columns. x has stride `in`, y stride `ldy`. */
	void (*linear)(const embed_linear_t *l, const float *x, uint32_t m, float *y, size_t ldy,
		       uint32_t c0, uint32_t c1);
	uint32_t col_align;
	/** y[i] = GELU_erf(y[i]) for i < n (0.5 z (1 + erf(z / sqrt 2))). */
	void (*gelu)(float *y, size_t n);
	/** Softmax of each of `rows` rows of `n` floats at stride `ld`, in place,
	 * after scaling by `scale`. */
	void (*softmax)(float *s, uint32_t rows, uint32_t n, size_t ld, float scale);
	/** Self-attention of one sequence of `len` tokens, heads [h0, h1):
	 * `qkv` rows hold q | k | v (stride 3 * hidden), `ctx` rows (stride
	 * hidden) receive softmax(q k^T * scale) v per head. `scratch` holds
	 * attend_scratch(len, head_dim) floats. */
	void (*attend)(const float *qkv, uint32_t len, uint32_t hidden, uint32_t heads,
		       uint32_t h0, uint32_t h1, float scale, float *scratch, float *ctx);
	/** x[r] = LN(x[r] + add[r]) * g + b over `m` rows of `d` (add may be
	 * NULL); biased variance, eps inside the root (§1.3). */
	void (*layernorm)(float *x, const float *add, uint32_t m, uint32_t d, const float *g,
			  const float *b, float eps);
} embed_kernels_t;

/** Floats of attention scratch for a sequence of `len` tokens. */
static inline size_t embed_attend_scratch(uint32_t len, uint32_t head_dim)
{
	return (size_t)(len + 16) * (len + 16) + (size_t)head_dim * (len + 16) + 64;
}

/** The table for `id` if the CPU supports it (AUTO: the best), else NULL. */
const embed_kernels_t *embed_kernels_get(embed_kernel_t id);

/** Tables, for embed_kernels_get; NULL when not compiled for this host. */
extern const embed_kernels_t embed_kernels_blas;
extern const embed_kernels_t embed_kernels_avx2;
extern const embed_kernels_t embed_kernels_avx512;

/** AVX2 pieces the AVX-512 table shares (kernels_avx2.c). */
void embed_avx2_gelu(float *y, size_t n);
void embed_avx2_softmax(float *s, uint32_t rows, uint32_t n, size_t ld, float scale);
void embed_avx2_attend(const float *qkv, uint32_t len, uint32_t hidden, uint32_t heads,
		       uint32_t h0, uint32_t h1, float scale, float *scratch, float *ctx);
void embed_avx2_layernorm(float *x, const float *add, uint32_t m, uint32_t d, const float *g,
			  const float *b, float eps);

/** Scalar reference pieces shared by every table (plain C, libm). */
void embed_ref_gelu(float *y, size_t n);
void embed_ref_softmax(float *s, uint32_t rows, uint32_t n, size_t ld, float scale);
void embed_ref_attend(const float *qkv, uint32_t len, uint32_t hidden, uint32_t heads,
		      uint32_t h0, uint32_t h1, float scale, float *scratch, float *ctx);
void embed_ref_layernorm(float *x, const float *add, uint32_t m, uint32_t d, const float *g,
			 const float *b, float eps);

/* ------------------------------------------------------------ loader */

/* Config and weight helpers both encoders share (loader.c). */

struct json_t; /* jansson's json_t */

/** Parse dir/name, a JSON object of at most 1 MiB, into *root (the caller
 * json_decref()s it). A missing file with `optional` is not an error and
 * leaves *root NULL.
 * @return 0; VELA_EINVAL (path too long); VELA_EIO; VELA_ENOMEM; VELA_ECORRUPT. */
int embed_json_load(const char *dir, const char *name, bool optional, struct json_t **root,
		    vela_err_t *err);

/** Integer field `key` of object `o` in [lo, hi] into *out; absent: `def`,
 * or an error when def < 0 (a required field).
 * @return 0; VELA_ECORRUPT. */
int embed_json_get_u32(const struct json_t *o, const char *key, long long def, long long lo,
		       long long hi, uint32_t *out, vela_err_t *err);

/** "layer_norm_eps" of `o`, a number in (0, 1e-2], into *out; absent: `def`.
 * @return 0; VELA_ECORRUPT. */
int embed_json_get_eps(const struct json_t *o, float def, float *out, vela_err_t *err);

/** `n` zeroed floats plus `pad` more (at least one), 64-byte aligned;
 * free() them. NULL when out of memory. */
float *embed_floats_alloc(size_t n, size_t pad);

/** Where weights come from and how they are laid out: every name is looked
 * up as prefix + name (a LayerNorm's .weight/.bias also as the old
 * .gamma/.beta), every array gets `pad` zeroed floats of slack, and linear
 * layers are packed for `k`. The loader owns nothing. */
typedef struct embed_loader {
	embed_st_t *st;
	const embed_kernels_t *k;
	char prefix[8]; /* "" or "bert." */
	size_t pad;
} embed_loader_t;

/** Tensor `name` of exactly shape dims[0..ndim) (ndim <= 4), converted into
 * `dst` (the product of dims floats).
 * @return 0; VELA_ECORRUPT (missing, wrong shape); safetensors' codes. */
int embed_tensor_read(const embed_loader_t *ld, const char *name, uint32_t ndim,
		      const uint64_t *dims, float *dst, vela_err_t *err);

/** A new array (embed_floats_alloc, caller frees) from tensor `name` of
 * shape [d0] (d1 0) or [d0, d1].
 * @return as embed_tensor_read; VELA_ENOMEM. */
int embed_tensor_load(const embed_loader_t *ld, const char *name, uint64_t d0, uint64_t d1,
		      float **out, vela_err_t *err);

/** A linear layer into *l (free with embed_linear_free, also on failure),
 * packed for ld->k, from `parts` stacked [out, in] weights
 * `<stems[p]>.weight` (q, k, v fused into one product) with their
 * `<stems[p]>.bias` when `bias` (else a zero bias); or, with stems NULL,
 * from the [out, in] matrix `w0` already read (zero bias).
 * @return as embed_tensor_read; VELA_ENOMEM. */
int embed_linear_load(const embed_loader_t *ld, const char *const *stems, int parts, bool bias,
		      uint32_t out, uint32_t in, const float *w0, embed_linear_t *l,
		      vela_err_t *err);

/** Free a linear layer's arrays (not `l` itself). */
void embed_linear_free(embed_linear_t *l);

/** Free an encoder layer's arrays (not `L` itself). */
void embed_layer_free(embed_layer_t *L);

/** The options both encoders share: `threads` (0: DEFAULT) checked against
 * its bounds into *threads_out, and the kernel table for `kernel` into *k.
 * @return 0; VELA_EINVAL; VELA_EUNSUPPORTED (the CPU lacks the kernels). */
int embed_opts_apply(uint32_t threads, embed_kernel_t kernel, uint32_t *threads_out,
		     const embed_kernels_t **k, vela_err_t *err);

/* ------------------------------------------------------------ team */

/* A team of threads sharing one pass step by step (team.c): each step is
 * split among the members and a barrier separates dependent steps. */
typedef struct embed_team {
	uint32_t size;              /* members, this thread included */
	atomic_uint arrived, phase; /* the barrier */
	atomic_uint go;             /* set once `size` is final */
} embed_team_t;

/** Run member(arg, tid) on t->size threads (tid 0 on this one) and wait for
 * them all. A thread that cannot start shrinks the team (slower, not
 * wrong); t->size is final before any member runs. */
void embed_team_run(embed_team_t *t, void (*member)(void *arg, uint32_t tid), void *arg);

/** Barrier of the whole team. */
void embed_team_sync(embed_team_t *t);

/** This member's share [*lo, *hi) of `n` items in blocks of `align`. */
void embed_team_share(const embed_team_t *t, uint32_t tid, uint32_t n, uint32_t align,
		      uint32_t *lo, uint32_t *hi);

/** Forward pass over one packed chunk: `n` sequences, lengths `lens`,
 * token ids concatenated in `ids`; writes n pooled, normalised vectors.
 * `team` threads (this one included) share every step of it. */
int embed_forward(const struct embed_model *m, const int32_t *ids, const uint32_t *lens,
		  uint32_t n, uint32_t team, float *out, vela_err_t *err);

#endif
