/* Loading a BERT sentence encoder from a model directory: config.json,
 * model.safetensors, vocab.txt and the sentence-transformers side files
 * (reference/embeddings-and-datasets.md §1.1-§1.2). Weights are converted to
 * float and packed for the chosen kernel table once; nothing stays mapped. */
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "embed/embed.h"
#include "embed/embed_impl.h"

/* ------------------------------------------------------------ config */

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
	if ((rc = embed_json_get_u32(o, "hidden_size",
				     -1, 8, EMBED_POOL_DIM_MAX, &c->hidden, err)) != 0 ||
	    (rc = embed_json_get_u32(o, "num_hidden_layers", -1, 1, 64, &c->layers, err)) != 0 ||
	    (rc = embed_json_get_u32(o, "num_attention_heads", -1, 1, 128, &c->heads, err)) != 0 ||
	    (rc = embed_json_get_u32(o, "intermediate_size",
				     -1, 8, 32768, &c->intermediate, err)) != 0 ||
	    (rc = embed_json_get_u32(o, "max_position_embeddings",
				     -1, 2, 8192, &c->max_pos, err)) != 0 ||
	    (rc = embed_json_get_u32(o, "vocab_size",
				     -1, 8, EMBED_VOCAB_SIZE_MAX, &c->vocab, err)) != 0 ||
	    (rc = embed_json_get_u32(o, "type_vocab_size", 2, 1, 16, &c->type_vocab, err)) != 0)
		return rc;
	if (c->hidden % c->heads != 0 || c->hidden % 8 != 0)
		return vela_err_set(err, VELA_EUNSUPPORTED,
				    "embed: hidden_size %u must be a multiple of 8 and of "
				    "num_attention_heads %u", c->hidden, c->heads);
	return embed_json_get_eps(o, 1e-12f, &c->ln_eps, err);
}

/* Optional sentence-transformers files: mean pooling, lowercasing, limit. */
static int st_side_files(const char *dir, const embed_config_t *c, uint32_t *max_seq,
			 vela_err_t *err)
{
	json_t *o;
	int rc = embed_json_load(dir, "1_Pooling/config.json", true, &o, err);
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
	if (rc == 0 &&
	    (rc = embed_json_load(dir, "tokenizer_config.json", true, &o, err)) == 0 && o) {
		const json_t *lc = json_object_get(o, "do_lower_case");
		if (lc != NULL && !json_is_true(lc))
			rc = vela_err_set(err, VELA_EUNSUPPORTED, "embed: only lowercasing "
					  "(uncased) tokenizers are supported");
		json_decref(o);
	}
	*max_seq = c->max_pos < EMBED_MAX_SEQ_DEFAULT ? c->max_pos : EMBED_MAX_SEQ_DEFAULT;
	if (rc == 0 &&
	    (rc = embed_json_load(dir, "sentence_bert_config.json", true, &o, err)) == 0 && o) {
		rc = embed_json_get_u32(o, "max_seq_length", *max_seq, EMBED_MAX_SEQ_MIN,
					c->max_pos, max_seq, err);
		json_decref(o);
	}
	return rc;
}

/* ------------------------------------------------------------ tensors */

static int load_layer(const embed_loader_t *ld, const embed_config_t *c, uint32_t i,
		      embed_layer_t *L, vela_err_t *err)
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
	int rc = embed_linear_load(ld, qkv, 3, true, c->hidden, c->hidden, NULL, &L->qkv, err);
	if (rc == 0)
		rc = embed_linear_load(ld, on, 1, true, c->hidden, c->hidden, NULL, &L->attn_out,
				       err);
	if (rc == 0)
		rc = embed_linear_load(ld, f1n, 1, true, c->intermediate, c->hidden, NULL,
				       &L->ffn_in, err);
	if (rc == 0)
		rc = embed_linear_load(ld, f2n, 1, true, c->hidden, c->intermediate, NULL,
				       &L->ffn_out, err);
	const char *ln[] = {n1, n1, n2, n2}, *sfx[] = {"weight", "bias", "weight", "bias"};
	float **dst[] = {&L->ln1_g, &L->ln1_b, &L->ln2_g, &L->ln2_b};
	for (int j = 0; rc == 0 && j < 4; j++) {
		snprintf(nm, sizeof(nm), "%s.%s", ln[j], sfx[j]);
		rc = embed_tensor_load(ld, nm, c->hidden, 0, dst[j], err);
	}
	return rc;
}

static int load_weights(embed_model_t *m, const embed_loader_t *ld, vela_err_t *err)
{
	const embed_config_t *c = &m->cfg;
	int rc = embed_tensor_load(ld, "embeddings.word_embeddings.weight", c->vocab, c->hidden,
				   &m->word_emb, err);
	if (rc == 0)
		rc = embed_tensor_load(ld, "embeddings.position_embeddings.weight", c->max_pos,
				       c->hidden, &m->pos_emb, err);
	if (rc == 0)
		rc = embed_tensor_load(ld, "embeddings.token_type_embeddings.weight", c->type_vocab,
				       c->hidden, &m->type_emb, err);
	if (rc == 0)
		rc = embed_tensor_load(ld, "embeddings.LayerNorm.weight", c->hidden, 0,
				       &m->emb_ln_g, err);
	if (rc == 0)
		rc = embed_tensor_load(ld, "embeddings.LayerNorm.bias", c->hidden, 0,
				       &m->emb_ln_b, err);
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
	embed_gpu_detach(m);
	for (uint32_t i = 0; m->layer != NULL && i < m->cfg.layers; i++)
		embed_layer_free(&m->layer[i]);
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
	if ((unsigned)o->device > EMBED_DEVICE_GPU)
		return vela_err_set(err, VELA_EINVAL, "embed: device %d unknown", (int)o->device);
	m->batch_tokens = o->batch_tokens ? o->batch_tokens : EMBED_BATCH_TOKENS_DEFAULT;
	if (m->batch_tokens < EMBED_BATCH_TOKENS_MIN || m->batch_tokens > EMBED_BATCH_TOKENS_MAX)
		return vela_err_set(err, VELA_EINVAL, "embed: batch_tokens %u out of range (%u..%u)",
				    m->batch_tokens, EMBED_BATCH_TOKENS_MIN, EMBED_BATCH_TOKENS_MAX);
	return embed_opts_apply(o->threads, o->kernel, &m->threads, &m->k, err);
}

static int model_load(embed_model_t *m, const char *dir, const embed_model_opts_t *opts,
		      vela_err_t *err)
{
	json_t *cfg;
	char path[4096];
	int rc = embed_json_load(dir, "config.json", false, &cfg, err);
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
	/* Every array gets EMBED_COL_PAD floats of zeroed slack past its end. */
	embed_loader_t ld = {.k = m->k, .pad = EMBED_COL_PAD};
	snprintf(path, sizeof(path), "%s/model.safetensors", dir);
	if (rc == 0)
		rc = embed_st_open(path, &ld.st, err);
	if (rc == 0 && embed_st_find(ld.st, "embeddings.word_embeddings.weight") == NULL &&
	    embed_st_find(ld.st, "bert.embeddings.word_embeddings.weight") != NULL)
		strcpy(ld.prefix, "bert.");
	if (rc == 0)
		rc = load_weights(m, &ld, err);
	if (rc == 0) /* after the CPU weights: the CPU path is the fallback */
		rc = embed_gpu_attach(m, ld.st, opts ? opts->device : EMBED_DEVICE_DEFAULT, err);
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
