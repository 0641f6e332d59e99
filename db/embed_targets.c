/* Computed vectors (FT.CREATE ... VECTOR ... MODEL m SOURCE f): which vector
 * fields a write must have computed before it reaches the writer. The
 * engine only answers the question; the server embeds (DESIGN §7). */
#include <stdlib.h>
#include <string.h>

#include "db.h"

void db_computed_recount(vela_db_t *db)
{
	unsigned n = 0;
	for (size_t i = 0; i < db->n_indexes; i++)
		for (uint32_t f = 0; f < db->indexes[i]->n_fields; f++)
			n += db->indexes[i]->fields[f].model != NULL;
	atomic_store(&db->n_computed, n);
}

void vela_embed_targets_free(vela_embed_target_t *t, size_t n)
{
	for (size_t i = 0; t && i < n; i++) {
		free(t[i].model);
		free(t[i].field);
	}
	free(t);
}

/* Index in kv of the last field named `name`, or -1. */
static long kv_find(const vela_kv_t *kv, size_t n, const char *name)
{
	size_t len = strlen(name);
	for (size_t i = n; i-- > 0;)
		if (kv[i].name_len == len && memcmp(kv[i].name, name, len) == 0)
			return (long)i;
	return -1;
}

/* Add f's target unless the same field is there; a conflict is an error. */
static int target_add(vela_embed_target_t **v, size_t *n, const db_field_t *f, long src,
		      vela_err_t *err)
{
	for (size_t i = 0; i < *n; i++) {
		if (strcmp((*v)[i].field, f->name) != 0)
			continue;
		if (strcmp((*v)[i].model, f->model) == 0 && (*v)[i].dim == f->dim &&
		    (*v)[i].vec_type == f->vec_type)
			return VELA_OK;
		return vela_err_set(err, VELA_EINVAL,
				    "two indexes compute field '%s' with different models, "
				    "dimensions or types", f->name);
	}
	vela_embed_target_t *nv = realloc(*v, (*n + 1) * sizeof(**v));
	if (nv == NULL)
		return vela_err_set(err, VELA_ENOMEM, "out of memory");
	*v = nv;
	vela_embed_target_t *t = &nv[*n];
	*t = (vela_embed_target_t){.model = strdup(f->model), .field = strdup(f->name),
				   .source = (uint32_t)src, .dim = f->dim, .vec_type = f->vec_type};
	(*n)++;
	if (t->model == NULL || t->field == NULL)
		return vela_err_set(err, VELA_ENOMEM, "out of memory");
	return VELA_OK;
}

int vela_embed_targets(vela_db_t *db, const void *key, size_t klen, const vela_kv_t *kv,
		       size_t n, vela_embed_target_t **out, size_t *n_out, vela_err_t *err)
{
	*out = NULL;
	*n_out = 0;
	if (atomic_load(&db->n_computed) == 0)
		return VELA_OK;
	int rc = VELA_OK;
	pthread_rwlock_rdlock(&db->lock);
	for (size_t i = 0; rc == 0 && i < db->n_indexes; i++) {
		const db_index_t *ix = db->indexes[i];
		if (!db_index_matches_key(ix, key, klen))
			continue;
		for (uint32_t f = 0; rc == 0 && f < ix->n_fields; f++) {
			const db_field_t *fd = &ix->fields[f];
			long src = fd->model ? kv_find(kv, n, fd->source) : -1;
			if (src >= 0)
				rc = target_add(out, n_out, fd, src, err);
		}
	}
	pthread_rwlock_unlock(&db->lock);
	if (rc) {
		vela_embed_targets_free(*out, *n_out);
		*out = NULL;
		*n_out = 0;
	}
	return rc;
}

/* ------------------------------------------------------------ back-filling */

struct missing_scan {
	const db_index_t *ix;
	vela_embed_missing_fn fn;
	void *ctx;
	size_t max, visited;
	const uint8_t *skip; /* the resume key itself (visited last time) */
	size_t skip_len;
	uint8_t *last;       /* last key visited (malloc'd) */
	size_t last_len;
	int rc;
};

/* Report the doc's computed vectors whose SOURCE is there and field is not. */
static int missing_doc(struct missing_scan *m, const uint8_t *key, size_t klen,
		       const storage_field_t *f, size_t n)
{
	for (uint32_t i = 0; i < m->ix->n_fields; i++) {
		const db_field_t *fd = &m->ix->fields[i];
		long src = -1, have = -1;
		for (size_t k = 0; fd->model && k < n; k++) {
			if (f[k].name_len == strlen(fd->source) &&
			    memcmp(f[k].name, fd->source, f[k].name_len) == 0)
				src = (long)k;
			if (f[k].name_len == strlen(fd->name) &&
			    memcmp(f[k].name, fd->name, f[k].name_len) == 0)
				have = (long)k;
		}
		if (src < 0 || have >= 0)
			continue;
		vela_embed_target_t t = {.model = fd->model, .field = fd->name, .dim = fd->dim,
					 .vec_type = fd->vec_type};
		int rc = m->fn(m->ctx, key, klen, &t, fd->source, f[src].value, f[src].value_len);
		if (rc)
			return rc;
	}
	return 0;
}

static int missing_visit(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
			 size_t vlen)
{
	struct missing_scan *m = ctx;
	if (m->skip && klen == m->skip_len && memcmp(key, m->skip, klen) == 0)
		return 0;
	if (m->visited == m->max)
		return 1;
	m->visited++;
	uint8_t *last = realloc(m->last, klen + 1);
	if (last == NULL)
		return VELA_ENOMEM;
	memcpy(last, key, klen);
	m->last = last;
	m->last_len = klen;
	if (!db_index_matches_key(m->ix, key, klen))
		return 0;
	storage_field_t *f;
	size_t n;
	int rc = storage_doc_unpack(val, vlen, &f, &n);
	if (rc)
		return rc;
	rc = missing_doc(m, key, klen, f, n);
	free(f);
	return rc;
}

int vela_embed_missing(vela_db_t *db, const char *index, void **cursor, size_t *cursor_len,
		       size_t max, vela_embed_missing_fn fn, void *ctx, bool *done,
		       vela_err_t *err)
{
	*done = false;
	pthread_rwlock_rdlock(&db->lock); /* the index cannot be dropped meanwhile */
	const db_index_t *ix = db_index_find(db, index);
	if (ix == NULL) {
		pthread_rwlock_unlock(&db->lock);
		*done = true;
		return vela_err_set(err, VELA_ENOTFOUND, "Unknown index name");
	}
	struct missing_scan m = {.ix = ix, .fn = fn, .ctx = ctx, .max = max ? max : SIZE_MAX,
				 .skip = *cursor, .skip_len = *cursor_len};
	storage_txn_t *txn;
	int rc = storage_txn_begin(db->env, NULL, 0, &txn);
	if (rc == 0) {
		rc = storage_scan_range(txn, ST_DOCS, *cursor ? *cursor : "", *cursor_len, NULL, 0,
					missing_visit, &m);
		storage_txn_abort(txn);
	}
	pthread_rwlock_unlock(&db->lock);
	if (rc < 0) {
		free(m.last);
		return vela_err_set(err, rc, "back-fill scan failed: %s", vela_strerror(rc));
	}
	*done = m.visited < m.max; /* the walk reached the end */
	if (m.last) {
		free(*cursor);
		*cursor = m.last;
		*cursor_len = m.last_len;
	}
	return VELA_OK;
}
