// libFuzzer target for query/: parse, explain and evaluate arbitrary text.
// Build (from the repo root; not part of the CMake build):
//   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Iinclude -I. tests/fuzz/fuzz_query.c query/*.c common/error.c -llmdb -lroaring -o build/fuzz/fuzz_query
// Run (new inputs go to the first folder, seeds are read from the second):
//   mkdir -p build/fuzz/corpus && build/fuzz/fuzz_query -max_total_time=60 -max_len=512 -dict=tests/fuzz/query.dict build/fuzz/corpus tests/fuzz/corpus/query
//
// Input: the query text, optionally followed by a NUL and bytes that become
// the value of parameter $x (so parameter values get fuzzed too).
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "query/query.h"

static const struct {
	const char *name;
	query_field_info_t info;
} schema[] = {
	{"t", {VELA_FIELD_TAG, 0, 0, 0, 0}},
	{"T", {VELA_FIELD_TAG, 1, 1, 0, 0}},
	{"n", {VELA_FIELD_NUMERIC, 2, 0, 0, 0}},
	{"s", {VELA_FIELD_TEXT, 3, 0, 0, 0}},
	{"u", {VELA_FIELD_TEXT, 4, 0, 0, 0}},
	{"v", {VELA_FIELD_VECTOR, 5, 0, 2, VELA_VEC_FLOAT32}},
	{"h", {VELA_FIELD_VECTOR, 6, 0, 4, VELA_VEC_FLOAT16}},
};

static int lookup(void *ctx, const char *name, size_t len, query_field_info_t *out)
{
	(void)ctx;
	for (size_t i = 0; i < sizeof(schema) / sizeof(schema[0]); i++)
		if (strlen(schema[i].name) == len && memcmp(schema[i].name, name, len) == 0) {
			*out = schema[i].info;
			return 0;
		}
	return VELA_ENOTFOUND;
}

/* A tiny fake index of 64 docs: membership from a hash of the arguments. */
static uint32_t mix(uint32_t h, const void *p, size_t len)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < len; i++)
		h = (h ^ b[i]) * 16777619u;
	return h;
}

static void fill(roaring_bitmap_t *out, uint32_t h)
{
	for (uint32_t d = 0; d < 64; d++)
		if ((h >> (d % 29)) & 1)
			roaring_bitmap_add(out, d * 3);
}

static int s_all(void *c, roaring_bitmap_t *out)
{
	(void)c;
	roaring_bitmap_add_range(out, 0, 64 * 3);
	return 0;
}

static int s_tag(void *c, uint32_t f, const char *v, size_t len, roaring_bitmap_t *out)
{
	(void)c;
	fill(out, mix(f, v, len));
	return 0;
}

static int s_num(void *c, uint32_t f, double lo, int le, double hi, int he, roaring_bitmap_t *out)
{
	(void)c;
	fill(out, mix(f ^ (uint32_t)le ^ ((uint32_t)he << 1), &lo, sizeof(lo)) ^ mix(7, &hi, sizeof(hi)));
	return 0;
}

static int s_text(void *c, int32_t f, const char *t, size_t len, roaring_bitmap_t *out)
{
	(void)c;
	fill(out, mix((uint32_t)f, t, len));
	return 0;
}

static int s_vr(void *c, uint32_t f, const void *b, size_t len, double r, roaring_bitmap_t *out)
{
	(void)c;
	fill(out, mix(f, b, len) ^ (uint32_t)r);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const float vec[2] = {1, 2};
	const uint8_t *nul = memchr(data, 0, size);
	size_t qlen = nul ? (size_t)(nul - data) : size;
	query_param_t params[] = {
		{"B", 1, vec, 8},
		{"H", 1, "\0\0\0\0\0\0\0\0", 8},
		{"k", 1, "5", 1},
		{"r", 1, "0.5", 3},
		{"p", 1, "Tag Value", 9},
		{"x", 1, nul ? nul + 1 : data, nul ? size - qlen - 1 : 0},
	};
	/* Copy into an exact-size heap buffer so ASan catches any read past len. */
	char *text = malloc(qlen ? qlen : 1);
	if (text == NULL)
		return 0;
	memcpy(text, data, qlen);
	query_t *q = NULL;
	vela_err_t err;
	int rc = query_parse(text, qlen, params, sizeof(params) / sizeof(params[0]), lookup, NULL,
			     &q, &err);
	if (rc == 0) {
		char buf[256];
		int n = query_explain(q, buf, sizeof(buf));
		if (n < 0)
			abort();
		query_source_t src = {.all = s_all, .tag = s_tag, .num_range = s_num,
				      .text_term = s_text, .vector_range = s_vr};
		roaring_bitmap_t *b = NULL;
		if (query_eval(q, &src, &b, &err) != 0 || b == NULL)
			abort(); /* the fake source never fails */
		roaring_bitmap_free(b);
		query_knn(q);
		for (size_t i = 0; i < query_vrange_count(q); i++)
			if (query_vrange_at(q, i) == NULL)
				abort();
		query_free(q);
	} else if (q != NULL || err.code != rc || memchr(err.msg, 0, sizeof(err.msg)) == NULL) {
		abort();
	}
	free(text);
	return 0;
}
