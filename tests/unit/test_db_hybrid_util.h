/* Shared by the hybrid-query tests (test_db_hybrid*.c): loading a
 * generated workload (bench/workload_gen.h) into an index "hyb" with TAG,
 * NUMERIC and GRAPH vector fields, in one commit (one bulk graph build). */
#ifndef VELA_TEST_DB_HYBRID_UTIL_H
#define VELA_TEST_DB_HYBRID_UTIL_H

#include "test_db_util.h"

#include "bench/workload_gen.h"

typedef struct hy_index {
	uint32_t R, L, window; /* graph degree, build window, search window (0 = defaults) */
} hy_index_t;

static inline void hy_load(vela_db_t *db, const wl_data_t *d, const hy_index_t *ix)
{
	vela_field_def_t f[WL_FIELDS];
	wl_fields(d, VELA_ALGO_GRAPH, f);
	f[WL_FIELDS - 1].graph_max_degree = ix->R;
	f[WL_FIELDS - 1].graph_build_window = ix->L;
	f[WL_FIELDS - 1].graph_search_window = ix->window;
	const char *pre[] = {"doc:"};
	vela_index_def_t def = {.name = "hyb", .prefixes = pre, .n_prefixes = 1, .fields = f,
				.n_fields = WL_FIELDS};
	vela_err_t err = {0};
	cr_assert_eq(vela_index_create(db, &def, &err), 0, "%s", err.msg);
	vela_batch_t *b;
	cr_assert_eq(vela_batch_begin(db, &b, &err), 0, "%s", err.msg);
	for (uint32_t i = 0; i < d->p.n; i++) {
		cr_assert_eq(wl_doc_hset(b, d, i, &err), 0, "%s", err.msg);
	}
	/* one commit: the graph is built in bulk once, over every vector */
	cr_assert_eq(vela_batch_commit(b, &err), 0, "%s", err.msg);
	vela_index_info_t info;
	cr_assert_eq(vela_index_info(db, "hyb", &info, &err), 0);
	cr_assert_eq(info.num_docs, d->p.n);
	cr_assert_eq(info.graph_nodes, d->p.n, "the graph was built");
}

/* The small set of the edge-case tests: 3,000 x 8 generated documents in a
 * new database in `dir` (graph R 16, L 32, window 32). */
static inline vela_db_t *hy_small(char *dir, size_t cap, wl_params_t *p, wl_data_t *d)
{
	tmpdir_make(dir, cap);
	wl_params_default(p);
	p->n = 3000;
	p->dim = 8;
	cr_assert_eq(wl_data_make(p, d), 0);
	vela_db_t *db = db_open_ok(dir, 0);
	hy_index_t ix = {.R = 16, .L = 32, .window = 32};
	hy_load(db, d, &ix);
	return db;
}

#endif
