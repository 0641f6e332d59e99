/* Unit tests for the BERT encoder (embed/model.c, forward.c, kernels*.c,
 * embed.c) on a small model this test writes itself (random weights, the
 * MiniLM tensor names, a hidden size and FFN width that are not multiples of
 * the kernels' panel widths), against an independent double-precision
 * implementation of HF modeling_bert written here from
 * reference/embeddings-and-datasets.md §1.3: every kernel table the CPU
 * supports, F32/F16/BF16 weights, packed batches against one-by-one,
 * threads, chunking, and the loader's errors. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "embed/embed.h"
#include "embed/embed_impl.h"

#define H 40   /* hidden */
#define NH 5   /* heads: head_dim 8 */
#define FF 72  /* intermediate */
#define NL 2   /* layers */
#define MP 64  /* max positions */
#define NV 25  /* vocab */

static const char vocab_txt[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\nun\n##aff\n"
				"##able\n,\n!\ncafe\n中\n国\na\n##a\nσ\n##σ\n.\nx\n##y\ni\n'\ns\n";

/* ------------------------------------------------------------ weights */

typedef struct {
	double word[NV][H], pos[MP][H], type[2][H], eln_g[H], eln_b[H];
	struct {
		double wq[H][H], wk[H][H], wv[H][H], wo[H][H], bq[H], bk[H], bv[H], bo[H];
		double l1g[H], l1b[H], w1[FF][H], b1[FF], w2[H][FF], b2[H], l2g[H], l2b[H];
	} L[NL];
} weights_t;

static weights_t W;
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static double rnd(double scale)
{
	uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	z ^= z >> 31;
	return ((double)(z >> 11) * 0x1p-53 * 2 - 1) * scale;
}

static void fill(double *p, size_t n, double scale, double offset)
{
	for (size_t i = 0; i < n; i++)
		p[i] = offset + rnd(scale);
}

static void weights_init(void)
{
	fill(&W.word[0][0], NV * H, 1.0, 0);
	fill(&W.pos[0][0], MP * H, 0.5, 0);
	fill(&W.type[0][0], 2 * H, 0.2, 0);
	fill(W.eln_g, H, 0.2, 1.0);
	fill(W.eln_b, H, 0.1, 0);
	for (int l = 0; l < NL; l++) {
		double s = 1.0 / sqrt(H);
		fill(&W.L[l].wq[0][0], H * H, s, 0);
		fill(&W.L[l].wk[0][0], H * H, s, 0);
		fill(&W.L[l].wv[0][0], H * H, s, 0);
		fill(&W.L[l].wo[0][0], H * H, s, 0);
		fill(W.L[l].bq, H, 0.1, 0);
		fill(W.L[l].bk, H, 0.1, 0);
		fill(W.L[l].bv, H, 0.1, 0);
		fill(W.L[l].bo, H, 0.1, 0);
		fill(W.L[l].l1g, H, 0.2, 1.0);
		fill(W.L[l].l1b, H, 0.1, 0);
		fill(&W.L[l].w1[0][0], FF * H, s, 0);
		fill(W.L[l].b1, FF, 0.1, 0);
		fill(&W.L[l].w2[0][0], H * FF, 1.0 / sqrt(FF), 0);
		fill(W.L[l].b2, H, 0.1, 0);
		fill(W.L[l].l2g, H, 0.2, 1.0);
		fill(W.L[l].l2b, H, 0.1, 0);
	}
}

/* Round the weights to what `dtype` stores, so the reference sees the
 * exact values the model loads. */
static uint16_t to_f16(double d)
{
	float f = (float)d;
	uint32_t u;
	memcpy(&u, &f, 4);
	uint32_t sign = (u >> 16) & 0x8000u;
	int e = (int)((u >> 23) & 0xff) - 127 + 15;
	uint32_t m = u & 0x7fffffu;
	if (e <= 0) { /* subnormal half (values here are never that small) */
		return (uint16_t)sign;
	}
	uint32_t h = sign | ((uint32_t)e << 10) | (m >> 13), rest = m & 0x1fffu;
	if (rest > 0x1000u || (rest == 0x1000u && (h & 1)))
		h++;
	return (uint16_t)h;
}

static uint16_t to_bf16(double d)
{
	float f = (float)d;
	uint32_t u;
	memcpy(&u, &f, 4);
	return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

/* ------------------------------------------------------------ writer */

typedef struct {
	char hdr[1 << 16];
	size_t hl;
	uint8_t *data;
	size_t dl, cap;
	const char *dtype;
	const char *prefix;
	const char *skip; /* a tensor to leave out */
	const char *reshape; /* a tensor written with one row too many */
} stw_t;

static void stw_add(stw_t *w, const char *name, double *v, size_t rows, size_t cols)
{
	if (w->skip && strcmp(name, w->skip) == 0)
		return;
	if (w->reshape && strcmp(name, w->reshape) == 0)
		rows++; /* lies about its shape (reads one row past: v has room) */
	size_t n = rows * (cols ? cols : 1), es = strcmp(w->dtype, "F32") == 0 ? 4 : 2;
	if (w->dl + n * es > w->cap) {
		w->cap = (w->dl + n * es) * 2;
		w->data = realloc(w->data, w->cap);
	}
	uint8_t *p = w->data + w->dl;
	for (size_t i = 0; i < n; i++) {
		double d = v[i];
		if (es == 4) {
			float f = (float)d;
			memcpy(p + 4 * i, &f, 4);
		} else {
			uint16_t h = strcmp(w->dtype, "F16") == 0 ? to_f16(d) : to_bf16(d);
			memcpy(p + 2 * i, &h, 2);
		}
	}
	char shape[64];
	if (cols)
		snprintf(shape, sizeof(shape), "[%zu,%zu]", rows, cols);
	else
		snprintf(shape, sizeof(shape), "[%zu]", rows);
	w->hl += (size_t)snprintf(w->hdr + w->hl, sizeof(w->hdr) - w->hl,
				  "%s\"%s%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":[%zu,%zu]}",
				  w->hl > 1 ? "," : "", w->prefix, name, w->dtype, shape, w->dl,
				  w->dl + n * es);
	w->dl += n * es;
}

/* The reference then uses exactly the stored values. */
static void round_all(const char *dtype)
{
	double *p = (double *)&W;
	for (size_t i = 0; i < sizeof(W) / sizeof(double); i++) {
		if (strcmp(dtype, "F16") == 0)
			p[i] = embed_f16_to_f32(to_f16(p[i]));
		else if (strcmp(dtype, "BF16") == 0)
			p[i] = embed_bf16_to_f32(to_bf16(p[i]));
		else
			p[i] = (float)p[i];
	}
}

static void write_file(const char *dir, const char *name, const void *data, size_t len)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	cr_assert_not_null(f, "%s", path);
	cr_assert_eq(fwrite(data, 1, len, f), len);
	fclose(f);
}

typedef struct {
	const char *dtype, *prefix, *skip, *reshape, *config, *pooling;
	int gamma_beta; /* old LayerNorm names */
} model_spec_t;

static const char *default_config =
	"{\"architectures\":[\"BertModel\"],\"model_type\":\"bert\",\"hidden_act\":\"gelu\","
	"\"hidden_size\":40,\"num_hidden_layers\":2,\"num_attention_heads\":5,"
	"\"intermediate_size\":72,\"max_position_embeddings\":64,\"vocab_size\":25,"
	"\"type_vocab_size\":2,\"layer_norm_eps\":1e-12,\"position_embedding_type\":\"absolute\"}";

static void ln_names(char *g, char *b, const char *stem, int gb)
{
	strcpy(g, stem);
	strcat(g, gb ? ".gamma" : ".weight");
	strcpy(b, stem);
	strcat(b, gb ? ".beta" : ".bias");
}

/* Write a model directory; returns its path (static buffer per call site). */
static void model_write(char *dir, const model_spec_t *s)
{
	strcpy(dir, "/tmp/vela-embed-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	stw_t *w = calloc(1, sizeof(*w));
	w->dtype = s->dtype ? s->dtype : "F32";
	w->prefix = s->prefix ? s->prefix : "";
	w->skip = s->skip;
	w->reshape = s->reshape;
	w->hdr[0] = '{';
	w->hl = 1;
	char g[160], b[160], n[128];
	static double spare[FF * H + H]; /* room for a shape lie's extra row */
	(void)spare;
	stw_add(w, "embeddings.word_embeddings.weight", &W.word[0][0], NV, H);
	stw_add(w, "embeddings.position_embeddings.weight", &W.pos[0][0], MP, H);
	stw_add(w, "embeddings.token_type_embeddings.weight", &W.type[0][0], 2, H);
	ln_names(g, b, "embeddings.LayerNorm", s->gamma_beta);
	stw_add(w, g, W.eln_g, H, 0);
	stw_add(w, b, W.eln_b, H, 0);
	for (int l = 0; l < NL; l++) {
		const char *parts[] = {"attention.self.query", "attention.self.key",
				       "attention.self.value", "attention.output.dense"};
		double *ws[] = {&W.L[l].wq[0][0], &W.L[l].wk[0][0], &W.L[l].wv[0][0], &W.L[l].wo[0][0]};
		double *bs[] = {W.L[l].bq, W.L[l].bk, W.L[l].bv, W.L[l].bo};
		for (int p = 0; p < 4; p++) {
			snprintf(n, sizeof(n), "encoder.layer.%d.%s.weight", l, parts[p]);
			stw_add(w, n, ws[p], H, H);
			snprintf(n, sizeof(n), "encoder.layer.%d.%s.bias", l, parts[p]);
			stw_add(w, n, bs[p], H, 0);
		}
		snprintf(n, sizeof(n), "encoder.layer.%d.attention.output.LayerNorm", l);
		ln_names(g, b, n, s->gamma_beta);
		stw_add(w, g, W.L[l].l1g, H, 0);
		stw_add(w, b, W.L[l].l1b, H, 0);
		snprintf(n, sizeof(n), "encoder.layer.%d.intermediate.dense.weight", l);
		stw_add(w, n, &W.L[l].w1[0][0], FF, H);
		snprintf(n, sizeof(n), "encoder.layer.%d.intermediate.dense.bias", l);
		stw_add(w, n, W.L[l].b1, FF, 0);
		snprintf(n, sizeof(n), "encoder.layer.%d.output.dense.weight", l);
		stw_add(w, n, &W.L[l].w2[0][0], H, FF);
		snprintf(n, sizeof(n), "encoder.layer.%d.output.dense.bias", l);
		stw_add(w, n, W.L[l].b2, H, 0);
		snprintf(n, sizeof(n), "encoder.layer.%d.output.LayerNorm", l);
		ln_names(g, b, n, s->gamma_beta);
		stw_add(w, g, W.L[l].l2g, H, 0);
		stw_add(w, b, W.L[l].l2b, H, 0);
	}
	w->hdr[w->hl++] = '}';
	size_t len = 8 + w->hl + w->dl;
	uint8_t *file = malloc(len);
	for (int i = 0; i < 8; i++)
		file[i] = (uint8_t)((uint64_t)w->hl >> (8 * i));
	memcpy(file + 8, w->hdr, w->hl);
	memcpy(file + 8 + w->hl, w->data, w->dl);
	write_file(dir, "model.safetensors", file, len);
	free(file);
	free(w->data);
	free(w);
	const char *cfg = s->config ? s->config : default_config;
	write_file(dir, "config.json", cfg, strlen(cfg));
	write_file(dir, "vocab.txt", vocab_txt, sizeof(vocab_txt) - 1);
	write_file(dir, "sentence_bert_config.json", "{\"max_seq_length\": 48}", 22);
	char sub[600];
	snprintf(sub, sizeof(sub), "%s/1_Pooling", dir);
	mkdir(sub, 0755);
	const char *pool = s->pooling ? s->pooling
				      : "{\"word_embedding_dimension\":40,\"pooling_mode_mean_tokens\":true}";
	write_file(sub, "config.json", pool, strlen(pool));
}

static void model_rm(const char *dir)
{
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

/* ------------------------------------------------------------ reference */

static void ref_ln(double *v, const double *g, const double *b)
{
	double mean = 0, var = 0;
	for (int i = 0; i < H; i++)
		mean += v[i];
	mean /= H;
	for (int i = 0; i < H; i++)
		var += (v[i] - mean) * (v[i] - mean);
	var /= H;
	for (int i = 0; i < H; i++)
		v[i] = (v[i] - mean) / sqrt(var + 1e-12) * g[i] + b[i];
}

/* HF modeling_bert for one sequence, in double: the oracle. */
static void ref_embed(const int32_t *ids, int T, double *out)
{
	static double x[MP][H], q[MP][H], k[MP][H], v[MP][H], c[MP][H], hbuf[FF];
	for (int t = 0; t < T; t++) {
		for (int i = 0; i < H; i++)
			x[t][i] = W.word[ids[t]][i] + W.pos[t][i] + W.type[0][i];
		ref_ln(x[t], W.eln_g, W.eln_b);
	}
	for (int l = 0; l < NL; l++) {
		for (int t = 0; t < T; t++)
			for (int o = 0; o < H; o++) {
				double sq = W.L[l].bq[o], sk = W.L[l].bk[o], sv = W.L[l].bv[o];
				for (int i = 0; i < H; i++) {
					sq += x[t][i] * W.L[l].wq[o][i];
					sk += x[t][i] * W.L[l].wk[o][i];
					sv += x[t][i] * W.L[l].wv[o][i];
				}
				q[t][o] = sq, k[t][o] = sk, v[t][o] = sv;
			}
		int dh = H / NH;
		for (int h = 0; h < NH; h++)
			for (int i = 0; i < T; i++) {
				double s[MP], mx = -1e300, sum = 0;
				for (int j = 0; j < T; j++) {
					s[j] = 0;
					for (int d = 0; d < dh; d++)
						s[j] += q[i][h * dh + d] * k[j][h * dh + d];
					s[j] /= sqrt(dh);
					mx = s[j] > mx ? s[j] : mx;
				}
				for (int j = 0; j < T; j++)
					sum += s[j] = exp(s[j] - mx);
				for (int d = 0; d < dh; d++) {
					double a = 0;
					for (int j = 0; j < T; j++)
						a += s[j] / sum * v[j][h * dh + d];
					c[i][h * dh + d] = a;
				}
			}
		for (int t = 0; t < T; t++) {
			double a[H];
			for (int o = 0; o < H; o++) {
				a[o] = W.L[l].bo[o] + x[t][o];
				for (int i = 0; i < H; i++)
					a[o] += c[t][i] * W.L[l].wo[o][i];
			}
			ref_ln(a, W.L[l].l1g, W.L[l].l1b);
			for (int f = 0; f < FF; f++) {
				double z = W.L[l].b1[f];
				for (int i = 0; i < H; i++)
					z += a[i] * W.L[l].w1[f][i];
				hbuf[f] = 0.5 * z * (1 + erf(z / sqrt(2.0)));
			}
			for (int o = 0; o < H; o++) {
				double y = W.L[l].b2[o] + a[o];
				for (int f = 0; f < FF; f++)
					y += hbuf[f] * W.L[l].w2[o][f];
				x[t][o] = y;
			}
			ref_ln(x[t], W.L[l].l2g, W.L[l].l2b);
		}
	}
	double nrm = 0;
	for (int i = 0; i < H; i++) {
		out[i] = 0;
		for (int t = 0; t < T; t++)
			out[i] += x[t][i];
		out[i] /= T;
		nrm += out[i] * out[i];
	}
	for (int i = 0; i < H; i++)
		out[i] /= fmax(sqrt(nrm), 1e-12);
}

/* ------------------------------------------------------------ tests */

/* Sequences of assorted lengths (1 .. 48), random ids. */
#define NSEQ 9
static const uint32_t seq_lens[NSEQ] = {5, 1, 17, 2, 48, 9, 33, 3, 26};

static void make_ids(int32_t *ids, size_t total)
{
	for (size_t i = 0; i < total; i++)
		ids[i] = (int32_t)((rnd(1.0) + 1) * 0.5 * NV) % NV;
}

static size_t total_len(void)
{
	size_t t = 0;
	for (int s = 0; s < NSEQ; s++)
		t += seq_lens[s];
	return t;
}

/* Every sequence against the oracle, for one kernel and options. */
static void check_against_ref(const char *dir, embed_kernel_t kernel, uint32_t threads,
			      uint32_t batch_tokens, double tol)
{
	embed_model_opts_t o = {.kernel = kernel, .threads = threads, .batch_tokens = batch_tokens,
				.device = EMBED_DEVICE_CPU};
	embed_model_t *m;
	vela_err_t err = {0};
	int rc = embed_model_open_opts(dir, &o, &m, &err);
	if (rc == VELA_EUNSUPPORTED)
		return; /* this CPU lacks the kernel */
	cr_assert_eq(rc, 0, "%s", err.msg);
	cr_assert_eq(embed_model_dim(m), H);
	cr_assert_eq(embed_model_max_seq(m), 48);
	size_t total = total_len();
	int32_t *ids = malloc(total * sizeof(int32_t));
	make_ids(ids, total);
	float *got = malloc(NSEQ * H * sizeof(float)), one[H];
	cr_assert_eq(embed_ids_batch(m, ids, seq_lens, NSEQ, got, &err), 0, "%s", err.msg);
	size_t off = 0;
	for (int s = 0; s < NSEQ; s++) {
		double want[H], worst = 0;
		ref_embed(ids + off, (int)seq_lens[s], want);
		cr_assert_eq(embed_ids_batch(m, ids + off, &seq_lens[s], 1, one, &err), 0);
		for (int i = 0; i < H; i++) {
			worst = fmax(worst, fabs(got[s * H + i] - want[i]));
			cr_expect_leq(fabs(one[i] - got[s * H + i]), 2e-6, "%s seq %d dim %d: "
				      "batch %g alone %g", embed_model_kernel_name(m), s, i,
				      got[s * H + i], one[i]);
		}
		cr_expect_leq(worst, tol, "%s threads %u seq %d (len %u): max |diff| %g",
			      embed_model_kernel_name(m), threads, s, seq_lens[s], worst);
		off += seq_lens[s];
	}
	free(ids);
	free(got);
	embed_model_close(m);
}

static char dir_f32[64];

static void setup_f32(void)
{
	rng = 0x9e3779b97f4a7c15ull;
	weights_init();
	round_all("F32");
	model_write(dir_f32, &(model_spec_t){0});
}

static void teardown_dir(void)
{
	model_rm(dir_f32);
}

Test(embed_model, every_kernel_matches_reference, .init = setup_f32, .fini = teardown_dir)
{
	embed_kernel_t ks[] = {EMBED_KERNEL_BLAS, EMBED_KERNEL_AVX2, EMBED_KERNEL_AVX512,
			       EMBED_KERNEL_AUTO};
	for (size_t i = 0; i < sizeof(ks) / sizeof(ks[0]); i++)
		check_against_ref(dir_f32, ks[i], 1, 0, 2e-5);
}

Test(embed_model, threads_and_chunks, .init = setup_f32, .fini = teardown_dir)
{
	check_against_ref(dir_f32, EMBED_KERNEL_AUTO, 2, 0, 2e-5);
	check_against_ref(dir_f32, EMBED_KERNEL_AUTO, 3, EMBED_BATCH_TOKENS_MIN, 2e-5);
	check_against_ref(dir_f32, EMBED_KERNEL_BLAS, 2, EMBED_BATCH_TOKENS_MIN, 2e-5);
}

static void half_model(const char *dtype, const char *prefix, int gamma_beta)
{
	rng = 0x1234567ull;
	weights_init();
	round_all(dtype);
	char dir[64];
	model_write(dir, &(model_spec_t){.dtype = dtype, .prefix = prefix,
					 .gamma_beta = gamma_beta});
	check_against_ref(dir, EMBED_KERNEL_AUTO, 1, 0, 2e-5);
	model_rm(dir);
}

Test(embed_model, f16_bf16_prefix_gamma_beta)
{
	half_model("F16", "", 0);
	half_model("BF16", "bert.", 0);
	half_model("F32", "bert.", 1);
}

Test(embed_model, text_batch, .init = setup_f32, .fini = teardown_dir)
{
	embed_model_t *m;
	vela_err_t err = {0};
	embed_model_opts_t o = {.device = EMBED_DEVICE_CPU}; /* batch = alone to 2e-6 */
	cr_assert_eq(embed_model_open_opts(dir_f32, &o, &m, &err), 0, "%s", err.msg);
	const char *texts[] = {"Hello, world!", "unaffable cafe", "", "中国 σσ", "hello"};
	float out[5 * H], one[H];
	cr_assert_eq(embed_text_batch(m, texts, NULL, 5, out, &err), 0, "%s", err.msg);
	const int32_t ids0[] = {2, 5, 10, 6, 11, 3};
	double want[H];
	ref_embed(ids0, 6, want);
	for (int i = 0; i < H; i++)
		cr_expect_leq(fabs(out[i] - want[i]), 2e-5);
	for (int t = 0; t < 5; t++) {
		cr_assert_eq(embed_text_batch(m, &texts[t], NULL, 1, one, &err), 0);
		double nrm = 0;
		for (int i = 0; i < H; i++) {
			cr_expect_leq(fabs(one[i] - out[t * H + i]), 2e-6, "text %d", t);
			nrm += (double)one[i] * one[i];
		}
		cr_expect_leq(fabs(nrm - 1), 1e-5);
	}
	/* Lengths given: "Hello" of "Hello, world!". */
	size_t lens[] = {5};
	cr_assert_eq(embed_text_batch(m, texts, lens, 1, one, &err), 0);
	ref_embed((const int32_t[]){2, 5, 3}, 3, want);
	for (int i = 0; i < H; i++)
		cr_expect_leq(fabs(one[i] - want[i]), 2e-5);
	/* Invalid UTF-8 names the text. */
	const char *bad[] = {"fine", "bro\xc3ken"};
	cr_expect_eq(embed_text_batch(m, bad, NULL, 2, out, &err), VELA_EINVAL);
	cr_expect_neq(strstr(err.msg, "text 1"), NULL, "%s", err.msg);
	cr_expect_neq(strstr(err.msg, "invalid UTF-8 at byte 3"), NULL, "%s", err.msg);
	cr_expect_eq(embed_text_batch(m, NULL, NULL, 0, out, &err), 0);
	embed_model_close(m);
}

Test(embed_model, truncation_to_max_seq, .init = setup_f32, .fini = teardown_dir)
{
	embed_model_opts_t o = {.max_seq = 4, .device = EMBED_DEVICE_CPU};
	embed_model_t *m;
	vela_err_t err = {0};
	cr_assert_eq(embed_model_open_opts(dir_f32, &o, &m, &err), 0, "%s", err.msg);
	cr_expect_eq(embed_model_max_seq(m), 4);
	const char *t[] = {"hello world hello world hello world"};
	float out[H];
	double want[H];
	cr_assert_eq(embed_text_batch(m, t, NULL, 1, out, &err), 0);
	ref_embed((const int32_t[]){2, 5, 6, 3}, 4, want);
	for (int i = 0; i < H; i++)
		cr_expect_leq(fabs(out[i] - want[i]), 2e-5);
	embed_model_close(m);
	o.max_seq = 65; /* past the position table */
	cr_expect_eq(embed_model_open_opts(dir_f32, &o, &m, &err), VELA_EINVAL);
	o = (embed_model_opts_t){.threads = EMBED_THREADS_MAX + 1};
	cr_expect_eq(embed_model_open_opts(dir_f32, &o, &m, &err), VELA_EINVAL);
	o = (embed_model_opts_t){.batch_tokens = 10};
	cr_expect_eq(embed_model_open_opts(dir_f32, &o, &m, &err), VELA_EINVAL);
}

Test(embed_model, ids_batch_errors, .init = setup_f32, .fini = teardown_dir)
{
	embed_model_t *m;
	vela_err_t err = {0};
	cr_assert_eq(embed_model_open(dir_f32, &m, &err), 0, "%s", err.msg);
	int32_t ids[60] = {2, 5, 3};
	float out[2 * H];
	uint32_t l0[] = {0}, l49[] = {49}, l3[] = {3};
	cr_expect_eq(embed_ids_batch(m, ids, l0, 1, out, &err), VELA_EINVAL);
	cr_expect_eq(embed_ids_batch(m, ids, l49, 1, out, &err), VELA_EINVAL);
	ids[1] = NV;
	cr_expect_eq(embed_ids_batch(m, ids, l3, 1, out, &err), VELA_EINVAL);
	ids[1] = -1;
	cr_expect_eq(embed_ids_batch(m, ids, l3, 1, out, &err), VELA_EINVAL);
	cr_expect_neq(strstr(err.msg, "out of range"), NULL);
	embed_model_close(m);
}

/* Loader errors: each is a clear code and message, and leaks nothing. */
static void expect_open_fails(const model_spec_t *s, int code, const char *needle)
{
	rng = 0x42ull;
	weights_init();
	char dir[64];
	model_write(dir, s);
	embed_model_t *m = (embed_model_t *)0x1;
	vela_err_t err = {0};
	cr_expect_eq(embed_model_open(dir, &m, &err), code, "%s", err.msg);
	cr_expect_null(m);
	cr_expect_neq(strstr(err.msg, needle), NULL, "message '%s' lacks '%s'", err.msg, needle);
	model_rm(dir);
}

Test(embed_model, loader_errors)
{
	expect_open_fails(&(model_spec_t){.skip = "encoder.layer.1.output.dense.bias"},
			  VELA_ECORRUPT, "no tensor encoder.layer.1.output.dense.bias");
	expect_open_fails(&(model_spec_t){.reshape = "embeddings.LayerNorm.bias"}, VELA_ECORRUPT,
			  "wrong shape");
	expect_open_fails(&(model_spec_t){.config = "{\"model_type\":\"bert\",\"hidden_act\":\"relu\"}"},
			  VELA_EUNSUPPORTED, "hidden_act");
	expect_open_fails(&(model_spec_t){.config = "{\"model_type\":\"gpt2\"}"}, VELA_EUNSUPPORTED,
			  "model_type");
	expect_open_fails(&(model_spec_t){.config = "{\"hidden_size\":40}"}, VELA_ECORRUPT,
			  "num_hidden_layers");
	expect_open_fails(&(model_spec_t){.config = "not json"}, VELA_ECORRUPT, "config.json");
	expect_open_fails(&(model_spec_t){.config = "{\"hidden_size\":40,\"num_hidden_layers\":2,"
			  "\"num_attention_heads\":3,\"intermediate_size\":72,"
			  "\"max_position_embeddings\":64,\"vocab_size\":25}"}, VELA_EUNSUPPORTED,
			  "multiple");
	expect_open_fails(&(model_spec_t){.config = "{\"hidden_size\":40,\"num_hidden_layers\":2,"
			  "\"num_attention_heads\":5,\"intermediate_size\":72,"
			  "\"max_position_embeddings\":64,\"vocab_size\":26}"}, VELA_ECORRUPT,
			  "vocab.txt has 25");
	expect_open_fails(&(model_spec_t){.config = "{\"hidden_size\":40,\"num_hidden_layers\":2,"
			  "\"num_attention_heads\":5,\"intermediate_size\":72,"
			  "\"max_position_embeddings\":64,\"vocab_size\":99999999999}"},
			  VELA_ECORRUPT, "vocab_size");
	expect_open_fails(&(model_spec_t){.pooling = "{\"pooling_mode_cls_token\":true}"},
			  VELA_EUNSUPPORTED, "mean pooling");
	embed_model_t *m;
	vela_err_t err = {0};
	cr_expect_eq(embed_model_open("/nonexistent/model", &m, &err), VELA_EIO);
	cr_expect_neq(strstr(err.msg, "config.json"), NULL, "%s", err.msg);
}

/* Element-wise kernels of every table against libm in double. */
Test(embed_model, elementwise_kernels)
{
	embed_kernel_t ks[] = {EMBED_KERNEL_BLAS, EMBED_KERNEL_AVX2, EMBED_KERNEL_AVX512};
	enum { N = 4099 };
	static float y[N], s[3 * 37], x[5 * 44], add[5 * 44], g[44], b[44];
	for (size_t t = 0; t < 3; t++) {
		const embed_kernels_t *k = embed_kernels_get(ks[t]);
		if (k == NULL)
			continue;
		for (int i = 0; i < N; i++)
			y[i] = -14.0f + 28.0f * i / (N - 1);
		k->gelu(y, N);
		for (int i = 0; i < N; i++) {
			double z = (float)(-14.0f + 28.0f * i / (N - 1));
			double want = 0.5 * z * (1 + erf(z / sqrt(2.0)));
			cr_assert_leq(fabs(y[i] - want), 1e-6 * fabs(want) + 1e-7, "%s gelu(%g) = %g, "
				      "want %g", k->name, z, y[i], want);
		}
		for (int i = 0; i < 3 * 37; i++)
			s[i] = (float)rnd(30.0);
		float s0[3 * 37];
		memcpy(s0, s, sizeof(s));
		k->softmax(s, 3, 35, 37, 0.25f); /* rows of 35 at stride 37 */
		for (int r = 0; r < 3; r++) {
			double mx = -1e300, sum = 0;
			for (int j = 0; j < 35; j++)
				mx = fmax(mx, 0.25 * s0[r * 37 + j]);
			for (int j = 0; j < 35; j++)
				sum += exp(0.25 * s0[r * 37 + j] - mx);
			for (int j = 0; j < 35; j++) {
				double want = exp(0.25 * s0[r * 37 + j] - mx) / sum;
				cr_assert_leq(fabs(s[r * 37 + j] - want), 2e-7 + 2e-6 * want, "%s softmax",
					      k->name);
			}
			cr_assert_eq(s[r * 37 + 35], s0[r * 37 + 35]); /* past n: untouched */
		}
		for (int i = 0; i < 5 * 44; i++) {
			x[i] = (float)rnd(3.0) + 100.0f; /* a large mean: variance by centring */
			add[i] = (float)rnd(1.0);
		}
		for (int i = 0; i < 44; i++) {
			g[i] = (float)rnd(1.0) + 1.0f;
			b[i] = (float)rnd(0.5);
		}
		float x0[5 * 44];
		memcpy(x0, x, sizeof(x));
		k->layernorm(x, add, 5, 44, g, b, 1e-12f);
		for (int r = 0; r < 5; r++) {
			double v[44], mean = 0, var = 0;
			for (int i = 0; i < 44; i++)
				mean += v[i] = (double)x0[r * 44 + i] + add[r * 44 + i];
			mean /= 44;
			for (int i = 0; i < 44; i++)
				var += (v[i] - mean) * (v[i] - mean);
			var /= 44;
			for (int i = 0; i < 44; i++) {
				double want = (v[i] - mean) / sqrt(var + 1e-12) * g[i] + b[i];
				cr_assert_leq(fabs(x[r * 44 + i] - want), 2e-4, "%s layernorm", k->name);
			}
		}
	}
}
