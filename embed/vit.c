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
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "embed/vit_impl.h"

#define CONFIG_BYTES_MAX (1u << 20)
/* Kernels may read a panel's width past the end of a row. */
#define ROW_PAD 64u

/* ------------------------------------------------------------ config */

static int json_file(const char *dir, const char *name, bool optional, json_t **root,
		     vela_err_t *err)
{
	char path[4096];
	*root = NULL;
	if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path))
		return vela_err_set(err, VELA_EINVAL, "embed: model path too long");
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		if (optional && errno == ENOENT)
			return 0;
		return vela_err_set(err, VELA_EIO, "embed: cannot open %s: %s", path,
				    strerror(errno));
	}
	char *buf = malloc(CONFIG_BYTES_MAX + 1);
	size_t len = buf ? fread(buf, 1, CONFIG_BYTES_MAX + 1, f) : 0;
	fclose(f);
	if (buf == NULL)
		return vela_err_set(err, VELA_ENOMEM, "embed: out of memory");
	json_error_t je;
	if (len <= CONFIG_BYTES_MAX)
		*root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
	free(buf);
	if (len > CONFIG_BYTES_MAX)
		return vela_err_set(err, VELA_ECORRUPT, "embed: %s is over %u bytes", path,
				    CONFIG_BYTES_MAX);
	if (*root == NULL)
		return vela_err_set(err, VELA_ECORRUPT, "embed: %s: %s (line %d)", path, je.text,
				    je.line);
	if (!json_is_object(*root)) {
		json_decref(*root);
		*root = NULL;
		return vela_err_set(err, VELA_ECORRUPT, "embed: %s is not a JSON object", path);
	}
	return 0;
}

/* An integer field in [lo, hi], `def` when absent (HF's default). */
static int cfg_u32(const json_t *o, const char *key, uint32_t def, uint32_t lo, uint32_t hi,
		   uint32_t *out, vela_err_t *err)
{
	const json_t *j = json_object_get(o, key);
	long long v = def;
	if (j != NULL) {
		if (!json_is_integer(j))
			return vela_err_set(err, VELA_ECORRUPT, "embed: config %s is not an integer",
					    key);
		v = json_integer_value(j);
	}
	if (v < lo || v > hi)
		return vela_err_set(err, VELA_ECORRUPT, "embed: config %s = %lld (allowed %u..%u)",
				    key, v, lo, hi);
	*out = (uint32_t)v;
	return 0;
}

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
	if ((rc = cfg_u32(o, "hidden_size", 768, 8, 8192, &c->hidden, err)) != 0 ||
	    (rc = cfg_u32(o, "num_hidden_layers", 12, 1, 128, &c->layers, err)) != 0 ||
	    (rc = cfg_u32(o, "num_attention_heads", 12, 1, 256, &c->heads, err)) != 0 ||
	    (rc = cfg_u32(o, "intermediate_size", 3072, 8, 65536, &c->intermediate, err)) != 0 ||
	    (rc = cfg_u32(o, "image_size", 224, 8, 2048, &c->image, err)) != 0 ||
	    (rc = cfg_u32(o, "patch_size", 32, 1, 256, &c->patch, err)) != 0)
		return rc;
	/* CLIPModel sizes visual_projection from the top-level projection_dim;
	 * CLIPVisionModelWithProjection from its own (the same key). */
	const json_t *po = json_object_get(root, "projection_dim") ? root : o;
	if ((rc = cfg_u32(po, "projection_dim", 512, 1, 65536, &c->proj, err)) != 0)
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
	const json_t *eps = json_object_get(o, "layer_norm_eps");
	c->ln_eps = 1e-5f;
	if (eps != NULL) {
		if (!json_is_number(eps) || !(json_number_value(eps) > 0) ||
		    json_number_value(eps) > 1e-2)
			return vela_err_set(err, VELA_ECORRUPT, "embed: bad layer_norm_eps");
		c->ln_eps = (float)json_number_value(eps);
	}
	return 0;
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

static float *falloc(size_t n)
{
	float *p = vela_aligned_alloc(64, vela_mul_size(n + ROW_PAD, sizeof(float)));
	if (p != NULL)
		memset(p, 0, (n + ROW_PAD) * sizeof(float));
	return p;
}

/* Tensor `name` with exactly the shape dims[0..ndim), converted to floats
 * into `dst` (numel floats). */
static int tensor_read(embed_st_t *st, const char *name, uint32_t ndim, const uint64_t *dims,
		       float *dst, vela_err_t *err)
{
	const embed_st_tensor_t *t = embed_st_find(st, name);
	if (t == NULL)
		return vela_err_set(err, VELA_ECORRUPT, "embed: model.safetensors has no tensor %s",
				    name);
	bool ok = t->ndim == ndim;
	uint64_t n = 1;
	for (uint32_t i = 0; i < ndim; i++) {
		ok = ok && t->shape[i] == dims[i];
		n *= dims[i];
	}
	if (!ok) {
		char want[96] = "";
		for (uint32_t i = 0; i < ndim; i++)
			snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s%llu",
				 i ? ", " : "", (unsigned long long)dims[i]);
		return vela_err_set(err, VELA_ECORRUPT, "embed: tensor %s has the wrong shape (want "
				    "[%s])", name, want);
	}
	return embed_st_to_f32(t, dst, (size_t)n, err);
}

/* A new float array from a tensor of shape [d0] or [d0, d1] (d1 0). */
static int load_plain(embed_st_t *st, const char *name, uint64_t d0, uint64_t d1, float **out,
		      vela_err_t *err)
{
	uint64_t dims[2] = {d0, d1};
	*out = falloc((size_t)(d0 * (d1 ? d1 : 1)));
	if (*out == NULL)
		return vela_err_set(err, VELA_ENOMEM, "embed: out of memory");
	return tensor_read(st, name, d1 ? 2 : 1, dims, *out, err);
}

/* A linear layer packed for the kernel table from `parts` stacked
 * [out, in] weights `<stem>.weight` (`<stem>.bias` too when `bias`), or,
 * with stems NULL, from `w` already read (no bias). */
static int load_linear(embed_st_t *st, const embed_kernels_t *k, const char *const *stems,
		       int parts, bool bias, uint32_t out, uint32_t in, const float *w0,
		       embed_linear_t *l, vela_err_t *err)
{
	char name[256];
	l->in = in;
	l->out = out * (uint32_t)parts;
	float *w = stems ? falloc((size_t)l->out * in) : NULL;
	l->b = falloc(l->out + EMBED_COL_PAD);
	l->w = falloc(k->packed_size(l->out, in));
	int rc = ((w || !stems) && l->b && l->w)
			 ? 0
			 : vela_err_set(err, VELA_ENOMEM, "embed: out of memory");
	for (int p = 0; rc == 0 && stems && p < parts; p++) {
		uint64_t dw[2] = {out, in}, db[1] = {out};
		snprintf(name, sizeof(name), "%s.weight", stems[p]);
		rc = tensor_read(st, name, 2, dw, w + (size_t)p * out * in, err);
		snprintf(name, sizeof(name), "%s.bias", stems[p]);
		if (rc == 0 && bias)
			rc = tensor_read(st, name, 1, db, l->b + (size_t)p * out, err);
	}
	if (rc == 0)
		k->pack(stems ? w : w0, l->out, in, l->w);
	free(w);
	return rc;
}

static int load_layer(embed_st_t *st, const embed_image_model_t *m, uint32_t i,
		      embed_vit_layer_t *L, vela_err_t *err)
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
	int rc = load_linear(st, m->k, qkv, 3, true, c->hidden, c->hidden, NULL, &L->qkv, err);
	if (rc == 0)
		rc = load_linear(st, m->k, on, 1, true, c->hidden, c->hidden, NULL, &L->attn_out,
				 err);
	if (rc == 0)
		rc = load_linear(st, m->k, f1n, 1, true, c->intermediate, c->hidden, NULL, &L->fc1,
				 err);
	if (rc == 0)
		rc = load_linear(st, m->k, f2n, 1, true, c->hidden, c->intermediate, NULL, &L->fc2,
				 err);
	const char *sfx[] = {"layer_norm1.weight", "layer_norm1.bias", "layer_norm2.weight",
			     "layer_norm2.bias"};
	float **dst[] = {&L->ln1_g, &L->ln1_b, &L->ln2_g, &L->ln2_b};
	for (int j = 0; rc == 0 && j < 4; j++) {
		snprintf(nm, sizeof(nm), "%s.%u.%s", pre, i, sfx[j]);
		rc = load_plain(st, nm, c->hidden, 0, dst[j], err);
	}
	return rc;
}

static int load_weights(embed_image_model_t *m, embed_st_t *st, vela_err_t *err)
{
	const embed_vit_config_t *c = &m->cfg;
	uint32_t p = c->patch, in = 3 * p * p;
	uint64_t dims[4] = {c->hidden, 3, p, p};
	float *w = falloc((size_t)c->hidden * in);
	int rc = w ? 0 : vela_err_set(err, VELA_ENOMEM, "embed: out of memory");
	/* Conv weight [H, 3, p, p] read flat is the [H, 3 p p] matrix whose
	 * column (ch, ky, kx) meets im2col's element (ch, ky, kx). */
	if (rc == 0)
		rc = tensor_read(st, "vision_model.embeddings.patch_embedding.weight", 4, dims, w,
				 err);
	if (rc == 0)
		rc = load_linear(st, m->k, NULL, 1, false, c->hidden, in, w, &m->patch, err);
	free(w);
	if (rc == 0)
		rc = load_plain(st, "vision_model.embeddings.class_embedding", c->hidden, 0, &m->cls,
				err);
	if (rc == 0)
		rc = load_plain(st, "vision_model.embeddings.position_embedding.weight", c->tokens,
				c->hidden, &m->pos, err);
	if (rc == 0)
		rc = load_plain(st, "vision_model.pre_layrnorm.weight", c->hidden, 0, &m->pre_g, err);
	if (rc == 0)
		rc = load_plain(st, "vision_model.pre_layrnorm.bias", c->hidden, 0, &m->pre_b, err);
	if (rc == 0)
		rc = load_plain(st, "vision_model.post_layernorm.weight", c->hidden, 0, &m->post_g,
				err);
	if (rc == 0)
		rc = load_plain(st, "vision_model.post_layernorm.bias", c->hidden, 0, &m->post_b,
				err);
	const char *pn[] = {"visual_projection"};
	if (rc == 0)
		rc = load_linear(st, m->k, pn, 1, false, c->proj, c->hidden, NULL, &m->proj, err);
	m->layer = rc == 0 ? calloc(c->layers, sizeof(embed_vit_layer_t)) : NULL;
	if (rc == 0 && m->layer == NULL)
		rc = vela_err_set(err, VELA_ENOMEM, "embed: out of memory");
	for (uint32_t i = 0; rc == 0 && i < c->layers; i++)
		rc = load_layer(st, m, i, &m->layer[i], err);
	return rc;
}

/* ------------------------------------------------------------ open/close */

static void linear_free(embed_linear_t *l)
{
	free(l->w);
	free(l->b);
}

void embed_image_model_close(embed_image_model_t *m)
{
	if (m == NULL)
		return;
	for (uint32_t i = 0; m->layer != NULL && i < m->cfg.layers; i++) {
		embed_vit_layer_t *L = &m->layer[i];
		linear_free(&L->qkv);
		linear_free(&L->attn_out);
		linear_free(&L->fc1);
		linear_free(&L->fc2);
		free(L->ln1_g);
		free(L->ln1_b);
		free(L->ln2_g);
		free(L->ln2_b);
	}
	free(m->layer);
	linear_free(&m->patch);
	linear_free(&m->proj);
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
	m->threads = o->threads ? o->threads : EMBED_THREADS_DEFAULT;
	if (m->batch_images < EMBED_IMAGE_BATCH_MIN || m->batch_images > EMBED_IMAGE_BATCH_MAX)
		return vela_err_set(err, VELA_EINVAL, "embed: batch_images %u out of range (%u..%u)",
				    m->batch_images, EMBED_IMAGE_BATCH_MIN, EMBED_IMAGE_BATCH_MAX);
	if (m->threads < EMBED_THREADS_MIN || m->threads > EMBED_THREADS_MAX)
		return vela_err_set(err, VELA_EINVAL, "embed: threads %u out of range (%u..%u)",
				    m->threads, EMBED_THREADS_MIN, EMBED_THREADS_MAX);
	m->k = embed_kernels_get(o->kernel);
	if (m->k == NULL)
		return vela_err_set(err, VELA_EUNSUPPORTED, "embed: this CPU lacks the requested "
				    "kernels");
	return 0;
}

static int model_load(embed_image_model_t *m, const char *dir, const embed_image_opts_t *opts,
		      vela_err_t *err)
{
	json_t *o;
	char path[4096];
	int rc = json_file(dir, "config.json", false, &o, err);
	if (rc != 0)
		return rc;
	rc = config_parse(o, &m->cfg, &m->gelu_erf, err);
	json_decref(o);
	const float mean[3] = EMBED_CLIP_MEAN, std[3] = EMBED_CLIP_STD;
	memcpy(m->mean, mean, sizeof(mean));
	memcpy(m->std, std, sizeof(std));
	if (rc == 0 && (rc = json_file(dir, "preprocessor_config.json", true, &o, err)) == 0 && o) {
		rc = preproc_parse(o, m->mean, m->std, err);
		json_decref(o);
	}
	if (rc == 0)
		rc = opts_apply(m, opts, err);
	embed_st_t *st = NULL;
	if (rc == 0 && snprintf(path, sizeof(path), "%s/model.safetensors", dir) >=
			       (int)sizeof(path))
		rc = vela_err_set(err, VELA_EINVAL, "embed: model path too long");
	if (rc == 0)
		rc = embed_st_open(path, &st, err);
	if (rc == 0)
		rc = load_weights(m, st, err);
	embed_st_close(st);
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
	uint32_t team, B;
	float *x, *tmp, *big, *cols, *pooled, *proj, *chw, *att;
	size_t chw_stride, att_stride;
	atomic_uint arrived, phase, go;
	atomic_int rc;
	pthread_mutex_t lock;
	vela_err_t err; /* the first failure's detail */
} vit_run_t;

/* Sense-counting barrier: spin briefly (steps are short), then yield. */
static void team_sync(vit_run_t *r)
{
	if (r->team == 1)
		return;
	unsigned ph = atomic_load_explicit(&r->phase, memory_order_acquire);
	if (atomic_fetch_add_explicit(&r->arrived, 1, memory_order_acq_rel) == r->team - 1) {
		atomic_store_explicit(&r->arrived, 0, memory_order_relaxed);
		atomic_fetch_add_explicit(&r->phase, 1, memory_order_release);
		return;
	}
	for (unsigned spins = 0; atomic_load_explicit(&r->phase, memory_order_acquire) == ph;
	     spins++) {
		if (spins < 4096)
			__builtin_ia32_pause();
		else
			sched_yield();
	}
}

/* This thread's share [*lo, *hi) of `n` items in blocks of `align`. */
static void team_share(const vit_run_t *r, uint32_t tid, uint32_t n, uint32_t align,
		       uint32_t *lo, uint32_t *hi)
{
	uint32_t per = (n + r->team - 1) / r->team;
	per = (per + align - 1) / align * align;
	*lo = tid * per < n ? tid * per : n;
	*hi = *lo + per < n ? *lo + per : n;
}

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
	for (uint32_t b = tid; b < nb; b += r->team) {
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
	team_share(r, tid, l->out, m->k->col_align, &c0, &c1);
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
	team_share(r, tid, nb * L, 1, &r0, &r1);
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
	team_share(r, tid, T, 1, &r0, &r1);
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
	for (size_t i = tid; i < (size_t)nb * heads; i += r->team) {
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
	team_share(r, tid, nb, 1, &b0, &b1);
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
	team_share(r, tid, nb, 1, &b0, &b1);
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
static void vit_member(vit_run_t *r, uint32_t tid)
{
	const embed_image_model_t *m = r->m;
	const embed_vit_config_t *c = &m->cfg;
	uint32_t H = c->hidden, L = c->tokens, np = c->grid * c->grid;
	for (size_t first = 0; first < r->n; first += r->B) {
		uint32_t nb = (uint32_t)(r->n - first < r->B ? r->n - first : r->B), T = nb * L;
		float *qkv = r->big, *ctx = r->big + (size_t)T * 3 * H;
		step_prepare(r, tid, first, nb);
		team_sync(r);
		if (atomic_load(&r->rc) != 0)
			return; /* every member sees the same value after the barrier */
		step_linear(r, tid, &m->patch, r->cols, nb * np, r->big, false);
		team_sync(r);
		step_embed(r, tid, nb);
		team_sync(r);
		for (uint32_t l = 0; l < c->layers; l++) {
			const embed_vit_layer_t *Ly = &m->layer[l];
			step_res_ln(r, tid, T, l > 0, Ly->ln1_g, Ly->ln1_b);
			team_sync(r);
			step_linear(r, tid, &Ly->qkv, r->tmp, T, qkv, false);
			team_sync(r);
			step_attend(r, tid, nb, qkv, ctx);
			team_sync(r);
			step_linear(r, tid, &Ly->attn_out, ctx, T, r->tmp, false);
			team_sync(r);
			step_res_ln(r, tid, T, true, Ly->ln2_g, Ly->ln2_b);
			team_sync(r);
			step_linear(r, tid, &Ly->fc1, r->tmp, T, r->big, true);
			team_sync(r);
			step_linear(r, tid, &Ly->fc2, r->big, T, r->tmp, false);
			team_sync(r);
		}
		step_pool(r, tid, nb);
		team_sync(r);
		step_linear(r, tid, &m->proj, r->pooled, nb, r->proj, false);
		team_sync(r);
		step_normalise(r, tid, first, nb);
		team_sync(r); /* the next chunk reuses every buffer */
	}
}

typedef struct {
	vit_run_t *r;
	uint32_t tid;
} member_t;

static void *member_main(void *arg)
{
	member_t *mb = arg;
	while (!atomic_load_explicit(&mb->r->go, memory_order_acquire))
		sched_yield();
	vit_member(mb->r, mb->tid);
	return NULL;
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
	r->chw = scratch(r->chw_stride * r->team);
	r->att = scratch(r->att_stride * r->team);
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
	r->team = m->threads;
	if (run_alloc(r) != 0)
		return vela_err_set(err, VELA_ENOMEM, "embed: out of memory for %u images", r->B);
	atomic_init(&r->arrived, 0);
	atomic_init(&r->phase, 0);
	atomic_init(&r->go, 0);
	atomic_init(&r->rc, 0);
	pthread_mutex_init(&r->lock, NULL);
	pthread_t tid[EMBED_THREADS_MAX];
	member_t mb[EMBED_THREADS_MAX];
	uint32_t started = 1;
	for (; started < r->team; started++) {
		mb[started] = (member_t){r, started};
		if (pthread_create(&tid[started], NULL, member_main, &mb[started]) != 0)
			break;
	}
	r->team = started; /* fewer threads when one could not start: slower, not wrong */
	atomic_store_explicit(&r->go, 1, memory_order_release);
	vit_member(r, 0);
	for (uint32_t i = 1; i < started; i++)
		pthread_join(tid[i], NULL);
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
