/* Vector fields: the exact FLAT index always (the in-memory copy of the
 * vectors), plus a Vamana graph for GRAPH fields, and the choice between
 * them for each query. */
#include <stdlib.h>
#include <unistd.h>

#include "db.h"

bool db_index_has_graph(const db_index_t *ix)
{
	for (uint32_t i = 0; i < ix->n_fields; i++)
		if (ix->fields[i].type == VELA_FIELD_VECTOR && ix->fields[i].algo == VELA_ALGO_GRAPH)
			return true;
	return false;
}

int db_vec_set(db_field_t *f, uint32_t docid, const float *vec)
{
	int rc = flat_set(f->flat, docid, vec);
	/* A changed vector (same docid) is re-linked; a new one inserted. */
	if (rc == 0 && f->graph)
		rc = graph_update(f->graph, docid);
	return rc;
}

int db_vec_remove(db_field_t *f, uint32_t docid)
{
	int rc = flat_remove(f->flat, docid);
	if (rc || f->graph == NULL)
		return rc;
	if ((rc = graph_delete(f->graph, docid)) == VELA_ENOTFOUND)
		rc = VELA_OK;
	uint64_t live = graph_count(f->graph);
	/* Consolidation is O(n R): amortised over many deletes (FreshDiskANN). */
	if (rc == 0 &&
	    (double)graph_count_deleted(f->graph) > DB_GRAPH_CONSOLIDATE_RATIO * (double)live)
		rc = graph_consolidate(f->graph);
	return rc;
}

static uint32_t build_threads(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : n > GRAPH_THREADS_MAX ? GRAPH_THREADS_MAX : (uint32_t)n;
}

void db_vec_maybe_build(db_field_t *f)
{
	if (f->algo != VELA_ALGO_GRAPH || f->graph || flat_count(f->flat) < DB_GRAPH_MIN_DOCS)
		return;
	graph_params_t p;
	graph_params_default(&p);
	if (f->graph_degree)
		p.max_degree = f->graph_degree;
	if (f->graph_build_window)
		p.window = f->graph_build_window;
	p.threads = build_threads();
	uint64_t n = flat_count(f->flat);
	uint32_t *ids = malloc(n * sizeof(uint32_t));
	int rc = ids ? graph_store_flat(f->flat, &f->gstore) : VELA_ENOMEM;
	if (rc == 0)
		rc = graph_create(&f->gstore, &p, &f->graph);
	if (rc == 0) {
		roaring_bitmap_to_uint32_array(flat_docids(f->flat), ids);
		uint64_t t0 = vela_now_ns();
		rc = graph_build(f->graph, ids, n);
		vela_info("field '%s': graph over %llu vectors built in %.2f s", f->alias,
			  (unsigned long long)n, (double)(vela_now_ns() - t0) / 1e9);
	}
	free(ids);
	if (rc) { /* exact search keeps answering */
		vela_error("field '%s': graph build failed (%s); searching exactly",
			   f->alias, vela_strerror(rc));
		graph_destroy(f->graph);
		f->graph = NULL;
	}
}

int db_vec_search(const db_field_t *f, const float *q, uint32_t k, uint32_t window,
		  const roaring_bitmap_t *filter, vela_hit_t *out, uint32_t *n_out,
		  const char **plan)
{
	uint64_t n = flat_count(f->flat);
	uint64_t m = filter ? roaring_bitmap_get_cardinality(filter) : n;
	/* Few candidates: an exact scan of them is cheaper than a graph walk
	 * that must widen to find them, and its recall is 1. */
	if (f->graph == NULL || m < DB_GRAPH_FILTER_EXACT_MIN ||
	    (double)m < DB_GRAPH_FILTER_EXACT_RATIO * (double)n) {
		*plan = filter ? "filtered-scan" : "scan";
		return flat_search(f->flat, q, k, filter, out, n_out);
	}
	*plan = "graph";
	graph_search_params_t sp;
	graph_search_params_default(&sp);
	sp.window = window ? window : f->graph_search_window ? f->graph_search_window
							   : GRAPH_SEARCH_WINDOW_SIZE_DEFAULT;
	if (sp.window < k)
		sp.window = k;
	if (sp.window > GRAPH_SEARCH_WINDOW_SIZE_MAX)
		sp.window = GRAPH_SEARCH_WINDOW_SIZE_MAX;
	sp.filter = filter;
	return graph_search(f->graph, q, k, &sp, out, n_out);
}
