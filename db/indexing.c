/* Keeping indexes in step with documents: postings, vectors, docids.
 * Called inside a write transaction; every in-memory effect is recorded as
 * a db_change_t and applied only after the commit (db_commit). */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "quant/quant.h"

/* ------------------------------------------------------------ row keys */

size_t db_key_idmap(uint8_t *buf, uint32_t index_id, const uint8_t *key, size_t klen)
{
	vela_put_be32(buf, index_id);
	memcpy(buf + 4, key, klen);
	return 4 + klen;
}

size_t db_key_docid(uint8_t *buf, uint32_t index_id, uint32_t docid)
{
	vela_put_be32(buf, index_id);
	vela_put_be32(buf + 4, docid);
	return 8;
}

size_t db_key_vector(uint8_t *buf, uint32_t index_id, uint32_t field, uint32_t docid)
{
	vela_put_be32(buf, index_id);
	buf[4] = (uint8_t)(field >> 8);
	buf[5] = (uint8_t)field;
	vela_put_be32(buf + 6, docid);
	return 10;
}

/* ------------------------------------------------------------ field values */

const storage_field_t *db_doc_field(const storage_field_t *f, size_t n, const char *name)
{
	size_t len = strlen(name);
	for (size_t i = 0; i < n; i++)
		if (f[i].name_len == len && memcmp(f[i].name, name, len) == 0)
			return &f[i];
	return NULL;
}

/* Parse a NUMERIC value the way Redis does: the whole string is a double. */
static int num_parse(const uint8_t *p, size_t n, double *out)
{
	char buf[64];
	if (n == 0 || n >= sizeof(buf))
		return VELA_ETYPE;
	memcpy(buf, p, n);
	buf[n] = '\0';
	char *end;
	double v = strtod(buf, &end);
	while (*end && isspace((unsigned char)*end))
		end++;
	if (end == buf || *end != '\0' || isnan(v))
		return VELA_ETYPE;
	*out = v;
	return VELA_OK;
}

typedef int (*term_fn)(void *ctx, const uint8_t *term, size_t len);

/* TAG values: split on the separator, trim, lowercase unless case-sensitive. */
static int tags_each(const db_field_t *f, const uint8_t *v, size_t n, term_fn fn, void *ctx)
{
	uint8_t buf[STORAGE_TERM_MAX];
	size_t start = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && v[i] != (uint8_t)f->separator)
			continue;
		size_t a = start, b = i;
		start = i + 1;
		while (a < b && isspace(v[a]))
			a++;
		while (b > a && isspace(v[b - 1]))
			b--;
		if (a == b)
			continue;
		if (b - a > STORAGE_TERM_MAX)
			return VELA_ELIMIT;
		for (size_t j = a; j < b; j++)
			buf[j - a] = f->case_sensitive ? v[j] : (uint8_t)tolower(v[j]);
		int rc = fn(ctx, buf, b - a);
		if (rc)
			return rc;
	}
	return VELA_OK;
}

/* TEXT terms: punctuation and space split terms ('_' does not), lowercased.
 * Bytes >= 0x80 (UTF-8) are kept inside terms. */
static int text_is_sep(uint8_t c)
{
	return c < 0x80 && c != '_' && !isalnum(c);
}

static int text_each(const uint8_t *v, size_t n, term_fn fn, void *ctx)
{
	uint8_t buf[STORAGE_TERM_MAX];
	size_t len = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && !text_is_sep(v[i])) {
			if (len < STORAGE_TERM_MAX) /* longer terms are cut */
				buf[len++] = (uint8_t)tolower(v[i]);
			continue;
		}
		if (len) {
			int rc = fn(ctx, buf, len);
			if (rc)
				return rc;
		}
		len = 0;
	}
	return VELA_OK;
}

/* ------------------------------------------------------------ postings */

struct post_ctx {
	storage_txn_t *txn;
	uint32_t index_id, docid;
	uint16_t field;
	int kind;
	int add;
	db_index_t *ix;
	db_changes_t *ch;
};

static int post_term(void *ctx, const uint8_t *term, size_t len)
{
	struct post_ctx *p = ctx;
	uint8_t key[8 + STORAGE_TERM_MAX];
	size_t kl = storage_posting_key(key, p->index_id, p->field, p->kind, term, len);
	if (p->add)
		return storage_posting_add(p->txn, key, kl, p->docid);
	int rc = storage_posting_remove(p->txn, key, kl, p->docid);
	return rc == VELA_ENOTFOUND ? VELA_OK : rc;
}

/* Write (or remove) a tag posting, and record the change for the field's
 * in-memory value index (db/tagidx.c). */
static int post_tag(void *ctx, const uint8_t *term, size_t len)
{
	struct post_ctx *p = ctx;
	int rc = post_term(p, term, len);
	uint8_t *t = rc ? NULL : malloc(len ? len : 1);
	if (rc == 0 && t == NULL)
		rc = VELA_ENOMEM;
	if (rc)
		return rc;
	memcpy(t, term, len);
	rc = db_changes_push(p->ch, (db_change_t){.kind = p->add ? DC_TAG_ADD : DC_TAG_REMOVE,
						  .ix = p->ix, .field = p->field,
						  .docid = p->docid, .term = t, .term_len = len});
	if (rc)
		free(t);
	return rc;
}

/* Write (or remove) a numeric posting, and record the change for the
 * field's in-memory range index (db/numidx.c). */
static int post_num(struct post_ctx *p, db_index_t *ix, double d, db_changes_t *ch)
{
	uint8_t e[8];
	storage_num_encode(d, e);
	int rc = post_term(p, e, 8);
	if (rc == 0)
		rc = db_changes_push(ch, (db_change_t){.kind = p->add ? DC_NUM_ADD : DC_NUM_REMOVE,
						       .ix = ix, .field = p->field,
						       .docid = p->docid, .num = vela_get_be64(e)});
	return rc;
}

/* Add (or remove) the postings of one document's fields. */
static int postings_apply(db_index_t *ix, storage_txn_t *txn, uint32_t docid,
			  const storage_field_t *doc, size_t n, int add, db_changes_t *ch)
{
	struct post_ctx p = {.txn = txn, .index_id = ix->id, .docid = docid, .add = add,
			     .ix = ix, .ch = ch};
	for (uint32_t i = 0; i < ix->n_fields; i++) {
		const db_field_t *f = &ix->fields[i];
		const storage_field_t *v = db_doc_field(doc, n, f->name);
		if (v == NULL || f->type == VELA_FIELD_VECTOR)
			continue;
		p.field = (uint16_t)i;
		int rc = VELA_OK;
		if (f->type == VELA_FIELD_TAG) {
			p.kind = SP_TAG;
			rc = tags_each(f, v->value, v->value_len, post_tag, &p);
		} else if (f->type == VELA_FIELD_TEXT) {
			p.kind = SP_TEXT;
			rc = text_each(v->value, v->value_len, post_term, &p);
		} else {
			double d;
			p.kind = SP_NUM;
			if (num_parse(v->value, v->value_len, &d))
				continue; /* only reachable on removal of an unindexed value */
			rc = post_num(&p, ix, d, ch);
		}
		if (rc)
			return rc;
	}
	return VELA_OK;
}

/* ------------------------------------------------------------ vectors */

/* A vector blob of the right size with only finite elements and a norm the
 * flat index accepts. */
static int vector_check(const db_field_t *f, const uint8_t *p, size_t n)
{
	if (n != (size_t)f->dim * (f->vec_type == VELA_VEC_FLOAT16 ? 2 : 4))
		return VELA_EDIM;
	double norm_sq = 0;
	for (uint32_t i = 0; i < f->dim; i++) {
		if (f->vec_type == VELA_VEC_FLOAT16) {
			if (((p[2 * i + 1] << 8 | p[2 * i]) & 0x7c00) == 0x7c00)
				return VELA_ETYPE;
		} else {
			float x;
			memcpy(&x, p + 4 * i, 4);
			if (!isfinite(x))
				return VELA_ETYPE;
			norm_sq += (double)x * x;
		}
	}
	/* The flat index refuses norms whose squared distances could overflow a
	 * float; refuse them here, before anything is written. */
	return norm_sq > FLAT_NORM_SQ_MAX ? VELA_ETYPE : VELA_OK;
}

int db_vector_decode(const db_field_t *f, const void *blob, size_t len, float **out)
{
	int rc = vector_check(f, blob, len);
	if (rc)
		return rc;
	float *v = vela_aligned_alloc(64, (size_t)f->dim * sizeof(float));
	if (v == NULL)
		return VELA_ENOMEM;
	/* Blobs are little-endian, as on every host vela builds for (x86-64). */
	if (f->vec_type == VELA_VEC_FLOAT16) {
		/* Blobs (from LMDB or the wire) may be unaligned: copy first. */
		uint16_t *h = malloc(len);
		if (h == NULL) {
			free(v);
			return VELA_ENOMEM;
		}
		memcpy(h, blob, len);
		quant_f16_to_f32(h, v, f->dim);
		free(h);
	} else
		memcpy(v, blob, len);
	if (f->metric == VELA_METRIC_COSINE)
		quant_normalize(v, f->dim);
	*out = v;
	return VELA_OK;
}

static int tag_len_ok(void *ctx, const uint8_t *term, size_t len)
{
	return VELA_OK;
}

/* Check, before writing anything, that every indexed field of the new
 * document can be indexed; a failure leaves the document out of the index. */
static int doc_validate(const db_index_t *ix, const storage_field_t *doc, size_t n)
{
	for (uint32_t i = 0; i < ix->n_fields; i++) {
		const db_field_t *f = &ix->fields[i];
		const storage_field_t *v = db_doc_field(doc, n, f->name);
		double d;
		int rc = VELA_OK;
		if (v == NULL)
			continue;
		if (f->type == VELA_FIELD_NUMERIC)
			rc = num_parse(v->value, v->value_len, &d);
		else if (f->type == VELA_FIELD_TAG)
			rc = tags_each(f, v->value, v->value_len, tag_len_ok, NULL);
		else if (f->type == VELA_FIELD_VECTOR)
			rc = vector_check(f, v->value, v->value_len);
		if (rc)
			return rc;
	}
	return VELA_OK;
}

static int vectors_remove(db_index_t *ix, storage_txn_t *txn, uint32_t docid, db_changes_t *ch)
{
	for (uint32_t i = 0; i < ix->n_fields; i++) {
		if (ix->fields[i].type != VELA_FIELD_VECTOR)
			continue;
		uint8_t k[16];
		size_t kl = db_key_vector(k, ix->id, i, docid);
		int rc = storage_del(txn, ST_VECTORS, k, kl);
		if (rc == VELA_ENOTFOUND)
			continue;
		if (rc || (rc = db_changes_push(ch, (db_change_t){.kind = DC_VEC_REMOVE, .ix = ix,
								  .field = i, .docid = docid})))
			return rc;
	}
	return VELA_OK;
}

static int vectors_add(db_index_t *ix, storage_txn_t *txn, uint32_t docid,
		       const storage_field_t *doc, size_t n, db_changes_t *ch)
{
	for (uint32_t i = 0; i < ix->n_fields; i++) {
		const db_field_t *f = &ix->fields[i];
		const storage_field_t *v = db_doc_field(doc, n, f->name);
		if (f->type != VELA_FIELD_VECTOR || v == NULL)
			continue;
		float *vec;
		int rc = db_vector_decode(f, v->value, v->value_len, &vec);
		if (rc)
			return rc;
		uint8_t k[16];
		size_t kl = db_key_vector(k, ix->id, i, docid);
		rc = storage_put(txn, ST_VECTORS, k, kl, v->value, v->value_len);
		if (rc == 0)
			rc = db_changes_push(ch, (db_change_t){.kind = DC_VEC_SET, .ix = ix, .field = i,
							       .docid = docid, .vec = vec});
		if (rc) {
			free(vec);
			return rc;
		}
	}
	return VELA_OK;
}

/* ------------------------------------------------------------ docids */

struct free_ctx {
	uint32_t docid;
	int found;
};

static int free_first(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
		      size_t vlen)
{
	struct free_ctx *f = ctx;
	if (klen != 8)
		return VELA_ECORRUPT;
	f->docid = vela_get_be32(key + 4);
	f->found = 1;
	return 1;
}

/* Reuse the lowest freed docid, else take the next one. Dense docids keep
 * the flat arrays compact. */
static int docid_alloc(db_index_t *ix, storage_txn_t *txn, uint32_t *docid)
{
	uint8_t p[8];
	vela_put_be32(p, ix->id);
	struct free_ctx f = {0};
	/* A graph keeps deleted ids as tombstones until consolidation: their
	 * docids are not handed out again (docid arrays grow with churn). */
	int rc = db_index_has_graph(ix) ? VELA_OK
					: storage_scan_prefix(txn, ST_FREE, p, 4, free_first, &f);
	if (rc)
		return rc;
	if (f.found) {
		*docid = f.docid;
		size_t kl = db_key_docid(p, ix->id, f.docid);
		return storage_del(txn, ST_FREE, p, kl);
	}
	char name[32];
	snprintf(name, sizeof(name), "ix.%u.next", ix->id);
	uint64_t next;
	if ((rc = storage_meta_get_u64(txn, name, &next)))
		return rc;
	if (next >= UINT32_MAX)
		return VELA_ELIMIT;
	*docid = (uint32_t)next;
	return storage_meta_put_u64(txn, name, next + 1);
}

static int docid_release(db_index_t *ix, storage_txn_t *txn, const uint8_t *key, size_t klen,
			 uint32_t docid, db_changes_t *ch)
{
	uint8_t k[4 + STORAGE_DOC_KEY_MAX];
	size_t kl = db_key_idmap(k, ix->id, key, klen);
	int rc = storage_del(txn, ST_IDMAP, k, kl);
	uint8_t d[8];
	size_t dl = db_key_docid(d, ix->id, docid);
	if (rc == 0)
		rc = storage_del(txn, ST_KEYS, d, dl);
	if (rc == 0)
		rc = storage_put(txn, ST_FREE, d, dl, "", 0);
	if (rc == 0)
		rc = storage_log_append(txn, SL_DELETE, ix->id, docid, key, klen, NULL);
	if (rc == 0)
		rc = db_changes_push(ch, (db_change_t){.kind = DC_DOC_REMOVE, .ix = ix, .docid = docid});
	return rc;
}

static int docid_bind(db_index_t *ix, storage_txn_t *txn, const uint8_t *key, size_t klen,
		      uint32_t *docid)
{
	int rc = docid_alloc(ix, txn, docid);
	if (rc)
		return rc; /* *docid unset */
	uint8_t k[4 + STORAGE_DOC_KEY_MAX], d[8], dv[4];
	size_t kl = db_key_idmap(k, ix->id, key, klen);
	size_t dl = db_key_docid(d, ix->id, *docid);
	vela_put_be32(dv, *docid);
	rc = storage_put(txn, ST_IDMAP, k, kl, dv, 4);
	if (rc == 0)
		rc = storage_put(txn, ST_KEYS, d, dl, key, klen);
	return rc;
}

static int docid_lookup(db_index_t *ix, storage_txn_t *txn, const uint8_t *key, size_t klen,
			uint32_t *docid)
{
	uint8_t k[4 + STORAGE_DOC_KEY_MAX];
	size_t kl = db_key_idmap(k, ix->id, key, klen);
	const void *v;
	size_t vl;
	int rc = storage_get(txn, ST_IDMAP, k, kl, &v, &vl);
	if (rc)
		return rc;
	if (vl != 4)
		return VELA_ECORRUPT;
	*docid = vela_get_be32(v);
	return VELA_OK;
}

static int failure_count(db_index_t *ix, storage_txn_t *txn, db_changes_t *ch)
{
	char name[32];
	snprintf(name, sizeof(name), "ix.%u.failures", ix->id);
	uint64_t n;
	int rc = storage_meta_get_u64(txn, name, &n);
	if (rc == 0)
		rc = storage_meta_put_u64(txn, name, n + 1);
	if (rc == 0)
		rc = db_changes_push(ch, (db_change_t){.kind = DC_FAILURE, .ix = ix});
	return rc;
}

/* ------------------------------------------------------------ one document */

int db_index_doc(db_index_t *ix, storage_txn_t *txn, const uint8_t *key, size_t klen,
		 const storage_field_t *old, size_t n_old, const storage_field_t *doc,
		 size_t n_doc, db_changes_t *ch)
{
	uint32_t docid;
	int rc = docid_lookup(ix, txn, key, klen, &docid);
	int exists = rc == 0;
	if (rc && rc != VELA_ENOTFOUND)
		return rc;
	if (exists && old && (rc = postings_apply(ix, txn, docid, old, n_old, 0, ch)))
		return rc;
	if (exists && (rc = vectors_remove(ix, txn, docid, ch)))
		return rc;
	int invalid = doc ? doc_validate(ix, doc, n_doc) : 0;
	if (doc == NULL || invalid) {
		if (exists && (rc = docid_release(ix, txn, key, klen, docid, ch)))
			return rc;
		return invalid ? failure_count(ix, txn, ch) : VELA_OK;
	}
	if (!exists && (rc = docid_bind(ix, txn, key, klen, &docid)))
		return rc;
	rc = postings_apply(ix, txn, docid, doc, n_doc, 1, ch);
	if (rc == 0)
		rc = vectors_add(ix, txn, docid, doc, n_doc, ch);
	if (rc == 0)
		rc = storage_log_append(txn, SL_UPSERT, ix->id, docid, key, klen, NULL);
	if (rc == 0)
		rc = db_changes_push(ch, (db_change_t){.kind = DC_DOC_ADD, .ix = ix, .docid = docid});
	return rc;
}

/* ------------------------------------------------------------ loading */

static int load_docid(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
		      size_t vlen)
{
	db_index_t *ix = ctx;
	if (klen != 8)
		return VELA_ECORRUPT;
	roaring_bitmap_add(ix->docids, vela_get_be32(key + 4));
	return 0;
}

static int load_vector(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
		       size_t vlen)
{
	db_index_t *ix = ctx;
	if (klen != 10)
		return VELA_ECORRUPT;
	uint32_t field = ((uint32_t)key[4] << 8) | key[5];
	if (field >= ix->n_fields || ix->fields[field].type != VELA_FIELD_VECTOR)
		return VELA_ECORRUPT;
	float *v;
	int rc = db_vector_decode(&ix->fields[field], val, vlen, &v);
	if (rc)
		return VELA_ECORRUPT;
	rc = flat_set(ix->fields[field].flat, vela_get_be32(key + 6), v);
	free(v);
	return rc; /* the graph is built once, after every vector is loaded */
}

int db_index_load(const vela_db_t *db, db_index_t *ix, storage_txn_t *txn, uint64_t seq,
		  vela_err_t *err)
{
	uint8_t p[4];
	vela_put_be32(p, ix->id);
	char name[32];
	snprintf(name, sizeof(name), "ix.%u.failures", ix->id);
	int rc = storage_scan_prefix(txn, ST_KEYS, p, 4, load_docid, ix);
	if (rc == 0)
		rc = storage_scan_prefix(txn, ST_VECTORS, p, 4, load_vector, ix);
	if (rc == 0)
		rc = storage_meta_get_u64(txn, name, &ix->failures);
	if (rc)
		return vela_err_set(err, rc, "cannot load index '%s': %s", ix->name,
				    vela_strerror(rc));
	for (uint32_t i = 0; i < ix->n_fields; i++) {
		db_field_t *f = &ix->fields[i];
		if (f->algo == VELA_ALGO_GRAPH && flat_count(f->flat) >= db_vec_build_threshold(f))
			db_snapshot_load(db, ix, i, seq);
	} /* graphs without a snapshot are built once every index is loaded */
	return VELA_OK;
}
