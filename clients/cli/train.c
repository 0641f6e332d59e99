/* vela train: retrain a compressed graph field (LVQ / LeanVec) of a database
 * and rebuild its graph, in-process (vela_index_train). LeanVec learns its
 * projection out-of-distribution from a query sample: the rows of
 * --queries (.fvecs, .npy or `vela batch` JSON lines), or without it the
 * queries recorded from the field's searches (saved beside the database
 * with the workload log). Then waits for the build unless --no-wait. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"
#include "common/common.h"

static int tr_usage(void)
{
	fprintf(stderr,
		"usage: vela train --db DIR --index NAME [--field F] [--queries FILE] [--no-wait]\n"
		"  retrains the compressed graph field F (default: the index's only vector\n"
		"  field) and rebuilds its graph. LeanVec trains its projection on the\n"
		"  queries of FILE (.fvecs, .npy or `vela batch` .jsonl), else on the\n"
		"  queries recorded from the field's searches\n");
	return 2;
}

typedef struct tr_opts {
	cli_target_t tg;
	const char *index, *field, *queries;
	bool no_wait;
} tr_opts_t;

/* 0, or 2 after printing the usage. */
static int tr_args(int argc, char **argv, tr_opts_t *o)
{
	for (int i = 0; i < argc; i++) {
		int t = cli_target_opt(&o->tg, argc, argv, &i);
		if (t < 0)
			return tr_usage();
		if (t > 0)
			continue;
		if (strcmp(argv[i], "--index") == 0 && i + 1 < argc)
			o->index = argv[++i];
		else if (strcmp(argv[i], "--field") == 0 && i + 1 < argc)
			o->field = argv[++i];
		else if (strcmp(argv[i], "--queries") == 0 && i + 1 < argc)
			o->queries = argv[++i];
		else if (strcmp(argv[i], "--no-wait") == 0)
			o->no_wait = true;
		else
			return tr_usage();
	}
	if (o->tg.host) {
		fprintf(stderr, "vela train: runs in-process only (--db)\n");
		return tr_usage();
	}
	return o->tg.db == NULL || o->index == NULL ? tr_usage() : 0;
}

/* The vector field `name` (name or alias; NULL: the only one) of def. */
static const vela_field_def_t *tr_field(const vela_index_def_t *def, const char *name,
					vela_err_t *err)
{
	const vela_field_def_t *hit = NULL;
	uint32_t n = 0;
	for (uint32_t i = 0; i < def->n_fields; i++) {
		const vela_field_def_t *f = &def->fields[i];
		if (f->type != VELA_FIELD_VECTOR)
			continue;
		n++;
		if (name == NULL || strcmp(f->name, name) == 0 ||
		    (f->alias && strcmp(f->alias, name) == 0))
			hit = hit ? hit : f;
	}
	if (name && hit == NULL)
		vela_err_set(err, VELA_ENOTFOUND, "index '%s' has no vector field '%s'", def->name,
			     name);
	else if (name == NULL && n != 1)
		vela_err_set(err, VELA_EINVAL, "index '%s' has %u vector fields: name one (--field)",
			     def->name, n);
	return name == NULL && n != 1 ? NULL : hit;
}

static bool has_ext(const char *path, const char *ext)
{
	size_t n = strlen(path), e = strlen(ext);
	return n > e && strcasecmp(path + n - e, ext) == 0;
}

/* The JSON-lines queries on (index, field) as one matrix. */
static int tr_jsonl(const char *path, const char *index, const vela_field_def_t *f,
		    vela_vecs_t *out, vela_err_t *err)
{
	const char *fname = f->alias ? f->alias : f->name;
	cli_query_defaults_t d = {.index = index, .field = fname, .k = 10};
	cli_query_t *qs;
	size_t n, m = 0;
	int rc = cli_queries_load(path, &d, &qs, &n, err);
	if (rc)
		return rc;
	float *Q = malloc(vela_mul_size(n ? n : 1, (size_t)f->dim * sizeof(float)));
	rc = Q ? 0 : vela_err_set(err, VELA_ENOMEM, "out of memory");
	for (size_t i = 0; rc == 0 && i < n; i++) {
		if (strcmp(qs[i].index ? qs[i].index : index, index) ||
		    (strcmp(qs[i].field, fname) && strcmp(qs[i].field, f->name)))
			continue; /* another index's or field's query */
		if (qs[i].dim != f->dim)
			rc = vela_err_set(err, VELA_EDIM, "query %zu has %u dimensions, the field %u",
					  i + 1, qs[i].dim, f->dim);
		else
			memcpy(Q + m++ * f->dim, qs[i].vec, (size_t)f->dim * sizeof(float));
	}
	cli_queries_free(qs, n);
	if (rc == 0 && m == 0)
		rc = vela_err_set(err, VELA_EINVAL, "no query is on %s @%s", index, fname);
	if (rc) {
		free(Q);
		return rc;
	}
	*out = (vela_vecs_t){.data = Q, .rows = m, .dim = f->dim};
	return 0;
}

/* Read --queries: .fvecs / .npy rows, or JSON lines. */
static int tr_queries(const char *path, const char *index, const vela_field_def_t *f,
		      vela_vecs_t *out, vela_err_t *err)
{
	memset(out, 0, sizeof(*out));
	if (has_ext(path, ".jsonl") || has_ext(path, ".json"))
		return tr_jsonl(path, index, f, out, err);
	if (!has_ext(path, ".fvecs") && !has_ext(path, ".npy"))
		return vela_err_set(err, VELA_EUNSUPPORTED,
				    "queries must be .fvecs, .npy (float32) or .jsonl");
	int rc = vela_vecs_load(path, out, err);
	if (rc == 0 && out->dim != f->dim)
		rc = vela_err_set(err, VELA_EDIM, "queries have %u dimensions, field '%s' has %u",
				  out->dim, f->name, f->dim);
	if (rc == 0 && out->rows == 0)
		rc = vela_err_set(err, VELA_EINVAL, "no query in the file");
	if (rc)
		vela_vecs_free(out);
	return rc;
}

/* The queries recorded on the field (its workload log; the sample is a
 * bounded uniform subset of them). */
static unsigned long long tr_recorded(vela_db_t *db, const char *index, const char *field)
{
	vela_layout_info_t li;
	vela_err_t err;
	return vela_layout_info(db, index, field, &li, &err) ? 0 : li.workload_queries;
}

static void tr_say_recorded(vela_db_t *db, const char *index, const char *fname)
{
	unsigned long long n = tr_recorded(db, index, fname);
	printf("%s @%s: training on the queries recorded from its searches (%llu recorded)\n",
	       index, fname, n);
	if (n < VELA_TRAIN_QUERIES_MIN)
		printf("fewer than %u: LeanVec trains on the sample it was last trained on, if "
		       "any, else in-distribution\n", VELA_TRAIN_QUERIES_MIN);
}

/* Queue the training, wait for it, say what happened. */
static int tr_run(vela_db_t *db, const tr_opts_t *o, const vela_field_def_t *f,
		  const vela_vecs_t *q, vela_err_t *err)
{
	uint64_t t0 = vela_now_ns();
	int rc = vela_index_train(db, o->index, f->name, q->data, q->rows, q->dim, err);
	if (rc)
		return rc;
	const char *fname = f->alias ? f->alias : f->name;
	if (q->data)
		printf("%s @%s: training on %zu query rows of %s\n", o->index, fname, q->rows,
		       o->queries);
	else
		tr_say_recorded(db, o->index, fname);
	if (o->no_wait) {
		printf("queued in %.1f ms (not waiting)\n", (vela_now_ns() - t0) / 1e6);
		return 0;
	}
	rc = vela_db_wait_builds(db, 0);
	if (rc)
		return vela_err_set(err, rc, "waiting for the build: %s", vela_strerror(rc));
	printf("trained and rebuilt in %.2f s\n", (vela_now_ns() - t0) / 1e9);
	return 0;
}

int cmd_train(int argc, char **argv)
{
	tr_opts_t o = {0};
	int rc = tr_args(argc, argv, &o);
	if (rc)
		return rc;
	vela_db_t *db;
	if (cli_db_open(&o.tg, &db))
		return 1;
	vela_err_t err = {0};
	vela_index_def_t *def = NULL;
	vela_vecs_t q = {0};
	const vela_field_def_t *f = NULL;
	rc = vela_index_describe(db, o.index, &def, &err);
	if (rc == 0 && (f = tr_field(def, o.field, &err)) == NULL)
		rc = err.code ? err.code : VELA_ENOTFOUND;
	if (rc == 0 && o.queries && (rc = tr_queries(o.queries, o.index, f, &q, &err)))
		fprintf(stderr, "vela train: %s: %s\n", o.queries, err.msg);
	else if (rc == 0 && (rc = tr_run(db, &o, f, &q, &err)))
		fprintf(stderr, "vela train: %s: %s\n", o.index, err.msg);
	else if (rc)
		fprintf(stderr, "vela train: %s: %s\n", o.index, err.msg[0] ? err.msg : vela_strerror(rc));
	vela_vecs_free(&q);
	vela_index_def_free(def);
	vela_layout_release(db);
	vela_db_close(db);
	return rc ? 1 : 0;
}
