/* query_explain(): an indented, human-readable tree (FT.EXPLAIN). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "query/query_int.h"

typedef struct out_buf {
	char *buf;
	size_t cap, len; /* len counts what the full text needs */
} out_buf_t;

static void out_printf(out_buf_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void out_printf(out_buf_t *o, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	size_t room = o->len < o->cap ? o->cap - o->len : 0;
	int n = vsnprintf(room ? o->buf + o->len : NULL, room, fmt, ap);
	va_end(ap);
	if (n > 0)
		o->len += (size_t)n;
}

static void out_indent(out_buf_t *o, int depth)
{
	out_printf(o, "%*s", depth * 2, "");
}

/* Bytes as text, non-printables as \xNN so the tree stays one line per item. */
static void out_bytes(out_buf_t *o, const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c < 0x7f && c != '\\')
			out_printf(o, "%c", c);
		else
			out_printf(o, "\\x%02x", c);
	}
}

/* Shortest of %.15g / %.17g that reads back exactly. */
static void out_num(out_buf_t *o, double v)
{
	char tmp[40];
	if (isinf(v)) {
		out_printf(o, "%s", v < 0 ? "-inf" : "+inf");
		return;
	}
	snprintf(tmp, sizeof(tmp), "%.15g", v);
	if (strtod(tmp, NULL) != v)
		snprintf(tmp, sizeof(tmp), "%.17g", v);
	out_printf(o, "%s", tmp);
}

static void explain_node(out_buf_t *o, const query_t *q, const query_node_t *n, int d);

static void explain_list(out_buf_t *o, const query_t *q, const query_node_t *n, int d)
{
	out_printf(o, "%s {\n", n->kind == QUERY_NODE_AND ? "INTERSECT" : "UNION");
	for (uint32_t i = 0; i < n->list.n; i++)
		explain_node(o, q, n->list.kids[i], d + 1);
	out_indent(o, d);
	out_printf(o, "}\n");
}

static void explain_numeric(out_buf_t *o, const query_node_t *n)
{
	out_printf(o, "NUMERIC @%s ", n->num.field);
	if (n->num.ne) {
		out_printf(o, "!= ");
		out_num(o, n->num.lo);
	} else {
		out_printf(o, "%s", n->num.lo_excl ? "(" : "[");
		out_num(o, n->num.lo);
		out_printf(o, " ");
		out_num(o, n->num.hi);
		out_printf(o, "%s", n->num.hi_excl ? ")" : "]");
	}
	out_printf(o, "\n");
}

static void explain_tag(out_buf_t *o, const query_node_t *n, int d)
{
	out_printf(o, "TAG @%s {\n", n->tag.field);
	for (uint32_t i = 0; i < n->tag.n; i++) {
		out_indent(o, d + 1);
		out_bytes(o, n->tag.vals[i].s, n->tag.vals[i].len);
		out_printf(o, "\n");
	}
	out_indent(o, d);
	out_printf(o, "}\n");
}

static void explain_text(out_buf_t *o, const query_node_t *n)
{
	out_printf(o, "TEXT ");
	if (n->text.n_fields == 0)
		out_printf(o, "*");
	for (uint32_t i = 0; i < n->text.n_fields; i++)
		out_printf(o, "%s@%s", i ? "|" : "", n->text.names[i]);
	out_printf(o, ":");
	out_bytes(o, n->text.term.s, n->text.term.len);
	out_printf(o, "\n");
}

static void explain_vrange(out_buf_t *o, const query_vrange_t *v)
{
	out_printf(o, "VECTOR_RANGE @%s radius ", v->field);
	out_num(o, v->radius);
	out_printf(o, " blob(%zu bytes)", v->blob_len);
	if (v->has_epsilon) {
		out_printf(o, " EPSILON ");
		out_num(o, v->epsilon);
	}
	if (v->yield_distance_as != NULL)
		out_printf(o, " YIELD_DISTANCE_AS %s", v->yield_distance_as);
	out_printf(o, "\n");
}

static void explain_node(out_buf_t *o, const query_t *q, const query_node_t *n, int d)
{
	out_indent(o, d);
	switch (n->kind) {
	case QUERY_NODE_ALL:
		out_printf(o, "ALL\n");
		return;
	case QUERY_NODE_AND:
	case QUERY_NODE_OR:
		explain_list(o, q, n, d);
		return;
	case QUERY_NODE_NOT:
	case QUERY_NODE_OPTIONAL:
		out_printf(o, "%s {\n", n->kind == QUERY_NODE_NOT ? "NOT" : "OPTIONAL");
		explain_node(o, q, n->kid, d + 1);
		out_indent(o, d);
		out_printf(o, "}\n");
		return;
	case QUERY_NODE_TAG:
		explain_tag(o, n, d);
		return;
	case QUERY_NODE_NUMERIC:
		explain_numeric(o, n);
		return;
	case QUERY_NODE_TEXT:
		explain_text(o, n);
		return;
	case QUERY_NODE_VRANGE:
		explain_vrange(o, &q->vranges[n->vrange.idx]);
		return;
	}
}

static void explain_knn(out_buf_t *o, const query_knn_t *k)
{
	static const char *const policy[] = {"", "BATCHES", "ADHOC_BF"};
	static const char *const hist[] = {"", "OFF", "ON", "AUTO"};
	out_printf(o, "KNN %u @%s blob(%zu bytes)", k->k, k->field, k->blob_len);
	if (k->alias != NULL)
		out_printf(o, " AS %s", k->alias);
	if (k->set & QUERY_KNN_EF_RUNTIME)
		out_printf(o, " EF_RUNTIME %u", k->ef_runtime);
	if (k->set & QUERY_KNN_EPSILON) {
		out_printf(o, " EPSILON ");
		out_num(o, k->epsilon);
	}
	if (k->set & QUERY_KNN_HYBRID_POLICY)
		out_printf(o, " HYBRID_POLICY %s", policy[k->hybrid_policy]);
	if (k->set & QUERY_KNN_BATCH_SIZE)
		out_printf(o, " BATCH_SIZE %u", k->batch_size);
	if (k->set & QUERY_KNN_SEARCH_WINDOW_SIZE)
		out_printf(o, " SEARCH_WINDOW_SIZE %u", k->search_window_size);
	if (k->set & QUERY_KNN_USE_SEARCH_HISTORY)
		out_printf(o, " USE_SEARCH_HISTORY %s", hist[k->use_search_history]);
	if (k->set & QUERY_KNN_SEARCH_BUFFER_CAPACITY)
		out_printf(o, " SEARCH_BUFFER_CAPACITY %u", k->search_buffer_capacity);
	if (k->set & QUERY_KNN_SHARD_K_RATIO) {
		out_printf(o, " SHARD_K_RATIO ");
		out_num(o, k->shard_k_ratio);
	}
	out_printf(o, "\n");
}

int query_explain(const query_t *q, char *buf, size_t cap)
{
	out_buf_t o = {.buf = buf, .cap = buf ? cap : 0, .len = 0};
	if (o.cap > 0)
		buf[0] = '\0';
	if (q == NULL || q->root == NULL)
		return 0;
	if (q->knn != NULL) {
		out_printf(&o, "VECTOR {\n");
		explain_node(&o, q, q->root, 1);
		out_indent(&o, 1);
		explain_knn(&o, q->knn);
		out_printf(&o, "}\n");
	} else {
		explain_node(&o, q, q->root, 0);
	}
	return o.len > INT32_MAX ? INT32_MAX : (int)o.len;
}
