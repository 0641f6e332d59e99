/* Loading helpers the text encoder (model.c) and the image encoder (vit.c)
 * share: JSON side files, config fields, safetensors tensors checked
 * against the shapes the config implies, and linear layers packed for the
 * kernel table. */
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "embed/embed_impl.h"

/* Side files are small; anything larger is not a config. */
#define CONFIG_BYTES_MAX (1u << 20)

/* ------------------------------------------------------------ JSON files */

int embed_json_load(const char *dir, const char *name, bool optional, json_t **root,
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

int embed_json_get_u32(const json_t *o, const char *key, long long def, long long lo,
		       long long hi, uint32_t *out, vela_err_t *err)
{
	const json_t *j = json_object_get(o, key);
	long long v = def;
	if (j != NULL) {
		if (!json_is_integer(j))
			return vela_err_set(err, VELA_ECORRUPT, "embed: config %s is not an integer",
					    key);
		v = json_integer_value(j);
	} else if (def < 0) {
		return vela_err_set(err, VELA_ECORRUPT, "embed: config has no %s", key);
	}
	if (v < lo || v > hi)
		return vela_err_set(err, VELA_ECORRUPT, "embed: config %s = %lld (allowed %lld..%lld)",
				    key, v, lo, hi);
	*out = (uint32_t)v;
	return 0;
}

int embed_json_get_eps(const json_t *o, float def, float *out, vela_err_t *err)
{
	const json_t *eps = json_object_get(o, "layer_norm_eps");
	*out = def;
	if (eps != NULL) {
		if (!json_is_number(eps) || !(json_number_value(eps) > 0) ||
		    json_number_value(eps) > 1e-2)
			return vela_err_set(err, VELA_ECORRUPT, "embed: bad layer_norm_eps");
		*out = (float)json_number_value(eps);
	}
	return 0;
}

/* ------------------------------------------------------------ tensors */

float *embed_floats_alloc(size_t n, size_t pad)
{
	size_t total = n + pad ? n + pad : 1;
	float *p = vela_aligned_alloc(64, vela_mul_size(total, sizeof(float)));
	if (p != NULL)
		memset(p, 0, total * sizeof(float));
	return p;
}

/* Find prefix + `name` (a LayerNorm's weight/bias also as the old
 * gamma/beta) and check its shape is exactly dims[0..ndim). */
static int tensor_find(const embed_loader_t *ld, const char *name, uint32_t ndim,
		       const uint64_t *dims, const embed_st_tensor_t **out, vela_err_t *err)
{
	char full[EMBED_ST_NAME_MAX + 1], alt[EMBED_ST_NAME_MAX + 1];
	if (snprintf(full, sizeof(full), "%s%s", ld->prefix, name) >= (int)sizeof(full))
		return vela_err_set(err, VELA_ECORRUPT, "tensor name %s%s is too long", ld->prefix,
				    name);
	const embed_st_tensor_t *t = embed_st_find(ld->st, full);
	const char *dot = strrchr(full, '.');
	if (t == NULL && dot != NULL && strstr(full, "LayerNorm") != NULL) {
		size_t stem = (size_t)(dot - full);
		const char *suffix = strcmp(dot, ".weight") == 0 ? ".gamma" : ".beta";
		snprintf(alt, sizeof(alt), "%.*s%s", (int)stem, full, suffix);
		t = embed_st_find(ld->st, alt);
	}
	if (t == NULL)
		return vela_err_set(err, VELA_ECORRUPT, "embed: model.safetensors has no tensor %s",
				    full);
	bool ok = t->ndim == ndim;
	for (uint32_t i = 0; i < ndim; i++)
		ok = ok && t->shape[i] == dims[i];
	if (!ok) {
		char want[96] = "";
		for (uint32_t i = 0; i < ndim; i++)
			snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s%llu",
				 i ? ", " : "", (unsigned long long)dims[i]);
		return vela_err_set(err, VELA_ECORRUPT, "embed: tensor %s has the wrong shape (want "
				    "[%s])", full, want);
	}
	*out = t;
	return 0;
}

static size_t numel(uint32_t ndim, const uint64_t *dims)
{
	uint64_t n = 1;
	for (uint32_t i = 0; i < ndim; i++)
		n *= dims[i];
	return (size_t)n;
}

int embed_tensor_read(const embed_loader_t *ld, const char *name, uint32_t ndim,
		      const uint64_t *dims, float *dst, vela_err_t *err)
{
	const embed_st_tensor_t *t;
	int rc = tensor_find(ld, name, ndim, dims, &t, err);
	return rc != 0 ? rc : embed_st_to_f32(t, dst, numel(ndim, dims), err);
}

int embed_tensor_load(const embed_loader_t *ld, const char *name, uint64_t d0, uint64_t d1,
		      float **out, vela_err_t *err)
{
	uint64_t dims[2] = {d0, d1};
	uint32_t ndim = d1 ? 2 : 1;
	const embed_st_tensor_t *t;
	int rc = tensor_find(ld, name, ndim, dims, &t, err);
	if (rc != 0)
		return rc;
	size_t n = numel(ndim, dims);
	*out = embed_floats_alloc(n, ld->pad);
	if (*out == NULL)
		return vela_err_set(err, VELA_ENOMEM, "embed: out of memory");
	return embed_st_to_f32(t, *out, n, err);
}

int embed_linear_load(const embed_loader_t *ld, const char *const *stems, int parts, bool bias,
		      uint32_t out, uint32_t in, const float *w0, embed_linear_t *l,
		      vela_err_t *err)
{
	char name[256];
	l->in = in;
	l->out = out * (uint32_t)parts;
	float *w = stems ? embed_floats_alloc((size_t)l->out * in, ld->pad) : NULL;
	l->b = embed_floats_alloc(l->out + EMBED_COL_PAD, ld->pad);
	l->w = embed_floats_alloc(ld->k->packed_size(l->out, in), ld->pad);
	int rc = ((w || !stems) && l->b && l->w)
			 ? 0
			 : vela_err_set(err, VELA_ENOMEM, "embed: out of memory");
	for (int p = 0; rc == 0 && stems && p < parts; p++) {
		const embed_st_tensor_t *tw = NULL, *tb = NULL;
		uint64_t dw[2] = {out, in}, db[1] = {out};
		snprintf(name, sizeof(name), "%s.weight", stems[p]);
		rc = tensor_find(ld, name, 2, dw, &tw, err);
		snprintf(name, sizeof(name), "%s.bias", stems[p]);
		if (rc == 0 && bias)
			rc = tensor_find(ld, name, 1, db, &tb, err);
		if (rc == 0)
			rc = embed_st_to_f32(tw, w + (size_t)p * out * in, (size_t)out * in, err);
		if (rc == 0 && bias)
			rc = embed_st_to_f32(tb, l->b + (size_t)p * out, out, err);
	}
	if (rc == 0)
		ld->k->pack(stems ? w : w0, l->out, in, l->w);
	free(w);
	return rc;
}

void embed_linear_free(embed_linear_t *l)
{
	free(l->w);
	free(l->b);
}

void embed_layer_free(embed_layer_t *L)
{
	embed_linear_free(&L->qkv);
	embed_linear_free(&L->attn_out);
	embed_linear_free(&L->ffn_in);
	embed_linear_free(&L->ffn_out);
	free(L->ln1_g);
	free(L->ln1_b);
	free(L->ln2_g);
	free(L->ln2_b);
}

/* ------------------------------------------------------------ options */

int embed_opts_apply(uint32_t threads, embed_kernel_t kernel, uint32_t *threads_out,
		     const embed_kernels_t **k, vela_err_t *err)
{
	*threads_out = threads ? threads : EMBED_THREADS_DEFAULT;
	if (*threads_out < EMBED_THREADS_MIN || *threads_out > EMBED_THREADS_MAX)
		return vela_err_set(err, VELA_EINVAL, "embed: threads %u out of range (%u..%u)",
				    *threads_out, EMBED_THREADS_MIN, EMBED_THREADS_MAX);
	*k = embed_kernels_get(kernel);
	if (*k == NULL)
		return vela_err_set(err, VELA_EUNSUPPORTED, "embed: this CPU lacks the requested "
				    "kernels");
	return 0;
}
