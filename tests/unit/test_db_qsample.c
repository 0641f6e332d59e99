/* The query sample (db/qsample.c): the reservoir of a vector field's query
 * vectors, the OOD training set of LeanVec.
 *   - bounded by its row cap and by DB_QSAMPLE_BYTES_MAX;
 *   - uniform (algorithm R): a 1,000-row sample of 100,000 queries;
 *   - filled only by KNN queries (searches and vela_workload_record), with
 *     the vector as given (a COSINE FLOAT16 query is neither normalised nor
 *     rounded again);
 *   - saved with the workload log and loaded on reopen; a damaged file is
 *     ignored; the file functions refuse what they should.
 * Also logs the cost of 1M db_qsample_record calls at dim 768. */
#include <unistd.h>

#include "test_db_util.h"

#include "db/db.h"
#include "db/search_int.h"

TestSuite(db_qsample, .timeout = 300);

#define QS_DIM 8u
#define QS_DOCS 64u

typedef struct qs_env {
	char dir[64];
	vela_db_t *db;
} qs_env_t;

/* Index "qs": v VECTOR FLAT FLOAT32 8 L2 (field 0), h VECTOR FLAT FLOAT16 4
 * COSINE (field 1), t TAG (field 2); QS_DOCS documents. */
static void qs_index(vela_db_t *db)
{
	vela_field_def_t f[3] = {
		{.name = "v", .type = VELA_FIELD_VECTOR, .algo = VELA_ALGO_FLAT,
		 .vec_type = VELA_VEC_FLOAT32, .dim = QS_DIM, .metric = VELA_METRIC_L2},
		{.name = "h", .type = VELA_FIELD_VECTOR, .algo = VELA_ALGO_FLAT,
		 .vec_type = VELA_VEC_FLOAT16, .dim = 4, .metric = VELA_METRIC_COSINE},
		{.name = "t", .type = VELA_FIELD_TAG},
	};
	const char *pre[] = {"d:"};
	vela_index_def_t def = {.name = "qs", .prefixes = pre, .n_prefixes = 1, .fields = f,
				.n_fields = 3};
	vela_err_t err = {0};
	cr_assert_eq(vela_index_create(db, &def, &err), 0, "%s", err.msg);
	for (uint32_t i = 0; i < QS_DOCS; i++) {
		float v[QS_DIM];
		for (uint32_t j = 0; j < QS_DIM; j++)
			v[j] = (float)((i * 7 + j * 3) % 11);
		uint16_t h[4] = {test_half_exact(1 + i % 3), test_half_exact(1), 0, 0};
		char key[16];
		snprintf(key, sizeof(key), "d:%u", i);
		vela_kv_t kv[3] = {{"v", 1, v, sizeof(v)}, {"h", 1, h, sizeof(h)},
				   {"t", 1, i % 2 ? "odd" : "even", i % 2 ? 3 : 4}};
		cr_assert_eq(vela_hset(db, key, strlen(key), kv, 3, NULL, &err), 0, "%s", err.msg);
	}
}

static void qs_setup(qs_env_t *e)
{
	tmpdir_make(e->dir, sizeof(e->dir));
	e->db = db_open_ok(e->dir, 0);
	qs_index(e->db);
}

static void qs_teardown(qs_env_t *e)
{
	vela_db_close(e->db);
	tmpdir_remove(e->dir);
}

/* Field k's state (created, its files loaded, on first use). */
static db_field_state_t *qs_state(vela_db_t *db, uint32_t k)
{
	pthread_rwlock_rdlock(&db->lock);
	db_index_t *ix = db_index_find(db, "qs");
	cr_assert_not_null(ix);
	db_field_state_t *s = db_field_state(db, ix, k, true);
	pthread_rwlock_unlock(&db->lock);
	cr_assert_not_null(s);
	return s;
}

static float *qs_copy(vela_db_t *db, uint32_t k, size_t *m)
{
	float *Q;
	pthread_rwlock_rdlock(&db->lock);
	db_index_t *ix = db_index_find(db, "qs");
	int rc = db_qsample_copy(db, ix, k, &Q, m);
	pthread_rwlock_unlock(&db->lock);
	cr_assert_eq(rc, 0);
	cr_assert_eq(Q == NULL, *m == 0);
	return Q;
}

static uint32_t qs_rows(db_field_state_t *s, uint64_t *seen)
{
	uint32_t r;
	db_qsample_stats(s, &r, seen);
	return r;
}

static int qs_search(vela_db_t *db, const char *q, const void *vec, size_t len)
{
	vela_kv_t prm = {"B", 1, vec, len};
	vela_search_req_t req = {.index = "qs", .query = q, .params = &prm, .n_params = 1};
	vela_result_t *r = NULL;
	vela_err_t err = {0};
	int rc = vela_search(db, &req, &r, &err);
	vela_result_free(r);
	return rc;
}

Test(db_qsample, caps)
{
	cr_assert_eq(db_qsample_cap(0, 8), DB_QSAMPLE_ROWS_DEFAULT);
	cr_assert_eq(db_qsample_cap(0, 768), DB_QSAMPLE_ROWS_DEFAULT, "30 MB fit");
	cr_assert_eq(db_qsample_cap(0, 1024), DB_QSAMPLE_BYTES_MAX / 4096, "fewer rows when wide");
	cr_assert_eq(db_qsample_cap(50, 1024), 50);
	cr_assert_eq(db_qsample_cap(0, 0), 0);
	cr_assert_eq(db_qsample_cap(0, (uint32_t)(DB_QSAMPLE_BYTES_MAX / 4) + 1), 0);
	for (uint32_t d = 1; d <= 1u << 16; d *= 4)
		cr_assert_leq((size_t)db_qsample_cap(DB_QSAMPLE_ROWS_MAX, d) * d * 4,
			      DB_QSAMPLE_BYTES_MAX);
}

Test(db_qsample, bounded)
{
	qs_env_t e;
	qs_setup(&e);
	db_field_state_t *s = qs_state(e.db, 0);
	cr_assert_eq(qs_rows(s, NULL), 0, "empty at first");
	cr_assert_eq(db_qsample_limit(s, DB_QSAMPLE_ROWS_MAX + 1), VELA_EINVAL);
	float v[QS_DIM] = {0};
	for (uint32_t i = 0; i < DB_QSAMPLE_ROWS_DEFAULT + 2000; i++) {
		v[0] = (float)i;
		db_qsample_record(s, v, QS_DIM);
	}
	uint64_t seen;
	cr_assert_eq(qs_rows(s, &seen), DB_QSAMPLE_ROWS_DEFAULT);
	cr_assert_eq(seen, DB_QSAMPLE_ROWS_DEFAULT + 2000);
	cr_assert(s->qs_alloc <= DB_QSAMPLE_ROWS_DEFAULT);
	cr_assert_eq(db_qsample_limit(s, 500), 0);
	cr_assert_eq(qs_rows(s, NULL), 500, "a lower cap drops rows");
	for (uint32_t i = 0; i < 5000; i++)
		db_qsample_record(s, v, QS_DIM);
	cr_assert_eq(qs_rows(s, &seen), 500);
	cr_assert_eq(seen, DB_QSAMPLE_ROWS_DEFAULT + 7000);
	size_t m;
	float *Q = qs_copy(e.db, 0, &m);
	cr_assert_eq(m, 500);
	free(Q);
	qs_teardown(&e);
}

Test(db_qsample, uniform)
{
	enum { ROWS = 1000, N = 100000, BINS = 10 };
	qs_env_t e;
	qs_setup(&e);
	db_field_state_t *s = qs_state(e.db, 0);
	cr_assert_eq(db_qsample_limit(s, ROWS), 0);
	float v[QS_DIM] = {0};
	for (uint32_t i = 0; i < N; i++) {
		v[0] = (float)i;
		v[1] = (float)(N - i);
		db_qsample_record(s, v, QS_DIM);
	}
	size_t m;
	float *Q = qs_copy(e.db, 0, &m);
	cr_assert_eq(m, ROWS);
	uint8_t *hit = calloc(N, 1);
	uint32_t bins[BINS] = {0};
	double mean = 0;
	for (size_t r = 0; r < m; r++) {
		uint32_t i = (uint32_t)Q[r * QS_DIM];
		cr_assert_eq(Q[r * QS_DIM + 1], (float)(N - i), "a whole row was copied");
		cr_assert(!hit[i], "row %u kept twice", i);
		hit[i] = 1;
		bins[i / (N / BINS)]++;
		mean += i;
	}
	mean /= (double)m;
	/* Sampling ROWS of N without replacement: sd of the mean =
	 * sqrt((N^2 - 1) / 12 / ROWS * (N - ROWS) / (N - 1)) ~ 908; 4.4 sd. */
	cr_assert(fabs(mean - (N - 1) / 2.0) < 4000, "mean kept %.0f", mean);
	/* Pearson's chi-square over deciles, 9 degrees of freedom: 27.9 is p = 0.001. */
	double chi2 = 0;
	for (int b = 0; b < BINS; b++)
		chi2 += (bins[b] - ROWS / BINS) * (bins[b] - ROWS / BINS) / (double)(ROWS / BINS);
	cr_assert(chi2 < 27.9, "chi-square %.1f (first decile %u, last %u)", chi2, bins[0],
		  bins[BINS - 1]);
	cr_assert(bins[0] > 0 && bins[BINS - 1] > 0, "early and late queries both kept");
	cr_log_info("uniform: mean %.0f, chi2 %.1f, deciles %u..%u", mean, chi2, bins[0],
		    bins[BINS - 1]);
	free(hit);
	free(Q);
	qs_teardown(&e);
}

Test(db_qsample, knn_only)
{
	qs_env_t e;
	qs_setup(&e);
	float v[QS_DIM] = {1, 2, 3, 4, 5, 6, 7, 8};
	cr_assert_eq(qs_search(e.db, "*=>[KNN 3 @v $B]", v, sizeof(v)), 0);
	cr_assert_eq(qs_search(e.db, "@t:{odd}=>[KNN 3 @v $B AS d]", v, sizeof(v)), 0);
	cr_assert_eq(qs_search(e.db, "@t:{odd}", v, sizeof(v)), 0, "no KNN");
	cr_assert_eq(qs_search(e.db, "@v:[VECTOR_RANGE 100 $B]", v, sizeof(v)), 0, "a range");
	vela_kv_t prm = {"B", 1, v, sizeof(v)};
	vela_err_t err = {0};
	cr_assert_eq(vela_workload_record(e.db, "qs", "*=>[KNN 5 @v $B]", 0, &prm, 1, &err), 0,
		     "%s", err.msg);
	float bad[3] = {1, 2, 3};
	cr_assert_neq(qs_search(e.db, "*=>[KNN 3 @v $B]", bad, sizeof(bad)), 0, "wrong dim");
	float nan[QS_DIM] = {NAN};
	cr_assert_neq(qs_search(e.db, "*=>[KNN 3 @v $B]", nan, sizeof(nan)), 0, "NaN");
	uint64_t seen;
	cr_assert_eq(qs_rows(qs_state(e.db, 0), &seen), 3, "two searches and one record");
	cr_assert_eq(seen, 3);
	size_t m;
	float *Q = qs_copy(e.db, 0, &m);
	for (size_t r = 0; r < m; r++)
		cr_assert_arr_eq(Q + r * QS_DIM, v, sizeof(v));
	free(Q);
	/* A COSINE FLOAT16 field: the query as given (not normalised). */
	uint16_t h[4] = {test_half_exact(2), test_half_exact(0.5), 0, test_half_exact(-3)};
	cr_assert_eq(qs_search(e.db, "*=>[KNN 2 @h $B]", h, sizeof(h)), 0);
	Q = qs_copy(e.db, 1, &m);
	cr_assert_eq(m, 1);
	cr_assert(Q[0] == 2.0f && Q[1] == 0.5f && Q[2] == 0.0f && Q[3] == -3.0f,
		  "%g %g %g %g", Q[0], Q[1], Q[2], Q[3]);
	free(Q);
	pthread_rwlock_rdlock(&e.db->lock);
	db_index_t *ix = db_index_find(e.db, "qs");
	cr_assert_eq(db_qsample_copy(e.db, ix, 2, &Q, &m), VELA_ENOTFOUND, "a TAG field");
	cr_assert_eq(db_qsample_copy(e.db, ix, 9, &Q, &m), VELA_ENOTFOUND);
	cr_assert_null(Q);
	pthread_rwlock_unlock(&e.db->lock);
	qs_teardown(&e);
}

/* Record n rows (row i: i, i+1, ...) directly. */
static void qs_fill(vela_db_t *db, uint32_t n)
{
	db_field_state_t *s = qs_state(db, 0);
	for (uint32_t i = 0; i < n; i++) {
		float v[QS_DIM];
		for (uint32_t j = 0; j < QS_DIM; j++)
			v[j] = (float)(i + j);
		db_qsample_record(s, v, QS_DIM);
	}
}

static void qs_reopen(qs_env_t *e)
{
	vela_db_close(e->db);
	e->db = db_open_ok(e->dir, 0);
}

static void qs_path(const qs_env_t *e, char *buf, size_t cap)
{
	pthread_rwlock_rdlock(&e->db->lock);
	uint32_t id = db_index_find(e->db, "qs")->id;
	pthread_rwlock_unlock(&e->db->lock);
	snprintf(buf, cap, "%s/qsample-%u-0.bin", e->dir, id);
}

Test(db_qsample, dropped_index_leaves_no_files)
{
	qs_env_t e;
	qs_setup(&e);
	qs_fill(e.db, 50);
	vela_err_t err = {0};
	cr_assert_eq(vela_workload_save(e.db, "qs", "v", &err), 0, "%s", err.msg);
	char path[300];
	qs_path(&e, path, sizeof(path));
	cr_assert_eq(access(path, R_OK), 0, "%s written", path);
	cr_assert_eq(vela_index_drop(e.db, "qs", false, &err), 0, "%s", err.msg);
	cr_assert_neq(access(path, F_OK), 0, "%s removed with its index", path);
	qs_teardown(&e);
}

Test(db_qsample, persistence)
{
	qs_env_t e;
	qs_setup(&e);
	qs_fill(e.db, 20000);
	size_t m0, m;
	float *Q0 = qs_copy(e.db, 0, &m0);
	cr_assert_eq(m0, DB_QSAMPLE_ROWS_DEFAULT);
	vela_err_t err = {0};
	cr_assert_eq(vela_workload_save(e.db, "qs", "v", &err), 0, "%s", err.msg);
	char path[300];
	qs_path(&e, path, sizeof(path));
	cr_assert_eq(access(path, R_OK), 0, "%s written", path);
	qs_reopen(&e);
	float *Q = qs_copy(e.db, 0, &m);
	cr_assert_eq(m, m0);
	cr_assert_arr_eq(Q, Q0, m * QS_DIM * sizeof(float), "the same rows came back");
	uint64_t seen;
	cr_assert_eq(qs_rows(qs_state(e.db, 0), &seen), m0);
	cr_assert_eq(seen, 20000, "the seen count too: later queries keep the odds");
	free(Q);
	/* An empty sample writes nothing (field h). */
	cr_assert_eq(vela_workload_save(e.db, "qs", "h", &err), 0, "%s", err.msg);
	char hpath[300];
	snprintf(hpath, sizeof(hpath), "%.*s1.bin", (int)(strlen(path) - 5), path);
	cr_assert_neq(access(hpath, F_OK), 0);
	/* vela_db_close saves it too: the reopen sees the later queries. */
	qs_fill(e.db, 100);
	qs_reopen(&e);
	Q = qs_copy(e.db, 0, &m);
	cr_assert_eq(m, m0);
	cr_assert_eq(qs_rows(qs_state(e.db, 0), &seen), m0);
	cr_assert_eq(seen, 20100, "the queries after the explicit save were kept at close");
	free(Q);
	free(Q0);
	qs_teardown(&e);
}

static long qs_file_size(const char *path)
{
	FILE *f = fopen(path, "rb");
	cr_assert_not_null(f);
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fclose(f);
	return n;
}

static void qs_poke(const char *path, long off, uint8_t x)
{
	FILE *f = fopen(path, "r+b");
	cr_assert_not_null(f);
	fseek(f, off, SEEK_SET);
	int c = fgetc(f);
	fseek(f, off, SEEK_SET);
	fputc(c ^ x, f);
	fclose(f);
}

/* Close (which saves the sample: the damage must come after), so the
 * caller can damage the file. */
static void qs_close(qs_env_t *e)
{
	vela_db_close(e->db);
	e->db = NULL;
}

/* Open and expect the sample of field v ignored (and the db working). */
static void qs_expect_ignored(qs_env_t *e, const char *what)
{
	e->db = db_open_ok(e->dir, 0);
	size_t m;
	float *Q = qs_copy(e->db, 0, &m);
	cr_assert_eq(m, 0, "%s: ignored", what);
	cr_assert_null(Q);
	float v[QS_DIM] = {1};
	cr_assert_eq(qs_search(e->db, "*=>[KNN 3 @v $B]", v, sizeof(v)), 0);
	cr_assert_eq(qs_rows(qs_state(e->db, 0), NULL), 1, "%s: recording starts over", what);
}

Test(db_qsample, corrupt_file_ignored)
{
	qs_env_t e;
	qs_setup(&e);
	char path[300], copy[320], cmd[700];
	qs_path(&e, path, sizeof(path));
	snprintf(copy, sizeof(copy), "%s.good", path);
	qs_fill(e.db, 300);
	vela_err_t err = {0};
	cr_assert_eq(vela_workload_save(e.db, "qs", "v", &err), 0, "%s", err.msg);
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", path, copy);
	cr_assert_eq(system(cmd), 0);
	long n = qs_file_size(path);
	cr_assert_eq(n, 24 + 300 * QS_DIM * 4 + 8);
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", copy, path);
	const long offs[] = {0, 9, 12, 30, n / 2, n - 1};
	for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
		qs_close(&e);
		cr_assert_eq(system(cmd), 0);
		qs_poke(path, offs[i], 0x10);
		qs_expect_ignored(&e, "a flipped byte");
	}
	const long lens[] = {0, 7, 24, n / 2, n - 1};
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		qs_close(&e);
		cr_assert_eq(system(cmd), 0);
		cr_assert_eq(truncate(path, lens[i]), 0);
		qs_expect_ignored(&e, "a truncated file");
	}
	qs_close(&e);
	cr_assert_eq(system(cmd), 0);
	FILE *f = fopen(path, "ab");
	fputc(0, f);
	fclose(f);
	qs_expect_ignored(&e, "a longer file");
	/* The good copy still loads (the checks above refused damage, not the format). */
	qs_close(&e);
	cr_assert_eq(system(cmd), 0);
	e.db = db_open_ok(e.dir, 0);
	size_t m;
	float *Q = qs_copy(e.db, 0, &m);
	cr_assert_eq(m, 300);
	free(Q);
	qs_teardown(&e);
}

Test(db_qsample, file_functions)
{
	char dir[64], path[128];
	tmpdir_make(dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/q.bin", dir);
	float *Q;
	size_t m;
	cr_assert_eq(db_qsample_file_load(path, 4, &Q, &m), VELA_ENOTFOUND);
	float rows[3 * 4];
	for (int i = 0; i < 12; i++)
		rows[i] = (float)i * 0.25f - 1;
	cr_assert_eq(db_qsample_file_save(path, rows, 3, 4), 0);
	cr_assert_eq(db_qsample_file_load(path, 4, &Q, &m), 0);
	cr_assert_eq(m, 3);
	cr_assert_arr_eq(Q, rows, sizeof(rows));
	free(Q);
	cr_assert_eq(db_qsample_file_load(path, 5, &Q, &m), VELA_EDIM);
	cr_assert(Q == NULL && m == 0);
	cr_assert_eq(db_qsample_file_save(path, rows, 3, 0), VELA_EINVAL);
	cr_assert_eq(db_qsample_file_save(path, NULL, 3, 4), VELA_EINVAL);
	cr_assert_eq(db_qsample_file_save(path, rows, 0, 4), 0, "an empty sample");
	cr_assert_eq(db_qsample_file_load(path, 4, &Q, &m), 0);
	cr_assert(Q == NULL && m == 0);
	rows[5] = NAN;
	cr_assert_eq(db_qsample_file_save(path, rows, 3, 4), 0);
	cr_assert_eq(db_qsample_file_load(path, 4, &Q, &m), VELA_ECORRUPT, "a NaN row");
	rows[5] = 0;
	cr_assert_eq(db_qsample_file_save(path, rows, 3, 4), 0);
	qs_poke(path, 4, 0x02); /* version 1 -> 3: newer, and the checksum no longer holds */
	cr_assert_eq(db_qsample_file_load(path, 4, &Q, &m), VELA_EVERSION);
	qs_poke(path, 4, 0x02);
	qs_poke(path, 20, 0x01);
	cr_assert_eq(db_qsample_file_load(path, 4, &Q, &m), VELA_ECORRUPT);
	tmpdir_remove(dir);
}

/* The recording cost on the search path (ASan builds are several times slower). */
Test(db_qsample, record_cost)
{
	enum { DIM = 768, N = 1000000 };
	db_field_state_t s;
	memset(&s, 0, sizeof(s));
	pthread_mutex_init(&s.mu, NULL);
	float *v = calloc(DIM, sizeof(float));
	uint64_t t0 = vela_now_ns();
	for (uint32_t i = 0; i < N; i++) {
		v[0] = (float)i;
		db_qsample_record(&s, v, DIM);
	}
	double ns = (double)(vela_now_ns() - t0) / N;
	uint64_t seen;
	uint32_t rows = qs_rows(&s, &seen);
	cr_assert_eq(rows, DB_QSAMPLE_ROWS_DEFAULT);
	cr_assert_eq(seen, N);
	cr_log_info("db_qsample_record: %d calls at dim %d, %.1f ns per call", N, DIM, ns);
	fprintf(stderr, "db_qsample_record: %d calls at dim %d, %.1f ns per call\n", N, DIM, ns);
	db_qsample_clear(&s);
	pthread_mutex_destroy(&s.mu);
	free(v);
}
