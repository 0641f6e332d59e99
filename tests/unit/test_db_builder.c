/* Background graph builds and retraining (VELA_OPEN_BACKGROUND_BUILD,
 * vela_index_train): writes made while a build runs reach the new graph,
 * answers stay exact before it is in, a close in the middle of a build loses
 * nothing, and a LeanVec field retrained out-of-distribution answers like
 * a double-precision brute force, keeps its training queries and gives
 * the same answers after a reopen. */
#include "test_db_util.h"
#include "db/db.h"

#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#define TEST_RNG_SEED 0x5eedb01dull
#include "test_rng.h"

#define N 4000
#define DIM 32
#define NQ 40
#define K 10

static char dir[64];
static float base[N][DIM];
static int live[N];

static void setup(void)
{
	tmpdir_make(dir, sizeof(dir));
}

static void teardown(void)
{
	tmpdir_remove(dir);
}

TestSuite(db_builder, .init = setup, .fini = teardown, .timeout = 240);

/* 20 Gaussian clusters in a 6-d latent space mapped to DIM, plus noise. */
static void make_vec(float *v, int ood)
{
	static float map[2][6][DIM];
	static int ready;
	if (!ready) {
		uint64_t saved = rng_state;
		rng_state = 7;
		for (int m = 0; m < 2; m++)
			for (int a = 0; a < 6; a++)
				for (int j = 0; j < DIM; j++)
					map[m][a][j] = rng_gauss();
		rng_state = saved;
		ready = 1;
	}
	int c = (int)(rng_unit() * 20);
	float z[6];
	for (int a = 0; a < 6; a++)
		z[a] = (float)((c * 5 + a * 3) % 7) + 0.6f * rng_gauss();
	for (int j = 0; j < DIM; j++) {
		double x = 0.05 * rng_gauss();
		for (int a = 0; a < 6; a++) /* OOD queries: the base's map plus another one */
			x += (map[0][a][j] + (ood ? 0.8f * map[1][a][j] : 0.0f)) * z[a];
		v[j] = (float)x;
	}
}

static vela_db_t *open_bg(void)
{
	vela_db_t *db = NULL;
	vela_err_t err = {0};
	vela_db_options_t o = {.flags = VELA_OPEN_BACKGROUND_BUILD};
	cr_assert_eq(vela_db_open(dir, &o, &db, &err), 0, "%s", err.msg);
	return db;
}

static void put(vela_db_t *db, int i)
{
	char key[16];
	snprintf(key, sizeof(key), "d:%d", i);
	vela_kv_t kv = {"v", 1, base[i], sizeof(base[i])};
	vela_err_t err;
	cr_assert_eq(vela_hset(db, key, strlen(key), &kv, 1, NULL, &err), 0, "%s", err.msg);
	live[i] = 1;
}

static void del(vela_db_t *db, int i)
{
	char key[16];
	snprintf(key, sizeof(key), "d:%d", i);
	vela_err_t err;
	int n = 0;
	cr_assert_eq(vela_del(db, key, strlen(key), &n, &err), 0, "%s", err.msg);
	cr_assert_eq(n, 1);
	live[i] = 0;
}

static void create(vela_db_t *db, uint32_t compression)
{
	vela_field_def_t f = {.name = "v", .type = VELA_FIELD_VECTOR, .algo = VELA_ALGO_GRAPH,
			      .dim = DIM, .metric = VELA_METRIC_L2, .graph_max_degree = 32,
			      .graph_build_window = 100, .compression = compression,
			      .training_threshold = compression ? 1024 : 0};
	const char *pre[] = {"d:"};
	vela_index_def_t d = {.name = "g", .prefixes = pre, .n_prefixes = 1, .fields = &f, .n_fields = 1};
	vela_err_t err;
	cr_assert_eq(vela_index_create(db, &d, &err), 0, "%s", err.msg);
}

static vela_index_info_t info(vela_db_t *db)
{
	vela_index_info_t in;
	vela_err_t err;
	cr_assert_eq(vela_index_info(db, "g", &in, &err), 0);
	return in;
}

static int live_count(void)
{
	int n = 0;
	for (int i = 0; i < N; i++)
		n += live[i];
	return n;
}

/* One KNN search; fills ids (doc numbers), returns the hit count and plan. */
static size_t knn(vela_db_t *db, const float *q, int *ids, char *plan, size_t plan_len)
{
	char qs[96];
	snprintf(qs, sizeof(qs), "*=>[KNN %d @v $B EF_RUNTIME 100]", K);
	vela_kv_t p = {"B", 1, q, DIM * sizeof(float)};
	vela_search_req_t req = {.index = "g", .query = qs, .params = &p, .n_params = 1,
				 .nocontent = true};
	vela_result_t *r;
	vela_err_t err;
	cr_assert_eq(vela_search(db, &req, &r, &err), 0, "%s", err.msg);
	size_t n = r->n_hits;
	for (size_t h = 0; h < n; h++)
		ids[h] = atoi(r->hits[h].key + 2);
	snprintf(plan, plan_len, "%s", r->plan);
	vela_result_free(r);
	return n;
}

/* Brute force in double over the live documents: the K nearest. */
static void exact(const float *q, int *ids)
{
	double best[K];
	int n = 0;
	for (int i = 0; i < N; i++) {
		if (!live[i])
			continue;
		double d = 0;
		for (int j = 0; j < DIM; j++)
			d += ((double)base[i][j] - q[j]) * ((double)base[i][j] - q[j]);
		if (n == K && d >= best[K - 1])
			continue;
		int pos = n < K ? n++ : K - 1;
		while (pos > 0 && best[pos - 1] > d) {
			best[pos] = best[pos - 1];
			ids[pos] = ids[pos - 1];
			pos--;
		}
		best[pos] = d;
		ids[pos] = i;
	}
}

/* Mean recall@K over NQ queries; every hit must be a live document. */
static double recall(vela_db_t *db, int ood, const char *plan)
{
	double hit = 0;
	for (int qi = 0; qi < NQ; qi++) {
		float q[DIM];
		make_vec(q, ood);
		int got[K], want[K];
		char p[32];
		size_t n = knn(db, q, got, p, sizeof(p));
		if (plan)
			cr_assert_str_eq(p, plan);
		exact(q, want);
		for (size_t h = 0; h < n; h++) {
			cr_assert(live[got[h]], "deleted doc %d returned", got[h]);
			for (int t = 0; t < K; t++)
				hit += want[t] == got[h];
		}
	}
	return hit / (NQ * K);
}

/* Writes while the graph builds: updates, deletes and inserts. */
typedef struct churn {
	vela_db_t *db;
	int from, to;
} churn_t;

static float alt[N][DIM]; /* the changed vectors (made before the thread starts) */

static void *churn_main(void *arg)
{
	churn_t *c = arg;
	for (int i = c->from; i < c->to; i++) {
		if (i % 3 == 0 && live[i - c->from]) {
			del(c->db, i - c->from);
		} else if (i % 3 == 1) {
			memcpy(base[i - c->from], alt[i], sizeof(alt[i])); /* same key */
			put(c->db, i - c->from);
		}
		put(c->db, i);
	}
	return NULL;
}

static void build_with_churn(uint32_t compression)
{
	for (int i = 0; i < N; i++) {
		make_vec(base[i], 0);
		make_vec(alt[i], 0);
	}
	vela_db_t *db = open_bg();
	create(db, compression);
	for (int i = 0; i < 3000; i++)
		put(db, i);
	/* The write that crossed the threshold returned before the graph. */
	churn_t c = {db, 3000, N};
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, churn_main, &c), 0);
	/* Searches while it builds (exact, or the graph once it is in) answer
	 * (the truth moves under them: recall is checked after). */
	for (int qi = 0; qi < NQ; qi++) {
		float q[DIM];
		int got[K];
		char p[32];
		make_vec(q, 0);
		cr_assert_eq(knn(db, q, got, p, sizeof(p)), K);
	}
	pthread_join(t, NULL);
	cr_assert_eq(vela_db_wait_builds(db, 0), 0);
	cr_assert_eq(info(db).graph_nodes, (uint64_t)live_count(), "every live vector in the graph");
	double r = recall(db, 0, "graph");
	cr_log_info("compression %u: recall %.4f after the background build", compression, r);
	cr_assert_geq(r, 0.95, "recall %.4f", r);
	/* Every vector written during the build is reachable: its own query
	 * finds it first (vectors are distinct). */
	for (int i = 0; i < N; i += 7) {
		if (!live[i])
			continue;
		int got[K];
		char p[32];
		cr_assert_geq(knn(db, base[i], got, p, sizeof(p)), 1);
		cr_assert_eq(got[0], i, "doc %d not found by its own vector (got %d)", i, got[0]);
	}
	vela_db_close(db);
}

Test(db_builder, f32_writes_during_the_build_reach_the_graph)
{
	build_with_churn(0);
}

Test(db_builder, lvq8_writes_during_the_build_reach_the_graph)
{
	build_with_churn(1 + GRAPH_LVQ_LVQ8);
}

Test(db_builder, close_during_a_build_then_reopen)
{
	for (int i = 0; i < N; i++)
		make_vec(base[i], 0);
	vela_db_t *db = open_bg();
	create(db, 0);
	for (int i = 0; i < N; i++)
		put(db, i);
	vela_db_close(db); /* most likely mid-build: cancelled, nothing lost */
	db = open_bg();
	cr_assert_eq(info(db).num_docs, N);
	cr_assert_eq(vela_db_wait_builds(db, 0), 0);
	cr_assert_eq(info(db).graph_nodes, N);
	cr_assert_geq(recall(db, 0, "graph"), 0.95);
	vela_db_close(db);
}

Test(db_builder, train_errors)
{
	for (int i = 0; i < N; i++)
		make_vec(base[i], 0);
	vela_db_t *db = open_bg();
	create(db, 1 + GRAPH_LVQ_LEANVEC4X8);
	vela_err_t err;
	float q[DIM] = {0};
	cr_assert_eq(vela_index_train(db, "nope", NULL, NULL, 0, 0, &err), VELA_ENOTFOUND);
	cr_assert_eq(vela_index_train(db, "g", "zz", NULL, 0, 0, &err), VELA_ENOTFOUND);
	cr_assert_eq(vela_index_train(db, "g", NULL, NULL, 0, 0, &err), VELA_EBUSY,
		     "below the training threshold");
	for (int i = 0; i < 1500; i++)
		put(db, i);
	cr_assert_eq(vela_db_wait_builds(db, 0), 0);
	cr_assert_eq(vela_index_train(db, "g", "v", q, 1, DIM - 1, &err), VELA_EDIM);
	q[3] = NAN;
	cr_assert_eq(vela_index_train(db, "g", "v", q, 1, DIM, &err), VELA_EINVAL);
	vela_db_close(db);
	tmpdir_remove(dir);
	tmpdir_make(dir, sizeof(dir));
	db = open_bg();
	create(db, 0);
	for (int i = 0; i < 1500; i++)
		put(db, i);
	cr_assert_eq(vela_index_train(db, "g", NULL, NULL, 0, 0, &err), VELA_EINVAL,
		     "an uncompressed field has nothing to train");
	vela_db_close(db);
}

Test(db_builder, leanvec_retrained_ood_keeps_answers_across_reopen)
{
	for (int i = 0; i < N; i++)
		make_vec(base[i], 0);
	vela_db_t *db = open_bg();
	create(db, 1 + GRAPH_LVQ_LEANVEC4X8);
	for (int i = 0; i < N; i++)
		put(db, i);
	cr_assert_eq(vela_db_wait_builds(db, 0), 0);
	double r_id = recall(db, 1, "graph");
	/* A training sample of OOD queries, not the measured ones. */
	static float tq[500][DIM];
	for (int i = 0; i < 500; i++)
		make_vec(tq[i], 1);
	vela_err_t err;
	cr_assert_eq(vela_index_train(db, "g", "v", &tq[0][0], 500, DIM, &err), 0, "%s", err.msg);
	cr_assert_eq(vela_db_wait_builds(db, 0), 0);
	cr_assert_eq(info(db).graph_nodes, N);
	uint64_t saved = rng_state;
	double r_ood = recall(db, 1, "graph");
	cr_log_info("LeanVec4x8 OOD queries: recall %.4f trained ID, %.4f trained OOD", r_id, r_ood);
	cr_assert_geq(r_ood, 0.9, "recall %.4f after OOD training", r_ood);
	char path[128];
	snprintf(path, sizeof(path), "%s/train-1-0.bin", dir);
	struct stat st;
	cr_assert_eq(stat(path, &st), 0, "the training queries are kept beside the database");
	/* The same answers after a reopen from the snapshot (the store is
	 * retrained on the kept queries: the graph matches it). */
	int before[NQ][K];
	rng_state = saved;
	for (int qi = 0; qi < NQ; qi++) {
		float q[DIM];
		char p[32];
		make_vec(q, 1);
		cr_assert_eq(knn(db, q, before[qi], p, sizeof(p)), K);
	}
	vela_db_close(db);
	db = open_bg();
	cr_assert_eq(info(db).graphs_from_snapshot, 1);
	rng_state = saved;
	int same = 0;
	for (int qi = 0; qi < NQ; qi++) {
		float q[DIM];
		int after[K];
		char p[32];
		make_vec(q, 1);
		cr_assert_eq(knn(db, q, after, p, sizeof(p)), K);
		same += memcmp(after, before[qi], sizeof(after)) == 0;
	}
	cr_assert_eq(same, NQ, "%d of %d queries answered the same after the reopen", same, NQ);
	vela_db_close(db);
}

/* ------------------------------------------------ released F32 rows */

/* A compressed field with a NUMERIC beside it (n = doc number). */
static void create_with_num(vela_db_t *db, uint32_t compression)
{
	vela_field_def_t f[] = {
		{.name = "v", .type = VELA_FIELD_VECTOR, .algo = VELA_ALGO_GRAPH, .dim = DIM,
		 .metric = VELA_METRIC_L2, .graph_max_degree = 32, .graph_build_window = 100,
		 .compression = compression, .training_threshold = 1024},
		{.name = "n", .type = VELA_FIELD_NUMERIC},
	};
	const char *pre[] = {"d:"};
	vela_index_def_t d = {.name = "g", .prefixes = pre, .n_prefixes = 1, .fields = f,
			      .n_fields = 2};
	vela_err_t err;
	cr_assert_eq(vela_index_create(db, &d, &err), 0, "%s", err.msg);
}

static void put_num(vela_db_t *db, int i)
{
	char key[16], num[16];
	snprintf(key, sizeof(key), "d:%d", i);
	snprintf(num, sizeof(num), "%d", i);
	vela_kv_t kv[] = {{"v", 1, base[i], sizeof(base[i])}, {"n", 1, num, strlen(num)}};
	vela_err_t err;
	cr_assert_eq(vela_hset(db, key, strlen(key), kv, 2, NULL, &err), 0, "%s", err.msg);
	live[i] = 1;
}

/* |q - base[i]|^2 in double. */
static double true_dist(const float *q, int i)
{
	double d = 0;
	for (int j = 0; j < DIM; j++)
		d += ((double)base[i][j] - q[j]) * ((double)base[i][j] - q[j]);
	return d;
}

/* KNN restricted to docs [0, hi) by an ADHOC_BF scan (the exact plan, on
 * the codes once the rows are released) against a brute force over the
 * original vectors: plan, filter and recall@K. Returns the recall. */
static double scan_recall(vela_db_t *db, int hi)
{
	double hit = 0;
	for (int qi = 0; qi < NQ; qi++) {
		float q[DIM];
		make_vec(q, 0);
		char qs[128];
		snprintf(qs, sizeof(qs), "@n:[0 %d]=>[KNN %d @v $B HYBRID_POLICY ADHOC_BF]", hi - 1, K);
		vela_kv_t p = {"B", 1, q, sizeof(q)};
		vela_search_req_t req = {.index = "g", .query = qs, .params = &p, .n_params = 1,
					 .nocontent = true};
		vela_result_t *r;
		vela_err_t err;
		cr_assert_eq(vela_search(db, &req, &r, &err), 0, "%s", err.msg);
		cr_assert_str_eq(r->plan, "filtered-scan");
		int want[K], nw = 0;
		double best[K];
		for (int i = 0; i < hi; i++) { /* the K nearest live docs below hi */
			if (!live[i])
				continue;
			double d = true_dist(q, i);
			if (nw == K && d >= best[K - 1])
				continue;
			int pos = nw < K ? nw++ : K - 1;
			for (; pos > 0 && best[pos - 1] > d; pos--) {
				best[pos] = best[pos - 1];
				want[pos] = want[pos - 1];
			}
			best[pos] = d;
			want[pos] = i;
		}
		cr_assert_eq(r->n_hits, (size_t)nw);
		for (size_t h = 0; h < r->n_hits; h++) {
			int id = atoi(r->hits[h].key + 2);
			cr_assert(id < hi && live[id], "doc %d outside the filter", id);
			for (int t = 0; t < nw; t++)
				hit += want[t] == id;
		}
		vela_result_free(r);
	}
	return hit / (NQ * K);
}

Test(db_builder, compressed_field_releases_its_f32_rows)
{
	for (int i = 0; i < N; i++) {
		make_vec(base[i], 0);
		make_vec(alt[i], 0);
	}
	vela_db_t *db = open_bg();
	create_with_num(db, 1 + GRAPH_LVQ_LVQ4X8);
	for (int i = 0; i < 3000; i++)
		put_num(db, i);
	cr_assert_eq(vela_db_wait_builds(db, 0), 0);
	vela_field_memory_t m;
	vela_err_t err;
	cr_assert_eq(vela_field_memory(db, "g", "v", &m, &err), 0, "%s", err.msg);
	cr_log_info("LVQ4x8 field: vectors %llu, codes %llu, graph %llu bytes",
		    (unsigned long long)m.vectors, (unsigned long long)m.compressed,
		    (unsigned long long)m.graph);
	cr_assert_lt(m.vectors, 3000 * DIM * sizeof(float) / 16, "the F32 rows are released");
	cr_assert_gt(m.compressed, 0u);

	/* Every plan still answers: the exact scan reads the codes. */
	double r = scan_recall(db, 150);
	cr_log_info("filtered scan on the codes: recall %.4f", r);
	cr_assert_geq(r, 0.97, "filtered-scan recall %.4f", r);
	cr_assert_geq(recall(db, 0, "graph"), 0.95);

	/* VECTOR_RANGE at a doc's 5th true distance: what comes back lies
	 * within the radius up to the encoding's error, and the true members
	 * come back. */
	float q[DIM];
	make_vec(q, 0);
	double d5[5];
	for (int k = 0; k < 5; k++)
		d5[k] = INFINITY;
	for (int i = 0; i < 3000; i++) {
		double d = true_dist(q, i);
		for (int k = 0; k < 5; k++)
			if (d < d5[k]) {
				memmove(d5 + k + 1, d5 + k, (4 - k) * sizeof(double));
				d5[k] = d;
				break;
			}
	}
	char qs[96];
	snprintf(qs, sizeof(qs), "@v:[VECTOR_RANGE %.9g $B]", d5[4]);
	vela_kv_t p = {"B", 1, q, sizeof(q)};
	vela_search_req_t req = {.index = "g", .query = qs, .params = &p, .n_params = 1,
				 .nocontent = true};
	vela_result_t *res;
	cr_assert_eq(vela_search(db, &req, &res, &err), 0, "%s", err.msg);
	cr_assert_geq(res->total, 4u, "range found %llu of 5", (unsigned long long)res->total);
	for (size_t h = 0; h < res->n_hits; h++)
		cr_assert_leq(true_dist(q, atoi(res->hits[h].key + 2)), d5[4] * 1.05 + 1e-3);
	vela_result_free(res);

	/* A retrain reads the vectors back from LMDB while writes go on. */
	cr_assert_eq(vela_index_train(db, "g", "v", NULL, 0, 0, &err), 0, "%s", err.msg);
	for (int i = 3000; i < N; i++) {
		if (i % 4 == 0)
			del(db, i - 3000);
		else if (i % 4 == 1) {
			memcpy(base[i - 3000], alt[i], sizeof(alt[i]));
			put_num(db, i - 3000);
		}
		put_num(db, i);
	}
	cr_assert_eq(vela_db_wait_builds(db, 0), 0);
	cr_assert_eq(info(db).graph_nodes, (uint64_t)live_count(), "every live vector in the graph");
	for (int i = 0; i < N; i += 7) {
		if (!live[i])
			continue;
		int got[K];
		char pl[32];
		cr_assert_geq(knn(db, base[i], got, pl, sizeof(pl)), 1);
		cr_assert_eq(got[0], i, "doc %d not found by its own vector (got %d)", i, got[0]);
	}
	cr_assert_geq(scan_recall(db, 400), 0.97);
	vela_db_close(db);

	/* Reopen: loaded from LMDB, the snapshot's graph over the re-encoded
	 * codes, the rows released again. */
	db = open_bg();
	cr_assert_eq(vela_db_wait_builds(db, 0), 0);
	cr_assert_eq(vela_field_memory(db, "g", "v", &m, &err), 0, "%s", err.msg);
	cr_assert_lt(m.vectors, N * DIM * sizeof(float) / 16);
	cr_assert_geq(scan_recall(db, 400), 0.97);
	cr_assert_geq(recall(db, 0, "graph"), 0.95);
	vela_db_close(db);
}
