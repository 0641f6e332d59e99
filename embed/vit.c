/* The CLIP vision tower (HF CLIPVisionModelWithProjection; OpenAI CLIP's
 * VisionTransformer; reference/embeddings-and-datasets.md §1.7):
 *
 *   patches: conv [H, 3, p, p] stride p, no bias  ==  im2col rows x W^T
 *   x = [class_embedding; patches] + position_embedding;  x = pre_layrnorm(x)
 *   per layer (pre-LN): x += o(attn(LN1 x));  x += fc2(act(fc1(LN2 x)))
 *   e = visual_projection(post_layernorm(x[0]));  e / |e|
 *
 * with act quick_gelu (x sigmoid(1.702 x)) for the OpenAI checkpoints.
 * A chunk of up to batch_images images runs as one pass: every linear
 * layer is one product over the tokens of all its images (every image has
 * the same grid^2 + 1 tokens), attention runs per (image, head). The
 * linear, attention and LayerNorm kernels are the text encoder's
 * (embed_impl.h), so the instruction-set choice and packing are shared.
 *
 * Threads: like embed_forward, a team shares each step (decoding and
 * preprocessing by image, products by output columns, LayerNorm by rows,
 * attention by (image, head)) with a barrier between dependent steps; each
 * output element is computed by one thread with the same arithmetic as
 * alone, so results do not depend on the thread count. */
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "embed/vit_impl.h"

/* Kernels may read a panel's width past the end of a row. */
#define ROW_PAD 64u

/* ------------------------------------------------------------ config */

/* A CLIPConfig (vision_config inside) or a CLIPVisionConfig; missing
 * fields take CLIPVisionConfig's defaults (ViT-B/32). *gelu_erf is set for
 * hidden_act "gelu" (some LAION checkpoints), clear for "quick_gelu". */
static int config_parse(const json_t *root, embed_vit_config_t *c, bool *gelu_erf,
			vela_err_t *err)
{
	const json_t *vc = json_object_get(root, "vision_config");
	const json_t *o = json_is_object(vc) ? vc : root;
	const json_t *mt = json_object_get(root, "model_type");
	if (mt != NULL && (!json_is_string(mt) || (strcmp(json_string_value(mt), "clip") != 0 &&
						   strcmp(json_string_value(mt),
							  "clip_vision_model") != 0)))
		return vela_err_set(err, VELA_EUNSUPPORTED, "embed: config model_type must be "
				    "\"clip\" or \"clip_vision_model\"");
	const json_t *act = json_object_get(o, "hidden_act");
	*gelu_erf = false;
	if (act != NULL) {
		const char *a = json_is_string(act) ? json_string_value(act) : "";
		if (strcmp(a, "gelu") == 0)
			*gelu_erf = true;
		else if (strcmp(a, "quick_gelu") != 0)
			return vela_err_set(err, VELA_EUNSUPPORTED, "embed: vision hidden_act must be "
					    "\"quick_gelu\" or \"gelu\"");
	}
	int rc;
	if ((rc = embed_json_get_u32(o, "hidden_size", 768, 8, 8192, &c->hidden, err)) != 0 ||
	    (rc = embed_json_get_u32(o, "num_hidden_layers", 12, 1, 128, &c->layers, err)) != 0 ||
	    (rc = embed_json_get_u32(o, "num_attention_heads", 12, 1, 256, &c->heads, err)) != 0 ||
	    (rc = embed_json_get_u32(o, "intermediate_size",
				     3072, 8, 65536, &c->intermediate, err)) != 0 ||
	    (rc = embed_json_get_u32(o, "image_size", 224, 8, 2048, &c->image, err)) != 0 ||
	    (rc = embed_json_get_u32(o, "patch_size", 32, 1, 256, &c->patch, err)) != 0)
		return rc;
	/* CLIPModel sizes visual_projection from the top-level projection_dim;
	 * CLIPVisionModelWithProjection from its own (the same key). */
	const json_t *po = json_object_get(root, "projection_dim") ? root : o;
	if ((rc = embed_json_get_u32(po, "projection_dim", 512, 1, 65536, &c->proj, err)) != 0)
		return rc;
	if (c->hidden % c->heads != 0)
		return vela_err_set(err, VELA_EUNSUPPORTED, "embed: hidden_size %u is not a multiple "
				    "of num_attention_heads %u", c->hidden, c->heads);
	if (c->image % c->patch != 0)
		return vela_err_set(err, VELA_EUNSUPPORTED, "embed: image_size %u is not a multiple "
				    "of patch_size %u", c->image, c->patch);
	c->grid = c->image / c->patch;
	c->tokens = c->grid * c->grid + 1;
	if (c->tokens > 4097)
		return vela_err_set(err, VELA_EUNSUPPORTED, "embed: %u patches are too many",
				    c->tokens - 1);
	return embed_json_get_eps(o, 1e-5f, &c->ln_eps, err);
}

/* preprocessor_config.json, when present: image_mean and image_std. */
static int preproc_parse(const json_t *o, float mean[3], float std[3], vela_err_t *err)
{
	const char *keys[2] = {"image_mean", "image_std"};
	float *dst[2] = {mean, std};
	for (int k = 0; k < 2; k++) {
		const json_t *a = json_object_get(o, keys[k]);
		if (a == NULL)
			continue;
		if (!json_is_array(a) || json_array_size(a) != 3)
			return vela_err_set(err, VELA_ECORRUPT, "embed: preprocessor_config.json %s "
					    "must be 3 numbers", keys[k]);
		for (int c = 0; c < 3; c++) {
			const json_t *v = json_array_get(a, (size_t)c);
			double d = json_is_number(v) ? json_number_value(v) : NAN;
			if (!isfinite(d) || fabs(d) > 1e3 || (k == 1 && !(d > 1e-6)))
				return vela_err_set(err, VELA_ECORRUPT, "embed: preprocessor_config."
						    "json %s[%d] is out of range", keys[k], c);
			dst[k][c] = (float)d;
		}
	}
	return 0;
}

/* ------------------------------------------------------------ tensors */

static int load_layer(const embed_loader_t *ld, const embed_image_model_t *m, uint32_t i,
		      embed_layer_t *L, vela_err_t *err)
{
	const embed_vit_config_t *c = &m->cfg;
	char q[96], k[96], v[96], o[96], f1[96], f2[96], nm[128];
	const char *pre = "vision_model.encoder.layers";
	snprintf(q, sizeof(q), "%s.%u.self_attn.q_proj", pre, i);
	snprintf(k, sizeof(k), "%s.%u.self_attn.k_proj", pre, i);
	snprintf(v, sizeof(v), "%s.%u.self_attn.v_proj", pre, i);
	snprintf(o, sizeof(o), "%s.%u.self_attn.out_proj", pre, i);
	snprintf(f1, sizeof(f1), "%s.%u.mlp.fc1", pre, i);
	snprintf(f2, sizeof(f2), "%s.%u.mlp.fc2", pre, i);
	const char *qkv[] = {q, k, v}, *on[] = {o}, *f1n[] = {f1}, *f2n[] = {f2};
	int rc = embed_linear_load(ld, qkv, 3, true, c->hidden, c->hidden, NULL, &L->qkv, err);
	if (rc == 0)
		rc = embed_linear_load(ld, on, 1, true, c->hidden, c->hidden, NULL, &L->attn_out,
				       err);
	if (rc == 0)
		rc = embed_linear_load(ld, f1n, 1, true, c->intermediate, c->hidden, NULL, &L->ffn_in,
				       err);
	if (rc == 0)
		rc = embed_linear_load(ld, f2n, 1, true, c->hidden, c->intermediate, NULL, &L->ffn_out,
				       err);
	const char *sfx[] = {"layer_norm1.weight", "layer_norm1.bias", "layer_norm2.weight",
			     "layer_norm2.bias"};
	float **dst[] = {&L->ln1_g, &L->ln1_b, &L->ln2_g, &L->ln2_b};
	for (int j = 0; rc == 0 && j < 4; j++) {
		snprintf(nm, sizeof(nm), "%s.%u.%s", pre, i, sfx[j]);
		rc = embed_tensor_load(ld, nm, c->hidden, 0, dst[j], err);
	}
	return rc;
}

static int load_weights(embed_image_model_t *m, const embed_loader_t *ld, vela_err_t *err)
{
	const embed_vit_config_t *c = &m->cfg;
	uint32_t p = c->patch, in = 3 * p * p;
	uint64_t dims[4] = {c->hidden, 3, p, p};
	float *w = embed_floats_alloc((size_t)c->hidden * in, ROW_PAD);
	int rc = w ? 0 : vela_err_set(err, VELA_ENOMEM, "embed: out of memory");
	/* Conv weight [H, 3, p, p] read flat is the [H, 3 p p] matrix whose
	 * column (ch, ky, kx) meets im2col's element (ch, ky, kx). */
	if (rc == 0)
		rc = embed_tensor_read(ld, "vision_model.embeddings.patch_embedding.weight", 4,
				       dims, w, err);
	if (rc == 0)
		rc = embed_linear_load(ld, NULL, 1, false, c->hidden, in, w, &m->patch, err);
	free(w);
	if (rc == 0)
		rc = embed_tensor_load(ld, "vision_model.embeddings.class_embedding", c->hidden, 0,
				       &m->cls, err);
	if (rc == 0)
		rc = embed_tensor_load(ld, "vision_model.embeddings.position_embedding.weight",
				       c->tokens, c->hidden, &m->pos, err);
	if (rc == 0)
		rc = embed_tensor_load(ld, "vision_model.pre_layrnorm.weight", c->hidden, 0,
				       &m->pre_g, err);
	if (rc == 0)
		rc = embed_tensor_load(ld, "vision_model.pre_layrnorm.bias", c->hidden, 0,
				       &m->pre_b, err);
	if (rc == 0)
		rc = embed_tensor_load(ld, "vision_model.post_layernorm.weight", c->hidden, 0,
				       &m->post_g, err);
	if (rc == 0)
		rc = embed_tensor_load(ld, "vision_model.post_layernorm.bias", c->hidden, 0,
				       &m->post_b, err);
	const char *pn[] = {"visual_projection"};
	if (rc == 0)
		rc = embed_linear_load(ld, pn, 1, false, c->proj, c->hidden, NULL, &m->proj, err);
	m->layer = rc == 0 ? calloc(c->layers, sizeof(embed_layer_t)) : NULL;
	if (rc == 0 && m->layer == NULL)
		rc = vela_err_set(err, VELA_ENOMEM, "embed: out of memory");
	for (uint32_t i = 0; rc == 0 && i < c->layers; i++)
		rc = load_layer(ld, m, i, &m->layer[i], err);
	return rc;
}

/* ------------------------------------------------------------ open/close */

void embed_image_model_close(embed_image_model_t *m)
{
	if (m == NULL)
		return;
	for (uint32_t i = 0; m->layer != NULL && i < m->cfg.layers; i++)
		embed_layer_free(&m->layer[i]);
	free(m->layer);
	embed_linear_free(&m->patch);
	embed_linear_free(&m->proj);
	free(m->cls);
	free(m->pos);
	free(m->pre_g);
	free(m->pre_b);
	free(m->post_g);
	free(m->post_b);
	free(m);
}

static int opts_apply(embed_image_model_t *m, const embed_image_opts_t *o, vela_err_t *err)
{
	embed_image_opts_t d = {0};
	if (o == NULL)
		o = &d;
	m->batch_images = o->batch_images ? o->batch_images : EMBED_IMAGE_BATCH_DEFAULT;
	if (m->batch_images < EMBED_IMAGE_BATCH_MIN || m->batch_images > EMBED_IMAGE_BATCH_MAX)
		return vela_err_set(err, VELA_EINVAL, "embed: batch_images %u out of range (%u..%u)",
				    m->batch_images, EMBED_IMAGE_BATCH_MIN, EMBED_IMAGE_BATCH_MAX);
	return embed_opts_apply(o->threads, o->kernel, &m->threads, &m->k, err);
}

static int model_load(embed_image_model_t *m, const char *dir, const embed_image_opts_t *opts,
		      vela_err_t *err)
{
	json_t *o;
	char path[4096];
	int rc = embed_json_load(dir, "config.json", false, &o, err);
	if (rc != 0)
		return rc;
	rc = config_parse(o, &m->cfg, &m->gelu_erf, err);
	json_decref(o);
	const float mean[3] = EMBED_CLIP_MEAN, std[3] = EMBED_CLIP_STD;
	memcpy(m->mean, mean, sizeof(mean));
	memcpy(m->std, std, sizeof(std));
	if (rc == 0 &&
	    (rc = embed_json_load(dir, "preprocessor_config.json", true, &o, err)) == 0 && o) {
		rc = preproc_parse(o, m->mean, m->std, err);
		json_decref(o);
	}
	if (rc == 0)
		rc = opts_apply(m, opts, err);
	embed_loader_t ld = {.k = m->k, .pad = ROW_PAD};
	if (rc == 0 && snprintf(path, sizeof(path), "%s/model.safetensors", dir) >=
			       (int)sizeof(path))
		rc = vela_err_set(err, VELA_EINVAL, "embed: model path too long");
	if (rc == 0)
		rc = embed_st_open(path, &ld.st, err);
	if (rc == 0)
		rc = load_weights(m, &ld, err);
	embed_st_close(ld.st);
	return rc;
}

int embed_image_model_open(const char *dir, const embed_image_opts_t *opts,
			   embed_image_model_t **out, vela_err_t *err)
{
	if (dir == NULL || out == NULL)
		return vela_err_set(err, VELA_EINVAL, "embed: bad argument");
	*out = NULL;
	embed_image_model_t *m = calloc(1, sizeof(*m));
	if (m == NULL)
		return vela_err_set(err, VELA_ENOMEM, "embed: out of memory");
	int rc = model_load(m, dir, opts, err);
	if (rc != 0) {
		embed_image_model_close(m);
		return rc;
	}
	*out = m;
	return 0;
}

uint32_t embed_image_model_dim(const embed_image_model_t *m)
{
	return m->cfg.proj;
}

uint32_t embed_image_model_image_size(const embed_image_model_t *m)
{
	return m->cfg.image;
}

const char *embed_image_model_kernel_name(const embed_image_model_t *m)
{
	return m->k->name;
}

void embed_quick_gelu(float *y, size_t n)
{
	for (size_t i = 0; i < n; i++)
		y[i] = y[i] / (1.0f + expf(-1.702f * y[i]));
}

/* ------------------------------------------------------------ forward */

/* One call's state, shared by its team. Per chunk of nb images (T = nb *
 * tokens rows): x (the residual stream) and tmp [T, H]; big holds the
 * patch products [nb * grid^2, H], then q|k|v [T, 3H] and the attention
 * context [T, H], then the MLP hidden [T, I]; cols the im2col rows
 * [nb * grid^2, 3 p^2]; pooled [nb, H] and proj [nb, P] the class tokens;
 * chw and att one preprocessing / attention scratch per thread. */
typedef struct {
	const embed_image_model_t *m;
	const void *const *bufs; /* encoded input, or */
	const size_t *lens;
	const uint8_t *const *rgb; /* decoded input */
	const uint32_t *ws, *hs;
	size_t n;
	float *out;
	uint32_t B;
	float *x, *tmp, *big, *cols, *pooled, *proj, *chw, *att;
	size_t chw_stride, att_stride;
	embed_team_t team;
	atomic_int rc;
	pthread_mutex_t lock;
	vela_err_t err; /* the first failure's detail */
} vit_run_t;

static void run_fail(vit_run_t *r, int rc, size_t image, const char *msg)
{
	pthread_mutex_lock(&r->lock);
	if (atomic_load(&r->rc) == 0) {
		if (strncmp(msg, "embed: ", 7) == 0)
			msg += 7;
		vela_err_set(&r->err, rc, "embed: image %zu: %s", image, msg);
		atomic_store(&r->rc, rc);
	}
	pthread_mutex_unlock(&r->lock);
}

/* Decode (when encoded), preprocess and im2col this thread's images of the
 * chunk starting at `first`: patch (gy, gx) of image b is row
 * b * grid^2 + gy * grid + gx, element (ch, ky, kx) at ch p^2 + ky p + kx. */
static void step_prepare(vit_run_t *r, uint32_t tid, size_t first, uint32_t nb)
{
	const embed_image_model_t *m = r->m;
	const embed_vit_config_t *c = &m->cfg;
	uint32_t S = c->image, p = c->patch, g = c->grid, in = 3 * p * p;
	float *chw = r->chw + tid * r->chw_stride;
	for (uint32_t b = tid; b < nb; b += r->team.size) {
		size_t idx = first + b;
		uint8_t *dec = NULL;
		const uint8_t *rgb;
		uint32_t w, h;
		vela_err_t e;
		int rc = 0;
		if (r->bufs != NULL) {
			rc = embed_image_decode(r->bufs[idx], r->lens[idx], &dec, &w, &h, &e);
			rgb = dec;
		} else {
			rgb = r->rgb[idx], w = r->ws[idx], h = r->hs[idx];
		}
		if (rc == 0 && embed_image_preprocess(rgb, w, h, S, m->mean, m->std, chw) != 0)
			rc = vela_err_set(&e, VELA_ENOMEM, "out of memory resizing %ux%u", w, h);
		free(dec);
		if (rc != 0) {
			run_fail(r, rc, idx, e.msg);
			continue;
		}
		for (uint32_t gy = 0; gy < g; gy++)
			for (uint32_t gx = 0; gx < g; gx++) {
				float *row = r->cols + ((size_t)b * g * g + gy * g + gx) * in;
				for (uint32_t ch = 0; ch < 3; ch++)
					for (uint32_t ky = 0; ky < p; ky++)
						memcpy(row + (ch * p + ky) * p,
						       chw + ((size_t)ch * S + gy * p + ky) * S + gx * p,
						       p * sizeof(float));
			}
	}
}

/* y[0..rows) = x W^T + b over this thread's columns, then the activation. */
static void step_linear(const vit_run_t *r, uint32_t tid, const embed_linear_t *l,
			const float *x, uint32_t rows, float *y, bool act)
{
	const embed_image_model_t *m = r->m;
	uint32_t c0, c1;
	embed_team_share(&r->team, tid, l->out, m->k->col_align, &c0, &c1);
	if (c0 >= c1 || rows == 0)
		return;
	m->k->linear(l, x, rows, y, l->out, c0, c1);
	if (act)
		for (uint32_t i = 0; i < rows; i++) {
			float *v = y + (size_t)i * l->out + c0;
			if (m->gelu_erf)
				m->k->gelu(v, c1 - c0);
			else
				embed_quick_gelu(v, c1 - c0);
		}
}

/* Class token and patches plus positions, then pre_layrnorm; by rows. */
static void step_embed(const vit_run_t *r, uint32_t tid, uint32_t nb)
{
	const embed_image_model_t *m = r->m;
	uint32_t H = m->cfg.hidden, L = m->cfg.tokens, r0, r1;
	embed_team_share(&r->team, tid, nb * L, 1, &r0, &r1);
	for (uint32_t t = r0; t < r1; t++) {
		uint32_t b = t / L, i = t % L;
		const float *src = i == 0 ? m->cls : r->big + ((size_t)b * (L - 1) + i - 1) * H;
		const float *pe = m->pos + (size_t)i * H;
		float *row = r->x + (size_t)t * H;
		for (uint32_t d = 0; d < H; d++)
			row[d] = src[d] + pe[d];
	}
	if (r0 < r1)
		m->k->layernorm(r->x + (size_t)r0 * H, NULL, r1 - r0, H, m->pre_g, m->pre_b,
				m->cfg.ln_eps);
}

/* x += tmp (when `add`), then tmp = LN(x) with (g, b); by rows. */
static void step_res_ln(const vit_run_t *r, uint32_t tid, uint32_t T, bool add, const float *g,
			const float *b)
{
	const embed_image_model_t *m = r->m;
	uint32_t H = m->cfg.hidden, r0, r1;
	embed_team_share(&r->team, tid, T, 1, &r0, &r1);
	if (r0 >= r1)
		return;
	float *x = r->x + (size_t)r0 * H, *t = r->tmp + (size_t)r0 * H;
	size_t n = (size_t)(r1 - r0) * H;
	for (size_t i = 0; i < n; i++) {
		if (add)
			x[i] += t[i];
		t[i] = x[i];
	}
	m->k->layernorm(t, NULL, r1 - r0, H, g, b, m->cfg.ln_eps);
}

/* Attention of this thread's (image, head) pairs. */
static void step_attend(const vit_run_t *r, uint32_t tid, uint32_t nb, const float *qkv,
			float *ctx)
{
	const embed_image_model_t *m = r->m;
	uint32_t H = m->cfg.hidden, heads = m->cfg.heads, L = m->cfg.tokens;
	float scale = 1.0f / sqrtf((float)(H / heads));
	float *att = r->att + tid * r->att_stride;
	for (size_t i = tid; i < (size_t)nb * heads; i += r->team.size) {
		size_t b = i / heads;
		uint32_t hd = (uint32_t)(i % heads);
		m->k->attend(qkv + b * L * 3 * H, L, H, heads, hd, hd + 1, scale, att,
			     ctx + b * L * H);
	}
}

/* The last residual of each class token, then post_layernorm; by images. */
static void step_pool(const vit_run_t *r, uint32_t tid, uint32_t nb)
{
	const embed_image_model_t *m = r->m;
	uint32_t H = m->cfg.hidden, L = m->cfg.tokens, b0, b1;
	embed_team_share(&r->team, tid, nb, 1, &b0, &b1);
	for (uint32_t b = b0; b < b1; b++) {
		const float *x = r->x + (size_t)b * L * H, *t = r->tmp + (size_t)b * L * H;
		float *dst = r->pooled + (size_t)b * H;
		for (uint32_t d = 0; d < H; d++)
			dst[d] = x[d] + t[d];
	}
	if (b0 < b1)
		m->k->layernorm(r->pooled + (size_t)b0 * H, NULL, b1 - b0, H, m->post_g, m->post_b,
				m->cfg.ln_eps);
}

/* L2 normalisation of this thread's projected vectors into the output. */
static void step_normalise(const vit_run_t *r, uint32_t tid, size_t first, uint32_t nb)
{
	uint32_t P = r->m->cfg.proj, b0, b1;
	embed_team_share(&r->team, tid, nb, 1, &b0, &b1);
	for (uint32_t b = b0; b < b1; b++) {
		const float *v = r->proj + (size_t)b * P;
		double nrm = 0;
		for (uint32_t d = 0; d < P; d++)
			nrm += (double)v[d] * v[d];
		nrm = sqrt(nrm);
		nrm = nrm > 1e-12 ? nrm : 1e-12;
		for (uint32_t d = 0; d < P; d++)
			r->out[(first + b) * P + d] = (float)(v[d] / nrm);
	}
}

/* The whole call as one team member sees it, chunk after chunk. */
static void vit_member(void *arg, uint32_t tid)
{
	vit_run_t *r = arg;
	const embed_image_model_t *m = r->m;
	const embed_vit_config_t *c = &m->cfg;
	uint32_t H = c->hidden, L = c->tokens, np = c->grid * c->grid;
	for (size_t first = 0; first < r->n; first += r->B) {
		uint32_t nb = (uint32_t)(r->n - first < r->B ? r->n - first : r->B), T = nb * L;
		float *qkv = r->big, *ctx = r->big + (size_t)T * 3 * H;
		step_prepare(r, tid, first, nb);
		embed_team_sync(&r->team);
		if (atomic_load(&r->rc) != 0)
			return; /* every member sees the same value after the barrier */
		step_linear(r, tid, &m->patch, r->cols, nb * np, r->big, false);
		embed_team_sync(&r->team);
		step_embed(r, tid, nb);
		embed_team_sync(&r->team);
		for (uint32_t l = 0; l < c->layers; l++) {
			const embed_layer_t *Ly = &m->layer[l];
			step_res_ln(r, tid, T, l > 0, Ly->ln1_g, Ly->ln1_b);
			embed_team_sync(&r->team);
			step_linear(r, tid, &Ly->qkv, r->tmp, T, qkv, false);
			embed_team_sync(&r->team);
			step_attend(r, tid, nb, qkv, ctx);
			embed_team_sync(&r->team);
			step_linear(r, tid, &Ly->attn_out, ctx, T, r->tmp, false);
			embed_team_sync(&r->team);
			step_res_ln(r, tid, T, true, Ly->ln2_g, Ly->ln2_b);
			embed_team_sync(&r->team);
			step_linear(r, tid, &Ly->ffn_in, r->tmp, T, r->big, true);
			embed_team_sync(&r->team);
			step_linear(r, tid, &Ly->ffn_out, r->big, T, r->tmp, false);
			embed_team_sync(&r->team);
		}
		step_pool(r, tid, nb);
		embed_team_sync(&r->team);
		step_linear(r, tid, &m->proj, r->pooled, nb, r->proj, false);
		embed_team_sync(&r->team);
		step_normalise(r, tid, first, nb);
		embed_team_sync(&r->team); /* the next chunk reuses every buffer */
	}
}

static void run_free(vit_run_t *r)
{
	free(r->x);
	free(r->tmp);
	free(r->big);
	free(r->cols);
	free(r->pooled);
	free(r->proj);
	free(r->chw);
	free(r->att);
}

static float *scratch(size_t n)
{
	return vela_aligned_alloc(64, vela_mul_size(n + ROW_PAD, sizeof(float)));
}

static int run_alloc(vit_run_t *r)
{
	const embed_vit_config_t *c = &r->m->cfg;
	size_t T = (size_t)r->B * c->tokens, np = (size_t)c->grid * c->grid;
	size_t big = 4 * (size_t)c->hidden > c->intermediate ? 4 * (size_t)c->hidden
							     : c->intermediate;
	r->chw_stride = (3 * (size_t)c->image * c->image + 15) / 16 * 16;
	r->att_stride = (embed_attend_scratch(c->tokens, c->hidden / c->heads) + 15) / 16 * 16;
	r->x = scratch(T * c->hidden);
	r->tmp = scratch(T * c->hidden);
	r->big = scratch(T * big);
	r->cols = scratch(r->B * np * 3 * c->patch * c->patch);
	r->pooled = scratch((size_t)r->B * c->hidden);
	r->proj = scratch((size_t)r->B * c->proj);
	r->chw = scratch(r->chw_stride * r->team.size);
	r->att = scratch(r->att_stride * r->team.size);
	if (r->x && r->tmp && r->big && r->cols && r->pooled && r->proj && r->chw && r->att)
		return 0;
	run_free(r);
	return VELA_ENOMEM;
}

static int vit_run(vit_run_t *r, vela_err_t *err)
{
	const embed_image_model_t *m = r->m;
	if (r->n == 0)
		return 0;
	r->B = (uint32_t)(r->n < m->batch_images ? r->n : m->batch_images);
	r->team.size = m->threads;
	if (run_alloc(r) != 0)
		return vela_err_set(err, VELA_ENOMEM, "embed: out of memory for %u images", r->B);
	atomic_init(&r->rc, 0);
	pthread_mutex_init(&r->lock, NULL);
	embed_team_run(&r->team, vit_member, r);
	pthread_mutex_destroy(&r->lock);
	run_free(r);
	int rc = atomic_load(&r->rc);
	if (rc != 0 && err != NULL)
		*err = r->err;
	return rc;
}

int embed_image_batch(const embed_image_model_t *m, const void *const *bufs, const size_t *lens,
		      size_t n, float *out, vela_err_t *err)
{
	if (m == NULL || (n > 0 && (bufs == NULL || lens == NULL || out == NULL)))
		return vela_err_set(err, VELA_EINVAL, "embed: bad argument");
	for (size_t i = 0; i < n; i++)
		if (bufs[i] == NULL && lens[i] > 0)
			return vela_err_set(err, VELA_EINVAL, "embed: image %zu is NULL", i);
	vit_run_t r = {.m = m, .bufs = bufs, .lens = lens, .n = n, .out = out};
	return vit_run(&r, err);
}

int embed_image_batch_rgb(const embed_image_model_t *m, const uint8_t *const *rgb,
			  const uint32_t *widths, const uint32_t *heights, size_t n, float *out,
			  vela_err_t *err)
{
	if (m == NULL ||
	    (n > 0 && (rgb == NULL || widths == NULL || heights == NULL || out == NULL)))
		return vela_err_set(err, VELA_EINVAL, "embed: bad argument");
	for (size_t i = 0; i < n; i++) {
		uint64_t w = widths[i], h = heights[i];
		if (rgb[i] == NULL || w == 0 || h == 0)
			return vela_err_set(err, VELA_EINVAL, "embed: image %zu is empty (%llux%llu)",
					    i, (unsigned long long)w, (unsigned long long)h);
		if (w > EMBED_IMAGE_SIDE_MAX || h > EMBED_IMAGE_SIDE_MAX ||
		    w * h > EMBED_IMAGE_PIXELS_MAX)
			return vela_err_set(err, VELA_ELIMIT, "embed: image %zu of %llux%llu pixels "
					    "is over the limit", i, (unsigned long long)w,
					    (unsigned long long)h);
	}
	vit_run_t r = {.m = m, .rgb = rgb, .ws = widths, .hs = heights, .n = n, .out = out};
	return vit_run(&r, err);
}
