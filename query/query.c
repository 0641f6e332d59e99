/* The query object: its arena, accessors, and the top-level parse driver. */
#include <stdlib.h>
#include <string.h>

#include "query/query_int.h"

/* Most queries fit in one chunk; big ones (long tag lists) get more. */
#define QUERY_CHUNK_SIZE 4096u

void *query_arena_alloc(query_t *q, size_t size)
{
	size = (size + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
	query_chunk_t *c = q->chunks;
	if (c == NULL || c->cap - c->used < size) {
		size_t cap = size > QUERY_CHUNK_SIZE ? size : QUERY_CHUNK_SIZE;
		c = malloc(sizeof(*c) + cap);
		if (c == NULL)
			return NULL;
		c->cap = cap;
		c->used = 0;
		c->next = q->chunks;
		q->chunks = c;
	}
	void *r = (char *)c->data + c->used;
	c->used += size;
	memset(r, 0, size);
	return r;
}

char *query_arena_strdup(query_t *q, const void *s, size_t len)
{
	if (len == SIZE_MAX)
		return NULL;
	char *d = query_arena_alloc(q, len + 1);
	if (d != NULL && len > 0)
		memcpy(d, s, len);
	return d;
}

void query_free(query_t *q)
{
	if (q == NULL)
		return;
	query_chunk_t *c = q->chunks;
	while (c != NULL) {
		query_chunk_t *next = c->next;
		free(c);
		c = next;
	}
	free(q);
}

void query_limits_default(query_limits_t *lim)
{
	lim->max_len = QUERY_LEN_DEFAULT;
	lim->max_depth = QUERY_DEPTH_DEFAULT;
	lim->max_nodes = QUERY_NODES_DEFAULT;
	lim->max_tag_values = QUERY_TAG_VALUES_DEFAULT;
}

static int query_limits_check(const query_limits_t *l, vela_err_t *err)
{
	if (l->max_len < QUERY_LEN_MIN || l->max_len > QUERY_LEN_MAX ||
	    l->max_depth < QUERY_DEPTH_MIN || l->max_depth > QUERY_DEPTH_MAX ||
	    l->max_nodes < QUERY_NODES_MIN || l->max_nodes > QUERY_NODES_MAX ||
	    l->max_tag_values < QUERY_TAG_VALUES_MIN || l->max_tag_values > QUERY_TAG_VALUES_MAX)
		return vela_err_set(err, VELA_EINVAL, "Query limits out of range");
	return 0;
}

/* After the filter: an optional KNN tail, then nothing. */
static int query_tail_parse(query_parser_t *p)
{
	query_skip_ws(p);
	if (query_at_arrow(p, '[')) {
		int rc = query_knn_parse(p);
		if (rc != 0)
			return rc;
		query_skip_ws(p);
	}
	if (query_at_end(p))
		return query_knn_validate(p);
	if (query_at_arrow(p, '['))
		return vela_err_set(p->err, VELA_ESYNTAX,
				    "KNN clause may appear only once (second one at offset %zu)",
				    p->pos);
	if (query_peek(p, 0) == ')')
		return vela_err_set(p->err, VELA_ESYNTAX, "Unbalanced ')' at offset %zu", p->pos);
	return query_err_near(p, p->pos);
}

static bool query_text_blank(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (!query_is_space((unsigned char)s[i]))
			return false;
	return true;
}

int query_parse_ex(const char *text, size_t len, const query_param_t *params,
		   size_t n_params, query_field_lookup_fn lookup, void *lookup_ctx,
		   const query_limits_t *lim, query_t **out, vela_err_t *err)
{
	if (out == NULL)
		return vela_err_set(err, VELA_EINVAL, "query_parse: no output pointer");
	*out = NULL;
	if ((text == NULL && len > 0) || lookup == NULL || (params == NULL && n_params > 0))
		return vela_err_set(err, VELA_EINVAL, "query_parse: invalid arguments");
	query_parser_t p = {.s = text, .len = len, .params = params, .n_params = n_params,
			    .lookup = lookup, .lookup_ctx = lookup_ctx, .err = err};
	if (lim != NULL)
		p.lim = *lim;
	else
		query_limits_default(&p.lim);
	int rc = query_limits_check(&p.lim, err);
	if (rc != 0)
		return rc;
	if (len > p.lim.max_len)
		return vela_err_set(err, VELA_ELIMIT, "Query is too long (%zu bytes, limit %zu)",
				    len, p.lim.max_len);
	if (query_text_blank(text, len))
		return vela_err_set(err, VELA_ESYNTAX, "Empty query");
	p.q = calloc(1, sizeof(query_t));
	if (p.q == NULL)
		return vela_err_set(err, VELA_ENOMEM, "Out of memory parsing the query");
	rc = query_filter_parse(&p, &p.q->root);
	if (rc == 0)
		rc = query_tail_parse(&p);
	if (rc != 0) {
		query_free(p.q);
		return rc;
	}
	*out = p.q;
	return 0;
}

int query_parse(const char *text, size_t len, const query_param_t *params, size_t n_params,
		query_field_lookup_fn lookup, void *lookup_ctx, query_t **out, vela_err_t *err)
{
	return query_parse_ex(text, len, params, n_params, lookup, lookup_ctx, NULL, out, err);
}

const query_knn_t *query_knn(const query_t *q)
{
	return q != NULL ? q->knn : NULL;
}

int query_filter_is_all(const query_t *q)
{
	return q != NULL && q->root != NULL && q->root->kind == QUERY_NODE_ALL;
}

size_t query_vrange_count(const query_t *q)
{
	return q != NULL ? q->n_vranges : 0;
}

const query_vrange_t *query_vrange_at(const query_t *q, size_t i)
{
	return (q != NULL && i < q->n_vranges) ? &q->vranges[i] : NULL;
}
