/**
 * @file query_int.h
 * @brief Private to query/: the AST, the arena every query allocates from,
 * and the parser state shared by the parse_*.c files. Not a public header.
 */
#ifndef VELA_QUERY_INT_H
#define VELA_QUERY_INT_H

#include <stdbool.h>

#include "query/query.h"

typedef enum query_node_kind {
	QUERY_NODE_ALL = 0,   /* `*` */
	QUERY_NODE_AND,       /* list */
	QUERY_NODE_OR,        /* list */
	QUERY_NODE_NOT,       /* kid */
	QUERY_NODE_OPTIONAL,  /* kid; never restricts */
	QUERY_NODE_TAG,
	QUERY_NODE_NUMERIC,
	QUERY_NODE_TEXT,
	QUERY_NODE_VRANGE,
} query_node_kind_t;

/* A byte string inside the query's arena (NUL-terminated for convenience). */
typedef struct query_str {
	char *s;
	size_t len;
} query_str_t;

typedef struct query_node query_node_t;

struct query_node {
	query_node_kind_t kind;
	uint32_t offset; /* where the clause starts in the text, for messages */
	union {
		struct {
			query_node_t **kids;
			uint32_t n;
		} list;
		query_node_t *kid;
		struct {
			uint32_t field_no;
			const char *field;
			query_str_t *vals;
			uint32_t n;
		} tag;
		struct {
			uint32_t field_no;
			const char *field;
			double lo, hi;
			bool lo_excl, hi_excl;
			bool ne; /* `@n!=lo`: has a value and it is not lo */
		} num;
		struct {
			int32_t *fields; /* NULL = any TEXT field */
			const char **names;
			uint32_t n_fields;
			query_str_t term;
		} text;
		struct {
			uint32_t idx; /* into query.vranges */
		} vrange;
	};
};

typedef struct query_chunk {
	struct query_chunk *next;
	size_t used, cap;
	max_align_t data[];
} query_chunk_t;

struct query {
	query_chunk_t *chunks;
	query_node_t *root;
	query_knn_t *knn;
	query_vrange_t *vranges;
	uint32_t n_vranges, cap_vranges;
};

/* Arena allocation: zeroed, freed all at once by query_free(). NULL on OOM. */
void *query_arena_alloc(query_t *q, size_t size);
/* Copy `len` bytes into the arena and NUL-terminate. */
char *query_arena_strdup(query_t *q, const void *s, size_t len);

/* ---------------------------------------------------------------- parser state */

/* Text fields a bare term applies to (a `@f|g:` scope); NULL = any TEXT field. */
typedef struct query_fscope {
	int32_t fields[QUERY_FIELDS_PER_CLAUSE_MAX];
	const char *names[QUERY_FIELDS_PER_CLAUSE_MAX];
	uint32_t n;
} query_fscope_t;

typedef struct query_parser {
	const char *s;
	size_t len, pos;
	const query_param_t *params;
	size_t n_params;
	query_field_lookup_fn lookup;
	void *lookup_ctx;
	query_limits_t lim;
	uint32_t depth, n_nodes, n_tag_values;
	query_t *q;
	vela_err_t *err;
} query_parser_t;

/* Character classes (ASCII only, locale-independent on purpose). */
static inline bool query_is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static inline bool query_is_alnum(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* A byte that belongs to a term or a name: letters, digits, `_`, non-ASCII. */
static inline bool query_is_word(unsigned char c)
{
	return query_is_alnum(c) || c == '_' || c >= 0x80;
}

static inline unsigned char query_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

static inline bool query_at_end(const query_parser_t *p)
{
	return p->pos >= p->len;
}

static inline unsigned char query_peek(const query_parser_t *p, size_t ahead)
{
	return p->pos + ahead < p->len ? (unsigned char)p->s[p->pos + ahead] : 0;
}

static inline bool query_at_arrow(const query_parser_t *p, char next)
{
	return query_peek(p, 0) == '=' && query_peek(p, 1) == '>' && query_peek(p, 2) == next &&
	       p->pos + 2 < p->len;
}

void query_skip_ws(query_parser_t *p);
/* "Syntax error at offset N near 'c'" (or "near end of query"). */
int query_err_near(query_parser_t *p, size_t off);
/* Format `len` bytes for a message: printable, truncated, no quotes added. */
void query_fmt_bytes(char *dst, size_t cap, const char *s, size_t len);
int query_node_new(query_parser_t *p, query_node_kind_t kind, size_t off, query_node_t **out);
/* Resolve `$name` at p->pos (p->pos at '$'); advances past the name. */
int query_param_read(query_parser_t *p, const query_param_t **out, size_t *name_off);
/* Parse a number (inf forms allowed) from bytes; VELA_ESYNTAX with message. */
int query_number_parse(query_parser_t *p, const char *s, size_t len, size_t off, double *out);
/* Look a field up; ENOTFOUND with message. */
int query_field_get(query_parser_t *p, const char *name, size_t len, size_t off,
		    query_field_info_t *fi);
/* Read a name ([A-Za-z0-9_], non-ASCII, `\`-escapes) at p->pos into buf. */
int query_name_read(query_parser_t *p, char *buf, size_t *len);

/* parse_vec.c */
int query_knn_parse(query_parser_t *p);
int query_knn_validate(query_parser_t *p);
int query_vrange_parse(query_parser_t *p, const query_field_info_t *fi, const char *name,
		       size_t open, query_node_t **out);
/* `=>{$attr: v; ...}` after a clause; p->pos at '='. */
int query_node_attrs_parse(query_parser_t *p, query_node_t *n);

/* parse.c */
int query_filter_parse(query_parser_t *p, query_node_t **out);

#endif
