/* bench_snapshot: restart time of a database holding a GRAPH index, with its
 * graph snapshot (load) and without it (rebuild from LMDB), in one run.
 *
 * Usage: bench_snapshot [--n N] [--dim D] [--dir DIR]
 * Builds N random vectors (seeded) into DIR (default a temp dir), closes the
 * database (which writes the snapshot), then reopens it 3 times with the
 * snapshot and 3 times after deleting it, and prints the best of each. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "vela/vela.h"

static uint64_t rng = 42;

static float urand(void)
{
	rng = rng * 6364136223846793005ull + 1442695040888963407ull;
	return (float)((rng >> 40) / 16777216.0) * 2.0f - 1.0f;
}

static void die(const char *what, const vela_err_t *err)
{
	fprintf(stderr, "bench_snapshot: %s: %s\n", what, err->msg);
	exit(1);
}

static void load(const char *dir, size_t n, uint32_t dim)
{
	vela_db_t *db;
	vela_err_t err;
	vela_db_options_t o = {.map_size = 8ull << 30, .flags = VELA_OPEN_NOSYNC};
	if (vela_db_open(dir, &o, &db, &err))
		die("open", &err);
	vela_field_def_t f = {.name = "v", .type = VELA_FIELD_VECTOR, .algo = VELA_ALGO_GRAPH,
			      .dim = dim, .metric = VELA_METRIC_L2, .graph_max_degree = 32,
			      .graph_build_window = 100};
	vela_index_def_t d = {.name = "g", .fields = &f, .n_fields = 1};
	if (vela_index_create(db, &d, &err))
		die("create", &err);
	float *v = malloc(dim * sizeof(float));
	for (size_t b = 0; b < n; b += 10000) {
		vela_batch_t *bt;
		if (vela_batch_begin(db, &bt, &err))
			die("batch", &err);
		for (size_t i = b; i < n && i < b + 10000; i++) {
			char key[32];
			for (uint32_t j = 0; j < dim; j++)
				v[j] = urand();
			int kl = snprintf(key, sizeof(key), "d:%zu", i);
			vela_kv_t kv = {"v", 1, v, dim * sizeof(float)};
			if (vela_batch_hset(bt, key, (size_t)kl, &kv, 1, NULL, &err))
				die("hset", &err);
		}
		if (vela_batch_commit(bt, &err))
			die("commit", &err);
	}
	free(v);
	vela_db_close(db); /* writes the snapshot */
}

static double reopen(const char *dir, uint32_t *from_snap)
{
	vela_db_t *db;
	vela_err_t err;
	uint64_t t0 = vela_now_ns();
	if (vela_db_open(dir, NULL, &db, &err))
		die("reopen", &err);
	double s = (double)(vela_now_ns() - t0) / 1e9;
	vela_index_info_t info;
	vela_index_info(db, "g", &info, &err);
	*from_snap = info.graphs_from_snapshot;
	/* Close without leaving a fresh snapshot behind for the rebuild rounds. */
	vela_db_close(db);
	return s;
}

int main(int argc, char **argv)
{
	size_t n = 100000;
	uint32_t dim = 128;
	char dir[256] = "";
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--n"))
			n = strtoull(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "--dim"))
			dim = (uint32_t)atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--dir"))
			snprintf(dir, sizeof(dir), "%s", argv[i + 1]);
	}
	if (!dir[0]) {
		snprintf(dir, sizeof(dir), "/tmp/vela-snap-XXXXXX");
		if (!mkdtemp(dir))
			return 1;
	}
	vela_log_set_level(VELA_LOG_WARN);
	load(dir, n, dim);
	char snap[300];
	snprintf(snap, sizeof(snap), "%s/graph-1-0.snap", dir);
	double best_load = 1e9, best_build = 1e9;
	uint32_t fs;
	for (int r = 0; r < 3; r++) {
		double s = reopen(dir, &fs); /* the close rewrote the snapshot */
		if (!fs)
			fprintf(stderr, "warning: snapshot not used in round %d\n", r);
		best_load = s < best_load ? s : best_load;
	}
	for (int r = 0; r < 3; r++) {
		unlink(snap);
		double s = reopen(dir, &fs);
		best_build = s < best_build ? s : best_build;
	}
	printf("bench_snapshot: N=%zu dim=%u R=32 L=100 cpu=[%s]\n", n, dim, vela_cpu_features_str());
	printf("reopen with snapshot     %8.3f s  (best of 3)\n", best_load);
	printf("reopen rebuilding graph  %8.3f s  (best of 3)\n", best_build);
	printf("speed-up                 %8.1fx   target >= 20x\n", best_build / best_load);
	return 0;
}
