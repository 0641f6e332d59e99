/* The batch executor (issue 6, Deliver item 2): a set of queries planned
 * together must answer exactly as the same queries run one by one with the
 * same plan.
 *   - flat_search_multi (index/) against flat_search, bit for bit: random
 *     filters of many selectivities shared by groups of queries, duplicate
 *     vectors (ties), removed rows, k from 0 to 100, F32 and F16, every
 *     metric, block edges (tiny gather blocks) and every grouping choice;
 *   - vela_search_batch against vela_search on a generated workload with a
 *     GRAPH field: recurring and one-off filters of every selectivity and
 *     correlation, duplicated queries, k up to 100, forced policies,
 *     queries without KNN and failing queries in the middle, whole and in
 *     chunks; exact plans also against a double-precision brute force;
 *   - the batch's numeric evaluation (ranges cut at each other's endpoints)
 *     against one-by-one evaluation on overlapping, exclusive, infinite,
 *     `!=` and negated ranges over repeated values. */
#include "test_db_hybrid_util.h"

#include "index/index.h"
#include "query/query.h"

TestSuite(db_hybrid_batch, .timeout = 900);

/* ------------------------------------------------------------ flat_search_multi */

#define FM_N 3000u
#define FM_NQ 160u
#define FM_FILTERS 14u

typedef struct fm_case {
	vela_metric_t metric;
	vela_vec_type_t type;
	uint32_t dim;
} fm_case_t;

/* A FLAT index of FM_N rows, a third of them copies of earlier rows (ties),
 * then every 17th removed. Vectors: small integers / 8 (exact in F16). */
static flat_index_t *fm_index(const fm_case_t *c, wl_rng_t *r, float *vecs)
{
	flat_index_t *f = NULL;
	cr_assert_eq(flat_create(c->dim, c->metric, c->type, &f), 0);
	for (uint32_t i = 0; i < FM_N; i++) {
		float *v = vecs + (size_t)i * c->dim;
		if (i > 10 && wl_below(r, 3) == 0) {
			memcpy(v, vecs + (size_t)wl_below(r, i) * c->dim, c->dim * sizeof(float));
		} else {
			double n2 = 0;
			for (uint32_t j = 0; j < c->dim; j++) {
				v[j] = (float)((int)wl_below(r, 33) - 16) / 8.0f;
				n2 += (double)v[j] * v[j];
			}
			if (c->metric == VELA_METRIC_COSINE) {
				if (n2 == 0)
					v[0] = 1, n2 = 1;
				for (uint32_t j = 0; j < c->dim; j++)
					v[j] = (float)(v[j] / sqrt(n2));
			}
		}
		cr_assert_eq(flat_set(f, i, v), 0);
	}
	for (uint32_t i = 0; i < FM_N; i += 17)
		cr_assert_eq(flat_remove(f, i), 0);
	return f;
}

/* Filters from empty to everything, some with docids beyond the index. */
static void fm_filters(wl_rng_t *r, roaring_bitmap_t **flt)
{
	static const double sel[FM_FILTERS] = {0,    0.0005, 0.002, 0.005, 0.01, 0.03, 0.06,
					       0.07, 0.1,    0.2,   0.5,   0.9,  1.0,  0.003};
	for (uint32_t i = 0; i < FM_FILTERS; i++) {
		flt[i] = roaring_bitmap_create();
		for (uint32_t d = 0; d < FM_N + 40; d++)
			if (wl_unit(r) < sel[i])
				roaring_bitmap_add(flt[i], d);
	}
}

/* Criterion reports every assertion to its runner: assert only on a
 * difference, the loops run millions of comparisons. */
static void fm_assert_same(const vela_hit_t *a, uint32_t na, const vela_hit_t *b, uint32_t nb,
			   const char *what)
{
	if (na != nb)
		cr_assert_fail("%s: %u hits, flat_search %u", what, na, nb);
	for (uint32_t j = 0; j < na; j++) {
		if (a[j].docid != b[j].docid)
			cr_assert_fail("%s: hit %u doc %u, flat_search doc %u", what, j, a[j].docid,
				       b[j].docid);
		if (memcmp(&a[j].dist, &b[j].dist, sizeof(float)))
			cr_assert_fail("%s: hit %u distance %.9g, flat_search %.9g", what, j,
				       a[j].dist, b[j].dist);
	}
}

/* What the options force: nothing (the defaults), or one path for every
 * query (unfiltered queries always go dense; FM_SCAN: all others scan). */
enum { FM_ANY = -1, FM_SCAN = FLAT_MULTI_SCAN, FM_GATHER = FLAT_MULTI_GATHER,
       FM_DENSE = FLAT_MULTI_DENSE };

static void fm_run(const fm_case_t *c, const flat_multi_opts_t *o, uint64_t seed, int expect)
{
	wl_rng_t r = wl_rng(seed, WL_S_USER, 0);
	float *vecs = malloc((size_t)FM_N * c->dim * sizeof(float));
	flat_index_t *f = fm_index(c, &r, vecs);
	roaring_bitmap_t *flt[FM_FILTERS];
	fm_filters(&r, flt);
	static const uint32_t ks[] = {0, 1, 3, 10, 10, 10, 37, 100};
	flat_multi_query_t *qs = calloc(FM_NQ, sizeof(*qs));
	float *Q = malloc((size_t)FM_NQ * c->dim * sizeof(float));
	for (uint32_t i = 0; i < FM_NQ; i++) {
		float *q = Q + (size_t)i * c->dim;
		uint32_t pick = wl_below(&r, 4);
		if (i > 0 && pick == 0) /* a duplicate of an earlier query */
			memcpy(q, Q + (size_t)wl_below(&r, i) * c->dim, c->dim * sizeof(float));
		else if (pick == 1) /* a stored vector: distance 0 ties with its copies */
			memcpy(q, vecs + (size_t)wl_below(&r, FM_N) * c->dim,
			       c->dim * sizeof(float));
		else
			for (uint32_t j = 0; j < c->dim; j++)
				q[j] = (float)(wl_unit(&r) * 4 - 2);
		if (c->metric == VELA_METRIC_COSINE) {
			double n2 = 0;
			for (uint32_t j = 0; j < c->dim; j++)
				n2 += (double)q[j] * q[j];
			for (uint32_t j = 0; j < c->dim; j++)
				q[j] = (float)(q[j] / sqrt(n2));
		}
		uint32_t fi = wl_below(&r, FM_FILTERS + 1);
		qs[i] = (flat_multi_query_t){.q = q, .k = ks[wl_below(&r, 8)],
					     .filter = fi == FM_FILTERS ? NULL : flt[fi]};
		qs[i].out = malloc((qs[i].k ? qs[i].k : 1) * sizeof(vela_hit_t));
	}
	cr_assert_eq(flat_search_multi(f, qs, FM_NQ, o), 0);
	uint32_t how[3] = {0};
	vela_hit_t *ref = malloc(100 * sizeof(vela_hit_t));
	for (uint32_t i = 0; i < FM_NQ; i++) {
		uint32_t n = 0;
		cr_assert_eq(flat_search(f, qs[i].q, qs[i].k, qs[i].filter, ref, &n), 0);
		char what[160];
		snprintf(what, sizeof(what), "metric %d type %d dim %u, query %u (k %u, how %u)",
			 c->metric, c->type, c->dim, i, qs[i].k, qs[i].how);
		fm_assert_same(qs[i].out, qs[i].n_out, ref, n, what);
		how[qs[i].how]++;
		bool empty = qs[i].filter && roaring_bitmap_is_empty(qs[i].filter);
		if (empty) /* nothing to score: every path costs nothing, it scans */
			cr_assert_eq(qs[i].n_out, 0, "%s", what);
		else if (expect != FM_ANY)
			cr_assert_eq(qs[i].how, qs[i].filter ? expect : FM_DENSE, "%s", what);
		free(qs[i].out);
	}
	/* the defaults put the shared sparse filters through gathered GEMMs and
	 * the dense ones through the whole-field GEMM */
	if (expect == FM_ANY)
		cr_assert(how[FLAT_MULTI_GATHER] > 0 && how[FLAT_MULTI_DENSE] > 0,
			  "scan %u gather %u dense %u", how[0], how[1], how[2]);
	free(ref);
	free(qs);
	free(Q);
	for (uint32_t i = 0; i < FM_FILTERS; i++)
		roaring_bitmap_free(flt[i]);
	flat_destroy(f);
	free(vecs);
}

/* Bad arguments answer nothing. */
static void fm_bad_arguments(void)
{
	flat_index_t *f = NULL;
	cr_assert_eq(flat_create(4, VELA_METRIC_L2, VELA_VEC_FLOAT32, &f), 0);
	float v[4] = {1, 2, 3, 4}, bad[4] = {1, NAN, 0, 0};
	cr_assert_eq(flat_set(f, 0, v), 0);
	vela_hit_t out[2];
	flat_multi_query_t q = {.q = v, .k = 2, .out = out};
	cr_assert_eq(flat_search_multi(NULL, &q, 1, NULL), VELA_EINVAL);
	cr_assert_eq(flat_search_multi(f, NULL, 1, NULL), VELA_EINVAL);
	cr_assert_eq(flat_search_multi(f, NULL, 0, NULL), 0);
	flat_multi_opts_t o;
	flat_multi_opts_default(&o);
	o.gather_rows = 0;
	cr_assert_eq(flat_search_multi(f, &q, 1, &o), VELA_EINVAL);
	flat_multi_opts_default(&o);
	o.scan_cost = NAN;
	cr_assert_eq(flat_search_multi(f, &q, 1, &o), VELA_EINVAL);
	q.k = VELA_K_MAX + 1;
	cr_assert_eq(flat_search_multi(f, &q, 1, NULL), VELA_EINVAL);
	q.k = 2;
	q.q = bad;
	cr_assert_eq(flat_search_multi(f, &q, 1, NULL), VELA_EINVAL);
	q.q = v;
	cr_assert_eq(flat_search_multi(f, &q, 1, NULL), 0);
	cr_assert_eq(q.n_out, 1);
	cr_assert_eq(out[0].docid, 0);
	flat_destroy(f);
}

Test(db_hybrid_batch, flat_multi_equals_flat_search)
{
	static const fm_case_t cases[] = {
		{VELA_METRIC_L2, VELA_VEC_FLOAT32, 16},
		{VELA_METRIC_IP, VELA_VEC_FLOAT16, 20},
		{VELA_METRIC_COSINE, VELA_VEC_FLOAT32, 24},
		{VELA_METRIC_L2, VELA_VEC_FLOAT16, 130},
	};
	/* every group gathered (in blocks of 7 rows, or of 1), every group in
	 * the whole-field GEMM, every query scanned */
	flat_multi_opts_t tiny = {.gather_rows = 7, .group_min = 1, .dense_min = 1,
				  .scan_cost = FLAT_MULTI_SCAN_COST_MAX, .gather_cost = 0,
				  .dense_cost = FLAT_MULTI_DENSE_COST_MAX};
	flat_multi_opts_t one = tiny;
	one.gather_rows = 1;
	flat_multi_opts_t dense = {.gather_rows = 64, .group_min = 1, .dense_min = 1,
				   .scan_cost = FLAT_MULTI_SCAN_COST_MAX,
				   .gather_cost = FLAT_MULTI_GATHER_COST_MAX, .dense_cost = 0};
	flat_multi_opts_t scan = {.gather_rows = 64, .group_min = 1, .dense_min = 1,
				  .scan_cost = 0, .gather_cost = 0, .dense_cost = 1};
	const flat_multi_opts_t *opts[] = {NULL, &tiny, &one, &dense, &scan};
	const int expect[] = {FM_ANY, FM_GATHER, FM_GATHER, FM_DENSE, FM_SCAN};
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++)
		for (size_t o = 0; o < sizeof(opts) / sizeof(opts[0]); o++)
			fm_run(&cases[c], opts[o], 1000 + c * 10 + o, expect[o]);
	fm_bad_arguments();
}

/* ------------------------------------------------------------ the engine */

/* Large enough for every plan: the filtered walk needs 10,000 matches
 * at a selectivity of at most 0.3 (db/search.c DB_HYBRID_SCAN_MAX). */
#define EB_N 40000u
#define EB_DIM 12u
#define EB_KMAX 100u

typedef struct eb_query {
	char text[4400];
	float q[EB_DIM];
	wl_filter_t f;
	uint32_t k;
	bool knn;
	const char *index;
} eb_query_t;

/* The k nearest matching documents in double precision, ties by id. */
static uint32_t eb_brute(const wl_data_t *d, const wl_filter_t *f, const float *q, uint32_t k,
			 uint32_t *ids, double *dist)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < d->p.n; i++) {
		if (!wl_match(d, f, i))
			continue;
		double s = wl_l2(q, d->vecs + (size_t)i * d->p.dim, d->p.dim);
		if (n == k && !(s < dist[k - 1]))
			continue;
		uint32_t pos = n < k ? n++ : k - 1;
		while (pos > 0 && dist[pos - 1] > s) {
			dist[pos] = dist[pos - 1];
			ids[pos] = ids[pos - 1];
			pos--;
		}
		dist[pos] = s;
		ids[pos] = i;
	}
	return n;
}

static void eb_text(eb_query_t *e, const char *attrs)
{
	char ftext[4096];
	wl_filter_text(&e->f, ftext, sizeof(ftext));
	if (e->knn)
		snprintf(e->text, sizeof(e->text), "(%s)=>[KNN %u @v $B%s]", ftext, e->k, attrs);
	else
		snprintf(e->text, sizeof(e->text), "%s", ftext);
}

/* Queries: the future workload's recurring templates (shared filters), a
 * sweep of one-off filters over every bucket and shape, duplicates, policy
 * and window attributes, filter-only queries and two that fail. */
static eb_query_t *eb_queries(const wl_data_t *d, uint32_t *nq)
{
	uint32_t cap = 600, n = 0;
	eb_query_t *qs = calloc(cap, sizeof(*qs));
	static const uint32_t ks[] = {1, 10, 10, 10, 25, 100};
	static const char *const attrs[] = {"", "", "", " EF_RUNTIME 40",
					    " HYBRID_POLICY ADHOC_BF", " HYBRID_POLICY BATCHES"};
	wl_template_t *t;
	double *cdf = wl_zipf_cdf(d->p.templates, d->p.template_zipf);
	cr_assert_eq(wl_templates_make(d, &t), 0);
	for (uint32_t i = 0; i < 260; i++) {
		eb_query_t *e = &qs[n++];
		wl_workload_query(d, t, cdf, 1, i, e->q, &e->f);
		wl_rng_t r = wl_rng(d->p.seed, WL_S_USER, 500000 + i);
		e->k = ks[wl_below(&r, 6)];
		e->knn = wl_below(&r, 12) != 0;
		e->index = "hyb";
		eb_text(e, attrs[wl_below(&r, 6)]);
	}
	for (int b = 0; b < WL_BUCKETS; b++)
		for (int s = 0; s < WL_SHAPES; s++)
			for (uint32_t i = 0; i < 3; i++) {
				wl_rng_t r = wl_rng(d->p.seed, WL_S_USER,
						    (uint64_t)(b * WL_SHAPES + s) * 7 + i);
				eb_query_t *e = &qs[n];
				wl_query_vector(d, &r, e->q);
				double sel = s == WL_ALL ? 1 : wl_bucket_draw(&r, b);
				if ((s == WL_ALL && b != WL_BUCKETS - 1) ||
				    wl_filter_make(d, (wl_shape_t)s, sel, e->q, &r, &e->f))
					break;
				e->k = ks[wl_below(&r, 6)];
				e->knn = true;
				e->index = "hyb";
				eb_text(e, attrs[wl_below(&r, 6)]);
				n++;
			}
	/* anti-correlated filters the filtered walk takes (s in [0.05, 0.3),
	 * >= 10,000 matches) and gives up on for the scan */
	for (uint32_t i = 0; i < 12; i++) {
		wl_rng_t r = wl_rng(d->p.seed, WL_S_USER, 700000 + i);
		eb_query_t *e = &qs[n++];
		wl_query_vector(d, &r, e->q);
		wl_shape_t shape = i % 2 ? WL_POS_FAR : WL_CLU_FAR;
		cr_assert_eq(wl_filter_make(d, shape, 0.27, e->q, &r, &e->f), 0);
		e->k = ks[i % 6];
		e->knn = true;
		e->index = "hyb";
		eb_text(e, "");
	}
	/* one filter the filtered walk takes alone, shared by six queries: the
	 * batch scans them together (db_plan_batch_scan) */
	wl_filter_t shared;
	wl_rng_t rs = wl_rng(d->p.seed, WL_S_USER, 800000);
	cr_assert_eq(wl_filter_make(d, WL_NUM, 0.27, NULL, &rs, &shared), 0);
	for (uint32_t i = 0; i < 6; i++) {
		eb_query_t *e = &qs[n++];
		wl_query_vector(d, &rs, e->q);
		e->f = shared;
		e->k = 10;
		e->knn = true;
		e->index = "hyb";
		eb_text(e, "");
	}
	for (uint32_t i = 0; i < 40; i++) /* exact duplicates, spread through the batch */
		qs[n++] = qs[(i * 37) % 200];
	qs[n] = qs[3]; /* an unknown index */
	qs[n++].index = "nope";
	qs[n] = qs[5]; /* an unknown field */
	snprintf(qs[n++].text, sizeof(qs[0].text), "@nofield:{x}=>[KNN 5 @v $B]");
	cr_assert_leq(n, cap);
	/* shuffle, so shared filters and failures are spread out */
	wl_rng_t r = wl_rng(d->p.seed, WL_S_USER, 77);
	for (uint32_t i = n - 1; i > 0; i--) {
		uint32_t j = wl_below(&r, i + 1);
		eb_query_t tmp = qs[i];
		qs[i] = qs[j];
		qs[j] = tmp;
	}
	free(t);
	free(cdf);
	*nq = n;
	return qs;
}

static void eb_req(const eb_query_t *e, vela_kv_t *prm, vela_search_req_t *req)
{
	*prm = (vela_kv_t){"B", 1, e->q, sizeof(e->q)};
	*req = (vela_search_req_t){.index = e->index, .query = e->text, .params = prm,
				   .n_params = 1, .limit = e->knn ? e->k : 100, .limit_set = true,
				   .profile = true, .nocontent = true};
}

static bool eb_exact_plan(const char *p)
{
	return p && (!strcmp(p, "filtered-scan") || !strcmp(p, "scan") || !strcmp(p, "batch-gemm"));
}

/* The batch's result equals the single one: the same rows and distances
 * bit for bit, the same plan (or the shared GEMM for an exact scan). */
static void eb_assert_same(const vela_result_t *b, const vela_result_t *s, const char *what)
{
	if (b->n_hits != s->n_hits || b->total != s->total)
		cr_assert_fail("%s: %zu rows (total %llu), alone %zu (%llu)", what, b->n_hits,
			       (unsigned long long)b->total, s->n_hits,
			       (unsigned long long)s->total);
	for (size_t j = 0; j < b->n_hits; j++) {
		if (b->hits[j].key_len != s->hits[j].key_len ||
		    memcmp(b->hits[j].key, s->hits[j].key, b->hits[j].key_len))
			cr_assert_fail("%s: row %zu is %s, alone %s", what, j, b->hits[j].key,
				       s->hits[j].key);
		if (memcmp(&b->hits[j].dist, &s->hits[j].dist, sizeof(double)))
			cr_assert_fail("%s: row %zu distance %.17g, alone %.17g", what, j,
				       b->hits[j].dist, s->hits[j].dist);
	}
	if (s->plan == NULL) {
		cr_assert_null(b->plan, "%s", what);
		return;
	}
	bool same = !strcmp(b->plan, s->plan) ||
		    (!strcmp(b->plan, "batch-gemm") && eb_exact_plan(s->plan));
	cr_assert(same, "%s: plan %s, alone %s", what, b->plan, s->plan);
	cr_assert_eq(b->profile->filter_matches, s->profile->filter_matches, "%s", what);
}

/* Exact plans give the brute force's answer (ids within float rounding of
 * each other may trade places: the engine ranks in float). */
static void eb_assert_brute(const wl_data_t *d, const eb_query_t *e, const vela_result_t *r)
{
	uint32_t ids[EB_KMAX];
	double dist[EB_KMAX];
	uint32_t n = eb_brute(d, &e->f, e->q, e->k, ids, dist);
	cr_assert_eq(r->n_hits, n, "%s: %zu hits, brute force %u", e->text, r->n_hits, n);
	for (uint32_t j = 0; j < n; j++) {
		uint32_t got = (uint32_t)strtoul(r->hits[j].key + 4, NULL, 10);
		double a = wl_l2(e->q, d->vecs + (size_t)got * d->p.dim, d->p.dim);
		if (got != ids[j] && !(fabs(a - dist[j]) <= 1e-5 * (1 + dist[j])))
			cr_assert_fail("%s: hit %u doc %u (%.9g), brute force doc %u (%.9g)",
				       e->text, j, got, a, ids[j], dist[j]);
	}
}

/* Run qs[0..n) as one batch; compare each with vela_search. */
typedef struct eb_count {
	uint32_t gemm, exact, gave_up, walks, promoted;
} eb_count_t;

static void eb_check(vela_db_t *db, const wl_data_t *d, const eb_query_t *qs, uint32_t n,
		     eb_count_t *c)
{
	vela_search_req_t *reqs = calloc(n, sizeof(*reqs));
	vela_kv_t *prm = calloc(n, sizeof(*prm));
	vela_result_t **outs = calloc(n, sizeof(*outs));
	vela_err_t *errs = calloc(n, sizeof(*errs));
	for (uint32_t i = 0; i < n; i++)
		eb_req(&qs[i], &prm[i], &reqs[i]);
	int brc = vela_search_batch(db, reqs, n, outs, errs);
	bool failed = false;
	for (uint32_t i = 0; i < n; i++) {
		vela_result_t *s = NULL;
		vela_err_t err = {0};
		int rc = vela_search(db, &reqs[i], &s, &err);
		cr_assert_eq(outs[i] == NULL, rc != 0, "%s: batch %s, alone rc %d", qs[i].text,
			     outs[i] ? "answered" : "failed", rc);
		if (rc) {
			cr_assert_eq(errs[i].code, rc, "%s", qs[i].text);
			cr_assert_str_eq(errs[i].msg, err.msg);
			failed = true;
			continue;
		}
		if (s->plan && !strcmp(outs[i]->plan, "batch-gemm") && !eb_exact_plan(s->plan)) {
			/* a filtered walk the batch scanned with the other queries of
			 * its filter (db_plan_batch_scan): the same plan alone */
			cr_assert_str_eq(s->plan, "filtered-graph", "%s", qs[i].text);
			vela_result_free(s);
			vela_search_req_t forced = reqs[i];
			forced.force_plan = VELA_PLAN_SCAN;
			cr_assert_eq(vela_search(db, &forced, &s, &err), 0, "%s", err.msg);
			c->promoted++;
		}
		eb_assert_same(outs[i], s, qs[i].text);
		if (qs[i].knn && eb_exact_plan(s->plan)) {
			eb_assert_brute(d, &qs[i], outs[i]);
			c->exact++;
		}
		c->gemm += outs[i]->plan && !strcmp(outs[i]->plan, "batch-gemm");
		c->walks += s->plan && !strcmp(s->plan, "filtered-graph");
		c->gave_up += s->profile->mode &&
			      !strcmp(s->profile->mode, "HYBRID_FILTERED_GRAPH_TO_ADHOC_BF");
		vela_result_free(s);
		vela_result_free(outs[i]);
	}
	cr_assert_eq(brc != 0, failed, "the batch's code says whether a query failed");
	free(reqs);
	free(prm);
	free(outs);
	free(errs);
}

Test(db_hybrid_batch, batch_equals_one_by_one)
{
	char dir[64];
	tmpdir_make(dir, sizeof(dir));
	wl_params_t p;
	wl_params_default(&p);
	p.n = EB_N;
	p.dim = EB_DIM;
	p.clusters = 32;
	wl_data_t d;
	cr_assert_eq(wl_data_make(&p, &d), 0);
	vela_db_options_t o = {.map_size = 1ull << 30, .flags = VELA_OPEN_NOSYNC};
	vela_db_t *db = NULL;
	vela_err_t err = {0};
	cr_assert_eq(vela_db_open(dir, &o, &db, &err), 0, "%s", err.msg);
	hy_index_t ix = {.R = 24, .L = 48, .window = 32};
	hy_load(db, &d, &ix);
	uint32_t nq;
	eb_count_t c = {0};
	eb_query_t *qs = eb_queries(&d, &nq);
	eb_check(db, &d, qs, nq, &c); /* the whole set as one batch */
	cr_assert_gt(c.gemm, 20, "shared filters went through the GEMM (%u)", c.gemm);
	cr_assert_gt(c.walks, 0, "some filtered walks ran");
	cr_assert_gt(c.gave_up, 0, "some filtered walks gave up for the scan");
	cr_assert_geq(c.promoted, 6, "walks sharing a filter were scanned together");
	for (uint32_t s = 0; s < nq; s += 7) /* and in chunks of 7 */
		eb_check(db, &d, qs + s, nq - s < 7 ? nq - s : 7, &c);
	fprintf(stderr, "%u queries twice: %u exact answers checked against brute force, %u "
			"through the shared GEMM, %u filtered walks (%u gave up), %u walks scanned "
			"with their group instead\n",
		nq, c.exact, c.gemm, c.walks, c.gave_up, c.promoted);
	free(qs);
	vela_db_close(db);
	wl_data_free(&d);
	tmpdir_remove(dir);
}

/* ------------------------------------------------------------ numeric ranges */

/* Values with repeats, negatives, zeros of both signs and infinities. */
static const char *const nr_vals[] = {"-inf", "-3.5", "-1", "-0", "0", "0.25", "0.25", "1",
				      "2",    "2",    "2",  "7",  "1e300", "inf", "5", "-1"};
#define NR_DOCS 400u

static void nr_load(vela_db_t *db)
{
	vela_field_def_t f[] = {
		{.name = "a", .type = VELA_FIELD_NUMERIC},
		{.name = "b", .type = VELA_FIELD_NUMERIC},
		{.name = "t", .type = VELA_FIELD_TAG},
		{.name = "v", .type = VELA_FIELD_VECTOR, .dim = 4, .metric = VELA_METRIC_L2,
		 .vec_type = VELA_VEC_FLOAT32, .algo = VELA_ALGO_FLAT},
	};
	const char *pre[] = {"n:"};
	vela_index_def_t def = {.name = "nr", .prefixes = pre, .n_prefixes = 1, .fields = f,
				.n_fields = 4};
	vela_err_t err = {0};
	cr_assert_eq(vela_index_create(db, &def, &err), 0, "%s", err.msg);
	vela_batch_t *b;
	cr_assert_eq(vela_batch_begin(db, &b, &err), 0);
	for (uint32_t i = 0; i < NR_DOCS; i++) {
		char key[16], tag[8];
		snprintf(key, sizeof(key), "n:%u", i);
		snprintf(tag, sizeof(tag), "x%u", i % 5);
		const char *a = nr_vals[(i * 7) % 16], *bv = nr_vals[(i * 11 + 3) % 16];
		float v[4] = {(float)(i % 13), (float)(i % 7), (float)(i % 3), 1};
		vela_kv_t kv[4] = {{"a", 1, a, strlen(a)}, {"b", 1, bv, strlen(bv)},
				   {"t", 1, tag, strlen(tag)}, {"v", 1, v, sizeof(v)}};
		/* every 9th document has no `a` */
		vela_kv_t *use = i % 9 == 0 ? kv + 1 : kv;
		size_t nkv = i % 9 == 0 ? 3 : 4;
		cr_assert_eq(vela_batch_hset(b, key, strlen(key), use, nkv, NULL, &err), 0, "%s",
			     err.msg);
	}
	cr_assert_eq(vela_batch_commit(b, &err), 0, "%s", err.msg);
}

Test(db_hybrid_batch, numeric_ranges_cut_equal_single)
{
	char dir[64];
	tmpdir_make(dir, sizeof(dir));
	vela_db_t *db = db_open_ok(dir, 0);
	nr_load(db);
	static const char *const filters[] = {
		"@a:[-inf +inf]", "@a:[-1 2]", "@a:[(-1 (2]", "@a:[0 0]", "@a:[-0 0.25]",
		"@a:[(0 +inf]", "@a:[-inf (0]", "@a:[2 2]", "@a:[(2 7]", "@a:[1e300 +inf]",
		"@a:[(inf +inf]", "@a:[-inf (-inf]", "@a:[3 1]", "@a!=2", "@a!=0",
		"-@a:[0 2]", "@a:[-1 1] | @a:[2 7]", "@a:[-1 7] @b:[0 2]", "@b:[-inf 2] -@a:[2 2]",
		"@a:[0.25 0.25] | @b:[(0.25 (5]", "@a:[-3.5 5] @t:{x1|x2}", "@a:[-3.5 (5] @t:{x1}",
		"@b:[-1 -1]", "@b:[-1 -1]", "@a>=2", "@a<1", "@a:[-1 2]",
	};
	size_t nf = sizeof(filters) / sizeof(filters[0]);
	/* every filter alone and as the filter of a KNN, in one batch */
	size_t n = 2 * nf;
	char (*texts)[160] = calloc(n, sizeof(*texts));
	vela_search_req_t *reqs = calloc(n, sizeof(*reqs));
	float q[4] = {3, 2, 1, 1};
	vela_kv_t prm = {"B", 1, q, sizeof(q)};
	for (size_t i = 0; i < n; i++) {
		if (i < nf)
			snprintf(texts[i], sizeof(texts[i]), "%s", filters[i]);
		else
			snprintf(texts[i], sizeof(texts[i]), "(%s)=>[KNN 30 @v $B]",
				 filters[i - nf]);
		reqs[i] = (vela_search_req_t){.index = "nr", .query = texts[i], .params = &prm,
					      .n_params = 1, .limit = 1000, .nocontent = true,
					      .profile = true};
	}
	vela_result_t **outs = calloc(n, sizeof(*outs));
	vela_err_t *errs = calloc(n, sizeof(*errs));
	cr_assert_eq(vela_search_batch(db, reqs, n, outs, errs), 0, "%s", errs[0].msg);
	for (size_t i = 0; i < n; i++) {
		vela_result_t *s = NULL;
		vela_err_t err = {0};
		cr_assert_eq(vela_search(db, &reqs[i], &s, &err), 0, "%s: %s", texts[i], err.msg);
		eb_assert_same(outs[i], s, texts[i]);
		vela_result_free(s);
		vela_result_free(outs[i]);
	}
	free(texts);
	free(reqs);
	free(outs);
	free(errs);
	vela_db_close(db);
	tmpdir_remove(dir);
}

/* ------------------------------------------------------------ edges */

Test(db_hybrid_batch, empty_batch_and_profiles)
{
	char dir[64];
	wl_params_t p;
	wl_data_t d;
	vela_db_t *db = hy_small(dir, sizeof(dir), &p, &d);
	cr_assert_eq(vela_search_batch(db, NULL, 0, NULL, NULL), 0, "an empty batch");
	/* five queries on one selective filter and one matching nothing */
	float q[6][8];
	vela_kv_t prm[6];
	vela_search_req_t reqs[6];
	char text[6][128];
	for (int i = 0; i < 6; i++) {
		wl_rng_t r = wl_rng(p.seed, WL_S_USER, 900 + i);
		wl_query_vector(&d, &r, q[i]);
		snprintf(text[i], sizeof(text[i]), "@num:[%s]=>[KNN 10 @v $B]",
			 i < 5 ? "0.1 (0.102" : "2 3");
		prm[i] = (vela_kv_t){"B", 1, q[i], sizeof(q[i])};
		reqs[i] = (vela_search_req_t){.index = "hyb", .query = text[i], .params = &prm[i],
					      .n_params = 1, .nocontent = true, .profile = true};
	}
	vela_result_t *outs[6];
	vela_err_t errs[6];
	cr_assert_eq(vela_search_batch(db, reqs, 6, outs, errs), 0);
	for (int i = 0; i < 5; i++) {
		cr_assert_str_eq(outs[i]->plan, "batch-gemm");
		cr_assert_str_eq(outs[i]->profile->plan, "batch-gemm");
		cr_assert_str_eq(outs[i]->profile->mode, "HYBRID_ADHOC_BF");
		cr_assert_eq(outs[i]->profile->filter_matches, 6);
		cr_assert_eq(outs[i]->profile->distances, 6, "each scored the 6 matches");
		cr_assert_eq(outs[i]->n_hits, 6);
		vela_result_free(outs[i]);
	}
	cr_assert_eq(outs[5]->n_hits, 0, "a filter matching nothing");
	cr_assert_eq(outs[5]->profile->distances, 0);
	vela_result_free(outs[5]);
	vela_db_close(db);
	wl_data_free(&d);
	tmpdir_remove(dir);
}

/* ------------------------------------------------------------ query/ batch helpers */

static int fk_lookup(void *ctx, const char *name, size_t len, query_field_info_t *out)
{
	(void)ctx;
	static const char *const names[] = {"t", "n", "m", "x", "v"};
	static const vela_field_type_t types[] = {VELA_FIELD_TAG, VELA_FIELD_NUMERIC,
						  VELA_FIELD_NUMERIC, VELA_FIELD_TEXT,
						  VELA_FIELD_VECTOR};
	for (uint32_t i = 0; i < 5; i++)
		if (strlen(names[i]) == len && !memcmp(names[i], name, len)) {
			*out = (query_field_info_t){.type = types[i], .field_no = i, .dim = 2,
						    .vec_type = VELA_VEC_FLOAT32};
			return 0;
		}
	return VELA_ENOTFOUND;
}

static size_t fk_key(const char *text, uint8_t *buf, size_t cap)
{
	static const float b[2] = {1, 2};
	query_param_t prm = {"B", 1, b, sizeof(b)};
	query_t *q = NULL;
	vela_err_t err = {0};
	cr_assert_eq(query_parse(text, strlen(text), &prm, 1, fk_lookup, NULL, &q, &err), 0,
		     "%s: %s", text, err.msg);
	size_t n = query_filter_key(q, buf, cap);
	cr_assert_leq(n, cap, "%s", text);
	query_free(q);
	return n;
}

static bool fk_same(const char *a, const char *b)
{
	uint8_t ka[512], kb[512];
	size_t la = fk_key(a, ka, sizeof(ka)), lb = fk_key(b, kb, sizeof(kb));
	return la == lb && !memcmp(ka, kb, la);
}

static int fk_collect(void *ctx, const query_num_range_t *r)
{
	query_num_range_t **v = ctx;
	*(*v)++ = *r;
	return 0;
}

Test(db_hybrid_batch, filter_keys_and_numeric_ranges)
{
	/* equal filters, however written, and the KNN tail left out */
	cr_assert(fk_same("@t:{Red}", "@t:{ red }"));
	cr_assert(fk_same("@n:[-0 1]", "@n:[0 1]"));
	cr_assert(fk_same("@t:{a}=>[KNN 5 @v $B]", "(@t:{a})=>[KNN 10 @v $B AS d]"));
	cr_assert(fk_same("~@t:{a}", "~@t:{b}"), "an optional clause evaluates to everything");
	cr_assert(fk_same("@n>=3", "@n:[3 +inf]"));
	/* different leaves, constants, fields or structure */
	cr_assert(!fk_same("@t:{a}", "@t:{b}"));
	cr_assert(!fk_same("@n:[1 2]", "@n:[1 (2]"));
	cr_assert(!fk_same("@n:[1 2]", "@m:[1 2]"));
	cr_assert(!fk_same("@t:{a} @t:{b}", "@t:{a} | @t:{b}"));
	cr_assert(!fk_same("@t:{a}", "-@t:{a}"));
	cr_assert(!fk_same("@t:{a|b}", "@t:{a} | @t:{b}"));
	cr_assert(!fk_same("@t:{ab}", "@t:{a|b}"));
	cr_assert(!fk_same("hello", "@x:hello"));
	cr_assert(!fk_same("@v:[VECTOR_RANGE 1 $B]", "@v:[VECTOR_RANGE 2 $B]"));
	/* a prefix only when the buffer is short; the length is the full key's */
	uint8_t big[512], small[3];
	size_t n = fk_key("@t:{a} @n:[1 2]", big, sizeof(big));
	static const float b[2] = {1, 2};
	query_param_t prm = {"B", 1, b, sizeof(b)};
	query_t *q = NULL;
	vela_err_t err = {0};
	cr_assert_eq(query_parse("@t:{a} @n:[1 2]", 15, &prm, 1, fk_lookup, NULL, &q, &err), 0);
	cr_assert_eq(query_filter_key(q, small, sizeof(small)), n);
	cr_assert(!memcmp(small, big, sizeof(small)));
	cr_assert_eq(query_filter_key(q, NULL, 0), n);
	query_free(q);
	/* the numeric ranges evaluation will ask for, `!=` as its two */
	const char *text = "(@n:[1 (2] | -@m!=5) @t:{a} ~@n:[7 8]";
	cr_assert_eq(query_parse(text, strlen(text), &prm, 1, fk_lookup, NULL, &q, &err), 0,
		     "%s", err.msg);
	query_num_range_t got[8], *end = got;
	cr_assert_eq(query_num_ranges(q, fk_collect, &end), 0);
	cr_assert_eq(end - got, 3, "the optional clause is never evaluated");
	cr_assert(got[0].field_no == 1 && got[0].lo == 1 && got[0].hi == 2 && !got[0].lo_excl &&
		  got[0].hi_excl);
	cr_assert(got[1].field_no == 2 && got[1].lo == 5 && got[1].hi == 5);
	cr_assert(got[2].field_no == 2 && isinf(got[2].lo) && got[2].lo < 0 && isinf(got[2].hi));
	cr_assert_eq(query_num_ranges(NULL, fk_collect, &end), VELA_EINVAL);
	query_free(q);
}
