/* Unit tests for storage/: format stamp, tables, postings, numeric key
 * order, packed documents, change log, map-full handling, thread reads. */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage/storage.h"
#include "storage/storage_internal.h" /* storage_rc */

static char dir[64];

static void mkdir_tmp(void)
{
	strcpy(dir, "/tmp/vela-storage-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void rm_tmp(void)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(storage, .init = mkdir_tmp, .fini = rm_tmp);

static storage_env_t *open_env(size_t map)
{
	storage_env_t *env = NULL;
	vela_err_t err;
	int rc = storage_open(dir, map, 0, &env, &err);
	cr_assert_eq(rc, 0, "open: %s", err.msg);
	return env;
}

Test(storage, put_get_persist_across_reopen)
{
	storage_env_t *env = open_env(0);
	storage_txn_t *t;
	cr_assert_eq(storage_txn_begin(env, NULL, 1, &t), 0);
	cr_assert_eq(storage_put(t, ST_DOCS, "k", 1, "value", 5), 0);
	cr_assert_eq(storage_txn_commit(t), 0);
	storage_close(env);

	env = open_env(0);
	cr_assert_eq(storage_txn_begin(env, NULL, 0, &t), 0);
	const void *v;
	size_t n;
	cr_assert_eq(storage_get(t, ST_DOCS, "k", 1, &v, &n), 0);
	cr_assert_eq(n, 5);
	cr_assert_eq(memcmp(v, "value", 5), 0);
	cr_assert_eq(storage_get(t, ST_DOCS, "x", 1, &v, &n), VELA_ENOTFOUND);
	storage_txn_abort(t);
	storage_close(env);
}

Test(storage, newer_format_is_refused)
{
	storage_env_t *env = open_env(0);
	storage_txn_t *t;
	cr_assert_eq(storage_txn_begin(env, NULL, 1, &t), 0);
	cr_assert_eq(storage_meta_put_u64(t, "version", STORAGE_FORMAT_VERSION + 1), 0);
	cr_assert_eq(storage_txn_commit(t), 0);
	storage_close(env);

	vela_err_t err;
	cr_assert_eq(storage_open(dir, 0, 0, &env, &err), VELA_EVERSION);
	cr_assert(strstr(err.msg, "newer") != NULL, "%s", err.msg);
}

Test(storage, foreign_magic_is_refused)
{
	storage_env_t *env = open_env(0);
	storage_txn_t *t;
	cr_assert_eq(storage_txn_begin(env, NULL, 1, &t), 0);
	cr_assert_eq(storage_meta_put_u64(t, "magic", 0x1234), 0);
	cr_assert_eq(storage_txn_commit(t), 0);
	storage_close(env);
	vela_err_t err;
	cr_assert_eq(storage_open(dir, 0, 0, &env, &err), VELA_ECORRUPT);
	cr_assert(strstr(err.msg, "not a vela database") != NULL, "%s", err.msg);
}

Test(storage, numeric_encoding_preserves_order)
{
	double vals[] = {-INFINITY, -1e300, -2.5, -1.0, -1e-300, 0.0, 1e-310, 1e-300,
			 0.5, 1.0, 2.0, 1e300, INFINITY};
	size_t n = sizeof(vals) / sizeof(vals[0]);
	for (size_t i = 0; i < n; i++) {
		uint8_t a[8];
		storage_num_encode(vals[i], a);
		cr_assert_eq(storage_num_decode(a), vals[i]);
		for (size_t j = i + 1; j < n; j++) {
			uint8_t b[8];
			storage_num_encode(vals[j], b);
			cr_assert_lt(memcmp(a, b, 8), 0, "%g !< %g", vals[i], vals[j]);
		}
	}
	uint8_t z1[8], z2[8];
	storage_num_encode(-0.0, z1);
	storage_num_encode(0.0, z2);
	cr_assert_eq(memcmp(z1, z2, 8), 0);
	/* Random pairs against the comparison of doubles. */
	srand(7);
	for (int i = 0; i < 20000; i++) {
		double x = ((double)rand() / RAND_MAX - 0.5) * pow(10, rand() % 40 - 20);
		double y = ((double)rand() / RAND_MAX - 0.5) * pow(10, rand() % 40 - 20);
		uint8_t a[8], b[8];
		storage_num_encode(x, a);
		storage_num_encode(y, b);
		int c = memcmp(a, b, 8);
		cr_assert_eq(c < 0, x < y);
		cr_assert_eq(c == 0, x == y);
	}
}

Test(storage, doc_pack_roundtrip_and_corruption)
{
	storage_field_t f[3] = {
		{(const uint8_t *)"a", 1, (const uint8_t *)"1", 1},
		{(const uint8_t *)"bin", 3, (const uint8_t *)"\0\1\2", 3},
		{(const uint8_t *)"empty", 5, (const uint8_t *)"", 0},
	};
	uint8_t *buf;
	size_t len;
	cr_assert_eq(storage_doc_pack(f, 3, &buf, &len), 0);
	storage_field_t *g;
	size_t n;
	cr_assert_eq(storage_doc_unpack(buf, len, &g, &n), 0);
	cr_assert_eq(n, 3);
	for (size_t i = 0; i < 3; i++) {
		cr_assert_eq(g[i].name_len, f[i].name_len);
		cr_assert_eq(memcmp(g[i].name, f[i].name, f[i].name_len), 0);
		cr_assert_eq(g[i].value_len, f[i].value_len);
		cr_assert_eq(memcmp(g[i].value, f[i].value, f[i].value_len), 0);
	}
	free(g);
	/* Every truncation is refused, never read past the end. */
	for (size_t cut = 0; cut < len; cut++)
		cr_assert_eq(storage_doc_unpack(buf, cut, &g, &n), VELA_ECORRUPT, "cut %zu", cut);
	buf[0] = 99;
	cr_assert_eq(storage_doc_unpack(buf, len, &g, &n), VELA_ECORRUPT);
	buf[0] = STORAGE_DOC_VERSION;
	buf[1] = 0xff; /* absurd field count */
	cr_assert_eq(storage_doc_unpack(buf, len, &g, &n), VELA_ECORRUPT);
	free(buf);
}

struct collect {
	uint32_t ids[64];
	size_t n;
};

static int collect_ids(void *ctx, const uint32_t *ids_be, size_t n)
{
	struct collect *c = ctx;
	for (size_t i = 0; i < n && c->n < 64; i++)
		c->ids[c->n++] = vela_get_be32((const uint8_t *)&ids_be[i]);
	return 0;
}

Test(storage, postings_exact_and_range)
{
	storage_env_t *env = open_env(0);
	storage_txn_t *t;
	cr_assert_eq(storage_txn_begin(env, NULL, 1, &t), 0);
	uint8_t key[16], lo[16], hi[16];
	double nums[] = {-3, 1, 1, 2.5, 10};
	for (uint32_t d = 0; d < 5; d++) {
		uint8_t e[8];
		storage_num_encode(nums[d], e);
		size_t kl = storage_posting_key(key, 1, 2, SP_NUM, e, 8);
		cr_assert_eq(storage_posting_add(t, key, kl, d + 100), 0);
		cr_assert_eq(storage_posting_add(t, key, kl, d + 100), 0); /* idempotent */
	}
	/* A key of another field must not leak into the range. */
	uint8_t e[8];
	storage_num_encode(2, e);
	size_t kl = storage_posting_key(key, 1, 3, SP_NUM, e, 8);
	cr_assert_eq(storage_posting_add(t, key, kl, 999), 0);

	uint8_t elo[8], ehi[8];
	storage_num_encode(0.5, elo);
	storage_num_encode(2.5, ehi);
	size_t lol = storage_posting_key(lo, 1, 2, SP_NUM, elo, 8);
	size_t hil = storage_posting_key(hi, 1, 2, SP_NUM, ehi, 8);
	struct collect c = {.n = 0};
	cr_assert_eq(storage_posting_range(t, lo, lol, hi, hil, collect_ids, &c), 0);
	cr_assert_eq(c.n, 3);
	cr_assert_eq(c.ids[0], 101);
	cr_assert_eq(c.ids[1], 102);
	cr_assert_eq(c.ids[2], 103);

	storage_num_encode(1, e);
	kl = storage_posting_key(key, 1, 2, SP_NUM, e, 8);
	cr_assert_eq(storage_posting_remove(t, key, kl, 101), 0);
	cr_assert_eq(storage_posting_remove(t, key, kl, 101), VELA_ENOTFOUND);
	c.n = 0;
	cr_assert_eq(storage_posting_get(t, key, kl, collect_ids, &c), 0);
	cr_assert_eq(c.n, 1);
	cr_assert_eq(c.ids[0], 102);
	storage_txn_abort(t);
	storage_close(env);
}

Test(storage, del_prefix_and_log)
{
	storage_env_t *env = open_env(0);
	storage_txn_t *t;
	cr_assert_eq(storage_txn_begin(env, NULL, 1, &t), 0);
	cr_assert_eq(storage_put(t, ST_KEYS, "a1", 2, "x", 1), 0);
	cr_assert_eq(storage_put(t, ST_KEYS, "a2", 2, "x", 1), 0);
	cr_assert_eq(storage_put(t, ST_KEYS, "b1", 2, "x", 1), 0);
	uint64_t n;
	cr_assert_eq(storage_del_prefix(t, ST_KEYS, "a", 1, &n), 0);
	cr_assert_eq(n, 2);
	cr_assert_eq(storage_count(t, ST_KEYS, &n), 0);
	cr_assert_eq(n, 1);

	uint64_t seq = 0;
	for (int i = 0; i < 10; i++)
		cr_assert_eq(storage_log_append(t, SL_UPSERT, 1, (uint32_t)i, "k", 1, &seq), 0);
	cr_assert_eq(seq, 10);
	cr_assert_eq(storage_log_trim(t, 7), 0);
	cr_assert_eq(storage_count(t, ST_LOG, &n), 0);
	cr_assert_eq(n, 3);
	cr_assert_eq(storage_log_append(t, SL_DELETE, 1, 0, "k", 1, &seq), 0);
	cr_assert_eq(seq, 11, "sequence stays monotonic after a trim");
	cr_assert_eq(storage_txn_commit(t), 0);
	storage_close(env);
}

/* LMDB's dirty-list limit gets its own code and advice, not "I/O or storage
 * error" (a batch that hits it for real: test_db_txnfull.c). */
Test(storage, txn_full_has_its_own_code)
{
	cr_assert_eq(storage_rc(MDB_TXN_FULL), VELA_ETXNFULL);
	cr_assert_eq(storage_rc(MDB_MAP_FULL), VELA_EMAPFULL);
	cr_assert_str_eq(vela_strerror(VELA_ETXNFULL),
			 "transaction too large: commit in smaller batches");
}

Test(storage, map_full_is_an_error_and_loses_nothing)
{
	storage_env_t *env = open_env(STORAGE_MAP_SIZE_MIN);
	storage_txn_t *t;
	cr_assert_eq(storage_txn_begin(env, NULL, 1, &t), 0);
	cr_assert_eq(storage_put(t, ST_DOCS, "keep", 4, "1", 1), 0);
	cr_assert_eq(storage_txn_commit(t), 0);

	static uint8_t big[64 * 1024];
	int rc = 0;
	cr_assert_eq(storage_txn_begin(env, NULL, 1, &t), 0);
	for (int i = 0; i < 1000 && rc == 0; i++) {
		char k[16];
		int kl = snprintf(k, sizeof(k), "big%d", i);
		rc = storage_put(t, ST_DOCS, k, (size_t)kl, big, sizeof(big));
	}
	cr_assert_eq(rc, VELA_EMAPFULL);
	storage_txn_abort(t);

	/* The committed write survives; the failed transaction left nothing. */
	cr_assert_eq(storage_txn_begin(env, NULL, 0, &t), 0);
	uint64_t n;
	cr_assert_eq(storage_count(t, ST_DOCS, &n), 0);
	cr_assert_eq(n, 1);
	storage_txn_abort(t);

	/* Growing the map makes room. */
	vela_err_t err;
	cr_assert_eq(storage_set_map_size(env, 64ull << 20, &err), 0, "%s", err.msg);
	cr_assert_eq(storage_txn_begin(env, NULL, 1, &t), 0);
	cr_assert_eq(storage_put(t, ST_DOCS, "big0", 4, big, sizeof(big)), 0);
	cr_assert_eq(storage_txn_commit(t), 0);
	storage_close(env);
}

Test(storage, nested_txn_abort_keeps_parent)
{
	storage_env_t *env = open_env(0);
	storage_txn_t *p, *c;
	cr_assert_eq(storage_txn_begin(env, NULL, 1, &p), 0);
	cr_assert_eq(storage_put(p, ST_DOCS, "a", 1, "1", 1), 0);
	cr_assert_eq(storage_txn_begin(env, p, 1, &c), 0);
	cr_assert_eq(storage_put(c, ST_DOCS, "b", 1, "2", 1), 0);
	storage_txn_abort(c);
	cr_assert_eq(storage_txn_begin(env, p, 1, &c), 0);
	cr_assert_eq(storage_put(c, ST_DOCS, "c", 1, "3", 1), 0);
	cr_assert_eq(storage_txn_commit(c), 0);
	cr_assert_eq(storage_txn_commit(p), 0);
	cr_assert_eq(storage_txn_begin(env, NULL, 0, &p), 0);
	const void *v;
	size_t n;
	cr_assert_eq(storage_get(p, ST_DOCS, "a", 1, &v, &n), 0);
	cr_assert_eq(storage_get(p, ST_DOCS, "b", 1, &v, &n), VELA_ENOTFOUND);
	cr_assert_eq(storage_get(p, ST_DOCS, "c", 1, &v, &n), 0);
	storage_txn_abort(p);
	storage_close(env);
}

struct reader_arg {
	storage_txn_t *txn;
	int ok;
};

static void *reader(void *arg)
{
	struct reader_arg *a = arg;
	const void *v;
	size_t n;
	a->ok = storage_get(a->txn, ST_DOCS, "k", 1, &v, &n) == 0 && n == 1;
	return NULL;
}

Test(storage, read_txn_used_from_another_thread)
{
	storage_env_t *env = open_env(0);
	storage_txn_t *t;
	cr_assert_eq(storage_txn_begin(env, NULL, 1, &t), 0);
	cr_assert_eq(storage_put(t, ST_DOCS, "k", 1, "v", 1), 0);
	cr_assert_eq(storage_txn_commit(t), 0);
	struct reader_arg a[4];
	pthread_t th[4];
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(storage_txn_begin(env, NULL, 0, &a[i].txn), 0);
		pthread_create(&th[i], NULL, reader, &a[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		cr_assert(a[i].ok);
		storage_txn_abort(a[i].txn);
	}
	storage_close(env);
}
