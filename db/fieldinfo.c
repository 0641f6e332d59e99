/* Per-field statistics: what one VECTOR field holds in memory (FT.INFO). */
#include <string.h>

#include "db.h"

/* By alias (unique in an index) first, then by hash field name. */
static const db_field_t *field_lookup(const db_index_t *ix, const char *field)
{
	int k = db_field_find(ix, field, strlen(field));
	if (k >= 0)
		return &ix->fields[k];
	for (uint32_t i = 0; i < ix->n_fields; i++)
		if (strcmp(ix->fields[i].name, field) == 0)
			return &ix->fields[i];
	return NULL;
}

int vela_field_memory(vela_db_t *db, const char *index, const char *field,
		      vela_field_memory_t *out, vela_err_t *err)
{
	if (db == NULL || index == NULL || field == NULL || out == NULL)
		return vela_err_set(err, VELA_EINVAL, "vela_field_memory: NULL argument");
	memset(out, 0, sizeof(*out));
	pthread_rwlock_rdlock(&db->lock);
	const db_index_t *ix = db_index_find(db, index);
	const db_field_t *f = ix ? field_lookup(ix, field) : NULL;
	int rc = VELA_OK;
	if (ix == NULL)
		rc = vela_err_set(err, VELA_ENOTFOUND, "Unknown index name");
	else if (f == NULL)
		rc = vela_err_set(err, VELA_ENOTFOUND, "index '%s' has no field '%s'", index, field);
	else if (f->type != VELA_FIELD_VECTOR)
		rc = vela_err_set(err, VELA_EINVAL, "field '%s' is not a VECTOR field", field);
	if (rc == VELA_OK) {
		/* A GRAPH field keeps its F32 vectors in the flat index beside the
		 * compressed copies (exact scans below the build threshold and for
		 * selective filters, training), so both count. */
		out->vectors = flat_memory(f->flat);
		out->compressed = f->lvq ? graph_lvq_store_memory(f->lvq) : 0;
		out->graph = f->graph ? graph_memory(f->graph) : 0;
		out->total = out->vectors + out->compressed + out->graph;
	}
	pthread_rwlock_unlock(&db->lock);
	return rc;
}
