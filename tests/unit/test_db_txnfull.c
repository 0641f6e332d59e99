/* A batch that outgrows LMDB's dirty-page list (MDB_TXN_FULL, 131,072 page
 * allocations in one write transaction) fails whole with VELA_ETXNFULL:
 * nothing of it commits, and a smaller batch then goes through. */
#include <time.h>

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

TestSuite(db_txnfull, .init = setup, .fini = teardown, .timeout = 300);

/* A value just over LMDB's node limit (4 KiB pages): each document's row
 * takes one overflow page, one dirty-list entry per write. */
#define BIG_VALUE 2100
/* Far past the point of failure (about 131,000 writes + what fits after). */
#define WRITES_MAX 400000
/*
 * The map the batch's estimates need: writes run in the batch's own
 * transaction while they stay under a quarter of the free map
 * (db/write.c), and there LMDB spills pages to disk instead of failing.
 * Past that each write is a nested transaction, which cannot spill its
 * parent's pages, so the dirty list fills within one spill's worth
 * (1/8 of it) of writes. A map large enough for the fast path to cover
 * the first 131,072 pages keeps those slow nested writes few (each costs
 * two large allocations: seconds under ASan for thousands).
 */
#define MAP (8ull << 30)

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int batch_put(vela_batch_t *b, long i, const char *val, vela_err_t *err)
{
	char key[32];
	int kl = snprintf(key, sizeof(key), "big:%ld", i);
	vela_kv_t kv = {"body", 4, val, BIG_VALUE};
	return vela_batch_hset(b, key, (size_t)kl, &kv, 1, NULL, err);
}

static bool doc_exists(vela_db_t *db, long i)
{
	char key[32];
	int kl = snprintf(key, sizeof(key), "big:%ld", i);
	vela_doc_t *d = NULL;
	vela_err_t err;
	int rc = vela_get(db, key, (size_t)kl, &d, &err);
	cr_assert(rc == 0 || rc == VELA_ENOTFOUND, "get %s: %s", key, err.msg);
	bool found = rc == 0 && d != NULL;
	vela_doc_free(d);
	return found;
}

Test(db_txnfull, oversized_batch_fails_whole_then_smaller_batch_commits)
{
	vela_db_t *db = db_open_ok(dir, MAP);
	cr_assert_eq(hset1(db, "keep", "f", "1", 1), 0);
	static char val[BIG_VALUE];
	memset(val, 'x', sizeof(val));

	double t0 = now_s();
	vela_batch_t *b;
	vela_err_t err;
	cr_assert_eq(vela_batch_begin(db, &b, &err), 0, "%s", err.msg);
	int rc = 0;
	long i;
	for (i = 0; i < WRITES_MAX && rc == 0; i++)
		rc = batch_put(b, i, val, &err);
	cr_assert_eq(rc, VELA_ETXNFULL, "write %ld: %d %s", i, rc, err.msg);
	cr_assert(strstr(err.msg, "smaller batches") != NULL, "%s", err.msg);
	/* The batch is failed: later writes and the commit say so, and commit nothing. */
	cr_assert_eq(batch_put(b, WRITES_MAX, val, &err), VELA_ETXNFULL);
	cr_assert_eq(vela_batch_commit(b, &err), VELA_ETXNFULL);
	cr_assert(strstr(err.msg, "transaction too large") != NULL, "%s", err.msg);
	cr_log_info("MDB_TXN_FULL after %ld writes, %.1f s", i, now_s() - t0);

	cr_assert_eq(vela_db_size(db), 1, "none of the failed batch's documents");
	cr_assert(!doc_exists(db, 0) && !doc_exists(db, i / 2) && !doc_exists(db, i - 2));

	/* A smaller batch of the same writes commits. */
	cr_assert_eq(vela_batch_begin(db, &b, &err), 0, "%s", err.msg);
	for (long j = 0; j < 1000; j++)
		cr_assert_eq(batch_put(b, j, val, &err), 0, "%s", err.msg);
	cr_assert_eq(vela_batch_commit(b, &err), 0, "%s", err.msg);
	cr_assert_eq(vela_db_size(db), 1001);
	cr_assert(doc_exists(db, 999));
	vela_db_close(db);
}
