/* Internal to embed/: the CLIP vision model layout and the preprocessing
 * step the ViT forward pass (vit.c) shares with the decoders (image.c).
 * Not a public header: only the embed/ sources and the embed unit tests
 * include it. */
#ifndef VELA_EMBED_VIT_IMPL_H
#define VELA_EMBED_VIT_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include "embed/embed.h"
#include "embed/embed_impl.h"

/** CLIP's normalisation constants (OpenAI CLIP `_transform`, HF
 * OPENAI_CLIP_MEAN / OPENAI_CLIP_STD): the default when the model directory
 * has no preprocessor_config.json. */
#define EMBED_CLIP_MEAN {0.48145466f, 0.4578275f, 0.40821073f}
#define EMBED_CLIP_STD {0.26862954f, 0.26130258f, 0.27577711f}

/** Hyper-parameters read from config.json (vision_config). */
typedef struct embed_vit_config {
	uint32_t hidden;       /* 768 */
	uint32_t layers;       /* 12 */
	uint32_t heads;        /* 12 */
	uint32_t intermediate; /* 3072 */
	uint32_t image;        /* 224 */
	uint32_t patch;        /* 32 */
	uint32_t proj;         /* 512 */
	float ln_eps;          /* 1e-5 */
	uint32_t grid;         /* image / patch */
	uint32_t tokens;       /* grid^2 + 1 (the class token) */
} embed_vit_config_t;

struct embed_image_model {
	embed_vit_config_t cfg;
	uint32_t batch_images, threads;
	const embed_kernels_t *k;
	float mean[3], std[3];
	bool gelu_erf;           /* hidden_act "gelu" (erf) instead of quick_gelu */
	embed_linear_t patch;    /* conv [hidden, 3, p, p] as [hidden, 3 p p]; zero bias */
	float *cls, *pos;        /* [hidden], [tokens, hidden] */
	float *pre_g, *pre_b;    /* pre_layrnorm */
	float *post_g, *post_b;  /* post_layernorm */
	embed_linear_t proj;     /* visual_projection [proj, hidden]; zero bias */
	embed_layer_t *layer;    /* pre-LN; ffn_in is CLIP's fc1, ffn_out fc2 */
};

/**
 * CLIP preprocessing of one RGB8 image (w x h, 3 bytes a pixel, no padding)
 * into `chw` [3][size][size] floats: resize so the short side is `size`
 * (long side truncated: int(size * long / short)) with PIL's separable
 * bicubic (a = -0.5, support widened by the downscale factor, taps renormalised
 * at the borders, clamped to [0, 255] after each pass), centre crop (offset
 * (resized - size) / 2 rounded down, as HF's center_crop), then
 * (v / 255 - mean[c]) / std[c]. Only the cropped window is computed.
 * @return 0; VELA_ENOMEM.
 */
int embed_image_preprocess(const uint8_t *rgb, uint32_t w, uint32_t h, uint32_t size,
			   const float mean[3], const float std[3], float *chw);

/** quick_gelu (CLIP): y = y * sigmoid(1.702 y), in place. */
void embed_quick_gelu(float *y, size_t n);

#endif
