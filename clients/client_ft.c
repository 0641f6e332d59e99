/* libvela-client typed helpers: FT.CREATE, HSET upserts, FT.SEARCH KNN
 * queries (one or pipelined) and the RESP2 FT.SEARCH reply parser. */
#define _GNU_SOURCE /* asprintf */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vela/client.h"

int vela_client_err(vela_err_t *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* ------------------------------------------------------------ argv builder */

/* A growing argument vector; strings it formats or converts are owned by it. */
typedef struct cmd {
	const char **argv;
	size_t *len;
	int argc, cap;
	void **own;
	int n_own, own_cap;
	bool oom;
} cmd_t;

static void cmd_add(cmd_t *c, const void *p, size_t len)
{
	if (c->oom)
		return;
	if (c->argc == c->cap) {
		int cap = c->cap ? c->cap * 2 : 32;
		const char **a = realloc(c->argv, (size_t)cap * sizeof(*a));
		size_t *l = a ? realloc(c->len, (size_t)cap * sizeof(*l)) : NULL;
		if (a)
			c->argv = a;
		if (l == NULL) {
			c->oom = true;
			return;
		}
		c->len = l;
		c->cap = cap;
	}
	c->argv[c->argc] = p;
	c->len[c->argc++] = len;
}

static void cmd_str(cmd_t *c, const char *s)
{
	cmd_add(c, s, strlen(s));
}

/* Keep `p` (malloc'd, may be NULL = out of memory) until cmd_free. */
static void *cmd_own(cmd_t *c, void *p)
{
	if (p == NULL || c->oom) {
		c->oom = true;
		free(p);
		return NULL;
	}
	if (c->n_own == c->own_cap) {
		int cap = c->own_cap ? c->own_cap * 2 : 8;
		void **o = realloc(c->own, (size_t)cap * sizeof(*o));
		if (o == NULL) {
			c->oom = true;
			free(p);
			return NULL;
		}
		c->own = o;
		c->own_cap = cap;
	}
	return c->own[c->n_own++] = p;
}

static void cmd_uint(cmd_t *c, unsigned long long v)
{
	char *s = NULL;
	if (asprintf(&s, "%llu", v) < 0)
		s = NULL;
	if (cmd_own(c, s))
		cmd_str(c, s);
}

/* The vector as a little-endian FLOAT32 blob (a copy only on big-endian hosts). */
static void cmd_vec(cmd_t *c, const float *v, uint32_t dim)
{
	size_t bytes = (size_t)dim * sizeof(float);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	cmd_add(c, v, bytes);
#else
	uint32_t *w = cmd_own(c, malloc(bytes ? bytes : 1));
	for (uint32_t i = 0; w && i < dim; i++) {
		uint32_t x;
		memcpy(&x, &v[i], 4);
		w[i] = __builtin_bswap32(x);
	}
	if (w)
		cmd_add(c, w, bytes);
#endif
}

static void cmd_free(cmd_t *c)
{
	for (int i = 0; i < c->n_own; i++)
		free(c->own[i]);
	free(c->own);
	free(c->argv);
	free(c->len);
}

static int cmd_run(vela_client_t *cl, cmd_t *c, redisReply **reply, vela_err_t *err)
{
	int rc = c->oom ? vela_client_err(err, VELA_ENOMEM, "out of memory")
			: vela_client_command(cl, c->argc, c->argv, c->len, reply, err);
	cmd_free(c);
	return rc;
}

/* ------------------------------------------------------------ FT.CREATE */

static const char *metric_name(vela_metric_t m)
{
	return m == VELA_METRIC_IP ? "IP" : m == VELA_METRIC_COSINE ? "COSINE" : "L2";
}

static int schema_field(cmd_t *c, const vela_field_def_t *f, vela_err_t *err)
{
	if (f->name == NULL)
		return vela_client_err(err, VELA_EINVAL, "schema field without a name");
	cmd_str(c, f->name);
	if (f->alias) {
		cmd_str(c, "AS");
		cmd_str(c, f->alias);
	}
	switch (f->type) {
	case VELA_FIELD_TAG:
		cmd_str(c, "TAG");
		if (f->tag_separator) {
			cmd_str(c, "SEPARATOR");
			cmd_add(c, &f->tag_separator, 1);
		}
		if (f->case_sensitive)
			cmd_str(c, "CASESENSITIVE");
		return 0;
	case VELA_FIELD_NUMERIC:
		cmd_str(c, "NUMERIC");
		return 0;
	case VELA_FIELD_TEXT:
		cmd_str(c, "TEXT");
		return 0;
	case VELA_FIELD_VECTOR:
		cmd_str(c, "VECTOR");
		cmd_str(c, "FLAT");
		cmd_str(c, "6");
		cmd_str(c, "TYPE");
		cmd_str(c, f->vec_type == VELA_VEC_FLOAT16 ? "FLOAT16" : "FLOAT32");
		cmd_str(c, "DIM");
		cmd_uint(c, f->dim);
		cmd_str(c, "DISTANCE_METRIC");
		cmd_str(c, metric_name(f->metric));
		return 0;
	}
	return vela_client_err(err, VELA_EINVAL, "field %s: unknown type %d", f->name, (int)f->type);
}

int vela_client_index_create(vela_client_t *cl, const vela_index_def_t *def, vela_err_t *err)
{
	if (def == NULL || def->name == NULL || def->n_fields == 0)
		return vela_client_err(err, VELA_EINVAL, "index needs a name and fields");
	cmd_t c = {0};
	cmd_str(&c, "FT.CREATE");
	cmd_str(&c, def->name);
	cmd_str(&c, "ON");
	cmd_str(&c, "HASH");
	if (def->n_prefixes) {
		cmd_str(&c, "PREFIX");
		cmd_uint(&c, def->n_prefixes);
		for (uint32_t i = 0; i < def->n_prefixes; i++)
			cmd_str(&c, def->prefixes[i]);
	}
	if (def->skip_initial_scan)
		cmd_str(&c, "SKIPINITIALSCAN");
	cmd_str(&c, "SCHEMA");
	for (uint32_t i = 0; i < def->n_fields; i++) {
		int rc = schema_field(&c, &def->fields[i], err);
		if (rc) {
			cmd_free(&c);
			return rc;
		}
	}
	return cmd_run(cl, &c, NULL, err);
}

int vela_client_index_drop(vela_client_t *cl, const char *name, bool delete_docs, vela_err_t *err)
{
	const char *argv[3] = {"FT.DROPINDEX", name, "DD"};
	if (name == NULL)
		return vela_client_err(err, VELA_EINVAL, "no index name");
	return vela_client_command(cl, delete_docs ? 3 : 2, argv, NULL, NULL, err);
}

/* ------------------------------------------------------------ HSET */

static int upsert_build(cmd_t *c, const vela_client_doc_t *d, vela_err_t *err)
{
	if (d->key == NULL || (d->n_fields == 0 && d->vec_field == NULL))
		return vela_client_err(err, VELA_EINVAL, "upsert needs a key and a field");
	if (d->vec_field && (d->vec == NULL || d->dim < VELA_DIM_MIN || d->dim > VELA_DIM_MAX))
		return vela_client_err(err, VELA_EDIM, "vector of dim %u", d->dim);
	cmd_str(c, "HSET");
	cmd_add(c, d->key, d->key_len ? d->key_len : strlen(d->key));
	for (size_t i = 0; i < d->n_fields; i++) {
		cmd_add(c, d->fields[i].name, d->fields[i].name_len);
		cmd_add(c, d->fields[i].value, d->fields[i].value_len);
	}
	if (d->vec_field) {
		cmd_str(c, d->vec_field);
		cmd_vec(c, d->vec, d->dim);
	}
	return c->oom ? vela_client_err(err, VELA_ENOMEM, "out of memory") : 0;
}

int vela_client_upsert(vela_client_t *cl, const vela_client_doc_t *doc, vela_err_t *err)
{
	cmd_t c = {0};
	int rc = upsert_build(&c, doc, err);
	if (rc) {
		cmd_free(&c);
		return rc;
	}
	return cmd_run(cl, &c, NULL, err);
}

/* ------------------------------------------------------------ pipelines */

typedef int (*build_fn)(cmd_t *c, const void *item, vela_err_t *err);

/* Append what builds, then read one reply per appended command.
 * `take` (may be NULL) consumes reply i; ok[i] says whether i was sent. */
typedef int (*take_fn)(void *ctx, size_t i, redisReply *r, vela_err_t *err);

static vela_err_t *slot(vela_err_t *errs, size_t i)
{
	return errs ? &errs[i] : NULL;
}

static int pipeline_run(vela_client_t *cl, const void *items, size_t item_size, size_t n,
			build_fn build, take_fn take, void *ctx, vela_err_t *errs,
			size_t *n_failed)
{
	bool *sent = calloc(n ? n : 1, sizeof(bool));
	if (sent == NULL)
		return vela_client_err(slot(errs, 0), VELA_ENOMEM, "out of memory");
	int first = 0;
	size_t failed = 0;
	for (size_t i = 0; i < n; i++) {
		cmd_t c = {0};
		const void *item = (const char *)items + i * item_size;
		int rc = build(&c, item, slot(errs, i));
		if (rc == 0)
			rc = vela_client_append(cl, c.argc, c.argv, c.len, slot(errs, i));
		cmd_free(&c);
		sent[i] = rc == 0;
		if (rc && !first)
			first = rc;
		failed += rc != 0;
	}
	for (size_t i = 0; i < n; i++) {
		if (!sent[i])
			continue;
		redisReply *r = NULL;
		int rc = vela_client_read(cl, &r, slot(errs, i));
		if (rc == 0 && take)
			rc = take(ctx, i, r, slot(errs, i));
		else
			vela_client_reply_free(r);
		if (rc && !first)
			first = rc;
		failed += rc != 0;
	}
	free(sent);
	if (n_failed)
		*n_failed = failed;
	return first;
}

static int upsert_build_item(cmd_t *c, const void *item, vela_err_t *err)
{
	return upsert_build(c, item, err);
}

int vela_client_upsert_batch(vela_client_t *cl, const vela_client_doc_t *docs, size_t n,
			     size_t *n_failed, vela_err_t *errs)
{
	return pipeline_run(cl, docs, sizeof(*docs), n, upsert_build_item, NULL, NULL, errs,
			    n_failed);
}

/* ------------------------------------------------------------ FT.SEARCH */

static const char *query_alias(const vela_client_query_t *q)
{
	return q->dist_alias ? q->dist_alias : VELA_CLIENT_DIST_ALIAS_DEFAULT;
}

static int search_build(cmd_t *c, const void *item, vela_err_t *err)
{
	const vela_client_query_t *q = item;
	if (q->index == NULL || q->vec == NULL || q->dim < VELA_DIM_MIN || q->dim > VELA_DIM_MAX ||
	    q->k > VELA_K_MAX)
		return vela_client_err(err, VELA_EINVAL, "query needs an index, a vector and K <= %u",
				       VELA_K_MAX);
	const char *filter = q->filter && q->filter[0] ? q->filter : "*";
	bool star = strcmp(filter, "*") == 0;
	char *text = NULL;
	if (asprintf(&text, "%s%s%s=>[KNN %u @%s $vec AS %s]", star ? "" : "(", filter,
		     star ? "" : ")", q->k, q->field ? q->field : "v", query_alias(q)) < 0)
		text = NULL;
	if (cmd_own(c, text) == NULL)
		return vela_client_err(err, VELA_ENOMEM, "out of memory");
	cmd_str(c, "FT.SEARCH");
	cmd_str(c, q->index);
	cmd_str(c, text);
	cmd_str(c, "PARAMS");
	cmd_str(c, "2");
	cmd_str(c, "vec");
	cmd_vec(c, q->vec, q->dim);
	cmd_str(c, "SORTBY");
	cmd_str(c, query_alias(q));
	cmd_str(c, "LIMIT");
	cmd_str(c, "0");
	cmd_uint(c, q->k);
	cmd_str(c, "RETURN");
	cmd_uint(c, 1 + q->n_return);
	cmd_str(c, query_alias(q));
	for (size_t i = 0; i < q->n_return; i++)
		cmd_str(c, q->return_fields[i]);
	cmd_str(c, "DIALECT");
	cmd_str(c, "2");
	return c->oom ? vela_client_err(err, VELA_ENOMEM, "out of memory") : 0;
}

int vela_client_search(vela_client_t *cl, const vela_client_query_t *q,
		       vela_client_result_t **out, vela_err_t *err)
{
	*out = NULL;
	return vela_client_search_batch(cl, q, 1, out, err);
}

typedef struct search_ctx {
	const vela_client_query_t *qs;
	vela_client_result_t **outs;
} search_ctx_t;

static int search_take(void *ctx, size_t i, redisReply *r, vela_err_t *err)
{
	search_ctx_t *s = ctx;
	int rc = vela_client_result_parse(r, query_alias(&s->qs[i]), &s->outs[i], err);
	vela_client_reply_free(r);
	return rc;
}

int vela_client_search_batch(vela_client_t *cl, const vela_client_query_t *qs, size_t n,
			     vela_client_result_t **outs, vela_err_t *errs)
{
	for (size_t i = 0; i < n; i++)
		outs[i] = NULL;
	search_ctx_t ctx = {qs, outs};
	return pipeline_run(cl, qs, sizeof(*qs), n, search_build, search_take, &ctx, errs, NULL);
}

/* ------------------------------------------------------------ reply parsing */

static char *dup_bytes(const char *p, size_t n)
{
	char *s = malloc(n + 1);
	if (s) {
		memcpy(s, p, n);
		s[n] = '\0';
	}
	return s;
}

static bool is_str(const redisReply *r)
{
	return r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS;
}

static int hit_fields(vela_client_hit_t *h, const redisReply *a, const char *alias)
{
	if (a->type != REDIS_REPLY_ARRAY || a->elements == 0)
		return 0;
	if (a->elements % 2)
		return VELA_EINVAL;
	h->fields = calloc(a->elements / 2, sizeof(*h->fields));
	if (h->fields == NULL)
		return VELA_ENOMEM;
	for (size_t j = 0; j + 1 < a->elements; j += 2) {
		const redisReply *nm = a->element[j], *v = a->element[j + 1];
		if (!is_str(nm) || !(is_str(v) || v->type == REDIS_REPLY_NIL))
			return VELA_EINVAL;
		vela_client_field_t *f = &h->fields[h->n_fields++];
		f->name = dup_bytes(nm->str, nm->len);
		f->name_len = nm->len;
		f->value = v->type == REDIS_REPLY_NIL ? dup_bytes("", 0) : dup_bytes(v->str, v->len);
		f->value_len = v->type == REDIS_REPLY_NIL ? 0 : v->len;
		if (f->name == NULL || f->value == NULL)
			return VELA_ENOMEM;
		if (alias && strcmp(f->name, alias) == 0)
			h->dist = strtod(f->value, NULL);
	}
	return 0;
}

static size_t count_hits(const redisReply *r)
{
	size_t n = 0;
	for (size_t i = 1; i < r->elements; i++) {
		int t = r->element[i]->type;
		n += t != REDIS_REPLY_ARRAY && t != REDIS_REPLY_NIL;
	}
	return n;
}

static int parse_rows(vela_client_result_t *res, const redisReply *r, const char *alias)
{
	for (size_t i = 1; i < r->elements; i++) {
		const redisReply *k = r->element[i];
		if (!is_str(k))
			return VELA_EINVAL;
		vela_client_hit_t *h = &res->hits[res->n_hits++];
		h->dist = NAN;
		if ((h->key = dup_bytes(k->str, k->len)) == NULL)
			return VELA_ENOMEM;
		h->key_len = k->len;
		if (i + 1 < r->elements && !is_str(r->element[i + 1])) {
			int rc = hit_fields(h, r->element[++i], alias);
			if (rc)
				return rc;
		}
	}
	return 0;
}

int vela_client_result_parse(const redisReply *r, const char *alias, vela_client_result_t **out,
			     vela_err_t *err)
{
	*out = NULL;
	if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
	    r->element[0]->type != REDIS_REPLY_INTEGER)
		return vela_client_err(err, VELA_EINVAL, "not an FT.SEARCH reply");
	vela_client_result_t *res = calloc(1, sizeof(*res));
	size_t n = count_hits(r);
	if (res == NULL || (n && (res->hits = calloc(n, sizeof(*res->hits))) == NULL)) {
		free(res);
		return vela_client_err(err, VELA_ENOMEM, "out of memory");
	}
	res->total = r->element[0]->integer < 0 ? 0 : (uint64_t)r->element[0]->integer;
	int rc = parse_rows(res, r, alias);
	if (rc) {
		vela_client_result_free(res);
		return vela_client_err(err, rc, rc == VELA_ENOMEM ? "out of memory"
								   : "malformed FT.SEARCH reply");
	}
	*out = res;
	return 0;
}

void vela_client_result_free(vela_client_result_t *r)
{
	if (r == NULL)
		return;
	for (size_t i = 0; i < r->n_hits; i++) {
		vela_client_hit_t *h = &r->hits[i];
		for (size_t j = 0; j < h->n_fields; j++) {
			free(h->fields[j].name);
			free(h->fields[j].value);
		}
		free(h->fields);
		free(h->key);
	}
	free(r->hits);
	free(r);
}
