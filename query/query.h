/**
 * @file query.h
 * @brief The filter language: a parser for the Redis Query Engine dialect-2
 * subset (tags, numeric ranges, text terms, AND / OR / NOT, `=>[KNN ...]`,
 * `VECTOR_RANGE`) into a query object, and an evaluator of its filter to a
 * CRoaring docid bitmap.
 *
 * query/ knows nothing of db/: the schema comes in through a field lookup
 * callback, and the postings through a table of source callbacks.
 *
 * Grammar accepted (space is AND, `|` is OR and binds looser than AND,
 * prefix `-` (NOT) and `~` (optional) bind tighter than AND):
 *
 *     query   := filter [ '=>[' KNN k @vecfield $blob {ATTR value} [AS alias] ']'
 *                         [ '=>{' $attr: value; ... '}' ] ]
 *     filter  := inter { '|' inter }
 *     inter   := unary { unary }
 *     unary   := '-' unary | '~' unary | atom [ '=>{' $attr: value; ... '}' ]
 *     atom    := '*' | '(' filter ')' | term | '"' phrase '"' | $param
 *              | '@' f:{ v | v ... } | '@' f:[lo hi] | '@' f:[v] | @f OP v
 *              | '@' f[|g...]:atom-of-text | '@' v:[VECTOR_RANGE r $blob]
 *
 * Semantics worth knowing:
 * - Text terms are ASCII-lowercased; punctuation other than `_` splits
 *   terms; `\` escapes one byte. A `"phrase"` is treated as the AND of its
 *   terms (no positions are kept, so word order is not checked).
 *   No stemming, no stopword removal: the db layer must index the same way.
 * - Tag values are trimmed of unescaped spaces and ASCII-lowercased unless
 *   the field is case-sensitive. A tag value that is exactly `$name` is a
 *   parameter. Unescaped `*` (prefix/suffix wildcards) is unsupported.
 * - `@n!=v` matches documents that have a numeric value and it is not v.
 * - `~x` (optional) never restricts the result: it evaluates to all documents.
 * - Not supported (clear errors): prefix/fuzzy/wildcard terms, `ismissing()`,
 *   GEO, `w'...'`.
 */
#ifndef VELA_QUERY_H
#define VELA_QUERY_H

#include <stddef.h>
#include <stdint.h>

#include <roaring/roaring.h>

#include "vela/errors.h"
#include "vela/types.h"

/* ------------------------------------------------------------ limits */

/** Longest query text in bytes. */
#define QUERY_LEN_DEFAULT (64u * 1024u)
#define QUERY_LEN_MIN 1u
#define QUERY_LEN_MAX (1024u * 1024u)

/** Deepest nesting of parentheses, NOT and field scopes. Bounds recursion. */
#define QUERY_DEPTH_DEFAULT 64u
#define QUERY_DEPTH_MIN 1u
#define QUERY_DEPTH_MAX 1024u

/** Most AST nodes (clauses, terms, operators) in one query. */
#define QUERY_NODES_DEFAULT 4096u
#define QUERY_NODES_MIN 1u
#define QUERY_NODES_MAX (1024u * 1024u)

/** Most tag values over all tag clauses of one query. */
#define QUERY_TAG_VALUES_DEFAULT 1024u
#define QUERY_TAG_VALUES_MIN 1u
#define QUERY_TAG_VALUES_MAX (64u * 1024u)

/** Longest field name, alias or parameter name in bytes. */
#define QUERY_NAME_MAX 255u

/** Fields in one `@f|g|...:` text clause. */
#define QUERY_FIELDS_PER_CLAUSE_MAX 32u

/** Largest integer accepted for KNN attributes (EF_RUNTIME, BATCH_SIZE, ...). */
#define QUERY_KNN_ATTR_INT_MIN 1u
#define QUERY_KNN_ATTR_INT_MAX (1u << 30)

/** Parse limits; fields out of [MIN, MAX] are rejected with VELA_EINVAL. */
typedef struct query_limits {
	size_t max_len;
	uint32_t max_depth;
	uint32_t max_nodes;
	uint32_t max_tag_values;
} query_limits_t;

/** Fill `lim` with the DEFAULT of every limit. */
void query_limits_default(query_limits_t *lim);

/* ------------------------------------------------------------ schema and params */

/** What the parser needs to know about one schema field. */
typedef struct query_field_info {
	vela_field_type_t type;
	uint32_t field_no;   /**< opaque to query/: passed back to the source callbacks */
	int case_sensitive;  /**< TAG only: values are not lowercased */
	uint32_t dim;        /**< VECTOR only */
	vela_vec_type_t vec_type; /**< VECTOR only */
} query_field_info_t;

/**
 * Schema lookup: fill `out` for the field `name` (`len` bytes, not
 * NUL-terminated) and return 0, or return VELA_ENOTFOUND. Any other
 * negative code aborts the parse with that code.
 */
typedef int (*query_field_lookup_fn)(void *ctx, const char *name, size_t len,
				     query_field_info_t *out);

/**
 * One PARAMS entry. `name` has no leading '$'. Values are binary-safe;
 * the parser copies what it keeps, so they need to live only during
 * query_parse(). With duplicate names the first one wins.
 */
typedef struct query_param {
	const char *name;
	size_t name_len;
	const void *value;
	size_t value_len;
} query_param_t;

/* ------------------------------------------------------------ the parsed query */

/** A parsed query; opaque. Owns all its memory, including copied blobs. */
typedef struct query query_t;

typedef enum query_hybrid_policy {
	QUERY_HYBRID_UNSET = 0,   /**< not given: the planner decides */
	QUERY_HYBRID_BATCHES = 1,
	QUERY_HYBRID_ADHOC_BF = 2,
} query_hybrid_policy_t;

typedef enum query_search_history {
	QUERY_HISTORY_UNSET = 0,
	QUERY_HISTORY_OFF = 1,
	QUERY_HISTORY_ON = 2,
	QUERY_HISTORY_AUTO = 3,
} query_search_history_t;

/** Bits of query_knn_t.set: which attributes the query gave explicitly. */
enum query_knn_attr {
	QUERY_KNN_EF_RUNTIME = 1u << 0,
	QUERY_KNN_EPSILON = 1u << 1,
	QUERY_KNN_HYBRID_POLICY = 1u << 2,
	QUERY_KNN_BATCH_SIZE = 1u << 3,
	QUERY_KNN_SEARCH_WINDOW_SIZE = 1u << 4,
	QUERY_KNN_USE_SEARCH_HISTORY = 1u << 5,
	QUERY_KNN_SEARCH_BUFFER_CAPACITY = 1u << 6,
	QUERY_KNN_SHARD_K_RATIO = 1u << 7,
	QUERY_KNN_ALIAS = 1u << 8,
};

/**
 * The KNN tail of a query. Pointers live as long as the query_t.
 * Attribute values are meaningful only where their bit is in `set`.
 */
typedef struct query_knn {
	uint32_t k;               /**< 0..VELA_K_MAX */
	uint32_t field_no;
	const char *field;        /**< vector field name, NUL-terminated */
	const void *blob;         /**< query vector, dim * element size bytes */
	size_t blob_len;
	const char *alias;        /**< AS / $yield_distance_as, or NULL */
	uint32_t set;             /**< bits of enum query_knn_attr */
	uint32_t ef_runtime;
	double epsilon;
	query_hybrid_policy_t hybrid_policy;
	uint32_t batch_size;
	uint32_t search_window_size;
	query_search_history_t use_search_history;
	uint32_t search_buffer_capacity;
	double shard_k_ratio;
} query_knn_t;

/** One `@v:[VECTOR_RANGE r $blob]` clause. Pointers live as long as the query_t. */
typedef struct query_vrange {
	uint32_t field_no;
	const char *field;        /**< NUL-terminated */
	const void *blob;
	size_t blob_len;
	double radius;            /**< >= 0 */
	int has_epsilon;
	double epsilon;           /**< $EPSILON when has_epsilon */
	const char *yield_distance_as; /**< or NULL */
} query_vrange_t;

/**
 * @brief Parse `text` (`len` bytes; never read past them, NUL not needed)
 * with the default limits. See query_parse_ex().
 */
int query_parse(const char *text, size_t len, const query_param_t *params,
		size_t n_params, query_field_lookup_fn lookup, void *lookup_ctx,
		query_t **out, vela_err_t *err);

/**
 * @brief Parse a query. On success `*out` is a new query the caller frees
 * with query_free(); on failure `*out` is NULL and `err` says where and why.
 * `lim` NULL means query_limits_default().
 * @return 0; VELA_ESYNTAX (bad syntax or value), VELA_ENOTFOUND (unknown
 * field or parameter), VELA_ETYPE (clause does not fit the field type),
 * VELA_EDIM (query vector size), VELA_ELIMIT (a limit or K too large),
 * VELA_EEXISTS (alias names a schema field), VELA_EUNSUPPORTED,
 * VELA_EINVAL (bad arguments), VELA_ENOMEM, or the lookup's own error.
 */
int query_parse_ex(const char *text, size_t len, const query_param_t *params,
		   size_t n_params, query_field_lookup_fn lookup, void *lookup_ctx,
		   const query_limits_t *lim, query_t **out, vela_err_t *err);

/** Free a query (NULL is a no-op). Invalidates every pointer it handed out. */
void query_free(query_t *q);

/** The KNN clause, or NULL if the query has none. Owned by `q`. */
const query_knn_t *query_knn(const query_t *q);

/** 1 if the filter matches every document (`*` or `(*)`), else 0. */
int query_filter_is_all(const query_t *q);

/** Number of VECTOR_RANGE clauses in the filter, in text order. */
size_t query_vrange_count(const query_t *q);
/** The i-th VECTOR_RANGE clause (NULL if out of range). Owned by `q`. */
const query_vrange_t *query_vrange_at(const query_t *q, size_t i);

/**
 * @brief Write a readable indented tree of the query (for FT.EXPLAIN) to
 * `buf`, snprintf-style: at most `cap` bytes including the NUL; `buf` may
 * be NULL when `cap` is 0.
 * @return the length of the full text (excluding the NUL); a result >= cap
 * means the output was truncated.
 */
int query_explain(const query_t *q, char *buf, size_t cap);

/* ------------------------------------------------------------ evaluation */

/**
 * Postings, supplied by the caller (db/ implements it over LMDB). Every
 * callback ORs the matching docids into `out` (which it must not free)
 * and returns 0 or a negative VELA_E... code. A callback may be NULL when
 * the index has no field of that kind; queries needing it then fail with
 * VELA_EUNSUPPORTED.
 */
typedef struct query_source {
	void *ctx;
	/** Every docid in the index. */
	int (*all)(void *ctx, roaring_bitmap_t *out);
	/** Documents whose tag field has the value (already case-folded as the field wants). */
	int (*tag)(void *ctx, uint32_t field_no, const char *val, size_t len,
		   roaring_bitmap_t *out);
	/** Documents whose numeric value lies in the range (bounds may be +-inf). */
	int (*num_range)(void *ctx, uint32_t field_no, double lo, int lo_excl, double hi,
			 int hi_excl, roaring_bitmap_t *out);
	/** Documents containing the lowercased term; field_no -1 = any TEXT field. */
	int (*text_term)(void *ctx, int32_t field_no, const char *term, size_t len,
			 roaring_bitmap_t *out);
	/** Documents whose vector lies within `radius` of `blob`. */
	int (*vector_range)(void *ctx, uint32_t field_no, const void *blob, size_t len,
			    double radius, roaring_bitmap_t *out);
	/** Optional: `tag` as a bitmap the source keeps (borrowed until the
	 * evaluation ends; NULL: no document), so that a clause of many values
	 * is one roaring_bitmap_or_many rather than an OR per value.
	 * VELA_EUNSUPPORTED: the source keeps none (tag is used). */
	int (*tag_ref)(void *ctx, uint32_t field_no, const char *val, size_t len,
		       const roaring_bitmap_t **bm);
} query_source_t;

/**
 * @brief Evaluate the filter of `q` (the KNN tail is not applied) to the
 * set of matching docids. On success `*out` is a new bitmap the caller
 * frees with roaring_bitmap_free(); on failure it is NULL.
 * @return 0, a source callback's code, VELA_EUNSUPPORTED or VELA_ENOMEM.
 */
int query_eval(const query_t *q, const query_source_t *src, roaring_bitmap_t **out,
	       vela_err_t *err);

/** @brief Like query_eval() but returns only the number of matches (exact selectivity). */
int query_eval_count(const query_t *q, const query_source_t *src, uint64_t *count,
		     vela_err_t *err);

/* ------------------------------------------------------------ batches */

/**
 * @brief A canonical byte key of the filter (the KNN tail excluded): two
 * queries with equal keys ask their source for the same leaves and combine
 * them the same way, so over one source they evaluate to the same bitmap.
 * Constants are compared by value (numbers by their bits, -0 as 0; tag
 * values and terms as the parser folded them; VECTOR_RANGE by field,
 * radius and blob bytes). A batch uses it to evaluate a recurring filter
 * once (filter commonality, reference/hybrid-queries.md §1.2).
 * @param buf  NULL or `cap` bytes; the key is written up to `cap`
 * @return the key's full length (a result > cap means `buf` holds a prefix)
 */
size_t query_filter_key(const query_t *q, void *buf, size_t cap);

/** One numeric range leaf, as query_source_t.num_range receives it. */
typedef struct query_num_range {
	uint32_t field_no;
	double lo, hi;
	int lo_excl, hi_excl;
} query_num_range_t;

/** Called once per numeric range; nonzero stops the walk and is returned. */
typedef int (*query_num_range_fn)(void *ctx, const query_num_range_t *r);

/**
 * @brief Every numeric range query_eval() will pass to the source's
 * num_range for this filter (an `@n!=v` leaf gives its two: [v, v] and
 * [-inf, +inf]), in evaluation order, duplicates included. A batch reads
 * the postings of all its ranges on one field in one ordered pass.
 * @return 0, VELA_EINVAL (NULL q or fn) or fn's nonzero return
 */
int query_num_ranges(const query_t *q, query_num_range_fn fn, void *ctx);

/* ------------------------------------------------------------ atoms */

/** Tag values of one atom the walker reports; wider TAG clauses are residual. */
#define QUERY_ATOM_VALS_MAX 64u

enum query_atom_kind { QUERY_ATOM_TAG = 1, QUERY_ATOM_NUM = 2 };

/**
 * One predicate atom of a filter's top-level conjunction (the workload log
 * and the partition layout's cuts, docs/partitions.md): a positive TAG
 * clause (any of its values) or a numeric range. Pointers borrow the
 * query's strings and live as long as the query_t.
 */
typedef struct query_atom {
	int kind;          /**< enum query_atom_kind */
	uint32_t field_no;
	uint32_t n_vals;   /**< TAG: values (as the parser folded them) */
	const char *vals[QUERY_ATOM_VALS_MAX];
	size_t lens[QUERY_ATOM_VALS_MAX];
	double lo, hi;     /**< NUM: bounds as num_range receives them */
	int lo_excl, hi_excl;
} query_atom_t;

/** Called once per atom; nonzero stops the walk and is returned. */
typedef int (*query_atom_fn)(void *ctx, const query_atom_t *a);

/**
 * @brief The atoms of the filter's top-level AND (or of the filter itself
 * when it is one atom), in text order. The filter implies the AND of its
 * atoms; conjuncts that are not atoms (text terms, NOT, OR, `!=`,
 * VECTOR_RANGE, TAG clauses over QUERY_ATOM_VALS_MAX values) are counted
 * in *residual (may be NULL). `*` has no atoms and no residual.
 * @return 0, VELA_EINVAL (NULL q or fn) or fn's nonzero return
 */
int query_atoms_each(const query_t *q, query_atom_fn fn, void *ctx, uint32_t *residual);

#endif
