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
	vela_field_def_t f[] = {
		{.name = "cat", .type = VELA_FIELD_TAG},
		{.name = "tags", .type = VELA_FIELD_TAG},
		{.name = "clu", .type = VELA_FIELD_TAG},
		{.name = "num", .type = VELA_FIELD_NUMERIC},
		{.name = "pos", .type = VELA_FIELD_NUMERIC},
		{.name = "v", .type = VELA_FIELD_VECTOR, .dim = d->p.dim, .metric = VELA_METRIC_L2,
		 .vec_type = VELA_VEC_FLOAT32, .algo = VELA_ALGO_GRAPH, .graph_max_degree = ix->R,
		 .graph_build_window = ix->L, .graph_search_window = ix->window},
	};
	const char *pre[] = {"doc:"};
	vela_index_def_t def = {.name = "hyb", .prefixes = pre, .n_prefixes = 1, .fields = f,
				.n_fields = 6};
	vela_err_t err = {0};
	cr_assert_eq(vela_index_create(db, &def, &err), 0, "%s", err.msg);
	vela_batch_t *b;
	cr_assert_eq(vela_batch_begin(db, &b, &err), 0, "%s", err.msg);
	for (uint32_t i = 0; i < d->p.n; i++) {
		char key[32], cat[16], tags[WL_TAGS_MAX_MAX * 8], clu[16], num[32], pos[32];
		snprintf(key, sizeof(key), "doc:%u", i);
		int lc = snprintf(cat, sizeof(cat), "k%u", d->cat[i]);
		int lg = snprintf(clu, sizeof(clu), "g%u", d->clu[i]);
		int ln = snprintf(num, sizeof(num), "%.17g", d->num[i]);
		int lp = snprintf(pos, sizeof(pos), "%.17g", d->pos[i]);
		size_t lt = 0;
		for (uint32_t t = 0; t < d->ntags[i]; t++)
			lt += (size_t)snprintf(tags + lt, sizeof(tags) - lt, "%st%u", t ? "," : "",
					       d->tags[(size_t)i * d->p.tags_max + t]);
		vela_kv_t kv[] = {
			{"v", 1, d->vecs + (size_t)i * d->p.dim, d->p.dim * sizeof(float)},
			{"cat", 3, cat, (size_t)lc},
			{"tags", 4, tags, lt},
			{"clu", 3, clu, (size_t)lg},
			{"num", 3, num, (size_t)ln},
			{"pos", 3, pos, (size_t)lp},
		};
		cr_assert_eq(vela_batch_hset(b, key, strlen(key), kv, 6, NULL, &err), 0, "%s",
			     err.msg);
	}
	/* one commit: the graph is built in bulk once, over every vector */
	cr_assert_eq(vela_batch_commit(b, &err), 0, "%s", err.msg);
	vela_index_info_t info;
	cr_assert_eq(vela_index_info(db, "hyb", &info, &err), 0);
	cr_assert_eq(info.num_docs, d->p.n);
	cr_assert_eq(info.graph_nodes, d->p.n, "the graph was built");
}

#endif
