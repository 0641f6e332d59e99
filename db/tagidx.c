/* The in-memory value index of a TAG field (db.h "tag value index"): an
 * open-addressing hash (linear probing) of the field's values, the terms
 * of its SP_TAG posting keys byte for byte (split, trimmed and case-folded
 * by indexing, looked up with the bytes the query gives: the same rules
 * as the LMDB path by construction), each with a roaring bitmap of its
 * docids. Redis keeps its tag indexes in memory for the same reason as its
 * numeric ranges: a clause of many values read from LMDB costs
 * milliseconds per query.
 *
 * Built at a field's first tag clause by one ordered scan of its postings
 * in the search's read transaction; kept current by the DC_TAG_ADD /
 * DC_TAG_REMOVE changes applied after each commit. A value whose last
 * docid goes keeps its (empty) slot until the table is rehashed. */
#include <stdlib.h>
#include <string.h>

#include "db/search_int.h"

typedef struct tval {
	uint8_t *term; /* NULL: a free slot */
	uint32_t len;
	uint64_t h;
	roaring_bitmap_t *bm;
} tval_t;

struct db_tagidx {
	tval_t *slot; /* cap slots, a power of two */
	uint32_t cap, n; /* n: slots in use (at most 3/4 of cap) */
};

/* Builds of any field wait on one mutex, as numidx's (db/numidx.c). */
static pthread_mutex_t build_mu = PTHREAD_MUTEX_INITIALIZER;
static _Atomic uint32_t values_max = DB_TAGIDX_VALUES_DEFAULT;
static _Atomic bool enabled = true;

int db_tagidx_values_max(uint32_t n)
{
	if (n < DB_TAGIDX_VALUES_MIN || n > DB_TAGIDX_VALUES_MAX)
		return VELA_EINVAL;
	values_max = n;
	return VELA_OK;
}

void db_tagidx_enable(bool on)
{
	enabled = on;
}

void db_tagidx_free(db_tagidx_t *ti)
{
	if (ti == NULL)
		return;
	for (uint32_t i = 0; i < ti->cap; i++)
		if (ti->slot[i].term) {
			free(ti->slot[i].term);
			roaring_bitmap_free(ti->slot[i].bm);
		}
	free(ti->slot);
	free(ti);
}

/* ------------------------------------------------------------ the hash */

/* The slot of (val, len): its own, or the free one where it would go. */
static tval_t *slot_find(const db_tagidx_t *ti, const void *val, size_t len, uint64_t h)
{
	uint32_t mask = ti->cap - 1;
	for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask) {
		tval_t *s = &ti->slot[i];
		if (s->term == NULL ||
		    (s->h == h && s->len == len && memcmp(s->term, val, len) == 0))
			return s;
	}
}

/* Move the values into a table of `cap` slots, leaving out those whose
 * bitmap is empty (`drop_empty`). On failure ti is unchanged. */
static int table_rehash(db_tagidx_t *ti, uint32_t cap, bool drop_empty)
{
	tval_t *old = ti->slot;
	uint32_t old_cap = ti->cap;
	tval_t *slot = calloc(cap, sizeof(*slot));
	if (slot == NULL)
		return VELA_ENOMEM;
	ti->slot = slot;
	ti->cap = cap;
	ti->n = 0;
	for (uint32_t i = 0; i < old_cap; i++) {
		tval_t *s = &old[i];
		if (s->term == NULL)
			continue;
		if (drop_empty && roaring_bitmap_is_empty(s->bm)) {
			free(s->term);
			roaring_bitmap_free(s->bm);
			continue;
		}
		*slot_find(ti, s->term, s->len, s->h) = *s;
		ti->n++;
	}
	free(old);
	return VELA_OK;
}

/* The slot holding (val, len), made when it is not there yet. ELIMIT: a
 * new value past the budget even without the empty ones. */
static int value_get(db_tagidx_t *ti, const void *val, size_t len, tval_t **out)
{
	uint64_t h = vela_hash64(val, len);
	tval_t *s = slot_find(ti, val, len, h);
	if (s->term) {
		*out = s;
		return VELA_OK;
	}
	uint32_t max = values_max;
	if (ti->n >= max || 4 * (uint64_t)(ti->n + 1) > 3 * (uint64_t)ti->cap) {
		/* Drop the empty values first; grow only when that frees too few. */
		uint32_t cap = ti->cap;
		uint64_t live = 0;
		for (uint32_t i = 0; i < ti->cap; i++)
			live += ti->slot[i].term && !roaring_bitmap_is_empty(ti->slot[i].bm);
		/* At the budget, a rehash must leave an eighth of it free, so
		 * that churn near the budget does not rehash at every write. */
		if (ti->n >= max && live + max / 8 >= max)
			return VELA_ELIMIT;
		while (4 * (live + 1) > 3 * (uint64_t)cap / 2 && cap < (1u << 30))
			cap *= 2;
		int rc = table_rehash(ti, cap, true);
		if (rc)
			return rc;
		s = slot_find(ti, val, len, h);
	}
	uint8_t *term = malloc(len ? len : 1);
	roaring_bitmap_t *bm = term ? roaring_bitmap_create() : NULL;
	if (bm == NULL) {
		free(term);
		return VELA_ENOMEM;
	}
	memcpy(term, val, len);
	*s = (tval_t){.term = term, .len = (uint32_t)len, .h = h, .bm = bm};
	ti->n++;
	*out = s;
	return VELA_OK;
}

static db_tagidx_t *table_new(void)
{
	db_tagidx_t *ti = calloc(1, sizeof(*ti));
	if (ti && (ti->slot = calloc(16, sizeof(*ti->slot))) == NULL) {
		free(ti);
		return NULL;
	}
	if (ti)
		ti->cap = 16;
	return ti;
}

/* ------------------------------------------------------------ changes */

/* Drop f's index: out of step with LMDB, or past the budget (`over`). */
static void tagidx_drop(db_field_t *f, uint32_t over)
{
	db_tagidx_t *ti = f->tag;
	__atomic_store_n(&f->tag, NULL, __ATOMIC_RELEASE);
	if (over)
		__atomic_store_n(&f->tag_over, over, __ATOMIC_RELEASE);
	db_tagidx_free(ti);
}

int db_tagidx_apply(db_field_t *f, uint32_t docid, const uint8_t *val, size_t len, bool add)
{
	db_tagidx_t *ti = f->tag;
	if (ti == NULL)
		return VELA_OK; /* not built: the lazy build will read LMDB */
	if (!add) { /* postings_apply removes blindly: an absent value is fine */
		tval_t *s = slot_find(ti, val, len, vela_hash64(val, len));
		if (s->term)
			roaring_bitmap_remove(s->bm, docid);
		return VELA_OK;
	}
	tval_t *s;
	int rc = value_get(ti, val, len, &s);
	if (rc == 0) {
		roaring_bitmap_add(s->bm, docid); /* postings are a set: idempotent */
		return VELA_OK;
	}
	tagidx_drop(f, rc == VELA_ELIMIT ? values_max : 0);
	return rc == VELA_ELIMIT ? VELA_OK : rc; /* over the budget: LMDB answers */
}

/* ------------------------------------------------------------ build */

typedef struct build_ctx {
	db_tagidx_t *ti;
	tval_t *cur;      /* the value whose docids are being gathered */
	uint32_t *ids;    /* its docids, ascending (duplicates come sorted) */
	size_t n, cap;
} build_ctx_t;

static int build_flush(build_ctx_t *c)
{
	if (c->cur && c->n)
		roaring_bitmap_add_many(c->cur->bm, c->n, c->ids);
	c->n = 0;
	return VELA_OK;
}

/* Postings come in (value, docid) order: one value at a time. */
static int build_entry(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
		       size_t vlen)
{
	build_ctx_t *c = ctx;
	if (klen < 7 || vlen != 4)
		return VELA_ECORRUPT;
	const uint8_t *t = key + 7;
	size_t tl = klen - 7;
	if (c->cur == NULL || c->cur->len != tl || memcmp(c->cur->term, t, tl) != 0) {
		build_flush(c);
		int rc = value_get(c->ti, t, tl, &c->cur);
		if (rc)
			return rc;
	}
	if (c->n == c->cap) {
		size_t cap = c->cap ? 2 * c->cap : 1024;
		uint32_t *v = realloc(c->ids, cap * sizeof(*v));
		if (v == NULL)
			return VELA_ENOMEM;
		c->ids = v;
		c->cap = cap;
	}
	c->ids[c->n++] = vela_get_be32(val);
	return 0;
}

static int tagidx_build(storage_txn_t *txn, const db_index_t *ix, uint32_t field,
			db_tagidx_t **out)
{
	db_tagidx_t *ti = table_new();
	if (ti == NULL)
		return VELA_ENOMEM;
	build_ctx_t c = {.ti = ti};
	uint8_t prefix[8];
	size_t pl = storage_posting_key(prefix, ix->id, (uint16_t)field, SP_TAG, NULL, 0);
	int rc = storage_scan_prefix(txn, ST_POSTINGS, prefix, pl, build_entry, &c);
	if (rc == 0)
		build_flush(&c);
	for (uint32_t i = 0; rc == 0 && i < ti->cap; i++)
		if (ti->slot[i].term)
			roaring_bitmap_shrink_to_fit(ti->slot[i].bm);
	free(c.ids);
	if (rc) {
		db_tagidx_free(ti);
		return rc;
	}
	*out = ti;
	return VELA_OK;
}

/* The field's index, built now when it is not yet (db->lock held shared:
 * no change is applied meanwhile, so txn's snapshot is the index's). NULL
 * with 0: over the budget. */
static int tagidx_get(storage_txn_t *txn, const db_index_t *ix, uint32_t field,
		      db_tagidx_t **out)
{
	db_field_t *f = &ix->fields[field];
	db_tagidx_t *ti = __atomic_load_n(&f->tag, __ATOMIC_ACQUIRE);
	int rc = VELA_OK;
	if (ti == NULL) {
		uint32_t max = values_max;
		if (__atomic_load_n(&f->tag_over, __ATOMIC_ACQUIRE) >= max)
			return VELA_ELIMIT; /* found over this budget before */
		pthread_mutex_lock(&build_mu);
		ti = __atomic_load_n(&f->tag, __ATOMIC_ACQUIRE);
		if (ti == NULL && __atomic_load_n(&f->tag_over, __ATOMIC_ACQUIRE) < max) {
			rc = tagidx_build(txn, ix, field, &ti);
			if (rc == 0) {
				__atomic_store_n(&f->tag_over, 0, __ATOMIC_RELEASE);
				__atomic_store_n(&f->tag, ti, __ATOMIC_RELEASE);
			} else if (rc == VELA_ELIMIT) {
				__atomic_store_n(&f->tag_over, max, __ATOMIC_RELEASE);
			}
		} else if (ti == NULL) {
			rc = VELA_ELIMIT;
		}
		pthread_mutex_unlock(&build_mu);
	}
	*out = ti;
	return rc;
}

int db_tagidx_ref(storage_txn_t *txn, const db_index_t *ix, uint32_t field, const void *val,
		  size_t len, const roaring_bitmap_t **bm)
{
	*bm = NULL;
	if (!enabled || field >= ix->n_fields || ix->fields[field].type != VELA_FIELD_TAG)
		return VELA_EUNSUPPORTED;
	db_tagidx_t *ti = NULL;
	if (tagidx_get(txn, ix, field, &ti) || ti == NULL)
		return VELA_EUNSUPPORTED; /* the caller reads LMDB (and meets its errors) */
	tval_t *s = slot_find(ti, val, len, vela_hash64(val, len));
	*bm = s->term ? s->bm : NULL;
	return VELA_OK;
}

/* ------------------------------------------------------------ figures */

void db_tagidx_stats(const db_field_t *f, db_tagidx_stats_t *out)
{
	memset(out, 0, sizeof(*out));
	out->over = __atomic_load_n(&f->tag_over, __ATOMIC_ACQUIRE);
	const db_tagidx_t *ti = __atomic_load_n(&f->tag, __ATOMIC_ACQUIRE);
	if (ti == NULL)
		return;
	out->built = true;
	out->values = ti->n;
	size_t bytes = sizeof(*ti) + (size_t)ti->cap * sizeof(*ti->slot);
	for (uint32_t i = 0; i < ti->cap; i++) {
		const tval_t *s = &ti->slot[i];
		if (s->term == NULL)
			continue;
		/* the bitmap's own struct and the term's allocation, roughly */
		bytes += s->len + sizeof(roaring_bitmap_t) + roaring_bitmap_size_in_bytes(s->bm);
		out->postings += roaring_bitmap_get_cardinality(s->bm);
	}
	out->bytes = bytes;
}
