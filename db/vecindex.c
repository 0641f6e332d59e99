/* Vector fields: the exact FLAT index always (the in-memory copy of the
 * vectors), plus a Vamana graph for GRAPH fields, and the choice between
 * them for each query. */
#include <stdlib.h>

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

uint64_t db_vec_build_threshold(const db_field_t *f)
{
	if (f->compression == 0)
		return DB_GRAPH_MIN_DOCS;
	return f->training_threshold ? f->training_threshold : VELA_TRAINING_THRESHOLD_DEFAULT;
}

