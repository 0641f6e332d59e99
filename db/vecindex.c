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
	if (rc == 0 && f->lvq)
		rc = graph_lvq_store_set(f->lvq, docid, vec);
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

static uint32_t build_threads(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : n > GRAPH_THREADS_MAX ? GRAPH_THREADS_MAX : (uint32_t)n;
}

uint64_t db_vec_build_threshold(const db_field_t *f)
{
	if (f->compression == 0)
		return DB_GRAPH_MIN_DOCS;
	return f->training_threshold ? f->training_threshold : VELA_TRAINING_THRESHOLD_DEFAULT;
}

/* Train the compressed store on the first `threshold` vectors (docid order,
 * so a reopen trains the same store) and encode every vector. */
static int lvq_store_make(db_field_t *f, const uint32_t *ids, uint64_t n)
{
	uint64_t t = db_vec_build_threshold(f);
	size_t ns = n < t ? n : t;
	float *sample = malloc(ns * (size_t)f->dim * sizeof(float));
	if (sample == NULL)
		return VELA_ENOMEM;
	int rc = VELA_OK;
	for (size_t i = 0; rc == 0 && i < ns; i++)
		rc = flat_get(f->flat, ids[i], sample + i * f->dim);
	graph_lvq_params_t p;
	graph_lvq_params_default(&p);
	p.kind = (graph_lvq_kind_t)(f->compression - 1);
	p.dim = f->dim;
	p.metric = f->metric;
	p.reduce_dim = f->reduce;
	vela_err_t err = {0};
	if (rc == 0 && (rc = graph_lvq_store_create(&p, sample, ns, NULL, 0, &f->lvq, &err)))
		vela_error("field '%s': compression training failed: %s", f->alias, err.msg);
	for (uint64_t i = 0; rc == 0 && i < n; i++) {
		rc = flat_get(f->flat, ids[i], sample); /* reuse the first row as scratch */
		if (rc == 0)
			rc = graph_lvq_store_set(f->lvq, ids[i], sample);
	}
	free(sample);
	return rc;
}

int db_vec_store_prepare(db_field_t *f, uint32_t **ids_out, uint64_t *n_out)
{
	uint64_t n = flat_count(f->flat);
	uint32_t *ids = malloc((n ? n : 1) * sizeof(uint32_t));
	if (ids == NULL)
		return VELA_ENOMEM;
	roaring_bitmap_to_uint32_array(flat_docids(f->flat), ids);
	int rc = f->compression ? lvq_store_make(f, ids, n) : graph_store_flat(f->flat, &f->gstore);
	if (rc == 0 && f->lvq)
		f->gstore = *graph_lvq_store(f->lvq);
	if (rc) {
		graph_lvq_store_destroy(f->lvq);
		f->lvq = NULL;
		free(ids);
		return rc;
	}
	*ids_out = ids;
	*n_out = n;
	return VELA_OK;
}

void db_vec_maybe_build(db_field_t *f)
{
	if (f->algo != VELA_ALGO_GRAPH || f->graph || flat_count(f->flat) < db_vec_build_threshold(f))
		return;
	graph_params_t p;
	graph_params_default(&p);
	if (f->graph_degree)
		p.max_degree = f->graph_degree;
	if (f->graph_build_window)
		p.window = f->graph_build_window;
	p.threads = build_threads();
	uint64_t n = 0;
	uint32_t *ids = NULL;
	uint64_t t0 = vela_now_ns();
	int rc = db_vec_store_prepare(f, &ids, &n);
	if (rc == 0)
		rc = graph_create(&f->gstore, &p, &f->graph);
	if (rc == 0) {
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
		graph_lvq_store_destroy(f->lvq);
		f->lvq = NULL;
	}
}
