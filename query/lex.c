/* Small scanning helpers shared by the parser files: whitespace, names,
 * parameters, numbers and error messages. Every read is bounded by p->len. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "query/query_int.h"

/* Longest numeric token we try to read; longer ones are invalid anyway. */
#define QUERY_NUM_TOKEN_MAX 63u
/* Bytes of user text quoted in an error message before "...". */
#define QUERY_MSG_QUOTE_MAX 40u

void query_skip_ws(query_parser_t *p)
{
	while (p->pos < p->len && query_is_space((unsigned char)p->s[p->pos]))
		p->pos++;
}

void query_fmt_bytes(char *dst, size_t cap, const char *s, size_t len)
{
	size_t o = 0;
	for (size_t i = 0; i < len && o + 5 < cap; i++) {
		unsigned char c = (unsigned char)s[i];
		if (i == QUERY_MSG_QUOTE_MAX) {
			o += (size_t)snprintf(dst + o, cap - o, "...");
			break;
		}
		/* Keep messages one printable line: a RESP error may not hold CR/LF. */
		if (c >= 0x20 && c < 0x7f)
			dst[o++] = (char)c;
		else
			o += (size_t)snprintf(dst + o, cap - o, "\\x%02x", c);
	}
	dst[o < cap ? o : cap - 1] = '\0';
}

int query_err_near(query_parser_t *p, size_t off)
{
	if (off >= p->len)
		return vela_err_set(p->err, VELA_ESYNTAX,
				    "Syntax error at offset %zu near end of query", off);
	char near[8];
	query_fmt_bytes(near, sizeof(near), p->s + off, 1);
	return vela_err_set(p->err, VELA_ESYNTAX, "Syntax error at offset %zu near '%s'", off,
			    near);
}

int query_node_new(query_parser_t *p, query_node_kind_t kind, size_t off, query_node_t **out)
{
	*out = NULL;
	if (p->n_nodes >= p->lim.max_nodes)
		return vela_err_set(p->err, VELA_ELIMIT,
				    "Query has too many clauses (limit %u) at offset %zu",
				    p->lim.max_nodes, off);
	query_node_t *n = query_arena_alloc(p->q, sizeof(*n));
	if (n == NULL)
		return vela_err_set(p->err, VELA_ENOMEM, "Out of memory parsing the query");
	p->n_nodes++;
	n->kind = kind;
	n->offset = (uint32_t)off;
	*out = n;
	return 0;
}

int query_name_read(query_parser_t *p, char *buf, size_t *len)
{
	size_t n = 0, start = p->pos;
	while (p->pos < p->len) {
		unsigned char c = (unsigned char)p->s[p->pos];
		if (c == '\\') {
			if (p->pos + 1 >= p->len)
				return vela_err_set(p->err, VELA_ESYNTAX,
						    "Dangling escape '\\' at offset %zu", p->pos);
			c = (unsigned char)p->s[p->pos + 1];
			p->pos++;
		} else if (!query_is_word(c)) {
			break;
		}
		if (n >= QUERY_NAME_MAX)
			return vela_err_set(p->err, VELA_ELIMIT,
					    "Name at offset %zu is longer than %u bytes", start,
					    QUERY_NAME_MAX);
		buf[n++] = (char)c;
		p->pos++;
	}
	if (n == 0)
		return query_err_near(p, p->pos);
	buf[n] = '\0';
	*len = n;
	return 0;
}

int query_param_read(query_parser_t *p, const query_param_t **out, size_t *name_off)
{
	size_t off = p->pos;
	p->pos++; /* '$' */
	size_t start = p->pos;
	while (p->pos < p->len && query_is_word((unsigned char)p->s[p->pos]))
		p->pos++;
	size_t nlen = p->pos - start;
	if (nlen == 0)
		return query_err_near(p, off);
	if (name_off != NULL)
		*name_off = off;
	for (size_t i = 0; i < p->n_params; i++) {
		const query_param_t *pr = &p->params[i];
		if (pr->name_len == nlen && memcmp(pr->name, p->s + start, nlen) == 0) {
			*out = pr;
			return 0;
		}
	}
	char name[QUERY_MSG_QUOTE_MAX * 4 + 8];
	query_fmt_bytes(name, sizeof(name), p->s + start, nlen);
	return vela_err_set(p->err, VELA_ENOTFOUND, "No such parameter '$%s' at offset %zu", name,
			    off);
}

static bool query_is_inf(const char *s, size_t len)
{
	if (len > 0 && (s[0] == '+' || s[0] == '-')) {
		s++;
		len--;
	}
	return len == 3 && query_lower((unsigned char)s[0]) == 'i' &&
	       query_lower((unsigned char)s[1]) == 'n' && query_lower((unsigned char)s[2]) == 'f';
}

/* Digits, sign, '.', exponent only: strtod alone would also take hex and nan. */
static bool query_is_decimal(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!((c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.' || c == 'e' ||
		      c == 'E'))
			return false;
	}
	return len > 0;
}

int query_number_parse(query_parser_t *p, const char *s, size_t len, size_t off, double *out)
{
	char tok[QUERY_NUM_TOKEN_MAX + 1];
	if (query_is_inf(s, len)) {
		*out = s[0] == '-' ? -INFINITY : INFINITY;
		return 0;
	}
	if (len <= QUERY_NUM_TOKEN_MAX && query_is_decimal(s, len)) {
		memcpy(tok, s, len);
		tok[len] = '\0';
		char *end = NULL;
		errno = 0;
		double v = strtod(tok, &end);
		if (end == tok + len && errno == 0 && isfinite(v)) {
			*out = v;
			return 0;
		}
	}
	char shown[QUERY_MSG_QUOTE_MAX * 4 + 8];
	query_fmt_bytes(shown, sizeof(shown), s, len);
	return vela_err_set(p->err, VELA_ESYNTAX, "Invalid numeric value '%s' at offset %zu",
			    shown, off);
}

int query_field_get(query_parser_t *p, const char *name, size_t len, size_t off,
		    query_field_info_t *fi)
{
	memset(fi, 0, sizeof(*fi));
	int rc = p->lookup(p->lookup_ctx, name, len, fi);
	if (rc == 0)
		return 0;
	char shown[QUERY_MSG_QUOTE_MAX * 4 + 8];
	query_fmt_bytes(shown, sizeof(shown), name, len);
	if (rc == VELA_ENOTFOUND)
		return vela_err_set(p->err, rc, "Unknown field '%s' at offset %zu", shown, off);
	return vela_err_set(p->err, rc, "Looking up field '%s' failed: %s", shown,
			    vela_strerror(rc));
}
