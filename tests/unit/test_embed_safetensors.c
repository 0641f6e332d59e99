/* Unit tests for embed/safetensors.c: valid files in F32, F16 and BF16, and
 * every way a header can lie (length, JSON, dtype, shape, offsets, overlap,
 * gap, truncation): each must give VELA_ECORRUPT with a message, never a
 * crash or a read outside the buffer (ASan watches). When `make models` has
 * run, the real model.safetensors is also opened, and truncated at many
 * points. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "embed/embed.h"
#include "embed/embed_impl.h"

/* A file image: u64 LE header length, the header, then `dlen` data bytes. */
static uint8_t *st_image(const char *header, const void *data, size_t dlen, size_t *len)
{
	size_t hl = strlen(header);
	*len = 8 + hl + dlen;
	uint8_t *b = malloc(*len + 1);
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
	memcpy(b + 8, header, hl);
	if (dlen)
		memcpy(b + 8 + hl, data, dlen);
	return b;
}

/* Parse and expect VELA_ECORRUPT whose message contains `needle`. */
static void expect_corrupt(const char *header, size_t dlen, const char *needle)
{
	uint8_t data[256] = {0};
	size_t len;
	uint8_t *b = st_image(header, data, dlen, &len);
	embed_st_t *st = (embed_st_t *)0x1;
	vela_err_t err = {0};
	int rc = embed_st_parse(b, len, &st, &err);
	cr_expect_eq(rc, VELA_ECORRUPT, "header %s: rc %d (%s)", header, rc, err.msg);
	cr_expect_null(st);
	cr_expect_neq(strstr(err.msg, needle), NULL, "header %s: message '%s' lacks '%s'", header,
		      err.msg, needle);
	free(b);
}

Test(embed_safetensors, valid_f32_f16_bf16)
{
	/* 2x2 F32, 3 F16 (1, -2, 0.5), 2 BF16 (1, -3); a scalar I64; metadata. */
	uint8_t data[16 + 6 + 4 + 8];
	float f[4] = {1.5f, -2.0f, 3.25f, 1e-3f};
	uint16_t h[3] = {0x3c00, 0xc000, 0x3800}, bf[2] = {0x3f80, 0xc040};
	int64_t s = 7;
	memcpy(data, f, 16);
	memcpy(data + 16, h, 6);
	memcpy(data + 22, bf, 4);
	memcpy(data + 26, &s, 8);
	const char *hdr = "{\"__metadata__\":{\"format\":\"pt\"},"
			  "\"b\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[16,22]},"
			  "\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
			  "\"s\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[26,34]},"
			  "\"c\":{\"dtype\":\"BF16\",\"shape\":[1,2],\"data_offsets\":[22,26]}}";
	size_t len;
	uint8_t *b = st_image(hdr, data, sizeof(data), &len);
	embed_st_t *st;
	vela_err_t err = {0};
	cr_assert_eq(embed_st_parse(b, len, &st, &err), 0, "%s", err.msg);
	cr_expect_eq(embed_st_count(st), 4);
	cr_expect_str_eq(embed_st_metadata(st, "format"), "pt");
	cr_expect_null(embed_st_metadata(st, "nope"));
	cr_expect_str_eq(embed_st_at(st, 0)->name, "a"); /* ordered by offset */
	const embed_st_tensor_t *a = embed_st_find(st, "a"), *hb = embed_st_find(st, "b"),
				*c = embed_st_find(st, "c"), *sc = embed_st_find(st, "s");
	cr_assert(a && hb && c && sc);
	cr_expect_eq(a->ndim, 2);
	cr_expect_eq(a->shape[1], 2);
	cr_expect_eq(sc->ndim, 0);
	cr_expect_eq(sc->numel, 1);
	float out[4];
	cr_assert_eq(embed_st_to_f32(a, out, 4, &err), 0);
	cr_expect_eq(memcmp(out, f, 16), 0);
	cr_assert_eq(embed_st_to_f32(hb, out, 3, &err), 0);
	cr_expect(out[0] == 1.0f && out[1] == -2.0f && out[2] == 0.5f);
	cr_assert_eq(embed_st_to_f32(c, out, 2, &err), 0);
	cr_expect(out[0] == 1.0f && out[1] == -3.0f);
	cr_expect_eq(embed_st_to_f32(sc, out, 1, &err), VELA_ETYPE);
	cr_expect_eq(embed_st_to_f32(a, out, 3, &err), VELA_EDIM);
	cr_expect_null(embed_st_find(st, "zz"));
	embed_st_close(st);
	free(b);
}

Test(embed_safetensors, half_conversion_exact)
{
	/* Every binary16 pattern against ldexp from the format definition. */
	for (uint32_t u = 0; u < 65536; u++) {
		int e = (u >> 10) & 0x1f, m = u & 0x3ff;
		double s = (u & 0x8000) ? -1.0 : 1.0, want;
		if (e == 31)
			want = m ? NAN : s * INFINITY;
		else if (e == 0)
			want = s * ldexp(m, -24);
		else
			want = s * ldexp(1024 + m, e - 25);
		float got = embed_f16_to_f32((uint16_t)u);
		if (isnan(want))
			cr_assert(isnan(got), "half 0x%04x", u);
		else
			cr_assert(got == (float)want && !signbit(got) == !signbit(want), "half 0x%04x: %g",
				  u, got);
	}
}

Test(embed_safetensors, empty_and_zero_sized)
{
	size_t len;
	uint8_t *b = st_image("{}", NULL, 0, &len);
	embed_st_t *st;
	vela_err_t err;
	cr_assert_eq(embed_st_parse(b, len, &st, &err), 0, "%s", err.msg);
	cr_expect_eq(embed_st_count(st), 0);
	embed_st_close(st);
	free(b);
	b = st_image("{\"z\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[0,0]},"
		     "\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", "xy", 2, &len);
	cr_assert_eq(embed_st_parse(b, len, &st, &err), 0, "%s", err.msg);
	cr_expect_eq(embed_st_find(st, "z")->numel, 0);
	embed_st_close(st);
	free(b);
}

Test(embed_safetensors, header_length_lies)
{
	uint8_t b[64] = {0};
	embed_st_t *st;
	vela_err_t err = {0};
	cr_expect_eq(embed_st_parse(b, 5, &st, &err), VELA_ECORRUPT); /* shorter than 8 */
	cr_expect_neq(strstr(err.msg, "shorter"), NULL, "%s", err.msg);
	cr_expect_eq(embed_st_parse(b, 0, &st, &err), VELA_ECORRUPT);
	/* Length past the end of the buffer, huge, or zero. */
	uint64_t lens[] = {57, 1000, 0xffffffffffffffffull, 100000001, 0, 1};
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		for (int k = 0; k < 8; k++)
			b[k] = (uint8_t)(lens[i] >> (8 * k));
		memset(b + 8, ' ', sizeof(b) - 8);
		cr_expect_eq(embed_st_parse(b, sizeof(b), &st, &err), VELA_ECORRUPT, "len %llu",
			     (unsigned long long)lens[i]);
		cr_expect_neq(strstr(err.msg, "header length"), NULL, "%s", err.msg);
	}
}

Test(embed_safetensors, bad_json)
{
	expect_corrupt("{\"a\":", 0, "JSON");
	expect_corrupt("[1,2,3]", 0, "not a JSON object");
	expect_corrupt("{\"a\":1}", 0, "entry must be an object");
	expect_corrupt("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
		       "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "JSON");
	expect_corrupt("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4,
		       "exactly dtype");
	expect_corrupt("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"offsets\":[0,4]}}", 4, "needs");
	expect_corrupt("{\"__metadata__\":{\"k\":1}}", 0, "__metadata__");
	expect_corrupt("{\"__metadata__\":[]}", 0, "__metadata__");
	expect_corrupt("{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "name");
	/* Invalid UTF-8 inside the header. */
	expect_corrupt("{\"\xff\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
		       "JSON");
}

Test(embed_safetensors, bad_dtype_and_shape)
{
	expect_corrupt("{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
		       "unknown dtype");
	expect_corrupt("{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
		       "unknown dtype");
	expect_corrupt("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
		       "shape[0]");
	expect_corrupt("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4,
		       "shape[0]");
	expect_corrupt("{\"a\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}", 4, "shape");
	expect_corrupt("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],"
		       "\"data_offsets\":[0,4]}}", 4, "shape");
	/* numel * size must equal the byte range; overflowing products too. */
	expect_corrupt("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
		       "bytes for");
	expect_corrupt("{\"a\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,4]}}", 4,
		       "bytes for");
	expect_corrupt("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
		       "\"data_offsets\":[0,4]}}", 4, "overflows");
	expect_corrupt("{\"a\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],"
		       "\"data_offsets\":[0,8]}}", 8, "bytes for");
}

Test(embed_safetensors, bad_offsets)
{
	expect_corrupt("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4,
		       "data_offsets");
	expect_corrupt("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4,
		       "data_offsets");
	expect_corrupt("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,-4]}}", 4,
		       "data_offsets");
	/* Past the end (a truncated file). */
	expect_corrupt("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8,
		       "truncated");
	/* Overlap, gap, a hole at the start, bytes left over. */
	expect_corrupt("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
		       "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
		       "overlaps");
	expect_corrupt("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
		       "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, "gap");
	expect_corrupt("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "gap");
	expect_corrupt("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8,
		       "cover 4 bytes");
	expect_corrupt("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
		       "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8,
		       "overlaps");
}

Test(embed_safetensors, open_errors)
{
	embed_st_t *st;
	vela_err_t err = {0};
	cr_expect_eq(embed_st_open("/nonexistent/model.safetensors", &st, &err), VELA_EIO);
	cr_expect_neq(strstr(err.msg, "cannot open"), NULL);
	cr_expect_eq(embed_st_open("/tmp", &st, &err), VELA_EIO);
	cr_expect_eq(embed_st_open(NULL, &st, &err), VELA_EINVAL);
	/* A real file on disk: empty, then valid. */
	char path[] = "/tmp/vela-st-XXXXXX";
	int fd = mkstemp(path);
	cr_assert(fd >= 0);
	cr_expect_eq(embed_st_open(path, &st, &err), VELA_ECORRUPT);
	size_t len;
	uint8_t *b = st_image("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
			      "\0\0\x80?", 4, &len);
	cr_assert_eq(write(fd, b, len), (ssize_t)len);
	close(fd);
	cr_assert_eq(embed_st_open(path, &st, &err), 0, "%s", err.msg);
	float v;
	cr_expect_eq(embed_st_to_f32(embed_st_find(st, "a"), &v, 1, &err), 0);
	cr_expect_eq(v, 1.0f);
	embed_st_close(st);
	unlink(path);
	free(b);
}

/* The real file, when present: opens, holds the 103 MiniLM tensors plus
 * position_ids; every truncation of it is refused. */
Test(embed_safetensors, real_model_truncated)
{
	const char *env = getenv("VELA_MODELS_DIR");
	char path[4096];
	if (env)
		snprintf(path, sizeof(path), "%s/all-MiniLM-L6-v2/model.safetensors", env);
	else
		snprintf(path, sizeof(path), "%.*s/../../models/all-MiniLM-L6-v2/model.safetensors",
			 (int)(strrchr(__FILE__, '/') - __FILE__), __FILE__);
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		cr_skip_test("no %s: run `make models` (or set VELA_MODELS_DIR) for this test", path);
	fseek(f, 0, SEEK_END);
	size_t len = (size_t)ftell(f);
	fseek(f, 0, SEEK_SET);
	uint8_t *b = malloc(len);
	cr_assert_eq(fread(b, 1, len, f), len);
	fclose(f);
	embed_st_t *st;
	vela_err_t err;
	cr_assert_eq(embed_st_parse(b, len, &st, &err), 0, "%s", err.msg);
	cr_expect_eq(embed_st_count(st), 104);
	const embed_st_tensor_t *w = embed_st_find(st, "embeddings.word_embeddings.weight");
	cr_assert_not_null(w);
	cr_expect_eq(w->shape[0], 30522);
	cr_expect_eq(w->shape[1], 384);
	embed_st_close(st);
	size_t cuts[] = {0, 1, 7, 8, 9, 100, 1000, 11415, 11416, 11417, 50000, len / 2, len - 4,
			 len - 1};
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		st = (embed_st_t *)0x1;
		cr_expect_eq(embed_st_parse(b, cuts[i], &st, &err), VELA_ECORRUPT, "cut at %zu",
			     cuts[i]);
		cr_expect_null(st);
	}
	free(b);
}
