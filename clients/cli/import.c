/* `vela import`: load vectors (.fvecs / .npy rows, or JSON lines with "key",
 * "vector" and attribute fields) into an existing index's prefix, in
 * batches: one commit per batch in-process (vela_batch_*), one pipeline of
 * HSETs per batch through a server. */
#define _GNU_SOURCE /* asprintf */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "common/common.h"

#define IMPORT_BATCH_DEFAULT 1000u
#define IMPORT_BATCH_MIN 1u
#define IMPORT_BATCH_MAX 100000u

typedef struct import_opts {
	cli_target_t t;
	const char *index, *prefix, *field, *file;
	size_t batch;
} import_opts_t;

/* A document waiting for its batch; everything in it is owned. */
typedef struct doc {
	char *key;
	vela_kv_t *kv; /* attribute fields (names/values malloc'd) + room for the vector */
	size_t n_kv;
	float *vec;
	uint32_t dim;
} doc_t;

typedef struct importer {
	import_opts_t *o;
	vela_db_t *db;
	vela_client_t *cl;
	uint32_t dim;  /* the index's vector dim (0 = unknown: server mode) */
	char *prefix;  /* --prefix or the index's first prefix (owned) */
	doc_t *docs;
	size_t n_docs, done, failed;
	bool broken;
	cli_progress_t progress;
} importer_t;

static int import_usage(void)
{
	fprintf(stderr,
		"usage: vela import (--db DIR [--map-size MiB] | --host H [--port N] [--user U]\n"
		"                   [--password PW])\n"
		"                   --index NAME [--prefix P] [--field v] [--batch 1000]\n"
		"                   FILE.fvecs|FILE.npy|FILE.jsonl\n");
	return 2;
}

static int import_args(int argc, char **argv, import_opts_t *o)
{
	for (int i = 0; i < argc; i++) {
		int t = cli_target_opt(&o->t, argc, argv, &i);
		if (t < 0)
			return -1;
		if (t > 0)
			continue;
		const char *a = argv[i];
		const char **s = strcmp(a, "--index") == 0    ? &o->index
				 : strcmp(a, "--prefix") == 0 ? &o->prefix
				 : strcmp(a, "--field") == 0  ? &o->field
							      : NULL;
		bool batch = strcmp(a, "--batch") == 0;
		if ((s || batch) && i + 1 >= argc)
			return -1;
		if (s)
			*s = argv[++i];
		else if (batch && cli_parse_size(a, argv[++i], IMPORT_BATCH_MIN, IMPORT_BATCH_MAX,
						 &o->batch))
			return -1;
		else if (!batch && ((a[0] == '-' && a[1]) || o->file))
			return -1;
		else if (!batch)
			o->file = a;
	}
	return o->file && o->index && cli_target_check(&o->t) == 0 ? 0 : -1;
}

/* ------------------------------------------------------------ the index */

/* In-process: the index's first prefix (unless --prefix) and the field's dim. */
static int target_local(importer_t *im)
{
	vela_index_def_t *def;
	vela_err_t err;
	if (vela_index_describe(im->db, im->o->index, &def, &err)) {
		fprintf(stderr, "vela: index %s: %s\n", im->o->index, err.msg);
		return -1;
	}
	for (uint32_t i = 0; i < def->n_fields; i++) {
		const vela_field_def_t *f = &def->fields[i];
		if (f->type == VELA_FIELD_VECTOR && strcmp(f->name, im->o->field) == 0)
			im->dim = f->dim;
	}
	im->prefix = strdup(im->o->prefix		  ? im->o->prefix
			    : def->n_prefixes ? def->prefixes[0]
					      : "");
	vela_index_def_free(def);
	if (im->dim == 0)
		fprintf(stderr, "vela: index %s has no VECTOR field '%s' (see --field)\n",
			im->o->index, im->o->field);
	return im->dim && im->prefix ? 0 : -1;
}

/* Value following the string `name` in a flat [name, value, ...] reply. */
static const redisReply *flat_get(const redisReply *r, const char *name)
{
	if (r == NULL || r->type != REDIS_REPLY_ARRAY)
		return NULL;
	for (size_t i = 0; i + 1 < r->elements; i += 2) {
		const redisReply *k = r->element[i];
		if ((k->type == REDIS_REPLY_STRING || k->type == REDIS_REPLY_STATUS) &&
		    strcmp(k->str, name) == 0)
			return r->element[i + 1];
	}
	return NULL;
}

/* Through a server: --prefix as given (no round trip), else the first
 * prefix from FT.INFO's index_definition. */
static int target_remote(importer_t *im)
{
	if (im->o->prefix)
		return (im->prefix = strdup(im->o->prefix)) ? 0 : -1;
	const char *argv[] = {"FT.INFO", im->o->index};
	redisReply *r;
	vela_err_t err;
	if (vela_client_command(im->cl, 2, argv, NULL, &r, &err)) {
		fprintf(stderr, "vela: index %s: %s\n", im->o->index, err.msg);
		return -1;
	}
	const redisReply *p = flat_get(flat_get(r, "index_definition"), "prefixes");
	const redisReply *p0 = p && p->type == REDIS_REPLY_ARRAY && p->elements ? p->element[0]
									       : NULL;
	if (p0 && p0->type != REDIS_REPLY_STRING && p0->type != REDIS_REPLY_STATUS)
		p0 = NULL;
	im->prefix = strdup(p0 ? p0->str : "");
	vela_client_reply_free(r);
	return im->prefix ? 0 : -1;
}

/* ------------------------------------------------------------ batches */

static void doc_clear(doc_t *d)
{
	for (size_t i = 0; i < d->n_kv; i++) {
		free((void *)d->kv[i].name);
		free((void *)d->kv[i].value);
	}
	free(d->kv);
	free(d->key);
	free(d->vec);
	memset(d, 0, sizeof(*d));
}

/* A batch too large for one LMDB transaction: say which option fixes it. */
static void import_hint(const importer_t *im, int code)
{
	if (code == VELA_ETXNFULL)
		fprintf(stderr, "vela: import with a smaller --batch (this one held %zu documents)\n",
			im->n_docs);
}

static void flush_local(importer_t *im)
{
	vela_batch_t *b;
	vela_err_t err;
	size_t failed = 0;
	int rc = vela_batch_begin(im->db, &b, &err);
	for (size_t i = 0; rc == 0 && i < im->n_docs; i++) {
		doc_t *d = &im->docs[i];
		d->kv[d->n_kv] = (vela_kv_t){im->o->field, strlen(im->o->field), d->vec,
					     (size_t)d->dim * sizeof(float)};
		int wrc = vela_batch_hset(b, d->key, strlen(d->key), d->kv, d->n_kv + 1, NULL, &err);
		if (wrc == VELA_ETXNFULL)
			break; /* the batch is failed: its commit says so */
		if (wrc && im->failed + failed++ == 0)
			fprintf(stderr, "vela: %s: %s\n", d->key, err.msg);
	}
	if (rc == 0)
		rc = vela_batch_commit(b, &err);
	if (rc) {
		fprintf(stderr, "vela: batch commit: %s\n", err.msg);
		import_hint(im, rc);
		failed = im->n_docs; /* nothing of the batch is in */
		im->broken = true;
	}
	im->failed += failed;
}

static void flush_remote(importer_t *im)
{
	vela_client_doc_t *cd = calloc(im->n_docs, sizeof(*cd));
	vela_err_t *errs = calloc(im->n_docs, sizeof(*errs));
	size_t failed = 0;
	if (cd == NULL || errs == NULL) {
		im->broken = true;
	} else {
		for (size_t i = 0; i < im->n_docs; i++) {
			doc_t *d = &im->docs[i];
			cd[i] = (vela_client_doc_t){.key = d->key, .fields = d->kv, .n_fields = d->n_kv,
						    .vec_field = im->o->field, .vec = d->vec,
						    .dim = d->dim};
		}
		vela_client_upsert_batch(im->cl, cd, im->n_docs, &failed, errs);
		for (size_t i = 0; i < im->n_docs && failed; i++)
			if (errs[i].code) {
				if (im->failed == 0)
					fprintf(stderr, "vela: %s: %s\n", im->docs[i].key, errs[i].msg);
				import_hint(im, errs[i].code);
				im->broken |= errs[i].code == VELA_EIO;
				break;
			}
		im->failed += failed;
	}
	free(cd);
	free(errs);
}

static void import_flush(importer_t *im)
{
	if (im->n_docs == 0)
		return;
	if (im->db)
		flush_local(im);
	else
		flush_remote(im);
	im->done += im->n_docs;
	for (size_t i = 0; i < im->n_docs; i++)
		doc_clear(&im->docs[i]);
	im->n_docs = 0;
	cli_progress_update(&im->progress, im->done);
}

/* Take ownership of d (a vector of the index's dim) into the batch. */
static int import_add(importer_t *im, doc_t *d)
{
	if (im->dim && d->dim != im->dim) {
		fprintf(stderr, "vela: %s: vector of dim %u, index field '%s' has dim %u\n", d->key,
			d->dim, im->o->field, im->dim);
		doc_clear(d);
		return -1;
	}
	im->docs[im->n_docs++] = *d;
	if (im->n_docs == im->o->batch)
		import_flush(im);
	return im->broken ? -1 : 0;
}

static char *prefixed_key(const char *prefix, const char *key)
{
	size_t pl = strlen(prefix), kl = strlen(key);
	bool has = strncmp(key, prefix, pl) == 0;
	char *s = malloc(pl + kl + 1);
	if (s)
		snprintf(s, pl + kl + 1, "%s%s", has ? "" : prefix, key);
	return s;
}

/* ------------------------------------------------------------ sources */

static int import_matrix(importer_t *im, const vela_vecs_t *m)
{
	cli_progress_start(&im->progress, "import", m->rows);
	for (size_t r = 0; r < m->rows; r++) {
		doc_t d = {.dim = m->dim};
		d.kv = calloc(1, sizeof(vela_kv_t));
		d.vec = malloc((size_t)m->dim * sizeof(float));
		if (asprintf(&d.key, "%s%zu", im->prefix, r) < 0)
			d.key = NULL;
		if (d.kv == NULL || d.vec == NULL || d.key == NULL) {
			doc_clear(&d);
			return -1;
		}
		memcpy(d.vec, (const float *)m->data + r * m->dim, (size_t)m->dim * sizeof(float));
		if (import_add(im, &d))
			return -1;
	}
	return 0;
}

/* A JSON attribute as the string HSET stores; NULL value = skip it. */
static int attr_text(const json_t *v, char **out)
{
	*out = NULL;
	if (json_is_string(v))
		*out = strdup(json_string_value(v));
	else if (json_is_integer(v))
		return asprintf(out, "%lld", (long long)json_integer_value(v)) < 0 ? -1 : 0;
	else if (json_is_real(v))
		return asprintf(out, "%.17g", json_real_value(v)) < 0 ? -1 : 0;
	else if (json_is_boolean(v))
		*out = strdup(json_is_true(v) ? "true" : "false");
	else if (json_is_null(v))
		return 0;
	else if (json_is_array(v)) { /* a list of tags: joined with ',' */
		size_t i, len = 0;
		json_t *x;
		json_array_foreach(v, i, x) {
			if (!json_is_string(x))
				return -1;
			len += strlen(json_string_value(x)) + 1;
		}
		if ((*out = calloc(1, len + 1)) == NULL)
			return -1;
		json_array_foreach(v, i, x) {
			if (i)
				strcat(*out, ",");
			strcat(*out, json_string_value(x));
		}
		return 0;
	} else
		return -1;
	return *out ? 0 : -1;
}

static int doc_attrs(json_t *o, doc_t *d, vela_err_t *err)
{
	d->kv = calloc(json_object_size(o) + 1, sizeof(vela_kv_t));
	if (d->kv == NULL)
		return vela_err_set(err, VELA_ENOMEM, "out of memory");
	const char *name;
	json_t *v;
	json_object_foreach(o, name, v) {
		if (strcmp(name, "key") == 0 || strcmp(name, "vector") == 0)
			continue;
		char *text, *nm;
		if (attr_text(v, &text))
			return vela_err_set(err, VELA_EINVAL, "field \"%s\": want a string, number, "
					    "boolean or list of strings", name);
		if (text == NULL)
			continue;
		if ((nm = strdup(name)) == NULL) {
			free(text);
			return vela_err_set(err, VELA_ENOMEM, "out of memory");
		}
		d->kv[d->n_kv++] = (vela_kv_t){nm, strlen(nm), text, strlen(text)};
	}
	return 0;
}

static int doc_parse(importer_t *im, const char *line, size_t len, doc_t *d, vela_err_t *err)
{
	json_error_t je;
	json_t *o = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
	if (o == NULL)
		return vela_err_set(err, VELA_ESYNTAX, "bad JSON at column %d: %s", je.column, je.text);
	json_t *key = json_object_get(o, "key");
	int rc = 0;
	if (!json_is_object(o) || !json_is_string(key))
		rc = vela_err_set(err, VELA_EINVAL, "want an object with a string \"key\"");
	if (rc == 0 && (d->key = prefixed_key(im->prefix, json_string_value(key))) == NULL)
		rc = vela_err_set(err, VELA_ENOMEM, "out of memory");
	if (rc == 0)
		rc = cli_json_vector(json_object_get(o, "vector"), &d->vec, &d->dim, err);
	if (rc == 0)
		rc = doc_attrs(o, d, err);
	json_decref(o);
	return rc;
}

static int import_jsonl(importer_t *im, const char *path)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	if (f == NULL) {
		fprintf(stderr, "vela: %s: cannot open\n", path);
		return -1;
	}
	cli_progress_start(&im->progress, "import", 0);
	char *buf = NULL;
	size_t cap = 0, len, line_no = 0;
	vela_err_t err;
	int rc;
	while ((rc = cli_line_read(f, &buf, &cap, &len, &err)) == 1) {
		line_no++;
		if (len == 0)
			continue;
		doc_t d = {0};
		if (doc_parse(im, buf, len, &d, &err)) {
			doc_clear(&d);
			rc = -1;
			fprintf(stderr, "vela: %s: line %zu: %s\n", path, line_no, err.msg);
			break;
		}
		if ((rc = import_add(im, &d)) != 0)
			break;
	}
	if (rc < -1)
		fprintf(stderr, "vela: %s: line %zu: %s\n", path, line_no + 1, err.msg);
	free(buf);
	if (f != stdin)
		fclose(f);
	return rc ? -1 : 0;
}

static bool is_matrix(const char *path)
{
	size_t n = strlen(path);
	return (n > 6 && strcmp(path + n - 6, ".fvecs") == 0) ||
	       (n > 4 && strcmp(path + n - 4, ".npy") == 0);
}

static int import_file(importer_t *im)
{
	if (!is_matrix(im->o->file))
		return import_jsonl(im, im->o->file);
	vela_vecs_t m;
	vela_err_t err;
	if (vela_vecs_load(im->o->file, &m, &err)) {
		fprintf(stderr, "vela: %s\n", err.msg);
		return -1;
	}
	int rc = import_matrix(im, &m);
	vela_vecs_free(&m);
	return rc;
}

int cmd_import(int argc, char **argv)
{
	import_opts_t o = {.batch = IMPORT_BATCH_DEFAULT, .field = "v"};
	if (import_args(argc, argv, &o))
		return import_usage();
	importer_t im = {.o = &o};
	int rc = o.t.db ? cli_db_open(&o.t, &im.db) : cli_connect(&o.t, &im.cl);
	if (rc == 0)
		rc = im.db ? target_local(&im) : target_remote(&im);
	if (rc == 0 && (im.docs = calloc(o.batch, sizeof(doc_t))) == NULL)
		rc = -1;
	uint64_t t0 = vela_now_ns();
	if (rc == 0) {
		rc = import_file(&im);
		if (!im.broken)
			import_flush(&im);
		cli_progress_end(&im.progress);
		double s = (double)(vela_now_ns() - t0) / 1e9;
		fprintf(stderr, "vela import: %zu documents (%zu failed) into %s (prefix '%s') in "
			"%.3f s: %.0f docs/s\n", im.done, im.failed, o.index, im.prefix, s,
			s > 0 ? (double)im.done / s : 0.0);
	}
	for (size_t i = 0; im.docs && i < im.n_docs; i++)
		doc_clear(&im.docs[i]);
	free(im.docs);
	free(im.prefix);
	vela_db_close(im.db);
	vela_client_close(im.cl);
	return rc || im.failed ? 1 : 0;
}
