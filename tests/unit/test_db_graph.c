/* GRAPH vector fields through the engine: the graph is built once the field
 * reaches DB_GRAPH_MIN_DOCS, answers KNN with high recall against a
 * double-precision brute force, keeps it through filters, updates, deletes
 * and a reopen (rebuild from LMDB), and selective filters scan exactly. */
#include "test_db_util.h"
#include "db/db.h"

#include <sys/stat.h>

#define N 3000
#define DIM 24
#define NQ 60
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

TestSuite(db_graph, .init = setup, .fini = teardown, .timeout = 120);

static uint64_t rng = 88172645463325252ull;

static double urand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (double)(rng >> 11) / 9007199254740992.0;
}

/* Clustered data with a low intrinsic dimension, as embeddings have: an
 * 8-dimensional latent (30 cluster centres plus spread) mapped linearly to
 * DIM, plus a little full-rank noise. */
static void make_vec(float *v)
{
	static float map[8][DIM];
	static int ready;
	if (!ready) {
		uint64_t saved = rng;
		rng = 12345;
		for (int a = 0; a < 8; a++)
			for (int j = 0; j < DIM; j++)
				map[a][j] = (float)(urand() - 0.5);
		rng = saved;
		ready = 1;
	}
	int c = (int)(urand() * 30);
	float z[8];
	for (int a = 0; a < 8; a++)
		z[a] = (float)((c * 7 + a * 3) % 11) + (float)(urand() + urand() + urand() - 1.5);
	for (int j = 0; j < DIM; j++) {
		double x = 0.05 * (urand() - 0.5);
		for (int a = 0; a < 8; a++)
			x += map[a][j] * z[a];
		v[j] = (float)x;
	}
}

static void put(vela_db_t *db, int i)
{
	char key[16], tag[4];
	snprintf(key, sizeof(key), "d:%d", i);
	snprintf(tag, sizeof(tag), "%c", i % 2 ? 'a' : 'b');
	vela_kv_t kv[] = {{"v", 1, base[i], sizeof(base[i])}, {"t", 1, tag, 1}};
	vela_err_t err;
	cr_assert_eq(vela_hset(db, key, strlen(key), kv, 2, NULL, &err), 0, "%s", err.msg);
	live[i] = 1;
}

static uint32_t compression; /* 0 or 1 + graph_lvq_kind_t, for the next create() */

static void create(vela_db_t *db)
{
	vela_field_def_t f[] = {
		{.name = "v", .type = VELA_FIELD_VECTOR, .algo = VELA_ALGO_GRAPH, .dim = DIM,
		 .metric = VELA_METRIC_L2, .graph_max_degree = 32, .graph_build_window = 100,
		 .compression = compression, .training_threshold = compression ? 1024 : 0},
		{.name = "t", .type = VELA_FIELD_TAG},
	};
	const char *pre[] = {"d:"};
	vela_index_def_t d = {.name = "g", .prefixes = pre, .n_prefixes = 1, .fields = f, .n_fields = 2};
	vela_err_t err;
	cr_assert_eq(vela_index_create(db, &d, &err), 0, "%s", err.msg);
}

/* Mean recall@K of queries against brute force over live docs (tag filter
 * 'a' = odd ids when tag_a). */
static double recall(vela_db_t *db, const char *filter, int tag_a, uint32_t window,
		     const char *plan)
{
	double hit = 0, tot = 0;
	for (int qi = 0; qi < NQ; qi++) {
		float q[DIM];
		make_vec(q);
		char qs[128];
		snprintf(qs, sizeof(qs), "%s=>[KNN %d @v $B EF_RUNTIME %u]", filter, K, window);
		vela_kv_t p = {"B", 1, q, sizeof(q)};
		vela_search_req_t req = {.index = "g", .query = qs, .params = &p, .n_params = 1,
					 .nocontent = true};
		vela_result_t *r;
		vela_err_t err;
		cr_assert_eq(vela_search(db, &req, &r, &err), 0, "%s: %s", qs, err.msg);
		cr_assert_str_eq(r->plan, plan, "%s answered by %s", qs, r->plan);
		/* brute force in double */
		double best[K];
		int ids[K], n = 0;
		for (int i = 0; i < N; i++) {
			if (!live[i] || (tag_a && i % 2 == 0))
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
		for (size_t h = 0; h < r->n_hits; h++) {
			int id = atoi(r->hits[h].key + 2);
			cr_assert(live[id], "deleted doc %d returned", id);
			cr_assert(!tag_a || id % 2 == 1, "filter violated by %d", id);
			for (int t = 0; t < n; t++)
				hit += ids[t] == id;
		}
		tot += n;
		vela_result_free(r);
	}
	return hit / tot;
}

static uint64_t graph_nodes(vela_db_t *db)
{
	vela_index_info_t info;
	vela_err_t err;
	cr_assert_eq(vela_index_info(db, "g", &info, &err), 0);
	return info.graph_nodes;
}

Test(db_graph, builds_searches_updates_deletes_reopens)
{
	vela_db_t *db = db_open_ok(dir, 0);
	create(db);
	for (int i = 0; i < N; i++)
		make_vec(base[i]);
	for (int i = 0; i < (int)DB_GRAPH_MIN_DOCS - 1; i++)
		put(db, i);
	cr_assert_eq(graph_nodes(db), 0, "no graph below the threshold");
	for (int i = (int)DB_GRAPH_MIN_DOCS - 1; i < N; i++)
		put(db, i);
	cr_assert_eq(graph_nodes(db), N, "graph built at the threshold, then inserted into");
	double r = recall(db, "*", 0, 64, "graph");
	cr_log_info("recall %.4f", r);
	cr_assert_geq(r, 0.95, "recall %.4f", r);
	/* 1,500 matches: under DB_HYBRID_SCAN_MAX (db/search.c), the planner scans them. */
	r = recall(db, "@t:{a}", 1, 64, "filtered-scan");
	cr_assert_geq(r, 0.95, "filtered recall %.4f", r);
	/* An unselective filter goes through the graph, honoured during the walk. */
	r = recall(db, "-@t:{zzz}", 0, 64, "graph");
	cr_assert_geq(r, 0.95, "unselective filtered recall %.4f", r);
	/* Moved vectors (same docids) and 20% deletes. */
	for (int i = 0; i < N; i += 7) {
		make_vec(base[i]);
		put(db, i);
	}
	for (int i = 1; i < N; i += 5) {
		char key[16];
		snprintf(key, sizeof(key), "d:%d", i);
		vela_err_t err;
		cr_assert_eq(vela_del(db, key, strlen(key), NULL, &err), 0);
		live[i] = 0;
	}
	r = recall(db, "*", 0, 64, "graph");
	cr_assert_geq(r, 0.95, "recall after updates and deletes %.4f", r);
	vela_db_close(db);
	db = db_open_ok(dir, 0); /* rebuilt from LMDB */
	cr_assert_eq(graph_nodes(db), N - N / 5);
	r = recall(db, "*", 0, 64, "graph");
	cr_assert_geq(r, 0.95, "recall after reopen %.4f", r);
	vela_db_close(db);
}

Test(db_graph, selective_filters_scan_exactly)
{
	vela_db_t *db = db_open_ok(dir, 0);
	create(db);
	for (int i = 0; i < N; i++) {
		make_vec(base[i]);
		put(db, i);
	}
	/* 20 documents match: below DB_HYBRID_SCAN_MAX, so exact (recall 1). */
	for (int i = 0; i < 20; i++) {
		char key[16];
		snprintf(key, sizeof(key), "d:%d", i * 101);
		vela_kv_t kv = {"t", 1, "rare", 4};
		vela_err_t err;
		cr_assert_eq(vela_hset(db, key, strlen(key), &kv, 1, NULL, &err), 0);
	}
	float q[DIM];
	make_vec(q);
	vela_kv_t p = {"B", 1, q, sizeof(q)};
	vela_search_req_t req = {.index = "g", .query = "@t:{rare}=>[KNN 20 @v $B]", .params = &p,
				 .n_params = 1, .nocontent = true, .limit = 20};
	vela_result_t *r;
	vela_err_t err;
	cr_assert_eq(vela_search(db, &req, &r, &err), 0, "%s", err.msg);
	cr_assert_eq(r->n_hits, 20, "every match found (%zu)", r->n_hits);
	cr_assert_str_eq(r->plan, "filtered-scan");
	vela_result_free(r);
	vela_db_close(db);
}

static uint32_t from_snapshot(vela_db_t *db)
{
	vela_index_info_t info;
	vela_err_t err;
	cr_assert_eq(vela_index_info(db, "g", &info, &err), 0);
	return info.graphs_from_snapshot;
}

/* Keys of a fixed query set, to compare graphs before and after a reopen. */
static void answers(vela_db_t *db, char out[8][256])
{
	uint64_t saved = rng;
	rng = 4242;
	for (int qi = 0; qi < 8; qi++) {
		float q[DIM];
		make_vec(q);
		vela_kv_t p = {"B", 1, q, sizeof(q)};
		vela_search_req_t req = {.index = "g", .query = "*=>[KNN 10 @v $B EF_RUNTIME 20]",
					 .params = &p, .n_params = 1, .nocontent = true};
		vela_result_t *r;
		vela_err_t err;
		cr_assert_eq(vela_search(db, &req, &r, &err), 0, "%s", err.msg);
		out[qi][0] = '\0';
		for (size_t h = 0; h < r->n_hits; h++) {
			strcat(out[qi], r->hits[h].key);
			strcat(out[qi], " ");
		}
		vela_result_free(r);
	}
	rng = saved;
}

static void file_copy(const char *from, const char *to)
{
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", from, to);
	cr_assert_eq(system(cmd), 0);
}

Test(db_graph, snapshot_reused_only_when_current_and_intact)
{
	vela_db_t *db = db_open_ok(dir, 0);
	create(db);
	for (int i = 0; i < 1500; i++) {
		make_vec(base[i]);
		put(db, i);
	}
	char before[8][256], after[8][256];
	answers(db, before);
	vela_db_close(db);

	char snap[128], keep[160];
	snprintf(snap, sizeof(snap), "%s/graph-1-0.snap", dir);
	snprintf(keep, sizeof(keep), "%s/old.snap", dir);
	FILE *f = fopen(snap, "rb");
	cr_assert_not_null(f, "no snapshot written at close");
	fclose(f);
	file_copy(snap, keep);

	/* A reopen without changes loads the snapshot and leaves the file alone. */
	struct stat st0, st1;
	cr_assert_eq(stat(snap, &st0), 0);
	db = db_open_ok(dir, 0);
	cr_assert_eq(from_snapshot(db), 1);
	vela_db_close(db);
	cr_assert_eq(stat(snap, &st1), 0);
	cr_assert_eq(st0.st_ino, st1.st_ino, "an unchanged graph was rewritten at close");

	db = db_open_ok(dir, 0); /* current snapshot: loaded, same answers */
	cr_assert_eq(from_snapshot(db), 1);
	answers(db, after);
	for (int i = 0; i < 8; i++)
		cr_assert_str_eq(after[i], before[i], "query %d differs after a snapshot load", i);
	put(db, 0); /* a change: the snapshot written at close moves on */
	vela_db_close(db);

	file_copy(keep, snap); /* put back the older, now stale, snapshot */
	db = db_open_ok(dir, 0);
	cr_assert_eq(from_snapshot(db), 0, "a stale snapshot must not be used");
	cr_assert_eq(graph_nodes(db), 1500);
	vela_db_close(db);

	/* Flip a byte in the middle: checksum fails, the graph is rebuilt. */
	f = fopen(snap, "r+b");
	cr_assert_not_null(f);
	fseek(f, 0, SEEK_END);
	long len = ftell(f);
	fseek(f, len / 2, SEEK_SET);
	int c = fgetc(f);
	fseek(f, len / 2, SEEK_SET);
	fputc(c ^ 0x5a, f);
	fclose(f);
	db = db_open_ok(dir, 0);
	cr_assert_eq(from_snapshot(db), 0, "a corrupted snapshot must not be used");
	cr_assert_eq(graph_nodes(db), 1500);
	answers(db, after);
	vela_db_close(db);
}

/* Compressed graphs: trained on the first 1,024 vectors, searched on the
 * codes and re-ranked on the secondary; a reopen re-trains the same store
 * and reuses the snapshot. */
static void compressed(graph_lvq_kind_t kind)
{
	compression = 1 + (uint32_t)kind;
	memset(live, 0, sizeof(live));
	vela_db_t *db = db_open_ok(dir, 0);
	create(db);
	for (int i = 0; i < N; i++) {
		make_vec(base[i]);
		put(db, i);
	}
	cr_assert_eq(graph_nodes(db), N);
	double r = recall(db, "*", 0, 64, "graph");
	cr_log_info("%s recall %.4f", graph_lvq_kind_name(kind), r);
	cr_assert_geq(r, 0.95, "%s recall %.4f", graph_lvq_kind_name(kind), r);
	char before[8][256], after[8][256];
	answers(db, before);
	vela_db_close(db);
	db = db_open_ok(dir, 0);
	cr_assert_eq(from_snapshot(db), 1, "snapshot over the re-trained store");
	answers(db, after);
	for (int i = 0; i < 8; i++)
		cr_assert_str_eq(after[i], before[i], "query %d differs after reopen", i);
	vela_db_close(db);
	compression = 0;
}

Test(db_graph, compressed_lvq4x8) { compressed(GRAPH_LVQ_LVQ4X8); }
Test(db_graph, compressed_leanvec4x8) { compressed(GRAPH_LVQ_LEANVEC4X8); }
Test(db_graph, compressed_lvq8) { compressed(GRAPH_LVQ_LVQ8); }
