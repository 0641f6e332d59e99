/* WordPiece vocabulary: vocab.txt, line i is the token of id i
 * (reference/embeddings-and-datasets.md §1.5). Lookups go through an
 * open-addressing table of ids keyed by XXH3 of the token bytes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "embed/embed.h"
#include "embed/embed_impl.h"

void embed_vocab_free(embed_vocab_t *v)
{
	if (v == NULL)
		return;
	free(v->text);
	free(v->off);
	free(v->len);
	free(v->slots);
	free(v);
}

size_t embed_vocab_size(const embed_vocab_t *v)
{
	return v ? v->n : 0;
}

const char *embed_vocab_token(const embed_vocab_t *v, int32_t id)
{
	return v && id >= 0 && (size_t)id < v->n ? v->text + v->off[id] : NULL;
}

int32_t embed_vocab_cls(const embed_vocab_t *v)
{
	return v->cls;
}

int32_t embed_vocab_sep(const embed_vocab_t *v)
{
	return v->sep;
}

int32_t embed_vocab_unk(const embed_vocab_t *v)
{
	return v->unk;
}

int32_t embed_vocab_id(const embed_vocab_t *v, const char *s, size_t len)
{
	if (v == NULL || len > v->max_len)
		return -1;
	size_t h = (size_t)vela_hash64(s, len);
	for (size_t i = h & v->mask;; i = (i + 1) & v->mask) {
		uint32_t slot = v->slots[i];
		if (slot == 0)
			return -1;
		uint32_t id = slot - 1;
		if (v->len[id] == len && memcmp(v->text + v->off[id], s, len) == 0)
			return (int32_t)id;
	}
}

/* Insert id (its text is in place); a second copy of a token is corrupt. */
static int vocab_insert(embed_vocab_t *v, uint32_t id, vela_err_t *err)
{
	const char *s = v->text + v->off[id];
	size_t h = (size_t)vela_hash64(s, v->len[id]);
	for (size_t i = h & v->mask;; i = (i + 1) & v->mask) {
		uint32_t slot = v->slots[i];
		if (slot == 0) {
			v->slots[i] = id + 1;
			return 0;
		}
		uint32_t o = slot - 1;
		if (v->len[o] == v->len[id] && memcmp(v->text + v->off[o], s, v->len[id]) == 0)
			return vela_err_set(err, VELA_ECORRUPT,
					    "vocab: token '%.64s' appears on lines %u and %u", s,
					    o + 1, id + 1);
	}
}

/* Split the copied text into NUL-terminated lines in place ("\n" or
 * "\r\n" ends a line; a last line without one still counts). */
static int vocab_split(embed_vocab_t *v, size_t len, vela_err_t *err)
{
	size_t cap = 0, n = 0;
	for (size_t pos = 0; pos < len;) {
		char *nl = memchr(v->text + pos, '\n', len - pos);
		size_t end = nl ? (size_t)(nl - v->text) : len, l = end - pos;
		if (l > 0 && v->text[pos + l - 1] == '\r')
			l--;
		if (l > EMBED_VOCAB_TOKEN_MAX)
			return vela_err_set(err, VELA_ECORRUPT, "vocab: line %zu is %zu bytes long "
					    "(at most %u)", n + 1, l, EMBED_VOCAB_TOKEN_MAX);
		if (memchr(v->text + pos, '\0', l) != NULL)
			return vela_err_set(err, VELA_ECORRUPT, "vocab: NUL byte on line %zu", n + 1);
		if (n == EMBED_VOCAB_SIZE_MAX)
			return vela_err_set(err, VELA_ELIMIT, "vocab: more than %u entries",
					    EMBED_VOCAB_SIZE_MAX);
		if (n == cap) {
			cap = cap ? 2 * cap : 1024;
			uint32_t *o = realloc(v->off, cap * sizeof(uint32_t));
			if (o != NULL)
				v->off = o;
			uint32_t *ln = o ? realloc(v->len, cap * sizeof(uint32_t)) : NULL;
			if (ln == NULL)
				return vela_err_set(err, VELA_ENOMEM, "vocab: out of memory");
			v->len = ln;
		}
		v->text[pos + l] = '\0';
		v->off[n] = (uint32_t)pos;
		v->len[n] = (uint32_t)l;
		if (l > v->max_len)
			v->max_len = (uint32_t)l;
		n++;
		pos = end + 1;
	}
	v->n = n;
	return 0;
}

static int vocab_special(embed_vocab_t *v, const char *name, int32_t *id, vela_err_t *err)
{
	*id = embed_vocab_id(v, name, strlen(name));
	if (*id < 0)
		return vela_err_set(err, VELA_ECORRUPT, "vocab: no %s token", name);
	return 0;
}

static int vocab_index(embed_vocab_t *v, vela_err_t *err)
{
	size_t slots = 16;
	while (slots < 2 * v->n)
		slots *= 2;
	v->slots = calloc(slots, sizeof(uint32_t));
	if (v->slots == NULL)
		return vela_err_set(err, VELA_ENOMEM, "vocab: out of memory");
	v->mask = slots - 1;
	for (size_t i = 0; i < v->n; i++) {
		int rc = vocab_insert(v, (uint32_t)i, err);
		if (rc != 0)
			return rc;
	}
	int rc = vocab_special(v, "[UNK]", &v->unk, err);
	if (rc == 0)
		rc = vocab_special(v, "[CLS]", &v->cls, err);
	if (rc == 0)
		rc = vocab_special(v, "[SEP]", &v->sep, err);
	/* Matched literally in raw text by the tokenizer (HF added tokens). */
	const char *names[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
	for (int i = 0; rc == 0 && i < 5; i++) {
		int32_t id = embed_vocab_id(v, names[i], strlen(names[i]));
		if (id >= 0)
			v->special[v->n_special++] = id;
	}
	return rc;
}

int embed_vocab_parse(const char *buf, size_t len, embed_vocab_t **out, vela_err_t *err)
{
	if (out == NULL || (buf == NULL && len > 0))
		return vela_err_set(err, VELA_EINVAL, "vocab: bad argument");
	*out = NULL;
	if (len > EMBED_VOCAB_BYTES_MAX)
		return vela_err_set(err, VELA_ELIMIT, "vocab: %zu bytes (at most %u)", len,
				    EMBED_VOCAB_BYTES_MAX);
	embed_vocab_t *v = calloc(1, sizeof(*v));
	if (v == NULL || (v->text = malloc(len + 1)) == NULL) {
		free(v);
		return vela_err_set(err, VELA_ENOMEM, "vocab: out of memory");
	}
	if (len)
		memcpy(v->text, buf, len);
	v->text[len] = '\0';
	int rc = vocab_split(v, len, err);
	if (rc == 0)
		rc = vocab_index(v, err);
	if (rc != 0) {
		embed_vocab_free(v);
		return rc;
	}
	*out = v;
	return 0;
}

int embed_vocab_load(const char *path, embed_vocab_t **out, vela_err_t *err)
{
	if (path == NULL || out == NULL)
		return vela_err_set(err, VELA_EINVAL, "vocab: bad argument");
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return vela_err_set(err, VELA_EIO, "vocab: cannot open %s: %s", path,
				    strerror(errno));
	char *buf = malloc(EMBED_VOCAB_BYTES_MAX + 1);
	if (buf == NULL) {
		fclose(f);
		return vela_err_set(err, VELA_ENOMEM, "vocab: out of memory");
	}
	size_t len = fread(buf, 1, EMBED_VOCAB_BYTES_MAX + 1, f);
	int bad = ferror(f);
	fclose(f);
	int rc;
	if (bad)
		rc = vela_err_set(err, VELA_EIO, "vocab: cannot read %s", path);
	else
		rc = embed_vocab_parse(buf, len, out, err); /* > MAX: ELIMIT */
	free(buf);
	return rc;
}
