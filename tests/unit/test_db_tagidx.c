/* The in-memory TAG value index (db/tagidx.c) against a brute-force
 * reference: the raw values the test wrote, split on the field's
 * separator, trimmed and case-folded here, and matched one by one.
 * Clauses of one and of many values, one at a time and as a batch;
 * writes: overwrites, HDEL, DEL, documents without the field, repeated
 * values in one field, aborted batches, reopen (lazy rebuild),
 * FT.DROPINDEX and re-creation, concurrent first clauses, case-sensitive
 * fields, and the value budget (a field past it is answered from LMDB,
 * with the same results). */
#include <ctype.h>
#include <pthread.h>

#include "test_db_util.h"

#include "db/db.h"

#define NDOCS 500u
#define NFIELDS 3u /* t: ',' folded; u: ';' folded; c: ',' case-sensitive */
#define VAL_MAX 96

static char dir[64];

static void setup(void)
{
	tmpdir_make(dir, sizeof(dir));
}

static void teardown(void)
{
	db_tagidx_values_max(DB_TAGIDX_VALUES_DEFAULT);
	db_tagidx_enable(true);
	tmpdir_remove(dir);
}

TestSuite(tagidx, .init = setup, .fini = teardown, .timeout = 120);

static const char *fname[NFIELDS] = {"t", "u", "c"};
static const char fsep[NFIELDS] = {',', ';', ','};
static const bool fcase[NFIELDS] = {false, false, true};

/* Words of the values: mixed case, an inner space. */
static const char *words[] = {"red", "Red", "RED", "blue", "Blue", "green", "blue sky",
			      "Blue Sky", "x1", "X1", "y_2", "zeta", "alpha", "Beta", "gamma"};
#define NWORDS (sizeof(words) / sizeof(words[0]))

/* ------------------------------------------------------------ the reference */

typedef struct ref {
	bool exists[NDOCS];
	bool has[NFIELDS][NDOCS];
	char v[NFIELDS][NDOCS][VAL_MAX];
} ref_t;

/* A tag as indexing stores it: trimmed, folded unless case-sensitive. */
static size_t tag_norm(uint32_t f, const char *s, size_t n, char *out)
{
	size_t a = 0, b = n;
	while (a < b && isspace((unsigned char)s[a]))
		a++;
	while (b > a && isspace((unsigned char)s[b - 1]))
		b--;
	for (size_t i = a; i < b; i++)
		out[i - a] = fcase[f] ? s[i] : (char)tolower((unsigned char)s[i]);
	return b - a;
}

/* Does document d's field f hold tag q (normalised)? */
static bool ref_has_tag(const ref_t *r, uint32_t f, uint32_t d, const char *q)
{
	if (!r->exists[d] || !r->has[f][d])
		return false;
	const char *v = r->v[f][d];
	size_t n = strlen(v), start = 0;
	char t[VAL_MAX];
	for (size_t i = 0; i <= n; i++) {
		if (i < n && v[i] != fsep[f])
			continue;
		size_t tl = tag_norm(f, v + start, i - start, t);
		start = i + 1;
		if (tl && tl == strlen(q) && memcmp(t, q, tl) == 0)
			return true;
	}
	return false;
}

/* A clause: field f, n values (normalised as the query parser does). */
typedef struct clause {
	uint32_t f, n;
	char val[6][VAL_MAX];
} clause_t;

static bool ref_match(const ref_t *r, const clause_t *q, uint32_t d)
{
	for (uint32_t i = 0; i < q->n; i++)
		if (ref_has_tag(r, q->f, d, q->val[i]))
			return true;
	return false;
}

/* ------------------------------------------------------------ helpers */

static void index_make(vela_db_t *db, const char *name, const char *t_field)
{
	vela_field_def_t f[NFIELDS] = {
		{.name = t_field, .alias = "t", .type = VELA_FIELD_TAG},
		{.name = "u", .type = VELA_FIELD_TAG, .tag_separator = ';'},
		{.name = "c", .type = VELA_FIELD_TAG, .case_sensitive = true},
	};
	const char *pre[] = {"d:"};
	vela_index_def_t def = {.name = name, .prefixes = pre, .n_prefixes = 1, .fields = f,
				.n_fields = NFIELDS};
	vela_err_t err = {0};
	cr_assert_eq(vela_index_create(db, &def, &err), 0, "%s", err.msg);
}

static clause_t clause_draw(test_rng_t *g)
{
	clause_t q;
	q.f = test_rng_u32(g) % NFIELDS;
	uint32_t r = test_rng_u32(g) % 4;
	q.n = r == 0 ? 1 : r == 1 ? 2 + test_rng_u32(g) % 5 : 1 + test_rng_u32(g) % 3;
	for (uint32_t i = 0; i < q.n; i++) {
		const char *w = words[test_rng_u32(g) % NWORDS];
		if (test_rng_u32(g) % 8 == 0)
			w = "absent";
		q.val[i][tag_norm(q.f, w, strlen(w), q.val[i])] = '\0';
	}
	return q;
}

/* @f:{v|v...}, spaces escaped; values in random case for folded fields
 * (the parser folds them). */
static void query_fmt(const clause_t *q, test_rng_t *g, char *buf, size_t cap)
{
	size_t n = (size_t)snprintf(buf, cap, "@%s:{", fname[q->f]);
	for (uint32_t i = 0; i < q->n; i++) {
		if (i)
			buf[n++] = '|';
		for (const char *p = q->val[i]; *p; p++) {
			char c = *p;
			if (c == ' ')
				buf[n++] = '\\';
			else if (!fcase[q->f] && g && test_rng_u32(g) % 2)
				c = (char)toupper((unsigned char)c);
			buf[n++] = c;
		}
	}
	buf[n++] = '}';
	buf[n] = '\0';
	cr_assert_lt(n, cap);
}


static void result_check(const vela_result_t *res, const ref_t *r, const clause_t *q,
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
		bool m = ref_match(r, q, d);
		want += m;
		cr_assert_eq(got[d], m, "%s: doc %u (value '%s') %s", query, d, r->v[q->f][d],
			     m ? "missing" : "not expected");
	}
	cr_assert_eq(res->total, want, "%s: total %llu, want %llu", query,
		     (unsigned long long)res->total, (unsigned long long)want);
}

static void check_one(vela_db_t *db, const char *index, const ref_t *r, const clause_t *q,
		      test_rng_t *g)
{
	char query[800];
	query_fmt(q, g, query, sizeof(query));
	vela_search_req_t req;
	test_req_ids(&req, index, query, NDOCS + 1);
	vela_result_t *res = NULL;
	vela_err_t err = {0};
	cr_assert_eq(vela_search(db, &req, &res, &err), 0, "%s: %s", query, err.msg);
	result_check(res, r, q, query);
	vela_result_free(res);
}

/* n random clauses, one by one (with and without the index: the same
 * answers) and the first ones as one batch. */
static void check_random(vela_db_t *db, const char *index, const ref_t *r, test_rng_t *g,
			 uint32_t n)
{
	enum { B = 16 };
	static clause_t qs[B];
	static char text[B][800];
	vela_search_req_t reqs[B];
	for (uint32_t i = 0; i < n; i++) {
		clause_t q = clause_draw(g);
		check_one(db, index, r, &q, g);
		if (i % 4 == 3) {
			db_tagidx_enable(false);
			check_one(db, index, r, &q, g);
			db_tagidx_enable(true);
		}
		if (i < B) {
			qs[i] = q;
			query_fmt(&q, g, text[i], sizeof(text[i]));
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
		result_check(outs[i], r, &qs[i], text[i]);
		vela_result_free(outs[i]);
	}
}

static void key_of(uint32_t d, char *buf, size_t cap)
{
	snprintf(buf, cap, "d:%u", d);
}

/* A field value: 0-4 words joined by the separator with spaces around
 * some, a word repeated now and then, an empty part. */
static void value_draw(test_rng_t *g, uint32_t f, char *buf)
{
	uint32_t k = test_rng_u32(g) % 5;
	size_t n = 0;
	const char *last = words[0];
	for (uint32_t i = 0; i < k; i++) {
		const char *w = test_rng_u32(g) % 6 == 0 ? last : words[test_rng_u32(g) % NWORDS];
		last = w;
		const char *pad = test_rng_u32(g) % 3 == 0 ? " " : "";
		n += (size_t)snprintf(buf + n, VAL_MAX - n, "%s%s%s%s", i ? (char[]){fsep[f], 0} : "",
				      pad, w, pad);
	}
	if (test_rng_u32(g) % 10 == 0)
		n += (size_t)snprintf(buf + n, VAL_MAX - n, "%c", fsep[f]);
	buf[n] = '\0';
}

/* One random write into batch b, mirrored into r. */
static void write_random(vela_batch_t *b, ref_t *r, test_rng_t *g)
{
	uint32_t d = test_rng_u32(g) % NDOCS, op = test_rng_u32(g) % 20;
	char key[32], val[NFIELDS][VAL_MAX];
	key_of(d, key, sizeof(key));
	vela_err_t err = {0};
	if (op < 2) { /* DEL */
		cr_assert_eq(vela_batch_del(b, key, strlen(key), NULL, &err), 0, "%s", err.msg);
		r->exists[d] = false;
		for (uint32_t f = 0; f < NFIELDS; f++)
			r->has[f][d] = false;
		return;
	}
	if (op < 5) { /* HDEL of one tag field */
		uint32_t f = op - 2;
		vela_kv_t kv = {fname[f], 1, NULL, 0};
		cr_assert_eq(vela_batch_hdel(b, key, strlen(key), &kv, 1, NULL, &err), 0, "%s",
			     err.msg);
		r->has[f][d] = false;
		return;
	}
	vela_kv_t kv[NFIELDS + 1];
	size_t n = 0;
	kv[n++] = (vela_kv_t){"other", 5, "x", 1}; /* the document exists without tags too */
	for (uint32_t f = 0; f < NFIELDS; f++) {
		if (test_rng_u32(g) % 3 == 0)
			continue; /* not written: keeps its old value, or has none */
		value_draw(g, f, val[f]);
		kv[n++] = (vela_kv_t){fname[f], 1, val[f], strlen(val[f])};
		r->has[f][d] = true;
		snprintf(r->v[f][d], VAL_MAX, "%s", val[f]);
	}
	cr_assert_eq(vela_batch_hset(b, key, strlen(key), kv, n, NULL, &err), 0, "%s", err.msg);
	r->exists[d] = true;
}

static void batch_random(vela_db_t *db, ref_t *r, test_rng_t *g, uint32_t n, bool abort)
{
	vela_batch_t *b;
	vela_err_t err = {0};
	cr_assert_eq(vela_batch_begin(db, &b, &err), 0, "%s", err.msg);
	static ref_t before;
	before = *r;
	for (uint32_t i = 0; i < n; i++)
		write_random(b, r, g);
	if (abort) {
		vela_batch_abort(b);
		*r = before;
	} else {
		cr_assert_eq(vela_batch_commit(b, &err), 0, "%s", err.msg);
	}
}

static db_tagidx_stats_t stats_of(vela_db_t *db, const char *index, uint32_t f)
{
	db_tagidx_stats_t s;
	pthread_rwlock_rdlock(&db->lock);
	db_index_t *ix = db_index_find(db, index);
	cr_assert_not_null(ix);
	db_tagidx_stats(&ix->fields[f], &s);
	pthread_rwlock_unlock(&db->lock);
	return s;
}

/* The (document, distinct tag) pairs of field f in the reference. */
static uint64_t ref_postings(const ref_t *r, uint32_t f)
{
	uint64_t n = 0;
	char seen[8][VAL_MAX];
	for (uint32_t d = 0; d < NDOCS; d++) {
		if (!r->exists[d] || !r->has[f][d])
			continue;
		const char *v = r->v[f][d];
		size_t len = strlen(v), start = 0, ns = 0;
		for (size_t i = 0; i <= len; i++) {
			if (i < len && v[i] != fsep[f])
				continue;
			char t[VAL_MAX];
			size_t tl = tag_norm(f, v + start, i - start, t);
			start = i + 1;
			t[tl] = '\0';
			bool dup = tl == 0;
			for (size_t j = 0; j < ns && !dup; j++)
				dup = strcmp(seen[j], t) == 0;
			if (!dup && ns < 8) {
				strcpy(seen[ns++], t);
				n++;
			}
		}
	}
	return n;
}

/* ------------------------------------------------------------ tests */

Test(tagidx, random_writes_match_reference)
{
	static ref_t r;
	memset(&r, 0, sizeof(r));
	test_rng_t g = test_rng(42);
	vela_db_t *db = db_open_ok(dir, 0);
	index_make(db, "ix", "t");
	batch_random(db, &r, &g, 2 * NDOCS, false);
	/* written before the first clause: the lazy build reads them */
	cr_assert_not(stats_of(db, "ix", 0).built);
	check_random(db, "ix", &r, &g, 60);
	for (uint32_t f = 0; f < NFIELDS; f++)
		cr_assert(stats_of(db, "ix", f).built, "field %u", f);
	for (int round = 0; round < 30; round++) {
		batch_random(db, &r, &g, 1 + test_rng_u32(&g) % 60, false);
		check_random(db, "ix", &r, &g, 12);
	}
	/* the pairs the index holds are exactly the reference's */
	for (uint32_t f = 0; f < NFIELDS; f++)
		cr_assert_eq(stats_of(db, "ix", f).postings, ref_postings(&r, f), "field %u", f);
	/* case: the case-sensitive field keeps "Red" and "red" apart */
	cr_assert_gt(stats_of(db, "ix", 2).values, stats_of(db, "ix", 0).values);
	vela_index_info_t info;
	vela_err_t err = {0};
	cr_assert_eq(vela_index_info(db, "ix", &info, &err), 0);
	cr_assert_gt(info.tag_bytes, 0);
	vela_db_close(db);
}

/* Every write kind on one document, checked after each. */
Test(tagidx, overwrite_hdel_del)
{
	static ref_t r;
	memset(&r, 0, sizeof(r));
	vela_db_t *db = db_open_ok(dir, 0);
	index_make(db, "ix", "t");
	cr_assert_eq(hset1(db, "d:1", "t", "a, b ,B", 7), 0);
	r.exists[1] = r.has[0][1] = true;
	strcpy(r.v[0][1], "a, b ,B");
	clause_t ab = {.f = 0, .n = 2, .val = {"a", "b"}}, b = {.f = 0, .n = 1, .val = {"b"}},
		 c = {.f = 0, .n = 2, .val = {"c", "zz"}};
	check_one(db, "ix", &r, &ab, NULL); /* built */
	cr_assert_eq(stats_of(db, "ix", 0).postings, 2);
	cr_assert_eq(hset1(db, "d:1", "t", "c", 1), 0); /* overwrite: a, b leave */
	strcpy(r.v[0][1], "c");
	check_one(db, "ix", &r, &ab, NULL);
	check_one(db, "ix", &r, &c, NULL);
	cr_assert_eq(stats_of(db, "ix", 0).postings, 1);
	cr_assert_eq(hset1(db, "d:2", "t", "b", 1), 0);
	r.exists[2] = r.has[0][2] = true;
	strcpy(r.v[0][2], "b");
	check_one(db, "ix", &r, &b, NULL);
	vela_kv_t kv = {"t", 1, NULL, 0};
	vela_err_t err = {0};
	cr_assert_eq(hset1(db, "d:1", "other", "x", 1), 0);
	cr_assert_eq(vela_hdel(db, "d:1", 3, &kv, 1, NULL, &err), 0, "%s", err.msg);
	r.has[0][1] = false;
	check_one(db, "ix", &r, &c, NULL);
	cr_assert_eq(vela_del(db, "d:2", 3, NULL, &err), 0, "%s", err.msg);
	r.exists[2] = false;
	check_one(db, "ix", &r, &b, NULL);
	cr_assert_eq(stats_of(db, "ix", 0).postings, 0);
	vela_db_close(db);
}

Test(tagidx, aborted_batch_leaves_index)
{
	static ref_t r;
	memset(&r, 0, sizeof(r));
	test_rng_t g = test_rng(3);
	vela_db_t *db = db_open_ok(dir, 0);
	index_make(db, "ix", "t");
	batch_random(db, &r, &g, NDOCS, false);
	check_random(db, "ix", &r, &g, 16); /* built */
	uint64_t p[NFIELDS];
	for (uint32_t f = 0; f < NFIELDS; f++)
		p[f] = stats_of(db, "ix", f).postings;
	for (int i = 0; i < 5; i++) {
		batch_random(db, &r, &g, 200, true);
		for (uint32_t f = 0; f < NFIELDS; f++)
			cr_assert_eq(stats_of(db, "ix", f).postings, p[f]);
		check_random(db, "ix", &r, &g, 8);
	}
	vela_db_close(db);
}

Test(tagidx, reopen_rebuilds_lazily)
{
	static ref_t r;
	memset(&r, 0, sizeof(r));
	test_rng_t g = test_rng(11);
	vela_db_t *db = db_open_ok(dir, 0);
	index_make(db, "ix", "t");
	batch_random(db, &r, &g, NDOCS, false);
	check_random(db, "ix", &r, &g, 16);
	batch_random(db, &r, &g, 100, false);
	vela_db_close(db);
	db = db_open_ok(dir, 0);
	cr_assert_not(stats_of(db, "ix", 0).built);
	vela_index_info_t info;
	vela_err_t err = {0};
	cr_assert_eq(vela_index_info(db, "ix", &info, &err), 0);
	cr_assert_eq(info.tag_bytes, 0);
	batch_random(db, &r, &g, 100, false); /* ignored by the unbuilt index */
	check_random(db, "ix", &r, &g, 30);
	cr_assert(stats_of(db, "ix", 0).built);
	for (uint32_t f = 0; f < NFIELDS; f++)
		cr_assert_eq(stats_of(db, "ix", f).postings, ref_postings(&r, f), "field %u", f);
	vela_db_close(db);
}

Test(tagidx, dropindex_then_recreate)
{
	static ref_t r;
	memset(&r, 0, sizeof(r));
	test_rng_t g = test_rng(5);
	vela_db_t *db = db_open_ok(dir, 0);
	index_make(db, "ix", "t");
	batch_random(db, &r, &g, NDOCS, false);
	check_random(db, "ix", &r, &g, 16);
	vela_err_t err = {0};
	cr_assert_eq(vela_index_drop(db, "ix", false, &err), 0, "%s", err.msg);
	/* the same name over another hash field: query name t reads field u's
	 * hash values, split on ',' as field t splits */
	index_make(db, "ix", "u");
	cr_assert_not(stats_of(db, "ix", 0).built);
	static ref_t r2;
	r2 = r;
	for (uint32_t d = 0; d < NDOCS; d++) {
		r2.has[0][d] = r.has[1][d];
		memcpy(r2.v[0][d], r.v[1][d], VAL_MAX);
	}
	for (int i = 0; i < 30; i++) {
		clause_t q = clause_draw(&g);
		check_one(db, "ix", q.f == 0 ? &r2 : &r, &q, &g);
	}
	vela_db_close(db);
}

typedef struct conc {
	vela_db_t *db;
	clause_t q[10];
	char text[10][800];
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

/* Searches that start together build each index once, and all agree. */
Test(tagidx, concurrent_first_clauses)
{
	static ref_t r;
	memset(&r, 0, sizeof(r));
	test_rng_t g = test_rng(9);
	vela_db_t *db = db_open_ok(dir, 0);
	index_make(db, "ix", "t");
	batch_random(db, &r, &g, 2 * NDOCS, false);
	pthread_t th[4];
	static conc_t c[4];
	for (int i = 0; i < 4; i++) {
		c[i].db = db;
		for (int j = 0; j < 10; j++) {
			c[i].q[j] = clause_draw(&g);
			query_fmt(&c[i].q[j], &g, c[i].text[j], sizeof(c[i].text[j]));
		}
	}
	for (int i = 0; i < 4; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, conc_run, &c[i]), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < 4; i++)
		for (int j = 0; j < 10; j++) {
			cr_assert_eq(c[i].rc[j], 0, "%s", c[i].text[j]);
			result_check(c[i].res[j], &r, &c[i].q[j], c[i].text[j]);
			vela_result_free(c[i].res[j]);
		}
	cr_assert(stats_of(db, "ix", 0).built);
	for (uint32_t f = 0; f < NFIELDS; f++)
		if (stats_of(db, "ix", f).built)
			cr_assert_eq(stats_of(db, "ix", f).postings, ref_postings(&r, f));
	vela_db_close(db);
}

/* A unique id as a tag: past the value budget the field is not built (or
 * is dropped when writes take it past), and answers from LMDB agree. */
Test(tagidx, value_budget_falls_back)
{
	cr_assert_eq(db_tagidx_values_max(0), VELA_EINVAL);
	cr_assert_eq(db_tagidx_values_max(DB_TAGIDX_VALUES_MAX + 1), VELA_EINVAL);
	cr_assert_eq(db_tagidx_values_max(64), 0);
	vela_db_t *db = db_open_ok(dir, 0);
	index_make(db, "ix", "t");
	vela_batch_t *b;
	vela_err_t err = {0};
	char key[32], id[32];
	/* field t: unique ids (300 values); field c: under the budget at first */
	cr_assert_eq(vela_batch_begin(db, &b, &err), 0);
	for (uint32_t d = 0; d < 300; d++) {
		key_of(d, key, sizeof(key));
		snprintf(id, sizeof(id), "id%u", d);
		char cv[32];
		snprintf(cv, sizeof(cv), "C%u", d % 40);
		vela_kv_t kv[2] = {{"t", 1, id, strlen(id)}, {"c", 1, cv, strlen(cv)}};
		cr_assert_eq(vela_batch_hset(b, key, strlen(key), kv, 2, NULL, &err), 0);
	}
	cr_assert_eq(vela_batch_commit(b, &err), 0, "%s", err.msg);
	for (int round = 0; round < 2; round++) {
		for (uint32_t d = 0; d < 300; d += 7) {
			char q[128];
			snprintf(q, sizeof(q), "@t:{id%u|id%u|nope|ID%u}", d, (d * 13) % 300, d + 1);
			vela_search_req_t req;
			test_req_ids(&req, "ix", q, NDOCS + 1);
			vela_result_t *res = NULL;
			cr_assert_eq(vela_search(db, &req, &res, &err), 0, "%s", err.msg);
			uint64_t want = 1 + (d != (d * 13) % 300) + (d + 1 < 300 && d + 1 != (d * 13) % 300);
			cr_assert_eq(res->total, want, "%s: %llu", q, (unsigned long long)res->total);
			vela_result_free(res);
		}
		db_tagidx_stats_t s = stats_of(db, "ix", 0);
		cr_assert_not(s.built);
		cr_assert_eq(s.over, 64);
	}
	/* c: 40 values, built; 60 more values take it past 64: dropped */
	vela_search_req_t req;
	vela_result_t *res = NULL;
	test_req_ids(&req, "ix", "@c:{C1|C2|c3}", NDOCS + 1);
	cr_assert_eq(vela_search(db, &req, &res, &err), 0, "%s", err.msg);
	cr_assert_eq(res->total, 16, "%llu", (unsigned long long)res->total); /* c3: case */
	vela_result_free(res);
	cr_assert(stats_of(db, "ix", 2).built);
	cr_assert_eq(stats_of(db, "ix", 2).values, 40);
	for (uint32_t d = 0; d < 60; d++) {
		char cv[32];
		key_of(d, key, sizeof(key));
		snprintf(cv, sizeof(cv), "N%u", d);
		cr_assert_eq(hset1(db, key, "c", cv, strlen(cv)), 0);
	}
	cr_assert_not(stats_of(db, "ix", 2).built);
	cr_assert_eq(stats_of(db, "ix", 2).over, 64);
	test_req_ids(&req, "ix", "@c:{N1|N59|C1|C39}", NDOCS + 1);
	cr_assert_eq(vela_search(db, &req, &res, &err), 0, "%s", err.msg);
	/* C1: docs 1, 41, 81, ... less doc 1 and 41 (rewritten): 8 - 2 = 6;
	 * C39: docs 39, 79, ... less 39: 7 - 1 = 6 */
	cr_assert_eq(res->total, 2 + 6 + 6, "%llu", (unsigned long long)res->total);
	vela_result_free(res);
	/* a larger budget: the next clause builds it again, with the same answer */
	cr_assert_eq(db_tagidx_values_max(1000), 0);
	cr_assert_eq(vela_search(db, &req, &res, &err), 0, "%s", err.msg);
	cr_assert_eq(res->total, 14);
	vela_result_free(res);
	cr_assert(stats_of(db, "ix", 2).built);
	cr_assert_eq(stats_of(db, "ix", 2).over, 0);
	vela_db_close(db);
}

/* Deleted values leave empty slots; a rehash at the budget drops them
 * instead of giving up on the field. */
Test(tagidx, churn_under_budget)
{
	cr_assert_eq(db_tagidx_values_max(64), 0);
	vela_db_t *db = db_open_ok(dir, 0);
	index_make(db, "ix", "t");
	char key[32], v[32], q[64];
	cr_assert_eq(hset1(db, "d:0", "t", "v0", 2), 0);
	vela_search_req_t req;
	vela_result_t *res = NULL;
	vela_err_t err = {0};
	test_req_ids(&req, "ix", "@t:{v0}", NDOCS + 1);
	cr_assert_eq(vela_search(db, &req, &res, &err), 0, "%s", err.msg);
	vela_result_free(res);
	/* 40 documents, each rewritten 25 times: the table (128 slots for 40
	 * live values) reaches the budget before its load limit */
	for (uint32_t i = 1; i < 1000; i++) {
		key_of(i % 40, key, sizeof(key));
		snprintf(v, sizeof(v), "v%u", i);
		cr_assert_eq(hset1(db, key, "t", v, strlen(v)), 0);
	}
	db_tagidx_stats_t s = stats_of(db, "ix", 0);
	cr_assert(s.built);
	cr_assert_eq(s.postings, 40);
	cr_assert_leq(s.values, 64);
	for (uint32_t i = 970; i < 1000; i++) { /* the last 40 written are live */
		snprintf(q, sizeof(q), "@t:{v%u|v%u}", i, i - 30);
		test_req_ids(&req, "ix", q, NDOCS + 1);
		cr_assert_eq(vela_search(db, &req, &res, &err), 0, "%s", err.msg);
		cr_assert_eq(res->total, 1 + (i - 30 >= 960), "%s", q);
		vela_result_free(res);
	}
	vela_db_close(db);
}
