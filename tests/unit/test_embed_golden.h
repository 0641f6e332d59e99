/* The sentence-transformers golden set of all-MiniLM-L6-v2 for the embed
 * tests (tests/data/embed/make_golden.py -> sentences.json, embeddings.f32)
 * and where the model is: $VELA_MODELS_DIR/all-MiniLM-L6-v2, else
 * models/all-MiniLM-L6-v2 in the source tree. golden_load skips the test
 * (naming GOLDEN_WHAT, which the includer defines) when `make models` was
 * not run. One translation unit per test binary includes it. */
#ifndef VELA_TEST_EMBED_GOLDEN_H
#define VELA_TEST_EMBED_GOLDEN_H

#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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
			     "%s", path, GOLDEN_WHAT);
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

#endif
