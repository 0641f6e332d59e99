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

#define GOLDEN_WHAT "sentence-transformers golden test"
#include "test_embed_golden.h"

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
