/* Vector fields: the exact FLAT index always (the in-memory copy of the
 * vectors, or only their docids once a compressed store holds them: db.h),
 * plus a Vamana graph for GRAPH fields, and the choice between them for
 * each query. */
#include <stdlib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "db.h"
#include "db/search_int.h"

bool db_index_has_graph(const db_index_t *ix)
{
	for (uint32_t i = 0; i < ix->n_fields; i++)
		if (ix->fields[i].type == VELA_FIELD_VECTOR && ix->fields[i].algo == VELA_ALGO_GRAPH)
			return true;
	return false;
}

int db_vec_set(db_field_t *f, uint32_t docid, const float *vec)
{
	if (f->dirty) /* a background build replays it at install */
		roaring_bitmap_add(f->dirty, docid);
	int rc = flat_set(f->flat, docid, vec);
	if (rc == 0 && f->lvq)
		rc = graph_lvq_store_set(f->lvq, docid, vec);
	/* A changed vector (same docid) is re-linked; a new one inserted. */
	if (rc == 0 && f->graph)
		rc = graph_update(f->graph, docid);
	return rc;
}

int db_vec_remove(db_field_t *f, uint32_t docid)
{
	if (f->dirty)
		roaring_bitmap_add(f->dirty, docid);
	int rc = flat_remove(f->flat, docid);
	if (rc || f->graph == NULL)
		return rc;
	/* The compressed record stays readable: the graph walks tombstones. */
	if (f->lvq && (rc = graph_lvq_store_remove(f->lvq, docid)) == VELA_ENOTFOUND)
		rc = VELA_OK;
	if ((rc = graph_delete(f->graph, docid)) == VELA_ENOTFOUND)
		rc = VELA_OK;
	uint64_t live = graph_count(f->graph);
	/* Consolidation is O(n R): amortised over many deletes (FreshDiskANN). */
	if (rc == 0 &&
	    (double)graph_count_deleted(f->graph) > DB_GRAPH_CONSOLIDATE_RATIO * (double)live)
		rc = graph_consolidate(f->graph);
	return rc;
}

void db_vec_rows_release(db_field_t *f)
{
	if (!(f->lvq && f->graph && flat_has_rows(f->flat)))
		return;
	flat_rows_release(f->flat);
#ifdef __GLIBC__
	malloc_trim(0); /* give the rows' pages back (glibc keeps freed heap) */
#endif
}

/* Rows released: the compressed store answers (f->lvq is then set). */
static bool vec_from_store(const db_field_t *f)
{
	return !flat_has_rows(f->flat) && f->lvq;
}

int db_vec_search(const db_field_t *f, const float *q, uint32_t k, const roaring_bitmap_t *filter,
		  vela_hit_t *out, uint32_t *n_out)
{
	if (vec_from_store(f))
		return graph_lvq_store_search(f->lvq, q, k, filter, out, n_out);
	return flat_search(f->flat, q, k, filter, out, n_out);
}

int db_vec_range(const db_field_t *f, const float *q, float radius,
		 const roaring_bitmap_t *filter, vela_hit_t **out, size_t *n_out)
{
	if (vec_from_store(f))
		return graph_lvq_store_range(f->lvq, q, radius, filter, out, n_out);
	return flat_range(f->flat, q, radius, filter, out, n_out);
}

int db_vec_get(const db_field_t *f, uint32_t docid, float *out)
{
	if (vec_from_store(f))
		return graph_lvq_store_decode(f->lvq, docid, out);
	return flat_get(f->flat, docid, out);
}

uint64_t db_vec_build_threshold(const db_field_t *f)
{
	if (f->compression == 0)
		return DB_GRAPH_MIN_DOCS;
	return f->training_threshold ? f->training_threshold : VELA_TRAINING_THRESHOLD_DEFAULT;
}

