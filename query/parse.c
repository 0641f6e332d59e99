/* Recursive-descent parser of the filter part of a query (everything before
 * `=>[KNN ...]`). Precedence, loosest first: `|` (OR), juxtaposition (AND),
 * prefix `-` / `~`, atoms. Recursion depth is bounded by lim.max_depth. */
#include <math.h>
#include <string.h>

#include "query/query_int.h"

typedef struct kid_vec {
	query_node_t **v;
	uint32_t n, cap;
} kid_vec_t;

static int parse_union(query_parser_t *p, const query_fscope_t *fs, query_node_t **out);
static int parse_unary(query_parser_t *p, const query_fscope_t *fs, query_node_t **out);

static int oom(query_parser_t *p)
{
	return vela_err_set(p->err, VELA_ENOMEM, "Out of memory parsing the query");
}

/* Push `n`, flattening a kid of the same kind: `a (b c)` is one AND of three,
 * which lets the evaluator order all of them by size. */
static int kids_push(query_parser_t *p, kid_vec_t *k, query_node_kind_t kind, query_node_t *n)
{
	if (n->kind == kind) {
		for (uint32_t i = 0; i < n->list.n; i++) {
			int rc = kids_push(p, k, kind, n->list.kids[i]);
			if (rc != 0)
				return rc;
		}
		return 0;
	}
	if (k->n == k->cap) {
		uint32_t cap = k->cap ? k->cap * 2 : 4;
		query_node_t **v = query_arena_alloc(p->q, cap * sizeof(*v));
		if (v == NULL)
			return oom(p);
		if (k->n > 0)
			memcpy(v, k->v, k->n * sizeof(*v));
		k->v = v;
		k->cap = cap;
	}
	k->v[k->n++] = n;
	return 0;
}

/* One kid stands for itself; more become an AND/OR node. */
static int kids_finish(query_parser_t *p, kid_vec_t *k, query_node_kind_t kind, size_t off,
		       query_node_t **out)
{
	if (k->n == 1) {
		*out = k->v[0];
		return 0;
	}
	query_node_t *n = NULL;
	int rc = query_node_new(p, kind, off, &n);
	if (rc != 0)
		return rc;
	n->list.kids = k->v;
	n->list.n = k->n;
	*out = n;
	return 0;
}

static int depth_enter(query_parser_t *p)
{
	if (++p->depth > p->lim.max_depth)
		return vela_err_set(p->err, VELA_ELIMIT,
				    "Query is nested too deeply (limit %u) at offset %zu",
				    p->lim.max_depth, p->pos);
	return 0;
}

/* ------------------------------------------------------------ text terms */

static int text_node(query_parser_t *p, const query_fscope_t *fs, const char *term,
		     size_t len, size_t off, query_node_t **out)
{
	query_node_t *n = NULL;
	int rc = query_node_new(p, QUERY_NODE_TEXT, off, &n);
	if (rc != 0)
		return rc;
	n->text.term.s = query_arena_strdup(p->q, term, len);
	if (n->text.term.s == NULL)
		return oom(p);
	n->text.term.len = len;
	if (fs != NULL) {
		n->text.fields = (int32_t *)fs->fields;
		n->text.names = (const char **)fs->names;
		n->text.n_fields = fs->n;
	}
	*out = n;
	return 0;
}

/* Read one term of s[*i..len) into buf, lowercased, escapes resolved when
 * `esc`; stops at the first separator. Returns its length (0: separator). */
static size_t term_read(const char *s, size_t len, size_t *i, bool esc, char *buf)
{
	size_t n = 0;
	while (*i < len) {
		unsigned char c = (unsigned char)s[*i];
		if (esc && c == '\\' && *i + 1 < len) {
			buf[n++] = (char)query_lower((unsigned char)s[*i + 1]);
			*i += 2;
			continue;
		}
		if (!query_is_word(c))
			break;
		buf[n++] = (char)query_lower(c);
		(*i)++;
	}
	return n;
}

/* Split bytes into terms (punctuation and space separate them) as an AND. */
static int text_split(query_parser_t *p, const query_fscope_t *fs, const char *s, size_t len,
		      size_t off, bool esc, query_node_t **out)
{
	char *buf = query_arena_alloc(p->q, len + 1);
	if (buf == NULL)
		return oom(p);
	kid_vec_t k = {0};
	size_t i = 0;
	while (i < len) {
		size_t start = i, n = term_read(s, len, &i, esc, buf);
		if (n == 0) {
			i++;
			continue;
		}
		query_node_t *t = NULL;
		int rc = text_node(p, fs, buf, n, off + (esc ? start : 0), &t);
		if (rc == 0)
			rc = kids_push(p, &k, QUERY_NODE_AND, t);
		if (rc != 0)
			return rc;
	}
	if (k.n == 0)
		return vela_err_set(p->err, VELA_ESYNTAX, "No searchable term at offset %zu", off);
	return kids_finish(p, &k, QUERY_NODE_AND, off, out);
}

static int parse_term(query_parser_t *p, const query_fscope_t *fs, query_node_t **out)
{
	size_t start = p->pos, i = p->pos;
	while (i < p->len) {
		unsigned char c = (unsigned char)p->s[i];
		if (c == '\\') {
			if (i + 1 >= p->len)
				return vela_err_set(p->err, VELA_ESYNTAX,
						    "Dangling escape '\\' at offset %zu", i);
			i += 2;
		} else if (query_is_word(c)) {
			i++;
		} else {
			break;
		}
	}
	if (i < p->len && p->s[i] == '*')
		return vela_err_set(p->err, VELA_EUNSUPPORTED,
				    "Prefix queries are not supported (offset %zu)", i);
	p->pos = i;
	return text_split(p, fs, p->s + start, i - start, start, true, out);
}

static int parse_phrase(query_parser_t *p, const query_fscope_t *fs, query_node_t **out)
{
	size_t open = p->pos, i = p->pos + 1;
	while (i < p->len && p->s[i] != '"')
		i += (p->s[i] == '\\') ? 2 : 1;
	if (i >= p->len)
		return vela_err_set(p->err, VELA_ESYNTAX, "Unbalanced '\"' at offset %zu", open);
	p->pos = i + 1;
	/* Positions are not indexed, so a phrase means all of its terms. */
	return text_split(p, fs, p->s + open + 1, i - open - 1, open + 1, true, out);
}

static int parse_param_term(query_parser_t *p, const query_fscope_t *fs, query_node_t **out)
{
	const query_param_t *pr = NULL;
	size_t off = 0;
	int rc = query_param_read(p, &pr, &off);
	if (rc != 0)
		return rc;
	return text_split(p, fs, pr->value, pr->value_len, off, false, out);
}

/* ------------------------------------------------------------ tags */

static int tag_value_push(query_parser_t *p, query_node_t *n, uint32_t *cap, const char *s,
			  size_t len, bool fold, size_t off)
{
	if (len == 0)
		return vela_err_set(p->err, VELA_ESYNTAX, "Empty tag value at offset %zu", off);
	if (++p->n_tag_values > p->lim.max_tag_values)
		return vela_err_set(p->err, VELA_ELIMIT,
				    "Query has too many tag values (limit %u) at offset %zu",
				    p->lim.max_tag_values, off);
	if (n->tag.n == *cap) {
		uint32_t nc = *cap ? *cap * 2 : 4;
		query_str_t *v = query_arena_alloc(p->q, nc * sizeof(*v));
		if (v == NULL)
			return oom(p);
		if (n->tag.n > 0)
			memcpy(v, n->tag.vals, n->tag.n * sizeof(*v));
		n->tag.vals = v;
		*cap = nc;
	}
	char *d = query_arena_strdup(p->q, s, len);
	if (d == NULL)
		return oom(p);
	for (size_t i = 0; fold && i < len; i++)
		d[i] = (char)query_lower((unsigned char)d[i]);
	n->tag.vals[n->tag.n].s = d;
	n->tag.vals[n->tag.n].len = len;
	n->tag.n++;
	return 0;
}

/* Copy a literal tag value s[start..end) resolving escapes and trimming
 * unescaped spaces (an escaped space is kept). */
static int tag_value_literal(query_parser_t *p, query_node_t *n, uint32_t *cap, size_t start,
			     size_t end, bool fold)
{
	char *buf = query_arena_alloc(p->q, end - start + 1);
	if (buf == NULL)
		return oom(p);
	size_t len = 0, keep = 0;
	for (size_t i = start; i < end; i++) {
		unsigned char c = (unsigned char)p->s[i];
		if (c == '\\') {
			buf[len++] = p->s[++i];
			keep = len;
			continue;
		}
		if (len == 0 && query_is_space(c))
			continue;
		buf[len++] = (char)c;
		if (!query_is_space(c))
			keep = len;
	}
	return tag_value_push(p, n, cap, buf, keep, fold, start);
}

/* Scan one value up to an unescaped '|' or '}' (p->pos ends there). */
static int tag_value_parse(query_parser_t *p, query_node_t *n, uint32_t *cap, size_t open,
			   bool fold)
{
	query_skip_ws(p);
	size_t start = p->pos;
	if (query_peek(p, 0) == '$' && query_is_word(query_peek(p, 1))) {
		const query_param_t *pr = NULL;
		int rc = query_param_read(p, &pr, NULL);
		if (rc != 0)
			return rc;
		query_skip_ws(p);
		if (query_at_end(p))
			return vela_err_set(p->err, VELA_ESYNTAX, "Unbalanced '{' at offset %zu", open);
		if (p->s[p->pos] != '|' && p->s[p->pos] != '}')
			return query_err_near(p, p->pos);
		return tag_value_push(p, n, cap, pr->value, pr->value_len, fold, start);
	}
	size_t i = start;
	for (; i < p->len; i++) {
		char c = p->s[i];
		if (c == '\\' && i + 1 < p->len)
			i++;
		else if (c == '|' || c == '}')
			break;
		else if (c == '{')
			return query_err_near(p, i);
		else if (c == '*')
			return vela_err_set(p->err, VELA_EUNSUPPORTED,
					    "Wildcard tag queries are not supported (offset %zu)", i);
	}
	if (i >= p->len)
		return vela_err_set(p->err, VELA_ESYNTAX, "Unbalanced '{' at offset %zu", open);
	p->pos = i;
	return tag_value_literal(p, n, cap, start, i, fold);
}

static int parse_tag(query_parser_t *p, const query_field_info_t *fi, const char *name,
		     size_t off, query_node_t **out)
{
	size_t open = p->pos++;
	query_node_t *n = NULL;
	int rc = query_node_new(p, QUERY_NODE_TAG, off, &n);
	if (rc != 0)
		return rc;
	n->tag.field_no = fi->field_no;
	n->tag.field = name;
	uint32_t cap = 0;
	for (;;) {
		rc = tag_value_parse(p, n, &cap, open, !fi->case_sensitive);
		if (rc != 0)
			return rc;
		if (p->s[p->pos++] == '}')
			break;
	}
	*out = n;
	return 0;
}

/* ------------------------------------------------------------ numbers */

/* A bound or value: `$param` or a token up to a delimiter. */
static int num_value_parse(query_parser_t *p, double *v, bool *excl)
{
	size_t off = p->pos;
	if (query_peek(p, 0) == '$') {
		const query_param_t *pr = NULL;
		int rc = query_param_read(p, &pr, NULL);
		if (rc != 0)
			return rc;
		const char *s = pr->value;
		size_t len = pr->value_len;
		if (excl != NULL && len > 0 && s[0] == '(') {
			*excl = true;
			s++;
			len--;
		}
		return query_number_parse(p, s, len, off, v);
	}
	size_t i = p->pos;
	while (i < p->len && !query_is_space((unsigned char)p->s[i]) &&
	       strchr("[](){}|", p->s[i]) == NULL)
		i++;
	if (i == p->pos)
		return query_err_near(p, p->pos);
	p->pos = i;
	return query_number_parse(p, p->s + off, i - off, off, v);
}

static int num_bound_parse(query_parser_t *p, double *v, bool *excl)
{
	query_skip_ws(p);
	*excl = false;
	if (query_peek(p, 0) == '(') {
		*excl = true;
		p->pos++;
	}
	return num_value_parse(p, v, excl);
}

static int num_node(query_parser_t *p, const query_field_info_t *fi, const char *name,
		    size_t off, query_node_t **out)
{
	int rc = query_node_new(p, QUERY_NODE_NUMERIC, off, out);
	if (rc == 0) {
		(*out)->num.field_no = fi->field_no;
		(*out)->num.field = name;
	}
	return rc;
}

static int num_close(query_parser_t *p, size_t open)
{
	query_skip_ws(p);
	if (query_at_end(p))
		return vela_err_set(p->err, VELA_ESYNTAX, "Unbalanced '[' at offset %zu", open);
	if (p->s[p->pos] != ']')
		return query_err_near(p, p->pos);
	p->pos++;
	return 0;
}

/* `[lo hi]` or `[v]`; p->pos just past '['. */
static int parse_range(query_parser_t *p, const query_field_info_t *fi, const char *name,
		       size_t off, size_t open, query_node_t **out)
{
	query_node_t *n = NULL;
	int rc = num_node(p, fi, name, off, &n);
	if (rc != 0)
		return rc;
	rc = num_bound_parse(p, &n->num.lo, &n->num.lo_excl);
	if (rc != 0)
		return rc;
	query_skip_ws(p);
	if (query_peek(p, 0) == ']' && !query_at_end(p)) {
		if (n->num.lo_excl)
			return query_err_near(p, p->pos);
		n->num.hi = n->num.lo;
	} else if (!query_at_end(p)) {
		rc = num_bound_parse(p, &n->num.hi, &n->num.hi_excl);
		if (rc != 0)
			return rc;
	}
	rc = num_close(p, open);
	*out = n;
	return rc;
}

static bool word_at(const query_parser_t *p, const char *w)
{
	size_t n = strlen(w);
	if (p->len - p->pos < n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (query_lower((unsigned char)p->s[p->pos + i]) != (unsigned char)w[i])
			return false;
	return p->pos + n == p->len || !query_is_word((unsigned char)p->s[p->pos + n]);
}

/* `off` is where the field name starts (just after '@'). */
static int type_err(query_parser_t *p, const char *name, const char *want, size_t off)
{
	return vela_err_set(p->err, VELA_ETYPE, "Field '%s' is not a %s field (offset %zu)", name,
			    want, off);
}

static int parse_bracket(query_parser_t *p, const query_field_info_t *fi, const char *name,
			 size_t off, query_node_t **out)
{
	size_t open = p->pos++;
	query_skip_ws(p);
	if (word_at(p, "vector_range")) {
		if (fi->type != VELA_FIELD_VECTOR)
			return type_err(p, name, "VECTOR", off + 1);
		p->pos += strlen("vector_range");
		return query_vrange_parse(p, fi, name, open, out);
	}
	if (fi->type == VELA_FIELD_VECTOR)
		return vela_err_set(p->err, VELA_ESYNTAX,
				    "Expected VECTOR_RANGE for VECTOR field '%s' at offset %zu",
				    name, p->pos);
	if (fi->type != VELA_FIELD_NUMERIC)
		return type_err(p, name, "NUMERIC", off + 1);
	return parse_range(p, fi, name, off, open, out);
}

/* `@n==v`, `!=`, `>`, `>=`, `<`, `<=`. */
static int parse_compare(query_parser_t *p, const query_field_info_t *fi, const char *name,
			 size_t off, query_node_t **out)
{
	if (fi->type != VELA_FIELD_NUMERIC)
		return type_err(p, name, "NUMERIC", off + 1);
	char c0 = (char)query_peek(p, 0), c1 = (char)query_peek(p, 1);
	bool eq = c1 == '=' && p->pos + 1 < p->len;
	if ((c0 == '=' || c0 == '!') && !eq)
		return query_err_near(p, p->pos);
	p->pos += eq ? 2 : 1;
	query_skip_ws(p);
	query_node_t *n = NULL;
	int rc = num_node(p, fi, name, off, &n);
	if (rc != 0)
		return rc;
	double v = 0;
	rc = num_value_parse(p, &v, NULL);
	if (rc != 0)
		return rc;
	n->num.lo = (c0 == '<') ? -INFINITY : v;
	n->num.hi = (c0 == '>') ? INFINITY : v;
	n->num.lo_excl = c0 == '>' && !eq;
	n->num.hi_excl = c0 == '<' && !eq;
	n->num.ne = c0 == '!';
	*out = n;
	return 0;
}

/* ------------------------------------------------------------ fields */

typedef struct field_ref {
	query_field_info_t info[QUERY_FIELDS_PER_CLAUSE_MAX];
	size_t off[QUERY_FIELDS_PER_CLAUSE_MAX];
	const char *name[QUERY_FIELDS_PER_CLAUSE_MAX];
	uint32_t n;
} field_ref_t;

/* `@a|b|c` up to ':' or an operator. */
static int field_names_parse(query_parser_t *p, field_ref_t *fr)
{
	char buf[QUERY_NAME_MAX + 1];
	for (;;) {
		size_t len, off = p->pos;
		if (fr->n == QUERY_FIELDS_PER_CLAUSE_MAX)
			return vela_err_set(p->err, VELA_ELIMIT,
					    "Too many fields in one clause (limit %u) at offset %zu",
					    QUERY_FIELDS_PER_CLAUSE_MAX, off);
		int rc = query_name_read(p, buf, &len);
		if (rc == 0)
			rc = query_field_get(p, buf, len, off, &fr->info[fr->n]);
		if (rc != 0)
			return rc;
		fr->name[fr->n] = query_arena_strdup(p->q, buf, len);
		if (fr->name[fr->n] == NULL)
			return oom(p);
		fr->off[fr->n++] = off;
		unsigned char nx = query_peek(p, 1);
		if (query_peek(p, 0) != '|' || !(query_is_word(nx) || nx == '\\'))
			return 0;
		p->pos++;
	}
}

/* `@f|g:<unary>` where bare terms inside search only those TEXT fields. */
static int parse_text_scope(query_parser_t *p, const field_ref_t *fr, query_node_t **out)
{
	query_fscope_t *fs = query_arena_alloc(p->q, sizeof(*fs));
	if (fs == NULL)
		return oom(p);
	for (uint32_t i = 0; i < fr->n; i++) {
		if (fr->info[i].type != VELA_FIELD_TEXT)
			return type_err(p, fr->name[i], "TEXT", fr->off[i]);
		fs->fields[i] = (int32_t)fr->info[i].field_no;
		fs->names[i] = fr->name[i];
	}
	fs->n = fr->n;
	int rc = depth_enter(p);
	if (rc == 0)
		rc = parse_unary(p, fs, out);
	p->depth--;
	return rc;
}

static int parse_field(query_parser_t *p, query_node_t **out)
{
	size_t at = p->pos++;
	field_ref_t fr;
	fr.n = 0;
	int rc = field_names_parse(p, &fr);
	if (rc != 0)
		return rc;
	char c = (char)query_peek(p, 0);
	if (query_at_end(p) || (c != ':' && strchr("=!<>", c) == NULL))
		return query_err_near(p, p->pos);
	if (c == ':') {
		p->pos++;
		query_skip_ws(p);
		c = (char)query_peek(p, 0);
		if ((c != '{' && c != '[') || query_at_end(p))
			return parse_text_scope(p, &fr, out);
	}
	if (fr.n > 1)
		return vela_err_set(p->err, VELA_ESYNTAX,
				    "Several fields are allowed only for TEXT (offset %zu)", at);
	if (c == '{') {
		if (fr.info[0].type != VELA_FIELD_TAG)
			return type_err(p, fr.name[0], "TAG", fr.off[0]);
		return parse_tag(p, &fr.info[0], fr.name[0], at, out);
	}
	if (c == '[')
		return parse_bracket(p, &fr.info[0], fr.name[0], at, out);
	return parse_compare(p, &fr.info[0], fr.name[0], at, out);
}

/* ------------------------------------------------------------ structure */

static int parse_group(query_parser_t *p, const query_fscope_t *fs, query_node_t **out)
{
	size_t open = p->pos++;
	int rc = parse_union(p, fs, out);
	if (rc != 0)
		return rc;
	query_skip_ws(p);
	if (query_at_end(p))
		return vela_err_set(p->err, VELA_ESYNTAX, "Unbalanced '(' at offset %zu", open);
	if (query_at_arrow(p, '['))
		return vela_err_set(p->err, VELA_ESYNTAX,
				    "KNN is allowed only at the top level (offset %zu)", p->pos);
	if (p->s[p->pos] != ')')
		return query_err_near(p, p->pos);
	p->pos++;
	return 0;
}

static int parse_atom(query_parser_t *p, const query_fscope_t *fs, query_node_t **out)
{
	unsigned char c = query_peek(p, 0);
	if (query_at_end(p))
		return query_err_near(p, p->pos);
	if (c == '(')
		return parse_group(p, fs, out);
	if (c == '@')
		return parse_field(p, out);
	if (c == '"')
		return parse_phrase(p, fs, out);
	if (c == '$' && query_is_word(query_peek(p, 1)))
		return parse_param_term(p, fs, out);
	if (query_is_word(c) || c == '\\')
		return parse_term(p, fs, out);
	if (c == '*') {
		if (query_is_word(query_peek(p, 1)))
			return vela_err_set(p->err, VELA_EUNSUPPORTED,
					    "Suffix queries are not supported (offset %zu)", p->pos);
		return query_node_new(p, QUERY_NODE_ALL, p->pos++, out);
	}
	if (c == '%')
		return vela_err_set(p->err, VELA_EUNSUPPORTED,
				    "Fuzzy queries are not supported (offset %zu)", p->pos);
	return query_err_near(p, p->pos);
}

static int parse_unary(query_parser_t *p, const query_fscope_t *fs, query_node_t **out)
{
	query_skip_ws(p);
	unsigned char c = query_peek(p, 0);
	if ((c == '-' || c == '~') && !query_at_end(p)) {
		size_t off = p->pos++;
		query_node_t *kid = NULL;
		int rc = depth_enter(p);
		if (rc == 0)
			rc = parse_unary(p, fs, &kid);
		p->depth--;
		if (rc != 0)
			return rc;
		rc = query_node_new(p, c == '-' ? QUERY_NODE_NOT : QUERY_NODE_OPTIONAL, off, out);
		if (rc == 0)
			(*out)->kid = kid;
		return rc;
	}
	int rc = parse_atom(p, fs, out);
	if (rc != 0)
		return rc;
	query_skip_ws(p);
	if (query_at_arrow(p, '{'))
		return query_node_attrs_parse(p, *out);
	return 0;
}

/* Juxtaposed unaries, up to '|', ')', `=>[` or the end. */
static int parse_inter(query_parser_t *p, const query_fscope_t *fs, query_node_t **out)
{
	kid_vec_t k = {0};
	size_t off = p->pos;
	for (;;) {
		query_skip_ws(p);
		unsigned char c = query_peek(p, 0);
		if (query_at_end(p) || c == '|' || c == ')' || query_at_arrow(p, '['))
			break;
		query_node_t *n = NULL;
		int rc = parse_unary(p, fs, &n);
		if (rc == 0)
			rc = kids_push(p, &k, QUERY_NODE_AND, n);
		if (rc != 0)
			return rc;
	}
	if (k.n == 0)
		return query_err_near(p, p->pos);
	return kids_finish(p, &k, QUERY_NODE_AND, off, out);
}

static int parse_union(query_parser_t *p, const query_fscope_t *fs, query_node_t **out)
{
	kid_vec_t k = {0};
	size_t off = p->pos;
	int rc = depth_enter(p);
	while (rc == 0) {
		query_node_t *n = NULL;
		rc = parse_inter(p, fs, &n);
		if (rc == 0)
			rc = kids_push(p, &k, QUERY_NODE_OR, n);
		if (rc != 0 || query_peek(p, 0) != '|' || query_at_end(p))
			break;
		p->pos++;
	}
	p->depth--;
	if (rc != 0)
		return rc;
	return kids_finish(p, &k, QUERY_NODE_OR, off, out);
}

int query_filter_parse(query_parser_t *p, query_node_t **out)
{
	return parse_union(p, NULL, out);
}
