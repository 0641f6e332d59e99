/**
 * @file embed.h
 * @brief In-process text embeddings: safetensors reader, BERT WordPiece
 * tokenizer and the BERT encoder (all-MiniLM-L6-v2 first) on the CPU, or
 * on the GPU through libvela_gpu.so when one is there (embed_device_t).
 *
 * Three layers, each usable alone:
 *
 *  - embed_st_*: a memory-mapped safetensors reader (format: 8-byte LE
 *    header length, JSON header, data buffer; reference/embeddings §1.4).
 *    Every header field is validated before a tensor is handed out.
 *  - embed_vocab_* / embed_tokenize: WordPiece with the semantics of the HF
 *    `tokenizers` BertNormalizer + BertPreTokenizer + WordPiece (uncased:
 *    clean text, CJK split, NFD accent strip, lowercase, punctuation split,
 *    greedy longest-match-first with `##` continuations; §1.5).
 *  - embed_model_* / embed_text_batch: the post-LN BERT encoder with mean
 *    pooling and L2 normalisation (§1.3). A batch is packed without padding:
 *    every GEMM runs over the tokens of all sequences concatenated, attention
 *    stays inside each sequence and positions restart per sequence
 *    (Prepacking, Zhao et al. 2024, arXiv 2404.09529; §3.3).
 *
 * Weights are read from a model directory and never downloaded (DESIGN §7).
 *
 * Errors: every function that can fail returns 0 or a negative VELA_E code
 * and fills the caller's vela_err_t (may be NULL) with a readable message.
 * Malformed input (a truncated or lying safetensors file, invalid UTF-8, an
 * oversized text) is an error, never a crash.
 */
#ifndef VELA_EMBED_H
#define VELA_EMBED_H

#include <stddef.h>
#include <stdint.h>

#include "vela/errors.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ================================================================ safetensors */

/** Header length limit of the format (safetensors' own MAX_HEADER_SIZE). */
#define EMBED_ST_HEADER_MAX 100000000ull
/** Most dimensions a tensor may have. */
#define EMBED_ST_NDIM_MAX 8
/** Most tensors a file may hold. */
#define EMBED_ST_TENSORS_MAX 65536u
/** Longest tensor name, in bytes. */
#define EMBED_ST_NAME_MAX 1024u

/** Element types of the format. Only F32, F16 and BF16 convert to float. */
typedef enum embed_dtype {
	EMBED_DT_BOOL,
	EMBED_DT_U8,
	EMBED_DT_I8,
	EMBED_DT_F8_E5M2,
	EMBED_DT_F8_E4M3,
	EMBED_DT_I16,
	EMBED_DT_U16,
	EMBED_DT_F16,
	EMBED_DT_BF16,
	EMBED_DT_I32,
	EMBED_DT_U32,
	EMBED_DT_F32,
	EMBED_DT_F64,
	EMBED_DT_I64,
	EMBED_DT_U64,
	EMBED_DT_COUNT
} embed_dtype_t;

/** One tensor of an open file. Owned by the embed_st_t; valid until it closes. */
typedef struct embed_st_tensor {
	const char *name;   /**< NUL-terminated */
	embed_dtype_t dtype;
	uint32_t ndim;      /**< 0 (a scalar) .. EMBED_ST_NDIM_MAX */
	uint64_t shape[EMBED_ST_NDIM_MAX];
	uint64_t numel;     /**< product of shape (1 for a scalar) */
	const void *data;   /**< little-endian, C order; may be unaligned */
	uint64_t nbytes;    /**< numel * element size */
} embed_st_tensor_t;

/** An open safetensors file (opaque). */
typedef struct embed_st embed_st_t;

/**
 * @brief Map the file at `path` read-only and validate its header: length
 * bounds, JSON syntax (no duplicate keys), the dtype, shape and offsets of
 * every tensor, element count times size equal to the byte range, ranges
 * tiling the data buffer exactly (no gap, no overlap, ending at EOF).
 * @param out receives the handle; free it with embed_st_close().
 * @return 0; VELA_EIO (open/map failed), VELA_ECORRUPT (any header check).
 */
int embed_st_open(const char *path, embed_st_t **out, vela_err_t *err);

/**
 * @brief Same checks over `len` bytes in memory. The buffer is borrowed: it
 * must outlive the handle (tensor data points into it).
 */
int embed_st_parse(const void *buf, size_t len, embed_st_t **out, vela_err_t *err);

/** Unmap and free. NULL is a no-op. */
void embed_st_close(embed_st_t *st);

/** Number of tensors (the `__metadata__` entry is not a tensor). */
size_t embed_st_count(const embed_st_t *st);
/** Tensor `i` (0 <= i < count) in file order of their data, or NULL. */
const embed_st_tensor_t *embed_st_at(const embed_st_t *st, size_t i);
/** Tensor by exact name, or NULL. */
const embed_st_tensor_t *embed_st_find(const embed_st_t *st, const char *name);
/** Value of a `__metadata__` key, or NULL; owned by the handle. */
const char *embed_st_metadata(const embed_st_t *st, const char *key);

/** Name of a dtype as written in headers ("F32"), or "?". Static storage. */
const char *embed_dtype_name(embed_dtype_t dt);
/** Element size in bytes (0 for an out-of-range value). */
size_t embed_dtype_size(embed_dtype_t dt);

/**
 * @brief Convert a F32, F16 or BF16 tensor to `n` floats in `dst`.
 * @return 0; VELA_ETYPE for another dtype; VELA_EDIM when n != numel.
 */
int embed_st_to_f32(const embed_st_tensor_t *t, float *dst, size_t n, vela_err_t *err);

/* ================================================================ tokenizer */

/** Longest vocab.txt accepted, in bytes, and most entries. */
#define EMBED_VOCAB_BYTES_MAX (16u << 20)
#define EMBED_VOCAB_SIZE_MAX 1000000u
/** Longest token accepted in vocab.txt, in bytes. */
#define EMBED_VOCAB_TOKEN_MAX 256u
/** Longest text embed_tokenize accepts, in bytes (longer: VELA_ELIMIT). */
#define EMBED_TEXT_BYTES_MAX (1u << 20)
/** A word of more code points than this becomes one [UNK] (HF default). */
#define EMBED_WORD_CHARS_MAX 100u

/** A WordPiece vocabulary (opaque, immutable once loaded: thread-safe). */
typedef struct embed_vocab embed_vocab_t;

/**
 * @brief Load a vocab.txt (one token per line; line i is id i). Needs the
 * special tokens [UNK], [CLS] and [SEP].
 * @param out free with embed_vocab_free().
 * @return 0; VELA_EIO; VELA_ECORRUPT (duplicate token, missing special token,
 * a line too long, NUL bytes); VELA_ELIMIT (file or entry count too large).
 */
int embed_vocab_load(const char *path, embed_vocab_t **out, vela_err_t *err);
/** Same from `len` bytes in memory (copied: the buffer is not kept). */
int embed_vocab_parse(const char *buf, size_t len, embed_vocab_t **out, vela_err_t *err);
void embed_vocab_free(embed_vocab_t *v);
/** Number of entries. */
size_t embed_vocab_size(const embed_vocab_t *v);
/** Id of the exact token `s[0..len)`, or -1. */
int32_t embed_vocab_id(const embed_vocab_t *v, const char *s, size_t len);
/** Token text of `id` (NUL-terminated, owned by `v`), or NULL. */
const char *embed_vocab_token(const embed_vocab_t *v, int32_t id);
/** Ids of the special tokens. */
int32_t embed_vocab_cls(const embed_vocab_t *v);
int32_t embed_vocab_sep(const embed_vocab_t *v);
int32_t embed_vocab_unk(const embed_vocab_t *v);

/**
 * @brief Tokenize UTF-8 `text[0..len)` into `[CLS] pieces [SEP]`, keeping at
 * most `max_ids` ids in all (pieces past `max_ids - 2` are dropped, like
 * HF truncation). Work stops once the limit is reached, so a long text costs
 * only what is kept, but the whole text is checked to be valid UTF-8 first.
 * Reentrant; allocates only small scratch.
 * @param ids caller buffer of `max_ids` (>= 2) entries.
 * @param n_ids receives the count (>= 2).
 * @return 0; VELA_EINVAL (invalid UTF-8, with its byte offset in `err`; a
 * bad argument); VELA_ELIMIT (len > EMBED_TEXT_BYTES_MAX); VELA_ENOMEM.
 */
int embed_tokenize(const embed_vocab_t *v, const char *text, size_t len, int32_t *ids,
		   size_t max_ids, size_t *n_ids, vela_err_t *err);

/* ================================================================ model */

/** Longest sequence, [CLS] and [SEP] included (sentence-transformers' 256
 * for all-MiniLM-L6-v2; the position table bounds the maximum). */
#define EMBED_MAX_SEQ_DEFAULT 256u
#define EMBED_MAX_SEQ_MIN 2u
#define EMBED_MAX_SEQ_MAX 512u

/** Tokens per forward pass: embed_text_batch splits larger batches into
 * packed chunks of at most this many tokens (bounds scratch memory). */
#define EMBED_BATCH_TOKENS_DEFAULT 8192u
#define EMBED_BATCH_TOKENS_MIN EMBED_MAX_SEQ_MAX
#define EMBED_BATCH_TOKENS_MAX 262144u

/** Threads a single embed_text_batch call may use. */
#define EMBED_THREADS_DEFAULT 1u
#define EMBED_THREADS_MIN 1u
#define EMBED_THREADS_MAX 64u

/** Matrix-product kernels (reference: OpenBLAS sgemm; packed: vela's own
 * kernels over weights packed at load, chosen from the CPU's features). */
typedef enum embed_kernel {
	EMBED_KERNEL_AUTO = 0, /**< the best available */
	EMBED_KERNEL_BLAS = 1, /**< OpenBLAS cblas_sgemm, plain C elsewhere */
	EMBED_KERNEL_AVX2 = 2, /**< needs AVX2 + FMA */
	EMBED_KERNEL_AVX512 = 3 /**< needs AVX-512F */
} embed_kernel_t;

/** Where a text model's batches run. The GPU is gpu/'s encoder
 * (gpu_bert_*, cuBLAS F16 GEMMs) in libvela_gpu.so, loaded with dlopen
 * (common/gpulib.h); the CPU path is this module's forward pass and stays
 * loaded as the fallback. */
typedef enum embed_device {
	EMBED_DEVICE_AUTO = 0, /**< the GPU when the library has the encoder and a
				    device takes the model, else the CPU */
	EMBED_DEVICE_CPU = 1,  /**< always the CPU */
	EMBED_DEVICE_GPU = 2   /**< the GPU; opening fails without one */
} embed_device_t;
#define EMBED_DEVICE_DEFAULT EMBED_DEVICE_AUTO

/** Parse "auto", "cpu" or "gpu" (any case).
 * @return 0; VELA_EINVAL on anything else. */
int embed_device_parse(const char *s, embed_device_t *out);
/** "auto", "cpu", "gpu", or "?"; static storage. */
const char *embed_device_name(embed_device_t d);

/** Options for embed_model_open_opts; zero fields mean DEFAULT. */
typedef struct embed_model_opts {
	uint32_t max_seq;      /**< EMBED_MAX_SEQ_*; 0: the model's own (sentence_bert_config.json) */
	uint32_t batch_tokens; /**< EMBED_BATCH_TOKENS_* (CPU chunks; the GPU
				    chunks at GPU_BERT_BATCH_TOKENS_DEFAULT) */
	uint32_t threads;      /**< EMBED_THREADS_* (CPU) */
	embed_kernel_t kernel; /**< VELA_EUNSUPPORTED when the CPU lacks it */
	embed_device_t device; /**< EMBED_DEVICE_* */
} embed_model_opts_t;

/** A loaded model (opaque). Immutable after open, but for one flag: the
 * first GPU failure moves the model to the CPU for good. */
typedef struct embed_model embed_model_t;

/**
 * @brief Load a BERT sentence encoder from directory `dir`:
 * `config.json` (BertModel, hidden_act "gelu"), `model.safetensors` (F32,
 * F16 or BF16; names with or without a `bert.` prefix), `vocab.txt`, and
 * when present `sentence_bert_config.json` (max_seq_length),
 * `1_Pooling/config.json` (must say mean pooling) and
 * `tokenizer_config.json` (must be lowercasing).
 * Nothing is kept open: weights are copied (packed) into the model.
 * On EMBED_DEVICE_AUTO or _GPU the weights are also uploaded, once, to the
 * process's GPU context (under the names of the safetensors file). With
 * AUTO, no library, no encoder in it, no device, or a model the device
 * cannot take (gpu.h's shape limits) leaves the model on the CPU (logged).
 * @param out free with embed_model_close().
 * @return 0; VELA_EIO; VELA_ECORRUPT (bad file, missing tensor, wrong
 * shape); VELA_EUNSUPPORTED (another architecture, pooling, activation or
 * an unavailable kernel; EMBED_DEVICE_GPU without a usable GPU encoder);
 * VELA_ENOMEM.
 */
int embed_model_open(const char *dir, embed_model_t **out, vela_err_t *err);
/** Same with options (`opts` may be NULL). */
int embed_model_open_opts(const char *dir, const embed_model_opts_t *opts, embed_model_t **out,
			  vela_err_t *err);
/** Free the model. No call may be running on it. NULL is a no-op. */
void embed_model_close(embed_model_t *m);

/** Output dimension (384 for all-MiniLM-L6-v2). */
uint32_t embed_model_dim(const embed_model_t *m);
/** Sequence limit in force, [CLS] and [SEP] included. */
uint32_t embed_model_max_seq(const embed_model_t *m);
/** The model's vocabulary (owned by the model). */
const embed_vocab_t *embed_model_vocab(const embed_model_t *m);
/** Name of the kernel in use ("blas", "avx2", "avx512"); static storage. */
const char *embed_model_kernel_name(const embed_model_t *m);
/** Where the model's batches run now: "gpu" or "cpu" (after a GPU failure,
 * "cpu" for good); static storage. */
const char *embed_model_device(const embed_model_t *m);
/** The GPU's name ("NVIDIA H200, 132 SMs, ...") while the model runs on
 * it, else NULL; valid for the process. */
const char *embed_model_gpu_name(const embed_model_t *m);
/** Device bytes held by the model's GPU encoder (0 on the CPU). */
size_t embed_model_gpu_bytes(const embed_model_t *m);

/**
 * @brief Embed `n` UTF-8 texts: tokenize (truncating to max_seq), run the
 * encoder over packed chunks, mean-pool over each text's tokens ([CLS] and
 * [SEP] included) and L2-normalise.
 * Thread-safety: any number of threads may call this (and
 * embed_ids_batch) on one model at once; each call allocates its own
 * scratch and uses at most `threads` threads of its own.
 * @param texts  `n` pointers; `lens` gives their byte lengths (NULL: each is
 *               NUL-terminated).
 * @param out    caller buffer of n * embed_model_dim() floats, row i for
 *               text i. Unspecified on error.
 * On the GPU the whole call is one gpu_bert_encode over the same packing;
 * if it fails, the failure is logged once (warning), this call and every
 * later one run on the CPU, and the caller sees no error. GPU vectors differ
 * from CPU ones by F16 rounding (cosine > 0.9999), and may differ slightly
 * with the shape of the batch.
 * @return 0; VELA_EINVAL (invalid UTF-8: `err` names the text and offset);
 * VELA_ELIMIT (a text over EMBED_TEXT_BYTES_MAX); VELA_ENOMEM.
 */
int embed_text_batch(const embed_model_t *m, const char *const *texts, const size_t *lens,
		     size_t n, float *out, vela_err_t *err);

/**
 * @brief Embed `n` already tokenized sequences, concatenated in `ids` with
 * lengths `seq_lens` (each 1..max_seq, ids < vocab size; [CLS]/[SEP] are
 * the caller's business). Same pooling, output and thread-safety as
 * embed_text_batch.
 * @return 0; VELA_EINVAL (a length or id out of range); VELA_ENOMEM.
 */
int embed_ids_batch(const embed_model_t *m, const int32_t *ids, const uint32_t *seq_lens,
		    size_t n, float *out, vela_err_t *err);

#ifdef __cplusplus
}
#endif
#endif

/* ==== images ==== */
/*
 * The CLIP vision tower (ViT) on the CPU: image decoding (PNG through
 * libpng, JPEG through libjpeg-turbo), CLIP preprocessing and the pre-LN ViT
 * forward pass with the visual projection (reference/embeddings §1.7).
 * Declared in its own guard so the text half above stays untouched.
 */
#ifndef VELA_EMBED_IMAGE_H
#define VELA_EMBED_IMAGE_H

#ifdef __cplusplus
extern "C" {
#endif

/** Largest encoded image accepted, in bytes (larger: VELA_ELIMIT). */
#define EMBED_IMAGE_BYTES_MAX (64u << 20)
/** Largest width or height of a decoded image (larger: VELA_ELIMIT). */
#define EMBED_IMAGE_SIDE_MAX 16384u
/** Largest width * height of a decoded image (larger: VELA_ELIMIT): 48 Mpx,
 * 144 MB of RGB8, bounds what one decode may allocate. */
#define EMBED_IMAGE_PIXELS_MAX (48u * 1000u * 1000u)

/** Images per forward pass: embed_image_batch splits larger batches into
 * chunks of at most this many (bounds scratch memory, about 1.5 MB per
 * image for ViT-B/32). */
#define EMBED_IMAGE_BATCH_DEFAULT 16u
#define EMBED_IMAGE_BATCH_MIN 1u
#define EMBED_IMAGE_BATCH_MAX 1024u

/** Options for embed_image_model_open; zero fields mean DEFAULT. */
typedef struct embed_image_opts {
	uint32_t batch_images; /**< EMBED_IMAGE_BATCH_* */
	uint32_t threads;      /**< EMBED_THREADS_* (the text encoder's bounds) */
	embed_kernel_t kernel; /**< VELA_EUNSUPPORTED when the CPU lacks it */
} embed_image_opts_t;

/** A loaded CLIP vision model (opaque). Immutable after open. */
typedef struct embed_image_model embed_image_model_t;

/**
 * @brief Decode a PNG or JPEG held in `buf[0..len)` to RGB8. Gray, palette,
 * 16-bit (truncated to the high byte) and alpha (dropped, as PIL's
 * convert("RGB")) inputs all come out as 3 bytes per pixel, rows top to
 * bottom, no padding. Ancillary data (gamma, ICC profiles, EXIF orientation)
 * is ignored. Reentrant.
 * @param rgb receives a malloc'ed buffer of w * h * 3 bytes; the caller
 *            frees it with free(). NULL on error.
 * @return 0; VELA_ECORRUPT (not a PNG or JPEG, truncated or corrupt data,
 * with the decoder's message); VELA_EUNSUPPORTED (GIF, WebP, BMP, CMYK
 * JPEG); VELA_ELIMIT (len over EMBED_IMAGE_BYTES_MAX, a side over
 * EMBED_IMAGE_SIDE_MAX or more than EMBED_IMAGE_PIXELS_MAX pixels: checked
 * before any pixel is decoded); VELA_EINVAL; VELA_ENOMEM.
 */
int embed_image_decode(const void *buf, size_t len, uint8_t **rgb, uint32_t *w, uint32_t *h,
		       vela_err_t *err);

/**
 * @brief Load a CLIP vision model from directory `dir`: `config.json` (a
 * CLIPConfig with a `vision_config` object, or a CLIPVisionConfig itself:
 * hidden_size, num_hidden_layers, num_attention_heads, intermediate_size,
 * image_size, patch_size, projection_dim, layer_norm_eps, hidden_act
 * "quick_gelu"), `model.safetensors` (F32, F16 or BF16; the HF names
 * `vision_model.*` and `visual_projection.weight`; text-tower tensors are
 * ignored) and, when present, `preprocessor_config.json` (image_mean,
 * image_std). Nothing is kept open: weights are copied (packed).
 * @param opts may be NULL (defaults).
 * @param out  free with embed_image_model_close().
 * @return 0; VELA_EIO; VELA_ECORRUPT (bad file, missing tensor, wrong
 * shape); VELA_EUNSUPPORTED (another activation, image size not a multiple
 * of the patch size, an unavailable kernel); VELA_EINVAL (an option out of
 * range); VELA_ENOMEM.
 */
int embed_image_model_open(const char *dir, const embed_image_opts_t *opts,
			   embed_image_model_t **out, vela_err_t *err);
/** Free the model. No call may be running on it. NULL is a no-op. */
void embed_image_model_close(embed_image_model_t *m);

/** Output dimension (projection_dim: 512 for ViT-B/32). */
uint32_t embed_image_model_dim(const embed_image_model_t *m);
/** Input side in pixels after preprocessing (image_size: 224). */
uint32_t embed_image_model_image_size(const embed_image_model_t *m);
/** Name of the kernel in use ("blas", "avx2", "avx512"); static storage. */
const char *embed_image_model_kernel_name(const embed_image_model_t *m);

/**
 * @brief Embed `n` encoded images (PNG or JPEG bytes; `bufs[i]` of
 * `lens[i]` bytes, borrowed for the call): decode, preprocess as CLIP
 * (resize the short side to image_size with PIL's bicubic, centre crop,
 * scale 1/255, normalise with the mean and std), run the ViT, project and
 * L2-normalise (docs/embeddings.md, "Images").
 * Thread-safety: any number of threads may call this (and
 * embed_image_batch_rgb) on one model at once; each call allocates its own
 * scratch and uses at most `threads` threads of its own.
 * @param out caller buffer of n * embed_image_model_dim() floats, row i for
 *            image i. Unspecified on error.
 * @return 0; the codes of embed_image_decode, with `err` naming the image
 * index; VELA_EINVAL; VELA_ENOMEM.
 */
int embed_image_batch(const embed_image_model_t *m, const void *const *bufs, const size_t *lens,
		      size_t n, float *out, vela_err_t *err);

/**
 * @brief Embed `n` decoded images: `rgb[i]` holds widths[i] * heights[i]
 * RGB8 pixels (3 bytes each, rows top to bottom, no padding), borrowed for
 * the call. Same preprocessing, output and thread-safety as
 * embed_image_batch.
 * @return 0; VELA_EINVAL (a NULL image, a zero side); VELA_ELIMIT (a side
 * or pixel count over the EMBED_IMAGE_* limits); VELA_ENOMEM.
 */
int embed_image_batch_rgb(const embed_image_model_t *m, const uint8_t *const *rgb,
			  const uint32_t *widths, const uint32_t *heights, size_t n, float *out,
			  vela_err_t *err);

#ifdef __cplusplus
}
#endif
#endif /* VELA_EMBED_IMAGE_H */
