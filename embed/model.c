/* Loading a BERT sentence encoder from a model directory: config.json,
 * model.safetensors, vocab.txt and the sentence-transformers side files
 * (reference/embeddings-and-datasets.md §1.1-§1.2). Weights are converted to
 * float and packed for the chosen kernel table once; nothing stays mapped. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "embed/embed.h"
#include "embed/embed_impl.h"

/* Side files are small; anything larger is not a config. */
#define CONFIG_BYTES_MAX (1u << 20)

/* ------------------------------------------------------------ JSON files */

/* Parse dir/name into *root. A missing optional file leaves *root NULL. */
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

/* An integer field in [lo, hi]; absent: `def` (or an error when def < 0). */
static int json_u32(const json_t *o, const char *key, long long def, long long lo, long long hi,
		    uint32_t *out, vela_err_t *err)
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

/* A string field, when present, must equal one of the accepted values. */
static int json_str_is(const json_t *o, const char *key, const char *want, vela_err_t *err)
{
	const json_t *j = json_object_get(o, key);
	if (j == NULL)
		return 0;
	if (!json_is_string(j) || strcmp(json_string_value(j), want) != 0)
		return vela_err_set(err, VELA_EUNSUPPORTED, "embed: config %s must be \"%s\"", key,
				    want);
	return 0;
}

/* config.json of a BertModel (§1.1); bounds keep every buffer size sane. */
static int config_parse(const json_t *o, embed_config_t *c, vela_err_t *err)
{
	int rc;
	if ((rc = json_str_is(o, "model_type", "bert", err)) != 0 ||
	    (rc = json_str_is(o, "hidden_act", "gelu", err)) != 0 ||
	    (rc = json_str_is(o, "position_embedding_type", "absolute", err)) != 0)
		return rc;
	if ((rc = json_u32(o, "hidden_size", -1, 8, EMBED_POOL_DIM_MAX, &c->hidden, err)) != 0 ||
	    (rc = json_u32(o, "num_hidden_layers", -1, 1, 64, &c->layers, err)) != 0 ||
	    (rc = json_u32(o, "num_attention_heads", -1, 1, 128, &c->heads, err)) != 0 ||
	    (rc = json_u32(o, "intermediate_size", -1, 8, 32768, &c->intermediate, err)) != 0 ||
	    (rc = json_u32(o, "max_position_embeddings", -1, 2, 8192, &c->max_pos, err)) != 0 ||
	    (rc = json_u32(o, "vocab_size", -1, 8, EMBED_VOCAB_SIZE_MAX, &c->vocab, err)) != 0 ||
	    (rc = json_u32(o, "type_vocab_size", 2, 1, 16, &c->type_vocab, err)) != 0)
		return rc;
	if (c->hidden % c->heads != 0 || c->hidden % 8 != 0)
		return vela_err_set(err, VELA_EUNSUPPORTED,
				    "embed: hidden_size %u must be a multiple of 8 and of "
				    "num_attention_heads %u", c->hidden, c->heads);
	const json_t *eps = json_object_get(o, "layer_norm_eps");
	c->ln_eps = 1e-12f;
	if (eps != NULL) {
		if (!json_is_number(eps) || !(json_number_value(eps) > 0) ||
		    json_number_value(eps) > 1e-2)
			return vela_err_set(err, VELA_ECORRUPT, "embed: bad layer_norm_eps");
		c->ln_eps = (float)json_number_value(eps);
	}
	return 0;
}

/* Optional sentence-transformers files: mean pooling, lowercasing, limit. */
static int st_side_files(const char *dir, const embed_config_t *c, uint32_t *max_seq,
			 vela_err_t *err)
{
	json_t *o;
	int rc = json_file(dir, "1_Pooling/config.json", true, &o, err);
	if (rc == 0 && o != NULL) {
		const json_t *mean = json_object_get(o, "pooling_mode_mean_tokens");
		const char *other[] = {"pooling_mode_cls_token", "pooling_mode_max_tokens",
				       "pooling_mode_mean_sqrt_len_tokens"};
		if (!json_is_true(mean))
			rc = vela_err_set(err, VELA_EUNSUPPORTED, "embed: only mean pooling is "
					  "supported (1_Pooling/config.json)");
		for (int i = 0; rc == 0 && i < 3; i++)
			if (json_is_true(json_object_get(o, other[i])))
				rc = vela_err_set(err, VELA_EUNSUPPORTED, "embed: %s is not "
						  "supported", other[i]);
		json_decref(o);
	}
	if (rc == 0 && (rc = json_file(dir, "tokenizer_config.json", true, &o, err)) == 0 && o) {
		const json_t *lc = json_object_get(o, "do_lower_case");
		if (lc != NULL && !json_is_true(lc))
			rc = vela_err_set(err, VELA_EUNSUPPORTED, "embed: only lowercasing "
					  "(uncased) tokenizers are supported");
		json_decref(o);
	}
	*max_seq = c->max_pos < EMBED_MAX_SEQ_DEFAULT ? c->max_pos : EMBED_MAX_SEQ_DEFAULT;
	if (rc == 0 && (rc = json_file(dir, "sentence_bert_config.json", true, &o, err)) == 0 &&
	    o) {
		rc = json_u32(o, "max_seq_length", *max_seq, EMBED_MAX_SEQ_MIN, c->max_pos, max_seq,
			      err);
		json_decref(o);
	}
	return rc;
}

/* ------------------------------------------------------------ tensors */

typedef struct {
	embed_st_t *st;
	const embed_kernels_t *k;
	char prefix[8]; /* "" or "bert." */
} loader_t;

static void *falloc(size_t n)
{
	float *p = vela_aligned_alloc(64, vela_mul_size(n ? n : 1, sizeof(float)));
	if (p != NULL)
		memset(p, 0, (n ? n : 1) * sizeof(float));
	return p;
}

/* Find `name` (with the checkpoint's prefix; LayerNorm weight/bias also as
 * the old gamma/beta) and check its shape. */
static const embed_st_tensor_t *tensor_get(const loader_t *ld, const char *name, uint64_t d0,
					   uint64_t d1, vela_err_t *err)
{
	char full[256], alt[256];
	snprintf(full, sizeof(full), "%s%s", ld->prefix, name);
	const embed_st_tensor_t *t = embed_st_find(ld->st, full);
	const char *dot = strrchr(full, '.');
	if (t == NULL && dot != NULL && strstr(full, "LayerNorm") != NULL) {
		size_t stem = (size_t)(dot - full);
		const char *suffix = strcmp(dot, ".weight") == 0 ? ".gamma" : ".beta";
		snprintf(alt, sizeof(alt), "%.*s%s", (int)stem, full, suffix);
		t = embed_st_find(ld->st, alt);
	}
	if (t == NULL) {
		vela_err_set(err, VELA_ECORRUPT, "embed: model.safetensors has no tensor %s", full);
		return NULL;
	}
	bool ok = d1 ? t->ndim == 2 && t->shape[0] == d0 && t->shape[1] == d1
		     : t->ndim == 1 && t->shape[0] == d0;
	if (!ok) {
		if (d1)
			vela_err_set(err, VELA_ECORRUPT, "embed: tensor %s has the wrong shape (want "
				     "[%llu, %llu])", full, (unsigned long long)d0,
				     (unsigned long long)d1);
		else
			vela_err_set(err, VELA_ECORRUPT, "embed: tensor %s has the wrong shape (want "
				     "[%llu])", full, (unsigned long long)d0);
		return NULL;
	}
	return t;
}

/* A plain float array: rows x cols (cols 0: a vector of rows). */
static int load_plain(const loader_t *ld, const char *name, uint64_t rows, uint64_t cols,
		      float **out, vela_err_t *err)
{
	const embed_st_tensor_t *t = tensor_get(ld, name, rows, cols, err);
	if (t == NULL)
		return err ? err->code : VELA_ECORRUPT;
	size_t n = (size_t)(rows * (cols ? cols : 1));
	*out = falloc(n + EMBED_COL_PAD);
	if (*out == NULL)
		return vela_err_set(err, VELA_ENOMEM, "embed: out of memory");
	return embed_st_to_f32(t, *out, n, err);
}

/* A linear layer from one or more stacked [out_i, in] weights (q, k, v
 * fused into one product) and their biases, packed for the kernel table. */
static int load_linear(const loader_t *ld, const char *const *names, int parts, uint32_t out,
		       uint32_t in, embed_linear_t *l, vela_err_t *err)
{
	char name[256];
	l->in = in;
	l->out = out * (uint32_t)parts;
	float *w = falloc((size_t)l->out * in);
	l->b = falloc(l->out + EMBED_COL_PAD);
	l->w = falloc(ld->k->packed_size(l->out, in));
	int rc = (w && l->b && l->w) ? 0 : vela_err_set(err, VELA_ENOMEM, "embed: out of memory");
	for (int p = 0; rc == 0 && p < parts; p++) {
		const embed_st_tensor_t *tw, *tb;
		snprintf(name, sizeof(name), "%s.weight", names[p]);
		tw = tensor_get(ld, name, out, in, err);
		snprintf(name, sizeof(name), "%s.bias", names[p]);
		tb = tw ? tensor_get(ld, name, out, 0, err) : NULL;
		if (tb == NULL)
			rc = err ? err->code : VELA_ECORRUPT;
		if (rc == 0)
			rc = embed_st_to_f32(tw, w + (size_t)p * out * in, (size_t)out * in, err);
		if (rc == 0)
			rc = embed_st_to_f32(tb, l->b + (size_t)p * out, out, err);
	}
	if (rc == 0)
		ld->k->pack(w, l->out, in, l->w);
	free(w);
	return rc;
}

static int load_layer(const loader_t *ld, const embed_config_t *c, uint32_t i, embed_layer_t *L,
		      vela_err_t *err)
{
	char q[96], k[96], v[96], o[96], f1[96], f2[96], n1[96], n2[96], nm[128];
	snprintf(q, sizeof(q), "encoder.layer.%u.attention.self.query", i);
	snprintf(k, sizeof(k), "encoder.layer.%u.attention.self.key", i);
	snprintf(v, sizeof(v), "encoder.layer.%u.attention.self.value", i);
	snprintf(o, sizeof(o), "encoder.layer.%u.attention.output.dense", i);
	snprintf(n1, sizeof(n1), "encoder.layer.%u.attention.output.LayerNorm", i);
	snprintf(f1, sizeof(f1), "encoder.layer.%u.intermediate.dense", i);
	snprintf(f2, sizeof(f2), "encoder.layer.%u.output.dense", i);
	snprintf(n2, sizeof(n2), "encoder.layer.%u.output.LayerNorm", i);
	const char *qkv[] = {q, k, v}, *on[] = {o}, *f1n[] = {f1}, *f2n[] = {f2};
	int rc = load_linear(ld, qkv, 3, c->hidden, c->hidden, &L->qkv, err);
	if (rc == 0)
		rc = load_linear(ld, on, 1, c->hidden, c->hidden, &L->attn_out, err);
	if (rc == 0)
		rc = load_linear(ld, f1n, 1, c->intermediate, c->hidden, &L->ffn_in, err);
	if (rc == 0)
		rc = load_linear(ld, f2n, 1, c->hidden, c->intermediate, &L->ffn_out, err);
	const char *ln[] = {n1, n1, n2, n2}, *sfx[] = {"weight", "bias", "weight", "bias"};
	float **dst[] = {&L->ln1_g, &L->ln1_b, &L->ln2_g, &L->ln2_b};
	for (int j = 0; rc == 0 && j < 4; j++) {
		snprintf(nm, sizeof(nm), "%s.%s", ln[j], sfx[j]);
		rc = load_plain(ld, nm, c->hidden, 0, dst[j], err);
	}
	return rc;
}

static int load_weights(embed_model_t *m, const loader_t *ld, vela_err_t *err)
{
	const embed_config_t *c = &m->cfg;
	int rc = load_plain(ld, "embeddings.word_embeddings.weight", c->vocab, c->hidden,
			    &m->word_emb, err);
	if (rc == 0)
		rc = load_plain(ld, "embeddings.position_embeddings.weight", c->max_pos, c->hidden,
				&m->pos_emb, err);
	if (rc == 0)
		rc = load_plain(ld, "embeddings.token_type_embeddings.weight", c->type_vocab,
				c->hidden, &m->type_emb, err);
	if (rc == 0)
		rc = load_plain(ld, "embeddings.LayerNorm.weight", c->hidden, 0, &m->emb_ln_g, err);
	if (rc == 0)
		rc = load_plain(ld, "embeddings.LayerNorm.bias", c->hidden, 0, &m->emb_ln_b, err);
	m->layer = rc == 0 ? calloc(c->layers, sizeof(embed_layer_t)) : NULL;
	if (rc == 0 && m->layer == NULL)
		rc = vela_err_set(err, VELA_ENOMEM, "embed: out of memory");
	for (uint32_t i = 0; rc == 0 && i < c->layers; i++)
		rc = load_layer(ld, c, i, &m->layer[i], err);
	return rc;
}

/* ------------------------------------------------------------ open */

void embed_model_close(embed_model_t *m)
{
	if (m == NULL)
		return;
	for (uint32_t i = 0; m->layer != NULL && i < m->cfg.layers; i++) {
		embed_layer_t *L = &m->layer[i];
		embed_linear_t *ls[] = {&L->qkv, &L->attn_out, &L->ffn_in, &L->ffn_out};
		for (int j = 0; j < 4; j++) {
			free(ls[j]->w);
			free(ls[j]->b);
		}
		free(L->ln1_g);
		free(L->ln1_b);
		free(L->ln2_g);
		free(L->ln2_b);
	}
	free(m->layer);
	free(m->word_emb);
	free(m->pos_emb);
	free(m->type_emb);
	free(m->emb_ln_g);
	free(m->emb_ln_b);
	embed_vocab_free(m->vocab);
	free(m);
}

/* Options against their bounds; zero means DEFAULT. */
static int opts_apply(embed_model_t *m, const embed_model_opts_t *o, vela_err_t *err)
{
	embed_model_opts_t d = {0};
	if (o == NULL)
		o = &d;
	if (o->max_seq != 0) {
		if (o->max_seq < EMBED_MAX_SEQ_MIN || o->max_seq > EMBED_MAX_SEQ_MAX ||
		    o->max_seq > m->cfg.max_pos)
			return vela_err_set(err, VELA_EINVAL, "embed: max_seq %u out of range "
					    "(%u..%u)", o->max_seq, EMBED_MAX_SEQ_MIN,
					    m->cfg.max_pos < EMBED_MAX_SEQ_MAX ? m->cfg.max_pos
									 : EMBED_MAX_SEQ_MAX);
		m->max_seq = o->max_seq;
	}
	if (m->max_seq > EMBED_MAX_SEQ_MAX)
		m->max_seq = EMBED_MAX_SEQ_MAX;
	m->batch_tokens = o->batch_tokens ? o->batch_tokens : EMBED_BATCH_TOKENS_DEFAULT;
	m->threads = o->threads ? o->threads : EMBED_THREADS_DEFAULT;
	if (m->batch_tokens < EMBED_BATCH_TOKENS_MIN || m->batch_tokens > EMBED_BATCH_TOKENS_MAX)
		return vela_err_set(err, VELA_EINVAL, "embed: batch_tokens %u out of range (%u..%u)",
				    m->batch_tokens, EMBED_BATCH_TOKENS_MIN, EMBED_BATCH_TOKENS_MAX);
	if (m->threads < EMBED_THREADS_MIN || m->threads > EMBED_THREADS_MAX)
		return vela_err_set(err, VELA_EINVAL, "embed: threads %u out of range (%u..%u)",
				    m->threads, EMBED_THREADS_MIN, EMBED_THREADS_MAX);
	m->k = embed_kernels_get(o->kernel);
	if (m->k == NULL)
		return vela_err_set(err, VELA_EUNSUPPORTED, "embed: this CPU lacks the requested "
				    "kernels");
	return 0;
}

static int model_load(embed_model_t *m, const char *dir, const embed_model_opts_t *opts,
		      vela_err_t *err)
{
	json_t *cfg;
	char path[4096];
	int rc = json_file(dir, "config.json", false, &cfg, err);
	if (rc != 0)
		return rc;
	rc = config_parse(cfg, &m->cfg, err);
	json_decref(cfg);
	if (rc == 0)
		rc = st_side_files(dir, &m->cfg, &m->max_seq, err);
	if (rc == 0)
		rc = opts_apply(m, opts, err);
	snprintf(path, sizeof(path), "%s/vocab.txt", dir);
	if (rc == 0)
		rc = embed_vocab_load(path, &m->vocab, err);
	if (rc == 0 && embed_vocab_size(m->vocab) != m->cfg.vocab)
		rc = vela_err_set(err, VELA_ECORRUPT, "embed: vocab.txt has %zu entries, config "
				  "says %u", embed_vocab_size(m->vocab), m->cfg.vocab);
	loader_t ld = {.k = m->k};
	snprintf(path, sizeof(path), "%s/model.safetensors", dir);
	if (rc == 0)
		rc = embed_st_open(path, &ld.st, err);
	if (rc == 0 && embed_st_find(ld.st, "embeddings.word_embeddings.weight") == NULL &&
	    embed_st_find(ld.st, "bert.embeddings.word_embeddings.weight") != NULL)
		strcpy(ld.prefix, "bert.");
	if (rc == 0)
		rc = load_weights(m, &ld, err);
	embed_st_close(ld.st);
	return rc;
}

int embed_model_open_opts(const char *dir, const embed_model_opts_t *opts, embed_model_t **out,
			  vela_err_t *err)
{
	if (dir == NULL || out == NULL)
		return vela_err_set(err, VELA_EINVAL, "embed: bad argument");
	*out = NULL;
	embed_model_t *m = calloc(1, sizeof(*m));
	if (m == NULL)
		return vela_err_set(err, VELA_ENOMEM, "embed: out of memory");
	int rc = model_load(m, dir, opts, err);
	if (rc != 0) {
		embed_model_close(m);
		return rc;
	}
	*out = m;
	return 0;
}

int embed_model_open(const char *dir, embed_model_t **out, vela_err_t *err)
{
	return embed_model_open_opts(dir, NULL, out, err);
}

uint32_t embed_model_dim(const embed_model_t *m)
{
	return m->cfg.hidden;
}

uint32_t embed_model_max_seq(const embed_model_t *m)
{
	return m->max_seq;
}

const embed_vocab_t *embed_model_vocab(const embed_model_t *m)
{
	return m->vocab;
}

const char *embed_model_kernel_name(const embed_model_t *m)
{
	return m->k->name;
}
