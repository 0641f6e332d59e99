/* The in-memory numeric range index (db/numidx.c) against a brute-force
 * reference: the values the test wrote, kept in plain arrays, evaluated
 * one by one. Ranges: empty, single points, inclusive and exclusive
 * bounds, +-inf, duplicates; writes: overwrites, HDEL, DEL, documents
 * without the field, non-numeric values (the document leaves the index),
 * aborted batches, bucket splits and merges, reopen (lazy rebuild),
 * FT.DROPINDEX and re-creation, concurrent first filters. */
#include <pthread.h>

#include "test_db_util.h"

#include "db/db.h"

#define NDOCS 600u
#define NFIELDS 2u /* NUMERIC n and m */

static char dir[64];

static void setup(void)
{
	tmpdir_make(dir, sizeof(dir));
	/* small buckets: splits and merges happen with a few hundred docs */
	cr_assert_eq(db_numidx_bucket_rows(DB_NUMIDX_BUCKET_ROWS_MIN), 0);
}

static void teardown(void)
{
	db_numidx_bucket_rows(DB_NUMIDX_BUCKET_ROWS_DEFAULT);
	tmpdir_remove(dir);
}

TestSuite(numidx, .init = setup, .fini = teardown, .timeout = 120);

/* ------------------------------------------------------------ the reference */

/* What the test wrote: per document, per field, a value or none; a
 * document with a non-numeric value is out of the index. */
typedef struct ref {
	bool exists[NDOCS], bad[NDOCS];
	bool has[NFIELDS][NDOCS];
	double v[NFIELDS][NDOCS];
} ref_t;

static const char *fname[NFIELDS] = {"n", "m"};

typedef struct range {
	double lo, hi;
	bool lo_excl, hi_excl;
} range_t;

static bool ref_match(const ref_t *r, uint32_t f, uint32_t d, const range_t *q)
{
	if (!r->exists[d] || r->bad[d] || !r->has[f][d])
		return false;
	double v = r->v[f][d];
	return (q->lo_excl ? v > q->lo : v >= q->lo) && (q->hi_excl ? v < q->hi : v <= q->hi);
}

/* ------------------------------------------------------------ helpers */

static void index_make(vela_db_t *db, const char *name, const char *n_field)
{
	vela_field_def_t f[3] = {
		{.name = n_field, .alias = "n", .type = VELA_FIELD_NUMERIC},
		{.name = "m", .type = VELA_FIELD_NUMERIC},
		{.name = "t", .type = VELA_FIELD_TAG},
	};
	const char *pre[] = {"d:"};
	vela_index_def_t def = {.name = name, .prefixes = pre, .n_prefixes = 1, .fields = f,
				.n_fields = 3};
	vela_err_t err = {0};
	cr_assert_eq(vela_index_create(db, &def, &err), 0, "%s", err.msg);
}

/* Values with many duplicates, -0, +-inf. */
static double value_draw(test_rng_t *g)
{
	uint32_t r = test_rng_u32(g) % 100;
	if (r == 0)
		return INFINITY;
	if (r == 1)
		return -INFINITY;
	if (r == 2)
		return -0.0;
	return ((int)(test_rng_u32(g) % 81) - 40) / 4.0;
}

static void value_fmt(double v, char *buf, size_t cap)
{
	if (isinf(v))
		snprintf(buf, cap, "%s", v > 0 ? "inf" : "-inf");
	else
		snprintf(buf, cap, "%.17g", v);
}

static void bound_fmt(double v, bool excl, char *buf, size_t cap)
{
	char num[40];
	if (isinf(v))
		snprintf(num, sizeof(num), "%s", v > 0 ? "+inf" : "-inf");
	else
		snprintf(num, sizeof(num), "%.17g", v);
	snprintf(buf, cap, "%s%s", excl ? "(" : "", num);
}

static range_t range_draw(test_rng_t *g)
{
	range_t q;
	uint32_t r = test_rng_u32(g) % 8;
	q.lo = r == 0 ? -INFINITY : value_draw(g);
	q.hi = r == 1 ? INFINITY : r == 2 ? q.lo : value_draw(g);
	if (r == 3) { /* wide: most of the field (the complement path) */
		q.lo = -9.5;
		q.hi = 9.75;
	}
	q.lo_excl = test_rng_u32(g) % 3 == 0;
	q.hi_excl = test_rng_u32(g) % 3 == 0;
	return q; /* lo > hi now and then: an empty range */
}

static void query_fmt(uint32_t f, const range_t *q, char *buf, size_t cap)
{
	char lo[48], hi[48];
	bound_fmt(q->lo, q->lo_excl, lo, sizeof(lo));
	bound_fmt(q->hi, q->hi_excl, hi, sizeof(hi));
	snprintf(buf, cap, "@%s:[%s %s]", fname[f], lo, hi);
}


/* Compare one result with the reference. */
static void result_check(const vela_result_t *res, const ref_t *r, uint32_t f, const range_t *q,
			 const char *query)
{
	bool got[NDOCS] = {0};
	for (size_t i = 0; i < res->n_hits; i++) {
		unsigned d;
		cr_assert_eq(sscanf(res->hits[i].key, "d:%u", &d), 1);
		cr_assert(d < NDOCS && !got[d], "%s: doc %u twice or out of range", query, d);
		got[d] = true;
	}
	uint64_t want = 0;
	for (uint32_t d = 0; d < NDOCS; d++) {
		bool m = ref_match(r, f, d, q);
		want += m;
		cr_assert_eq(got[d], m, "%s: doc %u (value %g) %s", query, d, r->v[f][d],
			     m ? "missing" : "not expected");
	}
	cr_assert_eq(res->total, want, "%s: total %llu, want %llu", query,
		     (unsigned long long)res->total, (unsigned long long)want);
}

static void check_one(vela_db_t *db, const char *index, const ref_t *r, uint32_t f,
		      const range_t *q)
{
	char query[160];
	query_fmt(f, q, query, sizeof(query));
	vela_search_req_t req;
	test_req_ids(&req, index, query, NDOCS + 1);
	vela_result_t *res = NULL;
	vela_err_t err = {0};
	cr_assert_eq(vela_search(db, &req, &res, &err), 0, "%s: %s", query, err.msg);
	result_check(res, r, f, q, query);
	vela_result_free(res);
}

/* n random ranges, one by one and as one batch. */
static void check_random(vela_db_t *db, const char *index, const ref_t *r, test_rng_t *g,
			 uint32_t n)
{
	enum { B = 16 };
	range_t qs[B];
	uint32_t fs[B];
	char text[B][160];
	vela_search_req_t reqs[B];
	for (uint32_t i = 0; i < n; i++) {
		uint32_t f = test_rng_u32(g) % NFIELDS;
		range_t q = range_draw(g);
		check_one(db, index, r, f, &q);
		if (i < B) {
			qs[i] = q;
			fs[i] = f;
			query_fmt(f, &q, text[i], sizeof(text[i]));
			test_req_ids(&reqs[i], index, text[i], NDOCS + 1);
		}
	}
	uint32_t nb = n < B ? n : B;
	vela_result_t *outs[B] = {0};
	vela_err_t errs[B];
	memset(errs, 0, sizeof(errs));
	cr_assert_eq(vela_search_batch(db, reqs, nb, outs, errs), 0);
	for (uint32_t i = 0; i < nb; i++) {
		cr_assert_not_null(outs[i], "%s: %s", text[i], errs[i].msg);
		result_check(outs[i], r, fs[i], &qs[i], text[i]);
		vela_result_free(outs[i]);
	}
}

static void key_of(uint32_t d, char *buf, size_t cap)
{
	snprintf(buf, cap, "d:%u", d);
}

/* One random write into batch b, mirrored into r. */
static void write_random(vela_batch_t *b, ref_t *r, test_rng_t *g)
{
	uint32_t d = test_rng_u32(g) % NDOCS, op = test_rng_u32(g) % 20;
	char key[32], val[2][40];
	key_of(d, key, sizeof(key));
	vela_err_t err = {0};
	if (op < 2) { /* DEL */
		cr_assert_eq(vela_batch_del(b, key, strlen(key), NULL, &err), 0, "%s", err.msg);
		r->exists[d] = r->bad[d] = r->has[0][d] = r->has[1][d] = false;
		return;
	}
	if (op < 4) { /* HDEL of one numeric field */
		uint32_t f = op - 2;
		vela_kv_t kv = {fname[f], 1, NULL, 0};
		cr_assert_eq(vela_batch_hdel(b, key, strlen(key), &kv, 1, NULL, &err), 0, "%s",
			     err.msg);
		/* the tag keeps the document; a removed bad value re-admits it */
		r->has[f][d] = false;
		if (f == 0)
			r->bad[d] = false;
		return;
	}
	vela_kv_t kv[3];
	size_t n = 0;
	kv[n++] = (vela_kv_t){"t", 1, "x", 1};
	bool bad = op == 4; /* a non-numeric value: the document leaves the index */
	for (uint32_t f = 0; f < NFIELDS; f++) {
		if (test_rng_u32(g) % 4 == 0)
			continue; /* not written: keeps its old value, or has none */
		double v = value_draw(g);
		if (bad && f == 0)
			snprintf(val[f], sizeof(val[f]), "abc");
		else
			value_fmt(v, val[f], sizeof(val[f]));
		kv[n++] = (vela_kv_t){fname[f], 1, val[f], strlen(val[f])};
		r->has[f][d] = true;
		r->v[f][d] = v;
	}
	cr_assert_eq(vela_batch_hset(b, key, strlen(key), kv, n, NULL, &err), 0, "%s", err.msg);
	r->exists[d] = true;
	/* the hash now holds "abc" in n when written so, else whatever it held */
	if (n > 1 && kv[1].name == fname[0])
		r->bad[d] = bad;
}

static void batch_random(vela_db_t *db, ref_t *r, test_rng_t *g, uint32_t n, bool abort)
{
	vela_batch_t *b;
	vela_err_t err = {0};
	cr_assert_eq(vela_batch_begin(db, &b, &err), 0, "%s", err.msg);
	ref_t before = *r;
	for (uint32_t i = 0; i < n; i++)
		write_random(b, r, g);
	if (abort) {
		vela_batch_abort(b);
		*r = before;
	} else {
		cr_assert_eq(vela_batch_commit(b, &err), 0, "%s", err.msg);
	}
}

static db_numidx_stats_t stats_of(vela_db_t *db, const char *index, uint32_t f)
{
	db_numidx_stats_t s;
	pthread_rwlock_rdlock(&db->lock);
	db_index_t *ix = db_index_find(db, index);
	cr_assert_not_null(ix);
	db_numidx_stats(&ix->fields[f], &s);
	pthread_rwlock_unlock(&db->lock);
	return s;
}

/* ------------------------------------------------------------ tests */

Test(numidx, random_writes_match_reference)
{
	static ref_t r;
	memset(&r, 0, sizeof(r));
	test_rng_t g = test_rng(42);
	vela_db_t *db = db_open_ok(dir, 0);
	index_make(db, "ix", "n");
	batch_random(db, &r, &g, 2 * NDOCS, false);
	/* written before the first filter: the lazy build reads them */
	cr_assert_not(stats_of(db, "ix", 0).built);
	check_random(db, "ix", &r, &g, 40);
	db_numidx_stats_t s = stats_of(db, "ix", 0);
	cr_assert(s.built && s.buckets > 4 && s.complement, "buckets %u", s.buckets);
	for (int round = 0; round < 30; round++) {
		batch_random(db, &r, &g, 1 + test_rng_u32(&g) % 60, round % 5 == 4);
		check_random(db, "ix", &r, &g, 12);
	}
	/* the entries the index holds are exactly the reference's values */
	for (uint32_t f = 0; f < NFIELDS; f++) {
		uint64_t want = 0;
		for (uint32_t d = 0; d < NDOCS; d++)
			want += r.exists[d] && !r.bad[d] && r.has[f][d];
		cr_assert_eq(stats_of(db, "ix", f).rows, want, "field %u", f);
	}
	vela_index_info_t info;
	vela_err_t err = {0};
	cr_assert_eq(vela_index_info(db, "ix", &info, &err), 0);
	cr_assert_gt(info.numeric_bytes, 0);
	vela_db_close(db);
}

Test(numidx, edge_ranges)
{
	static ref_t r;
	memset(&r, 0, sizeof(r));
	vela_db_t *db = db_open_ok(dir, 0);
	index_make(db, "ix", "n");
	vela_batch_t *b;
	vela_err_t err = {0};
	cr_assert_eq(vela_batch_begin(db, &b, &err), 0);
	static const double vals[] = {-INFINITY, -1e300, -2.5, -0.0, 0.0, 1e-300, 2.5, 2.5, 7, 1e300,
				      INFINITY};
	for (uint32_t d = 0; d < sizeof(vals) / sizeof(vals[0]); d++) {
		char key[32], v[40];
		key_of(d, key, sizeof(key));
		value_fmt(vals[d], v, sizeof(v));
		vela_kv_t kv = {"n", 1, v, strlen(v)};
		cr_assert_eq(vela_batch_hset(b, key, strlen(key), &kv, 1, NULL, &err), 0);
		r.exists[d] = r.has[0][d] = true;
		r.v[0][d] = vals[d];
	}
	cr_assert_eq(vela_batch_commit(b, &err), 0, "%s", err.msg);
	static const range_t qs[] = {
		{-INFINITY, INFINITY, false, false}, {-INFINITY, INFINITY, true, true},
		{INFINITY, INFINITY, false, false},  {INFINITY, INFINITY, true, false},
		{-INFINITY, -INFINITY, false, false}, {-INFINITY, -INFINITY, false, true},
		{0, 0, false, false},                {0, 0, true, false},
		{-0.0, 1e-300, true, false},         {2.5, 2.5, false, false},
		{2.5, 2.5, true, true},              {2.5, 7, true, true},
		{7, 2.5, false, false},              {-1e300, 1e300, false, false},
		{-1e300, 1e300, true, true},         {3, 4, false, false},
	};
	for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++)
		check_one(db, "ix", &r, 0, &qs[i]);
	vela_db_close(db);
}

/* Many values in one bucket: it splits at its median (never inside a run
 * of one value); deletes fold thinned buckets back. */
Test(numidx, splits_and_merges)
{
	static ref_t r;
	memset(&r, 0, sizeof(r));
	test_rng_t g = test_rng(7);
	vela_db_t *db = db_open_ok(dir, 0);
	index_make(db, "ix", "n");
	char key[32], v[40];
	vela_err_t err = {0};
	/* one document, then the first filter builds a one-bucket index */
	cr_assert_eq(hset1(db, "d:0", "n", "5", 1), 0);
	r.exists[0] = r.has[0][0] = true;
	r.v[0][0] = 5;
	range_t all = {-INFINITY, INFINITY, false, false};
	check_one(db, "ix", &r, 0, &all);
	cr_assert_eq(stats_of(db, "ix", 0).buckets, 1);
	/* 200 documents of one value, then 399 spread ones, all in that bucket */
	vela_batch_t *b;
	cr_assert_eq(vela_batch_begin(db, &b, &err), 0);
	for (uint32_t d = 1; d < NDOCS; d++) {
		double x = d <= 200 ? 1.0 : (double)(test_rng_u32(&g) % 1000) / 8.0;
		key_of(d, key, sizeof(key));
		value_fmt(x, v, sizeof(v));
		vela_kv_t kv = {"n", 1, v, strlen(v)};
		cr_assert_eq(vela_batch_hset(b, key, strlen(key), &kv, 1, NULL, &err), 0);
		r.exists[d] = r.has[0][d] = true;
		r.v[0][d] = x;
	}
	cr_assert_eq(vela_batch_commit(b, &err), 0, "%s", err.msg);
	db_numidx_stats_t s = stats_of(db, "ix", 0);
	cr_assert_geq(s.buckets, NDOCS / (2 * DB_NUMIDX_BUCKET_ROWS_MIN) / 2, "buckets %u",
		      s.buckets);
	cr_assert_geq(s.bucket_rows_max, 200, "the run of 1.0 stays in one bucket");
	cr_assert_eq(s.rows, NDOCS);
	check_random(db, "ix", &r, &g, 40);
	for (int i = 0; i < 20; i++) {
		range_t q = {1, 1 + i * 6.5, i % 2, i % 3 == 0};
		check_one(db, "ix", &r, 0, &q);
	}
	/* delete most documents: the buckets fold back */
	uint32_t before = s.buckets;
	cr_assert_eq(vela_batch_begin(db, &b, &err), 0);
	for (uint32_t d = 0; d < NDOCS; d++) {
		if (d % 10 == 0)
			continue;
		key_of(d, key, sizeof(key));
		cr_assert_eq(vela_batch_del(b, key, strlen(key), NULL, &err), 0);
		r.exists[d] = false;
	}
	cr_assert_eq(vela_batch_commit(b, &err), 0, "%s", err.msg);
	s = stats_of(db, "ix", 0);
	cr_assert_lt(s.buckets, before, "buckets %u of %u", s.buckets, before);
	cr_assert_eq(s.rows, NDOCS / 10);
	check_random(db, "ix", &r, &g, 40);
	vela_db_close(db);
}

Test(numidx, aborted_batch_leaves_index)
{
	static ref_t r;
	memset(&r, 0, sizeof(r));
	test_rng_t g = test_rng(3);
	vela_db_t *db = db_open_ok(dir, 0);
	index_make(db, "ix", "n");
	batch_random(db, &r, &g, NDOCS, false);
	check_random(db, "ix", &r, &g, 8); /* built */
	uint64_t rows = stats_of(db, "ix", 0).rows;
	for (int i = 0; i < 5; i++) {
		batch_random(db, &r, &g, 200, true);
		cr_assert_eq(stats_of(db, "ix", 0).rows, rows);
		check_random(db, "ix", &r, &g, 8);
	}
	vela_db_close(db);
}

Test(numidx, reopen_rebuilds_lazily)
{
	static ref_t r;
	memset(&r, 0, sizeof(r));
	test_rng_t g = test_rng(11);
	vela_db_t *db = db_open_ok(dir, 0);
	index_make(db, "ix", "n");
	batch_random(db, &r, &g, NDOCS, false);
	check_random(db, "ix", &r, &g, 8);
	batch_random(db, &r, &g, 100, false);
	vela_db_close(db);
	db = db_open_ok(dir, 0);
	cr_assert_not(stats_of(db, "ix", 0).built);
	vela_index_info_t info;
	vela_err_t err = {0};
	cr_assert_eq(vela_index_info(db, "ix", &info, &err), 0);
	cr_assert_eq(info.numeric_bytes, 0);
	batch_random(db, &r, &g, 100, false); /* ignored by the unbuilt index */
	check_random(db, "ix", &r, &g, 20);
	cr_assert(stats_of(db, "ix", 0).built);
	vela_db_close(db);
}

Test(numidx, dropindex_then_recreate)
{
	static ref_t r;
	memset(&r, 0, sizeof(r));
	test_rng_t g = test_rng(5);
	vela_db_t *db = db_open_ok(dir, 0);
	index_make(db, "ix", "n");
	batch_random(db, &r, &g, NDOCS, false);
	check_random(db, "ix", &r, &g, 8);
	vela_err_t err = {0};
	cr_assert_eq(vela_index_drop(db, "ix", false, &err), 0, "%s", err.msg);
	/* the same name over another hash field: query name n reads field m */
	index_make(db, "ix", "m");
	cr_assert_not(stats_of(db, "ix", 0).built);
	static ref_t r2;
	r2 = r;
	memcpy(r2.has[0], r.has[1], sizeof(r.has[1]));
	memcpy(r2.v[0], r.v[1], sizeof(r.v[1]));
	memset(r2.bad, 0, sizeof(r2.bad)); /* hash field n ("abc" or not) is not indexed now */
	for (int i = 0; i < 20; i++) {
		range_t q = range_draw(&g);
		check_one(db, "ix", &r2, 0, &q);
	}
	vela_db_close(db);
}

typedef struct conc {
	vela_db_t *db;
	range_t q[10];
	char text[10][160];
	vela_result_t *res[10];
	int rc[10];
} conc_t;

/* No Criterion assert off the test's thread: results are checked after. */
static void *conc_run(void *arg)
{
	conc_t *c = arg;
	for (int i = 0; i < 10; i++) {
		vela_search_req_t req;
		test_req_ids(&req, "ix", c->text[i], NDOCS + 1);
		vela_err_t err = {0};
		c->rc[i] = vela_search(c->db, &req, &c->res[i], &err);
	}
	return NULL;
}

/* Searches that start together build the index once, and all agree. */
Test(numidx, concurrent_first_filters)
{
	static ref_t r;
	memset(&r, 0, sizeof(r));
	test_rng_t g = test_rng(9);
	vela_db_t *db = db_open_ok(dir, 0);
	index_make(db, "ix", "n");
	batch_random(db, &r, &g, 2 * NDOCS, false);
	pthread_t th[4];
	static conc_t c[4];
	for (int i = 0; i < 4; i++) {
		c[i].db = db;
		for (int j = 0; j < 10; j++) {
			c[i].q[j] = range_draw(&g);
			query_fmt(0, &c[i].q[j], c[i].text[j], sizeof(c[i].text[j]));
		}
	}
	for (int i = 0; i < 4; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, conc_run, &c[i]), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < 4; i++)
		for (int j = 0; j < 10; j++) {
			cr_assert_eq(c[i].rc[j], 0, "%s", c[i].text[j]);
			result_check(c[i].res[j], &r, 0, &c[i].q[j], c[i].text[j]);
			vela_result_free(c[i].res[j]);
		}
	cr_assert(stats_of(db, "ix", 0).built);
	vela_db_close(db);
}
