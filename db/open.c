/* Opening and closing a database; reads of single documents. */
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "db/search_int.h"

struct load_ctx {
	vela_db_t *db;
	storage_txn_t *txn;
	uint64_t seq;
	vela_err_t *err;
};

static int load_index(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
		      size_t vlen)
{
	struct load_ctx *l = ctx;
	db_index_t *ix;
	int rc = db_index_unpack(val, vlen, &ix, l->err);
	if (rc)
		return rc;
	if ((rc = db_index_load(l->db, ix, l->txn, l->seq, l->err))) {
		db_index_free(ix);
		return rc;
	}
	if (db_indexes_reserve(l->db, l->db->n_indexes + 1)) {
		db_index_free(ix);
		return vela_err_set(l->err, VELA_ENOMEM, "out of memory loading indexes");
	}
	l->db->indexes[l->db->n_indexes++] = ix;
	db_computed_recount(l->db);
	return 0;
}

/* Recovery (DESIGN §3): every index is rebuilt from LMDB, which makes the
 * change log up to now redundant, so it is trimmed. */
static int db_load(vela_db_t *db, vela_err_t *err)
{
	storage_txn_t *txn;
	int rc = storage_txn_begin(db->env, NULL, 1, &txn);
	if (rc)
		return vela_err_set(err, rc, "cannot begin transaction: %s", vela_strerror(rc));
	struct load_ctx l = {.db = db, .txn = txn, .err = err};
	rc = storage_log_last(txn, &l.seq);
	if (rc == 0)
		rc = storage_scan_prefix(txn, ST_CATALOG, NULL, 0, load_index, &l);
	if (rc && err && err->code != rc)
		vela_err_set(err, rc, "cannot load the catalog: %s", vela_strerror(rc));
	if (rc == 0)
		rc = storage_log_trim(txn, l.seq);
	if (rc) {
		storage_txn_abort(txn);
		return rc;
	}
	rc = storage_txn_commit(txn);
	if (rc)
		return vela_err_set(err, rc, "cannot commit: %s", vela_strerror(rc));
	for (size_t i = 0; i < db->n_indexes; i++)
		vela_info("index '%s': %llu documents loaded", db->indexes[i]->name,
			  (unsigned long long)roaring_bitmap_get_cardinality(db->indexes[i]->docids));
	return VELA_OK;
}

int vela_db_open(const char *dir, const vela_db_options_t *opts, vela_db_t **out,
		 vela_err_t *err)
{
	vela_db_t *db = calloc(1, sizeof(*db));
	if (db == NULL)
		return vela_err_set(err, VELA_ENOMEM, "out of memory");
	size_t map = opts ? opts->map_size : 0;
	unsigned flags = (opts && (opts->flags & VELA_OPEN_NOSYNC)) ? STORAGE_NOSYNC : 0;
	int rc = storage_open(dir, map, flags, &db->env, err);
	if (rc == 0 && (db->dir = strdup(dir)) == NULL)
		rc = vela_err_set(err, VELA_ENOMEM, "out of memory");
	if (rc) {
		storage_close(db->env);
		free(db);
		return rc;
	}
	/* glibc's default rwlock prefers readers: a steady stream of searches
	 * would starve the writer forever. No reader takes the lock twice, so
	 * writer preference cannot deadlock. */
	pthread_rwlockattr_t attr;
	pthread_rwlockattr_init(&attr);
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&db->lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	pthread_mutex_init(&db->write_mu, NULL);
	pthread_mutex_init(&db->backup_mu, NULL);
	if ((rc = db_load(db, err)) == 0 && opts && (opts->flags & VELA_OPEN_BACKGROUND_BUILD) &&
	    (rc = db_builder_start(db)))
		vela_err_set(err, rc, "cannot start the graph builder thread");
	if (rc) {
		vela_db_close(db);
		return rc;
	}
	/* Graphs no snapshot gave: built now, or queued to the builder. */
	for (size_t i = 0; i < db->n_indexes; i++)
		for (uint32_t k = 0; k < db->indexes[i]->n_fields; k++)
			db_vec_maybe_build(db, db->indexes[i], k);
	/* Saved partition layouts, before any write could make them stale. */
	db_layouts_load(db);
	*out = db;
	return VELA_OK;
}

/* The change-log sequence now (0 if it cannot be read). */
static uint64_t db_seq(vela_db_t *db)
{
	uint64_t seq = 0;
	storage_txn_t *txn;
	if (storage_txn_begin(db->env, NULL, 0, &txn) == 0) {
		if (storage_log_last(txn, &seq))
			seq = 0;
		storage_txn_abort(txn);
	}
	return seq;
}

/* The workload logs and query samples the searches recorded, kept beside
 * the database (LeanVec-OOD retraining and layouts read them after a restart). */
static void db_field_states_save(vela_db_t *db)
{
	for (size_t i = 0; i < db->n_indexes; i++)
		for (uint32_t k = 0; k < db->indexes[i]->n_fields; k++) {
			db_field_state_t *s = db_field_state(db, db->indexes[i], k, false);
			if (s && db_workload_save(db, db->indexes[i], s))
				vela_warn("index '%s': cannot save its workload log",
					  db->indexes[i]->name);
		}
}

void vela_db_close(vela_db_t *db)
{
	if (db == NULL)
		return;
	db_builder_stop(db); /* a build in flight is cancelled: rebuilt at the next open */
	db_field_states_save(db);
	vela_layout_release(db); /* workload logs and layouts of this db (db/layout.c) */
	if (db->env && db->n_indexes)
		db_snapshots_save(db, db_seq(db));
	for (size_t i = 0; i < db->n_indexes; i++)
		db_index_free(db->indexes[i]);
	free(db->indexes);
	storage_close(db->env);
	pthread_rwlock_destroy(&db->lock);
	pthread_mutex_destroy(&db->write_mu);
	pthread_mutex_destroy(&db->backup_mu);
	free(db->dir);
	free(db);
}

int vela_db_set_map_size(vela_db_t *db, size_t bytes, vela_err_t *err)
{
	/* LMDB resizes only with no transaction active in the process; a
	 * backup's copy holds one without the lock, so wait for it too. */
	pthread_mutex_lock(&db->write_mu);
	pthread_mutex_lock(&db->backup_mu);
	pthread_rwlock_wrlock(&db->lock);
	int rc = storage_set_map_size(db->env, bytes, err);
	pthread_rwlock_unlock(&db->lock);
	pthread_mutex_unlock(&db->backup_mu);
	pthread_mutex_unlock(&db->write_mu);
	return rc;
}

void vela_db_map_usage(vela_db_t *db, size_t *map_size, size_t *used)
{
	pthread_rwlock_rdlock(&db->lock);
	if (map_size)
		*map_size = storage_map_size(db->env);
	if (used)
		*used = storage_used_bytes(db->env);
	pthread_rwlock_unlock(&db->lock);
}

int vela_db_sync(vela_db_t *db)
{
	return storage_sync(db->env);
}

uint64_t vela_db_size(vela_db_t *db)
{
	uint64_t n = 0, s = 0;
	storage_txn_t *txn = NULL;
	pthread_rwlock_rdlock(&db->lock);
	if (storage_txn_begin(db->env, NULL, 0, &txn) == 0) {
		storage_count(txn, ST_DOCS, &n);
		storage_count(txn, ST_STRINGS, &s);
		storage_txn_abort(txn);
	}
	n += s;
	pthread_rwlock_unlock(&db->lock);
	return n;
}

/* One allocation: the header, the field array, then the bytes. */
static int doc_copy(const storage_field_t *f, size_t n, vela_doc_t **out)
{
	size_t bytes = sizeof(vela_doc_t) + n * sizeof(vela_kv_t);
	for (size_t i = 0; i < n; i++)
		bytes += f[i].name_len + f[i].value_len + 2;
	vela_doc_t *d = malloc(bytes);
	if (d == NULL)
		return VELA_ENOMEM;
	d->fields = (vela_kv_t *)(d + 1);
	d->n_fields = n;
	char *p = (char *)(d->fields + n);
	for (size_t i = 0; i < n; i++) {
		memcpy(p, f[i].name, f[i].name_len);
		p[f[i].name_len] = '\0';
		d->fields[i].name = p;
		d->fields[i].name_len = f[i].name_len;
		p += f[i].name_len + 1;
		memcpy(p, f[i].value, f[i].value_len);
		p[f[i].value_len] = '\0';
		d->fields[i].value = p;
		d->fields[i].value_len = f[i].value_len;
		p += f[i].value_len + 1;
	}
	*out = d;
	return VELA_OK;
}

static int get_in(storage_txn_t *txn, const void *key, size_t klen, vela_doc_t **out)
{
	const void *v;
	size_t vl;
	int rc = db_key_live_read(txn, key, klen) ? VELA_OK : VELA_ENOTFOUND;
	if (rc == 0 && (rc = db_key_is_string(txn, key, klen)) == 0 &&
	    (rc = storage_get(txn, ST_DOCS, key, klen, &v, &vl)) == 0) {
		storage_field_t *f;
		size_t n;
		if ((rc = storage_doc_unpack(v, vl, &f, &n)) == 0) {
			rc = doc_copy(f, n, out);
			free(f);
		}
	}
	return rc;
}

static int get_result(int rc, vela_err_t *err)
{
	if (rc == VELA_ETYPE)
		return vela_err_set(err, rc, "WRONGTYPE Operation against a key holding the wrong "
					     "kind of value");
	if (rc)
		return vela_err_set(err, rc, rc == VELA_ENOTFOUND ? "no such key" : "%s",
				    vela_strerror(rc));
	return VELA_OK;
}

int vela_view_get(vela_view_t *v, const void *key, size_t klen, vela_doc_t **out,
		  vela_err_t *err)
{
	if (key == NULL || klen == 0 || klen > VELA_KEY_MAX)
		return vela_err_set(err, VELA_ENOTFOUND, "no such key");
	return get_result(get_in(db_view_txn(v), key, klen, out), err);
}

int vela_get(vela_db_t *db, const void *key, size_t klen, vela_doc_t **out, vela_err_t *err)
{
	vela_view_t *v;
	int rc = vela_view_begin(db, &v);
	if (rc)
		return get_result(rc, err);
	rc = vela_view_get(v, key, klen, out, err);
	vela_view_end(v);
	return rc;
}

void vela_doc_free(vela_doc_t *doc)
{
	free(doc);
}
