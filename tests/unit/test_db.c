/* Engine API tests: Redis write semantics, indexing failures, errors that
 * lose nothing, persistence across reopen, kill -9 in the middle of a batch,
 * index drop, batch search == single search, readers during writes. */
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_db_util.h"

static char dir[64];

static void setup(void)
{
	tmpdir_make(dir, sizeof(dir));
}

static void teardown(void)
{
	tmpdir_remove(dir);
}

TestSuite(db, .init = setup, .fini = teardown, .timeout = 60);

/* idx over "doc:" with genre TAG, year NUMERIC, body TEXT, v VECTOR(2, L2). */
static void create_basic(vela_db_t *db, vela_metric_t metric)
{
	vela_field_def_t f[] = {
		{.name = "genre", .type = VELA_FIELD_TAG},
		{.name = "year", .type = VELA_FIELD_NUMERIC},
		{.name = "body", .type = VELA_FIELD_TEXT},
		{.name = "v", .type = VELA_FIELD_VECTOR, .dim = 2, .metric = metric},
	};
	const char *pre[] = {"doc:"};
	vela_index_def_t d = {.name = "idx", .prefixes = pre, .n_prefixes = 1, .fields = f,
			      .n_fields = 4};
	vela_err_t err;
	cr_assert_eq(vela_index_create(db, &d, &err), 0, "%s", err.msg);
}

static void put_doc(vela_db_t *db, const char *key, const char *genre, const char *year,
		    const char *body, float x, float y)
{
	float v[2] = {x, y};
	vela_kv_t kv[] = {{"genre", 5, genre, strlen(genre)}, {"year", 4, year, strlen(year)},
			  {"body", 4, body, strlen(body)}, {"v", 1, v, sizeof(v)}};
	vela_err_t err;
	size_t added;
	cr_assert_eq(vela_hset(db, key, strlen(key), kv, 4, &added, &err), 0, "%s", err.msg);
}

static vela_result_t *search(vela_db_t *db, const char *q, const void *blob, size_t bl)
{
	vela_kv_t p = {"B", 1, blob, bl};
	vela_search_req_t r = {.index = "idx", .query = q, .params = &p, .n_params = blob ? 1 : 0,
			       .limit = 100};
	vela_result_t *res = NULL;
	vela_err_t err;
	int rc = vela_search(db, &r, &res, &err);
	cr_assert_eq(rc, 0, "%s: %s", q, err.msg);
	return res;
}

static int search_err(vela_db_t *db, const char *q, vela_err_t *err)
{
	vela_search_req_t r = {.index = "idx", .query = q};
	vela_result_t *res = NULL;
	int rc = vela_search(db, &r, &res, err);
	cr_assert_null(res);
	return rc;
}

/* The keys of a result joined by spaces, for compact assertions. */
static const char *keys_of(const vela_result_t *r)
{
	static char buf[1024];
	buf[0] = '\0';
	for (size_t i = 0; i < r->n_hits; i++) {
		strcat(buf, i ? " " : "");
		strcat(buf, r->hits[i].key);
	}
	return buf;
}

static void seed(vela_db_t *db)
{
	put_doc(db, "doc:1", "Jazz, Blues", "1999", "a quiet night", 0, 0);
	put_doc(db, "doc:2", "rock", "2005", "loud_guitars and drums", 1, 0);
	put_doc(db, "doc:3", "jazz", "2010", "Night train", 0, 2);
	put_doc(db, "doc:4", "pop", "2010.5", "sunny day", 3, 3);
	put_doc(db, "other:1", "jazz", "2000", "not indexed", 0, 0);
}

Test(db, filters_and_knn)
{
	vela_db_t *db = db_open_ok(dir, 0);
	create_basic(db, VELA_METRIC_L2);
	seed(db);
	struct { const char *q, *want; } cases[] = {
		{"*", "doc:1 doc:2 doc:3 doc:4"},
		{"@genre:{jazz}", "doc:1 doc:3"},
		{"@genre:{JAZZ | pop}", "doc:1 doc:3 doc:4"},
		{"@genre:{blues}", "doc:1"},
		{"@year:[2005 2010]", "doc:2 doc:3"},
		{"@year:[(2005 +inf]", "doc:3 doc:4"},
		{"@year:[-inf (2005]", "doc:1"},
		{"@year>=2010", "doc:3 doc:4"},
		{"@body:night", "doc:1 doc:3"},
		{"@body:loud_guitars", "doc:2"},
		{"night", "doc:1 doc:3"},
		{"-@genre:{jazz}", "doc:2 doc:4"},
		{"@genre:{jazz} | @genre:{pop}", "doc:1 doc:3 doc:4"},
		{"@genre:{jazz} @year:[2000 inf]", "doc:3"},
		{"@genre:{nothing}", ""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		vela_result_t *r = search(db, cases[i].q, NULL, 0);
		cr_expect_str_eq(keys_of(r), cases[i].want, "query %s", cases[i].q);
		vela_result_free(r);
	}
	float q[2] = {0, 0};
	vela_result_t *r = search(db, "*=>[KNN 3 @v $B AS dist]", q, sizeof(q));
	cr_assert_str_eq(keys_of(r), "doc:1 doc:2 doc:3");
	cr_assert_eq(r->total, 3);
	cr_assert_float_eq(r->hits[2].dist, 4.0, 1e-6); /* squared L2 */
	cr_assert_str_eq(r->dist_name, "dist");
	cr_assert_str_eq(r->hits[1].fields[0].name, "dist");
	cr_assert_str_eq(r->hits[1].fields[0].value, "1");
	vela_result_free(r);
	r = search(db, "@genre:{jazz}=>[KNN 10 @v $B]", q, sizeof(q));
	cr_assert_str_eq(keys_of(r), "doc:1 doc:3");
	cr_assert_str_eq(r->dist_name, "__v_score");
	vela_result_free(r);
	vela_db_close(db);
}

Test(db, limit_return_nocontent)
{
	vela_db_t *db = db_open_ok(dir, 0);
	create_basic(db, VELA_METRIC_L2);
	seed(db);
	const char *ret[] = {"year", "missing"};
	vela_search_req_t req = {.index = "idx", .query = "*", .offset = 1, .limit = 2,
				 .return_fields = ret, .n_return = 2};
	vela_result_t *r;
	vela_err_t err;
	cr_assert_eq(vela_search(db, &req, &r, &err), 0, "%s", err.msg);
	cr_assert_eq(r->total, 4);
	cr_assert_str_eq(keys_of(r), "doc:2 doc:3");
	cr_assert_eq(r->hits[0].n_fields, 1, "missing fields are omitted");
	cr_assert_str_eq(r->hits[0].fields[0].value, "2005");
	vela_result_free(r);
	req = (vela_search_req_t){.index = "idx", .query = "*", .limit = 0, .limit_set = true};
	cr_assert_eq(vela_search(db, &req, &r, &err), 0);
	cr_assert_eq(r->total, 4);
	cr_assert_eq(r->n_hits, 0);
	vela_result_free(r);
	req = (vela_search_req_t){.index = "idx", .query = "*", .nocontent = true};
	cr_assert_eq(vela_search(db, &req, &r, &err), 0);
	cr_assert_eq(r->n_hits, 4);
	cr_assert_eq(r->hits[0].n_fields, 0);
	vela_result_free(r);
	vela_db_close(db);
}

Test(db, hset_hdel_del_semantics_and_reindex)
{
	vela_db_t *db = db_open_ok(dir, 0);
	create_basic(db, VELA_METRIC_L2);
	vela_kv_t kv[] = {{"genre", 5, "jazz", 4}, {"year", 4, "2000", 4}, {"genre", 5, "rock", 4}};
	size_t n;
	vela_err_t err;
	cr_assert_eq(vela_hset(db, "doc:1", 5, kv, 3, &n, &err), 0);
	cr_assert_eq(n, 2, "duplicate names in one HSET count once");
	cr_assert_eq(vela_hset(db, "doc:1", 5, kv, 1, &n, &err), 0);
	cr_assert_eq(n, 0);
	vela_result_t *r = search(db, "@genre:{jazz}", NULL, 0);
	cr_assert_str_eq(keys_of(r), "doc:1", "re-indexed with the new value");
	vela_result_free(r);
	r = search(db, "@genre:{rock}", NULL, 0);
	cr_assert_str_eq(keys_of(r), "", "old tag value left the postings");
	vela_result_free(r);

	vela_kv_t del[] = {{"year", 4, NULL, 0}, {"nope", 4, NULL, 0}};
	cr_assert_eq(vela_hdel(db, "doc:1", 5, del, 2, &n, &err), 0);
	cr_assert_eq(n, 1);
	r = search(db, "@year:[-inf inf]", NULL, 0);
	cr_assert_str_eq(keys_of(r), "");
	vela_result_free(r);
	vela_kv_t del2[] = {{"genre", 5, NULL, 0}};
	cr_assert_eq(vela_hdel(db, "doc:1", 5, del2, 1, &n, &err), 0);
	vela_doc_t *d;
	cr_assert_eq(vela_get(db, "doc:1", 5, &d, &err), VELA_ENOTFOUND, "emptied hash is deleted");
	r = search(db, "*", NULL, 0);
	cr_assert_eq(r->total, 0);
	vela_result_free(r);

	put_doc(db, "doc:2", "a", "1", "x", 1, 1);
	int deleted = 0;
	cr_assert_eq(vela_del(db, "doc:2", 5, &deleted, &err), 0);
	cr_assert_eq(deleted, 1);
	cr_assert_eq(vela_del(db, "doc:2", 5, &deleted, &err), 0);
	cr_assert_eq(deleted, 0);
	float q[2] = {1, 1};
	r = search(db, "*=>[KNN 5 @v $B]", q, sizeof(q));
	cr_assert_eq(r->total, 0, "deleted vectors leave the index");
	vela_result_free(r);
	vela_db_close(db);
}

Test(db, indexing_failures_are_counted_not_errors)
{
	vela_db_t *db = db_open_ok(dir, 0);
	create_basic(db, VELA_METRIC_L2);
	float v3[3] = {1, 2, 3};
	vela_err_t err;
	cr_assert_eq(hset1(db, "doc:bad", "v", v3, sizeof(v3)), 0);
	cr_assert_eq(hset1(db, "doc:bad2", "year", "soon", 4), 0);
	float nan2[2] = {NAN, 1};
	cr_assert_eq(hset1(db, "doc:bad3", "v", nan2, sizeof(nan2)), 0);
	vela_index_info_t info;
	cr_assert_eq(vela_index_info(db, "idx", &info, &err), 0);
	cr_assert_eq(info.indexing_failures, 3);
	cr_assert_eq(info.num_docs, 0);
	vela_doc_t *d;
	cr_assert_eq(vela_get(db, "doc:bad", 7, &d, &err), 0, "the write itself succeeded");
	cr_assert_eq(d->fields[0].value_len, sizeof(v3));
	vela_doc_free(d);
	/* Fixing the document indexes it again. */
	float v2[2] = {1, 2};
	cr_assert_eq(hset1(db, "doc:bad", "v", v2, sizeof(v2)), 0);
	cr_assert_eq(vela_index_info(db, "idx", &info, &err), 0);
	cr_assert_eq(info.num_docs, 1);
	vela_db_close(db);
	db = db_open_ok(dir, 0);
	cr_assert_eq(vela_index_info(db, "idx", &info, &err), 0);
	cr_assert_eq(info.indexing_failures, 3, "counter persists");
	vela_db_close(db);
}

Test(db, bad_schemas_are_refused)
{
	vela_db_t *db = db_open_ok(dir, 0);
	vela_err_t err;
	vela_field_def_t f = {.name = "v", .type = VELA_FIELD_VECTOR, .dim = 0};
	vela_index_def_t d = {.name = "i", .fields = &f, .n_fields = 1};
	cr_assert_eq(vela_index_create(db, &d, &err), VELA_EDIM);
	cr_assert(strstr(err.msg, "DIM") != NULL, "%s", err.msg);
	f.dim = VELA_DIM_MAX + 1;
	cr_assert_eq(vela_index_create(db, &d, &err), VELA_EDIM);
	f.dim = 16384; /* well past pgvector's 2,000 */
	cr_assert_eq(vela_index_create(db, &d, &err), 0, "%s", err.msg);
	cr_assert_eq(vela_index_create(db, &d, &err), VELA_EEXISTS);
	cr_assert_str_eq(err.msg, "Index already exists");
	vela_field_def_t two[] = {{.name = "a", .type = VELA_FIELD_TAG},
				  {.name = "a", .type = VELA_FIELD_NUMERIC}};
	vela_index_def_t d2 = {.name = "j", .fields = two, .n_fields = 2};
	cr_assert_eq(vela_index_create(db, &d2, &err), VELA_EINVAL);
	cr_assert_str_eq(err.msg, "Duplicate field in schema - a");
	char **names;
	size_t n;
	cr_assert_eq(vela_index_list(db, &names, &n), 0);
	cr_assert_eq(n, 1, "failed creates left nothing");
	vela_strv_free(names, n);
	vela_db_close(db);
}

Test(db, bad_queries_name_the_problem)
{
	vela_db_t *db = db_open_ok(dir, 0);
	create_basic(db, VELA_METRIC_L2);
	vela_err_t err;
	cr_assert_eq(search_err(db, "@colr:{red}", &err), VELA_ENOTFOUND);
	cr_assert(strstr(err.msg, "colr") != NULL, "%s", err.msg);
	cr_assert_neq(search_err(db, "@year:{red}", &err), 0);
	cr_assert(strstr(err.msg, "year") != NULL, "%s", err.msg);
	cr_assert_eq(search_err(db, "@genre:{jazz", &err), VELA_ESYNTAX);
	cr_assert(strstr(err.msg, "offset") != NULL, "%s", err.msg);
	cr_assert_neq(search_err(db, "*=>[KNN 1000000000 @v $B]", &err), 0);
	vela_search_req_t r = {.index = "nope", .query = "*"};
	vela_result_t *res;
	cr_assert_eq(vela_search(db, &r, &res, &err), VELA_ENOTFOUND);
	float v3[3] = {0};
	vela_kv_t p = {"B", 1, v3, sizeof(v3)};
	r = (vela_search_req_t){.index = "idx", .query = "*=>[KNN 2 @v $B]", .params = &p, .n_params = 1};
	cr_assert_neq(vela_search(db, &r, &res, &err), 0);
	cr_assert(strstr(err.msg, "blob size (12)") != NULL, "%s", err.msg);
	float nanq[2] = {NAN, 0};
	p = (vela_kv_t){"B", 1, nanq, sizeof(nanq)};
	cr_assert_eq(vela_search(db, &r, &res, &err), VELA_ETYPE);
	cr_assert(strstr(err.msg, "NaN") != NULL, "%s", err.msg);
	vela_db_close(db);
}

Test(db, key_limits)
{
	vela_db_t *db = db_open_ok(dir, 0);
	char key[VELA_KEY_MAX + 2];
	memset(key, 'k', sizeof(key));
	vela_kv_t kv = {"a", 1, "b", 1};
	vela_err_t err;
	cr_assert_eq(vela_hset(db, key, VELA_KEY_MAX, &kv, 1, NULL, &err), 0, "%s", err.msg);
	cr_assert_eq(vela_hset(db, key, VELA_KEY_MAX + 1, &kv, 1, NULL, &err), VELA_ELIMIT);
	cr_assert_eq(vela_hset(db, key, 0, &kv, 1, NULL, &err), VELA_EINVAL);
	cr_assert_eq(vela_db_size(db), 1);
	vela_db_close(db);
}

Test(db, persistence_across_reopen)
{
	vela_db_t *db = db_open_ok(dir, 0);
	create_basic(db, VELA_METRIC_COSINE);
	seed(db);
	float q[2] = {1, 0.5f};
	vela_result_t *a = search(db, "@genre:{jazz|rock}=>[KNN 3 @v $B AS d]", q, sizeof(q));
	char before[1024];
	strcpy(before, keys_of(a));
	vela_db_close(db);
	db = db_open_ok(dir, 0);
	vela_result_t *b = search(db, "@genre:{jazz|rock}=>[KNN 3 @v $B AS d]", q, sizeof(q));
	cr_assert_str_eq(keys_of(b), before);
	cr_assert_eq(a->n_hits, b->n_hits);
	for (size_t i = 0; i < a->n_hits; i++)
		cr_assert_eq(a->hits[i].dist, b->hits[i].dist);
	vela_result_free(a);
	vela_result_free(b);
	vela_db_close(db);
}

Test(db, drop_index_keeps_or_deletes_docs)
{
	vela_db_t *db = db_open_ok(dir, 0);
	create_basic(db, VELA_METRIC_L2);
	seed(db);
	vela_err_t err;
	cr_assert_eq(vela_index_drop(db, "idx", false, &err), 0);
	cr_assert_eq(vela_db_size(db), 5);
	cr_assert_eq(vela_index_drop(db, "idx", false, &err), VELA_ENOTFOUND);
	create_basic(db, VELA_METRIC_L2); /* initial scan re-indexes the 4 docs */
	vela_index_info_t info;
	cr_assert_eq(vela_index_info(db, "idx", &info, &err), 0);
	cr_assert_eq(info.num_docs, 4);
	cr_assert_eq(vela_index_drop(db, "idx", true, &err), 0, "%s", err.msg);
	cr_assert_eq(vela_db_size(db), 1, "DD deleted the indexed documents only");
	vela_db_close(db);
	db = db_open_ok(dir, 0);
	char **names;
	size_t n;
	cr_assert_eq(vela_index_list(db, &names, &n), 0);
	cr_assert_eq(n, 0);
	vela_strv_free(names, n);
	vela_db_close(db);
}

Test(db, batch_search_equals_single)
{
	vela_db_t *db = db_open_ok(dir, 0);
	create_basic(db, VELA_METRIC_L2);
	srand(3);
	for (int i = 0; i < 300; i++) {
		char key[32], year[16];
		snprintf(key, sizeof(key), "doc:%d", i);
		snprintf(year, sizeof(year), "%d", 1990 + i % 30);
		put_doc(db, key, i % 3 ? "a" : "b", year, "t", (float)(rand() % 50), (float)(rand() % 50));
	}
	enum { NQ = 12 };
	float qs[NQ][2];
	vela_kv_t ps[NQ];
	vela_search_req_t reqs[NQ];
	const char *queries[] = {"*=>[KNN 5 @v $B]", "@genre:{b}=>[KNN 7 @v $B AS d]",
				 "@year:[2000 2005]=>[KNN 3 @v $B]", "@genre:{zzz}=>[KNN 3 @v $B]"};
	for (int i = 0; i < NQ; i++) {
		qs[i][0] = (float)(rand() % 50);
		qs[i][1] = (float)(rand() % 50);
		ps[i] = (vela_kv_t){"B", 1, qs[i], sizeof(qs[i])};
		reqs[i] = (vela_search_req_t){.index = "idx", .query = queries[i % 4], .params = &ps[i],
					      .n_params = 1, .nocontent = true};
	}
	vela_result_t *outs[NQ];
	vela_err_t errs[NQ];
	cr_assert_eq(vela_search_batch(db, reqs, NQ, outs, errs), 0);
	for (int i = 0; i < NQ; i++) {
		vela_result_t *one;
		vela_err_t err;
		cr_assert_eq(vela_search(db, &reqs[i], &one, &err), 0);
		cr_assert_eq(one->total, outs[i]->total);
		char a[1024];
		strcpy(a, keys_of(one));
		cr_assert_str_eq(keys_of(outs[i]), a, "query %d", i);
		vela_result_free(one);
		vela_result_free(outs[i]);
	}
	vela_db_close(db);
}

Test(db, map_full_loses_nothing_and_recovers)
{
	vela_db_t *db = db_open_ok(dir, VELA_MAP_SIZE_MIN);
	create_basic(db, VELA_METRIC_L2);
	put_doc(db, "doc:keep", "a", "1", "x", 1, 1);
	static char big[100000];
	memset(big, 'x', sizeof(big));
	vela_batch_t *b;
	vela_err_t err;
	cr_assert_eq(vela_batch_begin(db, &b, &err), 0);
	int rc = 0, ok = 0;
	for (int i = 0; i < 100 && rc == 0; i++) {
		char key[32];
		snprintf(key, sizeof(key), "doc:big%d", i);
		vela_kv_t kv[] = {{"body", 4, big, sizeof(big)}, {"genre", 5, "g", 1}};
		rc = vela_batch_hset(b, key, strlen(key), kv, 2, NULL, &err);
		ok += rc == 0;
	}
	cr_assert_eq(rc, VELA_EMAPFULL);
	cr_assert(strstr(err.msg, "OOM") != NULL, "%s", err.msg);
	/* The failed write left nothing; the earlier ones in the batch commit. */
	cr_assert_eq(vela_batch_commit(b, &err), 0, "%s", err.msg);
	vela_result_t *r = search(db, "@genre:{g}", NULL, 0);
	cr_assert_eq(r->total, (uint64_t)ok);
	vela_result_free(r);
	cr_assert_eq(vela_db_size(db), (uint64_t)ok + 1);
	/* Reads still work, and a larger map takes more writes. */
	cr_assert_eq(vela_db_set_map_size(db, 64ull << 20, &err), 0, "%s", err.msg);
	vela_kv_t kv[] = {{"body", 4, big, sizeof(big)}};
	cr_assert_eq(vela_hset(db, "doc:after", 9, kv, 1, NULL, &err), 0, "%s", err.msg);
	vela_db_close(db);
	db = db_open_ok(dir, 64ull << 20);
	cr_assert_eq(vela_db_size(db), (uint64_t)ok + 2);
	vela_db_close(db);
}

/* A child commits numbered batches of 10 writes each and reports each commit
 * on a pipe; the parent SIGKILLs it mid-stream, then checks every batch is
 * all or nothing and every acknowledged batch is there. */
Test(db, kill_mid_batch_keeps_committed_only)
{
	vela_db_t *db = db_open_ok(dir, 0);
	create_basic(db, VELA_METRIC_L2);
	vela_db_close(db);
	int fd[2];
	cr_assert_eq(pipe(fd), 0);
	pid_t pid = fork();
	if (pid == 0) {
		close(fd[0]);
		vela_db_t *c = db_open_ok(dir, 0);
		for (int i = 0;; i++) {
			vela_batch_t *b;
			vela_err_t err;
			if (vela_batch_begin(c, &b, &err))
				_exit(2);
			for (int j = 0; j < 10; j++) {
				char key[32];
				float v[2] = {(float)i, (float)j};
				snprintf(key, sizeof(key), "doc:%d:%d", i, j);
				vela_kv_t kv[] = {{"v", 1, v, sizeof(v)}, {"genre", 5, "k", 1}};
				if (vela_batch_hset(b, key, strlen(key), kv, 2, NULL, &err))
					_exit(3);
			}
			if (vela_batch_commit(b, &err))
				_exit(4);
			if (write(fd[1], &i, sizeof(i)) != sizeof(i))
				_exit(5);
		}
	}
	close(fd[1]);
	int acked = -1, i;
	while (acked < 25 && read(fd[0], &i, sizeof(i)) == sizeof(i))
		acked = i;
	usleep((useconds_t)(rand() % 3000));
	kill(pid, SIGKILL);
	int st;
	waitpid(pid, &st, 0);
	cr_assert(WIFSIGNALED(st), "child exited early with %d", WEXITSTATUS(st));
	while (read(fd[0], &i, sizeof(i)) == sizeof(i))
		acked = i;
	close(fd[0]);

	db = db_open_ok(dir, 0);
	vela_result_t *r = search(db, "@genre:{k}", NULL, 0);
	uint64_t total = r->total;
	vela_result_free(r);
	cr_assert_eq(total % 10, 0, "a batch was partially committed (%llu docs)",
		     (unsigned long long)total);
	cr_assert_geq(total, (uint64_t)(acked + 1) * 10, "acknowledged batches lost");
	cr_assert_eq(vela_db_size(db), total, "documents and index agree");
	/* Every batch present is complete and searchable by its vectors. */
	float q[2] = {0, 0};
	r = search(db, "*=>[KNN 10 @v $B]", q, sizeof(q));
	cr_assert_eq(r->n_hits, 10);
	vela_result_free(r);
	vela_db_close(db);
}

struct reader_arg {
	vela_db_t *db;
	int bad;
	volatile int *stop;
};

static void *reader(void *p)
{
	struct reader_arg *a = p;
	float q[2] = {5, 5};
	vela_kv_t prm = {"B", 1, q, sizeof(q)};
	while (!*a->stop) {
		vela_search_req_t r = {.index = "idx", .query = "*=>[KNN 5 @v $B]", .params = &prm,
				       .n_params = 1};
		vela_result_t *res;
		vela_err_t err;
		if (vela_search(a->db, &r, &res, &err)) {
			a->bad++;
			continue;
		}
		/* Every row is a complete document: writes are all-or-nothing. */
		for (size_t i = 0; i < res->n_hits; i++)
			a->bad += res->hits[i].n_fields != 5;
		vela_result_free(res);
	}
	return NULL;
}

Test(db, readers_run_during_writes)
{
	vela_db_t *db = db_open_ok(dir, 0);
	create_basic(db, VELA_METRIC_L2);
	volatile int stop = 0;
	struct reader_arg a[2] = {{db, 0, &stop}, {db, 0, &stop}};
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		pthread_create(&th[i], NULL, reader, &a[i]);
	for (int i = 0; i < 200; i++) {
		char key[32];
		snprintf(key, sizeof(key), "doc:%d", i % 50);
		put_doc(db, key, "a", "1", "x", (float)(i % 13), (float)(i % 7));
		if (i % 3 == 0) {
			int d;
			vela_err_t err;
			snprintf(key, sizeof(key), "doc:%d", (i * 7) % 50);
			vela_del(db, key, strlen(key), &d, &err);
		}
	}
	stop = 1;
	for (int i = 0; i < 2; i++) {
		pthread_join(th[i], NULL);
		cr_assert_eq(a[i].bad, 0);
	}
	vela_db_close(db);
}

Test(db, newer_format_directory_is_refused)
{
	vela_db_t *db = db_open_ok(dir, 0);
	vela_db_close(db);
	if (system("command -v mdb_load >/dev/null") != 0)
		cr_skip_test("mdb_load (lmdb-utils) not installed");
	/* Bump the stored format version with LMDB's own loader (an independent
	 * writer): key "version" -> big-endian 99. */
	char path[128], cmd[300];
	snprintf(path, sizeof(path), "%s/meta.txt", dir);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	fprintf(f, "VERSION=3\nformat=bytevalue\ntype=btree\nHEADER=END\n"
		   " 76657273696f6e\n 0000000000000063\nDATA=END\n");
	fclose(f);
	snprintf(cmd, sizeof(cmd), "mdb_load -s meta -f %s %s", path, dir);
	cr_assert_eq(system(cmd), 0);
	vela_err_t err;
	cr_assert_eq(vela_db_open(dir, NULL, &db, &err), VELA_EVERSION);
	cr_assert(strstr(err.msg, "newer") != NULL, "%s", err.msg);
}

/* ---- regressions from review ---- */

struct spin_arg {
	vela_db_t *db;
	volatile int *stop;
};

static void *spin_search(void *p)
{
	struct spin_arg *a = p;
	float q[2] = {1, 1};
	vela_kv_t prm = {"B", 1, q, sizeof(q)};
	while (!*a->stop) {
		vela_search_req_t r = {.index = "idx", .query = "*=>[KNN 5 @v $B]", .params = &prm,
				       .n_params = 1};
		vela_result_t *res;
		vela_err_t err;
		if (vela_search(a->db, &r, &res, &err) == 0)
			vela_result_free(res);
	}
	return NULL;
}

/* With a reader-preferring lock, 6 searching threads starved every write. */
Test(db, writes_progress_under_search_load)
{
	vela_db_t *db = db_open_ok(dir, 0);
	create_basic(db, VELA_METRIC_L2);
	for (int i = 0; i < 2000; i++) {
		char key[32];
		snprintf(key, sizeof(key), "doc:%d", i);
		put_doc(db, key, "a", "1", "x", (float)(i % 17), (float)(i % 23));
	}
	volatile int stop = 0;
	struct spin_arg a = {db, &stop};
	pthread_t th[6];
	for (int i = 0; i < 6; i++)
		pthread_create(&th[i], NULL, spin_search, &a);
	for (int i = 0; i < 20; i++)
		put_doc(db, "doc:new", "b", "2", "y", (float)i, 0);
	stop = 1;
	for (int i = 0; i < 6; i++)
		pthread_join(th[i], NULL);
	vela_db_close(db);
}

struct other_arg {
	vela_batch_t *b;
	int rc;
};

static void *commit_elsewhere(void *p)
{
	struct other_arg *a = p;
	vela_err_t err;
	a->rc = vela_batch_commit(a->b, &err);
	return NULL;
}

Test(db, batch_is_bound_to_its_thread)
{
	vela_db_t *db = db_open_ok(dir, 0);
	vela_batch_t *b;
	vela_err_t err;
	cr_assert_eq(vela_batch_begin(db, &b, &err), 0);
	vela_kv_t kv = {"a", 1, "1", 1};
	cr_assert_eq(vela_batch_hset(b, "k", 1, &kv, 1, NULL, &err), 0);
	struct other_arg a = {b, 0};
	pthread_t t;
	pthread_create(&t, NULL, commit_elsewhere, &a);
	pthread_join(t, NULL);
	cr_assert_eq(a.rc, VELA_EINVAL);
	cr_assert_eq(vela_batch_commit(b, &err), 0, "%s", err.msg);
	cr_assert_eq(vela_hset(db, "k2", 2, &kv, 1, NULL, &err), 0, "later writes proceed");
	cr_assert_eq(vela_db_size(db), 2);
	vela_db_close(db);
}

Test(db, reopen_keeps_a_grown_map)
{
	vela_db_t *db = db_open_ok(dir, 2u << 20);
	vela_err_t err;
	cr_assert_eq(vela_db_set_map_size(db, 64ull << 20, &err), 0, "%s", err.msg);
	static char big[200000];
	for (int i = 0; i < 30; i++) {
		char key[16];
		snprintf(key, sizeof(key), "b%d", i);
		vela_kv_t kv = {"f", 1, big, sizeof(big)};
		cr_assert_eq(vela_hset(db, key, strlen(key), &kv, 1, NULL, &err), 0, "%s", err.msg);
	}
	vela_db_close(db);
	db = db_open_ok(dir, 2u << 20);
	size_t map, used;
	vela_db_map_usage(db, &map, &used);
	cr_assert_geq(map, 64ull << 20, "map shrank to %zu on reopen", map);
	vela_kv_t kv = {"f", 1, big, sizeof(big)};
	cr_assert_eq(vela_hset(db, "more", 4, &kv, 1, NULL, &err), 0, "%s", err.msg);
	vela_db_close(db);
}

Test(db, overlapping_prefixes_count_one_failure)
{
	vela_db_t *db = db_open_ok(dir, 0);
	cr_assert_eq(hset1(db, "ab:1", "n", "abc", 3), 0);
	cr_assert_eq(hset1(db, "ab:2", "n", "5", 1), 0);
	vela_field_def_t f = {.name = "n", .type = VELA_FIELD_NUMERIC};
	const char *pre[] = {"a", "ab"};
	vela_index_def_t d = {.name = "o", .prefixes = pre, .n_prefixes = 2, .fields = &f, .n_fields = 1};
	vela_err_t err;
	cr_assert_eq(vela_index_create(db, &d, &err), 0, "%s", err.msg);
	vela_index_info_t info;
	cr_assert_eq(vela_index_info(db, "o", &info, &err), 0);
	cr_assert_eq(info.num_docs, 1);
	cr_assert_eq(info.indexing_failures, 1);
	vela_db_close(db);
}

Test(db, open_errors_are_vela_codes)
{
	vela_db_t *db;
	vela_err_t err;
	int rc = vela_db_open("/etc/passwd/x", NULL, &db, &err);
	cr_assert_lt(rc, 0, "rc %d", rc);
	cr_assert(strstr(err.msg, "/etc/passwd/x") != NULL, "%s", err.msg);
}

Test(db, exclusive_infinite_bounds_match_nothing)
{
	vela_db_t *db = db_open_ok(dir, 0);
	create_basic(db, VELA_METRIC_L2);
	cr_assert_eq(hset1(db, "doc:i", "year", "inf", 3), 0);
	cr_assert_eq(hset1(db, "doc:m", "year", "-inf", 4), 0);
	vela_result_t *r = search(db, "@year:[(inf +inf]", NULL, 0);
	cr_assert_eq(r->total, 0);
	vela_result_free(r);
	r = search(db, "@year:[-inf (-inf]", NULL, 0);
	cr_assert_eq(r->total, 0);
	vela_result_free(r);
	r = search(db, "@year:[-inf +inf]", NULL, 0);
	cr_assert_eq(r->total, 2);
	vela_result_free(r);
	vela_db_close(db);
}
