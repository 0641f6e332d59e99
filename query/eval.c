/* Evaluation of the filter to a docid bitmap through the caller's source
 * callbacks. Recursion depth is bounded by the parser's depth limit. */
#include <math.h>
#include <stdlib.h>

#include "query/query_int.h"

typedef struct eval_ctx {
	const query_t *q;
	const query_source_t *src;
	vela_err_t *err;
} eval_ctx_t;

static int eval_node(eval_ctx_t *e, const query_node_t *n, roaring_bitmap_t **out);

static int eval_fail(eval_ctx_t *e, int rc, const char *what)
{
	return vela_err_set(e->err, rc, "Query evaluation failed in %s: %s", what,
			    vela_strerror(rc));
}

static int eval_missing(eval_ctx_t *e, const char *what)
{
	return vela_err_set(e->err, VELA_EUNSUPPORTED, "The index cannot evaluate %s clauses",
			    what);
}

static roaring_bitmap_t *bm_new(eval_ctx_t *e)
{
	roaring_bitmap_t *b = roaring_bitmap_create();
	if (b == NULL)
		vela_err_set(e->err, VELA_ENOMEM, "Out of memory evaluating the query");
	return b;
}

/* Run one callback into a fresh bitmap; frees it on failure. */
#define EVAL_LEAF(e, out, what, call)                                                  \
	do {                                                                           \
		*(out) = bm_new(e);                                                    \
		if (*(out) == NULL)                                                    \
			return VELA_ENOMEM;                                            \
		int rc_ = (call);                                                      \
		if (rc_ != 0) {                                                        \
			roaring_bitmap_free(*(out));                                   \
			*(out) = NULL;                                                 \
			return eval_fail(e, rc_, what);                                \
		}                                                                      \
	} while (0)

static int eval_all(eval_ctx_t *e, roaring_bitmap_t **out)
{
	if (e->src->all == NULL)
		return eval_missing(e, "'*' or NOT");
	EVAL_LEAF(e, out, "all", e->src->all(e->src->ctx, *out));
	return 0;
}

/* A clause of several values from bitmaps the source keeps: one lazy union
 * (roaring_bitmap_or_many) instead of an in-place OR per value, which
 * re-converts containers once per value (a 60-value clause over a million
 * documents: milliseconds). 1: the source keeps none, use its tag(). */
static int eval_tag_refs(eval_ctx_t *e, const query_node_t *n, roaring_bitmap_t **out)
{
	const query_source_t *s = e->src;
	if (s->tag_ref == NULL || n->tag.n < 2)
		return 1;
	const roaring_bitmap_t **v = malloc(n->tag.n * sizeof(*v));
	if (v == NULL)
		return 1;
	uint32_t m = 0;
	int rc = 0;
	for (uint32_t i = 0; rc == 0 && i < n->tag.n; i++) {
		const roaring_bitmap_t *bm = NULL;
		rc = s->tag_ref(s->ctx, n->tag.field_no, n->tag.vals[i].s, n->tag.vals[i].len, &bm);
		if (rc == 0 && bm)
			v[m++] = bm;
	}
	if (rc == 0) {
		*out = m ? roaring_bitmap_or_many(m, v) : bm_new(e);
		rc = *out ? 0 : VELA_ENOMEM;
	}
	free(v);
	if (rc == VELA_EUNSUPPORTED)
		return 1;
	if (rc)
		*out = NULL; /* as EVAL_LEAF leaves it on failure */
	return rc ? eval_fail(e, rc, "tag") : 0;
}

static int eval_tag(eval_ctx_t *e, const query_node_t *n, roaring_bitmap_t **out)
{
	const query_source_t *s = e->src;
	if (s->tag == NULL)
		return eval_missing(e, "TAG");
	int r = eval_tag_refs(e, n, out);
	if (r != 1)
		return r;
	EVAL_LEAF(e, out, "tag", 0);
	for (uint32_t i = 0; i < n->tag.n; i++) {
		int rc = s->tag(s->ctx, n->tag.field_no, n->tag.vals[i].s, n->tag.vals[i].len, *out);
		if (rc != 0) {
			roaring_bitmap_free(*out);
			*out = NULL;
			return eval_fail(e, rc, "tag");
		}
	}
	return 0;
}

static int eval_text(eval_ctx_t *e, const query_node_t *n, roaring_bitmap_t **out)
{
	const query_source_t *s = e->src;
	if (s->text_term == NULL)
		return eval_missing(e, "TEXT");
	const char *t = n->text.term.s;
	size_t len = n->text.term.len;
	if (n->text.n_fields == 0) {
		EVAL_LEAF(e, out, "text", s->text_term(s->ctx, -1, t, len, *out));
		return 0;
	}
	EVAL_LEAF(e, out, "text", 0);
	for (uint32_t i = 0; i < n->text.n_fields; i++) {
		int rc = s->text_term(s->ctx, n->text.fields[i], t, len, *out);
		if (rc != 0) {
			roaring_bitmap_free(*out);
			*out = NULL;
			return eval_fail(e, rc, "text");
		}
	}
	return 0;
}

/* `@n!=v`: documents with a value, minus those equal to v. */
static int eval_numeric(eval_ctx_t *e, const query_node_t *n, roaring_bitmap_t **out)
{
	const query_source_t *s = e->src;
	if (s->num_range == NULL)
		return eval_missing(e, "NUMERIC");
	uint32_t f = n->num.field_no;
	if (!n->num.ne) {
		EVAL_LEAF(e, out, "numeric",
			  s->num_range(s->ctx, f, n->num.lo, n->num.lo_excl, n->num.hi,
				       n->num.hi_excl, *out));
		return 0;
	}
	roaring_bitmap_t *eq = NULL;
	EVAL_LEAF(e, &eq, "numeric", s->num_range(s->ctx, f, n->num.lo, 0, n->num.lo, 0, eq));
	*out = bm_new(e);
	int rc = *out ? s->num_range(s->ctx, f, -INFINITY, 0, INFINITY, 0, *out) : VELA_ENOMEM;
	if (rc == 0)
		roaring_bitmap_andnot_inplace(*out, eq);
	roaring_bitmap_free(eq);
	if (rc != 0) {
		roaring_bitmap_free(*out);
		*out = NULL;
		return rc == VELA_ENOMEM ? rc : eval_fail(e, rc, "numeric");
	}
	return 0;
}

static int eval_vrange(eval_ctx_t *e, const query_node_t *n, roaring_bitmap_t **out)
{
	const query_source_t *s = e->src;
	if (s->vector_range == NULL)
		return eval_missing(e, "VECTOR_RANGE");
	const query_vrange_t *v = &e->q->vranges[n->vrange.idx];
	EVAL_LEAF(e, out, "vector range",
		  s->vector_range(s->ctx, v->field_no, v->blob, v->blob_len, v->radius, *out));
	return 0;
}

static void bm_free_all(roaring_bitmap_t **v, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		roaring_bitmap_free(v[i]);
}

static int bm_card_cmp(const void *a, const void *b)
{
	uint64_t x = roaring_bitmap_get_cardinality(*(roaring_bitmap_t *const *)a);
	uint64_t y = roaring_bitmap_get_cardinality(*(roaring_bitmap_t *const *)b);
	return (x > y) - (x < y);
}

/* Evaluate the kids of an AND: positives into pos[], NOT kids' insides
 * into neg[] (subtracted later, so `a -b` never materialises "all"). `*`
 * and `~x` kids restrict nothing and are skipped. */
static int and_kids_eval(eval_ctx_t *e, const query_node_t *n, roaring_bitmap_t **pos,
			 uint32_t *np, roaring_bitmap_t **neg, uint32_t *nn)
{
	for (uint32_t i = 0; i < n->list.n; i++) {
		const query_node_t *k = n->list.kids[i];
		if (k->kind == QUERY_NODE_ALL || k->kind == QUERY_NODE_OPTIONAL)
			continue;
		bool is_not = k->kind == QUERY_NODE_NOT;
		roaring_bitmap_t **slot = is_not ? &neg[(*nn)++] : &pos[(*np)++];
		int rc = eval_node(e, is_not ? k->kid : k, slot);
		if (rc != 0) {
			is_not ? (*nn)-- : (*np)--;
			return rc;
		}
	}
	return 0;
}

/* Intersect smallest first: each step's cost is bounded by the smaller side. */
static int eval_and(eval_ctx_t *e, const query_node_t *n, roaring_bitmap_t **out)
{
	roaring_bitmap_t **pos = calloc(2 * (size_t)n->list.n, sizeof(*pos));
	if (pos == NULL)
		return vela_err_set(e->err, VELA_ENOMEM, "Out of memory evaluating the query");
	roaring_bitmap_t **neg = pos + n->list.n;
	uint32_t np = 0, nn = 0;
	int rc = and_kids_eval(e, n, pos, &np, neg, &nn);
	if (rc == 0 && np == 0) {
		rc = eval_all(e, &pos[0]);
		np = rc == 0 ? 1 : 0;
	}
	if (rc == 0) {
		qsort(pos, np, sizeof(*pos), bm_card_cmp);
		for (uint32_t i = 1; i < np && !roaring_bitmap_is_empty(pos[0]); i++)
			roaring_bitmap_and_inplace(pos[0], pos[i]);
		for (uint32_t i = 0; i < nn && !roaring_bitmap_is_empty(pos[0]); i++)
			roaring_bitmap_andnot_inplace(pos[0], neg[i]);
		*out = pos[0];
		bm_free_all(pos + 1, np - 1);
	} else {
		bm_free_all(pos, np);
	}
	bm_free_all(neg, nn);
	free(pos);
	return rc;
}

static int eval_or(eval_ctx_t *e, const query_node_t *n, roaring_bitmap_t **out)
{
	int rc = eval_node(e, n->list.kids[0], out);
	for (uint32_t i = 1; rc == 0 && i < n->list.n; i++) {
		roaring_bitmap_t *k = NULL;
		rc = eval_node(e, n->list.kids[i], &k);
		if (rc == 0) {
			roaring_bitmap_or_inplace(*out, k);
			roaring_bitmap_free(k);
		}
	}
	if (rc != 0 && *out != NULL) {
		roaring_bitmap_free(*out);
		*out = NULL;
	}
	return rc;
}

static int eval_not(eval_ctx_t *e, const query_node_t *n, roaring_bitmap_t **out)
{
	roaring_bitmap_t *inner = NULL;
	int rc = eval_node(e, n->kid, &inner);
	if (rc != 0)
		return rc;
	rc = eval_all(e, out);
	if (rc == 0)
		roaring_bitmap_andnot_inplace(*out, inner);
	roaring_bitmap_free(inner);
	return rc;
}

static int eval_node(eval_ctx_t *e, const query_node_t *n, roaring_bitmap_t **out)
{
	*out = NULL;
	switch (n->kind) {
	case QUERY_NODE_ALL:
	case QUERY_NODE_OPTIONAL:
		return eval_all(e, out);
	case QUERY_NODE_AND:
		return eval_and(e, n, out);
	case QUERY_NODE_OR:
		return eval_or(e, n, out);
	case QUERY_NODE_NOT:
		return eval_not(e, n, out);
	case QUERY_NODE_TAG:
		return eval_tag(e, n, out);
	case QUERY_NODE_NUMERIC:
		return eval_numeric(e, n, out);
	case QUERY_NODE_TEXT:
		return eval_text(e, n, out);
	case QUERY_NODE_VRANGE:
		return eval_vrange(e, n, out);
	}
	return vela_err_set(e->err, VELA_EINVAL, "Corrupt query tree");
}

int query_eval(const query_t *q, const query_source_t *src, roaring_bitmap_t **out,
	       vela_err_t *err)
{
	if (out == NULL)
		return vela_err_set(err, VELA_EINVAL, "query_eval: no output pointer");
	*out = NULL;
	if (q == NULL || q->root == NULL || src == NULL)
		return vela_err_set(err, VELA_EINVAL, "query_eval: invalid arguments");
	eval_ctx_t e = {.q = q, .src = src, .err = err};
	return eval_node(&e, q->root, out);
}

int query_eval_count(const query_t *q, const query_source_t *src, uint64_t *count,
		     vela_err_t *err)
{
	roaring_bitmap_t *b = NULL;
	int rc = query_eval(q, src, &b, err);
	if (rc != 0)
		return rc;
	*count = roaring_bitmap_get_cardinality(b);
	roaring_bitmap_free(b);
	return 0;
}
