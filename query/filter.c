/* What a batch needs to plan the evaluation of many filters together
 * (issue 6, the batch executor; HQI's "filter commonality",
 * reference/hybrid-queries.md §1.2): a canonical key of a filter, equal for
 * two filters exactly when they evaluate the same leaves the same way, and
 * the list of numeric ranges a filter's evaluation will ask its source for. */
#include <math.h>
#include <string.h>

#include "query/query_int.h"

/* ------------------------------------------------------------ filter key */

typedef struct key_buf {
	unsigned char *p;
	size_t cap, len;
} key_buf_t;

static void key_put(key_buf_t *k, const void *src, size_t n)
{
	if (k->len < k->cap && n > 0)
		memcpy(k->p + k->len, src, n <= k->cap - k->len ? n : k->cap - k->len);
	k->len += n;
}

static void key_u32(key_buf_t *k, uint32_t v)
{
	key_put(k, &v, sizeof(v));
}

static void key_f64(key_buf_t *k, double v)
{
	if (v == 0)
		v = 0; /* -0 and 0 select the same documents */
	key_put(k, &v, sizeof(v));
}

/* Length-prefixed, so concatenations stay unambiguous. */
static void key_bytes(key_buf_t *k, const void *s, size_t n)
{
	key_u32(k, (uint32_t)n);
	key_put(k, s, n);
}

static void key_node(key_buf_t *k, const query_t *q, const query_node_t *n)
{
	key_u32(k, (uint32_t)n->kind);
	switch (n->kind) {
	case QUERY_NODE_ALL:
	case QUERY_NODE_OPTIONAL: /* evaluates to every document, whatever its kid */
		return;
	case QUERY_NODE_AND:
	case QUERY_NODE_OR:
		key_u32(k, n->list.n);
		for (uint32_t i = 0; i < n->list.n; i++)
			key_node(k, q, n->list.kids[i]);
		return;
	case QUERY_NODE_NOT:
		key_node(k, q, n->kid);
		return;
	case QUERY_NODE_TAG:
		key_u32(k, n->tag.field_no);
		key_u32(k, n->tag.n);
		for (uint32_t i = 0; i < n->tag.n; i++)
			key_bytes(k, n->tag.vals[i].s, n->tag.vals[i].len);
		return;
	case QUERY_NODE_NUMERIC:
		key_u32(k, n->num.field_no);
		key_f64(k, n->num.lo);
		key_f64(k, n->num.hi);
		key_u32(k, (uint32_t)n->num.lo_excl | (uint32_t)n->num.hi_excl << 1 |
				   (uint32_t)n->num.ne << 2);
		return;
	case QUERY_NODE_TEXT:
		key_u32(k, n->text.n_fields);
		for (uint32_t i = 0; i < n->text.n_fields; i++)
			key_u32(k, (uint32_t)n->text.fields[i]);
		key_bytes(k, n->text.term.s, n->text.term.len);
		return;
	case QUERY_NODE_VRANGE: {
		const query_vrange_t *v = &q->vranges[n->vrange.idx];
		key_u32(k, v->field_no);
		key_f64(k, v->radius);
		key_bytes(k, v->blob, v->blob_len);
		return;
	}
	}
}

size_t query_filter_key(const query_t *q, void *buf, size_t cap)
{
	key_buf_t k = {.p = buf, .cap = buf ? cap : 0};
	if (q != NULL && q->root != NULL)
		key_node(&k, q, q->root);
	return k.len;
}

/* ------------------------------------------------------------ numeric ranges */

static int ranges_node(const query_node_t *n, query_num_range_fn fn, void *ctx)
{
	int rc = 0;
	switch (n->kind) {
	case QUERY_NODE_AND:
	case QUERY_NODE_OR:
		for (uint32_t i = 0; rc == 0 && i < n->list.n; i++)
			rc = ranges_node(n->list.kids[i], fn, ctx);
		return rc;
	case QUERY_NODE_NOT:
		return ranges_node(n->kid, fn, ctx);
	case QUERY_NODE_NUMERIC: {
		query_num_range_t r = {.field_no = n->num.field_no, .lo = n->num.lo,
				       .hi = n->num.hi, .lo_excl = n->num.lo_excl,
				       .hi_excl = n->num.hi_excl};
		if (!n->num.ne)
			return fn(ctx, &r);
		/* `@n!=v` is evaluated as everything with a value minus [v, v]
		 * (eval.c eval_numeric) */
		r = (query_num_range_t){.field_no = n->num.field_no, .lo = n->num.lo,
					.hi = n->num.lo};
		rc = fn(ctx, &r);
		r.lo = -INFINITY;
		r.hi = INFINITY;
		return rc ? rc : fn(ctx, &r);
	}
	default: /* `*` and `~x` (OPTIONAL) evaluate no leaf; the rest are not numeric */
		return 0;
	}
}

int query_num_ranges(const query_t *q, query_num_range_fn fn, void *ctx)
{
	if (q == NULL || fn == NULL)
		return VELA_EINVAL;
	return q->root ? ranges_node(q->root, fn, ctx) : 0;
}

/* ------------------------------------------------------------ atoms */

/* A conjunct that is a positive TAG set or a plain numeric range is an
 * atom; anything else (text, NOT, OR, `!=`, VECTOR_RANGE) is residual. */
static int atoms_conjunct(const query_node_t *n, query_atom_fn fn, void *ctx, uint32_t *resid)
{
	query_atom_t a;
	memset(&a, 0, sizeof(a));
	if (n->kind == QUERY_NODE_ALL || n->kind == QUERY_NODE_OPTIONAL)
		return 0;
	if (n->kind == QUERY_NODE_TAG) {
		a.kind = QUERY_ATOM_TAG;
		a.field_no = n->tag.field_no;
		a.n_vals = n->tag.n;
		for (uint32_t i = 0; i < n->tag.n && i < QUERY_ATOM_VALS_MAX; i++) {
			a.vals[i] = n->tag.vals[i].s;
			a.lens[i] = n->tag.vals[i].len;
		}
		if (n->tag.n > QUERY_ATOM_VALS_MAX) {
			(*resid)++; /* too wide to reason about: residual */
			return 0;
		}
		return fn(ctx, &a);
	}
	if (n->kind == QUERY_NODE_NUMERIC && !n->num.ne) {
		a.kind = QUERY_ATOM_NUM;
		a.field_no = n->num.field_no;
		a.lo = n->num.lo;
		a.hi = n->num.hi;
		a.lo_excl = n->num.lo_excl;
		a.hi_excl = n->num.hi_excl;
		return fn(ctx, &a);
	}
	(*resid)++;
	return 0;
}

int query_atoms_each(const query_t *q, query_atom_fn fn, void *ctx, uint32_t *residual)
{
	uint32_t resid = 0;
	int rc = 0;
	if (q == NULL || fn == NULL)
		return VELA_EINVAL;
	const query_node_t *r = q->root;
	if (r && r->kind == QUERY_NODE_AND) {
		for (uint32_t i = 0; rc == 0 && i < r->list.n; i++)
			rc = atoms_conjunct(r->list.kids[i], fn, ctx, &resid);
	} else if (r) {
		rc = atoms_conjunct(r, fn, ctx, &resid);
	}
	if (residual)
		*residual = resid;
	return rc;
}
