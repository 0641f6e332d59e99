// libFuzzer target for embed/safetensors.c: arbitrary bytes parsed as a
// safetensors file must either fail with VELA_ECORRUPT and a message, or
// give tensors whose byte ranges lie inside the buffer, tile it exactly in
// offset order, match dtype x shape, and convert to float (F32/F16/BF16)
// without reading outside it (ASan watches every byte).
// Build (from the repo root; not part of the CMake build):
//   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Iinclude -I. tests/fuzz/fuzz_safetensors.c embed/safetensors.c common/*.c -ljansson -llmdb -lxxhash -lm -o build/fuzz/fuzz_safetensors
// Run (new inputs go to the first folder, seeds are read from the second):
//   mkdir -p build/fuzz/corpus_safetensors && build/fuzz/fuzz_safetensors -max_total_time=60 -max_len=4096 -dict=tests/fuzz/safetensors.dict build/fuzz/corpus_safetensors tests/fuzz/corpus/safetensors
//
// Input: one control byte, then the file.
//   bit 0 clear: the rest is the whole file, as read from disk (the 8-byte
//          length fuzzed too);
//   bit 0 set:   two bytes (LE) give a data size D, the rest is the JSON
//          header; the target writes the true header length and D data
//          bytes, so the fuzzer reaches the field checks past the length.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "embed/embed.h"

#define FLOATS_MAX (1u << 16) /* convert tensors up to this many values */

static uint8_t *wrap(const uint8_t *in, size_t n, size_t *len)
{
	if (n < 2)
		return NULL;
	size_t d = (size_t)in[0] | ((size_t)in[1] << 8), hl = n - 2;
	*len = 8 + hl + d;
	uint8_t *b = malloc(*len ? *len : 1);
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
	memcpy(b + 8, in + 2, hl);
	for (size_t i = 0; i < d; i++)
		b[8 + hl + i] = (uint8_t)(i * 37u + 11u);
	return b;
}

static void check(const embed_st_t *st, const uint8_t *buf, size_t len)
{
	static float tmp[FLOATS_MAX];
	size_t n = embed_st_count(st);
	const uint8_t *expect = NULL;
	for (size_t i = 0; i < n; i++) {
		const embed_st_tensor_t *t = embed_st_at(st, i);
		const uint8_t *p = t->data;
		if (p < buf || p + t->nbytes > buf + len)
			abort(); /* outside the file */
		if (expect != NULL && p != expect)
			abort(); /* gap or overlap */
		expect = p + t->nbytes;
		if (t->numel * embed_dtype_size(t->dtype) != t->nbytes || t->ndim > EMBED_ST_NDIM_MAX)
			abort();
		if (embed_st_find(st, t->name) == NULL)
			abort();
		if (t->numel <= FLOATS_MAX) {
			int rc = embed_st_to_f32(t, tmp, (size_t)t->numel, NULL);
			int fl = t->dtype == EMBED_DT_F32 || t->dtype == EMBED_DT_F16 ||
				 t->dtype == EMBED_DT_BF16;
			if ((rc == 0) != fl)
				abort();
		}
	}
	if (n > 0 && expect != buf + len)
		abort(); /* must end exactly at EOF */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t len = size - 1;
	uint8_t *owned = NULL;
	const uint8_t *buf = data + 1;
	if (data[0] & 1) {
		owned = wrap(data + 1, size - 1, &len);
		if (owned == NULL)
			return 0;
		buf = owned;
	} else {
		owned = malloc(len ? len : 1); /* exact size: ASan sees any overread */
		memcpy(owned, buf, len);
		buf = owned;
	}
	embed_st_t *st = NULL;
	vela_err_t err = {0};
	int rc = embed_st_parse(buf, len, &st, &err);
	if (rc == 0) {
		check(st, buf, len);
		embed_st_close(st);
	} else if (rc != VELA_ECORRUPT || err.msg[0] == '\0' || st != NULL) {
		abort();
	}
	free(owned);
	return 0;
}
