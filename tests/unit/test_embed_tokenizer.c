/* Unit tests for the WordPiece tokenizer (embed/wordpiece.c, embed/vocab.c):
 * the BERT rules on a tiny hand-made vocabulary (always run), then ids
 * identical to the HF `tokenizers` package on the tricky corpus of
 * tests/data/embed/tokenizer.json with the real vocabulary (run when
 * `make models` has been done; tests/data/embed/make_golden.py made it). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embed/embed.h"

static const char tiny_vocab[] =
	"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n"          /* 0..4 */
	"hello\nworld\nun\n##aff\n##able\n"             /* 5..9 */
	",\n!\ncafe\n中\n国\n"                          /* 10..14 */
	"a\n##a\nσ\n##σ\n.\n"                           /* 15..19 */
	"x\n##y\ni\n'\ns\n";                            /* 20..24 */

static embed_vocab_t *tiny(void)
{
	embed_vocab_t *v;
	vela_err_t err;
	cr_assert_eq(embed_vocab_parse(tiny_vocab, sizeof(tiny_vocab) - 1, &v, &err), 0, "%s",
		     err.msg);
	return v;
}

/* Tokenize and compare with the expected ids (CLS/SEP included). */
static void expect_ids(const embed_vocab_t *v, const char *text, size_t len, size_t max,
		       const int32_t *want, size_t n_want)
{
	int32_t ids[600];
	size_t n = 0;
	vela_err_t err = {0};
	cr_assert_eq(embed_tokenize(v, text, len, ids, max, &n, &err), 0, "%s", err.msg);
	cr_expect_eq(n, n_want, "'%.40s': %zu ids, want %zu", text, n, n_want);
	for (size_t i = 0; i < n && i < n_want; i++)
		cr_expect_eq(ids[i], want[i], "'%.40s': id %zu is %d, want %d", text, i, ids[i],
			     want[i]);
}

#define EXPECT(v, text, ...)                                                                \
	do {                                                                                \
		const int32_t w_[] = {__VA_ARGS__};                                           \
		expect_ids(v, text, strlen(text), 256, w_, sizeof(w_) / sizeof(w_[0]));       \
	} while (0)

Test(embed_tokenizer, vocab_basics)
{
	embed_vocab_t *v = tiny();
	cr_expect_eq(embed_vocab_size(v), 25);
	cr_expect_eq(embed_vocab_cls(v), 2);
	cr_expect_eq(embed_vocab_sep(v), 3);
	cr_expect_eq(embed_vocab_unk(v), 1);
	cr_expect_eq(embed_vocab_id(v, "##aff", 5), 8);
	cr_expect_eq(embed_vocab_id(v, "nope", 4), -1);
	cr_expect_str_eq(embed_vocab_token(v, 13), "中");
	cr_expect_null(embed_vocab_token(v, 25));
	embed_vocab_free(v);
}

Test(embed_tokenizer, vocab_errors)
{
	embed_vocab_t *v;
	vela_err_t err = {0};
	const char dup[] = "[UNK]\n[CLS]\n[SEP]\na\na\n";
	cr_expect_eq(embed_vocab_parse(dup, sizeof(dup) - 1, &v, &err), VELA_ECORRUPT);
	cr_expect_neq(strstr(err.msg, "lines 4 and 5"), NULL, "%s", err.msg);
	const char nounk[] = "[CLS]\n[SEP]\n";
	cr_expect_eq(embed_vocab_parse(nounk, sizeof(nounk) - 1, &v, &err), VELA_ECORRUPT);
	cr_expect_neq(strstr(err.msg, "[UNK]"), NULL, "%s", err.msg);
	const char nul[] = "[UNK]\n[CLS]\n[SEP]\na\0b\n";
	cr_expect_eq(embed_vocab_parse(nul, sizeof(nul) - 1, &v, &err), VELA_ECORRUPT);
	char *lng = malloc(400);
	memset(lng, 'q', 399);
	lng[399] = '\n';
	cr_expect_eq(embed_vocab_parse(lng, 400, &v, &err), VELA_ECORRUPT);
	free(lng);
	cr_expect_eq(embed_vocab_parse("", 0, &v, &err), VELA_ECORRUPT);
	cr_expect_eq(embed_vocab_load("/nonexistent/vocab.txt", &v, &err), VELA_EIO);
	/* CRLF line ends and a last line without one are fine. */
	const char crlf[] = "[UNK]\r\n[CLS]\r\n[SEP]\r\nx";
	cr_assert_eq(embed_vocab_parse(crlf, sizeof(crlf) - 1, &v, &err), 0, "%s", err.msg);
	cr_expect_eq(embed_vocab_id(v, "x", 1), 3);
	cr_expect_eq(embed_vocab_id(v, "[SEP]", 5), 2);
	embed_vocab_free(v);
}

Test(embed_tokenizer, split_lowercase_punct)
{
	embed_vocab_t *v = tiny();
	EXPECT(v, "", 2, 3);
	EXPECT(v, "   \t\n ", 2, 3);
	EXPECT(v, "Hello, WORLD!", 2, 5, 10, 6, 11, 3);
	EXPECT(v, "hello,world!!", 2, 5, 10, 6, 11, 11, 3);
	EXPECT(v, "i's", 2, 22, 23, 24, 3);
	EXPECT(v, "hello\xc2\xa0world\xe3\x80\x80hello\xe2\x80\xa8world", 2, 5, 6, 5, 6, 3);
	embed_vocab_free(v);
}

Test(embed_tokenizer, wordpiece_greedy)
{
	embed_vocab_t *v = tiny();
	EXPECT(v, "unaffable", 2, 7, 8, 9, 3);
	EXPECT(v, "UnAffAble world", 2, 7, 8, 9, 6, 3);
	EXPECT(v, "unaffablez", 2, 1, 3);      /* any failure: the whole word is [UNK] */
	EXPECT(v, "xyy", 2, 20, 21, 21, 3);
	EXPECT(v, "yx hello", 2, 1, 5, 3);     /* no word-initial "y" */
	EXPECT(v, "xy.xy", 2, 20, 21, 19, 20, 21, 3);
	embed_vocab_free(v);
}

Test(embed_tokenizer, accents_cjk_controls)
{
	embed_vocab_t *v = tiny();
	EXPECT(v, "Café CAFÉ cafe\xcc\x81", 2, 12, 12, 12, 3);
	EXPECT(v, "中国", 2, 13, 14, 3);
	EXPECT(v, "hello中国world", 2, 5, 13, 14, 6, 3);
	EXPECT(v, "hel\x01lo wor\x7f\xe2\x80\x8bld", 2, 5, 6, 3); /* Cc and Cf dropped */
	EXPECT(v, "hel\xef\xbf\xbdlo", 2, 5, 3);               /* U+FFFD dropped */
	EXPECT(v, "ΣΣ", 2, 17, 18, 3);                         /* lowercased σ ##σ */
	embed_vocab_free(v);
}

Test(embed_tokenizer, word_length_limit)
{
	embed_vocab_t *v = tiny();
	char buf[512];
	int32_t want[110];
	memset(buf, 'a', 100);
	want[0] = 2;
	want[1] = 15;
	for (int i = 2; i <= 100; i++)
		want[i] = 16;
	want[101] = 3;
	expect_ids(v, buf, 100, 256, want, 102); /* a ##a x 99 */
	memset(buf, 'A', 101);
	const int32_t unk[] = {2, 1, 3};
	expect_ids(v, buf, 101, 256, unk, 3);
	/* 101 characters of two bytes each: still counted in characters. */
	for (int i = 0; i < 101; i++)
		memcpy(buf + 2 * i, "\xcf\x83", 2); /* σ */
	expect_ids(v, buf, 202, 256, unk, 3);
	embed_vocab_free(v);
}

Test(embed_tokenizer, truncation)
{
	embed_vocab_t *v = tiny();
	const int32_t w5[] = {2, 5, 6, 5, 3}, w2[] = {2, 3}, w3[] = {2, 7, 3};
	expect_ids(v, "hello world hello world hello", 29, 5, w5, 5);
	expect_ids(v, "hello world", 11, 2, w2, 2);
	expect_ids(v, "unaffable", 9, 3, w3, 3); /* cut inside a word's pieces */
	int32_t ids[4];
	size_t n;
	cr_expect_eq(embed_tokenize(v, "x", 1, ids, 1, &n, NULL), VELA_EINVAL);
	embed_vocab_free(v);
}

Test(embed_tokenizer, special_tokens_in_text)
{
	embed_vocab_t *v = tiny();
	EXPECT(v, "hello [SEP] world", 2, 5, 3, 6, 3);
	EXPECT(v, "x[CLS]x[MASK][PAD][UNK]", 2, 20, 2, 20, 4, 0, 1, 3);
	EXPECT(v, "[cls]", 2, 1, 1, 1, 3); /* only the exact spelling: [ cls ] */
	embed_vocab_free(v);
}

Test(embed_tokenizer, invalid_utf8)
{
	embed_vocab_t *v = tiny();
	const char *bad[] = {"\x80", "ab\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "x\xe2\x82",
			     "\xff", "\xc3", "ok \xf8\x88\x80\x80\x80"};
	size_t at[] = {0, 2, 0, 0, 1, 0, 0, 3};
	int32_t ids[16];
	size_t n;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		vela_err_t err = {0};
		char want[64];
		cr_expect_eq(embed_tokenize(v, bad[i], strlen(bad[i]), ids, 16, &n, &err), VELA_EINVAL,
			     "case %zu", i);
		snprintf(want, sizeof(want), "invalid UTF-8 at byte %zu", at[i]);
		cr_expect_neq(strstr(err.msg, want), NULL, "case %zu: %s", i, err.msg);
	}
	/* Past the truncation point still counts: the whole text is checked. */
	char text[64] = "hello hello hello hello hello \xff";
	cr_expect_eq(embed_tokenize(v, text, strlen(text), ids, 4, &n, NULL), VELA_EINVAL);
	embed_vocab_free(v);
}

Test(embed_tokenizer, bounded_input)
{
	embed_vocab_t *v = tiny();
	size_t len = EMBED_TEXT_BYTES_MAX + 1;
	char *big = malloc(len);
	memset(big, 'a', len);
	int32_t ids[256];
	size_t n;
	vela_err_t err;
	cr_expect_eq(embed_tokenize(v, big, len, ids, 256, &n, &err), VELA_ELIMIT);
	/* At the limit: one huge word, [UNK]; quickly, however long. */
	cr_expect_eq(embed_tokenize(v, big, len - 1, ids, 256, &n, &err), 0);
	cr_expect_eq(n, 3);
	cr_expect_eq(ids[1], 1);
	/* Punctuation every other byte: stops once 256 ids are out. */
	for (size_t i = 1; i < len - 1; i += 2)
		big[i] = '.';
	cr_expect_eq(embed_tokenize(v, big, len - 1, ids, 256, &n, &err), 0);
	cr_expect_eq(n, 256);
	free(big);
	embed_vocab_free(v);
}

/* ------------------------------------------------------------ HF golden */

static void source_path(char *out, size_t cap, const char *rel)
{
	snprintf(out, cap, "%.*s/../../%s", (int)(strrchr(__FILE__, '/') - __FILE__), __FILE__, rel);
}

static embed_vocab_t *real_vocab(void)
{
	char path[4096];
	const char *env = getenv("VELA_MODELS_DIR");
	if (env)
		snprintf(path, sizeof(path), "%s/all-MiniLM-L6-v2/vocab.txt", env);
	else
		source_path(path, sizeof(path), "models/all-MiniLM-L6-v2/vocab.txt");
	embed_vocab_t *v = NULL;
	vela_err_t err;
	if (embed_vocab_load(path, &v, &err) != 0)
		return NULL;
	return v;
}

Test(embed_tokenizer, hf_golden)
{
	embed_vocab_t *v = real_vocab();
	if (v == NULL)
		cr_skip_test("no models/all-MiniLM-L6-v2/vocab.txt: run `make models` (or set "
			     "VELA_MODELS_DIR) for the HF tokenizer golden test");
	char path[4096];
	source_path(path, sizeof(path), "tests/data/embed/tokenizer.json");
	json_error_t je;
	json_t *root = json_load_file(path, JSON_ALLOW_NUL, &je);
	cr_assert_not_null(root, "%s: %s", path, je.text);
	size_t max = (size_t)json_integer_value(json_object_get(root, "max_seq")), i;
	json_t *c, *cases = json_object_get(root, "cases");
	cr_assert_gt(json_array_size(cases), 50);
	json_array_foreach(cases, i, c) {
		json_t *text = json_object_get(c, "text"), *want = json_object_get(c, "ids");
		int32_t ids[EMBED_MAX_SEQ_MAX];
		size_t n = 0;
		vela_err_t err = {0};
		cr_assert_eq(embed_tokenize(v, json_string_value(text), json_string_length(text), ids,
					    max, &n, &err), 0, "case %zu: %s", i, err.msg);
		cr_expect_eq(n, json_array_size(want), "case %zu '%.40s': %zu ids, HF has %zu", i,
			     json_string_value(text), n, json_array_size(want));
		for (size_t k = 0; k < n && k < json_array_size(want); k++)
			if (ids[k] != json_integer_value(json_array_get(want, k))) {
				cr_expect_fail("case %zu '%.40s': id %zu is %d, HF has %lld", i,
					       json_string_value(text), k, ids[k],
					       json_integer_value(json_array_get(want, k)));
				break;
			}
	}
	json_decref(root);
	embed_vocab_free(v);
}
