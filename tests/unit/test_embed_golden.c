/* Golden test of the real all-MiniLM-L6-v2 (needs `make models`; skipped
 * with a message otherwise): 60 sentences embedded by sentence-transformers
 * once (tests/data/embed/make_golden.py -> sentences.json, embeddings.f32)
 * must come out with cosine >= 0.9999 each, from every kernel table the CPU
 * has; a packed batch must give the vectors of one-by-one calls, and so must
 * two threads. The model directory: $VELA_MODELS_DIR/all-MiniLM-L6-v2, else
 * models/all-MiniLM-L6-v2 in the source tree. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "embed/embed.h"

#define DIM 384
#define COS_MIN 0.9999

static char model_dir[4096];
static json_t *sent_root;
static const char **texts;
static size_t *lens, n_texts;
static float *gold;

static void source_path(char *out, size_t cap, const char *rel)
{
	snprintf(out, cap, "%.*s/../../%s", (int)(strrchr(__FILE__, '/') - __FILE__), __FILE__, rel);
}

static void golden_load(void)
{
	const char *env = getenv("VELA_MODELS_DIR");
	char path[4200];
	struct stat sb;
	if (env)
		snprintf(model_dir, sizeof(model_dir), "%s/all-MiniLM-L6-v2", env);
	else
		source_path(model_dir, sizeof(model_dir), "models/all-MiniLM-L6-v2");
	snprintf(path, sizeof(path), "%s/model.safetensors", model_dir);
	if (stat(path, &sb) != 0)
		cr_skip_test("no %s: run `make models` (or set VELA_MODELS_DIR) for the "
			     "sentence-transformers golden test", path);
	source_path(path, sizeof(path), "tests/data/embed/sentences.json");
	json_error_t je;
	sent_root = json_load_file(path, 0, &je);
	cr_assert_not_null(sent_root, "%s: %s", path, je.text);
	json_t *s = json_object_get(sent_root, "sentences");
	n_texts = json_array_size(s);
	cr_assert_geq(n_texts, 50);
	texts = calloc(n_texts, sizeof(*texts));
	lens = calloc(n_texts, sizeof(*lens));
	for (size_t i = 0; i < n_texts; i++) {
		texts[i] = json_string_value(json_array_get(s, i));
		lens[i] = json_string_length(json_array_get(s, i));
	}
	source_path(path, sizeof(path), "tests/data/embed/embeddings.f32");
	FILE *f = fopen(path, "rb");
	cr_assert_not_null(f, "%s", path);
	gold = malloc(n_texts * DIM * sizeof(float));
	cr_assert_eq(fread(gold, sizeof(float), n_texts * DIM, f), n_texts * DIM);
	fclose(f);
}

static void golden_free(void)
{
	json_decref(sent_root);
	free(texts);
	free(lens);
	free(gold);
}

static double cosine(const float *a, const float *b)
{
	double d = 0, na = 0, nb = 0;
	for (int i = 0; i < DIM; i++) {
		d += (double)a[i] * b[i];
		na += (double)a[i] * a[i];
		nb += (double)b[i] * b[i];
	}
	return d / sqrt(na * nb);
}

static embed_model_t *open_or_skip(embed_kernel_t k, uint32_t threads)
{
	/* The CPU kernels (a GPU's F16 vectors may differ with the batch's
	 * shape past 1e-6: test_embed_gpu covers the device). */
	embed_model_opts_t o = {.kernel = k, .threads = threads, .device = EMBED_DEVICE_CPU};
	embed_model_t *m = NULL;
	vela_err_t err = {0};
	int rc = embed_model_open_opts(model_dir, &o, &m, &err);
	if (rc == VELA_EUNSUPPORTED)
		return NULL;
	cr_assert_eq(rc, 0, "%s", err.msg);
	cr_assert_eq(embed_model_dim(m), DIM);
	cr_assert_eq(embed_model_max_seq(m), 256);
	return m;
}

static void check_kernel(embed_kernel_t k)
{
	embed_model_t *m = open_or_skip(k, 1);
	if (m == NULL)
		return;
	float *v = malloc(n_texts * DIM * sizeof(float));
	vela_err_t err = {0};
	cr_assert_eq(embed_text_batch(m, texts, lens, n_texts, v, &err), 0, "%s", err.msg);
	double worst = 1;
	for (size_t i = 0; i < n_texts; i++) {
		double c = cosine(v + i * DIM, gold + i * DIM);
		worst = c < worst ? c : worst;
		cr_expect_geq(c, COS_MIN, "%s: sentence %zu '%.50s': cosine %.7f",
			      embed_model_kernel_name(m), i, texts[i], c);
	}
	cr_log_info("%s: worst cosine over %zu sentences %.8f", embed_model_kernel_name(m),
		    n_texts, worst);
	free(v);
	embed_model_close(m);
}

Test(embed_golden, blas, .init = golden_load, .fini = golden_free, .timeout = 120)
{
	check_kernel(EMBED_KERNEL_BLAS);
}

Test(embed_golden, avx2, .init = golden_load, .fini = golden_free, .timeout = 120)
{
	check_kernel(EMBED_KERNEL_AVX2);
}

Test(embed_golden, avx512, .init = golden_load, .fini = golden_free, .timeout = 120)
{
	check_kernel(EMBED_KERNEL_AVX512);
}

/* One packed batch against one call per sentence, each way on one thread
 * and on two (chunks split between threads; a team sharing one pass). */
Test(embed_golden, batch_equals_one_by_one, .init = golden_load, .fini = golden_free,
     .timeout = 120)
{
	embed_model_t *m1 = open_or_skip(EMBED_KERNEL_AUTO, 1);
	embed_model_t *m2 = open_or_skip(EMBED_KERNEL_AUTO, 2);
	float *b = malloc(n_texts * DIM * sizeof(float)), one[DIM];
	vela_err_t err = {0};
	cr_assert_eq(embed_text_batch(m2, texts, lens, n_texts, b, &err), 0, "%s", err.msg);
	for (size_t i = 0; i < n_texts; i++) {
		embed_model_t *m = i % 2 ? m1 : m2;
		cr_assert_eq(embed_text_batch(m, &texts[i], &lens[i], 1, one, &err), 0);
		double worst = 0;
		for (int d = 0; d < DIM; d++)
			worst = fmax(worst, fabs(one[d] - b[i * DIM + d]));
		cr_expect_leq(worst, 1e-6, "sentence %zu: batch and alone differ by %g", i, worst);
		if (i == 0) { /* one thread, one chunk: the same vectors */
			float *b1 = malloc(n_texts * DIM * sizeof(float));
			cr_assert_eq(embed_text_batch(m1, texts, lens, n_texts, b1, &err), 0);
			for (size_t k = 0; k < n_texts * DIM; k++)
				cr_assert_leq(fabs(b1[k] - b[k]), 1e-6);
			free(b1);
		}
		cr_expect_geq(cosine(one, gold + i * DIM), COS_MIN);
	}
	free(b);
	embed_model_close(m1);
	embed_model_close(m2);
}
