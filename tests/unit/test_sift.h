/* The sift-5k sample (../shared/data/sift-5k.tsv: 128 tab-separated floats
 * and an id per line) for tests that want real vectors. Looked for next to
 * the checkout, then at /work/shared/data. */
#ifndef VELA_TEST_SIFT_H
#define VELA_TEST_SIFT_H

#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define TEST_SIFT_DIM 128u

/* Where the file was looked for first (for skip messages). */
static char test_sift_path[4096];

/* Read n rows into base and the next nq rows into queries; false if absent. */
static inline bool test_sift_read(float *base, uint32_t n, float *queries, uint32_t nq)
{
	const char *src = __FILE__, *cut = strstr(src, "tests/unit/");
	snprintf(test_sift_path, sizeof(test_sift_path), "%.*s../shared/data/sift-5k.tsv",
		 cut ? (int)(cut - src) : 0, src);
	FILE *fp = fopen(test_sift_path, "r");
	if (fp == NULL)
		fp = fopen("/work/shared/data/sift-5k.tsv", "r");
	if (fp == NULL)
		return false;
	for (uint32_t i = 0; i < n + nq; i++) {
		float *v = i < n ? base + (size_t)i * TEST_SIFT_DIM
				 : queries + (size_t)(i - n) * TEST_SIFT_DIM;
		for (uint32_t j = 0; j < TEST_SIFT_DIM; j++)
			cr_assert_eq(fscanf(fp, "%f", &v[j]), 1);
		unsigned id;
		cr_assert_eq(fscanf(fp, "%u", &id), 1);
	}
	fclose(fp);
	return true;
}

#endif
