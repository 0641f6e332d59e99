/* vela — command-line tool over the embedded engine.
 *
 *   vela demo [DIR] [FILE.tsv]   load vectors (TSV: dim floats then an id per
 *                                line; random data without a file), then run
 *                                filtered KNN queries and check them
 *   vela info DIR                list indexes with their document counts
 *   vela query DIR INDEX QUERY [NAME=v1,v2,...]...
 *                                run one query (first 100 rows); each
 *                                NAME=... is a FLOAT32 vector parameter
 *   vela batch | import | create  query files, bulk loads, index creation,
 *                                in-process (--db) or through a server
 *                                (batch.c, import.c, create.c; docs/cli.md)
 *   vela backup | restore        hot copies of a database (backup.c)
 *   vela embed                   embed a file of texts in bulk (embed.c)
 *   vela train-layout            workload log and partition layout from a
 *                                query file (train_layout.c)
 *   vela train                   retrain a compressed graph field on a query
 *                                sample (train.c) */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "common/common.h"
#include "vela/vela.h"

#define DEMO_DIM_DEFAULT 128
#define DEMO_N_DEFAULT 5000
#define DEMO_BATCH 500
/* Rows `vela query` prints. */
#define CLI_QUERY_LIMIT 100

static int usage(void)
{
	fprintf(stderr,
		"usage: vela demo [DIR] [FILE.tsv]\n"
		"       vela info DIR\n"
		"       vela query DIR INDEX QUERY [NAME=v1,v2,...]...\n"
		"       vela batch|import|create ... (run one without arguments for help)\n"
		"       vela backup DBDIR|HOST:PORT DEST    vela restore SRC DBDIR\n"
		"       vela embed [--model DIR] --out FILE.fvecs|.npy|.jsonl TEXTS (docs/cli.md)\n"
		"       vela train-layout --db DIR [--index NAME] [--build] QUERIES.jsonl\n"
		"       vela train --db DIR --index NAME [--field F] [--queries FILE] [--no-wait]\n");
	return 2;
}

static void die_err(const char *what, const vela_err_t *err)
{
	fprintf(stderr, "vela: %s: %s\n", what, err->msg[0] ? err->msg : vela_strerror(err->code));
	exit(1);
}

/* Read "f1\tf2...\tfD\tid" lines; returns rows, fills *dim. Caller frees. */
static float *tsv_load(const char *path, size_t *n, int *dim)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return NULL;
	size_t cap = 0, rows = 0;
	float *v = NULL;
	char *line = NULL;
	size_t lcap = 0;
	*dim = 0;
	while (getline(&line, &lcap, f) > 0) {
		float row[4096];
		int cols = 0;
		for (char *save, *t = strtok_r(line, "\t\n", &save); t && cols < 4096;
		     t = strtok_r(NULL, "\t\n", &save))
			row[cols++] = strtof(t, NULL);
		if (cols < 2)
			continue;
		if (*dim == 0)
			*dim = cols - 1; /* the last column is an id */
		if (cols - 1 != *dim)
			continue;
		if (rows == cap) {
			cap = cap ? cap * 2 : 1024;
			float *nv = realloc(v, cap * (size_t)*dim * sizeof(float));
			if (nv == NULL)
				break;
			v = nv;
		}
		memcpy(v + rows * (size_t)*dim, row, (size_t)*dim * sizeof(float));
		rows++;
	}
	free(line);
	fclose(f);
	*n = rows;
	return v;
}

static float *random_load(size_t n, int dim)
{
	float *v = malloc(n * (size_t)dim * sizeof(float));
	srand(42);
	for (size_t i = 0; v && i < n * (size_t)dim; i++)
		v[i] = (float)rand() / RAND_MAX;
	return v;
}

static void demo_create(vela_db_t *db, int dim)
{
	vela_field_def_t f[] = {
		{.name = "bucket", .type = VELA_FIELD_TAG},
		{.name = "n", .type = VELA_FIELD_NUMERIC},
		{.name = "v", .type = VELA_FIELD_VECTOR, .dim = (uint32_t)dim, .metric = VELA_METRIC_L2},
	};
	const char *pre[] = {"vec:"};
	vela_index_def_t def = {.name = "demo", .prefixes = pre, .n_prefixes = 1, .fields = f,
				.n_fields = 3};
	vela_err_t err;
	vela_index_drop(db, "demo", true, &err);
	if (vela_index_create(db, &def, &err))
		die_err("create index", &err);
}

static void demo_load(vela_db_t *db, const float *v, size_t n, int dim)
{
	uint64_t t0 = vela_now_ns();
	for (size_t b0 = 0; b0 < n; b0 += DEMO_BATCH) {
		vela_batch_t *b;
		vela_err_t err;
		if (vela_batch_begin(db, &b, &err))
			die_err("batch", &err);
		for (size_t i = b0; i < n && i < b0 + DEMO_BATCH; i++) {
			char key[32], bucket[8], num[16];
			int kl = snprintf(key, sizeof(key), "vec:%zu", i);
			int bl = snprintf(bucket, sizeof(bucket), "b%zu", i % 10);
			int nl = snprintf(num, sizeof(num), "%zu", i);
			vela_kv_t kv[] = {{"bucket", 6, bucket, (size_t)bl}, {"n", 1, num, (size_t)nl},
					  {"v", 1, v + i * (size_t)dim, (size_t)dim * sizeof(float)}};
			if (vela_batch_hset(b, key, (size_t)kl, kv, 3, NULL, &err))
				die_err("hset", &err);
		}
		if (vela_batch_commit(b, &err))
			die_err("commit", &err);
	}
	double s = (double)(vela_now_ns() - t0) / 1e9;
	printf("loaded %zu vectors of dim %d in %.2f s (%.0f docs/s, %d per commit)\n", n, dim, s,
	       (double)n / s, DEMO_BATCH);
}

/* Brute-force nearest neighbour in double, to check the engine's answer. */
static size_t demo_truth(const float *v, size_t n, int dim, const float *q, size_t bucket)
{
	size_t best = 0;
	double bd = INFINITY;
	for (size_t i = bucket; i < n; i += 10) {
		double d = 0;
		for (int j = 0; j < dim; j++)
			d += ((double)v[i * dim + j] - q[j]) * ((double)v[i * dim + j] - q[j]);
		if (d < bd) {
			bd = d;
			best = i;
		}
	}
	return best;
}

static int demo_queries(vela_db_t *db, const float *v, size_t n, int dim)
{
	int ok = 0, total = 10;
	printf("\nquery: @bucket:{bX}=>[KNN 3 @v $q AS dist]\n");
	for (int i = 0; i < total; i++) {
		const float *q = v + (size_t)(i * 97 % n) * dim;
		char query[96];
		snprintf(query, sizeof(query), "@bucket:{b%d}=>[KNN 3 @v $q AS dist]", (i + 3) % 10);
		vela_kv_t p = {"q", 1, q, (size_t)dim * sizeof(float)};
		const char *ret[] = {"dist", "n"};
		vela_search_req_t req = {.index = "demo", .query = query, .params = &p, .n_params = 1,
					 .return_fields = ret, .n_return = 2};
		vela_result_t *r;
		vela_err_t err;
		uint64_t t0 = vela_now_ns();
		if (vela_search(db, &req, &r, &err))
			die_err("search", &err);
		double us = (double)(vela_now_ns() - t0) / 1e3;
		char want[32];
		snprintf(want, sizeof(want), "vec:%zu", demo_truth(v, n, dim, q, (size_t)(i + 3) % 10));
		int hit = r->n_hits && strcmp(r->hits[0].key, want) == 0;
		ok += hit;
		printf("  bucket b%d -> %-10s dist %-10.6g (%6.0f us)  %s\n", (i + 3) % 10,
		       r->n_hits ? r->hits[0].key : "-", r->n_hits ? r->hits[0].dist : NAN, us,
		       hit ? "matches brute force" : "MISMATCH");
		vela_result_free(r);
	}
	printf("%d/%d nearest neighbours equal an independent brute force\n", ok, total);
	return ok == total ? 0 : 1;
}

static int cmd_demo(int argc, char **argv)
{
	const char *dir = argc > 0 ? argv[0] : "./data";
	const char *file = argc > 1 ? argv[1] : NULL;
	size_t n = DEMO_N_DEFAULT;
	int dim = DEMO_DIM_DEFAULT;
	float *v = file ? tsv_load(file, &n, &dim) : random_load(n, dim);
	if (v == NULL || n == 0) {
		fprintf(stderr, "vela: cannot load %s: %s\n", file ? file : "random data",
			strerror(errno));
		return 1;
	}
	printf("vela demo: database %s, %s, cpu: %s\n", dir, file ? file : "random vectors",
	       vela_cpu_features_str());
	vela_db_t *db;
	vela_err_t err;
	if (vela_db_open(dir, NULL, &db, &err))
		die_err(dir, &err);
	demo_create(db, dim);
	demo_load(db, v, n, dim);
	int rc = demo_queries(db, v, n, dim);
	vela_db_close(db);
	free(v);
	printf("\nnext: `vela info %s`, or `vela query %s demo '@bucket:{b1}' `\n", dir, dir);
	return rc;
}

static int cmd_info(int argc, char **argv)
{
	if (argc < 1)
		return usage();
	vela_db_t *db;
	vela_err_t err;
	if (vela_db_open(argv[0], NULL, &db, &err))
		die_err(argv[0], &err);
	char **names;
	size_t n;
	size_t map, used;
	vela_db_map_usage(db, &map, &used);
	printf("documents: %llu\nmap: %zu bytes, %zu used\n", (unsigned long long)vela_db_size(db),
	       map, used);
	if (vela_index_list(db, &names, &n) == 0) {
		for (size_t i = 0; i < n; i++) {
			vela_index_info_t info;
			if (vela_index_info(db, names[i], &info, &err) == 0)
				printf("index %s: %llu docs, %llu indexing failures, %llu vector bytes\n",
				       names[i], (unsigned long long)info.num_docs,
				       (unsigned long long)info.indexing_failures,
				       (unsigned long long)info.vector_bytes);
		}
		vela_strv_free(names, n);
	}
	vela_db_close(db);
	return 0;
}

/* NAME=v1,v2,... -> a FLOAT32 blob parameter (malloc'd). */
static int param_parse(const char *arg, vela_kv_t *kv)
{
	const char *eq = strchr(arg, '=');
	if (eq == NULL)
		return -1;
	size_t cap = 16, n = 0;
	float *v = malloc(cap * sizeof(float));
	for (const char *p = eq + 1; v && *p;) {
		char *end;
		float x = strtof(p, &end);
		if (end == p)
			break;
		if (n == cap && (v = realloc(v, (cap *= 2) * sizeof(float))) == NULL)
			return -1;
		v[n++] = x;
		p = *end == ',' ? end + 1 : end;
	}
	*kv = (vela_kv_t){arg, (size_t)(eq - arg), v, n * sizeof(float)};
	return v ? 0 : -1;
}

static int cmd_query(int argc, char **argv)
{
	if (argc < 3)
		return usage();
	vela_kv_t params[16];
	int np = 0;
	for (int i = 3; i < argc && np < 16; i++)
		if (param_parse(argv[i], &params[np++]))
			return usage();
	vela_db_t *db;
	vela_err_t err;
	if (vela_db_open(argv[0], NULL, &db, &err))
		die_err(argv[0], &err);
	vela_search_req_t req = {.index = argv[1], .query = argv[2], .params = params,
				 .n_params = (size_t)np, .limit = CLI_QUERY_LIMIT};
	vela_result_t *r;
	int rc = vela_search(db, &req, &r, &err);
	if (rc == 0) {
		printf("%llu results\n", (unsigned long long)r->total);
		for (size_t i = 0; i < r->n_hits; i++) {
			printf("%s", r->hits[i].key);
			if (!isnan(r->hits[i].dist))
				printf("  %s=%.6g", r->dist_name, r->hits[i].dist);
			printf("\n");
		}
		vela_result_free(r);
	} else {
		fprintf(stderr, "vela: %s\n", err.msg);
	}
	for (int i = 0; i < np; i++)
		free((void *)params[i].value);
	vela_db_close(db);
	return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return usage();
	if (strcmp(argv[1], "demo") == 0)
		return cmd_demo(argc - 2, argv + 2);
	if (strcmp(argv[1], "info") == 0)
		return cmd_info(argc - 2, argv + 2);
	if (strcmp(argv[1], "query") == 0)
		return cmd_query(argc - 2, argv + 2);
	if (strcmp(argv[1], "batch") == 0)
		return cmd_batch(argc - 2, argv + 2);
	if (strcmp(argv[1], "import") == 0)
		return cmd_import(argc - 2, argv + 2);
	if (strcmp(argv[1], "create") == 0)
		return cmd_create(argc - 2, argv + 2);
	if (strcmp(argv[1], "backup") == 0)
		return cmd_backup(argc - 2, argv + 2);
	if (strcmp(argv[1], "restore") == 0)
		return cmd_restore(argc - 2, argv + 2);
	if (strcmp(argv[1], "embed") == 0)
		return cmd_embed(argc - 2, argv + 2);
	if (strcmp(argv[1], "train-layout") == 0)
		return cmd_train_layout(argc - 2, argv + 2);
	if (strcmp(argv[1], "train") == 0)
		return cmd_train(argc - 2, argv + 2);
	return usage();
}
