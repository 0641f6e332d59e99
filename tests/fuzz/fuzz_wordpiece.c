// libFuzzer target for embed/wordpiece.c and embed/vocab.c: arbitrary text
// tokenized with a fixed vocabulary, or with a vocabulary taken from the
// input. A valid UTF-8 text must tokenize (and an invalid one must fail
// with VELA_EINVAL); the ids must be [CLS] ... [SEP], in range, at most
// max_ids of them, and a prefix of the ids with a larger limit.
// Build (from the repo root; not part of the CMake build):
//   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Iinclude -I. tests/fuzz/fuzz_wordpiece.c embed/wordpiece.c embed/vocab.c common/*.c -lutf8proc -llmdb -lxxhash -lm -o build/fuzz/fuzz_wordpiece
// Run (new inputs go to the first folder, seeds are read from the second):
//   mkdir -p build/fuzz/corpus_wordpiece && build/fuzz/fuzz_wordpiece -max_total_time=60 -max_len=4096 build/fuzz/corpus_wordpiece tests/fuzz/corpus/wordpiece
//
// Input: one control byte, then the text.
//   bits 0-6: max_ids - 2 (so 2..129);
//   bit 7:    the text runs to the first NUL; what follows is a vocab.txt
//             (its load may fail cleanly, then nothing else happens).
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "embed/embed.h"

static const char fixed_vocab[] =
	"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\n##s\na\n##a\n##b\nb\n,\n.\n!\n"
	"cafe\n##e\ne\n中\n国\nσ\n##σ\nun\n##aff\n##able\n'\n[\n]\nhello\nworld\n";

static embed_vocab_t *fixed;

/* Independent strict UTF-8 check (RFC 3629). */
static int utf8_valid(const uint8_t *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		uint8_t c = s[i];
		size_t k;
		uint32_t v, min;
		if (c < 0x80) {
			i++;
			continue;
		} else if (c >= 0xc2 && c <= 0xdf) {
			k = 1, v = c & 0x1f, min = 0x80;
		} else if (c >= 0xe0 && c <= 0xef) {
			k = 2, v = c & 0x0f, min = 0x800;
		} else if (c >= 0xf0 && c <= 0xf4) {
			k = 3, v = c & 0x07, min = 0x10000;
		} else {
			return 0;
		}
		for (size_t j = 1; j <= k; j++) {
			if (i + j >= n || (s[i + j] & 0xc0) != 0x80)
				return 0;
			v = (v << 6) | (s[i + j] & 0x3f);
		}
		if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
			return 0;
		i += k + 1;
	}
	return 1;
}

static void run(const embed_vocab_t *v, const uint8_t *text, size_t len, size_t max)
{
	int32_t ids[130], more[260];
	size_t n = 0, n2 = 0;
	vela_err_t err = {0};
	int rc = embed_tokenize(v, (const char *)text, len, ids, max, &n, &err);
	if (rc != 0) {
		if (rc != VELA_EINVAL || utf8_valid(text, len) || err.msg[0] == '\0')
			abort();
		return;
	}
	if (!utf8_valid(text, len) || n < 2 || n > max)
		abort();
	if (ids[0] != embed_vocab_cls(v) || ids[n - 1] != embed_vocab_sep(v))
		abort();
	for (size_t i = 0; i < n; i++)
		if (ids[i] < 0 || (size_t)ids[i] >= embed_vocab_size(v))
			abort();
	/* Truncation keeps a prefix: with twice the room, the first n - 1 agree. */
	if (embed_tokenize(v, (const char *)text, len, more, 2 * max, &n2, NULL) != 0 || n2 < n)
		abort();
	if (memcmp(ids, more, (n - 1) * sizeof(int32_t)) != 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (fixed == NULL && embed_vocab_parse(fixed_vocab, sizeof(fixed_vocab) - 1, &fixed, NULL))
		abort();
	if (size < 1)
		return 0;
	size_t max = (size_t)(data[0] & 0x7f) + 2;
	const uint8_t *text = data + 1;
	size_t len = size - 1;
	uint8_t *copy;
	if (data[0] & 0x80) {
		const uint8_t *nul = memchr(text, 0, len);
		if (nul == NULL)
			return 0;
		embed_vocab_t *v = NULL;
		size_t tl = (size_t)(nul - text);
		if (embed_vocab_parse((const char *)nul + 1, len - tl - 1, &v, NULL) == 0) {
			copy = malloc(tl ? tl : 1);
			memcpy(copy, text, tl);
			run(v, copy, tl, max);
			free(copy);
			embed_vocab_free(v);
		}
		return 0;
	}
	copy = malloc(len ? len : 1); /* exact size: ASan sees any overread */
	memcpy(copy, text, len);
	run(fixed, copy, len, max);
	free(copy);
	return 0;
}
