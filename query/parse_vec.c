/* Vector clauses: the `=>[KNN ...]` tail, `@v:[VECTOR_RANGE r $blob]`, and
 * the `=>{$attr: value; ...}` attribute blocks that follow clauses. Error
 * texts that Redis clients may match on start with Redis's own wording. */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "query/query_int.h"

#define VEC_PARAM_ERR "Invalid value was given (Error parsing vector similarity parameters)"

static int oom(query_parser_t *p)
{
	return vela_err_set(p->err, VELA_ENOMEM, "Out of memory parsing the query");
}

static bool ci_eq(const char *s, size_t len, const char *w)
{
	size_t n = strlen(w);
	if (len != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (query_lower((unsigned char)s[i]) != query_lower((unsigned char)w[i]))
			return false;
	return true;
}

static int value_invalid(query_parser_t *p, const char *what, const char *v, size_t len,
			 size_t off)
{
	char shown[200];
	query_fmt_bytes(shown, sizeof(shown), v, len);
	return vela_err_set(p->err, VELA_ESYNTAX, VEC_PARAM_ERR ": %s '%s' at offset %zu", what,
			    shown, off);
}

/* Decimal digits only, no sign: K and the integer attributes. */
static bool uint_parse(const char *s, size_t len, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;
	if (len == 0 || len > 12)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = v;
	return v <= max;
}

/* The query vector: a `$param` whose size must match the field's. */
static int blob_take(query_parser_t *p, const query_field_info_t *fi, const void **blob,
		     size_t *blob_len)
{
	if (query_peek(p, 0) != '$' || query_at_end(p))
		return vela_err_set(p->err, VELA_ESYNTAX,
				    "Expected a $parameter holding the query vector at offset %zu",
				    p->pos);
	const query_param_t *pr = NULL;
	int rc = query_param_read(p, &pr, NULL);
	if (rc != 0)
		return rc;
	size_t el = fi->vec_type == VELA_VEC_FLOAT32 ? 4 : fi->vec_type == VELA_VEC_FLOAT16 ? 2 : 0;
	if (el == 0)
		return vela_err_set(p->err, VELA_ETYPE, "Unsupported vector element type %d",
				    (int)fi->vec_type);
	size_t want = (size_t)fi->dim * el;
	if (pr->value_len != want)
		return vela_err_set(p->err, VELA_EDIM,
				    "Error parsing vector similarity query: query vector blob size "
				    "(%zu) does not match index's expected size (%zu).",
				    pr->value_len, want);
	*blob = query_arena_strdup(p->q, pr->value, pr->value_len);
	*blob_len = pr->value_len;
	return *blob ? 0 : oom(p);
}

/* A distance alias must not shadow a schema field. */
static int alias_take(query_parser_t *p, const char *s, size_t len, size_t off,
		      const char **out)
{
	if (len == 0 || len > QUERY_NAME_MAX)
		return vela_err_set(p->err, VELA_ESYNTAX, "Invalid alias at offset %zu", off);
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f)
			return vela_err_set(p->err, VELA_ESYNTAX, "Invalid alias at offset %zu", off);
	query_field_info_t fi;
	int rc = p->lookup(p->lookup_ctx, s, len, &fi);
	if (rc == 0) {
		char shown[200];
		query_fmt_bytes(shown, sizeof(shown), s, len);
		return vela_err_set(p->err, VELA_EEXISTS,
				    "Property `%s` already exists in schema (offset %zu)", shown, off);
	}
	if (rc != VELA_ENOTFOUND)
		return vela_err_set(p->err, rc, "Looking up alias failed: %s", vela_strerror(rc));
	*out = query_arena_strdup(p->q, s, len);
	return *out ? 0 : oom(p);
}

/* ------------------------------------------------------------ KNN attributes */

typedef enum knn_attr_kind { KA_UINT, KA_DOUBLE, KA_POLICY, KA_HISTORY, KA_ALIAS } knn_attr_kind_t;

static const struct knn_attr_def {
	const char *name;
	uint32_t bit;
	knn_attr_kind_t kind;
	size_t off;
} knn_attr_defs[] = {
	{"EF_RUNTIME", QUERY_KNN_EF_RUNTIME, KA_UINT, offsetof(query_knn_t, ef_runtime)},
	{"EPSILON", QUERY_KNN_EPSILON, KA_DOUBLE, offsetof(query_knn_t, epsilon)},
	{"HYBRID_POLICY", QUERY_KNN_HYBRID_POLICY, KA_POLICY, 0},
	{"BATCH_SIZE", QUERY_KNN_BATCH_SIZE, KA_UINT, offsetof(query_knn_t, batch_size)},
	{"SEARCH_WINDOW_SIZE", QUERY_KNN_SEARCH_WINDOW_SIZE, KA_UINT,
	 offsetof(query_knn_t, search_window_size)},
	{"USE_SEARCH_HISTORY", QUERY_KNN_USE_SEARCH_HISTORY, KA_HISTORY, 0},
	{"SEARCH_BUFFER_CAPACITY", QUERY_KNN_SEARCH_BUFFER_CAPACITY, KA_UINT,
	 offsetof(query_knn_t, search_buffer_capacity)},
	{"SHARD_K_RATIO", QUERY_KNN_SHARD_K_RATIO, KA_DOUBLE, offsetof(query_knn_t, shard_k_ratio)},
	{"YIELD_DISTANCE_AS", QUERY_KNN_ALIAS, KA_ALIAS, 0},
};

static int knn_attr_value(query_parser_t *p, query_knn_t *knn, const struct knn_attr_def *d,
			  const char *v, size_t len, size_t off)
{
	uint64_t u = 0;
	double x = 0;
	switch (d->kind) {
	case KA_UINT:
		if (!uint_parse(v, len, QUERY_KNN_ATTR_INT_MAX, &u) || u < QUERY_KNN_ATTR_INT_MIN)
			return value_invalid(p, d->name, v, len, off);
		*(uint32_t *)((char *)knn + d->off) = (uint32_t)u;
		return 0;
	case KA_DOUBLE:
		if (query_number_parse(p, v, len, off, &x) != 0 || x < 0 || x == INFINITY ||
		    (d->bit == QUERY_KNN_SHARD_K_RATIO && (x == 0 || x > 1)))
			return value_invalid(p, d->name, v, len, off);
		*(double *)((char *)knn + d->off) = x;
		return 0;
	case KA_POLICY:
		if (ci_eq(v, len, "BATCHES"))
			knn->hybrid_policy = QUERY_HYBRID_BATCHES;
		else if (ci_eq(v, len, "ADHOC_BF"))
			knn->hybrid_policy = QUERY_HYBRID_ADHOC_BF;
		else {
			char shown[200];
			query_fmt_bytes(shown, sizeof(shown), v, len);
			return vela_err_set(p->err, VELA_ESYNTAX,
					    "invalid hybrid policy was given: '%s' (HYBRID_POLICY "
					    "is ADHOC_BF or BATCHES; offset %zu)", shown, off);
		}
		return 0;
	case KA_HISTORY:
		if (ci_eq(v, len, "ON"))
			knn->use_search_history = QUERY_HISTORY_ON;
		else if (ci_eq(v, len, "OFF"))
			knn->use_search_history = QUERY_HISTORY_OFF;
		else if (ci_eq(v, len, "AUTO"))
			knn->use_search_history = QUERY_HISTORY_AUTO;
		else
			return value_invalid(p, d->name, v, len, off);
		return 0;
	case KA_ALIAS:
		return alias_take(p, v, len, off, &knn->alias);
	}
	return VELA_EINVAL;
}

static int knn_attr_set(query_parser_t *p, query_knn_t *knn, const char *name, size_t nlen,
			size_t name_off, const char *v, size_t vlen, size_t val_off)
{
	char shown[200];
	for (size_t i = 0; i < sizeof(knn_attr_defs) / sizeof(knn_attr_defs[0]); i++) {
		const struct knn_attr_def *d = &knn_attr_defs[i];
		if (!ci_eq(name, nlen, d->name))
			continue;
		if (knn->set & d->bit)
			return vela_err_set(p->err, VELA_ESYNTAX,
					    "Parameter was specified twice (%s at offset %zu)",
					    d->name, name_off);
		knn->set |= d->bit;
		return knn_attr_value(p, knn, d, v, vlen, val_off);
	}
	query_fmt_bytes(shown, sizeof(shown), name, nlen);
	return vela_err_set(p->err, VELA_ESYNTAX, "Unknown KNN attribute '%s' at offset %zu",
			    shown, name_off);
}

/* ------------------------------------------------------------ attribute blocks */

typedef int (*attr_fn)(query_parser_t *p, void *ctx, const char *name, size_t nlen,
		       size_t name_off, const char *v, size_t vlen, size_t val_off);

static int attr_unbalanced(query_parser_t *p, size_t open)
{
	return vela_err_set(p->err, VELA_ESYNTAX, "Unbalanced '{' at offset %zu", open);
}

/* A value: `$param` or bytes up to ';' or '}' with trailing spaces cut. */
static int attr_value_read(query_parser_t *p, size_t open, const char **v, size_t *len)
{
	query_skip_ws(p);
	if (query_peek(p, 0) == '$' && query_is_word(query_peek(p, 1))) {
		const query_param_t *pr = NULL;
		int rc = query_param_read(p, &pr, NULL);
		if (rc == 0) {
			*v = pr->value;
			*len = pr->value_len;
		}
		return rc;
	}
	size_t start = p->pos, end;
	while (p->pos < p->len && p->s[p->pos] != ';' && p->s[p->pos] != '}')
		p->pos++;
	if (query_at_end(p))
		return attr_unbalanced(p, open);
	for (end = p->pos; end > start && query_is_space((unsigned char)p->s[end - 1]); end--)
		;
	if (end == start)
		return query_err_near(p, p->pos);
	*v = p->s + start;
	*len = end - start;
	return 0;
}

/* One `$name: value` pair. */
static int attr_pair_parse(query_parser_t *p, size_t open, attr_fn fn, void *ctx)
{
	if (query_peek(p, 0) != '$')
		return query_err_near(p, p->pos);
	size_t name_off = ++p->pos;
	while (p->pos < p->len && query_is_word((unsigned char)p->s[p->pos]))
		p->pos++;
	size_t nlen = p->pos - name_off;
	if (nlen == 0)
		return query_err_near(p, p->pos);
	query_skip_ws(p);
	if (query_at_end(p))
		return attr_unbalanced(p, open);
	if (p->s[p->pos] != ':')
		return query_err_near(p, p->pos);
	p->pos++;
	size_t val_off = p->pos;
	const char *v = NULL;
	size_t vlen = 0;
	int rc = attr_value_read(p, open, &v, &vlen);
	if (rc != 0)
		return rc;
	return fn(p, ctx, p->s + name_off, nlen, name_off - 1, v, vlen, val_off);
}

/* `=>{$a: v; $b: w}`; p->pos at '='. A trailing ';' is allowed. */
static int attrs_parse(query_parser_t *p, attr_fn fn, void *ctx)
{
	p->pos += 2;
	size_t open = p->pos++;
	for (;;) {
		query_skip_ws(p);
		if (query_at_end(p))
			return attr_unbalanced(p, open);
		if (p->s[p->pos] == '}') {
			p->pos++;
			return 0;
		}
		int rc = attr_pair_parse(p, open, fn, ctx);
		if (rc != 0)
			return rc;
		query_skip_ws(p);
		if (query_at_end(p))
			return attr_unbalanced(p, open);
		if (p->s[p->pos] == ';')
			p->pos++;
		else if (p->s[p->pos] != '}')
			return query_err_near(p, p->pos);
	}
}

static int knn_attr_cb(query_parser_t *p, void *ctx, const char *name, size_t nlen,
		       size_t name_off, const char *v, size_t vlen, size_t val_off)
{
	return knn_attr_set(p, ctx, name, nlen, name_off, v, vlen, val_off);
}

/* Clause attributes. $weight/$slop/$inorder/$phonetic only affect scoring,
 * which vela does not do: validated and ignored. */
enum {
	NA_WEIGHT = 1u << 0,
	NA_SLOP = 1u << 1,
	NA_INORDER = 1u << 2,
	NA_PHONETIC = 1u << 3,
	NA_YIELD = 1u << 4,
	NA_EPSILON = 1u << 5,
};

static const struct node_attr_def {
	const char *name;
	uint32_t bit;
} node_attr_defs[] = {
	{"weight", NA_WEIGHT}, {"slop", NA_SLOP}, {"inorder", NA_INORDER},
	{"phonetic", NA_PHONETIC}, {"yield_distance_as", NA_YIELD}, {"epsilon", NA_EPSILON},
};

typedef struct node_attr_ctx {
	query_node_t *n;
	uint32_t seen;
} node_attr_ctx_t;

static int node_attr_value(query_parser_t *p, query_node_t *n, uint32_t bit, const char *v,
			   size_t len, size_t off)
{
	double x = 0;
	uint64_t u = 0;
	query_vrange_t *vr = n->kind == QUERY_NODE_VRANGE ? &p->q->vranges[n->vrange.idx] : NULL;
	if ((bit == NA_YIELD || bit == NA_EPSILON) && vr == NULL)
		return vela_err_set(p->err, VELA_ESYNTAX,
				    "Attribute at offset %zu applies only to VECTOR_RANGE clauses",
				    off);
	switch (bit) {
	case NA_WEIGHT:
		return query_number_parse(p, v, len, off, &x) == 0 && x >= 0
			       ? 0
			       : value_invalid(p, "$weight", v, len, off);
	case NA_SLOP:
		return uint_parse(v, len, UINT32_MAX, &u) ? 0 : value_invalid(p, "$slop", v, len, off);
	case NA_INORDER:
	case NA_PHONETIC:
		return ci_eq(v, len, "true") || ci_eq(v, len, "false")
			       ? 0
			       : value_invalid(p, "flag", v, len, off);
	case NA_YIELD:
		return alias_take(p, v, len, off, &vr->yield_distance_as);
	default: /* NA_EPSILON */
		if (query_number_parse(p, v, len, off, &x) != 0 || x < 0 || x == INFINITY)
			return value_invalid(p, "$EPSILON", v, len, off);
		vr->epsilon = x;
		vr->has_epsilon = 1;
		return 0;
	}
}

static int node_attr_cb(query_parser_t *p, void *ctx, const char *name, size_t nlen,
			size_t name_off, const char *v, size_t vlen, size_t val_off)
{
	node_attr_ctx_t *c = ctx;
	for (size_t i = 0; i < sizeof(node_attr_defs) / sizeof(node_attr_defs[0]); i++) {
		if (!ci_eq(name, nlen, node_attr_defs[i].name))
			continue;
		uint32_t bit = node_attr_defs[i].bit;
		if (c->seen & bit)
			return vela_err_set(p->err, VELA_ESYNTAX,
					    "Parameter was specified twice (offset %zu)", name_off);
		c->seen |= bit;
		return node_attr_value(p, c->n, bit, v, vlen, val_off);
	}
	char shown[200];
	query_fmt_bytes(shown, sizeof(shown), name, nlen);
	return vela_err_set(p->err, VELA_ESYNTAX, "Unknown attribute '$%s' at offset %zu", shown,
			    name_off);
}

int query_node_attrs_parse(query_parser_t *p, query_node_t *n)
{
	node_attr_ctx_t c = {.n = n, .seen = 0};
	return attrs_parse(p, node_attr_cb, &c);
}

/* ------------------------------------------------------------ VECTOR_RANGE */

static int vrange_push(query_parser_t *p, query_vrange_t **out, uint32_t *idx)
{
	query_t *q = p->q;
	if (q->n_vranges == q->cap_vranges) {
		uint32_t cap = q->cap_vranges ? q->cap_vranges * 2 : 4;
		query_vrange_t *v = query_arena_alloc(q, cap * sizeof(*v));
		if (v == NULL)
			return oom(p);
		if (q->n_vranges > 0)
			memcpy(v, q->vranges, q->n_vranges * sizeof(*v));
		q->vranges = v;
		q->cap_vranges = cap;
	}
	*idx = q->n_vranges++;
	*out = &q->vranges[*idx];
	return 0;
}

/* A token up to space or one of the delimiters, or a `$param` value. */
static int token_read(query_parser_t *p, const char **v, size_t *len, size_t *off)
{
	query_skip_ws(p);
	*off = p->pos;
	if (query_peek(p, 0) == '$' && query_is_word(query_peek(p, 1))) {
		const query_param_t *pr = NULL;
		int rc = query_param_read(p, &pr, NULL);
		if (rc == 0) {
			*v = pr->value;
			*len = pr->value_len;
		}
		return rc;
	}
	size_t i = p->pos;
	while (i < p->len && !query_is_space((unsigned char)p->s[i]) && p->s[i] != ']')
		i++;
	if (i == p->pos)
		return query_err_near(p, p->pos);
	*v = p->s + p->pos;
	*len = i - p->pos;
	p->pos = i;
	return 0;
}

static int bracket_close(query_parser_t *p, size_t open)
{
	query_skip_ws(p);
	if (query_at_end(p))
		return vela_err_set(p->err, VELA_ESYNTAX, "Unbalanced '[' at offset %zu", open);
	if (p->s[p->pos] != ']')
		return query_err_near(p, p->pos);
	p->pos++;
	return 0;
}

int query_vrange_parse(query_parser_t *p, const query_field_info_t *fi, const char *name,
		       size_t open, query_node_t **out)
{
	const char *v = NULL;
	size_t len = 0, off = 0;
	double r = 0;
	int rc = token_read(p, &v, &len, &off);
	if (rc == 0)
		rc = query_number_parse(p, v, len, off, &r);
	if (rc != 0)
		return rc;
	if (r < 0)
		return vela_err_set(p->err, VELA_ESYNTAX,
				    "Negative radius for VECTOR_RANGE at offset %zu", off);
	query_skip_ws(p);
	const void *blob = NULL;
	size_t blob_len = 0;
	rc = blob_take(p, fi, &blob, &blob_len);
	if (rc == 0)
		rc = bracket_close(p, open);
	query_vrange_t *vr = NULL;
	uint32_t idx = 0;
	if (rc == 0)
		rc = vrange_push(p, &vr, &idx);
	if (rc == 0)
		rc = query_node_new(p, QUERY_NODE_VRANGE, open, out);
	if (rc != 0)
		return rc;
	(*out)->vrange.idx = idx;
	*vr = (query_vrange_t){.field_no = fi->field_no, .field = name, .blob = blob,
			       .blob_len = blob_len, .radius = r};
	return 0;
}

/* ------------------------------------------------------------ KNN */

static int knn_k_parse(query_parser_t *p, query_knn_t *knn)
{
	const char *v = NULL;
	size_t len = 0, off = 0;
	uint64_t k = 0;
	int rc = token_read(p, &v, &len, &off);
	if (rc != 0)
		return rc;
	if (!uint_parse(v, len, UINT64_MAX / 10, &k)) {
		char shown[200];
		query_fmt_bytes(shown, sizeof(shown), v, len);
		return vela_err_set(p->err, VELA_ESYNTAX,
				    "Syntax error: invalid KNN K '%s' at offset %zu", shown, off);
	}
	if (k > VELA_K_MAX)
		return vela_err_set(p->err, VELA_ELIMIT,
				    "KNN K %llu is larger than the maximum %u (offset %zu)",
				    (unsigned long long)k, VELA_K_MAX, off);
	knn->k = (uint32_t)k;
	return 0;
}

static int knn_field_parse(query_parser_t *p, query_knn_t *knn, query_field_info_t *fi)
{
	char buf[QUERY_NAME_MAX + 1];
	size_t len = 0, off = 0;
	query_skip_ws(p);
	if (query_peek(p, 0) != '@' || query_at_end(p))
		return vela_err_set(p->err, VELA_ESYNTAX,
				    "Expected '@field' in KNN clause at offset %zu", p->pos);
	p->pos++;
	off = p->pos;
	int rc = query_name_read(p, buf, &len);
	if (rc == 0)
		rc = query_field_get(p, buf, len, off, fi);
	if (rc != 0)
		return rc;
	if (fi->type != VELA_FIELD_VECTOR)
		return vela_err_set(p->err, VELA_ETYPE,
				    "Expected a VECTOR field for KNN: '%s' is not one (offset %zu)",
				    buf, off);
	knn->field_no = fi->field_no;
	knn->field = query_arena_strdup(p->q, buf, len);
	return knn->field ? 0 : oom(p);
}

/* `NAME value` pairs and `AS alias` up to ']'. */
static int knn_options_parse(query_parser_t *p, query_knn_t *knn, size_t open)
{
	for (;;) {
		query_skip_ws(p);
		if (query_at_end(p))
			return vela_err_set(p->err, VELA_ESYNTAX, "Unbalanced '[' at offset %zu",
					    open);
		if (p->s[p->pos] == ']') {
			p->pos++;
			return 0;
		}
		size_t noff = p->pos;
		while (p->pos < p->len && query_is_word((unsigned char)p->s[p->pos]))
			p->pos++;
		size_t nlen = p->pos - noff;
		if (nlen == 0)
			return query_err_near(p, p->pos);
		const char *v = NULL;
		size_t vlen = 0, voff = 0;
		int rc = token_read(p, &v, &vlen, &voff);
		if (rc != 0)
			return rc;
		if (ci_eq(p->s + noff, nlen, "AS"))
			rc = knn_attr_set(p, knn, "YIELD_DISTANCE_AS", 17, noff, v, vlen, voff);
		else
			rc = knn_attr_set(p, knn, p->s + noff, nlen, noff, v, vlen, voff);
		if (rc != 0)
			return rc;
	}
}

int query_knn_parse(query_parser_t *p)
{
	p->pos += 2; /* "=>" */
	size_t open = p->pos++;
	query_knn_t *knn = query_arena_alloc(p->q, sizeof(*knn));
	if (knn == NULL)
		return oom(p);
	query_skip_ws(p);
	size_t kw = p->pos;
	while (p->pos < p->len && query_is_word((unsigned char)p->s[p->pos]))
		p->pos++;
	if (!ci_eq(p->s + kw, p->pos - kw, "KNN"))
		return query_err_near(p, kw);
	query_field_info_t fi;
	int rc = knn_k_parse(p, knn);
	if (rc == 0)
		rc = knn_field_parse(p, knn, &fi);
	if (rc == 0) {
		query_skip_ws(p);
		rc = blob_take(p, &fi, &knn->blob, &knn->blob_len);
	}
	if (rc == 0)
		rc = knn_options_parse(p, knn, open);
	if (rc != 0)
		return rc;
	query_skip_ws(p);
	if (query_at_arrow(p, '{'))
		rc = attrs_parse(p, knn_attr_cb, knn);
	p->q->knn = knn;
	return rc;
}

int query_knn_validate(query_parser_t *p)
{
	const query_knn_t *knn = p->q->knn;
	if (knn == NULL)
		return 0;
	if ((knn->set & (QUERY_KNN_HYBRID_POLICY | QUERY_KNN_BATCH_SIZE)) &&
	    query_filter_is_all(p->q))
		return vela_err_set(p->err, VELA_ESYNTAX,
				    "hybrid query attributes were sent for a non-hybrid query");
	if (knn->hybrid_policy == QUERY_HYBRID_ADHOC_BF && (knn->set & QUERY_KNN_BATCH_SIZE))
		return vela_err_set(p->err, VELA_ESYNTAX,
				    "'batch size' is irrelevant for 'ADHOC_BF' policy");
	if (knn->hybrid_policy == QUERY_HYBRID_ADHOC_BF && (knn->set & QUERY_KNN_EF_RUNTIME))
		return vela_err_set(p->err, VELA_ESYNTAX,
				    "'EF_RUNTIME' is irrelevant for 'ADHOC_BF' policy");
	return 0;
}
