/* Writes: batches (group commit), HSET / HDEL / DEL, and applying committed
 * changes to the in-memory indexes. */
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "db/search_int.h"

/* ------------------------------------------------------------ change lists */

int db_changes_push(db_changes_t *c, db_change_t ch)
{
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 16;
		db_change_t *v = realloc(c->v, cap * sizeof(*v));
		if (v == NULL)
			return VELA_ENOMEM;
		c->v = v;
		c->cap = cap;
	}
	c->v[c->n++] = ch;
	return VELA_OK;
}

void db_changes_truncate(db_changes_t *c, size_t mark)
{
	for (size_t i = mark; i < c->n; i++) {
		free(c->v[i].vec);
		free(c->v[i].term);
		if (c->v[i].kind == DC_INDEX_ADD)
			db_index_free(c->v[i].ix);
	}
	c->n = mark;
}

int db_indexes_reserve(vela_db_t *db, size_t n)
{
	if (db->cap_indexes >= n)
		return VELA_OK;
	pthread_rwlock_wrlock(&db->lock); /* readers walk the array */
	db_index_t **v = realloc(db->indexes, n * sizeof(*v));
	if (v) {
		db->indexes = v;
		db->cap_indexes = n;
	}
	pthread_rwlock_unlock(&db->lock);
	return v ? VELA_OK : VELA_ENOMEM;
}

/* Capacity was reserved by db_indexes_reserve before the commit. */
static void index_publish(vela_db_t *db, db_index_t *ix)
{
	db->indexes[db->n_indexes++] = ix;
	db_computed_recount(db);
}

static void index_unpublish(vela_db_t *db, db_index_t *ix)
{
	db_snapshot_remove(db, ix);
	db_field_state_drop(ix); /* its workload log, query sample and layouts */
	for (size_t i = 0; i < db->n_indexes; i++) {
		if (db->indexes[i] != ix)
			continue;
		memmove(&db->indexes[i], &db->indexes[i + 1],
			(db->n_indexes - i - 1) * sizeof(db->indexes[0]));
		db->n_indexes--;
		break;
	}
	db_index_free(ix);
	db_computed_recount(db);
}

static void change_apply(vela_db_t *db, db_change_t *c)
{
	int rc = VELA_OK;
	uint64_t gen;
	switch (c->kind) {
	case DC_VEC_SET:
		gen = db_layout_gen(&c->ix->fields[c->field]);
		rc = db_vec_set(&c->ix->fields[c->field], c->docid, c->vec);
		c->ix->fields[c->field].grew = true;
		db_layout_apply(db, c->ix, c->field, c->docid, true, gen); /* partition layouts */
		break;
	case DC_VEC_REMOVE:
		gen = db_layout_gen(&c->ix->fields[c->field]);
		rc = db_vec_remove(&c->ix->fields[c->field], c->docid);
		rc = rc == VELA_ENOTFOUND ? VELA_OK : rc;
		db_layout_apply(db, c->ix, c->field, c->docid, false, gen);
		break;
	case DC_DOC_ADD:
		roaring_bitmap_add(c->ix->docids, c->docid);
		break;
	case DC_DOC_REMOVE:
		roaring_bitmap_remove(c->ix->docids, c->docid);
		break;
	case DC_FAILURE:
		c->ix->failures++;
		break;
	case DC_INDEX_ADD:
		index_publish(db, c->ix);
		break;
	case DC_INDEX_DROP:
		index_unpublish(db, c->ix);
		break;
	case DC_NUM_ADD:
	case DC_NUM_REMOVE:
		rc = db_numidx_apply(&c->ix->fields[c->field], c->docid, c->num,
				     c->kind == DC_NUM_ADD);
		break;
	case DC_TAG_ADD:
	case DC_TAG_REMOVE:
		rc = db_tagidx_apply(&c->ix->fields[c->field], c->docid, c->term, c->term_len,
				     c->kind == DC_TAG_ADD);
		break;
	}
	/* The commit is durable; memory can only lag (restart reloads it). */
	if (rc)
		vela_error("index '%s': in-memory update of docid %u failed (%s); "
			   "restart to reload from storage",
			   c->ix->name, c->docid, vela_strerror(rc));
}

void db_changes_apply(vela_db_t *db, db_changes_t *c)
{
	for (size_t i = 0; i < c->n; i++) {
		change_apply(db, &c->v[i]);
		free(c->v[i].vec);
		c->v[i].vec = NULL;
		free(c->v[i].term);
		c->v[i].term = NULL;
	}
	/* A field that just reached its build threshold gets its graph, in one
	 * bulk build after all of this commit's vectors are in (the writer holds
	 * the exclusive lock meanwhile: searches wait). Only published indexes
	 * are visited: a change list may also have dropped one. */
	for (size_t i = 0; i < db->n_indexes; i++)
		for (uint32_t k = 0; k < db->indexes[i]->n_fields; k++)
			if (db->indexes[i]->fields[k].grew) {
				db->indexes[i]->fields[k].grew = false;
				db_vec_maybe_build(db, db->indexes[i], k);
			}
	c->n = 0;
}

/* The reply to a write refused for lack of map space (as Redis's -OOM when
 * over maxmemory): says what is full and how to grow it. */
#define DB_MAP_FULL_MSG                                                                  \
	"OOM command not allowed when the LMDB map is full: grow it with CONFIG SET map-size " \
	"<bytes> (or delete data)"

/* The reply to a batch that outgrew LMDB's dirty-page list (MDB_TXN_FULL):
 * the batch fails whole, so the caller can retry it split up. */
#define DB_TXN_FULL_MSG                                                                   \
	"transaction too large: the batch dirtied more pages than one LMDB write transaction " \
	"holds, so none of it was written: commit in smaller batches"

/*
 * Deletes past a full map, as Redis admits DEL past maxmemory. LMDB copies on
 * write, so a delete needs fresh pages too, and the pages a commit frees are
 * reused only after a later commit: on a map filled to its last page nothing
 * could be deleted. So writes that add data (HSET, SET, EXPIRE with a time to
 * come, FT.CREATE) are refused with the -OOM once the map would keep less
 * than this much free; deletes (DEL, UNLINK, HDEL, FLUSHALL, FT.DROPINDEX,
 * expiry) may use it. Measured (docs/reliability.md): a one-key DEL of a
 * document with a TAG and a vector commits about 20 pages (its B-tree paths
 * in docs, idmap, keys, vectors, postings, log, and the free list) at
 * 4,000 documents, 20-25 at 100,000, and the expiry cycle's log trim after
 * it 5 more; the next delete but one reuses them. 64 pages is 2.5 times one
 * such delete. FLUSHALL frees every page at once, and LMDB stores the list
 * (8 bytes a page) in one record of contiguous pages: map / 512; the reserve
 * grows with the map to twice that, up to MAX.
 */
#define DB_DELETE_RESERVE_DEFAULT (256u << 10) /* 64 pages of 4 KiB */
#define DB_DELETE_RESERVE_MIN (64u << 10)
#define DB_DELETE_RESERVE_MAX (64ull << 20)
#define DB_DELETE_RESERVE_MAP_DIV 256u
/* What one commit of adding writes takes beyond its writes' estimates (the
 * B-tree paths it copies, about 20 pages for a one-HSET commit plus the log
 * trim after it): counted once per batch, so the reserve is left whole. */
#define DB_COMMIT_PAGES_BYTES (128u << 10)
/* FT.CREATE's catalog row and first postings, beyond DB_COMMIT_PAGES_BYTES. */
#define DB_INDEX_CREATE_BYTES (64u << 10)

static uint64_t delete_reserve(const vela_db_t *db)
{
	uint64_t r = storage_map_size(db->env) / DB_DELETE_RESERVE_MAP_DIV;
	r = r > DB_DELETE_RESERVE_DEFAULT ? r : DB_DELETE_RESERVE_DEFAULT;
	return r < DB_DELETE_RESERVE_MIN ? DB_DELETE_RESERVE_MIN
					 : r > DB_DELETE_RESERVE_MAX ? DB_DELETE_RESERVE_MAX : r;
}

/* Does this change list create an index (FT.CREATE adds data)? */
static bool changes_add_index(const db_changes_t *ch)
{
	for (size_t i = 0; i < ch->n; i++)
		if (ch->v[i].kind == DC_INDEX_ADD)
			return true;
	return false;
}

/*
 * LMDB reuses the pages a commit freed only once a later one committed: after
 * a large delete (FLUSHALL, FT.DROPINDEX, DELs) on a full map the next write
 * would find no page. A commit that changes nothing (a META row put and
 * deleted again) makes them reusable; run after a commit that freed more
 * than a commit takes, on a map short of the reserve. The caller holds
 * write_mu and no write transaction.
 */
static int release_freed(vela_db_t *db)
{
	static const char name[] = "release";
	storage_txn_t *t;
	int rc = storage_txn_begin(db->env, NULL, 1, &t);
	if (rc)
		return rc;
	if ((rc = storage_put(t, ST_META, name, sizeof(name) - 1, "", 0)) ||
	    (rc = storage_del(t, ST_META, name, sizeof(name) - 1))) {
		storage_txn_abort(t);
		return rc;
	}
	return storage_txn_commit(t);
}

static void release_if_full(vela_db_t *db)
{
	uint64_t pending, room = delete_reserve(db) + 2 * DB_COMMIT_PAGES_BYTES;
	if (storage_free_bytes(db->env, room, &pending) < room && pending > DB_COMMIT_PAGES_BYTES)
		release_freed(db);
}

int db_commit(vela_db_t *db, storage_txn_t *txn, db_changes_t *ch, vela_err_t *err)
{
	/* FT.CREATE runs in catalog.c; its refusal comes here, before commit
	 * (its own pages are not estimated: the reserve absorbs them). */
	if (changes_add_index(ch)) {
		uint64_t need = delete_reserve(db) + DB_COMMIT_PAGES_BYTES + DB_INDEX_CREATE_BYTES;
		if (storage_free_bytes(db->env, need, NULL) < need) {
			storage_txn_abort(txn);
			db_changes_truncate(ch, 0);
			return vela_err_set(err, VELA_EMAPFULL, DB_MAP_FULL_MSG);
		}
	}
	pthread_rwlock_wrlock(&db->lock);
	int rc = storage_txn_commit(txn);
	if (rc == 0)
		db_changes_apply(db, ch);
	pthread_rwlock_unlock(&db->lock);
	if (rc) {
		db_changes_truncate(ch, 0);
		if (rc == VELA_EMAPFULL)
			return vela_err_set(err, rc, DB_MAP_FULL_MSG);
		if (rc == VELA_ETXNFULL) /* the free-list save at commit found no room */
			return vela_err_set(err, rc, DB_TXN_FULL_MSG);
		if (rc == VELA_ENOSPC) /* say which disk: data.mdb's, not a backup's */
			return vela_err_set(err, rc, "commit failed: %s (the disk under %s is full)",
					    vela_strerror(rc), db->dir);
		return vela_err_set(err, rc, "commit failed: %s", vela_strerror(rc));
	}
	release_if_full(db);
	return VELA_OK;
}

/* ------------------------------------------------------------ documents */

/* The current document at key: a private copy of its packed bytes and the
 * fields pointing into it. Absent: *buf = NULL, *n = 0. */
static int doc_load(storage_txn_t *txn, const uint8_t *key, size_t klen, uint8_t **buf,
		    storage_field_t **f, size_t *n)
{
	const void *v;
	size_t vl;
	*buf = NULL;
	*f = NULL;
	*n = 0;
	int rc = storage_get(txn, ST_DOCS, key, klen, &v, &vl);
	if (rc == VELA_ENOTFOUND)
		return VELA_OK;
	if (rc)
		return rc;
	/* Copy: the map pointer goes stale at the next write in this txn. */
	if ((*buf = malloc(vl)) == NULL)
		return VELA_ENOMEM;
	memcpy(*buf, v, vl);
	rc = storage_doc_unpack(*buf, vl, f, n);
	if (rc) {
		free(*buf);
		*buf = NULL;
	}
	return rc;
}

/* Re-index `key` in every index whose prefix matches. */
static int doc_reindex(vela_db_t *db, storage_txn_t *txn, const uint8_t *key, size_t klen,
		       const storage_field_t *old, size_t n_old, const storage_field_t *doc,
		       size_t n_doc, db_changes_t *ch)
{
	for (size_t i = 0; i < db->n_indexes; i++) {
		db_index_t *ix = db->indexes[i];
		if (!db_index_matches_key(ix, key, klen))
			continue;
		int rc = db_index_doc(ix, txn, key, klen, old, n_old, doc, n_doc, ch);
		if (rc)
			return rc;
	}
	return VELA_OK;
}

int db_doc_store(vela_db_t *db, storage_txn_t *txn, const uint8_t *key, size_t klen,
		     const storage_field_t *old, size_t n_old, const storage_field_t *doc,
		     size_t n_doc, db_changes_t *ch)
{
	int rc;
	if (n_doc == 0) {
		rc = storage_del(txn, ST_DOCS, key, klen);
		if (rc == 0)
			rc = db_expiry_clear(txn, key, klen);
		return rc ? rc : doc_reindex(db, txn, key, klen, old, n_old, NULL, 0, ch);
	}
	uint8_t *packed;
	size_t plen;
	if ((rc = storage_doc_pack(doc, n_doc, &packed, &plen)))
		return rc;
	rc = storage_put(txn, ST_DOCS, key, klen, packed, plen);
	free(packed);
	return rc ? rc : doc_reindex(db, txn, key, klen, old, n_old, doc, n_doc, ch);
}

int db_doc_delete(vela_db_t *db, storage_txn_t *txn, const uint8_t *key, size_t klen,
		  db_changes_t *ch, int *deleted)
{
	uint8_t *buf;
	storage_field_t *old;
	size_t n_old;
	int rc = doc_load(txn, key, klen, &buf, &old, &n_old);
	if (rc == 0 && buf)
		rc = db_doc_store(db, txn, key, klen, old, n_old, NULL, 0, ch);
	if (deleted)
		*deleted = buf != NULL;
	free(old);
	free(buf);
	return rc;
}

static int field_index(const storage_field_t *f, size_t n, const void *name, size_t len)
{
	for (size_t i = 0; i < n; i++)
		if (f[i].name_len == len && (len == 0 || memcmp(f[i].name, name, len) == 0))
			return (int)i;
	return -1;
}

static int op_hset(vela_db_t *db, storage_txn_t *txn, db_op_t *op, db_changes_t *ch)
{
	uint8_t *buf;
	storage_field_t *old, *doc = NULL;
	size_t n_old, n_doc, added = 0, n = op->n;
	const vela_kv_t *kv = op->kv;
	int rc = db_key_is_string(txn, op->key, op->klen);
	if (rc)
		return rc;
	if ((rc = doc_load(txn, op->key, op->klen, &buf, &old, &n_old)))
		return rc;
	if (op->kind == OP_HSET_IF) { /* kv[0]: the value the field must still hold */
		int at = field_index(old, n_old, kv[0].name, kv[0].name_len);
		if (at < 0 || old[at].value_len != kv[0].value_len ||
		    (kv[0].value_len && memcmp(old[at].value, kv[0].value, kv[0].value_len)))
			goto out;
		kv++;
		n--;
	}
	if (n_old + n > STORAGE_DOC_FIELDS_MAX ||
	    (doc = malloc((n_old + n) * sizeof(*doc))) == NULL) {
		rc = n_old + n > STORAGE_DOC_FIELDS_MAX ? VELA_ELIMIT : VELA_ENOMEM;
		goto out;
	}
	if (n_old)
		memcpy(doc, old, n_old * sizeof(*doc));
	n_doc = n_old;
	for (size_t i = 0; i < n; i++) {
		int at = field_index(doc, n_doc, kv[i].name, kv[i].name_len);
		if (at >= 0 && op->kind == OP_HSETNX && i == 0)
			goto out; /* HSETNX: the field exists, nothing to do */
		if (at < 0) {
			at = (int)n_doc++;
			doc[at].name = kv[i].name;
			doc[at].name_len = kv[i].name_len;
			added += field_index(old, n_old, kv[i].name, kv[i].name_len) < 0;
		}
		doc[at].value = kv[i].value;
		doc[at].value_len = kv[i].value_len;
	}
	rc = db_doc_store(db, txn, op->key, op->klen, old, n_old, doc, n_doc, ch);
	op->count = op->kind == OP_HSET_IF ? 1 : added;
out:
	free(doc);
	free(old);
	free(buf);
	return rc;
}

static int op_hdel(vela_db_t *db, storage_txn_t *txn, const uint8_t *key, size_t klen,
		   const vela_kv_t *names, size_t n, size_t *n_removed, db_changes_t *ch)
{
	uint8_t *buf = NULL;
	storage_field_t *old = NULL, *doc = NULL;
	size_t n_old = 0, n_doc = 0, removed = 0;
	int rc = db_key_is_string(txn, key, klen);
	if (rc == 0)
		rc = doc_load(txn, key, klen, &buf, &old, &n_old);
	if (rc || buf == NULL)
		goto out;
	if ((doc = malloc((n_old ? n_old : 1) * sizeof(*doc))) == NULL) {
		rc = VELA_ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n_old; i++) {
		int gone = 0;
		for (size_t j = 0; j < n && !gone; j++)
			gone = names[j].name_len == old[i].name_len &&
			       (old[i].name_len == 0 ||
				memcmp(names[j].name, old[i].name, old[i].name_len) == 0);
		if (gone)
			removed++;
		else
			doc[n_doc++] = old[i];
	}
	if (removed)
		rc = db_doc_store(db, txn, key, klen, old, n_old, doc, n_doc, ch);
out:
	if (n_removed)
		*n_removed = rc ? 0 : removed;
	free(doc);
	free(old);
	free(buf);
	return rc;
}

/* ------------------------------------------------------------ batches */

struct vela_batch {
	vela_db_t *db;
	storage_txn_t *txn;
	db_changes_t ch;
	pthread_t owner; /**< LMDB write txns are bound to the thread that began them */
	uint64_t headroom; /**< free map bytes when the batch began (storage_free_bytes) */
	bool headroom_partial; /**< the free-list walk stopped early: there may be more */
	uint64_t reserve;  /**< delete_reserve() when the batch began */
	uint64_t written;  /**< estimated bytes the batch's writes use */
	int failed;        /**< a storage error poisoned the transaction */
};

/*
 * Each write runs in a nested LMDB transaction so it can fail alone; but a
 * nested transaction costs LMDB two large allocations (its dirty list), which
 * dominated pipelined HSET/SET profiles. A write can only fail half-way for
 * lack of map space (its validation errors come before it writes; a full
 * dirty list, VELA_ETXNFULL, fails the whole batch either way), so while
 * the map has ample room writes run directly in the batch's transaction. An
 * estimate of what they use keeps them within a quarter of the free space;
 * past that, nested transactions again.
 */
#define DB_FASTPATH_HEADROOM_DIV 4u
#define DB_OP_OVERHEAD 512u /* per write: postings, id rows, log, page slack */
/* A delete frees space only at the commit after next, and meanwhile copies
 * the B-tree paths it touches: a batch of 50 one-key DELs of random keys
 * committed 170 (4,000 documents) to 340 pages (100,000). Counted as 6 pages
 * (doubled, as every estimate: 12), pipelined deletes on a full map stop
 * while the commit still has room (with 2 pages, some commits failed) and
 * stay out of the fast path, so one that finds no page fails alone. */
#define DB_DELETE_PAGES_BYTES (24u << 10)
/* How far past the reserve a batch looks for free pages at its start. */
#define DB_HEADROOM_PROBE_MUL 8u

int vela_batch_begin(vela_db_t *db, vela_batch_t **out, vela_err_t *err)
{
	vela_batch_t *b = calloc(1, sizeof(*b));
	if (b == NULL)
		return vela_err_set(err, VELA_ENOMEM, "out of memory");
	b->db = db;
	b->owner = pthread_self();
	pthread_mutex_lock(&db->write_mu);
	/* Measured before the write transaction begins; the free-list walk
	 * (only when the map's tail is short) stops well past the reserve. */
	b->reserve = delete_reserve(db);
	uint64_t enough = DB_HEADROOM_PROBE_MUL * (b->reserve + DB_COMMIT_PAGES_BYTES);
	b->headroom = storage_free_bytes(db->env, enough, NULL);
	b->headroom_partial = b->headroom >= enough;
	int rc = storage_txn_begin(db->env, NULL, 1, &b->txn);
	if (rc) {
		pthread_mutex_unlock(&db->write_mu);
		free(b);
		return vela_err_set(err, rc, "cannot begin write: %s", vela_strerror(rc));
	}
	*out = b;
	return VELA_OK;
}

static int key_check(const void *key, size_t klen, vela_err_t *err)
{
	if (key == NULL || klen == 0)
		return vela_err_set(err, VELA_EINVAL, "empty key");
	if (klen > VELA_KEY_MAX)
		return vela_err_set(err, VELA_ELIMIT, "key is %zu bytes, longer than the %u allowed",
				    klen, VELA_KEY_MAX);
	return VELA_OK;
}

static int batch_thread_check(const vela_batch_t *b, vela_err_t *err)
{
	if (pthread_equal(b->owner, pthread_self()))
		return VELA_OK;
	return vela_err_set(err, VELA_EINVAL, "a batch must be used and committed on the "
					      "thread that began it");
}

static int op_exec(vela_db_t *db, storage_txn_t *txn, db_op_t *op, db_changes_t *ch)
{
	int rc = op->kind == OP_EXPIRE_CYCLE ? VELA_OK
					     : db_key_lazy_expire(db, txn, op->key, op->klen, ch);
	if (rc)
		return rc;
	switch (op->kind) {
	case OP_HSET:
	case OP_HSETNX:
	case OP_HSET_IF:
		return op_hset(db, txn, op, ch);
	case OP_HDEL:
		return op_hdel(db, txn, op->key, op->klen, op->kv, op->n, &op->count, ch);
	case OP_DEL:
		return db_key_delete(db, txn, op->key, op->klen, ch, &op->count);
	default:
		return db_keyspace_op(db, txn, op, ch);
	}
}

/* Bytes a write may add to the map, generously (B-tree copies, postings). */
static uint64_t op_estimate(const db_op_t *op)
{
	uint64_t n = DB_OP_OVERHEAD + 2 * (op->klen + op->vlen);
	for (size_t i = 0; op->kv && i < op->n; i++)
		n += 2 * (op->kv[i].name_len + op->kv[i].value_len) + 64;
	if (op->kind == OP_EXPIRE_CYCLE)
		n += (uint64_t)op->n * DB_OP_OVERHEAD * 4;
	if (op->kind == OP_DEL || op->kind == OP_HDEL)
		n += DB_DELETE_PAGES_BYTES;
	return 2 * n;
}

/* What a write that ran took: the expiry cycle's estimate counts the keys it
 * expired, not its limit (it runs every 100 ms, mostly expiring none). */
static uint64_t op_used(const db_op_t *op)
{
	if (op->kind != OP_EXPIRE_CYCLE)
		return op_estimate(op);
	db_op_t done = *op;
	done.n = op->count;
	return op_estimate(&done);
}

/* Run a write in the batch's own transaction (see DB_FASTPATH_HEADROOM_DIV). */
static int batch_run_direct(vela_batch_t *b, db_op_t *op)
{
	int rc = op_exec(b->db, b->txn, op, &b->ch);
	b->written += op_used(op);
	/* Type and limit errors come before the write touched anything; any
	 * other (map or dirty list full: VELA_ETXNFULL) may leave it half done. */
	if (rc && rc != VELA_ETYPE && rc != VELA_ELIMIT && rc != VELA_EINVAL)
		b->failed = rc;
	return rc;
}

/* Run a write in a nested transaction so it fails alone. */
static int batch_run_nested(vela_batch_t *b, db_op_t *op)
{
	storage_txn_t *child;
	int rc = storage_txn_begin(b->db->env, b->txn, 1, &child);
	if (rc)
		return rc;
	size_t mark = b->ch.n;
	rc = op_exec(b->db, child, op, &b->ch);
	rc = rc ? (storage_txn_abort(child), rc) : storage_txn_commit(child);
	if (rc)
		db_changes_truncate(&b->ch, mark);
	else
		b->written += op_used(op); /* the reserve check counts every write */
	/* The aborted child left the batch's transaction intact, but its dirty
	 * list is what is full, and a child cannot spill its parent's pages (LMDB
	 * mdb_page_spill): no later write would fit. Fail the whole batch rather
	 * than commit whatever prefix got in. */
	if (rc == VELA_ETXNFULL)
		b->failed = rc;
	return rc;
}

/* Writes that add data; the others (DEL, HDEL, EXPIRE in the past, PERSIST,
 * the expiry cycle) free space and may use the delete reserve. */
static bool op_adds(const db_op_t *op)
{
	switch (op->kind) {
	case OP_HSET:
	case OP_HSETNX:
	case OP_HSET_IF:
	case OP_SET:
		return true;
	case OP_EXPIRE:
		return op->at_ms > db_now_ms();
	default:
		return false;
	}
}

/*
 * Does this write not fit? One that adds data must leave the delete reserve
 * free; a delete may use the reserve but must leave room for the commit
 * (its B-tree paths and free-list record): a write that found no page fails
 * alone, but a commit that finds none fails the whole batch, so deletes
 * pipelined on a full map would never get through. Walks LMDB's free list
 * further (doubling) only when the batch's first look was cut short, so the
 * common case is arithmetic.
 */
static bool batch_over(vela_batch_t *b, const db_op_t *op)
{
	uint64_t need = b->written + op_estimate(op) + DB_COMMIT_PAGES_BYTES +
			(op_adds(op) ? b->reserve : 0);
	if (need > b->headroom && b->headroom_partial) {
		b->headroom = storage_free_bytes(b->db->env, 2 * need, NULL);
		b->headroom_partial = b->headroom >= 2 * need;
	}
	return need > b->headroom;
}

static int batch_run(vela_batch_t *b, db_op_t *op, vela_err_t *err)
{
	int rc = batch_thread_check(b, err);
	if (rc == 0 && op->kind != OP_EXPIRE_CYCLE)
		rc = key_check(op->key, op->klen, err);
	if (rc)
		return rc;
	if (b->failed)
		return vela_err_set(err, b->failed, "write failed earlier in this batch: %s",
				    vela_strerror(b->failed));
	/* The expiry cycle's estimate is for its limit of keys, not what is
	 * due; it runs nested, so a cycle that finds no page fails alone. */
	if (op->kind != OP_EXPIRE_CYCLE && batch_over(b, op)) {
		op->count = 0;
		return vela_err_set(err, VELA_EMAPFULL, DB_MAP_FULL_MSG);
	}
	bool direct = b->written + op_estimate(op) < b->headroom / DB_FASTPATH_HEADROOM_DIV;
	rc = direct ? batch_run_direct(b, op) : batch_run_nested(b, op);
	if (rc == 0)
		return VELA_OK;
	op->count = 0;
	if (rc == VELA_ETYPE)
		return vela_err_set(err, rc, "WRONGTYPE Operation against a key holding the wrong "
					     "kind of value");
	if (rc == VELA_EMAPFULL)
		return vela_err_set(err, rc, DB_MAP_FULL_MSG);
	if (rc == VELA_ETXNFULL)
		return vela_err_set(err, rc, DB_TXN_FULL_MSG);
	return vela_err_set(err, rc, "write failed: %s", vela_strerror(rc));
}

int vela_batch_hset(vela_batch_t *b, const void *key, size_t klen, const vela_kv_t *fields,
		    size_t n, size_t *n_added, vela_err_t *err)
{
	if (n == 0 || fields == NULL)
		return vela_err_set(err, VELA_EINVAL, "wrong number of arguments for 'hset' command");
	db_op_t op = {.kind = OP_HSET, .key = key, .klen = klen, .kv = fields, .n = n};
	int rc = batch_run(b, &op, err);
	if (n_added)
		*n_added = op.count;
	return rc;
}

int vela_batch_hset_if(vela_batch_t *b, const void *key, size_t klen, const vela_kv_t *cond,
		       const vela_kv_t *fields, size_t n, int *applied, vela_err_t *err)
{
	vela_kv_t *kv = malloc((n + 1) * sizeof(*kv));
	if (kv == NULL)
		return vela_err_set(err, VELA_ENOMEM, "out of memory");
	kv[0] = *cond;
	memcpy(kv + 1, fields, n * sizeof(*kv));
	db_op_t op = {.kind = OP_HSET_IF, .key = key, .klen = klen, .kv = kv, .n = n + 1,
		      .count = 0};
	int rc = batch_run(b, &op, err);
	free(kv);
	if (applied)
		*applied = rc == 0 && op.count > 0;
	return rc;
}

int vela_batch_hsetnx_with(vela_batch_t *b, const void *key, size_t klen,
			   const vela_kv_t *field, const vela_kv_t *extra, size_t n_extra, int *set,
			   vela_err_t *err)
{
	vela_kv_t *kv = malloc((n_extra + 1) * sizeof(*kv));
	if (kv == NULL)
		return vela_err_set(err, VELA_ENOMEM, "out of memory");
	kv[0] = *field;
	if (n_extra)
		memcpy(kv + 1, extra, n_extra * sizeof(*kv));
	db_op_t op = {.kind = OP_HSETNX, .key = key, .klen = klen, .kv = kv, .n = n_extra + 1};
	int rc = batch_run(b, &op, err);
	free(kv);
	if (set)
		*set = op.count > 0;
	return rc;
}

int vela_batch_hsetnx(vela_batch_t *b, const void *key, size_t klen, const vela_kv_t *field,
		      int *set, vela_err_t *err)
{
	return vela_batch_hsetnx_with(b, key, klen, field, NULL, 0, set, err);
}

/* HDEL of a SOURCE field also deletes the vector computed from it (a vector
 * whose text is gone would still answer searches). names + those fields. */
static int hdel_names(vela_db_t *db, const void *key, size_t klen, const vela_kv_t *names,
		      size_t n, vela_kv_t **out, size_t *n_out, vela_embed_target_t **t,
		      size_t *nt, vela_err_t *err)
{
	*out = NULL;
	*n_out = n;
	int rc = vela_embed_targets(db, key, klen, names, n, t, nt, err);
	if (rc || *nt == 0)
		return rc;
	if ((*out = malloc((n + *nt) * sizeof(**out))) == NULL)
		return vela_err_set(err, VELA_ENOMEM, "out of memory");
	memcpy(*out, names, n * sizeof(**out));
	for (size_t i = 0; i < *nt; i++)
		(*out)[(*n_out)++] = (vela_kv_t){(*t)[i].field, strlen((*t)[i].field), NULL, 0};
	return VELA_OK;
}

int vela_batch_hdel(vela_batch_t *b, const void *key, size_t klen, const vela_kv_t *names,
		    size_t n, size_t *n_removed, vela_err_t *err)
{
	if (n == 0 || names == NULL)
		return vela_err_set(err, VELA_EINVAL, "wrong number of arguments for 'hdel' command");
	vela_kv_t *all;
	vela_embed_target_t *t = NULL;
	size_t n_all, nt = 0;
	int rc = hdel_names(b->db, key, klen, names, n, &all, &n_all, &t, &nt, err);
	if (rc == 0) {
		db_op_t op = {.kind = OP_HDEL, .key = key, .klen = klen, .kv = all ? all : names,
			      .n = n_all};
		rc = batch_run(b, &op, err);
		if (n_removed)
			*n_removed = op.count;
	}
	free(all);
	vela_embed_targets_free(t, nt);
	return rc;
}

int vela_batch_del(vela_batch_t *b, const void *key, size_t klen, int *deleted, vela_err_t *err)
{
	db_op_t op = {.kind = OP_DEL, .key = key, .klen = klen};
	int rc = batch_run(b, &op, err);
	if (deleted)
		*deleted = (int)op.count;
	return rc;
}

int vela_batch_set(vela_batch_t *b, const void *key, size_t klen, const void *val, size_t vlen,
		   unsigned flags, int64_t expire_at_ms, int *done, vela_err_t *err)
{
	db_op_t op = {.kind = OP_SET, .key = key, .klen = klen, .val = val, .vlen = vlen,
		      .flags = flags, .at_ms = expire_at_ms};
	int rc = batch_run(b, &op, err);
	if (done)
		*done = op.count > 0;
	return rc;
}

int vela_batch_expire(vela_batch_t *b, const void *key, size_t klen, int64_t at_ms, int *applied,
		      vela_err_t *err)
{
	db_op_t op = {.kind = OP_EXPIRE, .key = key, .klen = klen, .at_ms = at_ms};
	int rc = batch_run(b, &op, err);
	if (applied)
		*applied = op.count > 0;
	return rc;
}

int vela_batch_expire_cycle(vela_batch_t *b, size_t max, size_t *n_expired, vela_err_t *err)
{
	db_op_t op = {.kind = OP_EXPIRE_CYCLE, .n = max};
	int rc = batch_run(b, &op, err);
	if (n_expired)
		*n_expired = op.count;
	return rc;
}

/* Why a failed batch commits nothing: the same text as the failed write's. */
static int batch_failed_err(int rc, vela_err_t *err)
{
	if (rc == VELA_EMAPFULL)
		return vela_err_set(err, rc, DB_MAP_FULL_MSG);
	if (rc == VELA_ETXNFULL)
		return vela_err_set(err, rc, DB_TXN_FULL_MSG);
	return vela_err_set(err, rc, "batch aborted: %s", vela_strerror(rc));
}

int vela_batch_commit(vela_batch_t *b, vela_err_t *err)
{
	vela_db_t *db = b->db;
	int rc = batch_thread_check(b, err);
	if (rc)
		return rc; /* the batch stays open for its own thread */
	if (b->failed) { /* a write broke (or filled) the transaction: nothing commits */
		rc = batch_failed_err(b->failed, err);
		storage_txn_abort(b->txn);
		db_changes_truncate(&b->ch, 0);
	} else {
		rc = db_commit(db, b->txn, &b->ch, err);
	}
	pthread_mutex_unlock(&db->write_mu);
	free(b->ch.v);
	free(b);
	return rc;
}

void vela_batch_abort(vela_batch_t *b)
{
	if (b == NULL)
		return;
	storage_txn_abort(b->txn);
	db_changes_truncate(&b->ch, 0);
	pthread_mutex_unlock(&b->db->write_mu);
	free(b->ch.v);
	free(b);
}

/* One-write batches. */
#define ONE_WRITE(call)                                          \
	vela_batch_t *b;                                         \
	int rc = vela_batch_begin(db, &b, err);                  \
	if (rc)                                                  \
		return rc;                                       \
	if ((rc = (call))) {                                     \
		vela_batch_abort(b);                             \
		return rc;                                       \
	}                                                        \
	return vela_batch_commit(b, err)

int vela_hset(vela_db_t *db, const void *key, size_t klen, const vela_kv_t *fields, size_t n,
	      size_t *n_added, vela_err_t *err)
{
	ONE_WRITE(vela_batch_hset(b, key, klen, fields, n, n_added, err));
}

int vela_hdel(vela_db_t *db, const void *key, size_t klen, const vela_kv_t *names, size_t n,
	      size_t *n_removed, vela_err_t *err)
{
	ONE_WRITE(vela_batch_hdel(b, key, klen, names, n, n_removed, err));
}

int vela_del(vela_db_t *db, const void *key, size_t klen, int *deleted, vela_err_t *err)
{
	ONE_WRITE(vela_batch_del(b, key, klen, deleted, err));
}
