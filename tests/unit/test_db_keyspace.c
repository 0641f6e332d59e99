/* Keyspace tests: strings, key types, WRONGTYPE, expiry (lazy and active,
 * with documents leaving their indexes), SCAN cursors, FLUSHALL, HSETNX. */
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

TestSuite(keyspace, .init = setup, .fini = teardown, .timeout = 60);

static int set1(vela_db_t *db, const char *k, const char *v, unsigned flags, int64_t at, int *done)
{
	vela_batch_t *b;
	vela_err_t err;
	cr_assert_eq(vela_batch_begin(db, &b, &err), 0);
	int rc = vela_batch_set(b, k, strlen(k), v, strlen(v), flags, at, done, &err);
	cr_assert_eq(vela_batch_commit(b, &err), 0, "%s", err.msg);
	return rc;
}

static int expire1(vela_db_t *db, const char *k, int64_t at, int *applied)
{
	vela_batch_t *b;
	vela_err_t err;
	cr_assert_eq(vela_batch_begin(db, &b, &err), 0);
	int rc = vela_batch_expire(b, k, strlen(k), at, applied, &err);
	cr_assert_eq(vela_batch_commit(b, &err), 0, "%s", err.msg);
	return rc;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void create_idx(vela_db_t *db)
{
	vela_field_def_t f = {.name = "t", .type = VELA_FIELD_TAG};
	vela_index_def_t d = {.name = "i", .fields = &f, .n_fields = 1};
	vela_err_t err;
	cr_assert_eq(vela_index_create(db, &d, &err), 0, "%s", err.msg);
}

static uint64_t idx_docs(vela_db_t *db)
{
	vela_index_info_t info;
	vela_err_t err;
	cr_assert_eq(vela_index_info(db, "i", &info, &err), 0);
	return info.num_docs;
}

Test(keyspace, strings_and_types)
{
	vela_db_t *db = db_open_ok(dir, 0);
	int done;
	cr_assert_eq(set1(db, "s", "v1", 0, 0, &done), 0);
	cr_assert_eq(done, 1);
	cr_assert_eq(set1(db, "s", "v2", VELA_SET_NX, 0, &done), 0);
	cr_assert_eq(done, 0, "NX on an existing key");
	cr_assert_eq(set1(db, "x", "v", VELA_SET_XX, 0, &done), 0);
	cr_assert_eq(done, 0, "XX on a missing key");
	char *v;
	size_t vl;
	vela_err_t err;
	cr_assert_eq(vela_getstr(db, "s", 1, &v, &vl, &err), 0);
	cr_assert_str_eq(v, "v1");
	free(v);
	vela_key_type_t t;
	cr_assert_eq(vela_key_type(db, "s", 1, &t), 0);
	cr_assert_eq(t, VELA_KEY_STRING);
	cr_assert_eq(hset1(db, "h", "f", "1", 1), 0);
	cr_assert_eq(vela_key_type(db, "h", 1, &t), 0);
	cr_assert_eq(t, VELA_KEY_HASH);
	cr_assert_eq(vela_key_type(db, "nope", 4, &t), 0);
	cr_assert_eq(t, VELA_KEY_NONE);
	/* WRONGTYPE both ways */
	cr_assert_eq(vela_getstr(db, "h", 1, &v, &vl, &err), VELA_ETYPE);
	cr_assert(strncmp(err.msg, "WRONGTYPE", 9) == 0, "%s", err.msg);
	vela_kv_t kv = {"f", 1, "1", 1};
	cr_assert_eq(vela_hset(db, "s", 1, &kv, 1, NULL, &err), VELA_ETYPE);
	cr_assert(strncmp(err.msg, "WRONGTYPE", 9) == 0, "%s", err.msg);
	vela_doc_t *d;
	cr_assert_eq(vela_get(db, "s", 1, &d, &err), VELA_ETYPE);
	size_t removed;
	cr_assert_eq(vela_hdel(db, "s", 1, &kv, 1, &removed, &err), VELA_ETYPE);
	cr_assert_eq(vela_db_size(db), 2);
	int del;
	cr_assert_eq(vela_del(db, "s", 1, &del, &err), 0);
	cr_assert_eq(del, 1);
	cr_assert_eq(vela_db_size(db), 1);
	vela_db_close(db);
}

Test(keyspace, set_over_hash_leaves_the_index)
{
	vela_db_t *db = db_open_ok(dir, 0);
	create_idx(db);
	cr_assert_eq(hset1(db, "h", "t", "a", 1), 0);
	cr_assert_eq(idx_docs(db), 1);
	int done;
	cr_assert_eq(set1(db, "h", "str", 0, 0, &done), 0);
	cr_assert_eq(idx_docs(db), 0);
	vela_db_close(db);
}

Test(keyspace, expire_ttl_persist_and_past_times)
{
	vela_db_t *db = db_open_ok(dir, 0);
	create_idx(db);
	cr_assert_eq(hset1(db, "h", "t", "a", 1), 0);
	int64_t ttl;
	cr_assert_eq(vela_ttl(db, "h", 1, &ttl), 0);
	cr_assert_eq(ttl, -1);
	cr_assert_eq(vela_ttl(db, "zz", 2, &ttl), 0);
	cr_assert_eq(ttl, -2);
	int applied;
	cr_assert_eq(expire1(db, "h", now_ms() + 100000, &applied), 0);
	cr_assert_eq(applied, 1);
	cr_assert_eq(vela_ttl(db, "h", 1, &ttl), 0);
	cr_assert(ttl > 90000 && ttl <= 100000, "ttl %lld", (long long)ttl);
	cr_assert_eq(expire1(db, "h", -1, &applied), 0);
	cr_assert_eq(applied, 1, "PERSIST removed a TTL");
	cr_assert_eq(expire1(db, "h", -1, &applied), 0);
	cr_assert_eq(applied, 0);
	cr_assert_eq(expire1(db, "missing", now_ms() + 1000, &applied), 0);
	cr_assert_eq(applied, 0);
	/* A time in the past deletes the key and it leaves the index. */
	cr_assert_eq(expire1(db, "h", now_ms() - 1, &applied), 0);
	cr_assert_eq(applied, 1);
	cr_assert_eq(vela_db_size(db), 0);
	cr_assert_eq(idx_docs(db), 0);
	vela_db_close(db);
}

Test(keyspace, lazy_then_active_expiry)
{
	vela_db_t *db = db_open_ok(dir, 0);
	create_idx(db);
	for (int i = 0; i < 5; i++) {
		char k[8];
		snprintf(k, sizeof(k), "h%d", i);
		cr_assert_eq(hset1(db, k, "t", "a", 1), 0);
		if (i < 3)
			cr_assert_eq(expire1(db, k, now_ms() + 50, NULL), 0);
	}
	int done;
	cr_assert_eq(set1(db, "s", "v", 0, now_ms() + 50, &done), 0);
	usleep(120 * 1000);
	/* Lazy: expired keys read as absent before the cycle runs. */
	vela_doc_t *d;
	vela_err_t err;
	cr_assert_eq(vela_get(db, "h0", 2, &d, &err), VELA_ENOTFOUND);
	char *v;
	size_t vl;
	cr_assert_eq(vela_getstr(db, "s", 1, &v, &vl, &err), VELA_ENOTFOUND);
	vela_key_type_t t;
	cr_assert_eq(vela_key_type(db, "h1", 2, &t), 0);
	cr_assert_eq(t, VELA_KEY_NONE);
	/* Writing to an expired key starts a fresh one. */
	vela_kv_t kv = {"x", 1, "1", 1};
	size_t added;
	cr_assert_eq(vela_hset(db, "h2", 2, &kv, 1, &added, &err), 0);
	cr_assert_eq(added, 1);
	int64_t ttl;
	cr_assert_eq(vela_ttl(db, "h2", 2, &ttl), 0);
	cr_assert_eq(ttl, -1, "the new key has no TTL");
	/* Active cycle removes the rest, and their index entries. */
	vela_batch_t *b;
	size_t n;
	cr_assert_eq(vela_batch_begin(db, &b, &err), 0);
	cr_assert_eq(vela_batch_expire_cycle(b, 100, &n, &err), 0);
	cr_assert_eq(vela_batch_commit(b, &err), 0);
	cr_assert_eq(n, 3, "h0, h1 and s");
	cr_assert_eq(idx_docs(db), 3, "h2 (new, untagged), h3, h4");
	cr_assert_eq(vela_db_size(db), 3);
	vela_db_close(db);
}

Test(keyspace, scan_cursor_visits_every_key_once)
{
	vela_db_t *db = db_open_ok(dir, 0);
	int seen[300] = {0};
	for (int i = 0; i < 300; i++) {
		char k[16];
		snprintf(k, sizeof(k), "%s:%d", i % 2 ? "a" : "b", i);
		if (i % 3)
			cr_assert_eq(hset1(db, k, "f", "1", 1), 0);
		else
			cr_assert_eq(set1(db, k, "v", 0, 0, NULL), 0);
	}
	uint64_t cur = 0;
	int calls = 0;
	do {
		vela_keylist_t l;
		cr_assert_eq(vela_scan(db, NULL, cur, 37, &l, &cur), 0);
		for (size_t i = 0; i < l.n; i++) {
			int id = atoi(strchr(l.keys[i], ':') + 1);
			cr_assert_eq(seen[id], 0, "key %s twice", l.keys[i]);
			seen[id] = 1;
		}
		vela_keylist_free(&l);
		calls++;
	} while (cur != 0 && calls < 100);
	for (int i = 0; i < 300; i++)
		cr_assert_eq(seen[i], 1, "key %d missed", i);
	vela_keylist_t l;
	cr_assert_eq(vela_scan(db, "a:1?", 0, 0, &l, &cur), 0);
	cr_assert_eq(l.n, 5, "a:11 a:13 a:15 a:17 a:19");
	cr_assert_eq(cur, 0);
	vela_keylist_free(&l);
	vela_db_close(db);
}

Test(keyspace, flushall_drops_keys_and_indexes)
{
	vela_db_t *db = db_open_ok(dir, 0);
	create_idx(db);
	cr_assert_eq(hset1(db, "h", "t", "a", 1), 0);
	cr_assert_eq(set1(db, "s", "v", 0, now_ms() + 100000, NULL), 0);
	vela_err_t err;
	cr_assert_eq(vela_db_flush(db, &err), 0, "%s", err.msg);
	cr_assert_eq(vela_db_size(db), 0);
	char **names;
	size_t n;
	cr_assert_eq(vela_index_list(db, &names, &n), 0);
	cr_assert_eq(n, 0);
	vela_strv_free(names, n);
	create_idx(db); /* the name is free again */
	cr_assert_eq(idx_docs(db), 0);
	vela_db_close(db);
	db = db_open_ok(dir, 0);
	cr_assert_eq(vela_db_size(db), 0);
	vela_db_close(db);
}

Test(keyspace, hsetnx)
{
	vela_db_t *db = db_open_ok(dir, 0);
	vela_batch_t *b;
	vela_err_t err;
	int set;
	vela_kv_t a = {"f", 1, "1", 1}, c = {"f", 1, "2", 1};
	cr_assert_eq(vela_batch_begin(db, &b, &err), 0);
	cr_assert_eq(vela_batch_hsetnx(b, "h", 1, &a, &set, &err), 0);
	cr_assert_eq(set, 1);
	/* Sees the write before it in the same batch. */
	cr_assert_eq(vela_batch_hsetnx(b, "h", 1, &c, &set, &err), 0);
	cr_assert_eq(set, 0);
	cr_assert_eq(vela_batch_commit(b, &err), 0);
	vela_doc_t *d;
	cr_assert_eq(vela_get(db, "h", 1, &d, &err), 0);
	cr_assert_str_eq(d->fields[0].value, "1");
	vela_doc_free(d);
	vela_db_close(db);
}

/* KEYS/SCAN patterns follow Redis's stringmatchlen, binary keys included. */
static size_t count_matches(vela_db_t *db, const char *pattern)
{
	vela_keylist_t l;
	uint64_t cur;
	cr_assert_eq(vela_scan(db, pattern, 0, 0, &l, &cur), 0);
	size_t n = l.n;
	vela_keylist_free(&l);
	return n;
}

Test(keyspace, scan_patterns_as_redis)
{
	vela_db_t *db = db_open_ok(dir, 0);
	const char *keys[] = {"abc", "abd", "a]", "a[", "a\\", "a-", "a^", "a\xffz"};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		cr_assert_eq(set1(db, keys[i], "1", 0, 0, NULL), 0);
	vela_batch_t *b;
	vela_err_t err;
	int done;
	cr_assert_eq(vela_batch_begin(db, &b, &err), 0);
	cr_assert_eq(vela_batch_set(b, "a\0c", 3, "1", 1, 0, 0, &done, &err), 0);
	cr_assert_eq(vela_batch_commit(b, &err), 0);
	/* Expected counts are redis-server 7.0's KEYS on the same keys. */
	struct {
		const char *pattern;
		size_t n;
	} cases[] = {
		{"*", 9},       {"a*", 9},      {"a?c", 2},     /* abc, a\0c */
		{"a[bc]?", 2},  {"a[^b]?", 2},  {"a[!b]?", 2},  /* ^ negates, ! is a member */
		{"a[c-a]*", 2}, {"a[]]", 0},    {"a[", 0},      /* reversed range; ']' first */
		{"a[\\]]", 1},  {"a\\*", 0},    {"*c", 2},      /* escapes */
		{"a[\x01-\xff]z", 1},                         /* bounds compare as signed chars */
		{"**", 9},      {"a[-]", 1},    {"a[--z]", 5},  {"a[^]", 5},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		cr_expect_eq(count_matches(db, cases[i].pattern), cases[i].n, "%s: %zu", cases[i].pattern,
			     count_matches(db, cases[i].pattern));
	vela_db_close(db);
}

Test(keyspace, set_keepttl_over_a_hash_keeps_the_ttl)
{
	vela_db_t *db = db_open_ok(dir, 0);
	cr_assert_eq(hset1(db, "h", "t", "a", 1), 0);
	int applied, done;
	cr_assert_eq(expire1(db, "h", now_ms() + 100000, &applied), 0);
	cr_assert_eq(set1(db, "h", "v", VELA_SET_KEEPTTL, 0, &done), 0);
	cr_assert_eq(done, 1);
	int64_t ttl;
	cr_assert_eq(vela_ttl(db, "h", 1, &ttl), 0);
	cr_assert(ttl > 90000, "ttl %lld", (long long)ttl);
	cr_assert_eq(set1(db, "h", "w", 0, 0, &done), 0);
	cr_assert_eq(vela_ttl(db, "h", 1, &ttl), 0);
	cr_assert_eq(ttl, -1, "a SET without KEEPTTL clears it");
	vela_db_close(db);
}
