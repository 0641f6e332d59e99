/*
 * gpu_test_encoder.c — tests of the GPU BERT encoder (gpu_bert_*) against the
 * independent double-precision forward pass of bert_ref.c.
 *
 * Models are random but shaped and scaled like real ones (the hidden size,
 * heads, FFN and positions of all-MiniLM-L6-v2; fewer layers and a small
 * vocabulary to stay fast): matrices and embeddings ~N(0, 0.05), biases
 * ~N(0, 0.05), LayerNorm gamma ~1 + N(0, 0.1), beta ~N(0, 0.1). Checks:
 *  - every sequence's vector has cosine >= 0.999 with the reference (F16
 *    GEMM operands lose about three decimal digits; the worst case and the
 *    largest absolute error are printed);
 *  - a packed batch equals the same sequences encoded one by one
 *    (cosine >= 0.9999), also when the token budget splits the batch into
 *    several chunks;
 *  - bad arguments and missing weights are refused.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpu/gpu.h"
#include "bert_ref.h"

int gpu_test_encoder(gpu_ctx_t *ctx, uint64_t seed, int quick, int *pass, int *fail);

static uint64_t e_rng;

static uint64_t e_next(void)
{
	e_rng ^= e_rng >> 12;
	e_rng ^= e_rng << 25;
	e_rng ^= e_rng >> 27;
	return e_rng * 0x2545F4914F6CDD1DULL;
}

static double e_unit(void) { return ((e_next() >> 11) + 0.5) / 9007199254740992.0; }

static double e_gauss(void)
{
	return sqrt(-2.0 * log(e_unit())) * cos(6.283185307179586 * e_unit());
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------ a random model */

#define MAX_TENSORS (5 + 16 * 4)

typedef struct tmodel {
	gpu_bert_config_t cfg;
	bert_ref_t ref;
	bert_ref_layer_t *layers;
	int nt;
	char name[MAX_TENSORS][96];
	float *data[MAX_TENSORS];
	size_t n[MAX_TENSORS];
} tmodel_t;

/* kind: 0 N(0, 0.05), 1 gamma 1 + N(0, 0.1), 2 beta N(0, 0.1) */
static const float *t_add(tmodel_t *m, const char *name, size_t n, int kind)
{
	float *x = malloc(n * sizeof(float));
	for (size_t i = 0; i < n; i++)
		x[i] = (float)(kind == 0 ? 0.05 * e_gauss() : kind == 1 ? 1.0 + 0.1 * e_gauss()
									: 0.1 * e_gauss());
	snprintf(m->name[m->nt], sizeof(m->name[0]), "%s", name);
	m->data[m->nt] = x;
	m->n[m->nt++] = n;
	return x;
}

static void model_make(tmodel_t *m, const gpu_bert_config_t *cfg)
{
	memset(m, 0, sizeof(*m));
	m->cfg = *cfg;
	size_t H = cfg->hidden, I = cfg->intermediate;
	m->layers = calloc(cfg->layers, sizeof(bert_ref_layer_t));
	bert_ref_t *r = &m->ref;
	r->hidden = cfg->hidden;
	r->layers = cfg->layers;
	r->heads = cfg->heads;
	r->inter = cfg->intermediate;
	r->eps = cfg->ln_eps;
	r->layer = m->layers;
	r->word = t_add(m, "embeddings.word_embeddings.weight", cfg->vocab * H, 0);
	r->pos = t_add(m, "embeddings.position_embeddings.weight", cfg->max_pos * H, 0);
	r->type = t_add(m, "embeddings.token_type_embeddings.weight", cfg->type_vocab * H, 0);
	r->emb_g = t_add(m, "embeddings.LayerNorm.weight", H, 1);
	r->emb_b = t_add(m, "embeddings.LayerNorm.bias", H, 2);
	for (uint32_t l = 0; l < cfg->layers; l++) {
		bert_ref_layer_t *L = &m->layers[l];
		char n[96];
#define T_(field, sfx, cnt, kind)                                                 \
	snprintf(n, sizeof(n), "encoder.layer.%u.%s", l, sfx);                    \
	L->field = t_add(m, n, cnt, kind)
		T_(wq, "attention.self.query.weight", H * H, 0);
		T_(bq, "attention.self.query.bias", H, 0);
		T_(wk, "attention.self.key.weight", H * H, 0);
		T_(bk, "attention.self.key.bias", H, 0);
		T_(wv, "attention.self.value.weight", H * H, 0);
		T_(bv, "attention.self.value.bias", H, 0);
		T_(wo, "attention.output.dense.weight", H * H, 0);
		T_(bo, "attention.output.dense.bias", H, 0);
		T_(ln1_g, "attention.output.LayerNorm.weight", H, 1);
		T_(ln1_b, "attention.output.LayerNorm.bias", H, 2);
		T_(wi, "intermediate.dense.weight", I * H, 0);
		T_(bi, "intermediate.dense.bias", I, 0);
		T_(wo2, "output.dense.weight", H * I, 0);
		T_(bo2, "output.dense.bias", H, 0);
		T_(ln2_g, "output.LayerNorm.weight", H, 1);
		T_(ln2_b, "output.LayerNorm.bias", H, 2);
#undef T_
	}
}

static void model_free(tmodel_t *m)
{
	for (int i = 0; i < m->nt; i++)
		free(m->data[i]);
	free(m->layers);
}

/* Upload tensors [from, to) of the model; "bert." prefixes every other one
 * (both spellings are accepted). */
static int model_upload(gpu_bert_t *b, const tmodel_t *m, int from, int to, vela_err_t *err)
{
	for (int i = from; i < to; i++) {
		char nm[128];
		snprintf(nm, sizeof(nm), "%s%s", i % 2 ? "bert." : "", m->name[i]);
		int rc = gpu_bert_set_tensor(b, nm, m->data[i], m->n[i], err);
		if (rc)
			return rc;
	}
	return 0;
}

/* ------------------------------------------------------------ checks */

static double cosine_fd(const float *a, const double *b, uint32_t d, double *maxabs)
{
	double dot = 0, na = 0, nb = 0;
	for (uint32_t i = 0; i < d; i++) {
		dot += a[i] * b[i];
		na += (double)a[i] * a[i];
		nb += b[i] * b[i];
		double e = fabs(a[i] - b[i]);
		if (maxabs && (e > *maxabs || isnan(e)))
			*maxabs = e;
	}
	double c = dot / sqrt(na * nb);
	return isnan(c) ? -2.0 : c;
}

static double cosine_ff(const float *a, const float *b, uint32_t d)
{
	double dot = 0, na = 0, nb = 0;
	for (uint32_t i = 0; i < d; i++) {
		dot += (double)a[i] * b[i];
		na += (double)a[i] * a[i];
		nb += (double)b[i] * b[i];
	}
	double c = dot / sqrt(na * nb);
	return isnan(c) ? -2.0 : c;
}

/* Encode n sequences (lengths lens, ids concatenated) packed in one call;
 * returns the call's rc. */
static int encode_packed(gpu_bert_t *b, const uint32_t *ids, const uint32_t *lens, uint32_t n,
			 float *out, vela_err_t *err)
{
	uint32_t *off = malloc((n + 1) * sizeof(uint32_t));
	off[0] = 0;
	for (uint32_t s = 0; s < n; s++)
		off[s + 1] = off[s] + lens[s];
	int rc = gpu_bert_encode(b, ids, off, n, out, err);
	free(off);
	return rc;
}

static void report(int bad, int *pass, int *fail)
{
	if (bad)
		(*fail)++;
	else
		(*pass)++;
}

/* One model shape: reference vectors for every sequence, then the packed
 * batch (default budget and a small one forcing several chunks) and each
 * fixed-length sequence alone. */
static void shape_case(gpu_ctx_t *ctx, const gpu_bert_config_t *cfg, const uint32_t *lens,
		       uint32_t n, uint32_t n_alone, int *pass, int *fail)
{
	tmodel_t m;
	model_make(&m, cfg);
	const uint32_t H = cfg->hidden;
	uint32_t total = 0;
	for (uint32_t s = 0; s < n; s++)
		total += lens[s];
	uint32_t *ids = malloc(total * sizeof(uint32_t));
	for (uint32_t t = 0; t < total; t++)
		ids[t] = (uint32_t)(e_next() % cfg->vocab);
	double *ref = malloc((size_t)n * H * sizeof(double));
	double t0 = now_s();
	for (uint32_t s = 0, t = 0; s < n; t += lens[s++])
		bert_ref_encode(&m.ref, ids + t, lens[s], ref + (size_t)s * H);
	double t_ref = now_s() - t0;
	float *packed = malloc((size_t)n * H * sizeof(float));
	float *chunked = malloc((size_t)n * H * sizeof(float));
	float *alone = malloc((size_t)H * sizeof(float));
	for (size_t i = 0; i < (size_t)n * H; i++)
		packed[i] = chunked[i] = NAN;
	vela_err_t err = {0};
	gpu_bert_t *b = NULL, *bs = NULL;
	gpu_bert_config_t small = *cfg;
	small.batch_tokens = GPU_BERT_BATCH_TOKENS_MIN;
	int rc = gpu_bert_create(ctx, cfg, &b, &err);
	if (!rc)
		rc = model_upload(b, &m, 0, m.nt, &err);
	if (!rc)
		rc = gpu_bert_create(ctx, &small, &bs, &err);
	if (!rc)
		rc = model_upload(bs, &m, 0, m.nt, &err);
	double t_gpu = 0;
	if (!rc) {
		t0 = now_s();
		rc = encode_packed(b, ids, lens, n, packed, &err);
		t_gpu = now_s() - t0;
	}
	if (!rc)
		rc = encode_packed(bs, ids, lens, n, chunked, &err);
	double worst = 2, maxabs = 0, worst_chunk = 2, worst_alone = 2;
	uint32_t worst_len = 0;
	for (uint32_t s = 0; !rc && s < n; s++) {
		double c = cosine_fd(packed + (size_t)s * H, ref + (size_t)s * H, H, &maxabs);
		if (c < worst) {
			worst = c;
			worst_len = lens[s];
		}
		c = cosine_ff(chunked + (size_t)s * H, packed + (size_t)s * H, H);
		worst_chunk = c < worst_chunk ? c : worst_chunk;
	}
	for (uint32_t s = 0, t = 0; !rc && s < n_alone; t += lens[s++]) {
		memset(alone, 0xff, H * sizeof(float));
		rc = encode_packed(b, ids + t, lens + s, 1, alone, &err);
		double c = rc ? -2 : cosine_ff(alone, packed + (size_t)s * H, H);
		worst_alone = c < worst_alone ? c : worst_alone;
	}
	int bad = rc != 0 || !(worst >= 0.999) || !(worst_chunk >= 0.9999) || !(worst_alone >= 0.9999);
	printf("%-4s bert H=%u heads=%u I=%u layers=%u: %u seqs %u tokens: cosine vs fp64 min %.7f "
	       "(len %u) max abs err %.2e; chunked (budget %u) vs packed min %.7f; one-by-one vs "
	       "packed min %.7f; gpu %.1f ms, reference %.1f s %s\n",
	       bad ? "FAIL" : "ok", H, cfg->heads, cfg->intermediate, cfg->layers, n, total, worst,
	       worst_len, maxabs, GPU_BERT_BATCH_TOKENS_MIN, worst_chunk, worst_alone, t_gpu * 1e3,
	       t_ref, rc ? err.msg : "");
	report(bad, pass, fail);
	gpu_bert_free(b);
	gpu_bert_free(bs);
	free(ids);
	free(ref);
	free(packed);
	free(chunked);
	free(alone);
	model_free(&m);
}

/* Refusals: unknown and wrong-sized tensors, missing weights, bad lengths
 * and ids, bad configs. */
static void api_cases(gpu_ctx_t *ctx, int *pass, int *fail)
{
	gpu_bert_config_t cfg = {.hidden = 64, .layers = 1, .heads = 2, .intermediate = 128,
				 .vocab = 50, .max_pos = 40, .type_vocab = 2, .ln_eps = 1e-12f};
	tmodel_t m;
	model_make(&m, &cfg);
	vela_err_t err = {0};
	gpu_bert_t *b = NULL;
	int bad = 0, rc;
	gpu_bert_config_t bc = cfg;
	bc.heads = 4; /* head size 16 */
	bad |= gpu_bert_create(ctx, &bc, &b, &err) != VELA_EUNSUPPORTED || b;
	bc = cfg;
	bc.hidden = 60;
	bad |= gpu_bert_create(ctx, &bc, &b, &err) != VELA_EINVAL;
	bc = cfg;
	bc.batch_tokens = 3;
	bad |= gpu_bert_create(ctx, &bc, &b, &err) != VELA_EINVAL;
	rc = gpu_bert_create(ctx, &cfg, &b, &err);
	bad |= rc != 0;
	if (rc == 0) {
		float one = 1;
		bad |= gpu_bert_set_tensor(b, "pooler.dense.bias", &one, 1, &err) != VELA_ENOTFOUND;
		bad |= gpu_bert_set_tensor(b, "encoder.layer.1.output.dense.bias", &one, 1, &err) !=
		       VELA_ENOTFOUND;
		bad |= gpu_bert_set_tensor(b, "embeddings.LayerNorm.weight", &one, 1, &err) !=
		       VELA_EINVAL;
		bad |= model_upload(b, &m, 0, m.nt - 1, &err) != 0;
		uint32_t ids[45] = {0}, off[2] = {0, 3};
		float out[64];
		/* one tensor still missing */
		bad |= gpu_bert_encode(b, ids, off, 1, out, &err) != VELA_EINVAL ||
		       !strstr(err.msg, "output.LayerNorm.bias");
		bad |= model_upload(b, &m, m.nt - 1, m.nt, &err) != 0;
		/* the old gamma/beta spelling is accepted */
		bad |= gpu_bert_set_tensor(b, "embeddings.LayerNorm.gamma", m.data[3], 64, &err) != 0;
		bad |= gpu_bert_encode(b, ids, off, 1, out, &err) != 0;
		bad |= gpu_bert_encode(b, ids, off, 0, out, &err) != 0;
		ids[1] = 50; /* == vocab */
		bad |= gpu_bert_encode(b, ids, off, 1, out, &err) != VELA_EINVAL;
		ids[1] = 0;
		off[1] = 0; /* empty sequence */
		bad |= gpu_bert_encode(b, ids, off, 1, out, &err) != VELA_EINVAL;
		off[1] = 41; /* past max_pos */
		bad |= gpu_bert_encode(b, ids, off, 1, out, &err) != VELA_EINVAL;
		bad |= gpu_bert_bytes(b) == 0;
	}
	gpu_bert_free(b);
	model_free(&m);
	printf("%-4s bert: bad configs, tensors, lengths and ids are refused %s\n",
	       bad ? "FAIL" : "ok", bad ? err.msg : "");
	report(bad, pass, fail);
}

int gpu_test_encoder(gpu_ctx_t *ctx, uint64_t seed, int quick, int *pass, int *fail)
{
	e_rng = seed ^ 0x9E3779B97F4A7C15ULL;
	if (!e_rng)
		e_rng = 1;
	int f0 = *fail;
	api_cases(ctx, pass, fail);
	/* all-MiniLM-L6-v2's shape, 2 layers: the lengths of the brief first
	 * (also encoded one by one), then random ones */
	gpu_bert_config_t mini = {.hidden = 384, .layers = 2, .heads = 12, .intermediate = 1536,
				  .vocab = 1000, .max_pos = 512, .type_vocab = 2, .ln_eps = 1e-12f};
	uint32_t lens[64] = {33, 256, 1, 128, 7, 2};
	uint32_t n = quick ? 16 : 40;
	for (uint32_t s = 6; s < n; s++)
		lens[s] = 1 + (uint32_t)(e_next() % 80);
	shape_case(ctx, &mini, lens, n, 6, pass, fail);
	/* head size 64 and another hidden size (other kernel instances) */
	gpu_bert_config_t h64 = {.hidden = 512, .layers = 1, .heads = 8, .intermediate = 1024,
				 .vocab = 500, .max_pos = 300, .type_vocab = 1, .ln_eps = 1e-12f};
	uint32_t lens64[8] = {256, 3, 64, 65, 1, 31, 33, 100};
	shape_case(ctx, &h64, lens64, quick ? 4 : 8, 2, pass, fail);
	return *fail - f0;
}
