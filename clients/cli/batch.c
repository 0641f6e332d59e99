/* `vela batch`: run a JSON-lines query file in-process (vela_search_batch,
 * chunk by chunk) or against a server (pipelined FT.SEARCH, chunk by
 * chunk), write one JSON line of results per query, and summarise
 * throughput, per-chunk latency and recall@k against ground truth. */
#define _GNU_SOURCE /* asprintf */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "common/common.h"

/* Queries per vela_search_batch call or per pipeline. */
#define BATCH_CHUNK_DEFAULT 256u
#define BATCH_CHUNK_MIN 1u
#define BATCH_CHUNK_MAX 65536u
/* Distance alias of the KNN clause. */
#define BATCH_DIST_ALIAS "dist"
#define BATCH_GT_PREFIX_DEFAULT "vec:"

typedef struct batch_opts {
	cli_target_t t;
	const char *queries, *vectors, *out, *gt, *gt_prefix;
	cli_query_defaults_t d;
	size_t k, chunk;
} batch_opts_t;

/* Ground truth: JSON lines {"id":..,"keys":[..]} by id text, or .ivecs rows
 * (row i is query i of the file; row numbers become keys <prefix><row>). */
typedef struct gt {
	json_t *by_id;
	vela_vecs_t rows;
	const char *prefix;
} gt_t;

typedef struct hitref {
	const char *key;
	size_t len;
	double dist;
} hitref_t;

typedef struct run {
	batch_opts_t *o;
	cli_query_t *qs;
	size_t n;
	FILE *out;
	gt_t gt;
	double *lat_ms;
	size_t n_chunks, failed, n_recall;
	double recall_sum;
	vela_db_t *db;
	vela_client_t *cl;
} run_t;

static int batch_usage(void)
{
	fprintf(stderr,
		"usage: vela batch (--db DIR | --host H [--port N] [--user U] [--password PW])\n"
		"                  QUERIES.jsonl [--index NAME] [--field v] [--k 10]\n"
		"                  [--vectors FILE.fvecs|.npy] [--out FILE] [--chunk 256]\n"
		"                  [--groundtruth FILE.jsonl|.ivecs [--gt-prefix vec:]]\n");
	return 2;
}

/* A string option: its slot in o, or NULL. */
static const char **batch_str_opt(batch_opts_t *o, const char *a)
{
	return strcmp(a, "--index") == 0	   ? &o->d.index
	       : strcmp(a, "--field") == 0	   ? &o->d.field
	       : strcmp(a, "--vectors") == 0	   ? &o->vectors
	       : strcmp(a, "--out") == 0	   ? &o->out
	       : strcmp(a, "--groundtruth") == 0 ? &o->gt
	       : strcmp(a, "--gt-prefix") == 0   ? &o->gt_prefix
						   : NULL;
}

static int batch_args(int argc, char **argv, batch_opts_t *o)
{
	for (int i = 0; i < argc; i++) {
		int t = cli_target_opt(&o->t, argc, argv, &i);
		if (t < 0)
			return -1;
		if (t > 0)
			continue;
		const char *a = argv[i], **s = batch_str_opt(o, a);
		bool k = strcmp(a, "--k") == 0, chunk = strcmp(a, "--chunk") == 0;
		if ((s || k || chunk) && i + 1 >= argc) {
			fprintf(stderr, "vela: %s needs a value\n", a);
			return -1;
		}
		if (s)
			*s = argv[++i];
		else if (k && cli_parse_size(a, argv[++i], VELA_K_MIN, VELA_K_MAX, &o->k))
			return -1;
		else if (chunk &&
			 cli_parse_size(a, argv[++i], BATCH_CHUNK_MIN, BATCH_CHUNK_MAX, &o->chunk))
			return -1;
		else if (!s && !k && !chunk) {
			if ((a[0] == '-' && a[1]) || o->queries) {
				fprintf(stderr, "vela: unexpected argument '%s'\n", a);
				return -1;
			}
			o->queries = a;
		}
	}
	return o->queries && cli_target_check(&o->t) == 0 ? 0 : -1;
}

/* ------------------------------------------------------------ ground truth */

static int gt_jsonl_line(json_t *by_id, const char *line, size_t len, size_t line_no)
{
	json_error_t je;
	json_t *o = json_loadb(line, len, 0, &je), *keys = o ? json_object_get(o, "keys") : NULL;
	json_t *id = o ? json_object_get(o, "id") : NULL;
	char *idt = id ? json_dumps(id, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
	int rc = 0;
	if (idt == NULL || !json_is_array(keys)) {
		fprintf(stderr, "vela: ground truth line %zu: want {\"id\":..,\"keys\":[..]}\n",
			line_no);
		rc = -1;
	} else {
		json_object_set(by_id, idt, keys);
	}
	free(idt);
	json_decref(o);
	return rc;
}

static int gt_load_jsonl(gt_t *g, const char *path)
{
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		fprintf(stderr, "vela: %s: cannot open\n", path);
		return -1;
	}
	g->by_id = json_object();
	char *buf = NULL;
	size_t cap = 0, len, line_no = 0;
	vela_err_t err;
	int rc;
	while ((rc = cli_line_read(f, &buf, &cap, &len, &err)) == 1) {
		line_no++;
		if (len && (rc = gt_jsonl_line(g->by_id, buf, len, line_no)) != 0)
			break;
	}
	if (rc < 0 && rc != -1)
		fprintf(stderr, "vela: %s: %s\n", path, err.msg);
	free(buf);
	fclose(f);
	return rc ? -1 : 0;
}

static int gt_load(gt_t *g, const batch_opts_t *o)
{
	g->prefix = o->gt_prefix ? o->gt_prefix : BATCH_GT_PREFIX_DEFAULT;
	if (o->gt == NULL)
		return 0;
	size_t n = strlen(o->gt);
	if (n < 6 || strcmp(o->gt + n - 6, ".ivecs") != 0)
		return gt_load_jsonl(g, o->gt);
	vela_err_t err;
	if (vela_ivecs_load(o->gt, &g->rows, &err) == 0)
		return 0;
	fprintf(stderr, "vela: %s\n", err.msg);
	return -1;
}

static void gt_free(gt_t *g)
{
	json_decref(g->by_id);
	vela_vecs_free(&g->rows);
}

static bool gt_has(const gt_t *g, size_t qi, const cli_query_t *q, size_t j, const hitref_t *h)
{
	if (g->rows.data) {
		char key[64];
		int32_t row = ((const int32_t *)g->rows.data)[qi * g->rows.dim + j];
		int n = snprintf(key, sizeof(key), "%s%d", g->prefix, (int)row);
		return n > 0 && (size_t)n == h->len && memcmp(key, h->key, h->len) == 0;
	}
	return false;
}

/* recall@k of one query: |hits ∩ truth[:k]| / min(k, |truth|); -1 = no truth. */
static double recall_one(const gt_t *g, size_t qi, const cli_query_t *q, const hitref_t *hits,
			 size_t n)
{
	size_t truth = 0, found = 0;
	json_t *keys = NULL;
	if (g->rows.data) {
		if (qi >= g->rows.rows)
			return -1;
		truth = g->rows.dim;
	} else if (g->by_id) {
		char *idt = cli_id_text(q);
		keys = idt ? json_object_get(g->by_id, idt) : NULL;
		free(idt);
		truth = keys ? json_array_size(keys) : 0;
	}
	truth = truth < q->k ? truth : q->k;
	if (truth == 0)
		return -1;
	for (size_t j = 0; j < truth; j++)
		for (size_t i = 0; i < n; i++) {
			const char *s = keys ? json_string_value(json_array_get(keys, j)) : NULL;
			bool eq = keys ? s && strlen(s) == hits[i].len &&
					     memcmp(s, hits[i].key, hits[i].len) == 0
				       : gt_has(g, qi, q, j, &hits[i]);
			if (eq) {
				found++;
				break;
			}
		}
	return (double)found / (double)truth;
}

/* ------------------------------------------------------------ output */

static json_t *json_key(const char *key, size_t len)
{
	json_t *s = json_stringn(key, len);
	return s ? s : json_string("<key not UTF-8>");
}

static void emit(run_t *r, size_t qi, const hitref_t *hits, size_t n, const char *error)
{
	json_t *o = json_object(), *res = json_array();
	json_object_set(o, "id", r->qs[qi].id);
	for (size_t i = 0; !error && i < n; i++) {
		json_t *h = json_object();
		json_object_set_new(h, "key", json_key(hits[i].key, hits[i].len));
		json_object_set_new(h, "dist", isfinite(hits[i].dist) ? json_real(hits[i].dist)
									  : json_null());
		json_array_append_new(res, h);
	}
	if (error) {
		json_object_set_new(o, "error", json_string(error));
		json_decref(res);
		r->failed++;
	} else {
		json_object_set_new(o, "results", res);
		double rec = recall_one(&r->gt, qi, &r->qs[qi], hits, n);
		if (rec >= 0) {
			r->recall_sum += rec;
			r->n_recall++;
		}
	}
	json_dumpf(o, r->out, JSON_COMPACT | JSON_REAL_PRECISION(9));
	fputc('\n', r->out);
	json_decref(o);
}

/* ------------------------------------------------------------ running */

static char *knn_text(const cli_query_t *q)
{
	bool star = strcmp(q->filter, "*") == 0 || q->filter[0] == '\0';
	char *t = NULL;
	if (asprintf(&t, "%s%s%s=>[KNN %u @%s $vec AS " BATCH_DIST_ALIAS "]", star ? "" : "(",
		     star ? "*" : q->filter, star ? "" : ")", q->k, q->field) < 0)
		return NULL;
	return t;
}

static void emit_local(run_t *r, size_t qi, const vela_result_t *res, const vela_err_t *err)
{
	if (res == NULL) {
		emit(r, qi, NULL, 0, err->msg[0] ? err->msg : vela_strerror(err->code));
		return;
	}
	hitref_t *h = calloc(res->n_hits ? res->n_hits : 1, sizeof(*h));
	for (size_t i = 0; h && i < res->n_hits; i++)
		h[i] = (hitref_t){res->hits[i].key, res->hits[i].key_len, res->hits[i].dist};
	emit(r, qi, h, h ? res->n_hits : 0, h ? NULL : "out of memory");
	free(h);
}

/* One chunk in-process: queries [q0, q0 + n). */
static int chunk_local(run_t *r, size_t q0, size_t n)
{
	vela_search_req_t *reqs = calloc(n, sizeof(*reqs));
	vela_kv_t *params = calloc(n, sizeof(*params));
	vela_result_t **outs = calloc(n, sizeof(*outs));
	vela_err_t *errs = calloc(n, sizeof(*errs));
	char **texts = calloc(n, sizeof(*texts));
	int rc = reqs && params && outs && errs && texts ? 0 : -1;
	for (size_t i = 0; rc == 0 && i < n; i++) {
		const cli_query_t *q = &r->qs[q0 + i];
		if ((texts[i] = knn_text(q)) == NULL)
			rc = -1;
		params[i] = (vela_kv_t){"vec", 3, q->vec, (size_t)q->dim * sizeof(float)};
		reqs[i] = (vela_search_req_t){.index = q->index, .query = texts[i],
					      .params = &params[i], .n_params = 1, .limit = q->k,
					      .limit_set = true, .nocontent = true};
	}
	if (rc == 0) {
		uint64_t t0 = vela_now_ns();
		vela_search_batch(r->db, reqs, n, outs, errs);
		r->lat_ms[r->n_chunks++] = (double)(vela_now_ns() - t0) / 1e6;
		for (size_t i = 0; i < n; i++) {
			emit_local(r, q0 + i, outs[i], &errs[i]);
			vela_result_free(outs[i]);
		}
	}
	for (size_t i = 0; texts && i < n; i++)
		free(texts[i]);
	free(texts);
	free(reqs);
	free(params);
	free(outs);
	free(errs);
	return rc;
}

static void emit_remote(run_t *r, size_t qi, const vela_client_result_t *res,
			const vela_err_t *err)
{
	if (res == NULL) {
		emit(r, qi, NULL, 0, err->msg);
		return;
	}
	hitref_t *h = calloc(res->n_hits ? res->n_hits : 1, sizeof(*h));
	for (size_t i = 0; h && i < res->n_hits; i++)
		h[i] = (hitref_t){res->hits[i].key, res->hits[i].key_len, res->hits[i].dist};
	emit(r, qi, h, h ? res->n_hits : 0, h ? NULL : "out of memory");
	free(h);
}

/* One chunk through the server: n pipelined FT.SEARCH. A broken connection stops the run. */
static int chunk_remote(run_t *r, size_t q0, size_t n)
{
	vela_client_query_t *qs = calloc(n, sizeof(*qs));
	vela_client_result_t **outs = calloc(n, sizeof(*outs));
	vela_err_t *errs = calloc(n, sizeof(*errs));
	int rc = qs && outs && errs ? 0 : -1;
	for (size_t i = 0; rc == 0 && i < n; i++) {
		const cli_query_t *q = &r->qs[q0 + i];
		qs[i] = (vela_client_query_t){.index = q->index, .filter = q->filter,
					      .field = q->field, .vec = q->vec, .dim = q->dim,
					      .k = q->k, .dist_alias = BATCH_DIST_ALIAS};
	}
	if (rc == 0) {
		uint64_t t0 = vela_now_ns();
		vela_client_search_batch(r->cl, qs, n, outs, errs);
		r->lat_ms[r->n_chunks++] = (double)(vela_now_ns() - t0) / 1e6;
		for (size_t i = 0; i < n; i++) {
			if (outs[i] == NULL && errs[i].code == VELA_EIO)
				rc = -1;
			emit_remote(r, q0 + i, outs[i], &errs[i]);
			vela_client_result_free(outs[i]);
		}
		if (rc)
			fprintf(stderr, "vela: %s\n", errs[n - 1].msg);
	}
	free(qs);
	free(outs);
	free(errs);
	return rc;
}

static void summary(const run_t *r, double secs)
{
	double *lat = r->lat_ms;
	double p50 = cli_quantile(lat, r->n_chunks, 0.5), p99 = cli_quantile(lat, r->n_chunks, 0.99);
	fprintf(stderr,
		"vela batch: %zu queries (%zu failed) in %.3f s: %.1f queries/s; "
		"latency per chunk of %zu (%s): p50 %.3f ms, p99 %.3f ms\n",
		r->n, r->failed, secs, secs > 0 ? (double)r->n / secs : 0.0, r->o->chunk,
		r->db ? "in-process" : "pipelined", p50, p99);
	if (r->n_recall)
		fprintf(stderr, "recall@k: %.4f (%zu queries with ground truth)\n",
			r->recall_sum / (double)r->n_recall, r->n_recall);
}

static int batch_run(run_t *r)
{
	cli_progress_t p;
	cli_progress_start(&p, "queries", r->n);
	size_t chunk = r->o->chunk;
	int rc = 0;
	uint64_t t0 = vela_now_ns();
	for (size_t q0 = 0; rc == 0 && q0 < r->n; q0 += chunk) {
		size_t n = r->n - q0 < chunk ? r->n - q0 : chunk;
		rc = r->db ? chunk_local(r, q0, n) : chunk_remote(r, q0, n);
		cli_progress_update(&p, q0 + n);
	}
	cli_progress_end(&p);
	summary(r, (double)(vela_now_ns() - t0) / 1e9);
	return rc ? 1 : r->failed ? 1 : 0;
}

static int batch_open(run_t *r)
{
	batch_opts_t *o = r->o;
	if (gt_load(&r->gt, o))
		return 1;
	if ((r->lat_ms = calloc(r->n / o->chunk + 1, sizeof(double))) == NULL)
		return 1;
	if (o->out && (r->out = fopen(o->out, "w")) == NULL) {
		fprintf(stderr, "vela: %s: cannot create\n", o->out);
		return 1;
	}
	if (r->out == NULL)
		r->out = stdout;
	return o->t.db ? cli_db_open(&o->t, &r->db) : cli_connect(&o->t, &r->cl);
}

static int batch_load(batch_opts_t *o, vela_vecs_t *vecs, run_t *r)
{
	vela_err_t err;
	if (o->vectors && strstr(o->vectors, ".ivecs")) {
		fprintf(stderr, "vela: --vectors wants float vectors (.fvecs or .npy)\n");
		return 1;
	}
	if (o->vectors && vela_vecs_load(o->vectors, vecs, &err)) {
		fprintf(stderr, "vela: %s\n", err.msg);
		return 1;
	}
	o->d.vectors = vecs->data ? vecs : NULL;
	o->d.k = (uint32_t)o->k;
	if (cli_queries_load(o->queries, &o->d, &r->qs, &r->n, &err)) {
		fprintf(stderr, "vela: %s: %s\n", o->queries, err.msg);
		return 1;
	}
	return 0;
}

int cmd_batch(int argc, char **argv)
{
	batch_opts_t o = {.k = VELA_K_DEFAULT, .chunk = BATCH_CHUNK_DEFAULT};
	if (batch_args(argc, argv, &o))
		return batch_usage();
	vela_vecs_t vecs = {0};
	run_t r = {.o = &o};
	int rc = batch_load(&o, &vecs, &r);
	if (rc == 0)
		rc = batch_open(&r);
	if (rc == 0)
		rc = batch_run(&r);
	if (r.out && r.out != stdout && fclose(r.out) != 0)
		rc = 1;
	vela_db_close(r.db);
	vela_client_close(r.cl);
	cli_queries_free(r.qs, r.n);
	gt_free(&r.gt);
	free(r.lat_ms);
	vela_vecs_free(&vecs);
	return rc;
}
