/* BERT uncased WordPiece tokenizer with the semantics of the HF `tokenizers`
 * pipeline that all-MiniLM-L6-v2's tokenizer.json names
 * (reference/embeddings-and-datasets.md §1.5):
 *
 *   BertNormalizer  clean text (drop NUL, U+FFFD and category C* but tab,
 *                   LF, CR; map White_Space to ' '), pad CJK ideographs with
 *                   spaces, NFD and drop Mn (accents), then lowercase;
 *   BertPreTokenizer split on whitespace, isolate each punctuation char
 *                   (ASCII punctuation or Unicode P*);
 *   WordPiece       per word: > 100 chars -> [UNK]; greedy longest match
 *                   first, continuations prefixed "##"; any failure makes
 *                   the whole word one [UNK].
 *
 * Before any of that, the special tokens ([CLS], [SEP], [UNK], [PAD],
 * [MASK]) are matched literally in the raw text and become their ids, as HF
 * does with its added tokens (normalized: false).
 *
 * The text is streamed code point by code point: each one is cleaned,
 * decomposed (NFD, utf8proc), stripped of Mn, lowercased and appended to
 * the current word, so the work stops as soon as enough pieces are out.
 * Where Python's BertTokenizer and the Rust crate differ, we follow Rust
 * (the `tokenizers` package): accents stripped before lowercasing,
 * White_Space (not just Zs) is whitespace, CJK range 0x2B920..0x2CEAF.
 * Known gap: marks of a non-Mn category with a non-zero combining class are
 * not canonically reordered (none occur in real text). */
#include <stdbool.h>
#include <string.h>
#include <utf8proc.h>

#include "common/common.h"
#include "embed/embed.h"
#include "embed/embed_impl.h"

/* A word's bytes: EMBED_WORD_CHARS_MAX code points of <= 4 bytes, after a
 * "##" prefix slot. Longer words are only counted (they become [UNK]). */
#define WORD_BYTES_MAX (EMBED_WORD_CHARS_MAX * 4u)

typedef struct {
	const embed_vocab_t *v;
	int32_t *ids;
	size_t n, max;          /* pieces written, room for pieces */
	char buf[2 + WORD_BYTES_MAX]; /* "##" + current word */
	size_t len;             /* bytes of the current word (after the slot) */
	size_t chars;           /* its code points, counted past the limit */
} tok_t;

/* ------------------------------------------------------------ UTF-8 */

/* Strict decoder: no overlongs, no surrogates, nothing above U+10FFFF.
 * Returns the sequence length, or 0 when invalid. */
static size_t utf8_decode(const uint8_t *s, size_t len, int32_t *cp)
{
	uint8_t c = s[0];
	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	size_t n;
	int32_t min, v;
	if ((c & 0xe0) == 0xc0) {
		n = 2, min = 0x80, v = c & 0x1f;
	} else if ((c & 0xf0) == 0xe0) {
		n = 3, min = 0x800, v = c & 0x0f;
	} else if ((c & 0xf8) == 0xf0) {
		n = 4, min = 0x10000, v = c & 0x07;
	} else {
		return 0;
	}
	if (len < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		v = (v << 6) | (s[i] & 0x3f);
	}
	if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
		return 0;
	*cp = v;
	return n;
}

static size_t utf8_encode(int32_t cp, char *out)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | (cp >> 18));
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* 0 when the whole text is valid UTF-8, else VELA_EINVAL naming the offset. */
static int utf8_check(const char *text, size_t len, vela_err_t *err)
{
	const uint8_t *s = (const uint8_t *)text;
	for (size_t i = 0; i < len;) {
		int32_t cp;
		size_t n = s[i] < 0x80 ? 1 : utf8_decode(s + i, len - i, &cp);
		if (n == 0)
			return vela_err_set(err, VELA_EINVAL,
					    "tokenizer: invalid UTF-8 at byte %zu (0x%02x)", i, s[i]);
		i += n;
	}
	return 0;
}

/* ------------------------------------------------------------ classes */

/* Rust char::is_whitespace (White_Space), as BertNormalizer uses it. */
static bool is_space(int32_t c)
{
	if (c == ' ' || (c >= 0x09 && c <= 0x0d))
		return true;
	if (c < 0x85)
		return false;
	return c == 0x85 || c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) ||
	       c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

/* Categories Cc, Cf, Cs, Co except tab, LF, CR. Unassigned code points
 * (Cn) are kept, as the `tokenizers` crate keeps them (they end as [UNK]). */
static bool is_control(int32_t c)
{
	if (c == '\t' || c == '\n' || c == '\r')
		return false;
	if (c >= 0x20 && c < 0x7f)
		return false;
	utf8proc_category_t k = utf8proc_category(c);
	return k == UTF8PROC_CATEGORY_CC || k == UTF8PROC_CATEGORY_CF ||
	       k == UTF8PROC_CATEGORY_CS || k == UTF8PROC_CATEGORY_CO;
}

/* CJK ideograph blocks BertNormalizer pads with spaces (the Rust list). */
static bool is_cjk(int32_t c)
{
	return (c >= 0x4e00 && c <= 0x9fff) || (c >= 0x3400 && c <= 0x4dbf) ||
	       (c >= 0x20000 && c <= 0x2a6df) || (c >= 0x2a700 && c <= 0x2b73f) ||
	       (c >= 0x2b740 && c <= 0x2b81f) || (c >= 0x2b920 && c <= 0x2ceaf) ||
	       (c >= 0xf900 && c <= 0xfaff) || (c >= 0x2f800 && c <= 0x2fa1f);
}

/* ASCII punctuation (33-47, 58-64, 91-96, 123-126) or Unicode P*. */
static bool is_punct(int32_t c)
{
	if (c < 0x80)
		return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
		       (c >= 123 && c <= 126);
	utf8proc_category_t k = utf8proc_category(c);
	return k >= UTF8PROC_CATEGORY_PC && k <= UTF8PROC_CATEGORY_PO;
}

/* ------------------------------------------------------------ WordPiece */

static bool tok_full(const tok_t *t)
{
	return t->n >= t->max;
}

static void tok_emit(tok_t *t, int32_t id)
{
	if (t->n < t->max)
		t->ids[t->n++] = id;
}

/* Greedy longest-match-first over the current word (§1.5 step 6). Pieces
 * go to a local list first: a failure anywhere makes the word one [UNK]. */
static void tok_wordpiece(tok_t *t)
{
	const embed_vocab_t *v = t->v;
	char *w = t->buf + 2;
	int32_t piece[EMBED_WORD_CHARS_MAX];
	size_t np = 0;
	for (size_t start = 0; start < t->len;) {
		size_t end = t->len, pre = start > 0 ? 2 : 0;
		if (end - start > v->max_len)
			end = start + v->max_len;
		while (end < t->len && end > start && (w[end] & 0xc0) == 0x80)
			end--; /* never cut inside a code point */
		int32_t id = -1;
		while (end > start) {
			if (pre) { /* "##" just before the piece, in the slot or over the word */
				char *at = t->buf + start, save[2] = {at[0], at[1]};
				memcpy(at, "##", 2);
				id = embed_vocab_id(v, at, end - start + 2);
				memcpy(at, save, 2);
			} else {
				id = embed_vocab_id(v, w, end);
			}
			if (id >= 0)
				break;
			do
				end--;
			while (end > start && (w[end] & 0xc0) == 0x80);
		}
		if (id < 0) {
			tok_emit(t, v->unk);
			return;
		}
		piece[np++] = id;
		start = end;
	}
	for (size_t i = 0; i < np; i++)
		tok_emit(t, piece[i]);
}

/* End of a word: it becomes pieces (or one [UNK] when too long). */
static void tok_flush(tok_t *t)
{
	if (t->chars > EMBED_WORD_CHARS_MAX)
		tok_emit(t, t->v->unk);
	else if (t->len > 0)
		tok_wordpiece(t);
	t->len = 0;
	t->chars = 0;
}

static void tok_append(tok_t *t, int32_t c)
{
	if (t->chars < EMBED_WORD_CHARS_MAX)
		t->len += utf8_encode(c, t->buf + 2 + t->len);
	t->chars++;
}

/* One normalised code point (after NFD, Mn removed, lowercased): the
 * pre-tokenizer's punctuation split. */
static void tok_normalised(tok_t *t, int32_t c)
{
	if (is_punct(c)) {
		tok_flush(t);
		tok_append(t, c);
		tok_flush(t);
	} else {
		tok_append(t, c);
	}
}

/* NFD, drop Mn, lowercase (Rust order: strip accents, then lowercase). */
static void tok_decompose(tok_t *t, int32_t c)
{
	utf8proc_int32_t d[32];
	utf8proc_ssize_t k = utf8proc_decompose_char(c, d, 32, UTF8PROC_DECOMPOSE, NULL);
	if (k < 0 || k > 32) { /* cannot happen for a valid code point */
		d[0] = c;
		k = 1;
	}
	for (utf8proc_ssize_t i = 0; i < k; i++) {
		if (utf8proc_category(d[i]) == UTF8PROC_CATEGORY_MN)
			continue;
		tok_normalised(t, utf8proc_tolower(d[i]));
	}
}

/* One raw code point of the text: clean_text and the CJK split. */
static void tok_raw(tok_t *t, int32_t c)
{
	if (c == 0 || c == 0xfffd || is_control(c))
		return;
	if (is_space(c)) {
		tok_flush(t);
	} else if (is_cjk(c)) {
		tok_flush(t);
		tok_decompose(t, c);
		tok_flush(t);
	} else if (c < 0x80) { /* ASCII fast path: NFD and Mn do not apply */
		tok_normalised(t, c >= 'A' && c <= 'Z' ? c + 32 : c);
	} else {
		tok_decompose(t, c);
	}
}

/* A special token spelled out at the start of `s`: flush the word, emit
 * its id, return its length (0: none). */
static size_t tok_special(tok_t *t, const char *s, size_t len)
{
	const embed_vocab_t *v = t->v;
	for (int i = 0; i < v->n_special; i++) {
		const char *name = v->text + v->off[v->special[i]];
		size_t l = v->len[v->special[i]];
		if (l <= len && memcmp(s, name, l) == 0) {
			tok_flush(t);
			tok_emit(t, v->special[i]);
			return l;
		}
	}
	return 0;
}

int embed_tokenize(const embed_vocab_t *v, const char *text, size_t len, int32_t *ids,
		   size_t max_ids, size_t *n_ids, vela_err_t *err)
{
	if (v == NULL || ids == NULL || n_ids == NULL || max_ids < 2 || (text == NULL && len > 0))
		return vela_err_set(err, VELA_EINVAL, "tokenizer: bad argument");
	if (len > EMBED_TEXT_BYTES_MAX)
		return vela_err_set(err, VELA_ELIMIT, "tokenizer: text of %zu bytes (at most %u)",
				    len, EMBED_TEXT_BYTES_MAX);
	int rc = utf8_check(text, len, err);
	if (rc != 0)
		return rc;
	tok_t t = {.v = v, .ids = ids + 1, .max = max_ids - 2};
	const uint8_t *s = (const uint8_t *)text;
	for (size_t i = 0; i < len && !tok_full(&t);) {
		size_t sl = s[i] == '[' ? tok_special(&t, text + i, len - i) : 0;
		if (sl > 0) {
			i += sl;
			continue;
		}
		int32_t cp = s[i];
		i += s[i] < 0x80 ? 1 : utf8_decode(s + i, len - i, &cp);
		tok_raw(&t, cp);
	}
	if (!tok_full(&t))
		tok_flush(&t);
	ids[0] = v->cls;
	ids[t.n + 1] = v->sep;
	*n_ids = t.n + 2;
	return 0;
}
