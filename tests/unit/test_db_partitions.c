/* Workload-aware partitions (docs/partitions.md), on a generated workload
 * (bench/workload_gen.h) in an index with a FLAT vector field:
 *   - the workload log records the shapes of searched and recorded
 *     queries, and survives a save and a reopen;
 *   - a layout learned from the past workload, probed exhaustively, answers
 *     the future workload exactly as the exact plan does;
 *   - with the default probing, recall@10 >= 0.9 in every selectivity
 *     bucket of the future workload (trained on the past one). */
#include "test_db_util.h"

#include "bench/workload_gen.h"

TestSuite(db_partitions, .timeout = 300);

#define PT_N 20000u
#define PT_DIM 32u
#define PT_PAST 3000u
#define PT_FUTURE 600u
#define PT_K 10u

static void pt_load(vela_db_t *db, const wl_data_t *d)
{
	vela_field_def_t f[WL_FIELDS];
	wl_fields(d, VELA_ALGO_FLAT, f);
	const char *pre[] = {"doc:"};
	vela_index_def_t def = {.name = "pt", .prefixes = pre, .n_prefixes = 1, .fields = f,
				.n_fields = WL_FIELDS};
	vela_err_t err = {0};
	cr_assert_eq(vela_index_create(db, &def, &err), 0, "%s", err.msg);
	vela_batch_t *b;
	cr_assert_eq(vela_batch_begin(db, &b, &err), 0, "%s", err.msg);
	for (uint32_t i = 0; i < d->p.n; i++)
		cr_assert_eq(wl_doc_hset(b, d, i, &err), 0, "%s", err.msg);
	cr_assert_eq(vela_batch_commit(b, &err), 0, "%s", err.msg);
}

typedef struct pt_query {
	float q[PT_DIM];
	wl_filter_t f;
	char text[8192];
} pt_query_t;

static void pt_make(const wl_data_t *d, const wl_template_t *t, const double *cdf, int future,
		    uint32_t i, pt_query_t *e)
{
	wl_workload_query(d, t, cdf, future, i, e->q, &e->f);
	char ft[8000];
	wl_filter_text(&e->f, ft, sizeof(ft));
	snprintf(e->text, sizeof(e->text), "(%s)=>[KNN %u @v $B AS d]", ft, PT_K);
}

typedef struct pt_env {
	char dir[64];
	vela_db_t *db;
	wl_data_t d;
	wl_template_t *t;
	double *cdf;
} pt_env_t;

static void pt_setup(pt_env_t *e)
{
	tmpdir_make(e->dir, sizeof(e->dir));
	wl_params_t p;
	wl_params_default(&p);
	p.n = PT_N;
	p.dim = PT_DIM;
	p.templates = 48;
	cr_assert_eq(wl_data_make(&p, &e->d), 0);
	cr_assert_eq(wl_templates_make(&e->d, &e->t), 0);
	e->cdf = wl_zipf_cdf(p.templates, p.template_zipf);
	e->db = db_open_ok(e->dir, 0);
	pt_load(e->db, &e->d);
}

static void pt_teardown(pt_env_t *e)
{
	vela_layout_release(e->db);
	vela_db_close(e->db);
	tmpdir_remove(e->dir);
	free(e->t);
	free(e->cdf);
	wl_data_free(&e->d);
}

/* Record the past workload and build the layout. */
static void pt_train(pt_env_t *e, const vela_layout_opts_t *o)
{
	vela_err_t err = {0};
	pt_query_t *q = malloc(sizeof(*q));
	for (uint32_t i = 0; i < PT_PAST; i++) {
		pt_make(&e->d, e->t, e->cdf, 0, i, q);
		vela_kv_t prm = {"B", 1, q->q, sizeof(q->q)};
		cr_assert_eq(vela_workload_record(e->db, "pt", q->text, 0, &prm, 1, &err), 0, "%s",
			     err.msg);
	}
	free(q);
	cr_assert_eq(vela_layout_build(e->db, "pt", "v", o, &err), 0, "%s", err.msg);
	vela_layout_info_t li;
	cr_assert_eq(vela_layout_info(e->db, "pt", "v", &li, &err), 0);
	cr_assert(li.built && !li.stale);
	cr_assert_eq(li.rows, PT_N, "every row in one cluster");
	cr_log_info("layout: %u leaves, %u clusters, rows per cluster %llu/%llu/%llu, "
		    "%llu shapes, built in %.1f ms",
		    li.leaves, li.clusters, (unsigned long long)li.min_rows,
		    (unsigned long long)li.median_rows, (unsigned long long)li.max_rows,
		    (unsigned long long)li.workload_shapes, li.build_ns / 1e6);
	cr_assert(li.leaves >= 2, "the workload's cuts split the data (%u leaves)", li.leaves);
}

/* Run the future workload in one batch with the given forced plan. */
static void pt_run(pt_env_t *e, pt_query_t *qs, vela_plan_t plan, vela_result_t **outs)
{
	vela_search_req_t *reqs = calloc(PT_FUTURE, sizeof(*reqs));
	vela_kv_t *prm = calloc(PT_FUTURE, sizeof(*prm));
	vela_err_t *errs = calloc(PT_FUTURE, sizeof(*errs));
	for (uint32_t i = 0; i < PT_FUTURE; i++) {
		prm[i] = (vela_kv_t){"B", 1, qs[i].q, sizeof(qs[i].q)};
		reqs[i] = (vela_search_req_t){.index = "pt", .query = qs[i].text, .params = &prm[i],
					      .n_params = 1, .limit = PT_K, .nocontent = true,
					      .force_plan = plan};
	}
	cr_assert_eq(vela_search_batch(e->db, reqs, PT_FUTURE, outs, errs), 0, "%s", errs[0].msg);
	free(reqs);
	free(prm);
	free(errs);
}

static pt_query_t *pt_future(pt_env_t *e)
{
	pt_query_t *qs = malloc(PT_FUTURE * sizeof(*qs));
	for (uint32_t i = 0; i < PT_FUTURE; i++)
		pt_make(&e->d, e->t, e->cdf, 1, i, &qs[i]);
	return qs;
}

Test(db_partitions, workload_log)
{
	pt_env_t e;
	pt_setup(&e);
	vela_err_t err = {0};
	float q[PT_DIM] = {0};
	vela_kv_t prm = {"B", 1, q, sizeof(q)};
	const char *texts[] = {
		"@cat:{k1}=>[KNN 5 @v $B]",
		"@cat:{k1}=>[KNN 7 @v $B]",           /* same shape */
		"(@num:[0.1 0.2] @cat:{k2})=>[KNN 5 @v $B]",
		"(@cat:{k2} @num:[0.1 0.2])=>[KNN 5 @v $B]", /* same atoms, other order */
		"(@tags:{t1 | t2} hello)=>[KNN 5 @v $B]",    /* a text term is residual */
		"*=>[KNN 5 @v $B]",
	};
	for (size_t i = 0; i < 6; i++) {
		vela_search_req_t req = {.index = "pt", .query = texts[i], .params = &prm,
					 .n_params = 1};
		vela_result_t *r;
		cr_assert_eq(vela_search(e.db, &req, &r, &err), 0, "%s: %s", texts[i], err.msg);
		vela_result_free(r);
	}
	cr_assert_eq(vela_workload_record(e.db, "pt", "@cat:{k1}", 0, NULL, 0, &err), VELA_EINVAL,
		     "no KNN: not recorded");
	vela_layout_info_t li;
	cr_assert_eq(vela_layout_info(e.db, "pt", "v", &li, &err), 0);
	cr_assert_eq(li.workload_queries, 6);
	cr_assert_eq(li.workload_shapes, 4);
	cr_assert(!li.built);
	cr_assert_eq(vela_workload_save(e.db, "pt", "v", &err), 0, "%s", err.msg);
	vela_layout_release(e.db);
	vela_db_close(e.db);
	e.db = db_open_ok(e.dir, 0);
	cr_assert_eq(vela_layout_info(e.db, "pt", "v", &li, &err), 0);
	cr_assert_eq(li.workload_queries, 0, "loaded on first use");
	cr_assert_eq(vela_workload_record(e.db, "pt", texts[0], 0, &prm, 1, &err), 0);
	cr_assert_eq(vela_layout_info(e.db, "pt", "v", &li, &err), 0);
	cr_assert_eq(li.workload_queries, 7, "the saved log came back");
	cr_assert_eq(li.workload_shapes, 4);
	cr_assert_eq(vela_layout_info(e.db, "pt", "nope", &li, &err), VELA_ENOTFOUND);
	cr_assert_eq(vela_layout_info(e.db, "pt", "cat", &li, &err), VELA_ETYPE);
	pt_teardown(&e);
}

Test(db_partitions, exhaustive_equals_exact)
{
	pt_env_t e;
	pt_setup(&e);
	vela_layout_opts_t o = {.leaf_min = 2000, .cluster_rows = 128};
	pt_train(&e, &o);
	vela_err_t err = {0};
	cr_assert_eq(vela_layout_tune(e.db, "pt", "v", -1, 1, &err), 0, "%s", err.msg);
	pt_query_t *qs = pt_future(&e);
	vela_result_t **a = calloc(PT_FUTURE, sizeof(*a)), **b = calloc(PT_FUTURE, sizeof(*b));
	pt_run(&e, qs, VELA_PLAN_PARTITIONS, a);
	pt_run(&e, qs, VELA_PLAN_SCAN, b);
	for (uint32_t i = 0; i < PT_FUTURE; i++) {
		cr_assert_str_eq(a[i]->plan, "partitions");
		if (a[i]->n_hits != b[i]->n_hits)
			cr_assert_fail("query %u (%s): %zu hits, exact %zu", i, qs[i].text,
				       a[i]->n_hits, b[i]->n_hits);
		for (size_t j = 0; j < a[i]->n_hits; j++) {
			const vela_search_hit_t *x = &a[i]->hits[j], *y = &b[i]->hits[j];
			if (strcmp(x->key, y->key) ||
			    fabs(x->dist - y->dist) > 1e-5 * fabs(y->dist) + 1e-30)
				cr_assert_fail("query %u hit %zu: %s %.9g, exact %s %.9g", i, j,
					       x->key, x->dist, y->key, y->dist);
		}
		vela_result_free(a[i]);
		vela_result_free(b[i]);
	}
	/* a write makes the layout stale: the batch answers exactly again */
	float v[PT_DIM] = {0};
	vela_kv_t kv[] = {{"v", 1, v, sizeof(v)}, {"cat", 3, "k1", 2}};
	cr_assert_eq(vela_hset(e.db, "doc:new", 7, kv, 2, NULL, &err), 0, "%s", err.msg);
	vela_layout_info_t li;
	cr_assert_eq(vela_layout_info(e.db, "pt", "v", &li, &err), 0);
	cr_assert(li.stale);
	pt_run(&e, qs, VELA_PLAN_PARTITIONS, a);
	for (uint32_t i = 0; i < PT_FUTURE; i++) {
		cr_assert(a[i]->plan == NULL || strcmp(a[i]->plan, "partitions"));
		vela_result_free(a[i]);
	}
	free(a);
	free(b);
	free(qs);
	pt_teardown(&e);
}

Test(db_partitions, recall_per_bucket)
{
	pt_env_t e;
	pt_setup(&e);
	vela_layout_opts_t o = {.leaf_min = 2000, .cluster_rows = 128};
	pt_train(&e, &o);
	if (getenv("PT_PROBE")) { /* calibration */
		vela_err_t err = {0};
		cr_assert_eq(vela_layout_tune(e.db, "pt", "v", (float)atof(getenv("PT_PROBE")),
					      (uint32_t)atoi(getenv("PT_PROBE_MIN")), &err), 0);
	}
	pt_query_t *qs = pt_future(&e);
	vela_result_t **a = calloc(PT_FUTURE, sizeof(*a));
	pt_run(&e, qs, VELA_PLAN_AUTO, a);
	double hit[WL_BUCKETS] = {0}, want[WL_BUCKETS] = {0}, phit[WL_BUCKETS] = {0},
	       pwant[WL_BUCKETS] = {0};
	uint32_t nq[WL_BUCKETS] = {0}, np[WL_BUCKETS] = {0};
	for (uint32_t i = 0; i < PT_FUTURE; i++) {
		uint32_t ids[PT_K];
		double dists[PT_K];
		uint64_t m;
		uint32_t got = wl_truth(&e.d, &qs[i].f, qs[i].q, PT_K, ids, dists, &m);
		int bk = wl_bucket((double)m / PT_N);
		if (bk < 0) {
			vela_result_free(a[i]);
			continue;
		}
		uint32_t found = 0;
		for (uint32_t j = 0; j < got; j++)
			for (size_t h = 0; h < a[i]->n_hits; h++)
				if ((uint32_t)atoi(a[i]->hits[h].key + 4) == ids[j]) {
					found++;
					break;
				}
		bool part = a[i]->plan && !strcmp(a[i]->plan, "partitions");
		hit[bk] += found;
		want[bk] += got;
		nq[bk]++;
		phit[bk] += part ? found : 0;
		pwant[bk] += part ? got : 0;
		np[bk] += part;
		vela_result_free(a[i]);
	}
	for (int bk = 0; bk < WL_BUCKETS; bk++) {
		double r = want[bk] ? hit[bk] / want[bk] : 1, rp = pwant[bk] ? phit[bk] / pwant[bk] : 1;
		cr_log_info("bucket %g: %u queries recall@10 %.4f; %u by partitions, recall %.4f",
			    wl_bucket_values[bk], nq[bk], r, np[bk], rp);
		cr_expect(r >= 0.9, "bucket %g: recall %.4f", wl_bucket_values[bk], r);
		cr_expect(rp >= 0.9, "bucket %g: partitions recall %.4f", wl_bucket_values[bk], rp);
	}
	free(a);
	free(qs);
	pt_teardown(&e);
}
