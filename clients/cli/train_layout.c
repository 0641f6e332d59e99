/* vela train-layout: fill the workload log of a database's vector fields
 * from a query file (the `vela batch` JSON lines), save it beside the
 * database, and optionally build the partition layout from it
 * (docs/partitions.md). In-process only: the log lives in the engine. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"

/* Distinct (index, field) pairs of one file. */
#define TL_PAIRS_MAX 64

static int tl_usage(void)
{
	fprintf(stderr,
		"usage: vela train-layout --db DIR [--index NAME] [--field F] [--k K]\n"
		"                         [--build] [--leaf-min N] [--cluster-rows N]\n"
		"                         [--encoding field|lvq8] QUERIES.jsonl\n"
		"  records every query's filter shape in its vector field's workload log,\n"
		"  saves the log (<DIR>/wlog-<index id>-<field>.bin) and with --build\n"
		"  builds the partition layout and prints it\n");
	return 2;
}

typedef struct tl_pair {
	const char *index, *field;
} tl_pair_t;

static int tl_record(vela_db_t *db, const cli_query_t *q, const char *index, vela_err_t *err)
{
	bool star = strcmp(q->filter, "*") == 0 || q->filter[0] == '\0';
	char *t;
	if (asprintf(&t, "%s%s%s=>[KNN %u @%s $vec]", star ? "" : "(", star ? "*" : q->filter,
		     star ? "" : ")", q->k, q->field) < 0)
		return vela_err_set(err, VELA_ENOMEM, "out of memory");
	vela_kv_t prm = {"vec", 3, q->vec, (size_t)q->dim * sizeof(float)};
	int rc = vela_workload_record(db, index, t, 0, &prm, 1, err);
	free(t);
	return rc;
}

int cmd_train_layout(int argc, char **argv)
{
	cli_target_t tg = {0};
	cli_query_defaults_t d = {.field = "v", .k = 10};
	vela_layout_opts_t lo = {0};
	bool build = false;
	const char *path = NULL;
	for (int i = 0; i < argc; i++) {
		int t = cli_target_opt(&tg, argc, argv, &i);
		size_t v;
		if (t < 0)
			return tl_usage();
		if (t > 0)
			continue;
		if (strcmp(argv[i], "--build") == 0) {
			build = true;
		} else if (strcmp(argv[i], "--index") == 0 && i + 1 < argc) {
			d.index = argv[++i];
		} else if (strcmp(argv[i], "--field") == 0 && i + 1 < argc) {
			d.field = argv[++i];
		} else if (strcmp(argv[i], "--k") == 0 && i + 1 < argc) {
			if (cli_parse_size("--k", argv[++i], 1, VELA_K_MAX, &v))
				return 2;
			d.k = (uint32_t)v;
		} else if (strcmp(argv[i], "--leaf-min") == 0 && i + 1 < argc) {
			if (cli_parse_size("--leaf-min", argv[++i], 1, 1u << 30, &v))
				return 2;
			lo.leaf_min = v;
		} else if (strcmp(argv[i], "--cluster-rows") == 0 && i + 1 < argc) {
			if (cli_parse_size("--cluster-rows", argv[++i], 8, 65536, &v))
				return 2;
			lo.cluster_rows = (uint32_t)v;
		} else if (strcmp(argv[i], "--encoding") == 0 && i + 1 < argc) {
			const char *e = argv[++i];
			if (strcasecmp(e, "field") == 0)
				lo.encoding = VELA_LAYOUT_ENCODING_FIELD;
			else if (strcasecmp(e, "lvq8") == 0)
				lo.encoding = VELA_LAYOUT_ENCODING_LVQ8;
			else
				return tl_usage();
		} else if (argv[i][0] != '-' && path == NULL) {
			path = argv[i];
		} else {
			return tl_usage();
		}
	}
	if (path == NULL || tg.db == NULL || tg.host != NULL) {
		if (tg.host)
			fprintf(stderr, "vela train-layout: runs in-process only (--db)\n");
		return tl_usage();
	}
	vela_err_t err = {0};
	cli_query_t *qs = NULL;
	size_t n = 0;
	if (cli_queries_load(path, &d, &qs, &n, &err)) {
		fprintf(stderr, "vela train-layout: %s: %s\n", path, err.msg);
		return 1;
	}
	vela_db_t *db;
	if (cli_db_open(&tg, &db)) {
		cli_queries_free(qs, n);
		return 1;
	}
	tl_pair_t pairs[TL_PAIRS_MAX];
	size_t np = 0, bad = 0;
	int rc = 0;
	for (size_t i = 0; i < n; i++) {
		const char *ix = qs[i].index ? qs[i].index : d.index;
		if (ix == NULL) {
			fprintf(stderr, "vela train-layout: query %zu names no index (--index)\n", i + 1);
			rc = 1;
			break;
		}
		if (tl_record(db, &qs[i], ix, &err)) {
			if (bad++ < 5)
				fprintf(stderr, "vela train-layout: query %zu: %s\n", i + 1, err.msg);
			continue;
		}
		size_t p = 0;
		while (p < np && !(strcmp(pairs[p].index, ix) == 0 &&
				   strcmp(pairs[p].field, qs[i].field) == 0))
			p++;
		if (p == np && np < TL_PAIRS_MAX)
			pairs[np++] = (tl_pair_t){ix, qs[i].field};
	}
	printf("recorded %zu of %zu queries\n", n - bad, n);
	for (size_t p = 0; rc == 0 && p < np; p++) {
		vela_layout_info_t li;
		if (vela_workload_save(db, pairs[p].index, pairs[p].field, &err) ||
		    (build && vela_layout_build(db, pairs[p].index, pairs[p].field, &lo, &err)) ||
		    vela_layout_info(db, pairs[p].index, pairs[p].field, &li, &err)) {
			fprintf(stderr, "vela train-layout: %s @%s: %s\n", pairs[p].index,
				pairs[p].field, err.msg);
			rc = 1;
			break;
		}
		printf("%s @%s: %llu queries, %llu shapes", pairs[p].index, pairs[p].field,
		       (unsigned long long)li.workload_queries,
		       (unsigned long long)li.workload_shapes);
		if (li.built)
			printf("; layout %u leaves, %u clusters (rows %llu/%llu/%llu, %s), %.1f ms",
			       li.leaves, li.clusters, (unsigned long long)li.min_rows,
			       (unsigned long long)li.median_rows, (unsigned long long)li.max_rows,
			       li.encoding == VELA_LAYOUT_ENCODING_LVQ8 ? "LVQ8" : "FIELD",
			       li.build_ns / 1e6);
		printf("\n");
	}
	vela_layout_release(db);
	vela_db_close(db);
	cli_queries_free(qs, n);
	return rc || bad ? 1 : 0;
}
