/* Hybrid (filter + KNN) queries through the engine (issue 6): recall@10 per
 * selectivity bucket (1e-4 .. 1) on a 50,000-vector generated set indexed
 * with a GRAPH field, for independent, correlated and anti-correlated
 * filters; every plan (automatic, HYBRID_POLICY ADHOC_BF / BATCHES, and the
 * graph walks forced through force_plan) answering exactly on small data
 * searched exhaustively; a filter matching nothing; FT.PROFILE's fields and
 * FT.EXPLAIN's plan line. Data and filters: bench/workload_gen.h; the
 * ground truth is the double-precision brute force below (its own loop over
 * the generated attributes, not the engine's bitmaps). */
#include "test_db_hybrid_util.h"

#include "index/graph_hybrid.h"

#define K 10u

/* ------------------------------------------------------------ brute force */

typedef struct hy_truth {
	uint32_t ids[K];
	double dist[K];
	uint32_t n;
	uint64_t matches;
} hy_truth_t;

/* The k nearest matching documents in double precision, ties by id. */
static void hy_brute(const wl_data_t *d, const wl_filter_t *f, const float *q, hy_truth_t *t)
{
	t->n = 0;
	t->matches = 0;
	for (uint32_t i = 0; i < d->p.n; i++) {
		if (!wl_match(d, f, i))
			continue;
		t->matches++;
		const float *x = d->vecs + (size_t)i * d->p.dim;
		double s = 0;
		for (uint32_t j = 0; j < d->p.dim; j++)
			s += ((double)x[j] - q[j]) * ((double)x[j] - q[j]);
		if (t->n == K && s >= t->dist[K - 1])
			continue;
		uint32_t pos = t->n < K ? t->n++ : K - 1;
		while (pos > 0 && t->dist[pos - 1] > s) {
			t->dist[pos] = t->dist[pos - 1];
			t->ids[pos] = t->ids[pos - 1];
			pos--;
		}
		t->dist[pos] = s;
		t->ids[pos] = i;
	}
}

static double hy_dist(const wl_data_t *d, uint32_t i, const float *q)
{
	return wl_l2(q, d->vecs + (size_t)i * d->p.dim, d->p.dim);
}

/* ------------------------------------------------------------ searching */

/* Run "(<filter>)=>[KNN K @v $B <attrs>]" with a profile. */
static vela_result_t *hy_search(vela_db_t *db, const wl_data_t *d, const wl_filter_t *f,
				const float *q, const char *attrs, vela_plan_t force)
{
	char ftext[4096], text[4400];
	wl_filter_text(f, ftext, sizeof(ftext));
	snprintf(text, sizeof(text), "(%s)=>[KNN %u @v $B%s]", ftext, K, attrs);
	vela_kv_t p = {"B", 1, q, d->p.dim * sizeof(float)};
	vela_search_req_t req = {.index = "hyb", .query = text, .params = &p, .n_params = 1,
				 .nocontent = true, .limit = K, .profile = true,
				 .force_plan = force};
	vela_result_t *r = NULL;
	vela_err_t err = {0};
	cr_assert_eq(vela_search(db, &req, &r, &err), 0, "%s: %s", text, err.msg);
	cr_assert_not_null(r->profile);
	return r;
}

static uint32_t hy_id(const vela_search_hit_t *h)
{
	cr_assert(strncmp(h->key, "doc:", 4) == 0);
	return (uint32_t)strtoul(h->key + 4, NULL, 10);
}

static double hy_recall(const vela_result_t *r, const hy_truth_t *t)
{
	if (t->n == 0)
		return r->n_hits == 0 ? 1.0 : 0.0;
	uint32_t found = 0;
	for (size_t j = 0; j < r->n_hits; j++)
		for (uint32_t i = 0; i < t->n; i++)
			found += t->ids[i] == hy_id(&r->hits[j]);
	return (double)found / t->n;
}

/* The result is the brute-force answer: the same ids in the same order,
 * except that ids whose double distances are within float rounding of
 * each other may trade places (the engine ranks in float). */
static void hy_assert_exact(const vela_result_t *r, const hy_truth_t *t, const wl_data_t *d,
			    const float *q, const char *what)
{
	cr_assert_eq(r->n_hits, t->n, "%s: %zu hits, brute force %u (matches %llu)", what,
		     r->n_hits, t->n, (unsigned long long)t->matches);
	for (uint32_t j = 0; j < t->n; j++) {
		uint32_t got = hy_id(&r->hits[j]);
		if (got == t->ids[j])
			continue;
		double a = hy_dist(d, got, q), b = t->dist[j];
		cr_assert(fabs(a - b) <= 1e-5 * (1 + b), "%s: hit %u is doc %u (%.9g), brute force doc %u (%.9g)",
			  what, j, got, a, t->ids[j], b);
	}
}

/* ------------------------------------------------------------ recall per bucket */

#define HN 50000u
#define HDIM 32u
#define PER_SHAPE 4u /* queries per (bucket, shape) */

typedef struct hy_cell {
	uint32_t n, fallbacks; /* fallbacks: filtered walks that gave up for the scan */
	double recall, min;
	uint32_t plans[5]; /* filtered-scan, filtered-graph, graph, batches, other */
} hy_cell_t;

static int hy_plan_no(const char *p)
{
	static const char *const names[] = {"filtered-scan", "filtered-graph", "graph", "batches"};
	for (int i = 0; i < 4; i++)
		if (strcmp(p, names[i]) == 0)
			return i;
	return 4;
}

static void hy_cell_add(hy_cell_t *c, double rec, const vela_result_t *r)
{
	const char *plan = r->plan;
	if (c->n == 0)
		c->min = 1;
	c->n++;
	c->fallbacks += strcmp(r->profile->mode, "HYBRID_FILTERED_GRAPH_TO_ADHOC_BF") == 0;
	c->recall += rec;
	c->min = rec < c->min ? rec : c->min;
	c->plans[hy_plan_no(plan)]++;
}

Test(db_hybrid, recall_at_every_selectivity, .timeout = 900)
{
	char dir[64];
	tmpdir_make(dir, sizeof(dir));
	wl_params_t p;
	wl_params_default(&p);
	p.n = HN;
	p.dim = HDIM;
	wl_data_t d;
	cr_assert_eq(wl_data_make(&p, &d), 0);
	vela_db_options_t o = {.map_size = 1ull << 30, .flags = VELA_OPEN_NOSYNC};
	vela_db_t *db = NULL;
	vela_err_t err = {0};
	cr_assert_eq(vela_db_open(dir, &o, &db, &err), 0, "%s", err.msg);
	/* the window (SEARCH_WINDOW_SIZE) that gives recall >= 0.95 without a
	 * filter; every filtered plan must then hold it too */
	hy_index_t ix = {.R = 32, .L = 64, .window = 64};
	hy_load(db, &d, &ix);
	/* [bucket][0 all, 1 independent, 2 correlated, 3 anti-correlated] */
	hy_cell_t cells[WL_BUCKETS][4];
	memset(cells, 0, sizeof(cells));
	float *q = malloc(p.dim * sizeof(float));
	for (int b = 0; b < WL_BUCKETS; b++)
		for (int s = 0; s < WL_SHAPES; s++)
			for (uint32_t i = 0; i < PER_SHAPE; i++) {
				if (s == WL_ALL && b != WL_BUCKETS - 1)
					break;
				wl_rng_t r = wl_rng(p.seed, WL_S_USER, (uint64_t)(b * WL_SHAPES + s) * 97 + i);
				wl_query_vector(&d, &r, q);
				wl_filter_t f;
				double sel = s == WL_ALL ? 1 : wl_bucket_draw(&r, b);
				if (wl_filter_make(&d, (wl_shape_t)s, sel, q, &r, &f))
					break;
				hy_truth_t t;
				hy_brute(&d, &f, q, &t);
				vela_result_t *res = hy_search(db, &d, &f, q, "", VELA_PLAN_AUTO);
				/* the planner's estimate is the exact match count */
				cr_assert_eq(res->profile->filter_matches, t.matches);
				int bucket = wl_bucket((double)t.matches / p.n);
				double rec = hy_recall(res, &t);
				if (bucket >= 0) {
					int cls = 1 + (wl_shape_corr((wl_shape_t)s) == 1) +
						  2 * (wl_shape_corr((wl_shape_t)s) == -1);
					hy_cell_add(&cells[bucket][0], rec, res);
					hy_cell_add(&cells[bucket][cls], rec, res);
				} else {
					cr_assert_eq(res->n_hits, 0, "a filter matching nothing");
				}
				vela_result_free(res);
			}
	static const char *const cls[] = {"all", "independent", "correlated", "anti-correlated"};
	fprintf(stderr, "recall@%u per selectivity bucket (n %u, dim %u, R %u, L %u, window %u):\n",
		K, p.n, p.dim, ix.R, ix.L, ix.window);
	for (int b = 0; b < WL_BUCKETS; b++)
		for (int c = 0; c < 4; c++) {
			const hy_cell_t *e = &cells[b][c];
			if (e->n == 0)
				continue;
			fprintf(stderr, "  %-6g %-15s %3u queries  recall %.4f (min %.2f)  plans: "
					"filtered-scan %u (%u after the walk gave up), "
					"filtered-graph %u, graph %u\n",
				wl_bucket_values[b], cls[c], e->n, e->recall / e->n, e->min,
				e->plans[0], e->fallbacks, e->plans[1], e->plans[2]);
		}
	for (int b = 0; b < WL_BUCKETS; b++) {
		cr_assert_gt(cells[b][0].n, 0, "bucket %g has queries", wl_bucket_values[b]);
		cr_assert_gt(cells[b][3].n, 0, "bucket %g has anti-correlated queries",
			     wl_bucket_values[b]);
		for (int c = 0; c < 4; c++)
			if (cells[b][c].n)
				cr_expect_geq(cells[b][c].recall / cells[b][c].n, 0.95,
					      "bucket %g, %s filters: recall %.4f", wl_bucket_values[b],
					      cls[c], cells[b][c].recall / cells[b][c].n);
	}
	free(q);
	vela_db_close(db);
	wl_data_free(&d);
	tmpdir_remove(dir);
}

/* ------------------------------------------------------------ exact plans */

/* Small data searched exhaustively (a window as large as the index): every
 * plan must return exactly the brute-force answer. */
Test(db_hybrid, every_plan_exact_when_exhaustive, .timeout = 300)
{
	char dir[64];
	tmpdir_make(dir, sizeof(dir));
	wl_params_t p;
	wl_params_default(&p);
	p.n = 2000; /* above DB_GRAPH_MIN_DOCS: the graph is built */
	p.dim = 8;
	p.clusters = 8;
	p.cat_values = 50;
	p.tag_vocab = 100;
	wl_data_t d;
	cr_assert_eq(wl_data_make(&p, &d), 0);
	vela_db_t *db = db_open_ok(dir, 0);
	hy_index_t ix = {.R = 16, .L = 64, .window = 0};
	hy_load(db, &d, &ix);
	static const struct {
		const char *name, *attrs;
		vela_plan_t force;
		const char *plan; /* expected plan (NULL: any) */
	} modes[] = {
		{"auto", " EF_RUNTIME 2000", VELA_PLAN_AUTO, NULL},
		{"ADHOC_BF", " HYBRID_POLICY ADHOC_BF", VELA_PLAN_AUTO, "filtered-scan"},
		{"BATCHES", " HYBRID_POLICY BATCHES EF_RUNTIME 2000", VELA_PLAN_AUTO, NULL},
		{"BATCHES 7", " HYBRID_POLICY BATCHES BATCH_SIZE 7 EF_RUNTIME 2000", VELA_PLAN_AUTO,
		 NULL},
		{"graph", " EF_RUNTIME 2000", VELA_PLAN_GRAPH, "graph"},
		{"filtered-graph", " EF_RUNTIME 2000", VELA_PLAN_FILTERED_GRAPH, "filtered-graph"},
	};
	/* independent, correlated and anti-correlated filters from 1 match to
	 * about 60 % (the filtered walk seeds every match when there are fewer
	 * than GRAPH_FILTER_SEEDS_MAX, so it is exhaustive below that) */
	static const struct {
		wl_shape_t shape;
		double s;
	} filters[] = {{WL_NUM, 0.0005}, {WL_CAT, 0.02},   {WL_TAG1, 0.05},   {WL_TAG2, 0.01},
		       {WL_NUM, 0.3},    {WL_POS_NEAR, 0.1}, {WL_CLU_NEAR, 0.2}, {WL_POS_FAR, 0.02},
		       {WL_POS_FAR, 0.4}, {WL_CLU_FAR, 0.3}, {WL_CAT_NUM, 0.01}, {WL_NUM, 0.6}};
	float q[8];
	uint32_t checked = 0, batches_ran = 0;
	for (size_t fi = 0; fi < sizeof(filters) / sizeof(filters[0]); fi++)
		for (uint32_t qi = 0; qi < 3; qi++) {
			wl_rng_t r = wl_rng(p.seed, WL_S_USER, fi * 31 + qi);
			wl_query_vector(&d, &r, q);
			wl_filter_t f;
			cr_assert_eq(wl_filter_make(&d, filters[fi].shape, filters[fi].s, q, &r, &f),
				     0);
			hy_truth_t t;
			hy_brute(&d, &f, q, &t);
			bool small = t.matches <= GRAPH_FILTER_SEEDS_MAX;
			for (size_t mi = 0; mi < sizeof(modes) / sizeof(modes[0]); mi++) {
				if (modes[mi].force == VELA_PLAN_FILTERED_GRAPH && !small)
					continue;
				vela_result_t *res = hy_search(db, &d, &f, q, modes[mi].attrs,
							       modes[mi].force);
				char what[256];
				snprintf(what, sizeof(what), "%s, %s s=%g query %u (plan %s, %s)",
					 modes[mi].name, wl_shape_names[filters[fi].shape],
					 filters[fi].s, qi, res->plan, res->profile->mode);
				hy_assert_exact(res, &t, &d, q, what);
				if (modes[mi].plan)
					cr_assert_str_eq(res->plan, modes[mi].plan, "%s", what);
				if (strcmp(modes[mi].name, "auto"))
					cr_assert(res->profile->forced, "%s", what);
				batches_ran += strcmp(res->plan, "batches") == 0;
				cr_assert_eq(res->profile->filter_matches, t.matches, "%s", what);
				vela_result_free(res);
				checked++;
			}
		}
	cr_assert_gt(batches_ran, 0, "BATCHES answered some queries itself");
	fprintf(stderr, "%u exhaustive searches equal to the brute force\n", checked);
	vela_db_close(db);
	wl_data_free(&d);
	tmpdir_remove(dir);
}

/* ------------------------------------------------------------ empty, profile, explain */

Test(db_hybrid, empty_filter_profile_explain, .timeout = 300)
{
	char dir[64];
	wl_params_t p;
	wl_data_t d;
	vela_db_t *db = hy_small(dir, sizeof(dir), &p, &d);
	float q[8];
	wl_rng_t r = wl_rng(p.seed, WL_S_USER, 1);
	wl_query_vector(&d, &r, q);
	/* A filter matching nothing: an empty result without any scoring, in
	 * every plan. */
	wl_filter_t none = {.n = 1};
	none.a[0] = (wl_atom_t){.field = WL_F_NUM, .lo = 2, .hi = 3};
	static const char *const attrs[] = {"", " HYBRID_POLICY ADHOC_BF", " HYBRID_POLICY BATCHES"};
	for (size_t i = 0; i < 3; i++) {
		vela_result_t *res = hy_search(db, &d, &none, q, attrs[i], VELA_PLAN_AUTO);
		cr_assert_eq(res->n_hits, 0);
		cr_assert_eq(res->total, 0);
		cr_assert_eq(res->profile->filter_matches, 0);
		cr_assert_eq(res->profile->distances, 0, "nothing scored (%s)", attrs[i]);
		vela_result_free(res);
	}
	/* The profile: exact counts, the stages timed, plan and mode named. */
	wl_filter_t all = {0};
	vela_result_t *res = hy_search(db, &d, &all, q, "", VELA_PLAN_AUTO);
	cr_assert_str_eq(res->plan, "graph");
	cr_assert_str_eq(res->profile->mode, "STANDARD_KNN");
	cr_assert_eq(res->profile->index_size, 3000);
	cr_assert_eq(res->profile->filter_matches, 3000);
	cr_assert_eq(res->profile->window, 32);
	cr_assert_gt(res->profile->distances, 0);
	cr_assert_gt(res->profile->parse_ns + res->profile->search_ns, 0);
	vela_result_free(res);
	wl_filter_t few;
	cr_assert_eq(wl_filter_make(&d, WL_NUM, 0.01, q, &r, &few), 0);
	res = hy_search(db, &d, &few, q, " HYBRID_POLICY BATCHES BATCH_SIZE 40", VELA_PLAN_AUTO);
	cr_assert(res->profile->forced);
	cr_assert_eq(res->profile->filter_matches, 30);
	cr_assert(fabs(res->profile->selectivity - 0.01) < 1e-12);
	cr_assert_geq(res->profile->batches, 1);
	cr_assert_eq(res->profile->largest_batch, 40);
	cr_assert(strncmp(res->profile->mode, "HYBRID_BATCHES", 14) == 0, "%s", res->profile->mode);
	vela_result_free(res);
	/* EXPLAIN names the plan from the match count, without searching. */
	char ftext[256], text[400];
	wl_filter_text(&few, ftext, sizeof(ftext));
	snprintf(text, sizeof(text), "(%s)=>[KNN 10 @v $B]", ftext);
	vela_kv_t prm = {"B", 1, q, sizeof(q)};
	char *ex = NULL;
	vela_err_t err = {0};
	cr_assert_eq(vela_explain(db, "hyb", text, 0, &prm, 1, &ex, &err), 0, "%s", err.msg);
	cr_assert(strstr(ex, "PLAN filtered-scan HYBRID_ADHOC_BF matches 30 of 3000") != NULL,
		  "%s", ex);
	free(ex);
	snprintf(text, sizeof(text), "*=>[KNN 10 @v $B EF_RUNTIME 77]");
	cr_assert_eq(vela_explain(db, "hyb", text, 0, &prm, 1, &ex, &err), 0, "%s", err.msg);
	cr_assert(strstr(ex, "PLAN graph STANDARD_KNN matches 3000 of 3000 (selectivity 1) "
			     "window 77") != NULL, "%s", ex);
	free(ex);
	/* A filter without KNN: no plan line. */
	cr_assert_eq(vela_explain(db, "hyb", "@num:[0 1]", 0, NULL, 0, &ex, &err), 0);
	cr_assert_null(strstr(ex, "PLAN"), "%s", ex);
	free(ex);
	vela_db_close(db);
	wl_data_free(&d);
	tmpdir_remove(dir);
}
